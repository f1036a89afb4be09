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
//! STATUSED_LOAD_CONCURRENCY); `cargo test --bench load` is the smoke CI runs (N = 200, C = 8),
//! which asserts correctness only: nothing unanswered, lost or duplicated, never timing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use statused_operator::api::{
    DeliveredEvent, MatchedTarget, StatusedDelivery, StatusedDeliverySpec, StatusedRoute,
};
use tokio::process::{Child, Command};

const SECRET: &str = "statused-load-secret";
/// How long a sender waits for an answer before it counts the request as unanswered.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest `Retry-After` a sender honours (Statused retries sooner than a careful server asks).
const MAX_SENDER_WAIT: Duration = Duration::from_secs(5);

struct Settings {
    events: usize,
    concurrency: usize,
}

impl Settings {
    fn from_env() -> Self {
        // `cargo bench` passes --bench to a harness-less bench; `cargo test` does not.
        let smoke = !std::env::args().any(|a| a == "--bench");
        let var = |name: &str, default: usize| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        Self {
            events: var("STATUSED_LOAD_EVENTS", if smoke { 200 } else { 10_000 }),
            concurrency: var("STATUSED_LOAD_CONCURRENCY", if smoke { 8 } else { 32 }),
        }
    }
}

async fn client_from(var: &str) -> Client {
    let path = std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run through `just bench-load` (hack/cluster.sh starts the API server)")
    });
    let kubeconfig = Kubeconfig::read_from(&path).unwrap();
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

async fn create_namespace(admin: &Client, prefix: &str) -> String {
    let ns = format!("{prefix}-{:08x}", fastrand::u32(..));
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(ns.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();
    ns
}

/// A ~1 KiB build event with a unique id, as Statused sends it.
fn event(run: u32, i: usize) -> (String, Vec<u8>) {
    let id = format!("load-{run:08x}-{i:06}");
    let body = serde_json::json!({
        "specversion": "1.0", "type": "com.statused.build.status.updated", "source": "statused",
        "id": id, "time": jiff::Timestamp::now().to_string(), "datacontenttype": "application/json",
        "data": {
            "app_name": "Pocket Ledger", "version": "4.0.0", "build_version": format!("{i}"),
            "status": "Valid", "store_name": "App Store Connect", "track": "TestFlight",
            "message": "x".repeat(700), "status_color": "#1eb6fc",
            "app_icon_url": "https://is1-ssl.mzstatic.com/image/thumb/icon.png",
        }
    });
    (id, serde_json::to_vec(&body).unwrap())
}

/// (a) The baseline: `count` creates of receiver-shaped deliveries from `concurrency` tasks.
async fn raw_create_rate(client: &Client, ns: &str, count: usize, concurrency: usize) -> f64 {
    let api: Api<StatusedDelivery> = Api::namespaced(client.clone(), ns);
    let next = Arc::new(AtomicUsize::new(0));
    let run = fastrand::u32(..);
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
                    let (id, body) = event(run, i);
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
                            }],
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

/// Deliveries per event id, and when the last new one arrived.
#[derive(Default)]
struct Counts {
    by_id: HashMap<String, u32>,
    last_new: Option<Instant>,
}

