#!/bin/sh
# Lays out the root filesystem of Writ's image in DEST from a repository where `npm ci` has run:
# the pinned Node 24 binary, the bundled CLI (dist/), the agent's SO_PEERCRED addon, mount(8) and
# umount(8) for `writ csi` (without their set-uid bit), the shared libraries all of these link and
# passwd entries for uid 10001. Nothing else: no shell, no package manager. deploy/Containerfile and deploy/build-image.sh both run it,
# so the two build the same files.
set -eu
[ $# -eq 1 ] || { echo "usage: $0 DEST" >&2; exit 2; }
repo=$(cd "$(dirname "$0")/../.." && pwd)
dest=$1
node=$repo/node_modules/node/bin/node
addon=$repo/packages/agent/native/build/peercred.node
for f in "$node" "$repo/dist/writ.js" "$addon"; do
  [ -e "$f" ] || { echo "$0: $f is missing: run npm ci in $repo first" >&2; exit 1; }
done

mkdir -p "$dest/usr/local/bin" "$dest/opt/writ/packages/cli/bin" "$dest/opt/writ/packages/agent/native/build" \
  "$dest/etc" "$dest/tmp" "$dest/var/lib/writ" "$dest/run/writ"
cp "$node" "$dest/usr/local/bin/node"
cp -R "$repo/dist" "$dest/opt/writ/dist"
cp "$repo/packages/cli/bin/writ.js" "$dest/opt/writ/packages/cli/bin/writ.js"
cp "$addon" "$dest/opt/writ/packages/agent/native/build/peercred.node"
mkdir -p "$dest/usr/bin"
for b in mount umount; do cp "$(command -v $b)" "$dest/usr/bin/$b" && chmod 0755 "$dest/usr/bin/$b"; done
# dist/ is ES modules; without packages/*/src the bin runs dist/ and never the TypeScript sources.
printf '{ "name": "writ-image", "private": true, "type": "module" }\n' > "$dest/opt/writ/package.json"

# The libraries the dynamic loader resolves for node and the addon, at the same paths.
for lib in $(ldd "$node" "$addon" "$dest/usr/bin/mount" "$dest/usr/bin/umount" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\/.*ld-linux/ { print $1 }' | sort -u); do
  mkdir -p "$dest$(dirname "$lib")"
  cp -L "$lib" "$dest$lib"
done

printf 'root:x:0:0:root:/root:/sbin/nologin\nwrit:x:10001:10001:writ:/var/lib/writ:/sbin/nologin\n' > "$dest/etc/passwd"
printf 'root:x:0:\nwrit:x:10001:\n' > "$dest/etc/group"
chmod 1777 "$dest/tmp"
# The data directory belongs to the image's user; in Kubernetes a volume is mounted over it.
chown 10001:10001 "$dest/var/lib/writ" "$dest/run/writ" 2>/dev/null || true
