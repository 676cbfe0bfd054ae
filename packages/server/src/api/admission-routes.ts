/**
 * The admission webhook (AdmissionReview admission.k8s.io/v1, as kube-apiserver sends and expects
 * it) on its own listener, and the admission events on the admin API. The verdict itself comes from
 * an injected `AdmissionDecider` (the server wires @writ/admission's evaluate() and @writ/oci's
 * checker into it): this file only reads the review, keeps the decision budget, answers and records.
 */
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { WritError } from '@writ/spiffe';
import type { AdmissionEvent, AdmissionEventImage, Store } from '../store/types.ts';
import { integerParam, ok, stringParam, type AddRoute, type Reply } from './http.ts';

/** What the webhook reads out of an AdmissionReview request. */
export interface AdmissionInput {
  readonly uid: string;
  /** request.kind: the object's group, version and kind (`apps`, `v1`, `Deployment`). */
  readonly group: string;
  readonly version: string;
  readonly kind: string;
  readonly resource: string;
  /** `ephemeralcontainers` for a debug container; '' for the object itself. */
  readonly subResource: string;
  readonly namespace: string;
  readonly name: string;
  readonly operation: 'CREATE' | 'UPDATE' | 'DELETE' | 'CONNECT';
  readonly object: unknown;
  readonly oldObject: unknown;
  readonly dryRun: boolean;
}

/** A JSONPatch operation (RFC 6902), as the mutating hook answers with. */
export interface PatchOperation {
  readonly op: string;
  readonly path: string;
  readonly value?: unknown;
}

/** The verdict on one review. */
export interface AdmissionOutcome {
  readonly allowed: boolean;
  /** The deny message (PSA-like), '' when allowed. */
  readonly message: string;
  readonly warnings: readonly string[];
  /** Keys without a prefix: the API server prefixes them with the webhook's name. */
  readonly auditAnnotations: Readonly<Record<string, string>>;
  /** The strictest mode among the policies that applied: enforce, warn, audit; '' when none did. */
  readonly mode: string;
  readonly policies: readonly string[];
  /** Controls still violated after exceptions. */
  readonly controls: readonly string[];
  readonly exceptionsUsed: AdmissionEvent['exceptions'];
  readonly images: readonly AdmissionEventImage[];
  /** The mutating hook's patch pinning images to the digests verified; empty: nothing to pin. */
  readonly patch: readonly PatchOperation[];
  /** An enforce policy that checks images (digest, registries or signatures) applied: only then is an allowed image "admitted" for identity. */
  readonly imagesChecked?: boolean;
}

/** Reaches a verdict; `signal` aborts at the end of the decision budget. */
export interface AdmissionDecider {
  /** `mutate`: tags that resolve are pinned (the patch) rather than refused by requireDigest. */
  decide(input: AdmissionInput, signal: AbortSignal, hook: 'validate' | 'mutate'): Promise<AdmissionOutcome>;
  /** The answer when no verdict was reached within the budget: a deny where an enforce policy applies. */
  overBudget(input: AdmissionInput, budgetMs: number): AdmissionOutcome;
}

export interface AdmissionRouteDeps {
  readonly decider: AdmissionDecider;
  readonly budgetMs: number;
  readonly events: AdmissionEventWriter;
  readonly clock: () => number;
  /** Digests admitted under an enforce policy, for `requireAdmittedImage` entries. */
  readonly admitImages: (digests: string[], at: number) => Promise<void>;
  /**
   * The images of an allowed verdict (not a dry run) for the image inventory; returns at once,
   * never throws. `validate`: the images admitted; `mutate`: the tags it pinned to digests (the
   * validating hook then sees only `name@digest`). `fromRegistry`: an enforce policy checked these
   * images (so their registries are allowed and were asked already): their manifests and configs may be read.
   */
  readonly recordImages?: (images: readonly AdmissionEventImage[], opts: { readonly hook: 'validate' | 'mutate'; readonly fromRegistry: boolean }) => void;
  /** Callers are API servers proven by a client certificate (`--admission-client-ca`): only then do verdicts admit images. */
  readonly apiServerAuthenticated: boolean;
  /** Told of every answer (metrics). */
  readonly onAnswer?: (hook: 'validate' | 'mutate', decision: string, mode: string) => void;
  readonly log: Logger;
}

