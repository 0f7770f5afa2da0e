//! An HTTP endpoint on loopback that records what plugin event sinks receive.

use std::sync::{Arc, Mutex};

/// One event as the sink received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub topic: String,
    pub body: serde_json::Value,
}

pub struct Sink {
    pub url: String,
    received: Arc<Mutex<Vec<Received>>>,
    arrived: Arc<tokio::sync::Notify>,
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
                tokio::spawn(async move {
                    serve(sock, status, refused, r).await;
                    a.notify_waiters();
                });
            }
        });
        Self {
            url,
            received,
            arrived,
        }
    }

    /// How many events have arrived (without copying them).
    pub fn count(&self) -> usize {
        self.received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
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

    pub fn received(&self) -> Vec<Received> {
        self.received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A minimal HTTP/1.1 exchange: read headers and a Content-Length body, answer, close.
async fn serve(
    mut sock: tokio::net::TcpStream,
    status: u16,
    refused: Option<String>,
    out: Arc<Mutex<Vec<Received>>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let (head_end, length) = loop {
        let Ok(n) = sock.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..i]).to_lowercase();
            let len = head
                .lines()
                .find_map(|l| {
                    l.strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            break (i + 4, len);
        }
    };
    while buf.len() < head_end + length {
        let Ok(n) = sock.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let topic = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("x-mdm-topic")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    let body = serde_json::from_slice(&buf[head_end..(head_end + length).min(buf.len())])
        .unwrap_or_default();
    let status = if refused.as_ref() == Some(&topic) {
        500
    } else {
        status
    };
    out.lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Received { topic, body });
    let reply = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    let _ = sock.write_all(reply.as_bytes()).await;
}
