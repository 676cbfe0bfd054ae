/** Which entries a caller's selectors get: expiry, quarantine, and admitted-image gating. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { EntryMatcher } from './entry-matcher.ts';
import type { EntryView } from './sync.ts';
import { fakeEntry } from './testing/fake-server.ts';

const ADMITTED = `sha256:${'a'.repeat(64)}`;
const OTHER = `sha256:${'b'.repeat(64)}`;
const image = (d: string): string => `docker:image_digest:${d}`;

function matcher(entries: EntryView[], o: { quarantined?: string[]; requireAll?: boolean; now?: number } = {}): EntryMatcher {
  return new EntryMatcher({
    clock: () => o.now ?? Date.now(),
    entries: () => entries,
    requireAdmittedImage: () => o.requireAll === true,
    quarantined: () => new Set(o.quarantined ?? []),
  });
}

describe('EntryMatcher', () => {
  it("an entry matches when all its selectors are the caller's; sorted by SPIFFE ID, then entry id", () => {
    const m = matcher([
      fakeEntry('2', 'spiffe://fake.test/b', ['unix:uid:1']),
      fakeEntry('1', 'spiffe://fake.test/b', ['unix:uid:1']),
      fakeEntry('3', 'spiffe://fake.test/a', ['unix:uid:1', 'unix:gid:1']),
      fakeEntry('4', 'spiffe://fake.test/c', ['unix:uid:2']),
    ]);
    assert.deepEqual(
      m.entriesFor(['unix:uid:1', 'unix:gid:1']).map((e) => e.id),
      ['3', '1', '2'],
    );
    assert.deepEqual(
      m.entriesFor(['unix:uid:1']).map((e) => e.id),
      ['1', '2'],
    );
  });

  it('never a quarantined or expired entry, in entriesFor as in currentIds', () => {
    const now = Date.parse('2026-12-01T00:00:00Z');
    const m = matcher(
      [
        fakeEntry('q', 'spiffe://fake.test/q', ['unix:uid:1']),
        { ...fakeEntry('x', 'spiffe://fake.test/x', ['unix:uid:1']), expiresAt: '2026-11-30T00:00:00Z' },
        { ...fakeEntry('ok', 'spiffe://fake.test/ok', ['unix:uid:1']), expiresAt: '2026-12-02T00:00:00Z' },
      ],
      { quarantined: ['spiffe://fake.test/q'], now },
    );
    assert.deepEqual(
      m.entriesFor(['unix:uid:1']).map((e) => e.id),
      ['ok'],
    );
    assert.deepEqual([...m.currentIds()], ['spiffe://fake.test/ok']);
  });

  it('an entry that requires an admitted image: only for a caller running one, else withheld with why', () => {
    const gated = { ...fakeEntry('g', 'spiffe://fake.test/g', ['unix:uid:1']), requireAdmittedImage: true as const };
    const plain = fakeEntry('p', 'spiffe://fake.test/p', ['unix:uid:1']);
    const m = matcher([gated, plain]);
    m.setAdmitted([ADMITTED]);
    assert.deepEqual(
      m.entriesFor(['unix:uid:1', image(ADMITTED)]).map((e) => e.id),
      ['g', 'p'],
    );
    assert.deepEqual(m.withheldFor(['unix:uid:1', image(ADMITTED)]), []);
    assert.deepEqual(
      m.entriesFor(['unix:uid:1', image(OTHER)]).map((e) => e.id),
      ['p'],
    );
    assert.match(m.withheldFor(['unix:uid:1', image(OTHER)])[0]!.reason, new RegExp(`this container runs ${OTHER}, not admitted`));
    assert.match(m.withheldFor(['unix:uid:1'])[0]!.reason, /the caller has no image digest/);
  });

  it("the server's --require-admitted-image gates every entry", () => {
    const m = matcher([fakeEntry('p', 'spiffe://fake.test/p', ['unix:uid:1'])], { requireAll: true });
    assert.deepEqual(m.entriesFor(['unix:uid:1']), []);
    m.setAdmitted([ADMITTED]);
    assert.deepEqual(
      m.entriesFor(['unix:uid:1', image(ADMITTED)]).map((e) => e.id),
      ['p'],
    );
  });
});
