/**
 * CA benchmark: JWT-SVID mint and validation, X.509-SVID issuance (CSR in, chain PEM out), on one
 * core, beside openssl's own ECDSA P-256 sign and verify rates measured in the same run.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { JwtSvidValidator, certificatesToPem, createCsr, parseCsr, toPem, validateJwtSvid } from '@writ/spiffe';
import { CertificateAuthority, generateSigner, openStore } from '@writ/server';
import { fmt, opensslEcdsaP256, rate, row } from './util.ts';

export async function run(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'writ-bench-ca-'));
  const store = await openStore({ db: 'sqlite', dataDir: dir });
  const ca = new CertificateAuthority({
    store,
    trustDomain: 'bench.example',
    dataDir: dir,
    serverId: 'b',
    keyType: 'ec-p256',
    caTtlMs: 86_400_000,
    x509SvidTtlMs: 3_600_000,
    jwtSvidTtlMs: 300_000,
  });
  await ca.rotate();
  const bundles = new Map([['bench.example', ca.bundle()]]);
  const SECONDS = Number(process.env['BENCH_SECONDS'] ?? 3);

  console.log(`openssl speed -seconds ${SECONDS} ecdsap256 ...`);
  const ossl = opensslEcdsaP256(SECONDS);
  console.log(`\nCA benchmark (one core, EC P-256, ${SECONDS}s per measurement)\n`);
  row('measurement', 'ops/s', 'baseline (same run)', 'ratio', 'target');

  const mint = rate(SECONDS, (i) => ca.signJwtSvid(`spiffe://bench.example/w/${i & 1023}`, ['spiffe://bench.example/db']));
  row('JWT-SVID mint', fmt(mint), `openssl sign ${fmt(ossl.sign)}/s`, (mint / ossl.sign).toFixed(2), '>= 0.6x openssl sign');

  const tokens = Array.from({ length: 20_000 }, (_, i) => ca.signJwtSvid(`spiffe://bench.example/w/${i}`, ['spiffe://bench.example/db']).token);
  const aud = { audience: 'spiffe://bench.example/db' };
  const cold = rate(SECONDS, (i) => validateJwtSvid(tokens[i % tokens.length]!, bundles, aud), 500);
  row('JWT-SVID validation, cold', fmt(cold), `openssl verify ${fmt(ossl.verify)}/s`, (cold / ossl.verify).toFixed(2), '>= 0.7x openssl verify');

  const validator = new JwtSvidValidator(bundles);
  const hot = tokens.slice(0, 1000);
  for (const t of hot) validator.validate(t, aud.audience);
  const cached = rate(SECONDS, (i) => validator.validate(hot[i % hot.length]!, aud.audience), 10_000);
  row('JWT-SVID validation, cached', fmt(cached), `openssl verify ${fmt(ossl.verify)}/s`, (cached / ossl.verify).toFixed(1), '>= 1,000,000/s');

  const csrs = Array.from({ length: 500 }, () => {
    const s = generateSigner('ec-p256');
    return toPem('CERTIFICATE REQUEST', createCsr(s, s.publicKey));
  });
  const issue = rate(
    SECONDS,
    (i) => {
      const { spki } = parseCsr(csrs[i % csrs.length]!);
      certificatesToPem(ca.signX509Svid({ spiffeId: `spiffe://bench.example/w/${i & 1023}`, spki }).chain);
    },
    200,
  );
  // Issuance is one ECDSA verify (the CSR's proof of possession) plus one sign.
  const osslPair = 1 / (1 / ossl.sign + 1 / ossl.verify);
  row('X.509-SVID issuance (CSR -> chain PEM)', fmt(issue), `openssl sign+verify ${fmt(osslPair)}/s`, (issue / osslPair).toFixed(2), '>= 3,000/s');

  await store.close();
  rmSync(dir, { recursive: true, force: true });
}
