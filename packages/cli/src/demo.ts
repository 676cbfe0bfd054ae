/**
 * `writ demo`: the whole story on one machine, each step printed with what it proves. A server on
 * SQLite (in this process), an agent and two `writ proxy` sidecars (real processes: attestation
 * reads their PIDs), an allowed and a denied call, `writ authz check` explaining the deny, a policy
 * change, a quarantine closing a live connection, the decision log, and the admission webhook judging
 * pods against Pod Security Standards. Everything it starts is
 * stopped and everything it writes is removed, also on Ctrl-C or SIGTERM.
 */
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import { constants, copyFileSync, linkSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { createServer, request } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { connect } from 'node:net';
import { constants as osConstants, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { Readable } from 'node:stream';
import { pino } from 'pino';
import { WritError } from '@writ/spiffe';
import { loadServerConfig, startServer, type RunningServer } from '@writ/server';
import { ApiClient } from './client.ts';

const TD = 'demo.example';
const WEB = `spiffe://${TD}/ns/shop/sa/web`;
const ORDERS = `spiffe://${TD}/ns/shop/sa/orders`;
const NODE = 'demo-node';
/** The writ command running this demo (bin/writ.js): its children are the same CLI, from sources or from dist/. */
const WRIT = process.argv[1]!;

/** Ctrl-C, kill, and a closed terminal: each stops what the demo started before it exits. */
const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

const say = (s = ''): void => void process.stdout.write(`${s}\n`);
const proves = (s: string): void => say(`   proves: ${s}`);

/** A claim of the demo that did not hold: the demo fails (exit 1) rather than print a false story. */
function claim(ok: unknown, what: string): asserts ok {
  if (!ok) throw new WritError('ERR_INTERNAL', `demo: ${what}`);
}

/** Polls `fn` until it returns a value; bounded, so a broken step fails instead of hanging. */
async function until<T>(what: string, fn: () => Promise<T | undefined> | T | undefined, timeoutMs = 10_000): Promise<T> {
  const end = performance.now() + timeoutMs;
  for (;;) {
    const v = await Promise.resolve()
      .then(fn)
      .catch(() => undefined);
    if (v !== undefined) return v;
    claim(performance.now() < end, `timed out after ${timeoutMs / 1000} s waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

interface Child {
  readonly name: string;
  readonly proc: ChildProcessByStdio<null, Readable, Readable>;
  /** Every output line so far (for the diagnosis when a step fails). */
  readonly lines: string[];
}

/** What the demo started and wrote; `stop` ends and removes all of it, once, however it is called. */
class Workspace {
  readonly dir: string;
  readonly #children = new Set<Child>();
  readonly #closers: Array<() => Promise<void>> = [];
  #stopped: Promise<void> | undefined;

  constructor() {
    this.dir = mkdtempSync(join(tmpdir(), 'writ-demo-'));
  }

  onStop(fn: () => Promise<void>): void {
    this.#closers.push(fn);
  }

  /** Starts `exe args` and resolves with its first JSON log line whose msg is `ready`. */
  start(name: string, exe: string, args: string[], env: NodeJS.ProcessEnv, ready: string): Promise<{ child: Child; line: Record<string, unknown> }> {
    const child = this.#spawn(name, exe, args, env);
    const proc = child.proc;
    // A child that fails to start says why in its last lines: they go into the error.
    const failed = (why: string): WritError => new WritError('ERR_INTERNAL', `demo: ${name} ${why}:\n${child.lines.slice(-10).join('\n')}`);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(failed('did not start in 20 s')), 20_000);
      let buf = '';
      const onData = (d: Buffer): void => {
        buf += d.toString();
        let i: number;
        while ((i = buf.indexOf('\n')) >= 0) {
          const text = buf.slice(0, i);
          buf = buf.slice(i + 1);
          child.lines.push(text);
          try {
            const j = JSON.parse(text) as Record<string, unknown>;
            if (j['msg'] === ready) clearTimeout(timer), resolve({ child, line: j });
          } catch {
            /* not a log line */
          }
        }
      };
      proc.stdout.on('data', onData);
      proc.stderr.on('data', (d: Buffer) => child.lines.push(...d.toString().trimEnd().split('\n')));
      proc.once('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        const hint = err.code === 'EACCES' && exe !== process.execPath ? ' (is TMPDIR on a noexec filesystem? point TMPDIR elsewhere)' : '';
        reject(new WritError('ERR_CONFIG_INVALID', `demo: cannot run ${exe}: ${err.code ?? err.message}${hint}`));
      });
      proc.once('exit', (code, signal) => (clearTimeout(timer), reject(failed(`exited (${signal ?? code}) before it was ready`))));
    });
  }

  /** Runs a CLI command to its end: its exit code and output. */
  run(exe: string, args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; stdout: string; stderr: string }> {
    const proc = this.#spawn(args.slice(1, 3).join(' '), exe, args, env).proc;
    let stdout = '';
    let stderr = '';
    proc.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    return new Promise((resolve, reject) => {
      proc.once('error', reject);
      proc.once('close', (code) => resolve({ code, stdout, stderr }));
    });
  }

  #spawn(name: string, exe: string, args: string[], env: NodeJS.ProcessEnv): Child {
    // Once stopping has begun, a child started now would outlive the demo.
    if (this.#stopped) throw new WritError('ERR_INTERNAL', 'demo: stopping');
    const child: Child = { name, proc: spawn(exe, args, { stdio: ['ignore', 'pipe', 'pipe'], env }), lines: [] };
    this.#children.add(child);
    child.proc.once('exit', () => this.#children.delete(child));
    return child;
  }

  /** The last output lines of every child still running, for a failed step's diagnosis. */
  tails(): string {
    return [...this.#children].map((c) => `--- ${c.name}\n${c.lines.slice(-15).join('\n')}`).join('\n');
  }

  stop(): Promise<void> {
    this.#stopped ??= (async () => {
      // SIGTERM lets each child close its sockets (the agent removes its socket file); SIGKILL after 5 s.
      await Promise.all(
        [...this.#children].map(
          ({ proc }) =>
            new Promise<void>((resolve) => {
              if (proc.exitCode !== null || proc.signalCode !== null) return resolve();
              const kill = setTimeout(() => proc.kill('SIGKILL'), 5000);
              proc.once('exit', () => (clearTimeout(kill), resolve()));
              proc.kill('SIGTERM');
            }),
        ),
      );
      for (const close of this.#closers.reverse()) await close().catch(() => undefined);
      rmSync(this.dir, { recursive: true, force: true });
    })();
    return this.#stopped;
  }
}

/**
 * An executable of its own for a workload, named after it: a hard link to this Node, or a copy
 * where linking is refused (another filesystem; protected_hardlinks for a file another user owns).
 * Its path is what the agent attests, so two workloads of one uid get different identities.
 */
function workloadExecutable(dir: string, name: string, from: string): string {
  const exe = join(dir, name);
  try {
    linkSync(from, exe);
  } catch {
    copyFileSync(from, exe, constants.COPYFILE_FICLONE); // a reflink where the filesystem has them
  }
  return exe;
}

/** One HTTP/1.1 request to 127.0.0.1:`port` (web's outbound proxy: the app's side is plaintext). */
function call(port: number, method: string, path: string): Promise<{ status: number; body: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, agent: false, timeout: 10_000 }, (res) => {
      let text = '';
      res.on('data', (d: Buffer) => (text += d.toString()));
      res.on('end', () => {
        let body: Record<string, unknown> = {};
        try {
          body = JSON.parse(text) as Record<string, unknown>;
        } catch {
          body = { text };
        }
        resolve({ status: res.statusCode ?? 0, body });
      });
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
    req.end();
  });
}

const policy = (methods: string): string => `apiVersion: writ.dev/v1
kind: AccessPolicy
metadata: { name: orders }
spec:
  to: ${ORDERS}
  rules:
    - { effect: allow, from: ["${WEB}"], actions: [{ methods: [${methods}], paths: ["/v1/orders/*"] }] }
`;

/** Runs the demo; resolves when it is done and everything it started is gone, rejects if a step's claim did not hold. */
export async function runDemo(keepDir?: string): Promise<void> {
  const t0 = performance.now();
  const ws = new Workspace();
  let interrupted = false;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (interrupted) return; // a second Ctrl-C while stopping must not leave things behind
    interrupted = true;
    process.stderr.write(`\nwrit demo: ${signal}; stopping what it started and removing ${ws.dir}\n`);
    void ws.stop().then(() => process.exit(128 + osConstants.signals[signal]));
  };
  for (const sig of SIGNALS) process.on(sig, onSignal);
  try {
    await story(ws, keepDir);
  } catch (err) {
    if (interrupted) await new Promise(() => undefined); // the signal handler exits once all is stopped
    process.stderr.write(`${ws.tails()}\n`);
    throw err;
  } finally {
    if (!interrupted) {
      await ws.stop();
      for (const sig of SIGNALS) process.removeListener(sig, onSignal);
    }
  }
  say(`\nDone in ${((performance.now() - t0) / 1000).toFixed(1)} s. Stopped the agent and both proxies; removed ${ws.dir}.`);
  say('Next: docs/getting-started.md runs the same steps with the writ CLI.');
}

async function story(ws: Workspace, keepDir: string | undefined): Promise<void> {
  const dataDir = keepDir ?? join(ws.dir, 'server');
  const bundle = join(dataDir, 'bundle.pem');
  const uid = process.getuid?.() ?? 0;
  say(`Writ demo: trust domain ${TD}, everything under ${ws.dir} (removed at the end)${keepDir ? `; the server's state in ${keepDir} (kept)` : ''}\n`);

  // 1. The server, in this process: the agent and the proxies are the processes attestation must see.
  const cfg = loadServerConfig({ trustDomain: TD, dataDir, listen: '127.0.0.1:0', admissionListen: '127.0.0.1:0' });
  const server: RunningServer = await startServer(cfg, { log: pino({ level: 'warn' }, process.stderr) });
  ws.onStop(() => server.close());
  const token = readFileSync(join(dataDir, 'admin.token'), 'utf8').trim();
  const api = new ApiClient({ server: server.url, token, caFile: bundle });
  say(`1. Server at ${server.url}, state on the embedded SQLite store ${join(dataDir, 'writ.db')}.`);
  proves('nothing to install: one process is the CA, the registry, the policy store and the decision log.');

  // 2. Entries by selector, then the agent.
  const bin = join(ws.dir, 'bin');
  mkdirSync(bin);
  const exe = { web: workloadExecutable(bin, 'web', process.execPath), orders: '' };
  exe.orders = workloadExecutable(bin, 'orders', exe.web);
  const agentId = `spiffe://${TD}/writ/agent/${NODE}`;
  if (keepDir) {
    // A kept store remembers the last run: its quarantine and its entries would change this story.
    for (const id of [WEB, ORDERS]) await api.call('DELETE', `/v1/quarantine/${encodeURIComponent(id)}`).catch(() => undefined);
    const old = await api.call<{ entries: Array<{ id: string }> }>('GET', `/v1/entries?parentId=${encodeURIComponent(agentId)}`);
    for (const e of old.entries) await api.call('DELETE', `/v1/entries/${encodeURIComponent(e.id)}`);
  }
  const ids = { web: WEB, orders: ORDERS };
  const selectors = (name: 'web' | 'orders'): string[] => [`unix:uid:${uid}`, `unix:path:${exe[name]}`];
  const entryIds = { web: '', orders: '' };
  for (const name of ['web', 'orders'] as const)
    entryIds[name] = (await api.call<{ id: string }>('POST', '/v1/entries', { spiffeId: ids[name], parentId: agentId, selectors: selectors(name) })).id;
  const join_ = await api.call<{ token: string }>('POST', '/v1/join-tokens', { nodeName: NODE, ttl: '10m' });
  // Children get no admin token; the join token goes by environment, not argv (ps shows argv).
  const env: NodeJS.ProcessEnv = { ...process.env, WRIT_SERVER: server.url, WRIT_CA_FILE: bundle };
  delete env['WRIT_TOKEN'];
  delete env['NODE_TEST_CONTEXT'];
  const socket = join(ws.dir, 'agent', 'api.sock');
  const agent = await ws.start(
    'agent',
    process.execPath,
    [WRIT, 'agent', 'start', '--data-dir', join(ws.dir, 'agent'), '--socket', socket],
    { ...env, WRIT_JOIN_TOKEN: join_.token },
    'writ agent serving the Workload API',
  );
  claim(agent.line['spiffeId'] === agentId, `the agent attested as ${String(agent.line['spiffeId'])}, not ${agentId}`);
  say(`\n2. Agent (pid ${agent.child.proc.pid}) attested to the server with a single-use join token: it is ${agentId}.`);
  say(`   It serves the SPIFFE Workload API on ${socket}.`);
  for (const name of ['web', 'orders'] as const) say(`   Entry ${entryIds[name].slice(0, 8)}: a process of uid ${uid} running ${exe[name]} is ${ids[name]}.`);
  proves('identities are registered by what the kernel can observe (uid, executable), not by a secret handed to the workload.');

  // 3. The two workloads' proxies, each from its own executable.
  const app = createServer((req, res) => {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ order: req.url, method: req.method, caller: req.headers['x-writ-peer-id'] ?? null }));
  });
  await new Promise<void>((r) => app.listen(0, '127.0.0.1', () => r()));
  ws.onStop(() => new Promise<void>((r) => (app.closeAllConnections(), app.close(() => r()))));
  const appPort = (app.address() as { port: number }).port;
  const orders = await ws.start(
    'orders proxy',
    exe.orders,
    [WRIT, 'proxy', '--socket', socket, '--inbound', `127.0.0.1:0=127.0.0.1:${appPort}`],
    env,
    'writ proxy listening',
  );
  const ordersPort = portOf(orders.line, 'inbound-http');
  const web = await ws.start(
    'web proxy',
    exe.web,
    [WRIT, 'proxy', '--socket', socket, '--outbound', `127.0.0.1:0=${ORDERS}@127.0.0.1:${ordersPort}`],
    env,
    'writ proxy listening',
  );
  const webPort = portOf(web.line, 'outbound');
  say('\n3. Two workloads, each behind `writ proxy`, got their identities from the agent by attestation:');
  for (const [name, p] of [
    ['orders', orders],
    ['web', web],
  ] as const) {
    claim(p.line['spiffeId'] === ids[name], `the ${name} proxy got ${String(p.line['spiffeId'])}, not ${ids[name]}`);
    const pid = p.child.proc.pid!;
    // The facts the agent reads: the uid (SO_PEERCRED gives the same as /proc), the executable's path.
    const procUid = /^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
    say(`   ${name.padEnd(6)} pid ${pid}, uid ${procUid}, /proc/${pid}/exe = ${readlinkSync(`/proc/${pid}/exe`)}`);
    say(`          selectors ${selectors(name).join(' + ')}  ->  ${ids[name]}`);
  }
  say(`   orders' proxy terminates mTLS on 127.0.0.1:${ordersPort} in front of its app (127.0.0.1:${appPort});`);
  say(`   web's app (this demo) calls plain http://127.0.0.1:${webPort}, and web's proxy carries it over mTLS to orders.`);
  proves('one uid, two identities: the executable each process runs tells them apart; neither proxy was given a key or a certificate.');

  // 4. Policy, an allowed and a denied call.
  let res = await api.call<{ revision: number }>('POST', '/v1/policies', { yaml: policy('GET'), comment: 'writ demo: web may read orders' });
  const early: string[] = [];
  const allowed = await until('the policy at the proxies', async () => {
    const r = await call(webPort, 'GET', '/v1/orders/7');
    if (r.status !== 200) early.push(`${r.status} ${String(r.body['code'])}`);
    return r.status === 200 ? r : undefined;
  });
  claim(allowed.body['caller'] === WEB, `the orders app was told the caller is ${String(allowed.body['caller'])}`);
  const denied = await call(webPort, 'POST', '/v1/orders/7');
  claim(denied.status === 403 && typeof denied.body['decisionId'] === 'string', `POST answered ${denied.status} ${JSON.stringify(denied.body)}`);
  const deniedId = denied.body['decisionId'] as string;
  say(`\n4. Policy revision ${res.revision}: web may GET /v1/orders/*; nothing else is allowed (default deny).`);
  say(`   GET  /v1/orders/7 -> 200; the orders app was told who called: ${String(allowed.body['caller'])}`);
  say(`   POST /v1/orders/7 -> 403 ${JSON.stringify(denied.body)}`);
  if (early.length) say(`   (${early.length} GET before revision ${res.revision} reached orders' proxy: ${[...new Set(early)].join(', ')}, default deny)`);
  proves('policy is written in identities and enforced at the callee; the app needs no code for mTLS or authorization.');

  // 5. The deny explained by the CLI, as an operator would ask.
  const cliEnv = { ...env, WRIT_TOKEN: token };
  const action = 'POST /v1/orders/7';
  const explained = await ws.run(process.execPath, [WRIT, 'authz', 'check', '--from', WEB, '--to', ORDERS, '--action', action], cliEnv);
  claim(/^DENY \(NO_MATCHING_ALLOW\)/.test(explained.stdout), `writ authz check said: ${explained.stdout}${explained.stderr}`);
  say(`\n5. $ writ authz check --from ${WEB} --to ${ORDERS} --action '${action}'`);
  for (const l of explained.stdout.trimEnd().split('\n')) say(`   ${l}`);
  say(`   (exit ${explained.code}${explained.code === 3 ? ', the exit code for a policy violation' : ''})`);
  proves('every deny can be explained: the nearest rule, and which field of it did not match.');

  // 6. A policy change, measured from the apply to the first POST let through.
  const t = performance.now();
  res = await api.call<{ revision: number }>('POST', '/v1/policies', { yaml: policy('GET, POST'), comment: 'writ demo: web may create orders' });
  await until('POST allowed', async () => ((await call(webPort, 'POST', '/v1/orders/7')).status === 200 ? true : undefined));
  say(`\n6. Policy revision ${res.revision} also allows POST: the same POST -> 200, ${Math.round(performance.now() - t)} ms after the apply.`);
  proves('a policy change reaches the running proxies by itself (no restart, no redeploy), in the time shown.');

  // 7. Quarantine: a live keep-alive connection from web is closed, new calls are refused.
  const live = connect(webPort, '127.0.0.1');
  let got = '';
  let closed = false;
  live.on('data', (d: Buffer) => (got += d.toString()));
  live.on('error', () => undefined);
  live.on('close', () => (closed = true));
  live.write('GET /v1/orders/8 HTTP/1.1\r\nHost: orders\r\nConnection: keep-alive\r\n\r\n');
  await until('the first answer on the live connection', () => (got.startsWith('HTTP/1.1 200') ? true : undefined));
  const tq = performance.now();
  await api.call('POST', '/v1/quarantine', { spiffeId: WEB, reason: 'writ demo: suspected compromise' });
  await until('the live connection to close', () => (closed ? true : undefined));
  const closedMs = Math.round(performance.now() - tq);
  const after = await call(webPort, 'GET', '/v1/orders/7').catch((err: Error) => ({ status: 0, body: { error: err.message } as Record<string, unknown> }));
  claim(after.status !== 200, 'a call from the quarantined web was let through');
  say(`\n7. Quarantined ${WEB}: web's open keep-alive connection (it had just got a 200) was closed ${closedMs} ms later;`);
  say(`   a new GET /v1/orders/7 -> ${after.status ? `${after.status} ${JSON.stringify(after.body)}` : `refused (${String(after.body['error'])})`}`);
  proves('a compromised identity is cut off everywhere at once, including connections already open.');

  // 8. The decision log: every decision the proxies made reached the server through the agent.
  const shown = [deniedId, ...(typeof after.body['decisionId'] === 'string' ? [after.body['decisionId']] : [])];
  const rows = await until('the 403s in the decision log', async () => {
    const q = new URLSearchParams({ to: ORDERS, since: new Date(Date.now() - 600_000).toISOString(), limit: '100' });
    const r = await api.call<{ decisions: Array<{ id: string; decision: string; reason: string }> }>('GET', `/v1/decisions?${q}`);
    const found = shown.map((id) => r.decisions.find((d) => d.id === id));
    return found.every((d) => d) ? found : undefined;
  });
  const logged = await ws.run(process.execPath, [WRIT, 'decisions', 'query', '--to', ORDERS, '--since', '10m'], cliEnv);
  claim(logged.code === 0, `writ decisions query: ${logged.stderr}`);
  say(`\n8. $ writ decisions query --to ${ORDERS} --since 10m`);
  for (const l of logged.stdout.trimEnd().split('\n')) say(`   ${l}`);
  say(`   The decision ids the callers were shown are there: ${rows.map((d) => `${d!.id} (${d!.decision} ${d!.reason})`).join(', ')}.`);
  proves('every decision, allowed or denied, reaches the central log through the agent, under the id the caller was shown.');

  // 9. Admission: the webhook a kube-apiserver calls, judging pods by the Pod Security Standards.
  res = await api.call<{ revision: number }>('POST', '/v1/policies', { yaml: ADMISSION_POLICY, comment: 'writ demo: restricted pods in shop' });
  claim(server.admissionUrl, 'the server has no admission listener');
  const verdicts: Record<string, AdmissionAnswer> = {};
  for (const [name, pod] of Object.entries(PODS)) verdicts[name] = await admissionReview(server.admissionUrl, readFileSync(bundle), name, pod);
  claim(
    verdicts['web-debug']!.allowed === false && verdicts['web-debug']!.status?.code === 403,
    `the privileged pod: ${JSON.stringify(verdicts['web-debug'])}`,
  );
  claim(verdicts['web']!.allowed === true, `the restricted pod: ${JSON.stringify(verdicts['web'])}`);
  say(`\n9. Policy revision ${res.revision} adds an AdmissionPolicy: pods in namespace shop must meet Pod Security "restricted".`);
  say(`   The admission webhook (${server.admissionUrl}), asked as a kube-apiserver asks (AdmissionReview v1):`);
  say(`   pod web-debug (privileged, root) -> denied: ${verdicts['web-debug']!.status!.message}`);
  say('   pod web       (non-root, no privilege escalation, capabilities dropped, RuntimeDefault seccomp) -> allowed');
  const events = await until('the verdicts in the admission events', async () => {
    const r = await api.call<{ events: Array<{ name: string; allowed: boolean }> }>('GET', '/v1/admission/events?namespace=shop&limit=10');
    return r.events.length >= 2 ? r.events : undefined;
  });
  say(`   Both verdicts are recorded: ${events.map((e) => `${e.name} ${e.allowed ? 'allowed' : 'denied'}`).join(', ')} (writ admission events).`);
  proves("the same policy store judges pods at admission, in Kubernetes' own words; `writ admission check` gives the same verdict offline in CI.");

  // 10. The audit log: each change above is a leaf of a Merkle tree whose head the server signs every second.
  const kinds = await until('the quarantine and the admission verdicts in a signed checkpoint', async () => {
    const r = await api.call<{ entries: Array<{ body: string }> }>('GET', '/v1/audit/entries?start=0').catch(() => undefined);
    const ks = (r?.entries ?? []).map((e) => (JSON.parse(e.body) as { kind: string }).kind);
    return ks.includes('quarantine.add') && ks.includes('admission.verdicts') ? ks : undefined;
  });
  const verified = await ws.run(process.execPath, [WRIT, 'audit', 'verify', '--key', join(dataDir, 'audit-log.vkey')], cliEnv);
  claim(verified.code === 0, `writ audit verify: ${verified.stderr}`);
  const counted = [...new Set(kinds)].map((k) => `${kinds.filter((x) => x === k).length} ${k}`).join(', ');
  say(`\n10. The audit log holds every change above: ${counted}.`);
  say(`    $ writ audit verify --key ${join(dataDir, 'audit-log.vkey')}`);
  for (const l of verified.stdout.trimEnd().split('\n')) say(`    ${l}`);
  proves(
    'every change is a leaf of an RFC 9162 Merkle tree in the same transaction as the change; a row edited in the database fails `writ audit verify` at its index.',
  );
}

const ADMISSION_POLICY = `apiVersion: writ.dev/v1
kind: AdmissionPolicy
metadata: { name: shop }
spec:
  namespaces: [shop]
  mode: enforce
  podSecurity: { level: restricted, version: latest }
`;
const IMAGE = `registry.example.com/shop/web@sha256:${'5'.repeat(64)}`;
const PODS: Record<string, Record<string, unknown>> = {
  'web-debug': { containers: [{ name: 'web', image: IMAGE, securityContext: { privileged: true, runAsUser: 0 } }] },
  web: {
    securityContext: { runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' } },
    containers: [{ name: 'web', image: IMAGE, securityContext: { allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] } } }],
  },
};

