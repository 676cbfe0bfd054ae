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

export const MAX_HEAD = 16 * 1024;
/** Idle keep-alive connections close after this (no limit while a request is in flight). */
const KEEPALIVE_TIMEOUT_MS = 120_000;
/** A request head must be complete this long after its first byte. */
const HEAD_TIMEOUT_MS = 30_000;
const MAX_FIELDS = 100;
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const TARGET = /^[\x21-\x7e]+$/;

export class HttpError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

export type Framing = { readonly kind: 'none' } | { readonly kind: 'length'; readonly n: number } | { readonly kind: 'chunked' } | { readonly kind: 'close' };

export interface Fields {
  /** As received: [name, value] with the name's case kept. */
  readonly list: ReadonlyArray<readonly [string, string]>;
  /** Values of a field (lower-case name), in order. */
  all(name: string): string[];
}

export interface RequestHead {
  readonly method: string;
  readonly target: string;
  /** The path part of the target (no query), for decisions. */
  readonly path: string;
  readonly version: '1.0' | '1.1';
  readonly fields: Fields;
  readonly body: Framing;
  /** Whether the client keeps the connection open after this exchange. */
  readonly keepAlive: boolean;
  /** The Upgrade field when the client asks to switch protocols. */
  readonly upgrade: string | undefined;
  /** Lower-case names of fields that are hop-by-hop for this message (Connection and what it lists). */
  readonly hopByHop: ReadonlySet<string>;
}

export interface ResponseHead {
  readonly status: number;
  readonly startLine: string;
  readonly fields: Fields;
  readonly body: Framing;
  /** Whether the upstream connection can carry another request after this response. */
  readonly reusable: boolean;
}

/** Where the head ends (index of the CRLF CRLF), or -1. `from` lets a caller resume a scan. */
export function headEnd(buf: Buffer, from = 0): number {
  return buf.indexOf('\r\n\r\n', Math.max(0, from - 3), 'latin1');
}

/** tchar (RFC 9110 5.6.2) by character code. */
const TCHAR = new Uint8Array(256);
for (const c of "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") TCHAR[c.charCodeAt(0)] = 1;

/** One pass over the head (this runs twice per proxied request): the start line and the fields. */
function fieldLines(buf: Buffer, end: number): { first: string; fields: Fields } {
  const text = buf.toString('latin1', 0, end);
  let eol = text.indexOf('\r\n');
  if (eol < 0) eol = text.length;
  const first = text.slice(0, eol);
  if (/[\r\n]/.test(first)) throw new HttpError(400, 'a line ends with a bare LF or CR');
  const list: Array<[string, string]> = [];
  const lower: string[] = [];
  for (let pos = eol + 2; pos < text.length; pos = eol + 2) {
    eol = text.indexOf('\r\n', pos);
    if (eol < 0) eol = text.length;
    if (list.length >= MAX_FIELDS) throw new HttpError(431, `more than ${MAX_FIELDS} header fields`);
    const c0 = text.charCodeAt(pos);
    if (c0 === 32 || c0 === 9) throw new HttpError(400, 'obsolete line folding in a header field');
    let i = pos;
    while (i < eol && TCHAR[text.charCodeAt(i)] === 1) i++;
    if (i === pos || i === eol || text.charCodeAt(i) !== 58) throw new HttpError(400, `malformed header field ${JSON.stringify(text.slice(pos, Math.min(eol, pos + 40)))}`);
    const name = text.slice(pos, i);
    let vs = i + 1;
    let ve = eol;
    while (vs < ve && (text.charCodeAt(vs) === 32 || text.charCodeAt(vs) === 9)) vs++;
    while (ve > vs && (text.charCodeAt(ve - 1) === 32 || text.charCodeAt(ve - 1) === 9)) ve--;
    for (let j = vs; j < ve; j++) {
      const c = text.charCodeAt(j);
      // Control characters, including a bare CR or LF inside the line.
      if ((c < 32 && c !== 9) || c === 127) throw new HttpError(400, c === 10 || c === 13 ? 'a line ends with a bare LF or CR' : `control characters in header field ${name}`);
    }
    list.push([name, text.slice(vs, ve)]);
    lower.push(name.toLowerCase());
  }
  return {
    first,
    fields: {
      list,
      all: (n) => {
        const out: string[] = [];
        for (let k = 0; k < lower.length; k++) if (lower[k] === n) out.push(list[k]![1]);
        return out;
      },
    },
  };
}

const tokens = (values: string[]): string[] => values.flatMap((v) => v.split(',')).map((t) => t.trim().toLowerCase()).filter(Boolean);

