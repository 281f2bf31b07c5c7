//! Continuous MPEG-TS (`/api/stream/{id}.ts`): one shared session per channel.
//!
//! The first viewer starts a session: a task that opens the channel (sources in
//! priority order), follows its media playlist (of a master, the highest-bandwidth
//! variant whose audio is in its own segments: `hls::muxed_variant`), fetches each new segment once through the media cache (so HLS viewers
//! of the same channel share those fetches too; a segment that is a byte range of a
//! larger resource, `EXT-X-BYTERANGE`, only that range; an AES-128 one decrypted:
//! `segment`) and broadcasts the bytes to every viewer. A source whose segments are
//! encrypted otherwise (SAMPLE-AES, DRM) fails at once, for the next source. A source that is plain MPEG-TS rather than HLS is relayed as it comes.
//!
//! - A slow viewer never slows the others: the broadcast keeps a bounded backlog,
//!   and a viewer that falls behind it skips ahead to what is still there (MPEG-TS
//!   demuxers resynchronise on the next packet).
//! - When the current source fails `streams.failover_after` times in a row
//!   (playlist reloads or segments: errors, timeouts, HTML instead of HLS), the
//!   session moves to the next source; the byte stream simply continues. A playlist
//!   reload that finds no answer within the service's `timeout` moves on at once when
//!   there is a next source.
//! - When the followed URL carries a token that expires (`model::url_expires_at`),
//!   the session resolves the channel afresh from the same service shortly before
//!   (`failover::refresh_due`), or at once when the upstream refuses it (401, 403,
//!   410), and follows the new playlist URL from the segment after the last one sent
//!   (matched by path, without query); when it cannot tell, it starts near the live
//!   edge like a failover.
//! - Where segments meet (a loop, an upstream restart, a failover, a refreshed
//!   token, a reconnection), the bytes are made one continuous MPEG-TS (`ts`):
//!   continuity counters go on and timestamps keep going forward.
//! - With no viewer left for `streams.idle_stop`, the task stops and no further
//!   upstream request is made.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::sync::{broadcast, watch};
use url::Url;

use super::failover::{refresh_due, token_refused};
use super::{segment, Engine, StreamError};
use crate::cache::Document;
use crate::error::{Attempt, UpstreamError};
use crate::hls;
use crate::model::{url_expires_at, Headers};
use crate::segmenter::Segmenter;
use crate::services::registry::RegistryError;
use crate::services::Service;
use crate::ts::{self, PACKET as TS_PACKET, SYNC as TS_SYNC};

/// Chunks a viewer may fall behind before it skips ahead.
const BACKLOG: usize = 1024;
/// The most of one segment kept for viewers who join while it is sent; past it, they
/// start with the next segment's bytes as they come.
const SEGMENT_START_MAX: usize = 16 << 20;
/// Longest pause between two looks at whether anyone is still watching.
const IDLE_TICK: Duration = Duration::from_millis(250);

type Ready = Option<Result<(), StreamError>>;

/// How long a segment may take while the channel has another source: three of its
/// target durations, 6 s to 30 s (a segment that comes slower than it plays cannot be
/// played live; `segment_timeout`, 60 s by default, would keep a waiting viewer past
/// [`FIRST_BYTES_WAIT`], and a playing one on a still picture for minutes).
fn segment_deadline(target_duration: f64) -> Duration {
    Duration::from_secs_f64((3.0 * target_duration).clamp(6.0, 30.0))
}

/// How long a `.ts` viewer waits for the session's first bytes before it is answered
/// 504 (a hanging segment fails over after `segment_timeout`; this bounds a source that
/// answers but never sends any): `segment_timeout`, within `FIRST_BYTES_MIN` and this.
pub(super) const FIRST_BYTES_WAIT: Duration = Duration::from_secs(60);
const FIRST_BYTES_MIN: Duration = Duration::from_secs(10);

struct Session {
    tx: broadcast::Sender<Bytes>,
    ready: watch::Receiver<Ready>,
    /// What a viewer joining midway gets before the broadcast: the init section and
    /// the current segment from its start. Every broadcast is sent under its lock,
    /// which `join` subscribes under: a joiner gets each chunk once, kept or received.
    start: Mutex<Start>,
    /// Relaying a source whose bytes are plain MPEG-TS (not following a playlist).
    relays_mpeg_ts: AtomicBool,
    /// The media type of the stream when it is neither MPEG-TS nor fMP4 HLS: a relayed
    /// source's (a progressive MP4, Matroska, an audio stream), told by its first bytes
    /// or its `Content-Type`; `None` while the stream is MPEG-TS.
    relayed_type: Mutex<Option<&'static str>>,
    /// The source being followed (service, its channel id): what a viewer given up
    /// on after `FIRST_BYTES_WAIT` is told was tried.
    following: Mutex<Option<(String, String)>>,
    /// When the session began, and its last broadcast since then (ms; 0: none yet).
    epoch: Instant,
    last_sent_ms: AtomicU64,
}

impl Session {
    /// The type a viewer of this session is answered with, when it is not MPEG-TS:
    /// fMP4 when an init section is kept, else the relayed media's type (`None`: TS,
    /// or not known yet).
    fn media_type(&self) -> Option<&'static str> {
        if self
            .start
            .lock()
            .expect("start lock is never poisoned")
            .init
            .is_some()
        {
            return Some("video/mp4");
        }
        *self
            .relayed_type
            .lock()
            .expect("type lock is never poisoned")
    }

    /// How long since the session's last bytes; zero before its first.
    fn silent_for(&self) -> Duration {
        match self.last_sent_ms.load(Ordering::Relaxed) {
            0 => Duration::ZERO,
            at => self
                .epoch
                .elapsed()
                .saturating_sub(Duration::from_millis(at)),
        }
    }
}

/// A running session that has sent nothing for this long is stalled (its sources
/// fail or froze): a viewer joining it waits for new bytes, as one starting a session
/// waits for its first, instead of a 200 with nothing after it. A live source sends a
/// segment every target duration (2 to 10 s).
const JOIN_STALLED: Duration = Duration::from_secs(15);

/// A relayed MPEG-TS source is judged over windows this long: one that sent less
/// than [`PACE_LEAST`] of the window's length in media (its own PCRs' time) is slower
/// than it plays, a failure like a failed segment: its viewers would stall over and
/// over. Long enough that a source sending its media in bursts (a panel relaying
/// segments) is not judged by a gap between two.
const PACE_WINDOW: Duration = Duration::from_secs(15);
/// The least media time per wall-clock time a relayed source must send (2/3).
const PACE_LEAST: (u32, u32) = (2, 3);

/// Whether a relayed MPEG-TS source keeps up with real time, over its connections.
struct Pace {
    since: Instant,
    /// Media ticks read (`Continuity::media_progress`) at `since`.
    ticks: u64,
    /// PCRs read before the source was first opened.
    pcrs: u64,
}

impl Pace {
    fn new((ticks, pcrs): (u64, u64)) -> Self {
        Self {
            since: Instant::now(),
            ticks,
            pcrs,
        }
    }

    /// Once per window: `Ok(())` when the window's media kept up with it, else the
    /// media time sent and the window's length. `None` inside a window, and while the
    /// source has sent no PCR (nothing to judge by: another kind of stream).
    fn judge(&mut self, (ticks, pcrs): (u64, u64)) -> Option<Result<(), (Duration, Duration)>> {
        let window = self.since.elapsed();
        if window < PACE_WINDOW {
            return None;
        }
        let media = Duration::from_micros(ticks.saturating_sub(self.ticks).saturating_mul(100) / 9);
        self.since = Instant::now();
        self.ticks = ticks;
        if pcrs == self.pcrs {
            return None;
        }
        let (num, den) = PACE_LEAST;
        Some(if media * den >= window * num {
            Ok(())
        } else {
            Err((media, window))
        })
    }
}

/// What a viewer joining a running session is sent first.
#[derive(Default)]
struct Start {
    /// The init section of the fMP4 stream being sent (`EXT-X-MAP`); `None` while the
    /// stream is MPEG-TS.
    init: Option<Bytes>,
    /// The chunks of the last segments sent (the one being sent last), each from its
    /// first: a joiner starts where a segment starts (its PAT and PMT, a keyframe),
    /// not in the middle of one, which a player cannot decode until the next
    /// segment's tables come; and with as many segments as a viewer who starts the
    /// session gets at once (`live_edge_segments`), which a player probing the stream
    /// (ffmpeg, Plex) reads at once instead of waiting for them in real time. It also
    /// plays the last segments of a finished playlist joined as it ends.
    segments: VecDeque<Vec<Bytes>>,
    /// Bytes in `segments`, at most `SEGMENT_START_MAX`.
    bytes: usize,
    /// The segments kept: `live_edge_segments`.
    most: usize,
    /// Whether segments are kept: following a playlist, or relaying MPEG-TS past its
    /// first key frame; and the current segment within `SEGMENT_START_MAX`.
    keep: bool,
    /// Relaying a plain MPEG-TS stream (no segments of its own): finds its key frames,
    /// where kept segments start, each after the PAT and PMT (`RELAY_CUT` apart or
    /// more), so that a joiner starts on a picture, not mid-GOP.
    cutter: Option<Segmenter>,
    /// The offset, in the relayed stream, of the next chunk sent.
    offset: u64,
}

