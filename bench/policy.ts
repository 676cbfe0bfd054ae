/**
 * Policy benchmark: decisions/s and p99 on sets of 10, 1,000 and 10,000 rules, beside node-casbin
 * `enforceSync` on the same rules (keyMatch on the caller, exact destination and method) in the
 * same run, one core.
 */
import { performance } from 'node:perf_hooks';
import { newEnforcer, newModelFromString } from 'casbin';
import { PolicyEngine, parsePolicies, type AuthzRequest } from '@writ/policy';
import { fmt, percentile, row } from './util.ts';

const MODEL = `
[request_definition]
r = sub, obj, act
[policy_definition]
p = sub, obj, act, eft
[policy_effect]
e = some(where (p.eft == allow)) && !some(where (p.eft == deny))
[matchers]
m = keyMatch(r.sub, p.sub) && r.obj == p.obj && r.act == p.act
`;

/** N rules over N/10 destinations (min 1); each rule lets one client namespace GET. Every 10th is a deny. */
function ruleSet(n: number): { yaml: string; casbin: string[][]; requests: Array<{ r: AuthzRequest; c: [string, string, string] }> } {
  const dests = Math.max(1, Math.floor(n / 10));
  const perDest = Math.ceil(n / dests);
  const docs: string[] = [];
  const casbin: string[][] = [];
  let k = 0;
  for (let d = 0; d < dests; d++) {
    const to = `spiffe://bench.example/ns/svc${d}/sa/api`;
    const rules: string[] = [];
    for (let j = 0; j < perDest && k < n; j++, k++) {
      const effect = j % 10 === 9 ? 'deny' : 'allow';
      rules.push(`    - { effect: ${effect}, from: ["spiffe://bench.example/ns/client${j}/**"], actions: [{ methods: [GET] }] }`);
      casbin.push(['p', `spiffe://bench.example/ns/client${j}/*`, to, 'GET', effect]);
    }
    docs.push(`apiVersion: writ.dev/v1\nkind: AccessPolicy\nmetadata: { name: svc${d} }\nspec:\n  to: ${to}\n  rules:\n${rules.join('\n')}\n`);
  }
  // 4,096 distinct requests in every set, so remembered decisions cost the same everywhere.
  const requests = Array.from({ length: 4096 }, (_, i) => {
    const from = `spiffe://bench.example/ns/client${(i * 7) % (perDest + 2)}/sa/app`;
    const to = `spiffe://bench.example/ns/svc${(i * 13) % dests}/sa/api`;
    const method = i % 5 === 0 ? 'POST' : 'GET';
    return { r: { from, to, action: { kind: 'http' as const, method, path: `/v1/items/${i}` } }, c: [from, to, method] as [string, string, string] };
  });
  return { yaml: docs.join('---\n'), casbin, requests };
}

function measure(fn: (i: number) => boolean, seconds: number, n: number): { rate: number; p99us: number } {
  for (let i = 0; i < 2000; i++) fn(i);
  let count = 0;
  const start = performance.now();
  const end = start + seconds * 1000;
  while (performance.now() < end) {
    for (let i = 0; i < 1000; i++) fn(count + i);
    count += 1000;
  }
  const rate = count / ((performance.now() - start) / 1000);
  const lat: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    fn(i);
    lat.push(performance.now() - t);
  }
  lat.sort((a, b) => a - b);
  return { rate, p99us: percentile(lat, 99) * 1000 };
}

export async function run(): Promise<void> {
  const SECONDS = Number(process.env['BENCH_SECONDS'] ?? 2);
  console.log('\nPolicy benchmark (one core)\n');
  row('rules', 'writ decisions/s (p99)', 'casbin enforceSync/s (p99)', 'ratio', 'target');
  let small = 0;
  const cold: string[] = [];
  for (const n of [10, 1000, 10_000]) {
    const set = ruleSet(n);
    const engine = new PolicyEngine(parsePolicies(set.yaml).policies);
    const e = await newEnforcer(newModelFromString(MODEL));
    for (const p of set.casbin) await e.addPolicy(p[1]!, p[2]!, p[3]!, p[4]!);
    // Same answers, or the comparison means nothing.
    for (const q of set.requests.slice(0, 200)) {
      const a = engine.decide(q.r).allowed;
      const b = e.enforceSync(...q.c);
      if (a !== b) throw new Error(`writ and casbin disagree on ${q.c.join(' ')}: ${a} vs ${b}`);
    }
    const reqs = set.requests;
    const w = measure((i) => engine.decide(reqs[i & 4095]!.r).allowed, SECONDS, 100_000);
    // Cold: every decision evaluated through the index (the remembered-decision map emptied first).
    const k = measure((i) => (engine.clearCache(), engine.decide(reqs[i & 4095]!.r).allowed), SECONDS, 100_000);
    cold.push(`${fmt(n)} rules: ${fmt(k.rate)}/s, p99 ${k.p99us.toFixed(2)} µs`);
    const c = measure((i) => e.enforceSync(...reqs[i & 4095]!.c), n >= 1000 ? Math.min(SECONDS, 1) : SECONDS, n >= 10_000 ? 200 : 5000);
    if (n === 10) small = w.rate;
    row(
      `${fmt(n)}`,
      `${fmt(w.rate)} (${w.p99us.toFixed(2)} µs)`,
      `${fmt(c.rate)} (${c.p99us.toFixed(1)} µs)`,
      `${(w.rate / c.rate).toFixed(0)}x`,
      n === 10_000 ? `>= 1,000,000/s; >= 100x casbin; cost x${(small / w.rate).toFixed(2)} vs 10 rules (<= 2)` : '',
    );
  }
  console.log(`\nwithout remembered decisions (every decision walks the index): ${cold.join('; ')}`);
}
