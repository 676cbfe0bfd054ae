# Pod Security Standards "restricted", version latest (every baseline control that restricted keeps,
# plus the restricted ones), as Pod Security Admission checks them, for the admission benchmark:
# OPA serves this as its default decision (`POST /` with the AdmissionReview as the body) and answers
# with an AdmissionReview, so OPA and Writ get the same bytes and do the same work.
#
# Written from the pod-security-admission checks (v1.37 rules): init, regular and ephemeral
# containers; Windows pods exempt from the Linux-only restricted checks; user-namespace pods
# (hostUsers: false) exempt from runAsNonRoot and runAsUser.
package writ.admission

templated := {"Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job", "ReplicationController"}

pod := input.request.object if input.request.kind.kind == "Pod"

pod := input.request.object.spec.template if input.request.kind.kind in templated

pod := input.request.object.spec.jobTemplate.spec.template if input.request.kind.kind == "CronJob"

meta := object.get(pod, "metadata", {})

spec := object.get(pod, "spec", {})

psc := object.get(spec, "securityContext", {})

containers := array.concat(
	array.concat(object.get(spec, "initContainers", []), object.get(spec, "containers", [])),
	object.get(spec, "ephemeralContainers", []),
)

windows if spec.os.name == "windows"

userns if spec.hostUsers == false

sc(c) := object.get(c, "securityContext", {})

# PSA's joinQuote: quotes around the list and between items, nothing escaped inside.
jq(names) := sprintf("\"%s\"", [concat("\", \"", names)])

plural(one, many, n) := one if n == 1

else := many

containers_phrase(names) := sprintf("%s %s", [plural("container", "containers", count(names)), jq(names)])

v(control, reason, detail) := {"control": control, "message": sprintf("%s (%s)", [reason, detail])}

# --- baseline controls kept by restricted ---

violation contains v("windowsHostProcess", "hostProcess", sprintf("%s must not set securityContext.windowsOptions.hostProcess=true", [concat(" and ", setters)])) if {
	bad := [c.name | some c in containers; sc(c).windowsOptions.hostProcess == true]
	pod_bad := ["pod" | psc.windowsOptions.hostProcess == true]
	setters := array.concat(pod_bad, [containers_phrase(bad) | count(bad) > 0])
	count(setters) > 0
}

violation contains v("hostNamespaces", "host namespaces", concat(", ", found)) if {
	found := [sprintf("%s=true", [k]) | some k in ["hostNetwork", "hostPID", "hostIPC"]; spec[k] == true]
	count(found) > 0
}

violation contains v("privileged", "privileged", sprintf("%s must not set securityContext.privileged=true", [containers_phrase(bad)])) if {
	bad := [c.name | some c in containers; sc(c).privileged == true]
	count(bad) > 0
}

violation contains v("hostPorts", "hostPort", sprintf("%s %s %s %s", [containers_phrase(bad), plural("uses", "use", count(bad)), plural("hostPort", "hostPorts", count(ports)), concat(", ", ports)])) if {
	bad := [c.name | some c in containers; count(host_ports(c)) > 0]
	count(bad) > 0
	ports := {x | some c in containers; some x in host_ports(c)}
}

host_ports(c) := {sprintf("%d", [p.hostPort]) | some p in object.get(c, "ports", []); object.get(p, "hostPort", 0) != 0}

handler_hosts(h) := {x | some k in ["httpGet", "tcpSocket"]; x := h[k].host; x != ""}

container_hosts(c) := {x |
	some k in ["livenessProbe", "readinessProbe", "startupProbe"]
	some x in handler_hosts(c[k])
} | {x |
	some k in ["postStart", "preStop"]
	some x in handler_hosts(c.lifecycle[k])
}

violation contains v("hostProbesAndHostLifecycle", "probe or lifecycle host", sprintf("%s %s %s %s", [containers_phrase(bad), plural("uses", "use", count(bad)), plural("probe or lifecycle host", "probe or lifecycle hosts", count(hosts)), jq(hosts)])) if {
	bad := sort({c.name | some c in containers; count(container_hosts(c)) > 0})
	count(bad) > 0
	hosts := {x | some c in containers; some x in container_hosts(c)}
}

apparmor_ok(t) if t in {"RuntimeDefault", "Localhost"}

apparmor_bad(p) if not apparmor_ok(object.get(p, "type", ""))

apparmor_annotation_ok(val) if val in {"", "runtime/default"}

apparmor_annotation_ok(val) if startswith(val, "localhost/")

