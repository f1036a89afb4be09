//! Wiring: the shared context and the start of the three servers and two controllers that
//! make up `statused-operator run`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use kube::Client;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::api::StatusedRoute;
use crate::controller::backoff::{Backoff, FailureCounts};
use crate::leader::LeaseConfig;
use crate::metrics::Metrics;
use crate::route::RouteKey;
use crate::routing::RoutingTable;

/// Settings of one operator process (see `statused-operator run --help`).
#[derive(Debug, Clone)]
pub struct Config {
    pub webhook_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    /// Only watch this namespace; all namespaces when `None`.
    pub namespace: Option<String>,
    /// Public base URL Statused reaches the receiver at, shown in route status.
    pub public_url: Option<String>,
    /// Largest accepted webhook body, in bytes.
    pub body_limit: usize,
    /// How long a sender may take to deliver the body (slower: 408).
    pub body_timeout: Duration,
    pub request_timeout: Duration,
    pub max_attempts: u32,
    pub retry_backoff: Backoff,
    pub reconcile_backoff: Backoff,
    /// Name of this replica (pod name), for Kubernetes Events.
    pub instance: Option<String>,
    /// How long a shutdown waits for in-flight work.
    pub shutdown_grace: Duration,
    /// How often a route whose target API (Tekton, Argo) is not served checks again.
    pub api_recheck: Duration,
    /// Run the delivery executor. Without it the process only receives and records events,
    /// as a replica that is not the leader does.
    pub executor: bool,
    /// Elect a leader through a Lease (several replicas); `None`: this process always leads.
    pub leader_election: Option<LeaseConfig>,
    /// Webhook requests worked on at once; beyond, 503 with `Retry-After` at once.
    pub max_inflight_requests: usize,
    /// Body bytes held by the requests worked on at once; beyond, 503 with `Retry-After`.
    pub max_inflight_bytes: usize,
    /// How long the receiver waits for the API server to store a delivery (then 503).
    pub record_timeout: Duration,
    /// Deliveries the executor works on at once.
    pub executor_concurrency: u16,
    /// How long an event id stays a duplicate, whatever the history limits prune.
    pub dedup_window: Duration,
    /// How often finished deliveries beyond the history limits are pruned.
    pub prune_interval: Duration,
    /// How often route status (`lastEvent`, `lastDelivery`) is written, at most.
    pub route_status_interval: Duration,
    /// How long a delivery waits for its route to become Ready before it fails.
    pub max_pending_age: Duration,
    /// How long a watch may keep failing before `/healthz` fails.
    pub unhealthy_after: Duration,
    /// On shutdown, how long `/readyz` fails while the receiver still serves, so that the
    /// Service stops sending before the listener closes.
    pub shutdown_drain: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            webhook_addr: SocketAddr::from(([0, 0, 0, 0], 8080)),
            metrics_addr: SocketAddr::from(([0, 0, 0, 0], 9090)),
            namespace: None,
            public_url: None,
            body_limit: 1024 * 1024,
            body_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(10),
            max_attempts: 5,
            retry_backoff: Backoff {
                base: Duration::from_secs(2),
                max: Duration::from_secs(300),
            },
            reconcile_backoff: Backoff {
                base: Duration::from_millis(500),
                max: Duration::from_secs(300),
            },
            instance: None,
            shutdown_grace: Duration::from_secs(20),
            api_recheck: Duration::from_secs(60),
            executor: true,
            leader_election: None,
            max_inflight_requests: 128,
            max_inflight_bytes: 32 * 1024 * 1024,
            record_timeout: Duration::from_secs(5),
            executor_concurrency: 16,
            dedup_window: Duration::from_secs(72 * 3600),
            prune_interval: Duration::from_secs(10),
            route_status_interval: Duration::from_secs(3),
            max_pending_age: Duration::from_secs(24 * 3600),
            unhealthy_after: Duration::from_secs(300),
            shutdown_drain: Duration::from_secs(5),
        }
    }
}

