//! The check-in service driven directly, without HTTP: every branch of the pipeline (each message type, the
//! fast paths, first and repeated TokenUpdates with and without plugins, reports with and without a next
//! command, every refusal), on SQLite and on PostgreSQL when `MDM_TEST_DATABASE_URL` is set. The server
//! around it only sets up (database, plugins, admin API for enqueueing).

use mdm_server::checkin::{CheckinError, MdmResponse, SEEN_RESOLUTION_MS};
use mdm_server::config::UserAuthenticatePolicy;
use mdm_server::identity::DeviceCert;
use mdm_server::storage::testing;
use mdm_server::storage::{attributes, devices, enrollments, issued_certs, queue};
use mdm_tests::device::{Device, Identity, Platform, User};
use mdm_tests::harness::{each_database, TestServer};
use plist::{Dictionary, Value};
use serde_json::json;

fn cert(dev: &Device) -> DeviceCert {
    DeviceCert::from_der(&dev.identity.cert.to_der().unwrap()).unwrap()
}

async fn checkin(s: &TestServer, dev: &Device, body: Vec<u8>) -> Result<MdmResponse, CheckinError> {
    s.state.checkin.checkin(&cert(dev), &body).await
}

async fn report(s: &TestServer, dev: &Device, body: Vec<u8>) -> Result<MdmResponse, CheckinError> {
    s.state.checkin.report(&cert(dev), &body).await
}

async fn enrolled(s: &TestServer, platform: Platform) -> Device {
    let dev = Device::new(platform);
    assert_eq!(
        checkin(s, &dev, dev.authenticate()).await.unwrap(),
        MdmResponse::Empty
    );
    assert_eq!(
        checkin(s, &dev, dev.token_update(None)).await.unwrap(),
        MdmResponse::Empty
    );
    dev
}

async fn device(s: &TestServer, dev: &Device) -> devices::Device {
    devices::find(testing::db(&s.storage), &dev.udid)
        .await
        .unwrap()
        .expect("device stored")
}

async fn channel(s: &TestServer, id: &str) -> enrollments::Enrollment {
    enrollments::find(testing::db(&s.storage), id)
        .await
        .unwrap()
        .expect("channel stored")
}

