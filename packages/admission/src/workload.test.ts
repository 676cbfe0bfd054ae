import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { parseAllDocuments } from 'yaml';
import { checkPodSecurity, podSecurityMessage } from './pss.ts';
import type { PodLike } from './types.ts';
import { POD_SPEC_KINDS, isSignificantPodUpdate, ownerName, podOf, podSecurityApplies, podSecurityTarget, workloadNames } from './workload.ts';

type Json = Record<string, unknown>;

const IMAGE = 'registry.example.com/team/app:1.4';
const RESTRICTED_SC = { allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] }, runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' } };

function podSpec(containers: Json[] = [{ name: 'app', image: IMAGE, securityContext: RESTRICTED_SC }]): Json {
  return { containers, restartPolicy: 'Always', dnsPolicy: 'ClusterFirst', terminationGracePeriodSeconds: 30 };
}

function template(annotations: Record<string, string> = {}): Json {
  return { metadata: { labels: { app: 'web' }, annotations }, spec: podSpec() };
}

/** A Pod as kube-apiserver sends it in an AdmissionReview for a Deployment's pod (name not yet generated). */
const deploymentPod: Json = {
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: {
    generateName: 'web-5d4f8c7b9-',
    namespace: 'prod',
    labels: { app: 'web', 'pod-template-hash': '5d4f8c7b9' },
    ownerReferences: [
      {
        apiVersion: 'apps/v1',
        kind: 'ReplicaSet',
        name: 'web-5d4f8c7b9',
        uid: 'b1d5b3e4-0c9e-4d0a-9b55-3f1b2b7d8a11',
        controller: true,
        blockOwnerDeletion: true,
      },
    ],
  },
  spec: podSpec(),
};

/** The AdmissionReview request kube-apiserver sends (admission.k8s.io/v1), with the fields PSA reads. */
function review(over: Json): Json {
  return {
    uid: '705ab4f5-6393-11e8-b7cc-42010a800002',
    kind: { group: '', version: 'v1', kind: 'Pod' },
    resource: { group: '', version: 'v1', resource: 'pods' },
    requestKind: { group: '', version: 'v1', kind: 'Pod' },
    requestResource: { group: '', version: 'v1', resource: 'pods' },
    name: '',
    namespace: 'prod',
    operation: 'CREATE',
    userInfo: { username: 'system:serviceaccount:kube-system:replicaset-controller', uid: 'c3f6', groups: ['system:serviceaccounts', 'system:authenticated'] },
    object: deploymentPod,
    oldObject: null,
    dryRun: false,
    options: { kind: 'CreateOptions', apiVersion: 'meta.k8s.io/v1' },
    ...over,
  };
}

