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
//! a request body (any of which may hold a secret); a failed call's status is the error the
//! delivery's status records (scrubbed of the request's secrets). Text is cut to [`MAX_TEXT`].
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
/// How long one export may take (and the flush at shutdown: with the drain and the grace,
/// within the pod's default termination grace period).
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest string an attribute or a status keeps, in bytes: a span costs at most a few
/// KiB whatever an event's id or type holds.
pub const MAX_TEXT: usize = 256;
/// How long finished spans wait to be exported with others.
const EXPORT_EVERY: Duration = Duration::from_secs(2);
/// The name of the tracer, and the `service.name` of what is exported.
const NAME: &str = "statused-operator";

/// The export of spans: [`Export::shutdown`] sends what is queued.
pub struct Export {
    provider: SdkTracerProvider,
}

/// The process's one export: the OpenTelemetry tracer provider is process-wide, so it is set
/// up once, and a second operator in the process (tests start several) shares it.
static EXPORT: std::sync::OnceLock<(String, SdkTracerProvider)> = std::sync::OnceLock::new();

#[derive(Debug, thiserror::Error)]
#[error("--otlp-endpoint: {0}")]
pub struct ExportError(String);

/// Starts exporting this process's spans to `endpoint` (an OTLP/HTTP base URL, as
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is: traces go to `<endpoint>/v1/traces`, protobuf).
pub fn export_to(endpoint: &str) -> Result<Export, ExportError> {
    if let Some((set, provider)) = EXPORT.get() {
        return if set == endpoint {
            Ok(Export {
                provider: provider.clone(),
            })
        } else {
            Err(ExportError(format!(
                "this process exports to {set} already"
            )))
        };
    }
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
    if EXPORT
        .set((endpoint.to_string(), provider.clone()))
        .is_err()
    {
        // Another start won the race: use its export.
        return export_to(endpoint);
    }
    opentelemetry::global::set_tracer_provider(provider.clone());
    Ok(Export { provider })
}

impl Export {
    /// Exports what is queued (each export within [`EXPORT_TIMEOUT`]). Blocking: the SDK's
    /// thread does the export. The export stays set up for the rest of the process, which
    /// ends soon after (or, in tests, starts another operator that shares it).
    pub fn shutdown(self) {
        if let Err(e) = self.provider.force_flush() {
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
            Some(value) if EXPORT.get().is_some() => parent(value),
            _ => Context::new(),
        };
        Self::start(name, kind, &parent)
    }

    /// A span under this one.
    pub fn child(&self, name: &'static str, kind: Kind) -> Span {
        Self::start(name, kind, &self.cx)
    }

    fn start(name: &'static str, kind: Kind, parent: &Context) -> Span {
        // No export: an empty context, whose span records and passes on nothing, without
        // asking the global provider for a tracer on every event.
        if EXPORT.get().is_none() {
            return Span { cx: Context::new() };
        }
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

    /// Sets an attribute (never a secret: see the module's comment); text is cut to
    /// [`MAX_TEXT`] bytes.
    pub fn set(&self, key: &'static str, value: impl Into<Value>) {
        let span = self.cx.span();
        if !span.is_recording() {
            return;
        }
        let value = match value.into() {
            Value::String(text) => Value::from(cut(text.as_str()).to_string()),
            other => other,
        };
        span.set_attribute(KeyValue::new(key, value));
    }

    /// Marks the span failed, saying why (text that is safe to show: no secrets), cut to
    /// [`MAX_TEXT`] bytes.
    pub fn fail(&self, why: impl AsRef<str>) {
        let span = self.cx.span();
        if span.is_recording() {
            span.set_status(Status::error(cut(why.as_ref()).to_string()));
        }
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

    /// The W3C `traceparent` of this span; `None` when nothing is traced (no export: a span
    /// continued from a stored `traceparent` then passes nothing on either).
    pub fn traceparent(&self) -> Option<String> {
        let span = self.cx.span();
        if !span.is_recording() || !span.span_context().is_valid() {
            return None;
        }
        let mut carrier = HashMap::new();
        TraceContextPropagator::new().inject_context(&self.cx, &mut carrier);
        carrier.remove("traceparent")
    }
}

/// The context a stored W3C `traceparent` names; one without a span when it is not one.
fn parent(traceparent: &str) -> Context {
    let carrier = HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
    TraceContextPropagator::new().extract(&carrier)
}

/// `text` cut to at most [`MAX_TEXT`] bytes, on a character boundary.
fn cut(text: &str) -> &str {
    if text.len() <= MAX_TEXT {
        return text;
    }
    let mut end = MAX_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
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
        assert_eq!(resumed.traceparent(), None);
        let call = resumed.child("call", Kind::Client);
        assert_eq!(call.traceparent(), None);
        let mut headers = reqwest::header::HeaderMap::new();
        call.propagate(&mut headers);
        assert!(headers.is_empty(), "{headers:?}");
    }

    #[test]
    fn long_text_is_cut_on_a_character_boundary() {
        assert_eq!(cut("short"), "short");
        let long = "é".repeat(MAX_TEXT);
        let kept = cut(&long);
        assert!(kept.len() <= MAX_TEXT && kept.len() >= MAX_TEXT - 1);
        assert!(long.starts_with(kept));
    }

    #[test]
    fn a_stored_traceparent_that_is_not_one_starts_a_trace_of_its_own() {
        let good = parent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
        let context = good.span().span_context().clone();
        assert!(context.is_valid() && context.is_remote());
        assert_eq!(
            context.trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        for bad in ["", "00-zz-yy-01", "not a traceparent"] {
            assert!(
                !parent(bad).span().span_context().is_valid(),
                "{bad:?} was taken as a parent"
            );
        }
    }
}
