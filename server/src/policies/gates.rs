//! What decides a rollout's next step: the figures of the devices it reached, against its gates. A
//! failure ratio at or above the threshold (failed devices among those that reported, over every stage
//! reached so far) halts it at once; promotion waits for the soak time to pass and for the minimum share
//! of the current stage's devices to have reported.
//!
//! Pure.

use super::stages::Stage;
use serde::Serialize;
use std::collections::BTreeMap;

/// Where the devices a stage reached stand.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Counts {
    pub devices: u64,
    /// Every item of the version verified on the device.
    pub succeeded: u64,
    /// The device reported an item invalid.
    pub failed: u64,
    /// Neither yet.
    pub pending: u64,
}

impl Counts {
    pub fn add(&mut self, other: Counts) {
        self.devices += other.devices;
        self.succeeded += other.succeeded;
        self.failed += other.failed;
        self.pending += other.pending;
    }

    fn reported(&self) -> u64 {
        self.succeeded + self.failed
    }

    /// The share of its devices that reported (1 for a stage without devices: nothing to wait for).
    pub fn reported_ratio(&self) -> f64 {
        if self.devices == 0 {
            1.0
        } else {
            self.reported() as f64 / self.devices as f64
        }
    }

    /// Failed devices among those that reported (0 before any did).
    pub fn failure_ratio(&self) -> f64 {
        if self.reported() == 0 {
            0.0
        } else {
            self.failed as f64 / self.reported() as f64
        }
    }
}

/// A rollout's devices by the stage that reached them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    pub stages: BTreeMap<Stage, Counts>,
}

impl Figures {
    /// Every stage reached so far, together.
    pub fn total(&self) -> Counts {
        let mut t = Counts::default();
        self.stages.values().for_each(|c| t.add(*c));
        t
    }

    pub fn of(&self, stage: Stage) -> Counts {
        self.stages.get(&stage).copied().unwrap_or_default()
    }
}

/// A rollout's thresholds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gates {
    /// Halt when failed / reported reaches this (0.005: 0.5%).
    pub max_failure_ratio: f64,
    /// Promote only once this share of the current stage's devices reported (0.9).
    pub min_reported_ratio: f64,
    /// How long a stage runs before it may be promoted.
    pub soak_ms: i64,
}

/// What a rollout should do now.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// A gate broke: stop, and take the version back.
    Halt(String),
    /// Not yet, and why.
    Wait(String),
    /// Enter the next stage (at the full stage: the rollout is complete).
    Promote,
}

fn percent(r: f64) -> String {
    format!("{:.2}%", r * 100.0)
}

pub fn decide(
    gates: &Gates,
    figures: &Figures,
    stage: Stage,
    stage_started_at: i64,
    now: i64,
) -> Decision {
    let total = figures.total();
    let failure = total.failure_ratio();
    if total.failed > 0 && failure >= gates.max_failure_ratio {
        return Decision::Halt(format!(
            "failure ratio {} reached the threshold {} ({} of {} reporting devices failed)",
            percent(failure),
            percent(gates.max_failure_ratio),
            total.failed,
            total.reported()
        ));
    }
    let soaked_at = stage_started_at.saturating_add(gates.soak_ms);
    if now < soaked_at {
        return Decision::Wait(format!(
            "soaking until {}",
            crate::clock::to_rfc3339(soaked_at)
        ));
    }
    let here = figures.of(stage);
    let reported = here.reported_ratio();
    if reported < gates.min_reported_ratio {
        return Decision::Wait(format!(
            "{} of the {} stage's devices reported, {} needed",
            percent(reported),
            stage.as_str(),
            percent(gates.min_reported_ratio)
        ));
    }
    Decision::Promote
}

#[cfg(test)]
mod tests {
    use super::*;

    const GATES: Gates = Gates {
        max_failure_ratio: 0.005,
        min_reported_ratio: 0.9,
        soak_ms: 60_000,
    };

    fn counts(devices: u64, succeeded: u64, failed: u64) -> Counts {
        Counts {
            devices,
            succeeded,
            failed,
            pending: devices - succeeded - failed,
        }
    }

    fn figures(pairs: &[(Stage, Counts)]) -> Figures {
        Figures {
            stages: pairs.iter().copied().collect(),
        }
    }

    #[test]
    fn promotion_waits_for_the_soak_and_the_reports() {
        let all_good = figures(&[(Stage::Pilot, counts(20, 20, 0))]);
        assert!(matches!(
            decide(&GATES, &all_good, Stage::Pilot, 0, 59_999),
            Decision::Wait(w) if w.starts_with("soaking until")
        ));
        assert_eq!(
            decide(&GATES, &all_good, Stage::Pilot, 0, 60_000),
            Decision::Promote
        );
        let few = figures(&[(Stage::Pilot, counts(20, 17, 0))]);
        assert!(matches!(
            decide(&GATES, &few, Stage::Pilot, 0, 60_000),
            Decision::Wait(w) if w.contains("85.00% of the pilot")
        ));
        let enough = figures(&[(Stage::Pilot, counts(20, 18, 0))]);
        assert_eq!(
            decide(&GATES, &enough, Stage::Pilot, 0, 60_000),
            Decision::Promote
        );
        // An empty stage has nothing to wait for.
        let empty = figures(&[(Stage::Pilot, counts(20, 20, 0))]);
        assert_eq!(
            decide(&GATES, &empty, Stage::Canary, 0, 60_000),
            Decision::Promote
        );
    }

    #[test]
    fn failures_halt_at_once_over_every_stage_reached() {
        let f = figures(&[
            (Stage::Pilot, counts(200, 200, 0)),
            (Stage::Canary, counts(300, 290, 1)),
        ]);
        // 1 of 491 reporting: 0.2%, under 0.5%.
        assert_eq!(
            decide(&GATES, &f, Stage::Canary, 0, 60_000),
            Decision::Promote
        );
        let f = figures(&[
            (Stage::Pilot, counts(200, 190, 0)),
            (Stage::Canary, counts(300, 9, 1)),
        ]);
        // 1 of 200: 0.5%, the threshold. Halting does not wait for the soak.
        match decide(&GATES, &f, Stage::Canary, 0, 1) {
            Decision::Halt(why) => {
                assert!(why.contains("0.50%") && why.contains("1 of 200"), "{why}")
            }
            other => panic!("{other:?}"),
        }
        // No failure never halts, even with a zero threshold.
        let strict = Gates {
            max_failure_ratio: 0.0,
            ..GATES
        };
        let f = figures(&[(Stage::Pilot, counts(2, 0, 0))]);
        assert!(matches!(
            decide(&strict, &f, Stage::Pilot, 0, 1),
            Decision::Wait(_)
        ));
    }
}
