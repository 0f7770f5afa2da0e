//! Which stage of a rollout reaches each device: by default a stable hash of (policy, device) puts it in
//! one of 10,000 buckets, the first `pilot_percent` of them the pilot and up to `canary_percent` the
//! canary (cumulative), so the same devices are pilots every time the policy rolls out; or, with explicit
//! groups, the pilot group's members are the pilot, the canary group's the canary, and the rest wait for
//! the full stage.
//!
//! Pure.

use super::bundle::sha256_hex;
use serde::Serialize;

/// A rollout's stages, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Pilot,
    Canary,
    Full,
}

impl Stage {
    pub const ALL: [Stage; 3] = [Stage::Pilot, Stage::Canary, Stage::Full];

    pub fn index(self) -> i32 {
        self as i32
    }

    pub fn from_index(i: i32) -> Option<Stage> {
        Self::ALL.get(usize::try_from(i).ok()?).copied()
    }

    pub fn next(self) -> Option<Stage> {
        Self::from_index(self.index() + 1)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Pilot => "pilot",
            Stage::Canary => "canary",
            Stage::Full => "full",
        }
    }
}

/// How a rollout's devices are split into stages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// By hash: the pilot is this percentage of the target, the pilot and canary together this one.
    Shares {
        pilot_percent: u32,
        canary_percent: u32,
    },
    /// By membership of these groups (a device in both is a pilot).
    Groups { pilot: i64, canary: i64 },
}

/// Buckets a device may fall in.
const BUCKETS: u64 = 10_000;

/// A device's bucket for a policy, 0..10,000: the same for the same pair, spread evenly over devices.
pub fn bucket(policy_id: i64, device_id: &str) -> u32 {
    let digest = sha256_hex(format!("mdm-rollout/1\n{policy_id}\n{device_id}").as_bytes());
    let head = u64::from_str_radix(&digest[..16], 16).expect("hex digits");
    (head % BUCKETS) as u32
}

impl Plan {
    /// The stage that reaches a device; `in_group` answers whether it is in a group (for a plan by groups).
    pub fn stage_of(
        &self,
        policy_id: i64,
        device_id: &str,
        in_group: impl Fn(i64) -> bool,
    ) -> Stage {
        match *self {
            Plan::Shares {
                pilot_percent,
                canary_percent,
            } => {
                let b = bucket(policy_id, device_id);
                if b < pilot_percent * 100 {
                    Stage::Pilot
                } else if b < canary_percent * 100 {
                    Stage::Canary
                } else {
                    Stage::Full
                }
            }
            Plan::Groups { pilot, canary } => {
                if in_group(pilot) {
                    Stage::Pilot
                } else if in_group(canary) {
                    Stage::Canary
                } else {
                    Stage::Full
                }
            }
        }
    }
}

/// Why a plan's shares were refused.
pub fn check_shares(pilot_percent: u32, canary_percent: u32) -> Result<(), String> {
    if pilot_percent == 0 || pilot_percent > canary_percent || canary_percent > 100 {
        return Err(format!(
            "stage shares must satisfy 0 < pilot ({pilot_percent}) <= canary ({canary_percent}) <= 100"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_stable_and_spread() {
        assert_eq!(bucket(1, "UDID-1"), bucket(1, "UDID-1"));
        let plan = Plan::Shares {
            pilot_percent: 10,
            canary_percent: 25,
        };
        let mut counts = [0u32; 3];
        for i in 0..20_000 {
            counts[plan.stage_of(1, &format!("device-{i}"), |_| false).index() as usize] += 1;
        }
        // 10% / 15% / 75% of 20,000, within a few standard deviations.
        assert!((1_700..2_300).contains(&counts[0]), "{counts:?}");
        assert!((2_600..3_400).contains(&counts[1]), "{counts:?}");
        assert!((14_400..15_600).contains(&counts[2]), "{counts:?}");
        // Another policy picks other pilots.
        let same = (0..1_000)
            .filter(|i| {
                let d = format!("device-{i}");
                plan.stage_of(1, &d, |_| false) == Stage::Pilot
                    && plan.stage_of(2, &d, |_| false) == Stage::Pilot
            })
            .count();
        assert!(same < 40, "{same} devices are pilots of both policies");
    }

    #[test]
    fn groups_decide_when_given() {
        let plan = Plan::Groups {
            pilot: 5,
            canary: 6,
        };
        assert_eq!(plan.stage_of(1, "a", |g| g == 5), Stage::Pilot);
        assert_eq!(plan.stage_of(1, "a", |g| g == 5 || g == 6), Stage::Pilot);
        assert_eq!(plan.stage_of(1, "a", |g| g == 6), Stage::Canary);
        assert_eq!(plan.stage_of(1, "a", |_| false), Stage::Full);
    }

    #[test]
    fn shares_are_checked() {
        assert!(check_shares(10, 25).is_ok());
        assert!(check_shares(100, 100).is_ok());
        for (p, c) in [(0, 25), (30, 25), (10, 101)] {
            assert!(check_shares(p, c).is_err(), "{p} {c}");
        }
    }

    #[test]
    fn stages_step_in_order() {
        assert_eq!(Stage::Pilot.next(), Some(Stage::Canary));
        assert_eq!(Stage::Canary.next(), Some(Stage::Full));
        assert_eq!(Stage::Full.next(), None);
        assert_eq!(Stage::from_index(2), Some(Stage::Full));
        assert_eq!(Stage::from_index(3), None);
    }
}
