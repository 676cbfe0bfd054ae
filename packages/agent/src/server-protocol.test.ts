/** The agent names its protocol version on every request and keeps the one the server answers with (absent: 1). */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:tls';
import { after, before, describe, it } from 'node:test';
import { PROTOCOL_HEADER, PROTOCOL_VERSION } from '@writ/protocol';
import { csrFor, generateKey, keyPem } from './keys.ts';
import { ServerClient } from './server-client.ts';
import { FakeCa } from './testing/fake-server.ts';

const ca = new FakeCa('proto.test');
let server: Server;
let port = 0;
const heads: string[] = [];
/** The header the fake server answers with (undefined: a server from before versions). */
let answerWith: string | undefined;

before(async () => {
  const k = generateKey();
  const cert = ca.sign('spiffe://proto.test/writ/server', csrFor(k), 3600_000, ['localhost']);
  server = createServer({ key: keyPem(k.key), cert }, (s) => {
    s.on('error', () => undefined);
    s.on('data', (d: Buffer) => {
      heads.push(d.toString('latin1'));
      const extra = answerWith === undefined ? '' : `${PROTOCOL_HEADER}: ${answerWith}\r\n`;
      s.end(`HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n${extra}content-length: 2\r\nconnection: close\r\n\r\n{}`);
    });
  });
  server.on('tlsClientError', () => undefined);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  port = (server.address() as { port: number }).port;
});
after(() => server.close());

describe('agent protocol version', () => {
  it('every request says the version the agent speaks; the answer tells which the server speaks', async () => {
    const client = new ServerClient(`https://localhost:${port}`, ca.pem, 'spiffe://proto.test/writ/server');
    try {
      assert.equal(client.serverProtocol, undefined);
      answerWith = String(PROTOCOL_VERSION);
      await client.call('GET', '/v1/agent/sync?since=0&wait=0&bundles=');
      assert.match(heads.at(-1)!, new RegExp(`\\r\\n${PROTOCOL_HEADER}: ${PROTOCOL_VERSION}\\r\\n`, 'i'));
      assert.equal(client.serverProtocol, PROTOCOL_VERSION);
      // A server from before the header: version 1.
      answerWith = undefined;
      await client.call('POST', '/v1/agent/renew', { csr: 'x' });
      assert.match(heads.at(-1)!, new RegExp(`\\r\\n${PROTOCOL_HEADER}: ${PROTOCOL_VERSION}\\r\\n`, 'i'));
      assert.equal(client.serverProtocol, 1);
    } finally {
      client.close();
    }
  });
});
