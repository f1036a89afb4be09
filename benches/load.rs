//! `just bench-load`: a burst of unique signed events through the real receiver, measured
//! against raw `StatusedDelivery` creates on the same API server in the same run.
//!
//! Runs under `hack/cluster.sh exec` (a real kube-apiserver + etcd on 127.0.0.1). In order:
//! 1. baseline: `StatusedDelivery` creates straight to the API server from C connections, as
//!    the operator's service account (the durable-write limit the receiver can approach);
//! 2. the operator binary as a child process (chart RBAC, scoped to a namespace), idle RSS;
//! 3. a burst of N unique signed ~1 KiB events from C senders that retry, as Statused does, on
//!    any non-2xx (after `Retry-After`) and on no answer within 30 s, to one route whose
//!    `webhook` target is a sink on 127.0.0.1 counting deliveries per event id;
//! 4. the operator restarted with N deliveries stored, to see what each stored one costs.
//!
//! Figures are ratios to the baseline, so they mean the same on any machine. Every address is
//! on loopback. `cargo bench` runs N = 10,000, C = 32 (override with STATUSED_LOAD_EVENTS and
//! STATUSED_LOAD_CONCURRENCY) to a sink that answers at once (STATUSED_LOAD_SINK_LATENCY_MS=300
//! makes it answer each call in 300 ms, as real CI and chat APIs do;
//! STATUSED_LOAD_SINK_AT_ONCE=2 makes it work on two calls at a time and queue the rest, as a
//! server that takes few requests at once does: a flood of calls to it times out and repeats;
//! STATUSED_BENCH_ORDERING=inOrder orders the calls per app, 100 events each, and counts the
//! events delivered out of order); `cargo test --bench load` is the smoke CI runs (N = 200,
//! C = 8), which asserts correctness only: nothing unanswered, lost, duplicated or (ordered)
//! out of order, never timing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use harness::{
    Operator, Tally, burst, client_from, create_namespace, event, events, mib, percentile,
    prepare_route, start_slow_sink, wait_delivered, wait_ready,
};
use kube::Client;
use kube::api::{Api, ObjectMeta, Patch, PostParams};
use statused_operator::api::{
    DeliveredEvent, MatchedTarget, StatusedDelivery, StatusedDeliverySpec,
};

struct Settings {
    events: usize,
    concurrency: usize,
    /// How long the sink takes to answer each call (STATUSED_LOAD_SINK_LATENCY_MS; 0: at once).
    sink_latency: Duration,
    /// How many calls the sink works on at once (STATUSED_LOAD_SINK_AT_ONCE; 0: any number).
    sink_at_once: Option<usize>,
}

impl Settings {
    fn from_env() -> Self {
        // `cargo bench` passes --bench to a harness-less bench; `cargo test` does not.
        let smoke = !std::env::args().any(|a| a == "--bench");
        let var = harness::env_number::<usize>;
        Self {
            events: var("STATUSED_LOAD_EVENTS", if smoke { 200 } else { 10_000 }),
            concurrency: var("STATUSED_LOAD_CONCURRENCY", if smoke { 8 } else { 32 }),
            sink_latency: Duration::from_millis(var("STATUSED_LOAD_SINK_LATENCY_MS", 0) as u64),
            sink_at_once: Some(var("STATUSED_LOAD_SINK_AT_ONCE", 0)).filter(|n| *n > 0),
        }
    }
}

/// (a) The baseline: `count` creates of receiver-shaped deliveries from `concurrency` tasks.
async fn raw_create_rate(client: &Client, ns: &str, count: usize, concurrency: usize) -> f64 {
    let api: Api<StatusedDelivery> = Api::namespaced(client.clone(), ns);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (api, next) = (api.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        break;
                    }
                    let (id, body) = event(&format!("raw-{i:06}"), i);
                    let envelope: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    let delivery = StatusedDelivery {
                        metadata: ObjectMeta {
                            name: Some(format!("raw-{i:06}")),
                            labels: Some(
                                [("statused.dev/route".to_string(), "raw".to_string())].into(),
                            ),
                            ..Default::default()
                        },
                        spec: StatusedDeliverySpec {
                            route: "raw".into(),
                            route_uid: None,
                            event: DeliveredEvent {
                                id,
                                type_: envelope["type"].as_str().unwrap().into(),
                                source: "statused".into(),
                                time: None,
                                subject: None,
                                data: envelope["data"].clone(),
                            },
                            matched: vec![MatchedTarget {
                                rule: "all".into(),
                                target: 0,
                                kind: "webhook".into(),
                                ordering: None,
                                follow: None,
                                after: None,
                            }],
                            traceparent: None,
                        },
                        status: None,
                    };
                    api.create(&PostParams::default(), &delivery).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    count as f64 / start.elapsed().as_secs_f64()
}

