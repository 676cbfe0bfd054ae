/**
 * The HTTP/1.1 relay against real sockets: a raw client on one side, a Node HTTP server (or a raw
 * one, for shapes Node would not send) on the other.
 */
import assert from 'node:assert/strict';
import { createServer as httpServer, type Server as HttpServer } from 'node:http';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { ChunkedScanner, HttpError, UpstreamPool, connectTcp, headEnd, parseRequestHead, relayHttp1 } from './http1.ts';
import { forwardRequestHead } from './http1-head.ts';

/** Resolves once `s` closes (an 'error' before it is fine); fails after 15 s, which only a hang takes on a loaded machine. */
const closed = (s: Socket): Promise<void> =>
  new Promise((resolve, reject) => {
    const guard = setTimeout(() => reject(new Error('the connection was not closed within 15 s')), 15_000);
    s.on('error', () => undefined).once('close', () => (clearTimeout(guard), resolve()));
  });

const head = (s: string) => {
  const b = Buffer.from(s, 'latin1');
  return parseRequestHead(b, headEnd(b));
};
const status = (s: string): number => {
  try {
    head(s);
    return 0;
  } catch (err) {
    return (err as HttpError).status;
  }
};

describe('request head parser', () => {
  it('reads method, path, framing and keep-alive', () => {
    const r = head('POST /v1/x?q=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nX-A: 1\r\nx-a: 2\r\n\r\n');
    assert.equal(r.method, 'POST');
    assert.equal(r.path, '/v1/x');
    assert.deepEqual(r.body, { kind: 'length', n: 5 });
    assert.equal(r.keepAlive, true);
    assert.deepEqual(r.fields.all('x-a'), ['1', '2']);
    assert.deepEqual(head('GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n').body, { kind: 'chunked' });
    assert.equal(head('GET / HTTP/1.0\r\n\r\n').keepAlive, false);
    assert.equal(head('GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n').keepAlive, true);
    assert.equal(head('GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n').keepAlive, false);
    assert.equal(head('GET http://a/b/c?d HTTP/1.1\r\nHost: a\r\n\r\n').path, '/b/c');
    // An absolute-form target's authority replaces Host when forwarded (RFC 9112 3.2.2); user
    // information in it is an error (RFC 9110 4.2.4).
    const abs = head('GET http://orders.internal:8080/b?c HTTP/1.1\r\nHost: elsewhere\r\nX-A: 1\r\n\r\n');
    assert.equal(abs.authority, 'orders.internal:8080');
    const fwd = forwardRequestHead(abs, Buffer.alloc(0), []).toString('latin1');
    assert.match(fwd, /^GET http:\/\/orders\.internal:8080\/b\?c HTTP\/1\.1\r\n/);
    assert.match(fwd, /\r\nhost: orders\.internal:8080\r\n/);
    assert.doesNotMatch(fwd, /elsewhere/);
    assert.match(fwd, /\r\nX-A: 1\r\n/);
    assert.equal(head('GET /x HTTP/1.1\r\nHost: a\r\n\r\n').authority, undefined);
    for (const host of ['', 'orders', 'orders.internal:8443', '127.0.0.1:80', '[::1]:8443', 'a:'])
      assert.equal(head(`GET / HTTP/1.1\r\nHost: ${host}\r\n\r\n`).path, '/', host);
    assert.equal(head('GET http://a HTTP/1.1\r\nHost: a\r\n\r\n').path, '/');
    assert.equal(head('GET http://a:8080/%61/b?c=/d HTTP/1.1\r\nHost: a\r\n\r\n').path, '/a/b');
    assert.throws(
      () => head('GET http://u:p@a/x HTTP/1.1\r\nHost: a\r\n\r\n'),
      (e) => e instanceof HttpError && e.status === 400,
    );
    // A later 1.x minor version is taken, and forwarded, as 1.1 (RFC 9112 2.3, RFC 9110 6.2).
    const later = head('GET /x HTTP/1.7\r\nHost: a\r\n\r\n');
    assert.equal(later.version, '1.1');
    assert.match(forwardRequestHead(later, Buffer.alloc(0), []).toString('latin1'), /^GET \/x HTTP\/1\.1\r\n/);
  });

  it('refuses every framing two parsers could read differently, and other malformed heads', () => {
    const cases: Array<[string, number]> = [
      ['POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n', 400],
      ['POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n', 400],
      ['POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n', 400],
      ['POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n', 400],
      ['POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n', 400],
      ['POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n', 400],
      ['GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n  folded\r\n\r\n', 400],
      ['GET / HTTP/1.1\r\nHost : a\r\n\r\n', 400],
      ['GET / HTTP/1.1\r\nHost: a\nX: 1\r\n\r\n', 400],
      ['GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n', 400],
      ['GET / HTTP/1.1\r\n\r\n', 400],
      ['GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n', 400],
      ['GET /a b HTTP/1.1\r\nHost: a\r\n\r\n', 400],
      ['GET a HTTP/1.1\r\nHost: a\r\n\r\n', 400],
      ['G(T / HTTP/1.1\r\nHost: a\r\n\r\n', 400],
      ['GET http://[::1 HTTP/1.1\r\nHost: a\r\n\r\n', 400],
      ['GET / HTTP/2.0\r\nHost: a\r\n\r\n', 505],
      ['CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n', 405],
      // A Host that is not uri-host[:port] (RFC 9110 7.2).
      ['GET / HTTP/1.1\r\nHost: a b\r\n\r\n', 400],
      ['GET / HTTP/1.1\r\nHost: a/b\r\n\r\n', 400],
      ['GET / HTTP/1.1\r\nHost: u@a\r\n\r\n', 400],
      ['GET / HTTP/1.1\r\nHost: a:b\r\n\r\n', 400],
      ['GET / HTTP/1.1\r\nHost: [::1\r\n\r\n', 400],
      // An absolute-form path gets the checks an origin-form one does (the URL parser would resolve it).
      ['GET http://a/v1/../admin HTTP/1.1\r\nHost: a\r\n\r\n', 400],
      ['GET http://a/v1\\admin HTTP/1.1\r\nHost: a\r\n\r\n', 400],
      [`GET / HTTP/1.1\r\nHost: a\r\n${'X: 1\r\n'.repeat(101)}\r\n`, 431],
    ];
    for (const [text, want] of cases) assert.equal(status(text), want, JSON.stringify(text));
  });

  it('never throws anything but an HttpError on arbitrary bytes (property)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
        const b = Buffer.concat([Buffer.from(bytes), Buffer.from('\r\n\r\n')]);
        try {
          parseRequestHead(b, headEnd(b));
        } catch (err) {
          assert.ok(err instanceof HttpError, String(err));
          assert.ok([400, 405, 431, 505].includes(err.status));
        }
      }),
      { numRuns: 2000 },
    );
  });
});

