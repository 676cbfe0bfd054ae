/**
 * STAND-IN for the shared contract (common.md): engineer "vex" builds `loadSuppressions` in
 * `packages/server/src/suppressions.ts` and the types in `@writ/vuln` (`suppress.ts`). Until that
 * is merged, nothing is suppressed. At the merge: delete this file and import `loadSuppressions`
 * from './suppressions.ts' and the types from '@writ/vuln' where this file is imported.
 */
import type { Store } from './store/types.ts';

export interface Suppression {
  readonly by: 'exception' | 'vex';
  readonly name: string;
  readonly reason: string;
  readonly owner?: string;
  readonly expires?: string;
}

export interface FindingContext {
  readonly vulnId: string;
  readonly aliases: readonly string[];
  readonly imageDigest: string;
  readonly repositories: readonly string[];
  readonly packageName: string;
  readonly purl?: string;
}

export interface SuppressionSet {
  match(f: FindingContext, now: number): Suppression | undefined;
}

export async function loadSuppressions(_store: Store, _now: number): Promise<SuppressionSet> {
  return { match: () => undefined };
}