/** kube-apiserver sends at most an object and its old version of ~3 MiB each (etcd's limit is 1.5 MiB, JSON grows it). */
export const ADMISSION_BODY_LIMIT = 8 * 1024 * 1024;
const UID = /^[A-Za-z0-9._:-]{1,128}$/;
const OPERATIONS = ['CREATE', 'UPDATE', 'DELETE', 'CONNECT'] as const;
/** The kinds that hold a pod or a pod template, by API group: anything else is not ours to judge. */
const POD_KINDS: Readonly<Record<string, readonly string[]>> = {
  '': ['Pod', 'PodTemplate', 'ReplicationController'],
  apps: ['Deployment', 'ReplicaSet', 'StatefulSet', 'DaemonSet'],
  batch: ['Job', 'CronJob'],
};
/** The API server truncates longer warnings; they are cut here so the cut is ours and marked. */
const MAX_WARNING = 256;
const MAX_WARNINGS = 32;

const invalid = (message: string, field?: string): WritError => new WritError('ERR_ADMISSION_REVIEW_INVALID', message, field === undefined ? {} : { field });

function record(v: unknown, field: string): Record<string, unknown> {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw invalid(`${field} must be a JSON object`, field);
  return v as Record<string, unknown>;
}

function text(o: Record<string, unknown>, key: string, field: string, opts: { required?: boolean; max?: number } = {}): string {
  const v = o[key];
  if (v === undefined || v === null || v === '') {
    if (opts.required) throw invalid(`${field} is required`, field);
    return '';
  }
  if (typeof v !== 'string') throw invalid(`${field} must be a string`, field);
  if (v.length > (opts.max ?? 253)) throw invalid(`${field} is longer than ${opts.max ?? 253} characters`, field);
  return v;
}

/** Reads an AdmissionReview v1 request as kube-apiserver sends it; anything else is a clear 400. */
export function parseAdmissionReview(body: unknown): AdmissionInput {
  const review = record(body, 'body');
  const apiVersion = review['apiVersion'];
  if (apiVersion !== 'admission.k8s.io/v1')
    throw invalid(
      `apiVersion must be "admission.k8s.io/v1" (got ${JSON.stringify(String(apiVersion).slice(0, 60))}); set admissionReviewVersions: [v1] in the webhook configuration`,
      'apiVersion',
    );
  if (review['kind'] !== 'AdmissionReview') throw invalid('kind must be "AdmissionReview"', 'kind');
  if (review['response'] !== undefined && review['response'] !== null) throw invalid('response must be absent: this is a review to answer', 'response');
  const req = record(review['request'], 'request');
  const uid = text(req, 'uid', 'request.uid', { required: true, max: 128 });
  if (!UID.test(uid)) throw invalid('request.uid must be a UID (letters, digits, . _ : -)', 'request.uid');
  const kind = record(req['kind'], 'request.kind');
  const resource = req['resource'] === undefined ? {} : record(req['resource'], 'request.resource');
  const operation = text(req, 'operation', 'request.operation', { required: true, max: 16 });
  if (!(OPERATIONS as readonly string[]).includes(operation)) throw invalid(`request.operation must be one of ${OPERATIONS.join(', ')}`, 'request.operation');
  const object = req['object'] ?? null;
  const oldObject = req['oldObject'] ?? null;
  if (object !== null) record(object, 'request.object');
  if (oldObject !== null) record(oldObject, 'request.oldObject');
  if (object === null && (operation === 'CREATE' || operation === 'UPDATE')) throw invalid(`request.object is required for ${operation}`, 'request.object');
  const dryRun = req['dryRun'] ?? false;
  if (typeof dryRun !== 'boolean') throw invalid('request.dryRun must be true or false', 'request.dryRun');
  const meta =
    object !== null && typeof (object as Record<string, unknown>)['metadata'] === 'object'
      ? ((object as Record<string, unknown>)['metadata'] as Record<string, unknown>)
      : {};
  // A CREATE with generateName has no name yet: the prefix is what a person recognises.
  const name =
    text(req, 'name', 'request.name') ||
    (typeof meta['name'] === 'string' ? meta['name'] : '') ||
    (typeof meta['generateName'] === 'string' ? meta['generateName'] : '');
  return {
    uid,
    group: text(kind, 'group', 'request.kind.group'),
    version: text(kind, 'version', 'request.kind.version', { required: true, max: 64 }),
    kind: text(kind, 'kind', 'request.kind.kind', { required: true, max: 128 }),
    resource: text(resource, 'resource', 'request.resource.resource'),
    subResource: text(req, 'subResource', 'request.subResource', { max: 64 }),
    namespace: text(req, 'namespace', 'request.namespace', { max: 63 }),
    name: name.slice(0, 253),
    operation: operation as AdmissionInput['operation'],
    object,
    oldObject,
    dryRun,
  };
}

