/**
 * docs/admission.md stays true: its ```sh blocks run as written, in order, in one bash, from the
 * repository root with a fresh shell's environment (a temporary HOME, the system PATH).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { it } from 'node:test';
import { ROOT, cleanup, waitFor } from './helpers.ts';

const GUIDE = join(ROOT, 'docs/admission.md');
/** The ports the guide says it uses. */
const PORTS = [7443, 8444];

const shBlocks = (markdown: string): string[] => [...markdown.matchAll(/^```sh\n([\s\S]*?)^```$/gm)].map((m) => m[1]!);

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

const groupAlive = (pgid: number): boolean => {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch {
    return false;
  }
};

it('the admission guide runs as written: a webhook listener, policies, manifests, a denied review over TLS, the events', async () => {
  const blocks = shBlocks(readFileSync(GUIDE, 'utf8'));
  assert.ok(blocks.length >= 6, `found ${blocks.length} sh blocks`);
  for (const p of PORTS) assert.ok(await portFree(p), `port ${p}, which the guide uses, is taken on this machine`);
  const home = mkdtempSync(join(tmpdir(), 'writ-admission-guide-'));
  const script = ['set -e', ...blocks.map((b, i) => `echo '### block ${i + 1}: ${b.split('\n')[0]!.replace(/'/g, '')}' >&2\n${b}`)].join('\n');
  const child = spawn('bash', ['-c', script], {
    cwd: ROOT,
    env: { HOME: home, PATH: '/usr/local/bin:/usr/bin:/bin', LANG: 'C.UTF-8' },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  const pgid = child.pid!;
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  try {
    const code = await new Promise<number | null>((resolve) => {
      const timer = setTimeout(() => process.kill(-pgid, 'SIGKILL'), 180_000);
      child.once('exit', (c) => (clearTimeout(timer), resolve(c)));
    });
    let log = '';
    try {
      log = readFileSync(join(home, 'writ-admission', 'server.log'), 'utf8')
        .split('\n')
        .slice(-15)
        .join('\n');
    } catch {
      /* the guide failed before starting the server */
    }
    assert.equal(code, 0, `the guide failed\nstdout:\n${out}\nstderr:\n${err}\n--- server.log\n${log}`);
    // What the guide says the reader sees.
    assert.match(out, /^revision 1; changed: .*AdmissionPolicy\/prod/m, 'the admission documents were applied');
    assert.match(out, /^2$/m, 'two webhook configurations, each with a caBundle');
    assert.match(out, /^\s+2 \s*failurePolicy: Fail$/m);
    assert.match(out, /^\s+2 \s*timeoutSeconds: 5$/m);
    assert.match(out, /^\s+1 \s*reinvocationPolicy: IfNeeded$/m);
    const answer = JSON.parse(out.split('\n').find((l) => l.startsWith('{"apiVersion":"admission.k8s.io/v1"'))!) as {
      response: { uid: string; allowed: boolean; status: { code: number; reason: string; message: string } };
    };
    assert.equal(answer.response.uid, '5f2b0c1e-7d0a-4c59-9f3e-2d1f00000001');
    assert.equal(answer.response.allowed, false);
    assert.equal(answer.response.status.code, 403);
    assert.equal(answer.response.status.reason, 'Forbidden');
    assert.match(
      answer.response.status.message,
      /^violates PodSecurity "restricted:latest": .*privileged \(container "app" must not set securityContext\.privileged=true\)/,
    );
    assert.match(out, /^TIME\s+VERDICT\s+MODE\s+NAMESPACE\s+OBJECT\s+CONTROLS/m);
    assert.match(out, /denied\s+enforce\s+prod\s+Pod\/debug\s+\S*privileged/);
    await waitFor('the processes the guide started to exit', async () => (groupAlive(pgid) ? undefined : true), 30_000);
  } finally {
    if (groupAlive(pgid)) process.kill(-pgid, 'SIGKILL');
    cleanup(home);
  }
});
