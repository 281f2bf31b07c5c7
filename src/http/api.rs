//! The original design's JSON API: service status and switches, channel listing and search.

use axum::extract::{Path, Query, Request, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{check_admin, AppState};
use crate::error::AppError;
use crate::model::{LineupChannel, ServiceStatus};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(dashboard))
        .route("/health", get(health))
        .route("/api/services/status", get(status))
        .route("/api/services/{name}/enable", post(enable))
        .route("/api/services/{name}/disable", post(disable))
        .route("/api/channels/all", get(all_channels))
        .route("/api/channels/search", get(search))
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