describe('chunked framing', () => {
  it('finds the end of a chunked body however the bytes are split', () => {
    const body = Buffer.from('5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\nNEXT');
    const end = body.length - 4;
    for (let cut = 1; cut < end; cut++) {
      const s = new ChunkedScanner();
      const a = s.feed(body.subarray(0, cut));
      assert.equal(a, cut);
      assert.equal(s.done, false);
      const b = s.feed(body.subarray(cut));
      assert.equal(a + b, end, `cut at ${cut}`);
      assert.equal(s.done, true);
    }
  });
  it('refuses malformed sizes and data longer than its size', () => {
    for (const bad of ['zz\r\n', '5\r\nhelloX\r\n', '5\nhello', `${'f'.repeat(16)}\r\n`])
      assert.throws(() => new ChunkedScanner().feed(Buffer.from(bad)), HttpError, bad);
  });
});

describe('upstream pool', () => {
  it('a burst waits for connections to come free instead of opening one per request', async () => {
    const sink = createServer((c) => c.resume());
    const port = await new Promise<number>((r) => sink.listen(0, '127.0.0.1', () => r((sink.address() as AddressInfo).port)));
    let opens = 0;
    // A slow handshake: the burst's opens finish only once the first connection was released.
    let handshake!: () => void;
    const handshakes = new Promise<void>((r) => (handshake = r));
    const pool = new UpstreamPool(
      () =>
        new Promise((resolve, reject) => {
          const slow = ++opens > 1;
          const s = connect(port, '127.0.0.1');
          s.once('connect', () => (slow ? handshakes.then(() => resolve(s)) : resolve(s)));
          s.once('error', reject);
        }),
      { maxOpening: 2 },
    );
    const first = await pool.acquire();
    const burst = Array.from({ length: 6 }, () => pool.acquire());
    pool.release(first.upstream);
    handshake();
    const got = await Promise.all(burst.slice(0, 3));
    assert.equal(opens, 3, 'the first, then two opened for the burst');
    for (const g of got) pool.release(g.upstream);
    const rest = await Promise.all(burst.slice(3));
    assert.equal(opens, 3, 'the rest reuse freed connections');
    assert.ok(rest.every((r) => r.reused));
    for (const g of rest) pool.release(g.upstream);
    pool.close();
    sink.close();
  });

  it('waiters learn when the upstream cannot be reached at all', async () => {
    let calls = 0;
    const pool = new UpstreamPool(
      () => {
        calls++;
        return Promise.reject(new Error('ECONNREFUSED'));
      },
      { maxOpening: 1 },
    );
    await assert.rejects(pool.acquire(), /ECONNREFUSED/);
    assert.equal(calls, 1);
  });
});

