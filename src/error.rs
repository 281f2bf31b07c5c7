//! Errors, and the one place that decides the HTTP status of each.
//!
//! `UpstreamError` is what talking to an upstream can go wrong with (it knows whether it
//! was a timeout); `AppError` is what a handler returns and turns itself into the JSON
//! body every error response has: `{"error": "...", "detail": ...}`. The domain layers
//! have errors of their own (`RegistryError`, `StreamError`); the `From` impls below
//! are the only place any of them gets an HTTP status.
//!
//! Logging: each error is logged once. One that reaches a client is logged here, by
//! `into_response` (a 5xx as a warning, a 4xx at debug: the client's mistake); code
//! that returns an error never logs it too. Code that *handles* an error instead of
//! returning it (falls back to another source, keeps the last channel list, retries,
//! switches a link) logs it where it decides, saying what it did: the registry logs
//! each failed source as it moves on, so a 502's list of attempts is not logged again.

use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::json;

/// Something an upstream did (or failed to do). Messages never contain credentials:
/// URLs are shown through `redact` (no query, no userinfo, only the last path segment).
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum UpstreamError {
    #[error("timed out after {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    #[error("HTTP {status} from {url}")]
    Status { status: u16, url: String },
    #[error("request to {url} failed: {reason}")]
    Request { url: String, reason: String },
    #[error(
        "response from {url} is larger than {limit} bytes (the cap is [server] max_body_bytes)"
    )]
    TooLarge { url: String, limit: usize },
    /// A channel list over `max_body_bytes`: `seen` is its whole size when that was
    /// known before reading (`whole`), else the bytes read when reading stopped.
    #[error("{}", list_too_large(url, *limit, *seen, *whole))]
    ListTooLarge {
        url: String,
        limit: usize,
        seen: u64,
        whole: bool,
    },
    /// The upstream answered, but not with what was expected (no pattern matched, JSON
    /// pointer missing, HTML instead of a playlist...).
    #[error("{0}")]
    Invalid(String),
    #[error("channel `{0}` is not listed by this service")]
    NoChannel(String),
    /// The upstream answered 429 or 503 with `Retry-After`: the service is paused until
    /// then, and requests that would wait longer than its timeout fail with this too.
    /// No URL, so no credentials a kind carries in its paths.
    #[error("HTTP {status}, retry after {} s", ceil_secs(*.retry_after))]
    Throttled { status: u16, retry_after: Duration },
    /// A URL that upstream data supplied (a playlist line, a redirect, a scraped or
    /// JSON stream URL, a guide URL) points at a loopback, private, link-local, CGNAT
    /// or unspecified address of a host that is not the service's configured origin.
    /// Refused before any connection is opened.
    #[error("refused {url}: {reason}; upstream-supplied URLs may reach such addresses only on the hosts the service's config names, unless the service sets `allow_private = true`")]
    PrivateAddress { url: String, reason: String },
    /// A URL (from upstream data or a redirect) that points at freesky itself: a
    /// loopback address on a port it serves on. Refused before any connection: from
    /// loopback, freesky's own routes would take it for an admin.
    #[error("refused {url}: it is freesky's own address (a loopback address on the port it serves on); freesky never fetches from itself")]
    OwnAddress { url: String },
}

/// What a list over the limit says: its size, the limit, and the key that raises it.
fn list_too_large(url: &str, limit: usize, seen: u64, whole: bool) -> String {
    if whole {
        format!(
            "the list at {url} is {seen} bytes, more than the {limit} that `max_body_bytes` \
             allows: raise `max_body_bytes` in [server] above {seen}"
        )
    } else {
        format!(
            "the list at {url} is larger than the {limit} bytes that `max_body_bytes` allows \
             (reading stopped at {seen}): raise `max_body_bytes` in [server]"
        )
    }
}

/// Whole seconds, rounded up (a pause of 200 ms is "1 s", not "0 s").
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl UpstreamError {
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout(_))
    }
}

