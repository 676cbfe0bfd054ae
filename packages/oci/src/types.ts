/**
 * The contract between the parts of @writ/oci and its users (the admission package, the server,
 * the CLI): image references (reference.ts), the registry client (registry.ts), cosign signatures
 * (cosign.ts) and the verifying cache (images.ts).
 */
import type { KeyObject } from 'node:crypto';

/** A problem with an image, as admission reports it (control ids: imageDigest, imageRegistry, imageSignature, imageResolve). */
export interface ImageProblem {
  readonly control: string;
  readonly message: string;
  /** Set when the image could not be checked (the registry's WritError code, or ERR_REGISTRY_TIMEOUT for the budget), not when it was checked and refused. */
  readonly code?: string;
}

/** An image reference in normal form (docker.io/library/ filled in). */
export interface ImageRef {
  /** `registry.example.com:5000`, `docker.io`, `[::1]:5000`. */
  readonly registry: string;
  /** `team/app`, `library/nginx`. */
  readonly repository: string;
  readonly tag?: string;
  /** `sha256:` + 64 lowercase hex. */
  readonly digest?: string;
  /** As written in the pod spec. */
  readonly original: string;
}

/** A manifest as read from a registry: its bytes, their digest, its media type. */
export interface Manifest {
  readonly digest: string;
  readonly mediaType: string;
  readonly bytes: Buffer;
  readonly json: Record<string, unknown>;
}

/** OCI descriptor. */
export interface Descriptor {
  readonly mediaType: string;
  readonly digest: string;
  readonly size: number;
  readonly artifactType?: string;
  readonly annotations?: Record<string, string>;
  readonly platform?: { readonly os?: string; readonly architecture?: string; readonly variant?: string };
}

/** What cosign verification needs from a registry (registry.ts implements it; tests may fake it). */
export interface RegistryReader {
  /** A manifest by tag or digest (null when the registry answers 404). The digest is checked against the bytes. */
  manifest(repo: Pick<ImageRef, 'registry' | 'repository'>, reference: string, signal?: AbortSignal): Promise<Manifest | null>;
  /** A blob, its digest checked, refused past maxBytes. */
  blob(repo: Pick<ImageRef, 'registry' | 'repository'>, digest: string, maxBytes: number, signal?: AbortSignal): Promise<Buffer>;
  /** The OCI 1.1 referrers of a digest, or null when the registry has no referrers API (then use the `sha256-<hex>` tag fallback). */
  referrers(repo: Pick<ImageRef, 'registry' | 'repository'>, digest: string, artifactType?: string, signal?: AbortSignal): Promise<Descriptor[] | null>;
}

/** One `images.signatures` entry of an AdmissionPolicy: any one of its keys must have signed the image. */
export interface SignatureRequirement {
  readonly name: string;
  readonly keys: readonly KeyObject[];
  /** Stable fingerprint of the key material (part of the verification cache key). */
  readonly fingerprint: string;
}

/** What an AdmissionPolicy asks of images. */
export interface ImageRequirements {
  readonly requireDigest: boolean;
  /** Prefixes an image (in normal form, `registry/repository`) must start with; empty: any. */
  readonly registries: readonly string[];
  /** Every requirement must be met (each by one of its keys). */
  readonly signatures: readonly SignatureRequirement[];
  /** Resolve a tag to its digest even when nothing above needs it: the mutating webhook pins it (verdict.pinned). */
  readonly pinTags?: boolean;
}

/** The verdict on one image under one policy's requirements. */
export interface ImageVerdict {
  readonly image: string;
  /** The manifest digest it resolved to (absent when it could not be resolved). */
  readonly digest?: string;
  /** `registry/repository@sha256:...`, what the mutating webhook writes into the pod. */
  readonly pinned?: string;
  readonly violations: readonly ImageProblem[];
  /** Which signature requirement each key name satisfied, for the events. */
  readonly signedBy: readonly string[];
}

/** Checks images (resolve + signatures), with a cache; images.ts implements it. */
export interface ImageChecker {
  check(image: string, req: ImageRequirements, signal?: AbortSignal): Promise<ImageVerdict>;
}
