//! `POST /api/config/reload` (admin): re-read the config file and apply it without
//! dropping viewers (`crate::reload`). An invalid file is refused with every problem
//! and the running config stays.

use std::sync::Arc;

use axum::extract::Request;
use axum::routing::post;
use axum::{Json, Router};

use super::access::Admin;
use super::AppState;
use crate::http::error::{AppError, ErrorBody};
use crate::reload::{ReloadError, Reloaded, Reloader};

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/config/reload", post(reload))
}

/// The reload operation, for `/api/openapi.json`.
#[derive(utoipa::OpenApi)]
#[openapi(paths(reload), components(schemas(Reloaded)))]
pub(crate) struct Doc;

/// Reloads the config file the server started with (admin). New requests use the new
/// config at once; running streams continue. Settings bound at start keep their
/// running value and are listed in `restart_required`.
#[utoipa::path(
    post,
    path = "/api/config/reload",
    tag = "config",
    security(("admin" = [])),
    responses(
        (status = 200, description = "The new config applies to new requests", body = Reloaded),
        (status = 401, description = "An admin token is set and none was given", body = ErrorBody),
        (status = 403, description = "Wrong admin token; no token set and the caller is not on loopback; a cross-site call (`Origin`, `Sec-Fetch-Site`); or a `Host` that is not one of freesky's names", body = ErrorBody),
        (status = 422, description = "The file does not load; nothing changed. `detail` lists every problem as `file:line: field: message`", body = ErrorBody),
        (status = 500, description = "The new state could not be built (proxy key or store); nothing changed", body = ErrorBody)
    )
)]
async fn reload(_admin: Admin, req: Request) -> Result<Json<Reloaded>, AppError> {
    // Put there by the connection serving the request (`crate::reload::Conn`); absent
    // only when the Router is served some other way (a test calling `app` directly).
    let reloader = req
        .extensions()
        .get::<Arc<Reloader>>()
        .cloned()
        .ok_or_else(|| AppError::Internal("this server was not started with reload".into()))?;
    match reloader.reload() {
        Ok(r) => Ok(Json(r)),
        Err(ReloadError::Config(e)) => Err(AppError::InvalidConfig(e)),
        Err(ReloadError::Build(e)) => Err(AppError::Internal(e)),
    }
}
