/** Property tests: whatever the bytes, parseReport returns a Report or throws one registered WritError. */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { it } from 'node:test';
import fc from 'fast-check';
import { WritError } from '@writ/spiffe';
import { VULN_ERROR_CODES, parseReport } from './index.ts';

const CODES = new Set<string>(VULN_ERROR_CODES);
const FILES = ['trivy-image.json', 'grype-image.json', 'cyclonedx-1.6.json', 'cyclonedx-1.5-trivy.json', 'spdx-2.3.json', 'openvex-0.2.0.json'];
const SAMPLES = FILES.map((f) => JSON.parse(readFileSync(new URL(`testdata/${f}`, import.meta.url), 'utf8')) as unknown);

function check(input: string | Uint8Array): void {
  try {
    const r = parseReport(input, { maxBytes: 1 << 20 });
    assert.ok(Array.isArray(r.packages) && Array.isArray(r.findings) && Array.isArray(r.vex));
    const ids = new Set(r.packages.map((p) => p.id));
    for (const f of r.findings) assert.ok(ids.has(f.packageRef), 'every finding points at a package of the report');
  } catch (e) {
    assert.ok(e instanceof WritError && CODES.has(e.code), `unexpected ${String(e)}`);
    if (e.field !== undefined) assert.match(e.field, /^[$\w[]/);
  }
}

/** Replaces one value somewhere in the tree (chosen by `pick`) with `v`. */
function mutate(doc: unknown, pick: number, v: unknown): unknown {
  let n = 0;
  const walk = (x: unknown): unknown => {
    if (n++ === pick) return v;
    if (Array.isArray(x)) return x.map(walk);
    if (typeof x === 'object' && x !== null) return Object.fromEntries(Object.entries(x).map(([k, y]) => [k, walk(y)]));
    return x;
  };
  return walk(doc);
}

it('random JSON values never throw anything but a registered error', () => {
  fc.assert(
    fc.property(fc.jsonValue({ maxDepth: 6 }), (v) => check(JSON.stringify(v))),
    { numRuns: 1000 },
  );
});

it('random strings and bytes never throw anything but a registered error', () => {
  fc.assert(
    fc.property(fc.oneof(fc.string({ maxLength: 200 }), fc.uint8Array({ maxLength: 200 })), (s) => check(s)),
    { numRuns: 1000 },
  );
});

it('each real-shaped report with one value replaced by anything: a Report or one registered error', () => {
  const value = fc.oneof(fc.jsonValue({ maxDepth: 2 }), fc.constantFrom(null, '', 'pkg:', 'CVE-1', [], {}, 2, 'sha256:zz'));
  fc.assert(
    fc.property(fc.nat(SAMPLES.length - 1), fc.nat(400), value, (i, pick, v) => check(JSON.stringify(mutate(SAMPLES[i], pick, v)))),
    { numRuns: 3000 },
  );
});

it('report shapes with the five formats’ keys and random content', () => {
  const any = fc.jsonValue({ maxDepth: 3 });
  const shaped = fc.oneof(
    fc.record({
      SchemaVersion: fc.constantFrom(2, 1, '2'),
      Results: fc.array(fc.record({ Packages: any, Vulnerabilities: any, Type: any }), { maxLength: 3 }),
      Metadata: any,
    }),
    fc.record({
      matches: fc.array(fc.record({ vulnerability: any, artifact: any, relatedVulnerabilities: any }), { maxLength: 3 }),
      source: any,
      descriptor: any,
    }),
    fc.record({ bomFormat: fc.constant('CycloneDX'), specVersion: fc.constantFrom('1.5', '1.6', '1.3'), components: any, vulnerabilities: any, metadata: any }),
    fc.record({ spdxVersion: fc.constantFrom('SPDX-2.3', 'SPDX-2.0'), packages: any, relationships: any, creationInfo: any }),
    fc.record({ '@context': fc.constantFrom('https://openvex.dev/ns/v0.2.0', 'https://openvex.dev/ns'), statements: any, timestamp: any }),
  );
  fc.assert(
    fc.property(shaped, (d) => check(JSON.stringify(d))),
    { numRuns: 2000 },
  );
});
