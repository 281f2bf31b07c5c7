//! The `Viewer` extractor: with `server.require_account`, the viewer account a request
//! logs in as (`?username=&password=`, else HTTP basic auth) on the routes that were
//! open on the LAN (`/playlist.m3u`, `/epg.xml`, `/api/stream/...`); without it,
//! nobody (`Viewer(None)`: those routes behave as before), nor with it for a request
//! carrying the admin token and no login. Wrong logins are 401 and count towards the
//! address's login penalty.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Query};
use axum::http::header;
use axum::http::request::Parts;
use base64::Engine;

use super::access::peer;
use super::AppState;
use crate::accounts::{self, Account};
use crate::http::error::AppError;

pub struct Viewer(pub Option<Login>);

/// The routes whose handlers take a [`Viewer`], as the OpenAPI document writes them
/// (`openapi::build` lists their 401 and 403).
pub(super) const ROUTES: &[&str] = &[
    "/playlist.m3u",
    "/playlist.m3u8",
    "/epg.xml",
    "/epg.xml.gz",
    "/api/stream/{file}",
    "/api/timeshift/{file}",
    "/api/movies",
    "/api/movies/{id}",
    "/api/series",
    "/api/series/{id}",
    "/api/movie/{id}",
    "/api/episode/{id}",
    "/vod.m3u",
];

/// A logged-in viewer; the password as given, so the links of its own playlist can
/// carry it (players send no basic auth on stream URLs).
pub struct Login {
    pub account: Arc<Account>,
    pub password: String,
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, AppError> {
        if !s.config.server.require_account {
            return Ok(Viewer(None));
        }
        let Some((user, password)) = credentials(parts) else {
            // The admin token (the dashboard's lists and player) sees and plays every
            // channel, uncounted, as without `require_account`. Loopback without a
            // token does not: behind a reverse proxy on the same box every viewer
            // would come from loopback.
            if super::access::carries_admin_token(s, &parts.headers, peer(parts)).await? {
                return Ok(Viewer(None));
            }
            return Err(AppError::Unauthorized(
                "this server needs a viewer account: add ?username=...&password=... or use \
                 HTTP basic auth"
                    .into(),
            ));
        };
        let account = s.accounts.login(&user, &password, peer(parts)).await?;
        account.usable(accounts::now())?;
        crate::http::error::answering_a_viewer();
        Ok(Viewer(Some(Login { account, password })))
    }
}

/// The login a request carries: `username` and `password` query parameters, else an
/// `Authorization: Basic` header.
pub fn credentials(parts: &Parts) -> Option<(String, String)> {
    if let Ok(Query(q)) = Query::<HashMap<String, String>>::try_from_uri(&parts.uri) {
        if let (Some(u), Some(p)) = (q.get("username"), q.get("password")) {
            return Some((u.clone(), p.clone()));
        }
    }
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = super::access::scheme_value(value, "Basic")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

/// True for the JSON routes that show the lineup, the services or the guide's state,
/// or play a channel upstream (`POST /api/channels/{id}/test`): open on the LAN
/// without `require_account`, an admin's (the dashboard's) with it.
pub(super) fn is_lineup_api(path: &str) -> bool {
    path == "/api/channels"
        || path.starts_with("/api/channels/")
        || path == "/api/services/status"
        || path.starts_with("/api/guide/")
        || path == "/api/tuners"
        || path.starts_with("/api/tuners/")
}

/// With `server.require_account`, the lineup API (`is_lineup_api`) answers the admin
/// only (the admin token, or loopback without one): it lists every channel, whatever
/// an account may see. Without it, nothing changes.
pub async fn lineup_api_guard(
    axum::extract::State(s): axum::extract::State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if !s.config.server.require_account || !is_lineup_api(req.uri().path()) {
        return next.run(req).await;
    }
    let (mut parts, body) = req.into_parts();
    if let Err(e) = super::access::Admin::from_request_parts(&mut parts, &s).await {
        return e.into_response();
    }
    next.run(axum::extract::Request::from_parts(parts, body))
        .await
}
