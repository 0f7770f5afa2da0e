//! Managing plugins: upload (with every check before anything is stored), settings, configuration, delete,
//! and loading a directory of plugins at start for GitOps-style deployments.

use super::inspect;
use super::manifest::{Capability, Manifest};
use super::runtime::{HookInput, HookOutput, LoadedPlugin};
use super::{EventScope, PluginHost};
use crate::storage::{plugins as repo, StorageError};
use std::path::Path;
use std::sync::Arc;

/// The largest component accepted.
pub const MAX_WASM_BYTES: usize = 32 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("{0}")]
    Invalid(String),
    #[error("plugin {0} not found")]
    NotFound(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// A refusal with the reason the admin sees.
fn invalid(e: impl std::fmt::Display) -> PluginError {
    PluginError::Invalid(e.to_string())
}

pub struct Upload {
    pub manifest: Manifest,
    pub wasm: Vec<u8>,
    /// None: keep the stored configuration (or the manifest's default for a new plugin).
    pub config: Option<serde_json::Value>,
    /// Capabilities the admin approves; must cover the manifest's.
    pub approve: Vec<Capability>,
}

impl PluginHost {
    /// Validate, compile, check imports against grants and approvals, validate the configuration with the
    /// plugin itself, then store (new, or a new version replacing the old atomically) and reload.
    pub async fn upload(&self, u: Upload) -> Result<repo::Listed, PluginError> {
        let bad = |m: String| PluginError::Invalid(m);
        u.manifest.validate().map_err(invalid)?;
        let known = self.sinks.names();
        let unknown: Vec<&str> = (u.manifest.sinks.iter())
            .filter(|s| !known.contains(*s))
            .map(String::as_str)
            .collect();
        if !unknown.is_empty() {
            return Err(bad(format!(
                "the manifest's sinks {unknown:?} are not configured on this server (plugins.sinks, or PUT /api/v1/sinks/{{name}})"
            )));
        }
        if u.wasm.len() > MAX_WASM_BYTES {
            return Err(bad(format!(
                "the component is larger than {MAX_WASM_BYTES} bytes"
            )));
        }
        let sha = hex::encode(openssl::sha::sha256(&u.wasm));
        let (info, pre) = self
            .compile(u.wasm.clone(), sha.clone())
            .await
            .map_err(invalid)?;
        inspect::check_hooks(&info, &u.manifest)
            .and_then(|()| inspect::check_capabilities(&info, &u.manifest, &u.approve))
            .map_err(|p| bad(format!("refused: {}", p.join("; "))))?;

        let existing = repo::find(&self.storage.read(), &u.manifest.id).await?;
        let config = match (&u.config, &existing) {
            (Some(c), _) => c.clone(),
            (None, Some(e)) => {
                serde_json::from_str(&e.config).unwrap_or_else(|_| serde_json::json!({}))
            }
            (None, None) => u
                .manifest
                .default_config
                .clone()
                .unwrap_or_else(|| serde_json::json!({})),
        };
        let config = config.to_string();
        let candidate = Arc::new(LoadedPlugin {
            id: u.manifest.id.as_str().into(),
            revision: 0,
            manifest: Arc::new(u.manifest.clone()),
            config: config.as_str().into(),
            enabled: true,
            priority: 0,
            dry_run: true,
            quarantined: false,
            pre,
        });
        self.validate_config(&candidate, &config).await?;

        let now = self.clock.now_ms();
        let approved: Vec<&str> = u.manifest.capabilities.iter().map(|c| c.as_str()).collect();
        repo::upsert(
            &self.storage,
            repo::Plugin {
                id: u.manifest.id.clone(),
                version: u.manifest.version.clone(),
                description: u.manifest.description.clone(),
                manifest: serde_json::to_string(&u.manifest).map_err(invalid)?,
                wasm: u.wasm,
                wasm_sha256: sha,
                config,
                enabled: true,
                priority: 0,
                dry_run: false,
                approved: approved.join(" "),
                revision: 1,
                quarantined_at: None,
                quarantine_reason: None,
                created_at: now,
                updated_at: now,
            },
        )
        .await?;
        tracing::info!(plugin = %u.manifest.id, version = %u.manifest.version, wit = %info.wit_version, "plugin stored");
        self.reload().await?;
        repo::find_listed(&self.storage.read(), &u.manifest.id)
            .await?
            .ok_or_else(|| PluginError::NotFound(u.manifest.id.clone()))
    }

    async fn validate_config(
        &self,
        p: &Arc<LoadedPlugin>,
        config: &str,
    ) -> Result<(), PluginError> {
        let scope = EventScope {
            event_id: "validate-config",
            device_id: None,
            enrollment_id: None,
        };
        match self
            .call(p, &HookInput::ValidateConfig(config.to_string()), scope)
            .await
            .0
        {
            Ok(HookOutput::Valid) => Ok(()),
            Ok(_) => Err(PluginError::Invalid(
                "validate-config returned nothing".into(),
            )),
            Err(f) => Err(PluginError::Invalid(format!(
                "configuration refused: {}",
                f.message()
            ))),
        }
    }

    /// Set a plugin's configuration after the plugin itself accepts it.
    pub async fn set_config(&self, id: &str, config: serde_json::Value) -> Result<(), PluginError> {
        self.reload().await?;
        let p = self
            .loaded()
            .iter()
            .find(|p| &*p.id == id)
            .cloned()
            .ok_or_else(|| PluginError::NotFound(id.to_string()))?;
        let text = config.to_string();
        self.validate_config(&p, &text).await?;
        self.update(
            id,
            repo::Settings {
                config: Some(text),
                ..Default::default()
            },
        )
        .await
    }

    /// Enable/disable, reorder, dry-run. Enabling lifts a quarantine.
    pub async fn update(&self, id: &str, s: repo::Settings) -> Result<(), PluginError> {
        let enabling = s.enabled == Some(true);
        if !repo::update_settings(&self.storage, id, s, self.clock.now_ms()).await? {
            return Err(PluginError::NotFound(id.to_string()));
        }
        if enabling {
            self.breaker.reset(id);
        }
        self.reload().await?;
        Ok(())
    }

    pub async fn delete(&self, id: &str) -> Result<(), PluginError> {
        if !repo::delete(&self.storage, id).await? {
            return Err(PluginError::NotFound(id.to_string()));
        }
        self.reload().await?;
        Ok(())
    }

    /// Load every `<dir>/<name>/` holding `plugin.json` and one `.wasm` (and optionally `config.json`). The
    /// operator deployed them, so their declared capabilities count as approved. Unchanged plugins are left
    /// alone; a broken one is logged and skipped.
    pub async fn load_dir(&self, dir: &Path) -> Result<usize, PluginError> {
        let entries = std::fs::read_dir(dir)
            .map_err(|e| PluginError::Invalid(format!("plugins dir {}: {e}", dir.display())))?;
        let mut loaded = 0;
        let mut subdirs: Vec<_> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        subdirs.sort();
        for sub in subdirs {
            match self.load_one(&sub).await {
                Ok(true) => loaded += 1,
                Ok(false) => {}
                Err(e) => tracing::error!(dir = %sub.display(), error = %e, "plugin not loaded"),
            }
        }
        Ok(loaded)
    }

    async fn load_one(&self, sub: &Path) -> Result<bool, PluginError> {
        let bad = |m: String| PluginError::Invalid(m);
        let manifest_path = sub.join("plugin.json");
        if !manifest_path.exists() {
            return Ok(false);
        }
        let manifest = Manifest::parse(&std::fs::read_to_string(&manifest_path).map_err(invalid)?)
            .map_err(invalid)?;
        let wasm_path = std::fs::read_dir(sub)
            .map_err(invalid)?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "wasm"))
            .ok_or_else(|| bad(format!("no .wasm file in {}", sub.display())))?;
        let wasm = std::fs::read(&wasm_path).map_err(invalid)?;
        let config = match std::fs::read_to_string(sub.join("config.json")) {
            Ok(t) => Some(serde_json::from_str(&t).map_err(|e| bad(format!("config.json: {e}")))?),
            Err(_) => None,
        };
        let sha = hex::encode(openssl::sha::sha256(&wasm));
        if let Some(existing) = repo::find(&self.storage.read(), &manifest.id).await? {
            let same_config = config.as_ref().is_none_or(|c: &serde_json::Value| {
                Some(c) == serde_json::from_str(&existing.config).ok().as_ref()
            });
            if existing.wasm_sha256 == sha
                && serde_json::from_str::<serde_json::Value>(&existing.manifest).ok()
                    == serde_json::to_value(&manifest).ok()
                && same_config
            {
                return Ok(false);
            }
        }
        let approve = manifest.capabilities.clone();
        self.upload(Upload {
            manifest,
            wasm,
            config,
            approve,
        })
        .await?;
        Ok(true)
    }
}
