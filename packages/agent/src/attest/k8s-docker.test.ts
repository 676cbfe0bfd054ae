/** The container attestors against fakes that speak the real JSON shapes over the real transports. */
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { generateKeyPairSync } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { OID, buildName, issueCertificate, toPem } from '@writ/spiffe';
import { parseCgroup } from './cgroup.ts';
import { dockerAttestor } from './docker.ts';
import { k8sAttestor } from './k8s.ts';

const CID = 'a'.repeat(8) + '0123456789abcdef'.repeat(3) + 'b'.repeat(8);
const POD_UID = '2c48913c-b29f-11e7-9350-020968147796';

describe('cgroup parsing', () => {
  const cases: Array<[string, string, string | undefined, string | undefined]> = [
    ['docker, cgroup v1', `12:pids:/docker/${CID}\n11:memory:/docker/${CID}\n`, CID, undefined],
    ['docker, cgroup v2 systemd', `0::/system.slice/docker-${CID}.scope\n`, CID, undefined],
    ['kubelet cgroupfs, v1', `4:cpu:/kubepods/burstable/pod${POD_UID}/${CID}\n`, CID, POD_UID],
    [
      'kubelet systemd + containerd, v2',
      `0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${POD_UID.replace(/-/g, '_')}.slice/cri-containerd-${CID}.scope\n`,
      CID,
      POD_UID,
    ],
    ['CRI-O', `0::/kubepods.slice/kubepods-pod${POD_UID.replace(/-/g, '_')}.slice/crio-${CID}.scope\n`, CID, POD_UID],
    ['not in a container', '0::/user.slice/user-1000.slice/session-2.scope\n', undefined, undefined],
  ];
  for (const [what, text, cid, pod] of cases) {
    it(what, () => assert.deepEqual(parseCgroup(text), { containerId: cid, podUid: pod }));
  }
});

function fakeProc(cgroup: string): { proc: string; pid: number } {
  const proc = mkdtempSync(join(tmpdir(), 'writ-proc-'));
  mkdirSync(join(proc, '99'));
  writeFileSync(join(proc, '99', 'cgroup'), cgroup);
  return { proc, pid: 99 };
}

describe('docker attestor against a fake Docker Engine on a Unix socket', () => {
  let dir: string;
  let sock: string;
  const seen: string[] = [];
  const server = createServer((req, res) => {
    seen.push(req.url ?? '');
    res.setHeader('content-type', 'application/json');
    if (req.url === `/v1.41/containers/${CID}/json`) {
      return res.end(
        JSON.stringify({
          Id: CID,
          Name: '/shop-web-1',
          Image: `sha256:${'c'.repeat(64)}`,
          Config: { Image: 'registry.example/shop/web:1.4', Labels: { 'com.example.team': 'shop', tier: 'frontend' }, Env: ['SECRET=x'] },
          State: { Status: 'running', Pid: 4242 },
        }),
      );
    }
    if (req.url === `/v1.41/images/${encodeURIComponent(`sha256:${'c'.repeat(64)}`)}/json`) {
      return res.end(
        JSON.stringify({
          Id: `sha256:${'c'.repeat(64)}`,
          RepoTags: ['registry.example/shop/web:1.4'],
          RepoDigests: [`registry.example/shop/web@sha256:${'d'.repeat(64)}`],
        }),
      );
    }
    res.statusCode = 404;
    res.end(JSON.stringify({ message: `No such container: ${req.url}` }));
    return undefined;
  });
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'writ-docker-'));
    sock = join(dir, 'docker.sock');
    await new Promise<void>((r) => server.listen(sock, () => r()));
  });
  after(() => {
    server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('turns a container into labels, image name, config digest, repo digest and name', async () => {
    const { proc, pid } = fakeProc(`0::/system.slice/docker-${CID}.scope\n`);
    const { selectors: sel, containerId } = await dockerAttestor({ socketPath: sock, proc })({ pid, uid: 0, gid: 0 });
    assert.equal(containerId, CID);
    assert.deepEqual(sel.sort(), [
      'docker:container_name:shop-web-1',
      `docker:image_config_digest:sha256:${'c'.repeat(64)}`,
      `docker:image_digest:sha256:${'d'.repeat(64)}`,
      'docker:image_id:registry.example/shop/web:1.4',
      'docker:label:com.example.team:shop',
      'docker:label:tier:frontend',
    ]);
    assert.ok(!sel.some((s) => s.includes('SECRET')), 'environment variables are not turned into selectors');
    rmSync(proc, { recursive: true, force: true });
  });

  it('adds nothing for a process outside containers or an unknown container', async () => {
    const host = fakeProc('0::/user.slice/session-1.scope\n');
    assert.deepEqual(await dockerAttestor({ socketPath: sock, proc: host.proc })({ pid: host.pid, uid: 0, gid: 0 }), { selectors: [] });
    const other = fakeProc(`0::/system.slice/docker-${'e'.repeat(64)}.scope\n`);
    assert.deepEqual(await dockerAttestor({ socketPath: sock, proc: other.proc })({ pid: other.pid, uid: 0, gid: 0 }), { selectors: [] });
  });
});

