//! Each plugin's private key-value store. Compare-and-swap is one conditional statement, so it is atomic on
//! both databases without a transaction. Expired entries read as absent.

use super::entities::plugin_kv::{ActiveModel, Column, Entity};
use super::point_reads::PointRead;
use super::StorageResult;
use super::Writes;
use sea_orm::sea_query::{Expr, ExprTrait, Func, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, QueryTrait,
};

fn live(now: i64) -> Condition {
    Condition::any()
        .add(Column::ExpiresAt.is_null())
        .add(Column::ExpiresAt.gt(now))
}

fn this(plugin: &str, key: &str) -> Condition {
    Condition::all()
        .add(Column::PluginId.eq(plugin))
        .add(Column::Key.eq(key))
}

/// A point read: plugins read keys on check-ins.
pub async fn get<R: PointRead>(
    r: &R,
    plugin: &str,
    key: &str,
    now: i64,
) -> StorageResult<Option<Vec<u8>>> {
    let q = Entity::find()
        .select_only()
        .column(Column::Value)
        .filter(this(plugin, key))
        .filter(live(now))
        .limit(1)
        .into_query();
    r.one(&q, |row| row.get("value")).await
}

/// Live keys the plugin holds.
pub async fn count<C: ConnectionTrait>(c: &C, plugin: &str, now: i64) -> StorageResult<u64> {
    Ok(Entity::find()
        .filter(Column::PluginId.eq(plugin))
        .filter(live(now))
        .count(c)
        .await?)
}

pub async fn set<W: Writes>(
    c: &W,
    plugin: &str,
    key: &str,
    value: Vec<u8>,
    expires_at: Option<i64>,
    now: i64,
) -> StorageResult<()> {
    let c = c.connection();
    Entity::insert(ActiveModel {
        plugin_id: Set(plugin.to_string()),
        key: Set(key.to_string()),
        value: Set(value),
        expires_at: Set(expires_at),
        updated_at: Set(now),
    })
    .on_conflict(
        OnConflict::columns([Column::PluginId, Column::Key])
            .update_columns([Column::Value, Column::ExpiresAt, Column::UpdatedAt])
            .to_owned(),
    )
    .exec_without_returning(c)
    .await?;
    Ok(())
}

/// True when a live entry was deleted.
pub async fn delete<W: Writes>(c: &W, plugin: &str, key: &str, now: i64) -> StorageResult<bool>
where
    W::Connection: PointRead,
{
    let c = c.connection();
    let existed = get(c, plugin, key, now).await?.is_some();
    Entity::delete_many()
        .filter(this(plugin, key))
        .exec(c)
        .await?;
    Ok(existed)
}