function contentLength(fields: Fields, status: number): number | undefined {
  const cl = fields.all('content-length');
  if (cl.length === 0) return undefined;
  if (cl.length > 1) throw new HttpError(status, 'more than one Content-Length field');
  if (!/^\d{1,15}$/.test(cl[0]!)) throw new HttpError(status, `Content-Length ${JSON.stringify(cl[0]!.slice(0, 20))} is not a length`);
  return Number(cl[0]);
}

/**
 * Fields that belong to one connection, not the message (RFC 9110 7.6.1): Connection and every
 * field it names, plus those known to be hop-by-hop. Transfer-Encoding stays: the relay forwards
 * the body in the same framing it arrived in.
 */
function hopByHop(fields: Fields): Set<string> {
  const conn = tokens(fields.all('connection'));
  return new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'upgrade', ...conn.filter((c) => c !== 'transfer-encoding' && c !== 'content-length')]);
}

/**
 * The response head as the client gets it: the upstream's connection fields dropped and the
 * proxy's own added (close when this client connection ends after the response, keep-alive for an
 * HTTP/1.0 client that asked for it). Undefined when the head can go as it came.
 */
function forwardResponseHead(head: ResponseHead, req: RequestHead): string | undefined {
  const drop = hopByHop(head.fields);
  if (head.status === 101) drop.delete('upgrade');
  // A body delimited by the upstream closing reaches the client the same way: it must not expect more.
  const own = !req.keepAlive || head.body.kind === 'close' ? 'close' : req.version === '1.0' ? 'keep-alive' : undefined;
  if (!own && !head.fields.list.some(([k]) => drop.has(k.toLowerCase()))) return undefined;
  let out = `${head.startLine}\r\n`;
  for (const [k, v] of head.fields.list) if (!drop.has(k.toLowerCase())) out += `${k}: ${v}\r\n`;
  if (head.status === 101) out += 'connection: upgrade\r\n';
  else if (own) out += `connection: ${own}\r\n`;
  return `${out}\r\n`;
}

export function parseRequestHead(buf: Buffer, end: number): RequestHead {
  const { first, fields } = fieldLines(buf, end);
  const m = /^([^ ]+) ([^ ]+) HTTP\/(\d)\.(\d)$/.exec(first);
  if (!m || !TOKEN.test(m[1]!) || !TARGET.test(m[2]!)) throw new HttpError(400, 'malformed request line');
  if (m[3] !== '1' || (m[4] !== '0' && m[4] !== '1')) throw new HttpError(505, `HTTP/${m[3]}.${m[4]} is not supported`);
  const method = m[1]!;
  const target = m[2]!;
  const version = m[4] === '1' ? '1.1' : '1.0';
  if (method === 'CONNECT') throw new HttpError(405, 'CONNECT is not proxied');
  let path: string;
  if (target[0] === '/') path = target.split('?')[0]!;
  else if (target === '*' && method === 'OPTIONS') path = '*';
  else if (/^https?:\/\//i.test(target)) {
    try {
      path = new URL(target).pathname;
    } catch {
      throw new HttpError(400, 'malformed request target');
    }
  }
  else throw new HttpError(400, 'malformed request target');
  const hosts = fields.all('host');
  if (hosts.length > 1 || (version === '1.1' && hosts.length === 0)) throw new HttpError(400, hosts.length ? 'more than one Host field' : 'no Host field');
  const te = tokens(fields.all('transfer-encoding'));
  const cl = contentLength(fields, 400);
  let body: Framing = { kind: 'none' };
  if (fields.all('transfer-encoding').length) {
    if (version === '1.0') throw new HttpError(400, 'Transfer-Encoding in an HTTP/1.0 request');
    if (cl !== undefined) throw new HttpError(400, 'both Content-Length and Transfer-Encoding');
    if (te.at(-1) !== 'chunked') throw new HttpError(400, 'Transfer-Encoding does not end with chunked');
    body = { kind: 'chunked' };
  } else if (cl) body = { kind: 'length', n: cl };
  const conn = tokens(fields.all('connection'));
  const keepAlive = version === '1.1' ? !conn.includes('close') : conn.includes('keep-alive');
  const up = fields.all('upgrade');
  return { method, target, path, version, fields, body, keepAlive, upgrade: conn.includes('upgrade') && up.length ? up.join(', ') : undefined, hopByHop: hopByHop(fields) };
}

