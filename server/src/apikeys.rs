//! Admin API keys: random 256-bit secrets shown once, stored as SHA-256, each with scopes.
//! A fast hash is right here: the keys are random, not passwords, so there is nothing to brute-force.

use crate::storage::api_keys::{self, ApiKey};
use crate::storage::{Storage, StorageError};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};

const KEY_PREFIX: &str = "mdm_";

/// What a key may do. `admin` implies every other scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum Scope {
    #[serde(rename = "devices:read")]
    DevicesRead,
    #[serde(rename = "commands:read")]
    CommandsRead,
    #[serde(rename = "commands:write")]
    CommandsWrite,
    /// Enrollment tokens and SCEP challenges (for a provisioning system).
    #[serde(rename = "enroll")]
    Enroll,
    /// Declarations, sets and their assignments (Declarative Device Management).
    #[serde(rename = "ddm:write")]
    DdmWrite,
    /// Device groups and their static members.
    #[serde(rename = "groups:write")]
    GroupsWrite,
    /// Policies and their versions.
    #[serde(rename = "policies:write")]
    PoliciesWrite,
    #[serde(rename = "admin")]
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 8] = [
        Scope::DevicesRead,
        Scope::CommandsRead,
        Scope::CommandsWrite,
        Scope::Enroll,
        Scope::DdmWrite,
        Scope::GroupsWrite,
        Scope::PoliciesWrite,
        Scope::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::DevicesRead => "devices:read",
            Scope::CommandsRead => "commands:read",
            Scope::CommandsWrite => "commands:write",
            Scope::Enroll => "enroll",
            Scope::DdmWrite => "ddm:write",
            Scope::GroupsWrite => "groups:write",
            Scope::PoliciesWrite => "policies:write",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

impl std::str::FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::parse(s).ok_or_else(|| {
            let names: Vec<_> = Scope::ALL.iter().map(|s| s.as_str()).collect();
            format!("unknown scope {s:?} (one of {})", names.join(", "))
        })
    }
}

/// A key that authenticated, with its scopes.
#[derive(Debug, Clone)]
pub struct Principal {
    pub key_id: String,
    pub name: String,
    pub scopes: Vec<Scope>,
}

impl Principal {
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&Scope::Admin) || self.scopes.contains(&scope)
    }
}

fn hash(key: &str) -> String {
    hex::encode(openssl::sha::sha256(key.as_bytes()))
}

/// Create a key. Returns the stored record and the secret, which exists nowhere else.
pub async fn create(
    storage: &Storage,
    name: &str,
    scopes: &[Scope],
    now: i64,
) -> Result<(ApiKey, String), StorageError> {
    let mut secret = [0u8; 32];
    openssl::rand::rand_bytes(&mut secret).map_err(|e| StorageError::Conflict(e.to_string()))?;
    let key = format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(secret));
    let mut scopes: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
    scopes.sort();
    scopes.dedup();
    let record = ApiKey {
        id: uuid::Uuid::new_v4().to_string(),
        name: name.to_string(),
        key_hash: hash(&key),
        prefix: key[..KEY_PREFIX.len() + 6].to_string(),
        scopes: scopes.join(" "),
        created_at: now,
        last_used_at: None,
        revoked_at: None,
    };
    api_keys::insert(storage, record.clone()).await?;
    Ok((record, key))
}

/// The principal for a presented key, or None when it is unknown or revoked.
pub async fn authenticate(
    storage: &Storage,
    presented: &str,
    now: i64,
) -> Result<Option<Principal>, StorageError> {
    if !presented.starts_with(KEY_PREFIX) || presented.len() > 200 {
        return Ok(None);
    }
    let Some(rec) = api_keys::find_active_by_hash(&storage.read(), &hash(presented)).await? else {
        return Ok(None);
    };
    // Recording use is informative only; never fail a request over it.
    if rec.last_used_at.is_none_or(|t| now - t > 60_000) {
        let _ = api_keys::touch(storage, &rec.id, now).await;
    }
    Ok(Some(principal(&rec)))
}

pub fn principal(rec: &ApiKey) -> Principal {
    Principal {
        key_id: rec.id.clone(),
        name: rec.name.clone(),
        scopes: rec
            .scopes
            .split_whitespace()
            .filter_map(Scope::parse)
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::testing::test_databases;

    #[tokio::test]
    async fn keys_authenticate_until_revoked() {
        for tdb in test_databases().await {
            let s = tdb.storage().await.unwrap();
            let (rec, key) = create(&s, "ci", &[Scope::DevicesRead], 1).await.unwrap();
            assert!(key.starts_with("mdm_"));
            assert_ne!(rec.key_hash, key, "{}: the secret is not stored", tdb.label);
            let p = authenticate(&s, &key, 2).await.unwrap().unwrap();
            assert!(p.has(Scope::DevicesRead));
            assert!(!p.has(Scope::CommandsWrite));
            assert!(authenticate(&s, "mdm_wrong", 2).await.unwrap().is_none());
            assert!(api_keys::revoke(&s, &rec.id, 3).await.unwrap());
            assert!(authenticate(&s, &key, 4).await.unwrap().is_none());
            tdb.cleanup().await;
        }
    }

    #[test]
    fn admin_implies_everything() {
        let p = Principal {
            key_id: "k".into(),
            name: "n".into(),
            scopes: vec![Scope::Admin],
        };
        assert!(Scope::ALL.iter().all(|s| p.has(*s)));
    }
}
