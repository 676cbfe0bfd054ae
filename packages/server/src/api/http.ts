/** Small HTTP plumbing: routing, bounded JSON bodies, error mapping. No framework: the surface is small. */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { WritError, isWritError } from '@writ/spiffe';
import { httpStatusOf } from '../errors.ts';
import { jsonPathAt, syntaxErrorAt } from './json-path.ts';
import type { AdminToken, Role } from '../store/types.ts';

export const DEFAULT_BODY_LIMIT = 1024 * 1024;

export interface Request {
  readonly method: string;
  readonly path: string;
  readonly query: URLSearchParams;
  readonly params: readonly string[];
  readonly raw: IncomingMessage;
  /** The caller's role, once authenticated. */
  role: Role | undefined;
  /** The caller's API token record (never the token itself), once authenticated. */
  token: AdminToken | undefined;
  /** The calling agent's SPIFFE ID, on agent routes (authenticated by its X.509-SVID). */
  agent: string | undefined;
  /** The parsed JSON body (routes with `body`). */
  body: unknown;
}

export interface Reply {
  readonly status: number;
  readonly body: unknown;
  readonly contentType?: string;
  readonly headers?: Record<string, string>;
}

export type Handler = (req: Request) => Promise<Reply> | Reply;

export interface Route {
  readonly method: string;
  readonly pattern: RegExp;
  /** The route name used in metrics and the OpenAPI document, e.g. `/v1/entries/{id}`. */
  readonly name: string;
  /** undefined: no authentication; 'agent': the client certificate must be a live agent SVID. */
  readonly role: Role | 'agent' | undefined;
  /** A body is read (size-limited) before the handler: JSON, or with `protobuf` also `application/x-protobuf` (a Buffer). */
  readonly body?: RouteBody | undefined;
  /** The query parameters it takes, checked before the handler (any other is refused); undefined: not checked. */
  readonly query?: QuerySpec | undefined;
  readonly summary: string;
  readonly handler: Handler;
}

/**
 * A route table's lookup: the routes whose pattern matches a path, in table order. A path that is
 * the name of a route without parameters (`/v1/token`) is answered from a map built once, since
 * the table does not change while the server serves; any other path tests every pattern. Build it
 * once the table is complete.
 */
export class RouteIndex {
  readonly #routes: readonly Route[];
  readonly #exact = new Map<string, readonly Route[]>();

  constructor(routes: readonly Route[]) {
    this.#routes = [...routes];
    for (const r of this.#routes) if (!r.name.includes('{') && !this.#exact.has(r.name)) this.#exact.set(r.name, this.#scan(r.name));
  }

  /** The routes that match `path` (several when they differ by method), in table order; empty: no such endpoint. */
  candidates(path: string): readonly Route[] {
    return this.#exact.get(path) ?? this.#scan(path);
  }

  #scan(path: string): readonly Route[] {
    return this.#routes.filter((r) => r.pattern.test(path));
  }
}

export interface RouteBody {
  readonly limit: number;
  /** The fields a JSON object body may have, checked before the handler (any other is refused). */
  readonly fields?: readonly string[];
  /** The protobuf message this route also takes, for the OpenAPI document (`writ.authz.v1.ReportRequest`). */
  readonly protobuf?: string;
}

/** How route files register routes: `body` and `query` declare what the route takes. */
export type AddRoute = (method: string, name: string, role: Route['role'], summary: string, handler: Handler, body?: RouteBody, query?: QuerySpec) => void;

export type QueryParam =
  | { readonly kind: 'integer'; readonly min: number; readonly max: number }
  | { readonly kind: 'string'; readonly max: number; readonly repeat: boolean };
export type QuerySpec = Readonly<Record<string, QueryParam>>;

export const integerParam = (min: number, max: number): QueryParam => ({ kind: 'integer', min, max });
export const stringParam = (max = 2048, repeat = false): QueryParam => ({ kind: 'string', max, repeat });

export const ok = (body: unknown, status = 200): Reply => ({ status, body });

/** An optional time (epoch ms) in API form: RFC 3339, or null. */
export const isoOrNull = (t: number | null): string | null => (t === null ? null : new Date(t).toISOString());

/**
 * A stored time in API form, null when it is no date (a row written before times were checked):
 * one bad row must not make a whole listing fail.
 */
export const isoIfValid = (t: number): string | null => (Number.isFinite(t) && Math.abs(t) <= 8.64e15 ? new Date(t).toISOString() : null);

/** PostgreSQL cannot store U+0000 in text, and no Writ name or ID holds it: refused at the boundary. */
function noNul(s: string, field: string, what = field): void {
  if (s.includes('\0')) throw new WritError('ERR_FIELD_INVALID', `${what.slice(0, 120)} contains a NUL character`, { field: field.slice(0, 100) });
}

