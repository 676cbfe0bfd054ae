/**
 * Verifiable-log core benchmark (issue 15 §1): `npm run bench -- transparency`.
 *
 * - **Inclusion proof at 10,000,000 leaves**: `inclusionProof` (plan + one batch read of the
 *   perfect nodes from an in-memory NodeReader, no store) then `verifyInclusion`, per proof, p50
 *   and p99 in µs over random leaves. Baseline in the same run: the plain SHA-256 calls a
 *   verification cannot avoid (one of 65 bytes per proof hash). Target: <= 1 ms.
 * - **verifyEntries over 1,000,000 leaves** (the core of `writ audit verify`: decode, chain check,
 *   leaf hash, compact range, a trusted head): seconds. Baseline: plain SHA-256 of the same
 *   entry bytes, once each. Target: <= 10 s.
 *
 * The tree of 10,000,000 leaves is synthetic (@writ/transparency/testing's SyntheticTree): the
 * proven leaf is its one distinct leaf, so every perfect node a proof reads is an O(1) lookup, as
 * from a store that keeps them all, without building 640 MB of nodes first. Also reported:
 * CompactRange.append's rate (the hashing part of a store's append). `--quick`: 1,000,000 leaves
 * and 100,000 entries. BENCH_PROOFS sets the number of proofs (default 5,000).
 */
import { performance } from 'node:perf_hooks';
import { CompactRange, type NodeBatchReader, encodeAuditLeaf, inclusionProof, leafHash, verifyEntries, verifyInclusion } from '@writ/transparency';
import { SyntheticTree } from '@writ/transparency/testing';
import { sha256 } from '../packages/transparency/src/merkle.ts';
import { fmt, percentile, row } from './util.ts';

const QUICK = process.argv.includes('--quick');

export interface ProofBenchResult {
  leaves: number;
  proofs: number;
  appendsPerSecond: number;
  proveVerifyP50Us: number;
  proveVerifyP99Us: number;
  /** On-CPU time of prove+verify (process.cpuUsage), which a shared machine's waiting does not inflate. */
  proveVerifyCpuP50Us: number;
  proveVerifyCpuP99Us: number;
  proveP50Us: number;
  verifyP50Us: number;
  baselineP50Us: number;
  maxReads: number;
  entries: number;
  verifyEntriesSeconds: number;
  verifyEntriesBaselineSeconds: number;
  /** CPU seconds of the same two runs: the machine may be shared, these do not count waiting. */
  verifyEntriesCpuSeconds: number;
  verifyEntriesBaselineCpuSeconds: number;
}

const cpu = (): number => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};

/** A deterministic stand-in for leaf hash i: 32 bytes from a xorshift of i. */
function fakeLeafHash(i: number): Uint8Array {
  const out = new Uint8Array(32);
  let x = (i * 2654435761) >>> 0 || 1;
  for (let k = 0; k < 32; k += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    new DataView(out.buffer).setUint32(k, x >>> 0);
  }
  return out;
}

