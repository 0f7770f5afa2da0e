//! Which bundles the server accepts, from `policies.trusted_signers` and `policies.require_signature`: a
//! signature present is always checked; an unsigned bundle passes only with `require_signature` off.

use super::bundle::Bundle;
use super::signature::{SignatureError, TrustedSigners};
use crate::config::PoliciesConfig;

#[derive(Debug, Clone)]
pub struct Trust {
    pub signers: TrustedSigners,
    pub require_signature: bool,
}

/// Why a bundle's signature is refused (a 400 naming it).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Untrusted {
    #[error("the bundle is not signed, and policies.require_signature is on")]
    Unsigned,
    #[error(transparent)]
    Signature(#[from] SignatureError),
}

/// What `/readyz` and `config --check` say of `[policies]` when it is a development setting.
pub fn warning(config: &PoliciesConfig) -> Option<String> {
    (!config.require_signature).then(|| {
        "policies.require_signature is off: policy versions are accepted unsigned; set \
         policies.trusted_signers and turn it on"
            .to_string()
    })
}

impl Trust {
    /// Read the trusted signers' files.
    pub fn load(config: &PoliciesConfig) -> Result<Self, SignatureError> {
        Ok(Self {
            signers: TrustedSigners::load(&config.trusted_signers)?,
            require_signature: config.require_signature,
        })
    }

    /// The signer of a bundle (None: unsigned and allowed), or why it is refused.
    pub fn signer(&self, b: &Bundle) -> Result<Option<String>, Untrusted> {
        match &b.signature {
            Some(sig) => Ok(Some(self.signers.verify(&b.digest, sig)?.to_string())),
            None if self.require_signature => Err(Untrusted::Unsigned),
            None => Ok(None),
        }
    }
}
