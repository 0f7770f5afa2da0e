//! Policy rollouts end to end, on SQLite and PostgreSQL, over a simulated fleet of 200 devices (iPhones and
//! Macs, each with the DDM client of `mdm_tests::ddm`): a version reaches the pilot, then the canary, then
//! everyone, promoted by the rollout round as time passes (the manual clock, no sleeping); a canary whose
//! devices report the version invalid halts the rollout and takes the version back before anyone else
//! gets it; a stored version changed behind the database's refusal stops its rollout; activating the
//! active version changes nothing.

use mdm_server::clock::to_rfc3339;
use mdm_server::config::SinkConfig;
use mdm_server::policies::pack;
use mdm_server::policies::stages::{Plan, Stage};
use mdm_server::storage::testing::TestDatabase;
use mdm_tests::ddm::DdmClient;
use mdm_tests::device::{Device, Platform};
use mdm_tests::harness::{each_database, Resp, TestServer};
use mdm_tests::policy::folder;
use mdm_tests::profiles::ProfileStore;
use mdm_tests::sink::Sink;
use openssl::pkey::PKey;
use sea_orm::ConnectionTrait;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::OnceLock;

const FLEET_SIZE: usize = 200;
const SOAK_SECS: i64 = 600;

/// The fleet, made once for every test and database (an identity's RSA key is the slow part).
fn fleet() -> &'static [Device] {
    static FLEET: OnceLock<Vec<Device>> = OnceLock::new();
    FLEET.get_or_init(|| {
        std::thread::scope(|sc| {
            let parts: Vec<_> = (0..4)
                .map(|t| {
                    sc.spawn(move || {
                        (0..FLEET_SIZE / 4)
                            .map(|i| {
                                let platform = if (t + i) % 2 == 0 {
                                    Platform::Ios
                                } else {
                                    Platform::MacOs
                                };
                                Device::new(platform)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            parts.into_iter().flat_map(|p| p.join().unwrap()).collect()
        })
    })
}

fn ok(r: Resp, status: u16, what: &str) -> Value {
    assert_eq!(r.status, status, "{what}: {}", r.text());
    r.json()
}

/// A test server with a trusted signer, the first `n` devices of the fleet enrolled, a target group (a
/// static group of them, unless given) and a policy for it.
struct Rig {
    s: TestServer,
    signing_key: Vec<u8>,
    n: usize,
    group: i64,
    policy: i64,
    clients: Vec<DdmClient>,
    /// Every identifier each device ever fetched.
    ever: Vec<BTreeSet<String>>,
}

impl Rig {
    async fn start(db: TestDatabase) -> Rig {
        Self::with(db, FLEET_SIZE, None, |_| {}).await
    }

    async fn with(
        db: TestDatabase,
        n: usize,
        target: Option<Value>,
        tweak: impl FnOnce(&mut mdm_server::Config) + Send + 'static,
    ) -> Rig {
        let keys = tempfile::tempdir().unwrap();
        let signer = PKey::generate_ed25519().unwrap();
        let signer_file = keys.path().join("ci.pem");
        std::fs::write(&signer_file, signer.public_key_to_pem().unwrap()).unwrap();
        let s = TestServer::start_with(db, move |c| {
            c.policies.trusted_signers = vec![signer_file];
            tweak(c);
        })
        .await;
        for dev in &fleet()[..n] {
            s.enroll(dev).await;
        }
        let ids: Vec<&str> = fleet()[..n].iter().map(|d| d.udid.as_str()).collect();
        let target = target.unwrap_or_else(|| json!({"name": "fleet", "devices": ids}));
        let group = ok(s.post("/api/v1/groups", target).await, 201, "group")["id"]
            .as_i64()
            .unwrap();
        let policy = ok(
            s.post(
                "/api/v1/policies",
                json!({"name": "baseline", "target_group": group}),
            )
            .await,
            201,
            "policy",
        )["id"]
            .as_i64()
            .unwrap();
        Rig {
            s,
            signing_key: signer.private_key_to_pem_pkcs8().unwrap(),
            n,
            group,
            policy,
            clients: vec![DdmClient::default(); n],
            ever: vec![BTreeSet::new(); n],
        }
    }

    /// Pack, sign and upload a version of declarations.
    async fn upload(&self, version: &str, minimum_length: i64) {
        self.upload_folder(version, minimum_length, false).await
    }

    /// Pack, sign and upload a version, with a profile or not.
    async fn upload_folder(&self, version: &str, minimum_length: i64, profile: bool) {
        let dir = tempfile::tempdir().unwrap();
        folder(dir.path(), version, minimum_length, profile);
        let packed = pack::pack(dir.path(), Some(&self.signing_key)).unwrap();
        let res = self
            .s
            .http
            .post(format!(
                "{}/api/v1/policies/{}/versions",
                self.s.base, self.policy
            ))
            .bearer_auth(&self.s.admin_key)
            .header("Content-Type", "application/zip")
            .body(packed.zip)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 201, "upload {version}");
    }

    async fn activate(&self, body: Value) -> Resp {
        self.s
            .post(&format!("/api/v1/policies/{}/activate", self.policy), body)
            .await
    }

    async fn rollout(&self) -> Value {
        ok(
            self.s
                .get(&format!("/api/v1/policies/{}/rollout", self.policy))
                .await,
            200,
            "rollout",
        )
    }

    /// One rollout round at the server's current time; the actions it took.
    async fn round(&self) -> Vec<String> {
        let steps = self
            .s
            .state
            .rollouts
            .round(self.s.clock_now())
            .await
            .expect("round");
        steps
            .into_iter()
            .map(|(_, s)| s.action.to_string())
            .collect()
    }

    fn soak(&self) {
        self.s.clock.advance_ms(SOAK_SECS * 1000);
    }

    /// Every device syncs its declarations, as it would on the DeclarativeManagement command.
    async fn sync_all(&mut self) {
        for (i, dev) in fleet()[..self.n].iter().enumerate() {
            let round = self.s.ddm_sync(dev, &mut self.clients[i]).await;
            self.ever[i].extend(round.fetched);
        }
    }

    /// The policy's declarations device `i` holds (identifiers as it knows them).
    fn holds(&self, i: usize) -> Vec<String> {
        self.clients[i]
            .held
            .keys()
            .filter(|id| id.starts_with("com.example."))
            .cloned()
            .collect()
    }

    /// Each of `actions` is in the audit log.
    async fn assert_audited(&self, actions: &[&str]) {
        let logged: Vec<String> = self
            .s
            .audit_chain()
            .await
            .into_iter()
            .map(|e| e.action)
            .collect();
        for a in actions {
            assert!(logged.iter().any(|x| x == a), "{a} audited: {logged:?}");
        }
    }

    /// The stage that reaches each device, by the shares the server uses by default.
    fn stages(&self) -> Vec<Stage> {
        let plan = Plan::Shares {
            pilot_percent: 10,
            canary_percent: 25,
        };
        fleet()
            .iter()
            .map(|d| plan.stage_of(self.policy, &d.udid, |_| false))
            .collect()
    }
}

fn count(stages: &[Stage], upto: Stage) -> usize {
    stages.iter().filter(|s| **s <= upto).count()
}

#[tokio::test]
async fn a_version_reaches_pilot_canary_and_everyone_promoted_by_its_gates() {
    each_database(|db| async move {
        let mut rig = Rig::start(db).await;
        let stages = rig.stages();
        assert!(
            count(&stages, Stage::Pilot) > 5 && count(&stages, Stage::Canary) < 80,
            "{stages:?}"
        );
        rig.upload("1", 6).await;
        assert_eq!(
            rig.activate(json!({"version": "2"})).await.status,
            404,
            "an unknown version"
        );
        let r = ok(
            rig.activate(json!({"version": "1", "soak_secs": SOAK_SECS}))
                .await,
            201,
            "activate",
        );
        assert_eq!(
            (r["state"].as_str(), r["stage"].as_str()),
            (Some("running"), Some("pilot"))
        );

        // Exactly the pilot was told to sync.
        for (i, dev) in fleet().iter().enumerate().take(40) {
            let cmd = rig.s.next_command(dev).await;
            let told = cmd.is_some_and(|c| c.request_type == "DeclarativeManagement");
            assert_eq!(
                told,
                stages[i] == Stage::Pilot,
                "device {i} ({:?})",
                stages[i]
            );
        }
        for (stage, next) in [(Stage::Pilot, "canary"), (Stage::Canary, "full")] {
            rig.sync_all().await;
            for (i, reached_by) in stages.iter().enumerate() {
                let expected = if *reached_by <= stage { 2 } else { 0 };
                assert_eq!(
                    rig.holds(i).len(),
                    expected,
                    "device {i} ({reached_by:?}) at {stage:?}"
                );
            }
            let r = rig.rollout().await;
            let here = &r["stages"][stage as usize];
            assert_eq!(
                here["devices"],
                stages.iter().filter(|s| **s == stage).count()
            );
            assert_eq!(here["failed"], 0);
            assert_eq!(here["pending"], 0, "{r}");
            assert!(
                r["waiting_for"]
                    .as_str()
                    .unwrap()
                    .starts_with("soaking until"),
                "{r}"
            );
            assert!(
                rig.round().await.is_empty(),
                "nothing moves before the soak is over"
            );
            rig.soak();
            assert_eq!(rig.round().await, ["policy.rollout_promoted"]);
            assert_eq!(rig.rollout().await["stage"], next);
        }
        rig.sync_all().await;
        assert!(
            (0..FLEET_SIZE).all(|i| rig.holds(i).len() == 2),
            "everyone holds the version"
        );
        rig.soak();
        assert_eq!(rig.round().await, ["policy.rollout_completed"]);
        let r = rig.rollout().await;
        assert_eq!(r["state"], "completed");
        let succeeded: u64 = r["stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["succeeded"].as_u64().unwrap())
            .sum();
        assert_eq!(succeeded, FLEET_SIZE as u64);
        assert_eq!(r["gates"]["failure_ratio"], 0.0);

        // The same version again: nothing changes.
        let again = ok(
            rig.activate(json!({"version": "1"})).await,
            200,
            "activate again",
        );
        assert_eq!(again["state"], "completed");
        assert!(rig.round().await.is_empty());

        // A second version reaches the pilot; everyone else keeps the first.
        rig.upload("2", 8).await;
        let before: Vec<Vec<String>> = (0..FLEET_SIZE).map(|i| rig.holds(i)).collect();
        ok(
            rig.activate(json!({"version": "2", "soak_secs": SOAK_SECS}))
                .await,
            201,
            "activate 2",
        );
        rig.sync_all().await;
        for i in 0..FLEET_SIZE {
            let changed = rig.holds(i) != before[i];
            assert_eq!(changed, stages[i] == Stage::Pilot, "device {i}");
            assert_eq!(rig.holds(i).len(), 2);
        }
        assert_eq!(
            rig.activate(json!({"version": "1"})).await.status,
            409,
            "another version while one rolls out"
        );
        rig.assert_audited(&[
            "policy.activated",
            "policy.rollout_promoted",
            "policy.rollout_completed",
        ])
        .await;
        rig.s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_failing_canary_halts_the_rollout_and_takes_the_version_back() {
    each_database(|db| async move {
        let mut rig = Rig::start(db).await;
        let stages = rig.stages();
        rig.upload("1", 6).await;
        rig.upload("2", 8).await;
        ok(
            rig.activate(json!({"version": "1", "soak_secs": 0})).await,
            201,
            "activate 1",
        );
        for _ in 0..3 {
            rig.sync_all().await;
            rig.round().await;
        }
        assert_eq!(rig.rollout().await["state"], "completed");
        let v1: Vec<Vec<String>> = (0..FLEET_SIZE).map(|i| rig.holds(i)).collect();
        assert!(v1.iter().all(|h| h == &v1[0]));

        ok(
            rig.activate(json!({"version": "2", "soak_secs": SOAK_SECS}))
                .await,
            201,
            "activate 2",
        );
        rig.sync_all().await;
        let pilot = stages.iter().position(|s| *s == Stage::Pilot).unwrap();
        let v2_passcode = rig
            .holds(pilot)
            .into_iter()
            .find(|id| id.starts_with("com.example.passcode@"))
            .unwrap();
        assert!(
            !v1[0].contains(&v2_passcode),
            "a changed declaration has a new identifier"
        );
        rig.soak();
        assert_eq!(rig.round().await, ["policy.rollout_promoted"]);

        // A third of the canary cannot apply the new passcode rule.
        let canary: Vec<usize> = (0..FLEET_SIZE)
            .filter(|i| stages[*i] == Stage::Canary)
            .collect();
        for i in canary.iter().step_by(3) {
            rig.clients[*i].refuses.insert(v2_passcode.clone());
        }
        rig.sync_all().await;
        assert_eq!(
            rig.round().await,
            ["policy.rollout_rolled_back"],
            "halted without waiting for the soak"
        );
        let r = rig.rollout().await;
        assert_eq!(r["state"], "rolled_back");
        assert!(
            r["reason"].as_str().unwrap().contains("failure ratio"),
            "{r}"
        );
        assert_eq!(r["stages"][1]["failed"], canary.iter().step_by(3).count());
        assert!(
            !r["top_failure_reasons"].as_array().unwrap().is_empty(),
            "{r}"
        );

        // Everyone is back on the first version; no one past the canary ever saw the second.
        rig.sync_all().await;
        for i in 0..FLEET_SIZE {
            assert_eq!(rig.holds(i), v1[i], "device {i}");
            assert_eq!(
                rig.ever[i].contains(&v2_passcode),
                stages[i] <= Stage::Canary,
                "device {i} ({:?})",
                stages[i]
            );
        }
        rig.soak();
        assert!(rig.round().await.is_empty(), "a rolled back rollout stays");
        assert_eq!(
            rig.s
                .post(
                    &format!("/api/v1/policies/{}/rollout/promote", rig.policy),
                    json!({})
                )
                .await
                .status,
            409
        );
        rig.s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_version_changed_behind_the_database_stops_its_rollout() {
    each_database(|db| async move {
        let mut rig = Rig::start(db).await;
        rig.upload("1", 6).await;
        rig.upload("2", 8).await;
        ok(rig.activate(json!({"version": "1", "soak_secs": SOAK_SECS})).await, 201, "activate");
        rig.sync_all().await;

        let db = mdm_server::storage::testing::db(&rig.s.storage);
        let swap = "UPDATE policy_versions SET bundle = (SELECT bundle FROM policy_versions WHERE version = '2') \
                    WHERE version = '1'";
        let refused = db.execute_unprepared(swap).await.expect_err("the trigger refuses");
        assert!(refused.to_string().contains("policy versions are immutable"));
        let drop = if rig.s.storage.backend() == sea_orm::DbBackend::Postgres {
            "DROP TRIGGER policy_versions_immutable ON policy_versions"
        } else {
            "DROP TRIGGER policy_versions_no_update"
        };
        db.execute_unprepared(drop).await.unwrap();
        db.execute_unprepared(swap).await.unwrap();

        rig.soak();
        assert!(rig.round().await.is_empty(), "the promotion did not happen");
        let r = rig.rollout().await;
        assert_eq!((r["state"].as_str(), r["stage"].as_str()), (Some("halted"), Some("pilot")), "{r}");
        assert!(r["reason"].as_str().unwrap().contains("digest"), "{r}");
        let manual = rig.s.post(&format!("/api/v1/policies/{}/rollout/promote", rig.policy), json!({})).await;
        assert_eq!(manual.status, 409, "{}", manual.text());
        rig.assert_audited(&["policy.version_tampered"]).await;
        let metrics = rig.s.api(reqwest::Method::GET, "/metrics", None, None).await.text();
        assert!(metrics.contains("mdm_policy_versions_tampered_total 2"), "{metrics}");
        rig.s.stop().await;
    })
    .await;
}

async fn control(rig: &Rig, action: &str) -> Resp {
    let path = format!("/api/v1/policies/{}/rollout/{action}", rig.policy);
    rig.s.post(&path, json!({})).await
}

#[tokio::test]
async fn admins_steer_a_rollout_and_cannot_touch_what_a_policy_owns() {
    each_database(|db| async move {
        let sink = Sink::start(200).await;
        let url = sink.url.clone();
        let mut rig = Rig::with(db, 4, None, move |c| {
            let to = SinkConfig {
                url: url.into(),
                headers: Default::default(),
                timeout_secs: 5,
                batch_max_events: 1,
            };
            c.plugins.sinks.insert("changes".into(), to);
            c.policies.event_sinks = vec!["changes".into()];
        })
        .await;
        let s = &rig.s;
        let policy = rig.policy;
        rig.upload("1", 6).await;
        assert_eq!(s.get(&format!("/api/v1/policies/{policy}/rollout")).await.status, 404, "nothing activated");

        // Refused activations change nothing.
        let reader = s.key(&[mdm_server::apikeys::Scope::DevicesRead]).await;
        let activate = format!("/api/v1/policies/{policy}/activate");
        let r = s.api(reqwest::Method::POST, &activate, Some(&reader), Some(json!({"version": "1"}))).await;
        assert_eq!(r.status, 403, "activating needs policies:write");
        for (body, status) in [
            (json!({}), 400),
            (json!({"version": "a b"}), 400),
            (json!({"version": "1", "extra": 1}), 400),
            (json!({"version": "1", "pilot_percent": 0}), 400),
            (json!({"version": "1", "pilot_percent": 50, "canary_percent": 20}), 400),
            (json!({"version": "1", "canary_percent": 101}), 400),
            (json!({"version": "1", "pilot_group": rig.group}), 400),
            (json!({"version": "1", "pilot_group": 9999, "canary_group": 9998}), 400),
            (json!({"version": "1", "soak_secs": 40_000_000}), 400),
            (json!({"version": "9"}), 404),
        ] {
            let r = rig.activate(body.clone()).await;
            assert_eq!(r.status, status, "{body}: {}", r.text());
        }
        assert_eq!(s.post("/api/v1/policies/77/activate", json!({"version": "1"})).await.status, 404);
        assert_eq!(s.post("/api/v1/policies/x/activate", json!({"version": "1"})).await.status, 400);
        assert_eq!(s.get(&format!("/api/v1/policies/{policy}/rollout")).await.status, 404);

        let r = rig
            .activate(json!({"version": "1", "pilot_percent": 100, "canary_percent": 100, "soak_secs": 60}))
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
        rig.sync_all().await;
        assert!((0..4).all(|i| rig.holds(i).len() == 2), "a pilot of 100% is everyone");
        // A device that unenrolls loses its assignments; enrolling again, its first TokenUpdate gives the
        // version back (its membership of the target group is the device's, and stayed).
        let r = rig.s.checkin(&fleet()[0], fleet()[0].checkout()).await;
        assert_eq!(r.status, 200, "{}", r.text());
        rig.clients[0] = DdmClient::default();
        rig.s.enroll(&fleet()[0]).await;
        rig.sync_all().await;
        assert_eq!(rig.holds(0).len(), 2, "restored at enrollment");
        let s = &rig.s;
        let r = s.api(reqwest::Method::GET, &format!("/api/v1/policies/{policy}/rollout"), Some(&reader), None).await;
        assert_eq!(r.status, 200, "reading needs devices:read only");

        // What the policy owns is not an admin's to change.
        let owned = rig.holds(0).into_iter().find(|i| i.starts_with("com.example.passcode@")).unwrap();
        let set = format!("mdm.policy.{policy}.1");
        let edit = json!({"Type": "com.apple.configuration.passcode.settings", "Identifier": owned,
                          "Payload": {"MinimumLength": 1}});
        let r = s.api(reqwest::Method::PUT, "/api/v1/ddm/declarations", Some(&s.admin_key), Some(edit)).await;
        assert_eq!(r.status, 409, "{}", r.text());
        assert_eq!(s.delete(&format!("/api/v1/ddm/declarations/{owned}")).await.status, 409);
        let udid = &fleet()[0].udid;
        for (method, path, body) in [
            (reqwest::Method::PUT, format!("/api/v1/ddm/sets/{set}"), Some(json!({"declarations": []}))),
            (reqwest::Method::DELETE, format!("/api/v1/ddm/sets/{set}"), None),
            (reqwest::Method::DELETE, format!("/api/v1/ddm/enrollments/{udid}/sets/{set}"), None),
            (reqwest::Method::PUT, format!("/api/v1/ddm/enrollments/{udid}/sets/{set}"), None),
            (reqwest::Method::PUT, format!("/api/v1/ddm/groups/{}/sets/{set}", rig.group), None),
            (reqwest::Method::PUT, "/api/v1/ddm/sets/mine".into(), Some(json!({"declarations": [owned]}))),
        ] {
            let r = s.api(method.clone(), &path, Some(&s.admin_key), body).await;
            assert_eq!(r.status, 400, "{method} {path}: {}", r.text());
        }
        assert_eq!(s.get(&format!("/api/v1/ddm/sets/{set}")).await.status, 200, "reading one is fine");
        rig.sync_all().await;
        assert!((0..4).all(|i| rig.holds(i).len() == 2), "nothing was taken");

        // Pause holds promotion past the soak; resume lets it go; promote and rollback act at once.
        assert_eq!(control(&rig, "sideways").await.status, 400);
        assert_eq!(control(&rig, "resume").await.status, 409, "not paused");
        assert_eq!(ok(control(&rig, "pause").await, 200, "pause")["state"], "paused");
        assert_eq!(control(&rig, "pause").await.status, 409);
        rig.soak();
        assert!(rig.round().await.is_empty(), "paused");
        assert_eq!(ok(control(&rig, "resume").await, 200, "resume")["state"], "running");
        assert_eq!(rig.round().await, ["policy.rollout_promoted"]);
        let r = ok(control(&rig, "promote").await, 200, "promote");
        assert_eq!((r["state"].as_str(), r["stage"].as_str()), (Some("running"), Some("full")));
        let r = ok(control(&rig, "rollback").await, 200, "rollback");
        assert_eq!(r["state"], "rolled_back");
        rig.sync_all().await;
        assert!((0..4).all(|i| rig.holds(i).is_empty()), "a first version rolled back leaves nothing");
        assert_eq!(control(&rig, "rollback").await.status, 409);
        // Rolled back, the same version may start again.
        assert_eq!(rig.activate(json!({"version": "1", "soak_secs": 0})).await.status, 201);
        rig.assert_audited(&["policy.rollout_paused", "policy.rollout_resumed", "policy.rollout_rolled_back"])
            .await;
        // Each step went to the configured sink too, in order.
        rig.s.deliver_events().await;
        let ids: BTreeSet<String> = sink.received().into_iter().map(|e| e.id).collect();
        assert_eq!(ids.len(), sink.count(), "every event has its own id");
        assert!(ids.iter().all(|id| uuid::Uuid::parse_str(id).is_ok()), "{ids:?}");
        let got: Vec<(String, Value)> = sink.received().into_iter().map(|e| (e.topic, e.body)).collect();
        let topics: Vec<&str> = got.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(
            topics,
            [
                "policy.activated",
                "policy.rollout_paused",
                "policy.rollout_resumed",
                "policy.rollout_promoted",
                "policy.rollout_promoted",
                "policy.rollout_rolled_back",
                "policy.activated"
            ]
        );
        let promoted = &got[4].1;
        assert_eq!((promoted["policy_id"].as_i64(), promoted["stage"].as_str()), (Some(policy), Some("full")));
        assert_eq!(promoted["actor"], "api-key:test-admin", "{promoted}");
        assert_eq!(got[3].1["actor"], "rollout", "the round promoted the pilot");
        rig.s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn explicit_stage_groups_and_a_dynamic_target_that_follows_os_updates() {
    each_database(|db| async move {
        let target = json!({"name": "current", "rule": {"fact": "os_version", "op": "gte", "value": "17.10"}});
        let mut rig = Rig::with(db, 6, Some(target), |_| {}).await;
        let dev = |i: usize| &fleet()[i];
        for i in 0..4 {
            rig.s.report_os(dev(i), "17.10").await;
        }
        let group = |name: &str, i: usize| json!({"name": name, "devices": [dev(i).udid]});
        let pilot = ok(rig.s.post("/api/v1/groups", group("pilots", 0)).await, 201, "pilots")["id"].clone();
        let canary = ok(rig.s.post("/api/v1/groups", group("canaries", 1)).await, 201, "canaries")["id"].clone();
        rig.upload("1", 6).await;
        let r = rig
            .activate(json!({"version": "1", "pilot_group": pilot, "canary_group": canary, "soak_secs": 0}))
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
        assert_eq!(rig.s.delete(&format!("/api/v1/groups/{pilot}")).await.status, 409, "in use by the rollout");

        let holding = |rig: &Rig| (0..6).filter(|i| !rig.holds(*i).is_empty()).collect::<Vec<_>>();
        rig.sync_all().await;
        assert_eq!(holding(&rig), [0]);
        ok(control(&rig, "promote").await, 200, "to canary");
        rig.sync_all().await;
        assert_eq!(holding(&rig), [0, 1]);
        ok(control(&rig, "promote").await, 200, "to full");
        rig.sync_all().await;
        assert_eq!(holding(&rig), [0, 1, 2, 3], "devices 4 and 5 run an older OS: not targeted");

        // Device 4 updates: it joins the target and gets the version with no one acting; device 2
        // goes back and loses it.
        rig.s.report_os(dev(4), "17.11").await;
        rig.s.report_os(dev(2), "17.9").await;
        rig.sync_all().await;
        assert_eq!(holding(&rig), [0, 1, 3, 4]);
        let r = rig.rollout().await;
        let reached: u64 = r["stages"].as_array().unwrap().iter().map(|s| s["devices"].as_u64().unwrap()).sum();
        assert_eq!(reached, 4, "{r}");

        rig.s.stop().await;
    })
    .await;
}

/// The profile of `mdm_tests::policy::PROFILE` as devices are sent it: the PayloadUUID a device lists.
fn delivered_wifi_uuid() -> String {
    use mdm_server::policies::profile;
    let bytes = mdm_tests::policy::PROFILE.as_bytes();
    let p = profile::read("wifi", bytes).unwrap();
    profile::delivered(bytes, &p).unwrap().payload_uuid
}

/// The profile commands among those a device received.
fn profile_commands(received: Vec<String>) -> Vec<String> {
    received
        .into_iter()
        .filter(|t| t.contains("Profile"))
        .collect()
}

/// Explicit stages over 12 devices: pilots 0–3, canaries 4–7, the rest at full.
async fn twelve_with_stages(db: TestDatabase) -> (Rig, Value, Value) {
    let rig = Rig::with(db, 12, None, |_| {}).await;
    let udids = |r: std::ops::Range<usize>| -> Vec<String> {
        fleet()[r].iter().map(|d| d.udid.clone()).collect()
    };
    let pilot = ok(
        rig.s
            .post(
                "/api/v1/groups",
                json!({"name": "pilots", "devices": udids(0..4)}),
            )
            .await,
        201,
        "pilots",
    )["id"]
        .clone();
    let canary = ok(
        rig.s
            .post(
                "/api/v1/groups",
                json!({"name": "canaries", "devices": udids(4..8)}),
            )
            .await,
        201,
        "canaries",
    )["id"]
        .clone();
    (rig, pilot, canary)
}

async fn device_profiles(rig: &Rig, i: usize) -> Value {
    let path = format!("/api/v1/devices/{}/profiles", fleet()[i].udid);
    ok(rig.s.get(&path).await, 200, "device profiles")["profiles"].clone()
}

#[tokio::test]
async fn profiles_are_installed_only_where_missing_verified_by_a_list_and_gate_the_rollout() {
    each_database(|db| async move {
        let (mut rig, pilot, canary) = twelve_with_stages(db).await;
        let mut stores = vec![ProfileStore::default(); 12];
        // Device 1 has the profile already; device 2's acknowledgement of its install is lost.
        stores[1].preinstall("com.example.wifi", &delivered_wifi_uuid());
        stores[2].drop_next_install_ack = true;
        rig.upload_folder("1", 6, true).await;
        let r = rig
            .activate(json!({"version": "1", "pilot_group": pilot, "canary_group": canary, "soak_secs": SOAK_SECS}))
            .await;
        assert_eq!(r.status, 201, "{}", r.text());

        let mut got = Vec::new();
        for (i, store) in stores.iter_mut().enumerate() {
            got.push(profile_commands(store.run(&rig.s, &fleet()[i]).await));
        }
        let install = ["ProfileList", "InstallProfile", "ProfileList"];
        assert_eq!(got[0], install, "listed, installed, confirmed");
        assert_eq!(got[1], ["ProfileList"], "already there: nothing installed");
        assert_eq!(got[2], ["ProfileList", "InstallProfile"], "the answer was lost");
        assert!(got[4..].iter().all(Vec::is_empty), "not reached: asked nothing");
        assert_eq!(device_profiles(&rig, 2).await[0]["state"], "pending");
        // Device 2 checks in again: the install is offered again, answered, and confirmed.
        let again = profile_commands(stores[2].run(&rig.s, &fleet()[2]).await);
        assert_eq!(again, ["InstallProfile", "ProfileList"]);
        for i in 0..4 {
            let p = device_profiles(&rig, i).await;
            assert_eq!(p.as_array().unwrap().len(), 1, "{p}");
            assert_eq!(p[0]["state"], "verified", "device {i}: {p}");
            assert_eq!(p[0]["payload_uuid"], delivered_wifi_uuid());
            assert_eq!(p[0]["version"], "1");
        }

        // The declarations are verified too: the pilot succeeded and the rollout moves on by itself.
        rig.sync_all().await;
        let r = rig.rollout().await;
        assert_eq!(r["stages"][0]["succeeded"], 4, "{r}");
        for stage in ["canary", "full"] {
            rig.soak();
            assert_eq!(rig.round().await, ["policy.rollout_promoted"], "to {stage}");
            for (i, store) in stores.iter_mut().enumerate() {
                store.run(&rig.s, &fleet()[i]).await;
            }
            rig.sync_all().await;
        }
        rig.soak();
        assert_eq!(rig.round().await, ["policy.rollout_completed"]);
        assert!(stores.iter().all(|s| s.installed.len() == 1));
        let installs: usize = stores
            .iter()
            .map(|s| s.received.iter().filter(|t| *t == "InstallProfile").count())
            .sum();
        assert_eq!(installs, 11 + 1, "one each but device 1, and device 2's offered twice");
        // Device 5 unenrolls (its profiles go with the MDM profile) and enrolls again: nothing tracked of
        // it is trusted, it is listed and installed afresh.
        let r = rig.s.checkin(&fleet()[5], fleet()[5].checkout()).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(device_profiles(&rig, 5).await, json!([]));
        stores[5].installed.clear();
        rig.s.enroll(&fleet()[5]).await;
        assert_eq!(profile_commands(stores[5].run(&rig.s, &fleet()[5]).await), install);

        // A version without the profile: its pilots have it removed, confirmed by their lists.
        rig.upload_folder("2", 6, false).await;
        let r = rig
            .activate(json!({"version": "2", "pilot_group": pilot, "canary_group": canary, "soak_secs": SOAK_SECS}))
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
        for (i, store) in stores.iter_mut().enumerate() {
            let got = profile_commands(store.run(&rig.s, &fleet()[i]).await);
            if i < 4 {
                assert_eq!(got, ["ProfileList", "RemoveProfile", "ProfileList"], "device {i}");
                assert!(store.installed.is_empty());
                assert_eq!(device_profiles(&rig, i).await[0]["state"], "removed");
            } else {
                assert!(got.is_empty(), "device {i} keeps version 1: {got:?}");
                assert_eq!(store.installed.len(), 1);
            }
        }
        rig.s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_profile_a_device_refuses_is_retried_with_backoff_then_fails_and_halts_the_rollout() {
    use mdm_server::policies::reconciler::{backoff_ms, retry_due, MAX_ATTEMPTS};
    each_database(|db| async move {
        let (rig, pilot, canary) = twelve_with_stages(db).await;
        let mut stores = vec![ProfileStore::default(); 12];
        stores[3].refuses.insert("com.example.wifi".into());
        rig.upload_folder("1", 6, true).await;
        let r = rig
            .activate(json!({"version": "1", "pilot_group": pilot, "canary_group": canary, "soak_secs": SOAK_SECS}))
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
        for (i, store) in stores.iter_mut().enumerate().take(4) {
            store.run(&rig.s, &fleet()[i]).await;
        }
        let retry = || async { retry_due(&rig.s.storage, rig.s.clock_now()).await.unwrap() };
        for attempt in 1..MAX_ATTEMPTS {
            let p = device_profiles(&rig, 3).await;
            assert_eq!((p[0]["state"].as_str(), p[0]["attempts"].as_i64()), (Some("pending"), Some(attempt as i64)), "{p}");
            assert_eq!(p[0]["error"][0]["ErrorCode"], 4001);
            assert!(rig.round().await.is_empty(), "pending is not failed");
            // Not before the backoff is over.
            rig.s.clock.advance_ms(backoff_ms(attempt) - 1_000);
            assert_eq!(retry().await, 0);
            rig.s.clock.advance_ms(1_000);
            assert_eq!(retry().await, 1, "attempt {attempt} backed off");
            let got = profile_commands(stores[3].run(&rig.s, &fleet()[3]).await);
            assert_eq!(got, ["ProfileList", "InstallProfile"]);
        }
        let p = device_profiles(&rig, 3).await;
        assert_eq!((p[0]["state"].as_str(), p[0]["attempts"].as_i64()), (Some("failed"), Some(MAX_ATTEMPTS as i64)), "{p}");
        rig.s.clock.advance_ms(backoff_ms(MAX_ATTEMPTS) * 2);
        assert_eq!(retry().await, 0, "failed for good");

        let r = rig.rollout().await;
        assert_eq!(r["stages"][0]["failed"], 1, "{r}");
        assert_eq!(r["top_failure_reasons"][0]["code"], "profile:MCProfileErrorDomain:4001", "{r}");
        assert_eq!(rig.round().await, ["policy.rollout_rolled_back"]);
        // Rolled back (there was no version before): the pilots that have it get it removed; device 3,
        // which never installed it, is only asked for its list.
        for (i, store) in stores.iter_mut().enumerate() {
            let got = profile_commands(store.run(&rig.s, &fleet()[i]).await);
            match i {
                0..=2 => assert_eq!(got, ["ProfileList", "RemoveProfile", "ProfileList"], "device {i}"),
                3 => assert_eq!(got, ["ProfileList"]),
                _ => assert!(got.is_empty(), "device {i}: {got:?}"),
            }
            assert!(store.installed.is_empty(), "device {i}");
        }
        assert_eq!(device_profiles(&rig, 3).await[0]["state"], "removed");
        let unknown = rig.s.get("/api/v1/devices/nobody/profiles").await;
        assert_eq!(unknown.status, 404);
        rig.s.stop().await;
    })
    .await;
}

/// Device `i` acknowledges what it is sent until its ProfileList, which it answers with `items`; the
/// server's response to that answer.
async fn answer_profile_list(rig: &Rig, i: usize, items: Vec<plist::Value>) -> Resp {
    use mdm_tests::device::ReceivedCommand;
    let dev = &fleet()[i];
    let mut r = rig.s.connect(dev, dev.idle(None)).await;
    loop {
        let cmd = ReceivedCommand::parse(&r.body).expect("a ProfileList is waiting");
        let mut extra = plist::Dictionary::new();
        if cmd.request_type == "ProfileList" {
            extra.insert("ProfileList".into(), plist::Value::Array(items));
            return rig
                .s
                .connect(dev, dev.report(None, "Acknowledged", &cmd.uuid, extra))
                .await;
        }
        r = rig
            .s
            .connect(dev, dev.report(None, "Acknowledged", &cmd.uuid, extra))
            .await;
    }
}

#[tokio::test]
async fn a_malformed_list_concludes_nothing_and_silent_devices_or_lost_commands_are_asked_again() {
    use mdm_server::policies::reconciler::{retry_due, RELIST_MS, STALE_COMMAND_MS};
    use mdm_tests::device::ReceivedCommand;
    each_database(|db| async move {
        let rig = Rig::with(db, 2, None, |_| {}).await;
        rig.upload_folder("1", 6, true).await;
        let r = rig
            .activate(json!({"version": "1", "pilot_percent": 100, "canary_percent": 100}))
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
        // Device 0 answers its ProfileList with an item that is not a profile: nothing is sent.
        let r = answer_profile_list(&rig, 0, vec![7.into()]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        if let Ok(next) = ReceivedCommand::parse(&r.body) {
            assert!(
                !next.request_type.contains("Profile"),
                "nothing sent on a malformed list: {next:?}"
            );
        }
        let p = device_profiles(&rig, 0).await;
        assert_eq!(
            (p[0]["state"].as_str(), p[0]["in_flight"].as_bool()),
            (Some("pending"), Some(false)),
            "{p}"
        );
        // Device 1 lists nothing, so an InstallProfile is queued; an admin clears its queue before it
        // is delivered.
        assert_eq!(answer_profile_list(&rig, 1, vec![]).await.status, 200);
        assert_eq!(device_profiles(&rig, 1).await[0]["in_flight"], true);
        let clear = format!("/api/v1/enrollments/{}/commands", fleet()[1].udid);
        assert_eq!(rig.s.delete(&clear).await.status, 200);

        // Device 0 is asked again once an hour has passed; device 1 once its command is a day old.
        let retry = || async { retry_due(&rig.s.storage, rig.s.clock_now()).await.unwrap() };
        assert_eq!(retry().await, 0);
        rig.s.clock.advance_ms(RELIST_MS);
        assert_eq!(retry().await, 1);
        assert_eq!(retry().await, 0, "asked already");
        let mut stores = vec![ProfileStore::default(); 2];
        let install = ["ProfileList", "InstallProfile", "ProfileList"];
        assert_eq!(
            profile_commands(stores[0].run(&rig.s, &fleet()[0]).await),
            install
        );
        rig.s.clock.advance_ms(STALE_COMMAND_MS);
        assert_eq!(retry().await, 1);
        assert_eq!(
            profile_commands(stores[1].run(&rig.s, &fleet()[1]).await),
            install,
            "the canceled install is sent again"
        );
        for i in 0..2 {
            assert_eq!(device_profiles(&rig, i).await[0]["state"], "verified");
        }
        rig.s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_profile_for_macs_is_skipped_on_iphones_which_still_succeed() {
    each_database(|db| async move {
        let mut rig = Rig::with(db, 2, None, |_| {}).await;
        assert_eq!(
            (fleet()[0].platform, fleet()[1].platform),
            (Platform::Ios, Platform::MacOs)
        );
        let dir = tempfile::tempdir().unwrap();
        folder(dir.path(), "1", 6, true);
        let mac_only = mdm_tests::policy::PROFILE
            .replace("com.apple.wifi.managed", "com.apple.systempolicy.control");
        std::fs::write(dir.path().join("profiles/wifi.mobileconfig"), mac_only).unwrap();
        let packed = pack::pack(dir.path(), Some(&rig.signing_key)).unwrap();
        let url = format!("{}/api/v1/policies/{}/versions", rig.s.base, rig.policy);
        let res = rig
            .s
            .http
            .post(url)
            .bearer_auth(&rig.s.admin_key)
            .body(packed.zip)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 201);
        let r = rig
            .activate(json!({"version": "1", "pilot_percent": 100, "canary_percent": 100}))
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
        let mut stores = vec![ProfileStore::default(); 2];
        let iphone = profile_commands(stores[0].run(&rig.s, &fleet()[0]).await);
        assert!(iphone.is_empty(), "nothing to ask an iPhone: {iphone:?}");
        let mac = profile_commands(stores[1].run(&rig.s, &fleet()[1]).await);
        assert_eq!(mac, ["ProfileList", "InstallProfile", "ProfileList"]);
        assert_eq!(device_profiles(&rig, 0).await[0]["state"], "skipped");
        assert_eq!(device_profiles(&rig, 1).await[0]["state"], "verified");
        rig.sync_all().await;
        let r = rig.rollout().await;
        assert_eq!(r["stages"][0]["succeeded"], 2, "{r}");
        rig.s.stop().await;
    })
    .await;
}

/// The steps the change-freeze plugin kept for the rig's policy (its `on-rollout` hook), as
/// `action@stage`.
async fn steps_heard(rig: &Rig) -> Vec<String> {
    let key = format!("steps:{}", rig.policy);
    let read = rig.s.storage.read();
    let kept = mdm_server::storage::plugin_kv::get(&read, "change-freeze", &key, rig.s.clock_now())
        .await
        .unwrap()
        .unwrap_or_else(|| b"[]".to_vec());
    let steps: Vec<Value> = serde_json::from_slice(&kept).unwrap();
    steps
        .iter()
        .map(|s| {
            format!(
                "{}@{}",
                s["action"].as_str().unwrap(),
                s["stage"].as_str().unwrap()
            )
        })
        .collect()
}

#[tokio::test]
async fn a_plugin_holds_promotions_during_a_freeze_and_hears_every_step() {
    each_database(|db| async move {
        let mut rig = Rig::with(db, 12, None, |_| {}).await;
        let now = rig.s.clock_now();
        let until = now + 3 * SOAK_SECS * 1000;
        let freeze = json!({"freezes": [{"from": to_rfc3339(now - 1000),
            "until": to_rfc3339(until), "reason": "year-end freeze"}]});
        ok(
            rig.s.upload_plugin("change-freeze", freeze).await,
            200,
            "upload change-freeze",
        );
        rig.upload("1", 6).await;
        let r = rig
            .activate(json!({"version": "1", "soak_secs": SOAK_SECS, "pilot_percent": 25, "canary_percent": 50}))
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
        rig.sync_all().await;
        rig.soak();

        // The gates hold; the plugin does not: the rollout stays, saying why, and is audited once.
        assert_eq!(rig.round().await, ["policy.rollout_held"]);
        let r = rig.rollout().await;
        assert_eq!((r["state"].as_str(), r["stage"].as_str()), (Some("running"), Some("pilot")));
        let reason = r["reason"].as_str().unwrap().to_string();
        assert!(
            reason.starts_with("held by plugin change-freeze: year-end freeze until"),
            "{r}"
        );
        assert_eq!(r["waiting_for"], reason.as_str(), "{r}");
        assert!(rig.round().await.is_empty(), "the same hold is not a new step");
        rig.assert_audited(&["policy.rollout_held"]).await;

        // An admin's promote is not the plugins' to hold; the next stage's promotion is.
        let r = control(&rig, "promote").await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(rig.rollout().await["reason"], Value::Null);
        rig.sync_all().await;
        rig.soak();
        assert_eq!(rig.round().await, ["policy.rollout_held"]);
        assert_eq!(rig.rollout().await["stage"], "canary");

        // Once the freeze is over, the round promotes by itself.
        rig.s.clock.advance_ms(until - rig.s.clock_now());
        assert_eq!(rig.round().await, ["policy.rollout_promoted"]);
        assert_eq!(rig.rollout().await["stage"], "full");
        assert_eq!(
            steps_heard(&rig).await,
            [
                "policy.activated@pilot",
                "policy.rollout_held@pilot",
                "policy.rollout_promoted@canary",
                "policy.rollout_held@canary",
                "policy.rollout_promoted@full",
            ]
        );
        rig.s.stop().await;
    })
    .await;
}
