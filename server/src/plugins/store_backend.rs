//! The server's backend for plugin capabilities: the database, the network, the metrics registry. Each
//! capability implements its slice over it in its own `store.rs`.

use crate::clock::SharedClock;
use crate::metrics::Metrics;
use crate::storage::Storage;
use std::sync::Arc;

pub struct StoreBackend {
    pub(super) storage: Storage,
    pub(super) clock: SharedClock,
    pub(super) metrics: Arc<Metrics>,
    pub(super) http: reqwest::Client,
}

impl StoreBackend {
    pub fn new(storage: Storage, clock: SharedClock, metrics: Arc<Metrics>) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Self {
            storage,
            clock,
            metrics,
            http,
        }
    }
}
