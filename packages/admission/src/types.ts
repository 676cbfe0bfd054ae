/**
 * The contract between the parts of @writ/admission (and the server and CLI that use them):
 * Pod Security Standards (pss.ts, workload.ts), the AdmissionPolicy/AdmissionException documents
 * (model.ts) and their evaluation (evaluate.ts). Images are checked through @writ/oci's ImageChecker,
 * their vulnerabilities through a VulnerabilityChecker.
 */
import type { FindingStatus, Severity } from '@writ/vuln';

/** One reason an object is refused (or warned about), as `writ admission check -o json` prints it. */
export interface Violation {
  /** A PSS control id (`privileged`, `allowPrivilegeEscalation`, `hostPathVolumes`, ...) or a Writ control (`imageDigest`, `imageRegistry`, `imageSignature`, `imageVulnerabilities`, `resourceLimits`, `readOnlyRootFilesystem`, `runtimeClassName`). */
  readonly control: string;
  /** Reads like Pod Security Admission's: `allowPrivilegeEscalation != false (container "app" must set securityContext.allowPrivilegeEscalation=false)`. */
  readonly message: string;
  /** The container the violation is about, when it is about one. */
  readonly container?: string;
  /** For a Pod Security Standards finding: the facts `podSecurityMessage()` needs to rebuild PSA's aggregated text. */
  readonly pss?: PssFinding;
}

/**
 * What one PSS finding is about, kept so that the aggregated message of the findings that remain
 * (after exceptions waived some) reads exactly as Pod Security Admission's for the same pod would.
 */
export interface PssFinding {
  /** Who set the offending value: the pod's securityContext/spec, a container (`Violation.container`), a volume or a pod annotation. */
  readonly setter: 'pod' | 'container' | 'volume' | 'annotation';
  /** The volume name or annotation key, for those setters. */
  readonly name?: string;
  /** The offending values (capabilities, ports, profile types, sysctl names, volume types, `key="value"` annotations). */
  readonly values?: readonly string[];
  /** Which clauses of the check this finding is under, for checks with several (`drop`/`add`, `explicit`/`implicit`, `user`/`role`). */
  readonly clauses?: readonly string[];
  /**
   * The baseline control this finding also falls under where a restricted check replaced it: a
   * hostPath volume under `restrictedVolumes` is a `hostPathVolumes` finding too, so an exception
   * naming either control waives it.
   */
  readonly baselineControl?: string;
  /** Position in `checkPodSecurity()`'s answer, so the text keeps PSA's order whatever order the findings come back in. */
  readonly order?: number;
}

export type PssLevel = 'privileged' | 'baseline' | 'restricted';

/** A pod to check: what a Pod has, or what a workload's pod template has. Plain JSON as Kubernetes sends it. */
export interface PodLike {
  readonly metadata?: {
    readonly name?: string;
    readonly generateName?: string;
    readonly namespace?: string;
    readonly labels?: Record<string, string>;
    readonly annotations?: Record<string, string>;
    readonly ownerReferences?: ReadonlyArray<{ readonly kind?: string; readonly name?: string; readonly controller?: boolean }>;
  };
  readonly spec?: Record<string, unknown>;
}

/** One finding of an image's scanner reports, as the vulnerability gate weighs it. */
export interface ImageVulnerability {
  /** `CVE-2024-1234`, `GHSA-...`: as the report store normalized it. */
  readonly id: string;
  readonly severity: Severity;
  readonly status: FindingStatus;
  /** The package it is in (name), and the installed version. */
  readonly package: string;
  readonly installed: string;
  /** The fixing version(s), when the scanner knows one: what `fixableOnly` looks at. */
  readonly fixed?: string;
  /** A VulnException or VEX statement in force that silences it (it then never refuses the image). */
  readonly suppressed?: { readonly by: 'exception' | 'vex'; readonly name: string; readonly reason: string };
}

/** What is known of an image's vulnerabilities: its latest reports (one per scanner) merged. */
export interface ImageVulnerabilities {
  /** Absent: no report on the image (what `requireReport` refuses). */
  readonly report?: {
    /** Epoch ms of the newest report (its scan time, else when it arrived): what `maxReportAge` looks at. */
    readonly scannedAt: number;
    readonly scanners: readonly string[];
    readonly findings: readonly ImageVulnerability[];
  };
}

/**
 * Looks up an image's vulnerabilities by manifest digest: the server from its report store
 * and suppressions, `writ admission check --report FILE` from the files given.
 */
export interface VulnerabilityChecker {
  vulnerabilities(digest: string, signal?: AbortSignal): Promise<ImageVulnerabilities>;
}
