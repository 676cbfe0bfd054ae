/**
 * Run-once jobs across replicas: each job name is a lease in the store (`leases` table) that one
 * replica holds and renews every few seconds; when it stops renewing (it died, or lost the
 * database), another takes the lease once it has expired. With one replica (SQLite) the lease is
 * always its own. The lease is a row, not a PostgreSQL advisory lock: it needs no session held
 * open per job, survives a pool reconnect, reads the same on both databases, and an operator sees
 * who holds what (`SELECT * FROM leases`).
 */
import type { Logger } from 'pino';
import type { Store } from './store/types.ts';

export interface LeasesOptions {
  readonly store: Store;
  /** Who holds the leases: the server ID. */
  readonly holder: string;
  readonly clock: () => number;
  readonly log: Logger;
  /** How long a lease lasts unrenewed (default 6 s): the longest a job goes unrun after its holder died. */
  readonly ttlMs?: number;
  /** How often held and wanted leases are renewed or tried (default 2 s). */
  readonly renewMs?: number;
}

/**
 * The server's lease service: `runOnce(name, fn)` runs `fn` only on the replica holding `name`.
 *
 * @example
 *   setInterval(() => void leases.runOnce('audit-checkpoint', () => writeCheckpoint()), 10_000);
 */
export class Leases {
  readonly #o: LeasesOptions;
  readonly #ttl: number;
  /** Until when (this process's clock, measured from before the renewing statement) each wanted lease is ours. */
  readonly #heldUntil = new Map<string, number>();
  #timer: NodeJS.Timeout | undefined;
  #renewing: Promise<void> | undefined;
  #closed = false;

  constructor(o: LeasesOptions) {
    this.#o = o;
    this.#ttl = o.ttlMs ?? 6000;
  }

  /** Renews every wanted lease every `renewMs`; a lease is wanted from the first `runOnce` or `want` of its name. */
  start(): void {
    this.#timer = setInterval(() => void this.renew(), this.#o.renewMs ?? 2000);
    this.#timer.unref();
  }

  /** Wants `name` without running anything yet: renewed from now on. */
  want(name: string): void {
    if (!this.#heldUntil.has(name)) this.#heldUntil.set(name, 0);
  }

  /** Whether this replica holds `name` now. */
  held(name: string): boolean {
    return (this.#heldUntil.get(name) ?? 0) > this.#o.clock();
  }

  /** The names this replica holds now. */
  holding(): string[] {
    return [...this.#heldUntil.keys()].filter((n) => this.held(n)).sort();
  }

  /**
   * Runs `fn` if this replica holds (or can take) the lease `name`; resolves whether it ran. The
   * first call for a name tries the lease at once; later ones go by the last renewal.
   */
  async runOnce(name: string, fn: () => Promise<void> | void): Promise<boolean> {
    if (this.#closed) return false;
    if (!this.#heldUntil.has(name)) {
      this.want(name);
      await this.#try(name);
    }
    if (!this.held(name)) return false;
    await fn();
    return true;
  }

  /** One round of renewals (the timer's; exposed for tests). */
  renew(): Promise<void> {
    this.#renewing ??= Promise.all([...this.#heldUntil.keys()].map((n) => this.#try(n))).then(
      () => ((this.#renewing = undefined), undefined),
      () => ((this.#renewing = undefined), undefined),
    );
    return this.#renewing;
  }

  async #try(name: string): Promise<void> {
    if (this.#closed) return;
    const { store, holder, clock, log } = this.#o;
    const at = clock();
    const had = this.held(name);
    let got: boolean;
    try {
      got = await store.acquireLease(name, holder, at, this.#ttl);
    } catch (err) {
      // Not renewed: it runs out by itself (the database's other replicas may take it).
      if (had) log.warn({ lease: name, err: (err as Error).message }, 'could not renew a job lease; the job stops here when it runs out');
      return;
    }
    if (this.#closed) return;
    this.#heldUntil.set(name, got ? at + this.#ttl : 0);
    if (got && !had) log.info({ lease: name, holder }, 'took the job lease: this replica runs the job');
    else if (!got && had) log.warn({ lease: name }, 'lost the job lease to another replica');
  }

  /** Stops renewing and gives up the held leases, so another replica takes them at once. */
  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#timer);
    await this.#renewing;
    const held = [...this.#heldUntil.keys()].filter((n) => this.held(n));
    this.#heldUntil.clear();
    await Promise.all(held.map((n) => this.#o.store.releaseLease(n, this.#o.holder).catch(() => undefined)));
  }
}
