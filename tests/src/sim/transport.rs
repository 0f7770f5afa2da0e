//! How simulated devices reach the server and prove who they are.
//!
//! Today every message is signed (`Mdm-Signature`: detached CMS over the body with the device's key, as
//! devices do with SignMessage) and certificates are pre-provisioned ([`super::pki`]). Enrollment over
//! SCEP and mTLS slot in as further [`IdentityMode`]s: the device gets its certificate from the server's
//! SCEP endpoint instead of the local CA, and with mTLS presents it in the TLS handshake instead of a
//! header; nothing above this module changes.

use std::time::{Duration, Instant};

/// How a device proves its identity on each message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IdentityMode {
    /// A detached CMS signature of the body in the `Mdm-Signature` header.
    #[default]
    MdmSignature,
}

/// One answer from a device endpoint, with the time it took.
#[derive(Debug)]
pub struct Exchange {
    pub status: u16,
    pub body: Vec<u8>,
    pub latency: Duration,
}

/// The device-facing HTTP client shared by a fleet: one keep-alive connection per concurrent request.
#[derive(Clone)]
pub struct Transport {
    http: reqwest::Client,
    base: String,
    pub mode: IdentityMode,
}

pub const CHECKIN_CONTENT_TYPE: &str = "application/x-apple-aspen-mdm-checkin";

impl Transport {
    pub fn new(base: &str, max_connections: usize) -> Self {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(max_connections.max(1))
            // Well inside the server's keep-alive, so an idle connection is never reused as it closes.
            .pool_idle_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(60))
            .build()
            .expect("http client");
        Self {
            http,
            base: base.trim_end_matches('/').to_string(),
            mode: IdentityMode::MdmSignature,
        }
    }

    async fn put(
        &self,
        path: &str,
        body: Vec<u8>,
        signature: &str,
        content_type: &str,
    ) -> Result<Exchange, reqwest::Error> {
        let start = Instant::now();
        let res = self
            .http
            .put(format!("{}{path}", self.base))
            .header("Mdm-Signature", signature)
            .header("Content-Type", content_type)
            .body(body)
            .send()
            .await?;
        let status = res.status().as_u16();
        let body = res.bytes().await?.to_vec();
        Ok(Exchange {
            status,
            body,
            latency: start.elapsed(),
        })
    }

    /// A check-in message (Authenticate, TokenUpdate, ...) to the CheckInURL.
    pub async fn checkin(
        &self,
        body: Vec<u8>,
        signature: &str,
    ) -> Result<Exchange, reqwest::Error> {
        self.put("/mdm/checkin", body, signature, CHECKIN_CONTENT_TYPE)
            .await
    }

    /// A command report (Idle or a result) to the ServerURL.
    pub async fn connect(
        &self,
        body: Vec<u8>,
        signature: &str,
    ) -> Result<Exchange, reqwest::Error> {
        self.put(
            "/mdm/connect",
            body,
            signature,
            "application/x-apple-aspen-mdm",
        )
        .await
    }
}