/** Path parameters must be valid percent-encoding without NUL (routes decode them). */
export function checkParams(route: Route, params: readonly string[]): void {
  if (params.length === 0) return;
  const names = [...route.name.matchAll(/\{([^}]+)\}/g)].map((m) => m[1]!);
  params.forEach((p, i) => {
    const field = names[i] ?? `param${i}`;
    let decoded: string;
    try {
      decoded = decodeURIComponent(p);
    } catch {
      throw new WritError('ERR_FIELD_INVALID', `path parameter "${field}" is not valid percent-encoding`, { field });
    }
    noNul(decoded, field);
  });
}

/** Checks the query against what the route declares: known names, integers in range, bounded strings. */
export function checkQuery(q: URLSearchParams, spec: QuerySpec | undefined): void {
  for (const [k, v] of q) {
    noNul(k, k, 'a query parameter name');
    noNul(v, k);
    if (!spec) continue;
    const p = Object.hasOwn(spec, k) ? spec[k] : undefined;
    if (!p)
      throw new WritError('ERR_FIELD_UNKNOWN', `unknown query parameter "${k.slice(0, 64)}"; allowed: ${Object.keys(spec).join(', ') || 'none'}`, {
        field: k.slice(0, 64),
      });
    if (p.kind === 'integer') {
      if (!/^-?\d{1,16}$/.test(v) || Number(v) < p.min || Number(v) > p.max)
        throw new WritError('ERR_FIELD_INVALID', `${k} must be a whole number from ${p.min} to ${p.max}`, { field: k });
    } else if (v.length > p.max) throw new WritError('ERR_FIELD_INVALID', `${k} is longer than ${p.max} characters`, { field: k });
    if (!(p.kind === 'string' && p.repeat) && q.getAll(k).length > 1) throw new WritError('ERR_FIELD_INVALID', `${k} is given more than once`, { field: k });
  }
}

const MAX_JSON_DEPTH = 32;

/** Walks a parsed body without recursion: no NUL in any key or string, and no deeper nesting than any Writ document needs. */
function checkJson(value: unknown): void {
  const stack: Array<[unknown, string, number]> = [[value, 'body', 0]];
  while (stack.length) {
    const [v, field, depth] = stack.pop()!;
    if (typeof v === 'string') noNul(v, field, `field "${field}"`);
    if (v === null || typeof v !== 'object') continue;
    if (depth >= MAX_JSON_DEPTH) {
      const top = field.split(/[.[]/)[0]!;
      throw new WritError('ERR_JSON_INVALID', `field "${top}" is nested deeper than ${MAX_JSON_DEPTH} levels`, { field: top });
    }
    for (const [k, x] of Object.entries(v)) {
      const name = Array.isArray(v) ? `${field}[${k}]` : field === 'body' ? k : `${field}.${k}`;
      noNul(k, name, `field "${name}"`);
      stack.push([x, name, depth + 1]);
    }
  }
}

/**
 * The body's chunks, refused once past `limit`. Not with `for await`: leaving that loop destroys
 * the request and its socket, and the 413 would never reach the client.
 */
function collect(req: IncomingMessage, limit: number): Promise<{ chunks: Buffer[]; size: number }> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const done = (err?: Error): void => {
      req.off('data', onData).off('end', onEnd).off('error', done).off('close', onClose);
      if (err) reject(err);
      else resolve({ chunks, size });
    };
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size > limit) {
        req.pause();
        done(new WritError('ERR_BODY_TOO_LARGE', `request body larger than ${limit} bytes`));
      } else chunks.push(chunk);
    };
    const onEnd = (): void => done();
    const onClose = (): void => done(Object.assign(new Error('the client closed the connection before the whole body arrived'), { code: 'ECONNRESET' }));
    req.on('data', onData).once('end', onEnd).once('error', done).once('close', onClose);
  });
}

/**
 * Reads the body with a size limit checked while streaming, before parsing: parsed JSON, or the
 * bytes of a protobuf body where the route takes one. `proceed` sends 100 Continue to a client
 * that waits for it, once the content type and declared size have been accepted.
 */
export async function readBody(req: IncomingMessage, body: RouteBody, proceed?: () => void): Promise<unknown> {
  const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
  const binary = body.protobuf !== undefined && (type === 'application/x-protobuf' || type === 'application/protobuf');
  if (type !== 'application/json' && !binary) {
    throw new WritError(
      'ERR_CONTENT_TYPE',
      `Content-Type must be application/json${body.protobuf ? ' or application/x-protobuf' : ''}, got ${JSON.stringify(type.slice(0, 60) || 'none')}`,
    );
  }
  const { limit } = body;
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > limit) throw new WritError('ERR_BODY_TOO_LARGE', `request body larger than ${limit} bytes`);
  if (proceed && /^100-continue$/i.test(req.headers.expect ?? '')) proceed();
  const { chunks, size } = await collect(req, limit);
  if (binary) return Buffer.concat(chunks, size);
  const text = Buffer.concat(chunks, size).toString('utf8');
  if (text.trim() === '') throw new WritError('ERR_JSON_INVALID', 'request body is empty; a JSON object is expected');
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    // Named by the JSON path where it broke, so a big document that breaks says where.
    const message = (err as Error).message;
    const pos = syntaxErrorAt(text);
    const path = pos === undefined ? '' : jsonPathAt(text, pos);
    const where = pos === undefined ? '' : ` ${path ? `at ${path.slice(0, 200)} ` : ''}(${lineColumn(text, pos)})`;
    throw new WritError('ERR_JSON_INVALID', `request body is not JSON${where}: ${message.slice(0, 120)}`, path ? { field: path.slice(0, 200) } : {});
  }
  checkJson(parsed);
  if (body.fields) onlyKeys(object(parsed), body.fields);
  return parsed;
}

