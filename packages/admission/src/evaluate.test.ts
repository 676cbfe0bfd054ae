import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { describe, it } from 'node:test';
import type { ImageChecker, ImageRequirements, ImageVerdict } from '@writ/oci';
import { type AdmissionInput, evaluate } from './evaluate.ts';
import { type AdmissionSet, parseAdmission } from './model.ts';

const NOW = Date.parse('2026-12-01T00:00:00Z');
const D1 = `sha256:${'1'.repeat(64)}`;
const D2 = `sha256:${'2'.repeat(64)}`;

/** A container that passes restricted:latest, with overrides. */
const ctr = (name: string, extra: Record<string, unknown> = {}, sc: Record<string, unknown> = {}) => ({
  name,
  image: `registry.example.com/team/${name}@${D1}`,
  securityContext: { allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] }, runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' }, ...sc },
  ...extra,
});
const podSpec = (containers: unknown[], extra: Record<string, unknown> = {}) => ({ containers, ...extra });
const pod = (spec: Record<string, unknown>, meta: Record<string, unknown> = {}) => ({
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name: 'web', namespace: 'prod', ...meta },
  spec,
});
const privileged = () => podSpec([ctr('app', {}, { privileged: true })]);

const setOf = (yaml: string): AdmissionSet => parseAdmission(yaml, { now: NOW });
const policy = (name: string, spec: string) => `apiVersion: writ.dev/v1\nkind: AdmissionPolicy\nmetadata: { name: ${name} }\nspec:\n${spec}\n---\n`;
const exception = (name: string, spec: string, expires = '2027-03-01T00:00:00Z') =>
  `apiVersion: writ.dev/v1\nkind: AdmissionException\nmetadata: { name: ${name} }\nspec:\n${spec}\n  reason: "TICKET-1"\n  expires: ${expires}\n---\n`;
const input = (object: unknown, over: Partial<AdmissionInput> = {}): AdmissionInput => ({
  kind: 'Pod',
  namespace: 'prod',
  name: 'web',
  operation: 'CREATE',
  object,
  ...over,
});
const BASELINE = policy('base', '  namespaces: [prod, "team-*"]\n  podSecurity: { level: baseline, version: latest }');
const PRIV_MSG = 'privileged (container "app" must not set securityContext.privileged=true)';

