/**
 * SBOMs made by the real Syft (pinned in test/go/syft, built by .ci/run) from real image content:
 * images whose layers hold an Alpine apk database, a Debian dpkg status file, an npm package.json,
 * a Python dist-info and a real Go binary (the toolchain's gofmt), pushed to @writ/oci's real loopback registry. Syft reads them over TLS with the
 * fixture's CA, offline (its update check off, every non-loopback connection sent to a dead proxy),
 * and writes CycloneDX, SPDX and Syft JSON. The tests assert what Syft found — packages, purls, the
 * layer (diff ID) each came from — and that lineage puts the base's packages in the base.
 */
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { gzipSync } from 'node:zlib';
import { MEDIA_TYPES, startRegistry, type TestRegistry } from '@writ/oci/testing';
import { canonicalPurl, parseReport } from './index.ts';
import { BASE_DIGEST_ANNOTATION, BASE_NAME_ANNOTATION, Lineage, type LineageImage } from './lineage.ts';

const run = promisify(execFile);
const SYFT = resolve(import.meta.dirname, '../../../test/go/bin/syft');

function syftBinary(): string {
  if (!existsSync(SYFT))
    throw new Error(`${SYFT} is missing: build it as .ci/run does (cd test/go/syft && go build -o ../bin/syft github.com/anchore/syft/cmd/syft)`);
  return SYFT;
}

// --- image content -------------------------------------------------------------------------------

/** A ustar archive of directories and files (parents first), as a real layer holds them. */
function tar(files: Record<string, string | Buffer>): Buffer {
  const blocks: Buffer[] = [];
  const entry = (name: string, body: Buffer | undefined): void => {
    const h = Buffer.alloc(512);
    h.write(name, 0, 100, 'utf8');
    h.write(body === undefined ? '0000755\0' : '0000644\0', 100);
    h.write('0000000\0', 108);
    h.write('0000000\0', 116);
    h.write(`${(body?.length ?? 0).toString(8).padStart(11, '0')}\0`, 124);
    h.write('15000000000\0', 136);
    h.write('        ', 148);
    h.write(body === undefined ? '5' : '0', 156);
    h.write('ustar\0', 257);
    h.write('00', 263);
    let sum = 0;
    for (const b of h) sum += b;
    h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148);
    blocks.push(h);
    if (body !== undefined) blocks.push(body, Buffer.alloc((512 - (body.length % 512)) % 512));
  };
  const dirs = new Set<string>();
  for (const path of Object.keys(files)) {
    const parts = path.split('/');
    for (let i = 1; i < parts.length; i++) {
      const dir = `${parts.slice(0, i).join('/')}/`;
      if (!dirs.has(dir)) {
        dirs.add(dir);
        entry(dir, undefined);
      }
    }
  }
  for (const [path, body] of Object.entries(files)) entry(path, Buffer.from(body));
  blocks.push(Buffer.alloc(1024));
  return Buffer.concat(blocks);
}

const sha256 = (b: Uint8Array): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

