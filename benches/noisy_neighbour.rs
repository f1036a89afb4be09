//! `just bench-noisy`: one team attacks the shared operator while another team sends signed
//! events at a steady rate, against a real API server with the chart's RBAC (the operator
//! watches every namespace, as the chart runs it).
//!
//! The attacking team owns its namespace, its routes and their signing secret, so everything
//! it sends is validly signed:
//! - two routes that pass every compile-time limit of the seed: a match expression and a
//!   webhook body with two nested comprehensions over `data.l`
//!   (`data.l.map(x, data.l.map(y, y))`);
//! - 3 connections sending events whose `data.l` is a list of 3,000 zeros (about 9 KB) to
//!   both routes, back to back;
//! - 6 connections sending events whose list is as long as the data limits allow, so that
//!   what is accepted costs all it may.
//!
//! Meanwhile the victim team's route gets `STATUSED_NOISY_RATE` events a second (20) for
//! `STATUSED_NOISY_SECONDS` (10), each retried as Statused does until accepted. Then a second
//! phase: 40 unauthenticated connections trickle declared 1 MiB bodies to the victim's route
//! path while the victim sends 5 more events.
//!
//! Printed: the victim's accept latency p50/p99 (from the first attempt to the 2xx), accepted
//! and delivered (each exactly once), the operator's peak RSS, what the attacker's requests
//! got, its routes' Ready conditions, whether the operator exited. A watchdog kills the
//! operator at 1.5 GiB RSS to protect the machine (the seed's code reached that).
//!
//! `cargo test --bench noisy_neighbour` is the smoke `just test` runs (5 s at 10 events/s):
//! it asserts what holds by construction (every victim event accepted and delivered once,
//! peak RSS under 256 MiB, over-limit events refused with a 400 naming the limit, the
//! operator alive, events sent during the slow uploads accepted), never timing. Every
//! address is on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harness::victim::{slow_uploads, steady_victim, watchdog};
use harness::{
    Operator, OperatorOptions, client_from, create_namespace, mib, percentile, prepare_route,
    start_sink, wait_delivered, wait_ready,
};
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use statused_operator::api::StatusedRoute;

const ATTACKER_SECRET: &str = "the-attackers-own-route-secret";
/// A 100-item list literal.
const HUNDRED: &str = "[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47,48,49,50,51,52,53,54,55,56,57,58,59,60,61,62,63,64,65,66,67,68,69,70,71,72,73,74,75,76,77,78,79,80,81,82,83,84,85,86,87,88,89,90,91,92,93,94,95,96,97,98,99,100]";
/// The goal for the operator's peak RSS under attack.
const RSS_GOAL: u64 = 256 * 1024 * 1024;

struct Settings {
    smoke: bool,
    seconds: u64,
    rate: u32,
    /// The over-limit list the issue measured with.
    big_list: usize,
    /// A list as long as the data limits allow.
    allowed_list: usize,
}

impl Settings {
    fn from_env() -> Self {
        let smoke = !std::env::args().any(|a| a == "--bench");
        let var = harness::env_number::<u64>;
        Self {
            smoke,
            seconds: var("STATUSED_NOISY_SECONDS", if smoke { 5 } else { 10 }),
            rate: var("STATUSED_NOISY_RATE", if smoke { 10 } else { 20 }) as u32,
            big_list: var("STATUSED_NOISY_LIST", 3000) as usize,
            allowed_list: var(
                "STATUSED_NOISY_ALLOWED_LIST",
                statused_operator::event::DATA_LIMITS.max_items as u64,
            ) as usize,
        }
    }
}

