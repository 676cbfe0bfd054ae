/** The contract both sides use: what the server encodes, the agent decodes to the same thing; anything else is refused whole. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { isWritError } from '@writ/spiffe';
import {
  REQUEST_FIELDS,
  SVID_REQUEST_FIELDS,
  SYNC_QUERY_PARAMS,
  decodeAttestAnswer,
  decodeJwtSvidAnswer,
  decodeRenewAnswer,
  decodeSvidBatchAnswer,
  decodeSyncAnswer,
  decodeSyncQuery,
  encodeEntry,
  encodeSyncAnswer,
  encodeSyncQuery,
  toJson,
  type AttestAnswer,
  type EntryRecord,
  type JoinTokenAttestRequest,
  type JwtSvidAnswer,
  type JwtSvidRequest,
  type PsatAttestRequest,
  type RenewAnswer,
  type RenewRequest,
  type SvidBatchAnswer,
  type SvidBatchRequest,
  type PolicyState,
  type QuarantineState,
  type SyncBundles,
} from './index.ts';

const record: EntryRecord = {
  id: 'e1',
  spiffeId: 'spiffe://p.test/web',
  parentId: 'spiffe://p.test/writ/agent/n1',
  selectors: ['unix:uid:1000'],
  x509SvidTtl: 0,
  jwtSvidTtl: 60,
  dnsNames: ['web.local'],
  federatesWith: [],
  admin: false,
  hint: 'web',
  expiresAt: Date.UTC(2027, 0, 1),
  revision: 7,
  createdAt: Date.UTC(2026, 0, 1),
  updatedAt: Date.UTC(2026, 0, 2),
};
const bundles = toJson<SyncBundles>({ bundle: { keys: [] }, federatedBundles: {} });
const quarantine = toJson<QuarantineState>({ version: 'v1', ids: ['spiffe://p.test/bad'], breakGlass: [] });
const policy = toJson<PolicyState>({ revision: 3, policies: { a: 'apiVersion: writ.dev/v1\n' } });

describe('sync answer', () => {
  it('decodes to what was encoded, with and without the shared parts', () => {
    const full = encodeSyncAnswer({
      quarantine,
      revision: 7,
      full: true,
      entries: [encodeEntry(record)],
      removed: ['gone'],
      bundlesVersion: '1:',
      bundles,
      policy,
    });
    assert.ok(full.endsWith('}\n'), 'one line');
    const a = decodeSyncAnswer(JSON.parse(full), 'p.test', '');
    assert.deepEqual(a, {
      quarantine: JSON.parse(quarantine),
      revision: 7,
      full: true,
      entries: [{ ...record, expiresAt: '2027-01-01T00:00:00.000Z', createdAt: '2026-01-01T00:00:00.000Z', updatedAt: '2026-01-02T00:00:00.000Z' }],
      removed: ['gone'],
      bundlesVersion: '1:',
      bundle: { keys: [] },
      federatedBundles: {},
      policy: JSON.parse(policy),
    });
    const lean = decodeSyncAnswer(
      JSON.parse(
        encodeSyncAnswer({ quarantine, revision: 7, full: false, entries: [], removed: [], bundlesVersion: '1:', bundles: undefined, policy: undefined }),
      ),
      'p.test',
      '1:',
    );
    assert.equal(lean.bundle, undefined);
    assert.equal(lean.policy, undefined);
  });

  it('refuses an answer with a new bundles version but no bundles, a bad entry, or a bad policy, naming the problem', () => {
    const base = JSON.parse(
      encodeSyncAnswer({ quarantine, revision: 1, full: true, entries: [], removed: [], bundlesVersion: '2:', bundles: undefined, policy: undefined }),
    );
    const refused = (raw: unknown, why: RegExp): void =>
      assert.throws(
        () => decodeSyncAnswer(raw, 'p.test', '1:'),
        (e) => isWritError(e, 'ERR_REQUEST_FAILED') && why.test(e.message),
      );
    refused(base, /bundle/);
    refused({ ...base, bundle: { keys: [] }, federatedBundles: {}, entries: [{ ...encodeEntry(record), spiffeId: 'http://x' }] }, /entry e1: spiffeId/);
    refused({ ...base, bundle: { keys: [] }, federatedBundles: {}, policy: { revision: 1, policies: { a: 3 } } }, /policy/);
    refused({ ...base, bundle: { keys: [] }, federatedBundles: {}, quarantine: { version: 1 } }, /quarantine/);
  });

  it('any JSON value is decoded or refused with ERR_REQUEST_FAILED, never another error', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.jsonValue({ maxDepth: 4 }),
          fc.record({
            revision: fc.nat(),
            full: fc.boolean(),
            entries: fc.array(fc.jsonValue({ maxDepth: 2 }), { maxLength: 4 }),
            removed: fc.array(fc.string(), { maxLength: 4 }),
            bundlesVersion: fc.string({ maxLength: 8 }),
          }),
        ),
        (v) => {
          try {
            decodeSyncAnswer(v, 'p.test', '');
          } catch (e) {
            assert.ok(isWritError(e, 'ERR_REQUEST_FAILED'), String(e));
          }
        },
      ),
      { numRuns: 500 },
    );
  });
});

describe('sync query', () => {
  it('round-trips, and the server reads an agent that does not enforce policy as not acknowledging', () => {
    const q = { since: 5, wait: 20, bundles: '3:a@1', policy: 2, quarantine: 'v1', lean: true, images: '1.42' };
    assert.deepEqual(decodeSyncQuery(encodeSyncQuery(q)), q);
    assert.deepEqual([...encodeSyncQuery(q).keys()], Object.keys(SYNC_QUERY_PARAMS), 'the server declares every parameter an agent sends');
    assert.deepEqual(decodeSyncQuery(new URLSearchParams('since=0&wait=99')), {
      since: 0,
      wait: 30,
      bundles: '',
      policy: undefined,
      quarantine: undefined,
      lean: false,
      images: undefined,
    });
    assert.equal(decodeSyncQuery(new URLSearchParams('policy=x')).policy, -1, 'a malformed revision is one the agent does not have');
    assert.throws(
      () => decodeSyncQuery(new URLSearchParams('since=-1')),
      (e) => isWritError(e, 'ERR_FIELD_INVALID') && e.field === 'since',
    );
    assert.throws(
      () => decodeSyncQuery(new URLSearchParams('wait=soon')),
      (e) => isWritError(e, 'ERR_FIELD_INVALID') && e.field === 'wait',
    );
  });
});

describe('SVID batch answer', () => {
  it('keeps the well-formed SVIDs and counts the others; no list at all is refused', () => {
    const good = { entryId: 'e1', spiffeId: 'spiffe://p.test/web', svid: 'PEM', expiresAt: '2027-01-01T00:00:00Z' };
    assert.deepEqual(decodeSvidBatchAnswer({ svids: [good, { ...good, expiresAt: 'never' }, null] }), { svids: [good], malformed: 2 });
    assert.throws(
      () => decodeSvidBatchAnswer({}),
      (e) => isWritError(e, 'ERR_REQUEST_FAILED'),
    );
  });
});

/** What the server answers, through the wire (JSON text), to what the agent decodes. */
const wire = (v: unknown): unknown => JSON.parse(JSON.stringify(v));
const refusedAs = (what: string, why: RegExp) => (e: unknown) =>
  isWritError(e, 'ERR_REQUEST_FAILED') && e.message.includes(`malformed ${what}`) && why.test(e.message);