describe('podOf', () => {
  const workloads: Array<[string, Json, string]> = [
    [
      'Deployment',
      {
        apiVersion: 'apps/v1',
        kind: 'Deployment',
        metadata: { name: 'web', namespace: 'prod' },
        spec: { replicas: 2, selector: { matchLabels: { app: 'web' } }, template: template() },
      },
      '/spec/template/spec',
    ],
    ['ReplicaSet', { metadata: { name: 'web-5d4f8c7b9', namespace: 'prod' }, spec: { template: template() } }, '/spec/template/spec'],
    ['ReplicationController', { metadata: { name: 'rc', namespace: 'prod' }, spec: { template: template() } }, '/spec/template/spec'],
    ['StatefulSet', { metadata: { name: 'db', namespace: 'prod' }, spec: { serviceName: 'db', template: template() } }, '/spec/template/spec'],
    ['DaemonSet', { metadata: { name: 'agent', namespace: 'prod' }, spec: { template: template() } }, '/spec/template/spec'],
    ['Job', { metadata: { name: 'migrate', namespace: 'prod' }, spec: { template: template() } }, '/spec/template/spec'],
    [
      'CronJob',
      { metadata: { name: 'backup', namespace: 'prod' }, spec: { schedule: '0 * * * *', jobTemplate: { spec: { template: template() } } } },
      '/spec/jobTemplate/spec/template/spec',
    ],
    ['PodTemplate', { metadata: { name: 'tpl', namespace: 'prod' }, template: template() }, '/template/spec'],
  ];

  for (const [kind, object, specPath] of workloads) {
    it(`${kind}: the template pod, at ${specPath}, owned by the ${kind}`, () => {
      const found = podOf(kind, object);
      assert.ok(found);
      assert.equal(found.specPath, specPath);
      // The pointer really points at the pod spec (the mutating webhook patches there).
      let at: unknown = object;
      for (const key of specPath.slice(1).split('/')) at = (at as Json)[key];
      assert.equal(at, found.pod.spec);
      assert.equal(found.pod.metadata?.namespace, 'prod');
      assert.deepEqual(found.pod.metadata?.labels, { app: 'web' });
      const name = (object.metadata as Json).name as string;
      assert.deepEqual(found.pod.metadata?.ownerReferences, [{ kind, name, controller: true }]);
      // A ReplicaSet named in the pod-template-hash form belongs to its Deployment.
      assert.equal(ownerName(found.pod), kind === 'ReplicaSet' ? 'web' : name);
    });
  }

  it('the kinds it knows are those PSA checks', () => {
    assert.deepEqual([...POD_SPEC_KINDS].sort(), [
      'CronJob',
      'DaemonSet',
      'Deployment',
      'Job',
      'Pod',
      'PodTemplate',
      'ReplicaSet',
      'ReplicationController',
      'StatefulSet',
    ]);
  });

  it('a Pod is its own pod, spec at /spec', () => {
    const found = podOf('Pod', deploymentPod);
    assert.equal(found?.pod, deploymentPod);
    assert.equal(found?.specPath, '/spec');
  });

  it('the template annotations are what PSS reads (AppArmor on a Deployment template)', () => {
    const deployment = {
      metadata: { name: 'web', namespace: 'prod', annotations: { 'container.apparmor.security.beta.kubernetes.io/app': 'runtime/default' } },
      spec: { template: template({ 'container.apparmor.security.beta.kubernetes.io/app': 'unconfined' }) },
    };
    const found = podOf('Deployment', deployment);
    assert.ok(found);
    assert.equal(
      podSecurityMessage(checkPodSecurity(found.pod, 'baseline', 'latest'), 'baseline', 'latest'),
      'violates PodSecurity "baseline:latest": forbidden AppArmor profile (annotation must not set AppArmor profile type to "container.apparmor.security.beta.kubernetes.io/app="unconfined"")',
    );
  });

  it('other kinds, workloads without a template and non-objects give undefined', () => {
    assert.equal(podOf('Service', { metadata: { name: 's' }, spec: {} }), undefined);
    assert.equal(podOf('Deployment', { metadata: { name: 'd' }, spec: {} }), undefined);
    assert.equal(podOf('CronJob', { metadata: { name: 'c' }, spec: { jobTemplate: {} } }), undefined);
    assert.equal(podOf('Pod', null), undefined);
    assert.equal(podOf('Pod', [1]), undefined);
    assert.equal(podOf('toString', {}), undefined);
    assert.equal(podOf('__proto__', {}), undefined);
  });

  it('never throws on random objects', () => {
    fc.assert(
      fc.property(fc.constantFrom(...POD_SPEC_KINDS, 'Other'), fc.jsonValue({ maxDepth: 5 }), (kind, object) => {
        const found = podOf(kind, object);
        if (found !== undefined) {
          workloadNames(found.pod);
          checkPodSecurity(found.pod, 'restricted', 'latest');
        }
      }),
      { numRuns: 500 },
    );
  });
});

describe('workload names for exceptions', () => {
  it('a Deployment pod is known by its ReplicaSet and its Deployment (name not generated yet at admission)', () => {
    assert.deepEqual(workloadNames(deploymentPod as PodLike), ['web-5d4f8c7b9', 'web']);
    assert.equal(ownerName(deploymentPod as PodLike), 'web');
    const named = { ...deploymentPod, metadata: { ...(deploymentPod.metadata as Json), name: 'web-5d4f8c7b9-x2x7q' } };
    assert.deepEqual(workloadNames(named as PodLike), ['web-5d4f8c7b9-x2x7q', 'web-5d4f8c7b9', 'web']);
  });

  it('without the pod-template-hash label, the ReplicaSet name is trimmed only when it ends in a hash of Kubernetes alphabet', () => {
    const pod = (rs: string): PodLike => ({ metadata: { name: 'p', ownerReferences: [{ kind: 'ReplicaSet', name: rs, controller: true }] } });
    assert.equal(ownerName(pod('api-7c9f6b8d5')), 'api');
    assert.equal(ownerName(pod('web-db')), 'web-db');
    assert.equal(ownerName(pod('frontend-cache')), 'frontend-cache');
  });

  it('StatefulSet and DaemonSet pods are known by their controller; a CronJob pod by its Job and the CronJob', () => {
    const sts: PodLike = { metadata: { name: 'db-0', ownerReferences: [{ kind: 'StatefulSet', name: 'db', controller: true }] } };
    assert.deepEqual(workloadNames(sts), ['db-0', 'db']);
    const cron: PodLike = { metadata: { name: 'backup-29032140-abcde', ownerReferences: [{ kind: 'Job', name: 'backup-29032140', controller: true }] } };
    assert.deepEqual(workloadNames(cron), ['backup-29032140-abcde', 'backup-29032140', 'backup']);
    const job: PodLike = { metadata: { name: 'migrate-2-xyz', ownerReferences: [{ kind: 'Job', name: 'migrate-2', controller: true }] } };
    assert.equal(ownerName(job), 'migrate-2');
  });

  it('a bare pod is known by its own name; a non-controller owner reference does not count when there are several', () => {
    assert.deepEqual(workloadNames({ metadata: { name: 'solo' } }), ['solo']);
    const many: PodLike = {
      metadata: {
        name: 'p',
        ownerReferences: [
          { kind: 'ConfigMap', name: 'x' },
          { kind: 'Node', name: 'y' },
        ],
      },
    };
    assert.deepEqual(workloadNames(many), ['p']);
    assert.deepEqual(workloadNames({}), []);
  });
});

