//! The server under test and its database: a fresh SQLite file or a fresh PostgreSQL schema per run, and
//! the real server either in this process (with the simulator's push sink as its APNs) or as a separate
//! `mdm-server` process (so its memory and CPU are its own; devices then poll instead of being pushed).

use super::push::PushSink;
use mdm_server::apikeys::{self, Scope};
use mdm_server::clock::{Clock, SystemClock};
use mdm_server::storage::Storage;
use mdm_server::{Application, Config};
use sea_orm::{ConnectionTrait, Database, Statement};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Which database a run uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbChoice {
    Sqlite,
    /// A PostgreSQL URL; the run creates its own schema in it and drops it afterwards.
    Postgres(String),
}

impl DbChoice {
    pub fn label(&self) -> &'static str {
        match self {
            DbChoice::Sqlite => "sqlite",
            DbChoice::Postgres(_) => "postgres",
        }
    }
}

/// A fresh database for one run.
pub struct BenchDb {
    pub label: &'static str,
    pub url: String,
    pub schema: Option<String>,
    dir: Option<tempfile::TempDir>,
}

impl BenchDb {
    pub async fn create(choice: &DbChoice) -> Result<Self, BoxError> {
        Ok(match choice {
            DbChoice::Sqlite => {
                let dir = tempfile::tempdir()?;
                let url = format!("sqlite://{}?mode=rwc", dir.path().join("mdm.db").display());
                Self {
                    label: "sqlite",
                    url,
                    schema: None,
                    dir: Some(dir),
                }
            }
            DbChoice::Postgres(url) => {
                let schema = format!("sim_{}", uuid::Uuid::new_v4().simple());
                let db = Database::connect(url.as_str()).await?;
                db.execute_unprepared(&format!("CREATE SCHEMA \"{schema}\""))
                    .await?;
                db.close().await?;
                Self {
                    label: "postgres",
                    url: url.clone(),
                    schema: Some(schema),
                    dir: None,
                }
            }
        })
    }

    /// A connection of the simulator's own, migrated (for seeding and measuring).
    pub async fn storage(&self) -> Result<Storage, BoxError> {
        let s = Storage::connect(&self.url, self.schema.as_deref()).await?;
        s.migrate().await?;
        Ok(s)
    }

    fn sqlite_path(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.path().join("mdm.db"))
    }

    /// Bytes the database takes: the SQLite file and its WAL, or every table, index and TOAST of the
    /// schema on PostgreSQL.
    pub async fn size_bytes(&self, storage: &Storage) -> Result<u64, BoxError> {
        if let Some(p) = self.sqlite_path() {
            let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
            let wal = PathBuf::from(format!("{}-wal", p.display()));
            return Ok(size(&p) + size(&wal));
        }
        let schema = self.schema.clone().unwrap_or_default();
        let row = mdm_server::storage::testing::db(storage)
            .query_one_raw(Statement::from_sql_and_values(
                storage.backend(),
                "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0)::bigint AS bytes \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relkind = 'r'",
                [schema.into()],
            ))
            .await?
            .ok_or("no size row")?;
        Ok(row.try_get::<i64>("", "bytes")? as u64)
    }

    /// Rows in a table.
    pub async fn count(&self, storage: &Storage, table: &str) -> Result<u64, BoxError> {
        let row = mdm_server::storage::testing::db(storage)
            .query_one_raw(Statement::from_string(
                storage.backend(),
                format!("SELECT COUNT(*) AS n FROM {table}"),
            ))
            .await?
            .ok_or("no count row")?;
        Ok(row.try_get::<i64>("", "n")? as u64)
    }

    /// Drop the PostgreSQL schema (the SQLite directory goes with `self`).
    pub async fn drop_schema(&self) {
        if let Some(schema) = &self.schema {
            if let Ok(db) = Database::connect(self.url.as_str()).await {
                let _ = db
                    .execute_unprepared(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                    .await;
            }
        }
    }
}

/// Server settings a scenario may change.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// HTTP worker threads (default: one per core).
    pub workers: Option<usize>,
    /// Run the push worker (in-process only: a separate server has no APNs to reach).
    pub push_worker: bool,
    pub push_max_per_second: u32,
    /// Event sinks for plugins (name, URL).
    pub sinks: Vec<(String, String)>,
    /// Events per POST to those sinks, at most (`batch_max_events`).
    pub sink_batch: usize,
    /// `log.filter`.
    pub log_filter: String,
    /// `policies.trusted_signers`: public keys (PEM files) a policy version's signature may be made by.
    pub trusted_signers: Vec<PathBuf>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            workers: None,
            push_worker: true,
            push_max_per_second: 500,
            sinks: Vec::new(),
            sink_batch: 1,
            log_filter: "warn".into(),
            trusted_signers: Vec::new(),
        }
    }
}

