//! The Xtream Codes output players log in to (TiviMate, IPTV Smarters, iMPlayer, Kodi):
//! `/player_api.php` (`api`), `/get.php` (the account's M3U Plus), `/xmltv.php` (its
//! guide), and the stream paths `/live/U/P/{stream_id}.ts|.m3u8` and `/U/P/{stream_id}`.
//! A `stream_id` is the lineup channel number. Handlers only parse requests and shape
//! answers: logins, visibility and connection counting are `crate::accounts`'.
//! Every answer holds only what the account sees; a viewer's password appears only
//! in that viewer's own answers (as panels echo it), never in logs.

mod api;
mod timeshift;

pub(super) use timeshift::account_timeshift;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use futures::StreamExt;

use super::{base_url, AppState};
use crate::accounts::{self, Account, AccountError};
use crate::http::error::{AppError, ErrorBody};
use crate::lineup::Lineup;
use crate::model::LineupChannel;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/player_api.php",
            get(api::player_api)
                .post(posted::player_api)
                .layer(super::gzipped()),
        )
        .route(
            "/get.php",
            get(get_php).post(posted::get_php).layer(super::gzipped()),
        )
        .route("/xmltv.php", get(xmltv_php).post(posted::xmltv_php))
        .route("/live/{user}/{pass}/{file}", get(live))
        .route("/movie/{user}/{pass}/{file}", get(xtream_movie))
        .route("/series/{user}/{pass}/{file}", get(xtream_episode))
        .route(
            "/timeshift/{user}/{pass}/{minutes}/{start}/{file}",
            get(timeshift::path_form),
        )
        .route("/streaming/timeshift.php", get(timeshift::query_form))
}

/// The main router's fallback: the short stream form `/U/P/{stream_id}`, else what an
/// unknown path always answers. A route of its own would take every three-part path:
/// unknown ones would answer 405 to other methods and count under its metric label.
pub(crate) async fn fallback(State(s): State<AppState>, req: axum::extract::Request) -> Response {
    let mut short = Router::new()
        .route("/{user}/{pass}/{file}", get(plain))
        .fallback(|uri: axum::http::Uri| async move { unknown(uri.path()) })
        .with_state(s);
    let head = req.method() == axum::http::Method::HEAD;
    let mut resp = match tower_service::Service::call(&mut short, req).await {
        Ok(resp) => resp,
        Err(never) => match never {},
    };
    // The inner router answered a `HEAD` with its body already dropped: an empty body
    // of known size, which the outer router would announce as `Content-Length: 0`.
    // A stream's answer has no length (it never ends), as `/live/` says.
    if head && !resp.headers().contains_key(header::CONTENT_LENGTH) {
        *resp.body_mut() = axum::body::Body::from_stream(futures::stream::empty::<
            Result<bytes::Bytes, std::convert::Infallible>,
        >());
    }
    resp
}

/// An unknown path's answer (under `/proxy/` the 403 of a link that does not open).
fn unknown(path: &str) -> AppError {
    super::stream::unrouted(path).unwrap_or_else(|| AppError::NotFound("no such endpoint".into()))
}

/// The Xtream routes' operations, for `/api/openapi.json` (`super::openapi`).
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        api::player_api,
        get_php,
        xmltv_php,
        posted::player_api,
        posted::get_php,
        posted::xmltv_php,
        live,
        xtream_movie,
        xtream_episode,
        plain,
        timeshift::path_form,
        timeshift::query_form
    ),
    components(schemas(ErrorBody))
)]
pub(crate) struct Doc;

/// The `POST` forms of the panel calls: the same handlers, documented apart (one
/// OpenAPI operation per method).
pub(super) mod posted {
    use super::*;

    /// `player_api.php` with its fields (or some of them) in a form body.
    #[utoipa::path(
        post,
        path = "/player_api.php",
        operation_id = "player_api_post",
        tag = "xtream-output",
        request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "The query's fields (username, password, action...) as a form"),
        responses(
            (status = 200, description = "As the GET form", body = serde_json::Value),
            (status = 400, description = "An unreadable form body", body = ErrorBody)
        )
    )]
    pub(in crate::http) async fn player_api(
        s: State<AppState>,
        client: Client,
        headers: HeaderMap,
        q: Params,
    ) -> Result<Response, AppError> {
        super::api::player_api(s, client, headers, q).await
    }

    /// `get.php` with its fields in a form body.
    #[utoipa::path(
        post,
        path = "/get.php",
        operation_id = "get_php_post",
        tag = "xtream-output",
        request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "username, password, type, output as a form"),
        responses(
            (status = 200, description = "As the GET form", body = String, content_type = "audio/x-mpegurl"),
            (status = 400, description = "An unreadable form body, or another type or output", body = ErrorBody),
            (status = 401, description = "A wrong login", body = ErrorBody),
            (status = 403, description = "The account is disabled or expired", body = ErrorBody)
        )
    )]
    pub(in crate::http) async fn get_php(
        s: State<AppState>,
        client: Client,
        headers: HeaderMap,
        q: Params,
    ) -> Result<Response, AppError> {
        super::get_php(s, client, headers, q).await
    }

    /// `xmltv.php` with its fields in a form body.
    #[utoipa::path(
        post,
        path = "/xmltv.php",
        operation_id = "xmltv_php_post",
        tag = "xtream-output",
        request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "username, password as a form"),
        responses(
            (status = 200, description = "As the GET form", body = String, content_type = "application/xml"),
            (status = 400, description = "An unreadable form body", body = ErrorBody),
            (status = 401, description = "A wrong login", body = ErrorBody),
            (status = 403, description = "The account is disabled or expired", body = ErrorBody)
        )
    )]
    pub(in crate::http) async fn xmltv_php(
        s: State<AppState>,
        client: Client,
        headers: HeaderMap,
        q: Params,
    ) -> Result<Response, AppError> {
        super::xmltv_php(s, client, headers, q).await
    }
}

