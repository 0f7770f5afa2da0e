//! A plugin's manifest: what it is, which hooks it subscribes to, which capabilities it needs, its limits and
//! failure policies. Uploaded beside the component; validated before anything is stored.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Hook {
    DecideEnrollment,
    OnCheckin,
    OnCommandResult,
    OnSchedule,
}

impl Hook {
    pub fn as_str(self) -> &'static str {
        match self {
            Hook::DecideEnrollment => "decide-enrollment",
            Hook::OnCheckin => "on-checkin",
            Hook::OnCommandResult => "on-command-result",
            Hook::OnSchedule => "on-schedule",
        }
    }

    /// Enrollment decisions guard who gets in, so by default a failing plugin refuses; notifications should
    /// not stop devices from checking in, so by default a failure is skipped.
    pub fn default_policy(self) -> FailurePolicy {
        match self {
            Hook::DecideEnrollment => FailurePolicy::FailClosed,
            _ => FailurePolicy::FailOpen,
        }
    }
}

/// What a plugin may do. Import capabilities map to WIT interfaces; the others gate actions and data.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Capability {
    Log,
    Metrics,
    Config,
    Kv,
    Inventory,
    Http,
    /// The `raw` fields of events (exact plists) are filled.
    RawPayloads,
    /// `enqueue` actions.
    Commands,
    /// `retry` actions.
    Retry,
    /// `push` actions.
    Push,
    /// `set-attribute` and `clear-attribute` actions.
    Attributes,
    /// `emit` actions.
    Events,
}

