import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { describe, it } from 'node:test';
import { PolicyError } from '@writ/policy';
import { admissionSetOf, controlCovers, parseAdmission, signatureRequirements } from './model.ts';

const NOW = Date.parse('2026-12-01T00:00:00Z');
const pem = (type: 'ec' | 'ed25519' | 'rsa', opts: Record<string, unknown> = {}): string =>
  // biome-ignore lint/suspicious/noExplicitAny: generateKeyPairSync's overloads need a literal type per call
  (generateKeyPairSync as any)(type, { ...opts, publicKeyEncoding: { type: 'spki', format: 'pem' }, privateKeyEncoding: { type: 'pkcs8', format: 'pem' } })
    .publicKey as string;
const indent = (s: string, n: number): string => s.trimEnd().replace(/\n/g, `\n${' '.repeat(n)}`);
const P256 = pem('ec', { namedCurve: 'P-256' });

const FULL = `apiVersion: writ.dev/v1
kind: AdmissionPolicy
metadata: { name: prod }
spec:
  namespaces: [prod, "team-*"]
  mode: enforce
  podSecurity: { level: restricted, version: latest }
  images:
    requireDigest: true
    registries: ["registry.example.com/team/"]
    signatures:
      - name: release-key
        keys: [ { file: /etc/writ/cosign.pub } ]
      - name: inline
        keys:
          - pem: |
              ${indent(P256, 14)}
  require: { resourceLimits: true, readOnlyRootFilesystem: true, runtimeClassNames: [kata] }
---
apiVersion: writ.dev/v1
kind: AdmissionException
metadata: { name: legacy-agent-hostpath }
spec:
  namespaces: [monitoring]
  workloads: [node-exporter]
  containers: [exporter]
  controls: [hostPathVolumes, hostNamespaces, capabilities]
  images: ["sha256:${'a'.repeat(64)}"]
  owner: platform-team
  reason: "TICKET-123: reads host metrics"
  expires: 2027-03-01T00:00:00Z
`;

/** The problems parseAdmission reports, as `line:column: message`. */
function problems(text: string, opts: { now?: number; allowExpired?: boolean } = {}): string[] {
  try {
    parseAdmission(text, { now: NOW, ...opts });
  } catch (err) {
    assert.ok(err instanceof PolicyError, String(err));
    assert.equal(err.code, 'ERR_POLICY_INVALID');
    return err.issues.map((i) => `${i.line}:${i.column}: ${i.message}`);
  }
  return [];
}
const policy = (spec: string, meta = '{ name: p }'): string => `apiVersion: writ.dev/v1\nkind: AdmissionPolicy\nmetadata: ${meta}\nspec:\n${spec}`;
const exception = (spec: string): string => `apiVersion: writ.dev/v1\nkind: AdmissionException\nmetadata: { name: e }\nspec:\n${spec}`;
const EXC = '  namespaces: [a]\n  controls: [privileged]\n  reason: why\n  expires: 2027-01-01T00:00:00Z\n';