interface AdmissionAnswer {
  readonly allowed: boolean;
  readonly status?: { readonly code: number; readonly message: string };
}

/** One AdmissionReview v1 to the validating hook, over TLS pinned to the server's bundle, as kube-apiserver sends it. */
function admissionReview(url: string, ca: Buffer, name: string, spec: Record<string, unknown>): Promise<AdmissionAnswer> {
  const body = JSON.stringify({
    apiVersion: 'admission.k8s.io/v1',
    kind: 'AdmissionReview',
    request: {
      uid: `demo-${name}`,
      kind: { group: '', version: 'v1', kind: 'Pod' },
      resource: { group: '', version: 'v1', resource: 'pods' },
      requestKind: { group: '', version: 'v1', kind: 'Pod' },
      requestResource: { group: '', version: 'v1', resource: 'pods' },
      name,
      namespace: 'shop',
      operation: 'CREATE',
      userInfo: { username: 'writ-demo' },
      object: { apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: 'shop' }, spec },
      oldObject: null,
      dryRun: false,
      options: { apiVersion: 'meta.k8s.io/v1', kind: 'CreateOptions' },
    },
  });
  const u = new URL('/v1/admission/validate', url);
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      // The listener's certificate names the Service (writ-admission.writ-system.svc), as the API server dials it.
      {
        host: u.hostname,
        port: u.port,
        path: u.pathname,
        method: 'POST',
        ca,
        servername: 'writ-admission.writ-system.svc',
        headers: { 'content-type': 'application/json' },
      },
      (r) => {
        let text = '';
        r.on('data', (d: Buffer) => (text += d.toString()));
        r.on('end', () => {
          try {
            resolve((JSON.parse(text) as { response: AdmissionAnswer }).response);
          } catch {
            reject(new WritError('ERR_INTERNAL', `demo: the admission webhook answered ${r.statusCode}: ${text.slice(0, 200)}`));
          }
        });
      },
    );
    req.on('error', reject);
    req.setTimeout(10_000, () => req.destroy(new Error('the admission webhook did not answer in 10 s')));
    req.end(body);
  });
}

function portOf(line: Record<string, unknown>, kind: string): number {
  const p = (line['ports'] as Array<{ kind: string; port: number }> | undefined)?.find((x) => x.kind === kind)?.port;
  claim(p, `no ${kind} port in ${JSON.stringify(line)}`);
  return p;
}
