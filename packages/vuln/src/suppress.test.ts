import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import type { VulnException } from './exceptions.ts';
import { parseReport } from './parse.ts';
import { type FindingContext, type VexInput, purlCovers, suppressionSet } from './suppress.ts';
import type { VexProduct } from './types.ts';

const D1 = `sha256:${'1'.repeat(64)}`;
const D2 = `sha256:${'2'.repeat(64)}`;
const T0 = Date.parse('2026-12-02T00:00:00Z');
const EXPIRES = Date.parse('2027-01-01T00:00:00Z');

const finding = (over: Partial<FindingContext> = {}): FindingContext => ({
  vulnId: 'CVE-2024-0001',
  aliases: ['GHSA-jfh8-c2jp-5v3q'],
  imageDigest: D1,
  repositories: ['registry.example.com/shop/web'],
  packageName: 'openssl',
  purl: 'pkg:apk/alpine/openssl@3.1.4-r0?arch=x86_64&distro=3.20.3',
  ...over,
});

const exception = (scope: VulnException['scope'], over: Partial<VulnException> = {}): VulnException => ({
  name: 'accepted',
  vulnerability: 'CVE-2024-0001',
  scope,
  reason: 'TICKET-1: not reachable',
  owner: 'team-web',
  expires: EXPIRES,
  line: 1,
  source: '',
  ...over,
});

const product = (id: string, over: Partial<VexProduct> = {}): VexProduct => ({
  id,
  ...(id.startsWith('pkg:') ? { purl: id } : {}),
  ...(id.startsWith('sha256:') ? { digest: id } : {}),
  subcomponents: [],
  ...over,
});

const statement = (products: VexProduct[], over: Partial<VexInput> = {}): VexInput => ({
  vulnerability: 'CVE-2024-0001',
  aliases: [],
  products,
  status: 'not_affected',
  justification: 'vulnerable_code_not_in_execute_path',
  timestamp: '2026-11-01T00:00:00.000Z',
  document: { id: 'https://example.com/vex/1', author: 'security@example.com', version: 1 },
  ...over,
});

const by = (ex: VulnException[], vex: VexInput[], f: FindingContext, now = T0) => suppressionSet(ex, vex).match(f, now)?.by;

describe('purlCovers (OpenVEX purl matching)', () => {
  it('no version matches any version; a version only itself; given qualifiers must be present, others may be', () => {
    const pkg = 'pkg:apk/alpine/openssl@3.1.4-r0?arch=x86_64&distro=3.20.3';
    assert.equal(purlCovers('pkg:apk/alpine/openssl', pkg), true);
    assert.equal(purlCovers('pkg:apk/alpine/openssl@3.1.4-r0', pkg), true);
    assert.equal(purlCovers('pkg:apk/alpine/openssl@3.1.5-r0', pkg), false);
    assert.equal(purlCovers('pkg:apk/alpine/openssl?arch=x86_64', pkg), true);
    assert.equal(purlCovers('pkg:apk/alpine/openssl?arch=aarch64', pkg), false);
    assert.equal(purlCovers('pkg:apk/alpine/openssl?os=linux', pkg), false);
    // The more specific purl never covers the general one.
    assert.equal(purlCovers(pkg, 'pkg:apk/alpine/openssl'), false);
    assert.equal(purlCovers('pkg:apk/wolfi/openssl', pkg), false);
    assert.equal(purlCovers('pkg:deb/alpine/openssl', pkg), false);
    // Spelled differently, the same package (the spec's normalisation).
    assert.equal(purlCovers('PKG:APK/Alpine/OpenSSL', pkg), true);
    assert.equal(purlCovers('not a purl', pkg), false);
  });
});

