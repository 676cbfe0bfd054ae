/**
 * What an image is, read from its registry: for a reference, each manifest it names (one, or every
 * platform of an index, or the one platform asked for) with its config's facts — config digest,
 * layer diff IDs (`rootfs.diff_ids`), labels (`config.Labels`), created — and the manifest's OCI
 * annotations (`org.opencontainers.image.base.name`, `.base.digest`, `.source`, ...). This is what
 * an image inventory keeps per manifest digest; `writ image add` and the admission webhook's
 * inventory recorder read images through it.
 */
import { WritError } from '@writ/spiffe';
import { parseImageRef } from './reference.ts';
import type { Platform } from './registry.ts';
import type { Descriptor, ImageRef, Manifest, RegistryReader } from './types.ts';

/** One manifest of an image, with what its config says. */
export interface ImageFacts {
  /** `registry/repository`. */
  readonly name: string;
  /** `registry/repository:tag`, when the reference had a tag. */
  readonly tag: string | null;
  readonly digest: string;
  readonly mediaType: string;
  readonly configDigest: string;
  /** The index (or manifest list) the reference named, when it named one. */
  readonly indexDigest: string | null;
  /** `os/architecture[/variant]`: from the index entry, else the config. */
  readonly platform: string | null;
  /** Uncompressed layer digests (`rootfs.diff_ids`), base first. */
  readonly diffIds: readonly string[];
  readonly labels: Readonly<Record<string, string>>;
  /** The manifest's annotations over the index's (the manifest's own win). */
  readonly annotations: Readonly<Record<string, string>>;
  /** RFC 3339 as the config says it (else the `org.opencontainers.image.created` annotation); null when neither does. */
  readonly created: string | null;
}

export interface ReadImageOptions {
  /** Only this platform of an index (ERR_IMAGE_NOT_FOUND when the index has none, or a plain manifest is of another platform). */
  readonly platform?: Platform;
  readonly signal?: AbortSignal;
}

/** Image configs are a few KB (history included); anything past this is not one. */
export const MAX_CONFIG_BYTES = 4 * 1024 * 1024;
/** Platforms read from one index at most (real multi-arch images have a handful). */
export const MAX_INDEX_PLATFORMS = 64;
const MAX_MAP_ENTRIES = 256;
const MAX_VALUE = 4096;

const INDEX_TYPES: ReadonlySet<string> = new Set(['application/vnd.oci.image.index.v1+json', 'application/vnd.docker.distribution.manifest.list.v2+json']);

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** `os/architecture[/variant]`. */
export function formatPlatform(p: { readonly os?: string; readonly architecture?: string; readonly variant?: string } | undefined): string | null {
  if (p?.os === undefined || p.architecture === undefined) return null;
  return `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}`;
}

/** `linux/arm64/v8` → a Platform; anything else is ERR_IMAGE_REF_INVALID naming what is wrong. */
export function parsePlatform(s: string): Platform {
  const m = /^([a-z0-9]{1,32})\/([a-z0-9_]{1,32})(?:\/([a-z0-9]{1,32}))?$/.exec(s);
  if (m === null) throw new WritError('ERR_IMAGE_REF_INVALID', `platform ${JSON.stringify(s.slice(0, 80))} is not os/architecture[/variant], e.g. linux/amd64`);
  return m[3] === undefined ? { os: m[1]!, architecture: m[2]! } : { os: m[1]!, architecture: m[2]!, variant: m[3] };
}

/** Only string values, bounded: labels and annotations are copied into the inventory as they are. */
function stringMap(v: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (!isObject(v)) return out;
  let n = 0;
  for (const [k, x] of Object.entries(v)) {
    if (typeof x !== 'string' || k === '__proto__' || k.length > 256 || x.includes('\0') || k.includes('\0')) continue;
    out[k] = x.slice(0, MAX_VALUE);
    if (++n >= MAX_MAP_ENTRIES) break;
  }
  return out;
}

/** An attestation or other non-runnable entry of an index (BuildKit's `unknown/unknown` provenance manifests). */
function runnable(d: Descriptor): boolean {
  if (d.annotations?.['vnd.docker.reference.type'] !== undefined) return false;
  return !(d.platform?.os === 'unknown' || d.platform?.architecture === 'unknown');
}

function matches(d: Descriptor, p: Platform): boolean {
  return d.platform?.os === p.os && d.platform.architecture === p.architecture && (p.variant === undefined || d.platform.variant === p.variant);
}