/// The largest form body a `POST` of `player_api.php`, `get.php` or `xmltv.php` may
/// send: a login and an action's few fields.
const FORM_LIMIT: usize = 16 * 1024;

/// A request's parameters as panels read them (PHP's `$_REQUEST`): the query, and for
/// a `POST` its form body (the IPTV Smarters family posts its logins and actions); a
/// form field wins over the same query parameter. Takes the body: the handler's last
/// argument.
pub(super) struct Params(pub HashMap<String, String>);

impl axum::extract::FromRequest<AppState> for Params {
    type Rejection = AppError;

    async fn from_request(req: axum::extract::Request, _: &AppState) -> Result<Self, AppError> {
        let mut params: HashMap<String, String> = req
            .uri()
            .query()
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .into_owned()
                    .collect()
            })
            .unwrap_or_default();
        if req.method() == axum::http::Method::POST {
            // A form, or a body of no stated type (some clients send none).
            let form = req
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_none_or(|t| {
                    t.split(';').next().is_some_and(|m| {
                        m.trim()
                            .eq_ignore_ascii_case("application/x-www-form-urlencoded")
                    })
                });
            let body = axum::body::to_bytes(req.into_body(), FORM_LIMIT)
                .await
                .map_err(|e| crate::http::api::body_error(&e, FORM_LIMIT))?;
            if form {
                params.extend(url::form_urlencoded::parse(&body).into_owned());
            }
        }
        Ok(Params(params))
    }
}
pub(in crate::http) type Client = Option<Extension<ConnectInfo<SocketAddr>>>;

fn peer(client: &Client) -> Option<SocketAddr> {
    client.as_ref().map(|Extension(ConnectInfo(p))| *p)
}

/// Logs `user` in (401 for a wrong login).
async fn login(
    s: &AppState,
    user: Option<&String>,
    pass: Option<&String>,
    client: &Client,
) -> Result<Arc<Account>, AccountError> {
    let (Some(user), Some(pass)) = (user, pass) else {
        return Err(AccountError::BadLogin);
    };
    let account = s
        .accounts
        .login(user, pass, peer(client).map(|p| p.ip()))
        .await?;
    crate::http::error::answering_a_viewer();
    Ok(account)
}

/// The listed lineup channels `a` sees, by number.
fn visible<'l>(lineup: &'l Lineup, a: &Account) -> Vec<&'l LineupChannel> {
    lineup.channels.iter().filter(|c| a.sees(c)).collect()
}

/// The indices of the listed channels `a` sees that `keep` keeps: what a streamed
/// answer holds on to while it is written.
fn visible_at(lineup: &Lineup, a: &Account, keep: impl Fn(&LineupChannel) -> bool) -> Vec<usize> {
    lineup
        .channels
        .iter()
        .enumerate()
        .filter(|(_, c)| a.sees(c) && keep(c))
        .map(|(i, _)| i)
        .collect()
}

/// A stable Xtream category id for a lineup group: derived from the group's name
/// (FNV-1a, case-insensitive), so it never changes across restarts, reloads and
/// instances without being stored, and a group that comes back gets its old id.
pub(crate) fn category_id(group: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in group.to_lowercase().bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    // Positive in the 31-bit range players parse ids into; never 0.
    (h & 0x7fff_ffff).max(1)
}

