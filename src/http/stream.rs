//! Streams: `/api/stream/{id}.m3u8` opens a channel (trying its sources in priority
//! order) and answers its upstream playlist with every URI rewritten to a signed
//! `/proxy/...` link; `/proxy/{token}/{name}` serves those links: nested playlists are
//! rewritten the same way, segments, keys and init maps are streamed through with the
//! stream's headers.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use url::Url;

use super::{base_url, AppState};
use crate::error::{AppError, UpstreamError};
use crate::hls;
use crate::model::Headers;
use crate::proxy::{file_name, Kind, Signer};
use crate::services::Service;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/stream/{file}", get(channel_stream))
        .route("/proxy/{token}/{name}", get(proxy))
}

const M3U8: &str = "application/vnd.apple.mpegurl";

#[derive(Deserialize)]
struct StreamQuery {
    service: Option<String>,
}

/// What the first fetch of a source gave.
enum Opened {
    /// An HLS playlist, ready to rewrite.
    Playlist {
        service: String,
        headers: Headers,
        url: Url,
        body: String,
    },
    /// Not HLS but media (an MP4 or TS URL): the player is sent to a proxy link of it.
    Media {
        service: String,
        headers: Headers,
        url: Url,
    },
}

async fn channel_stream(
    State(s): State<AppState>,
    Path(file): Path<String>,
    Query(q): Query<StreamQuery>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let Some(id) = file.strip_suffix(".m3u8") else {
        return Err(AppError::NotFound(format!(
            "`{file}`: streams are served as /api/stream/{{channel_id}}.m3u8"
        )));
    };
    let limit = s.config.server.max_body_bytes;
    let opened = s
        .registry
        .open(id, q.service.as_deref(), |src| async move {
            let r = &src.resolved;
            let timeout = src.service.http().timeout;
            let fetched = src.service.fetch(&r.url, &r.headers, None).await?;
            let ctype = fetched
                .content_type
                .clone()
                .unwrap_or_default()
                .to_ascii_lowercase();
            if is_media_type(&ctype) {
                return Ok(Opened::Media {
                    service: src.service_name,
                    headers: r.headers.clone(),
                    url: fetched.url,
                });
            }
            let url = fetched.url.clone();
            let body = tokio::time::timeout(timeout, fetched.text(limit))
                .await
                .unwrap_or(Err(UpstreamError::Timeout(timeout)))?;
            if !hls::is_hls(&body) {
                return Err(UpstreamError::Invalid(format!(
                    "the stream URL answered `{}` content, not an HLS playlist",
                    if ctype.is_empty() { "untyped" } else { &ctype }
                )));
            }
            Ok(Opened::Playlist {
                service: src.service_name,
                headers: r.headers.clone(),
                url,
                body,
            })
        })
        .await?;
    let base = base_url(&s.config, &headers);
    match opened {
        Opened::Playlist {
            service,
            headers,
            url,
            body,
        } => playlist_response(&s.signer, &base, &service, &headers, &url, &body),
        Opened::Media {
            service,
            headers,
            url,
        } => {
            let token = s.signer.seal(&service, &url, Kind::Segment, &headers);
            let name = file_name(&url, Kind::Segment).replace("seg.", "stream.");
            Ok(Redirect::temporary(&format!("{base}/proxy/{token}/{name}")).into_response())
        }
    }
}

fn is_media_type(ctype: &str) -> bool {
    ctype.starts_with("video/")
        || ctype.starts_with("audio/")
        || ctype.starts_with("application/octet-stream")
}

/// Rewrites `body` so every URI is a signed proxy link carrying the stream's headers.
fn playlist_response(
    signer: &Signer,
    base: &str,
    service: &str,
    headers: &Headers,
    url: &Url,
    body: &str,
) -> Result<Response, AppError> {
    let rewritten = hls::rewrite(body, url, |u, kind| {
        let kind = Kind::from(kind);
        format!(
            "{base}/proxy/{}/{}",
            signer.seal(service, u, kind, headers),
            file_name(u, kind)
        )
    })
    .map_err(|e| AppError::Upstream(UpstreamError::Invalid(e.to_string())))?;
    Ok((
        [
            (header::CONTENT_TYPE, M3U8),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        rewritten,
    )
        .into_response())
}

async fn proxy(
    State(s): State<AppState>,
    Path((token, _name)): Path<(String, String)>,
    req_headers: HeaderMap,
) -> Result<Response, AppError> {
    let target = s
        .signer
        .open(&token)
        .map_err(|why| AppError::Forbidden(why.to_string()))?;
    let service: std::sync::Arc<dyn Service> = s
        .registry
        .service(&target.service)
        .filter(|_| s.registry.is_enabled(&target.service))
        .ok_or_else(|| {
            AppError::NotFound(format!(
                "service `{}` is unknown or disabled",
                target.service
            ))
        })?;
    let url =
        Url::parse(&target.url).map_err(|_| AppError::Forbidden("malformed proxy token".into()))?;
    let timeout = service.http().timeout;
    if target.kind == Kind::Playlist {
        let limit = s.config.server.max_body_bytes;
        let work = async {
            let f = service.fetch(&url, &target.headers, None).await?;
            let final_url = f.url.clone();
            Ok::<_, UpstreamError>((final_url, f.text(limit).await?))
        };
        let (final_url, body) = tokio::time::timeout(timeout, work)
            .await
            .unwrap_or(Err(UpstreamError::Timeout(timeout)))?;
        let base = base_url(&s.config, &req_headers);
        return playlist_response(
            &s.signer,
            &base,
            &target.service,
            &target.headers,
            &final_url,
            &body,
        );
    }
    let range = req_headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let fetched = service.fetch(&url, &target.headers, range).await?;
    let mut resp =
        Response::builder().status(StatusCode::from_u16(fetched.status).unwrap_or(StatusCode::OK));
    let ctype = fetched
        .content_type
        .clone()
        .unwrap_or_else(|| default_type(target.kind).to_string());
    let h = resp
        .headers_mut()
        .expect("a fresh response builder has headers");
    if let Ok(v) = HeaderValue::try_from(ctype) {
        h.insert(header::CONTENT_TYPE, v);
    }
    if let Some(n) = fetched.content_length {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    if let Some(v) = fetched
        .content_range
        .as_deref()
        .and_then(|r| HeaderValue::try_from(r).ok())
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=60"),
    );
    let body = Body::from_stream(fetched.body);
    resp.body(body)
        .map_err(|e| AppError::Internal(e.to_string()))
}

fn default_type(kind: Kind) -> &'static str {
    match kind {
        Kind::Playlist => M3U8,
        Kind::Segment => "video/mp2t",
        Kind::Map => "video/mp4",
        Kind::Key => "application/octet-stream",
    }
}
