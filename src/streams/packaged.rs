//! HLS for channels whose source is plain MPEG-TS: a live playlist of segments cut
//! from the channel's shared `.ts` session.
//!
//! `{id}.m3u8` of a channel whose source is a direct media stream has no upstream
//! playlist to rewrite. Players that take an `.m3u8` URL as HLS and nothing else
//! (AVPlayer, hls.js, ExoPlayer) get a real live playlist instead of the stream's
//! bytes:
//!
//! - The first playlist request starts a *packager*: a task that joins the channel's
//!   `.ts` session (`session`: one upstream connection however many `.ts` viewers and
//!   packaged players), cuts what it sends into segments at key frames
//!   (`segmenter`), and keeps the last [`KEPT`] of them in memory. Its first
//!   [`QUICK_START`] segments are cut short (at the first key frame past
//!   [`QUICK_TARGET`]), and the request is answered once they are cut, or [`TARGET`]
//!   of media is (or with every source's error).
//! - The playlist lists the last [`LISTED`] segments, each a link
//!   `/packaged/{channel}/{sealed}/{n}.ts`: `channel` is the id as the player asked
//!   for it (what a balancer in front hashes, so segments reach the instance whose
//!   memory holds them), `sealed` a seal of the channel, its service pin, the
//!   segment's number and an expiry ([`LINK_TTL`] after it was cut): the same link in
//!   every playlist that lists the segment (hls.js refuses a playlist whose segment
//!   changed its URI), and one segment per link. A segment is served from memory; one that left the window
//!   is 404. `EXT-X-TARGETDURATION` is the segmenter's bound, the same for the
//!   packager's life.
//! - A packager lives while players reload its playlist (a segment fetch alone does
//!   not keep it: it is not counted or checked against an account): with no playlist
//!   request for `HLS_IDLE` it lets go of the session (which then stops after
//!   `streams.idle_stop` unless `.ts` viewers remain). While it waits for its first
//!   segment it is never idle; it settles within the session's wait for first bytes
//!   and [`FIRST_SEGMENT_WAIT`], and on any way out (`Settle`).
//! - When the session ends (an upstream that closes the connection, a finite file),
//!   the packager joins it again: the playlist goes on, numbers unchanged, after an
//!   `EXT-X-DISCONTINUITY`. It ends (`EXT-X-ENDLIST`, kept [`ENDED_LINGER`] for the
//!   players finishing it) when the source cannot be joined again or its sessions keep
//!   ending at once.
//! - A stream that is not MPEG-TS is never given to a packager (`Opened::Media`'s
//!   `mpeg_ts`: its first bytes); one whose bytes turn out not cuttable (an fMP4
//!   session, no programme with video or audio) is [`PackageError::NotTs`], the caller
//!   answers as before (the stream's link), and for [`UNCUT_FOR`] after its `.m3u8`
//!   answers so at once.
//!
//! Media sequence numbers start from the packager's start time (ten a second), so
//! a later packager of the same channel never hands out a number an earlier one used:
//! a cache in front never mixes their segments.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::watch;

use super::session::{Sessions, HLS_IDLE};
use super::{Engine, StreamError};
use crate::error::UpstreamError;
use crate::proxy::Signer;
use crate::segmenter::{Segment, Segmenter};

