/**
 * Who owns a running workload (issue 13: affected workloads are grouped by owner). In order: the
 * `owner` of an entry whose ID the workload was served, then the workload's labels and annotations
 * by the configured keys (each list in its order), then the namespace map; none: null.
 *
 * Server config (YAML):
 *
 *     owners:
 *       labels: [team, app.kubernetes.io/part-of]   # default: team, owner, app.kubernetes.io/part-of
 *       annotations: [example.com/owner]            # default: none
 *       namespaces: { payments: team-payments }     # default: none
 */
import { WritError } from '@writ/spiffe';

export interface OwnerRules {
  readonly labels: readonly string[];
  readonly annotations: readonly string[];
  readonly namespaces: Readonly<Record<string, string>>;
}

export const DEFAULT_OWNER_RULES: OwnerRules = { labels: ['team', 'owner', 'app.kubernetes.io/part-of'], annotations: [], namespaces: {} };

const KEYS = ['labels', 'annotations', 'namespaces'];
/** A Kubernetes label or annotation key: an optional DNS-subdomain prefix and '/', then a name. */
const LABEL_KEY = /^(?:[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?\/)?[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$/;
/** A Kubernetes namespace name (RFC 1123 label). */
const NAMESPACE = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

function bad(field: string, msg: string): never {
  throw new WritError('ERR_CONFIG_INVALID', `${field}: ${msg}`, { field });
}

function keyList(v: unknown, field: string, fallback: readonly string[]): string[] {
  if (v === undefined || v === null) return [...fallback];
  if (!Array.isArray(v)) return bad(field, 'must be a list of label keys (e.g. [team, app.kubernetes.io/part-of])');
  return v.map((k, i) => (typeof k === 'string' && LABEL_KEY.test(k) ? k : bad(`${field}[${i}]`, `${JSON.stringify(k)} is not a Kubernetes label key`)));
}

/** The `owners` setting of the server config; ERR_CONFIG_INVALID naming the setting (`owners.namespaces.payments`). */
export function parseOwnerRules(v: unknown): OwnerRules {
  if (v === undefined || v === null) return DEFAULT_OWNER_RULES;
  if (typeof v !== 'object' || Array.isArray(v)) return bad('owners', 'must be a mapping { labels, annotations, namespaces }');
  const o = v as Record<string, unknown>;
  for (const k of Object.keys(o)) if (!KEYS.includes(k)) bad(`owners.${k}`, `unknown setting; known: ${KEYS.join(', ')}`);
  const ns = o['namespaces'] ?? {};
  if (typeof ns !== 'object' || ns === null || Array.isArray(ns)) bad('owners.namespaces', 'must map namespaces to owners ({ payments: team-payments })');
  const namespaces: Record<string, string> = {};
  for (const [name, owner] of Object.entries(ns as Record<string, unknown>)) {
    if (!NAMESPACE.test(name)) bad(`owners.namespaces.${name}`, 'is not a Kubernetes namespace name');
    if (typeof owner !== 'string' || owner.trim() === '' || owner.length > 256) bad(`owners.namespaces.${name}`, 'must be an owner name (1 to 256 characters)');
    namespaces[name] = owner.trim();
  }
  return {
    labels: keyList(o['labels'], 'owners.labels', DEFAULT_OWNER_RULES.labels),
    annotations: keyList(o['annotations'], 'owners.annotations', DEFAULT_OWNER_RULES.annotations),
    namespaces,
  };
}

/**
 * The owner of one workload. `entryOwners` maps SPIFFE IDs to the owner set on an entry of that ID
 * (the workload's IDs are tried in sorted order, so the answer does not depend on report order).
 */
export function resolveOwner(
  rules: OwnerRules,
  w: {
    readonly spiffeIds: readonly string[];
    readonly labels: Readonly<Record<string, string>>;
    readonly annotations: Readonly<Record<string, string>>;
    readonly namespace: string | null;
  },
  entryOwners: ReadonlyMap<string, string>,
): string | null {
  for (const id of [...w.spiffeIds].sort()) {
    const o = entryOwners.get(id);
    if (o) return o;
  }
  for (const k of rules.labels) {
    const v = w.labels[k]?.trim();
    if (v) return v;
  }
  for (const k of rules.annotations) {
    const v = w.annotations[k]?.trim();
    if (v) return v.slice(0, 256);
  }
  return (w.namespace !== null && rules.namespaces[w.namespace]) || null;
}
