import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { ImageChecker, ImageRequirements, ImageVerdict } from '@writ/oci';
import { PolicyError } from '@writ/policy';
import { type AdmissionInput, evaluate } from './evaluate.ts';
import { parseAdmission } from './model.ts';
import type { ImageVulnerabilities, ImageVulnerability, VulnerabilityChecker } from './types.ts';

const NOW = Date.parse('2026-12-01T00:00:00Z');
const DAY = 86_400_000;
const D1 = `sha256:${'1'.repeat(64)}`;
const D2 = `sha256:${'2'.repeat(64)}`;
const IMG = `registry.example.com/team/app@${D1}`;

const policy = (vulns: string, extra = '') =>
  `apiVersion: writ.dev/v1\nkind: AdmissionPolicy\nmetadata: { name: vulns }\nspec:\n  namespaces: [prod]\n${extra}  images:\n    vulnerabilities: ${vulns}\n---\n`;
const exception = (spec: string) =>
  `apiVersion: writ.dev/v1\nkind: AdmissionException\nmetadata: { name: ticket-7 }\nspec:\n  namespaces: [prod]\n${spec}\n  reason: "TICKET-7"\n  expires: 2027-03-01T00:00:00Z\n---\n`;
const pod = (image = IMG) => ({ kind: 'Pod', metadata: { name: 'web', namespace: 'prod' }, spec: { containers: [{ name: 'app', image }] } });
const input = (object: unknown): AdmissionInput => ({ kind: 'Pod', namespace: 'prod', name: 'web', operation: 'CREATE', object });

const vuln = (id: string, severity: ImageVulnerability['severity'], over: Partial<ImageVulnerability> = {}): ImageVulnerability => ({
  id,
  severity,
  status: 'affected',
  package: 'openssl',
  installed: '3.0.1',
  fixed: '3.0.2',
  ...over,
});

class FakeVulns implements VulnerabilityChecker {
  readonly calls: string[] = [];
  readonly by: Record<string, ImageVulnerabilities>;
  constructor(by: Record<string, ImageVulnerabilities>) {
    this.by = by;
  }
  async vulnerabilities(digest: string): Promise<ImageVulnerabilities> {
    this.calls.push(digest);
    return this.by[digest] ?? {};
  }
}
const report = (findings: ImageVulnerability[], scannedAt = NOW - DAY): ImageVulnerabilities => ({ report: { scannedAt, scanners: ['trivy'], findings } });

function problems(text: string): string[] {
  try {
    parseAdmission(text, { now: NOW });
  } catch (err) {
    assert.ok(err instanceof PolicyError, String(err));
    return err.issues.map((i) => `${i.line}:${i.column}: ${i.message}`);
  }
  return [];
}

describe('AdmissionPolicy spec.images.vulnerabilities', () => {
  it('reads block, fixableOnly, requireReport and maxReportAge; block defaults to critical and high', () => {
    const set = parseAdmission(policy('{ block: [critical], fixableOnly: true, requireReport: true, maxReportAge: 7d }'), { now: NOW });
    assert.deepEqual(set.policies[0]!.images!.vulnerabilities, { block: ['critical'], fixableOnly: true, requireReport: true, maxReportAge: 7 * DAY });
    const defaults = parseAdmission(policy('{}'), { now: NOW });
    assert.deepEqual(defaults.policies[0]!.images!.vulnerabilities, { block: ['critical', 'high'], fixableOnly: false, requireReport: false });
  });

  it('refuses bad values with their line and column', () => {
    assert.deepEqual(problems(policy('{ block: [severe], fixableOnly: yes, maxReportAge: soon, ignore: true }')), [
      '7:32: spec.images.vulnerabilities.block[0]: not a severity (critical, high, medium, low, negligible, unknown)',
      '7:54: spec.images.vulnerabilities.fixableOnly must be true or false',
      '7:73: spec.images.vulnerabilities.maxReportAge: "soon" is not a duration (e.g. 90s, 5m, 1h, 7d)',
      '7:79: unknown field "ignore" in spec.images.vulnerabilities; allowed: block, fixableOnly, requireReport, maxReportAge',
    ]);
    assert.deepEqual(problems(policy('{ maxReportAge: 10s }')), ['7:38: spec.images.vulnerabilities.maxReportAge: must be at least 1m']);
  });

  it('an AdmissionException may name the control imageVulnerabilities', () => {
    const set = parseAdmission(exception('  controls: [imageVulnerabilities]'), { now: NOW });
    assert.deepEqual(set.exceptions[0]!.controls, ['imageVulnerabilities']);
  });
});