describe('SVID answers', () => {
  const attest: AttestAnswer = {
    spiffeId: 'spiffe://p.test/writ/agent/n1',
    selectors: ['k8s_psat:cluster:c'],
    svid: '-----BEGIN CERTIFICATE-----\n',
    bundle: '-----BEGIN CERTIFICATE-----\n',
    expiresAt: '2027-01-01T00:00:00.000Z',
  };
  const renew: RenewAnswer = { spiffeId: attest.spiffeId, svid: attest.svid, bundle: attest.bundle, expiresAt: attest.expiresAt };
  const jwt: JwtSvidAnswer = { spiffeId: 'spiffe://p.test/web', token: 'h.p.s', expiresAt: '2027-01-01T00:05:00.000Z' };
  const batch: SvidBatchAnswer = { svids: [{ entryId: 'e1', spiffeId: 'spiffe://p.test/web', svid: 'PEM', expiresAt: attest.expiresAt }] };

  it('each decodes to what the server encoded', () => {
    assert.deepEqual(decodeAttestAnswer(wire(attest)), attest);
    assert.deepEqual(decodeRenewAnswer(wire(renew)), renew);
    assert.deepEqual(decodeJwtSvidAnswer(wire(jwt)), jwt);
    assert.deepEqual(decodeSvidBatchAnswer(wire(batch)), { svids: batch.svids, malformed: 0 });
  });

  it('each refuses a malformed answer whole, naming the field', () => {
    assert.throws(() => decodeAttestAnswer(null), refusedAs('attestation answer', /not an object/));
    assert.throws(() => decodeAttestAnswer({ ...attest, svid: '' }), refusedAs('attestation answer', /svid/));
    assert.throws(() => decodeAttestAnswer({ ...attest, selectors: [1] }), refusedAs('attestation answer', /selectors/));
    assert.throws(() => decodeAttestAnswer({ ...attest, expiresAt: 'never' }), refusedAs('attestation answer', /expiresAt/));
    assert.throws(() => decodeRenewAnswer([renew]), refusedAs('renewal answer', /not an object/));
    assert.throws(() => decodeRenewAnswer({ ...renew, bundle: 7 }), refusedAs('renewal answer', /bundle/));
    assert.throws(() => decodeRenewAnswer({ ...renew, expiresAt: undefined }), refusedAs('renewal answer', /expiresAt/));
    assert.throws(() => decodeJwtSvidAnswer('h.p.s'), refusedAs('JWT-SVID answer', /not an object/));
    assert.throws(() => decodeJwtSvidAnswer({ ...jwt, token: '' }), refusedAs('JWT-SVID answer', /token/));
    assert.throws(() => decodeJwtSvidAnswer({ ...jwt, spiffeId: null }), refusedAs('JWT-SVID answer', /spiffeId/));
    assert.throws(() => decodeSvidBatchAnswer({ svids: {} }), refusedAs('signing answer', /no svids/));
  });

  it('any JSON value is decoded or refused with ERR_REQUEST_FAILED, never another error', () => {
    const decoders = [decodeAttestAnswer, decodeRenewAnswer, decodeJwtSvidAnswer, decodeSvidBatchAnswer];
    fc.assert(
      fc.property(
        fc.oneof(fc.jsonValue({ maxDepth: 3 }), fc.record({ spiffeId: fc.string(), svid: fc.string(), svids: fc.array(fc.jsonValue({ maxDepth: 2 })) })),
        (v) => {
          for (const decode of decoders)
            try {
              decode(v);
            } catch (e) {
              assert.ok(isWritError(e, 'ERR_REQUEST_FAILED'), String(e));
            }
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe('requests', () => {
  it('the fields the server declares are exactly those each request type carries', () => {
    const examples = {
      attestJoinToken: { joinToken: 't', csr: 'c' } satisfies JoinTokenAttestRequest,
      attestPsat: { cluster: 'c', token: 't', csr: 'c' } satisfies PsatAttestRequest,
      renew: { csr: 'c' } satisfies RenewRequest,
      svids: { requests: [{ entryId: 'e1', csr: 'c' }] } satisfies SvidBatchRequest,
      jwtSvid: { entryId: 'e1', audience: ['a'] } satisfies JwtSvidRequest,
    };
    for (const [k, example] of Object.entries(examples))
      assert.deepEqual(Object.keys(wire(example) as object), REQUEST_FIELDS[k as keyof typeof REQUEST_FIELDS], k);
    assert.deepEqual(Object.keys(examples.svids.requests[0]!), SVID_REQUEST_FIELDS);
  });
});
