//! Events carry a globally unique id (`X-MDM-Event-Id`, what receivers drop repeats by): the row id
//! repeats after a database is reset or restored, a random UUID does not. Rows written before keep their
//! row id as their event id.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

pub struct M0014EventIds;

impl MigrationName for M0014EventIds {
    fn name(&self) -> &str {
        "m0014_event_ids"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0014EventIds {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table("event_outbox")
                .add_column(string_null("event_id"))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table("event_outbox")
                .drop_column("event_id")
                .to_owned(),
        )
        .await
    }
}
