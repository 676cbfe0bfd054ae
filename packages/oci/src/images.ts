/**
 * The verifying cache: an image reference against an AdmissionPolicy's image requirements
 * (allowed registries, digest pinning, cosign signatures), each digest verified once.
 *
 * Verifications are cached by (repository, digest, requirement fingerprint): a changed key set or
 * policy has another fingerprint, so it takes effect at once, while the same digest under the same
 * keys is answered from memory. Concurrent checks of one digest share one verification; a caller
 * whose budget runs out gets its answer (a deny) on time while the shared work finishes for the
 * next one. Tags are resolved again after a few seconds, refusals and registry failures are
 * remembered only briefly, so a new signature or a registry back up counts almost at once.
 */
import { isWritError } from '@writ/spiffe';
import { type CosignResult, verifyCosign } from './cosign.ts';
import { parseImageRef, pinnedRef } from './reference.ts';
import type { ImageChecker, ImageProblem, ImageRef, ImageRequirements, ImageVerdict, RegistryReader, SignatureRequirement } from './types.ts';

/** What the verifier needs of a registry client (RegistryClient implements it). */
export interface ImageSource extends RegistryReader {
  resolve(ref: ImageRef, opts?: { readonly signal?: AbortSignal }): Promise<{ readonly digest: string }>;
}

export interface ImageVerifierOptions {
  readonly registry: ImageSource;
  /** Injected clock (ms) for the cache lifetimes. */
  readonly now?: () => number;
  /** How long a verified signature is trusted without asking the registry again (default 10 min). */
  readonly verifiedTtlMs?: number;
  /** How long a refusal (unsigned, bad signature) is remembered (default 5 s). */
  readonly refusedTtlMs?: number;
  /** How long a tag's digest is remembered (default 10 s). */
  readonly tagTtlMs?: number;
  /** How long a registry failure is remembered, so a dead registry is not asked 500 times a second (default 1 s). */
  readonly errorTtlMs?: number;
  /** Bound on one shared registry operation, whatever the callers' budgets (default 10 s). */
  readonly workTimeoutMs?: number;
  /** Cache entries kept (default 10 000; the oldest go first). */
  readonly maxEntries?: number;
}

interface Entry<T> {
  readonly value: Promise<T>;
  expiresAt: number;
}

/** A cache whose entries are promises: the first caller starts the work, the others join it. */
class FlightCache<T> {
  readonly #entries = new Map<string, Entry<T>>();
  readonly #now: () => number;
  readonly #max: number;

  constructor(now: () => number, max: number) {
    this.#now = now;
    this.#max = max;
  }

