/**
 * What `writ image verify` runs (image.ts declares the command): loaded only when it runs, so other
 * commands, the agent above all, never load @writ/oci and @writ/admission.
 */
import { type Command, CommanderError } from 'commander';
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { parseAdmission, signatureRequirements } from '@writ/admission';
import {
  type ImageProblem,
  type ImageRequirements,
  type ImageVerdict,
  ImageVerifier,
  loadRegistryConfig,
  parseCosignKey,
  parseImageRef,
  RegistryClient,
  type SignatureRequirement,
  signatureRequirement,
} from '@writ/oci';
import { WritError, isWritError, parseDuration } from '@writ/spiffe';
import { checkFormat, print } from './output.ts';

export interface VerifyFlags {
  key?: string[];
  policy?: string;
  registryConfig?: string;
  timeout: string;
}

/** What `-o json` prints. */
export interface ImageVerifyResult {
  readonly image: string;
  readonly digest: string | null;
  readonly pinned: string | null;
  readonly verified: boolean;
  /** A tag under a policy's requireDigest: judged by its digest, as the mutating webhook pins it before the validating one decides. */
  readonly pinnedByWebhook: boolean;
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

/** The images requirements of every AdmissionPolicy in FILE (validated as `writ policy apply` does); key files relative to FILE. */
export function policyRequirements(file: string): Array<{ readonly policy: string; readonly req: ImageRequirements }> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new WritError('ERR_POLICY_INVALID', `cannot read ${file}: ${(err as NodeJS.ErrnoException).code}`, { field: 'policy' });
  }
  const readKey = (path: string): string => readFileSync(resolve(dirname(file), path), 'utf8');
  const out = parseAdmission(text, { file }).policies.flatMap((p) => {
    if (p.images === undefined) return [];
    const images = p.images;
    let signatures: SignatureRequirement[];
    try {
      signatures = signatureRequirements(images, readKey);
    } catch (err) {
      throw new WritError('ERR_KEY_INVALID', `AdmissionPolicy ${p.name}: ${(err as Error).message}`, { field: 'policy' });
    }
    return [{ policy: p.name, req: { requireDigest: images.requireDigest, registries: images.registries, signatures } }];
  });
  if (out.length === 0) throw new WritError('ERR_POLICY_INVALID', `${file} has no AdmissionPolicy with spec.images`, { field: 'policy' });
  return out;
}

/**
 * The result of checking one image: with --key (one requirement per key) it is verified when any
 * key signed it; every --policy must be met whole (registries, digest, all its signatures).
 */
export function verifyResult(
  image: string,
  byKey: ImageVerdict | undefined,
  byPolicy: ReadonlyArray<{ policy: string; verdict: ImageVerdict }>,
): ImageVerifyResult {
  const keyOk = byKey === undefined || byKey.signedBy.length > 0;
  // The cluster's mutating webhook pins a tag that resolves, so requireDigest is met by the digest it pins.
  const pinnable = (v: ImageVerdict): boolean => v.pinned !== undefined && v.digest !== undefined;
  let pinnedByWebhook = false;
  const problems: ImageProblem[] = [
    ...(keyOk ? [] : (byKey?.violations ?? [])),
    ...byPolicy.flatMap(({ policy, verdict }) =>
      verdict.violations.flatMap((v) => {
        if (v.control === 'imageDigest' && pinnable(verdict)) return ((pinnedByWebhook = true), []);
        return [{ control: v.control, message: `AdmissionPolicy ${policy}: ${v.message}` }];
      }),
    ),
  ];
  const all = [...(byKey === undefined ? [] : [byKey]), ...byPolicy.map((p) => p.verdict)];
  const digest = all.find((v) => v.digest !== undefined);
  return {
    image,
    digest: digest?.digest ?? null,
    pinned: digest?.pinned ?? null,
    verified: problems.length === 0,
    pinnedByWebhook,
    signedBy: [...new Set(all.flatMap((v) => v.signedBy))],
    problems: problems.map((p) => ({ control: p.control, message: p.message })),
  };
}

/** `--timeout 5` is refused (5 what?): a duration with its unit, from 1ms to 1h. */
function timeoutOf(v: string): number {
  if (/^\d+$/.test(v)) throw new CommanderError(2, 'writ.usage', `--timeout ${v}: give a unit, like ${v}s`);
  try {
    return parseDuration(v, 'timeout', 3_600_000, 1);
  } catch (err) {
    throw new CommanderError(2, 'writ.usage', `--timeout ${JSON.stringify(v.slice(0, 40))}: a duration like 30s or 2m (${(err as Error).message})`);
  }
}

