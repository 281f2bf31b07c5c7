//! The JSON API: service status and switches, channel listing and
//! search; and freesky's channel mapping (`GET`/`PATCH /api/channels/{id}`).
//!
//! A service's status carries its guide status (`crate::guide`), joined here so that
//! neither the registry nor the guide knows of the other's status.

use axum::extract::{Path, Query, Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::access::Admin;
use super::AppState;
use crate::guide::GuideStatus;
use crate::guide::Reread;
use crate::http::error::{AppError, ErrorBody};
use crate::model::{ChannelDetail, ChannelPatch, LineupChannel, ServiceStatus};
use crate::streams::{ChannelTest, Engine};

/// Largest `PATCH /api/channels/{id}` body read (a mapping is a few hundred bytes).
const MAX_PATCH_BYTES: usize = 64 * 1024;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/api/services/status", get(status))
        .route("/api/services/{name}/enable", post(enable))
        .route("/api/services/{name}/disable", post(disable))
        .route("/api/channels/all", get(all_channels))
        .route("/api/channels/search", get(search))
        .route("/api/channels/vanished", get(vanished))
        .route("/api/channels/{id}/mapping", delete(forget_mapping))
        .route("/api/channels/{id}", get(channel).patch(map_channel))
        .route("/api/services/{name}/priority", put(set_priority))
        .route("/api/services/{name}/reset", post(reset))
        .route("/api/channels/{id}/test", post(test_channel))
}

/// The API's operations, for `/api/openapi.json` (`super::openapi`).
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        health,
        status,
        enable,
        disable,
        set_priority,
        reset,
        all_channels,
        search,
        channel,
        map_channel,
        vanished,
        forget_mapping,
        test_channel
    ),
    components(schemas(ErrorBody, ServiceEntry, PriorityBody, ChannelTest))
)]
pub(crate) struct Doc;

/// Liveness: always `{"status": "ok", "version": ...}` while the server runs.
#[utoipa::path(
    get,
    path = "/health",
    tag = "meta",
    responses((status = 200, description = "The server runs", body = inline(HealthBody)))
)]
async fn health() -> Json<Value> {
    Json(json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }))
}

/// `/health`'s body (documentation only: the handler writes it with `json!`).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct HealthBody {
    /// Always `"ok"`.
    status: String,
    /// freesky's version.
    version: String,
}

/// A service's status as the API shows it: the registry's, plus its guide's.
#[derive(Serialize, utoipa::ToSchema)]
struct ServiceEntry {
    #[serde(flatten)]
    service: ServiceStatus,
    /// `null` while the service has no guide (none configured or listed, or not
    /// tried yet); else what its last guide refresh did, a malformed guide included.
    guide: Option<GuideStatus>,
    /// Its movie and series catalogue, for services that list one.
    #[serde(flatten)]
    vod: VodFields,
}

/// A service's catalogue status (`VodStatus`) as fields of its entry, each there only
/// for a service that lists a catalogue (so the schema has them optional, as they are).
#[derive(Serialize, Default, utoipa::ToSchema)]
struct VodFields {
    /// Why the last catalogue refresh failed (its last good lists are kept); `null`
    /// when it loaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    vod_error: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    movie_count: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    series_count: Option<usize>,
    /// Entries skipped at the last refresh (no usable URL, no name...).
    #[serde(skip_serializing_if = "Option::is_none")]
    vod_skipped: Option<usize>,
    /// RFC 3339 time of the last catalogue refresh.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    vod_checked: Option<Option<String>>,
}

impl From<Option<crate::vod::library::VodStatus>> for VodFields {
    fn from(v: Option<crate::vod::library::VodStatus>) -> Self {
        v.map_or_else(Self::default, |v| Self {
            vod_error: Some(v.vod_error),
            movie_count: Some(v.movie_count),
            series_count: Some(v.series_count),
            vod_skipped: Some(v.vod_skipped),
            vod_checked: Some(v.vod_checked),
        })
    }
}

fn entry(s: &AppState, service: ServiceStatus) -> ServiceEntry {
    ServiceEntry {
        guide: s.guides.status_of(&service.name),
        vod: super::vod::status_of(s, &service.name).into(),
        service,
    }
}

