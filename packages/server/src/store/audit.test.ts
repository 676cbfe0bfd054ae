/** The audit log in the store (issue 15, section 1), on SQLite and PostgreSQL alike. */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { CompactRange, encodeAuditLeaf, inclusionProof, leafHash, verifyInclusion, consistencyProof, verifyConsistency } from '@writ/transparency';
import { STORE_FACTORIES, type TestStore } from '../testing/stores.ts';
import type { EntryInput, Store } from './types.ts';

const base: EntryInput = {
  spiffeId: 'spiffe://example.org/audit/web',
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

/** Recomputes the tree from the stored bodies alone, as `writ audit verify` does. */
async function recompute(store: Store): Promise<{ size: number; root: Uint8Array; hashes: Uint8Array[] }> {
  const { size } = await store.auditHead();
  const entries = await store.listAuditEntries(0, size);
  const range = new CompactRange();
  const hashes: Uint8Array[] = [];
  let prev: Uint8Array | null = null;
  for (const e of entries) {
    assert.equal(e.index, range.size, 'indexes are contiguous');
    const h = leafHash(encodeAuditLeaf(e.index, prev, Buffer.from(e.body, 'utf8')));
    assert.equal(Buffer.from(h).toString('hex'), e.leafHash, `leaf ${e.index} is the hash of its body chained on the one before`);
    range.append(h);
    hashes.push(h);
    prev = h;
  }
  return { size: range.size, root: range.root(), hashes };
}

const kinds = async (store: Store, from: number): Promise<string[]> =>
  (await store.listAuditEntries(from, (await store.auditHead()).size)).map((e) => (JSON.parse(e.body) as { kind: string }).kind);

/**
 * A trigger that makes every insert into `table` fail: the database refusing, or full. BEFORE: the
 * row is refused; AFTER: the row went in and the statement (so its transaction) fails after it.
 */
function faultSql(t: TestStore, on: boolean, table = 'audit_pending', when: 'BEFORE' | 'AFTER' = 'BEFORE'): string {
  if (t.name === 'sqlite')
    return on ? `CREATE TRIGGER audit_fault ${when} INSERT ON ${table} BEGIN SELECT RAISE(ABORT, 'injected audit fault'); END` : 'DROP TRIGGER audit_fault';
  return on
    ? `CREATE FUNCTION audit_fault() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'injected audit fault'; END $$ LANGUAGE plpgsql;
       CREATE TRIGGER audit_fault ${when} INSERT ON ${table} FOR EACH ROW EXECUTE FUNCTION audit_fault()`
    : `DROP TRIGGER audit_fault ON ${table}; DROP FUNCTION audit_fault()`;
}

const subjects = async (store: Store, from: number): Promise<string[]> =>
  (await store.listAuditEntries(from, (await store.auditHead()).size)).map((e) => (JSON.parse(e.body) as { subject: string }).subject);

for (const factory of STORE_FACTORIES) {
  describe(`audit log store: ${factory.name.replace('TestStore', '')}`, () => {
    let t: TestStore;
    before(async () => {
      t = await factory();
    });
    after(async () => t.dispose());

    it('appends a leaf for each control-plane write, by the actor of the request, chained and hashed as RFC 9162 leaves', async () => {
      const start = (await t.store.auditHead()).size;
      const [e] = await t.store.withActor('token:ops', () => t.store.createEntries([base], 1000));
      await t.store.withActor('token:ops', () => t.store.updateEntry(e!.id, { ...base, hint: 'web' }, 2000));
      await t.store.putQuarantine({ spiffeId: base.spiffeId, reason: 'incident 7', createdBy: 'ops', createdAt: 1, expiresAt: null });
      await t.store.removeQuarantine(base.spiffeId);
      await t.store.appendPolicyRevision({ createdAt: 1, createdBy: 'ops', comment: 'c', policies: { 'AccessPolicy/a': 'x' } }, 0);
      await t.store.createAdminToken({ id: 'tok-1', hash: 'h1', role: 'viewer', name: 'ci', createdAt: 1, expiresAt: null });
      await t.store.deleteAdminToken('tok-1');
      await t.store.withActor('spiffe://example.org/writ/agent/node1', () =>
        t.store.addDecisions(
          [1, 2, 3].map((i) => ({
            id: `d-${i}`,
            at: i,
            from: 'spiffe://example.org/a',
            to: 'spiffe://example.org/b',
            action: 'GET /',
            decision: 'allow' as const,
            reason: 'RULE',
            policyRevision: 1,
            rule: 'r',
            reporter: 'spiffe://example.org/writ/agent/node1',
          })),
        ),
      );
      await t.store.deleteEntry(e!.id);
      assert.deepEqual(await kinds(t.store, start), [
        'entry.create',
        'entry.update',
        'quarantine.add',
        'quarantine.remove',
        'policy.apply',
        'token.create',
        'token.delete',
        'decisions.batch',
        'entry.delete',
      ]);
      const entries = await t.store.listAuditEntries(start, start + 9);
      const bodies = entries.map((x) => JSON.parse(x.body) as { actor: string; subject: string; detail: Record<string, unknown> });
      assert.equal(bodies[0]!.actor, 'token:ops');
      assert.equal(bodies[2]!.actor, 'system', 'a write outside a request is by "system"');
      assert.equal(bodies[7]!.actor, 'spiffe://example.org/writ/agent/node1');
      assert.equal(bodies[7]!.detail['count'], 3, 'one leaf per batch of decisions, with its count');
      assert.match(String(bodies[7]!.detail['sha256']), /^[0-9a-f]{64}$/);
      assert.equal(bodies[0]!.subject, base.spiffeId);
      const r = await recompute(t.store);
      assert.deepEqual(r.root, (await t.store.auditHead()).root, 'the head is the root of the leaves');
    });

    it('rolls the change back when its audit append fails: no entry, token, quarantine, policy or decision without its leaf', async () => {
      const head = await t.store.auditHead();
      await t.sql(faultSql(t, true));
      try {
        await assert.rejects(t.store.createEntries([{ ...base, spiffeId: 'spiffe://example.org/audit/rolled-back' }], 1), /injected audit fault/);
        await assert.rejects(
          t.store.createAdminToken({ id: 'tok-x', hash: 'hx', role: 'admin', name: 'x', createdAt: 1, expiresAt: null }),
          /injected audit fault/,
        );
        await assert.rejects(
          t.store.putQuarantine({ spiffeId: 'spiffe://example.org/audit/q', reason: 'r', createdBy: 'o', createdAt: 1, expiresAt: null }),
          /injected audit fault/,
        );
        const rev = (await t.store.getPolicyRevision())?.revision ?? 0;
        await assert.rejects(t.store.appendPolicyRevision({ createdAt: 1, createdBy: 'o', comment: '', policies: {} }, rev), /injected audit fault/);
        await assert.rejects(
          t.store.addDecisions([
            { id: 'd-rb', at: 1, from: 'a', to: 'b', action: 'GET /', decision: 'deny', reason: 'R', policyRevision: 1, rule: '', reporter: 'x' },
          ]),
          /injected audit fault/,
        );
        assert.equal((await t.store.listEntries({ spiffeId: 'spiffe://example.org/audit/rolled-back' })).items.length, 0);
        assert.equal(await t.store.findAdminToken('hx'), undefined);
        assert.deepEqual(
          (await t.store.listQuarantine(0)).filter((q) => q.spiffeId === 'spiffe://example.org/audit/q'),
          [],
        );
        assert.equal((await t.store.getPolicyRevision())?.revision ?? 0, rev);
        assert.equal(await t.store.getDecision('d-rb'), undefined);
        assert.deepEqual(await t.store.auditHead(), head, 'the log did not move');
      } finally {
        await t.sql(faultSql(t, false));
      }
      await t.store.createEntries([{ ...base, spiffeId: 'spiffe://example.org/audit/after' }], 1);
      assert.equal((await t.store.auditHead()).size, head.size + 1);
    });

    it('stores values as given when the write and its leaf go with the COMMIT: quotes, backslashes, placeholders, statement text', async () => {
      const start = (await t.store.auditHead()).size;
      const reason = 'it\'s \\ a "test" $$ ? $1 \'; COMMIT; DROP TABLE quarantine; -- \u00e9\u{1f600}';
      const spiffeId = "spiffe://example.org/audit/o'brien\\x";
      await t.store.withActor("token:it's", () => t.store.putQuarantine({ spiffeId, reason, createdBy: "o'", createdAt: 1, expiresAt: null }));
      const [q] = (await t.store.listQuarantine(0)).filter((x) => x.spiffeId === spiffeId);
      assert.equal(q?.reason, reason);
      assert.equal(q?.createdBy, "o'");
      assert.equal((await t.store.auditHead()).size, start + 1);
      const [leaf] = await t.store.listAuditEntries(start, start + 1);
      const body = JSON.parse(leaf!.body) as { actor: string; subject: string; detail: { reason: string } };
      assert.deepEqual([body.actor, body.subject, body.detail.reason], ["token:it's", spiffeId, reason]);
      assert.deepEqual((await recompute(t.store)).root, (await t.store.auditHead()).root);
      if (t.name === 'postgres') {
        // PostgreSQL stores no NUL in text, as a parameter or inlined: refused, nothing written.
        await assert.rejects(
          t.store.putQuarantine({ spiffeId: 'spiffe://example.org/audit/nul', reason: 'a\0b', createdBy: 'o', createdAt: 1, expiresAt: null }),
        );
        assert.equal((await t.store.listQuarantine(0)).filter((x) => x.spiffeId === 'spiffe://example.org/audit/nul').length, 0);
        assert.equal((await t.store.auditHead()).size, start + 1);
      }
    });

    it('serialises concurrent appends: contiguous indexes, one tree', async () => {
      const start = (await t.store.auditHead()).size;
      await Promise.all(Array.from({ length: 40 }, (_, i) => t.store.createEntries([{ ...base, spiffeId: `spiffe://example.org/audit/c${i}` }], 1)));
      const r = await recompute(t.store);
      assert.equal(r.size, start + 40);
      assert.deepEqual(r.root, (await t.store.auditHead()).root);
    });

    it('concurrent one-leaf writers and folders (on PostgreSQL two replicas) make a dense, verifiable log with each change once', async () => {
      const start = (await t.store.auditHead()).size;
      // One SQLite file has one server; PostgreSQL is where replicas write and fold side by side.
      const other = t.name === 'postgres' ? await t.replica() : t.store;
      const q = (i: number) => ({ spiffeId: `spiffe://example.org/audit/w${i}`, reason: 'r', createdBy: 'o', createdAt: i, expiresAt: null });
      let next = 0;
      let writing = true;
      // After its write each writer reads the head (joining whatever fold runs): its leaf must be in it.
      const seen = new Map<string, number>();
      const writers = Array.from({ length: 8 }, async () => {
        for (let i = next++; i < 200; i = next++) {
          const s = i % 2 ? other : t.store;
          await s.putQuarantine(q(i));
          seen.set(q(i).spiffeId, (await s.auditHead()).size);
        }
      });
      // Readers fold while the writers commit: each fold takes what has committed by then.
      const folders = [t.store, other].map(async (s) => {
        while (writing) await s.auditHead();
      });
      try {
        await Promise.all(writers);
      } finally {
        writing = false;
        await Promise.all(folders);
      }
      const r = await recompute(t.store);
      assert.equal(r.size, start + 200, 'one leaf per committed change, none twice');
      assert.deepEqual(r.root, (await other.auditHead()).root, 'both replicas see one tree');
      const order = await subjects(t.store, start);
      assert.deepEqual([...order].sort(), Array.from({ length: 200 }, (_, i) => q(i).spiffeId).sort());
      const late = order.filter((subject, i) => start + i >= seen.get(subject)!);
      assert.deepEqual(late, [], 'each writer found its own leaf in the head it read next');
    });

    it('a change rolled back after its leaf was queued leaves no leaf, and the log stays dense after it', async () => {
      const start = (await t.store.auditHead()).size;
      await t.sql(faultSql(t, true, 'audit_pending', 'AFTER'));
      try {
        await assert.rejects(
          t.store.putQuarantine({ spiffeId: 'spiffe://example.org/audit/never', reason: 'r', createdBy: 'o', createdAt: 1, expiresAt: null }),
          /injected audit fault/,
        );
      } finally {
        await t.sql(faultSql(t, false, 'audit_pending'));
      }
      assert.deepEqual(
        (await t.store.listQuarantine(0)).filter((x) => x.spiffeId === 'spiffe://example.org/audit/never'),
        [],
      );
      await t.store.putQuarantine({ spiffeId: 'spiffe://example.org/audit/then', reason: 'r', createdBy: 'o', createdAt: 1, expiresAt: null });
      assert.deepEqual(await subjects(t.store, start), ['spiffe://example.org/audit/then']);
      assert.equal((await recompute(t.store)).size, start + 1);
    });

    it('a change committed but not yet folded (its writer gone, or the fold failing) is appended by the next fold, once', async () => {
      const start = (await t.store.auditHead()).size;
      // A replica commits a change and is never heard of again: nothing of it folded its leaf.
      const gone = await t.replica();
      await gone.putQuarantine({ spiffeId: 'spiffe://example.org/audit/crash', reason: 'r', createdBy: 'o', createdAt: 1, expiresAt: null });
      assert.deepEqual(await t.store.listAuditEntries(start, start + 1), [], 'committed, queued, not in the log yet');
      // The fold fails (the database refuses the tree's rows): the change stays committed, its leaf queued.
      await t.sql(faultSql(t, true, 'audit_nodes'));
      try {
        await assert.rejects(t.store.auditHead(), /injected audit fault/);
      } finally {
        await t.sql(faultSql(t, false, 'audit_nodes'));
      }
      assert.equal((await t.store.listQuarantine(0)).filter((x) => x.spiffeId === 'spiffe://example.org/audit/crash').length, 1);
      assert.deepEqual(await subjects(t.store, start), ['spiffe://example.org/audit/crash']);
      assert.equal((await t.store.auditHead()).size, start + 1, 'folded once');
      assert.equal((await recompute(t.store)).size, start + 1);
    });

    it('serves the perfect-subtree nodes every inclusion and consistency proof needs', async () => {
      const { hashes, size, root } = await recompute(t.store);
      const read = (nodes: readonly { level: number; index: number }[]) => t.store.auditNodes(nodes);
      for (let n = 1; n <= size; n += 7) {
        const prefix = new CompactRange();
        for (const h of hashes.slice(0, n)) prefix.append(h);
        for (let i = 0; i < n; i += 5) verifyInclusion(hashes[i]!, i, n, await inclusionProof(i, n, read), prefix.root());
        verifyConsistency(n, size, await consistencyProof(n, size, read), prefix.root(), root);
      }
    });

    it('keeps signed checkpoints and answers the latest', async () => {
      assert.equal(await t.store.latestAuditCheckpoint(), undefined);
      await t.store.putAuditCheckpoint({ size: 3, note: 'three', at: 10 });
      await t.store.putAuditCheckpoint({ size: 5, note: 'five', at: 11 });
      await t.store.putAuditCheckpoint({ size: 5, note: 'five again', at: 12 });
      assert.deepEqual(await t.store.latestAuditCheckpoint(), { size: 5, note: 'five', at: 11 });
    });
  });
}
