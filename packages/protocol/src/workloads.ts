/**
 * What an agent runs (issue 13, "what runs where, now"): `POST /v1/agent/workloads` with the whole
 * snapshot of the workloads its Workload API attested and served, `{workloads: WorkloadReport[]}`.
 * The agent sends it at start, on change and as a heartbeat; the server resolves each workload's
 * owner and keeps "running now". The decoder is strict: a bad field is ERR_FIELD_INVALID naming it
 * (`workloads[3].imageDigest`), and nothing of the report is stored.
 */
import { WritError, parseSpiffeId } from '@writ/spiffe';
import { IMAGE_DIGEST } from './admitted-images.ts';
import { isObject } from './check.ts';

export const WORKLOAD_LIMITS = {
  /** Workloads in one report (a node runs a few hundred). */
  workloads: 10_000,
  /** SPIFFE IDs served to one workload. */
  spiffeIds: 64,
  spiffeId: 2048,
  key: 512,
  /** Every other string: container, pod, namespace, owner, image. */
  string: 1024,
  /** Labels and annotations of one workload, each. */
  labels: 256,
  /** A label or annotation key (Kubernetes: a 253-character prefix, '/', a 63-character name). */
  labelKey: 320,
  labelValue: 1024,
  annotationValue: 4096,
} as const;

/** One workload as its agent reports it: the store's WorkloadInput without the owner (the server resolves it). */
export interface WorkloadReport {
  /** Unique on its agent: the container ID, else `POD-UID/CONTAINER-NAME`, else `pid:PID:STARTTIME`. */
  readonly key: string;
  /** The SPIFFE IDs the agent served it, sorted. */
  readonly spiffeIds: readonly string[];
  readonly containerId: string | null;
  readonly containerName: string | null;
  readonly podUid: string | null;
  readonly podName: string | null;
  readonly namespace: string | null;
  /** The pod's controller, `Kind/name` (`ReplicaSet/web-7d9f`). */
  readonly podOwner: string | null;
  /** As the runtime reports it (pod status `imageID`): a manifest or an index digest. */
  readonly imageDigest: string | null;
  /** The image reference the runtime reports, without digest or tag (`registry.example/team/web`). */
  readonly imageName: string | null;
  readonly labels: Readonly<Record<string, string>>;
  readonly annotations: Readonly<Record<string, string>>;
}

export interface WorkloadsMessage {
  readonly workloads: readonly WorkloadReport[];
}

const STRING_FIELDS = ['containerId', 'containerName', 'podUid', 'podName', 'namespace', 'podOwner', 'imageName'] as const;
export const WORKLOAD_FIELDS = ['key', 'spiffeIds', ...STRING_FIELDS, 'imageDigest', 'labels', 'annotations'] as const;

export function encodeWorkloads(workloads: readonly WorkloadReport[]): WorkloadsMessage {
  return {
    workloads: workloads.map((w) => ({
      key: w.key,
      spiffeIds: [...w.spiffeIds].sort(),
      containerId: w.containerId,
      containerName: w.containerName,
      podUid: w.podUid,
      podName: w.podName,
      namespace: w.namespace,
      podOwner: w.podOwner,
      imageDigest: w.imageDigest,
      imageName: w.imageName,
      labels: w.labels,
      annotations: w.annotations,
    })),
  };
}

/** Whether `s` holds a C0 control character or DEL (they would end up in logs and tables as they are). */
export function hasControlChar(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) return true;
  }
  return false;
}

const bad = (field: string, why: string): never => {
  throw new WritError('ERR_FIELD_INVALID', `${field}: ${why}`, { field });
};

function text(v: unknown, field: string, max: number): string {
  if (typeof v !== 'string') return bad(field, 'must be a string');
  if (v.length === 0 || v.length > max) return bad(field, `must be 1 to ${max} characters`);
  if (hasControlChar(v)) return bad(field, 'holds a control character');
  return v;
}

const nullable = (v: unknown, field: string, max: number): string | null => (v === null || v === undefined ? null : text(v, field, max));

function stringMap(v: unknown, field: string, valueMax: number): Record<string, string> {
  if (v === undefined || v === null) return {};
  if (!isObject(v)) return bad(field, 'must be an object of strings');
  const keys = Object.keys(v);
  if (keys.length > WORKLOAD_LIMITS.labels) return bad(field, `has more than ${WORKLOAD_LIMITS.labels} keys`);
  const out: Record<string, string> = {};
  for (const k of keys.sort()) {
    text(k, `${field}.${k.slice(0, 80)}`, WORKLOAD_LIMITS.labelKey);
    const val = v[k];
    // An empty value is a value (a label `tier: ""`).
    if (typeof val !== 'string') return bad(`${field}.${k}`, 'must be a string');
    if (val.length > valueMax) return bad(`${field}.${k}`, `is longer than ${valueMax} characters`);
    out[k] = val;
  }
  return out;
}