/// A path segment as players write it into URLs (credentials may hold any character).
fn segment(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct LoginParams {
    /// The viewer account's name.
    username: String,
    /// Its password.
    password: String,
    /// `m3u_plus` (default) or `m3u`.
    r#type: Option<String>,
    /// Stream URLs as `ts` (default) or `m3u8` (`hls` is taken for `m3u8`).
    output: Option<String>,
}

/// The account's M3U Plus: each channel it sees, stream URLs in the Xtream form
/// `/live/U/P/{stream_id}.ts` (or `.m3u8`), the guide at its `xmltv.php`.
#[utoipa::path(
    get,
    path = "/get.php",
    tag = "xtream-output",
    params(LoginParams),
    responses(
        (status = 200, description = "M3U Plus", body = String, content_type = "audio/x-mpegurl"),
        (status = 400, description = "Unknown `type` or `output`", body = ErrorBody),
        (status = 401, description = "Wrong user name or password", body = ErrorBody),
        (status = 403, description = "The account is disabled or expired", body = ErrorBody)
    )
)]
async fn get_php(
    State(s): State<AppState>,
    client: Client,
    headers: HeaderMap,
    Params(q): Params,
) -> Result<Response, AppError> {
    let account = login(&s, q.get("username"), q.get("password"), &client).await?;
    account.usable(accounts::now())?;
    match q.get("type").map(String::as_str) {
        None | Some("m3u_plus" | "m3u") => {}
        Some(other) => {
            return Err(AppError::BadRequest(format!(
                "type `{}`: only m3u_plus (or m3u) is served",
                other.escape_debug()
            )))
        }
    }
    let ext = match q.get("output").map(String::as_str) {
        None | Some("" | "ts" | "mpegts") => "ts",
        Some("m3u8" | "hls") => "m3u8",
        Some(other) => {
            return Err(AppError::BadRequest(format!(
                "output `{}`: use ts or m3u8",
                other.escape_debug()
            )))
        }
    };
    let lineup = crate::http::logos::lineup(&s, &headers).await?;
    let base = base_url(&s.config, &headers);
    let (u, p) = (
        segment(&account.name),
        q.get("password").map_or_else(String::new, |p| segment(p)),
    );
    let chosen = visible_at(&lineup, &account, |_| true);
    let viewer = account.clone();
    let guide = format!("{base}/xmltv.php?username={u}&password={p}");
    let body = super::playlist::entries_body(lineup, chosen, &guide, move |c| {
        let url = format!("{base}/live/{u}/{p}/{}.{ext}", c.number);
        let days = viewer.catchup_days(c);
        let archive = match days {
            0 => String::new(),
            _ => format!(
                "{}&username={u}&password={p}",
                super::timeshift::template(&base, &c.id)
            ),
        };
        (url, archive, days)
    });
    Ok((
        [
            (header::CONTENT_TYPE, super::playlist::M3U_CONTENT_TYPE),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response())
}

/// The account's XMLTV guide: `/epg.xml` with only the channels it sees.
#[utoipa::path(
    get,
    path = "/xmltv.php",
    tag = "xtream-output",
    params(
        ("username" = String, Query, description = "The viewer account's name"),
        ("password" = String, Query, description = "Its password")
    ),
    responses(
        (status = 200, description = "XMLTV", body = String, content_type = "application/xml"),
        (status = 401, description = "Wrong user name or password", body = ErrorBody),
        (status = 403, description = "The account is disabled or expired", body = ErrorBody),
        (status = 500, description = "The guide could not be built", body = ErrorBody)
    )
)]
async fn xmltv_php(
    State(s): State<AppState>,
    client: Client,
    headers: HeaderMap,
    Params(q): Params,
) -> Result<Response, AppError> {
    let account = login(&s, q.get("username"), q.get("password"), &client).await?;
    account.usable(accounts::now())?;
    guide_negotiated(&s, Some(&account), &headers).await
}

/// `guide_for`, gzipped (`Content-Encoding: gzip`) when the client accepts it: a big
/// guide is a tenth of the bytes (TiviMate's and most players' HTTP stacks ask for
/// gzip and unpack it themselves). The gzipped form is made once per guide.
pub(crate) async fn guide_negotiated(
    s: &AppState,
    account: Option<&Account>,
    headers: &HeaderMap,
) -> Result<Response, AppError> {
    let mut resp = if accepts_gzip(headers) {
        let mut resp = guide_gz_for(s, account, headers).await?;
        if resp.status().is_success() {
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/xml; charset=utf-8"),
            );
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        resp
    } else {
        guide_for(s, account, headers).await?
    };
    resp.headers_mut()
        .insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    Ok(resp)
}

/// Whether `Accept-Encoding` takes gzip: `gzip` or `x-gzip` without `q=0`, or `*`
/// without `q=0` when gzip is not refused by name (`gzip;q=0, *`).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    let items: Vec<(String, bool)> = headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|item| {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (coding, !refused)
        })
        .collect();
    match items.iter().find(|(c, _)| c == "gzip" || c == "x-gzip") {
        Some((_, ok)) => *ok,
        None => items.iter().any(|(c, ok)| c == "*" && *ok),
    }
}

/// The merged guide as `account` may see it (all of it for `None`).
pub(super) async fn guide_for(
    s: &AppState,
    account: Option<&Account>,
    headers: &HeaderMap,
) -> Result<Response, AppError> {
    guide_form(s, account, headers, false).await
}

/// The merged guide as `account` may see it (all of it for `None`), gzipped.
pub(super) async fn guide_gz_for(
    s: &AppState,
    account: Option<&Account>,
    headers: &HeaderMap,
) -> Result<Response, AppError> {
    guide_form(s, account, headers, true).await
}

/// The merged guide as `account` may see it, as XML or (`gzip`) gzipped: an account
/// limited to some groups or services gets its channels' part, made once per set of
/// channels; a client whose `If-None-Match` names this form gets a 304 before any is
/// made.
async fn guide_form(
    s: &AppState,
    account: Option<&Account>,
    headers: &HeaderMap,
    gzip: bool,
) -> Result<Response, AppError> {
    use std::io::Write;
    let guide = s.guides.current().await?;
    let ids = match account.filter(|a| !a.groups.is_empty() || !a.services.is_empty()) {
        Some(a) => Some(guide_ids(s, a).await?),
        None => None,
    };
    let kind = if gzip { "gz" } else { "xml" };
    let form = match &ids {
        Some(ids) => format!("{kind} of {}", fingerprint(ids)),
        None => kind.to_string(),
    };
    // Before any form is made: a client with it already gets none.
    if let Some(not_modified) = unchanged(s, headers, &guide, &form) {
        return Ok(not_modified);
    }
    let body = match ids {
        Some(ids) => {
            let full = guide.xml.clone();
            guide
                .derived(form.clone(), move || {
                    let xml = filter_guide(&full, &ids);
                    if !gzip {
                        return xml.into();
                    }
                    let mut enc =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                    // Writing to memory cannot fail.
                    let _ = enc.write_all(&xml);
                    enc.finish().unwrap_or_default().into()
                })
                .await
                .map_err(AppError::Internal)?
        }
        None if gzip => guide.gz.clone(),
        None => guide.xml.clone(),
    };
    let body = crate::http::logos::guide(s, headers, &guide, &form, body, gzip).await?;
    let content_type = if gzip {
        "application/gzip"
    } else {
        "application/xml; charset=utf-8"
    };
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::ETAG, guide_tag(s, headers, &guide, &form)),
        ],
        body,
    )
        .into_response())
}

