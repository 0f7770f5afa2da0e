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
//! interrupt between virtual CPUs), and that was most of a write's cost: with both kept on one CPU a
//! TokenUpdate took less than half the server's CPU and ran three times as fast (BENCHMARKS.md). So
//! this thread keeps to one CPU, and opens the connection itself: the thread sqlx starts for it inherits
//! that CPU.

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

/// The CPU the writer keeps to: the last this process may run on (the first is where interrupts and
/// most other work land by default). None when there is only one, or the platform does not say.
pub(super) fn writer_cpu() -> Option<core_affinity::CoreId> {
    let cpus = core_affinity::get_core_ids()?;
    (cpus.len() > 1).then(|| cpus.last().copied()).flatten()
}

#[cfg(test)]
mod tests {
    use crate::storage::testing::test_databases;

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
        let Some(cpu) = super::writer_cpu() else {
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
        let on_writer = s
            .transaction(|_| {
                Box::pin(async {
                    Ok::<_, crate::storage::StorageError>(core_affinity::get_core_ids())
                })
            })
            .await
            .unwrap();
        assert_eq!(
            on_writer.map(|c| c.iter().map(|c| c.id).collect::<Vec<_>>()),
            Some(vec![cpu.id]),
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
}
