// k8scheck renders Writ's kustomize overlays with kustomize's own library and decodes every
// rendered document strictly into the upstream Kubernetes Go types (k8s.io/api): a field the
// type does not have, a duplicate key or a wrong type fails that document.
//
//	k8scheck render [-ca-bundle root.pem] [-jwks jwks.json] DIR   rendered YAML on stdout
//	k8scheck check [FILE|-]                                         one JSON line per document
//
// check exits 0 when every document decodes, 1 when any does not, 2 on a usage error.
package main

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"reflect"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	switch os.Args[1] {
	case "render":
		os.Exit(render(os.Args[2:]))
	case "check":
		os.Exit(check(os.Args[2:]))
	default:
		usage()
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: k8scheck render [-ca-bundle FILE] [-jwks FILE] DIR | k8scheck check [FILE|-]")
	os.Exit(2)
}

// render runs kustomize on DIR, then fills what only the installation knows: the webhooks'
// caBundle and the agents' trust bundle (the upstream CA root), and the cluster's JWKS.
func render(args []string) int {
	fs := flag.NewFlagSet("render", flag.ContinueOnError)
	caFile := fs.String("ca-bundle", "", "PEM root of the upstream CA: webhook caBundle and agent trust bundle")
	jwksFile := fs.String("jwks", "", "the cluster's service account JWKS (kubectl get --raw /openid/v1/jwks)")
	if err := fs.Parse(args); err != nil || fs.NArg() != 1 {
		usage()
	}
	var ca, jwks []byte
	var err error
	if *caFile != "" {
		if ca, err = os.ReadFile(*caFile); err != nil {
			fmt.Fprintln(os.Stderr, "k8scheck:", err)
			return 1
		}
	}
	if *jwksFile != "" {
		if jwks, err = os.ReadFile(*jwksFile); err != nil {
			fmt.Fprintln(os.Stderr, "k8scheck:", err)
			return 1
		}
	}
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	resources, err := k.Run(filesys.MakeFsOnDisk(), fs.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, "k8scheck: kustomize:", err)
		return 1
	}
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	for i, r := range resources.Resources() {
		m, err := r.Map()
		if err != nil {
			fmt.Fprintln(os.Stderr, "k8scheck:", err)
			return 1
		}
		kind, name, ns := r.GetKind(), r.GetName(), r.GetNamespace()
		switch {
		case (kind == "ValidatingWebhookConfiguration" || kind == "MutatingWebhookConfiguration") && ca != nil:
			hooks, _ := m["webhooks"].([]any)
			for _, h := range hooks {
				if cc, ok := h.(map[string]any)["clientConfig"].(map[string]any); ok {
					cc["caBundle"] = base64.StdEncoding.EncodeToString(ca)
				}
			}
		case kind == "ConfigMap" && ns == "writ-node" && name == "writ-trust-bundle" && ca != nil:
			m["data"] = map[string]any{"bundle.pem": string(ca)}
		case kind == "ConfigMap" && ns == "writ-system" && name == "writ-cluster-jwks" && jwks != nil:
			m["data"] = map[string]any{"jwks.json": string(jwks)}
		}
		doc, err := yaml.Marshal(m)
		if err != nil {
			fmt.Fprintln(os.Stderr, "k8scheck:", err)
			return 1
		}
		if i > 0 {
			out.WriteString("---\n")
		}
		out.Write(doc)
	}
	return 0
}

// The API groups Writ's manifests use; any other apiVersion/kind is refused.
func newScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, batchv1.AddToScheme, rbacv1.AddToScheme, policyv1.AddToScheme,
		networkingv1.AddToScheme, admissionregistrationv1.AddToScheme, storagev1.AddToScheme,
	} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return s
}

type result struct {
	Doc        int    `json:"doc"`
	APIVersion string `json:"apiVersion,omitempty"`
	Kind       string `json:"kind,omitempty"`
	Namespace  string `json:"namespace,omitempty"`
	Name       string `json:"name,omitempty"`
	OK         bool   `json:"ok"`
	Error      string `json:"error,omitempty"`
}

func check(args []string) int {
	var in io.Reader = os.Stdin
	if len(args) > 1 {
		usage()
	}
	if len(args) == 1 && args[0] != "-" {
		f, err := os.Open(args[0])
		if err != nil {
			fmt.Fprintln(os.Stderr, "k8scheck:", err)
			return 1
		}
		defer f.Close()
		in = f
	}
	scheme := newScheme()
	reader := utilyaml.NewYAMLReader(bufio.NewReader(in))
	enc := json.NewEncoder(os.Stdout)
	failed, n := false, 0
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "k8scheck: reading documents:", err)
			return 1
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		n++
		r := decode(scheme, doc)
		r.Doc = n
		failed = failed || !r.OK
		_ = enc.Encode(r)
	}
	if n == 0 {
		fmt.Fprintln(os.Stderr, "k8scheck: no documents")
		return 1
	}
	if failed {
		return 1
	}
	return 0
}

func decode(scheme *runtime.Scheme, doc []byte) result {
	// Read loosely first, so that a refused document is still named in the report.
	var head struct {
		metav1.TypeMeta `json:",inline"`
		Metadata        metav1.ObjectMeta `json:"metadata"`
	}
	var r result
	if err := yaml.Unmarshal(doc, &head); err != nil {
		r.Error = err.Error()
		return r
	}
	tm := head.TypeMeta
	r.APIVersion, r.Kind = tm.APIVersion, tm.Kind
	r.Namespace, r.Name = head.Metadata.Namespace, head.Metadata.Name
	gv, err := schema.ParseGroupVersion(tm.APIVersion)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	obj, err := scheme.New(gv.WithKind(tm.Kind))
	if err != nil {
		r.Error = fmt.Sprintf("no Kubernetes type for %s %s", tm.APIVersion, tm.Kind)
		return r
	}
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		r.Error = err.Error()
		return r
	}
	if err := semantics(obj); err != nil {
		r.Error = err.Error()
		return r
	}
	r.OK = true
	return r
}

// semantics catches what decodes but the API server or the cluster would refuse or ignore.
func semantics(obj runtime.Object) error {
	switch o := obj.(type) {
	case *admissionregistrationv1.ValidatingWebhookConfiguration:
		for _, w := range o.Webhooks {
			if err := caBundle(w.Name, w.ClientConfig.CABundle); err != nil {
				return err
			}
		}
	case *admissionregistrationv1.MutatingWebhookConfiguration:
		for _, w := range o.Webhooks {
			if err := caBundle(w.Name, w.ClientConfig.CABundle); err != nil {
				return err
			}
		}
	case *appsv1.Deployment:
		return selects(o.Spec.Selector, o.Spec.Template.Labels)
	case *appsv1.DaemonSet:
		return selects(o.Spec.Selector, o.Spec.Template.Labels)
	case *appsv1.StatefulSet:
		return selects(o.Spec.Selector, o.Spec.Template.Labels)
	}
	return nil
}

func caBundle(name string, b []byte) error {
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return fmt.Errorf("webhook %s: caBundle is not a PEM certificate", name)
	}
	return nil
}

func selects(sel *metav1.LabelSelector, labels map[string]string) error {
	if sel == nil || len(sel.MatchLabels) == 0 {
		return errors.New("spec.selector.matchLabels is empty")
	}
	for k, v := range sel.MatchLabels {
		if labels[k] != v {
			return fmt.Errorf("spec.selector %s=%s does not select the pod template (labels %v)", k, v, reflect.ValueOf(labels))
		}
	}
	return nil
}
