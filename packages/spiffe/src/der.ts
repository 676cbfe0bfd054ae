/**
 * The small part of ASN.1 DER that certificates, CSRs and keys need: a strict reader and a writer.
 * Written by hand because the hot paths (SVID issuance, SVID validation) must stay synchronous
 * and allocation-light; the shapes are fixed by RFC 5280 and RFC 2986.
 */
import { WritError } from './errors.ts';

export const TAG = {
  BOOLEAN: 0x01,
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  NULL: 0x05,
  OID: 0x06,
  UTF8_STRING: 0x0c,
  PRINTABLE_STRING: 0x13,
  IA5_STRING: 0x16,
  UTC_TIME: 0x17,
  GENERALIZED_TIME: 0x18,
  SEQUENCE: 0x30,
  SET: 0x31,
} as const;

export interface Node {
  readonly tag: number;
  /** The whole TLV, header included. */
  readonly raw: Buffer;
  /** The value bytes. */
  readonly value: Buffer;
}

const MAX_DEPTH = 32;

function malformed(why: string): never {
  throw new WritError('ERR_X509_MALFORMED', `malformed DER: ${why}`);
}

/** Reads one TLV at `offset`; returns the node and the offset after it. */
export function readNode(buf: Buffer, offset = 0): { node: Node; next: number } {
  if (offset + 2 > buf.length) malformed('truncated header');
  const tag = buf[offset]!;
  if ((tag & 0x1f) === 0x1f) malformed('multi-byte tags are not supported');
  let len = buf[offset + 1]!;
  let p = offset + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0) malformed('indefinite length is not DER');
    if (n > 4) malformed('length too large');
    if (p + n > buf.length) malformed('truncated length');
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[p + i]!;
    if (len < 0x80 || (n > 1 && buf[p] === 0)) malformed('non-minimal length');
    p += n;
  }
  if (p + len > buf.length) malformed('value runs past the end');
  return { node: { tag, raw: buf.subarray(offset, p + len), value: buf.subarray(p, p + len) }, next: p + len };
}

/** Parses exactly one TLV filling the whole buffer. */
export function parseDer(buf: Buffer): Node {
  const { node, next } = readNode(buf, 0);
  if (next !== buf.length) malformed('trailing bytes');
  return node;
}

/** The children of a constructed node. */
export function children(node: Node, depth = 0): Node[] {
  if (depth > MAX_DEPTH) malformed('nesting too deep');
  if ((node.tag & 0x20) === 0) malformed(`tag 0x${node.tag.toString(16)} is not constructed`);
  const out: Node[] = [];
  let p = 0;
  while (p < node.value.length) {
    const { node: child, next } = readNode(node.value, p);
    out.push(child);
    p = next;
  }
  return out;
}

export function expectTag(node: Node | undefined, tag: number, what: string): Node {
  if (node === undefined) malformed(`${what} is missing`);
  if (node.tag !== tag) malformed(`${what} has tag 0x${node.tag.toString(16)}, expected 0x${tag.toString(16)}`);
  return node;
}

export function decodeOid(node: Node): string {
  const v = node.value;
  if (v.length === 0) malformed('empty OID');
  const parts: number[] = [];
  let acc = 0;
  for (let i = 0; i < v.length; i++) {
    const b = v[i]!;
    acc = acc * 128 + (b & 0x7f);
    if (acc > Number.MAX_SAFE_INTEGER / 128) malformed('OID arc too large');
    if ((b & 0x80) === 0) {
      if (parts.length === 0) {
        const first = acc < 80 ? Math.floor(acc / 40) : 2;
        parts.push(first, acc - first * 40);
      } else parts.push(acc);
      acc = 0;
    }
  }
  return parts.join('.');
}

export function decodeTime(node: Node): Date {
  const s = node.value.toString('latin1');
  let m: RegExpExecArray | null;
  if (node.tag === TAG.UTC_TIME && (m = /^(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)Z$/.exec(s))) {
    const yy = Number(m[1]);
    return new Date(Date.UTC(yy >= 50 ? 1900 + yy : 2000 + yy, Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6])));
  }
  if (node.tag === TAG.GENERALIZED_TIME && (m = /^(\d{4})(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)Z$/.exec(s))) {
    return new Date(Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6])));
  }
  return malformed(`bad time ${JSON.stringify(s.slice(0, 20))}`);
}

