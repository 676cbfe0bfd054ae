/**
 * No module-level state in the server (issue 11 §4): what a server keeps lives in objects that
 * server.ts builds per server, so two servers in one process (tests, replicas) share nothing. A
 * module may hold a read-only table (typed ReadonlySet / ReadonlyMap) and the pure memo caches
 * allowlisted below, nothing else.
 */
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { it } from 'node:test';
import { ROOT } from './helpers.ts';

/** `file: name` -> why it may stay: a cache of a pure function of its key, bounded, the same for every server. */
const ALLOWED: Readonly<Record<string, string>> = {
  'store/postgres.ts: cache': 'the `?` -> `$n` rewrite of SQL texts: a pure function of the text, at most 1000 entries, identical whatever the server',
};

const TOP_LET = /^(?:export\s+)?(?:let|var)\s+([\w$]+)/;
const TOP_COLLECTION = /^(?:export\s+)?const\s+([\w$]+)\s*(?::\s*([^=]+?))?\s*=\s*new\s+(Map|Set|WeakMap|WeakSet)\b/;

/** The module-level mutable declarations of one source text (lines at column 0 are module level in formatted code). */
export function moduleState(text: string): Array<{ name: string; line: number; what: string }> {
  const found: Array<{ name: string; line: number; what: string }> = [];
  for (const [i, l] of text.split('\n').entries()) {
    const m = TOP_LET.exec(l);
    const c = TOP_COLLECTION.exec(l);
    if (m) found.push({ name: m[1]!, line: i + 1, what: l.trim().split(/\s+/)[l.startsWith('export') ? 1 : 0]! });
    // A table typed read-only cannot be added to: it is a constant, not state.
    else if (c && !/^Readonly(Set|Map)\b/.test(c[2] ?? '')) found.push({ name: c[1]!, line: i + 1, what: `new ${c[3]}` });
  }
  return found;
}

it('no server module declares module-level mutable state outside the allowlist of pure memo caches', () => {
  const dir = join(ROOT, 'packages/server/src');
  const files = readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile() && e.name.endsWith('.ts') && !e.name.endsWith('.test.ts'))
    .map((e) => join(e.parentPath, e.name));
  assert.ok(files.length > 40, `read ${files.length} files`);
  const found: string[] = [];
  const allowedSeen = new Set<string>();
  for (const f of files) {
    const rel = f.slice(dir.length + 1);
    for (const s of moduleState(readFileSync(f, 'utf8'))) {
      const key = `${rel}: ${s.name}`;
      if (Object.hasOwn(ALLOWED, key)) allowedSeen.add(key);
      else found.push(`${rel}:${s.line} ${s.what} ${s.name}`);
    }
  }
  assert.deepEqual(
    found,
    [],
    'module-level state: move it into a per-server object built in server.ts (ApiContext), or type a constant table ReadonlySet/ReadonlyMap',
  );
  // An allowlist entry whose declaration is gone would let a new one of that name in unnoticed.
  assert.deepEqual([...allowedSeen].sort(), Object.keys(ALLOWED).sort(), 'every allowlisted cache still exists');
});

it('the guard sees module-level let, var and collections, and not read-only tables or locals', () => {
  const text = [
    'let hits = 0;',
    'export let last: string | undefined;',
    'var old = 1;',
    'const EXCEPTIONS = new WeakMap<Store, { revision: number }>();',
    'export const SEEN = new Set<string>();',
    'const BY_ID: Map<string, number> = new Map();',
    'const KINDS: ReadonlySet<string> = new Set(["a"]);',
    'const TABLE: ReadonlyMap<string, number> = new Map([["a", 1]]);',
    'function f() {',
    '  let local = 0;',
    '  const m = new Map();',
    '}',
  ].join('\n');
  assert.deepEqual(
    moduleState(text).map((s) => `${s.line} ${s.what} ${s.name}`),
    ['1 let hits', '2 let last', '3 var old', '4 new WeakMap EXCEPTIONS', '5 new Set SEEN', '6 new Map BY_ID'],
  );
});
