/**
 * The real cosign CLI for tests: key pairs of every kind Writ accepts, and `cosign sign` with keys
 * only (no Rekor, no Fulcio: nothing on the internet is reachable). v2 writes the simple-signing
 * layout at `sha256-<hex>.sig`; v3 writes a sigstore bundle as an OCI 1.1 referrer (through the
 * referrers API when the registry has it, else the `sha256-<hex>` tag index). Both binaries are
 * built by .ci/run from the versions pinned in test/go/cosign-v2 and test/go/cosign-v3.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export type CosignVersion = 'v2' | 'v3';
export type CosignKeyKind = 'p256' | 'p384' | 'rsa' | 'ed25519';
export const COSIGN_KEY_KINDS: readonly CosignKeyKind[] = ['p256', 'p384', 'rsa', 'ed25519'];

const BIN_DIR = resolve(import.meta.dirname, '../../../../test/go/bin');

/** Path of the pinned cosign binary; a clear error when .ci/run has not built it. */
export function cosignBinary(version: CosignVersion): string {
  const path = join(BIN_DIR, `cosign-${version}`);
  if (!existsSync(path))
    throw new Error(
      `${path} is missing: build it as .ci/run does (cd test/go/cosign-${version} && go build -o ../bin/cosign-${version} github.com/sigstore/cosign/${version}/cmd/cosign)`,
    );
  return path;
}

export interface CosignKey {
  readonly kind: CosignKeyKind;
  /** cosign's encrypted private key (`*.key`). */
  readonly keyFile: string;
  readonly pubFile: string;
  readonly pubPem: string;
}

const PASSWORD = 'writ-test-password';

function env(dir: string, caFile?: string): NodeJS.ProcessEnv {
  const home = join(dir, 'home');
  mkdirSync(home, { recursive: true });
  return { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: home, COSIGN_PASSWORD: PASSWORD, ...(caFile === undefined ? {} : { SSL_CERT_FILE: caFile }) };
}

/** A key pair in cosign's format: P-256 from `cosign generate-key-pair`, the others made by openssl and `cosign import-key-pair`. */
export async function makeCosignKey(dir: string, kind: CosignKeyKind): Promise<CosignKey> {
  const prefix = join(dir, `cosign-${kind}`);
  const cosign = cosignBinary('v2');
  if (kind === 'p256') {
    await run(cosign, ['generate-key-pair', '--output-key-prefix', prefix], { env: env(dir) });
  } else {
    const args: Record<Exclude<CosignKeyKind, 'p256'>, string[]> = {
      p384: ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-384'],
      rsa: ['-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048'],
      ed25519: ['-algorithm', 'ed25519'],
    };
    await run('openssl', ['genpkey', ...args[kind], '-out', `${prefix}.pem`]);
    await run(cosign, ['import-key-pair', '--key', `${prefix}.pem`, '--output-key-prefix', prefix], { env: env(dir) });
  }
  return { kind, keyFile: `${prefix}.key`, pubFile: `${prefix}.pub`, pubPem: readFileSync(`${prefix}.pub`, 'utf8') };
}

/**
 * `cosign sign` of `ref` (`host/repo@sha256:...`) with a key, trusting the registry's test CA.
 * `referrers` (v2 only): the experimental `--registry-referrers-mode=oci-1-1`, which pushes the
 * simple-signing manifest as an OCI 1.1 referrer instead of at the `.sig` tag.
 */
export async function cosignSign(
  version: CosignVersion,
  key: CosignKey,
  ref: string,
  caFile: string,
  dir: string,
  opts: { referrers?: boolean; auth?: { host: string; username: string; password: string } } = {},
): Promise<void> {
  const offline = version === 'v2' ? ['--tlog-upload=false'] : ['--use-signing-config=false', '--tlog-upload=false'];
  const referrers = opts.referrers === true ? ['--registry-referrers-mode=oci-1-1'] : [];
  const environment: NodeJS.ProcessEnv = { ...env(dir, caFile), ...(opts.referrers === true ? { COSIGN_EXPERIMENTAL: '1' } : {}) };
  if (opts.auth !== undefined) {
    // cosign reads registry credentials the way docker does: DOCKER_CONFIG/config.json.
    const config = mkdtempSync(join(dir, 'docker-config-'));
    const auth = Buffer.from(`${opts.auth.username}:${opts.auth.password}`).toString('base64');
    writeFileSync(join(config, 'config.json'), JSON.stringify({ auths: { [opts.auth.host]: { auth } } }), { mode: 0o600 });
    environment.DOCKER_CONFIG = config;
  }
  await run(cosignBinary(version), ['sign', '--key', key.keyFile, ...offline, ...referrers, '-y', ref], { env: environment, timeout: 60_000 });
}
