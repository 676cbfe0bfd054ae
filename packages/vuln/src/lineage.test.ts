import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { BASE_DIGEST_ANNOTATION, BASE_NAME_ANNOTATION, Lineage, type LineageImage, lineageImageOf, repositoryOf } from './lineage.ts';
import { parseReport } from './parse.ts';

const d = (n: string): string => `sha256:${n.padEnd(64, '0')}`;
const L = (n: number): string => d(`d${n}`);

// The case: two apps on one base (alpine 3.19), and a newer base (3.20) that replaced the
// layer holding the vulnerable package. app-a has the base annotations; app-b has none (layers only).
const base319: LineageImage = { digest: d('b319'), names: ['docker.io/library/alpine:3.19'], diffIds: [L(1)], created: '2026-01-01T00:00:00Z' };
const base320: LineageImage = { digest: d('b320'), names: ['alpine:3.20'], diffIds: [L(9)], created: '2026-06-01T00:00:00Z' };
const appA: LineageImage = {
  digest: d('aa'),
  names: ['registry.example/team-a/api:1.0'],
  diffIds: [L(1), L(2)],
  annotations: { [BASE_NAME_ANNOTATION]: 'docker.io/library/alpine:3.19', [BASE_DIGEST_ANNOTATION]: base319.digest },
};
const appB: LineageImage = { digest: d('bb'), names: ['registry.example/team-b/web:2.3'], diffIds: [L(1), L(3), L(4)] };
const appBRebuilt: LineageImage = { digest: d('bb2'), names: ['registry.example/team-b/web:2.4'], diffIds: [L(9), L(3), L(4)] };

