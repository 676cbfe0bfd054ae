/**
 * `GET /v1/agent/sync`: the agent's long poll. It reports what it has (the entries revision, the
 * bundles version, the policy revision and quarantine version it enforces: its acknowledgement)
 * and gets what changed.
 */
import { WritError, parseBundleJson, type BundleJson } from '@writ/spiffe';
import { isObject, isStrings, refuse } from './check.ts';
import { type AdmittedImagesState, admittedImagesProblem } from './admitted-images.ts';
import { type EntryMessage, entryProblem } from './entry.ts';
import { type Json, members } from './json.ts';

/** The longest a sync may wait on the server for a change. */
export const MAX_SYNC_WAIT_S = 30;

export interface SyncQuery {
  /** Entries revision the agent has (0: send everything). */
  readonly since: number;
  /** Seconds to wait for a change (0 to MAX_SYNC_WAIT_S). */
  readonly wait: number;
  /** The bundles version the agent has ('' for none). */
  readonly bundles: string;
  /** The policy revision it enforces; undefined from agents that do not enforce policy. */
  readonly policy: number | undefined;
  /** The quarantine version it enforces; undefined from agents that do not know quarantine. */
  readonly quarantine: string | undefined;
  /** Leave the bundles out of answers when unchanged (agents from before this ask without and get them every time). */
  readonly lean: boolean;
  /** The admitted images version the agent has ('' for none); undefined from agents that do not check images. */
  readonly images?: string | undefined;
}

/**
 * The sync query's parameters as the server's route table declares them (its checks refuse
 * anything else before decodeSyncQuery runs). A wait above MAX_SYNC_WAIT_S is taken as that.
 */
export const SYNC_QUERY_PARAMS = {
  since: { kind: 'integer', min: 0, max: Number.MAX_SAFE_INTEGER },
  wait: { kind: 'integer', min: 0, max: 3600 },
  bundles: { kind: 'string', max: 8192, repeat: false },
  policy: { kind: 'integer', min: 0, max: Number.MAX_SAFE_INTEGER },
  quarantine: { kind: 'string', max: 256, repeat: false },
  lean: { kind: 'string', max: 1, repeat: false },
  images: { kind: 'string', max: 40, repeat: false },
} as const satisfies Record<keyof SyncQuery, unknown>;

export function encodeSyncQuery(q: SyncQuery): URLSearchParams {
  const p = new URLSearchParams({ since: String(q.since), wait: String(q.wait), bundles: q.bundles });
  if (q.policy !== undefined) p.set('policy', String(q.policy));
  if (q.quarantine !== undefined) p.set('quarantine', q.quarantine);
  if (q.lean) p.set('lean', '1');
  if (q.images !== undefined) p.set('images', q.images);
  return p;
}

/** The server's side; bad values are a 400 with `ERR_FIELD_INVALID`. */
export function decodeSyncQuery(p: URLSearchParams): SyncQuery {
  const since = Number(p.get('since') ?? '0');
  const wait = Number(p.get('wait') ?? '0');
  if (!Number.isSafeInteger(since) || since < 0) throw new WritError('ERR_FIELD_INVALID', 'since must be a non-negative integer', { field: 'since' });
  if (!Number.isFinite(wait) || wait < 0) throw new WritError('ERR_FIELD_INVALID', `wait must be seconds from 0 to ${MAX_SYNC_WAIT_S}`, { field: 'wait' });
  const policy = p.has('policy') ? Number(p.get('policy')) : undefined;
  return {
    since,
    wait: Math.min(wait, MAX_SYNC_WAIT_S),
    bundles: p.get('bundles') ?? '',
    // A malformed revision is one the agent does not have: it gets the current set.
    policy: policy === undefined ? undefined : Number.isSafeInteger(policy) && policy >= 0 ? policy : -1,
    quarantine: p.has('quarantine') ? (p.get('quarantine') ?? '') : undefined,
    lean: p.get('lean') === '1',
    images: p.has('images') ? (p.get('images') ?? '') : undefined,
  };
}

export interface QuarantineState {
  /** A whole number (as a string) that grows whenever the set changes; agents echo it back. */
  readonly version: string;
  readonly ids: string[];
  /** Identities that may still call and be called while quarantined. */
  readonly breakGlass: string[];
}

/** The quarantine version an agent echoes (`quarantine=`), as the number it is; 0 for none or one from before versions were numbers. */
export function quarantineVersionNumber(v: string | undefined): number {
  return v !== undefined && /^\d{1,15}$/.test(v) ? Number(v) : 0;
}

export interface PolicyState {
  readonly revision: number;
  /** Policy name -> its YAML document. */
  readonly policies: Record<string, string>;
}

