//! `just chaos`: faults injected in the middle of a stream of signed events, counting what
//! was lost and what was delivered twice.
//!
//! Runs under `hack/cluster.sh exec` (real kube-apiserver + etcd on 127.0.0.1) with the
//! operator binary as a child process whose API traffic passes a counting TCP proxy. Per
//! scenario, N unique events are sent by 16 senders over about 6 s (20 s at full scale), and
//! the fault lands 2 s in:
//! - `api-frozen`: the API server is SIGSTOPped (8 s; 25 s at full scale), then SIGCONTed;
//! - `api-restarted`: the API server is killed (-9) and started again 6 s later; the
//!   operator's connection attempts while it is gone are counted;
//! - `operator-killed`: the operator is killed (-9) and started again 2 s later.
//!
//! Senders retry on any non-2xx and on no answer, as Statused does. Asserted: nothing
//! accepted is lost; nothing is delivered twice, except, after the operator's kill, calls
//! that were in flight (at most the executor's concurrency), each repeat carrying the same
//! `Idempotency-Key`; no hot loop towards a dead API server. Duplicates are counted again at
//! the end, after every scenario ran. `cargo test --bench chaos` is the smoke CI runs
//! (N = 300); `cargo bench --bench chaos` runs N = 2,000.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use harness::{
    Counts, Operator, OperatorOptions, Sent, Tally, burst, client_from, create_namespace, events,
    prepare_route, start_sink, wait_delivered, wait_ready,
};
use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};

/// The executor's default concurrency: the most calls that can be in flight at a kill.
const EXECUTOR_CONCURRENCY: usize = 256;
/// Most connection attempts per second towards a dead API server that count as backing off.
const MAX_DEAD_API_CONNECTS_PER_SEC: f64 = 10.0;

/// Counts the TCP connections it forwards to `upstream` (or fails to, when it is down).
async fn counting_proxy(upstream: SocketAddr) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connects = Arc::new(AtomicUsize::new(0));
    let counter = connects.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                if let Ok(mut server) = TcpStream::connect(upstream).await {
                    let _ = copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    (addr, connects)
}

/// The API server's address in the operator's kubeconfig, and that kubeconfig's text.
fn operator_kubeconfig() -> (String, SocketAddr) {
    let path = std::env::var("STATUSED_TEST_OPERATOR_KUBECONFIG").unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let server = text
        .lines()
        .find_map(|l| l.split("server: \"https://").nth(1))
        .and_then(|rest| rest.split('"').next())
        .expect("server in kubeconfig")
        .parse()
        .unwrap();
    (text, server)
}

/// A copy of the operator's kubeconfig whose server is `proxy`; returns its path.
fn kubeconfig_through(proxy: SocketAddr) -> String {
    let (text, server) = operator_kubeconfig();
    let out =
        std::env::temp_dir().join(format!("statused-chaos-{}.kubeconfig", std::process::id()));
    std::fs::write(&out, text.replace(&server.to_string(), &proxy.to_string())).unwrap();
    out.display().to_string()
}

fn apiserver_pid() -> String {
    let dir = std::env::var("STATUSED_TEST_CLUSTER_DIR").unwrap();
    std::fs::read_to_string(format!("{dir}/apiserver.pid"))
        .unwrap()
        .trim()
        .to_string()
}

fn signal_apiserver(signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &apiserver_pid()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal} of the API server failed");
}

fn start_apiserver() {
    let dir = std::env::var("STATUSED_TEST_CLUSTER_DIR").unwrap();
    let status = std::process::Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/hack/cluster.sh"))
        .args(["start-apiserver", &dir])
        .status()
        .unwrap();
    assert!(status.success(), "could not start the API server again");
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    ApiFrozen,
    ApiRestarted,
    OperatorKilled,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::ApiFrozen => "api-frozen",
            Fault::ApiRestarted => "api-restarted",
            Fault::OperatorKilled => "operator-killed",
        }
    }
}

struct Outcome {
    fault: Fault,
    prefix: String,
    sent: Sent,
    /// Connection attempts per second towards the dead API server (api-restarted only).
    dead_api_connects_per_sec: Option<f64>,
}

struct Run {
    events: usize,
    senders: usize,
    spread: Duration,
    freeze: Duration,
    options: OperatorOptions,
    op: Option<Operator>,
    connects: Arc<AtomicUsize>,
    counts: Arc<std::sync::Mutex<Counts>>,
}

impl Run {
    async fn scenario(&mut self, fault: Fault) -> Outcome {
        let prefix = format!("{}-{:06x}", fault.name(), fastrand::u32(..) & 0xffffff);
        let url = format!(
            "http://{}/hooks/{}/load",
            self.options.webhook, self.options.namespace
        );
        let pace = self
            .spread
            .mul_f64(self.senders as f64 / self.events as f64);
        let budget = Duration::from_secs(180);
        let sending = tokio::spawn(burst(
            url,
            events(&prefix, self.events),
            self.senders,
            pace,
            Instant::now() + budget,
        ));
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut dead_api_connects_per_sec = None;
        match fault {
            Fault::ApiFrozen => {
                signal_apiserver("-STOP");
                tokio::time::sleep(self.freeze).await;
                signal_apiserver("-CONT");
            }
            Fault::ApiRestarted => {
                signal_apiserver("-KILL");
                // Let the operator notice, then count what it tries while the server is gone.
                tokio::time::sleep(Duration::from_secs(1)).await;
                let before = self.connects.load(Ordering::Relaxed);
                let down = Duration::from_secs(5);
                tokio::time::sleep(down).await;
                let tried = self.connects.load(Ordering::Relaxed) - before;
                dead_api_connects_per_sec = Some(tried as f64 / down.as_secs_f64());
                start_apiserver();
            }
            Fault::OperatorKilled => {
                self.op.take().expect("operator running").kill().await;
                tokio::time::sleep(Duration::from_secs(2)).await;
                self.op = Some(Operator::start_with(&self.options).await);
            }
        }
        let sent = sending.await.unwrap();
        wait_delivered(&self.counts, &sent.accepted, budget).await;
        Outcome {
            fault,
            prefix,
            sent,
            dead_api_connects_per_sec,
        }
    }
}

