//! `/enroll`: the signed enrollment profile. GET (optionally `?token=`), or POST with the device's signed
//! device information as the body (Automated Device Enrollment); GET may carry it in
//! `x-apple-aspen-deviceinfo`.

use super::AppState;
use crate::enroll::{machine_info, profile, EnrollError, ProfileRequest};
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use base64::Engine as _;
use serde::Deserialize;

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
                .ok_or_else(|| EnrollError::MachineInfo("header is not base64".into()))?;
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
    let request_base_url = {
        let conn = req.connection_info();
        format!("{}://{}", conn.scheme(), conn.host())
    };
    let signed = state
        .enroll
        .profile(ProfileRequest {
            request_base_url,
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