/// The `ETag` of form `form` of `guide` as this request gets it: weak (a client
/// compares it only to ask whether the guide changed), from the guide's content
/// hash, the form (the account's channels, gzip or not) and, where icons point at
/// freesky, the address they point at.
fn guide_tag(
    s: &AppState,
    headers: &HeaderMap,
    guide: &crate::guide::Rendered,
    form: &str,
) -> HeaderValue {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    form.hash(&mut h);
    if s.logos.mode() != crate::config::LogoMode::Direct {
        base_url(&s.config, headers).hash(&mut h);
    }
    HeaderValue::from_str(&format!("W/\"{:016x}{:016x}\"", guide.tag, h.finish()))
        .expect("hex is a header value")
}

/// A 304 (with the `ETag`) when the request's `If-None-Match` names form `form` of
/// `guide` as it would be sent now, or is `*`.
fn unchanged(
    s: &AppState,
    headers: &HeaderMap,
    guide: &crate::guide::Rendered,
    form: &str,
) -> Option<Response> {
    let asked = headers.get(header::IF_NONE_MATCH)?.to_str().ok()?;
    let tag = guide_tag(s, headers, guide, form);
    let ours = tag.to_str().ok()?.trim_start_matches("W/");
    let matched = asked
        .split(',')
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == "*" || t == ours);
    matched.then(|| (axum::http::StatusCode::NOT_MODIFIED, [(header::ETAG, tag)]).into_response())
}

/// A name for a set of guide ids, the same for the same set in any order: which
/// filtered form of the guide a request needs. Order-free: the sum and the xor of the
/// ids' (fixed-key) hashes, with the count: 128 bits and more.
fn fingerprint(ids: &HashSet<String>) -> String {
    use std::hash::{Hash, Hasher};
    let (mut sum, mut xor) = (0u64, 0u64);
    for id in ids {
        let mut h = std::hash::DefaultHasher::new();
        id.hash(&mut h);
        let v = h.finish();
        sum = sum.wrapping_add(v);
        xor ^= v.rotate_left(17);
    }
    format!("{sum:016x}{xor:016x}-{}", ids.len())
}

/// The guide ids of the channels `a` sees, XML-escaped as the guide writes them.
async fn guide_ids(s: &AppState, a: &Account) -> Result<HashSet<String>, AppError> {
    let lineup = s.registry.lineup().await?;
    Ok(visible(&lineup, a)
        .iter()
        .map(|c| quick_xml::escape::escape(c.guide_id.as_str()).into_owned())
        .collect())
}

/// `xml` (as `xmltv::render` writes it: each `<channel>` and `<programme>` element
/// starts and ends on a line of its own, two spaces in; their content is escaped, so
/// no content line can look like one) without the channels and programmes whose
/// (escaped) id is not in `ids`.
fn filter_guide(xml: &[u8], ids: &HashSet<String>) -> Vec<u8> {
    let mut out = Vec::with_capacity(xml.len() / 2);
    let mut keep = true;
    let text = String::from_utf8_lossy(xml);
    for line in text.split_inclusive('\n') {
        if let Some(rest) = line.strip_prefix("  <channel id=\"") {
            keep = rest.split('"').next().is_some_and(|id| ids.contains(id));
        } else if line.starts_with("  <programme ") {
            keep = line
                .split(" channel=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .is_some_and(|id| ids.contains(id));
        } else if !line.starts_with("    ")
            && !line.starts_with("  </channel>")
            && !line.starts_with("  </programme>")
        {
            keep = true;
        }
        if keep {
            out.extend_from_slice(line.as_bytes());
        }
    }
    out
}

/// A channel as Xtream players open it: `{stream_id}.ts` is continuous MPEG-TS, `.m3u8`
/// HLS (its playlist links carry the account, so its polls keep counting).
#[utoipa::path(
    get,
    path = "/live/{user}/{pass}/{file}",
    tag = "xtream-output",
    params(
        ("user" = String, Path, description = "The viewer account's name"),
        ("pass" = String, Path, description = "Its password"),
        ("file" = String, Path, description = "`{stream_id}.ts` or `{stream_id}.m3u8`")
    ),
    responses(
        (status = 200, description = "MPEG-TS, or the rewritten HLS playlist", content(
            (Vec<u8> = "video/mp2t"),
            (String = "application/vnd.apple.mpegurl")
        )),
        (status = 400, description = "The stream id is not a number, or not .ts/.m3u8", body = ErrorBody),
        (status = 401, description = "Wrong user name or password", body = ErrorBody),
        (status = 403, description = "The account is disabled, expired, or at its connection limit", body = ErrorBody),
        (status = 404, description = "No such channel among those the account sees", body = ErrorBody),
        (status = 502, description = "Every source failed", body = ErrorBody)
    )
)]
async fn live(
    State(s): State<AppState>,
    Path((user, pass, file)): Path<(String, String, String)>,
    client: Client,
    method: axum::http::Method,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    // The login first: a wrong one is a 401 whatever the file.
    let account = login(&s, Some(&user), Some(&pass), &client).await?;
    // No extension is the stream (`ts`), as panels take it; either case.
    let (id, ext) = match file.rsplit_once('.') {
        Some((id, e)) => (id, e.to_ascii_lowercase()),
        None => (file.as_str(), "ts".to_string()),
    };
    let (id, ext) = Some((id, ext.as_str()))
        .filter(|(_, e)| matches!(*e, "ts" | "m3u8"))
        .ok_or_else(|| {
            AppError::BadRequest(format!(
                "`{}`: live streams are /live/USER/PASS/{{stream_id}}.ts or .m3u8",
                file.escape_debug()
            ))
        })?;
    let number = stream_id(id)?;
    account_stream(
        &s,
        &account,
        &format!("{}.{ext}", slug_of(&s, number, id).await?),
        None,
        Some(id),
        Asking {
            client: peer(&client),
            headers: &headers,
            head: method == axum::http::Method::HEAD,
        },
    )
    .await
}

