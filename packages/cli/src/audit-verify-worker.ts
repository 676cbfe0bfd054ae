/**
 * The worker thread of `writ audit verify` (packages/cli/src/audit.ts): decodes one compact page
 * of `GET /v1/audit/entries` (@writ/transparency's audit-page.ts) and recomputes the leaf hash of
 * each of its entries but the first, chained on the leaf hash the server stored for the entry
 * before, not the one recomputed. That breaks the chain's order dependency: entry j's hash needs
 * nothing from the other pages, so pages hash in parallel. It gives the same verdict as hashing
 * in order: up to the first entry whose recomputed hash differs from its stored one, the stored
 * hashes are the recomputed ones, so each entry is hashed with the same predecessor either way.
 * The first entry of a page is hashed by the caller, with the page before's last recomputed hash.
 *
 * A file of its own (dist/audit-verify-worker.js in the bundle, see scripts/build.mjs) so that it
 * hashes with the one leaf encoding, @writ/transparency's AuditLeafHasher.
 */
import { parentPort } from 'node:worker_threads';
import { AuditLeafHasher, decodeAuditPage } from '@writ/transparency';

/** A page to check: the answer's bytes, and the range it was asked for. */
export interface PageTask {
  readonly id: number;
  readonly data: Uint8Array;
  readonly start: number;
  readonly end: number;
}

export type PageResult =
  | { readonly id: number; readonly error: string }
  | {
      readonly id: number;
      readonly size: number;
      readonly end: number;
      readonly count: number;
      /** The first entry's body (a copy); undefined for an empty page. */
      readonly first: Uint8Array | undefined;
      /** count x 32 bytes: the hashes the server stored. */
      readonly stored: Uint8Array;
      /** count x 32 bytes: the recomputed hashes, the first slot empty (the caller's). */
      readonly hashes: Uint8Array;
      /** The first entry whose index is not start + j (-1: none), and the index it has. */
      readonly badIndex: number;
      readonly badIndexIs: number;
      /** The first j >= 1 whose recomputed hash is not the stored one (-1: none). */
      readonly badHash: number;
    };

const hasher = new AuditLeafHasher();

/** Checks one page (see the file's comment); a page that does not decode, or is not the range asked for, is an error result. */
export function hashPage(t: PageTask): PageResult {
  let page: ReturnType<typeof decodeAuditPage>;
  try {
    page = decodeAuditPage(t.data, t.end - t.start);
  } catch (err) {
    return { id: t.id, error: `the server's page of entries from ${t.start} is malformed: ${(err as Error).message}` };
  }
  if (page.start !== t.start || page.end > t.end)
    return { id: t.id, error: `the server answered the entries [${page.start}, ${page.end}) for [${t.start}, ${t.end})` };
  const es = page.entries;
  const n = es.length;
  const stored = new Uint8Array(n * 32);
  const hashes = new Uint8Array(n * 32);
  let badIndex = -1;
  let badIndexIs = 0;
  let badHash = -1;
  for (let j = 0; j < n; j++) {
    const e = es[j]!;
    const i = t.start + j;
    if (e.index !== i) {
      badIndex = j;
      badIndexIs = e.index;
      break;
    }
    stored.set(e.leafHash, j * 32);
    if (j === 0) continue;
    const h = hasher.hash(i, es[j - 1]!.leafHash, e.body);
    hashes.set(h, j * 32);
    if (badHash < 0 && !Buffer.from(h.buffer, h.byteOffset, 32).equals(e.leafHash)) badHash = j;
  }
  const first = n > 0 ? es[0]!.body.slice() : undefined;
  return { id: t.id, size: page.size, end: page.end, count: n, first, stored, hashes, badIndex, badIndexIs, badHash };
}

const port = parentPort;
if (port)
  port.on('message', (t: PageTask) => {
    const r = hashPage(t);
    port.postMessage(r, 'error' in r ? [] : [r.stored.buffer as ArrayBuffer, r.hashes.buffer as ArrayBuffer]);
  });