describe('PSA request semantics', () => {
  it('pods and every pod subresource but exec, attach, binding, eviction, log, portforward, proxy, status', () => {
    const pods = { group: '', resource: 'pods' };
    assert.equal(podSecurityApplies(pods), true);
    assert.equal(podSecurityApplies(pods, 'ephemeralcontainers'), true);
    assert.equal(podSecurityApplies(pods, 'resize'), true);
    for (const sub of ['exec', 'attach', 'binding', 'eviction', 'log', 'portforward', 'proxy', 'status'])
      assert.equal(podSecurityApplies(pods, sub), false, sub);
  });

  it('workloads only without a subresource, and only in their API group', () => {
    assert.equal(podSecurityApplies({ group: 'apps', resource: 'deployments' }), true);
    assert.equal(podSecurityApplies({ group: 'apps', resource: 'deployments' }, 'scale'), false);
    assert.equal(podSecurityApplies({ group: 'batch', resource: 'cronjobs' }), true);
    assert.equal(podSecurityApplies({ group: '', resource: 'replicationcontrollers' }), true);
    assert.equal(podSecurityApplies({ group: '', resource: 'deployments' }), false);
    assert.equal(podSecurityApplies({ group: '', resource: 'services' }), false);
    assert.equal(podSecurityApplies({ group: 'constructor', resource: 'pods' }), false);
  });

  it('a Pod CREATE is checked, the pod being the object', () => {
    const target = podSecurityTarget(review({}));
    assert.equal(target.check, true);
    assert.equal(target.check && target.pod, deploymentPod);
  });

  it('a dryRun request is checked like any other (the verdict is what the user asks to see)', () => {
    assert.equal(podSecurityTarget(review({ dryRun: true })).check, true);
  });

  it('a Deployment CREATE is checked at its template', () => {
    const deployment = { apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name: 'web', namespace: 'prod' }, spec: { template: template() } };
    const target = podSecurityTarget(
      review({
        kind: { group: 'apps', version: 'v1', kind: 'Deployment' },
        resource: { group: 'apps', version: 'v1', resource: 'deployments' },
        name: 'web',
        object: deployment,
      }),
    );
    assert.ok(target.check);
    assert.equal(target.specPath, '/spec/template/spec');
    assert.equal(ownerName(target.pod), 'web');
  });

  it('deployments/scale, DELETE and CONNECT are not checked', () => {
    const scale = { kind: 'Scale', apiVersion: 'autoscaling/v1', metadata: { name: 'web' }, spec: { replicas: 3 } };
    assert.deepEqual(
      podSecurityTarget(
        review({
          kind: { group: 'autoscaling', version: 'v1', kind: 'Scale' },
          resource: { group: 'apps', version: 'v1', resource: 'deployments' },
          subResource: 'scale',
          operation: 'UPDATE',
          object: scale,
        }),
      ),
      { check: false, reason: 'subresource' },
    );
    assert.deepEqual(podSecurityTarget(review({ operation: 'DELETE', object: null, oldObject: deploymentPod })), { check: false, reason: 'operation' });
    assert.deepEqual(podSecurityTarget(review({ operation: 'CONNECT', subResource: 'exec' })), { check: false, reason: 'operation' });
    assert.deepEqual(podSecurityTarget(review({ subResource: 'status', operation: 'UPDATE' })), { check: false, reason: 'subresource' });
    assert.deepEqual(
      podSecurityTarget(review({ resource: { group: '', version: 'v1', resource: 'configmaps' }, kind: { group: '', version: 'v1', kind: 'ConfigMap' } })),
      { check: false, reason: 'resource' },
    );
  });

  it('an UPDATE that only changes labels or annotations is not checked (PSA lets it through)', () => {
    const updated = { ...deploymentPod, metadata: { ...(deploymentPod.metadata as Json), labels: { app: 'web', tier: 'gold' }, annotations: { note: 'x' } } };
    assert.deepEqual(podSecurityTarget(review({ operation: 'UPDATE', object: updated, oldObject: deploymentPod })), {
      check: false,
      reason: 'insignificant update',
    });
  });

  it('an UPDATE that changes an image is checked', () => {
    const spec = podSpec([{ name: 'app', image: 'registry.example.com/team/app:1.5', securityContext: RESTRICTED_SC }]);
    const updated = { ...deploymentPod, spec };
    assert.equal(podSecurityTarget(review({ operation: 'UPDATE', object: updated, oldObject: deploymentPod })).check, true);
  });

  it('pods/ephemeralcontainers: kubectl debug adds a container; the whole pod is checked and the debug container is named', () => {
    const debug = {
      name: 'debugger-7xk2p',
      image: 'busybox:1.36',
      stdin: true,
      tty: true,
      targetContainerName: 'app',
      terminationMessagePolicy: 'File',
      imagePullPolicy: 'IfNotPresent',
    };
    const updated = { ...deploymentPod, spec: { ...(deploymentPod.spec as Json), ephemeralContainers: [debug] } };
    const target = podSecurityTarget(
      review({
        operation: 'UPDATE',
        subResource: 'ephemeralcontainers',
        object: updated,
        oldObject: deploymentPod,
        options: { kind: 'UpdateOptions', apiVersion: 'meta.k8s.io/v1' },
      }),
    );
    assert.ok(target.check);
    const found = checkPodSecurity(target.pod, 'restricted', 'latest');
    assert.deepEqual([...new Set(found.map((v) => v.container))], ['debugger-7xk2p']);
    assert.equal(
      podSecurityMessage(found, 'restricted', 'latest'),
      'violates PodSecurity "restricted:latest": allowPrivilegeEscalation != false (container "debugger-7xk2p" must set securityContext.allowPrivilegeEscalation=false), ' +
        'unrestricted capabilities (container "debugger-7xk2p" must set securityContext.capabilities.drop=["ALL"]), ' +
        'runAsNonRoot != true (pod or container "debugger-7xk2p" must set securityContext.runAsNonRoot=true), ' +
        'seccompProfile (pod or container "debugger-7xk2p" must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")',
    );
  });
});