/// A URL fit for messages and logs: scheme, host, port and the last path segment only.
/// Queries (API keys, tokens) and userinfo are dropped, and so is the rest of the path,
/// where panels put credentials (`/live/{user}/{password}/1.ts`, `/{user}/{password}/7`):
/// `http://host/…/1.ts`, with `?…` when there was a query.
pub fn redact(url: &url::Url) -> String {
    /// A last segment longer than this is cut: a token-bearing file name stays unreadable.
    const MAX_LAST: usize = 64;
    if url.cannot_be_a_base() {
        return format!("{}:…", url.scheme());
    }
    let mut out = format!("{}://{}", url.scheme(), url.host_str().unwrap_or(""));
    if let Some(port) = url.port() {
        out.push_str(&format!(":{port}"));
    }
    let segments: Vec<&str> = url.path_segments().map_or(Vec::new(), Iterator::collect);
    match segments.as_slice() {
        [] => out.push('/'),
        [only] => {
            out.push('/');
            push_cut(&mut out, only, MAX_LAST);
        }
        [.., last] => {
            out.push_str("/…/");
            push_cut(&mut out, last, MAX_LAST);
        }
    }
    if url.query().is_some() {
        out.push_str("?…");
    }
    out
}

/// Any string that should be a URL, for messages and logs: `redact` when it parses;
/// otherwise only what precedes the first `:` or `/` (its scheme or first word), since
/// the rest may hold credentials.
pub fn redact_str(s: &str) -> String {
    match url::Url::parse(s.trim()) {
        Ok(u) => redact(&u),
        Err(_) => {
            let head: String = s
                .trim()
                .chars()
                .take_while(|c| !matches!(c, ':' | '/' | '?' | '@'))
                .take(32)
                .collect();
            format!("{head}…")
        }
    }
}

/// Appends at most `max` characters of `s`, then `…` when it was longer.
fn push_cut(out: &mut String, s: &str, max: usize) {
    let mut chars = s.chars();
    out.extend(chars.by_ref().take(max));
    if chars.next().is_some() {
        out.push('…');
    }
}

/// One failed try of one source, for the 502 body.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Attempt {
    pub service: String,
    pub channel_id: String,
    pub error: String,
    #[serde(skip)]
    pub timeout: bool,
    /// The service does not list the channel (a `SERVICE:ID` it does not have).
    #[serde(skip)]
    pub unlisted: bool,
}

/// Why no source played: every one failed, or (a `SERVICE:ID` its service does not
/// have) none lists the channel, which is no upstream failure.
fn all_failed(channel: &str, tried: &[Attempt]) -> String {
    match tried {
        [a] if a.unlisted => format!(
            "service `{}` lists no channel `{}`",
            a.service, a.channel_id
        ),
        [_, ..] if tried.iter().all(|a| a.unlisted) => {
            format!("no service lists a source of `{channel}`")
        }
        _ => format!("every source of `{channel}` failed"),
    }
}

/// The JSON body of every error response, as the OpenAPI document
/// describes it; `AppError::into_response` writes the same two fields.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong, in words (URLs without queries or credentials).
    pub error: String,
    /// `null`, or for a 502/504 from a stream open, every source tried: a list of
    /// `{"service", "channel_id", "error"}`.
    #[schema(value_type = Option<Vec<Attempt>>, required = true)]
    pub detail: serde_json::Value,
}

