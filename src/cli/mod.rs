//! Command-line interface: `run`, `crd`, `sign`, `send`, `route test`.

pub mod crd;
pub mod redeliver;
pub mod route_test;
pub mod send;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::backoff::Backoff;
use crate::config::{Config, SecretAccess};
use crate::egress::{BadCidr, BadProxy, EgressProfile, EgressProxy, parse_cidrs};
use crate::leader::LeaseConfig;

#[derive(Debug, Parser)]
#[command(
    name = "statused-operator",
    version,
    about = "Statused webhooks to Kubernetes-native pipelines"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the receiver, the controllers and the metrics/probe server.
    Run(Box<RunArgs>),
    /// Print the CustomResourceDefinitions as YAML.
    Crd {
        /// As the chart's template (kept on uninstall, switched by crds.install).
        #[arg(long)]
        helm: bool,
    },
    /// Print the X-Statused-Signature header value for a body.
    Sign(SignArgs),
    /// Sign a body and POST it to a route, as Statused would.
    Send(SendArgs),
    /// Work with route YAML offline.
    #[command(subcommand)]
    Route(RouteCommand),
    /// Run a finished delivery's failed targets again (`--all-targets`: every target), or, with
    /// `--route` and `--failed-since`, every delivery of a route that failed in that window.
    /// Creates a `StatusedRedelivery` per delivery; the operator honours each request once.
    Redeliver(RedeliverArgs),
}

#[derive(Debug, Args)]
pub struct RedeliverArgs {
    /// The StatusedDelivery.
    #[arg(required_unless_present = "route", conflicts_with = "route")]
    pub name: Option<String>,
    /// Namespace (default: the kubeconfig's).
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// Run every target again, not only the failed ones.
    #[arg(long)]
    pub all_targets: bool,
    /// Send targets superseded by a newer event for their ordering key too, and ignore the
    /// route's `ordering` for the targets run again.
    #[arg(long)]
    pub ignore_ordering: bool,
    /// Every delivery of this route that failed within `--failed-since`.
    #[arg(long, requires = "failed_since")]
    pub route: Option<String>,
    /// How far back, e.g. `2h` (Go duration).
    #[arg(long, value_parser = parse_duration, requires = "route")]
    pub failed_since: Option<Duration>,
}

#[derive(Debug, Subcommand)]
pub enum RouteCommand {
    /// Show which rules an event matches and the exact requests or objects each target would
    /// send, without sending anything. Secrets are read from the route file and `--secrets`.
    Test(RouteTestArgs),
}

