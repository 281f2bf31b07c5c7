//! One upstream fetch however many viewers: the playlist and segment caches of the
//! HLS proxy, with request coalescing.
//!
//! - Playlists (the body and the URL it was fetched from after redirects) live in moka
//!   for `cache.playlist_ttl`, cut to half the target duration of a live playlist and
//!   raised to `segment_ttl` for a finished (VOD) one, weighed by their size
//!   (`playlist_cache_mb`). Concurrent requests for the same playlist wait for one
//!   fetch (`try_get_with`). A playlist listing more than `max_playlist_uris` URIs, or
//!   fetched from a URL longer than `proxy::MAX_URL_BYTES`, is refused: every URI
//!   becomes a link that repeats that URL, so both bound what serving it costs.
//! - Segments, keys and init maps stream to the client as they arrive. The first
//!   request for one starts a fetch in the background; every request for it made
//!   while that fetch runs reads the same growing buffer, so N viewers cause one
//!   upstream request and nobody waits for the whole body. A complete body is then
//!   kept in a size-weighted moka cache (`segment_cache_mb`, `segment_ttl`).
//! - A shared fetch is bounded: it ends at `segment_timeout` whatever the upstream
//!   does, it stops (closing the upstream connection) as soon as no reader is left, and
//!   past the largest body the cache keeps it only holds the chunks its slowest reader
//!   has not read yet, pausing the upstream read while that window is full; a reader
//!   that holds the full window while another has read all of it is left behind (its
//!   answer ends), so a paused or slow viewer never holds back the others.
//!
//! Keys are the service, the upstream URL and the stream's headers: two channels
//! that need different headers for one URL never share an entry.

use std::collections::{HashMap, VecDeque};
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
use crate::upstream::{BodyStream, Fetched};