export function parseResponseHead(buf: Buffer, end: number, requestMethod: string): ResponseHead {
  const { first, fields } = fieldLines(buf, end);
  const m = /^HTTP\/1\.([01]) (\d{3})(?: [^]*)?$/.exec(first);
  if (!m) throw new HttpError(502, 'malformed status line from the upstream');
  const status = Number(m[2]);
  const conn = tokens(fields.all('connection'));
  let body: Framing;
  if (requestMethod === 'HEAD' || status < 200 || status === 204 || status === 304) body = { kind: 'none' };
  else if (fields.all('transfer-encoding').length) body = tokens(fields.all('transfer-encoding')).at(-1) === 'chunked' ? { kind: 'chunked' } : { kind: 'close' };
  else {
    const cl = contentLength(fields, 502);
    body = cl === undefined ? { kind: 'close' } : cl === 0 ? { kind: 'none' } : { kind: 'length', n: cl };
  }
  const keep = m[1] === '1' ? !conn.includes('close') : conn.includes('keep-alive');
  return { status, startLine: first, fields, body, reusable: keep && body.kind !== 'close' };
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
      if (!this.#line.endsWith('\r\n') || this.#line.indexOf('\r') !== this.#line.length - 2) throw new HttpError(this.errorStatus, 'chunked body: a line does not end with CRLF');
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
        else if (line[0] === ' ' || line[0] === '\t' || !TOKEN.test(line.slice(0, Math.max(0, line.indexOf(':'))))) throw new HttpError(this.errorStatus, 'chunked body: malformed trailer field');
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

/** A plain TCP connection, resolved once connected (an `UpstreamPool` opener for a local app). */
export function connectTcp(host: string, port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host, port, noDelay: true });
    s.once('connect', () => (s.off('error', reject), resolve(s)));
    s.once('error', reject);
  });
}

interface Upstream {
  readonly socket: Socket;
  owner: Exchange | undefined;
}

/**
 * Keep-alive connections to one upstream, reused LIFO. Idle ones close after `idleMs` (below
 * Node's 5 s keep-alive default, so the proxy closes first rather than racing the upstream's close).
 */
export class UpstreamPool {
  readonly #idle: Upstream[] = [];
  readonly #open: () => Promise<Socket>;
  readonly #maxIdle: number;
  readonly #idleMs: number;
  readonly #maxOpening: number;
  /** Requests waiting for a connection while `#maxOpening` are being opened. */
  readonly #waiters: Array<{ resolve: (v: { upstream: Upstream; reused: boolean }) => void; reject: (e: Error) => void }> = [];
  #opening = 0;
  #live = 0;
  #closed = false;

  constructor(open: () => Promise<Socket>, opts: { maxIdle?: number; idleMs?: number; maxOpening?: number } = {}) {
    this.#open = open;
    this.#maxIdle = opts.maxIdle ?? 128;
    this.#idleMs = opts.idleMs ?? 4000;
    this.#maxOpening = opts.maxOpening ?? 4;
  }

