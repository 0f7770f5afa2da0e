//! Asking plugins: which of them hear a check-in message, the events they are given, and refusing the
//! message when a fail-closed plugin says so. Plugins run before the message's transaction (their key-value
//! and inventory calls use the database, and SQLite has one writer).

use super::{CheckinError, CheckinService};
use crate::plugins::{
    self, convert, EventScope, Hook, HookInput, HookRun, LoadedPlugin, PluginHost,
};
use crate::protocol::{CheckinMessage, CheckinPayload, EnrollmentRef};
use crate::storage::event_subject::EventSubject;
use std::sync::Arc;

/// Which plugins hear a check-in message, by their manifests' `checkins` (default: every message).
pub(super) struct Hearing {
    /// Those that hear this message (for a TokenUpdate: one that is not its channel's first).
    every_time: Vec<Arc<LoadedPlugin>>,
    /// For a TokenUpdate, those that hear its channel's first one (enrollment completing); else empty.
    first_token_update: Vec<Arc<LoadedPlugin>>,
}

/// How a check-in message other than Authenticate is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Path {
    /// No plugin hears it: authorized and stored in one transaction, as if there were no plugins.
    Unheard,
    /// A TokenUpdate only a channel's first of which is heard: stored by one guarded UPDATE when it is a
    /// repeat (see `fast_paths`); a first one writes nothing there and takes [`Path::Heard`]. A plugin that
    /// acts on enrollment then costs no other check-in a read or a call.
    UnlessFirstTokenUpdate,
    /// Plugins hear it: the sender is read for their event, they are asked, then it is stored.
    Heard,
}

impl Hearing {
    pub(super) fn of(host: &PluginHost, payload: &CheckinPayload) -> Self {
        let hearing = |first| host.hearing_checkin(convert::checkin_message(payload, first));
        let first_token_update = match payload {
            CheckinPayload::TokenUpdate(_) => hearing(true),
            _ => Vec::new(),
        };
        Self {
            every_time: hearing(false),
            first_token_update,
        }
    }

    pub(super) fn path(&self) -> Path {
        path(
            !self.every_time.is_empty(),
            !self.first_token_update.is_empty(),
        )
    }

    /// The plugins to ask, once the sender's read told whether this is its channel's first TokenUpdate.
    pub(super) fn listeners(self, first_token_update: bool) -> Vec<Arc<LoadedPlugin>> {
        if first_token_update {
            self.first_token_update
        } else {
            self.every_time
        }
    }
}

fn path(heard_every_time: bool, first_token_update_heard: bool) -> Path {
    if heard_every_time {
        Path::Heard
    } else if first_token_update_heard {
        Path::UnlessFirstTokenUpdate
    } else {
        Path::Unheard
    }
}

/// A channel's first TokenUpdate since its device authenticated, by the sender's read.
pub(super) fn is_first_token_update(payload: &CheckinPayload, subject: &EventSubject) -> bool {
    matches!(payload, CheckinPayload::TokenUpdate(_))
        && subject.token_update_count.unwrap_or(0) == 0
}

/// The event plugins hear for a check-in message other than Authenticate.
pub(super) fn checkin_event(
    msg: &CheckinMessage,
    subject: EventSubject,
    event_id: &str,
) -> plugins::event::CheckinEvent {
    let (count, awaiting) = match &msg.payload {
        CheckinPayload::TokenUpdate(t) => {
            let before = subject.token_update_count.unwrap_or(0);
            (Some(before as u32 + 1), t.awaiting_configuration)
        }
        _ => (None, None),
    };
    plugins::event::CheckinEvent {
        event_id: event_id.to_string(),
        kind: convert::checkin_kind(&msg.payload),
        enrollment: convert::enrollment(&msg.enrollment),
        device: convert::device_facts(subject.device),
        token_update_count: count,
        awaiting_configuration: awaiting,
        raw: Some(msg.raw.clone()),
    }
}

/// Audit rows of plugins called for this message name its device and channel.
pub(super) fn scope_of<'a>(e: &'a EnrollmentRef, event_id: &'a str) -> EventScope<'a> {
    EventScope {
        event_id,
        device_id: Some(&e.device_id),
        enrollment_id: Some(&e.id),
    }
}

impl CheckinService {
    /// Run these plugins on a check-in event; a fail-closed refusal stops the message.
    pub(super) async fn ask(
        &self,
        listeners: &[Arc<LoadedPlugin>],
        event: plugins::event::CheckinEvent,
        scope: EventScope<'_>,
    ) -> Result<HookRun, CheckinError> {
        if listeners.is_empty() {
            return Ok(HookRun::default());
        }
        let input = HookInput::Checkin(event);
        let mut run = (self.plugins)
            .run_on(listeners, Hook::OnCheckin, input, scope)
            .await;
        self.refuse_if(&mut run).await?;
        Ok(run)
    }

    /// A fail-closed refusal is audited on its own (nothing else of the message is stored) and stops it.
    pub(super) async fn refuse_if(&self, run: &mut HookRun) -> Result<(), CheckinError> {
        let Some(reason) = run.refused.take() else {
            return Ok(());
        };
        let audit = std::mem::take(&mut run.audit);
        crate::storage::plugin_audit::insert_many(&self.storage, audit).await?;
        tracing::warn!(%reason, "refused by plugin policy");
        Err(CheckinError::PluginRefused(reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_follows_who_hears_the_message() {
        assert_eq!(path(false, false), Path::Unheard);
        assert_eq!(path(false, true), Path::UnlessFirstTokenUpdate);
        assert_eq!(path(true, false), Path::Heard);
        assert_eq!(path(true, true), Path::Heard);
    }
}
