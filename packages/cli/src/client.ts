/**
 * The CLI's client of the admin API: HTTPS with the trust bundle as CA, the server's SPIFFE ID
 * pinned, bearer token, errors as WritErrors.
 */
import { readFileSync } from 'node:fs';
import { Agent, request } from 'node:https';
import type { ClientRequest } from 'node:http';
import type { Readable } from 'node:stream';
import { checkServerIdentity } from 'node:tls';
import { ERROR_CODE_FORMAT, WritError, isWritError, parseCertificatesPem, parseSpiffeId, trustDomainOfCaPem, uriSansOf } from '@writ/spiffe';

export interface Connection {
  readonly server: string;
  readonly token: string | undefined;
  readonly caFile: string | undefined;
  /** The server's trust domain; default: the one the CA file's certificates name. */
  readonly trustDomain?: string | undefined;
  /** The SPIFFE ID the server must present; default `spiffe://TD/writ/server`. */
  readonly serverSpiffeId?: string | undefined;
}

export const DEFAULT_SERVER = 'https://127.0.0.1:8443';

/** An error answer of the server; `serverCode` is its code even when this build does not know it. */
export class ApiError extends WritError {
  readonly serverCode: string;
  readonly httpStatus: number;
  readonly details: unknown;
  constructor(code: string, serverCode: string, httpStatus: number, message: string, extra: { field?: string; details?: unknown }) {
    super(code, message, extra.field ? { field: extra.field } : undefined);
    this.serverCode = serverCode;
    this.httpStatus = httpStatus;
    this.details = extra.details;
  }
}

export class ApiClient {
  readonly #url: URL;
  readonly #token: string | undefined;
  readonly #ca: string | undefined;
  /** The server's SPIFFE ID, or why it cannot be known (then nothing is sent). */
  readonly #expected: { id: string } | { problem: string };
  /** Connections of this client only: a pooled socket was checked against this client's expected ID. */
  #agent: Agent | undefined;
  /** Set when the handshake found another ID (the request's error is then this one). */
  #mismatch: WritError | undefined;
  #caFile: string | undefined;

  constructor(conn: Connection) {
    if (conn.server.includes(','))
      throw new WritError('ERR_CONFIG_INVALID', 'give one --server URL here (several replicas are for writ agent start)', { field: 'server' });
    try {
      this.#url = new URL(conn.server);
    } catch {
      throw new WritError('ERR_CONFIG_INVALID', `--server ${JSON.stringify(conn.server)} is not a URL (e.g. https://127.0.0.1:8443)`, { field: 'server' });
    }
    if (this.#url.protocol !== 'https:') throw new WritError('ERR_CONFIG_INVALID', '--server must be an https:// URL', { field: 'server' });
    this.#token = conn.token;
    if (conn.caFile) {
      this.#caFile = conn.caFile;
      try {
        this.#ca = readFileSync(conn.caFile, 'utf8');
      } catch (err) {
        throw new WritError('ERR_CONFIG_INVALID', `cannot read --ca-file ${conn.caFile}: ${(err as NodeJS.ErrnoException).code}`, { field: 'caFile' });
      }
    }
    this.#expected = ApiClient.#expectedId(conn, this.#ca);
  }

  static #expectedId(conn: Connection, ca: string | undefined): { id: string } | { problem: string } {
    if (conn.serverSpiffeId) {
      parseSpiffeId(conn.serverSpiffeId); // a typo fails here, not as a mismatch
      return { id: conn.serverSpiffeId };
    }
    let td = conn.trustDomain;
    if (!td && ca) {
      const noCert = { problem: `--ca-file ${conn.caFile} holds no PEM certificate (it should be the server's DATA_DIR/bundle.pem)` };
      try {
        if (parseCertificatesPem(ca).length === 0) return noCert;
        td = trustDomainOfCaPem(ca);
      } catch {
        return noCert;
      }
      if (!td) return { problem: `the certificates of --ca-file ${conn.caFile} name no single trust domain: pass --trust-domain or --server-spiffe-id` };
    }
    // Without a CA file the system's roots decide the TLS trust, but the server must still prove
    // it is the Writ server of a trust domain the operator named.
    if (!td)
      return { problem: "cannot pin the server's identity: pass --ca-file DATA_DIR/bundle.pem (or WRIT_CA_FILE), or --trust-domain / --server-spiffe-id" };
    return { id: `spiffe://${parseSpiffeId(`spiffe://${td}`).trustDomain}/writ/server` };
  }

  /** The SPIFFE ID the server must present (undefined when it cannot be known; every call then fails). */
  get serverSpiffeId(): string | undefined {
    return 'id' in this.#expected ? this.#expected.id : undefined;
  }

  #describe(e: NodeJS.ErrnoException): string {
    const code = e.code ?? '';
    const at = this.#url.origin;
    if (UNTRUSTED.has(code))
      return this.#caFile
        ? `the certificate presented at ${at} is not from the CA in --ca-file ${this.#caFile} (is that this server's DATA_DIR/bundle.pem?) [${code}]`
        : `the certificate presented at ${at} is not trusted by the system's roots: pass --ca-file DATA_DIR/bundle.pem or set WRIT_CA_FILE [${code}]`;
    if (code === 'ERR_TLS_CERT_ALTNAME_INVALID')
      return `the certificate presented at ${at} does not name ${this.#url.hostname}: is --server the Writ server's address? (its certificate names localhost, its listen address and its --dns-name values) [${code}]`;
    if (code === 'CERT_HAS_EXPIRED' || code === 'CERT_NOT_YET_VALID')
      return `the certificate presented at ${at} is not valid now (are the clocks right?) [${code}]`;
    return `cannot reach ${at}: ${code || e.message}`;
  }