const ALPINE_BASE = tar({
  'etc/os-release': 'NAME="Alpine Linux"\nID=alpine\nVERSION_ID=3.19.1\nPRETTY_NAME="Alpine Linux v3.19"\n',
  'lib/apk/db/installed': [
    'C:Q1GBEyHyPFJrjY2vNSiaxGH7YCHhk=\nP:musl\nV:1.2.4_git20230717-r4\nA:x86_64\nS:407503\nI:663552\nT:the musl c library (libc) implementation\nU:https://musl.libc.org/\nL:MIT\no:musl\nm:Timo Teräs <timo.teras@iki.fi>\nt:1700000000\nc:a5f8a6bd7b85a7d9cc1bb9d4b39c12bf8f0ffd7a\nF:lib\nR:ld-musl-x86_64.so.1\n',
    'C:Q1lPL+H3/6BtpJvs2CuXYgRV8zbd4=\nP:busybox\nV:1.36.1-r15\nA:x86_64\nS:508896\nI:946176\nT:Size optimized toolbox of many common UNIX utilities\nU:https://busybox.net/\nL:GPL-2.0-only\no:busybox\nm:Sören Tempel <soeren+alpine@soeren-tempel.net>\nt:1700000001\nc:7f2f9d5a7ad1f2b3c4d5e6f708192a3b4c5d6e7f\nD:so:libc.musl-x86_64.so.1\nF:bin\nR:busybox\n',
  ].join('\n'),
});
const NPM_APP = tar({
  'app/package.json': '{"name":"writ-demo-api","version":"1.0.0","private":true,"dependencies":{"left-pad":"1.3.0"}}\n',
  'app/node_modules/left-pad/package.json': '{"name":"left-pad","version":"1.3.0","license":"WTFPL","description":"String left pad"}\n',
});
const PYTHON_APP = tar({
  'usr/lib/python3.11/site-packages/requests-2.31.0.dist-info/METADATA':
    'Metadata-Version: 2.1\nName: requests\nVersion: 2.31.0\nSummary: Python HTTP for Humans.\nLicense: Apache 2.0\n',
  'usr/lib/python3.11/site-packages/requests-2.31.0.dist-info/RECORD': 'requests/__init__.py,,\n',
});
/** A real Go binary, built by the machine's Go toolchain: syft reads its build info (main module and stdlib). */
const GOROOT = execFileSync('go', ['env', 'GOROOT'], { encoding: 'utf8' }).trim();
const GO_VERSION = execFileSync('go', ['env', 'GOVERSION'], { encoding: 'utf8' }).trim();
const GO_APP = tar({ 'usr/local/bin/gofmt': readFileSync(join(GOROOT, 'bin', 'gofmt')) });
const DEBIAN_BASE = tar({
  'etc/os-release': 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\nVERSION_CODENAME=bookworm\nID=debian\n',
  'var/lib/dpkg/status': [
    'Package: libc6\nStatus: install ok installed\nPriority: optional\nSection: libs\nInstalled-Size: 12987\nMaintainer: GNU Libc Maintainers <debian-glibc@lists.debian.org>\nArchitecture: amd64\nMulti-Arch: same\nSource: glibc\nVersion: 2.36-9+deb12u4\nDescription: GNU C Library: Shared libraries\n',
    'Package: zlib1g\nStatus: install ok installed\nPriority: optional\nSection: libs\nInstalled-Size: 168\nMaintainer: Mark Brown <broonie@debian.org>\nArchitecture: amd64\nMulti-Arch: same\nSource: zlib\nVersion: 1:1.2.13.dfsg-1\nDepends: libc6 (>= 2.14)\nDescription: compression library - runtime\n',
  ].join('\n'),
});

interface BuiltImage extends LineageImage {
  readonly ref: string;
}

async function pushImage(
  reg: TestRegistry,
  repository: string,
  tag: string,
  layers: readonly Buffer[],
  annotations?: Record<string, string>,
): Promise<BuiltImage> {
  const descriptors = [];
  for (const layer of layers) {
    const gz = gzipSync(layer);
    descriptors.push({ mediaType: MEDIA_TYPES.ociLayer, digest: await reg.pushBlob(repository, gz), size: gz.length });
  }
  const diffIds = layers.map(sha256);
  const created = '2026-11-01T00:00:00Z';
  const config = Buffer.from(
    JSON.stringify({ architecture: 'amd64', os: 'linux', created, config: { Cmd: ['/bin/sh'] }, rootfs: { type: 'layers', diff_ids: diffIds } }),
  );
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MEDIA_TYPES.ociManifest,
      config: { mediaType: MEDIA_TYPES.ociConfig, digest: await reg.pushBlob(repository, config), size: config.length },
      layers: descriptors,
      ...(annotations === undefined ? {} : { annotations }),
    }),
  );
  const pushed = await reg.pushManifest(repository, tag, manifest, MEDIA_TYPES.ociManifest);
  return {
    digest: pushed.digest,
    ref: reg.ref(repository, pushed.digest),
    names: [reg.ref(repository, tag)],
    diffIds,
    created,
    ...(annotations === undefined ? {} : { annotations }),
  };
}

// --- syft ----------------------------------------------------------------------------------------

