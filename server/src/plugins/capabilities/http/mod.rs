//! Capability `http`: outbound HTTP(S) to the hosts the admin allow-listed for the plugin.

mod memory;
mod store;

use crate::plugins::bindings::v0_1::mdm::plugin::http as v0_1;
use crate::plugins::bindings::v0_2::mdm::plugin::http as v0_2;
use crate::plugins::bindings::v0_3::mdm::plugin::http as v0_3;
use crate::plugins::host::HostState;
use crate::plugins::manifest::Capability;
use std::time::Duration;
use wasmtime::component::{HasSelf, Linker};

const MAX_RESPONSE: usize = 1024 * 1024;

/// An outbound request after the allow-list check.
pub struct HttpRequest {
    pub method: String,
    pub url: url::Url,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    pub timeout: Duration,
    pub max_response_bytes: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Why a request got no response; the plugin sees each case.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HttpError {
    #[error("host {0} is not on the plugin's allow-list")]
    NotAllowed(String),
    #[error("the request timed out")]
    Timeout,
    #[error("the response exceeded the size cap")]
    TooLarge,
    #[error("{0}")]
    Failed(String),
}

/// The backend's slice for `http`.
#[async_trait::async_trait]
pub trait HttpBackend {
    async fn http(&self, req: HttpRequest) -> Result<HttpResponse, HttpError>;
}

pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    v0_1::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    v0_2::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    v0_3::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)
}

impl HostState {
    /// The request as the backend sends it, once the URL is http(s) and its host allow-listed.
    fn outbound(
        &self,
        method: String,
        url: &str,
        headers: Vec<(String, String)>,
        body: Option<Vec<u8>>,
    ) -> Result<HttpRequest, HttpError> {
        let url = match url::Url::parse(url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => u,
            _ => return Err(HttpError::Failed(format!("not an http(s) URL: {url}"))),
        };
        let host = url.host_str().unwrap_or_default().to_string();
        if !self.call.manifest.http_allows(&host) {
            tracing::warn!(plugin = %self.call.plugin_id, host, "outbound HTTP refused: host not allow-listed");
            return Err(HttpError::NotAllowed(host));
        }
        let timeout = Duration::from_millis(u64::from(self.call.manifest.limits.timeout_ms));
        Ok(HttpRequest {
            method,
            url,
            headers,
            body,
            timeout,
            max_response_bytes: MAX_RESPONSE,
        })
    }

    /// A plugin's request, sent once it passes the allow-list.
    async fn fetch_allowed(
        &mut self,
        method: String,
        url: &str,
        headers: Vec<(String, String)>,
        body: Option<Vec<u8>>,
    ) -> wasmtime::Result<Result<HttpResponse, HttpError>> {
        self.require(Capability::Http)?;
        Ok(match self.outbound(method, url, headers, body) {
            Ok(r) => self.backend.http(r).await,
            Err(e) => Err(e),
        })
    }
}

/// The host imports of each served WIT version: the interface is the same in each.
macro_rules! host_imports {
    ($($v:ident),+) => {$(
        impl From<HttpResponse> for $v::Response {
            fn from(r: HttpResponse) -> Self {
                Self {
                    status: r.status,
                    headers: r.headers,
                    body: r.body,
                }
            }
        }

        impl From<HttpError> for $v::HttpError {
            fn from(e: HttpError) -> Self {
                match e {
                    HttpError::NotAllowed(h) => Self::NotAllowed(h),
                    HttpError::Timeout => Self::Timeout,
                    HttpError::TooLarge => Self::TooLarge,
                    HttpError::Failed(f) => Self::Failed(f),
                }
            }
        }

        impl $v::Host for HostState {
            async fn fetch(
                &mut self,
                req: $v::Request,
            ) -> wasmtime::Result<Result<$v::Response, $v::HttpError>> {
                let sent = self
                    .fetch_allowed(req.method, &req.url, req.headers, req.body)
                    .await?;
                Ok(sent.map(Into::into).map_err(Into::into))
            }
        }
    )+};
}

host_imports!(v0_1, v0_2, v0_3);