describe('suppressionSet: exceptions', () => {
  it('matches by digest, repository (any spelling, prefixes), package name or purl; by ID or alias', () => {
    assert.equal(by([exception({ kind: 'digest', values: [D1] })], [], finding()), 'exception');
    assert.equal(by([exception({ kind: 'digest', values: [D2] })], [], finding()), undefined);
    assert.equal(by([exception({ kind: 'repository', values: ['registry.example.com/shop/web'] })], [], finding()), 'exception');
    assert.equal(by([exception({ kind: 'repository', values: ['docker.io/library/alpine'] })], [], finding({ repositories: ['alpine:3.20'] })), 'exception');
    assert.equal(by([exception({ kind: 'repository', values: ['registry.example.com/shop/*'] })], [], finding()), 'exception');
    assert.equal(by([exception({ kind: 'repository', values: ['registry.example.com/other/*'] })], [], finding()), undefined);
    assert.equal(by([exception({ kind: 'package', values: ['openssl'] })], [], finding()), 'exception');
    assert.equal(by([exception({ kind: 'package', values: ['libssl3'] })], [], finding()), undefined);
    assert.equal(by([exception({ kind: 'package', values: ['pkg:apk/alpine/openssl'] })], [], finding()), 'exception');
    assert.equal(by([exception({ kind: 'package', values: ['pkg:apk/alpine/openssl@3.0.0-r0'] })], [], finding()), undefined);
    // The finding names the vulnerability by its GHSA alias: an exception for the CVE still applies, and the other way round.
    assert.equal(by([exception({ kind: 'digest', values: [D1] })], [], finding({ vulnId: 'GHSA-jfh8-c2jp-5v3q', aliases: ['CVE-2024-0001'] })), 'exception');
    assert.equal(by([exception({ kind: 'digest', values: [D1] }, { vulnerability: 'GHSA-jfh8-c2jp-5v3q' })], [], finding()), 'exception');
    assert.equal(by([exception({ kind: 'digest', values: [D1] }, { vulnerability: 'CVE-2024-9999' })], [], finding()), undefined);
  });

  it('suppresses until expires and not from that instant on: the finding is active again', () => {
    const set = suppressionSet([exception({ kind: 'digest', values: [D1] })], []);
    assert.deepEqual(set.match(finding(), EXPIRES - 1), {
      by: 'exception',
      name: 'accepted',
      reason: 'TICKET-1: not reachable',
      owner: 'team-web',
      expires: '2027-01-01T00:00:00.000Z',
    });
    assert.equal(set.match(finding(), EXPIRES), undefined);
    assert.equal(set.match(finding(), EXPIRES + 86_400_000), undefined);
  });

  it('of two that apply, names the one that expires last', () => {
    const set = suppressionSet(
      [
        exception({ kind: 'digest', values: [D1] }, { name: 'short', expires: T0 + 1000 }),
        exception({ kind: 'package', values: ['openssl'] }, { name: 'long' }),
      ],
      [],
    );
    assert.equal(set.match(finding(), T0)?.name, 'long');
    assert.equal(
      suppressionSet([exception({ kind: 'digest', values: [D1] }, { name: 'short', expires: T0 + 1000 })], []).match(finding(), T0 + 1000),
      undefined,
    );
  });

  it('tells when the next exception ends (what a watcher must evaluate again at): the earliest after now, none once all ended', () => {
    const set = suppressionSet(
      [
        exception({ kind: 'digest', values: [D1] }, { name: 'short', expires: T0 + 1000 }),
        exception({ kind: 'package', values: ['openssl'] }, { name: 'long' }),
      ],
      [statement([product(D1)])],
    );
    assert.equal(set.nextExpiry(T0), T0 + 1000);
    assert.equal(set.nextExpiry(T0 + 1000), EXPIRES);
    assert.equal(set.nextExpiry(EXPIRES), undefined);
    assert.equal(suppressionSet([], [statement([product(D1)])]).nextExpiry(T0), undefined, 'VEX statements do not expire');
  });
});

