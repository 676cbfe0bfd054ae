/**
 * The AdmissionReviews of the admission benchmark, shaped as kube-apiserver sends them to a
 * validating webhook: admission.k8s.io/v1, the object after defaulting (imagePullPolicy,
 * terminationMessagePath, dnsPolicy, ... as the API server fills them in), userInfo of the
 * controller that creates it, CreateOptions. Nine kinds of request, allowed and denied under
 * "restricted:latest", Pods and every workload kind, an ephemeral-container UPDATE and a Windows pod.
 */

type Json = Record<string, unknown>;

const restrictedContainerSc = {
  allowPrivilegeEscalation: false,
  capabilities: { drop: ['ALL'] },
  runAsNonRoot: true,
  seccompProfile: { type: 'RuntimeDefault' },
};

/** A container as the API server has defaulted it. */
function container(name: string, image: string, extra: Json = {}): Json {
  return {
    name,
    image,
    ports: [{ name: 'http', containerPort: 8080, protocol: 'TCP' }],
    env: [
      { name: 'LOG_LEVEL', value: 'info' },
      { name: 'POD_NAME', valueFrom: { fieldRef: { apiVersion: 'v1', fieldPath: 'metadata.name' } } },
    ],
    resources: { limits: { cpu: '500m', memory: '256Mi' }, requests: { cpu: '100m', memory: '128Mi' } },
    volumeMounts: [{ name: 'kube-api-access', readOnly: true, mountPath: '/var/run/secrets/kubernetes.io/serviceaccount' }],
    livenessProbe: {
      httpGet: { path: '/healthz', port: 8080, scheme: 'HTTP' },
      timeoutSeconds: 1,
      periodSeconds: 10,
      successThreshold: 1,
      failureThreshold: 3,
    },
    terminationMessagePath: '/dev/termination-log',
    terminationMessagePolicy: 'File',
    imagePullPolicy: 'IfNotPresent',
    ...extra,
  };
}

const projectedToken = {
  name: 'kube-api-access',
  projected: {
    sources: [
      { serviceAccountToken: { expirationSeconds: 3607, path: 'token' } },
      { configMap: { name: 'kube-root-ca.crt', items: [{ key: 'ca.crt', path: 'ca.crt' }] } },
      { downwardAPI: { items: [{ path: 'namespace', fieldRef: { apiVersion: 'v1', fieldPath: 'metadata.namespace' } }] } },
    ],
    defaultMode: 420,
  },
};

function podSpec(containers: Json[], extra: Json = {}): Json {
  return {
    volumes: [projectedToken],
    containers,
    restartPolicy: 'Always',
    terminationGracePeriodSeconds: 30,
    dnsPolicy: 'ClusterFirst',
    serviceAccountName: 'default',
    serviceAccount: 'default',
    securityContext: {},
    schedulerName: 'default-scheduler',
    tolerations: [
      { key: 'node.kubernetes.io/not-ready', operator: 'Exists', effect: 'NoExecute', tolerationSeconds: 300 },
      { key: 'node.kubernetes.io/unreachable', operator: 'Exists', effect: 'NoExecute', tolerationSeconds: 300 },
    ],
    priority: 0,
    enableServiceLinks: true,
    preemptionPolicy: 'PreemptLowerPriority',
    ...extra,
  };
}

const GVK: Record<string, { group: string; version: string; resource: string }> = {
  Pod: { group: '', version: 'v1', resource: 'pods' },
  Deployment: { group: 'apps', version: 'v1', resource: 'deployments' },
  StatefulSet: { group: 'apps', version: 'v1', resource: 'statefulsets' },
  DaemonSet: { group: 'apps', version: 'v1', resource: 'daemonsets' },
  CronJob: { group: 'batch', version: 'v1', resource: 'cronjobs' },
};

