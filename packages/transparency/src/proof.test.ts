import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  type NodeBatchReader,
  assembleProof,
  batchReader,
  CompactRange,
  compactRangeNodes,
  consistencyPlan,
  consistencyProof,
  inclusionPlan,
  inclusionProof,
  leafHash,
  nodeHash,
  rootOf,
  verifyConsistency,
  verifyInclusion,
} from './index.ts';
import { RFC6962_LEAVES, SyntheticTree, hex, refConsistency, refInclusion, unhex } from './testing.ts';

/** A reader over an in-memory list of leaf hashes: the perfect node (level, index) computed from its leaves. */
function memoryReader(leaves: readonly Uint8Array[]): NodeBatchReader {
  const memo = new Map<string, Uint8Array>();
  const node = (level: number, index: number): Uint8Array => {
    const key = `${level}/${index}`;
    let h = memo.get(key);
    if (h === undefined) {
      h = level === 0 ? (leaves[index] as Uint8Array) : nodeHash(node(level - 1, 2 * index), node(level - 1, 2 * index + 1));
      memo.set(key, h);
    }
    return h;
  };
  return async (nodes) =>
    nodes.map((n) => {
      const begin = n.index * 2 ** n.level;
      const end = begin + 2 ** n.level;
      assert.ok(end <= leaves.length, `node ${n.level}/${n.index} is not a perfect node of ${leaves.length} leaves`);
      return node(n.level, n.index);
    });
}

const flip = (b: Uint8Array, at = 0): Uint8Array => {
  const c = new Uint8Array(b);
  c[at % c.length] = (c[at % c.length] as number) ^ 1;
  return c;
};

const LEAVES = Array.from({ length: 64 }, (_, i) => leafHash(new TextEncoder().encode(`entry ${i}`)));
const ROOTS = Array.from({ length: 65 }, (_, n) => rootOf(LEAVES.slice(0, n)));

describe('known-answer proofs of the RFC 6962 test tree', () => {
  const leaves = RFC6962_LEAVES.map(leafHash);
  const read = memoryReader(leaves);
  // transparency-dev/merkle testonly vectors (data only).
  const inclusion = [
    {
      index: 0,
      size: 8,
      proof: [
        '96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7',
        '5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e',
        '6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4',
      ],
    },
    {
      index: 5,
      size: 8,
      proof: [
        'bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b',
        'ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0',
        'd37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7',
      ],
    },
  ];
  const consistency = [
    {
      from: 2,
      to: 8,
      proof: ['5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e', '6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4'],
    },
    {
      from: 6,
      to: 8,
      proof: [
        '0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a',
        'ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0',
        'd37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7',
      ],
    },
    {
      from: 2,
      to: 5,
      proof: ['5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e', 'bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b'],
    },
  ];

  for (const v of inclusion)
    it(`inclusion of leaf ${v.index} in ${v.size} is the published proof, and verifies`, async () => {
      const proof = await inclusionProof(v.index, v.size, read);
      assert.deepEqual(proof.map(hex), v.proof);
      verifyInclusion(leaves[v.index] as Uint8Array, v.index, v.size, v.proof.map(unhex), rootOf(leaves.slice(0, v.size)));
    });

  for (const v of consistency)
    it(`consistency from ${v.from} to ${v.to} is the published proof, and verifies`, async () => {
      const proof = await consistencyProof(v.from, v.to, read);
      assert.deepEqual(proof.map(hex), v.proof);
      verifyConsistency(v.from, v.to, v.proof.map(unhex), rootOf(leaves.slice(0, v.from)), rootOf(leaves.slice(0, v.to)));
    });
});

