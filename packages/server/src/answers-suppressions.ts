/**
 * A stand-in for the shared suppressions contract (common.md: `@writ/vuln`'s `suppress.ts` and the
 * server's `suppressions.ts`, built on wt-vex): nothing is suppressed. The answers code against the
 * same signature; when the real one is merged, this file goes and the import in vuln-answers.ts
 * points at `./suppressions.ts`.
 */
import type { VexStatus } from '@writ/vuln';
import type { Store } from './store/types.ts';

export interface Suppression {
  readonly by: 'exception' | 'vex';
  readonly name: string;
  readonly reason: string;
  readonly owner?: string;
  readonly expires?: string;
  readonly status?: VexStatus;
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
