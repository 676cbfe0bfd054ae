/**
 * `writ image verify REF`: resolve an image to its digest and check its cosign signatures with
 * the same checker the admission webhook uses, offline (no Writ server). Exit 0 verified,
 * 3 not verified, 1 when the registry could not be asked.
 */
import { type Command, CommanderError, Option } from 'commander';
import { readFileSync } from 'node:fs';
import { type ImageRequirements, type ImageVerdict, ImageVerifier, loadRegistryConfig, parseCosignKey, RegistryClient, signatureRequirement } from '@writ/oci';
import { WritError, parseDuration } from '@writ/spiffe';
import { checkFormat, print } from './output.ts';

const collect = (v: string, prev: string[] = []): string[] => [...prev, v];

interface VerifyFlags {
  key?: string[];
  registryConfig?: string;
  timeout: string;
}

/** What `-o json` prints. */
export interface ImageVerifyResult {
  readonly image: string;
  readonly digest: string | null;
  readonly pinned: string | null;
  readonly verified: boolean;
  readonly signedBy: readonly string[];
  readonly problems: ReadonlyArray<{ readonly control: string; readonly message: string }>;
}

function readKey(file: string): ImageRequirements['signatures'][number] {
  let pem: string;
  try {
    pem = readFileSync(file, 'utf8');
  } catch (err) {
    throw new WritError('ERR_KEY_INVALID', `cannot read key ${file}: ${(err as NodeJS.ErrnoException).code}`, { field: 'key' });
  }
  try {
    return signatureRequirement(file, [parseCosignKey(pem, 'key')]);
  } catch (err) {
    throw new WritError('ERR_KEY_INVALID', `${file}: ${(err as Error).message}`, { field: 'key' });
  }
}

/** One requirement per --key: the image is verified when any of them signed it, and the output says which. */
export function verifyResult(verdict: ImageVerdict, anyKey: boolean): ImageVerifyResult {
  const verified = anyKey ? verdict.signedBy.length > 0 && verdict.violations.every((v) => v.control === 'imageSignature') : verdict.violations.length === 0;
  const problems = anyKey && verified ? [] : verdict.violations.map((v) => ({ control: v.control, message: v.message }));
  return { image: verdict.image, digest: verdict.digest ?? null, pinned: verdict.pinned ?? null, verified, signedBy: verdict.signedBy, problems };
}

export function registerImage(program: Command): void {
  const image = program.command('image').description('container images: digests and cosign signatures');
  image
    .command('verify')
    .description(
      'resolve REF to its digest and check its cosign signatures (simple signing and sigstore bundles) with public keys, offline: no transparency log',
    )
    .argument('<ref>', 'image reference, e.g. registry.example.com/team/app:v1 or ...@sha256:...')
    .option('--key <file>', 'cosign public key (PEM: ECDSA P-256/P-384, RSA, Ed25519); repeatable, any one of them suffices', collect)
    .option('--registry-config <file>', 'per-registry CA and credentials (the server uses the same file)')
    .addOption(new Option('--timeout <duration>', 'give up on the registry after this long').default('30s'))
    .addHelpText('after', '\nExit codes: 0 verified, 1 error (registry unreachable, bad key), 2 usage, 3 not verified.')
    .action(async (ref: string, f: VerifyFlags, cmd: Command) => {
      const format = checkFormat(cmd.optsWithGlobals<{ output: string }>().output);
      if (!f.key?.length) throw new CommanderError(2, 'writ.usage', 'give at least one --key FILE');
      const signatures = f.key.map(readKey);
      const timeoutMs = parseDuration(f.timeout, 'timeout', 3_600_000, 1);
      const client = new RegistryClient(f.registryConfig === undefined ? {} : { config: loadRegistryConfig(f.registryConfig) });
      try {
        const verdict = await new ImageVerifier({ registry: client }).check(
          ref,
          { requireDigest: false, registries: [], signatures },
          AbortSignal.timeout(timeoutMs),
        );
        const result = verifyResult(verdict, true);
        // Could not ask the registry at all: an error, not a verdict on the image.
        const failed = verdict.signedBy.length === 0 ? verdict.violations.find((v) => v.code !== undefined) : undefined;
        if (failed?.code !== undefined) throw new WritError(failed.code, failed.message);
        print(format, result, () => ({
          head: ['IMAGE', 'DIGEST', 'VERIFIED', 'SIGNED BY'],
          body: [[result.image, result.digest ?? '-', result.verified ? 'yes' : 'no', result.signedBy.join(',') || '-']],
        }));
        if (!result.verified) throw new CommanderError(3, 'writ.violation', `not verified: ${result.problems.map((p) => p.message).join('; ')}`);
      } finally {
        client.close();
      }
    });
}
