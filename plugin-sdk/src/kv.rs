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

/// One page of the keys starting with `prefix`, in order: those strictly after `start_after` (none:
/// from the first), at most `limit` (the host returns at most [`LIST_PAGE`]).
///
/// To page, pass the last key of the previous page as `start_after`; a page shorter than the
/// `limit` asked for (or than [`LIST_PAGE`]) is the last. [`list_all`] does this for you.
///
/// ```no_run
/// use mdm_plugin_sdk::kv;
/// # fn f() -> mdm_plugin_sdk::PluginResult<()> {
/// let first = kv::list("device:", None, 100)?;
/// if let Some(last) = first.last() {
///     let next = kv::list("device:", Some(last), 100)?;
///     # let _ = next;
/// }
/// # Ok(()) }
/// ```
pub fn list(prefix: &str, start_after: Option<&str>, limit: u32) -> PluginResult<Vec<String>> {
    Ok(host::list_keys(prefix, start_after, limit)?)
}

/// All keys starting with `prefix`, in order, read a page of [`LIST_PAGE`] at a time (one host
/// call per page, plus one when the last page is exactly full).
///
/// Paging is by key, not a snapshot: a key set or deleted meanwhile may or may not be listed, but
/// no key is listed twice and every key present throughout is listed.
pub fn list_all(prefix: &str) -> PluginResult<Vec<String>> {
    let mut keys: Vec<String> = Vec::new();
    loop {
        let page = list(prefix, keys.last().map(String::as_str), LIST_PAGE)?;
        let full = page.len() >= LIST_PAGE as usize;
        if let Some(previous) = keys.last() {
            // The host lists strictly after `start-after`; a page holding it again would make no
            // progress (and loop forever).
            if page.contains(previous) {
                return Err(PluginError::new(format!(
                    "kv list-keys listed {previous:?} again when asked for the keys after it"
                )));
            }
        }
        keys.extend(page);
        if !full {
            return Ok(keys);
        }
    }
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
    fn list_pages_after_start_after() {
        for k in ["a", "b:1", "b:2", "b:3", "b:30", "c"] {
            mock::kv_insert(k, b"1".to_vec());
        }
        assert_eq!(list("b:", None, 10).unwrap(), ["b:1", "b:2", "b:3", "b:30"]);
        assert_eq!(list("b:", None, 2).unwrap(), ["b:1", "b:2"]);
        assert_eq!(list("b:", Some("b:2"), 10).unwrap(), ["b:3", "b:30"]);
        // `start_after` need not be a key, nor under the prefix.
        assert_eq!(list("b:", Some("b:25"), 10).unwrap(), ["b:3", "b:30"]);
        assert_eq!(list("b:", Some("a"), 1).unwrap(), ["b:1"]);
        assert!(list("b:", Some("b:4"), 10).unwrap().is_empty());
        assert!(list("b:", Some("z"), 10).unwrap().is_empty());
        assert_eq!(list("", Some("b:30"), 10).unwrap(), ["c"]);
        // The host's cap, and its key rules.
        assert_eq!(
            list(&"x".repeat(257), None, 1).unwrap_err(),
            PluginError::Kv(KvError::TooLarge)
        );
        mock::fail_kv(Some(KvError::Unavailable("down".into())));
        assert!(list_all("b:").is_err());
    }

    #[test]
    fn list_all_goes_past_one_page() {
        // 2,500 device keys: more than two pages under the bare prefix, some with characters that
        // are not printable ASCII.
        let mut expected = Vec::new();
        for i in 0..2500u32 {
            let key = match i % 5 {
                0 => format!("device:\u{e9}t\u{e9}-{i}"),
                1 => format!("device:\t{i}"),
                _ => format!("device:{:08X}-{i}", i.wrapping_mul(2_654_435_761)),
            };
            mock::kv_insert(&key, b"1".to_vec());
            expected.push(key);
        }
        mock::kv_insert("device:", b"exact".to_vec());
        mock::kv_insert("devices", b"1".to_vec());
        mock::kv_insert("other:1", b"1".to_vec());
        expected.push("device:".to_owned());
        expected.sort();
        assert_eq!(
            list("device:", None, LIST_PAGE).unwrap().len(),
            LIST_PAGE as usize
        );
        assert_eq!(list_all("device:").unwrap(), expected);
        assert_eq!(list_all("other:").unwrap(), vec!["other:1".to_owned()]);
        assert_eq!(list_all("none:").unwrap(), Vec::<String>::new());
        assert_eq!(list_all("").unwrap().len(), expected.len() + 2);
    }

    #[test]
    fn list_all_on_exactly_full_pages() {
        let expected: Vec<String> = (0..2 * LIST_PAGE).map(|i| format!("k:{i:05}")).collect();
        for key in &expected {
            mock::kv_insert(key, b"1".to_vec());
        }
        assert_eq!(list_all("k:").unwrap(), expected);
    }
}
