//! The stream routes: `/api/stream/{id}.m3u8` and `.ts`, and the sealed
//! `/proxy/{token}/{item}/{name}` links. The handlers only parse the request (id and
//! suffix, `service`, `Range`, the base URL) and build the response (media type,
//! ranges, passive headers); the work is the stream engine's (`crate::streams`).

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Extension, Router};
use serde::Deserialize;

use std::net::SocketAddr;

use super::{base_url, AppState};
use crate::cache;
use crate::http::error::{AppError, ErrorBody};
use crate::proxy::Kind;
use crate::streams::packaged::{self, PackageError};
use crate::streams::{session, Engine, Opened, Served, StreamError};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/stream/{file}", get(channel_stream))
        .route("/proxy/{token}/{item}/{name}", get(proxy))
        .route("/proxy/{a}", get(malformed_link))
        .route("/proxy/{a}/{b}", get(malformed_link_2))
        .route("/packaged/{channel}/{token}/{file}", get(packaged_segment))
}

const M3U8: &str = "application/vnd.apple.mpegurl";

/// The streams' operations, for `/api/openapi.json` (`super::openapi`).
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        channel_stream,
        proxy,
        malformed_link,
        malformed_link_2,
        packaged_segment
    ),
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
/// sealed `/proxy/...` link (a direct MPEG-TS stream: a live playlist of segments
/// cut from its `.ts` session, `/packaged/...` links; other direct media redirects
/// to its link); `{id}.ts` is the channel's shared continuous MPEG-TS session.
/// Sources are tried in priority order.
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
        (status = 307, description = "The stream is a direct media file that is not MPEG-TS: its sealed proxy link",
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
    method: axum::http::Method,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let peer = client.map(|Extension(ConnectInfo(p))| p);
    let head = method == axum::http::Method::HEAD;
    match viewer.0 {
        Some(login) => {
            super::xtream::account_stream(
                &s,
                &login.account,
                &file,
                q.service,
                None,
                super::xtream::Asking {
                    client: peer,
                    headers: &headers,
                    head,
                },
            )
            .await
        }
        None => match split_file(&file)? {
            (asked, true) if head => {
                let (id, only) = s.registry.canonical(asked, q.service.as_deref()).await?;
                s.registry.playable(&id, only.as_deref()).await?;
                Ok(ts_head(&s, &id, only.as_deref()))
            }
            _ => open_stream(&s, &file, None, q.service, peer, &headers).await,
        },
    }
}

/// A `HEAD` of channel `id`'s `.ts` (known, and visible to whoever asks): answered as
/// the stream would begin (its media type, no length: it never ends) without opening
/// the channel upstream or joining its session. A probe (a player's before it plays, a
/// monitor's) must not cost a provider's connection, nor start a session that runs
/// on after it. The type is the running session's, else MPEG-TS.
pub(super) fn ts_head(s: &AppState, id: &str, only: Option<&str>) -> Response {
    let content_type = s.sessions.content_type_of(id, only).unwrap_or("video/MP2T");
    let empty = futures::stream::empty::<Result<bytes::Bytes, std::convert::Infallible>>();
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PASSIVE,
        Body::from_stream(empty),
    )
        .into_response()
}

