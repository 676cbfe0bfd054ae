/** The checkpointer signs only a tree that extends its last checkpoint, and only where it holds the lease. */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { generateNoteKey, noteSigner, noteVerifier, openNote, parseCheckpoint } from '@writ/transparency';
import { STORE_FACTORIES, type TestStore } from '../testing/stores.ts';
import type { Store } from '../store/types.ts';
import { AUDIT_PAGE_BUDGET, AuditLog } from './audit-log.ts';

const origin = 'example.org/writ-audit';
const quarantine = (n: number) => ({ spiffeId: `spiffe://example.org/audit/q${n}`, reason: 'r', createdBy: 'ops', createdAt: n, expiresAt: null });

for (const factory of STORE_FACTORIES) {
  describe(`audit checkpointer: ${factory.name.replace('TestStore', '')}`, () => {
    let t: TestStore;
    before(async () => {
      t = await factory();
    });
    after(async () => t.dispose());

    it('signs nothing where it does not hold the lease, and refuses (and reports) a tree rewritten under it', async () => {
      const key = generateNoteKey(origin);
      let here = false;
      const reported: { from: number; to: number }[] = [];
      const log = new AuditLog({
        store: t.store,
        origin,
        signer: noteSigner(key.skey),
        vkey: key.vkey,
        clock: () => 1,
        runsHere: () => here,
        onInconsistent: (d) => reported.push({ from: d.from, to: d.to }),
      });
      for (let i = 0; i < 3; i++) await t.store.putQuarantine(quarantine(i));
      assert.equal(await log.checkpoint(), undefined, 'a replica without the lease signs no checkpoint');

      here = true;
      const first = await log.checkpoint();
      assert.ok(first);
      const size = parseCheckpoint(openNote(first.note, [noteVerifier(key.vkey)]).text).size;
      assert.equal(size, (await t.store.auditHead()).size);

      // Growing honestly: the next checkpoint is signed.
      await t.store.putQuarantine(quarantine(3));
      const second = await log.checkpoint();
      assert.ok(second && second.size > first.size);

      // A database administrator rewrites the stored tree, then the log grows again.
      // (Its stored nodes and the head's compact range: every hex digit made 0, separators kept.)
      const zeroed = [...'123456789abcdef'].reduce((e, c) => `REPLACE(${e}, '${c}', '0')`, 'hashes');
      await t.sql(`UPDATE audit_nodes SET hash = '${'00'.repeat(32)}'`);
      await t.sql(`UPDATE audit_head SET hashes = ${zeroed}`);
      await t.store.putQuarantine(quarantine(4));
      await assert.rejects(log.checkpoint(), (err: { code?: string }) => err.code === 'ERR_AUDIT_INCONSISTENT');
      assert.deepEqual(reported, [{ from: second.size, to: (await t.store.auditHead()).size }]);
      assert.equal((await t.store.latestAuditCheckpoint())?.size, second.size, 'no checkpoint is signed over the rewritten tree');
    });
  });
}

describe('audit entries pages', () => {
  it('stop after about AUDIT_PAGE_BUDGET of bodies, at the next stored index, and always hold one entry', async () => {
    const big = 'x'.repeat(AUDIT_PAGE_BUDGET / 2 + 1);
    // Rows 0, 1, 3, 4 (2 deleted): the page that stops after row 1 ends at 3, the next stored index.
    const rows = [0, 1, 3, 4].map((index) => ({ index, body: big, leafHash: '00'.repeat(32) }));
    const store = {
      latestAuditCheckpoint: async () => ({ size: 5, note: '', at: 0 }),
      listAuditEntries: async (start: number, end: number) => rows.filter((r) => r.index >= start && r.index < end),
    } as unknown as Store;
    const key = generateNoteKey(origin);
    const log = new AuditLog({ store, origin, signer: noteSigner(key.skey), vkey: key.vkey, clock: () => 1 });
    const first = await log.entries(0, undefined);
    assert.deepEqual([first.end, first.entries.map((e) => e.index)], [3, [0, 1]]);
    const next = await log.entries(3, undefined);
    assert.deepEqual([next.end, next.entries.map((e) => e.index)], [5, [3, 4]]);
    rows[0] = { index: 0, body: 'y'.repeat(AUDIT_PAGE_BUDGET * 2), leafHash: '00'.repeat(32) };
    const one = await log.entries(0, 2);
    assert.deepEqual([one.end, one.entries.length], [1, 1]);
  });
});