/// The `hostile` plugin tagging every device it hears (`hostile=was here`), with `checkins` and failure
/// policies as given.
async fn tagging_plugin(s: &TestServer, mode: &str, checkins: Option<&[&str]>, fail_closed: bool) {
    use base64::Engine;
    let wasm = std::fs::read(mdm_tests::plugins::build("hostile-plugin")).expect("wasm");
    let mut manifest = mdm_tests::plugins::manifest("hostile");
    if let Some(c) = checkins {
        manifest["checkins"] = json!(c);
    }
    if fail_closed {
        manifest["failure_policy"]["on-checkin"] = json!("fail-closed");
    }
    let approve = manifest["capabilities"].clone();
    let r = s
        .post(
            "/api/v1/plugins",
            json!({
                "manifest": manifest,
                "wasm_base64": base64::engine::general_purpose::STANDARD.encode(wasm),
                "config": {"mode": mode},
                "approve_capabilities": approve,
            }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

async fn tagged(s: &TestServer, dev: &Device) -> bool {
    attributes::for_device(testing::db(&s.storage), &dev.udid)
        .await
        .unwrap()
        .iter()
        .any(|a| a.key == "hostile")
}

async fn untag(s: &TestServer, dev: &Device) {
    attributes::clear(testing::db(&s.storage), &dev.udid, "hostile")
        .await
        .unwrap();
}

fn refused_as<T: std::fmt::Debug>(r: Result<T, CheckinError>, what: fn(&CheckinError) -> bool) {
    match r {
        Err(e) if what(&e) => {}
        other => panic!("unexpected outcome: {other:?}"),
    }
}

#[tokio::test]
async fn authenticate_binds_the_identity_and_resets_the_enrollment() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        let dev = enrolled(&s, Platform::Ios).await;
        s.enqueue(&[&dev.udid], json!({"RequestType": "ProfileList"}))
            .await;
        let d = device(&s, &dev).await;
        assert_eq!(
            d.identity_fingerprint.as_deref(),
            Some(dev.identity.fingerprint().as_str())
        );
        assert_eq!(d.serial_number.as_deref(), Some(dev.serial.as_str()));
        assert!(
            d.unlock_token.is_some(),
            "the device channel's UnlockToken is escrowed"
        );
        // Authenticate again with its own identity: channels disabled until TokenUpdate, queue canceled.
        checkin(&s, &dev, dev.authenticate()).await.unwrap();
        assert!(!channel(&s, &dev.udid).await.enabled);
        let pending = queue::for_enrollment(testing::db(&s.storage), &dev.udid, true, 100)
            .await
            .unwrap();
        assert!(pending.is_empty(), "{pending:?}");
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn authenticate_refusals_change_nothing() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        let dev = enrolled(&s, Platform::Ios).await;
        let before = s.snapshot().await;
        // A new identity for a known device (no renewal, allowance, check-out or pinned token).
        let mut thief = dev.clone();
        thief.identity = Identity::generate(&dev.udid);
        let r = checkin(&s, &thief, thief.authenticate()).await;
        refused_as(r, |e| matches!(e, CheckinError::ReenrollmentRefused(_)));
        // Its own identity, but another serial number.
        let mut moved = dev.clone();
        moved.serial = "OTHERSERIAL".into();
        let r = checkin(&s, &moved, moved.authenticate()).await;
        refused_as(r, |e| matches!(e, CheckinError::SerialMismatch { .. }));
        // Its identity presented for another device.
        let mut other = Device::new(Platform::Ios);
        other.identity = dev.identity.clone();
        let r = checkin(&s, &other, other.authenticate()).await;
        refused_as(r, |e| matches!(e, CheckinError::CertificateBoundElsewhere));
        // Authenticate on a user channel.
        let mut d = Dictionary::new();
        d.insert("MessageType".into(), "Authenticate".into());
        d.insert("UDID".into(), dev.udid.clone().into());
        d.insert("UserID".into(), "USER-1".into());
        d.insert("Topic".into(), "com.apple.mgmt.test".into());
        let r = checkin(&s, &dev, mdm_tests::device::xml(d)).await;
        refused_as(r, |e| matches!(e, CheckinError::AuthenticateOnUserChannel));
        assert_eq!(s.snapshot().await, before);
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn identities_our_ca_issued_are_refused_when_revoked_or_pinned_to_another_serial() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        let now = s.clock_now();
        let issued = |dev: &Device, serial: &str, pinned: Option<&str>, revoked: Option<i64>| {
            issued_certs::IssuedCertificate {
                serial: serial.into(),
                fingerprint: dev.identity.fingerprint(),
                subject: "CN=test".into(),
                not_before: now,
                not_after: now + 86_400_000,
                issued_at: now,
                challenge_id: None,
                pinned_serial_number: pinned.map(Into::into),
                renewal_of: None,
                renews_device: None,
                device_id: None,
                revoked_at: revoked,
            }
        };
        let revoked = Device::new(Platform::Ios);
        let row = issued(&revoked, "0A", None, Some(now));
        issued_certs::insert(testing::db(&s.storage), row)
            .await
            .unwrap();
        let r = checkin(&s, &revoked, revoked.authenticate()).await;
        refused_as(r, |e| matches!(e, CheckinError::CertificateRevoked));
        let pinned = Device::new(Platform::Ios);
        let row = issued(&pinned, "0B", Some("SOMEONEELSE"), None);
        issued_certs::insert(testing::db(&s.storage), row)
            .await
            .unwrap();
        let r = checkin(&s, &pinned, pinned.authenticate()).await;
        refused_as(r, |e| matches!(e, CheckinError::IssuedForAnotherDevice(_)));
        assert!(devices::find(testing::db(&s.storage), &pinned.udid)
            .await
            .unwrap()
            .is_none());
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_plugin_can_deny_an_enrollment() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        tagging_plugin(&s, "deny", None, false).await;
        let dev = Device::new(Platform::Ios);
        let r = checkin(&s, &dev, dev.authenticate()).await;
        refused_as(r, |e| matches!(e, CheckinError::EnrollmentDenied(_)));
        assert!(devices::find(testing::db(&s.storage), &dev.udid)
            .await
            .unwrap()
            .is_none());
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn token_updates_first_and_repeated_without_plugins() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        let dev = enrolled(&s, Platform::MacOs).await;
        assert_eq!(channel(&s, &dev.udid).await.token_update_count, 1);
        checkin(&s, &dev, dev.token_update(None)).await.unwrap();
        let c = channel(&s, &dev.udid).await;
        assert!(c.enabled);
        assert_eq!(c.token_update_count, 2);
        // A user channel is created by its first TokenUpdate.
        let user = User::new("alice");
        checkin(&s, &dev, dev.token_update(Some(&user)))
            .await
            .unwrap();
        let channels = enrollments::for_device(testing::db(&s.storage), &dev.udid)
            .await
            .unwrap();
        assert_eq!(channels.len(), 2, "{channels:?}");
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn messages_from_strangers_are_refused_and_change_nothing() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        let dev = enrolled(&s, Platform::Ios).await;
        let before = s.snapshot().await;
        let unknown = Device::new(Platform::Ios);
        for body in [
            unknown.token_update(None),
            unknown.checkout(),
            unknown.get_bootstrap_token(),
        ] {
            let r = checkin(&s, &unknown, body).await;
            refused_as(r, |e| matches!(e, CheckinError::UnknownDevice(_)));
        }
        let r = report(&s, &unknown, unknown.idle(None)).await;
        refused_as(r, |e| matches!(e, CheckinError::UnknownDevice(_)));
        let mut impostor = dev.clone();
        impostor.identity = Identity::generate(&dev.udid);
        for body in [impostor.token_update(None), impostor.checkout()] {
            let r = checkin(&s, &impostor, body).await;
            refused_as(r, |e| matches!(e, CheckinError::IdentityMismatch(_)));
        }
        let r = report(&s, &impostor, impostor.idle(None)).await;
        refused_as(r, |e| matches!(e, CheckinError::IdentityMismatch(_)));
        // A report on a channel that never sent its TokenUpdate.
        let r = report(&s, &dev, dev.idle(Some(&User::new("bob")))).await;
        refused_as(r, |e| matches!(e, CheckinError::UnknownEnrollment(_)));
        let r = checkin(&s, &dev, b"not a plist".to_vec()).await;
        refused_as(r, |e| matches!(e, CheckinError::Protocol(_)));
        // Without an Endpoint, or a TokenServiceType any plugin provides for.
        let r = checkin(&s, &dev, dev.message("DeclarativeManagement")).await;
        refused_as(r, |e| matches!(e, CheckinError::Ddm(_)));
        let r = checkin(&s, &dev, dev.message("GetToken")).await;
        refused_as(r, |e| matches!(e, CheckinError::NoTokenProvider(_)));
        assert_eq!(s.snapshot().await, before);
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn checkout_bootstrap_token_and_user_authenticate() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        let dev = enrolled(&s, Platform::MacOs).await;
        checkin(&s, &dev, dev.set_bootstrap_token(b"bootstrap"))
            .await
            .unwrap();
        let MdmResponse::Plist(body) = checkin(&s, &dev, dev.get_bootstrap_token()).await.unwrap()
        else {
            panic!("GetBootstrapToken answers with a plist");
        };
        let d: Dictionary = plist::from_bytes(&body).unwrap();
        assert_eq!(
            d.get("BootstrapToken"),
            Some(&Value::Data(b"bootstrap".to_vec()))
        );
        // Declined by default.
        let user = User::new("carol");
        let r = checkin(&s, &dev, dev.user_authenticate(&user, None)).await;
        refused_as(r, |e| matches!(e, CheckinError::UserAuthenticateDeclined));
        checkin(&s, &dev, dev.checkout()).await.unwrap();
        assert!(!channel(&s, &dev.udid).await.enabled);
        assert!(device(&s, &dev).await.checked_out_at.is_some());
        s.stop().await;
    })
    .await;
    each_database(|db| async move {
        let s = TestServer::start_with(db, |c| {
            c.user_authenticate = UserAuthenticatePolicy::Accept;
        })
        .await;
        let dev = enrolled(&s, Platform::MacOs).await;
        let user = User::new("dave");
        let first = checkin(&s, &dev, dev.user_authenticate(&user, None))
            .await
            .unwrap();
        assert!(matches!(first, MdmResponse::Plist(_)), "{first:?}");
        let second = checkin(&s, &dev, dev.user_authenticate(&user, Some("digest"))).await;
        assert_eq!(second.unwrap(), MdmResponse::Empty);
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn an_idle_with_nothing_to_do_writes_nothing_and_one_later_marks_the_device_seen() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        let dev = enrolled(&s, Platform::Ios).await;
        let seen = device(&s, &dev).await.last_seen_at;
        s.clock.advance_ms(SEEN_RESOLUTION_MS / 2);
        let before = s.snapshot().await;
        assert_eq!(
            report(&s, &dev, dev.idle(None)).await.unwrap(),
            MdmResponse::Empty
        );
        assert_eq!(s.snapshot().await, before, "the fast path writes nothing");
        s.clock.advance_ms(SEEN_RESOLUTION_MS);
        assert_eq!(
            report(&s, &dev, dev.idle(None)).await.unwrap(),
            MdmResponse::Empty
        );
        assert!(device(&s, &dev).await.last_seen_at > seen);
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_report_answers_with_the_next_command_and_then_with_nothing() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        let dev = enrolled(&s, Platform::Ios).await;
        s.enqueue(
            &[&dev.udid],
            json!({"RequestType": "DeviceInformation", "Queries": ["DeviceName"]}),
        )
        .await;
        s.enqueue(&[&dev.udid], json!({"RequestType": "ProfileList"}))
            .await;
        let first = mdm_tests::device::ReceivedCommand::parse(&plist_of(
            report(&s, &dev, dev.idle(None)).await.unwrap(),
        ))
        .unwrap();
        assert_eq!(first.request_type, "DeviceInformation");
        // Its result (with what it says of the device) answers with the next one.
        let mut answers = Dictionary::new();
        answers.insert("DeviceName".into(), "Renamed".into());
        let mut extra = Dictionary::new();
        extra.insert("QueryResponses".into(), Value::Dictionary(answers));
        let body = dev.report(None, "Acknowledged", &first.uuid, extra);
        let second = mdm_tests::device::ReceivedCommand::parse(&plist_of(
            report(&s, &dev, body).await.unwrap(),
        ))
        .unwrap();
        assert_eq!(second.request_type, "ProfileList");
        assert_eq!(
            device(&s, &dev).await.device_name.as_deref(),
            Some("Renamed")
        );
        let body = dev.report(None, "Acknowledged", &second.uuid, Dictionary::new());
        assert_eq!(
            report(&s, &dev, body.clone()).await.unwrap(),
            MdmResponse::Empty
        );
        // A repeated result changes nothing.
        let before = s.snapshot().await;
        assert_eq!(report(&s, &dev, body).await.unwrap(), MdmResponse::Empty);
        assert_eq!(s.snapshot().await, before);
        s.stop().await;
    })
    .await;
}

