/**
 * HTTP/1.1 message heads for the proxy (RFC 9112): a strict one-pass scanner over the bytes as
 * they arrived, and forwarding by copying byte ranges. Field names and values become strings only
 * when something asks for them (a policy with header conditions, a rewrite that must compare
 * names); the common request is scanned, decided and forwarded without building one.
 *
 * Strict on purpose: a message whose framing two parsers could read differently is refused —
 * Content-Length together with Transfer-Encoding, several Content-Length fields, a
 * Transfer-Encoding whose last coding is not chunked, obs-fold, bare LF or CR, whitespace before
 * the colon, control characters, a missing or repeated Host. The path that decisions are made on
 * is the request's in normal form (`normalizePath`); one with a "." or ".." segment is refused.
 */
import { requestPath } from '@writ/sdk/internal';

export const MAX_HEAD = 16 * 1024;
const MAX_FIELDS = 100;

export class HttpError extends Error {
  readonly status: number;
  /** The `code` of the JSON answer when it is not the status's usual one. */
  readonly code: string | undefined;
  constructor(status: number, message: string, code?: string) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export type Framing = { readonly kind: 'none' } | { readonly kind: 'length'; readonly n: number } | { readonly kind: 'chunked' } | { readonly kind: 'close' };

export interface Fields {
  /** As received: [name, value] with the name's case kept. */
  readonly list: ReadonlyArray<readonly [string, string]>;
  /** Values of a field (lower-case name), in order. */
  all(name: string): string[];
}

/** Where the head ends (index of the CRLF CRLF), or -1. `from` lets a caller resume a scan. */
export function headEnd(buf: Buffer, from = 0): number {
  return buf.indexOf('\r\n\r\n', Math.max(0, from - 3), 'latin1');
}

/** tchar (RFC 9110 5.6.2) by byte. */
const TCHAR = new Uint8Array(256);
for (const c of "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") TCHAR[c.charCodeAt(0)] = 1;

// Fields the proxy itself reads or must not forward, recognised by their bytes while scanning.
const HOST = 1;
const CONTENT_LENGTH = 2;
const TRANSFER_ENCODING = 3;
const CONNECTION = 4;
const KEEP_ALIVE = 5;
const PROXY_CONNECTION = 6;
const TE = 7;
const UPGRADE = 8;
const KNOWN: ReadonlyArray<readonly [number, string]> = [
  [HOST, 'host'],
  [CONTENT_LENGTH, 'content-length'],
  [TRANSFER_ENCODING, 'transfer-encoding'],
  [CONNECTION, 'connection'],
  [KEEP_ALIVE, 'keep-alive'],
  [PROXY_CONNECTION, 'proxy-connection'],
  [TE, 'te'],
  [UPGRADE, 'upgrade'],
];
const KNOWN_BY_LENGTH: Array<Array<readonly [number, string]>> = [];
for (const k of KNOWN) (KNOWN_BY_LENGTH[k[1].length] ??= []).push(k);
/** Connection-specific fields (RFC 9110 7.6.1) besides those Connection names. */
const isHop = (kind: number): boolean => kind >= CONNECTION;

/** Whether `buf[s..e)` is the field name `lower` (lower case), compared without making a string. */
function nameIs(buf: Buffer, s: number, e: number, lower: string): boolean {
  if (e - s !== lower.length) return false;
  for (let i = 0; i < lower.length; i++) {
    let c = buf[s + i]!;
    if (c >= 65 && c <= 90) c += 32;
    if (c !== lower.charCodeAt(i)) return false;
  }
  return true;
}

function knownKind(buf: Buffer, s: number, e: number): number {
  const candidates = KNOWN_BY_LENGTH[e - s];
  if (candidates) for (const [kind, name] of candidates) if (nameIs(buf, s, e, name)) return kind;
  return 0;
}

/** Comma-separated tokens of some field values, trimmed and lower-cased. */
function tokens(values: string[]): string[] {
  // The usual case, one value with one token ("keep-alive", "chunked"), without the array churn.
  if (values.length === 1 && !values[0]!.includes(',')) return values[0] ? [values[0].toLowerCase()] : [];
  return values
    .flatMap((v) => v.split(','))
    .map((t) => t.trim().toLowerCase())
    .filter(Boolean);
}

/**
 * A scanned head: offsets into the buffer it arrived in. Per field, five numbers: line start,
 * name end (the colon), value start, value end (trimmed), line end (its CR).
 */
export class Head implements Fields {
  readonly buf: Buffer;
  /** Index of the CRLF that ends the start line. */
  readonly startEnd: number;
  /** Index of the CRLF CRLF that ends the head. */
  readonly end: number;
  readonly #offs: number[];
  readonly #kinds: number[];
  /** Whether any connection-specific field is present. */
  readonly hasHop: boolean;
  #list: Array<[string, string]> | undefined;
  #connection: string[] | undefined;

