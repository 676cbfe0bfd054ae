/**
 * Where to fix a vulnerable package of an image, pure: in the base image (the package's layer is
 * the base's: name the base, and the newer bases of its repository that no longer carry it), in the
 * app layer (bump the package to the fixed version), or nowhere yet (no fixed version is known).
 *
 *     whereToFix(lineage, image, { layer: pkg.layer, fixed: finding.fixed }, (c) => carriesCve(c.digest))
 */
import type { Lineage, LineageImage } from './lineage.ts';

export const FIX_LOCATIONS = ['base image', 'app layer', 'no fix yet'] as const;
export type FixLocation = (typeof FIX_LOCATIONS)[number];

export interface FixImageRef {
  /** Manifest digest, when known (an annotated base outside the inventory may have none). */
  readonly digest: string | undefined;
  readonly name: string | undefined;
}

export interface FixAdvice {
  readonly where: FixLocation;
  /** Whose layer the package is in: the base's, the image's own, or unknown (no layer, or the base's extent is unknown). */
  readonly layer: 'base' | 'app' | 'unknown';
  /** The image's parent, when it has one. */
  readonly base: FixImageRef | undefined;
  /** For a base-layer package: the furthest ancestor that already had the layer (where the package entered). */
  readonly introducedBy: FixImageRef | undefined;
  /** For a base-layer package: newer images of the base's repository that no longer carry it, newest first. */
  readonly newerBases: readonly LineageImage[];
  /** The version that fixes it, as the scanner wrote it, when there is one. */
  readonly fixedVersion: string | undefined;
}

const ref = (l: { readonly digest: string | undefined; readonly name: string | undefined } | undefined): FixImageRef | undefined =>
  l === undefined ? undefined : { digest: l.digest, name: l.name };

/**
 * Advice for one package of one image. `carries(candidate)` says whether a candidate newer base still
 * carries the vulnerability (answer true when that is not known, e.g. the candidate has no report:
 * an unknown base is not recommended).
 */
export function whereToFix(
  lineage: Lineage,
  image: LineageImage,
  pkg: { readonly layer?: string | null | undefined; readonly fixed?: string | null | undefined },
  carries: (candidate: LineageImage) => boolean,
): FixAdvice {
  const fixedVersion = pkg.fixed?.trim() || undefined;
  const origin = pkg.layer ? lineage.layerOrigin(image, pkg.layer) : undefined;
  const parent = lineage.parent(image);
  if (origin?.where === 'base')
    return {
      where: 'base image',
      layer: 'base',
      base: ref(origin.base),
      introducedBy: ref(origin.introducedBy),
      newerBases: lineage.newerBasesWithout(image, carries),
      fixedVersion,
    };
  return {
    where: fixedVersion === undefined ? 'no fix yet' : 'app layer',
    layer: origin?.where === 'app' ? 'app' : 'unknown',
    base: ref(parent),
    introducedBy: undefined,
    newerBases: [],
    fixedVersion,
  };
}
