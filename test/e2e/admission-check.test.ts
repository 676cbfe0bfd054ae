/**
 * `writ admission check` as a real child process (exit codes, the JSON exactly, bad input), the
 * same exception honoured identically by it and by evaluate() on both sides of its expiry, and the
 * admission documents in the server's revisioned policy store.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { admissionSetOf, evaluate, parseAdmission, readObjects } from '@writ/admission';
import { cleanup, type ServerProcess, startServerProcess, writ } from './helpers.ts';

const dir = mkdtempSync(join(tmpdir(), 'writ-admission-check-'));
after(() => cleanup(dir));
const file = (name: string, text: string): string => {
  const f = join(dir, name);
  writeFileSync(f, text);
  return f;
};

const D1 = `sha256:${'1'.repeat(64)}`;
const GOOD_CTR = `{ name: app, image: "registry.example.com/team/app@${D1}", securityContext: { allowPrivilegeEscalation: false, capabilities: { drop: [ALL] }, runAsNonRoot: true, seccompProfile: { type: RuntimeDefault } } }`;
const MANIFEST = `apiVersion: v1
kind: Pod
metadata: { name: web, namespace: prod }
spec:
  containers:
    - name: app
      image: nginx:1.25
      securityContext: { privileged: true }
---
apiVersion: apps/v1
kind: Deployment
metadata: { name: api, namespace: prod }
spec:
  selector: { matchLabels: { app: api } }
  template:
    metadata: { labels: { app: api } }
    spec:
      containers: [${GOOD_CTR}]
`;

describe('writ admission check', () => {
  it('exit 3 when any object is denied, with the JSON exactly as documented', async () => {
    const r = await writ(undefined, ['admission', 'check', '-f', file('m.yaml', MANIFEST), '--pss', 'baseline', '-o', 'json']);
    assert.equal(r.code, 3, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), {
      results: [
        {
          kind: 'Pod',
          name: 'web',
          namespace: 'prod',
          allowed: false,
          violations: [
            {
              control: 'privileged',
              message: 'privileged (container "app" must not set securityContext.privileged=true)',
              container: 'app',
              policies: ['--pss baseline'],
            },
          ],
          pinned: [],
        },
        { kind: 'Deployment', name: 'api', namespace: 'prod', allowed: true, violations: [], pinned: [] },
      ],
    });
    assert.match(r.stderr, /1 of 2 objects denied/);
  });

  it('exit 0 when all are admitted; the table names each object', async () => {
    const r = await writ(undefined, [
      'admission',
      'check',
      '-f',
      file('ok.yaml', MANIFEST.split('---\n')[1]!),
      '--pss',
      'restricted',
      '--pss-version',
      'v1.30',
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'ADMITTED  Deployment prod/api\n1 admitted, 0 denied\n');
  });

  it('reads JSON, a List, stdin; objects without a namespace take --namespace', async () => {
    const list = JSON.stringify({
      apiVersion: 'v1',
      kind: 'List',
      items: [{ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'p' }, spec: { hostNetwork: true, containers: [{ name: 'c', image: 'x' }] } }],
    });
    const r = await writ(undefined, ['admission', 'check', '-f', '-', '--pss', 'baseline', '-n', 'team-a', '-o', 'json'], { input: list });
    assert.equal(r.code, 3, r.stderr);
    const [res] = (JSON.parse(r.stdout) as { results: Array<{ namespace: string; violations: Array<{ control: string; container: string | null }> }> }).results;
    assert.equal(res!.namespace, 'team-a');
    assert.deepEqual(res!.violations, [
      { control: 'hostNamespaces', message: 'host namespaces (hostNetwork=true)', container: null, policies: ['--pss baseline'] },
    ]);
  });

  it('--pss privileged admits everything, and the help says so', async () => {
    const r = await writ(undefined, ['admission', 'check', '-f', file('priv.yaml', MANIFEST), '--pss', 'privileged']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^ADMITTED {2}Pod prod\/web\n/);
    const help = await writ(undefined, ['admission', 'check', '--help']);
    assert.match(help.stdout.replace(/\s+/g, ' '), /privileged \(which admits everything/);
  });

  it('a namespace no policy matches: ADMITTED, saying no policy applies', async () => {
    const policy = file(
      'prod-only.yaml',
      'apiVersion: writ.dev/v1\nkind: AdmissionPolicy\nmetadata: { name: prod }\nspec:\n  namespaces: [prod]\n  podSecurity: { level: baseline }\n',
    );
    const r = await writ(undefined, ['admission', 'check', '-f', file('ns.yaml', MANIFEST), '--policy', policy, '-n', 'dev']);
    assert.equal(r.code, 3, r.stderr);
    const staging = MANIFEST.replaceAll('namespace: prod', 'namespace: staging');
    const s = await writ(undefined, ['admission', 'check', '-f', file('staging.yaml', staging), '--policy', policy]);
    assert.equal(s.code, 0, s.stderr);
    assert.equal(
      s.stdout,
      'ADMITTED  Pod staging/web (no policy applies to namespace staging)\nADMITTED  Deployment staging/api (no policy applies to namespace staging)\n2 admitted, 0 denied\n',
    );
  });

  it('the same violation from --pss and from a --policy: listed once, naming both sources', async () => {
    const policy = file(
      'prod-baseline.yaml',
      'apiVersion: writ.dev/v1\nkind: AdmissionPolicy\nmetadata: { name: prod }\nspec:\n  namespaces: [prod]\n  podSecurity: { level: baseline }\n',
    );
    const args = ['admission', 'check', '-f', file('dup.yaml', MANIFEST.split('---\n')[0]!), '--pss', 'baseline', '--policy', policy];
    const t = await writ(undefined, args);
    assert.equal(t.code, 3, t.stderr);
    assert.equal(
      t.stdout,
      'DENIED    Pod prod/web\n  privileged: privileged (container "app" must not set securityContext.privileged=true) [--pss baseline, AdmissionPolicy/prod]\n0 admitted, 1 denied\n',
    );
    const j = await writ(undefined, [...args, '-o', 'json']);
    const [res] = (JSON.parse(j.stdout) as { results: Array<{ violations: Array<{ control: string; policies: string[] }> }> }).results;
    assert.deepEqual(
      res!.violations.map((v) => [v.control, v.policies]),
      [['privileged', ['--pss baseline', 'AdmissionPolicy/prod']]],
    );
  });

  it('usage errors exit 2: no --pss nor --policy, a bad level or version', async () => {
    const f = file('u.yaml', MANIFEST);
    for (const args of [[], ['--pss', 'strict'], ['--pss', 'baseline', '--pss-version', '1.30'], ['--pss-version', 'v1.30']]) {
      const r = await writ(undefined, ['admission', 'check', '-f', f, ...args]);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, /^writ: (give --pss|--pss|--pss-version)/);
    }
  });

  it('bad input exits 1 with a clear message and code: unknown kinds, YAML bombs, huge files, broken YAML, a missing file', async () => {
    const cases: Array<[string, RegExp]> = [
      ['apiVersion: v1\nkind: Service\nmetadata: { name: s }\n', /:1: kind "Service" \(s\) has no pod to check.*\[ERR_ADMISSION_OBJECT_INVALID\]/s],
      [
        'kind: Pod\nmetadata: { name: b }\nx: &a [y, y, y, y, y, y, y, y, y]\nz: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nspec: { containers: [*b, *b, *b, *b, *b, *b, *b, *b, *b] }\n',
        /cannot read this document: .*aliases are not allowed.*\[ERR_ADMISSION_OBJECT_INVALID\]/s,
      ],
      [
        `kind: Pod\nmetadata: { name: h }\nspec: { containers: [] }\n# ${'x'.repeat(17 * 1024 * 1024)}\n`,
        /larger than 16777216 bytes.*\[ERR_ADMISSION_OBJECT_INVALID\]/s,
      ],
      ['kind: Pod\nspec: [\n', /:3:1: Flow sequence .*\[ERR_ADMISSION_OBJECT_INVALID\]/s],
      [`${'['.repeat(200)}${']'.repeat(200)}`, /nested deeper than 64 levels/],
    ];
    for (const [i, [text, want]] of cases.entries()) {
      // A CLI that hung would be killed by run()'s guard: its exit code would not be 1.
      const r = await writ(undefined, ['admission', 'check', '-f', file(`bad${i}.yaml`, text), '--pss', 'baseline']);
      assert.equal(r.code, 1, `${i}: ${r.stderr}`);
      assert.match(r.stderr, want);
    }
    const missing = await writ(undefined, ['admission', 'check', '-f', join(dir, 'nope.yaml'), '--pss', 'baseline']);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /cannot read .*nope.yaml: ENOENT \[ERR_ADMISSION_OBJECT_INVALID\]/);
    const noPolicy = await writ(undefined, ['admission', 'check', '-f', file('np.yaml', MANIFEST), '--policy', join(dir, 'nope-policy.yaml')]);
    assert.equal(noPolicy.code, 1);
    assert.match(noPolicy.stderr, /cannot read .*nope-policy.yaml: ENOENT \[ERR_POLICY_INVALID\]/);
    const skipped = await writ(undefined, [
      'admission',
      'check',
      '-f',
      file('mixed.yaml', `${MANIFEST}---\napiVersion: v1\nkind: Service\nmetadata: { name: s }\n`),
      '--pss',
      'baseline',
      '--ignore-other-kinds',
    ]);
    assert.equal(skipped.code, 3, skipped.stderr);
  });

  it('an invalid --policy file exits 1 with its line numbers', async () => {
    const p = file('bad-policy.yaml', 'apiVersion: writ.dev/v1\nkind: AdmissionPolicy\nmetadata: { name: p }\nspec:\n  namespaces: [prod]\n  mode: block\n');
    const r = await writ(undefined, ['admission', 'check', '-f', file('m2.yaml', MANIFEST), '--policy', p]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /bad-policy\.yaml:6:9: spec\.mode must be enforce, warn or audit \[ERR_POLICY_INVALID\]/);
  });
});

describe('one exception, honoured identically by evaluate() and writ admission check, until it expires', () => {
  const POLICY = `apiVersion: writ.dev/v1
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
  containers: [exporter]
  controls: [hostPathVolumes, hostNamespaces]
  owner: platform-team
  reason: "TICKET-123: reads host metrics"
  expires: 2027-03-01T00:00:00Z
`;
  const DAEMONSET = `apiVersion: apps/v1
kind: DaemonSet
metadata: { name: node-exporter, namespace: monitoring }
spec:
  selector: { matchLabels: { app: node-exporter } }
  template:
    metadata: { labels: { app: node-exporter } }
    spec:
      hostPID: true
      hostNetwork: true
      volumes: [{ name: proc, hostPath: { path: /proc } }]
      containers: [{ name: exporter, image: "quay.io/prometheus/node-exporter:v1.8.2" }]
`;
  const at = {
    before: '2027-02-28T23:59:59Z',
    after: '2027-03-01T00:00:00Z',
  };
  for (const [when, time] of Object.entries(at))
    it(`${when} it expires`, async () => {
      const now = Date.parse(time);
      const set = parseAdmission(POLICY, { now: Date.parse('2026-12-01T00:00:00Z') });
      const [o] = readObjects(DAEMONSET);
      const v = await evaluate({ kind: o!.kind, namespace: o!.namespace, name: o!.name, operation: 'CREATE', object: o!.object }, set, { now });
      const r = await writ(undefined, [
        'admission',
        'check',
        '-f',
        file('ds.yaml', DAEMONSET),
        '--policy',
        file('mon.yaml', POLICY),
        '--at',
        time,
        '-o',
        'json',
      ]);
      const [res] = (JSON.parse(r.stdout) as { results: Array<{ allowed: boolean; violations: Array<{ control: string }> }> }).results;
      assert.equal(v.allowed, when === 'before', v.message);
      assert.equal(res!.allowed, v.allowed);
      assert.equal(r.code, v.allowed ? 0 : 3, r.stderr);
      assert.deepEqual(
        res!.violations.map((x) => x.control),
        v.violations.map((x) => x.control),
      );
      if (when === 'before')
        assert.deepEqual(v.exceptionsUsed, [{ name: 'legacy-agent-hostpath', controls: ['hostNamespaces', 'hostPathVolumes'], containers: [] }]);
      else {
        assert.deepEqual(v.exceptionsUsed, []);
        assert.match(r.stderr, /exception legacy-agent-hostpath expired at 2027-03-01T00:00:00.000Z: it has no effect/);
        assert.match(
          v.message,
          /^violates PodSecurity "baseline:latest": host namespaces \(hostNetwork=true, hostPID=true\), hostPath volumes \(volume "proc"\)$/,
        );
      }
    });

  describe('the same documents in the server policy store', () => {
    let srv: ServerProcess;
    before(async () => {
      srv = await startServerProcess();
    });
    after(async () => {
      await srv.stop();
      cleanup(srv.dataDir);
    });

    it('apply stores them under Kind/name beside access policies; list shows kinds; get, diff, rollback, delete work', async () => {
      const access =
        'apiVersion: writ.dev/v1\nkind: AccessPolicy\nmetadata: { name: monitoring }\nspec:\n  to: spiffe://e2e.test/ns/monitoring/**\n  rules: [{ effect: allow, from: ["spiffe://e2e.test/ns/prom/*"] }]\n';
      const applied = await writ(srv, ['policy', 'apply', '-f', file('all.yaml', `${access}---\n${POLICY}`), '-o', 'json']);
      assert.equal(applied.code, 0, applied.stderr);
      assert.deepEqual(JSON.parse(applied.stdout).added, ['AdmissionException/legacy-agent-hostpath', 'AdmissionPolicy/monitoring', 'monitoring']);
      const list = JSON.parse((await writ(srv, ['policy', 'list', '-o', 'json'])).stdout) as { revision: number; policies: Array<Record<string, unknown>> };
      assert.deepEqual(
        list.policies.map((p) => [p['name'], p['kind']]),
        [
          ['AdmissionException/legacy-agent-hostpath', 'AdmissionException'],
          ['AdmissionPolicy/monitoring', 'AdmissionPolicy'],
          ['monitoring', 'AccessPolicy'],
        ],
      );
      // Access policies and admission documents each in a table of their own columns.
      const table = await writ(srv, ['policy', 'list']);
      assert.equal(table.code, 0, table.stderr);
      const [accessTable, admissionTable] = table.stdout.split('\n\n');
      assert.match(accessTable!, /^NAME +TO +MODE +RULES\nmonitoring +spiffe:\/\/e2e.test\/ns\/monitoring\/\*\* +enforce +1$/);
      assert.match(admissionTable!, /^ADMISSION +NAMESPACES +MODE +CHECKS$/m);
      assert.match(admissionTable!, /^AdmissionPolicy\/monitoring +monitoring +enforce +podSecurity baseline:latest$/m);
      assert.match(
        admissionTable!,
        /^AdmissionException\/legacy-agent-hostpath +monitoring +until 2027-03-01T00:00:00.000Z +waives hostPathVolumes,hostNamespaces$/m,
      );
      // A name without its kind: the not-found error names the admission document of that name.
      const bare = await writ(srv, ['policy', 'get', 'legacy-agent-hostpath']);
      assert.equal(bare.code, 1);
      assert.match(bare.stderr, /did you mean AdmissionException\/legacy-agent-hostpath\?.*\[ERR_NOT_FOUND\]/);
      const unknown = await writ(srv, ['policy', 'get', 'nothing-here']);
      assert.equal(unknown.code, 1);
      assert.doesNotMatch(unknown.stderr, /did you mean/);
      const got = await writ(srv, ['policy', 'get', 'AdmissionPolicy/monitoring']);
      assert.equal(got.code, 0, got.stderr);
      assert.equal(got.stdout, `${POLICY.split('---\n')[0]!}`);
      // The access policy of the same name is its own document, not the admission one.
      assert.equal((await writ(srv, ['policy', 'get', 'monitoring'])).stdout, access);
      // What the webhook evaluates is read back from the store as written.
      const res = await fetchPolicies(srv);
      const set = admissionSetOf(res, Date.parse('2026-12-01T00:00:00Z'));
      assert.deepEqual([set.policies.map((p) => p.name), set.exceptions.map((e) => e.name)], [['monitoring'], ['legacy-agent-hostpath']]);

      const changed = await writ(srv, [
        'policy',
        'apply',
        '-f',
        file('warn.yaml', POLICY.split('---\n')[0]!.replace('mode: enforce', 'mode: warn')),
        '-o',
        'json',
      ]);
      assert.deepEqual(JSON.parse(changed.stdout).changed, ['AdmissionPolicy/monitoring']);
      const diff = JSON.parse((await writ(srv, ['policy', 'diff', String(list.revision), '-o', 'json'])).stdout) as {
        changes: Array<{ name: string; diff: string[] }>;
      };
      assert.deepEqual(
        diff.changes.map((c) => [c.name, c.diff.filter((l) => l[0] !== ' ')]),
        [['AdmissionPolicy/monitoring', ['-  mode: enforce', '+  mode: warn']]],
      );
      assert.equal((await writ(srv, ['policy', 'rollback', String(list.revision)])).code, 0);
      assert.match((await writ(srv, ['policy', 'get', 'AdmissionPolicy/monitoring'])).stdout, /mode: enforce/);
      const del = await writ(srv, ['policy', 'delete', 'AdmissionException/legacy-agent-hostpath']);
      assert.equal(del.code, 0, del.stderr);
      assert.deepEqual(
        (JSON.parse((await writ(srv, ['policy', 'list', '-o', 'json'])).stdout) as { policies: Array<{ name: string }> }).policies.map((p) => p.name),
        ['AdmissionPolicy/monitoring', 'monitoring'],
      );
    });

    it('a signature key file the server cannot read is applied with a warning that says so', async () => {
      const text = `apiVersion: writ.dev/v1\nkind: AdmissionPolicy\nmetadata: { name: signed }\nspec:\n  namespaces: [prod]\n  images: { signatures: [{ name: k, keys: [{ file: /nonexistent/cosign.pub }] }] }\n`;
      const r = await writ(srv, ['policy', 'apply', '-f', file('signed.yaml', text)]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stderr, 'warning: AdmissionPolicy signed: key file /nonexistent/cosign.pub cannot be read on this server (ENOENT)\n');
      assert.equal((await writ(srv, ['policy', 'delete', 'AdmissionPolicy/signed'])).code, 0);
    });

    it('refuses a relative key file: beside the policy file for writ admission check, but the server has no such place', async () => {
      const before = JSON.parse((await writ(srv, ['policy', 'list', '-o', 'json'])).stdout).revision;
      const text = `apiVersion: writ.dev/v1\nkind: AdmissionPolicy\nmetadata: { name: signed }\nspec:\n  namespaces: [prod]\n  images: { signatures: [{ name: k, keys: [{ file: k2.pub }] }] }\n`;
      const r = await writ(srv, ['policy', 'apply', '-f', file('relative.yaml', text)]);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /key file "k2\.pub" is a relative path.*absolute path, or the key inline/);
      assert.equal(JSON.parse((await writ(srv, ['policy', 'list', '-o', 'json'])).stdout).revision, before, 'nothing stored');
    });

    it('refuses an invalid admission document with its line, locally and on the server, and stores nothing', async () => {
      const before = JSON.parse((await writ(srv, ['policy', 'list', '-o', 'json'])).stdout).revision;
      const bad = POLICY.replace('controls: [hostPathVolumes, hostNamespaces]', 'controls: [hostPathVolumes, hostNetwork]');
      const r = await writ(srv, ['policy', 'apply', '-f', file('bad.yaml', bad)]);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /bad\.yaml:16:31: spec\.controls\[1\]: unknown control "hostNetwork"/);
      // The server checks too (a client that skips the local check).
      const direct = await postPolicies(srv, bad);
      assert.equal(direct.status, 400);
      assert.match(direct.body, /"code":"ERR_POLICY_INVALID".*request:16:31: spec.controls\[1\]: unknown control/s);
      const expired = await postPolicies(srv, POLICY.replace('2027-03-01', '2020-01-01'));
      assert.equal(expired.status, 400);
      assert.match(expired.body, /spec.expires is in the past/);
      assert.equal(JSON.parse((await writ(srv, ['policy', 'list', '-o', 'json'])).stdout).revision, before);
    });
  });
});

async function postPolicies(srv: ServerProcess, yaml: string): Promise<{ status: number; body: string }> {
  const { request } = await import('node:https');
  const { readFileSync } = await import('node:fs');
  const ca = readFileSync(join(srv.dataDir, 'bundle.pem'));
  return new Promise((resolve, reject) => {
    const req = request(
      `${srv.url}/v1/policies`,
      { method: 'POST', ca, checkServerIdentity: () => undefined, headers: { authorization: `Bearer ${srv.adminToken}`, 'content-type': 'application/json' } },
      (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on('error', reject);
    req.end(JSON.stringify({ yaml }));
  });
}

/** The stored set as key -> YAML, through the API (what the webhook reads from the store). */
async function fetchPolicies(srv: ServerProcess): Promise<Record<string, string>> {
  const list = JSON.parse((await writ(srv, ['policy', 'list', '-o', 'json'])).stdout) as { policies: Array<{ name: string }> };
  const out: Record<string, string> = {};
  for (const p of list.policies) out[p.name] = (await writ(srv, ['policy', 'get', p.name])).stdout;
  return out;
}
