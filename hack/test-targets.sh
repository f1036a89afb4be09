#!/usr/bin/env bash
# The integration-test targets `just test` runs against a cluster, found in tests/ rather than
# listed by hand, so a new test file runs without a Justfile edit. A test that needs the local
# cluster (or a tool hack/just installs) is marked `#[ignore = "needs ...: hack/just test"]`:
# a plain `cargo test` skips it and says why, and `just test` runs it with `--ignored`. Its
# reason also says which cluster:
#
#   hack/test-targets.sh cluster   targets with ignored tests, for the usual cluster
#   hack/test-targets.sh bare      "... without Tekton and Argo: ...": `hack/cluster.sh exec --bare`
#   hack/test-targets.sh image     "needs the operator image ...": after hack/image.sh
#
# Prints `--test NAME` for each target of the group, for `cargo test`. Fails when the group is
# empty, so that `cargo test $(...)` never falls back to every target. tests/cluster_marks.rs
# checks that every target with an ignored test is in exactly one group.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
group=${1:-}
case "$group" in
  cluster | bare | image) ;;
  *) echo "usage: hack/test-targets.sh cluster|bare|image" >&2; exit 2 ;;
esac

targets=()
for file in "$ROOT"/tests/*.rs "$ROOT"/tests/*/main.rs; do
  [ -f "$file" ] || continue
  grep -q '^ *#\[ignore = "needs ' "$file" || continue
  case "$file" in
    */main.rs) name=$(basename "$(dirname "$file")") ;;
    *) name=$(basename "$file" .rs) ;;
  esac
  if grep -q '#\[ignore = "needs [^"]* without Tekton and Argo: ' "$file"; then
    this=bare
  elif grep -q '#\[ignore = "needs the operator image' "$file"; then
    this=image
  else
    this=cluster
  fi
  if [ "$this" = "$group" ]; then targets+=(--test "$name"); fi
done

if [ ${#targets[@]} -eq 0 ]; then
  echo "hack/test-targets.sh: no test target in group '$group'" >&2
  exit 1
fi
echo "${targets[@]}"
