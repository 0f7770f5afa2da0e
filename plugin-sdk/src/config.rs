//! The plugin's configuration (capability `config`).
//!
//! The admin sets it as JSON when installing or reconfiguring the plugin; the manifest's
//! `default_config` applies when the admin sets none. Derive `Deserialize` with `#[serde(default)]`
//! fields so that a partial configuration works.

use serde::de::DeserializeOwned;

use crate::error::{PluginError, PluginResult};
use crate::host::config as host;

/// The configuration as JSON text (`{}` when none is set).
pub fn raw() -> String {
    host::get()
}

/// The configuration, deserialized.
pub fn get<T: DeserializeOwned>() -> PluginResult<T> {
    parse(&raw())
}

/// Deserializes configuration text, e.g. in `validate_config`; errors name the problem
/// ("config: missing field `prefixes` at line 1 column 2").
pub fn parse<T: DeserializeOwned>(text: &str) -> PluginResult<T> {
    serde_json::from_str(text).map_err(|e| PluginError::from(e).context("config"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Conf {
        #[serde(default)]
        prefixes: Vec<String>,
    }

    #[test]
    fn reads_the_configuration() {
        assert_eq!(raw(), "{}");
        assert_eq!(get::<Conf>().unwrap(), Conf { prefixes: vec![] });
        mock::set_config(&serde_json::json!({"prefixes": ["C02"]}));
        assert_eq!(get::<Conf>().unwrap().prefixes, vec!["C02".to_owned()]);
        mock::set_config_text("{");
        assert!(get::<Conf>()
            .unwrap_err()
            .to_string()
            .starts_with("config: json: "));
    }
}
