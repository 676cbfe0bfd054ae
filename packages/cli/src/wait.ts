/** `--wait[=TIMEOUT]`: after a policy or quarantine change, until every live agent acknowledged it. */
import { WritError, parseDuration } from '@writ/spiffe';
import type { ApiClient } from './client.ts';

export const DEFAULT_WAIT = '30s';

interface AgentStatus {
  spiffeId: string;
  revision: number;
  quarantineVersion: number;
  live: boolean;
}
interface PolicyStatus {
  revision: number;
  quarantineVersion: number;
  agents: AgentStatus[];
}

/** `--wait` alone is true; `--wait=10s` a duration. */
export function waitTimeoutMs(wait: string | true): number {
  return parseDuration(wait === true ? DEFAULT_WAIT : wait, 'wait', 3_600_000, 100);
}

/**
 * Polls GET /v1/policy/status until every agent that was live while waiting enforces `target`
 * (a policy revision, or a quarantine version: the status's own one when undefined). Resolves with
 * the agents that did not in time (empty: all did).
 */
export async function waitForAgents(
  api: ApiClient,
  what: 'revision' | 'quarantineVersion',
  target: number | undefined,
  timeoutMs: number,
  progress: (line: string) => void,
): Promise<WaitOutcome> {
  const end = Date.now() + timeoutMs;
  const seen = new Map<string, AgentStatus>();
  let said = '';
  for (;;) {
    const st = await api.call<PolicyStatus>('GET', '/v1/policy/status');
    const want = target ?? st[what];
    if (typeof want !== 'number' || st.agents.some((a) => typeof a[what] !== 'number' || typeof a.live !== 'boolean'))
      throw new WritError('ERR_REQUEST_FAILED', `the server does not report each agent's ${what} and liveness: it is older than this CLI, --wait cannot work`);
    for (const a of st.agents) if (a.live || seen.has(a.spiffeId)) seen.set(a.spiffeId, a);
    const all = [...seen.values()];
    // An agent that stopped while we waited cannot acknowledge: it is named, not waited for.
    const gone = all.filter((a) => a[what] < want && !a.live).map((a) => a.spiffeId);
    const behind = all.filter((a) => a[what] < want && a.live).map((a) => a.spiffeId);
    const acked = all.filter((a) => a[what] >= want).map((a) => a.spiffeId);
    if (behind.length === 0) return { acked, stragglers: [], gone, target: want };
    if (Date.now() >= end) return { acked, stragglers: behind, gone, target: want };
    const line = `waiting for ${behind.length} of ${seen.size} live agents to enforce ${what === 'revision' ? 'policy revision' : 'quarantine version'} ${want}`;
    if (line !== said) progress((said = line));
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** What a wait saw: who enforces the target, who is live and does not yet, who stopped while it waited. */
export interface WaitOutcome {
  acked: string[];
  stragglers: string[];
  gone: string[];
  target: number;
}

/** Reports the outcome of a wait; stragglers are an error (exit 1), agents that stopped are named. */
export function reportWait(r: WaitOutcome, timeoutMs: number, startedAt: number): void {
  if (r.gone.length) process.stderr.write(`${r.gone.length} agent(s) stopped while waiting and did not acknowledge: ${r.gone.join(', ')}\n`);
  if (r.stragglers.length)
    throw new WritError(
      'ERR_REQUEST_FAILED',
      `${r.stragglers.length} live agent(s) did not acknowledge within ${timeoutMs / 1000}s: ${r.stragglers.join(', ')} (the change is applied; they enforce it once they sync)`,
    );
  process.stderr.write(
    `acknowledged by ${r.acked.length === 0 ? 'no live agent (none is live)' : `all ${r.acked.length} live agent(s)`} in ${((Date.now() - startedAt) / 1000).toFixed(1)}s\n`,
  );
}
