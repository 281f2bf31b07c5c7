//! Movies and series over HTTP: the catalogue API (`/api/movies`, `/api/series`, their
//! `/{id}` details), the media (`/api/movie/{id}`, `/api/episode/{id}`), `/vod.m3u`
//! for VLC and Kodi, an admin refresh, and the Xtream movie and series actions and
//! paths that `http::xtream` routes here. Every answer holds only what the account
//! sees (with `server.require_account`, or on the Xtream routes); a title it does not
//! see is 404 like an unknown one. Long lists are streamed in chunks, never built
//! whole in memory.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::access::Admin;
use super::viewer::Viewer;
use super::{base_url, AppState};
use crate::accounts::Account;
use crate::http::error::{AppError, ErrorBody};
use crate::vod::catalogue::{Catalogue, FactsRef, Filter, TitleRef};
use crate::vod::library::{sees, visible, SeriesEpisode, Snapshot, VodStatus};
use crate::vod::{Details, MediaSource, VodKind};

/// Titles per page when `limit` is not given, and at most.
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 500;
/// Entries serialized per chunk of a streamed list.
const CHUNK: usize = 1000;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/movies", get(list_movies))
        .route("/api/series", get(list_series))
        .route("/api/movies/{id}", get(movie_details))
        .route("/api/series/{id}", get(series_details))
        .route("/api/movie/{id}", get(movie_media))
        .route("/api/episode/{id}", get(episode_media))
        .route("/api/vod/refresh", post(refresh_vod))
        .route("/vod.m3u", get(vod_m3u).layer(super::gzipped()))
}

/// The catalogue routes' operations, for `/api/openapi.json`.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        list_movies,
        list_series,
        movie_details,
        series_details,
        movie_media,
        episode_media,
        refresh_vod,
        vod_m3u
    ),
    components(schemas(TitlePage, TitleItem, CategoryCount, VodStatus, ErrorBody))
)]
pub(crate) struct Doc;

fn account(viewer: &Viewer) -> Option<&Account> {
    viewer.0.as_ref().map(|l| &*l.account)
}

/// `?q=&category=&offset=&limit=`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only titles whose name contains this (case and accents ignored).
    pub q: Option<String>,
    /// Only titles of this category (case ignored).
    pub category: Option<String>,
    /// Titles to skip (default 0).
    pub offset: Option<usize>,
    /// Titles at most (default 50, at most 500).
    pub limit: Option<usize>,
}

/// One page of titles.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TitlePage<'a> {
    /// Titles matching the search and category (all pages).
    pub total: usize,
    pub offset: usize,
    pub limit: usize,
    pub items: Vec<TitleItem<'a>>,
    /// Every category the account sees, with its title count.
    pub categories: Vec<CategoryCount<'a>>,
}

/// A title as lists show it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TitleItem<'a> {
    /// Stable across restarts.
    pub id: u32,
    pub title: &'a str,
    pub year: Option<u16>,
    pub category: &'a str,
    /// Poster image URL; empty: none.
    #[schema(value_type = String)]
    pub poster: Cow<'a, str>,
    /// The services it plays from, in the order they are tried.
    pub sources: Vec<&'a str>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CategoryCount<'a> {
    pub name: &'a str,
    pub count: usize,
}

/// Where posters point: the upstream's image, or freesky's `/logos/` link to it when
/// `[logos]` proxies or caches images.
#[derive(Clone)]
struct Posters {
    logos: Arc<crate::logos::Logos>,
    base: String,
}

impl Posters {
    fn new(s: &AppState, headers: &HeaderMap) -> Self {
        Self {
            logos: s.logos.clone(),
            base: base_url(&s.config, headers),
        }
    }

    fn of<'a>(&self, t: &TitleRef<'a>) -> Cow<'a, str> {
        let (service, poster) = t.poster_source();
        self.logos.url(&self.base, service, poster)
    }

    /// The title's poster: its list's, else the one its details give.
    fn of_detailed<'a>(&self, t: &TitleRef<'a>, d: &'a Details) -> Cow<'a, str> {
        match self.of(t) {
            p if p.is_empty() && !d.image.is_empty() => {
                self.logos.url(&self.base, &d.service, &d.image)
            }
            p => p,
        }
    }

    /// The details' backdrop, as logos and posters are written (`[logos]`).
    fn backdrop<'a>(&self, d: &'a Details) -> Cow<'a, str> {
        self.logos.url(&self.base, &d.service, &d.backdrop)
    }

    /// `backdrop_path`: the backdrop in a list, empty when there is none.
    fn backdrop_path(&self, d: &Details) -> Vec<String> {
        Some(self.backdrop(d))
            .filter(|b| !b.is_empty())
            .map(Cow::into_owned)
            .into_iter()
            .collect()
    }

    /// An episode's own image (fetched through its service), else the series' poster.
    fn episode<'a>(&self, t: &TitleRef<'a>, e: &'a SeriesEpisode) -> Cow<'a, str> {
        match e.info.as_deref().map(|i| i.image.as_str()) {
            Some(image) if !image.is_empty() => self.logos.url(&self.base, &e.service, image),
            _ => self.of(t),
        }
    }
}