/// The answer of `/api/stream/{file}` (`{id}.m3u8` or `{id}.ts`), for any route
/// that serves a channel (the Xtream `/live/...` ones too). `routed`: the channel as
/// the route's URL names it, when not as `file` does (what a balancer in front hashed:
/// packaged segment links carry it).
pub(super) async fn open_stream(
    s: &AppState,
    file: &str,
    routed: Option<&str>,
    service: Option<String>,
    client: Option<SocketAddr>,
    headers: &HeaderMap,
) -> Result<Response, AppError> {
    let mut q = StreamQuery { service };
    let (asked, ts) = split_file(file)?;
    let routed = routed.unwrap_or(asked);
    // Aliases of one channel (`5`, `05`, the slug) share its session, viewer count and
    // metric labels.
    let (id, only) = s.registry.canonical(asked, q.service.as_deref()).await?;
    let id = id.as_str();
    q.service = only;
    if ts {
        return ts_stream(s, id, q.service.as_deref()).await;
    }
    let base = base_url(&s.config, headers);
    let link = packaged_link(s, &base, routed);
    // An HLS player's playlist: it counts as watching.
    let playlist = |body: String| {
        if let Some(peer) = client {
            s.sessions.hls.seen(id, peer.ip());
        }
        playlist_response(body)
    };
    // A playlist cut from the channel's `.ts` session (`streams::packaged`) as an
    // answer; `None` when the stream is not one to cut.
    let answer = |cut: Result<String, PackageError>| match cut {
        Ok(body) => Some(Ok(playlist(body))),
        Err(PackageError::Stream(e)) => Some(Err(AppError::from(e))),
        Err(PackageError::NotTs) => None,
    };
    let engine = Engine::of(s);
    let package = || {
        s.sessions
            .packaged
            .playlist(&s.sessions, &engine, id, q.service.as_deref(), &link)
    };
    // A player reloading a playlist cut from a plain MPEG-TS stream (or one that came
    // while the first waits for it): from memory.
    let reload = s
        .sessions
        .packaged
        .live_playlist(id, q.service.as_deref(), &link)
        .await;
    if let Some(answered) = reload.and_then(answer) {
        return answered;
    }
    // The channel plays as `.ts` already, from a plain MPEG-TS source: cut from that
    // session, its upstream is not asked again (a panel that allows one connection
    // would refuse a second).
    if s.sessions.relays_mpeg_ts(id, q.service.as_deref()) {
        if let Some(answered) = answer(package().await) {
            return answered;
        }
    }
    match engine
        .open_playlist(id, q.service.as_deref(), &base, client.map(|c| c.ip()))
        .await?
    {
        Opened::Playlist(body) => Ok(playlist(body)),
        // Not cut: played through its link, whose fetch reads the response that told
        // it (a second connection would be refused by a panel that allows one).
        Opened::Media {
            link: media,
            mpeg_ts: true,
        } => answer(package().await)
            .unwrap_or_else(|| Ok(Redirect::temporary(&media).into_response())),
        Opened::Media { link, .. } => Ok(Redirect::temporary(&link).into_response()),
    }
}

/// The link of segment `n` (cut at `cut`) of packager `key`:
/// `/packaged/{routed}/{sealed}/{n}.ts` under `base`, `routed` being the channel as
/// the player's URL named it (a balancer in front hashes it, as it hashed the
/// playlist's URL).
fn packaged_link<'a>(
    s: &'a AppState,
    base: &'a str,
    routed: &'a str,
) -> impl Fn(&str, u64, u64) -> String + 'a {
    let routed: String = url::form_urlencoded::byte_serialize(routed.as_bytes()).collect();
    move |key, n, cut| {
        format!(
            "{base}/packaged/{routed}/{}/{n}.ts",
            packaged::seal_segment(&s.signer, key, n, cut)
        )
    }
}

/// A segment of a live playlist cut from a channel's MPEG-TS stream (see
/// `/api/stream/{file}`): served from memory while it is in the playlist's window.
#[utoipa::path(
    get,
    path = "/packaged/{channel}/{token}/{file}",
    tag = "streams",
    params(
        ("channel" = String, Path, description = "The channel as the player named it (what a balancer in front hashes); not read"),
        ("token" = String, Path, description = "The sealed channel the playlist was cut from"),
        ("file" = String, Path, description = "`{n}.ts`: the segment's media sequence number")
    ),
    responses(
        (status = 200, description = "The segment", body = Vec<u8>, content_type = "video/mp2t"),
        (status = 403, description = "Tampered or expired link", body = ErrorBody),
        (status = 404, description = "The segment left the playlist's window, or nobody plays the channel any more", body = ErrorBody)
    )
)]
async fn packaged_segment(
    State(s): State<AppState>,
    Path((_channel, token, file)): Path<(String, String, String)>,
    Query(account): Query<AccountTag>,
    client: Option<Extension<ConnectInfo<SocketAddr>>>,
    req_headers: HeaderMap,
) -> Result<Response, AppError> {
    let (key, sealed) = packaged::open_segment(&s.signer, &token, std::time::SystemTime::now())?;
    // The lineup channel it was cut from (its session's key: the channel, then the
    // service it is pinned to).
    let channel = key.split_once('\n').map_or(key.as_str(), |(id, _)| id);
    let from = client.map(|c| c.0 .0.ip());
    let tagged = account_gate(&s, &account, channel, from, &req_headers).await?;
    let n = file
        .strip_suffix(".ts")
        .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.parse::<u64>().ok())
        .ok_or_else(|| AppError::NotFound(format!("`{file}`: a segment is `{{n}}.ts`")))?;
    if n != sealed {
        return Err(AppError::Forbidden(format!(
            "this link is segment {sealed}'s, not segment {n}'s: reload the playlist"
        )));
    }
    let bytes = s.sessions.packaged.segment(&key, n).ok_or_else(|| {
        AppError::NotFound(format!(
            "segment {n} is no longer (or not yet) in the channel's playlist: reload it"
        ))
    })?;
    // A tagged link is one account's: kept by no shared cache.
    let cache_control = if tagged {
        HeaderValue::from_static("private, max-age=60")
    } else {
        s.media.segment_cache_control()
    };
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("video/mp2t")),
            (header::CACHE_CONTROL, cache_control),
        ],
        PASSIVE,
        bytes,
    )
        .into_response())
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

