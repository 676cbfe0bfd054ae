/**
 * `writ vuln affected CVE`, `writ vuln rollout CVE [--watch]` and `writ vuln list`: the answers of
 * issue 13 from the server (`GET /v1/vulnerabilities/...`), as readable tables or stable JSON.
 */
import { isWritError, WritError } from '@writ/spiffe';
import { SEVERITIES } from '@writ/vuln/types';
import { type Command, CommanderError, Option } from 'commander';
import { ApiError, type ApiClient } from './client.ts';
import { type Format, print, stdoutClosed } from './output.ts';

interface Ref {
  digest: string | null;
  name: string | null;
}
interface SuppressionJson {
  by: string;
  name: string;
  reason: string;
  owner: string | null;
  expires: string | null;
}
interface WorkloadJson {
  spiffeIds: string[];
  owner: string | null;
  node: string | null;
  namespace: string | null;
  pod: string | null;
  container: string | null;
  imageDigest: string | null;
  manifestDigest?: string;
}
interface AffectedJson {
  vulnerability: string;
  images: Array<{
    digest: string;
    names: string[];
    tags: string[];
    base: (Ref & { source: string }) | null;
    severity: string;
    affected: boolean;
    running: number;
    packages: Array<{
      name: string | null;
      type: string | null;
      installed: string;
      fixed: string | null;
      severity: string;
      findingId: string;
      fix: { where: string; base: Ref | null; introducedBy: Ref | null; newerBases: Array<{ digest: string; names: string[] }>; fixedVersion: string | null };
      suppressed: SuppressionJson | null;
    }>;
  }>;
  counts: { images: number; suppressedImages: number; workloads: number; owners: number };
  owners: Array<{ owner: string | null; count: number; images: number; workloads: WorkloadJson[] }>;
  suppressedWorkloads: WorkloadJson[];
  page: { after: string | null; limit: number; next: string | null; workloadLimit: number; workloadsListed: number };
}
interface RolloutJson {
  vulnerability: string;
  verified: boolean;
  counts: { identities: number; verified: number; notVerified: number; unverified: number; affectedInstances: number };
  owners: Array<{
    owner: string | null;
    identities: Array<{
      spiffeId: string;
      status: string;
      reason: string | null;
      affectedInstances: WorkloadJson[];
      replacements: Array<{ digest: string | null; state: string; instances: number }>;
      running: number;
      /** Containment (`writ vuln quarantine`): its quarantine for this vulnerability, while in force. */
      quarantine?: { reason: string; expiresAt: string | null } | null;
    }>;
  }>;
}
interface ListJson {
  vulnerabilities: Array<{
    id: string;
    aliases: string[];
    severity: string;
    images: number;
    runningImages: number;
    fixable: boolean;
    fixedVersions: string[];
    packages: string[];
  }>;
}

/** `sha256:0123456789ab` — enough to tell images apart in a table; JSON has the whole digest. */
export const short = (d: string | null | undefined): string => (d ? d.replace(/^(sha\d+:[0-9a-f]{12})[0-9a-f]+$/, '$1') : '-');
const nameOf = (i: { names: string[]; tags: string[] }): string => i.tags[0] ?? i.names[0] ?? '-';
const refText = (r: Ref | null): string => (r === null ? '-' : r.name ? `${r.name}${r.digest ? ` (${short(r.digest)})` : ''}` : short(r.digest));

function table(head: string[], body: string[][]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return `${[line(head), ...body.map(line)].join('\n')}\n`;
}

/** The fix column: where, and what to do there. */
export function fixText(p: AffectedJson['images'][number]['packages'][number]): string {
  if (p.fix.where === 'base image') {
    const newer = p.fix.newerBases.map((b) => `${b.names[0] ?? ''} ${short(b.digest)}`.trim());
    return `base image ${refText(p.fix.base)}${newer.length ? `; newer base without it: ${newer.join(', ')}` : '; no newer base without it in the inventory'}`;
  }
  if (p.fix.where === 'app layer') return `app layer: bump ${p.name ?? 'the package'} to ${p.fix.fixedVersion}`;
  return 'no fix yet';
}

const pod = (w: WorkloadJson): string => (w.pod ? `${w.namespace ?? '-'}/${w.pod}` : (w.container ?? '-'));

