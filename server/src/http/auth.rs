//! Admin API authentication: an API key as `Authorization: Bearer <key>`, `X-API-Key: <key>`, or the
//! password of HTTP basic auth (what NanoMDM tooling sends). The scope each endpoint needs is part of the
//! handler's signature (`Auth<CommandsWrite>`), so no handler can forget to check it.

use super::error::ApiError;
use super::AppState;
use crate::apikeys::{self, Principal, Scope};
use actix_web::dev::Payload;
use actix_web::http::header::AUTHORIZATION;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;

pub trait RequiredScope {
    const SCOPE: Scope;
}

macro_rules! scope_marker {
    ($name:ident, $scope:expr) => {
        pub struct $name;
        impl RequiredScope for $name {
            const SCOPE: Scope = $scope;
        }
    };
}
scope_marker!(DevicesRead, Scope::DevicesRead);
scope_marker!(CommandsRead, Scope::CommandsRead);
scope_marker!(CommandsWrite, Scope::CommandsWrite);
scope_marker!(Enroll, Scope::Enroll);
scope_marker!(DdmWrite, Scope::DdmWrite);
scope_marker!(GroupsWrite, Scope::GroupsWrite);
scope_marker!(PoliciesWrite, Scope::PoliciesWrite);
scope_marker!(Admin, Scope::Admin);

/// A request authenticated with a key holding scope `S`.
pub struct Auth<S: RequiredScope> {
    pub principal: Principal,
    _scope: PhantomData<S>,
}

impl<S: RequiredScope> Auth<S> {
    /// Who made a change, as the audit log names an admin: `api-key:<name>`.
    pub fn actor(&self) -> String {
        format!("api-key:{}", self.principal.name)
    }
}

fn presented_key(req: &HttpRequest) -> Option<String> {
    if let Some(v) = req.headers().get("X-API-Key").and_then(|v| v.to_str().ok()) {
        return Some(v.trim().to_string());
    }
    let auth = req.headers().get(AUTHORIZATION)?.to_str().ok()?.trim();
    if let Some(token) = auth.strip_prefix("Bearer ") {
        return Some(token.trim().to_string());
    }
    let basic = auth.strip_prefix("Basic ")?;
    let decoded = String::from_utf8(STANDARD.decode(basic.trim()).ok()?).ok()?;
    decoded.split_once(':').map(|(_, pw)| pw.to_string())
}

impl<S: RequiredScope + 'static> FromRequest for Auth<S> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let key = presented_key(req);
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let req = req.clone();
        Box::pin(async move {
            let state = state.ok_or(ApiError::Unauthorized)?;
            let key = key.ok_or(ApiError::Unauthorized)?;
            let principal = apikeys::authenticate(&state.storage, &key, state.clock.now_ms())
                .await?
                .ok_or(ApiError::Unauthorized)?;
            // For the audit log (refusals included): who asked.
            req.extensions_mut().insert(principal.clone());
            if !principal.has(S::SCOPE) {
                return Err(ApiError::Forbidden(S::SCOPE.as_str()));
            }
            Ok(Auth {
                principal,
                _scope: PhantomData,
            })
        })
    }
}
