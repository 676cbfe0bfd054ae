/**
 * Protocol Buffers encoding of the SPIFFE Workload API messages (standards/workloadapi.proto;
 * service `SpiffeWorkloadAPI`, no package). Hand-written: the messages are few and flat, and this
 * keeps the SDK free of code generation. Field numbers are the standard's.
 */

const WIRE_VARINT = 0;
const WIRE_I64 = 1;
const WIRE_LEN = 2;
const WIRE_I32 = 5;

export class ProtoError extends Error {
  override name = 'ProtoError';
}

// ------------------------------------------------------------------ writer

/** Encodes into one growing buffer: no allocation per field (decision logs encode thousands a second). */
export class Writer {
  #buf: Buffer;
  #pos = 0;

  constructor(sizeHint = 256) {
    this.#buf = Buffer.allocUnsafe(sizeHint);
  }

  #room(n: number): void {
    if (this.#pos + n <= this.#buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.#buf.length * 2, this.#pos + n));
    this.#buf.copy(next, 0, 0, this.#pos);
    this.#buf = next;
  }
  #varint(n: number): void {
    this.#room(10);
    while (n > 0x7f) {
      this.#buf[this.#pos++] = (n & 0x7f) | 0x80;
      n = Math.floor(n / 128);
    }
    this.#buf[this.#pos++] = n;
  }
  #tag(field: number, wire: number): void {
    this.#varint(field * 8 + wire);
  }
  bytes(field: number, v: Buffer | Uint8Array | undefined): this {
    if (!v || v.length === 0) return this; // proto3: defaults are not written
    return this.message(field, v);
  }
  string(field: number, v: string | undefined): this {
    if (!v) return this;
    const n = Buffer.byteLength(v, 'utf8');
    this.#tag(field, WIRE_LEN);
    this.#varint(n);
    this.#room(n);
    this.#pos += this.#buf.write(v, this.#pos, n, 'utf8');
    return this;
  }
  /** A length-delimited field that is always written (sub-messages, repeated/map entries). */
  message(field: number, v: Buffer | Uint8Array): this {
    this.#tag(field, WIRE_LEN);
    this.#varint(v.length);
    this.#room(v.length);
    this.#buf.set(v, this.#pos);
    this.#pos += v.length;
    return this;
  }
  bool(field: number, v: boolean): this {
    if (!v) return this;
    this.#tag(field, WIRE_VARINT);
    this.#varint(1);
    return this;
  }
  enumValue(field: number, v: number): this {
    this.#tag(field, WIRE_VARINT);
    this.#varint(v);
    return this;
  }
  double(field: number, v: number): this {
    this.#tag(field, WIRE_I64);
    this.#room(8);
    this.#buf.writeDoubleLE(v, this.#pos);
    this.#pos += 8;
    return this;
  }
  /** Starts over, keeping the buffer (a scratch writer for many small messages). */
  reset(): this {
    this.#pos = 0;
    return this;
  }
  /** The encoded bytes (a view, valid until the writer is written to again). */
  finish(): Buffer {
    return this.#buf.subarray(0, this.#pos);
  }
}

// ------------------------------------------------------------------ reader

export interface Field {
  readonly field: number;
  readonly wire: number;
  /** varint value (wire 0) */
  readonly int: number;
  /** length-delimited or fixed bytes */
  readonly data: Buffer;
}

/** Splits a message into its fields. Unknown fields are returned too (callers skip them). */
export function fields(buf: Buffer): Field[] {
  const out: Field[] = [];
  let p = 0;
  const varint = (): number => {
    let n = 0;
    let mul = 1;
    for (let i = 0; i < 10; i++) {
      if (p >= buf.length) throw new ProtoError('truncated varint');
      const b = buf[p++]!;
      n += (b & 0x7f) * mul;
      if ((b & 0x80) === 0) return n;
      mul *= 128;
    }
    throw new ProtoError('varint too long');
  };
  while (p < buf.length) {
    const key = varint();
    const field = Math.floor(key / 8);
    const wire = key & 7;
    if (field === 0) throw new ProtoError('field number 0');
    if (wire === WIRE_VARINT) out.push({ field, wire, int: varint(), data: Buffer.alloc(0) });
    else if (wire === WIRE_LEN) {
      const len = varint();
      if (p + len > buf.length) throw new ProtoError('length past the end');
      out.push({ field, wire, int: 0, data: buf.subarray(p, p + len) });
      p += len;
    } else if (wire === WIRE_I64 || wire === WIRE_I32) {
      const len = wire === WIRE_I64 ? 8 : 4;
      if (p + len > buf.length) throw new ProtoError('fixed field past the end');
      out.push({ field, wire, int: 0, data: buf.subarray(p, p + len) });
      p += len;
    } else throw new ProtoError(`unsupported wire type ${wire}`);
  }
  return out;
}

