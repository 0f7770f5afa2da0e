//! Schema migrations, run at start and by `mdm-server migrate`. Built with sea-query's schema builder so the
//! same migration serves SQLite and PostgreSQL.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

mod m0009_ddm;
mod m0010_groups;
mod m0011_ddm_group_sets;
pub mod m0012_policies;
mod m0013_policy_rollouts;
mod m0014_event_ids;
mod m0015_device_profiles;
mod m0016_event_sinks;

pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(M0001Initial),
            Box::new(M0002Plugins),
            Box::new(M0003Push),
            Box::new(M0004Enrollment),
            Box::new(M0005AuditLog),
            Box::new(M0006OutboxOrdering),
            Box::new(M0007AuditPending),
            Box::new(M0008Reenrollment),
            Box::new(m0009_ddm::M0009Ddm),
            Box::new(m0010_groups::M0010Groups),
            Box::new(m0011_ddm_group_sets::M0011DdmGroupSets),
            Box::new(m0012_policies::M0012Policies),
            Box::new(m0013_policy_rollouts::M0013PolicyRollouts),
            Box::new(m0014_event_ids::M0014EventIds),
            Box::new(m0015_device_profiles::M0015DeviceProfiles),
            Box::new(m0016_event_sinks::M0016EventSinks),
        ]
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

/// The plugin platform: plugins, their private key-value store, their audit log, device attributes they set,
/// the durable outbox for their events, their schedules; and delayed delivery for retried commands.
struct M0002Plugins;

impl MigrationName for M0002Plugins {
    fn name(&self) -> &str {
        "m0002_plugins"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0002Plugins {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table("command_queue")
                .add_column(big_integer_null("not_before"))
                .to_owned(),
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table("commands")
                .add_column(string_null("retry_of"))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table("plugins")
                .col(string("id").primary_key())
                .col(string("version"))
                .col(text("description"))
                .col(text("manifest"))
                .col(blob("wasm"))
                .col(string("wasm_sha256"))
                .col(text("config"))
                .col(boolean("enabled"))
                .col(integer("priority"))
                .col(boolean("dry_run"))
                .col(text("approved"))
                .col(big_integer("revision"))
                .col(big_integer_null("quarantined_at"))
                .col(text_null("quarantine_reason"))
                .col(big_integer("created_at"))
                .col(big_integer("updated_at"))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table("plugin_kv")
                .col(string("plugin_id"))
                .col(string("key"))
                .col(blob("value"))
                .col(big_integer_null("expires_at"))
                .col(big_integer("updated_at"))
                .primary_key(Index::create().col("plugin_id").col("key"))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table("plugin_audit")
                .col(big_pk_auto("id"))
                .col(string("plugin_id"))
                .col(string("hook"))
                .col(string("event_id"))
                .col(string_null("device_id"))
                .col(string_null("enrollment_id"))
                .col(string("kind"))
                .col(string("outcome"))
                .col(text("detail"))
                .col(big_integer("created_at"))
                .to_owned(),
        )
        .await?;
        for (name, cols) in [
            ("idx_plugin_audit_plugin", ["plugin_id", "id"]),
            ("idx_plugin_audit_device", ["device_id", "id"]),
        ] {
            m.create_index(
                Index::create()
                    .name(name)
                    .table("plugin_audit")
                    .col(cols[0])
                    .col(cols[1])
                    .to_owned(),
            )
            .await?;
        }

        m.create_table(
            Table::create()
                .table("device_attributes")
                .col(string("device_id"))
                .col(string("key"))
                .col(text("value"))
                .col(string("plugin_id"))
                .col(big_integer("updated_at"))
                .primary_key(Index::create().col("device_id").col("key"))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table("event_outbox")
                .col(big_pk_auto("id"))
                .col(string("plugin_id"))
                .col(string("sink"))
                .col(string("topic"))
                .col(text("payload"))
                .col(integer("attempts"))
                .col(big_integer("next_attempt_at"))
                .col(big_integer_null("delivered_at"))
                .col(text_null("last_error"))
                .col(big_integer("created_at"))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_outbox_due")
                .table("event_outbox")
                .col("delivered_at")
                .col("next_attempt_at")
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table("plugin_schedules")
                .col(string("plugin_id"))
                .col(string("name"))
                .col(big_integer("next_run_at"))
                .primary_key(Index::create().col("plugin_id").col("name"))
                .to_owned(),
        )
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in [
            "plugin_schedules",
            "event_outbox",
            "device_attributes",
            "plugin_audit",
            "plugin_kv",
            "plugins",
        ] {
            m.drop_table(Table::drop().table(t).to_owned()).await?;
        }
        m.alter_table(
            Table::alter()
                .table("command_queue")
                .drop_column("not_before")
                .to_owned(),
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table("commands")
                .drop_column("retry_of")
                .to_owned(),
        )
        .await?;
        Ok(())
    }
}

