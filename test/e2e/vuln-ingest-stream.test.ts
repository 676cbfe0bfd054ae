/**
 * `writ vuln ingest` streaming, as a user runs it against a real server process: a report of
 * several hundred MB piped in (generated as it is sent, never held in memory) is refused with 413
 * once the server has counted past its --report-limit, the CLI stops sending, nothing is stored and
 * the server keeps serving; several files at once, each its own report; progress on stderr; a
 * document that is not JSON refused naming where it breaks.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ROOT, WRIT, cleanup, type ServerProcess, startServerProcess, writ } from './helpers.ts';

const TESTDATA = join(ROOT, 'packages/vuln/src/testdata');
const dir = mkdtempSync(join(tmpdir(), 'writ-ingest-stream-'));
const MiB = 1024 * 1024;
let srv: ServerProcess;

before(async () => {
  srv = await startServerProcess();
});
after(async () => {
  await srv?.stop();
  cleanup(dir);
});

function get(path: string): Promise<{ status: number; json: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = request(
      new URL(path, srv.url),
      {
        ca: readFileSync(join(srv.dataDir, 'bundle.pem'), 'utf8'),
        headers: { authorization: `Bearer ${srv.adminToken}` },
        checkServerIdentity: () => undefined,
      },
      (res) => {
        let text = '';
        res.on('data', (d: Buffer) => (text += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, json: JSON.parse(text) as Record<string, unknown> }));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

/** A Trivy report of one image with `packages` packages, as its parts (the head, one package, the tail). */
function trivyParts(digest: string, createdAt: string): { head: string; pkg: (i: number) => string; tail: string } {
  const head = `{"SchemaVersion": 2, "CreatedAt": "${createdAt}", "ArtifactName": "registry.example.com/big/app:1", "ArtifactType": "container_image",
  "Metadata": {"RepoDigests": ["registry.example.com/big/app@${digest}"], "DiffIDs": ["sha256:${'b1'.repeat(32)}"]},
  "Results": [{"Target": "big", "Class": "lang-pkgs", "Type": "npm", "Packages": [`;
  const pkg = (i: number): string =>
    `${i ? ',' : ''}{"ID": "pkg-${i}@1.0.${i}", "Name": "pkg-${i}", "Version": "1.0.${i}", "Identifier": {"PURL": "pkg:npm/pkg-${i}@1.0.${i}"}, "Layer": {"DiffID": "sha256:${'b1'.repeat(32)}"}}\n`;
  return { head, pkg, tail: ']}]}\n' };
}

function writeTrivy(file: string, digest: string, packages: number, createdAt = '2026-12-01T10:00:00Z'): void {
  const { head, pkg, tail } = trivyParts(digest, createdAt);
  const body: string[] = [head];
  for (let i = 0; i < packages; i++) body.push(pkg(i));
  body.push(tail);
  writeFileSync(file, body.join(''));
}

