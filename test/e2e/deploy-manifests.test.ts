/**
 * The Kubernetes manifests under deploy/kubernetes (issue 16, section 2), checked as a cluster
 * would take them: each overlay rendered by kustomize's own library and every document decoded
 * strictly into the upstream Go types (test/go/k8scheck, k8s.io/api v0.37.2); a document with a
 * field Kubernetes does not have is refused; Writ's own `writ admission check` admits every pod
 * of writ-system under Pod Security "restricted", and says why the agent cannot be (writ-node).
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { generateKeyPairSync, randomUUID, sign } from 'node:crypto';
import { connect } from 'node:tls';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parseAllDocuments, parse as parseYaml, stringify } from 'yaml';
import { loadServerConfig } from '@writ/server';
import { ROOT, WRIT, cleanup, run, waitFor, writ } from './helpers.ts';

// Built by .ci/run from test/go/k8scheck (its own go.mod, versions pinned).
const K8SCHECK = join(ROOT, 'test/go/bin/k8scheck');
const OVERLAYS = ['trial', 'production'] as const;
const dir = mkdtempSync(join(tmpdir(), 'writ-e2e-deploy-'));

type Doc = { apiVersion: string; kind: string; metadata: { name: string; namespace?: string }; [k: string]: unknown };
interface Checked {
  doc: number;
  kind?: string;
  namespace?: string;
  name?: string;
  ok: boolean;
  error?: string;
}

function k8scheck(args: string[]) {
  if (!existsSync(K8SCHECK)) throw new Error(`${K8SCHECK} is missing: build it as .ci/run does (cd test/go/k8scheck && go build -o ../bin/k8scheck .)`);
  return run(K8SCHECK, args, { timeoutMs: 60_000 });
}
const lines = (out: string): Checked[] =>
  out
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Checked);
const docsOf = (file: string): Doc[] => parseAllDocuments(readFileSync(file, 'utf8')).map((d) => d.toJSON() as Doc);
const find = (docs: Doc[], kind: string, name: string): Doc => {
  const d = docs.find((x) => x.kind === kind && x.metadata.name === name);
  assert.ok(d, `${kind} ${name} is rendered`);
  return d;
};

const rendered = new Map<string, string>();
let caPem: string;
// The cluster's service account signing key: its JWKS goes in the rendered ConfigMap.
const saKey = generateKeyPairSync('rsa', { modulusLength: 2048 });
const children: ChildProcess[] = [];

before(async () => {
  // The upstream CA an operator makes (docs/deploy.md), and a cluster JWKS as the API server serves it.
  const ca = await run('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2',
    '-keyout', join(dir, 'ca.key'), '-out', join(dir, 'ca.pem'), '-subj', '/CN=writ upstream root',
    '-addext', 'basicConstraints=critical,CA:true', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
  ]); // biome-ignore format: one openssl command
  assert.equal(ca.code, 0, ca.stderr);
  caPem = readFileSync(join(dir, 'ca.pem'), 'utf8');
  writeFileSync(join(dir, 'jwks.json'), JSON.stringify({ keys: [{ ...saKey.publicKey.export({ format: 'jwk' }), kid: 'sa1', use: 'sig', alg: 'RS256' }] }));
  for (const o of OVERLAYS) {
    const r = await k8scheck(['render', '-ca-bundle', join(dir, 'ca.pem'), '-jwks', join(dir, 'jwks.json'), join(ROOT, 'deploy/kubernetes/overlays', o)]);
    assert.equal(r.code, 0, r.stderr);
    const file = join(dir, `${o}.yaml`);
    writeFileSync(file, r.stdout);
    rendered.set(o, file);
  }
});
after(async () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
  await Promise.all(children.map((c) => (c.exitCode === null ? new Promise((r) => c.once('exit', r)) : undefined)));
  cleanup(dir);
});

/** The files the server's pod mounts under /etc/writ, at a temporary root; the config pointed at them. */
function mountedConfig(docs: Doc[], name: string): string {
  const cm = find(docs, 'ConfigMap', 'writ-server-config') as Doc & { data: Record<string, string> };
  const jwks = find(docs, 'ConfigMap', 'writ-cluster-jwks') as Doc & { data: Record<string, string> };
  const etc = join(dir, name, 'etc');
  for (const [f, text] of [
    ['kek/kek', 'a'.repeat(64)],
    ['upstream-ca/tls.crt', caPem],
    ['upstream-ca/tls.key', readFileSync(join(dir, 'ca.key'), 'utf8')],
    ['jwks/jwks.json', jwks.data['jwks.json']!],
  ] as const) {
    mkdirSync(join(etc, f, '..'), { recursive: true });
    writeFileSync(join(etc, f), text);
  }
  const file = join(dir, name, 'config.yaml');
  writeFileSync(file, cm.data['config.yaml']!.replaceAll('/etc/writ/', `${etc}/`).replace('/var/lib/writ', join(dir, name, 'data')));
  return file;
}

