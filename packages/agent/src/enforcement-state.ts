/**
 * What the agent enforces locally: the last policy revision that compiled, the quarantine list and
 * its break-glass identities, in one PolicyEngine. A revision that does not compile is refused and
 * the last good one stays, so a bad push never opens or closes everything.
 */
import type { Logger } from 'pino';
import { PolicyEngine, matchSegments, parsePolicies } from '@writ/policy';
import type { QuarantineState } from '@writ/protocol';

/** The policy an SDK that decides in-process gets for its identities (WatchPolicy). */
export interface PolicyView {
  readonly revision: number;
  readonly documents: string[];
  readonly quarantine: string[];
  readonly breakGlass: string[];
}

export class EnforcementState {
  readonly #clock: () => number;
  readonly #log: Logger;
  #engine: PolicyEngine;
  /** The documents (name -> YAML) of the revision the engine enforces. */
  #documents: Readonly<Record<string, string>> = {};
  #quarantine: QuarantineState | undefined;
  #quarantined: ReadonlySet<string> = new Set();

  constructor(opts: { readonly clock: () => number; readonly log: Logger }) {
    this.#clock = opts.clock;
    this.#log = opts.log;
    this.#engine = new PolicyEngine(undefined);
  }

  /** The local decision engine (the last good policy revision, with the current quarantine). */
  get engine(): PolicyEngine {
    return this.#engine;
  }

  /** The quarantined SPIFFE IDs. */
  get quarantined(): ReadonlySet<string> {
    return this.#quarantined;
  }

  /** Compiles a policy set; a set that does not compile is refused (false) and the last good one stays. */
  loadPolicy(revision: number, policies: Record<string, string>): boolean {
    try {
      const parsed = Object.values(policies).flatMap((y) => parsePolicies(y, { allowExpired: true }).policies);
      this.#engine = new PolicyEngine(parsed, { revision, breakGlass: this.#quarantine?.breakGlass ?? [], clock: this.#clock });
      this.#documents = policies;
      this.setQuarantine(this.#quarantine);
      this.#log.info({ revision, policies: parsed.length }, 'enforcing policy revision');
      return true;
    } catch (err) {
      this.#log.error({ revision, err: (err as Error).message.slice(0, 500) }, 'policy revision does not compile; keeping the last good one');
      return false;
    }
  }

  /** Enforces a quarantine list (undefined: none) with the engine's current policy. */
  setQuarantine(q: QuarantineState | undefined): void {
    this.#quarantine = q;
    if (q && this.#engine.loaded) {
      // Break-glass identities come with the quarantine list; a new engine keeps them.
      this.#engine = new PolicyEngine(this.#engine.policies, { revision: this.#engine.revision, breakGlass: q.breakGlass, clock: this.#clock });
    }
    this.#engine.setQuarantine(q?.ids ?? []);
    this.#quarantined = new Set(q?.ids ?? []);
  }

  /** The policy documents whose destination matches one of `ids`, for SDKs that decide in-process. */
  policyFor(ids: readonly string[]): PolicyView {
    const docs: string[] = [];
    for (const p of this.#engine.policies) {
      const yaml = this.#documents[p.name];
      if (yaml && ids.some((id) => matchSegments(p.to.segments, id.slice(9).split('/')))) docs.push(yaml);
    }
    return { revision: this.#engine.revision, documents: docs, quarantine: [...this.#quarantined], breakGlass: this.#quarantine?.breakGlass ?? [] };
  }
}
