//! HDHomeRun tuner emulation, as Plex, Jellyfin and Emby read it: `discover.json`,
//! `lineup.json`, `lineup_status.json`, `device.xml` / `capability`,
//! `POST lineup.post`, and `/auto/v{number}` streaming the channel's shared MPEG-TS
//! session. `tuner_count` bounds concurrent tuner streams; one more gets 503, which
//! is what media servers expect of a busy tuner. All of it answers 404 when
//! `[hdhomerun] enabled = false`.
//!
//! Virtual tuners (`[hdhomerun] max_channels`): Plex copes badly with more than about
//! 420-480 channels per tuner, so the lineup is also served split by group, virtual
//! tuner n under `/tuners/{n}/` with the same endpoints, its own DeviceID and
//! FriendlyName. The top-level endpoints keep serving the whole lineup. Channel
//! numbers are unique across tuners, so every `auto/v{number}` plays any channel, and
//! all tuners share the `tuner_count` slots.
//!
//! Only the handlers live here; the tuner identity and slots are `crate::tuner`;
//! DeviceID maths, group packing and `device.xml` are the pure `crate::hdhr`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use serde::Serialize;
use serde_json::{json, Value};
use std::time::Duration;

use super::{base_url, AppState};
use crate::hdhr;
use crate::http::error::{AppError, ErrorBody};
use crate::lineup::Lineup;
use crate::model::LineupChannel;
use crate::streams::session;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/discover.json", get(discover_main))
        .route("/lineup.json", get(lineup_main).layer(super::gzipped()))
        .route("/lineup_status.json", get(lineup_status_main))
        .route("/device.xml", get(device_xml_main))
        .route("/capability", get(capability))
        .route("/lineup.post", post(lineup_post_main))
        .route("/auto/{channel}", get(tune))
        .route("/tuners/{n}/discover.json", get(tuner_discover))
        .route(
            "/tuners/{n}/lineup.json",
            get(tuner_lineup).layer(super::gzipped()),
        )
        .route("/tuners/{n}/lineup_status.json", get(tuner_lineup_status))
        .route("/tuners/{n}/device.xml", get(tuner_device_xml))
        .route("/tuners/{n}/capability", get(tuner_capability))
        .route("/tuners/{n}/lineup.post", post(tuner_lineup_post))
        .route("/tuners/{n}/auto/{channel}", get(tuner_tune))
        .route("/api/tuners", get(tuners))
}

/// The tuner's operations, for `/api/openapi.json` (`super::openapi`). Every
/// `/tuners/{n}/...` path has its own small handler so that each is documented.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        discover_main,
        lineup_main,
        lineup_status_main,
        device_xml_main,
        capability,
        lineup_post_main,
        tune,
        tuner_discover,
        tuner_lineup,
        tuner_lineup_status,
        tuner_device_xml,
        tuner_capability,
        tuner_lineup_post,
        tuner_tune,
        tuners
    ),
    components(schemas(ErrorBody, DiscoverBody, LineupEntry, LineupStatusBody, TunerInfo))
)]
pub(crate) struct Doc;

// The JSON bodies below, as the handlers write them with `json!` (documentation only).

/// `discover.json`.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
#[allow(dead_code)]
struct DiscoverBody {
    friendly_name: String,
    model_number: String,
    firmware_name: String,
    firmware_version: String,
    #[serde(rename = "DeviceID")]
    device_id: String,
    device_auth: String,
    #[serde(rename = "BaseURL")]
    base_url: String,
    #[serde(rename = "LineupURL")]
    lineup_url: String,
    tuner_count: u32,
    manufacturer: String,
}

/// One `lineup.json` entry.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
#[allow(dead_code)]
struct LineupEntry {
    guide_number: String,
    guide_name: String,
    #[serde(rename = "URL")]
    url: String,
    #[serde(rename = "HD")]
    hd: bool,
    favorite: bool,
    #[serde(rename = "DRM")]
    drm: bool,
    video_codec: String,
    audio_codec: String,
}

/// `lineup_status.json`.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "PascalCase")]
#[allow(dead_code)]
struct LineupStatusBody {
    scan_in_progress: u32,
    scan_possible: u32,
    source: String,
    source_list: Vec<String>,
}

