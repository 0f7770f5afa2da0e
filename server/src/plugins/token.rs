//! `provide-token`: a GetToken check-in's token, from the first plugin that has one.

use super::event::{Enrollment, TokenRequest};
use super::manifest::Hook;
use super::runtime::{HookInput, HookOutput};
use super::{EventScope, PluginHost};
use crate::metrics::PluginActionLabels;
use crate::storage::{plugin_audit, StorageError};
use serde_json::json;

/// The largest token a plugin may hand out; a larger one is refused and counts as none.
pub const MAX_TOKEN_BYTES: usize = 64 * 1024;

/// What became of one plugin's token.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// It is the answer.
    Provided,
    /// Dry-run: audited, not used; the next plugin is asked.
    DryRun,
    /// Empty or too large: audited, not used; the next plugin is asked.
    Refused(String),
}

fn verdict(token: &[u8], dry_run: bool) -> Verdict {
    if token.is_empty() {
        Verdict::Refused("an empty token".into())
    } else if token.len() > MAX_TOKEN_BYTES {
        Verdict::Refused(format!(
            "a token of {} bytes, more than {MAX_TOKEN_BYTES}",
            token.len()
        ))
    } else if dry_run {
        Verdict::DryRun
    } else {
        Verdict::Provided
    }
}

impl PluginHost {
    /// The token for a GetToken check-in: the plugins subscribed to `provide-token` are asked in run order
    /// (priority, then id) and the first token wins; the rest are not asked. None when no plugin has one.
    /// A plugin that fails (error, trap, timeout) counts as having none; its fault is logged, counted and
    /// audited like any hook's, and may quarantine it. A token that is empty or larger than
    /// [`MAX_TOKEN_BYTES`] is refused (logged, audited) and the next plugin is asked; a dry-run plugin's
    /// token is audited and not used.
    ///
    /// Call it outside any transaction (plugins use the database). The audit rows (each token given or
    /// refused, by size, never its bytes; each fault) are written before it returns: the error is theirs.
    pub async fn provide_token(
        &self,
        enrollment: &Enrollment,
        token_service_type: &str,
        scope: EventScope<'_>,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        let plugins = self.subscribed(Hook::ProvideToken);
        if plugins.is_empty() {
            return Ok(None);
        }
        let hook = Hook::ProvideToken.as_str();
        let input = HookInput::Token(TokenRequest {
            event_id: scope.event_id.to_string(),
            enrollment: enrollment.clone(),
            token_service_type: token_service_type.to_string(),
        });
        let mut audit = Vec::new();
        let mut provided = None;
        for p in &plugins {
            let (out, fault_row) = self.call(p, &input, scope).await;
            audit.extend(fault_row);
            // None, or a failure (already audited): not this plugin's to give.
            let Ok(HookOutput::Token(Some(token))) = out else {
                continue;
            };
            let v = verdict(&token, p.dry_run);
            let mut detail =
                json!({"token_service_type": token_service_type, "bytes": token.len()});
            let outcome = match &v {
                Verdict::Provided => "provided",
                Verdict::DryRun => "dry-run",
                Verdict::Refused(why) => {
                    tracing::warn!(plugin = %p.id, hook, event = scope.event_id, reason = %why, "plugin token refused");
                    detail["reason"] = json!(why);
                    "rejected"
                }
            };
            self.metrics
                .plugin_actions
                .get_or_create(&PluginActionLabels {
                    plugin: p.id.to_string(),
                    kind: "token".into(),
                    outcome: outcome.into(),
                })
                .inc();
            audit.push(self.audit_row(&p.id, hook, scope, "token", outcome, detail));
            if v == Verdict::Provided {
                provided = Some(token);
                break;
            }
        }
        if !audit.is_empty() {
            plugin_audit::insert_many(&self.storage, audit).await?;
        }
        Ok(provided)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_used_when_it_is_neither_empty_nor_too_large_nor_a_dry_run() {
        assert_eq!(verdict(b"t", false), Verdict::Provided);
        assert_eq!(verdict(&[7; MAX_TOKEN_BYTES], false), Verdict::Provided);
        assert_eq!(verdict(b"t", true), Verdict::DryRun);
        assert!(matches!(verdict(b"", false), Verdict::Refused(_)));
        assert!(matches!(
            verdict(&[7; MAX_TOKEN_BYTES + 1], false),
            Verdict::Refused(r) if r.contains("65537")
        ));
        // Too large is refused whether or not it would have been used.
        assert!(matches!(
            verdict(&[7; MAX_TOKEN_BYTES + 1], true),
            Verdict::Refused(_)
        ));
    }
}
