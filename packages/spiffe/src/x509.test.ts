import assert from 'node:assert/strict';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import * as der from './der.ts';
import { isWritError, type ErrorCode } from './errors.ts';
import {
  KU,
  OID,
  buildName,
  createCsr,
  extension,
  issueCertificate,
  keyUsageBits,
  parseCertificate,
  parseCsr,
  verifyX509Svid,
  type Certificate,
  type Signer,
} from './x509.ts';

const NOW = new Date('2026-06-01T00:00:00Z');
const H = 3_600_000;

function keyPair(): { signer: Signer; spki: Buffer; pub: KeyObject } {
  const k = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return { signer: { key: k.privateKey, keyType: 'ec-p256' }, spki: k.publicKey.export({ format: 'der', type: 'spki' }), pub: k.publicKey };
}
function makeCa(
  td: string,
  parent?: { cert: Certificate; signer: Signer },
  opts: { ca?: boolean; keyCertSign?: boolean; pathLen?: number } = {},
): { cert: Certificate; signer: Signer } {
  const k = keyPair();
  const exts =
    opts.ca === false || opts.keyCertSign === false
      ? [
          extension(OID.basicConstraints, true, der.seq(...(opts.ca === false ? [] : [der.bool(true)]))),
          extension(OID.keyUsage, true, keyUsageBits(KU.digitalSignature, ...(opts.keyCertSign === false ? [] : [KU.keyCertSign]))),
        ]
      : undefined;
  const cert = issueCertificate(
    {
      subject: buildName([[OID.commonName, `${td} CA ${Math.random()}`]]),
      spki: k.spki,
      notBefore: new Date(NOW.getTime() - H),
      notAfter: new Date(NOW.getTime() + 24 * H),
      ca: true,
      uris: [`spiffe://${td}`],
      ...(exts ? { extensions: exts } : {}),
      ...(opts.pathLen === undefined ? {} : { pathLen: opts.pathLen }),
    },
    parent ?? { cert: undefined, signer: k.signer },
  );
  return { cert, signer: k.signer };
}

const rootA = makeCa('example.org');
const rootB = makeCa('other.org');

const san = (...names: Buffer[]): Buffer => extension(OID.subjectAltName, false, der.seq(...names));
const uri = (u: string): Buffer => der.tlv(0x86, Buffer.from(u));
const dns = (d: string): Buffer => der.tlv(0x82, Buffer.from(d));
const BC_LEAF = extension(OID.basicConstraints, true, der.seq());
const KU_LEAF = extension(OID.keyUsage, true, keyUsageBits(KU.digitalSignature, KU.keyEncipherment, KU.keyAgreement));

interface LeafOpts {
  id?: string;
  extensions?: Buffer[];
  issuer?: { cert: Certificate; signer: Signer };
  notBefore?: number;
  notAfter?: number;
}
function leaf(o: LeafOpts = {}): Certificate {
  const k = keyPair();
  return issueCertificate(
    {
      subject: buildName([[OID.organization, 'Writ']]),
      spki: k.spki,
      notBefore: new Date(o.notBefore ?? NOW.getTime() - 10_000),
      notAfter: new Date(o.notAfter ?? NOW.getTime() + H),
      ca: false,
      uris: [o.id ?? 'spiffe://example.org/web'],
      ...(o.extensions ? { extensions: o.extensions } : {}),
    },
    o.issuer ?? rootA,
  );
}

const bundles = new Map([
  ['example.org', { x509Authorities: [rootA.cert] }],
  ['other.org', { x509Authorities: [rootB.cert] }],
]);
const verify = (chain: Certificate[]) => verifyX509Svid(chain, bundles, NOW);

