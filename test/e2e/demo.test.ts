/**
 * `writ demo` run as a user runs it: every step's claim is in its output, it exits 0, and it leaves
 * nothing behind (no process, socket file or directory), also when stopped with SIGINT or SIGTERM
 * half-way, as root and as an ordinary user, in under 20 s by its own clock (the claim).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, chownSync, cpSync, mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { describe, it, type TestContext } from 'node:test';
import { ROOT, WRIT, cleanup, run } from './helpers.ts';

const WEB = 'spiffe://demo.example/ns/shop/sa/web';
const ORDERS = 'spiffe://demo.example/ns/shop/sa/orders';
const NOBODY = 65534;
const esc = (s: string): string => s.replace(/[/.*+?()[\]{}|\\^$]/g, '\\$&');
/** The claim for the whole story, by the demo's own clock. */
const LIMIT_S = 20;
/** The demo's numbered steps, each followed by the line that says what it proves. */
const STEPS = 10;

/** Every process whose environment carries this run's mark: the demo's children inherit it. */
function marked(mark: string): number[] {
  const pids: number[] = [];
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      if (readFileSync(`/proc/${pid}/environ`, 'latin1').split('\0').includes(`WRIT_DEMO_TEST_MARK=${mark}`)) pids.push(Number(pid));
    } catch {
      /* gone, or not ours to read */
    }
  }
  return pids;
}

interface DemoRun {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly seconds: number;
  /** The TMPDIR (and HOME) the demo was given: everything it writes goes there. */
  readonly tmp: string;
  readonly mark: string;
  /** Processes of this run alive when the signal was sent. */
  readonly aliveAtSignal: number[];
  /** What was left once the demo had exited (then cleared, so that a failed test leaves nothing to the next). */
  readonly left: { readonly processes: number[]; readonly files: string[] };
}

/**
 * Runs `writ demo` (as `uid` when given, through setpriv); with `stopAt`, sends `signal` once stdout
 * matches it: to the demo alone (`kill PID`), or with `group` to its whole process group, children
 * included, as a terminal's Ctrl-C does.
 */
function demo(
  opts: { uid?: number; stopAt?: RegExp; signal?: NodeJS.Signals; group?: boolean; env?: NodeJS.ProcessEnv; writ?: string; node?: string } = {},
): Promise<DemoRun> {
  const tmp = mkdtempSync(join(tmpdir(), 'writ-demo-test-'));
  if (opts.uid !== undefined) chownSync(tmp, opts.uid, opts.uid);
  const mark = `${process.pid}-${performance.now()}`;
  const env: NodeJS.ProcessEnv = { ...process.env, ...opts.env, TMPDIR: tmp, HOME: tmp, WRIT_DEMO_TEST_MARK: mark };
  for (const k of ['NODE_TEST_CONTEXT', 'WRIT_SERVER', 'WRIT_TOKEN', 'WRIT_CA_FILE']) delete env[k];
  const [cmd, args] =
    opts.uid === undefined
      ? [opts.node ?? process.execPath, [opts.writ ?? WRIT, 'demo']]
      : ['setpriv', [`--reuid=${opts.uid}`, `--regid=${opts.uid}`, '--clear-groups', opts.node ?? process.execPath, opts.writ ?? WRIT, 'demo']];
  const t = performance.now();
  const child = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'], detached: opts.group === true });
  let stdout = '';
  let stderr = '';
  let aliveAtSignal: number[] = [];
  child.stdout.on('data', (d: Buffer) => {
    stdout += d.toString();
    if (opts.stopAt?.test(stdout) && aliveAtSignal.length === 0) {
      aliveAtSignal = marked(mark);
      if (opts.group) process.kill(-child.pid!, opts.signal);
      else child.kill(opts.signal);
    }
  });
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const guard = setTimeout(() => child.kill('SIGKILL'), 120_000);
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(guard);
      const seconds = (performance.now() - t) / 1000;
      const left = { processes: marked(mark), files: readdirSync(tmp) };
      for (const pid of left.processes) process.kill(pid, 'SIGKILL');
      cleanup(tmp);
      resolve({ code, stdout, stderr, seconds, tmp, mark, aliveAtSignal, left });
    });
  });
}

/** Nothing of the run was left: no process with its mark, nothing in the TMPDIR it was given. */
function assertNothingLeft(r: DemoRun): void {
  assert.deepEqual(r.left.processes, [], 'no process of the demo is left running');
  assert.deepEqual(r.left.files, [], 'no socket file, directory or executable copy is left');
}