/** The body of `POST /v1/agent/workloads`, checked whole; ERR_FIELD_INVALID naming the first bad field. */
export function decodeWorkloads(body: unknown): WorkloadReport[] {
  if (!isObject(body)) return bad('body', 'must be an object {workloads: [...]}');
  for (const k of Object.keys(body)) if (k !== 'workloads') throw new WritError('ERR_FIELD_UNKNOWN', `unknown field "${k.slice(0, 80)}"`, { field: k });
  const list = body['workloads'];
  if (!Array.isArray(list)) return bad('workloads', 'must be an array');
  if (list.length > WORKLOAD_LIMITS.workloads) return bad('workloads', `has more than ${WORKLOAD_LIMITS.workloads} items`);
  const keys = new Set<string>();
  return list.map((w, i) => {
    const at = `workloads[${i}]`;
    if (!isObject(w)) return bad(at, 'must be an object');
    for (const k of Object.keys(w))
      if (!(WORKLOAD_FIELDS as readonly string[]).includes(k))
        throw new WritError('ERR_FIELD_UNKNOWN', `unknown field "${at}.${k.slice(0, 80)}"`, { field: `${at}.${k.slice(0, 80)}` });
    const key = text(w['key'], `${at}.key`, WORKLOAD_LIMITS.key);
    if (keys.has(key)) return bad(`${at}.key`, `${key.slice(0, 80)} is reported twice`);
    keys.add(key);
    const ids = w['spiffeIds'];
    if (!Array.isArray(ids) || ids.length === 0) return bad(`${at}.spiffeIds`, 'must be a non-empty array (the IDs served)');
    if (ids.length > WORKLOAD_LIMITS.spiffeIds) return bad(`${at}.spiffeIds`, `has more than ${WORKLOAD_LIMITS.spiffeIds} items`);
    const spiffeIds = ids.map((id, j) => {
      const f = `${at}.spiffeIds[${j}]`;
      const s = text(id, f, WORKLOAD_LIMITS.spiffeId);
      try {
        return parseSpiffeId(s).uri;
      } catch (err) {
        return bad(f, (err as Error).message);
      }
    });
    const strings = Object.fromEntries(STRING_FIELDS.map((k) => [k, nullable(w[k], `${at}.${k}`, WORKLOAD_LIMITS.string)])) as Record<
      (typeof STRING_FIELDS)[number],
      string | null
    >;
    const imageDigest = nullable(w['imageDigest'], `${at}.imageDigest`, WORKLOAD_LIMITS.string);
    if (imageDigest !== null && !IMAGE_DIGEST.test(imageDigest)) bad(`${at}.imageDigest`, 'is not sha256:<64 hex> or sha512:<128 hex>');
    return {
      key,
      spiffeIds: [...new Set(spiffeIds)].sort(),
      ...strings,
      imageDigest,
      labels: stringMap(w['labels'], `${at}.labels`, WORKLOAD_LIMITS.labelValue),
      annotations: stringMap(w['annotations'], `${at}.annotations`, WORKLOAD_LIMITS.annotationValue),
    };
  });
}

/**
 * An image as a container runtime names what it runs: the pod status `imageID`
 * (`docker-pullable://reg/x@sha256:…`, `reg/x@sha256:…`), a docker RepoDigest, or a reference
 * with a tag. The digest only when the runtime names one (a bare `sha256:…` image ID is the
 * configuration's digest, not what a registry served); the name without scheme, tag or digest.
 *
 *     imageOf('docker-pullable://reg.example:5000/team/web@sha256:ab…') // {digest: 'sha256:ab…', name: 'reg.example:5000/team/web'}
 */
export function imageOf(ref: string): { digest: string | null; name: string | null } {
  let r = ref.replace(/^[a-z][a-z0-9+.-]*:\/\//, '');
  let digest: string | null = null;
  const at = r.lastIndexOf('@');
  if (at >= 0) {
    const d = r.slice(at + 1);
    digest = IMAGE_DIGEST.test(d) ? d : null;
    r = r.slice(0, at);
  } else if (IMAGE_DIGEST.test(r) || /^[0-9a-f]{64}$/.test(r)) return { digest: null, name: null };
  // A tag is after the last ':' that follows the last '/' (reg.example:5000/web:1.2).
  const colon = r.lastIndexOf(':');
  if (colon > r.lastIndexOf('/')) r = r.slice(0, colon);
  return { digest, name: r === '' ? null : r };
}
