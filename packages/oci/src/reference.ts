/**
 * Image references by the distribution reference grammar (github.com/distribution/reference),
 * normalised the way Docker and the kubelet do it: `nginx` is `docker.io/library/nginx`.
 *
 *   reference := name [ ":" tag ] [ "@" digest ]
 *   name      := [domain "/"] path-component ("/" path-component)*
 *   domain    := host [":" port], host a DNS name, an IPv4 address or "[" IPv6 "]"
 */
import { WritError } from '@writ/spiffe';
import type { ImageRef } from './types.ts';

/** A repository path (normalised, without the registry) longer than this is refused, as distribution does. */
export const MAX_NAME_LENGTH = 255;
/** Longest reference read at all: name + tag (128) + a sha512 digest, with room; checked before any parsing. */
export const MAX_REFERENCE_LENGTH = 1024;

const DOCKER_HUB = 'docker.io';
const DOMAIN_COMPONENT = '(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])';
const DOMAIN = new RegExp(`^(?:${DOMAIN_COMPONENT}(?:\\.${DOMAIN_COMPONENT})*|\\[[a-fA-F0-9:]+\\])(?::[0-9]+)?$`);
const PATH_COMPONENT = /^[a-z0-9]+(?:(?:[_.]|__|-+)[a-z0-9]+)*$/;
const TAG = /^[\w][\w.-]{0,127}$/;
const DIGEST_ALGORITHM = /^[A-Za-z][A-Za-z0-9]*(?:[+._-][A-Za-z][A-Za-z0-9]*)*$/;
/** The algorithms the OCI image spec registers, with their hex length. */
const DIGEST_HEX_LENGTH: Readonly<Record<string, number>> = { sha256: 64, sha512: 128 };
const IDENTIFIER = /^[a-f0-9]{64}$/;

function invalid(s: string, why: string): WritError {
  return new WritError('ERR_IMAGE_REF_INVALID', `invalid image reference ${JSON.stringify(s)}: ${why}`);
}

/** Whether s is a registry `host[:port]` as the grammar has it (`registry.example.com`, `127.0.0.1:5000`, `[::1]:5000`). */
export function isRegistryHost(s: string): boolean {
  return s.length <= MAX_NAME_LENGTH && DOMAIN.test(s);
}

/** Whether s is a repository path in normal form (`team/app`): lowercase components, at most 255 characters. */
export function isRepositoryPath(s: string): boolean {
  return s.length > 0 && s.length <= MAX_NAME_LENGTH && s.split('/').every((c) => PATH_COMPONENT.test(c));
}

/**
 * Checks a digest (`sha256:` + 64 lowercase hex, or `sha512:` + 128) and returns it.
 * @throws WritError ERR_IMAGE_REF_INVALID saying what is wrong
 */
export function parseDigest(digest: string, whole = digest): string {
  const colon = digest.indexOf(':');
  if (colon < 0) throw invalid(whole, `digest ${JSON.stringify(digest)} has no algorithm (expected sha256:<64 hex>)`);
  const algorithm = digest.slice(0, colon);
  const hex = digest.slice(colon + 1);
  if (!DIGEST_ALGORITHM.test(algorithm)) throw invalid(whole, `digest algorithm ${JSON.stringify(algorithm)} is malformed`);
  const length = DIGEST_HEX_LENGTH[algorithm];
  if (length === undefined) throw invalid(whole, `digest algorithm ${JSON.stringify(algorithm)} is not supported (sha256 or sha512)`);
  if (!/^[0-9a-fA-F]*$/.test(hex)) throw invalid(whole, `${algorithm} digest must be hexadecimal`);
  if (hex.length !== length) throw invalid(whole, `${algorithm} digest must be ${length} hex characters, not ${hex.length}`);
  if (hex !== hex.toLowerCase()) throw invalid(whole, `${algorithm} digest must be lowercase hex`);
  return digest;
}

/** Where distribution splits a name: the first component is a registry when it looks like a host. */
function splitDomain(name: string): { registry: string; repository: string } {
  const slash = name.indexOf('/');
  const first = slash < 0 ? '' : name.slice(0, slash);
  let registry: string;
  let repository: string;
  if (slash < 0 || (!/[.:]/.test(first) && first !== 'localhost' && first.toLowerCase() === first)) {
    registry = DOCKER_HUB;
    repository = name;
  } else {
    registry = first;
    repository = name.slice(slash + 1);
  }
  if (registry === 'index.docker.io') registry = DOCKER_HUB;
  if (registry === DOCKER_HUB && !repository.includes('/')) repository = `library/${repository}`;
  return { registry, repository };
}

