/**
 * The admission webhook end to end: a real `writ server` child with --admission-listen, the
 * AdmissionReviews kube-apiserver sends (Pod CREATE, Deployment, dryRun, the ephemeralcontainers
 * subresource, UPDATE with oldObject) posted over real TLS, trusting only the caBundle that
 * `writ admission manifests` prints, with the Service DNS name checked; client-certificate
 * authentication of the API server; hostile reviews; and the verdicts read back with
 * `writ admission events`.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { startHostileRegistry, startRegistry, type HostileRegistry, type PushedImage, type TestRegistry } from '@writ/oci/testing';
import { cosignSign, makeCosignKey, type CosignKey } from '../../packages/oci/src/testing/cosign.ts';
import { CuttableProxy, WRIT, cleanup, run, startServerProcess, waitFor, writ, type ServerProcess } from './helpers.ts';

const DNS = 'writ-admission.writ-system.svc';
const DIGEST = `sha256:${'4'.repeat(64)}`;

interface Webhook {
  readonly srv: ServerProcess;
  readonly port: number;
  /** The caBundle of the manifests, decoded. */
  readonly ca: string;
  /** The API server's client certificate, sent by post() unless told otherwise (with --admission-client-ca). */
  readonly client?: { readonly cert: string; readonly key: string };
}

async function startWebhook(extra: string[] = []): Promise<Webhook> {
  const srv = await startServerProcess({ args: ['--admission-listen', '127.0.0.1:0', '--admission-dns', `${DNS},writ-admission`, ...extra] });
  const line = srv.logs.map((l) => JSON.parse(l) as { msg?: string; admissionUrl?: string }).find((l) => l.msg === 'writ server listening');
  assert.ok(line?.admissionUrl, 'the listening line names the admission listener');
  const port = Number(new URL(line.admissionUrl).port);
  assert.notEqual(port, srv.port, 'a listener of its own');
  const m = await writ(srv, ['admission', 'manifests', '--ca-file', join(srv.dataDir, 'bundle.pem'), '-o', 'json']);
  assert.equal(m.code, 0, m.stderr);
  const items = (JSON.parse(m.stdout) as { items: Array<{ webhooks: Array<{ clientConfig: { caBundle: string } }> }> }).items;
  const ca = Buffer.from(items[0]!.webhooks[0]!.clientConfig.caBundle, 'base64').toString();
  return { srv, port, ca };
}

interface Answer {
  readonly status: number;
  readonly json: Record<string, unknown>;
  readonly ms: number;
}

/** POSTs to the admission listener as kube-apiserver does: TLS to the Service name, checked against the caBundle. */
function post(
  w: Webhook,
  path: string,
  body: string | object,
  opts: { cert?: string; key?: string; contentType?: string; method?: string; expectContinue?: boolean } = {},
): Promise<Answer> {
  const payload = typeof body === 'string' ? body : JSON.stringify(body);
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port: w.port,
        servername: DNS,
        path,
        method: opts.method ?? 'POST',
        ca: w.ca,
        agent: false,
        headers: {
          'content-type': opts.contentType ?? 'application/json',
          'content-length': Buffer.byteLength(payload),
          ...(opts.expectContinue ? { expect: '100-continue' } : {}),
        },
        ...(opts.cert ? { cert: opts.cert, key: opts.key } : w.client ? { cert: w.client.cert, key: w.client.key } : {}),
      },
      (res) => {
        let text = '';
        res.on('data', (d: Buffer) => (text += d.toString()));
        res.on('end', () => {
          let json: Record<string, unknown> = {};
          try {
            json = JSON.parse(text) as Record<string, unknown>;
          } catch {
            /* asserted by the caller */
          }
          resolve({ status: res.statusCode ?? 0, json, ms: performance.now() - t0 });
        });
      },
    );
    req.on('error', reject);
    // With Expect: 100-continue (what curl sends for large bodies) the body waits for the server's go-ahead.
    if (opts.expectContinue) req.on('continue', () => req.end(payload));
    else req.end(payload);
  });
}

let uidN = 0;
/** An AdmissionReview exactly as kube-apiserver v1.3x sends it for `kubectl apply`. */
function review(o: {
  kind: string;
  group?: string;
  resource: string;
  namespace: string;
  name: string;
  object: object | null;
  oldObject?: object | null;
  operation?: string;
  subResource?: string;
  dryRun?: boolean;
}): Record<string, unknown> {
  const gvk = { group: o.group ?? '', version: 'v1', kind: o.kind };
  const gvr = { group: o.group ?? '', version: 'v1', resource: o.resource };
  const op = o.operation ?? 'CREATE';
  return {
    kind: 'AdmissionReview',
    apiVersion: 'admission.k8s.io/v1',
    request: {
      uid: `0d9b9a5c-1f3e-4c21-9a0e-${String(++uidN).padStart(12, '0')}`,
      kind: gvk,
      resource: gvr,
      ...(o.subResource ? { subResource: o.subResource } : {}),
      requestKind: gvk,
      requestResource: gvr,
      ...(o.subResource ? { requestSubResource: o.subResource } : {}),
      name: o.name,
      namespace: o.namespace,
      operation: op,
      userInfo: { username: 'kubernetes-admin', groups: ['kubeadm:cluster-admins', 'system:authenticated'] },
      object: o.object,
      oldObject: o.oldObject ?? null,
      dryRun: o.dryRun ?? false,
      options:
        op === 'CREATE'
          ? { kind: 'CreateOptions', apiVersion: 'meta.k8s.io/v1', fieldManager: 'kubectl-client-side-apply', fieldValidation: 'Strict' }
          : { kind: 'UpdateOptions', apiVersion: 'meta.k8s.io/v1', fieldManager: 'kubectl-client-side-apply', fieldValidation: 'Strict' },
    },
  };
}

const restrictedSpec = (image: string) => ({
  securityContext: { runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' } },
  containers: [
    {
      name: 'app',
      image,
      imagePullPolicy: 'IfNotPresent',
      resources: {},
      terminationMessagePath: '/dev/termination-log',
      terminationMessagePolicy: 'File',
      securityContext: { allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] } },
    },
  ],
  restartPolicy: 'Always',
  terminationGracePeriodSeconds: 30,
  dnsPolicy: 'ClusterFirst',
  serviceAccountName: 'default',
  schedulerName: 'default-scheduler',
  enableServiceLinks: true,
  preemptionPolicy: 'PreemptLowerPriority',
  priority: 0,
});

const privilegedSpec = (image: string) => ({
  containers: [{ name: 'app', image, securityContext: { privileged: true } }],
  restartPolicy: 'Always',
  dnsPolicy: 'ClusterFirst',
});