describe('lineage: the parent of an image', () => {
  const lineage = new Lineage([base319, base320, appA, appB, appBRebuilt]);

  it('two images sharing a base both name it: one from its OCI annotations, the other from its layers', () => {
    const a = lineage.parent(appA);
    const b = lineage.parent(appB);
    assert.equal(a?.digest, base319.digest);
    assert.equal(a?.source, 'annotation');
    assert.equal(a?.name, 'docker.io/library/alpine:3.19');
    assert.equal(b?.digest, base319.digest);
    assert.equal(b?.source, 'layers');
    assert.equal(b?.name, 'docker.io/library/alpine:3.19');
    assert.equal(lineage.parent(appBRebuilt)?.digest, base320.digest);
  });

  it('a package in the base layer is "base" in both images, a package in an upper layer is "app"', () => {
    for (const img of [appA, appB]) {
      const o = lineage.layerOrigin(img, L(1));
      assert.equal(o.where, 'base');
      assert.equal(o.where === 'base' ? o.base.digest : undefined, base319.digest);
    }
    assert.equal(lineage.layerOrigin(appA, L(2)).where, 'app');
    assert.equal(lineage.layerOrigin(appB, L(4)).where, 'app');
    assert.deepEqual(lineage.layerOrigin(appB, L(7)), { where: 'unknown', reason: 'not-in-image' });
  });

  it('names the newer base of the same repository that no longer has the package, and not the old one', () => {
    const carriesCve = (img: LineageImage): boolean => img.diffIds.includes(L(1));
    assert.deepEqual(
      lineage.newerBasesWithout(appA, carriesCve).map((i) => i.digest),
      [base320.digest],
    );
    assert.deepEqual(
      lineage.newerBasesWithout(appB, carriesCve).map((i) => i.digest),
      [base320.digest],
    );
    // A newer base that still carries it is no fix.
    assert.deepEqual(
      lineage.newerBasesWithout(appA, () => true),
      [],
    );
  });

  it('an older base of the same repository is not offered as the fix', () => {
    const older: LineageImage = { digest: d('b318'), names: ['alpine:3.18'], diffIds: [L(8)], created: '2025-06-01T00:00:00Z' };
    const l = new Lineage([older, base319, base320, appA]);
    assert.deepEqual(
      l.newerBasesWithout(appA, () => false).map((i) => i.digest),
      [base320.digest],
    );
  });

  it('an image with no base annotations and no layer prefix in the inventory has no parent: its layers are its own', () => {
    assert.equal(lineage.parent(base319), undefined);
    assert.deepEqual(lineage.layerOrigin(base319, L(1)), { where: 'app', base: undefined });
  });

  it('the closest base is the parent, and the layer remembers which ancestor brought it in', () => {
    const runtime: LineageImage = { digest: d('rt'), names: ['registry.example/base/node:22'], diffIds: [L(1), L(5)] };
    const app: LineageImage = { digest: d('ap'), names: ['registry.example/team-c/svc:1'], diffIds: [L(1), L(5), L(6)] };
    const l = new Lineage([base319, runtime, app]);
    assert.equal(l.parent(app)?.digest, runtime.digest);
    assert.deepEqual(
      l.ancestors(app).map((a) => a.digest),
      [runtime.digest, base319.digest],
    );
    const o = l.layerOrigin(app, L(1));
    assert.equal(o.where, 'base');
    assert.equal(o.where === 'base' ? o.base.digest : '', runtime.digest);
    assert.equal(o.where === 'base' ? o.introducedBy.digest : '', base319.digest);
    const o5 = l.layerOrigin(app, L(5));
    assert.equal(o5.where === 'base' ? o5.introducedBy.digest : '', runtime.digest);
  });

  it('an image with the same layers as another (a re-tag or a Docker/OCI twin) is not its base', () => {
    const twin: LineageImage = { ...appB, digest: d('tw') };
    assert.equal(new Lineage([appB, twin]).parent(appB), undefined);
  });

  it('a base annotation naming an image index resolves to the child of the same platform', () => {
    const amd: LineageImage = { digest: d('c1'), indexDigest: d('ix'), platform: 'linux/amd64', names: ['alpine:3.19'], diffIds: [L(1)] };
    const arm: LineageImage = { digest: d('c2'), indexDigest: d('ix'), platform: 'linux/arm64', names: ['alpine:3.19'], diffIds: [L(11)] };
    const app: LineageImage = {
      digest: d('ap'),
      platform: 'linux/arm64',
      diffIds: [L(11), L(12)],
      annotations: { [BASE_DIGEST_ANNOTATION]: d('ix'), [BASE_NAME_ANNOTATION]: 'alpine:3.19' },
    };
    const p = new Lineage([amd, arm, app]).parent(app);
    assert.equal(p?.digest, arm.digest);
    assert.equal(p?.baseLayers, 1);
  });

  it('an annotated base that is not in the inventory keeps its name and digest, and a base layer is "unknown", not "app"', () => {
    const app: LineageImage = {
      digest: d('ap'),
      diffIds: [L(1), L(2)],
      annotations: { [BASE_DIGEST_ANNOTATION]: d('ff'), [BASE_NAME_ANNOTATION]: 'docker.io/library/debian:12' },
    };
    const l = new Lineage([app]);
    const p = l.parent(app);
    assert.equal(p?.digest, d('ff'));
    assert.equal(p?.name, 'docker.io/library/debian:12');
    assert.equal(p?.image, undefined);
    const o = l.layerOrigin(app, L(1));
    assert.equal(o.where, 'unknown');
    assert.equal(o.where === 'unknown' ? o.reason : '', 'base-not-in-inventory');
  });

  it('a base.name annotation alone is matched to the layer-found base of that repository', () => {
    const app: LineageImage = { digest: d('ap'), diffIds: [L(1), L(2)], annotations: { [BASE_NAME_ANNOTATION]: 'alpine:3.19' } };
    const p = new Lineage([base319, app]).parent(app);
    assert.equal(p?.digest, base319.digest);
    assert.equal(p?.name, 'alpine:3.19');
    assert.equal(p?.baseLayers, 1);
    // A layer match from another repository is not taken for the named base.
    const other: LineageImage = { digest: d('ot'), names: ['debian:12'], diffIds: [L(1)] };
    const q = new Lineage([other, app]).parent(app);
    assert.equal(q?.digest, undefined);
    assert.equal(q?.baseLayers, undefined);
  });

  it('ancestors stop at a cycle of annotations instead of looping', () => {
    const x: LineageImage = { digest: d('x'), diffIds: [L(1)], annotations: { [BASE_DIGEST_ANNOTATION]: d('y') } };
    const y: LineageImage = { digest: d('y'), diffIds: [L(1)], annotations: { [BASE_DIGEST_ANNOTATION]: d('x') } };
    assert.ok(new Lineage([x, y]).ancestors(x).length <= 2);
  });
});

