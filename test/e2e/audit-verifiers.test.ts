/**
 * Independent verifiers of the audit log's formats: transparency-dev/merkle (RFC 6962 hasher)
 * checks Writ's inclusion and consistency proofs, golang.org/x/mod/sumdb/note opens Writ's signed
 * checkpoints, and Writ uses key pairs and notes made by x/mod. test/go/auditcheck, built by .ci/run.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import {
  consistencyProof,
  formatCheckpoint,
  generateNoteKey,
  inclusionProof,
  leafHash,
  type NodeBatchReader,
  noteSigner,
  noteVerifier,
  openNote,
  parseCheckpoint,
  rootOf,
  signNote,
  verifyConsistency,
  verifyInclusion,
} from '@writ/transparency';
import { SyntheticTree } from '@writ/transparency/testing';
import { ROOT, run } from './helpers.ts';

const AUDITCHECK = join(ROOT, 'test/go/bin/auditcheck');

type Case =
  | { kind: 'inclusion'; index: number; size: number; leafHash: string; proof: string[]; root: string }
  | { kind: 'consistency'; size1: number; size2: number; proof: string[]; root1: string; root2: string }
  | { kind: 'note'; note: string; vkey: string };
type Verdict = { ok: boolean; error?: string; text?: string; sigs?: string[] };

async function auditcheck(args: string[], input: string): Promise<string> {
  if (!existsSync(AUDITCHECK)) throw new Error(`${AUDITCHECK} is missing: build it as .ci/run does (cd test/go/auditcheck && go build -o ../bin/auditcheck .)`);
  const r = await run(AUDITCHECK, args, { input, timeoutMs: 60_000 });
  assert.equal(r.code, 0, r.stderr);
  return r.stdout;
}

async function goVerdicts(cases: readonly Case[]): Promise<Verdict[]> {
  const out = JSON.parse(await auditcheck([], JSON.stringify(cases))) as Verdict[];
  assert.equal(out.length, cases.length);
  return out;
}

const b64 = (b: Uint8Array): string => Buffer.from(b).toString('base64');
const unb64 = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'base64'));
const flip = (b: Uint8Array, at = 0): Uint8Array => {
  const c = new Uint8Array(b);
  c[at % c.length] = (c[at % c.length] as number) ^ 0x80;
  return c;
};

/** Writ's own verdict on a case, to hold beside Go's. */
function writVerdict(c: Case): boolean {
  try {
    if (c.kind === 'inclusion') verifyInclusion(unb64(c.leafHash), c.index, c.size, c.proof.map(unb64), unb64(c.root));
    else if (c.kind === 'consistency') verifyConsistency(c.size1, c.size2, c.proof.map(unb64), unb64(c.root1), unb64(c.root2));
    else openNote(c.note, [noteVerifier(c.vkey)]);
    return true;
  } catch (err) {
    assert.match((err as { code?: string }).code ?? '', /^ERR_AUDIT_/, String(err));
    return false;
  }
}

/** Runs the cases through Go, expecting `want` for each, and checks Writ's verifier agrees. */
async function expectVerdicts(cases: readonly { c: Case; want: boolean; what: string }[]): Promise<Verdict[]> {
  const got = await goVerdicts(cases.map((x) => x.c));
  const wrong: string[] = [];
  for (const [i, x] of cases.entries()) {
    const g = got[i] as Verdict;
    if (g.ok !== x.want) wrong.push(`Go ${g.ok ? 'accepted' : `refused (${g.error})`} ${x.what}`);
    if (writVerdict(x.c) !== x.want) wrong.push(`Writ ${x.want ? 'refused' : 'accepted'} ${x.what}`);
  }
  assert.deepEqual(wrong, []);
  return got;
}

const LEAVES = Array.from({ length: 33 }, (_, i) => leafHash(new TextEncoder().encode(`audit entry ${i}`)));
const ROOTS = Array.from({ length: 34 }, (_, n) => rootOf(LEAVES.slice(0, n)));
const memoryReader: NodeBatchReader = async (nodes) => nodes.map((n) => rootOf(LEAVES.slice(n.index * 2 ** n.level, (n.index + 1) * 2 ** n.level)));

