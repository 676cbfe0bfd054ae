/** The admission listener's settings, and its certificate renewed like the server's own (clock injected). */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type PeerCertificate } from 'node:tls';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { isWritError } from '@writ/spiffe';
import { loadServerConfig } from './config.ts';
import { startServer } from './server.ts';

const base = { trustDomain: 'adm.test', dataDir: '/tmp/writ-adm-config' };

describe('admission settings', () => {
  it('are off by default; on, with the Service name and a 2 s budget unless told otherwise', () => {
    assert.equal(loadServerConfig(base).admission, undefined);
    const on = loadServerConfig({ ...base, admissionListen: '0.0.0.0:8444' }).admission!;
    assert.deepEqual(on, { host: '0.0.0.0', port: 8444, dnsNames: ['writ-admission.writ-system.svc'], clientCaFile: undefined, budgetMs: 2000 });
    const named = loadServerConfig({ ...base, admissionListen: '[::1]:0', admissionDns: 'a.b.svc, writ-admission', admissionBudget: '750ms' }).admission!;
    assert.deepEqual([named.host, named.dnsNames, named.budgetMs], ['::1', ['a.b.svc', 'writ-admission'], 750]);
  });

  it('come from the config file too, the DNS names as a list', () => {
    const dir = mkdtempSync(join(tmpdir(), 'writ-adm-cfg-'));
    try {
      writeFileSync(join(dir, 'server.yaml'), 'admissionListen: 0.0.0.0:9444\nadmissionDns: [a.ns.svc, b.ns.svc]\nadmissionBudget: 1500ms\n');
      const c = loadServerConfig({ ...base, config: join(dir, 'server.yaml') });
      assert.deepEqual([c.admission?.port, c.admission?.dnsNames, c.admission?.budgetMs], [9444, ['a.ns.svc', 'b.ns.svc'], 1500]);
      // Flags win over the file.
      assert.equal(loadServerConfig({ ...base, config: join(dir, 'server.yaml'), admissionListen: '127.0.0.1:7000' }).admission?.port, 7000);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuse what would fail later, naming the setting', () => {
    const refused = (flags: Record<string, string>, field: string, message: RegExp, code = 'ERR_CONFIG_INVALID'): void =>
      assert.throws(
        () => loadServerConfig({ ...base, ...flags }),
        (e) => isWritError(e, code) && e.field === field && message.test(e.message),
      );
    refused({ admissionListen: 'localhost' }, 'admissionListen', /HOST:PORT/);
    refused({ admissionListen: ':8444', admissionDns: 'bad_name!' }, 'admissionListen', /HOST:PORT/);
    refused({ admissionListen: '127.0.0.1:8444', admissionDns: 'bad_name!' }, 'admissionDns', /DNS names/);
    refused({ admissionListen: '127.0.0.1:8444', admissionBudget: '40s' }, 'admissionBudget', /at most 25s/, 'ERR_DURATION_INVALID');
    refused({ admissionListen: '127.0.0.1:8444', admissionBudget: '10ms' }, 'admissionBudget', /at least/, 'ERR_DURATION_INVALID');
    refused({ admissionClientCa: '/etc/ca.pem' }, 'admissionClientCa', /needs --admission-listen/);
    refused({ admissionListen: '127.0.0.1:8444', admissionClientCa: '/nonexistent/ca.pem' }, 'admissionClientCa', /does not exist/);
  });
});

function servedCertificate(port: number): Promise<PeerCertificate> {
  return new Promise((resolve, reject) => {
    // Only the certificate is looked at: under the injected clock it is not valid yet in real time.
    const s = connect({ host: '127.0.0.1', port, servername: 'writ-admission.writ-system.svc', rejectUnauthorized: false }, () => {
      resolve(s.getPeerCertificate());
      s.end();
    });
    s.on('error', reject);
  });
}

it("the admission listener's certificate names the Service and is renewed at half its life", async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'writ-adm-'));
  let now = Date.now();
  const srv = await startServer(
    loadServerConfig({ trustDomain: 'adm.test', dataDir, listen: '127.0.0.1:0', admissionListen: '127.0.0.1:0', x509SvidTtl: '1h' }),
    { log: pino({ level: 'silent' }), clock: () => now },
  );
  try {
    const port = Number(new URL(srv.admissionUrl!).port);
    const first = await servedCertificate(port);
    assert.match(first.subjectaltname ?? '', /DNS:writ-admission\.writ-system\.svc/);
    assert.match(first.subjectaltname ?? '', /URI:spiffe:\/\/adm\.test\/writ\/server/);
    now += 40 * 60_000;
    let renewed = first;
    // The background work runs every 10 s here.
    for (let i = 0; i < 150 && renewed.serialNumber === first.serialNumber; i++) {
      await new Promise((r) => setTimeout(r, 100));
      renewed = await servedCertificate(port);
    }
    assert.notEqual(renewed.serialNumber, first.serialNumber, 'a new certificate past half its life');
    assert.match(renewed.subjectaltname ?? '', /DNS:writ-admission\.writ-system\.svc/);
  } finally {
    await srv.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
});

it('a registry settings file that does not parse stops the server at start, with its code', async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'writ-adm-'));
  writeFileSync(join(dataDir, 'registries.yaml'), 'registries: { "r.example": { password: hunter2 } }\n');
  try {
    await assert.rejects(
      startServer(
        loadServerConfig({
          trustDomain: 'adm.test',
          dataDir,
          listen: '127.0.0.1:0',
          admissionListen: '127.0.0.1:0',
          registryConfig: join(dataDir, 'registries.yaml'),
        }),
        {
          log: pino({ level: 'silent' }),
        },
      ),
      (e) => isWritError(e, 'ERR_REGISTRY_CONFIG_INVALID') && !e.message.includes('hunter2'),
    );
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
});
