import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, statSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { it } from 'node:test';
import { exeIdentity } from './unix.ts';

it('unix:sha256 follows a file rewritten in place at the same size with its mtime put back (the hash cache keys on ctime too)', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'writ-hash-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'allowed-binary');
  writeFileSync(file, 'A'.repeat(4096));
  utimesSync(file, 1_700_000_000, 1_700_000_000); // a whole second, so that it can be put back exactly
  const proc = join(dir, 'proc');
  mkdirSync(join(proc, '4242'), { recursive: true });
  symlinkSync(file, join(proc, '4242', 'exe'));
  const first = await exeIdentity(4242, proc);
  assert.equal(first?.sha256, createHash('sha256').update('A'.repeat(4096)).digest('hex'));
  // The attacker's code, same size, same inode, mtime restored (touch -m -r).
  await new Promise((r) => setTimeout(r, 20)); // ctime has millisecond resolution here: let it move
  writeFileSync(file, 'B'.repeat(4096));
  utimesSync(file, 1_700_000_000, 1_700_000_000);
  assert.equal(statSync(file).mtimeMs, 1_700_000_000_000);
  const second = await exeIdentity(4242, proc);
  assert.equal(second?.sha256, createHash('sha256').update('B'.repeat(4096)).digest('hex'), 'the hash of what the file holds now');
});