/// What a scenario may show at most: duplicates only after the operator's kill, bounded by
/// the calls that can be in flight.
fn allowed_duplicates(fault: Fault) -> usize {
    match fault {
        Fault::OperatorKilled => EXECUTOR_CONCURRENCY,
        _ => 0,
    }
}

#[tokio::main]
async fn main() {
    if !harness::cluster_or_explain("chaos", "chaos") {
        return;
    }
    statused_operator::install_crypto_provider();
    let full = std::env::args().any(|a| a == "--bench");
    let events: usize = std::env::var("STATUSED_CHAOS_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 2000 } else { 300 });
    let admin = client_from("STATUSED_TEST_ADMIN_KUBECONFIG").await;
    let ns = create_namespace(&admin, "chaos").await;
    let log = std::env::temp_dir().join(format!("statused-chaos-{}.log", std::process::id()));
    println!(
        "chaos: N = {events} events per scenario, 16 senders; operator log {}",
        log.display()
    );
    let (sink, counts) = start_sink().await;
    prepare_route(&admin, &ns, sink).await;

    let mut options = OperatorOptions::new(&ns, &log).unbounded_storage();
    let (proxy, connects) = counting_proxy(operator_kubeconfig().1).await;
    options.kubeconfig = kubeconfig_through(proxy);
    let op = Operator::start_with(&options).await;
    wait_ready(&admin, &ns).await;
    let mut run = Run {
        events,
        senders: 16,
        spread: Duration::from_secs(if full { 20 } else { 6 }),
        freeze: Duration::from_secs(if full { 25 } else { 8 }),
        options,
        op: Some(op),
        connects,
        counts: counts.clone(),
    };

    let mut outcomes = Vec::new();
    // STATUSED_CHAOS_SCENARIOS=api-restarted,... runs only those.
    let only = std::env::var("STATUSED_CHAOS_SCENARIOS").unwrap_or_default();
    for fault in [Fault::ApiFrozen, Fault::ApiRestarted, Fault::OperatorKilled] {
        if !only.is_empty() && !only.split(',').any(|s| s == fault.name()) {
            continue;
        }
        outcomes.push(run.scenario(fault).await);
    }
    // Late repeats (a delivery redone minutes later) show up in the final count.
    tokio::time::sleep(Duration::from_secs(5)).await;

    println!(
        "{:<16} {:>6} {:>8} {:>9} {:>5} {:>10} {:>11} {:>11}",
        "scenario",
        "sent",
        "accepted",
        "delivered",
        "lost",
        "duplicated",
        "unanswered",
        "key changed"
    );
    let mut failures = Vec::new();
    for o in &outcomes {
        let counts = counts.lock().unwrap();
        let Tally {
            lost,
            duplicated,
            key_changed,
            ..
        } = counts.tally(&o.prefix, &o.sent.accepted);
        println!(
            "{:<16} {:>6} {:>8} {:>9} {:>5} {:>10} {:>11} {:>11}",
            o.fault.name(),
            events,
            o.sent.accepted.len(),
            counts.delivered(&o.sent.accepted),
            lost,
            duplicated,
            o.sent.unanswered,
            key_changed
        );
        let name = o.fault.name();
        if lost > 0 {
            failures.push(format!("{name}: {lost} accepted events lost"));
        }
        if duplicated > allowed_duplicates(o.fault) {
            failures.push(format!(
                "{name}: {duplicated} delivered twice (at most {} allowed)",
                allowed_duplicates(o.fault)
            ));
        }
        if key_changed > 0 {
            failures.push(format!(
                "{name}: {key_changed} repeats with another Idempotency-Key"
            ));
        }
        if o.sent.unanswered > 0 {
            failures.push(format!("{name}: {} requests unanswered", o.sent.unanswered));
        }
        if !o.sent.refused.is_empty() {
            failures.push(format!(
                "{name}: {} events never accepted",
                o.sent.refused.len()
            ));
        }
        if let Some(rate) = o.dead_api_connects_per_sec {
            println!(
                "  {name}: {rate:.1} connection attempts/s to the dead API server (at most {MAX_DEAD_API_CONNECTS_PER_SEC})"
            );
            if rate > MAX_DEAD_API_CONNECTS_PER_SEC {
                failures.push(format!("{name}: {rate:.1} connects/s to a dead API server"));
            }
        }
    }
    if let Some(op) = run.op.take() {
        op.stop().await;
    }
    if failures.is_empty() {
        println!("chaos: 1 passed, 0 failed");
    } else {
        println!("chaos: 0 passed, 1 failed: {}", failures.join("; "));
        std::process::exit(1);
    }
}
