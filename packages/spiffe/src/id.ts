import { WritError } from './errors.ts';

/** Limits from SPIFFE-ID.md: trust domain name at most 255 bytes, the whole ID at most 2048. */
export const MAX_TRUST_DOMAIN_BYTES = 255;
export const MAX_SPIFFE_ID_BYTES = 2048;

const SCHEME = 'spiffe://';

export interface SpiffeId {
  readonly trustDomain: string;
  /** '' for the trust domain's own ID, otherwise starts with '/'. */
  readonly path: string;
  /** The canonical string form, `spiffe://td/path`. */
  readonly uri: string;
}

// Lookup tables: a character test per byte is the hot path of every parse.
const TD_CHARS = charTable('abcdefghijklmnopqrstuvwxyz0123456789.-_');
const PATH_CHARS = charTable('abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_');

function charTable(chars: string): Uint8Array {
  const t = new Uint8Array(128);
  for (const c of chars) t[c.charCodeAt(0)] = 1;
  return t;
}

function fail(code: 'ERR_SPIFFE_ID_INVALID' | 'ERR_TRUST_DOMAIN_INVALID', input: string, why: string): never {
  const shown = input.length > 80 ? `${input.slice(0, 77)}...` : input;
  throw new WritError(code, `invalid ${code === 'ERR_TRUST_DOMAIN_INVALID' ? 'trust domain' : 'SPIFFE ID'} ${JSON.stringify(shown)}: ${why}`);
}

/** Checks a bare trust domain name (`example.org`) and returns it. */
export function parseTrustDomain(name: string, code: 'ERR_SPIFFE_ID_INVALID' | 'ERR_TRUST_DOMAIN_INVALID' = 'ERR_TRUST_DOMAIN_INVALID', input = name): string {
  if (typeof name !== 'string') throw new TypeError('trust domain must be a string');
  if (name.length === 0) fail(code, input, 'trust domain is empty');
  if (name.length > MAX_TRUST_DOMAIN_BYTES) fail(code, input, `trust domain is longer than ${MAX_TRUST_DOMAIN_BYTES} bytes`);
  if (name.includes('@')) fail(code, input, 'userinfo is not allowed');
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    if (c >= 128 || TD_CHARS[c] !== 1) {
      const ch = name[i]!;
      if (ch === ':') fail(code, input, 'a port is not allowed');
      if (ch === '@') fail(code, input, 'userinfo is not allowed');
      if (ch >= 'A' && ch <= 'Z') fail(code, input, 'trust domain must be lowercase');
      if (ch === '%') fail(code, input, 'percent-encoding is not allowed');
      fail(code, input, `trust domain contains ${JSON.stringify(ch)}; allowed are a-z 0-9 . - _`);
    }
  }
  return name;
}

/**
 * Parses a SPIFFE ID exactly as SPIFFE-ID.md defines it.
 *
 * @example parseSpiffeId('spiffe://example.org/ns/web').path === '/ns/web'
 */
export function parseSpiffeId(input: string): SpiffeId {
  if (typeof input !== 'string') throw new TypeError('SPIFFE ID must be a string');
  const code = 'ERR_SPIFFE_ID_INVALID';
  // Size is checked first so hostile input never reaches the scanner at full length.
  if (input.length > MAX_SPIFFE_ID_BYTES || Buffer.byteLength(input) > MAX_SPIFFE_ID_BYTES) fail(code, input, `longer than ${MAX_SPIFFE_ID_BYTES} bytes`);
  if (input.length === 0) fail(code, input, 'empty');
  if (!input.startsWith(SCHEME)) {
    if (input.toLowerCase().startsWith(SCHEME)) fail(code, input, 'scheme must be lowercase "spiffe"');
    fail(code, input, 'scheme must be "spiffe://"');
  }
  const rest = input.slice(SCHEME.length);
  const slash = rest.indexOf('/');
  const td = slash === -1 ? rest : rest.slice(0, slash);
  for (const [ch, why] of [
    ['?', 'a query is not allowed'],
    ['#', 'a fragment is not allowed'],
  ] as const) {
    if (input.includes(ch)) fail(code, input, why);
  }
  parseTrustDomain(td, code, input);
  const path = slash === -1 ? '' : rest.slice(slash);
  validatePath(path, input);
  return { trustDomain: td, path, uri: input };
}

function validatePath(path: string, input: string): void {
  if (path === '') return;
  const code = 'ERR_SPIFFE_ID_INVALID';
  if (path === '/') fail(code, input, 'trailing "/" is not allowed');
  let segStart = 1;
  for (let i = 1; i <= path.length; i++) {
    if (i === path.length || path.charCodeAt(i) === 47 /* / */) {
      const seg = path.slice(segStart, i);
      if (seg.length === 0) fail(code, input, i === path.length ? 'trailing "/" is not allowed' : 'empty path segment');
      if (seg === '.' || seg === '..') fail(code, input, `path segment "${seg}" is not allowed`);
      segStart = i + 1;
      continue;
    }
    const c = path.charCodeAt(i);
    if (c >= 128 || PATH_CHARS[c] !== 1) {
      const ch = path[i]!;
      if (ch === '%') fail(code, input, 'percent-encoding is not allowed');
      fail(code, input, `path contains ${JSON.stringify(ch)}; allowed are a-z A-Z 0-9 . - _`);
    }
  }
}

/** Builds a SPIFFE ID from a trust domain and path segments, validating both. */
export function formatSpiffeId(trustDomain: string, ...segments: string[]): string {
  const uri = `${SCHEME}${trustDomain}${segments.map((s) => `/${s}`).join('')}`;
  return parseSpiffeId(uri).uri;
}

export function isSpiffeId(input: unknown): boolean {
  if (typeof input !== 'string') return false;
  try {
    parseSpiffeId(input);
    return true;
  } catch {
    return false;
  }
}

/** `spiffe://td`, the key under which the Workload API and bundle maps name a trust domain. */
export function trustDomainId(trustDomain: string): string {
  return SCHEME + trustDomain;
}