#[derive(Debug, Args)]
pub struct RouteTestArgs {
    /// YAML with the StatusedRoute (and, optionally, its Secrets).
    pub route: PathBuf,
    /// The event body (`-` for standard input).
    pub event: PathBuf,
    /// More YAML files with Secrets.
    #[arg(long)]
    pub secrets: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Address of the webhook receiver.
    #[arg(long, env = "STATUSED_WEBHOOK_ADDR", default_value = "0.0.0.0:8080")]
    pub webhook_addr: SocketAddr,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "STATUSED_METRICS_ADDR", default_value = "0.0.0.0:9090")]
    pub metrics_addr: SocketAddr,
    /// Only watch this namespace (default: all namespaces).
    #[arg(long, env = "STATUSED_NAMESPACE")]
    pub namespace: Option<String>,
    /// Public base URL of the receiver, shown as each route's webhookURL.
    #[arg(long, env = "STATUSED_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Largest accepted webhook body in bytes.
    #[arg(long, env = "STATUSED_BODY_LIMIT", default_value_t = 1024 * 1024)]
    pub body_limit: usize,
    /// Timeout of one call to a target, in seconds.
    #[arg(long, env = "STATUSED_REQUEST_TIMEOUT_SECONDS", default_value_t = 10.0)]
    pub request_timeout_seconds: f64,
    /// Attempts per target before its delivery fails.
    #[arg(long, env = "STATUSED_MAX_ATTEMPTS", default_value_t = 5)]
    pub max_attempts: u32,
    /// First retry delay in seconds; doubles per attempt, with jitter.
    #[arg(long, env = "STATUSED_RETRY_BASE_SECONDS", default_value_t = 2.0)]
    pub retry_base_seconds: f64,
    /// Longest retry delay in seconds.
    #[arg(long, env = "STATUSED_RETRY_MAX_SECONDS", default_value_t = 300.0)]
    pub retry_max_seconds: f64,
    /// Log format.
    #[arg(long, env = "STATUSED_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// Name of this replica, for Kubernetes Events and leader election (the chart sets the
    /// pod name).
    #[arg(long, env = "POD_NAME")]
    pub instance: Option<String>,
    /// Elect a leader through a Lease so that several replicas can run: all receive events,
    /// only the leader delivers them and writes status.
    #[arg(long, env = "STATUSED_LEADER_ELECTION")]
    pub leader_election: bool,
    /// Namespace of the Lease (the chart sets the pod's namespace).
    #[arg(long, env = "POD_NAMESPACE")]
    pub leader_election_namespace: Option<String>,
    /// Name of the Lease.
    #[arg(
        long,
        env = "STATUSED_LEADER_ELECTION_LEASE",
        default_value = "statused-operator"
    )]
    pub leader_election_lease: String,
    /// Addresses HTTP targets may reach even inside a refused class (loopback, link-local,
    /// metadata, ...): comma-separated CIDRs, e.g. `127.0.0.2/32` for a local stand-in.
    #[arg(long, env = "STATUSED_EGRESS_ALLOW", default_value = "")]
    pub egress_allow: String,
    /// Addresses HTTP targets may not reach, on top of the refused classes: comma-separated
    /// CIDRs, e.g. `10.0.0.0/8` to keep targets out of the cluster network. Wins over
    /// `--egress-allow`.
    #[arg(long, env = "STATUSED_EGRESS_DENY", default_value = "")]
    pub egress_deny: String,
    /// Which address classes HTTP targets may not reach: `default` (loopback, link-local and
    /// metadata, unspecified, multicast, broadcast, reserved) or `strict` (those and private
    /// ranges: RFC 1918, CGNAT 100.64.0.0/10, unique-local fc00::/7), for clusters whose
    /// teams must reach external services only. `--egress-allow` still opens CIDRs.
    #[arg(
        long,
        env = "STATUSED_EGRESS_PROFILE",
        value_enum,
        default_value = "default"
    )]
    pub egress_profile: EgressProfile,
    /// Send HTTP targets through this proxy (http:// or https:// URL, credentials allowed).
    /// HTTP_PROXY, HTTPS_PROXY, ALL_PROXY and NO_PROXY are never used for targets. The guard
    /// still applies to each target: its host must resolve here and every address it
    /// resolves to must be allowed, or the call is not made.
    #[arg(long, env = "STATUSED_EGRESS_PROXY", hide_env_values = true)]
    pub egress_proxy: Option<String>,
    /// This pod's own IP addresses, refused to HTTP targets on every port (the chart passes
    /// `status.podIPs`); repeat the flag or separate them with commas.
    #[arg(long = "pod-ip", env = "POD_IPS", value_delimiter = ',')]
    pub pod_ips: Vec<IpAddr>,
    /// Events whose signed `time` is older than this are refused (400), so that a captured
    /// event cannot be replayed once its record is pruned (Go duration; `0` disables). A
    /// route's `spec.replayWindow` overrides it. Never longer than `--dedup-window`.
    #[arg(long, env = "STATUSED_REPLAY_WINDOW", default_value = "72h",
          value_parser = parse_duration)]
    pub replay_window: Duration,
    /// Which Secrets a route may use: every Secret of its namespace (`namespace`), or only
    /// those labelled `statused.dev/route-access: "true"` (`labeled`).
    #[arg(
        long,
        env = "STATUSED_SECRET_ACCESS",
        value_enum,
        default_value = "namespace"
    )]
    pub secret_access: SecretAccess,
    /// Webhook requests worked on at once; more are answered 503 with Retry-After at once.
    #[arg(long, env = "STATUSED_MAX_INFLIGHT_REQUESTS", default_value_t = 128)]
    pub max_inflight_requests: usize,
    /// Body bytes the requests worked on at once may hold; beyond, 503 with Retry-After.
    /// Before its signature is checked a request holds at most 64 KiB of it, and then only
    /// what it has sent.
    #[arg(long, env = "STATUSED_MAX_INFLIGHT_BYTES", default_value_t = 32 * 1024 * 1024)]
    pub max_inflight_bytes: usize,
    /// Verified requests of one namespace's routes worked on at once (its share of
    /// --max-inflight-requests); beyond, 429 with Retry-After.
    #[arg(
        long,
        env = "STATUSED_MAX_INFLIGHT_PER_NAMESPACE",
        default_value_t = 32
    )]
    pub max_inflight_per_namespace: usize,
    /// Stored StatusedDeliveries of one namespace (finished ones stay for the dedup window,
    /// or their route's history limits); beyond, its new events are answered 429. What one
    /// team can store in etcd and in the operator's memory.
    #[arg(
        long,
        env = "STATUSED_MAX_DELIVERIES_PER_NAMESPACE",
        default_value_t = 2_000
    )]
    pub max_deliveries_per_namespace: usize,
    /// Stored StatusedDeliveries in all namespaces; beyond, new events are answered 503. The
    /// chart's memory limit is derived from it (each costs the executor a few KiB).
    #[arg(long, env = "STATUSED_MAX_DELIVERIES", default_value_t = 20_000)]
    pub max_deliveries: usize,
    /// Bytes of one namespace's stored StatusedDeliveries (each its spec as JSON: mostly its
    /// event); beyond, its new events are answered 429. What one team can put in etcd.
    #[arg(
        long,
        env = "STATUSED_MAX_DELIVERY_BYTES_PER_NAMESPACE",
        default_value_t = 48 * 1024 * 1024
    )]
    pub max_delivery_bytes_per_namespace: usize,
    /// Bytes of all stored StatusedDeliveries; beyond, new events are answered 503. Keep it
    /// well under etcd's quota (2 GiB by default), which every resource of the cluster shares.
    #[arg(
        long,
        env = "STATUSED_MAX_DELIVERY_BYTES",
        default_value_t = 512 * 1024 * 1024
    )]
    pub max_delivery_bytes: usize,
    /// Routes served in one namespace, oldest first: each is compiled and held by every
    /// replica; the newer ones beyond are not Ready, saying so, until older ones go.
    #[arg(long, env = "STATUSED_MAX_ROUTES_PER_NAMESPACE", default_value_t = 100)]
    pub max_routes_per_namespace: usize,
    /// Routes served in all namespaces, oldest first; the newer ones beyond are not Ready.
    #[arg(long, env = "STATUSED_MAX_ROUTES", default_value_t = 2_000)]
    pub max_routes: usize,
    /// Seconds a sender has to deliver the whole body once its headers arrived; slower,
    /// 408. A deadline rather than a minimum rate: it holds a slot for a known, short time
    /// whatever the client does (Statused's events are a few KiB sent from a data centre).
    #[arg(long, env = "STATUSED_BODY_TIMEOUT_SECONDS", default_value_t = 2.0)]
    pub body_timeout_seconds: f64,
    /// How long the receiver waits for the API server to store an event, in seconds; then
    /// 503 with Retry-After, so the sender retries (a late store makes the retry a duplicate).
    #[arg(long, env = "STATUSED_RECORD_TIMEOUT_SECONDS", default_value_t = 5.0)]
    pub record_timeout_seconds: f64,
    /// Deliveries the executor works on at once: their target calls are in flight together
    /// (cheap: a socket and a request each), round-robin across namespaces. Also the most
    /// deliveries whose calls a crash can leave with no recorded outcome.
    #[arg(long, env = "STATUSED_EXECUTOR_CONCURRENCY", default_value_t = 256,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub executor_concurrency: u16,
    /// The executor's requests to the API server at once (status writes, fresh reads, the
    /// objects Tekton and Argo targets create), bounded apart from the calls: they share the
    /// API server with the receiver's creates. Also how many unwritten statuses stop new calls.
    #[arg(long, env = "STATUSED_EXECUTOR_API_WRITES", default_value_t = 16,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub executor_api_writes: u16,
    /// How long an event id is recognised as a duplicate (Go duration, e.g. 72h): no
    /// delivery younger than this is pruned, whatever a route's history limits say.
    #[arg(long, env = "STATUSED_DEDUP_WINDOW", default_value = "72h",
          value_parser = parse_duration)]
    pub dedup_window: Duration,
    /// How long a delivery waits for its route to become Ready (a Secret missing, say)
    /// before it fails with RouteNotReady (Go duration).
    #[arg(long, env = "STATUSED_MAX_PENDING_AGE", default_value = "24h",
          value_parser = parse_duration)]
    pub max_pending_age: Duration,
    /// How often a followed run (a target's `follow`) is read while it runs (Go duration):
    /// one GET of the PipelineRun or Workflow each time, one of `--executor-api-writes`.
    #[arg(long, env = "STATUSED_FOLLOW_INTERVAL", default_value = "10s",
          value_parser = parse_duration)]
    pub follow_interval: Duration,
    /// Deliveries of one namespace following a run at once (a target's `follow`); beyond, a
    /// trigger that is accepted is not followed, and its target says so
    /// (`lastError: NotFollowed: ...`). What one team's follows cost in reads.
    #[arg(
        long,
        env = "STATUSED_MAX_FOLLOWS_PER_NAMESPACE",
        default_value_t = 500
    )]
    pub max_follows_per_namespace: usize,
    /// Deliveries following a run at once, in all namespaces.
    #[arg(long, env = "STATUSED_MAX_FOLLOWS", default_value_t = 5_000)]
    pub max_follows: usize,
    /// How long a watch (routes, deliveries) may keep failing before /healthz fails and
    /// Kubernetes restarts the process (Go duration).
    #[arg(long, env = "STATUSED_UNHEALTHY_AFTER", default_value = "5m",
          value_parser = parse_duration)]
    pub unhealthy_after: Duration,
    /// On SIGTERM, how long /readyz fails while the receiver keeps serving, before the
    /// listeners close (Go duration; keep it below the pod's termination grace period).
    #[arg(long, env = "STATUSED_SHUTDOWN_DRAIN", default_value = "5s",
          value_parser = parse_duration)]
    pub shutdown_drain: Duration,
    /// Export traces (OpenTelemetry, one trace per event from receipt to every target call)
    /// to this OTLP/HTTP collector base URL, e.g. `http://otel-collector:4318` (spans go to
    /// `<url>/v1/traces`, protobuf). Unset: no traces, and no `traceparent` sent to targets.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}