fn plist_of(r: MdmResponse) -> Vec<u8> {
    match r {
        MdmResponse::Plist(b) => b,
        other => panic!("expected a command, got {other:?}"),
    }
}

#[tokio::test]
async fn a_plugin_hearing_only_the_first_token_update_is_not_asked_about_repeats() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        tagging_plugin(&s, "tag", Some(&["first-token-update"]), false).await;
        let dev = Device::new(Platform::Ios);
        checkin(&s, &dev, dev.authenticate()).await.unwrap();
        assert!(!tagged(&s, &dev).await, "Authenticate is not heard");
        checkin(&s, &dev, dev.token_update(None)).await.unwrap();
        assert!(tagged(&s, &dev).await, "the first TokenUpdate is heard");
        assert_eq!(channel(&s, &dev.udid).await.token_update_count, 1);
        untag(&s, &dev).await;
        checkin(&s, &dev, dev.token_update(None)).await.unwrap();
        assert!(!tagged(&s, &dev).await, "a repeated TokenUpdate is not");
        assert_eq!(channel(&s, &dev.udid).await.token_update_count, 2);
        // After a new Authenticate the next TokenUpdate is a first again.
        checkin(&s, &dev, dev.authenticate()).await.unwrap();
        checkin(&s, &dev, dev.token_update(None)).await.unwrap();
        assert!(tagged(&s, &dev).await);
        // Other messages are not heard, and the device's answers are as without plugins.
        untag(&s, &dev).await;
        checkin(&s, &dev, dev.set_bootstrap_token(b"t"))
            .await
            .unwrap();
        assert!(!tagged(&s, &dev).await);
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_plugin_hearing_every_message_is_asked_about_each() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        tagging_plugin(&s, "tag", None, false).await;
        let dev = Device::new(Platform::Ios);
        checkin(&s, &dev, dev.authenticate()).await.unwrap();
        assert!(tagged(&s, &dev).await, "Authenticate is heard");
        for body in [
            dev.token_update(None),
            dev.token_update(None),
            dev.set_bootstrap_token(b"t"),
        ] {
            untag(&s, &dev).await;
            checkin(&s, &dev, body).await.unwrap();
            assert!(tagged(&s, &dev).await);
        }
        assert_eq!(channel(&s, &dev.udid).await.token_update_count, 2);
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_fail_closed_plugin_that_fails_refuses_the_message_and_nothing_of_it_is_stored() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        let dev = enrolled(&s, Platform::Ios).await;
        tagging_plugin(&s, "error", None, true).await;
        let before = channel(&s, &dev.udid).await.token_update_count;
        let r = checkin(&s, &dev, dev.token_update(None)).await;
        refused_as(r, |e| matches!(e, CheckinError::PluginRefused(_)));
        assert_eq!(channel(&s, &dev.udid).await.token_update_count, before);
        s.stop().await;
    })
    .await;
}
