//! Pre-provisioned device identities: one CA for the run, and a certificate per device issued by it.
//!
//! RSA-2048 key generation costs ~50–100 ms, too slow for 10k–100k devices, so device keys come from a
//! small pool (generated in parallel, optionally cached on disk) while every device still gets its own
//! certificate (own serial number, CN = UDID): the server pins the SHA-256 of the certificate DER, which
//! stays unique per device, and never compares keys. The CA signs with P-256 so issuing 100k
//! certificates takes seconds. A later "enroll over SCEP" mode replaces [`Provisioner::identity`] with a
//! certificate from the server's CA; everything after it (signing, pinning) is the same.

use crate::device::Identity;
use mdm_server::pki::{self, KeyPair, Usage};
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::{X509NameBuilder, X509};
use std::path::{Path, PathBuf};

/// The device key algorithm. Apple devices use RSA-2048 identities; P-256 keys sign ~25x faster and
/// exist to separate the load generator's signing cost from the server's cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyKind {
    Rsa2048,
    P256,
}

impl KeyKind {
    fn generate(self) -> PKey<Private> {
        match self {
            KeyKind::Rsa2048 => PKey::from_rsa(Rsa::generate(2048).expect("rsa")).expect("pkey"),
            KeyKind::P256 => {
                let g = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("curve");
                PKey::from_ec_key(EcKey::generate(&g).expect("ec")).expect("pkey")
            }
        }
    }

    fn label(self) -> &'static str {
        match self {
            KeyKind::Rsa2048 => "rsa2048",
            KeyKind::P256 => "p256",
        }
    }
}

/// Run `f(i)` for `i in 0..n` on every core, keeping the order of results.
pub fn parallel_map<T: Send>(n: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let threads = std::thread::available_parallelism()
        .map(|p| p.get())
        .unwrap_or(1)
        .min(n.max(1));
    let chunk = n.div_ceil(threads.max(1)).max(1);
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .step_by(chunk)
            .map(|start| {
                s.spawn(move || (start..(start + chunk).min(n)).map(f).collect::<Vec<_>>())
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("worker thread"))
            .collect()
    })
}

/// Device keys shared round-robin by the devices' (unique) certificates.
pub struct KeyPool {
    pub kind: KeyKind,
    keys: Vec<PKey<Private>>,
}

impl KeyPool {
    /// `size` keys, read from `cache_dir/<kind>-<size>.pem` when present, else generated in parallel and
    /// written there.
    pub fn load_or_generate(kind: KeyKind, size: usize, cache_dir: Option<&Path>) -> Self {
        let size = size.max(1);
        let path = cache_dir.map(|d| d.join(format!("device-keys-{}-{size}.pem", kind.label())));
        if let Some(p) = &path {
            if let Ok(pem) = std::fs::read(p) {
                if let Some(keys) = parse_keys(&pem, size) {
                    return Self { kind, keys };
                }
            }
        }
        let keys = parallel_map(size, |_| kind.generate());
        if let Some(p) = &path {
            let mut pem = Vec::new();
            for k in &keys {
                pem.extend(k.private_key_to_pem_pkcs8().expect("pem"));
            }
            if let Some(dir) = p.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            // A cache only: failing to write it costs the next run the generation time.
            let _ = std::fs::write(p, pem);
        }
        Self { kind, keys }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn key(&self, i: usize) -> &PKey<Private> {
        &self.keys[i % self.keys.len()]
    }
}

fn parse_keys(pem: &[u8], want: usize) -> Option<Vec<PKey<Private>>> {
    let text = std::str::from_utf8(pem).ok()?;
    let mut keys = Vec::new();
    for block in text.split_inclusive("-----END PRIVATE KEY-----\n") {
        if block.trim().is_empty() {
            continue;
        }
        keys.push(PKey::private_key_from_pem(block.as_bytes()).ok()?);
    }
    (keys.len() == want).then_some(keys)
}

/// Where key pools are cached by default: `target/mdm-sim` in the workspace.
pub fn default_cache_dir() -> PathBuf {
    crate::plugins::workspace_root()
        .join("target")
        .join("mdm-sim")
}

/// The run's CA and key pool: issues each device its identity.
pub struct Provisioner {
    ca: KeyPair,
    pool: KeyPool,
    /// Device certificates are numbered from here (random, so runs of one CA do not repeat serials).
    serial_base: u64,
}

impl Provisioner {
    /// A provisioner whose CA is kept in `dir` (`device-ca.pem`, `device-ca.key`), made there the first time:
    /// a server started once with `identity.device_ca_file` naming that PEM trusts every later run.
    pub fn with_ca_in(pool: KeyPool, dir: &Path) -> std::io::Result<Self> {
        let (cert_file, key_file) = (dir.join("device-ca.pem"), dir.join("device-ca.key"));
        if let (Ok(cert), Ok(key)) = (std::fs::read(&cert_file), std::fs::read(&key_file)) {
            let cert = X509::from_pem(&cert).map_err(std::io::Error::other)?;
            let key = PKey::private_key_from_pem(&key).map_err(std::io::Error::other)?;
            return Ok(Self {
                ca: KeyPair { cert, key },
                pool,
                serial_base: random_serial_base(),
            });
        }
        let made = Self::new(pool);
        std::fs::create_dir_all(dir)?;
        std::fs::write(&cert_file, made.ca_pem())?;
        let key = made
            .ca
            .key
            .private_key_to_pem_pkcs8()
            .map_err(std::io::Error::other)?;
        std::fs::write(&key_file, key)?;
        Ok(made)
    }