/** The registry client's CA hint, in the words of the CLI: which flag takes the CA. */
export const withFlagHint = (message: string): string =>
  message.replace("set the registry's ca in the registry config", 'give its CA as ca: for this registry in the --registry-config file');

/** The checker's messages end in `(CODE)`, which the CLI prints once as `[CODE]`; its CA hint names the flag. */
function cliMessage(message: string, code: string): string {
  return withFlagHint(message.replace(` (${code})`, ''));
}

function registryError(err: unknown): unknown {
  return isWritError(err) ? new WritError(err.code, cliMessage(err.message, err.code)) : err;
}

/** `writ image verify REF`: resolves REF, checks its signatures (and --policy), prints the result. */
export async function runImageVerify(ref: string, f: VerifyFlags, cmd: Command): Promise<void> {
  const format = checkFormat(cmd.optsWithGlobals<{ output: string }>().output);
  if (!f.key?.length && f.policy === undefined) throw new CommanderError(2, 'writ.usage', 'give at least one --key FILE, or --policy FILE');
  const timeoutMs = timeoutOf(f.timeout);
  let parsed: ReturnType<typeof parseImageRef>;
  try {
    parsed = parseImageRef(ref);
  } catch (err) {
    // A reference that cannot name an image is bad input (exit 1), not an image that failed verification.
    throw isWritError(err) ? err : new WritError('ERR_IMAGE_REF_INVALID', `invalid image reference ${JSON.stringify(ref.slice(0, 200))}`);
  }
  const keys = (f.key ?? []).map(readKey);
  const policies = f.policy === undefined ? [] : policyRequirements(f.policy);
  const client = new RegistryClient(f.registryConfig === undefined ? {} : { config: loadRegistryConfig(f.registryConfig) });
  try {
    const verifier = new ImageVerifier({ registry: client });
    const signal = AbortSignal.timeout(timeoutMs);
    // A digest is looked up by its signatures alone; ask for its manifest first so that a digest
    // the repository does not have says so (not "no cosign signature").
    if (parsed.digest !== undefined) {
      try {
        await client.resolve(parsed, { signal });
      } catch (err) {
        if (!isWritError(err, 'ERR_IMAGE_NOT_FOUND')) throw registryError(err);
        const message = `manifest ${parsed.digest} not found in ${parsed.registry}/${parsed.repository}`;
        print(
          format,
          {
            image: ref,
            digest: null,
            pinned: null,
            verified: false,
            pinnedByWebhook: false,
            signedBy: [],
            problems: [{ control: 'imageResolve', message }],
          } satisfies ImageVerifyResult,
          () => ({
            head: ['IMAGE', 'DIGEST', 'VERIFIED', 'SIGNED BY'],
            body: [[ref, '-', 'no', '-']],
          }),
        );
        throw new CommanderError(3, 'writ.violation', `not verified: ${message}`);
      }
    }
    const [byKey, ...byPolicy] = await Promise.all([
      keys.length === 0 ? undefined : verifier.check(ref, { requireDigest: false, registries: [], signatures: keys }, signal),
      ...policies.map((p) => verifier.check(ref, { ...p.req, pinTags: true }, signal)),
    ]);
    const policyVerdicts = byPolicy.flatMap((v, i) => (v === undefined ? [] : [{ policy: policies[i]?.policy ?? '', verdict: v }]));
    // Could not ask the registry at all: an error, not a verdict on the image.
    const unchecked = [...(byKey !== undefined && byKey.signedBy.length === 0 ? [byKey] : []), ...policyVerdicts.map((p) => p.verdict)]
      .flatMap((v) => v.violations)
      .find((v) => v.code !== undefined);
    if (unchecked?.code !== undefined) throw new WritError(unchecked.code, cliMessage(unchecked.message, unchecked.code));
    const result = verifyResult(ref, byKey, policyVerdicts);
    print(format, result, () => ({
      head: ['IMAGE', 'DIGEST', 'VERIFIED', 'SIGNED BY'],
      body: [[result.image, result.digest ?? '-', result.verified ? 'yes' : 'no', result.signedBy.join(',') || '-']],
    }));
    if (format === 'table' && result.pinnedByWebhook && result.pinned !== null)
      process.stdout.write(`pinned: ${result.image} -> ${result.pinned} (requireDigest is met by the digest the mutating webhook pins)\n`);
    if (!result.verified) throw new CommanderError(3, 'writ.violation', `not verified: ${result.problems.map((p) => p.message).join('; ')}`);
  } finally {
    client.close();
  }
}