/// Every configured service's status, in config order.
#[utoipa::path(
    get,
    path = "/api/services/status",
    tag = "services",
    responses((status = 200, description = "Every service", body = Vec<ServiceEntry>))
)]
async fn status(State(s): State<AppState>) -> Json<Vec<ServiceEntry>> {
    Json(
        s.registry
            .status()
            .into_iter()
            .map(|service| entry(&s, service))
            .collect(),
    )
}

/// Enables a service (admin); persisted, the lineup follows at once.
#[utoipa::path(
    post,
    path = "/api/services/{name}/enable",
    tag = "services",
    params(("name" = String, Path, description = "The service's configured name")),
    security(("admin" = [])),
    responses(
        (status = 200, description = "The service's status now", body = ServiceEntry),
        (status = 401, description = "An admin token is set and none was given", body = ErrorBody),
        (status = 403, description = "Wrong admin token; no token set and the caller is not on loopback; a cross-site call (`Origin`, `Sec-Fetch-Site`); or a `Host` that is not one of freesky's names", body = ErrorBody),
        (status = 404, description = "No such service", body = ErrorBody),
        (status = 500, description = "The state store failed", body = ErrorBody)
    )
)]
async fn enable(
    State(s): State<AppState>,
    Path(name): Path<String>,
    _admin: Admin,
) -> Result<Json<ServiceEntry>, AppError> {
    let was = s.registry.is_enabled(&name);
    let service = s.registry.set_enabled(&name, Some(true)).await?;
    // Its channels are in the guide at once; its programmes after a fetch.
    s.guides.lineup_changed(enabled_now(&name, was, true));
    Ok(Json(entry(&s, service)))
}

/// Disables a service (admin); persisted, its channels leave the lineup at once.
#[utoipa::path(
    post,
    path = "/api/services/{name}/disable",
    tag = "services",
    params(("name" = String, Path, description = "The service's configured name")),
    security(("admin" = [])),
    responses(
        (status = 200, description = "The service's status now", body = ServiceEntry),
        (status = 401, description = "An admin token is set and none was given", body = ErrorBody),
        (status = 403, description = "Wrong admin token; no token set and the caller is not on loopback; a cross-site call (`Origin`, `Sec-Fetch-Site`); or a `Host` that is not one of freesky's names", body = ErrorBody),
        (status = 404, description = "No such service", body = ErrorBody),
        (status = 500, description = "The state store failed", body = ErrorBody)
    )
)]
async fn disable(
    State(s): State<AppState>,
    Path(name): Path<String>,
    _admin: Admin,
) -> Result<Json<ServiceEntry>, AppError> {
    let service = s.registry.set_enabled(&name, Some(false)).await?;
    s.guides.lineup_changed(Reread::Nothing);
    Ok(Json(entry(&s, service)))
}

/// Gives a service back its config's `enabled` and `priority` (admin): drops what the
/// API set, persisted; the lineup follows at once.
#[utoipa::path(
    post,
    path = "/api/services/{name}/reset",
    tag = "services",
    params(("name" = String, Path, description = "The service's configured name")),
    security(("admin" = [])),
    responses(
        (status = 200, description = "The service's status now", body = ServiceEntry),
        (status = 401, description = "An admin token is set and none was given", body = ErrorBody),
        (status = 403, description = "Wrong admin token; no token set and the caller is not on loopback; a cross-site call (`Origin`, `Sec-Fetch-Site`); or a `Host` that is not one of freesky's names", body = ErrorBody),
        (status = 404, description = "No such service", body = ErrorBody),
        (status = 500, description = "The state store failed", body = ErrorBody)
    )
)]
async fn reset(
    State(s): State<AppState>,
    Path(name): Path<String>,
    _admin: Admin,
) -> Result<Json<ServiceEntry>, AppError> {
    let was = s.registry.is_enabled(&name);
    let service = s.registry.reset(&name).await?;
    s.guides
        .lineup_changed(enabled_now(&name, was, service.enabled));
    Ok(Json(entry(&s, service)))
}

