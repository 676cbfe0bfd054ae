import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { describe, it } from 'node:test';
import { isWritError } from '@writ/spiffe';
import { parseInbound, parseOutbound, sniffH2 } from './proxy.ts';

/** Resolves once `s` closes (an 'error' before it is fine); fails after 15 s, which only a hang takes on a loaded machine. */
const closed = (s: Socket): Promise<void> =>
  new Promise((resolve, reject) => {
    const guard = setTimeout(() => reject(new Error('the connection was not closed within 15 s')), 15_000);
    s.on('error', () => undefined).once('close', () => (clearTimeout(guard), resolve()));
  });

describe('--inbound and --outbound', () => {
  it('an inbound upstream is HOST:PORT or http:// (HTTP/1.1), or h2c:// (HTTP/2 without TLS)', () => {
    assert.deepEqual(parseInbound('0.0.0.0:8443=127.0.0.1:8080', 'http'), {
      listen: { host: '0.0.0.0', port: 8443 },
      upstream: { host: '127.0.0.1', port: 8080 },
      mode: 'http',
      upstreamProtocol: 'http1',
    });
    assert.equal(parseInbound('0.0.0.0:8443=http://127.0.0.1:8080', 'http').upstreamProtocol, 'http1');
    assert.deepEqual(parseInbound('[::1]:8443=H2C://[::1]:50051', 'http').upstream, { host: '::1', port: 50051 });
    assert.equal(parseInbound('[::1]:8443=h2c://[::1]:50051', 'http').upstreamProtocol, 'h2c');
    for (const bad of ['8443', '0.0.0.0:8443=', '0.0.0.0:8443=a:1=b:2', '0.0.0.0:8443=https://a:1', '0.0.0.0:8443=h2c://a', '0.0.0.0:99999=a:1']) {
      assert.throws(
        () => parseInbound(bad, 'http'),
        (e) => isWritError(e, 'ERR_CONFIG_INVALID'),
        bad,
      );
    }
    assert.throws(() => parseInbound('0.0.0.0:8443=h2c://a:1', 'tcp'), /needs --inbound-mode http/);
  });

  it('an outbound names the identity it must reach', () => {
    assert.deepEqual(parseOutbound('127.0.0.1:9000=spiffe://example.org/ns/orders/sa/api@orders.internal:8443'), {
      listen: { host: '127.0.0.1', port: 9000 },
      spiffeId: 'spiffe://example.org/ns/orders/sa/api',
      target: { host: 'orders.internal', port: 8443 },
      mode: 'http',
    });
    for (const bad of ['127.0.0.1:9000=orders:8443', '127.0.0.1:9000=spiffe://Bad Id@h:1']) assert.throws(() => parseOutbound(bad), bad);
  });
});

describe('outbound protocol sniffing', () => {
  /** What sniffH2 decides for a client that sends `pieces` one read apart, and the bytes it put back. */
  const sniff = async (pieces: string[], end = false): Promise<{ h2: boolean | 'closed'; bytes: string }> => {
    let local: Socket | undefined;
    const server = createServer();
    const decided = new Promise<{ h2: boolean | 'closed'; bytes: string }>((resolve) => {
      server.on('connection', (s) => {
        local = s;
        s.on('close', () => resolve({ h2: 'closed', bytes: '' }));
        sniffH2(s, (h2) => {
          let bytes = '';
          s.on('data', (d: Buffer) => {
            bytes += d.toString('latin1');
            if (bytes.length === pieces.join('').length) resolve({ h2, bytes }), s.destroy();
          });
          s.resume();
        });
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const c = connect((server.address() as AddressInfo).port, '127.0.0.1');
    c.on('error', () => undefined);
    await once(c, 'connect');
    let sent = 0;
    for (const p of pieces) {
      c.write(p);
      sent += p.length;
      // One read apart: the next piece goes once the server has read this one (not after a pause that a loaded machine may not honour).
      const until = Date.now() + 15_000;
      while (!local || (local.bytesRead < sent && !local.destroyed)) {
        if (Date.now() > until) throw new Error(`the server did not read ${JSON.stringify(p)} in 15 s`);
        await new Promise((r) => setTimeout(r, 1));
      }
    }
    if (end) c.end();
    const result = await decided;
    c.destroy();
    server.close();
    return result;
  };

  it('decides on as many bytes as it takes: a first read of "P" may be POST or the HTTP/2 preface', async () => {
    assert.deepEqual(await sniff(['GET / HTTP/1.1\r\nHost: a\r\n\r\n']), { h2: false, bytes: 'GET / HTTP/1.1\r\nHost: a\r\n\r\n' });
    assert.deepEqual(await sniff(['P', 'OST / HTTP/1.1\r\n\r\n']), { h2: false, bytes: 'POST / HTTP/1.1\r\n\r\n' });
    assert.deepEqual(await sniff(['PRI * HTTP/2.0\r\n', '\r\nSM\r\n\r\n\x00\x00']), { h2: true, bytes: 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00' });
    assert.deepEqual(await sniff(['PRI * HTTP/1.1\r\n\r\n']), { h2: false, bytes: 'PRI * HTTP/1.1\r\n\r\n' });
    // Ends while its bytes could still be either: nothing complete was sent, the connection is closed.
    assert.deepEqual(await sniff(['PR'], true), { h2: 'closed', bytes: '' });
  });

  it('a client that stops inside the preface is closed after the timeout', async (t) => {
    const server = createServer((local) => sniffH2(local, () => assert.fail('decided'), 100));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const t0 = Date.now();
    const c = connect((server.address() as AddressInfo).port, '127.0.0.1', () => c.write('PRI * HT'));
    c.on('error', () => undefined);
    // Closed by the server's 100 ms timeout (sniffH2's default is 30 s); the bound only keeps a broken one from hanging the test.
    await closed(c);
    t.diagnostic(`closed after ${Date.now() - t0} ms`);
    server.close();
  });
});