/// A relayed MPEG-TS stream's kept segments start at the first key frame after this
/// long (each is about one GOP, or more when key frames come oftener).
const RELAY_CUT: Duration = Duration::from_secs(1);
/// Segments of a relayed stream kept for joiners at most: the one being sent (from
/// the last key frame: a joiner starts on a picture, at most a GOP behind).
const RELAY_KEPT: usize = 1;

impl Start {
    fn new(most: usize) -> Self {
        Self {
            most: most.max(1),
            ..Self::default()
        }
    }

    /// What a joiner is sent before the broadcast, in order.
    fn for_joiner(&self) -> VecDeque<Bytes> {
        self.init
            .iter()
            .chain(self.segments.iter().flatten())
            .cloned()
            .collect()
    }

    /// Relaying from now on (`Task::relay`): MPEG-TS (`ts`) has its key frames found
    /// for joiners; anything else keeps nothing (a joiner gets it from the middle).
    fn relaying(&mut self, ts: bool) {
        self.new_segment(false);
        self.cutter = ts.then(|| Segmenter::key_starts(RELAY_CUT));
        self.offset = 0;
    }

    /// Drops the oldest kept segment.
    fn drop_oldest(&mut self) {
        if let Some(old) = self.segments.pop_front() {
            self.bytes -= old.iter().map(Bytes::len).sum::<usize>();
        }
    }

    /// A segment begins (`keep`: and is kept; if not, none is).
    fn new_segment(&mut self, keep: bool) {
        self.keep = keep;
        if !keep {
            self.segments.clear();
            self.bytes = 0;
            return;
        }
        self.segments.push_back(Vec::new());
        let most = if self.cutter.is_some() {
            self.most.min(RELAY_KEPT)
        } else {
            self.most
        };
        while self.segments.len() > most {
            self.drop_oldest();
        }
    }

    /// `chunk` is being sent: kept for joiners while the segments fit.
    fn sent(&mut self, chunk: &Bytes) {
        let Some(cutter) = &mut self.cutter else {
            return self.keep_chunk(chunk);
        };
        let from = self.offset;
        self.offset += chunk.len() as u64;
        cutter.push(chunk, &mut Vec::new());
        let starts = cutter.take_starts();
        if cutter.not_ts() {
            self.cutter = None;
            return self.new_segment(false);
        }
        // Each key frame starts a segment, its tables first.
        let mut rest = chunk.clone();
        let mut rest_from = from;
        for (at, tables) in starts {
            // A start inside a packet an earlier chunk began is taken at this chunk.
            let at = at.clamp(rest_from, self.offset);
            let before = rest.split_to(usize::try_from(at - rest_from).unwrap_or(rest.len()));
            self.keep_chunk(&before);
            self.new_segment(true);
            self.keep_chunk(&tables);
            rest_from = at;
        }
        self.keep_chunk(&rest);
    }

    /// `chunk`, sent, is kept as the current segment's while the segments fit.
    fn keep_chunk(&mut self, chunk: &Bytes) {
        if !self.keep || chunk.is_empty() {
            return;
        }
        self.bytes += chunk.len();
        while self.bytes > SEGMENT_START_MAX && self.segments.len() > 1 {
            self.drop_oldest();
        }
        match self.segments.back_mut() {
            Some(current) if self.bytes <= SEGMENT_START_MAX => current.push(chunk.clone()),
            // The current segment alone is too large: none is kept until the next.
            _ => self.new_segment(false),
        }
    }
}

/// A viewer's place in a session: what `viewer_stream` reads.
pub struct Joined {
    rx: broadcast::Receiver<Bytes>,
    /// What was sent before the viewer joined that it needs first: the init section,
    /// the current segment's chunks so far.
    start: VecDeque<Bytes>,
    /// The stream's media type when it is not MPEG-TS: `video/mp4` for an fMP4 source
    /// (as its first bytes said), a relayed source's own type otherwise.
    not_ts: Option<&'static str>,
}

impl Joined {
    /// The response's media type: `video/MP2T`, `video/mp4` for an fMP4 source, or a
    /// relayed source's type (a progressive MP4 is no MPEG-TS either).
    pub fn content_type(&self) -> &'static str {
        self.not_ts.unwrap_or("video/MP2T")
    }

    /// The stream is not MPEG-TS (fMP4, or other media relayed as it came).
    pub fn is_not_ts(&self) -> bool {
        self.not_ts.is_some()
    }

    /// The next chunk (the init section and the current segment's start first);
    /// `Err(n)` when this reader fell behind and `n` chunks were skipped; `None` once
    /// the session ended.
    pub async fn next(&mut self) -> Option<Result<Bytes, u64>> {
        if let Some(first) = self.start.pop_front() {
            return Some(Ok(first));
        }
        match self.rx.recv().await {
            Ok(chunk) => Some(Ok(chunk)),
            Err(broadcast::error::RecvError::Lagged(n)) => Some(Err(n)),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

/// The running sessions, by channel (and service filter), and the HLS players seen
/// lately (`HlsViewers`): together, who is watching what.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Arc<Session>>>,
    pub hls: HlsViewers,
    /// HLS cut from sessions of channels whose source is plain MPEG-TS.
    pub packaged: super::packaged::Packagers,
    /// Sessions relaying plain MPEG-TS now: while none does, `relays_mpeg_ts` answers
    /// without a lock (every `.m3u8` request asks it).
    relaying_mpeg_ts: std::sync::atomic::AtomicUsize,
}

/// How long an HLS player counts as watching after its last playlist fetch. Players
/// reload a live media playlist about every target duration (2 to 10 s).
pub(super) const HLS_IDLE: Duration = Duration::from_secs(30);

/// HLS players watching, by channel. An HLS viewer holds no connection: one counts
/// (once per client address) while it keeps fetching the channel's playlists, and
/// for `HLS_IDLE` after.
pub struct HlsViewers(moka::sync::Cache<(String, IpAddr), ()>);

impl Default for HlsViewers {
    fn default() -> Self {
        Self(
            moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(HLS_IDLE)
                .build(),
        )
    }
}

impl HlsViewers {
    /// Client `from` fetched a playlist of channel `channel` (a lineup id or number).
    pub fn seen(&self, channel: &str, from: IpAddr) {
        if !channel.is_empty() {
            self.0.insert((channel.to_string(), from), ());
        }
    }

    /// Players watching each channel, by the channel as the link names it.
    pub fn counts(&self) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        for (key, ()) in self.0.iter() {
            *out.entry(key.0.clone()).or_default() += 1;
        }
        out
    }
}

