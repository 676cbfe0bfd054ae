/**
 * Sync: the server's answer to `GET /v1/agent/sync`, checked whole, then applied to the agent's
 * state. Nothing here does I/O: the agent does what an applied answer calls for.
 */
import { WritError, parseBundleJson, parseSpiffeId, type BundleJson } from '@writ/spiffe';
import type { AgentState } from './state.ts';

export interface EntryView {
  readonly id: string;
  readonly spiffeId: string;
  readonly parentId: string;
  readonly selectors: readonly string[];
  readonly x509SvidTtl: number;
  readonly jwtSvidTtl: number;
  readonly dnsNames: readonly string[];
  readonly federatesWith: readonly string[];
  readonly admin: boolean;
  readonly hint: string;
  readonly expiresAt: string | null;
  readonly revision: number;
}

export interface SyncResponse {
  quarantine?: { version: string; ids: string[]; breakGlass: string[] };
  policy?: { revision: number; policies: Record<string, string> };
  revision: number;
  full: boolean;
  entries: EntryView[];
  removed: string[];
  bundlesVersion: string;
  /** Only when `bundlesVersion` differs from the one the agent asked with. */
  bundle?: BundleJson;
  federatedBundles?: Record<string, BundleJson>;
}

export function checkSyncResponse(raw: unknown, trustDomain: string, knownBundles: string): SyncResponse {
  const bad = (why: string): never => {
    throw new WritError('ERR_REQUEST_FAILED', `the server sent a malformed sync answer: ${why}`);
  };
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) bad('not an object');
  const r = raw as Record<string, unknown>;
  if (!Number.isSafeInteger(r['revision']) || (r['revision'] as number) < 0) bad('revision');
  if (typeof r['full'] !== 'boolean') bad('full');
  if (!Array.isArray(r['removed']) || !r['removed'].every((x) => typeof x === 'string')) bad('removed');
  if (typeof r['bundlesVersion'] !== 'string') bad('bundlesVersion');
  if (!Array.isArray(r['entries'])) bad('entries');
  const strs = (v: unknown): boolean => Array.isArray(v) && v.every((x) => typeof x === 'string');
  for (const e of r['entries'] as unknown[]) {
    const o = e as Record<string, unknown>;
    if (!o || typeof o !== 'object' || typeof o['id'] !== 'string' || !o['id']) bad('an entry without id');
    try {
      parseSpiffeId(o['spiffeId'] as string);
    } catch {
      bad(`entry ${String(o['id']).slice(0, 40)}: spiffeId`);
    }
    if (typeof o['parentId'] !== 'string' || !strs(o['selectors']) || !strs(o['dnsNames']) || !strs(o['federatesWith']))
      bad(`entry ${String(o['id']).slice(0, 40)}: fields`);
    if (typeof o['x509SvidTtl'] !== 'number' || typeof o['jwtSvidTtl'] !== 'number' || typeof o['hint'] !== 'string')
      bad(`entry ${String(o['id']).slice(0, 40)}: fields`);
    if (o['expiresAt'] !== null && typeof o['expiresAt'] !== 'string') bad(`entry ${String(o['id']).slice(0, 40)}: expiresAt`);
  }
  // The bundles come along only when they changed; a new version without them is malformed.
  if (r['bundlesVersion'] !== knownBundles || r['bundle'] !== undefined) {
    try {
      parseBundleJson(trustDomain, r['bundle']);
    } catch (err) {
      bad(`bundle: ${(err as Error).message}`);
    }
    if (!r['federatedBundles'] || typeof r['federatedBundles'] !== 'object') bad('federatedBundles');
  }
  const q = r['quarantine'] as Record<string, unknown> | undefined;
  if (q !== undefined && (typeof q !== 'object' || typeof q['version'] !== 'string' || !strs(q['ids']) || !strs(q['breakGlass']))) bad('quarantine');
  const p = r['policy'] as Record<string, unknown> | undefined;
  if (
    p !== undefined &&
    (typeof p !== 'object' ||
      !Number.isSafeInteger(p['revision']) ||
      !p['policies'] ||
      typeof p['policies'] !== 'object' ||
      !Object.values(p['policies'] as object).every((v) => typeof v === 'string'))
  )
    bad('policy');
  return r as unknown as SyncResponse;
}

/** What applying an answer changed, for the agent to act on. */
export interface Applied {
  readonly changed: boolean;
  readonly quarantine: boolean;
  readonly bundles: boolean;
}

/**
 * Applies a checked answer to `s`: quarantine first, then policy (only when `acceptPolicy`
 * compiles it), entries (a changed entry loses its SVID so a new one is signed), bundles.
 */
export function applySync(s: AgentState, r: SyncResponse, acceptPolicy: (revision: number, policies: Record<string, string>) => boolean): Applied {
  let changed = false;
  let quarantine = false;
  let bundles = false;
  if (r.quarantine && r.quarantine.version !== (s.quarantine?.version ?? '')) {
    s.quarantine = r.quarantine;
    quarantine = changed = true;
  }
  if (r.policy && r.policy.revision !== s.policyRevision && acceptPolicy(r.policy.revision, r.policy.policies)) {
    s.policyRevision = r.policy.revision;
    s.policies = r.policy.policies;
    changed = true;
  }
  const drop = (id: string): void => {
    delete s.entries[id];
    delete s.svids[id];
    changed = true;
  };
  if (r.full) {
    const keep = new Set(r.entries.map((e) => e.id));
    for (const id of Object.keys(s.entries)) if (!keep.has(id)) drop(id);
  }
  for (const id of r.removed) if (s.entries[id]) drop(id);
  for (const e of r.entries) {
    const prev = s.entries[e.id];
    // A changed entry (new TTL, DNS names, ID) needs a new SVID.
    if (prev && (prev.spiffeId !== e.spiffeId || prev.x509SvidTtl !== e.x509SvidTtl || prev.dnsNames.join() !== e.dnsNames.join())) delete s.svids[e.id];
    s.entries[e.id] = e;
    changed = true;
  }
  if (r.bundlesVersion !== s.bundlesVersion) {
    s.bundle = r.bundle;
    s.federated = r.federatedBundles!;
    s.bundlesVersion = r.bundlesVersion;
    bundles = changed = true;
  }
  s.revision = r.revision;
  return { changed, quarantine, bundles };
}
