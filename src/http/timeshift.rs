//! Catch-up playback: `/api/timeshift/{id}.ts?start=...&duration=...` plays a past
//! window of a channel from the archive of one of its sources. Sources are tried in
//! the channel's order, only those whose archive reaches back to the start; each one's
//! archive address is built from its listing (`crate::catchup`) and fetched with the
//! stream's headers. An MPEG-TS (or other media) archive is streamed through; an HLS
//! one is answered as its playlist with every URI a sealed `/proxy/...` link. A source
//! that fails hands over to the next one with an archive.
//!
//! [`timeshift`] is the one entry point: other routes that play catch-up (an Xtream
//! client's `/timeshift/...`) call it with the channel and window they parsed.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use axum::{Extension, Router};
use futures::StreamExt;
use serde::Deserialize;
use url::Url;

use super::stream::{media_type, passthrough_response, playlist_response};
use super::{base_url, AppState};
use crate::catchup::{self, Window};
use crate::error::{Attempt, UpstreamError};
use crate::http::error::{AppError, ErrorBody};
use crate::model::{Channel, LineupChannel};
use crate::proxy::Kind;
use crate::upstream::Fetched;

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/timeshift/{file}", get(timeshift_route))
}

/// The catch-up operation, for `/api/openapi.json` (`super::openapi`).
#[derive(utoipa::OpenApi)]
#[openapi(paths(timeshift_route), components(schemas(ErrorBody)))]
pub(crate) struct Doc;

/// The `catchup-source` template the playlist gives players for channel `id`: they
/// replace `{utc}` and `{utcend}` (Kodi IPTV Simple, TiviMate, OTT Navigator) with the
/// programme's start and end in unix seconds.
pub fn template(base: &str, id: &str) -> String {
    format!("{base}/api/timeshift/{id}.ts?start={{utc}}&end={{utcend}}")
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct TimeshiftQuery {
    /// Where to start: unix seconds, `YYYY-MM-DD:HH-MM` (Xtream) or RFC 3339; UTC.
    start: String,
    /// Minutes to play (1 to 1440). Default: up to `end`, else 60.
    duration: Option<u32>,
    /// Where to stop (as `start`), when `duration` is not given.
    end: Option<String>,
    /// Only this service's archive (no fallback to others).
    service: Option<String>,
}

/// A past window of a channel, from the archive of its first source that has one
/// reaching back to `start` (fallback to the next on failure).
#[utoipa::path(
    get,
    path = "/api/timeshift/{file}",
    tag = "streams",
    params(
        ("file" = String, Path, description = "`{channel_id}.ts` (also `.m3u8` or bare)"),
        TimeshiftQuery
    ),
    responses(
        (status = 200, description = "The archive: MPEG-TS (or the upstream's media type), or an HLS playlist of sealed links", content(
            (Vec<u8> = "video/mp2t"),
            (String = "application/vnd.apple.mpegurl")
        )),
        (status = 400, description = "Bad `start`, `duration` or `end`, or a start in the future", body = ErrorBody),
        (status = 404, description = "Unknown channel, no catch-up, or a start older than its archive keeps", body = ErrorBody),
        (status = 502, description = "Every source with an archive failed (`detail` lists each)", body = ErrorBody),
        (status = 504, description = "Every source with an archive timed out", body = ErrorBody)
    )
)]
async fn timeshift_route(
    State(s): State<AppState>,
    Path(file): Path<String>,
    Query(q): Query<TimeshiftQuery>,
    client: Option<Extension<ConnectInfo<SocketAddr>>>,
    viewer: super::viewer::Viewer,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let id = [".ts", ".m3u8"]
        .iter()
        .find_map(|ext| file.strip_suffix(ext))
        .unwrap_or(&file);
    let now = chrono::Utc::now().timestamp();
    let w = catchup::window(&q.start, q.duration, q.end.as_deref(), now)
        .map_err(|e| AppError::BadRequest(e.to_string()))?;
    match viewer.0 {
        // An account sees, and is counted for, only its own channels.
        Some(login) => {
            let peer = client.map(|Extension(ConnectInfo(p))| p);
            let minutes = w.duration.div_ceil(60);
            super::xtream::account_timeshift(
                &s,
                &login.account,
                (id, id),
                w.start,
                minutes,
                peer,
                &headers,
            )
            .await
        }
        None => play(&s, id, q.service.as_deref(), None, w, &headers).await,
    }
}

