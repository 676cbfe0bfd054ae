/**
 * One admission verdict: a Pod (or a workload's pod template) against every AdmissionPolicy whose
 * namespaces match, with the exceptions that are in force at `deps.now`. The webhook and
 * `writ admission check` both call this, so the same object always gets the same answer.
 */
import { parseImageRef, registryAllowed, type ImageChecker, type ImageProblem, type ImageRef, type ImageRequirements, type ImageVerdict } from '@writ/oci';
import { formatDuration } from '@writ/spiffe';
import {
  type AdmissionMode,
  type AdmissionPolicy,
  type AdmissionSet,
  type VulnerabilityPolicy,
  controlCovers,
  globMatcher,
  signatureRequirements,
} from './model.ts';
import { checkPodSecurity, podSecurityMessage } from './pss.ts';
import type { ImageVulnerabilities, ImageVulnerability, PodLike, PssLevel, VulnerabilityChecker, Violation } from './types.ts';
import { isSignificantPodUpdate, podOf, podSecurityApplies, workloadNames } from './workload.ts';

export type AdmissionOperation = 'CREATE' | 'UPDATE' | 'DELETE' | 'CONNECT';

export interface AdmissionInput {
  /** The object's kind: Pod, Deployment, ReplicaSet, StatefulSet, DaemonSet, Job, CronJob, ... */
  readonly kind: string;
  readonly namespace: string;
  /** The object's name (AdmissionReview `name`; may be empty for a pod with generateName). */
  readonly name: string;
  readonly operation: AdmissionOperation;
  readonly object?: unknown;
  readonly oldObject?: unknown;
  /** `ephemeralcontainers` for `pods/ephemeralcontainers`; other subresources are not checked. */
  readonly subResource?: string;
  readonly dryRun?: boolean;
}

export interface EvaluateDeps {
  /** Epoch ms: decides which exceptions are in force. */
  readonly now: number;
  /** Resolves and verifies images; without it, digests and registries are checked from the references alone. */
  readonly images?: ImageChecker;
  /** The decision budget: when it aborts, pending image checks become violations (never a hang). */
  readonly signal?: AbortSignal;
  /** Reads a `keys: [{file}]` public key (default: none, so such a requirement cannot be met). */
  readonly readKeyFile?: (path: string) => string | Buffer;
  /** For the mutating hook: a tag that resolves is pinned by `patch`, so `requireDigest` does not refuse it. */
  readonly pinTags?: boolean;
  /** Looks up images' vulnerability reports (`images.vulnerabilities`); without it that control refuses, saying it cannot check. */
  readonly vulnerabilities?: VulnerabilityChecker;
}

/** A violation as evaluate reports it: which policy found it and in which mode. */
export interface Finding extends Violation {
  readonly policy: string;
  readonly mode: AdmissionMode;
  /** The image the finding is about (image controls). */
  readonly image?: string;
  /** `imageVulnerabilities`: the vulnerability IDs that refuse the image, worst first. */
  readonly vulnerabilities?: readonly string[];
}

export interface JsonPatchOp {
  readonly op: 'replace';
  readonly path: string;
  readonly value: string;
}

export interface AdmissionVerdict {
  readonly allowed: boolean;
  /** What denies: the enforce-mode findings no exception waived. */
  readonly violations: readonly Finding[];
  /** Every finding no exception waived, of every mode. */
  readonly findings: readonly Finding[];
  /** warn-mode findings, as PSA words its warnings (`would violate PodSecurity "restricted:latest": ...`). */
  readonly warnings: readonly string[];
  /** Keys without a prefix (the API server prefixes them with the webhook's name). */
  readonly auditAnnotations: Readonly<Record<string, string>>;
  /** The deny text ('' when allowed): PSA's for Pod Security, Writ's for the rest. */
  readonly message: string;
  /** The policies that applied. */
  readonly policies: readonly string[];
  readonly exceptionsUsed: ReadonlyArray<{ readonly name: string; readonly controls: readonly string[]; readonly containers: readonly string[] }>;
  readonly images: ReadonlyArray<{ readonly image: string; readonly digest?: string; readonly pinned?: string; readonly signedBy: readonly string[] }>;
  /** JSONPatch pinning every resolved image to its digest (for the mutating hook). */
  readonly patch: readonly JsonPatchOp[];
}

