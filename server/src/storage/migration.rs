//! Schema migrations, run at start and by `mdm-server migrate`. Built with sea-query's schema builder so the
//! same migration serves SQLite and PostgreSQL.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(M0001Initial)]
    }
}

struct M0001Initial;

impl MigrationName for M0001Initial {
    fn name(&self) -> &str {
        "m0001_initial"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0001Initial {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("devices")
                .col(string("id").primary_key())
                .col(string_null("serial_number"))
                .col(string_null("platform"))
                .col(string_null("model"))
                .col(string_null("model_name"))
                .col(string_null("product_name"))
                .col(string_null("device_name"))
                .col(string_null("os_version"))
                .col(string_null("build_version"))
                .col(string_null("imei"))
                .col(string_null("meid"))
                .col(string_null("identity_fingerprint").unique_key())
                .col(string_null("identity_subject"))
                .col(big_integer_null("identity_not_after"))
                .col(blob_null("unlock_token"))
                .col(blob_null("bootstrap_token"))
                .col(blob_null("authenticate_raw"))
                .col(big_integer("authenticated_at"))
                .col(big_integer("created_at"))
                .col(big_integer("updated_at"))
                .col(big_integer("last_seen_at"))
                .to_owned(),
        )
        .await?;
        for (name, col) in [
            ("idx_devices_serial", "serial_number"),
            ("idx_devices_last_seen", "last_seen_at"),
        ] {
            m.create_index(
                Index::create()
                    .name(name)
                    .table("devices")
                    .col(col)
                    .to_owned(),
            )
            .await?;
        }

        m.create_table(
            Table::create()
                .table("enrollments")
                .col(string("id").primary_key())
                .col(string("device_id"))
                .col(string("kind"))
                .col(string_null("user_id"))
                .col(string_null("user_short_name"))
                .col(string_null("user_long_name"))
                .col(boolean("enabled"))
                .col(string_null("topic"))
                .col(string_null("push_magic"))
                .col(blob_null("token"))
                .col(boolean_null("awaiting_configuration"))
                .col(integer("token_update_count"))
                .col(blob_null("token_update_raw"))
                .col(big_integer("created_at"))
                .col(big_integer("updated_at"))
                .col(big_integer("last_seen_at"))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_enrollments_device")
                .table("enrollments")
                .col("device_id")
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table("commands")
                .col(string("uuid").primary_key())
                .col(string("request_type"))
                .col(blob("raw"))
                .col(integer("priority"))
                .col(string("source"))
                .col(big_integer("created_at"))
                .col(big_integer_null("expires_at"))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table("command_queue")
                .col(big_pk_auto("id"))
                .col(string("enrollment_id"))
                .col(string("command_uuid"))
                .col(integer("priority"))
                .col(string("status"))
                .col(big_integer("created_at"))
                .col(big_integer("updated_at"))
                .col(big_integer_null("expires_at"))
                .col(big_integer_null("delivered_at"))
                .col(integer("delivery_count"))
                .col(big_integer_null("completed_at"))
                .col(blob_null("result_raw"))
                .col(text_null("result_json"))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("uq_queue_enrollment_command")
                .table("command_queue")
                .col("enrollment_id")
                .col("command_uuid")
                .unique()
                .to_owned(),
        )
        .await?;
        // The next-command lookup: one channel's pending rows in delivery order.
        m.create_index(
            Index::create()
                .name("idx_queue_next")
                .table("command_queue")
                .col("enrollment_id")
                .col("status")
                .col("priority")
                .col("id")
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_queue_command")
                .table("command_queue")
                .col("command_uuid")
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_queue_status_completed")
                .table("command_queue")
                .col("status")
                .col("completed_at")
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table("api_keys")
                .col(string("id").primary_key())
                .col(string("name"))
                .col(string_uniq("key_hash"))
                .col(string("prefix"))
                .col(string("scopes"))
                .col(big_integer("created_at"))
                .col(big_integer_null("last_used_at"))
                .col(big_integer_null("revoked_at"))
                .to_owned(),
        )
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in [
            "api_keys",
            "command_queue",
            "commands",
            "enrollments",
            "devices",
        ] {
            m.drop_table(Table::drop().table(t).to_owned()).await?;
        }
        Ok(())
    }
}
