/**
 * A Kubernetes node for e2e tests without a cluster: a fake kubelet speaking the real PodList JSON
 * over TLS, and workloads that are real `writ svid watch` processes whose cgroup file (under a fake
 * /proc) names their pod and container, as the k8s attestor reads it.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer as createHttpsServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { OID, buildName, issueCertificate, toPem } from '@writ/spiffe';
import pino from 'pino';
import { Agent, WorkloadApiServer, k8sAttestor } from '../../packages/agent/src/index.ts';
import { WRIT, writ, type ServerProcess } from './helpers.ts';

export interface FakeKubelet {
  readonly server: Server;
  /** `https://127.0.0.1:PORT` */
  readonly url: string;
  /** The kubelet's self-signed CA certificate, written as a PEM file (the attestor's caFile). */
  readonly caFile: string;
}

/** Starts a kubelet whose `/pods` answers the PodList of `items()` at each request; its CA goes to `dir/kubelet-ca.pem`. */
export async function startFakeKubelet(dir: string, items: () => unknown[]): Promise<FakeKubelet> {
  const k = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const cert = issueCertificate(
    {
      subject: buildName([[OID.commonName, 'kubelet']]),
      spki: k.publicKey.export({ format: 'der', type: 'spki' }),
      notBefore: new Date(Date.now() - 60_000),
      notAfter: new Date(Date.now() + 3_600_000),
      ca: true,
      uris: [],
      ipAddresses: [Buffer.from([127, 0, 0, 1])],
    },
    { cert: undefined, signer: { key: k.privateKey, keyType: 'ec-p256' } },
  );
  const caFile = join(dir, 'kubelet-ca.pem');
  writeFileSync(caFile, toPem('CERTIFICATE', cert.der));
  const server = createHttpsServer({ key: k.privateKey.export({ format: 'pem', type: 'pkcs8' }), cert: toPem('CERTIFICATE', cert.der) }, (req, res) => {
    if (req.url !== '/pods') return void ((res.statusCode = 404), res.end('{}'));
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ kind: 'PodList', apiVersion: 'v1', items: items() }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return { server, url: `https://127.0.0.1:${(server.address() as AddressInfo).port}`, caFile };
}

/**
 * A workload in pod `uid`, container `cid`: `writ svid watch` on `socket`, its cgroup file under
 * `proc` written before it can connect. Resolves once it printed its first SVID.
 */
export async function startPodWorkload(o: { socket: string; proc: string; uid: string; cid: string; name: string }): Promise<ChildProcess> {
  const child = spawn(process.execPath, [WRIT, 'svid', 'watch', '--socket', o.socket, '-o', 'json'], { stdio: ['ignore', 'pipe', 'pipe'] });
  mkdirSync(join(o.proc, String(child.pid)), { recursive: true });
  writeFileSync(
    join(o.proc, String(child.pid), 'cgroup'),
    `0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${o.uid.replace(/-/g, '_')}.slice/cri-containerd-${o.cid}.scope\n`,
  );
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  await new Promise<void>((resolve, reject) => {
    child.stdout!.once('data', () => resolve());
    child.once('exit', (code) => reject(new Error(`workload ${o.name} exited with ${code}: ${err}`)));
  });
  return child;
}

export interface K8sNodeAgent {
  readonly agent: Agent;
  readonly api: WorkloadApiServer;
  /** Stops the agent and closes its socket. */
  close(): Promise<void>;
}

/**
 * A node's agent in this process: registers `entries` under `spiffe://e2e.test/writ/agent/NODE`
 * (`writ entry create`), attests with a join token, and serves the Workload API on `socket` with
 * the k8s attestor against `kubelet` (pods found through the cgroup files under `proc`). Reports
 * its workloads every 2 s (`--workload-report-interval 2s`), so a test sees several heartbeats.
 */
export async function startK8sNodeAgent(
  srv: ServerProcess,
  o: {
    dir: string;
    node: string;
    socket: string;
    proc: string;
    kubelet: FakeKubelet;
    entries: ReadonlyArray<{ spiffeId: string; selectors: readonly string[]; extra?: readonly string[] }>;
  },
): Promise<K8sNodeAgent> {
  for (const e of o.entries) {
    const args = ['entry', 'create', '--spiffe-id', e.spiffeId, '--parent-id', `spiffe://e2e.test/writ/agent/${o.node}`];
    const r = await writ(srv, [...args, ...e.selectors.flatMap((s) => ['--selector', s]), ...(e.extra ?? [])]);
    assert.equal(r.code, 0, r.stderr);
  }
  const token = await writ(srv, ['token', 'create', '--node-name', o.node, '-o', 'json']);
  assert.equal(token.code, 0, token.stderr);
  const log = pino({ level: 'silent' });
  const agent = new Agent({
    serverUrl: srv.url,
    caPem: readFileSync(join(srv.dataDir, 'bundle.pem'), 'utf8'),
    joinToken: (JSON.parse(token.stdout) as { token: string }).token,
    dataDir: join(o.dir, 'agent'),
    log,
    syncWaitSeconds: 10,
    workloadReportMs: 2000,
  });
  const api = new WorkloadApiServer({
    agent,
    socketPath: o.socket,
    log,
    attestors: [k8sAttestor({ kubeletUrl: o.kubelet.url, caFile: o.kubelet.caFile, proc: o.proc, cacheMs: 0 })],
  });
  await agent.start();
  await api.listen();
  return {
    agent,
    api,
    async close() {
      agent.stop();
      await api.close();
    },
  };
}