/// The attacker's Secrets and its two routes, whose targets go to the sink.
async fn prepare_attacker(admin: &Client, ns: &str, sink: SocketAddr) {
    harness::apply_secrets(
        admin,
        ns,
        &[
            ("statused-webhook", "secret", ATTACKER_SECRET.to_string()),
            ("sink", "url", format!("http://{sink}/attacker")),
        ],
    )
    .await;
    let routes: Api<StatusedRoute> = Api::namespaced(admin.clone(), ns);
    let sink_url = serde_json::json!({"name": "sink", "key": "url"});
    for (name, rule) in [
        (
            "hostile-match",
            serde_json::json!({"name": "quadratic",
                "match": {"expression": "data.l.map(x, data.l.map(y, y)).size() > 0"},
                "targets": [{"webhook": {"urlSecretRef": sink_url}}]}),
        ),
        (
            "hostile-template",
            serde_json::json!({"name": "render",
                "targets": [{"webhook": {"urlSecretRef": sink_url,
                    "body": {"n": "$(string(data.l.map(x, data.l.map(y, y)).size()))"}}}]}),
        ),
        // As costly as the budget allows, in the match and in the template: each item of the
        // event's list against a 100-item list (cost.rs: a third of the budget or more).
        (
            "costly",
            serde_json::json!({"name": "pairs",
                "match": {"expression": format!("data.l.exists(x, {HUNDRED}.exists(y, y == x)) || true")},
                "targets": [{"webhook": {"urlSecretRef": sink_url,
                    "body": {"n": format!("$(string(data.l.filter(x, {HUNDRED}.exists(y, y == x)).size()))")}}}]}),
        ),
    ] {
        let route = serde_json::json!({
            "apiVersion": "statused.dev/v1alpha1", "kind": "StatusedRoute",
            "metadata": {"name": name},
            "spec": {"signingSecrets": [{"name": "statused-webhook"}], "rules": [rule]},
        });
        routes
            .patch(name, &PatchParams::apply("noisy"), &Patch::Apply(&route))
            .await
            .unwrap();
    }
}

/// A signed-ready event whose `data.l` is `len` zeros.
fn list_event(id: &str, len: usize) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "specversion": "1.0", "type": "com.statused.build.status.updated", "source": "statused",
        "id": id, "time": jiff::Timestamp::now().to_string(),
        "data": {"app_name": "Noisy", "status": "Valid", "l": vec![0; len]},
    }))
    .unwrap()
}

/// The attacker's answers: status code → (count, first body seen).
type Answers = Arc<Mutex<BTreeMap<String, (usize, String)>>>;

/// `connections` senders posting `len`-item events to the attacker's routes in turn, back to back,
/// until `until`; each request waits at most 10 s for its answer.
#[allow(clippy::too_many_arguments)]
fn attack(
    webhook: SocketAddr,
    ns: &str,
    label: &'static str,
    connections: usize,
    len: usize,
    until: Instant,
    answers: &Answers,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..connections)
        .map(|c| {
            let (ns, answers) = (ns.to_string(), answers.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .unwrap();
                let mut n = 0usize;
                // Bounded in count as well as in time.
                while Instant::now() < until && n < 2000 {
                    let route = ["hostile-match", "hostile-template", "costly"][n % 3];
                    let body = list_event(&format!("{label}-{c}-{n}"), len);
                    let signature =
                        statused_operator::signature::sign(ATTACKER_SECRET.as_bytes(), &body);
                    let answer = http
                        .post(format!("http://{webhook}/hooks/{ns}/{route}"))
                        .header("X-Statused-Signature", signature)
                        .body(body)
                        .send()
                        .await;
                    let (key, text) = match answer {
                        Ok(r) => {
                            let code = r.status().as_u16();
                            (
                                format!("{label} {code}"),
                                r.text().await.unwrap_or_default(),
                            )
                        }
                        Err(e) if e.is_timeout() => {
                            (format!("{label} no answer in 10 s"), String::new())
                        }
                        Err(_) => {
                            // No connection: the operator is gone.
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            (format!("{label} no connection"), String::new())
                        }
                    };
                    answers
                        .lock()
                        .unwrap()
                        .entry(key)
                        .or_insert_with(|| (0, text.chars().take(160).collect()))
                        .0 += 1;
                    n += 1;
                }
            })
        })
        .collect()
}