/// What a handler can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    /// No (or no usable) viewer login: 401 with a `Basic` challenge, which players
    /// given `http://user:password@host/...` wait for before sending it.
    #[error("{0}")]
    Unauthorized(String),
    /// An admin call without the admin token: 401 with a `Bearer` challenge.
    #[error("{0}")]
    AdminUnauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    /// Every tuner (or other bounded slot) is taken: 503, as a busy HDHomeRun answers.
    #[error("{0}")]
    Busy(String),
    #[error("{}", all_failed(.channel, .tried))]
    AllSourcesFailed {
        channel: String,
        tried: Vec<Attempt>,
    },
    /// The client address already holds `server.max_connections_per_client`
    /// connections: 429.
    #[error("{0}")]
    TooManyConnections(String),
    /// A request body larger than its route takes: 413.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The request line's target is longer than `server.max_uri_bytes`: 414.
    #[error("{0}")]
    UriTooLong(String),
    /// The request's headers are larger than `server.max_header_bytes`: 431.
    #[error("{0}")]
    HeadersTooLarge(String),
    /// A config file that does not load (`POST /api/config/reload`): 422, the
    /// detail lists every problem as `file:line: field: message`.
    #[error("{} has {} problem(s); the running config is unchanged", .0.file, .0.problems.len())]
    InvalidConfig(crate::config::ConfigError),
    #[error("upstream failed: {0}")]
    Upstream(#[from] UpstreamError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl AppError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) | Self::AdminUnauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::TooManyConnections(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::UriTooLong(_) => StatusCode::URI_TOO_LONG,
            Self::HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::InvalidConfig(_) => StatusCode::UNPROCESSABLE_ENTITY,
            // Every try timed out: the upstreams are slow, not broken.
            Self::AllSourcesFailed { tried, .. }
                if !tried.is_empty() && tried.iter().all(|a| a.timeout) =>
            {
                StatusCode::GATEWAY_TIMEOUT
            }
            // No source lists the channel asked for (`SERVICE:ID` with an id the
            // service does not have): an unknown channel, not an upstream failure.
            Self::AllSourcesFailed { tried, .. }
                if !tried.is_empty() && tried.iter().all(|a| a.unlisted) =>
            {
                StatusCode::NOT_FOUND
            }
            Self::AllSourcesFailed { .. } => StatusCode::BAD_GATEWAY,
            Self::Upstream(e) if e.is_timeout() => StatusCode::GATEWAY_TIMEOUT,
            Self::Upstream(_) => StatusCode::BAD_GATEWAY,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn detail(&self) -> serde_json::Value {
        match self {
            Self::AllSourcesFailed { tried, .. } => json!(tried),
            // One line per problem, exactly as `freesky check` prints them.
            Self::InvalidConfig(e) => json!(e.to_string().lines().collect::<Vec<_>>()),
            _ => serde_json::Value::Null,
        }
    }
}

/// The error of a 5xx answer, for the log line that names its request.
#[derive(Clone)]
pub struct Failed(pub String);

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        if !status.is_server_error() {
            tracing::debug!(status = status.as_u16(), error = %self, "request refused");
        }
        let body = json!({ "error": self.to_string(), "detail": self.detail() });
        let challenge = match self {
            Self::Unauthorized(_) => Some("Basic realm=\"freesky\", charset=\"UTF-8\""),
            Self::AdminUnauthorized(_) => Some("Bearer realm=\"freesky admin\""),
            _ => None,
        };
        let failed = status.is_server_error().then(|| Failed(self.to_string()));
        let mut response = (status, Json(body)).into_response();
        // Logged with the request's method and path where those are known
        // (`http::json_errors`); without `detail`: each source in it was logged as it
        // failed.
        if let Some(failed) = failed {
            response.extensions_mut().insert(failed);
        }
        if let Some(c) = challenge {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static(c),
            );
        }
        response
    }
}

impl From<crate::services::registry::RegistryError> for AppError {
    fn from(e: crate::services::registry::RegistryError) -> Self {
        use crate::services::registry::RegistryError as E;
        match e {
            E::UnknownService(_)
            | E::UnknownChannel(_)
            | E::ServiceDisabled(_)
            | E::NoSource { .. } => Self::NotFound(e.to_string()),
            E::WrongService { .. } | E::Rejected(_) => Self::BadRequest(e.to_string()),
            E::AllSourcesFailed { channel, tried } => Self::AllSourcesFailed { channel, tried },
            E::Store(why) => Self::Internal(why),
            E::StoreUnavailable(why) => Self::Busy(format!(
                "{why}; nothing was changed: try again once the database answers"
            )),
        }
    }
}

