//! Device endpoints: `PUT /mdm/checkin`, `PUT /mdm/connect`, and `PUT /mdm` for devices configured with
//! only a ServerURL (dispatched on the check-in content type).

use super::error::DeviceError;
use super::tls::TlsPeer;
use super::AppState;
use crate::checkin::MdmResponse;
use crate::identity::{self, DeviceCert};
use crate::protocol::CHECKIN_CONTENT_TYPE;
use actix_web::http::header::CONTENT_TYPE;
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/mdm/checkin", web::put().to(checkin))
        .route("/mdm/connect", web::put().to(connect))
        .route("/mdm", web::put().to(server_url));
}

async fn checkin(
    req: HttpRequest,
    body: Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, DeviceError> {
    let cert = device_identity(&req, &body, &state)?;
    Ok(render(state.checkin.checkin(&cert, &body).await?))
}

async fn connect(
    req: HttpRequest,
    body: Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, DeviceError> {
    let cert = device_identity(&req, &body, &state)?;
    Ok(render(state.checkin.report(&cert, &body).await?))
}

async fn server_url(
    req: HttpRequest,
    body: Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, DeviceError> {
    let is_checkin = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.trim().starts_with(CHECKIN_CONTENT_TYPE));
    if is_checkin {
        checkin(req, body, state).await
    } else {
        connect(req, body, state).await
    }
}

/// The device's identity certificate, in order of trust: the TLS client certificate when the server
/// terminates TLS itself (required then), else a trusted proxy's header when configured, then the
/// `Mdm-Signature` over the exact body. Whichever it is must be one the server trusts to act as a device.
fn device_identity(
    req: &HttpRequest,
    body: &[u8],
    state: &AppState,
) -> Result<DeviceCert, DeviceError> {
    let cert = presented_certificate(req, body, state)?;
    state.trust.check(&cert, state.clock.now_ms() / 1000)?;
    Ok(cert)
}

fn presented_certificate(
    req: &HttpRequest,
    body: &[u8],
    state: &AppState,
) -> Result<DeviceCert, DeviceError> {
    if let Some(peer) = req.conn_data::<TlsPeer>() {
        let der = peer
            .certificate
            .as_deref()
            .ok_or(DeviceError::ClientCertificateRequired)?;
        return Ok(DeviceCert::from_der(der)?);
    }
    // Only a trusted proxy's word: from anyone else the header is whatever certificate they chose.
    if let Some(name) = state.proxy_cert_header.as_ref().filter(|_| {
        state
            .trusted_proxies
            .trusts(req.peer_addr().map(|a| a.ip()))
    }) {
        if let Some(v) = req.headers().get(name) {
            let v = v.to_str().map_err(|_| DeviceError::MissingIdentity)?;
            return Ok(identity::parse_client_cert_header(v)?);
        }
    }
    match req.headers().get("Mdm-Signature") {
        Some(sig) => {
            let sig = sig.to_str().map_err(|_| DeviceError::MissingIdentity)?;
            Ok(state.signatures.verify(sig, body)?)
        }
        None => Err(DeviceError::MissingIdentity),
    }
}

fn render(r: MdmResponse) -> HttpResponse {
    match r {
        MdmResponse::Empty => HttpResponse::Ok().finish(),
        MdmResponse::Plist(body) => HttpResponse::Ok()
            .content_type("application/xml; charset=utf-8")
            .body(body),
        MdmResponse::Json(body) => HttpResponse::Ok()
            .content_type("application/json")
            .body(body),
    }
}
