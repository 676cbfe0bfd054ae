/**
 * The compact page of audit entries: what `GET /v1/audit/entries` answers to
 * `Accept: application/x-writ-audit-entries` (JSON stays the default). One module for both sides:
 * the server encodes, `writ audit verify` decodes. Raw 32-byte hashes and length-prefixed bodies
 * instead of hex in JSON: no escaping on the server, no parse on the client, and a body is
 * hashed straight from the page's bytes. All integers are big endian.
 *
 *   page  = "WAE" 0x01 (format 1) || size u64 || start u64 || end u64 || count u32 || count x entry
 *   entry = index u64 || leaf hash (32 bytes) || body length u32 || body (UTF-8)
 *
 * `size` is the latest checkpoint's, `[start, end)` the range this page covers (`end`: where it
 * stopped); the entries are the stored rows of that range in order, each with its own index, so
 * a deleted row shows as a gap and a moved one as an index out of place.
 */
import { TransparencyError } from './errors.ts';
import { HASH_SIZE } from './merkle.ts';

export const AUDIT_PAGE_MEDIA_TYPE = 'application/x-writ-audit-entries';
const MAGIC = [0x57, 0x41, 0x45, 0x01];
const PAGE_HEADER = 4 + 8 + 8 + 8 + 4;
const ENTRY_HEADER = 8 + HASH_SIZE + 4;
/** The largest body an entry of a page may carry (its length field could say up to 4 GiB). */
export const MAX_AUDIT_BODY_BYTES = 16 * 1024 * 1024;
/** The largest page a decoder takes: a server stops a page well before (the server's own budget), and always sends at least one entry. */
export const MAX_AUDIT_PAGE_BYTES = 64 * 1024 * 1024;

export interface AuditPageEntry {
  readonly index: number;
  /** The leaf hash stored at append time (32 bytes). */
  readonly leafHash: Uint8Array;
  /** The exact bytes the leaf hashes (UTF-8 JSON). */
  readonly body: Uint8Array;
}

export interface AuditPage {
  readonly size: number;
  readonly start: number;
  readonly end: number;
  readonly entries: readonly AuditPageEntry[];
}

const malformed = (why: string): TransparencyError => new TransparencyError('ERR_AUDIT_PAGE_MALFORMED', `a page of audit entries ${why}`);

function putU64(view: DataView, at: number, n: number): void {
  view.setUint32(at, Math.floor(n / 2 ** 32));
  view.setUint32(at + 4, n % 2 ** 32);
}

function getU64(view: DataView, at: number, what: string): number {
  const hi = view.getUint32(at);
  if (hi > 0x1fffff) throw malformed(`has ${what} past 2^53-1`);
  return hi * 2 ** 32 + view.getUint32(at + 4);
}

/**
 * Writes a page entry by entry into one growing buffer: bodies as the store keeps them (text,
 * UTF-8 encoded straight into the page) or as bytes. Throws ERR_AUDIT_PAGE_MALFORMED for what no
 * decoder would take (a bad range or hash, a body over MAX_AUDIT_BODY_BYTES).
 *
 * @example
 *   const w = new AuditPageWriter(size, start, end);
 *   for (const row of rows) w.add(row.index, hashBytes, row.body);
 *   const bytes = w.finish();
 */
export class AuditPageWriter {
  readonly #limit: number;
  readonly #encoder = new TextEncoder();
  #buf: Uint8Array;
  #view: DataView;
  #at = PAGE_HEADER;
  #count = 0;

