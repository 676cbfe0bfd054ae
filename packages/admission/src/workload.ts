/**
 * The pod inside an admitted object, and Pod Security Admission's rules for which requests are
 * checked at all: the pod-spec resources and their subresources, UPDATEs that change nothing PSA
 * checks, and the names a pod is known by (its workload) for exceptions.
 */
import type { PodLike } from './types.ts';

type Json = Record<string, unknown>;

function obj(value: unknown): Json | undefined {
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Json) : undefined;
}

function list(value: unknown): readonly unknown[] {
  return Array.isArray(value) ? value : [];
}

function str(value: unknown): string | undefined {
  return typeof value === 'string' && value !== '' ? value : undefined;
}

/** Where each kind keeps its pod template (`undefined`: the object is the pod itself). */
const TEMPLATE_PATHS: Readonly<Record<string, readonly string[] | undefined>> = {
  Pod: [],
  PodTemplate: ['template'],
  ReplicationController: ['spec', 'template'],
  ReplicaSet: ['spec', 'template'],
  Deployment: ['spec', 'template'],
  StatefulSet: ['spec', 'template'],
  DaemonSet: ['spec', 'template'],
  Job: ['spec', 'template'],
  CronJob: ['spec', 'jobTemplate', 'spec', 'template'],
};

/** The kinds whose objects hold a pod spec (those PSA checks). */
export const POD_SPEC_KINDS: readonly string[] = Object.keys(TEMPLATE_PATHS);

export interface PodOfResult {
  /**
   * The pod to check: a Pod as it is, or a template with its own metadata (annotations, labels) plus
   * the workload's namespace and the workload as its controller owner (for exception matching).
   */
  readonly pod: PodLike;
  /** JSON pointer of the pod spec in the object (`/spec/template/spec`), for the mutating webhook's JSONPatch. */
  readonly specPath: string;
}

/**
 * The pod of a Pod, PodTemplate, ReplicationController, ReplicaSet, Deployment, StatefulSet,
 * DaemonSet, Job or CronJob; undefined for another kind, or a workload without a pod template
 * (PSA admits those unchecked).
 * @example podOf('CronJob', cronJob)?.specPath // '/spec/jobTemplate/spec/template/spec'
 */
export function podOf(kind: string, object: unknown): PodOfResult | undefined {
  const path = Object.hasOwn(TEMPLATE_PATHS, kind) ? TEMPLATE_PATHS[kind] : undefined;
  const root = obj(object);
  if (path === undefined || root === undefined) return undefined;
  if (path.length === 0) return { pod: root as PodLike, specPath: '/spec' };
  let template: Json | undefined = root;
  for (const key of path) template = obj(template?.[key]);
  if (template === undefined) return undefined;
  const meta = obj(root.metadata) ?? {};
  const templateMeta = obj(template.metadata) ?? {};
  const owner = { kind, name: typeof meta.name === 'string' ? meta.name : '', controller: true };
  const namespace = templateMeta.namespace ?? meta.namespace;
  const metadata = { ...templateMeta, ...(typeof namespace === 'string' ? { namespace } : {}), ownerReferences: [owner] };
  const pod: PodLike = { metadata, ...(obj(template.spec) === undefined ? {} : { spec: obj(template.spec) as Json }) };
  return { pod, specPath: `/${[...path, 'spec'].join('/')}` };
}

/**
 * A Deployment's ReplicaSets are `<deployment>-<pod-template-hash>`, the hash in Kubernetes' safe
 * alphabet; a CronJob's Jobs are `<cronjob>-<scheduled minute since the epoch>`.
 */
const SAFE_ALPHABET_SUFFIX = /-[bcdfghjklmnpqrstvwxz2456789]{8,10}$/;
const CRONJOB_SUFFIX = /-[0-9]{8,}$/;

function controllerOf(meta: Json): { kind: string; name: string } | undefined {
  const refs = list(meta.ownerReferences).map(obj);
  const ref = refs.find((r) => r?.controller === true) ?? (refs.length === 1 ? refs[0] : undefined);
  const name = str(ref?.name);
  return name === undefined ? undefined : { kind: str(ref?.kind) ?? '', name };
}

/**
 * Every name the pod is known by, most specific first: its own name (or generateName's prefix),
 * its controller's name, and the workload above that controller when Kubernetes' naming shows it
 * (the Deployment of a ReplicaSet, the CronJob of a Job). Exceptions' `workloads` match any of them.
 * @example workloadNames(podOfDeploymentWeb) // ['web-5d4f8c7b9-x2x7q', 'web-5d4f8c7b9', 'web']
 */
export function workloadNames(pod: PodLike): string[] {
  const meta = obj(pod.metadata) ?? {};
  const names: string[] = [];
  const add = (name: string | undefined): void => {
    if (name !== undefined && name !== '' && !names.includes(name)) names.push(name);
  };
  add(str(meta.name) ?? str(meta.generateName)?.replace(/-$/, ''));
  const controller = controllerOf(meta);
  if (controller !== undefined) {
    add(controller.name);
    add(parentWorkload(controller, obj(meta.labels) ?? {}));
  }
  return names;
}

