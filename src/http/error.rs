//! What a handler returns, and the one place that decides the HTTP status of each
//! error: `AppError` turns itself into the JSON body every error response has,
//! `{"error": "...", "detail": ...}`. The domain layers have errors of their own
//! (`UpstreamError` in `crate::error`, `RegistryError`, `StreamError`, ...); the `From`
//! impls below are the only place any of them gets an HTTP status. Kept under `http/`
//! so that no domain module imports the HTTP layer, nor it them through `crate::error`.
//!
//! Logging: each error is logged once. One that reaches a client is logged here, by
//! `into_response` (a 5xx as a warning, a 4xx at debug: the client's mistake); code
//! that returns an error never logs it too.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::json;

use crate::error::{Attempt, UpstreamError};
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
    /// `{"service", "channel_id", "error"}`; from a `/proxy/` link, its one upstream
    /// try in the same form. Always `null` for a viewer account (the tries name the
    /// services and their hosts).
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
    /// Not ready yet (the guides still being read after a start): 503 with
    /// `Retry-After: {retry_after}` seconds.
    #[error("{why}")]
    NotYet { why: String, retry_after: u32 },
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
    /// A request body that did not arrive whole in time (`server.header_timeout`): 408.
    #[error("{0}")]
    BodyTimeout(String),
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
    /// A `/proxy/` link's one upstream request failed (a link is served from its own
    /// source only). Answered as `Upstream`, with the try in `detail` as a stream open
    /// lists its sources: without it a client saw `"detail": null` there only.
    #[error("upstream failed: {error}")]
    LinkFailed {
        error: UpstreamError,
        /// The link's service.
        service: String,
        /// The lineup channel the link was handed out for, else (a title's link) its
        /// redacted upstream URL, as a title's sources are listed.
        channel_id: String,
    },
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
            Self::Busy(_) | Self::NotYet { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::TooManyConnections(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::UriTooLong(_) => StatusCode::URI_TOO_LONG,
            Self::HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
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
            // A range outside the file, passed on from the upstream: the client's.
            _ if self.unsatisfiable_range().is_some() => StatusCode::RANGE_NOT_SATISFIABLE,
            Self::Upstream(e) | Self::LinkFailed { error: e, .. } if e.is_timeout() => {
                StatusCode::GATEWAY_TIMEOUT
            }
            Self::Upstream(_) | Self::LinkFailed { .. } => StatusCode::BAD_GATEWAY,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The upstream's 416 this passes on, with its `Content-Range` when it gave one.
    fn unsatisfiable_range(&self) -> Option<Option<&str>> {
        match self {
            Self::Upstream(UpstreamError::RangeNotSatisfiable { content_range })
            | Self::LinkFailed {
                error: UpstreamError::RangeNotSatisfiable { content_range },
                ..
            } => Some(content_range.as_deref()),
            _ => None,
        }
    }

    fn detail(&self) -> serde_json::Value {
        match self {
            Self::AllSourcesFailed { tried, .. } => json!(tried),
            Self::LinkFailed {
                error,
                service,
                channel_id,
            } => json!([Attempt {
                service: service.clone(),
                channel_id: channel_id.clone(),
                error: error.to_string(),
                timeout: error.is_timeout(),
                unlisted: false,
            }]),
            // One line per problem, exactly as `freesky check` prints them.
            Self::InvalidConfig(e) => json!(e.to_string().lines().collect::<Vec<_>>()),
            _ => serde_json::Value::Null,
        }
    }
}

/// The error of a 5xx answer, for the log line that names its request.
#[derive(Clone)]
pub struct Failed(pub String);

/// What a viewer account is told in place of an upstream failure's message and
/// `detail`, which name the services and their upstream hosts (`viewer_body`).
#[derive(Clone)]
pub struct ForViewers(String);

tokio::task_local! {
    /// Whether the request being answered logged in as a viewer account (or carries
    /// an account's `?a=` tag): set by `answering_a_viewer`, read by `viewer_body`.
    static VIEWER: std::cell::Cell<bool>;
}

/// Marks the request being answered as a viewer account's: an upstream failure is
/// then told without the services and hosts behind it (the log keeps them).
pub(crate) fn answering_a_viewer() {
    let _ = VIEWER.try_with(|v| v.set(true));
}

/// Runs `answer` (a request's handling) and, when it logged a viewer account in and
/// failed upstream, tells that viewer what failed without the services, their hosts
/// or the config advice: those are the admin's (the log line, `/api/services/status`,
/// a test from the dashboard). Without accounts nothing changes.
pub(crate) async fn viewer_body(answer: impl std::future::Future<Output = Response>) -> Response {
    let (resp, viewer) = VIEWER
        .scope(std::cell::Cell::new(false), async {
            let resp = answer.await;
            (resp, VIEWER.with(std::cell::Cell::get))
        })
        .await;
    let Some(ForViewers(message)) = resp.extensions().get::<ForViewers>().cloned() else {
        return resp;
    };
    if !viewer {
        return resp;
    }
    let (mut parts, _) = resp.into_parts();
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    let body = serde_json::to_vec(&json!({ "error": message, "detail": null }))
        .expect("a JSON value always serialises");
    Response::from_parts(parts, axum::body::Body::from(body))
}

impl AppError {
    /// This upstream failure as a viewer account is told it (`viewer_body`); `None`
    /// for the errors that name nothing behind freesky.
    fn for_viewers(&self) -> Option<String> {
        let timed_out = |e: &UpstreamError| {
            if e.is_timeout() {
                "the upstream did not answer in time"
            } else {
                "the upstream failed"
            }
        };
        match self {
            Self::AllSourcesFailed { channel, tried } if tried.iter().all(|a| a.unlisted) => {
                Some(format!("channel `{channel}` is not available"))
            }
            Self::AllSourcesFailed { channel, tried } if tried.iter().all(|a| a.timeout) => {
                Some(format!("no source of `{channel}` answered in time"))
            }
            Self::AllSourcesFailed { channel, .. } => {
                Some(format!("every source of `{channel}` failed"))
            }
            Self::Upstream(e) | Self::LinkFailed { error: e, .. } => Some(timed_out(e).into()),
            _ => None,
        }
    }
}

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
        let retry_after = match self {
            Self::NotYet { retry_after, .. } => Some(axum::http::HeaderValue::from(retry_after)),
            _ => None,
        };
        let failed = status.is_server_error().then(|| Failed(self.to_string()));
        let for_viewers = self.for_viewers().map(ForViewers);
        let content_range = self
            .unsatisfiable_range()
            .flatten()
            .and_then(|v| axum::http::HeaderValue::from_str(v).ok());
        let mut response = (status, Json(body)).into_response();
        // Logged with the request's method and path where those are known
        // (`http::json_errors`); without `detail`: each source in it was logged as it
        // failed.
        if let Some(failed) = failed {
            response.extensions_mut().insert(failed);
        }
        if let Some(v) = for_viewers {
            response.extensions_mut().insert(v);
        }
        if let Some(v) = content_range {
            response
                .headers_mut()
                .insert(axum::http::header::CONTENT_RANGE, v);
        }
        if let Some(v) = retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, v);
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
            E::StoreNoAnswer(why) => Self::Busy(no_answer(&why)),
            E::StoreGone(why) => Self::Busy(format!("{why}; nothing was changed")),
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

