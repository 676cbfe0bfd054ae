/**
 * What this node runs, for the server's "running now" (issue 13): the workloads the Workload API
 * attested and served. A workload with an open stream (FetchX509SVID, WatchPolicy, ...) runs until
 * its last stream closes; one seen only in unary calls (FetchJWTSVID, Check) stays for 45 s after
 * its last call. The whole snapshot goes to the server (`POST /v1/agent/workloads`) at start, on
 * change (debounced) and as a heartbeat. A failure is logged once per state change and retried;
 * it never touches serving SVIDs.
 */
import type { Logger } from 'pino';
import { isWritError } from '@writ/spiffe';
import { AGENT_PATHS, WORKLOAD_LIMITS, encodeWorkloads, hasControlChar, imageOf, type WorkloadReport } from '@writ/protocol';
import type { ServerApi } from './server-client.ts';

/** A workload as attested, without the identities it was served. */
export type WorkloadFacts = Omit<WorkloadReport, 'spiffeIds'>;

export interface WorkloadReporterOptions {
  readonly client: ServerApi;
  readonly clock: () => number;
  readonly log: Logger;
  /** The whole snapshot at least this often (default 20 s; the server counts a workload running for 60 s after a report). */
  readonly heartbeatMs?: number | undefined;
  /** A change is sent this long after it happened, with the changes that follow it (default 1 s). */
  readonly debounceMs?: number | undefined;
  /** How long a workload seen only in unary calls stays (default 45 s). */
  readonly unaryTtlMs?: number | undefined;
}

export const WORKLOAD_HEARTBEAT_MS = 20_000;
const RETRY_MIN_MS = 1000;

interface Tracked {
  facts: WorkloadFacts;
  readonly ids: Set<string>;
  streams: number;
  /** The last unary call; -Infinity when it only ever streamed. */
  lastUnary: number;
}

/** The value after `prefix` of the first selector that has it. */
function sel(selectors: readonly string[], prefix: string): string | undefined {
  return selectors.find((s) => s.startsWith(prefix))?.slice(prefix.length);
}

/** `K:V` selectors after a prefix into a map (label keys hold no ':' in Kubernetes; a docker key holding one is cut there). */
function pairs(selectors: readonly string[], prefix: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const s of selectors) {
    if (!s.startsWith(prefix)) continue;
    const kv = s.slice(prefix.length);
    const i = kv.indexOf(':');
    if (i > 0) out[kv.slice(0, i)] = kv.slice(i + 1);
  }
  return out;
}

/** A map cut to what the server takes: entries over the limits are left out rather than refusing the report. */
function fit(m: Readonly<Record<string, string>>, valueMax: number): Record<string, string> {
  const out: Record<string, string> = {};
  let n = 0;
  for (const k of Object.keys(m).sort()) {
    const v = m[k]!;
    if (n >= WORKLOAD_LIMITS.labels || k.length > WORKLOAD_LIMITS.labelKey || v.length > valueMax || hasControlChar(k + v)) continue;
    out[k] = v;
    n++;
  }
  return out;
}

const short = (v: string | undefined): string | null => (v === undefined || v === '' || v.length > WORKLOAD_LIMITS.string || hasControlChar(v) ? null : v);

/** A caller as the Workload API attested it: process, selectors, and what the attestors found besides. */
export interface AttestedCaller {
  readonly pid: number;
  readonly startTime: string;
  readonly selectors: readonly string[];
  readonly containerId?: string | undefined;
  readonly annotations?: Readonly<Record<string, string>> | undefined;
}

/**
 * What the selectors (and what the attestors found besides) say about a caller: its container and
 * pod, the image digest as the runtime reports it (the pod status `imageID`, else docker's or
 * containerd's repo digest), and its key: the container ID, else `POD-UID/CONTAINER`, else
 * `pid:PID:STARTTIME` for a process outside containers.
 */
