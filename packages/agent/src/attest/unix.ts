/**
 * The unix workload attestor: selectors from what the kernel says about the caller, never from
 * what the caller says. uid/gid come from SO_PEERCRED; names, executable path and hash from /proc.
 */
import { createHash } from 'node:crypto';
import { closeSync, fstatSync, openSync, read, readFileSync, readlinkSync, statSync } from 'node:fs';
import { WritError } from '@writ/spiffe';
import type { PeerCred } from '../peercred.ts';

/** Field 22 of /proc/PID/stat: the process start time, which tells a reused PID apart. */
export function processStartTime(pid: number, proc = '/proc'): string {
  const stat = readFileSync(`${proc}/${pid}/stat`, 'utf8');
  // The command name (field 2) may contain spaces and parentheses; fields are counted after the last ')'.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return rest[19]!;
}

/** /etc/passwd and /etc/group as read last, by the file's identity then (read again when it changes). */
const namesCache = new Map<string, { key: string; names: Map<number, string> }>();

/** uid or gid -> name from a passwd/group file; a stat per call, a read only when the file changed (it was a fifth of a call's CPU). */
export function names(file: string): Map<number, string> {
  let key: string;
  try {
    const st = statSync(file);
    key = `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;
  } catch {
    return new Map(); // no such file: names are simply not offered as selectors
  }
  const hit = namesCache.get(file);
  if (hit?.key === key) return hit.names;
  const m = new Map<number, string>();
  try {
    for (const line of readFileSync(file, 'utf8').split('\n')) {
      const [name, , id] = line.split(':');
      if (name && id !== undefined && /^\d+$/.test(id) && !m.has(Number(id))) m.set(Number(id), name);
    }
  } catch {
    return m;
  }
  namesCache.set(file, { key, names: m });
  return m;
}

const hashCache = new Map<string, string>();

const readAt = (fd: number, buf: Buffer, position: number): Promise<number> =>
  new Promise((resolve, reject) => read(fd, buf, 0, buf.length, position, (err, n) => (err ? reject(err) : resolve(n))));

/**
 * SHA-256 of what `fd` holds, read through one buffer. (A read stream's fresh 64 KB chunk per read
 * left a 20 MB binary's worth of freed memory in the agent's RSS: docs/benchmarks.md, spire section.)
 */
async function sha256Of(fd: number): Promise<string> {
  const h = createHash('sha256');
  const buf = Buffer.allocUnsafe(1 << 16);
  for (let pos = 0; ; ) {
    const n = await readAt(fd, buf, pos);
    if (n === 0) return h.digest('hex');
    h.update(buf.subarray(0, n));
    pos += n;
  }
}

/** What a process runs: the executable's path, device and inode, and hash. */
export interface ExeIdentity {
  readonly path: string;
  readonly dev: number;
  readonly ino: number;
  readonly sha256: string;
}

/**
 * The identity of the executable `pid` runs, read through /proc (a file replaced on disk does not
 * fool it). The file is opened before this returns, so what is hashed is what ran at the call, even
 * if the process exec()s meanwhile. Undefined when /proc does not say (another user's process
 * under a hardened /proc).
 */
export function exeIdentity(pid: number, proc = '/proc'): Promise<ExeIdentity | undefined> {
  let path: string;
  let fd: number;
  try {
    path = readlinkSync(`${proc}/${pid}/exe`).replace(/ \(deleted\)$/, '');
    fd = openSync(`${proc}/${pid}/exe`, 'r');
  } catch {
    return Promise.resolve(undefined);
  }
  return (async () => {
    try {
      const st = fstatSync(fd);
      // ctime too: a user can put mtime back after rewriting a file in place (touch -r), never ctime.
      const key = `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;
      let sha256 = hashCache.get(key);
      if (!sha256) {
        sha256 = await sha256Of(fd);
        if (hashCache.size > 1000) hashCache.clear();
        hashCache.set(key, sha256);
      }
      return { path, dev: st.dev, ino: st.ino, sha256 };
    } catch {
      return undefined;
    } finally {
      closeSync(fd);
    }
  })();
}

const sameExe = (a: ExeIdentity | undefined, b: ExeIdentity | undefined): boolean =>
  a === b || (a !== undefined && b !== undefined && a.path === b.path && a.dev === b.dev && a.ino === b.ino && a.sha256 === b.sha256);

export interface UnixAttestation {
  readonly selectors: string[];
  readonly startTime: string;
}

/**
 * Attests a process. `expectedStartTime` and `expectedExe` (taken when the connection was
 * accepted) guard against PID reuse and exec(): if the process that connected has gone and another
 * took its PID, or it runs another executable now, attestation fails.
 */
export async function attestUnix(
  cred: PeerCred,
  opts: { proc?: string; expectedStartTime?: string; expectedExe?: Promise<ExeIdentity | undefined> } = {},
): Promise<UnixAttestation> {
  const proc = opts.proc ?? '/proc';
  const { pid, uid, gid } = cred;
  let before: string;
  try {
    before = processStartTime(pid, proc);
  } catch {
    throw new WritError('ERR_FORBIDDEN', `workload process ${pid} is gone`);
  }
  if (opts.expectedStartTime !== undefined && before !== opts.expectedStartTime)
    throw new WritError('ERR_FORBIDDEN', `PID ${pid} now belongs to another process`);
  const selectors = [`unix:uid:${uid}`, `unix:gid:${gid}`];
  const user = names('/etc/passwd').get(uid);
  const group = names('/etc/group').get(gid);
  if (user) selectors.push(`unix:user:${user}`);
  if (group) selectors.push(`unix:group:${group}`);
  // Another user's process under a hardened /proc: path and hash are not offered.
  const exe = await exeIdentity(pid, proc);
  if (exe) selectors.push(`unix:path:${exe.path}`, `unix:sha256:${exe.sha256}`);
  // Connect, then exec() an allowed binary while a child keeps the connection: the executable
  // taken when the connection was accepted must still be the one running.
  if (opts.expectedExe && !sameExe(await opts.expectedExe, exe))
    throw new WritError('ERR_FORBIDDEN', `workload process ${pid} runs another executable than when it connected`);
  // Re-check after the slow part: the answer must describe the process that is still there.
  let after: string | undefined;
  try {
    after = processStartTime(pid, proc);
  } catch {
    /* gone */
  }
  if (after !== before) throw new WritError('ERR_FORBIDDEN', `workload process ${pid} changed while it was being attested`);
  return { selectors: selectors.sort(), startTime: before };
}
