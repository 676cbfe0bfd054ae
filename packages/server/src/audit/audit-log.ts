/**
 * The audit log as the server serves it: a checkpointer that folds the changes' queued leaves
 * into the tree and signs its head every second while it grows, and the reads behind /v1/audit/*
 * (checkpoint, entries, proofs), which fold and sign first and answer for the latest checkpoint. The tree, proofs and notes are @writ/transparency's; the leaves the store's.
 */
import type { Logger } from 'pino';
import { Gauge, type Registry } from 'prom-client';
import { WritError, isWritError } from '@writ/spiffe';
import { consistencyProof, formatCheckpoint, inclusionProof, parseCheckpoint, signNote, verifyConsistency, type NoteSigner } from '@writ/transparency';
import type { AuditCheckpoint, AuditEntry, Store } from '../store/types.ts';

/** The most entries one page answers (a larger range is cut to this; the answer says where it ended). */
export const MAX_AUDIT_PAGE = 10_000;
/** A page also stops once its bodies pass this many characters (always after at least one entry). */
export const AUDIT_PAGE_BUDGET = 8 * 1024 * 1024;

/** The log's origin (checkpoint first line and note key name) for a trust domain. */
export const auditOrigin = (trustDomain: string): string => `${trustDomain}/writ-audit`;

export interface AuditLogOptions {
  readonly store: Store;
  readonly origin: string;
  readonly signer: NoteSigner;
  readonly vkey: string;
  readonly clock: () => number;
  readonly log?: Logger;
  /** How often the head is looked at (default 1 s). */
  readonly intervalMs?: number;
  /** Whether this replica signs checkpoints (the holder of their lease; default: always). */
  readonly runsHere?: () => boolean;
  /**
   * Told when the stored tree no longer extends the latest signed checkpoint (rows rewritten
   * behind the server's back): no checkpoint is signed over it. The server raises an alert.
   */
  readonly onInconsistent?: (details: { readonly from: number; readonly to: number; readonly reason: string }) => void;
  /** Where `writ_audit_pending_leaves` is served (the server's metrics). */
  readonly registry?: Registry;
}

export class AuditLog {
  readonly #o: AuditLogOptions;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<unknown> = Promise.resolve();
  #started = false;
  #closing: Promise<void> | undefined;

  constructor(o: AuditLogOptions) {
    this.#o = o;
    if (o.registry) {
      const store = o.store;
      new Gauge({
        name: 'writ_audit_pending_leaves',
        help: 'Audit leaves of committed changes not yet folded into the tree (queued by every replica; folded each second and before every read of the log).',
        registers: [o.registry],
        // Read at each scrape; with the database away the last value stands (the 5xx and readiness alerts say why).
        async collect(this: Gauge) {
          try {
            this.set(await store.auditPending());
          } catch {
            /* keep the last value */
          }
        },
      });
    }
  }

  get origin(): string {
    return this.#o.origin;
  }

  get vkey(): string {
    return this.#o.vkey;
  }

