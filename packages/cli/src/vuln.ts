/** `writ vuln ingest` (scanner reports in) and `writ image show` (one image of the inventory). */
import { createReadStream, fstatSync, openSync } from 'node:fs';
import type { Readable } from 'node:stream';
import { WritError, isWritError } from '@writ/spiffe';
import { SEVERITIES, type Severity } from '@writ/vuln/types';
import { type Command, CommanderError } from 'commander';
import { ApiError, type ApiClient } from './client.ts';
import { print, type Format } from './output.ts';
import { type VexIngestAnswer, vexIngestTable } from './vex.ts';

type Counts = Record<Severity, number>;

const collect = (v: string, prev: string[] = []): string[] => [...prev, v];

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

/** A report file opened for streaming: its size when known (a file), undefined for stdin. */
function openDocument(file: string): { stream: Readable; size: number | undefined } {
  if (file === '-') return { stream: process.stdin, size: undefined };
  let fd: number;
  try {
    fd = openSync(file, 'r');
    const st = fstatSync(fd);
    if (st.isDirectory()) throw Object.assign(new Error('a directory'), { code: 'EISDIR' });
    return { stream: createReadStream('', { fd, highWaterMark: 1024 * 1024 }), size: st.isFile() ? st.size : undefined };
  } catch (e) {
    throw new WritError('ERR_FIELD_INVALID', `cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { field: 'file' });
  }
}

const mib = (n: number): string => `${(n / 1024 / 1024).toFixed(1)} MiB`;

/**
 * Progress of one upload on stderr: on a terminal one line redrawn in place, otherwise (with
 * --progress) a line every tenth of the file (every 16 MiB when its size is unknown).
 */
export function progressReporter(label: string, size: number | undefined, tty: boolean, write: (s: string) => void): { sent(n: number): void; done(): void } {
  let last = -1;
  let shown = false;
  const line = (n: number): string =>
    `${label}: sent ${mib(n)}${size === undefined ? '' : ` of ${mib(size)} (${size === 0 ? 100 : Math.floor((n / size) * 100)}%)`}`;
  return {
    sent(n) {
      const step = size === undefined ? Math.floor(n / (16 * 1024 * 1024)) : Math.floor((n / Math.max(size, 1)) * (tty ? 100 : 10));
      if (step === last) return;
      last = step;
      shown = true;
      write(tty ? `\r\x1b[K${line(n)}` : `${line(n)}\n`);
    },
    done() {
      if (shown && tty) write('\n');
    },
  };
}

/** Big enough that a terminal shows how the upload goes without --progress. */
const PROGRESS_FROM_BYTES = 4 * 1024 * 1024;

const kv = (rows: Array<[string, string]>): string => {
  const w = Math.max(...rows.map(([k]) => k.length));
  return `${rows.map(([k, v]) => `${k.padEnd(w)}  ${v}`.trimEnd()).join('\n')}\n`;
};

/** One report's outcome as the table prints it. */
function ingestTable(r: IngestAnswer, first: Array<[string, string]>): string {
  if (r.format === 'openvex') return first.map(([k, v]) => `${k.padEnd(10)}  ${v}\n`).join('') + vexIngestTable(r as unknown as VexIngestAnswer);
  return kv([
    ...first,
    ['image', r.image],
    ['scanner', `${r.scanner} (${r.format})${r.scannedAt ? `, scanned ${r.scannedAt}` : ''}`],
    ['packages', String(r.packages)],
    ['findings', `${r.findings}${r.findings ? ` (${severityLine(r.bySeverity)})` : ''}`],
    ['report', `${r.reportId} ${r.created ? 'created' : 'already stored'}`],
  ]);
}

export function registerVuln(program: Command, clientOf: (cmd: Command) => { api: ApiClient; format: Format }): void {
  const vuln = program.command('vuln').description('vulnerable images: scanner reports in, the image inventory out');
  vuln
    .command('ingest')
    .description(
      'send scanner reports to the server (Trivy JSON, Grype JSON, CycloneDX, SPDX), each streamed as it is read: filed under its image digest, idempotent per image, scanner and scan time; or OpenVEX documents: their statements stored under their @id (a higher version replaces them)',
    )
    .requiredOption('-f, --file <file>', 'a report document ("-" for stdin); repeatable: each file is its own report, stored or refused whole', collect)
    .option('--progress', 'show the bytes sent on stderr even when it is not a terminal (a terminal shows them for files over 4 MiB)')
    .addHelpText(
      'after',
      '\nThe server refuses a report over its --report-limit (default 64 MiB) with ERR_BODY_TOO_LARGE as soon as that much has arrived.\nExit codes: 0 every report stored (or already stored), 1 any refused (the message names the JSON path) or the server failed, 2 usage.',
    )
    .action(async (f: { file: string[]; progress?: boolean }, cmd: Command) => {
      const { api, format } = clientOf(cmd);
      if (f.file.filter((x) => x === '-').length > 1) throw new CommanderError(2, 'writ.usage', 'stdin ("-f -") can be read only once');
      const many = f.file.length > 1;
      const results: Array<({ file: string } & IngestAnswer) | { file: string; error: { code: string; message: string; field?: string } }> = [];
      let failed = 0;
      for (const [i, file] of f.file.entries()) {
        let r: IngestAnswer;
        try {
          const doc = openDocument(file);
          const tty = process.stderr.isTTY === true;
          const show = f.progress === true || (tty && (doc.size === undefined || doc.size >= PROGRESS_FROM_BYTES));
          const progress = show ? progressReporter(file === '-' ? 'stdin' : file, doc.size, tty, (t) => process.stderr.write(t)) : undefined;
          try {
            r = await api.upload<IngestAnswer>('POST', '/v1/reports', doc.stream, {
              length: doc.size,
              timeoutMs: 300_000,
              ...(progress ? { onProgress: (n: number) => progress.sent(n) } : {}),
            });
          } finally {
            progress?.done();
          }
        } catch (err) {
          if (!isWritError(err)) throw err;
          failed++;
          const code = err instanceof ApiError ? err.serverCode : err.code;
          const at = err.field ? ` (at ${err.field})` : '';
          process.stderr.write(`writ: ${many ? `${file}: ` : ''}${err.message}${at} [${code}]\n`);
          results.push({ file, error: { code, message: err.message, ...(err.field ? { field: err.field } : {}) } });
          continue;
        }
        results.push({ file, ...r });
        if (format !== 'table') continue;
        process.stdout.write((many && i > 0 ? '\n' : '') + ingestTable(r, many ? [['file', file]] : []));
      }
      if (format !== 'table') {
        // One file: the answer itself (as before); several: one item per file, refusals included.
        if (!many) {
          const only = results[0];
          if (only && !('error' in only)) {
            const { file: _, ...answer } = only;
            print(format, answer);
          }
        } else print(format, results);
      }
      if (failed) throw new CommanderError(1, 'writ.failed', `${failed} of ${f.file.length} report${f.file.length === 1 ? '' : 's'} refused`);
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
