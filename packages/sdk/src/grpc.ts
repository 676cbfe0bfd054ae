/**
 * A small gRPC layer on node:http2: length-prefixed messages, status in trailers, Trailers-Only
 * errors, percent-encoded grpc-message. Enough for the Workload API on a Unix socket, on both sides,
 * without a generated stub or a native dependency.
 */
import { connect as netConnect } from 'node:net';
import { connect as h2connect, constants as h2, type ClientHttp2Session, type IncomingHttpHeaders, type ServerHttp2Stream } from 'node:http2';

export const GRPC_STATUS = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  UNAUTHENTICATED: 16,
} as const;
export type GrpcStatus = (typeof GRPC_STATUS)[keyof typeof GRPC_STATUS];
export const STATUS_NAME: Record<number, string> = Object.fromEntries(Object.entries(GRPC_STATUS).map(([k, v]) => [v, k]));

export class GrpcError extends Error {
  override name = 'GrpcError';
  readonly code: number;
  constructor(code: number, details: string) {
    super(`${STATUS_NAME[code] ?? code}: ${details}`);
    this.code = code;
  }
  get details(): string {
    return this.message.slice(this.message.indexOf(': ') + 2);
  }
}

export const DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024;

export function frame(msg: Buffer): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt32BE(msg.length, 1);
  return Buffer.concat([head, msg]);
}

/**
 * Splits framed messages as they arrive; rejects compressed or oversized ones. Chunks are kept as
 * they come and joined once, when a message is complete: joining on every chunk copied a 1 MiB
 * message about 64 times (16 KiB frames), and the garbage that left kept the agent's collector
 * doing full collections several times a second.
 */
