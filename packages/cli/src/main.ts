/** `writ <noun> <verb>`: the operator's and CI's command line. Exit codes: 0 ok, 1 error, 2 usage. */
import { type Command, CommanderError, Option } from 'commander';
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { WritError, bundleToPem, createCsr, parseBundleJson, toPem } from '@writ/spiffe';
import { generateKeyPairSync } from 'node:crypto';
import { addAdmittedImagesCommand } from './admitted-images.ts';
import { ApiClient, ApiError, connectionOf } from './client.ts';
import { DYNAMIC, completeFromServer, completionScript } from './completion.ts';
import { registerAdmissionCheck } from './admission.ts';
import { checkFormat, print, stdoutClosed, streamed } from './output.ts';
import { registerAdmissionEvents, registerAdmissionManifests } from './admission-events.ts';
import { DEFAULT_WAIT, reportWait, waitForAgents, waitTimeoutMs } from './wait.ts';
import { registerImage } from './image.ts';
import { registerVuln } from './vuln.ts';
import { registerVulnGate } from './vuln-gate.ts';
import { registerImageAdd } from './image-add.ts';
import { registerVulnAnswers } from './vuln-answers.ts';
import { registerVex } from './vex.ts';
import { registerWorkload } from './workload.ts';
import { federationServerFlags, registerFederation } from './federation.ts';
import { registerLearn } from './learn.ts';
import { registerServerBackup } from './server-backup.ts';
import { registerOciHook } from './oci-hook.ts';
import { registerCsi } from './csi.ts';
import { registerAlerts } from './alerts.ts';
import { registerAudit } from './audit.ts';
import { type ProcessMetrics, addAgentStart, startHealth } from './agent-start.ts';
import { type Globals, PIN_HELP, newProgram, runProgram } from './program.ts';

const collect = (v: string, prev: string[] = []): string[] => [...prev, v];
const progress = (line: string): void => void process.stderr.write(`${line}\n`);

/** Workload API errors become WritErrors (exit 1) with the gRPC status in the message. */
async function grpcCall<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw new WritError('ERR_REQUEST_FAILED', `Workload API: ${(err as Error).message}`);
  }
}

/** The `--trust-domain` options that name the server's trust domain (`bundle set`'s names a foreign one). */
const PIN_OPTIONS = new WeakSet<Option>();
function clientOf(cmd: Command): { api: ApiClient; format: ReturnType<typeof checkFormat> } {
  const g = cmd.optsWithGlobals<Globals>();
  const pins = cmd.options.some((o) => PIN_OPTIONS.has(o));
  const api = new ApiClient(connectionOf({ ...g, trustDomain: pins ? g.trustDomain : undefined }));
  return { api, format: checkFormat(g.output) };
}

type EntryJson = { id: string; spiffeId: string; parentId: string; selectors: string[]; [k: string]: unknown };
const entryRows = (entries: EntryJson[]) => () => {
  // The column appears once an entry needs it: tables of entries without it read as before.
  const image = entries.some((e) => e['requireAdmittedImage'] === true);
  const owner = entries.some((e) => typeof e['owner'] === 'string');
  return {
    head: ['ID', 'SPIFFE ID', 'PARENT ID', 'SELECTORS', ...(image ? ['IMAGE'] : []), ...(owner ? ['OWNER'] : [])],
    body: entries.map((e) => [
      e.id,
      e.spiffeId,
      e.parentId,
      e.selectors.join(','),
      ...(image ? [e['requireAdmittedImage'] === true ? 'admitted only' : 'any'] : []),
      ...(owner ? [typeof e['owner'] === 'string' ? e['owner'] : '-'] : []),
    ]),
  };
};

interface EntryFlags {
  spiffeId?: string;
  parentId?: string;
  selector?: string[];
  x509SvidTtl?: string;
  jwtSvidTtl?: string;
  dnsName?: string[];
  federatesWith?: string[];
  admin?: boolean;
  hint?: string;
  expiresAt?: string;
  requireAdmittedImage?: boolean;
  /** false: --no-owner. */
  owner?: string | false;
}
function entryBody(f: EntryFlags): Record<string, unknown> {
  const b: Record<string, unknown> = {};
  if (f.spiffeId !== undefined) b['spiffeId'] = f.spiffeId;
  if (f.parentId !== undefined) b['parentId'] = f.parentId;
  if (f.selector?.length) b['selectors'] = f.selector;
  if (f.x509SvidTtl !== undefined) b['x509SvidTtl'] = f.x509SvidTtl;
  if (f.jwtSvidTtl !== undefined) b['jwtSvidTtl'] = f.jwtSvidTtl;
  if (f.dnsName?.length) b['dnsNames'] = f.dnsName;
  if (f.federatesWith?.length) b['federatesWith'] = f.federatesWith;
  if (f.admin !== undefined) b['admin'] = f.admin;
  if (f.hint !== undefined) b['hint'] = f.hint;
  if (f.expiresAt !== undefined) b['expiresAt'] = f.expiresAt === 'never' ? null : f.expiresAt;
  if (f.requireAdmittedImage !== undefined) b['requireAdmittedImage'] = f.requireAdmittedImage;
  if (f.owner !== undefined) b['owner'] = f.owner === false ? null : f.owner;
  return b;
}
function entryOptions(c: Command): Command {
  return c
    .option('--spiffe-id <id>', 'SPIFFE ID given to matching workloads')
    .option('--parent-id <id>', 'SPIFFE ID of the agent that serves the entry')
    .option('--selector <type:value>', 'selector the workload must match (repeatable; all must match)', collect)
    .option('--x509-svid-ttl <duration>', 'X.509-SVID lifetime, e.g. 1h')
    .option('--jwt-svid-ttl <duration>', 'JWT-SVID lifetime, e.g. 5m')
    .option('--dns-name <name>', 'DNS SAN for the X.509-SVID (repeatable)', collect)
    .option('--federates-with <trust-domain>', 'foreign trust domain whose bundle the workload gets (repeatable)', collect)
    .option('--admin', 'the workload may use the admin API')
    .option('--hint <text>', 'hint to tell apart several SVIDs of one workload')
    .option('--expires-at <time>', 'RFC 3339 time after which the entry is invalid ("never" to clear)')
    .option(
      '--require-admitted-image',
      'SVIDs only for a container whose image digest was admitted under an enforce admission policy (a plain process never gets them)',
    )
    .option('--no-require-admitted-image', 'any workload with the selectors gets the SVIDs (the default)')
    .option(
      '--owner <name>',
      'who owns the workloads served this ID (a team): it wins over owner labels and the namespace map in `writ workload list` and `writ vuln affected`',
    )
    .option('--no-owner', 'clear the owner (owner labels and the namespace map decide)');
}

function readText(file: string): string {
  try {
    return file === '-' ? readFileSync(0, 'utf8') : readFileSync(file, 'utf8');
  } catch (err) {
    throw new WritError('ERR_CONFIG_INVALID', `cannot read ${file}: ${(err as NodeJS.ErrnoException).code}`);
  }
}

function readDataFile(file: string): unknown {
  let text: string;
  try {
    text = file === '-' ? readFileSync(0, 'utf8') : readFileSync(file, 'utf8');
  } catch (err) {
    throw new WritError('ERR_CONFIG_INVALID', `cannot read ${file}: ${(err as NodeJS.ErrnoException).code}`);
  }
  try {
    return file.endsWith('.json') ? JSON.parse(text) : parseYaml(text, { maxAliasCount: 10 });
  } catch (err) {
    throw new WritError('ERR_JSON_INVALID', `${file} is not valid ${file.endsWith('.json') ? 'JSON' : 'YAML/JSON'}: ${(err as Error).message.split('\n')[0]}`);
  }
}

/**
 * Writes a private key so that it is never readable by others, not even for a moment and not when
 * the file existed with a looser mode: a new file made 0600, then renamed over the old one.
 */
function writeSecretFile(path: string, data: string | Buffer): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, data, { mode: 0o600, flag: 'wx' });
  renameSync(tmp, path);
}

/** What an admission document of `policy list` checks (a policy) or waives (an exception), from its YAML. */
async function admissionSummary(api: ApiClient, p: Record<string, unknown>): Promise<string> {
  if (p['kind'] === 'AdmissionException') return `waives ${((p['controls'] as string[] | undefined) ?? []).join(',')}`;
  const { parseAdmission } = await import('@writ/admission');
  const name = String(p['name']);
  let doc: ReturnType<typeof parseAdmission>['policies'][number] | undefined;
  try {
    doc = parseAdmission(await api.text(`/v1/policies/${encodeURIComponent(name)}`), { file: name, allowExpired: true }).policies[0];
  } catch {
    return '?';
  }
  if (!doc) return '?';
  const parts: string[] = [];
  if (doc.podSecurity) parts.push(`podSecurity ${doc.podSecurity.level}:${doc.podSecurity.version}`);
  const im = doc.images;
  if (im) {
    const what = [
      ...(im.requireDigest ? ['digest'] : []),
      ...(im.registries.length ? [`registries ${im.registries.join(' ')}`] : []),
      ...(im.signatures.length ? [`signed by ${im.signatures.map((x) => x.name).join(' ')}`] : []),
    ];
    if (what.length) parts.push(`images (${what.join('; ')})`);
  }
  if (doc.require.resourceLimits) parts.push('resourceLimits');
  if (doc.require.readOnlyRootFilesystem) parts.push('readOnlyRootFilesystem');
  if (doc.require.runtimeClassNames.length) parts.push(`runtimeClassName ${doc.require.runtimeClassNames.join(' ')}`);
  return parts.join(', ') || '-';
}