/// A flag's value that is not a Go duration.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a duration like 72h, 30m or 90s")]
pub struct NotADuration(String);

fn parse_duration(text: &str) -> Result<Duration, NotADuration> {
    crate::duration::parse_go_duration(text).ok_or_else(|| NotADuration(text.to_string()))
}

/// Flags that do not make a configuration together.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--leader-election needs --leader-election-namespace (or POD_NAMESPACE)")]
    LeaderElectionNamespace,
    #[error("--egress-allow / --egress-deny")]
    Egress(#[from] BadCidr),
    #[error(transparent)]
    EgressProxy(#[from] BadProxy),
    #[error(
        "--replay-window ({replay:?}) is longer than --dedup-window ({dedup:?}): an event \
         pruned as no longer a duplicate could then still be replayed"
    )]
    ReplayLongerThanDedup { replay: Duration, dedup: Duration },
}

impl RunArgs {
    pub fn config(&self) -> Result<Config, ConfigError> {
        if self.replay_window > self.dedup_window {
            return Err(ConfigError::ReplayLongerThanDedup {
                replay: self.replay_window,
                dedup: self.dedup_window,
            });
        }
        let secs = |s: f64| Duration::from_secs_f64(s.max(0.0));
        let leader_election = if self.leader_election {
            let namespace = self
                .leader_election_namespace
                .clone()
                .or_else(|| self.namespace.clone())
                .ok_or(ConfigError::LeaderElectionNamespace)?;
            let identity = self
                .instance
                .clone()
                .unwrap_or_else(|| format!("statused-operator-{:08x}", fastrand::u32(..)));
            Some(LeaseConfig {
                namespace,
                name: self.leader_election_lease.clone(),
                identity,
                lease_duration: Duration::from_secs(15),
                renew_every: Duration::from_secs(5),
            })
        } else {
            None
        };
        Ok(Config {
            webhook_addr: self.webhook_addr,
            metrics_addr: self.metrics_addr,
            namespace: self.namespace.clone(),
            public_url: self.public_url.clone(),
            body_limit: self.body_limit,
            request_timeout: secs(self.request_timeout_seconds),
            max_attempts: self.max_attempts.max(1),
            retry_backoff: Backoff {
                base: secs(self.retry_base_seconds),
                max: secs(self.retry_max_seconds),
            },
            instance: self.instance.clone(),
            leader_election,
            max_inflight_requests: self.max_inflight_requests.max(1),
            max_inflight_bytes: self.max_inflight_bytes.max(1),
            max_inflight_per_namespace: self.max_inflight_per_namespace.max(1),
            max_deliveries_per_namespace: self.max_deliveries_per_namespace.max(1),
            max_deliveries: self.max_deliveries.max(1),
            max_delivery_bytes_per_namespace: self.max_delivery_bytes_per_namespace.max(1),
            max_delivery_bytes: self.max_delivery_bytes.max(1),
            max_routes_per_namespace: self.max_routes_per_namespace.max(1),
            max_routes: self.max_routes.max(1),
            body_timeout: secs(self.body_timeout_seconds),
            record_timeout: secs(self.record_timeout_seconds),
            executor_concurrency: self.executor_concurrency,
            executor_api_writes: self.executor_api_writes,
            dedup_window: self.dedup_window,
            max_pending_age: self.max_pending_age,
            follow_interval: self.follow_interval,
            max_follows_per_namespace: self.max_follows_per_namespace,
            max_follows: self.max_follows,
            unhealthy_after: self.unhealthy_after,
            shutdown_drain: self.shutdown_drain,
            otlp_endpoint: self.otlp_endpoint.clone(),
            egress_allow: parse_cidrs(&self.egress_allow)?,
            egress_deny: parse_cidrs(&self.egress_deny)?,
            egress_profile: self.egress_profile,
            egress_proxy: self
                .egress_proxy
                .as_deref()
                .filter(|text| !text.trim().is_empty())
                .map(EgressProxy::parse)
                .transpose()?,
            pod_ips: self.pod_ips.clone(),
            replay_window: self.replay_window,
            secret_access: self.secret_access,
            ..Config::default()
        })
    }
}

