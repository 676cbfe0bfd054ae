/**
 * Inclusion and consistency proofs of RFC 9162 section 2.1.3 and 2.1.4: which perfect nodes a
 * proof needs (a plan, O(log n) nodes), how they fold into the proof, and the verification
 * algorithms exactly as the RFC states them (with transparency-dev/merkle's answers for the
 * edge cases the RFC leaves open: a consistency proof from size 0, or between equal sizes, is
 * empty).
 */
import { TransparencyError } from './errors.ts';
import { HASH_SIZE, checkHash, checkSize, nodeHash } from './merkle.ts';

/** A perfect subtree: the 2^level leaves starting at leaf index * 2^level. */
export interface NodeId {
  readonly level: number;
  readonly index: number;
}

/** Hash of the perfect subtree of 2^level leaves starting at leaf index * 2^level. */
export type NodeReader = (level: number, index: number) => Uint8Array | Promise<Uint8Array>;
/** The hashes of several perfect subtrees at once, in the order asked (one round trip to a store). */
export type NodeBatchReader = (nodes: readonly { level: number; index: number }[]) => Promise<Uint8Array[]>;

/**
 * The perfect nodes a proof needs, in order. `fold` marks a run of them, [begin, end), that
 * together make one ephemeral node (the right edge of an incomplete subtree): assembleProof
 * hashes that run into one proof element.
 */
export interface ProofPlan {
  readonly nodes: readonly NodeId[];
  readonly fold: { readonly begin: number; readonly end: number } | null;
}

const pow2 = (n: number): number => 2 ** n;
const shr = (x: number, n: number): number => Math.floor(x / pow2(n));

/**
 * The proof nodes of the perfect node (level, index) in the tree of `size` leaves: the sibling
 * at each level up to the root. Below the point where the path to the node leaves the path to
 * the last leaf, siblings are perfect except the highest one, which may be ephemeral; above it
 * the path runs along the right edge and only left siblings exist.
 */
function pathPlan(level: number, index: number, size: number): ProofPlan {
  const last = shr(size - 1, level);
  let inner = 0;
  while (shr(index, inner) !== shr(last, inner)) inner++;
  const nodes: NodeId[] = [];
  let fold: ProofPlan['fold'] = null;
  for (let l = 0; l < inner; l++) {
    const i = shr(index, l);
    const sib = i % 2 === 0 ? i + 1 : i - 1;
    const lv = level + l;
    if (l === inner - 1 && (sib + 1) * pow2(lv) > size) {
      // [sib * 2^lv, size) is not perfect: its perfect pieces, left to right.
      const begin = nodes.length;
      let pos = sib * pow2(lv);
      const rest = size - pos;
      for (let b = lv - 1; b >= 0; b--) {
        if (shr(rest, b) % 2 === 1) {
          nodes.push({ level: b, index: pos / pow2(b) });
          pos += pow2(b);
        }
      }
      fold = { begin, end: nodes.length };
    } else {
      nodes.push({ level: lv, index: sib });
    }
  }
  for (let l = inner; shr(index, l) > 0; l++) {
    const i = shr(index, l);
    if (i % 2 === 1) nodes.push({ level: level + l, index: i - 1 });
  }
  return { nodes, fold };
}

/**
 * The perfect nodes whose hashes make the compact range of the first `size` leaves, largest
 * first: read them from a store and `new CompactRange(size, hashes).root()` is the root at that
 * size (a past checkpoint's, say) without touching a leaf.
 */
export function compactRangeNodes(size: number): NodeId[] {
  checkSize(size, 'size');
  const nodes: NodeId[] = [];
  let pos = 0;
  for (let b = 53; b >= 0; b--) {
    if (shr(size, b) % 2 === 1) {
      nodes.push({ level: b, index: pos / pow2(b) });
      pos += pow2(b);
    }
  }
  return nodes;
}

/** The perfect nodes of the inclusion proof of leaf `index` in the tree of `size` leaves. */
export function inclusionPlan(index: number, size: number): ProofPlan {
  checkSize(index, 'index');
  checkSize(size, 'size');
  if (index >= size) throw new TransparencyError('ERR_AUDIT_RANGE', `leaf ${index} is not in a tree of ${size} leaves`, { field: 'index' });
  return pathPlan(0, index, size);
}

