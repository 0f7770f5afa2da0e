//! Event sinks an admin manages through the API (`event_sinks`). A sink's URL and headers (credentials,
//! tokens) are sealed together at rest, bound to the sink's name; the clear columns are what is listed.

use super::entities::event_sink::{ActiveModel, Column, Entity};
use super::sealing::{open_value, seal_value};
use super::StorageResult;
use crate::config::SinkConfig;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, ConnectionTrait, EntityTrait, QueryOrder};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use super::entities::event_sink::Model as StoredSink;

/// What is sealed: where the sink posts and what it sends.
#[derive(Serialize, Deserialize)]
struct Sealed {
    url: String,
    headers: BTreeMap<String, String>,
}

/// The sealed column is bound to the sink's name: a row's secret cannot be moved to another sink.
fn context(name: &str) -> String {
    format!("event_sinks.secret:{name}")
}

/// Every stored sink, by name.
pub async fn list<C: ConnectionTrait>(c: &C) -> StorageResult<Vec<StoredSink>> {
    Ok(Entity::find().order_by_asc(Column::Name).all(c).await?)
}

/// Create or replace a sink; whether it was created.
pub async fn put<C: ConnectionTrait>(
    c: &C,
    name: &str,
    sink: &SinkConfig,
    by: &str,
    now: i64,
) -> StorageResult<bool> {
    let sealed = Sealed {
        url: sink.url.expose_secret().to_string(),
        headers: sink
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.expose_secret().to_string()))
            .collect(),
    };
    let json =
        serde_json::to_vec(&sealed).map_err(|e| super::StorageError::Corrupt(e.to_string()))?;
    let existed = Entity::find_by_id(name.to_string()).one(c).await?.is_some();
    let header_names: Vec<&String> = sink.headers.keys().collect();
    let row = ActiveModel {
        name: Set(name.to_string()),
        secret: Set(seal_value(&context(name), &json)?),
        url_redacted: Set(sink.url.redacted()),
        header_names: Set(serde_json::json!(header_names).to_string()),
        timeout_secs: Set(sink.timeout_secs as i64),
        batch_max_events: Set(sink.batch_max_events as i64),
        updated_by: Set(by.to_string()),
        created_at: Set(now),
        updated_at: Set(now),
    };
    Entity::insert(row)
        .on_conflict(
            OnConflict::column(Column::Name)
                .update_columns([
                    Column::Secret,
                    Column::UrlRedacted,
                    Column::HeaderNames,
                    Column::TimeoutSecs,
                    Column::BatchMaxEvents,
                    Column::UpdatedBy,
                    Column::UpdatedAt,
                ])
                .to_owned(),
        )
        .exec_without_returning(c)
        .await?;
    Ok(!existed)
}

/// Remove a sink; whether there was one.
pub async fn delete<C: ConnectionTrait>(c: &C, name: &str) -> StorageResult<bool> {
    Ok(Entity::delete_by_id(name.to_string())
        .exec(c)
        .await?
        .rows_affected
        > 0)
}

/// A stored sink as delivery uses it, or why it cannot be opened (its sealing key is gone, or the row
/// was altered); never its secrets.
pub fn open(row: &StoredSink) -> Result<SinkConfig, String> {
    let bytes = open_value(&context(&row.name), &row.secret)?;
    let sealed: Sealed = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    Ok(SinkConfig {
        url: sealed.url.into(),
        headers: sealed
            .headers
            .into_iter()
            .map(|(k, v)| (k, SecretString::from(v)))
            .collect(),
        timeout_secs: u64::try_from(row.timeout_secs).unwrap_or(1),
        batch_max_events: usize::try_from(row.batch_max_events).unwrap_or(1),
    })
}

/// The names of the headers a stored sink sends.
pub fn header_names(row: &StoredSink) -> Vec<String> {
    serde_json::from_str(&row.header_names).unwrap_or_default()
}
