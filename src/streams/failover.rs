//! Failover during HLS playback.
//!
//! A player keeps reloading the media playlist link it was given. Each source of a
//! channel collects *strikes*: a reload that fails (error, timeout, HTML instead of
//! HLS) or a segment that fails adds one, a segment that arrives clears them. At
//! `streams.failover_after` strikes, that playlist link is *switched*: freesky opens
//! the channel's next source (priority order, skipping the ones that failed), and
//! from then on answers the old link with the new source's media playlist, its
//! sequence numbers shifted to continue where the old one stopped and an
//! `#EXT-X-DISCONTINUITY` before the first new segment. The player never learns a
//! new URL; it sees a discontinuity and keeps playing.
//!
//! A *refresh* is a switch to the same service: when the upstream URL a link seals
//! carries a token that is about to expire (`model::url_expires_at`, see
//! [`refresh_due`]) or the upstream refuses it (401, 403, 410), the channel is
//! resolved afresh from that service and the link is answered with the new URL's
//! playlist, whose segment links carry the new token. When the new playlist lists the
//! segment the player got last (same path, any query), the numbering simply continues:
//! no discontinuity. Otherwise it is renumbered like a failover.
//!
//! This is in-memory state (a cache, not a security table): links stay verifiable
//! by the signature alone, and after a restart a switched link simply starts over.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use moka::sync::Cache;
use url::Url;

use super::Engine;
use crate::cache::Document;
use crate::clock::{Clock, SystemClock};
use crate::error::UpstreamError;
use crate::hls;
use crate::model::{url_expires_at, Headers};
use crate::services::registry::{RegistryError, SourceCtx};
use crate::services::Service;

/// A playlist link now served from another source.
pub struct Switch {
    pub service_name: String,
    pub service: Arc<dyn Service>,
    pub url: Url,
    pub headers: Headers,
    /// Services already given up on for this link (the original first).
    pub tried: Vec<String>,
    pub numbers: Renumber,
    /// When `url` was resolved: its token's lifetime starts here ([`refresh_due`]).
    pub since: SystemTime,
}

/// Renumbers the new source's media playlists for a player of the old one.
pub struct Renumber {
    /// The sequence number the player expects next, where the new source starts.
    start_seq: Option<u64>,
    /// The discontinuity sequence a playlist starting there carries for the player:
    /// it never goes down (HLS players order their timelines by it).
    start_dseq: u64,
    /// A refresh: the path (no query) of the segment the player got last, which the
    /// new playlist continues from when it lists it.
    after: Option<String>,
    map: Mutex<Option<SeqMap>>,
}

/// How the new source's sequence numbers become the player's.
#[derive(Clone, Copy)]
struct SeqMap {
    /// Added to the new source's sequence numbers.
    offset: i128,
    /// The player's sequence number of the first segment from the new source.
    first: u64,
    /// An `#EXT-X-DISCONTINUITY` goes before `first` (not when a refresh continues).
    discontinuity: bool,
    /// Added to the new source's own discontinuity sequence.
    dseq_offset: i128,
}

/// What the player was last given on a link: the sequence number after it, and the
/// path of its last segment.
#[derive(Clone)]
pub struct Seen {
    next_seq: u64,
    last_path: Option<String>,
    /// The discontinuity sequence after it (`hls::discontinuities`).
    next_dseq: u64,
}