/// Segments a playlist lists.
pub const LISTED: usize = 6;
/// Segments kept: the listed ones and a few a slow player may still fetch.
pub const KEPT: usize = 10;
/// The segment duration aimed at; no segment is longer than 1.5 times it, and
/// playlists declare that (`Segmenter::declared_target`: 6 s) from the start.
pub const TARGET: Duration = Duration::from_secs(4);
/// The first segments of a packager are cut at the first key frame past
/// [`QUICK_TARGET`] (a stream with key frames every second or two starts in two to
/// four seconds, not four to six), and the first playlist waits for them (or for
/// [`TARGET`] of media): a player is given more than one segment to start from.
const QUICK_START: u32 = 2;
const QUICK_TARGET: Duration = Duration::from_secs(1);
/// How long a packager waits, once the session sends, for its first segment (a
/// source whose key frames or time stamps never come).
const FIRST_SEGMENT_WAIT: Duration = Duration::from_secs(30);
/// How long an ended playlist (`EXT-X-ENDLIST`) is kept for the players that poll it;
/// after, a new player starts over.
const ENDED_LINGER: Duration = Duration::from_secs(10);
/// A playlist that got no new segment for this long (its session's sources failing,
/// retried) ends (`EXT-X-ENDLIST`): its players stop, rather than reloading a frozen
/// playlist.
const STALLED: Duration = Duration::from_secs(30);
/// A session that ends sooner than this after it was joined counts as a short one;
/// after [`SHORT_SESSIONS`] of them in a row the playlist ends.
const SHORT_SESSION: Duration = Duration::from_secs(3);
const SHORT_SESSIONS: u32 = 5;
/// What a sealed segment link starts with: it opens on no other route.
const LINK_TAG: &[u8] = b"packaged\0";
/// How long a segment link stays valid: a player reloads the playlist every few
/// seconds, and segments are kept for less than a minute.
const LINK_TTL: Duration = Duration::from_secs(600);

/// Why a channel cannot be packaged.
#[derive(Debug)]
pub enum PackageError {
    /// Its stream is not MPEG-TS that can be cut: serve it as it is.
    NotTs,
    /// Its sources failed (or sent no segment in time).
    Stream(StreamError),
}

/// The running packagers, by channel and service pin (the sessions' key).
#[derive(Default)]
pub struct Packagers {
    map: Mutex<HashMap<String, Arc<Packaged>>>,
    /// Keys whose stream was found not cuttable lately, and when: their `.m3u8`
    /// answers at once (as it is) instead of starting a session to find out again.
    uncut: Mutex<HashMap<String, Instant>>,
}

/// How long a stream found not cuttable is served as it is without another look.
const UNCUT_FOR: Duration = Duration::from_secs(600);
/// Keys remembered as not cuttable at most (older ones are forgotten first).
const UNCUT_MAX: usize = 10_000;

struct Packaged {
    window: Mutex<Window>,
    state: watch::Sender<State>,
    asked: Mutex<Instant>,
    /// It holds a receiver of its session (which `Sessions::viewers` does not count).
    reading: AtomicBool,
}

#[derive(Clone)]
enum State {
    Starting,
    Live,
    /// The source could not be joined again: the playlist ends.
    Ended,
    /// Not cuttable; `for_sure` when the bytes said so (remembered for `UNCUT_FOR`),
    /// not when the stream ended before they could.
    NotTs {
        for_sure: bool,
    },
    Failed(StreamError),
}

struct Window {
    /// The media sequence number of `segments[0]`.
    first: u64,
    /// Each with the discontinuity sequence number it belongs to, and when it was cut
    /// (Unix seconds: its link's expiry counts from there, so the link is the same in
    /// every playlist that lists it, as players require).
    segments: VecDeque<(Segment, u64, u64)>,
    discontinuities: u64,
    /// `EXT-X-TARGETDURATION`, the same for the packager's life.
    target: u64,
}