function review(kind: string, namespace: string, name: string, object: Json, extra: Json = {}): Json {
  const g = GVK[kind]!;
  const k = { group: g.group, version: g.version, kind };
  const r = { group: g.group, version: g.version, resource: g.resource };
  return {
    kind: 'AdmissionReview',
    apiVersion: 'admission.k8s.io/v1',
    request: {
      uid: '00000000-0000-4000-8000-000000000000',
      kind: k,
      resource: r,
      requestKind: k,
      requestResource: r,
      name,
      namespace,
      operation: 'CREATE',
      userInfo: {
        username: kind === 'Pod' ? 'system:serviceaccount:kube-system:replicaset-controller' : 'alice@example.com',
        uid: 'c7e2f1a4-5b3d-4e8f-9a6b-1d2c3e4f5a6b',
        groups: kind === 'Pod' ? ['system:serviceaccounts', 'system:serviceaccounts:kube-system', 'system:authenticated'] : ['system:authenticated'],
      },
      object,
      oldObject: null,
      dryRun: false,
      options: { kind: 'CreateOptions', apiVersion: 'meta.k8s.io/v1' },
      ...extra,
    },
  };
}

const meta = (name: string, namespace: string, extra: Json = {}): Json => ({
  name,
  namespace,
  uid: 'a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d',
  creationTimestamp: null,
  labels: { app: name, 'app.kubernetes.io/part-of': 'shop' },
  ...extra,
});

const workload = (kind: string, namespace: string, name: string, spec: Json, template: Json): Json =>
  review(kind, namespace, name, {
    kind,
    apiVersion: `${GVK[kind]!.group}/v1`,
    metadata: { ...meta(name, namespace), generation: 1, annotations: { 'deployment.kubernetes.io/revision': '1' } },
    spec: { ...spec, template: { metadata: { creationTimestamp: null, labels: { app: name } }, spec: template } },
    status: {},
  });