/// How a playlist link is switched.
enum SwitchTo<'a> {
    /// To the channel's next source, skipping these services.
    Next(&'a [String]),
    /// To a fresh resolution of this service (a token refresh).
    Refresh(&'a str),
}

/// True when a token that expires at `expires`, handed out at `since`, should be
/// replaced now: from `max(10 s, 10 % of its lifetime)` before it expires, but never in
/// the first half of its lifetime (a 4 s token is refreshed after 2 s, not at once).
pub fn refresh_due(since: SystemTime, expires: SystemTime, now: SystemTime) -> bool {
    let life = expires.duration_since(since).unwrap_or_default();
    let lead = Duration::from_secs(10).max(life / 10).min(life / 2);
    expires.checked_sub(lead).is_none_or(|at| now >= at)
}

/// True when `url` carries a token ([`url_expires_at`]) handed out at `since` that is
/// due for a refresh at `now`.
pub fn token_due(url: &Url, since: SystemTime, now: SystemTime) -> bool {
    url_expires_at(url).is_some_and(|exp| refresh_due(since, exp, now))
}

/// True when the upstream refused a URL the way an expired or revoked token is refused.
pub fn token_refused(err: &UpstreamError) -> bool {
    matches!(
        err,
        UpstreamError::Status {
            status: 401 | 403 | 410,
            ..
        }
    )
}

/// Failures of one upstream URL this close together are one failure (viewers that
/// shared its fetch): `Failovers::strike_url`.
const SAME_FAILURE: Duration = Duration::from_secs(1);

/// How long a failed source is skipped by a reloaded channel URL before it is tried
/// again (`Failovers::skipped`).
pub const RETRY_SKIPPED: Duration = Duration::from_secs(60);

pub struct Failovers {
    strikes: Cache<String, Arc<AtomicU32>>,
    /// The upstream URLs (per source) struck in the last `SAME_FAILURE`: viewers that
    /// shared one failed fetch strike once (`strike_url`).
    struck: Cache<String, ()>,
    next_seq: Cache<String, Seen>,
    switched: Cache<String, Arc<Switch>>,
    /// When each playlist link was first served: the start of its token's lifetime.
    first_seen: Cache<String, SystemTime>,
    /// Since when each source (by `source_key`) is skipped by the channel URL a player
    /// reloads (`skipped`).
    skipped: Cache<String, SystemTime>,
    /// When each source's playlist last timed out for the channel URL (`note_timeout`).
    timed_out: Cache<String, SystemTime>,
    /// Per channel, the source its own URL last answered with a media playlist, and
    /// how that source's numbers were shifted (`channel_numbers`).
    by_channel: Cache<String, Arc<ChannelNumbers>>,
    /// (channel, client address) pairs the channel's own URL answered with a media
    /// playlist lately: that client reloads it (`channel_was_media`).
    media_players: Cache<String, ()>,
    /// What token lifetimes are measured against (a test moves it forward).
    clock: Arc<dyn Clock>,
}

impl Default for Failovers {
    fn default() -> Self {
        Self {
            strikes: idle_cache(60),
            struck: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(SAME_FAILURE)
                .build(),
            next_seq: idle_cache(600),
            switched: idle_cache(600),
            first_seen: idle_cache(600),
            skipped: idle_cache(600),
            timed_out: idle_cache(600),
            by_channel: idle_cache(600),
            media_players: idle_cache(MEDIA_PLAYER_IDLE),
            clock: Arc::new(SystemClock),
        }
    }
}

impl Failovers {
    /// Failovers measuring token lifetimes against `clock`.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            ..Self::default()
        }
    }

    /// Now, by this state's clock.
    pub fn now(&self) -> SystemTime {
        self.clock.now()
    }

    fn strikes(&self) -> &Cache<String, Arc<AtomicU32>> {
        &self.strikes
    }

    /// Strikes of `service` as a source of `channel`.
    pub fn strikes_of(&self, service: &str, channel: &str) -> u32 {
        self.strikes()
            .get(&source_key(service, channel))
            .map_or(0, |n| n.load(Ordering::Relaxed))
    }

    /// Adds a strike for a failure of `url`, unless it was struck less than
    /// `SAME_FAILURE` ago (viewers sharing one failed fetch, or joining it, see the
    /// same failure: one strike); returns the count.
    pub fn strike_url(&self, service: &str, channel: &str, url: &Url) -> u32 {
        let key = format!("{}\n{url}", source_key(service, channel));
        if self.struck.entry(key).or_insert(()).is_fresh() {
            self.strike(service, channel)
        } else {
            self.strikes_of(service, channel)
        }
    }

    /// Adds a strike; returns the count.
    pub fn strike(&self, service: &str, channel: &str) -> u32 {
        let n = self
            .strikes()
            .get_with(source_key(service, channel), Arc::default);
        n.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// `service`'s playlist for `channel` timed out where a player reloads the
    /// channel's own URL: it would wait as long again at every reload, so that URL
    /// skips it for `RETRY_SKIPPED` (`timed_out`). Kept apart from the strikes, which
    /// count towards switching the links players already hold.
    pub fn note_timeout(&self, service: &str, channel: &str) {
        self.timed_out
            .insert(source_key(service, channel), self.now());
    }

    /// Whether `service`'s playlist for `channel` timed out less than
    /// `RETRY_SKIPPED` ago (`note_timeout`).
    pub fn timed_out(&self, service: &str, channel: &str) -> bool {
        self.timed_out
            .get(&source_key(service, channel))
            .is_some_and(|at| self.now().duration_since(at).unwrap_or_default() < RETRY_SKIPPED)
    }

    /// Whether `service` is skipped as a source of `channel` where a player reloads
    /// the channel's own URL (a media-playlist channel: `Engine::open_playlist`): it
    /// failed `threshold` times in a row, less than `RETRY_SKIPPED` ago. Then its
    /// strikes are forgotten and it is tried again (its segments are no longer asked
    /// for, so nothing else would clear them).
    pub fn skipped(&self, service: &str, channel: &str, threshold: u32) -> bool {
        let key = source_key(service, channel);
        if self.strikes_of(service, channel) < threshold {
            self.skipped.invalidate(&key);
            return false;
        }
        let now = self.now();
        let since = self.skipped.get_with(key.clone(), || now);
        if now.duration_since(since).unwrap_or_default() < RETRY_SKIPPED {
            return true;
        }
        self.skipped.invalidate(&key);
        self.clear(service, channel);
        false
    }

    /// Whether channel `channel`'s own URL answered client `client` with a media
    /// playlist lately (in the last `MEDIA_PLAYER_IDLE` seconds): that player reloads
    /// it, and a master would end its playback. Another client (a new player) is
    /// answered as the source gives it, a master included.
    pub fn channel_was_media(&self, channel: &str, client: Option<IpAddr>) -> bool {
        client.is_some_and(|ip| self.media_players.contains_key(&player_key(channel, ip)))
    }

    /// Channel `channel`'s own URL answered client `client` with a media playlist
    /// (a read, which keeps the entry alive, when it is known already).
    pub fn note_media_player(&self, channel: &str, client: Option<IpAddr>) {
        if let Some(ip) = client {
            let key = player_key(channel, ip);
            if self.media_players.get(&key).is_none() {
                self.media_players.insert(key, ());
            }
        }
    }

    /// How a media playlist of `service` answering channel `channel`'s own URL
    /// (`Engine::open_playlist`, which the player reloads) is numbered: as the source
    /// gives it, until another source answers; from then on shifted to go on where
    /// the player stopped, with a discontinuity before its first segment (as a switched
    /// link's, `Renumber`). Every viewer of the URL reloads the same playlists, so this
    /// is kept per channel; the answer notes what it served (`ChannelNumbers::note`).
    pub fn channel_numbers(&self, channel: &str, service: &str) -> Arc<ChannelNumbers> {
        // The common case, a reload answered by the same source: one read.
        if let Some(last) = self.by_channel.get(channel) {
            if last.service == service {
                return last;
            }
        }
        // One decision per switch, however many viewers reload at once.
        self.by_channel
            .entry(channel.to_string())
            .and_compute_with(|last| match last.map(|e| e.into_value()) {
                Some(last) if last.service == service => moka::ops::compute::Op::Nop,
                last => {
                    let numbers = last.map(|last| {
                        let seen = last.seen.lock().expect("seen lock").clone();
                        Arc::new(Renumber::after(seen.as_ref()))
                    });
                    moka::ops::compute::Op::Put(Arc::new(ChannelNumbers {
                        service: service.to_string(),
                        numbers,
                        seen: Mutex::default(),
                    }))
                }
            })
            .into_entry()
            .map(|e| e.into_value())
            .expect("the entry was kept or put")
    }

    pub fn clear(&self, service: &str, channel: &str) {
        if let Some(n) = self.strikes().get(&source_key(service, channel)) {
            n.store(0, Ordering::Relaxed);
        }
    }

    /// Remembers which sequence number (and segment path) comes after a media playlist
    /// served for `link`.
    /// Two reloads answered at once may note out of order: the later numbers are kept
    /// (a switch numbered from the earlier would go back under what the player has).
    pub fn note_next_seq(&self, link: &str, body: &str, url: &Url) {
        if let Some(seen) = Seen::of(body, url) {
            self.next_seq
                .entry(link.to_string())
                .and_compute_with(|kept| match kept {
                    Some(kept) if kept.value().is_after(&seen) => moka::ops::compute::Op::Nop,
                    _ => moka::ops::compute::Op::Put(seen),
                });
        }
    }

    /// When `link` was first served (now, for a link not seen before).
    pub fn first_seen(&self, link: &str) -> SystemTime {
        self.first_seen
            .get_with(link.to_string(), || self.clock.now())
    }

    pub fn switched(&self, link: &str) -> Option<Arc<Switch>> {
        self.switched.get(link)
    }
}

