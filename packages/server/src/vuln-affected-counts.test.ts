/**
 * What `affectedPage` counts without reading the workloads (SQLite and PostgreSQL): the images from
 * `vuln_images` and the running workloads per owner from `workload_counts` (migration 18), kept by
 * putReport, putAgentWorkloads and pruneWorkloads. After every change the page's totals must be what
 * `store.affected` finds by reading every workload row, and the carrying digests what
 * `affectedDigests` finds from the findings.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Report } from '@writ/vuln';
import { RUNNING_GRACE_MS, type WorkloadInput } from './store/types.ts';
import { STORE_FACTORIES, type TestStore } from './testing/stores.ts';
import { affectedAnswer } from './vuln-answers.ts';

const CVE = 'CVE-2026-7101';
const dg = (c: string): string => `sha256:${c.repeat(64)}`;
const IMG1 = dg('1');
const IMG2 = dg('2');
const IMG3 = dg('3');
const A = 'spiffe://example.org/writ/agent/a';
const B = 'spiffe://example.org/writ/agent/b';
const T0 = 10_000_000;
const PAGE = { limit: 100, workloadLimit: 1000 } as const;

function report(digest: string, scannedAt: string, status: 'affected' | 'fixed' | null, format: 'trivy' | 'spdx' = 'trivy'): Report {
  return {
    format,
    scanner: { name: 'trivy' },
    scannedAt,
    image: { digest, names: [`reg.example/shop/${digest.slice(7, 8)}`], repoTags: [], repoDigests: [], diffIds: [], annotations: {}, labels: {} },
    packages: [{ id: 'p0', name: 'zlib', version: '1.2', type: 'deb' }],
    findings:
      status === null ? [] : [{ id: 'GHSA-7101-7101-7101', aliases: [CVE], severity: 'high', packageRef: 'p0', installed: '1.2', fixed: '1.3', status }],
    vex: [],
    vulnerabilityData: format !== 'spdx',
  };
}

function w(key: string, imageDigest: string | null, owner: string | null): WorkloadInput {
  return {
    key,
    spiffeIds: [`spiffe://example.org/${key}`],
    containerId: key,
    containerName: 'app',
    podUid: null,
    podName: key,
    namespace: 'shop',
    podOwner: null,
    imageDigest,
    imageName: null,
    labels: {},
    annotations: {},
    owner,
  };
}

type Totals = { owner: string | null; workloads: number; images: number }[];

for (const factory of STORE_FACTORIES) {
  describe(`affected totals kept as reports and workloads come and go: ${factory.name.replace('TestStore', '')}`, () => {
    let t: TestStore;
    before(async () => {
      t = await factory();
    });
    after(async () => t.dispose());

    /** The page's totals at `now`, checked against the ones every workload row gives. */
    async function totals(now: number): Promise<Totals> {
      const page = await t.store.affectedPage(CVE, now, PAGE);
      const byOwner = new Map<string | null, { workloads: number; images: Set<string> }>();
      for (const [digest, running] of new Map((await t.store.affected(CVE, now)).map((r) => [r.image.digest, r.running])))
        for (const x of running) {
          const o = byOwner.get(x.owner) ?? { workloads: 0, images: new Set<string>() };
          o.workloads++;
          o.images.add(x.imageDigest ?? digest);
          byOwner.set(x.owner, o);
        }
      const reference = [...byOwner].map(([owner, o]) => ({ owner, workloads: o.workloads, images: o.images.size }));
      const order = (a: Totals[number], b: Totals[number]) => (a.owner === null ? 1 : b.owner === null ? -1 : a.owner < b.owner ? -1 : 1);
      assert.deepEqual(page.owners, reference.sort(order), `at ${now - T0} ms: the counted totals are the ones the workload rows give`);
      assert.equal(
        page.workloads,
        reference.reduce((n, o) => n + o.workloads, 0),
      );
      assert.deepEqual(page.carrying, await t.store.affectedDigests(CVE), 'the carrying digests are the ones the findings give');
      return page.owners.map((o) => ({ ...o }));
    }

    it('reports: a newer scan without it takes an image out, an SBOM does not hide it, a later scan with it puts it back', async () => {
      await t.store.putReport(report(IMG1, '2026-01-01T00:00:00Z', 'affected'), 1);
      await t.store.putReport(report(IMG2, '2026-01-01T00:00:00Z', 'affected'), 1);
      await t.store.putReport(report(IMG3, '2026-01-01T00:00:00Z', null), 1);
      await totals(T0);
      assert.deepEqual((await t.store.affectedPage(CVE, T0, PAGE)).carrying, [IMG1, IMG2]);
      await t.store.putReport(report(IMG2, '2026-01-02T00:00:00Z', 'fixed'), 2);
      assert.deepEqual((await t.store.affectedPage(CVE, T0, PAGE)).carrying, [IMG1], 'the newer scan says fixed');
      await t.store.putReport(report(IMG1, '2026-01-03T00:00:00Z', null, 'spdx'), 3);
      assert.deepEqual((await t.store.affectedPage(CVE, T0, PAGE)).carrying, [IMG1], 'an SBOM is no newer vulnerability report');
      await t.store.putReport(report(IMG2, '2026-01-04T00:00:00Z', 'affected'), 4);
      await t.store.putReport(report(IMG3, '2025-12-01T00:00:00Z', 'affected'), 4);
      assert.deepEqual((await t.store.affectedPage(CVE, T0, PAGE)).carrying, [IMG1, IMG2], 'an older scan of image 3 is not its latest');
      await totals(T0);
    });

    it('workloads: started, ended, moved to another image or owner, silent for a minute, resumed, pruned', async () => {
      await t.store.putAgentWorkloads(
        A,
        'a',
        [w('a1', IMG1, 'red'), w('a2', IMG1, 'red'), w('a3', IMG1, 'red'), w('a4', IMG2, null), w('a5', IMG3, 'red'), w('a6', null, 'red')],
        T0,
      );
      await t.store.putAgentWorkloads(B, 'b', [w('b1', IMG1, 'blue'), w('b2', IMG2, 'blue')], T0);
      assert.deepEqual(await totals(T0), [
        { owner: 'blue', workloads: 2, images: 2 },
        { owner: 'red', workloads: 3, images: 1 },
        { owner: null, workloads: 1, images: 1 },
      ]);
      // a1 ends; a2 changes owner; a4 moves from image 2 to image 1 (its owner too).
      await t.store.putAgentWorkloads(
        A,
        'a',
        [w('a2', IMG1, 'blue'), w('a3', IMG1, 'red'), w('a4', IMG1, 'red'), w('a5', IMG3, 'red'), w('a6', null, 'red')],
        T0 + 20_000,
      );
      assert.deepEqual(await totals(T0 + 20_000), [
        { owner: 'blue', workloads: 3, images: 2 },
        { owner: 'red', workloads: 2, images: 1 },
      ]);
      // B says nothing for more than a minute: its workloads stop running though nothing ended them.
      const late = T0 + RUNNING_GRACE_MS + 10_000;
      await t.store.putAgentWorkloads(A, 'a', [w('a2', IMG1, 'blue'), w('a3', IMG1, 'red'), w('a4', IMG1, 'red')], late);
      assert.deepEqual(await totals(late), [
        { owner: 'blue', workloads: 1, images: 1 },
        { owner: 'red', workloads: 2, images: 1 },
      ]);
      // B is back with the same workloads; A reports nothing, then all of them again (resumed within the grace).
      await t.store.putAgentWorkloads(B, 'b', [w('b1', IMG1, 'blue'), w('b2', IMG2, 'blue')], late + 1000);
      await t.store.putAgentWorkloads(A, 'a', [], late + 2000);
      assert.deepEqual(await totals(late + 2000), [{ owner: 'blue', workloads: 2, images: 2 }]);
      await t.store.putAgentWorkloads(A, 'a', [w('a2', IMG1, 'blue'), w('a3', IMG1, 'red'), w('a4', IMG1, 'red')], late + 3000);
      assert.deepEqual(await totals(late + 3000), [
        { owner: 'blue', workloads: 3, images: 2 },
        { owner: 'red', workloads: 2, images: 1 },
      ]);
      // Pruning what was last seen before B's last report takes B's running workloads with it (and A's ended ones).
      assert.ok((await t.store.pruneWorkloads(late + 1500)) >= 2);
      assert.deepEqual(await totals(late + 3000), [
        { owner: 'blue', workloads: 1, images: 1 },
        { owner: 'red', workloads: 2, images: 1 },
      ]);
      // B reports again after the prune: its workloads start anew and count again.
      await t.store.putAgentWorkloads(B, 'b', [w('b1', IMG1, 'blue')], late + 4000);
      assert.deepEqual(await totals(late + 4000), [
        { owner: 'blue', workloads: 2, images: 1 },
        { owner: 'red', workloads: 2, images: 1 },
      ]);
    });
  });
}

