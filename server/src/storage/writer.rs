//! SQLite's one writer, driven from a thread of its own.
//!
//! SQLite has one writer connection, so a write transaction holds it for every round trip between its
//! statements. Each round trip ends with sqlx's SQLite thread waking the task that awaits it; on an HTTP
//! worker that task then waits behind every other request the worker is serving, and on two busy cores
//! that wait, not SQLite's work, was most of how long the writer was held (measured in BENCHMARKS.md).
//! Transactions run here instead, on a runtime that does nothing else, so a woken transaction is polled
//! at once and the writer is held for little more than SQLite's own work.

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
    pub(super) fn start() -> StorageResult<Arc<Self>> {
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
