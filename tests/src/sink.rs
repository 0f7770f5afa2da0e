//! An HTTP endpoint on loopback that records what plugin event sinks receive.

use std::sync::{Arc, Mutex};

/// One event as the sink received it.
#[derive(Debug, Clone)]
pub struct Received {
    /// `X-MDM-Event-Id`, or a batched event's `id`.
    pub id: String,
    pub topic: String,
    pub body: serde_json::Value,
    /// The `Authorization` header it came with.
    pub authorization: Option<String>,
    /// The W3C `traceparent` it came with.
    pub traceparent: Option<String>,
}

pub struct Sink {
    pub url: String,
    received: Arc<Mutex<Vec<Arrival>>>,
    arrived: Arc<tokio::sync::Notify>,
}

/// What arrived, kept as bytes: the body is parsed only when a test reads it, so a benchmark's sink
/// (in the measured process) costs little more than the HTTP exchange.
enum Arrival {
    One {
        id: String,
        topic: String,
        body: Vec<u8>,
        authorization: Option<String>,
        traceparent: Option<String>,
    },
    /// A POST of several events (`X-MDM-Batch`), `{"events": [{"topic", "payload", ...}]}`.
    Batch {
        events: usize,
        body: Vec<u8>,
        authorization: Option<String>,
        traceparent: Option<String>,
    },
}

impl Arrival {
    fn events(&self) -> usize {
        match self {
            Arrival::One { .. } => 1,
            Arrival::Batch { events, .. } => *events,
        }
    }

    fn received(&self) -> Vec<Received> {
        match self {
            Arrival::One {
                id,
                topic,
                body,
                authorization,
                traceparent,
            } => vec![Received {
                id: id.clone(),
                topic: topic.clone(),
                body: serde_json::from_slice(body).unwrap_or_default(),
                authorization: authorization.clone(),
                traceparent: traceparent.clone(),
            }],
            Arrival::Batch {
                body,
                authorization,
                traceparent,
                ..
            } => batch_events(body)
                .into_iter()
                .map(|mut e| Received {
                    id: e["id"].as_str().unwrap_or_default().to_string(),
                    topic: e["topic"].as_str().unwrap_or_default().to_string(),
                    body: e["payload"].take(),
                    authorization: authorization.clone(),
                    traceparent: traceparent.clone(),
                })
                .collect(),
        }
    }
}

/// The events of a batch body; none if it is not one.
fn batch_events(body: &[u8]) -> Vec<serde_json::Value> {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(mut o)) => match o.remove("events") {
            Some(serde_json::Value::Array(events)) => events,
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

impl Sink {
    /// Listen on 127.0.0.1; answer `status` to every request.
    pub async fn start(status: u16) -> Self {
        Self::start_with(status, None).await
    }

    /// Answer 200, except 500 to events with topic `refused` (still recorded as received).
    pub async fn start_refusing(refused: &str) -> Self {
        Self::start_with(200, Some(refused.to_string())).await
    }

    async fn start_with(status: u16, refused: Option<String>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/events", listener.local_addr().expect("addr"));
        let received = Arc::new(Mutex::new(Vec::new()));
        let arrived = Arc::new(tokio::sync::Notify::new());
        let (r, a) = (received.clone(), arrived.clone());
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let (r, a, refused) = (r.clone(), a.clone(), refused.clone());
                tokio::spawn(serve_http(sock, move |head, body| {
                    record(head, body, status, refused.as_deref(), &r, &a)
                }));
            }
        });
        Self {
            url,
            received,
            arrived,
        }
    }

    /// What has arrived so far (a test that panicked while holding it does not hide it).
    fn arrivals(&self) -> std::sync::MutexGuard<'_, Vec<Arrival>> {
        self.received.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many events have arrived (without copying them), single or in batches.
    pub fn count(&self) -> usize {
        self.arrivals().iter().map(Arrival::events).sum()
    }

    /// How many POSTs have arrived.
    pub fn requests(&self) -> usize {
        self.arrivals().len()
    }

    /// Wait until `n` events in all have arrived, up to `within`; false if they did not.
    pub async fn wait_for(&self, n: usize, within: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            // Registered before the count is read, so an arrival in between is not missed.
            let arrived = self.arrived.notified();
            if self.count() >= n {
                return true;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return self.count() >= n;
            }
        }
    }

    /// Every event so far, in arrival order (a batch's in its order); a body that is not JSON reads as
    /// `null`.
    pub fn received(&self) -> Vec<Received> {
        self.arrivals().iter().flat_map(Arrival::received).collect()
    }
}

/// A header's value in a request head (`name: value` lines), by case-insensitive name.
fn header<'h>(head: &'h str, name: &str) -> Option<&'h str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Minimal HTTP/1.1 on one connection: requests with a Content-Length body, one after another, each
/// answered at once with the status `answer` gives it (head, body). The connection stays open for the next
/// request (as any web server keeps it) until the client closes it or sends `Connection: close`.
pub async fn serve_http(
    mut sock: tokio::net::TcpStream,
    mut answer: impl FnMut(&str, Vec<u8>) -> u16,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let length = header(&head, "content-length")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        while buf.len() < head_end + length {
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let close = header(&head, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let body = buf[head_end..head_end + length].to_vec();
        buf.drain(..head_end + length);
        let status = answer(&head, body);
        let reply = format!(
            "HTTP/1.1 {status} X\r\nContent-Length: 0\r\n{}\r\n",
            if close { "Connection: close\r\n" } else { "" }
        );
        if sock.write_all(reply.as_bytes()).await.is_err() || close {
            return;
        }
    }
}

/// What a sink does with one request: record it, and answer `status` (500 to a refused topic).
fn record(
    head: &str,
    body: Vec<u8>,
    status: u16,
    refused: Option<&str>,
    out: &Mutex<Vec<Arrival>>,
    arrived: &tokio::sync::Notify,
) -> u16 {
    let authorization = header(head, "authorization").map(str::to_string);
    let traceparent = header(head, "traceparent").map(str::to_string);
    let arrival = match header(head, "x-mdm-batch").and_then(|n| n.parse().ok()) {
        Some(events) => Arrival::Batch {
            events,
            body,
            authorization,
            traceparent,
        },
        None => Arrival::One {
            id: header(head, "x-mdm-event-id")
                .unwrap_or_default()
                .to_string(),
            topic: header(head, "x-mdm-topic").unwrap_or_default().to_string(),
            body,
            authorization,
            traceparent,
        },
    };
    // A batch is refused whole when any of its events is.
    let status = match refused {
        Some(r) if arrival.received().iter().any(|e| e.topic == r) => 500,
        _ => status,
    };
    out.lock().unwrap_or_else(|p| p.into_inner()).push(arrival);
    arrived.notify_waiters();
    status
}
