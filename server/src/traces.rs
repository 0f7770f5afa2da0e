//! OpenTelemetry traces: the tracer provider that exports spans over OTLP/HTTP when
//! `telemetry.otlp_endpoint` is set, and W3C `traceparent` in and out.
//!
//! Spans are `tracing` spans; the OpenTelemetry layer ([`crate::telemetry::init`]) turns them into OTLP spans.
//! The server's own spans below a request are at DEBUG: with traces off and logs at INFO nothing records
//! them, so they cost nothing; with traces on, the trace layer takes them whatever the log filter says.
//!
//! Rule: a `traceparent` is taken only from an admin's request (`/api`), never from a device: a device
//! choosing its trace id and sampling decision could flood the collector or hide among others' traces.

use crate::config::TelemetryConfig;
use opentelemetry::trace::{SpanContext, TraceContextExt, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, Tracer};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The exporter while traces are on; flushes what is buffered when dropped (at exit).
pub struct Traces {
    provider: Option<SdkTracerProvider>,
}

impl Traces {
    pub fn off() -> Self {
        Self { provider: None }
    }

    /// The exporter for `cfg`, or off when no endpoint is set.
    pub fn start(cfg: &TelemetryConfig) -> Result<Self, String> {
        let Some(endpoint) = &cfg.otlp_endpoint else {
            return Ok(Self::off());
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(traces_url(endpoint))
            .with_timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| format!("telemetry.otlp_endpoint: {e}"))?;
        let instance = (cfg.instance.clone()).unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name("mdm-server")
            .with_attributes([
                KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
                KeyValue::new("service.instance.id", instance),
            ])
            .build();
        let ratio = Sampler::TraceIdRatioBased(cfg.sample_ratio);
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(Sampler::ParentBased(Box::new(ratio)))
            .with_resource(resource)
            .build();
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        Ok(Self {
            provider: Some(provider),
        })
    }

    pub fn tracer(&self) -> Option<Tracer> {
        (self.provider.as_ref()).map(|p| p.tracer("mdm-server"))
    }
}

impl Drop for Traces {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            // The exporter's blocking client must not be waited on from an async context.
            let flushed = std::thread::spawn(move || p.shutdown()).join();
            if !matches!(flushed, Ok(Ok(()))) {
                eprintln!("traces: the last spans could not be exported");
            }
        }
    }
}

/// The collector's traces URL: `/v1/traces` under the endpoint, unless it names it already.
fn traces_url(endpoint: &str) -> String {
    let base = endpoint.trim_end_matches('/');
    if base.ends_with("/v1/traces") {
        base.to_string()
    } else {
        format!("{base}/v1/traces")
    }
}

/// Continue the trace of an admin's request: `span` becomes a child of the request's `traceparent` (with
/// its `tracestate`), when that is valid.
pub fn continue_from(span: &tracing::Span, traceparent: &str, tracestate: Option<&str>) {
    let mut carrier = HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
    if let Some(state) = tracestate {
        carrier.insert("tracestate".into(), state.into());
    }
    let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(&carrier));
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// `span`'s OpenTelemetry span context, when traces are on.
fn span_context(span: &tracing::Span) -> Option<SpanContext> {
    let sc = span.context().span().span_context().clone();
    sc.is_valid().then_some(sc)
}

/// The trace and span ids of `span` when traces are on (for log lines to carry), else None.
pub fn ids(span: &tracing::Span) -> Option<(String, String)> {
    span_context(span).map(|sc| (sc.trace_id().to_string(), sc.span_id().to_string()))
}

/// The `traceparent` (and `tracestate`) of the current span, as headers of an outgoing request: none when
/// traces are off.
pub fn outgoing_headers() -> reqwest::header::HeaderMap {
    let cx = tracing::Span::current().context();
    let mut out = HashMap::new();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut out));
    // The propagator writes valid header names and values; anything else is left out.
    (out.into_iter())
        .filter_map(|(k, v): (String, String)| Some((k.parse().ok()?, v.parse().ok()?)))
        .collect()
}

/// The spans that caused work a background job does later (an enqueue whose push the push worker
/// sends): the job's next round links to them. Bounded: past the bound, the oldest are dropped.
#[derive(Default)]
pub struct Causes {
    pending: Mutex<VecDeque<SpanContext>>,
}

const MAX_CAUSES: usize = 64;

impl Causes {
    /// Remember the current span as a cause, when traces are on.
    pub fn note_current(&self) {
        let Some(sc) = span_context(&tracing::Span::current()) else {
            return;
        };
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.len() == MAX_CAUSES {
            pending.pop_front();
        }
        pending.push_back(sc);
    }

    /// Link `span` to every cause noted since the last call.
    pub fn link_to(&self, span: &tracing::Span) {
        let taken = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        for sc in taken {
            span.add_link(sc);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_traces_url_is_under_the_endpoint() {
        assert_eq!(traces_url("http://c:4318"), "http://c:4318/v1/traces");
        assert_eq!(traces_url("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(
            traces_url("https://c/otlp/v1/traces"),
            "https://c/otlp/v1/traces"
        );
    }

    #[test]
    fn with_traces_off_nothing_is_propagated() {
        assert!(outgoing_headers().is_empty());
        let span = tracing::info_span!("x");
        assert_eq!(ids(&span), None);
    }
}
