/** The per-registry settings file: validated with errors naming the setting, secrets never shown. */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { inspect } from 'node:util';
import { isWritError } from '@writ/spiffe';
import { loadRegistryConfig, parseRegistryConfig, registryConfig } from './registry-config.ts';
import { makeTestCa, type TestCa } from './testing/registry.ts';

const SECRET = 'S3cr3t-never-shown';

function refused(fn: () => unknown, field: RegExp, message: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(isWritError(err, 'ERR_REGISTRY_CONFIG_INVALID'), inspect(err));
    assert.match(err.field ?? '', field);
    assert.match(err.message, message);
    assert.doesNotMatch(err.message, new RegExp(SECRET));
    return true;
  });
}

describe('registry config', () => {
  let dir: string;
  let ca: TestCa;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'writ-regcfg-'));
    ca = makeTestCa(dir);
    writeFileSync(join(dir, 'password'), `${SECRET}\n`);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('reads a YAML file: CA file and password file relative to it, inline PEM, a default, host names case-insensitive', () => {
    const file = join(dir, 'registries.yaml');
    writeFileSync(
      file,
      [
        'registries:',
        '  Registry.Example.com:',
        '    ca: ca.pem',
        '    username: robot',
        '    passwordFile: password',
        '  "[::1]:5000":',
        '    token: tok-123',
        '  "127.0.0.1:5000": { insecureHttp: true }',
        'default:',
        `  ca: ${JSON.stringify(ca.caPem)}`,
        '',
      ].join('\n'),
    );
    const cfg = loadRegistryConfig(file);
    const s = cfg.settingsFor('registry.example.com');
    assert.equal(s.ca?.trim(), ca.caPem.trim());
    assert.equal(s.username, 'robot');
    assert.equal(s.basicAuthorization(), `Basic ${Buffer.from(`robot:${SECRET}`).toString('base64')}`);
    assert.equal(cfg.settingsFor('[::1]:5000').tokenAuthorization(), 'Bearer tok-123');
    assert.equal(cfg.settingsFor('127.0.0.1:5000').insecureHttp, true);
    assert.equal(cfg.settingsFor('elsewhere.io').ca?.trim(), ca.caPem.trim());
    assert.equal(cfg.settingsFor('elsewhere.io').insecureHttp, false);
    assert.deepEqual(cfg.hosts().sort(), ['127.0.0.1:5000', '[::1]:5000', 'registry.example.com']);
  });

  it('never shows a password or token: not in JSON, not in util.inspect', () => {
    const cfg = registryConfig({ registries: { 'r.example.com': { username: 'u', password: SECRET }, 't.example.com': { token: SECRET } } });
    const shown = `${JSON.stringify(cfg)} ${inspect(cfg, { depth: 10 })} ${inspect(cfg.settingsFor('r.example.com'))} ${JSON.stringify(cfg.settingsFor('t.example.com'))}`;
    assert.doesNotMatch(shown, new RegExp(SECRET));
    assert.match(JSON.stringify(cfg), /\[redacted\]/);
  });

  it('JSON is YAML too; an empty file is no settings', () => {
    const cfg = parseRegistryConfig(JSON.stringify({ registries: { 'docker.io': { username: 'u', password: 'p' } } }));
    assert.equal(cfg.settingsFor('index.docker.io').username, 'u');
    assert.equal(parseRegistryConfig('').hosts().length, 0);
  });

  it('refuses what is wrong, naming the setting and never quoting a secret', () => {
    refused(
      () => registryConfig({ registries: { 'r.example.com': { pasword: SECRET } } }),
      /registries\."r.example.com"\.pasword/,
      /unknown setting; known: ca, username/,
    );
    refused(() => registryConfig({ registries: { 'r.example.com': { password: SECRET } } }), /username/, /is required with a password/);
    refused(() => registryConfig({ registries: { 'r.example.com': { username: 'u' } } }), /password/, /is required with a username/);
    refused(() => registryConfig({ registries: { 'r.example.com': { username: 'u', password: SECRET, passwordFile: 'x' } } }), /password/, /not both/);
    refused(() => registryConfig({ registries: { 'r.example.com': { username: 'u', password: SECRET, token: SECRET } } }), /token/, /not both/);
    refused(() => registryConfig({ registries: { 'r.example.com': { username: 'a:b', password: SECRET } } }), /username/, /must not contain ":"/);
    refused(() => registryConfig({ registries: { 'r.example.com': { username: 'u', password: `${SECRET}\nx` } } }), /password/, /one line/);
    refused(() => registryConfig({ registries: { 'not a host': {} } }), /registries/, /not a registry host/);
    refused(() => registryConfig({ registries: { 'docker.io': {}, 'index.docker.io': {} } }), /index.docker.io/, /same registry/);
    refused(() => registryConfig({ registries: { 'r.example.com': { insecureHttp: 'yes' } } }), /insecureHttp/, /true or false/);
    refused(
      () => registryConfig({ registries: { 'r.example.com': { ca: '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----' } } }),
      /ca/,
      /not a valid X.509/,
    );
    refused(() => registryConfig({ registries: { 'r.example.com': { ca: 'missing.pem' } } }, { baseDir: dir }), /ca/, /cannot read missing.pem \(ENOENT\)/);
    refused(() => registryConfig({ registries: { 'r.example.com': { ca: 'password' } } }, { baseDir: dir }), /ca/, /no PEM CERTIFICATE/);
    refused(() => registryConfig({ registries: [] }), /registries/, /must map/);
    refused(() => registryConfig({ mirrors: {} }), /mirrors/, /unknown setting; known: registries, default/);
    refused(() => registryConfig(['x']), /registry config/, /must be a mapping/);
  });

  it('a YAML error says where, not what the line held (it may be a password)', () => {
    refused(
      () => parseRegistryConfig(`registries:\n  r.example.com:\n    username: u\n    password: "${SECRET}\n`, { source: 'reg.yaml' }),
      /reg.yaml/,
      /not valid YAML at line \d+/,
    );
    refused(() => parseRegistryConfig('default: {}\ndefault: {}\n'), /registry config/, /not valid YAML/);
  });

  it('a YAML bomb and an oversized file are refused before expanding', () => {
    const bomb = [
      'a: &a ["x","x","x","x","x","x","x","x","x"]',
      ...Array.from(
        { length: 12 },
        (_, i) =>
          `${String.fromCharCode(98 + i)}: &${String.fromCharCode(98 + i)} [*${String.fromCharCode(97 + i)},*${String.fromCharCode(97 + i)},*${String.fromCharCode(97 + i)}]`,
      ),
    ].join('\n');
    refused(() => parseRegistryConfig(bomb), /registry config/, /not valid YAML/);
    refused(() => parseRegistryConfig(`# ${'x'.repeat(1024 * 1024)}`), /registry config/, /larger than 1048576 bytes/);
    refused(() => loadRegistryConfig(join(dir, 'nope.yaml')), /registryConfig/, /cannot read .*nope.yaml \(ENOENT\)/);
  });
});