impl From<crate::streams::StreamError> for AppError {
    fn from(e: crate::streams::StreamError) -> Self {
        use crate::streams::StreamError as E;
        match e {
            E::Registry(e) => e.into(),
            E::Upstream(e) => Self::Upstream(e),
            E::BadLink(why) => Self::Forbidden(why),
            E::ServiceUnavailable(_) => Self::NotFound(e.to_string()),
            E::SessionGone => Self::Internal(e.to_string()),
        }
    }
}

impl From<crate::logos::LogoError> for AppError {
    fn from(e: crate::logos::LogoError) -> Self {
        use crate::logos::LogoError as E;
        match e {
            E::BadLink => Self::Forbidden(e.to_string()),
            E::Off | E::ServiceUnavailable(_) => Self::NotFound(e.to_string()),
            E::NotImage { .. } | E::TooLarge { .. } => {
                Self::Upstream(UpstreamError::Invalid(e.to_string()))
            }
            E::Upstream(e) => Self::Upstream(e),
        }
    }
}

impl From<crate::accounts::AccountError> for AppError {
    fn from(e: crate::accounts::AccountError) -> Self {
        use crate::accounts::AccountError as E;
        match e {
            E::BadLogin => Self::Unauthorized(e.to_string()),
            E::Disabled(_)
            | E::Expired(_)
            | E::Limit { .. }
            | E::FromConfig(_)
            | E::Removed(_)
            | E::PasswordChanged(_)
            | E::NotAllowed { .. } => Self::Forbidden(e.to_string()),
            E::Invalid(_) | E::Exists(_) => Self::BadRequest(e.to_string()),
            E::Unknown(_) => Self::NotFound(e.to_string()),
            E::Store(s) => s.into(),
        }
    }
}

impl From<crate::vod::library::VodError> for AppError {
    fn from(e: crate::vod::library::VodError) -> Self {
        use crate::vod::library::VodError;
        match e {
            VodError::NotFound(..) => Self::NotFound(e.to_string()),
            VodError::Store(e) => e.into(),
        }
    }
}

impl From<crate::store::StoreError> for AppError {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            // Unreachable (an outage, a restart): 503, as `/ready` says, not a bug.
            crate::store::StoreError::Postgres(_) => Self::Busy(format!(
                "{e}; nothing was changed: try again once the database answers"
            )),
            e => Self::Internal(e.to_string()),
        }
    }
}

impl From<crate::guide_match::GuideMatchError> for AppError {
    fn from(e: crate::guide_match::GuideMatchError) -> Self {
        use crate::guide_match::GuideMatchError as E;
        match e {
            E::NothingToConfirm(_) | E::UnknownGuideChannel { .. } | E::HeldById { .. } => {
                Self::BadRequest(e.to_string())
            }
            E::Registry(e) => e.into(),
            E::Store(e) => e.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: &str) {
        let url = url::Url::parse(input).unwrap();
        assert_eq!(redact(&url), expected, "{input}");
    }

    #[test]
    fn redact_keeps_scheme_host_and_last_segment_only() {
        check("http://host/", "http://host/");
        check("http://host:8080/list.m3u", "http://host:8080/list.m3u");
        check("http://u:pw@host/live/USER/PASS/1.ts", "http://host/…/1.ts");
        check("http://host/movie/USER/PASS/9.mp4", "http://host/…/9.mp4");
        check("http://host/series/USER/PASS/3.mkv", "http://host/…/3.mkv");
        check("http://host:8000/USER/PASS/123", "http://host:8000/…/123");
        check(
            "https://cdn/a/b.m3u8?token=SECRET#x",
            "https://cdn/…/b.m3u8?…",
        );
        check("http://[::1]:9/x/", "http://[::1]:9/…/");
        check("data:text/plain,SECRET", "data:…");
        let long = format!("http://h/{}", "a".repeat(100));
        assert_eq!(
            redact(&url::Url::parse(&long).unwrap()),
            format!("http://h/{}…", "a".repeat(64))
        );
    }

    #[test]
    fn redact_str_of_non_urls_keeps_only_the_head() {
        assert_eq!(redact_str("rtmp://u:pw@h/app/key"), "rtmp://h/…/key");
        assert_eq!(redact_str("not a url/USER/PASS"), "not a url…");
    }
}
