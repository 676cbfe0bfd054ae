// Install-time build (npm ci runs it as postinstall): the agent's SO_PEERCRED addon, and a bundled
// JavaScript build of the CLI in dist/. Node runs the TypeScript sources directly too, but the type
// stripper and per-file loading cost ~50 MB of RSS, which matters for an agent on every node.
// bin/writ.js uses dist/ only while it is newer than every source file.
import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
execFileSync(process.execPath, [join(root, 'scripts', 'build-addon.mjs')], { stdio: 'inherit' });

let esbuild;
try {
  esbuild = await import('esbuild');
} catch {
  console.warn('writ: esbuild is not installed (production install?); the CLI will run from the TypeScript sources');
  process.exit(0);
}
rmSync(join(root, 'dist'), { recursive: true, force: true });
await esbuild.build({
  entryPoints: { writ: join(root, 'packages', 'cli', 'src', 'main.ts') },
  outdir: join(root, 'dist'),
  bundle: true,
  splitting: true, // the agent never loads the server's code, and the reverse
  format: 'esm',
  platform: 'node',
  target: 'node22',
  external: ['pg-native'],
  banner: { js: "import { createRequire as __writCreateRequire } from 'node:module'; const require = __writCreateRequire(import.meta.url);" },
  logLevel: 'warning',
});
console.log('writ: built dist/writ.js');