const CASES: ReadonlyArray<readonly [string, () => Certificate[], ErrorCode, () => Certificate[]]> = [
  [
    'leaf must not be a CA',
    () => [leaf({ extensions: [extension(OID.basicConstraints, true, der.seq(der.bool(true))), KU_LEAF, san(uri('spiffe://example.org/web'))] })],
    'ERR_X509_SVID_INVALID',
    () => [leaf({ extensions: [BC_LEAF, KU_LEAF, san(uri('spiffe://example.org/web'))] })],
  ],
  [
    'keyUsage must be present',
    () => [leaf({ extensions: [BC_LEAF, san(uri('spiffe://example.org/web'))] })],
    'ERR_X509_SVID_INVALID',
    () => [leaf({ extensions: [BC_LEAF, KU_LEAF, san(uri('spiffe://example.org/web'))] })],
  ],
  [
    'keyUsage must be critical',
    () => [leaf({ extensions: [BC_LEAF, extension(OID.keyUsage, false, keyUsageBits(KU.digitalSignature)), san(uri('spiffe://example.org/web'))] })],
    'ERR_X509_SVID_INVALID',
    () => [leaf({ extensions: [BC_LEAF, extension(OID.keyUsage, true, keyUsageBits(KU.digitalSignature)), san(uri('spiffe://example.org/web'))] })],
  ],
  [
    'keyUsage needs digitalSignature',
    () => [leaf({ extensions: [BC_LEAF, extension(OID.keyUsage, true, keyUsageBits(KU.keyEncipherment)), san(uri('spiffe://example.org/web'))] })],
    'ERR_X509_SVID_INVALID',
    () => [
      leaf({
        extensions: [BC_LEAF, extension(OID.keyUsage, true, keyUsageBits(KU.digitalSignature, KU.keyEncipherment)), san(uri('spiffe://example.org/web'))],
      }),
    ],
  ],
  [
    'keyUsage must not have keyCertSign',
    () => [
      leaf({ extensions: [BC_LEAF, extension(OID.keyUsage, true, keyUsageBits(KU.digitalSignature, KU.keyCertSign)), san(uri('spiffe://example.org/web'))] }),
    ],
    'ERR_X509_SVID_INVALID',
    () => [leaf()],
  ],
  [
    'keyUsage must not have cRLSign',
    () => [leaf({ extensions: [BC_LEAF, extension(OID.keyUsage, true, keyUsageBits(KU.digitalSignature, KU.cRLSign)), san(uri('spiffe://example.org/web'))] })],
    'ERR_X509_SVID_INVALID',
    () => [leaf()],
  ],
  [
    'a URI SAN is required',
    () => [leaf({ extensions: [BC_LEAF, KU_LEAF, san(dns('web.example.org'))] })],
    'ERR_X509_SVID_INVALID',
    () => [leaf({ extensions: [BC_LEAF, KU_LEAF, san(dns('web.example.org'), uri('spiffe://example.org/web'))] })],
  ],
  [
    'exactly one URI SAN',
    () => [leaf({ extensions: [BC_LEAF, KU_LEAF, san(uri('spiffe://example.org/web'), uri('spiffe://example.org/db'))] })],
    'ERR_X509_SVID_INVALID',
    () => [leaf({ extensions: [BC_LEAF, KU_LEAF, san(uri('spiffe://example.org/web'), der.tlv(0x87, Buffer.from([127, 0, 0, 1])))] })],
  ],
  ['the URI SAN is a SPIFFE ID', () => [leaf({ id: 'https://example.org/web' })], 'ERR_X509_SVID_INVALID', () => [leaf({ id: 'spiffe://example.org/web' })]],
  ['the SPIFFE ID has a path', () => [leaf({ id: 'spiffe://example.org' })], 'ERR_X509_SVID_INVALID', () => [leaf({ id: 'spiffe://example.org/x' })]],
  ['not expired', () => [leaf({ notAfter: NOW.getTime() - 1000 })], 'ERR_X509_EXPIRED', () => [leaf({ notAfter: NOW.getTime() + 1000 })]],
  ['not before its validity', () => [leaf({ notBefore: NOW.getTime() + 1000 })], 'ERR_X509_EXPIRED', () => [leaf({ notBefore: NOW.getTime() - 1000 })]],
  [
    "chains only to its own trust domain's bundle",
    () => [leaf({ id: 'spiffe://other.org/web', issuer: rootA })],
    'ERR_X509_CHAIN_INVALID',
    () => [leaf({ id: 'spiffe://other.org/web', issuer: rootB })],
  ],
  ['an unknown CA is refused', () => [leaf({ issuer: makeCa('example.org') })], 'ERR_X509_CHAIN_INVALID', () => [leaf({ issuer: rootA })]],
  ['a trust domain without a bundle', () => [leaf({ id: 'spiffe://third.org/web' })], 'ERR_BUNDLE_NOT_FOUND', () => [leaf()]],
  [
    'intermediates must be CAs',
    () => {
      const i = makeCa('example.org', rootA, { ca: false });
      return [leaf({ issuer: i }), i.cert];
    },
    'ERR_X509_SVID_INVALID',
    () => {
      const i = makeCa('example.org', rootA);
      return [leaf({ issuer: i }), i.cert];
    },
  ],
  [
    'intermediates need keyCertSign',
    () => {
      const i = makeCa('example.org', rootA, { keyCertSign: false });
      return [leaf({ issuer: i }), i.cert];
    },
    'ERR_X509_SVID_INVALID',
    () => {
      const i = makeCa('example.org', rootA);
      return [leaf({ issuer: i }), i.cert];
    },
  ],
];

