import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isWritError } from '@writ/spiffe';
import { parseInbound, parseOutbound } from './proxy.ts';

describe('--inbound and --outbound', () => {
  it('an inbound upstream is HOST:PORT or http:// (HTTP/1.1), or h2c:// (HTTP/2 without TLS)', () => {
    assert.deepEqual(parseInbound('0.0.0.0:8443=127.0.0.1:8080', 'http'), { listen: { host: '0.0.0.0', port: 8443 }, upstream: { host: '127.0.0.1', port: 8080 }, mode: 'http', upstreamProtocol: 'http1' });
    assert.equal(parseInbound('0.0.0.0:8443=http://127.0.0.1:8080', 'http').upstreamProtocol, 'http1');
    assert.deepEqual(parseInbound('[::1]:8443=H2C://[::1]:50051', 'http').upstream, { host: '::1', port: 50051 });
    assert.equal(parseInbound('[::1]:8443=h2c://[::1]:50051', 'http').upstreamProtocol, 'h2c');
    for (const bad of ['8443', '0.0.0.0:8443=', '0.0.0.0:8443=a:1=b:2', '0.0.0.0:8443=https://a:1', '0.0.0.0:8443=h2c://a', '0.0.0.0:99999=a:1']) {
      assert.throws(() => parseInbound(bad, 'http'), (e) => isWritError(e, 'ERR_CONFIG_INVALID'), bad);
    }
    assert.throws(() => parseInbound('0.0.0.0:8443=h2c://a:1', 'tcp'), /needs --inbound-mode http/);
  });

  it('an outbound names the identity it must reach', () => {
    assert.deepEqual(parseOutbound('127.0.0.1:9000=spiffe://example.org/ns/orders/sa/api@orders.internal:8443'), { listen: { host: '127.0.0.1', port: 9000 }, spiffeId: 'spiffe://example.org/ns/orders/sa/api', target: { host: 'orders.internal', port: 8443 }, mode: 'http' });
    for (const bad of ['127.0.0.1:9000=orders:8443', '127.0.0.1:9000=spiffe://Bad Id@h:1']) assert.throws(() => parseOutbound(bad), bad);
  });
});
