//! Talking HTTP to upstreams: one shared `reqwest` client, each request carrying the
//! service's headers, its credentials and the stream's own headers, bounded in time
//! and in size. Nothing here knows about kinds or playlists.
//!
//! Politeness towards one upstream lives here too, shared by every clone of a
//! service's `ServiceHttp`: the `rate_limit` token bucket, the `max_concurrent` cap
//! on requests in flight, and the pause a 429/503 with `Retry-After` asks for.
//!
//! So does the guard against requests forged by upstream data. The config is trusted;
//! every URL an upstream supplies (playlist lines, redirects, scraped or JSON stream
//! URLs, guide URLs) is not. Such a URL may reach a loopback, private, link-local,
//! CGNAT or unspecified address only on a host the service's config names (its
//! `url`, `base_url`, `engine_url`, `epg_url`...) or when the service sets
//! `allow_private = true`. Every request (each redirect hop included) picks its client
//! by that rule: the unrestricted one, or one whose DNS resolver drops such addresses
//! (so the check holds after DNS, at connect time); an IP literal, which never reaches
//! a resolver, is checked before the request.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use url::Url;

use crate::config::{Auth, ServiceConfig};
use crate::error::{redact, UpstreamError};
use crate::model::Headers;

/// The ports this process serves HTTP on (`serving_on`): a loopback URL on one of them
/// is freesky itself, never an upstream. Upstream data pointing there would otherwise
/// reach freesky's own routes from loopback, which without an admin token is an admin.
static OWN_PORTS: Mutex<Vec<u16>> = Mutex::new(Vec::new());

/// Keeps `addr`'s port as freesky's own until the returned guard is dropped.
pub fn serving_on(addr: SocketAddr) -> ServingGuard {
    OWN_PORTS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(addr.port());
    ServingGuard(addr.port())
}

/// See [`serving_on`].
pub struct ServingGuard(u16);

impl Drop for ServingGuard {
    fn drop(&mut self) {
        let mut ports = OWN_PORTS.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = ports.iter().position(|&p| p == self.0) {
            ports.swap_remove(i);
        }
    }
}

/// True when `url` is a loopback (or unspecified) address, or `localhost`, on a port
/// this process serves on.
fn is_freesky_itself(url: &Url) -> bool {
    let Some(port) = url.port_or_known_default() else {
        return false;
    };
    if !OWN_PORTS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .contains(&port)
    {
        return false;
    }
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback() || ip.is_unspecified(),
        Some(url::Host::Ipv6(ip)) => {
            ip.is_loopback()
                || ip.is_unspecified()
                || ip
                    .to_ipv4_mapped()
                    .is_some_and(|v4| v4.is_loopback() || v4.is_unspecified())
        }
        Some(url::Host::Domain(d)) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            d == "localhost" || d.ends_with(".localhost")
        }
        None => false,
    }
}

/// Redirects followed before giving up (a redirect loop is an upstream error).
const MAX_REDIRECTS: usize = 8;

/// Longest pause a `Retry-After` can impose: an upstream (or a misconfigured proxy in
/// front of it) must not switch a service off for hours.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// Which addresses a client's connections may reach.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Reach {
    /// Any address: for the hosts the config names, and services with `allow_private`.
    Any,
    /// Public addresses only: its resolver drops the others (`PublicOnly`).
    Public,
}

/// The shared HTTP clients. Cheap to clone.
#[derive(Clone)]
pub struct Http {
    /// One `reqwest` client (and so one connection pool) per connect timeout and reach:
    /// reqwest sets both per client (the timeout, the DNS resolver), not per request.
    /// Services with the same bound share a pool, and a host always goes through the
    /// same client of a service, so its connections are reused.
    clients: Arc<Mutex<HashMap<(Duration, Reach), reqwest::Client>>>,
    /// Largest text body (playlist, page, JSON, channel list) accepted.
    pub max_body: usize,
}

impl Http {
    pub fn new(max_body: usize) -> Self {
        Self {
            clients: Arc::default(),
            max_body,
        }
    }

    /// The client whose connections give up after `connect_timeout` and reach `reach`.
    fn client(&self, connect_timeout: Duration, reach: Reach) -> reqwest::Client {
        let mut clients = self
            .clients
            .lock()
            .expect("client map lock is never poisoned: no panics while held");
        clients
            .entry((connect_timeout, reach))
            .or_insert_with(|| {
                let builder = reqwest::Client::builder()
                    .redirect(reqwest::redirect::Policy::none())
                    .referer(false)
                    .connect_timeout(connect_timeout)
                    .tcp_nodelay(true)
                    .pool_idle_timeout(Duration::from_secs(90))
                    .user_agent(concat!("freesky/", env!("CARGO_PKG_VERSION")));
                let builder = match reach {
                    Reach::Any => builder,
                    Reach::Public => builder.dns_resolver(PublicOnly::from_env()),
                };
                builder
                    .build()
                    .expect("a reqwest client with these static settings always builds")
            })
            .clone()
    }
}

