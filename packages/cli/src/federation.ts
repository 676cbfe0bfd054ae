/** `writ federation ...`: federation relationships with peer trust domains (issue 14), and the server's bundle endpoint flags. */
import { readFileSync } from 'node:fs';
import { CommanderError, Option, type Command } from 'commander';
import { WritError, parseSpiffeId, parseTrustDomain } from '@writ/spiffe';
import type { ApiClient } from './client.ts';
import { print, type Format } from './output.ts';

export interface FederationJson {
  trustDomain: string;
  bundleEndpointUrl: string;
  profile: 'https_web' | 'https_spiffe';
  endpointSpiffeId: string | null;
  createdAt: string;
  lastSuccessAt: string | null;
  lastError: { code: string | null; message: string; at: string | null } | null;
  sequence: number | null;
  refreshHintSeconds: number | null;
  refreshIntervalSeconds: number;
  nextRefreshAt: string;
  stalenessSeconds: number;
  stale: boolean;
  bundle: { x509Authorities: number; jwtAuthorities: number; updatedAt: string } | null;
  [k: string]: unknown;
}

/** `writ server start` flags for the bundle endpoint listener and fetching peers' bundles. */
export function federationServerFlags(o: Record<string, unknown>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of ['bundleEndpointListen', 'bundleEndpointProfile', 'bundleEndpointCert', 'bundleEndpointKey', 'federationTimeout'])
    if (typeof o[k] === 'string') out[k] = o[k];
  return out;
}

const ago = (s: number): string =>
  s < 120 ? `${s}s` : s < 7200 ? `${Math.floor(s / 60)}m` : s < 172_800 ? `${Math.floor(s / 3600)}h` : `${Math.floor(s / 86_400)}d`;

/** A bootstrap bundle file: SPIFFE bundle JSON, or PEM CA certificates. */
function readBootstrap(file: string): unknown {
  let text: string;
  try {
    text = readFileSync(file === '-' ? 0 : file, 'utf8');
  } catch (err) {
    throw new WritError('ERR_FIELD_INVALID', `--bootstrap-bundle: cannot read ${file}: ${(err as NodeJS.ErrnoException).code}`, { field: 'bootstrapBundle' });
  }
  if (!text.trimStart().startsWith('{')) return text;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw new WritError('ERR_FIELD_INVALID', `--bootstrap-bundle: ${file} is neither SPIFFE bundle JSON nor PEM`, { field: 'bootstrapBundle' });
  }
}

function showText(f: FederationJson): string {
  const lines: Array<[string, string]> = [
    ['trust domain', f.trustDomain],
    ['bundle endpoint', f.bundleEndpointUrl],
    ['profile', f.profile],
    ...(f.endpointSpiffeId ? [['endpoint SPIFFE ID', f.endpointSpiffeId] as [string, string]] : []),
    ['created', f.createdAt],
    ['sequence', f.sequence === null ? '-' : String(f.sequence)],
    ['refresh', `every ${f.refreshIntervalSeconds}s (${f.refreshHintSeconds === null ? 'no hint from the peer' : `peer hint ${f.refreshHintSeconds}s`})`],
    ['last success', f.lastSuccessAt ?? 'never'],
    ['last error', f.lastError ? `${f.lastError.at} ${f.lastError.code}: ${f.lastError.message}` : '-'],
    ['next refresh', f.nextRefreshAt],
    ['staleness', `${ago(f.stalenessSeconds)}${f.stale ? ' (STALE)' : ''}`],
    ['bundle', f.bundle ? `${f.bundle.x509Authorities} X.509 and ${f.bundle.jwtAuthorities} JWT authorities, updated ${f.bundle.updatedAt}` : 'none held'],
  ];
  const w = Math.max(...lines.map(([k]) => k.length));
  return `${lines.map(([k, v]) => `${`${k}:`.padEnd(w + 2)}${v}`).join('\n')}\n`;
}

function statusOf(f: FederationJson): string {
  if (f.lastError && (f.lastSuccessAt === null || (f.lastError.at ?? '') > f.lastSuccessAt)) return f.stale ? 'stale' : 'failing';
  return f.lastSuccessAt ? 'ok' : 'pending';
}

