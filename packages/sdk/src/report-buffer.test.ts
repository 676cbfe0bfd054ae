import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { decodeDecision, encodeDecision, readReport, type ReportedDecision } from './decision-log.ts';
import { ReportBuffer } from './report-buffer.ts';

const d = (i: number): ReportedDecision => ({
  id: `id-${i}`,
  at: 1_764_547_200_000 + i,
  from: 'spiffe://td/a',
  to: 'spiffe://td/b',
  action: `GET /v1/x/${i}`,
  decision: 'allow',
  reason: 'ALLOW_RULE',
  rule: 'r#0',
  policyRevision: 1,
  latencyNs: 0,
});
/** What a receiver sees: ids per message and the drop counts. */
const receive = (sent: Buffer[]) =>
  sent.map((m) => {
    const ids: string[] = [];
    const { dropped } = readReport(m, (b) => void ids.push(decodeDecision(b).id));
    return { ids, dropped };
  });

describe('report buffer', () => {
  it('sends what it holds as ReportRequest messages, in order; drops and counts beyond its bound', async () => {
    const b = new ReportBuffer(3, 1024 * 1024);
    for (const i of [1, 2, 3, 4, 5]) b.push(encodeDecision(d(i)));
    assert.deepEqual(b.stats, { buffered: 3, dropped: 2 });
    const sent: Buffer[] = [];
    await b.drain(async (m) => void sent.push(Buffer.from(m)));
    assert.deepEqual(receive(sent), [{ ids: ['id-1', 'id-2', 'id-3'], dropped: 2 }]);
    assert.deepEqual(b.stats, { buffered: 0, dropped: 0 });
    await b.drain(async () => assert.fail('nothing to send'));
  });

  it('a failed message goes back in front of what arrived meanwhile; the drop count is sent once', async () => {
    const b = new ReportBuffer(10, 1024 * 1024);
    b.push(encodeDecision(d(1)));
    b.countDropped(4);
    await b.drain(async () => {
      b.push(encodeDecision(d(2))); // arrives while the send is under way
      throw new Error('server away');
    });
    assert.deepEqual(b.stats, { buffered: 2, dropped: 4 });
    const sent: Buffer[] = [];
    await b.drain(async (m) => void sent.push(Buffer.from(m)));
    assert.deepEqual(receive(sent), [
      { ids: ['id-1'], dropped: 4 },
      { ids: ['id-2'], dropped: 0 },
    ]);
  });

  it('a message the receiver will never take is counted as dropped, not retried', async () => {
    const b = new ReportBuffer(10, 1024 * 1024);
    for (const i of [1, 2]) b.push(encodeDecision(d(i)));
    await b.drain(
      async () => {
        throw new Error('malformed');
      },
      () => 'drop',
    );
    assert.deepEqual(b.stats, { buffered: 0, dropped: 2 });
    const sent: Buffer[] = [];
    await b.drain(async (m) => void sent.push(Buffer.from(m)));
    assert.deepEqual(receive(sent), [{ ids: [], dropped: 2 }], 'the count still reaches the receiver');
  });

  it('cuts messages at its size limit, and cuts buffered ones again when the limit shrinks', async () => {
    const b = new ReportBuffer(1000, 64 * 1024);
    for (let i = 0; i < 900; i++) b.push(encodeDecision(d(i)));
    b.maxMessage = 8 * 1024;
    const sent: Buffer[] = [];
    await b.drain(async (m) => void sent.push(Buffer.from(m)));
    assert.ok(sent.length > 5 && sent.every((m) => m.length <= 8 * 1024), sent.map((m) => m.length).join(','));
    assert.deepEqual(
      receive(sent).flatMap((r) => r.ids),
      Array.from({ length: 900 }, (_, i) => `id-${i}`),
    );
  });
});
