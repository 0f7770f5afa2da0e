//! The SCEP endpoint (`/scep`, also `/scep/pkiclient.exe` as some clients append it): GetCACaps,
//! GetCACert, and PKIOperation by GET (base64 `message`) or POST (DER body).

use super::AppState;
use crate::scep::{ScepError, CA_CAPS};
use actix_web::web::{self, Bytes};
use actix_web::HttpResponse;
use base64::Engine as _;
use serde::Deserialize;

pub fn routes(cfg: &mut web::ServiceConfig) {
    for path in ["/scep", "/scep/pkiclient.exe"] {
        cfg.route(path, web::get().to(get))
            .route(path, web::post().to(post));
    }
}

#[derive(Deserialize)]
struct Query {
    operation: Option<String>,
    message: Option<String>,
}

const PKI_MESSAGE: &str = "application/x-pki-message";

fn bad(msg: &str) -> HttpResponse {
    HttpResponse::BadRequest()
        .content_type("text/plain; charset=utf-8")
        .body(msg.to_string())
}

async fn get(
    q: Result<web::Query<Query>, actix_web::Error>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ScepError> {
    let Ok(q) = q else {
        return Ok(bad("malformed query"));
    };
    match q.operation.as_deref() {
        Some("GetCACaps") => Ok(HttpResponse::Ok().content_type("text/plain").body(CA_CAPS)),
        Some("GetCACert") => {
            let (content_type, body) = state
                .scep
                .ca_cert_response()
                .map_err(|e| ScepError::Reply(e.to_string()))?;
            Ok(HttpResponse::Ok().content_type(content_type).body(body))
        }
        Some("PKIOperation") => {
            let Some(m) = q.message.as_deref() else {
                return Ok(bad("PKIOperation needs a message"));
            };
            // A '+' may arrive as a space when the client did not escape it.
            let b64: String = m
                .chars()
                .filter(|c| !matches!(c, '\r' | '\n'))
                .map(|c| if c == ' ' { '+' } else { c })
                .collect();
            let Ok(der) = base64::engine::general_purpose::STANDARD.decode(b64) else {
                return Ok(bad("message is not base64"));
            };
            pki(&der, &state).await
        }
        Some(op) => Ok(bad(&format!("unsupported operation {op:?}"))),
        None => Ok(bad("missing operation")),
    }
}

async fn post(
    q: Result<web::Query<Query>, actix_web::Error>,
    body: Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ScepError> {
    match q.as_ref().ok().and_then(|q| q.operation.as_deref()) {
        Some("PKIOperation") => pki(&body, &state).await,
        _ => Ok(bad("POST supports operation=PKIOperation only")),
    }
}

async fn pki(der: &[u8], state: &AppState) -> Result<HttpResponse, ScepError> {
    let reply = state.scep.pki_operation(der).await?;
    Ok(HttpResponse::Ok().content_type(PKI_MESSAGE).body(reply))
}
