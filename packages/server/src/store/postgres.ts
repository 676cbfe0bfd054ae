import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { WritError } from '@writ/spiffe';
import type { ChangeListenHandlers, Row, SqlDriver, SqlExecutor, SqlValue } from './driver.ts';

// Connection-level failures: the database is away, not the request wrong. Mapped to 503.
const UNAVAILABLE_CODES: ReadonlySet<string> = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'ENOTFOUND',
  'EHOSTUNREACH',
  '57P01',
  '57P02',
  '57P03',
  '57P05',
  '53300',
  // This connection's own transaction outlived IDLE_IN_TRANSACTION_MS (the process was frozen): ended by the server.
  '25P03',
  // A lock waited for longer than LOCK_TIMEOUT_MS (lock_not_available).
  '55P03',
]);

function isUnavailable(err: unknown): boolean {
  const e = err as { code?: string; message?: string };
  if (e?.code && (UNAVAILABLE_CODES.has(e.code) || e.code.startsWith('08'))) return true;
  // At connect: the database was dropped (3D000), or is closed to connections (55000, ALLOW_CONNECTIONS false).
  if (e?.code === '3D000' || (e?.code === '55000' && /not currently accepting connections/.test(e.message ?? ''))) return true;
  return /Connection terminated|connection timeout|timeout exceeded when trying to connect|Client has encountered a connection error|not queryable/i.test(
    e?.message ?? '',
  );
}

function wrap(err: unknown): never {
  if (isUnavailable(err)) {
    const e = err as { code?: string; message?: string };
    throw new WritError('ERR_STORE_UNAVAILABLE', `the database is unavailable (${(e.code ?? e.message ?? 'error').slice(0, 120)})`, { cause: err });
  }
  throw err;
}

/** Numbers `?` placeholders as `$1, $2, ...` (the store never puts `?` inside SQL literals). */
function numberPlaceholders(sql: string): string {
  let n = 0;
  return sql.replace(/\?/g, () => `$${++n}`);
}

const cache = new Map<string, string>();
function pgSql(sql: string): string {
  let out = cache.get(sql);
  if (out === undefined) {
    out = numberPlaceholders(sql);
    if (cache.size < 1000) cache.set(sql, out);
  }
  return out;
}

/**
 * `sql` with its `?` placeholders replaced by literals, for a statement sent in the simple query
 * protocol (which takes no parameters): numbers as numbers, strings quoted by pg's
 * `escapeLiteral` (quotes and backslashes doubled, E'' when there is a backslash). A string with
 * NUL is refused, as PostgreSQL refuses it in a parameter: the protocol's query text ends there.
 */
export function inlineParams(sql: string, params: readonly SqlValue[]): string {
  let n = 0;
  const out = sql.replace(/\?/g, () => {
    if (n >= params.length) throw new TypeError(`the statement has more placeholders than its ${params.length} values`);
    const v = params[n++];
    if (v === null || v === undefined) return 'NULL';
    if (typeof v === 'number') {
      if (!Number.isFinite(v)) throw new TypeError(`${v} is not a number PostgreSQL stores`);
      return String(v);
    }
    if (v.includes('\0')) throw new WritError('ERR_FIELD_INVALID', 'a text value holds a NUL character, which PostgreSQL does not store');
    return pg.escapeLiteral(v);
  });
  if (n !== params.length) throw new TypeError(`the statement has ${n} placeholders for ${params.length} values`);
  return out;
}

const types = {
  getTypeParser(oid: number, format?: 'text' | 'binary'): (v: string) => unknown {
    if (oid === 20) return Number; // int8 as number: all our BIGINTs are epoch ms or counters
    return pg.types.getTypeParser(oid, format as 'text');
  },
};

export interface PostgresOptions {
  readonly url: string;
  /** Schema to use (search_path); tests give each run its own. */
  readonly schema?: string;
  readonly onError?: (err: Error) => void;
}

/** The channel of the notification triggers (migration 23): `topic|schema|application_name|arg`. */
export const CHANGE_CHANNEL = 'writ_changes';
const LISTEN_BACKOFF_MS = [250, 500, 1000, 2000, 5000] as const;

/**
 * How long one of Writ's transactions may sit open between two statements before PostgreSQL ends
 * its session. Every transaction sends its statements back to back (milliseconds); one idle for
 * seconds belongs to a process that is frozen or a node that is gone, and its row locks (the
 * revision and decision counters, the audit head) would stop every other replica's writes until
 * PostgreSQL noticed, which for a lost node is TCP keepalive's two hours by default.
 */