describe('every proof up to 64 leaves', () => {
  const read = memoryReader(LEAVES);

  it('every inclusion proof is RFC 6962 PATH, verifies against the root, and nothing altered does', async () => {
    for (let size = 1; size <= 64; size++) {
      const tree = LEAVES.slice(0, size);
      const root = ROOTS[size] as Uint8Array;
      for (let index = 0; index < size; index++) {
        const proof = await inclusionProof(index, size, read);
        assert.deepEqual(proof.map(hex), refInclusion(index, tree).map(hex), `PATH(${index}, ${size})`);
        const leaf = LEAVES[index] as Uint8Array;
        verifyInclusion(leaf, index, size, proof, root);
        // Altered: another leaf, index, size, root, a flipped proof byte, one hash more or less.
        assert.throws(() => verifyInclusion(flip(leaf), index, size, proof, root), { code: 'ERR_AUDIT_PROOF_INVALID' });
        if (index + 1 < size) assert.throws(() => verifyInclusion(leaf, index + 1, size, proof, root), { code: 'ERR_AUDIT_PROOF_INVALID' });
        if (index > 0) assert.throws(() => verifyInclusion(leaf, index - 1, size, proof, root), { code: 'ERR_AUDIT_PROOF_INVALID' });
        if (size < 64) assert.throws(() => verifyInclusion(leaf, index, size + 1, proof, ROOTS[size + 1] as Uint8Array), { code: 'ERR_AUDIT_PROOF_INVALID' });
        if (size - 1 > index)
          assert.throws(() => verifyInclusion(leaf, index, size - 1, proof, ROOTS[size - 1] as Uint8Array), { code: 'ERR_AUDIT_PROOF_INVALID' });
        assert.throws(() => verifyInclusion(leaf, index, size, proof, flip(root, 31)), { code: 'ERR_AUDIT_PROOF_INVALID' });
        for (let j = 0; j < proof.length; j++) {
          const bad = proof.map((p, k) => (k === j ? flip(p, j) : p));
          assert.throws(() => verifyInclusion(leaf, index, size, bad, root), { code: 'ERR_AUDIT_PROOF_INVALID' });
        }
        assert.throws(() => verifyInclusion(leaf, index, size, [...proof, root], root), { code: 'ERR_AUDIT_PROOF_INVALID' });
        if (proof.length > 0) assert.throws(() => verifyInclusion(leaf, index, size, proof.slice(1), root), { code: 'ERR_AUDIT_PROOF_INVALID' });
      }
      assert.throws(() => verifyInclusion(LEAVES[0] as Uint8Array, size, size, [], root), { code: 'ERR_AUDIT_RANGE' });
    }
  });

  it('every consistency proof is RFC 6962 PROOF, verifies, and nothing altered does', async () => {
    for (let to = 0; to <= 64; to++) {
      for (let from = 0; from <= to; from++) {
        const proof = await consistencyProof(from, to, read);
        assert.deepEqual(proof.map(hex), refConsistency(from, LEAVES.slice(0, to)).map(hex), `PROOF(${from}, ${to})`);
        const r1 = ROOTS[from] as Uint8Array;
        const r2 = ROOTS[to] as Uint8Array;
        verifyConsistency(from, to, proof, r1, r2);
        if (from === 0) continue;
        if (from === to) {
          assert.throws(() => verifyConsistency(from, to, proof, r1, flip(r2)), { code: 'ERR_AUDIT_INCONSISTENT' });
          assert.throws(() => verifyConsistency(from, to, [r1], r1, r2), { code: 'ERR_AUDIT_PROOF_INVALID' });
          continue;
        }
        assert.throws(() => verifyConsistency(from, to, proof, flip(r1), r2), { code: /ERR_AUDIT_(INCONSISTENT|PROOF_INVALID)/ });
        assert.throws(() => verifyConsistency(from, to, proof, r1, flip(r2)), { code: 'ERR_AUDIT_INCONSISTENT' });
        for (let j = 0; j < proof.length; j++) {
          const bad = proof.map((p, k) => (k === j ? flip(p, 5) : p));
          assert.throws(() => verifyConsistency(from, to, bad, r1, r2), { code: /ERR_AUDIT_(INCONSISTENT|PROOF_INVALID)/ });
        }
        assert.throws(() => verifyConsistency(from, to, [...proof, r1], r1, r2), { code: /ERR_AUDIT_(INCONSISTENT|PROOF_INVALID)/ });
        assert.throws(() => verifyConsistency(from, to, proof.slice(1), r1, r2), { code: /ERR_AUDIT_(INCONSISTENT|PROOF_INVALID)/ });
        if (to < 64)
          assert.throws(() => verifyConsistency(from, to + 1, proof, r1, ROOTS[to + 1] as Uint8Array), { code: /ERR_AUDIT_(INCONSISTENT|PROOF_INVALID)/ });
        if (from + 1 < to)
          assert.throws(() => verifyConsistency(from + 1, to, proof, ROOTS[from + 1] as Uint8Array, r2), { code: /ERR_AUDIT_(INCONSISTENT|PROOF_INVALID)/ });
      }
    }
  });

  it('random proofs never verify, and every refusal is a TransparencyError (property)', () => {
    const hash = fc.uint8Array({ minLength: 32, maxLength: 32 });
    fc.assert(
      fc.property(fc.nat(70), fc.nat(70), fc.array(hash, { maxLength: 8 }), hash, (a, b, proof, leaf) => {
        const [index, size] = [Math.min(a, b), Math.max(a, b)];
        const root = ROOTS[Math.min(size, 64)] as Uint8Array;
        assert.throws(() => verifyInclusion(leaf, index, size, proof, root), { code: /^ERR_AUDIT_(PROOF_INVALID|RANGE)$/ });
        if (index > 0 && index < size)
          assert.throws(() => verifyConsistency(index, size, proof, ROOTS[Math.min(index, 64)] as Uint8Array, root), {
            code: /^ERR_AUDIT_(PROOF_INVALID|INCONSISTENT)$/,
          });
      }),
    );
  });

  it('refuses ranges that do not exist', async () => {
    await assert.rejects(inclusionProof(5, 5, read), { code: 'ERR_AUDIT_RANGE' });
    await assert.rejects(inclusionProof(0, 0, read), { code: 'ERR_AUDIT_RANGE' });
    await assert.rejects(inclusionProof(-1, 5, read), { code: 'ERR_AUDIT_RANGE' });
    await assert.rejects(inclusionProof(1.5, 5, read), { code: 'ERR_AUDIT_RANGE' });
    await assert.rejects(inclusionProof(0, 2 ** 53, read), { code: 'ERR_AUDIT_RANGE' });
    await assert.rejects(consistencyProof(6, 5, read), { code: 'ERR_AUDIT_RANGE' });
    await assert.rejects(consistencyProof(Number.NaN, 5, read), { code: 'ERR_AUDIT_RANGE' });
    const r = ROOTS[4] as Uint8Array;
    assert.throws(() => verifyInclusion(LEAVES[0] as Uint8Array, 0, 0, [], r), { code: 'ERR_AUDIT_RANGE' });
    assert.throws(() => verifyConsistency(5, 4, [], r, r), { code: 'ERR_AUDIT_RANGE' });
    assert.throws(() => verifyConsistency(0, 4, [r], r, r), { code: 'ERR_AUDIT_PROOF_INVALID' });
    assert.throws(() => verifyConsistency(3, 4, [], r, r), { code: 'ERR_AUDIT_PROOF_INVALID' });
    assert.throws(() => verifyInclusion(LEAVES[0] as Uint8Array, 0, 2, [new Uint8Array(31)], r), { code: 'ERR_AUDIT_PROOF_INVALID' });
    assert.throws(
      () =>
        verifyInclusion(
          LEAVES[0] as Uint8Array,
          0,
          2,
          Array.from({ length: 200 }, () => r),
          r,
        ),
      { code: 'ERR_AUDIT_PROOF_INVALID' },
    );
  });

  it('the compact range nodes of every size give its root', async () => {
    for (let size = 0; size <= 64; size++) {
      const nodes = compactRangeNodes(size);
      const range = new CompactRange(size, await read(nodes));
      assert.equal(hex(range.root()), hex(ROOTS[size] as Uint8Array), `size ${size}`);
    }
    assert.equal(compactRangeNodes(2 ** 53 - 1).length, 53);
    assert.throws(() => compactRangeNodes(-1), { code: 'ERR_AUDIT_RANGE' });
  });

  it('assembleProof refuses a hash list that does not fit the plan', () => {
    const plan = inclusionPlan(2, 7);
    assert.throws(() => assembleProof(plan, []), { code: 'ERR_AUDIT_PROOF_INVALID' });
    assert.throws(
      () =>
        assembleProof(
          plan,
          plan.nodes.map(() => new Uint8Array(8)),
        ),
      { code: 'ERR_AUDIT_PROOF_INVALID' },
    );
  });
});

