/**
 * HTTP/1.1 for the proxy: a strict message-head parser, chunked-body framing, a pool of upstream
 * connections, and a relay that moves requests and responses between a client connection and
 * pooled upstream connections without re-encoding bodies.
 *
 * Strict on purpose (RFC 9112): a request whose framing two parsers could read differently is
 * refused with 400 and the connection closed: Content-Length together with Transfer-Encoding,
 * several Content-Length fields, a Transfer-Encoding whose last coding is not chunked, obs-fold,
 * bare LF or CR, whitespace before the colon, control characters, a missing or repeated Host.
 */
import { connect, type Socket } from 'node:net';

import {
  HttpError,
  MAX_HEAD,
  forwardRequestHead,
  forwardResponseHead,
  headEnd,
  parseRequestHead,
  parseResponseHead,
  type Framing,
  type RequestHead,
  type ResponseHead,
} from './http1-head.ts';

export {
  HttpError,
  MAX_HEAD,
  headEnd,
  parseMaxForwards,
  parseRequestHead,
  parseResponseHead,
  type Fields,
  type Framing,
  type RequestHead,
  type ResponseHead,
} from './http1-head.ts';

/** The name the proxy gives itself in the Via field of each request it forwards (RFC 9110 7.6.3). */
export const VIA = 'writ';
/** Idle keep-alive connections close after this (no limit while a request is in flight). */
const KEEPALIVE_TIMEOUT_MS = 120_000;
/** A request head must be complete this long after its first byte. */
const HEAD_TIMEOUT_MS = 30_000;
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const EMPTY = Buffer.alloc(0);

// Deadlines (idle keep-alive connections, slow heads, idle pooled upstreams) for every connection
// from one timer: socket.setTimeout re-arms a timer on every read and write (about 1% of the
// proxy's CPU under load); here activity stamps a number and a sweep four times a second checks.
const SWEEP_MS = 250;
const sweeps = new Set<(now: number) => void>();
let sweepTimer: NodeJS.Timeout | undefined;
/** The time as of the last sweep: good enough for stamping activity against deadlines of seconds. */
let coarseNow = Date.now();
function onSweep(check: (now: number) => void): () => void {
  sweeps.add(check);
  if (!sweepTimer) {
    coarseNow = Date.now();
    sweepTimer = setInterval(() => {
      coarseNow = Date.now();
      for (const f of sweeps) f(coarseNow);
    }, SWEEP_MS);
    sweepTimer.unref();
  }
  return () => {
    sweeps.delete(check);
    if (sweeps.size === 0 && sweepTimer) clearInterval(sweepTimer), (sweepTimer = undefined);
  };
}

/**
 * Finds where a chunked body ends, across as many calls as the bytes take to arrive. Bytes are
 * not changed (they are forwarded as they came); sizes, line ends and trailer size are checked.
 */
export class ChunkedScanner {
  #state: 'size' | 'data' | 'data-end' | 'trailer' = 'size';
  #line = '';
  #left = 0;
  #trailerBytes = 0;
  done = false;
  readonly errorStatus: number;

  constructor(errorStatus = 400) {
    this.errorStatus = errorStatus;
  }

