//! `/playlist.m3u`: the merged lineup as M3U Plus, each entry pointing at the channel's
//! freesky stream URL. Partial success: a failing service just has no entries.

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

use super::viewer::{Login, Viewer};
use super::{base_url, AppState};
use crate::error::{AppError, ErrorBody};
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
        .route("/playlist.m3u", get(playlist))
        .route("/playlist.m3u8", get(playlist_m3u8))
}

/// The playlist's operations, for `/api/openapi.json` (`super::openapi`).
#[derive(utoipa::OpenApi)]
#[openapi(paths(playlist, playlist_m3u8), components(schemas(ErrorBody)))]
pub(crate) struct Doc;

#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Filter {
    /// Only channels of this group (case-insensitive).
    pub group: Option<String>,
    /// Only channels that have a source from this service.
    pub service: Option<String>,
}

/// The merged lineup as M3U Plus, each entry pointing at the channel's stream URL.
#[utoipa::path(
    get,
    path = "/playlist.m3u",
    tag = "playlist",
    params(Filter),
    responses(
        (status = 200, description = "M3U Plus", body = String, content_type = "audio/x-mpegurl"),
        (status = 404, description = "`service` names no configured service", body = ErrorBody),
        (status = 500, description = "The state store failed", body = ErrorBody)
    )
)]
async fn playlist(
    State(s): State<AppState>,
    Query(f): Query<Filter>,
    viewer: Viewer,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    if let Some(name) = &f.service {
        if s.registry.service(name).is_none() {
            return Err(AppError::NotFound(format!("unknown service `{name}`")));
        }
    }
    let lineup = super::logos::lineup(&s, &headers).await?;
    let body = render_for(
        &lineup,
        &base_url(&s.config, &headers),
        &f,
        viewer.0.as_ref(),
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

/// The M3U Plus text of `lineup` for clients reaching us at `base`.
pub fn render(lineup: &Lineup, base: &str, f: &Filter) -> String {
    render_for(lineup, base, f, None)
}

/// `render` for a logged-in viewer: only the channels its account sees, every link
/// (streams, guide) carrying its login.
fn render_for(lineup: &Lineup, base: &str, f: &Filter, viewer: Option<&Login>) -> String {
    let login = viewer.map(|v| {
        let enc = |t: &str| url::form_urlencoded::byte_serialize(t.as_bytes()).collect::<String>();
        format!(
            "username={}&password={}",
            enc(&v.account.name),
            enc(&v.password)
        )
    });
    let chosen: Vec<_> = lineup
        .channels
        .iter()
        .filter(|c| viewer.is_none_or(|v| v.account.sees(c)))
        .filter(|c| {
            f.group
                .as_deref()
                .is_none_or(|g| c.group.eq_ignore_ascii_case(g))
        })
        .filter(|c| {
            f.service
                .as_deref()
                .is_none_or(|s| c.sources.iter().any(|src| src.service == s))
        })
        .collect();
    let urls: Vec<String> = chosen
        .iter()
        .map(|c| match &f.service {
            Some(s) => format!(
                "{base}/api/stream/{}.m3u8?service={}",
                c.id,
                url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()
            ),
            None => format!("{base}/api/stream/{}.m3u8", c.id),
        })
        .map(|url| match &login {
            Some(l) if url.contains('?') => format!("{url}&{l}"),
            Some(l) => format!("{url}?{l}"),
            None => url,
        })
        .collect();
    let archives: Vec<String> = chosen
        .iter()
        .map(|c| {
            if c.catchup_days == 0 {
                return String::new();
            }
            let template = super::timeshift::template(base, &c.id);
            let template = match &f.service {
                Some(s) => format!(
                    "{template}&service={}",
                    url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()
                ),
                None => template,
            };
            match &login {
                Some(l) => format!("{template}&{l}"),
                None => template,
            }
        })
        .collect();
    let guide = match &login {
        Some(l) => format!("{base}/epg.xml?{l}"),
        None => format!("{base}/epg.xml"),
    };
    render_entries(&chosen, &urls, &archives, &guide)
}

/// M3U Plus of `chosen` channels, each with its URL in `urls` and its catch-up
/// template in `archives` (empty: none), the guide at `guide`.
pub(super) fn render_entries(
    chosen: &[&LineupChannel],
    urls: &[String],
    archives: &[String],
    guide: &str,
) -> String {
    m3u::render_with_catchup(
        Some(guide),
        chosen
            .iter()
            .zip(urls.iter().zip(archives))
            .map(|(c, (url, archive))| {
                let entry = OutEntry {
                    tvg_id: &c.guide_id,
                    tvg_name: &c.name,
                    tvg_logo: &c.logo,
                    tvg_chno: c.number,
                    group: &c.group,
                    name: &c.name,
                    url,
                };
                let catchup = OutCatchup {
                    days: c.catchup_days,
                    source: archive,
                };
                (entry, Some(catchup))
            }),
    )
}
