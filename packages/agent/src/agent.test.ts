/** The agent against a fake server client (testing/fake-server.ts): attestation, answer checks, sync, rotation, re-attestation. */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, it } from 'node:test';
import pino from 'pino';
import { WritError, validateJwtSvid } from '@writ/spiffe';
import { Agent, type AgentOptions } from './agent.ts';
import { csrFor, generateKey } from './keys.ts';
import type { SyncAnswer } from '@writ/protocol';
import { applySync } from './sync.ts';
import type { AgentState } from './state.ts';
import { FakeCa, FakeServer, fakeEntry } from './testing/fake-server.ts';

const dirs: string[] = [];
const agents: Agent[] = [];
afterEach(() => {
  for (const a of agents.splice(0)) a.stop();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function logger(): { log: AgentOptions['log']; lines: string[] } {
  const lines: string[] = [];
  return { log: pino({ level: 'debug' }, { write: (s: string) => void lines.push(s) }), lines };
}

function newAgent(server: FakeServer, o: Partial<AgentOptions> = {}): { agent: Agent; lines: string[]; dataDir: string } {
  const { log, lines } = logger();
  const dataDir = o.dataDir ?? mkdtempSync(join(tmpdir(), 'writ-agent-unit-'));
  if (!o.dataDir) dirs.push(dataDir);
  const agent = new Agent({ serverUrl: 'https://fake.invalid', caPem: server.ca.pem, dataDir, log, client: server, syncWaitSeconds: 5, ...o });
  agents.push(agent);
  return { agent, lines, dataDir };
}

async function waitFor<T>(what: string, fn: () => T | undefined, timeoutMs = 10_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const attested = (lines: string[]): boolean => lines.some((l) => l.includes('"attested to the server"'));

describe('node attestation checks the answer before anything is stored', () => {
  it('a good answer: attested as the agent ID, synced, and the workload SVID signed for its entry', async () => {
    const server = new FakeServer();
    server.put(fakeEntry('e1', 'spiffe://fake.test/ns/web', ['unix:uid:0']));
    const { agent, lines } = newAgent(server, { joinToken: server.joinToken('node-a') });
    await agent.start();
    assert.equal(agent.spiffeId, 'spiffe://fake.test/writ/agent/node-a');
    assert.ok(attested(lines));
    const entry = await waitFor('the entry', () => agent.entriesFor(['unix:uid:0'])[0]);
    const svid = await waitFor('its SVID', () => agent.svidOf(entry));
    assert.equal(svid.chain[0]!.uris[0], 'spiffe://fake.test/ns/web');
  });

  /** A well-formed attestation answer (so the agent's own checks are what refuse it). */
  const whole = (s: FakeServer, spiffeId: string, svid: string | undefined): Record<string, unknown> => ({
    spiffeId,
    selectors: [],
    svid,
    bundle: s.ca.pem,
    expiresAt: new Date(Date.now() + 3600_000).toISOString(),
  });
  const bogus: Array<[string, (s: FakeServer, csr: string, b: Record<string, unknown>) => unknown, RegExp]> = [
    ['no SVID at all', (s) => whole(s, 'spiffe://fake.test/writ/agent/node-a', undefined), /malformed attestation answer: svid/],
    ['an empty answer', () => ({}), /malformed attestation answer: spiffeId/],
    ['an answer that is not an object', () => [], /malformed attestation answer: not an object/],
    [
      'an SVID from a CA the bundle does not hold',
      (s, csr) => whole(s, 'spiffe://fake.test/writ/agent/node-a', new FakeCa('fake.test').sign('spiffe://fake.test/writ/agent/node-a', csr)),
      /no path/,
    ],
    ['a workload ID instead of an agent ID', (s, csr) => whole(s, 'spiffe://fake.test/ns/web', s.ca.sign('spiffe://fake.test/ns/web', csr)), /spiffeId is not/],
    [
      'an SVID for another ID than the answer names',
      (s, csr) => whole(s, 'spiffe://fake.test/writ/agent/node-a', s.ca.sign('spiffe://fake.test/writ/agent/other', csr)),
      /names spiffe:\/\/fake.test\/writ\/agent\/other, expected spiffe:\/\/fake.test\/writ\/agent\/node-a/,
    ],
    [
      'an SVID for another key than the agent generated',
      (s) => whole(s, 'spiffe://fake.test/writ/agent/node-a', s.ca.sign('spiffe://fake.test/writ/agent/node-a', otherCsr())),
      /not for the key this agent generated/,
    ],
  ];
  for (const [what, answer, message] of bogus) {
    it(`refuses ${what}: no "attested", no identity, nothing on disk`, async () => {
      const server = new FakeServer();
      server.answer.set('POST /v1/agent/attest/join-token', (b) => answer(server, String(b['csr']), b));
      const { agent, lines, dataDir } = newAgent(server, { joinToken: server.joinToken('node-a') });
      await assert.rejects(agent.start(), (e) => e instanceof WritError && e.code === 'ERR_REQUEST_FAILED' && message.test(e.message));
      assert.equal(agent.spiffeId, '');
      assert.ok(!attested(lines), 'never logs "attested"');
      assert.ok(!existsSync(join(dataDir, 'agent-state.json')), 'nothing stored');
      assert.equal(server.calledWith('GET', '/v1/agent/sync').length, 0, 'no sync with an unchecked identity');
    });
  }

  it('PSAT attestation answers are checked the same way', async () => {
    const server = new FakeServer();
    server.answer.set('POST /v1/agent/attest/k8s-psat', () => whole(server, 'spiffe://fake.test/writ/agent/k8s_psat/c/n', ''));
    const dir = mkdtempSync(join(tmpdir(), 'writ-psat-'));
    dirs.push(dir);
    const tokenFile = join(dir, 'token');
    writeFileSync(tokenFile, 'header.payload.sig');
    const { agent, lines } = newAgent(server, { psat: { cluster: 'c', tokenFile } });
    await assert.rejects(agent.start(), /malformed attestation answer: svid/);
    assert.ok(!attested(lines));
  });
});

const otherCsr = (): string => csrFor(generateKey());

describe('renewal and the SVID batch are checked too', () => {
  it('a renewal answer for another ID is refused; the agent keeps its SVID and says why', async () => {
    let now = Date.now();
    const server = new FakeServer('fake.test', () => now);
    server.svidTtlMs = 60_000;
    const { agent, lines, dataDir } = newAgent(server, { joinToken: server.joinToken('node-a'), clock: () => now });
    await agent.start();
    const before = JSON.parse(readFileSync(join(dataDir, 'agent-state.json'), 'utf8')).svidPem;
    server.answer.set('POST /v1/agent/renew', (b) => ({
      spiffeId: 'spiffe://fake.test/writ/agent/evil',
      svid: server.ca.sign('spiffe://fake.test/writ/agent/evil', String(b['csr'])),
      bundle: server.ca.pem,
      expiresAt: new Date(now + 60_000).toISOString(),
    }));
    now += 40_000; // past half life
    await waitFor('a renewal attempt', () => server.calledWith('POST', '/v1/agent/renew').length > 0);
    await waitFor('the refusal logged', () => lines.some((l) => l.includes('rotation failed') && l.includes('renewal answer was refused')));
    assert.equal(JSON.parse(readFileSync(join(dataDir, 'agent-state.json'), 'utf8')).svidPem, before, 'the old SVID is kept');
    // A good answer is taken.
    server.answer.delete('POST /v1/agent/renew');
    await waitFor('the renewal', () => lines.some((l) => l.includes('"renewed the agent SVID"')));
    assert.notEqual(JSON.parse(readFileSync(join(dataDir, 'agent-state.json'), 'utf8')).svidPem, before);
  });

  it('a signed SVID for another entry ID, another key or from an untrusted CA is not served', async () => {
    const server = new FakeServer();
    server.put(fakeEntry('e1', 'spiffe://fake.test/ns/web', ['unix:uid:0']));
    server.put(fakeEntry('e2', 'spiffe://fake.test/ns/db', ['unix:uid:0']));
    server.put(fakeEntry('e3', 'spiffe://fake.test/ns/cache', ['unix:uid:0']));
    const stranger = new FakeCa('fake.test');
    server.answer.set('POST /v1/agent/svids', (b) => ({
      svids: (b['requests'] as Array<{ entryId: string; csr: string }>).map((r) => ({
        entryId: r.entryId,
        spiffeId: server.entries.find((e) => e.id === r.entryId)!.spiffeId,
        expiresAt: new Date(Date.now() + 3600_000).toISOString(),
        svid:
          r.entryId === 'e1'
            ? server.ca.sign('spiffe://fake.test/ns/admin', r.csr)
            : r.entryId === 'e2'
              ? server.ca.sign('spiffe://fake.test/ns/db', otherCsr())
              : stranger.sign('spiffe://fake.test/ns/cache', r.csr),
      })),
    }));
    const { agent, lines } = newAgent(server, { joinToken: server.joinToken('node-a') });
    await agent.start();
    await waitFor('three refusals', () => lines.filter((l) => l.includes('ignoring a signed SVID')).length >= 3);
    for (const e of agent.entriesFor(['unix:uid:0'])) assert.equal(agent.svidOf(e), undefined, `${e.spiffeId} has no SVID`);
    server.answer.delete('POST /v1/agent/svids');
    server.changed();
    const web = agent.entriesFor(['unix:uid:0']).find((e) => e.id === 'e1')!;
    const svid = await waitFor('a good SVID', () => agent.svidOf(web));
    assert.equal(svid.chain[0]!.uris[0], 'spiffe://fake.test/ns/web');
  });
});

describe('a malformed answer of each kind is refused whole: nothing stored, a clear error', () => {
  const stateFile = (dataDir: string): AgentState => JSON.parse(readFileSync(join(dataDir, 'agent-state.json'), 'utf8')) as AgentState;

  it('renewal: an answer without expiresAt keeps the old SVID and names the field', async () => {
    let now = Date.now();
    const server = new FakeServer('fake.test', () => now);
    server.svidTtlMs = 60_000;
    const { agent, lines, dataDir } = newAgent(server, { joinToken: server.joinToken('node-a'), clock: () => now });
    await agent.start();
    const before = stateFile(dataDir).svidPem;
    server.answer.set('POST /v1/agent/renew', (b) => ({
      spiffeId: agent.spiffeId,
      svid: server.ca.sign(agent.spiffeId, String(b['csr'])),
      bundle: server.ca.pem,
    }));
    now += 40_000; // past half life
    await waitFor('the refusal logged', () => lines.some((l) => l.includes('the server sent a malformed renewal answer: expiresAt')));
    assert.equal(stateFile(dataDir).svidPem, before, 'the old SVID is kept');
  });

  it('SVID batch: an answer without a list stores nothing; malformed items are left out, the good ones kept', async () => {
    const server = new FakeServer();
    server.put(fakeEntry('e1', 'spiffe://fake.test/ns/web', ['unix:uid:0']));
    server.put(fakeEntry('e2', 'spiffe://fake.test/ns/db', ['unix:uid:0']));
    server.answer.set('POST /v1/agent/svids', () => ({ svids: 'all of them' }));
    const { agent, lines, dataDir } = newAgent(server, { joinToken: server.joinToken('node-a') });
    await agent.start();
    await waitFor('the refusal logged', () => lines.some((l) => l.includes('the server sent a malformed signing answer: no svids')));
    assert.deepEqual(stateFile(dataDir).svids, {}, 'no SVID stored');
    // e2's SVID comes without expiresAt: left out (asked for again), e1's is kept.
    server.answer.set('POST /v1/agent/svids', (b) => ({
      svids: (b['requests'] as Array<{ entryId: string; csr: string }>).map((r) => {
        const e = server.entries.find((x) => x.id === r.entryId)!;
        const sv = { entryId: e.id, spiffeId: e.spiffeId, svid: server.ca.sign(e.spiffeId, r.csr) };
        return e.id === 'e1' ? { ...sv, expiresAt: new Date(Date.now() + 3600_000).toISOString() } : sv;
      }),
    }));
    server.changed();
    await waitFor('the malformed item logged', () =>
      lines.some((l) => l.includes('ignoring malformed SVIDs in the signing answer') && l.includes('"malformed":1')),
    );
    const [db, web] = agent.entriesFor(['unix:uid:0']);
    assert.equal(web!.id, 'e1');
    assert.ok(agent.svidOf(web!), 'the well-formed SVID is served');
    assert.equal(agent.svidOf(db!), undefined, 'the malformed one is not');
    assert.deepEqual(Object.keys(stateFile(dataDir).svids), ['e1']);
  });

  it('sync: an answer with one malformed entry applies nothing, not even the good entries beside it', async () => {
    const server = new FakeServer();
    const { agent, dataDir } = newAgent(server, { joinToken: server.joinToken('node-a') });
    await agent.start();
    await waitFor('the first sync', () => agent.connected || undefined);
    const good = fakeEntry('e9', 'spiffe://fake.test/ns/new', ['unix:uid:0'], 50);
    server.answer.set('GET /v1/agent/sync', () => ({
      revision: 50,
      full: false,
      entries: [good, { ...good, id: 'e10', spiffeId: 'not a spiffe id' }],
      removed: [],
      bundlesVersion: `v-${server.ca.cert.serialHex}.${server.bundlesEpoch}`,
    }));
    await assert.rejects(
      agent.syncOnce(),
      (e) => e instanceof WritError && e.code === 'ERR_REQUEST_FAILED' && /malformed sync answer: entry e10: spiffeId/.test(e.message),
    );
    assert.deepEqual(agent.entriesFor(['unix:uid:0']), [], 'the good entry beside it is not applied');
    assert.equal(stateFile(dataDir).entries['e9'], undefined, 'nor stored');
    assert.notEqual(stateFile(dataDir).revision, 50);
  });

  it('JWT-SVID: a malformed answer or one for another ID is refused and not cached; a good one is', async () => {
    const server = new FakeServer();
    server.put(fakeEntry('e1', 'spiffe://fake.test/ns/web', ['unix:uid:0']));
    const { agent, lines } = newAgent(server, { joinToken: server.joinToken('node-a') });
    await agent.start();
    const entry = await waitFor('the entry', () => agent.entriesFor(['unix:uid:0'])[0]);
    const web = entry.spiffeId;
    const later = (): string => new Date(Date.now() + 300_000).toISOString();
    /** The server answers `token` (in a well-formed envelope that names the entry's ID). */
    const answers = (token: string): void => void server.answer.set('POST /v1/agent/jwt-svid', () => ({ spiffeId: web, token, expiresAt: later() }));
    const refused: Array<[string, () => void, RegExp]> = [
      [
        'a malformed envelope',
        () => server.answer.set('POST /v1/agent/jwt-svid', () => ({ spiffeId: web, token: 'x.y.z', expiresAt: 'soon' })),
        /the server sent a malformed JWT-SVID answer: expiresAt/,
      ],
      [
        'no token',
        () => server.answer.set('POST /v1/agent/jwt-svid', () => ({ spiffeId: web, expiresAt: later() })),
        /the server sent a malformed JWT-SVID answer: token/,
      ],
      [
        'an envelope for another ID',
        () =>
          server.answer.set('POST /v1/agent/jwt-svid', () => ({
            spiffeId: 'spiffe://fake.test/ns/admin',
            token: server.ca.signJwt('spiffe://fake.test/ns/admin', ['aud']),
            expiresAt: later(),
          })),
        /JWT-SVID answer was refused: it names spiffe:\/\/fake.test\/ns\/admin, expected spiffe:\/\/fake.test\/ns\/web/,
      ],
      ['a token that is not a JWT', () => answers('fake-jwt.e1'), /JWT-SVID answer was refused: its token does not validate: not a JWS compact serialization/],
      [
        'a token for another sub',
        () => answers(server.ca.signJwt('spiffe://fake.test/ns/admin', ['aud'])),
        /JWT-SVID answer was refused: its token's sub is spiffe:\/\/fake.test\/ns\/admin, expected spiffe:\/\/fake.test\/ns\/web/,
      ],
      [
        'a token for another audience',
        () => answers(server.ca.signJwt(web, ['other'])),
        /its token does not validate: audience "aud" is not in the token's aud claim/,
      ],
      ['a token for more audiences than asked', () => answers(server.ca.signJwt(web, ['aud', 'other'])), /its token is also for other, not asked for/],
      [
        'a token signed by a key not in the bundle (same kid)',
        () => answers(new FakeCa('fake.test').signJwt(web, ['aud'])),
        /its token does not validate: signature does not verify/,
      ],
      ['a token that has expired', () => answers(server.ca.signJwt(web, ['aud'], -120_000)), /its token does not validate: token expired at/],
      ['a token past its exp, within the leeway', () => answers(server.ca.signJwt(web, ['aud'], -5_000)), /its token expired at/],
    ];
    for (const [what, play, error] of refused) {
      play();
      const before = lines.length;
      await assert.rejects(agent.jwtSvid(entry, ['aud']), error, what);
      if (!/malformed/.test(String(error)))
        assert.ok(
          lines.slice(before).some((l) => l.includes("refused the server's JWT-SVID answer")),
          `${what}: logged`,
        );
    }
    server.answer.delete('POST /v1/agent/jwt-svid');
    const calls = server.calledWith('POST', '/v1/agent/jwt-svid').length;
    const good = await agent.jwtSvid(entry, ['aud']);
    assert.equal(server.calledWith('POST', '/v1/agent/jwt-svid').length, calls + 1, 'nothing refused was cached: the server was asked again');
    assert.equal(
      validateJwtSvid(good.token, new Map([['fake.test', server.ca.bundle]]), { audience: 'aud' }).spiffeId.uri,
      web,
      'the good token is the one served',
    );
    assert.deepEqual(server.calledWith('POST', '/v1/agent/jwt-svid').at(-1)!.body, { entryId: 'e1', audience: ['aud'] });
    assert.equal((await agent.jwtSvid(entry, ['aud'])).token, good.token, 'the good one is cached');
    assert.equal(server.calledWith('POST', '/v1/agent/jwt-svid').length, calls + 1);
  });
});

describe('applying sync answers', () => {
  const state = (): AgentState => ({
    spiffeId: 'spiffe://fake.test/writ/agent/a',
    svidPem: '',
    keyPem: '',
    revision: 3,
    bundlesVersion: 'v1',
    bundle: undefined,
    federated: {},
    entries: { a: fakeEntry('a', 'spiffe://fake.test/a', ['x']), b: fakeEntry('b', 'spiffe://fake.test/b', ['x']) },
    svids: {
      a: { chainPem: 'A', keyPem: '', notBefore: 0, expiresAt: 1, rotateAt: 1 },
      b: { chainPem: 'B', keyPem: '', notBefore: 0, expiresAt: 1, rotateAt: 1 },
    },
  });
  const answer = (r: Partial<SyncAnswer>): SyncAnswer => ({ revision: 4, full: false, entries: [], removed: [], bundlesVersion: 'v1', ...r });

  it('a full answer drops entries it does not name, with their SVIDs', () => {
    const s = state();
    const r = applySync(s, answer({ full: true, entries: [fakeEntry('a', 'spiffe://fake.test/a', ['x'])] }), () => true);
    assert.deepEqual(Object.keys(s.entries), ['a']);
    assert.deepEqual(Object.keys(s.svids), ['a'], 'an unchanged entry keeps its SVID');
    assert.equal(s.revision, 4);
    assert.ok(r.changed);
  });

  it('a changed SPIFFE ID or TTL loses its SVID (a new one is signed); removed entries go', () => {
    const s = state();
    applySync(s, answer({ entries: [{ ...fakeEntry('a', 'spiffe://fake.test/a2', ['x']) }], removed: ['b'] }), () => true);
    assert.equal(s.entries['a']!.spiffeId, 'spiffe://fake.test/a2');
    assert.deepEqual(Object.keys(s.svids), []);
    assert.deepEqual(Object.keys(s.entries), ['a']);
  });

  it('a policy that does not compile is not taken; quarantine is; an answer with nothing new changes nothing', () => {
    const s = state();
    const r = applySync(
      s,
      answer({ policy: { revision: 9, policies: { p: 'bad' } }, quarantine: { version: 'q1', ids: ['spiffe://fake.test/a'], breakGlass: [] } }),
      () => false,
    );
    assert.equal(s.policyRevision, undefined);
    assert.equal(s.quarantine?.version, 'q1');
    assert.ok(r.quarantine);
    assert.equal(applySync(s, answer({ quarantine: { version: 'q1', ids: [], breakGlass: [] } }), () => true).changed, false);
  });
});

describe('rotation', () => {
  it('a workload SVID is signed again at about half its life, with a new key', async () => {
    let now = Date.now();
    const server = new FakeServer('fake.test', () => now);
    server.put({ ...fakeEntry('e1', 'spiffe://fake.test/ns/web', ['unix:uid:0']), x509SvidTtl: 100 });
    const { agent } = newAgent(server, { joinToken: server.joinToken('node-a'), clock: () => now });
    await agent.start();
    const entry = await waitFor('the entry', () => agent.entriesFor(['unix:uid:0'])[0]);
    const first = await waitFor('the first SVID', () => agent.svidOf(entry));
    now += 40_000; // 40% of its life: not yet
    const signed = server.calledWith('POST', '/v1/agent/svids').length;
    await waitFor('a rotation round', () => server.calledWith('GET', '/v1/agent/sync').length > 0);
    assert.equal(agent.svidOf(entry)!.chain[0]!.serialHex, first.chain[0]!.serialHex);
    now += 25_000; // 65%: past half life and its jitter
    const second = await waitFor('the rotated SVID', () => {
      const s = agent.svidOf(entry);
      return s && s.chain[0]!.serialHex !== first.chain[0]!.serialHex ? s : undefined;
    });
    assert.ok(server.calledWith('POST', '/v1/agent/svids').length > signed);
    assert.ok(!second.keyPkcs8Der.equals(first.keyPkcs8Der), 'a new key each time');
  });
});

describe('re-attestation', () => {
  it('an evicted agent restarted with a new join token on the same data dir attests with it and is served', async () => {
    const server = new FakeServer();
    server.put(fakeEntry('e1', 'spiffe://fake.test/ns/web', ['unix:uid:0']));
    const first = newAgent(server, { joinToken: server.joinToken('node-a') });
    await first.agent.start();
    await waitFor('its SVID', () => first.agent.svidOf(first.agent.entriesFor(['unix:uid:0'])[0]!));
    first.agent.stop();
    server.evict('spiffe://fake.test/writ/agent/node-a');
    const token = server.joinToken('node-a');
    const again = newAgent(server, { joinToken: token, dataDir: first.dataDir });
    await again.agent.start();
    assert.ok(attested(again.lines), `attested again with the new token: ${again.lines.join('')}`);
    assert.equal(server.calledWith('POST', '/v1/agent/attest/join-token').length, 2);
    await waitFor('a sync accepted', () => again.agent.connected || undefined);
  });

  it('a new token that could not be used at start is used on the first 401', async () => {
    const server = new FakeServer();
    const first = newAgent(server, { joinToken: server.joinToken('node-a') });
    await first.agent.start();
    first.agent.stop();
    // The server is briefly away when the agent restarts with a new token: it serves its cached identity.
    server.answer.set('POST /v1/agent/attest/join-token', () => {
      throw new WritError('ERR_REQUEST_FAILED', 'server unreachable: ECONNREFUSED');
    });
    const again = newAgent(server, { joinToken: server.joinToken('node-a'), dataDir: first.dataDir });
    await again.agent.start();
    assert.ok(!attested(again.lines));
    await waitFor('connected with the cached identity', () => again.agent.connected || undefined);
    server.answer.delete('POST /v1/agent/attest/join-token');
    server.evict('spiffe://fake.test/writ/agent/node-a');
    await waitFor('attested with the new token after the 401', () => attested(again.lines) || undefined);
    await waitFor('connected again', () => again.agent.connected || undefined);
  });

  it('a restart with the token it attested with does not spend it again', async () => {
    const server = new FakeServer();
    const token = server.joinToken('node-a');
    const first = newAgent(server, { joinToken: token });
    await first.agent.start();
    first.agent.stop();
    const second = newAgent(server, { joinToken: token, dataDir: first.dataDir });
    await second.agent.start();
    assert.equal(server.calledWith('POST', '/v1/agent/attest/join-token').length, 1);
    assert.ok(!second.lines.some((l) => l.includes('refused')), 'no refused token in the log');
  });

  it('a PSAT agent evicted while running attests again by itself', async () => {
    const server = new FakeServer();
    const dir = mkdtempSync(join(tmpdir(), 'writ-psat-'));
    dirs.push(dir);
    writeFileSync(join(dir, 'token'), 'header.payload.sig');
    const { agent, lines } = newAgent(server, { psat: { cluster: 'c', tokenFile: join(dir, 'token') } });
    await agent.start();
    await waitFor('connected', () => agent.connected || undefined);
    server.evict(agent.spiffeId);
    await waitFor('attested twice', () => lines.filter((l) => l.includes('"attested to the server"')).length >= 2 || undefined);
    await waitFor('connected again', () => agent.connected || undefined);
  });

  it('decision posts refused with 401 back off instead of retrying four times a second', async () => {
    let now = Date.now();
    const server = new FakeServer('fake.test', () => now);
    const { agent, lines } = newAgent(server, { joinToken: server.joinToken('node-a'), clock: () => now });
    await agent.start();
    server.evict(agent.spiffeId);
    agent.logDecision({
      id: 'd1',
      at: now,
      from: '',
      to: 'spiffe://fake.test/x',
      action: 'tcp 1',
      decision: 'deny',
      reason: 'NO_POLICY_LOADED',
      policyRevision: 0,
      rule: '',
      latencyNs: 1,
    });
    const posts = (): number => server.calledWith('POST', '/v1/agent/decisions').length;
    await waitFor('the first refused post', () => posts() === 1 || undefined);
    // While the (frozen) clock stays, the sync loop fails three more times (0.5 s, 1 s, 2 s apart) and no post is retried.
    const syncs = server.calledWith('GET', '/v1/agent/sync').length;
    await waitFor('three more sync attempts', () => server.calledWith('GET', '/v1/agent/sync').length >= syncs + 3 || undefined);
    assert.equal(posts(), 1);
    assert.equal(lines.filter((l) => l.includes('refuses decision reports')).length, 1, 'logged once');
    now += 1001;
    await waitFor('a retry once the backoff passed', () => posts() === 2 || undefined);
    assert.equal(agent.decisionLogStats.buffered, 1, 'the decision is kept, not dropped');
  });
});

describe('federated bundles from the server', () => {
  it('x509-svid keys with no or an empty x5c are ignored and of several x5c values the first is used (X509-SVID 6.2); the rest of the bundle is kept', async () => {
    const server = new FakeServer();
    const [a, b, c] = [new FakeCa('peer.test'), new FakeCa('peer.test'), new FakeCa('peer.test')];
    const x5c = (ca: FakeCa): string => ca.cert.der.toString('base64');
    const key = (x: string[] | undefined): Record<string, unknown> => ({
      kty: 'EC',
      use: 'x509-svid',
      crv: 'P-256',
      x: 'AA',
      y: 'AA',
      ...(x ? { x5c: x } : {}),
    });
    server.federated = {
      'peer.test': {
        keys: [key(undefined), key([]), key([x5c(a), x5c(b)]), key([x5c(c)])],
        spiffe_sequence: 7,
      },
    };
    server.bundlesEpoch++;
    server.put(fakeEntry('e1', 'spiffe://fake.test/ns/web', ['unix:uid:0']));
    const { agent } = newAgent(server, { joinToken: server.joinToken('node-a') });
    await agent.start();
    const peer = await waitFor('the federated bundle', () => agent.bundle('peer.test'));
    assert.deepEqual(
      peer.x509Authorities.map((cert) => cert.der.toString('hex')).sort(),
      [a.cert.der.toString('hex'), c.cert.der.toString('hex')].sort(),
      'the keys with no or an empty x5c are skipped, the second of two x5c values is not an authority',
    );
  });
});
