/** `writ vuln ingest` (scanner reports in) and `writ image show` (one image of the inventory). */
import { readFileSync } from 'node:fs';
import { WritError, isWritError } from '@writ/spiffe';
import { SEVERITIES, type Severity } from '@writ/vuln';
import { type Command, CommanderError } from 'commander';
import { ApiError, type ApiClient } from './client.ts';
import { print, type Format } from './output.ts';
import { type VexIngestAnswer, vexIngestTable } from './vex.ts';

type Counts = Record<Severity, number>;

interface IngestAnswer {
  reportId: string;
  created: boolean;
  image: string;
  scanner: string;
  format: string;
  scannedAt: string | null;
  packages: number;
  findings: number;
  bySeverity: Counts;
}

interface ImageAnswer {
  digest: string;
  names: string[];
  tags: string[];
  layers: string[];
  annotations: Record<string, string>;
  created: string | null;
  firstSeen: string;
  lastSeen: string;
  reports: Array<{
    id: string;
    scanner: string;
    scannerVersion: string | null;
    format: string;
    scannedAt: string | null;
    packageCount: number;
    findingCount: number;
    bySeverity: Counts;
    packages: Array<{ layer: string | null }>;
  }>;
  base: { digest: string | null; name: string | null; source: string; baseLayers: number | null; inInventory: boolean } | null;
  lineage: {
    parents: Array<{ digest: string | null; name: string | null; source: string; baseLayers: number | null; inInventory: boolean }>;
    children: Array<{ digest: string; names: string[]; tags: string[] }>;
  };
  workloads: Array<{ spiffeIds: string[]; owner: string | null; node: string | null; namespace: string | null; pod: string | null; container: string | null }>;
}

/** `critical 1, high 3` (severities with none left out; `none` when there are none at all). */
export function severityLine(c: Counts): string {
  const parts = SEVERITIES.filter((s) => (c[s] ?? 0) > 0).map((s) => `${s} ${c[s]}`);
  return parts.length ? parts.join(', ') : 'none';
}

/** A refusal with the JSON path it names, as one line on stderr; exit 1. */
function refused(err: unknown): never {
  if (!isWritError(err)) throw err;
  const code = err instanceof ApiError ? err.serverCode : err.code;
  const at = err.field ? ` (at ${err.field})` : '';
  process.stderr.write(`writ: ${err.message}${at} [${code}]\n`);
  throw new CommanderError(1, 'writ.failed', err.message);
}

