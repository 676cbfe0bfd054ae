/**
 * X.509 certificates as X509-SVID.md uses them: parse, build, and validate an SVID chain
 * against the bundle of the SVID's own trust domain.
 */
import { createHash, createPublicKey, randomBytes, sign as cryptoSign, verify as cryptoVerify, X509Certificate, type KeyObject } from 'node:crypto';
import * as der from './der.ts';
import { WritError } from './errors.ts';
import { parseSpiffeId, type SpiffeId } from './id.ts';
import { fromPem, toPem } from './pem.ts';

export const OID = {
  basicConstraints: '2.5.29.19',
  keyUsage: '2.5.29.15',
  extKeyUsage: '2.5.29.37',
  subjectAltName: '2.5.29.17',
  subjectKeyIdentifier: '2.5.29.14',
  authorityKeyIdentifier: '2.5.29.35',
  nameConstraints: '2.5.29.30',
  serverAuth: '1.3.6.1.5.5.7.3.1',
  clientAuth: '1.3.6.1.5.5.7.3.2',
  ecdsaSha256: '1.2.840.10045.4.3.2',
  ecdsaSha384: '1.2.840.10045.4.3.3',
  ecdsaSha512: '1.2.840.10045.4.3.4',
  rsaSha256: '1.2.840.113549.1.1.11',
  rsaSha384: '1.2.840.113549.1.1.12',
  rsaSha512: '1.2.840.113549.1.1.13',
  commonName: '2.5.4.3',
  organization: '2.5.4.10',
  countryName: '2.5.4.6',
} as const;

/** Key usage bit positions (RFC 5280 4.2.1.3). */
export const KU = {
  digitalSignature: 0,
  nonRepudiation: 1,
  keyEncipherment: 2,
  dataEncipherment: 3,
  keyAgreement: 4,
  keyCertSign: 5,
  cRLSign: 6,
} as const;

export interface Extension {
  readonly critical: boolean;
  readonly value: Buffer;
}

/** A parsed certificate. Only what Writ inspects is decoded; `der` keeps the rest. */
export interface Certificate {
  readonly der: Buffer;
  readonly tbs: Buffer;
  readonly signatureOid: string;
  readonly signature: Buffer;
  readonly serialHex: string;
  readonly issuer: Buffer;
  readonly subject: Buffer;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly spki: Buffer;
  readonly extensions: ReadonlyMap<string, Extension>;
  /** undefined when the extension is absent. */
  readonly basicConstraints: { readonly ca: boolean; readonly pathLen: number | undefined } | undefined;
  /** Bit set (bit n of RFC 5280) and whether the extension is critical; undefined when absent. */
  readonly keyUsage: { readonly bits: number; readonly critical: boolean } | undefined;
  readonly uris: readonly string[];
  readonly dnsNames: readonly string[];
  readonly subjectKeyId: Buffer | undefined;
}

const keyCache = new WeakMap<Certificate, KeyObject>();

/** The certificate's public key, parsed once. */
export function publicKeyOf(cert: Certificate): KeyObject {
  let k = keyCache.get(cert);
  if (!k) {
    try {
      k = createPublicKey({ key: cert.spki, format: 'der', type: 'spki' });
    } catch (err) {
      throw new WritError('ERR_X509_MALFORMED', 'certificate public key cannot be parsed', { cause: err });
    }
    keyCache.set(cert, k);
  }
  return k;
}

/** Certificates larger than this are refused before decoding. */
export const MAX_CERT_BYTES = 64 * 1024;