/**
 * Parses an image reference as written in a pod spec into normal form.
 *
 * @example parseImageRef('nginx:1.27') // { registry: 'docker.io', repository: 'library/nginx', tag: '1.27', ... }
 * @example parseImageRef('[::1]:5000/team/app@sha256:…') // registry '[::1]:5000'
 * @throws WritError ERR_IMAGE_REF_INVALID with what is wrong (digest length, uppercase, empty tag, too long, ...)
 */
export function parseImageRef(s: string): ImageRef {
  if (typeof s !== 'string') throw new WritError('ERR_IMAGE_REF_INVALID', 'an image reference must be a string');
  if (s.length > MAX_REFERENCE_LENGTH) throw invalid(s.slice(0, 64), `longer than ${MAX_REFERENCE_LENGTH} characters`);
  if (s === '') throw invalid(s, 'empty');
  if (/[^\x21-\x7e]/.test(s)) throw invalid(s, 'contains whitespace, control or non-ASCII characters');
  if (IDENTIFIER.test(s)) throw invalid(s, 'a bare 64-character hex string is an image ID, not a reference');

  let rest = s;
  let digest: string | undefined;
  const at = s.indexOf('@');
  if (at >= 0) {
    digest = s.slice(at + 1);
    rest = s.slice(0, at);
    if (digest === '') throw invalid(s, 'empty digest after "@"');
    if (digest.includes('@')) throw invalid(s, 'more than one "@"');
    parseDigest(digest, s);
  }
  if (rest === '') throw invalid(s, 'no repository name');

  const { registry, repository: path } = splitDomain(rest);
  let repository = path;
  let tag: string | undefined;
  // A tag can only follow the last path component (a ':' in the registry part is its port).
  const colon = path.lastIndexOf(':');
  if (colon >= 0) {
    tag = path.slice(colon + 1);
    repository = path.slice(0, colon);
    if (tag === '') throw invalid(s, 'empty tag after ":"');
    if (!TAG.test(tag)) {
      throw invalid(
        s,
        tag.length > 128
          ? `tag is longer than 128 characters`
          : `tag ${JSON.stringify(tag)} is invalid (letters, digits, "_", "." and "-", not starting with "." or "-")`,
      );
    }
  }
  if (!DOMAIN.test(registry)) throw invalid(s, `registry ${JSON.stringify(registry)} is not a valid host[:port]`);
  if (repository === '' || repository === 'library/') throw invalid(s, 'no repository name');
  if (repository !== repository.toLowerCase()) throw invalid(s, 'repository name must be lowercase');
  for (const component of repository.split('/')) {
    if (component === '') throw invalid(s, 'repository name has an empty path component ("//" or a trailing "/")');
    if (!PATH_COMPONENT.test(component)) {
      throw invalid(s, `path component ${JSON.stringify(component)} is invalid (lowercase letters and digits, separated by ".", "_", "__" or dashes)`);
    }
  }
  // distribution counts the path (after normalisation), not the registry.
  if (repository.length > MAX_NAME_LENGTH) throw invalid(s, `repository name is ${repository.length} characters, more than ${MAX_NAME_LENGTH}`);

  return {
    registry,
    repository,
    ...(tag === undefined ? {} : { tag }),
    ...(digest === undefined ? {} : { digest }),
    original: s,
  };
}

/** `registry/repository@digest`: what runs when the mutating webhook pins an image. */
export function pinnedRef(ref: Pick<ImageRef, 'registry' | 'repository'>, digest: string): string {
  return `${ref.registry}/${ref.repository}@${parseDigest(digest)}`;
}

/** A reference in normal form: `registry/repository[:tag][@digest]`. */
export function formatImageRef(ref: Pick<ImageRef, 'registry' | 'repository' | 'tag' | 'digest'>): string {
  return `${ref.registry}/${ref.repository}${ref.tag === undefined ? '' : `:${ref.tag}`}${ref.digest === undefined ? '' : `@${ref.digest}`}`;
}
