//! Traces: OpenTelemetry spans from an event's receipt to every call it makes, exported over
//! OTLP/HTTP when `--otlp-endpoint` is set, and off (no span recorded, nothing sent, nothing
//! stored) by default.
//!
//! One trace per event:
//!
//! ```text
//! receive (server)  ─ verify ─ match ─ record
//!                                        └ execute (consumer; one per pass that makes calls)
//!                                            └ call (client; one per target and attempt)
//! ```
//!
//! The receiver and the executor meet only in the API server, and may be different replicas:
//! the `record` span's W3C `traceparent` is stored on the delivery (`spec.traceparent`), and
//! every later pass of the executor (a retry, a redelivery, another leader) starts its
//! `execute` span from it. Each HTTP call sends the `call` span's `traceparent`, so a target
//! that traces joins the same trace.
//!
//! Spans carry names, ids, kinds, counts and answers' status codes: never a URL, a header or
//! a body (any of which may hold a secret).
//!
//! Bounds: the SDK's batch processor queues at most [`QUEUE`] finished spans and drops beyond
//! (a slow or absent collector never holds up an event); it exports from its own thread at
//! most [`BATCH`] at a time, each export within [`EXPORT_TIMEOUT`].

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue, Value};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};

/// Finished spans waiting for export, at most; more are dropped.
pub const QUEUE: usize = 4096;
/// Spans in one export request, at most.
pub const BATCH: usize = 512;
/// How long one export may take.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long finished spans wait to be exported with others.
const EXPORT_EVERY: Duration = Duration::from_secs(2);
/// The name of the tracer, and the `service.name` of what is exported.
const NAME: &str = "statused-operator";

/// The export of spans, while it runs: [`Export::shutdown`] sends what is queued.
pub struct Export {
    provider: SdkTracerProvider,
}

#[derive(Debug, thiserror::Error)]
#[error("--otlp-endpoint: {0}")]
pub struct ExportError(String);

/// Starts exporting this process's spans to `endpoint` (an OTLP/HTTP base URL, as
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is: traces go to `<endpoint>/v1/traces`, protobuf).
pub fn export_to(endpoint: &str) -> Result<Export, ExportError> {
    let url = url::Url::parse(endpoint).map_err(|e| ExportError(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ExportError("an http(s) URL is needed".into()));
    }
    let traces = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(traces)
        .with_timeout(EXPORT_TIMEOUT)
        .with_headers(HashMap::new())
        .build()
        .map_err(|e| ExportError(e.to_string()))?;
    let batch = BatchConfigBuilder::default()
        .with_max_queue_size(QUEUE)
        .with_max_export_batch_size(BATCH)
        .with_scheduled_delay(EXPORT_EVERY)
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(
            BatchSpanProcessor::builder(exporter)
                .with_batch_config(batch)
                .build(),
        )
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(NAME)
                .build(),
        )
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    Ok(Export { provider })
}

impl Export {
    /// Exports what is queued (within [`EXPORT_TIMEOUT`]) and stops. Blocking: the SDK's
    /// thread does the export.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown_with_timeout(EXPORT_TIMEOUT) {
            tracing::warn!(error = %e, "spans not all exported at shutdown");
        }
    }
}

/// What a span stands for, in OpenTelemetry's terms.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// A request received (the webhook).
    Server,
    /// A request made (a target's call).
    Client,
    /// Work taken from a queue (a stored delivery).
    Consumer,
    Internal,
}

/// One span, ended when dropped. With no export set up, a span records nothing and costs
/// next to nothing.
pub struct Span {
    cx: Context,
}

impl Span {
    /// A span that starts a trace.
    pub fn root(name: &'static str, kind: Kind) -> Span {
        Self::start(name, kind, &Context::new())
    }

    /// A span whose parent is the span a stored W3C `traceparent` names; a trace of its own
    /// when there is none, or it is not one.
    pub fn continuing(traceparent: Option<&str>, name: &'static str, kind: Kind) -> Span {
        let parent = match traceparent {
            Some(value) => {
                let carrier = HashMap::from([("traceparent".to_string(), value.to_string())]);
                TraceContextPropagator::new().extract(&carrier)
            }
            None => Context::new(),
        };
        Self::start(name, kind, &parent)
    }

    /// A span under this one.
    pub fn child(&self, name: &'static str, kind: Kind) -> Span {
        Self::start(name, kind, &self.cx)
    }

    fn start(name: &'static str, kind: Kind, parent: &Context) -> Span {
        let tracer = opentelemetry::global::tracer_provider().tracer(NAME);
        let kind = match kind {
            Kind::Server => SpanKind::Server,
            Kind::Client => SpanKind::Client,
            Kind::Consumer => SpanKind::Consumer,
            Kind::Internal => SpanKind::Internal,
        };
        let span = tracer
            .span_builder(name)
            .with_kind(kind)
            .start_with_context(&tracer, parent);
        Span {
            cx: parent.with_span(span),
        }
    }

    /// Sets an attribute (never a secret: see the module's comment).
    pub fn set(&self, key: &'static str, value: impl Into<Value>) {
        self.cx.span().set_attribute(KeyValue::new(key, value));
    }

    /// Marks the span failed, saying why (text that is safe to show: no secrets).
    pub fn fail(&self, why: impl Into<String>) {
        self.cx.span().set_status(Status::error(why.into()));
    }

    /// Adds this span's `traceparent` to an outgoing request's headers, unless the target's
    /// own headers set one.
    pub fn propagate(&self, headers: &mut reqwest::header::HeaderMap) {
        let Some(value) = self.traceparent() else {
            return;
        };
        if let Ok(value) = reqwest::header::HeaderValue::from_str(&value) {
            headers.entry("traceparent").or_insert(value);
        }
    }

    /// The W3C `traceparent` of this span; `None` when nothing is traced.
    pub fn traceparent(&self) -> Option<String> {
        if !self.cx.span().span_context().is_valid() {
            return None;
        }
        let mut carrier = HashMap::new();
        TraceContextPropagator::new().inject_context(&self.cx, &mut carrier);
        carrier.remove("traceparent")
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        self.cx.span().end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_an_export_nothing_is_traced_or_propagated() {
        let root = Span::root("receive", Kind::Server);
        assert_eq!(root.traceparent(), None);
        assert_eq!(root.child("record", Kind::Internal).traceparent(), None);
        // A stored traceparent is not passed on by a span that records nothing of its own:
        // with the export off, targets get no traceparent at all.
        let stored = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let resumed = Span::continuing(Some(stored), "execute", Kind::Consumer);
        assert!(!resumed.cx.span().is_recording());
    }

    #[test]
    fn a_stored_traceparent_that_is_not_one_starts_a_trace_of_its_own() {
        for bad in ["", "00-zz-yy-01", "not a traceparent"] {
            let span = Span::continuing(Some(bad), "execute", Kind::Consumer);
            assert!(
                !span.cx.span().span_context().is_remote(),
                "{bad:?} was taken as a parent"
            );
        }
    }
}
