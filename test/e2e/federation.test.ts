/**
 * Federation relationships (issue 14, section 2) between real `writ server` processes: both ways
 * over https_spiffe, one way over https_web, a CA rotation followed without an operator, and
 * hostile bundle endpoints that leave the last good bundle in place with the reason in the status.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { X509Certificate, generateKeyPairSync } from 'node:crypto';
import { connect as tlsConnect } from 'node:tls';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { cleanup, startAgentProcess, startServerProcess, waitFor, writ, type AgentProcess, type ServerProcess } from './helpers.ts';

interface Status {
  trustDomain: string;
  profile: string;
  lastSuccessAt: string | null;
  lastError: { code: string; message: string } | null;
  sequence: number | null;
  refreshHintSeconds: number | null;
  refreshIntervalSeconds: number;
  stale: boolean;
  bundle: { x509Authorities: number; jwtAuthorities: number } | null;
}
interface BundleDoc {
  keys: Array<{ use: string; kid?: string; x5c?: string[] }>;
  spiffe_sequence?: number;
  spiffe_refresh_hint?: number;
}

const tmp = mkdtempSync(join(tmpdir(), 'writ-federation-'));

/** A throwaway Web PKI: a root and a localhost certificate for https_web endpoints. */
function webPki(): { ca: string; cert: string; key: string } {
  const o = (args: string[]): void => void execFileSync('openssl', args, { cwd: tmp, stdio: 'ignore' });
  o([
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-keyout',
    'web-ca.key',
    '-out',
    'web-ca.pem',
    '-days',
    '2',
    '-subj',
    '/CN=test web root',
  ]);
  o(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'web.key', '-out', 'web.csr', '-subj', '/CN=localhost']);
  writeFileSync(join(tmp, 'web.ext'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\n');
  o(['x509', '-req', '-in', 'web.csr', '-CA', 'web-ca.pem', '-CAkey', 'web-ca.key', '-CAcreateserial', '-out', 'web.pem', '-days', '2', '-extfile', 'web.ext']);
  return { ca: join(tmp, 'web-ca.pem'), cert: join(tmp, 'web.pem'), key: join(tmp, 'web.key') };
}

/** A second localhost certificate from the same root (a renewal), as PEM text. */
function renewedWebCert(): { cert: string; key: string } {
  const o = (args: string[]): void => void execFileSync('openssl', args, { cwd: tmp, stdio: 'ignore' });
  o(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'web2.key', '-out', 'web2.csr', '-subj', '/CN=localhost']);
  o([
    'x509',
    '-req',
    '-in',
    'web2.csr',
    '-CA',
    'web-ca.pem',
    '-CAkey',
    'web-ca.key',
    '-CAcreateserial',
    '-out',
    'web2.pem',
    '-days',
    '2',
    '-extfile',
    'web.ext',
  ]);
  return { cert: readFileSync(join(tmp, 'web2.pem'), 'utf8'), key: readFileSync(join(tmp, 'web2.key'), 'utf8') };
}

/** The fingerprint of the certificate a TLS server presents. */
function presented(url: string, ca: string): Promise<string> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const sock = tlsConnect({ host: u.hostname, port: Number(u.port), servername: 'localhost', ca: readFileSync(ca) }, () => {
      const fp = sock.getPeerCertificate().fingerprint256;
      sock.end();
      resolve(fp);
    });
    sock.once('error', reject);
  });
}

/** The bundle endpoint URL a server logged at start. */
const endpointOf = (s: ServerProcess): Promise<string> =>
  waitFor('the bundle endpoint log line', async () => {
    for (const line of s.logs) {
      const j = JSON.parse(line) as { msg?: string; url?: string };
      if (j.msg === 'bundle endpoint listening') return j.url;
    }
    return undefined;
  });

async function status(s: ServerProcess, td: string): Promise<Status> {
  const r = await writ(s, ['federation', 'show', td, '-o', 'json']);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as Status;
}

async function ownBundle(s: ServerProcess): Promise<BundleDoc> {
  const r = await writ(s, ['bundle', 'show']);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as BundleDoc;
}