  get origin(): string {
    return this.#url.origin;
  }

  /** GETs a text document (YAML); errors as for `call`. */
  async text(path: string): Promise<string> {
    const r = await this.call<{ __text: string }>('GET', path, undefined, { raw: true });
    return r.__text;
  }

  /**
   * GETs a document in another format than JSON (`accept`), as bytes with its content type. An
   * answer past `maxBytes` is cut off: ERR_REQUEST_FAILED, before it is all in memory. Errors as
   * for `call` (a JSON error body).
   */
  bytes(path: string, opts: { accept: string; maxBytes: number; timeoutMs?: number }): Promise<{ type: string; body: Buffer }> {
    if (!this.#token)
      return Promise.reject(
        new WritError('ERR_UNAUTHENTICATED', 'no API token: pass --token, or set WRIT_TOKEN (the server wrote one to DATA_DIR/admin.token)'),
      );
    return this.#exchange<{ type: string; body: Buffer }>(
      'GET',
      path,
      { accept: opts.accept },
      { auth: true, raw: false, bytes: opts.maxBytes, timeoutMs: opts.timeoutMs ?? 30_000 },
      (req) => req.end(),
    );
  }

  /** Calls the API; resolves with the parsed JSON body (undefined for 204). */
  call<T = Record<string, unknown>>(
    method: string,
    path: string,
    body?: unknown,
    opts: { auth?: boolean; raw?: boolean; timeoutMs?: number } = {},
  ): Promise<T> {
    const auth = opts.auth ?? true;
    if (auth && !this.#token) {
      return Promise.reject(
        new WritError('ERR_UNAUTHENTICATED', 'no API token: pass --token, or set WRIT_TOKEN (the server wrote one to DATA_DIR/admin.token)'),
      );
    }
    const payload = body === undefined ? undefined : JSON.stringify(body);
    return this.#exchange<T>(
      method,
      path,
      payload === undefined ? {} : { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(payload)) },
      { auth, raw: opts.raw ?? false, timeoutMs: opts.timeoutMs ?? 30_000 },
      (req) => {
        if (payload !== undefined) req.write(payload);
        req.end();
      },
    );
  }

  /**
   * Sends a JSON document as it is read from `source` (never whole in memory), `length` bytes when
   * known (else chunked). `onProgress` hears the bytes sent so far. A server that answers before
   * the end (a 413 once the body passes its limit) stops the upload: its answer is the result.
   */
  upload<T = Record<string, unknown>>(
    method: string,
    path: string,
    source: Readable,
    opts: { length?: number | undefined; onProgress?: (sent: number) => void; timeoutMs?: number } = {},
  ): Promise<T> {
    if (!this.#token)
      return Promise.reject(
        new WritError('ERR_UNAUTHENTICATED', 'no API token: pass --token, or set WRIT_TOKEN (the server wrote one to DATA_DIR/admin.token)'),
      );
    let sent = 0;
    return this.#exchange<T>(
      method,
      path,
      { 'content-type': 'application/json', ...(opts.length === undefined ? {} : { 'content-length': String(opts.length) }) },
      { auth: true, raw: false, timeoutMs: opts.timeoutMs ?? 30_000 },
      (req) => {
        source.on('data', (chunk: Buffer) => {
          sent += chunk.length;
          if (!req.write(chunk)) source.pause();
          opts.onProgress?.(sent);
        });
        req.on('drain', () => source.resume());
        source.once('end', () => req.end());
        source.once('error', (e: NodeJS.ErrnoException) => req.destroy(new WritError('ERR_FIELD_INVALID', `cannot read the document: ${e.code ?? e.message}`)));
        // The server has answered (a refusal before the end): send no more.
        req.once('response', () => {
          source.removeAllListeners('data');
          source.destroy();
        });
      },
    );
  }

  #exchange<T>(
    method: string,
    path: string,
    bodyHeaders: Record<string, string>,
    opts: { auth: boolean; raw: boolean; bytes?: number; timeoutMs: number },
    write: (req: ClientRequest) => void,
  ): Promise<T> {
    const { auth, timeoutMs } = opts;
    const expected = this.#expected;
    if (!('id' in expected)) return Promise.reject(new WritError('ERR_CONFIG_INVALID', expected.problem, { field: 'caFile' }));
    const url = new URL(path, this.#url);
    this.#agent ??= new Agent({
      keepAlive: true,
      ...(this.#ca ? { ca: this.#ca } : {}),
      // Runs in the handshake, before the request (and its token) is written: a certificate
      // from the right CA for the right address is not enough, it must be the server's SVID.
      checkServerIdentity: (host, cert) => {
        const err = checkServerIdentity(host, cert);
        if (err) return err;
        const uris = uriSansOf(cert);
        if (uris.length === 1 && uris[0] === expected.id) return undefined;
        this.#mismatch = new WritError(
          'ERR_X509_SVID_INVALID',
          `${this.#url.origin} presented ${uris.join(', ') || 'no SPIFFE ID'}, not ${expected.id}: it is not the Writ server, nothing was sent (--server-spiffe-id overrides the expected ID)`,
        );
        return this.#mismatch;
      },
    });
    return new Promise<T>((resolve, reject) => {
      const req = request(
        url,
        {
          method,
          agent: this.#agent,
          headers: {
            accept: 'application/json',
            ...(auth ? { authorization: `Bearer ${this.#token}` } : {}),
            ...bodyHeaders,
          },
          timeout: timeoutMs,
        },
        (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          const limit = opts.bytes;
          // A request destroyed after its answer began (too large, timed out) fails the answer too.
          res.on('error', (e: NodeJS.ErrnoException) => reject(isWritError(e) ? e : new WritError('ERR_REQUEST_FAILED', this.#describe(e))));
          res.on('data', (c: Buffer) => {
            size += c.length;
            if (limit !== undefined && size > limit) {
              req.destroy(new WritError('ERR_REQUEST_FAILED', `the server's answer to GET ${path.slice(0, 200)} is over ${limit} bytes: refused`));
              return;
            }
            chunks.push(c);
          });
          res.on('end', () => {
            const status = res.statusCode ?? 0;
            if (limit !== undefined && status >= 200 && status < 300)
              return resolve({ type: String(res.headers['content-type'] ?? ''), body: Buffer.concat(chunks, size) } as T);
            const text = Buffer.concat(chunks).toString('utf8');
            // A raw answer is not parsed (audit verify hands its pages to worker threads to parse).
            if (opts.raw && status >= 200 && status < 300) return resolve({ __text: text } as T);
            let json: unknown;
            try {
              json = text ? JSON.parse(text) : undefined;
            } catch {
              json = undefined;
            }
            if (status >= 200 && status < 300) return resolve(json as T);
            const err = json as { code?: string; message?: string; field?: string; details?: unknown } | undefined;
            const serverCode = typeof err?.code === 'string' ? err.code : 'ERR_REQUEST_FAILED';
            const code = ERROR_CODE_FORMAT.test(serverCode) ? serverCode : 'ERR_REQUEST_FAILED';
            reject(
              new ApiError(code, serverCode, status, err?.message ?? `server answered HTTP ${status}`, {
                ...(err?.field ? { field: err.field } : {}),
                details: err?.details,
              }),
            );
          });
        },
      );
      req.on('timeout', () => req.destroy(new Error(`timed out after ${timeoutMs / 1000}s`)));
      let answered = false;
      req.once('response', () => (answered = true));
      req.on('error', (e: NodeJS.ErrnoException) => {
        if (this.#mismatch) return reject(this.#mismatch);
        // A server that answered before the whole body was sent closes the connection after its
        // answer: the write that follows fails, and the answer is what counts.
        if (answered && (e.code === 'EPIPE' || e.code === 'ECONNRESET')) return;
        if (isWritError(e)) return reject(e);
        reject(new WritError('ERR_REQUEST_FAILED', this.#describe(e)));
      });
      write(req);
    });
  }
}

/** TLS failures name what is wrong with the certificate; only network failures say "cannot reach". */
const UNTRUSTED = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_SIGNATURE_FAILURE',
  'CERT_UNTRUSTED',
]);

/** Connection settings from flags, then the environment (WRIT_SERVER, WRIT_TOKEN, WRIT_CA_FILE, WRIT_TRUST_DOMAIN, WRIT_SERVER_SPIFFE_ID). */
export function connectionOf(g: {
  server?: string | undefined;
  token?: string | undefined;
  caFile?: string | undefined;
  trustDomain?: string | undefined;
  serverSpiffeId?: string | undefined;
}): Connection {
  const env = process.env;
  return {
    server: g.server ?? env['WRIT_SERVER'] ?? DEFAULT_SERVER,
    token: g.token ?? env['WRIT_TOKEN'] ?? undefined,
    caFile: g.caFile ?? env['WRIT_CA_FILE'] ?? undefined,
    trustDomain: g.trustDomain ?? env['WRIT_TRUST_DOMAIN'] ?? undefined,
    serverSpiffeId: g.serverSpiffeId ?? env['WRIT_SERVER_SPIFFE_ID'] ?? undefined,
  };
}
