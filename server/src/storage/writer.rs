//! SQLite's one writer, driven from a thread of its own.
//!
//! SQLite has one writer connection, so a write transaction holds it for every round trip between its
//! statements. Each round trip ends with sqlx's SQLite thread waking the task that awaits it; on an HTTP
//! worker that task then waits behind every other request the worker is serving, and on two busy cores
//! that wait, not SQLite's work, was most of how long the writer was held (measured in BENCHMARKS.md).
//! Transactions run here instead, on a runtime that does nothing else, so a woken transaction is polled
//! at once and the writer is held for little more than SQLite's own work.
//!
//! Every statement is still a round trip between this thread and the one sqlx runs the connection on.
//! When the two sit on different CPUs, each hand-off is a wake-up across CPUs (on a virtual machine, an
//! interrupt between virtual CPUs), and that was most of a write's cost (BENCHMARKS.md, *History*). So
//! this thread keeps to one CPU, and opens the connection itself: the thread sqlx starts for it inherits
//! that CPU. Which CPU is configurable ([`WriterCpu`]), for hosts where it should be another or none.

use super::{StorageError, StorageResult};
use std::future::Future;
use std::sync::Arc;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// The thread and its runtime. Stopped (and whatever it is still running, rolled back) when the last
/// [`super::Storage`] clone holding it is dropped.
#[derive(Debug)]
pub(super) struct Writer {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
}

impl Writer {
    /// Start the thread, kept to `cpu` when given (see the module's comment).
    pub(super) fn start(cpu: Option<core_affinity::CoreId>) -> StorageResult<Arc<Self>> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| {
                StorageError::Unavailable(format!("cannot start the database writer: {e}"))
            })?;
        let handle = rt.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("db-writer".into())
            .spawn(move || {
                if let Some(cpu) = cpu {
                    if !core_affinity::set_for_current(cpu) {
                        tracing::debug!(cpu = cpu.id, "the database writer cannot keep to one CPU");
                    }
                }
                // Either a stop or every sender gone: the storage is being dropped.
                let _ = rt.block_on(stopped);
            })
            .map_err(|e| {
                StorageError::Unavailable(format!("cannot start the database writer: {e}"))
            })?;
        Ok(Arc::new(Self {
            handle,
            stop: Some(stop),
        }))
    }

    /// Run `fut` on the writer's thread and wait for it. A panic inside is resumed here, as if `fut`
    /// had run in place. Once started, `fut` runs to its end even if the caller stops waiting: a
    /// transaction is committed or rolled back whole, never abandoned between statements.
    pub(super) async fn run<T, F>(&self, fut: F) -> StorageResult<T>
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        match self.handle.spawn(fut).await {
            Ok(out) => Ok(out),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(StorageError::Unavailable(
                "the database writer has stopped".into(),
            )),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Where the writer's thread runs (configuration `sqlite_writer_cpu`). Several servers on one host would
/// all pick the same CPU under [`WriterCpu::Auto`]; one CPU each, or none, is their way out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WriterCpu {
    /// The last CPU this process may run on (the first is where interrupts and most other work land by
    /// default); anywhere when it may run on only one, or the platform does not say.
    #[default]
    Auto,
    /// Wherever the scheduler puts it.
    Anywhere,
    /// This CPU, numbered as the operating system numbers them.
    Cpu(usize),
}

impl WriterCpu {
    /// The CPU to keep to, or why this one cannot be.
    pub(super) fn resolve(self) -> StorageResult<Option<core_affinity::CoreId>> {
        let allowed = core_affinity::get_core_ids().unwrap_or_default();
        match self {
            Self::Auto => Ok((allowed.len() > 1).then(|| allowed.last().copied()).flatten()),
            Self::Anywhere => Ok(None),
            Self::Cpu(id) => allowed.iter().find(|c| c.id == id).copied().map(Some).ok_or_else(|| {
                let ids: Vec<String> = allowed.iter().map(|c| c.id.to_string()).collect();
                StorageError::Unavailable(format!(
                    "sqlite_writer_cpu = {id} is not a CPU this process may run on (it may run on: {})",
                    ids.join(", ")
                ))
            }),
        }
    }
}

impl std::fmt::Display for WriterCpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Anywhere => f.write_str("none"),
            Self::Cpu(id) => write!(f, "{id}"),
        }
    }
}

impl serde::Serialize for WriterCpu {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Cpu(id) => s.serialize_u64(*id as u64),
            other => s.collect_str(other),
        }
    }
}

