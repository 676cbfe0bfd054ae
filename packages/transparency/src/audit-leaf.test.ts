import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { AuditLeafHasher, CompactRange, decodeAuditLeaf, encodeAuditLeaf, leafHash, rootOf, verifyEntries } from './index.ts';
import { hex } from './testing.ts';

/** A log of `n` entries as a store would keep them: index and encoded leaf. */
function makeLog(n: number): { index: number; body: Uint8Array }[] {
  const out: { index: number; body: Uint8Array }[] = [];
  let prev: Uint8Array | null = null;
  for (let i = 0; i < n; i++) {
    const body = encodeAuditLeaf(i, prev, new TextEncoder().encode(JSON.stringify({ kind: 'entry.create', n: i })));
    out.push({ index: i, body });
    prev = leafHash(body);
  }
  return out;
}

const headOf = (log: readonly { body: Uint8Array }[], size: number) => ({ size, rootHash: rootOf(log.slice(0, size).map((e) => leafHash(e.body))) });

describe('audit leaves', () => {
  it('encode the index and the previous leaf hash before the body, and decode back', () => {
    const prev = leafHash(new Uint8Array([1]));
    const body = new TextEncoder().encode('{"a":1}');
    const leaf = encodeAuditLeaf(7, prev, body);
    assert.equal(leaf.length, 1 + 8 + 32 + body.length);
    assert.equal(leaf[0], 1);
    assert.equal(hex(leaf.subarray(1, 9)), '0000000000000007');
    assert.deepEqual(decodeAuditLeaf(leaf), { index: 7, prevLeafHash: prev, body });
    assert.deepEqual(decodeAuditLeaf(encodeAuditLeaf(0, null, body)).prevLeafHash, null);
    assert.equal(decodeAuditLeaf(encodeAuditLeaf(2 ** 53 - 1, prev, body)).index, 2 ** 53 - 1);
  });

  it('hash through AuditLeafHasher exactly as leafHash of the encoded leaf, with one buffer grown as bodies grow', () => {
    const hasher = new AuditLeafHasher();
    fc.assert(
      fc.property(fc.nat({ max: 2 ** 53 - 1 }), fc.uint8Array({ minLength: 32, maxLength: 32 }), fc.uint8Array({ maxLength: 3000 }), (index, prev, body) => {
        const p = index === 0 ? null : prev;
        assert.equal(hex(hasher.hash(index, p, body)), hex(leafHash(encodeAuditLeaf(index, p, body))));
      }),
    );
    assert.throws(() => hasher.hash(0, leafHash(new Uint8Array()), new Uint8Array()), { code: 'ERR_AUDIT_RANGE' });
    assert.throws(() => hasher.hash(3, new Uint8Array(31), new Uint8Array()), { code: 'ERR_AUDIT_ENTRY_MALFORMED' });
  });

  it('refuse a wrong first link, short or unknown leaves', () => {
    const prev = leafHash(new Uint8Array([1]));
    assert.throws(() => encodeAuditLeaf(0, prev, new Uint8Array()), { code: 'ERR_AUDIT_RANGE' });
    assert.throws(() => encodeAuditLeaf(1, null, new Uint8Array()), { code: 'ERR_AUDIT_RANGE' });
    assert.throws(() => encodeAuditLeaf(-1, prev, new Uint8Array()), { code: 'ERR_AUDIT_RANGE' });
    assert.throws(() => encodeAuditLeaf(1, prev.subarray(1), new Uint8Array()), { code: 'ERR_AUDIT_ENTRY_MALFORMED' });
    assert.throws(() => decodeAuditLeaf(new Uint8Array(40)), { code: 'ERR_AUDIT_ENTRY_MALFORMED' });
    const v2 = encodeAuditLeaf(1, prev, new Uint8Array());
    v2[0] = 2;
    assert.throws(() => decodeAuditLeaf(v2), { code: 'ERR_AUDIT_ENTRY_MALFORMED' });
    const huge = encodeAuditLeaf(1, prev, new Uint8Array());
    huge.fill(0xff, 1, 9);
    assert.throws(() => decodeAuditLeaf(huge), { code: 'ERR_AUDIT_ENTRY_MALFORMED' });
    const zeroWithLink = encodeAuditLeaf(0, null, new Uint8Array());
    zeroWithLink[20] = 1;
    assert.throws(() => decodeAuditLeaf(zeroWithLink), { code: 'ERR_AUDIT_ENTRY_MALFORMED' });
  });
});

