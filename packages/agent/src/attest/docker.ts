/**
 * The docker workload attestor: container ID from the caller's cgroup, then labels, image and image
 * digest from the Docker Engine API on its Unix socket. Selectors (SPIRE-compatible where SPIRE
 * has them): docker:label:K:V, docker:image_id:NAME, docker:image_config_digest:sha256:…,
 * docker:image_digest:sha256:…, docker:container_name:NAME.
 */
import { WritError } from '@writ/spiffe';
import type { PeerCred } from '../peercred.ts';
import { readCgroup } from './cgroup.ts';
import type { Attestation } from './attestation.ts';
import { getJson } from './http-json.ts';

export interface DockerAttestorOptions {
  readonly socketPath?: string;
  readonly apiVersion?: string;
  readonly proc?: string;
}

interface ContainerJson {
  Id?: string;
  Name?: string;
  Image?: string;
  Config?: { Image?: string; Labels?: Record<string, string> | null };
}
interface ImageJson {
  RepoDigests?: string[] | null;
}

export function dockerAttestor(opts: DockerAttestorOptions = {}): (cred: PeerCred) => Promise<Attestation> {
  const socketPath = opts.socketPath ?? '/var/run/docker.sock';
  const v = opts.apiVersion ?? 'v1.41';
  return async (cred) => {
    const { containerId } = readCgroup(cred.pid, opts.proc);
    if (!containerId) return { selectors: [] }; // not in a container: nothing to add
    const c = await getJson(`http://docker/${v}/containers/${containerId}/json`, { socketPath });
    if (c.status === 404) return { selectors: [] };
    if (c.status !== 200) throw new WritError('ERR_REQUEST_FAILED', `docker: container ${containerId.slice(0, 12)}: HTTP ${c.status}`);
    const info = c.body as ContainerJson;
    const out: string[] = [];
    for (const [k, val] of Object.entries(info.Config?.Labels ?? {})) out.push(`docker:label:${k}:${val}`);
    if (info.Config?.Image) out.push(`docker:image_id:${info.Config.Image}`);
    if (info.Image) {
      out.push(`docker:image_config_digest:${info.Image}`);
      const img = await getJson(`http://docker/${v}/images/${encodeURIComponent(info.Image)}/json`, { socketPath });
      for (const d of (img.body as ImageJson).RepoDigests ?? []) {
        const at = d.lastIndexOf('@');
        if (at > 0) out.push(`docker:image_digest:${d.slice(at + 1)}`);
      }
    }
    if (info.Name) out.push(`docker:container_name:${info.Name.replace(/^\//, '')}`);
    return { selectors: [...new Set(out)], containerId };
  };
}