/// Continuous MPEG-TS from the channel's shared session (fragmented MP4, `video/mp4`,
/// when its source is fMP4 HLS).
async fn ts_stream(s: &AppState, id: &str, only: Option<&str>) -> Result<Response, AppError> {
    let joined = s.sessions.join(&Engine::of(s), id, only).await?;
    Ok((
        [
            (header::CONTENT_TYPE, joined.content_type()),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PASSIVE,
        Body::from_stream(session::viewer_stream(joined, id)),
    )
        .into_response())
}

/// On every body that carries upstream bytes: browsers must neither guess another type
/// nor run anything in it, whatever an upstream put there (freesky's origin also serves
/// the dashboard and the admin API).
pub(super) const PASSIVE: [(header::HeaderName, &str); 2] = [
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (
        header::CONTENT_SECURITY_POLICY,
        "sandbox; default-src 'none'",
    ),
];

/// A rewritten playlist, as players and browsers must take it.
pub(super) fn playlist_response(body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, M3U8),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PASSIVE,
        body,
    )
        .into_response()
}

/// The viewer account a playlist link was handed to (`?a=`, added by the account
/// routes): its fetches keep that account's HLS connection counted.
#[derive(Deserialize, Default)]
struct AccountTag {
    a: Option<String>,
}

/// Whether a link of channel `channel` was handed to an account (its `?a=` tag: a
/// live player's playlists, every link of a catch-up playlist, and with
/// `require_account` every link): its fetch keeps that connection counted, and is
/// refused once the account may no longer watch the channel. With `require_account`,
/// a link without a tag plays only for a request with the admin token (loopback is not
/// enough): stripped of its tag it would play uncounted and outlive the account (a
/// catch-up or a movie to its end).
async fn account_gate(
    s: &AppState,
    account: &AccountTag,
    channel: &str,
    from: Option<std::net::IpAddr>,
    req_headers: &HeaderMap,
) -> Result<bool, AppError> {
    let tagged = match &account.a {
        Some(token) => {
            let lineup = s.registry.lineup().await.ok();
            let listed = lineup.as_deref().and_then(|l| l.get(channel));
            s.accounts.hls_polled(token, channel, listed, from)?
        }
        None => false,
    };
    if tagged {
        crate::http::error::answering_a_viewer();
    }
    if !tagged
        && s.config.server.require_account
        && !super::access::carries_admin_token(s, req_headers, from).await?
    {
        return Err(AppError::Unauthorized(
            "this link belongs to a viewer account: open the channel again with your login \
             (its links carry your account)"
                .into(),
        ));
    }
    Ok(tagged)
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
    path = "/proxy/{token}/{item}/{name}",
    tag = "streams",
    params(
        ("token" = String, Path, description = "The sealed token: where the playlist lives (the same for every link of one playlist directory)"),
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
        (status = 502, description = "The upstream failed (for a segment, key, map or media link, `detail` lists its one try; for a playlist that failed over, each source tried)", body = ErrorBody),
        (status = 504, description = "The upstream timed out (`detail` as for 502)", body = ErrorBody)
    )
)]
async fn proxy(
    State(s): State<AppState>,
    Path((token, item, _name)): Path<(String, String, String)>,
    Query(account): Query<AccountTag>,
    client: Option<Extension<ConnectInfo<SocketAddr>>>,
    req_headers: HeaderMap,
) -> Result<Response, AppError> {
    let engine = Engine::of(&s);
    let link = engine.open_link(&token, &item)?;
    let kind = link.target.kind;
    // A lineup channel's player (a title's links name the title: not a channel). From
    // the last lineup built: a playlist answer never waits for a rebuild.
    if kind == Kind::Playlist {
        if let Some(Extension(ConnectInfo(peer))) = client {
            let last = s.registry.last_lineup();
            if last.is_some_and(|l| l.get(&link.target.channel).is_some()) {
                s.sessions.hls.seen(&link.target.channel, peer.ip());
            }
        }
    }
    let from = client.map(|c| c.0 .0.ip());
    let tagged = account_gate(&s, &account, &link.target.channel, from, &req_headers).await?;
    let base = base_url(&s.config, &req_headers);
    let range = request_range(&req_headers);
    // A segment, key, map or media link asks its own service's upstream once: its
    // failure is that one try, listed in `detail`. (A playlist link may have failed
    // over to another source: its errors say so themselves.)
    let service = link.target.service.clone();
    let channel_id = match link.target.channel.as_str() {
        "" => crate::error::redact(&link.url),
        channel => channel.to_string(),
    };
    let mut served = engine
        .serve_link(link, range, &base)
        .await
        .map_err(|e| match e {
            StreamError::Upstream(error) if kind != Kind::Playlist => AppError::LinkFailed {
                error,
                service,
                channel_id,
            },
            e => e.into(),
        })?;
    // A tagged link's playlist that is read once (a title's or an archive's, ended),
    // or any with `require_account`: its links carry the tag on, so its segment
    // fetches keep the account counted and end once it may no longer watch. Else a
    // live playlist's segments stay shared.
    if let (true, Some(token), Served::Playlist(body)) = (tagged, &account.a, &served) {
        if crate::hls::is_ended(body) || s.config.server.require_account {
            let body = super::xtream::tag_every_link(body, &format!("?a={token}"));
            served = Served::Playlist(body);
        }
    }
    let mut resp = proxied_response(served, kind, range);
    // Segment, key and map links are the same for every viewer and render (until the
    // key or the expiry bucket turns): a shared cache in front may keep them.
    // A tagged link is one account's: kept by no shared cache.
    if tagged && kind != Kind::Playlist {
        resp.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("private, max-age=60"),
        );
    } else if kind != Kind::Playlist && resp.status().is_success() {
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, s.media.segment_cache_control());
    }
    Ok(resp)
}