fn item<'a>(t: &TitleRef<'a>, a: Option<&Account>, posters: &Posters) -> TitleItem<'a> {
    TitleItem {
        id: t.id(),
        title: t.name(),
        year: t.year(),
        category: t.category(),
        poster: posters.of(t),
        sources: t
            .services()
            .filter(|s| crate::vod::library::source_allowed(a, s))
            .collect(),
    }
}

/// The categories of `cat` that `a` sees titles in, by name, each with how many: an
/// account limited to some services sees only the categories (and counts) of their
/// titles, not the others' catalogue.
fn seen_categories<'c>(cat: &'c Catalogue, a: Option<&Account>) -> Vec<CategoryCount<'c>> {
    let in_groups = |name: &str| a.is_none_or(|a| a.in_groups(name));
    let counts: Option<HashMap<&str, usize>> = a.filter(|a| !a.services.is_empty()).map(|_| {
        let mut counts = HashMap::new();
        for t in cat.iter().filter(|t| sees(a, t)) {
            *counts.entry(t.category()).or_insert(0) += 1;
        }
        counts
    });
    cat.categories()
        .iter()
        .filter(|(name, _)| in_groups(name))
        .filter_map(|(name, count)| {
            let count = match &counts {
                None => *count,
                Some(seen) => *seen.get(&**name).filter(|&&n| n > 0)?,
            };
            Some(CategoryCount { name, count })
        })
        .collect()
}

fn page<'a>(
    cat: &'a Catalogue,
    p: &'a ListParams,
    filter: &'a Filter<'a>,
    a: Option<&Account>,
    posters: &Posters,
) -> TitlePage<'a> {
    let offset = p.offset.unwrap_or(0);
    let limit = p.limit.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT);
    let mut total = 0;
    let mut items = Vec::with_capacity(limit);
    for t in cat.select(filter).filter(|t| sees(a, t)) {
        if total >= offset && items.len() < limit {
            items.push(item(&t, a, posters));
        }
        total += 1;
    }
    let categories = seen_categories(cat, a);
    TitlePage {
        total,
        offset,
        limit,
        items,
        categories,
    }
}

async fn list(
    s: &AppState,
    kind: VodKind,
    p: ListParams,
    viewer: &Viewer,
    headers: &HeaderMap,
) -> Response {
    let snap = s.vod.current().await;
    let filter = Filter {
        query: crate::lineup::normalise_without_notes(p.q.as_deref().unwrap_or("")),
        category: p.category.as_deref().filter(|c| !c.is_empty()),
    };
    let posters = Posters::new(s, headers);
    Json(page(snap.of(kind), &p, &filter, account(viewer), &posters)).into_response()
}

/// One page of movies, by title (search, category, paging).
#[utoipa::path(
    get,
    path = "/api/movies",
    tag = "vod",
    params(ListParams),
    responses(
        (status = 200, description = "One page of movies", body = TitlePage),
        (status = 401, description = "`server.require_account` and no or a wrong login", body = ErrorBody)
    )
)]
async fn list_movies(
    State(s): State<AppState>,
    Query(p): Query<ListParams>,
    viewer: Viewer,
    headers: HeaderMap,
) -> Response {
    list(&s, VodKind::Movie, p, &viewer, &headers).await
}

/// One page of series, by title (search, category, paging).
#[utoipa::path(
    get,
    path = "/api/series",
    tag = "vod",
    params(ListParams),
    responses(
        (status = 200, description = "One page of series", body = TitlePage),
        (status = 401, description = "`server.require_account` and no or a wrong login", body = ErrorBody)
    )
)]
async fn list_series(
    State(s): State<AppState>,
    Query(p): Query<ListParams>,
    viewer: Viewer,
    headers: HeaderMap,
) -> Response {
    list(&s, VodKind::Series, p, &viewer, &headers).await
}