describe('isSignificantPodUpdate', () => {
  const base: { spec: Json } = {
    spec: { initContainers: [{ name: 'i', image: 'a:1' }], containers: [{ name: 'c', image: 'b:1' }], ephemeralContainers: [{ name: 'e', image: 'd:1' }] },
  };
  const withSpec = (spec: Json): PodLike => ({ spec: { ...base.spec, ...spec } });

  it('the same images and containers: not significant, even with other fields changed', () => {
    assert.equal(isSignificantPodUpdate(base, withSpec({ activeDeadlineSeconds: 5, tolerations: [{ key: 'k' }] })), false);
    assert.equal(isSignificantPodUpdate(base, { metadata: { labels: { a: 'b' } }, spec: base.spec }), false);
  });

  it('an image changed in any list, a container added or removed, an ephemeral container added: significant', () => {
    assert.equal(isSignificantPodUpdate(base, withSpec({ containers: [{ name: 'c', image: 'b:2' }] })), true);
    assert.equal(isSignificantPodUpdate(base, withSpec({ initContainers: [{ name: 'i', image: 'a:2' }] })), true);
    assert.equal(isSignificantPodUpdate(base, withSpec({ containers: [] })), true);
    assert.equal(
      isSignificantPodUpdate(
        base,
        withSpec({
          initContainers: [
            { name: 'i', image: 'a:1' },
            { name: 'j', image: 'a:1' },
          ],
        }),
      ),
      true,
    );
    assert.equal(
      isSignificantPodUpdate(
        base,
        withSpec({
          ephemeralContainers: [
            { name: 'e', image: 'd:1' },
            { name: 'f', image: 'd:1' },
          ],
        }),
      ),
      true,
    );
    assert.equal(isSignificantPodUpdate(base, withSpec({ ephemeralContainers: [{ name: 'e', image: 'd:2' }] })), true);
  });

  it('an ephemeral container moved in the list is not significant (matched by name)', () => {
    const two = withSpec({
      ephemeralContainers: [
        { name: 'e', image: 'd:1' },
        { name: 'f', image: 'x:1' },
      ],
    });
    assert.equal(
      isSignificantPodUpdate(
        two,
        withSpec({
          ephemeralContainers: [
            { name: 'f', image: 'x:1' },
            { name: 'e', image: 'd:1' },
          ],
        }),
      ),
      false,
    );
  });
});

