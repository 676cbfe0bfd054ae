/**
 * SPIFFE bundles (SPIFFE_Trust_Domain_and_Bundle.md section 4): the JWKS-based JSON form and PEM.
 */
import { createPublicKey, type JsonWebKey, type KeyObject } from 'node:crypto';
import { WritError } from './errors.ts';
import { parseSpiffeId, parseTrustDomain } from './id.ts';
import { certificatesToPem, parseCertificate, parseCertificatesPem, publicKeyOf, type Certificate } from './x509.ts';

export interface TrustBundle {
  readonly trustDomain: string;
  readonly x509Authorities: readonly Certificate[];
  /** JWT authorities keyed by `kid`. */
  readonly jwtAuthorities: ReadonlyMap<string, KeyObject>;
  readonly sequence?: number;
  /** Seconds. */
  readonly refreshHint?: number;
}

export const MAX_BUNDLE_BYTES = 1024 * 1024;
export const MAX_BUNDLE_KEYS = 1000;

const KNOWN_KTY = new Set(['EC', 'RSA']);

function invalid(msg: string): never {
  throw new WritError('ERR_BUNDLE_INVALID', `invalid SPIFFE bundle: ${msg}`);
}

/**
 * Parses SPIFFE bundle JSON. JWKs with an unknown `kty` or `use`, and `x509-svid` JWKs without an
 * `x5c` value, are skipped without discarding the rest; an empty `keys` array is a valid bundle
 * that trusts nothing.
 */
export function parseBundleJson(trustDomain: string, input: string | unknown): TrustBundle {
  parseTrustDomain(trustDomain);
  let doc: unknown = input;
  if (typeof input === 'string') {
    if (input.length > MAX_BUNDLE_BYTES) invalid(`larger than ${MAX_BUNDLE_BYTES} bytes`);
    try {
      doc = JSON.parse(input);
    } catch {
      invalid('not JSON');
    }
  }
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) invalid('not a JSON object');
  const o = doc as Record<string, unknown>;
  if (!Array.isArray(o['keys'])) invalid('"keys" must be an array');
  const keys = o['keys'] as unknown[];
  if (keys.length > MAX_BUNDLE_KEYS) invalid(`more than ${MAX_BUNDLE_KEYS} keys`);
  const seq = o['spiffe_sequence'];
  if (seq !== undefined && (typeof seq !== 'number' || !Number.isSafeInteger(seq) || seq < 0)) invalid('"spiffe_sequence" must be a non-negative integer');
  const hint = o['spiffe_refresh_hint'];
  if (hint !== undefined && (typeof hint !== 'number' || !Number.isSafeInteger(hint) || hint < 0))
    invalid('"spiffe_refresh_hint" must be a non-negative integer');

  const x509Authorities: Certificate[] = [];
  const jwtAuthorities = new Map<string, KeyObject>();
  keys.forEach((k, i) => {
    if (k === null || typeof k !== 'object' || Array.isArray(k)) invalid(`keys[${i}] is not an object`);
    const jwk = k as Record<string, unknown>;
    // Section 4.2.1 and 4.2.2: unknown kty or use means the whole JWK is ignored.
    if (typeof jwk['kty'] !== 'string' || !KNOWN_KTY.has(jwk['kty'])) return;
    const use = jwk['use'];
    if (use === 'x509-svid') {
      const x5c = jwk['x5c'];
      // X509-SVID.md 6.2: an entry whose x5c is not set or is empty MUST be ignored, and of several
      // values all but the first MUST be ignored.
      if (x5c === undefined || x5c === null || (Array.isArray(x5c) && x5c.length === 0)) return;
      if (!Array.isArray(x5c) || typeof x5c[0] !== 'string') invalid(`keys[${i}]: "x5c" of an x509-svid key must be an array of base64 certificates`);
      if (jwk['kid'] !== undefined) invalid(`keys[${i}]: an x509-svid key must not have a "kid"`);
      try {
        x509Authorities.push(parseCertificate(Buffer.from(x5c[0], 'base64')));
      } catch (err) {
        invalid(`keys[${i}]: x5c certificate: ${(err as Error).message}`);
      }
    } else if (use === 'jwt-svid') {
      const kid = jwk['kid'];
      if (typeof kid !== 'string' || kid.length === 0) invalid(`keys[${i}]: a jwt-svid key must have a "kid"`);
      if (jwtAuthorities.has(kid)) invalid(`keys[${i}]: duplicate kid ${JSON.stringify(kid)}`);
      try {
        jwtAuthorities.set(kid, createPublicKey({ key: publicJwk(jwk), format: 'jwk' }));
      } catch {
        invalid(`keys[${i}]: not a valid ${jwk['kty']} public key`);
      }
    }
  });
  return {
    trustDomain,
    x509Authorities,
    jwtAuthorities,
    ...(seq === undefined ? {} : { sequence: seq as number }),
    ...(hint === undefined ? {} : { refreshHint: hint as number }),
  };
}

