/** The HTTPS server client pins the server's SPIFFE ID before anything is sent: a real TLS server that records every byte. */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer, type Server } from 'node:tls';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { WritError } from '@writ/spiffe';
import { Agent } from './agent.ts';
import { csrFor, generateKey, keyPem } from './keys.ts';
import { ServerClient } from './server-client.ts';
import { FakeCa } from './testing/fake-server.ts';

const ca = new FakeCa('pin.test');
const TOKEN = 'join-token-that-must-not-leave-0123456789';
let server: Server;
let port = 0;
const received: Buffer[] = [];
const dir = mkdtempSync(join(tmpdir(), 'writ-pin-'));

before(async () => {
  // A workload of the same trust domain, with the right DNS name: a valid certificate from the same CA.
  const k = generateKey();
  const cert = ca.sign('spiffe://pin.test/ns/web', csrFor(k), 3600_000, ['localhost']);
  server = createServer({ key: keyPem(k.key), cert }, (s) => {
    s.on('data', (d: Buffer) => received.push(d));
    s.on('error', () => undefined);
    s.on('data', () => s.end('HTTP/1.1 500 x\r\ncontent-length: 0\r\n\r\n'));
  });
  server.on('tlsClientError', () => undefined);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  port = (server.address() as { port: number }).port;
});
after(() => {
  server.close();
  rmSync(dir, { recursive: true, force: true });
});

const agentFor = (o: { serverSpiffeId?: string; trustDomain?: string } = {}): Agent =>
  new Agent({
    serverUrl: `https://localhost:${port}`,
    caPem: ca.pem,
    joinToken: TOKEN,
    dataDir: mkdtempSync(join(dir, 'a-')),
    log: pino({ level: 'silent' }),
    ...o,
  });

describe('the server identity is pinned before the first attestation', () => {
  it('a workload SVID from the same CA is refused with one error naming both IDs; the join token never leaves', async () => {
    received.length = 0;
    const a = agentFor();
    await assert.rejects(a.start(), (e) => {
      assert.ok(e instanceof WritError, String(e));
      assert.match(e.message, /presented spiffe:\/\/pin\.test\/ns\/web, expected spiffe:\/\/pin\.test\/writ\/server/);
      assert.ok(!e.message.includes(TOKEN));
      return true;
    });
    a.stop();
    assert.equal(Buffer.concat(received).length, 0, 'not a byte of the request reached the impostor');
  });

  it('--server-spiffe-id pins another ID (and the recorder does see what is sent to a server that passes)', async () => {
    received.length = 0;
    const a = agentFor({ serverSpiffeId: 'spiffe://pin.test/ns/web' });
    await assert.rejects(a.start(), /HTTP 500/);
    a.stop();
    assert.ok(Buffer.concat(received).toString().includes(TOKEN), 'the token went to the pinned server');
  });

  it('the trust domain comes from the bundle file, or --trust-domain when given', async () => {
    const a = agentFor({ trustDomain: 'other.test' });
    await assert.rejects(a.start(), /expected spiffe:\/\/other\.test\/writ\/server/);
    a.stop();
  });
});

describe('postForm (the token broker: no agent certificate, the client authenticates in the body)', () => {
  it('is pinned too: the form never reaches an impostor; the pinned server gets it and its status comes back', async () => {
    received.length = 0;
    const impostor = new ServerClient(`https://localhost:${port}`, ca.pem, 'spiffe://pin.test/writ/server');
    await assert.rejects(impostor.postForm('/v1/token', `client_assertion=${TOKEN}`), /presented spiffe:\/\/pin\.test\/ns\/web/);
    impostor.close();
    assert.equal(Buffer.concat(received).length, 0);
    const pinned = new ServerClient(`https://localhost:${port}`, ca.pem, 'spiffe://pin.test/ns/web');
    const r = await pinned.postForm('/v1/token', `client_assertion=${TOKEN}`);
    pinned.close();
    assert.deepEqual(r, { status: 500, json: undefined });
    // The body may be in a later TLS record than the headers the recorder answered.
    for (let i = 0; i < 100 && !Buffer.concat(received).toString().endsWith(TOKEN); i++) await new Promise((r) => setTimeout(r, 20));
    const sent = Buffer.concat(received).toString();
    assert.match(sent, /^POST \/v1\/token HTTP\/1\.1\r\n/);
    assert.match(sent, /content-type: application\/x-www-form-urlencoded/i);
    assert.ok(sent.endsWith(`client_assertion=${TOKEN}`));
  });
});
