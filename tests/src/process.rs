//! The real server binary as a child process, for tests that kill it (SIGKILL) and start it again on the
//! same data, or run several processes on one database.
//!
//! Integration tests pass `env!("CARGO_BIN_EXE_mdm-server-under-test")`: the server's own `main.rs` built
//! as a binary of this package, so cargo rebuilds it with the test and it is never stale.

use mdm_server::apikeys::{self, Scope};
use mdm_server::clock::{Clock, SystemClock};
use mdm_server::storage::Storage;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One server process: its port, data directory and environment survive restarts.
pub struct ServerProcess {
    pub name: String,
    pub base: String,
    bin: PathBuf,
    data: PathBuf,
    env: Vec<(String, String)>,
    child: Option<Child>,
    /// How many times the process was started (1 after `spawn`).
    pub starts: u32,
}

/// A free port on 127.0.0.1 (bound and released; the caller binds it again at once).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// An admin key created directly in the database (before any server runs on it).
pub async fn admin_key(storage: &Storage) -> Result<String, BoxError> {
    let (_, key) = apikeys::create(
        storage,
        "process-test",
        &[Scope::Admin],
        SystemClock.now_ms(),
    )
    .await?;
    Ok(key)
}

impl ServerProcess {
    /// Start `bin serve` with `data` as its data directory and `env` as extra `MDM_*` settings, and wait
    /// until it answers /healthz.
    pub async fn spawn(
        name: &str,
        bin: &Path,
        data: &Path,
        env: &[(&str, String)],
    ) -> Result<Self, BoxError> {
        let port = free_port();
        // Test devices' identities come from the tests' own CA (see `Identity::generate`).
        let device_ca = crate::device::write_test_device_ca(data)?;
        let mut all = vec![
            (
                "MDM_IDENTITY__DEVICE_CA_FILE".to_string(),
                device_ca.display().to_string(),
            ),
            ("MDM_LISTEN".to_string(), format!("127.0.0.1:{port}")),
            ("MDM_DATA_DIR".to_string(), data.display().to_string()),
            (
                "MDM_PUSH__KEY_SECRET".to_string(),
                "process-test-secret-of-sufficient-length".to_string(),
            ),
            ("MDM_LOG__FILTER".to_string(), "warn".to_string()),
            ("MDM_WORKERS".to_string(), "2".to_string()),
        ];
        for (k, v) in env {
            all.retain(|(key, _)| key != k);
            all.push((k.to_string(), v.clone()));
        }
        let mut p = Self {
            name: name.to_string(),
            base: format!("http://127.0.0.1:{port}"),
            bin: bin.to_path_buf(),
            data: data.to_path_buf(),
            env: all,
            child: None,
            starts: 0,
        };
        p.start().await?;
        Ok(p)
    }

    fn log_path(&self) -> PathBuf {
        self.data.join(format!("{}.log", self.name))
    }

    /// The process's log so far (every start appends to it).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Start (again) on the same port and data, and wait until healthy.
    pub async fn start(&mut self) -> Result<(), BoxError> {
        assert!(self.child.is_none(), "{} is already running", self.name);
        std::fs::create_dir_all(&self.data)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let mut cmd = Command::new(&self.bin);
        cmd.arg("serve")
            .env_remove("MDM_CONFIG")
            .stdout(log.try_clone()?)
            .stderr(log);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn()?);
        self.starts += 1;
        self.wait_ready().await
    }

    async fn wait_ready(&mut self) -> Result<(), BoxError> {
        let http = reqwest::Client::new();
        // A deadline, not a sleep: a debug build on a busy machine can take a while to migrate and bind.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(c) = &mut self.child {
                if let Some(status) = c.try_wait()? {
                    self.child = None;
                    return Err(format!("{} exited ({status}):\n{}", self.name, self.log()).into());
                }
            }
            if let Ok(r) = http.get(format!("{}/healthz", self.base)).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(
                    format!("{} not healthy within 120 s:\n{}", self.name, self.log()).into(),
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: no shutdown code runs, as in a power cut or the OOM killer.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait (a graceful stop), SIGKILL if it takes too long.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if matches!(c.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// The server's Prometheus text (`/metrics`).
    pub async fn metrics(&self, http: &reqwest::Client) -> Result<String, BoxError> {
        Ok(http
            .get(format!("{}/metrics", self.base))
            .send()
            .await?
            .text()
            .await?)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The sum of a counter's samples in Prometheus text whose line starts with `prefix` (name and labels).
pub fn metric_sum(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