/** A body's bytes, refused (ERR_BODY_TOO_LARGE) once the declared length or the bytes so far pass `limit`: for routes that read a form themselves. */
export async function readBytes(req: IncomingMessage, limit: number): Promise<Buffer> {
  if (Number(req.headers['content-length'] ?? 0) > limit) throw new WritError('ERR_BODY_TOO_LARGE', `request body larger than ${limit} bytes`);
  const { chunks, size } = await collect(req, limit);
  return Buffer.concat(chunks, size);
}

/** `line 3, column 14` (1-based) of a position in a text; `the end` past its last character. */
function lineColumn(text: string, pos: number): string {
  if (pos >= text.length) return 'at the end';
  let line = 1;
  let start = 0;
  for (let i = text.indexOf('\n'); i !== -1 && i < pos; i = text.indexOf('\n', i + 1)) {
    line++;
    start = i + 1;
  }
  return `line ${line}, column ${pos - start + 1}`;
}

/** Serialises an error for the client: WritErrors as themselves, anything else as a bare 500. */
export function errorReply(err: unknown): Reply {
  if (isWritError(err)) return { status: httpStatusOf(err.code), body: err.toJSON() };
  return { status: 500, body: { code: 'ERR_INTERNAL', message: 'internal error; see the server log' } };
}

/** Writes a reply: a string as text, a Buffer as it is (bytes encoded once for many answers), anything else as JSON. */
export function send(res: ServerResponse, reply: Reply): void {
  if (res.headersSent) return;
  const isText = typeof reply.body === 'string';
  const isBytes = reply.body instanceof Uint8Array;
  const payload = isText || isBytes ? (reply.body as string | Uint8Array) : `${JSON.stringify(reply.body)}\n`;
  res.writeHead(reply.status, {
    'content-type': reply.contentType ?? (isText ? 'text/plain; charset=utf-8' : isBytes ? 'application/octet-stream' : 'application/json'),
    'content-length': Buffer.byteLength(payload),
    'cache-control': 'no-store',
    'x-content-type-options': 'nosniff',
    ...reply.headers,
  });
  res.end(payload);
}

// ------------------------------------------------------------ input validation helpers

export type Json = Record<string, unknown>;

export function object(v: unknown, field = 'body'): Json {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new WritError('ERR_FIELD_INVALID', `${field} must be a JSON object`, { field });
  return v as Json;
}

/** Rejects any key not in `allowed`, naming it. */
export function onlyKeys(o: Json, allowed: readonly string[], prefix = ''): void {
  for (const k of Object.keys(o)) {
    if (!allowed.includes(k))
      throw new WritError('ERR_FIELD_UNKNOWN', `unknown field "${prefix}${k.slice(0, 64)}"; allowed: ${allowed.join(', ')}`, {
        field: prefix + k.slice(0, 64),
      });
  }
}

export function str(o: Json, key: string, opts: { required?: boolean; max?: number; prefix?: string } = {}): string | undefined {
  const v = o[key];
  const field = (opts.prefix ?? '') + key;
  if (v === undefined || v === null) {
    if (opts.required) throw new WritError('ERR_FIELD_MISSING', `field "${field}" is required`, { field });
    return undefined;
  }
  if (typeof v !== 'string') throw new WritError('ERR_FIELD_INVALID', `field "${field}" must be a string`, { field });
  const max = opts.max ?? 2048;
  if (v.length > max) throw new WritError('ERR_FIELD_INVALID', `field "${field}" is longer than ${max} characters`, { field });
  return v;
}

export function strList(o: Json, key: string, opts: { max: number; itemMax?: number; prefix?: string }): string[] | undefined {
  const v = o[key];
  const field = (opts.prefix ?? '') + key;
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v)) throw new WritError('ERR_FIELD_INVALID', `field "${field}" must be an array of strings`, { field });
  if (v.length > opts.max) throw new WritError('ERR_FIELD_INVALID', `field "${field}" has more than ${opts.max} items`, { field });
  return v.map((x, i) => {
    if (typeof x !== 'string') throw new WritError('ERR_FIELD_INVALID', `field "${field}[${i}]" must be a string`, { field: `${field}[${i}]` });
    if (x.length > (opts.itemMax ?? 2048)) throw new WritError('ERR_FIELD_INVALID', `field "${field}[${i}]" is too long`, { field: `${field}[${i}]` });
    return x;
  });
}

/** Re-throws a validation error with the field it concerns. */
export function withField<T>(field: string, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (isWritError(err) && err.field === undefined) throw new WritError(err.code, `field "${field}": ${err.message}`, { field, cause: err });
    throw err;
  }
}
