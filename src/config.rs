//! Settings of one operator process: what `statused-operator run` takes as flags.

use std::net::SocketAddr;
use std::time::Duration;

use crate::backoff::Backoff;
use crate::leader::LeaseConfig;

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
    /// How long a sender may take to deliver the whole body after its headers (slower: 408).
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
    /// Verified requests of one namespace worked on at once; beyond, 429 with `Retry-After`.
    pub max_inflight_per_namespace: usize,
    /// Stored deliveries of one namespace; beyond, new events 429.
    pub max_deliveries_per_namespace: usize,
    /// Stored deliveries in all namespaces; beyond, new events 503.
    pub max_deliveries: usize,
    /// Bytes (spec as JSON) of one namespace's stored deliveries; beyond, new events 429.
    pub max_delivery_bytes_per_namespace: usize,
    /// Bytes of all stored deliveries; beyond, new events 503.
    pub max_delivery_bytes: usize,
    /// Routes served in one namespace (oldest first); the rest are not Ready.
    pub max_routes_per_namespace: usize,
    /// Routes served in all namespaces (oldest first); the rest are not Ready.
    pub max_routes: usize,
    /// How long the receiver waits for the API server to store a delivery (then 503).
    pub record_timeout: Duration,
    /// Deliveries the executor works on at once (their calls in flight together).
    pub executor_concurrency: u16,
    /// The executor's API requests at once (status writes, fresh reads).
    pub executor_api_writes: u16,
    /// How long an event id stays a duplicate, whatever the history limits prune.
    pub dedup_window: Duration,
    /// How often finished deliveries beyond the history limits are pruned.
    pub prune_interval: Duration,
    /// How often route status (`lastEvent`, `lastDelivery`) is written, at most.
    pub route_status_interval: Duration,
    /// How long a delivery waits for its route to become Ready before it fails.
    pub max_pending_age: Duration,
    /// How often a followed run is read while it runs.
    pub follow_interval: Duration,
    /// Deliveries following a run in one namespace, and in all: beyond, a run is not followed.
    pub max_follows_per_namespace: usize,
    pub max_follows: usize,
    /// How long a watch may keep failing before `/healthz` fails.
    pub unhealthy_after: Duration,
    /// Allowed for HTTP targets even inside a refused address class (`--egress-allow`).
    pub egress_allow: Vec<ipnet::IpNet>,
    /// Refused for HTTP targets on top of the default classes (`--egress-deny`).
    pub egress_deny: Vec<ipnet::IpNet>,
    /// Which address classes HTTP targets may not reach (`--egress-profile`).
    pub egress_profile: crate::egress::EgressProfile,
    /// The proxy HTTP targets go through (`--egress-proxy`); never one from the environment.
    pub egress_proxy: Option<crate::egress::EgressProxy>,
    /// This pod's own addresses (`--pod-ip`), which no target may call.
    pub pod_ips: Vec<std::net::IpAddr>,
    /// The API server's own addresses, which no target may call.
    pub api_server: Vec<std::net::SocketAddr>,
    /// Events whose signed time is older are refused; zero: no limit. A route may set its
    /// own (`spec.replayWindow`), never longer than the dedup window.
    pub replay_window: Duration,
    /// Which Secrets a route may use.
    pub secret_access: SecretAccess,
    /// On shutdown, how long `/readyz` fails while the receiver still serves, so that the
    /// Service stops sending before the listener closes.
    pub shutdown_drain: Duration,
    /// Where spans are exported (OTLP/HTTP base URL, `--otlp-endpoint`); `None`: no traces.
    pub otlp_endpoint: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            webhook_addr: SocketAddr::from(([0, 0, 0, 0], 8080)),
            metrics_addr: SocketAddr::from(([0, 0, 0, 0], 9090)),
            namespace: None,
            public_url: None,
            body_limit: 1024 * 1024,
            body_timeout: Duration::from_secs(2),
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
            max_inflight_per_namespace: 32,
            max_deliveries_per_namespace: 2_000,
            max_deliveries: 20_000,
            max_delivery_bytes_per_namespace: 48 * 1024 * 1024,
            max_delivery_bytes: 512 * 1024 * 1024,
            max_routes_per_namespace: 100,
            max_routes: 2_000,
            record_timeout: Duration::from_secs(5),
            executor_concurrency: 256,
            executor_api_writes: 16,
            dedup_window: Duration::from_secs(72 * 3600),
            prune_interval: Duration::from_secs(10),
            route_status_interval: Duration::from_secs(3),
            max_pending_age: Duration::from_secs(24 * 3600),
            follow_interval: Duration::from_secs(10),
            max_follows_per_namespace: 500,
            max_follows: 5_000,
            unhealthy_after: Duration::from_secs(300),
            shutdown_drain: Duration::from_secs(5),
            otlp_endpoint: None,
            egress_allow: Vec::new(),
            egress_deny: Vec::new(),
            egress_profile: crate::egress::EgressProfile::Default,
            egress_proxy: None,
            pod_ips: Vec::new(),
            api_server: Vec::new(),
            replay_window: Duration::from_secs(72 * 3600),
            secret_access: SecretAccess::Namespace,
        }
    }
}

/// Which Secrets of its namespace a route may use (`--secret-access`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SecretAccess {
    /// Every Secret of the route's namespace.
    #[default]
    Namespace,
    /// Only Secrets labelled `statused.dev/route-access: "true"`.
    Labeled,
}

/// The label a Secret needs under `--secret-access=labeled`.
pub const ROUTE_ACCESS_LABEL: &str = "statused.dev/route-access";
