import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PolicyEngine, parsePolicies } from '@writ/policy';
import { CASES, CALLER, tablePolicy } from '../../../test/e2e/enforcement-cases.ts';
import type { ReportedDecision } from './decision-log.ts';
import { enforce, httpRefusal, parseCheckAction, pathRefusal, requestPath, type DecisionLogEntry } from './enforce.ts';

const TO = 'spiffe://e2e.test/ns/table/sa/api';

describe('the enforcement core, through the shared table', () => {
  const engine = new PolicyEngine(parsePolicies(tablePolicy(TO)).policies, { revision: 3 });
  engine.setQuarantine([CALLER.quarantined]);

  for (const c of CASES) {
    it(`${c.name}: HTTP ${c.http.status}${c.http.code ? ` ${c.http.code}` : ''}, recorded and logged the same way`, () => {
      const recorded: ReportedDecision[] = [];
      const logged: DecisionLogEntry[] = [];
      const o = {
        decide: (r: Parameters<PolicyEngine['decide']>[0]) => engine.decide(r),
        record: (d: ReportedDecision) => recorded.push(d),
        log: (e: DecisionLogEntry) => logged.push(e),
      };
      let path: string;
      try {
        path = requestPath(c.path);
      } catch (err) {
        // Refused before anything is decided: nothing recorded.
        const r = pathRefusal(err);
        assert.deepEqual([r.status, r.body.code], [c.http.status, c.http.code]);
        assert.throws(
          () => parseCheckAction(`${c.method} ${c.path}`),
          (e: { code?: string }) => e.code === c.http.code,
          'Check refuses it with the same code',
        );
        return;
      }
      const e = enforce(o, { from: c.from, to: TO, action: { kind: 'http', method: c.method, path } });
      const refused = httpRefusal(e);
      assert.equal(refused?.status ?? 200, c.http.status);
      if (refused) assert.deepEqual(refused.body, { code: c.http.code, decisionId: e.decisionId });
      assert.ok('decision' in c.check);
      assert.deepEqual([e.decision.decision, e.decision.reason], [c.check.decision, c.check.reason]);
      assert.equal(recorded.length, 1);
      assert.deepEqual(
        { ...recorded[0]!, at: 0, latencyNs: 0 },
        {
          id: e.decisionId,
          at: 0,
          from: c.from ?? '',
          to: TO,
          action: `${c.method} ${path}`,
          decision: c.check.decision,
          reason: c.check.reason,
          rule: e.decision.rule?.name ?? '',
          policyRevision: 3,
          latencyNs: 0,
        },
      );
      assert.ok(recorded[0]!.latencyNs > 0, 'how long the decision took');
      // Every deny and would-deny is logged, an allow is not.
      assert.deepEqual(
        logged.map((l) => l.decisionId),
        c.check.decision === 'allow' ? [] : [e.decisionId],
      );
    });
  }
});