impl Engine {
    /// Switches playlist link `link` of channel `channel` to its next source, skipping
    /// the services in `tried`.
    pub async fn fail_over(
        &self,
        link: &str,
        channel: &str,
        tried: Vec<String>,
    ) -> Result<Arc<Switch>, RegistryError> {
        let skip = tried.clone();
        self.open_switch(link, channel, tried, SwitchTo::Next(&skip))
            .await
    }

    /// Refreshes playlist link `link` of channel `channel`: resolves it afresh from
    /// `service` (the one serving the link now) and answers the link from the new URL.
    pub async fn refresh_link(
        &self,
        link: &str,
        channel: &str,
        service: &str,
        tried: Vec<String>,
    ) -> Result<Arc<Switch>, RegistryError> {
        self.open_switch(link, channel, tried, SwitchTo::Refresh(service))
            .await
    }

    async fn open_switch(
        &self,
        link: &str,
        channel: &str,
        tried: Vec<String>,
        target: SwitchTo<'_>,
    ) -> Result<Arc<Switch>, RegistryError> {
        let since = self.failovers.now();
        let media = &self.media;
        let limit = self.settings.max_body_bytes;
        let registry = &self.registry;
        let skip: &[String] = match target {
            SwitchTo::Next(skip) => skip,
            SwitchTo::Refresh(_) => &[],
        };
        let attempt = |src: SourceCtx| async move {
            if skip.contains(&src.service_name) {
                return Err(UpstreamError::Invalid(
                    "no other source left to fail over to".into(),
                ));
            }
            let r = &src.resolved;
            let doc = media
                .document(&*src.service, &src.service_name, &r.url, &r.headers, limit)
                .await?;
            let url = match &*doc {
                // The player follows one media playlist from here on: one whose
                // audio is in its own segments when the master has one.
                Document::Playlist { url, body } if hls::is_master(body) => {
                    hls::muxed_variant(body, url)
                        .map(|(variant, _)| variant)
                        .ok_or_else(|| {
                            UpstreamError::Invalid("the master lists no variant".into())
                        })?
                }
                Document::Playlist { url, .. } => url.clone(),
                Document::Media { .. } => {
                    return Err(UpstreamError::Invalid(
                        "not HLS: an HLS player cannot switch to it".into(),
                    ))
                }
            };
            Ok((src.service_name, src.service, url, r.headers.clone()))
        };
        let (service_name, service, url, headers) = match target {
            SwitchTo::Next(skip) => registry.open_except(channel, None, skip, attempt).await?,
            SwitchTo::Refresh(service) => registry.reopen(channel, service, attempt).await?,
        };
        let seen = self.failovers.next_seq.get(link);
        let mut tried = tried;
        let numbers = match target {
            SwitchTo::Next(_) => {
                tracing::warn!(channel, from = %tried.join(","), to = %service_name, "HLS playback failing over");
                crate::metrics::get().failover(channel);
                tried.push(service_name.clone());
                Renumber::after(seen.as_ref())
            }
            SwitchTo::Refresh(_) => {
                tracing::info!(channel, service = %service_name, "HLS link refreshed: the upstream token was about to expire");
                Renumber {
                    start_dseq: seen.as_ref().map_or(0, |s| s.next_dseq),
                    ..Renumber::continuing(
                        seen.as_ref().map(|s| s.next_seq),
                        seen.and_then(|s| s.last_path),
                    )
                }
            }
        };
        let switch = Arc::new(Switch {
            service_name,
            service,
            url,
            headers,
            tried,
            numbers,
            since,
        });
        self.failovers
            .switched
            .insert(link.to_string(), switch.clone());
        Ok(switch)
    }
}

