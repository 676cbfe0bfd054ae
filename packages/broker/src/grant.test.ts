import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parsePolicies } from '@writ/policy';
import { decideGrant, type GrantRequest, type SubjectInfo } from './grant.ts';
import { TOKEN_TYPE_JWT, TOKEN_TYPE_TXN } from './request.ts';
import { outsideWindow, parseTokenPolicies, tokenPoliciesOf } from './token-policy.ts';

const TD = 'spiffe://example.org';
const WEB = `${TD}/ns/shop/web`;
const ORDERS = `${TD}/ns/shop/orders`;
const BILLING = `${TD}/ns/shop/billing`;
const USER = `${TD}/users/alice`;
// Wednesday 2026-12-02 10:30 UTC.
const NOW = Date.parse('2026-12-02T10:30:00Z');

const doc = (name: string, spec: string) => `apiVersion: writ.dev/v1
kind: TokenPolicy
metadata:
  name: ${name}
spec:
${spec}`;
const policy = (spec: string, name = 'shop') => parseTokenPolicies(doc(name, spec), { file: 'p.yaml' });
const SHOP = `  clients: [${TD}/ns/shop/*]
  subjects: [${TD}/**]
  audiences: [${TD}/ns/shop/*, ${TD}]
  scopes: [orders:*, billing:read]
  requestedTokenTypes: [jwt, txn_token]
`;
const problems = (text: string): string[] => {
  try {
    parseTokenPolicies(text, { file: 'p.yaml' });
  } catch (err) {
    return (err as { issues: Array<{ line: number; column: number; message: string }> }).issues.map((i) => `${i.line}:${i.column} ${i.message}`);
  }
  return [];
};
const svid = (id: string): SubjectInfo => ({ id, kind: 'jwt-svid', actors: [], expiresAt: NOW + 300_000 });
const req = (over: Partial<GrantRequest>): GrantRequest => ({
  client: WEB,
  subject: svid(USER),
  audience: ORDERS,
  scopes: ['orders:read'],
  requestedTokenType: TOKEN_TYPE_JWT,
  now: NOW,
  ...over,
});

describe('TokenPolicy documents', () => {
  it('reads one with its defaults: depth 3, 5 minutes, jwt only, no chain check', () => {
    const [p] = policy(`  clients: [${WEB}]\n  subjects: [${TD}/users/*]\n  audiences: [${ORDERS}]\n  scopes: [orders:read]\n`);
    assert.equal(p!.name, 'shop');
    assert.equal(p!.maxDepth, 3);
    assert.equal(p!.maxTtlMs, 300_000);
    assert.deepEqual(p!.requestedTokenTypes, [TOKEN_TYPE_JWT]);
    assert.equal(p!.checkChain, false);
  });
  it('reports every problem with its line and column', () => {
    const got = problems(
      doc(
        'bad',
        `  clients: [web]
  subjects: [${TD}/**]
  audiences: []
  scopes: ['a b']
  maxDepth: 6
  maxTtl: 10m
  requestedTokenTypes: [saml]
  checkChain: yes please
  when: { days: [funday], hours: "25:00-26:00", timezone: Mars/Olympus }
  extra: 1
`,
      ),
    );
    const text = got.join('\n');
    for (const part of [
      '6:13 spec.clients[0]: identity pattern "web": must start with spiffe://',
      '8:14 spec.audiences must be a non-empty list',
      'spec.scopes[0]',
      '10:13 spec.maxDepth must be a whole number from 0 to 5',
      '11:11 spec.maxTtl',
      'spec.requestedTokenTypes[0]: must be jwt or txn_token',
      '13:15 spec.checkChain must be true or false',
      'spec.when.days[0]: must be one of sun, mon',
      'spec.when.hours[0]: must be HH:MM-HH:MM',
      'is not an IANA time zone',
      'unknown field "extra" in spec',
    ])
      assert.ok(text.includes(part), `missing ${part} in\n${text}`);
  });
  it('is a document AccessPolicy parsing leaves alone (agents ignore it)', () => {
    const { policies, others } = parsePolicies(doc('shop', SHOP));
    assert.equal(policies.length, 0);
    assert.deepEqual(
      others.map((o) => o.kind),
      ['TokenPolicy'],
    );
  });
  it('is read from a stored set by its TokenPolicy/ keys, sorted by name', () => {
    const set = { 'TokenPolicy/b': doc('b', SHOP), 'TokenPolicy/a': doc('a', SHOP), orders: 'not read' };
    assert.deepEqual(
      tokenPoliciesOf(set).map((p) => p.name),
      ['a', 'b'],
    );
  });
});

