//! Queue fresh enrollment profiles for identities about to expire.

use crate::enroll::EnrollService;
use crate::queue::QueueService;
use std::sync::Arc;
use std::time::Duration;

pub fn spawn(enroll: Arc<EnrollService>, queue: QueueService, period: Duration) {
    super::every("identity_renewal", period, None, move || {
        let (enroll, queue) = (enroll.clone(), queue.clone());
        async move {
            match enroll.renew_expiring(&queue).await {
                Ok(n) if n > 0 => tracing::info!(renewals = n, "identity renewal"),
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "identity renewal failed"),
            }
        }
    });
}
