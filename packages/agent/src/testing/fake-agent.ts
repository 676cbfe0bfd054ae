/**
 * A fake of what the Workload API needs of the agent (`WorkloadApiAgent`), for its unit tests:
 * entries set directly, JWT-SVIDs signed by a FakeCa whose bundle it serves, a real PolicyEngine,
 * and the decisions and JWT requests it was given, kept for the test to look at.
 */
import { EventEmitter } from 'node:events';
import { PolicyEngine, parsePolicies } from '@writ/policy';
import type { ReportedDecision } from '@writ/sdk';
import type { TrustBundle } from '@writ/spiffe';
import type { PolicyView } from '../enforcement-state.ts';
import type { Withheld } from '../entry-matcher.ts';
import type { MintedJwtSvid } from '../jwt-svids.ts';
import type { ServedSvid } from '../svid-manager.ts';
import type { EntryView } from '../sync.ts';
import type { WorkloadApiAgent } from '../workload-api.ts';
import type { WorkloadFacts } from '../workload-reporter.ts';
import { FakeCa } from './fake-server.ts';

export class FakeAgent extends EventEmitter implements WorkloadApiAgent {
  readonly ca: FakeCa;
  readonly spiffeId: string;
  entries: EntryView[] = [];
  engine = new PolicyEngine(undefined);
  /** Decisions logged (Check, Report), as they were given. */
  readonly decisions: Array<ReportedDecision | Buffer> = [];
  /** Each JWT-SVID asked for: the entry's SPIFFE ID and the audience. */
  readonly jwtRequests: Array<{ spiffeId: string; audience: readonly string[] }> = [];
  dropped = 0;
  readonly workloads = { served: (_w: WorkloadFacts, _ids: readonly string[]): void => undefined, opened: () => () => undefined };
  readonly server = {};

  constructor(trustDomain = 'fake.test') {
    super();
    this.ca = new FakeCa(trustDomain);
    this.spiffeId = `spiffe://${trustDomain}/writ/agent/fake`;
  }

  get trustDomain(): string {
    return this.ca.trustDomain;
  }

  /** Replaces the entries and tells the Workload API (as a sync does). */
  setEntries(entries: EntryView[]): void {
    this.entries = entries;
    this.emit('update');
  }

  /** Enforces `yaml` (AccessPolicy documents) at `revision`. */
  setPolicy(yaml: string, revision = 1): void {
    this.engine = new PolicyEngine(parsePolicies(yaml).policies, { revision });
    this.emit('update');
  }

  entriesFor(selectors: readonly string[]): EntryView[] {
    const have = new Set(selectors);
    return this.entries.filter((e) => e.selectors.every((s) => have.has(s)));
  }

  withheldFor(): Withheld[] {
    return [];
  }

  currentIds(): Set<string> {
    return new Set(this.entries.map((e) => e.spiffeId));
  }

  svidOf(): ServedSvid | undefined {
    return undefined;
  }

  bundlesFor(): Map<string, TrustBundle> {
    return new Map([[this.trustDomain, this.ca.bundle]]);
  }

  async jwtSvid(entry: EntryView, audience: readonly string[]): Promise<MintedJwtSvid> {
    this.jwtRequests.push({ spiffeId: entry.spiffeId, audience });
    return { token: this.ca.signJwt(entry.spiffeId, audience), expiresAt: Date.now() + 300_000 };
  }

  policyFor(): PolicyView {
    return { revision: this.engine.revision, documents: [], quarantine: [], breakGlass: [] };
  }

  logDecision(d: ReportedDecision | Buffer): void {
    this.decisions.push(d);
  }

  countDropped(n: number): void {
    this.dropped += n;
  }
}
