//! TLS terminated by the server itself, with client certificates for mutual TLS.
//!
//! Every connection is asked for a client certificate, and any certificate is accepted at the TLS layer:
//! the handshake still proves the client holds the certificate's key, while trust (issued by our SCEP CA or
//! a configured root) is decided per request, so `/enroll` and `/scep` work without one and an MDM request
//! with a foreign certificate gets a clear 403 instead of a failed handshake.

use crate::config::TlsConfig;
use crate::pki::{self, KeyPair, PkiError, Usage};
use actix_web::dev::Extensions;
use openssl::ssl::{SslAcceptor, SslAcceptorBuilder, SslFiletype, SslMethod, SslVerifyMode};
use openssl::stack::Stack;
use openssl::x509::{X509Name, X509};
use std::any::Any;
use std::path::Path;

/// Present on every request that came over our TLS listener: the client certificate (DER), if one was sent.
#[derive(Clone, Debug)]
pub struct TlsPeer {
    pub certificate: Option<Vec<u8>>,
}

/// The acceptor: configured certificate files, or a generated self-signed one (development).
pub fn acceptor(
    cfg: &TlsConfig,
    data_dir: &Path,
    secret: &str,
    client_cas: &[&X509],
) -> Result<SslAcceptorBuilder, PkiError> {
    let e = |ctx: &str| {
        let ctx = ctx.to_string();
        move |err| PkiError::crypto(ctx, err)
    };
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).map_err(e("TLS"))?;
    match (&cfg.cert_file, &cfg.key_file) {
        (Some(cert), Some(key)) => {
            b.set_certificate_chain_file(cert)
                .map_err(e(&format!("TLS certificate {}", cert.display())))?;
            b.set_private_key_file(key, SslFiletype::PEM)
                .map_err(e(&format!("TLS key {}", key.display())))?;
        }
        _ => {
            let pair = self_signed(cfg, data_dir, secret)?;
            b.set_certificate(&pair.cert)
                .map_err(e("TLS certificate"))?;
            b.set_private_key(&pair.key).map_err(e("TLS key"))?;
        }
    }
    b.check_private_key().map_err(e("TLS key pair"))?;
    // Name our CAs in the CertificateRequest so a device picks its MDM identity.
    let mut names = Stack::<X509Name>::new().map_err(e("TLS"))?;
    for ca in client_cas {
        names
            .push(ca.subject_name().to_owned().map_err(e("TLS"))?)
            .map_err(e("TLS"))?;
    }
    b.set_client_ca_list(names);
    b.set_verify_callback(SslVerifyMode::PEER, |_preverified, _ctx| true);
    Ok(b)
}

/// When the server's TLS certificate (the configured one, else the self-signed one) expires, Unix seconds.
pub fn not_after(cfg: &TlsConfig, data_dir: &Path, secret: &str) -> Result<i64, PkiError> {
    let cert = match &cfg.cert_file {
        Some(file) => {
            let pem = std::fs::read(file).map_err(|err| PkiError::Io(file.clone(), err))?;
            X509::from_pem(&pem).map_err(|err| {
                PkiError::crypto(format!("TLS certificate {}", file.display()), err)
            })?
        }
        None => self_signed(cfg, data_dir, secret)?.cert,
    };
    pki::unix_time(cert.not_after())
}

/// `tls-server.pem`/`.key` in the data dir, for localhost, 127.0.0.1 and the configured names.
fn self_signed(cfg: &TlsConfig, data_dir: &Path, secret: &str) -> Result<KeyPair, PkiError> {
    pki::load_or_create(data_dir, "tls-server", secret, || {
        let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        names.extend(cfg.self_signed_names.iter().cloned());
        let subject = pki::name("mdm-server development", "mdm-server")?;
        pki::generate(&subject, Usage::TlsServer(&names), 825, None)
    })
}

/// actix's per-connection hook: record the TLS client certificate for the request handlers.
pub fn on_connect(conn: &dyn Any, ext: &mut Extensions) {
    type Tls = actix_tls::accept::openssl::TlsStream<actix_web::rt::net::TcpStream>;
    if let Some(tls) = conn.downcast_ref::<Tls>() {
        let certificate = tls.ssl().peer_certificate().and_then(|c| c.to_der().ok());
        ext.insert(TlsPeer { certificate });
    }
}
