/**
 * `writ oci-hook`: gives a container the agent's Workload API without its image knowing Writ,
 * for runtimes driven without Kubernetes (runc under Docker, Podman, containerd).
 *
 * Two halves, because the OCI runtime reads `process.env` before any hook runs:
 * - `prepare` edits a bundle's config.json before `create`: SPIFFE_ENDPOINT_SOCKET in the
 *   process environment, and itself as a `createContainer` hook.
 * - `create-container` is that hook. The runtime-spec runs it in the container's mount namespace
 *   after the mounts are made and before pivot_root, with the state JSON on stdin; it reads the
 *   bundle's config.json and bind-mounts the agent's socket directory read-only into the rootfs.
 * A container annotated `writ.dev/workload-api: "false"` is left alone by both.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { basename, dirname, isAbsolute, join, normalize, posix, resolve } from 'node:path';
import type { Command } from 'commander';
import { WritError } from '@writ/spiffe';

export const OPT_OUT_ANNOTATION = 'writ.dev/workload-api';
export const DEFAULT_AGENT_SOCKET = '/run/writ/agent/api.sock';
export const DEFAULT_CONTAINER_DIR = '/run/spiffe/workload';
/** Largest config.json or state JSON read: a real one is a few KiB. */
const MAX_JSON = 4 * 1024 * 1024;

export interface HookOptions {
  /** The agent's Workload API socket on the host; its directory is what the container sees. */
  readonly socket: string;
  /** Where that directory appears inside the container. */
  readonly containerDir: string;
}

export interface HookCommand {
  readonly path: string;
  readonly args: readonly string[];
  readonly timeout?: number;
}

type Json = Record<string, unknown>;

const bad = (msg: string): never => {
  throw new WritError('ERR_CONFIG_INVALID', `oci-hook: ${msg}`, { field: 'oci-hook' });
};

/** Checks the options once, for both halves: absolute, normal paths only. */
export function checkHookOptions(o: HookOptions): HookOptions {
  for (const [flag, p] of [
    ['--socket', o.socket],
    ['--container-dir', o.containerDir],
  ] as const) {
    if (!isAbsolute(p) || normalize(p) !== p || p.split('/').includes('..') || p === '/' || p.endsWith('/'))
      bad(`${flag} must be an absolute, normalized path (not /), got ${JSON.stringify(p.slice(0, 200))}`);
  }
  return o;
}

/** The SPIFFE_ENDPOINT_SOCKET value a container gets. */
export function endpointOf(o: HookOptions): string {
  return `unix://${posix.join(o.containerDir, basename(o.socket))}`;
}

export function parseJsonDocument(text: string, what: string): Json {
  if (text.length > MAX_JSON) bad(`${what} is larger than ${MAX_JSON} bytes`);
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return bad(`${what} is not JSON`);
  }
  if (!v || typeof v !== 'object' || Array.isArray(v)) bad(`${what} must be a JSON object`);
  return v as Json;
}

const optedOut = (config: Json): boolean => {
  const a = config['annotations'];
  return !!a && typeof a === 'object' && (a as Json)[OPT_OUT_ANNOTATION] === 'false';
};

function checkConfig(config: Json): { process: Json; env: string[] } {
  const v = config['ociVersion'];
  if (typeof v !== 'string' || !/^1\.\d+\.\d+/.test(v)) bad('config.json: ociVersion must be a 1.x version');
  const proc = config['process'];
  if (!proc || typeof proc !== 'object' || Array.isArray(proc)) return bad('config.json: process must be an object');
  const env = (proc as Json)['env'] ?? [];
  if (!Array.isArray(env) || env.some((e) => typeof e !== 'string')) bad('config.json: process.env must be a list of strings');
  return { process: proc as Json, env: env as string[] };
}

/**
 * The runtime config with the Workload API added: SPIFFE_ENDPOINT_SOCKET (unless the container
 * sets its own) and `hook` as a createContainer hook (once: preparing twice changes nothing).
 * The input is not modified.
 */
export function prepareConfig(input: Json, opts: HookOptions, hook: HookCommand): Json {
  checkHookOptions(opts);
  const config = structuredClone(input);
  const { process: proc, env } = checkConfig(config);
  if (optedOut(config)) return config;
  if (!env.some((e) => e.startsWith('SPIFFE_ENDPOINT_SOCKET='))) proc['env'] = [...env, `SPIFFE_ENDPOINT_SOCKET=${endpointOf(opts)}`];
  const hooks = config['hooks'] ?? {};
  if (typeof hooks !== 'object' || Array.isArray(hooks)) bad('config.json: hooks must be an object');
  const stage = (hooks as Json)['createContainer'] ?? [];
  if (!Array.isArray(stage)) return bad('config.json: hooks.createContainer must be a list');
  const entry: Json = { path: hook.path, args: [...hook.args], ...(hook.timeout ? { timeout: hook.timeout } : {}) };
  const same = (h: unknown): boolean => JSON.stringify(h) === JSON.stringify(entry);
  config['hooks'] = { ...(hooks as Json), createContainer: stage.some(same) ? stage : [...stage, entry] };
  return config;
}

export interface MountPlan {
  /** The agent's socket directory on the host. */
  readonly source: string;
  /** The same directory seen from the container's rootfs, before pivot_root. */
  readonly target: string;
  /** The rootfs on the host, under which `target` must stay. */
  readonly rootfs: string;
}

/**
 * What the createContainer hook mounts, from the state JSON (stdin) and the bundle's config.json;
 * undefined when the container opted out.
 */
