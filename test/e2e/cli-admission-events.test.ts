/**
 * `writ admission events` as a newcomer reads it: a real server process with its admission
 * listener, AdmissionReviews posted over TLS to both hooks as kube-apiserver sends them, and the
 * CLI's table and flags (HOOK column, -n, --since as a duration or an RFC 3339 time, each digest once).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { request } from 'node:https';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { openStore } from '../../packages/server/src/store/open.ts';
import { applyPolicy, cleanup, type ServerProcess, startServerProcess, WRIT, writ } from './helpers.ts';

const DNS = 'writ-admission.writ-system.svc';
const DIGEST = `sha256:${'4'.repeat(64)}`;
const IMAGE = `registry.example.com/team/app@${DIGEST}`;
const dir = mkdtempSync(join(tmpdir(), 'writ-cli-events-'));
let srv: ServerProcess;
let port = 0;
let ca = '';

function post(path: string, body: object): Promise<number> {
  const payload = JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        servername: DNS,
        path,
        method: 'POST',
        ca,
        agent: false,
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
      },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

let uid = 0;
const review = (name: string, privileged: boolean) => {
  const gvk = { group: '', version: 'v1', kind: 'Pod' };
  const gvr = { group: '', version: 'v1', resource: 'pods' };
  return {
    kind: 'AdmissionReview',
    apiVersion: 'admission.k8s.io/v1',
    request: {
      uid: `5a1c2e9b-0d1f-4b7e-8c3a-${String(++uid).padStart(12, '0')}`,
      kind: gvk,
      resource: gvr,
      requestKind: gvk,
      requestResource: gvr,
      name,
      namespace: 'prod',
      operation: 'CREATE',
      userInfo: { username: 'kubernetes-admin', groups: ['system:authenticated'] },
      object: {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name, namespace: 'prod' },
        spec: { containers: [{ name: 'app', image: IMAGE, ...(privileged ? { securityContext: { privileged: true } } : {}) }] },
      },
      oldObject: null,
      dryRun: false,
      options: { kind: 'CreateOptions', apiVersion: 'meta.k8s.io/v1' },
    },
  };
};

before(async () => {
  srv = await startServerProcess({ args: ['--admission-listen', '127.0.0.1:0', '--admission-dns', DNS] });
  const line = srv.logs.map((l) => JSON.parse(l) as { msg?: string; admissionUrl?: string }).find((l) => l.msg === 'writ server listening');
  port = Number(new URL(line?.admissionUrl ?? 'https://x:0').port);
  ca = readFileSync(join(srv.dataDir, 'bundle.pem'), 'utf8');
  await applyPolicy(
    srv,
    dir,
    'apiVersion: writ.dev/v1\nkind: AdmissionPolicy\nmetadata: { name: prod }\nspec:\n  namespaces: [prod]\n  mode: enforce\n  podSecurity: { level: baseline }\n  images: { requireDigest: true }\n',
  );
  // The mutating hook records its denials (an allowed mutation is recorded by the validating hook after it).
  assert.equal(await post('/v1/admission/mutate', review('bad', true)), 200);
  assert.equal(await post('/v1/admission/validate', review('web', false)), 200);
  assert.equal(await post('/v1/admission/validate', review('bad', true)), 200);
});
after(async () => {
  await srv?.stop();
  cleanup(dir);
});

describe('writ admission events', () => {
  it('the table has a HOOK column and prints each digest once; -n is --namespace', async () => {
    const r = await writ(srv, ['admission', 'events', '-n', 'prod']);
    assert.equal(r.code, 0, r.stderr);
    const [head, ...rows] = r.stdout.trimEnd().split('\n');
    assert.match(head!, /^TIME\s+VERDICT\s+MODE\s+NAMESPACE\s+OBJECT\s+HOOK\s+CONTROLS/);
    assert.equal(rows.length, 3, r.stdout);
    assert.ok(
      rows.some((l) => /denied\s+enforce\s+prod\s+Pod\/bad\s+mutate\s+privileged/.test(l)),
      r.stdout,
    );
    assert.ok(
      rows.some((l) => /allowed\s+enforce\s+prod\s+Pod\/web\s+validate\s/.test(l)),
      r.stdout,
    );
    assert.ok(
      rows.some((l) => /denied\s+enforce\s+prod\s+Pod\/bad\s+validate\s+privileged/.test(l)),
      r.stdout,
    );
    for (const l of rows) {
      assert.equal(l.split('@').length, 2, `one digest: ${l}`);
      assert.ok(l.endsWith(`registry.example.com/team/app@${DIGEST.slice(0, 19)}`), l);
    }
    const other = await writ(srv, ['admission', 'events', '-n', 'dev']);
    assert.equal(other.stdout.trimEnd().split('\n').length, 1, other.stdout);
  });

  it('--since takes an RFC 3339 time as well as a duration; a time without a zone is refused', async () => {
    const json = async (since: string) => {
      const r = await writ(srv, ['admission', 'events', '-n', 'prod', '--since', since, '-o', 'json']);
      assert.equal(r.code, 0, r.stderr);
      return (JSON.parse(r.stdout) as Array<{ hook: string }>).length;
    };
    assert.equal(await json(new Date(Date.now() - 3_600_000).toISOString()), 3);
    assert.equal(await json(new Date(Date.now() + 3_600_000).toISOString()), 0);
    assert.equal(await json('10m'), 3);
    const bad = await writ(srv, ['admission', 'events', '--since', '2026-12-01T10:00:00']);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /needs a zone.*\[ERR_FIELD_INVALID\]/);
  });

  it('admission images --digest: a digest never admitted prints "not admitted" and exits 3; one admitted exits 0', async () => {
    const never = await writ(srv, ['admission', 'images', '--digest', `sha256:${'5'.repeat(64)}`]);
    assert.deepEqual([never.code, never.stdout], [3, 'not admitted\n']);
    const json = await writ(srv, ['admission', 'images', '--digest', `sha256:${'5'.repeat(64)}`, '-o', 'json']);
    assert.equal(json.code, 3);
    assert.deepEqual((JSON.parse(json.stdout) as { images: unknown[] }).images, []);
    // This listener has no client CA, so its verdicts admit no image: admit one as another replica would, in the store.
    const store = await openStore({ db: 'sqlite', dataDir: srv.dataDir });
    await store.recordAdmittedImages([DIGEST], Date.now());
    await store.close();
    const admitted = await writ(srv, ['admission', 'images', '--digest', DIGEST]);
    assert.equal(admitted.code, 0, admitted.stderr);
    assert.match(admitted.stdout, new RegExp(`^${DIGEST}\\s+\\d{4}-`, 'm'));
  });

  it('--follow whose reader went away (| head -1) stops by itself, exit 0, no stack trace', async () => {
    const child = spawn(process.execPath, [WRIT, 'admission', 'events', '--follow', '-n', 'prod'], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, WRIT_SERVER: srv.url, WRIT_TOKEN: srv.adminToken, WRIT_CA_FILE: join(srv.dataDir, 'bundle.pem') },
    });
    child.stdout.destroy();
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    const code = await new Promise<number | null>((resolve) => child.on('close', (c) => resolve(c)));
    clearTimeout(timer);
    assert.equal(code, 0, stderr);
    assert.doesNotMatch(stderr, /EPIPE|Unhandled/);
  });

  it('the help names each default once', async () => {
    const r = await writ(undefined, ['admission', 'events', '--help']);
    assert.equal(r.stdout.match(/default:? "?1h/g)?.length, 1, r.stdout);
    assert.match(r.stdout, /-n, --namespace/);
  });
});
