//! The whole device flow over real HTTP, with a device that really signs: enroll, receive commands, report
//! results, NotNow, errors, check out, re-enroll.

use mdm_tests::device::{Device, Platform, ReceivedCommand, User};
use mdm_tests::harness::{each_database, TestServer};
use plist::{Dictionary, Value};
use serde_json::json;

fn uuid_for(outcome: &serde_json::Value, id: &str) -> String {
    outcome["results"][id]["command_uuid"]
        .as_str()
        .unwrap_or_else(|| panic!("no command for {id}: {outcome}"))
        .to_string()
}

async fn next_command(s: &TestServer, dev: &Device, body: Vec<u8>) -> Option<ReceivedCommand> {
    let r = s.connect(dev, body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    if r.body.is_empty() {
        None
    } else {
        Some(ReceivedCommand::parse(&r.body).expect("valid command plist"))
    }
}

#[tokio::test]
async fn device_channel_full_flow() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        let dev = Device::new(Platform::Ios);
        s.enroll(&dev).await;

        // The API shows the enrolled device with facts from Authenticate.
        let d = s.get(&format!("/api/v1/devices/{}", dev.udid)).await.json();
        assert_eq!(d["serial_number"], dev.serial.as_str());
        assert_eq!(d["platform"], "iOS");
        assert_eq!(d["enabled"], true);
        assert_eq!(d["unlock_token_present"], true);
        assert_eq!(d["identity"]["fingerprint"], dev.identity.fingerprint());
        assert_eq!(d["channels"][0]["push_token_present"], true);

        // Nothing queued: Idle gets an empty 200.
        assert!(next_command(&s, &dev, dev.idle(None)).await.is_none());

        let info = s
            .enqueue(&[&dev.udid], json!({"RequestType": "DeviceInformation", "Queries": ["SerialNumber", "OSVersion"]}))
            .await;
        let info_uuid = uuid_for(&info, &dev.udid);
        let raw = r#"<?xml version="1.0" encoding="UTF-8"?><plist version="1.0"><dict><key>RequestType</key><string>ProfileList</string></dict></plist>"#;
        let r = s.post("/api/v1/commands", json!({"ids": [dev.udid], "raw_plist": raw})).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let list_uuid = uuid_for(&r.json(), &dev.udid);

        // Idle -> the first command, in enqueue order.
        let c = next_command(&s, &dev, dev.idle(None)).await.expect("a command");
        assert_eq!((c.uuid.as_str(), c.request_type.as_str()), (info_uuid.as_str(), "DeviceInformation"));
        assert_eq!(
            c.command.get("Queries").and_then(Value::as_array).map(Vec::len),
            Some(2)
        );

        // Acknowledged with results -> the next command.
        let mut responses = Dictionary::new();
        let mut q = Dictionary::new();
        q.insert("SerialNumber".into(), dev.serial.clone().into());
        q.insert("OSVersion".into(), "17.6".into());
        q.insert("DeviceName".into(), "Lab iPhone".into());
        responses.insert("QueryResponses".into(), Value::Dictionary(q));
        let c2 = next_command(&s, &dev, dev.report(None, "Acknowledged", &info_uuid, responses))
            .await
            .expect("second command");
        assert_eq!((c2.uuid.as_str(), c2.request_type.as_str()), (list_uuid.as_str(), "ProfileList"));

        // NotNow -> skipped for this connection; nothing else is queued so the answer is empty.
        assert!(next_command(&s, &dev, dev.report(None, "NotNow", &list_uuid, Dictionary::new())).await.is_none());
        // The next Idle offers it again.
        let again = next_command(&s, &dev, dev.idle(None)).await.expect("NotNow'd command again");
        assert_eq!(again.uuid, list_uuid);

        // Error with an ErrorChain is recorded.
        let mut chain_item = Dictionary::new();
        chain_item.insert("ErrorCode".into(), Value::Integer((-909).into()));
        chain_item.insert("ErrorDomain".into(), "NSOSStatusErrorDomain".into());
        let mut extra = Dictionary::new();
        extra.insert("ErrorChain".into(), Value::Array(vec![Value::Dictionary(chain_item)]));
        assert!(next_command(&s, &dev, dev.report(None, "Error", &list_uuid, extra)).await.is_none());

        // Status and results through the API.
        let st = s.get(&format!("/api/v1/commands/{info_uuid}")).await.json();
        assert_eq!(st["request_type"], "DeviceInformation");
        assert_eq!(st["deliveries"][0]["status"], "acknowledged");
        assert_eq!(st["deliveries"][0]["delivery_count"], 1);
        let res = s
            .get(&format!("/api/v1/commands/{info_uuid}/results/{}", dev.udid))
            .await
            .json();
        assert_eq!(res["result"]["QueryResponses"]["SerialNumber"], dev.serial.as_str());
        assert!(res["result_plist_base64"].is_string());
        // The DeviceInformation answer refreshed what the API shows.
        let d = s.get(&format!("/api/v1/devices/{}", dev.udid)).await.json();
        assert_eq!((d["os_version"].as_str(), d["device_name"].as_str()), (Some("17.6"), Some("Lab iPhone")));
        assert_eq!(d["build_version"], "21F79", "facts not in the answer are kept");
        let err = s
            .get(&format!("/api/v1/commands/{list_uuid}/results/{}", dev.udid))
            .await
            .json();
        assert_eq!(err["status"], "error");
        assert_eq!(err["result"]["ErrorChain"][0]["ErrorCode"], -909);
        let st = s.get(&format!("/api/v1/commands/{list_uuid}")).await.json();
        assert_eq!(st["deliveries"][0]["delivery_count"], 2, "delivered, NotNow'd, delivered again");

        // A repeated report of a finished command changes nothing.
        let before = s.snapshot().await;
        assert!(next_command(&s, &dev, dev.report(None, "Acknowledged", &info_uuid, Dictionary::new())).await.is_none());
        let after = s.snapshot().await;
        let strip = |x: &str| x.lines().skip(2).collect::<Vec<_>>().join("\n");
        assert_eq!(strip(&before), strip(&after), "queue and commands unchanged");

        // CheckOut disables the device.
        let r = s.checkin(&dev, dev.checkout()).await;
        assert_eq!(r.status, 200);
        let d = s.get(&format!("/api/v1/devices/{}", dev.udid)).await.json();
        assert_eq!(d["enabled"], false);
        // Enqueue to a checked-out device reports it as disabled and queues nothing.
        let out = s.enqueue(&[&dev.udid], json!({"RequestType": "SecurityInfo"})).await;
        assert_eq!(out["results"][&dev.udid]["status"], "disabled");
        assert!(out["command_uuids"].as_array().unwrap().is_empty());
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn reauthenticate_clears_the_queue_and_disables_until_token_update() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        let dev = Device::new(Platform::MacOs);
        let user = User::new("jappleseed");
        s.enroll(&dev).await;
        assert_eq!(
            s.checkin(&dev, dev.token_update(Some(&user))).await.status,
            200
        );
        let user_channel = format!("{}:{}", dev.udid, user.user_id);
        s.enqueue(
            &[&dev.udid, &user_channel],
            json!({"RequestType": "ProfileList"}),
        )
        .await;
        let q = s
            .get(&format!("/api/v1/enrollments/{user_channel}/commands"))
            .await
            .json();
        assert_eq!(q.as_array().unwrap().len(), 1);

        assert_eq!(s.checkin(&dev, dev.authenticate()).await.status, 200);
        // Both channels' queues are cleared, and both are disabled until TokenUpdate.
        for id in [&dev.udid, &user_channel] {
            let q = s
                .get(&format!("/api/v1/enrollments/{id}/commands"))
                .await
                .json();
            assert!(q.as_array().unwrap().is_empty(), "{id}: {q}");
            let all = s
                .get(&format!(
                    "/api/v1/enrollments/{id}/commands?pending_only=false"
                ))
                .await
                .json();
            assert_eq!(all[0]["status"], "canceled");
        }
        let d = s.get(&format!("/api/v1/devices/{}", dev.udid)).await.json();
        assert_eq!(d["enabled"], false);
        let out = s
            .enqueue(&[&dev.udid], json!({"RequestType": "ProfileList"}))
            .await;
        assert_eq!(out["results"][&dev.udid]["status"], "disabled");

        assert_eq!(s.checkin(&dev, dev.token_update(None)).await.status, 200);
        assert!(
            next_command(&s, &dev, dev.idle(None)).await.is_none(),
            "old commands do not come back"
        );
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn user_channel_gets_its_own_queue() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        let dev = Device::new(Platform::MacOs);
        let user = User::new("alice");
        s.enroll(&dev).await;
        assert_eq!(
            s.checkin(&dev, dev.token_update(Some(&user))).await.status,
            200
        );
        let user_channel = format!("{}:{}", dev.udid, user.user_id);

        let d = s.get(&format!("/api/v1/devices/{}", dev.udid)).await.json();
        let channels = d["channels"].as_array().unwrap();
        assert_eq!(channels.len(), 2);
        let uc = channels
            .iter()
            .find(|c| c["id"] == user_channel.as_str())
            .expect("user channel");
        assert_eq!(uc["kind"], "user");
        assert_eq!(uc["user_short_name"], "alice");
        assert_eq!(d["platform"], "macOS");

        let out = s
            .enqueue(
                &[&user_channel],
                json!({"RequestType": "ProfileList", "ManagedOnly": true}),
            )
            .await;
        let uuid = uuid_for(&out, &user_channel);
        // The device channel has nothing; the user channel gets the command.
        assert!(next_command(&s, &dev, dev.idle(None)).await.is_none());
        let c = next_command(&s, &dev, dev.idle(Some(&user)))
            .await
            .expect("user command");
        assert_eq!(c.uuid, uuid);
        assert!(next_command(
            &s,
            &dev,
            dev.report(Some(&user), "Acknowledged", &uuid, Dictionary::new())
        )
        .await
        .is_none());
        let st = s.get(&format!("/api/v1/commands/{uuid}")).await.json();
        assert_eq!(st["deliveries"][0]["enrollment_id"], user_channel.as_str());
        assert_eq!(st["deliveries"][0]["status"], "acknowledged");
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn order_is_priority_then_enqueue_sequence_not_time() {
    each_database(|db| async move {
        // The clock never moves here, so every command has the same timestamp: order must come from the
        // sequence, not from time.
        let s = TestServer::start(db).await;
        let dev = Device::new(Platform::Ios);
        s.enroll(&dev).await;
        let mut expected = Vec::new();
        for rt in ["ProfileList", "CertificateList", "SecurityInfo"] {
            let out = s.enqueue(&[&dev.udid], json!({"RequestType": rt})).await;
            expected.push(uuid_for(&out, &dev.udid));
        }
        let r = s
            .post(
                "/api/v1/commands",
                json!({"ids": [dev.udid], "command": {"RequestType": "DeviceInformation"}, "priority": 10}),
            )
            .await;
        expected.insert(0, uuid_for(&r.json(), &dev.udid));

        let mut got = Vec::new();
        let mut body = dev.idle(None);
        while let Some(c) = next_command(&s, &dev, body).await {
            assert!(!got.contains(&c.uuid), "{} delivered twice", c.uuid);
            body = dev.report(None, "Acknowledged", &c.uuid, Dictionary::new());
            got.push(c.uuid);
        }
        assert_eq!(got, expected);
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn one_call_enqueues_to_many_ids_with_per_id_results() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        let a = Device::new(Platform::Ios);
        let b = Device::new(Platform::MacOs);
        let disabled = Device::new(Platform::Ios);
        s.enroll(&a).await;
        s.enroll(&b).await;
        assert_eq!(
            s.checkin(&disabled, disabled.authenticate()).await.status,
            200
        );
        let out = s
            .enqueue(
                &[&a.udid, &b.udid, &disabled.udid, "NOPE"],
                json!({"RequestType": "SecurityInfo"}),
            )
            .await;
        assert_eq!(out["results"][&a.udid]["status"], "queued");
        assert_eq!(out["results"][&b.udid]["status"], "queued");
        assert_eq!(out["results"][&disabled.udid]["status"], "disabled");
        assert_eq!(out["results"]["NOPE"]["status"], "unknown");
        let uuids = out["command_uuids"].as_array().unwrap();
        assert_eq!(uuids.len(), 1, "one shared command");
        let st = s
            .get(&format!("/api/v1/commands/{}", uuids[0].as_str().unwrap()))
            .await
            .json();
        assert_eq!(st["deliveries"].as_array().unwrap().len(), 2);
        for d in [&a, &b] {
            let c = next_command(&s, d, d.idle(None)).await.expect("queued");
            assert_eq!(c.request_type, "SecurityInfo");
        }
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn clear_passcode_carries_the_device_unlock_token() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        let ios = Device::new(Platform::Ios);
        let mac = Device::new(Platform::MacOs); // sends no UnlockToken
        s.enroll(&ios).await;
        s.enroll(&mac).await;
        let out = s
            .enqueue(
                &[&ios.udid, &mac.udid],
                json!({"RequestType": "ClearPasscode"}),
            )
            .await;
        assert_eq!(out["results"][&mac.udid]["status"], "missing_unlock_token");
        uuid_for(&out, &ios.udid);
        let c = next_command(&s, &ios, ios.idle(None))
            .await
            .expect("ClearPasscode");
        assert_eq!(c.request_type, "ClearPasscode");
        assert_eq!(
            c.command.get("UnlockToken").and_then(Value::as_data),
            Some(ios.unlock_token.as_slice())
        );
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn cancel_and_clear_through_the_api() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        let dev = Device::new(Platform::Ios);
        s.enroll(&dev).await;
        let first = uuid_for(
            &s.enqueue(&[&dev.udid], json!({"RequestType": "ProfileList"}))
                .await,
            &dev.udid,
        );
        s.enqueue(&[&dev.udid], json!({"RequestType": "SecurityInfo"}))
            .await;
        s.enqueue(&[&dev.udid], json!({"RequestType": "CertificateList"}))
            .await;

        assert_eq!(
            s.delete(&format!(
                "/api/v1/enrollments/{}/commands/{first}",
                dev.udid
            ))
            .await
            .status,
            204
        );
        assert_eq!(
            s.delete(&format!(
                "/api/v1/enrollments/{}/commands/{first}",
                dev.udid
            ))
            .await
            .status,
            404
        );
        let q = s
            .get(&format!("/api/v1/enrollments/{}/commands", dev.udid))
            .await
            .json();
        assert_eq!(q.as_array().unwrap().len(), 2);
        assert_eq!(q[0]["request_type"], "SecurityInfo");

        let r = s
            .delete(&format!("/api/v1/enrollments/{}/commands", dev.udid))
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["canceled"], 2);
        assert!(next_command(&s, &dev, dev.idle(None)).await.is_none());
        assert_eq!(
            s.delete("/api/v1/enrollments/NOPE/commands").await.status,
            404
        );
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn expired_commands_are_not_delivered_and_results_are_purged_after_retention() {
    use mdm_server::storage::housekeeping;
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        let dev = Device::new(Platform::Ios);
        s.enroll(&dev).await;
        let r = s
            .post("/api/v1/commands", json!({"ids": [dev.udid], "command": {"RequestType": "ProfileList"}, "ttl_seconds": 60}))
            .await;
        let short = uuid_for(&r.json(), &dev.udid);
        let kept = uuid_for(&s.enqueue(&[&dev.udid], json!({"RequestType": "SecurityInfo"})).await, &dev.udid);

        s.clock.advance_ms(61_000);
        // Past its TTL the command is skipped even before housekeeping marks it.
        let c = next_command(&s, &dev, dev.idle(None)).await.expect("the live command");
        assert_eq!(c.uuid, kept);
        assert!(next_command(&s, &dev, dev.report(None, "Acknowledged", &kept, Dictionary::new())).await.is_none());

        let h = housekeeping::run(&s.storage, s.clock_now(), 30).await.unwrap().unwrap();
        assert_eq!(h.expired, 1);
        let st = s.get(&format!("/api/v1/commands/{short}")).await.json();
        assert_eq!(st["deliveries"][0]["status"], "expired");

        // Within the retention period results stay; after it, they and their commands go.
        s.clock.advance_ms(29 * 86_400_000);
        assert_eq!(housekeeping::run(&s.storage, s.clock_now(), 30).await.unwrap().unwrap().purged_rows, 0);
        s.clock.advance_ms(2 * 86_400_000);
        let h = housekeeping::run(&s.storage, s.clock_now(), 30).await.unwrap().unwrap();
        assert_eq!((h.purged_rows, h.purged_commands), (2, 2));
        assert_eq!(s.get(&format!("/api/v1/commands/{kept}")).await.status, 404);
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn server_url_only_devices_are_dispatched_on_content_type() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        let dev = Device::new(Platform::Ios);
        let ct = (
            "Content-Type",
            "application/x-apple-aspen-mdm-checkin".to_string(),
        );
        for body in [dev.authenticate(), dev.token_update(None)] {
            let sig = ("Mdm-Signature", dev.sign(&body));
            let r = s.put("/mdm", body, &[sig, ct.clone()]).await;
            assert_eq!(r.status, 200, "{}", r.text());
        }
        s.enqueue(&[&dev.udid], json!({"RequestType": "ProfileList"}))
            .await;
        let body = dev.idle(None);
        let r = s
            .put("/mdm", body.clone(), &[("Mdm-Signature", dev.sign(&body))])
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(
            ReceivedCommand::parse(&r.body).unwrap().request_type,
            "ProfileList"
        );
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn user_authenticate_bootstrap_token_and_unsupported_types() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        let dev = Device::new(Platform::MacOs);
        let user = User::new("bob");
        s.enroll(&dev).await;

        // Declined by default with 410.
        assert_eq!(
            s.checkin(&dev, dev.user_authenticate(&user, None))
                .await
                .status,
            410
        );

        let token = b"bootstrap-secret".to_vec();
        assert_eq!(
            s.checkin(&dev, dev.set_bootstrap_token(&token))
                .await
                .status,
            200
        );
        let r = s.checkin(&dev, dev.get_bootstrap_token()).await;
        assert_eq!(r.status, 200);
        let d = plist::Value::from_reader(std::io::Cursor::new(&r.body))
            .unwrap()
            .into_dictionary()
            .unwrap();
        assert_eq!(
            d.get("BootstrapToken").and_then(Value::as_data),
            Some(token.as_slice())
        );

        for t in ["DeclarativeManagement", "GetToken"] {
            let r = s.checkin(&dev, dev.message(t)).await;
            assert_eq!(r.status, 400, "{t}");
            assert!(r.text().contains(t), "the reason names {t}: {}", r.text());
        }
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn user_authenticate_can_be_accepted() {
    each_database(|db| async move {
        let s = TestServer::start_with(db, |c| {
            c.user_authenticate = mdm_server::config::UserAuthenticatePolicy::Accept
        })
        .await;
        let dev = Device::new(Platform::MacOs);
        let user = User::new("carol");
        s.enroll(&dev).await;
        let r = s.checkin(&dev, dev.user_authenticate(&user, None)).await;
        assert_eq!(r.status, 200);
        let d = plist::Value::from_reader(std::io::Cursor::new(&r.body))
            .unwrap()
            .into_dictionary()
            .unwrap();
        assert_eq!(
            d.get("DigestChallenge").and_then(Value::as_string),
            Some("")
        );
        let r = s
            .checkin(&dev, dev.user_authenticate(&user, Some("digest")))
            .await;
        assert_eq!((r.status, r.body.len()), (200, 0));
        s.stop().await;
    })
    .await;
}

/// An Idle with nothing to deliver and a fresh last-seen time writes nothing; anything that changes state
/// (a stale last-seen, a queued or NotNow'd command, push attempts to restart) still takes the full path.
#[tokio::test]
async fn an_idle_with_nothing_to_do_writes_nothing() {
    use mdm_server::checkin::SEEN_RESOLUTION_MS;
    use mdm_server::storage::{devices, enrollments};
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        let dev = Device::new(Platform::Ios);
        s.enroll(&dev).await;
        let seen = |s: &TestServer| {
            let (db, udid) = (s.storage.clone(), dev.udid.clone());
            async move {
                let d = devices::find(mdm_server::storage::testing::db(&db), &udid)
                    .await
                    .unwrap()
                    .unwrap();
                let e = enrollments::find(mdm_server::storage::testing::db(&db), &udid)
                    .await
                    .unwrap()
                    .unwrap();
                (d.last_seen_at, e.last_seen_at, e.push_attempts)
            }
        };
        let t0 = s.clock_now();
        assert_eq!(seen(&s).await, (t0, t0, 0));
        let before = s.snapshot().await;

        s.clock.advance_ms(SEEN_RESOLUTION_MS - 1);
        assert!(next_command(&s, &dev, dev.idle(None)).await.is_none());
        assert_eq!(
            s.snapshot().await,
            before,
            "a fresh Idle changed the database"
        );

        s.clock.advance_ms(1);
        assert!(next_command(&s, &dev, dev.idle(None)).await.is_none());
        let t1 = s.clock_now();
        assert_eq!(
            seen(&s).await,
            (t1, t1, 0),
            "a stale last-seen time is rewritten"
        );

        // A queued command is delivered, its NotNow re-offered at the next Idle.
        let out = s
            .enqueue(&[&dev.udid], json!({"RequestType": "ProfileList"}))
            .await;
        let uuid = uuid_for(&out, &dev.udid);
        let cmd = next_command(&s, &dev, dev.idle(None))
            .await
            .expect("delivered");
        assert_eq!(cmd.uuid, uuid);
        assert!(next_command(
            &s,
            &dev,
            dev.report(None, "NotNow", &uuid, Dictionary::new())
        )
        .await
        .is_none());
        let again = next_command(&s, &dev, dev.idle(None))
            .await
            .expect("re-offered");
        assert_eq!(again.uuid, uuid);
        assert!(next_command(
            &s,
            &dev,
            dev.report(None, "Acknowledged", &uuid, Dictionary::new())
        )
        .await
        .is_none());

        // Push attempts made while the device was away restart at its next check-in.
        s.enqueue(&[&dev.udid], json!({"RequestType": "ProfileList"}))
            .await;
        s.push.run_once().await.unwrap();
        assert_eq!(seen(&s).await.2, 1, "one push attempt recorded");
        let cmd = next_command(&s, &dev, dev.idle(None))
            .await
            .expect("delivered");
        assert_eq!(seen(&s).await.2, 0, "the check-in restarted push attempts");
        next_command(
            &s,
            &dev,
            dev.report(None, "Acknowledged", &cmd.uuid, Dictionary::new()),
        )
        .await;
        s.stop().await;
    })
    .await;
}
