#!/usr/bin/env bash
# Builds the operator's OCI image with no daemon and no registry (Debian's umoci and skopeo),
# the same image the Containerfile describes for users' own builders: the stripped release
# binary, the shared libraries it links (ldd), the CA bundle, user 65532, no shell.
#
#   hack/image.sh [OUT_DIR]     default: target/image
#
# Out: OUT_DIR/oci (an OCI layout, tag statused-operator:<version>),
# OUT_DIR/statused-operator.tar (a docker-archive: `docker load -i` / `podman load -i`) and
# OUT_DIR/ref (the layout and tag, e.g. for `umoci unpack --image "$(cat OUT_DIR/ref)"`).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$ROOT/target/image}
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -n1)
TAG="statused-operator:$VERSION"

need() { command -v "$1" >/dev/null 2>&1; }
if ! need umoci || ! need skopeo; then
  [ "$(id -u)" = 0 ] || { echo "umoci and skopeo are needed (apt-get install umoci skopeo)" >&2; exit 1; }
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends umoci skopeo >/dev/null
fi

(cd "$ROOT" && cargo build --release --locked --bin statused-operator)
BIN="$ROOT/target/release/statused-operator"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root="$work/rootfs"
mkdir -p "$root/etc/ssl/certs" "$root/tmp"
install -m 0755 "$BIN" "$root/statused-operator"
strip "$root/statused-operator"
# The libraries the binary links, at the paths the loader looks for them.
for lib in $(ldd "$BIN" | grep -o '/[^ ]*'); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
# Only what identifies the non-root user; there is no shell to log in with.
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
chmod 1777 "$root/tmp"

rm -rf "$OUT"
mkdir -p "$OUT"
umoci init --layout "$OUT/oci"
umoci new --image "$OUT/oci:$TAG"
umoci insert --image "$OUT/oci:$TAG" "$root" /
umoci config --image "$OUT/oci:$TAG" \
  --config.user 65532:65532 --config.workingdir / \
  --config.entrypoint /statused-operator --config.cmd run \
  --config.exposedports 8080/tcp --config.exposedports 9090/tcp \
  --config.label "org.opencontainers.image.title=statused-operator" \
  --config.label "org.opencontainers.image.version=$VERSION" \
  --config.label "org.opencontainers.image.licenses=Apache-2.0"
umoci gc --layout "$OUT/oci"
skopeo copy --quiet "oci:$OUT/oci:$TAG" "docker-archive:$OUT/statused-operator.tar:$TAG"
# For the image test and scripts: the layout and tag, as umoci and skopeo name an image.
echo "$OUT/oci:$TAG" >"$OUT/ref"

size=$(du -b "$OUT/statused-operator.tar" | cut -f1)
compressed=$(gzip -c "$OUT/statused-operator.tar" | wc -c)
echo "image $TAG: $OUT/oci, $OUT/statused-operator.tar ($((size / 1024 / 1024)) MiB, $((compressed / 1024 / 1024)) MiB compressed)" >&2