  get(key: string, work: () => Promise<T>, ttl: (outcome: { value: T } | { error: unknown }) => number): Promise<T> {
    const hit = this.#entries.get(key);
    if (hit !== undefined && hit.expiresAt > this.#now()) return hit.value;
    if (hit !== undefined) this.#entries.delete(key);
    const entry: Entry<T> = { value: work(), expiresAt: Number.POSITIVE_INFINITY };
    const settle = (outcome: { value: T } | { error: unknown }): void => {
      if (this.#entries.get(key) !== entry) return;
      const ms = ttl(outcome);
      if (ms > 0) entry.expiresAt = this.#now() + ms;
      else this.#entries.delete(key);
    };
    entry.value.then(
      (value) => settle({ value }),
      (error: unknown) => settle({ error }),
    );
    this.#entries.set(key, entry);
    while (this.#entries.size > this.#max) {
      const oldest = this.#entries.keys().next().value;
      if (oldest === undefined) break;
      this.#entries.delete(oldest);
    }
    return entry.value;
  }

  get size(): number {
    return this.#entries.size;
  }
}

const DEFAULTS = { verifiedTtlMs: 10 * 60_000, refusedTtlMs: 5_000, tagTtlMs: 10_000, errorTtlMs: 1_000, workTimeoutMs: 10_000, maxEntries: 10_000 };

/**
 * @example
 *   const verifier = new ImageVerifier({ registry: new RegistryClient({ config }) });
 *   const verdict = await verifier.check('registry.example.com/team/app:v1', requirements, AbortSignal.timeout(2000));
 *   // verdict.pinned = 'registry.example.com/team/app@sha256:...', verdict.signedBy = ['release-key']
 */
export class ImageVerifier implements ImageChecker {
  readonly #registry: ImageSource;
  readonly #opts: typeof DEFAULTS;
  readonly #tags: FlightCache<string>;
  readonly #signatures: FlightCache<CosignResult>;

  constructor(opts: ImageVerifierOptions) {
    this.#registry = opts.registry;
    const { registry: _, now: __, ...rest } = opts;
    this.#opts = { ...DEFAULTS, ...rest };
    const now = opts.now ?? Date.now;
    this.#tags = new FlightCache(now, this.#opts.maxEntries);
    this.#signatures = new FlightCache(now, this.#opts.maxEntries);
  }

  async check(image: string, req: ImageRequirements, signal?: AbortSignal): Promise<ImageVerdict> {
    let ref: ImageRef;
    try {
      ref = parseImageRef(image);
    } catch (err) {
      return {
        image,
        violations: [{ control: 'imageResolve', message: `image ${JSON.stringify(image.slice(0, 300))} is not a valid reference: ${messageOf(err)}` }],
        signedBy: [],
      };
    }
    const name = `${ref.registry}/${ref.repository}`;
    const violations: ImageProblem[] = [];
    if (!registryAllowed(name, req.registries)) {
      // Never contact a registry the policy does not allow.
      violations.push({ control: 'imageRegistry', message: `image ${image} is not from an allowed registry (${req.registries.join(', ')})` });
      return { image, ...(ref.digest === undefined ? {} : { digest: ref.digest, pinned: pinnedRef(ref, ref.digest) }), violations, signedBy: [] };
    }
    if (req.requireDigest && ref.digest === undefined)
      violations.push({ control: 'imageDigest', message: `image ${image} is not pinned by digest (use ${name}@sha256:...)` });
    const needsDigest = ref.digest !== undefined || req.requireDigest || req.signatures.length > 0 || req.pinTags === true;
    if (!needsDigest) return { image, violations, signedBy: [] };

    let digest = ref.digest;
    if (digest === undefined) {
      try {
        digest = await withBudget(this.#resolve(ref), signal);
      } catch (err) {
        // A tag or digest the registry does not have is a verdict; anything else means it could not be checked.
        const code = isWritError(err, 'ERR_IMAGE_NOT_FOUND') ? {} : { code: codeOf(err) };
        violations.push({ control: 'imageResolve', message: `image ${image} could not be resolved: ${failure(err, ref.registry)}`, ...code });
        return { image, violations, signedBy: [] };
      }
    }
    const d = digest;
    if (req.signatures.length > 0 && !d.startsWith('sha256:')) {
      violations.push({
        control: 'imageSignature',
        message: `image ${image}: cosign signatures are looked up by sha256 digest, not ${d.slice(0, d.indexOf(':'))}`,
      });
      return { image, digest: d, pinned: pinnedRef(ref, d), violations, signedBy: [] };
    }
    const results = await Promise.all(
      req.signatures.map(async (s): Promise<ImageProblem | string> => {
        try {
          const r = await withBudget(this.#verify(ref, d, s), signal);
          if (r.verified) return s.name;
          return { control: 'imageSignature', message: `image ${image} (${d}) is not signed by ${s.name}: ${r.message}` };
        } catch (err) {
          return { control: 'imageSignature', message: `signatures of ${image} (${d}) could not be checked: ${failure(err, ref.registry)}`, code: codeOf(err) };
        }
      }),
    );
    const signedBy = results.filter((r): r is string => typeof r === 'string');
    violations.push(...results.filter((r): r is ImageProblem => typeof r !== 'string'));
    return { image, digest: d, pinned: pinnedRef(ref, d), violations, signedBy };
  }

  /** Entries held (tags + verifications), for metrics. */
  get cacheSize(): number {
    return this.#tags.size + this.#signatures.size;
  }

  #resolve(ref: ImageRef): Promise<string> {
    const key = `${ref.registry}/${ref.repository}:${ref.tag ?? 'latest'}`;
    return this.#tags.get(
      key,
      async () => (await this.#registry.resolve(ref, { signal: AbortSignal.timeout(this.#opts.workTimeoutMs) })).digest,
      (o) => ('value' in o ? this.#opts.tagTtlMs : this.#opts.errorTtlMs),
    );
  }

  #verify(ref: ImageRef, digest: string, s: SignatureRequirement): Promise<CosignResult> {
    const key = `${ref.registry}/${ref.repository}@${digest} ${s.fingerprint}`;
    return this.#signatures.get(
      key,
      () => verifyCosign(this.#registry, ref, digest, s, AbortSignal.timeout(this.#opts.workTimeoutMs)),
      (o) => ('error' in o ? this.#opts.errorTtlMs : o.value.verified ? this.#opts.verifiedTtlMs : this.#opts.refusedTtlMs),
    );
  }
}

/**
 * Is `name` (`registry/repository` in normal form) under one of the prefixes (none: any)? On path
 * boundaries: `registry.example.com/team/` and `registry.example.com/team` hold
 * `registry.example.com/team/app`, and neither holds `registry.example.com/teamx/app`.
 */
export function registryAllowed(name: string, prefixes: readonly string[]): boolean {
  if (prefixes.length === 0) return true;
  return prefixes.some((p) => (p.endsWith('/') ? name.startsWith(p) : name === p || name.startsWith(`${p}/`)));
}

class BudgetExceeded extends Error {}

/** The shared work goes on; this caller stops waiting when its budget runs out. */
function withBudget<T>(work: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return work;
  if (signal.aborted) return Promise.reject(new BudgetExceeded());
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(new BudgetExceeded());
    signal.addEventListener('abort', onAbort, { once: true });
    work.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}

function failure(err: unknown, registry: string): string {
  if (err instanceof BudgetExceeded || isWritError(err, 'ERR_REGISTRY_TIMEOUT')) return `registry ${registry} did not answer within the decision budget`;
  return messageOf(err);
}

function codeOf(err: unknown): string {
  if (err instanceof BudgetExceeded) return 'ERR_REGISTRY_TIMEOUT';
  return isWritError(err) ? err.code : 'ERR_INTERNAL';
}

/** WritErrors carry messages written to be shown (no secrets); anything else is summarized. */
function messageOf(err: unknown): string {
  if (isWritError(err)) return `${err.message} (${err.code})`;
  return 'internal error while checking the image';
}
