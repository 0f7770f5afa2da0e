//! Audit entries recorded with their changes are chained every [`audit_log::SEAL_INTERVAL`], on every
//! replica (sealing is serialised in the database).

use crate::storage::{audit_log, Storage};

pub fn spawn(storage: Storage) {
    super::every("audit_sealer", audit_log::SEAL_INTERVAL, None, move || {
        let storage = storage.clone();
        async move {
            match audit_log::seal_pending(&storage).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(n, "audit entries chained"),
                Err(e) => tracing::error!(error = %e, "audit sealing failed"),
            }
        }
    });
}