/// What the first fetch of a stream URL or nested playlist gave.
#[derive(Debug)]
pub enum Document {
    /// An HLS playlist: the URL it came from (after redirects) and its text.
    Playlist { url: Url, body: String },
    /// Not HLS but media (an MP4 or TS URL), to be passed through as bytes;
    /// `mpeg_ts` when its first bytes are MPEG-TS packets (sync bytes 188 apart).
    Media { url: Url, mpeg_ts: bool },
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

/// How long a parked media response waits for its session before it is closed.
const PARK_FOR: Duration = Duration::from_secs(5);

/// Media responses a document fetch read the first bytes of, kept unread (first bytes
/// put back) for the session that plays them next: the upstream sees one connection,
/// not a probe and then a second one (a panel that allows one refuses the second while
/// it has not noticed the first close). By cache key; each closed after `PARK_FOR`.
#[derive(Default)]
struct ParkedBodies {
    bodies: Mutex<HashMap<String, (u64, Fetched)>>,
    next: std::sync::atomic::AtomicU64,
}

pub struct MediaCache {
    parked: Arc<ParkedBodies>,
    playlists: Cache<String, CachedDoc>,
    segments: Cache<String, Segment>,
    inflight: Arc<Mutex<HashMap<String, Arc<Inflight>>>>,
    playlist_ttl: Duration,
    vod_ttl: Duration,
    /// `public, max-age=<segment_ttl>`: what segment, key and map answers carry.
    cache_control: axum::http::HeaderValue,
    /// Bodies larger than this are streamed but not kept.
    max_entry: usize,
    /// Playlists listing more URIs are refused (`cache.max_playlist_uris`).
    max_uris: usize,
    /// The whole of one segment fetch, head to last byte (`cache.segment_timeout`).
    segment_timeout: Duration,
}

/// How many bytes a shared fetch may hold unread once its body is too large to keep
/// whole (at least; the largest cacheable body when that is more): enough for readers
/// a little apart to share one upstream read.
const WINDOW: usize = 4 << 20;

/// The playlist cache: entries weigh their body and URL, up to `max_bytes` in all.
fn playlist_cache(max_bytes: u64) -> Cache<String, CachedDoc> {
    Cache::builder()
        .max_capacity(max_bytes)
        .weigher(|k: &String, v: &CachedDoc| {
            let size = k.len()
                + match &*v.doc {
                    Document::Playlist { url, body } => url.as_str().len() + body.len(),
                    Document::Media { url, .. } => url.as_str().len(),
                };
            u32::try_from(size).unwrap_or(u32::MAX)
        })
        .expire_after(DocExpiry)
        .build()
}

impl MediaCache {
    pub fn new(cfg: &CacheConfig) -> Self {
        let capacity = cfg.segment_cache_mb.saturating_mul(1 << 20);
        Self {
            parked: Arc::default(),
            playlists: playlist_cache(cfg.playlist_cache_mb.saturating_mul(1 << 20)),
            segments: Cache::builder()
                .max_capacity(capacity)
                .weigher(|_k, v: &Segment| u32::try_from(v.bytes.len()).unwrap_or(u32::MAX))
                .time_to_live(cfg.segment_ttl.max(Duration::from_millis(1)))
                .build(),
            inflight: Arc::default(),
            playlist_ttl: cfg.playlist_ttl,
            vod_ttl: cfg.segment_ttl.max(cfg.playlist_ttl),
            cache_control: axum::http::HeaderValue::try_from(format!(
                "public, max-age={}",
                cfg.segment_ttl.as_secs()
            ))
            .expect("digits are a valid header value"),
            max_entry: usize::try_from(capacity / 8).unwrap_or(usize::MAX),
            max_uris: cfg.max_playlist_uris,
            segment_timeout: cfg.segment_timeout,
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
        self.fetch_or_share(service, service_name, url, headers, limit, false)
            .await
    }

    /// `document`, keeping the media response it fetched (if it fetched one) for
    /// `take_parked` by whichever plays it next: a `.ts` session, a packager's
    /// session, or the player's fetch of the link an `.m3u8` redirected to.
    pub async fn document_to_play(
        &self,
        service: &dyn Service,
        service_name: &str,
        url: &Url,
        headers: &Headers,
        limit: usize,
    ) -> Result<Arc<Document>, UpstreamError> {
        self.fetch_or_share(service, service_name, url, headers, limit, true)
            .await
    }

    /// `document`, its media response kept when `park`.
    async fn fetch_or_share(
        &self,
        service: &dyn Service,
        service_name: &str,
        url: &Url,
        headers: &Headers,
        limit: usize,
        park: bool,
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
                let (doc, body) =
                    fetch_document(service, url, headers, limit, self.max_uris).await?;
                if let (Document::Media { url, .. }, Some(body), true) = (&doc, body, park) {
                    self.park(self::key(service_name, url, headers), body);
                }
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

    /// Keeps `body` under `key` for `PARK_FOR` (replacing one kept there).
    fn park(&self, key: String, body: Fetched) {
        let parked = self.parked.clone();
        let n = parked
            .next
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        parked
            .bodies
            .lock()
            .expect("parked lock is never poisoned")
            .insert(key.clone(), (n, body));
        tokio::spawn(async move {
            tokio::time::sleep(PARK_FOR).await;
            let mut bodies = parked.bodies.lock().expect("parked lock is never poisoned");
            if bodies.get(&key).is_some_and(|(m, _)| *m == n) {
                bodies.remove(&key);
            }
        });
    }

    /// The media response a `document_to_play` of `url` (after redirects) kept, first
    /// bytes included, if it is still there: read it instead of fetching `url` again.
    pub fn take_parked(&self, service_name: &str, url: &Url, headers: &Headers) -> Option<Fetched> {
        self.parked
            .bodies
            .lock()
            .expect("parked lock is never poisoned")
            .remove(&key(service_name, url, headers))
            .map(|(_, body)| body)
    }

    /// The most one segment fetch may take, head to last byte (`cache.segment_timeout`).
    pub fn segment_timeout(&self) -> Duration {
        self.segment_timeout
    }

    /// The `Cache-Control` of a segment, key or map answer: its links are the same for
    /// every viewer and render, so a shared cache in front may keep them `segment_ttl`.
    pub fn segment_cache_control(&self) -> axum::http::HeaderValue {
        self.cache_control.clone()
    }

    /// How long a fetched playlist is kept: a VOD playlist (`#EXT-X-PLAYLIST-TYPE:VOD`
    /// and `#EXT-X-ENDLIST`) for `vod_ttl`; any other as a live one. A live channel's
    /// playlist ends with `#EXT-X-ENDLIST` too when its encoder stops: kept long, it
    /// would answer every tune with the ended stream after the encoder is back.
    fn playlist_lifetime(&self, body: &str) -> Duration {
        if body.contains("#EXT-X-ENDLIST") && body.contains("#EXT-X-PLAYLIST-TYPE:VOD") {
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
        let mut looked_again = false;
        let share = loop {
            if let Some(hit) = self.segments.get(&key).await {
                crate::metrics::get().cache("segment", Lookup::Hit);
                return Ok(Body::Cached(hit));
            }
            match self.join_or_start(&key, &service, url, headers, !looked_again) {
                Some(share) => break share,
                None => looked_again = true,
            }
        };
        let head = share.flight.head().await?;
        Ok(Body::Streaming {
            content_type: head.content_type,
            content_length: head.content_length,
            body: reader(share),
        })
    }

    /// After a cache miss: joins the fetch of `key` running, or starts one; `None` when
    /// `look_again` and the cache has it now. A flight leaves the in-flight map only
    /// once its body is in the cache, so one that ended between the caller's look and
    /// this lock is found there (under load that window spanned a whole fetch, and the
    /// next viewer fetched the segment again).
    fn join_or_start(
        &self,
        key: &str,
        service: &Arc<dyn Service>,
        url: &Url,
        headers: &Headers,
        look_again: bool,
    ) -> Option<Share> {
        let mut map = self
            .inflight
            .lock()
            .expect("inflight lock is never poisoned");
        if let Some(f) = map.get(key) {
            crate::metrics::get().cache("segment", Lookup::Coalesced);
            // Under the map's lock: a pump ending for want of readers takes its
            // flight out of the map under it too, so this share is never orphaned.
            return Some(f.join());
        }
        if look_again && self.segments.contains_key(key) {
            return None;
        }
        crate::metrics::get().cache("segment", Lookup::Miss);
        let f = Arc::new(Inflight::default());
        map.insert(key.to_string(), f.clone());
        // Joined before the pump starts: it stops when no reader is left.
        let share = f.join();
        tokio::spawn(pump(
            f,
            Pump {
                service: service.clone(),
                url: url.clone(),
                headers: headers.clone(),
                key: key.to_string(),
                cache: self.segments.clone(),
                inflight: self.inflight.clone(),
                max_entry: self.max_entry,
                timeout: self.segment_timeout,
            },
        ));
        Some(share)
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
    max_uris: usize,
) -> Result<(Document, Option<Fetched>), UpstreamError> {
    let timeout = service.http().timeout;
    let work = async {
        let fetched = service.fetch(url, headers, None).await?;
        let ctype = fetched
            .content_type
            .clone()
            .unwrap_or_default()
            .to_ascii_lowercase();
        // The first bytes decide: media with a text type (`text/plain`, a static
        // server's guess from `.ts`), and playlists with a media type (`audio/mpegurl`,
        // RFC 8216's other name for HLS, or `application/octet-stream`); then read on
        // as text when it is not media.
        let mut fetched = fetched;
        let mut first = BytesMut::new();
        let mut ended = false;
        // A packet and a byte; then, for what is none of media, a playlist or a page
        // yet, up to `PROBE_MAX`: MPEG-TS joined mid-packet or behind some junk is
        // found by its sync bytes.
        let undecided = |first: &[u8]| {
            first.len() <= crate::ts::PACKET
                || (first.len() < PROBE_MAX
                    && !looks_like_media(first)
                    && !looks_like_playlist(first)
                    && !crate::upstream::looks_like_html(first))
        };
        while !ended && undecided(&first) {
            match fetched.body.next().await {
                Some(chunk) => first.extend_from_slice(&chunk?),
                None => ended = true,
            }
        }
        let first = first.freeze();
        // A page typed as media (a panel's error page served as `video/mp2t`) is no
        // stream: it is read as text below, and refused as a page.
        let media = looks_like_media(&first)
            || (is_media_type(&ctype)
                && !looks_like_playlist(&first)
                && !crate::upstream::looks_like_html(&first));
        let mpeg_ts = media && looks_like_mpeg_ts(&first);
        // The response as it came, first bytes put back: media for whoever plays it
        // next (`MediaCache::take_parked`), text to read on.
        let head = futures::stream::once(async { Ok(first) });
        fetched.body = if ended {
            Box::pin(head)
        } else {
            Box::pin(head.chain(fetched.body))
        };
        if media {
            return Ok((
                Document::Media {
                    url: fetched.url.clone(),
                    mpeg_ts,
                },
                Some(fetched),
            ));
        }
        let final_url = fetched.url.clone();
        let url_len = final_url.as_str().len();
        if url_len > crate::proxy::MAX_URL_BYTES {
            return Err(UpstreamError::Invalid(format!(
                "{} is a playlist URL of {url_len} bytes; at most {} are followed",
                service.shown_url(&final_url),
                crate::proxy::MAX_URL_BYTES
            )));
        }
        let body = fetched.text(limit).await?;
        if !hls::is_hls(&body) {
            let looks = if crate::upstream::looks_like_html(body.as_bytes()) {
                "an HTML page"
            } else if body
                .trim_start_matches('\u{feff}')
                .trim_start()
                .starts_with("#EXTM3U")
            {
                "an M3U without HLS tags (no #EXTINF or #EXT-X- line)"
            } else {
                "a body that does not start with #EXTM3U"
            };
            return Err(UpstreamError::Invalid(format!(
                "{} answered {looks} (typed `{}`), not an HLS playlist",
                service.shown_url(&final_url),
                if ctype.is_empty() { "untyped" } else { &ctype }
            )));
        }
        let body = match hls::substitute_defines(&body, &final_url, limit) {
            Ok(substituted) => substituted.unwrap_or(body),
            Err(why) => {
                return Err(UpstreamError::Invalid(format!(
                    "{}: {why}",
                    service.shown_url(&final_url)
                )))
            }
        };
        if hls::count_uris(&body, max_uris) > max_uris {
            return Err(UpstreamError::Invalid(format!(
                "{} lists more than {max_uris} URIs (the cap is [cache] max_playlist_uris = {max_uris})",
                service.shown_url(&final_url)
            )));
        }
        Ok((
            Document::Playlist {
                url: final_url,
                body,
            },
            None,
        ))
    };
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or_else(|_| {
            Err(UpstreamError::TimedOut {
                url: service.shown_url(url),
                after: timeout,
            })
        })
}

/// MPEG-TS (sync bytes one packet apart) or MP4 (`ftyp`), by a body's first bytes.
fn looks_like_media(first: &[u8]) -> bool {
    looks_like_mpeg_ts(first) || first.get(4..8) == Some(b"ftyp")
}

/// How much of a body's start is read to tell MPEG-TS that does not start at its
/// first byte.
const PROBE_MAX: usize = 8 << 10;

/// MPEG-TS packets: sync bytes at 0 and 188, or, from a later offset (a stream
/// joined mid-packet, junk in front), at four offsets 188 apart: one more than
/// `ts::resync` asks of a stream already known to be MPEG-TS, as here any body may be
/// tested.
fn looks_like_mpeg_ts(first: &[u8]) -> bool {
    use crate::ts::{PACKET, SYNC};
    if first.first() == Some(&SYNC) && first.get(PACKET) == Some(&SYNC) {
        return true;
    }
    (1..first.len().saturating_sub(3 * PACKET))
        .any(|o| (0..4).all(|k| first[o + k * PACKET] == SYNC))
}

/// Text starting `#EXTM3U` (after a byte-order mark or blank space).
fn looks_like_playlist(first: &[u8]) -> bool {
    let text = first.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(first);
    text.trim_ascii_start().starts_with(b"#EXTM3U")
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

/// A fetch in progress: its head, the chunks its readers still need, and how it ended.
#[derive(Default)]
struct Inflight {
    state: Mutex<FlightState>,
    changed: Notify,
}

#[derive(Default)]
struct FlightState {
    head: Option<Result<Head, UpstreamError>>,
    /// Chunks from number `first` on; earlier ones were read by every reader and
    /// dropped (only once the body is no longer kept `whole`).
    chunks: VecDeque<Bytes>,
    first: usize,
    /// Bytes in `chunks`.
    buffered: usize,
    /// Past the cacheable size: chunks every reader has read are dropped, and the
    /// flight is out of the in-flight map (a late reader could not start at byte 0).
    partial: bool,
    /// The next chunk number of each reader, by reader id: who still needs what.
    positions: HashMap<u64, usize>,
    next_reader: u64,
    end: Option<Result<(), UpstreamError>>,
}

impl FlightState {
    /// Drops the chunks every reader has read, once the body is not kept whole.
    fn trim(&mut self) {
        if !self.partial {
            return;
        }
        let read = self
            .positions
            .values()
            .copied()
            .min()
            .unwrap_or(self.first + self.chunks.len());
        while self.first < read {
            let Some(c) = self.chunks.pop_front() else {
                break;
            };
            self.buffered -= c.len();
            self.first += 1;
        }
    }
}

impl Inflight {
    fn update(&self, f: impl FnOnce(&mut FlightState)) {
        f(&mut self.lock());
        self.changed.notify_waiters();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FlightState> {
        self.state.lock().expect("flight lock is never poisoned")
    }

    /// Waits until `look` finds something in the state.
    async fn wait<T>(&self, mut look: impl FnMut(&FlightState) -> Option<T>) -> T {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            // Registered before looking, so an update between the look and the await
            // still wakes us.
            notified.as_mut().enable();
            if let Some(t) = look(&self.lock()) {
                return t;
            }
            notified.await;
        }
    }

    async fn head(&self) -> Result<Head, UpstreamError> {
        self.wait(|s| s.head.clone()).await
    }

    /// A new reader from the first byte. Called under the in-flight map's lock.
    fn join(self: &Arc<Self>) -> Share {
        let mut s = self.lock();
        let id = s.next_reader;
        s.next_reader += 1;
        s.positions.insert(id, 0);
        Share {
            flight: self.clone(),
            id,
        }
    }
}

/// One reader's hold on a flight: while any exists, the fetch goes on.
struct Share {
    flight: Arc<Inflight>,
    id: u64,
}

impl Drop for Share {
    fn drop(&mut self) {
        self.flight.update(|s| {
            s.positions.remove(&self.id);
            s.trim();
        });
    }
}

/// The bytes of a flight from the start, as they arrive.
fn reader(share: Share) -> BodyStream {
    Box::pin(futures::stream::unfold(
        (share, 0usize, false),
        |(share, next, done)| async move {
            if done {
                return None;
            }
            let item = share
                .flight
                .wait(|s| {
                    if next < s.first || !s.positions.contains_key(&share.id) {
                        // Left behind by the readers sharing a long body.
                        return Some(Some(Err(UpstreamError::Invalid(
                            "this reader fell a whole window behind the others sharing the fetch of a long body; ask again (from where it stopped) for a fetch of its own".into(),
                        ))));
                    }
                    match s.chunks.get(next - s.first) {
                        Some(chunk) => Some(Some(Ok(chunk.clone()))),
                        None => match &s.end {
                            None => None,
                            Some(Ok(())) => Some(None),
                            Some(Err(e)) => Some(Some(Err(e.clone()))),
                        },
                    }
                })
                .await;
            match item {
                None => None,
                Some(Ok(chunk)) => {
                    let freed = {
                        let mut s = share.flight.lock();
                        // Not back in once left behind.
                        if let Some(at) = s.positions.get_mut(&share.id) {
                            *at = next + 1;
                        }
                        let before = s.buffered;
                        s.trim();
                        // Caught up with a long body: the pump, waiting for room, may
                        // leave a reader behind now.
                        let caught_up = s.partial && next + 1 >= s.first + s.chunks.len();
                        s.buffered < before || caught_up
                    };
                    if freed {
                        // The pump may be waiting for room.
                        share.flight.changed.notify_waiters();
                    }
                    Some((Ok(chunk), (share, next + 1, false)))
                }
                Some(Err(e)) => Some((Err(e), (share, next, true))),
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
    timeout: Duration,
}

impl Pump {
    /// Takes `flight` out of the in-flight map (if it is still the one there): later
    /// requests for the resource start a fetch of their own.
    fn forget(&self, map: &mut HashMap<String, Arc<Inflight>>, flight: &Arc<Inflight>) {
        if map.get(&self.key).is_some_and(|f| Arc::ptr_eq(f, flight)) {
            map.remove(&self.key);
        }
    }

    /// Resolves once no reader is left, with the flight out of the map so that nobody
    /// joins it afterwards (joining happens under the map's lock too).
    async fn deserted(&self, flight: &Arc<Inflight>) {
        loop {
            flight.wait(|s| s.positions.is_empty().then_some(())).await;
            let mut map = self
                .inflight
                .lock()
                .expect("inflight lock is never poisoned");
            if flight.lock().positions.is_empty() {
                self.forget(&mut map, flight);
                return;
            }
        }
    }
}

/// Ends a flight that did not finish (timed out, deserted or cancelled) so readers
/// never wait forever, and always takes it out of the in-flight map.
struct FlightGuard<'a> {
    flight: &'a Arc<Inflight>,
    pump: &'a Pump,
}

impl Drop for FlightGuard<'_> {
    fn drop(&mut self) {
        self.pump.forget(
            &mut self
                .pump
                .inflight
                .lock()
                .expect("inflight lock is never poisoned"),
            self.flight,
        );
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

/// Runs one upstream fetch into `flight` within the segment deadline, stopping early
/// when every reader has gone; dropping the body closes the upstream connection. A
/// body past a cache entry's size (a long media file listed as one segment: a movie
/// of a VOD playlist) is no segment to cut off: past the deadline it goes on, bounded
/// by the service's idle timeout between chunks.
async fn pump(flight: Arc<Inflight>, p: Pump) {
    let _guard = FlightGuard {
        flight: &flight,
        pump: &p,
    };
    let fetch = fetch_into(&flight, &p);
    tokio::pin!(fetch);
    let deadline = tokio::time::sleep(p.timeout);
    tokio::pin!(deadline);
    let mut bounded = true;
    loop {
        tokio::select! {
            () = &mut fetch => return,
            () = &mut deadline, if bounded => {
                let long = {
                    let s = flight.lock();
                    s.partial
                        || matches!(&s.head, Some(Ok(h)) if h.content_length
                            .is_some_and(|n| n > p.max_entry as u64))
                };
                if long {
                    bounded = false;
                    continue;
                }
                flight.update(|s| {
                    let late = UpstreamError::Timeout(p.timeout);
                    if s.head.is_none() {
                        s.head = Some(Err(late.clone()));
                    }
                    if s.end.is_none() {
                        s.end = Some(Err(late));
                    }
                });
                return;
            }
            () = p.deserted(&flight) => return,
        }
    }
}

/// The fetch itself: head, chunks (waiting for room once the body is too large to
/// keep), then the complete body into the cache when it is small enough.
async fn fetch_into(flight: &Arc<Inflight>, p: &Pump) {
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
    // Told with the first byte, not before: a 200 without a byte (an upstream's empty
    // "segment") is a failed segment, answered as one, never a 200 with nothing.
    let mut head = Some(Head {
        content_type: content_type.clone(),
        content_length: fetched.content_length,
    });
    let room = p.max_entry.max(WINDOW);
    let declared = fetched.content_length;
    let mut body = fetched.body;
    let mut size = 0usize;
    let mut kept = false;
    loop {
        // Whole bodies stay within max_entry by themselves; past it, wait for the
        // slowest reader to make room. A reader that holds the full window while
        // another has read all of it is left behind (its answer ends; a player asks
        // again from where it stopped, for a fetch of its own): one viewer paused or
        // on a slow line never holds back the others sharing a long body.
        loop {
            let room_now = flight
                .wait(|s| {
                    if !s.partial || s.buffered < room {
                        return Some(true);
                    }
                    let slowest = s.positions.values().min()?;
                    let fastest = s.positions.values().max()?;
                    (slowest < fastest && *fastest >= s.first + s.chunks.len()).then_some(false)
                })
                .await;
            if room_now {
                break;
            }
            flight.update(|s| {
                let slowest = s.positions.values().copied().min().unwrap_or_default();
                s.positions.retain(|_, at| *at > slowest);
                s.trim();
            });
        }
        let Some(chunk) = body.next().await else {
            break;
        };
        match chunk {
            Ok(chunk) if chunk.is_empty() => {}
            Ok(chunk) => {
                size = size.saturating_add(chunk.len());
                let partial = size > p.max_entry;
                if partial {
                    p.forget(
                        &mut p.inflight.lock().expect("inflight lock is never poisoned"),
                        flight,
                    );
                }
                // The last byte of a declared length: into the cache before any reader
                // has it. A reader's HTTP response ends at its `Content-Length`, and
                // with the last reader gone the pump stops (`deserted`), maybe before
                // the upstream's end is seen: the next viewer fetched the segment again.
                if !kept && !partial && declared == Some(size as u64) {
                    keep(flight, p, content_type.clone(), Some(chunk.clone())).await;
                    kept = true;
                }
                flight.update(|s| {
                    if let Some(head) = head.take() {
                        s.head = Some(Ok(head));
                    }
                    s.buffered += chunk.len();
                    s.chunks.push_back(chunk);
                    s.partial |= partial;
                    s.trim();
                });
            }
            Err(e) => {
                flight.update(|s| {
                    if s.head.is_none() {
                        s.head = Some(Err(e.clone()));
                    }
                    s.end = Some(Err(e));
                });
                return;
            }
        }
    }
    if size == 0 {
        let e = UpstreamError::empty_segment(&p.service.shown_url(&p.url));
        flight.update(|s| {
            s.head = Some(Err(e.clone()));
            s.end = Some(Err(e));
        });
        return;
    }
    if size <= p.max_entry && !kept {
        keep(flight, p, content_type, None).await;
    } else if kept && declared != Some(size as u64) {
        // More than the declared length came (no HTTP body does): what was kept is a
        // part of it.
        p.cache.invalidate(&p.key).await;
    }
    // In the cache before the flight ends: a request arriving now finds one or the other.
    flight.update(|s| s.end = Some(Ok(())));
}

/// Puts the flight's whole body (its chunks, then `last` when given) into the cache.
async fn keep(flight: &Inflight, p: &Pump, content_type: Option<String>, last: Option<Bytes>) {
    let bytes = {
        let s = flight.lock();
        let mut whole = BytesMut::with_capacity(s.buffered + last.as_ref().map_or(0, Bytes::len));
        for c in s.chunks.iter().chain(&last) {
            whole.extend_from_slice(c);
        }
        whole.freeze()
    };
    p.cache
        .insert(
            p.key.clone(),
            Segment {
                content_type,
                bytes,
            },
        )
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mpeg_ts_is_told_from_its_first_byte_mid_packet_or_behind_junk() {
        let packets: Vec<u8> = (0..8)
            .flat_map(|_| {
                let mut p = vec![0u8; 188];
                p[0] = 0x47;
                p
            })
            .collect();
        assert!(looks_like_mpeg_ts(&packets[..189]));
        // Joined mid-packet, or behind a kilobyte of junk: found by four sync bytes.
        assert!(looks_like_mpeg_ts(&packets[77..]));
        let mut junk = vec![b'x'; 1000];
        junk.extend_from_slice(&packets);
        assert!(looks_like_mpeg_ts(&junk));
        // Three in a row, a text, an MP4: not MPEG-TS.
        assert!(!looks_like_mpeg_ts(&packets[77..77 + 3 * 188]));
        assert!(!looks_like_mpeg_ts(b"#EXTM3U\n#EXTINF:-1,GGGG\n"));
        assert!(!looks_like_mpeg_ts(b"\0\0\0\x20ftypisom"));
    }

    fn doc(n: usize) -> CachedDoc {
        CachedDoc {
            doc: Arc::new(Document::Playlist {
                url: Url::parse("http://up.example/a.m3u8").expect("a URL"),
                body: "#".repeat(n),
            }),
            ttl: Duration::from_secs(60),
        }
    }

    /// An upstream whose body gives its declared length in one chunk, then holds the
    /// connection until `end` is notified (its end seen late, as under load).
    struct LateEnd {
        http: crate::upstream::ServiceHttp,
        end: Arc<Notify>,
        fetches: std::sync::atomic::AtomicUsize,
    }

    #[async_trait::async_trait]
    impl Service for LateEnd {
        async fn channels(&self) -> Result<Vec<crate::model::Channel>, UpstreamError> {
            Ok(Vec::new())
        }
        async fn resolve(
            &self,
            _: &crate::model::Channel,
        ) -> Result<crate::model::ResolvedStream, UpstreamError> {
            Err(UpstreamError::Invalid("not resolved here".into()))
        }
        fn http(&self) -> &crate::upstream::ServiceHttp {
            &self.http
        }
        async fn fetch(
            &self,
            url: &Url,
            _: &Headers,
            _: Option<&str>,
        ) -> Result<crate::upstream::Fetched, UpstreamError> {
            self.fetches
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let end = self.end.clone();
            let body = futures::stream::once(async { Ok(Bytes::from_static(&[7u8; 1000])) })
                .chain(futures::stream::once(async move {
                    end.notified().await;
                    Ok(Bytes::new())
                }))
                .filter(|c: &Result<Bytes, UpstreamError>| {
                    futures::future::ready(c.as_ref().map_or(true, |b| !b.is_empty()))
                });
            Ok(crate::upstream::Fetched {
                url: url.clone(),
                status: 200,
                content_type: Some("video/mp2t".into()),
                content_length: Some(1000),
                content_range: None,
                accept_ranges: false,
                set_cookies: Vec::new(),
                body: Box::pin(body),
            })
        }
    }

    /// A `LateEnd` upstream, a cache, and the streaming body of a first request for
    /// segment `name` of it.
    async fn first_request(name: &str) -> (Arc<LateEnd>, MediaCache, Url, BodyStream) {
        let text = "[[services]]\nname = \"up\"\nkind = \"demo\"\n";
        let cfg = crate::config::Config::parse(text, "t.toml", &|_| None).expect("a config");
        let http = crate::upstream::Http::new(cfg.server.max_body_bytes);
        let up = Arc::new(LateEnd {
            http: crate::upstream::ServiceHttp::new(http, &cfg.services[0], None),
            end: Arc::default(),
            fetches: Default::default(),
        });
        let cache = MediaCache::new(&CacheConfig::default());
        let url = Url::parse(&format!("http://up.test/{name}.ts")).expect("a URL");
        let Body::Streaming { body, .. } = cache
            .segment(up.clone(), "up", &url, &Vec::new())
            .await
            .expect("the segment")
        else {
            panic!("a first request streams");
        };
        (up, cache, url, body)
    }

    #[tokio::test]
    async fn a_segment_read_whole_is_kept_though_its_reader_left_before_the_upstream_ended() {
        let (up, cache, url, mut body) = first_request("seg1").await;
        // What an HTTP response with `Content-Length: 1000` does: it reads that many
        // bytes, then drops the body without waiting for its end.
        let first = body.next().await.expect("a chunk").expect("bytes");
        assert_eq!(first.len(), 1000);
        drop(body);
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        up.end.notify_waiters();
        let second = cache
            .segment(up.clone(), "up", &url, &Vec::new())
            .await
            .expect("the segment again");
        assert!(
            matches!(second, Body::Cached(ref s) if s.bytes.len() == 1000),
            "the second viewer is served from the cache"
        );
        assert_eq!(
            up.fetches.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "one upstream fetch"
        );
    }

    #[tokio::test]
    async fn a_miss_whose_fetch_ended_meanwhile_finds_the_cache_not_a_new_fetch() {
        let (up, cache, url, mut body) = first_request("seg2").await;
        body.next().await.expect("a chunk").expect("bytes");
        up.end.notify_waiters();
        assert!(body.next().await.is_none(), "the body ends");
        drop(body);
        let key = key("up", &url, &Vec::new());
        for _ in 0..100 {
            if !cache.inflight.lock().unwrap().contains_key(&key) {
                break;
            }
            tokio::task::yield_now().await;
        }
        // A viewer that missed the cache before that fetch ended takes the lock now.
        let service: Arc<dyn Service> = up.clone();
        assert!(
            cache
                .join_or_start(&key, &service, &url, &Vec::new(), true)
                .is_none(),
            "the cache has it: no new fetch"
        );
        assert_eq!(up.fetches.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn an_ended_live_playlist_is_kept_as_live_a_vod_one_long() {
        let cache = MediaCache::new(&CacheConfig::default());
        let live = "#EXTM3U\n#EXT-X-TARGETDURATION:6\n#EXTINF:6,\na.ts\n";
        let ended = format!("{live}#EXT-X-ENDLIST\n");
        let vod = format!("#EXTM3U\n#EXT-X-PLAYLIST-TYPE:VOD\n{}", &ended[8..]);
        assert_eq!(cache.playlist_lifetime(live), Duration::from_secs(2));
        // An encoder that stopped writes ENDLIST; its restart must be seen as soon.
        assert_eq!(cache.playlist_lifetime(&ended), Duration::from_secs(2));
        assert_eq!(cache.playlist_lifetime(&vod), cache.vod_ttl);
        assert!(cache.vod_ttl > Duration::from_secs(2));
    }

    #[tokio::test]
    async fn the_playlist_cache_is_bounded_by_bytes_not_entries() {
        let cache = playlist_cache(4 << 20);
        for i in 0..10 {
            cache.insert(format!("big-{i}"), doc(1 << 20)).await;
        }
        cache.run_pending_tasks().await;
        assert!(
            cache.weighted_size() <= 4 << 20,
            "{} bytes kept",
            cache.weighted_size()
        );
        assert!(cache.entry_count() <= 4, "{} entries", cache.entry_count());
        // Small playlists still fit by the thousand.
        let cache = playlist_cache(4 << 20);
        for i in 0..1000 {
            cache.insert(format!("small-{i}"), doc(1000)).await;
        }
        cache.run_pending_tasks().await;
        assert_eq!(cache.entry_count(), 1000);
    }
}
