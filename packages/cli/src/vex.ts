/** `writ vuln vex list|export|delete`: the OpenVEX statements the server keeps, and an OpenVEX document of them and the active VulnExceptions. */
import { writeFileSync } from 'node:fs';
import { WritError, isWritError } from '@writ/spiffe';
import { type Command, CommanderError } from 'commander';
import { ApiError, type ApiClient } from './client.ts';
import { print, type Format } from './output.ts';

export interface VexIngestAnswer {
  format: 'openvex';
  document: string;
  author: string;
  version: number;
  created: boolean;
  replaced: number | null;
  statements: number;
  byStatus: Record<string, number>;
}

/** What `writ vuln ingest` prints for an OpenVEX document. */
export function vexIngestTable(r: VexIngestAnswer): string {
  const status = Object.entries(r.byStatus)
    .filter(([, n]) => n > 0)
    .map(([s, n]) => `${s} ${n}`)
    .join(', ');
  const what = r.created ? 'stored' : r.replaced !== null ? `replaced version ${r.replaced}` : 'already stored';
  return [
    `document    ${r.document}`,
    `author      ${r.author}`,
    `version     ${r.version} (${what})`,
    `statements  ${r.statements}${status ? ` (${status})` : ''}`,
    '',
  ].join('\n');
}

interface VexList {
  documents: Array<{ id: string; author: string; version: number; timestamp: string | null; statements: number }>;
  statements: Array<{
    document: string;
    vulnerability: string;
    status: string;
    justification: string | null;
    impactStatement: string | null;
    products: Array<{ id: string; subcomponents: Array<{ id: string }> }>;
  }>;
}

function failed(err: unknown): never {
  if (!isWritError(err)) throw err;
  const code = err instanceof ApiError ? err.serverCode : err.code;
  process.stderr.write(`writ: ${err.message}${err.field ? ` (at ${err.field})` : ''} [${code}]\n`);
  throw new CommanderError(1, 'writ.failed', err.message);
}

export function registerVex(program: Command, clientOf: (cmd: Command) => { api: ApiClient; format: Format }): void {
  const vuln = program.commands.find((c) => c.name() === 'vuln') ?? program.command('vuln').description('vulnerable images');
  const vex = vuln
    .command('vex')
    .description('OpenVEX statements: ingest them with `writ vuln ingest -f doc.openvex.json`; list, export (with the active VulnExceptions) or delete them');
  vex
    .command('list')
    .description('the stored OpenVEX statements (latest version of each document)')
    .option('--vulnerability <id>', 'only the statements about this CVE or GHSA ID (by name or alias)')
    .action(async (o: { vulnerability?: string }, cmd: Command) => {
      const { api, format } = clientOf(cmd);
      let r: VexList;
      try {
        r = await api.call<VexList>('GET', `/v1/vex${o.vulnerability ? `?vulnerability=${encodeURIComponent(o.vulnerability)}` : ''}`);
      } catch (err) {
        failed(err);
      }
      if (format !== 'table') return print(format, r);
      print(format, r.statements, () => ({
        head: ['VULNERABILITY', 'STATUS', 'PRODUCTS', 'WHY', 'DOCUMENT'],
        body: r.statements.map((s) => [
          s.vulnerability,
          s.status,
          s.products.map((p) => `${p.id}${p.subcomponents.length ? ` [${p.subcomponents.map((c) => c.id).join(' ')}]` : ''}`).join(', '),
          s.justification ?? (s.impactStatement ? s.impactStatement.slice(0, 60) : '-'),
          s.document,
        ]),
      }));
    });
  vex
    .command('export')
    .description('write an OpenVEX v0.2.0 document of the stored statements and the active VulnExceptions (not_affected, their reason as impact_statement)')
    .option('--vulnerability <id>', 'only statements and exceptions about this CVE or GHSA ID')
    .option('-f, --file <file>', 'write it to this file instead of stdout')
    .addHelpText('after', '\nThe document is JSON whatever -o says (OpenVEX is JSON). Exit codes: 0 written, 1 error, 2 usage.')
    .action(async (o: { vulnerability?: string; file?: string }, cmd: Command) => {
      const { api } = clientOf(cmd);
      let doc: unknown;
      try {
        doc = await api.call('GET', `/v1/vex/export${o.vulnerability ? `?vulnerability=${encodeURIComponent(o.vulnerability)}` : ''}`);
      } catch (err) {
        failed(err);
      }
      const text = `${JSON.stringify(doc, null, 2)}\n`;
      if (o.file === undefined || o.file === '-') return void process.stdout.write(text);
      try {
        writeFileSync(o.file, text);
      } catch (err) {
        failed(
          new WritError('ERR_FIELD_INVALID', `cannot write ${o.file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { field: 'file' }),
        );
      }
      const n = (doc as { statements?: unknown[] }).statements?.length ?? 0;
      process.stderr.write(`wrote ${o.file}: ${n} statement${n === 1 ? '' : 's'}\n`);
    });
  vex
    .command('delete')
    .argument('<id>', "the document's @id")
    .description('remove a stored OpenVEX document and its statements')
    .action(async (id: string, _o: unknown, cmd: Command) => {
      const { api } = clientOf(cmd);
      try {
        await api.call('DELETE', `/v1/vex/${encodeURIComponent(id)}`);
      } catch (err) {
        failed(err);
      }
      process.stdout.write(`deleted ${id}\n`);
    });
}