const pod = (name: string, namespace: string, spec: object, extra: object = {}) => ({
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: {
    name,
    namespace,
    uid: '6f1b7a57-6d4b-4d35-8d69-0c1bd2b3f6a1',
    creationTimestamp: null,
    labels: { app: name },
    managedFields: [
      {
        manager: 'kubectl-client-side-apply',
        operation: 'Update',
        apiVersion: 'v1',
        fieldsType: 'FieldsV1',
        fieldsV1: { 'f:spec': { 'f:containers': { 'k:{"name":"app"}': { '.': {}, 'f:image': {}, 'f:name': {} } } } },
      },
    ],
    ...extra,
  },
  spec,
  status: {},
});

const POLICIES = (exceptionExpires: string) => `apiVersion: writ.dev/v1
kind: AdmissionPolicy
metadata: { name: prod }
spec:
  namespaces: [prod, "team-*"]
  mode: enforce
  podSecurity: { level: restricted, version: latest }
---
apiVersion: writ.dev/v1
kind: AdmissionPolicy
metadata: { name: staging }
spec:
  namespaces: [staging]
  mode: warn
  podSecurity: { level: restricted, version: latest }
---
apiVersion: writ.dev/v1
kind: AdmissionPolicy
metadata: { name: monitoring }
spec:
  namespaces: [monitoring]
  mode: enforce
  podSecurity: { level: baseline, version: latest }
---
apiVersion: writ.dev/v1
kind: AdmissionException
metadata: { name: legacy-agent-hostpath }
spec:
  namespaces: [monitoring]
  workloads: [node-exporter]
  controls: [hostPathVolumes, hostNamespaces]
  owner: platform-team
  reason: "TICKET-123: reads host metrics"
  expires: ${exceptionExpires}
`;

const exporterPod = (name: string) =>
  pod(
    name,
    'monitoring',
    {
      hostNetwork: true,
      hostPID: true,
      containers: [
        { name: 'exporter', image: `quay.io/prometheus/node-exporter@${DIGEST}`, volumeMounts: [{ name: 'root', mountPath: '/host/root', readOnly: true }] },
      ],
      volumes: [{ name: 'root', hostPath: { path: '/' } }],
    },
    { ownerReferences: [{ apiVersion: 'apps/v1', kind: 'DaemonSet', name: 'node-exporter', uid: 'd1', controller: true, blockOwnerDeletion: true }] },
  );

type Response = {
  uid: string;
  allowed: boolean;
  status?: { code: number; reason: string; message: string };
  warnings?: string[];
  auditAnnotations?: Record<string, string>;
  patchType?: string;
  patch?: string;
};
const responseOf = (a: Answer): Response => {
  assert.equal(a.status, 200, JSON.stringify(a.json));
  assert.equal(a.json['apiVersion'], 'admission.k8s.io/v1');
  assert.equal(a.json['kind'], 'AdmissionReview');
  return a.json['response'] as Response;
};

