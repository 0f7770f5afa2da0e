//! Command queue service: enqueue (typed or raw, to many channels at once), cancel, clear. Expiry and
//! retention are housekeeping's (`storage::housekeeping`).

use crate::clock::SharedClock;
use crate::metrics::Metrics;
use crate::storage::enrollments;
use crate::storage::{queue, Storage};
use std::sync::Arc;

// The enqueue itself sits in storage, below plugins, whose `enqueue` actions run it too.
use crate::storage::enqueue::enqueue_in;
pub use crate::storage::enqueue::{
    CommandSpec, EnqueueOutcome, EnqueueRequest, EnqueueStatus, QueueError,
};

#[derive(Clone)]
pub struct QueueService {
    storage: Storage,
    clock: SharedClock,
    metrics: Arc<Metrics>,
}

impl QueueService {
    pub fn new(storage: Storage, clock: SharedClock, metrics: Arc<Metrics>) -> Self {
        Self {
            storage,
            clock,
            metrics,
        }
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    pub fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Queue a command to every enabled id in one transaction; unknown and disabled ids are reported, not
    /// fatal. A command that cannot be built is refused before anything is stored.
    pub async fn enqueue(&self, req: EnqueueRequest) -> Result<EnqueueOutcome, QueueError> {
        let now = self.clock.now_ms();
        let outcome = self
            .storage
            .transaction(move |txn| Box::pin(enqueue_in(txn, req, now)))
            .await?;
        self.metrics
            .commands_enqueued
            .inc_by(outcome.queued_ids().count() as u64);
        Ok(outcome)
    }

    /// Cancel one pending command for one channel. Returns false when it was not pending.
    pub async fn cancel(
        &self,
        enrollment_id: &str,
        command_uuid: &str,
    ) -> Result<bool, QueueError> {
        let n = queue::cancel_pending(
            &self.storage,
            &[enrollment_id.to_string()],
            Some(command_uuid),
            self.clock.now_ms(),
        )
        .await?;
        Ok(n > 0)
    }

    /// Cancel every pending command of a channel. Returns how many.
    pub async fn clear(&self, enrollment_id: &str) -> Result<u64, QueueError> {
        if enrollments::find(&self.storage.read(), enrollment_id)
            .await?
            .is_none()
        {
            return Err(QueueError::NotFound(format!("enrollment {enrollment_id}")));
        }
        Ok(queue::cancel_pending(
            &self.storage,
            &[enrollment_id.to_string()],
            None,
            self.clock.now_ms(),
        )
        .await?)
    }
}