fn idle_cache<V: Clone + Send + Sync + 'static>(idle_secs: u64) -> Cache<String, V> {
    Cache::builder()
        .max_capacity(10_000)
        .time_to_idle(Duration::from_secs(idle_secs))
        .build()
}

fn source_key(service: &str, channel: &str) -> String {
    format!("{service}\n{channel}")
}

/// How long a client that reloads a channel's own URL as a media playlist counts as
/// doing so after its last request, in seconds (players reload every 2 to 10 s).
const MEDIA_PLAYER_IDLE: u64 = 60;

fn player_key(channel: &str, ip: IpAddr) -> String {
    format!("{channel}\n{ip}")
}

/// The source a channel's own URL last answered from (`Failovers::channel_numbers`).
pub struct ChannelNumbers {
    service: String,
    /// `None` while the URL has only ever answered from this source (nothing shifted).
    pub numbers: Option<Arc<Renumber>>,
    /// What the player was last given: where the next source's numbers start.
    seen: Mutex<Option<Seen>>,
}

impl ChannelNumbers {
    /// Remembers which sequence number (and discontinuity sequence) comes after the
    /// media playlist `body` the channel's URL answered with, as numbered for the player.
    pub fn note(&self, body: &str, url: &Url) {
        if let Some(seen) = Seen::of(body, url) {
            let mut kept = self.seen.lock().expect("seen lock");
            // Concurrent reloads may note out of order: the later numbers stay.
            if !kept.as_ref().is_some_and(|k| k.is_after(&seen)) {
                *kept = Some(seen);
            }
        }
    }
}

impl Seen {
    /// What a player given media playlist `body` (at `url`) expects next; `None` for
    /// a master or no HLS. Line scans, not a parse: this runs on every poll.
    fn of(body: &str, url: &Url) -> Option<Self> {
        let (next_seq, last) = hls::live_edge(body, url)?;
        Some(Self {
            next_seq,
            last_path: last.map(|u| u.path().to_string()),
            next_dseq: hls::discontinuities(body).1,
        })
    }