/** `policy get prod` when only `AdmissionPolicy/prod` exists: the not-found error names the document that does. */
async function withKindHint<T>(api: ApiClient, name: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (!(err instanceof ApiError) || err.serverCode !== 'ERR_NOT_FOUND' || name.includes('/')) throw err;
    let names: string[] = [];
    try {
      names = (await api.call<{ policies: Array<{ name: string }> }>('GET', '/v1/policies')).policies.map((p) => p.name);
    } catch {
      throw err;
    }
    const near = ['AdmissionPolicy', 'AdmissionException', 'VulnException', 'TokenPolicy', 'AlertRule']
      .map((k) => `${k}/${name}`)
      .filter((n) => names.includes(n));
    if (!near.length) throw err;
    throw new ApiError(
      err.code,
      err.serverCode,
      err.httpStatus,
      `${err.message}; admission documents and vulnerability exceptions are named Kind/name: did you mean ${near.join(' or ')}?`,
      {},
    );
  }
}

export function buildProgram(): Command {
  const program = newProgram();

  // ---------------------------------------------------------------- server
  const server = program.command('server').description('run the Writ server');
  server
    .command('start')
    .description('start the server in the foreground (JSON log lines on stdout)')
    .option('--data-dir <dir>', 'where keys, bundle.pem, admin.token and the SQLite database live')
    .option('--trust-domain <td>', 'trust domain, e.g. example.org')
    .option('--listen <host:port>', 'address to listen on (default 127.0.0.1:8443)')
    .option(
      '--db <db>',
      'sqlite (default), sqlite:/path/file.db, or postgres://user:password@host/db; else env WRIT_DB (e.g. from a Kubernetes Secret), else db in --config; the password is never logged',
    )
    .option('--config <file>', 'YAML file with the same settings (flags win; for db, WRIT_DB wins too)')
    .option('--ca-key-type <type>', 'ec-p256 (default), ec-p384 or rsa-2048')
    .option('--ca-ttl <duration>', 'CA lifetime (default 24h)')
    .option('--x509-svid-ttl <duration>', 'default X.509-SVID lifetime (default 1h)')
    .option('--jwt-svid-ttl <duration>', 'default JWT-SVID lifetime (default 5m)')
    .option('--jwt-issuer <url>', 'iss claim of JWT-SVIDs and the OIDC issuer (default: the server URL)')
    .option('--dns-name <name>', "extra DNS name for the server's certificate (repeatable)", collect)
    .option('--upstream-ca-cert <file>', 'sit under an existing PKI: CA certificate (chain) PEM')
    .option('--upstream-ca-key <file>', 'the upstream CA private key PEM')
    .option('--upstream-ca-bundle <file>', 'trust roots of the upstream PKI, when the chain has no self-signed root')
    .option('--kek-file <file>', 'file holding the key-encryption key for private keys at rest (or env WRIT_KEK)')
    .option('--decision-retention <duration>', 'how long decision logs (and admission events) are kept (default 7d, at least 1d)')
    .option('--admission-listen <host:port>', 'serve the Kubernetes admission webhook on its own listener (off by default), e.g. 0.0.0.0:8444')
    .option('--admission-dns <names>', 'DNS names for the webhook certificate, comma-separated (default writ-admission.writ-system.svc)')
    .option('--admission-client-ca <file>', 'answer only API servers presenting a client certificate chained to this CA (PEM)')
    .option('--admission-budget <duration>', 'decision budget of a webhook verdict (default 2s; keep it under the webhook timeoutSeconds)')
    .option('--registry-config <file>', 'per-registry CA and credentials for image checks (YAML)')
    .option('--report-limit <size>', 'largest scanner report POST /v1/reports takes, e.g. 64MiB (default), 256MiB at most')
    .option('--require-admitted-image', "every entry's SVIDs only for containers whose image digest was admitted under an enforce admission policy")
    .option('--vuln-exception-max-age <duration>', 'the longest a VulnException may run: a later expires is refused at apply (default 90d)')
    .option('--bundle-endpoint-listen <host:port>', 'serve the SPIFFE bundle endpoint for federation peers on its own listener (off by default)')
    .option('--bundle-endpoint-profile <profile>', "https_spiffe (default: the server's own SVID) or https_web (certificate and key files)")
    .option('--bundle-endpoint-cert <file>', 'https_web: the bundle endpoint certificate (chain) PEM, re-read when it changes')
    .option('--bundle-endpoint-key <file>', 'https_web: its private key PEM')
    .option('--federation-timeout <duration>', "how long one fetch of a federation peer's bundle may take (default 10s)")
    .option('--log-level <level>', 'debug, info (default), warn, error')
    .action(async (o: Record<string, string | string[] | boolean | undefined>) => {
      // Loaded here so agent and client commands do not pay for the server's dependencies.
      const { loadServerConfig, startServer } = await import('@writ/server');
      const cfg = loadServerConfig({
        ...(o['config'] ? { config: o['config'] as string } : {}),
        ...(o['dataDir'] ? { dataDir: o['dataDir'] as string } : {}),
        ...(o['trustDomain'] ? { trustDomain: o['trustDomain'] as string } : {}),
        ...(o['listen'] ? { listen: o['listen'] as string } : {}),
        ...(o['db'] ? { db: o['db'] as string } : {}),
        ...(o['caKeyType'] ? { caKeyType: o['caKeyType'] as string } : {}),
        ...(o['caTtl'] ? { caTtl: o['caTtl'] as string } : {}),
        ...(o['x509SvidTtl'] ? { x509SvidTtl: o['x509SvidTtl'] as string } : {}),
        ...(o['jwtSvidTtl'] ? { jwtSvidTtl: o['jwtSvidTtl'] as string } : {}),
        ...(o['jwtIssuer'] ? { jwtIssuer: o['jwtIssuer'] as string } : {}),
        ...(o['dnsName'] ? { dnsNames: o['dnsName'] as string[] } : {}),
        ...(o['upstreamCaCert'] ? { upstreamCaCert: o['upstreamCaCert'] as string } : {}),
        ...(o['upstreamCaKey'] ? { upstreamCaKey: o['upstreamCaKey'] as string } : {}),
        ...(o['upstreamCaBundle'] ? { upstreamCaBundle: o['upstreamCaBundle'] as string } : {}),
        ...(o['kekFile'] ? { kekFile: o['kekFile'] as string } : {}),
        ...(o['decisionRetention'] ? { decisionRetention: o['decisionRetention'] as string } : {}),
        ...(o['admissionListen'] ? { admissionListen: o['admissionListen'] as string } : {}),
        ...(o['admissionDns'] ? { admissionDns: o['admissionDns'] as string } : {}),
        ...(o['admissionClientCa'] ? { admissionClientCa: o['admissionClientCa'] as string } : {}),
        ...(o['admissionBudget'] ? { admissionBudget: o['admissionBudget'] as string } : {}),
        ...(o['registryConfig'] ? { registryConfig: o['registryConfig'] as string } : {}),
        ...(o['requireAdmittedImage'] ? { requireAdmittedImage: true } : {}),
        ...(o['reportLimit'] ? { reportLimit: o['reportLimit'] as string } : {}),
        ...(o['logLevel'] ? { logLevel: o['logLevel'] as string } : {}),
        ...(o['vulnExceptionMaxAge'] ? { vulnExceptionMaxAge: o['vulnExceptionMaxAge'] as string } : {}),
        ...federationServerFlags(o),
      });
      const running = await startServer(cfg);
      // Drained first: waiting agents are answered at once and move to another replica before this one exits.
      const stop = (): void => {
        void running
          .drain()
          .then(() => running.close())
          .then(
            () => process.exit(0),
            (err: Error) => {
              process.stderr.write(`writ server: could not stop cleanly: ${err.message}\n`);
              process.exit(1);
            },
          );
      };
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
      await new Promise(() => undefined);
    });
  registerServerBackup(server);

  // ---------------------------------------------------------------- entries
  const entry = program.command('entry').description('registration entries: which workloads get which SPIFFE ID');
  entryOptions(entry.command('create').description('create an entry (or many with -f FILE)'))
    .option('-f, --file <file>', 'YAML or JSON file with a list of entries (or {entries: [...]}), created all or none')
    .action(async (f: EntryFlags & { file?: string }, cmd: Command) => {
      const { api, format } = clientOf(cmd);
      if (f.file) {
        const doc = readDataFile(f.file);
        const entries = Array.isArray(doc) ? doc : (doc as { entries?: unknown })?.entries;
        const res = await api.call<{ entries: EntryJson[] }>('POST', '/v1/entries/batch', { entries });
        return print(format, res.entries, entryRows(res.entries));
      }
      const e = await api.call<EntryJson>('POST', '/v1/entries', entryBody(f));
      print(format, e, entryRows([e]));
    });
  entry
    .command('list')
    .description('list entries (follows every page)')
    .option('--spiffe-id <id>', 'only this SPIFFE ID')
    .option('--parent-id <id>', 'only entries served by this agent')
    .option('--selector <type:value>', 'only entries with this selector (repeatable)', collect)
    .action(async (f: { spiffeId?: string; parentId?: string; selector?: string[] }, cmd: Command) => {
      const { api, format } = clientOf(cmd);
      const all: EntryJson[] = [];
      let pageToken: string | undefined;
      do {
        const q = new URLSearchParams({ pageSize: '1000' });
        if (f.spiffeId) q.set('spiffeId', f.spiffeId);
        if (f.parentId) q.set('parentId', f.parentId);
        for (const s of f.selector ?? []) q.append('selector', s);
        if (pageToken) q.set('pageToken', pageToken);
        const page = await api.call<{ entries: EntryJson[]; nextPageToken?: string }>('GET', `/v1/entries?${q}`);
        all.push(...page.entries);
        pageToken = page.nextPageToken;
      } while (pageToken);
      print(format, all, entryRows(all));
    });
  entry
    .command('show')
    .argument('<id>')
    .description('show one entry')
    .action(async (id: string, _o: unknown, cmd: Command) => {
      const { api, format } = clientOf(cmd);
      print(format, await api.call('GET', `/v1/entries/${encodeURIComponent(id)}`));
    });
  entryOptions(entry.command('update').argument('<id>').description('change the given fields of an entry (--selector replaces all selectors)')).action(
    async (id: string, f: EntryFlags, cmd: Command) => {
      const { api, format } = clientOf(cmd);
      const body = entryBody(f);
      if (Object.keys(body).length === 0) throw new CommanderError(2, 'writ.usage', 'nothing to update: give at least one field flag');
      const e = await api.call<EntryJson>('PATCH', `/v1/entries/${encodeURIComponent(id)}`, body);
      print(format, e, entryRows([e]));
    },
  );
  entry
    .command('delete')
    .argument('<id>')
    .description('delete an entry')
    .action(async (id: string, _o: unknown, cmd: Command) => {
      const { api } = clientOf(cmd);
      await api.call('DELETE', `/v1/entries/${encodeURIComponent(id)}`);
      process.stderr.write(`deleted entry ${id}\n`);
    });

  // ---------------------------------------------------------------- join tokens and admin tokens
  program
    .command('token')
    .description('join tokens for agents')
    .command('create')
    .description('create a single-use join token; the agent redeeming it becomes spiffe://TD/writ/agent/NODE')
    .option('--node-name <name>', 'node name (default: random)')
    .option('--ttl <duration>', 'how long the token can be redeemed (default 1h)')
    .action(async (f: { nodeName?: string; ttl?: string }, cmd: Command) => {
      const { api, format } = clientOf(cmd);
      const res = await api.call<Record<string, string>>('POST', '/v1/join-tokens', {
        ...(f.nodeName ? { nodeName: f.nodeName } : {}),
        ...(f.ttl ? { ttl: f.ttl } : {}),
      });
      if (format === 'table') return void process.stdout.write(`${res['token']}\n`);
      print(format, res);
    });
  const adminToken = program.command('admin-token').description('API tokens with roles viewer, operator, admin');
  adminToken
    .command('create')
    .requiredOption('--role <role>', 'viewer, operator or admin')
    .option('--name <name>', 'what the token is for')
    .option('--ttl <duration>', 'lifetime (default: no expiry)')
    .description('create an API token (printed once)')
    .action(async (f: { role: string; name?: string; ttl?: string }, cmd: Command) => {
      const { api, format } = clientOf(cmd);
      const res = await api.call<Record<string, string>>('POST', '/v1/admin-tokens', {
        role: f.role,
        ...(f.name ? { name: f.name } : {}),
        ...(f.ttl ? { ttl: f.ttl } : {}),
      });
      if (format === 'table') return void process.stdout.write(`${res['token']}\n`);
      print(format, res);
    });
  adminToken
    .command('list')
    .description('list API tokens (not their values)')
    .action(async (_o: unknown, cmd: Command) => {
      const { api, format } = clientOf(cmd);
      const res = await api.call<{ adminTokens: Array<Record<string, string>> }>('GET', '/v1/admin-tokens');
      print(format, res.adminTokens, () => ({
        head: ['ID', 'ROLE', 'NAME', 'EXPIRES'],
        body: res.adminTokens.map((t) => [t['id']!, t['role']!, t['name']!, t['expiresAt'] ?? 'never']),
      }));
    });
  adminToken
    .command('delete')
    .argument('<id>')
    .description('revoke an API token')
    .action(async (id: string, _o: unknown, cmd: Command) => {
      await clientOf(cmd).api.call('DELETE', `/v1/admin-tokens/${encodeURIComponent(id)}`);
      process.stderr.write(`revoked admin token ${id}\n`);
    });

  // ---------------------------------------------------------------- bundles
  const bundle = program.command('bundle').description("trust bundles: this trust domain's and federated ones");
  bundle
    .command('show')
    .description("show this trust domain's bundle")
    .addOption(new Option('--format <format>', 'spiffe (bundle JSON) or pem (X.509 authorities)').choices(['spiffe', 'pem']).default('spiffe'))
    .action(async (f: { format: string }, cmd: Command) => {
      const { api, format } = clientOf(cmd);
      const doc = await api.call('GET', '/v1/bundle', undefined, { auth: false });
      if (f.format === 'pem') {
        // The JSON form does not name its trust domain; the label only matters for error messages.
        return void process.stdout.write(bundleToPem(parseBundleJson('bundle', doc)));
      }
      print(format === 'table' ? 'json' : format, doc);
    });
  bundle
    .command('set')
    .description("store a foreign trust domain's SPIFFE bundle JSON (static federation)")
    .requiredOption('--trust-domain <td>', 'the foreign trust domain')
    .requiredOption('-f, --file <file>', 'SPIFFE bundle JSON file ("-" for stdin)')
    .action(async (f: { trustDomain: string; file: string }, cmd: Command) => {
      const { api, format } = clientOf(cmd);
      const doc = readDataFile(f.file);
      const res = await api.call('PUT', `/v1/federated-bundles/${encodeURIComponent(f.trustDomain)}`, doc);
      if (format === 'table') return void process.stderr.write(`stored the bundle of ${f.trustDomain}\n`);
      print(format, res);
    });
  bundle
    .command('list')
    .description('list federated bundles')
    .action(async (_o: unknown, cmd: Command) => {
      const { api, format } = clientOf(cmd);
      const res = await api.call<{ bundles: Array<{ trustDomain: string; updatedAt: string; bundle: { keys: unknown[]; spiffe_sequence?: number } }> }>(
        'GET',
        '/v1/federated-bundles',
      );
      print(format, res.bundles, () => ({
        head: ['TRUST DOMAIN', 'KEYS', 'SEQUENCE', 'UPDATED'],
        body: res.bundles.map((b) => [b.trustDomain, String(b.bundle.keys.length), String(b.bundle.spiffe_sequence ?? ''), b.updatedAt]),
      }));
    });
  bundle
    .command('delete')
    .argument('<trust-domain>')
    .description('delete a federated bundle')
    .action(async (td: string, _o: unknown, cmd: Command) => {
      await clientOf(cmd).api.call('DELETE', `/v1/federated-bundles/${encodeURIComponent(td)}`);
      process.stderr.write(`deleted the bundle of ${td}\n`);
    });

  // ---------------------------------------------------------------- SVID minting
  const svid = program.command('svid').description('SVIDs for CI systems and tests (admin)');
  svid
    .command('mint-x509')
    .description('mint an X.509-SVID: writes svid.pem (leaf first), svid.key (PKCS#8, mode 0600) and bundle.pem to --out')
    .requiredOption('--spiffe-id <id>', 'SPIFFE ID of the SVID')
    .requiredOption('--out <dir>', 'directory to write to')
    .option('--ttl <duration>', 'lifetime (default: the server default)')
    .option('--dns-name <name>', 'DNS SAN (repeatable)', collect)
    .action(async (f: { spiffeId: string; out: string; ttl?: string; dnsName?: string[] }, cmd: Command) => {
      const { api, format } = clientOf(cmd);
      // The key is made here and never leaves this machine; the server signs a CSR.
      const pair = generateKeyPairSync('ec', { namedCurve: 'P-256' });
      const signer = { key: pair.privateKey, keyType: 'ec-p256' as const };
      const csr = toPem('CERTIFICATE REQUEST', createCsr(signer, pair.publicKey));
      const res = await api.call<{ svid: string; bundle: string; expiresAt: string; spiffeId: string }>('POST', '/v1/svids/x509', {
        spiffeId: f.spiffeId,
        csr,
        ...(f.ttl ? { ttl: f.ttl } : {}),
        ...(f.dnsName?.length ? { dnsNames: f.dnsName } : {}),
      });
      mkdirSync(f.out, { recursive: true });
      const keyPath = join(f.out, 'svid.key');
      writeSecretFile(keyPath, signer.key.export({ format: 'pem', type: 'pkcs8' }));
      writeFileSync(join(f.out, 'svid.pem'), res.svid);
      writeFileSync(join(f.out, 'bundle.pem'), res.bundle);
      const out = {
        spiffeId: res.spiffeId,
        expiresAt: res.expiresAt,
        files: { svid: join(f.out, 'svid.pem'), key: keyPath, bundle: join(f.out, 'bundle.pem') },
      };
      if (format === 'table')
        return void process.stdout.write(`${res.spiffeId}  expires ${res.expiresAt}\n  ${out.files.svid}\n  ${out.files.key}\n  ${out.files.bundle}\n`);
      print(format, out);
    });
  svid
    .command('mint-jwt')
    .description('mint a JWT-SVID and print it')
    .requiredOption('--spiffe-id <id>', 'SPIFFE ID (the sub claim)')
    .requiredOption('--audience <aud>', 'audience (repeatable)', collect)
    .option('--ttl <duration>', 'lifetime (default: the server default)')
    .action(async (f: { spiffeId: string; audience: string[]; ttl?: string }, cmd: Command) => {
      const { api, format } = clientOf(cmd);
      const res = await api.call<{ token: string }>('POST', '/v1/svids/jwt', { spiffeId: f.spiffeId, audience: f.audience, ...(f.ttl ? { ttl: f.ttl } : {}) });
      if (format === 'table') return void process.stdout.write(`${res.token}\n`);
      print(format, res);
    });

  // ---------------------------------------------------------------- agents
  const agent = program.command('agent').description('node agents: run one, or manage the attested ones');
  addAgentStart(agent);
  agent
    .command('list')
    .description('list attested agents')
    .action(async (_o: unknown, cmd: Command) => {
      const { api, format } = clientOf(cmd);
      const res = await api.call<{ agents: Array<Record<string, string | boolean>> }>('GET', '/v1/agents');
      print(format, res.agents, () => ({
        head: ['SPIFFE ID', 'ATTESTATION', 'SVID EXPIRES', 'BANNED'],
        body: res.agents.map((a) => [String(a['spiffeId']), String(a['attestationType']), String(a['expiresAt']), a['banned'] ? 'yes' : 'no']),
      }));
    });
  agent
    .command('show')
    .argument('<spiffe-id>')
    .description('show one agent')
    .action(async (id: string, _o: unknown, cmd: Command) => {
      const { api, format } = clientOf(cmd);
      print(format, await api.call('GET', `/v1/agents/${encodeURIComponent(id)}`));
    });
  for (const [verb, what] of [
    ['evict', 'its SVID stops working; it must attest again'],
    ['ban', 'its SVID stops working and it cannot attest again'],
  ] as const) {
    agent
      .command(verb)
      .argument('<spiffe-id>')
      .description(`${verb} an agent: ${what}`)
      .action(async (id: string, _o: unknown, cmd: Command) => {
        await clientOf(cmd).api.call('POST', `/v1/agents/${encodeURIComponent(id)}/${verb}`);
        process.stderr.write(`${verb === 'ban' ? 'banned' : 'evicted'} ${id}\n`);
      });
  }

  // ---------------------------------------------------------------- proxy
  program
    .command('proxy')
    .description('run the mTLS sidecar beside a workload (foreground, JSON logs)')
    .option('--socket <path>', "the agent's Workload API socket (or SPIFFE_ENDPOINT_SOCKET)")
    .option('--spiffe-id <id>', "which of the workload's identities to use (default: its first)")
    .option(
      '--inbound <listen=upstream>',
      'terminate mTLS on LISTEN, authorize, forward plaintext to UPSTREAM: HOST:PORT (HTTP/1.1) or h2c://HOST:PORT (an app that speaks HTTP/2, e.g. gRPC) (repeatable)',
      collect,
    )
    .addOption(new Option('--inbound-mode <mode>', 'http: per request (HTTP/1.1 and HTTP/2); tcp: per connection').choices(['http', 'tcp']).default('http'))
    .option('--outbound <listen=spiffe://ID@host:port>', 'accept plaintext on LISTEN, originate mTLS to HOST:PORT, which must be ID (repeatable)', collect)
    .addOption(
      new Option(
        '--outbound-mode <mode>',
        'http: HTTP/1.1 requests over kept-alive mTLS connections (an HTTP/2 client, e.g. gRPC, gets an mTLS connection of its own with ALPN h2); tcp: one mTLS connection per client connection (any protocol)',
      )
        .choices(['http', 'tcp'])
        .default('http'),
    )
    .option('--workers <n>', 'processes sharing the listeners: a number, or "auto" for one per CPU', '1')
    .option(
      '--wait-timeout <duration>',
      "how long to wait for the workload's identity from the agent before exiting 1 (saying why every few seconds meanwhile)",
      '60s',
    )
    .option(
      '--health-addr <host:port>',
      'serve /livez, /readyz and /metrics over plain HTTP here (off by default; with --workers, the first process only binds it)',
    )
    .option('--log-level <level>', 'debug, info (default), warn, error', 'info')
    .action(
      async (f: {
        healthAddr?: string;
        waitTimeout: string;
        socket?: string;
        spiffeId?: string;
        inbound?: string[];
        inboundMode: 'http' | 'tcp';
        outbound?: string[];
        outboundMode: 'http' | 'tcp';
        workers: string;
        logLevel: string;
      }) => {
        const { WritProxy, parseInbound, parseOutbound } = await import('@writ/proxy');
        const { parseDuration } = await import('@writ/spiffe');
        const pino = (await import('pino')).default;
        const cluster = (await import('node:cluster')).default;
        const log = pino({
          level: f.logLevel,
          base: { svc: 'writ-proxy', ...(cluster.isWorker ? { worker: cluster.worker?.id } : {}) },
          timestamp: pino.stdTimeFunctions.isoTime,
        });
        const endpoint = f.socket ? (f.socket.includes('://') ? f.socket : `unix://${resolve(f.socket)}`) : process.env['SPIFFE_ENDPOINT_SOCKET'];
        if (!endpoint) throw new CommanderError(2, 'writ.usage', 'give --socket PATH or set SPIFFE_ENDPOINT_SOCKET');
        if (!f.inbound?.length && !f.outbound?.length) throw new CommanderError(2, 'writ.usage', 'give at least one --inbound or --outbound');
        const workers = f.workers === 'auto' ? (await import('node:os')).availableParallelism() : Number(f.workers);
        if (!Number.isSafeInteger(workers) || workers < 1 || workers > 64)
          throw new CommanderError(2, 'writ.usage', `--workers ${JSON.stringify(f.workers)}: a number from 1 to 64, or auto`);
        const waitTimeoutMs = parseDuration(f.waitTimeout, '--wait-timeout', 366 * 86_400_000, 1);
        const inbound = (f.inbound ?? []).map((x) => parseInbound(x, f.inboundMode));
        const outbound = (f.outbound ?? []).map((x) => parseOutbound(x, f.outboundMode));
        if (workers > 1 && cluster.isPrimary) return runProxyWorkers(cluster, workers, log);
        const proxy = new WritProxy({ endpoint, ...(f.spiffeId ? { spiffeId: f.spiffeId } : {}), inbound, outbound, log, waitTimeoutMs });
        // Its first line: when it began to wait, and for how long it will (the "waiting for" lines follow within a second).
        log.info({ socket: endpoint, waitTimeoutMs }, 'writ proxy starting');
        let ports: Awaited<ReturnType<typeof proxy.start>>;
        let listening = false;
        // With --workers, the workers share the listeners but not this port: the primary has no proxy of its own, so the first worker serves it.
        const health =
          f.healthAddr && (cluster.isPrimary || cluster.worker?.id === 1)
            ? await startHealth(
                f.healthAddr,
                () => (listening ? undefined : "waiting for the workload's identity from the Workload API"),
                (pm) => proxyMetrics(listening, pm),
              )
            : undefined;
        try {
          ports = await proxy.start();
          listening = true;
        } catch (err) {
          // Nothing may keep the process up after a failed start (the agent streams, a worker's IPC).
          await proxy.close().catch(() => undefined);
          if (cluster.isWorker) {
            log.error({ err: (err as Error).message }, 'proxy worker failed to start');
            process.exit(1);
          }
          throw err;
        }
        log.info({ spiffeId: proxy.spiffeId, ports }, 'writ proxy listening');
        if (cluster.isWorker) process.send?.('writ:listening');
        const stop = (): void => void Promise.all([proxy.close(), health?.close()]).then(() => process.exit(0));
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
        await new Promise(() => undefined);
      },
    );

  // ---------------------------------------------------------------- Workload API client
  const socketOpt = (c: Command): Command => c.option('--socket <path>', 'Workload API socket (or SPIFFE_ENDPOINT_SOCKET)');
  const workloadClient = async (socket: string | undefined) => {
    const { WorkloadClient } = await import('@writ/sdk');
    const ep = socket ? (socket.includes('://') ? socket : `unix://${resolve(socket)}`) : process.env['SPIFFE_ENDPOINT_SOCKET'];
    if (!ep) throw new CommanderError(2, 'writ.usage', 'give --socket PATH or set SPIFFE_ENDPOINT_SOCKET');
    return new WorkloadClient(ep);
  };
  socketOpt(svid.command('fetch'))
    .description("fetch this process's X.509-SVIDs from the Workload API")
    .option('--write <dir>', 'write svid.pem, svid.key, bundle.pem (and svid.N.* for more SVIDs) here')
    .action(async (f: { socket?: string; write?: string }, cmd: Command) => {
      const format = checkFormat(cmd.optsWithGlobals<Globals>().output);
      const c = await workloadClient(f.socket);
      try {
        const ctx = await grpcCall(() => c.fetchX509Context());
        const rows = ctx.svids.map((s) => ({ spiffeId: s.spiffeId, hint: s.hint, expiresAt: s.chain[0]!.notAfter.toISOString() }));
        if (f.write) {
          mkdirSync(f.write, { recursive: true });
          ctx.svids.forEach((s, i) => {
            const base = i === 0 ? 'svid' : `svid.${i}`;
            writeFileSync(join(f.write!, `${base}.pem`), s.chain.map((c) => toPem('CERTIFICATE', c.der)).join(''));
            writeSecretFile(join(f.write!, `${base}.key`), s.key.export({ format: 'pem', type: 'pkcs8' }));
          });
          writeFileSync(
            join(f.write, 'bundle.pem'),
            [...ctx.bundles.values()].flatMap((b) => b.x509Authorities.map((c) => toPem('CERTIFICATE', c.der))).join(''),
          );
        }
        print(format, rows, () => ({ head: ['SPIFFE ID', 'HINT', 'EXPIRES'], body: rows.map((r) => [r.spiffeId, r.hint, r.expiresAt]) }));
      } finally {
        c.close();
      }
    });
  socketOpt(svid.command('jwt'))
    .description('fetch a JWT-SVID for this process from the Workload API and print it')
    .requiredOption('--audience <aud>', 'audience (repeatable)', collect)
    .option('--spiffe-id <id>', "which of the workload's identities")
    .action(async (f: { socket?: string; audience: string[]; spiffeId?: string }, cmd: Command) => {
      const format = checkFormat(cmd.optsWithGlobals<Globals>().output);
      const c = await workloadClient(f.socket);
      try {
        const svids = await grpcCall(() => c.fetchJwtSvids(f.audience, f.spiffeId ?? ''));
        if (format === 'table') return void process.stdout.write(`${svids[0]?.svid ?? ''}\n`);
        print(format, svids);
      } finally {
        c.close();
      }
    });
  socketOpt(svid.command('watch'))
    .description('print a line each time the Workload API sends new X.509-SVIDs (Ctrl-C to stop); -o json: one object per line')
    .action(async (f: { socket?: string }, cmd: Command) => {
      const format = checkFormat(cmd.optsWithGlobals<Globals>().output);
      const c = await workloadClient(f.socket);
      const { GRPC_STATUS } = await import('@writ/sdk');
      // The client's retry timers do not hold the process; a watch must outlive a stream that ends
      // (no identity yet, the agent restarting), so this one does.
      const hold = setInterval(() => undefined, 1 << 30);
      let fail: (err: Error) => void = () => undefined;
      const stopped = new Promise<void>((done, reject) => {
        fail = (err) => (clearInterval(hold), reject(err));
        // The reader of stdout went away (`| head -1`): the watch is over.
        stdoutClosed.signal.addEventListener('abort', () => (clearInterval(hold), c.close(), done()), { once: true });
      });
      c.watchX509Context(
        (ctx) => {
          const at = new Date().toISOString();
          const svids = ctx.svids.map((s) => ({ spiffeId: s.spiffeId, serial: s.chain[0]!.serialHex, expiresAt: s.chain[0]!.notAfter.toISOString() }));
          process.stdout.write(
            streamed(format, { at, svids }, () => `${at} ${svids.map((s) => `${s.spiffeId} serial=${s.serial} expires=${s.expiresAt}`).join(' ')}`),
          );
        },
        (err) => {
          // InvalidArgument is the one answer the client does not retry: this request will never work.
          if (err.code === GRPC_STATUS.INVALID_ARGUMENT) fail(new WritError('ERR_REQUEST_FAILED', `Workload API: ${err.message}`));
          else
            process.stderr.write(
              `${new Date().toISOString()} waiting for an X.509-SVID from ${f.socket ?? process.env['SPIFFE_ENDPOINT_SOCKET']}: ${err.message}; still watching\n`,
            );
        },
      );
      await stopped;
    });

  // ---------------------------------------------------------------- admission
  const admission = program.command('admission').description("image trust and Pod Security at admission: offline checks, the webhook's events");
  registerAdmissionCheck(admission);
  registerAdmissionEvents(admission);
  registerAdmissionManifests(admission);

  // ---------------------------------------------------------------- policy
  const policy = program.command('policy').description('access policies (who may call whom) and admission policies');
  policy
    .command('apply')
    .description(
      'validate and apply AccessPolicy, AdmissionPolicy, AdmissionException, VulnException, TokenPolicy and AlertRule YAML (adds or replaces documents by kind and name; a new revision); PolicyTest cases in the file run against the proposed set first, and a failing one stops the apply (exit 3)',
    )
    .requiredOption('-f, --file <file>', 'YAML file, one or many documents ("-" for stdin)')
    .option('--dry-run', 'validate and show what would change, apply nothing')
    .option('--replace', 'make the file the whole policy set (policies not in it are removed)')
    .option('--comment <text>', 'why (kept in the history)')
    .option('--skip-tests', "apply even when the file's PolicyTest cases fail")
    .option(
      '--wait [timeout]',
      `return once every live agent enforces the new revision (e.g. --wait=2m; default ${DEFAULT_WAIT}); exit 1 listing those that did not`,
    )
    .action(async (f: { file: string; dryRun?: boolean; replace?: boolean; comment?: string; skipTests?: boolean; wait?: string | true }, cmd: Command) => {
      const { api, format } = clientOf(cmd);
      const timeoutMs = f.wait === undefined ? undefined : waitTimeoutMs(f.wait);
      const yaml = readText(f.file);
      // Validate locally first: the errors carry this file's name and line numbers.
      const { parsePolicies } = await import('@writ/policy');
      const { ADMISSION_KINDS, parseAdmission } = await import('@writ/admission');
      const others = parsePolicies(yaml, { file: f.file }).others.filter((o) => o.kind !== 'PolicyTest');
      const other = others.find(
        (o) => o.kind !== 'VulnException' && o.kind !== 'TokenPolicy' && o.kind !== 'AlertRule' && !(ADMISSION_KINDS as readonly string[]).includes(o.kind),
      );
      if (other)
        throw new WritError(
          'ERR_POLICY_INVALID',
          `${f.file}: line ${other.line}: unknown kind "${other.kind}" (expected AccessPolicy, PolicyTest, AdmissionPolicy, AdmissionException, VulnException, TokenPolicy or AlertRule)`,
        );
      if (others.some((o) => (ADMISSION_KINDS as readonly string[]).includes(o.kind))) parseAdmission(yaml, { file: f.file });
      if (others.some((o) => o.kind === 'TokenPolicy')) (await import('@writ/broker')).parseTokenPolicies(yaml, { file: f.file });
      if (others.some((o) => o.kind === 'AlertRule')) (await import('@writ/server')).parseAlertRules(yaml, { file: f.file });
      // The longest an exception may run is the server's to say: checked there.
      if (others.some((o) => o.kind === 'VulnException'))
        (await import('@writ/vuln')).parseVulnExceptions(yaml, { file: f.file, maxLifetimeMs: Number.POSITIVE_INFINITY });
      const startedAt = Date.now();
      let res: {
        revision: number;
        changed: string[];
        added: string[];
        removed: string[];
        dryRun: boolean;
        tests?: { passed: number; failed: number };
        warnings?: string[];
        changedEdges?: Array<{ from: string | null; to: string; action: string; seen: number; before: string; after: string }>;
      };
      try {
        res = await api.call('POST', '/v1/policies', {
          yaml,
          ...(f.dryRun ? { dryRun: true } : {}),
          ...(f.replace ? { replace: true } : {}),
          ...(f.comment ? { comment: f.comment } : {}),
          ...(f.skipTests ? { skipTests: true } : {}),
        });
      } catch (err) {
        if (!(err instanceof ApiError) || err.serverCode !== 'ERR_POLICY_TEST_FAILED') throw err;
        const failures = ((err.details as { failures?: unknown } | undefined)?.failures ?? []) as Array<{
          name: string;
          expected: string;
          got: string;
          reason: string;
          rule: string | null;
        }>;
        if (format !== 'table') print(format, { applied: false, failures });
        else
          for (const x of failures)
            process.stdout.write(`FAIL  ${x.name}: expected ${x.expected}, got ${x.got} (${x.reason}${x.rule ? `, rule ${x.rule}` : ''})\n`);
        throw new CommanderError(3, 'writ.violation', `${failures.length} policy test case(s) failed; nothing applied (--skip-tests applies anyway)`);
      }
      for (const w of res.warnings ?? []) process.stderr.write(`warning: ${w}\n`);
      if (format !== 'table') print(format, res);
      else {
        const what = res.changed.length === 0 ? 'no change' : `${res.dryRun ? 'would change' : 'changed'}: ${res.changed.join(', ')}`;
        const tests = res.tests && res.tests.passed + res.tests.failed > 0 ? `; tests ${res.tests.passed} passed, ${res.tests.failed} failed` : '';
        process.stdout.write(`${res.dryRun ? 'dry run: ' : ''}revision ${res.revision}; ${what}${tests}\n`);
        if (res.changedEdges) {
          process.stdout.write(
            res.changedEdges.length ? `calls seen in the last day whose outcome would change:\n` : 'no call seen in the last day would change outcome\n',
          );
          for (const e of res.changedEdges)
            process.stdout.write(`  ${e.before} -> ${e.after}  ${e.from ?? '(no identity)'} -> ${e.to}  ${e.action}  (seen ${e.seen}x)\n`);
        }
      }
      if (timeoutMs !== undefined && !res.dryRun) reportWait(await waitForAgents(api, 'revision', res.revision, timeoutMs, progress), timeoutMs, startedAt);
    });
  policy
    .command('list')
    .description('the current policy set')
    .action(async (_o: unknown, cmd: Command) => {
      const { api, format } = clientOf(cmd);
      const res = await api.call<{ revision: number; policies: Array<Record<string, unknown>> }>('GET', '/v1/policies');
      if (format !== 'table') return print(format, res);
      const isAdmission = (p: Record<string, unknown>): boolean => p['kind'] === 'AdmissionPolicy' || p['kind'] === 'AdmissionException';
      const isVuln = (p: Record<string, unknown>): boolean => p['kind'] === 'VulnException';
      const vulnExceptions = res.policies.filter(isVuln);
      const access = res.policies.filter((p) => !isAdmission(p) && !isVuln(p));
      const admission = res.policies.filter(isAdmission);
      // Admission documents have no TO or RULES: their own table, with what each one checks or waives.
      const checks = await Promise.all(admission.map((p) => admissionSummary(api, p)));
      if (access.length || (!admission.length && !vulnExceptions.length))
        print(format, access, () => ({
          head: ['NAME', 'TO', 'MODE', 'RULES'],
          body: access.map((p) => [String(p['name']), String(p['to']), String(p['mode']), String(p['rules'])]),
        }));
      if (access.length && admission.length) process.stdout.write('\n');
      if (admission.length)
        print(format, admission, () => ({
          head: ['ADMISSION', 'NAMESPACES', 'MODE', 'CHECKS'],
          body: admission.map((p, i) => [
            String(p['name']),
            ((p['namespaces'] as string[] | undefined) ?? []).join(','),
            p['kind'] === 'AdmissionException' ? `${p['expired'] === true ? 'expired' : 'until'} ${String(p['expires'])}` : String(p['mode']),
            checks[i] ?? '',
          ]),
        }));
      if ((access.length || admission.length) && vulnExceptions.length) process.stdout.write('\n');
      if (vulnExceptions.length)
        print(format, vulnExceptions, () => ({
          head: ['VULN EXCEPTION', 'VULNERABILITY', 'SCOPE', 'OWNER', 'EXPIRES'],
          body: vulnExceptions.map((p) => [
            String(p['name']),
            String(p['vulnerability']),
            Object.entries((p['scope'] as Record<string, string[]> | undefined) ?? {})
              .map(([k, v]) => `${k} ${v.join(',')}`)
              .join(''),
            String(p['owner'] ?? '-'),
            `${p['expired'] === true ? 'expired' : 'until'} ${String(p['expires'])}`,
          ]),
        }));
    });
  policy
    .command('get')
    .argument('<name>')
    .option('--revision <n>', 'from an earlier revision')
    .description('print one policy as YAML')
    .action(async (name: string, f: { revision?: string }, cmd: Command) => {
      const { api, format } = clientOf(cmd);
      const text = await withKindHint(api, name, () =>
        api.text(`/v1/policies/${encodeURIComponent(name)}${f.revision ? `?revision=${encodeURIComponent(f.revision)}` : ''}`),
      );
      // The server keeps the YAML as written (comments too): table and yaml print it as it is.
      if (format === 'json') print(format, parseYaml(text));
      else process.stdout.write(text);
    });
  policy
    .command('delete')
    .argument('<name>')
    .description('remove a policy (a new revision)')
    .action(async (name: string, _o: unknown, cmd: Command) => {
      const { api, format } = clientOf(cmd);
      const res = await withKindHint(api, name, () => api.call<{ revision: number }>('DELETE', `/v1/policies/${encodeURIComponent(name)}`));
      if (format !== 'table') return print(format, res);
      process.stderr.write(`removed ${name}; revision ${res.revision}\n`);
    });
  policy
    .command('history')
    .description('policy revisions, newest first')
    .action(async (_o: unknown, cmd: Command) => {
      const { api, format } = clientOf(cmd);
      const res = await api.call<{ revisions: Array<{ revision: number; createdAt: string; createdBy: string; comment: string; policies: string[] }> }>(
        'GET',
        '/v1/policies/history',
      );
      print(format, res.revisions, () => ({
        head: ['REVISION', 'CREATED', 'BY', 'POLICIES', 'COMMENT'],
        body: res.revisions.map((r) => [String(r.revision), r.createdAt, r.createdBy, String(r.policies.length), r.comment]),
      }));
    });
  policy
    .command('diff')
    .argument('<from>')
    .argument('[to]')
    .description('what changed between two revisions (to: latest)')
    .action(async (from: string, to: string | undefined, _o: unknown, cmd: Command) => {
      const { api, format } = clientOf(cmd);
      const res = await api.call<{ from: number; to: number; changes: Array<{ name: string; change: string; diff: string[] }> }>(
        'GET',
        `/v1/policies/diff?from=${encodeURIComponent(from)}${to ? `&to=${encodeURIComponent(to)}` : ''}`,
      );
      if (format !== 'table') return print(format, res);
      if (res.changes.length === 0) return void process.stdout.write(`revisions ${res.from} and ${res.to} are the same\n`);
      for (const c of res.changes) process.stdout.write(`${c.change} ${c.name}\n${c.diff.map((l) => `  ${l}`).join('\n')}\n`);
    });
  policy
    .command('rollback')
    .argument('<revision>')
    .description('make an earlier revision current (as a new revision)')
    .action(async (rev: string, _o: unknown, cmd: Command) => {
      const { api, format } = clientOf(cmd);
      const res = await api.call<{ revision: number; restored: number }>('POST', '/v1/policies/rollback', { revision: Number(rev) });
      if (format !== 'table') return print(format, res);
      process.stdout.write(`restored revision ${res.restored} as revision ${res.revision}\n`);
    });
  policy
    .command('test')
    .argument('<file>', 'YAML with PolicyTest documents (cases), and optionally the AccessPolicy documents to test')
    .option('-f, --policy <file>', 'more AccessPolicy files to test against (repeatable)', collect)
    .description('run policy test cases offline; exit 3 when a case fails (for CI)')
    .action(async (file: string, f: { policy?: string[] }, cmd: Command) => {
      const format = checkFormat(cmd.optsWithGlobals<Globals>().output);
      const { PolicyEngine, parsePolicies, runPolicyTests } = await import('@writ/policy');
      const main = parsePolicies(readText(file), { file, allowExpired: true });
      const extra = (f.policy ?? []).flatMap((p) => parsePolicies(readText(p), { file: p, allowExpired: true }).policies);
      const results = runPolicyTests(new PolicyEngine([...main.policies, ...extra]), main.others);
      const failed = results.filter((r) => !r.passed);
      if (format !== 'table')
        print(
          format,
          results.map((r) => ({
            name: r.name,
            passed: r.passed,
            expected: r.expected,
            got: r.got.decision,
            reason: r.got.reason,
            rule: r.got.rule?.name ?? null,
          })),
        );
      else {
        for (const r of results)
          process.stdout.write(
            `${r.passed ? 'PASS' : 'FAIL'}  ${r.name}${r.passed ? '' : `: expected ${r.expected}, got ${r.got.decision} (${r.got.reason}${r.got.rule ? `, rule ${r.got.rule.name}` : ''})`}\n`,
          );
        process.stdout.write(`${results.length - failed.length} passed, ${failed.length} failed\n`);
      }
      if (failed.length) throw new CommanderError(3, 'writ.violation', `${failed.length} policy test case(s) failed`);
    });

  policy
    .command('status')
    .description("each agent's enforced policy revision and lag")
    .action(async (_o: unknown, cmd: Command) => {
      const { api, format } = clientOf(cmd);
      const res = await api.call<{
        revision: number;
        agents: Array<{ spiffeId: string; revision: number; behind: number; secondsSinceAck: number | null; live?: boolean }>;
      }>('GET', '/v1/policy/status');
      print(format, res, () => ({
        head: ['AGENT', 'REVISION', 'BEHIND', 'LIVE', 'LAST SEEN'],
        body: res.agents.map((a) => [
          a.spiffeId,
          String(a.revision),
          String(a.behind),
          a.live === undefined ? '' : a.live ? 'yes' : 'no',
          a.secondsSinceAck === null ? 'never' : `${a.secondsSinceAck}s ago`,
        ]),
      }));
    });

  const decisions = program.command('decisions').description('the decision log reported by agents');
  type DecisionRow = {
    id: string;
    at: string;
    from: string | null;
    to: string;
    action: string;
    decision: string;
    reason: string;
    rule: string;
    policyRevision: number;
  };
  const decisionRows = (rows: DecisionRow[]) => () => ({
    head: ['TIME', 'DECISION', 'REASON', 'FROM', 'TO', 'ACTION', 'RULE'],
    body: rows.map((d) => [d.at, d.decision, d.reason, d.from ?? '(none)', d.to, d.action, d.rule]),
  });
  const decisionLine = (d: DecisionRow): string =>
    `${d.at} ${d.decision.toUpperCase()} ${d.reason} ${d.from ?? '(none)'} -> ${d.to} ${d.action}${d.rule ? ` [${d.rule}]` : ''}`;
  const decisionFilters = (c: Command): Command =>
    c.option('--from <id>', 'only this caller').option('--to <id>', 'only this callee').option('--decision <d>', 'allow, deny or audit-would-deny');
  decisionFilters(decisions.command('query'))
    .option('--since <duration>', 'how far back, e.g. 15m (default 1h)', '1h')
    .option('--limit <n>', 'at most this many (newest first)', '100')
    .description('query recent decisions')
    .action(async (f: { from?: string; to?: string; decision?: string; since: string; limit: string }, cmd: Command) => {
      const { api, format } = clientOf(cmd);
      const { parseDuration } = await import('@writ/spiffe');
      const q = new URLSearchParams({ since: new Date(Date.now() - parseDuration(f.since, 'since', 366 * 86_400_000)).toISOString(), limit: f.limit });
      for (const k of ['from', 'to', 'decision'] as const) if (f[k]) q.set(k, f[k]!);
      const res = await api.call<{ decisions: DecisionRow[] }>('GET', `/v1/decisions?${q}`);
      print(format, res.decisions, decisionRows(res.decisions));
    });
  decisions
    .command('show')
    .argument('<id>', 'decision id (a 403 from a proxy or the middleware carries it)')
    .description('show one decision: caller, callee, action, outcome, reason, rule and the agent that reported it (exit 1 when unknown)')
    .action(async (id: string, _o: unknown, cmd: Command) => {
      const { api, format } = clientOf(cmd);
      const d = await api.call<DecisionRow>('GET', `/v1/decisions/${encodeURIComponent(id)}`);
      print(format, d, decisionRows([d]));
    });
  decisionFilters(decisions.command('tail'))
    .description('print decisions as they arrive (Ctrl-C to stop): the last minute, then every new arrival; -o json: one object per line')
    .action(async (f: { from?: string; to?: string; decision?: string }, cmd: Command) => {
      const { api, format } = clientOf(cmd);
      const filters = new URLSearchParams();
      for (const k of ['from', 'to', 'decision'] as const) if (f[k]) filters.set(k, f[k]!);
      const print = (d: DecisionRow): void => void process.stdout.write(streamed(format, d, () => decisionLine(d)));
      // Followed by arrival at the server, not by decision time: reporters deliver late by their
      // flush intervals (more after an outage), and following by time would skip those.
      const first = await api.call<{ decisions: DecisionRow[]; cursor: string }>(
        'GET',
        `/v1/decisions?${new URLSearchParams({ ...Object.fromEntries(filters), since: new Date(Date.now() - 60_000).toISOString(), limit: '1000' })}`,
      );
      first.decisions.reverse().forEach(print);
      // What arrived between the cursor and that first page is in both: printed once.
      const shown = new Set(first.decisions.map((d) => d.id));
      let cursor = first.cursor;
      while (!stdoutClosed.signal.aborted) {
        const res = await api.call<{ decisions: DecisionRow[]; cursor: string }>(
          'GET',
          `/v1/decisions?${new URLSearchParams({ ...Object.fromEntries(filters), after: cursor, limit: '1000' })}`,
        );
        for (const d of res.decisions) if (!shown.has(d.id)) print(d);
        shown.clear();
        cursor = res.cursor;
        // A full page: more are waiting; otherwise look again in a second.
        if (res.decisions.length < 1000) await new Promise((r) => setTimeout(r, 1000));
      }
    });

  const quarantine = program.command('quarantine').description('contain a compromised identity everywhere at once');
  quarantine
    .command('add')
    .argument('<spiffe-id>')
    .requiredOption('--reason <text>', 'why (kept and shown)')
    .option('--ttl <duration>', 'lift it automatically after this long')
    .option('--wait [timeout]', `return once every live agent enforces it (e.g. --wait=2m; default ${DEFAULT_WAIT}); exit 1 listing those that did not`)
    .description('quarantine an identity: it can neither call nor be called; agents stop serving its SVIDs')
    .action(async (id: string, f: { reason: string; ttl?: string; wait?: string | true }, cmd: Command) => {
      const { api, format } = clientOf(cmd);
      const timeoutMs = f.wait === undefined ? undefined : waitTimeoutMs(f.wait);
      const startedAt = Date.now();
      const res = await api.call('POST', '/v1/quarantine', { spiffeId: id, reason: f.reason, ...(f.ttl ? { ttl: f.ttl } : {}) });
      if (format !== 'table') print(format, res);
      else process.stderr.write(`quarantined ${id}\n`);
      if (timeoutMs !== undefined) reportWait(await waitForAgents(api, 'quarantineVersion', undefined, timeoutMs, progress), timeoutMs, startedAt);
    });
  quarantine
    .command('remove')
    .argument('<spiffe-id>')
    .option('--wait [timeout]', `return once every live agent enforces the lift (e.g. --wait=2m; default ${DEFAULT_WAIT}); exit 1 listing those that did not`)
    .description('lift a quarantine')
    .action(async (id: string, f: { wait?: string | true }, cmd: Command) => {
      const { api } = clientOf(cmd);
      const timeoutMs = f.wait === undefined ? undefined : waitTimeoutMs(f.wait);
      const startedAt = Date.now();
      await api.call('DELETE', `/v1/quarantine/${encodeURIComponent(id)}`);
      process.stderr.write(`lifted the quarantine of ${id}\n`);
      if (timeoutMs !== undefined) reportWait(await waitForAgents(api, 'quarantineVersion', undefined, timeoutMs, progress), timeoutMs, startedAt);
    });
  quarantine
    .command('list')
    .description('quarantined identities')
    .action(async (_o: unknown, cmd: Command) => {
      const { api, format } = clientOf(cmd);
      const res = await api.call<{ quarantine: Array<{ spiffeId: string; reason: string; expiresAt: string | null; createdAt: string }> }>(
        'GET',
        '/v1/quarantine',
      );
      print(format, res.quarantine, () => ({
        head: ['SPIFFE ID', 'SINCE', 'EXPIRES', 'REASON'],
        body: res.quarantine.map((q) => [q.spiffeId, q.createdAt, q.expiresAt ?? 'never', q.reason]),
      }));
    });

  program
    .command('authz')
    .description('authorization decisions')
    .command('check')
    .description('decide and explain one request against the current policy set')
    .addHelpText(
      'after',
      '\nExit status: 0 when the request would pass (allow, and audit-would-deny: an audit-mode rule logs but lets it pass), 3 on deny, 1 on error.',
    )
    .requiredOption('--from <id>', 'caller SPIFFE ID')
    .requiredOption('--to <id>', 'callee SPIFFE ID')
    .requiredOption('--action <action>', '"GET /path", "grpc /pkg.Svc/Method" or "tcp PORT"')
    .option('--header <name=value>', 'request header for when-conditions (repeatable)', collect)
    .action(async (f: { from: string; to: string; action: string; header?: string[] }, cmd: Command) => {
      const { api, format } = clientOf(cmd);
      const headers = Object.fromEntries((f.header ?? []).map((h) => [h.slice(0, h.indexOf('=')), h.slice(h.indexOf('=') + 1)]));
      const res = await api.call<{
        decision: string;
        reason: string;
        revision: number;
        rule?: { name: string; policy: string; line: number };
        nearest: Array<{ name: string; policy: string; mismatched: string[] }>;
      }>('POST', '/v1/authz/check', { from: f.from, to: f.to, action: f.action, ...(f.header ? { headers } : {}) });
      if (format !== 'table') print(format, res);
      else {
        process.stdout.write(`${res.decision.toUpperCase()} (${res.reason}) at policy revision ${res.revision}\n`);
        if (res.rule) process.stdout.write(`  decided by rule ${res.rule.name} (policy ${res.rule.policy}, line ${res.rule.line})\n`);
        for (const n of res.nearest)
          process.stdout.write(`  nearest: ${n.name} (policy ${n.policy}) did not match on ${n.mismatched.join(', ') || '(nothing?)'}\n`);
      }
      if (res.decision === 'deny') throw new CommanderError(3, 'writ.violation', `denied: ${res.reason}`);
    });

  // ---------------------------------------------------------------- version and doctor
  program
    .command('version')
    .description("the client's and the server's version (exit 1 when the server cannot be reached)")
    .action(async (_o: unknown, cmd: Command) => {
      const { runVersion } = await import('./doctor.ts');
      const format = checkFormat(cmd.optsWithGlobals<Globals>().output);
      const code = await runVersion(() => clientOf(cmd).api, format);
      if (code) throw new CommanderError(1, 'writ.failed', 'the server cannot be reached');
    });
  program
    .command('doctor')
    .description("check the server (reachable, identity pinned), the token's role, CA and JWT key expiry, agents, and with --socket this process's identity")
    .option('--socket <path>', "an agent's Workload API socket: would this process get an identity, and if not, which selectors are missing")
    .addHelpText('after', '\nEach check prints OK, WARN or FAIL with a hint; the exit status is 1 when any check fails.')
    .action(async (f: { socket?: string }, cmd: Command) => {
      const { askAgent, runDoctor } = await import('./doctor.ts');
      const format = checkFormat(cmd.optsWithGlobals<Globals>().output);
      const endpoint = f.socket ? (f.socket.includes('://') ? f.socket : `unix://${resolve(f.socket)}`) : undefined;
      const code = await runDoctor({ api: () => clientOf(cmd).api, format, socket: f.socket, ...(endpoint ? { whoAmI: () => askAgent(endpoint) } : {}) });
      if (code) throw new CommanderError(1, 'writ.failed', 'a check failed');
    });

  // ---------------------------------------------------------------- demo and completion
  program
    .command('demo')
    .description(
      'the whole story in a few seconds: a server on SQLite, an agent, two workloads attested behind writ proxy, allowed and denied calls, a policy change, a quarantine, the decision log; removes everything at the end',
    )
    .option('--data-dir <dir>', 'keep the demo server state here (default: a temporary directory)')
    .action(async (f: { dataDir?: string }) => (await import('./demo.ts')).runDemo(f.dataDir));
  program
    .command('completion')
    .argument('<shell>', 'bash or zsh')
    .description(
      'print a shell completion script (commands, flags, -o values, and entry ids, policy names and agent IDs from the server; for writ and npx writ): source <(writ completion bash)',
    )
    .action((shell: string) => {
      if (shell !== 'bash' && shell !== 'zsh') throw new CommanderError(2, 'writ.usage', 'completion supports bash and zsh');
      // The script calls back into this very program (node and script path): quick, and the same for npx writ.
      process.stdout.write(completionScript(program, shell, [process.execPath, ...(process.argv[1] ? [resolve(process.argv[1])] : [])]));
    });
  program
    .command('__complete', { hidden: true })
    .argument('<kind>', DYNAMIC.join(', '))
    .description('values for shell completion, from the server')
    .action(async (kind: string, _o: unknown, cmd: Command) => {
      let api: ApiClient;
      try {
        api = clientOf(cmd).api;
      } catch {
        return;
      }
      await completeFromServer(api, kind);
    });
  addAdmittedImagesCommand(program, clientOf);
  registerVuln(program, clientOf);
  registerImageAdd(program, clientOf);
  registerVulnAnswers(program, clientOf);
  registerVex(program, clientOf);
  // After the answers: it adds --quarantine to `writ vuln affected`.
  registerVulnGate(program, clientOf);
  registerWorkload(program, clientOf);
  registerFederation(program, clientOf);
  registerLearn(program, policy, clientOf);
  registerOciHook(program);
  registerCsi(program);
  registerAlerts(program, clientOf);
  registerAudit(program, clientOf);
  addPinOptions(program);
  registerImage(program); // offline: after addPinOptions, so it takes no server-pinning flags
  return program;
}

