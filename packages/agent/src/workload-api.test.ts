/** The Workload API server against a real agent on a fake server client, called over a real Unix socket with the SDK's gRPC client. */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { GRPC_STATUS, GrpcClient, GrpcError, fields } from '@writ/sdk/internal';
import { Agent } from './agent.ts';
import { FakeServer, fakeEntry } from './testing/fake-server.ts';
import { WorkloadApiServer } from './workload-api.ts';

const WHO_AM_I = '/writ.agent.v1.Debug/WhoAmI';
const dir = mkdtempSync(join(tmpdir(), 'writ-wapi-'));
const server = new FakeServer();
const log = pino({ level: 'silent' });
const agent = new Agent({ serverUrl: 'https://fake.invalid', caPem: server.ca.pem, joinToken: server.joinToken('node-a'), dataDir: dir, log, client: server });
const api = new WorkloadApiServer({ agent, socketPath: join(dir, 'api.sock'), log });
const client = new GrpcClient(`unix://${join(dir, 'api.sock')}`);
const uid = process.getuid!();

before(async () => {
  await agent.start();
  await api.listen();
});
after(async () => {
  client.close();
  agent.stop();
  await api.close();
  rmSync(dir, { recursive: true, force: true });
});

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
