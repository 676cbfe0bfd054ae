/** Real processes for end-to-end tests: the writ server and CLI as children, plus a cuttable TCP proxy. */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import pg from 'pg';

export const ROOT = new URL('../../', import.meta.url).pathname;
export const WRIT = join(ROOT, 'packages/cli/bin/writ.js');
/** Debian's python3, where python3-jwt and python3-grpcio live (a pyenv python may come first on PATH). */
export const DEBIAN_PYTHON = '/usr/bin/python3';
/** The PostgreSQL the tests use (trust auth on loopback; `.ci/run` starts it). */
export const PG_URL = process.env['WRIT_TEST_PG_URL'] ?? 'postgres://postgres@127.0.0.1:5432/test';

/** One statement on its own connection (CREATE or DROP DATABASE: not inside a transaction). */
export async function pgAdmin(sql: string): Promise<void> {
  const c = new pg.Client({ connectionString: PG_URL });
  await c.connect();
  try {
    await c.query(sql);
  } finally {
    await c.end();
  }
}

/** The environment for children: the test runner's own variables would make a child node act as a test file. */
function childEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env = { ...process.env, ...extra };
  delete env['NODE_TEST_CONTEXT'];
  return env;
}

export interface ServerProcess {
  readonly url: string;
  readonly port: number;
  readonly dataDir: string;
  readonly adminToken: string;
  readonly child: ChildProcess;
  /** Every stdout line so far. */
  readonly logs: string[];
  readonly stderr: string[];
  stop(): Promise<number | null>;
  /**
   * After stop(): the same server again (data dir, arguments) at the same URL. Only for a server
   * started `restartable`, whose URL is a CuttableProxy's: the process itself takes a new port,
   * since the freed one may have been taken meanwhile (by any connection's local port).
   */
  startAgain(): Promise<ServerProcess>;
}

export interface ServerOptions {
  args?: string[];
  dataDir?: string;
  env?: NodeJS.ProcessEnv;
  /** Behind a CuttableProxy, so startAgain() keeps the URL agents were given. */
  restartable?: boolean;
}

