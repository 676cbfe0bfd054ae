/**
 * Learning mode (issue 15, section 2): `writ learn start|list|stop|edges` and `writ policy
 * propose|hits|promote` — observe a destination, propose a policy from what it saw, shadow it in
 * audit mode, then enforce it. The server does the work (docs/learning.md); this prints it.
 */
import type { Command } from 'commander';
import type { ApiClient } from './client.ts';
import { print, type Format } from './output.ts';
import { DEFAULT_WAIT, reportWait, waitForAgents, waitTimeoutMs } from './wait.ts';

type ClientOf = (cmd: Command) => { api: ApiClient; format: Format };
const progress = (line: string): void => void process.stderr.write(`${line}\n`);
const WAIT_HELP = `return once every live agent enforces the new revision (e.g. --wait=2m; default ${DEFAULT_WAIT}); exit 1 listing those that did not`;

interface WindowJson {
  name: string;
  to: string;
  since: string | null;
  until: string;
  active: boolean;
  observed: { edges: number; requests: number; callers: number };
}
interface ProposalJson {
  to: string;
  name: string;
  current: string | null;
  yaml: string;
  groups: Array<{ pattern: string; callers: string[] }>;
  coverage: {
    requests: number;
    allowed: number;
    share: number;
    edges: number;
    allowedEdges: number;
    deniedEdges: number;
    denied: Array<{ from: string; action: string; seen: number }>;
  };
  diff: string[];
  truncated: boolean;
  revision?: number;
}
interface HitsJson {
  to: string;
  policy: string;
  mode: string;
  revision: number;
  since: string;
  total: number;
  rules: Array<{ name: string; effect: string; allowed: number; wouldDeny: number; denied: number }>;
  unmatched: { allowed: number; wouldDeny: number; denied: number };
}

/** `allows 99.97% of the 120,000 requests seen, would deny these 3 edges:` and the edges. */
export function coverageText(c: ProposalJson['coverage']): string {
  const pct = c.requests === 0 ? '100' : (Math.floor(c.share * 10_000) / 100).toFixed(c.allowed === c.requests ? 0 : 2);
  const head = `allows ${pct}% of the ${c.requests.toLocaleString('en-US')} requests seen (${c.allowedEdges} of ${c.edges} edges)`;
  if (c.deniedEdges === 0) return `${head}\n`;
  const lines = c.denied.map((e) => `  ${e.from || '(no identity)'}  ${e.action}  (seen ${e.seen}x)`);
  const more = c.deniedEdges > c.denied.length ? [`  ... and ${c.deniedEdges - c.denied.length} more`] : [];
  return `${head}, would deny ${c.deniedEdges === 1 ? 'this edge' : `these ${c.deniedEdges} edges`}:\n${[...lines, ...more].join('\n')}\n`;
}

async function waitIfAsked(api: ApiClient, wait: string | true | undefined, revision: number, startedAt: number): Promise<void> {
  if (wait === undefined) return;
  const timeoutMs = waitTimeoutMs(wait);
  reportWait(await waitForAgents(api, 'revision', revision, timeoutMs, progress), timeoutMs, startedAt);
}

