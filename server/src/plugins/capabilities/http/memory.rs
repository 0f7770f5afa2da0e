//! `http` in the plugin-author harness: canned responses by URL, and a record of what was asked.

use super::{HttpBackend, HttpError, HttpRequest, HttpResponse};
use crate::plugins::testing::{lock, MemoryBackend};

#[async_trait::async_trait]
impl HttpBackend for MemoryBackend {
    async fn http(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        lock(&self.http_requests).push((req.method.clone(), req.url.to_string()));
        lock(&self.http_responses)
            .get(req.url.as_str())
            .cloned()
            .ok_or_else(|| HttpError::Failed(format!("no canned response for {}", req.url)))
    }
}
