/**
 * `writ audit verify|prove|tail|export-checkpoint` (issue 15, section 1): the audit log checked
 * on the client's side. verify recomputes the tree from every entry (streamed page by page; only
 * the compact range and the last few thousand leaf hashes are kept), checks the signed checkpoint with the log key and, given a
 * checkpoint saved earlier, that the log only grew since. Any edit, deletion, insertion or
 * reordering: exit 3 naming the first bad index.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { type Command, CommanderError } from 'commander';
import { WritError, isWritError } from '@writ/spiffe';
import {
  AUDIT_PAGE_MEDIA_TYPE,
  AuditPageWriter,
  type Checkpoint,
  CompactRange,
  MAX_AUDIT_PAGE_BYTES,
  encodeAuditLeaf,
  leafHash,
  noteVerifier,
  openNote,
  parseCheckpoint,
  verifyConsistency,
  verifyInclusion,
  type NoteVerifier,
  TRANSPARENCY_ERROR_CODES,
} from '@writ/transparency';
import type { PageResult, PageTask } from './audit-verify-worker.ts';
import type { ApiClient } from './client.ts';
import { print, streamed, type Format } from './output.ts';

type ClientOf = (cmd: Command) => { api: ApiClient; format: Format };

interface EntryJson {
  index: number;
  body: string;
  leafHash: string;
}
interface PageJson {
  size: number;
  start: number;
  end: number;
  entries: EntryJson[];
}

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const b64 = (b: Uint8Array): string => Buffer.from(b).toString('base64');
const equal = (a: Uint8Array, b: Uint8Array): boolean => Buffer.from(a).equals(Buffer.from(b));
const utf8 = (s: string): Uint8Array => Buffer.from(s, 'utf8');
/** How many of the last leaf hashes verify keeps to find the first bad index among (32 bytes each). */
const RECENT = 4096;
/** The largest page verify asks for: the server's MAX_AUDIT_PAGE. */
const MAX_PAGE = 10_000;
/** How many pages verify fetches ahead of the one it folds. */
const IN_FLIGHT = 4;
/** The worker's module beside this one: audit-verify-worker.ts in the sources, .js in the bundle in dist/. */
const WORKER = new URL(import.meta.url.endsWith('.ts') ? './audit-verify-worker.ts' : './audit-verify-worker.js', import.meta.url);

/** The bytes as a buffer of their own, to transfer to a worker (a small Buffer lives in Node's shared pool). */
const own = (b: Buffer): Uint8Array => (b.byteOffset === 0 && b.buffer.byteLength === b.length ? new Uint8Array(b.buffer) : new Uint8Array(b));

/** Worker threads that decode and hash pages of entries (audit-verify-worker.ts), given round robin. */
class PagePool {
  readonly #workers: Worker[] = [];
  readonly #waiting = new Map<number, { resolve: (r: PageResult) => void; reject: (e: Error) => void }>();
  #next = 0;

