/** The change hub over real stores and a real CA: what wakes a waiting agent, and what does not. */
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CertificateAuthority } from '../ca/ca.ts';
import { openStore } from '../store/open.ts';
import type { Store } from '../store/types.ts';
import { ChangeHub } from './hub.ts';

const H = 3_600_000;
const AGENT = 'spiffe://hub.test/writ/agent/a';
const OTHER = 'spiffe://hub.test/writ/agent/b';
const entry = (parentId: string, n: number) => ({
  spiffeId: `spiffe://hub.test/w${n}`,
  parentId,
  selectors: [`unix:uid:${n}`],
  x509SvidTtl: 3600,
  jwtSvidTtl: 300,
  dnsNames: [],
  federatesWith: [],
  admin: false,
  hint: '',
  expiresAt: null,
});
const settle = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('change hub', () => {
  let dir: string;
  let a: Store;
  let b: Store;
  let now = Date.UTC(2026, 0, 1);
  const clock = (): number => now;
  const caOf = (store: Store, serverId: string): CertificateAuthority =>
    new CertificateAuthority({
      store,
      trustDomain: 'hub.test',
      dataDir: join(dir, serverId),
      serverId,
      keyType: 'ec-p256',
      caTtlMs: 24 * H,
      x509SvidTtlMs: H,
      jwtSvidTtlMs: 5 * 60_000,
      clock,
    });
  let ca: CertificateAuthority;
  let hub: ChangeHub;
  const socket = new EventEmitter();
  const forever = (): number => Date.now() + 600_000;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'writ-hub-'));
    // Two replicas: two stores over one database.
    a = await openStore({ db: `sqlite:${join(dir, 'writ.db')}`, dataDir: dir });
    b = await openStore({ db: `sqlite:${join(dir, 'writ.db')}`, dataDir: dir });
    ca = caOf(a, 's1');
    await ca.rotate();
    hub = new ChangeHub({ store: a, ca, clock, breakGlass: ['spiffe://hub.test/admin'], pollMs: 20, ackFlushMs: 5 });
  });
  after(async () => {
    hub.close();
    await a.close();
    await b.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('a CA rotation wakes waiting polls, and their snapshot has the new bundle before the CA reloaded it', { timeout: 30_000 }, async () => {
    const first = await hub.snapshot();
    const waiting = hub.wait(forever(), socket, AGENT, hub.generation);
    now += 13 * H; // past half the CA's life: a successor is prepared and published
    const rotating = ca.rotate();
    await waiting;
    const snap = await hub.snapshot();
    await rotating;
    assert.notEqual(snap.bundlesVersion, first.bundlesVersion);
    const keys = (JSON.parse(snap.bundles) as { bundle: { keys: Array<{ use: string }> } }).bundle.keys.filter((k) => k.use === 'x509-svid');
    assert.equal(keys.length, 2, 'the prepared authority is in the bundle agents get');
  });

  it("another replica's writes wake polls through the change stamp, its CA rotation included", { timeout: 30_000 }, async () => {
    const first = await hub.snapshot();
    let waiting = hub.wait(forever(), socket, AGENT, hub.generation);
    await b.putQuarantine({ spiffeId: 'spiffe://hub.test/bad', reason: 'test', createdBy: 't', createdAt: now, expiresAt: null });
    await waiting;
    const quarantined = await hub.snapshot();
    assert.ok(quarantined.quarantineVersion > first.quarantineVersion);
    assert.deepEqual(JSON.parse(quarantined.quarantine), {
      version: String(quarantined.quarantineVersion),
      ids: ['spiffe://hub.test/bad'],
      breakGlass: ['spiffe://hub.test/admin'],
    });
    waiting = hub.wait(forever(), socket, AGENT, hub.generation);
    await caOf(b, 's2').rotate();
    await waiting;
    const keys = (JSON.parse((await hub.snapshot()).bundles) as { bundle: { keys: Array<{ use: string }> } }).bundle.keys;
    assert.equal(keys.filter((k) => k.use === 'x509-svid').length, 3, "the other replica's authority reached this server's agents");
  });

  it("an entry write wakes the polls of the agents it concerns only, also past the second's stamp poll; another replica's wakes all", async () => {
    await hub.snapshot();
    const woken: string[] = [];
    const poll = (agent: string, s = new EventEmitter()) => hub.wait(forever(), s, agent, hub.generation).then(() => woken.push(agent));
    const closeB = new EventEmitter();
    const a1 = poll(AGENT);
    const a2 = poll(AGENT);
    const bPoll = poll(OTHER, closeB);
    await a.createEntries([entry(AGENT, 1)], now);
    await Promise.all([a1, a2]);
    assert.deepEqual(woken, [AGENT, AGENT], "both of A's polls woke");
    await settle(100); // five stamp polls (every 20 ms): the stamp moved by this server's own write only
    assert.deepEqual(woken, [AGENT, AGENT], "B's poll still waits");
    // A poll that looked before a change returns at once, whoever the change was for.
    const looked = hub.generation;
    await a.createEntries([entry(AGENT, 2)], now);
    await hub.wait(forever(), new EventEmitter(), OTHER, looked);
    // Another replica's write: this server cannot tell whose it was from the stamp, and wakes all.
    await b.createEntries([entry(AGENT, 3)], now);
    await bPoll;
    assert.deepEqual(woken, [AGENT, AGENT, OTHER]);
    // A closed connection ends its wait and leaves nothing behind to wake.
    const gone = new EventEmitter();
    const cut = hub.wait(forever(), gone, OTHER, hub.generation);
    gone.emit('close');
    await cut;
    closeB.emit('close');
  });

  it('a quarantine add wakes every one of a thousand waiting polls (released over several turns), each to a snapshot that has it', async () => {
    await hub.snapshot();
    const ids = Array.from({ length: 1000 }, (_, i) => `spiffe://hub.test/writ/agent/many-${i}`);
    const seen = await Promise.all([
      ...ids.map((id) => hub.wait(forever(), new EventEmitter(), id, hub.generation).then(async () => (await hub.snapshot()).quarantine)),
      a.putQuarantine({ spiffeId: 'spiffe://hub.test/bad', reason: 't', createdBy: 't', createdAt: now, expiresAt: null }).then(() => undefined),
    ]);
    const answers = seen.slice(0, ids.length);
    assert.ok(
      answers.every((q) => q !== undefined && (JSON.parse(q) as { ids: string[] }).ids.includes('spiffe://hub.test/bad')),
      'every woken poll answers with the new quarantine',
    );
  });

  it('writes no sync answer depends on wake nobody; an eviction makes every poll re-read its agent', async () => {
    const snap = hub.snapshot();
    const generation = hub.agentsGeneration;
    const agent = {
      spiffeId: 'spiffe://hub.test/writ/agent/n',
      nodeName: 'n',
      attestationType: 'join_token',
      selectors: [],
      serial: '01',
      expiresAt: now + H,
      banned: false,
      createdAt: now,
      updatedAt: now,
    };
    await a.upsertAgent(agent); // an attestation or renewal
    await a.addDecisions([
      {
        id: 'd1',
        at: now,
        from: '',
        to: 'spiffe://hub.test/x',
        action: 'GET /',
        decision: 'deny',
        reason: 'NO_POLICY_LOADED',
        policyRevision: 0,
        rule: '',
        reporter: agent.spiffeId,
      },
    ]);
    await a.createJoinToken({ hash: 'h', nodeName: 'n2', expiresAt: now + H, createdAt: now });
    assert.equal(hub.snapshot(), snap, 'the shared snapshot is still the one read before');
    assert.equal(hub.agentsGeneration, generation);
    await a.deleteAgent(agent.spiffeId);
    assert.equal(hub.agentsGeneration, generation + 1);
    assert.notEqual(hub.snapshot(), snap);
  });

  it('acknowledgements are written when what an agent enforces changes, and as a heartbeat', async () => {
    const id = 'spiffe://hub.test/writ/agent/acker';
    await a.upsertAgent({
      spiffeId: id,
      nodeName: 'acker',
      attestationType: 'join_token',
      selectors: [],
      serial: '02',
      expiresAt: now + H,
      banned: false,
      createdAt: now,
      updatedAt: now,
    });
    const acked = async () => {
      await hub.flushAcks();
      return (await a.listPolicyAcks()).find((x) => x.spiffeId === id);
    };
    hub.acknowledge(id, { policyRevision: 3, quarantineVersion: 0 });
    assert.deepEqual(await acked(), { spiffeId: id, policyRevision: 3, quarantineVersion: 0, ackedAt: now });
    const at = now;
    now += 1000;
    hub.acknowledge(id, { policyRevision: 3, quarantineVersion: 0 });
    assert.equal((await acked())?.ackedAt, at, 'the same report within 30 s is not written again');
    hub.acknowledge(id, { policyRevision: 3, quarantineVersion: 4 });
    assert.deepEqual(await acked(), { spiffeId: id, policyRevision: 3, quarantineVersion: 4, ackedAt: now }, 'a new quarantine version is');
    now += 31_000;
    hub.acknowledge(id, { policyRevision: 3, quarantineVersion: 4 });
    assert.equal((await acked())?.ackedAt, now, 'and a heartbeat after 30 s');
  });
});