export class Deframer {
  #chunks: Buffer[] = [];
  #length = 0;
  /** Bytes of the message being received, prefix included, once its prefix is in. */
  #need = 0;
  readonly #max: number;
  constructor(max = DEFAULT_MAX_MESSAGE_BYTES) {
    this.#max = max;
  }
  push(chunk: Buffer): Buffer[] {
    if (chunk.length) this.#chunks.push(chunk), (this.#length += chunk.length);
    const out: Buffer[] = [];
    for (;;) {
      if (this.#need === 0) {
        if (this.#length < 5) break;
        if (this.#chunks[0]!.length < 5) this.#chunks = [Buffer.concat(this.#chunks, this.#length)];
        const head = this.#chunks[0]!;
        if (head[0] !== 0) throw new GrpcError(GRPC_STATUS.UNIMPLEMENTED, 'compressed messages are not supported');
        const len = head.readUInt32BE(1);
        if (len > this.#max) throw new GrpcError(GRPC_STATUS.RESOURCE_EXHAUSTED, `message of ${len} bytes exceeds the limit of ${this.#max}`);
        this.#need = 5 + len;
      }
      if (this.#length < this.#need) break;
      const all = this.#chunks.length === 1 ? this.#chunks[0]! : Buffer.concat(this.#chunks, this.#length);
      out.push(all.subarray(5, this.#need));
      const rest = all.subarray(this.#need);
      this.#chunks = rest.length ? [rest] : [];
      this.#length = rest.length;
      this.#need = 0;
    }
    return out;
  }
  get pending(): number {
    return this.#length;
  }
}

/** grpc-message is percent-encoded (gRPC over HTTP/2 spec). */
export function encodeGrpcMessage(s: string): string {
  return Buffer.from(s, 'utf8').reduce(
    (acc, b) => acc + (b >= 0x20 && b <= 0x7e && b !== 0x25 ? String.fromCharCode(b) : `%${b.toString(16).toUpperCase().padStart(2, '0')}`),
    '',
  );
}
export function decodeGrpcMessage(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

// ------------------------------------------------------------------ server side

/** One server call: the request message, the caller's metadata, and ways to answer. */
export class ServerCall {
  readonly method: string;
  readonly metadata: IncomingHttpHeaders;
  readonly stream: ServerHttp2Stream;
  #headersSent = false;
  #done = false;

  constructor(stream: ServerHttp2Stream, headers: IncomingHttpHeaders) {
    this.stream = stream;
    this.metadata = headers;
    this.method = String(headers[':path'] ?? '');
  }

  get closed(): boolean {
    return this.#done || this.stream.closed || this.stream.destroyed;
  }

  send(msg: Buffer): void {
    if (this.closed) return;
    if (!this.#headersSent) {
      this.stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      this.#headersSent = true;
    }
    this.stream.write(frame(msg));
  }

  /** Ends the call with a status; before any message this is a Trailers-Only response. */
  end(code: number = GRPC_STATUS.OK, message = ''): void {
    if (this.closed) return;
    this.#done = true;
    const status = { 'grpc-status': String(code), ...(message ? { 'grpc-message': encodeGrpcMessage(message) } : {}) };
    if (!this.#headersSent) {
      this.#headersSent = true;
      this.stream.respond({ ':status': 200, 'content-type': 'application/grpc', ...status }, { endStream: true });
      return;
    }
    this.stream.once('wantTrailers', () => this.stream.sendTrailers(status));
    this.stream.end();
  }

  fail(err: unknown): void {
    if (err instanceof GrpcError) this.end(err.code, err.details);
    else this.end(GRPC_STATUS.INTERNAL, 'internal error');
  }
}

/**
 * Reads the single request message of a unary-request call (all Workload API RPCs are), then
 * hands the call to `handler`. Malformed framing ends the call with a clear status.
 */
export function acceptUnaryRequest(
  stream: ServerHttp2Stream,
  headers: IncomingHttpHeaders,
  maxBytes: number,
  handler: (call: ServerCall, request: Buffer) => void,
): void {
  const call = new ServerCall(stream, headers);
  stream.on('error', () => undefined); // a client vanishing mid-stream is not our error
  if (headers[':method'] !== 'POST' || !String(headers['content-type'] ?? '').startsWith('application/grpc')) {
    // Not gRPC at all: plain HTTP/2 answer.
    if (!stream.headersSent) stream.respond({ ':status': 415 }, { endStream: true });
    return;
  }
  const deframer = new Deframer(maxBytes);
  const messages: Buffer[] = [];
  stream.on('data', (chunk: Buffer) => {
    if (call.closed) return;
    try {
      messages.push(...deframer.push(chunk));
    } catch (err) {
      call.fail(err);
      stream.close(h2.NGHTTP2_CANCEL);
    }
  });
  stream.on('end', () => {
    if (call.closed) return;
    if (messages.length !== 1 || deframer.pending !== 0) {
      return call.end(GRPC_STATUS.INVALID_ARGUMENT, messages.length === 0 ? 'request message missing or truncated' : 'expected exactly one request message');
    }
    try {
      handler(call, messages[0]!);
    } catch (err) {
      call.fail(err);
    }
  });
}

// ------------------------------------------------------------------ client side

/** Parses `unix:///path`, `unix:path` or `tcp://host:port` (SPIFFE_ENDPOINT_SOCKET forms). */
export function parseEndpoint(addr: string): { path: string } | { host: string; port: number } {
  if (addr.startsWith('unix://')) {
    const u = new URL(addr);
    if (u.host !== '' || !u.pathname || u.search || u.hash || u.username)
      throw new TypeError(`invalid unix endpoint ${JSON.stringify(addr)}: use unix:///absolute/path`);
    return { path: decodeURIComponent(u.pathname) };
  }
  if (addr.startsWith('unix:')) return { path: addr.slice(5) };
  if (addr.startsWith('tcp://')) {
    const u = new URL(addr);
    if (!u.port || (u.pathname !== '' && u.pathname !== '/') || u.search || u.hash || u.username)
      throw new TypeError(`invalid tcp endpoint ${JSON.stringify(addr)}: use tcp://IP:PORT`);
    return { host: u.hostname.replace(/^\[|\]$/g, ''), port: Number(u.port) };
  }
  throw new TypeError(`invalid endpoint ${JSON.stringify(addr)}: must start with unix:// or tcp://`);
}

export class GrpcClient {
  readonly #endpoint: ReturnType<typeof parseEndpoint>;
  #session: ClientHttp2Session | undefined;
  #active = 0;

  constructor(endpoint: string) {
    this.#endpoint = parseEndpoint(endpoint);
  }

  #connect(): ClientHttp2Session {
    if (this.#session && !this.#session.closed && !this.#session.destroyed) return this.#session;
    const ep = this.#endpoint;
    const s = h2connect('http://localhost', {
      createConnection: () => ('path' in ep ? netConnect(ep.path) : netConnect(ep.port, ep.host)),
    });
    s.on('error', () => undefined);
    // Idle connections must not keep the process alive; live calls do (see #active).
    s.unref();
    this.#session = s;
    return s;
  }

  /** Starts a call; `onMessage` for each response, `onEnd` once with the final status. Returns a cancel function. */
  call(
    method: string,
    request: Buffer,
    metadata: Record<string, string>,
    onMessage: (m: Buffer) => void,
    onEnd: (err: GrpcError | undefined) => void,
  ): () => void {
    let ended = false;
    const session = this.#connect();
    if (this.#active++ === 0) session.ref();
    const finish = (err: GrpcError | undefined): void => {
      if (ended) return;
      ended = true;
      if (--this.#active === 0 && !session.destroyed) session.unref();
      onEnd(err);
    };
    let req: ReturnType<ClientHttp2Session['request']>;
    try {
      req = session.request({ ':method': 'POST', ':path': method, 'content-type': 'application/grpc', te: 'trailers', ...metadata });
    } catch (err) {
      finish(new GrpcError(GRPC_STATUS.UNAVAILABLE, (err as Error).message));
      return () => undefined;
    }
    const deframer = new Deframer();
    let status: number | undefined;
    let message = '';
    const takeStatus = (h: IncomingHttpHeaders): void => {
      if (h['grpc-status'] !== undefined) {
        status = Number(h['grpc-status']);
        message = decodeGrpcMessage(String(h['grpc-message'] ?? ''));
      }
    };
    req.on('response', takeStatus);
    req.on('trailers', takeStatus);
    req.on('data', (chunk: Buffer) => {
      try {
        for (const m of deframer.push(chunk)) onMessage(m);
      } catch (err) {
        finish(err instanceof GrpcError ? err : new GrpcError(GRPC_STATUS.INTERNAL, String(err)));
        req.close(h2.NGHTTP2_CANCEL);
      }
    });
    req.on('close', () => {
      if (status === undefined) return finish(new GrpcError(GRPC_STATUS.UNAVAILABLE, 'stream closed without a status'));
      finish(status === 0 ? undefined : new GrpcError(status, message));
    });
    req.on('error', (err) => finish(new GrpcError(GRPC_STATUS.UNAVAILABLE, err.message)));
    req.end(frame(request));
    return () => {
      finish(new GrpcError(GRPC_STATUS.CANCELLED, 'cancelled by the client'));
      req.close(h2.NGHTTP2_CANCEL);
    };
  }

  unary(method: string, request: Buffer, metadata: Record<string, string>): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      let reply: Buffer | undefined;
      this.call(
        method,
        request,
        metadata,
        (m) => (reply = m),
        (err) => (err ? reject(err) : reply ? resolve(reply) : reject(new GrpcError(GRPC_STATUS.INTERNAL, 'no response message'))),
      );
    });
  }

  close(): void {
    this.#session?.close();
    this.#session = undefined;
  }
}
