/**
 * Base-image lineage, pure: which image an image is built on, whether a layer belongs to the base or
 * to the app, and which newer base in the inventory no longer carries a package.
 *
 * The parent comes from the OCI annotations `org.opencontainers.image.base.digest` / `.base.name`
 * (image-spec annotations.md) when the image has them, and otherwise from layers: an image whose
 * diff IDs (the config's `rootfs.diff_ids`, digests of the uncompressed layer tars — what Trivy calls
 * `Layer.DiffID` and Syft `layerID`) start with all of another image's diff IDs is built on it; the
 * longest such prefix is the closest base, i.e. the parent.
 */

import type { ReportImage } from './types.ts';

export const BASE_DIGEST_ANNOTATION = 'org.opencontainers.image.base.digest';
export const BASE_NAME_ANNOTATION = 'org.opencontainers.image.base.name';

/** What lineage needs to know of an image in the inventory. */
export interface LineageImage {
  /** Manifest digest, `sha256:…`. */
  readonly digest: string;
  /** The image index this manifest was reached through, when there was one (base annotations often name the index). */
  readonly indexDigest?: string | undefined;
  /** `os/architecture[/variant]`, to pick the right child when a base digest names an index. */
  readonly platform?: string | undefined;
  /** Repository references seen for it, e.g. `docker.io/library/alpine:3.20`. */
  readonly names?: readonly string[] | undefined;
  /** The config's `rootfs.diff_ids`, bottom layer first. */
  readonly diffIds: readonly string[];
  readonly annotations?: Readonly<Record<string, string>> | undefined;
  /** RFC 3339 creation time, to order bases. */
  readonly created?: string | undefined;
}

/** How an image's parent was found. */
export type BaseSource = 'annotation' | 'layers';

export interface BaseLink {
  /** The parent's manifest digest when it is in the inventory (or the annotated digest when it is not). */
  readonly digest: string | undefined;
  /** The annotated base name, or the parent's first name in the inventory. */
  readonly name: string | undefined;
  readonly source: BaseSource;
  /** The parent as found in the inventory, if it is there. */
  readonly image: LineageImage | undefined;
  /** How many of the image's bottom layers are the base's (undefined: the base is not in the inventory, so unknown). */
  readonly baseLayers: number | undefined;
}

/** Lineage over one set of images (the inventory, or the images of one answer). */
export class Lineage {
  readonly #byDigest = new Map<string, LineageImage>();
  readonly #byIndex = new Map<string, LineageImage[]>();
  /** Images by their bottom layer, and by repository: a base shares the one and is found by the other, so lookups stay small in a big inventory. */
  readonly #byFirstLayer = new Map<string, LineageImage[]>();
  readonly #byRepository = new Map<string, LineageImage[]>();