export function parseCertificate(input: Buffer | Uint8Array): Certificate {
  const buf = Buffer.isBuffer(input) ? input : Buffer.from(input);
  if (buf.length > MAX_CERT_BYTES) throw new WritError('ERR_X509_MALFORMED', `certificate larger than ${MAX_CERT_BYTES} bytes`);
  const top = der.children(der.expectTag(der.parseDer(buf), der.TAG.SEQUENCE, 'Certificate'));
  if (top.length !== 3) throw new WritError('ERR_X509_MALFORMED', 'Certificate must have 3 elements');
  const tbsNode = der.expectTag(top[0], der.TAG.SEQUENCE, 'TBSCertificate');
  const sigAlg = der.children(der.expectTag(top[1], der.TAG.SEQUENCE, 'signatureAlgorithm'));
  const sigBits = der.expectTag(top[2], der.TAG.BIT_STRING, 'signature');
  const t = der.children(tbsNode);
  let i = 0;
  if (t[0]?.tag === 0xa0) i++; // [0] EXPLICIT version
  const serial = der.expectTag(t[i++], der.TAG.INTEGER, 'serialNumber');
  der.expectTag(t[i++], der.TAG.SEQUENCE, 'signature');
  const issuer = der.expectTag(t[i++], der.TAG.SEQUENCE, 'issuer');
  const validity = der.children(der.expectTag(t[i++], der.TAG.SEQUENCE, 'validity'));
  const subject = der.expectTag(t[i++], der.TAG.SEQUENCE, 'subject');
  const spki = der.expectTag(t[i++], der.TAG.SEQUENCE, 'subjectPublicKeyInfo');
  const extensions = new Map<string, Extension>();
  for (; i < t.length; i++) {
    if (t[i]!.tag !== 0xa3) continue; // issuerUniqueID / subjectUniqueID are ignored
    const list = der.children(der.expectTag(der.children(t[i]!)[0], der.TAG.SEQUENCE, 'extensions'));
    for (const ext of list) {
      const parts = der.children(der.expectTag(ext, der.TAG.SEQUENCE, 'Extension'));
      const id = der.decodeOid(der.expectTag(parts[0], der.TAG.OID, 'extnID'));
      const critical = parts.length === 3 ? der.decodeBoolean(parts[1]!) : false;
      const value = der.expectTag(parts[parts.length - 1], der.TAG.OCTET_STRING, 'extnValue').value;
      // RFC 5280 4.2: a certificate MUST NOT include more than one instance of an extension.
      if (extensions.has(id)) throw new WritError('ERR_X509_MALFORMED', `duplicate extension ${id}`);
      extensions.set(id, { critical, value });
    }
  }
  if (validity.length !== 2) throw new WritError('ERR_X509_MALFORMED', 'validity must have 2 times');
  if (sigBits.value.length < 1 || sigBits.value[0] !== 0) throw new WritError('ERR_X509_MALFORMED', 'bad signature bit string');

  const uris: string[] = [];
  const dnsNames: string[] = [];
  const san = extensions.get(OID.subjectAltName);
  if (san) {
    for (const gn of der.children(der.parseDer(san.value))) {
      if (gn.tag === 0x86) uris.push(gn.value.toString('latin1'));
      else if (gn.tag === 0x82) dnsNames.push(gn.value.toString('latin1'));
    }
  }
  let basicConstraints: Certificate['basicConstraints'];
  const bc = extensions.get(OID.basicConstraints);
  if (bc) {
    const parts = der.children(der.expectTag(der.parseDer(bc.value), der.TAG.SEQUENCE, 'BasicConstraints'));
    let ca = false;
    let pathLen: number | undefined;
    for (const p of parts) {
      if (p.tag === der.TAG.BOOLEAN) ca = der.decodeBoolean(p);
      else if (p.tag === der.TAG.INTEGER) pathLen = der.decodeSmallInt(p);
    }
    basicConstraints = { ca, pathLen };
  }
  let keyUsage: Certificate['keyUsage'];
  const ku = extensions.get(OID.keyUsage);
  if (ku) {
    const bs = der.expectTag(der.parseDer(ku.value), der.TAG.BIT_STRING, 'KeyUsage').value;
    let bits = 0;
    for (let b = 0; b < Math.min(bs.length - 1, 2) * 8; b++) {
      if (bs[1 + (b >> 3)]! & (0x80 >> (b & 7))) bits |= 1 << b;
    }
    keyUsage = { bits, critical: ku.critical };
  }
  const ski = extensions.get(OID.subjectKeyIdentifier);
  return {
    der: buf,
    tbs: tbsNode.raw,
    signatureOid: der.decodeOid(der.expectTag(sigAlg[0], der.TAG.OID, 'signature algorithm')),
    signature: sigBits.value.subarray(1),
    serialHex: serial.value.toString('hex'),
    issuer: issuer.raw,
    subject: subject.raw,
    notBefore: der.decodeTime(validity[0]!),
    notAfter: der.decodeTime(validity[1]!),
    spki: spki.raw,
    extensions,
    basicConstraints,
    keyUsage,
    uris,
    dnsNames,
    subjectKeyId: ski ? der.parseDer(ski.value).value : undefined,
  };
}

