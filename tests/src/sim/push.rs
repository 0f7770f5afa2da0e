//! The push sink: an APNs stand-in installed in an in-process server (`Overrides::pusher`) that hands each
//! push to the simulator, which wakes the device with that token, as APNs would.

use async_trait::async_trait;
use mdm_server::push::apns::{PushOutcome, PushTarget, Pusher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

type Waker = Box<dyn Fn(&[u8]) + Send + Sync>;

/// Counts pushes and forwards each device token to the fleet listening, if any.
#[derive(Default)]
pub struct PushSink {
    waker: RwLock<Option<Waker>>,
    pushed: AtomicU64,
    /// Notified after each batch of pushes (see [`super::wait_for`]).
    pub progress: tokio::sync::Notify,
}

impl PushSink {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Route pushes to `waker` (the fleet's device lookup by token).
    pub fn listen(&self, waker: impl Fn(&[u8]) + Send + Sync + 'static) {
        *self.waker.write().unwrap_or_else(|p| p.into_inner()) = Some(Box::new(waker));
    }

    /// Pushes received so far.
    pub fn pushed(&self) -> u64 {
        self.pushed.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl Pusher for PushSink {
    async fn push(&self, _topic: &str, targets: &[PushTarget]) -> Vec<PushOutcome> {
        self.pushed
            .fetch_add(targets.len() as u64, Ordering::Relaxed);
        if let Some(w) = &*self.waker.read().unwrap_or_else(|p| p.into_inner()) {
            for t in targets {
                w(&t.token);
            }
        }
        self.progress.notify_waiters();
        targets
            .iter()
            .map(|_| PushOutcome::Sent { apns_id: None })
            .collect()
    }
}
