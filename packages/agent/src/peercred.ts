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

let addon: { getPeerCred(fd: number): PeerCred } | undefined;
function load(): { getPeerCred(fd: number): PeerCred } {
  if (!addon) {
    try {
      // From the sources (packages/agent/src) or from the bundled build (dist/).
      const req = createRequire(import.meta.url);
      const found = ['../native/build/peercred.node', '../packages/agent/native/build/peercred.node']
        .map((p) => new URL(p, import.meta.url))
        .find((u) => existsSync(u));
      addon = req(found ? found.pathname : '../native/build/peercred.node') as { getPeerCred(fd: number): PeerCred };
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
