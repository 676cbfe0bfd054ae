/** Image references by the distribution reference grammar, normalised as Docker and the kubelet do. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { isWritError } from '@writ/spiffe';
import { MAX_REFERENCE_LENGTH, formatImageRef, isRegistryHost, parseDigest, parseImageRef, pinnedRef } from './reference.ts';

const HEX = 'f'.repeat(64);
const D = `sha256:${HEX}`;

function refused(s: string, why: RegExp): void {
  assert.throws(
    () => parseImageRef(s),
    (err: unknown) => isWritError(err, 'ERR_IMAGE_REF_INVALID') && why.test(err.message),
    `${JSON.stringify(s.slice(0, 80))} should be refused with ${why}`,
  );
}

describe('parseImageRef: normal form', () => {
  const cases: [string, string, string, string | undefined, string | undefined][] = [
    // input, registry, repository, tag, digest
    ['nginx', 'docker.io', 'library/nginx', undefined, undefined],
    ['nginx:1.27', 'docker.io', 'library/nginx', '1.27', undefined],
    ['library/nginx', 'docker.io', 'library/nginx', undefined, undefined],
    ['docker.io/nginx', 'docker.io', 'library/nginx', undefined, undefined],
    ['index.docker.io/nginx:latest', 'docker.io', 'library/nginx', 'latest', undefined],
    ['index.docker.io/team/app', 'docker.io', 'team/app', undefined, undefined],
    ['bitnami/redis:7', 'docker.io', 'bitnami/redis', '7', undefined],
    ['test_com', 'docker.io', 'library/test_com', undefined, undefined],
    ['test.com:tag', 'docker.io', 'library/test.com', 'tag', undefined],
    ['test.com:5000', 'docker.io', 'library/test.com', '5000', undefined],
    ['192.168.1.1:5000', 'docker.io', 'library/192.168.1.1', '5000', undefined],
    ['test.com/repo:tag', 'test.com', 'repo', 'tag', undefined],
    ['test:5000/repo', 'test:5000', 'repo', undefined, undefined],
    [`test:5000/repo:tag@${D}`, 'test:5000', 'repo', 'tag', D],
    ['localhost/app', 'localhost', 'app', undefined, undefined],
    ['localhost:5000/a/b/c:v1', 'localhost:5000', 'a/b/c', 'v1', undefined],
    ['lowercase:Uppercase', 'docker.io', 'library/lowercase', 'Uppercase', undefined],
    ['Registry/app', 'Registry', 'app', undefined, undefined],
    ['sub-dom1.foo.com/bar/baz/quux:some-long-tag', 'sub-dom1.foo.com', 'bar/baz/quux', 'some-long-tag', undefined],
    ['b.gcr.io/test.example.com/my-app:test.example.com', 'b.gcr.io', 'test.example.com/my-app', 'test.example.com', undefined],
    ['xn--n3h.com/myimage:xn--n3h.com', 'xn--n3h.com', 'myimage', 'xn--n3h.com', undefined],
    [`xn--7o8h.com/myimage:xn--7o8h.com@sha512:${'f'.repeat(128)}`, 'xn--7o8h.com', 'myimage', 'xn--7o8h.com', `sha512:${'f'.repeat(128)}`],
    ['foo/foo_bar.com:8080', 'docker.io', 'foo/foo_bar.com', '8080', undefined],
    ['192.168.1.1:5000/repo:5050', '192.168.1.1:5000', 'repo', '5050', undefined],
    ['[2001:db8::1]/repo', '[2001:db8::1]', 'repo', undefined, undefined],
    ['[2001:db8:1:2:3:4:5:6]/repo:tag', '[2001:db8:1:2:3:4:5:6]', 'repo', 'tag', undefined],
    [`[2001:db8::1]:5000/repo:tag@${D}`, '[2001:db8::1]:5000', 'repo', 'tag', D],
    ['[::1]:5000/team/app', '[::1]:5000', 'team/app', undefined, undefined],
    ['registry.example.com/a__b/c---d/e.f_g:v', 'registry.example.com', 'a__b/c---d/e.f_g', 'v', undefined],
    [`registry.example.com/team/app@${D}`, 'registry.example.com', 'team/app', undefined, D],
  ];
  for (const [input, registry, repository, tag, digest] of cases) {
    it(input.length > 70 ? `${input.slice(0, 70)}…` : input, () => {
      const r = parseImageRef(input);
      assert.deepEqual(r, {
        registry,
        repository,
        ...(tag === undefined ? {} : { tag }),
        ...(digest === undefined ? {} : { digest }),
        original: input,
      });
    });
  }
});

describe('parseImageRef: refusals say what is wrong', () => {
  it('digests: wrong length, uppercase, unknown algorithm, empty, non-hex', () => {
    refused(`repo@sha256:${'f'.repeat(34)}`, /sha256 digest must be 64 hex characters, not 34/);
    refused(`repo@sha256:${'f'.repeat(65)}`, /not 65/);
    refused(`repo@sha256:${'F'.repeat(64)}`, /must be lowercase hex/);
    refused(`repo@sha512:${'f'.repeat(64)}`, /sha512 digest must be 128/);
    refused(`validname@invaliddigest:${HEX}`, /algorithm "invaliddigest" is not supported/);
    refused('repo@', /empty digest/);
    refused(`repo@sha256:${'g'.repeat(64)}`, /must be hexadecimal/);
    refused(`repo@${HEX}`, /no algorithm/);
    refused(`repo@1sha:${HEX}`, /malformed/);
    refused(`repo@${D}@${D}`, /more than one "@"/);
    refused(`@${D}`, /no repository name/);
  });

  it('names: uppercase, empty components, bad characters, too long, bare IDs', () => {
    refused('', /empty/);
    refused('Uppercase:tag', /must be lowercase/);
    refused('test:5000/Uppercase/lowercase:tag', /must be lowercase/);
    refused('aa/asdf$$^/aa', /path component "asdf\$\$\^" is invalid/);
    refused('registry.example.com//app', /empty path component/);
    refused('registry.example.com/app/', /empty path component/);
    refused('registry.example.com/-app', /path component "-app"/);
    refused('registry.example.com/a._b', /path component/);
    refused(':justtag', /no repository name/);
    refused(HEX, /image ID, not a reference/);
    refused(`${'a/'.repeat(128)}a:tag`, /repository name is 257 characters, more than 255/);
    assert.equal(parseImageRef(`${'a/'.repeat(127)}a:tag-puts-this-over-max`).repository.length, 255);
    refused('nginx latest', /whitespace/);
    refused('ngïnx', /non-ASCII/);
    refused('x'.repeat(MAX_REFERENCE_LENGTH + 1), /longer than 1024/);
  });

  it('tags and registries: empty tag, bad tag, too long, IPv6 without a path, zones, bad ports', () => {
    refused('nginx:', /empty tag/);
    refused('nginx:-bad', /tag "-bad" is invalid/);
    refused('nginx:.bad', /tag ".bad" is invalid/);
    refused(`nginx:${'t'.repeat(129)}`, /longer than 128/);
    assert.equal(parseImageRef(`nginx:${'t'.repeat(128)}`).tag?.length, 128);
    refused('[2001:db8::1]', /invalid/);
    refused('[2001:db8::1]:5000', /invalid/);
    refused('[2001:db8::1]:tag', /invalid/);
    refused('[fe80::1%eth0]:5000/repo', /registry "\[fe80::1%eth0\]:5000" is not a valid host/);
    refused('registry.example.com:port/app', /registry "registry.example.com:port"/);
    refused('-bad.example.com/app', /registry "-bad.example.com"/);
    refused('docker://quay.io/library/foo:bar', /invalid/);
  });
});

describe('parseImageRef: the names distribution accepts and refuses', () => {
  const valid = [
    'docker/docker',
    'library/debian',
    'debian',
    'docker.io/docker/docker',
    'index.docker.io/library/debian',
    '127.0.0.1:5000/library/debian',
    '192.168.0.1',
    '192.168.0.1:80',
    '192.168.0.1:8/debian',
    'thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev',
    '[fc00::1]:5000/docker/docker',
    '[fc00:1:2:3:4:5:6:7]:5000/library/debian',
    `docker.io/${'1a3f5e7d'.repeat(8)}`,
    'Docker/docker',
    'DOCKER/docker',
    'docker-rules/docker',
    'docker---rules/docker',
    'd/docker',
    'jess/t',
    'dock__er/docker',
  ];
  const invalid = [
    'https://github.com/docker/docker',
    'docker/Docker',
    '-docker',
    '-docker/docker',
    '-docker.io/docker/docker',
    'docker///docker',
    'docker.io/docker/Docker',
    'docker.io/docker///docker',
    '[fc00::1]',
    '[fc00::1]:5000',
    'fc00::1:5000/debian',
    '[fe80::1%eth0]:5000/debian',
    '[2001:db8:3:4::192.0.2.33]:5000/debian',
    '1a3f5e7d'.repeat(8),
    'docker-/docker',
    '-docker-/docker',
    '____/____',
    '_docker/_docker',
    'dock..er/docker',
    'dock_.er/docker',
    'dock-.er/docker',
    'docker/',
    `${'this_is_not_a_valid_namespace_'.repeat(9)}/docker`,
  ];
  it('accepts what distribution accepts', () => {
    for (const s of valid) assert.doesNotThrow(() => parseImageRef(s), s);
  });
  it('refuses what distribution refuses, with ERR_IMAGE_REF_INVALID', () => {
    for (const s of invalid) refused(s, /invalid image reference/);
  });
  it('names normalise as Docker does', () => {
    assert.equal(formatImageRef(parseImageRef('ubuntu-12.04-base')), 'docker.io/library/ubuntu-12.04-base');
    assert.equal(formatImageRef(parseImageRef('library/foo/bar')), 'docker.io/library/foo/bar');
    assert.equal(formatImageRef(parseImageRef('FOO/bar')), 'FOO/bar');
    assert.equal(formatImageRef(parseImageRef('127.0.0.1:8000/privatebase')), '127.0.0.1:8000/privatebase');
    const withBoth = 'busybox:latest@sha256:86e0e091d0da6bde2456dbb48306f3956bbeb2eae1b5b9a43045843f69fe4aaa';
    assert.equal(formatImageRef(parseImageRef(withBoth)), `docker.io/library/${withBoth}`);
  });
});

describe('pinnedRef, formatImageRef, parseDigest, isRegistryHost', () => {
  it('pins to registry/repository@digest, the form the mutating webhook writes', () => {
    assert.equal(pinnedRef(parseImageRef('nginx:1.27'), D), `docker.io/library/nginx@${D}`);
    assert.equal(pinnedRef(parseImageRef(`[::1]:5000/team/app:v1@sha256:${'0'.repeat(64)}`), D), `[::1]:5000/team/app@${D}`);
    assert.throws(
      () => pinnedRef(parseImageRef('nginx'), 'sha256:abc'),
      (e: unknown) => isWritError(e, 'ERR_IMAGE_REF_INVALID'),
    );
    assert.equal(formatImageRef(parseImageRef(`app:v1@${D}`)), `docker.io/library/app:v1@${D}`);
    assert.equal(parseDigest(D), D);
    assert.ok(isRegistryHost('[::1]:5000') && isRegistryHost('registry.example.com') && !isRegistryHost('a b') && !isRegistryHost('host:port'));
  });
});

describe('properties (fast-check)', () => {
  const alnum = fc.stringMatching(/^[a-z0-9]{1,8}$/);
  const separator = fc.constantFrom('.', '_', '__', '-', '--');
  const component = fc.tuple(alnum, fc.array(fc.tuple(separator, alnum), { maxLength: 2 })).map(([a, rest]) => a + rest.map(([s, b]) => s + b).join(''));
  const path = fc.array(component, { minLength: 1, maxLength: 4 }).map((cs) => cs.join('/'));
  const domain = fc.oneof(
    fc.tuple(fc.stringMatching(/^[a-z][a-z0-9-]{0,6}[a-z0-9]$/), fc.constantFrom('.com', '.example.org', '.io')).map(([a, b]) => a + b),
    fc.tuple(fc.nat(255), fc.nat(255)).map(([a, b]) => `10.${a}.${b}.1`),
    fc.constantFrom('[::1]', '[2001:db8::1]', 'localhost'),
  );
  const registry = fc.tuple(domain, fc.option(fc.integer({ min: 1, max: 65535 }), { nil: undefined })).map(([d, p]) => (p === undefined ? d : `${d}:${p}`));
  const tag = fc.stringMatching(/^[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}$/);
  const digest = fc.stringMatching(/^[a-f0-9]{64}$/).map((h) => `sha256:${h}`);

  it('what is formatted from valid parts parses back to those parts', () => {
    fc.assert(
      fc.property(registry, path, fc.option(tag, { nil: undefined }), fc.option(digest, { nil: undefined }), (reg, p, t, d) => {
        const s = `${reg}/${p}${t === undefined ? '' : `:${t}`}${d === undefined ? '' : `@${d}`}`;
        const r = parseImageRef(s);
        assert.equal(r.registry, reg);
        assert.equal(r.repository, p);
        assert.equal(r.tag, t);
        assert.equal(r.digest, d);
        assert.equal(formatImageRef(r), s);
        assert.deepEqual(parseImageRef(formatImageRef(r)), { ...r, original: formatImageRef(r) });
      }),
      { numRuns: 500 },
    );
  });

  it('any string up to 2 KiB: a reference or ERR_IMAGE_REF_INVALID, never another error', () => {
    const chars = fc.constantFrom(...'aZ09:/@._-[]%+ \n\u00e9'.split(''));
    const input = fc.oneof(
      fc.string({ maxLength: 2048 }),
      fc.array(chars, { maxLength: 300 }).map((a) => a.join('')),
    );
    fc.assert(
      fc.property(input, (s) => {
        try {
          const r = parseImageRef(s);
          assert.ok(r.repository.length <= 255 && isRegistryHost(r.registry));
        } catch (err) {
          assert.ok(isWritError(err, 'ERR_IMAGE_REF_INVALID'), String(err));
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('a sha256 digest of any other length, or with uppercase hex, is refused', () => {
    fc.assert(
      fc.property(fc.stringMatching(/^[a-fA-F0-9]{32,80}$/), (hex) => {
        const ok = hex.length === 64 && hex === hex.toLowerCase();
        let parsed = true;
        try {
          parseImageRef(`registry.example.com/app@sha256:${hex}`);
        } catch (err) {
          assert.ok(isWritError(err, 'ERR_IMAGE_REF_INVALID'));
          parsed = false;
        }
        assert.equal(parsed, ok);
      }),
    );
  });

  // The message names the length: the size check, not the parser, refused it.
  it('a huge input is refused by its length, before any parsing', () => {
    refused(`${'a'.repeat(10_000_000)}`, /longer than/);
    refused(`a/${'a-'.repeat(400)}`, /./);
  });
});
