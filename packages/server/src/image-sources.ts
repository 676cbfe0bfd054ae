/**
 * How images enter the inventory besides reports (issue 13): `writ image add` (POST /v1/images)
 * reads an image from its registry, and the admission webhook's admitted images are recorded after
 * the answer. Both read through @writ/oci's `readImage` and store through `Store.recordImages`.
 */
import type { Logger } from 'pino';
import { type ImageFacts, type ImageRef, type Platform, type RegistryReader, parseImageRef, readImage } from '@writ/oci';
import { isWritError } from '@writ/spiffe';
import type { InventoryImage, Store } from './store/types.ts';

/** One manifest's facts as an inventory row. */
export function inventoryImageOf(f: ImageFacts, now: number): InventoryImage {
  const created = f.created === null ? Number.NaN : Date.parse(f.created);
  return {
    digest: f.digest,
    configDigest: f.configDigest,
    indexDigest: f.indexDigest,
    platform: f.platform,
    names: [f.name],
    tags: f.tag === null ? [] : [f.tag],
    layers: [...f.diffIds],
    annotations: { ...f.annotations },
    labels: { ...f.labels },
    created: Number.isFinite(created) ? created : null,
    firstSeen: now,
    lastSeen: now,
  };
}

/** How long one image's registry reads may take (POST /v1/images and the admission recorder). */
export const IMAGE_READ_TIMEOUT_MS = 30_000;

/**
 * Reads an image (every platform of an index, or the one asked for) and records it.
 * @throws the registry's WritErrors (ERR_IMAGE_NOT_FOUND, ERR_REGISTRY_*), ERR_IMAGE_REF_INVALID
 */
export async function addImage(
  deps: { readonly registry: RegistryReader; readonly store: Store },
  reference: string,
  platform: Platform | undefined,
  now: number,
): Promise<{ images: InventoryImage[]; added: number; changed: number }> {
  const ref = parseImageRef(reference);
  const facts = await readImage(deps.registry, ref, { signal: AbortSignal.timeout(IMAGE_READ_TIMEOUT_MS), ...(platform ? { platform } : {}) });
  const images = facts.map((f) => inventoryImageOf(f, now));
  const r = await deps.store.recordImages(images, now);
  return { images, ...r };
}

interface Pending {
  readonly ref: ImageRef;
  readonly digest: string;
  readonly fromRegistry: boolean;
  tries: number;
}

/**
 * Records the images the admission webhook admitted, after the answer: the registry reads and the
 * store write never delay or fail an admission. A digest is read from the registry once per
 * process (its manifests and configs do not change); seen again, only its name and tag are merged.
 * A registry that cannot be read still leaves the digest with its name and tag; a store that
 * refuses is retried (3 times, a second apart). At most MAX_QUEUE images wait; past that, new
 * ones are dropped and counted in the log.
 */
export class AdmissionInventoryRecorder {
  readonly #store: Store;
  readonly #registry: RegistryReader;
  readonly #clock: () => number;
  readonly #log: Logger;
  readonly #queue: Pending[] = [];
  /** Digest → the inventory rows read for it (an index: one per platform), oldest first. */
  readonly #known = new Map<string, InventoryImage[]>();
  /** `registry/repository@digest` → the tag the mutating hook pinned to it, oldest first. */
  readonly #tags = new Map<string, string>();
  #running: Promise<void> | undefined;
  #retry: NodeJS.Timeout | undefined;
  #dropped = 0;
  #closed = false;
  static readonly MAX_QUEUE = 10_000;
  static readonly MAX_KNOWN = 10_000;
  static readonly RETRY_MS = 1000;

  constructor(deps: { readonly store: Store; readonly registry: RegistryReader; readonly clock: () => number; readonly log: Logger }) {
    this.#store = deps.store;
    this.#registry = deps.registry;
    this.#clock = deps.clock;
    this.#log = deps.log;
  }

  /**
   * The tags the mutating hook pinned (`image` as written, `digest` it resolved to): the validating
   * hook then sees `name@digest` only, and the tag it came from is recorded with it.
   */
  pinned(images: ReadonlyArray<{ readonly image: string; readonly digest?: string | undefined }>): void {
    for (const i of images) {
      if (i.digest === undefined) continue;
      try {
        const ref = parseImageRef(i.image);
        if (ref.tag === undefined || ref.digest !== undefined) continue;
        const key = `${ref.registry}/${ref.repository}@${i.digest}`;
        this.#tags.delete(key);
        this.#tags.set(key, ref.tag);
      } catch {
        continue;
      }
      while (this.#tags.size > AdmissionInventoryRecorder.MAX_KNOWN) {
        const oldest = this.#tags.keys().next().value;
        if (oldest === undefined) break;
        this.#tags.delete(oldest);
      }
    }
  }

