/**
 * `writ image verify REF`: resolve an image to its digest and check its cosign signatures with
 * the same checker the admission webhook uses, offline (no Writ server). Exit 0 verified,
 * 3 not verified, 1 for a malformed reference or a registry that could not be asked.
 */
import { type Command, Option } from 'commander';
import type { VerifyFlags } from './image-verify.ts';

const collect = (v: string, prev: string[] = []): string[] => [...prev, v];

export function registerImage(program: Command): void {
  const image = program.commands.find((c) => c.name() === 'image') ?? program.command('image').description('container images: digests and cosign signatures');
  image
    .command('verify')
    .description(
      'resolve REF to its digest and check its cosign signatures (simple signing and sigstore bundles) with public keys, offline: no transparency log',
    )
    .argument('<ref>', 'image reference, e.g. registry.example.com/team/app:v1 or ...@sha256:...')
    .option('--key <file>', 'cosign public key (PEM: ECDSA P-256/P-384/P-521, RSA >= 2048 bits, Ed25519); repeatable, any one of them suffices', collect)
    .option('--policy <file>', 'check against the spec.images of every AdmissionPolicy in FILE (registries, requireDigest, every signature requirement)')
    .option('--registry-config <file>', 'per-registry CA and credentials (the server uses the same file)')
    .addOption(new Option('--timeout <duration>', 'give up on the registry after this long, e.g. 10s or 2m').default('30s'))
    .addHelpText('after', '\nExit codes: 0 verified, 1 error (registry unreachable, bad key), 2 usage, 3 not verified.')
    .action(async (ref: string, f: VerifyFlags, cmd: Command) => (await import('./image-verify.ts')).runImageVerify(ref, f, cmd));
}
