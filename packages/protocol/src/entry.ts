/** The one shape of a registration entry on the wire: the admin API's answers and the agent's sync. */
import { parseSpiffeId } from '@writ/spiffe';
import { type Fields, isObject, isStrings } from './check.ts';

/** An entry as the server stores it (times in epoch milliseconds). */
export interface EntryRecord {
  readonly id: string;
  readonly spiffeId: string;
  readonly parentId: string;
  /** `type:value` selectors; all must match. */
  readonly selectors: readonly string[];
  /** Seconds; 0 means the server default. */
  readonly x509SvidTtl: number;
  readonly jwtSvidTtl: number;
  readonly dnsNames: readonly string[];
  readonly federatesWith: readonly string[];
  readonly admin: boolean;
  readonly hint: string;
  /** Epoch milliseconds, or null for no expiry. */
  readonly expiresAt: number | null;
  /** Increases on every change; the agent sync follows it. */
  readonly revision: number;
  readonly createdAt: number;
  readonly updatedAt: number;
  /**
   * SVIDs only for a container whose image digest was admitted under an enforce admission policy
   * (absent: false, as for entries stored before the field existed).
   */
  readonly requireAdmittedImage?: boolean;
  /** Who owns the workloads served this entry's ID (issue 13: affected workloads are grouped by owner); absent: none. Not sent to agents. */
  readonly owner?: string;
}

/** An entry on the wire (times as RFC 3339). What an agent keeps and serves from. */
export interface EntryMessage {
  readonly id: string;
  readonly spiffeId: string;
  readonly parentId: string;
  readonly selectors: readonly string[];
  /** Seconds; 0: the server's default. */
  readonly x509SvidTtl: number;
  readonly jwtSvidTtl: number;
  readonly dnsNames: readonly string[];
  readonly federatesWith: readonly string[];
  readonly admin: boolean;
  readonly hint: string;
  readonly expiresAt: string | null;
  readonly revision: number;
  /** Absent in the caches of agents from before they were sent. */
  readonly createdAt?: string;
  readonly updatedAt?: string;
  /** Present (true) only when set: lean answers, and agents' caches from before it existed. */
  readonly requireAdmittedImage?: true;
}

export function encodeEntry(e: EntryRecord): EntryMessage {
  return {
    id: e.id,
    spiffeId: e.spiffeId,
    parentId: e.parentId,
    selectors: e.selectors,
    x509SvidTtl: e.x509SvidTtl,
    jwtSvidTtl: e.jwtSvidTtl,
    dnsNames: e.dnsNames,
    federatesWith: e.federatesWith,
    admin: e.admin,
    hint: e.hint,
    expiresAt: e.expiresAt === null ? null : new Date(e.expiresAt).toISOString(),
    revision: e.revision,
    createdAt: new Date(e.createdAt).toISOString(),
    updatedAt: new Date(e.updatedAt).toISOString(),
    ...(e.requireAdmittedImage ? { requireAdmittedImage: true as const } : {}),
  };
}

/** Why `v` is not an EntryMessage, or undefined when it is one. */
export function entryProblem(v: unknown): string | undefined {
  if (!isObject(v) || typeof v['id'] !== 'string' || !v['id']) return 'an entry without id';
  const o: Fields = v;
  const name = `entry ${String(o['id']).slice(0, 40)}`;
  try {
    parseSpiffeId(o['spiffeId'] as string);
  } catch {
    return `${name}: spiffeId`;
  }
  if (typeof o['parentId'] !== 'string' || !isStrings(o['selectors']) || !isStrings(o['dnsNames']) || !isStrings(o['federatesWith'])) return `${name}: fields`;
  if (typeof o['x509SvidTtl'] !== 'number' || typeof o['jwtSvidTtl'] !== 'number' || typeof o['hint'] !== 'string') return `${name}: fields`;
  if (o['expiresAt'] !== null && typeof o['expiresAt'] !== 'string') return `${name}: expiresAt`;
  // Anything but absent or true could be read as "not required" by a careless reader: refused.
  if (o['requireAdmittedImage'] !== undefined && o['requireAdmittedImage'] !== true) return `${name}: requireAdmittedImage`;
  return undefined;
}
