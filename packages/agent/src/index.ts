export { Agent, type AgentOptions, type EntryView, type ServedSvid } from './agent.ts';
export { WorkloadApiServer, type WorkloadApiOptions } from './workload-api.ts';
export { attestUnix, processStartTime } from './attest/unix.ts';
export { peerCred, type PeerCred } from './peercred.ts';
