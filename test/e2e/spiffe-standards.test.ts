/**
 * SPIFFE standards rules as a user of the running server meets them: no SVID is minted for the bare
 * trust domain ID, and a bundle whose x509-svid keys lack x5c is stored rather than refused.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { cleanup, run, startServerProcess, writ, type ServerProcess } from './helpers.ts';

let srv: ServerProcess;
let work: string;

before(async () => {
  work = mkdtempSync(join(tmpdir(), 'writ-e2e-std-'));
  srv = await startServerProcess();
});
after(async () => {
  await srv.stop();
  cleanup(srv.dataDir);
  cleanup(work);
});

/** POSTs JSON with the admin token (from a file, so it is on no command line); answers the status and the JSON body. */
async function post(path: string, body: unknown): Promise<{ status: number; body: { code?: string; field?: string } }> {
  const header = join(work, 'auth.header');
  writeFileSync(header, `authorization: Bearer ${srv.adminToken}\n`, { mode: 0o600 });
  const r = await run('curl', [
    '-sS',
    '--cacert',
    join(srv.dataDir, 'bundle.pem'),
    '-H',
    `@${header}`,
    '-H',
    'content-type: application/json',
    '--data-binary',
    JSON.stringify(body),
    '-w',
    '\n%{http_code}',
    `${srv.url}${path}`,
  ]);
  const lines = r.stdout.trimEnd().split('\n');
  return { status: Number(lines.pop()), body: JSON.parse(lines.join('\n') || '{}') };
}

describe('SPIFFE standards at the API', () => {
  it('mints no JWT-SVID or X.509-SVID for the bare trust domain ID: 400 ERR_SPIFFE_ID_INVALID', async () => {
    const jwt = await post('/v1/svids/jwt', { spiffeId: 'spiffe://e2e.test', audience: ['db'] });
    assert.deepEqual([jwt.status, jwt.body.code, jwt.body.field], [400, 'ERR_SPIFFE_ID_INVALID', 'spiffeId']);
    const cli = await writ(srv, ['svid', 'mint-jwt', '--spiffe-id', 'spiffe://e2e.test', '--audience', 'db']);
    assert.equal(cli.code, 1);
    assert.match(cli.stderr, /ERR_SPIFFE_ID_INVALID/);
    assert.equal(cli.stdout, '', 'no token printed');
    const x509 = await writ(srv, ['svid', 'mint-x509', '--spiffe-id', 'spiffe://e2e.test', '--out', join(work, 'td')]);
    assert.equal(x509.code, 1);
    assert.match(x509.stderr, /ERR_SPIFFE_ID_INVALID/);
    const ok = await post('/v1/svids/jwt', { spiffeId: 'spiffe://e2e.test/ns/web', audience: ['db'] });
    assert.equal(ok.status, 201, 'an ID with a path is minted');
  });

  it('writ bundle set stores a bundle whose x509-svid keys have no or an empty x5c, or several values, with its authorities intact', async () => {
    const own = JSON.parse((await writ(srv, ['bundle', 'show'])).stdout) as { keys: Array<Record<string, unknown>> };
    const x509 = own.keys.find((k) => k['use'] === 'x509-svid')!;
    const ca = (x509['x5c'] as string[])[0]!;
    const doc = {
      keys: [
        { kty: x509['kty'], use: 'x509-svid' },
        { ...x509, x5c: [] },
        { ...x509, x5c: [ca, 'bm90IGEgY2VydGlmaWNhdGU='] },
        ...own.keys.filter((k) => k['use'] === 'jwt-svid'),
      ],
    };
    const f = join(work, 'partner.json');
    writeFileSync(f, JSON.stringify(doc));
    const set = await writ(srv, ['bundle', 'set', '--trust-domain', 'partner.example', '-f', f, '-o', 'json']);
    assert.equal(set.code, 0, set.stderr);
    const stored = JSON.parse(set.stdout) as { bundle: { keys: Array<Record<string, unknown>> } };
    const storedX509 = stored.bundle.keys.filter((k) => k['use'] === 'x509-svid');
    assert.deepEqual(
      storedX509.map((k) => k['x5c']),
      [[ca]],
      'one X.509 authority: the first x5c value of the one key that has one',
    );
    assert.equal(stored.bundle.keys.filter((k) => k['use'] === 'jwt-svid').length, doc.keys.length - 3);
  });
});