/// `"auto"`, `"none"` or a CPU number (an integer in TOML; from the environment, digits).
impl<'de> serde::Deserialize<'de> for WriterCpu {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Given {
            Number(usize),
            Word(String),
        }
        match Given::deserialize(d)? {
            Given::Number(id) => Ok(Self::Cpu(id)),
            Given::Word(w) => match w.trim() {
                "auto" => Ok(Self::Auto),
                "none" => Ok(Self::Anywhere),
                n => n.parse().map(Self::Cpu).map_err(|_| {
                    serde::de::Error::custom(format!(
                        "sqlite_writer_cpu must be \"auto\", \"none\" or a CPU number, not {w:?}"
                    ))
                }),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::WriterCpu;
    use crate::storage::testing::test_databases;
    use crate::storage::Storage;

    /// The CPUs the writer's thread may run on, asked from inside a transaction.
    async fn writer_cpus(s: &Storage) -> Vec<usize> {
        s.transaction(|_| {
            Box::pin(async { Ok::<_, crate::storage::StorageError>(core_affinity::get_core_ids()) })
        })
        .await
        .unwrap()
        .unwrap_or_default()
        .iter()
        .map(|c| c.id)
        .collect()
    }

    /// The CPUs a thread of this process may run on, from `/proc` (Linux).
    fn allowed_cpus(tid: &str) -> Option<String> {
        let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .map(|v| v.trim().to_string())
    }

    /// The threads of this process whose name starts with `prefix`, with the CPUs each may run on.
    fn threads(prefix: &str) -> Vec<(String, Option<String>)> {
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return Vec::new();
        };
        tasks
            .flatten()
            .filter_map(|t| {
                let tid = t.file_name().to_string_lossy().into_owned();
                let comm = std::fs::read_to_string(t.path().join("comm")).ok()?;
                comm.starts_with(prefix).then(|| {
                    let cpus = allowed_cpus(&tid);
                    (tid, cpus)
                })
            })
            .collect()
    }

    /// With more than one CPU, the writer's thread keeps to one, and so does the thread sqlx runs the
    /// write connection on (opened from the writer's thread, it inherits that CPU); readers do not.
    #[tokio::test]
    async fn the_writer_and_its_connection_share_one_cpu() {
        let Some(cpu) = WriterCpu::Auto.resolve().unwrap() else {
            eprintln!("skipped: this process may run on one CPU only");
            return;
        };
        if !std::path::Path::new("/proc/self/task").exists() {
            eprintln!("skipped: no /proc to read thread affinities from");
            return;
        }
        let tdb = test_databases().await.remove(0);
        assert_eq!(tdb.label, "sqlite");
        let s = tdb.storage().await.unwrap();
        assert_eq!(
            writer_cpus(&s).await,
            vec![cpu.id],
            "transactions run on a thread kept to CPU {}",
            cpu.id
        );
        let mine = cpu.id.to_string();
        let sqlx = threads("sqlx-sqlite-wor");
        assert!(
            sqlx.iter()
                .any(|(_, cpus)| cpus.as_deref() == Some(mine.as_str())),
            "no sqlx SQLite thread kept to CPU {mine}: {sqlx:?}"
        );
        assert!(
            sqlx.iter()
                .any(|(_, cpus)| cpus.as_deref() != Some(mine.as_str())),
            "the readers' threads are not kept to one CPU: {sqlx:?}"
        );
        tdb.cleanup().await;
    }

    /// `sqlite_writer_cpu`: "none" leaves the writer wherever the process may run, a number keeps it
    /// to that CPU, and a CPU the process may not use is refused before anything is opened.
    #[tokio::test]
    async fn the_writer_s_cpu_can_be_chosen_or_left_free() {
        let process: Vec<usize> = core_affinity::get_core_ids()
            .unwrap_or_default()
            .iter()
            .map(|c| c.id)
            .collect();
        if process.is_empty() {
            eprintln!("skipped: this platform does not say which CPUs a process may run on");
            return;
        }
        let tdb = test_databases().await.remove(0);
        assert_eq!(tdb.label, "sqlite");
        let free = Storage::connect_with(&tdb.url, None, WriterCpu::Anywhere)
            .await
            .unwrap();
        assert_eq!(writer_cpus(&free).await, process);
        drop(free);
        let first = process[0];
        let chosen = Storage::connect_with(&tdb.url, None, WriterCpu::Cpu(first))
            .await
            .unwrap();
        assert_eq!(writer_cpus(&chosen).await, vec![first]);
        drop(chosen);
        let absent = process.iter().max().unwrap() + 1;
        let err = Storage::connect_with(&tdb.url, None, WriterCpu::Cpu(absent))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("sqlite_writer_cpu = {absent}")),
            "{err}"
        );
        tdb.cleanup().await;
    }
}
