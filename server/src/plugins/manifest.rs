//! A plugin's manifest: what it is, which hooks it subscribes to, which capabilities it needs, its limits and
//! failure policies. Uploaded beside the component; validated before anything is stored.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Why a manifest was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest: {0}")]
    Json(#[from] serde_json::Error),
    #[error("manifest: {0}")]
    Invalid(String),
}

fn invalid(why: impl Into<String>) -> ManifestError {
    ManifestError::Invalid(why.into())
}

/// An `mdm:plugin` interface this server does not know.
#[derive(Debug, thiserror::Error)]
#[error("unknown interface {0}")]
pub struct UnknownInterface(pub String);

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
    /// A declarative management status report changed something (WIT 0.2 on).
    OnDdmStatus,
    /// A GetToken check-in asks for a token (WIT 0.2 on).
    ProvideToken,
    /// A round is about to promote a policy rollout (WIT 0.3 on).
    DecidePromotion,
    /// A policy rollout took a step (WIT 0.3 on).
    OnRollout,
}

impl Hook {
    pub const ALL: [Hook; 8] = [
        Hook::DecideEnrollment,
        Hook::OnCheckin,
        Hook::OnCommandResult,
        Hook::OnSchedule,
        Hook::OnDdmStatus,
        Hook::ProvideToken,
        Hook::DecidePromotion,
        Hook::OnRollout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Hook::DecideEnrollment => "decide-enrollment",
            Hook::OnCheckin => "on-checkin",
            Hook::OnCommandResult => "on-command-result",
            Hook::OnSchedule => "on-schedule",
            Hook::OnDdmStatus => "on-ddm-status",
            Hook::ProvideToken => "provide-token",
            Hook::DecidePromotion => "decide-promotion",
            Hook::OnRollout => "on-rollout",
        }
    }

    /// Enrollment and promotion decisions guard who gets in and what spreads, so by default a failing
    /// plugin refuses (a promotion is held); notifications should not stop devices from checking in, so by
    /// default a failure is skipped. (`provide-token` has no policy: a failing plugin's answer counts as
    /// "not mine".)
    pub fn default_policy(self) -> FailurePolicy {
        match self {
            Hook::DecideEnrollment | Hook::DecidePromotion => FailurePolicy::FailClosed,
            _ => FailurePolicy::FailOpen,
        }
    }

    /// Whether a failure policy means anything for this hook.
    pub fn has_policy(self) -> bool {
        self != Hook::ProvideToken
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
    /// `assign-set` and `unassign-set` actions (declarative management sets).
    DdmAssign,
}

