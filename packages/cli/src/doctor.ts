/**
 * `writ version` and `writ doctor`: what an operator runs first when something does not work.
 * Each doctor check is OK, WARN or FAIL with a one-line hint; any FAIL makes the exit status 1.
 */
import { isWritError } from '@writ/spiffe';
import { ApiError, type ApiClient } from './client.ts';
import { print, type Format } from './output.ts';

export const CLIENT_VERSION = '0.1.0';

interface ServerVersion {
  version: string;
  trustDomain: string;
}

/** Prints the client's and the server's version; the server part fails (exit 1) when it cannot be reached. */
export async function runVersion(api: () => ApiClient, format: Format): Promise<number> {
  let server: (ServerVersion & { url: string }) | undefined;
  let error: string | undefined;
  try {
    const c = api();
    server = { ...(await c.call<ServerVersion>('GET', '/v1/version', undefined, { auth: false, timeoutMs: 10_000 })), url: c.origin };
  } catch (err) {
    error = (err as Error).message;
  }
  if (format !== 'table') print(format, { client: { version: CLIENT_VERSION }, server: server ?? null, ...(error ? { error } : {}) });
  else {
    process.stdout.write(`client: ${CLIENT_VERSION}\n`);
    if (server) process.stdout.write(`server: ${server.version} (${server.url}, trust domain ${server.trustDomain})\n`);
  }
  if (error) process.stderr.write(`writ: server: ${error}\n`);
  return error ? 1 : 0;
}

export type CheckStatus = 'OK' | 'WARN' | 'FAIL';
export interface Check {
  readonly name: string;
  readonly status: CheckStatus;
  readonly message: string;
  readonly hint?: string;
}

interface Authority {
  id: string;
  kind: 'x509' | 'jwt';
  status: 'prepared' | 'active' | 'old';
  notBefore: string;
  notAfter: string;
}
interface AgentStatus {
  spiffeId: string;
  revision: number;
  behind: number;
  secondsSinceAck: number | null;
  live?: boolean;
}
interface Entry {
  id: string;
  spiffeId: string;
  selectors: string[];
}

/** What the agent says about the calling process (writ.agent.v1.Debug/WhoAmI). */
export interface WhoAmI {
  readonly selectors: readonly string[];
  readonly spiffeIds: readonly string[];
  readonly agentId: string;
  /** "SPIFFE_ID: why" for identities the caller matches but does not get (an image not admitted). */
  readonly withheld?: readonly string[];
}

const ago = (s: number | null): string =>
  s === null ? 'never' : s < 120 ? `${s}s ago` : s < 7200 ? `${Math.round(s / 60)}m ago` : `${Math.round(s / 3600)}h ago`;
const inTime = (ms: number): string =>
  ms < 0 ? `${ago(Math.round(-ms / 1000))} (expired)` : ms < 7_200_000 ? `in ${Math.round(ms / 60_000)}m` : `in ${Math.round(ms / 3_600_000)}h`;
const messageOf = (err: unknown): string => (isWritError(err) ? err.message : String((err as Error)?.message ?? err));

/** A 404 through the pinned connection: the server is there, only older than this CLI. */
const older = (err: unknown): boolean => err instanceof ApiError && err.httpStatus === 404;
const hintFor = (msg: string): string =>
  /presented/.test(msg)
    ? 'that is not the Writ server of this trust domain: check --server, or --ca-file / --trust-domain / --server-spiffe-id'
    : /pin/.test(msg)
      ? 'pass --ca-file DATA_DIR/bundle.pem (or WRIT_CA_FILE)'
      : 'is the server running? check --server (WRIT_SERVER) and --ca-file (WRIT_CA_FILE)';

