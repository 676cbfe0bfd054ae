/**
 * The webhook's decider: the current policy revision's AdmissionSet (parsed once per revision),
 * @writ/admission's evaluate() and @writ/oci's image checker, behind the `AdmissionDecider` the
 * routes use. The same evaluate() runs in `writ admission check`, so both give the same answer.
 */
import { readFileSync, statSync } from 'node:fs';
import type { Logger } from 'pino';
import {
  type AdmissionSet,
  type AdmissionVerdict,
  type VulnerabilityChecker,
  admissionSetOf,
  evaluate,
  globMatcher,
  isAdmissionKey,
  podOf,
} from '@writ/admission';
import { type ImageChecker, ImageVerifier, RegistryClient, loadRegistryConfig } from '@writ/oci';
import { isWritError } from '@writ/spiffe';
import type { AdmissionDecider, AdmissionInput, AdmissionOutcome } from './api/admission-routes.ts';
import type { Store } from './store/types.ts';

export interface DeciderOptions {
  readonly store: Store;
  readonly clock: () => number;
  readonly log: Logger;
  /** Resolves and verifies images (tags to digests, cosign signatures); absent: references are checked as written. */
  readonly images?: ImageChecker | undefined;
  /** Looks up images' vulnerability reports (`images.vulnerabilities`); absent: that control refuses, saying so. */
  readonly vulnerabilities?: VulnerabilityChecker | undefined;
}

const MODE_RANK: Record<string, number> = { audit: 1, warn: 2, enforce: 3 };
/** Another replica's policy apply is seen within this long; one of this server's at once. */
const SET_TTL_MS = 1000;
/** A policy read taking longer than this is abandoned, and the next review reads again. */
const LOAD_TIMEOUT_MS = 5000;

/** Key files (`keys: [{file}]`) read again when they change on disk, so a rotated key takes effect at once. */
/** Every container image of the object's pod (containers, init and ephemeral containers). */
function imagesOf(input: AdmissionInput): string[] {
  const spec = podOf(input.kind, input.object)?.pod.spec ?? {};
  const out: string[] = [];
  for (const list of ['initContainers', 'containers', 'ephemeralContainers'])
    for (const c of Array.isArray(spec[list]) ? (spec[list] as unknown[]) : [])
      if (c && typeof c === 'object' && typeof (c as { image?: unknown }).image === 'string') out.push((c as { image: string }).image.slice(0, 1000));
  return [...new Set(out)];
}

function keyFileReader(): (path: string) => Buffer {
  const cache = new Map<string, { stamp: string; bytes: Buffer }>();
  return (path) => {
    const st = statSync(path);
    const stamp = `${st.mtimeMs}:${st.size}:${st.ino}`;
    const hit = cache.get(path);
    if (hit?.stamp === stamp) return hit.bytes;
    const bytes = readFileSync(path);
    cache.set(path, { stamp, bytes });
    return bytes;
  };
}

