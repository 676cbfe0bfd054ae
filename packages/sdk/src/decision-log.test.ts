import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { createServer } from 'node:http2';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { acceptUnaryRequest } from './grpc.ts';
import {
  DecisionReporter,
  DECISION_LIMITS,
  decisionShape,
  decodeDecision,
  encodeDecision,
  encodeReport,
  newDecisionId,
  readReport,
  type ReportedDecision,
} from './decision-log.ts';
import { ProtoError } from './proto.ts';

const decision = (over: Partial<ReportedDecision> = {}): ReportedDecision => ({
  id: newDecisionId(),
  at: 1_764_547_200_000,
  from: 'spiffe://td/ns/web',
  to: 'spiffe://td/ns/orders',
  action: 'GET /v1/orders/7',
  decision: 'deny',
  reason: 'NO_MATCHING_ALLOW',
  rule: '',
  policyRevision: 12,
  latencyNs: 850,
  ...over,
});

describe('decision ids', () => {
  it('are UUIDv7: version 7, RFC 9562 variant, the time in the first 48 bits', () => {
    const id = newDecisionId(0x0190_1234_5678);
    assert.match(id, /^01901234-5678-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  });

  it('sort in time order and do not repeat', () => {
    const ids = Array.from({ length: 5000 }, (_, i) => newDecisionId(1_700_000_000_000 + Math.floor(i / 10)));
    assert.equal(new Set(ids).size, ids.length);
    for (let i = 10; i < ids.length; i += 10) assert.ok(ids[i - 1]! < ids[i]!, `${ids[i - 1]} < ${ids[i]}`);
  });
});

describe('decision codec', () => {
  it('round-trips every field', () => {
    const d = decision({ from: 'spiffe://td/ns/wéb/ü', rule: 'orders#0' });
    assert.deepEqual(decodeDecision(encodeDecision(d)), d);
    const bare = decision({ from: '', policyRevision: 0, latencyNs: 0 });
    assert.deepEqual(decodeDecision(encodeDecision(bare)), bare, 'proto3 defaults (not written) come back as defaults');
  });

  it('round-trips arbitrary decisions within the limits (property)', () => {
    const text = (max: number) => fc.string({ unit: 'binary', maxLength: Math.floor(max / 4) }); // code points: at most 4 UTF-8 bytes each;
    fc.assert(
      fc.property(
        fc.record({
          id: text(DECISION_LIMITS.id),
          at: fc.nat(),
          from: text(DECISION_LIMITS.from),
          to: text(DECISION_LIMITS.to),
          action: text(DECISION_LIMITS.action),
          decision: text(DECISION_LIMITS.decision),
          reason: text(DECISION_LIMITS.reason),
          rule: text(DECISION_LIMITS.rule),
          policyRevision: fc.nat(),
          latencyNs: fc.nat(),
        }),
        (d) => assert.deepEqual(decodeDecision(encodeDecision(d)), { ...d }),
      ),
    );
  });

  it('cuts over-long values on a character boundary, so the record stays valid', () => {
    const long = decision({ action: `GET /${'é'.repeat(600)}`, rule: 'x'.repeat(1000) });
    const back = decodeDecision(encodeDecision(long));
    assert.ok(Buffer.byteLength(back.action) <= DECISION_LIMITS.action);
    assert.ok(long.action.startsWith(back.action), 'a prefix, no replacement character');
    assert.equal(back.rule, 'x'.repeat(DECISION_LIMITS.rule));
  });

  it('refuses an over-long value from a hand-made message, and malformed bytes, with ProtoError', () => {
    const tooLong = Buffer.concat([Buffer.from([0x22, 0x81, 0x10]), Buffer.alloc(2049, 0x61)]); // field 4 (to), 2049 bytes
    assert.throws(() => decodeDecision(tooLong), ProtoError);
    for (const bad of [[0x0a, 0x05, 0x61], [0x10], [0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01], [0x00, 0x00], [0x0f]]) {
      assert.throws(() => decodeDecision(Buffer.from(bad)), ProtoError, JSON.stringify(bad));
    }
  });

  it('arbitrary bytes either decode or throw ProtoError, nothing else (property)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 600 }), (bytes) => {
        for (const read of [() => decodeDecision(Buffer.from(bytes)), () => readReport(Buffer.from(bytes), (d) => void decodeDecision(d))]) {
          try {
            read();
          } catch (err) {
            assert.ok(err instanceof ProtoError, String(err));
          }
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('finds `to` and `decision` in the bytes without decoding (what an agent checks)', () => {
    const d = decision({ to: 'spiffe://td/ns/örders' });
    const bytes = encodeDecision(d);
    const shape = decisionShape(bytes);
    assert.equal(bytes.toString('utf8', ...shape.to), d.to);
    assert.equal(bytes.toString('utf8', ...shape.decision), 'deny');
    assert.equal(shape.complete, true);
    assert.equal(decisionShape(encodeDecision(decision({ id: '' }))).complete, false, 'no id: the agent fills one in');
    assert.equal(decisionShape(encodeDecision(decision({ at: 0 }))).complete, false, 'no time: the agent fills one in');
    assert.throws(() => decisionShape(Buffer.from([0x22, 0x05, 0x61])), ProtoError);
  });

  it('a report carries decisions as they were encoded, and the drop count', () => {
    const ds = [decision(), decision({ decision: 'allow', reason: 'ALLOW_RULE', rule: 'orders#0' })].map(encodeDecision);
    const seen: Buffer[] = [];
    const { dropped } = readReport(encodeReport(ds, 7), (b) => seen.push(Buffer.from(b)));
    assert.equal(dropped, 7);
    assert.deepEqual(seen, ds);
    assert.equal(readReport(encodeReport([], 0), () => assert.fail('no decisions')).dropped, 0);
  });
});

describe('DecisionReporter', () => {
  it('sends a flush in large messages, and in 60 KiB ones to an agent that refuses more than 64 KiB (earlier versions)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'writ-reporter-'));
    const sizes: number[] = [];
    const ids = new Set<string>();
    let limit = 1024 * 1024;
    const server = createServer();
    server.on('stream', (stream, headers) =>
      acceptUnaryRequest(stream, headers, limit, (call, request) => {
        sizes.push(request.length);
        readReport(request, (d) => void ids.add(decodeDecision(d).id));
        call.send(Buffer.alloc(0));
        call.end();
      }),
    );
    await new Promise<void>((r) => server.listen(join(dir, 's.sock'), () => r()));
    try {
      for (const [agentLimit, expectMax] of [
        [1024 * 1024, 1024 * 1024],
        [64 * 1024, 60 * 1024],
      ] as const) {
        limit = agentLimit;
        sizes.length = 0;
        ids.clear();
        const reporter = new DecisionReporter(`unix://${join(dir, 's.sock')}`, { flushMs: 60_000 });
        for (let i = 0; i < 3000; i++) reporter.record(decision({ action: `GET /v1/orders/${i}` }));
        await reporter.flush();
        if (agentLimit < 1024 * 1024) await reporter.flush(); // the refused batch went back; this sends it
        await reporter.close();
        assert.equal(ids.size, 3000, `all delivered to an agent taking ${agentLimit} bytes`);
        assert.deepEqual(reporter.stats, { buffered: 0, dropped: 0 });
        assert.ok(Math.max(...sizes) <= expectMax, `${Math.max(...sizes)} <= ${expectMax}`);
        if (agentLimit === 1024 * 1024) assert.equal(sizes.length, 1, 'one message for 3,000 decisions');
      }
    } finally {
      server.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
