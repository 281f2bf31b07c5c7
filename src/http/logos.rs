//! `GET /logos/{sealed}`: a channel logo or guide icon served by freesky (`[logos] mode
//! = "proxy"` or `"cache"`); the work is `crate::logos`'s. Only links freesky sealed
//! open (403 otherwise); in `direct` mode the route answers 404.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use bytes::Bytes;

use super::{base_url, AppState};
use crate::config::LogoMode;
use crate::guide::Rendered;
use crate::http::error::{AppError, ErrorBody};

pub fn routes() -> Router<AppState> {
    Router::new().route("/logos/{sealed}", get(logo))
}

/// The logos' operation, for `/api/openapi.json` (`super::openapi`).
#[derive(utoipa::OpenApi)]
#[openapi(paths(logo), components(schemas(ErrorBody)))]
pub(crate) struct Doc;

/// A logo or guide icon, as the playlist, channel API, Xtream output and guide link it
/// in `proxy` and `cache` mode: fetched through its service, or from the disk cache.
#[utoipa::path(
    get,
    path = "/logos/{sealed}",
    tag = "logos",
    params(("sealed" = String, Path, description = "The sealed service and image URL")),
    responses(
        (status = 200, description = "The image, as its bytes are", content(
            (Vec<u8> = "image/png"),
            (Vec<u8> = "image/jpeg"),
            (Vec<u8> = "image/gif"),
            (Vec<u8> = "image/webp")
        )),
        (status = 304, description = "`If-None-Match` names the image's `ETag`: the client's copy is current"),
        (status = 403, description = "Not a link freesky sealed", body = ErrorBody),
        (status = 404, description = "`[logos] mode` is direct, or the service is gone and nothing is cached", body = ErrorBody),
        (status = 502, description = "The upstream failed, or sent no image (HTML, too large...)", body = ErrorBody),
        (status = 504, description = "The upstream timed out", body = ErrorBody)
    )
)]
async fn logo(
    State(s): State<AppState>,
    Path(sealed): Path<String>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let image = s.logos.get(&s.registry, &sealed).await?;
    let etag = image.etag();
    let cache = [
        (header::CACHE_CONTROL, "public, max-age=86400"),
        (header::ETAG, etag.as_str()),
    ];
    if not_modified(&headers, &etag) {
        return Ok((StatusCode::NOT_MODIFIED, cache).into_response());
    }
    Ok((
        cache,
        [
            (header::CONTENT_TYPE, image.content_type),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (
                header::CONTENT_SECURITY_POLICY,
                "sandbox; default-src 'none'",
            ),
        ],
        image.bytes,
    )
        .into_response())
}

/// Whether the request's `If-None-Match` names `etag` (or is `*`): the client's copy
/// is the one it would get (RFC 9110 §13.1.2: weak comparison).
fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim())
        .any(|t| t == "*" || t.trim_start_matches("W/") == etag)
}

/// The lineup as an output writes it for the client of `headers`: every channel's logo
/// where `[logos] mode` points it (the hook of the playlist, channel API and Xtream
/// outputs).
pub(super) async fn lineup(
    s: &AppState,
    headers: &HeaderMap,
) -> Result<Arc<crate::lineup::Lineup>, AppError> {
    let lineup = s.registry.lineup().await?;
    Ok(s.logos.lineup(&base_url(&s.config, headers), lineup))
}

/// `xml`, a form of the rendered `guide` (gzipped when `gz`) that `form` names, with
/// every icon where `[logos] mode` points it (the hook of `/epg.xml`, `/epg.xml.gz`
/// and `xmltv.php`): rewritten once per form and host while the guide is current.
pub(super) async fn guide(
    s: &AppState,
    headers: &HeaderMap,
    guide: &Rendered,
    form: &str,
    xml: Bytes,
    gz: bool,
) -> Result<Bytes, AppError> {
    if s.logos.mode() == LogoMode::Direct {
        return Ok(xml);
    }
    let lineup = s.registry.lineup().await?;
    let base = base_url(&s.config, headers);
    let logos = s.logos.clone();
    guide
        .derived(format!("{form}|icons at {base}"), move || {
            logos.guide(&base, &xml, &lineup, gz)
        })
        .await
        .map_err(AppError::Internal)
}
