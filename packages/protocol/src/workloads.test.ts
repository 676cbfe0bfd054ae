/** The workload report: what the agent encodes the server decodes; anything else is refused naming the field. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { isWritError } from '@writ/spiffe';
import { WORKLOAD_LIMITS, decodeWorkloads, encodeWorkloads, imageOf, type WorkloadReport } from './index.ts';

const D = `sha256:${'ab'.repeat(32)}`;
const web: WorkloadReport = {
  key: 'c'.repeat(64),
  spiffeIds: ['spiffe://p.test/web', 'spiffe://p.test/a'],
  containerId: 'c'.repeat(64),
  containerName: 'web',
  podUid: '1b4e28ba-2fa1-11d2-883f-0016d3cca427',
  podName: 'web-7d9f-x2',
  namespace: 'shop',
  podOwner: 'ReplicaSet/web-7d9f',
  imageDigest: D,
  imageName: 'reg.example/team/web',
  labels: { team: 'payments', app: 'web' },
  annotations: { 'writ.dev/owner': 'payments' },
};

function refused(body: unknown, field: string, code = 'ERR_FIELD_INVALID'): void {
  assert.throws(
    () => decodeWorkloads(body),
    (e: unknown) => isWritError(e, code) && e.field === field,
    `expected ${code} on ${field}`,
  );
}

describe('workload report', () => {
  it('round-trips through JSON, SPIFFE IDs sorted, label keys in order', () => {
    const [w] = decodeWorkloads(JSON.parse(JSON.stringify(encodeWorkloads([web]))));
    assert.deepEqual(w!.spiffeIds, ['spiffe://p.test/a', 'spiffe://p.test/web']);
    assert.deepEqual({ ...w, spiffeIds: [] }, { ...web, spiffeIds: [], labels: { app: 'web', team: 'payments' } });
    assert.deepEqual(Object.keys(w!.labels), ['app', 'team']);
  });

  it('takes a bare process (no container, no pod): absent fields are null, maps empty', () => {
    const [w] = decodeWorkloads({ workloads: [{ key: 'pid:42:1234', spiffeIds: ['spiffe://p.test/cron'] }] });
    assert.equal(w!.containerId, null);
    assert.equal(w!.imageDigest, null);
    assert.deepEqual(w!.labels, {});
    assert.deepEqual(decodeWorkloads({ workloads: [] }), []);
  });

  it('refuses each bad field by name', () => {
    const one = (patch: Record<string, unknown>) => ({ workloads: [{ ...web }, { ...web, key: 'k2', ...patch }] });
    refused(null, 'body');
    refused({ workloads: 'x' }, 'workloads');
    refused({ workloads: [], extra: 1 }, 'extra', 'ERR_FIELD_UNKNOWN');
    refused(one({ shoeSize: 44 }), 'workloads[1].shoeSize', 'ERR_FIELD_UNKNOWN');
    refused({ workloads: [web, web] }, 'workloads[1].key');
    refused(one({ key: '' }), 'workloads[1].key');
    refused(one({ key: 'k'.repeat(WORKLOAD_LIMITS.key + 1) }), 'workloads[1].key');
    refused(one({ spiffeIds: [] }), 'workloads[1].spiffeIds');
    refused(one({ spiffeIds: ['https://p.test/web'] }), 'workloads[1].spiffeIds[0]');
    refused(one({ spiffeIds: Array.from({ length: 65 }, (_, i) => `spiffe://p.test/w${i}`) }), 'workloads[1].spiffeIds');
    refused(one({ imageDigest: 'sha256:ABC' }), 'workloads[1].imageDigest');
    refused(one({ imageDigest: `docker-pullable://reg/x@${D}` }), 'workloads[1].imageDigest');
    refused(one({ namespace: 7 }), 'workloads[1].namespace');
    refused(one({ podName: 'a\nb' }), 'workloads[1].podName');
    refused(one({ labels: ['team'] }), 'workloads[1].labels');
    refused(one({ labels: { team: 1 } }), 'workloads[1].labels.team');
    refused(one({ annotations: { big: 'x'.repeat(WORKLOAD_LIMITS.annotationValue + 1) } }), 'workloads[1].annotations.big');
    refused(one({ labels: Object.fromEntries(Array.from({ length: 257 }, (_, i) => [`k${i}`, 'v'])) }), 'workloads[1].labels');
    refused({ workloads: Array.from({ length: WORKLOAD_LIMITS.workloads + 1 }, () => ({})) }, 'workloads');
  });

  it('never throws anything but a WritError naming a field (property)', () => {
    fc.assert(
      fc.property(fc.jsonValue({ maxDepth: 4 }), (v) => {
        for (const body of [v, { workloads: [v] }, { workloads: [{ ...web, labels: v }] }]) {
          try {
            decodeWorkloads(body);
          } catch (e) {
            assert.ok(isWritError(e) && typeof e.field === 'string', String(e));
          }
        }
      }),
      { numRuns: 300 },
    );
  });

  it('reads an image as runtimes name it', () => {
    assert.deepEqual(imageOf(`docker-pullable://reg.example:5000/team/web@${D}`), { digest: D, name: 'reg.example:5000/team/web' });
    assert.deepEqual(imageOf(`reg.example/web@${D}`), { digest: D, name: 'reg.example/web' });
    assert.deepEqual(imageOf(`reg.example/web:1.2@${D}`), { digest: D, name: 'reg.example/web' });
    assert.deepEqual(imageOf('reg.example:5000/web:1.2'), { digest: null, name: 'reg.example:5000/web' });
    assert.deepEqual(imageOf('reg.example:5000/web'), { digest: null, name: 'reg.example:5000/web' });
    // A bare image ID is the configuration's digest: no digest, no name.
    assert.deepEqual(imageOf(D), { digest: null, name: null });
    assert.deepEqual(imageOf(`docker://${D}`), { digest: null, name: null });
  });
});
