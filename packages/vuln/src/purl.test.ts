/** Package URLs and vulnerability IDs: the spellings scanners write, one canonical form, clear refusals. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { isWritError } from '@writ/spiffe';
import { canonicalPurl, formatPurl, normalizeVulnId, parsePurl } from './purl.ts';

describe('parsePurl', () => {
  it('splits every part and decodes percent-encoding', () => {
    assert.deepEqual(parsePurl('pkg:npm/%40babel/traverse@7.22.5'), { type: 'npm', namespace: '@babel', name: 'traverse', version: '7.22.5', qualifiers: {} });
    assert.deepEqual(parsePurl('pkg:maven/org.example/app@2.0%20Final?Classifier=sources&repository_url=repo.example.com%2Freleases#src/main'), {
      type: 'maven',
      namespace: 'org.example',
      name: 'app',
      version: '2.0 Final',
      qualifiers: { classifier: 'sources', repository_url: 'repo.example.com/releases' },
      subpath: 'src/main',
    });
    assert.equal(parsePurl('pkg:oci/web@sha256%3Aabc?repository_url=ghcr.io%2Fx%2Fweb').version, 'sha256:abc');
    assert.equal(parsePurl('pkg:golang/github.com/sirupsen/logrus@v1.9.3').namespace, 'github.com/sirupsen');
  });
  it('ignores slashes after the scheme and around the subpath, and . / .. segments', () => {
    for (const s of ['pkg:/cargo/serde@1.0.0', 'pkg://cargo/serde@1.0.0', 'pkg:///cargo/serde@1.0.0']) assert.equal(canonicalPurl(s), 'pkg:cargo/serde@1.0.0');
    assert.equal(canonicalPurl('pkg:golang/example.com/mod@v1#/../a/./b/'), 'pkg:golang/example.com/mod@v1#a/b');
  });
  it('applies the type rules: case-insensitive parts lowercased, pypi _ as -, others kept', () => {
    assert.equal(canonicalPurl('pkg:GitHub/Example-Org/Repo-Name@abc'), 'pkg:github/example-org/repo-name@abc');
    assert.equal(canonicalPurl('pkg:PyPI/Typing_Extensions@4.12.2'), 'pkg:pypi/typing-extensions@4.12.2');
    assert.equal(canonicalPurl('pkg:Nuget/Newtonsoft.Json@13.0.3'), 'pkg:nuget/Newtonsoft.Json@13.0.3');
    assert.equal(canonicalPurl('pkg:maven/HTTPClient/HTTPClient@0.3-3'), 'pkg:maven/HTTPClient/HTTPClient@0.3-3');
    assert.equal(canonicalPurl('pkg:apk/Alpine/MUSL@1.2.5-r0'), 'pkg:apk/alpine/musl@1.2.5-r0');
    assert.equal(canonicalPurl('pkg:deb/Debian/libssl3@3.0.15-1~deb12u1?Arch=amd64'), 'pkg:deb/debian/libssl3@3.0.15-1~deb12u1?arch=amd64');
  });
  it('sorts qualifiers, drops empty ones, encodes what must be encoded', () => {
    assert.equal(
      canonicalPurl('pkg:rpm/fedora/curl@7.50.3-1.fc25?distro=fedora-25&Arch=i386&empty='),
      'pkg:rpm/fedora/curl@7.50.3-1.fc25?arch=i386&distro=fedora-25',
    );
    assert.equal(formatPurl({ type: 'npm', namespace: '@angular', name: 'core', version: '17.0.0', qualifiers: {} }), 'pkg:npm/%40angular/core@17.0.0');
    assert.equal(formatPurl({ type: 'docker', name: 'img', version: 'sha256:ab', qualifiers: {} }), 'pkg:docker/img@sha256:ab');
  });
  it('refuses what is not a purl, with ERR_PURL_INVALID', () => {
    for (const bad of [
      'EnterpriseLibrary.Common@6.0.1304',
      'pkg:EnterpriseLibrary.Common@6.0.1304',
      'pkg:maven/@1.3.4',
      'pkg:npm/x@1?in%20production=true',
      'pkg:npm/x@1?a=1&a=2',
      'pkg:npm/x@1?novalue',
      'pkg:npm/%E0%A4%A',
      'pkg:1abc/x@1',
      'pkg:swift/Alamofire@5.4.3',
      'pkg:cran/A3',
      'pkg:conan/bincrafters/cctz@2.3',
      ' pkg:npm/x@1',
      `pkg:npm/${'a'.repeat(5000)}`,
      'http://example.com/x',
    ])
      assert.throws(
        () => parsePurl(bad),
        (e: unknown) => isWritError(e, 'ERR_PURL_INVALID'),
        bad,
      );
  });
  it('round trips: formatPurl then parsePurl gives the same parts, and canonical text is a fixed point', () => {
    const seg = fc.string({ minLength: 1, maxLength: 12 }).filter((s) => !s.includes('/') && s !== '.' && s !== '..');
    const purl = fc.record(
      {
        type: fc.constantFrom('npm', 'maven', 'generic', 'cargo', 'gem', 'docker'),
        namespace: fc.array(seg, { minLength: 1, maxLength: 3 }).map((a) => a.join('/')),
        name: seg,
        version: fc.string({ minLength: 1, maxLength: 12 }),
        qualifiers: fc.dictionary(fc.stringMatching(/^[a-z][a-z0-9._-]{0,8}$/), fc.string({ minLength: 1, maxLength: 10 }), { maxKeys: 3 }),
        subpath: fc.array(seg, { minLength: 1, maxLength: 3 }).map((a) => a.join('/')),
      },
      { requiredKeys: ['type', 'name', 'qualifiers'] },
    );
    fc.assert(
      fc.property(purl, (p) => {
        const text = formatPurl(p);
        const back = parsePurl(text);
        assert.deepEqual({ ...back, qualifiers: { ...back.qualifiers } }, { ...p, qualifiers: { ...p.qualifiers } });
        assert.equal(canonicalPurl(text), text);
      }),
      { numRuns: 500 },
    );
  });
  it('any string: a PackageUrl or ERR_PURL_INVALID, never another error', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string({ maxLength: 60 }),
          fc.string({ maxLength: 40 }).map((s) => `pkg:${s}`),
        ),
        (s) => {
          try {
            const p = parsePurl(s);
            assert.equal(typeof p.name, 'string');
            canonicalPurl(formatPurl(p));
          } catch (e) {
            assert.ok(isWritError(e, 'ERR_PURL_INVALID'), String(e));
          }
        },
      ),
      { numRuns: 2000 },
    );
  });
});

describe('normalizeVulnId', () => {
  it('one spelling per CVE and GHSA; other schemes kept', () => {
    for (const s of ['CVE-2024-3094', 'cve-2024-3094', ' Cve-2024-3094\n', 'CVE_2024_3094', 'CVE\u20132024\u20133094'])
      assert.equal(normalizeVulnId(s), 'CVE-2024-3094');
    assert.equal(normalizeVulnId('CVE-2021-1234567'), 'CVE-2021-1234567');
    assert.equal(normalizeVulnId('ghsa-RV95-896H-C2VC'), 'GHSA-rv95-896h-c2vc');
    for (const s of ['DSA-5678-1', 'GO-2024-2687', 'RUSTSEC-2024-0001', 'ALAS2-2024-2500', 'PYSEC-2023_12']) assert.equal(normalizeVulnId(s), s);
  });
  it('refuses empty, spaced, control characters, and malformed CVE / GHSA', () => {
    for (const s of ['', '   ', 'CVE 2024 3094x', 'CVE-24-1', 'CVE-2024-123', 'cve2024', 'GHSA-1234-5678-9abc', 'GHSA-abc', 'A\u0000B', 'x'.repeat(201)])
      assert.throws(
        () => normalizeVulnId(s),
        (e: unknown) => isWritError(e, 'ERR_VULN_ID_INVALID'),
        JSON.stringify(s),
      );
  });
  it('is idempotent on whatever it accepts', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string({ maxLength: 30 }), fc.stringMatching(/^[cC][vV][eE][-_ ]\d{4}[-_]\d{4,7}$/)), (s) => {
        try {
          const n = normalizeVulnId(s);
          assert.equal(normalizeVulnId(n), n);
        } catch (e) {
          assert.ok(isWritError(e, 'ERR_VULN_ID_INVALID'), String(e));
        }
      }),
      { numRuns: 2000 },
    );
  });
});
