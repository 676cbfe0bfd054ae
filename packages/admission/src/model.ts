/**
 * The admission documents: `kind: AdmissionPolicy` and `kind: AdmissionException` (apiVersion
 * writ.dev/v1), validated with line:column like access policies (the same YamlReader) and stored
 * in the same revisioned policy set under the keys `AdmissionPolicy/NAME`, `AdmissionException/NAME`.
 *
 *   kind: AdmissionPolicy
 *   metadata: { name: prod }
 *   spec:
 *     namespaces: [prod, "team-*"]               # globs on namespace names
 *     mode: enforce                              # enforce | warn | audit
 *     podSecurity: { level: restricted, version: latest }
 *     images: { requireDigest: true, registries: ["registry.example.com/team/"],
 *               signatures: [{ name: release-key, keys: [{ file: /etc/writ/cosign.pub }] }],
 *               vulnerabilities: { block: [critical, high], fixableOnly: true, requireReport: true, maxReportAge: 7d } }
 *     require: { resourceLimits: true, readOnlyRootFilesystem: true, runtimeClassNames: [kata] }
 *
 *   kind: AdmissionException
 *   metadata: { name: legacy-agent-hostpath }
 *   spec: { namespaces: [monitoring], workloads: [node-exporter], containers: [exporter],
 *           controls: [hostPathVolumes], images: ["sha256:..."], owner: platform-team,
 *           reason: "TICKET-123", expires: 2027-03-01T00:00:00Z }
 */
import type { KeyObject } from 'node:crypto';
import { isScalar, isSeq, type Node } from 'yaml';
import { YamlReader } from '@writ/policy/internal';
import { parseCosignKey, signatureRequirement, type SignatureRequirement } from '@writ/oci';
import { parseDuration } from '@writ/spiffe';
import { SEVERITIES, type Severity } from '@writ/vuln';
import { PSS_CONTROLS, resolvePssVersion } from './pss.ts';
import type { PssLevel } from './types.ts';

export const ADMISSION_KINDS = ['AdmissionPolicy', 'AdmissionException'] as const;
export type AdmissionKind = (typeof ADMISSION_KINDS)[number];
export const ADMISSION_MODES = ['enforce', 'warn', 'audit'] as const;
export type AdmissionMode = (typeof ADMISSION_MODES)[number];

/** Writ's own controls (images and `require`). */
export const WRIT_CONTROLS = [
  'imageDigest',
  'imageRegistry',
  'imageSignature',
  'imageResolve',
  'imageVulnerabilities',
  'resourceLimits',
  'readOnlyRootFilesystem',
  'runtimeClassName',
] as const;
const ALL_CONTROLS: readonly string[] = [...PSS_CONTROLS, ...WRIT_CONTROLS];

/** Whether an exception's control name covers a violation's control (`capabilities` covers `capabilities_baseline`). */
export function controlCovers(name: string, control: string): boolean {
  return name === control || (control.startsWith(name) && control[name.length] === '_');
}

/** A public key for cosign signatures: from a file (read when evaluating, so a rotated key takes effect at once) or inline. */
export type KeySource = { readonly file: string } | { readonly pem: string; readonly key: KeyObject };

export interface ImagePolicy {
  readonly requireDigest: boolean;
  readonly registries: readonly string[];
  readonly signatures: ReadonlyArray<{ readonly name: string; readonly keys: readonly KeySource[] }>;
  readonly vulnerabilities?: VulnerabilityPolicy;
}

/** `spec.images.vulnerabilities`: what the image's latest scanner reports may hold (control `imageVulnerabilities`). */
export interface VulnerabilityPolicy {
  /** Severities that refuse an image (default critical, high). */
  readonly block: readonly Severity[];
  /** Only findings with a fixed version refuse (default false: every finding at a blocked severity). */
  readonly fixableOnly: boolean;
  /** An image without any report is refused (default false: it passes unjudged). */
  readonly requireReport: boolean;
  /** Milliseconds: an image whose newest report is older is refused (absent: any age). */
  readonly maxReportAge?: number;
}

