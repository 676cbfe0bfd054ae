/**
 * docs/deploy.md stays true: its ```sh blocks run as written (see guide.ts): the image built with
 * umoci, the upstream CA and KEK, both overlays rendered and decoded, the systemd units' hardening.
 * And the units' own ExecStart lines (paths moved under a temporary directory) start a server under
 * an upstream CA and an agent whose socket hands out an SVID that chains to that CA's root.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, it } from 'node:test';
import { runGuide } from './guide.ts';
import { ROOT, cleanup, run, waitFor, writ } from './helpers.ts';

it('the deploy guide runs as written: image, upstream CA, overlays rendered and decoded, units checked', async () => {
  const g = await runGuide('docs/deploy.md', { ports: [], minBlocks: 4, timeoutMs: 420_000 });
  try {
    assert.equal(g.code, 0, `the guide failed\nstdout:\n${g.out}\nstderr:\n${g.err}`);
    assert.match(g.out, /^built \S+\/writ-deploy\/oci:0\.1\.0$/m);
    assert.match(g.out, /^1$/m, "the layer's history names rootfs.sh");
    assert.match(g.out, /^subject=CN ?= ?writ upstream CA$/m);
    assert.match(g.out, /^trial: 27 documents decode$/m);
    assert.match(g.out, /^production: 22 documents decode$/m);
    assert.match(g.out, /^units: exposure under 3\.0$/m);
  } finally {
    await g.finish();
  }
});

const dir = mkdtempSync(join(tmpdir(), 'writ-e2e-units-'));
const children: ChildProcess[] = [];
after(async () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
  await Promise.all(children.map((c) => (c.exitCode === null ? new Promise((r) => c.once('exit', r)) : undefined)));
  cleanup(dir);
});

/** A unit's ExecStart with the host paths moved under `dir` (split on spaces: the units quote nothing). */
function execStart(unit: string, creds: string): string[] {
  const text = readFileSync(join(ROOT, 'deploy/systemd', unit), 'utf8');
  const line = /^ExecStart=(.+)$/m.exec(text)![1]!;
  return line
    .replace(/\$\{CREDENTIALS_DIRECTORY\}/g, creds)
    .split(' ')
    .map((a) =>
      a === '/usr/local/bin/node' ? process.execPath : a.replace(/^\/opt\/writ\//, ROOT).replace(/^\/(etc|var|run)\//, (m) => join(dir, m.slice(1))),
    );
}

function lineOf(child: ChildProcess, re: RegExp, what: string): Promise<RegExpExecArray> {
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    const timer = setTimeout(() => reject(new Error(`${what} did not start: ${out}${err}`)), 60_000);
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = re.exec(out);
      if (m) clearTimeout(timer), resolve(m);
    });
    child.once('exit', (code) => (clearTimeout(timer), reject(new Error(`${what} exited ${code}: ${out}${err}`))));
  });
}

it("the units' ExecStart lines run: a server under the upstream CA, an agent serving an SVID that chains to its root", async () => {
  const etc = join(dir, 'etc/writ');
  const creds = join(dir, 'credentials');
  for (const d of [etc, creds, join(dir, 'var/lib/writ'), join(dir, 'var/lib/writ-agent'), join(dir, 'run/writ/agent')]) mkdirSync(d, { recursive: true });
  const ca = await run('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2',
    '-keyout', join(etc, 'upstream-ca.key'), '-out', join(etc, 'upstream-ca.pem'), '-subj', '/CN=writ upstream CA',
    '-addext', 'basicConstraints=critical,CA:true,pathlen:1', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
  ]); // biome-ignore format: one openssl command
  assert.equal(ca.code, 0, ca.stderr);
  writeFileSync(join(creds, 'kek'), `${'ab'.repeat(32)}\n`);
  writeFileSync(
    join(etc, 'server.yaml'),
    [
      'trustDomain: units.test',
      `dataDir: ${join(dir, 'var/lib/writ')}`,
      'listen: 127.0.0.1:0',
      'upstreamCa:',
      `  certFile: ${join(etc, 'upstream-ca.pem')}`,
      `  keyFile: ${join(etc, 'upstream-ca.key')}`,
      '',
    ].join('\n'),
  );
  const [node, ...serverArgs] = execStart('writ-server.service', creds);
  const server = spawn(node!, serverArgs, { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(server);
  const url = (await lineOf(server, /"url":"(https:\/\/127\.0\.0\.1:\d+)".*"msg":"writ server listening"/, 'writ-server.service'))[1]!;
  const data = join(dir, 'var/lib/writ');
  const env = {
    WRIT_SERVER: url,
    WRIT_TRUST_DOMAIN: 'units.test',
    WRIT_CA_FILE: join(data, 'bundle.pem'),
    WRIT_TOKEN: readFileSync(join(data, 'admin.token'), 'utf8').trim(),
  };
  const srv = { env };
  const e = await writ(
    undefined,
    [
      'entry',
      'create',
      '--spiffe-id',
      'spiffe://units.test/host/app',
      '--parent-id',
      'spiffe://units.test/writ/agent/host1',
      '--selector',
      `unix:uid:${process.getuid!()}`,
    ],
    srv,
  );
  assert.equal(e.code, 0, e.stderr);
  const t = await writ(undefined, ['token', 'create', '--node-name', 'host1', '-o', 'json'], srv);
  assert.equal(t.code, 0, t.stderr);

  // EnvironmentFile=/etc/writ/agent.env, as the guide says to write it.
  const agentEnv: Record<string, string> = {
    WRIT_SERVER: url,
    WRIT_CA_FILE: join(data, 'bundle.pem'),
    WRIT_TRUST_DOMAIN: 'units.test',
    WRIT_JOIN_TOKEN: (JSON.parse(t.stdout) as { token: string }).token,
  };
  const [, ...agentArgs] = execStart('writ-agent.service', creds);
  const agent = spawn(node!, agentArgs, { stdio: ['ignore', 'pipe', 'pipe'], env: { PATH: process.env['PATH'] ?? '', ...agentEnv } });
  children.push(agent);
  await lineOf(agent, /"msg":"writ agent serving the Workload API"/, 'writ-agent.service');

  const socket = join(dir, 'run/writ/agent/api.sock');
  const out = join(dir, 'svid');
  const f = await waitFor('an SVID from the agent', async () => {
    const r = await writ(undefined, ['svid', 'fetch', '--socket', socket, '--write', out, '-o', 'json']);
    return r.code === 0 && r.stdout.includes('spiffe://units.test/host/app') ? r : undefined;
  });
  assert.deepEqual(
    (JSON.parse(f.stdout) as Array<{ spiffeId: string }>).map((s) => s.spiffeId),
    ['spiffe://units.test/host/app'],
  );
  const v = await run('openssl', ['verify', '-CAfile', join(etc, 'upstream-ca.pem'), '-untrusted', join(out, 'svid.pem'), join(out, 'svid.pem')]);
  assert.equal(v.code, 0, v.stdout + v.stderr);
  assert.match(v.stdout, /svid\.pem: OK/);
});
