/**
 * RFC 6962 / RFC 9162 section 2.1 Merkle tree hashing, and the compact range of a growing tree.
 * Sizes and indexes are JS numbers, exact up to 2^53; bit arithmetic is done with division, not
 * the 32-bit `>>` operators.
 */
import { hash } from 'node:crypto';
import { TransparencyError } from './errors.ts';

export const HASH_SIZE = 32;

/** SHA-256 of `data` as a Uint8Array. */
export function sha256(data: Uint8Array): Uint8Array {
  const b = hash('sha256', data, 'buffer');
  return new Uint8Array(b.buffer, b.byteOffset, b.length);
}

/** The hash of a leaf: SHA-256(0x00 || data). */
export function leafHash(data: Uint8Array): Uint8Array {
  const b = new Uint8Array(data.length + 1);
  b.set(data, 1);
  return sha256(b);
}

/** The hash of an interior node: SHA-256(0x01 || left || right). */
export function nodeHash(l: Uint8Array, r: Uint8Array): Uint8Array {
  const b = new Uint8Array(1 + l.length + r.length);
  b[0] = 1;
  b.set(l, 1);
  b.set(r, 1 + l.length);
  return sha256(b);
}

/**
 * nodeHash through a caller's 65-byte scratch buffer, and leafHash through a growable one: the
 * same hashes without allocating an input buffer per call (the hot loops of appends and verify).
 */
export function nodeHashInto(scratch: Uint8Array, l: Uint8Array, r: Uint8Array): Uint8Array {
  scratch[0] = 1;
  scratch.set(l, 1);
  scratch.set(r, 33);
  return sha256(scratch);
}

export class LeafHasher {
  #buf = new Uint8Array(1024);

  hash(data: Uint8Array): Uint8Array {
    if (data.length + 1 > this.#buf.length) this.#buf = new Uint8Array(Math.max(data.length + 1, this.#buf.length * 2));
    this.#buf[0] = 0;
    this.#buf.set(data, 1);
    return sha256(this.#buf.subarray(0, data.length + 1));
  }
}

/** The hash of an empty tree: SHA-256 of nothing. */
export function emptyRoot(): Uint8Array {
  return sha256(new Uint8Array(0));
}

/** MTH of RFC 9162 over leaf hashes (the empty tree is SHA-256("")). Memory O(log n). */
export function rootOf(leafHashes: readonly Uint8Array[]): Uint8Array {
  const r = new CompactRange();
  for (const h of leafHashes) r.append(h);
  return r.root();
}

/** Throws ERR_AUDIT_RANGE unless `n` is an integer in [0, 2^53). */
export function checkSize(n: number, what: string): void {
  if (!Number.isSafeInteger(n) || n < 0) throw new TransparencyError('ERR_AUDIT_RANGE', `${what} must be an integer between 0 and 2^53-1`, { field: what });
}

export function checkHash(h: Uint8Array, what: string): void {
  if (!(h instanceof Uint8Array) || h.length !== HASH_SIZE)
    throw new TransparencyError('ERR_AUDIT_PROOF_INVALID', `${what} must be a ${HASH_SIZE}-byte hash`, { field: what });
}

/** The number of set bits of a safe integer. */
export function popcount(n: number): number {
  let c = 0;
  for (let x = n; x > 0; x = Math.floor(x / 2)) c += x % 2;
  return c;
}

/**
 * The compact range [0, size) of a tree: the roots of its perfect subtrees, largest (leftmost)
 * first — one per set bit of `size`. Appending a leaf merges the trailing ones; each node that
 * becomes complete is reported to `onNode`, so a store can keep every perfect node and answer
 * proofs with O(log n) reads.
 *
 * @example
 *   const r = new CompactRange();
 *   r.append(leafHash(data), (level, index, hash) => nodes.set(`${level}/${index}`, hash));
 *   const root = r.root();
 */
export class CompactRange {
  #size: number;
  #hashes: Uint8Array[];
  readonly #scratch = new Uint8Array(65);

  constructor(size = 0, hashes: readonly Uint8Array[] = []) {
    checkSize(size, 'size');
    if (hashes.length !== popcount(size))
      throw new TransparencyError('ERR_AUDIT_RANGE', `a compact range of size ${size} has ${popcount(size)} hashes, not ${hashes.length}`);
    for (const h of hashes) checkHash(h, 'hashes');
    this.#size = size;
    this.#hashes = [...hashes];
  }

  get size(): number {
    return this.#size;
  }

  get hashes(): readonly Uint8Array[] {
    return this.#hashes;
  }

  /** Adds one leaf; reports (0, size, leafHash) and then every perfect subtree it completes. */
  append(leafHash: Uint8Array, onNode?: (level: number, index: number, hash: Uint8Array) => void): void {
    checkHash(leafHash, 'leafHash');
    if (this.#size >= Number.MAX_SAFE_INTEGER) throw new TransparencyError('ERR_AUDIT_RANGE', 'the tree is full (2^53-1 leaves)');
    let index = this.#size;
    let h = leafHash;
    let level = 0;
    onNode?.(0, index, h);
    while (index % 2 === 1) {
      const left = this.#hashes.pop() as Uint8Array;
      h = nodeHashInto(this.#scratch, left, h);
      index = (index - 1) / 2;
      level++;
      onNode?.(level, index, h);
    }
    this.#hashes.push(h);
    this.#size++;
  }

  /** The tree head hash: the perfect subtree roots folded right to left. */
  root(): Uint8Array {
    const hs = this.#hashes;
    if (hs.length === 0) return emptyRoot();
    let h = hs[hs.length - 1] as Uint8Array;
    for (let i = hs.length - 2; i >= 0; i--) h = nodeHash(hs[i] as Uint8Array, h);
    return h;
  }

  clone(): CompactRange {
    return new CompactRange(this.#size, this.#hashes);
  }
}
