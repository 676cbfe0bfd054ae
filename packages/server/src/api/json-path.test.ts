/** Where a JSON text breaks: the recognizer agrees with JSON.parse on every text, and the path names the value being read. */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import fc from 'fast-check';
import { jsonPathAt, syntaxErrorAt } from './json-path.ts';

const parses = (t: string): boolean => {
  try {
    JSON.parse(t);
    return true;
  } catch {
    return false;
  }
};

it('finds an error exactly when JSON.parse refuses the text', () => {
  fc.assert(fc.property(fc.json(), (t) => syntaxErrorAt(t) === undefined));
  // Mangled JSON: a character cut out or put in anywhere.
  fc.assert(
    fc.property(fc.json(), fc.nat(), fc.constantFrom('', ',', '}', ']', '"', ':', '\\', 'x', '0', ' '), (t, at, put) => {
      const i = at % (t.length + 1);
      const m = t.slice(0, i) + put + t.slice(i + 1);
      return parses(m) === (syntaxErrorAt(m) === undefined);
    }),
    { numRuns: 2000 },
  );
});

it('names the JSON path of the value where the text breaks', () => {
  const at = (t: string): string => jsonPathAt(t, syntaxErrorAt(t)!);
  assert.equal(at('{"Results":[{"x":1},{"Vulnerabilities":[{"PkgName": "a" "b"}]}]}'), 'Results[1].Vulnerabilities[0].PkgName');
  assert.equal(at('{"a": [1, 2, }'), 'a[2]');
  assert.equal(at('{"a b": {"c": tru}}'), '["a b"].c');
  assert.equal(at('{"a": "x\\q"}'), 'a');
  assert.equal(at('[1, 2'), '[1]');
  assert.equal(at('{"SchemaVersion": 2,'), '');
});
