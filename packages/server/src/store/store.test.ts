/** The store conformance suite: every case runs against SQLite and PostgreSQL alike. */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { readFileSync } from 'node:fs';
import { isWritError } from '@writ/spiffe';
import { parseReport, type Report } from '@writ/vuln';
import { STORE_FACTORIES, type TestStore } from '../testing/stores.ts';
import type { EntryInput, StoreChange } from './types.ts';

const base: EntryInput = {
  spiffeId: 'spiffe://example.org/web',
  parentId: 'spiffe://example.org/writ/agent/node1',
  selectors: ['unix:uid:1000'],
  x509SvidTtl: 0,
  jwtSvidTtl: 0,
  dnsNames: [],
  federatesWith: [],
  admin: false,
  hint: '',
  expiresAt: null,
};

const TRIVY_REPORT = parseReport(readFileSync(new URL('../../../vuln/src/testdata/trivy-image.json', import.meta.url)));

for (const factory of STORE_FACTORIES) {
  describe(`store conformance: ${factory.name.replace('TestStore', '')}`, () => {
    let t: TestStore;
    before(async () => {
      t = await factory();
    });
    after(async () => t.dispose());

    it('creates, reads, updates and deletes an entry with increasing revisions', async () => {
      const [e] = await t.store.createEntries([{ ...base, selectors: ['unix:uid:1000', 'unix:gid:50', 'unix:uid:1000'], dnsNames: ['web.local'] }], 1000);
      assert.ok(e);
      assert.deepEqual(e.selectors, ['unix:gid:50', 'unix:uid:1000'], 'selectors sorted and de-duplicated');
      const got = await t.store.getEntry(e.id);
      assert.deepEqual(got, e);
      const upd = await t.store.updateEntry(e.id, { ...base, hint: 'web', admin: true, expiresAt: 5000 }, 2000);
      assert.ok(upd.revision > e.revision);
      assert.equal(upd.createdAt, 1000);
      assert.equal(upd.updatedAt, 2000);
      assert.deepEqual(await t.store.getEntry(e.id), upd);
      assert.equal(await t.store.deleteEntry(e.id), true);
      assert.equal(await t.store.getEntry(e.id), undefined);
      assert.equal(await t.store.deleteEntry(e.id), false);
    });

    it('rejects a duplicate entry and a batch containing one, creating nothing', async () => {
      await t.store.createEntries([{ ...base, spiffeId: 'spiffe://example.org/dup' }], 1);
      await assert.rejects(t.store.createEntries([{ ...base, spiffeId: 'spiffe://example.org/dup' }], 1), (e) => isWritError(e, 'ERR_ENTRY_EXISTS'));
      // same selectors in another order are the same identity
      await assert.rejects(
        t.store.createEntries(
          [
            { ...base, spiffeId: 'spiffe://example.org/new1' },
            { ...base, spiffeId: 'spiffe://example.org/dup' },
          ],
          1,
        ),
        (e) => isWritError(e, 'ERR_ENTRY_EXISTS'),
      );
      const page = await t.store.listEntries({ spiffeId: 'spiffe://example.org/new1' });
      assert.equal(page.items.length, 0, 'the failed batch left nothing behind');
      await assert.rejects(
        t.store.createEntries(
          [
            { ...base, spiffeId: 'spiffe://example.org/x', selectors: ['a:1', 'b:2'] },
            { ...base, spiffeId: 'spiffe://example.org/x', selectors: ['b:2', 'a:1'] },
          ],
          1,
        ),
        (e) => isWritError(e, 'ERR_ENTRY_EXISTS') && e.field === 'entries[1]',
      );
    });

    it('updating an entry into a duplicate of another is refused and changes nothing', async () => {
      const [a, b] = await t.store.createEntries(
        [
          { ...base, spiffeId: 'spiffe://example.org/ua' },
          { ...base, spiffeId: 'spiffe://example.org/ub' },
        ],
        1,
      );
      await assert.rejects(t.store.updateEntry(b!.id, { ...base, spiffeId: 'spiffe://example.org/ua' }, 2), (e) => isWritError(e, 'ERR_ENTRY_EXISTS'));
      assert.deepEqual(await t.store.getEntry(b!.id), b);
      assert.ok(a);
      await assert.rejects(t.store.updateEntry('nope', base, 2), (e) => isWritError(e, 'ERR_ENTRY_NOT_FOUND'));
    });

    it('lists by parent, SPIFFE ID and selectors, with pagination that visits each entry once', async () => {
      const parent = 'spiffe://example.org/writ/agent/pager';
      const inputs = Array.from({ length: 25 }, (_, i) => ({
        ...base,
        parentId: parent,
        spiffeId: `spiffe://example.org/p/${i}`,
        selectors: i % 2 ? ['k8s:ns:a', 'k8s:sa:x'] : ['k8s:ns:a'],
      }));
      await t.store.createEntries(inputs, 1);
      const seen: string[] = [];
      let token: string | undefined;
      do {
        const page = await t.store.listEntries({ parentId: parent, pageSize: 10, ...(token ? { pageToken: token } : {}) });
        assert.ok(page.items.length <= 10);
        seen.push(...page.items.map((e) => e.spiffeId));
        token = page.nextPageToken;
      } while (token);
      assert.equal(seen.length, 25);
      assert.equal(new Set(seen).size, 25);
      const both = await t.store.listEntries({ parentId: parent, selectors: ['k8s:sa:x', 'k8s:ns:a'], pageSize: 100 });
      assert.equal(both.items.length, 12);
      const one = await t.store.listEntries({ spiffeId: 'spiffe://example.org/p/3' });
      assert.equal(one.items.length, 1);
      await assert.rejects(t.store.listEntries({ pageToken: '!!!' }), (e) => isWritError(e, 'ERR_PAGE_TOKEN_INVALID'));
    });

    it('join tokens are single use and expire', async () => {
      await t.store.createJoinToken({ hash: 'h1', nodeName: 'n1', expiresAt: 100, createdAt: 1 });
      await t.store.createJoinToken({ hash: 'h2', nodeName: 'n2', expiresAt: 100, createdAt: 1 });
      // Races for real on PostgreSQL (a pool of connections); one SQLite store queues its calls, so
      // join-token-race.test.ts races separate connections to one SQLite file.
      const results = await Promise.allSettled([t.store.redeemJoinToken('h1', 50), t.store.redeemJoinToken('h1', 50)]);
      assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1, 'exactly one racer wins');
      const loser = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
      assert.ok(isWritError(loser.reason, 'ERR_JOIN_TOKEN_USED'));
      await assert.rejects(t.store.redeemJoinToken('h2', 100), (e) => isWritError(e, 'ERR_JOIN_TOKEN_EXPIRED'));
      await assert.rejects(t.store.redeemJoinToken('zzz', 1), (e) => isWritError(e, 'ERR_JOIN_TOKEN_INVALID'));
    });

    it('admin tokens are found by hash and deleted', async () => {
      await t.store.createAdminToken({ id: 'a1', hash: 'ha', role: 'viewer', name: 'ci', createdAt: 1, expiresAt: null });
      assert.equal((await t.store.findAdminToken('ha'))?.role, 'viewer');
      assert.equal((await t.store.listAdminTokens()).length, 1);
      assert.equal(await t.store.deleteAdminToken('a1'), true);
      assert.equal(await t.store.findAdminToken('ha'), undefined);
    });

    it('authorities are saved atomically and bump the bundle sequence', async () => {
      const s0 = await t.store.bundleSequence();
      const a = { id: 'x1', kind: 'x509', serverId: 's', status: 'active', publicData: 'pem', notBefore: 1, notAfter: 2 } as const;
      await t.store.saveAuthorities([a, { ...a, id: 'j1', kind: 'jwt' }], []);
      assert.equal(await t.store.bundleSequence(), s0 + 1);
      await t.store.saveAuthorities([{ ...a, status: 'old' }], ['j1']);
      const all = await t.store.listAuthorities();
      assert.deepEqual(
        all.map((x) => [x.id, x.status]),
        [['x1', 'old']],
      );
      assert.equal(await t.store.bundleSequence(), s0 + 2);
    });

    it('federated bundles and agents round-trip', async () => {
      await t.store.setFederatedBundle({ trustDomain: 'other.org', bundle: '{"keys":[]}', updatedAt: 1 });
      await t.store.setFederatedBundle({ trustDomain: 'other.org', bundle: '{"keys":[],"spiffe_sequence":2}', updatedAt: 2 });
      assert.equal((await t.store.getFederatedBundle('other.org'))?.updatedAt, 2);
      assert.equal((await t.store.listFederatedBundles()).length, 1);
      assert.equal(await t.store.deleteFederatedBundle('other.org'), true);
      assert.equal(await t.store.getFederatedBundle('other.org'), undefined);
      const agent = {
        spiffeId: 'spiffe://example.org/writ/agent/n',
        nodeName: 'n',
        attestationType: 'join_token',
        selectors: ['join_token:n'],
        serial: 'ab',
        expiresAt: 9,
        banned: false,
        createdAt: 1,
        updatedAt: 1,
      };
      await t.store.upsertAgent(agent);
      await t.store.upsertAgent({ ...agent, banned: true, updatedAt: 2 });
      assert.deepEqual(await t.store.getAgent(agent.spiffeId), { ...agent, banned: true, updatedAt: 2 });
      assert.equal((await t.store.listAgents()).length, 1);
    });

    it('policy revisions are appended in order; a stale writer gets a conflict', async () => {
      assert.equal(await t.store.getPolicyRevision(), undefined);
      const r1 = await t.store.appendPolicyRevision({ createdAt: 1, createdBy: 'a', comment: '', policies: { p: 'x' } }, 0);
      assert.equal(r1.revision, 1);
      await assert.rejects(t.store.appendPolicyRevision({ createdAt: 2, createdBy: 'b', comment: '', policies: {} }, 0), (e) => isWritError(e, 'ERR_CONFLICT'));
      await t.store.appendPolicyRevision({ createdAt: 3, createdBy: 'a', comment: 'two', policies: { p: 'y', q: 'z' } }, 1);
      assert.deepEqual((await t.store.getPolicyRevision())?.policies, { p: 'y', q: 'z' });
      assert.deepEqual((await t.store.getPolicyRevision(1))?.policies, { p: 'x' });
      assert.deepEqual(
        (await t.store.listPolicyRevisions(10)).map((r) => r.revision),
        [2, 1],
      );
    });

    it('quarantine entries expire; policy acks are recorded per agent', async () => {
      await t.store.putQuarantine({ spiffeId: 'spiffe://e/q1', reason: 'compromised', createdBy: 'admin', createdAt: 1, expiresAt: null });
      await t.store.putQuarantine({ spiffeId: 'spiffe://e/q2', reason: 'test', createdBy: 'admin', createdAt: 1, expiresAt: 100 });
      assert.deepEqual(
        (await t.store.listQuarantine(50)).map((q) => q.spiffeId),
        ['spiffe://e/q1', 'spiffe://e/q2'],
      );
      assert.deepEqual(
        (await t.store.listQuarantine(100)).map((q) => q.spiffeId),
        ['spiffe://e/q1'],
      );
      assert.equal(await t.store.removeQuarantine('spiffe://e/q1'), true);
      assert.equal(await t.store.removeQuarantine('spiffe://e/q1'), false);
      const agent = {
        spiffeId: 'spiffe://e/writ/agent/ack',
        nodeName: 'ack',
        attestationType: 'join_token',
        selectors: [],
        serial: 's',
        expiresAt: 9,
        banned: false,
        createdAt: 1,
        updatedAt: 1,
      };
      await t.store.upsertAgent(agent);
      await t.store.ackPolicies([{ spiffeId: agent.spiffeId, policyRevision: 4, quarantineVersion: 7, ackedAt: 1000 }]);
      assert.deepEqual(
        (await t.store.listPolicyAcks()).find((a) => a.spiffeId === agent.spiffeId),
        { spiffeId: agent.spiffeId, policyRevision: 4, quarantineVersion: 7, ackedAt: 1000 },
      );
      // A batch of many agents (more than one statement's worth), an unknown one among them: each known agent gets its own.
      const many = Array.from({ length: 501 }, (_, i) => `spiffe://e/writ/agent/ack-${String(i).padStart(3, '0')}`);
      for (const id of many) await t.store.upsertAgent({ ...agent, spiffeId: id, nodeName: id.slice(-7) });
      await t.store.ackPolicies([
        ...many.map((id, i) => ({ spiffeId: id, policyRevision: 5, quarantineVersion: i, ackedAt: 2000 + i })),
        { spiffeId: 'spiffe://e/writ/agent/unknown', policyRevision: 5, quarantineVersion: 0, ackedAt: 2000 },
      ]);
      const acks = new Map((await t.store.listPolicyAcks()).map((a) => [a.spiffeId, a]));
      assert.deepEqual(
        many.map((id) => acks.get(id)),
        many.map((id, i) => ({ spiffeId: id, policyRevision: 5, quarantineVersion: i, ackedAt: 2000 + i })),
      );
      assert.equal(acks.has('spiffe://e/writ/agent/unknown'), false);
    });

    it('the change stamp moves with every change an agent must hear of, and only then', async () => {
      const now = 10_000;
      const s0 = await t.store.changeStamp(now);
      assert.deepEqual(await t.store.changeStamp(now), s0, 'stable while nothing changes');
      const steps: Array<[string, () => Promise<unknown>]> = [
        ['quarantine add', () => t.store.putQuarantine({ spiffeId: 'spiffe://e/st', reason: 'r', createdBy: 'a', createdAt: 5, expiresAt: now + 50 })],
        [
          'policy revision',
          async () =>
            t.store.appendPolicyRevision({ createdAt: 1, createdBy: 'a', comment: '', policies: {} }, (await t.store.getPolicyRevision())?.revision ?? 0),
        ],
        [
          'agent added',
          () =>
            t.store.upsertAgent({
              spiffeId: 'spiffe://e/writ/agent/st',
              nodeName: 'st',
              attestationType: 'join_token',
              selectors: [],
              serial: 's',
              expiresAt: 9,
              banned: false,
              createdAt: 1,
              updatedAt: 1,
            }),
        ],
        [
          'agent banned',
          () =>
            t.store.upsertAgent({
              spiffeId: 'spiffe://e/writ/agent/st',
              nodeName: 'st',
              attestationType: 'join_token',
              selectors: [],
              serial: 's',
              expiresAt: 9,
              banned: true,
              createdAt: 1,
              updatedAt: 2,
            }),
        ],
        ['agent evicted', () => t.store.deleteAgent('spiffe://e/writ/agent/st')],
        ['quarantine remove', () => t.store.removeQuarantine('spiffe://e/st')],
      ];
      let prev = s0;
      for (const [what, act] of steps) {
        await act();
        const s = await t.store.changeStamp(now);
        assert.notEqual(s.all, prev.all, what);
        prev = s;
      }
      await t.store.putQuarantine({ spiffeId: 'spiffe://e/st2', reason: 'r', createdBy: 'a', createdAt: 6, expiresAt: now + 50 });
      const before = await t.store.changeStamp(now);
      assert.notEqual((await t.store.changeStamp(now + 60)).all, before.all, 'a quarantine that expires changes the stamp');
      await t.store.createEntries([{ ...base, spiffeId: 'spiffe://example.org/stamp' }], 1);
      const after = await t.store.changeStamp(now);
      assert.ok(after.entryRevision > s0.entryRevision, 'an entry change moves the entries revision');
      assert.notEqual(after.all, before.all);
    });

    it('decisions are stored once, queried newest first with filters, and pruned', async () => {
      const d = (id: string, at: number, decision: 'allow' | 'deny') => ({
        id,
        at,
        from: 'spiffe://e/a',
        to: 'spiffe://e/b',
        action: 'GET /',
        decision,
        reason: decision === 'allow' ? 'ALLOW_RULE' : 'DENY_RULE',
        policyRevision: 3,
        rule: 'p#0',
        reporter: 'spiffe://e/writ/agent/x',
      });
      await t.store.addDecisions([d('d1', 10, 'allow'), d('d2', 20, 'deny'), d('d3', 30, 'allow')]);
      await t.store.addDecisions([d('d1', 10, 'allow')]); // a retried batch
      assert.deepEqual(
        (await t.store.queryDecisions({ limit: 10 })).map((x) => x.id),
        ['d3', 'd2', 'd1'],
      );
      assert.deepEqual(
        (await t.store.queryDecisions({ decision: 'deny', limit: 10 })).map((x) => x.id),
        ['d2'],
      );
      assert.deepEqual(
        (await t.store.queryDecisions({ since: 20, limit: 10 })).map((x) => x.id),
        ['d3', 'd2'],
      );
      assert.equal(await t.store.pruneDecisions(25), 2);
      assert.deepEqual(
        (await t.store.queryDecisions({ limit: 10 })).map((x) => x.id),
        ['d3'],
      );
      // In batches: 7 old ones in batches of 2 all go, the newer ones stay.
      await t.store.addDecisions([1, 2, 3, 4, 5, 6, 7].map((i) => d(`old${i}`, i, 'allow')));
      assert.equal(await t.store.pruneDecisions(25, 2), 7);
      assert.deepEqual(
        (await t.store.queryDecisions({ limit: 10 })).map((x) => x.id),
        ['d3'],
      );
    });

    it('followers read decisions in arrival order from a cursor, whatever their decision times', async () => {
      const d = (id: string, at: number) => ({
        id,
        at,
        from: 'spiffe://e/a',
        to: 'spiffe://e/follow',
        action: 'GET /',
        decision: 'allow' as const,
        reason: 'ALLOW_RULE',
        policyRevision: 1,
        rule: 'r',
        reporter: 'spiffe://e/writ/agent/x',
      });
      const start = await t.store.decisionCursor();
      await t.store.addDecisions([d('f1', 500), d('f2', 600)]);
      await t.store.addDecisions([d('f3', 100)]); // decided earlier, arrived later (a late reporter)
      const all = await t.store.queryDecisions({ to: 'spiffe://e/follow', after: start, limit: 10 });
      assert.deepEqual(
        all.map((x) => x.id),
        ['f1', 'f2', 'f3'],
      );
      assert.equal(await t.store.decisionCursor(), all.at(-1)!.seq);
      assert.deepEqual(
        (await t.store.queryDecisions({ to: 'spiffe://e/follow', after: all[0]!.seq!, limit: 10 })).map((x) => x.id),
        ['f2', 'f3'],
      );
      assert.deepEqual(
        (await t.store.queryDecisions({ to: 'spiffe://e/follow', after: start, upTo: all[1]!.seq!, limit: 10 })).map((x) => x.id),
        ['f1', 'f2'],
      );
      assert.deepEqual(
        (await t.store.queryDecisions({ to: 'spiffe://e/follow', limit: 10 })).map((x) => x.id),
        ['f2', 'f1', 'f3'],
        'without a cursor: newest decision first',
      );
    });

    it('decisions are counted on their edges once each, and old edges are pruned', async () => {
      const d = (id: string, at: number, from: string, action: string) => ({
        id,
        at,
        from,
        to: 'spiffe://e/edges',
        action,
        decision: 'allow' as const,
        reason: 'ALLOW_RULE',
        policyRevision: 1,
        rule: 'p#0',
        reporter: 'spiffe://e/writ/agent/x',
      });
      await t.store.addDecisions([d('e1', 100, 'spiffe://e/a', 'GET /x'), d('e2', 300, 'spiffe://e/a', 'GET /x'), d('e3', 200, '', 'tcp 5432')]);
      await t.store.addDecisions([d('e2', 300, 'spiffe://e/a', 'GET /x'), d('e4', 50, 'spiffe://e/a', 'GET /x')]); // e2 retried, e4 late
      const edges = (await t.store.listDecisionEdges({ since: 0, limit: 10 })).filter((e) => e.to === 'spiffe://e/edges');
      assert.deepEqual(
        edges.map((e) => [e.from, e.action, e.seen, e.firstSeen, e.lastSeen]),
        [
          ['spiffe://e/a', 'GET /x', 3, 50, 300],
          ['', 'tcp 5432', 1, 200, 200],
        ],
      );
      assert.deepEqual(
        (await t.store.listDecisionEdges({ since: 250, limit: 10 })).filter((e) => e.to === 'spiffe://e/edges').map((e) => e.action),
        ['GET /x'],
      );
      await t.store.pruneDecisions(250);
      assert.deepEqual(
        (await t.store.listDecisionEdges({ since: 0, limit: 10 })).filter((e) => e.to === 'spiffe://e/edges').map((e) => e.action),
        ['GET /x'],
      );
    });

    it('batches reported at once are each stored, numbered in order and counted once, a retried one among them too', async () => {
      const d = (id: string) => ({
        id,
        at: 500,
        from: 'spiffe://e/a',
        to: 'spiffe://e/together',
        action: 'GET /t',
        decision: 'allow' as const,
        reason: 'ALLOW_RULE',
        policyRevision: 1,
        rule: 'p#0',
        reporter: 'spiffe://e/writ/agent/x',
      });
      // Twenty batches in flight together (the writer groups those that wait), batch 7 sent twice.
      const batches = Array.from({ length: 20 }, (_, b) => Array.from({ length: 30 }, (_, i) => d(`t${b}-${i}`)));
      await Promise.all([...batches, batches[7]!].map((batch) => t.store.addDecisions(batch)));
      const stored = await t.store.queryDecisions({ to: 'spiffe://e/together', after: 0, limit: 1000 });
      assert.equal(stored.length, 600);
      assert.equal(new Set(stored.map((x) => x.seq)).size, 600, 'one arrival number each');
      const edge = (await t.store.listDecisionEdges({ since: 0, limit: 100 })).find((e) => e.to === 'spiffe://e/together');
      assert.equal(edge?.seen, 600, 'each decision counted once on its edge');
    });

    it('decisions made while learning are counted again on learned edges, once each; hits group by rule and decision', async () => {
      const to = 'spiffe://e/learned';
      const d = (id: string, at: number, from: string, action: string, reason = 'LEARNING', decision: 'allow' | 'audit-would-deny' = 'audit-would-deny') => ({
        id,
        at,
        from,
        to,
        action,
        decision,
        reason,
        policyRevision: at >= 300 ? 5 : 4,
        rule: reason === 'ALLOW_RULE' ? 'shop' : '',
        reporter: 'spiffe://e/writ/agent/x',
      });
      await t.store.addDecisions([
        d('l1', 100, 'spiffe://e/a', 'GET /x'),
        d('l2', 200, 'spiffe://e/a', 'GET /x'),
        d('l3', 150, 'spiffe://e/b', 'tcp 1'),
        d('l4', 300, 'spiffe://e/a', 'GET /x', 'ALLOW_RULE', 'allow'),
        d('l5', 310, 'spiffe://e/c', 'GET /y', 'AUDIT_ALLOWED'),
      ]);
      await t.store.addDecisions([d('l2', 200, 'spiffe://e/a', 'GET /x'), d('l6', 50, 'spiffe://e/a', 'GET /x')]); // l2 retried
      assert.deepEqual(
        (await t.store.listLearnedEdges({ to, limit: 10 })).map((e) => [e.from, e.action, e.seen, e.firstSeen, e.lastSeen]),
        [
          ['spiffe://e/a', 'GET /x', 3, 50, 200],
          ['spiffe://e/b', 'tcp 1', 1, 150, 150],
        ],
        'only LEARNING decisions, each once',
      );
      assert.equal((await t.store.listLearnedEdges({ limit: 1 })).length, 1);
      assert.deepEqual(
        (await t.store.decisionHits({ to, since: 0, minRevision: 5, limit: 10 })).map((h) => [h.rule, h.decision, h.count]),
        [
          ['', 'audit-would-deny', 1],
          ['shop', 'allow', 1],
        ],
      );
      assert.equal((await t.store.decisionHits({ to, since: 0, minRevision: 0, limit: 10 })).find((h) => h.rule === '')?.count, 5);
      assert.equal(await t.store.deleteLearnedEdges([to, 'spiffe://e/none']), 2);
      assert.deepEqual(await t.store.listLearnedEdges({ to, limit: 10 }), []);
    });

    it('the quarantine version grows with every change of the live set: a write, an expiry, a write over an expired row', async () => {
      const s = t.store;
      const v = (now: number) => s.quarantineVersion(now);
      const q = { spiffeId: 'spiffe://e/qv', reason: 'r', createdBy: 't', createdAt: 1 };
      const v0 = await v(1000);
      await s.putQuarantine({ ...q, expiresAt: 5000 });
      const v1 = await v(1000);
      assert.ok(v1 > v0, 'a write');
      assert.equal(await v(4999), v1, 'nothing changes by itself before the expiry');
      const v2 = await v(5000);
      assert.ok(v2 > v1, 'the expiry, with no write');
      await s.putQuarantine({ ...q, expiresAt: null });
      const v3 = await v(5000);
      assert.ok(v3 > v2, 'quarantined again over the expired row');
      assert.equal(await s.removeQuarantine(q.spiffeId), true);
      const v4 = await v(5000);
      assert.ok(v4 > v3, 'lifted');
      assert.equal(await s.removeQuarantine(q.spiffeId), false);
      assert.equal(await v(5000), v4, 'a no-op removal is no change');
    });

    // ---- admission events (engineer E) ----
    it('admission events round-trip, filter by namespace, verdict and time, follow from a cursor, and are pruned', async () => {
      const ev = (id: string, at: number, namespace: string, allowed: boolean) => ({
        id,
        at,
        uid: `uid-${id}`,
        operation: 'CREATE',
        namespace,
        kind: 'Pod',
        name: `pod-${id}`,
        subResource: '',
        hook: 'validate' as const,
        allowed,
        mode: 'enforce',
        dryRun: id === 'a2',
        message: allowed ? '' : 'violates PodSecurity "restricted:latest": privileged (container "app" must not set securityContext.privileged=true)',
        images: [{ image: 'registry.example.com/team/app:1', digest: `sha256:${'a'.repeat(64)}`, signedBy: ['release-key'] }],
        controls: allowed ? [] : ['privileged'],
        exceptions: [{ name: 'legacy', controls: ['hostPathVolumes'], containers: ['exporter'] }],
        policies: ['prod'],
      });
      const start = await t.store.admissionEventCursor();
      // Arrival order differs from time order: a follower still sees each once, in arrival order.
      await t.store.addAdmissionEvents([ev('a1', 30, 'prod', true), ev('a2', 10, 'prod', false)]);
      await t.store.addAdmissionEvents([ev('a3', 20, 'team-x', false), ev('a1', 30, 'prod', true)]);
      const all = await t.store.queryAdmissionEvents({ limit: 10 });
      assert.deepEqual(
        all.map((e) => e.id),
        ['a1', 'a3', 'a2'],
        'newest first, the duplicate stored once',
      );
      const a2 = all.find((e) => e.id === 'a2')!;
      assert.deepEqual({ ...a2, seq: 0 }, { ...ev('a2', 10, 'prod', false), seq: 0 });
      assert.deepEqual(
        (await t.store.queryAdmissionEvents({ namespace: 'prod', allowed: false, limit: 10 })).map((e) => e.id),
        ['a2'],
      );
      assert.deepEqual(
        (await t.store.queryAdmissionEvents({ since: 20, limit: 10 })).map((e) => e.id),
        ['a1', 'a3'],
      );
      const upTo = await t.store.admissionEventCursor();
      assert.deepEqual(
        (await t.store.queryAdmissionEvents({ after: start, upTo, limit: 10 })).map((e) => e.id),
        ['a1', 'a2', 'a3'],
      );
      assert.deepEqual(await t.store.queryAdmissionEvents({ after: upTo, limit: 10 }), []);
      assert.equal(await t.store.pruneAdmissionEvents(25), 2);
      assert.deepEqual(
        (await t.store.queryAdmissionEvents({ limit: 10 })).map((e) => e.id),
        ['a1'],
      );
    });
    // ---- end of admission events ----

    it('migrations are idempotent', async () => {
      await t.store.migrate();
      await t.store.ping();
    });
  });
}