async function serverChecks(api: ApiClient, now: number): Promise<Check[]> {
  const checks: Check[] = [];
  try {
    const v = await api.call<ServerVersion>('GET', '/v1/version', undefined, { auth: false, timeoutMs: 10_000 });
    checks.push({ name: 'server', status: 'OK', message: `${api.origin} answers as ${api.serverSpiffeId} (version ${v.version})` });
  } catch (err) {
    const msg = messageOf(err);
    if (older(err))
      checks.push({
        name: 'server',
        status: 'WARN',
        message: `${api.origin} answers as ${api.serverSpiffeId}, but has no GET /v1/version`,
        hint: 'the server is older than this CLI',
      });
    else return [{ name: 'server', status: 'FAIL', message: msg, hint: hintFor(msg) }];
  }

  try {
    const w = await api.call<{ role: string; tokenId: string; name: string; expiresAt: string | null }>('GET', '/v1/whoami');
    const left = w.expiresAt === null ? Infinity : Date.parse(w.expiresAt) - now;
    const what = `role ${w.role} (token ${w.name || w.tokenId}, ${w.expiresAt === null ? 'no expiry' : `expires ${inTime(left)}`})`;
    checks.push(
      left < 86_400_000
        ? { name: 'token', status: 'WARN', message: what, hint: 'create a new one soon: writ admin-token create --role ROLE --ttl ...' }
        : { name: 'token', status: 'OK', message: what },
    );
  } catch (err) {
    if (older(err)) checks.push({ name: 'token', status: 'WARN', message: 'the server has no GET /v1/whoami', hint: 'the server is older than this CLI' });
    else {
      checks.push({
        name: 'token',
        status: 'FAIL',
        message: messageOf(err),
        hint: 'pass --token or set WRIT_TOKEN (the server wrote one to DATA_DIR/admin.token)',
      });
      return checks;
    }
  }

  try {
    const { authorities } = await api.call<{ authorities: Authority[] }>('GET', '/v1/ca/authorities');
    for (const [kind, label] of [
      ['x509', 'X.509 CA'],
      ['jwt', 'JWT key'],
    ] as const) {
      const active = authorities.filter((a) => a.kind === kind && a.status === 'active');
      const a = active.sort((x, y) => Date.parse(y.notAfter) - Date.parse(x.notAfter))[0];
      if (!a) {
        checks.push({ name: `${kind}-authority`, status: 'FAIL', message: `no active ${label}`, hint: "the server cannot sign: see the server's log" });
        continue;
      }
      const left = Date.parse(a.notAfter) - now;
      const life = Date.parse(a.notAfter) - Date.parse(a.notBefore);
      const message = `${label} ${a.id} expires ${inTime(left)} (${a.notAfter})`;
      // Rotation activates a successor at 5/6 of the life: an active one older than that is overdue.
      if (left <= 0) checks.push({ name: `${kind}-authority`, status: 'FAIL', message, hint: 'expired: SVIDs it signed no longer verify; restart the server' });
      else if (left < life / 6)
        checks.push({ name: `${kind}-authority`, status: 'WARN', message, hint: "rotation is overdue (due at 5/6 of its life): see the server's log" });
      else checks.push({ name: `${kind}-authority`, status: 'OK', message });
    }
  } catch (err) {
    checks.push(
      older(err)
        ? { name: 'authorities', status: 'WARN', message: 'the server has no GET /v1/ca/authorities', hint: 'the server is older than this CLI' }
        : { name: 'authorities', status: 'FAIL', message: messageOf(err), hint: 'GET /v1/ca/authorities failed' },
    );
  }

  try {
    const { agents } = await api.call<{ agents: AgentStatus[] }>('GET', '/v1/policy/status');
    if (agents.length === 0)
      checks.push({
        name: 'agents',
        status: 'WARN',
        message: 'no agent has attested',
        hint: 'start one: writ agent start --join-token "$(writ token create)"',
      });
    else {
      // An older server does not say `live`: the same 90 s rule on its secondsSinceAck.
      const stale = agents.filter((a) => !(a.live ?? (a.secondsSinceAck !== null && a.secondsSinceAck <= 90)));
      const list = agents.map((a) => `${a.spiffeId} (${ago(a.secondsSinceAck)}${a.behind ? `, ${a.behind} behind` : ''})`).join(', ');
      checks.push(
        stale.length
          ? {
              name: 'agents',
              status: 'WARN',
              message: `${stale.length} of ${agents.length} not seen in 90s: ${list}`,
              hint: 'a stopped agent is harmless; a running one that does not sync cannot reach the server',
            }
          : { name: 'agents', status: 'OK', message: `${agents.length} live: ${list}` },
      );
    }
  } catch (err) {
    checks.push({ name: 'agents', status: 'FAIL', message: messageOf(err), hint: 'GET /v1/policy/status failed' });
  }
  return checks;
}