interface Sboms {
  readonly syft: SyftJson;
  readonly cyclonedx: CycloneDx;
  readonly spdx: Spdx;
  readonly raw: { readonly cyclonedx16: Buffer; readonly cyclonedx15: Buffer; readonly spdx: Buffer };
}
interface SyftJson {
  readonly artifacts: readonly { name: string; version: string; type: string; purl?: string; locations: readonly { path: string; layerID?: string }[] }[];
  readonly source: { type: string; metadata: { manifestDigest?: string; layers?: readonly { digest: string }[] } };
  readonly distro?: { id?: string; versionID?: string };
  readonly descriptor: { name: string; version: string };
}
interface CycloneDx {
  readonly bomFormat: string;
  readonly specVersion: string;
  readonly metadata: { component?: { type: string; name: string; version?: string } };
  readonly components?: readonly { type: string; name: string; version?: string; purl?: string; properties?: readonly { name: string; value: string }[] }[];
}
interface Spdx {
  readonly spdxVersion: string;
  readonly packages: readonly { name: string; versionInfo?: string; externalRefs?: readonly { referenceType: string; referenceLocator: string }[] }[];
}

async function sbom(reg: TestRegistry, image: BuiltImage, work: string): Promise<Sboms> {
  const base = join(work, image.digest.slice(7, 19));
  const env = {
    PATH: process.env.PATH ?? '',
    HOME: work,
    XDG_CACHE_HOME: join(work, 'cache'),
    XDG_CONFIG_HOME: join(work, 'config'),
    TMPDIR: work,
    SYFT_CHECK_FOR_APP_UPDATE: 'false',
    SYFT_REGISTRY_CA_CERT: reg.caFile,
    // Anything but loopback goes to a closed port: the run is offline by construction, not by luck.
    HTTPS_PROXY: 'http://127.0.0.1:9',
    HTTP_PROXY: 'http://127.0.0.1:9',
    NO_PROXY: '127.0.0.1,localhost,::1',
  };
  await run(
    syftBinary(),
    [
      'scan',
      `registry:${image.ref}`,
      '-q',
      '-o',
      `syft-json=${base}.syft.json`,
      '-o',
      `cyclonedx-json=${base}.cdx.json`,
      '-o',
      `cyclonedx-json@1.6=${base}.cdx16.json`,
      '-o',
      `cyclonedx-json@1.5=${base}.cdx15.json`,
      '-o',
      `spdx-json=${base}.spdx.json`,
    ],
    { env, timeout: 120_000, maxBuffer: 64 * 1024 * 1024 },
  );
  const read = <T>(ext: string): T => JSON.parse(readFileSync(`${base}.${ext}`, 'utf8')) as T;
  return {
    syft: read<SyftJson>('syft.json'),
    cyclonedx: read<CycloneDx>('cdx.json'),
    spdx: read<Spdx>('spdx.json'),
    raw: {
      cyclonedx16: readFileSync(`${base}.cdx16.json`),
      cyclonedx15: readFileSync(`${base}.cdx15.json`),
      spdx: readFileSync(`${base}.spdx.json`),
    },
  };
}

const purls = (s: SyftJson): string[] =>
  s.artifacts
    .map((a) => a.purl ?? '')
    .filter((p) => p !== '')
    .sort();
const layerOf = (s: SyftJson, name: string): string | undefined => s.artifacts.find((a) => a.name === name)?.locations[0]?.layerID;

