//! Why a configuration was refused, and where a refused key came from.

use std::fmt;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: config file {} not found", .0.display())]
    FileNotFound(PathBuf),
    /// A key no section knows: a typo would otherwise leave the setting at its default without a word.
    #[error(
        "configuration: unknown key `{key}` in {section}, from {origin} (the keys there are: {known})"
    )]
    UnknownKey {
        key: String,
        section: Section,
        origin: Origin,
        /// The keys the section has, comma-separated.
        known: String,
    },
    /// Any other problem reading the sources: syntax, a value of the wrong type or form.
    #[error("configuration: {0}")]
    Load(Box<figment::Error>),
    /// A value out of its range, or settings that do not go together.
    #[error("configuration: {0}")]
    Invalid(String),
    #[error("configuration: identity.proxy_cert_header {0:?} is not a header name")]
    NotAHeaderName(String),
    /// See `Config::check_renewal_window`.
    #[error(
        "configuration: scep.validity_days ({validity}) must be greater than enroll.renew_days_before_expiry \
         ({renew}): each renewed certificate would be due for renewal as soon as it is issued, a renewal loop \
         (raise scep.validity_days, lower enroll.renew_days_before_expiry, or set it to 0 to turn automatic \
         renewal off)"
    )]
    RenewalLoop { validity: u32, renew: u32 },
    /// A reachable listen address without the settings that make it safe (see `Config::production_check`).
    #[error(
        "configuration: refusing to listen on {listen} (not loopback) without production settings:\n  - {}",
        missing.join("\n  - ")
    )]
    NotForProduction {
        listen: String,
        missing: Vec<String>,
    },
}

/// The section a key sits in, as its path of section names (empty: the top level).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section(pub Vec<String>);

impl fmt::Display for Section {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("the top-level section")
        } else {
            write!(f, "section [{}]", self.0.join("."))
        }
    }
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    File(PathBuf),
    /// The variable's name as it is set, e.g. `MDM_PUSH__KEY_SECRETS`.
    EnvVar(String),
    /// Any other source, by the name the configuration library gives it.
    Other(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(path) => write!(f, "file {}", path.display()),
            Origin::EnvVar(name) => write!(f, "environment variable {name}"),
            Origin::Other(name) => f.write_str(name),
        }
    }
}