/// The answer to a proxy link from what `Engine::serve_link` served.
fn proxied_response(served: Served, kind: Kind, range: Option<&str>) -> Response {
    match served {
        Served::Playlist(body) => playlist_response(body),
        Served::Passthrough(fetched) => {
            let ctype = media_type(fetched.content_type.as_deref(), kind).to_string();
            passthrough_response(fetched, &ctype, false)
        }
        Served::Segment(cache::Body::Cached(seg)) => {
            let ctype = media_type(seg.content_type.as_deref(), kind);
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
        Served::Segment(cache::Body::Streaming {
            content_type,
            content_length,
            body,
        }) => media_response(
            StatusCode::OK,
            media_type(content_type.as_deref(), kind),
            content_length,
            None,
            Body::from_stream(body),
        ),
    }
}

/// The response passing `fetched` through (its body unless `head`): its status,
/// length and range as the upstream sent them, and `Accept-Ranges` only when the
/// upstream takes ranges (a player told so seeks, and an MP4 whose index is at its end
/// then fails to open).
pub(super) fn passthrough_response(
    fetched: crate::upstream::Fetched,
    content_type: &str,
    head: bool,
) -> Response {
    let body = if head {
        // The upstream body dropped unread: its connection closes here.
        Body::empty()
    } else {
        Body::from_stream(fetched.body)
    };
    let mut resp = media_response(
        StatusCode::from_u16(fetched.status).unwrap_or(StatusCode::OK),
        content_type,
        fetched.content_length,
        fetched.content_range.as_deref(),
        body,
    );
    if !fetched.accept_ranges {
        resp.headers_mut().remove(header::ACCEPT_RANGES);
    }
    resp
}

pub(super) fn media_response(
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

/// The `Range` header of a request, unless it is one range written backwards
/// (`bytes=5-2`): RFC 9110 calls that invalid, to be ignored (the whole body, 200),
/// not unsatisfiable (416).
pub(crate) fn request_range(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers.get(header::RANGE)?.to_str().ok()?;
    let backwards = value
        .trim()
        .strip_prefix("bytes=")
        .filter(|spec| !spec.contains(','))
        .and_then(|spec| spec.split_once('-'))
        .and_then(|(a, b)| Some((a.trim().parse::<u64>().ok()?, b.trim().parse::<u64>().ok()?)))
        .is_some_and(|(a, b)| b < a);
    (!backwards).then_some(value)
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
pub(super) fn media_type(upstream: Option<&str>, kind: Kind) -> &str {
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