/// One virtual tuner in `/api/tuners`.
#[derive(Serialize, utoipa::ToSchema)]
#[allow(dead_code)]
struct TunerInfo {
    n: u32,
    device_id: String,
    friendly_name: String,
    /// Add this URL to a media server as a tuner.
    url: String,
    channels: u32,
    groups: Vec<String>,
}

fn enabled(s: &AppState) -> Result<(), AppError> {
    if s.config.hdhomerun.enabled {
        super::xtream::tuner_account(s).map(drop)
    } else {
        Err(AppError::NotFound(
            "HDHomeRun emulation is off ([hdhomerun] enabled = false)".into(),
        ))
    }
}

/// The device a request is for: the whole tuner, or one virtual tuner.
struct Device {
    friendly_name: String,
    device_id: String,
    /// Where every URL it hands out starts: `{base}`, or `{base}/tuners/{n}`.
    base: String,
    /// A virtual tuner's lineup and its channels in it (indices); `None`: the whole
    /// lineup, loaded only by the handlers that list it.
    only: Option<(Arc<Lineup>, Vec<usize>)>,
}

/// The lineup as the virtual tuners split it now.
struct Split {
    lineup: Arc<Lineup>,
    /// Indices into `lineup.channels`; virtual tuner n is `tuners[n - 1]`.
    tuners: Arc<Vec<Vec<usize>>>,
}

async fn split(s: &AppState) -> Result<Split, AppError> {
    let max = s.config.hdhomerun.max_channels;
    if max == 0 {
        return Err(AppError::NotFound(
            "virtual tuners are off ([hdhomerun] max_channels = 0)".into(),
        ));
    }
    let lineup = s.registry.lineup().await?;
    let account = super::xtream::tuner_account(s)?;
    let tuners = s.tuner.split(&lineup, max as usize, account.as_ref());
    Ok(Split { lineup, tuners })
}

/// `n` from `/tuners/{n}/...` (none: the whole tuner), checked against the split.
async fn device(s: &AppState, headers: &HeaderMap, n: Option<&str>) -> Result<Device, AppError> {
    enabled(s)?;
    let base = base_url(&s.config, headers);
    let name = &s.config.hdhomerun.friendly_name;
    let Some(n) = n else {
        return Ok(Device {
            friendly_name: name.clone(),
            device_id: s.tuner.device_id.clone(),
            base,
            only: None,
        });
    };
    let split = split(s).await?;
    let count = split.tuners.len();
    let k = n
        .parse::<usize>()
        .ok()
        .filter(|k| (1..=count).contains(k))
        .ok_or_else(|| {
            AppError::NotFound(format!(
                "no virtual tuner `{n}` (there are {count}: /tuners/1 to /tuners/{count})"
            ))
        })?;
    let device_id = s
        .tuner
        .virtual_ids(k)
        .pop()
        .expect("virtual_ids(k) has k ids, k >= 1");
    let Split { lineup, tuners } = split;
    Ok(Device {
        friendly_name: format!("{name} {k}"),
        device_id,
        base: format!("{base}/tuners/{k}"),
        only: Some((lineup, tuners[k - 1].clone())),
    })
}

