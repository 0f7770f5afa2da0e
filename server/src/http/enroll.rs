//! `/enroll`: the signed enrollment profile. GET (optionally `?token=`), or POST with the device's signed
//! device information as the body (Automated Device Enrollment); GET may carry it in
//! `x-apple-aspen-deviceinfo`.

use super::{peer, AppState};
use crate::enroll::{machine_info, profile, EnrollError, MachineInfoError, ProfileRequest};
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use base64::Engine as _;
use serde::Deserialize;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Anonymous downloads per client address and minute. Each download signs a profile and stores a
/// challenge, so one address must not take them all (`enroll.max_anonymous_challenges` bounds everyone).
/// The address is the TCP peer, or the one a trusted proxy forwarded (`peer::client_ip`); IPv6 clients
/// count by /64, the block one host usually holds. Per replica, in memory.
pub struct ClientRate {
    per_minute: u32,
    window: Mutex<(Instant, HashMap<IpAddr, u32>)>,
}

/// Addresses remembered per window at most: past it, new addresses are refused until the window turns,
/// so a flood from many addresses costs memory only up to this.
const MAX_CLIENTS: usize = 100_000;
const WINDOW: Duration = Duration::from_secs(60);

impl ClientRate {
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            window: Mutex::new((Instant::now(), HashMap::new())),
        }
    }

    /// Count one download from `client`: Err(seconds until the window turns) when over the limit.
    fn take(&self, client: Option<IpAddr>) -> Result<(), u64> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let key = match client {
            Some(IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_none() => {
                IpAddr::V6((v6.to_bits() & !((1u128 << 64) - 1)).into())
            }
            Some(ip) => ip.to_canonical(),
            None => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        };
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if now.duration_since(w.0) >= WINDOW {
            *w = (now, HashMap::new());
        }
        let retry = (WINDOW.saturating_sub(now.duration_since(w.0)).as_secs()).max(1);
        if w.1.len() >= MAX_CLIENTS && !w.1.contains_key(&key) {
            return Err(retry);
        }
        let n = w.1.entry(key).or_insert(0);
        if *n >= self.per_minute {
            return Err(retry);
        }
        *n += 1;
        Ok(())
    }
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/enroll", web::get().to(get))
        .route("/enroll", web::post().to(post));
}

#[derive(Deserialize)]
struct Query {
    token: Option<String>,
}

async fn get(
    req: HttpRequest,
    q: Result<web::Query<Query>, actix_web::Error>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, EnrollError> {
    let token = q.ok().and_then(|q| q.into_inner().token);
    let info = match req.headers().get(machine_info::HEADER) {
        Some(v) => {
            let der = v
                .to_str()
                .ok()
                .and_then(|s| {
                    base64::engine::general_purpose::STANDARD
                        .decode(s.trim())
                        .ok()
                })
                .ok_or_else(|| EnrollError::MachineInfo(MachineInfoError::HeaderNotBase64))?;
            Some(machine_info::decode(&der).map_err(EnrollError::MachineInfo)?)
        }
        None => None,
    };
    serve(&req, token, info, &state).await
}

async fn post(
    req: HttpRequest,
    q: Result<web::Query<Query>, actix_web::Error>,
    body: Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, EnrollError> {
    let token = q.ok().and_then(|q| q.into_inner().token);
    let info = machine_info::decode(&body).map_err(EnrollError::MachineInfo)?;
    serve(&req, token, Some(info), &state).await
}

async fn serve(
    req: &HttpRequest,
    token: Option<String>,
    machine_info: Option<machine_info::MachineInfo>,
    state: &AppState,
) -> Result<HttpResponse, EnrollError> {
    // The profile's URLs are the server's own (`EnrollService::base_url`): `Host`, `X-Forwarded-Host` and
    // `Forwarded` are not read here. Forwarding headers only tell, from a trusted proxy, who the client is.
    if token.is_none() {
        let client = peer::client_ip(
            req.peer_addr().map(|a| a.ip()),
            req.headers(),
            &state.trusted_proxies,
        );
        if let Err(retry_after_secs) = state.enroll_rate.take(client) {
            tracing::warn!(
                ?client,
                "anonymous enrollment downloads over the per-client limit"
            );
            return Err(EnrollError::RateLimited { retry_after_secs });
        }
    }
    let signed = state
        .enroll
        .profile(ProfileRequest {
            token,
            machine_info,
        })
        .await?;
    Ok(HttpResponse::Ok()
        .content_type(profile::CONTENT_TYPE)
        .insert_header((
            "Content-Disposition",
            "attachment; filename=\"enroll.mobileconfig\"",
        ))
        .body(signed))
}
