/**
 * The k8s workload attestor: pod UID and container ID from the caller's cgroup, then the pod from
 * the kubelet's /pods endpoint. Selectors: k8s:ns, k8s:sa, k8s:pod-label:K:V, k8s:pod-name,
 * k8s:pod-uid, k8s:pod-owner:KIND:NAME and k8s:pod-owner-uid:KIND:UID (one pair per owner
 * reference, as SPIRE's k8s workload attestor has them), k8s:container-name, k8s:container-image,
 * k8s:container-image-id, k8s:node-name. The pod's annotations go with the attestation for the
 * workload report (owners), never as selectors: whoever may edit a pod may edit them.
 */
import { readFileSync } from 'node:fs';
import { WritError } from '@writ/spiffe';
import type { PeerCred } from '../peercred.ts';
import { readCgroup } from './cgroup.ts';
import type { Attestation } from './attestation.ts';
import { getJson } from './http-json.ts';

export interface K8sAttestorOptions {
  /** e.g. https://127.0.0.1:10250 (authenticated) or http://127.0.0.1:10255 (read-only port). */
  readonly kubeletUrl: string;
  readonly caFile?: string;
  /** Bearer token file for the kubelet (the agent's service account token). */
  readonly tokenFile?: string;
  readonly proc?: string;
  /** How long a /pods answer is reused. */
  readonly cacheMs?: number;
}

interface ContainerStatus {
  name?: string;
  image?: string;
  imageID?: string;
  containerID?: string;
}
interface Pod {
  metadata?: {
    name?: string;
    namespace?: string;
    uid?: string;
    labels?: Record<string, string> | null;
    annotations?: Record<string, string> | null;
    ownerReferences?: Array<{ kind?: string; name?: string; uid?: string; controller?: boolean }> | null;
  };
  spec?: { serviceAccountName?: string; nodeName?: string };
  status?: {
    containerStatuses?: ContainerStatus[] | null;
    initContainerStatuses?: ContainerStatus[] | null;
    ephemeralContainerStatuses?: ContainerStatus[] | null;
  };
}

export function k8sAttestor(opts: K8sAttestorOptions): (cred: PeerCred) => Promise<Attestation> {
  const ca = opts.caFile ? readFileSync(opts.caFile, 'utf8') : undefined;
  let cache: { at: number; pods: Pod[] } | undefined;
  const pods = async (fresh: boolean): Promise<Pod[]> => {
    if (!fresh && cache && Date.now() - cache.at < (opts.cacheMs ?? 2000)) return cache.pods;
    const token = opts.tokenFile ? readFileSync(opts.tokenFile, 'utf8').trim() : undefined;
    const r = await getJson(new URL('/pods', opts.kubeletUrl).toString(), {
      ...(ca ? { ca } : {}),
      ...(token ? { headers: { authorization: `Bearer ${token}` } } : {}),
    });
    if (r.status !== 200) throw new WritError('ERR_REQUEST_FAILED', `kubelet /pods: HTTP ${r.status}`);
    const items = (r.body as { items?: Pod[] }).items;
    if (!Array.isArray(items)) throw new WritError('ERR_REQUEST_FAILED', 'kubelet /pods: not a PodList');
    cache = { at: Date.now(), pods: items };
    return items;
  };
  return async (cred) => {
    const { containerId, podUid } = readCgroup(cred.pid, opts.proc);
    if (!podUid && !containerId) return { selectors: [] };
    // A pod that just started may be missing from a cached list: look again once.
    for (const fresh of [false, true]) {
      for (const pod of await pods(fresh)) {
        if (podUid && pod.metadata?.uid !== podUid) continue;
        const statuses = [
          ...(pod.status?.containerStatuses ?? []),
          ...(pod.status?.initContainerStatuses ?? []),
          ...(pod.status?.ephemeralContainerStatuses ?? []),
        ];
        const container = statuses.find((s) => containerId && s.containerID?.endsWith(`://${containerId}`));
        if (!container && containerId) continue;
        const m = pod.metadata ?? {};
        const out = [
          `k8s:ns:${m.namespace ?? ''}`,
          `k8s:sa:${pod.spec?.serviceAccountName ?? 'default'}`,
          `k8s:pod-name:${m.name ?? ''}`,
          `k8s:pod-uid:${m.uid ?? ''}`,
          ...(pod.spec?.nodeName ? [`k8s:node-name:${pod.spec.nodeName}`] : []),
          ...Object.entries(m.labels ?? {}).map(([k, v]) => `k8s:pod-label:${k}:${v}`),
          ...(m.ownerReferences ?? []).flatMap((o) => [`k8s:pod-owner:${o.kind ?? ''}:${o.name ?? ''}`, `k8s:pod-owner-uid:${o.kind ?? ''}:${o.uid ?? ''}`]),
          ...(container?.name ? [`k8s:container-name:${container.name}`] : []),
          ...(container?.image ? [`k8s:container-image:${container.image}`] : []),
          ...(container?.imageID ? [`k8s:container-image-id:${container.imageID}`] : []),
        ];
        return { selectors: out, containerId, annotations: m.annotations ?? {} };
      }
    }
    return { selectors: [] };
  };
}