export function parseCertificatesPem(pem: string): Certificate[] {
  return fromPem(pem, 'CERTIFICATE').map(parseCertificate);
}

export function certificatesToPem(certs: readonly Certificate[]): string {
  return certs.map((c) => toPem('CERTIFICATE', c.der)).join('');
}

const DIGEST_OF: Record<string, string> = {
  [OID.ecdsaSha256]: 'sha256',
  [OID.ecdsaSha384]: 'sha384',
  [OID.ecdsaSha512]: 'sha512',
  [OID.rsaSha256]: 'sha256',
  [OID.rsaSha384]: 'sha384',
  [OID.rsaSha512]: 'sha512',
};

/** Whether `cert` carries a valid signature by `issuer`'s key (names must chain too). */
export function isSignedBy(cert: Certificate, issuer: Certificate): boolean {
  if (!cert.issuer.equals(issuer.subject)) return false;
  const digest = DIGEST_OF[cert.signatureOid];
  try {
    if (digest) return cryptoVerify(digest, cert.tbs, publicKeyOf(issuer), cert.signature);
    // Other algorithms (RSASSA-PSS and friends): let OpenSSL read the parameters.
    return new X509Certificate(cert.der).verify(publicKeyOf(issuer));
  } catch {
    return false;
  }
}

function hasBit(cert: Certificate, bit: number): boolean {
  return cert.keyUsage !== undefined && (cert.keyUsage.bits & (1 << bit)) !== 0;
}

/** Where a validator finds the X.509 authorities of a trust domain. A `Map` satisfies it. */
export interface X509BundleSource {
  get(trustDomain: string): { readonly x509Authorities: readonly Certificate[] } | undefined;
}

export interface VerifiedX509Svid {
  readonly spiffeId: SpiffeId;
  /** leaf first, ending with the bundle authority it chained to. */
  readonly chain: readonly Certificate[];
}

const MAX_CHAIN = 8;

function svidError(why: string): never {
  throw new WritError('ERR_X509_SVID_INVALID', `X.509-SVID rejected: ${why}`);
}

/**
 * Validates an X.509-SVID chain (leaf first, then intermediates) per X509-SVID.md section 5:
 * the leaf is checked for SVID shape, then a path is built to an authority of the leaf's own
 * trust domain only (bundles are never merged).
 */
export function verifyX509Svid(chain: readonly Certificate[], bundles: X509BundleSource, now: Date = new Date()): VerifiedX509Svid {
  const leaf = chain[0];
  if (!leaf) svidError('empty certificate chain');
  if (chain.length > MAX_CHAIN) svidError(`chain longer than ${MAX_CHAIN}`);
  const spiffeId = leafSpiffeId(leaf);
  checkLeafShape(leaf);
  const bundle = bundles.get(spiffeId.trustDomain);
  if (!bundle) throw new WritError('ERR_BUNDLE_NOT_FOUND', `no bundle for trust domain "${spiffeId.trustDomain}"`);
  const roots = bundle.x509Authorities;
  const intermediates = chain.slice(1);
  const path: Certificate[] = [leaf];
  let current = leaf;
  for (let depth = 0; depth <= MAX_CHAIN; depth++) {
    checkValidity(current, now);
    // A presented certificate that is itself an authority of the bundle ends the path.
    if (depth > 0 && roots.some((r) => r.der.equals(current.der))) return { spiffeId, chain: path };
    const root = roots.find((r) => isSignedBy(current, r));
    if (root) {
      checkValidity(root, now);
      // As Go's crypto/x509 and OpenSSL do: a root's pathLenConstraint binds the CAs below it too.
      checkPathLen(root, path);
      path.push(root);
      return { spiffeId, chain: path };
    }
    const next = intermediates.find((c) => !path.includes(c) && isSignedBy(current, c));
    if (!next)
      throw new WritError(
        'ERR_X509_CHAIN_INVALID',
        `X.509-SVID rejected: no path from ${spiffeId.uri} to an authority of trust domain "${spiffeId.trustDomain}"`,
      );
    if (next.basicConstraints?.ca !== true) svidError('an intermediate certificate is not a CA (basicConstraints cA=false)');
    if (!hasBit(next, KU.keyCertSign)) svidError('an intermediate certificate lacks keyUsage keyCertSign');
    checkPathLen(next, path);
    path.push(next);
    current = next;
  }
  return svidError('chain too long');
}