  start(): void {
    this.#started = true;
    const tick = (): void => {
      this.#running = this.checkpoint().catch((err: unknown) => {
        this.#o.log?.warn({ code: isWritError(err) ? err.code : undefined, err: (err as Error).message }, 'audit checkpoint failed; will retry');
      });
    };
    tick();
    this.#timer = setInterval(tick, this.#o.intervalMs ?? 1000);
    this.#timer.unref();
  }

  /**
   * Stops the timer and, once a started log's last tick is done, folds what is queued and signs
   * it, whether or not this replica holds the signing lease: the changes this process committed
   * are in a signed checkpoint before it exits. Another replica signing the same size signs the
   * same note (one key, deterministic Ed25519), and each checks consistency first. A failure
   * (the database away) is logged: the leaves stay queued for the next fold, here or elsewhere.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      clearInterval(this.#timer);
      await this.#running;
      if (!this.#started) return;
      try {
        const c = await this.checkpoint({ final: true });
        this.#o.log?.info({ size: c?.size ?? 0 }, 'audit log: folded and signed before stopping');
      } catch (err) {
        this.#o.log?.warn(
          { code: isWritError(err) ? err.code : undefined, err: (err as Error).message },
          'audit log: the final fold or checkpoint failed; queued leaves are folded by the next server',
        );
      }
    })();
    return this.#closing;
  }

  /**
   * Signs a checkpoint of the current head when it is larger than the latest one; returns the
   * latest. Only where this replica signs (`runsHere`), but for the `final` one at close.
   */
  async checkpoint(o: { final?: boolean } = {}): Promise<AuditCheckpoint | undefined> {
    const [head, latest] = await Promise.all([this.#o.store.auditHead(), this.#o.store.latestAuditCheckpoint()]);
    if (head.size === 0 || (latest && latest.size >= head.size)) return latest;
    if (!o.final && this.#o.runsHere && !this.#o.runsHere()) return latest;
    if (latest) await this.#extendsLatest(latest, head);
    const note = signNote(formatCheckpoint({ origin: this.#o.origin, size: head.size, rootHash: head.root, extensions: [] }), this.#o.signer);
    const c = { size: head.size, note, at: this.#o.clock() };
    await this.#o.store.putAuditCheckpoint(c);
    return c;
  }

  /**
   * Checks, by a consistency proof from the stored nodes, that the head extends the latest signed
   * checkpoint: a log rewritten under the server is never signed over, and is reported.
   */
  async #extendsLatest(latest: AuditCheckpoint, head: { readonly size: number; readonly root: Uint8Array }): Promise<void> {
    try {
      // The note's text ends at its blank line; the checkpoint may be another replica's, so it is read, not verified.
      const old = parseCheckpoint(latest.note.slice(0, latest.note.indexOf('\n\n') + 1));
      const proof = await consistencyProof(old.size, head.size, (nodes) => this.#o.store.auditNodes(nodes));
      verifyConsistency(old.size, head.size, proof, old.rootHash, head.root);
    } catch (err) {
      const reason = (err as Error).message;
      this.#o.onInconsistent?.({ from: latest.size, to: head.size, reason });
      throw new WritError('ERR_AUDIT_INCONSISTENT', `the stored audit tree of ${head.size} leaves does not extend the checkpoint of ${latest.size}: ${reason}`);
    }
  }

  /**
   * Before a read: folds the leaves of the changes committed so far and, where this replica signs,
   * signs them, so a change just made is in what the read answers. A failure here (a rewritten
   * tree, which the timer reports) leaves the read with the latest checkpoint signed before it.
   */
  async #fresh(): Promise<void> {
    await this.checkpoint().catch(() => undefined);
  }

  /** The latest signed checkpoint (ERR_AUDIT_NO_CHECKPOINT before the first leaf). */
  async latest(): Promise<AuditCheckpoint> {
    await this.#fresh();
    const c = await this.#o.store.latestAuditCheckpoint();
    if (!c) throw new WritError('ERR_AUDIT_NO_CHECKPOINT', 'the audit log has no checkpoint yet (no leaf was appended)');
    return c;
  }

  /** Entries [start, end) of the checkpointed tree, at most MAX_AUDIT_PAGE; `end` defaults to the checkpoint's size. */
  async entries(start: number, end: number | undefined, limit = MAX_AUDIT_PAGE): Promise<{ size: number; start: number; end: number; entries: AuditEntry[] }> {
    await this.#fresh();
    const size = (await this.#o.store.latestAuditCheckpoint())?.size ?? 0;
    const last = end ?? size;
    if (last > size) throw range(`end ${last} is past the latest checkpoint's size ${size}`, 'end');
    if (start > last) throw range(`start ${start} is after end ${last}`, 'start');
    const cut = Math.min(last, start + limit);
    const rows = await this.#o.store.listAuditEntries(start, cut);
    let chars = 0;
    for (let k = 0; k < rows.length; k++) {
      chars += (rows[k] as AuditEntry).body.length;
      // Over budget: the page ends before the next row (its index, since deleted rows leave gaps).
      if (chars > AUDIT_PAGE_BUDGET && k + 1 < rows.length) return { size, start, end: (rows[k + 1] as AuditEntry).index, entries: rows.slice(0, k + 1) };
    }
    return { size, start, end: cut, entries: rows };
  }

  /** Inclusion proof of leaf `index` in the tree of `size` leaves (default: the latest checkpoint's). */
  async inclusion(index: number, size: number | undefined): Promise<{ index: number; size: number; proof: Uint8Array[] }> {
    const latest = (await this.latest()).size;
    const n = size ?? latest;
    if (n > latest) throw range(`size ${n} is past the latest checkpoint's size ${latest}`, 'size');
    if (index >= n) throw range(`index ${index} is not below size ${n}`, 'index');
    return { index, size: n, proof: await inclusionProof(index, n, (nodes) => this.#o.store.auditNodes(nodes)) };
  }

  /** Consistency proof between the trees of `from` and `to` leaves (default `to`: the latest checkpoint's). */
  async consistency(from: number, to: number | undefined): Promise<{ from: number; to: number; proof: Uint8Array[] }> {
    const latest = (await this.latest()).size;
    const n = to ?? latest;
    if (n > latest) throw range(`to ${n} is past the latest checkpoint's size ${latest}`, 'to');
    if (from < 1 || from > n) throw range(`from must be from 1 to ${n}`, 'from');
    return { from, to: n, proof: await consistencyProof(from, n, (nodes) => this.#o.store.auditNodes(nodes)) };
  }
}

const range = (message: string, field: string): WritError => new WritError('ERR_AUDIT_RANGE', message, { field });
