//! Reading the configuration: the file, then the environment, over the defaults; and what a refusal says.

use super::{Config, ConfigError, Origin, Section};
use figment::error::Kind;
use figment::providers::{Env, Format, Toml};
use figment::{Figment, Provider, Source};
use std::path::Path;

/// Every environment variable with this prefix is a setting, except [`NOT_SETTINGS`].
const ENV_PREFIX: &str = "MDM_";

/// The `MDM_*` variables that are not settings (lowercase, without the prefix): the config file's path (read
/// by the command line) and the switches of the project's test and fuzzing tools, which may be set in the
/// environment a server is started from. `MDM_TEST_*` belong to the test suite too.
const NOT_SETTINGS: &[&str] = &[
    "config",
    "crash_seed",
    "fuzz_corpus",
    "seed_packages",
    "sim_server_bin",
];

impl Config {
    /// The defaults, then the file (if given; it must exist), then `MDM_*` variables; validated.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut fig = Figment::new();
        if let Some(f) = file {
            if !f.exists() {
                return Err(ConfigError::FileNotFound(f.to_path_buf()));
            }
            fig = fig.merge(Toml::file(f));
        }
        // Every struct has `#[serde(default)]`: what no source sets keeps `Config::default()`'s value.
        let cfg: Config = fig.merge(environment()).extract().map_err(refusal)?;
        cfg.validate()?;
        Ok(cfg)
    }
}

fn environment() -> Env {
    Env::prefixed(ENV_PREFIX).split("__").filter(|k| {
        // The key keeps the variable's case.
        let k = k.as_str().to_ascii_lowercase();
        !k.starts_with("test_") && !NOT_SETTINGS.contains(&k.as_str())
    })
}

/// An unknown key becomes [`ConfigError::UnknownKey`], naming its section and source; anything else keeps
/// the library's own description.
fn refusal(e: figment::Error) -> ConfigError {
    let Kind::UnknownField(key, known) = &e.kind else {
        return ConfigError::Load(Box::new(e));
    };
    // The path ends with the key itself; before it, the sections it sits in.
    let section = e.path.split_last().map_or(Vec::new(), |(_, s)| s.to_vec());
    let origin = match &e.metadata {
        Some(md) if *md == environment().metadata() => Origin::EnvVar(env_var_name(&e.path)),
        Some(md) => match &md.source {
            Some(Source::File(path)) => Origin::File(path.clone()),
            _ => Origin::Other(md.name.to_string()),
        },
        None => Origin::Other("an unknown source".into()),
    };
    ConfigError::UnknownKey {
        key: key.clone(),
        section: Section(section),
        origin,
        known: known.join(", "),
    }
}

