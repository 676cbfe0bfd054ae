#!/bin/sh
# Builds Writ's image offline, without a container daemon: deploy/image/rootfs.sh lays out the
# files, umoci (Debian's package) packs them as one layer of an OCI image layout and writes the
# image config. The config is deploy/Containerfile's, line for line (test/e2e/deploy-image.test.ts
# compares them). Run as root (the rootfs has files of uid 10001), after npm ci.
#   deploy/build-image.sh OUT_LAYOUT [TAG]      e.g. deploy/build-image.sh /tmp/writ-oci 0.1.0
#   skopeo copy oci:/tmp/writ-oci:0.1.0 docker://registry.example.com/writ:0.1.0
set -eu
[ $# -ge 1 ] && [ $# -le 2 ] || { echo "usage: $0 OUT_LAYOUT [TAG]" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
layout=$1
tag=${2:-$(sed -n 's/^  "version": "\(.*\)",$/\1/p' "$here/../package.json")}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

rm -rf "$layout"
umoci init --layout "$layout"
umoci new --image "$layout:$tag"
umoci unpack --image "$layout:$tag" "$work/bundle" >/dev/null
sh "$here/image/rootfs.sh" "$work/bundle/rootfs"
umoci repack --image "$layout:$tag" --history.created_by "deploy/image/rootfs.sh" "$work/bundle"
umoci config --image "$layout:$tag" --history.created_by "deploy/Containerfile config" \
  --os linux --architecture amd64 \
  --config.user 10001:10001 \
  --config.workingdir /var/lib/writ \
  --clear config.env --config.env PATH=/usr/local/bin \
  --config.volume /var/lib/writ \
  --config.entrypoint /usr/local/bin/node --config.entrypoint /opt/writ/packages/cli/bin/writ.js \
  --config.cmd --help \
  --config.label org.opencontainers.image.title=writ \
  --config.label "org.opencontainers.image.description=Workload identity and runtime trust for containers: writ server, agent and proxy" \
  --config.label org.opencontainers.image.licenses=Apache-2.0
umoci gc --layout "$layout"
echo "built $layout:$tag"