/// What the controllers and servers share.
pub struct Context {
    pub client: Client,
    pub http: reqwest::Client,
    pub config: Config,
    pub table: RoutingTable,
    pub metrics: Metrics,
    pub recorder: Recorder,
    pub reconcile_failures: FailureCounts,
    pub rate_limiter: crate::server::rate_limit::RateLimiter,
    /// Rule evaluations (CEL) running at once on the blocking pool.
    pub evaluations: tokio::sync::Semaphore,
    /// The receiver's budget of requests and bytes in flight.
    pub admission: crate::server::admission::Admission,
    /// `lastEvent` / `lastDelivery` per route, written by a coalescing flush.
    pub route_activity: Arc<crate::controller::route_activity::RouteActivity>,
    /// Whether the watches work (for `/healthz`).
    pub health: Arc<crate::health::Health>,
    /// The executor's own status writes, beyond what its cache shows.
    pub ledger: crate::controller::ledger::Ledger,
    /// How many Kubernetes Events the executor may publish.
    pub event_budget: crate::controller::delivery::EventBudget,
    /// Set once the first list of routes has been received.
    pub routes_synced: Arc<AtomicBool>,
    /// Set when shutdown begins: `/readyz` fails from then on.
    pub stopping: AtomicBool,
    ready: AtomicBool,
    routes: Store<StatusedRoute>,
    leading: watch::Receiver<bool>,
}

impl Context {
    /// Whether this replica leads: runs the executor and writes route status.
    pub fn is_leader(&self) -> bool {
        *self.leading.borrow()
    }

    /// Yields each time this replica becomes the leader.
    pub fn became_leader(&self) -> impl futures::Stream<Item = ()> + Send + 'static {
        futures::stream::unfold(self.leading.clone(), |mut rx| async move {
            loop {
                rx.changed().await.ok()?;
                if *rx.borrow_and_update() {
                    return Some(((), rx));
                }
            }
        })
    }

    /// Whether `route` (this uid) is still in the watch cache, i.e. not deleted.
    pub fn route_is_current(&self, route: &StatusedRoute) -> bool {
        let key = RouteKey::of(route);
        let obj = kube::runtime::reflector::ObjectRef::new(&key.name).within(&key.namespace);
        self.routes
            .get(&obj)
            .is_some_and(|r| r.metadata.uid == route.metadata.uid)
    }

    /// The uid of the route `key` in the watch cache; `None` when the cache has no such route.
    pub fn cached_route_uid(&self, key: &RouteKey) -> Option<Option<String>> {
        let obj = kube::runtime::reflector::ObjectRef::new(&key.name).within(&key.namespace);
        self.routes.get(&obj).map(|r| r.metadata.uid.clone())
    }

    /// Ready when the route list has synced and every listed route has been compiled into the
    /// table (ready or not), so that a 404 really means "no such route".
    ///
    /// Latched: once ready, the hot path is a single atomic load.
    pub fn is_ready(&self) -> bool {
        if self.ready.load(Ordering::Acquire) {
            return true;
        }
        let ready = self.routes_synced.load(Ordering::Acquire)
            && self
                .routes
                .state()
                .iter()
                .all(|r| self.table.contains(&RouteKey::of(r)));
        if ready {
            self.ready.store(true, Ordering::Release);
        }
        ready
    }
}

/// A running operator; dropping it does not stop it, [`Running::shutdown`] does.
pub struct Running {
    pub webhook_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub context: Arc<Context>,
    cancel: CancellationToken,
    tasks: JoinSet<()>,
    /// Keeps the leadership channel open when there is no election (always leading).
    _leading: Option<watch::Sender<bool>>,
}

impl Running {
    /// Stops servers and controllers and waits for them, at most `shutdown_grace`.
    ///
    /// A controller asked to stop before its first list completed waits for a store that will
    /// never become ready (its watch is already gone); nothing is in flight then, so parts still
    /// running after the grace period are aborted.
    pub async fn shutdown(mut self) {
        // Not ready first, still serving: endpoints drop this replica before the listener
        // closes, so a sender in flight is answered rather than reset.
        self.context.stopping.store(true, Ordering::Release);
        let drain = self.context.config.shutdown_drain;
        if !drain.is_zero() {
            info!(?drain, "stopping: not ready, still receiving");
            tokio::time::sleep(drain).await;
        }
        self.cancel.cancel();
        let grace = self.context.config.shutdown_grace;
        let tasks = &mut self.tasks;
        let drained =
            tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            warn!(
                remaining = self.tasks.len(),
                ?grace,
                "parts did not stop in time; aborting them"
            );
            self.tasks.abort_all();
            while self.tasks.join_next().await.is_some() {}
        }
    }

    /// Stops everything at once, without any of the graceful steps (no Lease release, no
    /// finishing deliveries): what a crashed or killed replica leaves behind.
    pub async fn kill(mut self) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }

    /// Waits until the process is asked to stop (or a part ends by itself), then stops.
    pub async fn wait(mut self, stop: impl Future<Output = ()>) {
        tokio::select! {
            () = stop => {}
            _ = self.tasks.join_next() => {}
        }
        self.shutdown().await;
    }
}