/// A title id in a path, with or without a file extension (`12`, `12.mkv`).
fn title_id(raw: &str) -> Result<u32, AppError> {
    let id = raw.split_once('.').map_or(raw, |(id, _)| id);
    id.parse::<u32>()
        .map_err(|_| AppError::NotFound(format!("unknown title `{}`", raw.escape_debug())))
}

fn hhmmss(secs: u32) -> String {
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// A movie: the list item plus its details (plot, duration, rating, TMDB id) and
/// where it plays.
#[utoipa::path(
    get,
    path = "/api/movies/{id}",
    tag = "vod",
    params(("id" = u32, Path, description = "The movie's id")),
    responses(
        (status = 200, description = "The movie", body = Object),
        (status = 404, description = "No such movie (or the account does not see it)", body = ErrorBody)
    )
)]
async fn movie_details(
    State(s): State<AppState>,
    Path(id): Path<String>,
    viewer: Viewer,
    headers: HeaderMap,
) -> Result<Json<Value>, AppError> {
    let posters = Posters::new(&s, &headers);
    let id = title_id(&id)?;
    let a = account(&viewer);
    let snap = s.vod.current().await;
    let t = visible(&snap, VodKind::Movie, id, a)?;
    let d = s.vod.title_details(t, a).await;
    let mut v = serde_json::to_value(item(&t, a, &posters)).unwrap_or_default();
    let d = d.as_deref().cloned().unwrap_or_default();
    v["plot"] = json!(d.plot);
    v["genre"] = json!(d.genre);
    v["cast"] = json!(d.cast);
    v["director"] = json!(d.director);
    v["release_date"] = json!(d.release_date);
    v["backdrop"] = json!(posters.backdrop(&d));
    v["poster"] = json!(posters.of_detailed(&t, &d));
    v["country"] = json!(d.country);
    v["age_rating"] = json!(d.age_rating);
    v["youtube_trailer"] = json!(d.youtube_trailer);
    v["duration"] = json!(d.duration_secs);
    v["rating"] = rating_number(d.rating.or(t.rating()));
    v["tmdb"] = json!(t.tmdb().or(d.tmdb));
    v["container_extension"] = json!(t.ext());
    v["stream"] = json!(format!("/api/movie/{id}"));
    Ok(Json(v))
}

/// A series: the list item plus its details and its seasons' episodes.
#[utoipa::path(
    get,
    path = "/api/series/{id}",
    tag = "vod",
    params(("id" = u32, Path, description = "The series' id")),
    responses(
        (status = 200, description = "The series with `seasons[].episodes[]`", body = Object),
        (status = 404, description = "No such series (or the account does not see it)", body = ErrorBody),
        (status = 500, description = "The state store failed", body = ErrorBody)
    )
)]
async fn series_details(
    State(s): State<AppState>,
    Path(id): Path<String>,
    viewer: Viewer,
    headers: HeaderMap,
) -> Result<Json<Value>, AppError> {
    let posters = Posters::new(&s, &headers);
    let id = title_id(&id)?;
    let a = account(&viewer);
    let snap = s.vod.current().await;
    let t = visible(&snap, VodKind::Series, id, a)?;
    let episodes = s.vod.series_episodes(&snap, id, a).await?;
    let d = s.vod.title_details(t, a).await;
    let d = d.as_deref().cloned().unwrap_or_default();
    let mut seasons: Vec<Value> = Vec::new();
    for e in &episodes {
        if seasons
            .last()
            .is_none_or(|l| l["season"] != json!(e.season))
        {
            seasons.push(json!({ "season": e.season, "episodes": [] }));
        }
        if let Some(Value::Array(list)) = seasons.last_mut().map(|l| &mut l["episodes"]) {
            let info = e.info.as_deref().cloned().unwrap_or_default();
            list.push(json!({
                "id": e.id,
                "episode": e.episode,
                "title": e.title,
                "container_extension": e.ext,
                "plot": info.plot,
                "image": posters.episode(&t, e),
                "release_date": info.release_date,
                "duration": info.duration_secs,
                "rating": rating_number(info.rating),
                "added": info.added,
                "stream": format!("/api/episode/{}", e.id),
            }));
        }
    }
    let f = t.facts();
    let mut v = serde_json::to_value(item(&t, a, &posters)).unwrap_or_default();
    v["plot"] = json!(d.plot);
    v["genre"] = json!(or(&d.genre, f.genre));
    v["cast"] = json!(or(&d.cast, f.cast));
    v["director"] = json!(or(&d.director, f.director));
    v["release_date"] = json!(or(&d.release_date, f.release_date));
    v["backdrop"] = json!(posters.backdrop(&d));
    v["poster"] = json!(posters.of_detailed(&t, &d));
    v["episode_run_time"] = json!(run_time(&d, f));
    v["rating"] = rating_number(d.rating.or(t.rating()));
    v["tmdb"] = json!(t.tmdb().or(d.tmdb));
    v["seasons"] = Value::Array(seasons);
    Ok(Json(v))
}

