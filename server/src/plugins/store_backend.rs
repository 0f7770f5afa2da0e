//! The server's backend for plugin capabilities: the database, the network, the metrics registry.

use super::backend::{HostBackend, HttpRequest, KvFault};
use super::bindings::mdm::plugin::{http, inventory};
use super::convert;
use crate::clock::SharedClock;
use crate::metrics::{Metrics, PluginMetricLabels};
use crate::storage::{attributes, devices, enrollments, plugin_kv, Storage};
use std::sync::Arc;

pub struct StoreBackend {
    pub storage: Storage,
    pub clock: SharedClock,
    pub metrics: Arc<Metrics>,
    pub http: reqwest::Client,
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

    async fn quota_ok(&self, plugin: &str, key: &str, max: u32) -> Result<(), KvFault> {
        let db = &self.storage.read();
        let now = self.clock.now_ms();
        let exists = plugin_kv::get(&self.storage.read(), plugin, key, now)
            .await
            .map_err(|e| KvFault::Unavailable(e.to_string()))?
            .is_some();
        if !exists {
            let n = plugin_kv::count(db, plugin, now)
                .await
                .map_err(|e| KvFault::Unavailable(e.to_string()))?;
            if n >= u64::from(max) {
                return Err(KvFault::QuotaExceeded);
            }
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl HostBackend for StoreBackend {
    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    async fn kv_get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, String> {
        plugin_kv::get(&self.storage.read(), plugin, key, self.clock.now_ms())
            .await
            .map_err(|e| e.to_string())
    }

    async fn kv_set(
        &self,
        plugin: &str,
        key: &str,
        value: Vec<u8>,
        expires_at: Option<i64>,
        max_keys: u32,
    ) -> Result<(), KvFault> {
        self.quota_ok(plugin, key, max_keys).await?;
        plugin_kv::set(
            &self.storage,
            plugin,
            key,
            value,
            expires_at,
            self.clock.now_ms(),
        )
        .await
        .map_err(|e| KvFault::Unavailable(e.to_string()))
    }

    async fn kv_delete(&self, plugin: &str, key: &str) -> Result<bool, String> {
        plugin_kv::delete(&self.storage, plugin, key, self.clock.now_ms())
            .await
            .map_err(|e| e.to_string())
    }

    async fn kv_cas(
        &self,
        plugin: &str,
        key: &str,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
        expires_at: Option<i64>,
        max_keys: u32,
    ) -> Result<bool, KvFault> {
        if expected.is_none() {
            self.quota_ok(plugin, key, max_keys).await?;
        }
        plugin_kv::compare_and_swap(
            &self.storage,
            plugin,
            key,
            expected,
            new,
            expires_at,
            self.clock.now_ms(),
        )
        .await
        .map_err(|e| KvFault::Unavailable(e.to_string()))
    }

    async fn kv_list(
        &self,
        plugin: &str,
        prefix: &str,
        start_after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>, String> {
        plugin_kv::list_keys(
            &self.storage.read(),
            plugin,
            prefix,
            start_after,
            u64::from(limit),
            self.clock.now_ms(),
        )
        .await
        .map_err(|e| e.to_string())
    }

    async fn device(&self, id: &str) -> Result<Option<inventory::DeviceInfo>, String> {
        let db = &self.storage.read();
        let Some(d) = devices::find(db, id).await.map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        let channels = enrollments::for_device(db, id)
            .await
            .map_err(|e| e.to_string())?;
        let attrs = attributes::for_device(db, id)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Some(inventory::DeviceInfo {
            id: d.id.clone(),
            facts: convert::device_facts((&d).into()),
            enabled: channels.iter().any(|c| c.id == d.id && c.enabled),
            channels: channels.iter().map(convert::stored_enrollment).collect(),
            attributes: attrs.into_iter().map(|a| (a.key, a.value)).collect(),
            last_seen_unix_ms: d.last_seen_at,
        }))
    }

    async fn http(&self, req: HttpRequest) -> Result<http::Response, http::HttpError> {
        let method = reqwest::Method::from_bytes(req.method.as_bytes())
            .map_err(|_| http::HttpError::Failed(format!("bad method {}", req.method)))?;
        let mut r = self.http.request(method, req.url).timeout(req.timeout);
        for (k, v) in req.headers {
            r = r.header(k, v);
        }
        if let Some(b) = req.body {
            r = r.body(b);
        }
        let mut res = r.send().await.map_err(|e| {
            if e.is_timeout() {
                http::HttpError::Timeout
            } else {
                http::HttpError::Failed(e.to_string())
            }
        })?;
        let status = res.status().as_u16();
        let headers = res
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_string())))
            .collect();
        let mut body = Vec::new();
        while let Some(chunk) = res
            .chunk()
            .await
            .map_err(|e| http::HttpError::Failed(e.to_string()))?
        {
            if body.len() + chunk.len() > req.max_response_bytes {
                return Err(http::HttpError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(http::Response {
            status,
            headers,
            body,
        })
    }

    fn counter_add(&self, plugin: &str, name: &str, delta: u64) {
        self.metrics
            .plugin_custom
            .get_or_create(&PluginMetricLabels {
                plugin: plugin.to_string(),
                name: name.to_string(),
            })
            .inc_by(delta);
    }

    fn gauge_set(&self, plugin: &str, name: &str, value: f64) {
        self.metrics
            .plugin_gauges
            .get_or_create(&PluginMetricLabels {
                plugin: plugin.to_string(),
                name: name.to_string(),
            })
            .set(value);
    }
}