async fn start_sink() -> (SocketAddr, Arc<Mutex<Counts>>) {
    let counts = Arc::new(Mutex::new(Counts::default()));
    let c = counts.clone();
    let app = axum::Router::new().fallback(move |headers: HeaderMap| {
        let c = c.clone();
        async move {
            let id = headers
                .get("x-statused-event-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let mut counts = c.lock().unwrap();
            let n = counts.by_id.entry(id).or_default();
            *n += 1;
            if *n == 1 {
                counts.last_new = Some(Instant::now());
            }
            axum::http::StatusCode::NO_CONTENT
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, counts)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The operator binary, as the chart runs it, scoped to `ns`.
struct Operator {
    child: Child,
    webhook: SocketAddr,
    metrics: SocketAddr,
}

impl Operator {
    async fn start(ns: &str, log: &std::path::Path) -> Self {
        let webhook = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_statused-operator"))
            .args(["run", "--namespace", ns, "--log-format", "json"])
            .args(["--webhook-addr", &webhook.to_string()])
            .args(["--metrics-addr", &metrics.to_string()])
            .args(["--retry-base-seconds", "0.2", "--retry-max-seconds", "2"])
            .env(
                "KUBECONFIG",
                std::env::var("STATUSED_TEST_OPERATOR_KUBECONFIG").unwrap(),
            )
            .env("RUST_LOG", "warn")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let op = Self {
            child,
            webhook,
            metrics,
        };
        let http = reqwest::Client::new();
        for _ in 0..300 {
            let url = format!("http://{}/readyz", op.metrics);
            if http
                .get(url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return op;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("operator not ready after 30 s; see its log");
    }

    /// (current, peak) resident set size in bytes, from /proc.
    fn rss(&self) -> (u64, u64) {
        let pid = self.child.id().expect("operator running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let kib = |field: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .unwrap_or(0)
                * 1024
        };
        (kib("VmRSS:"), kib("VmHWM:"))
    }

    async fn stop(mut self) {
        let pid = self.child.id().expect("operator running");
        // SIGTERM: a graceful stop, as Kubernetes does it.
        let _ = std::process::Command::new("kill")
            .arg(pid.to_string())
            .status();
        if tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// Everything the senders saw.
#[derive(Default)]
struct Sent {
    /// Event ids that got a 2xx.
    accepted: Vec<String>,
    /// Latency of every answered request.
    latencies: Vec<Duration>,
    /// Requests with no answer within [`ANSWER_TIMEOUT`].
    unanswered: usize,
    /// Events given up on (a permanent refusal, or still refused at the deadline).
    refused: Vec<(String, u16)>,
    by_status: HashMap<u16, usize>,
    last_accept: Option<Instant>,
}

async fn burst(url: &str, run: u32, events: usize, concurrency: usize, deadline: Instant) -> Sent {
    let http = reqwest::Client::builder()
        .timeout(ANSWER_TIMEOUT)
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap();
    let sent = Arc::new(Mutex::new(Sent::default()));
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (http, sent, next, url) =
                (http.clone(), sent.clone(), next.clone(), url.to_string());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= events {
                        break;
                    }
                    let (id, body) = event(run, i);
                    let signature = statused_operator::signature::sign(SECRET.as_bytes(), &body);
                    loop {
                        let started = Instant::now();
                        let answer = http
                            .post(&url)
                            .header("X-Statused-Signature", &signature)
                            .header("Content-Type", "application/cloudevents+json")
                            .body(body.clone())
                            .send()
                            .await;
                        let wait = match answer {
                            Err(_) => {
                                sent.lock().unwrap().unanswered += 1;
                                Duration::from_millis(100)
                            }
                            Ok(response) => {
                                let code = response.status().as_u16();
                                let retry_after = response
                                    .headers()
                                    .get("retry-after")
                                    .and_then(|v| v.to_str().ok())
                                    .and_then(|v| v.parse::<u64>().ok())
                                    .map(Duration::from_secs);
                                let _ = response.bytes().await;
                                let mut s = sent.lock().unwrap();
                                s.latencies.push(started.elapsed());
                                *s.by_status.entry(code).or_default() += 1;
                                if (200..300).contains(&code) {
                                    s.accepted.push(id.clone());
                                    s.last_accept = Some(Instant::now());
                                    break;
                                }
                                if !matches!(code, 408 | 429 | 500..=599) {
                                    s.refused.push((id.clone(), code));
                                    break;
                                }
                                retry_after
                                    .unwrap_or(Duration::from_secs(1))
                                    .min(MAX_SENDER_WAIT)
                            }
                        };
                        if Instant::now() + wait > deadline {
                            sent.lock().unwrap().refused.push((id.clone(), 0));
                            break;
                        }
                        tokio::time::sleep(wait).await;
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    Arc::try_unwrap(sent)
        .ok()
        .expect("senders done")
        .into_inner()
        .unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

async fn wait_route_ready(routes: &Api<StatusedRoute>, name: &str) {
    for _ in 0..300 {
        if let Ok(route) = routes.get(name).await
            && let Some(status) = route.status
            && status
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("route {name} not Ready after 30 s");
}

#[tokio::main]
async fn main() {
    statused_operator::install_crypto_provider();
    let settings = Settings::from_env();
    let (n, c) = (settings.events, settings.concurrency);
    let admin = client_from("STATUSED_TEST_ADMIN_KUBECONFIG").await;
    let operator_client = client_from("STATUSED_TEST_OPERATOR_KUBECONFIG").await;
    let log = std::env::temp_dir().join(format!("statused-load-{}.log", std::process::id()));
    println!(
        "load: N = {n} events, C = {c} senders; operator log {}",
        log.display()
    );

    // (a) The baseline, in a namespace no operator watches.
    let raw_ns = create_namespace(&admin, "load-raw").await;
    let raw_count = n.clamp(200, 3000);
    let raw_rate = raw_create_rate(&operator_client, &raw_ns, raw_count, c).await;
    println!("raw StatusedDelivery creates ({raw_count}, C = {c}): {raw_rate:.0}/s (baseline)");

    // (b) The operator, a route to the sink, and the burst.
    let ns = create_namespace(&admin, "load").await;
    let (sink, counts) = start_sink().await;
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), &ns);
    for (name, key, value) in [
        ("statused-webhook", "secret", SECRET.to_string()),
        ("sink", "url", format!("http://{sink}/deliver")),
    ] {
        let secret = serde_json::json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
            "stringData": {key: value},
        });
        secrets
            .patch(name, &PatchParams::apply("load"), &Patch::Apply(&secret))
            .await
            .unwrap();
    }
    let op = Operator::start(&ns, &log).await;
    let idle_rss = op.rss().0;
    let routes: Api<StatusedRoute> = Api::namespaced(admin.clone(), &ns);
    let route = serde_json::json!({
        "apiVersion": "statused.dev/v1alpha1", "kind": "StatusedRoute",
        "metadata": {"name": "load"},
        "spec": {
            "signingSecrets": [{"name": "statused-webhook"}],
            "rules": [{"name": "builds", "match": {"types": ["com.statused.build.status.updated"]},
                       "targets": [{"webhook": {"urlSecretRef": {"name": "sink", "key": "url"}}}]}],
        },
    });
    routes
        .patch("load", &PatchParams::apply("load"), &Patch::Apply(&route))
        .await
        .unwrap();
    wait_route_ready(&routes, "load").await;

    let url = format!("http://{}/hooks/{ns}/load", op.webhook);
    let run = fastrand::u32(..);
    let budget = Duration::from_secs(120) + Duration::from_millis(100 * n as u64);
    let start = Instant::now();
    let mut sent = burst(&url, run, n, c, start + budget).await;
    let accept_secs = sent
        .last_accept
        .map_or(f64::NAN, |t| (t - start).as_secs_f64());

    // Until every accepted event has reached the sink, or the budget is spent.
    let deliver_deadline = Instant::now() + budget;
    loop {
        let delivered = {
            let counts = counts.lock().unwrap();
            sent.accepted
                .iter()
                .filter(|id| counts.by_id.contains_key(*id))
                .count()
        };
        if delivered == sent.accepted.len() || Instant::now() > deliver_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Late repeats would show up now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let peak_rss = op.rss().1;

    let (lost, duplicated, stray, deliver_secs) = {
        let counts = counts.lock().unwrap();
        let lost = sent
            .accepted
            .iter()
            .filter(|id| !counts.by_id.contains_key(*id))
            .count();
        let duplicated = counts.by_id.values().filter(|&&k| k > 1).count();
        // Delivered without the sender ever seeing a 2xx (a later retry was refused or none came).
        let accepted: std::collections::HashSet<_> = sent.accepted.iter().collect();
        let stray = counts
            .by_id
            .keys()
            .filter(|id| !accepted.contains(id))
            .count();
        let secs = counts
            .last_new
            .map_or(f64::NAN, |t| (t - start).as_secs_f64());
        (lost, duplicated, stray, secs)
    };
    op.stop().await;

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
    if failures.is_empty() {
        println!("load: 1 passed, 0 failed");
    } else {
        println!("load: 0 passed, 1 failed: {}", failures.join("; "));
        std::process::exit(1);
    }
}