function readDocument(file: string): unknown {
  let text: string;
  try {
    text = file === '-' ? readFileSync(0, 'utf8') : readFileSync(file, 'utf8');
  } catch (e) {
    throw new WritError('ERR_FIELD_INVALID', `cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { field: 'file' });
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    throw new WritError('ERR_VULN_REPORT_INVALID', `${file === '-' ? 'stdin' : file} is not JSON: ${(e as Error).message.slice(0, 120)}`);
  }
}

const kv = (rows: Array<[string, string]>): string => {
  const w = Math.max(...rows.map(([k]) => k.length));
  return `${rows.map(([k, v]) => `${k.padEnd(w)}  ${v}`.trimEnd()).join('\n')}\n`;
};

export function registerVuln(program: Command, clientOf: (cmd: Command) => { api: ApiClient; format: Format }): void {
  const vuln = program.command('vuln').description('vulnerable images: scanner reports in, the image inventory out');
  vuln
    .command('ingest')
    .description(
      'send one scanner report to the server (Trivy JSON, Grype JSON, CycloneDX, SPDX): filed under its image digest, idempotent per image, scanner and scan time; or an OpenVEX document: its statements stored under its @id (a higher version replaces them)',
    )
    .requiredOption('-f, --file <file>', 'the report document ("-" for stdin)')
    .addHelpText('after', '\nExit codes: 0 stored (or already stored), 1 refused (the message names the JSON path) or the server failed, 2 usage.')
    .action(async (f: { file: string }, cmd: Command) => {
      const { api, format } = clientOf(cmd);
      let r: IngestAnswer;
      try {
        r = await api.call<IngestAnswer>('POST', '/v1/reports', readDocument(f.file), { timeoutMs: 300_000 });
      } catch (err) {
        refused(err);
      }
      if (format !== 'table') return print(format, r);
      if (r.format === 'openvex') return void process.stdout.write(vexIngestTable(r as unknown as VexIngestAnswer));
      process.stdout.write(
        kv([
          ['image', r.image],
          ['scanner', `${r.scanner} (${r.format})${r.scannedAt ? `, scanned ${r.scannedAt}` : ''}`],
          ['packages', String(r.packages)],
          ['findings', `${r.findings}${r.findings ? ` (${severityLine(r.bySeverity)})` : ''}`],
          ['report', `${r.reportId} ${r.created ? 'created' : 'already stored'}`],
        ]),
      );
    });

  const image = program.commands.find((c) => c.name() === 'image') ?? program.command('image').description('container images: digests and cosign signatures');
  image
    .command('show')
    .description(
      "one image of the inventory by manifest digest: names, base and lineage, workloads running it now, layers (the base's marked), and per scanner its packages and findings by severity",
    )
    .argument('<digest>', 'the manifest digest, sha256:...')
    .addHelpText('after', '\nExit codes: 0 shown, 1 unknown image or error, 2 usage.')
    .action(async (digest: string, _o: unknown, cmd: Command) => {
      const { api, format } = clientOf(cmd);
      let d: ImageAnswer;
      try {
        d = await api.call<ImageAnswer>('GET', `/v1/images/${encodeURIComponent(digest)}`);
      } catch (err) {
        refused(err);
      }
      if (format !== 'table') return print(format, d);
      const link = (p: { digest: string | null; name: string | null; source: string; baseLayers: number | null; inInventory: boolean }): string =>
        `${p.name ?? '-'}${p.digest ? `@${p.digest}` : ''} (from ${p.source === 'annotation' ? 'annotations' : 'layers'}${p.inInventory ? '' : ', not in the inventory'})`;
      const rows: Array<[string, string]> = [
        ['digest', d.digest],
        ['names', d.names.join(', ') || '-'],
        ['tags', d.tags.join(', ') || '-'],
        ['created', d.created ?? '-'],
        ['base', d.base ? link(d.base) : '-'],
        ...d.lineage.parents.slice(1).map((p): [string, string] => ['  then', link(p)]),
        ['children', d.lineage.children.map((c) => `${c.tags[0] ?? c.names[0] ?? '-'}@${c.digest}`).join(', ') || '-'],
        ['seen', `${d.firstSeen} .. ${d.lastSeen}`],
        ['running', `${d.workloads.length} workload${d.workloads.length === 1 ? '' : 's'}`],
        ...d.workloads.map((w): [string, string] => [
          '',
          `${w.owner ?? '(no owner)'}  ${w.spiffeIds.join(',') || '-'}  ${w.node ?? '-'}  ${w.pod ? `${w.namespace ?? '-'}/${w.pod}` : (w.container ?? '-')}`,
        ]),
        ['layers', String(d.layers.length)],
      ];
      let out = kv(rows);
      const baseLayers = d.base?.baseLayers ?? 0;
      const perLayer = new Map<string, number>();
      for (const r of d.reports) for (const p of r.packages) if (p.layer) perLayer.set(p.layer, (perLayer.get(p.layer) ?? 0) + 1);
      d.layers.forEach((l, i) => {
        const n = perLayer.get(l);
        out += `  ${String(i + 1).padStart(2)}  ${l}${i < baseLayers ? '  base' : ''}${n ? `  ${n} package${n === 1 ? '' : 's'}` : ''}\n`;
      });
      if (d.reports.length === 0) out += 'reports   none\n';
      for (const r of d.reports) {
        out += `report ${r.scanner}${r.scannerVersion ? ` ${r.scannerVersion}` : ''} (${r.format})${r.scannedAt ? `, scanned ${r.scannedAt}` : ''}\n`;
        out += `  packages  ${r.packageCount}\n  findings  ${r.findingCount}${r.findingCount ? ` (${severityLine(r.bySeverity)})` : ''}\n`;
      }
      process.stdout.write(out);
    });
}
