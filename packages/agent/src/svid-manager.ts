/**
 * SVID rotation: renews the agent's own SVID at half life and has workload SVIDs signed for keys
 * generated here when missing or due, in batches. Every SVID the server answers with is checked
 * (chain, SPIFFE ID, key) before it is stored.
 */
import { randomInt } from 'node:crypto';
import type { Logger } from 'pino';
import { parseCertificatesPem, type Certificate, type TrustBundle } from '@writ/spiffe';
import { AGENT_PATHS, MAX_SVID_BATCH, decodeRenewAnswer, decodeSvidBatchAnswer, type RenewRequest, type SvidBatchRequest } from '@writ/protocol';
import { csrFor, generateKey, keyPem, type KeyPair } from './keys.ts';
import type { ServerApi } from './server-client.ts';
import type { AgentState } from './state.ts';
import { checkSvidAnswer } from './svid-check.ts';
import type { EntryView } from './sync.ts';

/** An SVID ready to hand to a workload. */
export interface ServedSvid {
  readonly entry: EntryView;
  readonly chain: readonly Certificate[];
  readonly keyPkcs8Der: Buffer;
  readonly expiresAt: number;
}

/** Writ backdates NotBefore by this much (see the CA); the real issuance time is later. */
const BACKDATE_MS = 10_000;
const BATCH = Math.min(500, MAX_SVID_BATCH);

/**
 * Rotation at half the remaining life from issuance, ±10% jitter so a fleet does not renew in
 * lockstep. (Measured from when the SVID arrived: NotBefore is backdated and would make short TTLs
 * look half-spent already.)
 */
export function rotationTime(issuedAt: number, expiresAt: number): number {
  const half = (expiresAt - issuedAt) / 2;
  return issuedAt + half + (half * randomInt(-100, 101)) / 1000;
}

export function agentSvidExpiry(s: AgentState): { notBefore: number; expiresAt: number } {
  const leaf = parseCertificatesPem(s.svidPem)[0]!;
  return { notBefore: leaf.notBefore.getTime(), expiresAt: leaf.notAfter.getTime() };
}

export interface SvidManagerOptions {
  readonly client: ServerApi;
  readonly clock: () => number;
  readonly log: Logger;
  /** The bundle of the agent's own trust domain, which every SVID it is sent must chain to. */
  readonly trust: () => TrustBundle;
  /** Called after the agent SVID changed (the client presents the new one). */
  readonly renewed: () => void;
  /** Called after workload SVIDs were stored. */
  readonly stored: () => void;
}

export class SvidManager {
  readonly #o: SvidManagerOptions;
  #running: Promise<void> | undefined;
  #again: Promise<void> | undefined;

  constructor(opts: SvidManagerOptions) {
    this.#o = opts;
  }

  /**
   * One round. A call while a round runs gets one more round right after it (calls meanwhile share
   * it): the running round chose what was due before this call's entries arrived, and leaving
   * them to the next tick held a batch of new entries back by up to a second.
   */
  rotate(s: AgentState): Promise<void> {
    if (this.#running) {
      const next = (): Promise<void> => {
        this.#again = undefined;
        return this.rotate(s);
      };
      this.#again ??= this.#running.then(next, next);
      return this.#again;
    }
    this.#running = this.#round(s).finally(() => (this.#running = undefined));
    return this.#running;
  }

  async #round(s: AgentState): Promise<void> {
    const now = this.#o.clock();
    const own = agentSvidExpiry(s);
    const issued = Math.min(own.notBefore + BACKDATE_MS, own.expiresAt);
    if (now >= issued + (own.expiresAt - issued) / 2) {
      const k = generateKey();
      const r = decodeRenewAnswer(await this.#o.client.call<unknown>('POST', AGENT_PATHS.renew, { csr: csrFor(k) } satisfies RenewRequest));
      checkSvidAnswer(r.svid, { bundle: this.#o.trust(), key: k.pub, expected: (id) => id === s.spiffeId, wanted: s.spiffeId, now, what: 'renewal' });
      s.svidPem = r.svid;
      s.keyPem = keyPem(k.key);
      this.#o.renewed();
      this.#o.log.info('renewed the agent SVID');
    }
    const due = Object.values(s.entries).filter((e) => {
      const sv = s.svids[e.id];
      return !sv || now >= sv.rotateAt;
    });
    for (let i = 0; i < due.length; i += BATCH)
      await this.#signBatch(
        s,
        due.slice(i, i + BATCH).map((e) => ({ id: e.id, k: generateKey() })),
      );
  }

  async #signBatch(s: AgentState, batch: Array<{ id: string; k: KeyPair }>): Promise<void> {
    const req: SvidBatchRequest = { requests: batch.map(({ id, k }) => ({ entryId: id, csr: csrFor(k) })) };
    const res = decodeSvidBatchAnswer(await this.#o.client.call<unknown>('POST', AGENT_PATHS.svids, req));
    if (res.malformed > 0) this.#o.log.warn({ malformed: res.malformed }, 'ignoring malformed SVIDs in the signing answer; asking again later');
    const keys = new Map(batch.map(({ id, k }) => [id, k]));
    const bundle = this.#o.trust();
    let stored = 0;
    for (const sv of res.svids) {
      const { entryId } = sv;
      const k = keys.get(entryId);
      const want = s.entries[entryId]?.spiffeId;
      if (!k || !want) {
        this.#o.log.warn({ entryId: entryId.slice(0, 64) }, 'ignoring a signed SVID for an entry that was not asked for');
        continue;
      }
      keys.delete(entryId); // one answer per request
      try {
        const chain = checkSvidAnswer(sv.svid, { bundle, key: k.pub, expected: (id) => id === want, wanted: want, now: this.#o.clock(), what: 'signing' });
        const expiresAt = chain[0]!.notAfter.getTime();
        s.svids[entryId] = {
          chainPem: sv.svid,
          keyPem: keyPem(k.key),
          notBefore: chain[0]!.notBefore.getTime(),
          expiresAt,
          rotateAt: rotationTime(this.#o.clock(), expiresAt),
        };
        stored++;
      } catch (err) {
        this.#o.log.warn({ entryId: entryId.slice(0, 64), err: (err as Error).message }, 'ignoring a signed SVID that does not match the request');
      }
    }
    if (stored > 0) this.#o.stored();
  }
}
