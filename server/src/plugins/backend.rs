//! Where capabilities read and write: the database and the network in the server, memory in the test harness.

use super::bindings::mdm::plugin::{http, inventory};
use std::time::Duration;

#[derive(Debug)]
pub enum KvFault {
    QuotaExceeded,
    Unavailable(String),
}

/// An outbound request after the allow-list check.
pub struct HttpRequest {
    pub method: String,
    pub url: url::Url,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    pub timeout: Duration,
    pub max_response_bytes: usize,
}

#[async_trait::async_trait]
pub trait HostBackend: Send + Sync + 'static {
    fn now_ms(&self) -> i64;
    async fn kv_get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, String>;
    /// Fails with QuotaExceeded when `key` is new and the plugin already holds `max_keys` live keys.
    async fn kv_set(
        &self,
        plugin: &str,
        key: &str,
        value: Vec<u8>,
        expires_at: Option<i64>,
        max_keys: u32,
    ) -> Result<(), KvFault>;
    async fn kv_delete(&self, plugin: &str, key: &str) -> Result<bool, String>;
    async fn kv_cas(
        &self,
        plugin: &str,
        key: &str,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
        expires_at: Option<i64>,
        max_keys: u32,
    ) -> Result<bool, KvFault>;
    async fn kv_list(
        &self,
        plugin: &str,
        prefix: &str,
        start_after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>, String>;
    async fn device(&self, id: &str) -> Result<Option<inventory::DeviceInfo>, String>;
    async fn http(&self, req: HttpRequest) -> Result<http::Response, http::HttpError>;
    fn counter_add(&self, plugin: &str, name: &str, delta: u64);
    fn gauge_set(&self, plugin: &str, name: &str, value: f64);
}
