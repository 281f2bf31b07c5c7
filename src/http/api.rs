//! The original design's JSON API: service status and switches, channel listing and
//! search; and freesky's channel mapping (`GET`/`PATCH /api/channels/{id}`).
//!
//! A service's status carries its guide status (`crate::guide`), joined here so that
//! neither the registry nor the guide knows of the other's status.

use axum::extract::{Path, Query, Request, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{check_admin, AppState};
use crate::error::AppError;
use crate::guide::GuideStatus;
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

/// A service's status as the API shows it: the registry's, plus its guide's.
#[derive(Serialize)]
struct ServiceEntry {
    #[serde(flatten)]
    service: ServiceStatus,
    /// `null` while the service has no guide (none configured or listed, or not
    /// tried yet); else what its last guide refresh did, a malformed guide included.
    guide: Option<GuideStatus>,
}

fn entry(s: &AppState, service: ServiceStatus) -> ServiceEntry {
    ServiceEntry {
        guide: s.guides.status_of(&service.name),
        service,
    }
}

async fn status(State(s): State<AppState>) -> Json<Vec<ServiceEntry>> {
    Json(
        s.registry
            .status()
            .into_iter()
            .map(|service| entry(&s, service))
            .collect(),
    )
}

async fn enable(
    State(s): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> Result<Json<ServiceEntry>, AppError> {
    check_admin(&s.config, &req)?;
    let service = s.registry.set_enabled(&name, true).await?;
    // Its channels are in the guide at once; its programmes after a fetch.
    s.guides.lineup_changed(true).await;
    Ok(Json(entry(&s, service)))
}

async fn disable(
    State(s): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> Result<Json<ServiceEntry>, AppError> {
    check_admin(&s.config, &req)?;
    let service = s.registry.set_enabled(&name, false).await?;
    s.guides.lineup_changed(false).await;
    Ok(Json(entry(&s, service)))
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
    let before = s.registry.channel(&id).await?.channel.guide_id;
    let detail = s.registry.map_channel(&id, &patch).await?;
    // The guide shows the change at once; a new guide id may also match a guide
    // channel that the last read dropped, which only a new read finds.
    s.guides
        .lineup_changed(detail.channel.guide_id != before)
        .await;
    Ok(Json(detail))
}
