//! The real server on an ephemeral port over a fresh database (SQLite, and PostgreSQL when
//! `MDM_TEST_DATABASE_URL` is set), with helpers to talk to it as a device and as an admin.

use crate::device::Device;
use mdm_server::apikeys::{self, Scope};
use mdm_server::clock::ManualClock;
use mdm_server::storage::entities::{api_key, command, device, enrollment, queue_item};
use mdm_server::storage::testing::{test_databases, TestDatabase};
use mdm_server::storage::Storage;
use mdm_server::{Application, Config};
use sea_orm::{EntityTrait, QueryOrder};
use std::future::Future;
use std::sync::Arc;

/// Run `f` once per configured database (SQLite always; PostgreSQL when configured).
pub async fn each_database<F, Fut>(f: F)
where
    F: Fn(TestDatabase) -> Fut,
    Fut: Future<Output = ()>,
{
    for db in test_databases().await {
        eprintln!("-- on {}", db.label);
        f(db).await;
    }
}

/// A device-facing or admin response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

pub struct TestServer {
    pub base: String,
    pub storage: Storage,
    pub plugins: Arc<mdm_server::plugins::PluginHost>,
    pub push: Arc<mdm_server::push::service::PushService>,
    /// Every push the server sent, instead of APNs.
    pub pusher: Arc<mdm_server::push::apns::RecordingPusher>,
    pub config: Config,
    pub state: Arc<mdm_server::http::AppState>,
    pub clock: Arc<ManualClock>,
    /// A key with the `admin` scope.
    pub admin_key: String,
    pub http: reqwest::Client,
    db: TestDatabase,
    _data: tempfile::TempDir,
    /// A replica is another server on the same database; it does not own (or clean up) the database.
    replica_of: Option<()>,
}

/// An HTTP client that drops idle connections after 1 s, well inside the server's 5 s keep-alive: otherwise a
/// test that pauses (building a plugin on a slow machine) can reuse a connection the server is closing at that
/// moment, and the request fails with an incomplete message.
pub fn client() -> reqwest::Client {
    client_builder().build().expect("http client")
}

/// The test client's settings; it trusts the server's self-signed development certificate when the
/// server serves TLS.
pub fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .pool_idle_timeout(std::time::Duration::from_secs(1))
        .danger_accept_invalid_certs(true)
}