/// Every listed lineup channel (hidden ones left out), in number order.
#[utoipa::path(
    get,
    path = "/api/channels/all",
    tag = "channels",
    responses(
        (status = 200, description = "The lineup's channels", body = Vec<LineupChannel>),
        (status = 500, description = "The state store failed", body = ErrorBody)
    )
)]
async fn all_channels(
    State(s): State<AppState>,
    headers: axum::http::HeaderMap,
) -> Result<Response, AppError> {
    let lineup = super::logos::lineup(&s, &headers).await?;
    let count = lineup.channels.len();
    // The same bytes `Json` writes, a part at a time from the shared lineup.
    let body = super::playlist::chunked_body(
        "[".to_string(),
        count,
        move |i, buf| {
            if i > 0 {
                buf.push(',');
            }
            json_into(buf, &lineup.channels[i]);
        },
        "]",
    );
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// Appends `value` as compact JSON, as `Json` writes it.
pub(super) fn json_into(buf: &mut String, value: &impl Serialize) {
    // Plain structs of strings and numbers: serializing them cannot fail.
    buf.push_str(&serde_json::to_string(value).expect("serializes to JSON"));
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct SearchQuery {
    /// Words to look for in channel names, groups and tags.
    query: Option<String>,
    /// Same as `query`.
    q: Option<String>,
}

/// Lineup channels matching a query.
#[utoipa::path(
    get,
    path = "/api/channels/search",
    tag = "channels",
    params(SearchQuery),
    responses(
        (status = 200, description = "Matching channels, best first", body = Vec<LineupChannel>),
        (status = 400, description = "Neither `query` nor `q` given", body = ErrorBody),
        (status = 500, description = "The state store failed", body = ErrorBody)
    )
)]
async fn search(
    State(s): State<AppState>,
    Query(q): Query<SearchQuery>,
    headers: axum::http::HeaderMap,
) -> Result<Json<Vec<LineupChannel>>, AppError> {
    let query = q.query.or(q.q).ok_or_else(|| {
        AppError::BadRequest(
            "missing `query` parameter, e.g. /api/channels/search?query=news".into(),
        )
    })?;
    let lineup = super::logos::lineup(&s, &headers).await?;
    Ok(Json(lineup.search(&query).into_iter().cloned().collect()))
}

/// One channel with its mapping; hidden channels too (so they can be unhidden).
#[utoipa::path(
    get,
    path = "/api/channels/{id}",
    tag = "channels",
    params(("id" = String, Path, description = "Channel slug, number, or `SERVICE:ID`")),
    responses(
        (status = 200, description = "The channel and its mapping", body = ChannelDetail),
        (status = 404, description = "No such channel", body = ErrorBody),
        (status = 500, description = "The state store failed", body = ErrorBody)
    )
)]
async fn channel(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
) -> Result<Json<ChannelDetail>, AppError> {
    let detail = s.registry.channel(&id).await?;
    Ok(Json(shown(&s, &headers, detail)))
}

/// `detail` as outputs show it: its logo, and the upstream one a mapping replaces,
/// through `/logos/` in `proxy` and `cache` logo mode (no provider's address is handed
/// out); `mapping` keeps the values as set.
fn shown(
    s: &AppState,
    headers: &axum::http::HeaderMap,
    mut detail: ChannelDetail,
) -> ChannelDetail {
    let base = super::base_url(&s.config, headers);
    let service = crate::logos::logo_service(&detail.channel).to_string();
    for logo in [&mut detail.channel.logo, &mut detail.upstream.logo] {
        *logo = s.logos.url(&base, &service, logo).into_owned().into();
    }
    detail
}

/// An admin call's body: a JSON object (at most `MAX_PATCH_BYTES`) read as `T`. Read
/// by hand so that a malformed one is a JSON 400 like every other error, saying what
/// was `expected` and what is wrong; serde alone would also read a struct from an
/// array (`[]`, `[5]`), which is refused.
pub(super) async fn json_object_body<T: serde::de::DeserializeOwned>(
    req: Request,
    expected: &str,
) -> Result<T, AppError> {
    let body = axum::body::to_bytes(req.into_body(), MAX_PATCH_BYTES)
        .await
        .map_err(|e| body_error(&e, MAX_PATCH_BYTES))?;
    let bad = |why: String| AppError::BadRequest(format!("body must be {expected}: {why}"));
    let value: Value = serde_json::from_slice(&body).map_err(|e| bad(e.to_string()))?;
    let got = match &value {
        Value::Object(_) => None,
        Value::Array(_) => Some("an array"),
        Value::String(_) => Some("a string"),
        Value::Number(_) => Some("a number"),
        Value::Bool(_) => Some("a boolean"),
        Value::Null => Some("null"),
    };
    if let Some(got) = got {
        return Err(bad(format!("got {got}")));
    }
    serde_json::from_value(value)
        .map_err(|e| bad(crate::config::loader::plain_serde_message(&e.to_string())))
}

