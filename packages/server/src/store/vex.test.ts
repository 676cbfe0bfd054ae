/** Store conformance for OpenVEX documents (issue 13): every case on SQLite and PostgreSQL; and loadSuppressions over a real store. */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { VexDocument, VexStatement } from '@writ/vuln';
import { loadSuppressions } from '../suppressions.ts';
import { STORE_FACTORIES, type TestStore } from '../testing/stores.ts';

const D1 = `sha256:${'1'.repeat(64)}`;
const D2 = `sha256:${'2'.repeat(64)}`;

const st = (vulnerability: string, over: Partial<VexStatement> = {}): VexStatement => ({
  vulnerability,
  aliases: [],
  products: [
    {
      id: `pkg:oci/web@${encodeURIComponent(D1)}`,
      purl: `pkg:oci/web@${encodeURIComponent(D1)}`,
      digest: D1,
      subcomponents: [{ id: 'pkg:apk/alpine/openssl', purl: 'pkg:apk/alpine/openssl' }],
    },
  ],
  status: 'not_affected',
  justification: 'vulnerable_code_not_in_execute_path',
  impactStatement: 'never called',
  timestamp: '2026-11-01T00:00:00.000Z',
  ...over,
});

const doc = (version: number, statements: VexStatement[], id = 'https://example.com/vex/1'): VexDocument => ({
  id,
  author: 'security@example.com',
  version,
  timestamp: '2026-11-01T00:00:00.000Z',
  statements,
});

const finding = (vulnId: string, imageDigest = D1) => ({
  vulnId,
  aliases: [],
  imageDigest,
  repositories: ['registry.example.com/shop/web'],
  packageName: 'openssl',
  purl: 'pkg:apk/alpine/openssl@3.1.4-r0?arch=x86_64',
});

const EXCEPTION = `apiVersion: writ.dev/v1
kind: VulnException
metadata: { name: accepted }
spec:
  vulnerability: CVE-2024-0002
  scope: { digest: ["${D2}"] }
  reason: "TICKET-9"
  owner: team-web
  expires: 2027-01-01T00:00:00Z
`;