  /**
   * An idle connection if there is one (unless `reuse` is false), else a new one. A burst does not
   * open a connection per request: with `maxOpening` opens under way, a request waits for the
   * next connection to come free (a response takes a millisecond; an mTLS handshake on both
   * sides takes longer, and forty of them at once were a 60 ms stall).
   */
  async acquire(reuse = true): Promise<{ upstream: Upstream; reused: boolean }> {
    while (reuse && this.#idle.length) {
      const u = this.#idle.pop()!;
      if (!u.socket.destroyed && u.socket.writable) return { upstream: u, reused: true };
    }
    if (reuse && this.#opening >= this.#maxOpening && this.#live > 0) {
      return new Promise((resolve, reject) => this.#waiters.push({ resolve, reject }));
    }
    return { upstream: await this.#connect(), reused: false };
  }

  async #connect(): Promise<Upstream> {
    this.#opening++;
    let socket: Socket;
    try {
      socket = await this.#open();
    } catch (err) {
      // Nothing to wait for any more: the waiters learn why.
      if (this.#live === 0) for (const w of this.#waiters.splice(0)) w.reject(err as Error);
      throw err;
    } finally {
      this.#opening--;
    }
    this.#live++;
    socket.setNoDelay(true);
    const u: Upstream = { socket, owner: undefined };
    socket.on('data', (d: Buffer) => (u.owner ? u.owner.upstreamData(d) : socket.destroy()));
    socket.on('end', () => socket.destroy());
    socket.on('close', () => {
      this.#live--;
      const i = this.#idle.indexOf(u);
      if (i >= 0) this.#idle.splice(i, 1);
      u.owner?.upstreamClosed();
      // Waiters must not wait on a connection that is gone: open one for the first of them.
      if (this.#waiters.length && this.#opening < this.#maxOpening && !this.#closed) {
        const w = this.#waiters.shift()!;
        this.#connect().then((c) => w.resolve({ upstream: c, reused: false }), w.reject);
      }
    });
    socket.on('error', () => undefined);
    // One inactivity timer for the connection's life (re-arming it per request allocated a timer
    // each time): it closes the connection only while it sits idle in the pool.
    socket.setTimeout(this.#idleMs);
    socket.on('timeout', () => {
      if (this.#idle.includes(u)) socket.destroy();
    });
    return u;
  }

  release(u: Upstream): void {
    u.owner = undefined;
    if (this.#closed || u.socket.destroyed) return void u.socket.destroy();
    if (u.socket.isPaused()) u.socket.resume();
    const w = this.#waiters.shift();
    if (w) return w.resolve({ upstream: u, reused: true });
    if (this.#idle.length >= this.#maxIdle) return void u.socket.destroy();
    this.#idle.push(u);
  }

  close(): void {
    this.#closed = true;
    for (const u of this.#idle.splice(0)) u.socket.destroy();
    for (const w of this.#waiters.splice(0)) w.reject(new Error('proxy closing'));
  }
}

// ----------------------------------------------------------------------------------------- relay

export interface Refusal {
  readonly status: number;
  readonly body: Record<string, unknown>;
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

const REASONS: Record<number, string> = { 400: 'Bad Request', 403: 'Forbidden', 405: 'Method Not Allowed', 408: 'Request Timeout', 431: 'Request Header Fields Too Large', 502: 'Bad Gateway', 505: 'HTTP Version Not Supported' };

const FAIL_CODES: Record<number, string> = { 405: 'ERR_METHOD_NOT_ALLOWED', 408: 'ERR_REQUEST_TIMEOUT', 431: 'ERR_HEADERS_TOO_LARGE', 502: 'ERR_UPSTREAM', 505: 'ERR_HTTP_VERSION' };

function response(status: number, body: Record<string, unknown>, close: boolean): string {
  const text = JSON.stringify(body);
  return `HTTP/1.1 ${status} ${REASONS[status] ?? 'Error'}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(text)}\r\n${close ? 'connection: close\r\n' : ''}\r\n${text}`;
}

/** The request head as forwarded: hop-by-hop fields dropped, the proxy's own fields added. */
function forwardHead(req: RequestHead, add: ReadonlyArray<readonly [string, string]>, dropAlso: readonly string[]): string {
  const drop = new Set([...req.hopByHop, ...dropAlso]);
  for (const [k] of add) drop.add(k);
  if (req.upgrade) drop.delete('upgrade');
  let out = `${req.method} ${req.target} HTTP/${req.version}\r\n`;
  for (const [k, v] of req.fields.list) if (!drop.has(k.toLowerCase())) out += `${k}: ${v}\r\n`;
  for (const [k, v] of add) out += `${k}: ${v}\r\n`;
  if (req.upgrade) out += 'connection: upgrade\r\n';
  // HTTP/1.0 is not persistent unless asked; asking keeps the pooled upstream connection reusable.
  else if (req.version === '1.0') out += 'connection: keep-alive\r\n';
  return `${out}\r\n`;
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
  let buf: Buffer = Buffer.alloc(0);
  let headStarted = 0;
  let clientEnded = false;
  let scanFrom = 0;
  let state: 'head' | 'connecting' | 'body' | 'waiting' | 'tunnel' | 'done' = 'head';
  let req: RequestHead | undefined;
  let reqBody: BodyCounter | undefined;
  let up: { upstream: { socket: Socket; owner: Exchange | undefined }; reused: boolean } | undefined;
  let resp: { head: ResponseHead | undefined; buf: Buffer; body: BodyCounter | undefined; sent: boolean; method: string } | undefined;

  const fail = (status: number, message: string): void => {
    flushOut();
    state = 'done';
    if (up) up.upstream.socket.destroy();
    if (client.writable && !resp?.sent) client.end(response(status, { code: FAIL_CODES[status] ?? 'ERR_BAD_REQUEST', message }, true));
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
    client.resume();
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
          const headBytes = rewritten === undefined ? resp.buf.subarray(0, end + 4) : Buffer.from(rewritten, 'latin1');
          const rest = resp.buf.subarray(end + 4);
          resp.sent = true;
          out(headBytes);
          if (head.status === 101 && req?.upgrade) {
            // Switched protocols: from here on, bytes both ways, on a connection of its own.
            state = 'tunnel';
            flushOut();
            const s = up!.upstream.socket;
            up!.upstream.owner = undefined;
            s.removeAllListeners('data');
            if (rest.length) client.write(rest);
            if (buf.length) s.write(buf);
            buf = Buffer.alloc(0);
            s.on('close', () => client.destroy());
            client.on('close', () => s.destroy());
            client.removeAllListeners('data');
            s.pipe(client);
            client.pipe(s);
            client.resume();
            return;
          }
          if (head.status < 200) {
            // Interim (100 Continue, 103): passed on; the final response follows.
            resp.buf = Buffer.alloc(0);
            d = rest;
            i = 0;
            continue;
          }
          resp.head = head;
          resp.body = new BodyCounter(head.body, 502);
          resp.buf = Buffer.alloc(0);
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

  const connectAndSend = (allowReuse: boolean): void => {
    const r = req!;
    const acquired = o.pool.acquire(allowReuse);
    acquired.then((u) => {
      if (state === 'done') return void o.pool.release(u.upstream);
      up = u;
      u.upstream.owner = exchange;
      resp = { head: undefined, buf: Buffer.alloc(0), body: undefined, sent: false, method: r.method };
      const s = u.upstream.socket;
      // With a body, the head and the body bytes already here leave together.
      const withBody = !reqBody!.done;
      if (withBody) s.cork();
      s.write(forwardHead(r, o.addFields ?? [], o.dropFields ?? []));
      state = withBody ? 'body' : 'waiting';
      client.resume();
      pump();
      if (withBody) process.nextTick(() => s.uncork());
    }, (err: Error) => {
      o.onUpstreamError?.(err);
      fail(502, `upstream unavailable: ${(err as NodeJS.ErrnoException).code ?? err.message}`);
    });
  };

  const pump = (): void => {
    try {
      while (state === 'head' || state === 'body') {
        if (state === 'body') {
          if (buf.length === 0) return;
          const n = reqBody!.take(buf, 0);
          if (n > 0) writeUp(buf.subarray(0, n));
          buf = buf.subarray(n);
          if (!reqBody!.done) return;
          state = 'waiting';
          continue;
        }
        const end = headEnd(buf, scanFrom);
        if (end < 0) {
          if (buf.length > MAX_HEAD) throw new HttpError(431, `request head larger than ${MAX_HEAD} bytes`);
          if (buf.length > 0 && headStarted === 0) headStarted = Date.now();
          // A head trickled in byte by byte holds a connection: it gets HEAD_MS in all.
          if (headStarted && Date.now() - headStarted > HEAD_MS) throw new HttpError(408, `request head not complete after ${HEAD_MS / 1000} s`);
          scanFrom = buf.length;
          return;
        }
        scanFrom = 0;
        headStarted = 0;
        if (end > MAX_HEAD) throw new HttpError(431, `request head larger than ${MAX_HEAD} bytes`);
        const r = parseRequestHead(buf, end);
        buf = buf.subarray(end + 4);
        const refusal = o.authorize?.(r);
        if (refusal) {
          // Answered here; a request with a body is answered and the connection closed rather
          // than reading a body nobody will use.
          const close = !r.keepAlive || r.body.kind !== 'none';
          client.write(response(refusal.status, refusal.body, close));
          if (close) {
            state = 'done';
            return void client.end();
          }
          continue;
        }
        req = r;
        reqBody = new BodyCounter(r.body);
        state = 'connecting';
        client.pause();
        connectAndSend(true);
      }
    } catch (err) {
      fail(err instanceof HttpError ? err.status : 400, (err as Error).message);
    }
  };

  client.on('data', (d: Buffer) => {
    // After the answer that ends this connection (say, an early 413 while a large body was still
    // arriving), whatever else comes is dropped, not kept.
    if (state === 'done') return;
    buf = buf.length ? Buffer.concat([buf, d]) : d;
    if (state === 'head' || state === 'body') pump();
    else if (state === 'waiting' && buf.length > MAX_HEAD) client.pause(); // pipelined: wait for our turn
  });
  client.on('end', () => {
    clientEnded = true;
    // Nothing in flight: close now; otherwise `finish` closes after the answer.
    if (state === 'head') {
      state = 'done';
      client.end();
    }
  });
  client.on('close', () => {
    const was = state;
    state = 'done';
    if (up && was !== 'tunnel') up.upstream.socket.destroy();
  });
  client.on('error', () => undefined);
  client.on('timeout', () => {
    // Idle between requests (or a head that never completes): closed. No limit while a request
    // is in flight: an upstream may take its time (long polls).
    if (state !== 'head') return;
    if (buf.length) fail(408, `request head not complete after ${KEEPALIVE_MS / 1000} s idle`);
    else (state = 'done'), client.end();
  });
  client.setTimeout(KEEPALIVE_MS);
}