/// The media sources of movie or episode `id` for `a`.
pub(crate) async fn media_sources(
    s: &AppState,
    kind: VodKind,
    id: u32,
    a: Option<&Account>,
) -> Result<Vec<MediaSource>, AppError> {
    let snap: Arc<Snapshot> = s.vod.current().await;
    Ok(match kind {
        VodKind::Movie => s.vod.movie_sources(&snap, id, a)?,
        VodKind::Series => s.vod.episode_sources(&snap, id, a).await?,
    })
}

/// Plays movie or episode `file` (`{id}` or `{id}.{ext}`) to `viewer` (the media,
/// Range passed through): a viewer account's counts as one of its connections, as on
/// the Xtream routes.
async fn play_title(
    s: &AppState,
    kind: VodKind,
    file: &str,
    viewer: &Viewer,
    client: &super::xtream::Client,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Response, AppError> {
    if let Some(login) = &viewer.0 {
        return super::xtream::title_media(s, &login.account, kind, file, client, method, headers)
            .await;
    }
    let id = title_id(file)?;
    let sources = media_sources(s, kind, id, None).await?;
    Ok(super::media::play(s, &title_label(kind, id), sources, method, headers).await)
}

/// How errors name movie or episode `id`: "movie 12", "episode 40".
pub(crate) fn title_label(kind: VodKind, id: u32) -> String {
    match kind {
        VodKind::Movie => format!("movie {id}"),
        VodKind::Series => format!("episode {id}"),
    }
}

/// A movie's media: its sources tried in priority order; `Range` is passed through
/// (206 with `Content-Range`), so players seek.
#[utoipa::path(
    get,
    path = "/api/movie/{id}",
    tag = "vod",
    params(("id" = String, Path, description = "The movie's id (`12` or `12.mp4`)")),
    responses(
        (status = 200, description = "The media", body = Vec<u8>, content_type = "video/mp4"),
        (status = 206, description = "The asked range", body = Vec<u8>, content_type = "video/mp4"),
        (status = 401, description = "`server.require_account` and no or a wrong login", body = ErrorBody),
        (status = 403, description = "The account is disabled, expired, or at its connection limit", body = ErrorBody),
        (status = 404, description = "No such movie (or the account does not see it)", body = ErrorBody),
        (status = 502, description = "Every source failed", body = ErrorBody)
    )
)]
async fn movie_media(
    State(s): State<AppState>,
    Path(id): Path<String>,
    viewer: Viewer,
    client: super::xtream::Client,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    play_title(&s, VodKind::Movie, &id, &viewer, &client, &method, &headers).await
}

/// An episode's media, as `/api/movie/{id}`.
#[utoipa::path(
    get,
    path = "/api/episode/{id}",
    tag = "vod",
    params(("id" = String, Path, description = "The episode's id (`345` or `345.mkv`)")),
    responses(
        (status = 200, description = "The media", body = Vec<u8>, content_type = "video/mp4"),
        (status = 206, description = "The asked range", body = Vec<u8>, content_type = "video/mp4"),
        (status = 401, description = "`server.require_account` and no or a wrong login", body = ErrorBody),
        (status = 403, description = "The account is disabled, expired, or at its connection limit", body = ErrorBody),
        (status = 404, description = "No such episode (or the account does not see it)", body = ErrorBody),
        (status = 502, description = "Every source failed", body = ErrorBody)
    )
)]
async fn episode_media(
    State(s): State<AppState>,
    Path(id): Path<String>,
    viewer: Viewer,
    client: super::xtream::Client,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    play_title(
        &s,
        VodKind::Series,
        &id,
        &viewer,
        &client,
        &method,
        &headers,
    )
    .await
}

/// Loads every service's movies and series again now (admin); answers each
/// service's catalogue status.
#[utoipa::path(
    post,
    path = "/api/vod/refresh",
    tag = "vod",
    security(("admin" = [])),
    responses(
        (status = 200, description = "Titles now, and each service's catalogue status", body = Object),
        (status = 401, description = "An admin token is set and none was given", body = ErrorBody),
        (status = 403, description = "Not the admin", body = ErrorBody)
    )
)]
async fn refresh_vod(State(s): State<AppState>, _admin: Admin) -> Json<Value> {
    let snap = s.vod.refresh().await;
    let services: serde_json::Map<String, Value> = s
        .registry
        .status()
        .into_iter()
        .filter_map(|st| {
            Some((
                st.name.clone(),
                serde_json::to_value(s.vod.status_of(&st.name)?).ok()?,
            ))
        })
        .collect();
    Json(json!({
        "movies": snap.movies.len(),
        "series": snap.series.len(),
        "services": services,
    }))
}

