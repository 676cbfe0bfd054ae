import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import * as sdk from '@writ/sdk';

describe('@writ/sdk public surface', () => {
  it('exports what a service author uses and none of the gRPC server internals or codecs', () => {
    assert.deepEqual(Object.keys(sdk).sort(), [
      'BundleSet',
      'DecisionReporter',
      'GRPC_STATUS',
      'GrpcError',
      'JwtSource',
      'JwtSvidValidator',
      'LocalPolicy',
      'TokenExchangeError',
      'WorkloadClient',
      'X509Source',
      'authorizeAny',
      'authorizeId',
      'authorizeMemberOf',
      'authorizeRequest',
      'createMtlsServer',
      'mtlsConnect',
      'requireToken',
      'validateJwtSvid',
      'writFastify',
      'writMiddleware',
    ]);
  });

  it('the internals sit behind ./internal, an entry point scripts/pack.mjs does not publish', async () => {
    const internal = await import('@writ/sdk/internal');
    for (const name of ['ServerCall', 'acceptUnaryRequest', 'Writer', 'fields', 'encodeX509SvidResponse', 'encodeReport', 'ReportBuffer'])
      assert.ok(name in internal && !(name in sdk), name);
  });
});