fn tally_answers(results: Vec<String>) -> BTreeMap<String, usize> {
    let mut by = BTreeMap::new();
    for r in results {
        // "HTTP/1.1 408 Request Timeout after ~2 s" → "HTTP/1.1 408 Request Timeout".
        let key = r.split(" after").next().unwrap_or_default().to_string();
        *by.entry(key).or_default() += 1;
    }
    by
}

async fn route_conditions(admin: &Client, ns: &str) -> Vec<String> {
    let routes: Api<StatusedRoute> = Api::namespaced(admin.clone(), ns);
    routes
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|r| {
            let name = r.metadata.name.clone().unwrap_or_default();
            let ready = r
                .status
                .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Ready"))
                .map(|c| format!("{} {}: {}", c.status, c.reason, c.message))
                .unwrap_or_else(|| "no condition".into());
            format!("{name}: Ready={ready}")
        })
        .collect()
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if !harness::cluster_or_explain("noisy_neighbour", "bench-noisy") {
        return;
    }
    let s = Settings::from_env();
    let admin = client_from("STATUSED_TEST_ADMIN_KUBECONFIG").await;
    let (sink, counts) = start_sink().await;
    let victim_ns = create_namespace(&admin, "noisy-victim").await;
    let attacker_ns = create_namespace(&admin, "noisy-attacker").await;
    prepare_route(&admin, &victim_ns, sink).await;
    prepare_attacker(&admin, &attacker_ns, sink).await;

    let log = std::env::temp_dir().join(format!("statused-noisy-{}.log", std::process::id()));
    let mut options = OperatorOptions::new("", &log);
    // Every namespace, as the chart runs it.
    options.namespace = String::new();
    let mut op = Operator::start_with(&options).await;
    wait_ready(&admin, &victim_ns).await;
    harness::wait_route_ready(&Api::namespaced(admin.clone(), &attacker_ns), "costly").await;
    let idle_rss = op.rss().0;
    println!(
        "noisy neighbour: victim {} events/s for {} s; attacker: 3 connections x {}-item lists, \
         6 x {}-item lists (log: {})",
        s.rate,
        s.seconds,
        s.big_list,
        s.allowed_list,
        log.display()
    );

    // Phase 1: the attack and the steady victim.
    let stop = Arc::new(AtomicBool::new(false));
    let dog = watchdog(op.pid().unwrap(), stop.clone());
    let answers: Answers = Arc::default();
    let until = Instant::now() + Duration::from_secs(s.seconds);
    let mut attackers = attack(
        op.webhook,
        &attacker_ns,
        "over-limit",
        3,
        s.big_list,
        until,
        &answers,
    );
    attackers.extend(attack(
        op.webhook,
        &attacker_ns,
        "at-limit",
        6,
        s.allowed_list,
        until,
        &answers,
    ));
    let victim = steady_victim(op.webhook, &victim_ns, "victim", s.rate, s.seconds).await;
    for a in attackers {
        let _ = a.await;
    }
    stop.store(true, Ordering::Relaxed);
    let (peak_rss, killed) = dog.await.unwrap();
    let exited = op.exited();
    wait_delivered(&counts, &victim.accepted, Duration::from_secs(60)).await;
    let tally = counts.lock().unwrap().tally("victim", &victim.accepted);
    let delivered = counts.lock().unwrap().delivered(&victim.accepted);
    let mut latencies = victim.latencies.clone();
    latencies.sort();
    let sent = s.rate as usize * s.seconds as usize;
    println!("| figure | value |\n|---|---|");
    println!(
        "| victim accepted | {}/{sent} (not accepted: {:?}) |",
        victim.accepted.len(),
        victim.not_accepted.iter().take(3).collect::<Vec<_>>()
    );
    println!(
        "| victim accept latency p50 / p99 | {:.0} / {:.0} ms |",
        percentile(&latencies, 0.50).as_secs_f64() * 1000.0,
        percentile(&latencies, 0.99).as_secs_f64() * 1000.0
    );
    println!(
        "| victim delivered | {delivered}/{} (lost {}, duplicated {}) |",
        victim.accepted.len(),
        tally.lost,
        tally.duplicated
    );
    println!(
        "| operator RSS idle / peak | {:.0} / {:.0} MiB{} |",
        mib(idle_rss),
        mib(peak_rss),
        if killed {
            " (killed by the watchdog at 1.5 GiB)"
        } else {
            ""
        }
    );
    println!("| operator exited | {exited} |");
    for (answer, (n, body)) in answers.lock().unwrap().iter() {
        println!("| attacker: {answer} | {n} ({body}) |");
    }
    let conditions = route_conditions(&admin, &attacker_ns).await;
    for c in &conditions {
        println!("| attacker route | {c} |");
    }

    // Phase 2: slow uploads to the victim's route path, and 5 events meanwhile.
    if exited || killed {
        op = Operator::start_with(&options).await;
        wait_ready(&admin, &victim_ns).await;
    }
    let stop_trickle = Arc::new(AtomicBool::new(false));
    let trickles = slow_uploads(
        op.webhook,
        format!("/hooks/{victim_ns}/load"),
        40,
        stop_trickle.clone(),
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let url = format!("http://{}/hooks/{victim_ns}/load", op.webhook);
    let during = AtomicU64::new(0);
    let mut slow_results = Vec::new();
    for i in 0..5 {
        let (_, body) = harness::event(&format!("during-{i}"), i);
        let signature = statused_operator::signature::sign(harness::SECRET.as_bytes(), &body);
        let started = Instant::now();
        let answer = http
            .post(&url)
            .header("X-Statused-Signature", signature)
            .body(body)
            .send()
            .await;
        let code = answer.map(|r| r.status().as_u16()).unwrap_or(0);
        slow_results.push((code, started.elapsed()));
        during.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop_trickle.store(true, Ordering::Relaxed);
    let mut trickle_answers = Vec::new();
    for t in trickles {
        trickle_answers.push(t.await.unwrap());
    }
    println!(
        "| during 40 slow uploads: valid events | {} |",
        slow_results
            .iter()
            .map(|(c, d)| format!("{c} in {:.0} ms", d.as_secs_f64() * 1000.0))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for (answer, n) in tally_answers(trickle_answers) {
        println!("| slow uploads got | {answer}: {n} |");
    }
    op.stop().await;

    if s.smoke {
        assert!(!killed && !exited, "the operator survived the attack");
        assert!(
            peak_rss < RSS_GOAL,
            "peak RSS {:.0} MiB under the 256 MiB bound",
            mib(peak_rss)
        );
        assert_eq!(victim.accepted.len(), sent, "{:?}", victim.not_accepted);
        assert_eq!(delivered, sent, "every victim event delivered");
        assert_eq!((tally.lost, tally.duplicated), (0, 0));
        let answers = answers.lock().unwrap();
        for (answer, (_, body)) in answers.iter().filter(|(k, _)| k.starts_with("over-limit")) {
            // Refused for the data limit by the Ready route, or by a route that is not Ready.
            assert!(
                answer == "over-limit 400" && body.contains("more than 256 items")
                    || answer == "over-limit 503" && body.contains("route is not ready"),
                "{answer}: {body}"
            );
        }
        for c in &conditions {
            if c.starts_with("hostile") {
                assert!(
                    c.contains("Ready=False") && (c.contains("cost units") || c.contains("KiB")),
                    "the hostile route is not Ready and says why: {c}"
                );
            }
        }
        assert!(
            slow_results.iter().all(|(code, _)| *code == 202),
            "valid events accepted during slow uploads: {slow_results:?}"
        );
    }
}
