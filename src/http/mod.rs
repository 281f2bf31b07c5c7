//! The HTTP surface: `app(state)` builds the router; each file owns one area and
//! exposes `routes()`. Handlers return `Result<_, AppError>` and never pick a status
//! for an error themselves. Who may call what (the Host and cross-site checks, the
//! `Admin` extractor) is `access`.

use std::sync::Arc;

use axum::http::{header, HeaderMap};
use axum::Router;

pub use crate::app::AppState;
use crate::config::Config;

mod access;
mod api;
mod channels_page;
mod dashboard;
pub mod error;
pub(crate) mod forwarded;
mod guide;
mod guide_matches;
pub mod hdhr;
pub mod logos;
pub mod media;
mod metrics;
mod openapi;
mod playlist;
mod ready;
pub(crate) mod reload;
mod stream;
pub mod timeshift;
mod users;
mod viewer;
pub(crate) mod vod;
mod xtream;

/// Gzip for a big listing (a playlist, the tuner's lineup, an Xtream list: megabytes
/// for 10,000 channels) when the client's `Accept-Encoding` takes it. Per route, never
/// on a stream's: its default would compress video too.
fn gzipped() -> tower_http::compression::CompressionLayer {
    tower_http::compression::CompressionLayer::new()
        .gzip(true)
        .quality(tower_http::CompressionLevel::Fastest)
}

pub fn app(state: AppState) -> Router {
    let access = Arc::new(access::Access::new(&state.config));
    let router = Router::new()
        .merge(api::routes())
        .merge(channels_page::routes())
        .merge(dashboard::routes())
        .merge(stream::routes())
        .merge(timeshift::routes())
        .merge(playlist::routes())
        .merge(hdhr::routes())
        .merge(guide::routes())
        .merge(logos::routes())
        .merge(guide_matches::routes())
        .merge(metrics::routes())
        .merge(openapi::routes())
        .merge(reload::routes())
        .merge(users::routes())
        .merge(xtream::routes())
        .merge(vod::routes())
        .merge(ready::routes())
        .fallback(xtream::fallback)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            viewer::lineup_api_guard,
        ))
        .layer(axum::middleware::from_fn(json_errors))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            ready::refuse_new_streams_while_draining,
        ))
        // Refused hosts and cross-site calls are counted too.
        .layer(axum::middleware::from_fn_with_state(access, access::guard));
    // Before everything that reads the client's address; only when some proxy is
    // trusted (a layer costs every request).
    let router = if state.config.server.trusted_proxies.is_empty() {
        router
    } else {
        router.layer(axum::middleware::from_fn_with_state(
            Arc::new(forwarded::Trusted::new(
                &state.config.server.trusted_proxies,
            )),
            forwarded::layer,
        ))
    };
    router
        .layer(axum::middleware::from_fn(metrics::count))
        // Outermost: oversized requests are refused before routing and counting.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::limits::check,
        ))
        .with_state(state)
}

/// The errors axum answers by itself (a query string that does not parse: plain
/// text; a method a path does not take: 405 with no body) in the JSON error body
/// every other error has.
async fn json_errors(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    let method = req.method().clone();
    // The route, not the path: Xtream paths carry a viewer's password.
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched".to_string(), |m| m.as_str().to_string());
    let resp = crate::http::error::viewer_body(next.run(req)).await;
    let status = resp.status();
    if let Some(crate::http::error::Failed(error)) = resp.extensions().get() {
        tracing::warn!(status = status.as_u16(), %method, %route, %error, "request failed");
    }
    let plain = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("text/plain"));
    if !status.is_client_error() || !(plain || status == StatusCode::METHOD_NOT_ALLOWED) {
        return resp;
    }
    let text = axum::body::to_bytes(resp.into_body(), 16 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = match (text.is_empty(), status) {
        // The router adds the `Allow` header after this layer.
        (true, StatusCode::METHOD_NOT_ALLOWED) => {
            format!("this path does not take {method} (the Allow header lists what it takes)")
        }
        (true, _) => status
            .canonical_reason()
            .unwrap_or("refused")
            .to_lowercase(),
        (false, _) => text,
    };
    (
        status,
        axum::Json(serde_json::json!({ "error": message, "detail": null })),
    )
        .into_response()
}

/// The base URL clients reach us at: `server.public_url`, else `http://<Host>`, else
/// (an HTTP/1.0 request without one) `own_base_url`.
pub fn base_url(config: &Config, headers: &HeaderMap) -> String {
    if let Some(u) = public_url(config) {
        return u;
    }
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        // A Host header is client input: keep only what a host[:port] may contain.
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        })
        .map_or_else(|| own_base_url(config), |host| format!("http://{host}"))
}

/// `server.public_url` without its trailing slash, when set.
fn public_url(config: &Config) -> Option<String> {
    config
        .server
        .public_url
        .as_deref()
        .filter(|u| !u.is_empty())
        .map(|u| u.trim_end_matches('/').to_string())
}

/// The base URL freesky is reached at when no request says it (`freesky playlist`):
/// `server.public_url`, else `http://` and the bind address, an unspecified one
/// (`0.0.0.0`, `[::]`) read as this machine's loopback.
pub fn own_base_url(config: &Config) -> String {
    if let Some(u) = public_url(config) {
        return u;
    }
    match config.server.bind.parse::<std::net::SocketAddr>() {
        Ok(a) if a.ip().is_unspecified() => {
            let loopback: std::net::IpAddr = if a.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            };
            format!("http://{}", std::net::SocketAddr::new(loopback, a.port()))
        }
        Ok(a) => format!("http://{a}"),
        Err(_) => format!("http://{}", config.server.bind),
    }
}

/// The merged M3U playlist of `lineup` with stream links under `base` (for `freesky playlist`).
pub fn render_playlist(lineup: &crate::lineup::Lineup, base: &str) -> String {
    playlist::render(lineup, base, &playlist::Filter::default())
}
