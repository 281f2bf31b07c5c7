//! `/player_api.php`: the login answer and the actions, in the JSON shapes real panels
//! send (many numbers as strings; EPG titles and descriptions base64). A wrong login
//! answers `{"user_info":{"auth":0}}` (status 200, as panels do); an unknown action `[]`.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use serde_json::{json, Value};

use super::{category_id, login, visible, Client, Params};
use crate::accounts::{self, Account, AccountError, Status};
use crate::http::error::{AppError, ErrorBody};
use crate::http::{base_url, AppState};

/// Xtream Codes' player API: without `action` (or with `get_profile` /
/// `get_server_info`, which some client libraries send) the login answer
/// (`user_info`, `server_info`); `get_live_categories`, `get_live_streams`
/// (`category_id`), `get_short_epg` (`stream_id`, `limit`), `get_simple_data_table`
/// (`stream_id`); the movie and series actions `get_vod_categories`, `get_vod_streams`
/// (`category_id`), `get_vod_info` (`vod_id`), `get_series_categories`, `get_series`
/// (`category_id`), `get_series_info` (`series_id`).
#[utoipa::path(
    get,
    path = "/player_api.php",
    tag = "xtream-output",
    params(
        ("username" = String, Query, description = "The viewer account's name"),
        ("password" = String, Query, description = "Its password"),
        ("action" = Option<String>, Query, description = "The action; none: the login answer"),
        ("category_id" = Option<String>, Query, description = "get_live_streams: only this category"),
        ("stream_id" = Option<String>, Query, description = "get_short_epg, get_simple_data_table: the channel"),
        ("limit" = Option<String>, Query, description = "get_short_epg: programmes at most (default 4)"),
        ("vod_id" = Option<String>, Query, description = "get_vod_info: the movie"),
        ("series_id" = Option<String>, Query, description = "get_series_info: the series")
    ),
    responses(
        (status = 200, description = "The action's JSON: an object (the login answer, `get_vod_info`...) or a list (`get_live_streams`...); `{\"user_info\":{\"auth\":0}}` for a wrong login", body = serde_json::Value),
        (status = 400, description = "A malformed id or limit", body = ErrorBody),
        (status = 500, description = "The state store failed", body = ErrorBody)
    )
)]
pub(super) async fn player_api(
    State(s): State<AppState>,
    client: Client,
    headers: HeaderMap,
    Params(q): Params,
) -> Result<Response, AppError> {
    let account = match login(&s, q.get("username"), q.get("password"), &client).await {
        Ok(a) => a,
        Err(AccountError::BadLogin) => {
            return Ok(Json(json!({ "user_info": { "auth": 0 } })).into_response())
        }
        Err(e) => return Err(e.into()),
    };
    let now = accounts::now();
    let action = q.get("action").map(String::as_str).unwrap_or("");
    if matches!(action, "" | "get_profile" | "get_server_info") {
        let password = q.get("password").map_or("", String::as_str);
        return Ok(Json(login_answer(&s, &account, password, &headers, now)).into_response());
    }
    // A disabled or expired account sees its status in the login answer, and nothing.
    let active = account.status(now) == Status::Active;
    let value = match action {
        "get_live_categories" if active => {
            let lineup = s.registry.lineup().await?;
            let mut seen = BTreeMap::new();
            let mut out = Vec::new();
            for c in visible(&lineup, &account) {
                let id = category_id(&c.group);
                if seen.insert(id, ()).is_none() {
                    out.push(json!({
                        "category_id": id.to_string(),
                        "category_name": crate::accounts::shown_group(&c.group),
                        "parent_id": 0,
                    }));
                }
            }
            Value::Array(out)
        }
        "get_live_streams" if active => {
            // As panels read it (PHP's intval: not a number, or 0, is every category).
            let only = q
                .get("category_id")
                .and_then(|c| c.trim().parse::<u32>().ok())
                .filter(|&c| c != 0);
            let lineup = crate::http::logos::lineup(&s, &headers).await?;
            // Typed rows serialized straight from the lineup (no JSON tree per channel)
            // and streamed batch by batch: this list is the largest answer players
            // fetch, and many may fetch it at once.
            let chosen = super::visible_at(&lineup, &account, |c| {
                only.is_none_or(|id| category_id(&c.group) == id)
            });
            let viewer = account.clone();
            let body = crate::http::playlist::chunked_body(
                "[".to_string(),
                chosen.len(),
                move |i, buf| {
                    if i > 0 {
                        buf.push(',');
                    }
                    let c = &lineup.channels[chosen[i]];
                    let cat = category_id(&c.group);
                    let days = viewer.catchup_days(c);
                    let row = LiveStream {
                        num: c.number,
                        name: &c.name,
                        stream_type: "live",
                        stream_id: c.number,
                        stream_icon: &c.logo,
                        epg_channel_id: &c.guide_id,
                        added: "0",
                        is_adult: "0",
                        category_id: cat.to_string(),
                        category_ids: [cat],
                        custom_sid: "",
                        tv_archive: u32::from(days > 0),
                        direct_source: "",
                        tv_archive_duration: days,
                        thumbnail: "",
                    };
                    crate::http::api::json_into(buf, &row);
                },
                "]",
            );
            return Ok((
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response());
        }
        "get_short_epg" | "get_simple_data_table" if active => {
            let full = action == "get_simple_data_table";
            // As panels read them: a missing or malformed stream_id is no channel (no
            // listings, still the shape players parse), a limit that is not a positive
            // number the default 4.
            let number = q.get("stream_id").and_then(|id| super::stream_id(id).ok());
            let limit = q
                .get("limit")
                .and_then(|l| l.trim().parse::<usize>().ok())
                .filter(|&l| l != 0)
                .unwrap_or(4);
            let lineup = s.registry.lineup().await?;
            let channel = number.and_then(|number| {
                lineup
                    .channels
                    .iter()
                    .find(|c| c.number == number && account.sees(c))
            });
            let listings = match channel {
                None => Vec::new(),
                Some(c) => epg_listings(&s, c, account.catchup_days(c), now, full, limit).await,
            };
            json!({ "epg_listings": listings })
        }
        "get_vod_categories"
        | "get_series_categories"
        | "get_vod_streams"
        | "get_series"
        | "get_vod_info"
        | "get_series_info"
            if active =>
        {
            if let Some(answer) =
                crate::http::vod::xtream_action(&s, &account, action, &q, &headers).await
            {
                return answer;
            }
            json!([])
        }
        "get_vod_info" => json!({ "info": [], "movie_data": [] }),
        "get_series_info" => json!({ "seasons": [], "info": { "name": null }, "episodes": {} }),
        "get_short_epg" | "get_simple_data_table" => json!({ "epg_listings": [] }),
        "get_live_categories" | "get_live_streams" => json!([]),
        _ => json!([]),
    };
    Ok(Json(value).into_response())
}

/// One `get_live_streams` entry, typed as panels send it.
#[derive(serde::Serialize)]
struct LiveStream<'a> {
    num: u32,
    name: &'a str,
    stream_type: &'static str,
    stream_id: u32,
    stream_icon: &'a str,
    epg_channel_id: &'a str,
    added: &'static str,
    is_adult: &'static str,
    category_id: String,
    category_ids: [u32; 1],
    custom_sid: &'static str,
    tv_archive: u32,
    direct_source: &'static str,
    tv_archive_duration: u32,
    thumbnail: &'static str,
}

