/**
 * The contract between the parts of @writ/admission (and the server and CLI that use them):
 * Pod Security Standards (pss.ts, workload.ts), the AdmissionPolicy/AdmissionException documents
 * (model.ts) and their evaluation (evaluate.ts). Images are checked through @writ/oci's ImageChecker.
 */

/** One reason an object is refused (or warned about), as `writ admission check -o json` prints it. */
export interface Violation {
  /** A PSS control id (`privileged`, `allowPrivilegeEscalation`, `hostPathVolumes`, ...) or a Writ control (`imageDigest`, `imageRegistry`, `imageSignature`, `resourceLimits`, `readOnlyRootFilesystem`, `runtimeClassName`). */
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
