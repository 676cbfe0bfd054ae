/** The agent's HTTPS client of the server: trusts the bundle, presents the agent SVID on agent routes. */
import { Agent as HttpsAgent, request } from 'node:https';
import { checkServerIdentity } from 'node:tls';
import { ERROR_CODE_FORMAT, WritError } from '@writ/spiffe';

export class ServerClient {
  readonly #base: URL;
  #ca: string;
  #agent: HttpsAgent;
  #identity: { cert: string; key: string } | undefined;
  #serverId: string | undefined;

  constructor(serverUrl: string, caPem: string) {
    this.#base = new URL(serverUrl);
    this.#ca = caPem;
    this.#agent = this.#newAgent();
  }

  #newAgent(): HttpsAgent {
    const expected = this.#serverId;
    return new HttpsAgent({
      keepAlive: true,
      maxSockets: 8,
      ca: this.#ca,
      ...(this.#identity ?? {}),
      // Once the trust domain is known, the server must also prove it is the Writ server of it:
      // a workload SVID from the same CA, with the right address, is not enough.
      checkServerIdentity: (host, cert) => {
        const err = checkServerIdentity(host, cert);
        if (err || !expected) return err;
        const uris = (cert.subjectaltname ?? '')
          .split(', ')
          .filter((n) => n.startsWith('URI:'))
          .map((n) => n.slice(4));
        return uris.length === 1 && uris[0] === expected
          ? undefined
          : new Error(`the server presented ${uris.join(',') || 'no SPIFFE ID'}, expected ${expected}`);
      },
    });
  }

  /** New trust roots or a new agent SVID: later requests use them. */
  configure(opts: { ca?: string; identity?: { cert: string; key: string } | undefined; serverId?: string }): void {
    if (opts.ca !== undefined) this.#ca = opts.ca;
    if (opts.serverId !== undefined) this.#serverId = opts.serverId;
    if ('identity' in opts) this.#identity = opts.identity;
    this.#agent.destroy();
    this.#agent = this.#newAgent();
  }

  /** A JSON request; a Buffer body goes as protobuf (`application/x-protobuf`). */
  call<T>(method: string, path: string, body?: unknown, timeoutMs = 40_000): Promise<T> {
    const payload = body === undefined ? undefined : Buffer.isBuffer(body) ? body : JSON.stringify(body);
    const type = Buffer.isBuffer(body) ? 'application/x-protobuf' : 'application/json';
    return new Promise<T>((resolve, reject) => {
      const req = request(
        new URL(path, this.#base),
        {
          method,
          agent: this.#agent,
          timeout: timeoutMs,
          headers: { accept: 'application/json', ...(payload !== undefined ? { 'content-type': type, 'content-length': Buffer.byteLength(payload) } : {}) },
        },
        (res) => {
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
            const status = res.statusCode ?? 0;
            if (status >= 200 && status < 300 && json) return resolve(json as T);
            const code = typeof json?.['code'] === 'string' && ERROR_CODE_FORMAT.test(json['code']) ? json['code'] : 'ERR_REQUEST_FAILED';
            reject(
              new WritError(
                code,
                typeof json?.['message'] === 'string' ? json['message'] : `server answered HTTP ${status}${json ? '' : ' with a body that is not JSON'}`,
              ),
            );
          });
        },
      );
      req.on('timeout', () => req.destroy(new Error(`no answer in ${timeoutMs} ms`)));
      req.on('error', (e: NodeJS.ErrnoException) =>
        reject(new WritError('ERR_REQUEST_FAILED', `server ${this.#base.origin} unreachable: ${e.code ?? e.message}`)),
      );
      if (payload !== undefined) req.write(payload);
      req.end();
    });
  }

  close(): void {
    this.#agent.destroy();
  }
}