fn base_url(config: &Config, port: u16) -> String {
    let scheme = if config.tls.enabled() {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://127.0.0.1:{port}")
}

/// 2026-01-01T00:00:00Z: tests start from a fixed time and move it explicitly.
pub const START_MS: i64 = 1_767_225_600_000;

impl TestServer {
    pub async fn start(db: TestDatabase) -> Self {
        Self::start_with(db, |_| {}).await
    }

    pub async fn start_with(db: TestDatabase, tweak: impl FnOnce(&mut Config)) -> Self {
        let data = tempfile::tempdir().expect("tempdir");
        let mut config = Config {
            listen: "127.0.0.1:0".into(),
            data_dir: data.path().to_path_buf(),
            database_url: Some(db.url.clone().into()),
            database_schema: db.schema.clone(),
            workers: Some(1),
            housekeeping_interval_secs: 3600,
            ..Config::default()
        };
        // Tests drive schedules, event delivery and pushes themselves (`run_schedules`, `deliver_events`,
        // `push.run_once`).
        config.plugins.worker = false;
        config.push.worker = false;
        config.push.key_secret = Some("test-secret-of-sufficient-length".into());
        // Test devices' identities come from the tests' own CA (see `Identity::generate`).
        let device_ca =
            crate::device::write_test_device_ca(data.path()).expect("write the test device CA");
        config.identity.device_ca_file = Some(device_ca);
        tweak(&mut config);
        let clock = ManualClock::new(START_MS);
        let pusher = mdm_server::push::apns::RecordingPusher::new();
        let app = Application::build_with(
            config.clone(),
            mdm_server::startup::Overrides {
                clock: clock.clone(),
                pusher: Some(pusher.clone()),
            },
        )
        .await
        .expect("server starts");
        let base = base_url(&config, app.port());
        let storage = app.storage().clone();
        let plugins = app.plugins().clone();
        let push = app.push().clone();
        let state = app.state();
        tokio::spawn(app.run_until_stopped());
        let (_, admin_key) = apikeys::create(&storage, "test-admin", &[Scope::Admin], START_MS)
            .await
            .expect("admin key");
        Self {
            base,
            storage,
            plugins,
            push,
            pusher,
            config,
            state,
            clock,
            admin_key,
            http: client(),
            db,
            _data: data,
            replica_of: None,
        }
    }

    /// A second server on the same database (a replica behind no sticky routing).
    pub async fn replica(&self) -> TestServer {
        let data = tempfile::tempdir().expect("tempdir");
        let config = Config {
            data_dir: data.path().to_path_buf(),
            ..self.config.clone()
        };
        let app = Application::build_with(
            config.clone(),
            mdm_server::startup::Overrides {
                clock: self.clock.clone(),
                pusher: Some(self.pusher.clone()),
            },
        )
        .await
        .expect("replica starts");
        let base = base_url(&config, app.port());
        let storage = app.storage().clone();
        let plugins = app.plugins().clone();
        let push = app.push().clone();
        let state = app.state();
        tokio::spawn(app.run_until_stopped());
        TestServer {
            base,
            storage,
            plugins,
            push,
            pusher: self.pusher.clone(),
            config,
            state,
            clock: self.clock.clone(),
            admin_key: self.admin_key.clone(),
            http: client(),
            db: TestDatabase {
                label: self.db.label,
                url: self.db.url.clone(),
                schema: self.db.schema.clone(),
                _dir: None,
            },
            _data: data,
            replica_of: Some(()),
        }
    }

    /// The server's clock now (ms).
    pub fn clock_now(&self) -> i64 {
        use mdm_server::clock::Clock;
        self.clock.now_ms()
    }

    /// A key with exactly these scopes.
    pub async fn key(&self, scopes: &[Scope]) -> String {
        apikeys::create(&self.storage, "test", scopes, START_MS)
            .await
            .expect("key")
            .1
    }

    /// PUT a body to a device endpoint with the given headers.
    pub async fn put(&self, path: &str, body: Vec<u8>, headers: &[(&str, String)]) -> Resp {
        let mut req = self.http.put(format!("{}{path}", self.base)).body(body);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let res = req.send().await.expect("request");
        Resp {
            status: res.status().as_u16(),
            body: res.bytes().await.expect("body").to_vec(),
        }
    }

    /// A signed check-in, as a device with SignMessage sends it.
    pub async fn checkin(&self, dev: &Device, body: Vec<u8>) -> Resp {
        let sig = dev.sign(&body);
        self.put(
            "/mdm/checkin",
            body,
            &[
                ("Mdm-Signature", sig),
                (
                    "Content-Type",
                    "application/x-apple-aspen-mdm-checkin".into(),
                ),
            ],
        )
        .await
    }

    /// A signed command report to the ServerURL.
    pub async fn connect(&self, dev: &Device, body: Vec<u8>) -> Resp {
        let sig = dev.sign(&body);
        self.put("/mdm/connect", body, &[("Mdm-Signature", sig)])
            .await
    }

    /// Authenticate then TokenUpdate on the device channel, asserting both succeed.
    pub async fn enroll(&self, dev: &Device) {
        let r = self.checkin(dev, dev.authenticate()).await;
        assert_eq!(r.status, 200, "Authenticate: {}", r.text());
        let r = self.checkin(dev, dev.token_update(None)).await;
        assert_eq!(r.status, 200, "TokenUpdate: {}", r.text());
    }

    /// The device checks in (Idle), receives its next command and acknowledges it; None when nothing
    /// was waiting.
    pub async fn next_command(&self, dev: &Device) -> Option<crate::device::ReceivedCommand> {
        let r = self.connect(dev, dev.idle(None)).await;
        assert_eq!(r.status, 200, "idle: {}", r.text());
        if r.body.is_empty() {
            return None;
        }
        let cmd = crate::device::ReceivedCommand::parse(&r.body).expect("command");
        let ack = dev.report(None, "Acknowledged", &cmd.uuid, Default::default());
        assert_eq!(self.connect(dev, ack).await.status, 200);
        Some(cmd)
    }

    /// The device answers a DeviceInformation command with this OSVersion (a device that updated).
    pub async fn report_os(&self, dev: &Device, os: &str) {
        let out = self
            .enqueue(
                &[&dev.udid],
                serde_json::json!({"RequestType": "DeviceInformation", "Queries": ["OSVersion"]}),
            )
            .await;
        let uuid = out["results"][&dev.udid]["command_uuid"]
            .as_str()
            .expect("queued")
            .to_string();
        let mut pending = self.connect(dev, dev.idle(None)).await;
        // Commands queued before (a DDM sync) come first: acknowledge them until ours arrives.
        while let Ok(cmd) = crate::device::ReceivedCommand::parse(&pending.body) {
            if cmd.uuid == uuid {
                break;
            }
            let ack = dev.report(None, "Acknowledged", &cmd.uuid, Default::default());
            pending = self.connect(dev, ack).await;
        }
        assert_eq!(pending.status, 200);
        let mut q = plist::Dictionary::new();
        q.insert("OSVersion".into(), os.into());
        let mut extra = plist::Dictionary::new();
        extra.insert("QueryResponses".into(), plist::Value::Dictionary(q));
        let r = self
            .connect(dev, dev.report(None, "Acknowledged", &uuid, extra))
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }

    /// One DDM sync of the device by its simulated client, asserting it completes.
    pub async fn ddm_sync(
        &self,
        dev: &Device,
        client: &mut crate::ddm::DdmClient,
    ) -> crate::ddm::SyncRound {
        client
            .sync(&dev.udid, |body| async move {
                let r = self.checkin(dev, body).await;
                (r.status, r.body)
            })
            .await
            .expect("sync")
    }

    /// An admin API call with the given key (None sends no credentials).
    pub async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
        json: Option<serde_json::Value>,
    ) -> Resp {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        if let Some(j) = json {
            req = req.json(&j);
        }
        let res = req.send().await.expect("request");
        Resp {
            status: res.status().as_u16(),
            body: res.bytes().await.expect("body").to_vec(),
        }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.api(reqwest::Method::GET, path, Some(&self.admin_key), None)
            .await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.api(reqwest::Method::DELETE, path, Some(&self.admin_key), None)
            .await
    }

    pub async fn post(&self, path: &str, json: serde_json::Value) -> Resp {
        self.api(
            reqwest::Method::POST,
            path,
            Some(&self.admin_key),
            Some(json),
        )
        .await
    }

    /// Enqueue a command through the API, returning the per-id outcome JSON.
    pub async fn enqueue(&self, ids: &[&str], command: serde_json::Value) -> serde_json::Value {
        let r = self
            .post(
                "/api/v1/commands",
                serde_json::json!({"ids": ids, "command": command}),
            )
            .await;
        assert_eq!(r.status, 200, "enqueue: {}", r.text());
        r.json()
    }

    /// Every stored row except API keys' last-used time, to prove a refused request changed nothing.
    pub async fn snapshot(&self) -> String {
        let db = mdm_server::storage::testing::db(&self.storage);
        let devices = device::Entity::find()
            .order_by_asc(device::Column::Id)
            .all(db)
            .await
            .expect("devices");
        let enrollments = enrollment::Entity::find()
            .order_by_asc(enrollment::Column::Id)
            .all(db)
            .await
            .expect("enrollments");
        let commands = command::Entity::find()
            .order_by_asc(command::Column::Uuid)
            .all(db)
            .await
            .expect("commands");
        let queue = queue_item::Entity::find()
            .order_by_asc(queue_item::Column::Id)
            .all(db)
            .await
            .expect("queue");
        let keys: Vec<_> = api_key::Entity::find()
            .order_by_asc(api_key::Column::Id)
            .all(db)
            .await
            .expect("keys")
            .into_iter()
            .map(|k| (k.id, k.key_hash, k.scopes, k.revoked_at))
            .collect();
        format!("{devices:?}\n{enrollments:?}\n{commands:?}\n{queue:?}\n{keys:?}")
    }

    /// The hash-chained audit log, newest first, after chaining what is pending (what the server does every
    /// second).
    pub async fn audit_chain(&self) -> Vec<mdm_server::storage::audit_log::AuditEntry> {
        use mdm_server::storage::audit_log;
        audit_log::seal(&self.storage).await.expect("seal");
        audit_log::list(mdm_server::storage::testing::db(&self.storage), None, 1000)
            .await
            .expect("audit log")
    }

    /// Deliver due plugin events now (what the background worker does every second in production).
    pub async fn deliver_events(&self) -> (usize, usize) {
        mdm_server::plugins::delivery::Delivery::new(
            self.storage.clone(),
            self.clock.clone(),
            Arc::new(mdm_server::metrics::Metrics::new()),
            self.state.plugins.sinks().clone(),
        )
        .run_once()
        .await
        .expect("deliver events")
    }

    /// Upload a plugin crate's component with its manifest, approving what it declares.
    pub async fn upload_plugin(&self, package: &str, config: serde_json::Value) -> Resp {
        self.upload_plugin_with(package, crate::plugins::manifest(package), config)
            .await
    }

    /// Upload a plugin crate's component with this manifest (its own, changed), approving what it
    /// declares.
    pub async fn upload_plugin_with(
        &self,
        package: &str,
        manifest: serde_json::Value,
        config: serde_json::Value,
    ) -> Resp {
        self.upload_component(&crate::plugins::build(package), manifest, config)
            .await
    }

    /// Upload a built component with this manifest, approving what it declares.
    pub async fn upload_component(
        &self,
        wasm: &std::path::Path,
        manifest: serde_json::Value,
        config: serde_json::Value,
    ) -> Resp {
        use base64::Engine;
        let wasm = std::fs::read(wasm).expect("wasm");
        let approve = manifest["capabilities"].clone();
        self.post(
            "/api/v1/plugins",
            serde_json::json!({
                "manifest": manifest,
                "wasm_base64": base64::engine::general_purpose::STANDARD.encode(wasm),
                "config": config,
                "approve_capabilities": approve,
            }),
        )
        .await
    }

    pub async fn stop(self) {
        if self.replica_of.is_none() {
            self.db.cleanup().await;
        }
    }
}