/** `samples` random leaves of a tree of `leaves`: prove + verify per proof, with the SHA-256 floor beside it. */
export async function proofBench(opts: { leaves?: number; proofs?: number; entries?: number } = {}): Promise<ProofBenchResult> {
  const n = opts.leaves ?? (QUICK ? 1_000_000 : 10_000_000);
  const samples = opts.proofs ?? Number(process.env['BENCH_PROOFS'] ?? 5000);
  const entries = opts.entries ?? (QUICK ? 100_000 : 1_000_000);

  // CompactRange appends (hashing and node reports, as a store's append does without the store).
  const appends = QUICK ? 100_000 : 300_000;
  const fakes = Array.from({ length: appends }, (_, i) => fakeLeafHash(i));
  let kept = 0;
  let t = performance.now();
  const range = new CompactRange();
  for (const h of fakes) range.append(h, () => kept++);
  const appendsPerSecond = appends / ((performance.now() - t) / 1000);
  if (kept < appends) throw new Error('nodes were not reported');

  let maxReads = 0;
  const both: number[] = [];
  const bothCpu: number[] = [];
  const prove: number[] = [];
  const verify: number[] = [];
  const floor: number[] = [];
  const buf = new Uint8Array(65);
  let seed = 12345;
  const rand = () => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed / 2 ** 31;
  };
  for (let s = 0; s < samples + 200; s++) {
    const index = Math.floor(rand() * n);
    // A tree of n leaves where leaf `index` is the one distinct leaf: every node its proof reads
    // is an O(1) lookup, as from a store that keeps every perfect node (its root is computed untimed).
    const tree = new SyntheticTree(n, [index]);
    const root = tree.root();
    const leaf = tree.leaf(index);
    const reader = tree.reader();
    const read: NodeBatchReader = (nodes) => {
      maxReads = Math.max(maxReads, nodes.length);
      return reader(nodes);
    };
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    const proof = await inclusionProof(index, n, read);
    const t1 = performance.now();
    verifyInclusion(leaf, index, n, proof, root);
    const t2 = performance.now();
    const c1 = process.cpuUsage(c0);
    for (const p of proof) {
      buf.set(p, 1);
      sha256(buf);
    }
    const t3 = performance.now();
    if (s < 200) continue; // warm-up
    both.push((t2 - t0) * 1000);
    bothCpu.push(c1.user + c1.system);
    prove.push((t1 - t0) * 1000);
    verify.push((t2 - t1) * 1000);
    floor.push((t3 - t2) * 1000);
  }
  const p = (a: number[], q: number) =>
    percentile(
      [...a].sort((x, y) => x - y),
      q,
    );

  // verifyEntries over `entries` chained audit leaves with ~120-byte JSON bodies.
  const rows: { index: number; body: Uint8Array }[] = [];
  let prev: Uint8Array | null = null;
  const check = new CompactRange();
  for (let i = 0; i < entries; i++) {
    const body = new TextEncoder().encode(
      JSON.stringify({ kind: 'entry.create', at: 1_764_700_000_000 + i, actor: 'spiffe://example.org/admin', spiffeId: `spiffe://example.org/svc/${i}` }),
    );
    const leafData = encodeAuditLeaf(i, prev, body);
    rows.push({ index: i, body: leafData });
    prev = leafHash(leafData);
    check.append(prev);
  }
  const head = { size: entries, rootHash: check.root() };
  t = performance.now();
  let c = cpu();
  for (const r of rows) sha256(r.body);
  const verifyEntriesBaselineSeconds = (performance.now() - t) / 1000;
  const verifyEntriesBaselineCpuSeconds = cpu() - c;
  t = performance.now();
  c = cpu();
  const v = verifyEntries(rows, { trusted: [head] });
  const verifyEntriesSeconds = (performance.now() - t) / 1000;
  const verifyEntriesCpuSeconds = cpu() - c;
  if (v.firstBadIndex !== undefined || v.size !== entries) throw new Error(`verifyEntries refused the benchmark's own log: ${v.reason}`);

  return {
    leaves: n,
    proofs: samples,
    appendsPerSecond,
    proveVerifyP50Us: p(both, 50),
    proveVerifyP99Us: p(both, 99),
    proveVerifyCpuP50Us: p(bothCpu, 50),
    proveVerifyCpuP99Us: p(bothCpu, 99),
    proveP50Us: p(prove, 50),
    verifyP50Us: p(verify, 50),
    baselineP50Us: p(floor, 50),
    maxReads,
    entries,
    verifyEntriesSeconds,
    verifyEntriesBaselineSeconds,
    verifyEntriesCpuSeconds,
    verifyEntriesBaselineCpuSeconds,
  };
}

const us = (x: number): string => `${x.toFixed(1)} µs`;

export function printProofBench(r: ProofBenchResult): void {
  console.log(`\n== transparency: inclusion proofs at ${fmt(r.leaves)} leaves (synthetic, in-memory nodes), verifyEntries over ${fmt(r.entries)} leaves`);
  console.log(`CompactRange.append: ${fmt(r.appendsPerSecond)} leaves/s; at most ${r.maxReads} perfect nodes read per proof`);
  row('measure', 'writ', 'baseline (same run)', 'ratio', 'target');
  row(
    'inclusion prove+verify p50',
    us(r.proveVerifyP50Us),
    `${us(r.baselineP50Us)} SHA-256 floor`,
    `${(r.proveVerifyP50Us / r.baselineP50Us).toFixed(1)}x`,
    '<= 1000 µs',
  );
  row('inclusion prove+verify p99', us(r.proveVerifyP99Us), '', '', '<= 1000 µs');
  row('  on-CPU time p50 / p99', `${us(r.proveVerifyCpuP50Us)} / ${us(r.proveVerifyCpuP99Us)}`, '', '', '');
  row('  of which prove p50 / verify p50', `${us(r.proveP50Us)} / ${us(r.verifyP50Us)}`, '', '', '');
  row(
    `verifyEntries ${fmt(r.entries)} leaves`,
    `${r.verifyEntriesSeconds.toFixed(2)} s`,
    `${r.verifyEntriesBaselineSeconds.toFixed(2)} s SHA-256 of bytes`,
    `${(r.verifyEntriesSeconds / r.verifyEntriesBaselineSeconds).toFixed(1)}x`,
    r.entries === 1_000_000 ? '<= 10 s' : '',
  );
  row(
    '  the same in CPU seconds',
    `${r.verifyEntriesCpuSeconds.toFixed(2)} s`,
    `${r.verifyEntriesBaselineCpuSeconds.toFixed(2)} s`,
    `${(r.verifyEntriesCpuSeconds / r.verifyEntriesBaselineCpuSeconds).toFixed(1)}x`,
    '',
  );
}

export async function run(): Promise<void> {
  printProofBench(await proofBench());
}