  /** Consumes from `buf[start..]`; returns how many bytes belong to the body (stops at its end). */
  feed(buf: Buffer, start = 0): number {
    let i = start;
    while (i < buf.length && !this.done) {
      if (this.#state === 'data') {
        const n = Math.min(this.#left, buf.length - i);
        i += n;
        this.#left -= n;
        if (this.#left === 0) (this.#state = 'data-end'), (this.#line = '');
        continue;
      }
      // Line-oriented states: read up to the next LF.
      const lf = buf.indexOf(10, i);
      const stop = lf < 0 ? buf.length : lf + 1;
      this.#line += buf.toString('latin1', i, stop);
      i = stop;
      if (this.#line.length > 4096) throw new HttpError(this.errorStatus, 'chunk line too long');
      if (lf < 0) break;
      if (!this.#line.endsWith('\r\n') || this.#line.indexOf('\r') !== this.#line.length - 2)
        throw new HttpError(this.errorStatus, 'chunked body: a line does not end with CRLF');
      const line = this.#line.slice(0, -2);
      this.#line = '';
      if (this.#state === 'data-end') {
        if (line !== '') throw new HttpError(this.errorStatus, 'chunked body: data longer than its size');
        this.#state = 'size';
      } else if (this.#state === 'size') {
        const m = /^([0-9a-fA-F]{1,15})(?:[ \t]*;[\t\x20-\x7e\x80-\xff]*)?$/.exec(line);
        if (!m) throw new HttpError(this.errorStatus, 'chunked body: malformed chunk size');
        this.#left = parseInt(m[1]!, 16);
        this.#state = this.#left === 0 ? 'trailer' : 'data';
      } else {
        this.#trailerBytes += line.length + 2;
        if (this.#trailerBytes > MAX_HEAD) throw new HttpError(this.errorStatus, 'chunked body: trailer too large');
        if (line === '') this.done = true;
        else if (line[0] === ' ' || line[0] === '\t' || !TOKEN.test(line.slice(0, Math.max(0, line.indexOf(':')))))
          throw new HttpError(this.errorStatus, 'chunked body: malformed trailer field');
      }
    }
    return i - start;
  }
}

/** Counts a body through; `take` returns how many of the offered bytes belong to it. */
export class BodyCounter {
  #left: number;
  #chunked: ChunkedScanner | undefined;
  readonly framing: Framing;
  constructor(framing: Framing, errorStatus = 400) {
    this.framing = framing;
    this.#left = framing.kind === 'length' ? framing.n : 0;
    this.#chunked = framing.kind === 'chunked' ? new ChunkedScanner(errorStatus) : undefined;
  }
  get done(): boolean {
    if (this.framing.kind === 'close') return false;
    return this.#chunked ? this.#chunked.done : this.#left === 0;
  }
  take(buf: Buffer, start: number): number {
    if (this.framing.kind === 'close') return buf.length - start;
    if (this.#chunked) return this.#chunked.feed(buf, start);
    const n = Math.min(this.#left, buf.length - start);
    this.#left -= n;
    return n;
  }
}

// ------------------------------------------------------------------------------------------ pool

/** Where an upstream connection's bytes go (set by the pool). */
export type OnData = (d: Buffer) => void;

/** One read buffer for every connection `connectTcp` makes: reads are handled synchronously. */
const READ_BUFFER = Buffer.allocUnsafe(64 * 1024);

/**
 * A plain TCP connection (an `UpstreamPool` opener for a local app), resolved once connected. Its
 * bytes go to `onData` straight from the read (Node's `onread`), copied out of a shared buffer:
 * no 64 KiB allocation and no stream machinery per read, which cost several microseconds a request.
 */
export function connectTcp(host: string, port: number, onData: OnData = () => undefined): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({
      host,
      port,
      noDelay: true,
      onread: { buffer: READ_BUFFER, callback: (n: number, b: Uint8Array) => (onData(Buffer.from(b.subarray(0, n))), true) },
    });
    s.once('connect', () => (s.off('error', reject), resolve(s)));
    s.once('error', reject);
  });
}

export interface Upstream {
  readonly socket: Socket;
  owner: Exchange | undefined;
  /** When it went back to the pool. */
  idleSince?: number;
}

/**
 * Keep-alive connections to one upstream, reused LIFO. Idle ones close after `idleMs` (below
 * Node's 5 s keep-alive default, so the proxy closes first rather than racing the upstream's close).
 */
export class UpstreamPool {
  readonly #idle: Upstream[] = [];
  readonly #open: (onData: OnData) => Promise<Socket>;
  readonly #maxIdle: number;
  readonly #idleMs: number;
  readonly #maxOpening: number;
  /** Requests waiting for a connection while `#maxOpening` are being opened. */
  readonly #waiters: Array<{ resolve: (v: { upstream: Upstream; reused: boolean }) => void; reject: (e: Error) => void }> = [];
  #opening = 0;
  #live = 0;
  #closed = false;

  /** `open` makes a connection whose bytes go to `onData` (`connectTcp` for a plain one). */
  constructor(open: (onData: OnData) => Promise<Socket>, opts: { maxIdle?: number; idleMs?: number; maxOpening?: number } = {}) {
    this.#open = open;
    this.#maxIdle = opts.maxIdle ?? 128;
    this.#idleMs = opts.idleMs ?? 4000;
    this.#maxOpening = opts.maxOpening ?? 4;
    // Idle connections close after idleMs (below the upstream's own keep-alive timeout, so the
    // proxy closes first rather than racing the upstream's close).
    this.#stopSweep = onSweep((now) => {
      for (const u of this.#idle) if (now - u.idleSince! > this.#idleMs) u.socket.destroy();
    });
  }
  readonly #stopSweep: () => void;

  /**
   * An idle connection if there is one (unless `reuse` is false), else a new one. A burst does not
   * open a connection per request: with `maxOpening` opens under way, a request waits for the
   * next connection to come free (a response takes a millisecond; an mTLS handshake on both
   * sides takes longer, and forty of them at once were a 60 ms stall).
   */
  async acquire(reuse = true): Promise<{ upstream: Upstream; reused: boolean }> {
    const idle = reuse ? this.takeIdle() : undefined;
    if (idle) return { upstream: idle, reused: true };
    if (reuse && this.#opening >= this.#maxOpening && this.#live > 0) {
      return new Promise((resolve, reject) => this.#waiters.push({ resolve, reject }));
    }
    return { upstream: await this.#connect(), reused: false };
  }

  /** The most recently used idle connection, if there is one. */
  takeIdle(): Upstream | undefined {
    while (this.#idle.length) {
      const u = this.#idle.pop()!;
      if (!u.socket.destroyed && u.socket.writable) return u;
    }
    return undefined;
  }

  async #connect(): Promise<Upstream> {
    this.#opening++;
    let socket: Socket;
    let u: Upstream | undefined;
    let unsolicited = false;
    try {
      // Bytes with no request to answer (before the pool has the connection, or while it is idle) end it.
      socket = await this.#open((d) => (u?.owner ? u.owner.upstreamData(d) : u ? u.socket.destroy() : (unsolicited = true)));
    } catch (err) {
      // Nothing to wait for any more: the waiters learn why.
      if (this.#live === 0) for (const w of this.#waiters.splice(0)) w.reject(err as Error);
      throw err;
    } finally {
      this.#opening--;
    }
    this.#live++;
    socket.setNoDelay(true);
    const up: Upstream = (u = { socket, owner: undefined });
    socket.on('end', () => socket.destroy());
    socket.on('close', () => {
      this.#live--;
      const i = this.#idle.indexOf(up);
      if (i >= 0) this.#idle.splice(i, 1);
      up.owner?.upstreamClosed();
      // Waiters must not wait on a connection that is gone: open one for the first of them.
      if (this.#waiters.length && this.#opening < this.#maxOpening && !this.#closed) {
        const w = this.#waiters.shift()!;
        this.#connect().then((c) => w.resolve({ upstream: c, reused: false }), w.reject);
      }
    });
    socket.on('error', () => undefined);
    if (unsolicited) socket.destroy();
    return up;
  }

  release(u: Upstream): void {
    u.owner = undefined;
    if (this.#closed || u.socket.destroyed) return void u.socket.destroy();
    if (u.socket.isPaused()) u.socket.resume();
    const w = this.#waiters.shift();
    if (w) return w.resolve({ upstream: u, reused: true });
    if (this.#idle.length >= this.#maxIdle) return void u.socket.destroy();
    u.idleSince = coarseNow;
    this.#idle.push(u);
  }

  close(): void {
    this.#closed = true;
    this.#stopSweep();
    for (const u of this.#idle.splice(0)) u.socket.destroy();
    for (const w of this.#waiters.splice(0)) w.reject(new Error('proxy closing'));
  }
}

// ----------------------------------------------------------------------------------------- relay

export interface Refusal {
  readonly status: number;
  readonly body: Record<string, unknown>;
  /** Response fields sent with it (lower-case names), e.g. `www-authenticate`. */
  readonly headers?: Readonly<Record<string, string>>;
}

/** Response field lines for `response`: names and values with no CR, LF or NUL. */
export function fieldLines(h: Readonly<Record<string, string>> | undefined): string {
  let out = '';
  for (const [k, v] of Object.entries(h ?? {})) if (!/[\r\n\0]/.test(k + v)) out += `${k}: ${v}\r\n`;
  return out;
}

export interface RelayOptions {
  readonly pool: UpstreamPool;
  /** Per request: undefined to forward it, or the response to answer instead. */
  readonly authorize?: (req: RequestHead) => Refusal | undefined;
  /** Header fields added to every forwarded request (names in lower case; same-named client fields are dropped). */
  readonly addFields?: ReadonlyArray<readonly [string, string]>;
  /** Client fields never forwarded (lower-case names). */
  readonly dropFields?: readonly string[];
  /** A request head must be complete this long after its first byte (default 30 s). */
  readonly headTimeoutMs?: number;
  /** Idle keep-alive connections close after this (default 120 s). */
  readonly keepAliveMs?: number;
  /** Called when the upstream cannot be reached; the client gets 502. */
  readonly onUpstreamError?: (err: Error) => void;
}

const REASONS: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  405: 'Method Not Allowed',
  408: 'Request Timeout',
  431: 'Request Header Fields Too Large',
  502: 'Bad Gateway',
  505: 'HTTP Version Not Supported',
};

const FAIL_CODES: Record<number, string> = {
  405: 'ERR_METHOD_NOT_ALLOWED',
  408: 'ERR_REQUEST_TIMEOUT',
  431: 'ERR_HEADERS_TOO_LARGE',
  502: 'ERR_UPSTREAM',
  505: 'ERR_HTTP_VERSION',
};

/** A complete HTTP/1.1 answer with a JSON body (and `fields`, ready-made lines). */
export function response(status: number, body: Record<string, unknown>, close: boolean, fields = ''): string {
  const text = JSON.stringify(body);
  return `HTTP/1.1 ${status} ${REASONS[status] ?? 'Error'}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(text)}\r\n${fields}${close ? 'connection: close\r\n' : ''}\r\n${text}`;
}

/**
 * The answer to an OPTIONS or TRACE request whose Max-Forwards is 0, which makes this hop its final
 * recipient (RFC 9110 7.6.2): OPTIONS, an empty 200; TRACE, 405. A TRACE is not reflected (9.3.8
 * SHOULD): the echo would carry what this hop adds, and reflected requests are how cross-site
 * tracing reads fields a script cannot. For both HTTP/1.1 (`finalHopResponse`) and HTTP/2.
 */
export function finalHop(method: string): { status: 200 } | { status: 405; body: Record<string, unknown>; allow: string } {
  return method === 'TRACE'
    ? { status: 405, body: { code: 'ERR_METHOD_NOT_ALLOWED', message: 'TRACE is not reflected by the proxy' }, allow: 'OPTIONS' }
    : { status: 200 };
}

function finalHopResponse(method: string, close: boolean): string {
  const a = finalHop(method);
  if (a.status === 405) return response(a.status, a.body, close, `allow: ${a.allow}\r\n`);
  return `HTTP/1.1 200 OK\r\ncontent-length: 0\r\n${close ? 'connection: close\r\n' : ''}\r\n`;
}

/** One request/response on an upstream connection. */
interface Exchange {
  upstreamData(d: Buffer): void;
  upstreamClosed(): void;
}

/**
 * Relays one client connection: one request at a time (pipelined requests wait their turn), each
 * over a pooled upstream connection that goes back to the pool when its response is complete.
 */
export function relayHttp1(client: Socket, o: RelayOptions): void {
  const HEAD_MS = o.headTimeoutMs ?? HEAD_TIMEOUT_MS;
  const KEEPALIVE_MS = o.keepAliveMs ?? KEEPALIVE_TIMEOUT_MS;
  // The proxy's own fields, encoded once per connection; a client's fields of the same names never pass.
  // With this hop in Via (RFC 9110 7.6.3: a gateway MUST add itself to each request it forwards),
  // named with the version the request came in.
  const own = (o.addFields ?? []).map(([k, v]) => `${k}: ${v}\r\n`).join('');
  const addLines = { '1.1': Buffer.from(`${own}via: 1.1 ${VIA}\r\n`, 'latin1'), '1.0': Buffer.from(`${own}via: 1.0 ${VIA}\r\n`, 'latin1') };
  const dropNames = [...(o.dropFields ?? []), ...(o.addFields ?? []).map(([k]) => k.toLowerCase())];
  let buf: Buffer = EMPTY;
  let headStarted = 0;
  let lastActive = Date.now();
  let clientEnded = false;
  let scanFrom = 0;
  let state: 'head' | 'connecting' | 'body' | 'waiting' | 'tunnel' | 'done' = 'head';
  let req: RequestHead | undefined;
  let reqBody: BodyCounter | undefined;
  let up: { upstream: { socket: Socket; owner: Exchange | undefined }; reused: boolean } | undefined;
  let resp: { head: ResponseHead | undefined; buf: Buffer; body: BodyCounter | undefined; sent: boolean; method: string } | undefined;

  const fail = (status: number, message: string, code?: string): void => {
    flushOut();
    state = 'done';
    if (up) up.upstream.socket.destroy();
    if (client.writable && !resp?.sent) client.end(response(status, { code: code ?? FAIL_CODES[status] ?? 'ERR_BAD_REQUEST', message }, true));
    else client.destroy();
  };

  const writeUp = (chunk: Buffer): void => {
    if (!up!.upstream.socket.write(chunk)) {
      client.pause();
      up!.upstream.socket.once('drain', () => state !== 'done' && client.resume());
    }
  };

  const writeClient = (chunk: Buffer): void => {
    if (!client.write(chunk)) {
      const s = up!.upstream.socket;
      s.pause();
      client.once('drain', () => s.resume());
    }
  };

  /**
   * Response bytes wait here while they are contiguous in the upstream's buffer, so that a head
   * and body that arrived together leave in one write (one TLS record, one segment): written
   * separately, the second can wait on the peer's delayed ACK, and each write costs a syscall.
   */
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  const out = (chunk: Buffer): void => {
    const last = pending.at(-1);
    if (last && last.buffer === chunk.buffer && last.byteOffset + last.length === chunk.byteOffset) {
      pending[pending.length - 1] = Buffer.from(last.buffer, last.byteOffset, last.length + chunk.length);
    } else pending.push(chunk);
    pendingBytes += chunk.length;
  };
  const flushOut = (): void => {
    if (pending.length === 0) return;
    // A rewritten head and the body behind it: one write while that is cheap to copy.
    const p = pending.length === 1 ? pending[0]! : pendingBytes <= 64 * 1024 ? Buffer.concat(pending, pendingBytes) : undefined;
    const parts = pending;
    pending = [];
    pendingBytes = 0;
    const write = (b: Buffer): void => (up ? writeClient(b) : void client.write(b));
    if (p) return write(p);
    client.cork();
    for (const b of parts) write(b);
    process.nextTick(() => client.uncork());
  };

  /** The response is complete: the upstream goes back to the pool, the next request may start. */
  const finish = (): void => {
    flushOut();
    const u = up!;
    const reusable = resp!.head!.reusable && state === 'waiting';
    up = undefined;
    resp = undefined;
    if (reusable) o.pool.release(u.upstream);
    else u.upstream.socket.destroy();
    if (!req!.keepAlive || state !== 'waiting') {
      state = 'done';
      client.end();
      return;
    }
    state = 'head';
    req = undefined;
    headStarted = 0;
    lastActive = coarseNow;
    if (client.isPaused()) client.resume();
    pump();
    // A client that sent its last request and then half-closed gets its answer, then the close.
    if (clientEnded && state === 'head') {
      state = 'done';
      client.end();
    }
  };

  /** Response bytes from the upstream: the head parsed (and rewritten), the body passed on. */
  const relayResponse = (d: Buffer): void => {
    if (!resp) return;
    let i = 0;
    try {
      while (i < d.length && resp) {
        if (!resp.head) {
          resp.buf = resp.buf.length ? Buffer.concat([resp.buf, d.subarray(i)]) : d.subarray(i);
          i = d.length;
          const end = headEnd(resp.buf);
          if (end < 0 || end > MAX_HEAD) {
            if (resp.buf.length > MAX_HEAD) throw new HttpError(502, 'the upstream sent an oversized response head');
            return;
          }
          const head = parseResponseHead(resp.buf, end, resp.method);
          const rewritten = req ? forwardResponseHead(head, req) : undefined;
          const headBytes = rewritten ?? resp.buf.subarray(0, end + 4);
          const rest = resp.buf.subarray(end + 4);
          resp.sent = true;
          out(headBytes);
          if (head.status === 101 && req?.upgrade) {
            // Switched protocols: from here on, bytes both ways, on a connection of its own.
            state = 'tunnel';
            flushOut();
            const s = up!.upstream.socket;
            // Upstream bytes arrive through the pool's hook (whatever kind of socket it is).
            up!.upstream.owner = {
              upstreamData: (chunk) => void (!client.write(chunk) && (s.pause(), client.once('drain', () => s.resume()))),
              upstreamClosed: () => client.destroy(),
            };
            if (rest.length) client.write(rest);
            if (buf.length) s.write(buf);
            buf = EMPTY;
            client.on('close', () => s.destroy());
            client.removeAllListeners('data');
            client.pipe(s);
            client.resume();
            return;
          }
          if (head.status < 200) {
            // Interim (100 Continue, 103): passed on; the final response follows.
            resp.buf = EMPTY;
            d = rest;
            i = 0;
            continue;
          }
          resp.head = head;
          resp.body = new BodyCounter(head.body, 502);
          resp.buf = EMPTY;
          d = rest;
          i = 0;
          if (resp.body.framing.kind === 'none') return void finish();
          continue;
        }
        const n = resp.body!.take(d, i);
        if (n > 0) out(i === 0 && n === d.length ? d : d.subarray(i, i + n));
        i += n;
        if (resp.body!.done) return void finish();
      }
      if (i < d.length) up?.upstream.socket.destroy(); // bytes after a complete response
    } catch (err) {
      fail(err instanceof HttpError ? err.status : 502, (err as Error).message);
    }
  };

  const exchange: Exchange = {
    upstreamData(d: Buffer): void {
      if (!resp) return void up?.upstream.socket.destroy();
      try {
        relayResponse(d);
      } finally {
        flushOut();
      }
    },
    upstreamClosed(): void {
      if (!resp || state === 'done' || state === 'tunnel') return;
      if (resp.head?.body.kind === 'close') {
        up = undefined;
        resp = undefined;
        state = 'done';
        return void client.end();
      }
      // A reused keep-alive connection the upstream had just closed: retry a bodiless request once.
      if (!resp.sent && up?.reused && req && req.body.kind === 'none' && state === 'waiting') {
        up = undefined;
        resp = undefined;
        state = 'connecting';
        return void connectAndSend(false);
      }
      fail(502, 'the upstream closed the connection before the response was complete');
    },
  };

  const send = (u: { upstream: Upstream; reused: boolean }): void => {
    if (state === 'done') return void o.pool.release(u.upstream);
    const r = req!;
    up = u;
    u.upstream.owner = exchange;
    resp = { head: undefined, buf: EMPTY, body: undefined, sent: false, method: r.method };
    const s = u.upstream.socket;
    // With a body, the head and the body bytes already here leave together.
    const withBody = !reqBody!.done;
    if (withBody) s.cork();
    s.write(forwardRequestHead(r, addLines[r.version], dropNames));
    state = withBody ? 'body' : 'waiting';
    if (client.isPaused()) client.resume();
    pump();
    if (withBody) process.nextTick(() => s.uncork());
  };

  const connectAndSend = (allowReuse: boolean): void => {
    // An idle pooled connection is taken at once (no promise, no extra turn of the event loop).
    const idle = allowReuse ? o.pool.takeIdle() : undefined;
    if (idle) return send({ upstream: idle, reused: true });
    o.pool.acquire(allowReuse).then(send, (err: Error) => {
      o.onUpstreamError?.(err);
      fail(502, `upstream unavailable: ${(err as NodeJS.ErrnoException).code ?? err.message}`);
    });
  };

  const pump = (): void => {
    try {
      while (state === 'head' || state === 'body') {
        if (state === 'body') {
          const n = reqBody!.take(buf, 0);
          if (n > 0) writeUp(buf.subarray(0, n));
          buf = buf.subarray(n);
          // A client that closed its side before its body's end can never finish the request.
          if (!reqBody!.done && clientEnded) throw new HttpError(400, 'the client closed its side before the end of the request body', 'ERR_BODY_INCOMPLETE');
          if (!reqBody!.done) return;
          state = 'waiting';
          continue;
        }
        if (scanFrom === 0) {
          // Empty lines before a request line are ignored (RFC 9112 2.2: some clients send CRLF
          // after a body).
          let s = 0;
          while (s + 1 < buf.length && buf[s] === 13 && buf[s + 1] === 10) s += 2;
          if (s) buf = buf.subarray(s);
        }
        const end = headEnd(buf, scanFrom);
        if (end < 0) {
          if (buf.length > MAX_HEAD) throw new HttpError(431, `request head larger than ${MAX_HEAD} bytes`);
          // A head trickled in byte by byte holds a connection: it gets HEAD_MS in all (the sweep checks).
          if (buf.length > 0 && headStarted === 0) headStarted = Date.now();
          scanFrom = buf.length;
          return;
        }
        scanFrom = 0;
        headStarted = 0;
        if (end > MAX_HEAD) throw new HttpError(431, `request head larger than ${MAX_HEAD} bytes`);
        const r = parseRequestHead(buf, end);
        buf = buf.subarray(end + 4);
        const refusal = o.authorize?.(r);
        if (refusal || r.maxForwards === 0) {
          // Answered here; a request with a body is answered and the connection closed rather
          // than reading a body nobody will use.
          const close = !r.keepAlive || r.body.kind !== 'none';
          client.write(refusal ? response(refusal.status, refusal.body, close, fieldLines(refusal.headers)) : finalHopResponse(r.method, close));
          if (close) {
            state = 'done';
            return void client.end();
          }
          continue;
        }
        req = r;
        reqBody = new BodyCounter(r.body);
        state = 'connecting';
        connectAndSend(true);
      }
    } catch (err) {
      fail(err instanceof HttpError ? err.status : 400, (err as Error).message, (err as HttpError).code);
    }
  };

  client.on('data', (d: Buffer) => {
    // After the answer that ends this connection (say, an early 413 while a large body was still
    // arriving), whatever else comes is dropped, not kept.
    if (state === 'done') return;
    lastActive = coarseNow;
    buf = buf.length ? Buffer.concat([buf, d]) : d;
    if (state === 'head' || state === 'body') pump();
    // A request in flight: what follows (its body, pipelined requests) waits here, up to a bound.
    else if ((state === 'waiting' || state === 'connecting') && buf.length > MAX_HEAD) client.pause();
  });
  client.on('end', () => {
    clientEnded = true;
    // Nothing in flight: close now; a body still due is an error (pump says so); otherwise
    // `finish` closes after the answer.
    if (state === 'head') {
      state = 'done';
      client.end();
    } else if (state === 'body') pump();
  });
  client.on('close', () => {
    const was = state;
    state = 'done';
    if (up && was !== 'tunnel') up.upstream.socket.destroy();
  });
  client.on('error', () => undefined);
  // Idle between requests: closed quietly; a head still incomplete HEAD_MS after its first byte:
  // 408. No limit while a request is in flight: an upstream may take its time (long polls).
  const stopSweep = onSweep((now) => {
    if (state !== 'head') return;
    if (headStarted && now - headStarted > HEAD_MS) fail(408, `request head not complete after ${HEAD_MS / 1000} s`);
    else if (!headStarted && now - lastActive > KEEPALIVE_MS) (state = 'done'), client.end();
  });
  client.once('close', stopSweep);
}