for (const factory of STORE_FACTORIES) {
  describe(`store conformance, OpenVEX: ${factory.name.replace('TestStore', '')}`, () => {
    let t: TestStore;
    before(async () => {
      t = await factory();
    });
    after(async () => t.dispose());

    it('stores a document, answers the same one again unchanged, lists statements by name and alias', async () => {
      const d = doc(1, [st('CVE-2024-0001', { aliases: ['GHSA-jfh8-c2jp-5v3q'] }), st('CVE-2024-0003', { status: 'affected', actionStatement: 'upgrade' })]);
      assert.deepEqual(await t.store.putVexDocument(d, 1000), { created: true, replaced: null, statements: 2 });
      assert.deepEqual(await t.store.putVexDocument(d, 2000), { created: false, replaced: null, statements: 2 });
      const all = await t.store.listVexStatements();
      assert.deepEqual(
        all.map((s) => [s.vulnerability, s.status, s.document.id, s.document.version]),
        [
          ['CVE-2024-0001', 'not_affected', 'https://example.com/vex/1', 1],
          ['CVE-2024-0003', 'affected', 'https://example.com/vex/1', 1],
        ],
      );
      // What was put is what comes back, products and subcomponents included.
      const { document: _d, ...first } = all[0]!;
      assert.deepEqual(first, d.statements[0]);
      assert.equal(all[1]!.actionStatement, 'upgrade');
      assert.deepEqual(
        (await t.store.listVexStatements({ vulnerability: 'GHSA-jfh8-c2jp-5v3q' })).map((s) => s.vulnerability),
        ['CVE-2024-0001'],
      );
      assert.deepEqual(
        (await t.store.listVexStatements({ vulnerability: 'CVE-2024-0003' })).map((s) => s.vulnerability),
        ['CVE-2024-0003'],
      );
      assert.deepEqual(await t.store.listVexStatements({ vulnerability: 'CVE-2024-0004' }), []);
      const [info] = await t.store.listVexDocuments();
      assert.deepEqual(
        { ...info, ingestedAt: 0 },
        {
          id: 'https://example.com/vex/1',
          author: 'security@example.com',
          role: null,
          version: 1,
          issuedAt: Date.parse('2026-11-01T00:00:00Z'),
          statementCount: 2,
          ingestedAt: 0,
        },
      );
    });

    it('a newer version replaces the statements; an older one, or the same version changed, is refused and changes nothing', async () => {
      assert.deepEqual(await t.store.putVexDocument(doc(2, [st('CVE-2024-0005')]), 3000), { created: false, replaced: 1, statements: 1 });
      assert.deepEqual(
        (await t.store.listVexStatements()).map((s) => [s.vulnerability, s.document.version]),
        [['CVE-2024-0005', 2]],
      );
      for (const bad of [doc(1, [st('CVE-2024-0006')]), doc(2, [st('CVE-2024-0006')])])
        await assert.rejects(
          t.store.putVexDocument(bad, 4000),
          (e: { code: string; field: string }) => e.code === 'ERR_VEX_VERSION_CONFLICT' && e.field === 'version',
        );
      assert.deepEqual(
        (await t.store.listVexStatements()).map((s) => [s.vulnerability, s.document.version]),
        [['CVE-2024-0005', 2]],
      );
      assert.equal((await t.store.listVexDocuments())[0]!.version, 2);
    });

    it('documents are independent by @id; a deleted one takes its statements with it', async () => {
      await t.store.putVexDocument(doc(1, [st('CVE-2024-0007')], 'urn:other'), 5000);
      assert.deepEqual(
        (await t.store.listVexDocuments()).map((d) => d.id),
        ['https://example.com/vex/1', 'urn:other'],
      );
      assert.equal(await t.store.deleteVexDocument('urn:other'), true);
      assert.equal(await t.store.deleteVexDocument('urn:other'), false);
      assert.deepEqual(
        (await t.store.listVexStatements()).map((s) => s.document.id),
        ['https://example.com/vex/1'],
      );
    });

    it("notifies 'vex' for a stored, replaced or deleted document, not for the same one again", async () => {
      const seen: string[] = [];
      const off = t.store.onChange((c) => seen.push(c.kind));
      try {
        await t.store.putVexDocument(doc(1, [st('CVE-2024-0008')], 'urn:notify'), 1);
        await t.store.putVexDocument(doc(1, [st('CVE-2024-0008')], 'urn:notify'), 2);
        await t.store.putVexDocument(doc(2, [st('CVE-2024-0008')], 'urn:notify'), 3);
        await t.store.deleteVexDocument('urn:notify');
        await t.store.deleteVexDocument('urn:notify');
      } finally {
        off();
      }
      assert.deepEqual(seen, ['vex', 'vex', 'vex']);
    });

    it('replicas storing the same document at once store it once; of two new versions at once the higher one stays', async () => {
      const same = doc(1, [st('CVE-2024-0009'), st('CVE-2024-0010')], 'urn:race');
      const r = await Promise.all([t.store.putVexDocument(same, 1), t.store.putVexDocument(same, 1)]);
      assert.deepEqual(r.map((x) => x.created).sort(), [false, true]);
      const versions = await Promise.allSettled([
        t.store.putVexDocument(doc(3, [st('CVE-2024-0011')], 'urn:race'), 2),
        t.store.putVexDocument(doc(2, [st('CVE-2024-0012')], 'urn:race'), 2),
      ]);
      assert.equal(versions[0].status, 'fulfilled');
      const race = (await t.store.listVexStatements()).filter((x) => x.document.id === 'urn:race');
      assert.deepEqual(
        race.map((x) => [x.vulnerability, x.document.version]),
        [['CVE-2024-0011', 3]],
      );
      await t.store.deleteVexDocument('urn:race');
    });

    it('a document of thousands of statements is stored whole (chunked inserts)', async () => {
      const many = Array.from({ length: 1234 }, (_, i) => st(`CVE-2025-${String(10000 + i)}`));
      assert.equal((await t.store.putVexDocument(doc(1, many, 'urn:many'), 6000)).statements, 1234);
      assert.equal((await t.store.listVexStatements()).filter((s) => s.document.id === 'urn:many').length, 1234);
      await t.store.deleteVexDocument('urn:many');
    });

    it("loadSuppressions: stored VEX statements and the current revision's VulnExceptions, an expired one active again", async () => {
      await t.store.appendPolicyRevision({ createdAt: 1, createdBy: 'test', comment: '', policies: { 'VulnException/accepted': EXCEPTION } }, 0);
      const now = Date.parse('2026-12-02T00:00:00Z');
      const s = await loadSuppressions(t.store, now);
      assert.equal(s.match(finding('CVE-2024-0005'), now)?.by, 'vex');
      assert.equal(s.match(finding('CVE-2024-0005', D2), now), undefined);
      assert.deepEqual(s.match(finding('CVE-2024-0002', D2), now), {
        by: 'exception',
        name: 'accepted',
        reason: 'TICKET-9',
        owner: 'team-web',
        expires: '2027-01-01T00:00:00.000Z',
      });
      const later = Date.parse('2027-01-01T00:00:00Z');
      assert.equal(s.match(finding('CVE-2024-0002', D2), later), undefined);
      assert.equal((await loadSuppressions(t.store, later)).match(finding('CVE-2024-0002', D2), later), undefined);
    });
  });
}
