import assert from 'node:assert/strict';
import { it } from 'node:test';
import { isWritError } from '@writ/spiffe';
import { serverIdentity } from './agent.ts';

it('a malformed --trust-domain is refused with its own code, not pinned and later reported as a mismatch', () => {
  assert.throws(
    () => serverIdentity({ caPem: '', trustDomain: 'Not A Domain' }),
    (e) => isWritError(e) && e.code === 'ERR_TRUST_DOMAIN_INVALID',
  );
  assert.deepEqual(serverIdentity({ caPem: '', trustDomain: 'ok.test' }), { trustDomain: 'ok.test', serverSpiffeId: 'spiffe://ok.test/writ/server' });
});
