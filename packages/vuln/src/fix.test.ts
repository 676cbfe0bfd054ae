import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { whereToFix } from './fix.ts';
import { BASE_DIGEST_ANNOTATION, BASE_NAME_ANNOTATION, Lineage, type LineageImage } from './lineage.ts';

const d = (n: string): string => `sha256:${n.padEnd(64, '0')}`;
const L = (n: number): string => d(`d${n}`);

const base319: LineageImage = { digest: d('b319'), names: ['docker.io/library/alpine:3.19'], diffIds: [L(1)], created: '2026-01-01T00:00:00Z' };
const base320: LineageImage = { digest: d('b320'), names: ['alpine:3.20'], diffIds: [L(9)], created: '2026-06-01T00:00:00Z' };
const runtime: LineageImage = { digest: d('c1'), names: ['registry.example/base/node:22'], diffIds: [L(1), L(5)] };
const app: LineageImage = { digest: d('aa'), names: ['registry.example/team-a/api:1.0'], diffIds: [L(1), L(5), L(2)] };
const annotated: LineageImage = {
  digest: d('ab'),
  names: ['registry.example/team-b/web:1.0'],
  diffIds: [L(7), L(8)],
  annotations: { [BASE_NAME_ANNOTATION]: 'docker.io/library/debian:12', [BASE_DIGEST_ANNOTATION]: d('dead') },
};
const lineage = new Lineage([base319, base320, runtime, app, annotated]);
const carriesL1 = (c: LineageImage): boolean => c.diffIds.includes(L(1));

describe('where to fix', () => {
  it('a package in a base layer: "base image", the parent, where it entered, and the newer base without it', () => {
    const a = whereToFix(lineage, runtime, { layer: L(1), fixed: '3.1.1-r0' }, carriesL1);
    assert.equal(a.where, 'base image');
    assert.equal(a.layer, 'base');
    assert.deepEqual(a.base, { digest: base319.digest, name: 'docker.io/library/alpine:3.19' });
    assert.deepEqual(
      a.newerBases.map((i) => i.digest),
      [base320.digest],
    );
    assert.equal(a.fixedVersion, '3.1.1-r0');
  });

  it('two levels deep: the parent is the runtime image, the package entered with alpine', () => {
    const a = whereToFix(lineage, app, { layer: L(1) }, carriesL1);
    assert.equal(a.where, 'base image');
    assert.equal(a.base?.digest, runtime.digest);
    assert.equal(a.introducedBy?.digest, base319.digest);
    assert.deepEqual(a.newerBases, [], 'no newer image of the runtime repository');
  });

  it('a newer base that still carries it, or is not known to be free of it, is not named', () => {
    const a = whereToFix(lineage, runtime, { layer: L(1), fixed: '1' }, () => true);
    assert.deepEqual(a.newerBases, []);
  });

  it('a package in the image\'s own layer: "app layer" with the fixed version; without one, "no fix yet"', () => {
    const a = whereToFix(lineage, app, { layer: L(2), fixed: ' 2.0.1 ' }, carriesL1);
    assert.deepEqual([a.where, a.layer, a.fixedVersion, a.base?.digest], ['app layer', 'app', '2.0.1', runtime.digest]);
    const b = whereToFix(lineage, app, { layer: L(2), fixed: null }, carriesL1);
    assert.deepEqual([b.where, b.fixedVersion], ['no fix yet', undefined]);
  });

  it('no layer, or a base outside the inventory: the layer is unknown and the fixed version decides', () => {
    assert.deepEqual(
      [whereToFix(lineage, app, { fixed: '1.2' }, carriesL1)].map((a) => [a.where, a.layer]),
      [['app layer', 'unknown']],
    );
    const a = whereToFix(lineage, annotated, { layer: L(7) }, carriesL1);
    assert.deepEqual([a.where, a.layer, a.base?.name, a.base?.digest], ['no fix yet', 'unknown', 'docker.io/library/debian:12', d('dead')]);
  });
});