describe('evaluate: Pod Security Standards', () => {
  it('denies a privileged pod in enforce mode with PSA’s message', async () => {
    const v = await evaluate(input(pod(privileged())), setOf(BASELINE), { now: NOW });
    assert.equal(v.allowed, false);
    assert.equal(v.message, `violates PodSecurity "baseline:latest": ${PRIV_MSG}`);
    assert.deepEqual(
      v.violations.map((x) => [x.control, x.container, x.policy, x.mode]),
      [['privileged', 'app', 'base', 'enforce']],
    );
    assert.equal(v.auditAnnotations['decision'], 'deny');
    assert.deepEqual(v.policies, ['base']);
  });

  it('aggregates the restricted findings of several containers as PSA does', async () => {
    const spec = podSpec([
      { name: 'a', image: 'x' },
      { name: 'b', image: 'x' },
    ]);
    const v = await evaluate(input(pod(spec)), setOf(policy('r', '  namespaces: [prod]\n  podSecurity: { level: restricted }')), { now: NOW });
    assert.equal(v.allowed, false);
    assert.match(
      v.message,
      /^violates PodSecurity "restricted:latest": allowPrivilegeEscalation != false \(containers "a", "b" must set securityContext.allowPrivilegeEscalation=false\), /,
    );
    assert.deepEqual(
      v.violations.filter((x) => x.control === 'allowPrivilegeEscalation').map((x) => x.container),
      ['a', 'b'],
    );
  });

  it('admits a pod that meets the level', async () => {
    const v = await evaluate(input(pod(podSpec([ctr('app')]))), setOf(policy('r', '  namespaces: [prod]\n  podSecurity: { level: restricted }')), { now: NOW });
    assert.deepEqual([v.allowed, v.message, v.violations], [true, '', []]);
    assert.equal(v.auditAnnotations['decision'], 'allow');
  });

  const template = (spec: unknown) => ({ metadata: { labels: { app: 'web' } }, spec });
  const workloads: Array<[string, (spec: unknown) => unknown]> = [
    ['Deployment', (s) => ({ spec: { template: template(s) } })],
    ['ReplicaSet', (s) => ({ spec: { template: template(s) } })],
    ['StatefulSet', (s) => ({ spec: { template: template(s) } })],
    ['DaemonSet', (s) => ({ spec: { template: template(s) } })],
    ['Job', (s) => ({ spec: { template: template(s) } })],
    ['CronJob', (s) => ({ spec: { schedule: '* * * * *', jobTemplate: { spec: { template: template(s) } } } })],
  ];
  for (const [kind, wrap] of workloads)
    it(`checks the pod template of a ${kind}`, async () => {
      const object = { apiVersion: 'apps/v1', kind, metadata: { name: 'web', namespace: 'prod' }, ...(wrap(privileged()) as object) };
      const v = await evaluate(input(object, { kind }), setOf(BASELINE), { now: NOW });
      assert.equal(v.allowed, false, kind);
      assert.equal(v.message, `violates PodSecurity "baseline:latest": ${PRIV_MSG}`);
      const ok = { apiVersion: 'apps/v1', kind, metadata: { name: 'web', namespace: 'prod' }, ...(wrap(podSpec([ctr('app')])) as object) };
      assert.equal((await evaluate(input(ok, { kind }), setOf(BASELINE), { now: NOW })).allowed, true, kind);
    });

  it('follows Kubernetes on what is not checked: DELETE, CONNECT, other subresources, other kinds, other namespaces', async () => {
    const set = setOf(BASELINE);
    for (const over of [
      { operation: 'DELETE' as const },
      { operation: 'CONNECT' as const },
      { subResource: 'status' },
      { subResource: 'exec', operation: 'CONNECT' as const },
      { kind: 'Deployment', subResource: 'scale' },
      { namespace: 'dev' },
      { namespace: 'teams' },
      { kind: 'ConfigMap' },
    ])
      assert.equal((await evaluate(input(pod(privileged()), over), set, { now: NOW })).allowed, true, JSON.stringify(over));
    assert.equal((await evaluate(input(pod(privileged()), { namespace: 'team-a' }), set, { now: NOW })).allowed, false);
  });

  it('an UPDATE that changes only labels is allowed; one that changes the spec is checked', async () => {
    const set = setOf(BASELINE);
    const old = pod(privileged(), { labels: { v: '1' } });
    const relabelled = pod(privileged(), { labels: { v: '2' } });
    assert.equal((await evaluate(input(relabelled, { operation: 'UPDATE', oldObject: old }), set, { now: NOW })).allowed, true);
    const changed = pod(podSpec([ctr('app', { image: 'other' }, { privileged: true })]));
    assert.equal((await evaluate(input(changed, { operation: 'UPDATE', oldObject: old }), set, { now: NOW })).allowed, false);
  });

  it('a workload UPDATE that leaves the pod template as it was is allowed; one that changes it is checked', async () => {
    const deployment = (replicas: number, spec: unknown) => ({ kind: 'Deployment', metadata: { name: 'web' }, spec: { replicas, template: { spec } } });
    const set = setOf(BASELINE);
    const scaled = await evaluate(
      input(deployment(3, privileged()), { kind: 'Deployment', operation: 'UPDATE', oldObject: deployment(1, privileged()) }),
      set,
      { now: NOW },
    );
    assert.equal(scaled.allowed, true);
    const changed = await evaluate(
      input(deployment(1, privileged()), { kind: 'Deployment', operation: 'UPDATE', oldObject: deployment(1, podSpec([ctr('app')])) }),
      set,
      { now: NOW },
    );
    assert.equal(changed.allowed, false);
  });

  it('checks ephemeral containers added through pods/ephemeralcontainers', async () => {
    const before = pod(podSpec([ctr('app')]));
    const after = pod(podSpec([ctr('app')], { ephemeralContainers: [{ name: 'debug', image: 'busybox', securityContext: { privileged: true } }] }));
    const v = await evaluate(input(after, { operation: 'UPDATE', oldObject: before, subResource: 'ephemeralcontainers' }), setOf(BASELINE), { now: NOW });
    assert.equal(v.allowed, false);
    assert.deepEqual(
      v.violations.map((x) => [x.control, x.container]),
      [['privileged', 'debug']],
    );
  });
});

