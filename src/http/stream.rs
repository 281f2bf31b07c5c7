//! Streams: `/api/stream/{id}.m3u8` opens a channel (trying its sources in priority
//! order) and answers its upstream playlist with every URI rewritten to a signed
//! `/proxy/...` link; `/proxy/{token}/{name}` serves those links: nested playlists are
//! rewritten the same way, segments, keys and init maps are streamed through with the
//! stream's headers.

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Extension, Router};
use serde::Deserialize;
use url::Url;

use super::{base_url, AppState};
use std::net::SocketAddr;
use std::sync::Arc;

use crate::cache::{self, Document};
use crate::error::{AppError, ErrorBody, UpstreamError};
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
        .route("/proxy/{a}/{b}", get(malformed_link_2))
}

const M3U8: &str = "application/vnd.apple.mpegurl";

/// The streams' operations, for `/api/openapi.json` (`super::openapi`).
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(channel_stream, proxy, malformed_link, malformed_link_2),
    components(schemas(ErrorBody))
)]
pub(crate) struct Doc;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct StreamQuery {
    /// Only this service's source (no fallback to others).
    service: Option<String>,
}

/// A channel's stream: `{id}.m3u8` is its upstream HLS playlist with every URI a
/// sealed `/proxy/...` link (a direct media URL redirects to one); `{id}.ts` is the
/// channel's shared continuous MPEG-TS session. Sources are tried in priority order.
#[utoipa::path(
    get,
    path = "/api/stream/{file}",
    tag = "streams",
    params(
        ("file" = String, Path, description = "`{channel_id}.m3u8` or `{channel_id}.ts`"),
        StreamQuery
    ),
    responses(
        (status = 200, description = "The rewritten playlist, or continuous MPEG-TS", content(
            (String = "application/vnd.apple.mpegurl"),
            (Vec<u8> = "video/mp2t")
        )),
        (status = 307, description = "The stream is a direct media file: its sealed proxy link",
            headers(("location" = String, description = "The /proxy/... link"))),
        (status = 400, description = "The id names another service than `service`", body = ErrorBody),
        (status = 404, description = "Unknown channel or service, no enabled source, or not .m3u8/.ts", body = ErrorBody),
        (status = 500, description = "The state store failed", body = ErrorBody),
        (status = 502, description = "The upstream failed (for a stream open: every source; `detail` lists each)", body = ErrorBody),
        (status = 504, description = "The upstream timed out (for a stream open: every source did)", body = ErrorBody)
    )
)]
async fn channel_stream(
    State(s): State<AppState>,
    Path(file): Path<String>,
    Query(q): Query<StreamQuery>,
    client: Option<Extension<ConnectInfo<SocketAddr>>>,
    viewer: super::viewer::Viewer,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let peer = client.map(|Extension(ConnectInfo(p))| p);
    match viewer.0 {
        Some(login) => {
            super::xtream::account_stream(&s, &login.account, &file, q.service, peer, &headers)
                .await
        }
        None => open_stream(&s, &file, q.service, peer, &headers).await,
    }
}

/// The answer of `/api/stream/{file}` (`{id}.m3u8` or `{id}.ts`), for any route
/// that serves a channel (the Xtream `/live/...` ones too).
pub(super) async fn open_stream(
    s: &AppState,
    file: &str,
    service: Option<String>,
    client: Option<SocketAddr>,
    headers: &HeaderMap,
) -> Result<Response, AppError> {
    let mut q = StreamQuery { service };
    let (id, ts) = split_file(file)?;
    // Aliases of one channel (`5`, `05`, the slug) share its session, viewer count and
    // metric labels.
    let (id, only) = s.registry.canonical(id, q.service.as_deref()).await?;
    let id = id.as_str();
    q.service = only;
    if ts {
        return ts_stream(s, id, q.service.as_deref()).await;
    }
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
    let base = base_url(&s.config, headers);
    match &*doc {
        Document::Playlist { url, body } => {
            // Links carry the channel (for failover) unless the client pinned a service.
            let channel = if q.service.is_some() { "" } else { id };
            if let Some(peer) = client {
                s.sessions.hls.seen(id, peer.ip());
            }
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
            let token = s
                .signer
                .seal(&service, url, Kind::Media, &stream_headers)
                .map_err(|e| AppError::Upstream(UpstreamError::Invalid(e.to_string())))?;
            let name = file_name(url.as_str(), Kind::Media);
            Ok(Redirect::temporary(&format!("{base}/proxy/{token}/{name}")).into_response())
        }
    }
}