/// The device, as HDHomeRun clients discover it.
async fn discover(
    s: AppState,
    n: Option<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, AppError> {
    let d = device(&s, &headers, n.as_deref()).await?;
    let base = &d.base;
    Ok(Json(json!({
        "FriendlyName": d.friendly_name,
        // Not an "HDTC" model: Jellyfin would then append ?transcode= to stream URLs.
        "ModelNumber": "HDHR5-4US",
        "FirmwareName": "hdhomerun5_atsc",
        "FirmwareVersion": "20200101",
        "DeviceID": d.device_id,
        "DeviceAuth": s.tuner.device_auth,
        "BaseURL": base,
        "LineupURL": format!("{base}/lineup.json"),
        "TunerCount": tuner_count(&s)?,
        // As device.xml says it, and as the tuners it stands for answer.
        "Manufacturer": "Silicondust",
    })))
}

/// The tuner's viewer account, with `require_account` (an error: the tuner is off).
pub(crate) use super::xtream::tuner_account;

/// The tuners a client may use at once: `tuner_count`, or fewer when the tuner's
/// account allows fewer connections.
pub(crate) fn tuner_count(s: &AppState) -> Result<u32, AppError> {
    let n = s.config.hdhomerun.tuner_count;
    Ok(match super::xtream::tuner_account(s)? {
        Some(a) if a.max_connections > 0 => n.min(a.max_connections),
        _ => n,
    })
}

/// Every lineup channel with its tuner URL.
async fn lineup(s: AppState, n: Option<String>, headers: HeaderMap) -> Result<Response, AppError> {
    let d = device(&s, &headers, n.as_deref()).await?;
    let account = super::xtream::tuner_account(&s)?;
    let sees = move |c: &LineupChannel| account.as_ref().is_none_or(|a| a.sees(c));
    // One entry as `json!` wrote it: keys in sorted order.
    #[derive(Serialize)]
    struct Entry<'a> {
        #[serde(rename = "AudioCodec")]
        audio_codec: &'a str,
        #[serde(rename = "DRM")]
        drm: bool,
        #[serde(rename = "Favorite")]
        favorite: bool,
        #[serde(rename = "GuideName")]
        guide_name: &'a str,
        #[serde(rename = "GuideNumber")]
        guide_number: String,
        #[serde(rename = "HD")]
        hd: bool,
        #[serde(rename = "URL")]
        url: String,
        #[serde(rename = "VideoCodec")]
        video_codec: &'a str,
    }
    let base = d.base;
    let mut first = true;
    let mut entry = move |buf: &mut String, c: &LineupChannel| {
        if !sees(c) {
            return;
        }
        if !std::mem::take(&mut first) {
            buf.push(',');
        }
        let e = Entry {
            audio_codec: "AAC",
            drm: false,
            favorite: false,
            guide_name: &c.name,
            guide_number: c.number.to_string(),
            hd: crate::hdhr::is_hd(&c.name),
            url: format!("{base}/auto/v{}", c.number),
            video_codec: "H264",
        };
        super::api::json_into(buf, &e);
    };
    // Streamed from the shared lineup (or this tuner's part of it), never whole.
    let body = match d.only {
        Some((lineup, only)) => super::playlist::chunked_body(
            "[".to_string(),
            only.len(),
            move |i, buf| entry(buf, &lineup.channels[only[i]]),
            "]",
        ),
        None => {
            let lineup = s.registry.lineup().await?;
            super::playlist::chunked_body(
                "[".to_string(),
                lineup.channels.len(),
                move |i, buf| entry(buf, &lineup.channels[i]),
                "]",
            )
        }
    };
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

async fn lineup_status(
    s: AppState,
    n: Option<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, AppError> {
    device(&s, &headers, n.as_deref()).await?;
    Ok(Json(json!({
        "ScanInProgress": 0,
        "ScanPossible": 1,
        "Source": "Cable",
        "SourceList": ["Cable"],
    })))
}

/// `scan=start|abort`: the lineup is always current, so a scan finishes at once.
/// Any other `scan` value is a 400, as on a real tuner.
async fn lineup_post(
    s: AppState,
    n: Option<String>,
    query: Option<String>,
    headers: HeaderMap,
) -> Result<StatusCode, AppError> {
    device(&s, &headers, n.as_deref()).await?;
    let scan = query.and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "scan")
            .map(|(_, v)| v.into_owned())
    });
    match scan.as_deref() {
        None | Some("start" | "abort") => Ok(StatusCode::OK),
        Some(other) => Err(AppError::BadRequest(format!(
            "scan must be `start` or `abort`, not `{other}`"
        ))),
    }
}

/// The UPnP device description.
async fn device_xml(
    s: AppState,
    n: Option<String>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let d = device(&s, &headers, n.as_deref()).await?;
    let xml = hdhr::device_xml(&d.base, &d.friendly_name, &d.device_id);
    Ok(([(header::CONTENT_TYPE, "application/xml")], xml).into_response())
}

