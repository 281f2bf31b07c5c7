//! The HTTP surface: `app(state)` builds the router; each file owns one area and
//! exposes `routes()`. Handlers return `Result<_, AppError>` and never pick a status
//! for an error themselves.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ConnectInfo;
use axum::http::{header, HeaderMap, Request};
use axum::Router;

use crate::config::Config;
use crate::error::AppError;
use crate::proxy::Signer;
use crate::services::registry::Registry;

mod api;
mod dashboard;
mod guide;
pub mod hdhr;
mod metrics;
mod openapi;
mod playlist;
pub(crate) mod reload;
mod stream;

/// Everything a handler needs. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub registry: Arc<Registry>,
    pub guides: Arc<crate::guide::Guides>,
    pub signer: Arc<Signer>,
    pub media: Arc<crate::cache::MediaCache>,
    pub sessions: Arc<crate::session::Sessions>,
    pub failovers: Arc<crate::failover::Failovers>,
    pub tuner: Arc<hdhr::Tuner>,
}

pub fn app(state: AppState) -> Router {
    Router::new()
        .merge(api::routes())
        .merge(dashboard::routes())
        .merge(stream::routes())
        .merge(playlist::routes())
        .merge(hdhr::routes())
        .merge(guide::routes())
        .merge(metrics::routes())
        .merge(openapi::routes())
        .merge(reload::routes())
        .fallback(|uri: axum::http::Uri| async move {
            stream::unrouted(uri.path())
                .unwrap_or_else(|| AppError::NotFound("no such endpoint".into()))
        })
        .layer(axum::middleware::from_fn(metrics::count))
        // Outermost: oversized requests are refused before routing and counting.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::limits::check,
        ))
        .with_state(state)
}

/// The base URL clients reach us at: `server.public_url`, else `http://<Host>`.
pub fn base_url(config: &Config, headers: &HeaderMap) -> String {
    if let Some(u) = config
        .server
        .public_url
        .as_deref()
        .filter(|u| !u.is_empty())
    {
        return u.trim_end_matches('/').to_string();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        // A Host header is client input: keep only what a host[:port] may contain.
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        })
        .unwrap_or("127.0.0.1:8005");
    format!("http://{host}")
}

/// Admin calls need the bearer token when one is set, else must come from loopback.
pub fn check_admin<B>(config: &Config, req: &Request<B>) -> Result<(), AppError> {
    let token = config.server.admin_token.expose();
    if !token.is_empty() {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                AppError::Unauthorized(
                    "admin calls need `Authorization: Bearer <admin_token>`".into(),
                )
            })?;
        if !constant_time_eq(given.trim().as_bytes(), token.as_bytes()) {
            return Err(AppError::Forbidden("wrong admin token".into()));
        }
        return Ok(());
    }
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    match peer {
        Some(ip) if ip.is_loopback() => Ok(()),
        _ => Err(AppError::Forbidden(
            "admin calls are accepted from loopback only when no admin_token is set".into(),
        )),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The merged M3U playlist of `lineup` with stream links under `base` (for `freesky playlist`).
pub fn render_playlist(lineup: &crate::lineup::Lineup, base: &str) -> String {
    playlist::render(lineup, base, &playlist::Filter::default())
}