describe('proofs of huge trees', () => {
  it('a leaf of a 10,000,000-leaf tree needs O(log n) perfect-node reads, and its proof verifies', async () => {
    const size = 10_000_000;
    for (const index of [0, 1, 4_999_999, 9_999_998, 9_999_999, 8_388_607, 8_388_608]) {
      const tree = new SyntheticTree(size, [index, 17, 9_000_001]);
      const counter = { reads: 0 };
      const proof = await inclusionProof(index, size, tree.reader(counter));
      assert.ok(counter.reads <= 2 * 24, `${counter.reads} reads`);
      verifyInclusion(tree.leaf(index), index, size, proof, tree.root());
      assert.throws(() => verifyInclusion(tree.leaf(index), index, size + 1, proof, tree.root(size + 1)), { code: 'ERR_AUDIT_PROOF_INVALID' });
      if (index > 0) assert.throws(() => verifyInclusion(tree.leaf(index), index - 1, size, proof, tree.root()), { code: 'ERR_AUDIT_PROOF_INVALID' });
    }
  });

  it('the plans of sizes near 2^53 stay small and name only nodes inside the tree', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }), fc.double({ min: 0, max: 1, noNaN: true }), (size, f) => {
        const index = Math.min(size - 1, Math.floor(f * size));
        const plan = inclusionPlan(index, size);
        assert.ok(plan.nodes.length <= 2 * 54);
        for (const n of plan.nodes) assert.ok((n.index + 1) * 2 ** n.level <= size, `${n.level}/${n.index} in ${size}`);
        const c = consistencyPlan(index, size);
        assert.ok(c.nodes.length <= 2 * 54);
        for (const n of c.nodes) assert.ok((n.index + 1) * 2 ** n.level <= size, `${n.level}/${n.index} in ${size}`);
      }),
    );
  });

  it('inclusion and consistency proofs of synthetic trees up to 2^53 verify (property)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }),
        fc.double({ min: 0, max: 1, noNaN: true }),
        fc.double({ min: 0, max: 1, noNaN: true }),
        async (size, f, g) => {
          const index = Math.min(size - 1, Math.floor(f * size));
          const from = Math.min(size, Math.floor(g * size));
          const tree = new SyntheticTree(size, [index, from, Math.max(0, from - 1)]);
          const proof = await inclusionProof(index, size, tree.reader());
          verifyInclusion(tree.leaf(index), index, size, proof, tree.root());
          const c = await consistencyProof(
            from,
            size,
            batchReader((l, i) => tree.node(l, i)),
          );
          verifyConsistency(from, size, c, tree.root(from), tree.root());
        },
      ),
      { numRuns: 200 },
    );
  });
});
