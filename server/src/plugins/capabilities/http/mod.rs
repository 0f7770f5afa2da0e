use crate::plugins::backend::HttpRequest;
use crate::plugins::bindings::mdm::plugin::http::{Host, HttpError, Request, Response};
use crate::plugins::host::HostState;
use crate::plugins::manifest::Capability;
use std::time::Duration;

const MAX_RESPONSE: usize = 1024 * 1024;

impl Host for HostState {
    async fn fetch(&mut self, req: Request) -> wasmtime::Result<Result<Response, HttpError>> {
        self.require(Capability::Http)?;
        let url = match url::Url::parse(&req.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => u,
            _ => {
                return Ok(Err(HttpError::Failed(format!(
                    "not an http(s) URL: {}",
                    req.url
                ))))
            }
        };
        let host = url.host_str().unwrap_or_default().to_string();
        if !self.call.manifest.http_allows(&host) {
            tracing::warn!(plugin = %self.call.plugin_id, host, "outbound HTTP refused: host not allow-listed");
            return Ok(Err(HttpError::NotAllowed(host)));
        }
        let timeout = Duration::from_millis(u64::from(self.call.manifest.limits.timeout_ms));
        Ok(self
            .backend
            .http(HttpRequest {
                method: req.method,
                url,
                headers: req.headers,
                body: req.body,
                timeout,
                max_response_bytes: MAX_RESPONSE,
            })
            .await)
    }
}