export function createAdmissionDecider(opts: DeciderOptions): AdmissionDecider {
  const { store, clock, log } = opts;
  let cached: { revision: number; at: number; set: AdmissionSet } | undefined;
  // The set before this server's last apply: what holds while the new one is read, if that read is slow.
  let previous: AdmissionSet | undefined;
  let loading: Promise<AdmissionSet> | undefined;
  store.onChange((c) => {
    if (c.kind !== 'policies') return;
    if (cached) previous = cached.set;
    cached = undefined;
  });
  const load = async (): Promise<AdmissionSet> => {
    const rev = await store.getPolicyRevision();
    const revision = rev?.revision ?? 0;
    if (cached?.revision === revision) {
      cached = { ...cached, at: clock() };
      return cached.set;
    }
    // Only the admission documents: access policies are the agents' business.
    const docs = Object.fromEntries(Object.entries(rev?.policies ?? {}).filter(([k]) => isAdmissionKey(k)));
    const set = admissionSetOf(docs, clock());
    cached = { revision, at: clock(), set };
    log.info({ revision, policies: set.policies.length, exceptions: set.exceptions.length }, 'admission policies loaded');
    return set;
  };
  const currentSet = (): Promise<AdmissionSet> => {
    if (cached && clock() - cached.at < SET_TTL_MS) return Promise.resolve(cached.set);
    // Concurrent reviews share one read of the store.
    if (!loading) {
      const had = cached;
      // A read that never settles (a stalled connection) must not hold every later review: give up on it.
      loading = untilAborted(load(), AbortSignal.timeout(LOAD_TIMEOUT_MS)).finally(() => (loading = undefined));
      if (had)
        loading.catch((err: Error) => {
          // Tried again after the same wait, not on every review while the store is away.
          if (cached === had) cached = { ...had, at: clock() };
          log.warn({ err: err.message }, 'admission policies could not be read again; the last ones still hold');
        });
    }
    if (!cached) return loading;
    // Stale: this review uses the set it has and the read refreshes it for the next ones, so a slow
    // or lost database never holds a review up (this server's own applies drop the cache at once).
    return Promise.resolve(cached.set);
  };
  const readKeyFile = keyFileReader();

  const modeOf = (set: AdmissionSet, names: readonly string[]): string =>
    set.policies.filter((p) => names.includes(p.name)).reduce((m, p) => ((MODE_RANK[p.mode] ?? 0) > (MODE_RANK[m] ?? 0) ? p.mode : m), '');

  const outcomeOf = (set: AdmissionSet, v: AdmissionVerdict, input: AdmissionInput): AdmissionOutcome => {
    const mode = modeOf(set, v.policies);
    // The images as checked; when no policy looked at images, as written (an event always names them).
    const images = v.images.length
      ? v.images.map((i) => ({ image: i.image, ...(i.digest ? { digest: i.digest } : {}), signedBy: i.signedBy }))
      : imagesOf(input).map((image) => ({ image, ...(/@(sha256:[0-9a-f]{64})$/.exec(image) ? { digest: image.slice(-71) } : {}), signedBy: [] }));
    return {
      allowed: v.allowed,
      message: v.message,
      warnings: v.warnings,
      auditAnnotations: {
        ...v.auditAnnotations,
        ...(mode ? { mode } : {}),
        ...(images.length ? { images: images.map((i) => (i.digest && !i.image.endsWith(i.digest) ? `${i.image}@${i.digest}` : i.image)).join(',') } : {}),
      },
      mode,
      policies: v.policies,
      controls: [...new Set(v.findings.map((f) => f.control))],
      exceptionsUsed: v.exceptionsUsed,
      images,
      patch: v.patch,
      imagesChecked: set.policies.some((p) => p.mode === 'enforce' && p.images !== undefined && v.policies.includes(p.name)),
    };
  };

  /** When the store cannot give the policies, nothing can be judged: a deny that says so (the API server's failurePolicy is for when Writ is unreachable). */
  const unavailable = (why: string): AdmissionOutcome => ({
    allowed: false,
    message: `Writ admission could not load its policies: ${why}`,
    warnings: [],
    auditAnnotations: { decision: 'deny', reason: 'policies unavailable' },
    mode: 'enforce',
    policies: [],
    controls: [],
    exceptionsUsed: [],
    images: [],
    patch: [],
  });

  return {
    async decide(input: AdmissionInput, signal: AbortSignal, hook: 'validate' | 'mutate' = 'validate'): Promise<AdmissionOutcome> {
      let set: AdmissionSet;
      try {
        set = await untilAborted(currentSet(), signal);
      } catch (err) {
        log.warn({ err: (err as Error).message }, 'admission policies unavailable');
        // A store that is away for a moment, or slow past the budget: the policies last read still
        // hold (as agents keep theirs). With none ever read, nothing can be judged: a deny.
        const last = cached?.set ?? previous;
        if (last) set = last;
        else
          return unavailable(
            signal.aborted ? 'the store did not answer within the decision budget' : isWritError(err) ? err.message : 'the store did not answer',
          );
      }
      const verdict = await evaluate(
        {
          kind: input.kind,
          namespace: input.namespace,
          name: input.name,
          operation: input.operation,
          object: input.object,
          oldObject: input.oldObject,
          subResource: input.subResource,
          dryRun: input.dryRun,
        },
        set,
        {
          now: clock(),
          signal,
          readKeyFile,
          pinTags: hook === 'mutate',
          ...(opts.images ? { images: opts.images } : {}),
          ...(opts.vulnerabilities ? { vulnerabilities: opts.vulnerabilities } : {}),
        },
      );
      return outcomeOf(set, verdict, input);
    },
    overBudget(input: AdmissionInput, budgetMs: number): AdmissionOutcome {
      // Never "no policies, so allowed": with no set read yet (a slow store at start or after an
      // apply), the namespace may well be under an enforce policy.
      const set = cached?.set ?? previous;
      if (!set) return unavailable(`no policies read within the ${budgetMs} ms decision budget`);
      const applied = set.policies.filter((p) => p.namespaces.some((g) => globMatcher(g)(input.namespace)));
      const enforce = applied.some((p) => p.mode === 'enforce');
      const message = `no verdict within the ${budgetMs} ms decision budget (a registry did not answer in time)`;
      return {
        allowed: !enforce,
        message: enforce ? message : '',
        warnings: applied.some((p) => p.mode === 'warn') ? [message] : [],
        auditAnnotations: { decision: enforce ? 'deny' : 'allow', reason: 'decision budget exceeded' },
        mode: applied.reduce((m, p) => ((MODE_RANK[p.mode] ?? 0) > (MODE_RANK[m] ?? 0) ? p.mode : m), ''),
        policies: applied.map((p) => p.name),
        controls: ['imageResolve'],
        exceptionsUsed: [],
        images: [],
        patch: [],
      };
    },
  };
}

/** Settles with `work`, or rejects once `signal` aborts (the work goes on for the next caller). */
function untilAborted<T>(work: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(new Error('aborted'));
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(new Error('aborted'));
    signal.addEventListener('abort', onAbort, { once: true });
    work.then(
      (v) => (signal.removeEventListener('abort', onAbort), resolve(v)),
      (e: unknown) => (signal.removeEventListener('abort', onAbort), reject(e)),
    );
  });
}

/**
 * The image checker the webhook uses: @writ/oci's RegistryClient (per-registry CA and credentials
 * from `--registry-config`) under its verifying cache.
 */
export function imageCheckerOf(registryConfigFile: string | undefined): ImageChecker {
  // Read at start, so a bad file stops the server with its error instead of failing reviews later.
  const config = registryConfigFile ? loadRegistryConfig(registryConfigFile) : undefined;
  return new ImageVerifier({ registry: new RegistryClient(config ? { config } : {}) });
}
