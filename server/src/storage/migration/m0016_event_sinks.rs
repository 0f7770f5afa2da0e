//! Event sinks an admin manages through the API (`/api/v1/sinks`), beside those of the configuration
//! file. Where a sink posts and the headers it sends are secrets: they are kept sealed in `secret`; the
//! clear columns are what the API lists.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

pub struct M0016EventSinks;

impl MigrationName for M0016EventSinks {
    fn name(&self) -> &str {
        "m0016_event_sinks"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0016EventSinks {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("event_sinks")
                .col(string("name").primary_key())
                .col(blob("secret"))
                .col(string("url_redacted"))
                .col(text("header_names"))
                .col(big_integer("timeout_secs"))
                .col(big_integer("batch_max_events"))
                .col(string("updated_by"))
                .col(big_integer("created_at"))
                .col(big_integer("updated_at"))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table("event_sinks").to_owned())
            .await
    }
}