interface Container {
  readonly name: string;
  readonly image: string;
  readonly path: string;
  readonly raw: Record<string, unknown>;
  readonly kind: 'containers' | 'initContainers' | 'ephemeralContainers';
}

const ALLOW: AdmissionVerdict = Object.freeze({
  allowed: true,
  violations: [],
  findings: [],
  warnings: [],
  // Always a decision in the audit annotations, also when nothing was judged.
  auditAnnotations: Object.freeze({ decision: 'allow' }),
  message: '',
  policies: [],
  exceptionsUsed: [],
  images: [],
  patch: [],
});

const obj = (v: unknown): Record<string, unknown> | undefined =>
  v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
const q = (s: string): string => JSON.stringify(s);

function containersOf(pod: PodLike, specPath: string): Container[] {
  const out: Container[] = [];
  for (const kind of ['initContainers', 'containers', 'ephemeralContainers'] as const) {
    const list = pod.spec?.[kind];
    if (!Array.isArray(list)) continue;
    list.forEach((c, i) => {
      const raw = obj(c);
      if (!raw) return;
      out.push({
        name: typeof raw['name'] === 'string' ? raw['name'] : '',
        image: typeof raw['image'] === 'string' ? raw['image'] : '',
        path: `${specPath}/${kind}/${i}`,
        raw,
        kind,
      });
    });
  }
  return out;
}

/** Writ's `require` controls, in PSA's `title (detail)` form. */
function requireFindings(p: AdmissionPolicy, pod: PodLike, containers: readonly Container[]): Violation[] {
  const out: Violation[] = [];
  if (p.require.resourceLimits)
    for (const c of containers) {
      // Ephemeral containers cannot have resources (the API refuses them).
      if (c.kind === 'ephemeralContainers') continue;
      const limits = obj(obj(c.raw['resources'])?.['limits']);
      const missing = ['cpu', 'memory'].filter((r) => limits?.[r] === undefined || limits[r] === null || limits[r] === '');
      if (missing.length)
        out.push({
          control: 'resourceLimits',
          container: c.name,
          message: `resource limits unset (container ${q(c.name)} must set ${missing.map((r) => `resources.limits.${r}`).join(', ')})`,
        });
    }
  if (p.require.readOnlyRootFilesystem)
    for (const c of containers)
      if (obj(c.raw['securityContext'])?.['readOnlyRootFilesystem'] !== true)
        out.push({
          control: 'readOnlyRootFilesystem',
          container: c.name,
          message: `readOnlyRootFilesystem != true (container ${q(c.name)} must set securityContext.readOnlyRootFilesystem=true)`,
        });
  if (p.require.runtimeClassNames.length) {
    const rc = pod.spec?.['runtimeClassName'];
    if (typeof rc !== 'string' || !p.require.runtimeClassNames.includes(rc))
      out.push({
        control: 'runtimeClassName',
        message: `runtimeClassName not allowed (${typeof rc === 'string' ? `runtimeClassName ${q(rc)} is not` : 'pod must set spec.runtimeClassName to'} one of ${p.require.runtimeClassNames.map(q).join(', ')})`,
      });
  }
  return out;
}

/** What can be said of an image without a registry: its reference is pinned, its registry allowed; signatures need one. */
function offlineVerdict(image: string, req: ImageRequirements): ImageVerdict {
  let ref: ImageRef;
  try {
    ref = parseImageRef(image);
  } catch (err) {
    const why = (err as Error).message.replace(/^invalid image reference "(?:[^"\\]|\\.)*": /, '');
    return { image, violations: [{ control: 'imageDigest', message: `image ${q(image)} is not a valid image reference: ${why}` }], signedBy: [] };
  }
  const problems: ImageProblem[] = [];
  if (req.requireDigest && !ref.digest) problems.push({ control: 'imageDigest', message: `image ${q(image)} is not pinned by digest (use NAME@sha256:...)` });
  if (!registryAllowed(`${ref.registry}/${ref.repository}`, req.registries))
    problems.push({ control: 'imageRegistry', message: `image ${q(image)} is not from an allowed registry (${req.registries.map(q).join(', ')})` });
  if (req.signatures.length)
    problems.push({ control: 'imageSignature', message: `image ${q(image)}: signatures cannot be verified without access to its registry` });
  return { image, ...(ref.digest ? { digest: ref.digest } : {}), violations: problems, signedBy: [] };
}