export async function startServerProcess(opts: ServerOptions = {}, front?: CuttableProxy): Promise<ServerProcess> {
  const dataDir = opts.dataDir ?? mkdtempSync(join(tmpdir(), 'writ-e2e-'));
  const args = [WRIT, 'server', 'start', '--data-dir', dataDir, '--trust-domain', 'e2e.test', '--listen', '127.0.0.1:0', ...(opts.args ?? [])];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env: childEnv(opts.env) });
  const logs: string[] = [];
  const stderr: string[] = [];
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start in 60 s; stderr: ${stderr.join('')}`)), 60_000);
    onLines(child, logs, (line) => {
      try {
        const j = JSON.parse(line) as { msg?: string; url?: string };
        if (j.msg === 'writ server listening' && j.url) clearTimeout(timer), resolve(j.url);
      } catch {
        /* not JSON: the assertion on log format will see it */
      }
    });
    child.stderr!.on('data', (d: Buffer) => stderr.push(d.toString()));
    child.once('exit', (code) => (clearTimeout(timer), reject(new Error(`server exited with ${code}: ${stderr.join('')}`))));
  });
  if (opts.restartable) {
    front ??= new CuttableProxy(0);
    front.targetPort = Number(new URL(url).port);
    await front.open();
  }
  const reached = new URL(url);
  if (front) reached.port = String(front.port);
  return {
    url: front ? reached.origin : url,
    port: Number(reached.port),
    dataDir,
    // Only the first server of a store writes admin.token; replicas share the store's tokens.
    adminToken: existsSync(join(dataDir, 'admin.token')) ? readFileSync(join(dataDir, 'admin.token'), 'utf8').trim() : '',
    child,
    logs,
    stderr,
    stop: async () => (await front?.cut(), stopChild(child)),
    startAgain: () => {
      if (!front) throw new TypeError('startAgain() needs a server started with { restartable: true }');
      return startServerProcess({ ...opts, dataDir }, front);
    },
  };
}

/** Collects a child's stdout lines into `logs` (for the whole life of the child) and calls `fn` on each. */
function onLines(child: ChildProcess, logs: string[], fn: (line: string) => void): void {
  let buf = '';
  child.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      logs.push(line);
      fn(line);
    }
  });
}

/** SIGTERM, then resolves with the exit code (at once when it already exited). */
function stopChild(child: ChildProcess): Promise<number | null> {
  return new Promise((resolve) => {
    if (child.exitCode !== null) return resolve(child.exitCode);
    child.once('exit', (code) => resolve(code));
    child.kill('SIGTERM');
  });
}

export interface RunResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a command to completion (no shell), with optional stdin. */
export function run(
  cmd: string,
  args: readonly string[],
  opts: { env?: NodeJS.ProcessEnv; input?: string; timeoutMs?: number; cwd?: string } = {},
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: childEnv(opts.env), stdio: ['pipe', 'pipe', 'pipe'], ...(opts.cwd ? { cwd: opts.cwd } : {}) });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 30_000);
    child.on('error', reject);
    child.on('close', (code) => (clearTimeout(timer), resolve({ code, stdout, stderr })));
    child.stdin.on('error', () => undefined); // a child that exits without reading its input
    child.stdin.end(opts.input ?? '');
  });
}

/** The writ CLI against a running server, connection settings through the environment. */
export function writ(
  server: ServerProcess | undefined,
  args: readonly string[],
  opts: { token?: string; input?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<RunResult> {
  const env: NodeJS.ProcessEnv = server
    ? { WRIT_SERVER: server.url, WRIT_TOKEN: opts.token ?? server.adminToken, WRIT_CA_FILE: join(server.dataDir, 'bundle.pem'), ...opts.env }
    : { ...opts.env };
  return run(process.execPath, [WRIT, ...args], { env, ...(opts.input !== undefined ? { input: opts.input } : {}) });
}

/**
 * A TCP proxy to a real service that a test can cut and restore (an outage) and point at a new
 * port (a restarted server). It keeps its own port for its whole life: a service restarted behind
 * it never needs a freed port back, which another process may have taken.
 */
export class CuttableProxy {
  #server: Server | undefined;
  readonly #sockets = new Set<Socket>();
  #cut = false;
  port = 0;
  targetPort: number;
  constructor(targetPort: number) {
    this.targetPort = targetPort;
  }

  /** Forwards (again, after cut()); listens on a port of its own the first time. */
  async open(): Promise<void> {
    this.#cut = false;
    if (this.#server) return;
    this.#server = createServer((client) => {
      // Cut: the service is away, a connection is reset as by a host with nothing listening.
      if (this.#cut) return void client.on('error', () => undefined).resetAndDestroy();
      const upstream = connect(this.targetPort, '127.0.0.1');
      this.#sockets.add(client).add(upstream);
      const drop = (): void => void (client.destroy(), upstream.destroy(), this.#sockets.delete(client), this.#sockets.delete(upstream));
      client.on('error', drop).on('close', drop);
      upstream.on('error', drop).on('close', drop);
      client.pipe(upstream).pipe(client);
    });
    await new Promise<void>((r) => this.#server!.listen(0, '127.0.0.1', () => r()));
    // A test's last server may stop without closing its proxy: the port alone keeps no test process alive.
    this.#server.unref();
    const a = this.#server.address();
    if (typeof a === 'object' && a) this.port = a.port;
  }

  /** Drops every connection and resets new ones until open(). */
  async cut(): Promise<void> {
    this.#cut = true;
    for (const s of this.#sockets) s.destroy();
    this.#sockets.clear();
  }

  async close(): Promise<void> {
    await this.cut();
    await new Promise<void>((r) => (this.#server ? this.#server.close(() => r()) : r()));
    this.#server = undefined;
  }
}

export function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => resolve(typeof a === 'object' && a ? a.port : 0));
    });
  });
}

/**
 * Starts something that binds ports picked by freePort(), with fresh ports up to `attempts` times
 * when one was taken meanwhile: between freePort() and the child's bind, any connection may get
 * the freed port as its local port. `start` fails with an error whose message says EADDRINUSE (or
 * "address already in use") when that happened; any other failure is thrown at once.
 */
export async function onFreePorts<T>(count: number, start: (ports: number[]) => Promise<T>, attempts = 3): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    const ports: number[] = [];
    for (let i = 0; i < count; i++) ports.push(await freePort());
    try {
      return await start(ports);
    } catch (err) {
      if (attempt >= attempts || !/EADDRINUSE|address already in use/i.test((err as Error).message)) throw err;
    }
  }
}

/**
 * Polls `fn` until it gives a value. The bound is only how long a broken system takes to fail:
 * generous (30 s), since a loaded machine is slow and a passing wait returns at once.
 */
export async function waitFor<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export function cleanup(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

export interface AgentProcess {
  readonly socket: string;
  readonly dataDir: string;
  readonly child: ChildProcess;
  readonly logs: string[];
  stop(): Promise<number | null>;
}

/** `writ agent start` as a child process; resolves once it serves the Workload API. */
export async function startAgentProcess(
  server: ServerProcess,
  opts: { joinToken?: string; dataDir?: string; socket?: string; extraArgs?: string[]; serverUrl?: string } = {},
): Promise<AgentProcess> {
  const dataDir = opts.dataDir ?? mkdtempSync(join(tmpdir(), 'writ-agent-'));
  const socket = opts.socket ?? join(dataDir, 'api.sock');
  const args = [
    WRIT,
    'agent',
    'start',
    '--data-dir',
    dataDir,
    '--socket',
    socket,
    ...(opts.joinToken ? ['--join-token', opts.joinToken] : []),
    ...(opts.extraArgs ?? []),
  ];
  const child = spawn(process.execPath, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: childEnv({ WRIT_SERVER: opts.serverUrl ?? server.url, WRIT_CA_FILE: join(server.dataDir, 'bundle.pem') }),
  });
  const logs: string[] = [];
  const stderr: string[] = [];
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`agent did not start in 60 s: ${stderr.join('')}`)), 60_000);
    onLines(child, logs, (line) => {
      if (line.includes('"writ agent serving the Workload API"')) clearTimeout(timer), resolve();
    });
    child.stderr!.on('data', (d: Buffer) => stderr.push(d.toString()));
    child.once('exit', (code) => (clearTimeout(timer), reject(new Error(`agent exited with ${code}: ${stderr.join('')}`))));
  });
  return {
    socket,
    dataDir,
    child,
    logs,
    stop: () => stopChild(child),
  };
}

export interface ProxyProcessOptions {
  /** Run as this uid (through setpriv): the proxy's identities are that uid's. Root's otherwise. */
  readonly uid?: number | undefined;
  /** Where its stdout lines (the JSON log) go. */
  readonly logs?: string[];
  /** Told on a failed start, e.g. the agent's recent log. */
  readonly context?: () => string;
}

/**
 * `writ proxy --socket SOCKET ARGS` as a child process; resolves once it listens. Rejects with its
 * stderr (and `context`) if it exits first or has not started in 60 s (then it is killed).
 */
export async function startProxyProcess(socket: string, args: readonly string[], opts: ProxyProcessOptions = {}): Promise<ChildProcess> {
  const command = [process.execPath, WRIT, 'proxy', '--socket', socket, ...args];
  const [exe, ...argv] = opts.uid === undefined ? command : ['setpriv', `--reuid=${opts.uid}`, `--regid=${opts.uid}`, '--clear-groups', ...command];
  const child = spawn(exe!, argv, { stdio: ['ignore', 'pipe', 'pipe'], env: childEnv() });
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const failed = (why: string): Error => new Error(`${why}: ${err}${opts.context ? `\n${opts.context()}` : ''}`);
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => (child.kill('SIGKILL'), reject(failed('proxy did not start in 60 s'))), 60_000);
    const exited = (c: number | null): void => (clearTimeout(timer), reject(failed(`proxy exited ${c}`)));
    onLines(child, opts.logs ?? [], (line) => {
      if (line.includes('"writ proxy listening"')) clearTimeout(timer), child.off('exit', exited), resolve();
    });
    child.once('exit', exited);
  });
  return child;
}

/** The orders policy the enforcement tests share: web may call `to` with `methods` on /v1/orders/*, legacy is denied. */
export const ordersPolicy = (to: string, methods: string): string => `apiVersion: writ.dev/v1
kind: AccessPolicy
metadata: { name: orders }
spec:
  to: ${to}
  rules:
    - { effect: allow, from: ["spiffe://e2e.test/ns/web/**"], actions: [{ methods: [${methods}], paths: ["/v1/orders/*"] }] }
    - { effect: deny, from: ["spiffe://e2e.test/ns/legacy/*"] }