const BIG = (await import('node:crypto')).randomBytes(24 * 1024 * 1024);

/**
 * A raw client: writes `text`, collects everything until the server closes or `until` matches. A
 * server that does neither within 15 s fails the test (generous for a loaded machine; only a hang takes it).
 */
function exchange(port: number, text: string | string[], until?: RegExp, gapMs = 20): Promise<string> {
  return new Promise((resolve, reject) => {
    const s: Socket = connect(port, '127.0.0.1');
    let out = '';
    const done = (): void => (clearTimeout(guard), s.destroy(), resolve(out));
    s.on('data', (d) => {
      out += d.toString('latin1');
      if (until?.test(out)) done();
    });
    s.on('close', done);
    s.on('error', done);
    const parts = Array.isArray(text) ? text : [text];
    let i = 0;
    const next = (): void => {
      if (i < parts.length) s.write(parts[i++]!, () => setTimeout(next, gapMs));
    };
    s.on('connect', next);
    const guard = setTimeout(
      () => (s.destroy(), reject(new Error(`neither closed nor ${until} within 15 s; got ${JSON.stringify(out.slice(0, 200))}`))),
      15_000,
    );
  });
}

describe('relay', () => {
  let app: HttpServer;
  let relay: Server;
  let port = 0;
  let appConnections = 0;
  let optionsOrTrace = 0;
  const listen = (srv: Server | HttpServer): Promise<number> => new Promise((r) => srv.listen(0, '127.0.0.1', () => r((srv.address() as AddressInfo).port)));

  before(async () => {
    app = httpServer((req, res) => {
      if (req.method === 'OPTIONS' || req.method === 'TRACE') optionsOrTrace++;
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        if (req.url === '/chunked') {
          res.write('ab');
          res.end('cd');
          return;
        }
        if (req.url === '/nobody') return void res.writeHead(204).end();
        if (req.url === '/big') {
          res.setHeader('content-length', BIG.length);
          return void res.end(BIG);
        }
        res.setHeader('content-type', 'application/json');
        if (req.url === '/hop')
          return void res.end(
            JSON.stringify({
              xfoo: req.headers['x-foo'] ?? null,
              te: req.headers['te'] ?? null,
              keep: req.headers['keep-alive'] ?? null,
              e2e: req.headers['x-e2e'] ?? null,
              via: req.headers['via'] ?? null,
              mf: req.headers['max-forwards'] ?? null,
            }),
          );
        res.end(
          JSON.stringify({
            method: req.method,
            url: req.url,
            body: Buffer.concat(chunks).toString(),
            peer: req.headers['x-writ-peer-id'] ?? null,
            conn: req.headers['connection'] ?? null,
          }),
        );
      });
    });
    app.on('connection', () => appConnections++);
    app.on('upgrade', (_req, socket) => {
      socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n');
      socket.pipe(socket);
    });
    const appPort = await listen(app);
    const pool = new UpstreamPool((onData) => connectTcp('127.0.0.1', appPort, onData));
    relay = createServer((c) =>
      relayHttp1(c, {
        pool,
        addFields: [['x-writ-peer-id', 'spiffe://t/caller']],
        dropFields: ['x-writ-peer-id'],
        authorize: (r) => (r.path.startsWith('/denied') ? { status: 403, body: { code: 'DENY_RULE', decisionId: 'd1' } } : undefined),
      }),
    );
    port = await listen(relay);
  });
  after(() => {
    relay.close();
    app.close();
    app.closeAllConnections();
  });

  it('forwards requests with the peer field (a client-sent one dropped) and keeps upstream connections for reuse', async () => {
    const before = appConnections;
    for (let i = 0; i < 3; i++) {
      const r = await exchange(port, `GET /a/${i} HTTP/1.1\r\nHost: x\r\nx-writ-peer-id: spiffe://t/liar\r\nConnection: keep-alive\r\n\r\n`, /\}$/);
      const body = JSON.parse(r.slice(r.indexOf('\r\n\r\n') + 4));
      assert.deepEqual(body, { method: 'GET', url: `/a/${i}`, body: '', peer: 'spiffe://t/caller', conn: null });
    }
    assert.equal(appConnections - before, 1, 'three client connections, one upstream connection');
  });

  it('a large response to a slow reader arrives whole and in order (the upstream paused and resumed under back-pressure)', async () => {
    const { createHash } = await import('node:crypto');
    const { connect } = await import('node:net');
    const got = await new Promise<{ hash: string; bytes: number }>((resolve, reject) => {
      const s = connect(port, '127.0.0.1', () => s.write('GET /big HTTP/1.1\r\nHost: x\r\n\r\n'));
      const h = createHash('sha256');
      let head = '';
      let bytes = 0;
      s.on('data', (d: Buffer) => {
        let body = d;
        if (!head.includes('\r\n\r\n')) {
          head += d.toString('latin1');
          const i = head.indexOf('\r\n\r\n');
          if (i < 0) return;
          body = Buffer.from(head.slice(i + 4), 'latin1');
          head = head.slice(0, i + 4);
        }
        h.update(body);
        bytes += body.length;
        // A slow reader: stops now and then, long enough for every buffer on the way to fill.
        if (Math.random() < 0.05) s.pause(), setTimeout(() => s.resume(), 20);
        if (bytes === BIG.length) s.destroy(), resolve({ hash: h.digest('hex'), bytes });
      });
      s.on('error', reject);
    });
    assert.equal(got.bytes, BIG.length);
    assert.equal(got.hash, createHash('sha256').update(BIG).digest('hex'));
  });

  it('connection-specific fields stop at the proxy, both ways (RFC 9110 7.6.1)', async () => {
    const r = await exchange(
      port,
      'GET /hop HTTP/1.1\r\nHost: x\r\nConnection: X-Foo\r\nX-Foo: secret\r\nTE: trailers\r\nKeep-Alive: 300\r\nX-E2E: kept\r\n\r\n',
      /\}$/,
    );
    // The proxy adds itself to Via (RFC 9110 7.6.3), after the hops before it, with the version the request came in.
    assert.deepEqual(JSON.parse(r.slice(r.indexOf('\r\n\r\n') + 4)), { xfoo: null, te: null, keep: null, e2e: 'kept', via: '1.1 writ', mf: null });
    const via = await exchange(port, 'GET /hop HTTP/1.0\r\nVia: 1.1 edge\r\n\r\n', /\}$/);
    assert.equal(JSON.parse(via.slice(via.indexOf('\r\n\r\n') + 4)).via, '1.1 edge, 1.0 writ');
    // The app (Node) answers with Connection: keep-alive and Keep-Alive: timeout=5; neither is the client's business.
    assert.doesNotMatch(r.slice(0, r.indexOf('\r\n\r\n')), /keep-alive/i);
    const closing = await exchange(port, 'GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    assert.match(closing, /\r\nconnection: close\r\n/);
    assert.match(closing, /\}$/, 'answered in full, then closed');
    // HTTP/1.0 keep-alive holds when the upstream's answer has a length; a body the upstream
    // delimits by closing is passed on with connection: close.
    const old = await exchange(port, 'GET /nobody HTTP/1.0\r\nConnection: keep-alive\r\n\r\n', /\r\n\r\n$/);
    assert.match(old, /^HTTP\/1\.1 204/);
    assert.match(old, /\r\nconnection: keep-alive\r\n/i);
    const delimited = await exchange(port, 'GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n');
    assert.match(delimited, /\r\nconnection: close\r\n/);
    assert.match(delimited, /\}$/);
  });

  it('Max-Forwards on OPTIONS and TRACE (RFC 9110 7.6.2): at 0 the proxy answers as the final recipient, otherwise forwards one fewer', async () => {
    const before = optionsOrTrace;
    const here = await exchange(port, 'OPTIONS /hop HTTP/1.1\r\nHost: x\r\nMax-Forwards: 0\r\n\r\n', /\r\n\r\n$/);
    assert.match(here, /^HTTP\/1\.1 200 OK\r\ncontent-length: 0\r\n/);
    const trace = await exchange(port, 'TRACE /hop HTTP/1.1\r\nHost: x\r\nMax-Forwards: 0\r\nCookie: secret\r\n\r\n', /\}$/);
    assert.match(trace, /^HTTP\/1\.1 405 [^]*\r\nallow: OPTIONS\r\n/);
    assert.doesNotMatch(trace, /secret/, 'a TRACE is not reflected');
    const onward = await exchange(port, 'OPTIONS /hop HTTP/1.1\r\nHost: x\r\nMax-Forwards: 5\r\n\r\n', /\}$/);
    assert.equal(JSON.parse(onward.slice(onward.indexOf('\r\n\r\n') + 4)).mf, '4');
    // Other methods carry it untouched; a malformed one on OPTIONS is a 400.
    const get = await exchange(port, 'GET /hop HTTP/1.1\r\nHost: x\r\nMax-Forwards: 0\r\n\r\n', /\}$/);
    assert.equal(JSON.parse(get.slice(get.indexOf('\r\n\r\n') + 4)).mf, '0');
    assert.match(await exchange(port, 'OPTIONS /hop HTTP/1.1\r\nHost: x\r\nMax-Forwards: -1\r\n\r\n'), /^HTTP\/1\.1 400 /);
    assert.equal(optionsOrTrace - before, 1, 'only the one with hops left reached the app');
  });

  it('pipelined requests are answered in order, a denied one in its place with 403 JSON', async () => {
    const r = await exchange(
      port,
      'GET /one HTTP/1.1\r\nHost: x\r\n\r\nGET /denied HTTP/1.1\r\nHost: x\r\n\r\nPOST /three HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc',
      /"url":"\/three"[^}]*\}$/,
    );
    const order = [...r.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => m[1]);
    assert.deepEqual(order, ['200', '403', '200']);
    assert.match(r, /\{"code":"DENY_RULE","decisionId":"d1"\}/);
    assert.match(r, /"body":"abc"/);
  });

  it('empty lines before a request line are ignored (RFC 9112 2.2), also between pipelined requests', async () => {
    const r = await exchange(
      port,
      [
        '\r\nGET /one HTTP/1.1\r\nHost: x\r\n\r\n',
        '\r\n\r\nPOST /two HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi\r\nGET /three HTTP/1.1\r\nHost: x\r\n\r\n',
      ],
      /"url":"\/three"[^}]*\}$/,
    );
    assert.deepEqual(
      [...r.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => m[1]),
      ['200', '200', '200'],
    );
    assert.match(r, /"body":"hi"/);
  });

  it('decisions see the path in normal form; a dot segment is a 400 with its own code', async () => {
    const seen: string[] = [];
    const pool = new UpstreamPool((onData) => connectTcp('127.0.0.1', (app.address() as AddressInfo).port, onData));
    const other = createServer((c) => relayHttp1(c, { pool, authorize: (r) => void seen.push(r.path) }));
    const p = await listen(other);
    const r = await exchange(p, 'GET /v1/%6Frders//7?q=%2e%2e HTTP/1.1\r\nHost: x\r\n\r\n', /\}$/);
    assert.match(r, /^HTTP\/1\.1 200/);
    assert.match(r, /"url":"\/v1\/%6Frders\/\/7\?q=%2e%2e"/, 'forwarded as it came');
    assert.deepEqual(seen, ['/v1/orders/7']);
    const bad = await exchange(p, 'GET /v1/%2E%2e/admin HTTP/1.1\r\nHost: x\r\n\r\n');
    assert.match(bad, /^HTTP\/1\.1 400 /);
    assert.match(bad, /"code":"ERR_PATH_INVALID"/);
    assert.deepEqual(seen, ['/v1/orders/7'], 'never decided, never forwarded');
    other.close();
    pool.close();
  });

  it('chunked uploads split across writes, chunked and bodiless responses', async () => {
    const up = await exchange(port, ['POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nfoo', '\r\n4\r\nbar!\r\n0\r\n\r\n'], /\}$/);
    assert.match(up, /"body":"foobar!"/);
    const ch = await exchange(port, 'GET /chunked HTTP/1.1\r\nHost: x\r\n\r\n', /0\r\n\r\n$/);
    assert.match(ch, /transfer-encoding: chunked/i);
    assert.match(ch, /2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n$/);
    const nb = await exchange(
      port,
      'GET /nobody HTTP/1.1\r\nHost: x\r\n\r\nHEAD /h HTTP/1.1\r\nHost: x\r\n\r\nGET /after HTTP/1.1\r\nHost: x\r\n\r\n',
      /"url":"\/after"[^}]*\}$/,
    );
    assert.deepEqual(
      [...nb.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => m[1]),
      ['204', '200', '200'],
    );
  });

  it('Expect: 100-continue passes the interim response; Upgrade switches to a tunnel', async () => {
    const c = await exchange(port, ['POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n', 'hi'], /\}$/);
    assert.match(c, /^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 200/);
    assert.match(c, /"body":"hi"/);
    const u = await exchange(
      port,
      ['GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n', 'ping-through-tunnel'],
      /ping-through-tunnel/,
    );
    assert.match(u, /^HTTP\/1\.1 101/);
    assert.match(u, /ping-through-tunnel$/);
  });

  it('malformed and smuggling-shaped requests get 400 and a closed connection; the relay keeps serving', async () => {
    const r = await exchange(
      port,
      'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n',
    );
    assert.match(r, /^HTTP\/1\.1 400 /);
    assert.doesNotMatch(r, /smuggled/);
    assert.match(r, /connection: close/);
    const big = await exchange(port, `GET / HTTP/1.1\r\nHost: x\r\nX: ${'a'.repeat(20_000)}\r\n\r\n`);
    assert.match(big, /^HTTP\/1\.1 431 /);
    assert.match(big, /"code":"ERR_HEADERS_TOO_LARGE"/);
    assert.match(await exchange(port, 'GET /ok HTTP/1.1\r\nHost: x\r\n\r\n', /\}$/), /^HTTP\/1\.1 200/);
  });

  it('a head trickled in too slowly gets 408; an idle keep-alive connection is closed quietly', async () => {
    const slow = createServer((c) =>
      relayHttp1(c, { pool: new UpstreamPool(() => Promise.reject(new Error('unused'))), headTimeoutMs: 300, keepAliveMs: 400 }),
    );
    const sp = await listen(slow);
    const r = await exchange(sp, ['GET / HTTP/1.1\r\n', 'Host: x\r\n', 'X: 1\r\n', 'X-Late: 1\r\n'], undefined, 250);
    assert.match(r, /^HTTP\/1\.1 408 /);
    assert.match(r, /"code":"ERR_REQUEST_TIMEOUT"/);
    // exchange() fails unless the relay closes it (its timeouts here are under a second, the defaults minutes).
    const idle = await exchange(sp, []);
    assert.equal(idle, '', 'closed without a word');
    slow.close();
  });

  it('a client that half-closes after its request still gets the answer', async () => {
    const half = createServer({ allowHalfOpen: true }, (c) =>
      relayHttp1(c, { pool: new UpstreamPool((onData) => connectTcp('127.0.0.1', (app.address() as AddressInfo).port, onData)) }),
    );
    const hp = await listen(half);
    const got = await new Promise<string>((resolve) => {
      const s = connect(hp, '127.0.0.1', () => s.end('GET /half HTTP/1.1\r\nHost: x\r\n\r\n'));
      let out = '';
      s.on('data', (d) => (out += d.toString()));
      s.on('close', () => resolve(out));
    });
    half.close();
    assert.match(got, /^HTTP\/1\.1 200/);
    assert.match(got, /"url":"\/half"/);
  });

  it('a client that half-closes before the end of its body gets 400 at once, not a connection held open forever', async () => {
    // No timeout of the relay's can close the connection within the test: only the half-close can.
    const half = createServer({ allowHalfOpen: true }, (c) =>
      relayHttp1(c, {
        pool: new UpstreamPool((onData) => connectTcp('127.0.0.1', (app.address() as AddressInfo).port, onData)),
        headTimeoutMs: 600_000,
        keepAliveMs: 600_000,
      }),
    );
    const hp = await listen(half);
    for (const text of [
      'POST /short HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc',
      'POST /short HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab',
    ]) {
      const s = connect(hp, '127.0.0.1', () => s.end(text));
      let got = '';
      s.on('data', (d) => (got += d.toString()));
      await closed(s);
      assert.match(got, /^HTTP\/1\.1 400 [^]*"code":"ERR_BODY_INCOMPLETE"/, JSON.stringify(text));
    }
    half.close();
  });

  it('an early answer (413) while a large body is still arriving reaches the client, and the connection ends', async () => {
    const early = httpServer((req, res) => {
      // Answers at once and drains what comes (a reset would lose the answer on any proxy).
      req.resume();
      res.writeHead(413, { 'content-length': '0' }).end();
    });
    const ep = await listen(early);
    const pool = new UpstreamPool((onData) => connectTcp('127.0.0.1', ep, onData));
    const r3 = createServer((c) => relayHttp1(c, { pool }));
    const p3 = await listen(r3);
    const got = await new Promise<string>((resolve) => {
      const s = connect(p3, '127.0.0.1');
      let out = '';
      s.on('data', (d) => (out += d.toString()));
      s.on('error', () => undefined);
      s.on('close', () => resolve(out));
      s.write('POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 50000000\r\n\r\n');
      const chunk = Buffer.alloc(64 * 1024, 97);
      let sent = 0;
      const more = (): void => {
        while (sent < 50_000_000 && !s.destroyed) {
          sent += chunk.length;
          if (!s.write(chunk)) return void s.once('drain', more);
        }
      };
      more();
      // "The connection ends": by the relay, not by this bound (generous for a loaded machine).
      setTimeout(() => (s.destroy(), resolve('still open after 15 s')), 15_000);
    });
    r3.close();
    early.close();
    assert.match(got, /^HTTP\/1\.1 413/);
  });

  it("an HTTP/1.0 upstream's answers go out with the proxy's own version, HTTP/1.1 (RFC 9112 2.3), framed as they came", async () => {
    // A raw upstream that speaks HTTP/1.0: a length-delimited answer, then a close-delimited one.
    const old = createServer((c) =>
      c.on('data', (d: Buffer) => {
        if (d.toString().startsWith('GET /len ')) c.write('HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok');
        else c.end('HTTP/1.0 200 OK\r\n\r\nuntil close');
      }),
    );
    const op = await listen(old);
    const r4 = createServer((c) => relayHttp1(c, { pool: new UpstreamPool((onData) => connectTcp('127.0.0.1', op, onData)) }));
    const p4 = await listen(r4);
    const len = await exchange(p4, 'GET /len HTTP/1.1\r\nHost: x\r\n\r\n', /ok$/);
    assert.match(len, /^HTTP\/1\.1 200 OK\r\n/);
    assert.match(len, /\r\nContent-Length: 2\r\n/);
    const closing = await exchange(p4, 'GET /close HTTP/1.1\r\nHost: x\r\n\r\n');
    assert.match(closing, /^HTTP\/1\.1 200 OK\r\n/);
    assert.match(closing, /\r\nconnection: close\r\n\r\nuntil close$/);
    r4.close();
    old.close();
  });

  it('an unreachable upstream is a 502 with a code', async () => {
    const dead = createServer();
    const deadPort = await listen(dead);
    await new Promise((r) => dead.close(r));
    const pool = new UpstreamPool((onData) => connectTcp('127.0.0.1', deadPort, onData));
    const r2 = createServer((c) => relayHttp1(c, { pool }));
    const p2 = await listen(r2);
    const r = await exchange(p2, 'GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    r2.close();
    assert.match(r, /^HTTP\/1\.1 502 /);
    assert.match(r, /"code":"ERR_UPSTREAM"/);
  });
});