impl Capability {
    pub const ALL: [Capability; 12] = [
        Capability::Log,
        Capability::Metrics,
        Capability::Config,
        Capability::Kv,
        Capability::Inventory,
        Capability::Http,
        Capability::RawPayloads,
        Capability::Commands,
        Capability::Retry,
        Capability::Push,
        Capability::Attributes,
        Capability::Events,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Log => "log",
            Capability::Metrics => "metrics",
            Capability::Config => "config",
            Capability::Kv => "kv",
            Capability::Inventory => "inventory",
            Capability::Http => "http",
            Capability::RawPayloads => "raw-payloads",
            Capability::Commands => "commands",
            Capability::Retry => "retry",
            Capability::Push => "push",
            Capability::Attributes => "attributes",
            Capability::Events => "events",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// The capability a WIT interface of `mdm:plugin` needs: `Ok(None)` for type-only interfaces, `Err` with
    /// the name for an interface this server does not know.
    pub fn for_interface(iface: &str) -> Result<Option<Capability>, String> {
        Ok(Some(match iface {
            "types" => return Ok(None),
            "log" => Capability::Log,
            "metrics" => Capability::Metrics,
            "config" => Capability::Config,
            "kv" => Capability::Kv,
            "inventory" => Capability::Inventory,
            "http" => Capability::Http,
            other => return Err(other.to_string()),
        }))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum FailurePolicy {
    /// A failing call is skipped (audited); the check-in goes on.
    FailOpen,
    /// A failing call refuses: an enrollment is denied; a check-in is answered 503 and nothing is stored.
    FailClosed,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    pub name: String,
    pub every_seconds: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Wall-clock budget of one hook call (instantiation included).
    pub timeout_ms: u32,
    /// Linear memory cap.
    pub memory_mib: u32,
    /// Live keys in the plugin's key-value store.
    pub kv_max_keys: u32,
    /// Actions one call may return.
    pub max_actions: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            timeout_ms: 200,
            memory_mib: 32,
            kv_max_keys: 10_000,
            max_actions: 100,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// `[a-z0-9-]{1,64}`.
    pub id: String,
    pub version: String,
    #[serde(default)]
    pub description: String,
    pub hooks: Vec<Hook>,
    #[serde(default)]
    pub capabilities: Vec<Capability>,
    /// Host names the `http` capability may reach (exact, or `*.example.com`).
    #[serde(default)]
    pub http_allow: Vec<String>,
    #[serde(default)]
    pub schedules: Vec<Schedule>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub failure_policy: BTreeMap<Hook, FailurePolicy>,
    /// Configuration used when the admin sets none.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub default_config: Option<serde_json::Value>,
}

impl Manifest {
    pub fn parse(json: &str) -> Result<Self, String> {
        let m: Manifest = serde_json::from_str(json).map_err(|e| format!("manifest: {e}"))?;
        m.validate()?;
        Ok(m)
    }

    pub fn validate(&self) -> Result<(), String> {
        let id_ok = !self.id.is_empty()
            && self.id.len() <= 64
            && self
                .id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !id_ok {
            return Err(format!(
                "manifest: id {:?} must match [a-z0-9-]{{1,64}}",
                self.id
            ));
        }
        if self.version.is_empty() || self.version.len() > 64 {
            return Err("manifest: version must be 1 to 64 characters".into());
        }
        if self.hooks.is_empty() {
            return Err("manifest: subscribe to at least one hook".into());
        }
        if !self.http_allow.is_empty() && !self.has(Capability::Http) {
            return Err("manifest: http_allow needs the http capability".into());
        }
        if self
            .http_allow
            .iter()
            .any(|h| h.is_empty() || h.contains('/') || h.contains(':'))
        {
            return Err("manifest: http_allow entries are host names (e.g. api.example.com or *.example.com)".into());
        }
        let scheduled = self.hooks.contains(&Hook::OnSchedule);
        if scheduled == self.schedules.is_empty() {
            return Err("manifest: schedules and the on-schedule hook go together".into());
        }
        for s in &self.schedules {
            if s.name.is_empty() || s.name.len() > 64 || s.every_seconds < 60 {
                return Err(format!(
                    "manifest: schedule {:?} needs a name (1-64 chars) and every_seconds >= 60",
                    s.name
                ));
            }
        }
        let l = &self.limits;
        if !(1..=5_000).contains(&l.timeout_ms)
            || !(1..=256).contains(&l.memory_mib)
            || !(1..=1_000_000).contains(&l.kv_max_keys)
            || !(1..=1_000).contains(&l.max_actions)
        {
            return Err("manifest: limits out of range (timeout_ms 1-5000, memory_mib 1-256, kv_max_keys 1-1000000, max_actions 1-1000)".into());
        }
        Ok(())
    }

    pub fn has(&self, c: Capability) -> bool {
        // `log` is always granted: a plugin that cannot say what went wrong helps nobody.
        c == Capability::Log || self.capabilities.contains(&c)
    }

    pub fn subscribes(&self, h: Hook) -> bool {
        self.hooks.contains(&h)
    }

    pub fn policy(&self, h: Hook) -> FailurePolicy {
        self.failure_policy
            .get(&h)
            .copied()
            .unwrap_or_else(|| h.default_policy())
    }

    /// May the `http` capability reach `host`?
    pub fn http_allows(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        self.http_allow.iter().any(|pat| {
            let pat = pat.to_ascii_lowercase();
            match pat.strip_prefix("*.") {
                Some(suffix) => host.ends_with(&format!(".{suffix}")),
                None => host == pat,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> serde_json::Value {
        serde_json::json!({"id": "p", "version": "1", "hooks": ["on-checkin"]})
    }

    #[test]
    fn minimal_manifest_gets_defaults() {
        let m = Manifest::parse(&base().to_string()).unwrap();
        assert_eq!(m.limits.timeout_ms, 200);
        assert_eq!(m.policy(Hook::DecideEnrollment), FailurePolicy::FailClosed);
        assert_eq!(m.policy(Hook::OnCheckin), FailurePolicy::FailOpen);
        assert!(m.has(Capability::Log) && !m.has(Capability::Kv));
    }

    #[test]
    fn invalid_manifests_are_refused() {
        let mut bad = Vec::new();
        for (k, v) in [
            ("id", serde_json::json!("Bad Id")),
            ("hooks", serde_json::json!([])),
            ("hooks", serde_json::json!(["on-everything"])),
            ("capabilities", serde_json::json!(["root"])),
            ("http_allow", serde_json::json!(["example.com"])),
            (
                "schedules",
                serde_json::json!([{"name": "n", "every_seconds": 3600}]),
            ),
            ("limits", serde_json::json!({"timeout_ms": 0})),
            ("surprise", serde_json::json!(1)),
        ] {
            let mut j = base();
            j[k] = v;
            bad.push(j);
        }
        for j in bad {
            assert!(Manifest::parse(&j.to_string()).is_err(), "{j}");
        }
    }

    #[test]
    fn http_allow_list_matching() {
        let mut j = base();
        j["capabilities"] = serde_json::json!(["http"]);
        j["http_allow"] = serde_json::json!(["api.example.com", "*.corp.example"]);
        let m = Manifest::parse(&j.to_string()).unwrap();
        assert!(m.http_allows("api.example.com"));
        assert!(m.http_allows("API.example.com"));
        assert!(m.http_allows("a.b.corp.example"));
        assert!(!m.http_allows("corp.example"));
        assert!(!m.http_allows("evil.com"));
        assert!(!m.http_allows("api.example.com.evil.com"));
    }
}
