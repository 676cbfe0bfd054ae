/**
 * Property tests: whatever the YAML, parseVulnExceptions returns exceptions or throws a PolicyError
 * with line numbers; whatever the finding, match never throws and an exception never applies at
 * or after its expiry; whatever the OpenVEX document, vexDocumentOf answers or refuses with a code.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { it } from 'node:test';
import fc from 'fast-check';
import { WritError } from '@writ/spiffe';
import { parseVulnExceptions } from './exceptions.ts';
import { VULN_ERROR_CODES } from './errors.ts';
import { parseDocument } from './parse.ts';
import { suppressionSet } from './suppress.ts';
import { vexDocumentOf } from './vex-document.ts';

const NOW = Date.parse('2026-12-02T00:00:00Z');
const SCALARS = fc.oneof(
  fc.constantFrom('CVE-2024-0001', 'ghsa-jfh8-c2jp-5v3q', 'alpine', 'pkg:apk/alpine/openssl', `sha256:${'a'.repeat(64)}`, '2027-01-01', '2020-01-01', '*', ''),
  fc.string({ maxLength: 20 }),
  fc.integer(),
);

it('any VulnException-shaped YAML: exceptions within the rules, or a PolicyError with line:column', () => {
  fc.assert(
    fc.property(
      fc.record({
        vulnerability: SCALARS,
        kind: fc.constantFrom('digest', 'repository', 'package', 'other'),
        values: fc.array(SCALARS, { maxLength: 3 }),
        expires: SCALARS,
        reason: SCALARS,
      }),
      (r) => {
        const text = `apiVersion: writ.dev/v1\nkind: VulnException\nmetadata: { name: x }\nspec:\n  vulnerability: ${JSON.stringify(r.vulnerability)}\n  scope: { ${r.kind}: ${JSON.stringify(r.values)} }\n  reason: ${JSON.stringify(r.reason)}\n  expires: ${JSON.stringify(r.expires)}\n`;
        try {
          for (const e of parseVulnExceptions(text, { now: NOW })) {
            assert.ok(e.expires > NOW && e.expires - NOW <= 90 * 86_400_000);
            assert.match(e.vulnerability, /^(CVE-\d{4}-\d{4,}|GHSA(-[23456789cfghjmpqrvwx]{4}){3})$/);
            assert.ok(e.scope.values.length > 0);
          }
        } catch (err) {
          assert.ok(err instanceof WritError && err.code === 'ERR_POLICY_INVALID', String(err));
          assert.match(err.message, /\d+:\d+: /);
        }
      },
    ),
    { numRuns: 500 },
  );
});

it('match never throws, and an exception never applies at or after its expiry', () => {
  const str = fc.oneof(fc.string({ maxLength: 30 }), fc.constantFrom('pkg:apk/alpine/openssl@1', 'pkg:oci/web', `sha256:${'a'.repeat(64)}`, 'alpine'));
  fc.assert(
    fc.property(
      fc.array(str, { maxLength: 3 }),
      fc.record({
        vulnId: str,
        aliases: fc.array(str, { maxLength: 2 }),
        imageDigest: str,
        repositories: fc.array(str, { maxLength: 2 }),
        packageName: str,
        purl: str,
      }),
      fc.integer({ min: -1000, max: 1000 }),
      (values, f, dt) => {
        const expires = NOW + 500;
        const set = suppressionSet(
          (['digest', 'repository', 'package'] as const).map((kind) => ({
            name: kind,
            vulnerability: f.vulnId,
            scope: { kind, values },
            reason: 'r',
            expires,
            line: 1,
            source: '',
          })),
          [
            {
              vulnerability: f.vulnId,
              aliases: [],
              products: values.map((v) => ({ id: v, purl: v, digest: v, subcomponents: [{ id: v, purl: v }] })),
              status: 'affected',
            },
          ],
        );
        const m = set.match(f, NOW + dt);
        if (NOW + dt >= expires) assert.equal(m, undefined);
      },
    ),
    { numRuns: 1000 },
  );
});

it('an OpenVEX document with any @id, version or statement mutated: a VexDocument or a registered refusal', () => {
  const base = JSON.parse(readFileSync(new URL('testdata/openvex-0.2.0.json', import.meta.url), 'utf8')) as Record<string, unknown>;
  const codes = new Set<string>(VULN_ERROR_CODES);
  fc.assert(
    fc.property(fc.constantFrom('@id', 'version', 'author', 'timestamp', 'statements'), fc.jsonValue({ maxDepth: 3 }), (k, v) => {
      const doc = { ...base, [k]: v };
      try {
        const d = vexDocumentOf(doc, parseDocument(doc));
        assert.ok(d.id.length > 0 && Number.isSafeInteger(d.version));
      } catch (err) {
        assert.ok(err instanceof WritError && codes.has(err.code), String(err));
      }
    }),
    { numRuns: 1000 },
  );
});