/// How one service talks HTTP: its headers, credentials, time bounds and politeness.
/// Clones share the politeness state (bucket, slots, pause).
#[derive(Clone)]
pub struct ServiceHttp {
    pub http: Http,
    pub service: String,
    /// Bound on the response head (connect, redirects included); `get_text` bounds the
    /// whole request by it.
    pub timeout: Duration,
    /// Bound on each gap between body chunks.
    pub idle_timeout: Duration,
    /// The client with this service's connect timeout that reaches any address: for
    /// the hosts in `own_hosts`, or every request with `allow_private`.
    client_any: reqwest::Client,
    /// The same, reaching public addresses only: for every other host.
    client_public: reqwest::Client,
    /// Hosts the service's config names (lowercase): they may be private addresses.
    own_hosts: Arc<[String]>,
    /// The service's `allow_private`: every host may be a private address.
    allow_private: bool,
    headers: BTreeMap<String, String>,
    auth: Option<Auth>,
    /// Credentials go only to this origin (the service's own API), never to the CDNs
    /// its streams point at. `None`: to every request of the service.
    auth_origin: Option<url::Origin>,
    /// The service's `rate_limit`.
    bucket: Option<Arc<TokenBucket>>,
    /// `max_concurrent` permits; one is held from before the request until its body
    /// ends or is dropped. `None`: unlimited.
    slots: Option<Arc<tokio::sync::Semaphore>>,
    max_concurrent: usize,
    /// Until when each upstream host (`host:port`) asked us to stay away (429/503 with
    /// `Retry-After`): a logo host or a CDN that throttles pauses itself, not every
    /// other host of the service.
    pause: Arc<Mutex<HashMap<String, Pause>>>,
}

/// A pause asked for by the upstream.
#[derive(Clone, Copy)]
struct Pause {
    until: tokio::time::Instant,
    /// The status that asked for it, for the error of requests refused meanwhile.
    status: u16,
}

/// A token bucket (as GCRA): `requests` tokens, one back every `per / requests`, so a
/// full bucket allows a burst of `requests` and then the steady rate. A request waits
/// for its token in arrival order; one that would wait longer than the service timeout
/// fails instead of queueing forever.
pub struct TokenBucket {
    /// Time for one token to come back.
    interval: Duration,
    /// How far ahead of now `tat` may run: (`requests` - 1) intervals.
    burst: Duration,
    /// Theoretical arrival time: when the bucket would be full again if no request came.
    tat: Mutex<tokio::time::Instant>,
}

impl TokenBucket {
    fn new(limit: &crate::config::RateLimit) -> Self {
        let requests = limit.requests.max(1);
        let interval = limit.per / requests;
        Self {
            interval,
            burst: interval * (requests - 1),
            tat: Mutex::new(tokio::time::Instant::now()),
        }
    }

    /// Waits for this request's token, or refuses when it is further away than `bound`
    /// (taking no token then).
    async fn wait(&self, bound: Duration) -> Result<(), UpstreamError> {
        let slot = self.reserve(tokio::time::Instant::now(), bound)?;
        tokio::time::sleep_until(slot).await;
        Ok(())
    }