describe('X.509-SVID validation', () => {
  for (const [rule, bad, code, good] of CASES) {
    it(rule, () => {
      assert.throws(
        () => verify(bad()),
        (e) => isWritError(e, code),
        `expected ${code}`,
      );
      assert.equal(
        verify(good()).spiffeId.trustDomain,
        good()[0]!
          .uris.find((u) => u.startsWith('spiffe://'))!
          .slice(9)
          .split('/')[0],
      );
    });
  }

  it('pathLenConstraint: an intermediate with 0 can have no CA below it, with 1 exactly one; a correct chain passes', () => {
    const exceeded = (chain: Certificate[]) =>
      assert.throws(
        () => verify(chain),
        (e) => isWritError(e, 'ERR_X509_SVID_INVALID') && /path length constraint/.test((e as Error).message),
      );
    const zero = makeCa('example.org', rootA, { pathLen: 0 });
    assert.equal(zero.cert.basicConstraints?.pathLen, 0);
    const belowZero = makeCa('example.org', zero);
    exceeded([leaf({ issuer: belowZero }), belowZero.cert, zero.cert]);
    assert.equal(verify([leaf({ issuer: zero }), zero.cert]).chain.length, 3, 'pathLen 0 still issues leaves');
    const one = makeCa('example.org', rootA, { pathLen: 1 });
    const belowOne = makeCa('example.org', one);
    const belowThat = makeCa('example.org', belowOne);
    assert.equal(verify([leaf({ issuer: belowOne }), belowOne.cert, one.cert]).chain.length, 4);
    exceeded([leaf({ issuer: belowThat }), belowThat.cert, belowOne.cert, one.cert]);
    const unbounded = makeCa('example.org', rootA);
    const mid = makeCa('example.org', unbounded);
    const deep = makeCa('example.org', mid);
    assert.equal(verify([leaf({ issuer: deep }), deep.cert, mid.cert, unbounded.cert]).chain.length, 5, 'no constraint, no limit');
  });

  it("pathLenConstraint of a bundle root binds the CAs below it, as Go's crypto/x509 and OpenSSL enforce it", () => {
    const root = makeCa('example.org', undefined, { pathLen: 0 });
    const inter = makeCa('example.org', root);
    const b = new Map([['example.org', { x509Authorities: [root.cert] }]]);
    assert.throws(
      () => verifyX509Svid([leaf({ issuer: inter }), inter.cert], b, NOW),
      (e) => isWritError(e, 'ERR_X509_SVID_INVALID') && /path length constraint/.test((e as Error).message),
    );
    assert.equal(verifyX509Svid([leaf({ issuer: root })], b, NOW).chain.length, 2);
  });

  it('the standard template reads back with the documented extensions', () => {
    const c = leaf();
    assert.equal(c.basicConstraints?.ca, false);
    assert.equal(c.keyUsage?.critical, true);
    assert.equal(c.keyUsage!.bits, (1 << KU.digitalSignature) | (1 << KU.keyEncipherment) | (1 << KU.keyAgreement));
    assert.ok(c.extensions.has(OID.extKeyUsage) && c.extensions.has(OID.subjectKeyIdentifier) && c.extensions.has(OID.authorityKeyIdentifier));
    assert.equal(verify([c]).chain.length, 2);
  });

  it('CSRs: proof of possession is checked', () => {
    const k = keyPair();
    const csr = createCsr(k.signer, k.pub);
    assert.ok(parseCsr(csr).spki.equals(k.spki));
    const forged = Buffer.from(csr);
    forged[forged.length - 5] = forged[forged.length - 5]! ^ 0xff;
    assert.throws(
      () => parseCsr(forged),
      (e) => isWritError(e, 'ERR_CSR_INVALID'),
    );
    assert.throws(
      () => parseCsr('not a csr'),
      (e) => isWritError(e, 'ERR_CSR_INVALID'),
    );
  });

  it('property: random and truncated DER never crashes the parser', () => {
    const good = leaf().der;
    fc.assert(
      fc.property(
        fc.oneof(
          fc.uint8Array({ maxLength: 600 }),
          fc.nat(good.length).map((n) => good.subarray(0, n)),
          fc.tuple(fc.nat(good.length - 1), fc.integer({ min: 0, max: 255 })).map(([i, b]) => {
            const c = Buffer.from(good);
            c[i] = b;
            return c;
          }),
        ),
        (bytes) => {
          try {
            parseCertificate(Buffer.from(bytes));
          } catch (err) {
            assert.ok(isWritError(err, 'ERR_X509_MALFORMED'), String(err));
          }
        },
      ),
      { numRuns: 3000 },
    );
  });
});