/// `discover.json`: the whole tuner, as HDHomeRun clients discover it.
#[utoipa::path(
    get,
    path = "/discover.json",
    tag = "hdhomerun",
    responses(
        (status = 200, description = "The device", body = DiscoverBody),
        (status = 404, description = "HDHomeRun emulation is off", body = ErrorBody)
    )
)]
async fn discover_main(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, AppError> {
    discover(s, None, headers).await
}

/// Every lineup channel with its `/auto/v{number}` URL.
#[utoipa::path(
    get,
    path = "/lineup.json",
    tag = "hdhomerun",
    responses(
        (status = 200, description = "The channels", body = Vec<LineupEntry>),
        (status = 500, description = "The state store failed", body = ErrorBody),
        (status = 404, description = "HDHomeRun emulation is off", body = ErrorBody)
    )
)]
async fn lineup_main(State(s): State<AppState>, headers: HeaderMap) -> Result<Response, AppError> {
    lineup(s, None, headers).await
}

/// `GET /api/tuners`: the virtual tuners now (none when `max_channels = 0`), to tell
/// which URLs to add to a media server.
#[utoipa::path(
    get,
    path = "/api/tuners",
    tag = "hdhomerun",
    responses(
        (status = 200, description = "The virtual tuners (none when max_channels = 0)", body = Vec<TunerInfo>),
        (status = 500, description = "The state store failed", body = ErrorBody),
        (status = 404, description = "HDHomeRun emulation is off", body = ErrorBody)
    )
)]
async fn tuners(State(s): State<AppState>, headers: HeaderMap) -> Result<Json<Value>, AppError> {
    enabled(&s)?;
    if s.config.hdhomerun.max_channels == 0 {
        return Ok(Json(json!([])));
    }
    let base = base_url(&s.config, &headers);
    let split = split(&s).await?;
    let ids = s.tuner.virtual_ids(split.tuners.len());
    let list: Vec<Value> = split
        .tuners
        .iter()
        .zip(ids)
        .enumerate()
        .map(|(i, (members, id))| {
            let n = i + 1;
            let mut groups: Vec<&str> = Vec::new();
            for &c in members {
                let g = split.lineup.channels[c].group.as_str();
                if !groups.contains(&g) {
                    groups.push(g);
                }
            }
            json!({
                "n": n,
                "device_id": id,
                "friendly_name": format!("{} {n}", s.config.hdhomerun.friendly_name),
                "url": format!("{base}/tuners/{n}"),
                "channels": members.len(),
                "groups": groups,
            })
        })
        .collect();
    Ok(Json(Value::Array(list)))
}

/// The channel scan status.
#[utoipa::path(
    get,
    path = "/lineup_status.json",
    tag = "hdhomerun",
    responses(
        (status = 200, description = "Never scanning", body = LineupStatusBody),
        (status = 404, description = "HDHomeRun emulation is off", body = ErrorBody)
    )
)]
async fn lineup_status_main(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, AppError> {
    lineup_status(s, None, headers).await
}

/// `scan=start|abort`: the lineup is always current, so a scan finishes at once.
#[utoipa::path(
    post,
    path = "/lineup.post",
    tag = "hdhomerun",
    params(("scan" = Option<String>, Query, description = "`start` or `abort`")),
    responses(
        (status = 200, description = "The scan is done (the lineup is always current)"),
        (status = 400, description = "`scan` is neither `start` nor `abort`", body = ErrorBody),
        (status = 404, description = "HDHomeRun emulation is off", body = ErrorBody)
    )
)]
async fn lineup_post_main(
    State(s): State<AppState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<StatusCode, AppError> {
    lineup_post(s, None, q, headers).await
}

/// The UPnP device description.
#[utoipa::path(
    get,
    path = "/device.xml",
    tag = "hdhomerun",
    responses(
        (status = 200, description = "UPnP device description", body = String, content_type = "application/xml"),
        (status = 404, description = "HDHomeRun emulation is off", body = ErrorBody)
    )
)]
async fn device_xml_main(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    device_xml(s, None, headers).await
}