/** Whether Writ judges this kind at all (a pod, a workload with a pod template). */
export const isPodKind = (input: Pick<AdmissionInput, 'group' | 'kind'>): boolean => POD_KINDS[input.group]?.includes(input.kind) ?? false;

/** The AdmissionReview answer. */
export function admissionResponse(
  uid: string,
  outcome: Pick<AdmissionOutcome, 'allowed' | 'message' | 'warnings' | 'auditAnnotations' | 'patch'>,
  mutate: boolean,
): Record<string, unknown> {
  const warnings = outcome.warnings.slice(0, MAX_WARNINGS).map((w) => (w.length > MAX_WARNING ? `${w.slice(0, MAX_WARNING - 1)}…` : w));
  return {
    apiVersion: 'admission.k8s.io/v1',
    kind: 'AdmissionReview',
    response: {
      uid,
      allowed: outcome.allowed,
      ...(outcome.allowed ? {} : { status: { code: 403, reason: 'Forbidden', message: outcome.message || 'denied by Writ admission policy' } }),
      ...(warnings.length ? { warnings } : {}),
      auditAnnotations: outcome.auditAnnotations,
      ...(mutate && outcome.allowed && outcome.patch.length
        ? { patchType: 'JSONPatch', patch: Buffer.from(JSON.stringify(outcome.patch)).toString('base64') }
        : {}),
    },
  };
}

function skipped(why: string): AdmissionOutcome {
  return {
    allowed: true,
    message: '',
    warnings: [],
    auditAnnotations: { decision: 'skipped', reason: why },
    mode: '',
    policies: [],
    controls: [],
    exceptionsUsed: [],
    images: [],
    patch: [],
  };
}

/** The abort reason of a review's work at the end of its budget (one object: no stack captured per review). */
const OVER_BUDGET = new WritError('ERR_ADMISSION_BUDGET', 'no verdict within the decision budget');

/** Races the decider against the budget: an answer always leaves before the API server's timeout. */
async function withinBudget(deps: AdmissionRouteDeps, input: AdmissionInput, hook: 'validate' | 'mutate', budgetMs: number): Promise<AdmissionOutcome> {
  // The decider's own I/O is aborted a little early, so its answer (which says what was slow) wins
  // the race; the timer is the backstop for anything that does not honour the signal.
  const abort = new AbortController();
  const early = setTimeout(() => abort.abort(OVER_BUDGET), Math.max(budgetMs - 250, budgetMs * 0.75));
  let backstop: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      deps.decider.decide(input, abort.signal, hook),
      new Promise<AdmissionOutcome>((resolve) => {
        backstop = setTimeout(
          () => {
            // Whatever still runs for this review is no longer waited for.
            abort.abort(OVER_BUDGET);
            resolve(deps.decider.overBudget(input, budgetMs));
          },
          Math.max(budgetMs - 100, budgetMs * 0.9),
        );
      }),
    ]);
  } finally {
    clearTimeout(early);
    clearTimeout(backstop);
  }
}

