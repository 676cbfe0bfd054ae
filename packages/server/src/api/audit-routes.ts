/**
 * The audit log (issue 15, section 1): the latest signed checkpoint, entries, inclusion and
 * consistency proofs, and the log's verifier key. Viewer role reads; sizes past the latest
 * checkpoint are refused (ERR_AUDIT_RANGE), so every proof is one a client can check against a
 * checkpoint it has.
 */
import { AUDIT_PAGE_BUDGET, MAX_AUDIT_PAGE } from '../audit/audit-log.ts';
import type { AuditEntry } from '../store/types.ts';
import type { ApiContext } from './context.ts';
import { WritError } from '@writ/spiffe';
import { AUDIT_PAGE_MEDIA_TYPE, AuditPageWriter } from '@writ/transparency';
import { ok, stringParam, type AddRoute, type Request } from './http.ts';

const b64 = (h: Uint8Array): string => Buffer.from(h).toString('base64');

/** A whole-number query parameter, or undefined when absent; negative, fractional or huge: ERR_AUDIT_RANGE (the log's own code). */
function int(req: Request, name: string): number | undefined {
  const v = req.query.get(name);
  if (v === null) return undefined;
  const n = /^\d{1,16}$/.test(v) ? Number(v) : Number.NaN;
  if (!Number.isSafeInteger(n)) throw new WritError('ERR_AUDIT_RANGE', `${name} must be a whole number from 0 to 2^53-1`, { field: name });
  return n;
}
const INDEX = stringParam(20);

/** Whether the Accept header names the compact page format (with a q above 0); anything else gets JSON. */
function wantsCompact(req: Request): boolean {
  const accept = req.raw.headers.accept;
  if (!accept || accept.length > 1024) return false;
  return accept.split(',').some((range) => {
    const [type, ...params] = range.split(';').map((p) => p.trim().toLowerCase());
    return type === AUDIT_PAGE_MEDIA_TYPE && !params.some((p) => /^q=0(\.0*)?$/.test(p));
  });
}

/** The page in the compact format (@writ/transparency's audit-page.ts), written straight from the rows: no copy of a body or hash per entry. */
function compactPage(page: { size: number; start: number; end: number; entries: readonly AuditEntry[] }): Uint8Array {
  let chars = 0;
  for (const e of page.entries) chars += e.body.length;
  const w = new AuditPageWriter(page.size, page.start, page.end, 64 + page.entries.length * 44 + Math.ceil(chars * 1.1));
  const hash = Buffer.alloc(32);
  for (const e of page.entries) {
    // A stored hash that is not one (a row edited by hand) goes out as zeros: it can match no entry, as in JSON.
    if (e.leafHash.length !== 64 || hash.write(e.leafHash, 0, 'hex') !== 32) hash.fill(0);
    w.add(e.index, hash, e.body);
  }
  return w.finish();
}

function required(req: Request, name: string): number {
  const n = int(req, name);
  if (n === undefined) throw new WritError('ERR_FIELD_MISSING', `query parameter "${name}" is required`, { field: name });
  return n;
}

export function auditRoutes(ctx: ApiContext, add: AddRoute): void {
  const audit = ctx.audit;
  add(
    'GET',
    '/v1/audit/checkpoint',
    'viewer',
    "The audit log's latest checkpoint: a C2SP tlog-checkpoint signed as a C2SP signed note by the server's log key (text/plain).",
    async () => ({ status: 200, body: (await audit.latest()).note, contentType: 'text/plain; charset=utf-8' }),
  );
  add('GET', '/v1/audit/key', 'viewer', "The log's verifier key in the golang.org/x/mod/sumdb/note format (text/plain).", () => ({
    status: 200,
    body: `${audit.vkey}\n`,
    contentType: 'text/plain; charset=utf-8',
  }));
  add(
    'GET',
    '/v1/audit/entries',
    'viewer',
    `Audit entries [start, end) of the latest checkpoint's tree, at most ${MAX_AUDIT_PAGE} and about ${AUDIT_PAGE_BUDGET / 1024 / 1024} MiB of bodies (the answer's end says where the page stopped). Each entry's body is the exact text its leaf hashes. end defaults to the checkpoint's size; past it: 400 ERR_AUDIT_RANGE. JSON, or with Accept: ${AUDIT_PAGE_MEDIA_TYPE} the compact binary page of docs/api.md (what writ audit verify reads).`,
    async (req) => {
      const page = await audit.entries(int(req, 'start') ?? 0, int(req, 'end'));
      if (wantsCompact(req)) return { status: 200, body: compactPage(page), contentType: AUDIT_PAGE_MEDIA_TYPE, headers: { vary: 'accept' } };
      return { ...ok(page), headers: { vary: 'accept' } };
    },
    undefined,
    { start: INDEX, end: INDEX },
  );
  add(
    'GET',
    '/v1/audit/proof/inclusion',
    'viewer',
    "RFC 9162 inclusion proof of leaf index in the tree of size leaves (default: the latest checkpoint's size; larger: 400 ERR_AUDIT_RANGE). Hashes in base64.",
    async (req) => {
      const p = await audit.inclusion(required(req, 'index'), int(req, 'size'));
      return ok({ index: p.index, size: p.size, proof: p.proof.map(b64) });
    },
    undefined,
    { index: INDEX, size: INDEX },
  );
  add(
    'GET',
    '/v1/audit/proof/consistency',
    'viewer',
    "RFC 9162 consistency proof from the tree of from leaves to the tree of to leaves (default: the latest checkpoint's size; larger: 400 ERR_AUDIT_RANGE). Hashes in base64.",
    async (req) => {
      const p = await audit.consistency(required(req, 'from'), int(req, 'to'));
      return ok({ from: p.from, to: p.to, proof: p.proof.map(b64) });
    },
    undefined,
    { from: INDEX, to: INDEX },
  );
}
