/**
 * docs/vulnerabilities.md, section "Getting images and reports in", stays true: its ```sh blocks
 * run as written (see guide.ts) against a real registry this test starts with the images the
 * guide says it holds.
 */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { startRegistry } from '@writ/oci/testing';
import { runGuide } from './guide.ts';

it('the guide to getting images and reports in runs as written: image add (an index by platform), ingest of one, several and stdin', async () => {
  const reg = await startRegistry();
  try {
    const base = await reg.pushImage('shop/base', '3.20', { layers: 1, seed: 'base' });
    const web = await reg.pushImage('shop/web', '1.4', {
      layers: 2,
      seed: 'web',
      extra: {
        annotations: {
          'org.opencontainers.image.base.name': `${reg.host}/shop/base:3.20`,
          'org.opencontainers.image.base.digest': base.digest,
          'org.opencontainers.image.source': 'https://git.example.com/shop/web',
        },
      },
    });
    const multi = await reg.pushIndex('shop/multi', '2', ['linux/amd64', 'linux/arm64']);
    const g = await runGuide('docs/vulnerabilities.md', {
      section: 'Getting images and reports in',
      ports: [7463],
      minBlocks: 4,
      timeoutMs: 180_000,
      env: { REGISTRY: reg.host, REGISTRY_CA: reg.caFile },
    });
    const { code, out, err } = g;
    try {
      assert.equal(code, 0, `the guide failed\nstdout:\n${out}\nstderr:\n${err}\n${g.logs(['writ-vuln/server.log'])}`);
      // What the guide says the reader sees.
      assert.match(out, new RegExp(`^${web.digest}\\s+linux/amd64\\s+2\\s+${reg.host}/shop/base:3\\.20\\s+-$`, 'm'), 'image add: the image and its base');
      assert.match(out, new RegExp(`^${multi.children[1]!.digest}\\s+linux/arm64\\s+1\\s+-\\s+${multi.digest}$`, 'm'), 'one platform of the index');
      assert.doesNotMatch(out, new RegExp(multi.children[0]!.digest), 'only the platform asked for');
      assert.match(out, new RegExp(`^base\\s+${reg.host}/shop/base:3\\.20@${base.digest}( |$)`, 'm'), 'image show names the base');
      assert.match(out, /^layers\s+2$/m);
      assert.match(out, /^findings\s+1 \(high 1\)$/m, 'the report was stored');
      assert.match(out, /^report\s+\S+ created$/m);
      assert.match(out, /^file\s+trivy-web\.json\n/m, 'several files: each outcome under its file');
      assert.match(out, /^exit 1$/m, 'one of them refused: exit 1');
      assert.match(
        err,
        /^writ: broken\.json: request body is not JSON at Results\[0\]\.Packages\[0\]\.Version \(line 6, column 18\): .*\[ERR_JSON_INVALID\]$/m,
      );
      assert.match(err, /^stdin: sent \d+\.\d MiB$/m, 'progress of stdin: bytes sent, total unknown');
      assert.equal(out.match(/ already stored$/gm)?.length, 2, 'the same report again, twice');
    } finally {
      await g.finish();
    }
  } finally {
    await reg.stop();
  }
});
