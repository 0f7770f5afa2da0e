//! `mdm-server config`: the configuration in effect as TOML that can be pasted into a file, secrets left
//! out (named in a comment, to be set again) and URLs without their credentials.

use super::{Config, ExposeSecret};

impl Config {
    /// The configuration as a TOML file would set it, headed by comments naming what is left out.
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        let mut out = String::from(
            "# The configuration in effect: defaults, then the file, then MDM_* variables.\n",
        );
        let hidden = self.secrets_set();
        if !hidden.is_empty() {
            out.push_str(&format!(
                "# Secrets are not shown; set again where this is used: {}.\n",
                hidden.join(", ")
            ));
        }
        if self.urls_with_credentials() {
            out.push_str(
                "# URL credentials show as REDACTED; set them again where this is used.\n",
            );
        }
        out.push('\n');
        out.push_str(&toml::to_string_pretty(self)?);
        Ok(out)
    }

    /// The secrets that are set, by key.
    fn secrets_set(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (key, set) in [
            ("push.key_secret", self.push.key_secret.is_some()),
            (
                "scep.ca_key_passphrase",
                self.scep.ca_key_passphrase.is_some(),
            ),
            (
                "enroll.signing_key_passphrase",
                self.enroll.signing_key_passphrase.is_some(),
            ),
        ] {
            if set {
                out.push(key.to_string());
            }
        }
        for (name, sink) in &self.plugins.sinks {
            for header in sink.headers.keys() {
                out.push(format!("plugins.sinks.{name}.headers.{header}"));
            }
        }
        out
    }

    fn urls_with_credentials(&self) -> bool {
        let urls = self
            .database_url
            .iter()
            .chain(&self.enroll.public_url)
            .chain(self.plugins.sinks.values().map(|s| &s.url));
        urls.into_iter().any(|u| u.redacted() != u.expose_secret())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Config {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, text).unwrap();
        Config::load(Some(&f)).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    /// What `config` prints loads back as the same configuration.
    #[test]
    fn the_printed_configuration_loads_back_as_itself() {
        let set = load(
            r#"
listen = "127.0.0.1:9000"
sqlite_writer_cpu = 1
workers = 3
[http]
trusted_proxies = ["10.0.0.5", "10.1.0.0/16", "fd00::/8"]
[tls]
self_signed_names = ["mdm.local"]
[ddm]
organization_name = "Example"
[ddm.properties]
region = "eu"
tier = 2
[plugins.sinks.hook]
url = "https://hooks.example.com/in"
batch_max_events = 5
[policies]
event_sinks = ["hook"]
pilot_percent = 5
"#,
        );
        for c in [Config::default(), set] {
            let printed = c.to_toml().unwrap();
            let again = load(&printed).to_toml().unwrap();
            assert_eq!(printed, again);
        }
    }

    #[test]
    fn secrets_are_left_out_and_named() {
        let c = load(
            r#"
database_url = "postgres://mdm:hunter2hunter2@db/mdm"
[push]
key_secret = "sealing-secret-0123456789"
[plugins.sinks.hook]
url = "https://hooks.example.com/in?token=tok3n"
headers = { Authorization = "Bearer s3cr3t" }
"#,
        );
        let printed = c.to_toml().unwrap();
        for secret in ["hunter2hunter2", "sealing-secret", "tok3n", "s3cr3t"] {
            assert!(!printed.contains(secret), "{secret} in:\n{printed}");
        }
        assert!(
            printed.contains("push.key_secret, plugins.sinks.hook.headers.Authorization"),
            "{printed}"
        );
        assert!(printed.contains("REDACTED"), "{printed}");
        assert!(printed.contains("db/mdm"), "where it points is still said");
    }
}
