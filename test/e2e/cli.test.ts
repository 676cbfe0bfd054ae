/**
 * The writ CLI as a user runs it: against a real server (SQLite), against a TLS impostor, and,
 * for server answers this build's server does not give yet, against a small HTTPS fake of exactly
 * the documented shape.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { createServer as createTlsServer, type TLSSocket } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { cleanup, startServerProcess, waitFor, writ, type ServerProcess } from './helpers.ts';

let srv: ServerProcess;
let work: string;

before(async () => {
  work = mkdtempSync(join(tmpdir(), 'writ-cli-'));
  srv = await startServerProcess();
});
after(async () => {
  await srv?.stop();
  if (srv) cleanup(srv.dataDir);
  if (work) cleanup(work);
});

/** A TLS server with the given certificate that answers nothing and keeps every plaintext byte it receives. */
async function impostor(certFile: string, keyFile: string): Promise<{ url: string; received: () => string; close: () => Promise<void> }> {
  const chunks: Buffer[] = [];
  const sockets = new Set<TLSSocket>();
  const server = createTlsServer({ cert: readFileSync(certFile), key: readFileSync(keyFile) }, (s) => {
    sockets.add(s);
    s.on('data', (d: Buffer) => chunks.push(d));
    s.on('error', () => undefined);
    s.on('close', () => sockets.delete(s));
  });
  server.on('tlsClientError', () => undefined);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as { port: number }).port;
  return {
    url: `https://localhost:${port}`,
    received: () => Buffer.concat(chunks).toString('latin1'),
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise((r) => (server.listening ? server.close(() => r()) : r()));
    },
  };
}

describe("the server's identity is pinned", () => {
  it('a workload SVID from the same CA, valid for the address, gets no token: one error naming both IDs, exit 1', async () => {
    const out = join(work, 'web-svid');
    const m = await writ(srv, ['svid', 'mint-x509', '--spiffe-id', 'spiffe://e2e.test/ns/web', '--dns-name', 'localhost', '--out', out]);
    assert.equal(m.code, 0, m.stderr);
    const fake = await impostor(join(out, 'svid.pem'), join(out, 'svid.key'));
    try {
      const r = await writ(srv, ['entry', 'list'], { env: { WRIT_SERVER: fake.url } });
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /presented spiffe:\/\/e2e\.test\/ns\/web, not spiffe:\/\/e2e\.test\/writ\/server/);
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
      assert.ok(!fake.received().includes(srv.adminToken), 'the admin token reached the impostor');
      assert.equal(fake.received(), '');

      // The recorder works: told to expect that ID, the CLI does send the request (and the token).
      const told = writ(srv, ['entry', 'list', '--server-spiffe-id', 'spiffe://e2e.test/ns/web'], { env: { WRIT_SERVER: fake.url } });
      await waitFor('the overridden request', async () => (fake.received().includes(srv.adminToken) ? true : undefined));
      await fake.close();
      assert.equal((await told).code, 1);
    } finally {
      await fake.close();
    }
  });

  it('the real server passes with the trust domain taken from the CA file; a wrong --trust-domain fails before the token is sent', async () => {
    assert.equal((await writ(srv, ['entry', 'list'])).code, 0);
    const r = await writ(srv, ['entry', 'list', '--trust-domain', 'other.test']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /presented spiffe:\/\/e2e\.test\/writ\/server, not spiffe:\/\/other\.test\/writ\/server/);
    const env = await writ(srv, ['entry', 'list'], { env: { WRIT_SERVER_SPIFFE_ID: 'spiffe://e2e.test/writ/other' } });
    assert.equal(env.code, 1);
    assert.match(env.stderr, /not spiffe:\/\/e2e\.test\/writ\/other/);
  });

  it('without a CA file nothing is sent unless a trust domain or server ID is named', async () => {
    const r = await writ(srv, ['entry', 'list'], { env: { WRIT_CA_FILE: '' } });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /cannot pin the server's identity: pass --ca-file/);
  });
});
