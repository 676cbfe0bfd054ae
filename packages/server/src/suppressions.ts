/**
 * The suppressions in force: the VulnExceptions of the current policy revision (expired ones kept:
 * `match(f, now)` ignores them at its own `now`, so an exception stops counting everywhere the
 * moment it expires) and every stored OpenVEX statement. Each answer loads them once and asks
 * `match` per finding.
 */
import { type SuppressionSet, type VulnException, suppressionSet, vulnExceptionsOf } from '@writ/vuln';
import type { Store } from './store/types.ts';

/**
 * One server's suppressions, its VulnExceptions parsed once per policy revision (parsing the
 * policy set is the costly part). Built once per server (server.ts, `ApiContext.suppressions`):
 * no cache outlives its server or is shared between two.
 * @example (await ctx.suppressions.load(ctx.clock())).match({ vulnId, aliases, imageDigest, repositories, packageName, purl }, ctx.clock())
 */
export class Suppressions {
  readonly #store: Store;
  #cached: { revision: number; exceptions: VulnException[] } | undefined;

  constructor(store: Store) {
    this.#store = store;
  }

  /** The VulnExceptions of the current policy revision, expired ones included. */
  async vulnExceptions(): Promise<VulnException[]> {
    const rev = await this.#store.getPolicyRevision();
    if (!rev) return [];
    if (this.#cached?.revision === rev.revision) return this.#cached.exceptions;
    const exceptions = vulnExceptionsOf(rev.policies);
    this.#cached = { revision: rev.revision, exceptions };
    return exceptions;
  }

  /** Active VulnExceptions of the current policy revision and the stored VEX statements, as one set. */
  async load(now: number): Promise<SuppressionSet> {
    const [exceptions, vex] = await Promise.all([this.vulnExceptions(), this.#store.listVexStatements()]);
    // Expired ones cannot apply at `now` or later; the set keeps the rest (a caller may ask for a later `now`).
    return suppressionSet(
      exceptions.filter((e) => e.expires > now),
      vex,
    );
  }
}

/** The suppressions at `now` without a server's cache (a one-off read: tests, tools). */
export const loadSuppressions = (store: Store, now: number): Promise<SuppressionSet> => new Suppressions(store).load(now);