/** RFC 5280 4.2.1.9: `ca`'s pathLenConstraint counts the CA certificates between it and the leaf (`path` holds the leaf and those). */
function checkPathLen(ca: Certificate, path: readonly Certificate[]): void {
  const pathLen = ca.basicConstraints?.pathLen;
  if (pathLen !== undefined && path.length - 1 > pathLen)
    svidError(`path length constraint exceeded (a CA with pathLenConstraint ${pathLen} has ${path.length - 1} CA certificates below it)`);
}

function checkValidity(cert: Certificate, now: Date): void {
  const t = now.getTime();
  if (t < cert.notBefore.getTime())
    throw new WritError('ERR_X509_EXPIRED', `X.509-SVID rejected: a certificate is not valid before ${cert.notBefore.toISOString()}`);
  if (t > cert.notAfter.getTime()) throw new WritError('ERR_X509_EXPIRED', `X.509-SVID rejected: a certificate expired at ${cert.notAfter.toISOString()}`);
}

/** The SPIFFE ID of a leaf: exactly one URI SAN, a SPIFFE ID with a non-root path. */
export function leafSpiffeId(leaf: Certificate): SpiffeId {
  if (leaf.uris.length === 0) svidError('leaf has no URI SAN');
  if (leaf.uris.length > 1) svidError(`leaf has ${leaf.uris.length} URI SANs; exactly one is allowed`);
  let id: SpiffeId;
  try {
    id = parseSpiffeId(leaf.uris[0]!);
  } catch (err) {
    return svidError(`leaf URI SAN is not a SPIFFE ID (${(err as Error).message})`);
  }
  if (id.path === '') svidError('leaf SPIFFE ID must have a path (it names a workload, not a trust domain)');
  return id;
}

function checkLeafShape(leaf: Certificate): void {
  if (leaf.basicConstraints?.ca === true) svidError('leaf has basicConstraints cA=true');
  if (!leaf.keyUsage) svidError('leaf has no keyUsage extension');
  if (!leaf.keyUsage.critical) svidError('leaf keyUsage extension is not critical');
  if (!hasBit(leaf, KU.digitalSignature)) svidError('leaf keyUsage lacks digitalSignature');
  if (hasBit(leaf, KU.keyCertSign)) svidError('leaf keyUsage has keyCertSign');
  if (hasBit(leaf, KU.cRLSign)) svidError('leaf keyUsage has cRLSign');
}

// ---------------------------------------------------------------- building

export type KeyType = 'ec-p256' | 'ec-p384' | 'rsa-2048';
export const KEY_TYPES: readonly KeyType[] = ['ec-p256', 'ec-p384', 'rsa-2048'];

/** A private key with what is needed to sign certificates and JWTs with it. */
export interface Signer {
  readonly key: KeyObject;
  readonly keyType: KeyType;
}

export function keyTypeOf(key: KeyObject): KeyType {
  const d = key.asymmetricKeyDetails;
  if (key.asymmetricKeyType === 'ec' && d?.namedCurve === 'prime256v1') return 'ec-p256';
  if (key.asymmetricKeyType === 'ec' && d?.namedCurve === 'secp384r1') return 'ec-p384';
  if (key.asymmetricKeyType === 'rsa' && (d?.modulusLength ?? 0) >= 2048) return 'rsa-2048';
  throw new WritError(
    'ERR_KEY_INVALID',
    `unsupported key (${key.asymmetricKeyType} ${d?.namedCurve ?? d?.modulusLength ?? ''}); use EC P-256, EC P-384 or RSA >= 2048`,
  );
}

const SIG_ALG: Record<KeyType, { oid: string; digest: string; params: boolean }> = {
  'ec-p256': { oid: OID.ecdsaSha256, digest: 'sha256', params: false },
  'ec-p384': { oid: OID.ecdsaSha384, digest: 'sha384', params: false },
  'rsa-2048': { oid: OID.rsaSha256, digest: 'sha256', params: true },
};

