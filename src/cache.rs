//! One upstream fetch however many viewers: the playlist and segment caches of the
//! HLS proxy, with request coalescing.
//!
//! - Playlists (the body and the URL it was fetched from after redirects) live in moka
//!   for `cache.playlist_ttl`, cut to half the target duration of a live playlist and
//!   raised to `segment_ttl` for a finished (VOD) one. Concurrent requests for the same
//!   playlist wait for one fetch (`try_get_with`).
//! - Segments, keys and init maps stream to the client as they arrive. The first
//!   request for one starts a fetch in the background; every request for it made
//!   while that fetch runs reads the same growing buffer, so N viewers cause one
//!   upstream request and nobody waits for the whole body. A complete body is then
//!   kept in a size-weighted moka cache (`segment_cache_mb`, `segment_ttl`).
//!
//! Keys are the service, the upstream URL and the stream's headers: two channels
//! that need different headers for one URL never share an entry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use moka::future::Cache;
use tokio::sync::Notify;
use url::Url;

use crate::config::CacheConfig;
use crate::error::UpstreamError;
use crate::hls;
use crate::metrics::Lookup;
use crate::model::Headers;
use crate::services::Service;
use crate::upstream::BodyStream;

/// What the first fetch of a stream URL or nested playlist gave.
#[derive(Debug)]
pub enum Document {
    /// An HLS playlist: the URL it came from (after redirects) and its text.
    Playlist { url: Url, body: String },
    /// Not HLS but media (an MP4 or TS URL), to be passed through as bytes.
    Media { url: Url },
}

/// A segment, key or init map.
pub enum Body {
    /// Complete, from the cache.
    Cached(Segment),
    /// Arriving: the response head is known, the bytes follow.
    Streaming {
        content_type: Option<String>,
        content_length: Option<u64>,
        body: BodyStream,
    },
}

#[derive(Clone)]
pub struct Segment {
    pub content_type: Option<String>,
    pub bytes: Bytes,
}

#[derive(Clone)]
struct CachedDoc {
    doc: Arc<Document>,
    ttl: Duration,
}

/// Playlist entries expire after their own ttl.
struct DocExpiry;

impl moka::Expiry<String, CachedDoc> for DocExpiry {
    fn expire_after_create(&self, _: &String, v: &CachedDoc, _: Instant) -> Option<Duration> {
        Some(v.ttl)
    }
}

pub struct MediaCache {
    playlists: Cache<String, CachedDoc>,
    segments: Cache<String, Segment>,
    inflight: Arc<Mutex<HashMap<String, Arc<Inflight>>>>,
    playlist_ttl: Duration,
    vod_ttl: Duration,
    /// Bodies larger than this are streamed but not kept.
    max_entry: usize,
}

impl MediaCache {
    pub fn new(cfg: &CacheConfig) -> Self {
        let capacity = cfg.segment_cache_mb.saturating_mul(1 << 20);
        Self {
            playlists: Cache::builder()
                .max_capacity(10_000)
                .expire_after(DocExpiry)
                .build(),
            segments: Cache::builder()
                .max_capacity(capacity)
                .weigher(|_k, v: &Segment| u32::try_from(v.bytes.len()).unwrap_or(u32::MAX))
                .time_to_live(cfg.segment_ttl.max(Duration::from_millis(1)))
                .build(),
            inflight: Arc::default(),
            playlist_ttl: cfg.playlist_ttl,
            vod_ttl: cfg.segment_ttl.max(cfg.playlist_ttl),
            max_entry: usize::try_from(capacity / 8).unwrap_or(usize::MAX),
        }
    }

    /// The playlist (or media) at `url`, fetched once for all concurrent callers and
    /// kept briefly. A body that is not HLS is an error, never cached.
    pub async fn document(
        &self,
        service: &dyn Service,
        service_name: &str,
        url: &Url,
        headers: &Headers,
        limit: usize,
    ) -> Result<Arc<Document>, UpstreamError> {
        let key = key(service_name, url, headers);
        // For the metrics: an entry present now is a hit; else this call either runs
        // the fetch (a miss) or waits for one already running (coalesced).
        let cached = self.playlists.contains_key(&key);
        let fetched = std::sync::atomic::AtomicBool::new(false);
        let found = self
            .playlists
            .try_get_with(key, async {
                fetched.store(true, std::sync::atomic::Ordering::Relaxed);
                let doc = fetch_document(service, url, headers, limit).await?;
                let ttl = match &doc {
                    Document::Playlist { body, .. } => self.playlist_lifetime(body),
                    Document::Media { .. } => self.playlist_ttl,
                };
                Ok::<_, UpstreamError>(CachedDoc {
                    doc: Arc::new(doc),
                    ttl,
                })
            })
            .await;
        let lookup = if fetched.load(std::sync::atomic::Ordering::Relaxed) {
            Lookup::Miss
        } else if cached {
            Lookup::Hit
        } else {
            Lookup::Coalesced
        };
        crate::metrics::get().cache("playlist", lookup);
        found.map(|c| c.doc).map_err(|e| (*e).clone())
    }

