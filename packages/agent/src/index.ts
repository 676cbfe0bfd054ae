// What the CLI (and a program embedding an agent) uses; attestation internals stay inside.
export { Agent, type AgentHealth, type AgentOptions, type EntryView, type ServedSvid } from './agent.ts';
export type { ServerApi } from './server-client.ts';
export { WorkloadApiServer, type WorkloadApiOptions } from './workload-api.ts';
export { CSI_DRIVER_NAME, CsiNodePlugin, systemMounter, type CsiPluginOptions, type Mounter } from './csi.ts';
export { dockerAttestor, type DockerAttestorOptions } from './attest/docker.ts';
export { k8sAttestor, type K8sAttestorOptions } from './attest/k8s.ts';
export { containerdAttestor, type ContainerdAttestorOptions } from './attest/containerd.ts';
export type { Attestation, WorkloadAttestor } from './attest/attestation.ts';
export { WorkloadReporter, describeWorkload, type AttestedCaller, type WorkloadFacts, type WorkloadReporterOptions } from './workload-reporter.ts';
