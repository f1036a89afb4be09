# statused-operator tasks. `just --list` shows them.

export PATH := env_var('HOME') + "/.cache/statused-operator/bin:" + env_var('PATH')
# The benches run inside `hack/cluster.sh exec` here: without its environment they fail
# instead of printing how to run them (what they do under a plain `cargo test --all-targets`).
export STATUSED_REQUIRE_CLUSTER := "1"

# Start a local API server, run the operator, apply a sample route, send a signed sample
# event and show the result with kubectl.
demo: tools
    bash hack/demo.sh

# Run every test: those that need nothing, then against a real API server the ones marked
# `#[ignore = "needs ...: hack/just test"]`, found by hack/test-targets.sh (no list to keep).
test: tools
    cargo build --tests --locked
    # No cluster: what a plain `cargo test` runs (the marked tests show as ignored).
    cargo test --locked
    targets="$(hack/test-targets.sh cluster)" && hack/cluster.sh exec -- cargo test --locked $targets -- --ignored --test-threads 4
    # Tekton and Argo not installed: a cluster of its own, without their CRDs.
    targets="$(hack/test-targets.sh bare)" && hack/cluster.sh exec --bare -- cargo test --locked $targets -- --ignored
    # The load benchmark's smoke (N = 200): nothing unanswered, lost or duplicated; no timing.
    hack/cluster.sh exec -- cargo test --locked --bench load
    # The same with the calls ordered per app (inOrder, 100 events each): also none out of order.
    STATUSED_BENCH_ORDERING=inOrder hack/cluster.sh exec -- cargo test --locked --bench load
    # A sink that works on two calls at a time, 100 ms each: 300 events flooding it would wait
    # past the 10 s call timeout and be called again; none may be called twice.
    STATUSED_LOAD_EVENTS=300 STATUSED_LOAD_SINK_AT_ONCE=2 STATUSED_LOAD_SINK_LATENCY_MS=100 hack/cluster.sh exec -- cargo test --locked --bench load
    # One team attacks, another sends steady events (5 s): bounds that hold by construction.
    hack/cluster.sh exec -- cargo test --locked --bench noisy_neighbour
    # The attacks of issue 25 (unsigned floods, deliveries held whole, a quota, slow
    # uploads), 5 s each: what holds by construction.
    hack/cluster.sh exec -- cargo test --locked --bench attack
    # Faults (API server frozen, killed and restarted; operator killed) with N = 300 each:
    # a cluster of its own, since it kills the API server.
    hack/cluster.sh exec -- cargo test --locked --bench chaos
    # The image, built as `just image` builds it, run with runc as the chart runs it.
    bash hack/image.sh
    targets="$(hack/test-targets.sh image)" && STATUSED_TEST_IMAGE="$(cat target/image/ref)" hack/cluster.sh exec -- cargo test --locked $targets -- --ignored
    helm lint --strict charts/statused-operator
    cargo clippy --locked --all-targets -- -D warnings
    # Doc links (e.g. the executor's files, named as intra-doc links) resolve.
    RUSTDOCFLAGS="-D warnings -A rustdoc::private-intra-doc-links" cargo doc --locked --no-deps --document-private-items
    cargo fmt --check

# The receiver's per-event cost as a ratio to one HMAC measured in the same run.
bench:
    cargo bench --locked --bench receiver

# A burst of signed events through the receiver to a local sink, as ratios to raw API-server
# creates in the same run (N = 10,000, C = 32; STATUSED_LOAD_EVENTS / _CONCURRENCY override;
# STATUSED_LOAD_SINK_LATENCY_MS=300 makes the sink answer each call in 300 ms, as real CI
# and chat APIs do; STATUSED_LOAD_SINK_AT_ONCE=2 makes it work on two calls at a time, as a
# server that takes few requests at once: nothing may be called twice; STATUSED_BENCH_ORDERING=inOrder
# orders the calls per app, 100 events each).
bench-load: tools
    hack/cluster.sh exec -- cargo bench --locked --bench load

# One team attacks the shared operator (costly routes, over-limit events, slow uploads) while
# another sends signed events at a steady rate: the victim's latency, deliveries, peak RSS.
bench-noisy: tools
    hack/cluster.sh exec -- cargo bench --locked --bench noisy_neighbour

# Each attack of issue 25 from one namespace while another sends signed events steadily
# (STATUSED_ATTACK=secrets,memory,quota,uploads picks some; `full` stores 20,000 deliveries
# and starts the operator on them): the victim's latency and deliveries, /healthz, the
# operator's peak RSS and restarts, what the attacker got.
attack: tools
    hack/cluster.sh exec -- cargo bench --locked --bench attack

# The operator's OCI image without a daemon (umoci + skopeo): target/image/oci (OCI layout)
# and target/image/statused-operator.tar (docker-archive, `docker load -i`).
image: tools
    bash hack/image.sh

# Faults injected mid-stream (API server frozen, killed and restarted; operator killed),
# N = 2,000 per scenario: sent, accepted, delivered, lost, duplicated.
chaos: tools
    hack/cluster.sh exec -- cargo bench --locked --bench chaos

# Install just, etcd, helm, kubectl and build the cached kube-apiserver.
tools:
    bash hack/install-tools.sh

# Regenerate the CRD YAML from the Rust types.
crds:
    cargo run --quiet -- crd > crds/statused.dev.yaml
    cargo run --quiet -- crd --helm > charts/statused-operator/templates/crds.yaml

# Lint the Helm chart.
lint-chart: tools
    helm lint charts/statused-operator