/// A body streamed from `snap`: `head`, then `render` of each title of `kind` that
/// `keep` selects (a chunk at a time), then `tail`.
fn streamed<F>(
    snap: Arc<Snapshot>,
    kind: VodKind,
    head: Bytes,
    tail: &'static str,
    render: F,
) -> Body
where
    F: Fn(&TitleRef<'_>, &mut Vec<u8>) -> bool + Send + Sync + 'static,
{
    let len = snap.of(kind).len();
    let chunks = futures::stream::iter((0..len.div_ceil(CHUNK)).map(move |c| {
        let cat = snap.of(kind);
        let mut buf = Vec::with_capacity(64 * CHUNK);
        for i in c * CHUNK..((c + 1) * CHUNK).min(len) {
            if let Some(t) = cat.nth(i) {
                render(&t, &mut buf);
            }
        }
        Ok::<_, std::convert::Infallible>(Bytes::from(buf))
    }));
    let all = futures::stream::once(async move { Ok(head) })
        .chain(chunks)
        .chain(futures::stream::once(async move {
            Ok(Bytes::from_static(tail.as_bytes()))
        }));
    Body::from_stream(all)
}

use futures::StreamExt as _;

/// The movies as an M3U playlist for VLC and Kodi (streamed).
#[utoipa::path(
    get,
    path = "/vod.m3u",
    tag = "vod",
    responses(
        (status = 200, description = "M3U of the movies", body = String, content_type = "audio/x-mpegurl"),
        (status = 401, description = "`server.require_account` and no or a wrong login", body = ErrorBody)
    )
)]
async fn vod_m3u(State(s): State<AppState>, viewer: Viewer, headers: HeaderMap) -> Response {
    let snap = s.vod.current().await;
    let base = base_url(&s.config, &headers);
    let posters = Posters::new(&s, &headers);
    let login = viewer.0.as_ref().map(|l| {
        format!(
            "?username={}&password={}",
            query_value(&l.account.name),
            query_value(&l.password)
        )
    });
    let account = viewer.0.as_ref().map(|l| l.account.clone());
    let suffix = login.unwrap_or_default();
    let body = streamed(
        snap,
        VodKind::Movie,
        Bytes::from_static(b"#EXTM3U\n"),
        "",
        move |t, out| {
            let a = account.as_deref();
            if !sees(a, t) {
                return false;
            }
            // Written as `/playlist.m3u` writes its lines (`m3u::push_clean`): no
            // upstream text can close an attribute or begin a line.
            let mut line = String::with_capacity(200);
            line.push_str("#EXTINF:-1 tvg-id=\"movie-");
            line.push_str(&t.id().to_string());
            line.push_str("\" tvg-name=\"");
            crate::m3u::push_clean(&mut line, t.name());
            line.push('"');
            // As `/playlist.m3u`: no `tvg-logo` rather than an empty one.
            let poster = posters.of(t);
            if !poster.is_empty() {
                line.push_str(" tvg-logo=\"");
                crate::m3u::push_clean(&mut line, &poster);
                line.push('"');
            }
            line.push_str(" group-title=\"");
            crate::m3u::push_clean(&mut line, t.category());
            line.push_str("\",");
            crate::m3u::push_title(&mut line, t.name());
            line.push('\n');
            line.push_str(&format!(
                "{base}/api/movie/{}.{}{suffix}\n",
                t.id(),
                t.ext()
            ));
            out.extend_from_slice(line.as_bytes());
            true
        },
    );
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(super::playlist::M3U_CONTENT_TYPE),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response()
}

/// `s` encoded for a query string.
fn query_value(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

// ---- the Xtream actions ----

/// A category as Xtream players take it (shared ids with the live categories' scheme).
fn category_entry(name: &str) -> Value {
    json!({
        "category_id": super::xtream::category_id(name).to_string(),
        "category_name": crate::accounts::shown_group(name),
        "parent_id": 0,
    })
}

/// One `get_vod_streams` entry, typed as panels send it.
#[derive(Serialize)]
struct VodStream<'a> {
    num: u32,
    name: &'a str,
    title: &'a str,
    year: String,
    stream_type: &'static str,
    stream_id: u32,
    stream_icon: &'a str,
    rating: String,
    rating_5based: f64,
    tmdb: String,
    added: String,
    is_adult: &'static str,
    category_id: String,
    category_ids: [u32; 1],
    container_extension: &'a str,
    custom_sid: &'static str,
    direct_source: &'static str,
}

