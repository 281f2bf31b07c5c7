//! Talking HTTP to upstreams: one shared `reqwest` client, each request carrying the
//! service's headers, its credentials and the stream's own headers, bounded in time
//! and in size. Nothing here knows about kinds or playlists.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use url::Url;

use crate::config::{Auth, ServiceConfig};
use crate::error::{redact, UpstreamError};
use crate::model::Headers;

/// Redirects followed before giving up (a redirect loop is an upstream error).
const MAX_REDIRECTS: usize = 8;

/// The shared HTTP client. Cheap to clone.
#[derive(Clone)]
pub struct Http {
    client: reqwest::Client,
    /// Largest text body (playlist, page, JSON, channel list) accepted.
    pub max_body: usize,
}

impl Http {
    pub fn new(max_body: usize) -> Self {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .referer(false)
            .connect_timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(90))
            .user_agent(concat!("freesky/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("a reqwest client with these static settings always builds");
        Self { client, max_body }
    }
}

/// How one service talks HTTP: its headers, credentials and time bound.
#[derive(Clone)]
pub struct ServiceHttp {
    pub http: Http,
    pub service: String,
    pub timeout: Duration,
    headers: BTreeMap<String, String>,
    auth: Option<Auth>,
    /// Credentials go only to this origin (the service's own API), never to the CDNs
    /// its streams point at. `None`: to every request of the service.
    auth_origin: Option<url::Origin>,
    /// Spaces requests out to the service's `rate_limit`; shared by clones.
    pacer: Option<std::sync::Arc<Pacer>>,
}

/// A simple pacer: request slots `per / requests` apart. A request that would wait
/// longer than the service timeout fails instead of queueing forever.
pub struct Pacer {
    interval: Duration,
    next: std::sync::Mutex<tokio::time::Instant>,
}

impl Pacer {
    fn new(limit: &crate::config::RateLimit) -> Self {
        Self {
            interval: limit.per / limit.requests.max(1),
            next: std::sync::Mutex::new(tokio::time::Instant::now()),
        }
    }

    /// Waits for this request's slot, or refuses when it is further away than `bound`.
    async fn wait(&self, bound: Duration) -> Result<(), UpstreamError> {
        let slot = {
            let mut next = self
                .next
                .lock()
                .expect("pacer lock is never poisoned: no panics while held");
            let now = tokio::time::Instant::now();
            let slot = (*next).max(now);
            if slot - now > bound {
                return Err(UpstreamError::Invalid(format!(
                    "rate limit: the next request slot is more than {} away",
                    humantime::format_duration(bound)
                )));
            }
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(slot).await;
        Ok(())
    }
}

/// A response whose head has arrived; the body is read on demand.
pub struct Fetched {
    /// The final URL, after redirects: relative URIs resolve against it.
    pub url: Url,
    pub status: u16,
    pub content_type: Option<String>,
    pub content_length: Option<u64>,
    pub content_range: Option<String>,
    pub body: BodyStream,
}

pub type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, UpstreamError>> + Send>>;

impl Fetched {
    /// A response made in-process (the demo service).
    pub fn from_bytes(url: Url, content_type: &str, bytes: Bytes) -> Self {
        Self {
            url,
            status: 200,
            content_type: Some(content_type.to_string()),
            content_length: Some(bytes.len() as u64),
            content_range: None,
            body: Box::pin(futures::stream::once(async move { Ok(bytes) })),
        }
    }

