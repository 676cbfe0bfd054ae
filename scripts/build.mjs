// Install-time build (npm ci runs it as postinstall): the agent's SO_PEERCRED addon, and a bundled
// JavaScript build of the CLI in dist/. Node runs the TypeScript sources directly too, but the type
// stripper and per-file loading cost ~50 MB of RSS, which matters for an agent on every node.
// bin/writ.js uses dist/ only while it is newer than every source file.
import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
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
// `import ... from 'node:http'` in an ES module makes Node build the module's ESM facade, which
// reads every export, and the `WebSocket` getter among them loads Node's bundled undici: about
// 12 MB of RSS in every process, agent included (docs/benchmarks.md, spire section). Taking
// node:http through require() reads only what is used.
const httpByRequire = {
  name: 'node-http-by-require',
  setup(b) {
    b.onResolve({ filter: /^(node:)?http$/ }, (a) =>
      a.namespace === 'writ-cjs-builtin' ? { path: 'node:http', external: true } : { path: 'node:http', namespace: 'writ-cjs-builtin' },
    );
    b.onLoad({ filter: /.*/, namespace: 'writ-cjs-builtin' }, (a) => ({ contents: `module.exports = require(${JSON.stringify(a.path)});`, loader: 'js' }));
  },
};
await esbuild.build({
  // The verify worker is an entry of its own: audit.ts starts dist/audit-verify-worker.js beside it.
  // `writ agent start` runs dist/agent.js (bin/writ.js): the agent's command alone, not the CLI's.
  entryPoints: {
    writ: join(root, 'packages', 'cli', 'src', 'main.ts'),
    agent: join(root, 'packages', 'cli', 'src', 'agent-main.ts'),
    'audit-verify-worker': join(root, 'packages', 'cli', 'src', 'audit-verify-worker.ts'),
  },
  outdir: join(root, 'dist'),
  bundle: true,
  splitting: true, // the agent never loads the server's code, and the reverse
  format: 'esm',
  platform: 'node',
  target: 'node22',
  external: ['pg-native'],
  plugins: [httpByRequire],
  banner: { js: "import { createRequire as __writCreateRequire } from 'node:module'; const require = __writCreateRequire(import.meta.url);" },
  logLevel: 'warning',
});
console.log('writ: built dist/writ.js');

// The dashboard (packages/dashboard): a browser bundle the server serves at /ui, with hashed names
// (cached for a year) and a page that loads them without any inline script or style (strict CSP).
const ui = join(root, 'dist', 'dashboard');
const result = await esbuild.build({
  entryPoints: { app: join(root, 'packages', 'dashboard', 'src', 'main.ts') },
  outdir: join(ui, 'assets'),
  entryNames: '[name]-[hash]',
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: 'es2022',
  minify: true,
  metafile: true,
  legalComments: 'eof',
  logLevel: 'warning',
});
const outputs = Object.keys(result.metafile.outputs).map((p) => basename(p));
const js = outputs.find((p) => p.endsWith('.js'));
const css = outputs.find((p) => p.endsWith('.css'));
mkdirSync(ui, { recursive: true });
writeFileSync(
  join(ui, 'index.html'),
  `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Writ</title>
${css ? `<link rel="stylesheet" href="/ui/assets/${css}">\n` : ''}<script type="module" src="/ui/assets/${js}"></script>
</head>
<body><div id="app"></div></body>
</html>
`,
);
console.log(`writ: built dist/dashboard (${outputs.filter((p) => !p.endsWith('.txt')).join(', ')})`);
