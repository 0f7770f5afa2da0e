//! Outbound HTTP(S) (capability `http`), to the hosts in the manifest's `http_allow` only.
//!
//! ```no_run
//! use mdm_plugin_sdk::http::{self, Request};
//! # fn f() -> mdm_plugin_sdk::PluginResult<()> {
//! let response = http::fetch(Request::get("https://assets.example.com/api/devices/C02XYZ")
//!     .header("Authorization", "Bearer ..."))?;
//! if response.is_success() {
//!     let body: mdm_plugin_sdk::serde_json::Value = response.json()?;
//! #   let _ = body;
//! }
//! # Ok(()) }
//! ```

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::PluginResult;
use crate::host::http as host;

pub use crate::bindings::mdm::plugin::http::{HttpError, Request, Response};

/// Sends a request and waits for the response. Non-2xx statuses are responses, not errors.
pub fn fetch(request: Request) -> PluginResult<Response> {
    Ok(host::fetch(&request)?)
}

impl Request {
    /// A request with this method and URL, no headers and no body.
    pub fn new(method: &str, url: &str) -> Self {
        Request {
            method: method.to_owned(),
            url: url.to_owned(),
            headers: Vec::new(),
            body: None,
        }
    }

    /// A `GET`.
    pub fn get(url: &str) -> Self {
        Self::new("GET", url)
    }

    /// A `POST` with this body.
    pub fn post(url: &str, body: impl Into<Vec<u8>>) -> Self {
        Self::new("POST", url).body(body)
    }

    /// A `POST` of `value` as JSON, with `Content-Type: application/json`.
    pub fn post_json(url: &str, value: &impl Serialize) -> PluginResult<Self> {
        Ok(Self::post(url, serde_json::to_vec(value)?).header("Content-Type", "application/json"))
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }
}

impl Response {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as UTF-8 text (invalid sequences replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body read as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> PluginResult<T> {
        Ok(serde_json::from_slice(&self.body)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::PluginError;
    use crate::mock;

    #[test]
    fn fetches_through_the_handler() {
        assert_eq!(
            fetch(Request::get("https://x.example/")).unwrap_err(),
            PluginError::Http(HttpError::NotAllowed("https://x.example/".into()))
        );
        mock::set_http_handler(|req| {
            Ok(Response {
                status: 200,
                headers: vec![("content-type".into(), "application/json".into())],
                body: format!("{{\"method\":\"{}\"}}", req.method).into_bytes(),
            })
        });
        let req = Request::post_json("https://x.example/a", &serde_json::json!({"k": 1})).unwrap();
        let resp = fetch(req).unwrap();
        assert!(resp.is_success());
        assert_eq!(resp.header("Content-Type"), Some("application/json"));
        assert_eq!(resp.json::<serde_json::Value>().unwrap()["method"], "POST");
        let sent = mock::http_requests();
        assert_eq!(
            sent[1].headers,
            vec![("Content-Type".into(), "application/json".into())]
        );
        assert_eq!(sent[1].body.as_deref(), Some(&b"{\"k\":1}"[..]));
    }
}