/// A store call the database took but did not answer in time: whether it was made is
/// not known yet.
fn no_answer(why: &str) -> String {
    format!("{why}; the change may still be made once the database answers: look again then")
}

impl From<crate::store::StoreError> for AppError {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            // Unreachable (an outage, a restart): 503, as `/ready` says, not a bug.
            crate::store::StoreError::Postgres(_) => Self::Busy(format!(
                "{e}; nothing was changed: try again once the database answers"
            )),
            crate::store::StoreError::Contended(_) => {
                Self::Busy(format!("{e}; nothing was changed"))
            }
            crate::store::StoreError::NoAnswer(_) => Self::Busy(no_answer(&e.to_string())),
            crate::store::StoreError::Gone(_) => Self::Busy(format!("{e}; nothing was changed")),
            // A full disk or a file locked by another program: the state is as it was
            // and the same call works once there is room; not a bug.
            ref s if s.is_out_of_room() => Self::Busy(format!(
                "{e}; nothing was changed: free space where state_dir is, then try again"
            )),
            e => Self::Internal(e.to_string()),
        }
    }
}

impl From<crate::guide_match::GuideMatchError> for AppError {
    fn from(e: crate::guide_match::GuideMatchError) -> Self {
        use crate::guide_match::GuideMatchError as E;
        match e {
            E::NothingToConfirm(_)
            | E::UnknownGuide { .. }
            | E::UnknownGuideChannel { .. }
            | E::HeldById { .. }
            | E::TakesById { .. } => Self::BadRequest(e.to_string()),
            E::Registry(e) => e.into(),
            E::Store(e) => e.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_out_of_room_is_a_503_that_says_what_to_do() {
        let full = crate::store::StoreError::Sqlite(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            None,
        ));
        let e = AppError::from(full);
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            e.to_string().contains("free space where state_dir is"),
            "{e}"
        );
        let other = crate::store::StoreError::Sqlite(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
            None,
        ));
        assert_eq!(
            AppError::from(other).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
