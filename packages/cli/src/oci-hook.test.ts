/**
 * `writ oci-hook`'s config editing and mount planning against real runtime-spec JSON: the config
 * `runc spec` writes (runc 1.1.5) and the one umoci makes from Writ's own image
 * (testdata/oci). What runs a real container with the hook is test/e2e/oci-hook.test.ts.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { isWritError } from '@writ/spiffe';
import { endpointOf, makeTargetDir, parseJsonDocument, planMount, prepareConfig, type HookOptions } from './oci-hook.ts';

const here = new URL('./testdata/oci/', import.meta.url).pathname;
const fixture = (name: string): Record<string, unknown> => JSON.parse(readFileSync(join(here, name), 'utf8')) as Record<string, unknown>;
const OPTS: HookOptions = { socket: '/run/writ/agent/api.sock', containerDir: '/run/spiffe/workload' };
const HOOK = { path: '/usr/local/bin/node', args: ['/usr/local/bin/node', '/opt/writ/bin/writ.js', 'oci-hook', 'create-container'], timeout: 10 };
const tmp = mkdtempSync(join(tmpdir(), 'writ-oci-hook-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

const refused = (fn: () => unknown, re: RegExp): void =>
  assert.throws(fn, (e: unknown) => isWritError(e) && e.code === 'ERR_CONFIG_INVALID' && re.test(e.message));
type Config = { process: { env: string[] }; hooks: { createContainer: unknown[]; prestart?: unknown[] } };

describe('prepareConfig', () => {
  for (const name of ['runc-spec.json', 'umoci-writ.json']) {
    it(`${name}: adds SPIFFE_ENDPOINT_SOCKET and one createContainer hook, leaves the rest as it was`, () => {
      const input = fixture(name);
      const before = JSON.stringify(input);
      const out = prepareConfig(input, OPTS, HOOK) as unknown as Config;
      assert.equal(JSON.stringify(input), before, 'the input is not modified');
      const oldEnv = (input['process'] as { env: string[] }).env;
      assert.deepEqual(out.process.env, [...oldEnv, 'SPIFFE_ENDPOINT_SOCKET=unix:///run/spiffe/workload/api.sock']);
      assert.deepEqual(out.hooks.createContainer, [HOOK]);
      const { process: _p, hooks: _h, ...rest } = out as unknown as Record<string, unknown>;
      const { process: _p2, hooks: _h2, ...restIn } = input;
      assert.deepEqual(rest, restIn);
      assert.deepEqual(prepareConfig(out as unknown as Record<string, unknown>, OPTS, HOOK), out, 'preparing twice changes nothing');
    });
  }

  it("keeps the container's own SPIFFE_ENDPOINT_SOCKET and the hooks already there", () => {
    const c = fixture('runc-spec.json') as { process: { env: string[] }; hooks?: unknown };
    c.process.env.push('SPIFFE_ENDPOINT_SOCKET=unix:///elsewhere.sock');
    c.hooks = { createContainer: [{ path: '/usr/bin/other' }], prestart: [{ path: '/usr/bin/net' }] };
    const out = prepareConfig(c, OPTS, HOOK) as unknown as Config;
    assert.deepEqual(
      out.process.env.filter((e) => e.startsWith('SPIFFE_')),
      ['SPIFFE_ENDPOINT_SOCKET=unix:///elsewhere.sock'],
    );
    assert.deepEqual(out.hooks.createContainer, [{ path: '/usr/bin/other' }, HOOK]);
    assert.deepEqual(out.hooks.prestart, [{ path: '/usr/bin/net' }]);
  });

  it('changes nothing for a container annotated writ.dev/workload-api: "false"', () => {
    const c = { ...fixture('umoci-writ.json'), annotations: { 'writ.dev/workload-api': 'false' } };
    assert.deepEqual(prepareConfig(c, OPTS, HOOK), c);
  });

  it('refuses what is not a runtime config, and paths that could climb out', () => {
    refused(() => prepareConfig({ process: {} }, OPTS, HOOK), /ociVersion/);
    refused(() => prepareConfig({ ociVersion: '1.0.2', process: { env: [1] } }, OPTS, HOOK), /process.env/);
    refused(() => prepareConfig({ ociVersion: '1.0.2', process: {}, hooks: { createContainer: {} } }, OPTS, HOOK), /createContainer/);
    for (const containerDir of ['run/spiffe', '/run/../etc', '/', '/run/spiffe/'])
      refused(() => prepareConfig(fixture('runc-spec.json'), { ...OPTS, containerDir }, HOOK), /--container-dir/);
    refused(() => parseJsonDocument('[]', 'stdin'), /JSON object/);
    refused(() => parseJsonDocument('{', 'stdin'), /not JSON/);
    refused(() => parseJsonDocument(' '.repeat(5 * 1024 * 1024), 'stdin'), /larger/);
  });

  it('names the socket inside the container after the agent socket', () => {
    assert.equal(endpointOf({ socket: '/var/run/writ/workload.sock', containerDir: '/spiffe' }), 'unix:///spiffe/workload.sock');
  });
});

describe('planMount', () => {
  const bundle = join(tmp, 'bundle');
  mkdirSync(join(bundle, 'rootfs'), { recursive: true });
  const state = { ociVersion: '1.0.2', id: 'c1', status: 'creating', pid: 4242, bundle };
  const read = (c: unknown) => (p: string) => {
    assert.equal(p, join(bundle, 'config.json'));
    return JSON.stringify(c);
  };

  it("mounts the socket's directory at the container dir under the bundle's rootfs", () => {
    const plan = planMount(state, read(fixture('umoci-writ.json')), OPTS);
    assert.deepEqual(plan, { source: '/run/writ/agent', target: join(bundle, 'rootfs/run/spiffe/workload'), rootfs: join(bundle, 'rootfs') });
    const abs = { ...fixture('runc-spec.json'), root: { path: '/var/lib/images/x/rootfs' } };
    assert.equal(planMount(state, read(abs), OPTS)?.target, '/var/lib/images/x/rootfs/run/spiffe/workload');
  });

  it('does nothing for an opted-out container; refuses a state without a bundle', () => {
    assert.equal(planMount(state, read({ ...fixture('runc-spec.json'), annotations: { 'writ.dev/workload-api': 'false' } }), OPTS), undefined);
    refused(() => planMount({ ...state, bundle: 'relative' }, read(fixture('runc-spec.json')), OPTS), /bundle/);
    refused(() => planMount({ ...state, id: 7 }, read(fixture('runc-spec.json')), OPTS), /id/);
    refused(() => planMount(state, read({ ...fixture('runc-spec.json'), root: {} }), OPTS), /root.path/);
  });

  it('creates the target directory, but never through a link in the image', () => {
    const rootfs = join(bundle, 'rootfs');
    makeTargetDir({ source: '/run/writ/agent', target: join(rootfs, 'run/spiffe/workload'), rootfs });
    assert.ok(existsSync(join(rootfs, 'run/spiffe/workload')));
    const evil = join(tmp, 'evil');
    mkdirSync(join(evil, 'rootfs'), { recursive: true });
    const outside = join(tmp, 'outside');
    mkdirSync(outside);
    symlinkSync(outside, join(evil, 'rootfs/run'));
    refused(() => makeTargetDir({ source: '/x', target: join(evil, 'rootfs/run/spiffe/workload'), rootfs: join(evil, 'rootfs') }), /symbolic link/);
    assert.ok(!existsSync(join(outside, 'spiffe')), 'nothing was created outside the rootfs');
    writeFileSync(join(evil, 'rootfs/file'), '');
    refused(() => makeTargetDir({ source: '/x', target: join(evil, 'rootfs/file/x'), rootfs: join(evil, 'rootfs') }), /not a directory/);
  });
});