/// `{id}.ts` (true) or `{id}.m3u8` (false); anything else is no stream (404).
pub(super) fn split_file(file: &str) -> Result<(&str, bool), AppError> {
    match (file.strip_suffix(".ts"), file.strip_suffix(".m3u8")) {
        (Some(id), _) => Ok((id, true)),
        (None, Some(id)) => Ok((id, false)),
        (None, None) => Err(AppError::NotFound(format!(
            "`{file}`: streams are served as /api/stream/{{channel_id}}.m3u8 or .ts"
        ))),
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
        PASSIVE,
        Body::from_stream(session::viewer_stream(rx, id)),
    )
        .into_response())
}

/// On every body that carries upstream bytes: browsers must neither guess another type
/// nor run anything in it, whatever an upstream put there (freesky's origin also serves
/// the dashboard and the admin API).
const PASSIVE: [(header::HeaderName, &str); 2] = [
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (
        header::CONTENT_SECURITY_POLICY,
        "sandbox; default-src 'none'",
    ),
];

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
        PASSIVE,
        rewritten,
    )
        .into_response())
}

/// The viewer account a playlist link was handed to (`?a=`, added by the account
/// routes): its fetches keep that account's HLS connection counted.
#[derive(Deserialize, Default)]
struct AccountTag {
    a: Option<String>,
}

/// Anything under /proxy/ that is not a whole link.
#[utoipa::path(
    get,
    path = "/proxy/{a}",
    tag = "streams",
    params(("a" = String, Path, description = "Part of a proxy link")),
    responses((status = 403, description = "Always: not a whole proxy link", body = ErrorBody))
)]
async fn malformed_link() -> AppError {
    malformed()
}

/// What the router's fallback answers under `/proxy` (no proxy route matched: too many
/// parts, empty ones): the same 403 as any other link that does not open, never a 404
/// that would tell a probe which paths exist. `None` for other paths.
pub(super) fn unrouted(path: &str) -> Option<AppError> {
    (path == "/proxy" || path.starts_with("/proxy/")).then(malformed)
}

fn malformed() -> AppError {
    AppError::Forbidden("malformed proxy link".into())
}

/// Anything under /proxy/ that is not a whole link (two parts).
#[utoipa::path(
    get,
    path = "/proxy/{a}/{b}",
    tag = "streams",
    params(
        ("a" = String, Path, description = "Part of a proxy link"),
        ("b" = String, Path, description = "Part of a proxy link")
    ),
    responses((status = 403, description = "Always: not a whole proxy link", body = ErrorBody))
)]
async fn malformed_link_2() -> AppError {
    malformed_link().await
}