/// APNs push: certificates (private keys sealed), and each channel's push state for re-push with backoff.
struct M0003Push;

impl MigrationName for M0003Push {
    fn name(&self) -> &str {
        "m0003_push"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0003Push {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("push_certs")
                .col(string("topic").primary_key())
                .col(text("cert_pem"))
                .col(blob("key_sealed"))
                .col(big_integer("not_before"))
                .col(big_integer("not_after"))
                .col(big_integer("created_at"))
                .col(big_integer("updated_at"))
                .to_owned(),
        )
        .await?;
        for col in [
            big_integer_null("last_push_at"),
            big_integer_null("next_push_at"),
            integer("push_attempts").default(0).to_owned(),
            big_integer_null("token_dead_at"),
        ] {
            let mut col = col;
            m.alter_table(
                Table::alter()
                    .table("enrollments")
                    .add_column(&mut col)
                    .to_owned(),
            )
            .await?;
        }
        m.create_index(
            Index::create()
                .name("idx_enrollments_next_push")
                .table("enrollments")
                .col("next_push_at")
                .to_owned(),
        )
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table("push_certs").to_owned())
            .await?;
        for c in [
            "last_push_at",
            "next_push_at",
            "push_attempts",
            "token_dead_at",
        ] {
            m.alter_table(
                Table::alter()
                    .table("enrollments")
                    .drop_column(c)
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }
}

/// Enrollment: one-time secrets (SCEP challenges, enrollment tokens), certificates our CA issued, and the
/// identity-renewal marker per device.
struct M0004Enrollment;

impl MigrationName for M0004Enrollment {
    fn name(&self) -> &str {
        "m0004_enrollment"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0004Enrollment {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("one_time_secrets")
                .col(string("id").primary_key())
                .col(string("kind"))
                .col(string("secret_hash").unique_key())
                .col(big_integer("created_at"))
                .col(big_integer("expires_at"))
                .col(big_integer_null("used_at"))
                .col(string_null("serial_number"))
                .col(string_null("renewal_for"))
                .col(string_null("token_id"))
                .col(string_null("label"))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_one_time_secrets_kind_expires")
                .table("one_time_secrets")
                .col("kind")
                .col("expires_at")
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("issued_certificates")
                .col(string("serial").primary_key())
                .col(string("fingerprint").unique_key())
                .col(string("subject"))
                .col(big_integer("not_before"))
                .col(big_integer("not_after"))
                .col(big_integer("issued_at"))
                .col(string_null("challenge_id"))
                .col(string_null("pinned_serial_number"))
                .col(string_null("renewal_of"))
                .col(string_null("renews_device"))
                .col(string_null("device_id"))
                .col(big_integer_null("revoked_at"))
                .to_owned(),
        )
        .await?;
        for (name, col) in [
            ("idx_issued_certificates_not_after", "not_after"),
            ("idx_issued_certificates_device", "device_id"),
        ] {
            m.create_index(
                Index::create()
                    .name(name)
                    .table("issued_certificates")
                    .col(col)
                    .to_owned(),
            )
            .await?;
        }
        m.alter_table(
            Table::alter()
                .table("devices")
                .add_column(big_integer_null("renewal_requested_at"))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_devices_identity_not_after")
                .table("devices")
                .col("identity_not_after")
                .to_owned(),
        )
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in ["one_time_secrets", "issued_certificates"] {
            m.drop_table(Table::drop().table(t).to_owned()).await?;
        }
        m.alter_table(
            Table::alter()
                .table("devices")
                .drop_column("renewal_requested_at")
                .to_owned(),
        )
        .await?;
        Ok(())
    }
}

/// The hash-chained audit log of admin actions, enrollment events and plugin actions. Triggers refuse updates
/// and deletes, so changing history takes dropping them first (and the chain still shows it).
struct M0005AuditLog;

impl MigrationName for M0005AuditLog {
    fn name(&self) -> &str {
        "m0005_audit_log"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0005AuditLog {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("audit_log")
                // Assigned by the writer (previous id + 1, under a lock): part of what is hashed.
                .col(big_integer("id").primary_key())
                .col(big_integer("at"))
                .col(string("actor"))
                .col(string("action"))
                .col(string_null("target"))
                .col(text("detail"))
                .col(string("prev_hash"))
                .col(string("hash"))
                .to_owned(),
        )
        .await?;
        let db = m.get_connection();
        match m.get_database_backend() {
            sea_orm::DbBackend::Postgres => {
                db.execute_unprepared(
                    "CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS \
                     $$ BEGIN RAISE EXCEPTION 'audit_log is append-only'; END $$;\
                     CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log \
                     FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();",
                )
                .await?;
            }
            _ => {
                for (name, op) in [
                    ("audit_log_no_update", "UPDATE"),
                    ("audit_log_no_delete", "DELETE"),
                ] {
                    db.execute_unprepared(&format!(
                        "CREATE TRIGGER {name} BEFORE {op} ON audit_log \
                         BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;"
                    ))
                    .await?;
                }
            }
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table("audit_log").to_owned())
            .await?;
        if m.get_database_backend() == sea_orm::DbBackend::Postgres {
            m.get_connection()
                .execute_unprepared("DROP FUNCTION IF EXISTS audit_log_append_only()")
                .await?;
        }
        Ok(())
    }
}

/// Events of one device are delivered in the order they were written: the outbox names whose they are.
struct M0006OutboxOrdering;

impl MigrationName for M0006OutboxOrdering {
    fn name(&self) -> &str {
        "m0006_outbox_ordering"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0006OutboxOrdering {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table("event_outbox")
                .add_column(string_null("ordering_key"))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table("event_outbox")
                .drop_column("ordering_key")
                .to_owned(),
        )
        .await
    }
}

/// Audit entries are written with the change they record into `audit_pending`, and sealed into the chain in
/// batches: a check-in no longer takes the chain's lock (PostgreSQL) or reads its head.
struct M0007AuditPending;

impl MigrationName for M0007AuditPending {
    fn name(&self) -> &str {
        "m0007_audit_pending"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0007AuditPending {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("audit_pending")
                .col(big_pk_auto("id"))
                .col(big_integer("at"))
                .col(string("actor"))
                .col(string("action"))
                .col(string_null("target"))
                .col(text("detail"))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table("audit_pending").to_owned())
            .await
    }
}

/// A known device may take a new identity only in the cases `checkin` names: an admin's one-time allowance
/// (until a time) or the device having checked out.
struct M0008Reenrollment;

impl MigrationName for M0008Reenrollment {
    fn name(&self) -> &str {
        "m0008_reenrollment"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0008Reenrollment {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one thing at a time.
        for column in ["reenroll_allowed_until", "checked_out_at"] {
            m.alter_table(
                Table::alter()
                    .table("devices")
                    .add_column(big_integer_null(column))
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for column in ["reenroll_allowed_until", "checked_out_at"] {
            m.alter_table(
                Table::alter()
                    .table("devices")
                    .drop_column(column)
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }
}
