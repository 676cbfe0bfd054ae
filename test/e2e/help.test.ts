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
