//! What can go wrong talking to an upstream (`UpstreamError`, which knows whether it
//! was a timeout), one failed try of a source (`Attempt`), and `redact`, which keeps
//! credentials out of every message. No HTTP here: `crate::http::error` gives each
//! error its status.
//!
//! Logging: each error is logged once. Code that *handles* an error instead of
//! returning it (falls back to another source, keeps the last channel list, retries,
//! switches a link) logs it where it decides, saying what it did: the registry logs
//! each failed source as it moves on, so a 502's list of attempts is not logged again.

use std::time::Duration;

use serde::Serialize;

/// Something an upstream did (or failed to do). Messages never contain credentials:
/// URLs are shown through `redact` (no query, no userinfo, only the last path segment).
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum UpstreamError {
    #[error("timed out after {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    /// A timeout where the URL is known (`url` through `redact`): the same to every
    /// check (`is_timeout`), only its message names the URL.
    #[error("{url} timed out after {}", humantime::format_duration(*after))]
    TimedOut { url: String, after: Duration },
    #[error("HTTP {status} from {url}")]
    Status { status: u16, url: String },
    /// The upstream answered 416 to a request with a `Range`: the range is outside the
    /// file, the client's mistake. `content_range` is the upstream's `Content-Range`
    /// when it has the form `bytes */{length}`, passed on so the client learns the
    /// file's length.
    #[error("HTTP 416: the asked range is outside the file")]
    RangeNotSatisfiable { content_range: Option<String> },
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
    /// A limit of freesky's own was reached before any request (the connections an
    /// Xtream account allows, all in use): not the upstream's failure, so not counted
    /// against the service's health.
    #[error("{0}")]
    Busy(String),
    /// The upstream answered 429 or 503 with `Retry-After`: the service is paused until
    /// then, and requests that would wait longer than its timeout fail with this too.
    /// No URL, so no credentials a kind carries in its paths: `host` is the paused
    /// host and port. `earlier`: the pause came from another request's answer (this
    /// one was not sent).
    #[error("{}", throttled(*status, *retry_after, host, *earlier))]
    Throttled {
        status: u16,
        retry_after: Duration,
        host: String,
        earlier: bool,
    },
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
fn throttled(status: u16, retry_after: Duration, host: &str, earlier: bool) -> String {
    let secs = ceil_secs(retry_after);
    if earlier {
        format!(
            "HTTP {status}, retry after {secs} s: {host} is paused, as it answered another request with {status} and Retry-After"
        )
    } else {
        format!("HTTP {status}, retry after {secs} s: {host} asked for the pause")
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl UpstreamError {
    /// A segment whose body ended without a byte, from `shown` (its address as shown).
    pub fn empty_segment(shown: &str) -> Self {
        Self::Invalid(format!("{shown} answered an empty segment"))
    }

    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout(_) | Self::TimedOut { .. })
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

/// A URL as the user wrote it in the config, for a message about it: as written but
/// for its userinfo and query (passwords, API keys), each shown as `…`. Unlike
/// `redact`, the path stays, and text that does not parse is kept as it is (the user
/// must find the mistake in it).
pub fn mask_secrets(s: &str) -> String {
    let mut out = s.to_string();
    if let Some(q) = out.find('?') {
        out.truncate(q + 1);
        out.push('…');
    }
    if let Some(start) = out.find("://").map(|i| i + 3) {
        let authority = out[start..].split(['/', '?']).next().unwrap_or("");
        if let Some(at) = authority.rfind('@') {
            out.replace_range(start..start + at, "…");
        }
    }
    out
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
    fn config_values_keep_their_path_but_not_their_secrets() {
        assert_eq!(
            mask_secrets("htp://bob:PW@127.0.0.1:18511/list.m3u?apikey=KEY"),
            "htp://…@127.0.0.1:18511/list.m3u?…"
        );
        assert_eq!(mask_secrets("http://host/a@b/list"), "http://host/a@b/list");
        assert_eq!(mask_secrets("not a url"), "not a url");
        assert_eq!(mask_secrets("h:1"), "h:1");
        assert_eq!(mask_secrets("file:///x?y"), "file:///x?…");
    }

    #[test]
    fn redact_str_of_non_urls_keeps_only_the_head() {
        assert_eq!(redact_str("rtmp://u:pw@h/app/key"), "rtmp://h/…/key");
        assert_eq!(redact_str("not a url/USER/PASS"), "not a url…");
    }
}
