// Builds peercred.node at install time with the system C compiler against Node-API headers.
// Plain JavaScript so it runs on whatever node npm uses for lifecycle scripts.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = join(dirname(fileURLToPath(import.meta.url)), '..', 'packages', 'agent', 'native');
const out = join(here, 'build', 'peercred.node');
const root = join(here, '..', '..', '..');
const candidates = [
  join(root, 'node_modules', 'node', 'node_modules', `node-${process.platform}-${process.arch}`, 'include', 'node'),
  join(dirname(process.execPath), '..', 'include', 'node'),
  process.env.npm_config_nodedir ? join(process.env.npm_config_nodedir, 'include', 'node') : '',
  '/usr/include/node',
].filter(Boolean);
const include = candidates.find((d) => existsSync(join(d, 'node_api.h')));
if (process.platform !== 'linux') {
  console.warn('writ agent: SO_PEERCRED is Linux-only; the unix workload attestor is unavailable on this platform');
  process.exit(0);
}
if (!include) {
  console.error(`writ agent: cannot find node_api.h (looked in ${candidates.join(', ')})`);
  process.exit(1);
}
mkdirSync(join(here, 'build'), { recursive: true });
const cc = process.env.CC || 'cc';
execFileSync(cc, ['-O2', '-Wall', '-shared', '-fPIC', `-I${include}`, '-o', out, join(here, 'peercred.c')], { stdio: 'inherit' });
console.log(`writ agent: built ${out}`);
