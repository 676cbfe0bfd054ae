/**
 * Test helpers shared by this package's tests, the e2e verifier test and the benchmark: the RFC
 * definitions written the slow, obvious way, and a synthetic tree of any size.
 */
import { leafHash, nodeHash, sha256 } from './merkle.ts';

// The RFC 6962 test tree (certificate-transparency / transparency-dev/merkle testonly data):
// its leaves, and the root of every prefix 1..8.
export const RFC6962_LEAVES = ['', '00', '10', '2021', '3031', '40414243', '5051525354555657', '606162636465666768696a6b6c6d6e6f'].map((s) => unhex(s));
export const RFC6962_ROOTS = [
  '6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d',
  'fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125',
  'aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77',
  'd37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7',
  '4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4',
  '76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef',
  'ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c',
  '5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328',
];

export const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
export function unhex(s: string): Uint8Array {
  return new Uint8Array(Buffer.from(s, 'hex'));
}

/** Largest power of two smaller than n (n > 1). */
function split(n: number): number {
  let k = 1;
  while (k * 2 < n) k *= 2;
  return k;
}

/** MTH of RFC 6962 section 2.1, recursively. */
export function refRoot(leaves: readonly Uint8Array[]): Uint8Array {
  if (leaves.length === 0) return sha256(new Uint8Array(0));
  if (leaves.length === 1) return leaves[0] as Uint8Array;
  const k = split(leaves.length);
  return nodeHash(refRoot(leaves.slice(0, k)), refRoot(leaves.slice(k)));
}

/** PATH(m, D[n]) of RFC 6962 section 2.1.1. */
export function refInclusion(m: number, leaves: readonly Uint8Array[]): Uint8Array[] {
  if (leaves.length <= 1) return [];
  const k = split(leaves.length);
  return m < k ? [...refInclusion(m, leaves.slice(0, k)), refRoot(leaves.slice(k))] : [...refInclusion(m - k, leaves.slice(k)), refRoot(leaves.slice(0, k))];
}

/** PROOF(m, D[n]) of RFC 6962 section 2.1.2. */
export function refConsistency(m: number, leaves: readonly Uint8Array[]): Uint8Array[] {
  if (m === 0 || m === leaves.length) return [];
  const sub = (mm: number, d: readonly Uint8Array[], b: boolean): Uint8Array[] => {
    if (mm === d.length) return b ? [] : [refRoot(d)];
    const k = split(d.length);
    return mm <= k ? [...sub(mm, d.slice(0, k), b), refRoot(d.slice(k))] : [...sub(mm - k, d.slice(k), false), refRoot(d.slice(0, k))];
  };
  return sub(m, leaves, true);
}

/**
 * A tree of any size (up to 2^53) whose perfect nodes cost O(|special| log n) to compute: every
 * leaf hashes to the same `background` except the `special` ones, which hash to SHA-256 of their
 * index. Proofs of it are real RFC 6962 proofs any verifier accepts.
 */
export class SyntheticTree {
  readonly size: number;
  readonly #special: number[];
  readonly #uniform: Uint8Array[] = [];

  constructor(size: number, special: Iterable<number>) {
    this.size = size;
    this.#special = [...new Set(special)].filter((i) => i < size).sort((a, b) => a - b);
    let h = leafHash(new TextEncoder().encode('background'));
    for (let l = 0; l <= 54; l++) {
      this.#uniform.push(h);
      h = nodeHash(h, h);
    }
  }

  leaf(index: number): Uint8Array {
    return this.#hasSpecial(index, index + 1) ? leafHash(new TextEncoder().encode(`leaf ${index}`)) : (this.#uniform[0] as Uint8Array);
  }

  #hasSpecial(begin: number, end: number): boolean {
    // Binary search: the first special index >= begin.
    let lo = 0;
    let hi = this.#special.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((this.#special[mid] as number) < begin) lo = mid + 1;
      else hi = mid;
    }
    return lo < this.#special.length && (this.#special[lo] as number) < end;
  }

  /** The hash of the perfect node (level, index). */
  node(level: number, index: number): Uint8Array {
    const begin = index * 2 ** level;
    if (level === 0) return this.leaf(begin);
    if (!this.#hasSpecial(begin, begin + 2 ** level)) return this.#uniform[level] as Uint8Array;
    return nodeHash(this.node(level - 1, index * 2), this.node(level - 1, index * 2 + 1));
  }

  /** The root of the first `size` leaves. */
  root(size = this.size): Uint8Array {
    const parts: Uint8Array[] = [];
    let pos = 0;
    for (let b = 53; b >= 0; b--) {
      if (Math.floor(size / 2 ** b) % 2 === 1) {
        parts.push(this.node(b, pos / 2 ** b));
        pos += 2 ** b;
      }
    }
    if (parts.length === 0) return sha256(new Uint8Array(0));
    let h = parts[parts.length - 1] as Uint8Array;
    for (let i = parts.length - 2; i >= 0; i--) h = nodeHash(parts[i] as Uint8Array, h);
    return h;
  }

  /** A batch reader over this tree, counting the nodes it was asked for. */
  reader(counter?: { reads: number }): (nodes: readonly { level: number; index: number }[]) => Promise<Uint8Array[]> {
    return async (nodes) => {
      if (counter) counter.reads += nodes.length;
      return nodes.map((n) => this.node(n.level, n.index));
    };
  }
}
