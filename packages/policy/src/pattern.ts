/**
 * Segment-wise patterns, for identities and for HTTP paths: a segment is matched exactly, `*`
 * matches exactly one segment, and a trailing `**` matches one or more further segments. No regular
 * expressions. An identity pattern's first segment is its trust domain, which must be exact.
 */
import { WritError, parseTrustDomain } from '@writ/spiffe';

const SEGMENT = /^[A-Za-z0-9._-]+$/;

export interface Pattern {
  readonly source: string;
  readonly segments: readonly string[];
}

function invalid(what: string, p: string, why: string): never {
  throw new WritError('ERR_FIELD_INVALID', `${what} pattern ${JSON.stringify(p.slice(0, 120))}: ${why}`);
}

function checkSegments(what: string, p: string, segs: string[]): void {
  segs.forEach((s, i) => {
    if (s === '**') {
      if (i !== segs.length - 1) invalid(what, p, '"**" is only allowed as the last segment');
    } else if (s !== '*' && !SEGMENT.test(s)) invalid(what, p, `segment ${JSON.stringify(s.slice(0, 40))} may hold only letters, digits, . _ - (or be * / **)`);
    if (s === '.' || s === '..') invalid(what, p, `segment "${s}" is not allowed`);
  });
}

/** `spiffe://td/ns/web/**`, `spiffe://td/ns/*\/sa/api`, or an exact SPIFFE ID. */
export function parseIdPattern(p: string): Pattern {
  if (typeof p !== 'string' || p.length > 2048) invalid('identity', String(p), 'must be a string of at most 2048 bytes');
  if (!p.startsWith('spiffe://')) invalid('identity', p, 'must start with spiffe://');
  const [td, ...path] = p.slice(9).split('/');
  try {
    parseTrustDomain(td!);
  } catch {
    invalid('identity', p, 'the trust domain must be exact (a-z 0-9 . - _; no wildcards)');
  }
  if (path.length === 0 && p.endsWith('/')) invalid('identity', p, 'trailing "/"');
  if (path.some((s) => s === '')) invalid('identity', p, 'empty segment or trailing "/"');
  checkSegments('identity', p, path);
  return { source: p, segments: [td!, ...path] };
}

/** `/v1/orders/*`, `/static/**`, `/`, or an exact path (`/v1/orders/` with its trailing "/"). */
export function parsePathPattern(p: string): Pattern {
  if (typeof p !== 'string' || !p.startsWith('/') || p.length > 1024) invalid('path', String(p), 'must start with "/" (at most 1024 characters)');
  if (p === '/') return { source: p, segments: [] };
  const segs = p.slice(1).split('/');
  // A trailing "/" is an empty last segment, matched exactly: "/v1/orders/" is not "/v1/orders".
  const trailing = segs.at(-1) === '' ? segs.pop() : undefined;
  if (segs.some((s) => s === '')) invalid('path', p, 'empty segment ("//")');
  checkSegments('path', p, segs);
  if (trailing !== undefined && segs.at(-1) === '**') invalid('path', p, '"**" is only allowed as the last segment');
  return { source: p, segments: trailing === undefined ? segs : [...segs, ''] };
}