#[derive(Debug, Args)]
pub struct SignArgs {
    /// File with the exact body to sign (`-` for standard input).
    pub body: PathBuf,
    /// The signing secret.
    #[arg(long, env = "STATUSED_SIGNING_SECRET", hide_env_values = true)]
    pub secret: String,
}

#[derive(Debug, Args)]
pub struct SendArgs {
    /// File with the exact event body (`-` for standard input).
    pub body: PathBuf,
    /// Route URL, e.g. http://127.0.0.1:8080/hooks/default/releases.
    #[arg(long)]
    pub url: String,
    /// The signing secret.
    #[arg(long, env = "STATUSED_SIGNING_SECRET", hide_env_values = true)]
    pub secret: String,
    /// Set the event's `time` to now before signing: a captured sample is older than the
    /// receiver's replay window and would be refused as it is.
    #[arg(long)]
    pub now: bool,
    /// Send it as App Store Connect does (`x-apple-signature: hmacsha256=<hex>`; `--now` sets
    /// `data.attributes.timestamp`), to a route with `source: appStoreConnect`.
    #[arg(long)]
    pub app_store_connect: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn run_args(extra: &[&str]) -> RunArgs {
        let args = ["statused-operator", "run"].iter().chain(extra);
        match Cli::try_parse_from(args).unwrap().command {
            Command::Run(args) => *args,
            _ => unreachable!("parsed a run"),
        }
    }

