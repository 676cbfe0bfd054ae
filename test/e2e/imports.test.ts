/** No import cycle between the server's files: a new route or capability plugs in without looping back. */
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { it } from 'node:test';
import { ROOT } from './helpers.ts';

/** Relative imports of each source file (type-only ones too: a cycle of types is still a knot to untie). */
function importGraph(dir: string): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  const files = readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile() && e.name.endsWith('.ts') && !e.name.endsWith('.test.ts'))
    .map((e) => join(e.parentPath, e.name));
  for (const f of files) {
    const text = readFileSync(f, 'utf8');
    const specs = [...text.matchAll(/(?:^|\n)\s*(?:import|export)\b[^;]*?\bfrom\s+['"](\.[^'"]+)['"]|import\(\s*['"](\.[^'"]+)['"]\s*\)/g)].map(
      (m) => m[1] ?? m[2]!,
    );
    graph.set(
      f,
      specs.map((s) => resolve(dirname(f), s)).filter((p) => existsSync(p)),
    );
  }
  return graph;
}

/** The first cycle found (as a path of files), or undefined. */
function findCycle(graph: Map<string, string[]>): string[] | undefined {
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const visit = (f: string): string[] | undefined => {
    if (state.get(f) === 'done') return undefined;
    if (state.get(f) === 'open') return [...stack.slice(stack.indexOf(f)), f];
    state.set(f, 'open');
    stack.push(f);
    for (const g of graph.get(f) ?? []) {
      const c = visit(g);
      if (c) return c;
    }
    stack.pop();
    state.set(f, 'done');
    return undefined;
  };
  for (const f of graph.keys()) {
    const c = visit(f);
    if (c) return c;
  }
  return undefined;
}

it('the server package has no import cycle between its files', () => {
  const graph = importGraph(join(ROOT, 'packages/server/src'));
  assert.ok(graph.size > 15, `read ${graph.size} files`);
  assert.ok((graph.get(join(ROOT, 'packages/server/src/api/routes.ts')) ?? []).length > 3, 'imports were read');
  const cycle = findCycle(graph);
  assert.equal(cycle?.map((f) => f.slice(ROOT.length)).join(' -> '), undefined);
});

it('the cycle finder finds a cycle', () => {
  assert.deepEqual(
    findCycle(
      new Map([
        ['a', ['b']],
        ['b', ['c']],
        ['c', ['a']],
      ]),
    ),
    ['a', 'b', 'c', 'a'],
  );
});