  constructor(images: Iterable<LineageImage>) {
    for (const img of images) {
      if (!this.#byDigest.has(img.digest)) this.#byDigest.set(img.digest, img);
      if (img.indexDigest !== undefined) push(this.#byIndex, img.indexDigest, img);
      const first = img.diffIds[0];
      if (first !== undefined) push(this.#byFirstLayer, first, img);
      for (const repo of new Set((img.names ?? []).map(repositoryOf))) push(this.#byRepository, repo, img);
    }
  }

  get(digest: string): LineageImage | undefined {
    return this.#byDigest.get(digest);
  }

  /**
   * The image's parent: the annotated base when there is one, else the closest image whose diff IDs
   * are a strict prefix of this one's. Undefined for an image with neither (a base itself, or unknown).
   */
  parent(image: LineageImage): BaseLink | undefined {
    const annotatedDigest = image.annotations?.[BASE_DIGEST_ANNOTATION]?.trim() || undefined;
    const annotatedName = image.annotations?.[BASE_NAME_ANNOTATION]?.trim() || undefined;
    const byLayers = this.#closestByLayers(image);
    if (annotatedDigest === undefined && annotatedName === undefined) {
      return byLayers === undefined ? undefined : link(byLayers, 'layers', undefined);
    }
    const annotated = annotatedDigest === undefined ? undefined : this.#resolve(annotatedDigest, image);
    if (annotated !== undefined) return link(annotated, 'annotation', annotatedName, prefixLength(annotated.diffIds, image.diffIds));
    // The annotated base is not in the inventory: keep its name and digest, and take the layer count from
    // a layer match only if that match is the same repository (otherwise the layers say nothing of it).
    const sameRepo = byLayers !== undefined && annotatedName !== undefined && (byLayers.names ?? []).some((n) => sameRepository(n, annotatedName));
    return {
      digest: annotatedDigest ?? (sameRepo ? byLayers?.digest : undefined),
      name: annotatedName,
      source: 'annotation',
      image: sameRepo ? byLayers : undefined,
      baseLayers: sameRepo ? byLayers?.diffIds.length : undefined,
    };
  }

  /** Parent, grandparent, … (nearest first); stops at a cycle or a base outside the inventory. */
  ancestors(image: LineageImage): BaseLink[] {
    const chain: BaseLink[] = [];
    const seen = new Set<string>([image.digest]);
    let current: LineageImage | undefined = image;
    while (current !== undefined) {
      const p = this.parent(current);
      if (p === undefined) break;
      chain.push(p);
      if (p.image === undefined || seen.has(p.image.digest)) break;
      seen.add(p.image.digest);
      current = p.image;
    }
    return chain;
  }

  /**
   * Where a layer of the image comes from: `base` when it is one of the parent's layers (with the
   * parent, and the furthest ancestor that already had it: where the package entered), `app` when it
   * is one of the image's own layers above the base, `unknown` when the layer is not the image's or the
   * base's extent is not known.
   */
  layerOrigin(image: LineageImage, diffId: string): LayerOrigin {
    const index = image.diffIds.indexOf(diffId);
    if (index < 0) return { where: 'unknown', reason: 'not-in-image' };
    const chain = this.ancestors(image);
    const parent = chain[0];
    if (parent === undefined) return { where: 'app', base: undefined };
    if (parent.baseLayers === undefined) return { where: 'unknown', reason: 'base-not-in-inventory', base: parent };
    if (index >= parent.baseLayers) return { where: 'app', base: parent };
    let introducedBy = parent;
    for (const a of chain.slice(1)) {
      if (a.baseLayers === undefined || index >= a.baseLayers) break;
      introducedBy = a;
    }
    return { where: 'base', base: parent, introducedBy };
  }

  /**
   * Newer bases in the inventory that no longer carry what `carries` looks for: images of the parent's
   * repository, another digest, created after the current base when both times are known, newest first.
   *
   *     lineage.newerBasesWithout(app, (img) => findingsOf(img.digest).has('CVE-2024-1234'))
   */
  newerBasesWithout(image: LineageImage, carries: (candidate: LineageImage) => boolean): LineageImage[] {
    const parent = this.parent(image);
    if (parent === undefined) return [];
    const repos = new Set<string>();
    if (parent.name !== undefined) repos.add(repositoryOf(parent.name));
    for (const n of parent.image?.names ?? []) repos.add(repositoryOf(n));
    if (repos.size === 0) return [];
    const currentCreated = time(parent.image?.created);
    const currentDigests = new Set([parent.digest, parent.image?.digest, parent.image?.indexDigest].filter((d) => d !== undefined));
    const found = new Map<string, LineageImage>();
    for (const c of [...repos].flatMap((r) => this.#byRepository.get(r) ?? [])) {
      if (currentDigests.has(c.digest) || (c.indexDigest !== undefined && currentDigests.has(c.indexDigest))) continue;
      if (c.digest === image.digest) continue;
      if (!samePlatform(c, image)) continue;
      const created = time(c.created);
      if (currentCreated !== undefined && created !== undefined && created <= currentCreated) continue;
      if (carries(c)) continue;
      found.set(c.digest, c);
    }
    return [...found.values()].sort((a, b) => (time(b.created) ?? 0) - (time(a.created) ?? 0) || a.digest.localeCompare(b.digest));
  }

  #closestByLayers(image: LineageImage): LineageImage | undefined {
    let best: LineageImage | undefined;
    const first = image.diffIds[0];
    for (const c of first === undefined ? [] : (this.#byFirstLayer.get(first) ?? [])) {
      if (c.digest === image.digest || c.diffIds.length === 0 || c.diffIds.length >= image.diffIds.length) continue;
      if (prefixLength(c.diffIds, image.diffIds) !== c.diffIds.length) continue;
      // Longest prefix wins; among equals the oldest, then the smallest digest, so the answer is stable.
      if (best === undefined || c.diffIds.length > best.diffIds.length || (c.diffIds.length === best.diffIds.length && compareAge(c, best) < 0)) best = c;
    }
    return best;
  }

  /** A base digest names either a manifest or an index; for an index, the child of the image's platform. */
  #resolve(digest: string, image: LineageImage): LineageImage | undefined {
    const direct = this.#byDigest.get(digest);
    if (direct !== undefined) return direct;
    const children = this.#byIndex.get(digest) ?? [];
    return (
      children.find((c) => c.platform !== undefined && c.platform === image.platform) ??
      children.find((c) => prefixLength(c.diffIds, image.diffIds) === c.diffIds.length && c.diffIds.length > 0)
    );
  }
}

/**
 * The lineage view of the image a report names (Trivy's `Metadata`, Grype's `source.target`, an SBOM's
 * subject), or undefined when the report gives no manifest digest. Base annotations are also taken from
 * labels of the same name, which some builders write instead; an annotation wins.
 */
export function lineageImageOf(image: ReportImage, created?: string): LineageImage | undefined {
  if (image.digest === undefined) return undefined;
  const annotations: Record<string, string> = {};
  for (const key of [BASE_NAME_ANNOTATION, BASE_DIGEST_ANNOTATION]) {
    const v = image.annotations[key] ?? image.labels[key];
    if (v !== undefined) annotations[key] = v;
  }
  return {
    digest: image.digest,
    names: [...new Set([...image.repoTags, ...image.repoDigests, ...image.names])],
    diffIds: image.diffIds,
    annotations: { ...image.annotations, ...annotations },
    ...(created === undefined ? {} : { created }),
  };
}

export type LayerOrigin =
  | { readonly where: 'base'; readonly base: BaseLink; readonly introducedBy: BaseLink }
  | { readonly where: 'app'; readonly base: BaseLink | undefined }
  | { readonly where: 'unknown'; readonly reason: 'not-in-image' | 'base-not-in-inventory'; readonly base?: BaseLink };

function push<T>(map: Map<string, T[]>, key: string, value: T): void {
  const list = map.get(key);
  if (list === undefined) map.set(key, [value]);
  else list.push(value);
}

function link(base: LineageImage, source: BaseSource, name: string | undefined, layers = base.diffIds.length): BaseLink {
  return { digest: base.digest, name: name ?? base.names?.[0], source, image: base, baseLayers: layers };
}

function prefixLength(a: readonly string[], b: readonly string[]): number {
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  return i;
}

function time(t: string | undefined): number | undefined {
  if (t === undefined) return undefined;
  const ms = Date.parse(t);
  return Number.isNaN(ms) ? undefined : ms;
}

function compareAge(a: LineageImage, b: LineageImage): number {
  const ta = time(a.created) ?? Number.POSITIVE_INFINITY;
  const tb = time(b.created) ?? Number.POSITIVE_INFINITY;
  return ta - tb || a.digest.localeCompare(b.digest);
}

function samePlatform(a: LineageImage, b: LineageImage): boolean {
  return a.platform === undefined || b.platform === undefined || a.platform === b.platform;
}

/**
 * The repository of a reference, with Docker Hub's defaults filled in, so `alpine:3.20`,
 * `docker.io/library/alpine@sha256:…` and `index.docker.io/library/alpine` compare equal.
 */
export function repositoryOf(ref: string): string {
  let r = ref.trim();
  const at = r.indexOf('@');
  if (at >= 0) r = r.slice(0, at);
  const slash = r.lastIndexOf('/');
  const colon = r.lastIndexOf(':');
  if (colon > slash) r = r.slice(0, colon);
  const parts = r.split('/');
  const first = parts[0] ?? '';
  const hasHost = parts.length > 1 && (first.includes('.') || first.includes(':') || first === 'localhost');
  if (!hasHost) return `docker.io/${parts.length === 1 ? 'library/' : ''}${r}`.toLowerCase();
  if (first === 'index.docker.io' || first === 'registry-1.docker.io') parts[0] = 'docker.io';
  if (parts[0] === 'docker.io' && parts.length === 2) parts.splice(1, 0, 'library');
  return parts.join('/').toLowerCase();
}

function sameRepository(a: string, b: string): boolean {
  return repositoryOf(a) === repositoryOf(b);
}
