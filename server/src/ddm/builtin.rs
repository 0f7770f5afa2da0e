//! The server's own management declarations, in every enrollment's effective set: its capabilities, and
//! the organization's details and device properties when configured. Written at start; a change (a new
//! configuration) syncs every enrollment that takes part in DDM.

use super::{sync, DdmError, BUILTIN_PREFIX};
use crate::config::DdmConfig;
use crate::protocol::ddm::Declaration;
use crate::storage::ddm::audience::Audience;
use crate::storage::ddm::declarations::{Owner, Written};
use crate::storage::ddm::{declarations, status};
use crate::storage::Storage;
use serde_json::{json, Value};

/// The built-in declarations this configuration asks for.
pub fn declarations(config: &DdmConfig) -> Result<Vec<Declaration>, DdmError> {
    let mut out = vec![build(
        "server-capabilities",
        "com.apple.management.server-capabilities",
        json!({"Version": "1.0.0", "SupportedFeatures": {}}),
    )?];
    if let Some(name) = &config.organization_name {
        let mut payload = json!({ "Name": name });
        if let Some(email) = &config.organization_email {
            payload["Email"] = json!(email);
        }
        if let Some(url) = &config.organization_url {
            payload["URL"] = json!(url);
        }
        out.push(build(
            "organization-info",
            "com.apple.management.organization-info",
            payload,
        )?);
    }
    if !config.properties.is_empty() {
        let payload = Value::Object(config.properties.clone().into_iter().collect());
        out.push(build(
            "properties",
            "com.apple.management.properties",
            payload,
        )?);
    }
    Ok(out)
}

fn build(name: &str, declaration_type: &str, payload: Value) -> Result<Declaration, DdmError> {
    let body = json!({
        "Type": declaration_type,
        "Identifier": format!("{BUILTIN_PREFIX}{name}"),
        "Payload": payload,
    });
    Ok(Declaration::parse(body.to_string().as_bytes())?)
}

/// Store the configured built-ins, remove those no longer configured, and sync every DDM enrollment if
/// anything changed. Returns whether anything did.
pub async fn install(storage: &Storage, config: &DdmConfig, now: i64) -> Result<bool, DdmError> {
    let wanted = declarations(config)?;
    storage
        .transaction(move |txn| {
            Box::pin(async move {
                let mut changed = false;
                for d in &wanted {
                    changed |=
                        declarations::put(txn, d, Owner::Builtin, now).await? != Written::Unchanged;
                }
                let keep: Vec<String> = wanted.iter().map(|d| d.identifier.clone()).collect();
                changed |= !declarations::remove_builtins_except(txn, &keep)
                    .await?
                    .is_empty();
                if changed {
                    let everyone = status::enrollments(txn).await?;
                    sync::announce(txn, Audience::Ids(&everyone), false, now).await?;
                }
                Ok::<_, DdmError>(changed)
            })
        })
        .await
}