impl Capability {
    pub const ALL: [Capability; 13] = [
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
        Capability::DdmAssign,
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
            Capability::DdmAssign => "ddm-assign",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// The capability a WIT interface of `mdm:plugin` needs: `Ok(None)` for type-only interfaces, `Err` with
    /// the name for an interface this server does not know.
    pub fn for_interface(iface: &str) -> Result<Option<Capability>, UnknownInterface> {
        Ok(Some(match iface {
            "types" | "rollout" => return Ok(None),
            "log" => Capability::Log,
            "metrics" => Capability::Metrics,
            "config" => Capability::Config,
            "kv" => Capability::Kv,
            "inventory" => Capability::Inventory,
            "http" => Capability::Http,
            other => return Err(UnknownInterface(other.to_string())),
        }))
    }
}

/// Which check-in messages an `on-checkin` plugin hears: the WIT `checkin-kind` names, and
/// `first-token-update`, a channel's first TokenUpdate since it authenticated (its enrollment completing).
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
pub enum CheckinSelector {
    Authenticate,
    TokenUpdate,
    FirstTokenUpdate,
    CheckOut,
    UserAuthenticate,
    SetBootstrapToken,
    GetBootstrapToken,
    DeclarativeManagement,
    GetToken,
}

/// A check-in message as [`Manifest::hears_checkin`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckinMessageKind {
    Authenticate,
    /// `first`: the channel's first TokenUpdate since it authenticated.
    TokenUpdate {
        first: bool,
    },
    CheckOut,
    UserAuthenticate,
    SetBootstrapToken,
    GetBootstrapToken,
    DeclarativeManagement,
    GetToken,
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
    #[schema(min_length = 1, max_length = 64)]
    pub name: String,
    #[schema(minimum = 60)]
    pub every_seconds: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Wall-clock budget of one hook call (instantiation included).
    #[schema(minimum = 1, maximum = 5000)]
    pub timeout_ms: u32,
    /// Linear memory cap.
    #[schema(minimum = 1, maximum = 256)]
    pub memory_mib: u32,
    /// Live keys in the plugin's key-value store.
    #[schema(minimum = 1, maximum = 1000000)]
    pub kv_max_keys: u32,
    /// Actions one call may return.
    #[schema(minimum = 1, maximum = 1000)]
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
    #[schema(pattern = r"^[a-z0-9-]{1,64}$")]
    pub id: String,
    /// 1 to 64 bytes.
    #[schema(min_length = 1, max_length = 64)]
    pub version: String,
    #[serde(default)]
    pub description: String,
    #[schema(min_items = 1)]
    pub hooks: Vec<Hook>,
    /// With `on-checkin`: the check-in messages this plugin hears (absent: all of them). The server reads
    /// nothing and calls nothing for a message no plugin hears, so naming only what a plugin acts on
    /// makes every other check-in cost what it would without the plugin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkins: Option<Vec<CheckinSelector>>,
    #[serde(default)]
    pub capabilities: Vec<Capability>,
    /// Host names the `http` capability may reach (exact, or `*.example.com`).
    #[serde(default)]
    pub http_allow: Vec<String>,
    /// The event sinks (`plugins.sinks` names) the plugin emits to, with the `events` capability (which
    /// needs at least one): an emit to any other is refused, and upload refuses a name the server has no
    /// sink for, so the mistake shows then rather than at the first event.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(max_items = 32)]
    pub sinks: Vec<String>,
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
    pub fn parse(json: &str) -> Result<Self, ManifestError> {
        let m: Manifest = serde_json::from_str(json)?;
        m.validate()?;
        Ok(m)
    }