    /// Where [`Provisioner::with_ca_in`] keeps the CA certificate.
    pub fn ca_file_in(dir: &Path) -> PathBuf {
        dir.join("device-ca.pem")
    }

    pub fn new(pool: KeyPool) -> Self {
        let g = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("curve");
        let ca_key = PKey::from_ec_key(EcKey::generate(&g).expect("ec")).expect("pkey");
        let now = now();
        let ca_cert = pki::build_certificate(
            &pki::name("mdm-sim device CA", "mdm-sim").expect("name"),
            &ca_key,
            Usage::Ca,
            now - 3600,
            now + 3650 * 86_400,
            &serial(1),
            None,
            Some(&ca_key),
        )
        .expect("CA certificate");
        Self {
            ca: KeyPair {
                cert: ca_cert,
                key: ca_key,
            },
            pool,
            serial_base: random_serial_base(),
        }
    }

    /// PEM of the CA, for `identity.device_ca_file`.
    pub fn ca_pem(&self) -> Vec<u8> {
        self.ca.cert.to_pem().expect("pem")
    }

    pub fn key_kind(&self) -> KeyKind {
        self.pool.kind
    }

    /// Device `index`'s identity: a pool key and a certificate of its own (serial = index + 2, CN = udid),
    /// as a SCEP CA issues them (client auth, digital signature).
    pub fn identity(&self, index: usize, udid: &str) -> Identity {
        let key = self.pool.key(index).clone();
        let mut name = X509NameBuilder::new().expect("name");
        name.append_entry_by_text("CN", udid).expect("cn");
        let now = now();
        let cert = pki::build_certificate(
            &name.build(),
            &key,
            Usage::ClientAuth,
            now - 3600,
            now + 365 * 86_400,
            &serial(self.serial_base + index as u64),
            Some(&self.ca),
            None,
        )
        .expect("device certificate");
        Identity { key, cert }
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Past the CA's own serial (1), with room for a billion devices before it could wrap.
fn random_serial_base() -> u64 {
    let mut b = [0u8; 8];
    openssl::rand::rand_bytes(&mut b).expect("rand");
    2 + u64::from_le_bytes(b) % (1 << 62)
}

fn serial(n: u64) -> openssl::asn1::Asn1Integer {
    BigNum::from_dec_str(&n.to_string())
        .and_then(|b| b.to_asn1_integer())
        .expect("serial")
}
