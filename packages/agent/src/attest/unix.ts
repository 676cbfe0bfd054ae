/**
 * The unix workload attestor: selectors from what the kernel says about the caller, never from
 * what the caller says. uid/gid come from SO_PEERCRED; names, executable path and hash from /proc.
 */
import { createHash } from 'node:crypto';
import { createReadStream, readFileSync, readlinkSync, statSync } from 'node:fs';
import { WritError } from '@writ/spiffe';
import type { PeerCred } from '../peercred.ts';

/** Field 22 of /proc/PID/stat: the process start time, which tells a reused PID apart. */
export function processStartTime(pid: number, proc = '/proc'): string {
  const stat = readFileSync(`${proc}/${pid}/stat`, 'utf8');
  // The command name (field 2) may contain spaces and parentheses; fields are counted after the last ')'.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return rest[19]!;
}

function names(file: string): Map<number, string> {
  const m = new Map<number, string>();
  try {
    for (const line of readFileSync(file, 'utf8').split('\n')) {
      const [name, , id] = line.split(':');
      if (name && id !== undefined && /^\d+$/.test(id) && !m.has(Number(id))) m.set(Number(id), name);
    }
  } catch {
    /* no such file: names are simply not offered as selectors */
  }
  return m;
}

const hashCache = new Map<string, string>();

/** sha256 of the executable the process runs (read through /proc, so a file replaced on disk does not fool it). */
async function exeHash(pid: number, proc: string): Promise<string> {
  const st = statSync(`${proc}/${pid}/exe`);
  const key = `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}`;
  const hit = hashCache.get(key);
  if (hit) return hit;
  const h = createHash('sha256');
  await new Promise<void>((resolve, reject) =>
    createReadStream(`${proc}/${pid}/exe`)
      .on('data', (d) => h.update(d))
      .on('end', resolve)
      .on('error', reject),
  );
  const digest = h.digest('hex');
  if (hashCache.size > 1000) hashCache.clear();
  hashCache.set(key, digest);
  return digest;
}

export interface UnixAttestation {
  readonly selectors: string[];
  readonly startTime: string;
}

/**
 * Attests a process. `expectedStartTime` (taken when the connection was accepted) guards against
 * PID reuse: if the process that connected has gone and another took its PID, attestation fails.
 */
export async function attestUnix(cred: PeerCred, opts: { proc?: string; expectedStartTime?: string } = {}): Promise<UnixAttestation> {
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
  try {
    selectors.push(`unix:path:${readlinkSync(`${proc}/${pid}/exe`).replace(/ \(deleted\)$/, '')}`);
    selectors.push(`unix:sha256:${await exeHash(pid, proc)}`);
  } catch {
    // Another user's process under a hardened /proc: path and hash are not offered.
  }
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
