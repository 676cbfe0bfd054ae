/** What a workload attestor finds out about a caller. */
import type { PeerCred } from '../peercred.ts';

export interface Attestation {
  /** What entries match against (`k8s:ns:shop`, `docker:image_digest:sha256:…`). */
  readonly selectors: string[];
  /** The caller's container, from its cgroup. */
  readonly containerId?: string | undefined;
  /** The pod's annotations: reported to the server (owners), never selectors. */
  readonly annotations?: Readonly<Record<string, string>> | undefined;
}

/** A workload attestor: bare selectors, or an attestation with what is not a selector. */
export type WorkloadAttestor = (cred: PeerCred) => Promise<string[] | Attestation>;