violation contains v("appArmorProfile", plural("forbidden AppArmor profile", "forbidden AppArmor profiles", count(values)), sprintf("%s must not set AppArmor profile type to %s", [concat(" and ", setters), jq(values)])) if {
	pod_bad := ["pod" | apparmor_bad(psc.appArmorProfile)]
	bad := [c.name | some c in containers; apparmor_bad(sc(c).appArmorProfile)]
	types := sort({object.get(p, "type", "") | p := psc.appArmorProfile; apparmor_bad(p)} | {object.get(p, "type", "") | some c in containers; p := sc(c).appArmorProfile; apparmor_bad(p)})
	annotations := sort([sprintf("%s=%q", [k, val]) | some k, val in object.get(meta, "annotations", {}); startswith(k, "container.apparmor.security.beta.kubernetes.io/"); not apparmor_annotation_ok(val)])
	setters := array.concat(array.concat(pod_bad, [containers_phrase(bad) | count(bad) > 0]), [plural("annotation", "annotations", count(annotations)) | count(annotations) > 0])
	count(setters) > 0
	values := array.concat(types, annotations)
}

selinux_types := {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}

selinux_bad(o) if not object.get(o, "type", "") in selinux_types

selinux_bad(o) if object.get(o, "user", "") != ""

selinux_bad(o) if object.get(o, "role", "") != ""

selinux_set(opts, field) if {
	some o in opts
	object.get(o, field, "") != ""
}

violation contains v("seLinuxOptions", "seLinuxOptions", sprintf("%s set forbidden securityContext.seLinuxOptions: %s", [concat(" and ", setters), concat("; ", data_)])) if {
	opts := array.concat([psc.seLinuxOptions | psc.seLinuxOptions], [sc(c).seLinuxOptions | some c in containers; sc(c).seLinuxOptions])
	pod_bad := ["pod" | selinux_bad(psc.seLinuxOptions)]
	bad := [c.name | some c in containers; selinux_bad(sc(c).seLinuxOptions)]
	setters := array.concat(pod_bad, [containers_phrase(bad) | count(bad) > 0])
	count(setters) > 0
	types := {t | some o in opts; t := object.get(o, "type", ""); not t in selinux_types}
	data_ := array.concat(
		array.concat([sprintf("%s %s", [plural("type", "types", count(types)), jq(types)]) | count(types) > 0], ["user may not be set" | selinux_set(opts, "user")]),
		["role may not be set" | selinux_set(opts, "role")],
	)
}

safe_sysctls := {
	"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range",
	"net.ipv4.ip_unprivileged_port_start", "net.ipv4.ip_local_reserved_ports", "net.ipv4.tcp_keepalive_time",
	"net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes", "net.ipv4.tcp_rmem",
	"net.ipv4.tcp_wmem", "net.ipv4.tcp_slow_start_after_idle", "net.ipv4.tcp_notsent_lowat",
}

violation contains v("sysctls", "forbidden sysctls", concat(", ", bad)) if {
	bad := [s.name | some s in object.get(psc, "sysctls", []); not s.name in safe_sysctls]
	count(bad) > 0
}

# --- restricted controls ---

violation contains v("allowPrivilegeEscalation", "allowPrivilegeEscalation != false", sprintf("%s must set securityContext.allowPrivilegeEscalation=false", [containers_phrase(bad)])) if {
	not windows
	bad := [c.name | some c in containers; object.get(sc(c), "allowPrivilegeEscalation", true) != false]
	count(bad) > 0
}

drops_all(c) if "ALL" in object.get(sc(c), ["capabilities", "drop"], [])

violation contains v("capabilities_restricted", "unrestricted capabilities", concat("; ", details)) if {
	not windows
	no_drop := [c.name | some c in containers; not drops_all(c)]
	adding := [c.name | some c in containers; count([x | some x in object.get(sc(c), ["capabilities", "add"], []); x != "NET_BIND_SERVICE"]) > 0]
	caps := {x | some c in containers; some x in object.get(sc(c), ["capabilities", "add"], []); x != "NET_BIND_SERVICE"}
	details := array.concat(
		[sprintf("%s must set securityContext.capabilities.drop=[\"ALL\"]", [containers_phrase(no_drop)]) | count(no_drop) > 0],
		[sprintf("%s must not include %s in securityContext.capabilities.add", [containers_phrase(adding), jq(caps)]) | count(adding) > 0],
	)
	count(details) > 0
}

allowed_volume_sources := {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "image", "persistentVolumeClaim", "projected", "secret"}

known_volume_sources := {
	"hostPath", "gcePersistentDisk", "awsElasticBlockStore", "gitRepo", "nfs", "iscsi", "glusterfs", "rbd", "flexVolume",
	"cinder", "cephfs", "flocker", "fc", "azureFile", "vsphereVolume", "quobyte", "azureDisk", "photonPersistentDisk",
	"portworxVolume", "scaleIO", "storageos",
}