describe("a multi-document YAML file of workloads (the offline check's input)", () => {
  const docs = parseAllDocuments(readFileSync(new URL('./testdata/workloads.yaml', import.meta.url), 'utf8')).map((d) => d.toJS() as Json);

  it('each document gives its pod, pointer, workload and PSA verdict', () => {
    const rows = docs.map((doc) => {
      const found = podOf(String(doc.kind), doc);
      assert.ok(found, String(doc.kind));
      return {
        kind: doc.kind,
        specPath: found.specPath,
        owner: ownerName(found.pod),
        namespace: found.pod.metadata?.namespace,
        baseline: podSecurityMessage(checkPodSecurity(found.pod, 'baseline', 'latest'), 'baseline', 'latest'),
        restricted: podSecurityMessage(checkPodSecurity(found.pod, 'restricted', 'v1.30'), 'restricted', 'v1.30'),
      };
    });
    assert.deepEqual(rows, [
      { kind: 'Deployment', specPath: '/spec/template/spec', owner: 'web', namespace: 'prod', baseline: '', restricted: '' },
      {
        kind: 'DaemonSet',
        specPath: '/spec/template/spec',
        owner: 'node-exporter',
        namespace: 'monitoring',
        baseline:
          'violates PodSecurity "baseline:latest": host namespaces (hostNetwork=true, hostPID=true), hostPath volumes (volume "proc"), hostPort (container "exporter" uses hostPort 9100)',
        restricted:
          'violates PodSecurity "restricted:v1.30": host namespaces (hostNetwork=true, hostPID=true), hostPort (container "exporter" uses hostPort 9100), ' +
          'allowPrivilegeEscalation != false (container "exporter" must set securityContext.allowPrivilegeEscalation=false), ' +
          'unrestricted capabilities (container "exporter" must set securityContext.capabilities.drop=["ALL"]), ' +
          'restricted volume types (volume "proc" uses restricted volume type "hostPath"), ' +
          'runAsNonRoot != true (pod or container "exporter" must set securityContext.runAsNonRoot=true), ' +
          'seccompProfile (pod or container "exporter" must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")',
      },
      {
        kind: 'CronJob',
        specPath: '/spec/jobTemplate/spec/template/spec',
        owner: 'backup',
        namespace: 'prod',
        baseline:
          'violates PodSecurity "baseline:latest": forbidden AppArmor profile (annotation must not set AppArmor profile type to "container.apparmor.security.beta.kubernetes.io/dump="unconfined""), ' +
          'non-default capabilities (container "dump" must not include "SYS_PTRACE" in securityContext.capabilities.add)',
        restricted:
          'violates PodSecurity "restricted:v1.30": forbidden AppArmor profile (annotation must not set AppArmor profile type to "container.apparmor.security.beta.kubernetes.io/dump="unconfined""), ' +
          'allowPrivilegeEscalation != false (container "dump" must set securityContext.allowPrivilegeEscalation=false), ' +
          'unrestricted capabilities (container "dump" must set securityContext.capabilities.drop=["ALL"]; container "dump" must not include "SYS_PTRACE" in securityContext.capabilities.add), ' +
          'runAsNonRoot != true (pod or container "dump" must set securityContext.runAsNonRoot=true), ' +
          'seccompProfile (pod or container "dump" must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")',
      },
      {
        // A Windows pod: restricted exempts it from allowPrivilegeEscalation, capabilities and seccomp (v1.25+), not from hostProcess.
        kind: 'Pod',
        specPath: '/spec',
        owner: 'debug-shell',
        namespace: 'dev',
        baseline:
          'violates PodSecurity "baseline:latest": host namespaces (hostNetwork=true), hostProcess (pod must not set securityContext.windowsOptions.hostProcess=true)',
        restricted:
          'violates PodSecurity "restricted:v1.30": host namespaces (hostNetwork=true), hostProcess (pod must not set securityContext.windowsOptions.hostProcess=true)',
      },
    ]);
  });
});