export const IDLE_IN_TRANSACTION_MS = 5000;

/**
 * How long a statement waits for a row lock before it fails (ERR_STORE_UNAVAILABLE, 503: the
 * caller retries). Shorter than IDLE_IN_TRANSACTION_MS on purpose: a frozen process's other
 * transactions, queued on the lock its first one holds, give up before that one is ended, instead
 * of each taking the lock in turn and holding it for another IDLE_IN_TRANSACTION_MS.
 */
export const LOCK_TIMEOUT_MS = 3000;

/**
 * Session settings of every connection Writ opens (startup options, so a pooler that refuses them
 * refuses `jit` as before). Keepalives from the database's side: a lost node's idle connections are
 * closed within about 25 s instead of two hours, and give their connection slots back.
 */
const SESSION_OPTIONS = [
  `-c idle_in_transaction_session_timeout=${IDLE_IN_TRANSACTION_MS}`,
  `-c lock_timeout=${LOCK_TIMEOUT_MS}`,
  '-c tcp_keepalives_idle=10',
  '-c tcp_keepalives_interval=5',
  '-c tcp_keepalives_count=3',
].join(' ');

export class PostgresDriver implements SqlDriver {
  readonly dialect = 'postgres' as const;
  readonly #pool: pg.Pool;
  readonly #opts: PostgresOptions;
  /** Names this process's connections, so that its listener skips the notifications of its own writes. */
  readonly #instance = randomUUID().slice(0, 8);

