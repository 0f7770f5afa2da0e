//! Bounds on what one client can hold: open connections (per peer and in total) and how long a request may
//! take to arrive and be answered.
//!
//! Why here and not with actix's own knobs: actix's `max_connections` stops accepting when reached, so new
//! connections (a load balancer's `/healthz`, a device's Idle) wait silently in the kernel's backlog behind
//! the ones holding the slots; and `client_request_timeout` covers only the head, so a client that declares a
//! large body and trickles it holds its connection for ever. Here an over-limit connection is answered at
//! once with a clear status and closed, and every body has a deadline.

use crate::config::TrustedProxies;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Extensions, Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::middleware::Next;
use actix_web::web::Bytes;
use actix_web::{HttpMessage, HttpResponse};
use futures_util::Stream;
use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

/// Open connections, counted as actix accepts them and released when they close.
pub struct ConnLimits {
    max_total: usize,
    max_per_peer: usize,
    trusted: TrustedProxies,
    total: AtomicUsize,
    per_peer: Mutex<HashMap<IpAddr, usize>>,
}

/// Why a connection is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `http.max_connections_per_peer`: 429.
    PeerLimit,
    /// `http.max_connections`: 503.
    TotalLimit,
}

/// Held in the connection's data for as long as the connection is open; dropping it releases the slot.
pub struct ConnSlot {
    limits: Arc<ConnLimits>,
    peer: Option<IpAddr>,
    pub refused: Option<Refused>,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.limits.release(self.peer);
    }
}

impl ConnLimits {
    pub fn new(max_total: usize, max_per_peer: usize, trusted: TrustedProxies) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_peer,
            trusted,
            total: AtomicUsize::new(0),
            per_peer: Mutex::new(HashMap::new()),
        })
    }

    /// Count a new connection from `peer`. It holds a slot whatever the verdict (it is open until it
    /// closes); a refused one is answered with the refusal and closed.
    pub fn admit(self: &Arc<Self>, peer: Option<IpAddr>) -> ConnSlot {
        let peer = peer.map(|p| p.to_canonical());
        let total = self.total.fetch_add(1, Ordering::AcqRel) + 1;
        let mut refused = (total > self.max_total).then_some(Refused::TotalLimit);
        if let Some(p) = peer {
            let mut map = self.per_peer.lock().unwrap_or_else(|e| e.into_inner());
            let n = map.entry(p).or_insert(0);
            *n += 1;
            // A trusted proxy carries everyone's connections: only the total bounds it.
            if *n > self.max_per_peer && !self.trusted.contains(p) {
                refused = refused.or(Some(Refused::PeerLimit));
            }
        }
        ConnSlot {
            limits: self.clone(),
            peer,
            refused,
        }
    }

    fn release(&self, peer: Option<IpAddr>) {
        self.total.fetch_sub(1, Ordering::AcqRel);
        if let Some(p) = peer {
            let mut map = self.per_peer.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = map.get_mut(&p) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&p);
                }
            }
        }
    }

    /// actix's per-connection hook: count the connection (plain TCP or our TLS) by its peer address.
    pub fn on_connect(self: &Arc<Self>, conn: &dyn Any, ext: &mut Extensions) {
        type Tcp = actix_web::rt::net::TcpStream;
        type Tls = actix_tls::accept::openssl::TlsStream<Tcp>;
        let peer = if let Some(tcp) = conn.downcast_ref::<Tcp>() {
            tcp.peer_addr().ok()
        } else if let Some(tls) = conn.downcast_ref::<Tls>() {
            tls.get_ref().peer_addr().ok()
        } else {
            None
        };
        ext.insert(self.admit(peer.map(|a| a.ip())));
    }
}

/// The request deadlines (`http.body_timeout_secs`, `http.request_timeout_secs`).
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    pub body: Duration,
    pub request: Duration,
}

/// Middleware: refuse a connection over its limits before reading anything, give the body a deadline, and
/// the whole request another. Each refusal closes the connection (what is left of the body is never read).
pub async fn enforce(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let refused = req.conn_data::<ConnSlot>().and_then(|s| s.refused);
    if let Some(r) = refused {
        let (mut res, msg) = match r {
            Refused::PeerLimit => (
                HttpResponse::TooManyRequests(),
                "too many open connections from this address",
            ),
            Refused::TotalLimit => (
                HttpResponse::ServiceUnavailable(),
                "too many open connections",
            ),
        };
        let res = res
            .insert_header(("Retry-After", "1"))
            .force_close()
            .json(serde_json::json!({"error": msg}));
        return Ok(req.into_response(res).map_into_right_body());
    }
    let Some(deadlines) = req.app_data::<Deadlines>().copied() else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    let timed_out = Arc::new(AtomicBool::new(false));
    let payload = req.take_payload();
    req.set_payload(Payload::from(Box::pin(DeadlinePayload {
        inner: payload,
        deadline: Box::pin(tokio::time::sleep(deadlines.body)),
        timed_out: timed_out.clone(),
    })
        as Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>>));
    let path = req.path().to_string();
    // (No clone of the request may be held across `next.call`: routing needs it unshared.)
    let res = match tokio::time::timeout(deadlines.request, next.call(req)).await {
        Ok(res) => res?,
        Err(_) => {
            tracing::warn!(%path, "request took longer than http.request_timeout_secs");
            let res = HttpResponse::ServiceUnavailable()
                .force_close()
                .json(serde_json::json!({"error": "the request took too long"}));
            return Err(
                actix_web::error::InternalError::from_response("request timeout", res).into(),
            );
        }
    };
    if timed_out.load(Ordering::Acquire) {
        let res = res.into_response(
            HttpResponse::RequestTimeout()
                .force_close()
                .json(serde_json::json!({"error": "the request body was not sent in time"})),
        );
        return Ok(res.map_into_right_body());
    }
    Ok(res.map_into_left_body())
}

/// A request body that ends in an error once its deadline has passed.
struct DeadlinePayload {
    inner: Payload,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timed_out: Arc<AtomicBool>,
}

impl Stream for DeadlinePayload {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.timed_out.load(Ordering::Relaxed) {
            return Poll::Ready(None);
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            self.timed_out.store(true, Ordering::Release);
            return Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "request body deadline",
            )))));
        }
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_bounded_per_peer_and_in_total_and_released_on_close() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let limits = ConnLimits::new(5, 2, TrustedProxies::parse(&["10.0.0.1".into()]).unwrap());
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let a1 = limits.admit(Some(a));
        let a2 = limits.admit(Some(a));
        let a3 = limits.admit(Some(a));
        assert_eq!((a1.refused, a2.refused), (None, None));
        assert_eq!(a3.refused, Some(Refused::PeerLimit));
        // Another peer is not held back by the first.
        let b1 = limits.admit(Some(b));
        assert_eq!(b1.refused, None);
        // A trusted proxy is bounded only by the total.
        let p1 = limits.admit(Some(proxy));
        assert_eq!(p1.refused, None);
        let p2 = limits.admit(Some(proxy));
        assert_eq!(p2.refused, Some(Refused::TotalLimit));
        // Closing connections frees their slots.
        drop((a1, a2, a3, p2));
        assert_eq!(limits.admit(Some(a)).refused, None);
        drop((b1, p1));
        assert_eq!(limits.total.load(Ordering::Relaxed), 0);
        assert!(limits.per_peer.lock().unwrap().is_empty());
    }
}