/// The variable a key path came from: `["push", "key_secrets"]` is `MDM_PUSH__KEY_SECRETS`, spelt as it is
/// set (the prefix and names match in any case).
fn env_var_name(path: &[String]) -> String {
    let name = format!("{ENV_PREFIX}{}", path.join("__")).to_ascii_uppercase();
    std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .find(|k| k.eq_ignore_ascii_case(&name))
        .unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ExposeSecret;

    fn load_toml(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, text).unwrap();
        Config::load(Some(&f))
    }

    /// The key and section an unknown-key refusal names, and its message; it names the file too.
    fn unknown_key(text: &str) -> (String, String, String) {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, text).unwrap();
        let e = Config::load(Some(&f)).unwrap_err();
        let message = e.to_string();
        let ConfigError::UnknownKey {
            key,
            section,
            origin,
            ..
        } = e
        else {
            panic!("not an unknown key: {message}")
        };
        assert_eq!(origin, Origin::File(f.clone()));
        assert!(
            message.contains(&format!("from file {} (the keys there are: ", f.display())),
            "{message}"
        );
        (key, section.to_string(), message)
    }

    #[test]
    fn defaults_are_valid_and_file_overrides() {
        Config::default().validate().unwrap();
        let c = load_toml(
            "listen = \"0.0.0.0:9999\"\nretention_days = 7\n[identity]\nproxy_cert_header = \"X-Client-Cert\"\n",
        )
        .unwrap();
        assert_eq!(c.listen, "0.0.0.0:9999");
        assert_eq!(c.retention_days, 7);
        assert_eq!(
            c.identity.proxy_cert_header.as_deref(),
            Some("X-Client-Cert")
        );
        // What the file leaves out keeps its default.
        assert_eq!(c.push.repush_interval_secs, 600);
        assert_eq!(c.plugins.max_concurrent, 64);
        assert!(load_toml("").is_ok());
        assert!(matches!(
            Config::load(Some(Path::new("/nonexistent/c.toml"))),
            Err(ConfigError::FileNotFound(_))
        ));
    }

    /// A misspelt key anywhere stops the load, naming the key, its section and the file.
    #[test]
    fn unknown_keys_are_refused_with_their_section_and_file() {
        let (key, section, message) = unknown_key("listen_address = \"0.0.0.0:1\"\n");
        assert_eq!(
            (key.as_str(), section.as_str()),
            ("listen_address", "the top-level section")
        );
        assert!(
            message.starts_with(
                "configuration: unknown key `listen_address` in the top-level section, from file "
            ) && message.contains("(the keys there are: listen, data_dir, "),
            "{message}"
        );

        let (key, section, message) =
            unknown_key("[push]\nkey_secrets = \"a-sealing-secret-of-length\"\n");
        assert_eq!(
            (key.as_str(), section.as_str()),
            ("key_secrets", "section [push]")
        );
        assert!(
            message.starts_with(
                "configuration: unknown key `key_secrets` in section [push], from file "
            ) && message.contains("key_secret,"),
            "{message}"
        );
        // The value, a would-be secret, is not quoted.
        assert!(!message.contains("a-sealing-secret"), "{message}");

        let (key, section, _) =
            unknown_key("[plugins.sinks.hook]\nurl = \"https://h.example.com\"\nheader = {}\n");
        assert_eq!(
            (key.as_str(), section.as_str()),
            ("header", "section [plugins.sinks.hook]")
        );

        for (text, key, section) in [
            (
                "[http]\ntrusted_proxy = []\n",
                "trusted_proxy",
                "section [http]",
            ),
            (
                "[identity]\nproxy_cert = \"x\"\n",
                "proxy_cert",
                "section [identity]",
            ),
            ("[log]\nlevel = \"debug\"\n", "level", "section [log]"),
            ("[tls]\ncert = \"c.pem\"\n", "cert", "section [tls]"),
            (
                "[scep]\nca_key_pass = \"p\"\n",
                "ca_key_pass",
                "section [scep]",
            ),
            (
                "[enroll]\npublic_uri = \"https://x\"\n",
                "public_uri",
                "section [enroll]",
            ),
            ("[plugins]\nsink = 1\n", "sink", "section [plugins]"),
        ] {
            let (k, s, _) = unknown_key(text);
            assert_eq!((k.as_str(), s.as_str()), (key, section), "{text}");
        }
    }

    /// An unknown key from the environment names the variable (`MDM_` and the key's path joined by `__`),
    /// spelt as it is set, else in capitals. (The binary's test sets one: `server/tests/cli_config.rs`.)
    #[test]
    fn an_unknown_key_from_the_environment_names_its_variable() {
        let path: Vec<String> = vec!["push".into(), "key_secrets_set_nowhere".into()];
        assert_eq!(env_var_name(&path), "MDM_PUSH__KEY_SECRETS_SET_NOWHERE");
        let err = ConfigError::UnknownKey {
            key: "key_secrets".into(),
            section: Section(vec!["push".into()]),
            origin: Origin::EnvVar("MDM_PUSH__KEY_SECRETS".into()),
            known: "environment, key_secret".into(),
        };
        assert_eq!(
            err.to_string(),
            "configuration: unknown key `key_secrets` in section [push], from environment variable \
             MDM_PUSH__KEY_SECRETS (the keys there are: environment, key_secret)"
        );
    }

    /// Secrets read from a file are there to use, and not in what `Debug` prints.
    #[test]
    fn secrets_read_from_a_file_are_usable_and_not_printed() {
        let c = load_toml(
            "database_url = \"postgres://mdm:dbpw1@db/mdm\"\n[push]\nkey_secret = \"sealing-secret-2345\"\n\
             [scep]\nca_key_passphrase = \"ca-pass-3\"\n[enroll]\nsigning_key_passphrase = \"sign-pass-4\"\n\
             [plugins.sinks.hook]\nurl = \"https://h.example.com/?token=tok5\"\nheaders = { Authorization = \"Bearer tok6\" }\n",
        )
        .unwrap();
        let push_secret = c.push.key_secret.as_ref().unwrap();
        assert_eq!(push_secret.expose_secret(), "sealing-secret-2345");
        assert_eq!(
            c.plugins.sinks["hook"].headers["Authorization"].expose_secret(),
            "Bearer tok6"
        );
        let printed = format!("{c:?}");
        for secret in [
            "dbpw1",
            "sealing-secret",
            "ca-pass-3",
            "sign-pass-4",
            "tok5",
            "tok6",
        ] {
            assert!(!printed.contains(secret), "{secret} printed");
        }
    }

    /// `sqlite_writer_cpu` reads as a word, a number, or digits (as an environment variable may give it);
    /// anything else is refused with what it should be.
    #[test]
    fn the_writer_s_cpu_is_a_word_or_a_number() {
        use crate::storage::WriterCpu;
        let with =
            |v: &str| load_toml(&format!("sqlite_writer_cpu = {v}\n")).map(|c| c.sqlite_writer_cpu);
        assert_eq!(Config::default().sqlite_writer_cpu, WriterCpu::Auto);
        assert_eq!(with("\"auto\"").unwrap(), WriterCpu::Auto);
        assert_eq!(with("\"none\"").unwrap(), WriterCpu::Anywhere);
        assert_eq!(with("1").unwrap(), WriterCpu::Cpu(1));
        assert_eq!(with("\"3\"").unwrap(), WriterCpu::Cpu(3));
        let err = with("\"last\"").unwrap_err().to_string();
        assert!(err.contains("\"auto\", \"none\" or a CPU number"), "{err}");
        // What `config` prints reads back as the same setting.
        for cpu in [WriterCpu::Auto, WriterCpu::Anywhere, WriterCpu::Cpu(2)] {
            let text = serde_json::to_string(&cpu).unwrap();
            assert_eq!(serde_json::from_str::<WriterCpu>(&text).unwrap(), cpu);
        }
    }

    /// `http.trusted_proxies` is parsed as it is read; a bad entry is refused there, named.
    #[test]
    fn trusted_proxies_are_parsed_when_read() {
        let c = load_toml("[http]\ntrusted_proxies = [\"10.0.0.0/8\"]\n").unwrap();
        assert!(c.http.trusted_proxies.contains("10.1.2.3".parse().unwrap()));
        let err = load_toml("[http]\ntrusted_proxies = [\"proxy.internal\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"proxy.internal\" is not an IP address or CIDR block")
                && err.contains("http.trusted_proxies"),
            "{err}"
        );
    }
}