/// Plays channel `channel` (slug, number, or `SERVICE:ID`) from `start` (unix seconds,
/// UTC) for `minutes`, from the archives of its sources `account` may play: what every
/// account's catch-up route calls. `headers` are the client's request headers (for the
/// address of sealed links).
pub async fn timeshift(
    s: &AppState,
    channel: &str,
    start: i64,
    minutes: u32,
    account: &crate::accounts::Account,
    headers: &HeaderMap,
) -> Result<Response, AppError> {
    let now = chrono::Utc::now().timestamp();
    let w = catchup::window(&start.to_string(), Some(minutes), None, now)
        .map_err(|e| AppError::BadRequest(e.to_string()))?;
    play(s, channel, None, Some(account), w, headers).await
}

/// The catch-up of channel `id`: from `only`'s source when given, and from the
/// sources `account` may play when given.
async fn play(
    s: &AppState,
    id: &str,
    only: Option<&str>,
    account: Option<&crate::accounts::Account>,
    w: Window,
    headers: &HeaderMap,
) -> Result<Response, AppError> {
    if let Some(o) = only.filter(|o| s.registry.service(o).is_none()) {
        return Err(AppError::NotFound(format!("unknown service `{o}`")));
    }
    let (id, only) = s.registry.canonical(id, only).await?;
    let lineup = s.registry.lineup().await?;
    let channel = lineup
        .get(&id)
        .ok_or_else(|| AppError::NotFound(format!("unknown channel `{id}`")))?
        .clone();
    let days = account.map_or(channel.catchup_days, |a| a.catchup_days(&channel));
    if days == 0 {
        return Err(AppError::NotFound(format!(
            "channel `{id}` has no catch-up: none of its sources{} keeps an archive",
            if account.is_some() {
                " this account may play"
            } else {
                ""
            }
        )));
    }
    if !catchup::covers(days, &w) {
        return Err(AppError::NotFound(format!(
            "channel `{id}` keeps {days} day(s) of programmes; the start asked is older"
        )));
    }
    let base = base_url(&s.config, headers);
    // Players seek in an archive with byte ranges; the upstream answers them or not.
    let range = super::stream::request_range(headers);
    let mut tried = Vec::new();
    for (service, channel_id) in sources(&channel, only.as_deref()) {
        if !s.registry.is_enabled(service) || account.is_some_and(|a| !a.uses(service)) {
            continue;
        }
        match attempt(s, &id, service, channel_id, &w, &base, range).await {
            Ok(Some(resp)) => return Ok(resp),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(service, channel = %id, error = %e, "catch-up source failed, trying the next");
                tried.push(Attempt {
                    service: service.to_string(),
                    channel_id: channel_id.to_string(),
                    timeout: e.is_timeout(),
                    error: e.to_string(),
                    unlisted: false,
                });
            }
        }
    }
    if tried.is_empty() {
        return Err(AppError::NotFound(format!(
            "no enabled source of `{id}`{} has an archive reaching back to the start asked",
            only.map(|o| format!(" from `{o}`")).unwrap_or_default()
        )));
    }
    Err(AppError::AllSourcesFailed { channel: id, tried })
}

/// The channel's sources in its order, only `only`'s when given.
fn sources<'a>(
    channel: &'a LineupChannel,
    only: Option<&'a str>,
) -> impl Iterator<Item = (&'a str, &'a str)> {
    channel
        .sources
        .iter()
        .filter(move |src| only.is_none_or(|o| o == src.service))
        .map(|src| (src.service.as_str(), src.channel_id.as_str()))
}

