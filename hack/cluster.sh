#!/usr/bin/env bash
# A throwaway Kubernetes control plane on 127.0.0.1: etcd + kube-apiserver in RBAC mode with a
# static token file, the CRDs applied, and the chart's RBAC bound to the operator's service
# account. Two kubeconfigs come out: admin (system:masters) and operator (the service account
# the chart creates, so a missing permission in the chart fails the tests).
#
# A third identity runs with the chart's RBAC rendered with tekton.enabled=false. A fourth,
# the user statused-team-user, has no rights until a test binds it in its namespace, e.g. to
# the chart's roles that aggregate into edit (applied here). Unless
# --bare is given, stand-in CRDs for Tekton's PipelineRun and Argo's Workflow are registered
# (tests/fixtures/crds), as if both were installed.
#
#   hack/cluster.sh exec [--bare] -- CMD...   start, run CMD with the environment below, always stop
#   hack/cluster.sh up [--bare] DIR           start and leave running (stop: hack/cluster.sh down DIR)
#   hack/cluster.sh down DIR
#   hack/cluster.sh start-apiserver DIR       start a killed API server again (fault tests)
#
# Environment given to CMD (and written to DIR/env):
#   STATUSED_TEST_ADMIN_KUBECONFIG, STATUSED_TEST_OPERATOR_KUBECONFIG,
#   STATUSED_TEST_NOTEKTON_KUBECONFIG, STATUSED_TEST_TEAM_KUBECONFIG, KUBECONFIG (= admin),
#   STATUSED_TEST_CLUSTER_DIR (its
#   apiserver.pid lets fault tests stop, freeze and kill the API server)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE="${STATUSED_CACHE:-$HOME/.cache/statused-operator}"
BIN="$CACHE/bin"
export PATH="$BIN:$PATH"
OPERATOR_NS=statused-system
OPERATOR_SA=statused-operator
NOTEKTON_SA=statused-operator-notekton
TEAM_USER=statused-team-user
BARE=""

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

kubeconfig() { # file server token user
  cat >"$1" <<KC
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster: {server: "$2", insecure-skip-tls-verify: true}
users:
- name: $4
  user: {token: "$3"}
contexts:
- name: $4
  context: {cluster: local, user: $4}
current-context: $4
KC
}

