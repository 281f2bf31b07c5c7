//! Xtream catch-up: `/timeshift/U/P/{minutes}/{YYYY-MM-DD:HH-MM}/{stream_id}.ts` and
//! `/streaming/timeshift.php?username=&password=&stream=&start=&duration=`. Both log the
//! viewer in, check it sees the channel, count the playback as one of its connections
//! while the answer streams, and play the window through `http::timeshift` (the same
//! archive lookup, sealed links and fallback as `/api/timeshift/...`). Start times are
//! read as UTC, which `server_info.timezone` announces.

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;

use super::{held, login, peer, stream_id, visible_channel, Client};
use crate::accounts;
use crate::app::AppState;
use crate::catchup;
use crate::http::error::{AppError, ErrorBody};

/// A past window of a channel, in the path form Xtream players build.
#[utoipa::path(
    get,
    path = "/timeshift/{user}/{pass}/{minutes}/{start}/{file}",
    tag = "xtream-output",
    params(
        ("user" = String, Path, description = "The viewer account's name"),
        ("pass" = String, Path, description = "Its password"),
        ("minutes" = u32, Path, description = "How long to play"),
        ("start" = String, Path, description = "Where to start, `YYYY-MM-DD:HH-MM` (UTC)"),
        ("file" = String, Path, description = "`{stream_id}.ts`")
    ),
    responses(
        (status = 200, description = "The archive (MPEG-TS, or an HLS playlist of sealed links)", content(
            (Vec<u8> = "video/mp2t"),
            (String = "application/vnd.apple.mpegurl")
        )),
        (status = 400, description = "Bad minutes, start or stream id", body = ErrorBody),
        (status = 401, description = "Wrong user name or password", body = ErrorBody),
        (status = 403, description = "The account is disabled, expired, or at its connection limit", body = ErrorBody),
        (status = 404, description = "No such channel among those the account sees, or no archive for that time", body = ErrorBody),
        (status = 502, description = "Every source with an archive failed", body = ErrorBody)
    )
)]
pub(super) async fn path_form(
    State(s): State<AppState>,
    Path((user, pass, minutes, start, file)): Path<(String, String, String, String, String)>,
    client: Client,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    // The login first, as the query form does: a wrong one is a 401 whatever else the
    // path holds.
    let account = login(&s, Some(&user), Some(&pass), &client).await?;
    // `.ts`, or `.m3u8` as newer panels take it: either way what the archive serves.
    let id = file
        .strip_suffix(".ts")
        .or_else(|| file.strip_suffix(".m3u8"))
        .unwrap_or(&file);
    let number = stream_id(id)?;
    let minutes = parse_minutes(&minutes)?;
    let start = catchup::parse_start(&start).map_err(|e| AppError::BadRequest(e.to_string()))?;
    account_timeshift(
        &s,
        &account,
        (&super::slug_of(&s, number, id).await?, id),
        start,
        minutes,
        peer(&client),
        &headers,
    )
    .await
}

/// The same, in the query form (`stream`, `start`, `duration`).
#[utoipa::path(
    get,
    path = "/streaming/timeshift.php",
    tag = "xtream-output",
    params(
        ("username" = String, Query, description = "The viewer account's name"),
        ("password" = String, Query, description = "Its password"),
        ("stream" = u32, Query, description = "The stream id (lineup number)"),
        ("start" = String, Query, description = "Where to start, `YYYY-MM-DD:HH-MM` (UTC)"),
        ("duration" = u32, Query, description = "How long to play, in minutes")
    ),
    responses(
        (status = 200, description = "The archive", content(
            (Vec<u8> = "video/mp2t"),
            (String = "application/vnd.apple.mpegurl")
        )),
        (status = 400, description = "A missing or bad parameter", body = ErrorBody),
        (status = 401, description = "Wrong user name or password", body = ErrorBody),
        (status = 403, description = "The account is disabled, expired, or at its connection limit", body = ErrorBody),
        (status = 404, description = "No such channel among those the account sees, or no archive for that time", body = ErrorBody),
        (status = 502, description = "Every source with an archive failed", body = ErrorBody)
    )
)]
pub(super) async fn query_form(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
    client: Client,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let need = |k: &str| {
        q.get(k)
            .ok_or_else(|| AppError::BadRequest(format!("`{k}` is missing")))
    };
    let account = login(&s, q.get("username"), q.get("password"), &client).await?;
    let asked = need("stream")?.trim_end_matches(".ts");
    let number = stream_id(asked)?;
    let start =
        catchup::parse_start(need("start")?).map_err(|e| AppError::BadRequest(e.to_string()))?;
    let minutes = parse_minutes(need("duration")?)?;
    account_timeshift(
        &s,
        &account,
        (&super::slug_of(&s, number, asked).await?, asked),
        start,
        minutes,
        peer(&client),
        &headers,
    )
    .await
}

fn parse_minutes(text: &str) -> Result<u32, AppError> {
    text.parse::<u32>()
        .ok()
        .filter(|m| (1..=1440).contains(m))
        .ok_or_else(|| {
            AppError::BadRequest(format!(
                "duration `{}`: minutes from 1 to 1440",
                text.escape_debug()
            ))
        })
}

/// Channel `id` from `start` (unix seconds) for `minutes`, for `account`: refused
/// when it does not see the channel (a 404 naming it as the request did: `asked`) or is
/// at its limit; counted while the answer streams.
pub(crate) async fn account_timeshift(
    s: &AppState,
    account: &accounts::Account,
    (id, asked): (&str, &str),
    start: i64,
    minutes: u32,
    client: Option<SocketAddr>,
    headers: &HeaderMap,
) -> Result<Response, AppError> {
    account.usable(accounts::now())?;
    let (channel, _) = visible_channel(s, account, id, asked, None).await?;
    let conn = s
        .accounts
        .connect(account, &channel.id, client.map(|p| p.ip()), false)?;
    let resp =
        crate::http::timeshift::timeshift(s, &channel.id, start, minutes, account, headers).await?;
    if super::is_playlist(&resp) {
        // An HLS archive: the player reads the playlist once, then its segments. It
        // counts as the channel's HLS player of this account, and every link of the
        // playlist carries the account, so each segment it fetches keeps it counted,
        // and is refused once the account may no longer watch (a guard on the
        // playlist's few bytes would count nothing).
        // Its links name the channel (pinned: a catch-up does not fail over to the
        // live sources), so its tag is made for the channel.
        drop(conn);
        let from = client.map(|p| p.ip());
        s.accounts.connect(account, &channel.id, from, true)?;
        return super::tag_links_of(s, account, &channel.id, resp, super::Tagged::Every).await;
    }
    Ok(match conn.into_guard() {
        Some(guard) => held(guard, resp),
        None => resp,
    })
}