function parentWorkload(controller: { kind: string; name: string }, labels: Json): string | undefined {
  if (controller.kind === 'ReplicaSet') {
    const hash = str(labels['pod-template-hash']);
    if (hash !== undefined && controller.name.endsWith(`-${hash}`)) return controller.name.slice(0, -hash.length - 1) || undefined;
    if (hash === undefined && SAFE_ALPHABET_SUFFIX.test(controller.name)) return controller.name.replace(SAFE_ALPHABET_SUFFIX, '') || undefined;
  }
  if (controller.kind === 'Job' && CRONJOB_SUFFIX.test(controller.name)) return controller.name.replace(CRONJOB_SUFFIX, '') || undefined;
  return undefined;
}

/** The workload a pod belongs to (Deployment, StatefulSet, DaemonSet, CronJob, ...), or the pod's own name without one. */
export function ownerName(pod: PodLike): string | undefined {
  const names = workloadNames(pod);
  return names[names.length - 1];
}

function containersOf(spec: Json | undefined, key: string): Json[] {
  return list(spec?.[key]).map((c) => obj(c) ?? {});
}

/**
 * PSA's rule for a Pod UPDATE: it is checked only when it could change what PSS checks, that is
 * when a container is added or removed, an image changes, or an ephemeral container is added or
 * changed (the other pod spec fields are immutable). An insignificant update is admitted as is.
 */
export function isSignificantPodUpdate(oldPod: PodLike, newPod: PodLike): boolean {
  const oldSpec = obj(obj(oldPod)?.spec);
  const newSpec = obj(obj(newPod)?.spec);
  for (const key of ['containers', 'initContainers']) {
    const before = containersOf(oldSpec, key);
    const after = containersOf(newSpec, key);
    if (before.length !== after.length) return true;
    if (after.some((c, i) => c.image !== before[i]?.image)) return true;
  }
  const oldEphemeral = containersOf(oldSpec, 'ephemeralContainers');
  for (const c of containersOf(newSpec, 'ephemeralContainers')) {
    const old = oldEphemeral.find((o) => o.name === c.name);
    if (old === undefined || old.image !== c.image) return true;
  }
  return false;
}

/** Pod subresources PSA lets through unchecked; any other (ephemeralcontainers, resize, ...) carries a Pod and is checked. */
const IGNORED_POD_SUBRESOURCES = new Set(['exec', 'attach', 'binding', 'eviction', 'log', 'portforward', 'proxy', 'status']);

/** The resources PSA checks, by API group. */
const POD_SPEC_RESOURCES: Readonly<Record<string, readonly string[]>> = {
  '': ['pods', 'replicationcontrollers', 'podtemplates'],
  apps: ['replicasets', 'deployments', 'statefulsets', 'daemonsets'],
  batch: ['jobs', 'cronjobs'],
};

/**
 * Whether PSA checks a request for this resource and subresource: pods and every pod subresource
 * but exec, attach, binding, eviction, log, portforward, proxy and status (so `pods/ephemeralcontainers`
 * is checked, the whole pod with its new ephemeral containers); workloads only without a
 * subresource (`deployments/scale` is not checked).
 */
export function podSecurityApplies(resource: { readonly group?: string; readonly resource: string }, subresource = ''): boolean {
  const group = resource.group ?? '';
  if (!Object.hasOwn(POD_SPEC_RESOURCES, group) || POD_SPEC_RESOURCES[group]?.includes(resource.resource) !== true) return false;
  if (resource.resource === 'pods') return !IGNORED_POD_SUBRESOURCES.has(subresource);
  return subresource === '';
}

/** The parts of an AdmissionReview `request` (admission.k8s.io/v1) that decide what PSS checks. */
export interface PodSecurityRequest {
  readonly operation?: string;
  readonly kind?: { readonly group?: string; readonly kind?: string };
  readonly resource?: { readonly group?: string; readonly resource?: string };
  readonly subResource?: string;
  readonly object?: unknown;
  readonly oldObject?: unknown;
}

export type PodSecurityTarget =
  | { readonly check: true; readonly pod: PodLike; readonly specPath: string }
  | { readonly check: false; readonly reason: 'operation' | 'resource' | 'subresource' | 'no pod template' | 'insignificant update' };

/**
 * What PSA would check for this request: the pod (of a Pod, a workload's template, or the Pod of a
 * `pods/ephemeralcontainers` UPDATE), or why nothing (DELETE/CONNECT, another resource, an ignored
 * subresource, an UPDATE that changes no image or container). A dryRun request is checked like any
 * other. Note PSA itself only warns and audits on workloads and enforces on the pods they create.
 */
export function podSecurityTarget(request: PodSecurityRequest): PodSecurityTarget {
  const operation = request.operation ?? '';
  if (operation !== 'CREATE' && operation !== 'UPDATE') return { check: false, reason: 'operation' };
  const resource = request.resource?.resource ?? '';
  const group = request.resource?.group ?? '';
  if (!podSecurityApplies({ group, resource })) return { check: false, reason: 'resource' };
  if (!podSecurityApplies({ group, resource }, request.subResource ?? '')) return { check: false, reason: 'subresource' };
  const found = podOf(request.kind?.kind ?? '', request.object);
  if (found === undefined) return { check: false, reason: 'no pod template' };
  if (resource === 'pods' && operation === 'UPDATE' && obj(request.oldObject) !== undefined) {
    if (!isSignificantPodUpdate(request.oldObject as PodLike, found.pod)) return { check: false, reason: 'insignificant update' };
  }
  return { check: true, pod: found.pod, specPath: found.specPath };
}
