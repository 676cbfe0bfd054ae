/** `-o table|json|yaml` for every read command. */
import { stringify } from 'yaml';
import { WritError } from '@writ/spiffe';

/**
 * Aborted when the reader of stdout went away (`writ ... | head -1`): the rest of the output is
 * dropped, commands finish with the exit code they would have had, and endless streams stop.
 */
export const stdoutClosed = new AbortController();

/** Once per process: EPIPE on stdout is the reader's choice, not a crash (no 'error' event unhandled). */
let listening = false;
export function quietOnEpipe(): void {
  if (listening) return;
  listening = true;
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE' || err.code === 'ERR_STREAM_DESTROYED') return void stdoutClosed.abort();
    process.stderr.write(`writ: cannot write the output: ${err.code ?? err.message}\n`);
    process.exitCode = 1;
  });
}

export const FORMATS = ['table', 'json', 'yaml'] as const;
export type Format = (typeof FORMATS)[number];

export function checkFormat(f: string): Format {
  if (!(FORMATS as readonly string[]).includes(f)) throw new WritError('ERR_FIELD_INVALID', `-o must be one of ${FORMATS.join(', ')}`, { field: 'output' });
  return f as Format;
}

/** Prints `data`; for tables, `rows` gives the columns to show. */
export function print(format: Format, data: unknown, rows?: () => { head: string[]; body: string[][] }): void {
  if (format === 'json') return void process.stdout.write(`${JSON.stringify(data, null, 2)}\n`);
  if (format === 'yaml') return void process.stdout.write(stringify(data));
  if (!rows) return void process.stdout.write(stringify(data));
  const { head, body } = rows();
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  process.stdout.write(`${[line(head), ...body.map(line)].join('\n')}\n`);
}

/** One item of a stream (`decisions tail`, `svid watch`): json one object per line, yaml documents separated by ---, table the given line. */
export function streamed(format: Format, item: unknown, line: () => string): string {
  if (format === 'json') return `${JSON.stringify(item)}\n`;
  if (format === 'yaml') return `---\n${stringify(item)}`;
  return `${line()}\n`;
}
