import assert from 'node:assert/strict';
import { cpSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { isWritError } from '@writ/spiffe';
import { attestUnix, exeIdentity, names, processStartTime } from './unix.ts';

describe('unix workload attestor', () => {
  it('attests this very process from the real /proc', async () => {
    const a = await attestUnix({ pid: process.pid, uid: process.getuid!(), gid: process.getgid!() });
    assert.ok(a.selectors.includes(`unix:uid:${process.getuid!()}`));
    assert.ok(a.selectors.includes(`unix:path:${process.execPath}`), a.selectors.join(' '));
    assert.ok(a.selectors.some((s) => /^unix:sha256:[0-9a-f]{64}$/.test(s)));
    assert.equal(a.startTime, processStartTime(process.pid));
  });

  it('refuses a reused PID: the start time differs from the one seen at connect', async () => {
    await assert.rejects(
      attestUnix({ pid: process.pid, uid: 0, gid: 0 }, { expectedStartTime: '1' }),
      (e) => isWritError(e, 'ERR_FORBIDDEN') && /another process/.test(e.message),
    );
  });

  it('refuses a vanished process, and reads a command name with spaces and parentheses correctly', async () => {
    const proc = mkdtempSync(join(tmpdir(), 'writ-proc-'));
    mkdirSync(join(proc, '42'));
    // comm "(a b) c" then state and fields up to starttime (field 22) = 777
    writeFileSync(join(proc, '42', 'stat'), `42 ((a b) c) S ${Array.from({ length: 18 }, (_, i) => i + 4).join(' ')} 777 0 0\n`);
    const bin = join(proc, 'bin');
    cpSync('/bin/true', bin);
    symlinkSync(bin, join(proc, '42', 'exe'));
    assert.equal(processStartTime(42, proc), '777');
    const a = await attestUnix({ pid: 42, uid: 1, gid: 1 }, { proc, expectedStartTime: '777' });
    assert.ok(a.selectors.includes(`unix:path:${bin}`));
    await assert.rejects(attestUnix({ pid: 43, uid: 1, gid: 1 }, { proc }), (e) => isWritError(e, 'ERR_FORBIDDEN') && /gone/.test(e.message));
    rmSync(proc, { recursive: true, force: true });
  });

  it('refuses a call from a process that runs another executable than when it connected (connect, then exec)', async () => {
    const proc = mkdtempSync(join(tmpdir(), 'writ-proc-'));
    mkdirSync(join(proc, '42'));
    writeFileSync(join(proc, '42', 'stat'), `42 (x) S ${Array.from({ length: 18 }, (_, i) => i + 4).join(' ')} 777 0 0\n`);
    cpSync('/bin/true', join(proc, 'before'));
    cpSync('/bin/false', join(proc, 'after'));
    symlinkSync(join(proc, 'before'), join(proc, '42', 'exe'));
    const atAccept = exeIdentity(42, proc);
    const same = await attestUnix({ pid: 42, uid: 1, gid: 1 }, { proc, expectedStartTime: '777', expectedExe: atAccept });
    assert.ok(same.selectors.includes(`unix:path:${join(proc, 'before')}`), 'the same executable is attested as before');
    // exec(): same PID, same start time, another executable.
    rmSync(join(proc, '42', 'exe'));
    symlinkSync(join(proc, 'after'), join(proc, '42', 'exe'));
    await assert.rejects(
      attestUnix({ pid: 42, uid: 1, gid: 1 }, { proc, expectedStartTime: '777', expectedExe: atAccept }),
      (e) => isWritError(e, 'ERR_FORBIDDEN') && /another executable than when it connected/.test(e.message),
    );
    rmSync(proc, { recursive: true, force: true });
  });
});

describe('user and group names', () => {
  it('are read again when the file changes (same size, new times), and not offered when it is gone', () => {
    const dir = mkdtempSync(join(tmpdir(), 'writ-names-'));
    try {
      const f = join(dir, 'passwd');
      writeFileSync(f, 'alice:x:1001:1001::/home/alice:/bin/sh\n');
      assert.equal(names(f).get(1001), 'alice');
      writeFileSync(f, 'carol:x:1001:1001::/home/alice:/bin/sh\n'); // same length
      // File times tick at the kernel's coarse clock (a few ms): a rewrite that fast may keep them, so this one is set.
      const later = new Date(Date.now() + 10_000);
      utimesSync(f, later, later);
      assert.equal(names(f).get(1001), 'carol', 'a renamed user is seen at once');
      rmSync(f);
      assert.equal(names(f).size, 0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
