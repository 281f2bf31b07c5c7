//! The merged XMLTV guide: `/epg.xml` and `/epg.xml.gz`, rendered once per refresh
//! (`crate::guide`) and served from memory. Channel ids equal the playlist's tvg-ids.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::access::Admin;
use super::viewer::Viewer;
use super::AppState;
use crate::guide::{GuideStatus, Rendered};
use crate::http::error::{AppError, ErrorBody};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/epg.xml", get(xml))
        .route("/epg.xml.gz", get(gz))
        .route("/api/guide/status", get(status))
        .route("/api/guide/refresh", post(refresh))
}

/// The guide's operations, for `/api/openapi.json` (`super::openapi`).
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(xml, gz, status, refresh),
    components(schemas(ErrorBody, GuideSummary, GuideStatus))
)]
pub(crate) struct Doc;

/// `summary`'s shape (documentation only: it is written with `json!`).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct GuideSummary {
    /// Channels in the served guide.
    channels: Option<usize>,
    /// Programmes in the served guide.
    programmes: Option<usize>,
    /// Guide channels ignored, summed over the services, because another guide
    /// channel of the same guide matched the same lineup channel better.
    ignored_duplicate_channels: usize,
    /// Per service with a guide, what its last refresh did.
    services: BTreeMap<String, GuideStatus>,
    /// Per extra guide (`[[guides]]`), what its last refresh did.
    guides: BTreeMap<String, GuideStatus>,
}

/// The guide's size and every service's guide status.
fn summary(s: &AppState, guide: Option<&Rendered>) -> Value {
    let services: BTreeMap<String, _> = s
        .registry
        .status()
        .into_iter()
        .filter_map(|svc| s.guides.status_of(&svc.name).map(|g| (svc.name, g)))
        .collect();
    let ignored: usize = services
        .values()
        .map(|g| g.ignored_duplicate_channels)
        .sum();
    let extra: BTreeMap<String, GuideStatus> = s.guides.extra_status().into_iter().collect();
    json!({
        "channels": guide.map(|g| g.channels),
        "programmes": guide.map(|g| g.programmes),
        "ignored_duplicate_channels": ignored,
        "services": services,
        "guides": extra,
    })
}

/// The served guide's size and each service's guide status (renders it first if
/// none is yet, waiting at most 2 s: `channels` and `programmes` are null meanwhile).
#[utoipa::path(
    get,
    path = "/api/guide/status",
    operation_id = "guide_status",
    tag = "guide",
    responses(
        (status = 200, description = "The guide's status", body = GuideSummary),
        (status = 500, description = "The guide could not be built", body = ErrorBody)
    )
)]
async fn status(State(s): State<AppState>) -> Result<Json<Value>, AppError> {
    // Not held for a guide that hangs after a start (its `reading_since` is what the
    // caller wants to see): `channels` and `programmes` are null until one is served.
    let guide = match tokio::time::timeout(STATUS_WAIT, s.guides.current()).await {
        Ok(guide) => Some(guide?),
        Err(_) => s.guides.rendered(),
    };
    Ok(Json(summary(&s, guide.as_deref())))
}

/// How long `/api/guide/status` waits for a first guide before answering without it.
const STATUS_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Fetches every guide now (admin); answers when done, with the new status.
#[utoipa::path(
    post,
    path = "/api/guide/refresh",
    operation_id = "guide_refresh",
    tag = "guide",
    security(("admin" = [])),
    responses(
        (status = 200, description = "The guide's status after the refresh", body = GuideSummary),
        (status = 401, description = "An admin token is set and none was given", body = ErrorBody),
        (status = 403, description = "Wrong admin token; no token set and the caller is not on loopback; a cross-site call (`Origin`, `Sec-Fetch-Site`); or a `Host` that is not one of freesky's names", body = ErrorBody),
        (status = 500, description = "The guide could not be built", body = ErrorBody)
    )
)]
async fn refresh(State(s): State<AppState>, _admin: Admin) -> Result<Json<Value>, AppError> {
    let guide = s.guides.refresh().await?;
    Ok(Json(summary(&s, Some(&guide))))
}

/// The merged XMLTV guide; channel ids equal the playlist's `tvg-id`s.
#[utoipa::path(
    get,
    path = "/epg.xml",
    tag = "guide",
    responses(
        (status = 200, description = "XMLTV", body = String, content_type = "application/xml"),
        (status = 500, description = "The guide could not be built", body = ErrorBody)
    )
)]
async fn xml(
    State(s): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let account = viewer.0.as_ref().map(|l| &*l.account);
    super::xtream::guide_negotiated(&s, account, &headers).await
}

/// The merged XMLTV guide, gzipped.
#[utoipa::path(
    get,
    path = "/epg.xml.gz",
    tag = "guide",
    responses(
        (status = 200, description = "Gzipped XMLTV", body = Vec<u8>, content_type = "application/gzip"),
        (status = 500, description = "The guide could not be built", body = ErrorBody)
    )
)]
async fn gz(
    State(s): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let account = viewer.0.as_ref().map(|l| &*l.account);
    let mut resp = super::xtream::guide_gz_for(&s, account, &headers).await?;
    resp.headers_mut().insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"epg.xml.gz\""),
    );
    Ok(resp)
}
