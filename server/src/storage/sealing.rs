//! Escrowed device tokens sealed at rest: a device's UnlockToken (clears its passcode) and BootstrapToken
//! (unlocks a Mac's FileVault/secure token) are as good as the device's passcode, so a copy of the database
//! must not reveal them. The device repository seals them as it writes them and opens them as it reads
//! them, so callers handle plain bytes.
//!
//! Stored form: [`SEALED_PREFIX`] (8 bytes) `||` key id (8 bytes, [`KeySealer::key_id`]) `||` the sealed
//! value (AES-256-GCM, `push::seal` format) bound to its row and column, under a key derived from
//! `push.key_secret` for this purpose only. A stored value without the prefix is a token written in clear
//! by an earlier version: it is read as it is until [`seal_clear_tokens`] (run at every start) seals it.
//!
//! The sealer is process-wide (the repository functions take any connection, not a `Storage`): the server
//! installs it at start ([`install`]), before it serves. A process serves one deployment; test processes
//! run several servers, so every key installed stays able to open what it sealed, and the last installed
//! seals. Writing a token with no sealer installed is refused rather than stored in clear.

use super::entities::device::{Column, Entity};
use super::Writes;
use super::{StorageError, StorageResult};
use crate::push::seal::{KeySealer, SealError};
use sea_orm::sea_query::{Expr, ExprTrait, Func};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};
use std::sync::{Arc, RwLock};

/// HKDF info of the key that seals escrowed tokens: not the push keys' key.
const PURPOSE: &[u8] = b"mdm-server/storage/escrowed-tokens v1 AES-256-GCM";

/// Starts every sealed token. Apple's UnlockTokens are keybags (`DATA`/`VERS` records) and a
/// BootstrapToken is opaque bytes a Mac chose; one starting with these 8 bytes (NUL first) is not expected.
pub const SEALED_PREFIX: &[u8; 8] = b"\0mdmtok1";
const KEY_ID_LEN: usize = 8;

/// Sealers installed in this process; the last one seals.
static SEALERS: RwLock<Vec<Arc<KeySealer>>> = RwLock::new(Vec::new());

/// Which escrowed token: each is bound to its column, so one cannot be moved into the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token {
    Unlock,
    Bootstrap,
}

impl Token {
    fn column(self) -> Column {
        match self {
            Self::Unlock => Column::UnlockToken,
            Self::Bootstrap => Column::BootstrapToken,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Unlock => "unlock_token",
            Self::Bootstrap => "bootstrap_token",
        }
    }

    /// The associated data a token is sealed under: its column and device.
    fn context(self, device_id: &str) -> Vec<u8> {
        format!("devices.{}:{device_id}", self.name()).into_bytes()
    }
}

/// Make the key derived from `secret` the one tokens are sealed with (and keep it for opening).
pub fn install(secret: &str) -> Result<(), SealError> {
    let sealer = Arc::new(KeySealer::for_purpose(secret, PURPOSE)?);
    let mut all = SEALERS.write().unwrap_or_else(|p| p.into_inner());
    all.retain(|s| s.key_id() != sealer.key_id());
    all.push(sealer);
    Ok(())
}

/// [`install`], then [`seal_clear_tokens`]: what the server runs at start.
pub async fn install_and_seal<W: Writes>(c: &W, secret: &str) -> StorageResult<u64> {
    let c = c.connection();
    install(secret).map_err(|e| StorageError::Unavailable(format!("token sealing: {e}")))?;
    let sealed = seal_clear_tokens(c).await?;
    if sealed > 0 {
        tracing::info!(
            sealed,
            "sealed escrowed tokens stored in clear by an earlier version"
        );
    }
    Ok(sealed)
}

fn current() -> Option<Arc<KeySealer>> {
    SEALERS
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .last()
        .cloned()
}

fn by_id(id: &[u8]) -> Option<Arc<KeySealer>> {
    SEALERS
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .find(|s| s.key_id() == id)
        .cloned()
}

fn is_sealed(stored: &[u8]) -> bool {
    stored.starts_with(SEALED_PREFIX)
}

/// The stored form of `token` for `device_id`'s `which` column.
pub fn seal(which: Token, device_id: &str, token: &[u8]) -> StorageResult<Vec<u8>> {
    seal_bound(&which.context(device_id), token).map_err(|_| {
        StorageError::Unavailable(
            "escrowed tokens cannot be stored: no sealing secret is installed".into(),
        )
    })
}

/// The token stored in `device_id`'s `which` column. A value that cannot be opened (its key is not
/// installed, the secret changed, or it was altered or moved) is logged, without its bytes, and read as
/// absent: the device then has no escrowed token, and its check-ins go on.
pub fn open(which: Token, device_id: &str, stored: Vec<u8>) -> Option<Vec<u8>> {
    if !is_sealed(&stored) {
        return Some(stored);
    }
    match open_bound(&which.context(device_id), &stored) {
        Ok(token) => Some(token),
        Err(reason) => {
            tracing::error!(device = device_id, column = which.name(), %reason, "cannot open an escrowed token; treating it as absent");
            None
        }
    }
}