/// One source's archive of lineup channel `lineup_id`: `Ok(None)` when it has none
/// for this window (not a failure). An HLS archive's links name the channel, pinned (a
/// catch-up does not fail over to the live sources; an account's tag on them is made
/// for the channel, so it is refused once the account may no longer watch it).
async fn attempt(
    s: &AppState,
    lineup_id: &str,
    service_name: &str,
    channel_id: &str,
    w: &Window,
    base: &str,
    range: Option<&str>,
) -> Result<Option<Response>, UpstreamError> {
    let Some(service) = s.registry.service(service_name) else {
        return Ok(None);
    };
    let listed = s.registry.channels_of(service_name).await?;
    let Some(channel): Option<&Channel> = listed.iter().find(|c| c.id == channel_id) else {
        return Ok(None);
    };
    let Some(archive) = channel
        .catchup
        .as_ref()
        .filter(|c| catchup::covers(c.days, w))
    else {
        return Ok(None);
    };
    let bound = service.http().timeout;
    let work = async {
        let live = service.resolve(channel).await?;
        let url = catchup::archive_url(archive, live.url.as_str(), w)
            .map_err(|e| UpstreamError::Invalid(e.to_string()))?;
        let url = Url::parse(&url).map_err(|e| UpstreamError::Invalid(e.to_string()))?;
        let fetched = service.fetch(&url, &live.headers, range).await?;
        Ok::<_, UpstreamError>((fetched, live.headers))
    };
    let (fetched, stream_headers) = tokio::time::timeout(bound, work)
        .await
        .unwrap_or(Err(UpstreamError::Timeout(bound)))?;
    tracing::info!(
        service = service_name,
        channel = channel_id,
        start = w.start,
        seconds = w.duration,
        "catch-up from the archive"
    );
    let limit = s.config.server.max_body_bytes;
    let response = match first_bytes(fetched, bound, limit).await? {
        Archive::Playlist { url, body } => playlist_response(
            crate::proxy::rewrite_playlist(
                &s.signer,
                base,
                service_name,
                crate::proxy::LinkChannel::pinned(lineup_id),
                &stream_headers,
                &url,
                &body,
            )
            .map_err(|e| UpstreamError::Invalid(e.to_string()))?,
        ),
        Archive::Media(fetched) => {
            let ctype = media_type(fetched.content_type.as_deref(), Kind::Media).to_string();
            passthrough_response(fetched, &ctype, false)
        }
    };
    Ok(Some(response))
}

/// What an archive answered: an HLS playlist (read whole) or media to stream through.
enum Archive {
    Playlist { url: Url, body: String },
    Media(Fetched),
}

/// Reads the archive's first bytes (within `bound`): an HLS playlist is read whole
/// (at most `limit` bytes),
/// anything else is streamed with those bytes put back in front. An archive that ends
/// before its first byte failed (panels answer an empty 200 for a window they lack).
async fn first_bytes(
    mut fetched: Fetched,
    bound: std::time::Duration,
    limit: usize,
) -> Result<Archive, UpstreamError> {
    let ctype = fetched
        .content_type
        .clone()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let first = tokio::time::timeout(bound, fetched.body.next())
        .await
        .map_err(|_| UpstreamError::Timeout(bound))?
        .transpose()?
        .filter(|b| !b.is_empty())
        .ok_or_else(|| UpstreamError::Invalid("the archive answered no bytes".into()))?;
    let is_playlist = ctype.contains("mpegurl") || first.starts_with(b"#EXTM3U");
    fetched.put_back(first);
    if !is_playlist {
        return Ok(Archive::Media(fetched));
    }
    let url = fetched.url.clone();
    let body = fetched.text(limit).await?;
    if !crate::hls::is_hls(&body) {
        return Err(UpstreamError::Invalid(
            "the archive answered a playlist type but not an HLS playlist".into(),
        ));
    }
    Ok(Archive::Playlist { url, body })
}