/// `user_info` and `server_info`, typed as the panels send them.
fn login_answer(s: &AppState, a: &Account, password: &str, headers: &HeaderMap, now: i64) -> Value {
    let base = base_url(&s.config, headers);
    let parsed = url::Url::parse(&base).ok();
    let host = parsed
        .as_ref()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default();
    let scheme = parsed.as_ref().map_or("http", |u| u.scheme()).to_string();
    let port = parsed
        .as_ref()
        .and_then(|u| u.port_or_known_default())
        .unwrap_or(80);
    let https_port = if scheme == "https" { port } else { 443 };
    let status = a.status(now);
    let active_cons = s.accounts.conns.open(&a.name) + s.accounts.conns.elsewhere(&a.name);
    json!({
        "user_info": {
            "username": a.name,
            "password": password,
            "message": "",
            "auth": 1,
            "status": status.as_str(),
            "exp_date": a.expires.as_ref().map(|(_, at)| at.to_string()),
            "is_trial": "0",
            "active_cons": active_cons.to_string(),
            "created_at": a.created_at.to_string(),
            "max_connections": a.max_connections.to_string(),
            "allowed_output_formats": ["m3u8", "ts"],
        },
        "server_info": {
            "url": host,
            "port": port.to_string(),
            "https_port": https_port.to_string(),
            "server_protocol": scheme,
            "rtmp_port": "0",
            "timezone": "UTC",
            "timestamp_now": now,
            "time_now": time_text(now),
        }
    })
}

/// `YYYY-MM-DD HH:MM:SS` in UTC, as panels write times.
fn time_text(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .unwrap_or_default()
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// The channel's programmes: from the one on now, at most `limit` (short EPG); or
/// every kept one with `now_playing` (the full table).
async fn epg_listings(
    s: &AppState,
    c: &crate::model::LineupChannel,
    days: u32,
    now: i64,
    full: bool,
    limit: usize,
) -> Vec<Value> {
    let from = if full { i64::MIN } else { now };
    let b64 = |t: &str| base64::engine::general_purpose::STANDARD.encode(t.as_bytes());
    let programmes = s.guides.listings(&c.id, from).await;
    let take = if full { programmes.len() } else { limit };
    programmes
        .iter()
        .take(take)
        .map(|p| {
            let stop = p.stop.unwrap_or(p.start);
            let mut v = json!({
                "id": format!("{}{}", c.number, p.start),
                "epg_id": c.number.to_string(),
                "title": b64(&p.title),
                "lang": p.lang().unwrap_or_default(),
                "start": time_text(p.start),
                "end": time_text(stop),
                "description": b64(&p.desc().unwrap_or_default()),
                "channel_id": c.guide_id,
                "start_timestamp": p.start.to_string(),
                "stop_timestamp": stop.to_string(),
                "stop": time_text(stop),
            });
            if full {
                v["now_playing"] = json!(u32::from(p.start <= now && now < stop));
            }
            v["has_archive"] = json!(u32::from(crate::catchup::has_archive(
                days, p.start, stop, now
            )));
            v
        })
        .collect()
}