/// Any other secret kept in the database (an event sink's URL and headers): sealed as tokens are, bound to
/// `context` (its table, column and row) so it cannot be moved to another row. Refused with no sealer
/// installed.
pub fn seal_value(context: &str, value: &[u8]) -> StorageResult<Vec<u8>> {
    seal_bound(context.as_bytes(), value).map_err(|_| {
        StorageError::Unavailable("secrets cannot be stored: no sealing secret is installed".into())
    })
}

/// A value [`seal_value`] sealed under `context`, or why it cannot be opened (never its bytes).
pub fn open_value(context: &str, stored: &[u8]) -> Result<Vec<u8>, String> {
    if !is_sealed(stored) {
        return Err("not sealed".into());
    }
    open_bound(context.as_bytes(), stored)
}

fn seal_bound(context: &[u8], value: &[u8]) -> Result<Vec<u8>, ()> {
    let sealer = current().ok_or(())?;
    let mut out = Vec::with_capacity(SEALED_PREFIX.len() + KEY_ID_LEN + value.len() + 29);
    out.extend_from_slice(SEALED_PREFIX);
    out.extend_from_slice(&sealer.key_id());
    out.extend_from_slice(&sealer.seal_bound(value, context));
    Ok(out)
}

fn open_bound(context: &[u8], stored: &[u8]) -> Result<Vec<u8>, String> {
    let rest = &stored[SEALED_PREFIX.len()..];
    match rest.split_at_checked(KEY_ID_LEN) {
        None => Err("truncated".to_string()),
        Some((id, sealed)) => match by_id(id) {
            None => Err(
                "sealed under a key that is not installed (was push.key_secret changed?)".into(),
            ),
            Some(sealer) => sealer
                .open_bound(sealed, context)
                .map_err(|e| e.to_string()),
        },
    }
}

/// A device's id and its two token columns as stored.
type TokenRow = (String, Option<Vec<u8>>, Option<Vec<u8>>);

/// Devices' tokens read per round of [`seal_clear_tokens`].
const PAGE: u64 = 200;