/** Only the public members: a JWK carrying `d` must never make us hold a private key. */
function publicJwk(jwk: Record<string, unknown>): JsonWebKey {
  if (jwk['d'] !== undefined) invalid('a key contains private key material ("d")');
  const pick = jwk['kty'] === 'EC' ? ['kty', 'crv', 'x', 'y'] : ['kty', 'n', 'e'];
  return Object.fromEntries(pick.map((k) => [k, jwk[k]])) as JsonWebKey;
}

export interface BundleJson {
  keys: Array<Record<string, unknown>>;
  spiffe_sequence?: number;
  spiffe_refresh_hint?: number;
}

export function jwkOf(key: KeyObject): Record<string, unknown> {
  return key.export({ format: 'jwk' }) as Record<string, unknown>;
}

export function formatBundleJson(bundle: TrustBundle): BundleJson {
  const keys: Array<Record<string, unknown>> = [];
  for (const cert of bundle.x509Authorities) {
    keys.push({ use: 'x509-svid', ...jwkOf(publicKeyOf(cert)), x5c: [cert.der.toString('base64')] });
  }
  for (const [kid, key] of bundle.jwtAuthorities) keys.push({ use: 'jwt-svid', kid, ...jwkOf(key) });
  return {
    keys,
    ...(bundle.sequence === undefined ? {} : { spiffe_sequence: bundle.sequence }),
    ...(bundle.refreshHint === undefined ? {} : { spiffe_refresh_hint: bundle.refreshHint }),
  };
}

/** The X.509 authorities as PEM (JWT authorities have no PEM form and are left out). */
export function bundleToPem(bundle: TrustBundle): string {
  return certificatesToPem(bundle.x509Authorities);
}

export function parseBundlePem(trustDomain: string, pem: string): TrustBundle {
  parseTrustDomain(trustDomain);
  if (pem.length > MAX_BUNDLE_BYTES) invalid(`larger than ${MAX_BUNDLE_BYTES} bytes`);
  const certs = parseCertificatesPem(pem);
  if (certs.length === 0) invalid('no CERTIFICATE blocks in PEM');
  return { trustDomain, x509Authorities: certs, jwtAuthorities: new Map() };
}

/**
 * The trust domain a PEM bundle of CA certificates names: SPIFFE CA certificates carry the trust
 * domain's ID (`spiffe://example.org`) as their URI SAN. Undefined when no certificate names one
 * (an upstream PKI's roots) or they disagree; callers then need the trust domain given explicitly.
 *
 * @example trustDomainOfCaPem(readFileSync('bundle.pem', 'utf8')) // 'example.org'
 */
export function trustDomainOfCaPem(pem: string): string | undefined {
  const found = new Set<string>();
  for (const cert of parseCertificatesPem(pem)) {
    for (const uri of cert.uris) {
      try {
        const id = parseSpiffeId(uri);
        if (id.path === '') found.add(id.trustDomain);
      } catch {
        // not a SPIFFE ID: says nothing about the trust domain
      }
    }
  }
  return found.size === 1 ? [...found][0] : undefined;
}
