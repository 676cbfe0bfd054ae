/** Validation of API input into store types. Every error names the field it is about. */
import { WritError, parseDuration, parseSpiffeId, parseTrustDomain } from '@writ/spiffe';
import { encodeEntry, hasControlChar, type EntryMessage } from '@writ/protocol';
import type { Entry, EntryInput } from '../store/types.ts';
import { object, onlyKeys, str, strList, withField, type Json } from './http.ts';

const SELECTOR = /^[a-z0-9_-]{1,32}:[\x21-\x7e][\x20-\x7e]{0,255}$/;
const DNS_LABEL = /^(?!-)[a-zA-Z0-9-]{1,63}(?<!-)$/;

export const MAX_X509_TTL_MS = 30 * 86_400_000;
export const MAX_JWT_TTL_MS = 86_400_000;

export function parseSelector(s: string, field: string): string {
  if (!SELECTOR.test(s)) {
    throw new WritError(
      'ERR_SELECTOR_INVALID',
      `${field}: ${JSON.stringify(s.slice(0, 80))} is not a selector "type:value" (type a-z 0-9 _ -, value printable ASCII, at most 256 characters)`,
      { field },
    );
  }
  return s;
}

export function parseDnsName(s: string, field: string): string {
  const name = s.startsWith('*.') ? s.slice(2) : s;
  if (s.length > 253 || !name.split('.').every((l) => DNS_LABEL.test(l))) {
    throw new WritError('ERR_FIELD_INVALID', `${field}: ${JSON.stringify(s.slice(0, 80))} is not a DNS name`, { field });
  }
  return s.toLowerCase();
}

/** A TTL given as seconds (integer) or a duration string; undefined when absent. */
export function ttlField(o: Json, key: string, maxMs: number, prefix = ''): number | undefined {
  const v = o[key];
  const field = prefix + key;
  if (v === undefined || v === null) return undefined;
  if (typeof v === 'number' && !Number.isInteger(v)) throw new WritError('ERR_DURATION_INVALID', `field "${field}" must be whole seconds`, { field });
  if (typeof v !== 'number' && typeof v !== 'string')
    throw new WritError('ERR_DURATION_INVALID', `field "${field}" must be seconds or a duration like "1h"`, { field });
  if (typeof v === 'number' && v <= 0) throw new WritError('ERR_DURATION_INVALID', `field "${field}" must be positive`, { field });
  return parseDuration(v, field, maxMs);
}

/** `/writ` and below: the server's and the agents' namespace, never a workload's. */
export const isReservedPath = (path: string): boolean => path === '/writ' || path.startsWith('/writ/');

/**
 * A SPIFFE ID a workload may be given: in this trust domain, with a path, and outside `/writ`
 * and below, the namespace of the server's and the agents' own identities (an entry or a mint
 * there would let a workload play the server or an agent).
 */
export function parseWorkloadId(v: string, field: string, trustDomain: string): string {
  const parsed = withField(field, () => parseSpiffeId(v));
  if (parsed.trustDomain !== trustDomain)
    throw new WritError('ERR_SPIFFE_ID_INVALID', `field "${field}": ${v} is not in this server's trust domain "${trustDomain}"`, { field });
  if (parsed.path === '') throw new WritError('ERR_SPIFFE_ID_INVALID', `field "${field}": a workload ID needs a path`, { field });
  if (isReservedPath(parsed.path))
    throw new WritError(
      'ERR_ENTRY_RESERVED_ID',
      `field "${field}": ${parsed.uri} is in spiffe://${trustDomain}/writ/, reserved for the server and its agents`,
      {
        field,
      },
    );
  return parsed.uri;
}

export const ENTRY_FIELDS = [
  'spiffeId',
  'parentId',
  'selectors',
  'x509SvidTtl',
  'jwtSvidTtl',
  'dnsNames',
  'federatesWith',
  'admin',
  'hint',
  'expiresAt',
  'requireAdmittedImage',
  'owner',
];

/**
 * Parses an entry from a request body. With `base` (PATCH), absent fields keep their value.
 * `prefix` names the position in a batch (`entries[3].`).
 */