/// `/capability`: the UPnP device description, as some clients ask for it.
#[utoipa::path(
    get,
    path = "/capability",
    tag = "hdhomerun",
    responses(
        (status = 200, description = "UPnP device description", body = String, content_type = "application/xml"),
        (status = 404, description = "HDHomeRun emulation is off", body = ErrorBody)
    )
)]
async fn capability(State(s): State<AppState>, headers: HeaderMap) -> Result<Response, AppError> {
    device_xml(s, None, headers).await
}

/// Virtual tuner n, as HDHomeRun clients discover it.
#[utoipa::path(
    get,
    path = "/tuners/{n}/discover.json",
    tag = "hdhomerun",
    params(("n" = u32, Path, description = "Virtual tuner number, from 1")),
    responses(
        (status = 200, description = "The virtual tuner as a device", body = DiscoverBody),
        (status = 404, description = "HDHomeRun emulation or virtual tuners are off, or no such virtual tuner", body = ErrorBody),
        (status = 500, description = "The state store failed", body = ErrorBody)
    )
)]
async fn tuner_discover(
    State(s): State<AppState>,
    Path(n): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, AppError> {
    discover(s, Some(n), headers).await
}

/// Virtual tuner n's channels with their tuner URLs.
#[utoipa::path(
    get,
    path = "/tuners/{n}/lineup.json",
    tag = "hdhomerun",
    params(("n" = u32, Path, description = "Virtual tuner number, from 1")),
    responses(
        (status = 200, description = "The virtual tuner's channels", body = Vec<LineupEntry>),
        (status = 404, description = "HDHomeRun emulation or virtual tuners are off, or no such virtual tuner", body = ErrorBody),
        (status = 500, description = "The state store failed", body = ErrorBody)
    )
)]
async fn tuner_lineup(
    State(s): State<AppState>,
    Path(n): Path<String>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    lineup(s, Some(n), headers).await
}

/// Virtual tuner n's channel scan status.
#[utoipa::path(
    get,
    path = "/tuners/{n}/lineup_status.json",
    tag = "hdhomerun",
    params(("n" = u32, Path, description = "Virtual tuner number, from 1")),
    responses(
        (status = 200, description = "Never scanning", body = LineupStatusBody),
        (status = 404, description = "HDHomeRun emulation or virtual tuners are off, or no such virtual tuner", body = ErrorBody),
        (status = 500, description = "The state store failed", body = ErrorBody)
    )
)]
async fn tuner_lineup_status(
    State(s): State<AppState>,
    Path(n): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, AppError> {
    lineup_status(s, Some(n), headers).await
}

/// Virtual tuner n's UPnP device description.
#[utoipa::path(
    get,
    path = "/tuners/{n}/device.xml",
    tag = "hdhomerun",
    params(("n" = u32, Path, description = "Virtual tuner number, from 1")),
    responses(
        (status = 200, description = "UPnP device description", body = String, content_type = "application/xml"),
        (status = 404, description = "HDHomeRun emulation or virtual tuners are off, or no such virtual tuner", body = ErrorBody),
        (status = 500, description = "The state store failed", body = ErrorBody)
    )
)]
async fn tuner_device_xml(
    State(s): State<AppState>,
    Path(n): Path<String>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    device_xml(s, Some(n), headers).await
}

/// Virtual tuner n's UPnP device description (`/capability`).
#[utoipa::path(
    get,
    path = "/tuners/{n}/capability",
    tag = "hdhomerun",
    params(("n" = u32, Path, description = "Virtual tuner number, from 1")),
    responses(
        (status = 200, description = "UPnP device description", body = String, content_type = "application/xml"),
        (status = 404, description = "HDHomeRun emulation or virtual tuners are off, or no such virtual tuner", body = ErrorBody),
        (status = 500, description = "The state store failed", body = ErrorBody)
    )
)]
async fn tuner_capability(
    State(s): State<AppState>,
    Path(n): Path<String>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    device_xml(s, Some(n), headers).await
}

