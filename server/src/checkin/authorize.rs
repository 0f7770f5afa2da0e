//! Who may act for an enrollment: the rules every message is checked against, before plugins run and again
//! inside its transaction.

use super::CheckinError;
use crate::protocol::checkin::Authenticate;
use crate::protocol::EnrollmentRef;
use crate::storage::checkin_state::{self, ChannelSeen, ChannelState};
use crate::storage::devices::{self, Device};
use crate::storage::event_subject::{self, EventSubject};
use crate::storage::{issued_certs, PointRead};
use sea_orm::ConnectionTrait;

/// Refusals at Authenticate that do not depend on plugins, run before plugins and again inside the
/// transaction:
/// - a certificate already bound to another device, or one our CA issued and then revoked (directly or an
///   identity it was renewed from), or issued against a token pinned to another serial number;
/// - for a known device: a serial number change (the hardware binding), and a new identity unless
///   [`new_identity_admitted`] (a stranger who knows a UDID and serial number must not take the device over).
///
/// True when the certificate was issued to renew this device's identity (the device keeps its queue).
pub(super) async fn enrollment_checks<C: ConnectionTrait>(
    c: &C,
    fingerprint: &str,
    e: &EnrollmentRef,
    a: &Authenticate,
    now: i64,
) -> Result<bool, CheckinError> {
    let existing = devices::find(c, &e.device_id).await?;
    if let (Some(bound), Some(presented)) = (
        existing.as_ref().and_then(|d| d.serial_number.as_deref()),
        a.facts.serial_number.as_deref(),
    ) {
        if bound != presented {
            tracing::warn!(device = %e.device_id, bound, presented, "Authenticate refused: serial number changed");
            return Err(CheckinError::SerialMismatch {
                device: e.device_id.clone(),
                bound: bound.to_string(),
                presented: presented.to_string(),
            });
        }
    }
    if let Some(other) = devices::find_by_fingerprint(c, fingerprint).await? {
        if other.id != e.device_id {
            tracing::warn!(device = %e.device_id, bound_to = %other.id, "Authenticate refused: certificate reused");
            return Err(CheckinError::CertificateBoundElsewhere);
        }
    }
    let issued = issued_certs::find_by_fingerprint(c, fingerprint).await?;
    if let Some(issued) = &issued {
        // The certificate itself or an identity it was renewed from.
        if issued_certs::revoked_in_chain(c, fingerprint).await? {
            tracing::warn!(device = %e.device_id, serial = %issued.serial, "Authenticate refused: certificate revoked");
            return Err(CheckinError::CertificateRevoked);
        }
        if let Some(pinned) = &issued.pinned_serial_number {
            if a.facts.serial_number.as_deref() != Some(pinned.as_str()) {
                tracing::warn!(device = %e.device_id, pinned, presented = %a.facts.serial_number.as_deref().unwrap_or("-"), "Authenticate refused: identity issued for another serial number");
                return Err(CheckinError::IssuedForAnotherDevice(e.device_id.clone()));
            }
        }
    }
    let renewal = existing.is_some()
        && issued.as_ref().and_then(|i| i.renews_device.as_deref()) == Some(e.device_id.as_str());
    if let Some(device) = &existing {
        let same_identity = device.identity_fingerprint.as_deref() == Some(fingerprint);
        if !same_identity && !renewal {
            if let Err(why) = new_identity_admitted(device, issued.as_ref(), now) {
                tracing::warn!(device = %e.device_id, why, "Authenticate refused: a known device presented a new identity");
                return Err(CheckinError::ReenrollmentRefused(e.device_id.clone()));
            }
        }
    }
    Ok(renewal)
}

/// Whether a known device may take a new identity that is not a renewal of its own: an admin allowed it
/// (once, until a time), the device checked out (it removed its MDM profile itself: only the bound identity
/// can send that), or our CA issued the identity against an admin's enrollment token pinned to this device's
/// serial number. Anything else, a User Enrollment included (its EnrollmentID is new at every enrollment),
/// is refused: knowing a UDID and a serial number is not a credential. Err says which rule refused, for the
/// log.
fn new_identity_admitted(
    device: &Device,
    issued: Option<&issued_certs::IssuedCertificate>,
    now: i64,
) -> Result<(), &'static str> {
    if device
        .reenroll_allowed_until
        .is_some_and(|until| now <= until)
    {
        return Ok(());
    }
    if device.checked_out_at.is_some() {
        return Ok(());
    }
    let pinned = issued.and_then(|i| i.pinned_serial_number.as_deref());
    if pinned.is_some() && pinned == device.serial_number.as_deref() {
        return Ok(());
    }
    Err("not a renewal, no admin allowance, no check-out, no token pinned to its serial number")
}

/// The sender as a read found it (None: unknown device) must present the identity bound to it at
/// Authenticate; `bound` says where the read keeps that fingerprint.
pub(super) fn identified<T>(
    found: Option<T>,
    bound: impl FnOnce(&T) -> Option<&str>,
    fingerprint: &str,
    e: &EnrollmentRef,
) -> Result<T, CheckinError> {
    let found = found.ok_or_else(|| CheckinError::UnknownDevice(e.device_id.clone()))?;
    if bound(&found) != Some(fingerprint) {
        tracing::warn!(device = %e.device_id, presented = fingerprint, "identity certificate does not match the bound one");
        return Err(CheckinError::IdentityMismatch(e.device_id.clone()));
    }
    Ok(found)
}

