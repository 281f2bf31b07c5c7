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
//!   (`segmenter`), and keeps the last [`KEPT`] of them in memory. The request is
//!   answered once the first segment is cut (or with every source's error).
//! - The playlist lists the last [`LISTED`] segments, each a link
//!   `/packaged/{sealed}/{n}.ts` that carries a seal of the channel (and its service
//!   pin) with an expiry (`server.link_ttl`, in whole hours so links stay the same
//!   for an hour), like every other link freesky hands out. A segment is served from
//!   memory; one that left the window is 404.
//! - A packager lives while players ask: with no playlist or segment request for
//!   `HLS_IDLE` it lets go of the session (which then stops after `streams.idle_stop`
//!   unless `.ts` viewers remain). When the session ends (a finite source), the
//!   playlist ends (`EXT-X-ENDLIST`) and the next new player starts a new one.
//! - A stream that is not MPEG-TS (an MP4 file, an fMP4 session) cannot be cut:
//!   [`PackageError::NotTs`], and the caller answers as before (the stream's link);
//!   for [`UNCUT_FOR`] after, its `.m3u8` answers so at once.
//!
//! Media sequence numbers start from the packager's start time (ten a second), so
//! a later packager of the same channel never hands out a number an earlier one used:
//! a cache in front never mixes their segments.

use std::collections::{HashMap, HashSet, VecDeque};
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
/// The segment duration aimed at.
pub const TARGET: Duration = Duration::from_secs(4);
/// How long a first playlist request waits for the first segment once the session
/// sends (a source whose key frames never come).
const FIRST_SEGMENT_WAIT: Duration = Duration::from_secs(30);
/// What a sealed segment link starts with: it opens on no other route.
const LINK_TAG: &[u8] = b"packaged\0";

/// Why a channel cannot be packaged.
#[derive(Debug)]
pub enum PackageError {
    /// Its stream is not MPEG-TS (or ended before a whole segment): serve it as it is.
    NotTs,
    /// Its sources failed (or sent no segment in time).
    Stream(StreamError),
}

/// The running packagers, by channel and service pin (the sessions' key).
#[derive(Default)]
pub struct Packagers {
    map: Mutex<HashMap<String, Arc<Packaged>>>,
    /// Keys whose stream could not be cut lately, and when: their `.m3u8` answers at
    /// once (as it is) instead of starting a session to find out again.
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
}

#[derive(Clone)]
enum State {
    Starting,
    Live,
    Ended,
    NotTs,
    Failed(StreamError),
}

struct Window {
    /// The media sequence number of `segments[0]`.
    first: u64,
    /// Each with the discontinuity sequence number it belongs to.
    segments: VecDeque<(Segment, u64)>,
    discontinuities: u64,
    /// `EXT-X-TARGETDURATION`: never lowered, as players expect it to stay.
    target: u64,
}

impl Packagers {
    /// The keys of running packagers: each holds one receiver of its session, which
    /// is no viewer.
    pub fn keys(&self) -> HashSet<String> {
        self.map
            .lock()
            .expect("packagers lock is never poisoned")
            .keys()
            .cloned()
            .collect()
    }

