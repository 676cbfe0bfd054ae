/** Property tests: whatever the text or object, the parsers answer with their own error and evaluate() never throws. */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import fc from 'fast-check';
import { stringify } from 'yaml';
import { PolicyError } from '@writ/policy';
import { WritError } from '@writ/spiffe';
import { evaluate } from './evaluate.ts';
import { parseAdmission } from './model.ts';
import { readObjects } from './objects.ts';

const NOW = Date.parse('2026-12-01T00:00:00Z');
const value = fc.oneof(fc.string({ maxLength: 20 }), fc.integer(), fc.boolean(), fc.constant(null), fc.array(fc.string({ maxLength: 10 }), { maxLength: 3 }));
const field = <T>(a: fc.Arbitrary<T>) => fc.oneof(a, value);

/** Documents shaped like admission documents, with any field possibly of the wrong type. */
const doc = fc.record(
  {
    apiVersion: field(fc.constant('writ.dev/v1')),
    kind: field(fc.constantFrom('AdmissionPolicy', 'AdmissionException', 'AccessPolicy', 'Pod')),
    metadata: field(fc.record({ name: field(fc.constantFrom('a', 'b', 'Bad Name')) })),
    spec: field(
      fc.record(
        {
          namespaces: field(fc.array(fc.constantFrom('prod', 'team-*', 'X'), { maxLength: 3 })),
          mode: field(fc.constantFrom('enforce', 'warn', 'audit', 'deny')),
          podSecurity: field(fc.record({ level: field(fc.constantFrom('baseline', 'restricted')), version: field(fc.constantFrom('latest', 'v1.30', 'v2')) })),
          images: field(fc.record({ requireDigest: field(fc.boolean()), registries: field(fc.array(fc.string({ maxLength: 10 }), { maxLength: 2 })) })),
          controls: field(fc.array(fc.constantFrom('privileged', 'capabilities', 'nope'), { maxLength: 3 })),
          reason: value,
          expires: field(fc.constantFrom('2027-01-01T00:00:00Z', '2020-01-01T00:00:00Z', 'soon')),
        },
        { requiredKeys: [] },
      ),
    ),
  },
  { requiredKeys: [] },
);

it('parseAdmission: any text or document gives a result or a PolicyError, nothing else', () => {
  const check = (text: string): void => {
    try {
      const s = parseAdmission(text, { now: NOW });
      for (const p of s.policies) assert.ok(p.namespaces.length > 0);
      for (const e of s.exceptions) assert.ok(e.expires > NOW && e.controls.length > 0);
    } catch (err) {
      assert.ok(err instanceof PolicyError, String(err));
      assert.ok(err.issues.length > 0 && err.issues.every((i) => i.line >= 1 && i.column >= 1));
    }
  };
  fc.assert(fc.property(fc.string({ maxLength: 200 }), check), { numRuns: 300 });
  fc.assert(
    fc.property(fc.array(doc, { minLength: 1, maxLength: 3 }), (docs) => check(docs.map((d) => stringify(d)).join('---\n'))),
    { numRuns: 300 },
  );
});

it('readObjects: any text gives objects or ERR_ADMISSION_OBJECT_INVALID', () => {
  fc.assert(
    fc.property(
      fc.oneof(
        fc.string({ maxLength: 200 }),
        fc.jsonValue().map((v) => JSON.stringify(v)),
      ),
      (text) => {
        try {
          for (const o of readObjects(text)) assert.equal(typeof o.kind, 'string');
        } catch (err) {
          assert.ok(err instanceof WritError && err.code === 'ERR_ADMISSION_OBJECT_INVALID', String(err));
        }
      },
    ),
    { numRuns: 300 },
  );
});

it('evaluate: any object of any kind gets a verdict, never a throw', async () => {
  const set = parseAdmission(
    'apiVersion: writ.dev/v1\nkind: AdmissionPolicy\nmetadata: { name: p }\nspec:\n  namespaces: ["*"]\n  podSecurity: { level: restricted }\n  images: { requireDigest: true, registries: [r.example/] }\n  require: { resourceLimits: true, readOnlyRootFilesystem: true, runtimeClassNames: [kata] }\n---\napiVersion: writ.dev/v1\nkind: AdmissionException\nmetadata: { name: e }\nspec: { namespaces: ["*"], containers: [a], controls: [privileged], images: ["sha256:' +
      '1'.repeat(64) +
      '"], reason: x, expires: 2027-01-01T00:00:00Z }\n',
    { now: NOW },
  );
  const container = fc.record(
    {
      name: field(fc.constantFrom('a', 'b')),
      image: field(fc.constantFrom('x', `r.example/x@sha256:${'1'.repeat(64)}`)),
      securityContext: fc.anything(),
      resources: fc.anything(),
    },
    { requiredKeys: [] },
  );
  const spec = fc.record(
    {
      containers: field(fc.array(container, { maxLength: 3 })),
      initContainers: fc.anything(),
      ephemeralContainers: field(fc.array(container, { maxLength: 2 })),
      runtimeClassName: value,
      volumes: fc.anything(),
      hostPID: value,
    },
    { requiredKeys: [] },
  );
  const object = fc.oneof(fc.anything(), fc.record({ metadata: fc.anything(), spec }), fc.record({ spec: fc.record({ template: fc.record({ spec }) }) }));
  await fc.assert(
    fc.asyncProperty(
      fc.constantFrom('Pod', 'Deployment', 'CronJob', 'Service', ''),
      fc.constantFrom('CREATE', 'UPDATE', 'DELETE') as fc.Arbitrary<'CREATE' | 'UPDATE' | 'DELETE'>,
      object,
      object,
      async (kind, operation, obj, old) => {
        const v = await evaluate({ kind, namespace: 'ns', name: 'n', operation, object: obj, oldObject: old }, set, { now: NOW });
        assert.equal(v.allowed, v.violations.length === 0);
        assert.equal(typeof v.message, 'string');
      },
    ),
    { numRuns: 500 },
  );
});
