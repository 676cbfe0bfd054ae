#!/usr/bin/env node
// The `writ` command. Writ runs its TypeScript sources directly (Node >= 22.18 strips types);
// when an older node comes first on PATH, hand over to the Node the repository pins.
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const [major, minor] = process.versions.node.split('.').map(Number);
if (major < 22 || (major === 22 && minor < 18)) {
  let pinned;
  try {
    pinned = createRequire(import.meta.url).resolve('node/bin/node');
  } catch {
    console.error(`writ needs Node.js >= 22.18 (this is ${process.version}); run npm ci to install the pinned Node.`);
    process.exit(1);
  }
  const r = spawnSync(pinned, [fileURLToPath(import.meta.url), ...process.argv.slice(2)], { stdio: 'inherit' });
  process.exit(r.status ?? 1);
}
const { main } = await import('../src/main.ts');
process.exitCode = await main(process.argv.slice(2));
