/**
 * The leaf encoding of Writ's audit log, and the verifier of a run of stored entries.
 *
 *   leaf data = 0x01 (version) || uint64 big endian index || previous leaf hash (32 bytes; zeros at index 0) || body
 *
 * Each leaf names its own index and the hash of the leaf before it, so an entry edited, deleted,
 * inserted or moved in the store breaks the chain at the first index where the log changed —
 * without a proof from the server. Only a rewrite of the whole tail from some index on keeps the
 * chain whole, and that is what a trusted checkpoint (its root) catches.
 */
import { TransparencyError } from './errors.ts';
import { CompactRange, HASH_SIZE, LeafHasher, checkSize, sha256 } from './merkle.ts';

export const AUDIT_LEAF_VERSION = 1;
const HEADER = 1 + 8 + HASH_SIZE;

function checkLeaf(index: number, prevLeafHash: Uint8Array | null): void {
  checkSize(index, 'index');
  if ((index === 0) !== (prevLeafHash === null))
    throw new TransparencyError('ERR_AUDIT_RANGE', 'entry 0 has no previous leaf, every other entry has one', { field: 'prevLeafHash' });
  if (prevLeafHash !== null && prevLeafHash.length !== HASH_SIZE)
    throw new TransparencyError('ERR_AUDIT_ENTRY_MALFORMED', `a previous leaf hash is ${HASH_SIZE} bytes`, { field: 'prevLeafHash' });
}

/** Writes the HEADER bytes of the leaf data (version, index, previous leaf hash) at out[at]. */
function writeHeader(out: Uint8Array, at: number, index: number, prevLeafHash: Uint8Array | null): void {
  out[at] = AUDIT_LEAF_VERSION;
  const hi = Math.floor(index / 2 ** 32);
  const lo = index % 2 ** 32;
  out[at + 1] = hi >>> 24;
  out[at + 2] = (hi >>> 16) & 0xff;
  out[at + 3] = (hi >>> 8) & 0xff;
  out[at + 4] = hi & 0xff;
  out[at + 5] = lo >>> 24;
  out[at + 6] = (lo >>> 16) & 0xff;
  out[at + 7] = (lo >>> 8) & 0xff;
  out[at + 8] = lo & 0xff;
  if (prevLeafHash === null) out.fill(0, at + 9, at + HEADER);
  else out.set(prevLeafHash, at + 9);
}

/** The leaf data of entry `index` whose predecessor has leaf hash `prevLeafHash` (null only at index 0). */
export function encodeAuditLeaf(index: number, prevLeafHash: Uint8Array | null, body: Uint8Array): Uint8Array {
  checkLeaf(index, prevLeafHash);
  const out = new Uint8Array(HEADER + body.length);
  writeHeader(out, 0, index, prevLeafHash);
  out.set(body, HEADER);
  return out;
}

/**
 * leafHash(encodeAuditLeaf(index, prevLeafHash, body)) through one growable buffer, without
 * allocating the leaf data per entry: the hot loop of `writ audit verify`.
 *
 * @example
 *   const hasher = new AuditLeafHasher();
 *   const h = hasher.hash(i, prev, body); // equal to leafHash(encodeAuditLeaf(i, prev, body))
 */
export class AuditLeafHasher {
  #buf = new Uint8Array(1024);