/** kube-apiserver's `?timeout=` (a Go duration such as `5s` or `10s`; only seconds and ms are sent); anything else: no limit of its own. */
function apiServerTimeoutMs(v: string | null): number {
  const m = v === null ? null : /^(\d{1,6})(ms|s|m)$/.exec(v);
  if (!m) return Number.POSITIVE_INFINITY;
  return Number(m[1]) * (m[2] === 'ms' ? 1 : m[2] === 's' ? 1000 : 60_000);
}

/** The webhook's two routes (and nothing else of the API: the admission listener serves only these and /livez). */
export function admissionWebhookRoutes(deps: AdmissionRouteDeps, add: AddRoute): void {
  const review = async (body: unknown, hook: 'validate' | 'mutate', timeout: string | null): Promise<Reply> => {
    const input = parseAdmissionReview(body);
    // The API server gives up at its own `?timeout=` (timeoutSeconds): answer a little before it, if that comes before the budget.
    const budgetMs = Math.min(deps.budgetMs, apiServerTimeoutMs(timeout) - 300);
    let outcome: AdmissionOutcome;
    if (!isPodKind(input)) outcome = skipped(`${input.group ? `${input.group}/` : ''}${input.kind} holds no pod: not judged by Writ`);
    else if (input.operation === 'DELETE' || input.operation === 'CONNECT')
      outcome = skipped(`${input.operation} is not judged (Pod Security Admission does not either)`);
    else outcome = await withinBudget(deps, input, hook, Math.max(100, budgetMs));
    const now = deps.clock();
    deps.onAnswer?.(hook, outcome.auditAnnotations['decision'] ?? (outcome.allowed ? 'allow' : 'deny'), outcome.mode || 'none');
    // The validating hook's verdict is the one recorded; the mutating hook's only when it refuses
    // (the validating hook is then never asked).
    if (hook === 'mutate' && !outcome.allowed) deps.events.add(eventOf(input, outcome, hook, now));
    if (hook === 'mutate' && outcome.allowed && !input.dryRun && outcome.patch.length)
      deps.recordImages?.(outcome.images, { hook, fromRegistry: outcome.imagesChecked === true });
    if (hook === 'validate') {
      deps.events.add(eventOf(input, outcome, hook, now));
      const digests = [...new Set(outcome.images.flatMap((i) => (i.digest ? [i.digest] : [])))];
      // What requireAdmittedImage entries are issued against, so only a verdict that means "this image
      // is trusted": an enforce policy checked its images, the caller proved it is the API server
      // (a client certificate: anyone else reaching the listener could forge a review), and not a
      // dry run (its verdict is logged, flagged, but changes nothing).
      if (outcome.allowed && outcome.mode === 'enforce' && outcome.imagesChecked === true && deps.apiServerAuthenticated && !input.dryRun && digests.length)
        deps.admitImages(digests, now).catch((err: Error) => deps.log.warn({ err: err.message }, 'could not record admitted images'));
      // The image inventory learns every image admitted with a digest, in any mode, after the answer.
      if (outcome.allowed && !input.dryRun && digests.length) deps.recordImages?.(outcome.images, { hook, fromRegistry: outcome.imagesChecked === true });
    }
    // The validating hook gives the warnings: said once, about the object as it will be stored.
    return ok(admissionResponse(input.uid, hook === 'mutate' ? { ...outcome, warnings: [] } : outcome, hook === 'mutate'));
  };
  const body = { limit: ADMISSION_BODY_LIMIT, fields: ['apiVersion', 'kind', 'request', 'response'] };
  add(
    'POST',
    '/v1/admission/validate',
    undefined,
    'Validating admission webhook: AdmissionReview admission.k8s.io/v1 in and out.',
    (req) => review(req.body, 'validate', req.query.get('timeout')),
    body,
    { timeout: stringParam(32) },
  );
  add(
    'POST',
    '/v1/admission/mutate',
    undefined,
    'Mutating admission webhook: pins each image to the digest verified (JSONPatch); AdmissionReview admission.k8s.io/v1.',
    (req) => review(req.body, 'mutate', req.query.get('timeout')),
    body,
    { timeout: stringParam(32) },
  );
}