up() {
  local dir=$1
  mkdir -p "$dir"
  [ -x "$BIN/kube-apiserver" ] && command -v etcd >/dev/null || bash "$ROOT/hack/install-tools.sh"
  local etcd_port peer_port api_port
  etcd_port=$(free_port); peer_port=$(free_port); api_port=$(free_port)

  etcd --data-dir "$dir/etcd" --name test \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "test=http://127.0.0.1:$peer_port" >"$dir/etcd.log" 2>&1 &
  echo $! >"$dir/etcd.pid"

  openssl genrsa -out "$dir/sa.key" 2048 2>/dev/null
  openssl rsa -in "$dir/sa.key" -pubout -out "$dir/sa.pub" 2>/dev/null
  local admin_token operator_token
  local notekton_token team_token
  admin_token=$(openssl rand -hex 16); operator_token=$(openssl rand -hex 16); notekton_token=$(openssl rand -hex 16)
  team_token=$(openssl rand -hex 16)
  cat >"$dir/tokens.csv" <<TOK
$admin_token,admin,admin,"system:masters"
$operator_token,system:serviceaccount:$OPERATOR_NS:$OPERATOR_SA,operator,"system:serviceaccounts,system:serviceaccounts:$OPERATOR_NS,system:authenticated"
$notekton_token,system:serviceaccount:$OPERATOR_NS:$NOTEKTON_SA,notekton,"system:serviceaccounts,system:serviceaccounts:$OPERATOR_NS,system:authenticated"
$team_token,$TEAM_USER,team,"system:authenticated"
TOK

  cat >"$dir/apiserver.sh" <<APISERVER
exec "$BIN/kube-apiserver" --etcd-servers "http://127.0.0.1:$etcd_port" \\
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" --insecure-port 0 \\
  --cert-dir "$dir/certs" --token-auth-file "$dir/tokens.csv" --authorization-mode RBAC \\
  --service-account-key-file "$dir/sa.pub" --service-account-signing-key-file "$dir/sa.key" \\
  --service-account-issuer https://kubernetes.default.svc --service-cluster-ip-range 10.96.0.0/24 \\
  --endpoint-reconciler-type none --disable-admission-plugins ServiceAccount
APISERVER
  start_apiserver "$dir"

  local server="https://127.0.0.1:$api_port"
  kubeconfig "$dir/admin.kubeconfig" "$server" "$admin_token" admin
  kubeconfig "$dir/operator.kubeconfig" "$server" "$operator_token" operator
  kubeconfig "$dir/notekton.kubeconfig" "$server" "$notekton_token" notekton
  kubeconfig "$dir/team.kubeconfig" "$server" "$team_token" team
  cat >"$dir/env" <<ENV
export STATUSED_TEST_ADMIN_KUBECONFIG=$dir/admin.kubeconfig
export STATUSED_TEST_OPERATOR_KUBECONFIG=$dir/operator.kubeconfig
export STATUSED_TEST_NOTEKTON_KUBECONFIG=$dir/notekton.kubeconfig
export STATUSED_TEST_TEAM_KUBECONFIG=$dir/team.kubeconfig
export KUBECONFIG=$dir/admin.kubeconfig
export STATUSED_TEST_CLUSTER_DIR=$dir
ENV

  local k="kubectl --kubeconfig $dir/admin.kubeconfig"
  for _ in $(seq 1 120); do
    if $k get --raw /readyz >/dev/null 2>&1; then break; fi
    if ! kill -0 "$(cat "$dir/apiserver.pid")" 2>/dev/null; then
      tail -n 30 "$dir/apiserver.log" >&2; echo "kube-apiserver exited" >&2; return 1
    fi
    sleep 0.5
  done
  $k get --raw /readyz >/dev/null || { tail -n 30 "$dir/apiserver.log" >&2; return 1; }

  # 1.20's client-side validation predates some schema keywords; apply server-side.
  # The CRDs as the chart renders them for this 1.20 API server: without the CEL rules
  # (x-kubernetes-validations) that only 1.25+ knows.
  helm template statused-operator "$ROOT/charts/statused-operator" --kube-version 1.20.2 \
    --show-only templates/crds.yaml | $k apply --server-side -f - >/dev/null
  $k create namespace "$OPERATOR_NS" >/dev/null
  helm template statused-operator "$ROOT/charts/statused-operator" --namespace "$OPERATOR_NS" \
    --show-only templates/serviceaccount.yaml --show-only templates/rbac.yaml \
    --show-only templates/aggregate-roles.yaml \
    | $k apply -f - >/dev/null
  helm template statused-notekton "$ROOT/charts/statused-operator" --namespace "$OPERATOR_NS" \
    --set tekton.enabled=false --set serviceAccount.name="$NOTEKTON_SA" \
    --show-only templates/serviceaccount.yaml --show-only templates/rbac.yaml \
    | $k apply -f - >/dev/null
  local crds=(crd/statusedroutes.statused.dev crd/statuseddeliveries.statused.dev crd/statusedredeliveries.statused.dev)
  if [ -z "$BARE" ]; then
    $k apply -f "$ROOT/tests/fixtures/crds/" >/dev/null
    crds+=(crd/pipelineruns.tekton.dev crd/workflows.argoproj.io)
  fi
  $k wait --for condition=established --timeout 60s "${crds[@]}" >/dev/null
  # RBAC is enforced as soon as it is stored, but wait until the operator sees it.
  for _ in $(seq 1 60); do
    kubectl --kubeconfig "$dir/operator.kubeconfig" auth can-i list statusedroutes.statused.dev -A >/dev/null 2>&1 && break
    sleep 0.5
  done
  echo "cluster up: $server (kubeconfigs in $dir)" >&2
}

# Starts (again) the API server of a cluster made by `up`, with the same flags and port.
start_apiserver() {
  local dir=$1
  bash "$dir/apiserver.sh" >>"$dir/apiserver.log" 2>&1 &
  echo $! >"$dir/apiserver.pid"
}

down() {
  local dir=$1
  for p in apiserver etcd; do
    if [ -f "$dir/$p.pid" ]; then
      local pid; pid=$(cat "$dir/$p.pid")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
      rm -f "$dir/$p.pid"
    fi
  done
}

cmd=${1:-}; shift || true
if [ "${1:-}" = "--bare" ]; then BARE=1; shift; fi
case "$cmd" in
  up) up "${1:?usage: cluster.sh up [--bare] DIR}" ;;
  down) down "${1:?usage: cluster.sh down DIR}" ;;
  start-apiserver) start_apiserver "${1:?usage: cluster.sh start-apiserver DIR}" ;;
  exec)
    [ "${1:-}" = "--" ] && shift
    dir=$(mktemp -d /tmp/statused-cluster.XXXXXX)
    trap 'down "$dir"; rm -rf "$dir"' EXIT
    up "$dir"
    # shellcheck disable=SC1091
    . "$dir/env"
    "$@"
    ;;
  *) echo "usage: $0 {exec [--bare] -- CMD...|up [--bare] DIR|down DIR}" >&2; exit 2 ;;
esac
