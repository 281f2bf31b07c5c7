//! The original design's JSON API: service status and switches, channel listing and
//! search; and freesky's channel mapping (`GET`/`PATCH /api/channels/{id}`).

use axum::extract::{Path, Query, Request, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{check_admin, AppState};
use crate::error::AppError;
use crate::model::{ChannelDetail, ChannelPatch, LineupChannel, ServiceStatus};

/// Largest `PATCH /api/channels/{id}` body read (a mapping is a few hundred bytes).
const MAX_PATCH_BYTES: usize = 64 * 1024;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(dashboard))
        .route("/health", get(health))
        .route("/api/services/status", get(status))
        .route("/api/services/{name}/enable", post(enable))
        .route("/api/services/{name}/disable", post(disable))
        .route("/api/channels/all", get(all_channels))
        .route("/api/channels/search", get(search))
        .route("/api/channels/{id}", get(channel).patch(map_channel))
}

/// A small page over the JSON API (static; the data is fetched by the browser).
async fn dashboard() -> axum::response::Html<&'static str> {
    axum::response::Html(include_str!("../../templates/index.html"))
}

async fn health() -> Json<Value> {
    Json(json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }))
}

async fn status(State(s): State<AppState>) -> Json<Vec<ServiceStatus>> {
    Json(s.registry.status())
}

async fn enable(
    State(s): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> Result<Json<ServiceStatus>, AppError> {
    check_admin(&s.config, &req)?;
    Ok(Json(s.registry.set_enabled(&name, true).await?))
}

async fn disable(
    State(s): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> Result<Json<ServiceStatus>, AppError> {
    check_admin(&s.config, &req)?;
    Ok(Json(s.registry.set_enabled(&name, false).await?))
}

async fn all_channels(State(s): State<AppState>) -> Result<Json<Vec<LineupChannel>>, AppError> {
    let lineup = s.registry.lineup().await?;
    Ok(Json(lineup.channels.clone()))
}

#[derive(Deserialize)]
struct SearchQuery {
    query: Option<String>,
    q: Option<String>,
}

async fn search(
    State(s): State<AppState>,
    Query(q): Query<SearchQuery>,
) -> Result<Json<Vec<LineupChannel>>, AppError> {
    let query = q.query.or(q.q).ok_or_else(|| {
        AppError::BadRequest(
            "missing `query` parameter, e.g. /api/channels/search?query=news".into(),
        )
    })?;
    let lineup = s.registry.lineup().await?;
    Ok(Json(lineup.search(&query).into_iter().cloned().collect()))
}

/// One channel with its mapping; hidden channels too (so they can be unhidden).
async fn channel(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ChannelDetail>, AppError> {
    Ok(Json(s.registry.channel(&id).await?))
}

/// Changes a channel's mapping (admin). The body is read by hand so that a malformed
/// one is a JSON 400 like every other error, naming what is wrong.
async fn map_channel(
    State(s): State<AppState>,
    Path(id): Path<String>,
    req: Request,
) -> Result<Json<ChannelDetail>, AppError> {
    check_admin(&s.config, &req)?;
    let body = axum::body::to_bytes(req.into_body(), MAX_PATCH_BYTES)
        .await
        .map_err(|e| AppError::BadRequest(format!("unreadable body: {e}")))?;
    let bad = |why: String| {
        AppError::BadRequest(format!(
            "body must be a JSON object of name, number, group, hidden, tvg_id, logo, sources: {why}"
        ))
    };
    let value: Value = serde_json::from_slice(&body).map_err(|e| bad(e.to_string()))?;
    // serde would also read a struct from an array (`[]` = change nothing): refuse it.
    let got = match &value {
        Value::Object(_) => None,
        Value::Array(_) => Some("an array"),
        Value::String(_) => Some("a string"),
        Value::Number(_) => Some("a number"),
        Value::Bool(_) => Some("a boolean"),
        Value::Null => Some("null"),
    };
    if let Some(got) = got {
        return Err(bad(format!("got {got}")));
    }
    let patch: ChannelPatch = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
    Ok(Json(s.registry.map_channel(&id, &patch).await?))
}
