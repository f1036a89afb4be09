//! Liveness, readiness and the metrics endpoint.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;

use crate::context::Context;

/// Fails once a watch has kept failing for `--unhealthy-after`: the controllers cannot see
/// routes or deliveries, and a restart is the way out that Kubernetes knows.
pub async fn healthz(State(ctx): State<Arc<Context>>) -> (StatusCode, String) {
    let now = std::time::Instant::now();
    ctx.metrics.watches_failing(ctx.health.failing(now));
    match ctx
        .health
        .failing_longer_than(ctx.config.unhealthy_after, now)
    {
        None => (StatusCode::OK, "ok".into()),
        Some((watch, for_)) => {
            tracing::error!(watch, failing_for = ?for_, "watch failing too long; reporting unhealthy");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("watch of {watch} failing for {}s", for_.as_secs()),
            )
        }
    }
}

/// Ready once every route has been loaded into the routing table.
pub async fn readyz(State(ctx): State<Arc<Context>>) -> (StatusCode, &'static str) {
    if ctx.stopping.load(std::sync::atomic::Ordering::Acquire) {
        (StatusCode::SERVICE_UNAVAILABLE, "stopping")
    } else if !ctx.is_ready() {
        (StatusCode::SERVICE_UNAVAILABLE, "routes not synced")
    } else if !ctx.stored.is_listed() {
        // Until then every event would be answered 503: no traffic yet.
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "stored deliveries not counted yet",
        )
    } else {
        (StatusCode::OK, "ok")
    }
}

pub async fn metrics(State(ctx): State<Arc<Context>>) -> impl IntoResponse {
    let (ready, not_ready) = ctx.routes.table.readiness();
    ctx.metrics.scrape_state(ctx.is_leader(), ready, not_ready);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        ctx.metrics.encode(),
    )
}