function eventOf(input: AdmissionInput, o: AdmissionOutcome, hook: 'validate' | 'mutate', at: number): AdmissionEvent {
  return {
    id: randomUUID(),
    at,
    uid: input.uid,
    operation: input.operation,
    namespace: input.namespace,
    kind: input.kind,
    name: input.name,
    subResource: input.subResource,
    hook,
    allowed: o.allowed,
    mode: o.mode,
    dryRun: input.dryRun,
    message: (o.allowed ? o.warnings.join('; ') : o.message).slice(0, 4000),
    images: o.images,
    controls: o.controls,
    exceptions: o.exceptionsUsed,
    policies: o.policies,
  };
}

/**
 * Writes verdicts in batches (one transaction for all that arrived meanwhile), off the answer's
 * path: a slow or lost database never delays or fails an admission. A batch the store refuses is
 * kept and written again a second later (at most MAX_QUEUE verdicts wait; past that, new ones are
 * counted and dropped). What is queued when the server stops is written by `close()`.
 */
export class AdmissionEventWriter {
  readonly #store: Store;
  readonly #log: Logger;
  readonly #queue: AdmissionEvent[] = [];
  #timer: NodeJS.Timeout | undefined;
  #writing: Promise<boolean> | undefined;
  #dropped = 0;
  static readonly MAX_QUEUE = 50_000;
  static readonly RETRY_MS = 1000;

  constructor(store: Store, log: Logger) {
    this.#store = store;
    this.#log = log;
  }

  add(e: AdmissionEvent): void {
    if (this.#queue.length >= AdmissionEventWriter.MAX_QUEUE) {
      this.#dropped++;
      return;
    }
    this.#queue.push(e);
    // A short wait gathers the verdicts of a busy moment into one transaction.
    this.#schedule(20);
  }

  #schedule(ms: number): void {
    if (this.#timer || this.#writing) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#writing = this.#flush();
      void this.#writing.then((ok) => {
        this.#writing = undefined;
        if (this.#queue.length) this.#schedule(ok ? 20 : AdmissionEventWriter.RETRY_MS);
      });
    }, ms);
  }

  /** Writes what is queued; false when the store refused (the rest stays queued). */
  async #flush(): Promise<boolean> {
    while (this.#queue.length) {
      const batch = this.#queue.slice(0, 1000);
      try {
        await this.#store.addAdmissionEvents(batch);
      } catch (err) {
        this.#log.warn({ err: (err as Error).message, queued: this.#queue.length }, 'could not store admission events; will retry');
        return false;
      }
      this.#queue.splice(0, batch.length);
    }
    if (this.#dropped) this.#log.warn({ dropped: this.#dropped }, 'admission events dropped: the store was away too long');
    this.#dropped = 0;
    return true;
  }

  /** Writes what is queued (one more try), then stops. */
  async close(): Promise<void> {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.#writing;
    if (this.#queue.length) await this.#flush();
  }
}

/**
 * Records admitted digests for `requireAdmittedImage`, retrying what the store refused every
 * second until it takes them: a pod admitted while the database was away still gets its identity.
 */
