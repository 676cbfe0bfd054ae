/**
 * A Kubernetes node for e2e tests without a cluster: a fake kubelet speaking the real PodList JSON
 * over TLS, and workloads that are real `writ svid watch` processes whose cgroup file (under a fake
 * /proc) names their pod and container, as the k8s attestor reads it.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createServer as createHttpsServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { OID, buildName, issueCertificate, toPem } from '@writ/spiffe';
import { WRIT } from './helpers.ts';

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