/** Longer than any HTTP server's request line limit (nginx and Node: 8-16 KiB for the whole head). */
const MAX_REQUEST_PATH = 64 * 1024;
const UNRESERVED = /^[A-Za-z0-9._~-]$/;
/** What a path in normal form never holds: an escape, "//", a segment starting with ".", "#" or "\\". */
const NEEDS_WORK = /[%#\\]|\/\/|\/\./;
const HEX2 = /^[0-9A-Fa-f]{2}$/;

/**
 * The form of a request path that decisions are made on, so that spellings an app may take for
 * the same path cannot slip past a rule: percent-encoded unreserved characters decoded and other
 * escapes in upper case (RFC 3986 6.2.2.1-2, "/%61dmin" is "/admin"), runs of "/" merged ("//admin"
 * is "/admin", as nginx and many frameworks route it). A "." or ".." segment, literal or encoded,
 * is refused rather than resolved: clients remove them before sending (RFC 3986 5.2.4), so one
 * that arrives is an attempt to make the proxy and the app see different paths. An encoded "/"
 * (%2F) stays encoded, inside its segment. "#" and "\\" are refused too. Throws ERR_PATH_INVALID; returns `path` itself (no
 * copy) when it is already in that form, which is nearly always.
 */
export function normalizePath(path: string): string {
  if (path.length > MAX_REQUEST_PATH) throw new WritError('ERR_PATH_INVALID', `the path is longer than ${MAX_REQUEST_PATH} characters`);
  if (path.charCodeAt(0) !== 47) return path; // "*" (OPTIONS) or not a path at all
  if (!NEEDS_WORK.test(path)) return path; // one scan for nearly every request
  // Never part of a path (RFC 3986 3.3), and read differently by different parsers: an app drops a
  // fragment ("/admin#x" is "/admin" to it), and WHATWG URL parsing (Node's URL, browsers) takes
  // "\" for "/" ("/v1\admin" is "/v1/admin").
  if (path.includes('#')) throw new WritError('ERR_PATH_INVALID', 'the path has a "#" (a fragment is never sent in a request)');
  if (path.includes('\\')) throw new WritError('ERR_PATH_INVALID', 'the path has a "\\" (some parsers take it for "/")');
  let out = '';
  for (let i = 0; i < path.length; i++) {
    const c = path[i]!;
    if (c !== '%') {
      out += c;
      continue;
    }
    const hex = path.slice(i + 1, i + 3);
    if (!HEX2.test(hex)) throw new WritError('ERR_PATH_INVALID', `the path has a "%" that is not followed by two hex digits (at ${i})`);
    const ch = String.fromCharCode(parseInt(hex, 16));
    out += UNRESERVED.test(ch) ? ch : `%${hex.toUpperCase()}`;
    i += 2;
  }
  const segs = out.split('/');
  const kept = [''];
  for (let i = 1; i < segs.length; i++) {
    const s = segs[i]!;
    if (s === '.' || s === '..') throw new WritError('ERR_PATH_INVALID', `the path has a "${s}" segment`);
    if (s !== '' || i === segs.length - 1) kept.push(s);
  }
  const norm = kept.length === 1 ? '/' : kept.join('/');
  return norm === path ? path : norm;
}

/** Splits a concrete identity into its segments (trust domain first). */
export function idSegments(id: string): string[] {
  return id.slice(9).split('/');
}

/**
 * Whether concrete segments match a pattern's segments. `*` and `**` never match an empty segment
 * (a path's trailing "/"): "/v1/orders/*" allows one order, not "/v1/orders/", which most routers
 * take for the collection "/v1/orders"; only a pattern that ends in "/" matches a path that does.
 */
export function matchSegments(pattern: readonly string[], value: readonly string[]): boolean {
  for (let i = 0; i < pattern.length; i++) {
    const p = pattern[i]!;
    // One or more further segments, not just the empty one after a trailing "/".
    if (p === '**') return value.length > i + 1 || (value.length === i + 1 && value[i] !== '');
    if (i >= value.length) return false;
    if (p === '*' ? value[i] === '' : p !== value[i]) return false;
  }
  return pattern.length === value.length;
}

interface TrieNode<T> {
  exact: Map<string, TrieNode<T>> | null;
  star: TrieNode<T> | null;
  /** Items whose pattern ends in `**` here. */
  glob: T[] | null;
  /** Items whose pattern ends exactly here. */
  here: T[] | null;
}

const node = <T>(): TrieNode<T> => ({ exact: null, star: null, glob: null, here: null });

/**
 * A trie over segment patterns: finds every item whose pattern matches a value without scanning.
 * Plain objects and an explicit stack: this is the innermost loop of every decision.
 */
export class SegmentTrie<T> {
  readonly root: TrieNode<T> = node();

  insert(segments: readonly string[], item: T): void {
    let n = this.root;
    for (let i = 0; i < segments.length; i++) {
      const s = segments[i]!;
      if (s === '**') {
        (n.glob ??= []).push(item);
        return;
      }
      let next: TrieNode<T> | undefined;
      if (s === '*') next = n.star ??= node();
      else {
        n.exact ??= new Map();
        next = n.exact.get(s);
        if (!next) n.exact.set(s, (next = node()));
      }
      n = next;
    }
    (n.here ??= []).push(item);
  }

  /** Appends to `out` every item whose pattern matches `value`; returns `out`. */
  collect(value: readonly string[], out: T[] = []): T[] {
    const nodes: Array<TrieNode<T>> = [this.root];
    const depths: number[] = [0];
    while (nodes.length > 0) {
      const n = nodes.pop()!;
      const i = depths.pop()!;
      if (i === value.length) {
        if (n.here) for (const x of n.here) out.push(x);
        continue;
      }
      if (n.glob) for (const x of n.glob) out.push(x);
      const e = n.exact?.get(value[i]!);
      if (e) nodes.push(e), depths.push(i + 1);
      if (n.star) nodes.push(n.star), depths.push(i + 1);
    }
    return out;
  }

  /** Calls `fn` for every item whose pattern matches `value`. */
  match(value: readonly string[], fn: (item: T) => void): void {
    for (const x of this.collect(value)) fn(x);
  }
}