impl Sessions {
    /// Joins (or starts) the session of channel `id`; returns once the session has
    /// a working source, or the error of every source failing.
    pub async fn join(
        self: &Arc<Self>,
        engine: &Engine,
        id: &str,
        only: Option<&str>,
    ) -> Result<Joined, StreamError> {
        let key = super::packaged::session_key(id, only);
        let (mut rx, mut start, had_init, mut ready, session) = {
            let mut map = self.map.lock().expect("sessions lock is never poisoned");
            let session = match map.get(&key) {
                Some(s) => s.clone(),
                None => {
                    let (tx, _) = broadcast::channel(BACKLOG);
                    let (ready_tx, ready) = watch::channel(None);
                    let session = Arc::new(Session {
                        tx,
                        ready,
                        start: Mutex::new(Start::new(engine.settings.live_edge_segments)),
                        relays_mpeg_ts: AtomicBool::new(false),
                        relayed_type: Mutex::new(None),
                        following: Mutex::new(None),
                        epoch: Instant::now(),
                        last_sent_ms: AtomicU64::new(0),
                    });
                    map.insert(key.clone(), session.clone());
                    let task = Task {
                        sessions: self.clone(),
                        session: session.clone(),
                        key,
                        engine: engine.clone(),
                        id: id.to_string(),
                        only: only.map(str::to_string),
                        idle_since: None,
                        ready: ready_tx,
                        delivered: AtomicU64::new(0),
                        continuity: ts::Continuity::default(),
                        keys: HashMap::new(),
                        sent_map: None,
                        sent_last: None,
                        warned_silent: AtomicBool::new(false),
                    };
                    tokio::spawn(task.run());
                    session
                }
            };
            // Subscribed under the lock: the task cannot decide it is idle in between;
            // and under the start's: the viewer gets each chunk once, as sent before
            // it joined or in the broadcast.
            let start = session.start.lock().expect("start lock is never poisoned");
            let rx = session.tx.subscribe();
            let sent = start.for_joiner();
            let had_init = start.init.is_some();
            drop(start);
            (rx, sent, had_init, session.ready.clone(), session)
        };
        // Answered with the first bytes; a source that loads but never sends any (a
        // live playlist without segments, empty segments) is not waited for past
        // FIRST_BYTES_WAIT (the session goes on for the viewers that stay).
        let wait = engine
            .media
            .segment_timeout()
            .clamp(FIRST_BYTES_MIN, FIRST_BYTES_WAIT);
        let waited = async {
            let ready = match ready.wait_for(Option::is_some).await {
                Ok(r) => r.clone(),
                Err(_) => Some(Err(StreamError::SessionGone)),
            };
            // A stalled session (its sources failing) answers with new bytes only:
            // what it sent before is stale, and a 200 with nothing after it would
            // hold the viewer (a tuner, a recorder) on a still picture.
            if matches!(ready, Some(Ok(()))) && session.silent_for() >= JOIN_STALLED {
                // The init section, first of what was kept (see `for_joiner`).
                let init = start.pop_front().filter(|_| had_init);
                start.clear();
                loop {
                    match rx.recv().await {
                        Ok(chunk) => {
                            // The init section again (a new source's) stands for the
                            // one kept.
                            start.extend(init.filter(|i| *i != chunk));
                            start.push_back(chunk);
                            break;
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => {
                            return Some(Err(StreamError::SessionGone))
                        }
                    }
                }
            }
            ready
        };
        let outcome = match tokio::time::timeout(wait, waited).await {
            Ok(r) => r,
            Err(_) => {
                let following = session
                    .following
                    .lock()
                    .expect("following lock is never poisoned")
                    .clone();
                Some(Err(match following {
                    Some(source) => failed_source(
                        id,
                        source,
                        format!(
                            "opened, but sent no media within {} s (a source that lists \
                             segments it does not send, or sends them slower than they \
                             play)",
                            wait.as_secs()
                        ),
                        true,
                    ),
                    None => StreamError::Upstream(UpstreamError::Timeout(wait)),
                }))
            }
        };
        match outcome {
            Some(Err(e)) => Err(e),
            _ => Ok(Joined {
                rx,
                start,
                not_ts: session.media_type(),
            }),
        }
    }

    /// Viewers of each channel, by the channel as it was asked for (a lineup id, or a
    /// number for `/auto/v{n}`): those reading a running `.ts` session (sessions of one
    /// channel pinned to different services add up), plus the HLS players seen lately.
    pub fn viewers(&self) -> HashMap<String, usize> {
        let mut out = self.hls.counts();
        // A packager reads a session for its HLS players (counted above), not as one.
        let packagers = self.packaged.keys();
        let map = self.map.lock().expect("sessions lock is never poisoned");
        for (key, session) in map.iter() {
            let id = key.split_once('\n').map_or(key.as_str(), |(id, _)| id);
            let readers = session.tx.receiver_count();
            let viewers = readers.saturating_sub(usize::from(packagers.contains(key)));
            *out.entry(id.to_string()).or_default() += viewers;
        }
        out
    }

    /// The error of channel `id`'s session (service filter `only`) failing for `why`:
    /// naming the source it follows, in `detail` as a failed open lists its sources,
    /// when it follows one.
    pub fn failed(&self, id: &str, only: Option<&str>, why: String) -> StreamError {
        let following = self
            .map
            .lock()
            .expect("sessions lock is never poisoned")
            .get(&super::packaged::session_key(id, only))
            .and_then(|s| {
                s.following
                    .lock()
                    .expect("following lock is never poisoned")
                    .clone()
            });
        match following {
            Some(source) => failed_source(id, source, why, false),
            None => StreamError::Upstream(UpstreamError::Invalid(why)),
        }
    }

    /// Whether the session of channel `id` (and service filter) runs, relaying a
    /// plain MPEG-TS source: an `.m3u8` is cut from it, without asking the upstream.
    pub fn relays_mpeg_ts(&self, id: &str, only: Option<&str>) -> bool {
        if self.relaying_mpeg_ts.load(Ordering::Relaxed) == 0 {
            return false;
        }
        self.map
            .lock()
            .expect("sessions lock is never poisoned")
            .get(&super::packaged::session_key(id, only))
            .is_some_and(|s| s.relays_mpeg_ts.load(Ordering::Relaxed))
    }

    /// The media type of channel `id`'s running session (service filter `only`), as a
    /// viewer joining it would be answered; `None` when none runs or its first bytes
    /// have not told yet whether it is MPEG-TS.
    pub fn content_type_of(&self, id: &str, only: Option<&str>) -> Option<&'static str> {
        let session = self
            .map
            .lock()
            .expect("sessions lock is never poisoned")
            .get(&super::packaged::session_key(id, only))?
            .clone();
        session
            .media_type()
            .or_else(|| session.ready.borrow().is_some().then_some("video/MP2T"))
    }

    /// How many sessions are running.
    pub fn active(&self) -> usize {
        self.map
            .lock()
            .expect("sessions lock is never poisoned")
            .len()
    }
}