/** One request of each kind, every image = `image`; `allowed` is what restricted:latest answers. */
export function corpus(image: string): Array<{ label: string; allowed: boolean; review: Json }> {
  const restricted = (name: string, extra: Json = {}): Json => container(name, image, { securityContext: restrictedContainerSc, ...extra });
  const pod = (name: string, namespace: string, spec: Json, extraMeta: Json = {}): Json => ({
    kind: 'Pod',
    apiVersion: 'v1',
    metadata: {
      ...meta(name, namespace, extraMeta),
      generateName: `${name.replace(/-[a-z0-9]+$/, '')}-`,
      ownerReferences: [
        {
          apiVersion: 'apps/v1',
          kind: 'ReplicaSet',
          name: name.replace(/-[a-z0-9]+$/, ''),
          uid: 'f0e1d2c3-b4a5-4968-8776-655443322110',
          controller: true,
          blockOwnerDeletion: true,
        },
      ],
    },
    spec,
    status: { phase: 'Pending', qosClass: 'Burstable' },
  });
  const restrictedPodSc = { runAsNonRoot: true, runAsUser: 10001, fsGroup: 10001, seccompProfile: { type: 'RuntimeDefault' } };
  return [
    {
      label: 'Pod, restricted',
      allowed: true,
      review: review('Pod', 'prod', 'web-7d4b9c-x2x1k', pod('web-7d4b9c-x2x1k', 'prod', podSpec([restricted('web')], { securityContext: restrictedPodSc }))),
    },
    {
      label: 'Deployment, restricted, 2 containers + init',
      allowed: true,
      review: workload(
        'Deployment',
        'prod',
        'checkout',
        {
          replicas: 3,
          selector: { matchLabels: { app: 'checkout' } },
          strategy: { type: 'RollingUpdate', rollingUpdate: { maxUnavailable: '25%', maxSurge: '25%' } },
          revisionHistoryLimit: 10,
          progressDeadlineSeconds: 600,
        },
        podSpec([restricted('checkout'), restricted('metrics', { ports: [{ name: 'metrics', containerPort: 9090, protocol: 'TCP' }] })], {
          initContainers: [restricted('migrate', { livenessProbe: undefined })],
          securityContext: restrictedPodSc,
        }),
      ),
    },
    {
      label: 'Pod, no securityContext (baseline only)',
      allowed: false,
      review: review('Pod', 'team-a', 'legacy-5c8f7-abcde', pod('legacy-5c8f7-abcde', 'team-a', podSpec([container('legacy', image)]))),
    },
    {
      label: 'DaemonSet, hostPath + host namespaces + hostPort',
      allowed: false,
      review: workload(
        'DaemonSet',
        'monitoring',
        'node-exporter',
        {
          selector: { matchLabels: { app: 'node-exporter' } },
          updateStrategy: { type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 1, maxSurge: 0 } },
          revisionHistoryLimit: 10,
        },
        podSpec(
          [
            restricted('exporter', {
              ports: [{ name: 'metrics', containerPort: 9100, hostPort: 9100, protocol: 'TCP' }],
              volumeMounts: [
                { name: 'proc', readOnly: true, mountPath: '/host/proc' },
                { name: 'sys', readOnly: true, mountPath: '/host/sys' },
              ],
            }),
          ],
          {
            hostNetwork: true,
            hostPID: true,
            volumes: [{ name: 'proc', hostPath: { path: '/proc', type: '' } }, { name: 'sys', hostPath: { path: '/sys', type: '' } }, projectedToken],
            securityContext: restrictedPodSc,
          },
        ),
      ),
    },
    {
      label: 'Pod, privileged init container + SYS_ADMIN',
      allowed: false,
      review: review(
        'Pod',
        'team-b',
        'agent-6f9d8-q7w8e',
        pod(
          'agent-6f9d8-q7w8e',
          'team-b',
          podSpec([restricted('agent')], {
            initContainers: [container('setup', image, { securityContext: { privileged: true, capabilities: { add: ['SYS_ADMIN', 'NET_ADMIN'] } } })],
            securityContext: restrictedPodSc,
          }),
        ),
      ),
    },
    {
      label: 'CronJob, restricted',
      allowed: true,
      review: review('CronJob', 'prod', 'nightly-report', {
        kind: 'CronJob',
        apiVersion: 'batch/v1',
        metadata: meta('nightly-report', 'prod'),
        spec: {
          schedule: '0 3 * * *',
          concurrencyPolicy: 'Forbid',
          suspend: false,
          successfulJobsHistoryLimit: 3,
          failedJobsHistoryLimit: 1,
          jobTemplate: {
            metadata: { creationTimestamp: null },
            spec: {
              backoffLimit: 6,
              template: {
                metadata: { creationTimestamp: null },
                spec: podSpec([restricted('report')], { restartPolicy: 'OnFailure', securityContext: restrictedPodSc }),
              },
            },
          },
        },
        status: {},
      }),
    },
    {
      label: 'StatefulSet, runAsUser 0 + unconfined seccomp',
      allowed: false,
      review: workload(
        'StatefulSet',
        'prod',
        'db',
        {
          replicas: 1,
          selector: { matchLabels: { app: 'db' } },
          serviceName: 'db',
          podManagementPolicy: 'OrderedReady',
          updateStrategy: { type: 'RollingUpdate', rollingUpdate: { partition: 0 } },
        },
        podSpec(
          [
            restricted('postgres', {
              securityContext: { ...restrictedContainerSc, runAsUser: 0, runAsNonRoot: undefined, seccompProfile: { type: 'Unconfined' } },
            }),
          ],
          {
            securityContext: { seccompProfile: { type: 'RuntimeDefault' } },
            volumes: [{ name: 'data', persistentVolumeClaim: { claimName: 'data-db-0' } }, projectedToken],
          },
        ),
      ),
    },
    (() => {
      // kubectl debug: an UPDATE of the pods/ephemeralcontainers subresource, old and new Pod.
      const old = pod('web-7d4b9c-x2x1k', 'prod', podSpec([restricted('web')], { securityContext: restrictedPodSc }));
      const next = structuredClone(old) as { spec: Json };
      next.spec['ephemeralContainers'] = [
        {
          name: 'debugger-x7k2p',
          image,
          terminationMessagePath: '/dev/termination-log',
          terminationMessagePolicy: 'File',
          imagePullPolicy: 'IfNotPresent',
          stdin: true,
          tty: true,
          securityContext: restrictedContainerSc,
        },
      ];
      const r = review('Pod', 'prod', 'web-7d4b9c-x2x1k', next, {
        subResource: 'ephemeralcontainers',
        operation: 'UPDATE',
        oldObject: old,
        options: { kind: 'UpdateOptions', apiVersion: 'meta.k8s.io/v1' },
      }) as { request: Json };
      r.request['requestSubResource'] = 'ephemeralcontainers';
      return { label: 'Pod UPDATE, pods/ephemeralcontainers', allowed: true, review: r as Json };
    })(),
    {
      label: 'Pod, Windows (Linux-only checks exempt)',
      allowed: true,
      review: review(
        'Pod',
        'team-win',
        'iis-58d7c-m3n4b',
        pod(
          'iis-58d7c-m3n4b',
          'team-win',
          podSpec([container('iis', image, { securityContext: { runAsNonRoot: true } })], {
            os: { name: 'windows' },
            nodeSelector: { 'kubernetes.io/os': 'windows' },
          }),
        ),
      ),
    },
  ];
}

