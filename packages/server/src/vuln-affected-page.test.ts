/**
 * `affected` in pages (SQLite and PostgreSQL): the totals count every image and running workload
 * whatever the page, pages walk every image once, listed workloads are capped, and a suppression
 * that may touch the vulnerability gives the same pages from the rows in memory.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Report } from '@writ/vuln';
import type { WorkloadInput } from './store/types.ts';
import { STORE_FACTORIES, type TestStore } from './testing/stores.ts';
import { affectedAnswer } from './vuln-answers.ts';

const IMAGES = 25;
const digestOf = (i: number): string => `sha256:${i.toString(16).padStart(2, '0').repeat(32)}`;
const NOW = 1_000_000;

function report(i: number): Report {
  const digest = digestOf(i);
  return {
    format: 'trivy',
    scanner: { name: 'trivy' },
    scannedAt: '2026-01-01T00:00:00.000Z',
    image: {
      digest,
      names: [`reg.example/team${i % 3}/app${i}`],
      repoTags: [],
      repoDigests: [],
      diffIds: [`sha256:${'e'.repeat(63)}${i % 10}`],
      annotations: {},
      labels: {},
    },
    packages: [{ id: 'p0', name: 'zlib', version: '1.2', type: 'deb', purl: 'pkg:deb/debian/zlib@1.2', layer: 'sha256:'.padEnd(71, 'e') }],
    findings: [
      { id: 'CVE-2026-7001', aliases: ['GHSA-p6mc-m468-83gw'], severity: 'high', packageRef: 'p0', installed: '1.2', fixed: '1.3', status: 'affected' },
    ],
    vex: [],
    vulnerabilityData: true,
  };
}

// Image i runs in (i % 4) + 1 workloads, owned by team(i % 3); 2 workloads of image 0 have no owner.
function workloads(): WorkloadInput[] {
  const out: WorkloadInput[] = [];
  for (let i = 0; i < IMAGES; i++)
    for (let k = 0; k <= i % 4; k++)
      out.push({
        key: `c-${i}-${k}`,
        spiffeIds: [`spiffe://example.org/app${i}`],
        containerId: `c-${i}-${k}`,
        containerName: 'app',
        podUid: `pod-${i}-${k}`,
        podName: `app${i}-${k}`,
        namespace: 'shop',
        podOwner: null,
        imageDigest: digestOf(i),
        imageName: `reg.example/team${i % 3}/app${i}`,
        labels: {},
        annotations: {},
        owner: i === 0 ? null : `team${i % 3}`,
      });
  return out;
}
const RUNNING = workloads().length;

for (const factory of STORE_FACTORIES) {
  describe(`affected in pages: ${factory.name.replace('TestStore', '')}`, () => {
    let t: TestStore;
    before(async () => {
      t = await factory();
      for (let i = 0; i < IMAGES; i++) await t.store.putReport(report(i), 1);
      await t.store.putAgentWorkloads('spiffe://example.org/writ/agent/n1', 'n1', workloads(), NOW);
    });
    after(async () => t.dispose());

    it('the default page holds everything of a small answer: no next page, every workload listed', async () => {
      const a = await affectedAnswer(t.store, 'CVE-2026-7001', NOW);
      assert.equal(a.images.length, IMAGES);
      assert.equal(a.page.next, null);
      assert.deepEqual(a.counts, { images: IMAGES, suppressedImages: 0, workloads: RUNNING, owners: 4 });
      assert.equal(a.page.workloadsListed, RUNNING);
      assert.deepEqual(
        a.owners.map((o) => [o.owner, o.count, o.workloads.length]),
        a.owners.map((o) => [o.owner, o.count, o.count]),
        'each owner lists every workload it counts',
      );
      assert.equal(a.owners.at(-1)!.owner, null, 'no owner last');
    });

    it('pages of 10 walk every image once in digest order; the counts and owner totals are the same on every page', async () => {
      const seen: string[] = [];
      let after: string | undefined;
      const full = await affectedAnswer(t.store, 'CVE-2026-7001', NOW);
      for (let n = 0; n < 5; n++) {
        const a = await affectedAnswer(t.store, 'CVE-2026-7001', NOW, { limit: 10, workloadLimit: 1000, ...(after ? { after } : {}) });
        assert.deepEqual(a.counts, full.counts);
        assert.deepEqual(
          a.owners.map((o) => [o.owner, o.count, o.images]),
          full.owners.map((o) => [o.owner, o.count, o.images]),
        );
        seen.push(...a.images.map((i) => i.digest));
        for (const img of a.images) assert.equal(img.running, (Number.parseInt(img.digest.slice(7, 9), 16) % 4) + 1, 'running counts the image workloads');
        if (a.page.next === null) break;
        assert.equal(a.page.next, a.images.at(-1)!.digest);
        after = a.page.next;
      }
      assert.deepEqual(
        seen,
        full.images.map((i) => i.digest),
      );
      assert.deepEqual(seen, [...seen].sort());
      assert.equal(new Set(seen).size, IMAGES);
    });

    it('workload rows are capped, the counts are not', async () => {
      const a = await affectedAnswer(t.store, 'CVE-2026-7001', NOW, { limit: 100, workloadLimit: 7 });
      assert.equal(a.page.workloadsListed, 7);
      assert.equal(
        a.owners.reduce((n, o) => n + o.workloads.length, 0),
        7,
      );
      assert.equal(a.counts.workloads, RUNNING);
      assert.equal(
        a.images.reduce((n, i) => n + i.running, 0),
        RUNNING,
      );
    });

    it('a suppression on the alias of some images: they count as suppressed, and pages from the rows in memory agree with the store pages', async () => {
      const before = await affectedAnswer(t.store, 'CVE-2026-7001', NOW, { limit: 10, workloadLimit: 5 });
      const product = (i: number) => ({
        id: `pkg:oci/app${i}@${encodeURIComponent(digestOf(i))}`,
        purl: `pkg:oci/app${i}@${encodeURIComponent(digestOf(i))}`,
        digest: digestOf(i),
        subcomponents: [],
      });
      await t.store.putVexDocument(
        {
          id: 'https://vex.example/doc-1',
          author: 'sec',
          version: 1,
          timestamp: '2026-01-01T00:00:00.000Z',
          statements: [
            {
              vulnerability: 'GHSA-p6mc-m468-83gw',
              aliases: [],
              products: [product(1), product(2)],
              status: 'not_affected',
              justification: 'vulnerable_code_not_in_execute_path',
              timestamp: '2026-01-01T00:00:00.000Z',
            },
          ],
        },
        NOW,
      );
      const a = await affectedAnswer(t.store, 'CVE-2026-7001', NOW, { limit: 10, workloadLimit: 5 });
      assert.equal(a.counts.images, IMAGES - 2);
      assert.equal(a.counts.suppressedImages, 2);
      assert.equal(a.counts.workloads, RUNNING - 2 - 3, 'the 2 and 3 workloads of images 1 and 2 no longer count');
      assert.deepEqual(
        a.images.map((i) => i.digest),
        before.images.map((i) => i.digest),
        'the same page of images',
      );
      assert.deepEqual(
        a.images.filter((i) => !i.affected).map((i) => i.digest),
        [digestOf(1), digestOf(2)],
      );
      assert.equal(a.page.next, before.page.next);
      assert.equal(a.page.workloadsListed, 5);
    });
  });
}
