/** A server's Suppressions: the VulnExceptions parsed once per policy revision, the cache its own (no module-level state). */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Suppressions } from './suppressions.ts';
import { STORE_FACTORIES, type TestStore } from './testing/stores.ts';

const exception = (vulnerability: string) => `apiVersion: writ.dev/v1
kind: VulnException
metadata: { name: accepted }
spec:
  vulnerability: ${vulnerability}
  scope: { digest: ["sha256:${'2'.repeat(64)}"] }
  reason: "TICKET-9"
  owner: team-web
  expires: 2027-01-01T00:00:00Z
`;

for (const factory of STORE_FACTORIES)
  describe(`Suppressions on ${factory.name.replace('TestStore', '')}`, () => {
    let t: TestStore;
    before(async () => {
      t = await factory();
    });
    after(() => t?.dispose());

    it('parses the policy set once per revision, again after a new one; a second server on the same store keeps a cache of its own', async () => {
      const ids = (x: ReadonlyArray<{ vulnerability: string }>) => x.map((e) => e.vulnerability);
      const a = new Suppressions(t.store);
      assert.deepEqual(await a.vulnExceptions(), [], 'no policy revision yet: none');
      await t.store.appendPolicyRevision(
        { createdAt: 1, createdBy: 'test', comment: '', policies: { 'VulnException/accepted': exception('CVE-2024-0002') } },
        0,
      );
      const first = await a.vulnExceptions();
      assert.deepEqual(ids(first), ['CVE-2024-0002']);
      assert.equal(await a.vulnExceptions(), first, 'the same revision: the parsed list is reused, not parsed again');
      const b = new Suppressions(t.store);
      const other = await b.vulnExceptions();
      assert.deepEqual(ids(other), ['CVE-2024-0002']);
      assert.notEqual(other, first, 'another server parses for itself: nothing is shared through the module');
      await t.store.appendPolicyRevision(
        { createdAt: 2, createdBy: 'test', comment: '', policies: { 'VulnException/accepted': exception('CVE-2024-0003') } },
        1,
      );
      assert.deepEqual(ids(await a.vulnExceptions()), ['CVE-2024-0003'], 'a new revision is read at once');
      const now = Date.parse('2026-12-02T00:00:00Z');
      const finding = {
        vulnId: 'CVE-2024-0003',
        aliases: [],
        imageDigest: `sha256:${'2'.repeat(64)}`,
        repositories: [],
        packageName: 'openssl',
        purl: 'pkg:apk/alpine/openssl',
      };
      assert.equal((await b.load(now)).match(finding, now)?.by, 'exception');
    });
  });
