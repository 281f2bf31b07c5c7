//! `/playlist.m3u`: the merged lineup as M3U Plus, each entry pointing at the channel's
//! freesky stream URL. Partial success: a failing service just has no entries.

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

use super::{base_url, AppState};
use crate::error::{AppError, ErrorBody};
use crate::lineup::Lineup;
use crate::m3u::{self, OutCatchup, OutEntry};

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
    headers: HeaderMap,
) -> Result<Response, AppError> {
    if let Some(name) = &f.service {
        if s.registry.service(name).is_none() {
            return Err(AppError::NotFound(format!("unknown service `{name}`")));
        }
    }
    let lineup = s.registry.lineup().await?;
    let body = render(&lineup, &base_url(&s.config, &headers), &f);
    Ok((
        [(header::CONTENT_TYPE, "audio/x-mpegurl; charset=utf-8")],
        body,
    )
        .into_response())
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
    headers: HeaderMap,
) -> Result<Response, AppError> {
    playlist(s, f, headers).await
}

/// The M3U Plus text of `lineup` for clients reaching us at `base`.
pub fn render(lineup: &Lineup, base: &str, f: &Filter) -> String {
    let chosen: Vec<_> = lineup
        .channels
        .iter()
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
        .collect();
    let archives: Vec<String> = chosen
        .iter()
        .map(|c| {
            if c.catchup_days == 0 {
                return String::new();
            }
            let template = super::timeshift::template(base, &c.id);
            match &f.service {
                Some(s) => format!(
                    "{template}&service={}",
                    url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()
                ),
                None => template,
            }
        })
        .collect();
    let guide = format!("{base}/epg.xml");
    m3u::render_with_catchup(
        Some(&guide),
        chosen
            .iter()
            .zip(urls.iter().zip(&archives))
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