/// A movie as Xtream players open it: `{vod_id}.{ext}`, `Range` passed through so
/// players seek. Counts one connection of the account while it plays.
#[utoipa::path(
    get,
    path = "/movie/{user}/{pass}/{file}",
    tag = "xtream-output",
    params(
        ("user" = String, Path, description = "The viewer account's name"),
        ("pass" = String, Path, description = "Its password"),
        ("file" = String, Path, description = "`{vod_id}.{ext}`")
    ),
    responses(
        (status = 200, description = "The media", body = Vec<u8>, content_type = "video/mp4"),
        (status = 206, description = "The asked range", body = Vec<u8>, content_type = "video/mp4"),
        (status = 401, description = "Wrong user name or password", body = ErrorBody),
        (status = 403, description = "The account is disabled, expired, or at its connection limit", body = ErrorBody),
        (status = 404, description = "No such movie among those the account sees", body = ErrorBody),
        (status = 502, description = "Every source failed", body = ErrorBody)
    )
)]
async fn xtream_movie(
    State(s): State<AppState>,
    Path((user, pass, file)): Path<(String, String, String)>,
    client: Client,
    method: axum::http::Method,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let account = login(&s, Some(&user), Some(&pass), &client).await?;
    title_media(
        &s,
        &account,
        crate::vod::VodKind::Movie,
        &file,
        &client,
        &method,
        &headers,
    )
    .await
}

/// An episode as Xtream players open it: `{episode_id}.{ext}`, as `/movie/...`.
#[utoipa::path(
    get,
    path = "/series/{user}/{pass}/{file}",
    tag = "xtream-output",
    params(
        ("user" = String, Path, description = "The viewer account's name"),
        ("pass" = String, Path, description = "Its password"),
        ("file" = String, Path, description = "`{episode_id}.{ext}`")
    ),
    responses(
        (status = 200, description = "The media", body = Vec<u8>, content_type = "video/mp4"),
        (status = 206, description = "The asked range", body = Vec<u8>, content_type = "video/mp4"),
        (status = 401, description = "Wrong user name or password", body = ErrorBody),
        (status = 403, description = "The account is disabled, expired, or at its connection limit", body = ErrorBody),
        (status = 404, description = "No such episode among those the account sees", body = ErrorBody),
        (status = 502, description = "Every source failed", body = ErrorBody)
    )
)]
async fn xtream_episode(
    State(s): State<AppState>,
    Path((user, pass, file)): Path<(String, String, String)>,
    client: Client,
    method: axum::http::Method,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let account = login(&s, Some(&user), Some(&pass), &client).await?;
    title_media(
        &s,
        &account,
        crate::vod::VodKind::Series,
        &file,
        &client,
        &method,
        &headers,
    )
    .await
}

/// Plays movie or episode `file` (`{id}.{ext}`) for `account`, counting a connection
/// (also `/api/movie/`, `/api/episode/` with `require_account`).
pub(in crate::http) async fn title_media(
    s: &AppState,
    account: &Account,
    kind: crate::vod::VodKind,
    file: &str,
    client: &Client,
    method: &axum::http::Method,
    headers: &HeaderMap,
) -> Result<Response, AppError> {
    account.usable(accounts::now())?;
    let id = file.split_once('.').map_or(file, |(id, _)| id);
    let id: u32 = id.parse().map_err(|_| {
        // What the path names: a movie, or one episode of a series.
        let what = match kind {
            crate::vod::VodKind::Movie => "movie",
            crate::vod::VodKind::Series => "episode",
        };
        AppError::NotFound(format!("unknown {what} `{}`", file.escape_debug()))
    })?;
    let sources = super::vod::media_sources(s, kind, id, Some(account)).await?;
    let what = format!("{}:{id}", kind.as_str());
    let conn = s
        .accounts
        .connect(account, &what, peer(client).map(|p| p.ip()), false)?;
    let label = super::vod::title_label(kind, id);
    let resp = super::media::play(s, &label, sources, method, headers).await;
    if is_playlist(&resp) {
        // An HLS title: as a catch-up, every link of its playlists carries the
        // account (its links name the title), so each fetch keeps it counted, and a
        // playlist link plays under `require_account`.
        drop(conn);
        s.accounts
            .connect(account, &label, peer(client).map(|p| p.ip()), true)?;
        return tag_links_of(s, account, &label, resp, Tagged::Every).await;
    }
    Ok(match conn.into_guard() {
        Some(guard) => held(guard, resp),
        None => resp,
    })
}

