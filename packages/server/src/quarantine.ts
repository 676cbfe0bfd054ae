/**
 * Quarantine as a service: the one path `writ quarantine add|remove` (the API) and alert rules'
 * responses take, so every quarantine is written, propagated (the hub hears the store change)
 * and recorded the same way whoever asked for it.
 */
import type { QuarantineEntry, Store } from './store/types.ts';

export interface QuarantineRequest {
  readonly spiffeId: string;
  readonly reason: string;
  /** Who asked: a token's role, or `alert-rule:NAME` for an automatic one. */
  readonly createdBy: string;
  readonly ttlMs?: number | undefined;
  readonly now: number;
  /** Leave a live quarantine as it is (an automatic one must not shorten or replace an operator's). */
  readonly keepLive?: boolean;
}

/** Quarantines an identity; returns the entry written, or undefined when `keepLive` found one in force. */
export async function quarantineIdentity(store: Store, r: QuarantineRequest): Promise<QuarantineEntry | undefined> {
  const q: QuarantineEntry = {
    spiffeId: r.spiffeId,
    reason: r.reason,
    createdBy: r.createdBy,
    createdAt: r.now,
    expiresAt: r.ttlMs === undefined ? null : r.now + r.ttlMs,
  };
  if (r.keepLive) return (await store.putQuarantines([q], r.now))[0];
  await store.putQuarantine(q);
  return q;
}

/** Lifts a quarantine; with `onlyIf`, only when the entry in force passes it. Returns whether one was lifted. */
export async function liftQuarantine(
  store: Store,
  spiffeId: string,
  o: { readonly now: number; readonly onlyIf?: (q: QuarantineEntry) => boolean },
): Promise<boolean> {
  if (o.onlyIf) {
    const q = (await store.listQuarantine(o.now)).find((x) => x.spiffeId === spiffeId);
    if (!q || !o.onlyIf(q)) return false;
  }
  return store.removeQuarantine(spiffeId);
}