    /// True when this was given after `other`: further on in the media sequence (the
    /// discontinuity sequence only between equals: an upstream that writes no
    /// `EXT-X-DISCONTINUITY-SEQUENCE` has it go down when a discontinuity leaves its
    /// window).
    fn is_after(&self, other: &Seen) -> bool {
        (self.next_seq, self.next_dseq) > (other.next_seq, other.next_dseq)
    }
}

impl Renumber {
    pub fn new(start_seq: Option<u64>) -> Self {
        Self::continuing(start_seq, None)
    }

    /// Going on from what a player was last given (`seen`): its next sequence number
    /// and discontinuity sequence.
    fn after(seen: Option<&Seen>) -> Self {
        Self {
            start_dseq: seen.map_or(0, |s| s.next_dseq),
            ..Self::new(seen.map(|s| s.next_seq))
        }
    }

    /// For a refresh: continues without a discontinuity from the segment at path
    /// `after` when the new playlist lists it.
    pub fn continuing(start_seq: Option<u64>, after: Option<String>) -> Self {
        Self {
            start_seq,
            start_dseq: 0,
            after,
            map: Mutex::new(None),
        }
    }

    /// The new source's media playlist `body`, renumbered for the player: the
    /// segment the player expects next is a few segments before the live edge, with
    /// a discontinuity before it. Older ones are left out: their numbers were the old
    /// source's segments, and a player given one number for two URIs stops (hls.js
    /// 1.6: "media sequence mismatch").
    pub fn renumber(&self, body: &str, url: &Url, live_edge: usize) -> Result<String, String> {
        let info = hls::media_info(body, url)?;
        let count = info.segments.len() as u64;
        let own_dseq = hls::discontinuities(body).0;
        let map = {
            let mut m = self.map.lock().expect("switch lock is never poisoned");
            *m.get_or_insert_with(|| {
                let found = self
                    .start_seq
                    .zip(self.after.as_deref())
                    .and_then(|(next, after)| {
                        let i = info.segments.iter().position(|s| s.url.path() == after)?;
                        Some((next, i as u64))
                    });
                if let Some((next, i)) = found {
                    // The last segment the player got is numbered `next - 1`.
                    return SeqMap {
                        // In i128: a sequence near the top of u64 must not wrap.
                        offset: i128::from(next)
                            - 1
                            - (i128::from(info.media_sequence) + i128::from(i)),
                        first: next,
                        discontinuity: false,
                        dseq_offset: 0,
                    };
                }
                let start_index = if info.ended {
                    0
                } else {
                    count.saturating_sub(live_edge as u64)
                };
                let first = self.start_seq.unwrap_or(0);
                SeqMap {
                    offset: i128::from(first)
                        - (i128::from(info.media_sequence) + i128::from(start_index)),
                    first,
                    discontinuity: true,
                    dseq_offset: i128::from(self.start_dseq) - i128::from(own_dseq),
                }
            })
        };
        let mapped_first = i128::from(info.media_sequence) + map.offset;
        let mapped_first = u64::try_from(mapped_first.max(0)).unwrap_or(0);
        // Where the discontinuity goes: before the segment numbered `map.first`,
        // while it is in the window; once it has left, the count of discontinuities
        // before the window goes up by one.
        let disc_index = map
            .first
            .checked_sub(mapped_first)
            .filter(|i| *i < count && map.discontinuity)
            .map(|i| i as usize);
        let disc_passed = map.discontinuity && mapped_first > map.first;
        // The segments numbered below `map.first` (the old source's numbers), left
        // out, and the discontinuities of the source's own among them.
        let dropped = match disc_index {
            Some(i) => i,
            None if map.discontinuity && mapped_first < map.first => count as usize,
            None => 0,
        };
        let dropped_discontinuities = own_discontinuities_before(body, dropped);
        let listed_first = mapped_first.saturating_add(dropped as u64);
        // The player's discontinuity sequence for a source value `n`.
        let dseq = |n: u64| {
            u64::try_from((i128::from(n) + map.dseq_offset).max(0)).unwrap_or(0)
                + u64::from(disc_passed)
                + dropped_discontinuities
        };
        let has_dseq = body.contains("#EXT-X-DISCONTINUITY-SEQUENCE:");

        let mut out = String::with_capacity(body.len() + 64);
        let mut segment = 0usize;
        let mut in_segment_tags = false;
        let mut wrote_dseq = false;
        for piece in body.split_inclusive('\n') {
            let line = piece.trim();
            if line.starts_with("#EXT-X-MEDIA-SEQUENCE:") {
                out.push_str(&format!("#EXT-X-MEDIA-SEQUENCE:{listed_first}\n"));
                if !has_dseq && dseq(0) > 0 {
                    out.push_str(&format!("#EXT-X-DISCONTINUITY-SEQUENCE:{}\n", dseq(0)));
                    wrote_dseq = true;
                }
                continue;
            }
            if let Some(v) = line.strip_prefix("#EXT-X-DISCONTINUITY-SEQUENCE:") {
                let n: u64 = v.trim().parse().unwrap_or(0);
                out.push_str(&format!("#EXT-X-DISCONTINUITY-SEQUENCE:{}\n", dseq(n)));
                wrote_dseq = true;
                continue;
            }
            let is_uri = !line.is_empty() && !line.starts_with('#');
            if segment < dropped {
                // A left-out segment: its URI and its own tags go; the tags that hold
                // for the segments after it (keys, maps) stay.
                if is_uri {
                    segment += 1;
                    in_segment_tags = false;
                } else if line.is_empty() || !is_own_tag(line) {
                    out.push_str(piece);
                    if !piece.ends_with('\n') {
                        out.push('\n');
                    }
                }
                continue;
            }
            let is_segment_tag =
                line.starts_with("#EXTINF") || line.starts_with("#EXT-X-BYTERANGE");
            if is_segment_tag && !in_segment_tags {
                in_segment_tags = true;
                if disc_index == Some(segment) {
                    out.push_str("#EXT-X-DISCONTINUITY\n");
                }
            }
            out.push_str(piece);
            if !piece.ends_with('\n') {
                out.push('\n');
            }
            if is_uri {
                segment += 1;
                in_segment_tags = false;
            }
        }
        if !body.contains("#EXT-X-MEDIA-SEQUENCE:") {
            // Default sequence 0: state ours right after the header.
            let mut head = format!("#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:{listed_first}\n");
            if !wrote_dseq && dseq(0) > 0 {
                head.push_str(&format!("#EXT-X-DISCONTINUITY-SEQUENCE:{}\n", dseq(0)));
            }
            let rest = out
                .trim_start_matches('\u{feff}')
                .trim_start()
                .strip_prefix("#EXTM3U")
                .unwrap_or(&out)
                .trim_start_matches(['\r', '\n']);
            return Ok(head + rest);
        }
        Ok(out)
    }
}

