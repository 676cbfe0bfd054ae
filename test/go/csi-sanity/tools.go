//go:build tools

// Pins the Kubernetes CSI project's csi-sanity suite, built by .ci/run into test/go/bin.
package tools

import _ "github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity"