/// Why a request body could not be read: 413 when it is larger than its route takes,
/// 408 when it did not arrive in time.
pub(super) fn body_error(e: &axum::Error, limit: usize) -> AppError {
    // axum's limit error (`http_body_util::LengthLimitError`), named by its words: the
    // type is not re-exported.
    let too_large = e.to_string().contains("length limit exceeded");
    if let Some(late) = crate::limits::body_too_late(e) {
        AppError::BodyTimeout(late.to_string())
    } else if too_large {
        AppError::PayloadTooLarge(format!(
            "the body is larger than this call takes ({limit} bytes)"
        ))
    } else {
        AppError::BadRequest(format!("unreadable body: {e}"))
    }
}

/// What a switch of service `name` needs read again: its guide when it was off
/// (`was`) and is on now.
fn enabled_now(name: &str, was: bool, now: bool) -> Reread<'_> {
    if now && !was {
        Reread::Service(name)
    } else {
        Reread::Nothing
    }
}

/// A stored mapping of a channel no service lists now.
#[derive(Serialize, utoipa::ToSchema)]
struct VanishedMapping {
    /// The channel's slug.
    id: String,
    /// Its overrides, as stored.
    mapping: crate::model::ChannelMapping,
}

/// The stored mappings of channels no service lists now (gone upstream, or their
/// service removed): each keeps its number and guide id from the other channels until
/// it is forgotten (`DELETE /api/channels/{id}/mapping`) or comes back.
#[utoipa::path(
    get,
    path = "/api/channels/vanished",
    tag = "channels",
    responses(
        (status = 200, description = "Every vanished channel's mapping, by slug", body = Vec<VanishedMapping>),
        (status = 500, description = "The state store failed", body = ErrorBody)
    )
)]
async fn vanished(State(s): State<AppState>) -> Result<Json<Vec<VanishedMapping>>, AppError> {
    let rows = s.registry.vanished_mappings().await?;
    Ok(Json(
        rows.into_iter()
            .map(|(id, mapping)| VanishedMapping { id, mapping })
            .collect(),
    ))
}

/// Forgets a vanished channel's mapping (admin): its number and guide id are free for
/// other channels. A listed channel's overrides are reset with `PATCH` instead.
#[utoipa::path(
    delete,
    path = "/api/channels/{id}/mapping",
    tag = "channels",
    params(("id" = String, Path, description = "The vanished channel's slug (`GET /api/channels/vanished`)")),
    security(("admin" = [])),
    responses(
        (status = 200, description = "`{\"id\": slug, \"forgotten\": true}`, or `false` when there was nothing to forget", body = Object),
        (status = 400, description = "The channel is listed: reset its overrides with PATCH", body = ErrorBody),
        (status = 401, description = "An admin token is set and none was given", body = ErrorBody),
        (status = 403, description = "Wrong admin token; no token set and the caller is not on loopback; a cross-site call (`Origin`, `Sec-Fetch-Site`); or a `Host` that is not one of freesky's names", body = ErrorBody),
        (status = 500, description = "The state store failed", body = ErrorBody),
        (status = 503, description = "The state store is unavailable: nothing was changed", body = ErrorBody)
    )
)]
async fn forget_mapping(
    State(s): State<AppState>,
    Path(id): Path<String>,
    _admin: Admin,
) -> Result<Json<Value>, AppError> {
    let forgotten = s.registry.forget_mapping(&id).await?;
    Ok(Json(json!({ "id": id, "forgotten": forgotten })))
}