export function registerFederation(program: Command, clientOf: (cmd: Command) => { api: ApiClient; format: Format }): void {
  const fed = program
    .command('federation')
    .description('federation relationships: peer trust domains whose bundles this server fetches from their bundle endpoints and keeps fresh');
  const path = (td: string): string => `/v1/federation/${encodeURIComponent(td)}`;

  fed
    .command('create')
    .description("fetch a peer trust domain's bundle from its SPIFFE bundle endpoint, at the peer's refresh hint")
    .requiredOption('--trust-domain <td>', 'the peer trust domain, e.g. partner.example')
    .requiredOption('--bundle-endpoint-url <url>', 'its bundle endpoint, e.g. https://spire.partner.example:8443/')
    .addOption(new Option('--profile <profile>', 'how the endpoint is authenticated').choices(['https_web', 'https_spiffe']).makeOptionMandatory())
    .option('--endpoint-spiffe-id <id>', "https_spiffe: the endpoint's SPIFFE ID, e.g. spiffe://partner.example/spire/server")
    .option(
      '--bootstrap-bundle <file>',
      "https_spiffe, an endpoint ID of the peer's trust domain: the peer's bundle to authenticate the first fetch (SPIFFE bundle JSON or PEM; '-' for stdin)",
    )
    .addHelpText(
      'after',
      "\nhttps_spiffe checks the endpoint's X.509-SVID against the peer's bundle held here (the bootstrap bundle the first time), so it follows the peer's CA rotation by itself.\nhttps_web checks the endpoint with the Web PKI (system roots, NODE_EXTRA_CA_CERTS on the server).",
    )
    .action(
      async (f: { trustDomain: string; bundleEndpointUrl: string; profile: string; endpointSpiffeId?: string; bootstrapBundle?: string }, cmd: Command) => {
        parseTrustDomain(f.trustDomain);
        if (f.endpointSpiffeId) parseSpiffeId(f.endpointSpiffeId);
        const { api, format } = clientOf(cmd);
        const body = {
          trustDomain: f.trustDomain,
          bundleEndpointUrl: f.bundleEndpointUrl,
          profile: f.profile,
          ...(f.endpointSpiffeId ? { endpointSpiffeId: f.endpointSpiffeId } : {}),
          ...(f.bootstrapBundle ? { bootstrapBundle: readBootstrap(f.bootstrapBundle) } : {}),
        };
        const res = await api.call<FederationJson>('POST', '/v1/federation', body);
        if (format === 'table') return void process.stderr.write(`federating with ${res.trustDomain}: first fetch started (see writ federation status)\n`);
        print(format, res);
      },
    );

  fed
    .command('list')
    .description('list federation relationships')
    .action(async (_o: unknown, cmd: Command) => {
      const { api, format } = clientOf(cmd);
      const res = await api.call<{ relationships: FederationJson[] }>('GET', '/v1/federation');
      print(format, res, () => ({
        head: ['TRUST DOMAIN', 'PROFILE', 'BUNDLE ENDPOINT', 'ENDPOINT SPIFFE ID'],
        body: res.relationships.map((r) => [r.trustDomain, r.profile, r.bundleEndpointUrl, r.endpointSpiffeId ?? '-']),
      }));
    });

  fed
    .command('show')
    .argument('<trust-domain>')
    .description('one relationship: endpoint, profile, and how its refreshes go')
    .action(async (td: string, _o: unknown, cmd: Command) => {
      const { api, format } = clientOf(cmd);
      const res = await api.call<FederationJson>('GET', path(td));
      if (format === 'table') return void process.stdout.write(showText(res));
      print(format, res);
    });

  fed
    .command('status')
    .description('how fresh each peer bundle is: sequence, last success, last error, next refresh, staleness')
    .addHelpText(
      'after',
      '\nSTATE: ok (last fetch succeeded), pending (no fetch yet), failing (the last fetch failed; the last good bundle stays in use), stale (failing and no success within 3 refresh intervals: the server logs a warning).\nExit codes: 0 every relationship ok or pending, 1 any failing or stale, 2 usage.',
    )
    .action(async (_o: unknown, cmd: Command) => {
      const { api, format } = clientOf(cmd);
      const res = await api.call<{ relationships: FederationJson[] }>('GET', '/v1/federation');
      print(format, res, () => ({
        head: ['TRUST DOMAIN', 'STATE', 'SEQUENCE', 'LAST SUCCESS', 'STALENESS', 'NEXT REFRESH', 'LAST ERROR'],
        body: res.relationships.map((r) => [
          r.trustDomain,
          statusOf(r),
          r.sequence === null ? '-' : String(r.sequence),
          r.lastSuccessAt ?? 'never',
          ago(r.stalenessSeconds),
          r.nextRefreshAt,
          r.lastError ? `${r.lastError.code}: ${r.lastError.message}` : '-',
        ]),
      }));
      // Already printed: the exit code is what a check script looks at.
      if (res.relationships.some((r) => ['failing', 'stale'].includes(statusOf(r)))) throw new CommanderError(1, 'writ.failed', 'a peer is failing');
    });

  fed
    .command('refresh')
    .argument('<trust-domain>')
    .description("fetch the peer's bundle now (a failure says why; the last good bundle stays)")
    .action(async (td: string, _o: unknown, cmd: Command) => {
      const { api, format } = clientOf(cmd);
      const res = await api.call<FederationJson>('POST', `${path(td)}/refresh`);
      if (format === 'table') return void process.stderr.write(`refreshed ${td}: sequence ${res.sequence ?? '-'}\n`);
      print(format, res);
    });

  fed
    .command('delete')
    .argument('<trust-domain>')
    .description("end the relationship: stop fetching and drop the peer's bundle (entries federating with it lose it)")
    .action(async (td: string, _o: unknown, cmd: Command) => {
      await clientOf(cmd).api.call('DELETE', path(td));
      process.stderr.write(`deleted the federation relationship with ${td}\n`);
    });
}
