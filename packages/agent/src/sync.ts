/**
 * Sync: the server's answer to `GET /v1/agent/sync`, checked whole (@writ/protocol's
 * decodeSyncAnswer), then applied to the agent's
 * state. Nothing here does I/O: the agent does what an applied answer calls for.
 */
import type { EntryMessage, SyncAnswer } from '@writ/protocol';
import type { AgentState } from './state.ts';

/** An entry as the agent keeps and serves it: the contract's one entry shape. */
export type EntryView = EntryMessage;

/** What applying an answer changed, for the agent to act on. */
export interface Applied {
  readonly changed: boolean;
  readonly quarantine: boolean;
  readonly bundles: boolean;
  /** The admitted images or the server's requireAdmittedImage changed. */
  readonly images: boolean;
}

/**
 * Applies a checked answer to `s`: quarantine first, then policy (only when `acceptPolicy`
 * compiles it), entries (a changed entry loses its SVID so a new one is signed), bundles.
 */
export function applySync(s: AgentState, r: SyncAnswer, acceptPolicy: (revision: number, policies: Record<string, string>) => boolean): Applied {
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
  let images = false;
  if (r.admittedImages) {
    const a = r.admittedImages;
    const had = s.admittedImages?.digests ?? [];
    const seen = new Set(had);
    // A delta adds to the set of the version the agent reported; a full answer replaces it.
    s.admittedImages = { version: a.version, digests: a.full ? a.digests : [...had, ...a.digests.filter((d) => !seen.has(d))] };
    images = changed = true;
  }
  const requireAll = r.requireAdmittedImage === true;
  if (requireAll !== (s.requireAdmittedImage === true)) {
    s.requireAdmittedImage = requireAll;
    images = changed = true;
  }
  s.revision = r.revision;
  return { changed, quarantine, bundles, images };
}
