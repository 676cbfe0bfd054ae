/**
 * `writ ... | head -1`: the reader of stdout goes away before writ is done. Every command exits
 * quietly (no EPIPE stack trace) with the exit code it would have had. Real child processes whose
 * stdout pipe is closed before they write.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { cleanup, WRIT } from './helpers.ts';

const dir = mkdtempSync(join(tmpdir(), 'writ-epipe-'));
after(() => cleanup(dir));

/** Runs writ with the read end of its stdout closed at once (what `| head -0` does), collecting stderr. */
function writClosedStdout(args: readonly string[]): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [WRIT, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.destroy();
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.on('error', reject);
    child.on('close', (code) => (clearTimeout(timer), resolve({ code, stderr })));
  });
}

const POD = (i: number) => `apiVersion: v1
kind: Pod
metadata: { name: p${i}, namespace: prod }
spec:
  containers: [{ name: app, image: nginx, securityContext: { privileged: true } }]
`;

describe('stdout closed by its reader (EPIPE)', () => {
  it('admission check of many denied pods: exit 3 as without the pipe, the summary on stderr, no stack trace', async () => {
    const f = join(dir, 'many.yaml');
    writeFileSync(f, Array.from({ length: 500 }, (_, i) => POD(i)).join('---\n'));
    const r = await writClosedStdout(['admission', 'check', '-f', f, '--pss', 'restricted']);
    assert.equal(r.code, 3, r.stderr);
    assert.doesNotMatch(r.stderr, /EPIPE|Unhandled|node:events/);
    assert.match(r.stderr, /500 of 500 objects denied/);
  });

  it('admission manifests and --help: exit 0, nothing on stderr', async () => {
    const ca = join(dir, 'ca.pem');
    writeFileSync(ca, '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n');
    const m = await writClosedStdout(['admission', 'manifests', '--ca-file', ca]);
    assert.deepEqual([m.code, m.stderr], [0, '']);
    const h = await writClosedStdout(['admission', 'check', '--help']);
    assert.deepEqual([h.code, h.stderr], [0, '']);
  });

  it('a usage error keeps exit 2 and its message', async () => {
    const r = await writClosedStdout(['admission', 'check', '-f', join(dir, 'many.yaml')]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /give --pss/);
    assert.doesNotMatch(r.stderr, /EPIPE/);
  });
});
