//! The victim of an attack and what watches the operator meanwhile, shared by the
//! noisy-neighbour and attack benches: a team sending signed events at a steady rate,
//! retried as Statused does; the operator's RSS (killed past a bound, to protect the
//! machine); `/healthz` answered or not.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The operator is killed past this resident size: the run must not take the machine down.
pub const KILL_AT: u64 = 1536 * 1024 * 1024;

/// What the victim saw.
#[derive(Default)]
pub struct Victim {
    pub accepted: Vec<String>,
    /// From the first attempt to the 2xx.
    pub latencies: Vec<Duration>,
    pub not_accepted: Vec<(String, String)>,
}

/// One victim event, retried as Statused does (non-2xx but a permanent 4xx, no answer or no
/// connection; after `Retry-After`, at most 5 s) until accepted or 30 s have passed.
pub async fn send_victim_event(
    http: &reqwest::Client,
    url: &str,
    id: &str,
) -> Result<Duration, String> {
    let (_, body) = super::event(id, 0);
    let signature = statused_operator::signature::sign(super::SECRET.as_bytes(), &body);
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < Duration::from_secs(30) {
        let answer = http
            .post(url)
            .header("X-Statused-Signature", &signature)
            .body(body.clone())
            .send()
            .await;
        let wait = match answer {
            Ok(r) if r.status().is_success() => return Ok(started.elapsed()),
            Ok(r) => {
                let code = r.status().as_u16();
                let retry_after = r
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .map_or(Duration::from_secs(1), Duration::from_secs);
                last = format!("{code} {}", r.text().await.unwrap_or_default());
                if !matches!(code, 408 | 429 | 500..=599) {
                    return Err(last);
                }
                retry_after.min(Duration::from_secs(5))
            }
            Err(e) => {
                last = e.to_string();
                Duration::from_millis(200)
            }
        };
        tokio::time::sleep(wait).await;
    }
    Err(last)
}

/// `rate` events a second for `seconds`, each on its own task.
pub async fn steady_victim(
    webhook: SocketAddr,
    ns: &str,
    prefix: &str,
    rate: u32,
    seconds: u64,
) -> Victim {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let url = format!("http://{webhook}/hooks/{ns}/load");
    let victim = Arc::new(Mutex::new(Victim::default()));
    let mut tasks = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
    for i in 0..(rate as u64 * seconds) {
        tick.tick().await;
        let (http, url, victim) = (http.clone(), url.clone(), victim.clone());
        let id = format!("{prefix}-{i:05}");
        tasks.push(tokio::spawn(async move {
            let result = send_victim_event(&http, &url, &id).await;
            let mut v = victim.lock().unwrap();
            match result {
                Ok(latency) => {
                    v.accepted.push(id);
                    v.latencies.push(latency);
                }
                Err(why) => v.not_accepted.push((id, why)),
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    Arc::try_unwrap(victim).ok().unwrap().into_inner().unwrap()
}

/// Reads the operator's RSS every 100 ms; kills it past [`KILL_AT`]. Returns the peak seen
/// and whether it killed it.
pub fn watchdog(pid: u32, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<(u64, bool)> {
    tokio::spawn(async move {
        let (mut peak, mut killed) = (0u64, false);
        while !stop.load(Ordering::Relaxed) {
            let Some((now, high)) = super::rss_of(pid) else {
                break;
            };
            peak = peak.max(now).max(high);
            if now > KILL_AT {
                let _ = std::process::Command::new("kill")
                    .args(["-9", &pid.to_string()])
                    .status();
                killed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (peak, killed)
    })
}

/// What `/healthz` answered while it was watched.
#[derive(Debug, Default, Clone, Copy)]
pub struct Health {
    pub checks: usize,
    /// Checks with no 200 within [`HEALTH_WAIT`].
    pub failed: usize,
    pub slowest: Duration,
}

/// How long a health check waits, as a kubelet's probe with `timeoutSeconds: 5` would.
pub const HEALTH_WAIT: Duration = Duration::from_secs(5);

/// Asks `/healthz` every 200 ms until `stop`: the slowest answer, and how many failed.
pub fn watch_health(metrics: SocketAddr, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Health> {
    tokio::spawn(async move {
        let http = reqwest::Client::builder()
            .timeout(HEALTH_WAIT)
            .build()
            .unwrap();
        let mut health = Health::default();
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            let ok = http
                .get(format!("http://{metrics}/healthz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            health.checks += 1;
            health.failed += usize::from(!ok);
            health.slowest = health.slowest.max(started.elapsed());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        health
    })
}

/// `connections` unauthenticated uploads to the victim's route path, each declaring
/// a 1 MiB body and sending one byte every 200 ms. Returns, per connection, the status line
/// the operator answered with (or what happened).
pub fn slow_uploads(
    webhook: SocketAddr,
    path: String,
    connections: usize,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<String>> {
    (0..connections)
        .map(|_| {
            let (path, stop) = (path.clone(), stop.clone());
            tokio::spawn(async move {
                let Ok(mut stream) = tokio::net::TcpStream::connect(webhook).await else {
                    return "no connection".to_string();
                };
                let head = format!(
                    "POST {path} HTTP/1.1\r\nHost: {webhook}\r\nContent-Type: application/json\r\n\
                     X-Statused-Signature: sha256=00\r\nContent-Length: 1048576\r\n\r\n{{"
                );
                if stream.write_all(head.as_bytes()).await.is_err() {
                    return "closed before the body".to_string();
                }
                let started = Instant::now();
                let mut answer = vec![0u8; 256];
                // Trickle until told to stop (at most 30 s), watching for an answer.
                while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(30) {
                    tokio::select! {
                        read = stream.read(&mut answer) => {
                            return match read {
                                Ok(0) | Err(_) => format!("closed after {:.1} s", started.elapsed().as_secs_f64()),
                                Ok(n) => {
                                    let text = String::from_utf8_lossy(&answer[..n]);
                                    let line = text.lines().next().unwrap_or_default().to_string();
                                    format!("{line} after ~{:.0} s", started.elapsed().as_secs_f64())
                                }
                            };
                        }
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {
                            if stream.write_all(b" ").await.is_err() {
                                return format!("closed after {:.1} s", started.elapsed().as_secs_f64());
                            }
                        }
                    }
                }
                "still trickling when stopped".to_string()
            })
        })
        .collect()
}