export class AdmittedImageRecorder {
  readonly #record: (digests: string[], at: number) => Promise<void>;
  readonly #clock: () => number;
  readonly #log: Logger;
  readonly #pending = new Set<string>();
  #retry: NodeJS.Timeout | undefined;
  static readonly MAX_PENDING = 100_000;

  constructor(record: (digests: string[], at: number) => Promise<void>, clock: () => number, log: Logger) {
    this.#record = record;
    this.#clock = clock;
    this.#log = log;
  }

  readonly admit = async (digests: string[], at: number): Promise<void> => {
    try {
      await this.#record(digests, at);
    } catch (err) {
      for (const d of digests) if (this.#pending.size < AdmittedImageRecorder.MAX_PENDING) this.#pending.add(d);
      this.#schedule();
      throw err;
    }
  };

  #schedule(): void {
    this.#retry ??= setTimeout(() => {
      this.#retry = undefined;
      const digests = [...this.#pending];
      this.#pending.clear();
      this.admit(digests, this.#clock()).then(
        () => this.#log.info({ digests: digests.length }, 'admitted images recorded after a retry'),
        () => undefined,
      );
    }, 1000);
    this.#retry.unref();
  }

  close(): void {
    clearTimeout(this.#retry);
  }
}

export function admissionEventJson(e: AdmissionEvent): Record<string, unknown> {
  return {
    id: e.id,
    at: new Date(e.at).toISOString(),
    uid: e.uid,
    operation: e.operation,
    namespace: e.namespace,
    kind: e.kind,
    name: e.name,
    subResource: e.subResource,
    hook: e.hook,
    allowed: e.allowed,
    mode: e.mode,
    dryRun: e.dryRun,
    message: e.message,
    images: e.images,
    controls: e.controls,
    exceptions: e.exceptions,
    policies: e.policies,
  };
}

/** GET /v1/admission/events on the admin API. */
export function admissionEventRoutes(ctx: { readonly store: Store }, add: AddRoute): void {
  add(
    'GET',
    '/v1/admission/events',
    'viewer',
    'Admission verdicts, newest first (?namespace=&allowed=true|false&since=RFC3339&limit=); with ?after=CURSOR, those stored since that cursor, in arrival order. `cursor` in the answer is where to follow on from.',
    async (req) => {
      const q = req.query;
      const since = q.get('since');
      const sinceMs = since === null ? undefined : Date.parse(since);
      if (sinceMs !== undefined && !Number.isFinite(sinceMs)) throw new WritError('ERR_FIELD_INVALID', 'since must be an RFC 3339 time', { field: 'since' });
      const allowed = q.get('allowed');
      if (allowed !== null && allowed !== 'true' && allowed !== 'false')
        throw new WritError('ERR_FIELD_INVALID', 'allowed must be true or false', { field: 'allowed' });
      const after = q.has('after') ? Number(q.get('after')) : undefined;
      const limit = Number(q.get('limit') ?? 100);
      const upTo = await ctx.store.admissionEventCursor();
      const rows = await ctx.store.queryAdmissionEvents({
        ...(q.get('namespace') !== null ? { namespace: q.get('namespace')! } : {}),
        ...(allowed !== null ? { allowed: allowed === 'true' } : {}),
        ...(sinceMs !== undefined ? { since: sinceMs } : {}),
        ...(after !== undefined ? { after, upTo } : {}),
        limit,
      });
      const cursor = after !== undefined && rows.length === limit ? rows.at(-1)!.seq! : upTo;
      return ok({ events: rows.map(admissionEventJson), cursor: String(cursor) });
    },
    undefined,
    {
      namespace: stringParam(63),
      allowed: stringParam(5),
      since: stringParam(64),
      after: integerParam(0, Number.MAX_SAFE_INTEGER),
      limit: integerParam(1, 10_000),
    },
  );
}