describe('suppressionSet: OpenVEX statements', () => {
  it('not_affected and fixed suppress, affected and under_investigation do not', () => {
    for (const [status, want] of [
      ['not_affected', 'vex'],
      ['fixed', 'vex'],
      ['affected', undefined],
      ['under_investigation', undefined],
    ] as const)
      assert.equal(by([], [statement([product(D1)], { status })], finding()), want, status);
  });

  it('the product is the image: by digest, by pkg:oci with the digest, by pkg:oci without a version (every image of the repository)', () => {
    assert.equal(by([], [statement([product(D1)])], finding()), 'vex');
    assert.equal(by([], [statement([product(D2)])], finding()), undefined);
    assert.equal(by([], [statement([product('pkg:oci/web', { digest: D1 })])], finding()), 'vex');
    assert.equal(by([], [statement([product('pkg:oci/web?repository_url=registry.example.com/shop')])], finding({ imageDigest: D2 })), 'vex');
    assert.equal(by([], [statement([product('pkg:oci/web?repository_url=registry.example.com/other')])], finding({ imageDigest: D2 })), undefined);
    assert.equal(by([], [statement([product('pkg:oci/web')])], finding({ imageDigest: D2 })), 'vex');
    assert.equal(by([], [statement([product('pkg:oci/api')])], finding({ imageDigest: D2 })), undefined);
  });

  it('subcomponents narrow the statement to the package they name', () => {
    const img = (subs: string[]) => product(D1, { subcomponents: subs.map((s) => ({ id: s, ...(s.startsWith('pkg:') ? { purl: s } : {}) })) });
    assert.equal(by([], [statement([img(['pkg:apk/alpine/openssl'])])], finding()), 'vex');
    assert.equal(by([], [statement([img(['pkg:apk/alpine/openssl@3.1.4-r0?arch=x86_64'])])], finding()), 'vex');
    assert.equal(by([], [statement([img(['pkg:apk/alpine/openssl@3.1.3-r0'])])], finding()), undefined);
    assert.equal(by([], [statement([img(['pkg:apk/alpine/musl'])])], finding()), undefined);
    // A subcomponent without a purl names the package by name.
    assert.equal(by([], [statement([img(['openssl'])])], finding()), 'vex');
  });

  it('a product that is a package (not an image) matches that package in any image', () => {
    assert.equal(by([], [statement([product('pkg:apk/alpine/openssl@3.1.4-r0')])], finding({ imageDigest: D2 })), 'vex');
    assert.equal(by([], [statement([product('pkg:apk/alpine/openssl@3.2.0-r0')])], finding()), undefined);
    assert.equal(by([], [statement([product('pkg:apk/alpine/openssl')])], finding({ purl: undefined } as unknown as FindingContext)), undefined);
  });

  it('matches the statement by alias too', () => {
    assert.equal(by([], [statement([product(D1)], { vulnerability: 'CVE-2024-7777', aliases: ['GHSA-jfh8-c2jp-5v3q'] })], finding()), 'vex');
    assert.equal(by([], [statement([product(D1)], { vulnerability: 'GHSA-jfh8-c2jp-5v3q' })], finding({ vulnId: 'CVE-2024-0001', aliases: [] })), undefined);
  });

  it('the latest statement about the product speaks: affected after not_affected is active, fixed after affected suppressed', () => {
    const early = statement([product(D1)], { status: 'not_affected', timestamp: '2026-11-01T00:00:00.000Z' });
    const late = statement([product(D1)], { status: 'affected', timestamp: '2026-11-20T00:00:00.000Z', justification: undefined } as unknown as VexInput);
    assert.equal(by([], [early, late], finding()), undefined);
    assert.equal(by([], [late, early], finding()), undefined);
    const fixed = statement([product(D1)], { status: 'fixed', timestamp: '2026-11-25T00:00:00.000Z' });
    assert.equal(by([], [early, late, fixed], finding()), 'vex');
  });

  it('says why: the status, justification, statements and author; named by the document', () => {
    const m = suppressionSet([], [statement([product(D1)], { impactStatement: 'the function is never called' })]).match(finding(), T0);
    assert.deepEqual(m, {
      by: 'vex',
      name: 'https://example.com/vex/1',
      reason: 'not_affected (vulnerable_code_not_in_execute_path): the function is never called — VEX by security@example.com',
      status: 'not_affected',
    });
  });

  it('reads the statements parseReport makes of an OpenVEX document', () => {
    const r = parseReport(readFileSync(new URL('./testdata/openvex-0.2.0.json', import.meta.url)));
    const web = `sha256:${'9e'.repeat(32)}`;
    const set = suppressionSet([], r.vex);
    const musl = (version: string) =>
      finding({
        vulnId: 'CVE-2025-26519',
        aliases: [],
        imageDigest: web,
        packageName: 'musl',
        purl: `pkg:apk/alpine/musl@${version}?arch=x86_64&distro=3.20.3`,
      });
    assert.equal(set.match(musl('1.2.5-r0'), T0)?.status, 'not_affected');
    assert.equal(set.match(musl('1.2.5-r1'), T0), undefined);
  });
});

describe('suppressionSet: precedence', () => {
  const ex = exception({ kind: 'digest', values: [D1] });
  it('a suppressing VEX statement is named before an exception (it does not expire)', () => {
    const set = suppressionSet([ex], [statement([product(D1)])]);
    assert.equal(set.match(finding(), T0)?.by, 'vex');
    assert.equal(set.match(finding(), EXPIRES + 1)?.by, 'vex');
  });
  it('an exception suppresses even where the latest VEX statement says affected, until it expires', () => {
    const set = suppressionSet([ex], [statement([product(D1)], { status: 'affected' })]);
    assert.equal(set.match(finding(), T0)?.by, 'exception');
    assert.equal(set.match(finding(), EXPIRES), undefined);
  });
});
