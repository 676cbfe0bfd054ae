/**
 * The federation refresher: fetches each peer's bundle at the peer's `spiffe_refresh_hint`
 * (bounded, with jitter), applies it to the federated bundles (entries' `federatesWith` and the
 * agents pick it up through the store's change notification), and records how each fetch went.
 * On any failure the last good bundle stays and the relationship says why.
 *
 * Clock, randomness and network are injected: the tests drive it without sleeping.
 */
import type { Logger } from 'pino';
import { Gauge, type Registry } from 'prom-client';
import { WritError, formatBundleJson, isWritError, parseBundleJson, parseSpiffeId, type Certificate, type TrustBundle } from '@writ/spiffe';
import type { FederationRelationship, Store } from '../store/types.ts';
import type { BundleFetcher } from './fetch.ts';

/** A hint below this is raised to it: a peer cannot make us poll it in a loop. */
export const MIN_REFRESH_MS = 5_000;
/** A hint above this is lowered to it: a rotation is never more than an hour away from being seen. */
export const MAX_REFRESH_MS = 3_600_000;
/** Without a hint (SPIFFE_Federation.md leaves the default to the implementation). */
export const DEFAULT_REFRESH_MS = 300_000;
/** Up to this fraction earlier than the interval, so peers' fetches do not line up. */
export const JITTER = 0.1;
/** A peer whose last success is more than this many refresh intervals ago is stale (warning log, `stale: true`). */
export const STALE_INTERVALS = 3;

export interface RefresherOptions {
  readonly store: Store;
  /** This server's own trust domain: never federated with itself. */
  readonly trustDomain: string;
  /** This trust domain's own X.509 authorities: for a peer whose endpoint has one of our SPIFFE IDs. */
  readonly ownAuthorities?: () => readonly Certificate[];
  readonly fetch: BundleFetcher;
  readonly clock: () => number;
  /** In [0, 1): the jitter. */
  readonly random?: () => number;
  readonly log: Logger;
  /** Where `writ_federation_bundle_staleness_seconds` is registered. */
  readonly registry?: Registry;
}

/** What `status` shows of a relationship, beyond the stored fields. */
export interface FederationStatus {
  readonly relationship: FederationRelationship;
  /** Seconds since the last success (since creation before any). */
  readonly stalenessSeconds: number;
  readonly stale: boolean;
  /** The interval the next refresh was planned with, ms. */
  readonly refreshIntervalMs: number;
}

/** The refresh interval a hint (seconds) asks for, bounded. */
export function refreshIntervalMs(hintSeconds: number | null | undefined): number {
  if (hintSeconds === null || hintSeconds === undefined) return DEFAULT_REFRESH_MS;
  return Math.min(MAX_REFRESH_MS, Math.max(MIN_REFRESH_MS, hintSeconds * 1000));
}

export function federationStatus(rel: FederationRelationship, now: number): FederationStatus {
  const interval = refreshIntervalMs(rel.refreshHint);
  const since = rel.lastSuccessAt ?? rel.createdAt;
  const staleness = Math.max(0, now - since);
  return {
    relationship: rel,
    stalenessSeconds: Math.floor(staleness / 1000),
    stale: staleness > STALE_INTERVALS * interval,
    refreshIntervalMs: interval,
  };
}

/**
 * Refuses a bundle that is not the peer's: an X.509 authority naming another trust domain as its
 * SPIFFE ID (SPIFFE CA certificates carry `spiffe://<td>`) means the endpoint serves someone else's bundle.
 */
export function checkTrustDomain(trustDomain: string, bundle: TrustBundle): void {
  for (const cert of bundle.x509Authorities) {
    for (const uri of cert.uris) {
      let td: string | undefined;
      try {
        const id = parseSpiffeId(uri);
        td = id.path === '' ? id.trustDomain : undefined;
      } catch {
        td = undefined;
      }
      if (td !== undefined && td !== trustDomain)
        throw new WritError('ERR_BUNDLE_TRUST_DOMAIN_MISMATCH', `the endpoint served a bundle of trust domain "${td}", not "${trustDomain}"`);
    }
  }
}

export class FederationRefresher {
  readonly #o: RefresherOptions;
  readonly #random: () => number;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;
  /** Per trust domain, so two refreshes of one peer (the timer and `refresh now`) never interleave. */
  readonly #inFlight = new Map<string, Promise<FederationRelationship>>();
  #last: FederationRelationship[] = [];
  /** Cancels fetches in flight when the server stops, so it does not wait out their timeout. */
  readonly #stopping = new AbortController();