for (const factory of STORE_FACTORIES) {
  describe(`store conformance, agent sync: ${factory.name.replace('TestStore', '')}`, () => {
    let t: TestStore;
    before(async () => {
      t = await factory();
    });
    after(async () => t.dispose());

    it('gives an agent its entries incrementally by revision, with removals and moves', async () => {
      const a = 'spiffe://example.org/writ/agent/a';
      const b = 'spiffe://example.org/writ/agent/b';
      const [e1, e2] = await t.store.createEntries(
        [
          { ...base, parentId: a, spiffeId: 'spiffe://example.org/s1' },
          { ...base, parentId: a, spiffeId: 'spiffe://example.org/s2' },
        ],
        1,
      );
      await t.store.createEntries([{ ...base, parentId: b, spiffeId: 'spiffe://example.org/s3' }], 1);
      const full = await t.store.syncEntries(a, 0);
      assert.deepEqual(full.entries.map((e) => e.id).sort(), [e1!.id, e2!.id].sort());
      assert.deepEqual(full.removed, []);
      const none = await t.store.syncEntries(a, full.revision);
      assert.equal(none.entries.length + none.removed.length, 0);
      await t.store.deleteEntry(e1!.id);
      await t.store.updateEntry(e2!.id, { ...base, parentId: b, spiffeId: 'spiffe://example.org/s2' }, 2);
      const delta = await t.store.syncEntries(a, full.revision);
      assert.deepEqual(delta.removed.sort(), [e1!.id, e2!.id].sort());
      assert.equal(delta.entries.length, 0);
      const forB = await t.store.syncEntries(b, full.revision);
      assert.deepEqual(
        forB.entries.map((e) => e.spiffeId),
        ['spiffe://example.org/s2'],
      );
      assert.ok((await t.store.deleteAgent('nobody')) === false);
    });
  });
}

