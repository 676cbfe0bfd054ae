/** `writ demo`: a throwaway server on SQLite that issues and verifies an identity, narrating each step. */
import { createPublicKey } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { JwtSvidValidator, createCsr, isWritError, parseBundleJson, parseCertificatesPem, toPem, verifyX509Svid, type TrustBundle } from '@writ/spiffe';
import { generateSigner, loadServerConfig, startServer } from '@writ/server';
import { ApiClient } from './client.ts';

const say = (s: string): void => void process.stdout.write(`${s}\n`);

export async function runDemo(keepDir?: string): Promise<void> {
  const td = 'demo.example';
  const dataDir = keepDir ?? mkdtempSync(join(tmpdir(), 'writ-demo-'));
  say(`Writ demo: trust domain ${td}, state in ${dataDir}\n`);
  const cfg = loadServerConfig({ trustDomain: td, dataDir, listen: '127.0.0.1:0', x509SvidTtl: '1h', jwtSvidTtl: '5m' });
  const server = await startServer(cfg, { log: pino({ level: 'warn' }, process.stderr) });
  try {
    say(`1. Started a server at ${server.url} on the embedded SQLite store (${join(dataDir, 'writ.db')}).`);
    for (const a of server.ca.authorities())
      say(`   ${a.kind === 'x509' ? 'X.509 CA ' : 'JWT key  '} ${a.id.slice(0, 12)}…  ${a.status}, valid until ${new Date(a.notAfter).toISOString()}`);
    say(`   Trust bundle written to ${join(dataDir, 'bundle.pem')}; admin token to ${join(dataDir, 'admin.token')} (mode 0600).`);

    const api = new ApiClient({ server: server.url, token: readFileSync(join(dataDir, 'admin.token'), 'utf8').trim(), caFile: join(dataDir, 'bundle.pem') });
    const web = `spiffe://${td}/ns/shop/sa/web`;
    const entry = await api.call<{ id: string }>('POST', '/v1/entries', {
      spiffeId: web,
      parentId: `spiffe://${td}/writ/agent/node-1`,
      selectors: ['unix:uid:1000', 'unix:path:/usr/bin/web'],
    });
    say(`\n2. Registered entry ${entry.id}: workloads on node-1 running /usr/bin/web as uid 1000 are ${web}.`);

    // X.509-SVID: the key is made here; the server only ever sees a CSR.
    const signer = generateSigner('ec-p256');
    const csr = toPem('CERTIFICATE REQUEST', createCsr(signer, signer.publicKey));
    const minted = await api.call<{ svid: string; expiresAt: string }>('POST', '/v1/svids/x509', { spiffeId: web, csr });
    const chain = parseCertificatesPem(minted.svid);
    const bundleJson = await api.call('GET', '/v1/bundle', undefined, { auth: false });
    const bundle: TrustBundle = parseBundleJson(td, bundleJson);
    const bundles = new Map([[td, bundle]]);
    const verified = verifyX509Svid(chain, bundles);
    say(`\n3. Minted an X.509-SVID from a CSR (private key never left this process), valid until ${minted.expiresAt}.`);
    say(`   Verified it against the bundle from ${server.url}/v1/bundle: identity ${verified.spiffeId.uri}, chain of ${verified.chain.length} certificates.`);

    // JWT-SVID: verified the way any OIDC library would, from the discovery document alone.
    const db = `spiffe://${td}/ns/shop/sa/db`;
    const jwt = await api.call<{ token: string; expiresAt: string }>('POST', '/v1/svids/jwt', { spiffeId: web, audience: [db] });
    const discovery = await api.call<{ jwks_uri: string }>('GET', '/.well-known/openid-configuration', undefined, { auth: false });
    const jwks = await api.call<{ keys: Array<Record<string, string>> }>('GET', new URL(discovery.jwks_uri).pathname, undefined, { auth: false });
    const keys = new Map(
      jwks.keys.map((k) => [
        k['kid']!,
        createPublicKey({ key: { kty: k['kty'], crv: k['crv'], x: k['x'], y: k['y'], n: k['n'], e: k['e'] } as never, format: 'jwk' }),
      ]),
    );
    const validator = new JwtSvidValidator(new Map([[td, { jwtAuthorities: keys }]]));
    const v = validator.validate(jwt.token, db);
    say(`\n4. Minted a JWT-SVID for audience ${db}, valid until ${jwt.expiresAt}:`);
    say(`   ${jwt.token.slice(0, 60)}…`);
    say(`   Verified it with the keys found through ${server.url}/.well-known/openid-configuration: sub=${v.spiffeId.uri}.`);

    const tries: Array<[string, () => unknown]> = [
      ['the same token presented to another audience', () => validator.validate(jwt.token, `spiffe://${td}/ns/shop/sa/payments`)],
      ['a token with one changed byte in its claims', () => validator.validate(tamper(jwt.token), db)],
    ];
    say('\n5. And what is refused:');
    for (const [what, fn] of tries) {
      try {
        fn();
        say(`   ${what}: ACCEPTED (this is a bug)`);
        process.exitCode = 1;
      } catch (err) {
        say(`   ${what}: rejected with ${isWritError(err) ? err.code : String(err)}`);
      }
    }
    say('\nDone. Next: docs/getting-started.md runs the same steps with the writ CLI.');
  } finally {
    await server.close();
    if (!keepDir) rmSync(dataDir, { recursive: true, force: true });
  }
}

function tamper(token: string): string {
  const [h, p, s] = token.split('.') as [string, string, string];
  const claims = JSON.parse(Buffer.from(p, 'base64url').toString()) as Record<string, unknown>;
  claims['sub'] = String(claims['sub']).replace('/web', '/admin');
  return `${h}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.${s}`;
}