/** The perfect nodes of the consistency proof between the trees of `from` and `to` leaves. */
export function consistencyPlan(from: number, to: number): ProofPlan {
  checkSize(from, 'from');
  checkSize(to, 'to');
  if (from > to) throw new TransparencyError('ERR_AUDIT_RANGE', `a tree of ${from} leaves cannot be a prefix of one of ${to}`, { field: 'from' });
  if (from === to || from === 0) return { nodes: [], fold: null };
  // The biggest perfect subtree that ends at `from`, then its path in the tree of `to`; when
  // `from` is a power of two that subtree is the old root itself, which the verifier has.
  let level = 0;
  while (shr(from, level) % 2 === 0) level++;
  const index = shr(from, level) - 1;
  const path = pathPlan(level, index, to);
  if (index === 0) return path;
  const shift = (i: number) => i + 1;
  return {
    nodes: [{ level, index }, ...path.nodes],
    fold: path.fold === null ? null : { begin: shift(path.fold.begin), end: shift(path.fold.end) },
  };
}

/** The proof from the hashes of `plan.nodes` (in plan order): the ephemeral run folded into one hash. */
export function assembleProof(plan: ProofPlan, hashes: readonly Uint8Array[]): Uint8Array[] {
  if (hashes.length !== plan.nodes.length)
    throw new TransparencyError('ERR_AUDIT_PROOF_INVALID', `the plan needs ${plan.nodes.length} node hashes, got ${hashes.length}`);
  for (const h of hashes) checkHash(h, 'hashes');
  if (plan.fold === null || plan.fold.end - plan.fold.begin <= 1) return [...hashes];
  const { begin, end } = plan.fold;
  let h = hashes[end - 1] as Uint8Array;
  for (let i = end - 2; i >= begin; i--) h = nodeHash(hashes[i] as Uint8Array, h);
  return [...hashes.slice(0, begin), h, ...hashes.slice(end)];
}

async function prove(plan: ProofPlan, read: NodeBatchReader): Promise<Uint8Array[]> {
  if (plan.nodes.length === 0) return [];
  return assembleProof(plan, await read(plan.nodes));
}

/** The inclusion proof of leaf `index` in the tree of `size`, from O(log size) perfect-node reads. */
export async function inclusionProof(index: number, size: number, read: NodeBatchReader): Promise<Uint8Array[]> {
  return prove(inclusionPlan(index, size), read);
}

/** The consistency proof between the trees of `from` and `to` leaves, from O(log to) perfect-node reads. */
export async function consistencyProof(from: number, to: number, read: NodeBatchReader): Promise<Uint8Array[]> {
  return prove(consistencyPlan(from, to), read);
}

/** A batch reader asking a one-node reader for each node (in parallel when it is asynchronous). */
export function batchReader(read: NodeReader): NodeBatchReader {
  return async (nodes) => Promise.all(nodes.map((n) => read(n.level, n.index)));
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= (a[i] as number) ^ (b[i] as number);
  return d === 0;
}

function checkProof(proof: readonly Uint8Array[]): void {
  if (!Array.isArray(proof)) throw new TransparencyError('ERR_AUDIT_PROOF_INVALID', 'a proof is a list of hashes');
  if (proof.length > 128) throw new TransparencyError('ERR_AUDIT_PROOF_INVALID', `a proof of ${proof.length} hashes is longer than any tree needs`);
  for (const p of proof)
    if (!(p instanceof Uint8Array) || p.length !== HASH_SIZE) throw new TransparencyError('ERR_AUDIT_PROOF_INVALID', `every proof hash is ${HASH_SIZE} bytes`);
}

/**
 * RFC 9162 section 2.1.3.2: throws ERR_AUDIT_PROOF_INVALID unless `proof` shows the leaf of hash
 * `leafHash` at `index` in the tree of `size` leaves whose root is `root` (ERR_AUDIT_RANGE when
 * index >= size).
 */
