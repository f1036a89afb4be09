#!/usr/bin/env bash
# The operator's main job on a local default: a local API server, the operator, a sample
# route and Secrets, two signed sample events, and the result as kubectl shows it.
# Everything it starts is stopped when it ends.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export PATH="${STATUSED_CACHE:-$HOME/.cache/statused-operator}/bin:$PATH"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

cargo build --quiet --locked
OPERATOR="${CARGO_TARGET_DIR:-$ROOT/target}/debug/statused-operator"
dir=$(mktemp -d /tmp/statused-demo.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  hack/cluster.sh down "$dir"
  rm -rf "$dir"
}
trap cleanup EXIT
hack/cluster.sh up "$dir"
export KUBECONFIG="$dir/admin.kubeconfig"

sink_port=$(free_port); webhook_port=$(free_port); metrics_port=$(free_port)
python3 hack/sink.py "$sink_port" >"$dir/sink.log" 2>&1 &
pids+=($!)
KUBECONFIG="$dir/operator.kubeconfig" "$OPERATOR" run \
  --webhook-addr "127.0.0.1:$webhook_port" --metrics-addr "127.0.0.1:$metrics_port" \
  --egress-allow 127.0.0.1/32 \
  >"$dir/operator.log" 2>&1 &
pids+=($!)

echo "==> applying the sample route and its Secrets (namespace default)"
sed "s#SINK_URL#http://127.0.0.1:$sink_port#g" examples/demo-route.yaml | kubectl apply -f - >/dev/null
kubectl wait --for=condition=Ready --timeout=60s statusedroute/releases >/dev/null

url="http://127.0.0.1:$webhook_port/hooks/default/releases"
for sample in build-valid.json app-ready-for-sale.json; do
  echo "==> POST signed $sample to $url"
  "$OPERATOR" send "tests/fixtures/samples/$sample" --now --url "$url" --secret statused-test-secret
done

for _ in $(seq 1 100); do
  phases=$(kubectl get statuseddeliveries -o jsonpath='{.items[*].status.phase}')
  [ "$phases" = "Succeeded Succeeded" ] && break
  sleep 0.2
done
# Route status (lastEvent/lastDelivery) is written every few seconds, coalesced.
for _ in $(seq 1 50); do
  [ -n "$(kubectl get statusedroute releases -o jsonpath='{.status.lastDelivery.phase}')" ] && break
  sleep 0.2
done

echo
echo "==> kubectl get statusedroutes,statuseddeliveries"
kubectl get statusedroutes,statuseddeliveries
echo
echo "==> what the local GitHub / chat stand-in received"
cat "$dir/sink.log"
[ "$phases" = "Succeeded Succeeded" ] || { echo "deliveries did not succeed; operator log:" >&2; tail -n 30 "$dir/operator.log" >&2; exit 1; }