describe('evaluate: modes and several policies', () => {
  it('warn: allowed with PSA-worded warnings; audit: allowed, only in the annotations', async () => {
    const warn = await evaluate(input(pod(privileged())), setOf(policy('w', '  namespaces: [prod]\n  mode: warn\n  podSecurity: { level: baseline }')), {
      now: NOW,
    });
    assert.deepEqual([warn.allowed, warn.warnings, warn.violations.length], [true, [`would violate PodSecurity "baseline:latest": ${PRIV_MSG}`], 0]);
    assert.equal(warn.findings.length, 1);
    const audit = await evaluate(input(pod(privileged())), setOf(policy('a', '  namespaces: [prod]\n  mode: audit\n  podSecurity: { level: baseline }')), {
      now: NOW,
    });
    assert.deepEqual([audit.allowed, audit.warnings], [true, []]);
    assert.equal(audit.auditAnnotations['audit-violations'], `would violate PodSecurity "baseline:latest": ${PRIV_MSG}`);
  });

  it('every matching policy applies: enforce baseline denies, warn restricted warns, pinned versions in the text', async () => {
    const set = setOf(
      `${BASELINE}${policy('strict', '  namespaces: ["*"]\n  mode: warn\n  podSecurity: { level: restricted, version: v1.30 }')}${policy('other', '  namespaces: [dev]\n  podSecurity: { level: restricted }')}`,
    );
    const v = await evaluate(input(pod(privileged())), set, { now: NOW });
    assert.deepEqual(v.policies, ['base', 'strict']);
    assert.equal(v.allowed, false);
    assert.equal(v.message, `violates PodSecurity "baseline:latest": ${PRIV_MSG}`);
    assert.equal(v.warnings.length, 1);
    assert.match(v.warnings[0]!, /^would violate PodSecurity "restricted:v1.30": privileged \(container "app" must not set securityContext.privileged=true\)/);
  });
});

describe('evaluate: require', () => {
  const set = setOf(policy('req', '  namespaces: [prod]\n  require: { resourceLimits: true, readOnlyRootFilesystem: true, runtimeClassNames: [kata] }'));
  it('limits on every container, a read-only root filesystem, an allowed runtime class', async () => {
    const spec = podSpec([ctr('app', { resources: { limits: { cpu: '1' } } }, { readOnlyRootFilesystem: true }), ctr('side')], {
      initContainers: [ctr('init', { resources: { limits: { cpu: '1', memory: '1Gi' } } }, { readOnlyRootFilesystem: true })],
    });
    const v = await evaluate(input(pod(spec)), set, { now: NOW });
    assert.deepEqual(
      v.violations.map((x) => x.message),
      [
        'resource limits unset (container "app" must set resources.limits.memory)',
        'resource limits unset (container "side" must set resources.limits.cpu, resources.limits.memory)',
        'readOnlyRootFilesystem != true (container "side" must set securityContext.readOnlyRootFilesystem=true)',
        'runtimeClassName not allowed (pod must set spec.runtimeClassName to one of "kata")',
      ],
    );
    assert.equal(v.message, `violates AdmissionPolicy "req": ${v.violations.map((x) => x.message).join(', ')}`);
    const good = podSpec([ctr('app', { resources: { limits: { cpu: '1', memory: '1Gi' } } }, { readOnlyRootFilesystem: true })], { runtimeClassName: 'kata' });
    assert.equal((await evaluate(input(pod(good)), set, { now: NOW })).allowed, true);
    const runc = await evaluate(input(pod({ ...good, runtimeClassName: 'runc' })), set, { now: NOW });
    assert.deepEqual(
      runc.violations.map((x) => x.message),
      ['runtimeClassName not allowed (runtimeClassName "runc" is not one of "kata")'],
    );
  });
});