    /// Takes the next token for a request arriving at `now`: when it may go.
    fn reserve(
        &self,
        now: tokio::time::Instant,
        bound: Duration,
    ) -> Result<tokio::time::Instant, UpstreamError> {
        let mut tat = self
            .tat
            .lock()
            .expect("token bucket lock is never poisoned: no panics while held");
        let base = (*tat).max(now);
        let slot = base.checked_sub(self.burst).unwrap_or(now).max(now);
        if slot - now > bound {
            return Err(UpstreamError::Invalid(format!(
                "rate limit: the next request slot is more than {} away",
                humantime::format_duration(bound)
            )));
        }
        *tat = base + self.interval;
        Ok(slot)
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
    /// Whether the upstream takes byte ranges (`Accept-Ranges: bytes`, or it answered
    /// a range with 206).
    pub accept_ranges: bool,
    /// The response's `Set-Cookie` values (final hop only), for kinds that keep a
    /// cookie jar across requests (scrape recipes). Nothing keeps cookies globally.
    pub set_cookies: Vec<String>,
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
            accept_ranges: false,
            set_cookies: Vec::new(),
            body: Box::pin(futures::stream::once(async move { Ok(bytes) })),
        }
    }

    /// Puts `first` (a chunk read off the body to look at it) back in front of the body.
    pub fn put_back(&mut self, first: Bytes) {
        use futures::StreamExt;
        let rest = std::mem::replace(&mut self.body, Box::pin(futures::stream::empty()));
        self.body = Box::pin(futures::stream::once(async move { Ok(first) }).chain(rest));
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
        let mut own_hosts: Vec<String> = cfg
            .kind
            .configured_urls()
            .iter()
            .filter_map(|u| u.host_str().map(str::to_ascii_lowercase))
            .collect();
        // A kind's URLs mostly share one host: each named once in a refusal.
        own_hosts.sort();
        own_hosts.dedup();
        Self {
            client_any: http.client(cfg.connect_timeout, Reach::Any),
            client_public: http.client(cfg.connect_timeout, Reach::Public),
            own_hosts: own_hosts.into(),
            allow_private: cfg.allow_private,
            http,
            service: cfg.name.clone(),
            timeout: cfg.timeout,
            idle_timeout: cfg.idle_timeout,
            headers: cfg.headers.clone(),
            auth: cfg.auth.clone(),
            auth_origin: auth_origin.map(Url::origin),
            bucket: cfg
                .rate_limit
                .as_ref()
                .map(|l| Arc::new(TokenBucket::new(l))),
            slots: (cfg.max_concurrent > 0)
                .then(|| Arc::new(tokio::sync::Semaphore::new(cfg.max_concurrent))),
            max_concurrent: cfg.max_concurrent,
            pause: Arc::default(),
        }
    }

    /// The client of an extra guide (`[[guides]]`): no headers or credentials, no
    /// politeness limits, `timeout` for the response head and each body gap; the
    /// guide's own host may be a private address (the config names it), any host a
    /// redirect leads to must be public, as for a service.
    pub fn for_guide(http: Http, name: &str, url: &Url, timeout: Duration) -> Self {
        let own_hosts: Vec<String> = url
            .host_str()
            .map(str::to_ascii_lowercase)
            .into_iter()
            .collect();
        let connect = timeout.min(Duration::from_secs(10));
        Self {
            client_any: http.client(connect, Reach::Any),
            client_public: http.client(connect, Reach::Public),
            own_hosts: own_hosts.into(),
            allow_private: false,
            http,
            service: name.to_string(),
            timeout,
            idle_timeout: timeout,
            headers: BTreeMap::new(),
            auth: None,
            auth_origin: None,
            bucket: None,
            slots: None,
            max_concurrent: 0,
            pause: Arc::default(),
        }
    }

    /// GET `url` with the service's headers plus `extra` (which win). In order: wait out
    /// a pause the upstream asked for, take a `max_concurrent` slot, take a `rate_limit`
    /// token (each wait at most the service timeout, else a clear error), then wait at
    /// most the timeout for the response head. The body stream fails if no bytes arrive
    /// for `idle_timeout`, and gives the slot back when it ends or is dropped.
    pub async fn get(
        &self,
        url: &Url,
        extra: &Headers,
        range: Option<&str>,
    ) -> Result<Fetched, UpstreamError> {
        let got = self.get_uncounted(url, extra, range).await;
        if let Err(UpstreamError::PrivateAddress { .. } | UpstreamError::OwnAddress { .. }) = &got {
            crate::metrics::get().upstream_refused(&self.service);
        }
        got
    }

    async fn get_uncounted(
        &self,
        url: &Url,
        extra: &Headers,
        range: Option<&str>,
    ) -> Result<Fetched, UpstreamError> {
        self.wait_pause(url).await?;
        let permit = match &self.slots {
            None => None,
            Some(slots) => {
                match tokio::time::timeout(self.timeout, slots.clone().acquire_owned()).await {
                    Ok(Ok(p)) => Some(p),
                    _ => {
                        return Err(UpstreamError::Invalid(format!(
                        "all {} request slots of the service (max_concurrent) stayed busy for {}",
                        self.max_concurrent,
                        humantime::format_duration(self.timeout)
                    )))
                    }
                }
            }
        };
        if let Some(b) = &self.bucket {
            b.wait(self.timeout).await?;
        }
        // Redirects are followed here rather than by reqwest, so that every hop carries
        // the channel's headers (reqwest would replace the Referer with the previous
        // URL) and credentials never follow a redirect to another origin.
        let first_origin = url.origin();
        let mut current = url.clone();
        let mut hops = 0;
        let resp = loop {
            // A redirect to a paused host fails at once: waiting here would hold the
            // request's slot and rate token meanwhile.
            if hops > 0 {
                if let Some(p) = self.pause_of(&current) {
                    return Err(UpstreamError::Throttled {
                        status: p.status,
                        retry_after: p.until - tokio::time::Instant::now(),
                        host: pause_key(&current),
                        earlier: true,
                    });
                }
            }
            let same_origin = current.origin() == first_origin;
            let client = self.client_for(&current)?;
            let req = self.request(client, &current, extra, range, same_origin);
            let resp = match tokio::time::timeout(self.timeout, req.send()).await {
                Err(_) => {
                    return Err(UpstreamError::TimedOut {
                        url: redact(&current),
                        after: self.timeout,
                    })
                }
                Ok(Err(e)) => return Err(request_error(&current, &e)),
                Ok(Ok(r)) => r,
            };
            if !resp.status().is_redirection() {
                break resp;
            }
            let location = resp.headers().get(reqwest::header::LOCATION);
            let next =
                redirect_target(&current, resp.status().as_u16(), location).map_err(|reason| {
                    UpstreamError::Request {
                        url: redact(&current),
                        reason,
                    }
                })?;
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
        if matches!(status, 429 | 503) {
            if let Some(wait) = retry_after(resp.headers(), SystemTime::now()) {
                let wait = wait.min(MAX_RETRY_AFTER);
                self.pause_for(&current, status, wait);
                return Err(UpstreamError::Throttled {
                    status,
                    retry_after: wait,
                    host: pause_key(&current),
                    earlier: false,
                });
            }
        }
        if status == 416 && range.is_some() {
            // Only the form RFC 9110 gives a 416 is passed on.
            let content_range = resp
                .headers()
                .get(reqwest::header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .filter(|v| {
                    v.strip_prefix("bytes */")
                        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                })
                .map(str::to_string);
            return Err(UpstreamError::RangeNotSatisfiable { content_range });
        }
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
        let accept_ranges = status == 206
            || header(reqwest::header::ACCEPT_RANGES)
                .is_some_and(|v| v.to_ascii_lowercase().contains("bytes"));
        let set_cookies = resp
            .headers()
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect();
        let shown = redact(&final_url);
        let body = resp
            .bytes_stream()
            .map(move |r| r.map_err(|e| request_error_str(&shown, &e)));
        let body = idle_bounded(body, self.idle_timeout, permit);
        Ok(Fetched {
            url: final_url,
            status,
            content_type,
            content_length,
            content_range,
            accept_ranges,
            set_cookies,
            body,
        })
    }

    /// One GET to `url` with the service headers, `extra` (which win) and, where they
    /// apply, the service credentials. `same_origin`: the URL is on the origin first
    /// asked for; otherwise credentials carried in `extra` are dropped too.
    fn request(
        &self,
        client: &reqwest::Client,
        url: &Url,
        extra: &Headers,
        range: Option<&str>,
        same_origin: bool,
    ) -> reqwest::RequestBuilder {
        let mut target = url.clone();
        let mut headers = HeaderMap::new();
        let given = extra.iter().filter(|(k, _)| forwardable(k));
        for (k, v) in self.headers.iter().chain(given.map(|(k, v)| (k, v))) {
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
            .unwrap_or_else(|_| {
                Err(UpstreamError::TimedOut {
                    url: redact(url),
                    after: self.timeout,
                })
            })
    }

    /// The client a request to `url` goes through: the unrestricted one for the
    /// service's own hosts (or every host with `allow_private`), else the one that
    /// connects to public addresses only. An IP literal skips DNS, so a private one is
    /// refused here, before any connection.
    fn client_for(&self, url: &Url) -> Result<&reqwest::Client, UpstreamError> {
        if is_freesky_itself(url) {
            return Err(UpstreamError::OwnAddress { url: redact(url) });
        }
        let host = url.host_str().map(str::to_ascii_lowercase);
        if self.allow_private || host.is_some_and(|h| self.own_hosts.contains(&h)) {
            return Ok(&self.client_any);
        }
        if let Some((ip, kind)) = literal_ip(url).and_then(|ip| Some((ip, private_kind(ip)?))) {
            return Err(UpstreamError::PrivateAddress {
                url: redact(url),
                reason: format!(
                    "{ip} is {} {kind} address and not {}",
                    if kind.starts_with(['a', 'e', 'i', 'o', 'u']) {
                        "an"
                    } else {
                        "a"
                    },
                    self.own_hosts_text()
                ),
            });
        }
        Ok(&self.client_public)
    }

    /// "the service's own host (a, b)", for refusals.
    fn own_hosts_text(&self) -> String {
        if self.own_hosts.is_empty() {
            "a host the service's config names (it names none)".to_string()
        } else {
            format!("the service's own host ({})", self.own_hosts.join(", "))
        }
    }

    fn auth_applies(&self, url: &Url) -> bool {
        self.auth_origin.as_ref().is_none_or(|o| *o == url.origin())
    }

    /// Pauses the service's requests to `url`'s host for `wait` (never shortening a
    /// longer pause already set).
    fn pause_for(&self, url: &Url, status: u16, wait: Duration) {
        let now = tokio::time::Instant::now();
        let until = now + wait;
        let host = pause_key(url);
        let mut pauses = self
            .pause
            .lock()
            .expect("pause lock is never poisoned: no panics while held");
        pauses.retain(|_, p| p.until > now);
        let pause = pauses
            .entry(host.clone())
            .or_insert(Pause { until, status });
        if pause.until < until {
            *pause = Pause { until, status };
        }
        drop(pauses);
        tracing::warn!(
            service = %self.service,
            host = %host,
            status,
            retry_after_s = wait.as_secs_f64(),
            "upstream host asked to back off; the service's requests to it are paused"
        );
    }

    /// Waits until a pause `url`'s host asked for is over, or fails at once when it
    /// lasts longer than the service timeout.
    async fn wait_pause(&self, url: &Url) -> Result<(), UpstreamError> {
        let host = pause_key(url);
        loop {
            let pause = self
                .pause
                .lock()
                .expect("pause lock is never poisoned: no panics while held")
                .get(&host)
                .copied();
            let Some(p) = pause else { return Ok(()) };
            let now = tokio::time::Instant::now();
            if p.until <= now {
                return Ok(());
            }
            if p.until - now > self.timeout {
                return Err(UpstreamError::Throttled {
                    status: p.status,
                    retry_after: p.until - now,
                    host,
                    earlier: true,
                });
            }
            // Loop: another 429 may have extended the pause meanwhile.
            tokio::time::sleep_until(p.until).await;
        }
    }

    /// When the service may ask `url`'s host again, if that host is paused now.
    pub fn paused_until(&self, url: &Url) -> Option<tokio::time::Instant> {
        self.pause_of(url).map(|p| p.until)
    }

    /// The pause `url`'s host asked for, while it lasts.
    fn pause_of(&self, url: &Url) -> Option<Pause> {
        self.pause
            .lock()
            .expect("pause lock is never poisoned: no panics while held")
            .get(&pause_key(url))
            .copied()
            .filter(|p| p.until > tokio::time::Instant::now())
    }
}

/// What a pause is kept under: the URL's host and port (`cdn.example:443`).
fn pause_key(url: &Url) -> String {
    format!(
        "{}:{}",
        url.host_str().unwrap_or_default().to_ascii_lowercase(),
        url.port_or_known_default().unwrap_or(0)
    )
}

/// `Retry-After` as a wait from `now`: delta-seconds (`120`) or an HTTP date (`Wed, 21
/// Oct 2026 07:28:00 GMT`; one in the past is no wait). `None` when absent or unreadable.
/// For the error of an answer that should be JSON and is not: which host it came from
/// (not the path, query or login: any may carry a key) and how it starts.
pub fn not_json(url: &Url, text: &str) -> String {
    let host = url.host_str().unwrap_or_default();
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    format!(
        " (from {}://{host}{port}){}",
        url.scheme(),
        not_json_start(text)
    )
}

/// How an answer that should be JSON starts, for its error: a login or error page in
/// place of the API is then plain to see.
pub fn not_json_start(text: &str) -> String {
    let t = text.trim_start();
    if t.is_empty() {
        return ": the answer is empty".into();
    }
    let start: String = t
        .chars()
        .take(60)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let more = if t.chars().nth(60).is_some() {
        "..."
    } else {
        ""
    };
    let page = if t.starts_with('<') {
        " (an HTML or XML page, such as a login or error page, not the API)"
    } else {
        ""
    };
    format!(": it starts with `{start}{more}`{page}")
}

fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let at = SystemTime::from(at.with_timezone(&chrono::Utc));
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Whether a header an upstream gave (a list line's `|Header=`, `#EXTVLCOPT`, a
/// resolution) may be sent: not the ones that frame or route the request, which are
/// the HTTP client's (a `Content-Length: 5` on a GET desyncs a kept-alive connection,
/// a `Host` sends the service's credentials to another virtual host, an
/// `Accept-Encoding` of its own stops the client unpacking the body).
pub fn forwardable(name: &str) -> bool {
    const FRAMING: [&str; 11] = [
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "expect",
        "accept-encoding",
        "range",
    ];
    let proxy = name
        .get(..6)
        .is_some_and(|p| p.eq_ignore_ascii_case("proxy-"));
    !proxy && !FRAMING.iter().any(|f| name.eq_ignore_ascii_case(f))
}

/// Headers that carry credentials: never sent on to another origin.
fn is_credential(name: &HeaderName) -> bool {
    name == reqwest::header::AUTHORIZATION
        || name == reqwest::header::COOKIE
        || name == reqwest::header::PROXY_AUTHORIZATION
}

/// Ends a body stream with a timeout error when no chunk arrives for `idle`. `permit`
/// (a `max_concurrent` slot) is held until the body ends, fails or is dropped.
fn idle_bounded<S>(
    body: S,
    idle: Duration,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
) -> BodyStream
where
    S: Stream<Item = Result<Bytes, UpstreamError>> + Send + 'static,
{
    let body = Box::pin(body);
    Box::pin(futures::stream::unfold(
        Some((body, permit)),
        move |state| async move {
            let (mut body, permit) = state?;
            match tokio::time::timeout(idle, body.next()).await {
                Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some((body, permit)))),
                // The stream ends after its first error: release the slot now.
                Ok(Some(Err(e))) => Some((Err(e), None)),
                Ok(None) => None,
                Err(_) => Some((Err(UpstreamError::Timeout(idle)), None)),
            }
        },
    ))
}

/// Where a redirect from `current` (answered `status`) leads, or why it is not
/// followed: no Location that makes a URL, or one of another scheme than http(s)
/// (`file:`, `gopher:`...), which is refused and said so by its scheme only (the rest
/// of it is the upstream's, and may be anything).
fn redirect_target(
    current: &Url,
    status: u16,
    location: Option<&HeaderValue>,
) -> Result<Url, String> {
    let next = location
        .and_then(|v| v.to_str().ok())
        .and_then(|loc| current.join(loc).ok())
        .ok_or_else(|| format!("HTTP {status} without a usable Location"))?;
    match next.scheme() {
        "http" | "https" => Ok(next),
        // A scheme is ASCII letters, digits and `+-.`, but of any length.
        scheme => Err(format!(
            "HTTP {status} redirect to a non-HTTP URL (`{}:`) refused: only http and https \
             are followed",
            match scheme.get(..16) {
                Some(start) if scheme.len() > 16 => format!("{start}…"),
                _ => scheme.to_string(),
            }
        )),
    }
}

fn request_error(url: &Url, e: &reqwest::Error) -> UpstreamError {
    let mut src: Option<&dyn std::error::Error> = Some(e);
    while let Some(s) = src {
        if let Some(refused) = s.downcast_ref::<PrivateName>() {
            return UpstreamError::PrivateAddress {
                url: redact(url),
                reason: refused.to_string(),
            };
        }
        src = s.source();
    }
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

/// `url`'s host when it is an IP address.
fn literal_ip(url: &Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        url::Host::Domain(_) => None,
    }
}

/// What kind of non-public address `url`'s host is when that is known without DNS: an
/// IP literal (`private_kind`), or `localhost`. A request there from upstream data is
/// refused unless the host is the service's own (`ServiceHttp::client_for`).
pub fn private_host(url: &Url) -> Option<&'static str> {
    match url.host_str()? {
        h if h.eq_ignore_ascii_case("localhost")
            || h.to_ascii_lowercase().ends_with(".localhost") =>
        {
            Some("loopback")
        }
        _ => private_kind(literal_ip(url)?),
    }
}

