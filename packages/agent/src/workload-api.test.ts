/**
 * The Workload API server over a real Unix socket, called with the SDK's gRPC client: against a real
 * agent on a fake server client (Debug/WhoAmI), and against a fake of what it needs of the agent
 * (testing/fake-agent.ts) for the JWT-SVID methods and the authz Check.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import {
  GRPC_STATUS,
  GrpcClient,
  GrpcError,
  Writer,
  decodeJwtSvidResponse,
  decodeValidateJwtSvidResponse,
  encodeJwtSvidRequest,
  encodeValidateJwtSvidRequest,
  fields,
} from '@writ/sdk/internal';
import { validateJwtSvid } from '@writ/spiffe';
import { Agent } from './agent.ts';
import { FakeAgent } from './testing/fake-agent.ts';
import { FakeCa, FakeServer, fakeEntry } from './testing/fake-server.ts';
import { WorkloadApiServer } from './workload-api.ts';

const WHO_AM_I = '/writ.agent.v1.Debug/WhoAmI';
const dir = mkdtempSync(join(tmpdir(), 'writ-wapi-'));
const server = new FakeServer();
const log = pino({ level: 'silent' });
const agent = new Agent({ serverUrl: 'https://fake.invalid', caPem: server.ca.pem, joinToken: server.joinToken('node-a'), dataDir: dir, log, client: server });
const api = new WorkloadApiServer({ agent, socketPath: join(dir, 'api.sock'), log });
const client = new GrpcClient(`unix://${join(dir, 'api.sock')}`);
const uid = process.getuid!();

// The same server class against a fake of the agent, on a socket of its own.
const fake = new FakeAgent();
const fakeApi = new WorkloadApiServer({ agent: fake, socketPath: join(dir, 'fake.sock'), log });
const fakeClient = new GrpcClient(`unix://${join(dir, 'fake.sock')}`);

before(async () => {
  await agent.start();
  await api.listen();
  await fakeApi.listen();
});
after(async () => {
  client.close();
  fakeClient.close();
  agent.stop();
  await api.close();
  await fakeApi.close();
  rmSync(dir, { recursive: true, force: true });
});

const HEADER = { 'workload.spiffe.io': 'true' };
const M = '/SpiffeWorkloadAPI/';
const WEB = 'spiffe://fake.test/ns/web';
const API = 'spiffe://fake.test/ns/api';
const ORDERS = 'spiffe://fake.test/ns/orders';
/** Rejects with a GrpcError of `code` whose message matches `message`. */
const grpcError =
  (code: number, message?: RegExp) =>
  (e: unknown): boolean =>
    e instanceof GrpcError && e.code === code && (message === undefined || message.test(e.message));

function decodeWhoAmI(buf: Buffer): { selectors: string[]; spiffeIds: string[]; agentId: string } {
  const out = { selectors: [] as string[], spiffeIds: [] as string[], agentId: '' };
  for (const f of fields(buf)) {
    if (f.wire !== 2) continue;
    if (f.field === 1) out.selectors.push(f.data.toString('utf8'));
    else if (f.field === 2) out.spiffeIds.push(f.data.toString('utf8'));
    else if (f.field === 3) out.agentId = f.data.toString('utf8');
  }
  return out;
}

describe('writ.agent.v1.Debug/WhoAmI', () => {
  it('refuses a call without the security header (InvalidArgument)', async () => {
    await assert.rejects(client.unary(WHO_AM_I, Buffer.alloc(0), {}), (e) => e instanceof GrpcError && e.code === GRPC_STATUS.INVALID_ARGUMENT);
  });

  it('a caller with no identity still learns its selectors and the agent ID', async () => {
    const r = decodeWhoAmI(await client.unary(WHO_AM_I, Buffer.alloc(0), { 'workload.spiffe.io': 'true' }));
    assert.ok(r.selectors.includes(`unix:uid:${uid}`), r.selectors.join());
    assert.ok(
      r.selectors.some((s) => s.startsWith('unix:sha256:')),
      'the executable hash is among them',
    );
    assert.deepEqual(r.spiffeIds, []);
    assert.equal(r.agentId, 'spiffe://fake.test/writ/agent/node-a');
  });

  it('lists the identities the caller gets, each once', async () => {
    server.put(fakeEntry('e1', 'spiffe://fake.test/ns/web', [`unix:uid:${uid}`]));
    server.put(fakeEntry('e2', 'spiffe://fake.test/ns/web', [`unix:uid:${uid}`, `unix:gid:${process.getgid!()}`]));
    server.put(fakeEntry('e3', 'spiffe://fake.test/ns/other', ['unix:uid:424242']));
    const deadline = Date.now() + 10_000;
    let r = decodeWhoAmI(await client.unary(WHO_AM_I, Buffer.alloc(0), { 'workload.spiffe.io': 'true' }));
    while (r.spiffeIds.length === 0 && Date.now() < deadline) {
      await new Promise((res) => setTimeout(res, 20));
      r = decodeWhoAmI(await client.unary(WHO_AM_I, Buffer.alloc(0), { 'workload.spiffe.io': 'true' }));
    }
    assert.deepEqual(r.spiffeIds, ['spiffe://fake.test/ns/web']);
  });
});

