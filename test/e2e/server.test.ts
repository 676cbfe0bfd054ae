/**
 * The server as a real child process, driven by clients no one here wrote: curl, openssl, PyJWT,
 * and by the writ CLI. SQLite (the default) here; Postgres in postgres.test.ts.
 */
import assert from 'node:assert/strict';
import { statSync, readFileSync, writeFileSync, mkdirSync, mkdtempSync } from 'node:fs';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { spawn } from 'node:child_process';
import { DEBIAN_PYTHON, ROOT, cleanup, run, startServerProcess, waitFor, writ, type ServerProcess } from './helpers.ts';

let srv: ServerProcess;
let work: string;

interface Res {
  status: number;
  body: Record<string, unknown>;
  text: string;
  headers: Record<string, string | string[] | undefined>;
}

/** A raw HTTPS call (for input curl cannot shape, such as a lying Content-Length). */
function call(method: string, path: string, opts: { body?: string | Buffer; token?: string | null; type?: string } = {}): Promise<Res> {
  return new Promise((resolve, reject) => {
    const token = opts.token === undefined ? srv.adminToken : opts.token;
    const req = request(
      `${srv.url}${path}`,
      {
        method,
        ca: readFileSync(join(srv.dataDir, 'bundle.pem')),
        headers: {
          ...(token ? { authorization: `Bearer ${token}` } : {}),
          ...(opts.body !== undefined ? { 'content-type': opts.type ?? 'application/json' } : {}),
        },
      },
      (res) => {
        let text = '';
        res.on('data', (d: Buffer) => (text += d.toString()));
        res.on('end', () => {
          let body: Record<string, unknown> = {};
          try {
            body = text ? JSON.parse(text) : {};
          } catch {
            /* text endpoints */
          }
          resolve({ status: res.statusCode!, body, text, headers: res.headers });
        });
      },
    );
    req.on('error', reject);
    if (opts.body !== undefined) req.write(opts.body);
    req.end();
  });
}

const curl = (args: string[]) => run('curl', ['-sS', '--cacert', join(srv.dataDir, 'bundle.pem'), ...args]);

before(async () => {
  work = mkdtempSync(join(tmpdir(), 'writ-e2e-work-'));
  srv = await startServerProcess({ args: ['--x509-svid-ttl', '2h'] });
});
after(async () => {
  await srv.stop();
  cleanup(srv.dataDir);
  cleanup(work);
});

describe('first start', () => {
  it('writes bundle.pem and a 0600 admin.token, and logs JSON lines that say where they are without the token', () => {
    assert.match(readFileSync(join(srv.dataDir, 'bundle.pem'), 'utf8'), /^-----BEGIN CERTIFICATE-----/);
    assert.equal(statSync(join(srv.dataDir, 'admin.token')).mode & 0o777, 0o600);
    for (const line of srv.logs) JSON.parse(line);
    const start = srv.logs.map((l) => JSON.parse(l)).find((l) => l.msg === 'writ server listening');
    assert.equal(start.bundle, join(srv.dataDir, 'bundle.pem'));
    assert.equal(start.adminToken, join(srv.dataDir, 'admin.token'));
    assert.ok(!srv.logs.join('\n').includes(srv.adminToken), 'the token never reaches the log');
    for (const f of statSync(join(srv.dataDir, 'keys')).isDirectory() ? ['keys'] : []) assert.equal(statSync(join(srv.dataDir, f)).mode & 0o077, 0);
  });

  it("serves HTTPS with its own CA's certificate for spiffe://TD/writ/server (openssl s_client verifies it)", async () => {
    const r = await run(
      'openssl',
      [
        's_client',
        '-connect',
        `127.0.0.1:${srv.port}`,
        '-CAfile',
        join(srv.dataDir, 'bundle.pem'),
        '-verify_return_error',
        '-verify_ip',
        '127.0.0.1',
        '-showcerts',
      ],
      { input: '' },
    );
    assert.match(r.stdout, /Verify return code: 0 \(ok\)/);
    const leaf = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(r.stdout)![0];
    const text = await run('openssl', ['x509', '-noout', '-ext', 'subjectAltName'], { input: leaf });
    assert.match(text.stdout, /URI:spiffe:\/\/e2e\.test\/writ\/server/);
    assert.match(text.stdout, /IP Address:127\.0\.0\.1/);
  });
});

