//! A walk over a plist's values before it is built, refusing shapes that would exhaust the stack or memory.
//!
//! A binary plist refers to its objects by index, and the reader expands every reference: an array holding
//! the previous array twice, repeated 64 times, is under a kilobyte and expands to 2^64 values. Without shared
//! containers every value but the root costs at least one byte of input (its reference, or in XML its tag),
//! so more values than bytes means shared containers. Depth is bounded because values are dropped, cloned and
//! converted recursively.
//!
//! The bytes are bounded too: a string or data object is copied out once per reference, so an array of N
//! references to one L-byte string is N values (within the first limit) but N×L bytes (128 KiB of input
//! became 4 GiB). Strings, data and keys are counted each time they are visited, against
//! [`super::decoded_budget`].
//!
//! The walk goes through plist's serde deserializer, its only public event API, and builds nothing.

use super::{ProtocolError, MAX_PLIST_DEPTH};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::cell::Cell;
use std::fmt;

thread_local! {
    /// Values the plist being checked may still hold (set by `check`).
    static LEFT: Cell<usize> = const { Cell::new(0) };
    /// Bytes of strings, data and keys it may still decode to (set by `check`).
    static BYTES_LEFT: Cell<usize> = const { Cell::new(0) };
    /// The limit it broke: serde errors carry only text.
    static BROKE: Cell<Option<ProtocolError>> = const { Cell::new(None) };
}

pub(super) fn check(body: &[u8]) -> Result<(), ProtocolError> {
    LEFT.set(body.len().saturating_add(16));
    BYTES_LEFT.set(super::decoded_budget(body.len()));
    BROKE.set(None);
    let walked = plist::from_bytes::<Shape>(body);
    match (walked, BROKE.take()) {
        (_, Some(limit)) => Err(limit),
        (Err(e), None) => Err(ProtocolError::NotAPlist(e.to_string())),
        (Ok(_), None) => Ok(()),
    }
}

fn broke<E: de::Error>(limit: ProtocolError) -> E {
    let e = E::custom(&limit);
    BROKE.set(Some(limit));
    e
}

/// Count `n` decoded bytes against the budget; past it, the walk stops there, before the rest is copied.
fn spend<E: de::Error>(n: usize) -> Result<(), E> {
    match BYTES_LEFT.get().checked_sub(n) {
        Some(left) => {
            BYTES_LEFT.set(left);
            Ok(())
        }
        None => Err(broke(ProtocolError::TooLarge)),
    }
}

/// The top-level value (serde's entry point takes no arguments; the budget is in `LEFT`).
struct Shape;

impl<'de> de::Deserialize<'de> for Shape {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Walk { depth: 0 }.deserialize(d).map(|()| Shape)
    }
}

/// One value at `depth` containers down.
#[derive(Clone, Copy)]
struct Walk {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Walk {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        let left = LEFT.get();
        if left == 0 {
            return Err(broke(ProtocolError::TooLarge));
        }
        LEFT.set(left - 1);
        d.deserialize_any(self)
    }
}

impl Walk {
    fn inside<E: de::Error>(self) -> Result<Walk, E> {
        if self.depth >= MAX_PLIST_DEPTH {
            return Err(broke(ProtocolError::TooDeep));
        }
        Ok(Walk {
            depth: self.depth + 1,
        })
    }
}

impl<'de> Visitor<'de> for Walk {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a property list value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    // Strings (and keys, and dates, which reach a walk as their text) and data; serde's owned variants
    // (`visit_string`, `visit_byte_buf`, what the binary reader produces) forward to these.
    fn visit_str<E: de::Error>(self, s: &str) -> Result<(), E> {
        spend(s.len())
    }
    fn visit_bytes<E: de::Error>(self, b: &[u8]) -> Result<(), E> {
        spend(b.len())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let item = self.inside()?;
        while seq.next_element_seed(item)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let item = self.inside()?;
        while map.next_key_seed(item)?.is_some() {
            map.next_value_seed(item)?;
        }
        Ok(())
    }
}