    /// `sinks` goes with the `events` capability, both or neither; each name 1 to 64 printable
    /// characters, at most 32, no repeats.
    fn check_sinks(&self) -> Result<(), ManifestError> {
        match (self.has(Capability::Events), self.sinks.is_empty()) {
            (true, true) => {
                return Err(invalid(
                    "the events capability needs sinks: the sinks it emits to",
                ))
            }
            (false, false) => return Err(invalid("sinks needs the events capability")),
            _ => {}
        }
        let well_formed =
            |s: &String| !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_graphic());
        let mut seen = std::collections::BTreeSet::new();
        if self.sinks.len() > 32 || !self.sinks.iter().all(|s| well_formed(s) && seen.insert(s)) {
            return Err(invalid(
                "sinks: at most 32 different names, each 1 to 64 printable characters",
            ));
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ManifestError> {
        let id_ok = !self.id.is_empty()
            && self.id.len() <= 64
            && self
                .id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !id_ok {
            return Err(invalid(format!(
                "id {:?} must match [a-z0-9-]{{1,64}}",
                self.id
            )));
        }
        if self.version.is_empty() || self.version.len() > 64 {
            return Err(invalid("version must be 1 to 64 characters"));
        }
        if self.hooks.is_empty() {
            return Err(invalid("subscribe to at least one hook"));
        }
        if !self.http_allow.is_empty() && !self.has(Capability::Http) {
            return Err(invalid("http_allow needs the http capability"));
        }
        if self
            .http_allow
            .iter()
            .any(|h| h.is_empty() || h.contains('/') || h.contains(':'))
        {
            return Err(invalid(
                "http_allow entries are host names (e.g. api.example.com or *.example.com)",
            ));
        }
        self.check_sinks()?;
        if let Some(checkins) = &self.checkins {
            if !self.hooks.contains(&Hook::OnCheckin) {
                return Err(invalid("checkins needs the on-checkin hook"));
            }
            if checkins.is_empty() {
                return Err(invalid(
                    "checkins names no message (leave it out to hear all)",
                ));
            }
            if checkins.contains(&CheckinSelector::TokenUpdate)
                && checkins.contains(&CheckinSelector::FirstTokenUpdate)
            {
                return Err(invalid(
                    "checkins has token-update, which includes first-token-update",
                ));
            }
        }
        if let Some(h) = self.failure_policy.keys().find(|h| !h.has_policy()) {
            return Err(invalid(format!(
                "{} has no failure policy: a failing plugin's answer counts as none",
                h.as_str()
            )));
        }
        let scheduled = self.hooks.contains(&Hook::OnSchedule);
        if scheduled == self.schedules.is_empty() {
            return Err(invalid("schedules and the on-schedule hook go together"));
        }
        for s in &self.schedules {
            if s.name.is_empty() || s.name.len() > 64 || s.every_seconds < 60 {
                return Err(invalid(format!(
                    "schedule {:?} needs a name (1-64 chars) and every_seconds >= 60",
                    s.name
                )));
            }
        }
        let l = &self.limits;
        if !(1..=5_000).contains(&l.timeout_ms)
            || !(1..=256).contains(&l.memory_mib)
            || !(1..=1_000_000).contains(&l.kv_max_keys)
            || !(1..=1_000).contains(&l.max_actions)
        {
            return Err(invalid("limits out of range (timeout_ms 1-5000, memory_mib 1-256, kv_max_keys 1-1000000, max_actions 1-1000)"));
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

    /// Whether `on-checkin` is called for this message.
    pub fn hears_checkin(&self, m: CheckinMessageKind) -> bool {
        use CheckinMessageKind as M;
        use CheckinSelector as S;
        if !self.subscribes(Hook::OnCheckin) {
            return false;
        }
        let Some(checkins) = &self.checkins else {
            return true;
        };
        let wanted: &[S] = match m {
            M::Authenticate => &[S::Authenticate],
            M::TokenUpdate { first: false } => &[S::TokenUpdate],
            M::TokenUpdate { first: true } => &[S::TokenUpdate, S::FirstTokenUpdate],
            M::CheckOut => &[S::CheckOut],
            M::UserAuthenticate => &[S::UserAuthenticate],
            M::SetBootstrapToken => &[S::SetBootstrapToken],
            M::GetBootstrapToken => &[S::GetBootstrapToken],
            M::DeclarativeManagement => &[S::DeclarativeManagement],
            M::GetToken => &[S::GetToken],
        };
        checkins.iter().any(|c| wanted.contains(c))
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
    fn an_emitting_plugin_names_its_sinks() {
        let with = |sinks: serde_json::Value| {
            let mut j = base();
            j["capabilities"] = serde_json::json!(["events"]);
            j["sinks"] = sinks;
            Manifest::parse(&j.to_string())
        };
        assert_eq!(
            with(serde_json::json!(["alerts", "audit"])).unwrap().sinks,
            ["alerts", "audit"]
        );
        for bad in [
            serde_json::json!([]),
            serde_json::json!([""]),
            serde_json::json!(["a b"]),
            serde_json::json!(["a", "a"]),
            serde_json::json!(["x".repeat(65)]),
        ] {
            assert!(with(bad.clone()).is_err(), "{bad}");
        }
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
            ("sinks", serde_json::json!(["alerts"])),
            ("capabilities", serde_json::json!(["events"])),
            (
                "schedules",
                serde_json::json!([{"name": "n", "every_seconds": 3600}]),
            ),
            ("limits", serde_json::json!({"timeout_ms": 0})),
            ("surprise", serde_json::json!(1)),
            ("checkins", serde_json::json!([])),
            ("checkins", serde_json::json!(["idle"])),
            (
                "checkins",
                serde_json::json!(["token-update", "first-token-update"]),
            ),
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
    fn checkins_select_the_messages_a_plugin_hears() {
        use CheckinMessageKind as M;
        let every = [
            M::Authenticate,
            M::TokenUpdate { first: true },
            M::TokenUpdate { first: false },
            M::CheckOut,
            M::UserAuthenticate,
            M::SetBootstrapToken,
            M::GetBootstrapToken,
            M::DeclarativeManagement,
            M::GetToken,
        ];
        let all = Manifest::parse(&base().to_string()).unwrap();
        assert!(every.iter().all(|m| all.hears_checkin(*m)));

        let mut j = base();
        j["checkins"] = serde_json::json!(["authenticate", "first-token-update"]);
        let enrolling = Manifest::parse(&j.to_string()).unwrap();
        let heard: Vec<_> = every
            .into_iter()
            .filter(|m| enrolling.hears_checkin(*m))
            .collect();
        assert_eq!(heard, [M::Authenticate, M::TokenUpdate { first: true }]);

        j["checkins"] = serde_json::json!(["token-update", "check-out"]);
        let tokens = Manifest::parse(&j.to_string()).unwrap();
        let heard: Vec<_> = every
            .into_iter()
            .filter(|m| tokens.hears_checkin(*m))
            .collect();
        assert_eq!(
            heard,
            [
                M::TokenUpdate { first: true },
                M::TokenUpdate { first: false },
                M::CheckOut
            ]
        );

        // A plugin that does not subscribe to on-checkin hears nothing, and may not name check-ins.
        let mut j = base();
        j["hooks"] = serde_json::json!(["on-command-result"]);
        let results = Manifest::parse(&j.to_string()).unwrap();
        assert!(!every.iter().any(|m| results.hears_checkin(*m)));
        j["checkins"] = serde_json::json!(["authenticate"]);
        let err = Manifest::parse(&j.to_string()).unwrap_err().to_string();
        assert!(err.contains("on-checkin"), "{err}");
    }

    #[test]
    fn ddm_hooks_and_the_ddm_assign_capability_are_accepted() {
        let mut j = base();
        j["hooks"] = serde_json::json!(["on-ddm-status", "provide-token"]);
        j["capabilities"] = serde_json::json!(["ddm-assign", "config"]);
        let m = Manifest::parse(&j.to_string()).unwrap();
        assert!(m.subscribes(Hook::OnDdmStatus) && m.subscribes(Hook::ProvideToken));
        assert!(!m.subscribes(Hook::OnCheckin));
        assert!(m.has(Capability::DdmAssign));
        assert_eq!(m.policy(Hook::OnDdmStatus), FailurePolicy::FailOpen);
        // Stored and loaded again under the same names.
        let stored = serde_json::to_value(&m).unwrap();
        assert_eq!(
            stored["hooks"],
            serde_json::json!(["on-ddm-status", "provide-token"])
        );
        assert_eq!(
            stored["capabilities"],
            serde_json::json!(["ddm-assign", "config"])
        );
        assert_eq!(Capability::parse("ddm-assign"), Some(Capability::DdmAssign));
        for h in Hook::ALL {
            let name = serde_json::to_value(h).unwrap();
            assert_eq!(name, serde_json::json!(h.as_str()));
        }

        j["failure_policy"] = serde_json::json!({"on-ddm-status": "fail-closed"});
        let m = Manifest::parse(&j.to_string()).unwrap();
        assert_eq!(m.policy(Hook::OnDdmStatus), FailurePolicy::FailClosed);
        // A failing provide-token counts as "not mine": a policy there would promise what is not done.
        j["failure_policy"] = serde_json::json!({"provide-token": "fail-closed"});
        let err = Manifest::parse(&j.to_string()).unwrap_err().to_string();
        assert!(err.contains("provide-token"), "{err}");
        // Without the grant the manifest still loads: the action is refused when applied.
        j["failure_policy"] = serde_json::json!({});
        j["capabilities"] = serde_json::json!([]);
        assert!(!Manifest::parse(&j.to_string())
            .unwrap()
            .has(Capability::DdmAssign));
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
