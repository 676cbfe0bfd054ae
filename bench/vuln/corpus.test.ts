/**
 * The vuln benchmark's corpus is what it claims to be: Trivy documents `parseReport` reads, 100
 * packages per app, apps whose base `Lineage` finds (by annotation or by diff-ID prefix), and CVE
 * counts that agree with the parsed findings. Run: npx node --test bench/vuln/corpus.test.ts
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Lineage, lineageImageOf, parseReport } from '@writ/vuln';
import { makeCorpus } from './corpus.ts';

describe('vuln benchmark corpus', () => {
  const corpus = makeCorpus(300);
  const all = [...corpus.bases, ...corpus.apps];
  const reports = all.map((i) => parseReport(JSON.stringify(i.doc)));

  it('is Trivy schema 2 that parseReport reads: 100 packages an app, 45 a base, each with its layer', () => {
    assert.equal(corpus.bases.length, 105);
    for (const [k, r] of reports.entries()) {
      assert.equal(r.format, 'trivy');
      assert.equal(r.image.digest ?? r.image.repoDigests[0]?.split('@')[1], all[k]!.digest);
      assert.equal(r.packages.length, k < corpus.bases.length ? 45 : 100);
      for (const p of r.packages) assert.ok(r.image.diffIds.includes(p.layer!), `${p.name}'s layer is one of the image's`);
    }
  });

  it('builds every app on its base: half say so in the OCI base annotations, the rest only share its diff IDs', () => {
    const lineage = new Lineage(reports.map((r) => lineageImageOf(r.image)!));
    const sources = new Set<string>();
    for (const [k, app] of corpus.apps.entries()) {
      const link = lineage.parent(lineage.get(app.digest)!);
      assert.equal(link?.digest, corpus.bases[app.base]!.digest, `app ${k}'s parent`);
      sources.add(link.source);
    }
    assert.deepEqual([...sources].sort(), ['annotation', 'layers']);
  });

  it('counts each CVE in the images whose report carries it, skewed: a few in many images, most in few', () => {
    const counted = new Map<string, number>();
    for (const r of reports) for (const id of new Set(r.findings.map((f) => f.id))) counted.set(id, (counted.get(id) ?? 0) + 1);
    assert.deepEqual([...counted.entries()].sort(), [...corpus.truth.entries()].sort());
    const counts = [...counted.values()].sort((a, b) => b - a);
    assert.ok(counts[0]! > all.length / 3, `the most common CVE is in ${counts[0]} of ${all.length} images`);
    assert.ok(counts[Math.floor(counts.length / 2)]! <= 10, 'the median CVE is in at most 10 images');
    assert.ok(reports.some((r) => r.findings.some((f) => f.fixed !== undefined)) && reports.some((r) => r.findings.some((f) => f.fixed === undefined)));
  });
});
