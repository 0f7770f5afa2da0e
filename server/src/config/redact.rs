//! URLs printed without their credentials: [`redact_url`], and [`SecretUrl`], the configuration's URL type
//! whose `Debug` prints only that.

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::fmt;

/// A configured URL that may carry a credential (a userinfo password, a token parameter): `Debug` prints it
/// through [`redact_url`], so it still says where it points; the whole text only through
/// [`ExposeSecret::expose_secret`], where it is used. Wiped from memory when dropped, like any
/// [`SecretString`].
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct SecretUrl(SecretString);

impl SecretUrl {
    /// The URL safe to print or log (see [`redact_url`]).
    pub fn redacted(&self) -> String {
        redact_url(self.0.expose_secret())
    }
}

impl ExposeSecret<str> for SecretUrl {
    fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.redacted(), f)
    }
}

/// Written as [`SecretUrl::redacted`]: where it points, never its credentials.
impl serde::Serialize for SecretUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

impl From<String> for SecretUrl {
    fn from(url: String) -> Self {
        Self(url.into())
    }
}

impl From<&str> for SecretUrl {
    fn from(url: &str) -> Self {
        Self(url.into())
    }
}

/// What a redacted credential in a URL reads as: plain letters, so no URL encoding changes it.
const URL_REDACTED: &str = "REDACTED";

/// `url` safe to print or log: the userinfo password and the value of every query (or fragment) parameter
/// whose name looks like a credential ([`is_secret_param`]) become [`URL_REDACTED`]; the rest is kept as
/// written, so the URL still says where it points. The one function for every URL the configuration prints
/// or logs (`postgres://u:pw@h/db?password=..`, sinks' `https://u:pw@h/?token=..`).
pub fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return redact_unparsed(url);
    };
    if parsed.password().is_some() {
        // Fails only for URLs that cannot have a password, which this one has.
        let _ = parsed.set_password(Some(URL_REDACTED));
    }
    if let Some(q) = parsed.query().map(redact_params) {
        parsed.set_query(Some(&q));
    }
    if let Some(f) = parsed.fragment().map(redact_params) {
        parsed.set_fragment(Some(&f));
    }
    parsed.into()
}

/// `a=1&token=x` → `a=1&token=REDACTED`, each pair otherwise byte for byte as it was.
fn redact_params(raw: &str) -> String {
    raw.split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if is_secret_param(name) => format!("{name}={URL_REDACTED}"),
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Whether a query parameter's name looks like it carries a credential: it contains (ignoring case,
/// `-`, `_`, `.` and percent-encoding) password/pass/pwd, token, secret, key, sig(nature), auth, credential
/// or session. Printing a harmless value as redacted costs little; printing a secret cannot be undone.
fn is_secret_param(name: &str) -> bool {
    const SECRET_WORDS: &[&str] = &[
        "pass",
        "pwd",
        "token",
        "secret",
        "key",
        "sig",
        "auth",
        "credential",
        "session",
    ];
    let name: String = percent_encoding::percent_decode_str(name)
        .decode_utf8_lossy()
        .chars()
        .filter(|c| !matches!(c, '-' | '_' | '.'))
        .flat_map(char::to_lowercase)
        .collect();
    SECRET_WORDS.iter().any(|w| name.contains(w))
}

/// A string that is not a URL (a typo in the configuration): what would be userinfo and the whole query
/// are hidden, since there is no telling which part is secret.
fn redact_unparsed(s: &str) -> String {
    let (before_query, query) = match s.split_once('?') {
        Some((b, _)) => (b, Some(URL_REDACTED)),
        None => (s, None),
    };
    let (scheme, rest) = match before_query.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), before_query),
    };
    let mut out = match rest.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}{URL_REDACTED}@{host}"),
        None => before_query.to_string(),
    };
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every credential a URL can carry is hidden, wherever it sits; the rest still says where it points.
    #[test]
    fn urls_are_printed_without_credentials() {
        let cases: &[(&str, &[&str], &[&str])] = &[
            (
                "postgres://mdm:hunter2@db:5432/mdm?sslmode=require&password=pw2",
                &["postgres://mdm:REDACTED@db:5432/mdm", "sslmode=require", "password=REDACTED"][..],
                &["hunter2", "pw2"][..],
            ),
            (
                "https://hook:s3cr3t@hooks.example.com/mdm?token=tok1&x=1&api_key=k2&X-Amz-Signature=sig3&sig=s4&auth=a5&pass=p6#access_token=f7",
                &["https://hook:REDACTED@hooks.example.com/mdm?token=REDACTED&x=1&api_key=REDACTED", "X-Amz-Signature=REDACTED", "sig=REDACTED", "auth=REDACTED", "pass=REDACTED", "#access_token=REDACTED"],
                &["s3cr3t", "tok1", "k2", "sig3", "s4", "a5", "p6", "f7"],
            ),
            (
                "https://h.example.com/?Client%5FSecret=c8&apiKey=c9&secret",
                &["https://h.example.com/?Client%5FSecret=REDACTED&apiKey=REDACTED&secret"],
                &["c8", "c9"],
            ),
            // Not a URL at all: userinfo and the whole query go.
            ("https://u:p%zz@x y?token=t10", &["https://REDACTED@x y?REDACTED"], &["p%zz", "t10"]),
        ];
        for &(url, kept, hidden) in cases {
            let r = redact_url(url);
            for k in kept {
                assert!(r.contains(k), "{url}: {k} missing from {r}");
            }
            for h in hidden {
                assert!(!r.contains(h), "{url}: {h} shown in {r}");
            }
        }
        // Nothing to hide: unchanged.
        let plain = "https://hooks.example.com/mdm?x=1&y=two";
        assert_eq!(redact_url(plain), plain);
        assert_eq!(redact_url("postgres://mdm@db/mdm"), "postgres://mdm@db/mdm");
    }

    /// A `SecretUrl` prints as its redacted text, quoted like a string, and gives the whole URL only when
    /// asked.
    #[test]
    fn a_secret_url_debugs_redacted_and_exposes_the_whole_url() {
        let url = "postgres://mdm:hunter2@db/mdm?password=pw2";
        let s = SecretUrl::from(url);
        assert_eq!(
            format!("{s:?}"),
            "\"postgres://mdm:REDACTED@db/mdm?password=REDACTED\""
        );
        assert_eq!(s.expose_secret(), url);
        let read: SecretUrl = serde_json::from_value(serde_json::json!(url)).unwrap();
        assert_eq!(read.expose_secret(), url);
    }
}