describe('the admission webhook on its own listener', () => {
  let w: Webhook;
  let dir: string;
  let exceptionEnds = 0;
  before(async () => {
    w = await startWebhook();
    dir = mkdtempSync(join(tmpdir(), 'writ-admission-'));
    // The exception runs out during the test: long enough for the cases that use it.
    exceptionEnds = Date.now() + 20_000;
    const f = join(dir, 'admission.yaml');
    writeFileSync(f, POLICIES(new Date(exceptionEnds).toISOString().replace(/\.\d+Z$/, 'Z')));
    const r = await writ(w.srv, ['policy', 'apply', '-f', f]);
    assert.equal(r.code, 0, r.stderr);
  });
  after(async () => {
    await w?.srv.stop();
    if (w) cleanup(w.srv.dataDir);
    if (dir) cleanup(dir);
  });

  it('serves only the webhook (and /livez) with a certificate for the Service name, chained to the caBundle', async () => {
    assert.equal((await post(w, '/livez', '', { method: 'GET' })).status, 200);
    for (const path of ['/v1/entries', '/v1/admission/events', '/v1/policies', '/v1/openapi.json']) {
      const a = await post(w, path, '', { method: 'GET' });
      assert.equal(a.status, 404, `${path} is not on the admission listener`);
      assert.equal(a.json['code'], 'ERR_NOT_FOUND');
    }
    // And the admin listener does not serve the webhook.
    const admin = await run('curl', [
      '-sS',
      '--cacert',
      join(w.srv.dataDir, 'bundle.pem'),
      '-X',
      'POST',
      '-H',
      'content-type: application/json',
      '-d',
      '{}',
      `${w.srv.url}/v1/admission/validate`,
    ]);
    assert.match(admin.stdout, /ERR_NOT_FOUND/);
    // curl as an independent client: the Service DNS name resolves to the listener, checked against the caBundle.
    writeFileSync(join(dir, 'ca.pem'), w.ca);
    writeFileSync(
      join(dir, 'review.json'),
      JSON.stringify(
        review({
          kind: 'Pod',
          resource: 'pods',
          namespace: 'prod',
          name: 'web',
          object: pod('web', 'prod', restrictedSpec(`registry.example.com/team/app@${DIGEST}`)),
        }),
      ),
    );
    const c = await run('curl', [
      '-sS',
      '--fail-with-body',
      '--cacert',
      join(dir, 'ca.pem'),
      '--resolve',
      `${DNS}:${w.port}:127.0.0.1`,
      '-H',
      'content-type: application/json',
      '--data-binary',
      `@${join(dir, 'review.json')}`,
      `https://${DNS}:${w.port}/v1/admission/validate?timeout=5s`,
    ]);
    assert.equal(c.code, 0, c.stderr);
    assert.equal((JSON.parse(c.stdout) as { response: Response }).response.allowed, true);
    // A name not in the certificate is refused by TLS.
    const wrong = await run('curl', [
      '-sS',
      '--cacert',
      join(dir, 'ca.pem'),
      '--resolve',
      `other.svc:${w.port}:127.0.0.1`,
      `https://other.svc:${w.port}/livez`,
    ]);
    assert.notEqual(wrong.code, 0);
  });

  it('writ admission manifests prints both webhook configurations as kube-apiserver takes them', async () => {
    const m = await writ(w.srv, [
      'admission',
      'manifests',
      '--ca-file',
      join(w.srv.dataDir, 'bundle.pem'),
      '--namespace',
      'security',
      '--port',
      '9444',
      '-o',
      'json',
    ]);
    assert.equal(m.code, 0, m.stderr);
    type Hook = Record<string, unknown> & {
      clientConfig: { service: Record<string, unknown>; caBundle: string };
      rules: Array<{ apiGroups: string[]; resources: string[]; operations: string[] }>;
    };
    const items = (JSON.parse(m.stdout) as { items: Array<{ apiVersion: string; kind: string; webhooks: Hook[] }> }).items;
    assert.deepEqual(
      items.map((i) => [i.apiVersion, i.kind]),
      [
        ['admissionregistration.k8s.io/v1', 'MutatingWebhookConfiguration'],
        ['admissionregistration.k8s.io/v1', 'ValidatingWebhookConfiguration'],
      ],
    );
    for (const [i, hook] of (['mutate', 'validate'] as const).entries()) {
      const h = items[i]!.webhooks[0]!;
      assert.deepEqual(h.clientConfig.service, { namespace: 'security', name: 'writ-admission', path: `/v1/admission/${hook}`, port: 9444 });
      assert.equal(Buffer.from(h.clientConfig.caBundle, 'base64').toString(), readFileSync(join(w.srv.dataDir, 'bundle.pem'), 'utf8'));
      assert.deepEqual(h['admissionReviewVersions'], ['v1']);
      assert.equal(h['failurePolicy'], 'Fail');
      assert.equal(h['sideEffects'], 'None');
      assert.equal(h['matchPolicy'], 'Equivalent');
      assert.ok((h['timeoutSeconds'] as number) > 2 && (h['timeoutSeconds'] as number) <= 30, 'above the 2 s budget');
      assert.deepEqual(h['namespaceSelector'], {
        matchExpressions: [{ key: 'kubernetes.io/metadata.name', operator: 'NotIn', values: ['kube-system', 'security'] }],
      });
      assert.deepEqual(
        h.rules.flatMap((r) => r.resources.map((res) => `${r.apiGroups[0] || 'core'}/${res}`)),
        [
          'core/pods',
          'core/pods/ephemeralcontainers',
          'core/replicationcontrollers',
          'core/podtemplates',
          'apps/deployments',
          'apps/replicasets',
          'apps/statefulsets',
          'apps/daemonsets',
          'batch/jobs',
          'batch/cronjobs',
        ],
      );
      assert.ok(h.rules.every((r) => r.operations.join() === 'CREATE,UPDATE'));
      assert.equal(h['reinvocationPolicy'], hook === 'mutate' ? 'IfNeeded' : undefined);
    }
    const ignore = await writ(w.srv, ['admission', 'manifests', '--ca-file', join(w.srv.dataDir, 'bundle.pem'), '--failure-policy', 'Ignore']);
    assert.equal((ignore.stdout.match(/failurePolicy: Ignore/g) ?? []).length, 2);
    const bad = await writ(w.srv, ['admission', 'manifests', '--ca-file', join(w.srv.dataDir, 'admin.token')]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /holds no PEM certificate/);
    assert.doesNotMatch(bad.stderr, new RegExp(w.srv.adminToken), 'the file given by mistake is not echoed');
  });

  it('denies a privileged Pod in an enforce namespace as Pod Security Admission words it, echoing the uid', async () => {
    const r = review({ kind: 'Pod', resource: 'pods', namespace: 'prod', name: 'bad', object: pod('bad', 'prod', privilegedSpec('nginx:1.27')) });
    const res = responseOf(await post(w, '/v1/admission/validate', r));
    assert.equal(res.uid, (r['request'] as { uid: string }).uid);
    assert.equal(res.allowed, false);
    assert.equal(res.status?.code, 403);
    assert.equal(res.status?.reason, 'Forbidden');
    assert.match(res.status!.message, /violates PodSecurity "restricted:latest": /);
    assert.match(res.status!.message, /privileged \(container "app" must not set securityContext\.privileged=true\)/);
    assert.match(res.status!.message, /allowPrivilegeEscalation != false/);
    assert.equal(res.auditAnnotations?.['decision'], 'deny');
    assert.equal(res.patch, undefined);
  });

  it('admits a Pod that meets restricted, and says which policy applied', async () => {
    const res = responseOf(
      await post(
        w,
        '/v1/admission/validate',
        review({
          kind: 'Pod',
          resource: 'pods',
          namespace: 'team-a',
          name: 'ok',
          object: pod('ok', 'team-a', restrictedSpec(`registry.example.com/team/app@${DIGEST}`)),
        }),
      ),
    );
    assert.equal(res.allowed, true, JSON.stringify(res));
    assert.equal(res.status, undefined);
    assert.equal(res.auditAnnotations?.['decision'], 'allow');
    assert.equal(res.auditAnnotations?.['policies'], 'prod');
  });

  it('judges a Deployment by its pod template, and a dry run the same (flagged in the events)', async () => {
    const deployment = (name: string) => ({
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: { name, namespace: 'prod', generation: 1 },
      spec: { replicas: 2, selector: { matchLabels: { app: name } }, template: { metadata: { labels: { app: name } }, spec: privilegedSpec('nginx:1.27') } },
    });
    const d = responseOf(
      await post(
        w,
        '/v1/admission/validate',
        review({ kind: 'Deployment', group: 'apps', resource: 'deployments', namespace: 'prod', name: 'api', object: deployment('api') }),
      ),
    );
    assert.equal(d.allowed, false);
    assert.match(d.status!.message, /privileged \(container "app" must not set securityContext\.privileged=true\)/);
    const dry = responseOf(
      await post(
        w,
        '/v1/admission/validate',
        review({ kind: 'Deployment', group: 'apps', resource: 'deployments', namespace: 'prod', name: 'api-dry', object: deployment('api-dry'), dryRun: true }),
      ),
    );
    assert.equal(dry.allowed, false, 'a dry run gets the verdict the real request would');
  });

  it('a Deployment UPDATE (with oldObject) is judged on its new template; a policy applied takes effect on the next review', async () => {
    const dep = (spec: object, replicas: number) => ({
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: { name: 'web', namespace: 'prod', generation: 2 },
      spec: { replicas, selector: { matchLabels: { app: 'web' } }, template: { metadata: { labels: { app: 'web' } }, spec } },
    });
    const good = dep(restrictedSpec(`registry.example.com/team/app@${DIGEST}`), 2);
    const update = (object: object) =>
      review({ kind: 'Deployment', group: 'apps', resource: 'deployments', operation: 'UPDATE', namespace: 'prod', name: 'web', object, oldObject: good });
    assert.equal(
      responseOf(await post(w, '/v1/admission/validate', update(dep(restrictedSpec(`registry.example.com/team/app@${DIGEST}`), 5)))).allowed,
      true,
      'scaled',
    );
    const worse = responseOf(await post(w, '/v1/admission/validate', update(dep(privilegedSpec('nginx:1.27'), 2))));
    assert.equal(worse.allowed, false);
    assert.match(worse.status!.message, /privileged \(container "app"/);
    // No policy for namespace "late" yet: admitted; once one is applied, the very next review is judged by it.
    const latePod = () => review({ kind: 'Pod', resource: 'pods', namespace: 'late', name: 'p', object: pod('p', 'late', privilegedSpec('nginx:1.27')) });
    assert.equal(responseOf(await post(w, '/v1/admission/validate', latePod())).allowed, true);
    const f = join(dir, 'late.yaml');
    writeFileSync(
      f,
      'apiVersion: writ.dev/v1\nkind: AdmissionPolicy\nmetadata: { name: late }\nspec:\n  namespaces: [late]\n  mode: enforce\n  podSecurity: { level: baseline, version: v1.30 }\n',
    );
    const r = await writ(w.srv, ['policy', 'apply', '-f', f]);
    assert.equal(r.code, 0, r.stderr);
    const judged = responseOf(await post(w, '/v1/admission/validate', latePod()));
    assert.equal(judged.allowed, false);
    assert.match(judged.status!.message, /^violates PodSecurity "baseline:v1\.30": privileged/);
  });

  it('checks an ephemeral debug container added through pods/ephemeralcontainers', async () => {
    const old = pod('web', 'prod', restrictedSpec(`registry.example.com/team/app@${DIGEST}`));
    const withDebug = {
      ...old,
      spec: {
        ...old.spec,
        ephemeralContainers: [
          { name: 'debugger', image: 'busybox:1.36', stdin: true, tty: true, targetContainerName: 'app', securityContext: { privileged: true } },
        ],
      },
    };
    const res = responseOf(
      await post(
        w,
        '/v1/admission/validate',
        review({
          kind: 'Pod',
          resource: 'pods',
          subResource: 'ephemeralcontainers',
          operation: 'UPDATE',
          namespace: 'prod',
          name: 'web',
          object: withDebug,
          oldObject: old,
        }),
      ),
    );
    assert.equal(res.allowed, false);
    assert.match(res.status!.message, /container "debugger"/);
  });

  it('lets an UPDATE through that changes nothing Pod Security checks, as PSA does', async () => {
    const old = pod('legacy', 'prod', privilegedSpec('nginx:1.27'));
    const relabelled = { ...old, metadata: { ...old.metadata, labels: { app: 'legacy', tier: 'web' } } };
    const res = responseOf(
      await post(
        w,
        '/v1/admission/validate',
        review({ kind: 'Pod', resource: 'pods', operation: 'UPDATE', namespace: 'prod', name: 'legacy', object: relabelled, oldObject: old }),
      ),
    );
    assert.equal(res.allowed, true, JSON.stringify(res));
  });

  it('warn mode admits with warnings; kinds that hold no pod are allowed and say so', async () => {
    const warn = responseOf(
      await post(
        w,
        '/v1/admission/validate',
        review({ kind: 'Pod', resource: 'pods', namespace: 'staging', name: 'w', object: pod('w', 'staging', privilegedSpec('nginx:1.27')) }),
      ),
    );
    assert.equal(warn.allowed, true);
    assert.ok(
      warn.warnings?.some((x) => /privileged/.test(x)),
      JSON.stringify(warn.warnings),
    );
    const cm = responseOf(
      await post(
        w,
        '/v1/admission/validate',
        review({
          kind: 'ConfigMap',
          resource: 'configmaps',
          namespace: 'prod',
          name: 'settings',
          object: { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'settings' }, data: { a: 'b' } },
        }),
      ),
    );
    assert.equal(cm.allowed, true);
    assert.equal(cm.auditAnnotations?.['decision'], 'skipped');
  });

  it('an exception waives its controls until it expires, then has no effect; the events show which was used', async () => {
    const first = responseOf(
      await post(
        w,
        '/v1/admission/validate',
        review({ kind: 'Pod', resource: 'pods', namespace: 'monitoring', name: 'node-exporter-x1', object: exporterPod('node-exporter-x1') }),
      ),
    );
    assert.equal(first.allowed, true, JSON.stringify(first));
    assert.equal(first.auditAnnotations?.['exceptions'], 'legacy-agent-hostpath');
    // Another workload in the namespace is not covered.
    const other = exporterPod('other-x1') as unknown as { metadata: { ownerReferences: Array<{ name: string }> } };
    other.metadata.ownerReferences[0]!.name = 'other';
    const refused = responseOf(
      await post(w, '/v1/admission/validate', review({ kind: 'Pod', resource: 'pods', namespace: 'monitoring', name: 'other-x1', object: other })),
    );
    assert.equal(refused.allowed, false);
    assert.match(refused.status!.message, /violates PodSecurity "baseline:latest": /);
    await waitFor('the exception to expire', async () => (Date.now() > exceptionEnds + 200 ? true : undefined), 40_000);
    const later = responseOf(
      await post(
        w,
        '/v1/admission/validate',
        review({ kind: 'Pod', resource: 'pods', namespace: 'monitoring', name: 'node-exporter-x2', object: exporterPod('node-exporter-x2') }),
      ),
    );
    assert.equal(later.allowed, false, 'an expired exception has no effect');
    assert.match(later.status!.message, /hostPath volumes/);

    const ev = await writ(w.srv, ['admission', 'events', '--namespace', 'monitoring', '-o', 'json']);
    assert.equal(ev.code, 0, ev.stderr);
    const events = JSON.parse(ev.stdout) as Array<{ name: string; allowed: boolean; exceptions: Array<{ name: string }>; controls: string[] }>;
    const used = events.find((e) => e.name === 'node-exporter-x1');
    assert.deepEqual(
      used?.exceptions.map((x) => x.name),
      ['legacy-agent-hostpath'],
    );
    const after = events.find((e) => e.name === 'node-exporter-x2');
    assert.equal(after?.allowed, false);
    assert.deepEqual(after?.exceptions, []);
    assert.ok(after?.controls.includes('hostPathVolumes'), JSON.stringify(after));
  });

  it('every verdict is queryable: namespace, object, images with digests, verdict, controls, dry run', async () => {
    const events = await waitFor('the events', async () => {
      const r = await writ(w.srv, ['admission', 'events', '--namespace', 'prod', '-o', 'json']);
      const list = JSON.parse(r.stdout) as Array<{
        kind: string;
        name: string;
        allowed: boolean;
        dryRun: boolean;
        controls: string[];
        images: Array<{ image: string }>;
        uid: string;
        operation: string;
      }>;
      return list.some((e) => e.name === 'api-dry') ? list : undefined;
    });
    const bad = events.find((e) => e.name === 'bad')!;
    assert.equal(bad.allowed, false);
    assert.ok(bad.controls.includes('privileged'));
    assert.deepEqual(
      bad.images.map((i) => i.image),
      ['nginx:1.27'],
    );
    assert.equal(events.find((e) => e.name === 'api-dry')!.dryRun, true);
    assert.equal(events.find((e) => e.name === 'api')!.dryRun, false);
    assert.equal(events.find((e) => e.name === 'web' && e.operation === 'UPDATE')?.allowed, false);
    const denied = await writ(w.srv, ['admission', 'events', '--namespace', 'prod', '--denied', '-o', 'json']);
    assert.ok((JSON.parse(denied.stdout) as Array<{ allowed: boolean }>).every((e) => !e.allowed));
    // --follow prints what is stored after it started, one JSON object per line. A verdict stored
    // before it, and printed by it, is the proof that it runs before the one it must follow.
    const teamB = (name: string): Promise<Answer> =>
      post(
        w,
        '/v1/admission/validate',
        review({ kind: 'Pod', resource: 'pods', namespace: 'team-b', name, object: pod(name, 'team-b', privilegedSpec('nginx:1.27')) }),
      );
    await teamB('before-follow');
    const follow = spawn(process.execPath, [WRIT, 'admission', 'events', '--follow', '--since', '1h', '--namespace', 'team-b', '-o', 'json'], {
      env: {
        PATH: process.env['PATH'],
        HOME: process.env['HOME'],
        WRIT_SERVER: w.srv.url,
        WRIT_TOKEN: w.srv.adminToken,
        WRIT_CA_FILE: join(w.srv.dataDir, 'bundle.pem'),
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let followed = '';
    follow.stdout.on('data', (d: Buffer) => (followed += d.toString()));
    try {
      await waitFor('--follow to print the verdict stored before it', async () => (followed.includes('"before-follow"') ? true : undefined));
      await teamB('followed');
      const line = await waitFor('the followed event', async () => followed.split('\n').find((l) => l.includes('"followed"')));
      const e = JSON.parse(line) as { name: string; allowed: boolean; namespace: string };
      assert.deepEqual([e.name, e.namespace, e.allowed], ['followed', 'team-b', false]);
    } finally {
      follow.kill();
    }
    const metrics = await run('curl', ['-sS', '--cacert', join(w.srv.dataDir, 'bundle.pem'), `${w.srv.url}/metrics`]);
    assert.match(metrics.stdout, /^writ_admission_reviews_total\{hook="validate",decision="deny",mode="enforce"\} \d+$/m);
    assert.match(metrics.stdout, /^writ_admission_reviews_total\{hook="validate",decision="skipped",mode="none"\} \d+$/m);
    const table = await writ(w.srv, ['admission', 'events', '--namespace', 'prod']);
    assert.match(table.stdout, /^TIME\s+VERDICT\s+MODE\s+NAMESPACE\s+OBJECT/);
    assert.match(table.stdout, /denied \(dry run\)\s+enforce\s+prod\s+Deployment\/api-dry/);
  });

  it('malformed, huge, deep and foreign reviews get a 400 or 413 with a code, and the listener keeps serving', async () => {
    const good = review({ kind: 'Pod', resource: 'pods', namespace: 'prod', name: 'web', object: pod('web', 'prod', restrictedSpec(`r.example/a@${DIGEST}`)) });
    const cases: Array<[string, string | object, number, string, { contentType?: string; expectContinue?: boolean }?]> = [
      ['not JSON', '{"kind":', 400, 'ERR_JSON_INVALID'],
      ['empty', '', 400, 'ERR_JSON_INVALID'],
      ['an array', '[]', 400, 'ERR_FIELD_INVALID'],
      ['v1beta1', { ...good, apiVersion: 'admission.k8s.io/v1beta1' }, 400, 'ERR_ADMISSION_REVIEW_INVALID'],
      ['no uid', { ...good, request: { ...(good['request'] as object), uid: undefined } }, 400, 'ERR_ADMISSION_REVIEW_INVALID'],
      ['an unknown top-level field', { ...good, spec: {} }, 400, 'ERR_FIELD_UNKNOWN'],
      ['an answered review', { ...good, response: { uid: 'x', allowed: true } }, 400, 'ERR_ADMISSION_REVIEW_INVALID'],
      [
        'nested 100 000 deep',
        `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":${'['.repeat(100_000)}${']'.repeat(100_000)}}`,
        400,
        'ERR_JSON_INVALID',
      ],
      ['9 MiB', JSON.stringify({ ...good, padding: 'x'.repeat(9 * 1024 * 1024) }), 413, 'ERR_BODY_TOO_LARGE', { expectContinue: true }],
      ['text/yaml', 'apiVersion: admission.k8s.io/v1', 415, 'ERR_CONTENT_TYPE', { contentType: 'application/yaml' }],
    ];
    for (const [what, body, status, code, opts] of cases) {
      const a = await post(w, '/v1/admission/validate', body, opts ?? {}).catch((err: Error): Answer => ({ status: 0, json: { error: err.message }, ms: 0 }));
      assert.equal(a.status, status, `${what}: ${JSON.stringify(a.json).slice(0, 200)}`);
      assert.equal(a.json['code'], code, what);
    }
    const g = await post(w, '/v1/admission/validate', '', { method: 'GET' });
    assert.equal(g.status, 405);
    // Still serving, and the admin API too.
    assert.equal(responseOf(await post(w, '/v1/admission/validate', good)).allowed, true);
    assert.equal((await writ(w.srv, ['admission', 'events', '--limit', '1', '-o', 'json'])).code, 0);
  });
});

/** Raw JSON texts put where a field's value goes (as the API sweep does for the admin routes). */
const HOSTILE_JSON = [
  'null',
  'true',
  '1.5',
  '-1',
  '1e400',
  '""',
  '"a\\u0000b"',
  JSON.stringify('x'.repeat(70_000)),
  JSON.stringify('é💥\u202e\ud800'),
  '{}',
  '[]',
  '[null]',
  '[1, "x", {}]',
  '{"__proto__": {"allowed": true}}',
  `${'['.repeat(40)}1${']'.repeat(40)}`,
];
/** Where they go: the review, the request, and the pod the checks read (images, security contexts, volumes). */
const HOSTILE_PATHS = [
  'apiVersion',
  'kind',
  'request',
  'request.uid',
  'request.kind',
  'request.kind.kind',
  'request.kind.group',
  'request.resource',
  'request.subResource',
  'request.namespace',
  'request.name',
  'request.operation',
  'request.object',
  'request.oldObject',
  'request.dryRun',
  'request.userInfo',
  'request.object.metadata',
  'request.object.metadata.ownerReferences',
  'request.object.metadata.annotations',
  'request.object.spec',
  'request.object.spec.containers',
  'request.object.spec.initContainers',
  'request.object.spec.ephemeralContainers',
  'request.object.spec.volumes',
  'request.object.spec.securityContext',
  'request.object.spec.hostNetwork',
  'request.object.spec.os',
  'request.object.spec.containers.0',
  'request.object.spec.containers.0.image',
  'request.object.spec.containers.0.name',
  'request.object.spec.containers.0.securityContext',
  'request.object.spec.containers.0.securityContext.capabilities',
  'request.object.spec.containers.0.ports',
];
const ODD_IMAGES = [
  `nginx@sha256:${'a'.repeat(63)}`,
  `nginx@sha256:${'A'.repeat(64)}`,
  'NGINX:latest',
  'registry.example.com:5000/team/app:v1',
  '[::1]:5000/team/app:v1',
  `[fd00::1]:5000/app@sha256:${'b'.repeat(64)}`,
  'nginx:',
  `${'a'.repeat(300)}/x:y`,
  'a//b:c',
  'nginx@md5:abc',
];

function setPath(doc: Record<string, unknown>, path: string, raw: string): string {
  const marker = '"__HOSTILE__"';
  const copy = JSON.parse(JSON.stringify(doc)) as Record<string, unknown>;
  const keys = path.split('.');
  let o: Record<string, unknown> = copy;
  for (const k of keys.slice(0, -1)) {
    const next = o[k];
    if (next === null || typeof next !== 'object') o[k] = {};
    o = o[k] as Record<string, unknown>;
  }
  o[keys.at(-1)!] = '__HOSTILE__';
  return JSON.stringify(copy).replace(marker, raw);
}

describe('the bad-input sweep of the admission listener', () => {
  let w: Webhook;
  before(async () => {
    w = await startWebhook();
    const dir = mkdtempSync(join(tmpdir(), 'writ-admission-sweep-'));
    writeFileSync(join(dir, 'p.yaml'), POLICIES('2099-01-01T00:00:00Z'));
    const r = await writ(w.srv, ['policy', 'apply', '-f', join(dir, 'p.yaml')]);
    cleanup(dir);
    assert.equal(r.code, 0, r.stderr);
  });
  after(async () => {
    await w?.srv.stop();
    if (w) cleanup(w.srv.dataDir);
  });

  it('no hostile value anywhere in a review gives a 5xx: an AdmissionReview answer or a 4xx with a registered code', async () => {
    const { HTTP_STATUS } = await import('../../packages/server/src/errors.ts');
    const base = review({ kind: 'Pod', resource: 'pods', namespace: 'prod', name: 'web', object: pod('web', 'prod', restrictedSpec('nginx:1.27')) });
    const bodies: Array<[string, string]> = [];
    for (const path of HOSTILE_PATHS) for (const v of HOSTILE_JSON) bodies.push([`${path}=${v.slice(0, 20)}`, setPath(base, path, v)]);
    for (const image of ODD_IMAGES)
      bodies.push([`image ${image.slice(0, 30)}`, setPath(base, 'request.object.spec.containers.0.image', JSON.stringify(image))]);
    const problems: string[] = [];
    let reviews = 0;
    for (const hook of ['validate', 'mutate'])
      for (const [what, body] of bodies) {
        const a = await post(w, `/v1/admission/${hook}`, body);
        if (a.status >= 500) problems.push(`${hook} ${what}: ${a.status} ${JSON.stringify(a.json).slice(0, 200)}`);
        else if (a.status === 200) {
          reviews++;
          const res = a.json['response'] as Response | undefined;
          if (typeof res?.allowed !== 'boolean' || typeof res.uid !== 'string') problems.push(`${hook} ${what}: 200 without an AdmissionReview answer`);
        } else if (typeof a.json['code'] !== 'string' || HTTP_STATUS[a.json['code'] as string] !== a.status)
          problems.push(`${hook} ${what}: ${a.status} without a registered code of that status: ${JSON.stringify(a.json).slice(0, 200)}`);
      }
    assert.deepEqual(problems.slice(0, 20), [], `${problems.length} of ${bodies.length * 2} cases failed`);
    assert.ok(reviews > 100, `${reviews} hostile reviews were judged (not only refused)`);
    const metrics = await run('curl', ['-sS', '--cacert', join(w.srv.dataDir, 'bundle.pem'), `${w.srv.url}/metrics`]);
    assert.doesNotMatch(metrics.stdout, /writ_http_requests_total\{[^}]*status="5\d\d"/, 'no 5xx counted');
  });
});

describe('on PostgreSQL, with the database away for a while', () => {
  const PG_URL = process.env['WRIT_TEST_PG_URL'] ?? 'postgres://postgres@127.0.0.1:5432/test';
  const dbName = `writ_adm_${process.pid}`;
  const proxy = new CuttableProxy(Number(new URL(PG_URL).port || 5432));
  const admin = async (sql: string): Promise<void> => {
    const c = new pg.Client({ connectionString: PG_URL });
    await c.connect();
    await c.query(sql).finally(() => c.end());
  };
  let w: Webhook;
  before(async () => {
    await admin(`CREATE DATABASE ${dbName}`);
    await proxy.open();
    const u = new URL(PG_URL);
    u.port = String(proxy.port);
    u.pathname = `/${dbName}`;
    w = await startWebhook(['--db', u.toString()]);
    const dir = mkdtempSync(join(tmpdir(), 'writ-admission-pg-'));
    writeFileSync(join(dir, 'p.yaml'), POLICIES('2099-01-01T00:00:00Z'));
    const r = await writ(w.srv, ['policy', 'apply', '-f', join(dir, 'p.yaml')]);
    cleanup(dir);
    assert.equal(r.code, 0, r.stderr);
  });
  after(async () => {
    await w?.srv.stop();
    if (w) cleanup(w.srv.dataDir);
    await proxy.close();
    await admin(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
  });

  it('reviews keep their verdicts and come at once; the verdicts of the outage are stored once the database is back', async () => {
    const bad = (name: string) => review({ kind: 'Pod', resource: 'pods', namespace: 'prod', name, object: pod(name, 'prod', privilegedSpec('nginx:1.27')) });
    assert.equal(responseOf(await post(w, '/v1/admission/validate', bad('before-outage'))).allowed, false);
    const logged = w.srv.logs.length;
    await proxy.cut();
    // Reviews until the server has tried to read the policies again (a second after the last read) and failed.
    await waitFor('a failed read of the policies', async () => {
      await post(w, '/v1/admission/validate', bad('outage-probe'));
      return w.srv.logs.slice(logged).some((l) => l.includes('admission policies could not be read again')) ? true : undefined;
    });
    for (const name of ['during-1', 'during-2', 'during-3']) {
      const res = responseOf(await post(w, '/v1/admission/validate', bad(name)));
      assert.equal(res.allowed, false, name);
      // Judged by the policies last read, not held up by the store: neither the budget's deny nor "could not load".
      assert.match(res.status!.message, /privileged/, name);
      assert.doesNotMatch(res.status!.message, /budget|could not load/, name);
    }
    const good = await post(
      w,
      '/v1/admission/validate',
      review({
        kind: 'Pod',
        resource: 'pods',
        namespace: 'prod',
        name: 'during-ok',
        object: pod('during-ok', 'prod', restrictedSpec(`r.example/a@${DIGEST}`)),
      }),
    );
    assert.equal(responseOf(good).allowed, true);
    await proxy.open();
    const names = await waitFor('the outage verdicts in the store', async () => {
      const r = await writ(w.srv, ['admission', 'events', '--namespace', 'prod', '-o', 'json']);
      if (r.code !== 0) return undefined;
      const list = (JSON.parse(r.stdout) as Array<{ name: string }>).map((e) => e.name);
      return ['during-1', 'during-2', 'during-3', 'during-ok'].every((n) => list.includes(n)) ? list : undefined;
    });
    assert.equal(names.filter((n) => n === 'during-1').length, 1, 'stored once');
    // No client CA, and no policy checking images: the admitted pod admits no image for identity.
    const r = await run('curl', [
      '-sS',
      '--cacert',
      join(w.srv.dataDir, 'bundle.pem'),
      '-H',
      `authorization: Bearer ${w.srv.adminToken}`,
      `${w.srv.url}/v1/admission/images`,
    ]);
    assert.ok(!r.stdout.includes(DIGEST), r.stdout);
    assert.ok(
      w.srv.logs.some((l) => l.includes('no --admission-client-ca')),
      'the server said why at start',
    );
  });
});

/** In `dir`: a client CA (ca.pem) and another (other-ca.pem), and client certificates `apiserver` (of ca) and `intruder` (of other-ca), made by openssl. */
function makeClientCerts(dir: string): { caFile: string; apiserver: { cert: string; key: string } } {
  const ssl = (...args: string[]): void => void execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  for (const who of ['ca', 'other-ca'])
    ssl(
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-keyout',
      `${who}.key`,
      '-out',
      `${who}.pem`,
      '-days',
      '1',
      '-subj',
      `/CN=${who}`,
    );
  writeFileSync(join(dir, 'client.ext'), 'extendedKeyUsage=clientAuth\n');
  for (const [name, ca] of [
    ['apiserver', 'ca'],
    ['intruder', 'other-ca'],
  ] as const) {
    ssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`);
    ssl(
      'x509',
      '-req',
      '-in',
      `${name}.csr`,
      '-CA',
      `${ca}.pem`,
      '-CAkey',
      `${ca}.key`,
      '-CAcreateserial',
      '-out',
      `${name}.pem`,
      '-days',
      '1',
      '-extfile',
      'client.ext',
    );
  }
  return {
    caFile: join(dir, 'ca.pem'),
    apiserver: { cert: readFileSync(join(dir, 'apiserver.pem'), 'utf8'), key: readFileSync(join(dir, 'apiserver.key'), 'utf8') },
  };
}

describe('client-certificate authentication of the API server', () => {
  let dir: string;
  let w: Webhook;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'writ-admission-mtls-'));
    makeClientCerts(dir);
    w = await startWebhook(['--admission-client-ca', join(dir, 'ca.pem')]);
  });
  after(async () => {
    await w?.srv.stop();
    if (w) cleanup(w.srv.dataDir);
    cleanup(dir);
  });

  it('answers an API server presenting a certificate of the client CA, and no one else', async () => {
    const body = review({ kind: 'Pod', resource: 'pods', namespace: 'default', name: 'p', object: pod('p', 'default', restrictedSpec('nginx:1.27')) });
    const cert = (n: string) => ({ cert: readFileSync(join(dir, `${n}.pem`), 'utf8'), key: readFileSync(join(dir, `${n}.key`), 'utf8') });
    assert.equal(responseOf(await post(w, '/v1/admission/validate', body, cert('apiserver'))).allowed, true);
    await assert.rejects(post(w, '/v1/admission/validate', body), 'no client certificate: refused by TLS');
    await assert.rejects(post(w, '/v1/admission/validate', body, cert('intruder')), 'a certificate of another CA: refused by TLS');
    // The admin API is not behind the client CA: operators keep their tokens.
    assert.equal((await writ(w.srv, ['admission', 'events', '-o', 'json'])).code, 0);
  });
});

const HOSTILE = [
  'garbage',
  'not-a-manifest',
  'redirect-loop',
  'redirect-chain',
  'huge-manifest',
  'endless-manifest',
  'wrong-digest',
  'unavailable',
  'auth-loop',
  'slow-body',
] as const;

describe('images: tags pinned to the digests a real registry serves, within the decision budget', () => {
  let dir: string;
  let w: Webhook;
  let registry: TestRegistry;
  let slow: HostileRegistry;
  let hostile: HostileRegistry[];
  let pushed: PushedImage;
  let key: CosignKey;
  let otherKey: CosignKey;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'writ-admission-images-'));
    [registry, slow, ...hostile] = await Promise.all([startRegistry({}), startHostileRegistry('slow'), ...HOSTILE.map((k) => startHostileRegistry(k))]);
    pushed = await registry.pushImage('team/app', 'v1');
    [key, otherKey] = await Promise.all([makeCosignKey(dir, 'p256'), makeCosignKey(dir, 'ed25519')]);
    writeFileSync(join(dir, 'release.pub'), key.pubPem);
    writeFileSync(join(dir, 'registries.yaml'), `registries:\n${[registry, slow, ...hostile].map((r) => `  "${r.host}": { ca: ${r.caFile} }\n`).join('')}`);
    // The API server proves itself with a client certificate: only then do verdicts admit images for identity.
    const certs = makeClientCerts(dir);
    w = {
      ...(await startWebhook(['--registry-config', join(dir, 'registries.yaml'), '--admission-budget', '1s', '--admission-client-ca', certs.caFile])),
      client: certs.apiserver,
    };
    writeFileSync(
      join(dir, 'policy.yaml'),
      `apiVersion: writ.dev/v1
kind: AdmissionPolicy
metadata: { name: pinned }
spec:
  namespaces: [apps]
  mode: enforce
  images: { requireDigest: true, registries: ["${registry.host}/team/", "${slow.host}/", ${hostile.map((h) => `"${h.host}/"`).join(', ')}] }
---
apiVersion: writ.dev/v1
kind: AdmissionPolicy
metadata: { name: signed }
spec:
  namespaces: [signed]
  mode: enforce
  images:
    requireDigest: true
    registries: ["${registry.host}/team/"]
    signatures:
      - name: release-key
        keys: [ { file: ${join(dir, 'release.pub')} } ]
`,
    );
    const r = await writ(w.srv, ['policy', 'apply', '-f', join(dir, 'policy.yaml')]);
    assert.equal(r.code, 0, r.stderr);
  });
  after(async () => {
    await w?.srv.stop();
    if (w) cleanup(w.srv.dataDir);
    await Promise.all([registry?.stop(), slow?.stop(), ...(hostile ?? []).map((h) => h.stop())]);
    cleanup(dir);
  });

  const appPod = (name: string, image: string) => pod(name, 'apps', { containers: [{ name: 'app', image }] });

  it('registries that answer with garbage, redirect loops, huge manifests, wrong digests or 503 each give a deny naming the problem', async (t) => {
    for (const [i, h] of hostile.entries()) {
      const a = await post(
        w,
        '/v1/admission/mutate',
        review({ kind: 'Pod', resource: 'pods', namespace: 'apps', name: `h${i}`, object: appPod(`h${i}`, `${h.host}/team/app:v1`) }),
      );
      const res = responseOf(a);
      assert.equal(res.allowed, false, `${HOSTILE[i]}: ${JSON.stringify(res)}`);
      assert.match(res.status!.message, /could not be (resolved|checked)/, HOSTILE[i]);
      t.diagnostic(`${HOSTILE[i]}: ${Math.round(a.ms)} ms: ${res.status!.message}`);
    }
  });

  it('the mutating hook pins a tag to the digest the registry resolves it to; the validating hook admits the pinned pod and records its digest', async () => {
    const tagged = registry.ref('team/app', 'v1');
    const m = responseOf(
      await post(w, '/v1/admission/mutate', review({ kind: 'Pod', resource: 'pods', namespace: 'apps', name: 'a1', object: appPod('a1', tagged) })),
    );
    assert.equal(m.allowed, true, JSON.stringify(m));
    assert.equal(m.patchType, 'JSONPatch');
    const patch = JSON.parse(Buffer.from(m.patch!, 'base64').toString()) as Array<{ op: string; path: string; value: string }>;
    assert.deepEqual(patch, [{ op: 'replace', path: '/spec/containers/0/image', value: `${registry.host}/team/app@${pushed.digest}` }]);
    // Unpinned, the validating hook refuses the tag; pinned, it admits.
    const unpinned = responseOf(
      await post(w, '/v1/admission/validate', review({ kind: 'Pod', resource: 'pods', namespace: 'apps', name: 'a1', object: appPod('a1', tagged) })),
    );
    assert.equal(unpinned.allowed, false);
    const pinned = responseOf(
      await post(w, '/v1/admission/validate', review({ kind: 'Pod', resource: 'pods', namespace: 'apps', name: 'a1', object: appPod('a1', patch[0]!.value) })),
    );
    assert.equal(pinned.allowed, true, JSON.stringify(pinned));
    assert.match(pinned.auditAnnotations?.['images'] ?? '', new RegExp(pushed.digest));
    // The admitted digest is what requireAdmittedImage entries are issued against.
    await waitFor('the admitted digest', async () => {
      const r = await run('curl', [
        '-sS',
        '--cacert',
        join(w.srv.dataDir, 'bundle.pem'),
        '-H',
        `authorization: Bearer ${w.srv.adminToken}`,
        `${w.srv.url}/v1/admission/images`,
      ]);
      return r.stdout.includes(pushed.digest) ? true : undefined;
    });
    // A dry run does not add to it.
    const other = await registry.pushImage('team/app', 'v2');
    const dry = responseOf(
      await post(
        w,
        '/v1/admission/validate',
        review({ kind: 'Pod', resource: 'pods', namespace: 'apps', name: 'a2', object: appPod('a2', other.ref), dryRun: true }),
      ),
    );
    assert.equal(dry.allowed, true, JSON.stringify(dry));
    // An admission after the dry run, once its digest is recorded, shows the dry run was handled too.
    const later = await registry.pushImage('team/app', 'v3');
    const admitted = responseOf(
      await post(w, '/v1/admission/validate', review({ kind: 'Pod', resource: 'pods', namespace: 'apps', name: 'a3', object: appPod('a3', later.ref) })),
    );
    assert.equal(admitted.allowed, true, JSON.stringify(admitted));
    const images = await waitFor('the later admission recorded', async () => {
      const r = await run('curl', [
        '-sS',
        '--cacert',
        join(w.srv.dataDir, 'bundle.pem'),
        '-H',
        `authorization: Bearer ${w.srv.adminToken}`,
        `${w.srv.url}/v1/admission/images`,
      ]);
      return r.stdout.includes(later.digest) ? r.stdout : undefined;
    });
    assert.ok(!images.includes(other.digest), 'a dry run admits no image');
  });

  it('a signature made by the real cosign CLI admits its image; an unsigned one is refused; a changed key file takes effect at once', async () => {
    const signedImage = await registry.pushImage('team/signed', 'v1');
    const unsigned = await registry.pushImage('team/unsigned', 'v1');
    await cosignSign('v3', key, signedImage.ref, registry.caFile, dir);
    const judge = async (name: string, image: string) =>
      responseOf(
        await post(
          w,
          '/v1/admission/validate',
          review({ kind: 'Pod', resource: 'pods', namespace: 'signed', name, object: pod(name, 'signed', { containers: [{ name: 'app', image }] }) }),
        ),
      );
    const ok = await judge('sig-ok', signedImage.ref);
    assert.equal(ok.allowed, true, JSON.stringify(ok));
    const refused = await judge('sig-none', unsigned.ref);
    assert.equal(refused.allowed, false);
    assert.match(refused.status!.message, /not signed by release-key/);
    const ev = await waitFor('the signed verdict', async () => {
      const r = await writ(w.srv, ['admission', 'events', '--namespace', 'signed', '-o', 'json']);
      return (JSON.parse(r.stdout) as Array<{ name: string; images: Array<{ digest?: string; signedBy: string[] }> }>).find((e) => e.name === 'sig-ok');
    });
    assert.deepEqual(ev.images, [{ image: signedImage.ref, digest: signedImage.digest, signedBy: ['release-key'] }]);
    // The operator rotates the key file: the cached verification under the old key no longer counts.
    writeFileSync(join(dir, 'release.pub'), otherKey.pubPem);
    const rotated = await judge('sig-rotated', signedImage.ref);
    assert.equal(rotated.allowed, false, 'signed by a key no longer trusted');
    writeFileSync(join(dir, 'release.pub'), key.pubPem);
    assert.equal((await judge('sig-back', signedImage.ref)).allowed, true);
  });

  it('a registry that never answers gets a deny saying the budget ended, and the server keeps serving', async () => {
    const a = await post(
      w,
      '/v1/admission/mutate',
      review({ kind: 'Pod', resource: 'pods', namespace: 'apps', name: 's1', object: appPod('s1', `${slow.host}/team/app:v1`) }),
    );
    const res = responseOf(a);
    assert.equal(res.allowed, false, JSON.stringify(res));
    // The registry never answers: only the end of the budget can have ended the wait.
    assert.match(res.status!.message, /decision budget ran out|within the decision budget/);
    // Many at once: each ended by its own budget, nothing piles up.
    const many = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        post(
          w,
          '/v1/admission/validate',
          review({ kind: 'Pod', resource: 'pods', namespace: 'apps', name: `m${i}`, object: appPod(`m${i}`, `${slow.host}/team/app:v${i}`) }),
        ),
      ),
    );
    for (const m of many) {
      const r = responseOf(m);
      assert.equal(r.allowed, false);
      assert.match(r.status!.message, /decision budget ran out|within the decision budget/, `answered after ${Math.round(m.ms)} ms`);
    }
    // The mutating hook's refusal is recorded (the validating hook is never asked after it).
    const ev = await waitFor('the refusal in the events', async () => {
      const r = await writ(w.srv, ['admission', 'events', '--namespace', 'apps', '--denied', '-o', 'json']);
      return (JSON.parse(r.stdout) as Array<{ name: string; hook: string; message: string; controls: string[] }>).find((e) => e.name === 's1');
    });
    assert.equal(ev.hook, 'mutate');
    assert.ok(ev.controls.includes('imageResolve'), JSON.stringify(ev));
    assert.equal(
      responseOf(
        await post(w, '/v1/admission/validate', review({ kind: 'Pod', resource: 'pods', namespace: 'other', name: 'x', object: appPod('x', 'nginx') })),
      ).allowed,
      true,
    );
  });
});
