import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { isWritError } from './errors.ts';
import { formatSpiffeId, parseSpiffeId, parseTrustDomain } from './id.ts';

const td255 = `${'a'.repeat(251)}.org`;
const id2048 = `spiffe://example.org/${'p'.repeat(2048 - 'spiffe://example.org/'.length)}`;

// Each rule of SPIFFE-ID.md: an invalid ID and its closest valid counterpart.
const CASES: ReadonlyArray<readonly [rule: string, invalid: string, valid: string]> = [
  ['scheme must be spiffe', 'https://example.org/web', 'spiffe://example.org/web'],
  ['scheme is lowercase', 'SPIFFE://example.org/web', 'spiffe://example.org/web'],
  ['scheme needs //', 'spiffe:example.org/web', 'spiffe://example.org/web'],
  ['trust domain not empty', 'spiffe:///web', 'spiffe://t/web'],
  ['trust domain lowercase', 'spiffe://Example.org/web', 'spiffe://example.org/web'],
  ['trust domain charset', 'spiffe://exa$mple.org/web', 'spiffe://exa_mple.org/web'],
  ['no userinfo', 'spiffe://user@example.org/web', 'spiffe://user.example.org/web'],
  ['no userinfo with password', 'spiffe://user:pw@example.org/web', 'spiffe://example.org/web'],
  ['no port', 'spiffe://example.org:8443/web', 'spiffe://example.org/web'],
  ['no query', 'spiffe://example.org/web?x=1', 'spiffe://example.org/web'],
  ['no fragment', 'spiffe://example.org/web#frag', 'spiffe://example.org/web'],
  ['no percent-encoding in path', 'spiffe://example.org/we%62', 'spiffe://example.org/web'],
  ['no percent-encoding in trust domain', 'spiffe://ex%61mple.org/web', 'spiffe://example.org/web'],
  ['no empty segment', 'spiffe://example.org//web', 'spiffe://example.org/web'],
  ['no dot segment', 'spiffe://example.org/./web', 'spiffe://example.org/.web'],
  ['no dot-dot segment', 'spiffe://example.org/ns/../web', 'spiffe://example.org/ns/..web'],
  ['no trailing slash', 'spiffe://example.org/web/', 'spiffe://example.org/web'],
  ['no trailing slash on the trust domain', 'spiffe://example.org/', 'spiffe://example.org'],
  ['path charset', 'spiffe://example.org/web server', 'spiffe://example.org/web_server'],
  ['path is ASCII', 'spiffe://example.org/wéb', 'spiffe://example.org/web'],
  ['trust domain at most 255 bytes', `spiffe://a${td255}/web`, `spiffe://${td255}/web`],
  ['ID at most 2048 bytes', `${id2048}p`, id2048],
  ['not empty', '', 'spiffe://e'],
];

describe('SPIFFE ID', () => {
  for (const [rule, invalid, valid] of CASES) {
    it(`${rule}: rejects ${JSON.stringify(invalid.slice(0, 50))}, accepts ${JSON.stringify(valid.slice(0, 50))}`, () => {
      assert.throws(
        () => parseSpiffeId(invalid),
        (e) => isWritError(e, 'ERR_SPIFFE_ID_INVALID') && e.message.length < 300,
      );
      assert.equal(parseSpiffeId(valid).uri, valid);
    });
  }

  it('splits trust domain and path', () => {
    assert.deepEqual(parseSpiffeId('spiffe://prod.example/ns/web/sa/api'), {
      trustDomain: 'prod.example',
      path: '/ns/web/sa/api',
      uri: 'spiffe://prod.example/ns/web/sa/api',
    });
    assert.deepEqual(parseSpiffeId('spiffe://prod.example'), { trustDomain: 'prod.example', path: '', uri: 'spiffe://prod.example' });
    assert.equal(formatSpiffeId('example.org', 'ns', 'web'), 'spiffe://example.org/ns/web');
    assert.throws(
      () => formatSpiffeId('example.org', 'a/b', '..'),
      (e) => isWritError(e, 'ERR_SPIFFE_ID_INVALID'),
    );
    assert.throws(
      () => parseTrustDomain('EXAMPLE'),
      (e) => isWritError(e, 'ERR_TRUST_DOMAIN_INVALID'),
    );
  });

  const tdChar = fc.constantFrom(...'abcdefghijklmnopqrstuvwxyz0123456789.-_');
  const pathChar = fc.constantFrom(...'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_');
  const segment = fc.string({ unit: pathChar, minLength: 1, maxLength: 20 }).filter((s) => s !== '.' && s !== '..');
  const validId = fc
    .tuple(fc.string({ unit: tdChar, minLength: 1, maxLength: 40 }), fc.array(segment, { maxLength: 8 }))
    .map(([td, segs]) => `spiffe://${td}${segs.map((s) => `/${s}`).join('')}`);

  it('property: every ID built from the allowed alphabet parses and round-trips', () => {
    fc.assert(
      fc.property(validId, (id) => {
        const p = parseSpiffeId(id);
        assert.equal(p.uri, id);
        assert.equal(`spiffe://${p.trustDomain}${p.path}`, id);
      }),
      { numRuns: 2000 },
    );
  });

  it('property: any string either parses to itself or fails with ERR_SPIFFE_ID_INVALID (never another error)', () => {
    const anyish = fc.oneof(
      fc.string({ maxLength: 100 }),
      fc.string({ unit: 'binary', maxLength: 60 }).map((s) => `spiffe://${s}`),
      validId.map((v) => `${v}${'?#%@: /'[v.length % 7]}x`),
    );
    fc.assert(
      fc.property(anyish, (s) => {
        try {
          assert.equal(parseSpiffeId(s).uri, s);
        } catch (err) {
          assert.ok(isWritError(err, 'ERR_SPIFFE_ID_INVALID'), String(err));
        }
      }),
      { numRuns: 3000 },
    );
  });

  it('property: inserting a forbidden character into a valid ID makes it invalid', () => {
    const bad = fc.constantFrom(...'?#%@: !$&\'()*+,;=[]{}\\|"<>^`~é');
    fc.assert(
      fc.property(validId, bad, fc.nat(), (id, ch, pos) => {
        const at = 9 + (pos % (id.length - 8)); // after "spiffe://"
        const mutated = id.slice(0, at) + ch + id.slice(at);
        assert.throws(
          () => parseSpiffeId(mutated),
          (e) => isWritError(e, 'ERR_SPIFFE_ID_INVALID'),
        );
      }),
      { numRuns: 2000 },
    );
  });

  it('property: oversized input is refused by length before scanning', () => {
    fc.assert(
      fc.property(fc.integer({ min: 2049, max: 100_000 }), (n) => {
        assert.throws(() => parseSpiffeId(`spiffe://example.org/${'a'.repeat(n)}`), /longer than 2048 bytes/);
      }),
      { numRuns: 50 },
    );
  });
});
