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
use std::sync::Arc;

use crate::cache::{self, Document};
use crate::error::{AppError, UpstreamError};
use crate::failover;
use crate::hls;
use crate::model::Headers;
use crate::proxy::{self, file_name, Kind, Signer};
use crate::services::Service;
use crate::session;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/stream/{file}", get(channel_stream))
        .route("/proxy/{context}/{item}/{name}", get(proxy))
        .route("/proxy/{a}", get(malformed_link))
        .route("/proxy/{a}/{b}", get(malformed_link))
}

const M3U8: &str = "application/vnd.apple.mpegurl";

#[derive(Deserialize)]
struct StreamQuery {
    service: Option<String>,
}

async fn channel_stream(
    State(s): State<AppState>,
    Path(file): Path<String>,
    Query(q): Query<StreamQuery>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    if let Some(id) = file.strip_suffix(".ts") {
        return ts_stream(&s, id, q.service.as_deref()).await;
    }
    let Some(id) = file.strip_suffix(".m3u8") else {
        return Err(AppError::NotFound(format!(
            "`{file}`: streams are served as /api/stream/{{channel_id}}.m3u8 or .ts"
        )));
    };
    let limit = s.config.server.max_body_bytes;
    let media = &s.media;
    let (service, stream_headers, doc) = s
        .registry
        .open(id, q.service.as_deref(), |src| async move {
            let r = &src.resolved;
            let doc = media
                .document(&*src.service, &src.service_name, &r.url, &r.headers, limit)
                .await?;
            Ok((src.service_name, r.headers.clone(), doc))
        })
        .await?;
    let base = base_url(&s.config, &headers);
    match &*doc {
        Document::Playlist { url, body } => {
            // Links carry the channel (for failover) unless the client pinned a service.
            let channel = if q.service.is_some() { "" } else { id };
            playlist_response(
                &s.signer,
                &base,
                &service,
                channel,
                &stream_headers,
                url,
                body,
            )
        }
        Document::Media { url } => {
            let token = s.signer.seal(&service, url, Kind::Media, &stream_headers);
            let name = file_name(url.as_str(), Kind::Media);
            Ok(Redirect::temporary(&format!("{base}/proxy/{token}/{name}")).into_response())
        }
    }
}

/// Continuous MPEG-TS from the channel's shared session.
async fn ts_stream(s: &AppState, id: &str, only: Option<&str>) -> Result<Response, AppError> {
    let deps = session::Deps {
        registry: s.registry.clone(),
        media: s.media.clone(),
        cfg: s.config.streams.clone(),
        limit: s.config.server.max_body_bytes,
    };
    let rx = s.sessions.join(&deps, id, only).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "video/MP2T"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(session::viewer_stream(rx, id)),
    )
        .into_response())
}

