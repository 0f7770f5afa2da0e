//! Configuration profiles policies install: each version's profiles as devices are sent them, and, per
//! device and profile identifier, where the reconciler stands (pending, verified, failed, removing,
//! removed) with its outstanding command, attempts and the device's last error.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

pub struct M0015DeviceProfiles;

impl MigrationName for M0015DeviceProfiles {
    fn name(&self) -> &str {
        "m0015_device_profiles"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0015DeviceProfiles {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // Written when a version is activated, from its checked bundle; keyed by the version's set, which
        // is what a device holds.
        m.create_table(
            Table::create()
                .table("policy_profiles")
                .col(string("set_name"))
                .col(string("identifier"))
                .col(big_integer("policy_id"))
                .col(string("payload_uuid"))
                .col(string("sha256"))
                .col(string("platforms"))
                .col(blob("content"))
                .col(big_integer("created_at"))
                .primary_key(Index::create().col("set_name").col("identifier"))
                .foreign_key(
                    ForeignKey::create()
                        .from("policy_profiles", "policy_id")
                        .to("policies", "id")
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("device_profiles")
                .col(string("device_id"))
                .col(string("identifier"))
                .col(big_integer("policy_id"))
                .col(string("set_name"))
                .col(string("payload_uuid"))
                .col(string("state"))
                .col(string_null("command_uuid"))
                .col(boolean("acknowledged"))
                .col(integer("attempts"))
                .col(big_integer_null("next_attempt_at"))
                .col(big_integer_null("listed_at"))
                .col(text_null("error"))
                .col(big_integer("updated_at"))
                .primary_key(Index::create().col("device_id").col("identifier"))
                .to_owned(),
        )
        .await?;
        for (name, cols) in [
            ("idx_device_profiles_policy", &["policy_id", "set_name"][..]),
            ("idx_device_profiles_command", &["command_uuid"][..]),
            (
                "idx_device_profiles_state",
                &["state", "next_attempt_at"][..],
            ),
        ] {
            let mut idx = Index::create();
            idx.name(name).table("device_profiles");
            for col in cols {
                idx.col(*col);
            }
            m.create_index(idx.to_owned()).await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in ["device_profiles", "policy_profiles"] {
            m.drop_table(Table::drop().table(t).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
