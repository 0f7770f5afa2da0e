//! What admins read: one enrollment's DDM picture, and how one declaration stands across the fleet.

use super::effective;
use super::DdmError;
use crate::storage::ddm::{assignments, declarations, status};
use sea_orm::ConnectionTrait;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// One effective declaration and what the device last said of it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeclarationView {
    pub identifier: String,
    /// activation, asset, configuration or management.
    pub category: String,
    pub server_token: String,
    /// Whether the device last reported this declaration at its current ServerToken.
    pub current: bool,
    pub active: Option<bool>,
    /// valid, invalid or unknown, as the device reported.
    pub valid: Option<String>,
    #[schema(value_type = Vec<Object>)]
    pub reasons: Vec<serde_json::Value>,
    /// Unix milliseconds.
    pub reported_at: Option<i64>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EnrollmentView {
    pub enrollment_id: String,
    pub sets: Vec<String>,
    pub declarations_token: String,
    pub declarations: Vec<DeclarationView>,
    /// Unix milliseconds: when the device last fetched its tokens or manifest.
    pub last_synced_at: Option<i64>,
    /// The DeclarationsToken the device last fetched.
    pub synced_token: Option<String>,
    pub last_status_at: Option<i64>,
    /// The latest value of each status item, with when it was reported (Unix milliseconds).
    pub status_items: BTreeMap<String, StatusItemView>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StatusItemView {
    #[schema(value_type = Object)]
    pub value: serde_json::Value,
    pub reported_at: i64,
}

fn reasons(json: &str) -> Vec<serde_json::Value> {
    serde_json::from_str(json).unwrap_or_default()
}

pub async fn enrollment<C: ConnectionTrait>(
    c: &C,
    enrollment_id: &str,
) -> Result<EnrollmentView, DdmError> {
    let effective = effective::of_enrollment(c, enrollment_id).await?;
    let reported: HashMap<String, status::ReportedDeclaration> =
        status::declarations(c, enrollment_id)
            .await?
            .into_iter()
            .map(|r| (r.identifier.clone(), r))
            .collect();
    let declarations = effective
        .items
        .iter()
        .map(|i| {
            let r = reported.get(&i.identifier);
            DeclarationView {
                identifier: i.identifier.clone(),
                category: i.category.as_str().to_string(),
                server_token: i.server_token.clone(),
                current: r.is_some_and(|r| r.server_token == i.server_token),
                active: r.map(|r| r.active),
                valid: r.map(|r| r.valid.clone()),
                reasons: r.map(|r| reasons(&r.reasons)).unwrap_or_default(),
                reported_at: r.map(|r| r.reported_at),
            }
        })
        .collect();
    let state = status::sync_state(c, enrollment_id).await?;
    let status_items = status::items(c, enrollment_id)
        .await?
        .into_iter()
        .map(|i| {
            let value = serde_json::from_str(&i.value).unwrap_or(serde_json::Value::Null);
            let view = StatusItemView {
                value,
                reported_at: i.reported_at,
            };
            (i.name, view)
        })
        .collect();
    Ok(EnrollmentView {
        enrollment_id: enrollment_id.to_string(),
        sets: assignments::sets_of(c, enrollment_id).await?,
        declarations_token: effective.token,
        declarations,
        last_synced_at: state.as_ref().and_then(|s| s.synced_at),
        synced_token: state.as_ref().and_then(|s| s.synced_token.clone()),
        last_status_at: state.as_ref().and_then(|s| s.status_at),
        status_items,
    })
}

/// Where an enrollment holding a declaration stands with it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, Serialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum DeclarationState {
    /// Reported at the current ServerToken, valid and active.
    Active,
    /// Reported at the current ServerToken as invalid.
    Invalid,
    /// Reported at the current ServerToken, not invalid, but not active (e.g. not referenced by an activation).
    Inactive,
    /// Not yet reported at the current ServerToken.
    NotSynced,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ReasonCount {
    pub code: String,
    pub count: u64,
}

/// Counts of the reason codes devices gave for invalid declarations.
#[derive(Debug, Default)]
pub struct ReasonTally(HashMap<String, u64>);

impl ReasonTally {
    /// Count each reason of a stored list (the JSON array a status report gave); one without a `Code` is
    /// `unknown`.
    pub fn add(&mut self, stored_reasons: &str) {
        for reason in reasons(stored_reasons) {
            self.count(reason["Code"].as_str().unwrap_or("unknown"));
        }
    }

    pub fn count(&mut self, code: &str) {
        *self.0.entry(code.to_string()).or_default() += 1;
    }

    /// The `n` most frequent, most frequent first (ties by code).
    pub fn top(self, n: usize) -> Vec<ReasonCount> {
        let mut top: Vec<ReasonCount> = self
            .0
            .into_iter()
            .map(|(code, count)| ReasonCount { code, count })
            .collect();
        top.sort_by(|a, b| b.count.cmp(&a.count).then(a.code.cmp(&b.code)));
        top.truncate(n);
        top
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeclarationStatusView {
    pub identifier: String,
    pub server_token: String,
    /// Enrollments holding it, by state.
    pub counts: BTreeMap<String, u64>,
    /// The most frequent reason codes among the invalid ones, most frequent first (at most 10).
    pub top_reasons: Vec<ReasonCount>,
    /// The state paged through.
    pub state: DeclarationState,
    /// A page of the enrollments in `state`, in id order.
    pub enrollments: Vec<String>,
    pub next_cursor: Option<String>,
}

fn state_of(r: Option<&status::ReportedDeclaration>, token: &str) -> DeclarationState {
    match r {
        Some(r) if r.server_token == token => match (r.valid.as_str(), r.active) {
            ("invalid", _) => DeclarationState::Invalid,
            (_, true) => DeclarationState::Active,
            (_, false) => DeclarationState::Inactive,
        },
        _ => DeclarationState::NotSynced,
    }
}

/// How a declaration stands across the enrollments holding it, and a page of those in `state` after
/// `cursor`.
pub async fn declaration_status<C: ConnectionTrait>(
    c: &C,
    identifier: &str,
    state: DeclarationState,
    cursor: Option<&str>,
    limit: u64,
) -> Result<DeclarationStatusView, DdmError> {
    let d = declarations::get(c, identifier)
        .await?
        .ok_or_else(|| DdmError::UnknownDeclaration(identifier.to_string()))?;
    let holders = if d.builtin {
        status::enrollments(c).await?
    } else {
        assignments::enrollments_holding(c, identifier).await?
    };
    let reported: HashMap<String, status::ReportedDeclaration> =
        status::of_declaration(c, identifier)
            .await?
            .into_iter()
            .map(|r| (r.enrollment_id.clone(), r))
            .collect();
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut tally = ReasonTally::default();
    let mut page = Vec::new();
    let mut next_cursor = None;
    for id in &holders {
        let r = reported.get(id);
        let s = state_of(r, &d.server_token);
        *counts.entry(state_name(s).to_string()).or_default() += 1;
        if let (DeclarationState::Invalid, Some(r)) = (s, r) {
            tally.add(&r.reasons);
        }
        if s == state && cursor.is_none_or(|after| id.as_str() > after) {
            if page.len() as u64 == limit {
                next_cursor = page.last().cloned();
            } else {
                page.push(id.clone());
            }
        }
    }
    Ok(DeclarationStatusView {
        identifier: d.identifier,
        server_token: d.server_token,
        counts,
        top_reasons: tally.top(10),
        state,
        enrollments: page,
        next_cursor,
    })
}

fn state_name(s: DeclarationState) -> &'static str {
    match s {
        DeclarationState::Active => "active",
        DeclarationState::Invalid => "invalid",
        DeclarationState::Inactive => "inactive",
        DeclarationState::NotSynced => "not_synced",
    }
}