function inclusionCases(index: number, size: number, leaf: Uint8Array, proof: Uint8Array[], root: (size: number) => Uint8Array, max: number) {
  const c = (over: Partial<Extract<Case, { kind: 'inclusion' }>> = {}): Case => ({
    kind: 'inclusion',
    index,
    size,
    leafHash: b64(leaf),
    proof: proof.map(b64),
    root: b64(root(size)),
    ...over,
  });
  const at = `leaf ${index} of ${size}`;
  const out = [
    { c: c(), want: true, what: `the proof of ${at}` },
    { c: c({ leafHash: b64(flip(leaf)) }), want: false, what: `another leaf at ${at}` },
    { c: c({ root: b64(flip(root(size), 7)) }), want: false, what: `${at} against a flipped root` },
    { c: c({ index: size }), want: false, what: `${at} with the index past the end` },
  ];
  for (let j = 0; j < proof.length; j++)
    out.push({ c: c({ proof: proof.map((p, k) => b64(k === j ? flip(p, j) : p)) }), want: false, what: `${at} with hash ${j} flipped` });
  if (proof.length > 0) out.push({ c: c({ proof: proof.slice(1).map(b64) }), want: false, what: `${at} with a hash missing` });
  out.push({ c: c({ proof: [...proof, root(size)].map(b64) }), want: false, what: `${at} with a hash too many` });
  if (index + 1 < size) out.push({ c: c({ index: index + 1 }), want: false, what: `${at} claimed for leaf ${index + 1}` });
  if (size + 1 <= max) out.push({ c: c({ size: size + 1, root: b64(root(size + 1)) }), want: false, what: `${at} claimed for the tree of ${size + 1}` });
  return out;
}

function consistencyCases(size1: number, size2: number, proof: Uint8Array[], root: (size: number) => Uint8Array) {
  const c = (over: Partial<Extract<Case, { kind: 'consistency' }>> = {}): Case => ({
    kind: 'consistency',
    size1,
    size2,
    proof: proof.map(b64),
    root1: b64(root(size1)),
    root2: b64(root(size2)),
    ...over,
  });
  const at = `${size1} -> ${size2}`;
  const out = [{ c: c(), want: true, what: `the proof ${at}` }];
  if (size1 === 0 || size1 === size2) return out;
  out.push({ c: c({ root1: b64(flip(root(size1))) }), want: false, what: `${at} with the old root flipped` });
  out.push({ c: c({ root2: b64(flip(root(size2))) }), want: false, what: `${at} with the new root flipped` });
  for (let j = 0; j < proof.length; j++)
    out.push({ c: c({ proof: proof.map((p, k) => b64(k === j ? flip(p, 3) : p)) }), want: false, what: `${at} with hash ${j} flipped` });
  out.push({ c: c({ proof: proof.slice(0, -1).map(b64) }), want: false, what: `${at} with a hash missing` });
  if (size1 + 1 < size2) out.push({ c: c({ size1: size1 + 1, root1: b64(root(size1 + 1)) }), want: false, what: `${at} claimed from ${size1 + 1}` });
  return out;
}

describe('transparency-dev/merkle verifies Writ proofs', () => {
  it('every inclusion proof of trees up to 33 leaves is accepted, every altered one refused (by Go and by Writ)', async () => {
    const cases = [];
    for (let size = 1; size <= 33; size++)
      for (let index = 0; index < size; index++)
        cases.push(
          ...inclusionCases(index, size, LEAVES[index] as Uint8Array, await inclusionProof(index, size, memoryReader), (n) => ROOTS[n] as Uint8Array, 33),
        );
    assert.ok(cases.length > 3000);
    await expectVerdicts(cases);
  });

  it('every consistency proof of trees up to 33 leaves is accepted, every altered one refused', async () => {
    const cases = [];
    for (let size2 = 0; size2 <= 33; size2++)
      for (let size1 = 0; size1 <= size2; size1++)
        cases.push(...consistencyCases(size1, size2, await consistencyProof(size1, size2, memoryReader), (n) => ROOTS[n] as Uint8Array));
    await expectVerdicts(cases);
  });

  it('proofs at 10,000,000 leaves and up to 2^53-1 (a synthetic tree) are accepted, altered ones refused', async () => {
    const cases = [];
    for (const [index, size, from] of [
      [0, 10_000_000, 1],
      [4_999_999, 10_000_000, 8_388_608],
      [9_999_999, 10_000_000, 9_999_999],
      [2 ** 40 + 5, 2 ** 41 + 3, 2 ** 40 + 7],
      [2 ** 53 - 2, 2 ** 53 - 1, 2 ** 52 + 1],
      [123_456_789_012, 2 ** 53 - 1, 2 ** 53 - 2],
    ] as const) {
      const tree = new SyntheticTree(size + 1, [index, from, from - 1, 17]);
      const root = (n: number) => tree.root(n);
      cases.push(...inclusionCases(index, size, tree.leaf(index), await inclusionProof(index, size, tree.reader()), root, size + 1));
      cases.push(...consistencyCases(from, size, await consistencyProof(from, size, tree.reader()), root));
    }
    await expectVerdicts(cases);
  });
});