`;

/** `writ policy apply -f` with `yaml` written to a file in `dir`; the apply must succeed. */
export async function applyPolicy(server: ServerProcess, dir: string, yaml: string): Promise<void> {
  const f = join(dir, 'policy.yaml');
  writeFileSync(f, yaml);
  const r = await writ(server, ['policy', 'apply', '-f', f]);
  assert.equal(r.code, 0, r.stderr);
}

/**
 * A server process with one entry for this test process's uid, served by one attested agent:
 * what a test needs to fetch an SVID for `spiffeId` from the agent's socket.
 */
export async function serverWithAgent(spiffeId: string, node: string): Promise<{ srv: ServerProcess; agent: AgentProcess; stop(): Promise<void> }> {
  const srv = await startServerProcess();
  const e = await writ(srv, [
    'entry',
    'create',
    '--spiffe-id',
    spiffeId,
    '--parent-id',
    `spiffe://e2e.test/writ/agent/${node}`,
    '--selector',
    `unix:uid:${process.getuid!()}`,
  ]);
  assert.equal(e.code, 0, e.stderr);
  const t = await writ(srv, ['token', 'create', '--node-name', node, '-o', 'json']);
  assert.equal(t.code, 0, t.stderr);
  const agent = await startAgentProcess(srv, { joinToken: (JSON.parse(t.stdout) as { token: string }).token });
  return {
    srv,
    agent,
    stop: async () => {
      await agent.stop();
      await srv.stop();
      for (const d of [srv.dataDir, agent.dataDir]) cleanup(d);
    },
  };
}