/** Each step of the story, as the output must tell it. */
function assertStory(t: TestContext, r: DemoRun, uid: number): void {
  const out = r.stdout;
  assert.equal(r.code, 0, `exit code; stderr:\n${r.stderr}\nstdout:\n${out}`);
  const work = new RegExp(`everything under (${esc(r.tmp)}/writ-demo-\\w+) \\(removed at the end\\)`).exec(out)?.[1];
  assert.ok(work, out);
  assert.match(out, new RegExp(`^1\\. Server at https://127\\.0\\.0\\.1:\\d+, state on the embedded SQLite store ${esc(work)}/server/writ\\.db\\.$`, 'm'));
  assert.match(out, /^2\. Agent \(pid \d+\) attested to the server with a single-use join token: it is spiffe:\/\/demo\.example\/writ\/agent\/demo-node\.$/m);
  // Two identities for one uid, told apart by the executable the agent read from /proc.
  for (const [name, id] of [
    ['web', WEB],
    ['orders', ORDERS],
  ] as const) {
    const exe = `${work}/bin/${name}`;
    assert.match(out, new RegExp(`^   ${name} +pid \\d+, uid ${uid}, /proc/\\d+/exe = ${esc(exe)}$`, 'm'));
    assert.match(out, new RegExp(`^ +selectors unix:uid:${uid} \\+ unix:path:${esc(exe)}  ->  ${esc(id)}$`, 'm'));
  }
  assert.match(out, new RegExp(`^   GET  /v1/orders/7 -> 200; the orders app was told who called: ${esc(WEB)}$`, 'm'));
  const denied = /^ {3}POST \/v1\/orders\/7 -> 403 \{"code":"NO_MATCHING_ALLOW","decisionId":"([0-9a-f-]{36})"\}$/m.exec(out)?.[1];
  assert.ok(denied, `a 403 with its decision id:\n${out}`);
  assert.match(
    out,
    /^5\. \$ writ authz check --from \S+\/web --to \S+\/orders --action 'POST \/v1\/orders\/7'\n {3}DENY \(NO_MATCHING_ALLOW\) at policy revision 1\n {5}nearest: orders#0 \(policy orders\) did not match on action$/m,
  );
  const applied = /^6\. Policy revision 2 also allows POST: the same POST -> 200, (\d+) ms after the apply\.$/m.exec(out)?.[1];
  assert.ok(applied, out);
  // web's own proxy refuses it (its identity is withdrawn): no request reaches orders to be answered 403.
  const closed = /was closed (\d+) ms later;\n {3}a new GET \/v1\/orders\/7 -> refused \(.+\)$/m.exec(out);
  assert.ok(closed, `the live connection closed and new calls refused:\n${out}`);
  // The log: the table the CLI printed, and the ids the callers were shown.
  assert.match(out, new RegExp(`deny +NO_MATCHING_ALLOW +${esc(WEB)} +${esc(ORDERS)} +POST /v1/orders/7`));
  assert.match(out, new RegExp(`allow +ALLOW_RULE +${esc(WEB)} +${esc(ORDERS)} +GET /v1/orders/7 +orders#0`));
  assert.match(out, new RegExp(`ids the callers were shown are there: ${denied} \\(deny NO_MATCHING_ALLOW\\)\\.`));
  // Admission: the webhook denies the privileged pod in PSA's words, admits the restricted one, and records both.
  assert.match(
    out,
    /^ {3}pod web-debug \(privileged, root\) -> denied: violates PodSecurity "restricted:latest": privileged \(container "web" must not set securityContext\.privileged=true\)/m,
  );
  assert.match(out, /^ {3}pod web {7}\(.*\) -> allowed$/m);
  assert.match(out, /^10\. The audit log holds every change above: .*\b1 quarantine\.add\b.*\.$/m);
  assert.match(out, /^ {4}verified \d+ entries of demo\.example\/writ-audit: root \S+ matches the signed checkpoint$/m);
  assert.match(out, /^ {3}Both verdicts are recorded: (web allowed, web-debug denied|web-debug denied, web allowed) \(writ admission events\)\.$/m);
  const took = /^Done in (\d+\.\d) s\. Stopped the agent and both proxies; removed (\S+)\.$/m.exec(out);
  assert.ok(took, out);
  assert.equal(took[2], work);
  assert.ok(Number(took[1]) < LIMIT_S, `the demo took ${took[1]} s by its own clock; the claim is under ${LIMIT_S} s`);
  // Each numbered step, in order, and right after its text (before the next step) the line saying what it proves.
  const steps = [...out.matchAll(/^(\d+)\. /gm)].map((m) => ({ n: Number(m[1]), at: m.index }));
  assert.deepEqual(
    steps.map((x) => x.n),
    Array.from({ length: STEPS }, (_, i) => i + 1),
    `steps 1..${STEPS} in order:\n${out}`,
  );
  const proofs = [...out.matchAll(/^ {3}proves: \S.*$/gm)].map((m) => m.index);
  assert.equal(proofs.length, STEPS, `one "   proves: " line per step:\n${out}`);
  steps.forEach((step, i) => {
    const next = steps[i + 1]?.at ?? out.indexOf('\nDone in ');
    assert.ok(proofs[i]! > step.at && proofs[i]! < next, `step ${step.n} is followed by its "   proves: " line before the next step:\n${out}`);
  });
  t.diagnostic(
    `writ demo as uid ${uid}: ${took[1]} s by its own clock, ${r.seconds.toFixed(1)} s wall; policy change ${applied} ms; quarantine closed the connection in ${closed[1]} ms`,
  );
}

