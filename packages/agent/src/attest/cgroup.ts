/**
 * Container and pod identity from /proc/PID/cgroup, for cgroup v1 and v2 layouts of Docker,
 * containerd/CRI-O and the kubelet (cgroupfs and systemd drivers).
 */
import { readFileSync } from 'node:fs';

export interface CgroupIdentity {
  /** 64 hex characters, or undefined when the process is not in a container. */
  readonly containerId: string | undefined;
  /** Kubernetes pod UID (with dashes), when the cgroup path names one. */
  readonly podUid: string | undefined;
}

const CONTAINER = /(?:^|[/-])([0-9a-f]{64})(?:\.scope)?$/;
// cgroupfs: /kubepods/burstable/pod<uid>/...; systemd: kubepods-burstable-pod<uid_with_underscores>.slice
const POD = /pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})/;

/** Parses the text of /proc/PID/cgroup. Lines are `hierarchy:controllers:path`; v2 has one `0::path`. */
export function parseCgroup(text: string): CgroupIdentity {
  let containerId: string | undefined;
  let podUid: string | undefined;
  for (const line of text.split('\n')) {
    const path = line.split(':').slice(2).join(':');
    if (!path) continue;
    const last = path.split('/').filter(Boolean).at(-1) ?? '';
    const c = CONTAINER.exec(last);
    if (c && !containerId) containerId = c[1];
    const p = POD.exec(path);
    if (p && !podUid) podUid = p[1]!.replace(/_/g, '-');
  }
  return { containerId, podUid };
}

export function readCgroup(pid: number, proc = '/proc'): CgroupIdentity {
  try {
    return parseCgroup(readFileSync(`${proc}/${pid}/cgroup`, 'utf8'));
  } catch {
    return { containerId: undefined, podUid: undefined };
  }
}