/// A sealed link handed out in a rewritten playlist: nested playlists are rewritten
/// the same way (failing over between sources), segments, keys and maps are served
/// from the segment cache or streamed through with the stream's headers.
#[utoipa::path(
    get,
    path = "/proxy/{context}/{item}/{name}",
    tag = "streams",
    params(
        ("context" = String, Path, description = "The sealed per-playlist context"),
        ("item" = String, Path, description = "The sealed URI"),
        ("name" = String, Path, description = "A file name for players; not read"),
        ("range" = Option<String>, Header, description = "One byte range, for segments")
    ),
    responses(
        (status = 200, description = "A rewritten playlist, or the media bytes", content(
            (String = "application/vnd.apple.mpegurl"),
            (Vec<u8> = "video/mp2t"),
            (Vec<u8> = "video/mp4"),
            (Vec<u8> = "application/octet-stream")
        )),
        (status = 206, description = "The byte range asked", body = Vec<u8>, content_type = "application/octet-stream"),
        (status = 403, description = "Tampered, mixed or expired link", body = ErrorBody),
        (status = 404, description = "The link's service is unknown or disabled", body = ErrorBody),
        (status = 416, description = "The range is outside the segment"),
        (status = 502, description = "The upstream failed (for a stream open: every source; `detail` lists each)", body = ErrorBody),
        (status = 504, description = "The upstream timed out (for a stream open: every source did)", body = ErrorBody)
    )
)]
async fn proxy(
    State(s): State<AppState>,
    Path((context, item, _name)): Path<(String, String, String)>,
    Query(account): Query<AccountTag>,
    client: Option<Extension<ConnectInfo<SocketAddr>>>,
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
        if let Some(Extension(ConnectInfo(peer))) = client {
            s.sessions.hls.seen(&target.channel, peer.ip());
        }
        if let Some(token) = &account.a {
            s.accounts
                .hls_polled(token, &target.channel, client.map(|c| c.0 .0.ip()));
        }
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
            media_type(fetched.content_type.as_deref(), target.kind),
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
            let ctype = media_type(seg.content_type.as_deref(), target.kind);
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
            media_type(content_type.as_deref(), target.kind),
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
    for (name, value) in PASSIVE {
        h.insert(name, HeaderValue::from_static(value));
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

/// The type a proxied segment, key, map or media file is served with: the upstream's
/// when it is a media type (so fMP4, AAC or WebVTT keep theirs), else the kind's own.
/// Anything a browser would render or run (HTML, SVG, XML, scripts) never passes.
fn media_type(upstream: Option<&str>, kind: Kind) -> &str {
    let allowed = upstream.filter(|t| {
        let essence = t.split(';').next().unwrap_or_default().trim();
        let (top, sub) = essence.split_once('/').unwrap_or_default();
        let token = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&c))
        };
        token(top)
            && token(sub)
            && (top.eq_ignore_ascii_case("video")
                || top.eq_ignore_ascii_case("audio")
                || ["application/octet-stream", "application/mp4", "text/vtt"]
                    .iter()
                    .any(|a| a.eq_ignore_ascii_case(essence)))
    });
    allowed.unwrap_or(default_type(kind))
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

/// What `POST /api/channels/{id}/test` found: one viewer-like open of the channel,
/// its playlist and first segment (or a direct stream's first bytes), with times.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(super) struct ChannelTest {
    /// The channel id as asked.
    pub channel: String,
    /// True when a playlist and a first segment (or a direct stream's first bytes) came.
    pub ok: bool,
    /// The service whose source answered; `null` when none did.
    pub service: Option<String>,
    /// `"hls"` (a playlist), `"ts"` (a direct MPEG-TS stream) or `"media"` (another
    /// direct media URL); `null` when nothing answered.
    pub url_kind: Option<String>,
    /// From the start until a source's resolution was in hand (fallback included).
    pub resolve_ms: u64,
    /// Fetching the stream's playlist (and a master's first variant).
    pub playlist_ms: Option<u64>,
    /// Fetching the head and first bytes of the first segment (or direct stream).
    pub segment_ms: Option<u64>,
    /// Bytes read of that segment (at most `TEST_READ_BYTES`).
    pub segment_bytes: Option<u64>,
    pub total_ms: u64,
    /// Why the test failed (no credentials: URLs without queries); `null` when ok.
    pub error: Option<String>,
}

/// The most a channel test reads of a segment or direct stream.
const TEST_READ_BYTES: usize = 2 << 20;

