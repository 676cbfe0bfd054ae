/** The shared webhook deliverer: order, signatures, backoff with jitter, and a bounded queue whose drops are counted. */
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { WebhookDeliverer, backoffWithJitter, signBody } from './webhook.ts';

describe('webhook deliverer', () => {
  it('backoff doubles from 1 s to 60 s, each wait in the upper half of its step', () => {
    assert.equal(
      backoffWithJitter(1, () => 0),
      500,
    );
    assert.equal(
      backoffWithJitter(1, () => 1),
      1000,
    );
    assert.equal(
      backoffWithJitter(3, () => 0.5),
      3000,
    );
    assert.equal(
      backoffWithJitter(20, () => 1),
      60_000,
    );
    assert.equal(
      backoffWithJitter(20, () => 0),
      30_000,
    );
  });

  it('delivers in order, signed, and drops the oldest past the queue bound, counting them', async () => {
    const got: Array<{ id: string; body: string; ok: boolean }> = [];
    const secret = Buffer.from('a-webhook-key-of-enough-bytes');
    let release: () => void = () => undefined;
    const gate = new Promise<void>((r) => (release = r));
    const receiver = createServer((req, res) => {
      let body = '';
      req.on('data', (d: Buffer) => (body += d.toString()));
      req.on('end', async () => {
        // The first delivery is held, so the rest queue up behind it.
        if (got.length === 0) await gate;
        got.push({ id: String(req.headers['x-writ-event-id']), body, ok: req.headers['x-writ-signature'] === signBody(secret, body) });
        res.statusCode = 204;
        res.end();
      });
    });
    await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', () => r()));
    let dropped = 0;
    const d = new WebhookDeliverer({
      target: { url: `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/`, secret },
      event: 'test',
      log: pino({ level: 'silent' }),
      maxQueue: 3,
      onDrop: (n) => (dropped += n),
    });
    try {
      for (let i = 0; i < 6; i++) d.send(`e${i}`, { n: i });
      // e0 is in flight; of e1..e5 waiting, the oldest two were dropped.
      assert.equal(d.dropped, 2);
      assert.equal(dropped, 2);
      release();
      await d.flushed();
      assert.deepEqual(
        got.map((g) => g.id),
        ['e0', 'e3', 'e4', 'e5'],
      );
      assert.ok(
        got.every((g) => g.ok),
        'every body signed over its bytes',
      );
      assert.equal(d.delivered, 4);
    } finally {
      d.close();
      receiver.close();
    }
  });
});
