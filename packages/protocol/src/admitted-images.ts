/**
 * The admitted image digests in the agent sync: the set an agent checks `requireAdmittedImage`
 * entries against. It only grows between prunes, so an agent follows it by version (`EPOCH.SEQ`:
 * the store's prune epoch and the arrival number of the last digest it has) and gets what is new;
 * an agent at another epoch (or none) gets the whole set.
 */
import { WritError } from '@writ/spiffe';

/** `sha256:` + 64 hex or `sha512:` + 128 hex, lower case, as the OCI image spec writes them. */
export const IMAGE_DIGEST = /^(?:sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$/;

export interface AdmittedImagesState {
  /** The version the agent has once it applied this (it reports it back as `images=`). */
  readonly version: string;
  /** true: `digests` is the whole set (replace); false: digests to add to the set of the version the agent reported. */
  readonly full: boolean;
  readonly digests: string[];
}

export interface AdmittedImagesVersion {
  readonly epoch: number;
  readonly seq: number;
}

/** `EPOCH.SEQ` -> numbers; undefined for '' (an agent that has none yet) or anything malformed. */
export function parseImagesVersion(v: string | undefined): AdmittedImagesVersion | undefined {
  const m = v === undefined ? null : /^(\d{1,15})\.(\d{1,15})$/.exec(v);
  return m ? { epoch: Number(m[1]), seq: Number(m[2]) } : undefined;
}

export function formatImagesVersion(v: AdmittedImagesVersion): string {
  return `${v.epoch}.${v.seq}`;
}

/** The agent's check of the answer's `admittedImages` (throws ERR_REQUEST_FAILED naming the problem). */
export function admittedImagesProblem(v: unknown): string | undefined {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return 'admittedImages';
  const o = v as Record<string, unknown>;
  if (typeof o['version'] !== 'string' || !parseImagesVersion(o['version'])) return 'admittedImages.version';
  if (typeof o['full'] !== 'boolean') return 'admittedImages.full';
  const d = o['digests'];
  if (!Array.isArray(d)) return 'admittedImages.digests';
  for (let i = 0; i < d.length; i++) if (typeof d[i] !== 'string' || !IMAGE_DIGEST.test(d[i] as string)) return `admittedImages.digests[${i}]`;
  return undefined;
}

/**
 * The image digests among a workload's selectors: `docker:image_digest:sha256:…`,
 * `containerd:image_digest:sha256:…` and the digest of `k8s:container-image-id:REPO@sha256:…`.
 * Image IDs (`docker:image_config_digest`, a bare `k8s:container-image-id:sha256:…`) are the
 * digests of image configurations, not of what a registry served: they never count.
 */
export function imageDigestsOf(selectors: readonly string[]): string[] {
  const out: string[] = [];
  for (const s of selectors) {
    let d: string | undefined;
    if (s.startsWith('docker:image_digest:')) d = s.slice(20);
    else if (s.startsWith('containerd:image_digest:')) d = s.slice(24);
    else if (s.startsWith('k8s:container-image-id:')) {
      const at = s.lastIndexOf('@');
      d = at > 23 ? s.slice(at + 1) : undefined;
    }
    if (d !== undefined && IMAGE_DIGEST.test(d)) out.push(d);
  }
  return [...new Set(out)];
}

/** A digest as the store and the sync carry it; ERR_FIELD_INVALID otherwise. */
export function checkImageDigest(d: string, field: string): string {
  if (!IMAGE_DIGEST.test(d)) throw new WritError('ERR_FIELD_INVALID', `${field}: ${d.slice(0, 80)} is not sha256:<64 hex> or sha512:<128 hex>`, { field });
  return d;
}
