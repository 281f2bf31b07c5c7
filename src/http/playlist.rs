//! `/playlist.m3u`: the merged lineup as M3U Plus, each entry pointing at the channel's
//! freesky stream URL. Partial success: a failing service just has no entries.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use serde::Deserialize;

use super::viewer::{Login, Viewer};
use super::{base_url, AppState};
use crate::http::error::{AppError, ErrorBody};
use crate::lineup::Lineup;
use crate::m3u::{self, OutCatchup, OutEntry};
use crate::model::LineupChannel;

/// The Content-Type of every M3U freesky serves. Without parameters: mpv recognises
/// a playlist by this exact type (a `; charset=utf-8` hides it), and with an
/// `#EXTM3U url-tvg=...` first line and no `.m3u` in the URL (`get.php`) it has no
/// other way to tell. The text is UTF-8, as M3U Plus readers assume.
pub(crate) const M3U_CONTENT_TYPE: &str = "audio/x-mpegurl";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/playlist.m3u", get(playlist).layer(super::gzipped()))
        .route("/playlist.m3u8", get(playlist_m3u8).layer(super::gzipped()))
}

/// The playlist's operations, for `/api/openapi.json` (`super::openapi`).
#[derive(utoipa::OpenApi)]
#[openapi(paths(playlist, playlist_m3u8), components(schemas(ErrorBody)))]
pub(crate) struct Doc;

#[derive(Deserialize, Default, Clone, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Filter {
    /// Only channels of this group (case-insensitive; `Uncategorized`: those without
    /// one, as the API and players list them).
    pub group: Option<String>,
    /// Only channels that have a source from this service.
    pub service: Option<String>,
    /// `ts`: stream URLs of the channels' continuous MPEG-TS (`/api/stream/{id}.ts`,
    /// shared by every viewer of a channel: what Jellyfin's M3U tuner shares); `m3u8`
    /// or none: their HLS playlists.
    pub output: Option<String>,
}

/// The merged lineup as M3U Plus, each entry pointing at the channel's stream URL.
#[utoipa::path(
    get,
    path = "/playlist.m3u",
    tag = "playlist",
    params(Filter),
    responses(
        (status = 200, description = "M3U Plus", body = String, content_type = "audio/x-mpegurl"),
        (status = 400, description = "`output` is neither `ts` nor `m3u8`", body = ErrorBody),
        (status = 404, description = "`service` names no configured service", body = ErrorBody),
        (status = 500, description = "The state store failed", body = ErrorBody)
    )
)]
async fn playlist(
    State(s): State<AppState>,
    Query(mut f): Query<Filter>,
    viewer: Viewer,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    // Any case; empty is the default.
    f.output = f
        .output
        .map(|o| o.trim().to_ascii_lowercase())
        .filter(|o| !o.is_empty());
    if let Some(name) = &f.service {
        if s.registry.service(name).is_none() {
            return Err(AppError::NotFound(format!("unknown service `{name}`")));
        }
    }
    if let Some(o) = f
        .output
        .as_deref()
        .filter(|o| !matches!(*o, "ts" | "m3u8" | "hls"))
    {
        return Err(AppError::BadRequest(format!(
            "output `{}`: `ts` (MPEG-TS) or `m3u8` (HLS, the default)",
            o.escape_debug()
        )));
    }
    let lineup = super::logos::lineup(&s, &headers).await?;
    let out = Out::new(&base_url(&s.config, &headers), f, viewer.0);
    let mut head = String::new();
    out.head(&mut head);
    let count = lineup.channels.len();
    let body = chunked_body(
        head,
        count,
        move |i, buf| {
            let c = &lineup.channels[i];
            if out.wanted(c) {
                out.entry(buf, c);
            }
        },
        "",
    );
    Ok(([(header::CONTENT_TYPE, M3U_CONTENT_TYPE)], body).into_response())
}

/// `/playlist.m3u` under the name some players insist on.
#[utoipa::path(
    get,
    path = "/playlist.m3u8",
    tag = "playlist",
    params(Filter),
    responses(
        (status = 200, description = "M3U Plus", body = String, content_type = "audio/x-mpegurl"),
        (status = 400, description = "`output` is neither `ts` nor `m3u8`", body = ErrorBody),
        (status = 404, description = "`service` names no configured service", body = ErrorBody),
        (status = 500, description = "The state store failed", body = ErrorBody)
    )
)]
async fn playlist_m3u8(
    s: State<AppState>,
    f: Query<Filter>,
    viewer: Viewer,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    playlist(s, f, viewer, headers).await
}

/// The M3U Plus text of `lineup` for clients reaching us at `base`, whole.
pub fn render(lineup: &Lineup, base: &str, f: &Filter) -> String {
    let out = Out::new(base, f.clone(), None);
    let mut text = String::new();
    out.head(&mut text);
    for c in lineup.channels.iter().filter(|c| out.wanted(c)) {
        out.entry(&mut text, c);
    }
    text
}

/// Channels written per chunk of a streamed listing (about 200 bytes each in M3U, 300
/// in JSON): chunks of tens of kilobytes.
const BATCH: usize = 256;

