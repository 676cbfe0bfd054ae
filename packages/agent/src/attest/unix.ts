/**
 * The unix workload attestor: selectors from what the kernel says about the caller, never from
 * what the caller says. uid/gid come from SO_PEERCRED; names, executable path and hash from /proc.
 */
import { createHash } from 'node:crypto';
import { closeSync, createReadStream, fstatSync, openSync, readFileSync, readSync, readlinkSync, statSync, type Stats } from 'node:fs';
import { WritError } from '@writ/spiffe';
import type { PeerCred } from '../peercred.ts';

/** Field 22 of /proc/PID/stat: the process start time, which tells a reused PID apart. */
export function processStartTime(pid: number, proc = '/proc'): string {
  return startTimeOf(readFileSync(`${proc}/${pid}/stat`, 'utf8'));
}

function startTimeOf(stat: string): string {
  // The command name (field 2) may contain spaces and parentheses; fields are counted after the last ')'.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const t = rest[19];
  if (t === undefined || !/^\d+$/.test(t)) throw new WritError('ERR_FORBIDDEN', 'cannot read the process start time');
  return t;
}

/**
 * /proc/PID/stat held open from the moment a caller connects. The kernel binds the open file to that
 * process, not to its number: once the process exits every read fails (ESRCH), even after its PID
 * is reused. A read is one pread, where opening, reading and closing the file by its path cost
 * twice as much and a call read it twice.
 */
export class ProcessStat {
  readonly #fd: number;
  readonly #buf = Buffer.allocUnsafe(4096);
  #open = true;

  constructor(pid: number, proc = '/proc') {
    this.#fd = openSync(`${proc}/${pid}/stat`, 'r');
  }

  /** Field 22, the start time; throws when the process is gone. */
  startTime(): string {
    if (!this.#open) throw new WritError('ERR_FORBIDDEN', 'the connection is closed');
    const n = readSync(this.#fd, this.#buf, 0, this.#buf.length, 0);
    return startTimeOf(this.#buf.toString('latin1', 0, n));
  }

  close(): void {
    if (this.#open) (this.#open = false), closeSync(this.#fd);
  }
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
// ctime too: a user can put mtime back after rewriting a file in place (touch -r), never ctime.
const fileKey = (st: Stats): string => `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;

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
    // A file hashed before (same device, inode, size and times, seen through the link): nothing to
    // hash, so nothing to open (a call did open, fstat and close it every time).
    const st = statSync(`${proc}/${pid}/exe`);
    const sha256 = hashCache.get(fileKey(st));
    if (sha256) return Promise.resolve({ path, dev: st.dev, ino: st.ino, sha256 });
    fd = openSync(`${proc}/${pid}/exe`, 'r');
  } catch {
    return Promise.resolve(undefined);
  }
  return (async () => {
    try {
      const st = fstatSync(fd);
      const key = fileKey(st);
      let sha256 = hashCache.get(key);
      if (!sha256) {
        const h = createHash('sha256');
        await new Promise<void>((resolve, reject) =>
          createReadStream('', { fd, autoClose: false, start: 0 })
            .on('data', (d) => h.update(d))
            .on('end', resolve)
            .on('error', reject),
        );
        sha256 = h.digest('hex');
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
 * took its PID, or it runs another executable now, attestation fails. `stat` (opened then too) is
 * read for the start time instead of /proc/PID/stat by its path.
 */
export async function attestUnix(
  cred: PeerCred,
  opts: { proc?: string; expectedStartTime?: string; expectedExe?: Promise<ExeIdentity | undefined>; stat?: ProcessStat } = {},
): Promise<UnixAttestation> {
  const proc = opts.proc ?? '/proc';
  const { pid, uid, gid } = cred;
  // The caller's stat held open since it connected, if given: it fails once that process is gone.
  const startTime = (): string => (opts.stat ? opts.stat.startTime() : processStartTime(pid, proc));
  let before: string;
  try {
    before = startTime();
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
    after = startTime();
  } catch {
    /* gone */
  }
  if (after !== before) throw new WritError('ERR_FORBIDDEN', `workload process ${pid} changed while it was being attested`);
  return { selectors: selectors.sort(), startTime: before };
}