describe('verifyEntries', () => {
  const log = makeLog(40);
  const full = headOf(log, 40);

  it('recomputes the root of an intact log, in one pass or page by page', () => {
    const r = verifyEntries(log, { trusted: [headOf(log, 10), full] });
    assert.equal(r.firstBadIndex, undefined, r.reason);
    assert.equal(r.size, 40);
    assert.deepEqual(r.root, full.rootHash);
    assert.deepEqual(verifyEntries([]), { size: 0, root: rootOf([]) });
    // Pages: continue from the compact range and the last leaf hash of the page before.
    const first = verifyEntries(log.slice(0, 17));
    const range = new CompactRange();
    for (const e of log.slice(0, 17)) range.append(leafHash(e.body));
    const rest = verifyEntries(log.slice(17), { range, prevLeafHash: first.lastLeafHash as Uint8Array, trusted: [full] });
    assert.equal(rest.firstBadIndex, undefined, rest.reason);
    assert.deepEqual(rest.root, full.rootHash);
    assert.throws(() => verifyEntries(log.slice(17), { range }), { code: 'ERR_AUDIT_RANGE' });
  });

  it('finds the first bad index of an edit, a deletion, an insertion, a reordering (property)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 39 }), fc.constantFrom('edit', 'delete', 'insert', 'swap', 'renumber', 'truncate'), (k, how) => {
        const rows = log.map((e) => ({ ...e }));
        let want = k;
        if (how === 'swap' && k === 39) return;
        switch (how) {
          case 'edit': {
            const b = new Uint8Array(rows[k]?.body as Uint8Array);
            b[b.length - 2] = (b[b.length - 2] as number) ^ 1;
            rows[k]!.body = b;
            break;
          }
          case 'delete':
            rows.splice(k, 1);
            break;
          case 'insert':
            rows.splice(k, 0, { index: k, body: encodeAuditLeaf(k, k === 0 ? null : leafHash(log[k - 1]!.body), new TextEncoder().encode('{"forged":true}')) });
            break;
          case 'swap': {
            if (k === 39) return;
            const a = rows[k]!.body;
            rows[k]!.body = rows[k + 1]!.body;
            rows[k + 1]!.body = a;
            break;
          }
          case 'renumber':
            // Delete entry k and renumber the rest to hide the gap.
            rows.splice(k, 1);
            for (const [i, r] of rows.entries()) r.index = i;
            break;
          case 'truncate':
            rows.length = k;
            break;
        }
        // Heads as a verifier that saved a checkpoint now and then would hold them.
        const r = verifyEntries(rows, { trusted: [10, 20, 30, 40].map((n) => headOf(log, n)) });
        // The last entry has no successor to vouch for it: the last matching head is where it is found.
        if (how === 'edit' && k === 39) want = 30;
        assert.equal(r.firstBadIndex, want, `${how} ${k}: ${r.reason}`);
        assert.equal(r.size, want);
        assert.deepEqual(r.root, headOf(log, want).rootHash);
        assert.ok(r.reason);
      }),
      { numRuns: 300 },
    );
  });

  it('an edit of the last entry, or a rewritten tail, is caught by a trusted head', () => {
    const rows = log.map((e) => ({ ...e }));
    const b = new Uint8Array(rows[39]?.body as Uint8Array);
    b[b.length - 2] = (b[b.length - 2] as number) ^ 1;
    rows[39]!.body = b;
    assert.equal(verifyEntries(rows).firstBadIndex, undefined, 'the chain alone cannot see it');
    const r = verifyEntries(rows, { trusted: [headOf(log, 30), full] });
    assert.equal(r.firstBadIndex, 30);
    assert.equal(r.size, 30);
    assert.match(r.reason ?? '', /trusted root/);
    // A tail rewritten from entry 35 with a consistent chain: the checkpoint of 40 refuses it.
    const forged = log.slice(0, 35).map((e) => ({ ...e }));
    let prev = leafHash(log[34]!.body);
    for (let i = 35; i < 40; i++) {
      const body = encodeAuditLeaf(i, prev, new TextEncoder().encode(`{"forged":${i}}`));
      forged.push({ index: i, body });
      prev = leafHash(body);
    }
    const f = verifyEntries(forged, { trusted: [headOf(log, 20), full] });
    assert.equal(f.firstBadIndex, 20);
  });

  it('a body that does not decode, a wrong self-index and a cap on entries are reported, not thrown', () => {
    const rows = log.slice(0, 5).map((e) => ({ ...e }));
    rows[3]!.body = new Uint8Array(3);
    assert.equal(verifyEntries(rows).firstBadIndex, 3);
    const moved = log.slice(0, 5).map((e) => ({ ...e }));
    moved[2]!.body = encodeAuditLeaf(9, leafHash(log[1]!.body), new Uint8Array());
    assert.match(verifyEntries(moved).reason ?? '', /says it is entry 9/);
    assert.equal(verifyEntries(log, { maxEntries: 10 }).firstBadIndex, 10);
  });
});