/// One `get_series` entry, typed as panels send it.
#[derive(Serialize)]
struct SeriesEntry<'a> {
    num: u32,
    name: &'a str,
    title: &'a str,
    year: String,
    series_id: u32,
    cover: &'a str,
    /// Left empty: plots are long, so the list does not keep them (50,000 series);
    /// `get_series_info` gives it.
    plot: &'static str,
    cast: &'a str,
    director: &'a str,
    genre: &'a str,
    #[serde(rename = "releaseDate")]
    release_date_camel: String,
    release_date: String,
    last_modified: String,
    rating: String,
    rating_5based: f64,
    backdrop_path: [&'static str; 0],
    youtube_trailer: &'static str,
    episode_run_time: String,
    tmdb: String,
    category_id: String,
    category_ids: [u32; 1],
}

fn opt_text<T: ToString>(v: Option<T>) -> String {
    v.map(|x| x.to_string()).unwrap_or_default()
}

/// A rating as a JSON number written as it was read (`7.4`, not the `7.400000095367432`
/// an `f32` widened to `f64` gives).
fn rating_number(r: Option<f32>) -> Value {
    r.and_then(|r| r.to_string().parse::<f64>().ok())
        .map_or(Value::Null, |r| json!(r))
}

fn rating_text(r: Option<f32>) -> String {
    r.map(|r| format!("{r:.1}")).unwrap_or_default()
}

/// A rating out of 10 as panels' `rating_5based` (out of 5, one decimal); 0: none.
fn five_based(r: Option<f32>) -> f64 {
    // Through two decimals first: 7.1 as an f32 is 7.0999999, which would halve to
    // 3.5 where the panel's 7.1 means 3.6 (3.55 rounded up).
    r.map_or(0.0, |r| {
        let r = (f64::from(r) * 100.0).round() / 100.0;
        (r * 5.0).round() / 10.0
    })
}

/// Minutes an episode runs: the details' duration, else the list's; `None`: unknown.
fn run_time(d: &crate::vod::Details, f: FactsRef<'_>) -> Option<u32> {
    d.duration_secs
        .map(|s| s / 60)
        .filter(|&m| m > 0)
        .or(f.run_time.map(u32::from))
}

