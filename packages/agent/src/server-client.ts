/** The agent's HTTPS client of the server: trusts the bundle, pins the server's SPIFFE ID, presents the agent SVID on agent routes. */
import { Agent as HttpsAgent, request } from 'node:https';
import { checkServerIdentity, type TLSSocket } from 'node:tls';
import { ERROR_CODE_FORMAT, WritError, uriSansOf } from '@writ/spiffe';
import { DECISION_REPORT_TYPE, PROTOCOL_HEADER, PROTOCOL_VERSION, parseProtocolVersion } from '@writ/protocol';

/** What the agent needs of the server: the seam its unit tests fill with a fake (testing/fake-server.ts). */
export interface ServerApi {
  /** A JSON request (a Buffer body goes as protobuf); rejects with the server's `WritError` code. */
  call<T>(method: string, path: string, body?: unknown, timeoutMs?: number): Promise<T>;
  /** New trust roots or a new agent SVID (undefined: none, as when attesting): later requests use them. */
  configure(opts: { ca?: string; identity?: { cert: string; key: string } | undefined }): void;
  /**
   * A form-encoded POST without the agent's certificate (the client authenticates in the body,
   * as POST /v1/token's client_assertion): the status and the JSON answer, whatever the status.
   */
  postForm?(path: string, form: string, timeoutMs?: number): Promise<{ status: number; json: Record<string, unknown> | undefined }>;
  close(): void;
}

/** Thrown when the peer is not the pinned server; nothing has been sent to it. */
class ServerIdentityError extends Error {}

/**
 * No answer from the server (refused, reset, timed out, not the pinned server): another replica
 * may answer. Code ERR_REQUEST_FAILED, as before there were replicas.
 */
export class ServerUnreachableError extends WritError {
  constructor(message: string) {
    super('ERR_REQUEST_FAILED', message);
  }
}

export class ServerClient implements ServerApi {
  readonly #base: URL;
  readonly #serverId: string;
  #ca: string;
  #agent: HttpsAgent;
  /** The same trust and pinning, no client certificate. */
  #anonymous: HttpsAgent;
  #identity: { cert: string; key: string } | undefined;
  #serverProtocol: number | undefined;

  /** `serverId` is pinned from the first request on: a workload SVID from the same CA, with the right address, is not the server. */
  constructor(serverUrl: string, caPem: string, serverId: string) {
    this.#base = new URL(serverUrl);
    this.#ca = caPem;
    this.#serverId = serverId;
    this.#agent = this.#newAgent();
    this.#anonymous = this.#newAgent(false);
  }

  #newAgent(withIdentity = true): HttpsAgent {
    const expected = this.#serverId;
    return new HttpsAgent({
      keepAlive: true,
      maxSockets: 8,
      ca: this.#ca,
      ...(withIdentity ? (this.#identity ?? {}) : {}),
      checkServerIdentity: (host, cert) => {
        const err = checkServerIdentity(host, cert);
        if (err) return err;
        const uris = uriSansOf(cert);
        return uris.length === 1 && uris[0] === expected
          ? undefined
          : new ServerIdentityError(
              `the server at ${this.#base.host} presented ${uris.join(', ') || 'no SPIFFE ID'}, expected ${expected} (another ID: --server-spiffe-id)`,
            );
      },
    });
  }

  /** The protocol version the server said it speaks in its last answer (undefined before the first). */
  get serverProtocol(): number | undefined {
    return this.#serverProtocol;
  }

  configure(opts: { ca?: string; identity?: { cert: string; key: string } | undefined }): void {
    if (opts.ca !== undefined) this.#ca = opts.ca;
    if ('identity' in opts) this.#identity = opts.identity;
    this.#agent.destroy();
    this.#agent = this.#newAgent();
    if (opts.ca !== undefined) {
      this.#anonymous.destroy();
      this.#anonymous = this.#newAgent(false);
    }
  }

  postForm(path: string, form: string, timeoutMs = 20_000): Promise<{ status: number; json: Record<string, unknown> | undefined }> {
    return this.#send('POST', path, Buffer.from(form), 'application/x-www-form-urlencoded', timeoutMs, this.#anonymous, (status, json) => ({ status, json }));
  }

  call<T>(method: string, path: string, body?: unknown, timeoutMs = 40_000): Promise<T> {
    const payload = body === undefined ? undefined : Buffer.isBuffer(body) ? body : JSON.stringify(body);
    const type = Buffer.isBuffer(body) ? DECISION_REPORT_TYPE : 'application/json';
    return this.#send(method, path, payload, type, timeoutMs, this.#agent, (status, json) => {
      if (status >= 200 && status < 300 && json) return json as T;
      const code = typeof json?.['code'] === 'string' && ERROR_CODE_FORMAT.test(json['code']) ? json['code'] : 'ERR_REQUEST_FAILED';
      throw new WritError(
        code,
        typeof json?.['message'] === 'string' ? json['message'] : `server answered HTTP ${status}${json ? '' : ' with a body that is not JSON'}`,
      );
    });
  }

  #send<T>(
    method: string,
    path: string,
    payload: string | Buffer | undefined,
    type: string,
    timeoutMs: number,
    agent: HttpsAgent,
    answer: (status: number, json: Record<string, unknown> | undefined) => T,
  ): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const req = request(
        new URL(path, this.#base),
        {
          method,
          agent,
          timeout: timeoutMs,
          headers: {
            accept: 'application/json',
            [PROTOCOL_HEADER]: String(PROTOCOL_VERSION),
            ...(payload !== undefined ? { 'content-type': type, 'content-length': Buffer.byteLength(payload) } : {}),
          },
        },
        (res) => {
          this.#serverProtocol = parseProtocolVersion(res.headers[PROTOCOL_HEADER]);
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (c: Buffer) => {
            size += c.length;
            if (size > 256 * 1024 * 1024) req.destroy(new Error('response too large'));
            else chunks.push(c);
          });
          res.on('end', () => {
            let json: Record<string, unknown> | undefined;
            try {
              json = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>;
            } catch {
              json = undefined;
            }
            try {
              resolve(answer(res.statusCode ?? 0, json));
            } catch (err) {
              reject(err);
            }
          });
        },
      );
      req.on('timeout', () => req.destroy(new Error(`no answer in ${timeoutMs} ms`)));
      req.on('error', (e: NodeJS.ErrnoException) =>
        reject(
          e instanceof ServerIdentityError
            ? new ServerUnreachableError(e.message)
            : new ServerUnreachableError(`server ${this.#base.origin} unreachable: ${e.code ?? e.message}`),
        ),
      );
      // The body (a join token, a PSAT) goes only to a peer that passed the identity check:
      // a fresh socket is written to once its handshake and checkServerIdentity succeeded.
      req.once('socket', (socket) => {
        const tls = socket as TLSSocket;
        const send = (): void => {
          if (payload !== undefined) req.write(payload);
          req.end();
        };
        if (tls.authorized) send();
        else tls.once('secureConnect', send);
      });
    });
  }

  /** The server's origin, for logs. */
  get origin(): string {
    return this.#base.origin;
  }

  close(): void {
    this.#agent.destroy();
    this.#anonymous.destroy();
  }
}