    fn playlist_lifetime(&self, body: &str) -> Duration {
        if body.contains("#EXT-X-ENDLIST") {
            return self.vod_ttl;
        }
        match hls::target_duration(body) {
            Some(td) => self.playlist_ttl.min(td / 2),
            None => self.playlist_ttl,
        }
    }

    /// A segment, key or init map: from the cache, from a fetch already running, or
    /// from a new fetch that later callers will share.
    pub async fn segment(
        &self,
        service: Arc<dyn Service>,
        service_name: &str,
        url: &Url,
        headers: &Headers,
    ) -> Result<Body, UpstreamError> {
        let key = key(service_name, url, headers);
        if let Some(hit) = self.segments.get(&key).await {
            crate::metrics::get().cache("segment", Lookup::Hit);
            return Ok(Body::Cached(hit));
        }
        let flight = {
            let mut map = self
                .inflight
                .lock()
                .expect("inflight lock is never poisoned");
            match map.get(&key) {
                Some(f) => {
                    crate::metrics::get().cache("segment", Lookup::Coalesced);
                    f.clone()
                }
                None => {
                    crate::metrics::get().cache("segment", Lookup::Miss);
                    let f = Arc::new(Inflight::default());
                    map.insert(key.clone(), f.clone());
                    tokio::spawn(pump(
                        f.clone(),
                        Pump {
                            service,
                            url: url.clone(),
                            headers: headers.clone(),
                            key,
                            cache: self.segments.clone(),
                            inflight: self.inflight.clone(),
                            max_entry: self.max_entry,
                        },
                    ));
                    f
                }
            }
        };
        let head = flight.head().await?;
        Ok(Body::Streaming {
            content_type: head.content_type,
            content_length: head.content_length,
            body: reader(flight),
        })
    }

    /// True when the segment is complete in the cache.
    pub fn has_segment(&self, service: &str, url: &Url, headers: &Headers) -> bool {
        self.segments.contains_key(&key(service, url, headers))
    }

    /// Entries and weighted size of the segment cache (for tests and status).
    pub async fn segment_stats(&self) -> (u64, u64) {
        self.segments.run_pending_tasks().await;
        (self.segments.entry_count(), self.segments.weighted_size())
    }
}

/// The cache key of a resource: service, URL and the headers it is fetched with.
pub fn key(service: &str, url: &Url, headers: &Headers) -> String {
    let mut k = format!("{service}\n{url}");
    for (name, value) in headers {
        k.push('\n');
        k.push_str(name);
        k.push(':');
        k.push_str(value);
    }
    k
}

/// GETs `url` and tells a playlist from media from anything else.
async fn fetch_document(
    service: &dyn Service,
    url: &Url,
    headers: &Headers,
    limit: usize,
) -> Result<Document, UpstreamError> {
    let timeout = service.http().timeout;
    let work = async {
        let fetched = service.fetch(url, headers, None).await?;
        let ctype = fetched
            .content_type
            .clone()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if is_media_type(&ctype) {
            return Ok(Document::Media { url: fetched.url });
        }
        let final_url = fetched.url.clone();
        let body = fetched.text(limit).await?;
        if !hls::is_hls(&body) {
            return Err(UpstreamError::Invalid(format!(
                "{} answered `{}` content, not an HLS playlist",
                service.shown_url(&final_url),
                if ctype.is_empty() { "untyped" } else { &ctype }
            )));
        }
        Ok(Document::Playlist {
            url: final_url,
            body,
        })
    };
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or(Err(UpstreamError::Timeout(timeout)))
}

fn is_media_type(ctype: &str) -> bool {
    ctype.starts_with("video/")
        || ctype.starts_with("audio/")
        || ctype.starts_with("application/octet-stream")
}

// ---------------------------------------------------------------------------------------
// one shared fetch

#[derive(Clone)]
struct Head {
    content_type: Option<String>,
    content_length: Option<u64>,
}

