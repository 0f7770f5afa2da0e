//! The error type of hooks and host calls.

use std::fmt;

use crate::bindings::mdm::plugin::http::HttpError;
use crate::bindings::mdm::plugin::kv::KvError;
use crate::plist::PlistError;

/// What a hook returns: `Ok` or a [`PluginError`].
pub type PluginResult<T> = Result<T, PluginError>;

/// An error in a plugin. A hook that returns it fails; the server logs the message and applies the
/// hook's failure policy (fail-open or fail-closed).
///
/// It converts from the host errors ([`KvError`], [`HttpError`]), from `serde_json` and base64
/// errors, from [`PlistError`], and from `String`/`&str`, so `?` works on host calls and
/// `Err("reason".into())` on anything else.
#[derive(Debug, Clone, PartialEq)]
pub enum PluginError {
    /// A call to the `kv` import failed.
    Kv(KvError),
    /// A call to the `http` import failed.
    Http(HttpError),
    /// JSON could not be read or written (configuration, payloads).
    Json(String),
    /// A property list tree was malformed.
    Plist(PlistError),
    /// Anything else.
    Message(String),
}

impl PluginError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        PluginError::Message(message.into())
    }

    /// Prefixes the error with what was being done: `"reading config: invalid type ..."`.
    pub fn context(self, what: impl fmt::Display) -> Self {
        PluginError::Message(format!("{what}: {self}"))
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PluginError::Kv(KvError::QuotaExceeded) => f.write_str("kv: key quota exceeded"),
            PluginError::Kv(KvError::TooLarge) => f.write_str("kv: key or value too large"),
            PluginError::Kv(KvError::Unavailable(why)) => write!(f, "kv: unavailable: {why}"),
            PluginError::Http(HttpError::NotAllowed(host)) => {
                write!(f, "http: host not allowed: {host}")
            }
            PluginError::Http(HttpError::Timeout) => f.write_str("http: timed out"),
            PluginError::Http(HttpError::TooLarge) => f.write_str("http: response too large"),
            PluginError::Http(HttpError::Failed(why)) => write!(f, "http: {why}"),
            PluginError::Json(why) => write!(f, "json: {why}"),
            PluginError::Plist(e) => write!(f, "plist: {e}"),
            PluginError::Message(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for PluginError {}

impl From<KvError> for PluginError {
    fn from(e: KvError) -> Self {
        PluginError::Kv(e)
    }
}

impl From<HttpError> for PluginError {
    fn from(e: HttpError) -> Self {
        PluginError::Http(e)
    }
}

impl From<serde_json::Error> for PluginError {
    fn from(e: serde_json::Error) -> Self {
        PluginError::Json(e.to_string())
    }
}

impl From<base64::DecodeError> for PluginError {
    fn from(e: base64::DecodeError) -> Self {
        PluginError::Message(format!("invalid base64: {e}"))
    }
}

impl From<std::string::FromUtf8Error> for PluginError {
    fn from(e: std::string::FromUtf8Error) -> Self {
        PluginError::Message(format!("invalid UTF-8: {e}"))
    }
}

impl From<PlistError> for PluginError {
    fn from(e: PlistError) -> Self {
        PluginError::Plist(e)
    }
}

impl From<String> for PluginError {
    fn from(m: String) -> Self {
        PluginError::Message(m)
    }
}

impl From<&str> for PluginError {
    fn from(m: &str) -> Self {
        PluginError::Message(m.to_owned())
    }
}

impl From<PluginError> for String {
    fn from(e: PluginError) -> Self {
        e.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv_call() -> Result<(), KvError> {
        Err(KvError::Unavailable("db down".into()))
    }

    fn hook() -> PluginResult<()> {
        kv_call()?;
        Ok(())
    }

    #[test]
    fn question_mark_converts_host_errors() {
        let e = hook().unwrap_err();
        assert_eq!(e, PluginError::Kv(KvError::Unavailable("db down".into())));
        assert_eq!(e.to_string(), "kv: unavailable: db down");
    }

    #[test]
    fn messages_and_context() {
        let e: PluginError = "no serial".into();
        assert_eq!(e.to_string(), "no serial");
        let e = PluginError::from(HttpError::Timeout).context("calling inventory API");
        assert_eq!(e.to_string(), "calling inventory API: http: timed out");
        let json = serde_json::from_str::<u32>("x").unwrap_err();
        assert!(PluginError::from(json).to_string().starts_with("json: "));
        let s: String = PluginError::new("boom").into();
        assert_eq!(s, "boom");
    }
}
