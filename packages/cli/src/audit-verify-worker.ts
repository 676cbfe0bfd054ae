/**
 * The worker thread of `writ audit verify` (packages/cli/src/audit.ts): parses one page of
 * `GET /v1/audit/entries` and recomputes the leaf hash of each of its entries but the first,
 * chained on the leaf hash the server stored for the entry before (`leafHash`), not the one
 * recomputed. That breaks the chain's order dependency: entry j's hash needs nothing from the
 * other pages, so pages hash in parallel. It gives the same verdict as hashing in order: up to
 * the first entry whose recomputed hash differs from its stored one, the stored hashes are the
 * recomputed ones, so each entry is hashed with the same predecessor either way. The first entry
 * of a page is hashed by the caller, with the page before's last recomputed hash.
 *
 * The source is a string run with `new Worker(..., { eval: true })`, so the bundled build in
 * dist/ and the TypeScript sources start the same code without a separate file to locate.
 *
 * Message in: { id, text (the answer's body), start (the index the page's first entry must have) }.
 * Message out: { id, error } when the text is not a page, else { id, size, end, count, first
 * (the first entry's body, UTF-8), stored (count x 32 bytes, the stored hashes; a stored hash that
 * is not 64 hex digits is zeros and marked in badStored), hashes (count x 32, recomputed; the first
 * slot empty), badIndex / badIndexIs (the first entry whose index is not start + j, and its
 * index), badHash (the first j >= 1 whose recomputed hash is not the stored one) }.
 */
export const VERIFY_WORKER_SOURCE = `
'use strict';
const { parentPort } = require('node:worker_threads');
const { hash } = require('node:crypto');
let buf = Buffer.alloc(4096);
const HEX = /^[0-9a-fA-F]{64}$/;
parentPort.on('message', (m) => {
  let p;
  try {
    p = JSON.parse(m.text);
  } catch {
    p = undefined;
  }
  if (!p || typeof p !== 'object' || !Array.isArray(p.entries) || !Number.isSafeInteger(p.end) || !Number.isSafeInteger(p.size)) {
    parentPort.postMessage({ id: m.id, error: 'the server answered a page of entries that is not one' });
    return;
  }
  const es = p.entries;
  const n = es.length;
  const stored = new Uint8Array(n * 32);
  const hashes = new Uint8Array(n * 32);
  const sb = Buffer.from(stored.buffer);
  let badIndex = -1;
  let badIndexIs = 0;
  let badHash = -1;
  let badStored = -1;
  let first;
  for (let j = 0; j < n; j++) {
    const e = es[j];
    const i = m.start + j;
    if (!e || typeof e !== 'object' || e.index !== i) {
      badIndex = j;
      badIndexIs = e && typeof e === 'object' && Number.isSafeInteger(e.index) ? e.index : -1;
      break;
    }
    const body = typeof e.body === 'string' ? e.body : String(e.body);
    if (typeof e.leafHash === 'string' && HEX.test(e.leafHash)) sb.write(e.leafHash, j * 32, 'hex');
    else if (badStored < 0) badStored = j;
    if (j === 0) {
      first = Buffer.from(body, 'utf8');
      continue;
    }
    const need = 42 + body.length * 3;
    if (buf.length < need) buf = Buffer.alloc(need * 2);
    buf[0] = 0;
    buf[1] = 1;
    buf.writeUInt32BE(Math.floor(i / 4294967296), 2);
    buf.writeUInt32BE(i % 4294967296, 6);
    buf.set(stored.subarray((j - 1) * 32, j * 32), 10);
    const len = buf.write(body, 42, 'utf8');
    const h = hash('sha256', buf.subarray(0, 42 + len), 'buffer');
    hashes.set(h, j * 32);
    if (badHash < 0 && !h.equals(sb.subarray(j * 32, j * 32 + 32))) badHash = j;
  }
  const out = { id: m.id, size: p.size, end: p.end, count: n, first, stored, hashes, badIndex, badIndexIs, badHash, badStored };
  parentPort.postMessage(out, [stored.buffer, hashes.buffer]);
});
`;
