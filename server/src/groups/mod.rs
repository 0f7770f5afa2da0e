//! Device groups: static ones (devices an admin lists) and dynamic ones (the devices matching a rule over
//! device facts, plugin attributes and DDM status items).

mod eval;
pub mod rule;

pub use eval::{compare_versions, Facts};
pub use rule::{Fact, Kind, Op, Rule, RuleError, Test};