    /// The live playlist of channel `id` (canonical; `only` its service pin),
    /// starting its packager if none runs; `link(key, n)` is segment `n`'s URL.
    pub async fn playlist(
        &self,
        sessions: &Arc<Sessions>,
        engine: &Engine,
        id: &str,
        only: Option<&str>,
        link: impl Fn(&str, u64) -> String,
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
                    let p = Arc::new(Packaged {
                        window: Mutex::new(Window {
                            first: first_sequence(SystemTime::now()),
                            segments: VecDeque::new(),
                            discontinuities: 0,
                            target: TARGET.as_secs(),
                        }),
                        state: watch::channel(State::Starting).0,
                        asked: Mutex::new(Instant::now()),
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
        let mut state = packaged.state.subscribe();
        // The session's own wait for first bytes bounds the start; this one bounds a
        // stream that sends but never gives a segment.
        let bound = super::session::FIRST_BYTES_WAIT + FIRST_SEGMENT_WAIT + Duration::from_secs(5);
        let outcome =
            tokio::time::timeout(bound, state.wait_for(|s| !matches!(s, State::Starting))).await;
        let state = match outcome {
            Ok(Ok(s)) => s.clone(),
            Ok(Err(_)) => State::Failed(StreamError::SessionGone),
            Err(_) => State::Failed(StreamError::Upstream(UpstreamError::Timeout(bound))),
        };
        match state {
            State::Starting | State::Live => Ok(packaged.render(false, |n| link(&key, n))),
            State::Ended => Ok(packaged.render(true, |n| link(&key, n))),
            State::NotTs => {
                self.note_uncut(&key);
                Err(PackageError::NotTs)
            }
            State::Failed(e) => Err(PackageError::Stream(e)),
        }
    }

    /// The playlist of channel `id`'s packager (`only` its service pin) if one is
    /// running and has segments: a player's reload, answered without asking the
    /// upstream anything (a provider that allows one connection would see a second).
    pub fn live_playlist(
        &self,
        id: &str,
        only: Option<&str>,
        link: impl Fn(&str, u64) -> String,
    ) -> Option<String> {
        let key = session_key(id, only);
        let packaged = self
            .map
            .lock()
            .expect("packagers lock is never poisoned")
            .get(&key)
            .cloned()?;
        if !matches!(*packaged.state.borrow(), State::Live) {
            return None;
        }
        packaged.touch();
        Some(packaged.render(false, |n| link(&key, n)))
    }

    /// Segment `n` of the packager `key`, if it is still kept.
    pub fn segment(&self, key: &str, n: u64) -> Option<Bytes> {
        let packaged = self
            .map
            .lock()
            .expect("packagers lock is never poisoned")
            .get(key)
            .cloned()?;
        packaged.touch();
        let w = packaged
            .window
            .lock()
            .expect("window lock is never poisoned");
        let at = usize::try_from(n.checked_sub(w.first)?).ok()?;
        w.segments.get(at).map(|(s, _)| s.bytes.clone())
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

    fn idle(&self) -> bool {
        self.asked
            .lock()
            .expect("asked lock is never poisoned")
            .elapsed()
            >= HLS_IDLE
    }

    fn add(&self, segment: Segment) {
        let mut w = self.window.lock().expect("window lock is never poisoned");
        if segment.discontinuity {
            w.discontinuities += 1;
        }
        w.target = w.target.max(segment.duration.ceil() as u64);
        let d = w.discontinuities;
        w.segments.push_back((segment, d));
        while w.segments.len() > KEPT {
            w.segments.pop_front();
            w.first += 1;
        }
    }

    fn render(&self, ended: bool, link: impl Fn(u64) -> String) -> String {
        let w = self.window.lock().expect("window lock is never poisoned");
        let skip = w.segments.len().saturating_sub(LISTED);
        let first = w.first + skip as u64;
        let listed = w.segments.iter().skip(skip);
        let discontinuity_sequence = w.segments.get(skip).map_or(0, |(_, d)| *d);
        let mut out = format!(
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{}\n#EXT-X-MEDIA-SEQUENCE:{first}\n\
             #EXT-X-DISCONTINUITY-SEQUENCE:{discontinuity_sequence}\n",
            w.target
        );
        for (i, (s, _)) in listed.enumerate() {
            // The first listed segment's break is already counted in the sequence.
            if s.discontinuity && i > 0 {
                out.push_str("#EXT-X-DISCONTINUITY\n");
            }
            out.push_str(&format!(
                "#EXTINF:{:.3},\n{}\n",
                s.duration,
                link(first + i as u64)
            ));
        }
        if ended {
            out.push_str("#EXT-X-ENDLIST\n");
        }
        out
    }
}

/// A packager's task: joins the session, cuts segments until nobody asks for
/// `HLS_IDLE` or the session ends.
async fn run(
    p: Arc<Packaged>,
    sessions: Arc<Sessions>,
    engine: Engine,
    key: String,
    id: String,
    only: Option<String>,
) {
    let mut joined = match sessions.join(&engine, &id, only.as_deref()).await {
        Ok(j) => j,
        Err(e) => {
            p.state.send_replace(State::Failed(e));
            sessions.packaged.remove(&key, &p);
            return;
        }
    };
    if joined.is_mp4() {
        p.state.send_replace(State::NotTs);
        sessions.packaged.remove(&key, &p);
        return;
    }
    let mut cutter = Segmenter::new(TARGET);
    let mut cut = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let joined_at = Instant::now();
    loop {
        tokio::select! {
            next = joined.next() => match next {
                Some(Ok(bytes)) => {
                    cutter.push(&bytes, &mut cut);
                    if cutter.not_ts() {
                        tracing::info!(channel = %id, "the stream is not MPEG-TS: its .m3u8 is the stream's link");
                        p.state.send_replace(State::NotTs);
                        break;
                    }
                }
                Some(Err(skipped)) => {
                    tracing::debug!(channel = %id, skipped, "packager fell behind its session");
                    cutter.gap();
                }
                None => {
                    cut.extend(cutter.finish());
                    let none = cut.is_empty() && p.window.lock().expect("window lock is never poisoned").segments.is_empty();
                    if none {
                        // Not MPEG-TS, or too short for a segment: as it is.
                        p.state.send_replace(State::NotTs);
                        break;
                    }
                    for s in cut.drain(..) {
                        p.add(s);
                    }
                    p.state.send_replace(State::Ended);
                    // Players finish what is listed; a new one starts a new packager.
                    drop(joined);
                    while !p.idle() {
                        tick.tick().await;
                    }
                    break;
                }
            },
            _ = tick.tick() => {
                if p.idle() {
                    tracing::info!(channel = %id, "packaged HLS stopped: no players");
                    break;
                }
                if matches!(*p.state.borrow(), State::Starting) && joined_at.elapsed() > FIRST_SEGMENT_WAIT {
                    // Bytes came but no segment: without a programme table it is not
                    // something to cut (served as it is), with one its source failed.
                    let why = if cutter.has_programme() {
                        State::Failed(StreamError::Upstream(UpstreamError::Invalid(format!(
                            "the stream gave no segment (no key frame or time stamps) in {} s",
                            FIRST_SEGMENT_WAIT.as_secs()
                        ))))
                    } else {
                        State::NotTs
                    };
                    p.state.send_replace(why);
                    break;
                }
            }
        }
        if !cut.is_empty() {
            for s in cut.drain(..) {
                p.add(s);
            }
            p.state.send_if_modified(|s| {
                let was = matches!(s, State::Starting);
                if was {
                    *s = State::Live;
                }
                was
            });
        }
    }
    sessions.packaged.remove(&key, &p);
}

/// The sealed part of segment links of packager `key`, valid until `ttl` after `now`
/// rounded up to the hour (the same text for an hour of playlists).
pub fn seal_key(signer: &Signer, key: &str, now: SystemTime, ttl: Duration) -> String {
    let until = now
        .checked_add(ttl)
        .unwrap_or(now)
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let until = until.div_ceil(3600).saturating_mul(3600);
    let mut plain = Vec::with_capacity(LINK_TAG.len() + 8 + key.len());
    plain.extend_from_slice(LINK_TAG);
    plain.extend_from_slice(&until.to_be_bytes());
    plain.extend_from_slice(key.as_bytes());
    signer.seal_blob(&plain)
}

/// The packager key a segment link's sealed part names, or why it does not open.
pub fn open_key(signer: &Signer, sealed: &str, now: SystemTime) -> Result<String, StreamError> {
    let plain = signer
        .open_blob(sealed)
        .ok_or_else(|| StreamError::BadLink("tampered or foreign segment link".into()))?;
    let rest = plain
        .strip_prefix(LINK_TAG)
        .filter(|r| r.len() >= 8)
        .ok_or_else(|| StreamError::BadLink("not a segment link".into()))?;
    let (until, key) = rest.split_at(8);
    let until = u64::from_be_bytes(until.try_into().expect("8 bytes"));
    let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    if now > until {
        return Err(StreamError::BadLink(
            "this segment link has expired: reload the channel's playlist".into(),
        ));
    }
    String::from_utf8(key.to_vec()).map_err(|_| StreamError::BadLink("not a segment link".into()))
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
                target: 4,
            }),
            state: watch::channel(State::Starting).0,
            asked: Mutex::new(Instant::now()),
        }
    }

    #[test]
    fn the_playlist_lists_the_last_segments_with_their_sequence_numbers() {
        let p = packaged();
        for i in 0..12 {
            p.add(seg(if i == 3 { 7.2 } else { 4.0 }, i == 5 || i == 9));
        }
        let text = p.render(false, |n| format!("s/{n}.ts"));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "#EXTM3U");
        // 12 added, 10 kept (102..=111), 6 listed (106..=111).
        assert!(lines.contains(&"#EXT-X-MEDIA-SEQUENCE:106"), "{text}");
        // Never lowered: a 7.2 s segment made it 8 even after it left.
        assert!(lines.contains(&"#EXT-X-TARGETDURATION:8"), "{text}");
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
            .render(true, |n| n.to_string())
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
        let now = UNIX_EPOCH + Duration::from_secs(1_000 * 3600);
        let sealed = seal_key(&signer, "5\nIPTV", now, Duration::from_secs(600));
        assert_eq!(open_key(&signer, &sealed, now).unwrap(), "5\nIPTV");
        // Valid to the hour after the ttl: the same text for an hour of playlists.
        let later = now + Duration::from_secs(300);
        assert_eq!(
            seal_key(&signer, "5\nIPTV", later, Duration::from_secs(600)),
            sealed
        );
        let past = now + Duration::from_secs(2 * 3600);
        assert!(open_key(&signer, &sealed, past).is_err());
        let mut tampered = sealed.clone().into_bytes();
        let last = tampered.len() - 3;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert!(open_key(&signer, &tampered, now).is_err());
        // A blob sealed for another route (a logo) does not open here.
        let logo = signer.seal_blob(b"http://example.invalid/logo.png");
        assert!(open_key(&signer, &logo, now).is_err());
        // Another server's key does not open it.
        let other = Signer::ephemeral(Duration::from_secs(3600));
        assert!(open_key(&other, &sealed, now).is_err());
    }
}