describe('k8s attestor against a fake kubelet over HTTPS', () => {
  let url: string;
  let dir: string;
  let auth = '';
  const podList = {
    kind: 'PodList',
    apiVersion: 'v1',
    items: [
      {
        metadata: {
          name: 'web-7d9f8',
          namespace: 'shop',
          uid: POD_UID,
          labels: { app: 'web', 'pod-template-hash': '7d9f8' },
          annotations: { 'example.com/owner': 'team-shop' },
          ownerReferences: [{ apiVersion: 'apps/v1', kind: 'ReplicaSet', name: 'web-7d9f8', uid: 'rs-uid-1', controller: true }],
        },
        spec: { serviceAccountName: 'web', nodeName: 'node-1', containers: [{ name: 'web', image: 'registry.example/shop/web:1.4' }] },
        status: {
          phase: 'Running',
          containerStatuses: [
            {
              name: 'web',
              image: 'registry.example/shop/web:1.4',
              imageID: `registry.example/shop/web@sha256:${'d'.repeat(64)}`,
              containerID: `containerd://${CID}`,
              ready: true,
            },
            { name: 'sidecar', image: 'proxy:2', imageID: `proxy@sha256:${'f'.repeat(64)}`, containerID: `containerd://${'9'.repeat(64)}` },
          ],
        },
      },
    ],
  };
  const k = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const now = Date.now();
  const cert = issueCertificate(
    {
      subject: buildName([[OID.commonName, 'kubelet']]),
      spki: k.publicKey.export({ format: 'der', type: 'spki' }),
      notBefore: new Date(now - 60_000),
      notAfter: new Date(now + 3_600_000),
      ca: true,
      uris: [],
      ipAddresses: [Buffer.from([127, 0, 0, 1])],
    },
    { cert: undefined, signer: { key: k.privateKey, keyType: 'ec-p256' } },
  );
  const server = createHttpsServer({ key: k.privateKey.export({ format: 'pem', type: 'pkcs8' }), cert: toPem('CERTIFICATE', cert.der) }, (req, res) => {
    auth = req.headers.authorization ?? '';
    if (req.url !== '/pods') return ((res.statusCode = 404), res.end('{}'));
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify(podList));
    return undefined;
  });
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'writ-kubelet-'));
    writeFileSync(join(dir, 'ca.pem'), toPem('CERTIFICATE', cert.der));
    writeFileSync(join(dir, 'token'), 'sa-token-value\n');
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    url = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(() => {
    server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('finds the pod and container of the caller and yields the pod selectors', async () => {
    const { proc, pid } = fakeProc(
      `0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${POD_UID.replace(/-/g, '_')}.slice/cri-containerd-${CID}.scope\n`,
    );
    const att = await k8sAttestor({ kubeletUrl: url, caFile: join(dir, 'ca.pem'), tokenFile: join(dir, 'token'), proc })({ pid, uid: 0, gid: 0 });
    const sel = att.selectors;
    assert.equal(auth, 'Bearer sa-token-value');
    for (const s of [
      'k8s:ns:shop',
      'k8s:sa:web',
      'k8s:pod-name:web-7d9f8',
      `k8s:pod-uid:${POD_UID}`,
      'k8s:node-name:node-1',
      'k8s:pod-label:app:web',
      'k8s:container-name:web',
      'k8s:container-image:registry.example/shop/web:1.4',
      `k8s:container-image-id:registry.example/shop/web@sha256:${'d'.repeat(64)}`,
      'k8s:pod-owner:ReplicaSet:web-7d9f8',
      'k8s:pod-owner-uid:ReplicaSet:rs-uid-1',
    ]) {
      assert.ok(sel.includes(s), `${s} in ${sel.join(' ')}`);
    }
    assert.ok(!sel.includes('k8s:container-name:sidecar'));
    // Annotations are reported (owners), never selectors.
    assert.deepEqual(att.annotations, { 'example.com/owner': 'team-shop' });
    assert.equal(att.containerId, CID);
    assert.ok(!sel.some((s) => s.includes('team-shop')));
  });

  it('yields nothing for a container of no known pod', async () => {
    const { proc, pid } = fakeProc(`0::/kubepods.slice/kubepods-pod${'1'.repeat(8)}_1111_1111_1111_${'1'.repeat(12)}.slice/cri-containerd-${CID}.scope\n`);
    assert.deepEqual(await k8sAttestor({ kubeletUrl: url, caFile: join(dir, 'ca.pem'), proc })({ pid, uid: 0, gid: 0 }), { selectors: [] });
  });
});
