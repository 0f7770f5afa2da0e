//! Client certificates forwarded by a TLS-terminating proxy in a request header.

use percent_encoding::percent_decode_str;

use super::{decode_base64, DeviceCert, IdentityError, MAX_ENCODED_LEN};

const PEM_BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const PEM_END: &str = "-----END CERTIFICATE-----";

/// Parse a client certificate passed by a trusted TLS-terminating proxy in a header.
///
/// Accepted forms (surrounding whitespace is ignored):
/// * RFC 9440 `Client-Cert`: `:BASE64DER:` (a structured-field byte sequence; colons required);
/// * URL-escaped PEM, as nginx's `$ssl_client_escaped_cert` (`%20`/`%0A`) or Go's
///   `url.QueryEscape` (`+` for the spaces in the armour lines, `%2B` inside the base64);
/// * plain PEM.
///
/// A PEM value must be exactly one `CERTIFICATE` block with nothing else around it; a chain
/// or extra text is rejected rather than silently picking one certificate.
///
/// The header is only meaningful when it is set by a proxy that strips any client-supplied
/// copy; trusting it is the caller's decision.
pub fn parse_client_cert_header(value: &str) -> Result<DeviceCert, IdentityError> {
    let v = value.trim_matches(|c: char| c.is_ascii_whitespace());
    if v.is_empty() {
        return Err(malformed("empty header"));
    }
    if v.len() > MAX_ENCODED_LEN {
        return Err(malformed(format!(
            "header longer than {MAX_ENCODED_LEN} bytes"
        )));
    }

    if let Some(rest) = v.strip_prefix(':') {
        let b64 = rest
            .strip_suffix(':')
            .ok_or_else(|| malformed("RFC 9440 value must end with ':'"))?;
        // A byte sequence holds only base64 characters; the strict decoder rejects anything
        // else (including inner whitespace).
        let der = decode_base64(b64).map_err(|e| malformed(e.to_string()))?;
        return DeviceCert::from_der(&der);
    }

    // Base64 and PEM armour never contain '%', so decoding plain PEM is a no-op; whatever
    // the escaper chose to escape (nginx leaves '-' alone, others do not), the result must
    // then be exactly one PEM certificate.
    let decoded = percent_decode_str(v)
        .decode_utf8()
        .map_err(|_| malformed("URL-escaped value is not UTF-8"))?;
    parse_single_pem(&decoded)
}

fn malformed(msg: impl Into<String>) -> IdentityError {
    IdentityError::MalformedCertificate(msg.into())
}

/// Exactly one PEM certificate block, decoded by hand so that nothing outside it is accepted.
fn parse_single_pem(text: &str) -> Result<DeviceCert, IdentityError> {
    let t = text.trim_matches(|c: char| c.is_ascii_whitespace());
    let inner = strip_armour(t, true)
        .and_then(|rest| strip_armour(rest, false))
        .ok_or_else(|| malformed("expected RFC 9440 ':base64:', URL-escaped PEM or PEM"))?;
    if inner.contains('-') {
        return Err(malformed("expected exactly one PEM CERTIFICATE block"));
    }
    let b64: String = inner.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let der = decode_base64(&b64).map_err(|e| malformed(e.to_string()))?;
    DeviceCert::from_der(&der)
}

