/**
 * Which of the agent's entries a caller gets: every selector of the entry among the caller's, not
 * expired, not quarantined, and — when the entry (or the server) requires it — only for a caller
 * whose container runs an admitted image.
 */
import { imageDigestsOf } from '@writ/protocol';
import type { EntryView } from './sync.ts';

export interface EntryMatcherOptions {
  readonly clock: () => number;
  /** The entries the agent holds now. */
  readonly entries: () => Iterable<EntryView>;
  /** The server requires an admitted image for every entry (`--require-admitted-image`). */
  readonly requireAdmittedImage: () => boolean;
  readonly quarantined: () => ReadonlySet<string>;
}

/** Why an entry a caller matches is withheld from it (Debug/WhoAmI). */
export interface Withheld {
  readonly spiffeId: string;
  readonly reason: string;
}

export class EntryMatcher {
  readonly #o: EntryMatcherOptions;
  #admitted: ReadonlySet<string> = new Set();

  constructor(opts: EntryMatcherOptions) {
    this.#o = opts;
  }

  /** The image digests admitted under an enforce admission policy. */
  setAdmitted(digests: Iterable<string>): void {
    this.#admitted = new Set(digests);
  }

  get admittedCount(): number {
    return this.#admitted.size;
  }

  /**
   * Entries whose selectors are all among `selectors`; never a quarantined identity, and an entry
   * that requires an admitted image only when one of the caller's image digests was admitted.
   */
  entriesFor(selectors: readonly string[]): EntryView[] {
    const admitted = this.#runsAdmittedImage(selectors);
    return this.#matching(selectors).filter((e) => admitted || !this.#needsAdmittedImage(e));
  }

  /** Entries the caller matches but does not get because its image was not admitted, each with why. */
  withheldFor(selectors: readonly string[]): Withheld[] {
    if (this.#runsAdmittedImage(selectors)) return [];
    const digests = imageDigestsOf(selectors);
    const reason = digests.length
      ? `requires an admitted image: this container runs ${digests.join(', ')}, not admitted under an enforce admission policy (yet)`
      : 'requires an admitted image: the caller has no image digest (not in a container, or no container attestor)';
    const ids = new Set(this.#matching(selectors).flatMap((e) => (this.#needsAdmittedImage(e) ? [e.spiffeId] : [])));
    return [...ids].map((spiffeId) => ({ spiffeId, reason }));
  }

  /** The SPIFFE IDs of the current entries, quarantined and expired ones left out. */
  currentIds(): Set<string> {
    return new Set(this.#live(() => true).map((e) => e.spiffeId));
  }

  #matching(selectors: readonly string[]): EntryView[] {
    const have = new Set(selectors);
    // Code unit order, not localeCompare: the same on every node, and no ICU collator (a few MB of RSS) in the agent.
    const cmp = (x: string, y: string): number => (x < y ? -1 : x > y ? 1 : 0);
    return this.#live((e) => e.selectors.every((x) => have.has(x))).sort((a, b) => cmp(a.spiffeId, b.spiffeId) || cmp(a.id, b.id));
  }

  /** Entries that `also` accepts, not quarantined and not expired (one pass: this runs on every call). */
  #live(also: (e: EntryView) => boolean): EntryView[] {
    const now = this.#o.clock();
    const quarantined = this.#o.quarantined();
    const out: EntryView[] = [];
    for (const e of this.#o.entries()) if (!quarantined.has(e.spiffeId) && (e.expiresAt === null || Date.parse(e.expiresAt) > now) && also(e)) out.push(e);
    return out;
  }

  #needsAdmittedImage(e: EntryView): boolean {
    return e.requireAdmittedImage === true || this.#o.requireAdmittedImage();
  }

  #runsAdmittedImage(selectors: readonly string[]): boolean {
    return imageDigestsOf(selectors).some((d) => this.#admitted.has(d));
  }
}
