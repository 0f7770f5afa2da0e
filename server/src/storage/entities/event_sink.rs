use sea_orm::entity::prelude::*;

/// An event sink an admin created through the API.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "event_sinks")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub name: String,
    /// The URL and headers, as JSON, sealed (`storage::sealing::seal_value`).
    pub secret: Vec<u8>,
    /// The URL without credentials, query or fragment, to list.
    pub url_redacted: String,
    /// The names of the headers sent (JSON array), to list.
    pub header_names: String,
    pub timeout_secs: i64,
    pub batch_max_events: i64,
    /// The API key that wrote it last.
    pub updated_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
