/** The CLI's client of the admin API: HTTPS with the trust bundle as CA, bearer token, errors as WritErrors. */
import { readFileSync } from 'node:fs';
import { request } from 'node:https';
import { ERROR_CODE_FORMAT, WritError } from '@writ/spiffe';

export interface Connection {
  readonly server: string;
  readonly token: string | undefined;
  readonly caFile: string | undefined;
}

export const DEFAULT_SERVER = 'https://127.0.0.1:8443';

export class ApiClient {
  readonly #url: URL;
  readonly #token: string | undefined;
  readonly #ca: string | undefined;

  constructor(conn: Connection) {
    try {
      this.#url = new URL(conn.server);
    } catch {
      throw new WritError('ERR_CONFIG_INVALID', `--server ${JSON.stringify(conn.server)} is not a URL (e.g. https://127.0.0.1:8443)`, { field: 'server' });
    }
    if (this.#url.protocol !== 'https:') throw new WritError('ERR_CONFIG_INVALID', '--server must be an https:// URL', { field: 'server' });
    this.#token = conn.token;
    if (conn.caFile) {
      try {
        this.#ca = readFileSync(conn.caFile, 'utf8');
      } catch (err) {
        throw new WritError('ERR_CONFIG_INVALID', `cannot read --ca-file ${conn.caFile}: ${(err as NodeJS.ErrnoException).code}`, { field: 'caFile' });
      }
    }
  }

  /** GETs a text document (YAML); errors as for `call`. */
  async text(path: string): Promise<string> {
    const r = await this.call<{ __text: string }>('GET', path, undefined, { raw: true });
    return r.__text;
  }

  /** Calls the API; resolves with the parsed JSON body (undefined for 204). */
  call<T = Record<string, unknown>>(method: string, path: string, body?: unknown, opts: { auth?: boolean; raw?: boolean } = {}): Promise<T> {
    const auth = opts.auth ?? true;
    if (auth && !this.#token) {
      return Promise.reject(
        new WritError('ERR_UNAUTHENTICATED', 'no API token: pass --token, or set WRIT_TOKEN (the server wrote one to DATA_DIR/admin.token)'),
      );
    }
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const url = new URL(path, this.#url);
    return new Promise<T>((resolve, reject) => {
      const req = request(
        url,
        {
          method,
          ...(this.#ca ? { ca: this.#ca } : {}),
          headers: {
            accept: 'application/json',
            ...(auth ? { authorization: `Bearer ${this.#token}` } : {}),
            ...(payload !== undefined ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } : {}),
          },
          timeout: 30_000,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            let json: unknown;
            try {
              json = text ? JSON.parse(text) : undefined;
            } catch {
              json = undefined;
            }
            const status = res.statusCode ?? 0;
            if (status >= 200 && status < 300) return resolve((opts.raw ? { __text: text } : json) as T);
            const err = json as { code?: string; message?: string; field?: string } | undefined;
            const code = typeof err?.code === 'string' && ERROR_CODE_FORMAT.test(err.code) ? err.code : 'ERR_REQUEST_FAILED';
            reject(new WritError(code, err?.message ?? `server answered HTTP ${status}`, err?.field ? { field: err.field } : undefined));
          });
        },
      );
      req.on('timeout', () => req.destroy(new Error('timed out after 30s')));
      req.on('error', (e: NodeJS.ErrnoException) => {
        const hint = /certificate|self.signed|CERT/i.test(e.code ?? e.message) ? ' (pass --ca-file DATA_DIR/bundle.pem or set WRIT_CA_FILE)' : '';
        reject(new WritError('ERR_REQUEST_FAILED', `cannot reach ${this.#url.origin}: ${e.code ?? e.message}${hint}`));
      });
      if (payload !== undefined) req.write(payload);
      req.end();
    });
  }
}