/// A viewer's byte stream: the broadcast, skipping ahead when it fell behind. The
/// viewer counts in `freesky_active_viewers{channel}` until the stream is dropped.
pub fn viewer_stream(
    joined: Joined,
    channel: &str,
) -> impl futures::Stream<Item = Result<Bytes, std::convert::Infallible>> {
    let viewer = crate::metrics::get().viewer(channel);
    let Joined { rx, start, .. } = joined;
    futures::stream::iter(start.into_iter().map(Ok)).chain(futures::stream::unfold(
        (rx, viewer),
        |(mut rx, viewer)| async move {
            loop {
                match rx.recv().await {
                    Ok(chunk) => return Some((Ok(chunk), (rx, viewer))),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::debug!(skipped = n, "slow .ts viewer skipped ahead");
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        },
    ))
}

/// The source a session is following.
struct Source {
    service_name: String,
    service: Arc<dyn Service>,
    /// The service's own id of the channel, to release the stream when done with it.
    channel_id: String,
    headers: Headers,
    what: Follow,
    /// When the resolved or followed URL's token expires, if it says.
    expires: Option<SystemTime>,
    /// When it was resolved: the start of the token's lifetime.
    since: SystemTime,
}

#[derive(Clone)]
enum Follow {
    /// A media playlist to poll.
    Playlist(Url),
    /// A plain MPEG-TS (or other media) URL to relay; true when its first bytes
    /// were MPEG-TS.
    Bytes(Url, bool),
}

/// What a segment's first bytes are when they are no media: an HTML page or an
/// M3U playlist.
fn not_media(first: &[u8]) -> Option<&'static str> {
    if crate::upstream::looks_like_html(first) {
        return Some("an HTML page");
    }
    let start = first
        .strip_prefix(b"\xEF\xBB\xBF")
        .unwrap_or(first)
        .trim_ascii_start();
    start.starts_with(b"#EXTM3U").then_some("a playlist")
}

/// A live playlist that lists no new segment for this many target durations (within
/// `STALE_MIN` and `STALE_MAX` seconds), while its segments failed and none came, has
/// stopped: the session tries the next source.
const STALE_AFTER: f64 = 3.0;
const STALE_MIN: f64 = 6.0;
const STALE_MAX: f64 = 60.0;

/// A live playlist that has sent and then lists no new segment for this many target
/// durations (within `FROZEN_MIN` and `STALE_MAX` seconds) has frozen (an encoder
/// that died behind a playlist still served): the session tries the channel's next
/// source, when it has one. Alone, it is waited for (a reopen would send its window
/// again).
const FROZEN_AFTER: f64 = 5.0;
const FROZEN_MIN: f64 = 10.0;

/// Why following a source stopped.
enum Stop {
    /// No viewer left: the session is over.
    Idle,
    /// The stream ended (a finished playlist, or the relay ended).
    Ended,
    /// The source failed too often: try the next one.
    Failed(String),
}

struct Task {
    sessions: Arc<Sessions>,
    session: Arc<Session>,
    key: String,
    engine: Engine,
    id: String,
    only: Option<String>,
    idle_since: Option<Instant>,
    /// Told once a source opened (viewers then get their 200), or why none did.
    ready: watch::Sender<Ready>,
    /// Chunks sent to the viewers so far.
    delivered: AtomicU64,
    /// Whether the session said that its source's audio is a separate rendition (once).
    warned_silent: AtomicBool,
    /// The init section (`EXT-X-MAP`) last sent from the current source.
    sent_map: Option<hls::Map>,
    /// Makes the segments' joins continuous MPEG-TS (counters, timestamps) across
    /// segments, sources and reconnections.
    continuity: ts::Continuity,
    /// AES-128 keys fetched, by service and URL (at most `MAX_KEYS`): one fetch per
    /// key however many segments it opens.
    keys: HashMap<(String, Url), [u8; 16]>,
    /// The source (service, its channel id) that sent last and the path (no query) of
    /// its last segment: that source opened again (the others failed meanwhile,
    /// sending nothing) goes on after it while its playlist lists it, rather than
    /// sending its window again. Another source that sends replaces it: a source
    /// opened after another played starts near its live edge.
    sent_last: Option<(String, String, String)>,
}

/// Keys a session remembers (a rotating upstream names a new one every few segments).
const MAX_KEYS: usize = 16;

/// The longest pause between two tries of a session whose sources fail before sending
/// anything: each such round doubles the pause from 1 s, so a channel whose segments
/// all fail costs its upstream a few requests a minute, not thousands a second.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(30);

/// Mid-stream, with every source failing to open, the session tries again after 2 s,
/// then doubling up to `MAX_RETRY_PAUSE`, for this long; then it ends, its viewers'
/// streams with it (a player reconnects when it wants). A dead channel watched for
/// hours costs its service a handful of failures, not one every 2 s (which would open
/// the service's circuit for all its channels).
const MIDSTREAM_RETRY_FOR: Duration = Duration::from_secs(120);

impl Task {
    fn announced(&self) -> bool {
        self.ready.borrow().is_some()
    }

    /// Ends the session before it opened: its viewers get `e`.
    fn give_up(&self, e: StreamError) {
        self.remove();
        self.ready.send_replace(Some(Err(e)));
    }

    /// Ends a session none of whose sources sent a byte: viewers still waiting for
    /// their answer get every source's error (a 502 naming each); none was answered
    /// yet, as the answer waits for the first bytes.
    fn end_silent(&self, tried: Vec<Attempt>) {
        if self.announced() {
            self.remove();
        } else {
            self.give_up(StreamError::Registry(RegistryError::AllSourcesFailed {
                channel: self.id.clone(),
                tried,
            }));
        }
    }

    async fn run(mut self) {
        let mut skip: Vec<String> = Vec::new();
        // Rounds in a row in which the source sent nothing before it failed.
        let mut empty_rounds = 0u32;
        // Sources that opened and failed before the session sent its first byte (never
        // cleared, unlike `skip`), and why: the viewers' error when none sends any.
        let mut tried_silent: Vec<String> = Vec::new();
        let mut silent_why: Vec<Attempt> = Vec::new();
        // Since when no source opens mid-stream, and the rounds so far.
        let mut failing: Option<(Instant, u32)> = None;
        loop {
            if self.idle() {
                return;
            }
            // Sources that open but send nothing (a frozen playlist, segments that
            // fail) end the stream as surely as sources that do not open: its viewers
            // are not held on a still picture for ever.
            if self.session.silent_for() >= MIDSTREAM_RETRY_FOR {
                tracing::warn!(channel = %self.id, "no source of the channel sent anything for {} s; the stream ends", MIDSTREAM_RETRY_FOR.as_secs());
                self.remove();
                return;
            }
            let opened = self.open(&skip, None).await;
            if opened.is_ok() {
                failing = None;
            }
            let mut source = match opened {
                Ok(s) => s,
                Err(e)
                    if self.delivered.load(Ordering::Relaxed) == 0 && !tried_silent.is_empty() =>
                {
                    // Nothing was ever sent: the sources that opened failed, the others
                    // do not open. The viewers get every source's error.
                    tracing::warn!(channel = %self.id, error = %e, "no source of the channel sent anything; the stream ends");
                    let mut tried = std::mem::take(&mut silent_why);
                    match e {
                        StreamError::Registry(RegistryError::AllSourcesFailed {
                            tried: more,
                            ..
                        }) => tried.extend(more),
                        e => tried.push(Attempt {
                            service: String::new(),
                            channel_id: self.id.clone(),
                            error: e.to_string(),
                            timeout: false,
                            unlisted: false,
                        }),
                    }
                    self.end_silent(tried);
                    return;
                }
                Err(e) if !self.announced() => {
                    self.give_up(e);
                    return;
                }
                Err(e)
                    if self
                        .only
                        .as_deref()
                        .is_some_and(|s| !self.engine.registry.is_enabled(s)) =>
                {
                    // Pinned to a service disabled (or removed) meanwhile: nothing will
                    // play, so the stream ends rather than holding its viewers.
                    tracing::info!(channel = %self.id, error = %e, "the stream's service was disabled; the stream ends");
                    self.remove();
                    return;
                }
                Err(e) => {
                    // Mid-stream, every source failed: try again, less and less often,
                    // for a while.
                    let (since, rounds) = failing.get_or_insert((Instant::now(), 0));
                    if since.elapsed() >= MIDSTREAM_RETRY_FOR {
                        tracing::warn!(channel = %self.id, error = %e, "no source of the channel opened for {} s; the stream ends", MIDSTREAM_RETRY_FOR.as_secs());
                        self.remove();
                        return;
                    }
                    let pause = Duration::from_secs(2)
                        .saturating_mul(1 << (*rounds).min(4))
                        .min(MAX_RETRY_PAUSE);
                    *rounds += 1;
                    tracing::warn!(channel = %self.id, error = %e, "no source works; retrying in {} s", pause.as_secs());
                    skip.clear();
                    if self.pause(pause).await {
                        return;
                    }
                    continue;
                }
            };
            // Announced (its viewers answered 200) with the first bytes sent, in `send`.
            tracing::info!(channel = %self.id, service = %source.service_name, "ts session following a source");
            *self
                .session
                .following
                .lock()
                .expect("following lock is never poisoned") =
                Some((source.service_name.clone(), source.channel_id.clone()));
            let sent_before = self.delivered.load(Ordering::Relaxed);
            let stop = match source.what.clone() {
                Follow::Playlist(url) => self.follow(&mut source, url).await,
                Follow::Bytes(url, mpeg_ts) => {
                    // An `.m3u8` of the channel is cut from this session meanwhile.
                    self.session
                        .relays_mpeg_ts
                        .store(mpeg_ts, Ordering::Relaxed);
                    let relaying = &self.sessions.relaying_mpeg_ts;
                    if mpeg_ts {
                        relaying.fetch_add(1, Ordering::Relaxed);
                    }
                    let stop = self.relay(&source, &url, mpeg_ts).await;
                    if mpeg_ts {
                        self.sessions
                            .relaying_mpeg_ts
                            .fetch_sub(1, Ordering::Relaxed);
                    }
                    self.session.relays_mpeg_ts.store(false, Ordering::Relaxed);
                    stop
                }
            };
            // Whatever the reason, this session is done with the source.
            self.engine
                .registry
                .release(&source.service_name, &source.channel_id)
                .await;
            // A source that ended before the session sent anything failed, as far as
            // its viewers go: the next source is tried.
            let stop = match stop {
                Stop::Ended if self.delivered.load(Ordering::Relaxed) == 0 => {
                    Stop::Failed("its stream ended without sending anything".into())
                }
                stop => stop,
            };
            match stop {
                Stop::Idle => return,
                Stop::Ended => {
                    self.remove();
                    return;
                }
                Stop::Failed(why) => {
                    // A source given up: one failure in its service's status.
                    self.engine
                        .registry
                        .record_stream(&source.service_name, Err(why.clone()));
                    let sent_nothing = self.delivered.load(Ordering::Relaxed) == sent_before;
                    let silent = self.delivered.load(Ordering::Relaxed) == 0;
                    // One line per source and reason: a source tried twice for the
                    // same reason is listed once.
                    let listed = silent_why
                        .iter()
                        .any(|a| a.service == source.service_name && a.error == why);
                    if silent && !listed {
                        silent_why.push(Attempt {
                            service: source.service_name.clone(),
                            channel_id: source.channel_id.clone(),
                            error: why.clone(),
                            timeout: false,
                            unlisted: false,
                        });
                    }
                    if silent && tried_silent.contains(&source.service_name) {
                        // Every source was tried and none sent a byte: the session ends
                        // (its viewers get every source's error) rather than trying for
                        // ever.
                        tracing::warn!(channel = %self.id, service = %source.service_name, error = %why, "no source of the channel sent anything; the stream ends");
                        self.end_silent(std::mem::take(&mut silent_why));
                        return;
                    }
                    if silent {
                        tried_silent.push(source.service_name.clone());
                    }
                    crate::metrics::get().failover(&self.id);
                    tracing::warn!(channel = %self.id, service = %source.service_name, error = %why, "source failed during playback; failing over");
                    if !skip.contains(&source.service_name) {
                        skip.push(source.service_name);
                    }
                    if sent_nothing {
                        empty_rounds += 1;
                        let pause = Duration::from_secs(1)
                            .saturating_mul(1 << (empty_rounds - 1).min(5))
                            .min(MAX_RETRY_PAUSE);
                        if self.pause(pause).await {
                            return;
                        }
                    } else {
                        empty_rounds = 0;
                    }
                }
            }
        }
    }

    /// Whether the channel has a source of another service than `service` to fail
    /// over to (never for a session pinned to one service).
    fn has_other_source(&self, service: &str) -> bool {
        self.only.is_none()
            && self.engine.registry.last_lineup().is_some_and(|l| {
                l.get(&self.id)
                    .is_some_and(|c| c.sources.iter().any(|s| *s.service != *service))
            })
    }

    /// Opens the channel with the first working source not in `skip`; or, to
    /// `refresh` a token, resolves it afresh from that service.
    async fn open(&self, skip: &[String], refresh: Option<&str>) -> Result<Source, StreamError> {
        let media = &self.engine.media;
        let limit = self.engine.settings.max_body_bytes;
        let since = SystemTime::now();
        let attempt = |src: crate::services::registry::SourceCtx| async move {
            let r = &src.resolved;
            let doc = media
                .document_to_play(&*src.service, &src.service_name, &r.url, &r.headers, limit)
                .await?;
            let what = match &*doc {
                Document::Media { url, mpeg_ts } => Follow::Bytes(url.clone(), *mpeg_ts),
                Document::Playlist { url, body } if hls::is_master(body) => {
                    let (variant, silent) = hls::muxed_variant(body, url).ok_or_else(|| {
                        UpstreamError::Invalid("the master playlist lists no variant".into())
                    })?;
                    if silent && !self.warned_silent.swap(true, Ordering::Relaxed) {
                        tracing::warn!(channel = %self.id, service = %src.service_name, "every variant of the master playlist takes its audio from a separate rendition, which a .ts stream cannot carry: it has no sound");
                    }
                    Follow::Playlist(variant)
                }
                Document::Playlist { url, .. } => Follow::Playlist(url.clone()),
            };
            let followed = match &what {
                Follow::Playlist(u) | Follow::Bytes(u, _) => url_expires_at(u),
            };
            let expires = url_expires_at(&r.url).into_iter().chain(followed).min();
            Ok(Source {
                service_name: src.service_name,
                service: src.service,
                channel_id: src.channel_id,
                headers: r.headers.clone(),
                what,
                expires,
                since,
            })
        };
        let registry = &self.engine.registry;
        match refresh {
            Some(service) => Ok(registry.reopen(&self.id, service, attempt).await?),
            None => Ok(registry
                .open_except(&self.id, self.only.as_deref(), skip, attempt)
                .await?),
        }
    }

    /// Resolves `src` afresh when its token is due (or was refused); on success, `src`
    /// and `url` become the new ones and true is returned. A failure is logged and
    /// retried a second later; until the token expires the old URL keeps playing.
    async fn refresh(
        &self,
        src: &mut Source,
        url: &mut Url,
        refused: bool,
        retry_at: &mut Option<Instant>,
    ) -> bool {
        let due = src
            .expires
            .is_some_and(|exp| refresh_due(src.since, exp, SystemTime::now()));
        if !(due || refused) || retry_at.is_some_and(|at| Instant::now() < at) {
            return false;
        }
        match self.open(&[], Some(&src.service_name)).await {
            Ok(Source {
                what: Follow::Playlist(fresh),
                service,
                channel_id,
                headers,
                expires,
                since,
                ..
            }) => {
                tracing::info!(channel = %self.id, service = %src.service_name, refused, "ts session refreshed the upstream token");
                *retry_at = None;
                src.service = service;
                src.channel_id = channel_id;
                src.headers = headers;
                src.expires = expires;
                src.since = since;
                *url = fresh;
                true
            }
            Ok(_) => {
                tracing::warn!(channel = %self.id, service = %src.service_name, "token refresh answered media, not a playlist; keeping the old URL");
                *retry_at = Some(Instant::now() + Duration::from_secs(1));
                false
            }
            Err(e) => {
                tracing::warn!(channel = %self.id, service = %src.service_name, error = %e, "token refresh failed; retrying");
                *retry_at = Some(Instant::now() + Duration::from_secs(1));
                false
            }
        }
    }

    /// Polls the media playlist and sends each new segment once; refreshes the URL's
    /// token when due.
    async fn follow(&mut self, src: &mut Source, mut url: Url) -> Stop {
        // A new source sends its init section again, whatever the last one sent; and
        // one without (MPEG-TS after fMP4) leaves no init for viewers who join now.
        self.sent_map = None;
        self.set_init(None, true);
        self.set_relayed_type(None);
        let threshold = self.engine.settings.failover_after;
        let mut failures = 0u32;
        let mut next_seq: Option<u64> = None;
        // The path (no query) of the last segment sent: where a refreshed URL, or this
        // source opened again, resumes.
        let mut last_path: Option<String> = self
            .sent_last
            .as_ref()
            .filter(|(service, channel, _)| {
                *service == src.service_name && *channel == src.channel_id
            })
            .map(|(_, _, path)| path.clone());
        let mut refused = false;
        // The last reload found no answer within the service's `timeout`.
        let mut timed_out = false;
        let mut retry_at = None;
        let mut resume = last_path.is_some();
        // The first sequence number of a playlist numbered far below what was sent,
        // seen at the last poll: a restart is followed once a second poll confirms it
        // (two out-of-step origins behind one name would else be followed by turns).
        let mut restart_seen: Option<u64> = None;
        // When the live playlist last listed a segment not seen before: one that lists
        // none for `STALE_AFTER` target durations, while its segments failed and none
        // came from it, is a source that stopped (a frozen list whose segments fail
        // would else be polled until the first bytes' bound, the next source untried).
        // A list that has listed nothing yet (an upstream starting on demand) is waited
        // for, as before. One that has sent and lists nothing new for `FROZEN_AFTER`
        // target durations has frozen: the next source plays when the channel has one;
        // alone, it is waited for (a live encoder may pause).
        let mut last_new = Instant::now();
        // A source opened again has sent before.
        let mut sent_any = resume;
        // The last segment's error: why a finished playlist that sent nothing failed.
        let mut last_error: Option<String> = None;
        loop {
            if self.idle() {
                return Stop::Idle;
            }
            if let Some(stop) = self.disabled(src) {
                return stop;
            }
            if self.refresh(src, &mut url, refused, &mut retry_at).await {
                resume = true;
            }
            refused = false;
            let info = self
                .engine
                .media
                .document(
                    &*src.service,
                    &src.service_name,
                    &url,
                    &src.headers,
                    self.engine.settings.max_body_bytes,
                )
                .await
                .map_err(|e| {
                    refused = token_refused(&e);
                    timed_out = e.is_timeout();
                    e.to_string()
                })
                .and_then(|doc| match &*doc {
                    Document::Playlist { url, body } => hls::media_info(body, url),
                    Document::Media { .. } => Err("the media playlist became media".into()),
                });
            let info = match info {
                Ok(info) => info,
                Err(why) => {
                    self.engine
                        .registry
                        .record_stream(&src.service_name, Err(why.clone()));
                    failures += 1;
                    // A reload that hung for the whole `timeout` has already kept the
                    // viewers longer than a player's buffer lasts: with another source
                    // to play, waiting for `failover_after` of them would freeze the
                    // picture for that many times as long.
                    let hung =
                        std::mem::take(&mut timed_out) && self.has_other_source(&src.service_name);
                    if failures >= threshold || hung {
                        return Stop::Failed(why);
                    }
                    if self.pause(Duration::from_secs(1)).await {
                        return Stop::Idle;
                    }
                    continue;
                }
            };
            let first = info.media_sequence;
            let count = info.segments.len() as u64;
            // Every number compared below fits: a sequence too near the top of u64 for
            // its segments' numbers is malformed (HLS numbers them within u64).
            if first.checked_add(2 * count + 4).is_none() {
                return Stop::Failed(format!(
                    "its live playlist {} numbers its segments from {first}, which leaves no \
                     room for their numbers (EXT-X-MEDIA-SEQUENCE is malformed)",
                    src.service.shown_url(&url),
                ));
            }
            if std::mem::take(&mut resume) {
                // A new URL: its numbering may differ; the last segment's path tells.
                let at = last_path
                    .as_deref()
                    .and_then(|p| info.segments.iter().position(|s| s.url.path() == p));
                next_seq = at.map(|i| first + i as u64 + 1);
                if at.is_none() {
                    tracing::debug!(channel = %self.id, "refreshed playlist does not list the last segment: restarting near the live edge");
                }
            }
            let restarted = restart_seen.take();
            let start = match next_seq {
                // A finished playlist plays from the start; a live one near its edge.
                None if info.ended => 0,
                None => count.saturating_sub(self.engine.settings.live_edge_segments as u64),
                // Fell behind the window: jump to its start.
                Some(n) if n < first => 0,
                // Numbered far below what was sent: the upstream started its numbering
                // again (an encoder restart). Waiting for it to catch up would send
                // nothing for as long; a lag of a few segments (a CDN's older copy) is
                // waited out. Followed when the poll before said so too, its numbers
                // not going back: an origin flapping between two timelines is not.
                Some(n) if n > first + count + count.max(3) => {
                    if restarted.is_some_and(|r| first >= r) {
                        tracing::info!(channel = %self.id, expected = n, first, "the live playlist's numbering started again: going on from its live edge");
                        count.saturating_sub(self.engine.settings.live_edge_segments as u64)
                    } else {
                        restart_seen = Some(first);
                        count
                    }
                }
                Some(n) => n - first,
            };
            if (start as usize) < info.segments.len() {
                last_new = Instant::now();
            } else if !info.ended {
                let stale = match (sent_any, failures) {
                    (false, 1..) => Some((STALE_AFTER, STALE_MIN)),
                    (true, _) => Some((FROZEN_AFTER, FROZEN_MIN)),
                    (false, 0) => None,
                };
                let stale = stale.map(|(after, min)| {
                    Duration::from_secs_f64((after * info.target_duration).clamp(min, STALE_MAX))
                });
                if let Some(stale) = stale.filter(|s| last_new.elapsed() >= *s) {
                    if !sent_any || self.has_other_source(&src.service_name) {
                        return Stop::Failed(format!(
                            "its live playlist {} listed no new segment for {}s",
                            src.service.shown_url(&url),
                            stale.as_secs()
                        ));
                    }
                }
            }
            for (i, seg) in info.segments.iter().enumerate().skip(start as usize) {
                if let Some(hls::Encryption::Unsupported(what)) = &seg.key {
                    // Never playable from this source: the next one is tried at once.
                    return Stop::Failed(format!(
                        "its segments are encrypted with {what}, which a .ts stream cannot decrypt"
                    ));
                }
                // With another source to try, a segment must come about as fast as it
                // plays: nothing sent from this source yet, the viewer still waiting for
                // any byte is better served by the next source at once; once playing,
                // a segment that hangs or trickles counts as a failure, so that
                // `failover_after` of them hand over in seconds, not `segment_timeout`
                // (60 s) each.
                let deadline = self
                    .has_other_source(&src.service_name)
                    .then(|| segment_deadline(info.target_duration));
                let sent = match deadline {
                    Some(deadline) => {
                        match tokio::time::timeout(
                            deadline,
                            self.send_segment(src, seg, first + i as u64),
                        )
                        .await
                        {
                            Ok(sent) => sent,
                            Err(_) if !sent_any => {
                                return Stop::Failed(format!(
                                "its first segment did not come within {} s: too slow to play live",
                                deadline.as_secs()
                            ))
                            }
                            Err(_) => Err(UpstreamError::TimedOut {
                                url: src.service.shown_url(&seg.url),
                                after: deadline,
                            }),
                        }
                    }
                    None => self.send_segment(src, seg, first + i as u64).await,
                };
                match sent {
                    Ok(()) => {
                        self.engine
                            .registry
                            .record_stream(&src.service_name, Ok(()));
                        failures = 0;
                        sent_any = true;
                        self.sent_last = Some((
                            src.service_name.clone(),
                            src.channel_id.clone(),
                            seg.url.path().to_string(),
                        ));
                    }
                    // The first segment timed out (the service's `timeout` came before
                    // the deadline above): handed over at once, as at the deadline.
                    Err(e) if !sent_any && e.is_timeout() && deadline.is_some() => {
                        return Stop::Failed(format!(
                            "its first segment did not come in time: {e}"
                        ));
                    }
                    Err(e) => {
                        tracing::debug!(channel = %self.id, error = %e, "segment failed");
                        self.engine
                            .registry
                            .record_stream(&src.service_name, Err(e.to_string()));
                        failures += 1;
                        if failures >= threshold {
                            return Stop::Failed(e.to_string());
                        }
                        last_error = Some(e.to_string());
                        if token_refused(&e) {
                            // Not skipped: the refreshed URL resumes at this segment.
                            refused = true;
                            break;
                        }
                    }
                }
                next_seq = Some(first + i as u64 + 1);
                last_path = Some(seg.url.path().to_string());
                if self.idle() {
                    return Stop::Idle;
                }
            }
            // Finished: every segment sent, or none to send (an empty finished list
            // would otherwise be polled for ever).
            if info.ended && (count == 0 || next_seq.is_some_and(|n| n >= first + count)) {
                return match last_error.take().filter(|_| !sent_any) {
                    Some(why) => Stop::Failed(why),
                    None => Stop::Ended,
                };
            }
            if refused {
                continue;
            }
            let wait = Duration::from_secs_f64((info.target_duration / 2.0).clamp(0.25, 5.0));
            if self.pause(wait).await {
                return Stop::Idle;
            }
        }
    }

    /// Sends segment `seg`, number `seq` (only its byte range, when it has one;
    /// decrypted, when it is AES-128).
    async fn send_segment(
        &mut self,
        src: &Source,
        seg: &hls::Segment,
        seq: u64,
    ) -> Result<(), UpstreamError> {
        let upstream = segment::Upstream {
            media: &self.engine.media,
            service: &src.service,
            service_name: &src.service_name,
            headers: &src.headers,
        };
        if seg.map != self.sent_map {
            // Before the first fragment, and again when the map changes (a new source,
            // a discontinuity): the init section, whole, then its fragments.
            let init = match &seg.map {
                Some(map) => Some(upstream.init(&map.url, map.range).await?),
                None => None,
            };
            self.set_init(init, true);
            self.sent_map = seg.map.clone();
        }
        let mut body = upstream.fetch(&seg.url, seg.range).await?;
        if let Some(hls::Encryption::Aes128 { key, iv }) = &seg.key {
            let memo = (src.service_name.clone(), key.clone());
            let key = match self.keys.get(&memo) {
                Some(k) => *k,
                None => {
                    let k = upstream.key(key).await?;
                    if self.keys.len() >= MAX_KEYS {
                        self.keys.clear();
                    }
                    self.keys.insert(memo, k);
                    k
                }
            };
            // Without an IV, the segment's media sequence number is the IV.
            let iv = iv.unwrap_or_else(|| u128::from(seq).to_be_bytes());
            body = segment::decrypt(body, &key, &iv);
        }
        self.continuity.join();
        self.session
            .start
            .lock()
            .expect("start lock is never poisoned")
            .new_segment(true);
        let mut align = TsAligner::default();
        let mut typed = seg.map.is_some();
        let mut looked = false;
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            // A segment that is a web page or a playlist (a login page, a list that
            // names itself as its segment) is no media: a failed segment, never bytes
            // sent to the viewers as video.
            if !looked && !chunk.is_empty() {
                looked = true;
                if let Some(what) = not_media(&chunk) {
                    return Err(UpstreamError::Invalid(format!(
                        "its segment {} is {what}, not media",
                        src.service.shown_url(&seg.url)
                    )));
                }
            }
            // Segments that are neither MPEG-TS nor fMP4 (packed audio: AAC, MP3) are
            // sent as they come, typed as what they are.
            if !typed && !chunk.is_empty() {
                typed = true;
                // Bytes of no known format stay MPEG-TS's, as a playlist's segments
                // mostly are (one with junk in front is still cut as such).
                let t = (chunk[0] != TS_SYNC)
                    .then(|| relayed_type(&chunk, None))
                    .filter(|t| *t != "application/octet-stream");
                // Packets behind junk: cut from where they start.
                if t.is_none() && chunk[0] != TS_SYNC && crate::ts::resync(&chunk, 0).is_some() {
                    align.expect_mpeg_ts();
                }
                self.set_relayed_type(t);
            }
            self.broadcast(&mut align, chunk);
        }
        if !looked {
            // A 200 without a byte: a failed segment (several in a row fail the source
            // over), not one sent.
            return Err(UpstreamError::Invalid(format!(
                "its segment {} is empty",
                src.service.shown_url(&seg.url)
            )));
        }
        if let Some(partial) = align.finish() {
            // Not a whole number of packets: passed on as the upstream sent it.
            tracing::debug!(bytes = partial.len(), url = %src.service.shown_url(&seg.url), "segment ended inside an MPEG-TS packet");
            self.send(partial);
        }
        Ok(())
    }

    /// Sends `chunk` to every viewer, cut at MPEG-TS packet boundaries and made
    /// continuous with what was sent before.
    fn broadcast(&mut self, align: &mut TsAligner, chunk: Bytes) {
        if let Some(whole) = align.push(chunk) {
            let whole = self.continuity.apply(whole);
            self.send(whole);
        }
    }

    /// Sends `bytes` to every viewer; the first bytes announce the session (its
    /// viewers are answered 200 then, not before: a source whose playlist loads but
    /// whose segments never come is an error, not an empty stream).
    fn send(&self, bytes: Bytes) {
        let mut start = self
            .session
            .start
            .lock()
            .expect("start lock is never poisoned");
        self.send_under(&mut start, bytes);
    }

    /// `send`, with the start's lock held.
    fn send_under(&self, start: &mut Start, bytes: Bytes) {
        start.sent(&bytes);
        let at = self.session.epoch.elapsed().as_millis();
        self.session.last_sent_ms.store(
            u64::try_from(at).unwrap_or(u64::MAX).max(1),
            Ordering::Relaxed,
        );
        let _ = self.session.tx.send(bytes);
        if self.delivered.fetch_add(1, Ordering::Relaxed) == 0 && !self.announced() {
            self.ready.send_replace(Some(Ok(())));
        }
    }

    /// Makes `init` the stream's init section (fMP4; `None`: MPEG-TS from now on)
    /// and sends it, so that viewers have it before the fragments that need it.
    /// `segments`: the source has segments, whose starts joiners are given.
    fn set_init(&self, init: Option<Bytes>, segments: bool) {
        let mut start = self
            .session
            .start
            .lock()
            .expect("start lock is never poisoned");
        start.init.clone_from(&init);
        start.cutter = None;
        // Not kept as the segment's: joiners get it as the init.
        start.new_segment(false);
        if let Some(init) = init {
            self.send_under(&mut start, init);
        }
        start.new_segment(segments);
    }

    /// The media type viewers who join from now are answered with (`None`: MPEG-TS).
    fn set_relayed_type(&self, media_type: Option<&'static str>) {
        *self
            .session
            .relayed_type
            .lock()
            .expect("type lock is never poisoned") = media_type;
    }

    /// Relays a plain media URL (`mpeg_ts`: its first bytes were MPEG-TS packets);
    /// reconnects on failure up to the threshold.
    async fn relay(&mut self, src: &Source, url: &Url, mpeg_ts: bool) -> Stop {
        self.sent_map = None;
        self.set_init(None, false);
        self.set_relayed_type(None);
        self.session
            .start
            .lock()
            .expect("start lock is never poisoned")
            .relaying(mpeg_ts);
        let threshold = self.engine.settings.failover_after;
        let mut failures = 0u32;
        // The last failure was the source being slower than real time.
        let mut slow = false;
        // Judged across reconnections: a source that stalls or closes every few
        // seconds, each new connection sending at once, is as slow as what it sends
        // over time (its connections' own windows would never fill).
        let mut pace = Pace::new(self.continuity.media_progress());
        loop {
            // The response the source's opening read the first bytes of, when it is
            // still kept: no second connection.
            let parked = self
                .engine
                .media
                .take_parked(&src.service_name, url, &src.headers);
            let fetched = match parked {
                Some(parked) => Ok(parked),
                None => src.service.fetch(url, &src.headers, None).await,
            };
            let why = match fetched {
                Err(e) => e.to_string(),
                Ok(fetched) => {
                    let upstream_type = fetched.content_type;
                    let mut body = fetched.body;
                    let mut typed = mpeg_ts;
                    self.continuity.join();
                    let mut align = if mpeg_ts {
                        TsAligner::mpeg_ts()
                    } else {
                        TsAligner::default()
                    };
                    let mut checked = Instant::now();
                    loop {
                        if self.idle() {
                            return Stop::Idle;
                        }
                        if checked.elapsed() >= IDLE_TICK {
                            checked = Instant::now();
                            if let Some(stop) = self.disabled(src) {
                                return stop;
                            }
                        }
                        match body.next().await {
                            Some(Ok(chunk)) => {
                                // A failure for being slow is cleared by a window that
                                // kept up, not by the next bytes (it sends some).
                                if !slow {
                                    failures = 0;
                                }
                                // Typed before the first bytes announce the session.
                                if !typed && !chunk.is_empty() {
                                    typed = true;
                                    let t = relayed_type(&chunk, upstream_type.as_deref());
                                    self.set_relayed_type(Some(t));
                                }
                                self.broadcast(&mut align, chunk);
                                match pace.judge(self.continuity.media_progress()) {
                                    Some(Ok(())) => {
                                        slow = false;
                                        failures = 0;
                                    }
                                    Some(Err((media, window))) => {
                                        slow = true;
                                        break format!(
                                            "{} sent {:.1} s of media in {} s: slower than \
                                             it plays",
                                            src.service.shown_url(url),
                                            media.as_secs_f64(),
                                            window.as_secs()
                                        );
                                    }
                                    None => {}
                                }
                            }
                            Some(Err(e)) => break e.to_string(),
                            // A live MPEG-TS stream the upstream closed (a panel
                            // dropping the connection, a finite file): opened again and
                            // joined on (timestamps made continuous), a failure that its
                            // next bytes clear. Other media ends with its file.
                            None if mpeg_ts => {
                                break format!("{} ended the stream", src.service.shown_url(url))
                            }
                            None => return Stop::Ended,
                        }
                    }
                }
            };
            failures += 1;
            if failures >= threshold {
                return Stop::Failed(why);
            }
            tracing::info!(channel = %self.id, service = %src.service_name, error = %why, "relayed source failed ({failures} of {threshold} in a row); opening it again");
            if self.pause(Duration::from_secs(1)).await {
                return Stop::Idle;
            }
        }
    }

    /// A failure when `src`'s service was disabled while it played: a disabled
    /// service's titles are not played, so the channel's next source takes over.
    fn disabled(&self, src: &Source) -> Option<Stop> {
        (!self.engine.registry.is_enabled(&src.service_name)).then(|| {
            Stop::Failed(format!(
                "service `{}` was disabled while it played",
                src.service_name
            ))
        })
    }

    /// Sleeps for `d`, looking at the audience meanwhile; true when the session
    /// should end because nobody watches.
    async fn pause(&mut self, d: Duration) -> bool {
        let until = Instant::now() + d;
        loop {
            if self.idle() {
                return true;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            tokio::time::sleep(left.min(IDLE_TICK)).await;
        }
    }

    /// True (and the session unregistered) once nobody has watched for `idle_stop`.
    fn idle(&mut self) -> bool {
        if self.session.tx.receiver_count() > 0 {
            self.idle_since = None;
            return false;
        }
        let since = *self.idle_since.get_or_insert_with(Instant::now);
        if since.elapsed() < self.engine.settings.idle_stop {
            return false;
        }
        let mut map = self
            .sessions
            .map
            .lock()
            .expect("sessions lock is never poisoned");
        // Checked again under the lock `join` subscribes under.
        if self.session.tx.receiver_count() > 0 {
            self.idle_since = None;
            return false;
        }
        if map
            .get(&self.key)
            .is_some_and(|s| Arc::ptr_eq(s, &self.session))
        {
            map.remove(&self.key);
        }
        tracing::info!(channel = %self.id, "ts session stopped: no viewers");
        true
    }

    fn remove(&self) {
        let mut map = self
            .sessions
            .map
            .lock()
            .expect("sessions lock is never poisoned");
        if map
            .get(&self.key)
            .is_some_and(|s| Arc::ptr_eq(s, &self.session))
        {
            map.remove(&self.key);
        }
    }
}

/// A session's failure as a failed open of channel `id` that tried one source
/// (`(service, channel_id)`, the one it followed) and got `why` (`timeout`: a 504).
fn failed_source(
    id: &str,
    (service, channel_id): (String, String),
    why: String,
    timeout: bool,
) -> StreamError {
    StreamError::Registry(RegistryError::AllSourcesFailed {
        channel: id.to_string(),
        tried: vec![Attempt {
            service,
            channel_id,
            error: why,
            timeout,
            unlisted: false,
        }],
    })
}

/// The media type of a relayed source that is not MPEG-TS, from its first bytes (an
/// MP4 box, Matroska's or FLV's signature), else from its `Content-Type` when that is
/// a media type, else `application/octet-stream`: never `video/MP2T`, which would
/// tell a player to parse MPEG-TS packets.
fn relayed_type(first: &[u8], upstream: Option<&str>) -> &'static str {
    let essence = upstream
        .and_then(|c| c.split(';').next())
        .map(|c| c.trim().to_ascii_lowercase())
        .unwrap_or_default();
    if matches!(first.get(4..8), Some(b"ftyp" | b"styp" | b"moof" | b"moov")) {
        return "video/mp4";
    }
    if first.starts_with(&[0x1A, 0x45, 0xDF, 0xA3]) {
        return if essence == "video/webm" {
            "video/webm"
        } else {
            "video/x-matroska"
        };
    }
    if first.starts_with(b"FLV") {
        return "video/x-flv";
    }
    // Packed audio: its first frame, after an ID3 tag if one is in front (HLS packed
    // audio carries one), tells AAC (an ADTS header: a 12-bit sync word, layer 0)
    // from MPEG audio (an 11-bit sync word).
    let audio = after_id3(first).unwrap_or(first);
    if audio.len() >= 2 && audio[0] == 0xFF && audio[1] & 0xF6 == 0xF0 {
        return "audio/aac";
    }
    match essence.as_str() {
        "audio/mpeg" | "audio/mp3" => "audio/mpeg",
        "audio/aac" | "audio/aacp" | "audio/x-aac" => "audio/aac",
        "audio/ogg" | "application/ogg" => "audio/ogg",
        "video/webm" => "video/webm",
        "video/quicktime" => "video/quicktime",
        _ if audio.len() >= 2 && audio[0] == 0xFF && audio[1] & 0xE0 == 0xE0 => "audio/mpeg",
        // A tag whose frame is past these bytes: HLS packed audio is mostly AAC.
        _ if first.starts_with(b"ID3") => "audio/aac",
        _ => "application/octet-stream",
    }
}