/// Where the server runs.
#[derive(Debug, Clone, Default)]
pub enum ServerMode {
    /// In this process: the push sink is its APNs, devices can be woken by push.
    #[default]
    InProcess,
    /// The `mdm-server` binary at this path, as a child process.
    Process(PathBuf),
}

/// The release server binary next to this one (`target/release/mdm-server`), if built.
pub fn default_server_bin() -> PathBuf {
    let exe = std::env::current_exe().ok();
    let dir = exe
        .as_deref()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let beside = dir.join("mdm-server");
    if beside.exists() {
        return beside;
    }
    crate::plugins::workspace_root()
        .join("target")
        .join("release")
        .join("mdm-server")
}

/// A running server.
pub struct Server {
    pub base: String,
    /// A key with the `admin` scope.
    pub admin_key: String,
    /// The server's process id (this process when in-process).
    pub pid: u32,
    /// The push sink, when the server runs in this process.
    pub push: Option<Arc<PushSink>>,
    pub in_process: bool,
    child: Option<std::process::Child>,
    _data: tempfile::TempDir,
}

fn now_ms() -> i64 {
    SystemClock.now_ms()
}

impl Server {
    /// Start a server on `db` (migrated and seeded by the caller as needed) with a fresh admin key.
    /// `device_ca_pem`: the CA of the fleet's identities, given to the server as `identity.device_ca_file`.
    pub async fn start(
        db: &BenchDb,
        storage: &Storage,
        device_ca_pem: &[u8],
        mode: &ServerMode,
        opts: &ServerOptions,
    ) -> Result<Self, BoxError> {
        let (_, admin_key) = apikeys::create(storage, "mdm-sim", &[Scope::Admin], now_ms()).await?;
        let data = tempfile::tempdir()?;
        let device_ca_file = data.path().join("device-ca.pem");
        std::fs::write(&device_ca_file, device_ca_pem)?;
        match mode {
            ServerMode::InProcess => {
                let mut config = Config {
                    listen: "127.0.0.1:0".into(),
                    data_dir: data.path().to_path_buf(),
                    database_url: Some(db.url.clone().into()),
                    database_schema: db.schema.clone(),
                    workers: opts.workers,
                    ..Config::default()
                };
                config.identity.device_ca_file = Some(device_ca_file);
                config.push.worker = opts.push_worker;
                config.push.max_per_second = opts.push_max_per_second;
                config.push.key_secret = Some("mdm-sim-secret-of-sufficient-length".into());
                config.policies.trusted_signers = opts.trusted_signers.clone();
                for (name, url) in &opts.sinks {
                    config.plugins.sinks.insert(
                        name.clone(),
                        mdm_server::config::SinkConfig {
                            url: url.clone().into(),
                            headers: Default::default(),
                            timeout_secs: 10,
                            batch_max_events: opts.sink_batch,
                        },
                    );
                }
                let sink = PushSink::new();
                let app = Application::build_with(
                    config,
                    mdm_server::startup::Overrides {
                        clock: Arc::new(SystemClock),
                        pusher: Some(sink.clone()),
                    },
                )
                .await?;
                let base = format!("http://127.0.0.1:{}", app.port());
                tokio::spawn(app.run_until_stopped());
                Ok(Self {
                    base,
                    admin_key,
                    pid: std::process::id(),
                    push: Some(sink),
                    in_process: true,
                    child: None,
                    _data: data,
                })
            }
            ServerMode::Process(bin) => {
                if !bin.exists() {
                    return Err(format!(
                        "{} not found: build it with `cargo build --release -p mdm-server`",
                        bin.display()
                    )
                    .into());
                }
                let port = {
                    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
                    l.local_addr()?.port()
                };
                let log = std::fs::File::create(data.path().join("server.log"))?;
                let mut cmd = std::process::Command::new(bin);
                cmd.arg("serve")
                    .env("MDM_LISTEN", format!("127.0.0.1:{port}"))
                    .env("MDM_DATA_DIR", data.path())
                    .env("MDM_DATABASE_URL", &db.url)
                    .env("MDM_IDENTITY__DEVICE_CA_FILE", &device_ca_file)
                    // No APNs here: enqueues still owe pushes, the worker is what would send them.
                    .env("MDM_PUSH__WORKER", "false")
                    .env(
                        "MDM_PUSH__KEY_SECRET",
                        "mdm-sim-secret-of-sufficient-length",
                    )
                    .env("MDM_LOG__FILTER", &opts.log_filter)
                    .stdout(log.try_clone()?)
                    .stderr(log);
                if let Some(s) = &db.schema {
                    cmd.env("MDM_DATABASE_SCHEMA", s);
                }
                if let Some(w) = opts.workers {
                    cmd.env("MDM_WORKERS", w.to_string());
                }
                if !opts.sinks.is_empty() || !opts.trusted_signers.is_empty() {
                    // Sinks and policy signers are set in a configuration file (a table and a list).
                    let file = data.path().join("server.toml");
                    let text = sinks_toml(&opts.sinks, opts.sink_batch)
                        + &policies_toml(&opts.trusted_signers);
                    std::fs::write(&file, text)?;
                    cmd.arg("--config").arg(file);
                }
                let child = cmd.spawn()?;
                let pid = child.id();
                let base = format!("http://127.0.0.1:{port}");
                let mut server = Self {
                    base,
                    admin_key,
                    pid,
                    push: None,
                    in_process: false,
                    child: Some(child),
                    _data: data,
                };
                server.wait_ready().await?;
                Ok(server)
            }
        }
    }

