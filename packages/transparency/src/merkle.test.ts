import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { CompactRange, emptyRoot, leafHash, nodeHash, rootOf } from './index.ts';
import { RFC6962_LEAVES, RFC6962_ROOTS, hex, refRoot } from './testing.ts';

describe('RFC 6962 hashing', () => {
  it('the empty tree is SHA-256 of nothing, a one-leaf tree its leaf hash', () => {
    assert.equal(hex(rootOf([])), 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
    assert.equal(hex(emptyRoot()), hex(rootOf([])));
    assert.equal(hex(leafHash(new Uint8Array(0))), RFC6962_ROOTS[0]);
  });

  it('every prefix of the RFC 6962 test tree has its published root', () => {
    const leaves = RFC6962_LEAVES.map(leafHash);
    for (let n = 1; n <= 8; n++) assert.equal(hex(rootOf(leaves.slice(0, n))), RFC6962_ROOTS[n - 1], `size ${n}`);
  });

  it('node hashes use the 0x01 prefix', () => {
    const [a, b] = RFC6962_LEAVES.map(leafHash) as [Uint8Array, Uint8Array];
    assert.equal(hex(nodeHash(a, b)), RFC6962_ROOTS[1]);
  });
});

describe('CompactRange', () => {
  it('its root is the RFC 6962 root at every size, and it reports every perfect node once', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 8 }), { maxLength: 80 }), (datas) => {
        const leaves = datas.map(leafHash);
        const r = new CompactRange();
        const nodes = new Map<string, string>();
        for (const [i, h] of leaves.entries()) {
          r.append(h, (level, index, hash) => {
            const key = `${level}/${index}`;
            assert.ok(!nodes.has(key), `${key} reported twice`);
            nodes.set(key, hex(hash));
          });
          assert.equal(r.size, i + 1);
          assert.equal(hex(r.root()), hex(refRoot(leaves.slice(0, i + 1))));
        }
        // Every reported node is the root of its perfect subtree.
        for (const [key, h] of nodes) {
          const [level, index] = key.split('/').map(Number) as [number, number];
          assert.equal(h, hex(refRoot(leaves.slice(index * 2 ** level, (index + 1) * 2 ** level))), key);
        }
        // The hashes are a range a store can resume from.
        const again = new CompactRange(r.size, r.hashes);
        assert.equal(hex(again.root()), hex(r.root()));
      }),
    );
  });

  it('refuses a size that does not match its hashes, and sizes that are not integers', () => {
    const h = leafHash(new Uint8Array([1]));
    assert.throws(() => new CompactRange(3, [h]), { code: 'ERR_AUDIT_RANGE' });
    assert.throws(() => new CompactRange(1.5, [h]), { code: 'ERR_AUDIT_RANGE' });
    assert.throws(() => new CompactRange(-1, []), { code: 'ERR_AUDIT_RANGE' });
    assert.throws(() => new CompactRange(2 ** 53, []), { code: 'ERR_AUDIT_RANGE' });
    assert.throws(() => new CompactRange(1, [new Uint8Array(31)]), { code: 'ERR_AUDIT_PROOF_INVALID' });
    assert.throws(() => new CompactRange().append(new Uint8Array(3)), { code: 'ERR_AUDIT_PROOF_INVALID' });
  });

  it('resumes at a size near 2^53 (compact ranges of huge trees are small)', () => {
    const size = 2 ** 53 - 2;
    const h = leafHash(new Uint8Array([7]));
    const hashes = Array.from({ length: 52 }, () => h);
    const r = new CompactRange(size, hashes);
    const seen: number[] = [];
    r.append(h, (level) => seen.push(level));
    assert.equal(r.size, 2 ** 53 - 1);
    assert.equal(r.hashes.length, 53);
    assert.deepEqual(seen, [0]);
  });
});