describe('writ vuln ingest, streaming', () => {
  it('a report of 300 MB piped in is refused with 413 once past the limit: the CLI stops sending, nothing is stored, the server keeps serving', async (t) => {
    const digest = `sha256:${'b9'.repeat(32)}`;
    const { head, pkg } = trivyParts(digest, '2026-12-01T11:00:00Z');
    const TOTAL = 300 * MiB;
    const env: NodeJS.ProcessEnv = { ...process.env, WRIT_SERVER: srv.url, WRIT_TOKEN: srv.adminToken, WRIT_CA_FILE: join(srv.dataDir, 'bundle.pem') };
    delete env['NODE_TEST_CONTEXT'];
    const child = spawn(process.execPath, [WRIT, 'vuln', 'ingest', '-f', '-'], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
    // Generated as it goes into the pipe, 1 MiB at a time, until the CLI stops reading (it exits).
    let written = 0;
    let closed = false;
    child.stdin.on('error', () => (closed = true));
    child.stdin.on('close', () => (closed = true));
    const block = (() => {
      const parts: string[] = [];
      let n = 0;
      for (let i = 1; n < MiB; i++) {
        const p = pkg(i);
        parts.push(p);
        n += p.length;
      }
      return Buffer.from(parts.join(''));
    })();
    const pump = (async () => {
      const write = (b: Buffer): Promise<void> =>
        new Promise((resolve) => {
          if (closed) return resolve();
          written += b.length;
          if (child.stdin.write(b)) resolve();
          else {
            const done = (): void => (child.stdin.off('drain', done), child.stdin.off('close', done), resolve());
            child.stdin.once('drain', done);
            child.stdin.once('close', done);
          }
        });
      await write(Buffer.from(head));
      while (!closed && written < TOTAL) await write(block);
      if (!closed) child.stdin.end(']}]}');
    })();
    const code = await exited;
    await pump;
    assert.equal(code, 1, `stdout: ${stdout}\nstderr: ${stderr}`);
    assert.match(stderr, /request body larger than 67108864 bytes \[ERR_BODY_TOO_LARGE\]/);
    assert.equal(stdout, '');
    t.diagnostic(`the CLI read ${Math.round(written / MiB)} MiB of the 300 MiB piped in before it was refused`);
    assert.ok(written < 200 * MiB, `the CLI stopped reading when refused (it took ${Math.round(written / MiB)} MiB of the 300)`);
    const img = await get(`/v1/images/${encodeURIComponent(digest)}`);
    assert.equal(img.status, 404, 'nothing of the refused report was stored');
    // Still serving: a report right after is stored.
    const ok = await writ(srv, ['vuln', 'ingest', '-f', join(TESTDATA, 'trivy-image.json')]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /^report\s+\S+ (created|already stored)$/m);
  });

  it('several files at once: each its own report, every outcome printed, exit 1 when any is refused', async () => {
    const good = join(dir, 'good.json');
    const bad = join(dir, 'bad.json');
    writeTrivy(good, `sha256:${'c1'.repeat(32)}`, 3);
    writeFileSync(bad, readFileSync(good, 'utf8').replace('"Name": "pkg-1"', '"Name": "pkg-1" "Version"'));
    const r = await writ(srv, ['vuln', 'ingest', '-f', good, '-f', bad, '-f', join(TESTDATA, 'grype-image.json')]);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    const blocks = r.stdout.trim().split('\n\n');
    assert.equal(blocks.length, 2, r.stdout);
    assert.match(blocks[0]!, new RegExp(`^file\\s+${good}\\nimage\\s+sha256:(c1){32}\\n[^]*packages\\s+3\\n`));
    assert.match(blocks[1]!, /^file\s+.*grype-image\.json\nimage\s+sha256:(9e){32}/);
    assert.match(
      r.stderr,
      new RegExp(
        `^writ: ${bad}: request body is not JSON at Results\\[0\\]\\.Packages\\[1\\]\\.Name \\(line 4, column \\d+\\): .*\\(at Results\\[0\\]\\.Packages\\[1\\]\\.Name\\) \\[ERR_JSON_INVALID\\]$`,
        'm',
      ),
    );
    const json = await writ(srv, ['vuln', 'ingest', '-f', good, '-f', bad, '-o', 'json']);
    assert.equal(json.code, 1);
    const items = JSON.parse(json.stdout) as Array<{ file: string; created?: boolean; error?: { code: string; field?: string } }>;
    assert.deepEqual(
      items.map((i) => [i.file, i.created ?? null, i.error?.code ?? null, i.error?.field ?? null]),
      [
        [good, false, null, null],
        [bad, null, 'ERR_JSON_INVALID', 'Results[0].Packages[1].Name'],
      ],
      'the good file was stored by the first run: a repeat now',
    );
    const all = await writ(srv, ['vuln', 'ingest', '-f', good, '-f', join(TESTDATA, 'grype-image.json')]);
    assert.equal(all.code, 0, all.stderr);
  });

  it('--progress shows bytes sent of the total and the percentage on stderr, then the outcome', async () => {
    const big = join(dir, 'big.json');
    writeTrivy(big, `sha256:${'d1'.repeat(32)}`, 40_000);
    const size = readFileSync(big).length;
    assert.ok(size > 5 * MiB, `${size} bytes`);
    const r = await writ(srv, ['vuln', 'ingest', '-f', big, '--progress']);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stderr.trim().split('\n');
    const total = `${(size / MiB).toFixed(1)} MiB`;
    assert.ok(lines.length >= 5, r.stderr);
    for (const l of lines) assert.match(l, new RegExp(`^${big}: sent \\d+\\.\\d MiB of ${total} \\(\\d{1,3}%\\)$`));
    assert.equal(lines.at(-1), `${big}: sent ${total} of ${total} (100%)`);
    assert.match(r.stdout, /^packages\s+40000$/m);
    const quiet = await writ(srv, ['vuln', 'ingest', '-f', big]);
    assert.equal(quiet.stderr, '', 'no progress when stderr is not a terminal and --progress is not given');
  });
});

describe('--report-limit', () => {
  it('a server started with a smaller limit refuses a report over it (413), and says so', async () => {
    const small = await startServerProcess({ args: ['--report-limit', '1MiB'] });
    try {
      const file = join(dir, 'two-mib.json');
      writeTrivy(file, `sha256:${'e1'.repeat(32)}`, 12_000);
      assert.ok(readFileSync(file).length > 1.5 * MiB);
      const r = await writ(small, ['vuln', 'ingest', '-f', file]);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /request body larger than 1048576 bytes \[ERR_BODY_TOO_LARGE\]/);
      const under = await writ(small, ['vuln', 'ingest', '-f', join(TESTDATA, 'trivy-image.json')]);
      assert.equal(under.code, 0, under.stderr);
    } finally {
      await small.stop();
    }
    const bad = await writ(undefined, ['server', 'start', '--data-dir', join(dir, 'x'), '--trust-domain', 'e2e.test', '--report-limit', '1GiB']);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /reportLimit: 1GiB is outside 1024 bytes \.\. 256MiB/);
  });
});
