//! An OpenTelemetry collector on loopback: takes OTLP/HTTP protobuf trace exports and keeps the spans, for
//! tests that check the span tree the server sends.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use prost::Message;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One span as exported, with its resource's attributes.
#[derive(Debug, Clone)]
pub struct Span {
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub attributes: BTreeMap<String, String>,
    /// `(trace id, span id)` of each linked span.
    pub links: Vec<(String, String)>,
    pub resource: BTreeMap<String, String>,
}

pub struct Collector {
    /// The endpoint to configure (`telemetry.otlp_endpoint`).
    pub url: String,
    spans: Arc<Mutex<Vec<Span>>>,
}

impl Collector {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let spans = Arc::new(Mutex::new(Vec::new()));
        let kept = spans.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let kept = kept.clone();
                tokio::spawn(crate::sink::serve_http(sock, move |head, body| {
                    if !head.starts_with("POST /v1/traces ") {
                        return 404;
                    }
                    match ExportTraceServiceRequest::decode(body.as_slice()) {
                        Ok(req) => {
                            let mut k = kept.lock().unwrap_or_else(|p| p.into_inner());
                            k.extend(spans_of(req));
                            200
                        }
                        Err(_) => 400,
                    }
                }));
            }
        });
        Self { url, spans }
    }

    pub fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The spans so far, once `done` says they are all there (polling up to `within`); what there is
    /// otherwise.
    pub async fn wait_for(&self, within: Duration, done: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let spans = self.spans();
            if done(&spans) || tokio::time::Instant::now() > deadline {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `span`'s ancestors, nearest first, by name (within the spans given).
pub fn ancestors<'s>(spans: &'s [Span], span: &Span) -> Vec<&'s str> {
    let mut out = Vec::new();
    let mut parent = span.parent_span_id.clone();
    while let Some(p) = spans
        .iter()
        .find(|s| !parent.is_empty() && s.span_id == parent && s.trace_id == span.trace_id)
    {
        out.push(p.name.as_str());
        parent = p.parent_span_id.clone();
    }
    out
}

fn spans_of(req: ExportTraceServiceRequest) -> Vec<Span> {
    let mut out = Vec::new();
    for rs in req.resource_spans {
        let resource = rs
            .resource
            .map(|r| attributes(&r.attributes))
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for s in ss.spans {
                out.push(Span {
                    name: s.name,
                    trace_id: hex::encode(&s.trace_id),
                    span_id: hex::encode(&s.span_id),
                    parent_span_id: hex::encode(&s.parent_span_id),
                    attributes: attributes(&s.attributes),
                    links: (s.links.iter())
                        .map(|l| (hex::encode(&l.trace_id), hex::encode(&l.span_id)))
                        .collect(),
                    resource: resource.clone(),
                });
            }
        }
    }
    out
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => s.clone(),
                Some(any_value::Value::IntValue(i)) => i.to_string(),
                Some(any_value::Value::BoolValue(b)) => b.to_string(),
                Some(any_value::Value::DoubleValue(d)) => d.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), v)
        })
        .collect()
}