/// (a') What the executor's one status write per event costs on its own: `count` merge
/// patches of a finished status onto the raw deliveries, conditional on their
/// resourceVersion as the executor's are, from `concurrency` tasks. With the create, the
/// least an event costs the API server: `1 / (1/creates + 1/patches)` events a second.
async fn raw_status_rate(client: &Client, ns: &str, count: usize, concurrency: usize) -> f64 {
    let api: Api<StatusedDelivery> = Api::namespaced(client.clone(), ns);
    // Their versions, as the executor knows them from its watch (read before the clock runs).
    let versions: Arc<HashMap<String, Option<String>>> = Arc::new(
        (api.list_metadata(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter())
        .map(|d| {
            (
                d.metadata.name.unwrap_or_default(),
                d.metadata.resource_version,
            )
        })
        .collect(),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (api, next, versions) = (api.clone(), next.clone(), versions.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        break;
                    }
                    let name = format!("raw-{i:06}");
                    let now = jiff::Timestamp::now().to_string();
                    let patch = serde_json::json!({
                        "metadata": {"resourceVersion": versions[&name]},
                        "status": {"phase": "Succeeded", "attempts": 1, "completedAt": now, "targets": [{
                            "rule": "all", "target": 0, "kind": "webhook", "phase": "Succeeded",
                            "attempts": 1, "lastResponseCode": 204, "completedAt": now,
                        }]},
                    });
                    api.patch_status(&name, &Default::default(), &Patch::Merge(&patch))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    count as f64 / start.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    if !harness::cluster_or_explain("load", "bench-load") {
        return;
    }
    statused_operator::install_crypto_provider();
    let settings = Settings::from_env();
    let (n, c) = (settings.events, settings.concurrency);
    let admin = client_from("STATUSED_TEST_ADMIN_KUBECONFIG").await;
    let operator_client = client_from("STATUSED_TEST_OPERATOR_KUBECONFIG").await;
    let log = std::env::temp_dir().join(format!("statused-load-{}.log", std::process::id()));
    println!(
        "load: N = {n} events, C = {c} senders, the sink answers in {} ms, {} at once, ordering {}; operator log {}",
        settings.sink_latency.as_millis(),
        settings
            .sink_at_once
            .map_or("any number".to_string(), |n| n.to_string()),
        harness::ordering().map_or("none".to_string(), |p| format!(
            "{p} by app ({} events each)",
            harness::EVENTS_PER_APP
        )),
        log.display()
    );

    // (a) The baseline, in a namespace no operator watches.
    let raw_ns = create_namespace(&admin, "load-raw").await;
    let raw_count = n.clamp(200, 3000);
    let raw_rate = raw_create_rate(&operator_client, &raw_ns, raw_count, c).await;
    println!("raw StatusedDelivery creates ({raw_count}, C = {c}): {raw_rate:.0}/s (baseline)");
    let patch_rate = raw_status_rate(&operator_client, &raw_ns, raw_count, c).await;
    println!(
        "raw status patches ({raw_count}, C = {c}): {patch_rate:.0}/s = {:.2}x raw; a create and a patch: {:.2}x raw",
        patch_rate / raw_rate,
        1.0 / (1.0 / raw_rate + 1.0 / patch_rate) / raw_rate
    );

    // (b) The operator, a route to the sink, and the burst.
    let ns = create_namespace(&admin, "load").await;
    let (sink, counts) = start_slow_sink(settings.sink_latency, settings.sink_at_once).await;
    prepare_route(&admin, &ns, sink).await;
    let collector = if harness::traces() {
        Some(harness::start_collector().await)
    } else {
        None
    };
    let mut options = harness::OperatorOptions::new(&ns, &log).unbounded_storage();
    if let Some((endpoint, _)) = &collector {
        options
            .args
            .extend(["--otlp-endpoint".into(), endpoint.clone()]);
    }
    let op = Operator::start_with(&options).await;
    let idle_rss = op.rss().0;
    wait_ready(&admin, &ns).await;
    let url = format!("http://{}/hooks/{ns}/load", op.webhook);
    let budget = Duration::from_secs(120) + Duration::from_millis(100 * n as u64);
    let events = events(&format!("load-{:08x}", fastrand::u32(..)), n);
    let requests_before = harness::delivery_requests(&admin).await;
    let start = Instant::now();
    let mut sent = burst(url, events, c, Duration::ZERO, start + budget).await;
    let accept_secs = sent
        .last_accept
        .map_or(f64::NAN, |t| (t - start).as_secs_f64());

    wait_delivered(&counts, &sent.accepted, budget).await;
    // Late repeats would show up now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let peak_rss = op.rss().1;
    // Receiving and delivering them all (the 3 s above add next to nothing idle).
    let cpu = op.cpu();
    let requests = harness::delivery_requests(&admin).await;

    let (tally, deliver_secs, out_of_order) = {
        let counts = counts.lock().unwrap();
        let secs = counts
            .last_new
            .map_or(f64::NAN, |t| (t - start).as_secs_f64());
        (
            counts.tally("load-", &sent.accepted),
            secs,
            counts.out_of_order(&sent),
        )
    };
    let Tally {
        lost,
        duplicated,
        unasked: stray,
        ..
    } = tally;
    op.stop().await;
    let traced = collector.map(|(_, c)| {
        let c = c.lock().unwrap();
        (c.requests, c.spans, c.traces.len())
    });

    // (c) What each stored delivery costs an operator that starts with them all in place.
    let stored = Api::<StatusedDelivery>::namespaced(admin.clone(), &ns)
        .list_metadata(&Default::default())
        .await
        .unwrap()
        .items
        .len();
    let op = Operator::start(&ns, &log).await;
    // Let the executor list and look at every stored delivery.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let stored_rss = op.rss().0;
    op.stop().await;

    sent.latencies.sort();
    let accepted = sent.accepted.len();
    let accept_rate = accepted as f64 / accept_secs;
    let deliver_rate = (accepted - lost) as f64 / deliver_secs;
    let mut statuses: Vec<_> = sent.by_status.iter().collect();
    statuses.sort();
    println!("burst: {n} events from {c} senders");
    println!(
        "  accepted           {accepted} in {accept_secs:.1} s: {accept_rate:.0}/s = {:.2}x raw   (goal >= 0.5x)",
        accept_rate / raw_rate
    );
    println!(
        "  delivered          {} in {deliver_secs:.1} s: {deliver_rate:.0}/s = {:.2}x raw   (goal >= 0.25x)",
        accepted - lost,
        deliver_rate / raw_rate
    );
    println!(
        "  accept latency     p50 {:.0} ms, p99 {:.0} ms   (goal p99 < 1000 ms)",
        percentile(&sent.latencies, 0.50).as_secs_f64() * 1000.0,
        percentile(&sent.latencies, 0.99).as_secs_f64() * 1000.0
    );
    println!("  answers            {statuses:?}");
    println!("  unanswered         {}", sent.unanswered);
    println!("  not accepted       {}", sent.refused.len());
    println!("  lost               {lost}");
    println!("  duplicated         {duplicated}");
    println!("  delivered unasked  {stray} (delivered, but the sender never saw a 2xx)");
    println!(
        "  out of app order   {} pairs, {} of them stored in order (first delivered after a later event of their app)",
        out_of_order.0, out_of_order.1
    );
    println!(
        "  operator CPU       {:.2} ms per event ({:.1} s in all; the API server's is not counted)",
        cpu.as_secs_f64() * 1000.0 / accepted.max(1) as f64,
        cpu.as_secs_f64()
    );
    println!(
        "  API requests       {} per event, on deliveries (the baseline: create 1.00)",
        harness::requests_per_event(&requests_before, &requests, accepted)
    );
    // The most the API server alone allows for the writes each event made, at the raw rates:
    // what the delivered rate is bound by on a machine whose cores the operator shares.
    let per_event = |verb: &str| {
        (requests.get(verb).unwrap_or(&0.0) - requests_before.get(verb).unwrap_or(&0.0))
            / accepted.max(1) as f64
    };
    let ceiling = 1.0 / (per_event("POST") / raw_rate + per_event("PATCH/status") / patch_rate);
    println!(
        "  API server bound   {ceiling:.0}/s = {:.2}x raw for these writes alone; delivered at {:.0}% of it",
        ceiling / raw_rate,
        100.0 * deliver_rate / ceiling
    );
    println!(
        "  operator RSS       idle {:.0} MiB, peak {:.0} MiB   (goal < 150 MiB)",
        mib(idle_rss),
        mib(peak_rss)
    );
    println!(
        "  stored deliveries  {stored}: RSS {:.0} MiB after a restart = {:.2} MiB per 1,000",
        mib(stored_rss),
        mib(stored_rss.saturating_sub(idle_rss)) * 1000.0 / stored.max(1) as f64
    );

    let mut failures = Vec::new();
    if let Some((requests, spans, traces)) = traced {
        println!(
            "  traces             {spans} spans in {traces} traces, {requests} OTLP requests ({:.1} spans per accepted event)",
            spans as f64 / accepted.max(1) as f64
        );
        // Not a failure when fewer: past 4,096 queued spans the export drops by design.
    }
    if sent.unanswered > 0 {
        failures.push(format!("{} requests unanswered", sent.unanswered));
    }
    if !sent.refused.is_empty() {
        failures.push(format!(
            "{} events never accepted, e.g. {:?}",
            sent.refused.len(),
            &sent.refused[..sent.refused.len().min(3)]
        ));
    }
    if lost > 0 {
        failures.push(format!("{lost} accepted events never delivered"));
    }
    if duplicated > 0 {
        failures.push(format!("{duplicated} events delivered more than once"));
    }
    if harness::ordering().is_some() && out_of_order.1 > 0 {
        failures.push(format!(
            "{} pairs of events stored in order delivered out of order (inOrder)",
            out_of_order.1
        ));
    }
    if failures.is_empty() {
        println!("load: 1 passed, 0 failed");
    } else {
        println!("load: 0 passed, 1 failed: {}", failures.join("; "));
        std::process::exit(1);
    }
}
