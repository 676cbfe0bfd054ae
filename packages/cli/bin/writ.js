#!/usr/bin/env node
// The `writ` command. Runs the bundled build in dist/ (made by npm ci) while it is newer than
// every source file, else the TypeScript sources directly (Node >= 22.18 strips types). When an
// older node comes first on PATH, hands over to the Node the repository pins.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
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

// `writ agent start` runs on every node: it re-executes itself (same PID) with the V8 flags that
// keep its RSS down (a 1 MB young generation; no Maglev, the mid-tier compiler: 3 MB, and TurboFan
// still optimizes the hot code), unless they were given already (deploy/ gives them;
// docs/benchmarks.md, spire section, has the numbers). V8 sizes its heap and compilers at start, so
// they cannot be set from inside. WRIT_AGENT_NODE_FLAGS replaces the list ('' for Node's defaults;
// '--max-semi-space-size=1 --no-opt --no-maglev' saves 7 MB more and halves the token broker's rate).
const AGENT_NODE_FLAGS = (process.env.WRIT_AGENT_NODE_FLAGS ?? '--max-semi-space-size=1 --no-maglev').split(/\s+/).filter(Boolean);
const agentStart = process.argv[2] === 'agent' && process.argv[3] === 'start';
if (agentStart && typeof process.execve === 'function') {
  const missing = AGENT_NODE_FLAGS.filter((f) => !process.execArgv.includes(f));
  if (missing.length > 0)
    try {
      process.execve(process.execPath, [process.execPath, ...process.execArgv, ...missing, ...process.argv.slice(1)]);
    } catch {
      // not allowed here (a seccomp filter, say): run with the flags it has
    }
}

function newestSource(dir) {
  let t = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = `${dir}/${e.name}`;
    t = Math.max(t, e.isDirectory() ? newestSource(p) : statSync(p).mtimeMs);
  }
  return t;
}
const root = fileURLToPath(new URL('../../../', import.meta.url));
const dist = `${root}dist/writ.js`;
let useDist = false;
if (existsSync(dist) && process.env.WRIT_FROM_SOURCE !== '1') {
  const built = statSync(dist).mtimeMs;
  const pkgs = existsSync(`${root}packages`) ? readdirSync(`${root}packages`) : [];
  useDist = pkgs.every((p) => !existsSync(`${root}packages/${p}/src`) || newestSource(`${root}packages/${p}/src`) <= built);
}
// The agent runs its own entry: the `agent start` command alone, without the CLI's other commands
// and their modules (2 MB less RSS; docs/benchmarks.md, spire section).
const agentDist = `${root}dist/agent.js`;
const entry = agentStart && (!useDist || existsSync(agentDist)) ? (useDist ? agentDist : '../src/agent-main.ts') : useDist ? dist : '../src/main.ts';
const { main } = await import(entry);
process.exitCode = await main(process.argv.slice(2));
