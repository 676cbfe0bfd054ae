import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { newEwma, update, zScore } from './ewma.ts';

describe('deny-rate EWMA and z-score', () => {
  it('a steady deny rate is no surprise; a jump far above it is', () => {
    const e = newEwma();
    for (let i = 0; i < 50; i++) update(e, i % 2 ? 0.1 : 0.12, 0.1);
    assert.ok(Math.abs(e.mean - 0.11) < 0.01, `mean follows the rate (${e.mean})`);
    assert.ok(zScore(e, 0.11, 0.05) < 1, 'the usual rate scores low');
    assert.ok(zScore(e, 0.9, 0.05) >= 4, 'a rate of 90% scores as a spike');
  });

  it('floors the deviation: a rate steady at 0 makes 10% denies unremarkable and 50% a spike', () => {
    const e = newEwma();
    for (let i = 0; i < 20; i++) update(e, 0, 0.1);
    assert.equal(e.variance, 0);
    assert.equal(zScore(e, 0.1, 0.05), 2);
    assert.equal(zScore(e, 0.5, 0.05), 10);
  });

  it('adapts: after a lasting change the new rate stops being a spike', () => {
    const e = newEwma();
    for (let i = 0; i < 20; i++) update(e, 0, 0.1);
    assert.ok(zScore(e, 0.6, 0.05) >= 4);
    for (let i = 0; i < 60; i++) update(e, 0.6, 0.1);
    assert.ok(zScore(e, 0.6, 0.05) < 1, 'the new normal');
    assert.equal(e.samples, 80);
  });

  it('matches the closed form for alpha = 1 (only the last bucket counts)', () => {
    const e = newEwma();
    update(e, 0.3, 1);
    assert.equal(e.mean, 0.3);
    assert.equal(e.variance, 0);
  });
});