describe('SpiffeWorkloadAPI/FetchJWTSVID (against a fake agent)', () => {
  const fetch = (audience: string[], spiffeId = '') =>
    fakeClient.unary(`${M}FetchJWTSVID`, encodeJwtSvidRequest({ audience, spiffeId }), HEADER).then(decodeJwtSvidResponse);

  it('refuses a request with no audience, or an empty one (InvalidArgument), before asking the agent', async () => {
    fake.setEntries([fakeEntry('w', WEB, [`unix:uid:${uid}`])]);
    const asked = fake.jwtRequests.length;
    await assert.rejects(fetch([]), grpcError(GRPC_STATUS.INVALID_ARGUMENT, /audience must be specified/));
    await assert.rejects(fetch(['db', '']), grpcError(GRPC_STATUS.INVALID_ARGUMENT, /audience must be specified/));
    assert.equal(fake.jwtRequests.length, asked, 'no token was minted');
  });

  it('refuses a caller with no identity (PermissionDenied)', async () => {
    fake.setEntries([fakeEntry('o', WEB, ['unix:uid:424242'])]);
    await assert.rejects(fetch(['db']), grpcError(GRPC_STATUS.PERMISSION_DENIED, /no identity issued/));
  });

  it('answers a token for each identity of the caller; the spiffe_id filter picks one, and refuses one the caller does not have', async () => {
    fake.setEntries([fakeEntry('w', WEB, [`unix:uid:${uid}`]), fakeEntry('a', API, [`unix:uid:${uid}`]), fakeEntry('o', ORDERS, ['unix:uid:424242'])]);
    const all = await fetch(['db']);
    assert.deepEqual(all.map((s) => s.spiffeId).sort(), [API, WEB]);
    const bundles = new Map([['fake.test', fake.ca.bundle]]);
    for (const s of all) assert.equal(validateJwtSvid(s.svid, bundles, { audience: 'db' }).spiffeId.uri, s.spiffeId, 'each token is for its own ID');
    const one = await fetch(['db', 'cache'], API);
    assert.deepEqual(
      one.map((s) => s.spiffeId),
      [API],
    );
    assert.deepEqual(fake.jwtRequests.at(-1), { spiffeId: API, audience: ['db', 'cache'] });
    await assert.rejects(fetch(['db'], ORDERS), grpcError(GRPC_STATUS.PERMISSION_DENIED, /not entitled to spiffe:\/\/fake.test\/ns\/orders/));
  });
});

describe('SpiffeWorkloadAPI/ValidateJWTSVID (against a fake agent)', () => {
  const validate = (svid: string, audience: string) =>
    fakeClient.unary(`${M}ValidateJWTSVID`, encodeValidateJwtSvidRequest({ audience, svid }), HEADER).then(decodeValidateJwtSvidResponse);

  it('a good token: its SPIFFE ID and claims', async () => {
    fake.setEntries([fakeEntry('o', ORDERS, [`unix:uid:${uid}`])]);
    const r = await validate(fake.ca.signJwt(WEB, ['spiffe://fake.test/ns/orders']), ORDERS);
    assert.equal(r.spiffeId, WEB);
    assert.equal(r.claims['sub'], WEB);
    assert.equal(r.claims['aud'], ORDERS);
  });

  it('a token for another audience, or with a signature no key of the bundle made, is InvalidArgument', async () => {
    fake.setEntries([fakeEntry('o', ORDERS, [`unix:uid:${uid}`])]);
    await assert.rejects(validate(fake.ca.signJwt(WEB, ['spiffe://fake.test/ns/other']), ORDERS), grpcError(GRPC_STATUS.INVALID_ARGUMENT, /audience/));
    // Another CA of the same trust domain: same kid, another key.
    await assert.rejects(
      validate(new FakeCa('fake.test').signJwt(WEB, [ORDERS]), ORDERS),
      grpcError(GRPC_STATUS.INVALID_ARGUMENT, /signature does not verify/),
    );
    await assert.rejects(validate('not-a-jwt', ORDERS), grpcError(GRPC_STATUS.INVALID_ARGUMENT));
  });
});