  constructor(buf: Buffer, startEnd: number, end: number, offs: number[], kinds: number[]) {
    this.buf = buf;
    this.startEnd = startEnd;
    this.end = end;
    this.#offs = offs;
    this.#kinds = kinds;
    this.hasHop = kinds.some(isHop);
  }

  get count(): number {
    return this.#kinds.length;
  }
  kind(i: number): number {
    return this.#kinds[i]!;
  }
  name(i: number): string {
    return this.buf.toString('latin1', this.#offs[i * 5]!, this.#offs[i * 5 + 1]!);
  }
  value(i: number): string {
    return this.buf.toString('latin1', this.#offs[i * 5 + 2]!, this.#offs[i * 5 + 3]!);
  }
  nameIs(i: number, lower: string): boolean {
    return nameIs(this.buf, this.#offs[i * 5]!, this.#offs[i * 5 + 1]!, lower);
  }
  /** Values of a known field. */
  values(kind: number): string[] {
    const out: string[] = [];
    for (let i = 0; i < this.#kinds.length; i++) if (this.#kinds[i] === kind) out.push(this.value(i));
    return out;
  }
  has(kind: number): boolean {
    return this.#kinds.includes(kind);
  }

  /** The Connection field's options (lower case). */
  get connection(): readonly string[] {
    return (this.#connection ??= this.has(CONNECTION) ? tokens(this.values(CONNECTION)) : []);
  }

  get list(): ReadonlyArray<readonly [string, string]> {
    if (!this.#list) {
      this.#list = [];
      for (let i = 0; i < this.#kinds.length; i++) this.#list.push([this.name(i), this.value(i)]);
    }
    return this.#list;
  }
  all(name: string): string[] {
    const out: string[] = [];
    for (let i = 0; i < this.#kinds.length; i++) if (this.nameIs(i, name)) out.push(this.value(i));
    return out;
  }

  /**
   * The head with the field lines `drop` picks left out and `extra` added at the end (latin1
   * lines, each ending CRLF): byte ranges copied, the start line and kept lines as they came.
   */
  rewrite(drop: (i: number) => boolean, extra: string | Buffer): Buffer {
    const kept: number[] = [];
    let size = this.startEnd + 2 + extra.length + 2;
    for (let i = 0; i < this.#kinds.length; i++) {
      if (drop(i)) continue;
      kept.push(i);
      size += this.#offs[i * 5 + 4]! + 2 - this.#offs[i * 5]!;
    }
    const out = Buffer.allocUnsafe(size);
    let p = this.buf.copy(out, 0, 0, this.startEnd + 2);
    for (const i of kept) p += this.buf.copy(out, p, this.#offs[i * 5]!, this.#offs[i * 5 + 4]! + 2);
    p += typeof extra === 'string' ? out.write(extra, p, 'latin1') : extra.copy(out, p);
    out[p++] = 13;
    out[p] = 10;
    return out;
  }

  /**
   * Whether field `i` is connection-specific (RFC 9110 7.6.1): Connection, the fields it names
   * (never Content-Length or Transfer-Encoding: the body is forwarded in the framing it came in),
   * Keep-Alive, Proxy-Connection, TE, Upgrade.
   */
  hopTest(): (i: number) => boolean {
    const named = this.connection.filter((t) => t !== 'close' && t !== 'keep-alive' && t !== 'transfer-encoding' && t !== 'content-length');
    return (i) => isHop(this.#kinds[i]!) || (named.length > 0 && named.some((n) => this.nameIs(i, n)));
  }
}

/**
 * Scans the head in `buf[0..end)` (`end` from `headEnd`): validates every line and records offsets.
 * Throws HttpError 400 (431 for too many fields).
 */
function scan(buf: Buffer, end: number): Head {
  let startEnd = 0;
  while (startEnd < end && buf[startEnd] !== 13 && buf[startEnd] !== 10) startEnd++;
  if (startEnd < end && (buf[startEnd] === 10 || buf[startEnd + 1] !== 10)) throw new HttpError(400, 'a line ends with a bare LF or CR');
  const offs: number[] = [];
  const kinds: number[] = [];
  for (let pos = startEnd + 2; pos < end + 2; ) {
    if (kinds.length >= MAX_FIELDS) throw new HttpError(431, `more than ${MAX_FIELDS} header fields`);
    const c0 = buf[pos]!;
    if (c0 === 32 || c0 === 9) throw new HttpError(400, 'obsolete line folding in a header field');
    let i = pos;
    while (TCHAR[buf[i]!] === 1) i++;
    if (i === pos || buf[i] !== 58) {
      const eol = buf.indexOf(13, pos);
      throw new HttpError(400, `malformed header field ${JSON.stringify(buf.toString('latin1', pos, Math.min(eol < 0 ? end : eol, pos + 40)))}`);
    }
    let vs = i + 1;
    while (buf[vs] === 32 || buf[vs] === 9) vs++;
    let j = vs;
    for (;;) {
      const c = buf[j]!;
      if (c === 13) break;
      // Control characters, including a bare LF inside the line (the CR at `end` stops this).
      if ((c < 32 && c !== 9) || c === 127)
        throw new HttpError(400, c === 10 ? 'a line ends with a bare LF or CR' : `control characters in header field ${buf.toString('latin1', pos, i)}`);
      j++;
    }
    if (buf[j + 1] !== 10) throw new HttpError(400, 'a line ends with a bare LF or CR');
    let ve = j;
    while (ve > vs && (buf[ve - 1] === 32 || buf[ve - 1] === 9)) ve--;
    offs.push(pos, i, vs, ve, j);
    kinds.push(knownKind(buf, pos, i));
    pos = j + 2;
  }
  return new Head(buf, startEnd, end, offs, kinds);
}

function contentLength(h: Head, status: number): number | undefined {
  const cl = h.values(CONTENT_LENGTH);
  if (cl.length === 0) return undefined;
  if (cl.length > 1) throw new HttpError(status, 'more than one Content-Length field');
  if (!/^\d{1,15}$/.test(cl[0]!)) throw new HttpError(status, `Content-Length ${JSON.stringify(cl[0]!.slice(0, 20))} is not a length`);
  return Number(cl[0]);
}

// ----------------------------------------------------------------------------------- requests

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
  /** For an absolute-form target, its authority: the Host the request is forwarded with (RFC 9112 3.2.2). */
  readonly authority: string | undefined;
  /** Max-Forwards of an OPTIONS or TRACE request (RFC 9110 7.6.2): 0 makes this hop the final recipient. */
  readonly maxForwards: number | undefined;
  /** The head as scanned, for forwarding. */
  readonly head: Head;
}

/** `GET /path HTTP/1.1`: method (tchar), one space, target (visible ASCII), one space, version. */
function requestLine(buf: Buffer, n: number): { method: string; target: string; version: '1.0' | '1.1' } {
  let m = 0;
  while (m < n && TCHAR[buf[m]!] === 1) m++;
  let t = m + 1;
  while (t < n && buf[t]! > 32 && buf[t]! < 127) t++;
  const v = t + 1;
  const ok =
    m > 0 &&
    buf[m] === 32 &&
    t > m + 1 &&
    buf[t] === 32 &&
    n - v === 8 &&
    buf.readUInt32BE(v) === 0x48545450 &&
    buf[v + 4] === 47 &&
    buf[v + 6] === 46 &&
    buf[v + 5]! >= 48 &&
    buf[v + 5]! <= 57 &&
    buf[v + 7]! >= 48 &&
    buf[v + 7]! <= 57;
  if (!ok) throw new HttpError(400, 'malformed request line');
  if (buf[v + 5] !== 49) throw new HttpError(505, `${buf.toString('latin1', v, n)} is not supported`);
  // HTTP/1.x above 1.1 is taken as 1.1 (RFC 9112 2.3) and forwarded as 1.1, the version the proxy
  // speaks (RFC 9110 6.2): the digit is changed in the received bytes the head is copied from.
  if (buf[v + 7]! > 49) buf[v + 7] = 49;
  return { method: buf.toString('latin1', 0, m), target: buf.toString('latin1', m + 1, t), version: buf[v + 7] === 49 ? '1.1' : '1.0' };
}

/** uri-host [":" port] (RFC 3986 3.2.2-3): an IP literal in brackets or a reg-name, which may be empty. */
const HOST_VALUE = /^(?:\[[0-9A-Za-z:._~!$&'()*+,;=-]+\]|[0-9A-Za-z._~!$&'()*+,;=%-]*)(?::[0-9]*)?$/;

export function parseRequestHead(buf: Buffer, end: number): RequestHead {
  const head = scan(buf, end);
  const { method, target, version } = requestLine(buf, head.startEnd);
  if (method === 'CONNECT') throw new HttpError(405, 'CONNECT is not proxied');
  let path: string;
  let authority: string | undefined;
  if (target.charCodeAt(0) === 47) path = target;
  else if (target === '*' && method === 'OPTIONS') path = '*';
  else if (/^https?:\/\//i.test(target)) {
    let u: URL;
    try {
      u = new URL(target);
    } catch {
      throw new HttpError(400, 'malformed request target');
    }
    if (u.username || u.password) throw new HttpError(400, 'user information in the request target');
    // The path as sent, not as the URL parser resolved it ("/a/../b" would be "/b", "\\" a "/"): it
    // gets the same checks as an origin-form one.
    const rest = target.slice(target.indexOf('//') + 2);
    const slash = rest.search(/[/?]/);
    path = slash < 0 || rest[slash] === '?' ? '/' : rest.slice(slash);
    authority = u.host;
  } else throw new HttpError(400, 'malformed request target');
  try {
    // The enforcement core's normal form, as every enforcement point decides on.
    path = requestPath(path);
  } catch (err) {
    throw new HttpError(400, (err as Error).message, 'ERR_PATH_INVALID');
  }
  let hosts = 0;
  for (let i = 0; i < head.count; i++) if (head.kind(i) === HOST) hosts++;
  if (hosts > 1 || (version === '1.1' && hosts === 0)) throw new HttpError(400, hosts ? 'more than one Host field' : 'no Host field');
  // RFC 9110 7.2: a Host that is not uri-host [":" port] is a 400 (a MUST).
  if (hosts === 1 && !HOST_VALUE.test(head.values(HOST)[0]!)) throw new HttpError(400, 'the Host field is not HOST[:PORT]');
  const cl = contentLength(head, 400);
  let body: Framing = { kind: 'none' };
  if (head.has(TRANSFER_ENCODING)) {
    if (version === '1.0') throw new HttpError(400, 'Transfer-Encoding in an HTTP/1.0 request');
    if (cl !== undefined) throw new HttpError(400, 'both Content-Length and Transfer-Encoding');
    if (tokens(head.values(TRANSFER_ENCODING)).at(-1) !== 'chunked') throw new HttpError(400, 'Transfer-Encoding does not end with chunked');
    body = { kind: 'chunked' };
  } else if (cl) body = { kind: 'length', n: cl };
  const conn = head.connection;
  const keepAlive = version === '1.1' ? !conn.includes('close') : conn.includes('keep-alive');
  const up = conn.includes('upgrade') ? head.values(UPGRADE) : [];
  const maxForwards = method === 'OPTIONS' || method === 'TRACE' ? parseMaxForwards(head.all('max-forwards')) : undefined;
  return { method, target, path, version, fields: head, body, keepAlive, upgrade: up.length ? up.join(', ') : undefined, authority, maxForwards, head };
}

/** Max-Forwards = 1*DIGIT (RFC 9110 7.6.2); absent is undefined, anything else malformed. */
export function parseMaxForwards(values: readonly string[]): number | undefined {
  if (values.length === 0) return undefined;
  if (values.length > 1 || !/^\d{1,9}$/.test(values[0]!)) throw new HttpError(400, 'Max-Forwards is not one number');
  return Number(values[0]);
}

/**
 * The request head as forwarded: connection-specific fields and `drop` (lower-case names) left
 * out, `add` (ready-made `name: value` CRLF lines, latin1) added. The common request (HTTP/1.1,
 * none of those fields) goes as it came with `add` appended.
 */
export function forwardRequestHead(req: RequestHead, add: Buffer, drop: readonly string[]): Buffer {
  const h = req.head;
  let dropped = false;
  for (let i = 0; i < h.count && !dropped; i++) for (const n of drop) if (h.nameIs(i, n)) dropped = true;
  if (!h.hasHop && !dropped && req.version === '1.1' && req.authority === undefined && req.maxForwards === undefined) {
    if (add.length === 0) return h.buf.subarray(0, h.end + 4);
    return Buffer.concat([h.buf.subarray(0, h.end + 2), add, CRLF]);
  }
  const hop = h.hopTest();
  const upgrading = req.upgrade !== undefined;
  // An upgrade keeps its Upgrade field; HTTP/1.0 is not persistent unless asked, and asking keeps
  // the pooled upstream connection reusable.
  // An absolute-form target's authority replaces the Host field (RFC 9112 3.2.2).
  const replaceHost = req.authority !== undefined;
  // One hop fewer for the next recipient (RFC 9110 7.6.2; a request at 0 is answered, not forwarded).
  const mf = req.maxForwards;
  const own =
    (replaceHost ? `host: ${req.authority}\r\n` : '') +
    (upgrading ? 'connection: upgrade\r\n' : req.version === '1.0' ? 'connection: keep-alive\r\n' : '') +
    (mf !== undefined ? `max-forwards: ${Math.max(0, mf - 1)}\r\n` : '');
  return h.rewrite(
    (i) =>
      (hop(i) && !(upgrading && h.kind(i) === UPGRADE)) ||
      (replaceHost && h.kind(i) === HOST) ||
      (mf !== undefined && h.nameIs(i, 'max-forwards')) ||
      drop.some((n) => h.nameIs(i, n)),
    own ? Buffer.concat([add, Buffer.from(own, 'latin1')]) : add,
  );
}
const CRLF = Buffer.from('\r\n');

// ---------------------------------------------------------------------------------- responses

export interface ResponseHead {
  readonly status: number;
  readonly fields: Fields;
  readonly body: Framing;
  /** Whether the upstream connection can carry another request after this response. */
  readonly reusable: boolean;
  readonly head: Head;
}

export function parseResponseHead(buf: Buffer, end: number, requestMethod: string): ResponseHead {
  const head = scan(buf, end);
  const n = head.startEnd;
  // HTTP/1.x SSS[ reason]
  const ok =
    n >= 12 &&
    buf.readUInt32BE(0) === 0x48545450 &&
    buf[4] === 47 &&
    buf[5] === 49 &&
    buf[6] === 46 &&
    (buf[7] === 48 || buf[7] === 49) &&
    buf[8] === 32 &&
    buf[9]! >= 48 &&
    buf[9]! <= 57 &&
    buf[10]! >= 48 &&
    buf[10]! <= 57 &&
    buf[11]! >= 48 &&
    buf[11]! <= 57 &&
    (n === 12 || buf[12] === 32);
  if (!ok) throw new HttpError(502, 'malformed status line from the upstream');
  const status = (buf[9]! - 48) * 100 + (buf[10]! - 48) * 10 + (buf[11]! - 48);
  const conn = head.connection;
  let body: Framing;
  if (requestMethod === 'HEAD' || status < 200 || status === 204 || status === 304) body = { kind: 'none' };
  else if (head.has(TRANSFER_ENCODING)) body = tokens(head.values(TRANSFER_ENCODING)).at(-1) === 'chunked' ? { kind: 'chunked' } : { kind: 'close' };
  else {
    const cl = contentLength(head, 502);
    body = cl === undefined ? { kind: 'close' } : cl === 0 ? { kind: 'none' } : { kind: 'length', n: cl };
  }
  const keep = buf[7] === 49 ? !conn.includes('close') : conn.includes('keep-alive');
  return { status, fields: head, body, reusable: keep && body.kind !== 'close', head };
}

/**
 * The response head as the client gets it: the upstream's connection-specific fields dropped and
 * the proxy's own added (close when this client connection ends after the response, keep-alive
 * for an HTTP/1.0 client that asked for it). Undefined when the head can go as it came.
 */
export function forwardResponseHead(res: ResponseHead, req: RequestHead): Buffer | undefined {
  // A body delimited by the upstream closing reaches the client the same way: it must not expect more.
  const own = !req.keepAlive || res.body.kind === 'close' ? 'close' : req.version === '1.0' ? 'keep-alive' : undefined;
  const h = res.head;
  // The proxy's own version on the status line (RFC 9112 2.3: an intermediary MUST send its own
  // HTTP-version in forwarded messages), also for an HTTP/1.0 upstream.
  const upstream10 = h.buf[7] === 48;
  if (!own && !h.hasHop && !upstream10) return undefined;
  const hop = h.hopTest();
  const switching = res.status === 101;
  const out = h.rewrite((i) => hop(i) && !(switching && h.kind(i) === UPGRADE), switching ? 'connection: upgrade\r\n' : own ? `connection: ${own}\r\n` : '');
  out[7] = 49;
  return out;
}
