/** Reading untrusted JSON: limits before parsing, and typed access that names the JSON path on failure. */
import { vulnError } from './errors.ts';
import type { ParseLimits } from './types.ts';

export type Obj = Record<string, unknown>;

const IDENT = /^[A-Za-z_$][\w$-]*$/;

const plain = new Map<string, boolean>();

export function key(path: string, k: string): string {
  // The keys are the formats' own few names; remember which need brackets.
  let p = plain.get(k);
  if (p === undefined) {
    p = IDENT.test(k);
    if (plain.size < 1000) plain.set(k, p);
  }
  if (!p) return `${path}[${JSON.stringify(k)}]`;
  return path === '' ? k : `${path}.${k}`;
}

export function idx(path: string, i: number): string {
  return `${path}[${i}]`;
}

function bad(path: string, want: string, got: unknown): never {
  const kind = got === null ? 'null' : Array.isArray(got) ? 'an array' : typeof got;
  throw vulnError('ERR_VULN_REPORT_INVALID', `${path || 'the document'}: expected ${want}, got ${kind}`, path || '$');
}

export function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function obj(v: unknown, path: string): Obj {
  if (!isObj(v)) bad(path, 'an object', v);
  return v;
}

export function optObj(v: unknown, path: string): Obj | undefined {
  return v === undefined || v === null ? undefined : obj(v, path);
}

export function arr(v: unknown, path: string, limits?: ParseLimits): unknown[] {
  if (!Array.isArray(v)) bad(path, 'an array', v);
  if (limits !== undefined && v.length > limits.maxItems) tooMany(path, limits);
  return v;
}

/** Go writes nil slices as null; both mean "none". */
export function optArr(v: unknown, path: string, limits?: ParseLimits): unknown[] {
  return v === undefined || v === null ? [] : arr(v, path, limits);
}

export function str(v: unknown, path: string): string {
  if (typeof v !== 'string') bad(path, 'a string', v);
  return v;
}

/** A missing, null or empty string is absent. */
export function optStr(v: unknown, path: string): string | undefined {
  if (v === undefined || v === null) return undefined;
  const s = str(v, path);
  return s === '' ? undefined : s;
}

export function optStrs(v: unknown, path: string): string[] {
  const out: string[] = [];
  optArr(v, path).forEach((s, i) => {
    const x = optStr(s, idx(path, i));
    if (x !== undefined) out.push(x);
  });
  return out;
}

export function strMap(v: unknown, path: string): Record<string, string> {
  const o = optObj(v, path);
  const out: Record<string, string> = {};
  if (o === undefined) return out;
  for (const [k, x] of Object.entries(o)) if (typeof x === 'string' && k !== '__proto__') out[k] = x;
  return out;
}

export function tooMany(path: string, limits: ParseLimits): never {
  throw vulnError('ERR_VULN_REPORT_TOO_LARGE', `${path}: more than ${limits.maxItems} items`, path);
}

/** A time in any RFC 3339 form (Go writes nanoseconds), as ISO 8601 with milliseconds in UTC. */
export function optTime(v: unknown, path: string): string | undefined {
  const s = optStr(v, path);
  if (s === undefined) return undefined;
  const m = /^(\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2})(\.\d+)?([Zz]|[+-]\d{2}:?\d{2})?$/.exec(s.trim());
  const t = m === null ? Number.NaN : Date.parse(`${m[1]!.replace(/[t ]/, 'T')}${(m[2] ?? '').slice(0, 4)}${(m[3] ?? 'Z').toUpperCase()}`);
  if (Number.isNaN(t)) throw vulnError('ERR_VULN_REPORT_INVALID', `${path}: not an RFC 3339 time: ${JSON.stringify(s.slice(0, 40))}`, path);
  return new Date(t).toISOString();
}

function utf8Length(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    n += c < 0x80 ? 1 : c < 0x800 ? 2 : c >= 0xd800 && c <= 0xdbff ? (i++, 4) : 3;
  }
  return n;
}

/** Size, then nesting depth (one pass over the text, strings skipped), then JSON.parse. */
export function readJson(input: string | Uint8Array, limits: ParseLimits): unknown {
  const size =
    typeof input === 'string'
      ? input.length > limits.maxBytes
        ? input.length
        : input.length * 3 <= limits.maxBytes
          ? 0
          : utf8Length(input)
      : input.byteLength;
  if (size > limits.maxBytes) throw vulnError('ERR_VULN_REPORT_TOO_LARGE', `the report is ${size} bytes; the limit is ${limits.maxBytes}`);
  let text: string;
  try {
    text = typeof input === 'string' ? input : new TextDecoder('utf-8', { fatal: true }).decode(input);
  } catch {
    throw vulnError('ERR_VULN_REPORT_INVALID', 'the report is not UTF-8');
  }
  let depth = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      // Skip the string, honouring escapes.
      for (i++; i < text.length; i++) {
        const d = text.charCodeAt(i);
        if (d === 0x5c) i++;
        else if (d === 0x22) break;
      }
    } else if (c === 0x7b || c === 0x5b) {
      if (++depth > limits.maxDepth) throw vulnError('ERR_VULN_REPORT_TOO_LARGE', `the report nests deeper than ${limits.maxDepth} levels`);
    } else if (c === 0x7d || c === 0x5d) depth--;
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw vulnError('ERR_VULN_REPORT_INVALID', `the report is not JSON: ${(err as Error).message.slice(0, 200)}`);
  }
}
