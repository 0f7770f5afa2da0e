//! What every simulated device checks in what it receives, and the run-wide tally of protocol violations:
//!
//! - every command is a plist with a CommandUUID and a Command dictionary with a RequestType;
//! - no command is delivered again after the device finished it (Acknowledged or Error);
//! - a command answered NotNow is not offered again within the same connection (until the next Idle);
//! - commands the run enqueued arrive in enqueue order within a priority, higher priorities first.
//!
//! A run with any violation fails.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

/// The kinds of violation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Violation {
    /// Not a plist, or no CommandUUID / Command / RequestType.
    InvalidCommand,
    /// Delivered again after the device answered Acknowledged or Error.
    RedeliveredAfterFinal,
    /// Offered again in the connection in which the device said NotNow.
    RedeliveredAfterNotNow,
    /// Not the next command in (priority desc, enqueue order) of those the run queued to this device.
    OutOfOrder,
    /// An HTTP status other than 200 for a message the device had every right to send.
    HttpStatus,
    /// A command the run expected the device to receive never came.
    NotDelivered,
}

impl Violation {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidCommand => "invalid_command",
            Self::RedeliveredAfterFinal => "redelivered_after_final",
            Self::RedeliveredAfterNotNow => "redelivered_after_notnow",
            Self::OutOfOrder => "out_of_order",
            Self::HttpStatus => "http_status",
            Self::NotDelivered => "not_delivered",
        }
    }
}

/// Violations of a run: counts per kind and the first few details.
#[derive(Default)]
pub struct Violations {
    inner: Mutex<(BTreeMap<Violation, u64>, Vec<String>)>,
}

impl Violations {
    pub fn record(&self, v: Violation, detail: String) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        *g.0.entry(v).or_default() += 1;
        if g.1.len() < 20 {
            g.1.push(format!("{}: {detail}", v.as_str()));
        }
    }

    pub fn total(&self) -> u64 {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .values()
            .sum()
    }

    pub fn counts(&self) -> BTreeMap<&'static str, u64> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect()
    }

    pub fn samples(&self) -> Vec<String> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .clone()
    }
}

/// A command the run queued to this device, in the order the server accepted the enqueues.
#[derive(Debug, Clone)]
struct Expected {
    uuid: String,
    priority: i32,
    seq: u64,
}

/// One device's view: what it was promised and what it finished.
#[derive(Debug, Default)]
pub struct DeviceChecker {
    expected: Vec<Expected>,
    finished: HashSet<String>,
    not_now_this_connection: HashSet<String>,
}

impl DeviceChecker {
    /// The run queued `uuid` to this device with `priority`; `seq` orders the run's enqueues.
    /// Returns false when the device already finished it (it came before the run recorded it).
    pub fn expect(&mut self, uuid: &str, priority: i32, seq: u64) -> bool {
        if self.finished.contains(uuid) {
            return false;
        }
        self.expected.push(Expected {
            uuid: uuid.to_string(),
            priority,
            seq,
        });
        self.expected
            .sort_by(|a, b| b.priority.cmp(&a.priority).then(a.seq.cmp(&b.seq)));
        true
    }

    /// A new connection starts with Idle: NotNow'd commands may come again.
    pub fn idle(&mut self) {
        self.not_now_this_connection.clear();
    }

    /// Check a delivered command (already parsed).
    pub fn delivered(&self, uuid: &str) -> Result<(), (Violation, String)> {
        if self.finished.contains(uuid) {
            return Err((
                Violation::RedeliveredAfterFinal,
                format!("{uuid} delivered after it was finished"),
            ));
        }
        if self.not_now_this_connection.contains(uuid) {
            return Err((
                Violation::RedeliveredAfterNotNow,
                format!("{uuid} offered again in the connection that NotNow'd it"),
            ));
        }
        if self.expected.iter().any(|e| e.uuid == uuid) {
            let next = self
                .expected
                .iter()
                .find(|e| !self.not_now_this_connection.contains(&e.uuid));
            if let Some(next) = next {
                if next.uuid != uuid {
                    return Err((
                        Violation::OutOfOrder,
                        format!(
                            "{uuid} delivered before {} (priority {}, enqueued earlier or higher)",
                            next.uuid, next.priority
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The device answered `status` to `uuid`. Returns true when that finished a command the run expected.
    pub fn answered(&mut self, uuid: &str, status: &str) -> bool {
        if status == "NotNow" {
            self.not_now_this_connection.insert(uuid.to_string());
            return false;
        }
        self.finished.insert(uuid.to_string());
        let before = self.expected.len();
        self.expected.retain(|e| e.uuid != uuid);
        self.expected.len() != before
    }

    /// Commands expected but not yet finished.
    pub fn outstanding(&self) -> Vec<String> {
        self.expected.iter().map(|e| e.uuid.clone()).collect()
    }

    pub fn finished_count(&self) -> usize {
        self.finished.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_redelivery_and_not_now_are_caught() {
        let mut c = DeviceChecker::default();
        c.expect("a", 0, 1);
        c.expect("b", 5, 2);
        c.expect("c", 0, 3);
        assert_eq!(c.delivered("a").unwrap_err().0, Violation::OutOfOrder);
        assert!(c.delivered("b").is_ok());
        c.answered("b", "Acknowledged");
        assert_eq!(
            c.delivered("b").unwrap_err().0,
            Violation::RedeliveredAfterFinal
        );
        assert!(c.delivered("a").is_ok());
        c.answered("a", "NotNow");
        assert!(c.delivered("c").is_ok(), "a was skipped by NotNow");
        assert_eq!(
            c.delivered("a").unwrap_err().0,
            Violation::RedeliveredAfterNotNow
        );
        c.idle();
        assert!(c.delivered("a").is_ok());
        // Unknown commands (a plugin's) are not ordered against the run's.
        assert!(c.delivered("z").is_ok());
    }
}