export function verifyInclusion(leafHash: Uint8Array, index: number, size: number, proof: readonly Uint8Array[], root: Uint8Array): void {
  checkSize(index, 'index');
  checkSize(size, 'size');
  checkHash(leafHash, 'leafHash');
  checkHash(root, 'root');
  checkProof(proof);
  if (index >= size) throw new TransparencyError('ERR_AUDIT_RANGE', `leaf ${index} is not in a tree of ${size} leaves`, { field: 'index' });
  let fn = index;
  let sn = size - 1;
  let r = leafHash;
  for (const p of proof) {
    if (sn === 0) throw new TransparencyError('ERR_AUDIT_PROOF_INVALID', `the inclusion proof is too long for leaf ${index} of ${size}`);
    if (fn % 2 === 1 || fn === sn) {
      r = nodeHash(p, r);
      while (fn % 2 === 0 && fn !== 0) {
        fn /= 2;
        sn = Math.floor(sn / 2);
      }
    } else {
      r = nodeHash(r, p);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  if (sn !== 0) throw new TransparencyError('ERR_AUDIT_PROOF_INVALID', `the inclusion proof is too short for leaf ${index} of ${size}`);
  if (!equal(r, root))
    throw new TransparencyError('ERR_AUDIT_PROOF_INVALID', `the inclusion proof of leaf ${index} does not lead to the root of the tree of ${size}`);
}

/**
 * RFC 9162 section 2.1.4.2: throws unless the tree of `size2` leaves with root `root2` extends
 * the tree of `size1` with root `root1`. ERR_AUDIT_PROOF_INVALID for a proof of the wrong
 * length, ERR_AUDIT_INCONSISTENT when the hashes do not lead to both roots.
 */
export function verifyConsistency(size1: number, size2: number, proof: readonly Uint8Array[], root1: Uint8Array, root2: Uint8Array): void {
  checkSize(size1, 'size1');
  checkSize(size2, 'size2');
  checkHash(root1, 'root1');
  checkHash(root2, 'root2');
  checkProof(proof);
  if (size2 < size1) throw new TransparencyError('ERR_AUDIT_RANGE', `a tree of ${size1} leaves cannot be a prefix of one of ${size2}`, { field: 'size1' });
  if (size1 === size2) {
    if (proof.length > 0) throw new TransparencyError('ERR_AUDIT_PROOF_INVALID', 'the consistency proof between equal sizes is empty');
    if (!equal(root1, root2)) throw new TransparencyError('ERR_AUDIT_INCONSISTENT', `two different roots for the tree of ${size1} leaves`);
    return;
  }
  if (size1 === 0) {
    if (proof.length > 0) throw new TransparencyError('ERR_AUDIT_PROOF_INVALID', 'the consistency proof from the empty tree is empty');
    return;
  }
  if (proof.length === 0) throw new TransparencyError('ERR_AUDIT_PROOF_INVALID', `the consistency proof from ${size1} to ${size2} is empty`);
  const path = isPow2(size1) ? [root1, ...proof] : [...proof];
  let fn = size1 - 1;
  let sn = size2 - 1;
  while (fn % 2 === 1) {
    fn = (fn - 1) / 2;
    sn = Math.floor(sn / 2);
  }
  let fr = path[0] as Uint8Array;
  let sr = fr;
  for (let i = 1; i < path.length; i++) {
    const c = path[i] as Uint8Array;
    if (sn === 0) throw new TransparencyError('ERR_AUDIT_PROOF_INVALID', `the consistency proof from ${size1} to ${size2} is too long`);
    if (fn % 2 === 1 || fn === sn) {
      fr = nodeHash(c, fr);
      sr = nodeHash(c, sr);
      while (fn % 2 === 0 && fn !== 0) {
        fn /= 2;
        sn = Math.floor(sn / 2);
      }
    } else {
      sr = nodeHash(sr, c);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  if (sn !== 0) throw new TransparencyError('ERR_AUDIT_PROOF_INVALID', `the consistency proof from ${size1} to ${size2} is too short`);
  if (!equal(fr, root1) || !equal(sr, root2))
    throw new TransparencyError('ERR_AUDIT_INCONSISTENT', `the tree of ${size2} leaves does not extend the tree of ${size1} by this proof`);
}

function isPow2(n: number): boolean {
  let x = n;
  while (x > 1) {
    if (x % 2 === 1) return false;
    x /= 2;
  }
  return x === 1;
}