    #[test]
    fn security_settings_reach_the_config() {
        let config = run_args(&[
            "--egress-allow",
            "127.0.0.2/32, 10.1.0.0/16",
            "--egress-deny",
            "10.0.0.0/8",
            "--replay-window",
            "24h",
            "--secret-access",
            "labeled",
        ])
        .config()
        .unwrap();
        assert_eq!(config.egress_allow.len(), 2);
        assert_eq!(config.egress_deny.len(), 1);
        assert_eq!(config.egress_profile, EgressProfile::Default);
        assert_eq!(config.replay_window, Duration::from_secs(24 * 3600));
        assert_eq!(config.secret_access, SecretAccess::Labeled);
        let defaults = run_args(&[]).config().unwrap();
        assert!(defaults.egress_allow.is_empty() && defaults.egress_deny.is_empty());
        assert_eq!(defaults.replay_window, defaults.dedup_window);
        assert_eq!(defaults.secret_access, SecretAccess::Namespace);
    }

    #[test]
    fn egress_profile_proxy_and_pod_ips_reach_the_config() {
        let config = run_args(&[
            "--egress-profile",
            "strict",
            "--egress-proxy",
            "http://user:pw@proxy.example:3128",
            "--pod-ip",
            "10.244.1.7,fd00:10:244::7",
            "--pod-ip",
            "10.244.1.8",
        ])
        .config()
        .unwrap();
        assert_eq!(config.egress_profile, EgressProfile::Strict);
        assert_eq!(
            config.egress_proxy.map(|p| p.to_string()).as_deref(),
            Some("http://proxy.example:3128")
        );
        assert_eq!(config.pod_ips.len(), 3);
        let defaults = run_args(&[]).config().unwrap();
        assert!(defaults.egress_proxy.is_none() && defaults.pod_ips.is_empty());
        // An empty value (a chart default) is no proxy.
        let empty = run_args(&["--egress-proxy", ""]).config().unwrap();
        assert!(empty.egress_proxy.is_none());
        let err = run_args(&["--egress-proxy", "socks5://user:s3cret@proxy:1080"])
            .config()
            .unwrap_err();
        assert!(matches!(err, ConfigError::EgressProxy(_)), "{err}");
        assert!(!err.to_string().contains("s3cret"), "{err}");
        let refused = Cli::try_parse_from(["statused-operator", "run", "--egress-profile", "open"]);
        assert!(refused.is_err());
    }

    #[test]
    fn a_replay_window_longer_than_the_dedup_window_is_refused() {
        let err = run_args(&["--replay-window", "100h"]).config().unwrap_err();
        assert!(
            matches!(err, ConfigError::ReplayLongerThanDedup { .. }),
            "{err}"
        );
        assert!(run_args(&["--replay-window", "0"]).config().is_ok());
        let err = run_args(&["--egress-deny", "10.0.0.0/33"])
            .config()
            .unwrap_err();
        assert!(matches!(err, ConfigError::Egress(_)), "{err}");
    }
}