async function heldBundle(s: ServerProcess, td: string): Promise<BundleDoc> {
  const r = await writ(s, ['bundle', 'list', '-o', 'json']);
  assert.equal(r.code, 0, r.stderr);
  const b = (JSON.parse(r.stdout) as Array<{ trustDomain: string; bundle: BundleDoc }>).find((x) => x.trustDomain === td);
  assert.ok(b, `no bundle of ${td} held`);
  return b.bundle;
}

const x5cs = (b: BundleDoc): string[] =>
  b.keys
    .filter((k) => k.use === 'x509-svid')
    .map((k) => k.x5c![0]!)
    .sort();

describe('federation between writ servers', () => {
  let a: ServerProcess;
  let b: ServerProcess;
  let agent: AgentProcess | undefined;
  let w: ServerProcess;
  let hostile: Server;
  let hostileUrl = '';
  let mode = 'good';
  let otherTd = '';
  let web: ReturnType<typeof webPki>;
  const goodJwk = { use: 'jwt-svid', kid: 'h1', ...(generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'jwk' }) as object) };

  before(async () => {
    web = webPki();
    const endpoint = (profile: string): string[] => ['--bundle-endpoint-listen', '127.0.0.1:0', '--bundle-endpoint-profile', profile];
    [a, b, w] = await Promise.all([
      // A trusts the test Web PKI (https_web peers) and gives up on a fetch after 1 s (the slow endpoint).
      startServerProcess({
        args: ['--trust-domain', 'a.test', ...endpoint('https_spiffe'), '--federation-timeout', '1s'],
        env: { NODE_EXTRA_CA_CERTS: web.ca },
      }),
      // B rotates its CA quickly: a successor is published 18 s into each 36 s CA, used from 30 s.
      startServerProcess({ args: ['--trust-domain', 'b.test', ...endpoint('https_spiffe'), '--ca-ttl', '36s', '--x509-svid-ttl', '6s'] }),
      startServerProcess({
        args: ['--trust-domain', 'w.test', ...endpoint('https_web'), '--bundle-endpoint-cert', web.cert, '--bundle-endpoint-key', web.key],
      }),
    ]);
    hostile = createServer({ cert: readFileSync(web.cert), key: readFileSync(web.key) }, (req, res) => {
      req.resume();
      const send = (body: string): void => void res.writeHead(200, { 'content-type': 'application/json' }).end(body);
      if (mode === 'good') return send(JSON.stringify({ keys: [goodJwk], spiffe_sequence: 5, spiffe_refresh_hint: 60 }));
      if (mode === 'redirect') return void res.writeHead(302, { location: 'https://evil.example/bundle' }).end();
      if (mode === 'garbage') return send('<html>hello</html>');
      if (mode === 'huge') return send(JSON.stringify({ keys: Array.from({ length: 30_000 }, (_, i) => ({ ...goodJwk, kid: `k${i}` })) }));
      if (mode === 'older') return send(JSON.stringify({ keys: [goodJwk], spiffe_sequence: 3 }));
      if (mode === 'other-td') return send(otherTd);
      if (mode === 'slow') return undefined; // never answers
      return void res.writeHead(500).end();
    });
    await new Promise<void>((r) => hostile.listen(0, '127.0.0.1', () => r()));
    const addr = hostile.address();
    hostileUrl = `https://localhost:${typeof addr === 'object' && addr ? addr.port : 0}/bundle`;
  });

  after(async () => {
    hostile?.closeAllConnections();
    hostile?.close();
    await agent?.stop();
    await Promise.all([a?.stop(), b?.stop(), w?.stop()]);
    for (const s of [a, b, w]) if (s) cleanup(s.dataDir);
    if (agent) cleanup(agent.dataDir);
    cleanup(tmp);
  });

  it('two trust domains federate both ways over https_spiffe, and a CA rotation on one side is followed by the other without an operator', async () => {
    const [aUrl, bUrl] = await Promise.all([endpointOf(a), endpointOf(b)]);
    const create = (s: ServerProcess, td: string, url: string, peer: ServerProcess) =>
      writ(s, [
        'federation',
        'create',
        '--trust-domain',
        td,
        '--bundle-endpoint-url',
        url,
        '--profile',
        'https_spiffe',
        '--endpoint-spiffe-id',
        `spiffe://${td}/writ/server`,
        '--bootstrap-bundle',
        join(peer.dataDir, 'bundle.pem'),
      ]);
    const [ra, rb] = await Promise.all([create(a, 'b.test', bUrl, b), create(b, 'a.test', aUrl, a)]);
    assert.equal(ra.code, 0, ra.stderr);
    assert.equal(rb.code, 0, rb.stderr);
    assert.match(ra.stderr, /federating with b\.test/);

    const okOn = (s: ServerProcess, td: string): Promise<Status> =>
      waitFor(`${td} fetched`, async () => {
        const st = await status(s, td);
        return st.lastSuccessAt ? st : undefined;
      });
    const [onA, onB] = await Promise.all([okOn(a, 'b.test'), okOn(b, 'a.test')]);
    assert.equal(onA.lastError, null);
    assert.deepEqual(x5cs(await heldBundle(a, 'b.test')), x5cs(await ownBundle(b)), "A holds B's bundle");
    assert.deepEqual(x5cs(await heldBundle(b, 'a.test')), x5cs(await ownBundle(a)), "B holds A's bundle");
    // B's hint comes from its 36 s CA (3 s); A polls no more often than every 5 s.
    const bDoc = await ownBundle(b);
    assert.equal(bDoc.spiffe_refresh_hint, 3);
    assert.equal(onA.refreshHintSeconds, 3);
    assert.equal(onA.refreshIntervalSeconds, 5);
    assert.equal(onB.sequence, (await ownBundle(a)).spiffe_sequence);

    // A workload of A that federates with B, served by a real agent: it gets what A fetched.
    const e = await writ(a, [
      'entry',
      'create',
      '--spiffe-id',
      'spiffe://a.test/ns/web',
      '--parent-id',
      'spiffe://a.test/writ/agent/node-a',
      '--selector',
      `unix:uid:${process.getuid!()}`,
      '--federates-with',
      'b.test',
    ]);
    assert.equal(e.code, 0, e.stderr);
    const tok = await writ(a, ['token', 'create', '--node-name', 'node-a', '-o', 'json']);
    assert.equal(tok.code, 0, tok.stderr);
    agent = await startAgentProcess(a, { joinToken: (JSON.parse(tok.stdout) as { token: string }).token });
    const workloadSees = async (): Promise<string> => {
      const dir = mkdtempSync(join(tmp, 'svid-'));
      const r = await writ(undefined, ['svid', 'fetch', '--socket', agent!.socket, '--write', dir]);
      assert.equal(r.code, 0, r.stderr);
      return readFileSync(join(dir, 'bundle.pem'), 'utf8').replace(/-----[A-Z ]+-----|\s/g, '');
    };

    // The rotation: B publishes a successor CA; A fetches it (authenticating B's endpoint with what it holds)
    // while B's old CA still signs, so nothing B issues after the switch is unknown to A.
    const first = x5cs(bDoc);
    const rotated = await waitFor(
      "B's successor CA on A",
      async () => {
        const held = x5cs(await heldBundle(a, 'b.test'));
        return held.some((c) => !first.includes(c)) ? held : undefined;
      },
      60_000,
    );
    assert.ok(rotated.length >= 2, 'the old and the new CA are both held during the overlap');
    const successor = rotated.find((c) => !first.includes(c))!;
    await waitFor("B's successor CA in the bundles A's workload gets from its agent", async () =>
      (await workloadSees()).includes(successor) ? true : undefined,
    );
    const after = await status(a, 'b.test');
    assert.equal(after.lastError, null);
    assert.ok(after.sequence! > onA.sequence!, 'the sequence grew with the rotation');

    const st = await writ(a, ['federation', 'status']);
    assert.equal(st.code, 0, st.stderr);
    assert.match(st.stdout, /^TRUST DOMAIN\s+STATE\s+SEQUENCE\s+LAST SUCCESS\s+STALENESS\s+NEXT REFRESH\s+LAST ERROR/);
    assert.match(st.stdout, /\nb\.test\s+ok\s+\d+\s/);
  });

  it('https_web: a peer serving with a Web PKI certificate from files is fetched; https_spiffe with the wrong endpoint ID is refused', async () => {
    const wUrl = await endpointOf(w);
    const r = await writ(a, ['federation', 'create', '--trust-domain', 'w.test', '--bundle-endpoint-url', wUrl, '--profile', 'https_web']);
    assert.equal(r.code, 0, r.stderr);
    const refreshed = await writ(a, ['federation', 'refresh', 'w.test', '-o', 'json']);
    assert.equal(refreshed.code, 0, refreshed.stderr);
    const st = JSON.parse(refreshed.stdout) as Status;
    assert.equal(st.profile, 'https_web');
    assert.ok(st.lastSuccessAt);
    assert.deepEqual(x5cs(await heldBundle(a, 'w.test')), x5cs(await ownBundle(w)));

    // The certificate files are renewed in place (as an ACME client does): W serves the new pair, A still fetches.
    const renewed = renewedWebCert();
    writeFileSync(web.key, renewed.key);
    writeFileSync(web.cert, renewed.cert);
    const want = new X509Certificate(renewed.cert).fingerprint256;
    await waitFor('W serving the renewed certificate', async () => ((await presented(wUrl, web.ca)) === want ? true : undefined));
    assert.equal((await writ(a, ['federation', 'refresh', 'w.test'])).code, 0);

    // W federates with B over https_spiffe but expects another endpoint ID: B's SVID does not pass.
    const bUrl = await endpointOf(b);
    const c = await writ(w, [
      'federation',
      'create',
      '--trust-domain',
      'b.test',
      '--bundle-endpoint-url',
      bUrl,
      '--profile',
      'https_spiffe',
      '--endpoint-spiffe-id',
      'spiffe://b.test/someone-else',
      '--bootstrap-bundle',
      join(b.dataDir, 'bundle.pem'),
    ]);
    assert.equal(c.code, 0, c.stderr);
    const refused = await writ(w, ['federation', 'refresh', 'b.test']);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /ERR_BUNDLE_ENDPOINT_AUTH/);
    assert.match(refused.stderr, /spiffe:\/\/b\.test\/writ\/server/);

    // The right ID, but bootstrapped with roots B's SVID does not chain to: refused by TLS too.
    assert.equal((await writ(w, ['federation', 'delete', 'b.test'])).code, 0);
    const recreate = (bootstrap: string) =>
      writ(w, [
        'federation',
        'create',
        '--trust-domain',
        'b.test',
        '--bundle-endpoint-url',
        bUrl,
        '--profile',
        'https_spiffe',
        '--endpoint-spiffe-id',
        'spiffe://b.test/writ/server',
        '--bootstrap-bundle',
        bootstrap,
      ]);
    const otherDomain = await recreate(join(a.dataDir, 'bundle.pem'));
    assert.equal(otherDomain.code, 1, "A's bundle is no bootstrap for b.test");
    assert.match(otherDomain.stderr, /bootstrapBundle.*trust domain "a\.test".*\[ERR_FIELD_INVALID\]/);
    assert.equal((await recreate(web.ca)).code, 0);
    const unchained = await writ(w, ['federation', 'refresh', 'b.test']);
    assert.equal(unchained.code, 1);
    assert.match(unchained.stderr, /failed authentication \(https_spiffe\).*\[ERR_BUNDLE_ENDPOINT_AUTH\]/);
  });

  it('hostile bundle endpoints leave the last good bundle in place, and status says why', async () => {
    otherTd = JSON.stringify(await ownBundle(b));
    const r = await writ(a, ['federation', 'create', '--trust-domain', 'h.test', '--bundle-endpoint-url', hostileUrl, '--profile', 'https_web']);
    assert.equal(r.code, 0, r.stderr);
    const good = await writ(a, ['federation', 'refresh', 'h.test', '-o', 'json']);
    assert.equal(good.code, 0, good.stderr);
    assert.equal((JSON.parse(good.stdout) as Status).sequence, 5);

    const cases: Array<[string, string, RegExp]> = [
      ['redirect', 'ERR_BUNDLE_ENDPOINT_REDIRECT', /redirect \(302\); redirects are not followed/],
      ['error', 'ERR_BUNDLE_ENDPOINT_STATUS', /HTTP 500/],
      ['garbage', 'ERR_BUNDLE_ENDPOINT_INVALID', /not JSON/],
      ['huge', 'ERR_BUNDLE_ENDPOINT_TOO_LARGE', /larger than 1048576 bytes/],
      ['other-td', 'ERR_BUNDLE_TRUST_DOMAIN_MISMATCH', /trust domain "b\.test", not "h\.test"/],
      ['older', 'ERR_BUNDLE_SEQUENCE_STALE', /sequence 3, older than 5/],
      ['slow', 'ERR_BUNDLE_ENDPOINT_TIMEOUT', /within 1s/],
    ];
    for (const [m, code, why] of cases) {
      mode = m;
      const refresh = await writ(a, ['federation', 'refresh', 'h.test']);
      assert.equal(refresh.code, 1, `${m}: ${refresh.stderr}`);
      assert.match(refresh.stderr, new RegExp(code), m);
      const st = await status(a, 'h.test');
      assert.equal(st.lastError?.code, code, m);
      assert.match(st.lastError!.message, why, m);
      assert.equal(st.sequence, 5, `${m}: the sequence applied stays`);
      const held = await heldBundle(a, 'h.test');
      assert.deepEqual(
        held.keys.map((k) => k.kid),
        ['h1'],
        `${m}: the last good bundle stays`,
      );
    }
    const table = await writ(a, ['federation', 'status']);
    assert.equal(table.code, 1, 'a failing peer makes status exit 1');
    assert.match(table.stdout, /\nh\.test\s+failing\s+5\s.*ERR_BUNDLE_ENDPOINT_TIMEOUT: no complete answer within 1s/);
    const shown = await writ(a, ['federation', 'show', 'h.test']);
    assert.match(shown.stdout, /last error:\s+\S+ ERR_BUNDLE_ENDPOINT_TIMEOUT/);
    assert.match(shown.stdout, /bundle:\s+0 X\.509 and 1 JWT authorities/);

    // Back to good: the next refresh clears the error.
    mode = 'good';
    const back = await writ(a, ['federation', 'refresh', 'h.test', '-o', 'json']);
    assert.equal(back.code, 0, back.stderr);
    assert.equal((JSON.parse(back.stdout) as Status).lastError, null);
  });

  it('refuses bad relationships with a stable code, and deletes one', async () => {
    const bad = async (args: string[], code: RegExp): Promise<void> => {
      const r = await writ(a, ['federation', 'create', ...args]);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, code);
    };
    await bad(['--trust-domain', 'a.test', '--bundle-endpoint-url', 'https://x.test/', '--profile', 'https_web'], /ERR_TRUST_DOMAIN_INVALID/);
    await bad(['--trust-domain', 'x.test', '--bundle-endpoint-url', 'http://x.test/', '--profile', 'https_web'], /https:\/\/.*ERR_FIELD_INVALID/);
    await bad(['--trust-domain', 'x.test', '--bundle-endpoint-url', 'https://u:p@x.test/', '--profile', 'https_web'], /credentials.*ERR_FIELD_INVALID/);
    await bad(
      ['--trust-domain', 'x.test', '--bundle-endpoint-url', 'https://x.test/', '--profile', 'https_spiffe', '--endpoint-spiffe-id', 'spiffe://x.test/s'],
      /bootstrapBundle.*ERR_FIELD_MISSING/,
    );
    await bad(['--trust-domain', 'b.test', '--bundle-endpoint-url', 'https://x.test/', '--profile', 'https_web'], /ERR_FEDERATION_EXISTS/);
    const del = await writ(a, ['federation', 'delete', 'h.test']);
    assert.equal(del.code, 0, del.stderr);
    const gone = await writ(a, ['federation', 'show', 'h.test']);
    assert.equal(gone.code, 1);
    assert.match(gone.stderr, /ERR_FEDERATION_NOT_FOUND/);
    const list = await writ(a, ['federation', 'list']);
    assert.match(
      list.stdout,
      /^TRUST DOMAIN\s+PROFILE\s+BUNDLE ENDPOINT\s+ENDPOINT SPIFFE ID\nb\.test\s+https_spiffe\s+https:\/\/127\.0\.0\.1:\d+\/\s+spiffe:\/\/b\.test\/writ\/server\nw\.test\s+https_web/,
    );
  });
});