/** Commands that never talk to the server: no pinning flags in their help. */
const OFFLINE = new Set([
  'completion',
  'demo',
  'proxy',
  'writ server start',
  'writ server backup',
  'writ server restore',
  'writ agent start',
  'writ policy test',
  'writ admission check',
  'writ svid fetch',
  'writ svid jwt',
  'writ svid watch',
  'writ admission manifests',
]);

/**
 * `--trust-domain` and `--server-spiffe-id` on every command that calls the server. Per command,
 * not global: a global option would swallow `server start --trust-domain` and `bundle set --trust-domain`.
 */
function addPinOptions(cmd: Command, path = 'writ'): void {
  for (const c of cmd.commands) addPinOptions(c, `${path} ${c.name()}`);
  if (cmd.commands.length || OFFLINE.has(cmd.name()) || OFFLINE.has(path)) return;
  if (!cmd.options.some((o) => o.long === '--trust-domain')) {
    const o = new Option('--trust-domain <td>', PIN_HELP.trustDomain);
    PIN_OPTIONS.add(o);
    cmd.addOption(o);
  }
  if (!cmd.options.some((o) => o.long === '--server-spiffe-id')) cmd.addOption(new Option('--server-spiffe-id <id>', PIN_HELP.serverSpiffeId));
}