function lineOf(child: ChildProcess, re: RegExp, what: string): Promise<RegExpExecArray> {
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    const timer = setTimeout(() => reject(new Error(`${what} did not start: ${out}${err}`)), 60_000);
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = re.exec(out);
      if (m) clearTimeout(timer), resolve(m);
    });
    child.once('exit', (code) => (clearTimeout(timer), reject(new Error(`${what} exited ${code}: ${out}${err}`))));
  });
}

describe('deploy/kubernetes overlays', () => {
  for (const o of OVERLAYS) {
    it(`${o}: every rendered document decodes strictly into the k8s.io/api types`, async () => {
      const r = await k8scheck(['check', rendered.get(o)!]);
      const results = lines(r.stdout);
      assert.deepEqual(
        results.filter((x) => !x.ok),
        [],
      );
      assert.equal(r.code, 0, r.stderr);
      const kinds = new Set(results.map((x) => x.kind));
      for (const k of [
        'Namespace',
        'Deployment',
        'DaemonSet',
        'Service',
        'ServiceAccount',
        'ClusterRole',
        'ClusterRoleBinding',
        'ValidatingWebhookConfiguration',
        'MutatingWebhookConfiguration',
        'NetworkPolicy',
        'PodDisruptionBudget',
        'ConfigMap',
        'CSIDriver',
      ])
        assert.ok(kinds.has(k), `${o} renders a ${k}`);
      assert.equal(kinds.has('StatefulSet'), o === 'trial', 'only the trial runs its own PostgreSQL');
    });
  }

  it('refuses a document with a field Kubernetes does not have, naming the document', async () => {
    const docs = docsOf(rendered.get('trial')!);
    const dep = find(docs, 'Deployment', 'writ-server') as Doc & { spec: { template: { spec: { containers: Array<Record<string, unknown>> } } } };
    dep.spec.template.spec.containers[0]!['securityContxt'] = { runAsNonRoot: true }; // a typo a cluster would drop silently
    const broken = join(dir, 'broken.yaml');
    writeFileSync(broken, docs.map((d) => stringify(d)).join('---\n'));
    const r = await k8scheck(['check', broken]);
    assert.equal(r.code, 1);
    const bad = lines(r.stdout).filter((x) => !x.ok);
    assert.equal(bad.length, 1);
    assert.equal(bad[0]!.kind, 'Deployment');
    assert.equal(bad[0]!.name, 'writ-server');
    assert.match(bad[0]!.error ?? '', /unknown field.*securityContxt/);
  });

  it('refuses webhooks rendered without their caBundle', async () => {
    const r = await k8scheck(['render', join(ROOT, 'deploy/kubernetes/overlays/production')]);
    assert.equal(r.code, 0, r.stderr);
    const file = join(dir, 'no-ca.yaml');
    writeFileSync(file, r.stdout);
    const c = await k8scheck(['check', file]);
    assert.equal(c.code, 1);
    assert.deepEqual(
      lines(c.stdout)
        .filter((x) => !x.ok)
        .map((x) => [x.kind, x.error]),
      [
        ['MutatingWebhookConfiguration', 'webhook mutate.admission.writ.dev: caBundle is not a PEM certificate'],
        ['ValidatingWebhookConfiguration', 'webhook validate.admission.writ.dev: caBundle is not a PEM certificate'],
      ],
    );
  });

  it('writ admission check admits every pod of writ-system under Pod Security restricted', async () => {
    for (const o of OVERLAYS) {
      const docs = docsOf(rendered.get(o)!);
      const ns = find(docs, 'Namespace', 'writ-system') as Doc & { metadata: { labels: Record<string, string> } };
      assert.equal(ns.metadata.labels['pod-security.kubernetes.io/enforce'], 'restricted');
      const system = docs.filter((d) => d.metadata.namespace === 'writ-system');
      const file = join(dir, `${o}-system.yaml`);
      writeFileSync(file, system.map((d) => stringify(d)).join('---\n'));
      const r = await writ(undefined, ['admission', 'check', '-f', file, '--pss', 'restricted', '--ignore-other-kinds', '-o', 'json']);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      const results = (JSON.parse(r.stdout) as { results: Array<{ kind: string; name: string; allowed: boolean }> }).results;
      assert.deepEqual(
        results.map((x) => `${x.kind}/${x.name}:${x.allowed}`),
        o === 'trial' ? ['Deployment/writ-server:true', 'StatefulSet/writ-postgres:true'] : ['Deployment/writ-server:true'],
      );
    }
  });

  it('the agent needs writ-node at privileged: restricted and baseline refuse hostPID and hostPath', async () => {
    const docs = docsOf(rendered.get('production')!);
    const node = find(docs, 'Namespace', 'writ-node') as Doc & { metadata: { labels: Record<string, string> } };
    assert.equal(node.metadata.labels['pod-security.kubernetes.io/enforce'], 'privileged');
    const file = join(dir, 'agent.yaml');
    writeFileSync(file, stringify(find(docs, 'DaemonSet', 'writ-agent')));
    const r = await writ(undefined, ['admission', 'check', '-f', file, '--pss', 'baseline', '-o', 'json']);
    assert.equal(r.code, 3, r.stdout + r.stderr);
    const v = (JSON.parse(r.stdout) as { results: Array<{ violations: Array<{ control: string; message: string }> }> }).results[0]!.violations;
    // hostPID and the socket hostPath for the agent; the CSI container's privilege for mount propagation.
    assert.deepEqual([...new Set(v.map((x) => x.control))].sort(), ['hostNamespaces', 'hostPathVolumes', 'privileged']);
    const p = await writ(undefined, ['admission', 'check', '-f', file, '--pss', 'privileged', '-o', 'json']);
    assert.equal(p.code, 0, p.stdout + p.stderr);
  });

  it('a workload pod using the csi.writ.dev inline volume meets Pod Security restricted', async () => {
    const docs = docsOf(rendered.get('production')!);
    const driver = find(docs, 'CSIDriver', 'csi.writ.dev') as Doc & { spec: { volumeLifecycleModes: string[] } };
    assert.deepEqual(driver.spec.volumeLifecycleModes, ['Ephemeral']);
    const pod = {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'web', namespace: 'shop' },
      spec: {
        securityContext: { runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' } },
        containers: [
          {
            name: 'web',
            image: 'registry.example.com/shop/web:1',
            env: [{ name: 'SPIFFE_ENDPOINT_SOCKET', value: 'unix:///run/spiffe/workload/api.sock' }],
            securityContext: { allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] } },
            volumeMounts: [{ name: 'spiffe', mountPath: '/run/spiffe/workload', readOnly: true }],
          },
        ],
        volumes: [{ name: 'spiffe', csi: { driver: driver.metadata.name, readOnly: true } }],
      },
    };
    const file = join(dir, 'workload.yaml');
    writeFileSync(file, stringify(pod));
    const r = await writ(undefined, ['admission', 'check', '-f', file, '--pss', 'restricted', '-o', 'json']);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const k = await k8scheck(['check', file]);
    assert.equal(k.code, 0, k.stdout + k.stderr);
  });

  it("the agent's projected token carries the audience the server's k8sPsat cluster expects", () => {
    const docs = docsOf(rendered.get('production')!);
    const cm = find(docs, 'ConfigMap', 'writ-server-config') as Doc & { data: Record<string, string> };
    const cfg = parseYaml(cm.data['config.yaml']!) as { k8sPsat: Record<string, { audience: string; serviceAccounts: string[] }> };
    const ds = find(docs, 'DaemonSet', 'writ-agent') as Doc & {
      spec: { template: { spec: Record<string, unknown> & { volumes: Array<Record<string, unknown>>; containers: Array<{ args: string[] }> } } };
    };
    const pod = ds.spec.template.spec;
    const psat = pod.volumes.find((v) => v['name'] === 'psat') as { projected: { sources: Array<{ serviceAccountToken: { audience: string } }> } };
    const cluster = pod.containers[0]!.args.find((a) => a.startsWith('--psat-cluster='))!.split('=')[1]!;
    assert.equal(psat.projected.sources[0]!.serviceAccountToken.audience, cfg.k8sPsat[cluster]!.audience);
    assert.deepEqual(cfg.k8sPsat[cluster]!.serviceAccounts, [`${ds.metadata.namespace}:${pod['serviceAccountName']}`]);
    // Least privilege: the agent may only reach the kubelet's /pods, the server nothing at all.
    const role = find(docs, 'ClusterRole', 'writ-agent') as Doc & { rules: unknown };
    assert.deepEqual(role.rules, [{ apiGroups: [''], resources: ['nodes/proxy'], verbs: ['get'] }]);
    assert.equal(docs.filter((d) => d.kind.endsWith('Role') || d.kind.endsWith('RoleBinding')).length, 2);
    const sa = find(docs, 'ServiceAccount', 'writ-server') as Doc & { automountServiceAccountToken: boolean };
    assert.equal(sa.automountServiceAccountToken, false);
  });

  it("the server accepts the ConfigMap's config, and the webhooks are the ones `writ admission manifests` prints", async () => {
    const docs = docsOf(rendered.get('trial')!);
    const cfgFile = mountedConfig(docs, 'load');
    const cfg = loadServerConfig({ config: cfgFile }, {});
    assert.equal(cfg.port, 8443);
    assert.equal(cfg.admission?.port, 8444);
    assert.deepEqual(Object.keys(cfg.k8sPsat), ['k8s']);
    assert.ok(cfg.upstreamCa);

    const printed = await writ(undefined, ['admission', 'manifests', '--ca-file', join(dir, 'ca.pem')]);
    assert.equal(printed.code, 0, printed.stderr);
    const want = parseAllDocuments(printed.stdout).map((d) => d.toJSON() as Doc & { webhooks: Array<Record<string, unknown>> });
    for (const kind of ['MutatingWebhookConfiguration', 'ValidatingWebhookConfiguration']) {
      const got = find(docs, kind, 'writ-admission') as Doc & { webhooks: Array<Record<string, unknown>> };
      const exp = want.find((d) => d.kind === kind)!;
      const strip = (w: Record<string, unknown>) => ({ ...w, namespaceSelector: undefined });
      assert.deepEqual(got.webhooks.map(strip), exp.webhooks.map(strip), `${kind}: same webhooks (caBundle too) but the namespaces left out`);
      const sel = got.webhooks[0]!['namespaceSelector'] as { matchExpressions: Array<{ values: string[] }> };
      assert.deepEqual(sel.matchExpressions[0]!.values, ['kube-system', 'writ-system', 'writ-node']);
    }
  });

  it("runs as rendered: the webhook's certificate verifies against the caBundle for its Service name; the DaemonSet's token and trust bundle attest an agent", async () => {
    const docs = docsOf(rendered.get('production')!);
    const cfgFile = mountedConfig(docs, 'run');
    // The pod's args, with loopback ports for this machine and SQLite in place of the Secret's URL.
    const server = spawn(
      process.execPath,
      [WRIT, 'server', 'start', '--config', cfgFile, '--db', 'sqlite', '--listen', '127.0.0.1:0', '--admission-listen', '127.0.0.1:0'],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    children.push(server);
    const started = lineOf(server, /"msg":"writ server listening"/, 'the server');
    const out = (await started).input;
    const admissionUrl = /"url":"(https:\/\/127\.0\.0\.1:\d+)"[^\n]*"msg":"admission webhook listening"/.exec(out)?.[1];
    const url = /"url":"(https:\/\/127\.0\.0\.1:\d+)"[^\n]*"msg":"writ server listening"/.exec(out)![1]!;
    assert.ok(admissionUrl, out);

    // What the API server does: TLS to the Service's DNS name, trusting only the caBundle.
    const hook = find(docs, 'ValidatingWebhookConfiguration', 'writ-admission') as Doc & {
      webhooks: Array<{ clientConfig: { caBundle: string; service: { name: string; namespace: string } } }>;
    };
    const cc = hook.webhooks[0]!.clientConfig;
    const servername = `${cc.service.name}.${cc.service.namespace}.svc`;
    const port = Number(new URL(admissionUrl!).port);
    const authorized = await new Promise<boolean>((resolve, reject) => {
      const s = connect({ host: '127.0.0.1', port, servername, ca: Buffer.from(cc.caBundle, 'base64').toString('utf8') }, () => {
        resolve(s.authorized);
        s.end();
      });
      s.once('error', reject);
    });
    assert.equal(authorized, true);

    // The agent as the DaemonSet runs it: its projected token (audience, service account) and the trust bundle ConfigMap.
    const ds = find(docs, 'DaemonSet', 'writ-agent') as Doc & {
      spec: { template: { spec: { serviceAccountName: string; volumes: Array<Record<string, unknown>>; containers: Array<{ args: string[] }> } } };
    };
    const pod = ds.spec.template.spec;
    const arg = (k: string): string => pod.containers[0]!.args.find((a) => a.startsWith(`--${k}=`))!.split('=')[1]!;
    const audience = (pod.volumes.find((v) => v['name'] === 'psat') as { projected: { sources: Array<{ serviceAccountToken: { audience: string } }> } })
      .projected.sources[0]!.serviceAccountToken.audience;
    const nowS = Math.floor(Date.now() / 1000);
    const b64 = (o: unknown): string => Buffer.from(JSON.stringify(o)).toString('base64url');
    const claims = {
      aud: [audience],
      exp: nowS + 3600,
      iat: nowS,
      nbf: nowS,
      iss: 'https://kubernetes.default.svc.cluster.local',
      sub: `system:serviceaccount:${ds.metadata.namespace}:${pod.serviceAccountName}`,
      'kubernetes.io': {
        namespace: ds.metadata.namespace,
        serviceaccount: { name: pod.serviceAccountName, uid: randomUUID() },
        pod: { name: 'writ-agent-abcde', uid: randomUUID() },
        node: { name: 'node-1', uid: randomUUID() },
      },
    };
    const input = `${b64({ alg: 'RS256', kid: 'sa1', typ: 'JWT' })}.${b64(claims)}`;
    const agentDir = join(dir, 'run', 'agent');
    mkdirSync(agentDir, { recursive: true });
    writeFileSync(join(agentDir, 'token'), `${input}.${sign('sha256', Buffer.from(input), saKey.privateKey).toString('base64url')}`);
    const trust = find(docs, 'ConfigMap', 'writ-trust-bundle') as Doc & { data: Record<string, string> };
    writeFileSync(join(agentDir, 'bundle.pem'), trust.data['bundle.pem']!);
    const agent = spawn(
      process.execPath,
      [
        WRIT,
        'agent',
        'start',
        '--data-dir',
        agentDir,
        '--socket',
        join(agentDir, 'api.sock'),
        `--trust-domain=${arg('trust-domain')}`,
        `--psat-cluster=${arg('psat-cluster')}`,
        '--psat-token-file',
        join(agentDir, 'token'),
      ],
      { stdio: ['ignore', 'pipe', 'pipe'], env: { PATH: process.env['PATH'] ?? '', WRIT_SERVER: url, WRIT_CA_FILE: join(agentDir, 'bundle.pem') } },
    );
    children.push(agent);
    await lineOf(agent, /"msg":"writ agent serving the Workload API"/, 'the agent');
    const env = {
      WRIT_SERVER: url,
      WRIT_CA_FILE: join(agentDir, 'bundle.pem'),
      WRIT_TRUST_DOMAIN: arg('trust-domain'),
      WRIT_TOKEN: readFileSync(join(dir, 'run', 'data', 'admin.token'), 'utf8').trim(),
    };
    const agents = await waitFor('the agent in writ agent list', async () => {
      const r = await writ(undefined, ['agent', 'list', '-o', 'json'], { env });
      assert.equal(r.code, 0, r.stderr);
      const list = JSON.parse(r.stdout) as Array<{ spiffeId: string; attestationType: string }>;
      return list.length > 0 ? list : undefined;
    });
    assert.deepEqual(
      agents.map((a) => [a.spiffeId, a.attestationType]),
      [[`spiffe://${arg('trust-domain')}/writ/agent/k8s_psat/k8s/node-1`, 'k8s_psat']],
    );
  });
});
