/** The policy file limits and the error that lists every problem with its line (no YAML types: they are published). */
import { WritError } from '@writ/spiffe';

export const LIMITS = { bytes: 4 * 1024 * 1024, documents: 10_000, rulesPerPolicy: 20_000, listItems: 1000, depth: 64 } as const;

export interface PolicyIssue {
  readonly line: number;
  readonly column: number;
  readonly message: string;
}

/** Thrown with every problem found, each with its line; `toString()` lists them. */
export class PolicyError extends WritError {
  readonly issues: readonly PolicyIssue[];
  constructor(file: string, issues: readonly PolicyIssue[]) {
    super(
      'ERR_POLICY_INVALID',
      `${file}: ${issues.length} problem${issues.length === 1 ? '' : 's'}:\n${issues
        .slice(0, 50)
        .map((i) => `  ${file}:${i.line}:${i.column}: ${i.message}`)
        .join('\n')}`,
    );
    this.issues = issues;
  }
}
