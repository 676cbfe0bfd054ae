import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MIN_PROTOCOL_VERSION, PROTOCOL_VERSION, parseProtocolVersion } from './version.ts';

describe('protocol version header', () => {
  it('absent or garbled is version 1 (peers from before the header), a whole number is itself', () => {
    assert.equal(parseProtocolVersion(undefined), MIN_PROTOCOL_VERSION);
    assert.equal(parseProtocolVersion(String(PROTOCOL_VERSION)), PROTOCOL_VERSION);
    assert.equal(parseProtocolVersion(['3', '4']), 3);
    for (const bad of ['', '0', '01', '-2', '2.5', '1000', 'two', ' 2']) assert.equal(parseProtocolVersion(bad), MIN_PROTOCOL_VERSION, JSON.stringify(bad));
  });
});