  constructor(n: number) {
    for (let k = 0; k < n; k++) {
      const w = new Worker(WORKER);
      w.on('message', (r: PageResult) => {
        const waiter = this.#waiting.get(r.id);
        this.#waiting.delete(r.id);
        waiter?.resolve(r);
      });
      w.on('error', (e) => this.#fail(e));
      w.on('exit', (code) => {
        if (code !== 0) this.#fail(new Error(`a verify worker exited with code ${code}`));
      });
      this.#workers.push(w);
    }
  }

  #fail(e: Error): void {
    for (const w of this.#waiting.values()) w.reject(e);
    this.#waiting.clear();
  }

  run(data: Uint8Array, start: number, end: number): Promise<PageResult> {
    const id = this.#next++;
    const w = this.#workers[id % this.#workers.length] as Worker;
    return new Promise((resolve, reject) => {
      this.#waiting.set(id, { resolve, reject });
      const task: PageTask = { id, data, start, end };
      w.postMessage(task, [data.buffer as ArrayBuffer]);
    });
  }

  close(): void {
    for (const w of this.#workers) void w.terminate();
  }
}

/**
 * A JSON page of entries (`{size, start, end, entries: [{index, body, leafHash}]}`, what a server
 * without the compact format answers) as a compact page, for the workers to check like any other;
 * a string saying what is wrong when it is not such a page.
 */
function compactOfJson(body: Buffer, start: number, end: number): Uint8Array | string {
  const bad = (why: string): string => `the server's JSON page of entries from ${start} is malformed: ${why}`;
  let p: Partial<PageJson>;
  try {
    p = JSON.parse(body.toString('utf8')) as Partial<PageJson>;
  } catch {
    return bad('not JSON');
  }
  if (typeof p !== 'object' || p === null || !Array.isArray(p.entries)) return bad('no entries');
  const { size, start: s, end: e, entries } = p;
  if (![size, s, e].every((n) => Number.isSafeInteger(n) && (n as number) >= 0)) return bad('no size, start and end');
  if (entries.length > end - start) return bad(`${entries.length} entries for the ${end - start} asked for`);
  try {
    const w = new AuditPageWriter(size as number, s as number, e as number);
    for (const x of entries) {
      if (typeof x?.body !== 'string' || typeof x.leafHash !== 'string' || !/^[0-9a-f]{64}$/i.test(x.leafHash))
        return bad('an entry without body or leaf hash');
      w.add(x.index, Buffer.from(x.leafHash, 'hex'), x.body);
    }
    return w.finish().slice();
  } catch (err) {
    return bad((err as Error).message);
  }
}

/** The log's verifier: the pinned key file, or the server's (trust on first use; pin it with --key). */
async function verifierOf(api: ApiClient, keyFile: string | undefined): Promise<NoteVerifier> {
  const vkey = keyFile ? readText(keyFile, '--key') : await api.text('/v1/audit/key');
  return noteVerifier(vkey.trim());
}

function readText(file: string, what: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new WritError('ERR_CONFIG_INVALID', `cannot read ${what} ${file}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`, { field: what.slice(2) });
  }
}

/** A signed checkpoint opened with the log key: the signature must be the log's and name its origin. */
function openCheckpoint(note: string, verifier: NoteVerifier): Checkpoint {
  const { text } = openNote(note, [verifier]);
  const c = parseCheckpoint(text);
  if (c.origin !== verifier.name)
    throw new WritError('ERR_AUDIT_SIGNATURE_INVALID', `the checkpoint is for log "${c.origin.slice(0, 200)}", the key for "${verifier.name}"`);
  return c;
}

async function latestCheckpoint(api: ApiClient, verifier: NoteVerifier): Promise<{ note: string; checkpoint: Checkpoint }> {
  const note = await api.text('/v1/audit/checkpoint');
  return { note, checkpoint: openCheckpoint(note, verifier) };
}

const violation = (index: number | undefined, why: string): CommanderError =>
  new CommanderError(3, 'writ.violation', index === undefined ? `audit log: ${why}` : `audit log: first bad index ${index}: ${why}`);

export interface VerifyResult {
  readonly size: number;
  readonly root: Uint8Array;
  readonly origin: string;
  readonly trustedSize?: number;
}

/**
 * Recomputes the tree of the latest checkpoint from its entries. Entry i's leaf is
 * leafHash(encodeAuditLeaf(i, leaf i-1's hash, body)): a change shows where a recomputed hash
 * first differs from the one stored at append time (or the root from the signed one), and the
 * first bad index is then the first recomputed leaf the signed tree does not include (inclusion
 * proofs; a leaf included vouches for all before it, through the chain).
 */
export async function verifyLog(api: ApiClient, o: { keyFile?: string; trustedFile?: string; pageSize?: number; workers?: number }): Promise<VerifyResult> {
  const verifier = await verifierOf(api, o.keyFile);
  const trusted = o.trustedFile ? openCheckpoint(readText(o.trustedFile, '--trusted-checkpoint'), verifier) : undefined;
  let checkpoint: Checkpoint;
  try {
    checkpoint = (await latestCheckpoint(api, verifier)).checkpoint;
  } catch (err) {
    if (isWritError(err) && (TRANSPARENCY_ERROR_CODES as readonly string[]).includes(err.code))
      throw violation(undefined, `the latest checkpoint does not verify: ${err.message}`);
    throw err;
  }
  if (trusted && trusted.size > checkpoint.size)
    throw violation(checkpoint.size, `the log has ${checkpoint.size} entries, fewer than the ${trusted.size} of the trusted checkpoint: entries were removed`);
  const range = new CompactRange();
  let prev: Uint8Array | null = null;
  // The last RECENT recomputed leaf hashes (a ring): where a mismatch is found, the first bad index is searched among them.
  const recent: Uint8Array[] = new Array(RECENT);
  const kept = (): number => Math.min(range.size, RECENT);
  let trustedRoot = trusted?.size === 0 ? range.root() : undefined;
  /** The first of the recent leaves (below `i`) not in the signed tree: leaf j chains on j-1, so once one is out all later ones are. */
  const locate = async (i: number): Promise<number> => {
    let lo = i - kept();
    let hi = i;
    while (lo < hi) {
      const mid = Math.floor((lo + hi) / 2);
      const h = recent[mid % RECENT]!;
      const p = await api.call<{ proof: string[] }>('GET', `/v1/audit/proof/inclusion?index=${mid}&size=${checkpoint.size}`);
      let included = true;
      try {
        verifyInclusion(
          h,
          mid,
          checkpoint.size,
          p.proof.map((x) => Buffer.from(x, 'base64')),
          checkpoint.rootHash,
        );
      } catch {
        included = false;
      }
      if (included) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  };
  const pageSize = Math.min(MAX_PAGE, o.pageSize ?? MAX_PAGE);
  const pool = new PagePool(o.workers ?? Math.max(1, Math.min(2, availableParallelism())));
  try {
    // Pages are fetched ahead (IN_FLIGHT at once) and parsed and hashed by the pool's workers;
    // this thread folds the tree in page order. A page that ends early (the server's own limit)
    // drops the ones fetched ahead, and the next is asked from where it ended.
    type Pending = { start: number; end: number; result: Promise<PageResult> };
    const ahead: Pending[] = [];
    let asked = 0;
    const ask = (): void => {
      while (ahead.length < IN_FLIGHT && asked < checkpoint.size) {
        const start = asked;
        const end = Math.min(checkpoint.size, start + pageSize);
        const result = api
          .bytes(`/v1/audit/entries?start=${start}&end=${end}`, { accept: AUDIT_PAGE_MEDIA_TYPE, maxBytes: MAX_AUDIT_PAGE_BYTES, timeoutMs: 120_000 })
          .then((r): PageResult | Promise<PageResult> => {
            const type = r.type.split(';')[0]?.trim().toLowerCase();
            if (type === AUDIT_PAGE_MEDIA_TYPE) return pool.run(own(r.body), start, end);
            // A server older than the compact format answers its JSON page: the same entries, checked the same way.
            if (type === 'application/json') {
              const page = compactOfJson(r.body, start, end);
              return typeof page === 'string' ? { id: -1, error: page } : pool.run(page, start, end);
            }
            throw new WritError(
              'ERR_REQUEST_FAILED',
              `the server answered GET /v1/audit/entries as ${JSON.stringify(r.type.slice(0, 60))}, neither ${AUDIT_PAGE_MEDIA_TYPE} nor application/json: is ${api.origin} a Writ server?`,
            );
          });
        result.catch(() => undefined); // awaited in order below; one dropped or not reached yet must not be unhandled
        ahead.push({ start, end, result });
        asked = end;
      }
    };
    ask();
    while (ahead.length > 0) {
      const want = ahead.shift() as Pending;
      const p = await want.result;
      if ('error' in p) throw violation(range.size, p.error);
      const firstIndexBad = p.badIndex >= 0 ? p.badIndex : Number.POSITIVE_INFINITY;
      const firstHashBad = p.badHash >= 0 ? p.badHash : Number.POSITIVE_INFINITY;
      for (let j = 0; j < p.count; j++) {
        const i = range.size;
        if (j === firstIndexBad) {
          const at = p.badIndexIs;
          throw violation(i, at > i ? `entry ${i} is missing (deleted)` : `entry ${at} is out of place (inserted or reordered)`);
        }
        let lh: Uint8Array;
        if (j === 0) {
          lh = leafHash(encodeAuditLeaf(i, prev, p.first as Uint8Array));
          // Differs from the hash stored when it was appended: this entry, or one before it rewritten with its hash (the chain breaks here).
          if (!Buffer.from(lh.buffer, lh.byteOffset, lh.length).equals(p.stored.subarray(0, 32)))
            throw violation(await locate(i), 'the entry is not the one that was appended');
        } else {
          if (j === firstHashBad) throw violation(await locate(i), 'the entry is not the one that was appended');
          lh = p.hashes.subarray(j * 32, j * 32 + 32);
        }
        range.append(lh);
        prev = lh;
        recent[i % RECENT] = lh;
        if (trusted && range.size === trusted.size) trustedRoot = range.root();
      }
      if (p.count === 0 && range.size < checkpoint.size) break;
      if (p.end !== want.end || (ahead.length > 0 && (ahead[0] as Pending).start !== p.end)) {
        ahead.length = 0;
        asked = p.end;
      }
      if (p.end < checkpoint.size) ask();
    }
  } finally {
    pool.close();
  }
  if (range.size !== checkpoint.size) throw violation(range.size, `the server gave ${range.size} entries for a checkpoint of ${checkpoint.size}`);
  if (!equal(range.root(), checkpoint.rootHash)) {
    const at = await locate(range.size);
    throw violation(
      at < range.size ? at : undefined,
      `the root of the ${range.size} entries (${b64(range.root())}) is not the signed checkpoint's (${b64(checkpoint.rootHash)})`,
    );
  }
  if (trusted) {
    if (!trustedRoot || !equal(trustedRoot, trusted.rootHash))
      throw violation(undefined, `the first ${trusted.size} entries are not those of the trusted checkpoint: history before it was rewritten`);
    if (trusted.size > 0 && trusted.size < checkpoint.size) {
      const c = await api.call<{ proof: string[] }>('GET', `/v1/audit/proof/consistency?from=${trusted.size}&to=${checkpoint.size}`);
      try {
        verifyConsistency(
          trusted.size,
          checkpoint.size,
          c.proof.map((h) => Buffer.from(h, 'base64')),
          trusted.rootHash,
          checkpoint.rootHash,
        );
      } catch (err) {
        throw violation(undefined, `the latest checkpoint is not consistent with the trusted one: ${(err as Error).message}`);
      }
    }
  }
  return { size: range.size, root: range.root(), origin: checkpoint.origin, ...(trusted ? { trustedSize: trusted.size } : {}) };
}

function describeBody(body: string): { at: string; actor: string; kind: string; subject: string } {
  try {
    const b = JSON.parse(body) as { at?: unknown; actor?: unknown; kind?: unknown; subject?: unknown };
    return {
      at: typeof b.at === 'number' ? new Date(b.at).toISOString() : '?',
      actor: String(b.actor ?? '?'),
      kind: String(b.kind ?? '?'),
      subject: String(b.subject ?? ''),
    };
  } catch {
    return { at: '?', actor: '?', kind: '?', subject: '(not JSON)' };
  }
}

export function registerAudit(program: Command, clientOf: ClientOf): void {
  const audit = program
    .command('audit')
    .description('the audit log: every control-plane change as a leaf of a signed Merkle tree (RFC 9162, C2SP checkpoints)');
  const keyHelp = "the log's verifier key file (DATA_DIR/audit-log.vkey); default: the server's, as GET /v1/audit/key answers";

  audit
    .command('verify')
    .description(
      'recompute the tree from every entry, check the signed checkpoint with the log key and, with --trusted-checkpoint, that the log only grew since; exit 3 naming the first bad index on any edit, deletion, insertion or reordering',
    )
    .option('--trusted-checkpoint <file>', 'a checkpoint saved earlier (writ audit export-checkpoint): the log must be consistent with it')
    .option('--key <file>', keyHelp)
    .action(async (f: { trustedCheckpoint?: string; key?: string }, cmd: Command) => {
      const { api, format } = clientOf(cmd);
      const r = await verifyLog(api, { ...(f.key ? { keyFile: f.key } : {}), ...(f.trustedCheckpoint ? { trustedFile: f.trustedCheckpoint } : {}) });
      const out = {
        verified: true,
        origin: r.origin,
        size: r.size,
        root: b64(r.root),
        ...(r.trustedSize !== undefined ? { consistentWith: r.trustedSize } : {}),
      };
      if (format !== 'table') return print(format, out);
      process.stdout.write(
        `verified ${r.size} entries of ${r.origin}: root ${b64(r.root)} matches the signed checkpoint${r.trustedSize !== undefined ? `, consistent with the trusted checkpoint of size ${r.trustedSize}` : ''}\n`,
      );
    });

  audit
    .command('prove')
    .description("show that entry INDEX is in the latest checkpoint's tree: its inclusion proof, verified here against the signed checkpoint")
    .argument('<index>', 'the entry index (from 0)')
    .option('--key <file>', keyHelp)
    .action(async (index: string, f: { key?: string }, cmd: Command) => {
      const { api, format } = clientOf(cmd);
      if (!/^\d{1,16}$/.test(index)) throw new WritError('ERR_AUDIT_RANGE', 'INDEX must be a whole number', { field: 'index' });
      const i = Number(index);
      const verifier = await verifierOf(api, f.key);
      const { checkpoint } = await latestCheckpoint(api, verifier);
      const proof = await api.call<{ proof: string[] }>('GET', `/v1/audit/proof/inclusion?index=${i}&size=${checkpoint.size}`);
      const page = await api.call<PageJson>('GET', `/v1/audit/entries?start=${Math.max(0, i - 1)}&end=${i + 1}`);
      const entry = page.entries.find((e) => e.index === i);
      const before = page.entries.find((e) => e.index === i - 1);
      if (!entry || (i > 0 && !before)) throw violation(i, 'the server did not give the entry');
      const lh = leafHash(encodeAuditLeaf(i, before ? Buffer.from(before.leafHash, 'hex') : null, utf8(entry.body)));
      try {
        verifyInclusion(
          lh,
          i,
          checkpoint.size,
          proof.proof.map((h) => Buffer.from(h, 'base64')),
          checkpoint.rootHash,
        );
      } catch (err) {
        throw violation(i, `the entry is not in the signed tree: ${(err as Error).message}`);
      }
      const out = { index: i, size: checkpoint.size, root: b64(checkpoint.rootHash), leafHash: hex(lh), proof: proof.proof, body: entry.body };
      if (format !== 'table') return print(format, out);
      const d = describeBody(entry.body);
      process.stdout.write(
        `entry ${i} (${d.kind} ${d.subject} by ${d.actor} at ${d.at}) is in the tree of ${checkpoint.size} entries with root ${b64(checkpoint.rootHash)}: inclusion proof of ${proof.proof.length} hashes verified\n`,
      );
    });

  audit
    .command('tail')
    .description(
      'the latest entries of the audit log (checkpointed ones), one line each (-o json: a JSON line, -o yaml: a document each); -f follows new ones as they are checkpointed',
    )
    .option('-n, --lines <n>', 'how many of the latest entries', '20')
    .option('-f, --follow', 'keep printing new entries')
    .action(async (f: { lines: string; follow?: boolean }, cmd: Command) => {
      const { api, format } = clientOf(cmd);
      if (!/^\d{1,6}$/.test(f.lines)) throw new WritError('ERR_FIELD_INVALID', '--lines must be a whole number up to 999999', { field: 'lines' });
      const show = (entries: EntryJson[]): void => {
        for (const e of entries) {
          const d = describeBody(e.body);
          process.stdout.write(streamed(format, { index: e.index, ...d, body: e.body }, () => `${e.index}  ${d.at}  ${d.actor}  ${d.kind}  ${d.subject}`));
        }
      };
      const head = await api.call<PageJson>('GET', '/v1/audit/entries?start=0&end=0');
      let at = Math.max(0, head.size - Number(f.lines));
      for (;;) {
        const p = await api.call<PageJson>('GET', `/v1/audit/entries?start=${at}`);
        show(p.entries);
        at = p.end;
        if (p.end < p.size) continue;
        if (!f.follow) return;
        await new Promise((r) => setTimeout(r, 1000));
      }
    });

  audit
    .command('export-checkpoint')
    .description(
      'the latest signed checkpoint, its signature checked with the log key: keep it off the box (a witness, another store) and verify against it later with --trusted-checkpoint',
    )
    .option('--out <file>', 'write it to this file (default: standard output)')
    .option('--key <file>', keyHelp)
    .action(async (f: { out?: string; key?: string }, cmd: Command) => {
      const { api } = clientOf(cmd);
      const { note, checkpoint } = await latestCheckpoint(api, await verifierOf(api, f.key));
      if (!f.out) return void process.stdout.write(note);
      writeFileSync(f.out, note, { mode: 0o644 });
      process.stderr.write(`wrote the checkpoint of ${checkpoint.size} entries of ${checkpoint.origin} to ${f.out}\n`);
    });
}