export function registerLearn(program: Command, policy: Command, clientOf: ClientOf): void {
  const learn = program.command('learn').description('learning mode: allow and record the calls into a destination, to propose its policy from them');
  learn
    .command('start')
    .description(
      'learn a destination for a while: its calls are allowed (quarantine still wins) and every (caller, action) is counted; when the window ends its own policies decide again — nothing is promoted by itself',
    )
    .requiredOption('--to <id|pattern>', 'the destination: a SPIFFE ID or pattern (spiffe://td/ns/shop/**)')
    .option('--for <duration>', 'how long (at most 30d)', '24h')
    .option('--keep', 'keep what was learned about it before (default: start afresh)')
    .option('--wait [timeout]', WAIT_HELP)
    .action(async (f: { to: string; for: string; keep?: boolean; wait?: string | true }, cmd: Command) => {
      const { api, format } = clientOf(cmd);
      const startedAt = Date.now();
      const res = await api.call<{ name: string; to: string; until: string; revision: number }>('POST', '/v1/learning', {
        to: f.to,
        for: f.for,
        ...(f.keep ? { keep: true } : {}),
      });
      if (format !== 'table') print(format, res);
      else process.stderr.write(`learning ${res.to} until ${res.until} (revision ${res.revision})\n`);
      await waitIfAsked(api, f.wait, res.revision, startedAt);
    });
  learn
    .command('list')
    .description('learning windows: destination, until, whether active, what each observed')
    .action(async (_o: unknown, cmd: Command) => {
      const { api, format } = clientOf(cmd);
      const res = await api.call<{ windows: WindowJson[] }>('GET', '/v1/learning');
      print(format, res.windows, () => ({
        head: ['TO', 'UNTIL', 'STATE', 'CALLERS', 'EDGES', 'REQUESTS'],
        body: res.windows.map((w) => [
          w.to,
          w.until,
          w.active ? 'learning' : 'ended',
          String(w.observed.callers),
          String(w.observed.edges),
          String(w.observed.requests),
        ]),
      }));
    });
  learn
    .command('stop')
    .description('end the learning window of a destination now (what it observed is kept for policy propose)')
    .requiredOption('--to <id|pattern>', 'the destination, as given to learn start')
    .option('--wait [timeout]', WAIT_HELP)
    .action(async (f: { to: string; wait?: string | true }, cmd: Command) => {
      const { api, format } = clientOf(cmd);
      const startedAt = Date.now();
      const res = await api.call<{ to: string; revision: number }>('POST', '/v1/learning/stop', { to: f.to });
      if (format !== 'table') print(format, res);
      else process.stderr.write(`stopped learning ${res.to} (revision ${res.revision})\n`);
      await waitIfAsked(api, f.wait, res.revision, startedAt);
    });
  learn
    .command('edges')
    .description('the (caller, action) edges observed into a destination while it learned, most seen first')
    .requiredOption('--to <id|pattern>', 'the destination')
    .option('--limit <n>', 'at most this many', '100')
    .action(async (f: { to: string; limit: string }, cmd: Command) => {
      const { api, format } = clientOf(cmd);
      const res = await api.call<{ edges: Array<{ from: string | null; to: string; action: string; seen: number; lastSeen: string }> }>(
        'GET',
        `/v1/learning/edges?${new URLSearchParams({ to: f.to, limit: f.limit })}`,
      );
      print(format, res.edges, () => ({
        head: ['FROM', 'TO', 'ACTION', 'SEEN', 'LAST SEEN'],
        body: res.edges.map((e) => [e.from ?? '(none)', e.to, e.action, String(e.seen), e.lastSeen]),
      }));
    });

  policy
    .command('propose')
    .description(
      'an AccessPolicy built from what a destination was observed doing while it learned (siblings grouped as parent/*, ID-like path segments as *), with its coverage; the YAML on stdout, the coverage on stderr (-o json|yaml: all of it)',
    )
    .requiredOption('--to <id|pattern>', 'the learned destination')
    .option('--min-count <n>', 'leave out a (caller, action) seen fewer times than this')
    .option('--min-share <fraction>', 'leave out a (caller, action) with a smaller share of all requests, e.g. 0.0001')
    .option('--diff', 'show it as a diff against the current policy for that destination')
    .option(
      '--apply-shadow',
      "apply it in audit mode (replacing the destination's own policy, ending its learning window); see policy hits, then policy promote",
    )
    .option('--wait [timeout]', `with --apply-shadow: ${WAIT_HELP}`)
    .action(async (f: { to: string; minCount?: string; minShare?: string; diff?: boolean; applyShadow?: boolean; wait?: string | true }, cmd: Command) => {
      const { api, format } = clientOf(cmd);
      const startedAt = Date.now();
      const res = f.applyShadow
        ? await api.call<ProposalJson>('POST', '/v1/policies/shadow', {
            to: f.to,
            ...(f.minCount !== undefined ? { minCount: f.minCount } : {}),
            ...(f.minShare !== undefined ? { minShare: f.minShare } : {}),
          })
        : await api.call<ProposalJson>(
            'GET',
            `/v1/policies/proposal?${new URLSearchParams({
              to: f.to,
              ...(f.minCount !== undefined ? { minCount: f.minCount } : {}),
              ...(f.minShare !== undefined ? { minShare: f.minShare } : {}),
            })}`,
          );
      if (format !== 'table') print(format, res);
      else {
        process.stdout.write(
          f.diff ? `--- ${res.current ?? '(no policy for this destination)'}\n+++ ${res.name} (proposed)\n${res.diff.join('\n')}\n` : res.yaml,
        );
        process.stderr.write(coverageText(res.coverage));
        if (res.truncated) process.stderr.write('only the most seen 100,000 edges were looked at\n');
        if (res.revision !== undefined) process.stderr.write(`applied ${res.name} in audit mode (shadow): revision ${res.revision}\n`);
      }
      if (res.revision !== undefined) await waitIfAsked(api, f.wait, res.revision, startedAt);
    });
  policy
    .command('hits')
    .description("per-rule hit counts of a destination's policy since its current version: allowed, would deny (audit), denied, and no rule matched")
    .requiredOption('--to <id|pattern>', "the destination (its policy's spec.to)")
    .action(async (f: { to: string }, cmd: Command) => {
      const { api, format } = clientOf(cmd);
      const res = await api.call<HitsJson>('GET', `/v1/policies/hits?${new URLSearchParams({ to: f.to })}`);
      print(format, res, () => ({
        head: ['RULE', 'EFFECT', 'ALLOWED', 'WOULD DENY', 'DENIED'],
        body: [
          ...res.rules.map((r) => [r.name, r.effect, String(r.allowed), String(r.wouldDeny), String(r.denied)]),
          ['(no rule matched)', '-', String(res.unmatched.allowed), String(res.unmatched.wouldDeny), String(res.unmatched.denied)],
        ],
      }));
    });
  policy
    .command('promote')
    .description("switch a destination's shadow policy (audit mode) to enforce, as a new revision; refused when it has none")
    .requiredOption('--to <id|pattern>', "the destination (its policy's spec.to)")
    .option('--comment <text>', 'why (kept in the history)')
    .option('--wait [timeout]', WAIT_HELP)
    .action(async (f: { to: string; comment?: string; wait?: string | true }, cmd: Command) => {
      const { api, format } = clientOf(cmd);
      const startedAt = Date.now();
      const res = await api.call<{ policy: string; revision: number }>('POST', '/v1/policies/promote', {
        to: f.to,
        ...(f.comment ? { comment: f.comment } : {}),
      });
      if (format !== 'table') print(format, res);
      else process.stderr.write(`${res.policy} enforces now (revision ${res.revision})\n`);
      await waitIfAsked(api, f.wait, res.revision, startedAt);
    });
}