describe('curl drives the admin API with the bundle as CA and the admin token', () => {
  it('creates, lists, fetches, patches and deletes an entry; roles are enforced', async () => {
    const auth = ['-H', `Authorization: Bearer ${srv.adminToken}`];
    const created = await curl([
      ...auth,
      '-H',
      'content-type: application/json',
      '-d',
      JSON.stringify({ spiffeId: 'spiffe://e2e.test/web', parentId: 'spiffe://e2e.test/writ/agent/n1', selectors: ['unix:uid:1000'] }),
      '-w',
      '\n%{http_code}',
      `${srv.url}/v1/entries`,
    ]);
    const lines = created.stdout.trim().split('\n');
    const code = lines.pop();
    const body = lines.join('\n');
    assert.equal(code, '201', created.stderr + created.stdout);
    const entry = JSON.parse(body);
    assert.equal(entry.spiffeId, 'spiffe://e2e.test/web');
    const list = JSON.parse((await curl([...auth, `${srv.url}/v1/entries?parentId=spiffe://e2e.test/writ/agent/n1`])).stdout);
    assert.deepEqual(
      list.entries.map((e: { id: string }) => e.id),
      [entry.id],
    );
    const patched = JSON.parse(
      (
        await curl([
          ...auth,
          '-X',
          'PATCH',
          '-H',
          'content-type: application/json',
          '-d',
          '{"hint":"frontend","x509SvidTtl":"30m"}',
          `${srv.url}/v1/entries/${entry.id}`,
        ])
      ).stdout,
    );
    assert.equal(patched.hint, 'frontend');
    assert.equal(patched.x509SvidTtl, 1800);
    assert.deepEqual(patched.selectors, ['unix:uid:1000']);

    const noToken = await curl(['-o', '/dev/null', '-w', '%{http_code}', `${srv.url}/v1/entries`]);
    assert.equal(noToken.stdout, '401');
    const viewer = JSON.parse(
      (await curl([...auth, '-H', 'content-type: application/json', '-d', '{"role":"viewer","name":"dash"}', `${srv.url}/v1/admin-tokens`])).stdout,
    );
    const asViewer = ['-H', `Authorization: Bearer ${viewer.token}`];
    assert.equal((await curl([...asViewer, '-o', '/dev/null', '-w', '%{http_code}', `${srv.url}/v1/entries`])).stdout, '200');
    const denied = await curl([...asViewer, '-X', 'DELETE', '-w', '\n%{http_code}', `${srv.url}/v1/entries/${entry.id}`]);
    assert.match(denied.stdout, /ERR_FORBIDDEN[\s\S]*\n403$/);
    const op = JSON.parse((await curl([...auth, '-H', 'content-type: application/json', '-d', '{"role":"operator"}', `${srv.url}/v1/admin-tokens`])).stdout);
    assert.equal(
      (
        await curl([
          '-H',
          `Authorization: Bearer ${op.token}`,
          '-X',
          'POST',
          '-H',
          'content-type: application/json',
          '-d',
          '{"role":"admin"}',
          '-o',
          '/dev/null',
          '-w',
          '%{http_code}',
          `${srv.url}/v1/admin-tokens`,
        ])
      ).stdout,
      '403',
      'an operator cannot mint admin tokens',
    );
    assert.equal(
      (await curl(['-H', `Authorization: Bearer ${op.token}`, '-X', 'DELETE', '-o', '/dev/null', '-w', '%{http_code}', `${srv.url}/v1/entries/${entry.id}`]))
        .stdout,
      '204',
    );
    assert.equal((await curl([...auth, '-o', '/dev/null', '-w', '%{http_code}', `${srv.url}/v1/entries/${entry.id}`])).stdout, '404');
  });

  it('serves the bundle, OIDC discovery, JWKS, health, metrics and the OpenAPI document without a token', async () => {
    const bundle = JSON.parse((await curl([`${srv.url}/v1/bundle`])).stdout);
    assert.ok(bundle.keys.some((k: { use: string }) => k.use === 'x509-svid') && bundle.keys.some((k: { use: string }) => k.use === 'jwt-svid'));
    assert.equal(typeof bundle.spiffe_sequence, 'number');
    const disco = JSON.parse((await curl([`${srv.url}/.well-known/openid-configuration`])).stdout);
    assert.equal(disco.jwks_uri, `${srv.url}/keys`);
    const jwks = JSON.parse((await curl([disco.jwks_uri])).stdout);
    assert.ok(jwks.keys.every((k: { kid: string; alg: string }) => k.kid && k.alg === 'ES256'));
    assert.equal((await curl([`${srv.url}/livez`])).stdout.trim(), '{"status":"ok"}');
    assert.equal((await curl([`${srv.url}/readyz`])).stdout.trim(), '{"status":"ok"}');
    const metrics = (await curl([`${srv.url}/metrics`])).stdout;
    assert.match(metrics, /^# TYPE writ_http_requests_total counter$/m);
    assert.match(metrics, /writ_http_requests_total\{method="POST",route="\/v1\/entries",status="201"\} \d+/);
    const openapi = JSON.parse((await curl([`${srv.url}/v1/openapi.json`])).stdout);
    assert.equal(openapi.openapi, '3.1.0');
    assert.ok(openapi.paths['/v1/entries/{id}'].patch);
  });
});

describe('minted SVIDs work with openssl, curl and PyJWT', () => {
  it('openssl verify accepts a minted X.509-SVID against bundle.pem, and x509 -text shows exactly the SVID extensions', async () => {
    const out = join(work, 'svid1');
    const r = await writ(srv, ['svid', 'mint-x509', '--spiffe-id', 'spiffe://e2e.test/ns/web', '--out', out]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(statSync(join(out, 'svid.key')).mode & 0o777, 0o600);
    assert.match(readFileSync(join(out, 'svid.key'), 'utf8'), /^-----BEGIN PRIVATE KEY-----/, 'PKCS#8');
    const v = await run('openssl', ['verify', '-CAfile', join(srv.dataDir, 'bundle.pem'), join(out, 'svid.pem')]);
    assert.equal(v.stdout.trim(), `${join(out, 'svid.pem')}: OK`, v.stderr);
    for (const purpose of ['sslclient', 'sslserver']) {
      const p = await run('openssl', ['verify', '-purpose', purpose, '-CAfile', join(srv.dataDir, 'bundle.pem'), join(out, 'svid.pem')]);
      assert.match(p.stdout, /: OK/, `${purpose}: ${p.stderr}`);
    }
    const text = (await run('openssl', ['x509', '-in', join(out, 'svid.pem'), '-noout', '-text'])).stdout;
    assert.match(text, /X509v3 Basic Constraints: critical\n\s+CA:FALSE/);
    assert.match(text, /X509v3 Key Usage: critical\n\s+Digital Signature, Key Encipherment, Key Agreement\n/);
    assert.match(text, /X509v3 Extended Key Usage: \n\s+TLS Web Server Authentication, TLS Web Client Authentication\n/);
    assert.match(text, /X509v3 Subject Alternative Name: \n\s+URI:spiffe:\/\/e2e\.test\/ns\/web\n/);
    const exts = [...text.matchAll(/^\s+(X509v3 [^:]+):/gm)]
      .map((m) => m[1])
      .filter((n) => n !== 'X509v3 extensions')
      .sort();
    assert.deepEqual(exts, [
      'X509v3 Authority Key Identifier',
      'X509v3 Basic Constraints',
      'X509v3 Extended Key Usage',
      'X509v3 Key Usage',
      'X509v3 Subject Alternative Name',
      'X509v3 Subject Key Identifier',
    ]);
    const nb = Date.parse(/Not Before: (.+)/.exec(text)![1]!);
    const na = Date.parse(/Not After : (.+)/.exec(text)![1]!);
    assert.ok(Math.abs(na - nb - (2 * 3600_000 + 10_000)) <= 2000, 'server TTL (2h) plus the 10 s backdate');
  });

  it('curl with one SVID completes mutual TLS with openssl s_server using another', async () => {
    const s = join(work, 'tls-server');
    const c = join(work, 'tls-client');
    assert.equal((await writ(srv, ['svid', 'mint-x509', '--spiffe-id', 'spiffe://e2e.test/ns/db', '--dns-name', 'localhost', '--out', s])).code, 0);
    assert.equal((await writ(srv, ['svid', 'mint-x509', '--spiffe-id', 'spiffe://e2e.test/ns/api', '--out', c])).code, 0);
    // Port 0, read back from its ACCEPT line: a port picked free beforehand may be taken by then.
    const server = spawn(
      'openssl',
      [
        's_server',
        '-accept',
        '0',
        '-cert',
        join(s, 'svid.pem'),
        '-key',
        join(s, 'svid.key'),
        '-CAfile',
        join(s, 'bundle.pem'),
        '-Verify',
        '2',
        '-verify_return_error',
        '-www',
      ],
      { stdio: ['pipe', 'pipe', 'pipe'] },
    );
    let out = '';
    server.stdout.on('data', (d: Buffer) => (out += d.toString()));
    try {
      const port = await waitFor('s_server to listen', async () => /^ACCEPT .*:(\d+)$/m.exec(out)?.[1]);
      const ok = await run('curl', [
        '-sS',
        '--cacert',
        join(c, 'bundle.pem'),
        '--cert',
        join(c, 'svid.pem'),
        '--key',
        join(c, 'svid.key'),
        `https://localhost:${port}/`,
      ]);
      assert.equal(ok.code, 0, ok.stderr);
      assert.match(ok.stdout, /Client certificate[\s\S]*BEGIN CERTIFICATE/i);
      const without = await run('curl', ['-sS', '--cacert', join(c, 'bundle.pem'), `https://localhost:${port}/`]);
      assert.notEqual(without.code, 0, 'no client SVID, no handshake');
    } finally {
      server.kill();
    }
  });

  it('PyJWT verifies a minted JWT-SVID starting from nothing but the OIDC discovery URL', async () => {
    const tok = await writ(srv, ['svid', 'mint-jwt', '--spiffe-id', 'spiffe://e2e.test/ns/web', '--audience', 'spiffe://e2e.test/ns/db']);
    assert.equal(tok.code, 0, tok.stderr);
    const script = `
import json, sys, urllib.request, jwt
disco_url, token, aud = sys.argv[1], sys.argv[2], sys.argv[3]
disco = json.load(urllib.request.urlopen(disco_url))
key = jwt.PyJWKClient(disco["jwks_uri"]).get_signing_key_from_jwt(token)
try:
    claims = jwt.decode(token, key.key, algorithms=disco["id_token_signing_alg_values_supported"], audience=aud, issuer=disco["issuer"])
    print("OK", claims["sub"])
except jwt.InvalidTokenError as e:
    print("REJECTED", type(e).__name__)
`;
    const env = { SSL_CERT_FILE: join(srv.dataDir, 'bundle.pem') };
    const disco = `${srv.url}/.well-known/openid-configuration`;
    const good = await run(DEBIAN_PYTHON, ['-c', script, disco, tok.stdout.trim(), 'spiffe://e2e.test/ns/db'], { env });
    assert.equal(good.stdout.trim(), 'OK spiffe://e2e.test/ns/web', good.stderr);
    const wrongAud = await run(DEBIAN_PYTHON, ['-c', script, disco, tok.stdout.trim(), 'spiffe://e2e.test/ns/other'], { env });
    assert.equal(wrongAud.stdout.trim(), 'REJECTED InvalidAudienceError', wrongAud.stderr);
  });
});

describe('the writ CLI', () => {
  it('manages entries with table, json and yaml output and the documented exit codes', async () => {
    const c = await writ(srv, [
      'entry',
      'create',
      '--spiffe-id',
      'spiffe://e2e.test/cli',
      '--parent-id',
      'spiffe://e2e.test/writ/agent/n2',
      '--selector',
      'k8s:ns:shop',
      '--selector',
      'k8s:sa:web',
      '--dns-name',
      'web.shop',
      '--federates-with',
      'partner.example',
      '-o',
      'json',
    ]);
    assert.equal(c.code, 0, c.stderr);
    const e = JSON.parse(c.stdout);
    assert.deepEqual(e.selectors, ['k8s:ns:shop', 'k8s:sa:web']);
    assert.deepEqual(e.federatesWith, ['partner.example']);
    const table = await writ(srv, ['entry', 'list', '--parent-id', 'spiffe://e2e.test/writ/agent/n2']);
    assert.match(table.stdout, /^ID\s+SPIFFE ID\s+PARENT ID\s+SELECTORS\n/);
    assert.match(table.stdout, new RegExp(`${e.id}\\s+spiffe://e2e.test/cli\\s+`));
    const yaml = await writ(srv, ['entry', 'show', e.id, '-o', 'yaml']);
    assert.match(yaml.stdout, /^spiffeId: spiffe:\/\/e2e.test\/cli$/m);
    const upd = await writ(srv, ['entry', 'update', e.id, '--selector', 'k8s:ns:shop', '-o', 'json']);
    assert.deepEqual(JSON.parse(upd.stdout).selectors, ['k8s:ns:shop']);
    const bySel = JSON.parse((await writ(srv, ['entry', 'list', '--selector', 'k8s:ns:shop', '-o', 'json'])).stdout);
    assert.ok(bySel.some((x: { id: string }) => x.id === e.id));
    assert.equal((await writ(srv, ['entry', 'delete', e.id])).code, 0);
    const gone = await writ(srv, ['entry', 'show', e.id]);
    assert.equal(gone.code, 1);
    assert.match(gone.stderr, /ERR_ENTRY_NOT_FOUND/);
    assert.equal((await writ(srv, ['entry', 'frobnicate'])).code, 2, 'usage error');
    assert.equal((await writ(srv, ['entry', 'create', '--spiffe-id', 'x', '-o', 'xml'])).code, 2, 'bad -o is a usage error');
    const bad = await writ(srv, ['entry', 'create', '--spiffe-id', 'spiffe://e2e.test/x', '--parent-id', 'spiffe://E2E.test/y', '--selector', 'a:b']);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /parentId.*ERR_SPIFFE_ID_INVALID/);
  });

  it('creates many entries from a file, all or none', async () => {
    const f = join(work, 'entries.yaml');
    writeFileSync(
      f,
      Array.from(
        { length: 50 },
        (_, i) => `- spiffeId: spiffe://e2e.test/batch/${i}\n  parentId: spiffe://e2e.test/writ/agent/b\n  selectors: [unix:uid:${i}]\n`,
      ).join(''),
    );
    const r = await writ(srv, ['entry', 'create', '-f', f, '-o', 'json']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).length, 50);
    const again = await writ(srv, ['entry', 'create', '-f', f]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /ERR_ENTRY_EXISTS/);
  });

  it('join tokens, admin tokens, bundles and federation', async () => {
    const jt = await writ(srv, ['token', 'create', '--node-name', 'node-7', '--ttl', '10m', '-o', 'json']);
    assert.equal(jt.code, 0, jt.stderr);
    const { token, spiffeId } = JSON.parse(jt.stdout);
    assert.match(token, /^wjt_[A-Za-z0-9_-]{32}$/);
    assert.equal(spiffeId, 'spiffe://e2e.test/writ/agent/node-7');
    assert.ok(!srv.logs.join('\n').includes(token), 'join tokens never reach the log');
    const at = await writ(srv, ['admin-token', 'create', '--role', 'viewer', '--name', 'ci']);
    assert.match(at.stdout.trim(), /^writ_[A-Za-z0-9_-]{43}$/);
    const viewerList = await writ(srv, ['entry', 'list'], { token: at.stdout.trim() });
    assert.equal(viewerList.code, 0);
    const pem = await writ(srv, ['bundle', 'show', '--format', 'pem']);
    assert.equal(pem.stdout, readFileSync(join(srv.dataDir, 'bundle.pem'), 'utf8'));
    const spiffe = JSON.parse((await writ(srv, ['bundle', 'show'])).stdout);
    assert.ok(Array.isArray(spiffe.keys));
    // Static federation: another trust domain's bundle (here: this server's own, filed under a foreign name).
    const f = join(work, 'partner.json');
    writeFileSync(f, JSON.stringify(spiffe));
    assert.equal((await writ(srv, ['bundle', 'set', '--trust-domain', 'partner.example', '-f', f])).code, 0);
    const list = await writ(srv, ['bundle', 'list']);
    assert.match(list.stdout, /partner\.example\s+\d+/);
    assert.equal((await writ(srv, ['bundle', 'delete', 'partner.example'])).code, 0);
    const none = await writ(srv, ['bundle', 'delete', 'partner.example']);
    assert.equal(none.code, 1);
    assert.match(none.stderr, /ERR_BUNDLE_NOT_FOUND/);
    const noToken = await writ(srv, ['entry', 'list'], { token: '' });
    assert.equal(noToken.code, 1);
    assert.match(noToken.stderr, /WRIT_TOKEN/);
  });

  it('prints a shell completion script that bash accepts', async () => {
    const r = await writ(undefined, ['completion', 'bash']);
    assert.equal(r.code, 0);
    const check = await run('bash', ['-c', `${r.stdout}\nCOMP_WORDS=(writ entry cr); COMP_CWORD=2; _writ; echo "\${COMPREPLY[@]}"`]);
    assert.equal(check.stdout.trim(), 'create');
  });
});

