//! Latency samples and throughput: every request's latency is kept (microseconds, 4 bytes each), so
//! percentiles are exact; a run of a few million requests costs a few MiB.

use serde::Serialize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Latencies collected by many tasks.
#[derive(Default)]
pub struct Recorder {
    samples: Mutex<Vec<u32>>,
}

impl Recorder {
    pub fn record(&self, d: Duration) {
        let us = d.as_micros().min(u128::from(u32::MAX)) as u32;
        self.samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(us);
    }

    /// Add a batch (a worker's local buffer).
    pub fn extend(&self, v: &[u32]) {
        self.samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(v);
    }

    pub fn len(&self) -> usize {
        self.samples.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn summary(&self, elapsed: Duration) -> Summary {
        let mut v = self
            .samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Summary::of(&mut v, elapsed)
    }
}

/// Throughput and latency percentiles of one measured phase.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Summary {
    pub requests: u64,
    pub seconds: f64,
    pub per_second: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Summary {
    pub fn of(samples: &mut [u32], elapsed: Duration) -> Self {
        samples.sort_unstable();
        let pct = |p: f64| -> f64 {
            if samples.is_empty() {
                return 0.0;
            }
            let i = ((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1;
            f64::from(samples[i]) / 1000.0
        };
        let secs = elapsed.as_secs_f64();
        Self {
            requests: samples.len() as u64,
            seconds: secs,
            per_second: if secs > 0.0 {
                samples.len() as f64 / secs
            } else {
                0.0
            },
            p50_ms: pct(0.50),
            p90_ms: pct(0.90),
            p99_ms: pct(0.99),
            max_ms: samples.last().map_or(0.0, |&m| f64::from(m) / 1000.0),
        }
    }

    pub fn line(&self) -> String {
        format!(
            "{} requests in {:.2} s = {:.0}/s; latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.requests,
            self.seconds,
            self.per_second,
            self.p50_ms,
            self.p90_ms,
            self.p99_ms,
            self.max_ms
        )
    }
}

/// A stopwatch for phases.
pub struct Phase {
    start: Instant,
}

impl Phase {
    pub fn start() -> Self {
        Self {
            start: Instant::now(),
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }
}

/// This process's or another's memory from /proc: (VmRSS, VmHWM) in KiB.
pub fn proc_memory_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// CPU time (user + system) a process has used, from /proc/<pid>/stat, in seconds.
pub fn proc_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}