async function manifestFacts(
  reader: RegistryReader,
  ref: ImageRef,
  m: Manifest,
  index: { digest: string; annotations: Record<string, string>; platform: string | null } | undefined,
  signal: AbortSignal | undefined,
): Promise<ImageFacts> {
  const where = `${ref.registry}/${ref.repository}@${m.digest}`;
  const invalid = (why: string): WritError => new WritError('ERR_REGISTRY_RESPONSE_INVALID', `${where}: ${why}`);
  const config = m.json['config'] as Descriptor;
  const bytes = await reader.blob(ref, config.digest, MAX_CONFIG_BYTES, signal);
  let json: unknown;
  try {
    json = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw invalid(`its config ${config.digest} is not JSON`);
  }
  if (!isObject(json)) throw invalid(`its config ${config.digest} is not a JSON object`);
  const rootfs = json['rootfs'];
  const diffIds = isObject(rootfs) && Array.isArray(rootfs['diff_ids']) ? rootfs['diff_ids'] : [];
  if (!diffIds.every((d): d is string => typeof d === 'string' && /^sha(256:[0-9a-f]{64}|512:[0-9a-f]{128})$/.test(d)))
    throw invalid(`its config ${config.digest} has a rootfs.diff_ids entry that is not a digest`);
  const annotations = { ...(index?.annotations ?? {}), ...stringMap(m.json['annotations']) };
  const inner = json['config'];
  const created =
    typeof json['created'] === 'string' && Number.isFinite(Date.parse(json['created']))
      ? json['created']
      : (annotations['org.opencontainers.image.created'] ?? null);
  const ownPlatform = formatPlatform({
    ...(typeof json['os'] === 'string' ? { os: json['os'] } : {}),
    ...(typeof json['architecture'] === 'string' ? { architecture: json['architecture'] } : {}),
    ...(typeof json['variant'] === 'string' ? { variant: json['variant'] } : {}),
  });
  return {
    name: `${ref.registry}/${ref.repository}`,
    tag: ref.tag === undefined ? null : `${ref.registry}/${ref.repository}:${ref.tag}`,
    digest: m.digest,
    mediaType: m.mediaType,
    configDigest: config.digest,
    indexDigest: index?.digest ?? null,
    platform: index?.platform ?? ownPlatform,
    diffIds,
    labels: stringMap(isObject(inner) ? inner['Labels'] : undefined),
    annotations,
    created,
  };
}

/**
 * Reads an image's manifests and configs. A plain manifest gives one ImageFacts; an index gives
 * one per runnable platform (attestation manifests skipped), or only `opts.platform`'s.
 * @throws WritError ERR_IMAGE_REF_INVALID, ERR_IMAGE_NOT_FOUND, ERR_REGISTRY_* (the client's codes)
 * @example
 *   const [amd64] = await readImage(client, 'registry.example.com/shop/web:1.4', { platform: { os: 'linux', architecture: 'amd64' } });
 *   amd64.diffIds; amd64.annotations['org.opencontainers.image.base.name']
 */
export async function readImage(reader: RegistryReader, reference: string | ImageRef, opts: ReadImageOptions = {}): Promise<ImageFacts[]> {
  const ref = typeof reference === 'string' ? parseImageRef(reference) : reference;
  const { signal } = opts;
  const at = ref.digest ?? ref.tag ?? 'latest';
  const named = `${ref.registry}/${ref.repository}${at.includes(':') ? '@' : ':'}${at}`;
  const top = await reader.manifest(ref, at, signal);
  if (top === null) throw new WritError('ERR_IMAGE_NOT_FOUND', `${named} not found`);
  const withTag: ImageRef = ref.tag === undefined && ref.digest === undefined ? { ...ref, tag: 'latest' } : ref;
  if (!INDEX_TYPES.has(top.mediaType)) {
    const facts = await manifestFacts(reader, withTag, top, undefined, signal);
    // One manifest is one platform: asking it for another is asking for an image it is not.
    const wanted = opts.platform === undefined ? null : formatPlatform(opts.platform);
    if (wanted !== null && facts.platform !== null && facts.platform !== wanted && !facts.platform.startsWith(`${wanted}/`))
      throw new WritError('ERR_IMAGE_NOT_FOUND', `${named} is a ${facts.platform} image, not an index with a manifest for ${wanted}`);
    return [facts];
  }

  const entries = (top.json['manifests'] as Descriptor[]).filter(runnable);
  const platform = opts.platform;
  const chosen = platform === undefined ? entries : entries.filter((d) => matches(d, platform));
  if (chosen.length === 0)
    throw new WritError(
      'ERR_IMAGE_NOT_FOUND',
      `${named} is an index without a manifest for ${platform === undefined ? 'any platform' : formatPlatform(platform)}`,
    );
  if (chosen.length > MAX_INDEX_PLATFORMS)
    throw new WritError('ERR_REGISTRY_RESPONSE_INVALID', `${named} is an index of ${chosen.length} platforms; at most ${MAX_INDEX_PLATFORMS} are read`);
  const indexAnnotations = stringMap(top.json['annotations']);
  const out: ImageFacts[] = [];
  for (const d of chosen) {
    const child = await reader.manifest(ref, d.digest, signal);
    if (child === null)
      throw new WritError(
        'ERR_IMAGE_NOT_FOUND',
        `${named} names ${d.digest} for ${formatPlatform(d.platform) ?? 'a platform'}, which the repository does not have`,
      );
    if (INDEX_TYPES.has(child.mediaType)) throw new WritError('ERR_REGISTRY_RESPONSE_INVALID', `${named}: an index inside an index (${d.digest}) is not read`);
    out.push(await manifestFacts(reader, withTag, child, { digest: top.digest, annotations: indexAnnotations, platform: formatPlatform(d.platform) }, signal));
  }
  return out;
}