export function parseEntryInput(body: unknown, ctx: { trustDomain: string; now: number; base?: Entry; prefix?: string }): EntryInput {
  const prefix = ctx.prefix ?? '';
  const o = object(body, prefix ? prefix.slice(0, -1) : 'body');
  onlyKeys(o, ENTRY_FIELDS, prefix);
  const b = ctx.base;
  const id = (key: 'spiffeId' | 'parentId'): string => {
    // A PATCH that leaves the SPIFFE ID out still has it checked: an entry stored before the
    // reserved namespace was refused must not be given new selectors or DNS names.
    const v = str(o, key, { required: !b, prefix }) ?? (key === 'spiffeId' ? b!.spiffeId : undefined);
    if (v === undefined) return b![key];
    if (key === 'spiffeId') return parseWorkloadId(v, prefix + key, ctx.trustDomain);
    const parsed = withField(prefix + key, () => parseSpiffeId(v));
    if (parsed.trustDomain !== ctx.trustDomain) {
      throw new WritError('ERR_SPIFFE_ID_INVALID', `field "${prefix}${key}": ${v} is not in this server's trust domain "${ctx.trustDomain}"`, {
        field: prefix + key,
      });
    }
    return parsed.uri;
  };
  const spiffeId = id('spiffeId');
  const parentId = id('parentId');
  const sel = strList(o, 'selectors', { max: 64, itemMax: 300, prefix });
  const selectors = sel === undefined ? b?.selectors : sel.map((s, i) => parseSelector(s, `${prefix}selectors[${i}]`));
  if (!selectors || selectors.length === 0)
    throw new WritError('ERR_SELECTOR_INVALID', `field "${prefix}selectors" needs at least one "type:value" selector`, { field: `${prefix}selectors` });
  const dns = strList(o, 'dnsNames', { max: 32, itemMax: 253, prefix });
  const fed = strList(o, 'federatesWith', { max: 64, itemMax: 255, prefix });
  const federatesWith = fed?.map((td, i) => {
    const f = `${prefix}federatesWith[${i}]`;
    const name = td.startsWith('spiffe://') ? td.slice(9) : td;
    withField(f, () => parseTrustDomain(name));
    if (name === ctx.trustDomain)
      throw new WritError('ERR_TRUST_DOMAIN_INVALID', `field "${f}": an entry cannot federate with its own trust domain`, { field: f });
    return name;
  });
  const admin = o['admin'];
  if (admin !== undefined && typeof admin !== 'boolean')
    throw new WritError('ERR_FIELD_INVALID', `field "${prefix}admin" must be true or false`, { field: `${prefix}admin` });
  const hint = str(o, 'hint', { max: 128, prefix });
  const requireAdmittedImage = o['requireAdmittedImage'];
  if (requireAdmittedImage !== undefined && typeof requireAdmittedImage !== 'boolean')
    throw new WritError('ERR_FIELD_INVALID', `field "${prefix}requireAdmittedImage" must be true or false`, { field: `${prefix}requireAdmittedImage` });
  let expiresAt = b?.expiresAt ?? null;
  if ('expiresAt' in o) {
    const v = o['expiresAt'];
    if (v === null) expiresAt = null;
    else {
      const t = typeof v === 'string' && /^\d{4}-\d\d-\d\dT/.test(v) ? Date.parse(v) : NaN;
      if (!Number.isFinite(t))
        throw new WritError('ERR_FIELD_INVALID', `field "${prefix}expiresAt" must be an RFC 3339 time like 2027-01-01T00:00:00Z, or null`, {
          field: `${prefix}expiresAt`,
        });
      if (t <= ctx.now) throw new WritError('ERR_FIELD_INVALID', `field "${prefix}expiresAt" is in the past`, { field: `${prefix}expiresAt` });
      expiresAt = t;
    }
  }
  // The owner of the workloads served this ID (`writ vuln affected` groups by it); null clears it.
  let owner = b?.owner;
  if ('owner' in o) {
    const v = o['owner'];
    if (v === null) owner = undefined;
    else if (typeof v !== 'string' || v.trim() === '' || v.length > 256 || hasControlChar(v))
      throw new WritError('ERR_FIELD_INVALID', `field "${prefix}owner" must be a name of 1 to 256 printable characters, or null`, { field: `${prefix}owner` });
    else owner = v.trim();
  }
  const x509 = ttlField(o, 'x509SvidTtl', MAX_X509_TTL_MS, prefix);
  const jwt = ttlField(o, 'jwtSvidTtl', MAX_JWT_TTL_MS, prefix);
  return {
    spiffeId,
    parentId,
    selectors: [...new Set(selectors)].sort(),
    x509SvidTtl: x509 === undefined ? (b?.x509SvidTtl ?? 0) : Math.round(x509 / 1000),
    jwtSvidTtl: jwt === undefined ? (b?.jwtSvidTtl ?? 0) : Math.round(jwt / 1000),
    dnsNames: dns === undefined ? (b?.dnsNames ?? []) : dns.map((d, i) => parseDnsName(d, `${prefix}dnsNames[${i}]`)),
    federatesWith: federatesWith ?? b?.federatesWith ?? [],
    admin: (admin as boolean | undefined) ?? b?.admin ?? false,
    hint: hint ?? b?.hint ?? '',
    expiresAt,
    requireAdmittedImage: (requireAdmittedImage as boolean | undefined) ?? b?.requireAdmittedImage ?? false,
    ...(owner !== undefined ? { owner } : {}),
  };
}

/** The API form of an entry (times as RFC 3339, TTLs in seconds, 0 = server default): the agent<->server contract's entry shape, with its owner (not sent to agents). */
export const entryJson = (e: Entry): EntryMessage & { owner: string | null } => ({ ...encodeEntry(e), owner: e.owner ?? null });