export function describeWorkload(w: AttestedCaller): WorkloadFacts {
  const s = w.selectors;
  const podUid = short(sel(s, 'k8s:pod-uid:'));
  const containerName = short(sel(s, 'k8s:container-name:') ?? sel(s, 'docker:container_name:'));
  const imageId = imageOf(sel(s, 'k8s:container-image-id:') ?? '');
  const digest =
    imageId.digest ??
    [sel(s, 'docker:image_digest:'), sel(s, 'containerd:image_digest:')].map((d) => (d ? imageOf(`x@${d}`).digest : null)).find((d) => d) ??
    null;
  const name =
    imageId.name ??
    [sel(s, 'k8s:container-image:'), sel(s, 'docker:image_id:'), sel(s, 'containerd:image:')].map((r) => (r ? imageOf(r).name : null)).find((n) => n) ??
    null;
  const owner = sel(s, 'k8s:pod-owner:');
  const podLabels = pairs(s, 'k8s:pod-label:');
  const labels = Object.keys(podLabels).length > 0 || podUid ? podLabels : { ...pairs(s, 'containerd:label:'), ...pairs(s, 'docker:label:') };
  const containerId = short(w.containerId);
  return {
    key: containerId ?? (podUid && containerName ? `${podUid}/${containerName}` : `pid:${w.pid}:${w.startTime}`),
    containerId,
    containerName,
    podUid,
    podName: short(sel(s, 'k8s:pod-name:')),
    namespace: short(sel(s, 'k8s:ns:')),
    podOwner: owner ? short(owner.replace(':', '/')) : null,
    imageDigest: digest,
    imageName: short(name ?? undefined),
    labels: fit(labels, WORKLOAD_LIMITS.labelValue),
    annotations: fit(w.annotations ?? {}, WORKLOAD_LIMITS.annotationValue),
  };
}

export class WorkloadReporter {
  readonly #o: WorkloadReporterOptions;
  readonly #tracked = new Map<string, Tracked>();
  readonly #heartbeatMs: number;
  readonly #debounceMs: number;
  readonly #unaryTtlMs: number;
  #started = false;
  #heartbeat: NodeJS.Timeout | undefined;
  #debounce: NodeJS.Timeout | undefined;
  #expiry: NodeJS.Timeout | undefined;
  #retry: NodeJS.Timeout | undefined;
  #retryMs = 0;
  #sending: Promise<void> | undefined;
  #again = false;
  /** The last snapshot the server took (JSON), and the failure last logged ('' while it takes them). */
  #sent = '';
  #failure = '';

  constructor(opts: WorkloadReporterOptions) {
    this.#o = opts;
    this.#heartbeatMs = opts.heartbeatMs ?? WORKLOAD_HEARTBEAT_MS;
    this.#debounceMs = opts.debounceMs ?? 1000;
    this.#unaryTtlMs = opts.unaryTtlMs ?? 45_000;
  }

  /** A unary call served `spiffeIds` to the workload. */
  served(facts: WorkloadFacts, spiffeIds: readonly string[]): void {
    const known = this.#tracked.get(facts.key);
    const news = !known || spiffeIds.some((id) => !known.ids.has(id));
    const t = this.#track(facts, spiffeIds);
    t.lastUnary = this.#o.clock();
    // A workload already reported calling again (Check, many times a second) changes only when it
    // leaves: the expiry timer already set finds it still fresh and sets itself again.
    if (news || !this.#expiry) this.#changed();
  }

  /** A stream opened serving `spiffeIds`; the function returned is called once it closes. */
  opened(facts: WorkloadFacts, spiffeIds: readonly string[]): () => void {
    const t = this.#track(facts, spiffeIds);
    t.streams++;
    this.#changed();
    let open = true;
    return () => {
      if (!open) return;
      open = false;
      t.streams--;
      this.#changed();
    };
  }

  /** A workload's facts (labels may change) are taken from its latest call; the next report carries them. */
  #track(facts: WorkloadFacts, spiffeIds: readonly string[]): Tracked {
    let t = this.#tracked.get(facts.key);
    if (!t) {
      t = { facts, ids: new Set(), streams: 0, lastUnary: Number.NEGATIVE_INFINITY };
      this.#tracked.set(facts.key, t);
    }
    t.facts = facts;
    for (const id of spiffeIds) t.ids.add(id);
    return t;
  }