  constructor(size: number, start: number, end: number, capacity = 1024 * 1024) {
    for (const n of [size, start, end]) if (!Number.isSafeInteger(n) || n < 0) throw malformed('needs sizes from 0 to 2^53-1');
    if (!(start <= end && end <= size)) throw malformed(`cannot cover [${start}, ${end}) of ${size}`);
    this.#limit = end - start;
    this.#buf = new Uint8Array(Math.max(PAGE_HEADER, capacity));
    this.#view = new DataView(this.#buf.buffer);
    this.#buf.set(MAGIC, 0);
    putU64(this.#view, 4, size);
    putU64(this.#view, 12, start);
    putU64(this.#view, 20, end);
  }

  add(index: number, leafHash: Uint8Array, body: Uint8Array | string): void {
    if (this.#count >= this.#limit) throw malformed(`cannot hold more than the ${this.#limit} entries of its range`);
    if (!Number.isSafeInteger(index) || index < 0) throw malformed('needs entry indexes from 0 to 2^53-1');
    if (leafHash.length !== HASH_SIZE) throw malformed(`needs ${HASH_SIZE}-byte leaf hashes`);
    const text = typeof body === 'string';
    const room = Math.min(text ? body.length * 3 : body.length, MAX_AUDIT_BODY_BYTES + 4);
    const need = this.#at + ENTRY_HEADER + room;
    if (need > this.#buf.length) {
      const grown = new Uint8Array(Math.max(need, this.#buf.length * 2));
      grown.set(this.#buf.subarray(0, this.#at));
      this.#buf = grown;
      this.#view = new DataView(grown.buffer);
    }
    const at = this.#at;
    const from = at + ENTRY_HEADER;
    let length: number;
    if (text) {
      const r = this.#encoder.encodeInto(body, this.#buf.subarray(from, from + room));
      if (r.read < body.length) throw malformed(`cannot hold a body over ${MAX_AUDIT_BODY_BYTES} bytes (entry ${index})`);
      length = r.written;
    } else {
      this.#buf.set(body, from);
      length = body.length;
    }
    if (length > MAX_AUDIT_BODY_BYTES) throw malformed(`cannot hold a body over ${MAX_AUDIT_BODY_BYTES} bytes (entry ${index})`);
    putU64(this.#view, at, index);
    this.#buf.set(leafHash, at + 8);
    this.#view.setUint32(at + 8 + HASH_SIZE, length);
    this.#at = from + length;
    this.#count++;
  }

  /** The page's bytes (a view of the writer's buffer). */
  finish(): Uint8Array {
    this.#view.setUint32(28, this.#count);
    return this.#buf.subarray(0, this.#at);
  }
}

/** A whole page's bytes (AuditPageWriter over its entries). */
export function encodeAuditPage(page: AuditPage): Uint8Array {
  let bytes = 0;
  for (const e of page.entries) bytes += ENTRY_HEADER + e.body.length;
  const w = new AuditPageWriter(page.size, page.start, page.end, PAGE_HEADER + bytes);
  for (const e of page.entries) w.add(e.index, e.leafHash, e.body);
  return w.finish();
}

/**
 * The page in `data`, its hashes and bodies views into `data` (no copy). Everything is checked
 * before it is used: the header, `start <= end <= size`, at most `maxEntries` and at most
 * `end - start` entries, each entry's length against what is left, no bytes after the last
 * entry. Throws ERR_AUDIT_PAGE_MALFORMED saying what is wrong; the indexes themselves (gaps, order)
 * are the verifier's to judge.
 */
export function decodeAuditPage(data: Uint8Array, maxEntries: number): AuditPage {
  if (!(data instanceof Uint8Array)) throw malformed('is bytes');
  if (data.length > MAX_AUDIT_PAGE_BYTES) throw malformed(`is at most ${MAX_AUDIT_PAGE_BYTES} bytes, this one ${data.length}`);
  if (data.length < PAGE_HEADER) throw malformed(`is at least ${PAGE_HEADER} bytes, this one ${data.length}`);
  if (data[0] !== MAGIC[0] || data[1] !== MAGIC[1] || data[2] !== MAGIC[2]) throw malformed('starts with "WAE"');
  if (data[3] !== MAGIC[3]) throw malformed(`is in format ${data[3]}, not ${MAGIC[3]}`);
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const size = getU64(view, 4, 'a size');
  const start = getU64(view, 12, 'a start');
  const end = getU64(view, 20, 'an end');
  const count = view.getUint32(28);
  if (!(start <= end && end <= size)) throw malformed(`covers [${start}, ${end}) of a tree of ${size}`);
  if (count > end - start) throw malformed(`says it holds ${count} entries of the ${end - start} in [${start}, ${end})`);
  if (count > maxEntries) throw malformed(`says it holds ${count} entries, more than the ${maxEntries} asked for`);
  if (count * ENTRY_HEADER > data.length - PAGE_HEADER)
    throw malformed(`of ${count} entries is at least ${PAGE_HEADER + count * ENTRY_HEADER} bytes, this one ${data.length}`);
  const entries: AuditPageEntry[] = new Array(count);
  let at = PAGE_HEADER;
  for (let j = 0; j < count; j++) {
    if (data.length - at < ENTRY_HEADER) throw malformed(`ends inside entry ${j} of ${count}`);
    const index = getU64(view, at, 'an index');
    const length = view.getUint32(at + 8 + HASH_SIZE);
    const body = at + ENTRY_HEADER;
    if (length > MAX_AUDIT_BODY_BYTES) throw malformed(`has a body over ${MAX_AUDIT_BODY_BYTES} bytes (entry ${index}: ${length})`);
    if (length > data.length - body) throw malformed(`ends inside the body of entry ${index} (${length} bytes said, ${data.length - body} left)`);
    entries[j] = { index, leafHash: data.subarray(at + 8, at + 8 + HASH_SIZE), body: data.subarray(body, body + length) };
    at = body + length;
  }
  if (at !== data.length) throw malformed(`has ${data.length - at} bytes after its last entry`);
  return { size, start, end, entries };
}
