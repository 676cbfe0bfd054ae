import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { AuditPageWriter, MAX_AUDIT_PAGE_BYTES, decodeAuditPage, encodeAuditPage, type AuditPage } from './index.ts';
import { hex } from './testing.ts';

const utf8 = (s: string): Uint8Array => new TextEncoder().encode(s);
const hash = (n: number): Uint8Array => new Uint8Array(32).fill(n);

const page: AuditPage = {
  size: 10,
  start: 4,
  end: 7,
  entries: [
    { index: 4, leafHash: hash(4), body: utf8('{"kind":"entry.create"}') },
    { index: 6, leafHash: hash(6), body: utf8('') },
  ],
};

const plain = (p: AuditPage) => ({ ...p, entries: p.entries.map((e) => ({ index: e.index, leafHash: hex(e.leafHash), body: hex(e.body) })) });

/** Page bytes with the u32 at `at` set to `v`. */
function withU32(data: Uint8Array, at: number, v: number): Uint8Array {
  const out = data.slice();
  new DataView(out.buffer).setUint32(at, v);
  return out;
}

describe('compact pages of audit entries', () => {
  it('decode to what was encoded, gaps in the indexes kept for the verifier to judge', () => {
    const data = encodeAuditPage(page);
    assert.equal(data.length, 32 + 2 * 44 + page.entries[0]!.body.length);
    assert.deepEqual(plain(decodeAuditPage(data, 3)), plain(page));
    fc.assert(
      fc.property(
        fc.nat({ max: 2 ** 53 - 100 }),
        fc.array(fc.tuple(fc.uint8Array({ minLength: 32, maxLength: 32 }), fc.string({ unit: 'grapheme', maxLength: 300 })), { maxLength: 20 }),
        (start, rows) => {
          const p: AuditPage = {
            size: start + rows.length + 3,
            start,
            end: start + rows.length,
            entries: rows.map(([h, b], j) => ({ index: start + j, leafHash: h, body: utf8(b) })),
          };
          assert.deepEqual(plain(decodeAuditPage(encodeAuditPage(p), rows.length)), plain(p));
        },
      ),
    );
  });

  it('refuse truncated pages, wrong lengths, trailing bytes, bad ranges and oversized pages with ERR_AUDIT_PAGE_MALFORMED', () => {
    const data = encodeAuditPage(page);
    const bad = (d: Uint8Array, why: RegExp, max = 3): void => assert.throws(() => decodeAuditPage(d, max), { code: 'ERR_AUDIT_PAGE_MALFORMED', message: why });
    for (let n = 0; n < data.length; n++) bad(data.subarray(0, n), /at least|ends inside/);
    bad(Buffer.concat([data, new Uint8Array(1)]), /1 bytes after its last entry/);
    bad(withU32(data, 32 + 40, 1000), /ends inside the body of entry 4 \(1000 bytes said/);
    bad(withU32(data, 32 + 40, 0), /bytes after its last entry|ends inside|past 2\^53-1/);
    bad(withU32(data, 32 + 40, 2 ** 32 - 1), /a body over/);
    bad(withU32(data, 28, 3), /ends inside|at least/);
    bad(withU32(data, 28, 4), /holds 4 entries of the 3/);
    bad(withU32(data, 28, 2), /more than the 1 asked for/, 1);
    bad(withU32(data, 28, 2 ** 32 - 1), /holds 4294967295 entries/);
    bad(withU32(data, 4, 0x200000), /a size past 2\^53-1/);
    bad(withU32(data, 32, 0xffffffff), /an index past 2\^53-1/);
    bad(withU32(data, 24, 0), /covers \[4, 0\) of a tree of 10/);
    bad(withU32(data, 0, 0x57414502), /format 2, not 1/);
    bad(utf8(`${JSON.stringify(plain(page))}                                `), /starts with "WAE"/);
    bad(new Uint8Array(MAX_AUDIT_PAGE_BYTES + 1), /at most/);
    // Any bytes at all: an answer or ERR_AUDIT_PAGE_MALFORMED, never another exception.
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 400 }), fc.nat({ max: data.length }), (noise, at) => {
        const d = Buffer.concat([data.subarray(0, at), noise]);
        try {
          decodeAuditPage(d, 3);
        } catch (err) {
          assert.equal((err as { code?: string }).code, 'ERR_AUDIT_PAGE_MALFORMED');
        }
      }),
    );
  });

  it('write text bodies as their UTF-8 bytes, growing from any capacity', () => {
    fc.assert(
      fc.property(fc.array(fc.string({ unit: 'grapheme', maxLength: 200 }), { maxLength: 12 }), fc.nat({ max: 64 }), (bodies, capacity) => {
        const w = new AuditPageWriter(bodies.length, 0, bodies.length, capacity);
        for (const [j, b] of bodies.entries()) w.add(j, hash(j), b);
        const p = decodeAuditPage(w.finish(), bodies.length);
        assert.deepEqual(
          p.entries.map((e) => Buffer.from(e.body).toString('utf8')),
          bodies,
        );
      }),
    );
    const w = new AuditPageWriter(1, 0, 1);
    w.add(0, hash(0), 'a');
    assert.throws(() => w.add(1, hash(1), 'b'), { code: 'ERR_AUDIT_PAGE_MALFORMED', message: /more than the 1 entries/ });
  });

  it('refuse to encode a page no decoder would take', () => {
    assert.throws(() => encodeAuditPage({ ...page, end: 11 }), { code: 'ERR_AUDIT_PAGE_MALFORMED' });
    assert.throws(() => encodeAuditPage({ ...page, end: 5 }), { code: 'ERR_AUDIT_PAGE_MALFORMED' });
    assert.throws(() => encodeAuditPage({ ...page, entries: [{ index: 4, leafHash: hash(1).subarray(1), body: utf8('') }] }), {
      code: 'ERR_AUDIT_PAGE_MALFORMED',
    });
  });
});