describe('time windows', () => {
  const [p] = policy(`${SHOP}  when: { days: [mon, tue, wed, thu, fri], hours: "09:00-17:00" }\n`);
  it('holds inside, says why outside (UTC unless given)', () => {
    assert.equal(outsideWindow(p!.when!, NOW), undefined);
    assert.equal(outsideWindow(p!.when!, Date.parse('2026-12-02T17:00:00Z')), 'outside the time window (wed 17:00 UTC)');
    assert.match(outsideWindow(p!.when!, Date.parse('2026-12-05T10:00:00Z'))!, /sat 10:00/);
  });
  it('follows the time zone it names', () => {
    const [q] = policy(`${SHOP}  when: { hours: "09:00-17:00", timezone: Asia/Tokyo }\n`);
    // 10:30 UTC is 19:30 in Tokyo.
    assert.match(outsideWindow(q!.when!, NOW)!, /19:30 Asia\/Tokyo/);
    assert.equal(outsideWindow(q!.when!, Date.parse('2026-12-02T01:00:00Z')), undefined);
  });
  it('a window across midnight belongs to the day it starts on', () => {
    const [q] = policy(`${SHOP}  when: { days: [fri], hours: "22:00-06:00" }\n`);
    assert.equal(outsideWindow(q!.when!, Date.parse('2026-12-04T23:00:00Z')), undefined); // Friday night
    assert.equal(outsideWindow(q!.when!, Date.parse('2026-12-05T05:00:00Z')), undefined); // Saturday early, Friday's window
    assert.ok(outsideWindow(q!.when!, Date.parse('2026-12-06T05:00:00Z'))); // Sunday early: Saturday's window, not allowed
  });
  it('notBefore and notAfter bound it', () => {
    const [q] = policy(`${SHOP}  when: { notBefore: 2026-12-03T00:00:00Z }\n`);
    assert.match(outsideWindow(q!.when!, NOW)!, /not before 2026-12-03/);
  });
});