export interface AdmissionPolicy {
  readonly name: string;
  readonly namespaces: readonly string[];
  readonly mode: AdmissionMode;
  readonly podSecurity?: { readonly level: PssLevel; readonly version: string };
  readonly images?: ImagePolicy;
  readonly require: { readonly resourceLimits: boolean; readonly readOnlyRootFilesystem: boolean; readonly runtimeClassNames: readonly string[] };
  readonly line: number;
  /** The document as written (what the policy store keeps). */
  readonly source: string;
}

export interface AdmissionException {
  readonly name: string;
  readonly namespaces: readonly string[];
  /** Owner names (Deployment, DaemonSet, ...) or pod names; absent: any. */
  readonly workloads?: readonly string[];
  /** Container names; absent: any (and pod-level violations). */
  readonly containers?: readonly string[];
  /** Control names or prefixes (see controlCovers). */
  readonly controls: readonly string[];
  /** Image digests (`sha256:...`); absent: any image. */
  readonly images?: readonly string[];
  readonly owner?: string;
  readonly reason: string;
  /** Epoch ms; at or after it the exception has no effect. */
  readonly expires: number;
  readonly line: number;
  readonly source: string;
}

export interface AdmissionSet {
  readonly policies: readonly AdmissionPolicy[];
  readonly exceptions: readonly AdmissionException[];
}

/** Kinds parseAdmission leaves to others (the access policy language) instead of refusing. */
const OTHER_WRIT_KINDS = ['AccessPolicy', 'PolicyTest', 'VulnException'];
const NAMESPACE_GLOB = /^[a-z0-9*?]([a-z0-9*?-]{0,61}[a-z0-9*?])?$/;
const DIGEST = /^sha256:[0-9a-f]{64}$/;

function validVersion(v: string): boolean {
  try {
    resolvePssVersion(v);
    return true;
  } catch {
    return false;
  }
}

/** A namespace glob (`*` any run, `?` one character) as a matcher. */
export function globMatcher(glob: string): (s: string) => boolean {
  let m = GLOBS.get(glob);
  if (!m) {
    const re = /[*?]/.test(glob) ? new RegExp(`^${glob.replace(/[*?]/g, (c) => (c === '*' ? '.*' : '.'))}$`) : undefined;
    m = re ? (s) => re.test(s) : (s) => s === glob;
    // Globs come from policy documents: bounded, but a stored set can change many times.
    if (GLOBS.size >= 10_000) GLOBS.clear();
    GLOBS.set(glob, m);
  }
  return m;
}
const GLOBS = new Map<string, (s: string) => boolean>();

/** A PEM public key cosign signs with (@writ/oci's rules, so `writ image verify --key` agrees), or why not. */
export function publicKeyOf(pem: string): KeyObject | string {
  try {
    return parseCosignKey(pem);
  } catch (err) {
    return (err as Error).message;
  }
}

/**
 * Parses and validates AdmissionPolicy and AdmissionException documents. AccessPolicy and
 * PolicyTest documents in the same text are skipped (parsePolicies reads them); any other kind is
 * refused. An exception already expired at `now` is refused unless `allowExpired` (stored sets).
 */
