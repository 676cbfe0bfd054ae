import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { parsePolicies } from '@writ/policy';
import { DEFAULT_MAX_EXCEPTION_MS, expiryTime, parseVulnExceptions, vulnExceptionsOf } from './exceptions.ts';

const NOW = Date.parse('2026-12-02T00:00:00Z');
const D = `sha256:${'a'.repeat(64)}`;

const doc = (spec: string, name = 'openssl-web') => `apiVersion: writ.dev/v1
kind: VulnException
metadata:
  name: ${name}
spec:
${spec}
`;

const problems = (text: string, opts = {}): string[] => {
  try {
    parseVulnExceptions(text, { file: 'x.yaml', now: NOW, ...opts });
  } catch (err) {
    return (err as { issues: Array<{ line: number; column: number; message: string }> }).issues.map((i) => `${i.line}:${i.column} ${i.message}`);
  }
  return [];
};

describe('VulnException documents', () => {
  it('reads a valid one: the ID normalised, the scope normalised, a date meaning 00:00Z of that day', () => {
    const [e] = parseVulnExceptions(
      doc(`  vulnerability: cve_2024_1234
  scope: { repository: [alpine, "registry.example.com/team/web"] }
  reason: "TICKET-1: not reachable"
  owner: team-web
  expires: 2027-01-15`),
      { now: NOW },
    );
    assert.ok(e);
    assert.equal(e.name, 'openssl-web');
    assert.equal(e.vulnerability, 'CVE-2024-1234');
    assert.deepEqual(e.scope, { kind: 'repository', values: ['docker.io/library/alpine', 'registry.example.com/team/web'] });
    assert.equal(e.owner, 'team-web');
    assert.equal(e.expires, Date.parse('2027-01-15T00:00:00Z'));
    assert.match(e.source, /^apiVersion: writ.dev\/v1\nkind: VulnException/);
  });

  it('takes digests (bare or NAME@digest), package names and purls (canonical), GHSA IDs lowercased', () => {
    const [a, b] = parseVulnExceptions(
      `${doc(`  vulnerability: GHSA-JFH8-C2JP-5V3Q
  scope: { digest: ["registry.example.com/web@${D}", "${D}"] }
  reason: r
  expires: 2026-12-31T12:00:00+01:00`)}---
${doc(
  `  vulnerability: CVE-2024-0001
  scope:
    package: [openssl, "pkg:APK/alpine/openssl?arch=x86_64"]
  reason: r
  expires: "2027-01-01T00:00:00Z"`,
  'b',
)}`,
      { now: NOW },
    );
    assert.equal(a?.vulnerability, 'GHSA-jfh8-c2jp-5v3q');
    assert.deepEqual(a?.scope, { kind: 'digest', values: [D] });
    assert.equal(a?.expires, Date.parse('2026-12-31T11:00:00Z'));
    assert.deepEqual(b?.scope, { kind: 'package', values: ['openssl', 'pkg:apk/alpine/openssl?arch=x86_64'] });
  });

  it('refuses an expiry in the past, past the maximum (naming it), or missing, with line:column', () => {
    assert.deepEqual(problems(doc(`  vulnerability: CVE-2024-0001\n  scope: { digest: ["${D}"] }\n  reason: r\n  expires: 2026-12-01`)), [
      '9:12 spec.expires is in the past (2026-12-01T00:00:00.000Z): the exception would never apply',
    ]);
    const far = problems(doc(`  vulnerability: CVE-2024-0001\n  scope: { digest: ["${D}"] }\n  reason: r\n  expires: 2027-06-01`));
    assert.equal(far.length, 1);
    assert.match(far[0]!, /^9:12 spec.expires is 181 days away; an exception may last at most 90 days \(until 2027-03-02T00:00:00.000Z\)/);
    // A configured maximum is the one named.
    assert.match(
      problems(doc(`  vulnerability: CVE-2024-0001\n  scope: { digest: ["${D}"] }\n  reason: r\n  expires: 2026-12-20`), { maxLifetimeMs: 7 * 86_400_000 })[0]!,
      /at most 7 days/,
    );
    assert.deepEqual(problems(doc(`  vulnerability: CVE-2024-0001\n  scope: { digest: ["${D}"] }\n  reason: r`)), ['6:3 spec needs "expires"']);
    assert.match(
      problems(doc(`  vulnerability: CVE-2024-0001\n  scope: { digest: ["${D}"] }\n  reason: r\n  expires: next week`))[0]!,
      /^9:12 spec.expires must be an RFC 3339 time/,
    );
    assert.match(
      problems(doc(`  vulnerability: CVE-2024-0001\n  scope: { digest: ["${D}"] }\n  reason: r\n  expires: 2027-02-30`))[0]!,
      /^9:12 spec.expires must be/,
    );
    assert.equal(DEFAULT_MAX_EXCEPTION_MS, 90 * 86_400_000);
  });

  it('a stored set keeps expired ones (whoever matches decides at its own now)', () => {
    const text = doc(`  vulnerability: CVE-2024-0001\n  scope: { digest: ["${D}"] }\n  reason: r\n  expires: 2020-01-01`);
    assert.equal(
      vulnExceptionsOf({ 'VulnException/openssl-web': text, 'AdmissionPolicy/x': 'kind: AdmissionPolicy' })[0]?.expires,
      Date.parse('2020-01-01T00:00:00Z'),
    );
  });

  it('refuses a scope with none or two kinds, bad values, and IDs that are not CVE or GHSA', () => {
    assert.deepEqual(problems(doc(`  vulnerability: CVE-2024-0001\n  scope: { digest: ["${D}"], repository: [alpine] }\n  reason: r\n  expires: 2027-01-01`)), [
      '7:10 spec.scope takes exactly one of digest, repository, package (found 2)',
    ]);
    assert.deepEqual(problems(doc(`  vulnerability: CVE-2024-0001\n  scope: {}\n  reason: r\n  expires: 2027-01-01`)), [
      '7:10 spec.scope takes exactly one of digest, repository, package (found 0)',
    ]);
    assert.match(
      problems(doc(`  vulnerability: CVE-2024-0001\n  scope: { digest: [sha256:abc] }\n  reason: r\n  expires: 2027-01-01`))[0]!,
      /^7:20 spec.scope.digest: "sha256:abc" is not an image digest/,
    );
    assert.match(
      problems(doc(`  vulnerability: CVE-2024-0001\n  scope: { package: ["pkg:nope"] }\n  reason: r\n  expires: 2027-01-01`))[0]!,
      /^7:21 spec.scope.package: not a package URL/,
    );
    assert.match(
      problems(doc(`  vulnerability: CVE-2024-0001\n  scope: { repository: ["Has Space"] }\n  reason: r\n  expires: 2027-01-01`))[0]!,
      /not a repository name/,
    );
    assert.match(
      problems(doc(`  vulnerability: CVE-24-1\n  scope: { digest: ["${D}"] }\n  reason: r\n  expires: 2027-01-01`))[0]!,
      /^6:18 spec.vulnerability: not a CVE ID/,
    );
    assert.match(
      problems(doc(`  vulnerability: DSA-5678-1\n  scope: { digest: ["${D}"] }\n  reason: r\n  expires: 2027-01-01`))[0]!,
      /must be a CVE .* or GHSA/,
    );
    assert.deepEqual(problems(doc(`  vulnerability: CVE-2024-0001\n  scope: { digest: ["${D}"] }\n  reason: r\n  expires: 2027-01-01\n  severity: high`)), [
      '10:3 unknown field "severity" in spec; allowed: vulnerability, scope, reason, owner, expires',
    ]);
  });

  it('skips other kinds and refuses a repeated name', () => {
    const ok = doc(`  vulnerability: CVE-2024-0001\n  scope: { digest: ["${D}"] }\n  reason: r\n  expires: 2027-01-01`);
    assert.equal(parseVulnExceptions(`kind: AccessPolicy\nmetadata: { name: p }\n---\n${ok}`, { now: NOW }).length, 1);
    assert.match(problems(`${ok}---\n${ok}`).join('\n'), /VulnException "openssl-web" is defined twice \(also line 1\)/);
  });

  it('is no access policy: the policy language (what agents compile) passes it over without a complaint', () => {
    const text = doc(`  vulnerability: CVE-2024-0001\n  scope: { digest: ["${D}"] }\n  reason: r\n  expires: 2027-01-01`);
    const r = parsePolicies(text, { allowExpired: true });
    assert.deepEqual(r.policies, []);
    assert.deepEqual(
      r.others.map((o) => o.kind),
      ['VulnException'],
    );
  });

  it("docs/vulnerabilities.md's example is valid and means what the text says", () => {
    const md = readFileSync(new URL('../../../docs/vulnerabilities.md', import.meta.url), 'utf8');
    const yaml = /### VulnException\n[\s\S]*?```yaml\n([\s\S]*?)```/.exec(md)?.[1];
    assert.ok(yaml, 'the section has a yaml example');
    const [e] = parseVulnExceptions(yaml, { now: NOW });
    assert.deepEqual(
      [e?.vulnerability, e?.scope, e?.owner, e && new Date(e.expires).toISOString()],
      ['CVE-2024-1234', { kind: 'repository', values: ['registry.example.com/team/web'] }, 'team-web', '2027-03-01T00:00:00.000Z'],
    );
  });

  it('expiryTime: RFC 3339 with offsets, dates at 00:00Z, nonsense NaN', () => {
    assert.equal(expiryTime('2027-01-01'), Date.parse('2027-01-01T00:00:00Z'));
    assert.equal(expiryTime('2027-01-01T10:00:00.5-02:00'), Date.parse('2027-01-01T12:00:00.5Z'));
    assert.ok(Number.isNaN(expiryTime('2027-01-01 10:00')));
    assert.ok(Number.isNaN(expiryTime('1 Jan 2027')));
  });
});