  constructor(o: RefresherOptions) {
    this.#o = o;
    this.#random = o.random ?? Math.random;
    if (o.registry) {
      const self = this;
      new Gauge({
        name: 'writ_federation_bundle_staleness_seconds',
        help: "Seconds since a federated trust domain's bundle was last fetched successfully (since the relationship was created before any).",
        labelNames: ['trust_domain'],
        registers: [o.registry],
        collect(this: Gauge<'trust_domain'>) {
          this.reset();
          const now = self.#o.clock();
          for (const rel of self.#last) this.set({ trust_domain: rel.trustDomain }, federationStatus(rel, now).stalenessSeconds);
        },
      });
    }
  }

  /** Checks for due peers every `everyMs`. */
  start(everyMs = 1000): void {
    this.#timer = setInterval(() => void this.tick(), everyMs);
    this.#timer.unref();
  }

  async close(): Promise<void> {
    clearInterval(this.#timer);
    this.#stopping.abort();
    await this.#running;
    await Promise.allSettled([...this.#inFlight.values()]);
  }

  /** Refreshes every peer that is due; one pass at a time. */
  tick(): Promise<void> {
    this.#running ??= this.#pass().finally(() => (this.#running = undefined));
    return this.#running;
  }

  async #pass(): Promise<void> {
    let rels: FederationRelationship[];
    try {
      rels = await this.#o.store.listFederations();
    } catch (err) {
      this.#o.log.debug({ err: (err as Error).message }, 'federation: cannot list relationships');
      return;
    }
    this.#last = rels;
    const now = this.#o.clock();
    for (const rel of rels) {
      if (rel.nextRefreshAt > now) continue;
      await this.refresh(rel.trustDomain).catch(() => undefined); // recorded in the relationship
    }
  }

  /**
   * Fetches one peer's bundle now. Resolves to the relationship after a success; rejects with the
   * WritError that was recorded as its last error (ERR_FEDERATION_NOT_FOUND when there is none).
   */
  refresh(trustDomain: string): Promise<FederationRelationship> {
    const running = this.#inFlight.get(trustDomain);
    if (running) return running;
    const p = this.#refresh(trustDomain).finally(() => this.#inFlight.delete(trustDomain));
    this.#inFlight.set(trustDomain, p);
    return p;
  }

  #jittered(ms: number): number {
    return Math.round(ms * (1 - JITTER * this.#random()));
  }

  async #refresh(trustDomain: string): Promise<FederationRelationship> {
    const { store, clock, log } = this.#o;
    const rel = await store.getFederation(trustDomain);
    if (!rel) throw new WritError('ERR_FEDERATION_NOT_FOUND', `no federation relationship with trust domain "${trustDomain}"`);
    const stored = await store.getFederatedBundle(trustDomain);
    try {
      const body = await this.#o.fetch(
        {
          url: rel.bundleEndpointUrl,
          profile: rel.profile,
          endpointSpiffeId: rel.endpointSpiffeId,
          trustAnchors: rel.profile === 'https_spiffe' ? await this.#anchorsFor(rel, stored?.bundle) : [],
        },
        this.#stopping.signal,
      );
      let bundle: TrustBundle;
      try {
        bundle = parseBundleJson(trustDomain, body);
      } catch (err) {
        throw new WritError(
          'ERR_BUNDLE_ENDPOINT_INVALID',
          `the endpoint did not answer a SPIFFE bundle: ${(err as Error).message.replace(/^invalid SPIFFE bundle: /, '')}`,
        );
      }
      checkTrustDomain(trustDomain, bundle);
      if (rel.sequence !== null && bundle.sequence !== undefined && bundle.sequence < rel.sequence)
        throw new WritError('ERR_BUNDLE_SEQUENCE_STALE', `the endpoint served sequence ${bundle.sequence}, older than ${rel.sequence} already applied`);
      const now = clock();
      // What is stored is the bundle as the agents get it: its refresh hint is ours to read, not theirs.
      const { refreshHint: _ours, ...forAgents } = bundle;
      const json = JSON.stringify(formatBundleJson(forAgents));
      if (stored?.bundle !== json) {
        await store.setFederatedBundle({ trustDomain, bundle: json, updatedAt: now });
        log.info({ trustDomain, sequence: bundle.sequence ?? null, x509Authorities: bundle.x509Authorities.length }, 'federated bundle updated');
      }
      const interval = refreshIntervalMs(bundle.refreshHint);
      const update = {
        lastSuccessAt: now,
        lastError: null,
        lastErrorCode: null,
        lastErrorAt: null,
        sequence: bundle.sequence ?? rel.sequence,
        refreshHint: bundle.refreshHint ?? null,
        nextRefreshAt: now + this.#jittered(interval),
      };
      await store.updateFederation(trustDomain, update);
      const after = { ...rel, ...update };
      this.#remember(after);
      return after;
    } catch (err) {
      const e = isWritError(err) ? err : new WritError('ERR_BUNDLE_ENDPOINT_UNREACHABLE', (err as Error).message);
      const now = clock();
      const interval = refreshIntervalMs(rel.refreshHint);
      const update = {
        lastError: e.message.slice(0, 500),
        lastErrorCode: e.code,
        lastErrorAt: now,
        // SPIFFE_Federation.md 6.2: retried at the next polling interval, not aggressively.
        nextRefreshAt: now + this.#jittered(interval),
      };
      await store.updateFederation(trustDomain, update).catch(() => undefined);
      const after = { ...rel, ...update };
      this.#remember(after);
      const status = federationStatus(after, now);
      const fields = { trustDomain, code: e.code, err: update.lastError, stalenessSeconds: status.stalenessSeconds };
      if (status.stale) log.warn(fields, 'federated bundle is stale: the bundle endpoint keeps failing; the last good bundle stays in use');
      else log.info(fields, 'federated bundle refresh failed; the last good bundle stays in use');
      throw e;
    }
  }

  /**
   * The roots an https_spiffe endpoint's SVID must chain to (SPIFFE_Federation.md 5.2.2.4): the
   * latest bundle of the endpoint SPIFFE ID's trust domain — the peer's own when the endpoint is
   * self-serving (the bootstrap bundle the first time), else ours or another federated one.
   */
  async #anchorsFor(rel: FederationRelationship, peerBundle: string | undefined): Promise<readonly Certificate[]> {
    const td = parseSpiffeId(rel.endpointSpiffeId ?? '').trustDomain;
    if (td === this.#o.trustDomain) return this.#o.ownAuthorities?.() ?? [];
    const json = td === rel.trustDomain ? peerBundle : (await this.#o.store.getFederatedBundle(td))?.bundle;
    return json ? parseBundleJson(td, json).x509Authorities : [];
  }

  #remember(rel: FederationRelationship): void {
    this.#last = [...this.#last.filter((r) => r.trustDomain !== rel.trustDomain), rel];
  }
}
