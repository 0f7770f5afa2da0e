//! Declarative Device Management: declarations, sets of them, sets assigned to enrollments, and what each
//! enrollment's device last reported.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

pub struct M0009Ddm;

impl MigrationName for M0009Ddm {
    fn name(&self) -> &str {
        "m0009_ddm"
    }
}

const TABLES: [&str; 7] = [
    "ddm_declarations",
    "ddm_sets",
    "ddm_set_members",
    "ddm_assignments",
    "ddm_enrollments",
    "ddm_declaration_status",
    "ddm_status_items",
];

#[async_trait::async_trait]
impl MigrationTrait for M0009Ddm {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // Payload is the canonical JSON the ServerToken is computed over. Built-in declarations (the server's
        // own management declarations, from its configuration) are in every enrollment's effective set.
        m.create_table(
            Table::create()
                .table("ddm_declarations")
                .col(string("identifier").primary_key())
                .col(boolean("builtin"))
                .col(string("declaration_type"))
                .col(string("category"))
                .col(text("payload"))
                .col(string("server_token"))
                .col(big_integer("created_at"))
                .col(big_integer("updated_at"))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("ddm_sets")
                .col(string("name").primary_key())
                .col(big_integer("created_at"))
                .col(big_integer("updated_at"))
                .to_owned(),
        )
        .await?;
        pair_table(m, "ddm_set_members", "set_name", "identifier", &[]).await?;
        pair_table(
            m,
            "ddm_assignments",
            "enrollment_id",
            "set_name",
            &["created_at"],
        )
        .await?;
        // Per enrollment: the DeclarationsToken last announced to it (a queued sync), and when its device
        // last fetched its tokens or manifest and last reported status.
        m.create_table(
            Table::create()
                .table("ddm_enrollments")
                .col(string("enrollment_id").primary_key())
                .col(string_null("announced_token"))
                .col(big_integer_null("announced_at"))
                .col(string_null("synced_token"))
                .col(big_integer_null("synced_at"))
                .col(big_integer_null("status_at"))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("ddm_declaration_status")
                .col(string("enrollment_id"))
                .col(string("identifier"))
                .col(string("category"))
                .col(boolean("active"))
                .col(string("valid"))
                .col(string("server_token"))
                .col(text("reasons"))
                .col(big_integer("reported_at"))
                .primary_key(Index::create().col("enrollment_id").col("identifier"))
                .to_owned(),
        )
        .await?;
        index(m, "ddm_declaration_status", "identifier").await?;
        m.create_table(
            Table::create()
                .table("ddm_status_items")
                .col(string("enrollment_id"))
                .col(string("name"))
                .col(text("value"))
                .col(big_integer("reported_at"))
                .primary_key(Index::create().col("enrollment_id").col("name"))
                .to_owned(),
        )
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in TABLES.iter().rev() {
            m.drop_table(Table::drop().table(*t).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}

/// A table of (first, second) pairs keyed by both, with an index for lookups by the second.
async fn pair_table(
    m: &SchemaManager<'_>,
    table: &'static str,
    first: &'static str,
    second: &'static str,
    times: &[&'static str],
) -> Result<(), DbErr> {
    let mut t = Table::create();
    t.table(table).col(string(first)).col(string(second));
    for time in times {
        t.col(big_integer(*time));
    }
    t.primary_key(Index::create().col(first).col(second));
    m.create_table(t.to_owned()).await?;
    index(m, table, second).await
}

async fn index(m: &SchemaManager<'_>, table: &'static str, col: &'static str) -> Result<(), DbErr> {
    m.create_index(
        Index::create()
            .name(format!("idx_{table}_{col}"))
            .table(table)
            .col(col)
            .to_owned(),
    )
    .await
}
