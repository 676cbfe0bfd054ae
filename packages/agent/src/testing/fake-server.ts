/**
 * A fake of the Writ server for the agent's unit tests, behind the same `ServerApi` the HTTPS
 * client implements, speaking the real JSON shapes of the agent routes (attestation, sync, renewal,
 * the SVID batch, JWT-SVIDs, decisions, workload reports). It has a real CA and a real JWT key, both
 * in the bundle it serves, so the SVIDs it signs pass the agent's checks; `answer` replaces what a
 * route answers, to play a server that answers wrongly.
 */
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import {
  OID,
  WritError,
  buildName,
  certificatesToPem,
  formatBundleJson,
  issueCertificate,
  parseCertificatesPem,
  parseCsr,
  signJwtSvid,
  trustDomainId,
  type JwtClaims,
  type Certificate,
  type TrustBundle,
} from '@writ/spiffe';
import {
  AGENT_PATHS,
  decodeSyncQuery,
  decodeWorkloads,
  type AttestAnswer,
  type JwtSvidAnswer,
  type RenewAnswer,
  type SignedSvid,
  type SvidBatchAnswer,
  type SyncAnswer,
  type WorkloadReport,
} from '@writ/protocol';
import type { ServerApi } from '../server-client.ts';
import type { EntryView } from '../sync.ts';

export interface FakeCall {
  readonly method: string;
  readonly path: string;
  readonly body: unknown;
  /** The SPIFFE ID of the client certificate configured when the call was made, '' for none. */
  readonly as: string;
}

/** A CA of `trustDomain` that signs what it is asked (also used to make SVIDs from a CA the agent does not trust). */
export class FakeCa {
  readonly trustDomain: string;
  readonly cert: Certificate;
  /** The `kid` of its JWT key: the same in every FakeCa of a trust domain, so another CA's token differs only by its signature. */
  readonly jwtKid: string;
  readonly #key: KeyObject;
  readonly #jwtKey = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  readonly #clock: () => number;