/// The bytes after an ID3v2 tag at the start of `first` (`None`: no tag, or the tag
/// goes on past these bytes).
fn after_id3(first: &[u8]) -> Option<&[u8]> {
    if !first.starts_with(b"ID3") || first.len() < 10 {
        return None;
    }
    // The size: four bytes of seven bits each; a footer adds ten bytes.
    let size = first[6..10]
        .iter()
        .fold(0usize, |n, b| (n << 7) | usize::from(b & 0x7f));
    let footer = if first[5] & 0x10 != 0 { 10 } else { 0 };
    first
        .get(10 + size + footer..)
        .filter(|rest| !rest.is_empty())
}

/// Cuts a byte stream at MPEG-TS packet boundaries, so that every chunk a viewer gets
/// starts a packet: a viewer that falls behind and skips chunks resumes aligned (a
/// player would otherwise have to resynchronise, and some show garbage meanwhile).
/// Bytes before the first packet of a stream known to be MPEG-TS (junk in front: a
/// panel's, a proxy's) are dropped, and where sync is lost at a chunk's start it is
/// found again. A stream whose first byte is not the sync byte, and not said to be
/// MPEG-TS, passes through as is; so does one in which no run of packets shows within
/// [`SEEK_MAX`].
#[derive(Default)]
struct TsAligner {
    mode: Align,
    /// Bytes of an unfinished packet (or, seeking, the bytes looked through).
    rest: BytesMut,
}