impl Packagers {
    /// The keys of packagers reading their session: each holds one receiver of it,
    /// which is no viewer.
    pub fn keys(&self) -> HashSet<String> {
        self.map
            .lock()
            .expect("packagers lock is never poisoned")
            .iter()
            .filter(|(_, p)| p.reading.load(Ordering::Relaxed))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// The live playlist of channel `id` (canonical; `only` its service pin),
    /// starting its packager if none runs; `link(key, n, cut)` is the URL of segment
    /// `n`, cut at `cut` (Unix seconds).
    pub async fn playlist(
        &self,
        sessions: &Arc<Sessions>,
        engine: &Engine,
        id: &str,
        only: Option<&str>,
        link: impl Fn(&str, u64, u64) -> String,
    ) -> Result<String, PackageError> {
        let key = session_key(id, only);
        if self.uncut_lately(&key) {
            return Err(PackageError::NotTs);
        }
        let packaged = {
            let mut map = self.map.lock().expect("packagers lock is never poisoned");
            let running = map
                .get(&key)
                .filter(|p| matches!(*p.state.borrow(), State::Starting | State::Live));
            match running {
                Some(p) => p.clone(),
                None => {
                    let target = Segmenter::new(TARGET).declared_target();
                    let p = Arc::new(Packaged {
                        window: Mutex::new(Window {
                            first: first_sequence(SystemTime::now()),
                            segments: VecDeque::new(),
                            discontinuities: 0,
                            target,
                        }),
                        state: watch::channel(State::Starting).0,
                        asked: Mutex::new(Instant::now()),
                        reading: AtomicBool::new(false),
                    });
                    map.insert(key.clone(), p.clone());
                    tokio::spawn(run(
                        p.clone(),
                        sessions.clone(),
                        engine.clone(),
                        key.clone(),
                        id.to_string(),
                        only.map(str::to_string),
                    ));
                    p
                }
            }
        };
        packaged.touch();
        self.settle(&packaged, &key, link).await
    }

    /// The playlist of `packaged` once it is past starting, or why there is none.
    async fn settle(
        &self,
        packaged: &Packaged,
        key: &str,
        link: impl Fn(&str, u64, u64) -> String,
    ) -> Result<String, PackageError> {
        let mut state = packaged.state.subscribe();
        // The packager always settles (its session's wait for first bytes, then
        // FIRST_SEGMENT_WAIT, and a guard on every way out); this bound is a backstop.
        let bound = super::session::FIRST_BYTES_WAIT + FIRST_SEGMENT_WAIT + Duration::from_secs(5);
        let outcome =
            tokio::time::timeout(bound, state.wait_for(|s| !matches!(s, State::Starting))).await;
        let state = match outcome {
            Ok(Ok(s)) => s.clone(),
            Ok(Err(_)) => State::Failed(StreamError::SessionGone),
            Err(_) => State::Failed(StreamError::Upstream(UpstreamError::Timeout(bound))),
        };
        match state {
            State::Starting | State::Live => Ok(packaged.render(false, |n, at| link(key, n, at))),
            State::Ended => Ok(packaged.render(true, |n, at| link(key, n, at))),
            State::NotTs { for_sure } => {
                if for_sure {
                    self.note_uncut(key);
                }
                Err(PackageError::NotTs)
            }
            State::Failed(e) => Err(PackageError::Stream(e)),
        }
    }

    /// The playlist of channel `id`'s packager (`only` its service pin) if one runs:
    /// a player's reload, or a player that came while the first one waits for the first
    /// segment, answered without asking the upstream anything (a provider that allows
    /// one connection would see a second). `None` when there is none, or it could not
    /// cut the stream (the caller opens the channel and finds out how to answer).
    pub async fn live_playlist(
        &self,
        id: &str,
        only: Option<&str>,
        link: impl Fn(&str, u64, u64) -> String,
    ) -> Option<Result<String, PackageError>> {
        let key = session_key(id, only);
        let packaged = self
            .map
            .lock()
            .expect("packagers lock is never poisoned")
            .get(&key)
            .cloned()?;
        let ended = match *packaged.state.borrow() {
            State::Starting => None,
            State::Live => Some(false),
            State::Ended => Some(true),
            _ => return None,
        };
        packaged.touch();
        match ended {
            Some(ended) => Some(Ok(packaged.render(ended, |n, at| link(&key, n, at)))),
            None => match self.settle(&packaged, &key, link).await {
                Err(PackageError::NotTs) => None,
                other => Some(other),
            },
        }
    }

    /// Segment `n` of the packager `key`, if it is still kept. A segment fetch does
    /// not keep the packager going: only players that reload the playlist (counted,
    /// and checked against their account) do.
    pub fn segment(&self, key: &str, n: u64) -> Option<Bytes> {
        let packaged = self
            .map
            .lock()
            .expect("packagers lock is never poisoned")
            .get(key)
            .cloned()?;
        let w = packaged
            .window
            .lock()
            .expect("window lock is never poisoned");
        let at = usize::try_from(n.checked_sub(w.first)?).ok()?;
        w.segments.get(at).map(|(s, _, _)| s.bytes.clone())
    }

    fn uncut_lately(&self, key: &str) -> bool {
        self.uncut
            .lock()
            .expect("uncut lock is never poisoned")
            .get(key)
            .is_some_and(|at| at.elapsed() < UNCUT_FOR)
    }

    fn note_uncut(&self, key: &str) {
        let mut uncut = self.uncut.lock().expect("uncut lock is never poisoned");
        if uncut.len() >= UNCUT_MAX {
            uncut.retain(|_, at| at.elapsed() < UNCUT_FOR);
            if uncut.len() >= UNCUT_MAX {
                uncut.clear();
            }
        }
        uncut.insert(key.to_string(), Instant::now());
    }

    fn remove(&self, key: &str, p: &Arc<Packaged>) {
        let mut map = self.map.lock().expect("packagers lock is never poisoned");
        if map.get(key).is_some_and(|q| Arc::ptr_eq(q, p)) {
            map.remove(key);
        }
    }
}

/// The sessions' key of channel `id` pinned to `only`.
pub fn session_key(id: &str, only: Option<&str>) -> String {
    format!("{id}\n{}", only.unwrap_or_default())
}

/// The first media sequence number of a packager started at `now`.
fn first_sequence(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs().saturating_mul(10))
}