  constructor(trustDomain: string, clock: () => number = Date.now) {
    this.trustDomain = trustDomain;
    this.#clock = clock;
    this.jwtKid = `${trustDomain}-jwt`;
    const k = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    this.#key = k.privateKey;
    const now = clock();
    this.cert = issueCertificate(
      {
        subject: buildName([[OID.commonName, `${trustDomain} fake CA`]]),
        spki: k.publicKey.export({ format: 'der', type: 'spki' }),
        notBefore: new Date(now - 60_000),
        notAfter: new Date(now + 24 * 3600_000),
        ca: true,
        uris: [trustDomainId(trustDomain)],
      },
      { cert: undefined, signer: { key: this.#key, keyType: 'ec-p256' } },
    );
  }

  get pem(): string {
    return certificatesToPem([this.cert]);
  }

  get bundle(): TrustBundle {
    return { trustDomain: this.trustDomain, x509Authorities: [this.cert], jwtAuthorities: new Map([[this.jwtKid, this.#jwtKey.publicKey]]) };
  }

  /** A JWT-SVID signed with this CA's JWT key; `claims` replaces what it would say (`exp` in seconds). */
  signJwt(sub: string, audience: readonly string[], ttlMs = 300_000, claims: Partial<JwtClaims> = {}): string {
    const now = this.#clock();
    const aud = audience.length === 1 ? audience[0]! : [...audience];
    return signJwtSvid({ sub, aud, exp: Math.floor((now + ttlMs) / 1000), iat: Math.floor(now / 1000), ...claims }, this.jwtKid, {
      key: this.#jwtKey.privateKey,
      keyType: 'ec-p256',
    });
  }

  /** An X.509-SVID for `spiffeId` and the key in `csr` (PEM), with optional DNS names (a TLS server's). */
  sign(spiffeId: string, csr: string, ttlMs = 3600_000, dnsNames: readonly string[] = []): string {
    const now = this.#clock();
    const leaf = issueCertificate(
      {
        subject: buildName([[OID.commonName, 'svid']]),
        spki: parseCsr(csr).spki,
        notBefore: new Date(now - 10_000),
        notAfter: new Date(now + ttlMs),
        ca: false,
        uris: [spiffeId],
        dnsNames,
      },
      { cert: this.cert, signer: { key: this.#key, keyType: 'ec-p256' } },
    );
    return certificatesToPem([leaf]);
  }
}

type Handler = (body: Record<string, unknown>, call: FakeCall) => unknown;

export class FakeServer implements ServerApi {
  readonly ca: FakeCa;
  readonly calls: FakeCall[] = [];
  /** Join token -> node name, each redeemable once. */
  readonly joinTokens = new Map<string, string>();
  /** Agent IDs the server knows (attested, not evicted). */
  readonly agents = new Set<string>();
  entries: EntryView[] = [];
  /** Image digests admitted under an enforce policy (sent whole whenever the agent's version differs). */
  admittedImages: string[] = [];
  /** The server's --require-admitted-image. */
  requireAdmittedImage = false;
  /** Federated bundles (SPIFFE bundle JSON by trust domain) the sync answers carry; change `bundlesEpoch` with them. */
  federated: Record<string, ReturnType<typeof formatBundleJson>> = {};
  bundlesEpoch = 0;
  revision = 1;
  /** What each agent last reported it runs (POST /v1/agent/workloads, decoded as the server does). */
  readonly workloads = new Map<string, WorkloadReport[]>();
  svidTtlMs = 3600_000;
  /** Replaces a route's answer ("POST /v1/agent/renew"); throw from it to answer with an error. */
  readonly answer = new Map<string, Handler>();
  #identity = '';
  #waiters = new Set<() => void>();

  constructor(trustDomain = 'fake.test', clock: () => number = Date.now) {
    this.ca = new FakeCa(trustDomain, clock);
  }

  get trustDomain(): string {
    return this.ca.trustDomain;
  }

  /** A join token for `node` (spiffe://TD/writ/agent/NODE). */
  joinToken(node: string): string {
    const t = `tok-${node}-${this.joinTokens.size}-${Math.random().toString(36).slice(2)}`;
    this.joinTokens.set(t, node);
    return t;
  }

  evict(agentId: string): void {
    this.agents.delete(agentId);
    this.changed();
  }

  /** Adds or replaces an entry at a new revision, as the server's write path does. */
  put(e: EntryView): void {
    this.entries = [...this.entries.filter((x) => x.id !== e.id), { ...e, revision: this.revision + 1 }];
    this.changed();
  }

  /** Admits image digests, as the webhook's enforce verdicts do, and wakes waiting syncs. */
  admit(...digests: string[]): void {
    this.setAdmitted([...new Set([...this.admittedImages, ...digests])]);
  }

  /** Replaces the admitted set (a prune, say): agents get it whole. */
  setAdmitted(digests: string[]): void {
    this.admittedImages = digests;
    this.#imagesEpoch++;
    this.changed();
  }

  #imagesEpoch = 1;

  /** Wakes waiting sync calls (after a change to `entries`). */
  changed(): void {
    this.revision++;
    for (const w of this.#waiters) w();
    this.#waiters.clear();
  }

  calledWith(method: string, path: string): FakeCall[] {
    return this.calls.filter((c) => c.method === method && c.path.split('?')[0] === path);
  }

  configure(opts: { ca?: string; identity?: { cert: string; key: string } | undefined }): void {
    if ('identity' in opts) this.#identity = opts.identity ? (parseCertificatesPem(opts.identity.cert)[0]?.uris[0] ?? '') : '';
  }

  /** An agent stopping: its long polls end. The fake stays up for the next agent (a restart). */
  close(): void {
    for (const w of this.#waiters) w();
    this.#waiters.clear();
  }

  async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const call: FakeCall = { method, path, body, as: this.#identity };
    this.calls.push(call);
    await Promise.resolve(); // an answer is never synchronous
    const route = `${method} ${path.split('?')[0]}`;
    const b = (body && typeof body === 'object' && !Buffer.isBuffer(body) ? body : {}) as Record<string, unknown>;
    const h = this.answer.get(route);
    if (h) return h(b, call) as T;
    return (await this.#route(route, path, b)) as T;
  }

  #agent(): string {
    if (!this.agents.has(this.#identity)) throw new WritError('ERR_UNAUTHENTICATED', 'the agent is not attested (evicted?)');
    return this.#identity;
  }

  #attested(spiffeId: string, csr: unknown): AttestAnswer {
    this.agents.add(spiffeId);
    return {
      spiffeId,
      selectors: [],
      svid: this.ca.sign(spiffeId, String(csr), this.svidTtlMs),
      bundle: this.ca.pem,
      expiresAt: this.#expiry(),
    };
  }

  #expiry(): string {
    return new Date(Date.now() + this.svidTtlMs).toISOString();
  }

  async #route(route: string, path: string, b: Record<string, unknown>): Promise<unknown> {
    switch (route) {
      case `POST ${AGENT_PATHS.attestJoinToken}`: {
        const node = this.joinTokens.get(String(b['joinToken']));
        if (!node) throw new WritError('ERR_JOIN_TOKEN_INVALID', 'join token invalid or used');
        this.joinTokens.delete(String(b['joinToken']));
        return this.#attested(`spiffe://${this.trustDomain}/writ/agent/${node}`, b['csr']);
      }
      case `POST ${AGENT_PATHS.attestPsat}`:
        return this.#attested(`spiffe://${this.trustDomain}/writ/agent/k8s_psat/${String(b['cluster'])}/node-1`, b['csr']);
      case `POST ${AGENT_PATHS.renew}`: {
        const id = this.#agent();
        return { spiffeId: id, svid: this.ca.sign(id, String(b['csr']), this.svidTtlMs), bundle: this.ca.pem, expiresAt: this.#expiry() } satisfies RenewAnswer;
      }
      case `POST ${AGENT_PATHS.svids}`: {
        this.#agent();
        const reqs = b['requests'] as Array<{ entryId: string; csr: string }>;
        const svids = reqs.flatMap((r): SignedSvid[] => {
          const e = this.entries.find((x) => x.id === r.entryId);
          const ttlMs = e ? e.x509SvidTtl * 1000 || this.svidTtlMs : 0;
          return e
            ? [{ entryId: e.id, spiffeId: e.spiffeId, svid: this.ca.sign(e.spiffeId, r.csr, ttlMs), expiresAt: new Date(Date.now() + ttlMs).toISOString() }]
            : [];
        });
        return { svids } satisfies SvidBatchAnswer;
      }
      case `POST ${AGENT_PATHS.jwtSvid}`: {
        this.#agent();
        const e = this.entries.find((x) => x.id === b['entryId']);
        if (!e) throw new WritError('ERR_FORBIDDEN', 'entryId: the entry is not assigned to this agent');
        const ttlMs = e.jwtSvidTtl * 1000 || 300_000;
        const token = this.ca.signJwt(e.spiffeId, (b['audience'] as string[] | undefined) ?? [], ttlMs);
        return { spiffeId: e.spiffeId, token, expiresAt: new Date(Date.now() + ttlMs).toISOString() } satisfies JwtSvidAnswer;
      }
      case `POST ${AGENT_PATHS.decisions}`:
        this.#agent();
        return { stored: 0 };
      case `POST ${AGENT_PATHS.workloads}`: {
        const list = decodeWorkloads(b);
        this.workloads.set(this.#agent(), list);
        return { workloads: list.length };
      }
      case `GET ${AGENT_PATHS.sync}`: {
        this.#agent();
        const { since, wait, bundles, images } = decodeSyncQuery(new URL(path, 'https://fake').searchParams);
        if (since >= this.revision && wait > 0)
          await new Promise<void>((r) => {
            const t = setTimeout(r, wait * 1000);
            this.#waiters.add(() => (clearTimeout(t), r()));
          });
        this.#agent();
        const bundlesVersion = `v-${this.ca.cert.serialHex}.${this.bundlesEpoch}`;
        const imagesVersion = `${this.#imagesEpoch}.${this.admittedImages.length}`;
        return {
          revision: this.revision,
          full: since === 0,
          entries: since === 0 ? this.entries : this.entries.filter((e) => e.revision > since),
          removed: [],
          bundlesVersion,
          ...(bundles !== bundlesVersion ? { bundle: formatBundleJson(this.ca.bundle), federatedBundles: this.federated } : {}),
          ...(images !== undefined && images !== imagesVersion ? { admittedImages: { version: imagesVersion, full: true, digests: this.admittedImages } } : {}),
          ...(this.requireAdmittedImage ? { requireAdmittedImage: true as const } : {}),
        } satisfies SyncAnswer;
      }
      default:
        throw new WritError('ERR_NOT_FOUND', `the fake server has no route ${route}`);
    }
  }
}

/** An entry as the server sends it. */
export function fakeEntry(id: string, spiffeId: string, selectors: string[], revision = 1): EntryView {
  return {
    id,
    spiffeId,
    parentId: '',
    selectors,
    x509SvidTtl: 3600,
    jwtSvidTtl: 300,
    dnsNames: [],
    federatesWith: [],
    admin: false,
    hint: '',
    expiresAt: null,
    revision,
  };
}
