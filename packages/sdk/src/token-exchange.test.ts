import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { GRPC_STATUS, GrpcError } from './grpc.ts';
import {
  TokenExchangeError,
  decodeExchangeRequest,
  decodeExchangeResponse,
  encodeExchangeRequest,
  encodeExchangeResponse,
  refusalMessage,
} from './token-exchange.ts';

describe('writ.broker.v1 messages', () => {
  it('round-trip, unknown fields skipped', () => {
    const r = {
      audience: 'spiffe://e2e.test/ns/api',
      scope: ['a b', 'c'],
      requestedTokenType: 'txn_token',
      subjectToken: 's',
      actorToken: 'x',
      requestContext: '{}',
      requestDetails: '{"a":1}',
      spiffeId: 'spiffe://e2e.test/ns/web',
    };
    assert.deepEqual(decodeExchangeRequest(Buffer.concat([encodeExchangeRequest(r), Buffer.from([0x48, 0x01])])), r);
    const a = { token: 'eyJ', expiresAt: 1_800_000_120, scope: ['a', 'c'], tokenType: 'jwt', cached: true };
    assert.deepEqual(decodeExchangeResponse(encodeExchangeResponse(a)), a);
    assert.deepEqual(decodeExchangeRequest(Buffer.alloc(0)).scope, []);
  });

  it('a refusal carries the OAuth error and the Writ code; other errors neither', () => {
    const e = TokenExchangeError.from(new GrpcError(GRPC_STATUS.INVALID_ARGUMENT, refusalMessage('invalid_scope', 'no: [x]', 'ERR_TOKEN_SCOPE_INVALID')));
    assert.ok(e instanceof TokenExchangeError && e instanceof GrpcError);
    assert.equal(e.code, GRPC_STATUS.INVALID_ARGUMENT);
    assert.equal(e.error, 'invalid_scope');
    assert.equal(e.writCode, 'ERR_TOKEN_SCOPE_INVALID');
    assert.equal(e.details, 'invalid_scope: no: [x] [ERR_TOKEN_SCOPE_INVALID]');
    const other = TokenExchangeError.from(new GrpcError(GRPC_STATUS.PERMISSION_DENIED, 'no identity issued'));
    assert.ok(other instanceof TokenExchangeError);
    assert.equal(other.error, '');
    assert.equal(other.writCode, '');
  });
});