describe('parseAdmission', () => {
  it('reads the example of the issue, every field', () => {
    const { policies, exceptions } = parseAdmission(FULL, { now: NOW });
    assert.equal(policies.length, 1);
    const p = policies[0]!;
    assert.deepEqual(p.namespaces, ['prod', 'team-*']);
    assert.equal(p.mode, 'enforce');
    assert.deepEqual(p.podSecurity, { level: 'restricted', version: 'latest' });
    assert.equal(p.images?.requireDigest, true);
    assert.deepEqual(p.images?.registries, ['registry.example.com/team/']);
    assert.deepEqual(
      p.images?.signatures.map((s) => [s.name, s.keys.map((k) => ('file' in k ? k.file : 'pem'))]),
      [
        ['release-key', ['/etc/writ/cosign.pub']],
        ['inline', ['pem']],
      ],
    );
    assert.deepEqual(p.require, { resourceLimits: true, readOnlyRootFilesystem: true, runtimeClassNames: ['kata'] });
    assert.match(p.source, /^apiVersion: writ.dev\/v1\nkind: AdmissionPolicy\n[^]*runtimeClassNames: \[kata\] }\n$/);
    const e = exceptions[0]!;
    assert.deepEqual(
      { ...e, source: undefined },
      {
        name: 'legacy-agent-hostpath',
        namespaces: ['monitoring'],
        workloads: ['node-exporter'],
        containers: ['exporter'],
        controls: ['hostPathVolumes', 'hostNamespaces', 'capabilities'],
        images: [`sha256:${'a'.repeat(64)}`],
        owner: 'platform-team',
        reason: 'TICKET-123: reads host metrics',
        expires: Date.parse('2027-03-01T00:00:00Z'),
        line: 23,
        source: undefined,
      },
    );
  });

  it('defaults: mode enforce, version latest, nothing required', () => {
    const [p] = parseAdmission(policy('  namespaces: ["*"]\n  podSecurity: { level: baseline }\n')).policies;
    assert.equal(p!.mode, 'enforce');
    assert.deepEqual(p!.podSecurity, { level: 'baseline', version: 'latest' });
    assert.deepEqual(p!.require, { resourceLimits: false, readOnlyRootFilesystem: false, runtimeClassNames: [] });
    assert.equal(p!.images, undefined);
  });

  it('skips AccessPolicy and PolicyTest documents, refuses other kinds at their line', () => {
    const text = `apiVersion: writ.dev/v1\nkind: AccessPolicy\nmetadata: { name: a }\nspec: { to: "spiffe://x/y", rules: [] }\n---\n${policy('  namespaces: [a]\n')}\n---\nkind: Deployment\nmetadata: { name: d }\n`;
    assert.deepEqual(problems(text), ['13:7: unknown kind "Deployment"; expected AdmissionPolicy or AdmissionException']);
    assert.equal(parseAdmission(text.split('\n---\nkind: Deployment')[0]!).policies.length, 1);
  });

  const cases: Array<[string, string, RegExp]> = [
    [
      'unknown spec field',
      policy('  namespaces: [a]\n  modes: warn\n'),
      /^6:3: unknown field "modes" in spec; allowed: namespaces, mode, podSecurity, images, require$/,
    ],
    ['namespaces required', policy('  mode: warn\n'), /^5:3: spec needs "namespaces"$/],
    ['a namespace that is not a name', policy('  namespaces: [Prod_1]\n'), /^5:16: spec.namespaces\[0\]: not a namespace name or glob/],
    ['mode', policy('  namespaces: [a]\n  mode: deny\n'), /^6:9: spec.mode must be enforce, warn or audit$/],
    ['level', policy('  namespaces: [a]\n  podSecurity: { level: strict }\n'), /^6:25: spec.podSecurity.level must be privileged, baseline or restricted$/],
    [
      'version',
      policy('  namespaces: [a]\n  podSecurity: { level: baseline, version: "1.30" }\n'),
      /^6:44: spec.podSecurity.version must be latest or a Kubernetes minor version/,
    ],
    ['podSecurity needs level', policy('  namespaces: [a]\n  podSecurity: { version: v1.30 }\n'), /^6:16: spec.podSecurity needs "level"$/],
    ['requireDigest a boolean', policy('  namespaces: [a]\n  images: { requireDigest: "yes" }\n'), /^6:28: spec.images.requireDigest must be true or false$/],
    [
      'registry prefix',
      policy('  namespaces: [a]\n  images: { registries: ["Registry Example"] }\n'),
      /^6:26: spec.images.registries\[0\]: not a registry\/repository prefix/,
    ],
    ['a signature needs keys', policy('  namespaces: [a]\n  images: { signatures: [{ name: k }] }\n'), /^6:26: spec.images.signatures\[0\] needs "keys"$/],
    [
      'a key is file or pem',
      policy('  namespaces: [a]\n  images: { signatures: [{ name: k, keys: [{ file: a, pem: b }] }] }\n'),
      /^6:44: spec.images.signatures\[0\].keys\[0\] takes one of "file" or "pem"$/,
    ],
    [
      'a pem that is not a key',
      policy('  namespaces: [a]\n  images: { signatures: [{ name: k, keys: [{ pem: "hello" }] }] }\n'),
      /^6:51: spec.images.signatures\[0\].keys\[0\].pem: not a PEM public key/,
    ],
    [
      'signature names unique',
      policy(`  namespaces: [a]\n  images:\n    signatures:\n      - { name: k, keys: [{ file: a }] }\n      - { name: k, keys: [{ file: b }] }\n`),
      /^9:17: spec.images.signatures\[1\].name "k" is used twice$/,
    ],
    ['require fields', policy('  namespaces: [a]\n  require: { limits: true }\n'), /^6:14: unknown field "limits" in spec.require/],
    [
      'runtime class names',
      policy('  namespaces: [a]\n  require: { runtimeClassNames: ["Kata Containers"] }\n'),
      /^6:34: spec.require.runtimeClassNames\[0\]: not a RuntimeClass name$/,
    ],
    ['apiVersion', policy('  namespaces: [a]\n').replace('writ.dev/v1', 'v1'), /^1:13: apiVersion must be writ.dev\/v1$/],
    ['metadata.name form', policy('  namespaces: [a]\n', '{ name: Prod }'), /^3:19: metadata.name must be lowercase/],
    ['expires required', exception('  namespaces: [a]\n  controls: [privileged]\n  reason: why\n'), /^5:3: spec needs "expires"$/],
    [
      'expires RFC 3339',
      exception('  namespaces: [a]\n  controls: [privileged]\n  reason: why\n  expires: next year\n'),
      /^8:12: spec.expires must be an RFC 3339 time/,
    ],
    [
      'expires in the past',
      exception('  namespaces: [a]\n  controls: [privileged]\n  reason: why\n  expires: 2020-01-01T00:00:00Z\n'),
      /^8:12: spec.expires is in the past \(2020-01-01T00:00:00.000Z\)/,
    ],
    ['reason required', exception('  namespaces: [a]\n  controls: [privileged]\n  expires: 2027-01-01T00:00:00Z\n'), /^5:3: spec needs "reason"$/],
    ['controls required', exception('  namespaces: [a]\n  reason: x\n  expires: 2027-01-01T00:00:00Z\n'), /^5:3: spec needs "controls"$/],
    [
      'unknown control',
      exception(EXC.replace('[privileged]', '[privileged, hostNetwork]')),
      /^6:26: spec.controls\[1\]: unknown control "hostNetwork"; use a Pod Security check ID/,
    ],
    ['a prefix must cover whole parts', exception(EXC.replace('[privileged]', '[capab]')), /^6:14: spec.controls\[0\]: unknown control "capab"/],
    ['image digests', exception(`${EXC}  images: ["sha256:ABC"]\n`), /^9:12: spec.images\[0\]: not an image digest/],
    ['container names', exception(`${EXC}  containers: [App]\n`), /^9:16: spec.containers\[0\]: not a container name$/],
    ['empty workloads list', exception(`${EXC}  workloads: []\n`), /^9:14: spec.workloads must be a non-empty list$/],
  ];
  for (const [what, text, want] of cases)
    it(`refuses with line:column: ${what}`, () => {
      const got = problems(text);
      assert.equal(got.length, 1, got.join('\n'));
      assert.match(got[0]!, want);
    });

  it('lists every problem of the text at once, in order', () => {
    const got = problems(`${policy('  namespaces: [a]\n  mode: x\n')}\n---\n${exception('  namespaces: [a]\n  controls: [nope]\n')}`);
    assert.deepEqual(
      got.map((g) => g.split(':').slice(0, 2).join(':')),
      ['6:9', '13:3', '13:3', '14:14'],
    );
  });

  it('refuses a name used twice for the same kind, allows one policy and one exception of the same name', () => {
    assert.match(
      problems(`${policy('  namespaces: [a]\n')}---\n${policy('  namespaces: [b]\n')}`)[0]!,
      /^9:19: AdmissionPolicy "p" is defined twice \(also line 1\)$/,
    );
    assert.deepEqual(problems(`${policy('  namespaces: [a]\n', '{ name: e }')}---\n${exception(EXC)}`), []);
  });

  it('an expired exception is kept with allowExpired (stored sets), for evaluate to ignore', () => {
    const text = exception(EXC.replace('2027-01-01', '2020-01-01'));
    assert.equal(parseAdmission(text, { now: NOW, allowExpired: true }).exceptions[0]!.expires, Date.parse('2020-01-01T00:00:00Z'));
  });

  it('accepts every key type cosign signs with, refuses the others', () => {
    const ok = [P256, pem('ec', { namedCurve: 'P-384' }), pem('ed25519'), pem('rsa', { modulusLength: 2048 })];
    for (const k of ok)
      assert.deepEqual(
        problems(policy(`  namespaces: [a]\n  images:\n    signatures:\n      - name: k\n        keys:\n          - pem: |\n              ${indent(k, 14)}\n`)),
        [],
      );
    for (const k of [pem('ec', { namedCurve: 'secp256k1' }), pem('rsa', { modulusLength: 1024 })])
      assert.match(
        problems(
          policy(`  namespaces: [a]\n  images:\n    signatures:\n      - name: k\n        keys:\n          - pem: |\n              ${indent(k, 14)}\n`),
        )[0]!,
        /unsupported key (ec secp256k1|rsa 1024 bits): use ECDSA P-256\/P-384, RSA \(2048 bits or more\) or Ed25519/,
      );
  });

  it('refuses YAML bombs and huge texts before building anything', () => {
    // Anchors are not followed: a list that is an alias is refused as not a list, nothing is expanded.
    const bomb = `apiVersion: writ.dev/v1\nkind: AdmissionPolicy\nmetadata: { name: p, labels: { a: &a ["x","x","x","x","x","x","x","x"], b: &b [*a,*a,*a,*a,*a,*a,*a,*a], c: &c [*b,*b,*b,*b,*b,*b,*b,*b], d: &d [*c,*c,*c,*c,*c,*c,*c,*c] } }\nspec:\n  namespaces: *d\n`;
    assert.deepEqual(problems(bomb), ['5:15: spec.namespaces must be a non-empty list']);
    assert.match(problems(`${'['.repeat(100)}${']'.repeat(100)}`)[0]!, /nested deeper than 64 levels/);
    assert.match(problems(`# ${'x'.repeat(5 * 1024 * 1024)}`)[0]!, /larger than 4194304 bytes/);
  });
});

