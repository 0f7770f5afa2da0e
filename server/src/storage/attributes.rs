//! Device attributes (tags) that plugins set.

use super::entities::device_attribute::{ActiveModel, Column, Entity, Model};
use super::StorageResult;
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
};

pub use super::entities::device_attribute::Model as Attribute;

pub async fn set<C: ConnectionTrait>(
    c: &C,
    device_id: &str,
    key: &str,
    value: &str,
    plugin_id: &str,
    now: i64,
) -> StorageResult<()> {
    Entity::insert(ActiveModel {
        device_id: Set(device_id.to_string()),
        key: Set(key.to_string()),
        value: Set(value.to_string()),
        plugin_id: Set(plugin_id.to_string()),
        updated_at: Set(now),
    })
    .on_conflict(
        OnConflict::columns([Column::DeviceId, Column::Key])
            .update_columns([Column::Value, Column::PluginId, Column::UpdatedAt])
            .to_owned(),
    )
    .exec_without_returning(c)
    .await?;
    Ok(())
}

pub async fn clear<C: ConnectionTrait>(c: &C, device_id: &str, key: &str) -> StorageResult<bool> {
    Ok(Entity::delete_many()
        .filter(Column::DeviceId.eq(device_id))
        .filter(Column::Key.eq(key))
        .exec(c)
        .await?
        .rows_affected
        > 0)
}

pub async fn for_device<C: ConnectionTrait>(c: &C, device_id: &str) -> StorageResult<Vec<Model>> {
    Ok(Entity::find()
        .filter(Column::DeviceId.eq(device_id))
        .order_by_asc(Column::Key)
        .all(c)
        .await?)
}
