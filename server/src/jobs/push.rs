//! The push worker: a round when `PushService::wake` is called (a command was queued), or every `period`.

use crate::push::service::PushService;
use std::sync::Arc;
use std::time::Duration;

pub fn spawn(push: Arc<PushService>, period: Duration) {
    super::every("push", period, Some(push.wake_signal()), move || {
        let push = push.clone();
        async move {
            if let Err(e) = push.run_once().await {
                tracing::error!(error = %e, "push round failed");
            }
        }
    });
}