/** An ImageChecker that resolves `NAME:tag` to a digest, says who signed what, and counts its calls. */
class FakeChecker implements ImageChecker {
  calls: string[] = [];
  readonly digests: Record<string, string>;
  readonly signed: Record<string, string[]>;
  readonly behaviour: 'ok' | 'hang' | 'throw';
  constructor(digests: Record<string, string>, signed: Record<string, string[]> = {}, behaviour: 'ok' | 'hang' | 'throw' = 'ok') {
    this.digests = digests;
    this.signed = signed;
    this.behaviour = behaviour;
  }
  check(image: string, req: ImageRequirements, signal?: AbortSignal): Promise<ImageVerdict> {
    this.calls.push(image);
    if (this.behaviour === 'hang') return new Promise(() => {});
    if (this.behaviour === 'throw') return Promise.reject(new Error('registry.example.com: connection refused'));
    void signal;
    const name = image.split('@')[0]!.replace(/:[^/:]*$/, '');
    const digest = image.includes('@') ? image.split('@')[1]! : this.digests[image];
    if (!digest) return Promise.resolve({ image, violations: [{ control: 'imageResolve', message: `image "${image}" not found` }], signedBy: [] });
    const problems = [];
    if (req.requireDigest && !image.includes('@')) problems.push({ control: 'imageDigest', message: `image "${image}" is not pinned by digest` });
    const signedBy = req.signatures.filter((s) => this.signed[digest]?.includes(s.name)).map((s) => s.name);
    for (const s of req.signatures)
      if (!signedBy.includes(s.name)) problems.push({ control: 'imageSignature', message: `image "${image}" is not signed by "${s.name}"` });
    return Promise.resolve({ image, digest, pinned: `${name}@${digest}`, violations: problems, signedBy });
  }
}

const KEY = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'pem' }).toString();
const IMAGES = policy(
  'img',
  `  namespaces: [prod]\n  images:\n    requireDigest: true\n    registries: ["registry.example.com/team/"]\n    signatures: [{ name: release, keys: [{ file: /etc/writ/cosign.pub }] }]`,
);
const readKeyFile = (f: string): string => {
  assert.equal(f, '/etc/writ/cosign.pub');
  return KEY;
};

