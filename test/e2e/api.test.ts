/** The admin API's contract on both stores: reserved identities, refusals of malformed input, and the endpoints the CLI reads. */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { generateKeyPairSync } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { createCsr, toPem } from '@writ/spiffe';
import { encodeDecision, encodeReport, type ReportedDecision } from '@writ/sdk/internal';
import { ROOT } from './helpers.ts';
import { startInProcess, type InProcessServer } from './in-process.ts';

const TD = 'api.test';
const AGENT = `spiffe://${TD}/writ/agent/n1`;
const POLICY = `apiVersion: writ.dev/v1
kind: AccessPolicy
metadata: { name: orders }
spec:
  to: spiffe://${TD}/ns/orders
  rules:
    - { effect: allow, from: ["spiffe://${TD}/ns/web"], actions: [{ methods: [GET], paths: ["/v1/*"] }] }
`;
const testsExpecting = (webGet: 'allow' | 'deny'): string => `kind: PolicyTest
cases:
  - { name: web reads orders, from: "spiffe://${TD}/ns/web", to: "spiffe://${TD}/ns/orders", action: GET /v1/x, expect: ${webGet} }
  - { name: db cannot, from: "spiffe://${TD}/ns/db", to: "spiffe://${TD}/ns/orders", action: GET /v1/x, expect: deny }
`;