/// Rewrites `body` so every URI is a signed proxy link carrying the stream's headers.
fn playlist_response(
    signer: &Signer,
    base: &str,
    service: &str,
    channel: &str,
    headers: &Headers,
    url: &Url,
    body: &str,
) -> Result<Response, AppError> {
    let rewritten = proxy::rewrite_playlist(signer, base, service, channel, headers, url, body)
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

/// Anything under /proxy/ that is not a whole link.
async fn malformed_link() -> AppError {
    AppError::Forbidden("malformed proxy link".into())
}

async fn proxy(
    State(s): State<AppState>,
    Path((context, item, _name)): Path<(String, String, String)>,
    req_headers: HeaderMap,
) -> Result<Response, AppError> {
    let target = s
        .signer
        .open(&context, &item)
        .map_err(|why| AppError::Forbidden(why.to_string()))?;
    let service: Arc<dyn Service> = s
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
    if target.kind == Kind::Playlist {
        let base = base_url(&s.config, &req_headers);
        return media_playlist(&s, &target, service, &url, &base).await;
    }
    let range = req_headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    if target.kind == Kind::Media
        || range.is_some_and(|_| !s.media.has_segment(&target.service, &url, &target.headers))
    {
        // Whole files and byte ranges of uncached ones go straight through.
        let fetched = service.fetch(&url, &target.headers, range).await?;
        let status = StatusCode::from_u16(fetched.status).unwrap_or(StatusCode::OK);
        return Ok(media_response(
            status,
            fetched
                .content_type
                .as_deref()
                .unwrap_or(default_type(target.kind)),
            fetched.content_length,
            fetched.content_range.as_deref(),
            Body::from_stream(fetched.body),
        ));
    }
    let body = s
        .media
        .segment(service, &target.service, &url, &target.headers)
        .await;
    if !target.channel.is_empty() {
        match &body {
            Ok(_) => s.failovers.clear(&target.service, &target.channel),
            Err(_) => {
                s.failovers.strike(&target.service, &target.channel);
            }
        }
    }
    let body = body?;
    Ok(match body {
        cache::Body::Cached(seg) => {
            let ctype = seg
                .content_type
                .as_deref()
                .unwrap_or(default_type(target.kind));
            match range.and_then(|r| byte_range(r, seg.bytes.len())) {
                Some(Ok((from, to))) => media_response(
                    StatusCode::PARTIAL_CONTENT,
                    ctype,
                    Some((to - from + 1) as u64),
                    Some(&format!("bytes {from}-{to}/{}", seg.bytes.len())),
                    Body::from(seg.bytes.slice(from..=to)),
                ),
                Some(Err(())) => {
                    let mut resp = media_response(
                        StatusCode::RANGE_NOT_SATISFIABLE,
                        ctype,
                        Some(0),
                        Some(&format!("bytes */{}", seg.bytes.len())),
                        Body::empty(),
                    );
                    resp.headers_mut().remove(header::CACHE_CONTROL);
                    resp
                }
                None => media_response(
                    StatusCode::OK,
                    ctype,
                    Some(seg.bytes.len() as u64),
                    None,
                    Body::from(seg.bytes),
                ),
            }
        }
        cache::Body::Streaming {
            content_type,
            content_length,
            body,
        } => media_response(
            StatusCode::OK,
            content_type.as_deref().unwrap_or(default_type(target.kind)),
            content_length,
            None,
            Body::from_stream(body),
        ),
    })
}

/// A playlist link: the upstream playlist rewritten, or, once its source has failed
/// `streams.failover_after` times for this channel, the next source's (see `failover`).
async fn media_playlist(
    s: &AppState,
    target: &proxy::Target,
    service: Arc<dyn Service>,
    url: &Url,
    base: &str,
) -> Result<Response, AppError> {
    let limit = s.config.server.max_body_bytes;
    let link = cache::key(&target.service, url, &target.headers);
    let failover = !target.channel.is_empty();
    if failover {
        if let Some(sw) = s.failovers.switched(&link) {
            return switched_playlist(s, target, &link, sw, base).await;
        }
        if failover::token_due(url, s.failovers.first_seen(&link)) {
            if let Some(sw) = refresh(s, target, &link, &target.service, None).await {
                return switched_playlist(s, target, &link, sw, base).await;
            }
        }
    }
    let threshold = s.config.streams.failover_after.max(1);
    let fetched =
        if failover && s.failovers.strikes_of(&target.service, &target.channel) >= threshold {
            Err(UpstreamError::Invalid(format!(
                "`{}` failed {threshold} times in a row for this channel",
                target.service
            )))
        } else {
            s.media
                .document(&*service, &target.service, url, &target.headers, limit)
                .await
                .and_then(|doc| match &*doc {
                    Document::Playlist { .. } => Ok(doc),
                    Document::Media { .. } => Err(UpstreamError::Invalid(format!(
                        "{} is media, not the playlist it was listed as",
                        service.shown_url(url)
                    ))),
                })
        };
    match fetched {
        Ok(doc) => {
            let Document::Playlist {
                url: final_url,
                body,
            } = &*doc
            else {
                unreachable!("checked above");
            };
            if failover && !hls::is_master(body) {
                s.failovers.note_next_seq(&link, body, final_url);
            }
            playlist_response(
                &s.signer,
                base,
                &target.service,
                &target.channel,
                &target.headers,
                final_url,
                body,
            )
        }
        Err(e) if !failover => Err(e.into()),
        Err(e) if failover::token_refused(&e) => {
            match refresh(s, target, &link, &target.service, None).await {
                Some(sw) => switched_playlist(s, target, &link, sw, base).await,
                None => Err(e.into()),
            }
        }
        Err(e) => {
            let strikes = s.failovers.strike(&target.service, &target.channel);
            if strikes < threshold {
                return Err(e.into());
            }
            match s
                .failovers
                .switch(
                    &s.registry,
                    &s.media,
                    limit,
                    &link,
                    &target.channel,
                    vec![target.service.clone()],
                )
                .await
            {
                Ok(sw) => switched_playlist(s, target, &link, sw, base).await,
                Err(why) => {
                    tracing::warn!(channel = %target.channel, error = %why, "no source to fail over to");
                    Err(e.into())
                }
            }
        }
    }
}

/// Resolves the link's channel afresh from `service` (a token refresh, see
/// `failover`); `None` (logged) when that fails, and the link goes on as it was.
async fn refresh(
    s: &AppState,
    target: &proxy::Target,
    link: &str,
    service: &str,
    current: Option<&failover::Switch>,
) -> Option<Arc<failover::Switch>> {
    let tried = current.map_or_else(|| vec![target.service.clone()], |sw| sw.tried.clone());
    let limit = s.config.server.max_body_bytes;
    s.failovers
        .refresh(
            &s.registry,
            &s.media,
            limit,
            link,
            &target.channel,
            service,
            tried,
        )
        .await
        .inspect_err(|e| {
            tracing::warn!(channel = %target.channel, service, error = %e, "token refresh failed")
        })
        .ok()
}

/// The replacement source's media playlist, renumbered for the player of the old one;
/// refreshed first when its token is due or refused.
async fn switched_playlist(
    s: &AppState,
    target: &proxy::Target,
    link: &str,
    mut sw: Arc<failover::Switch>,
    base: &str,
) -> Result<Response, AppError> {
    let limit = s.config.server.max_body_bytes;
    if failover::token_due(&sw.url, sw.since) {
        if let Some(fresh) = refresh(s, target, link, &sw.service_name, Some(&sw)).await {
            sw = fresh;
        }
    }
    let fetched = s
        .media
        .document(&*sw.service, &sw.service_name, &sw.url, &sw.headers, limit)
        .await;
    let doc = match fetched {
        Err(e) if failover::token_refused(&e) => {
            let fresh = refresh(s, target, link, &sw.service_name, Some(&sw))
                .await
                .ok_or(e)?;
            sw = fresh;
            s.media
                .document(&*sw.service, &sw.service_name, &sw.url, &sw.headers, limit)
                .await?
        }
        other => other?,
    };
    let Document::Playlist { url, body } = &*doc else {
        return Err(AppError::Upstream(UpstreamError::Invalid(
            "the failover source answered media, not a playlist".into(),
        )));
    };
    let body = sw
        .numbers
        .renumber(body, url, s.config.streams.live_edge_segments)
        .map_err(|e| AppError::Upstream(UpstreamError::Invalid(e)))?;
    s.failovers.note_next_seq(link, &body, url);
    playlist_response(
        &s.signer,
        base,
        &sw.service_name,
        &target.channel,
        &sw.headers,
        url,
        &body,
    )
}

fn media_response(
    status: StatusCode,
    content_type: &str,
    content_length: Option<u64>,
    content_range: Option<&str>,
    body: Body,
) -> Response {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::try_from(content_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    if let Some(n) = content_length {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    if let Some(v) = content_range.and_then(|r| HeaderValue::try_from(r).ok()) {
        h.insert(header::CONTENT_RANGE, v);
    }
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=60"),
    );
    resp
}

/// One `bytes=a-b`, `bytes=a-` or `bytes=-n` range of a body of `len` bytes:
/// `None` when the header is not a single range we serve (then the whole body is
/// sent, as RFC 9110 allows), `Err` when it cannot be satisfied.
fn byte_range(header: &str, len: usize) -> Option<Result<(usize, usize), ()>> {
    let spec = header.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let range = if a.is_empty() {
        let n: usize = b.parse().ok()?;
        if n == 0 || len == 0 {
            return Some(Err(()));
        }
        (len.saturating_sub(n), len - 1)
    } else {
        let from: usize = a.parse().ok()?;
        let to = if b.is_empty() {
            len.saturating_sub(1)
        } else {
            b.parse::<usize>().ok()?.min(len.saturating_sub(1))
        };
        if from >= len || to < from {
            return Some(Err(()));
        }
        (from, to)
    };
    Some(Ok(range))
}

fn default_type(kind: Kind) -> &'static str {
    match kind {
        Kind::Playlist => M3U8,
        Kind::Segment => "video/mp2t",
        Kind::Map => "video/mp4",
        Kind::Key => "application/octet-stream",
        Kind::Media => "video/mp2t",
    }
}
