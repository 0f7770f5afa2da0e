//! Device groups end to end, on SQLite and PostgreSQL: admins create static and dynamic groups; dynamic
//! membership follows what devices report (DeviceInformation, plugin attributes, DDM status items) with no
//! admin action; commands and pushes target groups; the device list filters by group and attribute.

use mdm_server::apikeys::Scope;
use mdm_tests::ddm::{request, DdmClient};
use mdm_tests::device::{Device, Platform};
use mdm_tests::harness::{each_database, Resp, TestServer};
use mdm_tests::plugins;
use reqwest::Method;
use serde_json::{json, Value};

fn ok(r: Resp, status: u16, what: &str) -> Value {
    assert_eq!(r.status, status, "{what}: {}", r.text());
    if r.body.is_empty() {
        Value::Null
    } else {
        r.json()
    }
}

async fn enrolled(s: &TestServer, platform: Platform) -> Device {
    let dev = Device::new(platform);
    s.enroll(&dev).await;
    dev
}

async fn create(s: &TestServer, body: Value) -> Value {
    ok(s.post("/api/v1/groups", body).await, 201, "create group")
}

async fn patch(s: &TestServer, id: i64, body: Value) -> Resp {
    let path = format!("/api/v1/groups/{id}");
    s.api(Method::PATCH, &path, Some(&s.admin_key), Some(body))
        .await
}