describe('evaluate: images', () => {
  it('offline: digests and registries from the references; signatures need a registry', async () => {
    const set = setOf(policy('img', '  namespaces: [prod]\n  images: { requireDigest: true, registries: ["registry.example.com/team/"] }'));
    const spec = podSpec([
      { name: 'a', image: 'nginx:1.25' },
      { name: 'b', image: `registry.example.com/team/b@${D1}` },
      { name: 'c', image: 'registry.example.com/teamx/c:1' },
    ]);
    const v = await evaluate(input(pod(spec)), set, { now: NOW });
    assert.deepEqual(
      v.violations.map((x) => [x.control, x.container]),
      [
        ['imageDigest', 'a'],
        ['imageRegistry', 'a'],
        ['imageDigest', 'c'],
        ['imageRegistry', 'c'],
      ],
    );
    const sig = await evaluate(input(pod(podSpec([ctr('b')]))), setOf(IMAGES), { now: NOW, readKeyFile });
    assert.deepEqual(
      sig.violations.map((x) => x.control),
      ['imageSignature'],
    );
  });

  it('with a checker: signed digests pass, one check per image, the mutating hook gets a JSONPatch to the digests', async () => {
    const tag = 'registry.example.com/team/app:1.0';
    const checker = new FakeChecker({ [tag]: D2 }, { [D2]: ['release'], [D1]: ['release'] });
    const spec = podSpec([ctr('app', { image: tag }), ctr('side', { image: tag })], { initContainers: [ctr('init')] });
    const validate = await evaluate(input(pod(spec)), setOf(IMAGES), { now: NOW, images: checker, readKeyFile });
    assert.deepEqual(
      validate.violations.map((x) => [x.control, x.container]),
      [
        ['imageDigest', 'app'],
        ['imageDigest', 'side'],
      ],
    );
    assert.deepEqual(checker.calls.sort(), [tag, `registry.example.com/team/init@${D1}`]);
    const mutate = await evaluate(input(pod(spec)), setOf(IMAGES), { now: NOW, images: checker, readKeyFile, pinTags: true });
    assert.equal(mutate.allowed, true);
    assert.deepEqual(mutate.patch, [
      { op: 'replace', path: '/spec/containers/0/image', value: `registry.example.com/team/app@${D2}` },
      { op: 'replace', path: '/spec/containers/1/image', value: `registry.example.com/team/app@${D2}` },
    ]);
    assert.deepEqual(
      mutate.images.find((i) => i.image === tag),
      { image: tag, digest: D2, pinned: `registry.example.com/team/app@${D2}`, signedBy: ['release'] },
    );
    assert.match(mutate.auditAnnotations['images']!, new RegExp(`registry.example.com/team/app:1.0=${D2}`));
  });

  it('a deployment template is patched at its own path', async () => {
    const tag = 'registry.example.com/team/app:1.0';
    const object = { kind: 'Deployment', metadata: { name: 'web' }, spec: { template: { spec: podSpec([ctr('app', { image: tag })]) } } };
    const v = await evaluate(input(object, { kind: 'Deployment' }), setOf(IMAGES), {
      now: NOW,
      images: new FakeChecker({ [tag]: D2 }, { [D2]: ['release'] }),
      readKeyFile,
      pinTags: true,
    });
    assert.deepEqual(v.patch, [{ op: 'replace', path: '/spec/template/spec/containers/0/image', value: `registry.example.com/team/app@${D2}` }]);
  });

  it('an unsigned image is denied, saying by whom it must be signed', async () => {
    const v = await evaluate(input(pod(podSpec([ctr('app')]))), setOf(IMAGES), { now: NOW, images: new FakeChecker({}), readKeyFile });
    assert.equal(v.allowed, false);
    assert.equal(v.message, `violates AdmissionPolicy "img": image "registry.example.com/team/app@${D1}" is not signed by "release" (container "app")`);
  });

  // The checker never answers: a verdict at all means the budget ended the wait.
  it('a registry that does not answer within the budget denies in enforce mode when the budget ends', async () => {
    const v = await evaluate(input(pod(podSpec([ctr('app')]))), setOf(IMAGES), {
      now: NOW,
      images: new FakeChecker({}, {}, 'hang'),
      readKeyFile,
      signal: AbortSignal.timeout(100),
    });
    assert.equal(v.allowed, false);
    assert.deepEqual(
      v.violations.map((x) => x.control),
      ['imageResolve'],
    );
    assert.match(v.message, /could not be checked: the decision budget ran out before the registry answered/);
  });

  it('a checker error is a violation naming it; a key file that cannot be read is one too', async () => {
    const v = await evaluate(input(pod(podSpec([ctr('app')]))), setOf(IMAGES), { now: NOW, images: new FakeChecker({}, {}, 'throw'), readKeyFile });
    assert.match(v.message, /could not be checked: registry.example.com: connection refused \(container "app"\)/);
    const noKey = await evaluate(input(pod(podSpec([ctr('app')]))), setOf(IMAGES), { now: NOW, images: new FakeChecker({}) });
    assert.equal(noKey.allowed, false);
    assert.match(noKey.message, /the signature keys of AdmissionPolicy "img" cannot be used: key file \/etc\/writ\/cosign.pub cannot be read here/);
  });
});

