//! The web dashboard at `/`: a page rendered on the server from `templates/`
//! (askama, HTML-escaped: everything shown comes from upstreams). It shows every
//! service (health, latency, channels, last error, circuit, the last hour as an inline
//! SVG chart) with enable/disable and priority controls, the playlist, guide and tuner
//! URLs, and the viewer accounts. The page holds no channel rows, so it stays a few
//! kilobytes whatever the lineup's size: its script (`/dashboard.js`) browses the
//! channels a page at a time through `GET /api/channels` (search, group filter, counts),
//! and the movie and series catalogues and the guide matches the same way. Without
//! JavaScript, a search submitted as a form (`?q=`, `?group=`) is answered on the server
//! with the first page of matches. The script also adds the admin controls, copy
//! buttons, the per-channel test and the in-page player, which uses hls.js (vendored in
//! `assets/vendor/hls.js/`, served at `/assets/hls.light.min.js`) where the browser has
//! no native HLS. The CSS is `/dashboard.css`. With `server.require_account` the services
//! and the lineup are the admin's (as the lineup API is): others get the page without them.

use std::collections::BTreeSet;

use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

use super::{base_url, AppState};
use crate::http::error::AppError;

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
/// Channel rows a search without JavaScript shows: the first page of its matches.
const NO_SCRIPT_ROWS: usize = 50;
/// Group options written into the page, and the bytes of their names at most; the
/// script replaces them with the API's list, so this only bounds the page's size for
/// a lineup of many (or long-named) groups.
const PAGE_GROUPS: usize = 300;
const PAGE_GROUP_BYTES: usize = 32 * 1024;

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
    #[serde(default)]
    service: String,
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
    /// The first rows of a search made without JavaScript (`?q=`, `?group=`); none
    /// without a search: the script fetches the channels itself.
    channels: Vec<ChannelRow>,
    /// Whether a search was asked for (`?q=` or `?group=` not empty).
    searched: bool,
    /// Channels matching that search (more than `channels.len()` when cut).
    matches: usize,
    /// The lineup's groups, sorted (the first `PAGE_GROUPS`, `PAGE_GROUP_BYTES` at most).
    groups: Vec<GroupOption>,
    q: String,
    /// The service the search keeps channels of (`?service=`; empty: every one).
    service: String,
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
    /// There are accounts, but this request may not see them (not an admin call).
    accounts_hidden: bool,
    /// The extra guides (`[[guides]]`) and what their last read did (empty, as the
    /// services are, when the lineup is hidden).
    guides: Vec<GuideRow>,
    /// With `require_account`, the services and the lineup are the admin's (as the
    /// lineup API is): a caller without the admin token gets the page without them.
    lineup_hidden: bool,
}

/// One extra guide (`[[guides]]`) on the page.
struct GuideRow {
    name: String,
    /// Its address, without query or credentials.
    source: String,
    /// What its last read did, as a service's guide is told.
    state: String,
    last_ok: String,
}

/// A guide's state in words: its channels and programmes, or why its last read failed.
fn guide_state(g: &crate::guide::GuideStatus) -> String {
    match &g.last_error {
        Some(e) => format!("guide failed: {e}"),
        None => format!(
            "guide: {} channels, {} programmes",
            g.channels, g.programmes
        ),
    }
}

