import assert from 'node:assert/strict';
import { it } from 'node:test';
import { writ } from './helpers.ts';

it("a subcommand's --help lists the global options it reads (--server, --token, --ca-file, -o)", async () => {
  for (const args of [
    ['agent', 'start', '--help'],
    ['entry', 'list', '--help'],
  ]) {
    const r = await writ(undefined, args);
    assert.equal(r.code, 0, r.stderr);
    for (const flag of ['--server <url>', '--token <token>', '--ca-file <file>', '-o, --output <format>'])
      assert.ok(r.stdout.includes(flag), `${args.join(' ')}: ${flag}\n${r.stdout}`);
  }
});

it('writ with no command, or a noun without its verb, is a usage error: the help on stderr, exit 2; --help itself exits 0', async () => {
  for (const args of [[], ['entry']]) {
    const r = await writ(undefined, args);
    assert.equal(r.code, 2, `writ ${args.join(' ')}`);
    assert.match(r.stderr, /Usage: writ/);
  }
  const help = await writ(undefined, ['--help']);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /Usage: writ/);
});

it('writ agent start, run by its own entry (the agent loads only its code), has the same help as through the whole CLI', async () => {
  // A global option before the noun takes the whole CLI's program (bin/writ.js picks the agent's entry for `agent start ...` only).
  const lean = await writ(undefined, ['agent', 'start', '--help']);
  const whole = await writ(undefined, ['-o', 'table', 'agent', 'start', '--help']);
  assert.equal(lean.code, 0, lean.stderr);
  assert.equal(whole.code, 0, whole.stderr);
  assert.match(lean.stdout, /--data-dir <dir>/);
  assert.equal(lean.stdout, whole.stdout);
  const missing = await writ(undefined, ['agent', 'start']);
  assert.equal(missing.code, 2, 'a usage error exits 2');
  assert.match(missing.stderr, /required option '--data-dir <dir>' not specified/);
});
