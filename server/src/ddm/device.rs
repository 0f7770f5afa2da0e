//! The device's side: what a `DeclarativeManagement` check-in asks for (its tokens, its manifest, one of
//! its declarations) and what its status report changes. The check-in has already decided the sender
//! may act for the enrollment.

use super::effective::{self, Effective};
use super::DdmError;
use crate::protocol::ddm::{
    declaration_items_response, tokens_response, Category, Declaration, DeclarationStatus,
    StatusReport, MAX_IDENTIFIER_LEN,
};
use crate::storage::ddm::{assignments, declarations, status};
use crate::storage::{StorageResult, Writes};
use sea_orm::ConnectionTrait;
use std::collections::HashMap;

/// What the device asks for (`Endpoint`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Tokens,
    DeclarationItems,
    Declaration {
        category: Category,
        identifier: String,
    },
    Status,
}

impl Endpoint {
    pub fn parse(s: &str) -> Result<Self, DdmError> {
        match s {
            "tokens" => Ok(Self::Tokens),
            "declaration-items" => Ok(Self::DeclarationItems),
            "status" => Ok(Self::Status),
            _ => {
                let bad = || DdmError::BadRequest("unknown endpoint".into());
                let rest = s.strip_prefix("declaration/").ok_or_else(bad)?;
                let (category, identifier) = rest.split_once('/').ok_or_else(bad)?;
                let category = Category::parse(category).ok_or_else(bad)?;
                if identifier.is_empty() || identifier.len() > MAX_IDENTIFIER_LEN {
                    return Err(bad());
                }
                Ok(Self::Declaration {
                    category,
                    identifier: identifier.to_string(),
                })
            }
        }
    }
}

/// The enrollment's effective declarations, recorded as what its device now knows.
async fn synced<W: Writes>(w: &W, enrollment_id: &str, now: i64) -> StorageResult<Effective> {
    let e = effective::of_enrollment(w.connection(), enrollment_id).await?;
    status::set_synced(w, enrollment_id, &e.token, now).await?;
    Ok(e)
}

/// `tokens`: the SyncTokens.
pub async fn tokens<W: Writes>(w: &W, enrollment_id: &str, now: i64) -> StorageResult<Vec<u8>> {
    let e = synced(w, enrollment_id, now).await?;
    Ok(tokens_response(&e.token, now))
}

/// `declaration-items`: the manifest.
pub async fn declaration_items<W: Writes>(
    w: &W,
    enrollment_id: &str,
    now: i64,
) -> StorageResult<Vec<u8>> {
    let e = synced(w, enrollment_id, now).await?;
    Ok(declaration_items_response(&e.items, &e.token))
}

/// `declaration/<category>/<identifier>`: the declaration, only if it is in the enrollment's effective
/// set (None otherwise, as for one that does not exist: a device never learns another's declarations).
pub async fn declaration<C: ConnectionTrait>(
    c: &C,
    enrollment_id: &str,
    category: Category,
    identifier: &str,
) -> Result<Option<Vec<u8>>, DdmError> {
    let Some(d) = declarations::get(c, identifier).await? else {
        return Ok(None);
    };
    if d.category != category.as_str() {
        return Ok(None);
    }
    if !d.builtin && !assignments::holds(c, enrollment_id, identifier).await? {
        return Ok(None);
    }
    let d = Declaration::from_stored(
        &d.identifier,
        &d.declaration_type,
        &d.payload,
        &d.server_token,
    )?;
    Ok(Some(d.to_device_json()))
}

/// A declaration's state as a device reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclarationState {
    pub active: bool,
    pub valid: String,
    pub server_token: String,
    /// JSON array.
    pub reasons: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclarationChange {
    pub identifier: String,
    pub category: Category,
    pub old: Option<DeclarationState>,
    pub new: DeclarationState,
}

/// A status item whose value changed; values are JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemChange {
    pub name: String,
    pub old: Option<String>,
    pub new: String,
}

/// What a report changes against what was stored: what plugins hear of.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusChanges {
    pub declarations: Vec<DeclarationChange>,
    pub items: Vec<ItemChange>,
}

impl StatusChanges {
    pub fn is_empty(&self) -> bool {
        self.declarations.is_empty() && self.items.is_empty()
    }
}

fn state_of(d: &DeclarationStatus) -> DeclarationState {
    DeclarationState {
        active: d.active,
        valid: d.valid.as_str().to_string(),
        server_token: d.server_token.clone(),
        reasons: serde_json::Value::Array(d.reasons.clone()).to_string(),
    }
}

/// Compare a report with what the enrollment's device reported before.
pub async fn changes<C: ConnectionTrait>(
    c: &C,
    enrollment_id: &str,
    report: &StatusReport,
) -> StorageResult<StatusChanges> {
    let before: HashMap<String, DeclarationState> = status::declarations(c, enrollment_id)
        .await?
        .into_iter()
        .map(|d| {
            let state = DeclarationState {
                active: d.active,
                valid: d.valid,
                server_token: d.server_token,
                reasons: d.reasons,
            };
            (d.identifier, state)
        })
        .collect();
    let items_before: HashMap<String, String> = status::items(c, enrollment_id)
        .await?
        .into_iter()
        .map(|i| (i.name, i.value))
        .collect();
    let declarations = report
        .declarations
        .iter()
        .filter_map(|d| {
            let new = state_of(d);
            let old = before.get(&d.identifier).cloned();
            (old.as_ref() != Some(&new)).then(|| DeclarationChange {
                identifier: d.identifier.clone(),
                category: d.category,
                old,
                new,
            })
        })
        .collect();
    let items = report
        .items
        .iter()
        .filter_map(|(name, value)| {
            let new = value.to_string();
            let old = items_before.get(name).cloned();
            (old.as_deref() != Some(new.as_str())).then(|| ItemChange {
                name: name.clone(),
                old,
                new,
            })
        })
        .collect();
    Ok(StatusChanges {
        declarations,
        items,
    })
}

/// Store a report for the enrollment.
pub async fn record<C: ConnectionTrait>(
    c: &C,
    enrollment_id: &str,
    report: &StatusReport,
    now: i64,
) -> StorageResult<()> {
    status::record_report(
        c,
        enrollment_id,
        &report.declarations,
        &report.items,
        report.full,
        now,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_and_anything_else_is_refused() {
        assert_eq!(Endpoint::parse("tokens").unwrap(), Endpoint::Tokens);
        assert_eq!(
            Endpoint::parse("declaration-items").unwrap(),
            Endpoint::DeclarationItems
        );
        assert_eq!(Endpoint::parse("status").unwrap(), Endpoint::Status);
        assert_eq!(
            Endpoint::parse("declaration/configuration/com.example.passcode").unwrap(),
            Endpoint::Declaration {
                category: Category::Configuration,
                identifier: "com.example.passcode".into()
            }
        );
        for bad in [
            "",
            "token",
            "declaration",
            "declaration/",
            "declaration/configuration",
            "declaration/configuration/",
            "declaration/profile/x",
            &format!("declaration/asset/{}", "x".repeat(MAX_IDENTIFIER_LEN + 1)),
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad:?}");
        }
    }
}
