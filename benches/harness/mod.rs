//! What the load and chaos benchmarks share: clients for the API server that
//! `hack/cluster.sh` started, signed events, a sink on 127.0.0.1 counting deliveries per
//! event id, the operator binary as a child process, and senders that retry as Statused does.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
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
use statused_operator::api::StatusedRoute;
use tokio::process::{Child, Command};

pub mod victim;

pub const SECRET: &str = "statused-load-secret";
/// How long a sender waits for an answer before it counts the request as unanswered.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest `Retry-After` a sender honours (Statused retries sooner than a careful server asks).
const MAX_SENDER_WAIT: Duration = Duration::from_secs(5);

/// Whether the local cluster's environment (`hack/cluster.sh exec`) is here. Without it, as
/// under a plain `cargo test --all-targets` or `cargo bench`, a bench says how to run it and
/// stops, the way libtest reports an ignored test, instead of panicking on its first client.
/// `hack/just` sets STATUSED_REQUIRE_CLUSTER and always runs the benches inside the cluster, so
/// there a missing environment is a mistake and fails loudly rather than passing unrun.
pub fn cluster_or_explain(bench: &str, recipe: &str) -> bool {
    if std::env::var_os("STATUSED_TEST_CLUSTER_DIR").is_some() {
        return true;
    }
    assert!(
        std::env::var_os("STATUSED_REQUIRE_CLUSTER").is_none(),
        "{bench}: STATUSED_TEST_CLUSTER_DIR is not set: run it inside `hack/cluster.sh exec`"
    );
    println!(
        "{bench}: ignored, needs the local cluster: `hack/just test` runs its smoke, \
         `hack/just {recipe}` the full run"
    );
    false
}

/// The number in environment variable `name`, or `default`.
pub fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub async fn client_from(var: &str) -> Client {
    let path = std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run through `just bench-load` (hack/cluster.sh starts the API server)")
    });
    let kubeconfig = Kubeconfig::read_from(&path).unwrap();
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

pub async fn create_namespace(admin: &Client, prefix: &str) -> String {
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

/// `count` unique signed-ready events whose ids start with `prefix`.
pub fn events(prefix: &str, count: usize) -> Arc<Vec<(String, Vec<u8>)>> {
    Arc::new(
        (0..count)
            .map(|i| event(&format!("{prefix}-{i:06}"), i))
            .collect(),
    )
}

/// Events per app: the ordering key of `STATUSED_BENCH_ORDERING` (`data.app_name`).
pub const EVENTS_PER_APP: usize = 100;

/// A ~1 KiB build event with the id `id`, as Statused sends it; event `i` is about app
/// `i / EVENTS_PER_APP`, and its time is now (so later events have later times).
pub fn event(id: &str, i: usize) -> (String, Vec<u8>) {
    let id = id.to_string();
    let body = serde_json::json!({
        "specversion": "1.0", "type": "com.statused.build.status.updated", "source": "statused",
        "id": id, "time": jiff::Timestamp::now().to_string(), "datacontenttype": "application/json",
        "data": {
            "app_name": format!("Pocket Ledger {}", i / EVENTS_PER_APP), "version": "4.0.0",
            "build_version": format!("{i}"),
            "status": "Valid", "store_name": "App Store Connect", "track": "TestFlight",
            "message": "x".repeat(700), "status_color": "#1eb6fc",
            "app_icon_url": "https://is1-ssl.mzstatic.com/image/thumb/icon.png",
        }
    });
    (id, serde_json::to_vec(&body).unwrap())
}

/// Deliveries per event id, and when the last new one arrived.
#[derive(Default)]
pub struct Counts {
    pub by_id: HashMap<String, u32>,
    /// `Idempotency-Key` values seen per event id: a repeat must carry the same one.
    pub keys: HashMap<String, HashSet<String>>,
    pub last_new: Option<Instant>,
    /// Event ids in the order of their first delivery.
    pub first_seen: Vec<String>,
}

impl Counts {
    /// Pairs of events of one app (ids end in `-<i>`, the app is `i / EVENTS_PER_APP`; a
    /// lower `i`, an earlier time) first delivered in the wrong order: all of them, and those
    /// where the earlier event was accepted before the later one was sent, so it was stored
    /// first, which `inOrder` forbids. (Concurrent senders can get a later event stored
    /// first; the executor orders what is stored, not what is still on its way.)
    pub fn out_of_order(&self, sent: &Sent) -> (usize, usize) {
        let index = |id: &str| id.rsplit('-').next()?.parse::<usize>().ok();
        let mut apps: HashMap<usize, Vec<(usize, &str)>> = HashMap::new();
        for id in &self.first_seen {
            if let Some(i) = index(id) {
                apps.entry(i / EVENTS_PER_APP).or_default().push((i, id));
            }
        }
        let (mut any, mut stored_first) = (0, 0);
        for delivered in apps.values() {
            for (at, &(later, later_id)) in delivered.iter().enumerate() {
                for &(earlier, earlier_id) in &delivered[at + 1..] {
                    if earlier > later {
                        continue;
                    }
                    any += 1;
                    let accepted = sent.accepted_during.get(earlier_id).map(|w| w.1);
                    let sent_at = sent.accepted_during.get(later_id).map(|w| w.0);
                    if let (Some(accepted), Some(sent_at)) = (accepted, sent_at)
                        && accepted < sent_at
                    {
                        stored_first += 1;
                    }
                }
            }
        }
        (any, stored_first)
    }
}

/// What the sink saw against what the senders were told.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Accepted (2xx) but never delivered.
    pub lost: usize,
    /// Delivered more than once.
    pub duplicated: usize,
    /// Delivered although the sender never saw a 2xx for it.
    pub unasked: usize,
    /// Repeats whose Idempotency-Key differed from the first call's.
    pub key_changed: usize,
}