volume_allowed(vol) if {
	some k, x in vol
	k in allowed_volume_sources
	x != null
}

volume_type(vol) := t if {
	some t, x in vol
	t in known_volume_sources
	x != null
} else := "unknown"

violation contains v("restrictedVolumes", "restricted volume types", sprintf("%s %s %s %s %s", [plural("volume", "volumes", count(bad)), jq(bad), plural("uses", "use", count(bad)), plural("restricted volume type", "restricted volume types", count(types)), jq(types)])) if {
	vols := [vol | some vol in object.get(spec, "volumes", []); not volume_allowed(vol)]
	count(vols) > 0
	bad := [vol.name | some vol in vols]
	types := {volume_type(vol) | some vol in vols}
}

violation contains v("runAsNonRoot", "runAsNonRoot != true", sprintf("%s must not set securityContext.runAsNonRoot=false", [concat(" and ", setters)])) if {
	not userns
	explicit := [c.name | some c in containers; sc(c).runAsNonRoot == false]
	setters := array.concat(["pod" | psc.runAsNonRoot == false], [containers_phrase(explicit) | count(explicit) > 0])
	count(setters) > 0
}

violation contains v("runAsNonRoot", "runAsNonRoot != true", sprintf("pod or %s must set securityContext.runAsNonRoot=true", [containers_phrase(implicit)])) if {
	not userns
	object.get(psc, "runAsNonRoot", null) != false
	count([c | some c in containers; sc(c).runAsNonRoot == false]) == 0
	object.get(psc, "runAsNonRoot", false) != true
	implicit := [c.name | some c in containers; not is_boolean(object.get(sc(c), "runAsNonRoot", null))]
	count(implicit) > 0
}

violation contains v("runAsUser", "runAsUser=0", sprintf("%s must not set runAsUser=0", [concat(" and ", setters)])) if {
	not userns
	bad := [c.name | some c in containers; sc(c).runAsUser == 0]
	setters := array.concat(["pod" | psc.runAsUser == 0], [containers_phrase(bad) | count(bad) > 0])
	count(setters) > 0
}

seccomp_ok(t) if t in {"RuntimeDefault", "Localhost"}

# An unset type is the empty string in the Go API, which is not an allowed value.
seccomp_bad(p) if not seccomp_ok(object.get(p, "type", ""))

violation contains v("seccompProfile_restricted", "seccompProfile", sprintf("%s must not set securityContext.seccompProfile.type to %s", [concat(" and ", setters), jq(types)])) if {
	not windows
	explicit := [c.name | some c in containers; seccomp_bad(sc(c).seccompProfile)]
	setters := array.concat(["pod" | seccomp_bad(psc.seccompProfile)], [containers_phrase(explicit) | count(explicit) > 0])
	count(setters) > 0
	types := {object.get(p, "type", "") | p := psc.seccompProfile; seccomp_bad(p)} | {object.get(p, "type", "") | some c in containers; p := sc(c).seccompProfile; seccomp_bad(p)}
}

violation contains v("seccompProfile_restricted", "seccompProfile", sprintf("pod or %s must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\"", [containers_phrase(implicit)])) if {
	not windows
	not psc.seccompProfile
	count([c | some c in containers; seccomp_bad(sc(c).seccompProfile)]) == 0
	implicit := [c.name | some c in containers; not sc(c).seccompProfile]
	count(implicit) > 0
}

violation contains v("procMount_restricted", "procMount", sprintf("%s must not set securityContext.procMount to %s", [containers_phrase(bad), jq(types)])) if {
	bad := [c.name | some c in containers; sc(c).procMount != "Default"]
	count(bad) > 0
	types := {t | some c in containers; t := sc(c).procMount; t != "Default"}
}

# --- the answer ---

# PSA's order: baseline checks, then restricted ones, each by check id.
restricted_ids := {"allowPrivilegeEscalation", "capabilities_restricted", "procMount_restricted", "restrictedVolumes", "runAsNonRoot", "runAsUser", "seccompProfile_restricted"}

level_rank(id) := 1 if id in restricted_ids

else := 0

messages := [k[2] | some k in sort({[level_rank(x.control), x.control, x.message] | some x in violation})]

response := {"uid": input.request.uid, "allowed": true} if count(violation) == 0

response := {"uid": input.request.uid, "allowed": false, "status": {
	"code": 403,
	"reason": "Forbidden",
	"message": sprintf("%s %q is forbidden: violates PodSecurity \"restricted:latest\": %s", [lower(input.request.kind.kind), object.get(input.request, "name", ""), concat(", ", messages)]),
}} if count(violation) > 0

review := {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}
