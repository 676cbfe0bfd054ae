/** An exported exception says what the exception did: the same findings suppressed by the statement Writ writes for it. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { type FindingContext, type VulnException, openVexDocument, parseReport, suppressionSet } from '@writ/vuln';
import { exceptionStatement } from './vex-routes.ts';

const D1 = `sha256:${'1'.repeat(64)}`;
const D2 = `sha256:${'2'.repeat(64)}`;
const NOW = Date.parse('2026-12-02T00:00:00Z');

const ex = (scope: VulnException['scope']): VulnException => ({
  name: 'e',
  vulnerability: 'CVE-2024-0001',
  scope,
  reason: 'r',
  owner: 'o',
  expires: NOW + 86_400_000,
  line: 1,
  source: '',
});

const findings: FindingContext[] = [
  {
    vulnId: 'CVE-2024-0001',
    aliases: [],
    imageDigest: D1,
    repositories: ['registry.example.com/shop/web'],
    packageName: 'openssl',
    purl: 'pkg:apk/alpine/openssl@3.1.4-r0?arch=x86_64',
  },
  {
    vulnId: 'CVE-2024-0001',
    aliases: [],
    imageDigest: D2,
    repositories: ['registry.example.com/shop/api'],
    packageName: 'openssl',
    purl: 'pkg:apk/alpine/openssl@3.0.0-r0',
  },
  {
    vulnId: 'CVE-2024-0001',
    aliases: [],
    imageDigest: D2,
    repositories: ['registry.example.com/shop/api'],
    packageName: 'musl',
    purl: 'pkg:apk/alpine/musl@1.2.5-r0',
  },
  {
    vulnId: 'CVE-2024-0002',
    aliases: [],
    imageDigest: D1,
    repositories: ['registry.example.com/shop/web'],
    packageName: 'openssl',
    purl: 'pkg:apk/alpine/openssl@3.1.4-r0',
  },
];

describe('exceptions as OpenVEX statements', () => {
  for (const [what, scope, repos] of [
    ['a digest known under a repository', { kind: 'digest', values: [D1] }, ['registry.example.com/shop/web']],
    ['a digest the inventory does not know', { kind: 'digest', values: [D2] }, []],
    ['a repository', { kind: 'repository', values: ['registry.example.com/shop/api'] }, []],
    ['a package purl without a version', { kind: 'package', values: ['pkg:apk/alpine/openssl'] }, []],
    ['a package purl with a version', { kind: 'package', values: ['pkg:apk/alpine/openssl@3.0.0-r0'] }, []],
  ] as const)
    it(`${what}: the exported statement, read back, suppresses exactly what the exception did`, () => {
      const e = ex(scope);
      const doc = openVexDocument({
        id: 'urn:x',
        author: 'a',
        version: 1,
        timestamp: new Date(NOW).toISOString(),
        statements: [exceptionStatement(e, NOW, () => repos)],
      });
      const back = parseReport(JSON.stringify(doc)).vex;
      const byException = suppressionSet([e], []);
      const byVex = suppressionSet([], back);
      assert.deepEqual(
        findings.map((f) => byVex.match(f, NOW)?.by === 'vex'),
        findings.map((f) => byException.match(f, NOW)?.by === 'exception'),
      );
      assert.ok(
        findings.some((f) => byException.match(f, NOW) !== undefined),
        'the case covers something',
      );
    });

  it('a package name or a repository prefix is written as a urn:writ: IRI that matches nothing', () => {
    for (const scope of [
      { kind: 'package', values: ['openssl'] },
      { kind: 'repository', values: ['registry.example.com/shop/*'] },
    ] as const) {
      const s = exceptionStatement(ex(scope), NOW);
      assert.match(s.products[0]!.id, /^urn:writ:(package-name|repository-prefix):/);
      assert.equal(
        findings.some((f) => suppressionSet([], [s]).match(f, NOW) !== undefined),
        false,
      );
    }
  });

  it('is not_affected with the reason, owner and expiry as its impact statement, and no justification', () => {
    const s = exceptionStatement(ex({ kind: 'digest', values: [D1] }), NOW);
    assert.equal(s.status, 'not_affected');
    assert.equal(s.justification, undefined);
    assert.equal(s.impactStatement, 'Accepted risk (Writ VulnException e, owner o, until 2026-12-03T00:00:00.000Z): r');
  });
});