    async fn wait_ready(&mut self) -> Result<(), BoxError> {
        let http = reqwest::Client::new();
        for _ in 0..600 {
            if let Some(c) = &mut self.child {
                if let Some(status) = c.try_wait()? {
                    let log = std::fs::read_to_string(self._data.path().join("server.log"))
                        .unwrap_or_default();
                    return Err(format!("mdm-server exited ({status}):\n{log}").into());
                }
            }
            if let Ok(r) = http.get(format!("{}/healthz", self.base)).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err("mdm-server did not become healthy within 60 s".into())
    }

    /// The server's (VmRSS, VmHWM) in KiB.
    pub fn memory_kib(&self) -> Option<(u64, u64)> {
        super::stats::proc_memory_kib(self.pid)
    }

    /// An admin API call.
    pub async fn api(
        &self,
        http: &reqwest::Client,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(u16, serde_json::Value), BoxError> {
        let mut req = http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.admin_key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await?;
        let status = res.status().as_u16();
        let bytes = res.bytes().await?;
        let json = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
        });
        Ok((status, json))
    }

    /// Stop a separate server (SIGTERM, then wait). An in-process server stops with the process.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            for _ in 0..100 {
                if matches!(c.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `plugins.sinks` as a configuration file for a server process.
fn sinks_toml(sinks: &[(String, String)], batch: usize) -> String {
    // JSON strings are TOML basic strings for what is quoted here (names and URLs).
    let quoted = |s: &str| serde_json::Value::from(s).to_string();
    sinks
        .iter()
        .map(|(name, url)| {
            format!(
                "[plugins.sinks.{}]\nurl = {}\nbatch_max_events = {batch}\n",
                quoted(name),
                quoted(url)
            )
        })
        .collect()
}

/// `policies.trusted_signers` as a configuration file's section (empty when there are none).
fn policies_toml(signers: &[PathBuf]) -> String {
    if signers.is_empty() {
        return String::new();
    }
    let quoted: Vec<String> = signers
        .iter()
        .map(|p| serde_json::Value::from(p.display().to_string()).to_string())
        .collect();
    format!("[policies]\ntrusted_signers = [{}]\n", quoted.join(", "))
}

#[cfg(test)]
mod tests {
    use mdm_server::config::ExposeSecret;

    /// The file a server process is given reads back as the sinks it was written from.
    #[test]
    fn sinks_reach_a_server_process_through_its_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sinks.toml");
        let sinks = [
            (
                "webhook".to_string(),
                "http://127.0.0.1:9/events".to_string(),
            ),
            (
                "alerts".to_string(),
                "http://127.0.0.1:9/alerts".to_string(),
            ),
        ];
        std::fs::write(&file, super::sinks_toml(&sinks, 50)).unwrap();
        let config = mdm_server::Config::load(Some(&file)).unwrap();
        for (name, url) in &sinks {
            let sink = &config.plugins.sinks[name];
            assert_eq!(
                (sink.url.expose_secret(), sink.batch_max_events),
                (url.as_str(), 50),
                "{name}"
            );
        }
    }

    /// Policy signers written beside sinks read back as the server's trusted signers.
    #[test]
    fn policy_signers_reach_a_server_process_through_its_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("server.toml");
        let signers = vec![
            dir.path().join("ci.pem"),
            dir.path().join("other \"key\".pem"),
        ];
        let sinks = [("webhook".to_string(), "http://127.0.0.1:9/e".to_string())];
        let text = super::sinks_toml(&sinks, 1) + &super::policies_toml(&signers);
        std::fs::write(&file, text).unwrap();
        let config = mdm_server::Config::load(Some(&file)).unwrap();
        assert_eq!(config.policies.trusted_signers, signers);
        assert!(config.plugins.sinks.contains_key("webhook"));
        assert_eq!(super::policies_toml(&[]), "");
    }
}
