/** GET a JSON document over a Unix socket or HTTP(S), bounded in size and time. */
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { WritError } from '@writ/spiffe';

export interface GetJsonOptions {
  /** For a Unix socket endpoint (the Docker socket). */
  readonly socketPath?: string;
  readonly headers?: Record<string, string>;
  readonly ca?: string;
  readonly timeoutMs?: number;
  readonly maxBytes?: number;
}

export function getJson(url: string, opts: GetJsonOptions = {}): Promise<{ status: number; body: unknown }> {
  const u = new URL(url);
  const request = u.protocol === 'https:' ? httpsRequest : httpRequest;
  const max = opts.maxBytes ?? 32 * 1024 * 1024;
  return new Promise((resolve, reject) => {
    const req = request(
      u,
      {
        method: 'GET',
        headers: { accept: 'application/json', ...opts.headers },
        timeout: opts.timeoutMs ?? 5000,
        ...(opts.socketPath ? { socketPath: opts.socketPath } : {}),
        ...(opts.ca ? { ca: opts.ca } : {}),
      },
      (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size > max) req.destroy(new Error(`response larger than ${max} bytes`));
          else chunks.push(c);
        });
        res.on('end', () => {
          try {
            resolve({ status: res.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) });
          } catch {
            reject(new WritError('ERR_REQUEST_FAILED', `${u.origin}${u.pathname}: answer is not JSON (HTTP ${res.statusCode})`));
          }
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', (e: NodeJS.ErrnoException) => reject(new WritError('ERR_REQUEST_FAILED', `${opts.socketPath ?? u.origin}: ${e.code ?? e.message}`)));
    req.end();
  });
}
