import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { HttpError, forwardRequestHead, forwardResponseHead, headEnd, parseRequestHead, parseResponseHead } from './http1-head.ts';

const b = (s: string) => Buffer.from(s, 'latin1');
const req = (s: string) => parseRequestHead(b(s), headEnd(b(s)));
const res = (s: string, method = 'GET') => parseResponseHead(b(s), headEnd(b(s)), method);
const ADD = b('x-writ-peer-id: spiffe://t/caller\r\n');
const fwd = (s: string) => forwardRequestHead(req(s), ADD, ['x-writ-peer-id']).toString('latin1');

describe('forwarding request heads', () => {
  it('the common request goes as it came, with the proxy field added', () => {
    assert.equal(fwd('GET /a?b HTTP/1.1\r\nHost: x\r\nX-Y: 1\r\n\r\n'), 'GET /a?b HTTP/1.1\r\nHost: x\r\nX-Y: 1\r\nx-writ-peer-id: spiffe://t/caller\r\n\r\n');
  });

  it('drops a client-sent proxy field whatever its case, and connection-specific fields with what Connection names', () => {
    assert.equal(
      fwd(
        'GET / HTTP/1.1\r\nX-Writ-Peer-Id: spiffe://t/liar\r\nHost: x\r\nConnection: close, X-Secret\r\nx-secret: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\nProxy-Connection: x\r\nX-Keep: 2\r\n\r\n',
      ),
      'GET / HTTP/1.1\r\nHost: x\r\nX-Keep: 2\r\nx-writ-peer-id: spiffe://t/caller\r\n\r\n',
    );
  });

  it('never drops Content-Length or Transfer-Encoding, even when Connection names them', () => {
    assert.equal(
      fwd('POST / HTTP/1.1\r\nHost: x\r\nConnection: content-length\r\nContent-Length: 2\r\n\r\n'),
      'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nx-writ-peer-id: spiffe://t/caller\r\n\r\n',
    );
  });

  it('asks for keep-alive on behalf of HTTP/1.0, and keeps Upgrade for an upgrade', () => {
    assert.equal(fwd('GET / HTTP/1.0\r\n\r\n'), 'GET / HTTP/1.0\r\nx-writ-peer-id: spiffe://t/caller\r\nconnection: keep-alive\r\n\r\n');
    assert.equal(
      fwd('GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n'),
      'GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nx-writ-peer-id: spiffe://t/caller\r\nconnection: upgrade\r\n\r\n',
    );
  });

  it('what it forwards parses again to the same request, less the dropped fields (property)', () => {
    const name = fc.stringMatching(/^[A-Za-z][A-Za-z0-9-]{0,15}$/);
    const value = fc.stringMatching(/^[\x21-\x7e]([\x20-\x7e]{0,30}[\x21-\x7e])?$/);
    fc.assert(
      fc.property(fc.array(fc.tuple(name, value), { maxLength: 20 }), fc.constantFrom('1.0', '1.1'), (fields, version) => {
        const text = `GET /p HTTP/${version}\r\nHost: h\r\n${fields.map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`;
        let original;
        try {
          original = req(text);
        } catch (err) {
          assert.ok(err instanceof HttpError); // say, a second Host or a Content-Length that is not a number
          return;
        }
        const again = req(forwardRequestHead(original, ADD, ['x-writ-peer-id']).toString('latin1'));
        assert.equal(again.method, 'GET');
        assert.equal(again.target, '/p');
        assert.deepEqual(again.fields.all('x-writ-peer-id'), ['spiffe://t/caller']);
        assert.deepEqual(again.body, original.body);
        const hop = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'upgrade', 'x-writ-peer-id', ...original.head.connection]);
        const kept = original.fields.list.filter(([k]) => !hop.has(k.toLowerCase()) || ['content-length', 'transfer-encoding'].includes(k.toLowerCase()));
        assert.deepEqual(
          again.fields.list.filter(([k]) => !['x-writ-peer-id', 'connection'].includes(k.toLowerCase())),
          kept,
        );
      }),
    );
  });
});

describe('forwarding response heads', () => {
  const plain = req('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
  it('goes as it came when nothing is connection-specific', () => {
    assert.equal(forwardResponseHead(res('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok'), plain), undefined);
  });

  it("drops the upstream's connection fields, and says close when the client's connection ends", () => {
    const r = res('HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\nX-A: 1\r\n\r\nok');
    assert.equal(forwardResponseHead(r, plain)!.toString('latin1'), 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: 1\r\n\r\n');
    const closing = req('GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    assert.equal(forwardResponseHead(r, closing)!.toString('latin1'), 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: 1\r\nconnection: close\r\n\r\n');
    assert.equal(
      forwardResponseHead(res('HTTP/1.1 200 OK\r\n\r\n'), plain)!.toString('latin1'),
      'HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n',
      'a body delimited by close',
    );
  });

  it('reads status and framing; refuses a malformed status line with 502', () => {
    assert.deepEqual([res('HTTP/1.1 204 No Content\r\n\r\n').status, res('HTTP/1.1 204 No Content\r\n\r\n').body], [204, { kind: 'none' }]);
    assert.deepEqual(res('HTTP/1.0 200\r\nContent-Length: 5\r\n\r\n').body, { kind: 'length', n: 5 });
    assert.equal(res('HTTP/1.0 200\r\nContent-Length: 5\r\n\r\n').reusable, false, 'HTTP/1.0 without keep-alive');
    assert.deepEqual(res('HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n').body, { kind: 'chunked' });
    assert.deepEqual(res('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n', 'HEAD').body, { kind: 'none' });
    for (const bad of [
      'HTTP/2 200 OK\r\n\r\n',
      'HTTP/1.1 20 OK\r\n\r\n',
      'HTTP/1.1 200OK\r\n\r\n',
      'ICY 200 OK\r\n\r\n',
      'HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n',
    ]) {
      assert.throws(
        () => res(bad),
        (e: HttpError) => e.status === 502,
        bad,
      );
    }
  });
});
