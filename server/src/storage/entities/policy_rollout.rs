use sea_orm::entity::prelude::*;

/// A policy's current rollout: the version it is rolling out, the one the devices it has not reached
/// hold, and how far it has got.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "policy_rollouts")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub policy_id: i64,
    pub version: String,
    pub previous: Option<String>,
    /// 0 pilot, 1 canary, 2 full.
    pub stage: i32,
    pub state: String,
    pub reason: Option<String>,
    pub stage_started_at: i64,
    pub soak_secs: i64,
    pub max_failure_ratio: f64,
    pub min_reported_ratio: f64,
    pub pilot_percent: i32,
    pub canary_percent: i32,
    pub pilot_group: Option<i64>,
    pub canary_group: Option<i64>,
    pub started_by: String,
    pub started_at: i64,
    pub updated_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