/// What kind of non-public address `ip` is (loopback, private, link-local, CGNAT,
/// unspecified...), or `None` for a public one. IPv4 inside IPv6 (mapped, compatible,
/// NAT64 `64:ff9b::/96`) counts as the IPv4 address it carries.
pub fn private_kind(ip: IpAddr) -> Option<&'static str> {
    fn v4(ip: Ipv4Addr) -> Option<&'static str> {
        let o = ip.octets();
        if ip.is_loopback() {
            Some("loopback")
        } else if ip.is_private() {
            Some("private (RFC 1918)")
        } else if ip.is_link_local() {
            Some("link-local")
        } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
            Some("CGNAT (100.64.0.0/10)")
        } else if o[0] == 0 {
            Some("unspecified")
        } else if ip.is_broadcast() {
            Some("broadcast")
        } else {
            None
        }
    }
    match ip.to_canonical() {
        IpAddr::V4(ip) => v4(ip),
        IpAddr::V6(ip) => {
            let s = ip.segments();
            let embedded =
                || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
            if ip.is_loopback() {
                Some("loopback")
            } else if ip.is_unspecified() {
                Some("unspecified")
            } else if (s[0] & 0xfe00) == 0xfc00 {
                Some("private (fc00::/7)")
            } else if (s[0] & 0xffc0) == 0xfe80 {
                Some("link-local")
            } else if (s[0] & 0xffc0) == 0xfec0 {
                Some("site-local")
            } else if s[..6] == [0; 6] || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                v4(embedded())
            } else {
                None
            }
        }
    }
}