describe('syft (real, offline) on images in the loopback registry', () => {
  let reg: TestRegistry;
  let work: string;
  let alpine: BuiltImage;
  let api: BuiltImage;
  let worker: BuiltImage;
  let debian: BuiltImage;
  const out = new Map<string, Sboms>();

  before(async () => {
    syftBinary();
    reg = await startRegistry();
    work = mkdtempSync(join(tmpdir(), 'writ-syft-'));
    alpine = await pushImage(reg, 'library/alpine', '3.19', [ALPINE_BASE]);
    // Two apps on one base: one says so in its OCI annotations, the other only shares the layers.
    api = await pushImage(reg, 'team-a/api', '1.0', [ALPINE_BASE, NPM_APP], {
      [BASE_NAME_ANNOTATION]: reg.ref('library/alpine', '3.19'),
      [BASE_DIGEST_ANNOTATION]: alpine.digest,
    });
    worker = await pushImage(reg, 'team-b/worker', '2.3', [ALPINE_BASE, PYTHON_APP, GO_APP]);
    debian = await pushImage(reg, 'library/debian', '12', [DEBIAN_BASE]);
    for (const img of [alpine, api, worker, debian]) out.set(img.digest, await sbom(reg, img, work));
  });

  after(async () => {
    await reg?.stop();
    // WRIT_KEEP_SYFT=1 keeps syft's documents for a look (the path is printed).
    if (process.env.WRIT_KEEP_SYFT === '1') console.log(`syft output kept in ${work}`);
    else if (work !== undefined) rmSync(work, { recursive: true, force: true });
  });

  const get = (img: BuiltImage): Sboms => {
    const s = out.get(img.digest);
    assert.ok(s, `no SBOM for ${img.ref}`);
    return s;
  };

  it('finds the apk packages of the Alpine base with distro-qualified purls, in the base layer', () => {
    const s = get(alpine).syft;
    assert.equal(s.descriptor.name, 'syft');
    assert.equal(s.distro?.id, 'alpine');
    assert.deepEqual(purls(s), [
      'pkg:apk/alpine/busybox@1.36.1-r15?arch=x86_64&distro=alpine-3.19.1',
      'pkg:apk/alpine/musl@1.2.4_git20230717-r4?arch=x86_64&distro=alpine-3.19.1',
    ]);
    assert.equal(s.source.type, 'image');
    assert.equal(s.source.metadata.manifestDigest, alpine.digest);
    assert.equal(layerOf(s, 'musl'), alpine.diffIds[0]);
  });

  it('in the apps, the apk packages are in the shared base layer and the app packages in the app layer', () => {
    const a = get(api).syft;
    const w = get(worker).syft;
    assert.ok(purls(a).includes('pkg:npm/left-pad@1.3.0'), purls(a).join(' '));
    assert.ok(purls(w).includes('pkg:pypi/requests@2.31.0'), purls(w).join(' '));
    for (const [s, img] of [
      [a, api],
      [w, worker],
    ] as const) {
      assert.equal(layerOf(s, 'musl'), alpine.diffIds[0]);
      assert.equal(layerOf(s, 'busybox'), alpine.diffIds[0]);
      assert.equal(s.source.metadata.manifestDigest, img.digest);
    }
    assert.equal(layerOf(a, 'left-pad'), api.diffIds[1]);
    assert.equal(layerOf(w, 'requests'), worker.diffIds[1]);
  });

  it('reads the build info of a real Go binary: the Go standard library it was built with, in its own layer', () => {
    const w = get(worker).syft;
    const stdlib = w.artifacts.find((a) => a.purl?.startsWith('pkg:golang/stdlib@'));
    assert.equal(stdlib?.purl, `pkg:golang/stdlib@${GO_VERSION.replace(/^go/, '')}`);
    assert.equal(stdlib?.locations[0]?.path, '/usr/local/bin/gofmt');
    assert.equal(stdlib?.locations[0]?.layerID, worker.diffIds[2]);
  });

  it("lineage over the pushed images puts each of syft's packages where a fix belongs: base or app", () => {
    const lineage = new Lineage([alpine, api, worker, debian]);
    assert.equal(lineage.parent(api)?.source, 'annotation');
    assert.equal(lineage.parent(worker)?.source, 'layers');
    for (const img of [api, worker]) {
      assert.equal(lineage.parent(img)?.digest, alpine.digest);
      const s = get(img).syft;
      const where = (name: string): string => lineage.layerOrigin(img, layerOf(s, name) ?? '').where;
      assert.equal(where('musl'), 'base');
      assert.equal(where('busybox'), 'base');
    }
    assert.equal(lineage.layerOrigin(api, layerOf(get(api).syft, 'left-pad') ?? '').where, 'app');
    assert.equal(lineage.layerOrigin(worker, layerOf(get(worker).syft, 'requests') ?? '').where, 'app');
  });

  it('finds the dpkg packages of the Debian base with their source package in the purl', () => {
    const s = get(debian).syft;
    assert.equal(s.distro?.id, 'debian');
    const p = purls(s);
    assert.ok(p.includes('pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64&distro=debian-12&upstream=glibc'), p.join(' '));
    assert.ok(
      p.some((x) => x.startsWith('pkg:deb/debian/zlib1g@1%3A1.2.13.dfsg-1?')),
      p.join(' '),
    );
    assert.equal(layerOf(s, 'libc6'), debian.diffIds[0]);
  });

  it('writes CycloneDX (1.7 by default) with the same purls and each component’s layer as a syft:location property', () => {
    const c = get(api).cyclonedx;
    assert.equal(c.bomFormat, 'CycloneDX');
    assert.equal(c.specVersion, '1.7');
    const comps = c.components ?? [];
    const byPurl = new Map(comps.filter((x) => x.purl !== undefined).map((x) => [x.purl, x]));
    for (const p of purls(get(api).syft)) assert.ok(byPurl.has(p), `CycloneDX lacks ${p}`);
    const leftPad = comps.find((x) => x.name === 'left-pad');
    const layer = leftPad?.properties?.find((x) => /^syft:location:0:layerID$/.test(x.name))?.value;
    assert.equal(layer, api.diffIds[1]);
  });

  it('writes SPDX 2.3 with the same purls as package external references', () => {
    const s = get(worker).spdx;
    assert.equal(s.spdxVersion, 'SPDX-2.3');
    const spdxPurls = s.packages
      .flatMap((p) => p.externalRefs ?? [])
      .filter((r) => r.referenceType === 'purl')
      .map((r) => r.referenceLocator)
      .sort();
    // Syft adds the image itself as a package with an OCI purl whose version is the manifest digest.
    const image = spdxPurls.filter((p) => p.startsWith('pkg:oci/'));
    assert.equal(image.length, 1);
    assert.ok(image[0]?.includes(`@${worker.digest.replace(':', '%3A')}`), image[0]);
    assert.deepEqual(
      spdxPurls.filter((p) => !p.startsWith('pkg:oci/')),
      purls(get(worker).syft),
    );
  });

  /** name@version → layer, from @writ/vuln's reading of a syft document. */
  const parsed = (doc: Buffer): { digest: string | undefined; scanner: string; packages: Map<string, string | undefined> } => {
    const r = parseReport(doc);
    return {
      digest: r.image.digest,
      scanner: `${r.scanner.name} ${r.scanner.version ?? ''}`,
      packages: new Map(r.packages.filter((p) => p.purl !== undefined).map((p) => [canonicalPurl(p.purl ?? ''), p.layer])),
    };
  };
  const expected = (img: BuiltImage): Map<string, string | undefined> =>
    new Map(
      get(img)
        .syft.artifacts.filter((a) => a.purl !== undefined)
        .map((a) => [canonicalPurl(a.purl ?? ''), a.locations[0]?.layerID]),
    );

  for (const version of ['1.5', '1.6'] as const) {
    it(`@writ/vuln reads syft's CycloneDX ${version} into the same packages, each with the layer syft found it in`, () => {
      for (const img of [alpine, api, worker, debian]) {
        const s = get(img).raw;
        const r = parsed(version === '1.5' ? s.cyclonedx15 : s.cyclonedx16);
        assert.equal(r.digest, img.digest);
        assert.equal(r.scanner, 'syft 1.57.1');
        assert.deepEqual(r.packages, expected(img));
      }
      // And the layers lineage needs: in the api image, musl is the base's and left-pad the app's.
      const r = parsed(get(api).raw.cyclonedx16);
      const lineage = new Lineage([alpine, api]);
      const origin = (purl: string): string => lineage.layerOrigin(api, r.packages.get(canonicalPurl(purl)) ?? '').where;
      assert.equal(origin('pkg:apk/alpine/musl@1.2.4_git20230717-r4?arch=x86_64&distro=alpine-3.19.1'), 'base');
      assert.equal(origin('pkg:npm/left-pad@1.3.0'), 'app');
    });
  }

  // Syft names the image in SPDX with `pkg:oci/127.0.0.1%3A5000%2Fteam%2Fapp@sha256%3A…`: the whole
  // repository, "/" encoded, as the name (a decoded name may hold any character).
  it("@writ/vuln reads syft's SPDX 2.3 into the same packages and the image digest", () => {
    for (const img of [alpine, api, worker, debian]) {
      const r = parsed(get(img).raw.spdx);
      assert.equal(r.digest, img.digest);
      assert.deepEqual(new Set(r.packages.keys()), new Set(expected(img).keys()));
    }
  });
});