describe("golang.org/x/mod/sumdb/note and Writ's signed checkpoints", () => {
  const origin = 'writ.e2e.test/audit';
  const text = formatCheckpoint({ origin, size: 33, rootHash: ROOTS[33] as Uint8Array, extensions: [] });

  it('Go opens a checkpoint Writ signed, and refuses it altered or with another key', async () => {
    const { skey, vkey } = generateNoteKey(origin);
    const other = generateNoteKey(origin);
    const note = signNote(text, noteSigner(skey));
    const sig = note.slice(note.lastIndexOf(' ') + 1, -1);
    const flipped = Buffer.from(sig, 'base64');
    flipped[10] = (flipped[10] as number) ^ 1;
    const [ok] = await expectVerdicts([
      { c: { kind: 'note', note, vkey }, want: true, what: 'the signed checkpoint' },
      { c: { kind: 'note', note: note.replace('\n33\n', '\n34\n'), vkey }, want: false, what: 'the checkpoint with another size' },
      { c: { kind: 'note', note: note.replace(sig, flipped.toString('base64')), vkey }, want: false, what: 'a flipped signature' },
      { c: { kind: 'note', note, vkey: other.vkey }, want: false, what: 'the checkpoint against another key of the same name' },
      { c: { kind: 'note', note: signNote(text, noteSigner(other.skey)), vkey }, want: false, what: 'a checkpoint signed by another key' },
      { c: { kind: 'note', note: note.replace('\u2014', '-'), vkey }, want: false, what: 'an ASCII dash for the em dash' },
      {
        c: { kind: 'note', note: signNote(text, noteSigner(generateNoteKey('witness.example/w').skey), noteSigner(skey)), vkey },
        want: true,
        what: 'the checkpoint cosigned by an unknown witness',
      },
    ]);
    assert.equal(ok?.text, text);
    assert.deepEqual(ok?.sigs, [origin]);
    assert.equal(parseCheckpoint(ok?.text ?? '').size, 33);
  });

  it("a key pair made by Go's note.GenerateKey signs and verifies in Writ, both ways", async () => {
    const { skey, vkey } = JSON.parse(await auditcheck(['genkey', origin], '')) as { skey: string; vkey: string };
    const signer = noteSigner(skey);
    const verifier = noteVerifier(vkey);
    assert.equal(signer.name, origin);
    assert.equal(signer.keyHash, verifier.keyHash);
    assert.equal(signer.keyHash, Number.parseInt(vkey.split('+')[1] as string, 16));
    // Writ signs with Go's key; Go opens it.
    const mine = signNote(text, signer);
    await expectVerdicts([{ c: { kind: 'note', note: mine, vkey }, want: true, what: "Writ's note signed with Go's key" }]);
    // Go signs; Writ opens it, and it is byte for byte what Writ makes (Ed25519 is deterministic).
    const { note } = JSON.parse(await auditcheck(['sign'], JSON.stringify({ skey, text }))) as { note: string };
    assert.equal(note, mine);
    assert.deepEqual(openNote(note, [verifier]), { text, verifiedBy: [origin] });
    assert.throws(() => openNote(note.replace('\n33\n', '\n32\n'), [verifier]), { code: 'ERR_AUDIT_SIGNATURE_INVALID' });
  });
});