/** The store's read methods; every other method is a write and must notify (the test below fails for a new unclassified one). */
const READS = new Set([
  'kind',
  'workloadsWentSilent',
  'getFederation',
  'listFederations',
  'getImage',
  'platformDigests',
  'listImages',
  'listWorkloads',
  // answers (issue 13, section 4)
  'affected',
  'affectedDigests',
  'affectedPage',
  'filedAlsoUnder',
  'listVulnerabilities',
  'runningImageDigests',
  'imageLineage',
  'baseImagesOf',
  'runningWorkloads',
  'rolloutWorkloads',
  'reportedDigests',
  // alerts (issue 15, section 3)
  'listAlerts',
  'getAlert',
  'seenEdges',
  'seenIdentities',
  // vulnerability events (issue 13, section 6)
  'queryVulnEvents',
  'vulnEventCursor',
  // OpenVEX (issue 13, section 5)
  'listVexStatements',
  'listVexDocuments',
  'onChange',
  // replicas (issue 16): hearing other replicas' writes, and job leases (replicas.test.ts), which no listener needs to hear of
  'listen',
  'acquireLease',
  'releaseLease',
  'listLeases',
  'migrate',
  'ping',
  'close',
  'getEntry',
  'listEntries',
  'peekJoinToken',
  'findAdminToken',
  'findUiSession',
  'graphEdges',
  'listAdminTokens',
  'syncEntries',
  'getAgent',
  'listAgents',
  'listAuthorities',
  'bundleSequence',
  'getPolicyRevision',
  'listPolicyRevisions',
  'listQuarantine',
  'quarantineVersion',
  'listPolicyAcks',
  'changeStamp',
  'queryDecisions',
  'decisionCursor',
  'listDecisionEdges',
  'listLearnedEdges',
  'decisionHits',
  'getFederatedBundle',
  'listFederatedBundles',
  'getDecision',
  // admission events (engineer E)
  'queryAdmissionEvents',
  'admissionEventCursor',
  'listAdmittedImages',
  'getAdmittedImage',
  // the audit log (issue 15): its reads, withActor (no write of its own), auditHead's fold of the
  // queued leaves and the checkpointer's putAuditCheckpoint, which are no news to any agent (every
  // audited write notifies already)
  'withActor',
  'auditHead',
  'auditPending',
  'listAuditEntries',
  'auditNodes',
  'putAuditCheckpoint',
  'latestAuditCheckpoint',
]);

