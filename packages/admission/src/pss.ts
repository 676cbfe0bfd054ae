/**
 * Pod Security Standards, every check of the baseline and restricted levels for every policy
 * version, with the semantics and the messages of Kubernetes' Pod Security Admission
 * (kubernetes/pod-security-admission, policy/check_*.go). A check has revisions that start at a
 * minor version; a restricted check may replace a baseline one (restrictedVolumes replaces
 * hostPathVolumes). Findings are one Violation per container (or per volume, annotation, pod
 * field), each carrying the facts (`pss`) from which the aggregated PSA text is rebuilt.
 */
import { WritError } from '@writ/spiffe';
import type { PodLike, PssFinding, PssLevel, Violation } from './types.ts';

/** The newest policy version the checks define; newer versions act as this one (as PSA does). */
const NEWEST_MINOR = 37;

/** Every policy version from v1.0 to the newest a check is defined for. */
export const PSS_VERSIONS: readonly string[] = Array.from({ length: NEWEST_MINOR + 1 }, (_, i) => `v1.${i}`);

export interface PssVersion {
  /** As PSA prints it in `restricted:<label>`: `latest` or the version asked for (`v1.40`). */
  readonly label: string;
  /** The minor version whose checks apply (at most the newest known). */
  readonly minor: number;
}

const VERSION_FORMAT = /^v1\.(0|[1-9][0-9]{0,8})$/;

/**
 * `latest` or `v1.NN`; a version newer than the checks know acts as the newest (like PSA).
 * @example resolvePssVersion('v1.24') // { label: 'v1.24', minor: 24 }
 */
export function resolvePssVersion(version: string): PssVersion {
  if (version === 'latest') return { label: 'latest', minor: NEWEST_MINOR };
  const match = typeof version === 'string' ? VERSION_FORMAT.exec(version) : null;
  if (match === null) {
    const shown = typeof version === 'string' ? JSON.stringify(version.slice(0, 40)) : typeof version;
    throw new WritError('ERR_PSS_VERSION_INVALID', `pod security version ${shown} is not "latest" or "v1.N" (v1.0 ... v1.${NEWEST_MINOR})`);
  }
  return { label: version, minor: Math.min(Number(match[1]), NEWEST_MINOR) };
}

// ---------------------------------------------------------------------------------------------
// The pod as the checks see it: plain JSON read defensively (a field of the wrong type counts as
// absent, except where the standard lists allowed values: then anything else is a finding).

type Json = Record<string, unknown>;

interface Ctr {
  readonly name: string;
  readonly raw: Json;
  readonly sc: Json | undefined;
}

interface PodView {
  readonly annotations: Record<string, unknown>;
  readonly spec: Json;
  readonly podSc: Json | undefined;
  /** Init containers, containers, then ephemeral containers: PSA's visiting order. */
  readonly containers: readonly Ctr[];
  readonly windows: boolean;
  /** `hostUsers: false`: the pod has its own user namespace, which relaxes some checks from v1.35. */
  readonly userNamespace: boolean;
}

function obj(value: unknown): Json | undefined {
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Json) : undefined;
}

function list(value: unknown): readonly unknown[] {
  return Array.isArray(value) ? value : [];
}

/** A value as text: what a number or boolean prints as; '' for anything that is not a scalar. */
function str(value: unknown): string {
  if (typeof value === 'string') return value;
  return typeof value === 'number' || typeof value === 'boolean' ? String(value) : '';
}

function isSet(value: unknown): boolean {
  return value !== undefined && value !== null;
}

function view(pod: PodLike): PodView {
  const spec = obj(pod.spec) ?? {};
  const containers: Ctr[] = [];
  for (const key of ['initContainers', 'containers', 'ephemeralContainers']) {
    for (const item of list(spec[key])) {
      const raw = obj(item) ?? {};
      containers.push({ name: str(raw.name), raw, sc: obj(raw.securityContext) });
    }
  }
  return {
    annotations: obj(obj(pod.metadata)?.annotations) ?? {},
    spec,
    podSc: obj(spec.securityContext),
    containers,
    windows: obj(spec.os)?.name === 'windows',
    userNamespace: spec.hostUsers === false,
  };
}

// ---------------------------------------------------------------------------------------------
// Findings and their text.

/** A finding before its message is written. */
interface Draft {
  readonly container?: string;
  readonly pss: PssFinding;
}

interface Text {
  readonly reason: string;
  readonly detail: string;
}

type Format = (findings: readonly Draft[]) => Text;
type Run = (pod: PodView) => Draft[];

interface Check {
  readonly id: string;
  readonly level: 'baseline' | 'restricted';
  /** Revisions by the first minor version they apply to, increasing. */
  readonly versions: ReadonlyArray<{ readonly min: number; readonly run: Run }>;
  /** Baseline checks this (restricted) check replaces at the restricted level. */
  readonly overrides?: readonly string[];
  /** The replaced baseline control a finding also falls under (see PssFinding.baselineControl). */
  readonly baselineControl?: (finding: Draft) => string | undefined;
  readonly format: Format;
}