/// A response body written `BATCH` items at a time as the client reads it: `head`,
/// then `write(i, buf)` appending item `i` for each of `0..count`, then `tail`.
/// Listings of a large lineup are tens of megabytes; made whole, each request would
/// hold one more copy of the lineup as text. `write` reads the shared lineup snapshot
/// it holds, not a copy.
pub(super) fn chunked_body(
    head: String,
    count: usize,
    mut write: impl FnMut(usize, &mut String) + Send + 'static,
    tail: &'static str,
) -> Body {
    let mut head = Some(head);
    let mut next = 0;
    let mut done = false;
    let chunks = std::iter::from_fn(move || {
        if done {
            return None;
        }
        let mut buf = head.take().unwrap_or_default();
        buf.reserve(BATCH * 256);
        let end = (next + BATCH).min(count);
        for i in next..end {
            write(i, &mut buf);
        }
        next = end;
        if next >= count {
            buf.push_str(tail);
            done = true;
        }
        Some(Ok::<_, std::convert::Infallible>(Bytes::from(buf)))
    });
    Body::from_stream(futures::stream::iter(chunks))
}

/// What a playlist request writes: its filter, its links (with the viewer's login,
/// when a viewer asked) and each line of it.
struct Out {
    base: String,
    filter: Filter,
    viewer: Option<Login>,
    /// `username=...&password=...` for a viewer's links.
    login: Option<String>,
    /// `service=...` when the playlist is pinned to one service.
    service: Option<String>,
}

impl Out {
    fn new(base: &str, filter: Filter, viewer: Option<Login>) -> Self {
        let enc = |t: &str| url::form_urlencoded::byte_serialize(t.as_bytes()).collect::<String>();
        let login = viewer.as_ref().map(|v| {
            format!(
                "username={}&password={}",
                enc(&v.account.name),
                enc(&v.password)
            )
        });
        let service = filter
            .service
            .as_deref()
            .map(|s| format!("service={}", enc(s)));
        Self {
            base: base.to_string(),
            filter,
            viewer,
            login,
            service,
        }
    }

    /// Whether `c` is in this playlist: seen by the viewer, in the group and service
    /// asked for.
    fn wanted(&self, c: &LineupChannel) -> bool {
        self.viewer.as_ref().is_none_or(|v| v.account.sees(c))
            // Channels without a group as players and the API show them.
            && self.filter.group.as_deref().is_none_or(|g| {
                crate::accounts::shown_group(&c.group).eq_ignore_ascii_case(g)
            })
            && self
                .filter
                .service
                .as_deref()
                .is_none_or(|s| c.sources.iter().any(|src| src.service == s))
    }

    /// The `#EXTM3U` line, naming the guide.
    fn head(&self, buf: &mut String) {
        let guide = match &self.login {
            Some(l) => format!("{}/epg.xml?{l}", self.base),
            None => format!("{}/epg.xml", self.base),
        };
        m3u::render_header(buf, Some(&guide));
    }

    /// The entry of `c`: its stream URL and, with catch-up, its archive template.
    fn entry(&self, buf: &mut String, c: &LineupChannel) {
        let ext = if self.filter.output.as_deref() == Some("ts") {
            "ts"
        } else {
            "m3u8"
        };
        let mut url = format!("{}/api/stream/{}.{ext}", self.base, c.id);
        let mut sep = '?';
        for part in [&self.service, &self.login].into_iter().flatten() {
            url.push(sep);
            url.push_str(part);
            sep = '&';
        }
        // An account, or a playlist of one service, gets the days its sources keep.
        let days = match (&self.viewer, self.filter.service.as_deref()) {
            (None, None) => c.catchup_days,
            (viewer, only) => c.catchup_days_of(|s| {
                viewer.as_ref().is_none_or(|v| v.account.uses(s)) && only.is_none_or(|o| o == s)
            }),
        };
        let archive = if days == 0 {
            String::new()
        } else {
            let mut template = super::timeshift::template(&self.base, &c.id);
            for part in [&self.service, &self.login].into_iter().flatten() {
                template.push('&');
                template.push_str(part);
            }
            template
        };
        let (entry, catchup) = out_entry(c, &url, &archive, days);
        m3u::render_entry(buf, &entry, catchup);
    }
}

/// The playlist line of `c`, played at `url`, its catch-up template `archive` (empty:
/// none) of `days`.
fn out_entry<'a>(
    c: &'a LineupChannel,
    url: &'a str,
    archive: &'a str,
    days: u32,
) -> (OutEntry<'a>, Option<OutCatchup<'a>>) {
    let entry = OutEntry {
        tvg_id: &c.guide_id,
        tvg_name: &c.name,
        tvg_logo: &c.logo,
        tvg_chno: c.number,
        station_id: &c.station_id,
        group: &c.group,
        name: &c.name,
        url,
    };
    let catchup = OutCatchup {
        days,
        source: archive,
    };
    (entry, Some(catchup))
}

/// M3U Plus of the channels of `lineup` at the indices `chosen`, each with the URL,
/// catch-up template (empty: none) and its days `links` gives it, the guide at `guide`: streamed,
/// written batch by batch as the client reads (never the whole text in memory).
pub(super) fn entries_body(
    lineup: Arc<Lineup>,
    chosen: Vec<usize>,
    guide: &str,
    links: impl Fn(&LineupChannel) -> (String, String, u32) + Send + 'static,
) -> Body {
    let mut head = String::new();
    m3u::render_header(&mut head, Some(guide));
    chunked_body(
        head,
        chosen.len(),
        move |i, buf| {
            let c = &lineup.channels[chosen[i]];
            let (url, archive, days) = links(c);
            let (entry, catchup) = out_entry(c, &url, &archive, days);
            m3u::render_entry(buf, &entry, catchup);
        },
        "",
    )
}