/// Set `key` to `new` only if it currently holds `expected` (None: only if absent or expired).
pub async fn compare_and_swap<W: Writes>(
    c: &W,
    plugin: &str,
    key: &str,
    expected: Option<Vec<u8>>,
    new: Vec<u8>,
    expires_at: Option<i64>,
    now: i64,
) -> StorageResult<bool> {
    let c = c.connection();
    match expected {
        None => {
            // An expired entry counts as absent: clear it so the insert can win.
            Entity::delete_many()
                .filter(this(plugin, key))
                .filter(Column::ExpiresAt.lte(now))
                .exec(c)
                .await?;
            let inserted = Entity::insert(ActiveModel {
                plugin_id: Set(plugin.to_string()),
                key: Set(key.to_string()),
                value: Set(new),
                expires_at: Set(expires_at),
                updated_at: Set(now),
            })
            .on_conflict(
                OnConflict::columns([Column::PluginId, Column::Key])
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(c)
            .await?;
            Ok(inserted == 1)
        }
        Some(old) => Ok(Entity::update_many()
            .col_expr(Column::Value, Expr::value(new))
            .col_expr(Column::ExpiresAt, Expr::value(expires_at))
            .col_expr(Column::UpdatedAt, Expr::value(now))
            .filter(this(plugin, key))
            .filter(Column::Value.eq(old))
            .filter(live(now))
            .exec(c)
            .await?
            .rows_affected
            == 1),
    }
}

/// Live keys starting with `prefix`, in order, after `start_after` when given. The prefix test is an exact
/// `substr` comparison: LIKE folds ASCII case on SQLite, which would let other keys take up a page.
pub async fn list_keys<C: ConnectionTrait>(
    c: &C,
    plugin: &str,
    prefix: &str,
    start_after: Option<&str>,
    limit: u64,
    now: i64,
) -> StorageResult<Vec<String>> {
    let mut q = Entity::find()
        .select_only()
        .column(Column::Key)
        .filter(Column::PluginId.eq(plugin))
        .filter(live(now));
    if !prefix.is_empty() {
        let head = Func::cust("substr")
            .arg(Expr::col(Column::Key))
            .arg(1)
            .arg(prefix.chars().count() as i32);
        q = q.filter(Expr::expr(head).eq(prefix));
    }
    if let Some(after) = start_after {
        q = q.filter(Column::Key.gt(after));
    }
    Ok(q.order_by_asc(Column::Key)
        .limit(limit)
        .into_tuple()
        .all(c)
        .await?)
}

/// Drop expired entries (housekeeping).
pub async fn purge_expired<C: ConnectionTrait>(c: &C, now: i64) -> StorageResult<u64> {
    Ok(Entity::delete_many()
        .filter(Column::ExpiresAt.lte(now))
        .exec(c)
        .await?
        .rows_affected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::testing::test_databases;

    #[tokio::test]
    async fn cas_ttl_quota_inputs_and_prefixes() {
        for tdb in test_databases().await {
            let s = tdb.storage().await.unwrap();
            let db = s.db();
            // CAS on absent: exactly one claimant wins.
            assert!(compare_and_swap(db, "p", "k", None, b"1".to_vec(), None, 0)
                .await
                .unwrap());
            assert!(
                !compare_and_swap(db, "p", "k", None, b"2".to_vec(), None, 0)
                    .await
                    .unwrap()
            );
            // CAS on a value: only with the right expectation.
            assert!(
                !compare_and_swap(db, "p", "k", Some(b"x".to_vec()), b"3".to_vec(), None, 0)
                    .await
                    .unwrap()
            );
            assert!(
                compare_and_swap(db, "p", "k", Some(b"1".to_vec()), b"3".to_vec(), None, 0)
                    .await
                    .unwrap()
            );
            assert_eq!(get(db, "p", "k", 0).await.unwrap(), Some(b"3".to_vec()));
            // Keys are per plugin.
            assert_eq!(get(db, "q", "k", 0).await.unwrap(), None);
            // TTL: expired entries read as absent and can be claimed again.
            set(db, "p", "t", b"v".to_vec(), Some(100), 0)
                .await
                .unwrap();
            assert!(get(db, "p", "t", 99).await.unwrap().is_some());
            assert!(get(db, "p", "t", 100).await.unwrap().is_none());
            assert!(
                compare_and_swap(db, "p", "t", None, b"n".to_vec(), None, 150)
                    .await
                    .unwrap()
            );
            // Prefix listing treats LIKE wildcards literally.
            for k in ["a_1", "ab1", "a%2", "a_2"] {
                set(db, "p", k, vec![], None, 0).await.unwrap();
            }
            assert_eq!(
                list_keys(db, "p", "a_", None, 10, 0).await.unwrap(),
                vec!["a_1", "a_2"]
            );
            assert_eq!(
                list_keys(db, "p", "a%", None, 10, 0).await.unwrap(),
                vec!["a%2"]
            );
            assert_eq!(list_keys(db, "p", "a", None, 2, 0).await.unwrap().len(), 2);
            // Case matters: upper-case keys neither match nor take up a page.
            for k in ["A_1", "A_2", "A_3"] {
                set(db, "p", k, vec![], None, 0).await.unwrap();
            }
            assert_eq!(
                list_keys(db, "p", "a_", None, 2, 0).await.unwrap(),
                vec!["a_1", "a_2"]
            );
            assert_eq!(
                list_keys(db, "p", "A_", None, 10, 0).await.unwrap(),
                vec!["A_1", "A_2", "A_3"]
            );
            for k in ["A_1", "A_2", "A_3"] {
                delete(db, "p", k, 0).await.unwrap();
            }
            // Paging: after the last key of a page comes the rest.
            let first = list_keys(db, "p", "a", None, 2, 0).await.unwrap();
            let rest = list_keys(db, "p", "a", first.last().map(String::as_str), 10, 0)
                .await
                .unwrap();
            assert_eq!(first.len() + rest.len(), 4);
            assert!(rest.iter().all(|k| !first.contains(k)));
            assert_eq!(count(db, "p", 0).await.unwrap(), 6);
            assert!(delete(db, "p", "k", 0).await.unwrap());
            assert!(!delete(db, "p", "k", 0).await.unwrap());
            assert_eq!(
                purge_expired(db, 1000).await.unwrap(),
                0,
                "t was replaced without expiry"
            );
            tdb.cleanup().await;
        }
    }
}
