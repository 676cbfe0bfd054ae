import assert from 'node:assert/strict';
import { it } from 'node:test';
import { parsePolicies } from './model.ts';

it('a YAML syntax error is reported at its own line, not 1:1', () => {
  const text = `apiVersion: writ.dev/v1
kind: AccessPolicy
metadata: { name: orders }
spec:
  to: spiffe://y.test/orders
  rules:
    - effect: allow
      from: ["spiffe://y.test/web"]
       actions: [{ methods: [GET], paths: ["/v1/*"] }]
`;
  assert.throws(
    () => parsePolicies(text, { file: 'bad.yaml' }),
    (err: Error) => {
      assert.match(err.message, /bad\.yaml:(8|9):\d+:/, err.message);
      assert.doesNotMatch(err.message, /bad\.yaml:1:1:/);
      return true;
    },
  );
});