/// Starts or aborts a channel scan on virtual tuner n.
#[utoipa::path(
    post,
    path = "/tuners/{n}/lineup.post",
    tag = "hdhomerun",
    params(("n" = u32, Path, description = "Virtual tuner number, from 1"), ("scan" = Option<String>, Query, description = "`start` or `abort`")),
    responses(
        (status = 200, description = "The scan is done (the lineup is always current)"),
        (status = 400, description = "`scan` is neither `start` nor `abort`", body = ErrorBody),
        (status = 404, description = "HDHomeRun emulation or virtual tuners are off, or no such virtual tuner", body = ErrorBody),
        (status = 500, description = "The state store failed", body = ErrorBody)
    )
)]
async fn tuner_lineup_post(
    State(s): State<AppState>,
    Path(n): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<StatusCode, AppError> {
    lineup_post(s, Some(n), q, headers).await
}

/// `/auto/v{number}`: the channel's continuous MPEG-TS, on one of the tuners.
#[utoipa::path(
    get,
    path = "/auto/{channel}",
    tag = "hdhomerun",
    params(("channel" = String, Path, description = "`v{number}`, e.g. `v101`")),
    responses(
        (status = 200, description = "Continuous MPEG-TS", body = Vec<u8>, content_type = "video/mp2t"),
        (status = 404, description = "HDHomeRun emulation is off, or no such channel number", body = ErrorBody),
        (status = 500, description = "The state store failed", body = ErrorBody),
        (status = 502, description = "Every source of the channel failed", body = ErrorBody),
        (status = 503, description = "Every tuner is in use", body = ErrorBody),
        (status = 504, description = "Every source of the channel timed out", body = ErrorBody)
    )
)]
async fn tune(
    State(s): State<AppState>,
    method: Method,
    Path(channel): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let q = TuneQuery::of(q, method == Method::HEAD);
    with_tuner_error(tune_on(s, None, channel, q, headers).await)
}

/// A tune without `duration` ends when the client goes (a century stands for never).
const NEVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// What a tuner URL may carry besides the channel (read leniently, as a tuner does:
/// other parameters, repeats and malformed ones are ignored).
#[derive(Default)]
struct TuneQuery {
    /// Seconds, as a real HDHomeRun takes it: the stream ends after that long
    /// (recorders rely on it); anything but a positive whole number is a 400.
    duration: Option<String>,
    /// A `HEAD`: answered as the tune would be (unknown channel, every tuner busy, or
    /// the stream's headers), without taking a tuner or opening the channel.
    head: bool,
}

impl TuneQuery {
    fn of(query: Option<String>, head: bool) -> Self {
        let duration = query.and_then(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "duration")
                .map(|(_, v)| v.into_owned())
        });
        Self { duration, head }
    }
}

/// The answer of a tune, with the `X-HDHomeRun-Error` header a real tuner adds to a
/// refusal (recorders read it to tell "busy" from "no signal"): 801 for an unknown
/// channel, 805 when every tuner is in use, 806 when the channel could not be tuned.
fn with_tuner_error(result: Result<Response, AppError>) -> Response {
    let mut resp = result.unwrap_or_else(IntoResponse::into_response);
    let code = match resp.status() {
        StatusCode::NOT_FOUND => "801 Unknown Channel",
        StatusCode::SERVICE_UNAVAILABLE => "805 All Tuners In Use",
        StatusCode::BAD_GATEWAY | StatusCode::GATEWAY_TIMEOUT => "806 Tune Failed",
        _ => return resp,
    };
    resp.headers_mut().insert(
        header::HeaderName::from_static("x-hdhomerun-error"),
        header::HeaderValue::from_static(code),
    );
    resp
}