const str = (f: Field): string => f.data.toString('utf8');

function mapEntry(f: Field): [string, Buffer] {
  let k = '';
  let v: Buffer = Buffer.alloc(0);
  for (const e of fields(f.data)) {
    if (e.field === 1 && e.wire === WIRE_LEN) k = str(e);
    else if (e.field === 2 && e.wire === WIRE_LEN) v = e.data;
  }
  return [k, v];
}
const writeMap = (w: Writer, field: number, m: ReadonlyMap<string, Buffer>): void => {
  for (const [k, v] of m) w.message(field, new Writer().string(1, k).bytes(2, v).finish());
};

// ------------------------------------------------------------------ Workload API messages

export interface X509Svid {
  spiffeId: string;
  /** DER certificates concatenated, leaf first. */
  x509Svid: Buffer;
  /** PKCS#8 DER. */
  x509SvidKey: Buffer;
  /** DER certificates concatenated. */
  bundle: Buffer;
  hint: string;
}
export interface X509SvidResponse {
  svids: X509Svid[];
  crl: Buffer[];
  federatedBundles: Map<string, Buffer>;
}
export interface X509BundlesResponse {
  crl: Buffer[];
  bundles: Map<string, Buffer>;
}
export interface JwtSvidRequest {
  audience: string[];
  spiffeId: string;
}
export interface JwtSvid {
  spiffeId: string;
  svid: string;
  hint: string;
}
export interface JwtBundlesResponse {
  bundles: Map<string, Buffer>;
}
export interface ValidateJwtSvidRequest {
  audience: string;
  svid: string;
}
export interface ValidateJwtSvidResponse {
  spiffeId: string;
  claims: Record<string, unknown>;
}

export function encodeX509SvidResponse(m: X509SvidResponse): Buffer {
  const w = new Writer();
  for (const s of m.svids) {
    w.message(1, new Writer().string(1, s.spiffeId).bytes(2, s.x509Svid).bytes(3, s.x509SvidKey).bytes(4, s.bundle).string(5, s.hint).finish());
  }
  for (const c of m.crl) w.message(2, c);
  writeMap(w, 3, m.federatedBundles);
  return w.finish();
}

export function decodeX509SvidResponse(buf: Buffer): X509SvidResponse {
  const out: X509SvidResponse = { svids: [], crl: [], federatedBundles: new Map() };
  for (const f of fields(buf)) {
    if (f.wire !== WIRE_LEN) continue;
    if (f.field === 1) {
      const s: X509Svid = { spiffeId: '', x509Svid: Buffer.alloc(0), x509SvidKey: Buffer.alloc(0), bundle: Buffer.alloc(0), hint: '' };
      for (const g of fields(f.data)) {
        if (g.wire !== WIRE_LEN) continue;
        if (g.field === 1) s.spiffeId = str(g);
        else if (g.field === 2) s.x509Svid = g.data;
        else if (g.field === 3) s.x509SvidKey = g.data;
        else if (g.field === 4) s.bundle = g.data;
        else if (g.field === 5) s.hint = str(g);
      }
      out.svids.push(s);
    } else if (f.field === 2) out.crl.push(f.data);
    else if (f.field === 3) out.federatedBundles.set(...mapEntry(f));
  }
  return out;
}

export function encodeX509BundlesResponse(m: X509BundlesResponse): Buffer {
  const w = new Writer();
  for (const c of m.crl) w.message(1, c);
  writeMap(w, 2, m.bundles);
  return w.finish();
}
export function decodeX509BundlesResponse(buf: Buffer): X509BundlesResponse {
  const out: X509BundlesResponse = { crl: [], bundles: new Map() };
  for (const f of fields(buf)) {
    if (f.wire !== WIRE_LEN) continue;
    if (f.field === 1) out.crl.push(f.data);
    else if (f.field === 2) out.bundles.set(...mapEntry(f));
  }
  return out;
}

export function encodeJwtSvidRequest(m: JwtSvidRequest): Buffer {
  const w = new Writer();
  for (const a of m.audience) w.message(1, Buffer.from(a, 'utf8'));
  return w.string(2, m.spiffeId).finish();
}
export function decodeJwtSvidRequest(buf: Buffer): JwtSvidRequest {
  const out: JwtSvidRequest = { audience: [], spiffeId: '' };
  for (const f of fields(buf)) {
    if (f.wire !== WIRE_LEN) continue;
    if (f.field === 1) out.audience.push(str(f));
    else if (f.field === 2) out.spiffeId = str(f);
  }
  return out;
}