/** The identity check: would this process get an SVID from the agent at `socket`, and if not, which entries' selectors are missing. */
async function identityCheck(socket: string, whoAmI: () => Promise<WhoAmI>, api: ApiClient | undefined): Promise<Check[]> {
  let me: WhoAmI;
  try {
    me = await whoAmI();
  } catch (err) {
    return [
      { name: 'identity', status: 'FAIL', message: `${socket}: ${messageOf(err)}`, hint: 'is the agent running, and is --socket its Workload API socket?' },
    ];
  }
  const withheld = (me.withheld ?? []).map(
    (w): Check => ({
      name: 'image',
      status: 'FAIL',
      message: w,
      hint: 'deploy the image through the admission webhook (an enforce policy), or pin it to a digest that was admitted',
    }),
  );
  if (me.spiffeIds.length)
    return [{ name: 'identity', status: 'OK', message: `this process gets ${me.spiffeIds.join(', ')} from ${me.agentId || 'the agent'}` }, ...withheld];
  const checks: Check[] = [
    ...withheld,
    {
      name: 'identity',
      status: 'FAIL',
      message: `no identity for this process from ${me.agentId || 'the agent'}; its selectors: ${me.selectors.join(' ') || '(none)'}`,
      hint: `create an entry with --parent-id ${me.agentId || 'AGENT'} and selectors this process has (a proxy gets the identity of the uid it runs as)`,
    },
  ];
  if (!api || !me.agentId) return checks;
  try {
    const entries: Entry[] = [];
    let pageToken: string | undefined;
    do {
      const q = new URLSearchParams({ parentId: me.agentId, pageSize: '1000', ...(pageToken ? { pageToken } : {}) });
      const page = await api.call<{ entries: Entry[]; nextPageToken?: string }>('GET', `/v1/entries?${q}`);
      entries.push(...page.entries);
      pageToken = page.nextPageToken;
    } while (pageToken);
    const have = new Set(me.selectors);
    for (const e of entries) {
      const missing = e.selectors.filter((s) => !have.has(s));
      checks.push({
        name: `entry ${e.id}`,
        status: 'WARN',
        message: `${e.spiffeId} needs ${missing.join(' ') || '(nothing: the agent has not synced it yet)'}`,
      });
    }
    if (entries.length === 0) checks.push({ name: 'entries', status: 'WARN', message: `no entry has parent ${me.agentId}` });
  } catch (err) {
    checks.push({ name: 'entries', status: 'WARN', message: `cannot list the agent's entries: ${messageOf(err)}` });
  }
  return checks;
}

export async function runDoctor(opts: {
  api: () => ApiClient;
  format: Format;
  socket?: string | undefined;
  whoAmI?: () => Promise<WhoAmI>;
  now?: number;
}): Promise<number> {
  let api: ApiClient | undefined;
  let checks: Check[];
  try {
    api = opts.api();
    checks = await serverChecks(api, opts.now ?? Date.now());
  } catch (err) {
    checks = [
      { name: 'server', status: 'FAIL', message: messageOf(err), hint: 'check --server, --ca-file and --token (or WRIT_SERVER, WRIT_CA_FILE, WRIT_TOKEN)' },
    ];
  }
  const serverOk = checks.every((c) => c.status !== 'FAIL');
  if (opts.socket && opts.whoAmI) checks.push(...(await identityCheck(opts.socket, opts.whoAmI, serverOk ? api : undefined)));
  const failed = checks.some((c) => c.status === 'FAIL');
  if (opts.format !== 'table') print(opts.format, { ok: !failed, checks });
  else {
    const width = Math.max(...checks.map((c) => c.name.length));
    for (const c of checks)
      process.stdout.write(`${c.status.padEnd(4)}  ${c.name.padEnd(width)}  ${c.message}\n${c.hint ? `${' '.repeat(width + 8)}hint: ${c.hint}\n` : ''}`);
  }
  return failed ? 1 : 0;
}

/**
 * Asks the agent at `endpoint` what it sees of this process. An agent without the Debug service
 * still tells whether an SVID is issued (FetchX509SVID), only not the selectors.
 */
export async function askAgent(endpoint: string): Promise<WhoAmI> {
  const { GrpcError, GRPC_STATUS, WorkloadClient } = await import('@writ/sdk');
  const { GrpcClient, fields } = await import('@writ/sdk/internal');
  const grpc = new GrpcClient(endpoint);
  try {
    const msg = await grpc.unary('/writ.agent.v1.Debug/WhoAmI', Buffer.alloc(0), { 'workload.spiffe.io': 'true' });
    const me = { selectors: [] as string[], spiffeIds: [] as string[], agentId: '', withheld: [] as string[] };
    for (const f of fields(msg)) {
      if (f.wire !== 2) continue;
      if (f.field === 1) me.selectors.push(f.data.toString('utf8'));
      else if (f.field === 2) me.spiffeIds.push(f.data.toString('utf8'));
      else if (f.field === 3) me.agentId = f.data.toString('utf8');
      else if (f.field === 4) me.withheld.push(f.data.toString('utf8'));
    }
    return me;
  } catch (err) {
    if (!(err instanceof GrpcError) || err.code !== GRPC_STATUS.UNIMPLEMENTED) throw err;
  } finally {
    grpc.close();
  }
  const wl = new WorkloadClient(endpoint, { attempts: 1 });
  try {
    const ctx = await wl.fetchX509Context();
    return { selectors: [], spiffeIds: ctx.svids.map((s) => s.spiffeId), agentId: '' };
  } catch (err) {
    throw new Error(`${(err as Error).message} (this agent has no Debug/WhoAmI, so which selectors it sees is unknown)`);
  } finally {
    wl.close();
  }
}
