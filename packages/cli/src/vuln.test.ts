/** The upload progress of `writ vuln ingest`: redrawn in place on a terminal, a line per tenth otherwise, bytes only when the size is unknown. */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { progressReporter } from './vuln.ts';

const MiB = 1024 * 1024;

it('on a terminal: one line redrawn per percent, ended by a newline', () => {
  let out = '';
  const p = progressReporter('big.json', 100 * MiB, true, (s) => (out += s));
  for (let n = 0; n <= 100 * MiB; n += MiB / 2) p.sent(n);
  p.done();
  const frames = out.split('\r\x1b[K').filter(Boolean);
  assert.equal(frames.length, 101, 'one frame per percent, not per chunk');
  assert.equal(frames[0], 'big.json: sent 0.0 MiB of 100.0 MiB (0%)');
  assert.equal(frames.at(-1), 'big.json: sent 100.0 MiB of 100.0 MiB (100%)\n');
});

it('not a terminal: a line per tenth; with no size, a line per 16 MiB of bytes sent', () => {
  const lines: string[] = [];
  const p = progressReporter('r.json', 10 * MiB, false, (s) => lines.push(s));
  for (let n = 0; n <= 10 * MiB; n += MiB / 4) p.sent(n);
  p.done();
  assert.equal(lines.length, 11);
  assert.equal(lines[5], 'r.json: sent 5.0 MiB of 10.0 MiB (50%)\n');
  const s: string[] = [];
  const q = progressReporter('stdin', undefined, false, (x) => s.push(x));
  for (let n = 0; n <= 40 * MiB; n += MiB) q.sent(n);
  assert.deepEqual(s, ['stdin: sent 0.0 MiB\n', 'stdin: sent 16.0 MiB\n', 'stdin: sent 32.0 MiB\n']);
});
