/** Owners: the config setting (errors name the setting) and the order an owner is resolved in. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isWritError } from '@writ/spiffe';
import { DEFAULT_OWNER_RULES, parseOwnerRules, resolveOwner } from './owners.ts';

const w = (over: Partial<Parameters<typeof resolveOwner>[1]> = {}) => ({
  spiffeIds: ['spiffe://example.org/web'],
  labels: {},
  annotations: {},
  namespace: 'payments',
  ...over,
});

describe('owners', () => {
  it('defaults: labels team, owner, app.kubernetes.io/part-of; no annotations or namespaces', () => {
    assert.deepEqual(parseOwnerRules(undefined), DEFAULT_OWNER_RULES);
    assert.deepEqual(DEFAULT_OWNER_RULES.labels, ['team', 'owner', 'app.kubernetes.io/part-of']);
  });

  it('resolves entry owner, then labels, then annotations (each in configured order), then the namespace map', () => {
    const rules = parseOwnerRules({
      labels: ['app.kubernetes.io/part-of', 'team'],
      annotations: ['example.com/owner'],
      namespaces: { payments: 'team-payments' },
    });
    const entry = new Map([['spiffe://example.org/web', 'web-team']]);
    const all = w({ labels: { team: 'l-team', 'app.kubernetes.io/part-of': 'l-part' }, annotations: { 'example.com/owner': 'a-owner' } });
    assert.equal(resolveOwner(rules, all, entry), 'web-team');
    assert.equal(resolveOwner(rules, all, new Map()), 'l-part', 'the first configured label key wins');
    assert.equal(resolveOwner(rules, w({ labels: { team: 'l-team' }, annotations: { 'example.com/owner': 'a' } }), new Map()), 'l-team');
    assert.equal(resolveOwner(rules, w({ annotations: { 'example.com/owner': 'a-owner' } }), new Map()), 'a-owner');
    assert.equal(resolveOwner(rules, w(), new Map()), 'team-payments');
    assert.equal(resolveOwner(rules, w({ namespace: 'other' }), new Map()), null);
    assert.equal(resolveOwner(rules, w({ namespace: null, labels: { team: '  ' } }), new Map()), null, 'a blank label is no owner');
  });

  it('an entry owner of any of the IDs served, tried in ID order', () => {
    const entry = new Map([
      ['spiffe://example.org/b', 'team-b'],
      ['spiffe://example.org/a', 'team-a'],
    ]);
    assert.equal(resolveOwner(DEFAULT_OWNER_RULES, w({ spiffeIds: ['spiffe://example.org/b', 'spiffe://example.org/a'] }), entry), 'team-a');
  });

  it('refuses a bad setting naming it', () => {
    const refused = (v: unknown, field: string) =>
      assert.throws(
        () => parseOwnerRules(v),
        (e: unknown) => isWritError(e, 'ERR_CONFIG_INVALID') && e.field === field,
        field,
      );
    refused([], 'owners');
    refused({ teams: [] }, 'owners.teams');
    refused({ labels: 'team' }, 'owners.labels');
    refused({ labels: ['team', 'bad key!'] }, 'owners.labels[1]');
    refused({ annotations: [7] }, 'owners.annotations[0]');
    refused({ namespaces: ['payments'] }, 'owners.namespaces');
    refused({ namespaces: { Payments: 'x' } }, 'owners.namespaces.Payments');
    refused({ namespaces: { payments: '' } }, 'owners.namespaces.payments');
  });
});
