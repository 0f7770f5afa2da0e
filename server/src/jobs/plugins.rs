//! Plugin background work: pick up changes made through other replicas, run schedules, deliver events.

use crate::config::PluginsConfig;
use crate::plugins::delivery::Delivery;
use crate::plugins::PluginHost;
use std::sync::Arc;
use std::time::Duration;

/// Reload always; schedules and event delivery only where `plugins.worker` is on.
pub fn spawn(plugins: Arc<PluginHost>, delivery: Delivery, cfg: &PluginsConfig) {
    let p = plugins.clone();
    super::every(
        Duration::from_secs(cfg.reload_interval_secs),
        None,
        move || {
            let p = p.clone();
            async move {
                if let Err(e) = p.reload().await {
                    tracing::error!(error = %e, "plugin reload failed");
                }
            }
        },
    );
    if !cfg.worker {
        return;
    }
    let period = Duration::from_millis(cfg.worker_interval_ms);
    let delivery = Arc::new(delivery);
    plugins.deliver_here(delivery.clone().handoff());
    super::every(period, None, move || {
        let delivery = delivery.clone();
        async move {
            if let Err(e) = delivery.run_once().await {
                tracing::error!(error = %e, "event delivery failed");
            }
        }
    });
    super::every(period, None, move || {
        let plugins = plugins.clone();
        async move {
            if let Err(e) = plugins.run_schedules().await {
                tracing::error!(error = %e, "plugin schedules failed");
            }
        }
    });
}
