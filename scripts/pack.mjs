// Packs the publishable libraries (@writ/spiffe, @writ/policy, @writ/sdk) as npm tarballs in pack/: JavaScript
// (one ESM file per package, dependencies left external) plus type declarations. Inside the
// repository the packages run from their TypeScript sources; Node does not strip types under
// node_modules, so what is published must be JavaScript.
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(root, 'pack');
const stage = join(out, 'stage');
rmSync(out, { recursive: true, force: true });
mkdirSync(stage, { recursive: true });

// Declarations for both packages in one tsc run.
writeFileSync(
  join(stage, 'tsconfig.json'),
  JSON.stringify({
    extends: join(root, 'tsconfig.json'),
    compilerOptions: {
      noEmit: false,
      declaration: true,
      emitDeclarationOnly: true,
      rewriteRelativeImportExtensions: true,
      outDir: join(stage, 'types'),
      rootDir: join(root, 'packages'),
    },
    include: [join(root, 'packages/spiffe/src/**/*.ts'), join(root, 'packages/policy/src/**/*.ts'), join(root, 'packages/sdk/src/**/*.ts')],
    exclude: [join(root, 'packages/**/*.test.ts')],
  }),
);
execFileSync(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', join(stage, 'tsconfig.json')], { stdio: 'inherit' });

/**
 * The declaration files index.d.ts reaches through relative imports: what a consumer's compiler
 * reads. The internal entry (`internal.d.ts`, the gRPC server layer the agent uses) and whatever only
 * it reaches are left out, as its JavaScript is.
 */
function publicDeclarations(dir) {
  const seen = new Set();
  const visit = (rel) => {
    if (seen.has(rel)) return;
    seen.add(rel);
    const text = readFileSync(join(dir, rel), 'utf8');
    for (const m of text.matchAll(/\bfrom\s+['"](\.{1,2}\/[^'"]+)['"]|\bimport\(\s*['"](\.{1,2}\/[^'"]+)['"]\s*\)/g)) {
      const spec = (m[1] ?? m[2]).replace(/\.(ts|js)$/, '');
      visit(normalize(join(dirname(rel), `${spec}.d.ts`)));
    }
  };
  visit('index.d.ts');
  return [...seen];
}

const tarballs = [];
for (const name of ['spiffe', 'policy', 'sdk']) {
  const pkgDir = join(root, 'packages', name);
  const pkg = JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8'));
  const dest = join(stage, name);
  mkdirSync(join(dest, 'dist'), { recursive: true });
  await esbuild.build({
    entryPoints: [join(pkgDir, 'src/index.ts')],
    outfile: join(dest, 'dist/index.js'),
    bundle: true,
    format: 'esm',
    platform: 'node',
    target: 'node20',
    // Our own packages stay separate; third-party code (yaml) is bundled, so the SDK installs alone.
    // @writ/broker (not published) is bundled: the SDK uses only its pure `verify` entry.
    external: Object.keys(pkg.dependencies ?? {}).filter((d) => d.startsWith('@writ/') && d !== '@writ/broker'),
    logLevel: 'warning',
    // Bundled CommonJS (yaml) calls require() for Node built-ins.
    banner: { js: "import { createRequire as __writCreateRequire } from 'node:module'; const require = __writCreateRequire(import.meta.url);" },
  });
  pkg.dependencies = Object.fromEntries(Object.entries(pkg.dependencies ?? {}).filter(([d]) => d.startsWith('@writ/') && d !== '@writ/broker'));
  for (const rel of publicDeclarations(join(stage, 'types', name, 'src'))) {
    mkdirSync(dirname(join(dest, 'types', rel)), { recursive: true });
    copyFileSync(join(stage, 'types', name, 'src', rel), join(dest, 'types', rel));
  }
  pkg.exports = { '.': { types: './types/index.d.ts', default: './dist/index.js' } };
  pkg.types = './types/index.d.ts';
  pkg.files = ['dist', 'types'];
  pkg.engines = { node: '>=20' };
  writeFileSync(join(dest, 'package.json'), `${JSON.stringify(pkg, null, 2)}\n`);
  const file = execFileSync('npm', ['pack', '--pack-destination', out, '--silent'], { cwd: dest, encoding: 'utf8' }).trim().split('\n').pop();
  tarballs.push(join(out, file));
}
rmSync(stage, { recursive: true, force: true });
console.log(tarballs.join('\n'));
