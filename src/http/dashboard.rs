//! The web dashboard at `/`: a page rendered on the server from `templates/`
//! (askama, HTML-escaped: everything shown comes from upstreams), readable without
//! JavaScript. It shows every service (health, latency, channels, last error, circuit,
//! the last hour as an inline SVG chart) with enable/disable and priority controls, the
//! playlist, guide and tuner URLs, and the channels (sources, guide now/next, active
//! viewers) filtered by `?q=` and `?group=`. A small script (`/dashboard.js`) adds the
//! controls (admin calls on the JSON API), filtering as you type, copy buttons and the
//! per-channel test and the in-page player; the CSS is `/dashboard.css`. The player
//! uses hls.js (vendored in `assets/vendor/hls.js/`, served at `/assets/hls.light.min.js`)
//! where the browser has no native HLS.

use std::collections::{BTreeSet, HashMap};

use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

use super::{base_url, AppState};
use crate::error::AppError;

const CSS: &str = include_str!("../../templates/dashboard.css");
const JS: &str = include_str!("../../templates/dashboard.js");
/// Assets are named with the version (`?v=`), so a long cache is safe.
const ASSET_CACHE: &str = "public, max-age=86400";
/// hls.js, pinned: the npm package's `dist/hls.light.min.js`, unchanged (version,
/// checksum and licence in `assets/vendor/hls.js/`). Served by freesky itself: the
/// dashboard works without reaching any CDN.
const HLS_JS: &str = include_str!("../../assets/vendor/hls.js/hls.light.min.js");
const HLS_JS_VERSION: &str = "1.6.19";
/// The page asks for `?v={HLS_JS_VERSION}`: a new version is a new URL, so this one
/// never changes and browsers may keep it a year without asking again.
const HLS_JS_CACHE: &str = "public, max-age=31536000, immutable";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(dashboard))
        .route("/dashboard.css", get(css))
        .route("/dashboard.js", get(js))
        .route("/assets/hls.light.min.js", get(hls_js))
}

/// The dashboard's routes, for `/api/openapi.json`.
#[derive(utoipa::OpenApi)]
#[openapi(paths(dashboard, css, js, hls_js))]
pub(crate) struct Doc;

/// `?q=` (search in names, groups and tags, accents and case ignored) and `?group=`
/// (one group exactly); empty means no filter.
#[derive(Deserialize, Default)]
struct Filter {
    #[serde(default)]
    q: String,
    #[serde(default)]
    group: String,
}

/// One service row.
struct ServiceRow {
    name: String,
    kind: String,
    description: String,
    /// `enabled` or `disabled`.
    state: &'static str,
    healthy: bool,
    circuit: String,
    /// `123 ms` or `–`.
    latency: String,
    channels: usize,
    last_error: String,
    priority: i64,
    /// The toggle button's text: what it would do.
    toggle: &'static str,
    /// The last hour as SVG, drawn by `history` from numbers only (inserted unescaped).
    chart: String,
    /// The guide's state in words, empty when the service has none.
    guide: String,
}

/// One channel row.
struct ChannelRow {
    id: String,
    number: u32,
    name: String,
    group: String,
    /// Service names, in the order fallback tries them.
    sources: String,
    now: String,
    next: String,
    viewers: usize,
    m3u8: String,
    ts: String,
}

/// One viewer account row (never its password).
struct AccountRow {
    name: String,
    status: &'static str,
    /// `open / max` (max `∞` for unlimited).
    connections: String,
    /// What its open connections watch: `channel (kind, client)`, comma-separated.
    watching: String,
}