/// A group's device ids, every page walked with a small page size.
async fn members(s: &TestServer, id: i64) -> Vec<String> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let path = format!("/api/v1/groups/{id}/devices?limit=2{cursor}");
        let page = ok(s.get(&path).await, 200, "members");
        for d in page["devices"].as_array().unwrap() {
            out.push(d["id"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => return out,
        }
    }
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

#[tokio::test]
async fn groups_are_created_read_changed_and_deleted_and_bad_input_changes_nothing() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        let (a, b) = (enrolled(&s, Platform::Ios).await, enrolled(&s, Platform::MacOs).await);
        let g = create(&s, json!({"name": "Lab", "devices": [a.udid, a.udid]})).await;
        let id = g["id"].as_i64().unwrap();
        assert_eq!((g["kind"].as_str(), g["members"].as_u64()), (Some("static"), Some(1)));
        assert_eq!(g["changes"]["joined"], 0, "a static group's creation is not a change of rule");
        let macs = create(&s, json!({"name": "Macs", "rule": {"fact": "platform", "op": "eq", "value": "macOS"}})).await;
        let macs_id = macs["id"].as_i64().unwrap();
        assert_eq!(macs["changes"]["joined"], 1);
        assert_eq!(members(&s, macs_id).await, std::slice::from_ref(&b.udid));

        let r = patch(&s, id, json!({"name": "Lab 2", "add": [b.udid], "remove": [a.udid]})).await;
        let g = ok(r, 200, "patch");
        assert_eq!((g["name"].as_str(), g["members"].as_u64()), (Some("Lab 2"), Some(1)));
        assert_eq!((g["changes"]["joined"].as_u64(), g["changes"]["left"].as_u64()), (Some(1), Some(1)));
        assert_eq!(members(&s, id).await, std::slice::from_ref(&b.udid));
        let list = ok(s.get("/api/v1/groups?limit=1").await, 200, "list");
        assert_eq!(list["groups"].as_array().unwrap().len(), 1);
        assert_eq!(list["next_cursor"], id);
        let one = ok(s.get(&format!("/api/v1/groups/{macs_id}")).await, 200, "get");
        assert_eq!(one["rule"], json!({"fact": "platform", "op": "eq", "value": "macOS"}));

        // Refused, naming why, with nothing stored.
        let before = s.snapshot().await;
        let bad = [
            (json!({"name": "X", "rule": {"all": [{"fact": "os_version", "op": "gt", "value": 17}]}}), 400, "rule.all[0].value"),
            (json!({"name": "X", "rule": {"fact": "colour", "op": "eq", "value": "red"}}), 400, "rule.fact"),
            (json!({"name": "X", "rule": {"fact": "model", "op": "eq", "value": "x"}, "devices": []}), 400, "exactly one"),
            (json!({"name": "X"}), 400, "exactly one"),
            (json!({"name": "X", "devices": ["NO-SUCH-DEVICE"]}), 400, "NO-SUCH-DEVICE"),
            (json!({"name": "X", "devices": ["bad id with spaces"]}), 400, "devices[0]"),
            (json!({"name": "", "devices": []}), 400, "name"),
            (json!({"name": "Macs", "devices": []}), 409, "exists"),
            (json!({"name": "X", "devices": [], "colour": 1}), 400, "colour"),
        ];
        for (body, status, says) in bad {
            let r = s.post("/api/v1/groups", body.clone()).await;
            assert_eq!(r.status, status, "{body}: {}", r.text());
            assert!(r.text().contains(says), "{body}: {}", r.text());
        }
        for (body, status) in [
            (json!({"add": [a.udid]}), 400),
            (json!({"rule": {"fact": "model", "op": "gt", "value": "x"}}), 400),
            (json!({"name": "Lab 2"}), 409),
        ] {
            let r = patch(&s, macs_id, body.clone()).await;
            assert_eq!(r.status, status, "{body}: {}", r.text());
        }
        assert_eq!(patch(&s, id, json!({"rule": {"fact": "model", "op": "exists"}})).await.status, 400);
        assert_eq!(patch(&s, 9999, json!({"name": "Y"})).await.status, 404);
        assert_eq!(s.get("/api/v1/groups/abc").await.status, 400);
        assert_eq!(s.get("/api/v1/groups/0").await.status, 400);
        assert_eq!(s.get("/api/v1/groups/-1/devices").await.status, 400);
        assert_eq!(s.get("/api/v1/groups/9999/devices").await.status, 404);
        assert_eq!(s.snapshot().await, before, "refusals changed nothing");

        // Reads with devices:read, changes with groups:write.
        let reader = s.key(&[Scope::DevicesRead]).await;
        let writer = s.key(&[Scope::GroupsWrite]).await;
        let body = json!({"name": "Z", "devices": []});
        let r = s.api(Method::POST, "/api/v1/groups", Some(&reader), Some(body.clone())).await;
        assert_eq!(r.status, 403);
        assert_eq!(s.api(Method::GET, "/api/v1/groups", Some(&reader), None).await.status, 200);
        let r = s.api(Method::POST, "/api/v1/groups", Some(&writer), Some(body)).await;
        assert_eq!(r.status, 201, "{}", r.text());

        assert_eq!(s.delete(&format!("/api/v1/groups/{id}")).await.status, 204);
        assert_eq!(s.get(&format!("/api/v1/groups/{id}")).await.status, 404);
        assert_eq!(s.delete(&format!("/api/v1/groups/{id}")).await.status, 404);
        let audit = s.audit_chain().await;
        let actions: Vec<&str> = audit.iter().map(|e| e.action.as_str()).collect();
        for action in ["group.created", "group.updated", "group.deleted"] {
            assert!(actions.contains(&action), "{action} audited: {actions:?}");
        }
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_device_moves_between_dynamic_groups_as_its_os_version_changes() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        let phone = enrolled(&s, Platform::Ios).await; // reports 17.5 at Authenticate
        let mac = enrolled(&s, Platform::MacOs).await;
        let current = create(
            &s,
            json!({"name": "current", "rule": {"all": [
                {"fact": "platform", "op": "eq", "value": "iOS"},
                {"fact": "os_version", "op": "gte", "value": "17.10"}
            ]}}),
        )
        .await["id"]
            .as_i64()
            .unwrap();
        let old = create(
            &s,
            json!({"name": "old", "rule": {"fact": "os_version", "op": "lt", "value": "17.10"}}),
        )
        .await["id"]
            .as_i64()
            .unwrap();
        assert!(members(&s, current).await.is_empty());
        let both = sorted(vec![phone.udid.clone(), mac.udid.clone()]);
        assert_eq!(
            sorted(members(&s, old).await),
            both,
            "17.5 and 14.5 are older than 17.10"
        );

        // No admin action: the device's own answer moves it (17.10 is newer than 17.9, as a version).
        s.report_os(&phone, "17.10").await;
        assert_eq!(
            members(&s, current).await,
            std::slice::from_ref(&phone.udid)
        );
        assert!(!members(&s, old).await.contains(&phone.udid));
        s.report_os(&phone, "17.9").await;
        assert!(members(&s, current).await.is_empty());
        assert!(members(&s, old).await.contains(&phone.udid));
        assert!(members(&s, old).await.contains(&mac.udid));
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn attributes_and_ddm_status_items_are_facts_too() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        let mut manifest = plugins::manifest("hostile");
        manifest["hooks"] = json!(["on-checkin"]);
        manifest["failure_policy"] = json!({"on-checkin": "fail-open"});
        let wasm = std::fs::read(plugins::build("hostile-plugin")).unwrap();
        use base64::Engine;
        let r = s.post("/api/v1/plugins", json!({"manifest": manifest, "config": {"mode": "tag"},
            "wasm_base64": base64::engine::general_purpose::STANDARD.encode(wasm),
            "approve_capabilities": manifest["capabilities"]})).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let tagged = create(&s, json!({"name": "tagged", "rule": {"fact": "attribute:hostile", "op": "eq", "value": "was here"}}))
            .await["id"].as_i64().unwrap();
        let compliant = create(&s, json!({"name": "compliant", "rule": {"fact": "ddm:passcode.is-compliant", "op": "eq", "value": true}}))
            .await["id"].as_i64().unwrap();
        // The plugin tags the device as it enrolls: it joins in that check-in.
        let dev = enrolled(&s, Platform::Ios).await;
        assert_eq!(members(&s, tagged).await, std::slice::from_ref(&dev.udid));
        let list = ok(s.get("/api/v1/devices?attribute=hostile=was%20here").await, 200, "by attribute");
        assert_eq!(list["devices"].as_array().unwrap().len(), 1);
        let list = ok(s.get("/api/v1/devices?attribute=hostile=other").await, 200, "by attribute");
        assert!(list["devices"].as_array().unwrap().is_empty());
        let list = ok(s.get(&format!("/api/v1/devices?group={tagged}")).await, 200, "by group");
        assert_eq!(list["devices"][0]["id"], dev.udid.as_str());
        let list = ok(s.get(&format!("/api/v1/devices?group={compliant}")).await, 200, "by group");
        assert!(list["devices"].as_array().unwrap().is_empty());

        // A DDM status report with the item: it joins; a later one saying otherwise: it leaves.
        for (value, expected) in [(true, vec![dev.udid.clone()]), (false, vec![])] {
            let report = json!({"StatusItems": {"passcode": {"is-compliant": value}}, "Errors": []});
            let body = request(&dev.udid, "status", Some(serde_json::to_vec(&report).unwrap()));
            let r = s.checkin(&dev, body).await;
            assert_eq!(r.status, 200, "{}", r.text());
            assert_eq!(members(&s, compliant).await, expected, "is-compliant {value}");
        }
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_command_or_push_to_a_group_reaches_exactly_its_members() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        let phones = [
            enrolled(&s, Platform::Ios).await,
            enrolled(&s, Platform::Ios).await,
        ];
        let mac = enrolled(&s, Platform::MacOs).await;
        let ios = create(
            &s,
            json!({"name": "iOS", "rule": {"fact": "platform", "op": "eq", "value": "iOS"}}),
        )
        .await["id"]
            .as_i64()
            .unwrap();
        let empty = create(&s, json!({"name": "none", "devices": []})).await["id"]
            .as_i64()
            .unwrap();
        // A group and an id naming one of its devices again: each device once.
        let r = s
            .post(
                "/api/v1/commands",
                json!({"groups": [ios, empty], "ids": [phones[0].udid],
            "command": {"RequestType": "ProfileList"}}),
            )
            .await;
        let out = ok(r, 200, "enqueue to a group");
        let targets: Vec<&String> = out["results"].as_object().unwrap().keys().collect();
        let mut want = vec![&phones[0].udid, &phones[1].udid];
        want.sort();
        assert_eq!(targets, want);
        for p in &phones {
            assert_eq!(
                s.next_command(p).await.expect("queued").request_type,
                "ProfileList"
            );
        }
        assert!(s.next_command(&mac).await.is_none(), "not a member");

        let before = s.snapshot().await;
        let r = s
            .post(
                "/api/v1/commands",
                json!({"groups": [ios, 424242], "command": {"RequestType": "ProfileList"}}),
            )
            .await;
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(r.text().contains("424242"), "{}", r.text());
        let too_many: Vec<i64> = (1..=101).collect();
        let r = s
            .post(
                "/api/v1/commands",
                json!({"groups": too_many, "command": {"RequestType": "ProfileList"}}),
            )
            .await;
        assert_eq!(r.status, 400, "{}", r.text());
        let r = s
            .post(
                "/api/v1/commands",
                json!({"groups": [empty], "command": {"RequestType": "ProfileList"}}),
            )
            .await;
        assert_eq!(r.status, 200, "an empty group is no error: {}", r.text());
        assert!(r.json()["results"].as_object().unwrap().is_empty());
        assert_eq!(s.snapshot().await, before);

        let r = s.post("/api/v1/push", json!({"groups": [ios]})).await;
        let pushed = ok(r, 200, "push a group");
        assert_eq!(pushed["results"].as_object().unwrap().len(), 2);
        assert_eq!(
            s.post("/api/v1/push", json!({"groups": [424242]}))
                .await
                .status,
            400
        );
        s.stop().await;
    })
    .await;
}

