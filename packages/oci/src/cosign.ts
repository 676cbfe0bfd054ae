/**
 * Cosign signatures over an image digest, checked offline against public keys, in both layouts
 * cosign writes:
 *  - simple signing (cosign v2 and older): a manifest at tag `sha256-<hex>.sig` whose layers are
 *    simple-signing payloads, each signed in the `dev.cosignproject.cosign/signature` annotation;
 *  - sigstore bundles (cosign v3): OCI 1.1 referrers of the image with a bundle as their layer
 *    (DSSE envelope over an in-toto statement naming the digest), found through the referrers API
 *    or, for registries without it, the `sha256-<hex>` tag index. The same referrers may also be
 *    simple-signing manifests (cosign v2 with `--registry-referrers-mode=oci-1-1`).
 * No transparency log or certificate is consulted: a signature counts when one of the policy's
 * keys made it over a payload that names this very digest. That proves who signed, not when.
 */
import { createHash, createPublicKey, constants, type KeyObject, verify } from 'node:crypto';
import { ed25519ph } from '@noble/curves/ed25519.js';
import { WritError, isWritError } from '@writ/spiffe';
import type { Descriptor, ImageRef, Manifest, RegistryReader, SignatureRequirement } from './types.ts';

export const SIMPLE_SIGNING_MEDIA_TYPE = 'application/vnd.dev.cosign.simplesigning.v1+json';
export const SIGNATURE_ANNOTATION = 'dev.cosignproject.cosign/signature';
export const BUNDLE_ARTIFACT_TYPE = 'application/vnd.dev.sigstore.bundle.v0.3+json';
/** The artifactType of a simple-signing manifest that cosign v2 pushes as a referrer (`--registry-referrers-mode=oci-1-1`). */
export const COSIGN_SIG_ARTIFACT_TYPE = 'application/vnd.dev.cosign.artifact.sig.v1+json';
/** Bundle media types: `...bundle.v0.3+json` and the newer `...bundle+json;version=0.3` both start so. */
const BUNDLE_PREFIX = 'application/vnd.dev.sigstore.bundle';
const SIMPLE_SIGNING_TYPE = 'cosign container image signature';
const SIGN_PREDICATE = 'https://sigstore.dev/cosign/sign/v1';
const IN_TOTO_PAYLOAD = 'application/vnd.in-toto+json';
const IN_TOTO_STATEMENTS = new Set(['https://in-toto.io/Statement/v1', 'https://in-toto.io/Statement/v0.1']);
/** A payload or bundle is a few hundred bytes; anything past this is not cosign's. */
const MAX_SIGNATURE_BLOB = 1024 * 1024;
/** Signatures looked at per layout: an image re-signed many times still answers within the budget. */
const MAX_SIGNATURES = 16;
const MAX_KEY_PEM = 16 * 1024;
const DESCRIPTOR_DIGEST = /^(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$/;

export type CosignLayout = 'simple-signing' | 'sigstore-bundle';

/** Why an image is not signed by a requirement's keys, most telling first. */
export type CosignFailure = 'other-image' | 'bad-signature' | 'malformed' | 'unsigned';

export type CosignResult =
  | {
      readonly verified: true;
      readonly layout: CosignLayout;
      /** Index into requirement.keys of the key that verified it. */
      readonly keyIndex: number;
    }
  | { readonly verified: false; readonly reason: CosignFailure; readonly message: string };

/** One signature found: verified by key keyIndex, or refused for a reason. */
type Outcome =
  | { readonly ok: true; readonly layout: CosignLayout; readonly keyIndex: number }
  | { readonly ok: false; readonly reason: Exclude<CosignFailure, 'unsigned'>; readonly message: string };

type Repo = Pick<ImageRef, 'registry' | 'repository'>;

/**
 * Is `digest` in `repo` signed by one of `requirement.keys`, in either layout? Registry failures
 * (unreachable, timeout, auth) are thrown as the reader's WritErrors; everything about the
 * signatures themselves is an answer.
 *
 * @example const r = await verifyCosign(client, ref, 'sha256:...', requirement, AbortSignal.timeout(2000));
 */
export async function verifyCosign(
  reader: RegistryReader,
  repo: Repo,
  digest: string,
  requirement: SignatureRequirement,
  signal?: AbortSignal,
): Promise<CosignResult> {
  const hex = digestHex(digest);
  // Each place on its own: a registry whose referrers endpoint fails still verifies a .sig tag, and
  // the other way round. The .sig tag first: when it verifies (cosign v2, the common case), the
  // referrers and their fallback tag (two more reads, often 404s) are not asked for at all.
  const first = await Promise.allSettled([simpleSignatures(reader, repo, digest, hex, requirement.keys, signal)]);
  const early = first[0].status === 'fulfilled' ? first[0].value.find((o) => o.ok) : undefined;
  if (early?.ok) return { verified: true, layout: early.layout, keyIndex: early.keyIndex };
  const settled = [...first, ...(await Promise.allSettled([referrerSignatures(reader, repo, digest, hex, requirement.keys, signal)]))];
  const outcomes = settled.flatMap((s) => (s.status === 'fulfilled' ? s.value : []));
  for (const o of outcomes) if (o.ok) return { verified: true, layout: o.layout, keyIndex: o.keyIndex };
  const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
  if (failed !== undefined) throw failed.reason;
  for (const reason of ['other-image', 'bad-signature', 'malformed'] as const) {
    const o = outcomes.find((x): x is Extract<Outcome, { ok: false }> => !x.ok && x.reason === reason);
    if (o !== undefined) return { verified: false, reason, message: o.message };
  }
  return { verified: false, reason: 'unsigned', message: `no cosign signature for ${digest} (tag sha256-${hex}.sig, referrers)` };
}

async function simpleSignatures(
  reader: RegistryReader,
  repo: Repo,
  digest: string,
  hex: string,
  keys: readonly KeyObject[],
  signal?: AbortSignal,
): Promise<Outcome[]> {
  const manifest = await reader.manifest(repo, `sha256-${hex}.sig`, signal);
  return manifest === null ? [] : simpleOutcomes(reader, repo, digest, manifest, `tag sha256-${hex}.sig`, keys, signal);
}

/** The simple-signing layers of one signature manifest (at the `.sig` tag, or a cosign v2 referrer). */
function simpleOutcomes(
  reader: RegistryReader,
  repo: Repo,
  digest: string,
  manifest: Manifest,
  where: string,
  keys: readonly KeyObject[],
  signal?: AbortSignal,
): Promise<Outcome[]> {
  const layers = Array.isArray(manifest.json.layers) ? (manifest.json.layers as unknown[]) : [];
  const signed = layers.filter((l): l is Descriptor => isDescriptor(l) && l.mediaType === SIMPLE_SIGNING_MEDIA_TYPE).slice(0, MAX_SIGNATURES);
  return Promise.all(
    signed.map(async (layer): Promise<Outcome> => {
      const sig = layer.annotations?.[SIGNATURE_ANNOTATION];
      if (typeof sig !== 'string') return malformed('simple-signing layer without a signature annotation');
      const payload = await signatureBlob(reader, repo, layer.digest, signal);
      if (payload === null) return malformed(`signature payload ${layer.digest} is missing or damaged`);
      const keyIndex = keys.findIndex((k) => verifySignature(k, payload, base64(sig)));
      if (keyIndex < 0) return { ok: false, reason: 'bad-signature', message: `signature at ${where} does not verify with any key` };
      const doc = parseJson(payload);
      const critical = record(doc?.critical);
      if (critical?.type !== SIMPLE_SIGNING_TYPE) return malformed(`signed payload is not a cosign image signature`);
      const signedDigest = record(critical.image)?.['docker-manifest-digest'];
      if (signedDigest !== digest) return otherImage(signedDigest);
      return { ok: true, layout: 'simple-signing', keyIndex };
    }),
  );
}

/** Referrers of the digest: sigstore bundles (cosign v3) and simple-signing manifests (cosign v2 with --registry-referrers-mode=oci-1-1). */
async function referrerSignatures(
  reader: RegistryReader,
  repo: Repo,
  digest: string,
  hex: string,
  keys: readonly KeyObject[],
  signal?: AbortSignal,
): Promise<Outcome[]> {
  let found = await reader.referrers(repo, digest, undefined, signal);
  // A registry with the referrers API may still hold a fallback tag written by a client that did not use it.
  if (found === null || found.length === 0) {
    const index = await reader.manifest(repo, `sha256-${hex}`, signal);
    const listed = index !== null && Array.isArray(index.json.manifests) ? (index.json.manifests as unknown[]) : [];
    found = listed.filter(isDescriptor);
  }
  const candidates = found
    .filter((d) => d.artifactType?.startsWith(BUNDLE_PREFIX) === true || d.artifactType === COSIGN_SIG_ARTIFACT_TYPE)
    .slice(0, MAX_SIGNATURES);
  const outcomes = await Promise.all(
    candidates.map(async (d): Promise<Array<Outcome | null>> => {
      if (d.artifactType !== COSIGN_SIG_ARTIFACT_TYPE) return [await bundleOutcome(reader, repo, digest, d, keys, signal)];
      const manifest = await reader.manifest(repo, d.digest, signal);
      return manifest === null
        ? [malformed(`signature manifest ${d.digest} is listed but missing`)]
        : simpleOutcomes(reader, repo, digest, manifest, `referrer ${d.digest}`, keys, signal);
    }),
  );
  return outcomes.flat().filter((o): o is Outcome => o !== null);
}

/** One referrer: null when it is not an image signature at all (an attestation with another predicate). */
async function bundleOutcome(
  reader: RegistryReader,
  repo: Repo,
  digest: string,
  desc: Descriptor,
  keys: readonly KeyObject[],
  signal?: AbortSignal,
): Promise<Outcome | null> {
  const manifest = await reader.manifest(repo, desc.digest, signal);
  if (manifest === null) return malformed(`bundle manifest ${desc.digest} is listed but missing`);
  const layer = (Array.isArray(manifest.json.layers) ? (manifest.json.layers as unknown[]) : []).find(
    (l): l is Descriptor => isDescriptor(l) && l.mediaType.startsWith(BUNDLE_PREFIX),
  );
  if (layer === undefined) return malformed(`referrer ${desc.digest} has no sigstore bundle layer`);
  const bytes = await signatureBlob(reader, repo, layer.digest, signal);
  const bundle = bytes === null ? null : parseJson(bytes);
  if (bundle === null || typeof bundle.mediaType !== 'string' || !bundle.mediaType.startsWith(BUNDLE_PREFIX))
    return malformed(`referrer ${desc.digest} does not hold a sigstore bundle`);
  const envelope = record(bundle.dsseEnvelope);
  if (envelope !== undefined) return dsseOutcome(envelope, digest, keys);
  const message = record(bundle.messageSignature);
  if (message !== undefined) return messageOutcome(reader, repo, message, digest, keys, signal);
  return malformed('sigstore bundle has neither a DSSE envelope nor a message signature');
}

function dsseOutcome(envelope: Record<string, unknown>, digest: string, keys: readonly KeyObject[]): Outcome | null {
  const { payload, payloadType, signatures } = envelope;
  if (typeof payload !== 'string' || payloadType !== IN_TOTO_PAYLOAD || !Array.isArray(signatures))
    return malformed('DSSE envelope is not an in-toto statement');
  const body = base64(payload);
  const type = Buffer.from(payloadType);
  // DSSE signs the pre-authentication encoding, never the bare payload.
  const pae = Buffer.concat([Buffer.from(`DSSEv1 ${type.length} `), type, Buffer.from(` ${body.length} `), body]);
  const sigs = signatures.slice(0, MAX_SIGNATURES).flatMap((s) => {
    const sig = record(s)?.sig;
    return typeof sig === 'string' ? [base64(sig)] : [];
  });
  const keyIndex = keys.findIndex((k) => sigs.some((s) => verifySignature(k, pae, s)));
  if (keyIndex < 0) return { ok: false, reason: 'bad-signature', message: 'sigstore bundle signature does not verify with any key' };
  const statement = parseJson(body);
  if (statement === null || typeof statement._type !== 'string' || !IN_TOTO_STATEMENTS.has(statement._type))
    return malformed('signed DSSE payload is not an in-toto statement');
  if (statement.predicateType !== SIGN_PREDICATE) return null;
  const subjects = Array.isArray(statement.subject) ? (statement.subject as unknown[]) : [];
  const hexes = subjects.map((s) => record(record(s)?.digest)?.sha256);
  if (!hexes.includes(digestHex(digest))) return otherImage(typeof hexes[0] === 'string' ? `sha256:${hexes[0]}` : undefined);
  return { ok: true, layout: 'sigstore-bundle', keyIndex };
}

/** A bundle that signs the manifest bytes directly: the digest it names must be the image's, and the signature over that manifest. */
async function messageOutcome(
  reader: RegistryReader,
  repo: Repo,
  message: Record<string, unknown>,
  digest: string,
  keys: readonly KeyObject[],
  signal?: AbortSignal,
): Promise<Outcome> {
  const md = record(message.messageDigest);
  if (md?.algorithm !== 'SHA2_256' || typeof md.digest !== 'string' || typeof message.signature !== 'string')
    return malformed('message signature without a SHA2_256 digest');
  const named = `sha256:${base64(md.digest).toString('hex')}`;
  if (named !== digest) return otherImage(named);
  const manifest = await reader.manifest(repo, digest, signal);
  if (manifest === null) return malformed(`image manifest ${digest} not found`);
  const keyIndex = keys.findIndex((k) => verifySignature(k, manifest.bytes, base64(message.signature as string)));
  if (keyIndex < 0) return { ok: false, reason: 'bad-signature', message: 'sigstore bundle signature does not verify with any key' };
  return { ok: true, layout: 'sigstore-bundle', keyIndex };
}

/** A signature blob, or null when the registry lost it or sent something else (the digest check failed). */
async function signatureBlob(reader: RegistryReader, repo: Repo, digest: string, signal?: AbortSignal): Promise<Buffer | null> {
  try {
    return await reader.blob(repo, digest, MAX_SIGNATURE_BLOB, signal);
  } catch (err) {
    if (isWritError(err, 'ERR_IMAGE_NOT_FOUND') || isWritError(err, 'ERR_DIGEST_MISMATCH') || isWritError(err, 'ERR_BLOB_TOO_LARGE')) return null;
    throw err;
  }
}

/**
 * Does `sig` over `data` verify with `key`, with the hash cosign uses for that key type? cosign v2
 * hashes with SHA-256 for every ECDSA curve and signs Ed25519 purely; cosign v3 uses the curve's
 * hash (P-384: SHA-384) and Ed25519ph. RSA is PKCS#1 v1.5 with SHA-256, or PSS when asked for.
 */
export function verifySignature(key: KeyObject, data: Buffer, sig: Buffer): boolean {
  const attempt = (f: () => boolean): boolean => {
    try {
      return f();
    } catch {
      return false;
    }
  };
  switch (key.asymmetricKeyType) {
    case 'ec': {
      const hashes = EC_HASHES[key.asymmetricKeyDetails?.namedCurve ?? ''] ?? [];
      return hashes.some((h) => attempt(() => verify(h, data, key, sig)));
    }
    case 'rsa':
      return (
        attempt(() => verify('sha256', data, key, sig)) ||
        attempt(() => verify('sha256', data, { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_AUTO }, sig))
      );
    case 'rsa-pss':
      return attempt(() => verify('sha256', data, { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_AUTO }, sig));
    case 'ed25519': {
      if (attempt(() => verify(null, data, key, sig))) return true;
      const raw = Buffer.from(key.export({ format: 'jwk' }).x ?? '', 'base64url');
      return attempt(() => ed25519ph.verify(sig, data, raw));
    }
    default:
      return false;
  }
}

const EC_HASHES: Record<string, readonly string[]> = { prime256v1: ['sha256'], secp384r1: ['sha384', 'sha256'], secp521r1: ['sha512', 'sha256'] };

/**
 * A cosign public key from PEM (`cosign.pub`): ECDSA P-256/P-384/P-521, RSA of 2048 bits or more,
 * or Ed25519. Private keys are refused, so a policy never carries one.
 */
export function parseCosignKey(pem: string, field = 'pem'): KeyObject {
  if (pem.length > MAX_KEY_PEM) throw new WritError('ERR_KEY_INVALID', `public key is larger than ${MAX_KEY_PEM} bytes`, { field });
  if (!/-----BEGIN (RSA )?PUBLIC KEY-----/.test(pem) || /PRIVATE KEY/.test(pem))
    throw new WritError('ERR_KEY_INVALID', 'expected a PEM public key (-----BEGIN PUBLIC KEY-----)', { field });
  let key: KeyObject;
  try {
    key = createPublicKey(pem);
  } catch {
    throw new WritError('ERR_KEY_INVALID', 'public key PEM does not parse', { field });
  }
  const type = key.asymmetricKeyType;
  const curve = key.asymmetricKeyDetails?.namedCurve;
  const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
  const ok = (type === 'ec' && curve !== undefined && curve in EC_HASHES) || ((type === 'rsa' || type === 'rsa-pss') && bits >= 2048) || type === 'ed25519';
  if (!ok)
    throw new WritError(
      'ERR_KEY_INVALID',
      `unsupported cosign key: ${type ?? 'unknown'}${curve === undefined ? '' : ` ${curve}`}${bits > 0 ? ` ${bits} bits` : ''} (ECDSA P-256/P-384/P-521, RSA >= 2048, Ed25519)`,
      { field },
    );
  return key;
}

/** A SignatureRequirement whose fingerprint changes whenever its key set does (and not when only their order does). */
export function signatureRequirement(name: string, keys: readonly KeyObject[]): SignatureRequirement {
  const ders = keys
    .map((k) =>
      createHash('sha256')
        .update(k.export({ type: 'spki', format: 'der' }))
        .digest('hex'),
    )
    .sort();
  return { name, keys, fingerprint: `sha256:${createHash('sha256').update(ders.join(',')).digest('hex')}` };
}

function digestHex(digest: string): string {
  if (!/^sha256:[0-9a-f]{64}$/.test(digest)) throw new TypeError(`verifyCosign needs a sha256 digest, got ${JSON.stringify(digest.slice(0, 80))}`);
  return digest.slice('sha256:'.length);
}

function malformed(message: string): Outcome {
  return { ok: false, reason: 'malformed', message };
}

function otherImage(signed: unknown): Outcome {
  const what = typeof signed === 'string' ? signed.slice(0, 80) : 'no digest';
  return { ok: false, reason: 'other-image', message: `signature is for another image (${what})` };
}

function isDescriptor(v: unknown): v is Descriptor {
  const d = record(v);
  // A descriptor with a malformed digest is junk: skipped, never asked for.
  return (
    d !== undefined &&
    typeof d.mediaType === 'string' &&
    typeof d.digest === 'string' &&
    DESCRIPTOR_DIGEST.test(d.digest) &&
    (d.annotations === undefined || record(d.annotations) !== undefined)
  );
}

function record(v: unknown): Record<string, unknown> | undefined {
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
}

function parseJson(bytes: Buffer): Record<string, unknown> | null {
  try {
    return record(JSON.parse(bytes.toString('utf8'))) ?? null;
  } catch {
    return null;
  }
}

function base64(s: string): Buffer {
  return Buffer.from(s, 'base64');
}
