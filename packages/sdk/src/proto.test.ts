import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { Deframer, GRPC_STATUS, GrpcError, decodeGrpcMessage, encodeGrpcMessage, frame, parseEndpoint } from './grpc.ts';
import {
  ProtoError,
  decodeJwtSvidRequest,
  decodeStruct,
  decodeValidateJwtSvidResponse,
  decodeX509BundlesResponse,
  decodeX509SvidResponse,
  encodeJwtSvidRequest,
  encodeStruct,
  encodeValidateJwtSvidResponse,
  encodeX509BundlesResponse,
  encodeX509SvidResponse,
} from './proto.ts';

const bytes = fc.uint8Array({ minLength: 1, maxLength: 64 }).map((a) => Buffer.from(a));
const text = fc.string({ minLength: 1, maxLength: 40 });

describe('Workload API protobuf codec', () => {
  it('matches bytes produced by protoc-generated code (field numbers of the standard)', () => {
    // X509SVIDResponse{svids:[{spiffe_id:"spiffe://a/b", x509_svid:0x01, x509_svid_key:0x02, bundle:0x03, hint:"h"}], federated_bundles:{"spiffe://c":0x04}}
    const golden = Buffer.from('0a1a0a0c7370696666653a2f2f612f621201011a01022201032a0168' + '1a0f0a0a7370696666653a2f2f63120104', 'hex');
    const m = decodeX509SvidResponse(golden);
    assert.equal(m.svids[0]!.spiffeId, 'spiffe://a/b');
    assert.equal(m.svids[0]!.hint, 'h');
    assert.deepEqual([...m.federatedBundles.keys()], ['spiffe://c']);
    assert.ok(encodeX509SvidResponse(m).equals(golden));
    // X509BundlesResponse: crl = 1, bundles = 2 (note the order differs from X509SVIDResponse)
    const b = encodeX509BundlesResponse({ crl: [Buffer.from([9])], bundles: new Map([['spiffe://x', Buffer.from([7])]]) });
    assert.equal(b[0], 0x0a, 'crl is field 1');
    assert.equal(b[3], 0x12, 'bundles is field 2');
  });

  it('property: X509SVIDResponse and X509BundlesResponse round-trip', () => {
    const svid = fc.record(
      { spiffeId: text, x509Svid: bytes, x509SvidKey: bytes, bundle: bytes, hint: fc.string({ maxLength: 10 }) },
      { noNullPrototype: true },
    );
    fc.assert(
      fc.property(fc.array(svid, { maxLength: 4 }), fc.array(bytes, { maxLength: 2 }), fc.dictionary(text, bytes, { maxKeys: 3 }), (svids, crl, fed) => {
        const m = { svids, crl, federatedBundles: new Map(Object.entries(fed)) };
        assert.deepEqual(decodeX509SvidResponse(encodeX509SvidResponse(m)), m);
        const b = { crl, bundles: new Map(Object.entries(fed)) };
        assert.deepEqual(decodeX509BundlesResponse(encodeX509BundlesResponse(b)), b);
      }),
      { numRuns: 500 },
    );
  });

  it('property: JWT request and Struct claims round-trip', () => {
    fc.assert(
      fc.property(fc.array(text, { maxLength: 4 }), fc.string({ maxLength: 20 }), (audience, spiffeId) => {
        assert.deepEqual(decodeJwtSvidRequest(encodeJwtSvidRequest({ audience, spiffeId })), { audience, spiffeId });
      }),
      { numRuns: 300 },
    );
    const json = fc.jsonValue({ maxDepth: 4 }).filter((v) => v !== null && typeof v === 'object' && !Array.isArray(v)) as fc.Arbitrary<Record<string, unknown>>;
    fc.assert(
      fc.property(json, (claims) => {
        const norm = JSON.parse(JSON.stringify(claims)) as Record<string, unknown>;
        assert.deepEqual(decodeStruct(encodeStruct(norm)), norm);
        assert.deepEqual(decodeValidateJwtSvidResponse(encodeValidateJwtSvidResponse({ spiffeId: 's', claims: norm })).claims, norm);
      }),
      { numRuns: 300 },
    );
  });

  it('property: arbitrary bytes decode or fail with ProtoError, never anything else', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (a) => {
        for (const dec of [decodeX509SvidResponse, decodeJwtSvidRequest, decodeX509BundlesResponse, decodeStruct]) {
          try {
            dec(Buffer.from(a));
          } catch (err) {
            assert.ok(err instanceof ProtoError || err instanceof RangeError, String(err));
          }
        }
      }),
      { numRuns: 2000 },
    );
  });
});

describe('gRPC framing', () => {
  it('deframes messages split anywhere, and refuses compressed and oversized ones', () => {
    const msgs = [Buffer.from('a'), Buffer.alloc(0), Buffer.alloc(70_000, 1)];
    const wire = Buffer.concat(msgs.map(frame));
    fc.assert(
      fc.property(fc.array(fc.nat(wire.length), { maxLength: 40 }), (cuts) => {
        const d = new Deframer();
        const out: Buffer[] = [];
        let prev = 0;
        for (const c of [...cuts.sort((x, y) => x - y), wire.length]) {
          out.push(...d.push(wire.subarray(prev, c)));
          prev = c;
        }
        assert.deepEqual(out, msgs);
      }),
      { numRuns: 200 },
    );
    assert.throws(
      () => new Deframer().push(Buffer.from([1, 0, 0, 0, 0])),
      (e) => e instanceof GrpcError && e.code === GRPC_STATUS.UNIMPLEMENTED,
    );
    assert.throws(
      () => new Deframer(10).push(Buffer.from([0, 0, 0, 0, 11])),
      (e) => e instanceof GrpcError && e.code === GRPC_STATUS.RESOURCE_EXHAUSTED,
    );
  });

  it('percent-encodes grpc-message and parses endpoints', () => {
    fc.assert(fc.property(fc.string(), (s) => assert.equal(decodeGrpcMessage(encodeGrpcMessage(s)), s)));
    assert.deepEqual(parseEndpoint('unix:///run/writ/api.sock'), { path: '/run/writ/api.sock' });
    assert.deepEqual(parseEndpoint('tcp://127.0.0.1:8081'), { host: '127.0.0.1', port: 8081 });
    for (const bad of ['unix://host/path', 'tcp://127.0.0.1', 'http://x', '/run/api.sock', 'tcp://127.0.0.1:1/path'])
      assert.throws(() => parseEndpoint(bad), TypeError, bad);
  });
});