/// The sender as one point read finds it (device, its facts, the channel's TokenUpdate count), identity
/// checked: for the event plugins hear and for the DeclarativeManagement and GetToken check-ins.
pub(super) async fn sender<R: PointRead>(
    r: &R,
    fingerprint: &str,
    e: &EnrollmentRef,
) -> Result<EventSubject, CheckinError> {
    let found = event_subject::load(r, &e.device_id, &e.id).await?;
    identified(found, |s| s.identity_fingerprint.as_deref(), fingerprint, e)
}

/// The device must exist and present the certificate bound to it at Authenticate.
pub(super) async fn authorize<C: ConnectionTrait>(
    c: &C,
    fingerprint: &str,
    e: &EnrollmentRef,
) -> Result<Device, CheckinError> {
    identified(
        devices::find(c, &e.device_id).await?,
        |d| d.identity_fingerprint.as_deref(),
        fingerprint,
        e,
    )
}

/// A report's sender as [`authorize`] requires it, with its queue state and its channel (which must exist).
pub(super) async fn channel_state<R: PointRead>(
    c: &R,
    fingerprint: &str,
    e: &EnrollmentRef,
) -> Result<(ChannelState, ChannelSeen), CheckinError> {
    let state = identified(
        checkin_state::load(c, &e.device_id, &e.id).await?,
        |s| s.identity_fingerprint.as_deref(),
        fingerprint,
        e,
    )?;
    let channel = state
        .channel
        .clone()
        .ok_or_else(|| CheckinError::UnknownEnrollment(e.id.clone()))?;
    Ok((state, channel))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known_device() -> Device {
        Device {
            id: "UDID-1".into(),
            serial_number: Some("C02SERIAL".into()),
            platform: None,
            model: None,
            model_name: None,
            product_name: None,
            device_name: None,
            os_version: None,
            build_version: None,
            imei: None,
            meid: None,
            identity_fingerprint: Some("bound".into()),
            identity_subject: None,
            identity_not_after: None,
            unlock_token: None,
            bootstrap_token: None,
            authenticate_raw: None,
            authenticated_at: 0,
            created_at: 0,
            updated_at: 0,
            last_seen_at: 0,
            renewal_requested_at: None,
            reenroll_allowed_until: None,
            checked_out_at: None,
        }
    }

    fn issued(pinned: Option<&str>) -> issued_certs::IssuedCertificate {
        issued_certs::IssuedCertificate {
            serial: "01".into(),
            fingerprint: "new".into(),
            subject: String::new(),
            not_before: 0,
            not_after: 0,
            issued_at: 0,
            challenge_id: None,
            pinned_serial_number: pinned.map(Into::into),
            renewal_of: None,
            renews_device: None,
            device_id: None,
            revoked_at: None,
        }
    }

    #[test]
    fn a_known_device_takes_a_new_identity_only_by_one_of_the_rules() {
        let now = 1_000;
        let d = known_device();
        // Knowing the UDID and serial number, with any certificate, ours or another CA's: refused.
        assert!(new_identity_admitted(&d, None, now).is_err());
        assert!(new_identity_admitted(&d, Some(&issued(None)), now).is_err());
        // Pinned to another serial number, or the device has none to match: refused.
        assert!(new_identity_admitted(&d, Some(&issued(Some("OTHER"))), now).is_err());
        let mut no_serial = known_device();
        no_serial.serial_number = None;
        assert!(new_identity_admitted(&no_serial, Some(&issued(Some("C02SERIAL"))), now).is_err());
        // An admin's token pinned to its serial number.
        assert!(new_identity_admitted(&d, Some(&issued(Some("C02SERIAL"))), now).is_ok());
        // An admin's allowance, until it lapses.
        let mut allowed = known_device();
        allowed.reenroll_allowed_until = Some(now);
        assert!(new_identity_admitted(&allowed, None, now).is_ok());
        assert!(new_identity_admitted(&allowed, None, now + 1).is_err());
        // The device checked out itself.
        let mut gone = known_device();
        gone.checked_out_at = Some(now - 1);
        assert!(new_identity_admitted(&gone, None, now).is_ok());
    }

    #[test]
    fn the_sender_must_be_known_and_present_its_bound_identity() {
        let e = crate::storage::testing::device_channel("UDID-1");
        fn bound(d: &Device) -> Option<&str> {
            d.identity_fingerprint.as_deref()
        }
        let unknown = identified(None, bound, "bound", &e);
        assert!(matches!(unknown, Err(CheckinError::UnknownDevice(_))));
        let other = identified(Some(known_device()), bound, "another", &e);
        assert!(matches!(other, Err(CheckinError::IdentityMismatch(_))));
        assert!(identified(Some(known_device()), bound, "bound", &e).is_ok());
    }
}