/// Seal every token still stored in clear (written by a version before sealing). Each is replaced only if
/// it still holds the clear value read, so a token a device sends meanwhile is not overwritten; on several
/// replicas each may run it at once. Returns how many values it sealed.
pub async fn seal_clear_tokens<C: ConnectionTrait>(c: &C) -> StorageResult<u64> {
    // substr() works on SQLite blobs and PostgreSQL bytea alike.
    let clear = |which: Token| {
        Condition::all().add(which.column().is_not_null()).add(
            Expr::expr(
                Func::cust("substr")
                    .arg(Expr::col(which.column()))
                    .arg(1)
                    .arg(SEALED_PREFIX.len() as i32),
            )
            .ne(SEALED_PREFIX.to_vec()),
        )
    };
    let mut sealed = 0;
    let mut after = String::new();
    loop {
        let rows: Vec<TokenRow> = Entity::find()
            .select_only()
            .column(Column::Id)
            .column(Column::UnlockToken)
            .column(Column::BootstrapToken)
            .filter(Column::Id.gt(after.as_str()))
            .filter(
                Condition::any()
                    .add(clear(Token::Unlock))
                    .add(clear(Token::Bootstrap)),
            )
            .order_by_asc(Column::Id)
            .limit(PAGE)
            .into_tuple()
            .all(c)
            .await?;
        let Some(last) = rows.last() else {
            return Ok(sealed);
        };
        after = last.0.clone();
        for (id, unlock, bootstrap) in rows {
            for (which, value) in [(Token::Unlock, unlock), (Token::Bootstrap, bootstrap)] {
                let Some(value) = value.filter(|v| !is_sealed(v)) else {
                    continue;
                };
                let res = Entity::update_many()
                    .col_expr(which.column(), Expr::value(seal(which, &id, &value)?))
                    .filter(Column::Id.eq(id.as_str()))
                    .filter(which.column().eq(value))
                    .exec(c)
                    .await?;
                sealed += res.rows_affected;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::devices;
    use crate::storage::entities::device;
    use crate::storage::testing::{authenticated_device, test_databases};

    const SECRET: &str = "test-secret-of-sufficient-length";

    /// The raw stored bytes of a device's two token columns.
    async fn stored<C: ConnectionTrait>(c: &C, id: &str) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
        let m = device::Entity::find_by_id(id.to_string())
            .one(c)
            .await
            .unwrap()
            .unwrap();
        (m.unlock_token, m.bootstrap_token)
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    /// What the repository writes is sealed (the token's bytes are nowhere in the row) and reads back as
    /// the token; a sealed value moved to another device or column does not open.
    #[tokio::test]
    async fn escrowed_tokens_are_sealed_at_rest_and_read_in_clear() {
        install(SECRET).unwrap();
        for tdb in test_databases().await {
            let s = tdb.storage().await.unwrap();
            let db = s.db();
            for id in ["D1", "D2"] {
                authenticated_device(db, id, &format!("fp-{id}"), Default::default(), 1)
                    .await
                    .unwrap();
            }
            let unlock = b"DATA\0\0\0\x04VERS-unlock-token-bytes".to_vec();
            let bootstrap = b"bootstrap-token-bytes".to_vec();
            devices::set_unlock_token(db, "D1", unlock.clone(), 2)
                .await
                .unwrap();
            devices::set_bootstrap_token(db, "D1", Some(bootstrap.clone()), 2)
                .await
                .unwrap();
            let (u, b) = stored(db, "D1").await;
            let (u, b) = (u.unwrap(), b.unwrap());
            assert!(u.starts_with(SEALED_PREFIX) && b.starts_with(SEALED_PREFIX));
            assert!(!contains(&u, b"unlock-token-bytes"), "{}", tdb.label);
            assert!(!contains(&b, b"bootstrap-token-bytes"), "{}", tdb.label);
            let d = devices::find(db, "D1").await.unwrap().unwrap();
            assert_eq!(
                d.unlock_token.as_deref(),
                Some(&unlock[..]),
                "{}",
                tdb.label
            );
            assert_eq!(d.bootstrap_token.as_deref(), Some(&bootstrap[..]));
            // Every reader opens them.
            let by_fp = devices::find_by_fingerprint(db, "fp-D1")
                .await
                .unwrap()
                .unwrap();
            assert_eq!(by_fp.unlock_token.as_deref(), Some(&unlock[..]));
            let listed = devices::list(
                db,
                &devices::DeviceFilter {
                    limit: 10,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
            assert_eq!(listed[0].bootstrap_token.as_deref(), Some(&bootstrap[..]));

            // D1's sealed UnlockToken copied into D2's row, and into D1's other column: neither opens.
            device::Entity::update_many()
                .col_expr(Column::UnlockToken, Expr::value(u.clone()))
                .filter(Column::Id.eq("D2"))
                .exec(db)
                .await
                .unwrap();
            device::Entity::update_many()
                .col_expr(Column::BootstrapToken, Expr::value(u.clone()))
                .filter(Column::Id.eq("D1"))
                .exec(db)
                .await
                .unwrap();
            assert_eq!(
                devices::find(db, "D2").await.unwrap().unwrap().unlock_token,
                None
            );
            assert_eq!(
                devices::find(db, "D1")
                    .await
                    .unwrap()
                    .unwrap()
                    .bootstrap_token,
                None
            );
            tdb.cleanup().await;
        }
    }

    /// Tokens an earlier version stored in clear are read as they are, and sealed at the next start
    /// (only those: sealed ones and absent ones are left alone).
    #[tokio::test]
    async fn tokens_stored_in_clear_are_sealed_at_start() {
        install(SECRET).unwrap();
        for tdb in test_databases().await {
            let s = tdb.storage().await.unwrap();
            let db = s.db();
            for id in ["A", "B", "C"] {
                authenticated_device(db, id, &format!("fp-{id}"), Default::default(), 1)
                    .await
                    .unwrap();
            }
            // As an earlier version wrote them: in clear.
            let legacy_unlock = b"legacy-unlock".to_vec();
            let legacy_bootstrap = b"legacy-bootstrap".to_vec();
            device::Entity::update_many()
                .col_expr(Column::UnlockToken, Expr::value(legacy_unlock.clone()))
                .col_expr(
                    Column::BootstrapToken,
                    Expr::value(legacy_bootstrap.clone()),
                )
                .filter(Column::Id.eq("A"))
                .exec(db)
                .await
                .unwrap();
            device::Entity::update_many()
                .col_expr(Column::BootstrapToken, Expr::value(b"short".to_vec()))
                .filter(Column::Id.eq("C"))
                .exec(db)
                .await
                .unwrap();
            devices::set_unlock_token(db, "B", b"already-sealed".to_vec(), 2)
                .await
                .unwrap();
            let b_before = stored(db, "B").await;

            let a = devices::find(db, "A").await.unwrap().unwrap();
            assert_eq!(
                a.unlock_token.as_deref(),
                Some(&legacy_unlock[..]),
                "read before sealing"
            );

            assert_eq!(
                install_and_seal(db, SECRET).await.unwrap(),
                3,
                "{}",
                tdb.label
            );
            let (u, b) = stored(db, "A").await;
            assert!(u.unwrap().starts_with(SEALED_PREFIX), "{}", tdb.label);
            assert!(b.unwrap().starts_with(SEALED_PREFIX));
            assert!(stored(db, "C").await.1.unwrap().starts_with(SEALED_PREFIX));
            assert_eq!(
                stored(db, "B").await,
                b_before,
                "a sealed token is left as it is"
            );
            let a = devices::find(db, "A").await.unwrap().unwrap();
            assert_eq!(a.unlock_token, Some(legacy_unlock));
            assert_eq!(a.bootstrap_token, Some(legacy_bootstrap));
            let c = devices::find(db, "C").await.unwrap().unwrap();
            assert_eq!(c.bootstrap_token.as_deref(), Some(&b"short"[..]));
            // Nothing left to seal.
            assert_eq!(seal_clear_tokens(db).await.unwrap(), 0);
            tdb.cleanup().await;
        }
    }
}