impl Counts {
    /// The tally over the events whose ids start with `prefix`.
    pub fn tally(&self, prefix: &str, accepted: &[String]) -> Tally {
        let accepted_set: HashSet<&String> = accepted.iter().collect();
        let mine = |id: &&String| id.starts_with(prefix);
        Tally {
            lost: accepted
                .iter()
                .filter(|id| !self.by_id.contains_key(*id))
                .count(),
            duplicated: self
                .by_id
                .iter()
                .filter(|(id, n)| mine(id) && **n > 1)
                .count(),
            unasked: self
                .by_id
                .keys()
                .filter(|id| mine(id) && !accepted_set.contains(id))
                .count(),
            key_changed: self
                .keys
                .iter()
                .filter(|(id, k)| mine(id) && k.len() > 1)
                .count(),
        }
    }

    pub fn delivered(&self, accepted: &[String]) -> usize {
        accepted
            .iter()
            .filter(|id| self.by_id.contains_key(*id))
            .count()
    }
}

pub async fn start_sink() -> (SocketAddr, Arc<Mutex<Counts>>) {
    start_slow_sink(Duration::ZERO, None).await
}

/// A sink that answers each call after `latency`, as real CI and chat APIs take their time,
/// working on at most `at_once` calls at a time when given (the others wait in line, as on a
/// server that takes only a few requests at once). A call counts once answered: a delivery
/// is done when the target has said so. It is worked on to its end even when its caller
/// gave up waiting, as a real server does with a request it has read.
pub async fn start_slow_sink(
    latency: Duration,
    at_once: Option<usize>,
) -> (SocketAddr, Arc<Mutex<Counts>>) {
    let counts = Arc::new(Mutex::new(Counts::default()));
    let c = counts.clone();
    let line = Arc::new(tokio::sync::Semaphore::new(
        at_once.unwrap_or(tokio::sync::Semaphore::MAX_PERMITS),
    ));
    let app = axum::Router::new().fallback(move |headers: HeaderMap| {
        let (c, line) = (c.clone(), line.clone());
        let work = tokio::spawn(async move {
            let _turn = line.acquire_owned().await.unwrap();
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            count(&c, &headers);
        });
        async move {
            work.await.unwrap();
            axum::http::StatusCode::NO_CONTENT
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, counts)
}

/// Counts one call, by its event id and Idempotency-Key.
fn count(counts: &Mutex<Counts>, headers: &HeaderMap) {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let id = header("x-statused-event-id");
    let mut counts = counts.lock().unwrap();
    let key = header("idempotency-key");
    if !key.is_empty() {
        counts.keys.entry(id.clone()).or_default().insert(key);
    }
    let n = counts.by_id.entry(id.clone()).or_default();
    *n += 1;
    if *n == 1 {
        counts.last_new = Some(Instant::now());
        counts.first_seen.push(id);
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The operator binary, as the chart runs it, scoped to `ns`.
pub struct Operator {
    child: Child,
    pub webhook: SocketAddr,
    pub metrics: SocketAddr,
}

/// How to start the operator.
#[derive(Clone)]
pub struct OperatorOptions {
    pub namespace: String,
    pub log: std::path::PathBuf,
    /// Its kubeconfig (default: the chart's service account).
    pub kubeconfig: String,
    pub webhook: SocketAddr,
    pub metrics: SocketAddr,
    pub args: Vec<String>,
}

impl OperatorOptions {
    /// Throughput and fault runs store more events in one namespace than a team should
    /// (the default bound is 5,000): the bounds are lifted so that they measure the rest.
    pub fn unbounded_storage(mut self) -> Self {
        self.args.extend(
            [
                "--max-deliveries-per-namespace",
                "1000000",
                "--max-deliveries",
                "1000000",
                "--max-delivery-bytes-per-namespace",
                "100000000000",
                "--max-delivery-bytes",
                "100000000000",
            ]
            .map(String::from),
        );
        self
    }

    pub fn new(namespace: &str, log: &std::path::Path) -> Self {
        Self {
            namespace: namespace.into(),
            log: log.into(),
            kubeconfig: std::env::var("STATUSED_TEST_OPERATOR_KUBECONFIG").unwrap(),
            webhook: SocketAddr::from(([127, 0, 0, 1], free_port())),
            metrics: SocketAddr::from(([127, 0, 0, 1], free_port())),
            args: Vec::new(),
        }
    }
}

impl Operator {
    pub async fn start(ns: &str, log: &std::path::Path) -> Self {
        Self::start_with(&OperatorOptions::new(ns, log)).await
    }

    pub async fn start_with(o: &OperatorOptions) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&o.log)
            .unwrap();
        // An empty namespace: the operator watches every namespace, as the chart runs it.
        let scope: Vec<&str> = if o.namespace.is_empty() {
            Vec::new()
        } else {
            vec!["--namespace", &o.namespace]
        };
        // Another build of the operator (an earlier commit's), to measure before and after
        // with the same bench.
        let binary = std::env::var("STATUSED_BENCH_OPERATOR_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_statused-operator").to_string());
        let child = Command::new(binary)
            .args(["run", "--log-format", "json"])
            .args(&scope)
            .args(["--webhook-addr", &o.webhook.to_string()])
            .args(["--metrics-addr", &o.metrics.to_string()])
            .args(["--retry-base-seconds", "0.2", "--retry-max-seconds", "2"])
            .args(["--shutdown-drain", "0s"])
            // The stand-in target listens on 127.0.0.1, which the outbound guard refuses
            // unless allowed.
            .args(["--egress-allow", "127.0.0.1/32"])
            .args(&o.args)
            .env("KUBECONFIG", &o.kubeconfig)
            .env(
                "RUST_LOG",
                std::env::var("STATUSED_BENCH_OPERATOR_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let op = Self {
            child,
            webhook: o.webhook,
            metrics: o.metrics,
        };
        let http = reqwest::Client::new();
        for _ in 0..600 {
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
        panic!("operator not ready after 60 s; see its log");
    }

    /// `kill -9`: what a crash or an OOM kill leaves behind.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Whether the process has exited (crashed, or was killed).
    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// (current, peak) resident set size in bytes, from /proc.
    /// CPU time the operator has used so far.
    pub fn cpu(&self) -> Duration {
        cpu_of(self.child.id().expect("operator running")).expect("operator running")
    }

    pub fn rss(&self) -> (u64, u64) {
        rss_of(self.child.id().expect("operator running")).expect("operator running")
    }

    pub async fn stop(mut self) {
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

/// (current, peak) resident set size of process `pid` in bytes, from /proc; `None` once it
/// is gone.
pub fn rss_of(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |field: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    Some((kib("VmRSS:"), kib("VmHWM:")))
}

/// CPU time (user + system) process `pid` has used so far; `None` once it is gone. Read
/// from /proc/<pid>/stat, in clock ticks of 10 ms (USER_HZ is 100 on Linux).
pub fn cpu_of(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at state (field 3);
    // utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// Applies each (name, key, value) as a Secret of `ns` with that one key.
pub async fn apply_secrets(admin: &Client, ns: &str, secrets: &[(&str, &str, String)]) {
    let api: Api<Secret> = Api::namespaced(admin.clone(), ns);
    for (name, key, value) in secrets {
        let secret = serde_json::json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
            "stringData": {*key: value},
        });
        api.patch(name, &PatchParams::apply("bench"), &Patch::Apply(&secret))
            .await
            .unwrap();
    }
}

/// Everything the senders saw.
#[derive(Default)]
pub struct Sent {
    /// Event ids that got a 2xx.
    pub accepted: Vec<String>,
    /// Latency of every answered request.
    pub latencies: Vec<Duration>,
    /// Requests with no answer within [`ANSWER_TIMEOUT`].
    pub unanswered: usize,
    /// Events given up on (a permanent refusal, or still refused at the deadline).
    pub refused: Vec<(String, u16)>,
    pub by_status: HashMap<u16, usize>,
    pub last_accept: Option<Instant>,
    /// Per accepted event: when the attempt that got the 2xx started, and when it ended.
    pub accepted_during: HashMap<String, (Instant, Instant)>,
    /// Attempts that found no listener (the operator was down).
    pub no_connection: usize,
}

/// Sends every event from `concurrency` senders, each waiting `pace` between its events, and
/// retries each as Statused does (any non-2xx but a permanent 4xx, after `Retry-After`; no
/// answer within 30 s; no connection) until it gets a 2xx or `deadline` passes.
pub async fn burst(
    url: String,
    events: Arc<Vec<(String, Vec<u8>)>>,
    concurrency: usize,
    pace: Duration,
    deadline: Instant,
) -> Sent {
    let http = reqwest::Client::builder()
        .timeout(ANSWER_TIMEOUT)
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap();
    let sent = Arc::new(Mutex::new(Sent::default()));
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (http, sent, next, url, events) = (
                http.clone(),
                sent.clone(),
                next.clone(),
                url.clone(),
                events.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((id, body)) = events.get(i) else {
                        break;
                    };
                    if i >= concurrency {
                        tokio::time::sleep(pace).await;
                    }
                    let signature = statused_operator::signature::sign(SECRET.as_bytes(), body);
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
                            Err(e) if e.is_timeout() => {
                                sent.lock().unwrap().unanswered += 1;
                                Duration::from_millis(100)
                            }
                            // No connection (the operator is restarting): try again soon.
                            Err(_) => {
                                sent.lock().unwrap().no_connection += 1;
                                Duration::from_millis(200)
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
                                    s.accepted_during
                                        .insert(id.clone(), (started, Instant::now()));
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

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

pub async fn wait_route_ready(routes: &Api<StatusedRoute>, name: &str) {
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

/// The signing Secret, the sink's URL Secret and a route `load` sending every build event
/// to the sink (with an `Idempotency-Key`); [`wait_ready`] once an operator runs.
/// The ordering policy the bench's route declares (`STATUSED_BENCH_ORDERING`), if any. Only
/// `inOrder` delivers every event, which the benches count.
/// `STATUSED_BENCH_TRACES=1`: the operator exports traces to a collector on 127.0.0.1 (this
/// process), which decodes each OTLP/HTTP request and counts spans and traces.
pub fn traces() -> bool {
    std::env::var("STATUSED_BENCH_TRACES").is_ok_and(|v| v == "1")
}

/// What the loopback collector received.
#[derive(Default)]
pub struct Collected {
    pub requests: usize,
    pub spans: usize,
    pub traces: std::collections::HashSet<Vec<u8>>,
}

/// A collector on 127.0.0.1 answering `POST /v1/traces` (OTLP/HTTP protobuf); its base URL.
pub async fn start_collector() -> (String, Arc<Mutex<Collected>>) {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message;
    let collected = Arc::new(Mutex::new(Collected::default()));
    let seen = collected.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let seen = seen.clone();
            async move {
                let request = ExportTraceServiceRequest::decode(body).unwrap();
                let mut seen = seen.lock().unwrap();
                seen.requests += 1;
                for span in request
                    .resource_spans
                    .into_iter()
                    .flat_map(|r| r.scope_spans)
                    .flat_map(|s| s.spans)
                {
                    seen.spans += 1;
                    seen.traces.insert(span.trace_id);
                }
                (
                    [("content-type", "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), collected)
}

pub fn ordering() -> Option<String> {
    let policy = std::env::var("STATUSED_BENCH_ORDERING").ok()?;
    assert_eq!(
        policy, "inOrder",
        "STATUSED_BENCH_ORDERING: only inOrder delivers every event (latestWins supersedes older ones by design)"
    );
    Some(policy)
}

pub async fn prepare_route(admin: &Client, ns: &str, sink: SocketAddr) {
    apply_secrets(
        admin,
        ns,
        &[
            ("statused-webhook", "secret", SECRET.to_string()),
            ("sink", "url", format!("http://{sink}/deliver")),
        ],
    )
    .await;
    let routes: Api<StatusedRoute> = Api::namespaced(admin.clone(), ns);
    // STATUSED_BENCH_ON_UNCERTAIN=fail measures at-most-once targets (a write before each call).
    let on_uncertain =
        std::env::var("STATUSED_BENCH_ON_UNCERTAIN").unwrap_or_else(|_| "retry".into());
    let mut route = serde_json::json!({
        "apiVersion": "statused.dev/v1alpha1", "kind": "StatusedRoute",
        "metadata": {"name": "load"},
        "spec": {
            "signingSecrets": [{"name": "statused-webhook"}],
            "rules": [{"name": "builds", "match": {"types": ["com.statused.build.status.updated"]},
                       "targets": [{"onUncertain": on_uncertain,
                                    "webhook": {"urlSecretRef": {"name": "sink", "key": "url"},
                                                "idempotencyKey": true}}]}],
        },
    });
    // STATUSED_BENCH_ORDERING=inOrder orders the calls per app: one key per EVENTS_PER_APP.
    if let Some(policy) = ordering() {
        route["spec"]["rules"][0]["ordering"] =
            serde_json::json!({"key": "$(data.app_name)", "policy": policy});
    }
    routes
        .patch("load", &PatchParams::apply("load"), &Patch::Apply(&route))
        .await
        .unwrap();
}

/// Waits until the route `load` is Ready.
pub async fn wait_ready(admin: &Client, ns: &str) {
    wait_route_ready(&Api::namespaced(admin.clone(), ns), "load").await;
}

/// Waits until every accepted event reached the sink, or `budget` has passed.
pub async fn wait_delivered(counts: &Mutex<Counts>, accepted: &[String], budget: Duration) {
    let deadline = Instant::now() + budget;
    while counts.lock().unwrap().delivered(accepted) < accepted.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The API server's count of requests on deliveries so far, by verb (and subresource, as
/// `patch/status`), read from its `/metrics` (`apiserver_request_total`) with `admin`'s
/// rights. Two reads around a burst say what each event cost the API server.
pub async fn delivery_requests(admin: &Client) -> HashMap<String, f64> {
    let request = axum::http::Request::get("/metrics")
        .body(Vec::new())
        .unwrap();
    let text = admin.request_text(request).await.unwrap_or_default();
    let mut counts = HashMap::new();
    for line in text.lines() {
        let Some(labels) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        if !labels.contains("resource=\"statuseddeliveries\"") {
            continue;
        }
        let label = |name: &str| {
            let start = labels.find(&format!("{name}=\""))? + name.len() + 2;
            let end = labels[start..].find('"')? + start;
            Some(labels[start..end].to_string())
        };
        let (Some(verb), Some(value)) = (label("verb"), line.rsplit(' ').next()) else {
            continue;
        };
        let key = match label("subresource").filter(|s| !s.is_empty()) {
            Some(sub) => format!("{verb}/{sub}"),
            None => verb,
        };
        *counts.entry(key).or_default() += value.parse::<f64>().unwrap_or(0.0);
    }
    counts
}

/// What each of `events` cost in API requests on deliveries between two reads of
/// [`delivery_requests`], by verb, as "create 1.00, patch/status 1.02, ...".
pub fn requests_per_event(
    before: &HashMap<String, f64>,
    after: &HashMap<String, f64>,
    events: usize,
) -> String {
    let mut per: Vec<(String, f64)> = after
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                (v - before.get(k).unwrap_or(&0.0)) / events.max(1) as f64,
            )
        })
        .filter(|(k, v)| *v >= 0.005 && k != "WATCH")
        .collect();
    per.sort_by(|a, b| a.0.cmp(&b.0));
    per.iter()
        .map(|(k, v)| format!("{k} {v:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}
