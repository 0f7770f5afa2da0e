//! Policy rollouts: the version each policy is rolling out and how far it has got, the devices it has
//! reached (and at which stage), and which declarations a policy owns (admins may not edit those: they
//! change only with a new version).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

pub struct M0013PolicyRollouts;

impl MigrationName for M0013PolicyRollouts {
    fn name(&self) -> &str {
        "m0013_policy_rollouts"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0013PolicyRollouts {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table("ddm_declarations")
                .add_column(big_integer_null("policy_id"))
                .to_owned(),
        )
        .await?;
        // One rollout per policy: its current one (its history is the audit log). The explicit pilot and
        // canary groups cannot be deleted from under it.
        m.create_table(
            Table::create()
                .table("policy_rollouts")
                .col(big_integer("policy_id").primary_key())
                .col(string("version"))
                .col(string_null("previous"))
                .col(integer("stage"))
                .col(string("state"))
                .col(text_null("reason"))
                .col(big_integer("stage_started_at"))
                .col(big_integer("soak_secs"))
                .col(double("max_failure_ratio"))
                .col(double("min_reported_ratio"))
                .col(integer("pilot_percent"))
                .col(integer("canary_percent"))
                .col(big_integer_null("pilot_group"))
                .col(big_integer_null("canary_group"))
                .col(string("started_by"))
                .col(big_integer("started_at"))
                .col(big_integer("updated_at"))
                .foreign_key(
                    ForeignKey::create()
                        .from("policy_rollouts", "policy_id")
                        .to("policies", "id")
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .foreign_key(
                    ForeignKey::create()
                        .from("policy_rollouts", "pilot_group")
                        .to("device_groups", "id")
                        .on_delete(ForeignKeyAction::Restrict),
                )
                .foreign_key(
                    ForeignKey::create()
                        .from("policy_rollouts", "canary_group")
                        .to("device_groups", "id")
                        .on_delete(ForeignKeyAction::Restrict),
                )
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("policy_rollout_devices")
                .col(big_integer("policy_id"))
                .col(string("device_id"))
                .col(integer("stage"))
                .col(big_integer("reached_at"))
                .primary_key(Index::create().col("policy_id").col("device_id"))
                .foreign_key(
                    ForeignKey::create()
                        .from("policy_rollout_devices", "policy_id")
                        .to("policy_rollouts", "policy_id")
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in ["policy_rollout_devices", "policy_rollouts"] {
            m.drop_table(Table::drop().table(t).if_exists().to_owned())
                .await?;
        }
        m.alter_table(
            Table::alter()
                .table("ddm_declarations")
                .drop_column("policy_id")
                .to_owned(),
        )
        .await
    }
}
