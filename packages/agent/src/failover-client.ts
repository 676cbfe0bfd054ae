/**
 * Several server replicas (`--server A --server B`, or `A,B`): one ServerClient per URL, each
 * pinning the same server ID. Requests go to the current one; when it does not answer (refused,
 * reset, timed out), says it is stopping (ERR_SERVER_DRAINING) or lost its database, the same
 * request goes to the next, and the next becomes current. Sync state is the agent's, so it carries
 * over: the revision it reports is the shared database's, valid at every replica. When one said its
 * database is busy, every replica is asked once more after a short pause; when none answers, the
 * caller's error handling (the sync loop's backoff) takes over.
 */
import type { Logger } from 'pino';
import { isWritError } from '@writ/spiffe';
import { ServerUnreachableError, type ServerApi } from './server-client.ts';

/** The failures another replica may not share. */
function movesOn(err: unknown): boolean {
  return err instanceof ServerUnreachableError || isWritError(err, 'ERR_SERVER_DRAINING') || isWritError(err, 'ERR_STORE_UNAVAILABLE');
}

/** How long a request waits before asking every replica once more after one said its database is busy. */
const BUSY_PAUSE_MS = 250;

export interface FailoverServer {
  readonly client: ServerApi;
  /** For logs: the URL's origin. */
  readonly name: string;
}

export class FailoverClient implements ServerApi {
  readonly #servers: readonly FailoverServer[];
  readonly #log: Logger | undefined;
  #current = 0;

  constructor(servers: readonly FailoverServer[], log?: Logger) {
    if (servers.length === 0) throw new TypeError('FailoverClient needs at least one server');
    this.#servers = servers;
    this.#log = log;
  }

  /** The server requests go to now. */
  get current(): string {
    return this.#servers[this.#current]!.name;
  }

  async #each<T>(fn: (c: ServerApi) => Promise<T>): Promise<T> {
    let last: unknown;
    let busy = false;
    // A second round, after a pause, when a replica answered that its database is busy: just after
    // a failover the survivor's pool is crowded by every agent at once, and the next URL in the list
    // is the dead one. A workload's JWT-SVID call then waits a moment instead of failing.
    for (let round = 0; round < 2; round++) {
      if (round > 0) {
        if (!busy) break;
        await new Promise((r) => setTimeout(r, BUSY_PAUSE_MS));
      }
      for (let tried = 0; tried < this.#servers.length; tried++) {
        const i = this.#current;
        try {
          return await fn(this.#servers[i]!.client);
        } catch (err) {
          if (!movesOn(err)) throw err;
          last = err;
          if (isWritError(err, 'ERR_STORE_UNAVAILABLE')) busy = true;
          // Another request may have moved on meanwhile: move from where this one was only.
          if (this.#current === i) {
            this.#current = (i + 1) % this.#servers.length;
            if (this.#servers.length > 1)
              this.#log?.warn(
                { from: this.#servers[i]!.name, to: this.current, err: (err as Error).message },
                'server replica unavailable; moving to the next',
              );
          }
        }
      }
    }
    throw last;
  }

  call<T>(method: string, path: string, body?: unknown, timeoutMs?: number): Promise<T> {
    return this.#each((c) => c.call<T>(method, path, body, timeoutMs));
  }

  postForm(path: string, form: string, timeoutMs?: number): Promise<{ status: number; json: Record<string, unknown> | undefined }> {
    return this.#each((c) => {
      if (!c.postForm) throw new TypeError('this server client cannot post forms');
      return c.postForm(path, form, timeoutMs);
    });
  }

  configure(opts: { ca?: string; identity?: { cert: string; key: string } | undefined }): void {
    for (const s of this.#servers) s.client.configure(opts);
  }

  close(): void {
    for (const s of this.#servers) s.client.close();
  }
}