export function encodeJwtSvidResponse(svids: readonly JwtSvid[]): Buffer {
  const w = new Writer();
  for (const s of svids) w.message(1, new Writer().string(1, s.spiffeId).string(2, s.svid).string(3, s.hint).finish());
  return w.finish();
}
export function decodeJwtSvidResponse(buf: Buffer): JwtSvid[] {
  const out: JwtSvid[] = [];
  for (const f of fields(buf)) {
    if (f.field !== 1 || f.wire !== WIRE_LEN) continue;
    const s: JwtSvid = { spiffeId: '', svid: '', hint: '' };
    for (const g of fields(f.data)) {
      if (g.wire !== WIRE_LEN) continue;
      if (g.field === 1) s.spiffeId = str(g);
      else if (g.field === 2) s.svid = str(g);
      else if (g.field === 3) s.hint = str(g);
    }
    out.push(s);
  }
  return out;
}

export function encodeJwtBundlesResponse(m: JwtBundlesResponse): Buffer {
  const w = new Writer();
  writeMap(w, 1, m.bundles);
  return w.finish();
}
export function decodeJwtBundlesResponse(buf: Buffer): JwtBundlesResponse {
  const out: JwtBundlesResponse = { bundles: new Map() };
  for (const f of fields(buf)) if (f.field === 1 && f.wire === WIRE_LEN) out.bundles.set(...mapEntry(f));
  return out;
}

export function encodeValidateJwtSvidRequest(m: ValidateJwtSvidRequest): Buffer {
  return new Writer().string(1, m.audience).string(2, m.svid).finish();
}
export function decodeValidateJwtSvidRequest(buf: Buffer): ValidateJwtSvidRequest {
  const out: ValidateJwtSvidRequest = { audience: '', svid: '' };
  for (const f of fields(buf)) {
    if (f.wire !== WIRE_LEN) continue;
    if (f.field === 1) out.audience = str(f);
    else if (f.field === 2) out.svid = str(f);
  }
  return out;
}

// google.protobuf.Struct / Value / ListValue, for ValidateJWTSVIDResponse.claims
function encodeValue(v: unknown, depth = 0): Buffer {
  if (depth > 32) throw new ProtoError('claims nested too deep');
  const w = new Writer();
  if (v === null || v === undefined) w.enumValue(1, 0);
  else if (typeof v === 'number') w.double(2, v);
  else if (typeof v === 'string') w.message(3, Buffer.from(v, 'utf8'));
  else if (typeof v === 'boolean') {
    w.enumValue(4, v ? 1 : 0);
  } else if (Array.isArray(v)) {
    const l = new Writer();
    for (const x of v) l.message(1, encodeValue(x, depth + 1));
    w.message(6, l.finish());
  } else w.message(5, encodeStruct(v as Record<string, unknown>, depth + 1));
  return w.finish();
}
export function encodeStruct(o: Record<string, unknown>, depth = 0): Buffer {
  const w = new Writer();
  for (const [k, v] of Object.entries(o)) w.message(1, new Writer().string(1, k).message(2, encodeValue(v, depth)).finish());
  return w.finish();
}
function decodeValue(buf: Buffer, depth: number): unknown {
  if (depth > 32) throw new ProtoError('value nested too deep');
  let out: unknown = null;
  for (const f of fields(buf)) {
    if (f.field === 1) out = null;
    else if (f.field === 2 && f.wire === WIRE_I64) out = f.data.readDoubleLE(0);
    else if (f.field === 3 && f.wire === WIRE_LEN) out = str(f);
    else if (f.field === 4 && f.wire === WIRE_VARINT) out = f.int !== 0;
    else if (f.field === 5 && f.wire === WIRE_LEN) out = decodeStruct(f.data, depth + 1);
    else if (f.field === 6 && f.wire === WIRE_LEN)
      out = fields(f.data)
        .filter((g) => g.field === 1)
        .map((g) => decodeValue(g.data, depth + 1));
  }
  return out;
}
export function decodeStruct(buf: Buffer, depth = 0): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const f of fields(buf)) {
    if (f.field !== 1 || f.wire !== WIRE_LEN) continue;
    let k = '';
    let v: unknown = null;
    for (const e of fields(f.data)) {
      if (e.field === 1) k = str(e);
      else if (e.field === 2) v = decodeValue(e.data, depth + 1);
    }
    Object.defineProperty(out, k, { value: v, enumerable: true, writable: true, configurable: true });
  }
  return out;
}

export function encodeValidateJwtSvidResponse(m: ValidateJwtSvidResponse): Buffer {
  return new Writer().string(1, m.spiffeId).message(2, encodeStruct(m.claims)).finish();
}
export function decodeValidateJwtSvidResponse(buf: Buffer): ValidateJwtSvidResponse {
  const out: ValidateJwtSvidResponse = { spiffeId: '', claims: {} };
  for (const f of fields(buf)) {
    if (f.wire !== WIRE_LEN) continue;
    if (f.field === 1) out.spiffeId = str(f);
    else if (f.field === 2) out.claims = decodeStruct(f.data);
  }
  return out;
}
