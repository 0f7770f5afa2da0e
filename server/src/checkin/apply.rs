//! Each message's own effect, inside its transaction (the writes themselves are `storage::checkin`'s).

use super::{CheckinError, MdmResponse};
use crate::config::UserAuthenticatePolicy;
use crate::protocol::checkin::TokenUpdate;
use crate::protocol::{to_xml, CheckinMessage, CheckinPayload, EnrollmentRef};
use crate::storage::checkin::{self as store, TokenUpdateGuard};
use crate::storage::devices::{self, Device};
use crate::storage::StorageError;
use plist::{Dictionary, Value};
use sea_orm::ConnectionTrait;

/// The message's own effect and the device's answer, for a sender [`super::authorize`] has let through.
pub(super) async fn message<C: ConnectionTrait>(
    txn: &C,
    msg: &CheckinMessage,
    device: &Device,
    policy: UserAuthenticatePolicy,
    now: i64,
    next_push_at: i64,
) -> Result<MdmResponse, CheckinError> {
    let e = &msg.enrollment;
    Ok(match &msg.payload {
        CheckinPayload::TokenUpdate(t) => {
            let guard = TokenUpdateGuard::Any;
            token_update(txn, e, t, &msg.raw, guard, now, next_push_at).await?;
            MdmResponse::Empty
        }
        CheckinPayload::CheckOut => {
            store::checkout(txn, e, now).await?;
            tracing::info!(enrollment = %e.id, "device checked out");
            MdmResponse::Empty
        }
        CheckinPayload::UserAuthenticate { digest_response } => {
            user_authenticate(policy, digest_response.as_deref())?
        }
        CheckinPayload::SetBootstrapToken { bootstrap_token } => {
            devices::set_bootstrap_token(txn, &e.device_id, bootstrap_token.clone(), now).await?;
            MdmResponse::Empty
        }
        CheckinPayload::GetBootstrapToken => {
            let mut d = Dictionary::new();
            if let Some(t) = &device.bootstrap_token {
                d.insert("BootstrapToken".into(), Value::Data(t.clone()));
            }
            MdmResponse::Plist(to_xml(&d))
        }
        // Taken by their own paths before any transaction.
        CheckinPayload::Authenticate(_)
        | CheckinPayload::DeclarativeManagement { .. }
        | CheckinPayload::GetToken { .. } => unreachable!("not a message applied here"),
    })
}

/// UserAuthenticate by the configured policy: declined, or accepted without a digest (the first round's
/// empty challenge tells the device none is needed).
fn user_authenticate(
    policy: UserAuthenticatePolicy,
    digest_response: Option<&str>,
) -> Result<MdmResponse, CheckinError> {
    match policy {
        UserAuthenticatePolicy::Decline => Err(CheckinError::UserAuthenticateDeclined),
        UserAuthenticatePolicy::Accept if digest_response.unwrap_or("").is_empty() => {
            let mut d = Dictionary::new();
            d.insert("DigestChallenge".into(), Value::String(String::new()));
            Ok(MdmResponse::Plist(to_xml(&d)))
        }
        UserAuthenticatePolicy::Accept => Ok(MdmResponse::Empty),
    }
}

/// Store a TokenUpdate if `guard` lets it (false: nothing written, the caller takes another path). A
/// channel id that names another device's channel, or one of another kind, is refused.
pub(super) async fn token_update<C: ConnectionTrait>(
    c: &C,
    e: &EnrollmentRef,
    t: &TokenUpdate,
    raw: &[u8],
    guard: TokenUpdateGuard<'_>,
    now: i64,
    next_push_at: i64,
) -> Result<bool, CheckinError> {
    let count = match store::token_update(c, e, t, raw, guard, now, next_push_at).await {
        Ok(Some(count)) => count,
        Ok(None) => return Ok(false),
        Err(StorageError::Conflict(why)) => {
            tracing::warn!(enrollment = %e.id, why, "TokenUpdate refused");
            return Err(CheckinError::UnknownEnrollment(e.id.clone()));
        }
        Err(other) => return Err(other.into()),
    };
    tracing::info!(enrollment = %e.id, kind = e.kind.as_str(), count, "token update");
    if count == 1 {
        crate::policies::holdings::on_enabled(c, &e.device_id, now).await?;
        crate::ddm::sync::on_enabled(c, &e.id, now).await?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_authenticate_follows_the_policy() {
        let declined = user_authenticate(UserAuthenticatePolicy::Decline, None);
        assert!(matches!(
            declined,
            Err(CheckinError::UserAuthenticateDeclined)
        ));
        let first = user_authenticate(UserAuthenticatePolicy::Accept, None).unwrap();
        let MdmResponse::Plist(body) = first else {
            panic!("the first round answers with a challenge");
        };
        let d: Dictionary = plist::from_bytes(&body).unwrap();
        assert_eq!(
            d.get("DigestChallenge").and_then(Value::as_string),
            Some("")
        );
        let second = user_authenticate(UserAuthenticatePolicy::Accept, Some("digest")).unwrap();
        assert_eq!(second, MdmResponse::Empty);
    }
}