/// Binds both listeners and starts everything.
pub async fn start(client: Client, config: Config) -> Result<Running, std::io::Error> {
    let webhook_listener = TcpListener::bind(config.webhook_addr).await?;
    let metrics_listener = TcpListener::bind(config.metrics_addr).await?;
    let webhook_addr = webhook_listener.local_addr()?;
    let metrics_addr = metrics_listener.local_addr()?;

    let http = reqwest::Client::builder()
        .user_agent(crate::targets::request::USER_AGENT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(std::io::Error::other)?;
    let reporter = Reporter {
        controller: "statused-operator".into(),
        instance: config.instance.clone(),
    };
    let (store, writer) = reflector::store();
    let (leading_tx, leading) = watch::channel(config.leader_election.is_none());
    let admission = crate::server::admission::Admission::new(
        config.max_inflight_requests,
        config.max_inflight_bytes,
    );
    let context = Arc::new(Context {
        leading,
        recorder: Recorder::new(client.clone(), reporter),
        client,
        http,
        config,
        table: RoutingTable::default(),
        metrics: Metrics::default(),
        reconcile_failures: FailureCounts::default(),
        rate_limiter: Default::default(),
        admission,
        evaluations: tokio::sync::Semaphore::new(crate::server::webhook::EVALUATIONS),
        route_activity: Default::default(),
        event_budget: Default::default(),
        ledger: Default::default(),
        health: Default::default(),
        routes_synced: Arc::new(AtomicBool::new(false)),
        stopping: AtomicBool::new(false),
        ready: AtomicBool::new(false),
        routes: store.clone(),
    });

    let cancel = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let stopped = |c: &CancellationToken| {
        let c = c.clone();
        async move { c.cancelled().await }
    };
    let mut parts: Vec<(&str, BoxFuture<'static, ()>)> = vec![
        (
            "route controller",
            crate::controller::route::run(context.clone(), store, writer, stopped(&cancel)).boxed(),
        ),
        (
            "webhook server",
            axum::serve(
                webhook_listener,
                crate::server::webhook_router(context.clone()),
            )
            .with_graceful_shutdown(stopped(&cancel))
            .into_future()
            .map(|_| ())
            .boxed(),
        ),
        (
            "metrics server",
            axum::serve(
                metrics_listener,
                crate::server::probes_router(context.clone()),
            )
            .with_graceful_shutdown(stopped(&cancel))
            .into_future()
            .map(|_| ())
            .boxed(),
        ),
    ];
    // Cancelled once no executor runs any more: only then may the Lease be given up.
    let executor_done = CancellationToken::new();
    if context.config.executor {
        parts.push((
            "delivery executor",
            run_executor_while_leading(context.clone(), cancel.clone(), executor_done.clone())
                .boxed(),
        ));
    } else {
        executor_done.cancel();
    }
    let leading_tx = match context.config.leader_election.clone() {
        Some(lease) => {
            parts.push((
                "leader election",
                crate::leader::run(
                    context.client.clone(),
                    lease,
                    leading_tx,
                    cancel.clone(),
                    executor_done,
                )
                .boxed(),
            ));
            None
        }
        None => Some(leading_tx),
    };
    for (name, part) in parts {
        tasks.spawn(async move {
            part.await;
            debug!(part = name, "stopped");
        });
    }
    info!(%webhook_addr, %metrics_addr, namespace = ?context.config.namespace, "statused-operator started");
    Ok(Running {
        webhook_addr,
        metrics_addr,
        context,
        cancel,
        tasks,
        _leading: leading_tx,
    })
}

/// Runs the delivery executor whenever this replica leads, and stops it as soon as it does
/// not, so that two replicas never deliver at once.
async fn run_executor_while_leading(
    ctx: Arc<Context>,
    stop: CancellationToken,
    done: CancellationToken,
) {
    let _done = done.drop_guard();
    let mut leading = ctx.leading.clone();
    loop {
        while !*leading.borrow_and_update() {
            tokio::select! {
                changed = leading.changed() => if changed.is_err() { return },
                () = stop.cancelled() => return,
            }
        }
        let term = stop.child_token();
        let stopped = term.clone();
        let executor =
            crate::controller::delivery::run(ctx.clone(), async move { stopped.cancelled().await });
        tokio::pin!(executor);
        loop {
            tokio::select! {
                () = &mut executor => return,
                changed = leading.changed() => {
                    if changed.is_ok() && *leading.borrow_and_update() {
                        continue;
                    }
                    // Another replica may lead soon: stop at once, abandoning calls in flight
                    // (their targets stay due and the new leader makes them).
                    info!("no longer leading; stopping the delivery executor");
                    term.cancel();
                    // A follower has no backlog of its own to report.
                    ctx.metrics.backlog(0, Duration::ZERO);
                    break;
                }
            }
        }
    }
}