export function parseAdmission(text: string, opts: { file?: string; now?: number; allowExpired?: boolean } = {}): AdmissionSet {
  const y = new YamlReader(text, opts.file ?? 'policy', ['apiVersion', 'kind', 'metadata', 'spec', 'cases']);
  const now = opts.now ?? Date.now();
  const policies: AdmissionPolicy[] = [];
  const exceptions: AdmissionException[] = [];
  const seen = { AdmissionPolicy: new Map<string, number>(), AdmissionException: new Map<string, number>() };
  const namespaceList = (n: Node | undefined, where: string): string[] =>
    y.strings(n, where, (s) => (NAMESPACE_GLOB.test(s) ? undefined : 'not a namespace name or glob (a-z 0-9 - with * and ?)'));
  const optBool = (m: Map<string, Node>, key: string, where: string): boolean => (m.has(key) ? (y.bool(m.get(key), `${where}.${key}`) ?? false) : false);

  for (const doc of y.documents) {
    if (OTHER_WRIT_KINDS.includes(doc.kind)) continue;
    if (!(ADMISSION_KINDS as readonly string[]).includes(doc.kind)) {
      y.issue(
        doc.fields.get('kind') ?? doc.node,
        doc.kind
          ? `unknown kind "${doc.kind.slice(0, 60)}"; expected AdmissionPolicy or AdmissionException`
          : 'the document needs "kind" (AdmissionPolicy or AdmissionException)',
      );
      continue;
    }
    const kind = doc.kind as AdmissionKind;
    if (doc.fields.has('cases')) y.issue(doc.node, `unknown field "cases" in an ${kind}`);
    const api = doc.fields.get('apiVersion');
    if (!isScalar(api) || api.value !== 'writ.dev/v1') y.issue(api ?? doc.node, 'apiVersion must be writ.dev/v1');
    const meta = y.fields(doc.fields.get('metadata'), 'metadata', ['name', 'labels', 'description'], ['name']);
    const name = y.name(meta, kind, seen[kind], doc.line);
    if (kind === 'AdmissionPolicy') {
      const spec = y.fields(doc.fields.get('spec'), 'spec', ['namespaces', 'mode', 'podSecurity', 'images', 'require'], ['namespaces']);
      if (!spec) continue;
      const namespaces = spec.has('namespaces') ? namespaceList(spec.get('namespaces'), 'spec.namespaces') : [];
      const modeNode = spec.get('mode');
      const mode = modeNode ? y.str(modeNode, 'spec.mode') : 'enforce';
      if (modeNode && mode !== undefined && !(ADMISSION_MODES as readonly string[]).includes(mode))
        y.issue(modeNode, 'spec.mode must be enforce, warn or audit');
      let podSecurity: AdmissionPolicy['podSecurity'];
      if (spec.has('podSecurity')) {
        const ps = y.fields(spec.get('podSecurity'), 'spec.podSecurity', ['level', 'version'], ['level']);
        const level = ps?.get('level') ? y.str(ps.get('level'), 'spec.podSecurity.level') : undefined;
        if (level !== undefined && !['privileged', 'baseline', 'restricted'].includes(level))
          y.issue(ps!.get('level'), 'spec.podSecurity.level must be privileged, baseline or restricted');
        const version = ps?.get('version') ? y.str(ps.get('version'), 'spec.podSecurity.version') : 'latest';
        if (version !== undefined && !validVersion(version))
          y.issue(ps!.get('version'), 'spec.podSecurity.version must be latest or a Kubernetes minor version like v1.30');
        if (level && version) podSecurity = { level: level as PssLevel, version };
      }
      let images: ImagePolicy | undefined;
      if (spec.has('images')) {
        const im = y.fields(spec.get('images'), 'spec.images', ['requireDigest', 'registries', 'signatures', 'vulnerabilities']);
        if (im) {
          const registries = im.has('registries')
            ? y.strings(im.get('registries'), 'spec.images.registries', (s) =>
                /^[a-z0-9[][a-z0-9._:/[\]-]*$/.test(s) ? undefined : 'not a registry/repository prefix (lowercase, like registry.example.com/team/)',
              )
            : [];
          const signatures: Array<ImagePolicy['signatures'][number]> = [];
          const sigNames = new Set<string>();
          for (const [i, sn] of (im.has('signatures') ? (y.list(im.get('signatures'), 'spec.images.signatures') ?? []) : []).entries()) {
            const w = `spec.images.signatures[${i}]`;
            const s = y.fields(sn, w, ['name', 'keys'], ['name', 'keys']);
            if (!s) continue;
            const sigName = s.get('name') ? y.str(s.get('name'), `${w}.name`) : undefined;
            if (sigName !== undefined && sigNames.has(sigName)) y.issue(s.get('name'), `${w}.name "${sigName}" is used twice`);
            if (sigName !== undefined) sigNames.add(sigName);
            const keys: KeySource[] = [];
            const keysNode = s.get('keys');
            if (keysNode && !isSeq(keysNode)) y.issue(keysNode, `${w}.keys must be a list of {file: PATH} or {pem: "-----BEGIN PUBLIC KEY-----..."}`);
            for (const [j, kn] of (keysNode && isSeq(keysNode) ? (y.list(keysNode, `${w}.keys`) ?? []) : []).entries()) {
              const kw = `${w}.keys[${j}]`;
              const k = y.fields(kn, kw, ['file', 'pem']);
              if (!k) continue;
              if (k.has('file') === k.has('pem')) {
                y.issue(kn, `${kw} takes one of "file" or "pem"`);
                continue;
              }
              if (k.has('file')) {
                const file = y.str(k.get('file'), `${kw}.file`);
                if (file !== undefined) keys.push({ file });
                continue;
              }
              const pem = y.str(k.get('pem'), `${kw}.pem`);
              if (pem === undefined) continue;
              const key = publicKeyOf(pem);
              if (typeof key === 'string') y.issue(k.get('pem'), `${kw}.pem: ${key}`);
              else keys.push({ pem, key });
            }
            if (sigName !== undefined && keys.length) signatures.push({ name: sigName, keys });
          }
          const vulnerabilities = im.has('vulnerabilities') ? vulnerabilityPolicy(y, im.get('vulnerabilities')) : undefined;
          images = { requireDigest: optBool(im, 'requireDigest', 'spec.images'), registries, signatures, ...(vulnerabilities ? { vulnerabilities } : {}) };
        }
      }
      let require: AdmissionPolicy['require'] = { resourceLimits: false, readOnlyRootFilesystem: false, runtimeClassNames: [] };
      if (spec.has('require')) {
        const rq = y.fields(spec.get('require'), 'spec.require', ['resourceLimits', 'readOnlyRootFilesystem', 'runtimeClassNames']);
        if (rq)
          require = {
            resourceLimits: optBool(rq, 'resourceLimits', 'spec.require'),
            readOnlyRootFilesystem: optBool(rq, 'readOnlyRootFilesystem', 'spec.require'),
            runtimeClassNames: rq.has('runtimeClassNames')
              ? y.strings(rq.get('runtimeClassNames'), 'spec.require.runtimeClassNames', (s) =>
                  /^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$/.test(s) ? undefined : 'not a RuntimeClass name',
                )
              : [],
          };
      }
      if (name !== undefined && mode !== undefined)
        policies.push({
          name,
          namespaces,
          mode: (ADMISSION_MODES as readonly string[]).includes(mode) ? (mode as AdmissionMode) : 'enforce',
          ...(podSecurity ? { podSecurity } : {}),
          ...(images ? { images } : {}),
          require,
          line: doc.line,
          source: doc.source,
        });
      continue;
    }
    const spec = y.fields(
      doc.fields.get('spec'),
      'spec',
      ['namespaces', 'workloads', 'containers', 'controls', 'images', 'owner', 'reason', 'expires'],
      ['namespaces', 'controls', 'reason', 'expires'],
    );
    if (!spec) continue;
    const namespaces = spec.has('namespaces') ? namespaceList(spec.get('namespaces'), 'spec.namespaces') : [];
    const names = (key: string, check: RegExp, what: string): string[] | undefined =>
      spec.has(key) ? y.strings(spec.get(key), `spec.${key}`, (s) => (check.test(s) ? undefined : `not a ${what}`)) : undefined;
    const workloads = names('workloads', /^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$/, 'workload or pod name');
    const containers = names('containers', /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/, 'container name');
    const controls = spec.has('controls')
      ? y.strings(spec.get('controls'), 'spec.controls', (s) =>
          ALL_CONTROLS.some((c) => controlCovers(s, c))
            ? undefined
            : `unknown control "${s.slice(0, 60)}"; use a Pod Security check ID (${PSS_CONTROLS.join(', ')}; a prefix such as capabilities covers both levels) or ${WRIT_CONTROLS.join(', ')}`,
        )
      : [];
    const images = spec.has('images')
      ? y
          .strings(spec.get('images'), 'spec.images', (s) =>
            DIGEST.test(s.slice(s.indexOf('@') + 1)) ? undefined : 'not an image digest (sha256: and 64 lowercase hex, or NAME@sha256:...)',
          )
          .map((s) => s.slice(s.indexOf('@') + 1))
      : undefined;
    const owner = spec.has('owner') ? y.str(spec.get('owner'), 'spec.owner') : undefined;
    const reason = spec.has('reason') ? y.str(spec.get('reason'), 'spec.reason') : undefined;
    let expires = spec.has('expires') ? y.time(spec.get('expires'), 'spec.expires') : undefined;
    if (expires !== undefined && expires <= now && !opts.allowExpired) {
      y.issue(spec.get('expires'), `spec.expires is in the past (${new Date(expires).toISOString()}): the exception would never apply`);
      expires = undefined;
    }
    if (name !== undefined && reason !== undefined && expires !== undefined && controls.length)
      exceptions.push({
        name,
        namespaces,
        ...(workloads ? { workloads } : {}),
        ...(containers ? { containers } : {}),
        controls,
        ...(images ? { images } : {}),
        ...(owner !== undefined ? { owner } : {}),
        reason,
        expires,
        line: doc.line,
        source: doc.source,
      });
  }
  y.finish();
  return { policies, exceptions };
}

/** `spec.images.vulnerabilities`, validated with line numbers (problems go to `y`). */
function vulnerabilityPolicy(y: YamlReader, node: Node | undefined): VulnerabilityPolicy | undefined {
  const w = 'spec.images.vulnerabilities';
  const m = y.fields(node, w, ['block', 'fixableOnly', 'requireReport', 'maxReportAge']);
  if (!m) return undefined;
  const block = m.has('block')
    ? (y.strings(m.get('block'), `${w}.block`, (s) =>
        (SEVERITIES as readonly string[]).includes(s) ? undefined : `not a severity (${SEVERITIES.join(', ')})`,
      ) as Severity[])
    : (['critical', 'high'] as Severity[]);
  const bool = (key: string): boolean => (m.has(key) ? (y.bool(m.get(key), `${w}.${key}`) ?? false) : false);
  let maxReportAge: number | undefined;
  if (m.has('maxReportAge')) {
    const n = m.get('maxReportAge');
    const v = isScalar(n) && (typeof n.value === 'string' || typeof n.value === 'number') ? n.value : undefined;
    if (v === undefined) y.issue(n, `${w}.maxReportAge must be a duration like 7d or 12h`);
    else
      try {
        maxReportAge = parseDuration(v, `${w}.maxReportAge`, 3660 * 86_400_000, 60_000);
      } catch (err) {
        y.issue(n, (err as Error).message);
      }
  }
  return {
    block: [...new Set(block)],
    fixableOnly: bool('fixableOnly'),
    requireReport: bool('requireReport'),
    ...(maxReportAge !== undefined ? { maxReportAge } : {}),
  };
}

/** The store key of an admission document (access policies keep their bare names). */
export function admissionKey(kind: AdmissionKind, name: string): string {
  return `${kind}/${name}`;
}

/** Whether a policy-store key holds an admission document. */
export function isAdmissionKey(key: string): boolean {
  return key.startsWith('AdmissionPolicy/') || key.startsWith('AdmissionException/');
}

/**
 * The AdmissionSet of a stored policy set (key -> YAML), as the webhook evaluates it: the
 * admission documents only, expired exceptions kept (evaluate ignores them at its own `now`).
 * Cache the result per revision: parsing is the costly part.
 */
export function admissionSetOf(policies: Readonly<Record<string, string>>, now: number): AdmissionSet {
  const out = { policies: [] as AdmissionPolicy[], exceptions: [] as AdmissionException[] };
  for (const [key, text] of Object.entries(policies)) {
    if (!isAdmissionKey(key)) continue;
    const s = parseAdmission(text, { file: key, now, allowExpired: true });
    out.policies.push(...s.policies);
    out.exceptions.push(...s.exceptions);
  }
  return out;
}

/**
 * The signature requirements of a policy's images, for @writ/oci's ImageChecker: file keys read
 * through `readKeyFile` now (so a rotated key counts at once) and checked like inline ones; the
 * fingerprint covers every key, so a changed key is a new cache entry. Throws for an unreadable
 * or unsupported key file (the caller turns it into a violation).
 */
export function signatureRequirements(images: ImagePolicy, readKeyFile: (path: string) => string | Buffer): SignatureRequirement[] {
  return images.signatures.map((s) =>
    signatureRequirement(
      s.name,
      s.keys.map((k) => keyOf('key' in k ? k.pem : String(readKeyFile(k.file)), 'key' in k ? 'pem' : `key file ${k.file}`)),
    ),
  );
}

// Parsed keys by their PEM text: a key file is read on every evaluation, parsed once.
const KEYS = new Map<string, KeyObject>();
function keyOf(pem: string, what: string): KeyObject {
  let k = KEYS.get(pem);
  if (!k) {
    const key = publicKeyOf(pem);
    if (typeof key === 'string') throw new Error(`${what}: ${key}`);
    k = key;
    if (KEYS.size >= 1000) KEYS.clear();
    KEYS.set(pem, k);
  }
  return k;
}