for (const db of ['sqlite', 'postgres'] as const)
  describe(`admin API on ${db}`, () => {
    let s: InProcessServer;
    before(async () => {
      s = await startInProcess(db, TD);
    });
    after(() => s?.stop());

    it('refuses entries and mints that claim spiffe://TD/writ/** (the server and agents), and IDs without a path', async () => {
      const entry = (spiffeId: string) => ({ spiffeId, parentId: AGENT, selectors: ['unix:uid:0'] });
      for (const id of [`spiffe://${TD}/writ/server`, `spiffe://${TD}/writ/agent/n2`, `spiffe://${TD}/writ`]) {
        const r = await s.call('POST', '/v1/entries', { body: entry(id) });
        assert.equal(r.status, 400, r.text);
        assert.deepEqual([r.json['code'], r.json['field']], ['ERR_ENTRY_RESERVED_ID', 'spiffeId']);
        const batch = await s.call('POST', '/v1/entries/batch', { body: { entries: [entry(`spiffe://${TD}/ns/ok`), entry(id)] } });
        assert.deepEqual([batch.status, batch.json['field']], [400, 'entries[1].spiffeId']);
        const jwt = await s.call('POST', '/v1/svids/jwt', { body: { spiffeId: id, audience: ['x'] } });
        const x509 = await s.call('POST', '/v1/svids/x509', { body: { spiffeId: id, csr: 'checked after the ID' } });
        assert.deepEqual([jwt.status, jwt.json['code'], x509.status, x509.json['code']], [400, 'ERR_ENTRY_RESERVED_ID', 400, 'ERR_ENTRY_RESERVED_ID']);
      }
      assert.equal((await s.call('POST', '/v1/entries', { body: entry(`spiffe://${TD}`) })).json['code'], 'ERR_SPIFFE_ID_INVALID');
      // Only the namespace itself: a workload named /writer is fine, and nothing reserved was stored.
      const ok = await s.call('POST', '/v1/entries', { body: entry(`spiffe://${TD}/writer`) });
      assert.equal(ok.status, 201, ok.text);
      for (const method of ['PATCH', 'PUT']) {
        const r = await s.call(method, `/v1/entries/${ok.json['id']}`, { body: entry(`spiffe://${TD}/writ/server`) });
        assert.equal(r.json['code'], 'ERR_ENTRY_RESERVED_ID', `${method}: ${r.text}`);
      }
      const list = (await s.call('GET', '/v1/entries')).json['entries'] as Array<{ spiffeId: string }>;
      assert.deepEqual(
        list.map((e) => e.spiffeId),
        [`spiffe://${TD}/writer`],
      );
    });

    it('an entry in the reserved namespace stored before it was refused cannot be changed by a PATCH that leaves its ID out', async () => {
      const [old] = await s.srv.store.createEntries(
        [
          {
            spiffeId: `spiffe://${TD}/writ/server`,
            parentId: AGENT,
            selectors: ['unix:uid:7'],
            x509SvidTtl: 0,
            jwtSvidTtl: 0,
            dnsNames: [],
            federatesWith: [],
            admin: false,
            hint: '',
            expiresAt: null,
          },
        ],
        Date.now(),
      );
      const r = await s.call('PATCH', `/v1/entries/${old!.id}`, { body: { selectors: ['unix:uid:0'], dnsNames: ['localhost'] } });
      assert.equal(r.status, 400, r.text);
      assert.deepEqual([r.json['code'], r.json['field']], ['ERR_ENTRY_RESERVED_ID', 'spiffeId']);
      assert.deepEqual((await s.srv.store.getEntry(old!.id))?.selectors, ['unix:uid:7']);
      await s.srv.store.deleteEntry(old!.id);
    });

    it('answers malformed client input with a 400 naming the field, never a 500', async () => {
      const cases: Array<[string, string, object | string | undefined, string]> = [
        ['GET', '/v1/agents/%ZZ', undefined, 'id'],
        ['POST', '/v1/agents/%ZZ/evict', undefined, 'id'],
        ['GET', '/v1/policies/%E0%A4%A', undefined, 'name'],
        ['DELETE', '/v1/quarantine/%', undefined, 'id'],
        ['GET', '/v1/federated-bundles/%ZZ', undefined, 'trustDomain'],
        ['GET', '/v1/decisions/%ZZ', undefined, 'id'],
        ['GET', '/v1/policies/history?limit=1.5', undefined, 'limit'],
        ['GET', '/v1/policies/history?limit=-1', undefined, 'limit'],
        ['GET', '/v1/decisions?limit=1.5', undefined, 'limit'],
        ['GET', '/v1/decisions?limit=-1', undefined, 'limit'],
        ['GET', '/v1/decisions?after=1e400', undefined, 'after'],
        ['GET', '/v1/policies/diff?from=1.5', undefined, 'from'],
        ['GET', '/v1/entries?pageSize=1e3', undefined, 'pageSize'],
        ['POST', '/v1/policies/rollback', `{"revision": ${'['.repeat(5000)}1${']'.repeat(5000)}}`, 'revision'],
        ['POST', '/v1/policies/rollback', { revision: [1] }, 'revision'],
        ['GET', '/v1/decisions?to=spiffe://api.test/a%00b', undefined, 'to'],
        ['GET', '/v1/entries?selector=unix:uid:%00', undefined, 'selector'],
        ['POST', '/v1/quarantine', { spiffeId: `spiffe://${TD}/ns/x`, reason: 'a\u0000b' }, 'reason'],
        ['POST', '/v1/entries', { spiffeId: `spiffe://${TD}/ns/x`, parentId: AGENT, selectors: ['unix:uid:0'], hint: 'h\u0000' }, 'hint'],
        ['POST', '/v1/admin-tokens', { role: 'viewer', name: 'n\u0000' }, 'name'],
      ];
      for (const [method, path, body, field] of cases) {
        const r = await s.call(method, path, body === undefined ? {} : { body });
        assert.equal(r.status, 400, `${method} ${path}: ${r.text}`);
        assert.equal(r.json['field'], field, `${method} ${path}: ${r.text}`);
      }
      // The rollback's nested array is refused for its depth before any handler sees it.
      const deep = await s.call('POST', '/v1/policies/rollback', { body: `{"revision": ${'['.repeat(5000)}1${']'.repeat(5000)}}` });
      assert.equal(deep.json['code'], 'ERR_JSON_INVALID');
      const long = await s.call('GET', `/v1/agents/${'a'.repeat(17_000)}`);
      assert.deepEqual([long.status, long.json['code']], [431, 'ERR_HEADERS_TOO_LARGE']);
    });

    it('GET /v1/version, /v1/whoami and /v1/ca/authorities', async () => {
      const v = await s.call('GET', '/v1/version', { token: null });
      const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
      assert.deepEqual(v.json, { version: pkg.version, trustDomain: TD });
      const created = (await s.call('POST', '/v1/admin-tokens', { body: { role: 'viewer', name: 'ci', ttl: '1h' } })).json;
      const me = await s.call('GET', '/v1/whoami', { token: created['token'] as string });
      assert.deepEqual(me.json, { role: 'viewer', tokenId: created['id'], name: 'ci', expiresAt: created['expiresAt'] });
      assert.match(String(me.json['expiresAt']), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
      assert.equal((await s.call('GET', '/v1/whoami')).json['expiresAt'], null, 'the initial admin token does not expire');
      assert.equal((await s.call('GET', '/v1/whoami', { token: null })).status, 401);
      const auth = (await s.call('GET', '/v1/ca/authorities', { token: created['token'] as string })).json['authorities'] as Array<Record<string, string>>;
      for (const kind of ['x509', 'jwt']) {
        const active = auth.filter((a) => a.kind === kind && a.status === 'active');
        assert.equal(active.length, 1, `one active ${kind} authority: ${JSON.stringify(auth)}`);
        assert.deepEqual(Object.keys(active[0]!).sort(), ['id', 'kind', 'notAfter', 'notBefore', 'serverId', 'status']);
        assert.ok(Date.parse(active[0]!.notBefore!) < Date.now() && Date.parse(active[0]!.notAfter!) > Date.now());
      }
    });

    it('the OpenAPI document shows the new endpoints and the declared query parameters and body fields', async () => {
      const doc = (await s.call('GET', '/v1/openapi.json', { token: null })).json as { paths: Record<string, Record<string, Record<string, unknown>>> };
      for (const [path, method] of [
        ['/v1/version', 'get'],
        ['/v1/whoami', 'get'],
        ['/v1/ca/authorities', 'get'],
        ['/v1/decisions/{id}', 'get'],
      ] as const)
        assert.ok(doc.paths[path]?.[method], `${method} ${path}`);
      const limit = (doc.paths['/v1/decisions']!['get']!['parameters'] as Array<{ name: string; schema: unknown }>).find((p) => p.name === 'limit');
      assert.deepEqual(limit?.schema, { type: 'integer', minimum: 1, maximum: 10_000 });
      const apply = doc.paths['/v1/policies']!['post']!['requestBody'] as { content: { 'application/json': { schema: { properties: object } } } };
      assert.deepEqual(Object.keys(apply.content['application/json'].schema.properties), ['yaml', 'dryRun', 'comment', 'replace', 'skipTests']);
    });

    it('GET /v1/decisions/{id}: one decision shaped like the list items; 404 for an unknown id', async () => {
      const at = Date.now();
      await s.srv.store.addDecisions([
        {
          id: 'dec-1',
          at,
          from: '',
          to: `spiffe://${TD}/ns/orders`,
          action: 'GET /v1/x',
          decision: 'deny',
          reason: 'NO_MATCHING_ALLOW',
          policyRevision: 0,
          rule: '',
          reporter: AGENT,
        },
      ]);
      const one = await s.call('GET', '/v1/decisions/dec-1');
      assert.equal(one.status, 200, one.text);
      const listed = (await s.call('GET', '/v1/decisions')).json['decisions'] as unknown[];
      assert.deepEqual(one.json, listed[0]);
      assert.equal(one.json['from'], null);
      assert.equal(one.json['at'], new Date(at).toISOString());
      const missing = await s.call('GET', '/v1/decisions/nope');
      assert.deepEqual([missing.status, missing.json['code']], [404, 'ERR_NOT_FOUND']);
    });

    describe('decision reports: what cannot be stored or shown is refused, never a 500 the agent would retry for ever', () => {
      let agent: { key: string; cert: string };
      before(async () => {
        const joinToken = (await s.call('POST', '/v1/join-tokens', { body: { nodeName: 'reporter' } })).json['token'] as string;
        const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
        const csr = toPem('CERTIFICATE REQUEST', createCsr({ key: privateKey, keyType: 'ec-p256' }, publicKey));
        const attested = await s.call('POST', '/v1/agent/attest/join-token', { body: { joinToken, csr } });
        assert.equal(attested.status, 201, attested.text);
        agent = { key: privateKey.export({ format: 'pem', type: 'pkcs8' }) as string, cert: attested.json['svid'] as string };
      });
      const decision = (to: string, over: Partial<ReportedDecision> = {}): ReportedDecision => ({
        id: '',
        at: Date.now(),
        from: '',
        to,
        action: 'GET /x',
        decision: 'deny',
        reason: 'NO_MATCHING_ALLOW',
        rule: '',
        policyRevision: 1,
        latencyNs: 0,
        ...over,
      });
      const droppedByServer = async (): Promise<number> =>
        Number(/writ_decision_log_dropped_total\{reporter="server"\} (\d+)/.exec((await s.call('GET', '/metrics')).text)?.[1] ?? 0);

      it('protobuf: a decision with a NUL byte or a time past a day ahead is dropped and counted, the rest stored, the log still answers', async () => {
        const to = `spiffe://${TD}/ns/proto-report`;
        const before = await droppedByServer();
        const report = encodeReport(
          [
            encodeDecision(decision(to, { action: 'GET /kept' })),
            encodeDecision(decision(to, { action: 'GET /a\u0000b' })),
            encodeDecision(decision(`${to}\u0000`)),
            encodeDecision(decision(to, { at: 9e15 })),
          ],
          0,
        );
        const r = await s.call('POST', '/v1/agent/decisions', { cert: agent, body: report, contentType: 'application/x-protobuf' });
        assert.equal(r.status, 200, r.text);
        assert.deepEqual(r.json, { stored: 1 });
        assert.equal((await droppedByServer()) - before, 3, 'the three that cannot be stored are counted as dropped by the server');
        const log = await s.call('GET', `/v1/decisions?to=${encodeURIComponent(to)}`);
        assert.equal(log.status, 200, log.text);
        assert.deepEqual(
          (log.json['decisions'] as Array<Record<string, unknown>>).map((d) => d['action']),
          ['GET /kept'],
        );
      });

      it('JSON: an `at` or `policyRevision` that is no whole number in range is a 400 naming it, and nothing of the batch is stored', async () => {
        const to = `spiffe://${TD}/ns/json-report`;
        const cases: Array<[Record<string, unknown>, string]> = [
          [{ at: 1.5 }, 'at'],
          [{ at: 1e300 }, 'at'],
          [{ at: 9e15 }, 'at'],
          [{ at: -1 }, 'at'],
          [{ at: '2026-01-01' }, 'at'],
          [{ policyRevision: 1.5 }, 'policyRevision'],
          [{ policyRevision: 1e300 }, 'policyRevision'],
          [{ policyRevision: -1 }, 'policyRevision'],
        ];
        for (const [over, field] of cases) {
          const body = {
            decisions: [
              { to, decision: 'allow', at: Date.now() },
              { to, decision: 'deny', reason: 'NO_MATCHING_ALLOW', ...over },
            ],
            dropped: 0,
          };
          const r = await s.call('POST', '/v1/agent/decisions', { cert: agent, body });
          assert.equal(r.status, 400, `${JSON.stringify(over)}: ${r.text}`);
          assert.deepEqual([r.json['code'], r.json['field']], ['ERR_FIELD_INVALID', `decisions[1].${field}`], JSON.stringify(over));
        }
        const log = await s.call('GET', `/v1/decisions?to=${encodeURIComponent(to)}`);
        assert.equal(log.status, 200, log.text);
        assert.deepEqual(log.json['decisions'], []);
        // Absent numbers still default: the server's clock, revision 0.
        const ok = await s.call('POST', '/v1/agent/decisions', { cert: agent, body: { decisions: [{ to, decision: 'allow' }] } });
        assert.deepEqual([ok.status, ok.json], [200, { stored: 1 }], ok.text);
      });

      it('a stored row whose time is no date (written before times were checked) shows `at: null` instead of failing the whole log', async () => {
        const to = `spiffe://${TD}/ns/old-row`;
        await s.srv.store.addDecisions([
          { id: 'old-bad-at', at: 9e15, from: '', to, action: 'GET /x', decision: 'allow', reason: 'ALLOW_RULE', policyRevision: 0, rule: '', reporter: AGENT },
        ]);
        const log = await s.call('GET', '/v1/decisions');
        assert.equal(log.status, 200, log.text);
        assert.equal((log.json['decisions'] as Array<Record<string, unknown>>).find((d) => d['id'] === 'old-bad-at')?.['at'], null);
        const one = await s.call('GET', '/v1/decisions/old-bad-at');
        assert.deepEqual([one.status, one.json['at']], [200, null], one.text);
      });
    });

    it('POST /v1/policies runs the PolicyTest cases of the file against the proposed set, and applies nothing when one fails', async () => {
      const failing = await s.call('POST', '/v1/policies', { body: { yaml: `${POLICY}---\n${testsExpecting('deny')}` } });
      assert.equal(failing.status, 400, failing.text);
      assert.equal(failing.json['code'], 'ERR_POLICY_TEST_FAILED');
      assert.deepEqual((failing.json['details'] as { failures: unknown }).failures, [
        {
          name: 'web reads orders',
          expected: 'deny',
          got: 'allow',
          reason: 'ALLOW_RULE',
          rule: (failing.json['details'] as { failures: [{ rule: string }] }).failures[0].rule,
        },
      ]);
      assert.equal((await s.call('GET', '/v1/policies')).json['revision'], 0, 'nothing was applied');
      const dry = await s.call('POST', '/v1/policies', { body: { yaml: `${testsExpecting('allow')}---\n${POLICY}`, dryRun: true } });
      assert.deepEqual([dry.status, dry.json['tests'], dry.json['changed']], [200, { passed: 2, failed: 0 }, ['orders']]);
      const skipped = await s.call('POST', '/v1/policies', { body: { yaml: `${POLICY}---\n${testsExpecting('deny')}`, skipTests: true } });
      assert.equal(skipped.status, 201, skipped.text);
      assert.equal((await s.call('GET', '/v1/policies/orders')).text, POLICY, 'the stored source is the policy, not the test document');
      // Tests alone change nothing and pass against the current set; other kinds are refused.
      const alone = await s.call('POST', '/v1/policies', { body: { yaml: testsExpecting('allow') } });
      assert.deepEqual([alone.status, alone.json['tests'], alone.json['changed']], [200, { passed: 2, failed: 0 }, []]);
      const other = await s.call('POST', '/v1/policies', { body: { yaml: `${POLICY}---\nkind: Secret\n` } });
      assert.equal(other.json['code'], 'ERR_POLICY_INVALID');
    });
  });
