/**
 * The suppressions in force: the VulnExceptions of the current policy revision (expired ones kept:
 * `match(f, now)` ignores them at its own `now`, so an exception stops counting everywhere the
 * moment it expires) and every stored OpenVEX statement. Each answer loads them once and asks
 * `match` per finding.
 */
import { type SuppressionSet, type VulnException, suppressionSet, vulnExceptionsOf } from '@writ/vuln';
import type { Store } from './store/types.ts';

// Parsing the policy set is the costly part: once per revision (per store: tests run several).
const EXCEPTIONS = new WeakMap<Store, { revision: number; exceptions: VulnException[] }>();

/** The VulnExceptions of the current policy revision, expired ones included. */
export async function loadVulnExceptions(store: Store): Promise<VulnException[]> {
  const rev = await store.getPolicyRevision();
  if (!rev) return [];
  const cached = EXCEPTIONS.get(store);
  if (cached?.revision === rev.revision) return cached.exceptions;
  const exceptions = vulnExceptionsOf(rev.policies);
  EXCEPTIONS.set(store, { revision: rev.revision, exceptions });
  return exceptions;
}

/**
 * Active VulnExceptions of the current policy revision and the stored VEX statements, as one set.
 * @example (await loadSuppressions(ctx.store, ctx.clock())).match({ vulnId, aliases, imageDigest, repositories, packageName, purl }, ctx.clock())
 */
export async function loadSuppressions(store: Store, now: number): Promise<SuppressionSet> {
  const [exceptions, vex] = await Promise.all([loadVulnExceptions(store), store.listVexStatements()]);
  // Expired ones cannot apply at `now` or later; the set keeps the rest (a caller may ask for a later `now`).
  return suppressionSet(
    exceptions.filter((e) => e.expires > now),
    vex,
  );
}