/// One option of the group filter.
struct GroupOption {
    name: String,
    selected: bool,
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct Page {
    version: &'static str,
    services: Vec<ServiceRow>,
    channels: Vec<ChannelRow>,
    /// Every group of the lineup, sorted.
    groups: Vec<GroupOption>,
    q: String,
    /// Channels in the lineup, before the filter.
    total: usize,
    /// Why the lineup could not be built; the page is shown anyway.
    lineup_error: Option<String>,
    url_playlist: String,
    url_guide: String,
    url_tuner: String,
    admin_token_set: bool,
    /// Where the player loads hls.js from, versioned.
    hls_js_url: String,
    /// Viewer accounts and what they watch now (empty: the section is not shown).
    accounts: Vec<AccountRow>,
}

/// The dashboard page.
#[utoipa::path(
    get,
    path = "/",
    tag = "dashboard",
    params(
        ("q" = Option<String>, Query, description = "Only channels whose name, group or tags contain this (accents and case ignored)"),
        ("group" = Option<String>, Query, description = "Only channels of this group"),
    ),
    responses((status = 200, description = "The web dashboard (server-rendered HTML, readable without JavaScript)", content_type = "text/html"))
)]
async fn dashboard(
    State(s): State<AppState>,
    headers: HeaderMap,
    filter: Result<Query<Filter>, QueryRejection>,
) -> Result<Html<String>, AppError> {
    // A query that is not ours (a repeated `q`...) shows the page unfiltered.
    let filter = filter.map(|Query(f)| f).unwrap_or_default();
    let base = base_url(&s.config, &headers);

    // The lineup first: building it calls the services, whose status then shows how.
    let lineup = s.registry.lineup().await;
    let mut statuses = s.registry.status();
    let services = statuses
        .iter()
        .map(|st| {
            let chart = s
                .registry
                .history(&st.name)
                .unwrap_or_else(|| {
                    crate::history::History::new().snapshot(std::time::SystemTime::now())
                })
                .svg();
            let guide = match s.guides.status_of(&st.name) {
                None => String::new(),
                Some(g) => match g.last_error {
                    Some(e) => format!("guide failed: {e}"),
                    None => format!(
                        "guide: {} channels, {} programmes",
                        g.channels, g.programmes
                    ),
                },
            };
            ServiceRow {
                name: st.name.clone(),
                kind: st.kind.clone(),
                description: st.description.clone(),
                state: if st.enabled { "enabled" } else { "disabled" },
                healthy: st.healthy,
                circuit: st.circuit.clone(),
                latency: st
                    .latency_ewma_ms
                    .or(st.latency_ms)
                    .map_or_else(|| "–".to_string(), |ms| format!("{ms} ms")),
                channels: st.channel_count,
                last_error: st.last_error.clone().unwrap_or_default(),
                priority: st.priority,
                toggle: if st.enabled { "disable" } else { "enable" },
                chart,
                guide,
            }
        })
        .collect();

    // The guide's now/next follows the services' priority, as `/epg.xml` does.
    statuses.retain(|st| st.enabled);
    statuses.sort_by_key(|st| st.priority);
    let order: Vec<String> = statuses.into_iter().map(|st| st.name).collect();
    let guide = s.guides.now_next(&order, chrono::Utc::now().timestamp());
    let viewers = s.sessions.viewers();

    let (mut channels, mut groups, mut total, mut lineup_error) =
        (Vec::new(), BTreeSet::new(), 0, None);
    match lineup {
        Err(e) => lineup_error = Some(e.to_string()),
        Ok(lineup) => {
            total = lineup.channels.len();
            groups.extend(
                lineup
                    .channels
                    .iter()
                    .filter(|c| !c.group.is_empty())
                    .map(|c| c.group.to_string()),
            );
            channels = lineup
                .search(&filter.q)
                .into_iter()
                .filter(|c| filter.group.is_empty() || c.group == filter.group)
                .map(|c| channel_row(c, &base, &guide, &viewers))
                .collect();
        }
    }
    let page = Page {
        version: env!("CARGO_PKG_VERSION"),
        services,
        channels,
        groups: groups
            .into_iter()
            .map(|name| GroupOption {
                selected: name == filter.group,
                name,
            })
            .collect(),
        q: filter.q,
        total,
        lineup_error,
        url_playlist: format!("{base}/playlist.m3u"),
        url_guide: format!("{base}/epg.xml"),
        url_tuner: base,
        admin_token_set: !s.config.server.admin_token.expose().is_empty(),
        hls_js_url: format!("/assets/hls.light.min.js?v={HLS_JS_VERSION}"),
        accounts: s
            .accounts
            .list()
            .into_iter()
            .map(|a| AccountRow {
                connections: match a.max_connections {
                    0 => format!("{} / ∞", a.active_cons),
                    max => format!("{} / {max}", a.active_cons),
                },
                watching: a
                    .connections
                    .iter()
                    .map(|c| {
                        format!(
                            "{} ({}, {})",
                            c.channel,
                            c.kind,
                            c.client.as_deref().unwrap_or("-")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
                name: a.name,
                status: a.status,
            })
            .collect(),
    };
    let html = page
        .render()
        .map_err(|e| AppError::Internal(format!("dashboard template: {e}")))?;
    Ok(Html(html))
}

fn channel_row(
    c: &crate::model::LineupChannel,
    base: &str,
    guide: &HashMap<String, (Option<String>, Option<String>)>,
    viewers: &HashMap<String, usize>,
) -> ChannelRow {
    let (now, next) = guide.get(c.id.as_str()).cloned().unwrap_or_default();
    let mut sources: Vec<&str> = Vec::new();
    for src in &c.sources {
        if !sources.contains(&src.service.as_str()) {
            sources.push(&src.service);
        }
    }
    // `.ts` viewers joined by id, or by number through `/api/stream/{n}.ts`.
    let viewers = viewers.get(c.id.as_str()).copied().unwrap_or(0)
        + viewers.get(&c.number.to_string()).copied().unwrap_or(0);
    ChannelRow {
        id: c.id.to_string(),
        number: c.number,
        name: c.name.to_string(),
        group: c.group.to_string(),
        sources: sources.join(", "),
        now: now.unwrap_or_default(),
        next: next.unwrap_or_default(),
        viewers,
        m3u8: format!("{base}/api/stream/{}.m3u8", c.id),
        ts: format!("{base}/api/stream/{}.ts", c.id),
    }
}

/// The dashboard's stylesheet.
#[utoipa::path(
    get,
    path = "/dashboard.css",
    tag = "dashboard",
    responses((status = 200, description = "The dashboard's stylesheet", content_type = "text/css"))
)]
async fn css() -> impl IntoResponse {
    asset("text/css; charset=utf-8", ASSET_CACHE, CSS)
}

/// The dashboard's script (controls, filtering as you type, copy, channel test).
#[utoipa::path(
    get,
    path = "/dashboard.js",
    tag = "dashboard",
    responses((status = 200, description = "The dashboard's script", content_type = "text/javascript"))
)]
async fn js() -> impl IntoResponse {
    asset(JAVASCRIPT, ASSET_CACHE, JS)
}

/// hls.js, which the dashboard's player loads on the first *play* in a browser
/// without native HLS.
#[utoipa::path(
    get,
    path = "/assets/hls.light.min.js",
    tag = "dashboard",
    responses((status = 200, description = "hls.js 1.6.19 (light build, Apache-2.0), for the dashboard's player; cached for a year", content_type = "text/javascript"))
)]
async fn hls_js() -> impl IntoResponse {
    asset(JAVASCRIPT, HLS_JS_CACHE, HLS_JS)
}

const JAVASCRIPT: &str = "text/javascript; charset=utf-8";

/// A static file of the page: its type and how long browsers may keep it.
fn asset(content_type: &'static str, cache: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, cache),
        ],
        body,
    )
}