/** An image check that settles when the budget runs out, whatever the checker does. */
function checkWithin(checker: ImageChecker, image: string, req: ImageRequirements, signal: AbortSignal | undefined): Promise<ImageVerdict> {
  const failed = (why: string): ImageVerdict => ({
    image,
    violations: [{ control: 'imageResolve', message: `image ${q(image)} could not be checked: ${why}` }],
    signedBy: [],
  });
  if (signal?.aborted) return Promise.resolve(failed('the decision budget ran out'));
  return new Promise((resolve) => {
    const onAbort = (): void => resolve(failed('the decision budget ran out before the registry answered'));
    signal?.addEventListener('abort', onAbort, { once: true });
    checker.check(image, req, signal).then(
      (v) => {
        signal?.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (err: unknown) => {
        signal?.removeEventListener('abort', onAbort);
        resolve(failed(signal?.aborted ? 'the decision budget ran out before the registry answered' : String((err as Error)?.message ?? err).slice(0, 300)));
      },
    );
  });
}

/** A vulnerability lookup that settles when the budget runs out: the findings, or why there are none. */
function lookupWithin(checker: VulnerabilityChecker, digest: string, signal: AbortSignal | undefined): Promise<ImageVulnerabilities | string> {
  const late = 'the decision budget ran out before its reports were read';
  if (signal?.aborted) return Promise.resolve(late);
  return new Promise((resolve) => {
    const onAbort = (): void => resolve(late);
    signal?.addEventListener('abort', onAbort, { once: true });
    checker.vulnerabilities(digest, signal).then(
      (v) => (signal?.removeEventListener('abort', onAbort), resolve(v)),
      (err: unknown) => (
        signal?.removeEventListener('abort', onAbort), resolve(`its vulnerabilities could not be read: ${String((err as Error)?.message ?? err).slice(0, 300)}`)
      ),
    );
  });
}

const SEVERITY_RANK: Record<string, number> = { critical: 0, high: 1, medium: 2, low: 3, negligible: 4, unknown: 5 };
/** Findings that still say the package is (or may be) affected; `fixed`/`not_affected` do not refuse. */
const OPEN_STATUSES = new Set(['affected', 'under_investigation', 'unknown']);
/** How many vulnerability IDs a deny names before "and N more". */
export const VULNERABILITIES_NAMED = 5;

/**
 * The `imageVulnerabilities` problems of one image: no report (`requireReport`), a stale one
 * (`maxReportAge`), and the findings at a blocked severity (fixable ones only with `fixableOnly`)
 * that no VulnException or VEX statement suppresses, named worst first, the first few and a count.
 */
export function vulnerabilityProblems(
  image: string,
  digest: string | undefined,
  vp: VulnerabilityPolicy,
  found: ImageVulnerabilities | string,
  now: number,
): Array<Violation & { vulnerabilities?: readonly string[] }> {
  const control = 'imageVulnerabilities';
  const what = `image ${q(image)}${digest && !image.endsWith(digest) ? ` (${digest.slice(0, 19)})` : ''}`;
  if (typeof found === 'string') return [{ control, message: `${what}: ${found}` }];
  const r = found.report;
  if (!r)
    return vp.requireReport
      ? [{ control, message: `${what} has no vulnerability report (the policy requires one: scan the image and send the report with writ vuln ingest)` }]
      : [];
  const out: Array<Violation & { vulnerabilities?: readonly string[] }> = [];
  if (vp.maxReportAge !== undefined && now - r.scannedAt > vp.maxReportAge)
    out.push({
      control,
      message: `${what}: its newest vulnerability report is from ${new Date(r.scannedAt).toISOString()}, older than the policy's maxReportAge ${formatDuration(vp.maxReportAge)} (scan it again)`,
    });
  const worst = new Map<string, ImageVulnerability>();
  let suppressed = 0;
  const silenced = new Set<string>();
  for (const f of r.findings) {
    if (!vp.block.includes(f.severity) || !OPEN_STATUSES.has(f.status) || (vp.fixableOnly && !f.fixed)) continue;
    if (f.suppressed) {
      if (!silenced.has(f.id)) suppressed++;
      silenced.add(f.id);
      continue;
    }
    const had = worst.get(f.id);
    if (!had || (SEVERITY_RANK[f.severity] ?? 9) < (SEVERITY_RANK[had.severity] ?? 9)) worst.set(f.id, f);
  }
  const blocking = [...worst.values()].sort((a, b) => (SEVERITY_RANK[a.severity] ?? 9) - (SEVERITY_RANK[b.severity] ?? 9) || (a.id < b.id ? -1 : 1));
  if (blocking.length) {
    const named = blocking
      .slice(0, VULNERABILITIES_NAMED)
      .map((f) => `${f.id} (${f.severity}, ${f.package} ${f.installed}${f.fixed ? `, fixed in ${f.fixed}` : ''})`);
    const more = blocking.length > VULNERABILITIES_NAMED ? ` and ${blocking.length - VULNERABILITIES_NAMED} more` : '';
    const kind = `${vp.fixableOnly ? 'fixable ' : ''}${vp.block.join('/')}`;
    out.push({
      control,
      message: `${what} has ${blocking.length} ${kind} ${blocking.length === 1 ? 'vulnerability' : 'vulnerabilities'}: ${named.join(', ')}${more}${suppressed ? ` (${suppressed} more suppressed by exceptions or VEX)` : ''}`,
      vulnerabilities: blocking.map((f) => f.id),
    });
  }
  return out;
}

/**
 * Evaluates one admission request. Allowed unchecked, as Pod Security Admission does: DELETE and
 * CONNECT, the pod subresources PSA ignores (exec, status, ...), workload subresources (scale),
 * Pod UPDATEs that change no container or image, workload UPDATEs that leave the pod template as
 * it was, objects without a pod, namespaces no policy matches.
 * @example await evaluate({ kind: 'Pod', namespace: 'prod', name: 'web', operation: 'CREATE', object: pod }, set, { now: Date.now() })
 */
export async function evaluate(input: AdmissionInput, set: AdmissionSet, deps: EvaluateDeps): Promise<AdmissionVerdict> {
  if (input.operation !== 'CREATE' && input.operation !== 'UPDATE') return ALLOW;
  const sub = input.subResource ?? '';
  // Pods: every subresource but exec, attach, status, ... (as PSA); workloads: only the object itself.
  if (input.kind === 'Pod' ? !podSecurityApplies({ resource: 'pods' }, sub) : sub !== '') return ALLOW;
  const applying = set.policies.filter((p) => p.namespaces.some((g) => globMatcher(g)(input.namespace)));
  if (applying.length === 0) return ALLOW;
  const found = podOf(input.kind, input.object);
  if (!found) return ALLOW;
  const { pod, specPath } = found;
  if (input.operation === 'UPDATE') {
    const old = podOf(input.kind, input.oldObject);
    // Pods: PSA's rule. Workloads: an update that leaves the pod template as it was (replicas, labels
    // of the workload) is not refused for a template that was admitted (or excepted) before.
    if (old && (input.kind === 'Pod' ? !isSignificantPodUpdate(old.pod, pod) : JSON.stringify(old.pod) === JSON.stringify(pod))) return ALLOW;
  }
  const containers = containersOf(pod, specPath);
  const names = new Set([input.name, ...workloadNames(pod)].filter((n) => n !== ''));

  // One check per (image, requirements) in this request; the checker shares them across requests.
  const checks = new Map<string, Promise<ImageVerdict>>();
  const verdicts = new Map<string, ImageVerdict>();
  const vulnLookups = new Map<string, Promise<ImageVulnerabilities | string>>();
  const imageFindings = async (p: AdmissionPolicy): Promise<Array<Violation & { image?: string; vulnerabilities?: readonly string[] }>> => {
    const im = p.images;
    const vp = im?.vulnerabilities;
    if (!im || (!im.requireDigest && im.registries.length === 0 && im.signatures.length === 0 && !vp)) return [];
    let req: ImageRequirements;
    try {
      req = {
        // Asked of the checker even when tags are to be pinned: it resolves them only when a digest is needed.
        requireDigest: im.requireDigest,
        registries: im.registries,
        signatures: signatureRequirements(
          im,
          deps.readKeyFile ??
            ((f) => {
              throw new Error(`key file ${f} cannot be read here`);
            }),
        ),
        // The vulnerability gate needs the digest a tag runs as.
        ...(vp ? { pinTags: true } : {}),
      };
    } catch (err) {
      return [
        { control: 'imageSignature', message: `the signature keys of AdmissionPolicy ${q(p.name)} cannot be used: ${(err as Error).message.slice(0, 300)}` },
      ];
    }
    const key = JSON.stringify([req.requireDigest, req.registries, req.signatures.map((s) => s.fingerprint), req.pinTags === true]);
    const out: Array<Violation & { image: string; vulnerabilities?: readonly string[] }> = [];
    const all = await Promise.all(
      containers
        .filter((c) => c.image !== '')
        .map(async (c) => {
          const k = `${c.image}\0${key}`;
          let pending = checks.get(k);
          if (!pending) {
            pending = deps.images ? checkWithin(deps.images, c.image, req, deps.signal) : Promise.resolve(offlineVerdict(c.image, req));
            checks.set(k, pending);
          }
          return { c, v: await pending };
        }),
    );
    for (const { c, v } of all) {
      if (!verdicts.has(c.image) || v.digest) verdicts.set(c.image, v);
      // The mutating hook pins a tag that resolved (the patch), so it is not refused for being a tag.
      for (const problem of v.violations)
        if (!(problem.control === 'imageDigest' && deps.pinTags && deps.images && v.pinned && v.digest))
          out.push({ control: problem.control, container: c.name, message: `${problem.message} (container ${q(c.name)})`, image: c.image });
    }
    if (vp)
      for (const { c, v } of all) {
        const digest = v.digest ?? /@(sha256:[0-9a-f]{64})$/.exec(c.image)?.[1];
        let found: ImageVulnerabilities | string;
        if (!deps.vulnerabilities) found = "vulnerabilities cannot be checked without the server's reports (writ admission check --report FILE)";
        else if (digest === undefined) found = 'it did not resolve to a digest, so its vulnerability reports cannot be looked up';
        else {
          let pending = vulnLookups.get(digest);
          if (!pending) vulnLookups.set(digest, (pending = lookupWithin(deps.vulnerabilities, digest, deps.signal)));
          found = await pending;
        }
        for (const problem of vulnerabilityProblems(c.image, digest, vp, found, deps.now))
          out.push({ ...problem, container: c.name, message: `${problem.message} (container ${q(c.name)})`, image: c.image });
      }
    return out;
  };

  // Policies at the same level and version share one Pod Security check.
  const pssBy = new Map<string, Violation[]>();
  const podSecurity = (level: PssLevel, version: string): Violation[] => {
    let v = pssBy.get(`${level}:${version}`);
    if (!v) pssBy.set(`${level}:${version}`, (v = checkPodSecurity(pod, level, version)));
    return v;
  };
  const perPolicy = await Promise.all(
    applying.map(async (p) => {
      const pss = p.podSecurity ? podSecurity(p.podSecurity.level, p.podSecurity.version) : [];
      return { p, pss, writ: [...requireFindings(p, pod, containers), ...(await imageFindings(p))] };
    }),
  );

  // Exceptions: only those in force now, scoped by namespace, workload, containers and image digests.
  const digestOf = (c: Container): string | undefined => verdicts.get(c.image)?.digest ?? /@(sha256:[0-9a-f]{64})$/.exec(c.image)?.[1];
  const inForce = set.exceptions.filter(
    (e) => e.expires > deps.now && e.namespaces.some((g) => globMatcher(g)(input.namespace)) && (!e.workloads || e.workloads.some((w) => names.has(w))),
  );
  const used = new Map<string, { controls: Set<string>; containers: Set<string> }>();
  const waiverOf = (v: Violation): string | undefined => {
    const scope = v.container === undefined ? containers : containers.filter((c) => c.name === v.container);
    for (const e of inForce) {
      // Under restricted, a hostPath volume is a restrictedVolumes finding: an exception for the baseline control it replaces waives it too.
      const base = v.pss?.baselineControl;
      if (!e.controls.some((c) => controlCovers(c, v.control) || (base !== undefined && controlCovers(c, base)))) continue;
      // A pod-level finding is waived only when every container of the pod is in the exception's scope.
      if (e.containers && !scope.every((c) => e.containers!.includes(c.name))) continue;
      if (
        e.images &&
        !scope.every((c) => {
          const d = digestOf(c);
          return d !== undefined && e.images!.includes(d);
        })
      )
        continue;
      const u = used.get(e.name) ?? { controls: new Set(), containers: new Set() };
      u.controls.add(v.control);
      if (v.container !== undefined) u.containers.add(v.container);
      used.set(e.name, u);
      return e.name;
    }
    return undefined;
  };

  const findings: Finding[] = [];
  const messages: string[] = [];
  const warnings: string[] = [];
  const audit: string[] = [];
  for (const { p, pss, writ } of perPolicy) {
    const pssLeft = pss.filter((v) => waiverOf(v) === undefined);
    const writLeft = writ.filter((v) => waiverOf(v) === undefined);
    for (const v of [...pssLeft, ...writLeft]) findings.push({ ...v, policy: p.name, mode: p.mode });
    const parts: string[] = [];
    if (pssLeft.length && p.podSecurity) parts.push(podSecurityMessage(pssLeft, p.podSecurity.level, p.podSecurity.version));
    if (writLeft.length) parts.push(`violates AdmissionPolicy ${q(p.name)}: ${writLeft.map((v) => v.message).join(', ')}`);
    const target = p.mode === 'enforce' ? messages : p.mode === 'warn' ? warnings : audit;
    for (const part of parts) {
      const text = p.mode === 'enforce' ? part : part.replace(/^violates /, 'would violate ');
      if (!target.includes(text)) target.push(text);
    }
  }
  const violations = findings.filter((f) => f.mode === 'enforce');
  const images = [...verdicts.values()].map((v) => ({
    image: v.image,
    ...(v.digest ? { digest: v.digest } : {}),
    ...(v.pinned ? { pinned: v.pinned } : {}),
    signedBy: v.signedBy,
  }));
  const patch: JsonPatchOp[] = [];
  for (const c of containers) {
    const v = verdicts.get(c.image);
    if (v?.pinned && v.digest && !c.image.endsWith(`@${v.digest}`)) patch.push({ op: 'replace', path: `${c.path}/image`, value: v.pinned });
  }
  const exceptionsUsed = [...used].map(([name, u]) => ({ name, controls: [...u.controls].sort(), containers: [...u.containers].sort() }));
  const allowed = violations.length === 0;
  const auditAnnotations: Record<string, string> = {
    decision: allowed ? 'allow' : 'deny',
    policies: applying.map((p) => p.name).join(','),
  };
  if (exceptionsUsed.length) auditAnnotations['exceptions'] = exceptionsUsed.map((e) => e.name).join(',');
  if (images.length) auditAnnotations['images'] = images.map((i) => (i.digest ? `${i.image}=${i.digest}` : i.image)).join(',');
  if (audit.length) auditAnnotations['audit-violations'] = audit.join('; ');
  if (warnings.length) auditAnnotations['warn-violations'] = warnings.join('; ');
  if (!allowed) auditAnnotations['enforce-violations'] = messages.join('; ');
  return {
    allowed,
    violations,
    findings,
    warnings,
    auditAnnotations,
    message: messages.join('; '),
    policies: applying.map((p) => p.name),
    exceptionsUsed,
    images,
    patch,
  };
}