impl Packaged {
    fn touch(&self) {
        *self.asked.lock().expect("asked lock is never poisoned") = Instant::now();
    }

    /// No player asked for `after`.
    fn idle_for(&self, after: Duration) -> bool {
        self.asked
            .lock()
            .expect("asked lock is never poisoned")
            .elapsed()
            >= after
    }

    fn is_starting(&self) -> bool {
        matches!(*self.state.borrow(), State::Starting)
    }

    fn has_segments(&self) -> bool {
        !self
            .window
            .lock()
            .expect("window lock is never poisoned")
            .segments
            .is_empty()
    }

    /// Adds `cut` segments to the window. The packager is live (its first playlist
    /// answered) once it holds [`QUICK_START`] segments or [`TARGET`] of media.
    fn add(&self, cut: &mut Vec<Segment>) {
        if cut.is_empty() {
            return;
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let ready = {
            let mut w = self.window.lock().expect("window lock is never poisoned");
            for segment in cut.drain(..) {
                if segment.discontinuity {
                    w.discontinuities += 1;
                }
                let d = w.discontinuities;
                w.segments.push_back((segment, d, now));
                while w.segments.len() > KEPT {
                    w.segments.pop_front();
                    w.first += 1;
                }
            }
            w.segments.len() >= QUICK_START as usize
                || w.segments.iter().map(|(s, _, _)| s.duration).sum::<f64>()
                    >= TARGET.as_secs_f64()
        };
        if ready {
            self.go_live();
        }
    }

    /// A starting packager is live: its first playlist is answered.
    fn go_live(&self) {
        self.state.send_if_modified(|s| {
            let starting = matches!(s, State::Starting);
            if starting {
                *s = State::Live;
            }
            starting
        });
    }

    /// The playlist, segment `n` (cut at `cut`) at `link(n, cut)`.
    fn render(&self, ended: bool, link: impl Fn(u64, u64) -> String) -> String {
        use std::fmt::Write;
        let w = self.window.lock().expect("window lock is never poisoned");
        let skip = w.segments.len().saturating_sub(LISTED);
        let first = w.first + skip as u64;
        let listed = w.segments.iter().skip(skip);
        let discontinuity_sequence = w.segments.get(skip).map_or(0, |(_, d, _)| *d);
        let mut out = format!(
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{}\n#EXT-X-MEDIA-SEQUENCE:{first}\n\
             #EXT-X-DISCONTINUITY-SEQUENCE:{discontinuity_sequence}\n",
            w.target
        );
        for (i, (s, _, cut)) in listed.enumerate() {
            // The first listed segment's break is already counted in the sequence.
            if s.discontinuity && i > 0 {
                out.push_str("#EXT-X-DISCONTINUITY\n");
            }
            let _ = write!(
                out,
                "#EXTINF:{:.3},\n{}\n",
                s.duration,
                link(first + i as u64, *cut)
            );
        }
        if ended {
            out.push_str("#EXT-X-ENDLIST\n");
        }
        out
    }
}

/// Settles a packager whatever way its task ends (a `break`, a panic): a state still
/// `Starting` becomes a failure, so no request waits on it; the packager leaves the
/// map.
struct Settle {
    p: Arc<Packaged>,
    sessions: Arc<Sessions>,
    key: String,
}

impl Drop for Settle {
    fn drop(&mut self) {
        self.p.reading.store(false, Ordering::Relaxed);
        self.p.state.send_if_modified(|s| {
            let starting = matches!(s, State::Starting);
            if starting {
                *s = State::Failed(StreamError::SessionGone);
            }
            starting
        });
        self.sessions.packaged.remove(&self.key, &self.p);
    }
}

/// A packager's task: joins the session and cuts segments until nobody asks for
/// `HLS_IDLE`. When the session ends (an upstream that closes the connection), it
/// joins again: the playlist goes on after an `EXT-X-DISCONTINUITY`, its numbers
/// unchanged; it ends (`EXT-X-ENDLIST`) only when the source cannot be joined again.
async fn run(
    p: Arc<Packaged>,
    sessions: Arc<Sessions>,
    engine: Engine,
    key: String,
    id: String,
    only: Option<String>,
) {
    let _settle = Settle {
        p: p.clone(),
        sessions: sessions.clone(),
        key,
    };
    let mut cutter = Segmenter::with_quick_start(TARGET, QUICK_START, QUICK_TARGET);
    let mut cut = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut short = 0;
    let mut last_cut = Instant::now();
    'sessions: loop {
        let mut joined = match sessions.join(&engine, &id, only.as_deref()).await {
            Ok(j) => j,
            Err(e) => {
                let end = if p.has_segments() {
                    tracing::info!(channel = %id, error = %e, "packaged HLS ended: its source could not be joined again");
                    State::Ended
                } else {
                    State::Failed(e)
                };
                p.state.send_replace(end);
                break;
            }
        };
        if joined.is_not_ts() {
            p.state.send_replace(State::NotTs { for_sure: true });
            return;
        }
        p.reading.store(true, Ordering::Relaxed);
        let joined_at = Instant::now();
        let stop = loop {
            tokio::select! {
                next = joined.next() => match next {
                    Some(Ok(bytes)) => {
                        cutter.push(&bytes, &mut cut);
                        if cutter.not_ts() {
                            tracing::info!(channel = %id, "the stream is not MPEG-TS with a programme: its .m3u8 is the stream's link");
                            p.state.send_replace(State::NotTs { for_sure: true });
                            return;
                        }
                    }
                    Some(Err(skipped)) => {
                        tracing::debug!(channel = %id, skipped, "packager fell behind its session");
                        cutter.gap();
                    }
                    None => break false,
                },
                _ = tick.tick() => {
                    // A first request waits on a starting packager: it is not idle.
                    if !p.is_starting() && p.idle_for(HLS_IDLE) {
                        tracing::info!(channel = %id, "packaged HLS stopped: no players");
                        break true;
                    }
                    if !p.is_starting() && last_cut.elapsed() > STALLED {
                        tracing::warn!(channel = %id, "packaged HLS ended: no new segment for {} s", STALLED.as_secs());
                        p.state.send_replace(State::Ended);
                        break 'sessions;
                    }
                    // One quick segment and no second for a while: it is served.
                    if p.is_starting() && p.has_segments() && last_cut.elapsed() >= TARGET {
                        p.go_live();
                    }
                    if p.is_starting() && joined_at.elapsed() > FIRST_SEGMENT_WAIT {
                        // Bytes came but no segment: without a programme table it is
                        // not something to cut (served as it is), with one its source
                        // failed.
                        let why = if cutter.has_programme() {
                            State::Failed(sessions.failed(&id, only.as_deref(), format!(
                                "its MPEG-TS gave no segment in {} s (no time stamps, or \
                                 sent slower than it plays)",
                                FIRST_SEGMENT_WAIT.as_secs()
                            )))
                        } else {
                            tracing::info!(channel = %id, "no programme with video or audio found in {} s: its .m3u8 is the stream's link", FIRST_SEGMENT_WAIT.as_secs());
                            State::NotTs { for_sure: true }
                        };
                        p.state.send_replace(why);
                        return;
                    }
                }
            }
            if !cut.is_empty() {
                last_cut = Instant::now();
            }
            p.add(&mut cut);
        };
        drop(joined);
        p.reading.store(false, Ordering::Relaxed);
        if stop {
            return;
        }
        // The session ended: what was cut so far is kept, the next session's bytes
        // start a new timeline.
        cut.extend(cutter.finish());
        p.add(&mut cut);
        if p.has_segments() {
            p.go_live();
        }
        cutter.gap();
        if !p.has_segments() && !cutter.has_programme() {
            // Too short to tell (or not MPEG-TS): as it is, this time.
            p.state.send_replace(State::NotTs { for_sure: false });
            return;
        }
        short = if joined_at.elapsed() < SHORT_SESSION {
            short + 1
        } else {
            0
        };
        if short >= SHORT_SESSIONS || (!p.is_starting() && p.idle_for(HLS_IDLE)) {
            p.state.send_replace(if p.has_segments() {
                State::Ended
            } else {
                State::Failed(StreamError::SessionGone)
            });
            break;
        }
        if short > 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    // Ended: kept for the players finishing the playlist.
    while !p.idle_for(ENDED_LINGER) {
        tick.tick().await;
    }
}

/// The sealed part of the link of segment `n` of packager `key`, cut at `cut` (Unix
/// seconds): valid for [`LINK_TTL`] from then, and for that segment only, so the
/// same text in every playlist that lists it, and a player whose account is taken
/// away cannot go on counting up segment numbers.
pub fn seal_segment(signer: &Signer, key: &str, n: u64, cut: u64) -> String {
    let until = cut.saturating_add(LINK_TTL.as_secs());
    let mut plain = Vec::with_capacity(LINK_TAG.len() + 16 + key.len());
    plain.extend_from_slice(LINK_TAG);
    plain.extend_from_slice(&until.to_be_bytes());
    plain.extend_from_slice(&n.to_be_bytes());
    plain.extend_from_slice(key.as_bytes());
    signer.seal_blob(&plain)
}

/// The packager key and the segment number a segment link's sealed part names, or
/// why it does not open.
pub fn open_segment(
    signer: &Signer,
    sealed: &str,
    now: SystemTime,
) -> Result<(String, u64), StreamError> {
    let plain = signer
        .open_blob(sealed)
        .ok_or_else(|| StreamError::BadLink("tampered or foreign segment link".into()))?;
    let rest = plain
        .strip_prefix(LINK_TAG)
        .filter(|r| r.len() >= 16)
        .ok_or_else(|| StreamError::BadLink("not a segment link".into()))?;
    let (until, rest) = rest.split_at(8);
    let (n, key) = rest.split_at(8);
    let until = u64::from_be_bytes(until.try_into().expect("8 bytes"));
    let n = u64::from_be_bytes(n.try_into().expect("8 bytes"));
    let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    if now > until {
        return Err(StreamError::BadLink(
            "this segment link has expired: reload the channel's playlist".into(),
        ));
    }
    let key = String::from_utf8(key.to_vec())
        .map_err(|_| StreamError::BadLink("not a segment link".into()))?;
    Ok((key, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(duration: f64, discontinuity: bool) -> Segment {
        Segment {
            bytes: Bytes::from_static(b"x"),
            duration,
            discontinuity,
        }
    }

    fn packaged() -> Packaged {
        Packaged {
            window: Mutex::new(Window {
                first: 100,
                segments: VecDeque::new(),
                discontinuities: 0,
                target: 6,
            }),
            state: watch::channel(State::Starting).0,
            asked: Mutex::new(Instant::now()),
            reading: AtomicBool::new(false),
        }
    }

    #[test]
    fn the_playlist_lists_the_last_segments_with_their_sequence_numbers() {
        let p = packaged();
        for i in 0..12 {
            p.add(&mut vec![seg(
                if i == 3 { 5.9 } else { 4.0 },
                i == 5 || i == 9,
            )]);
        }
        assert!(matches!(*p.state.borrow(), State::Live));
        let text = p.render(false, |n, _| format!("s/{n}.ts"));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "#EXTM3U");
        // 12 added, 10 kept (102..=111), 6 listed (106..=111).
        assert!(lines.contains(&"#EXT-X-MEDIA-SEQUENCE:106"), "{text}");
        // The packager's, whatever the segments.
        assert!(lines.contains(&"#EXT-X-TARGETDURATION:6"), "{text}");
        // Segment 5's break is before the window: counted; segment 9's is tagged.
        assert!(lines.contains(&"#EXT-X-DISCONTINUITY-SEQUENCE:1"), "{text}");
        assert_eq!(text.matches("#EXT-X-DISCONTINUITY\n").count(), 1, "{text}");
        let uris: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| !l.starts_with('#'))
            .collect();
        assert_eq!(
            uris,
            ["s/106.ts", "s/107.ts", "s/108.ts", "s/109.ts", "s/110.ts", "s/111.ts"]
        );
        let before = text.find("#EXT-X-DISCONTINUITY\n").unwrap();
        assert!(text[before..].starts_with("#EXT-X-DISCONTINUITY\n#EXTINF:4.000,\ns/109.ts"));
        assert!(!text.contains("ENDLIST"));
        assert!(p
            .render(true, |_, _| String::new())
            .ends_with("#EXT-X-ENDLIST\n"));
        // The kept but unlisted ones still play; older ones are gone.
        let map = Packagers::default();
        map.map.lock().unwrap().insert("k".into(), Arc::new(p));
        assert!(map.segment("k", 102).is_some());
        assert!(map.segment("k", 101).is_none());
        assert!(map.segment("k", 112).is_none());
        assert!(map.segment("other", 105).is_none());
    }

    #[test]
    fn segment_links_open_only_unchanged_and_unexpired() {
        let signer = Signer::ephemeral(Duration::from_secs(3600));
        let cut = 1_000 * 3600;
        let now = UNIX_EPOCH + Duration::from_secs(cut + 5);
        let sealed = seal_segment(&signer, "5\nIPTV", 42, cut);
        assert_eq!(
            open_segment(&signer, &sealed, now).unwrap(),
            ("5\nIPTV".to_string(), 42)
        );
        // The same text every time the segment is listed.
        assert_eq!(seal_segment(&signer, "5\nIPTV", 42, cut), sealed);
        assert_ne!(seal_segment(&signer, "5\nIPTV", 43, cut), sealed);
        let at = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
        assert!(open_segment(&signer, &sealed, at(cut + LINK_TTL.as_secs())).is_ok());
        assert!(open_segment(&signer, &sealed, at(cut + LINK_TTL.as_secs() + 1)).is_err());
        let mut tampered = sealed.clone().into_bytes();
        let last = tampered.len() - 3;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert!(open_segment(&signer, &tampered, now).is_err());
        // A blob sealed for another route (a logo) does not open here.
        let logo = signer.seal_blob(b"http://example.invalid/logo.png");
        assert!(open_segment(&signer, &logo, now).is_err());
        // Another server's key does not open it.
        let other = Signer::ephemeral(Duration::from_secs(3600));
        assert!(open_segment(&other, &sealed, now).is_err());
    }
}