/// The short form some players use: `/U/P/{stream_id}` is the channel's MPEG-TS.
#[utoipa::path(
    get,
    path = "/{user}/{pass}/{file}",
    tag = "xtream-output",
    params(
        ("user" = String, Path, description = "The viewer account's name"),
        ("pass" = String, Path, description = "Its password"),
        ("file" = String, Path, description = "`{stream_id}` (or `{stream_id}.ts`)")
    ),
    responses(
        (status = 200, description = "MPEG-TS", body = Vec<u8>, content_type = "video/mp2t"),
        (status = 401, description = "Wrong user name or password", body = ErrorBody),
        (status = 403, description = "The account is disabled, expired, or at its connection limit", body = ErrorBody),
        (status = 404, description = "No such channel among those the account sees, or `file` is not a number (no such endpoint)", body = ErrorBody)
    )
)]
async fn plain(
    State(s): State<AppState>,
    Path((user, pass, file)): Path<(String, String, String)>,
    uri: axum::http::Uri,
    client: Client,
    method: axum::http::Method,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    // Any three-part path lands here: only `{digits}` (or `.ts`) is this route; the
    // rest answers what an unknown path always does.
    let Ok(number) = stream_id(file.strip_suffix(".ts").unwrap_or(&file)) else {
        return Err(match super::stream::unrouted(uri.path()) {
            Some(refused) => refused,
            None => AppError::NotFound(
                "no such endpoint (the short stream form /USER/PASS/{stream_id} takes a channel \
                 number)"
                    .into(),
            ),
        });
    };
    let account = login(&s, Some(&user), Some(&pass), &client).await?;
    let asked = file.strip_suffix(".ts").unwrap_or(&file);
    account_stream(
        &s,
        &account,
        &format!("{}.ts", slug_of(&s, number, asked).await?),
        None,
        Some(asked),
        Asking {
            client: peer(&client),
            headers: &headers,
            head: method == axum::http::Method::HEAD,
        },
    )
    .await
}

/// With `server.require_account`, the account the tuner serves (`[hdhomerun]
/// account`); the tuner is off (404) when none is named or it is not usable.
/// `None`: accounts are not required.
pub(crate) fn tuner_account(s: &AppState) -> Result<Option<Arc<Account>>, AppError> {
    if !s.config.server.require_account {
        return Ok(None);
    }
    let off = |why: String| AppError::NotFound(format!("HDHomeRun emulation is off: {why}"));
    let name = s.config.hdhomerun.account.as_deref().ok_or_else(|| {
        off("server.require_account is on and [hdhomerun] account names no account".into())
    })?;
    let account = s
        .accounts
        .get(name)
        .ok_or_else(|| off(format!("[hdhomerun] account `{name}` does not exist")))?;
    account
        .usable(accounts::now())
        .map_err(|e| off(e.to_string()))?;
    Ok(Some(account))
}

/// A `stream_id` (a lineup channel number); anything else is a 400.
/// The id of the channel numbered `number` (an Xtream `stream_id`): a number, never
/// read as a slug, so that a channel named "5" does not play for channel 5. 404 as for
/// a channel the account does not see.
/// `asked`: the number as the request wrote it, which the 404 names (as a channel the
/// account does not see is named: `007` either way).
pub(crate) async fn slug_of(s: &AppState, number: u32, asked: &str) -> Result<String, AppError> {
    let lineup = s.registry.lineup().await?;
    lineup
        .by_number(number)
        .map(|c| c.id.to_string())
        .ok_or_else(|| AppError::NotFound(format!("unknown channel `{asked}`")))
}

fn stream_id(id: &str) -> Result<u32, AppError> {
    id.parse::<u32>()
        .ok()
        .filter(|_| id.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| {
            AppError::BadRequest(format!(
                "stream id `{}` is not a channel number",
                id.escape_debug()
            ))
        })
}

/// Who asks for a stream, and how (`account_stream`).
pub(crate) struct Asking<'a> {
    pub client: Option<SocketAddr>,
    pub headers: &'a HeaderMap,
    /// A `HEAD`: a `.ts` is answered without opening it (`stream::ts_head`).
    pub head: bool,
}

/// Channel `file` (`{id}.ts` / `{id}.m3u8`) for `account`: refused when the account
/// is disabled or expired, does not see the channel (404, as for no channel), or is
/// at its connection limit (403); a `.ts` body holds one connection while open, an
/// HLS playlist counts one per channel and player address while it is polled.
/// `routed`: the channel as the request's URL named it, which a balancer hashes
/// (`/live/U/P/7.m3u8`: "7"), when not `file`'s id; links the answer makes (a plain
/// MPEG-TS channel's segments) name it too, to reach this instance.
pub(crate) async fn account_stream(
    s: &AppState,
    account: &Account,
    file: &str,
    service: Option<String>,
    routed: Option<&str>,
    asking: Asking<'_>,
) -> Result<Response, AppError> {
    let Asking {
        client,
        headers,
        head,
    } = asking;
    account.usable(accounts::now())?;
    let (id, ts) = super::stream::split_file(file)?;
    let asked = routed.unwrap_or(id);
    let (channel, only) = visible_channel(s, account, id, asked, service.as_deref()).await?;
    if ts && head {
        // Not a connection: a probe holds none, and ends none over the limit.
        s.registry.playable(&channel.id, only.as_deref()).await?;
        return Ok(super::stream::ts_head(s, &channel.id, only.as_deref()));
    }
    let from = client.map(|c| c.ip());
    let conn = s.accounts.connect(account, &channel.id, from, !ts)?;
    let ext = if ts { "ts" } else { "m3u8" };
    // An account limited to some services plays only their sources: each of them in
    // the channel's order, pinned, the next when one fails.
    let pins: Vec<Option<String>> = match only {
        Some(o) => vec![Some(o)],
        None if account.services.is_empty() => vec![None],
        None => {
            let mut pins: Vec<Option<String>> = Vec::new();
            for src in &channel.sources {
                if account.uses(&src.service) && !pins.iter().flatten().any(|p| *p == src.service) {
                    pins.push(Some(src.service.to_string()));
                }
            }
            pins
        }
    };
    let file = format!("{}.{ext}", channel.id);
    let mut opened = Err(AppError::NotFound(format!("unknown channel `{asked}`")));
    let mut only_again = None;
    for pin in pins {
        opened = super::stream::open_stream(
            s,
            &file,
            Some(routed.unwrap_or(id)),
            pin.clone(),
            client,
            headers,
        )
        .await;
        only_again = pin;
        if opened.is_ok() {
            break;
        }
    }
    let resp = match opened {
        Ok(r) => r,
        Err(e) => {
            if matches!(conn, accounts::Conn::HlsNew) {
                s.accounts
                    .conns
                    .forget_hls(&account.name, &channel.id, from);
            }
            return Err(e);
        }
    };
    if let Some(guard) = conn.into_guard() {
        return Ok(held(guard, resp));
    }
    if resp.status().is_redirection() {
        // The channel is a direct media stream (an upstream serving MPEG-TS, not HLS):
        // the redirect's proxy link would play uncounted once the player stops polling
        // a playlist, so it is served here as the `.ts` stream it is, counted while it
        // plays.
        s.accounts
            .conns
            .forget_hls(&account.name, &channel.id, from);
        let conn = s.accounts.connect(account, &channel.id, from, false)?;
        let resp = super::stream::open_stream(
            s,
            &format!("{}.ts", channel.id),
            Some(id),
            only_again,
            client,
            headers,
        )
        .await?;
        return Ok(match conn.into_guard() {
            Some(guard) => held(guard, resp),
            None => resp,
        });
    }
    tag_playlist_links(s, account, &channel.id, resp).await
}