for (const factory of STORE_FACTORIES) {
  describe(`store conformance, change notifications: ${factory.name.replace('TestStore', '')}`, () => {
    let t: TestStore;
    before(async () => {
      t = await factory();
    });
    after(async () => t.dispose());

    it('every write method notifies once its write committed, with what it changed; failed and no-op writes do not', async () => {
      const s = t.store;
      const heard: StoreChange[] = [];
      // The listener reads back at once: a change is announced only after its write is visible.
      const visible: Array<Promise<number>> = [];
      const off = s.onChange((c) => {
        heard.push(c);
        if (c.kind === 'entries') visible.push(s.changeStamp(0).then((st) => st.entryRevision));
      });
      const called = new Set<string>();
      const expect = async (method: string, change: StoreChange, write: () => Promise<unknown>): Promise<void> => {
        called.add(method);
        heard.length = 0;
        await write();
        assert.deepEqual(heard, [change], `${method} notified`);
      };
      const agent = 'spiffe://example.org/writ/agent/n1';
      const a = {
        spiffeId: agent,
        nodeName: 'n1',
        attestationType: 'join_token',
        selectors: [],
        serial: '01',
        expiresAt: 9e12,
        banned: false,
        createdAt: 1,
        updatedAt: 1,
      };
      // Entry writes name the agents they concern and the revisions they used.
      const rev = (await s.changeStamp(0)).entryRevision;
      const other = 'spiffe://example.org/writ/agent/other';
      let entryId = '';
      await expect('createEntries', { kind: 'entries', parents: [base.parentId, other], revisions: [rev + 1, rev + 3] }, async () => {
        const made = await s.createEntries(
          [
            { ...base, spiffeId: 'spiffe://example.org/n' },
            { ...base, spiffeId: 'spiffe://example.org/n2' },
            { ...base, spiffeId: 'spiffe://example.org/n3', parentId: other },
          ],
          1,
        );
        entryId = made[0]!.id;
      });
      assert.equal(await visible.at(-1), rev + 3, 'the listener saw the committed entries');
      await expect('updateEntry', { kind: 'entries', parents: [base.parentId, other], revisions: [rev + 4, rev + 4] }, () =>
        s.updateEntry(entryId, { ...base, spiffeId: 'spiffe://example.org/n', parentId: other, hint: 'x' }, 2),
      );
      await expect('deleteEntry', { kind: 'entries', parents: [other], revisions: [rev + 5, rev + 5] }, () => s.deleteEntry(entryId));
      await expect('createJoinToken', { kind: 'join-tokens' }, () => s.createJoinToken({ hash: 'h1', nodeName: 'n1', expiresAt: 9e12, createdAt: 1 }));
      await expect('redeemJoinToken', { kind: 'join-tokens' }, () => s.redeemJoinToken('h1', 2));
      await expect('createAdminToken', { kind: 'admin-tokens' }, () =>
        s.createAdminToken({ id: 't1', hash: 'th1', role: 'viewer', name: '', createdAt: 1, expiresAt: null }),
      );
      await expect('deleteAdminToken', { kind: 'admin-tokens' }, () => s.deleteAdminToken('t1'));
      await expect('createUiSession', { kind: 'admin-tokens' }, () =>
        s.createUiSession({ idHash: 'sh1', tokenId: 't1', csrfHash: 'c1', createdAt: 1, expiresAt: 9e12 }),
      );
      await expect('deleteUiSession', { kind: 'admin-tokens' }, () => s.deleteUiSession('sh1'));
      heard.length = 0;
      assert.equal(await s.deleteUiSession('sh1'), false);
      assert.deepEqual(heard, [], 'signing out twice is no news');
      // A new SVID (an attestation, a renewal) names its agent: caches of its record drop it.
      await expect('upsertAgent', { kind: 'agents', renewed: [agent] }, () => s.upsertAgent(a));
      await expect('ackPolicies', { kind: 'policy-acks' }, () => s.ackPolicies([{ spiffeId: agent, policyRevision: 1, quarantineVersion: 0, ackedAt: 5 }]));
      heard.length = 0;
      await s.upsertAgent({ ...a, banned: true });
      assert.deepEqual(heard, [{ kind: 'agents', revoked: [agent] }], 'a ban names the agent it revokes');
      await expect('deleteAgent', { kind: 'agents', revoked: [agent] }, () => s.deleteAgent(agent));
      await expect('saveAuthorities', { kind: 'authorities' }, () =>
        s.saveAuthorities([{ id: 'au1', kind: 'jwt', serverId: 's', status: 'active', publicData: '{}', notBefore: 0, notAfter: 1 }], []),
      );
      await expect('appendPolicyRevision', { kind: 'policies' }, () => s.appendPolicyRevision({ createdAt: 1, createdBy: 't', comment: '', policies: {} }, 0));
      await expect('putQuarantine', { kind: 'quarantine' }, () =>
        s.putQuarantine({ spiffeId: 'spiffe://e/q', reason: 'r', createdBy: 't', createdAt: 1, expiresAt: null }),
      );
      await expect('removeQuarantine', { kind: 'quarantine' }, () => s.removeQuarantine('spiffe://e/q'));
      await expect('putQuarantines', { kind: 'quarantine' }, () =>
        s.putQuarantines([{ spiffeId: 'spiffe://e/q', reason: '[CVE-2026-1] r', createdBy: 't', createdAt: 1, expiresAt: 10 }], 1),
      );
      heard.length = 0;
      assert.deepEqual(
        await s.putQuarantines([{ spiffeId: 'spiffe://e/q', reason: 'again', createdBy: 't', createdAt: 2, expiresAt: null }], 2),
        [],
        'a live quarantine stands',
      );
      assert.deepEqual(heard, [], 'nothing written, nothing heard');
      await s.removeQuarantine('spiffe://e/q');
      const ev = {
        id: 've1',
        at: 1,
        cause: 'report' as const,
        vulnerability: 'CVE-2026-1',
        severity: 'high' as const,
        imageDigest: `sha256:${'e'.repeat(64)}`,
        spiffeId: 'spiffe://e/v',
        owner: null,
        node: null,
        namespace: null,
        pod: null,
      };
      await expect('syncVulnExposures', { kind: 'vuln-events' }, () => s.syncVulnExposures([ev]));
      heard.length = 0;
      assert.deepEqual(await s.syncVulnExposures([{ ...ev, id: 've2' }]), [], 'one event while it stays affected');
      assert.deepEqual(heard, [], 'no event, nothing heard');
      await expect('pruneVulnEvents', { kind: 'vuln-events' }, () => s.pruneVulnEvents(10));
      assert.deepEqual(await s.queryVulnEvents({ limit: 10 }), [], 'pruned');
      const d = {
        id: 'dn1',
        at: 1,
        from: '',
        to: 'spiffe://e/x',
        action: 'GET /',
        decision: 'deny' as const,
        reason: 'R',
        policyRevision: 0,
        rule: '',
        reporter: agent,
      };
      await expect('addDecisions', { kind: 'decisions' }, () => s.addDecisions([d]));
      await expect('pruneDecisions', { kind: 'decisions' }, () => s.pruneDecisions(10));
      await expect('setFederatedBundle', { kind: 'federated-bundles' }, () =>
        s.setFederatedBundle({ trustDomain: 'other.org', bundle: '{"keys":[]}', updatedAt: 1 }),
      );
      await expect('deleteFederatedBundle', { kind: 'federated-bundles' }, () => s.deleteFederatedBundle('other.org'));
      const fr = { trustDomain: 'peer.org', bundleEndpointUrl: 'https://peer.org/', profile: 'https_web' as const, endpointSpiffeId: null, createdAt: 1 };
      const none = { lastSuccessAt: null, lastError: null, lastErrorCode: null, lastErrorAt: null, sequence: null, refreshHint: null, nextRefreshAt: 1 };
      await expect('createFederation', { kind: 'federation' }, () => s.createFederation({ ...fr, ...none }));
      await expect('updateFederation', { kind: 'federation' }, () => s.updateFederation('peer.org', { lastSuccessAt: 2 }));
      await expect('deleteFederation', { kind: 'federation' }, () => s.deleteFederation('peer.org'));
      heard.length = 0;
      assert.equal(await s.updateFederation('peer.org', { lastSuccessAt: 3 }), false);
      assert.equal(await s.deleteFederation('peer.org'), false);
      assert.deepEqual(heard, [], 'a relationship not there: no news');
      // admission events (engineer E)
      const ae = {
        id: 'ae1',
        at: 1,
        uid: 'u',
        operation: 'CREATE',
        namespace: 'n',
        kind: 'Pod',
        name: 'p',
        subResource: '',
        hook: 'validate' as const,
        allowed: true,
        mode: '',
        dryRun: false,
        message: '',
        images: [],
        controls: [],
        exceptions: [],
        policies: [],
      };
      await expect('addAdmissionEvents', { kind: 'admission-events' }, () => s.addAdmissionEvents([ae]));
      await expect('pruneAdmissionEvents', { kind: 'admission-events' }, () => s.pruneAdmissionEvents(10));
      await expect('recordAdmittedImages', { kind: 'admitted-images' }, () => s.recordAdmittedImages([`sha256:${'a'.repeat(64)}`], 1));
      await expect('pruneAdmittedImages', { kind: 'admitted-images' }, () => s.pruneAdmittedImages(10));
      await expect('putReport', { kind: 'reports' }, () => s.putReport(TRIVY_REPORT, 1));
      const wl = {
        key: 'c1',
        spiffeIds: ['spiffe://e/w'],
        containerId: 'c1',
        containerName: null,
        podUid: null,
        podName: null,
        namespace: null,
        podOwner: null,
        imageDigest: null,
        imageName: null,
        labels: {},
        annotations: {},
        owner: null,
      };
      await expect('putAgentWorkloads', { kind: 'workloads' }, () => s.putAgentWorkloads('spiffe://e/writ/agent/a', null, [wl], 5));
      await expect('pruneWorkloads', { kind: 'workloads' }, () => s.pruneWorkloads(Number.MAX_SAFE_INTEGER));
      const admitted = {
        digest: `sha256:${'ad'.repeat(32)}`,
        configDigest: null,
        indexDigest: null,
        platform: null,
        names: ['registry.example/shop/web'],
        tags: ['registry.example/shop/web:1'],
        layers: [],
        annotations: {},
        labels: {},
        created: null,
        firstSeen: 0,
        lastSeen: 0,
      };
      await expect('recordImages', { kind: 'images' }, () => s.recordImages([admitted], 8));
      const vexDoc = {
        id: 'urn:test:vex',
        author: 'test',
        version: 1,
        statements: [
          { vulnerability: 'CVE-2024-0001', aliases: [], products: [{ id: `sha256:${'c'.repeat(64)}`, subcomponents: [] }], status: 'not_affected' as const },
        ],
      };
      await expect('putVexDocument', { kind: 'vex' }, () => s.putVexDocument(vexDoc, 5));
      await expect('deleteVexDocument', { kind: 'vex' }, () => s.deleteVexDocument('urn:test:vex'));

      await s.addDecisions([
        {
          id: 'learn-n1',
          at: 1,
          from: 'spiffe://e/a',
          to: 'spiffe://e/learn-n',
          action: 'GET /',
          decision: 'allow',
          reason: 'LEARNING',
          policyRevision: 1,
          rule: '',
          reporter: agent,
        },
      ]);
      await expect('deleteLearnedEdges', { kind: 'decisions' }, () => s.deleteLearnedEdges(['spiffe://e/learn-n']));
      assert.equal(await s.deleteLearnedEdges(['spiffe://e/learn-n']), 0);

      heard.length = 0;
      await assert.rejects(s.appendPolicyRevision({ createdAt: 1, createdBy: 't', comment: '', policies: {} }, 0), (e) => isWritError(e, 'ERR_CONFLICT'));
      await assert.rejects(s.redeemJoinToken('h1', 3), (e) => isWritError(e, 'ERR_JOIN_TOKEN_USED'));
      assert.equal(await s.deleteEntry('nope'), false);
      assert.equal(await s.removeQuarantine('spiffe://e/none'), false);
      assert.equal(await s.pruneAdmittedImages(10), 0);
      await s.recordAdmittedImages([`sha256:${'b'.repeat(64)}`], 100_000);
      heard.length = 0;
      await s.recordAdmittedImages([`sha256:${'b'.repeat(64)}`], 500_000);
      assert.deepEqual(heard, [], 'a digest admitted again is no news to agents');
      assert.equal((await s.putReport(TRIVY_REPORT, 2)).created, false);
      assert.deepEqual(heard, [], 'a report stored again is no news');
      await s.putAgentWorkloads('spiffe://e/writ/agent/a', null, [wl], 6);
      heard.length = 0;
      await s.putAgentWorkloads('spiffe://e/writ/agent/a', null, [wl], 7);
      assert.equal(await s.pruneWorkloads(1), 0);
      assert.deepEqual(heard, [], 'a heartbeat that changes nothing, and a prune that removes nothing, are no news');
      await s.recordImages([admitted], 9);
      assert.deepEqual(heard, [], 'an image admitted again is no news');
      await expect('recordImages', { kind: 'images' }, () => s.recordImages([{ ...admitted, tags: ['registry.example/shop/web:latest'] }], 10));
      heard.length = 0;
      await expect('announce', { kind: 'quarantine' }, () => s.announce('quarantine'));
      heard.length = 0;

      // alerts (issue 15, section 3)
      const al = { id: 'al1', rule: 'r', kind: 'new-edge', key: 'k', at: 100, details: {} };
      await expect('raiseAlert', { kind: 'alerts' }, () => s.raiseAlert(al, 1000));
      await expect('ackAlert', { kind: 'alerts' }, () => s.ackAlert('al1', 'operator', 101));
      heard.length = 0;
      await s.ackAlert('al1', 'operator', 102);
      await s.setAlertResponse('none', { quarantined: 'spiffe://e/x', expiresAt: null, undoneAt: null, undoneBy: null });
      assert.deepEqual(heard, [], 'an alert acked again, a response to no alert: no news');
      await expect('setAlertResponse', { kind: 'alerts' }, () =>
        s.setAlertResponse('al1', { quarantined: 'spiffe://e/x', expiresAt: null, undoneAt: null, undoneBy: null }),
      );
      await expect('pruneAlerts', { kind: 'alerts' }, () => s.pruneAlerts(1000));
      heard.length = 0;
      assert.equal(await s.pruneAlerts(1000), 0);
      assert.deepEqual(heard, [], 'nothing pruned, nothing heard');

      const methods = Object.getOwnPropertyNames(Object.getPrototypeOf(s)).filter((m) => m !== 'constructor');
      assert.deepEqual(
        methods.filter((m) => !READS.has(m) && !called.has(m)),
        [],
        'every write method is covered (a read belongs in READS)',
      );
      off();
      await s.putQuarantine({ spiffeId: 'spiffe://e/q2', reason: 'r', createdBy: 't', createdAt: 1, expiresAt: null });
      assert.deepEqual(heard, [], 'unsubscribed');
    });
  });
}