  /** The workloads running now, by key (what the next report carries). */
  snapshot(): WorkloadReport[] {
    const now = this.#o.clock();
    const out: WorkloadReport[] = [];
    for (const [key, t] of [...this.#tracked].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
      if (t.streams <= 0 && now - t.lastUnary >= this.#unaryTtlMs) {
        this.#tracked.delete(key);
        continue;
      }
      if (out.length < WORKLOAD_LIMITS.workloads) out.push({ ...t.facts, spiffeIds: [...t.ids].sort().slice(0, WORKLOAD_LIMITS.spiffeIds) });
    }
    return out;
  }

  /** Reports now and from then on (the agent has an identity). */
  start(): void {
    if (this.#started) return;
    this.#started = true;
    this.#heartbeat = setInterval(() => void this.flush(true), this.#heartbeatMs);
    this.#heartbeat.unref?.();
    void this.flush(true);
  }

  stop(): void {
    this.#started = false;
    for (const t of [this.#heartbeat, this.#debounce, this.#expiry, this.#retry]) clearTimeout(t);
    this.#heartbeat = this.#debounce = this.#expiry = this.#retry = undefined;
  }

  #changed(): void {
    this.#scheduleExpiry();
    if (!this.#started || this.#debounce) return;
    this.#debounce = setTimeout(() => {
      this.#debounce = undefined;
      void this.flush(false);
    }, this.#debounceMs);
    this.#debounce.unref?.();
  }

  /** A timer for the next unary-only workload to leave, so it leaves on time rather than at the next heartbeat. */
  #scheduleExpiry(): void {
    clearTimeout(this.#expiry);
    this.#expiry = undefined;
    let next = Number.POSITIVE_INFINITY;
    for (const t of this.#tracked.values()) if (t.streams <= 0) next = Math.min(next, t.lastUnary + this.#unaryTtlMs);
    if (!Number.isFinite(next)) return;
    this.#expiry = setTimeout(
      () => {
        this.#expiry = undefined;
        this.snapshot();
        this.#changed();
      },
      Math.max(0, next - this.#o.clock()) + 1,
    );
    this.#expiry.unref?.();
  }

  /**
   * Sends the snapshot: always with `force` (start, heartbeat), otherwise only when it differs from
   * what the server last took. One report in flight at a time; a change meanwhile sends again after.
   */
  flush(force = false): Promise<void> {
    if (!this.#started) return Promise.resolve();
    if (this.#sending) {
      this.#again = true;
      return this.#sending;
    }
    this.#sending = this.#send(force).finally(() => {
      this.#sending = undefined;
      if (this.#again) {
        this.#again = false;
        void this.flush(false);
      }
    });
    return this.#sending;
  }

  async #send(force: boolean): Promise<void> {
    const workloads = this.snapshot();
    const json = JSON.stringify(workloads);
    if (!force && json === this.#sent && this.#failure === '') return;
    try {
      await this.#o.client.call('POST', AGENT_PATHS.workloads, encodeWorkloads(workloads));
      this.#sent = json;
      if (this.#failure !== '') this.#o.log.info({ workloads: workloads.length }, 'the server takes workload reports again');
      this.#failure = '';
      this.#retryMs = 0;
      clearTimeout(this.#retry);
      this.#retry = undefined;
    } catch (err) {
      const code = isWritError(err) ? err.code : 'ERR_REQUEST_FAILED';
      if (code !== this.#failure)
        this.#o.log.warn({ code, err: (err as Error).message, workloads: workloads.length }, 'cannot report workloads to the server; retrying');
      this.#failure = code;
      // Sooner than the heartbeat at first, then no more often than it.
      this.#retryMs = Math.min(this.#retryMs * 2 || RETRY_MIN_MS, this.#heartbeatMs);
      clearTimeout(this.#retry);
      if (this.#started) {
        this.#retry = setTimeout(() => void this.flush(true), this.#retryMs);
        this.#retry.unref?.();
      }
    }
  }
}
