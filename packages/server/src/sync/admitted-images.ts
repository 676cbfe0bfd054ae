/**
 * The admitted image digests as the change hub serves them: kept in memory in arrival order and
 * read from the store incrementally (what arrived after the last one read), so a snapshot a
 * second costs one indexed query, not the whole set; each agent's part of an answer is cut from it
 * (only what is new since the version it reports) and serialised once per version asked for.
 */
import { type AdmittedImagesState, type Json, formatImagesVersion, parseImagesVersion, toJson } from '@writ/protocol';
import type { Store } from '../store/types.ts';

const PAGE = 10_000;
/** Distinct agent versions whose answer part is kept per view (agents mostly share one or two). */
const MEMO = 64;

/** The set at one moment; later arrivals do not change it. */
export class AdmittedImagesView {
  readonly version: string;
  readonly #epoch: number;
  readonly #digests: readonly string[];
  readonly #seqs: readonly number[];
  readonly #count: number;
  readonly #memo = new Map<string, Json<AdmittedImagesState> | undefined>();

  constructor(epoch: number, digests: readonly string[], seqs: readonly number[], count: number) {
    this.#epoch = epoch;
    this.#digests = digests;
    this.#seqs = seqs;
    this.#count = count;
    this.version = formatImagesVersion({ epoch, seq: count ? seqs[count - 1]! : 0 });
  }

  get size(): number {
    return this.#count;
  }

  /** The answer's `admittedImages` for an agent that has `agentVersion`; undefined when it is current. */
  forAgent(agentVersion: string): Json<AdmittedImagesState> | undefined {
    if (agentVersion === this.version) return undefined;
    if (this.#memo.has(agentVersion)) return this.#memo.get(agentVersion);
    const v = parseImagesVersion(agentVersion);
    const seq = v && v.epoch === this.#epoch && v.seq <= this.#lastSeq ? v.seq : undefined;
    const json =
      seq === undefined
        ? toJson<AdmittedImagesState>({ version: this.version, full: true, digests: this.#digests.slice(0, this.#count) })
        : toJson<AdmittedImagesState>({ version: this.version, full: false, digests: this.#digests.slice(this.#after(seq), this.#count) });
    if (this.#memo.size >= MEMO) this.#memo.clear();
    this.#memo.set(agentVersion, json);
    return json;
  }

  get #lastSeq(): number {
    return this.#count ? this.#seqs[this.#count - 1]! : 0;
  }

  /** Index of the first digest that arrived after `seq`. */
  #after(seq: number): number {
    let lo = 0;
    let hi = this.#count;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.#seqs[mid]! <= seq) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}

/** Follows the store's admitted images; `read()` brings it up to date (one read at a time). */
export class AdmittedImagesFeed {
  readonly #store: Store;
  #epoch = -1;
  /** Append-only within an epoch: views share them and remember how far they reach. */
  #digests: string[] = [];
  #seqs: number[] = [];
  #reading: Promise<AdmittedImagesView> | undefined;

  constructor(store: Store) {
    this.#store = store;
  }

  read(): Promise<AdmittedImagesView> {
    const prev = this.#reading ?? Promise.resolve(undefined);
    const next = prev.catch(() => undefined).then(() => this.#readNew());
    this.#reading = next;
    return next;
  }

  async #readNew(): Promise<AdmittedImagesView> {
    for (;;) {
      const after = this.#seqs.length ? this.#seqs[this.#seqs.length - 1]! : 0;
      const page = await this.#store.listAdmittedImages({ afterSeq: after, limit: PAGE });
      if (page.epoch !== this.#epoch) {
        // Pruned (or the first read): start over; views of the old epoch keep their arrays.
        this.#epoch = page.epoch;
        this.#digests = [];
        this.#seqs = [];
        if (after !== 0) continue;
      }
      for (const i of page.items) {
        this.#digests.push(i.digest);
        this.#seqs.push(i.seq);
      }
      if (page.items.length < PAGE) break;
    }
    return new AdmittedImagesView(this.#epoch, this.#digests, this.#seqs, this.#digests.length);
  }
}