/// The lineup channel `id` (number, slug or `SERVICE:ID`) if account `a` sees it, with
/// the service it is pinned to; else 404, as for a channel that does not exist, naming
/// the channel as the request did (`asked`: a stream id an Xtream route turned into
/// `id`), so that the answer tells nothing of a channel the account does not see.
pub(crate) async fn visible_channel(
    s: &AppState,
    a: &Account,
    id: &str,
    asked: &str,
    service: Option<&str>,
) -> Result<(LineupChannel, Option<String>), AppError> {
    let (canonical, only) = s.registry.canonical(id, service).await?;
    let lineup = s.registry.lineup().await?;
    let visible = lineup
        .get(&canonical)
        .filter(|c| a.sees(c) && only.as_deref().is_none_or(|o| a.uses(o)));
    match visible {
        Some(c) => Ok((c.clone(), only)),
        None => Err(AppError::NotFound(format!("unknown channel `{asked}`"))),
    }
}

/// `resp` with its body holding `guard`: the connection counts until the body ends,
/// and the body ends early, at a chunk, once the account may no longer watch it
/// (`Accounts::enforce`).
pub(crate) fn held(guard: accounts::ConnGuard, resp: Response) -> Response {
    let (parts, body) = resp.into_parts();
    let body = body
        .into_data_stream()
        .take_while(move |_| std::future::ready(!guard.is_ended()));
    Response::from_parts(parts, Body::from_stream(body))
}

/// Appends `?a=<account tag>` to every `/proxy/` playlist link of an HLS answer, so
/// the player's polls of them keep its connection counted (segment links stay as they
/// are: shared by every viewer of the channel); with `require_account`, to every link
/// (each plays only with its tag then).
async fn tag_playlist_links(
    s: &AppState,
    account: &Account,
    channel: &str,
    resp: Response,
) -> Result<Response, AppError> {
    let which = if s.config.server.require_account {
        Tagged::Every
    } else {
        Tagged::Playlists
    };
    tag_links_of(s, account, channel, resp, which).await
}

/// Which `/proxy/` links of an answer carry the account.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Tagged {
    /// Nested playlists (a live player polls them; segments stay shared).
    Playlists,
    /// Every link (a catch-up playlist, read once: its segments are what is fetched).
    Every,
}

/// Whether `resp` is one of freesky's HLS playlists.
pub(super) fn is_playlist(resp: &Response) -> bool {
    resp.headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/vnd.apple.mpegurl"))
}

/// `resp` (an HLS playlist; anything else as it is) with `?a=<account tag>` after the
/// `/proxy/` links `which` names.
pub(super) async fn tag_links_of(
    s: &AppState,
    account: &Account,
    channel: &str,
    resp: Response,
    which: Tagged,
) -> Result<Response, AppError> {
    if !is_playlist(&resp) {
        return Ok(resp);
    }
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .map_err(|e| AppError::Internal(format!("reading our own playlist: {e}")))?;
    let text = String::from_utf8_lossy(&bytes);
    let tag = format!("?a={}", s.accounts.poll_token(account, channel));
    let tagged = match which {
        Tagged::Playlists => tag_links(&text, &tag),
        Tagged::Every => tag_every_link(&text, &tag),
    };
    let mut resp = Response::from_parts(parts, Body::from(tagged));
    resp.headers_mut().remove(header::CONTENT_LENGTH);
    Ok(resp)
}

/// Whether `link` is one of freesky's own stream links, which a tag may follow: a
/// `/proxy/` link, or a segment cut from a plain MPEG-TS stream (`/packaged/`).
fn ours(link: &str) -> bool {
    link.contains("/proxy/") || link.contains("/packaged/")
}

