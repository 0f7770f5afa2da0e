//! A simulated device's Declarative Device Management client, behaving as Apple documents: on a
//! DeclarativeManagement command (or at enrollment) it fetches its tokens; if the DeclarationsToken
//! differs from the one it holds it fetches the manifest, fetches every declaration whose ServerToken it
//! does not hold, drops those no longer listed, and sends a status report.
//!
//! It speaks through a `send` function (a check-in body in, the HTTP status and body out), so the same
//! client serves the tests' in-process harness and `mdm-sim`'s load runs.

use crate::device::xml;
use plist::{Dictionary, Value};
use serde_json::{json, Value as Json};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

/// A declaration as the device holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Held {
    pub category: String,
    pub server_token: String,
    pub declaration: Json,
}

#[derive(Debug, Default, Clone)]
pub struct DdmClient {
    pub declarations_token: Option<String>,
    /// By identifier.
    pub held: BTreeMap<String, Held>,
    /// Identifiers this device will report invalid (as if it could not apply them).
    pub refuses: BTreeSet<String>,
    /// Extra status items sent in every report (e.g. `{"passcode": {"is-compliant": false}}`).
    pub status_items: Json,
}

/// What one sync did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncRound {
    /// The token was unchanged: nothing else was fetched.
    pub up_to_date: bool,
    pub fetched: Vec<String>,
    pub dropped: Vec<String>,
    pub requests: usize,
}

/// The DeclarativeManagement check-in a device sends.
pub fn request(udid: &str, endpoint: &str, data: Option<Vec<u8>>) -> Vec<u8> {
    let mut d = Dictionary::new();
    d.insert("MessageType".into(), "DeclarativeManagement".into());
    d.insert("UDID".into(), udid.into());
    d.insert("Endpoint".into(), endpoint.into());
    if let Some(data) = data {
        d.insert("Data".into(), Value::Data(data));
    }
    xml(d)
}

fn json_of(status: u16, body: &[u8], what: &str) -> Result<Json, String> {
    if status != 200 {
        return Err(format!(
            "{what}: HTTP {status}: {}",
            String::from_utf8_lossy(body)
        ));
    }
    serde_json::from_slice(body).map_err(|e| format!("{what}: not JSON: {e}"))
}

impl DdmClient {
    /// Fetch tokens and, if they changed, everything else; then report status.
    pub async fn sync<F, Fut>(&mut self, udid: &str, mut send: F) -> Result<SyncRound, String>
    where
        F: FnMut(Vec<u8>) -> Fut,
        Fut: Future<Output = (u16, Vec<u8>)>,
    {
        let mut round = SyncRound::default();
        let (status, body) = send(request(udid, "tokens", None)).await;
        round.requests += 1;
        let tokens = json_of(status, &body, "tokens")?;
        let token = tokens["SyncTokens"]["DeclarationsToken"]
            .as_str()
            .ok_or("tokens: no DeclarationsToken")?
            .to_string();
        if self.declarations_token.as_deref() == Some(token.as_str()) {
            round.up_to_date = true;
            return Ok(round);
        }
        let (status, body) = send(request(udid, "declaration-items", None)).await;
        round.requests += 1;
        let manifest = json_of(status, &body, "declaration-items")?;
        let listed = manifest_items(&manifest)?;
        for (identifier, (category, server_token)) in &listed {
            if self.held.get(identifier).map(|h| &h.server_token) == Some(server_token) {
                continue;
            }
            let endpoint = format!("declaration/{category}/{identifier}");
            let (status, body) = send(request(udid, &endpoint, None)).await;
            round.requests += 1;
            let declaration = json_of(status, &body, &endpoint)?;
            let got = declaration["ServerToken"].as_str().unwrap_or_default();
            if got != server_token {
                return Err(format!(
                    "{endpoint}: ServerToken {got} differs from the manifest's {server_token}"
                ));
            }
            self.held.insert(
                identifier.clone(),
                Held {
                    category: category.clone(),
                    server_token: server_token.clone(),
                    declaration,
                },
            );
            round.fetched.push(identifier.clone());
        }
        let gone: Vec<String> = self
            .held
            .keys()
            .filter(|id| !listed.contains_key(*id))
            .cloned()
            .collect();
        for id in &gone {
            self.held.remove(id);
        }
        round.dropped = gone;
        self.declarations_token = Some(
            manifest["DeclarationsToken"]
                .as_str()
                .ok_or("declaration-items: no DeclarationsToken")?
                .to_string(),
        );
        let (status, body) = send(request(udid, "status", Some(self.status_report()))).await;
        round.requests += 1;
        if status != 200 {
            return Err(format!(
                "status: HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            ));
        }
        Ok(round)
    }

    /// The configurations and assets an activation this device holds refers to are active; activations and
    /// management declarations always are; anything it refuses is invalid and inactive.
    pub fn status_report(&self) -> Vec<u8> {
        let referenced: BTreeSet<String> = self
            .held
            .values()
            .filter(|h| h.category == "activation")
            .flat_map(|h| {
                h.declaration["Payload"]["StandardConfigurations"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        let mut lists: BTreeMap<&str, Vec<Json>> =
            ["activations", "assets", "configurations", "management"]
                .into_iter()
                .map(|k| (k, Vec::new()))
                .collect();
        for (id, h) in &self.held {
            let refused = self.refuses.contains(id);
            let active = !refused
                && match h.category.as_str() {
                    "configuration" | "asset" => referenced.contains(id),
                    _ => true,
                };
            let mut entry = json!({
                "identifier": id,
                "server-token": h.server_token,
                "active": active,
                "valid": if refused { "invalid" } else { "valid" },
            });
            if refused {
                entry["reasons"] = json!([{"code": "Error.ConfigurationCannotBeApplied", "description": "simulated"}]);
            }
            let list = match h.category.as_str() {
                "activation" => "activations",
                "asset" => "assets",
                "configuration" => "configurations",
                _ => "management",
            };
            lists.get_mut(list).expect("known list").push(entry);
        }
        let mut items = json!({"management": {"declarations": lists}});
        if let (Some(extra), Some(map)) = (self.status_items.as_object(), items.as_object_mut()) {
            for (k, v) in extra {
                map.insert(k.clone(), v.clone());
            }
        }
        serde_json::to_vec(&json!({"StatusItems": items, "Errors": []})).expect("json")
    }
}

/// identifier -> (category path segment, ServerToken) from a manifest.
fn manifest_items(manifest: &Json) -> Result<BTreeMap<String, (String, String)>, String> {
    let mut out = BTreeMap::new();
    for (list, category) in [
        ("Activations", "activation"),
        ("Assets", "asset"),
        ("Configurations", "configuration"),
        ("Management", "management"),
    ] {
        let items = manifest["Declarations"][list]
            .as_array()
            .ok_or_else(|| format!("declaration-items: no {list} list"))?;
        for i in items {
            let id = i["Identifier"].as_str().ok_or("item without Identifier")?;
            let token = i["ServerToken"]
                .as_str()
                .ok_or("item without ServerToken")?;
            out.insert(id.to_string(), (category.to_string(), token.to_string()));
        }
    }
    Ok(out)
}