/// Strip the BEGIN (prefix) or END (suffix) line. Query-style escaping turns the space in the
/// armour into '+', which percent-decoding leaves alone, so accept that spelling too. Inside
/// the base64 a '+' is a real base64 character and is never touched.
fn strip_armour(s: &str, begin: bool) -> Option<&str> {
    let (canonical, plus) = if begin {
        (PEM_BEGIN, "-----BEGIN+CERTIFICATE-----")
    } else {
        (PEM_END, "-----END+CERTIFICATE-----")
    };
    if begin {
        s.strip_prefix(canonical).or_else(|| s.strip_prefix(plus))
    } else {
        s.strip_suffix(canonical).or_else(|| s.strip_suffix(plus))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{peer_file, self_signed};
    use super::*;
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};

    fn assert_malformed(r: Result<DeviceCert, IdentityError>) {
        assert!(
            matches!(r, Err(IdentityError::MalformedCertificate(_))),
            "expected MalformedCertificate, got {r:?}"
        );
    }

    #[test]
    fn all_forms_of_a_generated_certificate() {
        let (cert, _) = self_signed("mdm.test");
        let der = cert.to_der().unwrap();
        let pem = String::from_utf8(cert.to_pem().unwrap()).unwrap();
        let want = DeviceCert::from_der(&der).unwrap();

        let forms = [
            format!(":{}:", STANDARD.encode(&der)),
            format!(" :{}:\r\n", STANDARD.encode(&der)),
            format!(":{}:", STANDARD.encode(&der).trim_end_matches('=')),
            pem.clone(),
            pem.replace('\n', "\r\n"),
            // nginx $ssl_client_escaped_cert style: everything non-alphanumeric escaped.
            utf8_percent_encode(&pem, NON_ALPHANUMERIC).to_string(),
            // Go url.QueryEscape style: spaces as '+', '+' as %2B, '/' as %2F, '=' as %3D.
            pem.replace('+', "%2B")
                .replace('/', "%2F")
                .replace('=', "%3D")
                .replace('\n', "%0A")
                .replace(' ', "+"),
        ];
        for f in &forms {
            let got = parse_client_cert_header(f).unwrap_or_else(|e| panic!("{f:?}: {e}"));
            assert_eq!(got.fingerprint(), want.fingerprint(), "{f:?}");
        }
    }

    #[test]
    fn negatives() {
        let (cert, _) = self_signed("mdm.test");
        let der = cert.to_der().unwrap();
        let b64 = STANDARD.encode(&der);
        let pem = String::from_utf8(cert.to_pem().unwrap()).unwrap();
        let (cert2, _) = self_signed("second");
        let pem2 = String::from_utf8(cert2.to_pem().unwrap()).unwrap();

        let bad = [
            String::new(),
            "   ".into(),
            ":notbase64:".into(),
            "::".into(),
            ":".into(),
            b64.clone(),                            // missing colons
            format!(":{b64}"),                      // missing closing colon
            format!("{b64}:"),                      // missing opening colon
            format!(":{}:", &b64[..b64.len() / 2]), // truncated DER
            format!(":{}:", STANDARD.encode(b"hello")),
            format!(":{}\n{}:", &b64[..64], &b64[64..]), // whitespace inside byte sequence
            format!(":{b64}:;param=1"),
            format!(":{}:", STANDARD.encode([&der[..], &[0u8]].concat())), // trailing data
            "random text".into(),
            "Lorem ipsum dolor sit amet, consectetur adipiscing elit".into(),
            "-----BEGIN CERTIFICATE-----".into(),
            "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----".into(),
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----".into(),
            pem.replace("CERTIFICATE", "PRIVATE KEY"),
            format!("{pem}{pem2}"), // a chain: ambiguous
            format!("{pem}trailing junk"),
            format!("junk\n{pem}"),
            "-----BEGIN%20CERTIFICATE-----%0A%FF%FE%0A-----END%20CERTIFICATE-----".into(),
            "%".into(),
            "\u{0}\u{1}\u{7f}".into(),
            "A".repeat(MAX_ENCODED_LEN + 1),
            format!(":{}:", "A".repeat(10 * 1024 * 1024)),
        ];
        for v in &bad {
            assert_malformed(parse_client_cert_header(v));
        }
    }

    #[test]
    fn real_header_forms_give_the_same_certificate() {
        let Some(rfc) = peer_file("nanomdm/certs/cert-header.rfc9440.txt") else {
            return;
        };
        let Some(escaped) = peer_file("nanomdm/certs/cert-header.query-escaped-pem.txt") else {
            return;
        };
        let rfc = String::from_utf8(rfc).unwrap();
        let escaped = String::from_utf8(escaped).unwrap();
        // Go's QueryEscape output: '+' for the armour's spaces, %0A for newlines.
        assert!(escaped.starts_with("-----BEGIN+CERTIFICATE-----%0A"));

        let a = parse_client_cert_header(&rfc).unwrap();
        let b = parse_client_cert_header(&escaped).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.subject().unwrap(), "CN=mdm.example.org");

        // RFC 9440 carries the DER itself, so the fingerprint is over exactly those bytes.
        let der = STANDARD.decode(rfc.trim().trim_matches(':')).unwrap();
        assert_eq!(a.fingerprint(), hex::encode(openssl::sha::sha256(&der)));

        // The same certificate as plain PEM and as nginx-style escaped PEM.
        let plain = String::from_utf8(
            openssl::x509::X509::from_der(&der)
                .unwrap()
                .to_pem()
                .unwrap(),
        )
        .unwrap();
        let c = parse_client_cert_header(&plain).unwrap();
        assert_eq!(c.fingerprint(), a.fingerprint());
        let nginx = utf8_percent_encode(&plain, NON_ALPHANUMERIC).to_string();
        assert_eq!(
            parse_client_cert_header(&nginx).unwrap().fingerprint(),
            a.fingerprint()
        );
    }
}
