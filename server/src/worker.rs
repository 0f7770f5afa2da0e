//! Background workers that run a round when woken (work was just committed) or, failing that, on a timer.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Run `round` whenever `wake` is notified, and at least every `period`. A notification that arrives while
/// a round runs is kept (Notify stores one permit), so work committed mid-round is picked up at once.
pub fn spawn_woken<F, Fut>(wake: Arc<Notify>, period: Duration, mut round: F)
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(period) => {}
            }
            round().await;
        }
    });
}