describe('evaluate: exceptions', () => {
  // node-exporter: a DaemonSet's pod with a hostPath volume and the host's PID namespace.
  const exporter = (containers = [ctr('exporter', { image: `registry.example.com/team/exporter@${D1}` })]) =>
    pod(podSpec(containers, { hostPID: true, volumes: [{ name: 'proc', hostPath: { path: '/proc' } }] }), {
      name: 'node-exporter-x7k2p',
      namespace: 'monitoring',
      ownerReferences: [{ apiVersion: 'apps/v1', kind: 'DaemonSet', name: 'node-exporter', controller: true, uid: 'u' }],
    });
  const MON = policy('mon', '  namespaces: [monitoring]\n  podSecurity: { level: baseline }');
  const EXC = exception(
    'legacy',
    `  namespaces: [monitoring]\n  workloads: [node-exporter]\n  containers: [exporter]\n  controls: [hostPathVolumes, hostNamespaces]\n  images: ["${D1}"]\n  owner: platform-team`,
  );
  const run = (object: unknown, text: string, now = NOW) =>
    evaluate(input(object, { namespace: 'monitoring', name: (object as { metadata: { name: string } }).metadata.name }), setOf(text), { now });

  it('without it the pod is denied; with it admitted, and the verdict says which exception waived what', async () => {
    assert.equal((await run(exporter(), MON)).allowed, false);
    const v = await run(exporter(), MON + EXC);
    assert.equal(v.allowed, true, v.message);
    assert.deepEqual(v.exceptionsUsed, [{ name: 'legacy', controls: ['hostNamespaces', 'hostPathVolumes'], containers: [] }]);
    assert.equal(v.auditAnnotations['exceptions'], 'legacy');
  });

  it('under restricted, the hostPath volume is a restrictedVolumes finding, and the exception for hostPathVolumes still waives it', async () => {
    const restricted = policy('mon', '  namespaces: [monitoring]\n  podSecurity: { level: restricted }');
    const before = await run(exporter(), restricted);
    assert.ok(before.violations.some((v) => v.control === 'restrictedVolumes'));
    const v = await run(exporter(), restricted + EXC);
    assert.ok(!v.violations.some((x) => x.control === 'restrictedVolumes' || x.control === 'hostNamespaces'), v.message);
    assert.ok(v.exceptionsUsed.some((u) => u.name === 'legacy' && u.controls.includes('restrictedVolumes')));
  });

  it('expired at deps.now: no effect at all', async () => {
    const v = await run(exporter(), MON + EXC, Date.parse('2027-03-01T00:00:00Z'));
    assert.equal(v.allowed, false);
    assert.deepEqual(v.exceptionsUsed, []);
    assert.equal((await run(exporter(), MON + EXC, Date.parse('2027-02-28T23:59:59Z'))).allowed, true);
  });

  const misses: Array<[string, string]> = [
    ['namespace', EXC.replace('namespaces: [monitoring]', 'namespaces: [other]')],
    ['workload', EXC.replace('workloads: [node-exporter]', 'workloads: [node-exporter-2]')],
    ['container', EXC.replace('containers: [exporter]', 'containers: [other]')],
    ['image digest', EXC.replace(D1, D2)],
    ['control', EXC.replace('controls: [hostPathVolumes, hostNamespaces]', 'controls: [hostPathVolumes]')],
  ];
  for (const [scope, text] of misses)
    it(`does not apply when its ${scope} does not match`, async () => {
      const v = await run(exporter(), MON + text);
      assert.equal(v.allowed, false);
    });

  it('a pod-level waiver needs every container of the pod in scope: a new sidecar is not waived in', async () => {
    const v = await run(exporter([ctr('exporter', { image: `registry.example.com/team/exporter@${D1}` }), ctr('sidecar')]), MON + EXC);
    assert.equal(v.allowed, false);
  });

  it('matches the workload through the ReplicaSet of a Deployment, and the pod name itself', async () => {
    const p = pod(podSpec([ctr('app', {}, { privileged: true })]), {
      name: 'web-7d9c4b8f6-abcde',
      namespace: 'monitoring',
      ownerReferences: [{ apiVersion: 'apps/v1', kind: 'ReplicaSet', name: 'web-7d9c4b8f6', controller: true, uid: 'u' }],
    });
    for (const w of ['web', 'web-7d9c4b8f6-abcde'])
      assert.equal((await run(p, MON + exception('e', `  namespaces: [monitoring]\n  workloads: [${w}]\n  controls: [privileged]`))).allowed, true, w);
  });

  it('a prefix covers both levels of a control; container-level waivers are per container', async () => {
    const spec = podSpec([
      ctr('a', {}, { capabilities: { add: ['NET_ADMIN'], drop: ['ALL'] } }),
      ctr('b', {}, { capabilities: { add: ['NET_ADMIN'], drop: ['ALL'] } }),
    ]);
    // restricted's capabilities check replaces baseline's: a baseline policy beside it finds the other.
    const set =
      policy('r', '  namespaces: [monitoring]\n  podSecurity: { level: restricted }') +
      policy('b', '  namespaces: [monitoring]\n  podSecurity: { level: baseline }');
    const both = await run(pod(spec, { namespace: 'monitoring' }), set + exception('caps', '  namespaces: [monitoring]\n  controls: [capabilities]'));
    assert.equal(both.allowed, true, both.message);
    assert.deepEqual(both.exceptionsUsed, [{ name: 'caps', controls: ['capabilities_baseline', 'capabilities_restricted'], containers: ['a', 'b'] }]);
    const onlyA = await run(
      pod(spec, { namespace: 'monitoring' }),
      set + exception('caps', '  namespaces: [monitoring]\n  containers: [a]\n  controls: [capabilities]'),
    );
    assert.equal(onlyA.allowed, false);
    assert.deepEqual([...new Set(onlyA.violations.map((x) => x.container))], ['b']);
    assert.match(onlyA.message, /unrestricted capabilities \(container "b" must/);
    assert.doesNotMatch(onlyA.message, /container "a"/);
  });

  it('waives Writ controls too, in warn mode as in enforce mode', async () => {
    const text = policy('req', '  namespaces: [monitoring]\n  mode: warn\n  require: { readOnlyRootFilesystem: true }');
    const p = pod(podSpec([ctr('app')]), { namespace: 'monitoring' });
    assert.equal((await run(p, text)).warnings.length, 1);
    const v = await run(p, text + exception('rw', '  namespaces: [monitoring]\n  controls: [readOnlyRootFilesystem]'));
    assert.deepEqual(v.warnings, []);
    assert.deepEqual(v.exceptionsUsed, [{ name: 'rw', controls: ['readOnlyRootFilesystem'], containers: ['app'] }]);
  });
});

describe('evaluate: registry prefixes offline, as the verifier reads them', () => {
  it('a prefix ending in / is a path prefix; another is a whole name or path segment', async () => {
    const run = async (prefix: string, image: string) =>
      (
        await evaluate(input(pod(podSpec([{ name: 'a', image }]))), setOf(policy('r', `  namespaces: [prod]\n  images: { registries: ["${prefix}"] }`)), {
          now: NOW,
        })
      ).allowed;
    assert.equal(await run('registry.example.com/team/', 'registry.example.com/team/app:1'), true);
    assert.equal(await run('registry.example.com/team', 'registry.example.com/team/app:1'), true);
    assert.equal(await run('registry.example.com/team', 'registry.example.com/teamx/app:1'), false);
    assert.equal(await run('docker.io/library/', 'nginx'), true);
    assert.equal(await run('localhost:5000/', `localhost:5000/app@sha256:${'1'.repeat(64)}`), true);
    assert.equal(await run('[::1]:5000/', '[::1]:5000/app:1'), true);
  });

  it('a digest of the wrong length or in uppercase is refused as malformed, not taken for a tag', async () => {
    for (const image of [`registry.example.com/team/a@sha256:${'1'.repeat(63)}`, `registry.example.com/team/a@sha256:${'A'.repeat(64)}`]) {
      const v = await evaluate(
        input(pod(podSpec([{ name: 'a', image }]))),
        setOf(policy('r', '  namespaces: [prod]\n  images: { registries: ["registry.example.com/"] }')),
        { now: NOW },
      );
      assert.equal(v.violations.length, 1);
      assert.equal(v.violations[0]!.control, 'imageDigest');
      assert.match(v.violations[0]!.message, /^image "[^"]+" is not a valid image reference: .*digest.* \(container "a"\)$/);
    }
  });
});