describe('controlCovers', () => {
  it('a control, or a prefix up to an underscore', () => {
    assert.ok(controlCovers('capabilities', 'capabilities_baseline'));
    assert.ok(controlCovers('capabilities', 'capabilities_restricted'));
    assert.ok(controlCovers('seccompProfile_restricted', 'seccompProfile_restricted'));
    assert.ok(!controlCovers('seccompProfile_restricted', 'seccompProfile_baseline'));
    assert.ok(!controlCovers('host', 'hostPorts'));
  });
});

describe('admissionSetOf', () => {
  it('reads only the admission keys of a stored set, expired exceptions kept', () => {
    const stored = {
      orders:
        'apiVersion: writ.dev/v1\nkind: AccessPolicy\nmetadata: { name: orders }\nspec: { to: "spiffe://x/y", rules: [{ effect: allow, from: "spiffe://x/z" }] }\n',
      'AdmissionPolicy/p': policy('  namespaces: [a]\n'),
      'AdmissionException/e': exception(EXC.replace('2027-01-01', '2020-01-01')),
    };
    const set = admissionSetOf(stored, NOW);
    assert.deepEqual(
      set.policies.map((p) => p.name),
      ['p'],
    );
    assert.deepEqual(
      set.exceptions.map((e) => e.name),
      ['e'],
    );
  });
});

describe('signatureRequirements', () => {
  it('reads file keys each time: a rotated key changes the fingerprint', () => {
    const [p] = parseAdmission(policy('  namespaces: [a]\n  images: { signatures: [{ name: k, keys: [{ file: /k.pub }] }] }\n')).policies;
    let current = P256;
    const read = (f: string): string => {
      assert.equal(f, '/k.pub');
      return current;
    };
    const a = signatureRequirements(p!.images!, read);
    assert.equal(a[0]!.keys[0]!.asymmetricKeyType, 'ec');
    assert.equal(signatureRequirements(p!.images!, read)[0]!.fingerprint, a[0]!.fingerprint);
    current = pem('ed25519');
    assert.notEqual(signatureRequirements(p!.images!, read)[0]!.fingerprint, a[0]!.fingerprint);
    current = 'garbage';
    assert.throws(() => signatureRequirements(p!.images!, read), /key file \/k.pub: not a PEM public key/);
  });
});