/// The DeclarativeManagement commands waiting for an enrollment.
async fn pending_syncs(s: &TestServer, id: &str) -> usize {
    let all = ok(
        s.get(&format!("/api/v1/enrollments/{id}/commands")).await,
        200,
        "queue",
    );
    all.as_array()
        .unwrap()
        .iter()
        .filter(|c| c["request_type"] == "DeclarativeManagement")
        .count()
}

async fn group_set(s: &TestServer, method: Method, group: i64, set: &str) -> Resp {
    let path = format!("/api/v1/ddm/groups/{group}/sets/{set}");
    s.api(method, &path, Some(&s.admin_key), None).await
}

/// The device takes its waiting sync command and syncs; returns the declarations it then holds (but the
/// server's built-in ones).
async fn synced(s: &TestServer, dev: &Device, client: &mut DdmClient) -> Vec<String> {
    let cmd = s.next_command(dev).await.expect("a sync command");
    assert_eq!(cmd.request_type, "DeclarativeManagement");
    s.ddm_sync(dev, client).await;
    assert_eq!(pending_syncs(s, &dev.udid).await, 0);
    client
        .held
        .keys()
        .filter(|k| !k.starts_with("mdm.builtin."))
        .cloned()
        .collect()
}

/// A DDM set assigned to a group reaches its members and follows membership with no one assigning
/// anything: a device that joins (a static group's edit, a dynamic group's rule after an OS update, a new
/// enrollment matching a rule) is synced and gets the declarations; one that leaves, or whose group is
/// deleted, is synced and drops them; devices whose declarations do not change are sent nothing.
#[tokio::test]
async fn a_set_assigned_to_a_group_follows_its_membership() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        let phone = enrolled(&s, Platform::Ios).await; // 17.5
        let mac = enrolled(&s, Platform::MacOs).await;
        let decl = json!({"Type": "com.apple.configuration.passcode.settings", "Identifier": "p.group",
                          "Payload": {"RequirePasscode": true}});
        let r = s
            .api(Method::PUT, "/api/v1/ddm/declarations", Some(&s.admin_key), Some(decl))
            .await;
        ok(r, 200, "declaration");
        let set = json!({"declarations": ["p.group"]});
        let r = s
            .api(Method::PUT, "/api/v1/ddm/sets/baseline", Some(&s.admin_key), Some(set))
            .await;
        ok(r, 200, "set");
        let lab = create(&s, json!({"name": "lab", "devices": [mac.udid]})).await["id"]
            .as_i64()
            .unwrap();
        let current = create(
            &s,
            json!({"name": "current", "rule": {"fact": "os_version", "op": "gte", "value": "17.10"}}),
        )
        .await["id"]
            .as_i64()
            .unwrap();

        // Assigned to the static group: its member is synced, no one else.
        let r = ok(group_set(&s, Method::PUT, lab, "baseline").await, 200, "assign");
        assert_eq!(r["changed"], true);
        let again = ok(group_set(&s, Method::PUT, lab, "baseline").await, 200, "again");
        assert_eq!(again["changed"], false);
        assert_eq!((pending_syncs(&s, &mac.udid).await, pending_syncs(&s, &phone.udid).await), (1, 0));
        let view = ok(s.get(&format!("/api/v1/ddm/groups/{lab}")).await, 200, "group sets");
        assert_eq!(view["sets"], json!(["baseline"]));
        let mut mac_client = DdmClient::default();
        assert_eq!(synced(&s, &mac, &mut mac_client).await, ["p.group"]);
        let enrollment = ok(s.get(&format!("/api/v1/ddm/enrollments/{}", mac.udid)).await, 200, "view");
        assert_eq!(enrollment["sets"], json!(["baseline"]));

        // Assigned to a dynamic group with no members: nothing is sent. The phone's OS update moves it in,
        // and it is synced; its downgrade moves it out, and it drops the declaration.
        ok(group_set(&s, Method::PUT, current, "baseline").await, 200, "assign dynamic");
        assert_eq!(pending_syncs(&s, &phone.udid).await, 0);
        let mut phone_client = DdmClient::default();
        s.report_os(&phone, "17.10").await;
        assert_eq!(pending_syncs(&s, &phone.udid).await, 1, "joined: synced");
        assert_eq!(synced(&s, &phone, &mut phone_client).await, ["p.group"]);
        s.report_os(&phone, "17.11").await;
        assert_eq!(pending_syncs(&s, &phone.udid).await, 0, "still a member: nothing changed");
        s.report_os(&phone, "17.9").await;
        assert_eq!(pending_syncs(&s, &phone.udid).await, 1, "left: synced");
        assert!(synced(&s, &phone, &mut phone_client).await.is_empty());

        // A static group's edit: removed, synced, dropped; added back, synced, held again.
        assert_eq!(patch(&s, lab, json!({"remove": [mac.udid]})).await.status, 200);
        assert!(synced(&s, &mac, &mut mac_client).await.is_empty());
        assert_eq!(patch(&s, lab, json!({"add": [mac.udid]})).await.status, 200);
        assert_eq!(synced(&s, &mac, &mut mac_client).await, ["p.group"]);

        // A device enrolling into a group that carries sets is told of them at its first TokenUpdate.
        let rule = json!({"fact": "platform", "op": "eq", "value": "macOS"});
        let macs = create(&s, json!({"name": "macs", "rule": rule})).await["id"].as_i64().unwrap();
        ok(group_set(&s, Method::PUT, macs, "baseline").await, 200, "assign macs");
        assert_eq!(pending_syncs(&s, &mac.udid).await, 0, "the set reaches mac through lab already");
        let new_mac = enrolled(&s, Platform::MacOs).await;
        let mut new_client = DdmClient::default();
        assert_eq!(synced(&s, &new_mac, &mut new_client).await, ["p.group"]);
        // A new device with no sets is sent no DeclarativeManagement command.
        let new_phone = enrolled(&s, Platform::Ios).await;
        assert_eq!(pending_syncs(&s, &new_phone.udid).await, 0);

        // Unassigned from lab: mac still holds it through macs, so nothing is sent.
        let r = ok(group_set(&s, Method::DELETE, lab, "baseline").await, 200, "unassign");
        assert_eq!(r["changed"], true);
        assert_eq!(pending_syncs(&s, &mac.udid).await, 0);
        // The group deleted: its members lose its sets and are synced.
        assert_eq!(s.delete(&format!("/api/v1/groups/{macs}")).await.status, 204);
        assert!(synced(&s, &mac, &mut mac_client).await.is_empty());
        assert!(synced(&s, &new_mac, &mut new_client).await.is_empty());

        // Bad input changes nothing: a bad group id, an unknown group or set, a key without ddm:write.
        let reader = s.key(&[Scope::DevicesRead, Scope::GroupsWrite]).await;
        let before = s.snapshot().await;
        assert_eq!(group_set(&s, Method::PUT, 0, "baseline").await.status, 400);
        assert_eq!(group_set(&s, Method::PUT, 99_999, "baseline").await.status, 404);
        assert_eq!(group_set(&s, Method::PUT, lab, "nope").await.status, 404);
        let r = s.api(Method::PUT, "/api/v1/ddm/groups/x/sets/baseline", Some(&s.admin_key), None).await;
        assert_eq!(r.status, 400);
        let r = s.api(Method::PUT, &format!("/api/v1/ddm/groups/{lab}/sets/bad%20name"), Some(&s.admin_key), None).await;
        assert_eq!(r.status, 400);
        let r = s.api(Method::PUT, &format!("/api/v1/ddm/groups/{lab}/sets/baseline"), Some(&reader), None).await;
        assert_eq!(r.status, 403);
        assert_eq!(s.get(&format!("/api/v1/ddm/groups/{}", 99_999)).await.status, 404);
        let view = ok(s.get(&format!("/api/v1/ddm/groups/{lab}")).await, 200, "group sets");
        assert_eq!(view["sets"], json!([]));
        let actions: Vec<String> = s.audit_chain().await.into_iter().map(|e| e.action).collect();
        for action in ["ddm.group_set_assigned", "ddm.group_set_unassigned"] {
            assert!(actions.iter().any(|a| a == action), "{action} is audited");
        }
        assert_eq!(s.snapshot().await, before, "refused requests changed nothing");
        s.stop().await;
    })
    .await;
}