describe('migrations 6 and 7 on a store that already has decisions', () => {
  it('counts the decisions already logged on their edges, and numbers them for followers in time order', async () => {
    const { mkdtempSync, rmSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const { SqliteDriver } = await import('./sqlite.ts');
    const { SqlStore } = await import('./sql-store.ts');
    const { MIGRATIONS } = await import('./schema.ts');
    const dir = mkdtempSync(join(tmpdir(), 'writ-migrate-'));
    const db = new SqliteDriver(join(dir, 'writ.db'));
    try {
      // The schema as version 5 left it, with a week of decisions in it.
      await db.query('CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)');
      for (const m of MIGRATIONS.filter((x) => x.version <= 5)) {
        for (const stmt of m.statements) await db.query(stmt);
        await db.query('INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)', [m.version, 0]);
      }
      const row = (id: string, at: number, from: string, action: string) => [
        id,
        at,
        from,
        'spiffe://e/b',
        action,
        'allow',
        'ALLOW_RULE',
        1,
        'r',
        'spiffe://e/writ/agent/x',
      ];
      for (const r of [row('a', 10, 'spiffe://e/a', 'GET /'), row('b', 30, 'spiffe://e/a', 'GET /'), row('c', 20, '', 'tcp 1')]) {
        await db.query(
          'INSERT INTO decisions (id, at, from_id, to_id, action, decision, reason, policy_revision, rule, reporter) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
          r,
        );
      }
      const store = new SqlStore(db);
      await store.migrate();
      assert.deepEqual(
        (await store.listDecisionEdges({ since: 0, limit: 10 })).map((e) => [e.from, e.action, e.seen, e.firstSeen, e.lastSeen]),
        [
          ['spiffe://e/a', 'GET /', 2, 10, 30],
          ['', 'tcp 1', 1, 20, 20],
        ],
      );
      assert.deepEqual(
        (await store.queryDecisions({ after: 0, limit: 10 })).map((d) => [d.seq, d.id]),
        [
          [1, 'a'],
          [2, 'c'],
          [3, 'b'],
        ],
      );
      assert.equal(await store.decisionCursor(), 3);
      await store.addDecisions([
        {
          id: 'd',
          at: 5,
          from: '',
          to: 'spiffe://e/b',
          action: 'GET /',
          decision: 'allow',
          reason: 'ALLOW_RULE',
          policyRevision: 1,
          rule: 'r',
          reporter: 'spiffe://e/writ/agent/x',
        },
      ]);
      assert.deepEqual(
        (await store.queryDecisions({ after: 3, limit: 10 })).map((d) => [d.seq, d.id]),
        [[4, 'd']],
        'new arrivals follow on',
      );
    } finally {
      await db.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

// ---------------------------------------------------------------- admitted images (identity follows image trust)

const digest = (c: string): string => `sha256:${c.repeat(64)}`;

for (const factory of STORE_FACTORIES) {
  describe(`store conformance, admitted images: ${factory.name.replace('TestStore', '')}`, () => {
    let t: TestStore;
    before(async () => {
      t = await factory();
    });
    after(async () => t.dispose());

    it("keeps an entry's requireAdmittedImage through create, update and listing", async () => {
      const [e] = await t.store.createEntries([{ ...base, spiffeId: 'spiffe://example.org/img', requireAdmittedImage: true }], 1);
      assert.equal(e!.requireAdmittedImage, true);
      assert.equal((await t.store.getEntry(e!.id))!.requireAdmittedImage, true);
      const off = await t.store.updateEntry(e!.id, { ...base, spiffeId: 'spiffe://example.org/img' }, 2);
      assert.equal(off.requireAdmittedImage, false, 'an update without the field turns it off (PUT semantics; PATCH keeps it in the API)');
      assert.deepEqual(await t.store.getEntry(e!.id), off);
      await t.store.updateEntry(e!.id, { ...base, spiffeId: 'spiffe://example.org/img', requireAdmittedImage: true }, 3);
      const synced = await t.store.syncEntries(base.parentId, 0);
      assert.equal(synced.entries.find((x) => x.id === e!.id)?.requireAdmittedImage, true, 'the agent sync sees it');
      const [plain] = await t.store.createEntries([{ ...base, spiffeId: 'spiffe://example.org/plain' }], 1);
      assert.equal(plain!.requireAdmittedImage, false);
    });

    it('records digests once each, in arrival order, with first and last seen; lists them from a cursor', async () => {
      const before = await t.store.changeStamp(0);
      await t.store.recordAdmittedImages([digest('1'), digest('2'), digest('1')], 1_000_000);
      await t.store.recordAdmittedImages([digest('2'), digest('3')], 2_000_000);
      const all = await t.store.listAdmittedImages({ limit: 100 });
      assert.deepEqual(
        all.items.map((i) => i.digest),
        [digest('1'), digest('2'), digest('3')],
      );
      assert.ok(all.items[0]!.seq < all.items[1]!.seq && all.items[1]!.seq < all.items[2]!.seq, 'arrival numbers grow');
      assert.deepEqual(await t.store.getAdmittedImage(digest('2')), { digest: digest('2'), firstSeen: 1_000_000, lastSeen: 2_000_000, seq: all.items[1]!.seq });
      assert.equal(await t.store.getAdmittedImage(digest('9')), undefined);
      const rest = await t.store.listAdmittedImages({ afterSeq: all.items[0]!.seq, limit: 1 });
      assert.deepEqual(
        rest.items.map((i) => i.digest),
        [digest('2')],
        'a page after the cursor, as long as asked',
      );
      const after = await t.store.changeStamp(0);
      assert.notEqual(after.admittedImages, before.admittedImages, 'the change stamp shows new digests (other replicas notice)');
      assert.notEqual(after.all, before.all);
      await t.store.recordAdmittedImages([digest('3')], 9_000_000);
      assert.equal((await t.store.changeStamp(0)).all, after.all, 'a digest seen again does not move the stamp');
      assert.equal((await t.store.getAdmittedImage(digest('3')))!.lastSeen, 9_000_000);
      const sha512 = `sha512:${'e'.repeat(128)}`;
      await t.store.recordAdmittedImages([sha512], 9_000_000);
      assert.equal((await t.store.getAdmittedImage(sha512))?.digest, sha512, 'sha512 digests too');
    });

    it('refuses a malformed digest and writes nothing of the batch', async () => {
      for (const bad of [
        `sha256:${'A'.repeat(64)}`,
        `sha256:${'a'.repeat(63)}`,
        'sha256:',
        `md5:${'a'.repeat(32)}`,
        `${'a'.repeat(64)}`,
        `sha256:${'a'.repeat(64)}\n`,
      ]) {
        await assert.rejects(t.store.recordAdmittedImages([digest('7'), bad], 1), (e) => isWritError(e, 'ERR_FIELD_INVALID') && e.field === 'digests[1]', bad);
      }
      assert.equal(await t.store.getAdmittedImage(digest('7')), undefined);
    });

    it('pruning forgets digests not seen since and starts a new epoch', async () => {
      const was = await t.store.listAdmittedImages({ limit: 1000 });
      await t.store.recordAdmittedImages([digest('8')], 50_000_000);
      const n = await t.store.pruneAdmittedImages(10_000_000);
      assert.equal(n, was.items.filter((i) => i.lastSeen < 10_000_000).length);
      const now = await t.store.listAdmittedImages({ limit: 1000 });
      assert.equal(now.epoch, was.epoch + 1);
      assert.ok(now.items.every((i) => i.lastSeen >= 10_000_000));
      assert.ok(now.items.some((i) => i.digest === digest('8')));
      assert.equal(await t.store.pruneAdmittedImages(10_000_000), 0);
      assert.equal((await t.store.listAdmittedImages({ limit: 1 })).epoch, now.epoch, 'nothing pruned, same epoch');
    });

    it('concurrent writers of the same new digests store each once', async () => {
      const ds = ['4', '5', '6'].map(digest);
      await Promise.all([t.store.recordAdmittedImages(ds, 60_000_000), t.store.recordAdmittedImages([...ds].reverse(), 60_000_000)]);
      const got = (await t.store.listAdmittedImages({ limit: 1000 })).items.filter((i) => ds.includes(i.digest));
      assert.equal(got.length, 3);
      assert.equal(new Set(got.map((i) => i.seq)).size, 3);
    });
  });
}

// ---------------------------------------------------------------- image inventory and reports (issue 13)

for (const factory of STORE_FACTORIES) {
  describe(`store conformance, image inventory and reports: ${factory.name.replace('TestStore', '')}`, () => {
    let t: TestStore;
    before(async () => {
      t = await factory();
    });
    after(async () => t.dispose());

    it('files a Trivy report under its manifest digest with its packages, layers and findings', async () => {
      const r = TRIVY_REPORT;
      const put = await t.store.putReport(r, 1000);
      assert.equal(put.created, true);
      assert.equal(put.imageDigest, r.image.digest);
      const got = await t.store.getImage(put.imageDigest);
      assert.ok(got);
      assert.deepEqual(got.image.layers, r.image.diffIds);
      assert.deepEqual(got.image.names, [...new Set(r.image.names)].sort());
      assert.equal(got.image.firstSeen, 1000);
      assert.equal(got.reports.length, 1);
      const rep = got.reports[0]!;
      assert.equal(rep.id, put.reportId);
      assert.equal(rep.scanner, r.scanner.name);
      assert.equal(rep.packages.length, r.packages.length);
      assert.equal(rep.findings.length, r.findings.length);
      assert.ok(rep.findings.length > 0, 'the test document has findings');
      const f = r.findings[0]!;
      const sf = rep.findings[0]!;
      assert.deepEqual(
        [sf.id, sf.severity, sf.status, sf.installed, sf.fixed, sf.packageRef],
        [f.id, f.severity, f.status, f.installed, f.fixed ?? null, f.packageRef],
      );
      const pkg = rep.packages.find((p) => p.ref === f.packageRef);
      assert.ok(pkg, 'a finding points at a stored package');
      assert.deepEqual(
        rep.packages.map((p) => p.layer),
        r.packages.map((p) => p.layer ?? null),
        'each package keeps its layer',
      );
    });

    it('the same report again changes nothing and answers with the first id', async () => {
      const first = await t.store.putReport(TRIVY_REPORT, 1000);
      const was = await t.store.getImage(first.imageDigest);
      const again = await t.store.putReport(structuredClone(TRIVY_REPORT), 99_000);
      assert.deepEqual(again, { ...first, created: false });
      assert.deepEqual(await t.store.getImage(first.imageDigest), was);
    });

    it('a later scan becomes the latest report of its scanner; names and tags accumulate', async () => {
      const d = `sha256:${'c'.repeat(64)}`;
      const mk = (at: string, tag: string, ids: string[]): Report => ({
        ...TRIVY_REPORT,
        scannedAt: at,
        image: { ...TRIVY_REPORT.image, digest: d, names: ['registry.local/app'], repoTags: [`registry.local/app:${tag}`] },
        findings: ids.map((id) => ({ id, aliases: [], severity: 'high', packageRef: TRIVY_REPORT.packages[0]!.id, installed: '1', status: 'affected' })),
      });
      await t.store.putReport(mk('2026-01-02T00:00:00.000Z', 'v2', ['CVE-2026-0002']), 2000);
      await t.store.putReport(mk('2026-01-01T00:00:00.000Z', 'v1', ['CVE-2026-0001', 'CVE-2026-0003']), 3000);
      const got = await t.store.getImage(d);
      assert.ok(got);
      assert.deepEqual(got.image.tags, ['registry.local/app:v1', 'registry.local/app:v2']);
      assert.equal(got.image.firstSeen, 2000);
      assert.equal(got.image.lastSeen, 3000);
      assert.equal(got.reports.length, 1, 'one latest report per scanner');
      assert.deepEqual(
        got.reports[0]!.findings.map((f) => f.id),
        ['CVE-2026-0002'],
        'the newer scan wins, whatever the arrival order',
      );
      const other = await t.store.putReport({ ...mk('2026-01-01T00:00:00.000Z', 'v1', []), scanner: { name: 'grype' } }, 4000);
      assert.equal(other.created, true, 'another scanner at the same time is another report');
      const sbom = await t.store.putReport({ ...mk('2026-01-01T00:00:00.000Z', 'v1', []), format: 'spdx' }, 4000);
      assert.equal(sbom.created, true, 'the same scan written in another format is another document');
      assert.deepEqual(
        (await t.store.getImage(d))!.reports.map((r) => r.scanner),
        ['grype', 'trivy'],
      );
    });

    it('a report without a manifest digest or with a bad one is refused and stores nothing', async () => {
      const noDigest: Report = { ...TRIVY_REPORT, image: { ...TRIVY_REPORT.image, digest: undefined as unknown as string, repoDigests: [] } };
      delete (noDigest.image as { digest?: string }).digest;
      await assert.rejects(t.store.putReport(noDigest, 1), (e) => isWritError(e, 'ERR_FIELD_MISSING') && e.field === 'image.digest');
      await assert.rejects(t.store.putReport({ ...TRIVY_REPORT, image: { ...TRIVY_REPORT.image, digest: 'sha256:xyz' } }, 1), (e) =>
        isWritError(e, 'ERR_FIELD_INVALID'),
      );
      assert.equal(await t.store.getImage('sha256:xyz'), undefined);
    });

    it('a report that fails half way stores nothing: not the image, not the report', async () => {
      const d = `sha256:${'d'.repeat(64)}`;
      // A package with no name breaks the NOT NULL column after the image and report rows were written.
      const broken = {
        ...TRIVY_REPORT,
        image: { ...TRIVY_REPORT.image, digest: d },
        packages: [...TRIVY_REPORT.packages, { id: 'x', name: null, version: '1', type: 'apk' }],
      } as unknown as Report;
      await assert.rejects(t.store.putReport(broken, 1));
      assert.equal(await t.store.getImage(d), undefined);
      const ok = await t.store.putReport({ ...TRIVY_REPORT, image: { ...TRIVY_REPORT.image, digest: d } }, 2);
      assert.equal(ok.created, true, 'the same scan stores once fixed: nothing was left behind');
    });

    it('two writers of the same new report store it once', async () => {
      const d = `sha256:${'e'.repeat(64)}`;
      const r: Report = { ...TRIVY_REPORT, image: { ...TRIVY_REPORT.image, digest: d } };
      const [a, b] = await Promise.all([t.store.putReport(r, 5), t.store.putReport(structuredClone(r), 5)]);
      assert.equal(a.reportId, b.reportId);
      assert.deepEqual([a.created, b.created].sort(), [false, true]);
      assert.equal((await t.store.getImage(d))!.reports.length, 1);
    });

    it('lists images by digest, a page at a time', async () => {
      for (const c of ['1', '2', '3']) await t.store.putReport({ ...TRIVY_REPORT, image: { ...TRIVY_REPORT.image, digest: `sha256:${c.repeat(64)}` } }, 7);
      const all = await t.store.listImages(1000);
      const digests = all.map((i) => i.digest);
      assert.deepEqual(digests, [...digests].sort());
      const first = await t.store.listImages(2);
      assert.equal(first.length, 2);
      const next = await t.store.listImages(1000, first.at(-1)!.digest);
      assert.deepEqual(
        [...first, ...next].map((i) => i.digest),
        digests,
      );
    });
  });
}
