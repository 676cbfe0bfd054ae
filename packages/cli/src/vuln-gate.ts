/**
 * Containment and vulnerability events: `writ vuln quarantine ID` (also `writ vuln affected ID
 * --quarantine` where that command exists) and `writ vuln events [--follow]`.
 */
import { type Command, CommanderError } from 'commander';
import { SEVERITIES } from '@writ/vuln/types';
import type { ApiClient } from './client.ts';
import { sinceOf } from './admission-events.ts';
import { type Format, print, stdoutClosed, streamed } from './output.ts';

interface Identity {
  spiffeId: string;
  workloads: Array<{ digest: string; node: string | null; namespace: string | null; pod: string | null; owner: string | null }>;
}
export interface ContainmentAnswer {
  vulnerability: string;
  dryRun: boolean;
  reason: string;
  expiresAt: string | null;
  images: Array<{ digest: string; severity: string; running: number }>;
  quarantined: Identity[];
  alreadyQuarantined: Identity[];
}

interface EventRow {
  id: string;
  at: string;
  cause: string;
  vulnerability: string;
  severity: string;
  imageDigest: string;
  spiffeId: string;
  owner: string | null;
  node: string | null;
  namespace: string | null;
  pod: string | null;
}

interface QuarantineFlags {
  reason?: string;
  ttl?: string;
  minSeverity?: string;
  dryRun?: boolean;
}

const short = (d: string): string => d.slice(0, 19);
const podOf = (w: { namespace: string | null; pod: string | null }): string => (w.pod ? `${w.namespace ?? '-'}/${w.pod}` : '-');

/** Sends the containment request; the answer as the server gave it. */
export async function quarantineAffected(api: ApiClient, vulnId: string, f: QuarantineFlags): Promise<ContainmentAnswer> {
  if (!f.reason) throw new CommanderError(2, 'writ.usage', '--reason TEXT is required: it is kept with every quarantine entry');
  if (f.minSeverity !== undefined && !(SEVERITIES as readonly string[]).includes(f.minSeverity))
    throw new CommanderError(2, 'writ.usage', `--min-severity: one of ${SEVERITIES.join(', ')}`);
  return api.call<ContainmentAnswer>('POST', `/v1/vulnerabilities/${encodeURIComponent(vulnId)}/quarantine`, {
    reason: f.reason,
    ...(f.ttl ? { ttl: f.ttl } : {}),
    ...(f.minSeverity ? { minSeverity: f.minSeverity } : {}),
    ...(f.dryRun ? { dryRun: true } : {}),
  });
}

/** One line saying what was done, for stderr. */
export function containmentSummary(r: ContainmentAnswer): string {
  const n = r.quarantined.length;
  const verb = r.dryRun ? 'would quarantine' : 'quarantined';
  const until = r.expiresAt ? ` until ${r.expiresAt}` : '';
  const already = r.alreadyQuarantined.length ? `; ${r.alreadyQuarantined.length} already quarantined (left as they were)` : '';
  return `${verb} ${n} ${n === 1 ? 'identity' : 'identities'} running ${r.vulnerability} (${r.images.length} affected image${r.images.length === 1 ? '' : 's'})${until}${already}`;
}

function printContainment(format: Format, r: ContainmentAnswer): void {
  const rows = [
    ...r.quarantined.map((i) => ({ i, state: r.dryRun ? 'would quarantine' : 'quarantined' })),
    ...r.alreadyQuarantined.map((i) => ({ i, state: 'already quarantined' })),
  ];
  print(format, r, () => ({
    head: ['SPIFFE ID', 'STATE', 'IMAGE', 'NODE', 'POD', 'OWNER'],
    body: rows.flatMap(({ i, state }) => i.workloads.map((w) => [i.spiffeId, state, short(w.digest), w.node ?? '-', podOf(w), w.owner ?? '-'])),
  }));
  process.stderr.write(`${containmentSummary(r)}\n`);
}

const QUARANTINE_HELP = `
The quarantine entries' reason starts with the vulnerability ID in brackets ("[CVE-2026-31337] ..."),
so \`writ quarantine list\` shows what caused each. Identities already quarantined keep their entry.
Lift one with \`writ quarantine remove SPIFFE_ID\`; entries with --ttl lift themselves.`;

const addQuarantineFlags = (c: Command): Command =>
  c
    .option('--ttl <duration>', 'lift the quarantines after this long (e.g. 1h; default: until lifted)')
    .option('--min-severity <severity>', `only images where it is at least this severe (${SEVERITIES.join(', ')}; default any)`);