/** A copy with its own request uid, as every request from the API server has. */
export function withUid(review: Json, n: number): Json {
  const r = structuredClone(review) as { request: Json };
  r.request['uid'] = `00000000-0000-4000-8000-${n.toString(16).padStart(12, '0')}`;
  return r as Json;
}

/**
 * `n` Pod CREATE reviews with security settings drawn at random (seeded, so every run sends the
 * same ones): the benchmark sends them to both servers before timing and requires the same
 * verdict and the same PSA text from each, so the Rego is known to check what Writ checks.
 */
export function randomReviews(n: number, seed = 12): Json[] {
  let s = seed >>> 0;
  const rnd = (): number => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
  const maybe = (o: Json, key: string, values: readonly unknown[]): void => {
    const v = pick([undefined, undefined, ...values]);
    if (v !== undefined) o[key] = v;
  };
  const containerSc = (): Json => {
    const sc: Json = {};
    maybe(sc, 'privileged', [true, false]);
    maybe(sc, 'allowPrivilegeEscalation', [false, false, true]);
    maybe(sc, 'capabilities', [
      { drop: ['ALL'] },
      { drop: ['ALL'] },
      { drop: ['ALL'], add: ['NET_BIND_SERVICE'] },
      { add: ['SYS_ADMIN', 'CHOWN'] },
      { drop: ['NET_RAW'] },
    ]);
    maybe(sc, 'runAsNonRoot', [true, true, false]);
    maybe(sc, 'runAsUser', [0, 1000]);
    maybe(sc, 'seccompProfile', [{ type: 'RuntimeDefault' }, { type: 'Localhost', localhostProfile: 'p.json' }, { type: 'Unconfined' }]);
    maybe(sc, 'procMount', ['Default', 'Unmasked']);
    maybe(sc, 'seLinuxOptions', [{ type: 'container_t' }, { type: 'spc_t' }, { user: 'system_u' }, { role: 'r', type: 'container_init_t' }]);
    maybe(sc, 'appArmorProfile', [{ type: 'RuntimeDefault' }, { type: 'Unconfined' }, { type: 'Localhost', localhostProfile: 'k8s-x' }]);
    maybe(sc, 'windowsOptions', [{ hostProcess: true }, { hostProcess: false }]);
    return sc;
  };
  // Half the pods start from a restricted one and change at most one setting, so both verdicts are common.
  let good = false;
  const oneOf = (o: Json): Json => {
    const [k, v] = pick(Object.entries(o)) ?? [];
    return k === undefined ? {} : { [k]: v };
  };
  const mk = (name: string, ephemeral = false): Json => {
    const c: Json = {
      name,
      image: 'registry.example.com/team/app:1.0',
      imagePullPolicy: 'IfNotPresent',
      terminationMessagePath: '/dev/termination-log',
      terminationMessagePolicy: 'File',
    };
    if (good) {
      c['securityContext'] = { ...restrictedContainerSc, ...(rnd() < 0.2 ? oneOf(containerSc()) : {}) };
      return c;
    }
    if (rnd() < 0.9) c['securityContext'] = containerSc();
    if (!ephemeral) {
      maybe(c, 'ports', [
        [{ containerPort: 8080, protocol: 'TCP' }],
        [{ containerPort: 8080, hostPort: 8080, protocol: 'TCP' }],
        [{ containerPort: 53, hostPort: 0, protocol: 'UDP' }],
      ]);
      maybe(c, 'livenessProbe', [
        { httpGet: { path: '/', port: 8080 } },
        { httpGet: { path: '/', port: 8080, host: '10.0.0.1' } },
        { tcpSocket: { port: 8080, host: 'db' } },
      ]);
      maybe(c, 'lifecycle', [{ preStop: { httpGet: { path: '/stop', port: 8080, host: 'example.com' } } }, { postStart: { exec: { command: ['true'] } } }]);
    }
    return c;
  };
  return Array.from({ length: n }, (_, i) => {
    const name = `rnd-${i}`;
    good = rnd() < 0.5;
    if (good) {
      const spec = podSpec([mk('app0'), ...(rnd() < 0.3 ? [mk('app1')] : [])], {
        securityContext: { runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' } },
      });
      return withUid(review('Pod', 'prod', name, { kind: 'Pod', apiVersion: 'v1', metadata: meta(name, 'prod'), spec, status: {} }), 1_000_000 + i);
    }
    const psc: Json = {};
    maybe(psc, 'runAsNonRoot', [true, true, false]);
    maybe(psc, 'runAsUser', [0, 1000]);
    maybe(psc, 'seccompProfile', [{ type: 'RuntimeDefault' }, { type: 'RuntimeDefault' }, { type: 'Unconfined' }]);
    maybe(psc, 'sysctls', [
      [{ name: 'net.ipv4.tcp_syncookies', value: '1' }],
      [
        { name: 'kernel.msgmax', value: '1' },
        { name: 'net.ipv4.tcp_rmem', value: '4096' },
      ],
    ]);
    maybe(psc, 'seLinuxOptions', [{ type: 'container_t' }, { type: 'unconfined_t' }]);
    maybe(psc, 'appArmorProfile', [{ type: 'RuntimeDefault' }, { type: 'Unconfined' }]);
    maybe(psc, 'windowsOptions', [{ hostProcess: true }]);
    const spec: Json = podSpec(
      Array.from({ length: 1 + Math.floor(rnd() * 2) }, (_, k) => mk(`app${k}`)),
      { securityContext: psc },
    );
    if (rnd() < 0.3) spec['initContainers'] = [mk('init')];
    if (rnd() < 0.2) spec['ephemeralContainers'] = [mk('debug', true)];
    maybe(spec, 'hostNetwork', [true, false]);
    maybe(spec, 'hostPID', [true]);
    maybe(spec, 'hostIPC', [true]);
    maybe(spec, 'hostUsers', [false, true]);
    maybe(spec, 'os', [{ name: 'windows' }, { name: 'linux' }]);
    maybe(spec, 'volumes', [
      [projectedToken, { name: 'scratch', emptyDir: {} }],
      [projectedToken, { name: 'host', hostPath: { path: '/var/log', type: '' } }],
      [
        { name: 'share', nfs: { server: 'nfs', path: '/x' } },
        { name: 'cfg', configMap: { name: 'c' } },
      ],
    ]);
    const annotations: Json = {};
    maybe(annotations, 'container.apparmor.security.beta.kubernetes.io/app0', ['runtime/default', 'unconfined', 'localhost/p']);
    const object = { kind: 'Pod', apiVersion: 'v1', metadata: { ...meta(name, 'prod'), annotations }, spec, status: {} };
    return withUid(review('Pod', 'prod', name, object), 1_000_000 + i);
  });
}