// A base with a newer release free of the CVE, a runtime on the base, and apps on each.
const L = (c: string): string => `sha256:${c.repeat(64)}`;
const BASE = dg('b');
const BASE2 = dg('c');
const RUNTIME = dg('d');
const APP1 = dg('e');
const APP2 = dg('f');
function layered(digest: string, name: string, layers: string[], created: string, cves: string[]): Report {
  return {
    format: 'trivy',
    scanner: { name: 'trivy' },
    scannedAt: '2026-01-01T00:00:00Z',
    image: {
      digest,
      names: [name],
      repoTags: [],
      repoDigests: [],
      diffIds: layers,
      annotations: { 'org.opencontainers.image.created': created },
      labels: {},
    },
    packages: [{ id: 'p0', name: 'zlib', version: '1.2', type: 'deb', layer: layers[0]! }],
    findings: cves.map((id) => ({ id, aliases: [], severity: 'high' as const, packageRef: 'p0', installed: '1.2', fixed: '1.3', status: 'affected' as const })),
    vex: [],
    vulnerabilityData: true,
  };
}

for (const factory of STORE_FACTORIES) {
  describe(`affected: the page's bases from the page's own statements: ${factory.name.replace('TestStore', '')}`, () => {
    let t: TestStore;
    before(async () => {
      t = await factory();
      await t.store.putReport(layered(BASE, 'reg.example/base', [L('1')], '2026-01-01T00:00:00Z', ['CVE-2026-7201', 'CVE-2026-7202']), 1);
      await t.store.putReport(layered(BASE2, 'reg.example/base', [L('9')], '2026-02-01T00:00:00Z', []), 1);
      await t.store.putReport(layered(RUNTIME, 'reg.example/runtime', [L('1'), L('2')], '2026-01-02T00:00:00Z', ['CVE-2026-7201', 'CVE-2026-7202']), 1);
      await t.store.putReport(layered(APP1, 'reg.example/app1', [L('1'), L('2'), L('3')], '2026-01-03T00:00:00Z', ['CVE-2026-7201', 'CVE-2026-7203']), 1);
      await t.store.putReport(layered(APP2, 'reg.example/app2', [L('1'), L('4')], '2026-01-03T00:00:00Z', ['CVE-2026-7201', 'CVE-2026-7202']), 1);
    });
    after(async () => t.dispose());

    it('give the answer baseImagesOf and reportedDigests give, whether the lineage ends at the page or goes further', async () => {
      // The same store, asked the old way: no bases with the page, so the answer asks baseImagesOf and reportedDigests.
      const oldWay = new Proxy(t.store, {
        get(target, prop) {
          const v = Reflect.get(target, prop, target) as unknown;
          if (prop === 'affectedPage')
            return async (...args: Parameters<typeof target.affectedPage>) => ({ ...(await target.affectedPage(...args)), bases: undefined });
          return typeof v === 'function' ? v.bind(target) : v;
        },
      });
      // 7201: every image but the new base, whose ancestors are all on the page; 7203: only app 1, whose runtime's base is not.
      const pages = await Promise.all(['CVE-2026-7201', 'CVE-2026-7203'].map((id) => t.store.affectedPage(id, T0, PAGE)));
      assert.notEqual(pages[0]!.bases, undefined, 'one level: the page brings its bases');
      assert.deepEqual(
        pages[0]!.bases!.map((b) => [b.digest, b.reported]),
        [[BASE2, true]],
      );
      assert.equal(pages[1]!.bases, undefined, 'the runtime has a parent of its own: the answer asks baseImagesOf');
      for (const id of ['CVE-2026-7201', 'CVE-2026-7202', 'CVE-2026-7203']) {
        const a = await affectedAnswer(t.store, id, T0);
        assert.deepEqual(a, await affectedAnswer(oldWay, id, T0), id);
        if (id === 'CVE-2026-7202') {
          const app2 = a.images.find((i) => i.digest === APP2)!;
          assert.deepEqual(
            app2.packages[0]!.fix.newerBases.map((b) => b.digest),
            [BASE2],
            'the newer base, reported free of it, is named',
          );
        }
      }
    });
  });
}
