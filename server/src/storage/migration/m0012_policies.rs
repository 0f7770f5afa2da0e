//! Policies and their versions. A version row is immutable: the database itself refuses to update or
//! delete one (triggers on SQLite and PostgreSQL), so what was shipped stays what was uploaded whoever
//! holds the database's credentials short of its owner; its hash is checked again wherever it is used.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

pub struct M0012Policies;

impl MigrationName for M0012Policies {
    fn name(&self) -> &str {
        "m0012_policies"
    }
}

/// The error the triggers raise; `storage::policies` recognises it.
pub const IMMUTABLE: &str = "policy versions are immutable";

#[async_trait::async_trait]
impl MigrationTrait for M0012Policies {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // A policy's target group cannot be deleted from under it.
        m.create_table(
            Table::create()
                .table("policies")
                .col(big_pk_auto("id"))
                .col(string_uniq("name"))
                .col(big_integer("target_group"))
                .col(big_integer("created_at"))
                .col(big_integer("updated_at"))
                .foreign_key(
                    ForeignKey::create()
                        .from("policies", "target_group")
                        .to("device_groups", "id")
                        .on_delete(ForeignKeyAction::Restrict),
                )
                .to_owned(),
        )
        .await?;
        // `bundle` is the archive as uploaded; `sha256` the digest of its canonical form.
        m.create_table(
            Table::create()
                .table("policy_versions")
                .col(big_integer("policy_id"))
                .col(string("version"))
                .col(string("sha256"))
                .col(text("manifest"))
                .col(blob("bundle"))
                .col(string_null("signer"))
                .col(string("created_by"))
                .col(big_integer("created_at"))
                .primary_key(Index::create().col("policy_id").col("version"))
                .foreign_key(
                    ForeignKey::create()
                        .from("policy_versions", "policy_id")
                        .to("policies", "id")
                        .on_delete(ForeignKeyAction::Restrict),
                )
                .to_owned(),
        )
        .await?;
        let db = m.get_connection();
        match m.get_database_backend() {
            sea_orm::DbBackend::Postgres => {
                db.execute_unprepared(&format!(
                    "CREATE FUNCTION policy_versions_immutable() RETURNS trigger LANGUAGE plpgsql AS \
                     $$ BEGIN RAISE EXCEPTION '{IMMUTABLE}'; END $$;\
                     CREATE TRIGGER policy_versions_immutable BEFORE UPDATE OR DELETE ON policy_versions \
                     FOR EACH ROW EXECUTE FUNCTION policy_versions_immutable();"
                ))
                .await?;
            }
            _ => {
                for op in ["UPDATE", "DELETE"] {
                    db.execute_unprepared(&format!(
                        "CREATE TRIGGER policy_versions_no_{} BEFORE {op} ON policy_versions \
                         BEGIN SELECT RAISE(ABORT, '{IMMUTABLE}'); END;",
                        op.to_lowercase()
                    ))
                    .await?;
                }
            }
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in ["policy_versions", "policies"] {
            m.drop_table(Table::drop().table(t).if_exists().to_owned())
                .await?;
        }
        if m.get_database_backend() == sea_orm::DbBackend::Postgres {
            m.get_connection()
                .execute_unprepared("DROP FUNCTION IF EXISTS policy_versions_immutable()")
                .await?;
        }
        Ok(())
    }
}