/// The resolver of the clients that reach public addresses only: the system's lookup,
/// then every non-public address dropped. A name with only such addresses fails with
/// `PrivateName`, so no connection is attempted.
struct PublicOnly {
    /// The hosts of the HTTP proxies the environment configures (`HTTPS_PROXY`...):
    /// reqwest resolves those names instead of the target's, and a proxy on the LAN
    /// is the operator's choice.
    proxies: Arc<[String]>,
}

impl PublicOnly {
    fn from_env() -> Self {
        let proxies: Vec<String> = ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"]
            .into_iter()
            .flat_map(|v| [v.to_string(), v.to_ascii_lowercase()])
            .filter_map(|v| std::env::var(v).ok())
            .filter_map(|p| {
                let p = if p.contains("://") {
                    p
                } else {
                    format!("http://{p}")
                };
                Some(Url::parse(&p).ok()?.host_str()?.to_ascii_lowercase())
            })
            .collect();
        Self {
            proxies: proxies.into(),
        }
    }
}

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        let proxy = self.proxies.contains(&host.to_ascii_lowercase());
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if proxy {
                return Ok(Box::new(found.into_iter()) as reqwest::dns::Addrs);
            }
            let (public, private): (Vec<_>, Vec<_>) = found
                .into_iter()
                .partition(|a| private_kind(a.ip()).is_none());
            if public.is_empty() && !private.is_empty() {
                let addrs = private.iter().map(|a| a.ip()).collect();
                return Err(Box::new(PrivateName { host, addrs }) as _);
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// A name that resolved to non-public addresses only, refused by `PublicOnly`.
#[derive(Debug)]
struct PrivateName {
    host: String,
    addrs: Vec<IpAddr>,
}

impl std::fmt::Display for PrivateName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let addrs: Vec<String> = self
            .addrs
            .iter()
            .map(|ip| format!("{ip} {}", private_kind(*ip).unwrap_or("public")))
            .collect();
        write!(
            f,
            "`{}` resolves only to non-public addresses ({})",
            self.host,
            addrs.join(", ")
        )
    }
}