  constructor(opts: PostgresOptions) {
    this.#opts = opts;
    this.#pool = new pg.Pool({
      connectionString: opts.url,
      application_name: `writ-server ${this.#instance}`,
      max: 10,
      connectionTimeoutMillis: 3000,
      idleTimeoutMillis: 30_000,
      types,
      // No JIT: the store's statements are small, and a plan the planner overestimates (a recursive CTE)
      // spent 49 ms compiling to run for 9 (bench/vuln/affected-profile.ts, PLANS=1).
      options: `-c jit=off ${SESSION_OPTIONS}${opts.schema ? ` -c search_path=${opts.schema}` : ''}`,
      // And from ours: a database host that is gone is noticed on an idle connection too.
      keepAlive: true,
      keepAliveInitialDelayMillis: 10_000,
    });
    // Every client listens for 'error' for its whole life, and reports its loss once. pg-pool's own
    // listener is on a client only while it is idle; a checked-out client whose connection dies
    // between two of its user's statements emits 'error' with nobody listening, and an unhandled
    // 'error' event ends the process. That happens at every handoff too: a released client goes to
    // the next waiter of `connect()` within the socket read that carried its last answer, and the
    // FATAL of a terminated backend in the same read (pg_terminate_backend, a dropped database, a
    // restart) comes before the waiter's continuation runs. Its user sees the next statement fail.
    this.#pool.on('connect', (client) => {
      let reported = false;
      client.on('error', (err) => {
        if (!reported) opts.onError?.(err);
        reported = true;
      });
    });
    // An idle client's loss, re-emitted by the pool (reported above): the pool replaces it.
    this.#pool.on('error', () => undefined);
  }

  async query(sql: string, params: readonly SqlValue[] = []): Promise<Row[]> {
    try {
      return (await this.#pool.query(pgSql(sql), params as SqlValue[])).rows as Row[];
    } catch (err) {
      return wrap(err);
    }
  }

  async execute(sql: string, params: readonly SqlValue[] = []): Promise<number> {
    try {
      return (await this.#pool.query(pgSql(sql), params as SqlValue[])).rowCount ?? 0;
    } catch (err) {
      return wrap(err);
    }
  }

  async transaction<T>(fn: (tx: SqlExecutor) => Promise<T>): Promise<T> {
    let client: pg.PoolClient;
    try {
      client = await this.#pool.connect();
    } catch (err) {
      return wrap(err);
    }
    let broken = false;
    // A connection terminated between two of the transaction's statements: the next one fails, and
    // the client is not given back to the pool.
    const onError = (): void => void (broken = true);
    client.on('error', onError);
    // BEGIN goes with the first statement that needs an answer, or with the COMMIT's message when
    // none does (`atCommit` only: the whole transaction is one round trip).
    let begun: Promise<unknown> | undefined;
    const begin = (): Promise<unknown> => (begun ??= client.query('BEGIN'));
    // Statements for the COMMIT's message (`atCommit`), their values inlined.
    const atCommit: string[] = [];
    try {
      const out = await fn({
        query: async (sql, params = []) => (await begin(), (await client.query(pgSql(sql), params as SqlValue[])).rows as Row[]),
        execute: async (sql, params = []) => (await begin(), (await client.query(pgSql(sql), params as SqlValue[])).rowCount ?? 0),
        atCommit: (sql, params = []) => void atCommit.push(inlineParams(sql, params)),
      });
      // One simple-protocol message: the statements then COMMIT. If one fails, PostgreSQL skips the
      // rest of the message, COMMIT included, and the transaction is rolled back below.
      if (begun) await begun;
      else if (atCommit.length > 0) atCommit.unshift('BEGIN');
      else return out; // nothing was asked of the database
      atCommit.push('COMMIT');
      await client.query(atCommit.join(';\n'));
      return out;
    } catch (err) {
      try {
        await client.query('ROLLBACK');
      } catch {
        broken = true;
      }
      return wrap(err);
    } finally {
      client.removeListener('error', onError);
      client.release(broken);
    }
  }

  async lockForMigration(tx: SqlExecutor): Promise<void> {
    // Another replica's migration, or an older version's queries in a rolling upgrade, may hold
    // their locks for longer than LOCK_TIMEOUT_MS: a migration waits for them.
    await tx.query('SET LOCAL lock_timeout = 0');
    await tx.query("SELECT pg_advisory_xact_lock(hashtext('writ-migrate'))");
  }

  isUniqueViolation(err: unknown): boolean {
    return (err as { code?: string })?.code === '23505';
  }

  async announce(topic: string): Promise<void> {
    await this.query(`SELECT pg_notify('${CHANGE_CHANNEL}', ? || '|' || current_schema() || '|' || current_setting('application_name') || '|')`, [topic]);
  }

  /**
   * One dedicated connection (not the pool's: a LISTEN lives as long as its session) that hears
   * the notification triggers of every other process on this schema; reconnects with backoff.
   */
  listen(h: ChangeListenHandlers): () => Promise<void> {
    const own = `writ-server ${this.#instance}`;
    let client: pg.Client | undefined;
    let stopped = false;
    let attempt = 0;
    let retry: NodeJS.Timeout | undefined;
    let schema = '';
    const lost = (err?: Error): void => {
      const c = client;
      client = undefined;
      c?.removeAllListeners();
      c?.on('error', () => undefined);
      void c?.end().catch(() => undefined);
      if (stopped) return;
      h.onState(false, err);
      retry = setTimeout(connect, LISTEN_BACKOFF_MS[Math.min(attempt++, LISTEN_BACKOFF_MS.length - 1)]);
      retry.unref();
    };
    const connect = (): void => {
      retry = undefined;
      const c = new pg.Client({
        connectionString: this.#opts.url,
        // The schema in the name too: an operator (or a test) finds the listener of one deployment.
        application_name: `writ-listen ${this.#instance}${this.#opts.schema ? ` ${this.#opts.schema}` : ''}`.slice(0, 63),
        connectionTimeoutMillis: 3000,
        // Dead peers (a failed-over database) are noticed by TCP keepalive, not only by the next write.
        keepAlive: true,
        keepAliveInitialDelayMillis: 5000,
        options: `${SESSION_OPTIONS}${this.#opts.schema ? ` -c search_path=${this.#opts.schema}` : ''}`,
      });
      client = c;
      c.on('error', (err) => client === c && lost(err));
      c.on('end', () => client === c && lost(new Error('the notification connection closed')));
      c.on('notification', (n) => {
        const parts = (n.payload ?? '').split('|');
        if (parts.length < 4 || parts[1] !== schema) return;
        const app = parts.slice(2, -1).join('|');
        if (app === own) return;
        h.onTopic(parts[0]!, parts[parts.length - 1]!);
      });
      c.connect()
        .then(async () => {
          schema = String((await c.query('SELECT current_schema() AS s')).rows[0]?.['s'] ?? '');
          await c.query(`LISTEN ${CHANGE_CHANNEL}`);
          if (client !== c || stopped) return;
          attempt = 0;
          h.onState(true);
        })
        .catch((err: Error) => client === c && lost(err));
    };
    connect();
    return async () => {
      stopped = true;
      clearTimeout(retry);
      const c = client;
      client = undefined;
      if (c) {
        c.removeAllListeners();
        c.on('error', () => undefined);
        await c.end().catch(() => undefined);
      }
    };
  }

  close(): Promise<void> {
    return this.#pool.end();
  }
}
