/** The kernel's credentials of a Unix-socket peer (SO_PEERCRED), through the addon in ../native. */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { Socket } from 'node:net';
import { WritError } from '@writ/spiffe';

export interface PeerCred {
  readonly pid: number;
  readonly uid: number;
  readonly gid: number;
}

interface Addon {
  getPeerCred(fd: number): PeerCred;
  /** An addon built before it was added has none. */
  mallocTrim?(): boolean;
}

let addon: Addon | undefined;
function load(): Addon {
  if (!addon) {
    try {
      // From the sources (packages/agent/src) or from the bundled build (dist/).
      const req = createRequire(import.meta.url);
      const found = ['../native/build/peercred.node', '../packages/agent/native/build/peercred.node']
        .map((p) => new URL(p, import.meta.url))
        .find((u) => existsSync(u));
      addon = req(found ? found.pathname : '../native/build/peercred.node') as Addon;
    } catch (err) {
      throw new WritError('ERR_INTERNAL', `the peer-credential addon is not built (run npm ci on Linux): ${(err as Error).message}`);
    }
  }
  return addon;
}

export function peerCred(socket: Socket): PeerCred {
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) throw new WritError('ERR_INTERNAL', 'socket has no file descriptor');
  return load().getPeerCred(fd);
}

/**
 * Gives the memory glibc keeps after it was freed back to the kernel (malloc_trim(0)): a signing
 * round's TLS, X.509 and key allocations left 2-4 MB of free pages in the agent's malloc arenas.
 * Without the addon (not built, not Linux) it does nothing.
 */
export function releaseFreedMemory(): void {
  try {
    load().mallocTrim?.();
  } catch {
    // no addon: the unix attestor reports that where it is needed
  }
}
