//! `GET /metrics` (Prometheus text) and the middleware counting every request by
//! route template. Public like `/health`: it holds service names, channel ids and
//! counts, no URLs, tokens or credentials.

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::AppState;
use crate::metrics;

pub fn routes() -> Router<AppState> {
    Router::new().route("/metrics", get(scrape))
}

/// The metrics' operation, for `/api/openapi.json` (`super::openapi`).
#[derive(utoipa::OpenApi)]
#[openapi(paths(scrape))]
pub(crate) struct Doc;

/// Prometheus text exposition of freesky's counters and gauges.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "meta",
    responses((status = 200, description = "Prometheus text format 0.0.4", body = String, content_type = "text/plain"))
)]
async fn scrape(State(s): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        metrics::render(&now(&s)),
    )
        .into_response()
}

/// What the scrape reads from the running server.
fn now(s: &AppState) -> metrics::Now {
    metrics::Now {
        services: s
            .registry
            .status()
            .into_iter()
            .map(|st| {
                let guide = s
                    .guides
                    .status_of(&st.name)
                    .map(|g| g.last_error.is_none() && g.last_ok.is_some());
                (st.name, st.circuit, guide)
            })
            .collect(),
        ts_sessions: s.sessions.active(),
        hls_viewers: s.sessions.hls.counts().into_iter().collect(),
        started: s.readiness.is_started() && !s.readiness.is_draining(),
        lineup_channels: s.registry.last_lineup().map(|l| l.channels.len()),
        tuners: s
            .config
            .hdhomerun
            .enabled
            .then(|| (s.tuner.slots.in_use(), s.config.hdhomerun.tuner_count)),
    }
}

/// Counts the request under its route template (`/proxy/{token}/{item}/{name}`),
/// never the raw path, so the label stays bounded; "unmatched" for the fallback.
pub async fn count(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string());
    let resp = next.run(req).await;
    metrics::get().http_request(
        route.as_deref().unwrap_or("unmatched"),
        resp.status().as_u16(),
    );
    resp
}