describe('node attestation with a join token', () => {
  it('a join token is redeemed once for an agent SVID; reuse and expiry are refused with 401 and their codes', async () => {
    const { stdout } = await writ(srv, ['token', 'create', '--node-name', 'edge-1', '-o', 'json']);
    const token = JSON.parse(stdout).token as string;
    // A bare base64url token starts with '-' one time in 64, and `--join-token "$TOKEN"` then reads it as options.
    assert.match(token, /^wjt_[A-Za-z0-9_-]{32}$/);
    const csr = (
      await run('openssl', [
        'req',
        '-new',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:P-256',
        '-nodes',
        '-keyout',
        join(work, 'agent.key'),
        '-subj',
        '/CN=ignored',
      ])
    ).stdout;
    const first = await call('POST', '/v1/agent/attest/join-token', { body: JSON.stringify({ joinToken: token, csr }), token: null });
    assert.equal(first.status, 201, first.text);
    assert.equal(first.body['spiffeId'], 'spiffe://e2e.test/writ/agent/edge-1');
    // The agent SVID works for the agent API. Bundles come in every sync answer to an agent that
    // does not ask `lean=1` (agents older than this server), and only when changed to one that does.
    writeFileSync(join(work, 'agent.pem'), first.body['svid'] as string);
    const sync = async (q: string): Promise<Record<string, unknown>> =>
      JSON.parse(
        (
          await run('curl', [
            '-sS',
            '--cacert',
            join(srv.dataDir, 'bundle.pem'),
            '--cert',
            join(work, 'agent.pem'),
            '--key',
            join(work, 'agent.key'),
            `${srv.url}/v1/agent/sync?${q}`,
          ])
        ).stdout,
      );
    const full = await sync('since=0&wait=0');
    assert.ok(full['bundle'], JSON.stringify(full).slice(0, 200));
    const v = encodeURIComponent(full['bundlesVersion'] as string);
    assert.equal((await sync(`since=0&wait=0&lean=1&bundles=${v}`))['bundle'], undefined);
    assert.ok((await sync(`since=0&wait=0&bundles=${v}`))['bundle'], 'an agent that does not ask lean=1 still gets the bundles');
    const again = await call('POST', '/v1/agent/attest/join-token', { body: JSON.stringify({ joinToken: token, csr }), token: null });
    assert.equal(again.status, 401);
    assert.equal(again.body['code'], 'ERR_JOIN_TOKEN_USED');
    const unknown = await call('POST', '/v1/agent/attest/join-token', { body: JSON.stringify({ joinToken: 'x'.repeat(32), csr }), token: null });
    assert.equal(unknown.body['code'], 'ERR_JOIN_TOKEN_INVALID');
    const short = JSON.parse((await writ(srv, ['token', 'create', '--ttl', '1s', '-o', 'json'])).stdout) as { token: string; expiresAt: string };
    // A wait on the token's own expiry (the server shares this clock), not a fixed sleep.
    await waitFor('the short token to expire', async () => (Date.now() > Date.parse(short.expiresAt) ? true : undefined));
    const expired = await call('POST', '/v1/agent/attest/join-token', { body: JSON.stringify({ joinToken: short.token, csr }), token: null });
    assert.equal(expired.status, 401);
    assert.equal(expired.body['code'], 'ERR_JOIN_TOKEN_EXPIRED');
  });

  it('decision reports from an agent: protobuf encoded by Python, the JSON form older agents send, malformed ones refused', async () => {
    const { stdout } = await writ(srv, ['token', 'create', '--node-name', 'edge-2', '-o', 'json']);
    const csr = (
      await run('openssl', [
        'req',
        '-new',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:P-256',
        '-nodes',
        '-keyout',
        join(work, 'edge2.key'),
        '-subj',
        '/CN=ignored',
      ])
    ).stdout;
    const att = await call('POST', '/v1/agent/attest/join-token', { body: JSON.stringify({ joinToken: JSON.parse(stdout).token, csr }), token: null });
    writeFileSync(join(work, 'edge2.pem'), att.body['svid'] as string);
    const post = (type: string, file: string) =>
      curl([
        '--cert',
        join(work, 'edge2.pem'),
        '--key',
        join(work, 'edge2.key'),
        '-H',
        `content-type: ${type}`,
        '--data-binary',
        `@${file}`,
        '-w',
        '\n%{http_code}',
        `${srv.url}/v1/agent/decisions`,
      ]);
    // An independent encoder: Python's protobuf runtime, classes generated by protoc from our .proto.
    const stubs = join(work, 'authz-stubs');
    const marker = `spiffe://e2e.test/ns/pyreport/sa/${process.pid}`;
    const py = `
import sys; sys.path.insert(0, ${JSON.stringify(stubs)})
import writ_authz_pb2 as pb
r = pb.ReportRequest(dropped=3)
r.decisions.add(id="019ad6c4-0000-7000-8000-000000000001", at_ms=1764547200000, to=sys.argv[1], action="GET /v1/orders/7", decision="deny", reason="NO_MATCHING_ALLOW", policy_revision=4, latency_ns=2500, **{"from": sys.argv[1] + "-caller"})
r.decisions.add(id="019ad6c4-0000-7000-8000-000000000002", at_ms=1764547200001, to=sys.argv[1], action="tcp 5432", decision="allow", reason="ALLOW_RULE", rule="db#0")
r.decisions.add(id="019ad6c4-0000-7000-8000-000000000003", to=sys.argv[1], decision="maybe")
open(sys.argv[2], "wb").write(r.SerializeToString())
`;
    mkdirSync(stubs, { recursive: true });
    const protoc = await run(DEBIAN_PYTHON, ['-m', 'grpc_tools.protoc', `-I${join(ROOT, 'packages/sdk/proto')}`, `--python_out=${stubs}`, 'writ_authz.proto']);
    assert.equal(protoc.code, 0, protoc.stderr);
    const enc = await run(DEBIAN_PYTHON, ['-c', py, marker, join(work, 'report.bin')]);
    assert.equal(enc.code, 0, enc.stderr);
    const droppedIn = (metrics: string, reporter: string): number =>
      Number(new RegExp(`writ_decision_log_dropped_total\\{reporter="${reporter}"\\} (\\d+)`).exec(metrics)?.[1] ?? 0);
    const m0 = (await call('GET', '/metrics', { token: null })).text;
    const r = await post('application/x-protobuf', join(work, 'report.bin'));
    assert.equal(r.stdout.trim().split('\n').pop(), '200', r.stdout);
    assert.deepEqual(JSON.parse(r.stdout.trim().split('\n')[0]!), { stored: 2 }, 'the decision with an unknown outcome is skipped');
    const metrics = (await call('GET', '/metrics', { token: null })).text;
    assert.equal(droppedIn(metrics, 'agent') - droppedIn(m0, 'agent'), 3, 'the 3 the reporter dropped are counted as lost on the node');
    assert.equal(droppedIn(metrics, 'server') - droppedIn(m0, 'server'), 1, 'the 1 skipped here is counted as refused by the server');
    const stored = (await call('GET', `/v1/decisions?to=${encodeURIComponent(marker)}`)).body['decisions'] as Array<Record<string, unknown>>;
    assert.deepEqual(
      stored.map((d) => [d['id'], d['at'], d['from'], d['action'], d['decision'], d['reason'], d['policyRevision'], d['rule'], d['reporter']]),
      [
        [
          '019ad6c4-0000-7000-8000-000000000002',
          '2025-12-01T00:00:00.001Z',
          null,
          'tcp 5432',
          'allow',
          'ALLOW_RULE',
          0,
          'db#0',
          'spiffe://e2e.test/writ/agent/edge-2',
        ],
        [
          '019ad6c4-0000-7000-8000-000000000001',
          '2025-12-01T00:00:00.000Z',
          `${marker}-caller`,
          'GET /v1/orders/7',
          'deny',
          'NO_MATCHING_ALLOW',
          4,
          '',
          'spiffe://e2e.test/writ/agent/edge-2',
        ],
      ],
    );
    // Sent again (a retried batch): nothing is stored twice.
    assert.equal((await post('application/x-protobuf', join(work, 'report.bin'))).stdout.trim().split('\n').pop(), '200');
    assert.equal(((await call('GET', `/v1/decisions?to=${encodeURIComponent(marker)}`)).body['decisions'] as unknown[]).length, 2);
    // Older agents' JSON.
    writeFileSync(
      join(work, 'report.json'),
      JSON.stringify({
        decisions: [
          {
            id: 'json-1',
            at: 1764547200002,
            from: '',
            to: marker,
            action: 'GET /',
            decision: 'allow',
            reason: 'ALLOW_RULE',
            rule: 'r',
            policyRevision: 1,
            latencyUs: 3,
          },
        ],
        dropped: 0,
      }),
    );
    assert.match((await post('application/json', join(work, 'report.json'))).stdout, /^\{"stored":1\}\n+200$/);
    // Hostile bodies: a truncated message, a length running past the end, a varint that never ends.
    for (const bytes of [Buffer.from([0x0a, 0x05, 0x0a]), Buffer.from([0x0a, 0xff, 0xff, 0xff, 0x0f]), Buffer.alloc(20, 0xff)]) {
      writeFileSync(join(work, 'bad.bin'), bytes);
      const bad = await post('application/x-protobuf', join(work, 'bad.bin'));
      assert.equal(bad.stdout.trim().split('\n').pop(), '400', bad.stdout);
      assert.equal(JSON.parse(bad.stdout.split('\n')[0]!).code, 'ERR_PROTOBUF_INVALID');
    }
    // `writ decisions tail` follows arrivals: a decision made an hour ago that arrives now (a
    // reporter that was cut off) is shown, where following by decision time would skip it.
    const env: NodeJS.ProcessEnv = { ...process.env, WRIT_SERVER: srv.url, WRIT_TOKEN: srv.adminToken, WRIT_CA_FILE: join(srv.dataDir, 'bundle.pem') };
    delete env['NODE_TEST_CONTEXT'];
    // The tail has its cursor once its first read of the log was answered: counted, since earlier tests read the log too.
    const logReads = async (): Promise<number> =>
      Number(
        /writ_http_requests_total\{method="GET",route="\/v1\/decisions",status="200"\} (\d+)/.exec(
          (await call('GET', '/metrics', { token: null })).text,
        )?.[1] ?? 0,
      );
    const readsBefore = await logReads();
    const tail = spawn(process.execPath, [join(ROOT, 'packages/cli/bin/writ.js'), 'decisions', 'tail', '--to', marker], {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let tailed = '';
    tail.stdout.on('data', (d: Buffer) => (tailed += d.toString()));
    try {
      await waitFor('the tail to have read the log', async () => ((await logReads()) > readsBefore ? true : undefined));
      const hourAgo = Date.now() - 3_600_000;
      writeFileSync(
        join(work, 'late.json'),
        JSON.stringify({
          decisions: [
            {
              id: `late-${process.pid}`,
              at: hourAgo,
              from: '',
              to: marker,
              action: 'DELETE /late',
              decision: 'deny',
              reason: 'NO_MATCHING_ALLOW',
              rule: '',
              policyRevision: 1,
            },
          ],
          dropped: 0,
        }),
      );
      assert.match((await post('application/json', join(work, 'late.json'))).stdout, /"stored":1/);
      await waitFor('the late decision in the tail', async () => (tailed.includes('DELETE /late') ? true : undefined));
      assert.match(
        tailed,
        new RegExp(
          `^${new Date(hourAgo).toISOString().replace(/[.]/g, '\\.')} DENY NO_MATCHING_ALLOW \\(none\\) -> ${marker.replace(/[/.]/g, '\\$&')} DELETE /late$`,
          'm',
        ),
      );
    } finally {
      tail.kill();
    }
    // Only agents report: an admin token is not an agent SVID, and neither is no credential.
    const anon = await curl([
      '-H',
      'content-type: application/x-protobuf',
      '--data-binary',
      `@${join(work, 'report.bin')}`,
      '-w',
      '\n%{http_code}',
      `${srv.url}/v1/agent/decisions`,
    ]);
    assert.equal(anon.stdout.trim().split('\n').pop(), '401');
  });
});

describe('bad input never produces a 500 or a crash', () => {
  const entry = { spiffeId: 'spiffe://e2e.test/bad', parentId: 'spiffe://e2e.test/writ/agent/n', selectors: ['unix:uid:1'] };
  const cases: Array<[string, Record<string, unknown>, string, string]> = [
    ['malformed SPIFFE ID', { ...entry, spiffeId: 'spiffe://e2e.test/a//b' }, 'ERR_SPIFFE_ID_INVALID', 'spiffeId'],
    ['SPIFFE ID of another trust domain', { ...entry, spiffeId: 'spiffe://other.test/a' }, 'ERR_SPIFFE_ID_INVALID', 'spiffeId'],
    ['malformed selector', { ...entry, selectors: ['unix:uid:1', 'nocolon'] }, 'ERR_SELECTOR_INVALID', 'selectors[1]'],
    ['no selectors', { ...entry, selectors: [] }, 'ERR_SELECTOR_INVALID', 'selectors'],
    ['zero TTL', { ...entry, x509SvidTtl: 0 }, 'ERR_DURATION_INVALID', 'x509SvidTtl'],
    ['negative TTL', { ...entry, jwtSvidTtl: -5 }, 'ERR_DURATION_INVALID', 'jwtSvidTtl'],
    ['absurd TTL', { ...entry, x509SvidTtl: '100000d' }, 'ERR_DURATION_INVALID', 'x509SvidTtl'],
    ['TTL garbage', { ...entry, x509SvidTtl: 'soon' }, 'ERR_DURATION_INVALID', 'x509SvidTtl'],
    ['unknown field', { ...entry, spiffeID: 'x' }, 'ERR_FIELD_UNKNOWN', 'spiffeID'],
    ['wrong type', { ...entry, admin: 'yes' }, 'ERR_FIELD_INVALID', 'admin'],
    ['missing field', { parentId: entry.parentId, selectors: entry.selectors }, 'ERR_FIELD_MISSING', 'spiffeId'],
    ['expiry in the past', { ...entry, expiresAt: '2001-01-01T00:00:00Z' }, 'ERR_FIELD_INVALID', 'expiresAt'],
    ['bad DNS name', { ...entry, dnsNames: ['-bad-.example'] }, 'ERR_FIELD_INVALID', 'dnsNames[0]'],
    ['federating with itself', { ...entry, federatesWith: ['e2e.test'] }, 'ERR_TRUST_DOMAIN_INVALID', 'federatesWith[0]'],
  ];
  for (const [what, body, code, field] of cases) {
    it(`${what} -> 400 ${code} naming ${field}`, async () => {
      const r = await call('POST', '/v1/entries', { body: JSON.stringify(body) });
      assert.equal(r.status, 400, r.text);
      assert.equal(r.body['code'], code);
      assert.equal(r.body['field'], field);
      assert.ok(String(r.body['message']).includes(field.replace(/\[\d+\]$/, '')), `message names the field: ${r.body['message']}`);
    });
  }

  it('a duplicate entry -> 400 ERR_ENTRY_EXISTS', async () => {
    const body = JSON.stringify({ ...entry, spiffeId: 'spiffe://e2e.test/dupe' });
    assert.equal((await call('POST', '/v1/entries', { body })).status, 201);
    const r = await call('POST', '/v1/entries', { body });
    assert.equal(r.status, 400);
    assert.equal(r.body['code'], 'ERR_ENTRY_EXISTS');
  });

  it('oversized body -> 413, wrong content type -> 415, broken JSON -> 400, wrong method -> 405, unknown path -> 404', async () => {
    const big = await call('POST', '/v1/entries', { body: Buffer.alloc(2 * 1024 * 1024, 0x20) });
    assert.equal(big.status, 413);
    assert.equal(big.body['code'], 'ERR_BODY_TOO_LARGE');
    const type = await call('POST', '/v1/entries', { body: JSON.stringify(entry), type: 'text/plain' });
    assert.equal(type.status, 415);
    assert.equal(type.body['code'], 'ERR_CONTENT_TYPE');
    for (const b of ['{', '[]', 'null', '"str"', '{"__proto__":{"admin":true}}']) {
      const r = await call('POST', '/v1/entries', { body: b });
      assert.equal(r.status, 400, `${b}: ${r.text}`);
    }
    const m = await call('PATCH', '/v1/entries');
    assert.equal(m.status, 405);
    assert.match(String(m.headers['allow']), /GET, POST/);
    assert.equal((await call('GET', '/v1/nothing')).status, 404);
    assert.equal((await call('GET', '/v1/entries?pageToken=***')).body['code'], 'ERR_PAGE_TOKEN_INVALID');
    assert.equal((await call('GET', '/v1/entries?pageSize=0')).status, 400);
    assert.equal((await call('GET', '/v1/entries/%ZZ')).body['code'], 'ERR_FIELD_INVALID');
    assert.equal((await call('GET', '/v1/entries', { token: 'writ_forged' })).body['code'], 'ERR_UNAUTHENTICATED');
    assert.equal(
      (await call('POST', '/v1/svids/jwt', { body: JSON.stringify({ spiffeId: 'spiffe://e2e.test/x', audience: [] }) })).body['code'],
      'ERR_FIELD_MISSING',
    );
    assert.equal(
      (await call('POST', '/v1/svids/x509', { body: JSON.stringify({ spiffeId: 'spiffe://e2e.test/x', csr: 'garbage' }) })).body['code'],
      'ERR_CSR_INVALID',
    );
    assert.equal(
      (await call('PUT', '/v1/federated-bundles/partner.example', { body: '{"keys":[{"kty":"EC","use":"x509-svid","x5c":["AAAA"]}]}' })).body['code'],
      'ERR_BUNDLE_INVALID',
    );
    assert.equal((await call('PUT', '/v1/federated-bundles/Bad_TD', { body: '{"keys":[]}' })).body['code'], 'ERR_TRUST_DOMAIN_INVALID');
  });

  it('Expect: 100-continue: an oversized upload is refused with 413 before its body is sent, an acceptable one proceeds', async () => {
    const auth = ['-H', `Authorization: Bearer ${srv.adminToken}`, '-H', 'content-type: application/json', '-w', '\n%{http_code}', '-v'];
    // curl sends the body only after a 100 (or after --expect100-timeout, set beyond the test's
    // 30 s limit here), and asks for one by itself for a body over 1 MiB.
    const bigBody = ' '.repeat(3 * 1024 * 1024);
    const refused = await run(
      'curl',
      ['-sS', '--cacert', join(srv.dataDir, 'bundle.pem'), ...auth, '--expect100-timeout', '60', '--data-binary', '@-', `${srv.url}/v1/entries`],
      { input: bigBody },
    );
    assert.equal(refused.stdout.trim().split('\n').pop(), '413', refused.stdout.slice(0, 300));
    assert.match(refused.stdout, /ERR_BODY_TOO_LARGE/);
    assert.doesNotMatch(refused.stderr, /< HTTP\/1\.1 100/, 'no 100 Continue for a body that will be refused');
    const body = JSON.stringify({ ...entry, spiffeId: 'spiffe://e2e.test/expect-continue' });
    const ok = await run(
      'curl',
      [
        '-sS',
        '--cacert',
        join(srv.dataDir, 'bundle.pem'),
        ...auth,
        '-H',
        'Expect: 100-continue',
        '--expect100-timeout',
        '60',
        '--data-binary',
        '@-',
        `${srv.url}/v1/entries`,
      ],
      { input: body },
    );
    assert.equal(ok.stdout.trim().split('\n').pop(), '201', ok.stdout.slice(0, 300));
    assert.match(ok.stderr, /< HTTP\/1\.1 100 Continue/);
  });

  it('raw garbage on the socket and a half-sent body leave the server serving', async () => {
    const { connect } = await import('node:net');
    await new Promise<void>((resolve) => {
      const s = connect(srv.port, '127.0.0.1', () => s.write(Buffer.from('\x16\x03\x01\x00\xffgarbage'.repeat(100))));
      s.resume(); // read the TLS alert so the socket can finish closing
      s.on('close', () => resolve()).on('error', () => resolve());
    });
    assert.equal((await call('GET', '/livez', { token: null })).status, 200);
    const metrics = (await call('GET', '/metrics', { token: null })).text;
    assert.doesNotMatch(metrics, /status="500"/, 'no request was answered with a 500');
    assert.equal(srv.child.exitCode, null);
    assert.ok(!srv.logs.join('\n').includes(srv.adminToken));
  });
});