export function decodeBoolean(node: Node): boolean {
  if (node.tag !== TAG.BOOLEAN || node.value.length !== 1) malformed('bad BOOLEAN');
  return node.value[0] !== 0;
}

export function decodeSmallInt(node: Node): number {
  if (node.tag !== TAG.INTEGER || node.value.length === 0 || node.value.length > 6) malformed('bad INTEGER');
  return node.value.readIntBE(0, node.value.length);
}

// ---------------------------------------------------------------- writer

function header(tag: number, len: number): Buffer {
  if (len < 0x80) return Buffer.from([tag, len]);
  if (len < 0x100) return Buffer.from([tag, 0x81, len]);
  if (len < 0x10000) return Buffer.from([tag, 0x82, len >> 8, len & 0xff]);
  return Buffer.from([tag, 0x83, len >> 16, (len >> 8) & 0xff, len & 0xff]);
}

export function tlv(tag: number, ...parts: Buffer[]): Buffer {
  const body = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
  return Buffer.concat([header(tag, body.length), body]);
}

export const seq = (...parts: Buffer[]): Buffer => tlv(TAG.SEQUENCE, ...parts);
export const set = (...parts: Buffer[]): Buffer => tlv(TAG.SET, ...parts);
export const octets = (b: Buffer): Buffer => tlv(TAG.OCTET_STRING, b);
export const bitString = (b: Buffer, unused = 0): Buffer => tlv(TAG.BIT_STRING, Buffer.from([unused]), b);
export const bool = (v: boolean): Buffer => Buffer.from([TAG.BOOLEAN, 1, v ? 0xff : 0]);
export const nullValue = (): Buffer => Buffer.from([TAG.NULL, 0]);
export const utf8 = (s: string): Buffer => tlv(TAG.UTF8_STRING, Buffer.from(s, 'utf8'));
export const ia5 = (s: string): Buffer => tlv(TAG.IA5_STRING, Buffer.from(s, 'latin1'));
/** Context-specific tag `[n]`, constructed (EXPLICIT) or primitive (IMPLICIT of a primitive). */
export const ctx = (n: number, constructed: boolean, ...parts: Buffer[]): Buffer => tlv(0x80 | (constructed ? 0x20 : 0) | n, ...parts);

/** An unsigned big-endian integer as a DER INTEGER (adds the leading zero when the top bit is set). */
export function uint(bytes: Buffer | number): Buffer {
  let b = bytes;
  if (typeof b === 'number') {
    const hex = b.toString(16);
    b = Buffer.from(hex.length % 2 ? `0${hex}` : hex, 'hex');
  }
  let i = 0;
  while (i < b.length - 1 && b[i] === 0 && (b[i + 1]! & 0x80) === 0) i++;
  b = b.subarray(i);
  return tlv(TAG.INTEGER, b[0]! & 0x80 ? Buffer.concat([Buffer.from([0]), b]) : b);
}

const oidCache = new Map<string, Buffer>();
export function oid(dotted: string): Buffer {
  const hit = oidCache.get(dotted);
  if (hit) return hit;
  const arcs = dotted.split('.').map(Number);
  const bytes: number[] = [];
  const push = (n: number): void => {
    const tmp = [n & 0x7f];
    for (n = Math.floor(n / 128); n > 0; n = Math.floor(n / 128)) tmp.unshift((n & 0x7f) | 0x80);
    bytes.push(...tmp);
  };
  push(arcs[0]! * 40 + arcs[1]!);
  for (const a of arcs.slice(2)) push(a);
  const out = tlv(TAG.OID, Buffer.from(bytes));
  oidCache.set(dotted, out);
  return out;
}

/** UTCTime through 2049, GeneralizedTime after, as RFC 5280 4.1.2.5 requires. */
export function time(d: Date): Buffer {
  const iso = d.toISOString();
  const y = d.getUTCFullYear();
  const digits = iso.slice(0, 19).replace(/[-T:]/g, '');
  if (y >= 1950 && y < 2050) return tlv(TAG.UTC_TIME, Buffer.from(`${digits.slice(2)}Z`, 'latin1'));
  return tlv(TAG.GENERALIZED_TIME, Buffer.from(`${digits}Z`, 'latin1'));
}
