/** The answers' shaping over a real store (SQLite and PostgreSQL): where to fix, counts, the list, a rollout with no identity. */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Report } from '@writ/vuln';
import { STORE_FACTORIES, type TestStore } from './testing/stores.ts';
import { affectedAnswer, imageAnswerExtras, listAnswer, rolloutAnswer } from './vuln-answers.ts';

const dg = (c: string): string => `sha256:${c.repeat(64)}`;
const BASE = dg('a');
const APP = dg('b');
const L1 = dg('1');
const L2 = dg('2');

function report(
  digest: string,
  name: string,
  layers: string[],
  pkgs: Array<{ name: string; layer: string; vuln?: { id: string; aliases?: string[]; fixed?: string; severity: 'high' | 'low' } }>,
): Report {
  return {
    format: 'trivy',
    scanner: { name: 'trivy' },
    scannedAt: '2026-01-01T00:00:00.000Z',
    image: { digest, names: [name], repoTags: [`${name}:1`], repoDigests: [], diffIds: layers, annotations: {}, labels: {} },
    packages: pkgs.map((p, i) => ({ id: `p${i}`, name: p.name, version: '1.0', type: 'npm', purl: `pkg:npm/${p.name}@1.0`, layer: p.layer })),
    findings: pkgs.flatMap((p, i) =>
      p.vuln === undefined
        ? []
        : [
            {
              id: p.vuln.id,
              aliases: p.vuln.aliases ?? [],
              severity: p.vuln.severity,
              packageRef: `p${i}`,
              installed: '1.0',
              ...(p.vuln.fixed ? { fixed: p.vuln.fixed } : {}),
              status: 'affected' as const,
            },
          ],
    ),
    vex: [],
    vulnerabilityData: true,
  };
}

for (const factory of STORE_FACTORIES) {
  describe(`vulnerability answers: ${factory.name.replace('TestStore', '')}`, () => {
    let t: TestStore;
    before(async () => {
      t = await factory();
      await t.store.putReport(report(BASE, 'reg.example/base/node', [L1], [{ name: 'openssl', layer: L1 }]), 1);
      await t.store.putReport(
        report(
          APP,
          'reg.example/shop/app',
          [L1, L2],
          [
            { name: 'openssl', layer: L1 },
            { name: 'lodash', layer: L2, vuln: { id: 'GHSA-p6mc-m468-83gw', aliases: ['CVE-2020-8203'], fixed: '4.17.19', severity: 'high' } },
            { name: 'left-pad', layer: L2, vuln: { id: 'CVE-2026-0002', severity: 'low' } },
          ],
        ),
        1,
      );
    });
    after(async () => t.dispose());

    it('a package in the app layer with a fixed version: "app layer", the fixed version, the base named; found by its CVE alias', async () => {
      const a = await affectedAnswer(t.store, 'CVE-2020-8203', 10);
      assert.equal(a.images.length, 1);
      const img = a.images[0]!;
      assert.deepEqual(img.base, { digest: BASE, name: 'reg.example/base/node:1', source: 'layers' });
      const p = img.packages[0]!;
      assert.deepEqual(
        [p.findingId, p.aliases, p.name, p.fix.where, p.fix.layer, p.fix.fixedVersion, p.suppressed],
        ['GHSA-p6mc-m468-83gw', ['CVE-2020-8203'], 'lodash', 'app layer', 'app', '4.17.19', null],
      );
      assert.deepEqual(a.counts, { images: 1, suppressedImages: 0, workloads: 0, owners: 0 });
    });

    it('no fixed version: "no fix yet"; nothing ran it, so the rollout is verified with no identities', async () => {
      const a = await affectedAnswer(t.store, 'CVE-2026-0002', 10);
      assert.equal(a.images[0]?.packages[0]?.fix.where, 'no fix yet');
      const r = await rolloutAnswer(t.store, 'CVE-2026-0002', 10);
      assert.deepEqual([r.verified, r.counts.identities, r.owners], [true, 0, []]);
    });

    it('the list: most severe first, fixable and fixed versions, filters', async () => {
      const l = await listAnswer(t.store, { now: 10 });
      assert.deepEqual(
        l.vulnerabilities.map((v) => [v.id, v.severity, v.images, v.fixable, v.fixedVersions, v.packages]),
        [
          ['GHSA-p6mc-m468-83gw', 'high', 1, true, ['4.17.19'], ['lodash']],
          ['CVE-2026-0002', 'low', 1, false, [], ['left-pad']],
        ],
      );
      assert.deepEqual(
        (await listAnswer(t.store, { now: 10, fixable: true })).vulnerabilities.map((v) => v.id),
        ['GHSA-p6mc-m468-83gw'],
      );
      assert.deepEqual((await listAnswer(t.store, { now: 10, running: true })).vulnerabilities, []);
    });

    it('image extras: the base with its layer count, the base lists the app as its child, one suppression slot per finding', async () => {
      const app = (await t.store.getImage(APP))!;
      const x = await imageAnswerExtras(t.store, app, 10);
      assert.deepEqual(x.base, { digest: BASE, name: 'reg.example/base/node:1', source: 'layers', baseLayers: 1, inInventory: true });
      assert.deepEqual(x.suppressed, [[null, null]]);
      const base = await imageAnswerExtras(t.store, (await t.store.getImage(BASE))!, 10);
      assert.deepEqual(
        base.lineage.children.map((c) => c.digest),
        [APP],
      );
    });
  });
}