/// The dashboard page.
#[utoipa::path(
    get,
    path = "/",
    tag = "dashboard",
    params(
        ("q" = Option<String>, Query, description = "A search without JavaScript: the page lists the first 50 channels whose name, group or tags contain this (accents and case ignored)"),
        ("group" = Option<String>, Query, description = "A search without JavaScript: only channels of this group"),
        ("service" = Option<String>, Query, description = "A search without JavaScript: only channels with a source from this service"),
    ),
    responses((status = 200, description = "The web dashboard (server-rendered HTML of a few kilobytes whatever the lineup's size; its script browses channels, movies, series and guide matches through the JSON API)", content_type = "text/html"))
)]
async fn dashboard(
    State(s): State<AppState>,
    headers: HeaderMap,
    admin: Result<super::access::Admin, AppError>,
    filter: Result<Query<Filter>, QueryRejection>,
) -> Result<impl IntoResponse, AppError> {
    // Who watches what, and from where, is for whoever may call `/api/users`.
    let show_accounts = admin.is_ok();
    // With `require_account` the lineup API answers the admin only
    // (`viewer::lineup_api_guard`): the page shows the same to the same callers.
    let lineup_hidden = s.config.server.require_account && admin.is_err();
    // A query that is not ours (a repeated `q`...) shows the page unfiltered.
    let filter = filter.map(|Query(f)| f).unwrap_or_default();
    let base = base_url(&s.config, &headers);
    let csp = policy(&base);

    // The lineup first: building it calls the services, whose status then shows how.
    let lineup = if lineup_hidden {
        None
    } else {
        Some(s.registry.lineup().await)
    };
    let statuses = if lineup_hidden {
        Vec::new()
    } else {
        s.registry.status()
    };
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
            let guide = s
                .guides
                .status_of(&st.name)
                .map_or_else(String::new, |g| guide_state(&g));
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
                // Its calls' last error, else its streams' (as the script shows it).
                last_error: st
                    .last_error
                    .clone()
                    .or_else(|| {
                        let at = st.last_stream_error_at.as_deref().unwrap_or_default();
                        st.last_stream_error
                            .as_ref()
                            .map(|e| format!("stream, {at}: {e}"))
                    })
                    .unwrap_or_default(),
                priority: st.priority,
                toggle: if st.enabled { "disable" } else { "enable" },
                chart,
                guide,
            }
        })
        .collect();

    let searched =
        !filter.q.trim().is_empty() || !filter.group.is_empty() || !filter.service.is_empty();
    let (mut channels, mut groups, mut total, mut matches, mut lineup_error) =
        (Vec::new(), BTreeSet::new(), 0, 0, None);
    match &lineup {
        None => {}
        Some(Err(e)) => lineup_error = Some(e.to_string()),
        Some(Ok(lineup)) => {
            total = lineup.channels.len();
            groups.extend(
                lineup
                    .channels
                    .iter()
                    .filter(|c| !c.group.is_empty())
                    .map(|c| c.group.as_str()),
            );
            if searched {
                let found: Vec<_> = lineup
                    .search(&filter.q)
                    .into_iter()
                    .filter(|c| filter.group.is_empty() || c.group == filter.group)
                    .filter(|c| {
                        filter.service.is_empty()
                            || c.sources.iter().any(|src| src.service == filter.service)
                    })
                    .collect();
                matches = found.len();
                let shown = &found[..found.len().min(NO_SCRIPT_ROWS)];
                let mut live = super::channels_page::live(&s, shown).await;
                channels = shown
                    .iter()
                    .map(|c| channel_row(c, &base, live.remove(c.id.as_str())))
                    .collect();
            }
            let mut bytes = 0;
            groups = groups
                .into_iter()
                .take(PAGE_GROUPS)
                .take_while(|g| {
                    bytes += g.len();
                    bytes <= PAGE_GROUP_BYTES
                })
                .collect();
        }
    }
    let page = Page {
        version: env!("CARGO_PKG_VERSION"),
        services,
        channels,
        searched,
        matches,
        groups: groups
            .into_iter()
            .map(|name| GroupOption {
                selected: name == filter.group,
                name: name.to_string(),
            })
            .collect(),
        q: filter.q,
        service: filter.service,
        total,
        lineup_error,
        url_playlist: format!("{base}/playlist.m3u"),
        url_guide: format!("{base}/epg.xml"),
        url_tuner: base,
        admin_token_set: !s.config.server.admin_token.expose().is_empty(),
        hls_js_url: format!("/assets/hls.light.min.js?v={HLS_JS_VERSION}"),
        accounts_hidden: !show_accounts && !s.accounts.is_empty(),
        lineup_hidden,
        guides: if lineup_hidden {
            Vec::new()
        } else {
            s.guides
                .extra_status()
                .into_iter()
                .map(|(name, g)| GuideRow {
                    name,
                    state: guide_state(&g),
                    source: g.source,
                    last_ok: g.last_ok.unwrap_or_else(|| "–".into()),
                })
                .collect()
        },
        accounts: s
            .accounts
            .list()
            .into_iter()
            .filter(|_| show_accounts)
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
    Ok(([(header::CONTENT_SECURITY_POLICY, csp)], Html(html)))
}

/// The page's Content-Security-Policy: its own script and stylesheet only (no inline
/// script or style, no `eval`), logos from anywhere (they are the providers' in
/// `direct` mode), and streams from freesky as the links name it (`base`: the public
/// URL may be another origin than the page's), played through Media Source buffers.
fn policy(base: &str) -> HeaderValue {
    let streams = url::Url::parse(base)
        .ok()
        .map(|u| u.origin().ascii_serialization())
        .filter(|o| o != "null")
        .unwrap_or_default();
    let text = format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; \
         img-src 'self' http: https: data:; media-src 'self' blob: {streams}; \
         connect-src 'self' {streams}; worker-src 'self' blob:; object-src 'none'; \
         base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    );
    HeaderValue::from_str(&text).unwrap_or_else(|_| {
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; \
             img-src 'self' http: https: data:; media-src 'self' blob:; \
             worker-src 'self' blob:; object-src 'none'; base-uri 'none'; \
             form-action 'self'; frame-ancestors 'none'",
        )
    })
}

fn channel_row(
    c: &crate::model::LineupChannel,
    base: &str,
    live: Option<super::channels_page::Live>,
) -> ChannelRow {
    let mut sources: Vec<&str> = Vec::new();
    for src in &c.sources {
        if !sources.contains(&src.service.as_str()) {
            sources.push(&src.service);
        }
    }
    let (now, next, viewers) = live.map_or((None, None, 0), |l| (l.now, l.next, l.viewers));
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