#[derive(Default, Clone, Copy, PartialEq, Eq, Debug)]
enum Align {
    /// Not decided: the first byte decides.
    #[default]
    FirstByte,
    /// MPEG-TS, where its packets start not found yet.
    Seeking,
    /// MPEG-TS, in sync.
    Packets,
    /// Not MPEG-TS: passed through.
    Other,
}

/// Every 188th byte of `b` is a sync byte.
fn in_sync(b: &[u8]) -> bool {
    b.iter().step_by(TS_PACKET).all(|&x| x == TS_SYNC)
}

/// Bytes looked through for where packets start before a stream is passed as it is.
const SEEK_MAX: usize = 64 * 1024;

impl TsAligner {
    /// An aligner of a stream known to be MPEG-TS (its first bytes need not be).
    fn mpeg_ts() -> Self {
        Self {
            mode: Align::Seeking,
            rest: BytesMut::new(),
        }
    }

    /// The stream turned out to be MPEG-TS before its first byte was pushed.
    fn expect_mpeg_ts(&mut self) {
        if self.mode == Align::FirstByte {
            self.mode = Align::Seeking;
        }
    }

    /// The whole packets `chunk` completes, if any: every 188th byte a sync byte.
    fn push(&mut self, chunk: Bytes) -> Option<Bytes> {
        let first = *chunk.first()?;
        if self.mode == Align::FirstByte {
            self.mode = if first == TS_SYNC {
                Align::Packets
            } else {
                Align::Other
            };
        }
        match self.mode {
            Align::Other => return Some(chunk),
            Align::Packets
                if self.rest.is_empty()
                    && chunk.len().is_multiple_of(TS_PACKET)
                    && in_sync(&chunk) =>
            {
                return Some(chunk)
            }
            _ => self.rest.extend_from_slice(&chunk),
        }
        let mut out: Option<BytesMut> = None;
        loop {
            if self.mode == Align::Seeking {
                match crate::ts::resync(&self.rest, 0) {
                    Some(at) => {
                        if at > 0 {
                            tracing::debug!(bytes = at, "bytes out of MPEG-TS packets dropped");
                        }
                        let _ = self.rest.split_to(at);
                        self.mode = Align::Packets;
                    }
                    None if self.rest.len() >= SEEK_MAX => {
                        self.mode = Align::Other;
                        let rest = self.rest.split();
                        return Some(match out {
                            Some(mut o) => {
                                o.extend_from_slice(&rest);
                                o.freeze()
                            }
                            None => rest.freeze(),
                        });
                    }
                    None => break,
                }
            }
            // Whole packets while in sync; where a packet does not start with the sync
            // byte, or the next one does not (bytes lost inside it, or added after),
            // what came before is kept and the rest sought again.
            let whole = self.rest.len() - self.rest.len() % TS_PACKET;
            let rest = &self.rest;
            let good = (0..whole)
                .step_by(TS_PACKET)
                .find(|&at| {
                    rest[at] != TS_SYNC || at + TS_PACKET < whole && rest[at + TS_PACKET] != TS_SYNC
                })
                .unwrap_or(whole);
            if good > 0 {
                let packets = self.rest.split_to(good);
                match &mut out {
                    Some(o) => o.extend_from_slice(&packets),
                    None => out = Some(packets),
                }
            }
            if good == whole {
                break;
            }
            // Out of sync at the (new) start of `rest`. A packet there whose next run of
            // packets starts a whole packet on or later is whole (bytes were added after
            // it); one whose next run starts sooner lost bytes, and is dropped.
            let whole_first = self.rest[0] == TS_SYNC
                && crate::ts::resync(&self.rest, 1).is_some_and(|q| q >= TS_PACKET);
            let first = self.rest.split_to(if whole_first { TS_PACKET } else { 1 });
            if whole_first {
                match &mut out {
                    Some(o) => o.extend_from_slice(&first),
                    None => out = Some(first),
                }
            }
            self.mode = Align::Seeking;
        }
        out.map(BytesMut::freeze)
    }

