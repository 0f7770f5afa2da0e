//! The plugin's key-value store (capability `kv`).
//!
//! Private to the plugin, shared by all its calls and by every server replica. Keys are 1 to 256
//! bytes of UTF-8, values at most 64 KiB; the number of live keys is capped by the manifest's
//! `limits.kv_max_keys`. Entries may carry a TTL.
//!
//! ```no_run
//! use mdm_plugin_sdk::kv;
//! # fn f() -> mdm_plugin_sdk::PluginResult<()> {
//! // Claim a key once: only the first caller gets `true`.
//! if kv::cas("baseline:UDID-1", None, b"1", None)? {
//!     // first time
//! }
//! let seen: Option<Vec<String>> = kv::get_json("seen")?;
//! # let _ = seen; Ok(()) }
//! ```

use std::collections::BTreeSet;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{PluginError, PluginResult};
use crate::host::kv as host;

pub use crate::bindings::mdm::plugin::kv::KvError;

/// The most keys one `list` call returns (the host's cap).
pub const LIST_PAGE: u32 = 1000;

/// The value of `key`, or `None` if it is not set.
pub fn get(key: &str) -> PluginResult<Option<Vec<u8>>> {
    Ok(host::get(key)?)
}

/// Sets `key` to `value`, without expiry.
pub fn set(key: &str, value: impl AsRef<[u8]>) -> PluginResult<()> {
    Ok(host::set(key, value.as_ref(), None)?)
}

/// Sets `key` to `value`; it expires `ttl_seconds` from now.
pub fn set_with_ttl(key: &str, value: impl AsRef<[u8]>, ttl_seconds: u32) -> PluginResult<()> {
    Ok(host::set(key, value.as_ref(), Some(ttl_seconds))?)
}

/// Deletes `key`; `true` if it existed.
pub fn delete(key: &str) -> PluginResult<bool> {
    Ok(host::delete(key)?)
}

/// Compare-and-swap: sets `key` to `new` only if its value is `expected` (`None`: only if it is
/// not set). `true` when it was set. With `expected: None` this is a claim that exactly one caller
/// wins, even across replicas.
pub fn cas(
    key: &str,
    expected: Option<&[u8]>,
    new: impl AsRef<[u8]>,
    ttl_seconds: Option<u32>,
) -> PluginResult<bool> {
    Ok(host::compare_and_swap(
        key,
        expected,
        new.as_ref(),
        ttl_seconds,
    )?)
}

/// Keys starting with `prefix`, in order, at most `limit` (the host returns at most
/// [`LIST_PAGE`]). See [`list_all`] for more.
pub fn list(prefix: &str, limit: u32) -> PluginResult<Vec<String>> {
    Ok(host::list_keys(prefix, limit)?)
}

/// All keys starting with `prefix`, sorted.
///
/// The host's `list-keys` has no cursor: it returns the first [`LIST_PAGE`] keys and no way to ask
/// for the next ones. When a page is full, this lists again under each longer prefix (`prefix`
/// followed by each printable ASCII character), recursively, until every page is partial. Keys are
/// complete as long as, wherever a page is full, the next character of the keys is printable ASCII
/// (true of UDIDs, EnrollmentIDs, UUIDs, hex and decimal numbers). Each extra level costs 95 calls,
/// so keep key spaces that need it to a few thousand keys, and give the hook time
/// (`limits.timeout_ms`).
pub fn list_all(prefix: &str) -> PluginResult<Vec<String>> {
    let mut found = BTreeSet::new();
    let mut pending = vec![prefix.to_owned()];
    while let Some(p) = pending.pop() {
        let page = list(&p, LIST_PAGE)?;
        let full = page.len() >= LIST_PAGE as usize;
        found.extend(page);
        if full {
            // `p` itself is a key too, if set; no longer prefix lists it.
            if !p.is_empty() && !found.contains(&p) && get(&p)?.is_some() {
                found.insert(p.clone());
            }
            for c in (b' '..=b'~').rev() {
                pending.push(format!("{p}{}", char::from(c)));
            }
        }
    }
    Ok(found.into_iter().collect())
}

/// The value of `key` read as JSON, or `None` if it is not set.
pub fn get_json<T: DeserializeOwned>(key: &str) -> PluginResult<Option<T>> {
    match get(key)? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| PluginError::from(e).context(format_args!("kv key {key:?}"))),
    }
}