/**
 * `writ proxy --workers N`: N processes share the listening sockets (node:cluster), so one proxy
 * can use more than one core. A worker that dies after it was listening is replaced; one that
 * dies before (a port in use, no agent) stops them all with its exit code.
 */
async function runProxyWorkers(cluster: typeof import('node:cluster').default, n: number, log: import('pino').Logger): Promise<never> {
  let stopping = false;
  const fork = (): void => {
    const w = cluster.fork();
    let listening = false;
    w.on('message', (m) => {
      if (m === 'writ:listening') listening = true;
    });
    w.on('exit', (code, signal) => {
      if (stopping) return;
      if (!listening) {
        log.error({ code, signal }, 'a proxy worker failed to start; stopping');
        stopping = true;
        for (const other of Object.values(cluster.workers ?? {})) other?.process.kill('SIGTERM');
        process.exit(code || 1);
      }
      log.warn({ code, signal }, 'a proxy worker exited; starting another');
      setTimeout(fork, 200);
    });
  };
  for (let i = 0; i < n; i++) fork();
  log.info({ workers: n }, 'writ proxy workers starting');
  const stop = (): void => {
    stopping = true;
    for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGTERM');
    const done = (): void => {
      if (Object.keys(cluster.workers ?? {}).length === 0) process.exit(0);
    };
    cluster.on('exit', done);
    done();
    setTimeout(() => process.exit(0), 5000).unref();
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  return new Promise<never>(() => undefined);
}

function proxyMetrics(listening: boolean, processMetrics: ProcessMetrics): import('@writ/sdk/internal').MetricFamily[] {
  return [
    {
      name: 'writ_proxy_ready',
      help: '1 when /readyz answers 200: the proxy has its identity from the Workload API and listens.',
      type: 'gauge',
      samples: [{ value: listening ? 1 : 0 }],
    },
    ...processMetrics('writ_'),
  ];
}

/**
 * `quarantine add --wait spiffe://...`: commander would take the ID for the timeout and then miss the
 * argument. A `--wait` not followed by a duration is the default wait, and the next word stays a word.
 */
function bareWait(argv: string[]): string[] {
  return argv.map((a, i) => (a === '--wait' && !/^\d/.test(argv[i + 1] ?? '') ? `--wait=${DEFAULT_WAIT}` : a));
}

export async function main(argv: string[]): Promise<number> {
  return runProgram(buildProgram(), bareWait(argv));
}