export function affectedTable(a: AffectedJson): string {
  const affected = a.images.filter((i) => i.affected);
  let out = `${a.vulnerability}: ${a.counts.images} image${a.counts.images === 1 ? '' : 's'} affected, ${a.counts.workloads} workload${a.counts.workloads === 1 ? '' : 's'} running them, ${a.counts.owners} owner${a.counts.owners === 1 ? '' : 's'}${a.counts.suppressedImages ? ` (${a.counts.suppressedImages} image${a.counts.suppressedImages === 1 ? '' : 's'} suppressed)` : ''}\n`;
  if (a.images.length === 0) return out;
  out += `\n${table(
    ['IMAGE', 'NAME', 'PACKAGE', 'INSTALLED -> FIXED', 'SEVERITY', 'RUNNING', 'WHERE TO FIX'],
    [...affected, ...a.images.filter((i) => !i.affected)].flatMap((i) =>
      i.packages.map((p) => [
        short(i.digest),
        nameOf(i),
        p.name ?? '-',
        `${p.installed} -> ${p.fixed ?? '(none)'}`,
        p.severity,
        String(i.running),
        p.suppressed
          ? `suppressed by ${p.suppressed.by} ${p.suppressed.name}: ${p.suppressed.reason}${p.suppressed.expires ? ` (until ${p.suppressed.expires})` : ''}`
          : fixText(p),
      ]),
    ),
  )}`;
  const listed = a.owners.flatMap((g) =>
    g.workloads.map((w) => [g.owner ?? '(no owner)', w.spiffeIds.join(',') || '-', w.node ?? '-', pod(w), short(w.manifestDigest ?? w.imageDigest)]),
  );
  if (listed.length > 0) out += `\n${table(['OWNER', 'SPIFFE ID', 'NODE', 'NAMESPACE/POD', 'IMAGE'], listed)}`;
  const shown = a.images.length;
  const total = a.counts.images + a.counts.suppressedImages;
  if (shown < total || listed.length < a.counts.workloads) {
    out += `\n${table(
      ['OWNER', 'WORKLOADS', 'IMAGES'],
      a.owners.map((g) => [g.owner ?? '(no owner)', String(g.count), String(g.images)]),
    )}`;
    out += `\nShowing ${shown} of ${total} images and ${listed.length} of ${a.counts.workloads} workloads: --all for every one${a.page.next ? `, --after ${a.page.next} for the next page` : ''}.\n`;
  }
  return out;
}

export function rolloutTable(r: RolloutJson): string {
  const c = r.counts;
  let out = `${r.vulnerability}: ${r.verified ? 'verified' : 'not verified'} (${c.verified} of ${c.identities} identit${c.identities === 1 ? 'y' : 'ies'} verified, ${c.affectedInstances} instance${c.affectedInstances === 1 ? '' : 's'} still on an affected digest)\n`;
  const rows = r.owners.flatMap((g) =>
    g.identities.map((i) => [
      g.owner ?? '(no owner)',
      i.spiffeId,
      `${i.status === 'unverified' ? `unverified: ${i.reason}` : i.status}${i.quarantine ? ', quarantined' : ''}`,
      i.affectedInstances.length ? i.affectedInstances.map((w) => `${pod(w)} ${short(w.manifestDigest ?? w.imageDigest)}`).join(', ') : '-',
      i.replacements.length ? i.replacements.map((x) => `${short(x.digest)} (${x.state})`).join(', ') : '-',
    ]),
  );
  if (rows.length > 0) out += `\n${table(['OWNER', 'SPIFFE ID', 'STATUS', 'STILL AFFECTED', 'REPLACEMENTS'], rows)}`;
  return out;
}

/** A refusal (bad ID, server error) as one line on stderr; exit 1. */
function refused(err: unknown): never {
  if (!isWritError(err)) throw err;
  const code = err instanceof ApiError ? err.serverCode : err.code;
  process.stderr.write(`writ: ${err.message} [${code}]\n`);
  throw new CommanderError(1, 'writ.failed', err.message);
}

async function get<T>(api: ApiClient, path: string): Promise<T> {
  try {
    return await api.call<T>('GET', path);
  } catch (err) {
    refused(err);
  }
}

const sleep = (ms: number, signal: AbortSignal): Promise<void> =>
  new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => (clearTimeout(t), resolve()), { once: true });
  });

