/** One model for every report format: what a scanner or SBOM tool said about one image. */

export const REPORT_FORMATS = ['trivy', 'grype', 'cyclonedx', 'spdx', 'openvex'] as const;
export type ReportFormat = (typeof REPORT_FORMATS)[number];

export const SEVERITIES = ['critical', 'high', 'medium', 'low', 'negligible', 'unknown'] as const;
export type Severity = (typeof SEVERITIES)[number];

/**
 * Whether the installed package is affected. A scanner's "a fix exists" (Trivy `fixed`, Grype
 * `fix.state: fixed`) is still `affected` here, with `fixed` set to the version that fixes it.
 */
export const FINDING_STATUSES = ['affected', 'fixed', 'not_affected', 'under_investigation', 'unknown'] as const;
export type FindingStatus = (typeof FINDING_STATUSES)[number];

export const VEX_STATUSES = ['not_affected', 'affected', 'fixed', 'under_investigation'] as const;
export type VexStatus = (typeof VEX_STATUSES)[number];

export interface ReportImage {
  /** The manifest digest (`sha256:...`), when the report names it. */
  digest?: string;
  /** The config digest (Docker's image ID). */
  configDigest?: string;
  /** Repository names without tag or digest (`docker.io/library/alpine`). */
  names: string[];
  repoTags: string[];
  repoDigests: string[];
  /** Layer diff IDs, base first. */
  diffIds: string[];
  /** OCI annotations as far as the report shows them, including `org.opencontainers.image.*` labels. */
  annotations: Record<string, string>;
  labels: Record<string, string>;
}

export interface ReportPackage {
  /** Unique within the report; findings point at it. */
  id: string;
  name: string;
  version: string;
  /** The purl type when there is a purl (`apk`, `npm`), otherwise the scanner's own type. */
  type: string;
  purl?: string;
  /** The diff ID of the layer that brought the package in. */
  layer?: string;
  licenses?: string[];
}

export interface Finding {
  /** Normalized: `CVE-2024-1234`, `GHSA-xxxx-xxxx-xxxx`, others as the scanner wrote them. */
  id: string;
  aliases: string[];
  severity: Severity;
  packageRef: string;
  installed: string;
  /** The fixing version(s) as the scanner lists them, comma-separated (`4.19.2, 5.0.0-beta.3`). */
  fixed?: string;
  status: FindingStatus;
  title?: string;
  description?: string;
}

export interface VexProduct {
  /** The product as written (`@id`): a purl, a digest or another IRI. */
  id: string;
  purl?: string;
  digest?: string;
  subcomponents: { id: string; purl?: string }[];
}

export interface VexStatement {
  vulnerability: string;
  aliases: string[];
  products: VexProduct[];
  status: VexStatus;
  justification?: string;
  impactStatement?: string;
  actionStatement?: string;
  /** ISO 8601 (milliseconds, UTC). */
  timestamp?: string;
}

export interface Report {
  format: ReportFormat;
  /** The format's own version (`2` for Trivy, `1.6`, `SPDX-2.3`, `v0.2.0`), when it has one. */
  formatVersion?: string;
  scanner: { name: string; version?: string };
  /** ISO 8601 (milliseconds, UTC). */
  scannedAt?: string;
  image: ReportImage;
  packages: ReportPackage[];
  findings: Finding[];
  vex: VexStatement[];
  /**
   * Whether the document says which vulnerabilities the image has (Trivy and Grype JSON, a
   * CycloneDX BOM with a `vulnerabilities` array, even an empty one) rather than only what it
   * contains (SPDX, a CycloneDX SBOM). An SBOM never hides a scan's findings.
   */
  vulnerabilityData: boolean;
}

export interface ParseLimits {
  /** Bytes (UTF-8); checked before anything is decoded. Default 256 MiB. */
  maxBytes: number;
  /** Nesting of arrays and objects. Default 64. */
  maxDepth: number;
  /** Packages, findings and VEX statements, each. Default 2,000,000. */
  maxItems: number;
}

export const DEFAULT_LIMITS: ParseLimits = { maxBytes: 256 * 1024 * 1024, maxDepth: 64, maxItems: 2_000_000 };
