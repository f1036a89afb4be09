//! HTTP servers: the webhook receiver, and probes plus metrics on a separate port.

pub mod probes;
pub mod record;
pub mod webhook;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};

use crate::context::Context;

/// `POST /hooks/{namespace}/{name}`; any other method on that path is 405.
pub fn webhook_router(receiver: Arc<webhook::Receiver>) -> Router {
    Router::new()
        .route("/hooks/{namespace}/{name}", post(webhook::receive))
        .with_state(receiver)
}

/// `/healthz`, `/readyz`, `/metrics`.
pub fn probes_router(ctx: Arc<Context>) -> Router {
    Router::new()
        .route("/healthz", get(probes::healthz))
        .route("/readyz", get(probes::readyz))
        .route("/metrics", get(probes::metrics))
        .with_state(ctx)
}