impl std::error::Error for PrivateName {}

/// An HTML document's start (after whitespace and a byte order mark): a login or error
/// page where a playlist or media was expected.
pub fn looks_like_html(first: &[u8]) -> bool {
    let start = first
        .strip_prefix(b"\xEF\xBB\xBF")
        .unwrap_or(first)
        .trim_ascii_start();
    let head = &start[..start.len().min(15)];
    let lower = head.to_ascii_lowercase();
    lower.starts_with(b"<!doctype html")
        || lower.starts_with(b"<html")
        || lower.starts_with(b"<head")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RateLimit;

    #[test]
    fn html_is_told_from_media() {
        for html in [
            &b"<!DOCTYPE html><html>"[..],
            b"  \n<html lang=en>",
            b"\xEF\xBB\xBF<!doctype HTML>",
            b"<HEAD>",
        ] {
            assert!(looks_like_html(html), "{html:?}");
        }
        for media in [
            &b"\0\0\0\x20ftypisom"[..],
            b"\x47\x40\x00",
            b"\x1A\x45\xDF\xA3",
            b"",
        ] {
            assert!(!looks_like_html(media), "{media:?}");
        }
    }

    #[test]
    fn an_answer_that_is_not_json_is_shown_by_its_start() {
        let url = Url::parse("https://u:p@api.example/list?key=secret#x").unwrap();
        let why = not_json(&url, "\n  <!DOCTYPE html><html><head><title>Log in</title>");
        assert!(
            why.starts_with(" (from https://api.example): it starts with `<!DOCTYPE html>"),
            "{why}"
        );
        assert!(
            why.ends_with("(an HTML or XML page, such as a login or error page, not the API)"),
            "{why}"
        );
        assert!(!why.contains("secret") && !why.contains("u:p"), "{why}");
        assert_eq!(not_json_start("  "), ": the answer is empty");
        let long = "x".repeat(100);
        assert_eq!(
            not_json_start(&long),
            format!(": it starts with `{}...`", "x".repeat(60))
        );
    }

    #[test]
    fn private_kinds() {
        let kind = |s: &str| private_kind(s.parse().unwrap());
        for (ip, want) in [
            ("127.0.0.2", Some("loopback")),
            ("10.1.2.3", Some("private (RFC 1918)")),
            ("172.16.0.1", Some("private (RFC 1918)")),
            ("192.168.1.50", Some("private (RFC 1918)")),
            ("169.254.169.254", Some("link-local")),
            ("100.64.0.1", Some("CGNAT (100.64.0.0/10)")),
            ("100.127.255.255", Some("CGNAT (100.64.0.0/10)")),
            ("0.0.0.0", Some("unspecified")),
            ("::", Some("unspecified")),
            ("::1", Some("loopback")),
            ("fd00::1", Some("private (fc00::/7)")),
            ("fe80::1", Some("link-local")),
            ("::ffff:192.168.0.1", Some("private (RFC 1918)")),
            ("::ffff:127.0.0.1", Some("loopback")),
            ("64:ff9b::a9fe:a9fe", Some("link-local")),
            ("100.128.0.1", None),
            ("8.8.8.8", None),
            ("172.32.0.1", None),
            ("2001:4860:4860::8888", None),
            ("64:ff9b::808:808", None),
        ] {
            assert_eq!(kind(ip), want, "{ip}");
        }
    }

    #[test]
    fn token_bucket_bursts_then_paces_and_refuses_long_waits() {
        let b = TokenBucket::new(&RateLimit {
            requests: 10,
            per: Duration::from_secs(1),
        });
        let t0 = tokio::time::Instant::now() + Duration::from_secs(1);
        let bound = Duration::from_secs(5);
        let ms = |slot: tokio::time::Instant| (slot - t0).as_millis();
        // A full bucket: the burst of 10 may go at once...
        for _ in 0..10 {
            assert_eq!(ms(b.reserve(t0, bound).unwrap()), 0);
        }
        // ... then one token every 100 ms.
        let next: Vec<_> = (0..3).map(|_| ms(b.reserve(t0, bound).unwrap())).collect();
        assert_eq!(next, [100, 200, 300]);
        // The next token is 400 ms away: a 10 ms bound refuses instead of waiting...
        let err = b.reserve(t0, Duration::from_millis(10)).unwrap_err();
        assert!(err.to_string().contains("rate limit"), "{err}");
        // ... and takes no token.
        assert_eq!(ms(b.reserve(t0, bound).unwrap()), 400);
        // Tokens come back while nobody asks: after a quiet 2 s the bucket is full again.
        let later = t0 + Duration::from_secs(2);
        for _ in 0..10 {
            assert_eq!(b.reserve(later, bound).unwrap(), later);
        }
        assert_eq!(
            b.reserve(later, bound).unwrap() - later,
            Duration::from_millis(100)
        );
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480); // 2015-10-21 07:28:00 UTC
        let check = |value: &str| {
            let mut h = HeaderMap::new();
            h.insert(
                reqwest::header::RETRY_AFTER,
                HeaderValue::from_str(value).unwrap(),
            );
            retry_after(&h, now)
        };
        assert_eq!(check("30"), Some(Duration::from_secs(30)));
        assert_eq!(check(" 0 "), Some(Duration::ZERO));
        assert_eq!(
            check("Wed, 21 Oct 2015 07:28:45 GMT"),
            Some(Duration::from_secs(45))
        );
        assert_eq!(check("Wed, 21 Oct 2015 07:00:00 GMT"), Some(Duration::ZERO));
        assert_eq!(check("soon"), None);
        assert_eq!(check("-5"), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn a_redirect_is_followed_to_http_only_and_a_refusal_names_the_scheme() {
        let current = Url::parse("http://h/live/a.m3u8").unwrap();
        let go = |location: Option<&str>| {
            let value = location.map(|l| HeaderValue::from_str(l).unwrap());
            redirect_target(&current, 302, value.as_ref()).map(|u| u.to_string())
        };
        assert_eq!(go(Some("b.m3u8")).as_deref(), Ok("http://h/live/b.m3u8"));
        assert_eq!(go(Some("https://o/x")).as_deref(), Ok("https://o/x"));
        let refused = |scheme: &str| {
            format!(
                "HTTP 302 redirect to a non-HTTP URL (`{scheme}:`) refused: only http and https \
                 are followed"
            )
        };
        assert_eq!(go(Some("file:///etc/passwd")), Err(refused("file")));
        assert_eq!(go(Some("GOPHER://h:70/1x")), Err(refused("gopher")));
        let long = format!("{}:x", "s".repeat(100));
        assert_eq!(
            go(Some(&long)),
            Err(refused(&format!("{}…", "s".repeat(16))))
        );
        let unusable = Err("HTTP 302 without a usable Location".to_string());
        assert_eq!(go(None), unusable);
        assert_eq!(go(Some("http://[bad")), unusable);
    }

    #[test]
    fn throttled_rounds_up() {
        let e = UpstreamError::Throttled {
            status: 429,
            retry_after: Duration::from_millis(200),
            host: "cdn.example:443".into(),
            earlier: false,
        };
        assert_eq!(
            e.to_string(),
            "HTTP 429, retry after 1 s: cdn.example:443 asked for the pause"
        );
    }
}