export function registerVulnAnswers(program: Command, clientOf: (cmd: Command) => { api: ApiClient; format: Format }): void {
  const vuln = program.commands.find((c) => c.name() === 'vuln') ?? program.command('vuln').description('vulnerable images');

  vuln
    .command('affected')
    .description(
      'every image carrying the vulnerability (its ID or an alias): package, installed -> fixed, where to fix it (base image, app layer, no fix yet), and the workloads running it now by owner',
    )
    .argument('<id>', 'CVE-YYYY-NNNN, GHSA-xxxx-xxxx-xxxx or another scanner ID (case and dashes are normalized)')
    .option('--limit <n>', 'images per page (1-1000; the counts and the owners always cover all)', '100')
    .option('--after <digest>', 'the page after this image digest (page.next of the previous answer)')
    .option('--all', 'every image and every running workload, fetched page by page')
    .addHelpText(
      'after',
      '\nThe answer is one page of images (100 by default, in digest order) and at most 1,000 workload rows; the counts and the owner totals always cover everything.\nExit codes: 0 answered (also when nothing is affected), 1 invalid ID or error, 2 usage.',
    )
    .action(async (id: string, o: { limit: string; after?: string; all?: boolean }, cmd: Command) => {
      const { api, format } = clientOf(cmd);
      if (!/^[1-9]\d{0,3}$/.test(o.limit) || Number(o.limit) > 1000)
        throw new WritError('ERR_FIELD_INVALID', '--limit must be a whole number from 1 to 1000', { field: 'limit' });
      const path = (after: string | null | undefined): string =>
        `/v1/vulnerabilities/${encodeURIComponent(id)}/affected?limit=${o.all ? 1000 : o.limit}${o.all ? '&workloads=10000' : ''}${after ? `&after=${encodeURIComponent(after)}` : ''}`;
      const a = await get<AffectedJson>(api, path(o.after));
      // --all: the pages after the first, merged into one answer (images, listed workloads per owner).
      for (let next = a.page.next; o.all && next !== null; ) {
        const more = await get<AffectedJson>(api, path(next));
        a.images.push(...more.images);
        a.suppressedWorkloads.push(...more.suppressedWorkloads);
        for (const g of more.owners) a.owners.find((x) => x.owner === g.owner)?.workloads.push(...g.workloads);
        a.page.workloadsListed += more.page.workloadsListed;
        next = more.page.next;
      }
      if (o.all) a.page = { ...a.page, next: null, limit: a.images.length };
      if (format !== 'table') return print(format, a);
      process.stdout.write(affectedTable(a));
    });

  vuln
    .command('rollout')
    .description(
      'whether the fix runs: per owner and identity, instances still on an affected digest and the replacement digests; verified only when none is and every replacement has a report free of it',
    )
    .argument('<id>', 'the vulnerability ID')
    .option('--watch', 'poll and redraw until verified (or Ctrl-C)')
    .addOption(new Option('--interval <seconds>', 'with --watch: seconds between polls').default('2'))
    .addHelpText('after', '\nExit codes: 0 verified, 3 not verified (without --watch), 1 invalid ID or error, 2 usage.')
    .action(async (id: string, o: { watch?: boolean; interval: string }, cmd: Command) => {
      const { api, format } = clientOf(cmd);
      const interval = Number(o.interval);
      if (!Number.isFinite(interval) || interval < 0.1 || interval > 3600)
        throw new CommanderError(2, 'writ.usage', '--interval must be from 0.1 to 3600 seconds');
      const path = `/v1/vulnerabilities/${encodeURIComponent(id)}/rollout`;
      let last = '';
      for (;;) {
        const r = await get<RolloutJson>(api, path);
        const text = format === 'table' ? rolloutTable(r) : format === 'json' && o.watch ? `${JSON.stringify(r)}\n` : '';
        if (!o.watch) {
          if (format === 'table') process.stdout.write(text);
          else print(format, r);
        } else if (text !== last || format !== 'table') {
          // Redraw in place on a terminal; a pipe gets each new state once.
          if (format === 'table') process.stdout.write(`${process.stdout.isTTY ? '\x1b[H\x1b[2J' : last ? '\n' : ''}${text}`);
          else if (format === 'json') process.stdout.write(text);
          else print(format, r);
          last = text;
        }
        if (r.verified) return;
        if (!o.watch) throw new CommanderError(3, 'writ.violation', `${r.vulnerability}: not verified`);
        await sleep(interval * 1000, stdoutClosed.signal);
        if (stdoutClosed.signal.aborted) return;
      }
    });

  vuln
    .command('list')
    .description(
      'the vulnerabilities of the latest reports, most severe first: images carrying each, images running now, fixed versions; suppressed findings not counted',
    )
    .option('--severity <list>', `only these severities, comma-separated (${SEVERITIES.join(', ')})`)
    .option('--running', 'only vulnerabilities of images running now')
    .option('--fixable', 'only findings with a fixed version')
    .addHelpText('after', '\nExit codes: 0 listed, 1 error, 2 usage.')
    .action(async (o: { severity?: string; running?: boolean; fixable?: boolean }, cmd: Command) => {
      const { api, format } = clientOf(cmd);
      const q = new URLSearchParams();
      if (o.severity !== undefined) q.set('severity', o.severity);
      if (o.running) q.set('running', 'true');
      if (o.fixable) q.set('fixable', 'true');
      const l = await get<ListJson>(api, `/v1/vulnerabilities${q.size ? `?${q}` : ''}`);
      print(format, l, () => ({
        head: ['ID', 'SEVERITY', 'IMAGES', 'RUNNING', 'FIXED IN', 'PACKAGES'],
        body: l.vulnerabilities.map((v) => [
          v.id,
          v.severity,
          String(v.images),
          String(v.runningImages),
          v.fixedVersions.join(', ') || '-',
          v.packages.join(', '),
        ]),
      }));
    });
}
