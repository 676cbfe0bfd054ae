export { Agent, type AgentOptions, type EntryView, type ServedSvid } from './agent.ts';
export { WorkloadApiServer, type WorkloadApiOptions } from './workload-api.ts';
export { attestUnix, processStartTime } from './attest/unix.ts';
export { peerCred, type PeerCred } from './peercred.ts';
export { dockerAttestor, type DockerAttestorOptions } from './attest/docker.ts';
export { k8sAttestor, type K8sAttestorOptions } from './attest/k8s.ts';
export { parseCgroup, readCgroup } from './attest/cgroup.ts';
export { containerdAttestor, type ContainerdAttestorOptions } from './attest/containerd.ts';