/// Tests channel `id` as a viewer's `/api/stream/{id}.m3u8` would play it: the
/// registry's fallback picks the source and fetches its playlist (a master's first
/// variant followed), then the first segment is fetched, reading at most
/// `TEST_READ_BYTES` within the service's timeout. Unknown channels are errors (404);
/// an upstream failure is a test result with `ok: false`.
pub(super) async fn test_channel(s: &AppState, id: &str) -> Result<ChannelTest, AppError> {
    let started = std::time::Instant::now();
    let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let limit = s.config.server.max_body_bytes;
    let media = &s.media;
    let resolved_at = std::sync::Mutex::new(None);
    let opened = s
        .registry
        .open(id, None, |src| {
            let resolved_at = &resolved_at;
            async move {
                let at = std::time::Instant::now();
                *resolved_at.lock().expect("never poisoned") = Some(at);
                let r = &src.resolved;
                let doc = media
                    .document(&*src.service, &src.service_name, &r.url, &r.headers, limit)
                    .await?;
                Ok((src, doc, at))
            }
        })
        .await;
    let mut test = ChannelTest {
        channel: id.to_string(),
        ok: false,
        service: None,
        url_kind: None,
        resolve_ms: 0,
        playlist_ms: None,
        segment_ms: None,
        segment_bytes: None,
        total_ms: 0,
        error: None,
    };
    let (src, doc, at) = match opened {
        Ok(v) => v,
        Err(AppError::AllSourcesFailed { tried, .. }) => {
            // No resolution in hand: all the time went into trying.
            let at = resolved_at
                .lock()
                .expect("never poisoned")
                .unwrap_or_else(std::time::Instant::now);
            test.resolve_ms = ms(at - started);
            test.total_ms = ms(started.elapsed());
            test.error = Some(if tried.is_empty() {
                "no source could be tried".to_string()
            } else {
                tried
                    .iter()
                    .map(|a| format!("{}: {}", a.service, a.error))
                    .collect::<Vec<_>>()
                    .join("; ")
            });
            return Ok(test);
        }
        Err(e) => return Err(e),
    };
    test.resolve_ms = ms(at - started);
    test.service = Some(src.service_name.clone());
    let headers = &src.resolved.headers;
    let timeout = src.service.http().timeout;
    let first = match &*doc {
        Document::Media { url } => {
            let ts = url.path().ends_with(".ts") || url.path().ends_with(".mpegts");
            test.url_kind = Some(if ts { "ts" } else { "media" }.to_string());
            Ok(url.clone())
        }
        Document::Playlist { url, body } => {
            test.url_kind = Some("hls".to_string());
            let media_playlist = if hls::is_master(body) {
                match first_uri(body, url) {
                    Some(variant) => media
                        .document(&*src.service, &src.service_name, &variant, headers, limit)
                        .await
                        .map_err(|e| e.to_string())
                        .and_then(|d| match &*d {
                            Document::Playlist { url, body } => Ok((url.clone(), body.clone())),
                            Document::Media { .. } => Err(format!(
                                "variant {} is media, not a playlist",
                                src.service.shown_url(&variant)
                            )),
                        }),
                    None => Err("master playlist lists no variant".to_string()),
                }
            } else {
                Ok((url.clone(), body.clone()))
            };
            test.playlist_ms = Some(ms(at.elapsed()));
            media_playlist.and_then(|(url, body)| {
                hls::media_info(&body, &url)
                    .map_err(|e| format!("{}: {e}", src.service.shown_url(&url)))?
                    .segments
                    .into_iter()
                    .next()
                    .ok_or_else(|| "the media playlist lists no segment".to_string())
            })
        }
    };
    let direct = !matches!(&*doc, Document::Playlist { .. });
    let what = if direct {
        "the stream"
    } else {
        "the first segment"
    };
    let outcome = match first {
        Ok(url) => {
            let fetch_started = std::time::Instant::now();
            let read = read_some(&*src.service, &url, headers, timeout, direct).await;
            test.segment_ms = Some(ms(fetch_started.elapsed()));
            match read {
                Ok(0) => Err(format!("{what} is empty")),
                Ok(n) => {
                    test.segment_bytes = Some(n as u64);
                    Ok(())
                }
                Err(e) => Err(format!("{what}: {e}")),
            }
        }
        Err(e) => Err(e),
    };
    test.ok = outcome.is_ok();
    test.error = outcome.err();
    test.total_ms = ms(started.elapsed());
    Ok(test)
}

/// Fetches `url` and counts its bytes: up to `TEST_READ_BYTES`, only the first chunk of
/// a `direct` stream (it never ends), and what came within `timeout` (the service's)
/// when that runs out after some bytes.
async fn read_some(
    service: &dyn Service,
    url: &Url,
    headers: &Headers,
    timeout: std::time::Duration,
    direct: bool,
) -> Result<usize, UpstreamError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let fetched = tokio::time::timeout_at(deadline, service.fetch(url, headers, None))
        .await
        .map_err(|_| UpstreamError::Timeout(timeout))??;
    let mut body = fetched.body;
    let mut n = 0usize;
    loop {
        match tokio::time::timeout_at(deadline, futures::StreamExt::next(&mut body)).await {
            Ok(Some(chunk)) => n += chunk?.len(),
            Ok(None) => return Ok(n),
            Err(_) if n > 0 => return Ok(n),
            Err(_) => return Err(UpstreamError::Timeout(timeout)),
        }
        if n >= TEST_READ_BYTES || (direct && n > 0) {
            return Ok(n);
        }
    }
}

/// The first URI line of a playlist (a master's first variant), resolved against `base`.
fn first_uri(body: &str, base: &Url) -> Option<Url> {
    body.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .and_then(|l| base.join(l).ok())
}