function plural(singular: string, many: string, count: number): string {
  return count === 1 ? singular : many;
}

function joinQuote(items: readonly string[]): string {
  return items.length === 0 ? '' : `"${items.join('", "')}"`;
}

const GO_ESCAPES: Readonly<Record<string, string>> = {
  '"': '\\"',
  '\\': '\\\\',
  '\x07': '\\a',
  '\b': '\\b',
  '\f': '\\f',
  '\n': '\\n',
  '\r': '\\r',
  '\t': '\\t',
  '\v': '\\v',
};
/** What Go's strconv.IsPrint accepts: letters, marks, numbers, punctuation, symbols and the ASCII space. */
const GO_PRINTABLE = /^[\p{L}\p{M}\p{N}\p{P}\p{S} ]$/u;

/** Go's %q (strconv.Quote), which PSA uses for annotation values. */
function goQuote(value: string): string {
  let out = '"';
  for (const raw of value) {
    // A lone surrogate cannot come out of Go's JSON decoder: it reads U+FFFD there.
    const lone = /^[\ud800-\udfff]$/u.test(raw);
    const ch = lone ? '\ufffd' : raw;
    const code = ch.codePointAt(0) ?? 0;
    const escaped = GO_ESCAPES[ch];
    if (escaped !== undefined) out += escaped;
    else if (code < 0x20 || code === 0x7f) out += `\\x${code.toString(16).padStart(2, '0')}`;
    else if (GO_PRINTABLE.test(ch)) out += ch;
    else out += code < 0x10000 ? `\\u${code.toString(16).padStart(4, '0')}` : `\\U${code.toString(16).padStart(8, '0')}`;
  }
  return `${out}"`;
}

function sortedUnique(values: Iterable<string>): string[] {
  return [...new Set(values)].sort(byCodeUnit);
}

