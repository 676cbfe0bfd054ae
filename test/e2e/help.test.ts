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