/// A fetch in progress: its head, the chunks so far and how it ended.
#[derive(Default)]
struct Inflight {
    state: Mutex<FlightState>,
    changed: Notify,
}

#[derive(Default)]
struct FlightState {
    head: Option<Result<Head, UpstreamError>>,
    chunks: Vec<Bytes>,
    end: Option<Result<(), UpstreamError>>,
}

impl Inflight {
    fn update(&self, f: impl FnOnce(&mut FlightState)) {
        f(&mut self.state.lock().expect("flight lock is never poisoned"));
        self.changed.notify_waiters();
    }

    /// Waits until `look` finds something in the state.
    async fn wait<T>(&self, mut look: impl FnMut(&FlightState) -> Option<T>) -> T {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            // Registered before looking, so an update between the look and the await
            // still wakes us.
            notified.as_mut().enable();
            if let Some(t) = look(&self.state.lock().expect("flight lock is never poisoned")) {
                return t;
            }
            notified.await;
        }
    }

    async fn head(&self) -> Result<Head, UpstreamError> {
        self.wait(|s| s.head.clone()).await
    }
}

/// The bytes of a flight from the start, as they arrive.
fn reader(flight: Arc<Inflight>) -> BodyStream {
    Box::pin(futures::stream::unfold(
        (flight, 0usize, false),
        |(flight, next, done)| async move {
            if done {
                return None;
            }
            let item = flight
                .wait(|s| match s.chunks.get(next) {
                    Some(chunk) => Some(Some(Ok(chunk.clone()))),
                    None => match &s.end {
                        None => None,
                        Some(Ok(())) => Some(None),
                        Some(Err(e)) => Some(Some(Err(e.clone()))),
                    },
                })
                .await;
            match item {
                None => None,
                Some(Ok(chunk)) => Some((Ok(chunk), (flight, next + 1, false))),
                Some(Err(e)) => Some((Err(e), (flight, next, true))),
            }
        },
    ))
}

struct Pump {
    service: Arc<dyn Service>,
    url: Url,
    headers: Headers,
    key: String,
    cache: Cache<String, Segment>,
    inflight: Arc<Mutex<HashMap<String, Arc<Inflight>>>>,
    max_entry: usize,
}

/// Ends a flight that did not finish (its task was cancelled) so readers never wait
/// forever, and always takes it out of the in-flight map.
struct FlightGuard<'a> {
    flight: &'a Inflight,
    pump: &'a Pump,
}

impl Drop for FlightGuard<'_> {
    fn drop(&mut self) {
        self.pump
            .inflight
            .lock()
            .expect("inflight lock is never poisoned")
            .remove(&self.pump.key);
        self.flight.update(|s| {
            let stopped = || UpstreamError::Invalid("the upstream fetch was stopped".into());
            if s.head.is_none() {
                s.head = Some(Err(stopped()));
            }
            if s.end.is_none() {
                s.end = Some(Err(stopped()));
            }
        });
    }
}

/// Runs one upstream fetch into `flight`, then keeps the body if it is complete and
/// small enough.
async fn pump(flight: Arc<Inflight>, p: Pump) {
    let _guard = FlightGuard {
        flight: &flight,
        pump: &p,
    };
    let fetched = match p.service.fetch(&p.url, &p.headers, None).await {
        Ok(f) => f,
        Err(e) => {
            flight.update(|s| {
                s.head = Some(Err(e.clone()));
                s.end = Some(Err(e));
            });
            return;
        }
    };
    let content_type = fetched.content_type.clone();
    flight.update(|s| {
        s.head = Some(Ok(Head {
            content_type: content_type.clone(),
            content_length: fetched.content_length,
        }))
    });
    let mut body = fetched.body;
    let mut size = 0usize;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(chunk) => {
                size += chunk.len();
                flight.update(|s| s.chunks.push(chunk));
            }
            Err(e) => {
                flight.update(|s| s.end = Some(Err(e)));
                return;
            }
        }
    }
    if size <= p.max_entry {
        let mut whole = BytesMut::with_capacity(size);
        for c in &flight
            .state
            .lock()
            .expect("flight lock is never poisoned")
            .chunks
        {
            whole.extend_from_slice(c);
        }
        p.cache
            .insert(
                p.key.clone(),
                Segment {
                    content_type,
                    bytes: whole.freeze(),
                },
            )
            .await;
    }
    // In the cache before the flight ends: a request arriving now finds one or the other.
    flight.update(|s| s.end = Some(Ok(())));
}
