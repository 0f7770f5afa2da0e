//! `http` in the server: reqwest, without redirects, the response read up to its cap.

use super::{HttpBackend, HttpError, HttpRequest, HttpResponse};
use crate::plugins::store_backend::StoreBackend;

#[async_trait::async_trait]
impl HttpBackend for StoreBackend {
    #[tracing::instrument(name = "plugin.host", level = "debug", skip_all, fields(call = "http"))]
    async fn http(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        let method = reqwest::Method::from_bytes(req.method.as_bytes())
            .map_err(|_| HttpError::Failed(format!("bad method {}", req.method)))?;
        let mut r = self.http.request(method, req.url).timeout(req.timeout);
        // The receiver can join the trace, unless the plugin sent a `traceparent` of its own.
        let own = |name: &str| {
            req.headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case(name))
        };
        if !own("traceparent") {
            r = r.headers(crate::traces::outgoing_headers());
        }
        for (k, v) in req.headers {
            r = r.header(k, v);
        }
        if let Some(b) = req.body {
            r = r.body(b);
        }
        let mut res = r.send().await.map_err(|e| {
            if e.is_timeout() {
                HttpError::Timeout
            } else {
                HttpError::Failed(e.to_string())
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
            .map_err(|e| HttpError::Failed(e.to_string()))?
        {
            if body.len() + chunk.len() > req.max_response_bytes {
                return Err(HttpError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(HttpResponse {
            status,
            headers,
            body,
        })
    }
}
