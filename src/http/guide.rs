//! The merged XMLTV guide: `/epg.xml` and `/epg.xml.gz`, rendered once per refresh
//! (`crate::guide`) and served from memory. Channel ids equal the playlist's tvg-ids.

use std::collections::BTreeMap;

use axum::extract::{Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::{check_admin, AppState};
use crate::error::AppError;
use crate::guide::Rendered;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/epg.xml", get(xml))
        .route("/epg.xml.gz", get(gz))
        .route("/api/guide/status", get(status))
        .route("/api/guide/refresh", post(refresh))
}

/// The guide's size and every service's guide status.
fn summary(s: &AppState, guide: Option<&Rendered>) -> Value {
    let services: BTreeMap<String, _> = s
        .registry
        .status()
        .into_iter()
        .filter_map(|svc| s.guides.status_of(&svc.name).map(|g| (svc.name, g)))
        .collect();
    json!({
        "channels": guide.map(|g| g.channels),
        "programmes": guide.map(|g| g.programmes),
        "services": services,
    })
}

async fn status(State(s): State<AppState>) -> Result<Json<Value>, AppError> {
    let guide = s.guides.current().await?;
    Ok(Json(summary(&s, Some(&guide))))
}

/// Fetches every guide now (admin); answers when done, with the new status.
async fn refresh(State(s): State<AppState>, req: Request) -> Result<Json<Value>, AppError> {
    check_admin(&s.config, &req)?;
    let guide = s.guides.refresh().await?;
    Ok(Json(summary(&s, Some(&guide))))
}

async fn xml(State(s): State<AppState>) -> Result<Response, AppError> {
    let guide = s.guides.current().await?;
    Ok((
        [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
        guide.xml.clone(),
    )
        .into_response())
}

async fn gz(State(s): State<AppState>) -> Result<Response, AppError> {
    let guide = s.guides.current().await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/gzip"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"epg.xml.gz\"",
            ),
        ],
        guide.gz.clone(),
    )
        .into_response())
}
