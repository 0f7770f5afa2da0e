//! The event sinks this server posts to: those of the configuration file (`plugins.sinks`, fixed for the
//! process) and those admins manage through the API (stored, read again with the plugins on every replica
//! and at once on the replica that changed them). Plugins' manifests and emits are checked against them;
//! delivery posts to them.

use crate::config::SinkConfig;
use crate::storage::{sinks as repo, Storage, StorageError};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

/// Where a sink was defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `plugins.sinks` in the configuration: changed only there.
    Config,
    /// `PUT /api/v1/sinks/{name}`.
    Api,
}

/// Every sink by name, with where it was defined.
type ByName = BTreeMap<String, (Origin, Arc<SinkConfig>)>;

pub struct Sinks {
    configured: BTreeMap<String, Arc<SinkConfig>>,
    /// Every sink, the configuration's and the stored ones, swapped whole on reload.
    current: RwLock<Arc<ByName>>,
}

impl Sinks {
    pub fn new(configured: BTreeMap<String, SinkConfig>) -> Self {
        let configured: BTreeMap<String, Arc<SinkConfig>> = configured
            .into_iter()
            .map(|(name, sink)| (name, Arc::new(sink)))
            .collect();
        let current = configured
            .iter()
            .map(|(name, sink)| (name.clone(), (Origin::Config, sink.clone())))
            .collect();
        Self {
            configured,
            current: RwLock::new(Arc::new(current)),
        }
    }

    fn all(&self) -> Arc<ByName> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The sink to post `name`'s events to.
    pub fn get(&self, name: &str) -> Option<Arc<SinkConfig>> {
        self.all().get(name).map(|(_, sink)| sink.clone())
    }

    pub fn origin(&self, name: &str) -> Option<Origin> {
        self.all().get(name).map(|(origin, _)| *origin)
    }

    /// Every sink with where it was defined, as one snapshot.
    pub fn entries(&self) -> Arc<ByName> {
        self.all()
    }

    /// Every sink's name.
    pub fn names(&self) -> BTreeSet<String> {
        self.all().keys().cloned().collect()
    }

    /// Read the stored sinks again. One that cannot be opened (its sealing secret changed, the row was
    /// altered) is left out and logged; a stored one never shadows the configuration's.
    pub async fn reload(&self, storage: &Storage) -> Result<(), StorageError> {
        let rows = repo::list(&storage.read()).await?;
        let mut all = ByName::new();
        for row in rows {
            match repo::open(&row) {
                Ok(sink) => {
                    all.insert(row.name.clone(), (Origin::Api, Arc::new(sink)));
                }
                Err(reason) => {
                    tracing::error!(sink = %row.name, %reason, "a stored event sink cannot be opened; it is left out")
                }
            }
        }
        for (name, sink) in &self.configured {
            all.insert(name.clone(), (Origin::Config, sink.clone()));
        }
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(all);
        Ok(())
    }
}

/// Why an admin's change to a sink was refused.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("{0}")]
    Invalid(String),
    #[error("no sink {0:?}")]
    NotFound(String),
    #[error("sink {0:?} is set in the configuration file (plugins.sinks): change it there")]
    Configured(String),
    #[error("sink {name:?} is named by plugins {plugins:?}: change their manifests first")]
    InUse { name: String, plugins: Vec<String> },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// A sink name as the API takes it: 1 to 64 letters, digits, `.`, `_` and `-`.
pub fn check_name(name: &str) -> Result<(), SinkError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(SinkError::Invalid(
            "a sink name is 1 to 64 letters, digits, '.', '_' and '-'".into(),
        ))
    }
}

impl super::PluginHost {
    /// Create or replace a sink of the API's (not one of the configuration file's), audited; this replica
    /// sees it at once, the others at their next reload. Whether it was created.
    pub async fn put_sink(
        &self,
        name: &str,
        sink: SinkConfig,
        actor: &str,
        now: i64,
    ) -> Result<bool, SinkError> {
        check_name(name)?;
        sink.check().map_err(SinkError::Invalid)?;
        if self.sinks.origin(name) == Some(Origin::Config) {
            return Err(SinkError::Configured(name.to_string()));
        }
        let detail = serde_json::json!({"url": sink.url.redacted(),
            "headers": sink.headers.keys().collect::<Vec<_>>(),
            "timeout_secs": sink.timeout_secs, "batch_max_events": sink.batch_max_events});
        let (name_owned, actor) = (name.to_string(), actor.to_string());
        let created = self
            .storage
            .transaction(move |txn| {
                Box::pin(async move {
                    let created = repo::put(txn, &name_owned, &sink, &actor, now).await?;
                    let action = if created {
                        "sink.created"
                    } else {
                        "sink.updated"
                    };
                    audit(txn, now, &actor, action, &name_owned, detail).await?;
                    Ok::<_, StorageError>(created)
                })
            })
            .await?;
        self.sinks.reload(&self.storage).await?;
        Ok(created)
    }

    /// Remove a sink of the API's, unless a plugin's manifest names it; audited. Events already queued
    /// for it wait, undelivered, until a sink of that name exists again.
    pub async fn delete_sink(&self, name: &str, actor: &str, now: i64) -> Result<(), SinkError> {
        match self.sinks.origin(name) {
            None => return Err(SinkError::NotFound(name.to_string())),
            Some(Origin::Config) => return Err(SinkError::Configured(name.to_string())),
            Some(Origin::Api) => {}
        }
        let plugins: Vec<String> = self
            .loaded()
            .iter()
            .filter(|p| p.manifest.sinks.iter().any(|s| s == name))
            .map(|p| p.id.to_string())
            .collect();
        if !plugins.is_empty() {
            return Err(SinkError::InUse {
                name: name.to_string(),
                plugins,
            });
        }
        let (name_owned, actor) = (name.to_string(), actor.to_string());
        let deleted = self
            .storage
            .transaction(move |txn| {
                Box::pin(async move {
                    let deleted = repo::delete(txn, &name_owned).await?;
                    if deleted {
                        let detail = serde_json::json!({});
                        audit(txn, now, &actor, "sink.deleted", &name_owned, detail).await?;
                    }
                    Ok::<_, StorageError>(deleted)
                })
            })
            .await?;
        self.sinks.reload(&self.storage).await?;
        if deleted {
            Ok(())
        } else {
            Err(SinkError::NotFound(name.to_string()))
        }
    }
}

async fn audit<C: sea_orm::ConnectionTrait>(
    c: &C,
    now: i64,
    actor: &str,
    action: &str,
    name: &str,
    detail: serde_json::Value,
) -> Result<(), StorageError> {
    use crate::storage::audit_log::{self, NewEntry};
    audit_log::append(
        c,
        vec![NewEntry::new(now, actor, action, Some(name), detail)],
    )
    .await
}
