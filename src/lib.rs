//! statused-operator: turns signed Statused webhooks into pipelines, workflows and messages.
//!
//! Layout: `api` (CRD types), `event` / `signature` / `expr` / `matching` / `route` (pure
//! core), `routing` (the table of compiled routes), `targets` (one file per kind), `controller` (route reconciler, delivery executor),
//! `server` (receiver, probes, metrics), `cli` (subcommands), `operator` (wiring).
#![forbid(unsafe_code)]

pub mod adaptive_limit;
pub mod admission;
pub mod api;
pub mod app_store_connect;
pub mod backoff;
pub mod cli;
pub mod conditions;
pub mod config;
pub mod context;
pub mod controller;
pub mod cost;
pub mod duration;
pub mod egress;
pub mod event;
pub mod expr;
pub mod fair_share;
pub mod health;
pub mod leader;
pub mod matching;
pub mod metrics;
pub mod naming;
pub mod operator;
pub mod rate_limit;
pub mod replay;
pub mod route;
pub mod route_cache;
pub mod routing;
pub mod schema;
pub mod secrets;
pub mod server;
pub mod signature;
pub mod stored;
pub mod targets;
#[cfg(test)]
pub(crate) mod test_support;
pub mod token_bucket;
pub mod traces;

/// Installs the process-wide rustls crypto provider. kube and reqwest both use rustls with
/// `ring`; without an explicit choice the first TLS connection panics. Safe to call twice.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
