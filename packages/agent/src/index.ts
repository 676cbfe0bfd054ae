export { Agent, serverIdentity, type AgentOptions, type EntryView, type ServedSvid } from './agent.ts';
export { ServerClient, type ServerApi } from './server-client.ts';
export { WorkloadApiServer, type WorkloadApiOptions } from './workload-api.ts';
export { attestUnix, exeIdentity, processStartTime, type ExeIdentity } from './attest/unix.ts';
export { peerCred, type PeerCred } from './peercred.ts';
export { dockerAttestor, type DockerAttestorOptions } from './attest/docker.ts';
export { k8sAttestor, type K8sAttestorOptions } from './attest/k8s.ts';
export { parseCgroup, readCgroup } from './attest/cgroup.ts';
export { containerdAttestor, type ContainerdAttestorOptions } from './attest/containerd.ts';
