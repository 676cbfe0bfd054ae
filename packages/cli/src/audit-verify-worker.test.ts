import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { encodeAuditLeaf, encodeAuditPage, leafHash } from '@writ/transparency';
import { hashPage } from './audit-verify-worker.ts';

/** A compact page of entries [start, start + n) of a chained log, and their true leaf hashes. */
function pageOf(start: number, n: number, size: number): { data: Uint8Array; hashes: Uint8Array[] } {
  const hashes: Uint8Array[] = [];
  let prev: Uint8Array | null = start === 0 ? null : new Uint8Array(32).fill(7);
  const entries = [];
  for (let i = start; i < start + n; i++) {
    const body = Buffer.from(JSON.stringify({ kind: 'entry.create', subject: `spiffe://td/${i}` }));
    const h = leafHash(encodeAuditLeaf(i, prev, body));
    entries.push({ index: i, leafHash: h, body });
    hashes.push(h);
    prev = h;
  }
  return { data: encodeAuditPage({ size, start, end: start + n, entries }), hashes };
}

describe('audit verify worker', () => {
  it('hashes every entry of a page but the first as the one leaf encoding does, and finds no fault in a true page', () => {
    const { data, hashes } = pageOf(5, 4, 20);
    const r = hashPage({ id: 1, data, start: 5, end: 9 });
    assert.ok(!('error' in r));
    assert.deepEqual([r.size, r.end, r.count, r.badIndex, r.badHash], [20, 9, 4, -1, -1]);
    for (let j = 1; j < 4; j++) assert.deepEqual(r.hashes.subarray(j * 32, j * 32 + 32), hashes[j]);
    assert.deepEqual(r.stored.subarray(0, 32), hashes[0]);
  });

  it('names the first entry whose stored hash is not its own, and the first index out of place', () => {
    const { data } = pageOf(0, 4, 4);
    const edited = Buffer.from(data);
    // The body of entry 2 (the page header is 32 bytes, an entry header 44): one byte changed.
    const second = 32 + 44 + (edited.readUInt32BE(32 + 40) as number);
    const third = second + 44 + (edited.readUInt32BE(second + 40) as number);
    edited[third + 44 + 3] = (edited[third + 44 + 3] as number) ^ 1;
    const r = hashPage({ id: 2, data: edited, start: 0, end: 4 });
    assert.ok(!('error' in r));
    assert.equal(r.badHash, 2);
    const moved = Buffer.from(data);
    moved.writeUInt32BE(9, third + 4);
    const m = hashPage({ id: 3, data: moved, start: 0, end: 4 });
    assert.ok(!('error' in m));
    assert.deepEqual([m.badIndex, m.badIndexIs], [2, 9]);
  });

  it('answers an error, never a verdict, for a malformed page or another range than asked', () => {
    const { data } = pageOf(0, 3, 3);
    for (const [bytes, start, end, why] of [
      [data.subarray(0, data.length - 1), 0, 3, /malformed: a page of audit entries ends inside the body of entry 2/],
      [Buffer.concat([data, Buffer.alloc(2)]), 0, 3, /malformed: a page of audit entries has 2 bytes after its last entry/],
      [data, 0, 2, /malformed: a page of audit entries says it holds 3 entries, more than the 2 asked for/],
      [pageOf(1, 2, 3).data, 0, 3, /answered the entries \[1, 3\) for \[0, 3\)/],
      [Buffer.from('{"size":3,"start":0,"end":3,"entries":[]}'), 0, 3, /malformed: a page of audit entries (starts with "WAE"|is at least)/],
    ] as const) {
      const r = hashPage({ id: 4, data: bytes, start, end });
      assert.ok('error' in r, String(why));
      assert.match(r.error, why);
    }
  });
});
