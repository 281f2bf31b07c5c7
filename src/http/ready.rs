//! `GET /ready`: whether a load balancer should send new viewers to this instance
//! (`crate::ready` says when it is not), and the guard that refuses new streams
//! while the instance drains.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::AppState;
use crate::http::error::{AppError, ErrorBody};

pub fn routes() -> Router<AppState> {
    Router::new().route("/ready", get(ready))
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(ready))]
pub(crate) struct Doc;

/// Readiness: 200 `{"status": "ready"}`, or 503 with an `ErrorBody` saying why and
/// `status` `starting` (the first lineup load is not done), `draining` (stopping: new
/// streams go elsewhere) or `store_unavailable` (the state store does not answer, or its SQLite file was deleted
/// or replaced).
#[utoipa::path(
    get,
    path = "/ready",
    tag = "meta",
    responses(
        (status = 200, description = "Ready for new viewers", body = inline(ReadyBody)),
        (status = 503, description = "Starting, draining, or without its state store; \
            `status` (beside `error` and `detail`) says which", body = ErrorBody)
    )
)]
async fn ready(State(state): State<AppState>) -> Response {
    let r = &state.readiness;
    let not = |status: &str, error: String| {
        let body = json!({ "error": error, "detail": null, "status": status });
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    };
    if r.is_draining() {
        return not(
            "draining",
            "stopping: new viewers go to another instance".into(),
        );
    }
    if !r.is_started() {
        return not("starting", "starting: the lineup is not loaded yet".into());
    }
    if let Err(e) = state.registry.store().ping().await {
        return not("store_unavailable", e.to_string());
    }
    Json(json!({ "status": "ready" })).into_response()
}

/// `/ready`'s body when ready (documentation only: the handler writes it with `json!`).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct ReadyBody {
    /// `ready`.
    status: String,
}

/// While draining, a request that would open a new stream is refused (503), so a
/// balancer retries it on another instance; everything else, the links of players
/// already playing included, is served as usual.
pub(super) async fn refuse_new_streams_while_draining(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    if state.readiness.is_draining() && crate::ready::opens_stream(req.uri().path()) {
        return AppError::Busy(
            "this instance is stopping: try again (another instance will answer)".into(),
        )
        .into_response();
    }
    next.run(req).await
}