/** Python gRPC stubs of `proto` (in `dir`, relative to the checkout) in a new temp directory, made by Debian's grpc_tools. */
export async function pythonStubs(proto: string, dir = 'packages/sdk/proto'): Promise<string> {
  const stubs = mkdtempSync(join(tmpdir(), 'writ-pystubs-'));
  const gen = await run(DEBIAN_PYTHON, ['-m', 'grpc_tools.protoc', `-I${join(ROOT, dir)}`, `--python_out=${stubs}`, `--grpc_python_out=${stubs}`, proto]);
  if (gen.code !== 0) throw new Error(`grpc_tools.protoc ${proto}: ${gen.stderr}`);
  return stubs;
}

/** A direct connection to a server's database, behind its back (what an administrator could edit). */
export interface Db {
  query(sql: string, params?: readonly (string | number)[]): Promise<Record<string, unknown>[]>;
  close(): Promise<void>;
}

export function sqliteDb(file: string): Db {
  const db = new DatabaseSync(file);
  db.exec('PRAGMA busy_timeout = 10000');
  return {
    query: async (sql, params = []) => db.prepare(sql).all(...params) as Record<string, unknown>[],
    close: async () => db.close(),
  };
}

export async function postgresDb(url: string): Promise<Db> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  return {
    query: async (sql, params = []) => {
      let n = 0;
      return (
        await c.query(
          sql.replace(/\?/g, () => `$${++n}`),
          [...params],
        )
      ).rows as Record<string, unknown>[];
    },
    close: () => c.end(),
  };
}