describe('lineage from a report', () => {
  it("a Trivy report's image takes its parent from its diff IDs, and its packages' layers say base or app", () => {
    const report = parseReport(readFileSync(join(import.meta.dirname, 'testdata', 'trivy-image.json')));
    const image = lineageImageOf(report.image);
    assert.ok(image);
    assert.equal(image.digest, report.image.digest);
    assert.ok(image.names?.some((n) => n.startsWith('registry.example.com/shop/web')));
    const bottom = image.diffIds[0];
    assert.ok(bottom !== undefined && image.diffIds.length >= 2);
    const base: LineageImage = { digest: d('base'), names: ['alpine:3.20'], diffIds: [bottom] };
    const lineage = new Lineage([base, image]);
    assert.equal(lineage.parent(image)?.digest, base.digest);
    const layered = report.packages.filter((p) => p.layer !== undefined);
    assert.ok(layered.length > 0);
    for (const p of layered) assert.equal(lineage.layerOrigin(image, p.layer ?? '').where, p.layer === bottom ? 'base' : 'app');
  });

  it('base annotations written as labels count, an annotation wins, and a report without a digest gives no image', () => {
    const img = {
      names: [],
      repoTags: ['app:1'],
      repoDigests: [],
      diffIds: [L(1)],
      annotations: { [BASE_NAME_ANNOTATION]: 'alpine:3.20' },
      labels: { [BASE_NAME_ANNOTATION]: 'alpine:3.18', [BASE_DIGEST_ANNOTATION]: d('b320') },
    };
    const v = lineageImageOf({ ...img, digest: d('app') });
    assert.equal(v?.annotations?.[BASE_NAME_ANNOTATION], 'alpine:3.20');
    assert.equal(v?.annotations?.[BASE_DIGEST_ANNOTATION], d('b320'));
    assert.equal(lineageImageOf(img), undefined);
  });
});

describe('repositoryOf', () => {
  it('fills in Docker Hub defaults and drops tags and digests', () => {
    assert.equal(repositoryOf('alpine:3.20'), 'docker.io/library/alpine');
    assert.equal(repositoryOf('docker.io/library/alpine@sha256:abc'), 'docker.io/library/alpine');
    assert.equal(repositoryOf('index.docker.io/library/alpine'), 'docker.io/library/alpine');
    assert.equal(repositoryOf('bitnami/redis:7'), 'docker.io/bitnami/redis');
    assert.equal(repositoryOf('127.0.0.1:5000/team/app:v1'), '127.0.0.1:5000/team/app');
    assert.equal(repositoryOf('localhost/app'), 'localhost/app');
  });
});

describe('lineage at inventory scale', () => {
  // How long this takes is bench/vuln.ts's business; here: every answer is found at that scale.
  it('finds the parent and the newer base of each of 10,000 images on 100 bases', () => {
    const bases: LineageImage[] = [];
    const apps: LineageImage[] = [];
    for (let b = 0; b < 100; b++) {
      bases.push({
        digest: d(`b${b}`),
        names: [`registry.example/base/os:${b}`],
        diffIds: [L(b)],
        created: `2026-01-01T00:00:${String(b % 60).padStart(2, '0')}Z`,
      });
      for (let a = 0; a < 99; a++) apps.push({ digest: d(`a${b}x${a}`), names: [`registry.example/app${a}/svc:${b}`], diffIds: [L(b), d(`u${b}x${a}`)] });
    }
    const lineage = new Lineage([...bases, ...apps]);
    let found = 0;
    for (const app of apps) if (lineage.parent(app)?.image !== undefined) found++;
    const newer = lineage.newerBasesWithout(apps[0] as LineageImage, () => false);
    assert.equal(found, apps.length);
    assert.ok(newer.length > 0);
  });
});

describe('lineage properties', () => {
  const layers = fc.array(fc.integer({ min: 0, max: 6 }).map(L), { minLength: 1, maxLength: 5 });

  it('a parent found by layers is always a strict prefix, and the longest one in the set', () => {
    fc.assert(
      fc.property(fc.array(layers, { minLength: 1, maxLength: 8 }), (sets) => {
        const images = sets.map((diffIds, i) => ({ digest: d(`i${i}`), diffIds }));
        const l = new Lineage(images);
        for (const img of images) {
          const p = l.parent(img);
          const prefixes = images.filter((c) => c.diffIds.length < img.diffIds.length && c.diffIds.every((x, k) => img.diffIds[k] === x));
          if (prefixes.length === 0) {
            assert.equal(p, undefined);
            continue;
          }
          assert.ok(p?.image);
          assert.ok(p.image.diffIds.every((x, k) => img.diffIds[k] === x));
          assert.equal(p.image.diffIds.length, Math.max(...prefixes.map((c) => c.diffIds.length)));
          // Every layer is exactly one of base or app.
          for (const [k, id] of img.diffIds.entries()) {
            const o = l.layerOrigin(img, id);
            if (img.diffIds.indexOf(id) !== k) continue;
            assert.equal(o.where, k < p.image.diffIds.length ? 'base' : 'app');
          }
        }
      }),
    );
  });
});