    /// Reads the whole body, refusing more than `limit` bytes.
    pub async fn bytes(mut self, limit: usize) -> Result<Bytes, UpstreamError> {
        if self.content_length.is_some_and(|n| n > limit as u64) {
            return Err(UpstreamError::TooLarge {
                url: redact(&self.url),
                limit,
            });
        }
        let mut buf = BytesMut::new();
        while let Some(chunk) = self.body.next().await {
            let chunk = chunk?;
            if buf.len() + chunk.len() > limit {
                return Err(UpstreamError::TooLarge {
                    url: redact(&self.url),
                    limit,
                });
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    }

    /// Reads the whole body as text (lossy: upstream bytes are untrusted).
    pub async fn text(self, limit: usize) -> Result<String, UpstreamError> {
        let bytes = self.bytes(limit).await?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

impl ServiceHttp {
    pub fn new(http: Http, cfg: &ServiceConfig, auth_origin: Option<&Url>) -> Self {
        Self {
            http,
            service: cfg.name.clone(),
            timeout: cfg.timeout,
            headers: cfg.headers.clone(),
            auth: cfg.auth.clone(),
            auth_origin: auth_origin.map(Url::origin),
            pacer: cfg
                .rate_limit
                .as_ref()
                .map(|l| std::sync::Arc::new(Pacer::new(l))),
        }
    }

    /// GET `url` with the service's headers plus `extra` (which win), waiting at most
    /// the service timeout for the response head. The body stream then fails if no
    /// bytes arrive for a whole timeout (a trickling or hung upstream).
    pub async fn get(
        &self,
        url: &Url,
        extra: &Headers,
        range: Option<&str>,
    ) -> Result<Fetched, UpstreamError> {
        if let Some(p) = &self.pacer {
            p.wait(self.timeout).await?;
        }
        // Redirects are followed here rather than by reqwest, so that every hop carries
        // the channel's headers (reqwest would replace the Referer with the previous
        // URL) and credentials never follow a redirect to another origin.
        let first_origin = url.origin();
        let mut current = url.clone();
        let mut hops = 0;
        let resp = loop {
            let same_origin = current.origin() == first_origin;
            let req = self.request(&current, extra, range, same_origin);
            let resp = match tokio::time::timeout(self.timeout, req.send()).await {
                Err(_) => return Err(UpstreamError::Timeout(self.timeout)),
                Ok(Err(e)) => return Err(request_error(&current, &e)),
                Ok(Ok(r)) => r,
            };
            if !resp.status().is_redirection() {
                break resp;
            }
            let next = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|loc| current.join(loc).ok())
                .filter(|u| matches!(u.scheme(), "http" | "https"));
            let Some(next) = next else {
                return Err(UpstreamError::Request {
                    url: redact(&current),
                    reason: format!("HTTP {} without a usable Location", resp.status().as_u16()),
                });
            };
            hops += 1;
            if hops > MAX_REDIRECTS {
                return Err(UpstreamError::Request {
                    url: redact(url),
                    reason: format!("more than {MAX_REDIRECTS} redirects"),
                });
            }
            current = next;
        };
        let status = resp.status().as_u16();
        let final_url = resp.url().clone();
        if !resp.status().is_success() {
            return Err(UpstreamError::Status {
                status,
                url: redact(&final_url),
            });
        }
        let header = |name| {
            resp.headers()
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
                .map(str::to_string)
        };
        let content_type = header(reqwest::header::CONTENT_TYPE);
        let content_range = header(reqwest::header::CONTENT_RANGE);
        let content_length = resp.content_length();
        let idle = self.timeout;
        let shown = redact(&final_url);
        let body = resp
            .bytes_stream()
            .map(move |r| r.map_err(|e| request_error_str(&shown, &e)));
        let body = idle_bounded(body, idle);
        Ok(Fetched {
            url: final_url,
            status,
            content_type,
            content_length,
            content_range,
            body,
        })
    }

    /// One GET to `url` with the service headers, `extra` (which win) and, where they
    /// apply, the service credentials. `same_origin`: the URL is on the origin first
    /// asked for; otherwise credentials carried in `extra` are dropped too.
    fn request(
        &self,
        url: &Url,
        extra: &Headers,
        range: Option<&str>,
        same_origin: bool,
    ) -> reqwest::RequestBuilder {
        let mut target = url.clone();
        let mut headers = HeaderMap::new();
        for (k, v) in self.headers.iter().chain(extra.iter().map(|(k, v)| (k, v))) {
            if let (Ok(name), Ok(value)) = (
                HeaderName::try_from(k.as_str()),
                HeaderValue::try_from(v.as_str()),
            ) {
                if !same_origin && is_credential(&name) {
                    continue;
                }
                headers.insert(name, value);
            }
        }
        if let Some(r) = range {
            if let Ok(v) = HeaderValue::try_from(r) {
                headers.insert(reqwest::header::RANGE, v);
            }
        }
        let client = &self.http.client;
        let mut basic = None;
        if same_origin && self.auth_applies(url) {
            match &self.auth {
                Some(Auth::Bearer(token)) => {
                    if let Ok(mut v) = HeaderValue::try_from(format!("Bearer {}", token.expose())) {
                        v.set_sensitive(true);
                        headers.insert(reqwest::header::AUTHORIZATION, v);
                    }
                }
                Some(Auth::Basic { user, password }) => basic = Some((user, password)),
                Some(Auth::Header { name, value }) => {
                    if let (Ok(n), Ok(mut v)) = (
                        HeaderName::try_from(name.as_str()),
                        HeaderValue::try_from(value.expose()),
                    ) {
                        v.set_sensitive(true);
                        headers.insert(n, v);
                    }
                }
                Some(Auth::Query { name, value }) => {
                    target.query_pairs_mut().append_pair(name, value.expose());
                }
                None => {}
            }
        }
        let mut req = client.get(target).headers(headers);
        if let Some((user, password)) = basic {
            req = req.basic_auth(user, Some(password.expose()));
        }
        req
    }

    /// GET and read the whole body as text, all within the service timeout.
    pub async fn get_text(
        &self,
        url: &Url,
        extra: &Headers,
    ) -> Result<(Url, String), UpstreamError> {
        let limit = self.http.max_body;
        let work = async {
            let f = self.get(url, extra, None).await?;
            let final_url = f.url.clone();
            Ok((final_url, f.text(limit).await?))
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .unwrap_or(Err(UpstreamError::Timeout(self.timeout)))
    }

    fn auth_applies(&self, url: &Url) -> bool {
        self.auth_origin.as_ref().is_none_or(|o| *o == url.origin())
    }
}

/// Headers that carry credentials: never sent on to another origin.
fn is_credential(name: &HeaderName) -> bool {
    name == reqwest::header::AUTHORIZATION
        || name == reqwest::header::COOKIE
        || name == reqwest::header::PROXY_AUTHORIZATION
}

/// Ends a body stream with a timeout error when no chunk arrives for `idle`.
fn idle_bounded<S>(body: S, idle: Duration) -> BodyStream
where
    S: Stream<Item = Result<Bytes, UpstreamError>> + Send + 'static,
{
    let body = Box::pin(body);
    Box::pin(futures::stream::unfold(
        (body, false),
        move |(mut body, done)| async move {
            if done {
                return None;
            }
            match tokio::time::timeout(idle, body.next()).await {
                Ok(Some(item)) => Some((item, (body, false))),
                Ok(None) => None,
                Err(_) => Some((Err(UpstreamError::Timeout(idle)), (body, true))),
            }
        },
    ))
}

fn request_error(url: &Url, e: &reqwest::Error) -> UpstreamError {
    request_error_str(&redact(url), e)
}

fn request_error_str(url: &str, e: &reqwest::Error) -> UpstreamError {
    if e.is_timeout() {
        return UpstreamError::Timeout(Duration::ZERO);
    }
    let reason = if e.is_redirect() {
        "too many redirects".to_string()
    } else if e.is_connect() {
        "connection refused or unreachable".to_string()
    } else if e.is_body() || e.is_decode() {
        "the body was cut off".to_string()
    } else {
        // reqwest's Display names the URL (with its query); keep only the cause.
        let mut cause = String::new();
        let mut src: Option<&dyn std::error::Error> = std::error::Error::source(e);
        while let Some(s) = src {
            cause = s.to_string();
            src = s.source();
        }
        if cause.is_empty() {
            "request failed".to_string()
        } else {
            cause
        }
    };
    UpstreamError::Request {
        url: url.to_string(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RateLimit;

    #[tokio::test]
    async fn pacer_spaces_requests_and_refuses_long_waits() {
        let p = Pacer::new(&RateLimit {
            requests: 10,
            per: Duration::from_secs(1),
        });
        let start = tokio::time::Instant::now();
        for _ in 0..3 {
            p.wait(Duration::from_secs(5)).await.unwrap();
        }
        // Slots are 100 ms apart: the third starts no earlier than 200 ms in.
        assert!(start.elapsed() >= Duration::from_millis(200));
        // The next slot is 100 ms away; a 10 ms bound refuses instead of waiting.
        let err = p.wait(Duration::from_millis(10)).await.unwrap_err();
        assert!(err.to_string().contains("rate limit"), "{err}");
    }
}