describe('grant decisions', () => {
  const shop = policy(SHOP);
  it('grants a delegation: the client becomes the actor, the ttl at most 5 minutes', () => {
    const d = decideGrant(shop, req({}));
    assert.ok(d.granted);
    assert.deepEqual(d.actors, [WEB]);
    assert.equal(d.ttlMs, 300_000);
    assert.match(d.reason, /granted by TokenPolicy shop/);
  });
  it('an exchange of the client own token has no actor', () => {
    const d = decideGrant(shop, req({ subject: svid(WEB) }));
    assert.ok(d.granted);
    assert.deepEqual(d.actors, []);
  });
  it('the policy lowers the ttl, and the token never outlives the subject token', () => {
    const d = decideGrant(policy(`${SHOP}  maxTtl: 1m\n`), req({}));
    assert.ok(d.granted && d.ttlMs === 60_000);
    const e = decideGrant(shop, req({ subject: { ...svid(USER), expiresAt: NOW + 20_000 } }));
    assert.ok(e.granted && e.ttlMs === 20_000);
  });
  const refusals: Array<[string, GrantRequest, string, RegExp, string?]> = [
    [
      'a client no policy names',
      req({ client: `${TD}/ns/other/x` }),
      'ERR_TOKEN_CLIENT_UNAUTHORIZED',
      /no TokenPolicy lets spiffe:\/\/example.org\/ns\/other\/x/,
    ],
    ['another audience', req({ audience: `${TD}/ns/bank/vault` }), 'ERR_TOKEN_TARGET_INVALID', /does not allow .* tokens for audience/],
    ['a scope the policy does not grant', req({ scopes: ['orders:read', 'billing:write'] }), 'ERR_TOKEN_SCOPE_INVALID', /does not grant billing:write/],
    ['no scope', req({ scopes: [] }), 'ERR_TOKEN_SCOPE_INVALID', /scope is required/],
    [
      'a subject of a trust domain no policy names',
      req({ subject: svid('spiffe://other.org/users/bob') }),
      'ERR_TOKEN_GRANT_INVALID',
      /on behalf of spiffe:\/\/other.org/,
    ],
    [
      'scopes wider than the subject token',
      req({ subject: { ...svid(USER), kind: 'access-token', scopes: ['orders:read'], actors: [BILLING] }, scopes: ['orders:read', 'orders:write'] }),
      'ERR_TOKEN_SCOPE_INVALID',
      /scopes only narrow along a chain: orders:write/,
    ],
    [
      'a loop in the act chain',
      req({ subject: { ...svid(USER), kind: 'access-token', scopes: ['orders:read'], actors: [BILLING, WEB] } }),
      'ERR_TOKEN_GRANT_INVALID',
      /the act chain loops: .*web appears twice/,
    ],
    [
      'a chain deeper than the policy allows',
      req({ subject: { ...svid(USER), kind: 'access-token', scopes: ['orders:read'], actors: [`${TD}/a`, `${TD}/b`, `${TD}/c`] } }),
      'ERR_TOKEN_GRANT_INVALID',
      /4 actors deep; TokenPolicy shop allows 3/,
    ],
    [
      'a chain deeper than 5 whatever the policy',
      req({ subject: { ...svid(USER), kind: 'access-token', scopes: ['orders:read'], actors: [1, 2, 3, 4, 5].map((i) => `${TD}/a${i}`) } }),
      'ERR_TOKEN_GRANT_INVALID',
      /never more than 5/,
    ],
    ['an expired subject token', req({ subject: { ...svid(USER), expiresAt: NOW - 1 } }), 'ERR_TOKEN_GRANT_INVALID', /expired/],
    ['an actor token naming someone else', req({ actor: BILLING }), 'ERR_TOKEN_GRANT_INVALID', /a client acts only as itself/],
    ['a token type the policy does not issue', req({ requestedTokenType: TOKEN_TYPE_TXN }), 'ERR_TOKEN_CLIENT_UNAUTHORIZED', /does not issue/],
  ];
  const jwtOnly = policy(SHOP.replace('  requestedTokenTypes: [jwt, txn_token]\n', ''));
  for (const [name, r, code, reason] of refusals)
    it(`refuses ${name}: ${code}`, () => {
      const d = decideGrant(jwtOnly, r);
      assert.equal(d.granted, false);
      assert.ok(!d.granted);
      assert.equal(d.code, code);
      assert.match(d.reason, reason);
    });
  it('with no TokenPolicy at all, nothing is granted', () => {
    const d = decideGrant([], req({}));
    assert.ok(!d.granted && d.code === 'ERR_TOKEN_CLIENT_UNAUTHORIZED' && /there are none/.test(d.reason));
  });
  it('checkChain: every earlier actor must be a client of the policy too', () => {
    const chained = req({ subject: { ...svid(USER), kind: 'access-token', scopes: ['orders:read'], actors: [`${TD}/ns/batch/cron`] } });
    assert.ok(decideGrant(shop, chained).granted);
    const d = decideGrant(policy(`${SHOP}  checkChain: true\n`), chained);
    assert.ok(!d.granted && d.code === 'ERR_TOKEN_CLIENT_UNAUTHORIZED');
    assert.match(d.reason, /earlier actor spiffe:\/\/example.org\/ns\/batch\/cron is not one of its clients/);
  });
  it('outside its time window a policy grants nothing, and says so', () => {
    const d = decideGrant(policy(`${SHOP}  when: { hours: "00:00-06:00" }\n`), req({}));
    assert.ok(!d.granted && /outside the time window \(wed 10:30 UTC\)/.test(d.reason));
  });
  it('the refusal names the policy that came closest', () => {
    const set = [...policy(`  clients: [${TD}/ns/x/*]\n  subjects: [${TD}/**]\n  audiences: [${ORDERS}]\n  scopes: [a]\n`, 'a-far'), ...shop];
    const d = decideGrant(set, req({ scopes: ['billing:write'] }));
    assert.ok(!d.granted && d.policy === 'shop' && d.code === 'ERR_TOKEN_SCOPE_INVALID');
  });
});