    /// The bytes of a packet that never completed, if any (the end of a segment that
    /// is not a whole number of packets).
    fn finish(&mut self) -> Option<Bytes> {
        (!self.rest.is_empty()).then(|| self.rest.split().freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packets(n: usize) -> Vec<u8> {
        let mut p = vec![0u8; TS_PACKET * n];
        for k in 0..n {
            p[k * TS_PACKET] = TS_SYNC;
        }
        p
    }

    #[test]
    fn ts_chunks_are_cut_at_packet_boundaries() {
        let data = packets(10);
        let mut a = TsAligner::default();
        let mut out = Vec::new();
        // Odd chunk sizes, as sockets deliver them.
        for piece in data.chunks(100) {
            if let Some(whole) = a.push(Bytes::copy_from_slice(piece)) {
                assert_eq!(whole.len() % TS_PACKET, 0);
                assert_eq!(whole[0], TS_SYNC);
                out.extend_from_slice(&whole);
            }
        }
        assert_eq!(out, data);
        assert_eq!(a.finish(), None);
        // A truncated packet is held back, never sent half.
        let mut a = TsAligner::default();
        let whole = a
            .push(Bytes::copy_from_slice(&data[..TS_PACKET + 50]))
            .unwrap();
        assert_eq!(whole.len(), TS_PACKET);
        assert_eq!(a.finish().map(|b| b.len()), Some(50));
        assert_eq!(a.finish(), None);
    }

    #[test]
    fn junk_before_the_packets_of_a_known_mpeg_ts_stream_is_dropped() {
        let data = packets(10);
        let mut junk = b"HTTP junk\r\n".to_vec();
        junk.extend_from_slice(&data);
        let mut a = TsAligner::mpeg_ts();
        let mut out = Vec::new();
        for piece in junk.chunks(100) {
            if let Some(whole) = a.push(Bytes::copy_from_slice(piece)) {
                assert_eq!(whole.len() % TS_PACKET, 0);
                assert_eq!(whole[0], TS_SYNC);
                out.extend_from_slice(&whole);
            }
        }
        assert_eq!(out, data);
        // Sync lost at a chunk's start (bytes lost upstream): found again.
        let mut a = TsAligner::default();
        assert_eq!(
            a.push(Bytes::copy_from_slice(&data[..TS_PACKET * 2]))
                .unwrap()
                .len(),
            TS_PACKET * 2
        );
        let mut torn = data[TS_PACKET * 2 + 7..].to_vec();
        torn.truncate(TS_PACKET * 7 - 7);
        let whole = a.push(Bytes::from(torn)).unwrap();
        assert_eq!(whole[0], TS_SYNC);
        assert_eq!(whole.len(), TS_PACKET * 6);
        // Junk inside one chunk, and bytes lost inside another: only whole packets,
        // in sync.
        let mut a = TsAligner::default();
        let mut inside = data[..TS_PACKET * 4].to_vec();
        inside.extend_from_slice(b"JUNKJUNK");
        inside.extend_from_slice(&data[TS_PACKET * 4..]);
        let whole = a.push(Bytes::from(inside)).unwrap();
        assert_eq!(
            &whole[..],
            &data[..],
            "the junk is dropped, every packet kept"
        );
        let mut torn = data[..TS_PACKET * 3 + 50].to_vec();
        torn.extend_from_slice(&data[TS_PACKET * 4..]);
        let whole = a.push(Bytes::from(torn)).unwrap();
        assert!(in_sync(&whole) && whole.len() % TS_PACKET == 0);
        assert_eq!(&whole[..TS_PACKET * 3], &data[..TS_PACKET * 3]);
        assert_eq!(&whole[TS_PACKET * 3..], &data[TS_PACKET * 4..]);
        // Said to be MPEG-TS but no packets in SEEK_MAX: passed as it is.
        let mut a = TsAligner::mpeg_ts();
        let other = vec![1u8; SEEK_MAX];
        assert_eq!(
            a.push(Bytes::from(other.clone())).map(|b| b.len()),
            Some(SEEK_MAX)
        );
        assert_eq!(
            a.push(Bytes::from_static(b"abc")),
            Some(Bytes::from_static(b"abc"))
        );
    }

    #[test]
    fn other_streams_pass_through() {
        let mut a = TsAligner::default();
        let chunk = Bytes::from_static(b"\x00\x00\x00\x18ftypiso6 not MPEG-TS");
        assert_eq!(a.push(chunk.clone()), Some(chunk));
        assert_eq!(a.push(Bytes::new()), None);
        let tail = Bytes::from_static(b"abc");
        assert_eq!(a.push(tail.clone()), Some(tail));
    }

    #[test]
    fn a_relayed_source_is_typed_by_its_bytes_then_its_header() {
        let mp4 = b"\x00\x00\x00\x18ftypisom";
        assert_eq!(
            relayed_type(mp4, Some("application/octet-stream")),
            "video/mp4"
        );
        assert_eq!(relayed_type(mp4, Some("video/mp2t")), "video/mp4");
        let ebml = b"\x1a\x45\xdf\xa3\x01";
        assert_eq!(relayed_type(ebml, None), "video/x-matroska");
        assert_eq!(relayed_type(ebml, Some("video/webm")), "video/webm");
        assert_eq!(relayed_type(b"FLV\x01", None), "video/x-flv");
        assert_eq!(
            relayed_type(b"\xff\xfb\x90", Some("Audio/MPEG; x=1")),
            "audio/mpeg"
        );
        assert_eq!(relayed_type(b"ID3\x04", Some("audio/aacp")), "audio/aac");
        assert_eq!(relayed_type(b"ID3\x04", Some("audio/mpeg")), "audio/mpeg");
        assert_eq!(relayed_type(b"ID3\x04", None), "audio/aac");
        // A tag, then the first frame: what that frame is.
        let tagged = |frame: &[u8]| [&b"ID3\x04\x00\x00\x00\x00\x00\x03abc"[..], frame].concat();
        assert_eq!(
            relayed_type(&tagged(b"\xff\xfb\x90\x00"), None),
            "audio/mpeg"
        );
        assert_eq!(
            relayed_type(&tagged(b"\xff\xf1\x50\x80"), None),
            "audio/aac"
        );
        assert_eq!(relayed_type(b"\xff\xf1\x50\x80", None), "audio/aac");
        assert_eq!(relayed_type(b"\xff\xfb\x90\x00", None), "audio/mpeg");
        // Never MPEG-TS's type for bytes that are not: a player would parse them as packets.
        assert_eq!(
            relayed_type(b"data", Some("video/mp2t")),
            "application/octet-stream"
        );
        assert_eq!(relayed_type(b"data", None), "application/octet-stream");
    }
}