/// Sets `key` to `value` as JSON, without expiry.
pub fn set_json<T: Serialize + ?Sized>(key: &str, value: &T) -> PluginResult<()> {
    set(key, serde_json::to_vec(value)?)
}

/// Sets `key` to `value` as JSON; it expires `ttl_seconds` from now.
pub fn set_json_with_ttl<T: Serialize + ?Sized>(
    key: &str,
    value: &T,
    ttl_seconds: u32,
) -> PluginResult<()> {
    set_with_ttl(key, serde_json::to_vec(value)?, ttl_seconds)
}

/// Adds one to the counter at `key` (decimal text; absent counts as 0) and returns the new value.
/// Safe against concurrent callers: it retries its compare-and-swap a few times. `ttl_seconds`
/// applies to each write.
pub fn increment(key: &str, ttl_seconds: Option<u32>) -> PluginResult<u64> {
    for _ in 0..8 {
        let current = get(key)?;
        let n = match &current {
            None => 0,
            Some(bytes) => std::str::from_utf8(bytes)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| PluginError::new(format!("kv key {key:?} is not a counter")))?,
        };
        let next = n.saturating_add(1);
        if cas(key, current.as_deref(), next.to_string(), ttl_seconds)? {
            return Ok(next);
        }
    }
    Err(PluginError::new(format!(
        "kv key {key:?}: too much contention to increment"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock;

    #[test]
    fn basic_operations() {
        set("a", b"1").unwrap();
        assert_eq!(get("a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(get("missing").unwrap(), None);
        assert!(delete("a").unwrap());
        assert!(!delete("a").unwrap());
        assert!(cas("claim", None, b"x", Some(60)).unwrap());
        assert!(!cas("claim", None, b"y", None).unwrap());
        assert!(cas("claim", Some(b"x"), b"z", None).unwrap());
        assert_eq!(get("claim").unwrap(), Some(b"z".to_vec()));
        set_with_ttl("t", "v", 30).unwrap();
        assert_eq!(mock::kv_ttl("t"), Some(30));
        assert_eq!(get("").unwrap_err(), PluginError::Kv(KvError::TooLarge));
    }

    #[test]
    fn json_and_counters() {
        set_json("j", &vec!["a", "b"]).unwrap();
        assert_eq!(
            get_json::<Vec<String>>("j").unwrap(),
            Some(vec!["a".into(), "b".into()])
        );
        assert_eq!(get_json::<u8>("none").unwrap(), None);
        assert!(get_json::<u8>("j").is_err());
        assert_eq!(increment("n", None).unwrap(), 1);
        assert_eq!(increment("n", None).unwrap(), 2);
        assert_eq!(get("n").unwrap(), Some(b"2".to_vec()));
        assert!(increment("j", None).is_err());
    }

    #[test]
    fn errors_pass_through() {
        mock::fail_kv(Some(KvError::Unavailable("down".into())));
        assert_eq!(
            set("a", b"1").unwrap_err(),
            PluginError::Kv(KvError::Unavailable("down".into()))
        );
        mock::fail_kv(None);
        mock::set_kv_max_keys(1);
        set("a", b"1").unwrap();
        set("a", b"2").unwrap();
        assert_eq!(
            set("b", b"1").unwrap_err(),
            PluginError::Kv(KvError::QuotaExceeded)
        );
    }

    #[test]
    fn list_all_goes_past_one_page() {
        // 2,500 device keys: more than two pages under the bare prefix.
        let mut expected = Vec::new();
        for i in 0..2500u32 {
            let key = format!("device:{:08X}-{i}", i.wrapping_mul(2_654_435_761));
            mock::kv_insert(&key, b"1".to_vec());
            expected.push(key);
        }
        mock::kv_insert("device:", b"exact".to_vec());
        mock::kv_insert("other:1", b"1".to_vec());
        expected.push("device:".to_owned());
        expected.sort();
        assert_eq!(
            list("device:", LIST_PAGE).unwrap().len(),
            LIST_PAGE as usize
        );
        assert_eq!(list_all("device:").unwrap(), expected);
        assert_eq!(list_all("other:").unwrap(), vec!["other:1".to_owned()]);
        assert_eq!(list_all("none:").unwrap(), Vec::<String>::new());
    }
}