describe('evaluate: images.vulnerabilities', () => {
  const BLOCK = policy('{ block: [critical, high], fixableOnly: true, requireReport: true, maxReportAge: 7d }');

  it('denies an image with a blocking CVE and names it with its package and fix', async () => {
    const checker = new FakeVulns({ [D1]: report([vuln('CVE-2026-0001', 'critical'), vuln('CVE-2026-0002', 'medium')]) });
    const v = await evaluate(input(pod()), parseAdmission(BLOCK, { now: NOW }), { now: NOW, vulnerabilities: checker });
    assert.equal(v.allowed, false);
    assert.equal(
      v.message,
      `violates AdmissionPolicy "vulns": image "${IMG}" has 1 fixable critical/high vulnerability: CVE-2026-0001 (critical, openssl 3.0.1, fixed in 3.0.2) (container "app")`,
    );
    assert.deepEqual(
      v.violations.map((f) => [f.control, f.container, f.vulnerabilities]),
      [['imageVulnerabilities', 'app', ['CVE-2026-0001']]],
    );
    assert.deepEqual(checker.calls, [D1]);
  });

  it('names the first five worst first and counts the rest', async () => {
    const findings = [
      ...['CVE-2026-0010', 'CVE-2026-0011', 'CVE-2026-0012'].map((id) => vuln(id, 'high')),
      ...['CVE-2026-0020', 'CVE-2026-0021', 'CVE-2026-0022', 'CVE-2026-0023'].map((id) => vuln(id, 'critical')),
      // The same CVE in another package counts once.
      vuln('CVE-2026-0020', 'critical', { package: 'libssl3' }),
    ];
    const v = await evaluate(input(pod()), parseAdmission(BLOCK, { now: NOW }), { now: NOW, vulnerabilities: new FakeVulns({ [D1]: report(findings) }) });
    assert.match(
      v.message,
      /has 7 fixable critical\/high vulnerabilities: CVE-2026-0020 \(critical, .*CVE-2026-0023 \(critical, .*CVE-2026-0010 \(high, [^)]*\) and 2 more/,
    );
    assert.equal(v.violations[0]!.vulnerabilities!.length, 7);
  });

  it('fixableOnly leaves findings without a fix alone; fixed and not_affected findings never refuse', async () => {
    const findings = [
      vuln('CVE-2026-0003', 'critical', { fixed: undefined as unknown as string }),
      vuln('CVE-2026-0004', 'critical', { status: 'not_affected' }),
      vuln('CVE-2026-0005', 'critical', { status: 'fixed' }),
    ].map(({ fixed, ...f }) => (fixed ? { ...f, fixed } : f));
    const checker = new FakeVulns({ [D1]: report(findings) });
    const fixable = await evaluate(input(pod()), parseAdmission(BLOCK, { now: NOW }), { now: NOW, vulnerabilities: checker });
    assert.equal(fixable.allowed, true, fixable.message);
    const any = await evaluate(input(pod()), parseAdmission(policy('{ block: [critical] }'), { now: NOW }), { now: NOW, vulnerabilities: checker });
    assert.deepEqual(any.violations[0]!.vulnerabilities, ['CVE-2026-0003']);
  });

  it('a suppressed finding (VulnException or VEX) does not refuse, and the deny says how many were suppressed', async () => {
    const suppressed = { by: 'exception' as const, name: 'openssl-wontfix', reason: 'not reachable' };
    const only = new FakeVulns({ [D1]: report([vuln('CVE-2026-0001', 'critical', { suppressed })]) });
    assert.equal((await evaluate(input(pod()), parseAdmission(BLOCK, { now: NOW }), { now: NOW, vulnerabilities: only })).allowed, true);
    const both = new FakeVulns({ [D1]: report([vuln('CVE-2026-0001', 'critical', { suppressed }), vuln('CVE-2026-0009', 'high')]) });
    const v = await evaluate(input(pod()), parseAdmission(BLOCK, { now: NOW }), { now: NOW, vulnerabilities: both });
    assert.match(v.message, /has 1 fixable critical\/high vulnerability: CVE-2026-0009 .*\(1 more suppressed by exceptions or VEX\)/);
  });

  it('requireReport refuses an image without a report; maxReportAge one with an old report', async () => {
    const none = await evaluate(input(pod()), parseAdmission(BLOCK, { now: NOW }), { now: NOW, vulnerabilities: new FakeVulns({}) });
    assert.equal(none.allowed, false);
    assert.match(none.message, /image ".*" has no vulnerability report \(the policy requires one: scan the image and send the report with writ vuln ingest\)/);
    const lax = await evaluate(input(pod()), parseAdmission(policy('{ block: [critical] }'), { now: NOW }), { now: NOW, vulnerabilities: new FakeVulns({}) });
    assert.equal(lax.allowed, true);
    const old = await evaluate(input(pod()), parseAdmission(BLOCK, { now: NOW }), {
      now: NOW,
      vulnerabilities: new FakeVulns({ [D1]: report([], NOW - 8 * DAY) }),
    });
    assert.equal(old.allowed, false);
    assert.match(old.message, /its newest vulnerability report is from 2026-11-23T00:00:00.000Z, older than the policy's maxReportAge 7d \(scan it again\)/);
  });

  it('an AdmissionException for imageVulnerabilities (scoped to the digest) admits the image; one for another digest does not', async () => {
    const checker = new FakeVulns({ [D1]: report([vuln('CVE-2026-0001', 'critical')]) });
    const waived = await evaluate(input(pod()), parseAdmission(BLOCK + exception(`  controls: [imageVulnerabilities]\n  images: ["${D1}"]`), { now: NOW }), {
      now: NOW,
      vulnerabilities: checker,
    });
    assert.equal(waived.allowed, true);
    assert.deepEqual(waived.exceptionsUsed, [{ name: 'ticket-7', controls: ['imageVulnerabilities'], containers: ['app'] }]);
    const other = await evaluate(input(pod()), parseAdmission(BLOCK + exception(`  controls: [imageVulnerabilities]\n  images: ["${D2}"]`), { now: NOW }), {
      now: NOW,
      vulnerabilities: checker,
    });
    assert.equal(other.allowed, false);
  });

  it('warn and audit modes admit and say what enforce would refuse', async () => {
    const checker = new FakeVulns({ [D1]: report([vuln('CVE-2026-0001', 'critical')]) });
    const warn = await evaluate(input(pod()), parseAdmission(policy('{ block: [critical] }', '  mode: warn\n'), { now: NOW }), {
      now: NOW,
      vulnerabilities: checker,
    });
    assert.equal(warn.allowed, true);
    assert.match(warn.warnings[0]!, /^would violate AdmissionPolicy "vulns": image .* has 1 critical vulnerability: CVE-2026-0001/);
    const audit = await evaluate(input(pod()), parseAdmission(policy('{ block: [critical] }', '  mode: audit\n'), { now: NOW }), {
      now: NOW,
      vulnerabilities: checker,
    });
    assert.equal(audit.allowed, true);
    assert.match(audit.auditAnnotations['audit-violations']!, /CVE-2026-0001/);
  });

  it('looks a tag up by the digest the image checker resolved it to', async () => {
    const tag = 'registry.example.com/team/app:1.0';
    const asked: ImageRequirements[] = [];
    const images: ImageChecker = {
      async check(image: string, req: ImageRequirements): Promise<ImageVerdict> {
        asked.push(req);
        return { image, digest: D2, pinned: `registry.example.com/team/app@${D2}`, violations: [], signedBy: [] };
      },
    };
    const checker = new FakeVulns({ [D2]: report([vuln('CVE-2026-0001', 'high')]) });
    const v = await evaluate(input(pod(tag)), parseAdmission(policy('{ block: [high] }'), { now: NOW }), { now: NOW, images, vulnerabilities: checker });
    assert.equal(asked[0]!.pinTags, true);
    assert.deepEqual(checker.calls, [D2]);
    assert.match(v.message, new RegExp(`image "${tag}" \\(sha256:222222222222\\) has 1 high vulnerability: CVE-2026-0001`));
  });

  it('without a checker (offline) or a digest it refuses, saying why it could not check', async () => {
    const offline = await evaluate(input(pod()), parseAdmission(policy('{ block: [critical] }'), { now: NOW }), { now: NOW });
    assert.match(offline.message, /vulnerabilities cannot be checked without the server's reports \(writ admission check --report FILE\)/);
    const tag = await evaluate(input(pod('nginx:1.25')), parseAdmission(policy('{ block: [critical] }'), { now: NOW }), {
      now: NOW,
      vulnerabilities: new FakeVulns({}),
    });
    assert.match(tag.message, /image "nginx:1.25": it did not resolve to a digest/);
    const failing: VulnerabilityChecker = {
      vulnerabilities: () => Promise.reject(new Error('store away')),
    };
    const broken = await evaluate(input(pod()), parseAdmission(policy('{ block: [critical] }'), { now: NOW }), { now: NOW, vulnerabilities: failing });
    assert.match(broken.message, /its vulnerabilities could not be read: store away/);
  });
});
