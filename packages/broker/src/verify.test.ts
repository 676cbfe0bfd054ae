import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { it } from 'node:test';

it('the verify entry point reaches no YAML reader and no policy parser (what the SDK and proxy import)', () => {
  const dir = new URL('.', import.meta.url).pathname;
  const seen = new Set<string>();
  const external = new Set<string>();
  const walk = (file: string): void => {
    if (seen.has(file)) return;
    seen.add(file);
    for (const m of readFileSync(join(dir, file), 'utf8').matchAll(/^(?:import|export)[^'"]*from '([^']+)'/gm)) {
      const spec = m[1]!;
      if (spec.startsWith('./')) walk(spec.slice(2));
      else external.add(spec);
    }
  };
  walk('verify.ts');
  assert.deepEqual([...seen].sort(), ['errors.ts', 'limits.ts', 'tokens.ts', 'verify.ts']);
  assert.deepEqual([...external].sort(), ['@writ/spiffe', 'node:crypto']);
});