/// Changes a channel's mapping (admin).
#[utoipa::path(
    patch,
    path = "/api/channels/{id}",
    tag = "channels",
    params(("id" = String, Path, description = "Channel slug, number, or `SERVICE:ID`")),
    request_body(content = ChannelPatch, description = "Fields to change: a value sets, `null` resets, a missing field keeps"),
    security(("admin" = [])),
    responses(
        (status = 200, description = "The channel and its mapping now", body = ChannelDetail),
        (status = 400, description = "Malformed body, unknown field or invalid value", body = ErrorBody),
        (status = 401, description = "An admin token is set and none was given", body = ErrorBody),
        (status = 403, description = "Wrong admin token; no token set and the caller is not on loopback; a cross-site call (`Origin`, `Sec-Fetch-Site`); or a `Host` that is not one of freesky's names", body = ErrorBody),
        (status = 404, description = "No such channel", body = ErrorBody),
        (status = 500, description = "The state store failed", body = ErrorBody)
    )
)]
async fn map_channel(
    State(s): State<AppState>,
    Path(id): Path<String>,
    _admin: Admin,
    req: Request,
) -> Result<Json<ChannelDetail>, AppError> {
    let headers = req.headers().clone();
    let patch: ChannelPatch = json_object_body(
        req,
        "a JSON object of name, number, group, hidden, tvg_id, logo, station_id, sources",
    )
    .await?;
    // The slug from here on (`id` may be a number or `SERVICE:ID`).
    let current = s.registry.channel(&id).await?.channel;
    let (id, before) = (current.id.to_string(), current.guide_id);
    let detail = s.registry.map_channel(&id, &patch).await?;
    // The guide shows the change at once; a new guide id may also match a guide
    // channel that the last read dropped, which only a new read finds.
    let reread = if detail.channel.guide_id != before {
        Reread::Channel(&id)
    } else {
        Reread::Nothing
    };
    s.guides.lineup_changed(reread);
    Ok(Json(shown(&s, &headers, detail)))
}

/// The body of `PUT /api/services/{name}/priority`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PriorityBody {
    /// Lower is tried first, as `priority` in the config; `null`: the config's again.
    /// Required (`{}` is refused, not read as `null`).
    #[serde(deserialize_with = "Option::deserialize")]
    priority: Option<i64>,
}

/// Sets a service's priority (admin): persisted, overriding the config's until set to
/// `null`; the lineup's source order follows at once. Answers the service's status like
/// enable/disable.
#[utoipa::path(
    put,
    path = "/api/services/{name}/priority",
    tag = "services",
    params(("name" = String, Path, description = "The service's configured name")),
    request_body(content = PriorityBody, example = json!({"priority": 5})),
    security(("admin" = [])),
    responses(
        (status = 200, description = "The service's status now", body = ServiceEntry),
        (status = 400, description = "The body is not `{\"priority\": <integer or null>}`", body = ErrorBody),
        (status = 401, description = "An admin token is set and none was given", body = ErrorBody),
        (status = 403, description = "Wrong admin token; no token set and the caller is not on loopback; a cross-site call (`Origin`, `Sec-Fetch-Site`); or a `Host` that is not one of freesky's names", body = ErrorBody),
        (status = 404, description = "No such service", body = ErrorBody),
        (status = 500, description = "The state store failed", body = ErrorBody)
    )
)]
async fn set_priority(
    State(s): State<AppState>,
    Path(name): Path<String>,
    _admin: Admin,
    req: Request,
) -> Result<Json<ServiceEntry>, AppError> {
    let PriorityBody { priority } =
        json_object_body(req, "a JSON object {\"priority\": <integer or null>}").await?;
    let service = s.registry.set_priority(&name, priority).await?;
    // The guide merges programmes by priority too.
    s.guides.lineup_changed(Reread::Nothing);
    Ok(Json(entry(&s, service)))
}

/// Tests a channel as a viewer would play it: opens it (fallback in priority order),
/// fetches its playlist (a master's first variant followed) and the first bytes of
/// its first segment, or a direct stream's first bytes. A failed test is still a 200,
/// with `ok: false` and why. Not admin: playing the channel causes the same fetches.
/// Tests of one channel asked while one runs, or within 5 s of its end, get its result:
/// a burst of tests costs the upstream one.
#[utoipa::path(
    post,
    path = "/api/channels/{id}/test",
    tag = "channels",
    params(("id" = String, Path, description = "Channel slug, number, or `SERVICE:ID`")),
    responses(
        (status = 200, description = "The test ran (see `ok`)", body = ChannelTest),
        (status = 404, description = "No such channel, or none of its sources is enabled", body = ErrorBody),
        (status = 500, description = "The state store failed", body = ErrorBody)
    )
)]
async fn test_channel(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ChannelTest>, AppError> {
    Ok(Json(s.channel_tests.of(&Engine::of(&s), &id).await?))
}