function algorithmIdentifier(kt: KeyType): Buffer {
  const a = SIG_ALG[kt];
  return a.params ? der.seq(der.oid(a.oid), der.nullValue()) : der.seq(der.oid(a.oid));
}

/** A Name of (attribute OID, value) pairs, one RDN each. */
export function buildName(attrs: ReadonlyArray<readonly [string, string]>): Buffer {
  return der.seq(...attrs.map(([o, v]) => der.set(der.seq(der.oid(o), der.utf8(v)))));
}

export function keyUsageBits(...bits: number[]): Buffer {
  let v = 0;
  for (const b of bits) v |= 0x8000 >> b;
  let bytes = Buffer.from([v >> 8, v & 0xff]);
  if (bytes[1] === 0) bytes = bytes.subarray(0, 1);
  const last = bytes[bytes.length - 1]!;
  let unused = 0;
  while (unused < 7 && (last & (1 << unused)) === 0) unused++;
  return der.bitString(bytes, unused);
}

export function extension(id: string, critical: boolean, value: Buffer): Buffer {
  return critical ? der.seq(der.oid(id), der.bool(true), der.octets(value)) : der.seq(der.oid(id), der.octets(value));
}

/** Key identifier per RFC 5280 4.2.1.2 method 1: SHA-1 of the subjectPublicKey bits. */
export function keyIdentifier(spki: Buffer): Buffer {
  const parts = der.children(der.parseDer(spki));
  return createHash('sha1')
    .update(der.expectTag(parts[1], der.TAG.BIT_STRING, 'subjectPublicKey').value.subarray(1))
    .digest();
}

export interface CertificateTemplate {
  readonly subject: Buffer;
  readonly spki: Buffer;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly ca: boolean;
  /** URI SANs (SPIFFE IDs) and DNS SANs. */
  readonly uris: readonly string[];
  readonly dnsNames?: readonly string[];
  readonly ipAddresses?: readonly Buffer[];
  readonly pathLen?: number;
  /** Replaces the standard extensions entirely (tests build non-conforming certificates with it). */
  readonly extensions?: readonly Buffer[];
}

/** The issuer: its certificate (undefined for a self-signed root) and its key. */
export interface Issuer {
  readonly cert: Certificate | undefined;
  readonly signer: Signer;
}

/** Builds and signs a certificate from a template. Synchronous: it is on the issuance hot path. */
export function issueCertificate(tpl: CertificateTemplate, issuer: Issuer, serial?: Buffer): Certificate {
  const ski = keyIdentifier(tpl.spki);
  const exts: Buffer[] = [];
  exts.push(extension(OID.basicConstraints, true, tpl.ca ? der.seq(der.bool(true), ...(tpl.pathLen === undefined ? [] : [der.uint(tpl.pathLen)])) : der.seq()));
  exts.push(
    extension(
      OID.keyUsage,
      true,
      tpl.ca ? keyUsageBits(KU.digitalSignature, KU.keyCertSign, KU.cRLSign) : keyUsageBits(KU.digitalSignature, KU.keyEncipherment, KU.keyAgreement),
    ),
  );
  if (!tpl.ca) exts.push(extension(OID.extKeyUsage, false, der.seq(der.oid(OID.serverAuth), der.oid(OID.clientAuth))));
  const names = [
    ...tpl.uris.map((u) => der.tlv(0x86, Buffer.from(u, 'latin1'))),
    ...(tpl.dnsNames ?? []).map((d) => der.tlv(0x82, Buffer.from(d, 'latin1'))),
    ...(tpl.ipAddresses ?? []).map((ip) => der.tlv(0x87, ip)),
  ];
  if (names.length > 0) exts.push(extension(OID.subjectAltName, false, der.seq(...names)));
  exts.push(extension(OID.subjectKeyIdentifier, false, der.octets(ski)));
  const aki = issuer.cert?.subjectKeyId ?? (issuer.cert ? keyIdentifier(issuer.cert.spki) : ski);
  exts.push(extension(OID.authorityKeyIdentifier, false, der.seq(der.tlv(0x80, aki))));

  const extensions = tpl.extensions ?? exts;
  const serialBytes = serial ?? randomSerial();
  const alg = algorithmIdentifier(issuer.signer.keyType);
  const tbs = der.seq(
    der.ctx(0, true, der.uint(2)),
    der.uint(serialBytes),
    alg,
    issuer.cert ? issuer.cert.subject : tpl.subject,
    der.seq(der.time(tpl.notBefore), der.time(tpl.notAfter)),
    tpl.subject,
    tpl.spki,
    der.ctx(3, true, der.seq(...extensions)),
  );
  const sig = cryptoSign(SIG_ALG[issuer.signer.keyType].digest, tbs, issuer.signer.key);
  return parseCertificate(der.seq(tbs, alg, der.bitString(sig)));
}