export function registerVulnGate(program: Command, clientOf: (cmd: Command) => { api: ApiClient; format: Format }): void {
  const vuln = program.commands.find((c) => c.name() === 'vuln') ?? program.command('vuln');
  addQuarantineFlags(
    vuln
      .command('quarantine <id>')
      .description(
        'containment: quarantine every identity (SPIFFE ID) running an image whose latest report carries the vulnerability now, in one write; prints who',
      )
      .requiredOption('--reason <text>', 'why (kept with each quarantine entry, after the vulnerability ID)'),
  )
    .option('--dry-run', 'only show who would be quarantined')
    .addHelpText('after', QUARANTINE_HELP)
    .action(async (id: string, f: QuarantineFlags, cmd: Command) => {
      const { api, format } = clientOf(cmd);
      printContainment(format, await quarantineAffected(api, id, f));
    });

  // `writ vuln affected ID --quarantine`: contain first, then the command shows what it shows.
  const affected = vuln.commands.find((c) => c.name() === 'affected');
  if (affected) {
    addQuarantineFlags(affected.option('--quarantine', 'also quarantine every identity running an affected image now (needs --reason)')).option(
      '--reason <text>',
      'with --quarantine: why (kept with each quarantine entry)',
    );
    affected.hook('preAction', async (_this, action) => {
      const f = action.opts<QuarantineFlags & { quarantine?: boolean }>();
      if (!f.quarantine) {
        if (f.reason || f.ttl || f.minSeverity) throw new CommanderError(2, 'writ.usage', '--reason, --ttl and --min-severity go with --quarantine');
        return;
      }
      const { api } = clientOf(action);
      process.stderr.write(`${containmentSummary(await quarantineAffected(api, action.args[0]!, f))}\n`);
    });
  }

  vuln
    .command('release <id>')
    .description(
      'lift the quarantines `writ vuln quarantine` wrote for the vulnerability (all, or --spiffe-id ones), once the fixed digests are deployed; then `writ vuln rollout` shows whether any instance still runs an affected digest',
    )
    .option('--spiffe-id <id>', 'only this identity (repeatable)', (v: string, prev: string[] = []) => [...prev, v])
    .option('--dry-run', 'only show whose quarantine would be lifted')
    .action(async (id: string, f: { spiffeId?: string[]; dryRun?: boolean }, cmd: Command) => {
      const { api, format } = clientOf(cmd);
      const r = await api.call<{ vulnerability: string; dryRun: boolean; released: string[] }>(
        'POST',
        `/v1/vulnerabilities/${encodeURIComponent(id)}/release`,
        { ...(f.spiffeId ? { spiffeIds: f.spiffeId } : {}), ...(f.dryRun ? { dryRun: true } : {}) },
      );
      print(format, r, () => ({ head: ['SPIFFE ID', 'STATE'], body: r.released.map((s) => [s, r.dryRun ? 'would be released' : 'released']) }));
      process.stderr.write(
        `${r.dryRun ? 'would release' : 'released'} ${r.released.length} quarantine${r.released.length === 1 ? '' : 's'} of ${r.vulnerability}\n`,
      );
    });

  vuln
    .command('events')
    .description(
      "vulnerability events, newest first: a running workload newly affected (at or above the server's vulnEvents.minSeverity) by a new report, a newly running workload or an exception that ended",
    )
    .option('--since <duration|time>', 'how far back: a duration like 15m, or an RFC 3339 time', '24h')
    .option('--limit <n>', 'at most this many (newest first)', '100')
    .option('-f, --follow', 'then print events as they are stored (Ctrl-C to stop); -o json: one object per line')
    .action(async (f: { since: string; limit: string; follow?: boolean }, cmd: Command) => {
      const { api, format } = clientOf(cmd);
      if (!/^\d{1,5}$/.test(f.limit) || Number(f.limit) < 1 || Number(f.limit) > 10_000)
        throw new CommanderError(2, 'writ.usage', '--limit must be a whole number from 1 to 10000');
      const first = await api.call<{ events: EventRow[]; cursor: string }>(
        'GET',
        `/v1/vulnerabilities/events?${new URLSearchParams({ since: sinceOf(f.since), limit: f.limit })}`,
      );
      const line = (e: EventRow): string =>
        `${e.at} ${e.severity.toUpperCase()} ${e.vulnerability} ${e.spiffeId} image=${short(e.imageDigest)} node=${e.node ?? '-'} pod=${podOf(e)} owner=${e.owner ?? '-'} cause=${e.cause}`;
      if (!f.follow)
        return print(format, first.events, () => ({
          head: ['TIME', 'SEVERITY', 'VULNERABILITY', 'SPIFFE ID', 'IMAGE', 'NODE', 'POD', 'OWNER', 'CAUSE'],
          body: first.events.map((e) => [
            e.at,
            e.severity,
            e.vulnerability,
            e.spiffeId,
            short(e.imageDigest),
            e.node ?? '-',
            podOf(e),
            e.owner ?? '-',
            e.cause,
          ]),
        }));
      const out = (e: EventRow): void => void process.stdout.write(streamed(format, e, () => line(e)));
      [...first.events].reverse().forEach(out);
      let cursor = first.cursor;
      while (!stdoutClosed.signal.aborted) {
        const res = await api.call<{ events: EventRow[]; cursor: string }>(
          'GET',
          `/v1/vulnerabilities/events?${new URLSearchParams({ after: cursor, limit: '1000' })}`,
        );
        res.events.forEach(out);
        cursor = res.cursor;
        if (res.events.length < 1000) await new Promise((r) => setTimeout(r, 1000));
      }
    });
}
