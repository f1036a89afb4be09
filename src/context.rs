//! What every part of the operator shares, and nothing one of them owns: the kube client,
//! the settings, metrics, the Event recorder, watch health, leadership, the route cache,
//! and the receiver's budgets that the controllers consult (the executor waits for a quiet
//! receiver; a deleted route's rate limit is forgotten). The receiver's own state is
//! `server::webhook::Receiver`, the executor's `controller::executor::Executor`: each is
//! built in `operator.rs` and imported by no module below the servers and controllers.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use kube::Client;
use kube::runtime::events::Recorder;
use tokio::sync::watch;

use crate::admission::Admission;
use crate::backoff::FailureCounts;
use crate::config::Config;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::rate_limit::RateLimiter;
use crate::route_cache::{RouteCache, RouteIndex};

/// What the controllers and servers share.
pub struct Context {
    pub client: Client,
    pub config: Config,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    /// Failed reconciles per object, for their backoff.
    pub reconcile_failures: FailureCounts,
    /// The routing table and the watch cache of routes.
    pub routes: Arc<RouteCache>,
    /// The receiver's rate limits per route.
    pub rate_limiter: Arc<RateLimiter>,
    /// The receiver's budget of requests and bytes in flight.
    pub admission: Arc<Admission>,
    /// The stored deliveries counted per namespace, and their bounds (the receiver's).
    pub stored: Arc<crate::stored::StoredDeliveries>,
    /// Whether the watches work (for `/healthz`).
    pub health: Arc<Health>,
    /// Set when shutdown begins: `/readyz` fails from then on.
    pub stopping: AtomicBool,
    pub(crate) leading: watch::Receiver<bool>,
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

    /// Ready when the route list has synced and every listed route has been compiled into the
    /// table (ready or not), so that a 404 really means "no such route".
    pub fn is_ready(&self) -> bool {
        self.routes.is_ready()
    }
}