describe('writ.authz.v1.Authorizer/Check (against a fake agent)', () => {
  const CHECK = '/writ.authz.v1.Authorizer/Check';
  const POLICY = `apiVersion: writ.dev/v1
kind: AccessPolicy
metadata: { name: orders }
spec:
  to: ${ORDERS}
  rules: [{ effect: allow, from: ["${WEB}"] }]
`;
  const check = async (from: string, to = ORDERS) => {
    const res = await fakeClient.unary(CHECK, new Writer().string(1, from).string(2, to).string(3, 'GET /orders').finish(), HEADER);
    const out = { allowed: false, decision: '', reason: '', rule: '', revision: 0, decisionId: '' };
    for (const f of fields(res)) {
      if (f.field === 1 && f.wire === 0) out.allowed = f.int === 1;
      else if (f.field === 5 && f.wire === 0) out.revision = f.int;
      else if (f.wire === 2) {
        const v = f.data.toString('utf8');
        if (f.field === 2) out.decision = v;
        else if (f.field === 3) out.reason = v;
        else if (f.field === 4) out.rule = v;
        else if (f.field === 6) out.decisionId = v;
      }
    }
    return out;
  };

  it('allows what the policy allows, with the rule and revision, and logs the decision', async () => {
    fake.setEntries([fakeEntry('o', ORDERS, [`unix:uid:${uid}`])]);
    fake.setPolicy(POLICY, 4);
    const r = await check(WEB);
    assert.deepEqual(
      { ...r, decisionId: undefined },
      { allowed: true, decision: 'allow', reason: 'ALLOW_RULE', rule: 'orders#0', revision: 4, decisionId: undefined },
    );
    const logged = fake.decisions.at(-1) as { id: string; decision: string; from: string; to: string };
    assert.deepEqual([logged.id, logged.decision, logged.from, logged.to], [r.decisionId, 'allow', WEB, ORDERS]);
  });

  it('denies what it does not, with its reason and the decision id that was logged', async () => {
    fake.setEntries([fakeEntry('o', ORDERS, [`unix:uid:${uid}`])]);
    fake.setPolicy(POLICY, 4);
    const r = await check('spiffe://fake.test/ns/admin');
    assert.equal(r.allowed, false);
    assert.equal(r.decision, 'deny');
    assert.equal(r.reason, 'NO_MATCHING_ALLOW');
    assert.match(r.decisionId, /^[0-9a-f-]{36}$/);
    const logged = fake.decisions.at(-1) as { id: string; decision: string; reason: string };
    assert.deepEqual([logged.id, logged.decision, logged.reason], [r.decisionId, 'deny', 'NO_MATCHING_ALLOW']);
  });

  it('refuses a "to" that is not one of the caller\'s identities (PermissionDenied), deciding nothing', async () => {
    fake.setEntries([fakeEntry('o', ORDERS, [`unix:uid:${uid}`])]);
    const n = fake.decisions.length;
    await assert.rejects(check(WEB, API), grpcError(GRPC_STATUS.PERMISSION_DENIED, /must be one of the caller's own identities/));
    assert.equal(fake.decisions.length, n);
  });
});

describe('container attestation and PID reuse', () => {
  it("refuses the call when the caller's PID belongs to another process once the container attestors have answered", async () => {
    // A process table of our own: this process's stat and exe, so the start time can change under the attestor.
    const proc = join(dir, 'proc');
    const me = join(proc, String(process.pid));
    mkdirSync(me, { recursive: true });
    const stat = readFileSync(`/proc/${process.pid}/stat`, 'utf8');
    writeFileSync(join(me, 'stat'), stat);
    symlinkSync(process.execPath, join(me, 'exe'));
    let reuse = false;
    const attestor = async (): Promise<string[]> => {
      if (reuse) {
        // The caller died and another process got its PID while the runtime answered: field 22 (start time) changes.
        const head = stat.slice(0, stat.lastIndexOf(')') + 2);
        const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
        rest[19] = String(Number(rest[19]) + 1);
        writeFileSync(join(me, 'stat'), head + rest.join(' '));
      }
      return ['docker:label:app:web'];
    };
    const sock = join(dir, 'reuse.sock');
    const srv = new WorkloadApiServer({ agent, socketPath: sock, log, proc, attestors: [attestor] });
    await srv.listen();
    try {
      const ask = async (): Promise<{ selectors: string[] }> => {
        const c = new GrpcClient(`unix://${sock}`);
        try {
          return decodeWhoAmI(await c.unary(WHO_AM_I, Buffer.alloc(0), { 'workload.spiffe.io': 'true' }));
        } finally {
          c.close();
        }
      };
      assert.ok((await ask()).selectors.includes('docker:label:app:web'), 'while the PID is the caller, the attestor adds its selectors');
      writeFileSync(join(me, 'stat'), stat);
      reuse = true;
      await assert.rejects(
        ask(),
        (e) => e instanceof GrpcError && e.code === GRPC_STATUS.PERMISSION_DENIED && /changed while its container was being attested/.test(e.message),
      );
    } finally {
      await srv.close();
    }
  });
});