  /**
   * The images of an admitted object (`image` as written, `digest` as resolved); those without a
   * digest are skipped. Only with `fromRegistry` (an enforce policy checked them, so their
   * registries are allowed) is the registry asked; otherwise the digest is kept with its name and tag.
   */
  record(images: ReadonlyArray<{ readonly image: string; readonly digest?: string | undefined }>, fromRegistry: boolean): void {
    if (this.#closed) return;
    for (const i of images) {
      if (i.digest === undefined) continue;
      let ref: ImageRef;
      try {
        ref = parseImageRef(i.image);
      } catch {
        continue;
      }
      if (this.#queue.length >= AdmissionInventoryRecorder.MAX_QUEUE) {
        this.#dropped++;
        continue;
      }
      this.#queue.push({ ref, digest: i.digest, fromRegistry, tries: 0 });
    }
    // After the answer is on its way: nothing of this runs in the review's turn.
    setImmediate(() => this.#kick());
  }

  /** Resolves once everything queued so far was recorded (or given up on): for tests and close(). */
  async idle(): Promise<void> {
    await new Promise((r) => setImmediate(r));
    while (this.#running !== undefined) await this.#running;
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#retry);
    this.#queue.length = 0;
    await this.idle();
  }

  #kick(): void {
    if (this.#running !== undefined || this.#queue.length === 0) return;
    this.#running = this.#drain().finally(() => {
      this.#running = undefined;
      if (this.#dropped) this.#log.warn({ dropped: this.#dropped }, 'admitted images not recorded in the inventory: too many waiting');
      this.#dropped = 0;
    });
  }

  async #drain(): Promise<void> {
    const failed: Pending[] = [];
    while (this.#queue.length && !this.#closed) {
      const p = this.#queue.shift()!;
      const name = `${p.ref.registry}/${p.ref.repository}`;
      const pinnedTag = p.ref.tag ?? this.#tags.get(`${name}@${p.digest}`);
      const tag = pinnedTag === undefined ? null : `${name}:${pinnedTag}`;
      const now = this.#clock();
      let rows = this.#known.get(p.digest);
      if (rows === undefined && !p.fromRegistry) rows = [bare(p.digest, now)];
      else if (rows === undefined) {
        try {
          const facts = await readImage(this.#registry, { ...p.ref, digest: p.digest }, { signal: AbortSignal.timeout(IMAGE_READ_TIMEOUT_MS) });
          rows = facts.map((f) => inventoryImageOf(f, now));
          this.#remember(p.digest, rows);
        } catch (err) {
          // The digest is still worth knowing with the name it was admitted under; read again next time.
          this.#log.warn(
            { image: `${name}@${p.digest}`, code: isWritError(err) ? err.code : undefined, err: (err as Error).message },
            'admitted image not read from its registry',
          );
          rows = [bare(p.digest, now)];
        }
      }
      const images = rows.map((r) => ({ ...r, names: [name], tags: tag === null ? [] : [tag], firstSeen: now, lastSeen: now }));
      try {
        await this.#store.recordImages(images, now);
      } catch (err) {
        this.#log.warn({ image: `${name}@${p.digest}`, err: (err as Error).message }, 'admitted image not recorded in the inventory; will retry');
        if (++p.tries < 3) failed.push(p);
      }
    }
    if (failed.length && !this.#closed) {
      this.#retry = setTimeout(() => {
        this.#retry = undefined;
        this.#queue.push(...failed);
        this.#kick();
      }, AdmissionInventoryRecorder.RETRY_MS);
      this.#retry.unref();
    }
  }

  #remember(digest: string, rows: InventoryImage[]): void {
    this.#known.set(digest, rows);
    while (this.#known.size > AdmissionInventoryRecorder.MAX_KNOWN) {
      const oldest = this.#known.keys().next().value;
      if (oldest === undefined) break;
      this.#known.delete(oldest);
    }
  }
}

function bare(digest: string, now: number): InventoryImage {
  return {
    digest,
    configDigest: null,
    indexDigest: null,
    platform: null,
    names: [],
    tags: [],
    layers: [],
    annotations: {},
    labels: {},
    created: null,
    firstSeen: now,
    lastSeen: now,
  };
}
