//! Plugin background work: pick up changes made through other replicas, run schedules, deliver events.

use crate::config::PluginsConfig;
use crate::plugins::delivery::Delivery;
use crate::plugins::PluginHost;
use std::sync::Arc;
use std::time::Duration;

/// Reload always (and, with `plugins.watch_dir`, load what changed in `plugins.dir`); schedules and
/// event delivery only where `plugins.worker` is on.
pub fn spawn(plugins: Arc<PluginHost>, delivery: Delivery, cfg: &PluginsConfig) {
    let p = plugins.clone();
    let watched = cfg.dir.clone().filter(|_| cfg.watch_dir);
    super::every(
        "plugin_reload",
        Duration::from_secs(cfg.reload_interval_secs),
        None,
        move || {
            let (p, watched) = (p.clone(), watched.clone());
            async move {
                if let Some(dir) = &watched {
                    match p.load_dir(dir).await {
                        Ok(0) => {}
                        Ok(n) => {
                            tracing::info!(dir = %dir.display(), loaded = n, "changed plugins loaded from the watched directory")
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "watched plugin directory not loaded")
                        }
                    }
                }
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
    super::every("event_delivery", period, None, move || {
        let delivery = delivery.clone();
        async move {
            if let Err(e) = delivery.run_once().await {
                tracing::error!(error = %e, "event delivery failed");
            }
        }
    });
    super::every("plugin_schedules", period, None, move || {
        let plugins = plugins.clone();
        async move {
            if let Err(e) = plugins.run_schedules().await {
                tracing::error!(error = %e, "plugin schedules failed");
            }
        }
    });
}