function randomSerial(): Buffer {
  const b = randomBytes(16);
  b[0] = b[0]! & 0x7f; // positive, 128 bits of entropy minus one
  if (b[0] === 0) b[0] = 1;
  return b;
}

// ---------------------------------------------------------------- CSRs

export const MAX_CSR_BYTES = 16 * 1024;

/** Parses a PKCS#10 request (PEM or DER), checks its self-signature, and returns its public key (SPKI DER). */
export function parseCsr(input: string | Buffer): { spki: Buffer } {
  let buf: Buffer;
  if (typeof input === 'string') {
    if (input.length > MAX_CSR_BYTES * 2) throw new WritError('ERR_CSR_INVALID', `CSR larger than ${MAX_CSR_BYTES} bytes`);
    const blocks = fromPem(input, 'CERTIFICATE REQUEST', 1);
    if (blocks.length === 1) buf = blocks[0]!;
    else if (/^[A-Za-z0-9+/=_-]+$/.test(input.trim())) buf = Buffer.from(input.trim(), 'base64');
    else throw new WritError('ERR_CSR_INVALID', 'CSR must be PEM ("CERTIFICATE REQUEST") or base64 DER');
  } else buf = input;
  if (buf.length > MAX_CSR_BYTES) throw new WritError('ERR_CSR_INVALID', `CSR larger than ${MAX_CSR_BYTES} bytes`);
  try {
    const top = der.children(der.expectTag(der.parseDer(buf), der.TAG.SEQUENCE, 'CertificationRequest'));
    const info = der.expectTag(top[0], der.TAG.SEQUENCE, 'CertificationRequestInfo');
    const algo = der.decodeOid(der.expectTag(der.children(der.expectTag(top[1], der.TAG.SEQUENCE, 'signatureAlgorithm'))[0], der.TAG.OID, 'algorithm'));
    const sig = der.expectTag(top[2], der.TAG.BIT_STRING, 'signature').value.subarray(1);
    const parts = der.children(info);
    const spki = der.expectTag(parts[2], der.TAG.SEQUENCE, 'subjectPKInfo').raw;
    const key = createPublicKey({ key: spki, format: 'der', type: 'spki' });
    keyTypeOf(key);
    const digest = DIGEST_OF[algo];
    if (!digest) throw new WritError('ERR_CSR_INVALID', `unsupported CSR signature algorithm ${algo}`);
    if (!cryptoVerify(digest, info.raw, key, sig)) throw new WritError('ERR_CSR_INVALID', 'CSR signature does not verify (proof of possession failed)');
    return { spki };
  } catch (err) {
    if (err instanceof WritError && err.code === 'ERR_CSR_INVALID') throw err;
    throw new WritError('ERR_CSR_INVALID', `CSR is malformed: ${err instanceof Error ? err.message : String(err)}`);
  }
}

/** Builds a PKCS#10 request for `signer`'s key (used by the CLI and tests; the server ignores the subject). */
export function createCsr(signer: Signer, publicKey: KeyObject): Buffer {
  const spki = publicKey.export({ format: 'der', type: 'spki' });
  const info = der.seq(der.uint(0), buildName([]), spki, der.ctx(0, true));
  const sig = cryptoSign(SIG_ALG[signer.keyType].digest, info, signer.key);
  return der.seq(info, algorithmIdentifier(signer.keyType), der.bitString(sig));
}

/**
 * The URI SANs of a peer certificate as Node's TLS layer describes it
 * (`subjectaltname: "DNS:localhost, URI:spiffe://td/writ/server"`), for `checkServerIdentity`.
 */
export function uriSansOf(cert: { readonly subjectaltname?: string | undefined }): string[] {
  return (cert.subjectaltname ?? '')
    .split(', ')
    .filter((n) => n.startsWith('URI:'))
    .map((n) => n.slice(4));
}
