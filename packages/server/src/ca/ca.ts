/**
 * The certificate authority: X.509 CAs and JWT signing keys, each rotating through
 * prepared -> active -> old, and SVID issuance from the active one.
 *
 * Rotation (SPIRE's scheme): at half the active authority's life a successor is prepared and
 * published in the bundle; at 5/6 of its life the successor becomes active and the old one stays
 * published until its notAfter, after which nothing it signed can still be valid (SVIDs never
 * outlive their issuer).
 */
import { createPublicKey, randomBytes, randomUUID, type KeyObject } from 'node:crypto';
import { existsSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import {
  OID,
  WritError,
  buildName,
  certificatesToPem,
  issueCertificate,
  jwkOf,
  parseCertificatesPem,
  parseSpiffeId,
  signJwtSvid,
  trustDomainId,
  type Certificate,
  type KeyType,
  type Signer,
  type SpiffeId,
  type TrustBundle,
} from '@writ/spiffe';
import type { Authority, Store } from '../store/types.ts';
import { generateSigner, readPrivateKey, writePrivateKey } from './keys.ts';

export interface UpstreamCa {
  /** Our CA certificates are signed by this one; chain holds it first, then its intermediates. */
  readonly chain: readonly Certificate[];
  readonly signer: Signer;
  /** The roots relying parties trust (the bundle's X.509 authorities). */
  readonly roots: readonly Certificate[];
}

export interface CaOptions {
  readonly store: Store;
  readonly trustDomain: string;
  readonly dataDir: string;
  /** Identifies this replica's authorities in a shared store. */
  readonly serverId: string;
  readonly keyType: KeyType;
  readonly caTtlMs: number;
  readonly x509SvidTtlMs: number;
  readonly jwtSvidTtlMs: number;
  /** `iss` of JWT-SVIDs; a function when it is known only once the server listens. */
  readonly jwtIssuer?: string | (() => string);
  readonly upstream?: UpstreamCa;
  readonly kek?: string;
  readonly clock?: () => number;
  readonly onEvent?: (event: string, fields: Record<string, unknown>) => void;
}

interface LoadedX509 {
  readonly record: Authority;
  /** Our CA certificate followed by any upstream intermediates. */
  readonly chain: readonly Certificate[];
  readonly signer: Signer | undefined;
}

interface LoadedJwt {
  readonly record: Authority;
  readonly kid: string;
  readonly publicKey: KeyObject;
  readonly signer: Signer | undefined;
}

const BACKDATE_MS = 10_000;
/** When an authority was created: its notBefore is backdated for clock skew. */
const bornAt = (a: Authority): number => a.notBefore + BACKDATE_MS;

export interface X509SvidRequest {
  readonly spiffeId: string;
  /** The subject public key (SPKI DER), usually from a CSR. */
  readonly spki: Buffer;
  readonly ttlMs?: number;
  readonly dnsNames?: readonly string[];
  /** IP SANs (only for the server's own certificate). */
  readonly ipAddresses?: readonly string[];
}

export interface X509Svid {
  /** Leaf first, then the intermediates a peer needs to reach a bundle root. */
  readonly chain: readonly Certificate[];
  readonly expiresAt: number;
}

/** `spiffe_refresh_hint` for a CA lifetime: a quarter of the time between a successor's publication and its activation, 1 s to 5 min. */
export function refreshHintSeconds(caTtlMs: number): number {
  return Math.max(1, Math.min(300, Math.floor(caTtlMs / 12 / 1000)));
}

export class CertificateAuthority {
  readonly #o: CaOptions;
  readonly #clock: () => number;
  #x509: LoadedX509[] = [];
  #jwt: LoadedJwt[] = [];
  #bundle: TrustBundle | undefined;

  constructor(opts: CaOptions) {
    this.#o = opts;
    this.#clock = opts.clock ?? Date.now;
  }

  get trustDomain(): string {
    return this.#o.trustDomain;
  }

  #keyPath(id: string): string {
    return join(this.#o.dataDir, 'keys', `${id}.pem`);
  }

  #loadSigner(record: Authority): Signer | undefined {
    if (record.serverId !== this.#o.serverId) return undefined;
    const path = this.#keyPath(record.id);
    return existsSync(path) ? readPrivateKey(path, this.#o.kek) : undefined;
  }

  /** Reads the journal from the store and this server's keys from disk; rebuilds the bundle. */
  async reload(): Promise<void> {
    const records = await this.#o.store.listAuthorities();
    const sequence = await this.#o.store.bundleSequence();
    const x509: LoadedX509[] = [];
    const jwt: LoadedJwt[] = [];
    for (const r of records) {
      if (r.kind === 'x509') {
        x509.push({ record: r, chain: parseCertificatesPem(r.publicData), signer: this.#loadSigner(r) });
      } else {
        const { kid, jwk } = JSON.parse(r.publicData) as { kid: string; jwk: Record<string, unknown> };
        jwt.push({ record: r, kid, publicKey: createPublicKey({ key: jwk as never, format: 'jwk' }), signer: this.#loadSigner(r) });
      }
    }
    this.#x509 = x509;
    this.#jwt = jwt;
    const now = this.#clock();
    const live = (r: Authority): boolean => r.notAfter > now;
    this.#bundle = {
      trustDomain: this.#o.trustDomain,
      x509Authorities: this.#o.upstream ? [...this.#o.upstream.roots] : x509.filter((a) => live(a.record)).map((a) => a.chain[0]!),
      jwtAuthorities: new Map(jwt.filter((a) => live(a.record)).map((a) => [a.kid, a.publicKey])),
      sequence,
      // A successor is published at half an authority's life and signs from 5/6 of it: a peer
      // polling at a quarter of that window (caTtl / 12) sees it several times before it is used.
      refreshHint: refreshHintSeconds(this.#o.caTtlMs),
    };
  }

  /** One rotation step for both kinds of authority; call at start and then periodically. */
  async rotate(): Promise<boolean> {
    await this.reload();
    const now = this.#clock();
    const upsert: Authority[] = [];
    const remove: string[] = [];
    // Expired authorities of any replica (one may be gone for good) leave the journal.
    for (const a of [...this.#x509, ...this.#jwt]) if (a.record.serverId !== this.#o.serverId && a.record.notAfter <= now) remove.push(a.record.id);
    for (const kind of ['x509', 'jwt'] as const) {
      const mine = (kind === 'x509' ? this.#x509 : this.#jwt).filter((a) => a.record.serverId === this.#o.serverId);
      const usable = (a: { record: Authority; signer: Signer | undefined }): boolean => a.signer !== undefined && a.record.notAfter > now;
      let active = mine.find((a) => a.record.status === 'active' && usable(a))?.record;
      let prepared = mine.find((a) => a.record.status === 'prepared' && usable(a))?.record;
      for (const a of mine) {
        // An active or prepared authority whose key is gone (data dir lost) or that expired retires.
        if ((a.record.status !== 'old' && a.record !== active && a.record !== prepared) || a.record.notAfter <= now) {
          if (a.record.notAfter <= now) remove.push(a.record.id);
          else upsert.push({ ...a.record, status: 'old' });
        }
      }
      if (!active && prepared) {
        upsert.push((active = { ...prepared, status: 'active' }));
        prepared = undefined;
      }
      if (!active) upsert.push((active = this.#create(kind, 'active', now)));
      // Ages count from creation, not from the backdated notBefore, so a short CA TTL is not half spent at birth.
      const life = active.notAfter - bornAt(active);
      const age = now - bornAt(active);
      if (!prepared && age >= life / 2) upsert.push((prepared = this.#create(kind, 'prepared', now)));
      if (prepared && age >= (life * 5) / 6) {
        // A successor signs only once peers had time to fetch it: normally it was published at 1/2 and it
        // is 5/6 now, but after an outage it may be minutes old. It waits two refresh hints (capped at
        // a third of the life) unless the predecessor is about to expire and nothing else could sign.
        const publishedFor = now - bornAt(prepared);
        const hintMs = refreshHintSeconds(this.#o.caTtlMs) * 1000;
        if (publishedFor >= Math.min(2 * hintMs, life / 3) || active.notAfter - now <= hintMs) {
          upsert.push({ ...active, status: 'old' }, { ...prepared, status: 'active' });
          this.#o.onEvent?.('ca.activated', { kind, id: prepared.id, retired: active.id, publishedForMs: publishedFor });
        }
      }
    }
    if (upsert.length === 0 && remove.length === 0) return false;
    await this.#o.store.saveAuthorities(upsert, remove);
    await this.reload();
    return true;
  }

  #create(kind: 'x509' | 'jwt', status: 'active' | 'prepared', now: number): Authority {
    const signer = generateSigner(this.#o.keyType);
    let notAfter = now + this.#o.caTtlMs;
    let publicData: string;
    let id: string;
    if (kind === 'x509') {
      id = randomUUID();
      const up = this.#o.upstream;
      if (up) notAfter = Math.min(notAfter, up.chain[0]!.notAfter.getTime());
      const cert = issueCertificate(
        {
          subject: buildName([
            [OID.countryName, 'US'],
            [OID.organization, 'Writ'],
            [OID.commonName, `${this.#o.trustDomain} CA ${id.slice(0, 8)}`],
          ]),
          spki: signer.publicKey.export({ format: 'der', type: 'spki' }),
          notBefore: new Date(now - BACKDATE_MS),
          notAfter: new Date(notAfter),
          ca: true,
          uris: [trustDomainId(this.#o.trustDomain)],
        },
        up ? { cert: up.chain[0], signer: up.signer } : { cert: undefined, signer },
      );
      publicData = certificatesToPem(up ? [cert, ...up.chain.filter((c) => !up.roots.some((r) => r.der.equals(c.der)))] : [cert]);
    } else {
      id = randomBytes(24).toString('base64url');
      publicData = JSON.stringify({ kid: id, jwk: jwkOf(signer.publicKey) });
    }
    // The key reaches disk before the journal names it: a crash in between leaves an orphan file, never a keyless authority.
    writePrivateKey(this.#keyPath(id), signer.key, this.#o.kek);
    this.#o.onEvent?.('ca.created', { kind, id, status, notAfter: new Date(notAfter).toISOString() });
    return { id, kind, serverId: this.#o.serverId, status, publicData, notBefore: now - BACKDATE_MS, notAfter };
  }

  /** The trust domain's bundle: every live authority of every replica, prepared ones included. */
  bundle(): TrustBundle {
    if (!this.#bundle) throw new WritError('ERR_CA_UNAVAILABLE', 'the CA is not initialised');
    return this.#bundle;
  }

  #active<T extends LoadedX509 | LoadedJwt>(list: T[]): T & { signer: Signer } {
    const now = this.#clock();
    const a = list.find((x) => x.record.serverId === this.#o.serverId && x.record.status === 'active' && x.signer && x.record.notAfter > now);
    if (!a) throw new WritError('ERR_CA_UNAVAILABLE', 'no active signing authority (rotation pending)');
    return a as T & { signer: Signer };
  }

  /** The subject of an SVID: a workload of our trust domain, so never the bare trust domain ID (which validators refuse). */
  #subject(spiffeId: string, what: 'an X.509-SVID' | 'a JWT-SVID'): SpiffeId {
    const id = parseSpiffeId(spiffeId);
    if (id.trustDomain !== this.#o.trustDomain)
      throw new WritError('ERR_SPIFFE_ID_INVALID', `SPIFFE ID ${spiffeId} is not in trust domain ${this.#o.trustDomain}`, { field: 'spiffeId' });
    if (id.path === '') throw new WritError('ERR_SPIFFE_ID_INVALID', `${what} needs a SPIFFE ID with a path, not ${spiffeId}`, { field: 'spiffeId' });
    return id;
  }

  /** Signs an X.509-SVID. The leaf never outlives the CA that signs it. */
  signX509Svid(req: X509SvidRequest): X509Svid {
    const id = this.#subject(req.spiffeId, 'an X.509-SVID');
    const ca = this.#active(this.#x509);
    const now = this.#clock();
    const notAfter = Math.min(now + (req.ttlMs ?? this.#o.x509SvidTtlMs), ca.record.notAfter);
    const leaf = issueCertificate(
      {
        subject: buildName([
          [OID.countryName, 'US'],
          [OID.organization, 'Writ'],
        ]),
        spki: req.spki,
        notBefore: new Date(now - BACKDATE_MS),
        notAfter: new Date(notAfter),
        ca: false,
        uris: [id.uri],
        dnsNames: req.dnsNames ?? [],
        ipAddresses: (req.ipAddresses ?? []).map(ipBytes),
      },
      { cert: ca.chain[0], signer: ca.signer },
    );
    // The bundle holds our CA itself unless an upstream CA is the root, then the chain carries it.
    const chain = this.#o.upstream ? [leaf, ...ca.chain] : [leaf];
    return { chain, expiresAt: notAfter };
  }

  /** Signs a JWT-SVID with the active key; `iat`, `exp` (capped at the key's end) and `iss` when configured. */
  signJwtSvid(spiffeId: string, audience: readonly string[], ttlMs?: number): { token: string; expiresAt: number } {
    const id = this.#subject(spiffeId, 'a JWT-SVID');
    const key = this.#active(this.#jwt);
    const now = this.#clock();
    const expiresAt = Math.min(now + (ttlMs ?? this.#o.jwtSvidTtlMs), key.record.notAfter);
    const issuer = typeof this.#o.jwtIssuer === 'function' ? this.#o.jwtIssuer() : this.#o.jwtIssuer;
    const claims = {
      sub: id.uri,
      aud: audience.length === 1 ? audience[0]! : [...audience],
      exp: Math.floor(expiresAt / 1000),
      iat: Math.floor(now / 1000),
      ...(issuer ? { iss: issuer } : {}),
    };
    return { token: signJwtSvid(claims, key.kid, key.signer), expiresAt };
  }

  /** Signs with the active JWT key tokens other than JWT-SVIDs (token exchange): `fn` gets its kid, signer and end (epoch ms). */
  withJwtKey<T>(fn: (kid: string, signer: Signer, notAfter: number) => T): T {
    const key = this.#active(this.#jwt);
    return fn(key.kid, key.signer, key.record.notAfter);
  }

  /** Public state of this replica's authorities, for `writ ca show` style introspection and tests. */
  authorities(): Array<Pick<Authority, 'id' | 'kind' | 'status' | 'notBefore' | 'notAfter' | 'serverId'>> {
    return [...this.#x509, ...this.#jwt].map(({ record: { id, kind, status, notBefore, notAfter, serverId } }) => ({
      id,
      kind,
      status,
      notBefore,
      notAfter,
      serverId,
    }));
  }
}

function ipBytes(ip: string): Buffer {
  const v = isIP(ip);
  if (v === 4) return Buffer.from(ip.split('.').map(Number));
  if (v === 6) {
    const [head, tail] = ip.split('::') as [string, string | undefined];
    const h = head ? head.split(':') : [];
    const t = tail ? tail.split(':') : [];
    const groups = tail === undefined ? h : [...h, ...Array(8 - h.length - t.length).fill('0'), ...t];
    return Buffer.from(groups.map((g) => g.padStart(4, '0')).join(''), 'hex');
  }
  throw new WritError('ERR_FIELD_INVALID', `not an IP address: ${ip}`);
}