export interface SyncBundles {
  readonly bundle: BundleJson;
  readonly federatedBundles: Record<string, BundleJson>;
}

/** Decoded answers are the agent's own (fresh from JSON.parse): their lists are not read-only. */
export interface SyncAnswer {
  /** First in the answer: an agent applies it ahead of everything else. */
  readonly quarantine?: QuarantineState;
  readonly revision: number;
  /** The entries are all of the agent's (since=0): any it has that are not among them are gone. */
  readonly full: boolean;
  readonly entries: readonly EntryMessage[];
  readonly removed: readonly string[];
  readonly bundlesVersion: string;
  /** Only when `bundlesVersion` differs from the one the agent asked with (or it did not ask `lean`). */
  readonly bundle?: BundleJson;
  readonly federatedBundles?: Record<string, BundleJson>;
  /** Only when the agent's policy revision is not the current one. */
  readonly policy?: PolicyState;
  /** Only when the agent asked with `images` and its version is not the current one. */
  readonly admittedImages?: AdmittedImagesState;
  /** The server requires an admitted image for every entry (`--require-admitted-image`); absent: only entries that say so. */
  readonly requireAdmittedImage?: true;
}

/** The parts of an answer; the shared ones come serialised once for every waiting agent. */
export interface SyncAnswerParts {
  readonly quarantine: Json<QuarantineState>;
  readonly revision: number;
  readonly full: boolean;
  readonly entries: readonly EntryMessage[];
  readonly removed: readonly string[];
  readonly bundlesVersion: string;
  readonly bundles: Json<SyncBundles> | undefined;
  readonly policy: Json<PolicyState> | undefined;
  readonly admittedImages?: Json<AdmittedImagesState> | undefined;
  readonly requireAdmittedImage?: boolean;
}

/** The answer's JSON text (a line). */
export function encodeSyncAnswer(a: SyncAnswerParts): Json<SyncAnswer> {
  const text =
    `{"quarantine":${a.quarantine},"revision":${a.revision},"full":${a.full},"entries":${JSON.stringify(a.entries)},` +
    `"removed":${JSON.stringify(a.removed)},"bundlesVersion":${JSON.stringify(a.bundlesVersion)}` +
    `${a.bundles ? `,${members(a.bundles)}` : ''}${a.policy ? `,"policy":${a.policy}` : ''}` +
    `${a.admittedImages ? `,"admittedImages":${a.admittedImages}` : ''}${a.requireAdmittedImage ? ',"requireAdmittedImage":true' : ''}}\n`;
  return text as Json<SyncAnswer>;
}

/**
 * The agent's side: checks a parsed answer whole (entries, bundles against `trustDomain`,
 * quarantine, policy) and throws `ERR_REQUEST_FAILED` naming the first problem.
 * `knownBundles` is the version the agent asked with: a new version without bundles is malformed.
 */
export function decodeSyncAnswer(raw: unknown, trustDomain: string, knownBundles: string): SyncAnswer {
  const bad = refuse('sync answer');
  if (!isObject(raw)) return bad('not an object');
  const r = raw;
  if (!Number.isSafeInteger(r['revision']) || (r['revision'] as number) < 0) bad('revision');
  if (typeof r['full'] !== 'boolean') bad('full');
  if (!isStrings(r['removed'])) bad('removed');
  if (typeof r['bundlesVersion'] !== 'string') bad('bundlesVersion');
  if (!Array.isArray(r['entries'])) bad('entries');
  for (const e of r['entries'] as unknown[]) {
    const why = entryProblem(e);
    if (why) bad(why);
  }
  if (r['bundlesVersion'] !== knownBundles || r['bundle'] !== undefined) {
    try {
      parseBundleJson(trustDomain, r['bundle']);
    } catch (err) {
      bad(`bundle: ${(err as Error).message}`);
    }
    if (!isObject(r['federatedBundles'])) bad('federatedBundles');
  }
  const q = r['quarantine'];
  if (q !== undefined && (!isObject(q) || typeof q['version'] !== 'string' || !isStrings(q['ids']) || !isStrings(q['breakGlass']))) bad('quarantine');
  const p = r['policy'];
  if (
    p !== undefined &&
    (!isObject(p) || !Number.isSafeInteger(p['revision']) || !isObject(p['policies']) || !Object.values(p['policies']).every((v) => typeof v === 'string'))
  )
    bad('policy');
  if (r['admittedImages'] !== undefined) {
    const why = admittedImagesProblem(r['admittedImages']);
    if (why) bad(why);
  }
  if (r['requireAdmittedImage'] !== undefined && r['requireAdmittedImage'] !== true) bad('requireAdmittedImage');
  return r as unknown as SyncAnswer;
}
