//! Apple's check-in and command-report semantics. A message is a short pipeline:
//!
//! 1. **decode** (`protocol`: bounded, identifiers checked);
//! 2. **authorize**: the sender must present the identity bound to its device ([`authorize`]; at
//!    Authenticate, the rules for who may take a new identity);
//! 3. **ask plugins** that hear it ([`listeners`]), outside any transaction;
//! 4. **commit**: authorize again, apply the message ([`apply`], writing through `storage::checkin`) and the
//!    plugins' actions, in one transaction.
//!
//! The fast paths skip steps under rules of their own, all in [`fast_paths`]. Authenticate and reports have
//! their own files. The HTTP layer hands over the device's identity certificate (already verified, from the
//! body's signature, TLS or a trusted proxy) and the raw body; nothing here knows HTTP.

mod apply;
mod authenticate;
mod authorize;
mod declarative;
mod error;
mod fast_paths;
mod listeners;
mod report;

pub use error::CheckinError;
pub use fast_paths::SEEN_RESOLUTION_MS;

use crate::clock::SharedClock;
use crate::config::UserAuthenticatePolicy;
use crate::identity::DeviceCert;
use crate::metrics::Metrics;
use crate::plugins::{self, Hook, HookRun, PluginHost};
use crate::protocol::{CheckinMessage, CheckinPayload};
use crate::storage::checkin::{self as store, TokenUpdateGuard};
use crate::storage::Storage;
use fast_paths::LastSeen;
use listeners::{scope_of, Hearing, Path};
use std::sync::Arc;

/// What to send back to the device.
#[derive(Debug, Clone, PartialEq)]
pub enum MdmResponse {
    /// 200 with an empty body.
    Empty,
    /// 200 with a plist body.
    Plist(Vec<u8>),
    /// 200 with a JSON body (Declarative Device Management).
    Json(Vec<u8>),
}

pub struct CheckinService {
    storage: Storage,
    clock: SharedClock,
    metrics: Arc<Metrics>,
    user_authenticate: UserAuthenticatePolicy,
    plugins: Arc<PluginHost>,
    repush_interval_ms: i64,
}

impl CheckinService {
    pub fn new(
        storage: Storage,
        clock: SharedClock,
        metrics: Arc<Metrics>,
        user_authenticate: UserAuthenticatePolicy,
        plugins: Arc<PluginHost>,
        repush_interval_ms: i64,
    ) -> Self {
        Self {
            storage,
            clock,
            metrics,
            user_authenticate,
            plugins,
            repush_interval_ms,
        }
    }

    /// A check-in message (Authenticate, TokenUpdate, ...).
    #[tracing::instrument(name = "checkin", level = "debug", skip_all, fields(message_type))]
    pub async fn checkin(
        &self,
        cert: &DeviceCert,
        body: &[u8],
    ) -> Result<MdmResponse, CheckinError> {
        let started = std::time::Instant::now();
        let msg = match CheckinMessage::decode(body) {
            Ok(m) => m,
            Err(e) => {
                self.metrics.checkin("invalid", "400");
                return Err(e.into());
            }
        };
        let kind = msg.payload.message_type();
        tracing::Span::current().record("message_type", kind);
        let res = match &msg.payload {
            CheckinPayload::Authenticate(a) => self.authenticate(cert, &msg, a).await,
            CheckinPayload::DeclarativeManagement { endpoint, data } => {
                self.declarative(cert, &msg, endpoint.as_deref(), data.as_deref())
                    .await
            }
            CheckinPayload::GetToken { token_service_type } => {
                self.get_token(cert, &msg, token_service_type.as_deref())
                    .await
            }
            _ => self.message(cert, Arc::new(msg)).await,
        };
        let outcome = error::outcome(&res);
        self.metrics.checkin(kind, outcome);
        (self.metrics).checkin_handled(kind, started.elapsed().as_secs_f64());
        if kind == "Authenticate" {
            let failure = (outcome != "ok").then_some(outcome);
            self.metrics.enrollment_step("authenticate", failure);
        }
        res
    }