/// `/tuners/{n}/auto/v{number}`: the same, on virtual tuner n. Under a virtual tuner
/// any channel plays (numbers are unique; a channel may just have moved to another
/// virtual tuner), but the tuner must exist.
#[utoipa::path(
    get,
    path = "/tuners/{n}/auto/{channel}",
    tag = "hdhomerun",
    params(
        ("n" = u32, Path, description = "Virtual tuner number, from 1"),
        ("channel" = String, Path, description = "`v{number}`, e.g. `v101`")
    ),
    responses(
        (status = 200, description = "Continuous MPEG-TS", body = Vec<u8>, content_type = "video/mp2t"),
        (status = 404, description = "HDHomeRun emulation or virtual tuners are off, no such virtual tuner, or no such channel number", body = ErrorBody),
        (status = 500, description = "The state store failed", body = ErrorBody),
        (status = 502, description = "Every source of the channel failed", body = ErrorBody),
        (status = 503, description = "Every tuner is in use", body = ErrorBody),
        (status = 504, description = "Every source of the channel timed out", body = ErrorBody)
    )
)]
async fn tuner_tune(
    State(s): State<AppState>,
    Path((n, channel)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    method: Method,
) -> Response {
    let q = TuneQuery::of(q, method == Method::HEAD);
    with_tuner_error(tune_on(s, Some(n), channel, q, headers).await)
}

/// Every tuner is in use.
fn all_busy(s: &AppState) -> AppError {
    AppError::Busy(match s.config.hdhomerun.tuner_count {
        1 => "the tuner is in use".to_string(),
        n => format!("all {n} tuners are in use"),
    })
}

/// Channel `channel` (`v{number}`) on the whole tuner or virtual tuner `n`.
async fn tune_on(
    s: AppState,
    n: Option<String>,
    channel: String,
    q: TuneQuery,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    device(&s, &headers, n.as_deref()).await?;
    // Read before anything is taken: a recorder that sent a bad one would otherwise
    // record for ever.
    let duration = match q.duration.as_deref().map(str::trim) {
        None => NEVER,
        Some(d) => d
            .parse::<u64>()
            .ok()
            .filter(|&d| d > 0)
            .map(Duration::from_secs)
            .ok_or_else(|| {
                AppError::BadRequest(format!(
                    "duration `{}`: the stream's length in whole seconds, e.g. ?duration=3600",
                    d.escape_debug()
                ))
            })?,
    };
    let number = channel
        .strip_prefix('v')
        .and_then(|n| n.parse::<u32>().ok())
        .ok_or_else(|| {
            AppError::NotFound(format!("`{channel}`: tuner channels are /auto/v{{number}}"))
        })?;
    // The lineup channel's id, so tuner viewers share the session of .ts viewers.
    let account = super::xtream::tuner_account(&s)?;
    let id = s
        .registry
        .lineup()
        .await?
        .by_number(number)
        .filter(|c| account.as_ref().is_none_or(|a| a.sees(c)))
        .map(|c| c.id.clone())
        .ok_or_else(|| AppError::NotFound(format!("no channel number {number}")))?;
    if q.head {
        // A probe: a tuner free now is all it learns (none is held, nothing opened).
        if s.tuner.slots.try_take().is_err() {
            return Ok(all_busy(&s).into_response());
        }
        return Ok((
            [
                (header::CONTENT_TYPE, "video/MP2T"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            super::stream::PASSIVE,
            // Of no stated length, as the stream is (an empty body would say 0).
            Body::from_stream(futures::stream::empty::<Result<bytes::Bytes, std::io::Error>>()),
        )
            .into_response());
    }
    // With `require_account`, the tuner's account's connection limit holds too: at
    // it, the tuner is busy (503, which Plex and Jellyfin read as "no tuner free").
    let conn = match &account {
        Some(a) => match s.accounts.connect(a, &id, None, false) {
            Ok(c) => c.into_guard(),
            Err(e @ crate::accounts::AccountError::Limit { .. }) => {
                return Ok(AppError::Busy(format!("the tuner is busy: {e}")).into_response())
            }
            Err(e) => return Err(e.into()),
        },
        None => None,
    };
    let Ok(slot) = s.tuner.slots.try_take() else {
        return Ok(all_busy(&s).into_response());
    };
    let joined = s
        .sessions
        .join(&crate::streams::Engine::of(&s), &id, None)
        .await?;
    // The tuner is busy for as long as the client reads; the stream ends once the
    // tuner's account may no longer watch the channel (`Accounts::enforce`).
    let content_type = joined.content_type();
    let body = session::viewer_stream(joined, &id).take_while(move |_| {
        let _slot = &slot;
        std::future::ready(conn.as_ref().is_none_or(|c| !c.is_ended()))
    });
    let body = body.take_until(tokio::time::sleep(duration));
    Ok((
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        super::stream::PASSIVE,
        Body::from_stream(body),
    )
        .into_response())
}