/// A tag that belongs to the one segment after it (left out with it), not to every
/// segment after (keys, maps, which stay).
fn is_own_tag(line: &str) -> bool {
    [
        "#EXTINF",
        "#EXT-X-BYTERANGE",
        "#EXT-X-DISCONTINUITY",
        "#EXT-X-PROGRAM-DATE-TIME",
        "#EXT-X-GAP",
        "#EXT-X-BITRATE",
        "#EXT-X-CUE",
        "#EXT-OATCLS",
    ]
    .iter()
    .any(|t| line.starts_with(t) && !line.starts_with("#EXT-X-DISCONTINUITY-SEQUENCE"))
}

/// How many `#EXT-X-DISCONTINUITY` tags come before the `n`th segment's URI.
fn own_discontinuities_before(body: &str, n: usize) -> u64 {
    let mut seen = 0;
    let mut found = 0;
    for line in body.lines().map(str::trim) {
        if seen >= n {
            break;
        }
        if line == "#EXT-X-DISCONTINUITY" {
            found += 1;
        } else if !line.is_empty() && !line.starts_with('#') {
            seen += 1;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(first: u64, n: u64) -> String {
        let mut s = format!("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:{first}\n");
        for i in first..first + n {
            s.push_str(&format!("#EXTINF:2.0,\nb{i}.ts\n"));
        }
        s
    }

    #[test]
    fn the_discontinuity_sequence_goes_on_from_the_players() {
        let url = Url::parse("http://up.example/live.m3u8").unwrap();
        let seen = Seen {
            next_seq: 1000,
            last_path: None,
            next_dseq: 5,
        };
        // The new source's own sequence (2, then 3 after one of its own
        // discontinuities has passed) maps onto the player's, from 5 on.
        let body = |d: u64| {
            live(7, 3).replace(
                "SEQUENCE:7\n",
                &format!("SEQUENCE:7\n#EXT-X-DISCONTINUITY-SEQUENCE:{d}\n"),
            )
        };
        let r = Renumber::after(Some(&seen));
        let out = r.renumber(&body(2), &url, 3).unwrap();
        assert!(out.contains("#EXT-X-DISCONTINUITY-SEQUENCE:5\n"), "{out}");
        let out = r.renumber(&body(3), &url, 3).unwrap();
        assert!(out.contains("#EXT-X-DISCONTINUITY-SEQUENCE:6\n"), "{out}");
        // Without a tag of its own, the player's is written.
        let out = Renumber::after(Some(&seen))
            .renumber(&live(7, 3), &url, 3)
            .unwrap();
        assert!(out.contains("#EXT-X-DISCONTINUITY-SEQUENCE:5\n"), "{out}");
        assert_eq!(hls::discontinuities(&out), (5, 6));
    }

    #[test]
    fn reloads_noted_out_of_order_keep_the_later_numbers() {
        let url = Url::parse("http://up.example/live.m3u8").unwrap();
        let failovers = Failovers::default();
        // The reload answered second (1000-1002) is noted first; the earlier one
        // (999-1001) must not take the player's numbers back.
        failovers.note_next_seq("k", &live(1000, 3), &url);
        failovers.note_next_seq("k", &live(999, 3), &url);
        assert_eq!(failovers.next_seq.get("k").unwrap().next_seq, 1003);
        failovers.note_next_seq("k", &live(1001, 3), &url);
        assert_eq!(failovers.next_seq.get("k").unwrap().next_seq, 1004);
        // A discontinuity leaving the window of an upstream that writes no
        // discontinuity sequence: later all the same.
        let with_break = live(1002, 3).replace(
            "#EXTINF:2.0,\nb1003",
            "#EXT-X-DISCONTINUITY\n#EXTINF:2.0,\nb1003",
        );
        failovers.note_next_seq("k", &with_break, &url);
        failovers.note_next_seq("k", &live(1010, 3), &url);
        assert_eq!(failovers.next_seq.get("k").unwrap().next_seq, 1013);
        let numbers = ChannelNumbers {
            service: "a".into(),
            numbers: None,
            seen: Mutex::default(),
        };
        numbers.note(&live(1000, 3), &url);
        numbers.note(&live(999, 3), &url);
        let seen = numbers.seen.lock().unwrap().clone().unwrap();
        assert_eq!(seen.next_seq, 1003);
    }

    #[test]
    fn a_refresh_that_lists_the_last_segment_continues_without_a_discontinuity() {
        // The player got b11 last (its number 11) and expects 12.
        let r = Renumber::continuing(Some(12), Some("/b11.ts".into()));
        let url = Url::parse("http://a.example/live.m3u8?expires=9999999999").unwrap();
        let out = r.renumber(&live(9, 5), &url, 3).unwrap();
        assert!(out.contains("#EXT-X-MEDIA-SEQUENCE:9\n"), "{out}");
        assert!(!out.contains("DISCONTINUITY"), "{out}");
        // Not listed: renumbered like a failover.
        let r = Renumber::continuing(Some(12), Some("/gone.ts".into()));
        let out = r.renumber(&live(9, 5), &url, 3).unwrap();
        assert!(out.contains("#EXT-X-DISCONTINUITY\n"), "{out}");
    }

    #[test]
    fn a_token_is_refreshed_late_in_its_lifetime_never_in_its_first_half() {
        let t = |s: u64| std::time::UNIX_EPOCH + Duration::from_secs(s);
        // 1 h: 6 min before (10 %).
        assert!(!refresh_due(t(0), t(3600), t(3600 - 361)));
        assert!(refresh_due(t(0), t(3600), t(3600 - 360)));
        // 60 s: 10 s before.
        assert!(!refresh_due(t(0), t(60), t(49)));
        assert!(refresh_due(t(0), t(60), t(50)));
        // 4 s: after half of it.
        assert!(!refresh_due(t(0), t(4), t(1)));
        assert!(refresh_due(t(0), t(4), t(2)));
        // Already expired.
        assert!(refresh_due(t(10), t(5), t(10)));
    }

    #[test]
    fn expiry_comes_from_query_timestamps_and_jwt_claims() {
        use base64::Engine as _;
        let at = |u: &str| url_expires_at(&Url::parse(u).unwrap());
        let t = |s: u64| Some(std::time::UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at("http://x/a.m3u8?expires=1700000000"), t(1_700_000_000));
        assert_eq!(at("http://x/a.m3u8?e=5&exp=1700000100"), t(1_700_000_100));
        assert_eq!(at("http://x/a.m3u8?token=abc"), None);
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let jwt = format!(
            "{}.{}.sig",
            b64(r#"{"alg":"HS256"}"#),
            b64(r#"{"sub":"x","exp":1700000200}"#)
        );
        assert_eq!(at(&format!("http://x/a.m3u8?t={jwt}")), t(1_700_000_200));
        // Values past any clock are no expiry (they panicked adding to the epoch).
        assert_eq!(at("http://x/a.m3u8?expires=9223372036854775808"), None);
        assert_eq!(at("http://x/a.m3u8?expires=18446744073709551615"), None);
        let huge = format!(
            "{}.{}.sig",
            b64(r#"{"alg":"HS256"}"#),
            b64(r#"{"exp":18446744073709551615}"#)
        );
        assert_eq!(at(&format!("http://x/a.m3u8?t={huge}")), None);
        let resolved = crate::model::ResolvedStream::new(
            Url::parse("http://x/a.m3u8?exp=18446744073709551615").unwrap(),
            Vec::new(),
            Duration::from_secs(60),
        );
        assert_eq!(resolved.valid_for, Duration::from_secs(60));
    }

    #[test]
    fn left_out_segments_keep_their_keys_and_count_their_discontinuities() {
        let sw = Renumber::new(Some(1000));
        let url = Url::parse("http://b.example/live.m3u8").unwrap();
        let body = live(7, 5)
            .replace("#EXTINF:2.0,\nb7.ts", "#EXT-X-KEY:METHOD=AES-128,URI=\"k\"\n#EXTINF:2.0,\nb7.ts")
            .replace("#EXTINF:2.0,\nb8.ts", "#EXT-X-DISCONTINUITY\n#EXT-X-PROGRAM-DATE-TIME:2026-01-01T00:00:00Z\n#EXTINF:2.0,\nb8.ts");
        let out = sw.renumber(&body, &url, 3).unwrap();
        assert!(out.contains("#EXT-X-MEDIA-SEQUENCE:1000\n"), "{out}");
        assert!(out.contains("#EXT-X-KEY:METHOD=AES-128"), "{out}");
        assert!(
            !out.contains("PROGRAM-DATE-TIME") && !out.contains("b8.ts"),
            "{out}"
        );
        // The source's discontinuity before b8 was left out: counted in the sequence.
        assert!(out.contains("#EXT-X-DISCONTINUITY-SEQUENCE:1\n"), "{out}");
        assert_eq!(hls::discontinuities(&out), (1, 2));
    }

    #[test]
    fn the_new_source_continues_the_old_numbering_after_a_discontinuity() {
        let sw = Renumber::new(Some(1000));
        let url = Url::parse("http://b.example/live.m3u8").unwrap();
        // New source at 7..12; live edge 3: b9 becomes 1000, with a discontinuity;
        // b7 and b8 would take 998 and 999, the old source's: they are left out.
        let out = sw.renumber(&live(7, 5), &url, 3).unwrap();
        assert!(out.contains("#EXT-X-MEDIA-SEQUENCE:1000\n"), "{out}");
        assert!(
            out.contains("#EXT-X-MEDIA-SEQUENCE:1000\n#EXT-X-DISCONTINUITY\n#EXTINF:2.0,\nb9.ts"),
            "{out}"
        );
        assert!(!out.contains("b7.ts") && !out.contains("b8.ts"), "{out}");
        assert_eq!(out.matches("#EXT-X-DISCONTINUITY\n").count(), 1, "{out}");
        // The window moves on; the mapping stays.
        let out = sw.renumber(&live(9, 5), &url, 3).unwrap();
        assert!(out.contains("#EXT-X-MEDIA-SEQUENCE:1000\n"), "{out}");
        assert!(
            out.contains("#EXT-X-DISCONTINUITY\n#EXTINF:2.0,\nb9.ts"),
            "{out}"
        );
        // Once the first new segment has left the window, the discontinuity count says so.
        let out = sw.renumber(&live(10, 5), &url, 3).unwrap();
        assert!(out.contains("#EXT-X-MEDIA-SEQUENCE:1001\n"), "{out}");
        assert!(out.contains("#EXT-X-DISCONTINUITY-SEQUENCE:1\n"), "{out}");
        assert!(!out.contains("#EXT-X-DISCONTINUITY\n"), "{out}");
    }

    /// A new source numbered at the top of u64 (malformed, but an upstream's) is
    /// renumbered like any other: its numbers are not added in u64 (they wrapped, a
    /// panic in a debug build).
    #[test]
    fn a_source_numbered_at_the_top_of_u64_is_renumbered_without_wrapping() {
        let sw = Renumber::new(Some(1000));
        let url = Url::parse("http://b.example/live.m3u8").unwrap();
        let body = format!(
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:{}\n\
             #EXTINF:2.0,\nx.ts\n#EXTINF:2.0,\ny.ts\n#EXTINF:2.0,\nz.ts\n",
            u64::MAX
        );
        let out = sw.renumber(&body, &url, 1).unwrap();
        assert!(
            out.contains("#EXT-X-MEDIA-SEQUENCE:1000\n#EXT-X-DISCONTINUITY\n#EXTINF:2.0,\nz.ts"),
            "{out}"
        );
    }
}
