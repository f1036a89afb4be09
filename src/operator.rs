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
use kube::runtime::reflector;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::backoff::FailureCounts;
pub use crate::config::Config;
use crate::context::Context;
use crate::controller::executor::Executor;
use crate::egress::EgressPolicy;
use crate::metrics::Metrics;
use crate::route_cache::RouteCache;
use crate::server::record::KubeDeliveries;
use crate::server::webhook::{Limits, Receiver};
use crate::targets::outbound::Outbound;

/// A running operator; dropping it does not stop it, [`Running::shutdown`] does.
pub struct Running {
    pub webhook_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub context: Arc<Context>,
    cancel: CancellationToken,
    tasks: JoinSet<()>,
    /// Keeps the leadership channel open when there is no election (always leading).
    _leading: Option<watch::Sender<bool>>,
    /// The export of spans (`--otlp-endpoint`), flushed last at shutdown.
    traces: Option<crate::traces::Export>,
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
        if let Some(export) = self.traces.take() {
            // The SDK exports from its own thread; wait for it off the async workers.
            let _ = tokio::task::spawn_blocking(move || export.shutdown()).await;
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
    let traces = match &config.otlp_endpoint {
        Some(endpoint) => Some(crate::traces::export_to(endpoint).map_err(std::io::Error::other)?),
        None => None,
    };
    let webhook_listener = TcpListener::bind(config.webhook_addr).await?;
    let metrics_listener = TcpListener::bind(config.metrics_addr).await?;
    let webhook_addr = webhook_listener.local_addr()?;
    let metrics_addr = metrics_listener.local_addr()?;

    let outbound = Outbound::new(
        EgressPolicy {
            profile: config.egress_profile,
            allow: config.egress_allow.clone(),
            deny: config.egress_deny.clone(),
            api_server: config.api_server.clone(),
            own_ips: config.pod_ips.clone(),
            // As bound: with port 0 in the flags, the ports the system chose.
            listeners: vec![webhook_addr, metrics_addr],
        },
        config.egress_proxy.as_ref(),
    )
    .map_err(std::io::Error::other)?;
    let reporter = Reporter {
        controller: "statused-operator".into(),
        instance: config.instance.clone(),
    };
    let (store, writer) = reflector::store();
    let (leading_tx, leading) = watch::channel(config.leader_election.is_none());
    let admission = Arc::new(
        crate::admission::Admission::new(config.max_inflight_requests, config.max_inflight_bytes)
            .per_namespace(config.max_inflight_per_namespace),
    );
    let stored = Arc::new(crate::stored::StoredDeliveries::new(
        crate::stored::Bounds {
            per_namespace: config.max_deliveries_per_namespace,
            total: config.max_deliveries,
            bytes_per_namespace: config.max_delivery_bytes_per_namespace,
            bytes: config.max_delivery_bytes,
        },
    ));
    let context = Arc::new(Context {
        leading,
        recorder: Recorder::new(client.clone(), reporter),
        client,
        config,
        metrics: Arc::new(Metrics::default()),
        reconcile_failures: FailureCounts::default(),
        routes: Arc::new(RouteCache::new(store.clone())),
        rate_limiter: Default::default(),
        admission,
        stored: stored.clone(),
        health: Default::default(),
        stopping: AtomicBool::new(false),
    });
    let executor = Arc::new(Executor::new(context.clone(), outbound));

    let receiver = Arc::new(Receiver {
        table: context.routes.table.clone(),
        routes: context.routes.clone(),
        store: Arc::new(KubeDeliveries(context.client.clone())),
        stored: stored.clone(),
        rate_limiter: context.rate_limiter.clone(),
        admission: context.admission.clone(),
        evaluations: Arc::new(crate::fair_share::FairShare::new(
            crate::server::webhook::EVALUATIONS,
        )),
        metrics: context.metrics.clone(),
        limits: Limits {
            body_limit: context.config.body_limit,
            body_timeout: context.config.body_timeout,
            record_timeout: context.config.record_timeout,
            replay_window: context.config.replay_window,
        },
    });

    let cancel = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let mut parts: Vec<(&str, BoxFuture<'static, ()>)> = vec![
        (
            "route controller",
            crate::controller::route::run(
                context.clone(),
                store,
                writer,
                cancel.clone().cancelled_owned(),
            )
            .boxed(),
        ),
        (
            "stored deliveries",
            crate::server::record::count_stored(
                context.client.clone(),
                context.config.namespace.clone(),
                stored,
                context.health.clone(),
                cancel.clone().cancelled_owned(),
            )
            .boxed(),
        ),
        (
            "webhook server",
            axum::serve(webhook_listener, crate::server::webhook_router(receiver))
                .with_graceful_shutdown(cancel.clone().cancelled_owned())
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
            .with_graceful_shutdown(cancel.clone().cancelled_owned())
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
            run_executor_while_leading(executor, cancel.clone(), executor_done.clone()).boxed(),
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
        traces,
    })
}

/// Runs the delivery executor whenever this replica leads, and stops it as soon as it does
/// not, so that two replicas never deliver at once.
async fn run_executor_while_leading(
    ctx: Arc<Executor>,
    stop: CancellationToken,
    done: CancellationToken,
) {
    let _done = done.drop_guard();
    let mut leading = ctx.shared.leading.clone();
    loop {
        while !*leading.borrow_and_update() {
            tokio::select! {
                changed = leading.changed() => if changed.is_err() { return },
                () = stop.cancelled() => return,
            }
        }
        let term = stop.child_token();
        // Redelivery requests reopen deliveries: the leader's work, beside the executor.
        let executor = futures::future::join(
            crate::controller::executor::watch::run(ctx.clone(), term.clone().cancelled_owned()),
            crate::controller::redelivery_requests::run(
                ctx.clone(),
                term.clone().cancelled_owned(),
            ),
        );
        let executor = executor.map(|_| ());
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
                    ctx.shared.metrics.backlog(0, Duration::ZERO);
                    break;
                }
            }
        }
    }
}