  hash(index: number, prevLeafHash: Uint8Array | null, body: Uint8Array): Uint8Array {
    checkLeaf(index, prevLeafHash);
    const need = 1 + HEADER + body.length;
    if (need > this.#buf.length) this.#buf = new Uint8Array(Math.max(need, this.#buf.length * 2));
    this.#buf[0] = 0; // RFC 6962's leaf prefix, as leafHash adds it
    writeHeader(this.#buf, 1, index, prevLeafHash);
    this.#buf.set(body, 1 + HEADER);
    return sha256(this.#buf.subarray(0, need));
  }
}

export interface AuditLeaf {
  index: number;
  /** null at index 0. */
  prevLeafHash: Uint8Array | null;
  body: Uint8Array;
}

/** The parts of an encoded audit leaf; throws ERR_AUDIT_ENTRY_MALFORMED. */
export function decodeAuditLeaf(data: Uint8Array): AuditLeaf {
  if (!(data instanceof Uint8Array) || data.length < HEADER)
    throw new TransparencyError('ERR_AUDIT_ENTRY_MALFORMED', `an audit leaf is at least ${HEADER} bytes`);
  if (data[0] !== AUDIT_LEAF_VERSION) throw new TransparencyError('ERR_AUDIT_ENTRY_MALFORMED', `unknown audit leaf version ${data[0]}`);
  const view = new DataView(data.buffer, data.byteOffset, HEADER);
  const hi = view.getUint32(1);
  if (hi > 0x1fffff) throw new TransparencyError('ERR_AUDIT_ENTRY_MALFORMED', 'an audit leaf index beyond 2^53-1');
  const index = hi * 2 ** 32 + view.getUint32(5);
  const prev = data.subarray(9, HEADER);
  if (index === 0 && prev.some((b) => b !== 0)) throw new TransparencyError('ERR_AUDIT_ENTRY_MALFORMED', 'entry 0 names a previous leaf');
  return { index, prevLeafHash: index === 0 ? null : prev, body: data.subarray(HEADER) };
}

/** A tree head to check the entries against: the root of the first `size` entries. */
export interface TrustedHead {
  size: number;
  rootHash: Uint8Array;
}

export interface VerifyEntriesOptions {
  /** The tree of the entries before the first one given (default: empty, the entries start at 0). */
  range?: CompactRange;
  /** The leaf hash of entry range.size - 1, to check the first entry's link (required when range.size > 0). */
  prevLeafHash?: Uint8Array;
  /** Tree heads (e.g. checkpoints saved earlier) the prefixes of the log must match. */
  trusted?: readonly TrustedHead[];
  /** Stop with firstBadIndex if more than this many entries come (default: unlimited). */
  maxEntries?: number;
}

export interface VerifyEntriesResult {
  /** How many entries (from 0) were verified: the tree size reached, before the first bad one. */
  size: number;
  /** The root of the tree of those `size` entries. */
  root: Uint8Array;
  /** The leaf hash of entry size - 1 (to continue with the next page); absent when size is 0. */
  lastLeafHash?: Uint8Array;
  /** The first index where the log differs from what it claims or from a trusted head. */
  firstBadIndex?: number;
  reason?: string;
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * Recomputes the tree from stored entries (`body` = the encoded leaf data, in index order) and
 * checks each entry's own index and its link to the entry before, and every trusted head on the
 * way. Never throws on bad data: the answer says where the log stops being what it claims, and
 * `size`/`root` describe the good prefix before that index. When the link from entry k to entry
 * k-1 is broken, firstBadIndex is k-1: the lowest index that may have changed (an edit of k-1
 * is the usual cause; an edit of k's link is the other). The last entries are vouched for by
 * the trusted heads only: a mismatch there reports the size of the last head that matched.
 *
 * @example
 *   const r = verifyEntries(rows, { trusted: [savedCheckpoint] });
 *   if (r.firstBadIndex !== undefined) console.error(`entry ${r.firstBadIndex}: ${r.reason}`);
 */
export function verifyEntries(entries: Iterable<{ index: number; body: Uint8Array }>, opts: VerifyEntriesOptions = {}): VerifyEntriesResult {
  const range = opts.range?.clone() ?? new CompactRange();
  const start = range.size;
  if (start > 0 && opts.prevLeafHash === undefined)
    throw new TransparencyError('ERR_AUDIT_RANGE', 'continuing after entry 0 needs the leaf hash of the entry before', { field: 'prevLeafHash' });
  for (const t of opts.trusted ?? []) {
    checkSize(t.size, 'trusted.size');
    if (!(t.rootHash instanceof Uint8Array) || t.rootHash.length !== HASH_SIZE)
      throw new TransparencyError('ERR_AUDIT_PROOF_INVALID', `a trusted root is ${HASH_SIZE} bytes`, { field: 'trusted.rootHash' });
  }
  const trusted = [...(opts.trusted ?? [])].filter((t) => t.size > start).sort((a, b) => a.size - b.size);
  let ti = 0;
  // The leaf hash of the last entry appended to `range`, and of the entry read after it, whose
  // content only the next entry's link (or a trusted head) vouches for.
  let last: Uint8Array | null = start === 0 ? null : (opts.prevLeafHash as Uint8Array);
  let pending: Uint8Array | null = null;
  // The longest prefix that matched a trusted head: a mismatch at a later head lies after it.
  let vouched = { range: range.clone(), last };
  const result = (r: CompactRange, lastLeaf: Uint8Array | null, bad?: { index: number; reason: string }): VerifyEntriesResult => {
    const out: VerifyEntriesResult = { size: r.size, root: r.root() };
    if (lastLeaf !== null) out.lastLeafHash = lastLeaf;
    if (bad !== undefined) {
      out.firstBadIndex = bad.index;
      out.reason = bad.reason;
    }
    return out;
  };
  const bad = (index: number, reason: string) => result(range, last, { index, reason });
  // Appends the pending leaf, then checks a trusted head of the new size; a mismatch answers.
  const commit = (): VerifyEntriesResult | undefined => {
    if (pending === null) return undefined;
    range.append(pending);
    last = pending;
    pending = null;
    while (ti < trusted.length && (trusted[ti] as TrustedHead).size <= range.size) {
      const t = trusted[ti++] as TrustedHead;
      if (!equal(range.root(), t.rootHash)) {
        const from = vouched.range.size;
        return result(vouched.range, vouched.last, {
          index: from,
          reason: `the first ${t.size} entries do not hash to the trusted root of that size: the log differs from entry ${from} on`,
        });
      }
      vouched = { range: range.clone(), last };
    }
    return undefined;
  };
  const hasher = new LeafHasher();
  let next = start;
  for (const e of entries) {
    if (opts.maxEntries !== undefined && next - start >= opts.maxEntries) {
      const r = commit();
      return r ?? bad(next, `more than ${opts.maxEntries} entries`);
    }
    // A repeat of the entry just read (a store without a unique index): the log changed there.
    if (e.index === next - 1 && pending !== null) return bad(next - 1, `entry ${next - 1} is stored twice`);
    if (e.index !== next) {
      const r = commit();
      return (
        r ??
        bad(
          next,
          e.index > next ? `entry ${next} is missing (the next stored entry is ${e.index})` : `entry ${e.index} comes after entry ${next - 1}: out of order`,
        )
      );
    }
    let leaf: AuditLeaf;
    try {
      leaf = decodeAuditLeaf(e.body);
    } catch (err) {
      const r = commit();
      return r ?? bad(next, `entry ${next} does not decode: ${(err as Error).message}`);
    }
    // An entry that names another index was moved there: when it names the index before, the
    // entry read just before it is the intruder.
    if (leaf.index === next - 1 && pending !== null) return bad(next - 1, `entry ${next - 1} was inserted: the entry after it says it is entry ${next - 1}`);
    if (leaf.index !== next) {
      const r = commit();
      return r ?? bad(next, `the entry stored at ${next} says it is entry ${leaf.index}`);
    }
    const linkTo = pending ?? last;
    if (linkTo !== null && leaf.prevLeafHash !== null && !equal(leaf.prevLeafHash, linkTo)) {
      // The entry before is not the one this entry follows: it (or this link) was changed.
      if (pending === null) return bad(next, `entry ${next} does not follow the entry before it`);
      return bad(next - 1, `entry ${next - 1} is not the entry that entry ${next} follows: one of them was changed`);
    }
    const r = commit();
    if (r !== undefined) return r;
    pending = hasher.hash(e.body);
    next++;
  }
  const r = commit();
  if (r !== undefined) return r;
  if (ti < trusted.length) {
    const t = trusted[ti] as TrustedHead;
    return bad(range.size, `the log has ${range.size} entries, fewer than the ${t.size} of a trusted checkpoint`);
  }
  return result(range, last);
}
