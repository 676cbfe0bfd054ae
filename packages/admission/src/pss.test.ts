import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { isWritError } from '@writ/spiffe';
import { ADMISSION_ERROR_CODES } from './errors.ts';
import { PSS_CONTROLS, PSS_VERSIONS, checkPodSecurity, podSecurityDetail, podSecurityMessage, resolvePssVersion } from './pss.ts';
import type { PodLike, PssLevel } from './types.ts';

type Json = Record<string, unknown>;

const IMAGE = 'registry.example.com/team/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef';
/** A container securityContext that passes every restricted check. */
const SC: Json = { allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] } };
/** A pod securityContext that passes every restricted check. */
const POD_SC: Json = { runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' } };

function ctr(name: string, securityContext: Json = SC, extra: Json = {}): Json {
  return { name, image: IMAGE, securityContext, ...extra };
}

/** A pod that passes restricted at every version, with `spec` fields replaced. */
function pod(spec: Json = {}, annotations?: Record<string, string>): PodLike {
  return {
    metadata: { name: 'p', namespace: 'prod', ...(annotations === undefined ? {} : { annotations }) },
    spec: { securityContext: POD_SC, containers: [ctr('app')], ...spec },
  };
}

function messages(p: PodLike, level: PssLevel, version: string): string[] {
  return checkPodSecurity(p, level, version).map((v) => v.message);
}

/** Asserts the messages at each version given (an empty list: the pod passes there). */
function expectAt(p: PodLike, level: PssLevel, expected: Record<string, string[]>): void {
  for (const [version, want] of Object.entries(expected)) assert.deepEqual(messages(p, level, version), want, `${level}:${version}`);
}

describe('policy versions', () => {
  it('lists every version from v1.0 to the newest a check defines, and latest acts as the newest', () => {
    assert.equal(PSS_VERSIONS[0], 'v1.0');
    assert.equal(PSS_VERSIONS.at(-1), 'v1.37');
    assert.equal(PSS_VERSIONS.length, 38);
    assert.deepEqual(resolvePssVersion('latest'), { label: 'latest', minor: 37 });
    assert.deepEqual(resolvePssVersion('v1.24'), { label: 'v1.24', minor: 24 });
  });

  it('a version above the newest known acts as the newest, keeping its own label (as PSA does)', () => {
    assert.deepEqual(resolvePssVersion('v1.99'), { label: 'v1.99', minor: 37 });
    const p = pod({ securityContext: { ...POD_SC, sysctls: [{ name: 'net.ipv4.tcp_notsent_lowat', value: '1' }] } });
    assert.deepEqual(messages(p, 'baseline', 'v1.99'), []);
    assert.deepEqual(messages(p, 'baseline', 'v1.36'), ['forbidden sysctls (net.ipv4.tcp_notsent_lowat)']);
  });

  it('refuses malformed versions with ERR_PSS_VERSION_INVALID', () => {
    for (const bad of ['v1.01', 'v2.0', '1.25', 'v1.', 'v1', 'Latest', 'latest ', '', 'v1.2x', 'v1.9999999999999']) {
      assert.throws(
        () => resolvePssVersion(bad),
        (e) => isWritError(e, 'ERR_PSS_VERSION_INVALID'),
        bad,
      );
      assert.throws(
        () => checkPodSecurity(pod(), 'restricted', bad),
        (e) => isWritError(e, 'ERR_PSS_VERSION_INVALID'),
        bad,
      );
    }
    assert.throws(
      () => checkPodSecurity(pod(), 'privileged', 'v9'),
      (e) => isWritError(e, 'ERR_PSS_VERSION_INVALID'),
    );
    assert.ok(ADMISSION_ERROR_CODES.includes('ERR_PSS_VERSION_INVALID'));
  });

  it('refuses an unknown level with ERR_PSS_LEVEL_INVALID', () => {
    assert.throws(
      () => checkPodSecurity(pod(), 'strict' as PssLevel, 'latest'),
      (e) => isWritError(e, 'ERR_PSS_LEVEL_INVALID'),
    );
    assert.ok(ADMISSION_ERROR_CODES.includes('ERR_PSS_LEVEL_INVALID'));
  });

  it('names every control with PSA check ids, baseline ones first, each group sorted', () => {
    assert.deepEqual(PSS_CONTROLS, [
      'appArmorProfile',
      'capabilities_baseline',
      'hostNamespaces',
      'hostPathVolumes',
      'hostPorts',
      'hostProbesAndHostLifecycle',
      'privileged',
      'procMount',
      'seLinuxOptions',
      'seccompProfile_baseline',
      'sysctls',
      'windowsHostProcess',
      'allowPrivilegeEscalation',
      'capabilities_restricted',
      'procMount_restricted',
      'restrictedVolumes',
      'runAsNonRoot',
      'runAsUser',
      'seccompProfile_restricted',
    ]);
  });
});

describe('the restricted base pod', () => {
  it('passes every level at every version, and privileged never reports anything', () => {
    for (const version of [...PSS_VERSIONS, 'latest']) {
      assert.deepEqual(messages(pod(), 'restricted', version), [], version);
      assert.deepEqual(messages(pod(), 'baseline', version), [], version);
    }
    const worst = pod({ hostNetwork: true, containers: [ctr('app', { privileged: true })] });
    assert.deepEqual(messages(worst, 'privileged', 'latest'), []);
  });

  it('an empty pod (no containers) passes restricted; one without a spec too', () => {
    assert.deepEqual(messages({ metadata: { name: 'e' }, spec: { containers: [] } }, 'restricted', 'latest'), []);
    assert.deepEqual(messages({}, 'restricted', 'latest'), []);
  });
});

describe('baseline checks', () => {
  it('privileged: in init, regular and ephemeral containers; false and unset are allowed', () => {
    const p = pod({
      initContainers: [ctr('init', { ...SC, privileged: true })],
      containers: [ctr('app', { ...SC, privileged: false }), ctr('side')],
      ephemeralContainers: [ctr('debug', { ...SC, privileged: true })],
    });
    expectAt(p, 'baseline', {
      'v1.0': [
        'privileged (container "init" must not set securityContext.privileged=true)',
        'privileged (container "debug" must not set securityContext.privileged=true)',
      ],
    });
    assert.equal(
      podSecurityMessage(checkPodSecurity(p, 'baseline', 'latest'), 'baseline', 'latest'),
      'violates PodSecurity "baseline:latest": privileged (containers "init", "debug" must not set securityContext.privileged=true)',
    );
    assert.deepEqual(
      checkPodSecurity(p, 'baseline', 'latest').map((v) => [v.control, v.container]),
      [
        ['privileged', 'init'],
        ['privileged', 'debug'],
      ],
    );
  });

  it('hostNamespaces: hostNetwork, hostPID, hostIPC in one pod-level finding', () => {
    expectAt(pod({ hostNetwork: true, hostIPC: true, hostPID: false }), 'baseline', { 'v1.0': ['host namespaces (hostNetwork=true, hostIPC=true)'] });
    expectAt(pod({ hostPID: true }), 'restricted', { latest: ['host namespaces (hostPID=true)'] });
    const [v] = checkPodSecurity(pod({ hostPID: true }), 'baseline', 'latest');
    assert.equal(v?.container, undefined);
  });

  it('hostPathVolumes: one finding per volume; replaced by restrictedVolumes at restricted', () => {
    const p = pod({
      volumes: [
        { name: 'a', hostPath: { path: '/var' } },
        { name: 'ok', emptyDir: {} },
        { name: 'b', hostPath: { path: '/etc' } },
      ],
    });
    expectAt(p, 'baseline', { latest: ['hostPath volumes (volume "a")', 'hostPath volumes (volume "b")'] });
    assert.equal(podSecurityDetail(checkPodSecurity(p, 'baseline', 'latest')), 'hostPath volumes (volumes "a", "b")');
    assert.deepEqual(
      checkPodSecurity(p, 'restricted', 'latest').map((v) => v.control),
      ['restrictedVolumes', 'restrictedVolumes'],
    );
  });

  it('hostPorts: ports across containers, sorted as PSA sorts them; 0 is allowed', () => {
    const p = pod({
      containers: [
        ctr('a', SC, {
          ports: [
            { containerPort: 8080, hostPort: 8080 },
            { containerPort: 80, hostPort: 80 },
          ],
        }),
        ctr('b', SC, { ports: [{ containerPort: 80, hostPort: 80 }] }),
        ctr('c', SC, { ports: [{ containerPort: 90, hostPort: 0 }, { containerPort: 91 }] }),
      ],
    });
    expectAt(p, 'baseline', { 'v1.0': ['hostPort (container "a" uses hostPorts 80, 8080)', 'hostPort (container "b" uses hostPort 80)'] });
    assert.equal(podSecurityDetail(checkPodSecurity(p, 'baseline', 'latest')), 'hostPort (containers "a", "b" use hostPorts 80, 8080)');
  });

  it('capabilities_baseline: only the default set may be added', () => {
    const p = pod({
      containers: [
        ctr('a', { capabilities: { add: ['CHOWN', 'NET_RAW', 'SYS_ADMIN'] } }),
        ctr('b', { capabilities: { add: ['KILL', 'NET_BIND_SERVICE', 'SETFCAP'] } }),
        ctr('c', { capabilities: { add: ['NET_ADMIN'] } }),
      ],
    });
    expectAt(p, 'baseline', {
      latest: [
        'non-default capabilities (container "a" must not include "NET_RAW", "SYS_ADMIN" in securityContext.capabilities.add)',
        'non-default capabilities (container "c" must not include "NET_ADMIN" in securityContext.capabilities.add)',
      ],
    });
    assert.equal(
      podSecurityDetail(checkPodSecurity(p, 'baseline', 'latest')),
      'non-default capabilities (containers "a", "c" must not include "NET_ADMIN", "NET_RAW", "SYS_ADMIN" in securityContext.capabilities.add)',
    );
  });

  it('appArmorProfile: the field types at pod and container level, and the beta annotations', () => {
    const fields = pod({
      securityContext: { ...POD_SC, appArmorProfile: { type: 'Unconfined' } },
      containers: [
        ctr('a', { ...SC, appArmorProfile: { type: 'Localhost', localhostProfile: 'k8s-x' } }),
        ctr('b', { ...SC, appArmorProfile: { type: 'Unconfined' } }),
      ],
    });
    expectAt(fields, 'baseline', {
      'v1.0': [
        'forbidden AppArmor profile (pod must not set AppArmor profile type to "Unconfined")',
        'forbidden AppArmor profile (container "b" must not set AppArmor profile type to "Unconfined")',
      ],
    });
    assert.equal(
      podSecurityDetail(checkPodSecurity(fields, 'baseline', 'latest')),
      'forbidden AppArmor profile (pod and container "b" must not set AppArmor profile type to "Unconfined")',
    );
    const annotated = pod(
      {},
      {
        'container.apparmor.security.beta.kubernetes.io/app': 'unconfined',
        'container.apparmor.security.beta.kubernetes.io/b': 'localhost/custom',
        'container.apparmor.security.beta.kubernetes.io/c': 'runtime/default',
        'container.apparmor.security.beta.kubernetes.io/d': '',
        'container.apparmor.security.beta.kubernetes.io/e': 'docker/default',
      },
    );
    expectAt(annotated, 'baseline', {
      latest: [
        'forbidden AppArmor profile (annotation must not set AppArmor profile type to "container.apparmor.security.beta.kubernetes.io/app="unconfined"")',
        'forbidden AppArmor profile (annotation must not set AppArmor profile type to "container.apparmor.security.beta.kubernetes.io/e="docker/default"")',
      ],
    });
    assert.equal(
      podSecurityDetail(checkPodSecurity(annotated, 'baseline', 'latest')),
      'forbidden AppArmor profiles (annotations must not set AppArmor profile type to "container.apparmor.security.beta.kubernetes.io/app="unconfined"", "container.apparmor.security.beta.kubernetes.io/e="docker/default"")',
    );
  });

  it('annotation values are quoted as Go quotes them (PSA formats them with %q)', () => {
    const p = pod({}, { 'container.apparmor.security.beta.kubernetes.io/app': 'a"b\\c\n\t\x01\u00a0\u00e9\u{1f600}\u200b\ud800' });
    assert.deepEqual(messages(p, 'baseline', 'latest'), [
      'forbidden AppArmor profile (annotation must not set AppArmor profile type to "container.apparmor.security.beta.kubernetes.io/app="a\\"b\\\\c\\n\\t\\x01\\u00a0\u00e9\u{1f600}\\u200b\ufffd"")',
    ]);
  });

  it('hostProbesAndHostLifecycle: from v1.34, probe and lifecycle hosts, containers sorted', () => {
    const p = pod({
      containers: [
        ctr('z', SC, { livenessProbe: { httpGet: { host: 'example.com', port: 80 } }, lifecycle: { preStop: { tcpSocket: { host: '10.0.0.1', port: 1 } } } }),
        ctr('a', SC, { readinessProbe: { tcpSocket: { host: 'example.com', port: 80 } } }),
        ctr('ok', SC, { startupProbe: { httpGet: { host: '', port: 80 } }, lifecycle: { postStart: { httpGet: { port: 80 } } } }),
      ],
    });
    expectAt(p, 'baseline', {
      'v1.33': [],
      'v1.34': [
        'probe or lifecycle host (container "z" uses probe or lifecycle hosts "10.0.0.1", "example.com")',
        'probe or lifecycle host (container "a" uses probe or lifecycle host "example.com")',
      ],
    });
    assert.equal(
      podSecurityDetail(checkPodSecurity(p, 'restricted', 'latest')),
      'probe or lifecycle host (containers "a", "z" use probe or lifecycle hosts "10.0.0.1", "example.com")',
    );
  });

  it('procMount: Default or unset; any value in a user namespace (hostUsers: false) from v1.35 at baseline only', () => {
    const p = pod({ containers: [ctr('a', { ...SC, procMount: 'Unmasked' }), ctr('b', { ...SC, procMount: 'Default' })] });
    expectAt(p, 'baseline', { 'v1.0': ['procMount (container "a" must not set securityContext.procMount to "Unmasked")'] });
    const userNs = pod({ hostUsers: false, containers: [ctr('a', { ...SC, procMount: 'Unmasked' })] });
    expectAt(userNs, 'baseline', { 'v1.34': ['procMount (container "a" must not set securityContext.procMount to "Unmasked")'], 'v1.35': [] });
    assert.deepEqual(
      checkPodSecurity(userNs, 'restricted', 'v1.35').map((v) => [v.control, v.message]),
      [['procMount_restricted', 'procMount (container "a" must not set securityContext.procMount to "Unmasked")']],
    );
    assert.deepEqual(
      checkPodSecurity(userNs, 'restricted', 'v1.34').map((v) => v.control),
      ['procMount'],
    );
  });

  it('seLinuxOptions: allowed types (container_engine_t from v1.31), user and role never', () => {
    const engine = pod({ containers: [ctr('a', { ...SC, seLinuxOptions: { type: 'container_engine_t' } })] });
    expectAt(engine, 'baseline', {
      'v1.30': ['seLinuxOptions (container "a" set forbidden securityContext.seLinuxOptions: type "container_engine_t")'],
      'v1.31': [],
    });
    const p = pod({
      securityContext: { ...POD_SC, seLinuxOptions: { type: 'foo', user: 'u', role: 'r' } },
      containers: [
        ctr('e', { ...SC, seLinuxOptions: { type: 'bar' } }),
        ctr('f', { ...SC, seLinuxOptions: { type: 'container_t', level: 's0:c123,c456' } }),
        ctr('g', { ...SC, seLinuxOptions: { user: 'u' } }),
      ],
    });
    expectAt(p, 'baseline', {
      latest: [
        'seLinuxOptions (pod set forbidden securityContext.seLinuxOptions: type "foo"; user may not be set; role may not be set)',
        'seLinuxOptions (container "e" set forbidden securityContext.seLinuxOptions: type "bar")',
        'seLinuxOptions (container "g" set forbidden securityContext.seLinuxOptions: user may not be set)',
      ],
    });
    assert.equal(
      podSecurityDetail(checkPodSecurity(p, 'baseline', 'latest')),
      'seLinuxOptions (pod and containers "e", "g" set forbidden securityContext.seLinuxOptions: types "bar", "foo"; user may not be set; role may not be set)',
    );
  });

  it('seccompProfile_baseline: the alpha annotations up to v1.18, the fields from v1.19', () => {
    const annotated = pod(
      { containers: [ctr('a'), ctr('b')] },
      {
        'seccomp.security.alpha.kubernetes.io/pod': 'unconfined',
        'container.seccomp.security.alpha.kubernetes.io/a': 'docker/default',
        'container.seccomp.security.alpha.kubernetes.io/b': 'unconfined',
        'container.seccomp.security.alpha.kubernetes.io/zz': 'unconfined',
      },
    );
    expectAt(annotated, 'baseline', {
      'v1.18': [
        'seccompProfile (forbidden annotation seccomp.security.alpha.kubernetes.io/pod="unconfined")',
        'seccompProfile (forbidden annotation container.seccomp.security.alpha.kubernetes.io/b="unconfined")',
      ],
      'v1.19': [],
    });
    assert.equal(
      podSecurityDetail(checkPodSecurity(annotated, 'baseline', 'v1.0')),
      'seccompProfile (forbidden annotations container.seccomp.security.alpha.kubernetes.io/b="unconfined", seccomp.security.alpha.kubernetes.io/pod="unconfined")',
    );
    const fields = pod({
      securityContext: { seccompProfile: { type: 'Unconfined' } },
      containers: [ctr('a', { seccompProfile: { type: 'Unconfined' } }), ctr('b', { seccompProfile: { type: 'Localhost' } })],
    });
    expectAt(fields, 'baseline', {
      'v1.18': [],
      'v1.19': [
        'seccompProfile (pod must not set securityContext.seccompProfile.type to "Unconfined")',
        'seccompProfile (container "a" must not set securityContext.seccompProfile.type to "Unconfined")',
      ],
    });
  });

  it('sysctls: the allowed list grows at v1.27, v1.29, v1.32 and v1.37', () => {
    const at = (name: string) => pod({ securityContext: { ...POD_SC, sysctls: [{ name, value: '1' }] } });
    const boundaries: Array<[string, string]> = [
      ['net.ipv4.ip_local_reserved_ports', 'v1.27'],
      ['net.ipv4.tcp_keepalive_time', 'v1.29'],
      ['net.ipv4.tcp_fin_timeout', 'v1.29'],
      ['net.ipv4.tcp_keepalive_intvl', 'v1.29'],
      ['net.ipv4.tcp_keepalive_probes', 'v1.29'],
      ['net.ipv4.tcp_rmem', 'v1.32'],
      ['net.ipv4.tcp_wmem', 'v1.32'],
      ['net.ipv4.tcp_slow_start_after_idle', 'v1.37'],
      ['net.ipv4.tcp_notsent_lowat', 'v1.37'],
    ];
    for (const [name, from] of boundaries) {
      const before = `v1.${Number(from.slice(3)) - 1}`;
      expectAt(at(name), 'baseline', { [before]: [`forbidden sysctls (${name})`], [from]: [], latest: [] });
    }
    for (const name of [
      'kernel.shm_rmid_forced',
      'net.ipv4.ip_local_port_range',
      'net.ipv4.tcp_syncookies',
      'net.ipv4.ping_group_range',
      'net.ipv4.ip_unprivileged_port_start',
    ]) {
      expectAt(at(name), 'baseline', { 'v1.0': [], latest: [] });
    }
    const many = pod({ securityContext: { ...POD_SC, sysctls: [{ name: 'kernel.msgmax' }, { name: 'kernel.shm_rmid_forced' }, { name: 'vm.swappiness' }] } });
    expectAt(many, 'restricted', { latest: ['forbidden sysctls (kernel.msgmax, vm.swappiness)'] });
  });

  it('windowsHostProcess: pod and containers', () => {
    const p = pod({
      securityContext: { ...POD_SC, windowsOptions: { hostProcess: true } },
      containers: [ctr('a', { ...SC, windowsOptions: { hostProcess: true } }), ctr('b', { ...SC, windowsOptions: { hostProcess: false } })],
    });
    expectAt(p, 'baseline', {
      'v1.0': [
        'hostProcess (pod must not set securityContext.windowsOptions.hostProcess=true)',
        'hostProcess (container "a" must not set securityContext.windowsOptions.hostProcess=true)',
      ],
    });
    assert.equal(
      podSecurityDetail(checkPodSecurity(p, 'baseline', 'latest')),
      'hostProcess (pod and container "a" must not set securityContext.windowsOptions.hostProcess=true)',
    );
  });
});

describe('restricted checks', () => {
  it('allowPrivilegeEscalation: from v1.8, must be false (unset fails); Windows pods exempt from v1.25', () => {
    const p = pod({ containers: [ctr('a', { capabilities: { drop: ['ALL'] } }), ctr('b', { ...SC, allowPrivilegeEscalation: true })] });
    expectAt(p, 'restricted', {
      'v1.7': [],
      'v1.8': [
        'allowPrivilegeEscalation != false (container "a" must set securityContext.allowPrivilegeEscalation=false)',
        'allowPrivilegeEscalation != false (container "b" must set securityContext.allowPrivilegeEscalation=false)',
      ],
    });
    expectAt(p, 'baseline', { latest: [] });
    const windows = pod({ os: { name: 'windows' }, containers: [ctr('a', { capabilities: { drop: ['ALL'] } })] });
    expectAt(windows, 'restricted', {
      'v1.24': ['allowPrivilegeEscalation != false (container "a" must set securityContext.allowPrivilegeEscalation=false)'],
      'v1.25': [],
    });
  });

  it('capabilities_restricted: from v1.22 drop ALL and add nothing but NET_BIND_SERVICE; before, the baseline list', () => {
    const p = pod({
      containers: [
        ctr('a', { allowPrivilegeEscalation: false }),
        ctr('b', { allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'], add: ['NET_BIND_SERVICE', 'CHOWN'] } }),
        ctr('c', { allowPrivilegeEscalation: false, capabilities: { drop: ['NET_RAW'], add: ['NET_BIND_SERVICE'] } }),
        ctr('d', { allowPrivilegeEscalation: false, capabilities: { add: ['NET_RAW'] } }),
      ],
    });
    expectAt(p, 'restricted', {
      'v1.21': ['non-default capabilities (container "d" must not include "NET_RAW" in securityContext.capabilities.add)'],
      'v1.22': [
        'unrestricted capabilities (container "a" must set securityContext.capabilities.drop=["ALL"])',
        'unrestricted capabilities (container "b" must not include "CHOWN" in securityContext.capabilities.add)',
        'unrestricted capabilities (container "c" must set securityContext.capabilities.drop=["ALL"])',
        'unrestricted capabilities (container "d" must set securityContext.capabilities.drop=["ALL"]; container "d" must not include "NET_RAW" in securityContext.capabilities.add)',
      ],
    });
    assert.equal(
      podSecurityDetail(checkPodSecurity(p, 'restricted', 'latest')),
      'unrestricted capabilities (containers "a", "c", "d" must set securityContext.capabilities.drop=["ALL"]; containers "b", "d" must not include "CHOWN", "NET_RAW" in securityContext.capabilities.add)',
    );
    const windows = pod({ os: { name: 'windows' }, containers: [ctr('a', { allowPrivilegeEscalation: false, capabilities: { add: ['SYS_ADMIN'] } })] });
    expectAt(windows, 'restricted', {
      'v1.24': [
        'unrestricted capabilities (container "a" must set securityContext.capabilities.drop=["ALL"]; container "a" must not include "SYS_ADMIN" in securityContext.capabilities.add)',
      ],
      // Windows pods are exempt, and the restricted check still replaces the baseline one.
      'v1.25': [],
    });
  });

  it('restrictedVolumes: the allowed inline sources only; a volume without a source is an emptyDir', () => {
    const p = pod({
      volumes: [
        { name: 'cm', configMap: { name: 'x' } },
        { name: 'pvc', persistentVolumeClaim: { claimName: 'x' } },
        { name: 'img', image: { reference: IMAGE } },
        { name: 'plain' },
        { name: 'n', nfs: { server: 'nfs', path: '/' } },
        { name: 'h', hostPath: { path: '/' } },
        { name: 'new', futureVolume: {} },
      ],
    });
    expectAt(p, 'restricted', {
      'v1.0': [
        'restricted volume types (volume "n" uses restricted volume type "nfs")',
        'restricted volume types (volume "h" uses restricted volume type "hostPath")',
        'restricted volume types (volume "new" uses restricted volume type "unknown")',
      ],
    });
    assert.equal(
      podSecurityDetail(checkPodSecurity(p, 'restricted', 'latest')),
      'restricted volume types (volumes "n", "h", "new" use restricted volume types "hostPath", "nfs", "unknown")',
    );
    expectAt(p, 'baseline', { latest: ['hostPath volumes (volume "h")'] });
  });

  it('runAsNonRoot: explicit false is reported before containers that set nothing; user namespaces exempt from v1.35', () => {
    const implicit = pod({
      securityContext: { seccompProfile: { type: 'RuntimeDefault' } },
      containers: [ctr('a'), ctr('b', { ...SC, runAsNonRoot: true }), ctr('c')],
    });
    expectAt(implicit, 'restricted', {
      'v1.0': [
        'runAsNonRoot != true (pod or container "a" must set securityContext.runAsNonRoot=true)',
        'runAsNonRoot != true (pod or container "c" must set securityContext.runAsNonRoot=true)',
      ],
    });
    assert.equal(
      podSecurityDetail(checkPodSecurity(implicit, 'restricted', 'latest')),
      'runAsNonRoot != true (pod or containers "a", "c" must set securityContext.runAsNonRoot=true)',
    );
    const explicit = pod({ securityContext: { ...POD_SC, runAsNonRoot: false }, containers: [ctr('a'), ctr('b', { ...SC, runAsNonRoot: false })] });
    const found = checkPodSecurity(explicit, 'restricted', 'latest');
    assert.equal(podSecurityDetail(found), 'runAsNonRoot != true (pod and container "b" must not set securityContext.runAsNonRoot=false)');
    // Waive the explicit ones (an exception for them) and the implicit container shows, as PSA would then say.
    const rest = found.filter((v) => v.pss?.clauses?.includes('explicit') !== true);
    assert.equal(podSecurityDetail(rest), 'runAsNonRoot != true (pod or container "a" must set securityContext.runAsNonRoot=true)');
    const userNs = pod({ hostUsers: false, securityContext: { seccompProfile: { type: 'RuntimeDefault' } } });
    expectAt(userNs, 'restricted', { 'v1.34': ['runAsNonRoot != true (pod or container "app" must set securityContext.runAsNonRoot=true)'], 'v1.35': [] });
  });

  it('runAsUser: from v1.23, 0 at pod or container level; user namespaces exempt from v1.35', () => {
    const p = pod({ securityContext: { ...POD_SC, runAsUser: 0 }, containers: [ctr('a', { ...SC, runAsUser: 0 }), ctr('b', { ...SC, runAsUser: 1000 })] });
    expectAt(p, 'restricted', {
      'v1.22': [],
      'v1.23': ['runAsUser=0 (pod must not set runAsUser=0)', 'runAsUser=0 (container "a" must not set runAsUser=0)'],
      'v1.35': ['runAsUser=0 (pod must not set runAsUser=0)', 'runAsUser=0 (container "a" must not set runAsUser=0)'],
    });
    assert.equal(podSecurityDetail(checkPodSecurity(p, 'restricted', 'latest')), 'runAsUser=0 (pod and container "a" must not set runAsUser=0)');
    expectAt(pod({ hostUsers: false, securityContext: { ...POD_SC, runAsUser: 0 } }), 'restricted', {
      'v1.34': ['runAsUser=0 (pod must not set runAsUser=0)'],
      'v1.35': [],
    });
  });

  it('seccompProfile_restricted: from v1.19 required (pod or each container); Windows pods exempt from v1.25', () => {
    const none = pod({ securityContext: { runAsNonRoot: true } });
    expectAt(none, 'restricted', {
      'v1.18': [],
      'v1.19': ['seccompProfile (pod or container "app" must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")'],
    });
    const perContainer = pod({
      securityContext: { runAsNonRoot: true },
      containers: [ctr('a', { ...SC, seccompProfile: { type: 'Localhost', localhostProfile: 'p.json' } })],
    });
    expectAt(perContainer, 'restricted', { latest: [] });
    const explicit = pod({
      securityContext: { runAsNonRoot: true, seccompProfile: { type: 'Unconfined' } },
      containers: [ctr('a'), ctr('b', { ...SC, seccompProfile: { type: 'RuntimeDefault' } })],
    });
    expectAt(explicit, 'restricted', {
      latest: [
        'seccompProfile (pod must not set securityContext.seccompProfile.type to "Unconfined")',
        'seccompProfile (pod or container "a" must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")',
      ],
    });
    // PSA names only the explicit setter while there is one.
    assert.equal(
      podSecurityDetail(checkPodSecurity(explicit, 'restricted', 'latest')),
      'seccompProfile (pod must not set securityContext.seccompProfile.type to "Unconfined")',
    );
    // Without the explicit one, the container that relies on the (invalid) pod value shows.
    const rest = checkPodSecurity(explicit, 'restricted', 'latest').filter((v) => v.pss?.setter !== 'pod');
    assert.equal(
      podSecurityDetail(rest),
      'seccompProfile (pod or container "a" must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")',
    );
    const windows = pod({ os: { name: 'windows' }, securityContext: { runAsNonRoot: true } });
    expectAt(windows, 'restricted', {
      'v1.24': ['seccompProfile (pod or container "app" must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")'],
      'v1.25': [],
    });
    // A Linux pod stays checked.
    expectAt(pod({ os: { name: 'linux' }, securityContext: { runAsNonRoot: true } }), 'restricted', {
      'v1.25': ['seccompProfile (pod or container "app" must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")'],
    });
  });
});

describe('every version', () => {
  /** Per control: a pod that fails only it, the level, and the versions it fails at. */
  const sweep: Array<[string, PssLevel, PodLike, number, number?]> = [
    ['privileged', 'baseline', pod({ containers: [ctr('a', { ...SC, privileged: true })] }), 0],
    ['hostNamespaces', 'baseline', pod({ hostIPC: true }), 0],
    ['hostPathVolumes', 'baseline', pod({ volumes: [{ name: 'h', hostPath: { path: '/' } }] }), 0],
    ['hostPorts', 'baseline', pod({ containers: [ctr('a', SC, { ports: [{ containerPort: 1, hostPort: 1 }] })] }), 0],
    ['capabilities_baseline', 'baseline', pod({ containers: [ctr('a', { ...SC, capabilities: { drop: ['ALL'], add: ['SYS_TIME'] } })] }), 0],
    ['appArmorProfile', 'baseline', pod({ containers: [ctr('a', { ...SC, appArmorProfile: { type: 'Unconfined' } })] }), 0],
    ['hostProbesAndHostLifecycle', 'baseline', pod({ containers: [ctr('a', SC, { startupProbe: { tcpSocket: { host: 'h', port: 1 } } })] }), 34],
    ['procMount', 'baseline', pod({ containers: [ctr('a', { ...SC, procMount: 'Unmasked' })] }), 0],
    ['seLinuxOptions', 'baseline', pod({ containers: [ctr('a', { ...SC, seLinuxOptions: { role: 'sysadm_r' } })] }), 0],
    ['seccompProfile_baseline', 'baseline', pod({ securityContext: { runAsNonRoot: true, seccompProfile: { type: 'Unconfined' } } }), 19],
    ['seccompProfile_baseline', 'baseline', pod({}, { 'seccomp.security.alpha.kubernetes.io/pod': 'unconfined' }), 0, 18],
    ['sysctls', 'baseline', pod({ securityContext: { ...POD_SC, sysctls: [{ name: 'kernel.sem', value: '1' }] } }), 0],
    ['windowsHostProcess', 'baseline', pod({ containers: [ctr('a', { ...SC, windowsOptions: { hostProcess: true } })] }), 0],
    ['allowPrivilegeEscalation', 'restricted', pod({ containers: [ctr('a', { capabilities: { drop: ['ALL'] } })] }), 8],
    ['capabilities_restricted', 'restricted', pod({ containers: [ctr('a', { allowPrivilegeEscalation: false })] }), 22],
    ['restrictedVolumes', 'restricted', pod({ volumes: [{ name: 'g', gitRepo: { repository: 'r' } }] }), 0],
    ['runAsNonRoot', 'restricted', pod({ securityContext: { seccompProfile: { type: 'RuntimeDefault' } } }), 0],
    ['runAsUser', 'restricted', pod({ containers: [ctr('a', { ...SC, runAsUser: 0 })] }), 23],
    ['seccompProfile_restricted', 'restricted', pod({ securityContext: { runAsNonRoot: true } }), 19],
  ];

  for (const [control, level, p, from, until = 37] of sweep) {
    it(`${control} fails at ${level} from v1.${from} to v1.${until}, and only there`, () => {
      for (const [minor, version] of PSS_VERSIONS.entries()) {
        const controls = checkPodSecurity(p, level, version).map((v) => v.control);
        const expected = minor >= from && minor <= until ? [control] : [];
        assert.deepEqual(controls, expected, version);
        if (level === 'baseline') assert.equal(checkPodSecurity(p, 'restricted', version).length > 0, expected.length > 0, `restricted:${version}`);
      }
      assert.deepEqual(
        checkPodSecurity(p, level, 'latest').map((v) => v.control),
        until === 37 ? [control] : [],
      );
    });
  }
});

describe('restricted checks that replace baseline ones', () => {
  it("mark the findings that are the replaced baseline control's too, so an exception naming that one waives them", () => {
    const p = pod({
      securityContext: { runAsNonRoot: true, seccompProfile: { type: 'Unconfined' } },
      containers: [ctr('a', { ...SC, procMount: 'Unmasked' }), ctr('b')],
      volumes: [
        { name: 'h', hostPath: { path: '/' } },
        { name: 'n', nfs: { server: 's', path: '/' } },
      ],
    });
    assert.deepEqual(
      checkPodSecurity(p, 'restricted', 'latest').map((v) => [v.control, v.container ?? v.pss?.name ?? 'pod', v.pss?.baselineControl]),
      [
        ['procMount_restricted', 'a', 'procMount'],
        ['restrictedVolumes', 'h', 'hostPathVolumes'],
        ['restrictedVolumes', 'n', undefined],
        ['seccompProfile_restricted', 'pod', 'seccompProfile_baseline'],
        ['seccompProfile_restricted', 'a', undefined],
        ['seccompProfile_restricted', 'b', undefined],
      ],
    );
    // At baseline the same findings are under the baseline controls themselves.
    assert.deepEqual(
      checkPodSecurity(p, 'baseline', 'latest').map((v) => v.control),
      ['hostPathVolumes', 'procMount', 'seccompProfile_baseline'],
    );
  });
});

describe('the aggregated message', () => {
  const bad = pod(
    {
      hostNetwork: true,
      securityContext: { runAsUser: 0 },
      initContainers: [ctr('init', { privileged: true })],
      containers: [
        ctr('a', { allowPrivilegeEscalation: true, capabilities: { add: ['NET_RAW'] } }),
        ctr('b', {}, { ports: [{ containerPort: 80, hostPort: 80 }] }),
      ],
      volumes: [{ name: 'h', hostPath: { path: '/' } }],
    },
    { 'container.apparmor.security.beta.kubernetes.io/a': 'unconfined' },
  );

  it('reads as PSA: checks in its order, containers in visiting order, plurals and quotes', () => {
    assert.equal(
      podSecurityMessage(checkPodSecurity(bad, 'restricted', 'latest'), 'restricted', 'latest'),
      'violates PodSecurity "restricted:latest": ' +
        'forbidden AppArmor profile (annotation must not set AppArmor profile type to "container.apparmor.security.beta.kubernetes.io/a="unconfined""), ' +
        'host namespaces (hostNetwork=true), ' +
        'hostPort (container "b" uses hostPort 80), ' +
        'privileged (container "init" must not set securityContext.privileged=true), ' +
        'allowPrivilegeEscalation != false (containers "init", "a", "b" must set securityContext.allowPrivilegeEscalation=false), ' +
        'unrestricted capabilities (containers "init", "a", "b" must set securityContext.capabilities.drop=["ALL"]; container "a" must not include "NET_RAW" in securityContext.capabilities.add), ' +
        'restricted volume types (volume "h" uses restricted volume type "hostPath"), ' +
        'runAsNonRoot != true (pod or containers "init", "a", "b" must set securityContext.runAsNonRoot=true), ' +
        'runAsUser=0 (pod must not set runAsUser=0), ' +
        'seccompProfile (pod or containers "init", "a", "b" must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")',
    );
    assert.equal(
      podSecurityMessage(checkPodSecurity(bad, 'baseline', 'v1.24'), 'baseline', 'v1.24'),
      'violates PodSecurity "baseline:v1.24": ' +
        'forbidden AppArmor profile (annotation must not set AppArmor profile type to "container.apparmor.security.beta.kubernetes.io/a="unconfined""), ' +
        'non-default capabilities (container "a" must not include "NET_RAW" in securityContext.capabilities.add), ' +
        'host namespaces (hostNetwork=true), hostPath volumes (volume "h"), hostPort (container "b" uses hostPort 80), ' +
        'privileged (container "init" must not set securityContext.privileged=true)',
    );
  });

  it('is rebuilt from what remains after exceptions waive some findings, in any order', () => {
    const all = checkPodSecurity(bad, 'restricted', 'latest');
    const waived = all.filter((v) => v.container !== 'init' && v.control !== 'hostNamespaces' && v.control !== 'appArmorProfile').reverse();
    assert.equal(
      podSecurityMessage(waived, 'restricted', 'latest'),
      'violates PodSecurity "restricted:latest": ' +
        'hostPort (container "b" uses hostPort 80), ' +
        'allowPrivilegeEscalation != false (containers "a", "b" must set securityContext.allowPrivilegeEscalation=false), ' +
        'unrestricted capabilities (containers "a", "b" must set securityContext.capabilities.drop=["ALL"]; container "a" must not include "NET_RAW" in securityContext.capabilities.add), ' +
        'restricted volume types (volume "h" uses restricted volume type "hostPath"), ' +
        'runAsNonRoot != true (pod or containers "a", "b" must set securityContext.runAsNonRoot=true), ' +
        'runAsUser=0 (pod must not set runAsUser=0), ' +
        'seccompProfile (pod or containers "a", "b" must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")',
    );
  });

  it('is empty when nothing is left, and ignores findings that are not PSS ones', () => {
    assert.equal(podSecurityMessage([], 'restricted', 'latest'), '');
    assert.equal(podSecurityMessage([{ control: 'imageDigest', message: 'image "x" is not pinned by digest' }], 'restricted', 'latest'), '');
  });
});

describe('robustness', () => {
  const json = fc.letrec((tie) => ({
    value: fc.oneof(
      { depthSize: 'small' },
      fc.constantFrom(null, true, false, 0, 1, -1, '', 'ALL', 'Unconfined', 'RuntimeDefault', 'windows', 'Default', 'a'),
      fc.string({ maxLength: 6 }),
      fc.array(tie('value'), { maxLength: 3 }),
      fc.dictionary(
        fc.constantFrom(
          'name',
          'securityContext',
          'capabilities',
          'add',
          'drop',
          'privileged',
          'hostPort',
          'ports',
          'type',
          'seccompProfile',
          'appArmorProfile',
          'seLinuxOptions',
          'user',
          'hostPath',
          'nfs',
          'runAsNonRoot',
          'runAsUser',
          'procMount',
          'sysctls',
          'windowsOptions',
          'hostProcess',
          'httpGet',
          'host',
          'livenessProbe',
          'lifecycle',
          'preStop',
        ),
        tie('value'),
        { maxKeys: 4 },
      ),
    ),
  }));
  const specs = fc.record(
    {
      containers: json.value,
      initContainers: fc.array(json.value, { maxLength: 2 }),
      ephemeralContainers: fc.array(json.value, { maxLength: 2 }),
      volumes: fc.array(json.value, { maxLength: 2 }),
      securityContext: json.value,
      hostNetwork: json.value,
      hostUsers: json.value,
      os: json.value,
    },
    { requiredKeys: [] },
  );
  const pods = fc.record(
    { metadata: fc.record({ annotations: fc.dictionary(fc.string({ maxLength: 60 }), fc.string({ maxLength: 10 }), { maxKeys: 3 }) }), spec: specs },
    { requiredKeys: [] },
  );

  it('random pods never throw, privileged never reports, and every finding appears in the aggregated text', () => {
    fc.assert(
      fc.property(
        pods,
        fc.constantFrom('baseline', 'restricted') as fc.Arbitrary<PssLevel>,
        fc.constantFrom(...PSS_VERSIONS, 'latest'),
        (p, level, version) => {
          const found = checkPodSecurity(p as PodLike, level, version);
          assert.deepEqual(checkPodSecurity(p as PodLike, 'privileged', version), []);
          const text = podSecurityMessage(found, level, version);
          assert.equal(text === '', found.length === 0);
          for (const v of found) {
            assert.ok(PSS_CONTROLS.includes(v.control));
            assert.ok(text.includes(v.message.slice(0, v.message.indexOf(' ('))), v.message);
          }
          // A single finding's text is its own message.
          for (const v of found) assert.equal(podSecurityDetail([v]), v.message);
        },
      ),
      { numRuns: 1500 },
    );
  });

  it('restricted finds everything baseline finds (under the same or a replacing control)', () => {
    const replaces: Record<string, string> = {
      hostPathVolumes: 'restrictedVolumes',
      capabilities_baseline: 'capabilities_restricted',
      seccompProfile_baseline: 'seccompProfile_restricted',
      procMount: 'procMount_restricted',
    };
    fc.assert(
      fc.property(pods, fc.constantFrom(...PSS_VERSIONS), (p, version) => {
        const restricted = new Set(checkPodSecurity(p as PodLike, 'restricted', version).map((v) => v.control));
        for (const v of checkPodSecurity(p as PodLike, 'baseline', version)) {
          const alt = replaces[v.control];
          // On Windows pods from v1.25 the replacing restricted checks exempt what baseline would find.
          const windowsExempt = (p as PodLike).spec?.os !== undefined && Number(version.slice(3)) >= 25;
          assert.ok(restricted.has(v.control) || (alt !== undefined && (restricted.has(alt) || windowsExempt)), `${v.control} at ${version}`);
        }
      }),
      { numRuns: 800 },
    );
  });
});