/** Go's sort.Strings order (bytes), which is UTF-16 code unit order for what PSA sorts. */
function byCodeUnit(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function allValues(findings: readonly Draft[], setters?: readonly PssFinding['setter'][]): string[] {
  const out: string[] = [];
  for (const f of findings) if (setters === undefined || setters.includes(f.pss.setter)) out.push(...(f.pss.values ?? []));
  return out;
}

function containerNames(findings: readonly Draft[], clause?: string): string[] {
  const out: string[] = [];
  for (const f of findings) {
    if (f.pss.setter === 'container' && (clause === undefined || f.pss.clauses?.includes(clause) === true)) out.push(f.container ?? '');
  }
  return out;
}

function containersPhrase(names: readonly string[]): string {
  return `${plural('container', 'containers', names.length)} ${joinQuote(names)}`;
}

/** `pod and containers "a", "b"`: who set a forbidden value, pod first. */
function settersPhrase(findings: readonly Draft[], clause?: string): string {
  const parts: string[] = [];
  if (findings.some((f) => f.pss.setter === 'pod' && (clause === undefined || f.pss.clauses?.includes(clause) === true))) parts.push('pod');
  const names = containerNames(findings, clause);
  if (names.length > 0) parts.push(containersPhrase(names));
  return parts.join(' and ');
}

const hasClause = (clause: string) => (f: Draft) => f.pss.clauses?.includes(clause) === true;

function container(c: Ctr, pss: Omit<PssFinding, 'setter'> = {}): Draft {
  return { container: c.name, pss: { setter: 'container', ...pss } };
}

function podLevel(pss: Omit<PssFinding, 'setter'> = {}): Draft {
  return { pss: { setter: 'pod', ...pss } };
}

/** A check of one boolean-ish container field whose only allowed values are "unset" and `allowed`. */
function containersWhere(bad: (c: Ctr) => boolean): Run {
  return (pod) => pod.containers.filter(bad).map((c) => container(c));
}

// ---------------------------------------------------------------------------------------------
// The checks (the fields and values are the Pod Security Standards'; the revisions PSA's).

const windowsExempt =
  (run: Run): Run =>
  (pod) =>
    pod.windows ? [] : run(pod);

const userNamespaceExempt =
  (run: Run): Run =>
  (pod) =>
    pod.userNamespace ? [] : run(pod);

const privileged: Check = {
  id: 'privileged',
  level: 'baseline',
  versions: [{ min: 0, run: containersWhere((c) => isSet(c.sc?.privileged) && c.sc?.privileged !== false) }],
  format: (fs) => ({ reason: 'privileged', detail: `${containersPhrase(containerNames(fs))} must not set securityContext.privileged=true` }),
};

const hostNamespaces: Check = {
  id: 'hostNamespaces',
  level: 'baseline',
  versions: [
    {
      min: 0,
      run: (pod) => {
        const values = ['hostNetwork', 'hostPID', 'hostIPC'].filter((k) => isSet(pod.spec[k]) && pod.spec[k] !== false).map((k) => `${k}=true`);
        return values.length > 0 ? [podLevel({ values })] : [];
      },
    },
  ],
  format: (fs) => ({ reason: 'host namespaces', detail: allValues(fs).join(', ') }),
};

function volumes(pod: PodView): Array<{ name: string; raw: Json }> {
  return list(pod.spec.volumes).map((v) => {
    const raw = obj(v) ?? {};
    return { name: str(raw.name), raw };
  });
}

const hostPathVolumes: Check = {
  id: 'hostPathVolumes',
  level: 'baseline',
  versions: [
    {
      min: 0,
      run: (pod) =>
        volumes(pod)
          .filter((v) => isSet(v.raw.hostPath))
          .map((v) => ({ pss: { setter: 'volume', name: v.name } })),
    },
  ],
  format: (fs) => {
    const names = fs.map((f) => f.pss.name ?? '');
    return { reason: 'hostPath volumes', detail: `${plural('volume', 'volumes', names.length)} ${joinQuote(names)}` };
  },
};

const hostPorts: Check = {
  id: 'hostPorts',
  level: 'baseline',
  versions: [
    {
      min: 0,
      run: (pod) =>
        pod.containers.flatMap((c) => {
          const ports = list(c.raw.ports)
            .map((p) => obj(p)?.hostPort)
            .filter((port) => isSet(port) && port !== 0)
            .map(str);
          return ports.length > 0 ? [container(c, { values: ports })] : [];
        }),
    },
  ],
  format: (fs) => {
    const names = containerNames(fs);
    const ports = sortedUnique(allValues(fs));
    return {
      reason: 'hostPort',
      detail: `${containersPhrase(names)} ${plural('uses', 'use', names.length)} ${plural('hostPort', 'hostPorts', ports.length)} ${ports.join(', ')}`,
    };
  },
};

const DEFAULT_CAPABILITIES = new Set([
  'AUDIT_WRITE',
  'CHOWN',
  'DAC_OVERRIDE',
  'FOWNER',
  'FSETID',
  'KILL',
  'MKNOD',
  'NET_BIND_SERVICE',
  'SETFCAP',
  'SETGID',
  'SETPCAP',
  'SETUID',
  'SYS_CHROOT',
]);

function capabilities(c: Ctr): Json | undefined {
  return obj(c.sc?.capabilities);
}

const capabilitiesBaseline: Check = {
  id: 'capabilities_baseline',
  level: 'baseline',
  versions: [
    {
      min: 0,
      run: (pod) =>
        pod.containers.flatMap((c) => {
          const added = list(capabilities(c)?.add)
            .map(str)
            .filter((cap) => !DEFAULT_CAPABILITIES.has(cap));
          return added.length > 0 ? [container(c, { values: added })] : [];
        }),
    },
  ],
  format: (fs) => ({
    reason: 'non-default capabilities',
    detail: `${containersPhrase(containerNames(fs))} must not include ${joinQuote(sortedUnique(allValues(fs)))} in securityContext.capabilities.add`,
  }),
};

const capabilitiesRestrictedRun: Run = (pod) =>
  pod.containers.flatMap((c) => {
    const caps = capabilities(c);
    if (caps === undefined) return [container(c, { clauses: ['drop'] })];
    const clauses: string[] = [];
    if (!list(caps.drop).some((cap) => cap === 'ALL')) clauses.push('drop');
    const added = list(caps.add)
      .map(str)
      .filter((cap) => cap !== 'NET_BIND_SERVICE');
    if (added.length > 0) clauses.push('add');
    if (clauses.length === 0) return [];
    return [container(c, added.length > 0 ? { clauses, values: added } : { clauses })];
  });

const capabilitiesRestricted: Check = {
  id: 'capabilities_restricted',
  level: 'restricted',
  versions: [
    { min: 22, run: capabilitiesRestrictedRun },
    { min: 25, run: windowsExempt(capabilitiesRestrictedRun) },
  ],
  overrides: ['capabilities_baseline'],
  format: (fs) => {
    const details: string[] = [];
    const drop = containerNames(fs, 'drop');
    if (drop.length > 0) details.push(`${containersPhrase(drop)} must set securityContext.capabilities.drop=["ALL"]`);
    const add = containerNames(fs, 'add');
    if (add.length > 0) {
      const caps = sortedUnique(allValues(fs.filter(hasClause('add'))));
      details.push(`${containersPhrase(add)} must not include ${joinQuote(caps)} in securityContext.capabilities.add`);
    }
    return { reason: 'unrestricted capabilities', detail: details.join('; ') };
  },
};

const allowPrivilegeEscalationRun = containersWhere((c) => c.sc?.allowPrivilegeEscalation !== false);

const allowPrivilegeEscalation: Check = {
  id: 'allowPrivilegeEscalation',
  level: 'restricted',
  versions: [
    { min: 8, run: allowPrivilegeEscalationRun },
    { min: 25, run: windowsExempt(allowPrivilegeEscalationRun) },
  ],
  format: (fs) => ({
    reason: 'allowPrivilegeEscalation != false',
    detail: `${containersPhrase(containerNames(fs))} must set securityContext.allowPrivilegeEscalation=false`,
  }),
};

const APPARMOR_ANNOTATION_PREFIX = 'container.apparmor.security.beta.kubernetes.io/';

/** Profile types a securityContext.appArmorProfile/seccompProfile may name. */
const PROFILE_TYPES_ALLOWED = new Set(['RuntimeDefault', 'Localhost']);

function profileType(sc: Json | undefined, field: 'appArmorProfile' | 'seccompProfile'): string | undefined {
  const profile = sc?.[field];
  if (!isSet(profile)) return undefined;
  const type = obj(profile)?.type;
  return str(type);
}

const appArmorProfile: Check = {
  id: 'appArmorProfile',
  level: 'baseline',
  versions: [
    {
      min: 0,
      run: (pod) => {
        const out: Draft[] = [];
        const podType = profileType(pod.podSc, 'appArmorProfile');
        if (podType !== undefined && !PROFILE_TYPES_ALLOWED.has(podType)) out.push(podLevel({ values: [podType] }));
        for (const c of pod.containers) {
          const type = profileType(c.sc, 'appArmorProfile');
          if (type !== undefined && !PROFILE_TYPES_ALLOWED.has(type)) out.push(container(c, { values: [type] }));
        }
        for (const key of Object.keys(pod.annotations).sort(byCodeUnit)) {
          if (!key.startsWith(APPARMOR_ANNOTATION_PREFIX)) continue;
          const value = str(pod.annotations[key]);
          if (value === '' || value === 'runtime/default' || value.startsWith('localhost/')) continue;
          out.push({
            container: key.slice(APPARMOR_ANNOTATION_PREFIX.length),
            pss: { setter: 'annotation', name: key, values: [`${key}=${goQuote(value)}`] },
          });
        }
        return out;
      },
    },
  ],
  format: (fs) => {
    const setters = [settersPhrase(fs)].filter((s) => s !== '');
    const values = sortedUnique(allValues(fs, ['pod', 'container']));
    const annotations = allValues(fs, ['annotation']).sort(byCodeUnit);
    if (annotations.length > 0) setters.push(plural('annotation', 'annotations', annotations.length));
    values.push(...annotations);
    return {
      reason: plural('forbidden AppArmor profile', 'forbidden AppArmor profiles', values.length),
      detail: `${setters.join(' and ')} must not set AppArmor profile type to ${joinQuote(values)}`,
    };
  },
};

function probeHosts(handler: unknown): string[] {
  const h = obj(handler);
  if (h === undefined) return [];
  const hosts: string[] = [];
  for (const kind of ['httpGet', 'tcpSocket']) {
    const host = obj(h[kind])?.host;
    if (isSet(host) && host !== '') hosts.push(str(host));
  }
  return hosts;
}

const hostProbesAndHostLifecycle: Check = {
  id: 'hostProbesAndHostLifecycle',
  level: 'baseline',
  versions: [
    {
      min: 34,
      run: (pod) =>
        pod.containers.flatMap((c) => {
          const lifecycle = obj(c.raw.lifecycle);
          const hosts = [
            ...probeHosts(c.raw.livenessProbe),
            ...probeHosts(c.raw.readinessProbe),
            ...probeHosts(c.raw.startupProbe),
            ...probeHosts(lifecycle?.postStart),
            ...probeHosts(lifecycle?.preStop),
          ];
          return hosts.length > 0 ? [container(c, { values: hosts })] : [];
        }),
    },
  ],
  format: (fs) => {
    // PSA keeps these in sets: container names sorted and unique, unlike the other checks.
    const names = sortedUnique(containerNames(fs));
    const hosts = sortedUnique(allValues(fs));
    return {
      reason: 'probe or lifecycle host',
      detail: `${containersPhrase(names)} ${plural('uses', 'use', names.length)} ${plural('probe or lifecycle host', 'probe or lifecycle hosts', hosts.length)} ${joinQuote(hosts)}`,
    };
  },
};

const procMountRun: Run = (pod) =>
  pod.containers.flatMap((c) => {
    const mount = c.sc?.procMount;
    return isSet(mount) && mount !== 'Default' ? [container(c, { values: [str(mount)] })] : [];
  });

const procMountFormat: Format = (fs) => ({
  reason: 'procMount',
  detail: `${containersPhrase(containerNames(fs))} must not set securityContext.procMount to ${joinQuote(sortedUnique(allValues(fs)))}`,
});

const procMount: Check = {
  id: 'procMount',
  level: 'baseline',
  versions: [
    { min: 0, run: procMountRun },
    { min: 35, run: userNamespaceExempt(procMountRun) },
  ],
  format: procMountFormat,
};

const procMountRestricted: Check = {
  id: 'procMount_restricted',
  level: 'restricted',
  versions: [{ min: 35, run: procMountRun }],
  overrides: ['procMount'],
  baselineControl: () => 'procMount',
  format: procMountFormat,
};

const VOLUME_TYPES_ALLOWED = ['configMap', 'csi', 'downwardAPI', 'emptyDir', 'ephemeral', 'image', 'persistentVolumeClaim', 'projected', 'secret'];
/** In PSA's order: a volume with several sources is named by the first. */
const VOLUME_TYPES_RESTRICTED = [
  'hostPath',
  'gcePersistentDisk',
  'awsElasticBlockStore',
  'gitRepo',
  'nfs',
  'iscsi',
  'glusterfs',
  'rbd',
  'flexVolume',
  'cinder',
  'cephfs',
  'flocker',
  'fc',
  'azureFile',
  'vsphereVolume',
  'quobyte',
  'azureDisk',
  'photonPersistentDisk',
  'portworxVolume',
  'scaleIO',
  'storageos',
];

const restrictedVolumes: Check = {
  id: 'restrictedVolumes',
  level: 'restricted',
  versions: [
    {
      min: 0,
      run: (pod) =>
        volumes(pod).flatMap((v) => {
          if (VOLUME_TYPES_ALLOWED.some((t) => isSet(v.raw[t]))) return [];
          // A volume with no source at all is an emptyDir (the API server defaults it so, and PSA's
          // fixtures admit it); a source Kubernetes does not know counts as "unknown", as in PSA.
          if (Object.keys(v.raw).every((k) => k === 'name' || !isSet(v.raw[k]))) return [];
          const type = VOLUME_TYPES_RESTRICTED.find((t) => isSet(v.raw[t])) ?? 'unknown';
          return [{ pss: { setter: 'volume', name: v.name, values: [type] } }];
        }),
    },
  ],
  overrides: ['hostPathVolumes'],
  baselineControl: (f) => (f.pss.values?.[0] === 'hostPath' ? 'hostPathVolumes' : undefined),
  format: (fs) => {
    const names = fs.map((f) => f.pss.name ?? '');
    const types = sortedUnique(allValues(fs));
    return {
      reason: 'restricted volume types',
      detail: `${plural('volume', 'volumes', names.length)} ${joinQuote(names)} ${plural('uses', 'use', names.length)} ${plural('restricted volume type', 'restricted volume types', types.length)} ${joinQuote(types)}`,
    };
  },
};

/**
 * Checks where the pod-level value can stand in for the containers' (runAsNonRoot, seccomp in
 * restricted): an explicitly bad value is `explicit`; a container that sets nothing while the pod
 * sets nothing valid is `implicit`. PSA reports the explicit ones, and only without them the implicit.
 */
function podOrContainers(read: (sc: Json | undefined) => { set: boolean; ok: boolean; value: string }): Run {
  return (pod) => {
    const out: Draft[] = [];
    const podValue = read(pod.podSc);
    if (podValue.set && !podValue.ok) out.push(podLevel({ clauses: ['explicit'], values: [podValue.value] }));
    const podOk = podValue.set && podValue.ok;
    for (const c of pod.containers) {
      const value = read(c.sc);
      if (value.set) {
        if (!value.ok) out.push(container(c, { clauses: ['explicit'], values: [value.value] }));
      } else if (!podOk) {
        out.push(container(c, { clauses: ['implicit'] }));
      }
    }
    return out;
  };
}

const runAsNonRootRun = podOrContainers((sc) => {
  const value = sc?.runAsNonRoot;
  return { set: isSet(value), ok: value === true, value: str(value) };
});

const runAsNonRoot: Check = {
  id: 'runAsNonRoot',
  level: 'restricted',
  versions: [
    { min: 0, run: runAsNonRootRun },
    { min: 35, run: userNamespaceExempt(runAsNonRootRun) },
  ],
  format: (fs) => {
    const reason = 'runAsNonRoot != true';
    const explicit = fs.filter(hasClause('explicit'));
    if (explicit.length > 0) return { reason, detail: `${settersPhrase(explicit)} must not set securityContext.runAsNonRoot=false` };
    return { reason, detail: `pod or ${containersPhrase(containerNames(fs, 'implicit'))} must set securityContext.runAsNonRoot=true` };
  },
};

const runAsUserRun: Run = (pod) => {
  const out: Draft[] = [];
  if (pod.podSc?.runAsUser === 0) out.push(podLevel());
  for (const c of pod.containers) if (c.sc?.runAsUser === 0) out.push(container(c));
  return out;
};

const runAsUser: Check = {
  id: 'runAsUser',
  level: 'restricted',
  versions: [
    { min: 23, run: runAsUserRun },
    { min: 35, run: userNamespaceExempt(runAsUserRun) },
  ],
  format: (fs) => ({ reason: 'runAsUser=0', detail: `${settersPhrase(fs)} must not set runAsUser=0` }),
};

const SELINUX_TYPES_1_0 = new Set(['', 'container_t', 'container_init_t', 'container_kvm_t']);
const SELINUX_TYPES_1_31 = new Set([...SELINUX_TYPES_1_0, 'container_engine_t']);

function seLinuxRun(allowed: ReadonlySet<string>): Run {
  const judge = (sc: Json | undefined): Omit<PssFinding, 'setter'> | undefined => {
    const raw = sc?.seLinuxOptions;
    if (!isSet(raw)) return undefined;
    const opts = obj(raw) ?? {};
    const type = str(opts.type);
    const clauses: string[] = [];
    if (!allowed.has(type)) clauses.push('type');
    if (str(opts.user) !== '') clauses.push('user');
    if (str(opts.role) !== '') clauses.push('role');
    if (clauses.length === 0) return undefined;
    return clauses.includes('type') ? { clauses, values: [type] } : { clauses };
  };
  return (pod) => {
    const out: Draft[] = [];
    const podFinding = judge(pod.podSc);
    if (podFinding !== undefined) out.push(podLevel(podFinding));
    for (const c of pod.containers) {
      const finding = judge(c.sc);
      if (finding !== undefined) out.push(container(c, finding));
    }
    return out;
  };
}

const seLinuxOptions: Check = {
  id: 'seLinuxOptions',
  level: 'baseline',
  versions: [
    { min: 0, run: seLinuxRun(SELINUX_TYPES_1_0) },
    { min: 31, run: seLinuxRun(SELINUX_TYPES_1_31) },
  ],
  format: (fs) => {
    const data: string[] = [];
    const types = sortedUnique(allValues(fs));
    if (types.length > 0) data.push(`${plural('type', 'types', types.length)} ${joinQuote(types)}`);
    if (fs.some(hasClause('user'))) data.push('user may not be set');
    if (fs.some(hasClause('role'))) data.push('role may not be set');
    return { reason: 'seLinuxOptions', detail: `${settersPhrase(fs)} set forbidden securityContext.seLinuxOptions: ${data.join('; ')}` };
  },
};

const SECCOMP_POD_ANNOTATION = 'seccomp.security.alpha.kubernetes.io/pod';
const SECCOMP_CONTAINER_ANNOTATION_PREFIX = 'container.seccomp.security.alpha.kubernetes.io/';

function seccompAnnotationAllowed(value: string): boolean {
  return value === 'runtime/default' || value === 'docker/default' || value.startsWith('localhost/');
}

/** v1.0 to v1.18: only the (alpha) annotations count. */
const seccompAnnotationsRun: Run = (pod) => {
  const out: Draft[] = [];
  const annotation = (key: string, owner: string | undefined): void => {
    if (!Object.hasOwn(pod.annotations, key)) return;
    const value = str(pod.annotations[key]);
    if (seccompAnnotationAllowed(value)) return;
    const pss: PssFinding = { setter: 'annotation', name: key, values: [`${key}=${goQuote(value)}`] };
    out.push(owner === undefined ? { pss } : { container: owner, pss });
  };
  annotation(SECCOMP_POD_ANNOTATION, undefined);
  for (const c of pod.containers) annotation(SECCOMP_CONTAINER_ANNOTATION_PREFIX + c.name, c.name);
  return out;
};

const seccompFieldsRun: Run = (pod) => {
  const out: Draft[] = [];
  const podType = profileType(pod.podSc, 'seccompProfile');
  if (podType !== undefined && !PROFILE_TYPES_ALLOWED.has(podType)) out.push(podLevel({ clauses: ['explicit'], values: [podType] }));
  for (const c of pod.containers) {
    const type = profileType(c.sc, 'seccompProfile');
    if (type !== undefined && !PROFILE_TYPES_ALLOWED.has(type)) out.push(container(c, { clauses: ['explicit'], values: [type] }));
  }
  return out;
};

function seccompExplicitDetail(fs: readonly Draft[]): string {
  return `${settersPhrase(fs)} must not set securityContext.seccompProfile.type to ${joinQuote(sortedUnique(allValues(fs)))}`;
}

const seccompProfileBaseline: Check = {
  id: 'seccompProfile_baseline',
  level: 'baseline',
  versions: [
    { min: 0, run: seccompAnnotationsRun },
    { min: 19, run: seccompFieldsRun },
  ],
  format: (fs) => {
    if (fs.some((f) => f.pss.setter === 'annotation')) {
      const forbidden = sortedUnique(allValues(fs));
      return { reason: 'seccompProfile', detail: `forbidden ${plural('annotation', 'annotations', forbidden.length)} ${forbidden.join(', ')}` };
    }
    return { reason: 'seccompProfile', detail: seccompExplicitDetail(fs) };
  },
};

const seccompRestrictedRun = podOrContainers((sc) => {
  const type = profileType(sc, 'seccompProfile');
  return { set: type !== undefined, ok: type !== undefined && PROFILE_TYPES_ALLOWED.has(type), value: type ?? '' };
});

const seccompProfileRestricted: Check = {
  id: 'seccompProfile_restricted',
  level: 'restricted',
  versions: [
    { min: 19, run: seccompRestrictedRun },
    { min: 25, run: windowsExempt(seccompRestrictedRun) },
  ],
  overrides: ['seccompProfile_baseline'],
  baselineControl: (f) => (f.pss.clauses?.includes('explicit') === true ? 'seccompProfile_baseline' : undefined),
  format: (fs) => {
    const explicit = fs.filter(hasClause('explicit'));
    if (explicit.length > 0) return { reason: 'seccompProfile', detail: seccompExplicitDetail(explicit) };
    return {
      reason: 'seccompProfile',
      detail: `pod or ${containersPhrase(containerNames(fs, 'implicit'))} must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost"`,
    };
  },
};

const SYSCTLS_1_0 = [
  'kernel.shm_rmid_forced',
  'net.ipv4.ip_local_port_range',
  'net.ipv4.tcp_syncookies',
  'net.ipv4.ping_group_range',
  'net.ipv4.ip_unprivileged_port_start',
];
const SYSCTLS_1_27 = [...SYSCTLS_1_0, 'net.ipv4.ip_local_reserved_ports'];
const SYSCTLS_1_29 = [
  ...SYSCTLS_1_27,
  'net.ipv4.tcp_keepalive_time',
  'net.ipv4.tcp_fin_timeout',
  'net.ipv4.tcp_keepalive_intvl',
  'net.ipv4.tcp_keepalive_probes',
];
const SYSCTLS_1_32 = [...SYSCTLS_1_29, 'net.ipv4.tcp_rmem', 'net.ipv4.tcp_wmem'];
const SYSCTLS_1_37 = [...SYSCTLS_1_32, 'net.ipv4.tcp_slow_start_after_idle', 'net.ipv4.tcp_notsent_lowat'];

function sysctlsRun(allowedNames: readonly string[]): Run {
  const allowed = new Set(allowedNames);
  return (pod) => {
    const names = list(pod.podSc?.sysctls)
      .map((s) => str(obj(s)?.name))
      .filter((name) => !allowed.has(name));
    return names.length > 0 ? [podLevel({ values: names })] : [];
  };
}

const sysctls: Check = {
  id: 'sysctls',
  level: 'baseline',
  versions: [
    { min: 0, run: sysctlsRun(SYSCTLS_1_0) },
    { min: 27, run: sysctlsRun(SYSCTLS_1_27) },
    { min: 29, run: sysctlsRun(SYSCTLS_1_29) },
    { min: 32, run: sysctlsRun(SYSCTLS_1_32) },
    { min: 37, run: sysctlsRun(SYSCTLS_1_37) },
  ],
  format: (fs) => ({ reason: 'forbidden sysctls', detail: allValues(fs).join(', ') }),
};

function hostProcess(sc: Json | undefined): boolean {
  const value = obj(sc?.windowsOptions)?.hostProcess;
  return isSet(value) && value !== false;
}

const windowsHostProcess: Check = {
  id: 'windowsHostProcess',
  level: 'baseline',
  versions: [
    {
      min: 0,
      run: (pod) => {
        const out: Draft[] = hostProcess(pod.podSc) ? [podLevel()] : [];
        for (const c of pod.containers) if (hostProcess(c.sc)) out.push(container(c));
        return out;
      },
    },
  ],
  format: (fs) => ({ reason: 'hostProcess', detail: `${settersPhrase(fs)} must not set securityContext.windowsOptions.hostProcess=true` }),
};

const CHECKS: readonly Check[] = [
  privileged,
  hostNamespaces,
  hostPathVolumes,
  hostPorts,
  capabilitiesBaseline,
  capabilitiesRestricted,
  allowPrivilegeEscalation,
  appArmorProfile,
  hostProbesAndHostLifecycle,
  procMount,
  procMountRestricted,
  restrictedVolumes,
  runAsNonRoot,
  runAsUser,
  seLinuxOptions,
  seccompProfileBaseline,
  seccompProfileRestricted,
  sysctls,
  windowsHostProcess,
];

const CHECK_BY_ID = new Map(CHECKS.map((c) => [c.id, c]));

/** PSA's order of checks in a message: baseline ids sorted, then restricted ids sorted. */
const ORDER = CHECKS.map((c) => c.id).sort((a, b) => levelRank(a) - levelRank(b) || byCodeUnit(a, b));

function levelRank(id: string): number {
  return CHECK_BY_ID.get(id)?.level === 'baseline' ? 0 : 1;
}

/** Every PSS control id (PSA's check ids), in PSA's message order: what an exception may name. */
export const PSS_CONTROLS: readonly string[] = ORDER;

interface Active {
  readonly check: Check;
  readonly run: Run;
}

/** For each minor version and level, the checks that apply, in message order (computed once). */
const TABLES: ReadonlyArray<{ readonly baseline: readonly Active[]; readonly restricted: readonly Active[] }> = PSS_VERSIONS.map((_, minor) => {
  const active = (check: Check): Active | undefined => {
    let run: Run | undefined;
    for (const v of check.versions) if (v.min <= minor) run = v.run;
    return run === undefined ? undefined : { check, run };
  };
  const ordered = ORDER.map((id) => CHECK_BY_ID.get(id)).filter((c): c is Check => c !== undefined);
  const baseline = ordered.filter((c) => c.level === 'baseline').flatMap((c) => active(c) ?? []);
  const restrictedOnly = ordered.filter((c) => c.level === 'restricted').flatMap((c) => active(c) ?? []);
  const overridden = new Set(restrictedOnly.flatMap((a) => a.check.overrides ?? []));
  const restricted = ordered.flatMap((c) => {
    if (c.level === 'baseline' && overridden.has(c.id)) return [];
    return active(c) ?? [];
  });
  return { baseline, restricted };
});

function render(text: Text): string {
  return text.detail === '' ? text.reason : `${text.reason} (${text.detail})`;
}

function violation(check: Check, draft: Draft, order: number): Violation {
  const message = render(check.format([draft]));
  const baselineControl = check.baselineControl?.(draft);
  const pss: PssFinding = { ...draft.pss, ...(baselineControl === undefined ? {} : { baselineControl }), order };
  return draft.container === undefined ? { control: check.id, message, pss } : { control: check.id, message, container: draft.container, pss };
}

function levelOf(level: unknown): PssLevel {
  if (level === 'privileged' || level === 'baseline' || level === 'restricted') return level;
  throw new WritError('ERR_PSS_LEVEL_INVALID', `pod security level ${JSON.stringify(String(level).slice(0, 40))} is not privileged, baseline or restricted`);
}

/**
 * Every finding of the pod under `level:version`, in PSA's order: one Violation per container (or
 * pod field, volume, annotation), each with a message in PSA's form for that one.
 * @example checkPodSecurity(pod, 'restricted', 'latest')[0]?.message
 *   // 'allowPrivilegeEscalation != false (container "app" must set securityContext.allowPrivilegeEscalation=false)'
 */
export function checkPodSecurity(pod: PodLike, level: PssLevel, version: string): Violation[] {
  if (levelOf(level) === 'privileged') {
    resolvePssVersion(version);
    return [];
  }
  const table = TABLES[resolvePssVersion(version).minor];
  if (table === undefined) return [];
  const podView = view(pod);
  const out: Violation[] = [];
  for (const { check, run } of level === 'baseline' ? table.baseline : table.restricted) {
    for (const draft of run(podView)) out.push(violation(check, draft, out.length));
  }
  return out;
}

/**
 * PSA's aggregated detail of the PSS findings given (others are ignored), e.g.
 * `allowPrivilegeEscalation != false (containers "a", "b" must set ...), unrestricted capabilities (...)`;
 * '' when none is left.
 */
export function podSecurityDetail(violations: readonly Violation[]): string {
  const byControl = new Map<string, Draft[]>();
  const ordered = [...violations].sort((a, b) => (a.pss?.order ?? 0) - (b.pss?.order ?? 0));
  for (const v of ordered) {
    if (v.pss === undefined || !CHECK_BY_ID.has(v.control)) continue;
    const drafts = byControl.get(v.control) ?? [];
    drafts.push(v.container === undefined ? { pss: v.pss } : { container: v.container, pss: v.pss });
    byControl.set(v.control, drafts);
  }
  const parts: string[] = [];
  for (const id of ORDER) {
    const drafts = byControl.get(id);
    const check = CHECK_BY_ID.get(id);
    if (drafts !== undefined && check !== undefined) parts.push(render(check.format(drafts)));
  }
  return parts.join(', ');
}

/**
 * PSA's deny text for what remains of the findings (after exceptions waived some):
 * `violates PodSecurity "restricted:latest": allowPrivilegeEscalation != false (...)`; '' when none is left.
 * Warnings read `would ${podSecurityMessage(...)}`, as PSA's do.
 */
export function podSecurityMessage(violations: readonly Violation[], level: PssLevel, version: string): string {
  const detail = podSecurityDetail(violations);
  if (detail === '') return '';
  return `violates PodSecurity "${levelOf(level)}:${resolvePssVersion(version).label}": ${detail}`;
}