/// A movie or series list for an Xtream player, streamed (a chunk of titles at a time).
fn xtream_list(
    snap: Arc<Snapshot>,
    kind: VodKind,
    account: Arc<Account>,
    only: Option<u32>,
    posters: Posters,
) -> Response {
    let first = std::sync::atomic::AtomicBool::new(true);
    let body = streamed(snap, kind, Bytes::from_static(b"["), "]", move |t, out| {
        if !sees(Some(&account), t) {
            return false;
        }
        let cat = super::xtream::category_id(t.category());
        if only.is_some_and(|o| o != cat) {
            return false;
        }
        if !first.swap(false, std::sync::atomic::Ordering::Relaxed) {
            out.push(b',');
        }
        let year = opt_text(t.year());
        let r = t.rating();
        let written = match kind {
            VodKind::Movie => serde_json::to_writer(
                &mut *out,
                &VodStream {
                    num: t.id(),
                    name: t.name(),
                    title: t.title(),
                    year,
                    stream_type: "movie",
                    stream_id: t.id(),
                    stream_icon: &posters.of(t),
                    rating: rating_text(r),
                    rating_5based: five_based(r),
                    tmdb: opt_text(t.tmdb()),
                    added: t.added().to_string(),
                    is_adult: if t.adult() { "1" } else { "0" },
                    category_id: cat.to_string(),
                    category_ids: [cat],
                    container_extension: t.ext(),
                    custom_sid: "",
                    direct_source: "",
                },
            ),
            VodKind::Series => {
                let f = t.facts();
                let date = if f.release_date.is_empty() {
                    year.clone()
                } else {
                    f.release_date.to_string()
                };
                serde_json::to_writer(
                    &mut *out,
                    &SeriesEntry {
                        num: t.id(),
                        name: t.name(),
                        title: t.title(),
                        release_date_camel: date.clone(),
                        release_date: date,
                        year,
                        series_id: t.id(),
                        cover: &posters.of(t),
                        plot: "",
                        cast: f.cast,
                        director: f.director,
                        genre: f.genre,
                        last_modified: t.added().to_string(),
                        rating: rating_text(r),
                        rating_5based: five_based(r),
                        backdrop_path: [],
                        youtube_trailer: "",
                        episode_run_time: f.run_time.unwrap_or(0).to_string(),
                        tmdb: opt_text(t.tmdb()),
                        category_id: cat.to_string(),
                        category_ids: [cat],
                    },
                )
            }
        };
        written.is_ok()
    });
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The answer to a movie or series action of `player_api.php` for an active account,
/// or `None` when `action` is not one of them.
pub(crate) async fn xtream_action(
    s: &AppState,
    account: &Arc<Account>,
    action: &str,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Option<Result<Response, AppError>> {
    let posters = Posters::new(s, headers);
    let kind = match action {
        "get_vod_categories" | "get_vod_streams" | "get_vod_info" => VodKind::Movie,
        "get_series_categories" | "get_series" | "get_series_info" => VodKind::Series,
        _ => return None,
    };
    let number = |key: &str| -> Result<Option<u32>, AppError> {
        match q.get(key).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => v.parse::<u32>().map(Some).map_err(|_| {
                AppError::BadRequest(format!("{key} `{}` is not a number", v.escape_debug()))
            }),
        }
    };
    let a = Some(&**account);
    let snap = s.vod.current().await;
    Some(match action {
        "get_vod_categories" | "get_series_categories" => {
            let cats: Vec<Value> = seen_categories(snap.of(kind), a)
                .iter()
                .map(|c| category_entry(c.name))
                .collect();
            Ok(Json(cats).into_response())
        }
        "get_vod_streams" | "get_series" => {
            // As panels read it (PHP's intval): not a number, or 0, is every category.
            let only = q
                .get("category_id")
                .and_then(|c| c.trim().parse::<u32>().ok())
                .filter(|&c| c != 0);
            Ok(xtream_list(snap, kind, account.clone(), only, posters))
        }
        "get_vod_info" => match number("vod_id") {
            Err(e) => Err(e),
            Ok(id) => Ok(Json(vod_info(s, &snap, id, a, &posters).await).into_response()),
        },
        _ => match number("series_id") {
            Err(e) => Err(e),
            Ok(id) => series_info(s, &snap, id, a, &posters)
                .await
                .map(|v| Json(v).into_response()),
        },
    })
}

/// `get_vod_info`: `info` and `movie_data` as panels send them; an unknown (or
/// unseen) movie is `{"info": [], "movie_data": []}`, as panels answer.
async fn vod_info(
    s: &AppState,
    snap: &Snapshot,
    id: Option<u32>,
    a: Option<&Account>,
    posters: &Posters,
) -> Value {
    let Some(t) = id.and_then(|id| visible(snap, VodKind::Movie, id, a).ok()) else {
        return json!({ "info": [], "movie_data": [] });
    };
    let d = s.vod.title_details(t, a).await;
    let d = d.as_deref().cloned().unwrap_or_default();
    let cat = super::xtream::category_id(t.category());
    let secs = d.duration_secs.unwrap_or(0);
    let tmdb = opt_text(t.tmdb().or(d.tmdb));
    json!({
        "info": {
            "kinopoisk_url": "",
            "tmdb_id": tmdb,
            "name": t.name(),
            "o_name": t.name(),
            "cover_big": posters.of_detailed(&t, &d),
            "movie_image": posters.of_detailed(&t, &d),
            "releasedate": d.release_date,
            "release_date": d.release_date,
            "episode_run_time": (secs / 60).to_string(),
            "youtube_trailer": d.youtube_trailer,
            "director": d.director,
            "actors": d.cast,
            "cast": d.cast,
            "description": d.plot,
            "plot": d.plot,
            "age": d.age_rating,
            "mpaa_rating": d.age_rating,
            "rating_count_kinopoisk": 0,
            "country": d.country,
            "genre": d.genre,
            "backdrop_path": posters.backdrop_path(&d),
            "duration_secs": secs,
            "duration": hhmmss(secs),
            "bitrate": 0,
            "rating": rating_text(d.rating.or(t.rating())),
            "rating_5based": five_based(d.rating.or(t.rating())),
            "subtitles": [],
        },
        "movie_data": {
            "stream_id": t.id(),
            "name": t.name(),
            "title": t.title(),
            "year": opt_text(t.year()),
            "added": t.added().to_string(),
            "category_id": cat.to_string(),
            "category_ids": [cat],
            "container_extension": t.ext(),
            "custom_sid": "",
            "direct_source": "",
        }
    })
}

/// `get_series_info`: `seasons`, `info` and `episodes` keyed by season number (as a
/// string), as panels send them; an unknown (or unseen) series has a null name.
async fn series_info(
    s: &AppState,
    snap: &Snapshot,
    id: Option<u32>,
    a: Option<&Account>,
    posters: &Posters,
) -> Result<Value, AppError> {
    let Some((id, t)) = id.and_then(|id| Some((id, visible(snap, VodKind::Series, id, a).ok()?)))
    else {
        return Ok(json!({ "seasons": [], "info": { "name": null }, "episodes": {} }));
    };
    let episodes = s.vod.series_episodes(snap, id, a).await?;
    let d = s.vod.title_details(t, a).await;
    let d = d.as_deref().cloned().unwrap_or_default();
    let cat = super::xtream::category_id(t.category());
    let mut by_season: serde_json::Map<String, Value> = serde_json::Map::new();
    let mut seasons: Vec<Value> = Vec::new();
    for e in &episodes {
        let key = e.season.to_string();
        if !by_season.contains_key(&key) {
            seasons.push(json!({
                "air_date": "",
                "episode_count": episodes.iter().filter(|x| x.season == e.season).count(),
                "id": e.season,
                "name": format!("Season {}", e.season),
                "overview": "",
                "season_number": e.season,
                "vote_average": 0,
                "cover": posters.of_detailed(&t, &d),
                "cover_big": posters.of_detailed(&t, &d),
            }));
        }
        let list = by_season
            .entry(key)
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(list) = list {
            let info = e.info.as_deref().cloned().unwrap_or_default();
            let secs = info.duration_secs.unwrap_or(0);
            list.push(json!({
                "id": e.id.to_string(),
                "episode_num": e.episode,
                "title": if e.title.is_empty() { format!("{} S{:02}E{:02}", t.name(), e.season, e.episode) } else { e.title.clone() },
                "container_extension": e.ext,
                "info": {
                    "movie_image": posters.episode(&t, e),
                    "plot": info.plot,
                    "releasedate": info.release_date,
                    "rating": info.rating.unwrap_or(0.0),
                    "duration_secs": secs,
                    "duration": hhmmss(secs),
                    "bitrate": 0,
                },
                "custom_sid": "",
                "added": info.added.unwrap_or(0).to_string(),
                "season": e.season,
                "direct_source": "",
            }));
        }
    }
    let year = opt_text(t.year());
    let f = t.facts();
    let date = or(&or(&d.release_date, f.release_date), &year);
    let rating = d.rating.or(t.rating());
    Ok(json!({
        "seasons": seasons,
        "info": {
            "name": t.name(),
            "title": t.title(),
            "year": year,
            "cover": posters.of_detailed(&t, &d),
            "plot": d.plot,
            "cast": or(&d.cast, f.cast),
            "director": or(&d.director, f.director),
            "genre": or(&d.genre, f.genre),
            "releaseDate": date,
            "release_date": date,
            "last_modified": t.added().to_string(),
            "rating": rating_text(rating),
            "rating_5based": five_based(rating),
            "backdrop_path": posters.backdrop_path(&d),
            "youtube_trailer": d.youtube_trailer,
            "episode_run_time": run_time(&d, f).unwrap_or(0).to_string(),
            "tmdb": opt_text(t.tmdb().or(d.tmdb)),
            "category_id": cat.to_string(),
            "category_ids": [cat],
        },
        "episodes": by_season,
    }))
}

/// A service's catalogue status, for `/api/services/status`.
pub(crate) fn status_of(s: &AppState, service: &str) -> Option<VodStatus> {
    s.vod.status_of(service)
}

/// `a`, or `b` when `a` is empty: a title's own fact, else the list's.
fn or(a: &str, b: &str) -> String {
    if a.is_empty() { b } else { a }.to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn five_based_ratings_round_the_written_tenths_half_up() {
        assert_eq!(super::five_based(Some(7.1)), 3.6);
        assert_eq!(super::five_based(Some(9.3)), 4.7);
        assert_eq!(super::five_based(Some(8.0)), 4.0);
        assert_eq!(super::five_based(Some(0.1)), 0.1);
        assert_eq!(super::five_based(None), 0.0);
    }

    #[test]
    fn a_rating_is_written_as_it_was_read() {
        for (r, text) in [(7.4, "7.4"), (7.1, "7.1"), (9.0, "9.0"), (6.85, "6.85")] {
            assert_eq!(super::rating_number(Some(r)).to_string(), text);
        }
        assert!(super::rating_number(None).is_null());
    }
}