export function planMount(state: Json, readConfig: (path: string) => string, opts: HookOptions): MountPlan | undefined {
  checkHookOptions(opts);
  const bundle = state['bundle'];
  if (typeof bundle !== 'string' || !isAbsolute(bundle)) return bad('state: bundle must be an absolute path');
  if (typeof state['id'] !== 'string' || state['id'] === '') bad('state: id must be a string');
  const config = parseJsonDocument(readConfig(join(bundle, 'config.json')), 'config.json');
  checkConfig(config);
  if (optedOut(config)) return undefined;
  const root = config['root'];
  const rootPath = root && typeof root === 'object' ? (root as Json)['path'] : undefined;
  if (typeof rootPath !== 'string' || rootPath === '') return bad('config.json: root.path must be a path');
  const rootfs = normalize(isAbsolute(rootPath) ? rootPath : join(bundle, rootPath));
  return { source: dirname(opts.socket), target: join(rootfs, opts.containerDir), rootfs };
}

/**
 * Creates `target` under `rootfs` one directory at a time, refusing a symbolic link or a file on
 * the way: the image owns those paths, and a link would make the hook write outside its rootfs.
 */
export function makeTargetDir(plan: MountPlan): void {
  const rel = plan.target.slice(plan.rootfs.length).split('/').filter(Boolean);
  if (!plan.target.startsWith(`${plan.rootfs}/`) || rel.length === 0) bad('the mount target is not inside the rootfs');
  let at = plan.rootfs;
  for (const part of rel) {
    at = join(at, part);
    let st: ReturnType<typeof lstatSync> | undefined;
    try {
      st = lstatSync(at);
    } catch {
      st = undefined;
    }
    if (!st) mkdirSync(at, { mode: 0o755 });
    else if (st.isSymbolicLink()) bad(`${at.slice(plan.rootfs.length)} in the image is a symbolic link: refusing to mount through it`);
    else if (!st.isDirectory()) bad(`${at.slice(plan.rootfs.length)} in the image is not a directory`);
  }
}

const MOUNT = ['/usr/bin/mount', '/bin/mount'];

/** Bind-mounts the socket directory read-only (no devices, no set-uid, nothing executable). */
export function bindReadOnly(plan: MountPlan): void {
  const mount = MOUNT.find((m) => existsSync(m)) ?? bad(`no mount(8) at ${MOUNT.join(' or ')}`);
  if (!existsSync(plan.source)) bad(`the agent's socket directory ${plan.source} does not exist: is writ agent running?`);
  makeTargetDir(plan);
  const run = (args: string[]): void => {
    try {
      execFileSync(mount, args, { stdio: ['ignore', 'ignore', 'pipe'], env: {} });
    } catch (err) {
      bad(`mount ${args.join(' ')}: ${String((err as { stderr?: Buffer }).stderr ?? (err as Error).message).trim()}`);
    }
  };
  run(['--bind', plan.source, plan.target]);
  run(['-o', 'remount,bind,ro,nosuid,nodev,noexec', plan.target]);
}

/** Reads all of stdin, bounded. */
export async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of process.stdin as AsyncIterable<Buffer>) {
    size += c.length;
    if (size > MAX_JSON) bad(`stdin is larger than ${MAX_JSON} bytes`);
    chunks.push(c);
  }
  return Buffer.concat(chunks).toString('utf8');
}

export function readBounded(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    return bad(`cannot read ${path}: ${(err as NodeJS.ErrnoException).code}`);
  }
}

const hookFlags = (c: Command): Command =>
  c
    .option('--socket <path>', "the agent's Workload API socket on the host (its directory is mounted)", DEFAULT_AGENT_SOCKET)
    .option('--container-dir <dir>', 'where that directory appears in the container', DEFAULT_CONTAINER_DIR);

export function registerOciHook(program: Command): void {
  const hook = program
    .command('oci-hook')
    .description("the agent's Workload API in containers started without Kubernetes (runc, Podman, containerd): an OCI runtime hook");
  hookFlags(
    hook
      .command('prepare')
      .description(
        'before create: add SPIFFE_ENDPOINT_SOCKET and the createContainer hook to a runtime config (--bundle DIR edits DIR/config.json; else stdin to stdout)',
      )
      .option('--bundle <dir>', 'the OCI bundle whose config.json to edit in place'),
  ).action(async (f: { socket: string; containerDir: string; bundle?: string }) => {
    const opts = checkHookOptions({ socket: f.socket, containerDir: f.containerDir });
    const file = f.bundle ? join(f.bundle, 'config.json') : undefined;
    const config = parseJsonDocument(file ? readBounded(file) : await readStdin(), file ?? 'stdin');
    // The hook runs this same command with the same Node: runtimes give hooks an empty PATH.
    const self = process.argv[1] ? resolve(process.argv[1]) : bad('cannot tell where the writ command is');
    const out = prepareConfig(config, opts, {
      path: process.execPath,
      args: [process.execPath, self, 'oci-hook', 'create-container', '--socket', opts.socket, '--container-dir', opts.containerDir],
      timeout: 10,
    });
    const text = `${JSON.stringify(out, null, 2)}\n`;
    if (!file) process.stdout.write(text);
    else {
      writeFileSync(`${file}.writ-tmp`, text, { mode: 0o644 });
      renameSync(`${file}.writ-tmp`, file);
    }
  });
  hookFlags(hook.command('create-container').description('the createContainer hook itself: state JSON on stdin, mounts the socket directory read-only')).action(
    async (f: { socket: string; containerDir: string }) => {
      const opts = checkHookOptions({ socket: f.socket, containerDir: f.containerDir });
      const plan = planMount(parseJsonDocument(await readStdin(), 'state'), readBounded, opts);
      if (plan) bindReadOnly(plan);
    },
  );
}
