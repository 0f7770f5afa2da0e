//! The device simulator: fleets of simulated iOS and macOS devices that enroll, check in, are woken by
//! push (or poll), answer commands realistically and check what the server sends them; and the load
//! benchmarks built on it (`mdm-sim bench ...`).
//!
//! | module | does |
//! |---|---|
//! | `pki` | the run's CA and device key pool; a unique certificate per device |
//! | `profile` | device hardware/OS catalogue, state, and the check-in messages a device sends |
//! | `responder` | answers to commands (DeviceInformation, SecurityInfo, ProfileList, ...), NotNow/Error rates |
//! | `checker` | per-device protocol checks and the run's violation tally |
//! | `transport` | the HTTP side: signed check-ins and reports with their latency |
//! | `push` | the APNs stand-in that wakes devices in an in-process server |
//! | `fleet` | many devices: enroll or seed, connections, push wake-ups, polling |
//! | `target` | a fresh database and the server (in-process or the `mdm-server` binary) |
//! | `stats` | latency percentiles, throughput, process memory and CPU |
//! | `scenarios` | the six benchmarks |

pub mod checker;
pub mod fleet;
pub mod pki;
pub mod profile;
pub mod push;
pub mod responder;
pub mod scenarios;
pub mod stats;
pub mod target;
pub mod transport;

/// Wait until `done()` holds, woken by `changed` (notified with `notify_waiters` whenever what `done` reads
/// may have changed) instead of polling. False if `deadline` passes first.
pub async fn wait_for(
    changed: &tokio::sync::Notify,
    deadline: std::time::Instant,
    done: impl Fn() -> bool,
) -> bool {
    loop {
        let notified = changed.notified();
        tokio::pin!(notified);
        // Registered before the check, so a change between the check and the wait is not missed.
        notified.as_mut().enable();
        if done() {
            return true;
        }
        let at = tokio::time::Instant::from_std(deadline);
        if tokio::time::timeout_at(at, notified).await.is_err() {
            return done();
        }
    }
}