    /// Any other check-in message: who hears it decides the path.
    async fn message(
        &self,
        cert: &DeviceCert,
        msg: Arc<CheckinMessage>,
    ) -> Result<MdmResponse, CheckinError> {
        let now = self.clock.now_ms();
        let event_id = plugins::new_event_id();
        let hearing = Hearing::of(&self.plugins, &msg.payload);
        match (hearing.path(), &msg.payload) {
            (Path::Unheard, _) => {
                let unread = None;
                let nothing = HookRun::default();
                return self
                    .commit(cert, &msg, unread, nothing, now, &event_id)
                    .await;
            }
            (Path::UnlessFirstTokenUpdate, CheckinPayload::TokenUpdate(t)) => {
                if let Some(done) = self.repeated_token_update(cert, &msg, t, now).await? {
                    return Ok(done);
                }
            }
            _ => {}
        }
        // Plugins hear it: one point read off the writer for their event, identity checked. The commit
        // checks it again (a TokenUpdate's in its one UPDATE).
        let e = &msg.enrollment;
        let subject = authorize::sender(&self.storage.read(), cert.fingerprint(), e).await?;
        let seen_at = subject.last_seen_at;
        let listeners = hearing.listeners(listeners::is_first_token_update(&msg.payload, &subject));
        let event = listeners::checkin_event(&msg, subject, &event_id);
        let run = self.ask(&listeners, event, scope_of(e, &event_id)).await?;
        self.commit(cert, &msg, Some(seen_at), run, now, &event_id)
            .await
    }

    /// Store the message and its plugins' actions in one transaction. `sender_seen_at`: the sender as the
    /// plugins' event read found it (identity checked), when it was read. Without a read the sender is
    /// authorized in the transaction; with one, a TokenUpdate on a known channel is one statement that
    /// checks the identity itself (anything else it does not match takes the authorized way).
    async fn commit(
        &self,
        cert: &DeviceCert,
        msg: &Arc<CheckinMessage>,
        sender_seen_at: Option<i64>,
        run: HookRun,
        now: i64,
        event_id: &str,
    ) -> Result<MdmResponse, CheckinError> {
        let next_push_at = now + self.repush_interval_ms;
        let plugins = self.plugins.clone();
        let policy = self.user_authenticate;
        let fingerprint = cert.fingerprint().to_string();
        let (msg, event_id) = (msg.clone(), event_id.to_string());
        let (response, events) = self
            .storage
            .transaction(move |txn| {
                Box::pin(async move {
                    let e = &msg.enrollment;
                    let stored_bound = match (&msg.payload, sender_seen_at) {
                        (CheckinPayload::TokenUpdate(t), Some(_)) => {
                            let guard = TokenUpdateGuard::BoundTo(&fingerprint);
                            apply::token_update(txn, e, t, &msg.raw, guard, now, next_push_at)
                                .await?
                        }
                        _ => false,
                    };
                    let (response, device_seen_at) = if stored_bound {
                        (MdmResponse::Empty, sender_seen_at)
                    } else {
                        let device = authorize::authorize(txn, &fingerprint, e).await?;
                        let response =
                            apply::message(txn, &msg, &device, policy, now, next_push_at).await?;
                        (response, Some(device.last_seen_at))
                    };
                    let last = LastSeen {
                        device: device_seen_at,
                        device_channel: None,
                    };
                    // A TokenUpdate has recorded its channel already.
                    let is_token_update = matches!(msg.payload, CheckinPayload::TokenUpdate(_));
                    let channel = (!is_token_update).then_some(next_push_at);
                    store::seen(txn, e, fast_paths::seen(e, last, now, channel), now).await?;
                    let scope = scope_of(e, &event_id);
                    let hook = Hook::OnCheckin.as_str();
                    let events = plugins.apply(txn, run, hook, scope, now).await?;
                    Ok::<_, CheckinError>((response, events))
                })
            })
            .await?;
        self.plugins.events_committed(events);
        Ok(response)
    }
}
