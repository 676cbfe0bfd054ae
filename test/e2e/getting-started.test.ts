/**
 * docs/getting-started.md stays true: its ```sh blocks run as written, in order, in one bash,
 * from the repository root with a fresh shell's environment (a temporary HOME, the system PATH).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { it } from 'node:test';
import { ROOT, cleanup, waitFor } from './helpers.ts';

const GUIDE = join(ROOT, 'docs/getting-started.md');
/** The ports the guide says it uses. */
const PORTS = [8443, 8080, 9443, 9000];

function shBlocks(markdown: string): string[] {
  return [...markdown.matchAll(/^```sh\n([\s\S]*?)^```$/gm)].map((m) => m[1]!);
}

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

it('the getting-started guide runs as written: an allowed and a denied call, a policy, a quarantine, and nothing left running', async () => {
  const blocks = shBlocks(readFileSync(GUIDE, 'utf8'));
  assert.ok(blocks.length >= 8, `found ${blocks.length} sh blocks`);
  for (const p of PORTS) assert.ok(await portFree(p), `port ${p}, which the guide uses, is taken on this machine`);
  const home = mkdtempSync(join(tmpdir(), 'writ-guide-'));
  // Each block announces itself on stderr, so a failure names the block it is in.
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
      const timer = setTimeout(() => process.kill(-pgid, 'SIGKILL'), 240_000);
      child.once('exit', (c) => (clearTimeout(timer), resolve(c)));
    });
    const tour = join(home, 'writ-tour');
    const logs = ['server.log', 'agent.log', 'orders-proxy.log', 'web-proxy.log']
      .map((f) => {
        try {
          return `--- ${f}\n${readFileSync(join(tour, f), 'utf8').split('\n').slice(-15).join('\n')}`;
        } catch {
          return '';
        }
      })
      .join('\n');
    assert.equal(code, 0, `the guide failed\nstdout:\n${out}\nstderr:\n${err}\n${logs}`);
    // What the guide says the reader sees.
    assert.match(out, /my-svid\/svid\.pem: OK/);
    assert.match(out, /^\{"code":"NO_POLICY_LOADED","decisionId":"[^"]+"\}$/m, 'the call before any policy is a 403 with its decision id');
    assert.match(out, /^\{"code":"NO_MATCHING_ALLOW","decisionId":"[^"]+"\}$/m, 'the DELETE the policy does not allow');
    assert.match(out, /orders: GET \/v1\/orders\/7 from spiffe:\/\/example\.org\/ns\/web\/sa\/frontend/);
    assert.match(out, /2 passed, 0 failed/);
    assert.match(out, /^revision 1; changed: orders-api; tests 2 passed, 0 failed$/m, 'policy apply ran the PolicyTest cases in orders.yaml');
    assert.match(err, /### block 7[^#]*acknowledged by all 1 live agent\(s\) in [\d.]+s\n/, 'policy apply --wait returned once the agent enforced revision 1');
    assert.match(out, /^exit \d+: refused$/m, 'the quarantined caller is cut off once quarantine add --wait returns');
    assert.match(err, /lifted the quarantine of spiffe:\/\/example\.org\/ns\/web\/sa\/frontend\n(?:waiting for .*\n)?acknowledged by all 1 live agent/);
    assert.match(out, /^DENY \(NO_MATCHING_ALLOW\) at policy revision 1$/m);
    assert.match(out, /exit 3: denied/);
    assert.match(out, /spiffe:\/\/example\.org\/ns\/web\/sa\/frontend.*stolen token/, 'quarantine list');
    // The guide's own clean-up step stops everything it started.
    await waitFor('the processes the guide started to exit', async () => (groupAlive(pgid) ? undefined : true), 30_000);
  } finally {
    if (groupAlive(pgid)) process.kill(-pgid, 'SIGKILL');
    cleanup(home);
  }
});