describe('writ demo', () => {
  it('tells the whole story, each claim in its output, exits 0 and leaves nothing running', async (t) => {
    const r = await demo();
    assertStory(t, r, process.getuid!());
    assertNothingLeft(r);
  });

  // Alive at the signal: the demo and its agent (step 2), and both proxies (step 3).
  for (const [signal, how, group, step, stopAt, alive] of [
    ['SIGTERM', 'to the demo alone', false, 3, /^3\. /m, 4],
    ['SIGINT', 'to its process group (Ctrl-C)', true, 2, /^2\. /m, 2],
  ] as const) {
    it(`stopped by ${signal} ${how} half-way (once step ${step} is printed), stops its agent and proxies and removes everything`, async () => {
      const r = await demo({ stopAt, signal, group });
      const output = `stdout:\n${r.stdout}\nstderr:\n${r.stderr}`;
      assert.ok(r.aliveAtSignal.length >= alive, `the demo and its children were running: ${r.aliveAtSignal.join(', ')}\n${output}`);
      assert.equal(r.code, signal === 'SIGINT' ? 130 : 143, output);
      assert.match(r.stderr, new RegExp(`writ demo: ${signal}; stopping what it started`), output);
      assertNothingLeft(r);
    });
  }

  it('runs as an ordinary user (uid 65534), who cannot hard-link the root-owned Node and gets copies', async (t) => {
    if (process.getuid?.() !== 0) return t.skip('needs root to switch to uid 65534; this run is already an ordinary user (the first test covers it)');
    const asNobody = (node: string, writ: string) =>
      run('setpriv', [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', node, writ, '--version']).catch((err: Error) => ({
        code: -1,
        stdout: '',
        stderr: err.message,
      }));
    // Root may run from a checkout uid 65534 cannot read (CI's /root/...): then from a copy it can.
    let [node, writ] = [process.execPath, WRIT];
    let copy: string | undefined;
    const probe = await asNobody(node, writ);
    if (probe.code !== 0) {
      copy = mkdtempSync(join(tmpdir(), 'writ-demo-checkout-'));
      chmodSync(copy, 0o755);
      cpSync(ROOT, copy, { recursive: true, verbatimSymlinks: true, filter: (src) => !src.startsWith(join(ROOT, '.git')) });
      writ = join(copy, 'packages/cli/bin/writ.js');
      // The pinned Node (node_modules/node) lives in the checkout too.
      if (process.execPath.startsWith(ROOT)) node = join(copy, process.execPath.slice(ROOT.length));
      t.diagnostic(`uid ${NOBODY} cannot run writ from ${ROOT} (${probe.stderr.trim().slice(0, 120)}); running from a copy in ${copy}`);
    }
    try {
      const again = copy ? await asNobody(node, writ) : probe;
      // No skip: as root this test can always switch to uid 65534, so a failure here is the demo's to fix.
      assert.equal(again.code, 0, `uid ${NOBODY} cannot run ${node} ${writ} --version: ${again.stderr}`);
      // From the TypeScript sources, where the first test ran the dist/ build that npm ci makes (when it is current).
      const r = await demo({ uid: NOBODY, env: { WRIT_FROM_SOURCE: '1' }, node, writ });
      assertStory(t, r, NOBODY);
      assertNothingLeft(r);
    } finally {
      if (copy) cleanup(copy);
    }
  });
});
