/** The bundle endpoint listener and the federation timeout in the server configuration: defaults, and what is refused at start. */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, it } from 'node:test';
import { isWritError } from '@writ/spiffe';
import { loadServerConfig } from './config.ts';

const dir = mkdtempSync(join(tmpdir(), 'writ-config-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const base = { trustDomain: 'c.test', dataDir: dir };
const cert = join(dir, 'cert.pem');
const key = join(dir, 'key.pem');
writeFileSync(cert, 'x');
writeFileSync(key, 'x');

const refused = (flags: Record<string, string>, field: string, why: RegExp): void =>
  assert.throws(
    () => loadServerConfig({ ...base, ...flags }),
    (e) => isWritError(e, 'ERR_CONFIG_INVALID') && e.field === field && why.test(e.message),
    JSON.stringify(flags),
  );

it('is off by default; https_spiffe by default when listening; https_web takes a certificate and key file', () => {
  const off = loadServerConfig(base);
  assert.equal(off.bundleEndpoint, undefined);
  assert.equal(off.federationTimeoutMs, 10_000);
  assert.deepEqual(loadServerConfig({ ...base, bundleEndpointListen: '0.0.0.0:8444' }).bundleEndpoint, {
    host: '0.0.0.0',
    port: 8444,
    profile: 'https_spiffe',
    certFile: undefined,
    keyFile: undefined,
  });
  const web = loadServerConfig({
    ...base,
    bundleEndpointListen: '127.0.0.1:0',
    bundleEndpointProfile: 'https_web',
    bundleEndpointCert: cert,
    bundleEndpointKey: key,
  });
  assert.deepEqual([web.bundleEndpoint?.profile, web.bundleEndpoint?.certFile, web.bundleEndpoint?.keyFile], ['https_web', cert, key]);
  assert.equal(loadServerConfig({ ...base, federationTimeout: '2s' }).federationTimeoutMs, 2000);
});

it('refuses settings that do not make an endpoint, naming the setting', () => {
  refused({ bundleEndpointListen: 'nowhere' }, 'bundleEndpointListen', /HOST:PORT/);
  refused({ bundleEndpointListen: '127.0.0.1:0', bundleEndpointProfile: 'https_jwt' }, 'bundleEndpointProfile', /https_web or https_spiffe/);
  refused({ bundleEndpointListen: '127.0.0.1:0', bundleEndpointProfile: 'https_web' }, 'bundleEndpointCert', /needs --bundle-endpoint-cert/);
  refused(
    { bundleEndpointListen: '127.0.0.1:0', bundleEndpointProfile: 'https_web', bundleEndpointCert: join(dir, 'none.pem'), bundleEndpointKey: key },
    'bundleEndpointCert',
    /does not exist/,
  );
  refused({ bundleEndpointListen: '127.0.0.1:0', bundleEndpointCert: cert, bundleEndpointKey: key }, 'bundleEndpointCert', /own SVID/);
  refused({ bundleEndpointProfile: 'https_web' }, 'bundleEndpointListen', /is needed/);
  assert.throws(
    () => loadServerConfig({ ...base, federationTimeout: '5m' }),
    (e) => isWritError(e) && /federationTimeout: must be at most 2m/.test(e.message),
  );
});