/// `text` with `tag` after every link of freesky's (`ours`): URI lines and `URI="..."`
/// values.
pub(in crate::http) fn tag_every_link(text: &str, tag: &str) -> String {
    let mut out = String::with_capacity(text.len() + 64 * tag.len());
    for line in text.split_inclusive('\n') {
        let (body, end) = match line.strip_suffix('\n') {
            Some(b) => (
                b.strip_suffix('\r').unwrap_or(b),
                &line[b.trim_end_matches('\r').len()..],
            ),
            None => (line, ""),
        };
        if body.starts_with('#') {
            let mut rest = body;
            while let Some(at) = rest.find("URI=\"") {
                let (head, tail) = rest.split_at(at + 5);
                out.push_str(head);
                let close = tail.find('"').unwrap_or(tail.len());
                out.push_str(&tail[..close]);
                if ours(&tail[..close]) {
                    out.push_str(tag);
                }
                rest = &tail[close..];
            }
            out.push_str(rest);
        } else {
            out.push_str(body);
            if ours(body) {
                out.push_str(tag);
            }
        }
        out.push_str(end);
    }
    out
}

/// `text` with `tag` after every `/proxy/...m3u8` link (in URI lines and `URI="..."`).
fn tag_links(text: &str, tag: &str) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    let mut rest = text;
    while let Some(at) = rest.find(".m3u8") {
        let (head, tail) = rest.split_at(at + ".m3u8".len());
        out.push_str(head);
        let link_start = head.rfind(['\n', '"', ' ']).map_or(0, |i| i + 1);
        let at_end = tail.is_empty() || tail.starts_with(['\n', '\r', '"']);
        if head[link_start..].contains("/proxy/") && at_end {
            out.push_str(tag);
        }
        rest = tail;
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn category_ids_are_stable_positive_and_case_blind() {
        assert_eq!(category_id("News"), category_id("news"));
        assert_ne!(category_id("News"), category_id("Sport"));
        assert!(category_id("") > 0);
        // Pinned: players store these ids; a change would scatter their favourites.
        assert_eq!(category_id("News"), 1_271_381_062);
    }

    #[test]
    fn a_catch_up_playlist_tags_every_proxy_link() {
        let body = "#EXTM3U\r\n#EXT-X-KEY:METHOD=AES-128,URI=\"http://h/proxy/c/k/key.bin\"\r\n#EXT-X-MAP:URI=\"http://other/init.mp4\"\n#EXTINF:2,\nhttp://h/proxy/c/i/s.ts\nhttp://other/x.ts\n#EXT-X-ENDLIST";
        let out = tag_every_link(body, "?a=T");
        assert_eq!(
            out,
            "#EXTM3U\r\n#EXT-X-KEY:METHOD=AES-128,URI=\"http://h/proxy/c/k/key.bin?a=T\"\r\n#EXT-X-MAP:URI=\"http://other/init.mp4\"\n#EXTINF:2,\nhttp://h/proxy/c/i/s.ts?a=T\nhttp://other/x.ts\n#EXT-X-ENDLIST"
        );
    }

    #[test]
    fn tags_only_proxy_playlist_links() {
        let body = "#EXTM3U\n#EXT-X-MEDIA:TYPE=AUDIO,URI=\"http://h/proxy/c/i/a.m3u8\"\n#EXT-X-STREAM-INF:BANDWIDTH=1\nhttp://h/proxy/c/j/v.m3u8\nhttp://h/proxy/c/k/s.ts\nhttp://other/x.m3u8\n";
        let out = tag_links(body, "?a=T");
        assert!(
            out.contains("URI=\"http://h/proxy/c/i/a.m3u8?a=T\""),
            "{out}"
        );
        assert!(out.contains("\nhttp://h/proxy/c/j/v.m3u8?a=T\n"), "{out}");
        assert!(out.contains("\nhttp://h/proxy/c/k/s.ts\n"), "{out}");
        assert!(out.contains("\nhttp://other/x.m3u8\n"), "{out}");
    }

    #[test]
    fn guide_filter_keeps_only_the_named_channels() {
        let xml = "<?xml version=\"1.0\"?>\n<tv>\n  <channel id=\"a.x\">\n    <display-name>A</display-name>\n  </channel>\n  <channel id=\"b.x\">\n    <display-name>B</display-name>\n  </channel>\n  <programme start=\"1\" channel=\"a.x\">\n    <title>TA</title>\n  </programme>\n  <programme start=\"1\" channel=\"b.x\">\n    <title>TB</title>\n  </programme>\n</tv>\n";
        let ids: HashSet<String> = ["a.x".to_string()].into();
        let out = String::from_utf8(filter_guide(xml.as_bytes(), &ids)).unwrap();
        assert!(out.contains(">A<") && out.contains(">TA<"), "{out}");
        assert!(!out.contains(">B<") && !out.contains(">TB<"), "{out}");
        assert!(out.ends_with("</tv>\n"), "{out}");
    }

    #[test]
    fn a_set_of_ids_has_one_fingerprint_in_any_order_and_another_set_another() {
        let set = |ids: &[&str]| -> HashSet<String> { ids.iter().map(|s| s.to_string()).collect() };
        let a = fingerprint(&set(&["a.x", "b.x", "c.x"]));
        assert_eq!(a, fingerprint(&set(&["c.x", "a.x", "b.x"])));
        assert_eq!(
            a,
            fingerprint(&set(&["a.x", "b.x", "c.x"])),
            "stable across calls"
        );
        assert_ne!(a, fingerprint(&set(&["a.x", "b.x"])));
        assert_ne!(a, fingerprint(&set(&["a.x", "b.x", "d.x"])));
        assert_ne!(fingerprint(&set(&[])), fingerprint(&set(&["a.x"])));
    }
}
