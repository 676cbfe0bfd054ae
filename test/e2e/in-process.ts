/** A server started in the test's own process (real TLS, real store), and a client for its API. */
import { mkdtempSync, readFileSync } from 'node:fs';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { pino } from 'pino';
import { loadServerConfig } from '../../packages/server/src/config.ts';
import { startServer, type RunningServer } from '../../packages/server/src/server.ts';
import { TEST_PG_URL } from '../../packages/server/src/testing/stores.ts';
import { cleanup } from './helpers.ts';

export interface Answer {
  readonly status: number;
  readonly text: string;
  /** The parsed JSON body, or {} when it is not JSON. */
  readonly json: Record<string, unknown>;
}

export interface CallOptions {
  readonly body?: string | Buffer | object;
  /** The body's type (default application/json): a protobuf report, a form. */
  readonly contentType?: string;
  /** Another bearer token; null: none. */
  readonly token?: string | null;
  /** A TLS client certificate (an agent's SVID) instead of a token. */
  readonly cert?: { readonly key: string; readonly cert: string };
}

export interface InProcessServer {
  readonly srv: RunningServer;
  readonly dataDir: string;
  readonly adminToken: string;
  call(method: string, path: string, opts?: CallOptions): Promise<Answer>;
  stop(): Promise<void>;
}

/** `db`: 'sqlite' or 'postgres' (a fresh database, dropped on stop). */
export async function startInProcess(db: 'sqlite' | 'postgres', trustDomain = 'api.test'): Promise<InProcessServer> {
  const dataDir = mkdtempSync(join(tmpdir(), 'writ-inproc-'));
  let dbUrl = 'sqlite';
  const dbName = `writ_inproc_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
  const pgAdmin = async (sql: string): Promise<void> => {
    const c = new pg.Client({ connectionString: TEST_PG_URL });
    await c.connect();
    await c.query(sql).finally(() => c.end());
  };
  if (db === 'postgres') {
    await pgAdmin(`CREATE DATABASE ${dbName}`);
    const u = new URL(TEST_PG_URL);
    u.pathname = `/${dbName}`;
    dbUrl = u.toString();
  }
  const srv = await startServer(loadServerConfig({ trustDomain, dataDir, listen: '127.0.0.1:0', db: dbUrl }), { log: pino({ level: 'silent' }) });
  const adminToken = readFileSync(join(dataDir, 'admin.token'), 'utf8').trim();
  const ca = readFileSync(join(dataDir, 'bundle.pem'));
  const call = (method: string, path: string, opts: CallOptions = {}): Promise<Answer> =>
    new Promise((resolve, reject) => {
      const body = opts.body === undefined ? undefined : typeof opts.body === 'string' || Buffer.isBuffer(opts.body) ? opts.body : JSON.stringify(opts.body);
      const token = opts.cert || opts.token === null ? undefined : (opts.token ?? adminToken);
      const req = request(
        `${srv.url}${path}`,
        {
          method,
          ca,
          agent: false,
          headers: {
            ...(token ? { authorization: `Bearer ${token}` } : {}),
            ...(body !== undefined ? { 'content-type': opts.contentType ?? 'application/json', 'content-length': Buffer.byteLength(body) } : {}),
          },
          ...(opts.cert ?? {}),
        },
        (res) => {
          let text = '';
          res.on('data', (d: Buffer) => (text += d.toString()));
          res.on('end', () => {
            let json: Record<string, unknown> = {};
            try {
              json = JSON.parse(text) as Record<string, unknown>;
            } catch {
              /* not JSON (YAML, metrics, an empty 204) */
            }
            resolve({ status: res.statusCode ?? 0, text, json });
          });
        },
      );
      req.on('error', reject);
      req.end(body);
    });
  return {
    srv,
    dataDir,
    adminToken,
    call,
    stop: async () => {
      await srv.close();
      cleanup(dataDir);
      if (db === 'postgres') await pgAdmin(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
    },
  };
}
