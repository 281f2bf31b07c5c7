//! A continuous MPEG-TS cut into HLS segments (pure: no IO, no clock).
//!
//! A channel whose source is a plain MPEG-TS stream (an Xtream panel set to TS, an M3U
//! entry that is a `.ts` URL) has no playlist to rewrite, and players that only take
//! HLS at an `.m3u8` URL (AVPlayer, hls.js, ExoPlayer) cannot play its bytes. The
//! channel's shared `.ts` session (`streams::session`) is read by a packager
//! (`streams::packaged`) that feeds the bytes to a [`Segmenter`], which cuts them as a
//! packager of a real panel would:
//!
//! - **Where**: a segment starts at a random access point of the *clock* stream (the
//!   first video stream of the programme, else its first audio stream): a packet that
//!   starts a PES with the adaptation field's `random_access_indicator` set, or whose
//!   first bytes carry an H.264 IDR, an HEVC IRAP picture or an MPEG-2 sequence header
//!   (encoders that never set the indicator). Bytes before the first one, and before
//!   the programme tables were seen, are dropped: every segment can be decoded on its
//!   own. A stream in which no random access point shows for [`Segmenter::limit`]
//!   starts at a PES start anyway (intra refresh, codecs whose pictures are not read).
//! - **When**: at the first such point once the segment holds [`Segmenter::new`]'s
//!   target duration (by the clock stream's decode times, DTS else PTS); a stream whose
//!   random access points are farther apart is cut at the PES start of the clock stream
//!   after which, at the pace of its last frames, it would hold more than the limit
//!   (1.5 targets), whatever it is: no segment is longer than the target duration a
//!   playlist declares ([`Segmenter::declared_target`], which never changes), but for
//!   frames that come far less regularly than half a second. An audio-only clock is cut
//!   at any PES start.
//! - **What**: each segment starts with the latest PAT and PMT (a player may start
//!   at any segment) followed by every packet from the cut on, unchanged. Its
//!   duration is the decode-time distance to the next cut.
//! - **Timeline breaks** (a decode time going back, or more than [`JUMP`] ahead, a
//!   new programme layout, or bytes lost: [`Segmenter::gap`]) end the segment there
//!   and mark the next one as a discontinuity; the shared session already makes most
//!   joins continuous (`ts`).
//! - **Bounds**: past [`SIZE_CUT`] bytes a segment is cut at the next frame of the
//!   clock stream, key or not; it never grows past [`MAX_SEGMENT`] bytes (without a
//!   frame start by then, it is dropped, as if its bytes were lost); bytes in which no MPEG-TS packet is found within
//!   [`SNIFF`] bytes, or no programme of video or audio within [`NO_TABLES`], make
//!   [`Segmenter::not_ts`] true; nothing an upstream sends can make it panic.

use bytes::Bytes;

use crate::ts::{diff, read_timestamp, resync, PACKET, SYNC};

const SECOND: u64 = 90_000;
/// A decode time this far past the last one is a break in the timeline, not a gap.
pub const JUMP: i64 = 10 * SECOND as i64;
/// The most bytes one segment holds (6 s at over 20 Mbit/s): a packager keeps 10.
pub const MAX_SEGMENT: usize = 16 << 20;
/// A segment this large is cut at the clock stream's next PES start, key frame or
/// not (a stream of over 20 Mbit/s makes shorter segments than the target).
pub const SIZE_CUT: usize = 12 << 20;
/// Bytes read without finding MPEG-TS packets before the stream counts as not MPEG-TS.
pub const SNIFF: usize = 64 << 10;
/// Bytes of packets read without a programme that has video or audio before the
/// stream counts as not one to cut (encoders repeat the tables every 100 ms or so).
pub const NO_TABLES: usize = 1 << 20;
/// A segment may wait this many halves of the target for a random access point
/// before it is cut at a PES start that is none (so 1.5 targets).
const PATIENCE_HALVES: u64 = 3;

/// One finished segment.
#[derive(Debug, Clone)]
pub struct Segment {
    /// Whole packets: the programme tables, then the stream from the cut on.
    pub bytes: Bytes,
    /// Seconds, by the clock stream's decode times.
    pub duration: f64,
    /// The timeline does not go on from the previous segment (`EXT-X-DISCONTINUITY`).
    pub discontinuity: bool,
}

/// The cutting state of one stream: feed it every chunk in order ([`Self::push`]).
pub struct Segmenter {
    target: u64,
    /// Segments still to cut at [`Self::with_quick_start`]'s shorter target.
    quick: u32,
    quick_target: u64,
    /// The longest a segment gets (ticks): cut at any PES start from there.
    limit: u64,
    /// The decode time of the first clock-stream PES seen with the tables known
    /// while no segment was being built: how long a random access point is awaited.
    waiting: Option<u64>,
    /// A segment was finished: a new programme layout is a break from it.
    emitted: bool,
    /// The end of the last chunk that did not make a whole packet.
    carry: Vec<u8>,
    /// Bytes seen in total, until the programme's clock stream was known.
    sniffed: usize,
    in_sync: bool,
    /// Packets were found at some point.
    found: bool,
    pat: Option<[u8; PACKET]>,
    pmt_pid: Option<u16>,
    /// The PMT's packets as last seen whole, and the ones of the section being read.
    pmt: Vec<u8>,
    pmt_reading: Vec<u8>,
    clock: Option<Clock>,
    building: Option<Building>,
    /// The next segment starts a new timeline.
    broken: bool,
    /// Only where segments start is wanted ([`Self::key_starts`]): no segment's bytes
    /// are gathered.
    starts_only: bool,
    /// Bytes pushed in total.
    pushed: u64,
    /// The offset (in all bytes pushed) of the packet being read.
    at: u64,
    /// Where segments started since [`Self::take_starts`] (offsets of their first
    /// packet), each with the tables it starts with.
    starts: Vec<(u64, Bytes)>,
}

#[derive(Clone, Copy, PartialEq, Debug)]
struct Clock {
    pid: u16,
    codec: Codec,
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Codec {
    H264,
    Hevc,
    Mpeg2,
    OtherVideo,
    Audio,
}

struct Building {
    bytes: Vec<u8>,
    /// Its size (`bytes` stay empty when only starts are wanted).
    len: usize,
    /// The decode time of its first PES of the clock stream.
    start: u64,
    /// The latest decode time of the clock stream in it.
    last: u64,
    discontinuity: bool,
}

impl Segmenter {
    /// A segmenter cutting segments of about `target` (at least a second).
    pub fn new(target: std::time::Duration) -> Self {
        Self {
            target: (target.as_millis() as u64 * 90).max(SECOND),
            quick: 0,
            quick_target: 0,
            limit: (target.as_millis() as u64 * 90).max(SECOND) * PATIENCE_HALVES / 2,
            waiting: None,
            emitted: false,
            carry: Vec::new(),
            sniffed: 0,
            in_sync: false,
            found: false,
            pat: None,
            pmt_pid: None,
            pmt: Vec::new(),
            pmt_reading: Vec::new(),
            clock: None,
            building: None,
            broken: false,
            starts_only: false,
            pushed: 0,
            at: 0,
            starts: Vec::new(),
        }
    }

    /// A segmenter that only finds where segments of about `target` would start (a
    /// key frame, after the programme tables): [`Self::take_starts`] says where. The
    /// segments it finishes carry no bytes. A relayed MPEG-TS stream's viewers who
    /// join it midway start there (`streams::session`).
    pub fn key_starts(target: std::time::Duration) -> Self {
        Self {
            starts_only: true,
            // Only at key frames, however far apart: no segment to bound.
            limit: u64::MAX / 4,
            ..Self::new(target)
        }
    }

    /// Where segments started since the last call, in order: the offset (in all the
    /// bytes pushed) of each one's first packet, and the PAT and PMT packets it is to
    /// be preceded by.
    pub fn take_starts(&mut self) -> Vec<(u64, Bytes)> {
        std::mem::take(&mut self.starts)
    }

    /// The same, but the first `count` segments are cut at the first key frame after
    /// `first` (a second or more) rather than after `target`: a player starts sooner,
    /// and is given more than one segment to start from. The declared target and the
    /// limit stay `target`'s.
    pub fn with_quick_start(
        target: std::time::Duration,
        count: u32,
        first: std::time::Duration,
    ) -> Self {
        let mut s = Self::new(target);
        s.quick = count;
        s.quick_target = (first.as_millis() as u64 * 90).clamp(SECOND, s.target);
        s
    }

    /// The `EXT-X-TARGETDURATION` (whole seconds): the limit rounded up. A segment's
    /// duration, rounded to the nearest second as RFC 8216 compares them, is never more.
    pub fn declared_target(&self) -> u64 {
        self.limit.div_ceil(SECOND)
    }

    /// No MPEG-TS packet was found in the first [`SNIFF`] bytes: the stream is
    /// something else (an MP4, a web page) and will never give a segment.
    /// The same when [`NO_TABLES`] bytes of packets came without a programme of
    /// video or audio: MPEG-TS that cannot be cut.
    pub fn not_ts(&self) -> bool {
        self.clock.is_none() && (!self.found && self.sniffed >= SNIFF || self.sniffed >= NO_TABLES)
    }

    /// A programme with video or audio was found: what is read can be cut.
    pub fn has_programme(&self) -> bool {
        self.clock.is_some()
    }

    /// Bytes were lost before the next chunk (a reader that fell behind): the segment
    /// being built is dropped (it misses bytes) and the next one is a discontinuity.
    pub fn gap(&mut self) {
        self.carry.clear();
        self.in_sync = false;
        if self.building.take().is_some() || self.clock.is_some() {
            self.broken = true;
        }
    }

    /// The stream ended: the segment being built, if it holds any time.
    pub fn finish(&mut self) -> Option<Segment> {
        self.carry.clear();
        finished(self.building.take()?, None)
    }

    /// Reads `chunk`; every segment it finished is pushed to `out`.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<Segment>) {
        if self.clock.is_none() {
            self.sniffed = self.sniffed.saturating_add(chunk.len());
        }
        // The offset of the first byte read below: `carry` is what ended the bytes
        // pushed before.
        let base = self.pushed - self.carry.len() as u64;
        self.pushed += chunk.len() as u64;
        let joined;
        let mut bytes: &[u8] = if self.carry.is_empty() {
            chunk
        } else {
            let mut all = std::mem::take(&mut self.carry);
            all.extend_from_slice(chunk);
            joined = all;
            &joined
        };
        let total = bytes.len();
        loop {
            if !self.in_sync || bytes.first() != Some(&SYNC) {
                match resync(bytes, 0) {
                    Some(at) => {
                        if at > 0 && self.in_sync {
                            // Bytes lost or added inside the stream.
                            self.lost();
                        }
                        self.in_sync = true;
                        self.found = true;
                        bytes = &bytes[at..];
                    }
                    None => {
                        // Too few bytes to tell: kept for the next chunk (at most
                        // what finding sync needs, so garbage cannot pile up).
                        let keep = bytes.len().min(3 * PACKET);
                        self.carry.extend_from_slice(&bytes[bytes.len() - keep..]);
                        return;
                    }
                }
            }
            if bytes.len() < PACKET {
                self.carry.extend_from_slice(bytes);
                return;
            }
            let (p, rest) = bytes.split_at(PACKET);
            let p: &[u8; PACKET] = p.try_into().expect("split at PACKET");
            self.at = base + (total - bytes.len()) as u64;
            self.packet(p, out);
            bytes = rest;
        }
    }

    /// Another programme layout (a new PMT PID, another clock stream): what is being
    /// built no longer fits it, and the next segment starts a new timeline.
    fn relayout(&mut self) {
        self.building = None;
        self.waiting = None;
        if self.emitted {
            self.broken = true;
        }
    }

    /// Sync was lost inside the stream: like a gap, but the caller goes on.
    fn lost(&mut self) {
        if self.building.take().is_some() {
            self.broken = true;
        }
    }

    fn packet(&mut self, p: &[u8; PACKET], out: &mut Vec<Segment>) {
        let pid = u16::from(p[1] & 0x1F) << 8 | u16::from(p[2]);
        let control = (p[3] >> 4) & 0x03;
        let pusi = p[1] & 0x40 != 0;
        // A damaged packet (transport_error_indicator) is kept but not read.
        let readable = p[1] & 0x80 == 0 && control != 0;
        let start = if control & 0x02 != 0 {
            5 + usize::from(p[4])
        } else {
            4
        };
        let payload = (readable && control & 0x01 != 0 && start < PACKET).then(|| &p[start..]);
        if pid == 0 {
            if let (true, Some(section)) = (pusi, payload) {
                if let Some(pmt) = pat_pmt_pid(section) {
                    self.pat = Some(*p);
                    if self.pmt_pid != Some(pmt) {
                        if self.pmt_pid.is_some() {
                            self.relayout();
                        }
                        self.pmt_pid = Some(pmt);
                        self.pmt.clear();
                        self.pmt_reading.clear();
                    }
                }
            }
        } else if Some(pid) == self.pmt_pid {
            if payload.is_some() {
                self.pmt_packet(p, pusi);
            }
        } else if let (Some(clock), true, Some(pes)) = (self.clock, pusi, payload) {
            if pid == clock.pid {
                if let Some(t) = decode_time(pes) {
                    let random_access = control & 0x02 != 0 && p[4] > 0 && p[5] & 0x40 != 0;
                    let key = random_access || starts_access_unit(clock.codec, pes);
                    self.clock_pes(p, t, key, out);
                    return;
                }
            }
        }
        let gather = !self.starts_only;
        if let Some(b) = &mut self.building {
            if b.len + PACKET > MAX_SEGMENT {
                self.building = None;
                self.broken = true;
                return;
            }
            b.len += PACKET;
            if gather {
                b.bytes.extend_from_slice(p);
            }
        }
    }

    /// A PES start of the clock stream at decode time `t`: where a segment may end.
    fn clock_pes(&mut self, p: &[u8; PACKET], t: u64, key: bool, out: &mut Vec<Segment>) {
        let target = if self.quick > 0 {
            self.quick_target
        } else {
            self.target
        };
        let limit = self.limit;
        let gather = !self.starts_only;
        let cut = match &mut self.building {
            None => {
                // No random access point for the limit: start at this PES anyway.
                let since = *self.waiting.get_or_insert(t);
                let waited = diff(t, since);
                if !(0..=JUMP).contains(&waited) {
                    // The timeline moved under the wait: count from here.
                    self.waiting = Some(t);
                }
                key || (limit as i64..=JUMP).contains(&waited)
            }
            Some(b) => {
                let step = diff(t, b.last);
                if step <= 0 && t != b.last || step > JUMP {
                    // The timeline broke: the segment ends at its last frame.
                    let b = self.building.take().expect("matched Some");
                    self.emit(out, b, None);
                    self.broken = true;
                    self.waiting = None;
                    if key {
                        self.start_segment(p, t);
                    }
                    return;
                }
                // Cut here when the next frame, at this pace, would pass the limit.
                let held = diff(t, b.start).max(0) as u64;
                // And, past `SIZE_CUT` bytes (a stream of over 20 Mbit/s), at this frame:
                // the segment stays under `MAX_SEGMENT`, shorter than the target.
                let cut = held >= target && key
                    || held + step.max(0) as u64 > limit
                    || gather && b.len >= SIZE_CUT && held > 0;
                if !cut {
                    b.last = t;
                    b.len += PACKET;
                    if gather {
                        b.bytes.extend_from_slice(p);
                    }
                }
                cut
            }
        };
        if cut {
            if let Some(b) = self.building.take() {
                self.emit(out, b, Some(t));
            }
            self.start_segment(p, t);
        }
    }

    /// Finishes segment `b`, which ends where the next starts (`next`) or at its last
    /// frame.
    fn emit(&mut self, out: &mut Vec<Segment>, b: Building, next: Option<u64>) {
        if let Some(s) = finished(b, next) {
            self.emitted = true;
            self.quick = self.quick.saturating_sub(1);
            out.push(s);
        }
    }

    /// A segment starting with packet `p` (a PES of the clock stream at `t`), after
    /// the programme tables; none while they are not known.
    fn start_segment(&mut self, p: &[u8; PACKET], t: u64) {
        let Some(pat) = &self.pat else { return };
        if self.pmt.is_empty() {
            return;
        }
        let len = 2 * PACKET + self.pmt.len();
        let bytes = if self.starts_only {
            let mut tables = Vec::with_capacity(len - PACKET);
            tables.extend_from_slice(pat);
            tables.extend_from_slice(&self.pmt);
            self.starts.push((self.at, Bytes::from(tables)));
            Vec::new()
        } else {
            let mut bytes = Vec::with_capacity(256 * PACKET);
            bytes.extend_from_slice(pat);
            bytes.extend_from_slice(&self.pmt);
            bytes.extend_from_slice(p);
            bytes
        };
        self.waiting = None;
        self.building = Some(Building {
            bytes,
            len,
            start: t,
            last: t,
            discontinuity: std::mem::take(&mut self.broken),
        });
    }

    /// A packet of the PMT's PID: the section is gathered (it may span packets) and,
    /// once whole, read for the clock stream.
    fn pmt_packet(&mut self, p: &[u8; PACKET], pusi: bool) {
        if pusi {
            self.pmt_reading.clear();
        } else if self.pmt_reading.is_empty() {
            return;
        }
        // Four packets hold the largest PMT section (1,021 bytes).
        if self.pmt_reading.len() >= 6 * PACKET {
            self.pmt_reading.clear();
            return;
        }
        self.pmt_reading.extend_from_slice(p);
        let mut section = Vec::with_capacity(1024);
        for (i, q) in self.pmt_reading.chunks_exact(PACKET).enumerate() {
            let control = (q[3] >> 4) & 0x03;
            let start = if control & 0x02 != 0 {
                5 + usize::from(q[4])
            } else {
                4
            };
            let Some(mut d) = q.get(start..) else { return };
            if i == 0 {
                // pointer_field
                let Some(rest) = d.first().and_then(|&n| d.get(1 + usize::from(n)..)) else {
                    return;
                };
                d = rest;
            }
            section.extend_from_slice(d);
        }
        let Some(len) = section_length(&section) else {
            return;
        };
        if section.len() < 3 + len {
            return;
        }
        if let Some(clock) = pmt_clock(&section[..3 + len]) {
            if self.clock.is_some_and(|c| c != clock) {
                self.relayout();
            }
            self.clock = Some(clock);
            self.pmt = std::mem::take(&mut self.pmt_reading);
        } else {
            self.pmt_reading.clear();
        }
    }
}

/// Segment `b` finished, ending at `next` (the next one's start) or its last frame;
/// none when it holds no time.
fn finished(b: Building, next: Option<u64>) -> Option<Segment> {
    let end = next.unwrap_or(b.last);
    let ticks = diff(end, b.start).max(0) as u64;
    let mut bytes = b.bytes;
    // Kept for the playlist's window: no spare capacity with it.
    bytes.shrink_to_fit();
    (ticks > 0).then(|| Segment {
        bytes: Bytes::from(bytes),
        duration: ticks as f64 / SECOND as f64,
        discontinuity: b.discontinuity,
    })
}

/// `section_length` of a PSI section (after its table id), if the header is there.
fn section_length(section: &[u8]) -> Option<usize> {
    let h = section.get(..3)?;
    Some(usize::from(h[1] & 0x0F) << 8 | usize::from(h[2]))
}

/// The PMT PID of the first programme a PAT section (a payload, pointer field first)
/// lists.
fn pat_pmt_pid(payload: &[u8]) -> Option<u16> {
    let pointer = usize::from(*payload.first()?);
    let s = payload.get(1 + pointer..)?;
    if *s.first()? != 0x00 {
        return None;
    }
    let len = section_length(s)?;
    // Programme loop: after the 8-byte header, before the 4-byte CRC.
    let body = s.get(8..(3 + len).checked_sub(4)?)?;
    body.chunks_exact(4).find_map(|e| {
        let programme = u16::from(e[0]) << 8 | u16::from(e[1]);
        (programme != 0).then_some(u16::from(e[2] & 0x1F) << 8 | u16::from(e[3]))
    })
}

/// The clock stream a whole PMT section lists: its first video stream, else its first
/// audio one.
fn pmt_clock(s: &[u8]) -> Option<Clock> {
    if *s.first()? != 0x02 {
        return None;
    }
    let info = usize::from(*s.get(10)? & 0x0F) << 8 | usize::from(*s.get(11)?);
    let mut at = 12 + info;
    let end = s.len().checked_sub(4)?;
    let mut audio = None;
    while at + 5 <= end {
        let kind = s[at];
        let pid = u16::from(s[at + 1] & 0x1F) << 8 | u16::from(s[at + 2]);
        let es_info = usize::from(s[at + 3] & 0x0F) << 8 | usize::from(s[at + 4]);
        let codec = match kind {
            0x1B => Some(Codec::H264),
            0x24 => Some(Codec::Hevc),
            0x01 | 0x02 => Some(Codec::Mpeg2),
            0x10 | 0x42 | 0xD1 | 0xEA => Some(Codec::OtherVideo),
            _ => None,
        };
        if let Some(codec) = codec {
            return Some(Clock { pid, codec });
        }
        let descriptors = s
            .get(at + 5..(at + 5 + es_info).min(end))
            .unwrap_or_default();
        if audio.is_none()
            && (matches!(kind, 0x03 | 0x04 | 0x0F | 0x11 | 0x1C | 0x81 | 0x87)
                || kind == 0x06 && dvb_audio(descriptors))
        {
            audio = Some(Clock {
                pid,
                codec: Codec::Audio,
            });
        }
        at += 5 + es_info;
    }
    audio
}

/// Whether the descriptors of a private-data stream (type 0x06, as DVB carries AC-3,
/// E-AC-3, DTS and AAC) say it is audio: an AC-3, E-AC-3, DTS or AAC descriptor, or a
/// registration of "AC-3", "EAC3" or a "DTS" format.
fn dvb_audio(mut d: &[u8]) -> bool {
    while let [tag, len, rest @ ..] = d {
        let len = usize::from(*len);
        let Some(body) = rest.get(..len) else { break };
        match tag {
            0x6A | 0x7A | 0x7B | 0x7C => return true,
            0x05 if matches!(
                body.get(..4),
                Some(b"AC-3" | b"EAC3" | b"DTS1" | b"DTS2" | b"DTS3")
            ) =>
            {
                return true
            }
            _ => {}
        }
        d = &rest[len..];
    }
    false
}

/// The decode time (DTS, else PTS) of the PES that `pes` starts, if its header has one.
fn decode_time(pes: &[u8]) -> Option<u64> {
    if pes.len() < 14 || pes[..3] != [0, 0, 1] {
        return None;
    }
    let flags = pes[7] >> 6;
    let header = usize::from(pes[8]);
    if flags & 0x02 == 0 || header < 5 {
        return None;
    }
    if flags == 0x03 && header >= 10 && pes.len() >= 19 {
        return Some(read_timestamp(&pes[14..19]));
    }
    Some(read_timestamp(&pes[9..14]))
}

/// Whether the first bytes of a clock-stream PES (in its first packet) start something
/// a decoder can begin with. Audio: every frame.
fn starts_access_unit(codec: Codec, pes: &[u8]) -> bool {
    let body = pes.get(9 + usize::from(pes[8])..).unwrap_or_default();
    let mut units = body
        .windows(4)
        .filter(|w| w[..3] == [0, 0, 1])
        .map(|w| w[3]);
    match codec {
        Codec::Audio => true,
        Codec::H264 => units.any(|n| n & 0x1F == 5),
        Codec::Hevc => units.any(|n| matches!((n >> 1) & 0x3F, 16..=21)),
        Codec::Mpeg2 => units.any(|n| n == 0xB3),
        Codec::OtherVideo => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const VIDEO: u16 = 0x100;
    const AUDIO: u16 = 0x101;
    const PMT: u16 = 0x1000;

    fn header(pid: u16, pusi: bool, cc: u8) -> [u8; PACKET] {
        let mut b = [0xFFu8; PACKET];
        b[0] = SYNC;
        b[1] = ((pid >> 8) as u8 & 0x1F) | if pusi { 0x40 } else { 0 };
        b[2] = pid as u8;
        b[3] = 0x10 | (cc & 0x0F);
        b
    }

    fn psi(pid: u16, section: &[u8]) -> [u8; PACKET] {
        let mut b = header(pid, true, 0);
        b[4] = 0;
        b[5..5 + section.len()].copy_from_slice(section);
        b
    }

    fn pat() -> [u8; PACKET] {
        // table 0, length 13: header 5 bytes, one programme, CRC (not checked).
        psi(
            0,
            &[
                0x00,
                0xB0,
                13,
                0,
                1,
                0xC1,
                0,
                0,
                0,
                1,
                0xE0 | (PMT >> 8) as u8,
                PMT as u8,
                0,
                0,
                0,
                0,
            ],
        )
    }

    fn pmt(streams: &[(u8, u16)]) -> [u8; PACKET] {
        let mut s = vec![0x02, 0xB0, 0, 0, 1, 0xC1, 0, 0, 0xE1, 0x00, 0xF0, 0];
        for &(kind, pid) in streams {
            s.extend_from_slice(&[kind, 0xE0 | (pid >> 8) as u8, pid as u8, 0xF0, 0]);
        }
        s.extend_from_slice(&[0, 0, 0, 0]);
        s[2] = (s.len() - 3) as u8;
        psi(PMT, &s)
    }

    /// A PES start of `pid` at decode time `t`, a random access point if `key`.
    fn pes(pid: u16, t: u64, key: bool) -> [u8; PACKET] {
        let mut b = header(pid, true, 0);
        b[3] = 0x30;
        b[4] = 1;
        b[5] = if key { 0x40 } else { 0 };
        let p = &mut b[6..];
        p[..9].copy_from_slice(&[0, 0, 1, 0xE0, 0, 0, 0x80, 0x80, 5]);
        p[9] = 0x21 | (((t >> 30) & 7) as u8) << 1;
        p[10] = (t >> 22) as u8;
        p[11] = (((t >> 15) & 0x7F) as u8) << 1 | 1;
        p[12] = (t >> 7) as u8;
        p[13] = ((t & 0x7F) as u8) << 1 | 1;
        // A non-IDR slice after the header, so only the indicator says "key".
        p[14..18].copy_from_slice(&[0, 0, 1, 0x01]);
        b
    }

    fn filler(pid: u16) -> [u8; PACKET] {
        header(pid, false, 0)
    }

    /// `seconds` of a stream: tables every second, 25 frames a second (each a PES
    /// start and one more packet), a key frame every `gop` frames (none: 0), audio
    /// beside.
    fn stream(from: u64, seconds: u64, gop: u64) -> Vec<u8> {
        stream_of(from, seconds, gop, 1)
    }

    /// `stream`, each video frame `fill` packets after its PES start.
    fn stream_of(from: u64, seconds: u64, gop: u64, fill: usize) -> Vec<u8> {
        let mut v = Vec::new();
        let frame = SECOND / 25;
        for f in 0..seconds * 25 {
            if f % 25 == 0 {
                v.extend_from_slice(&pat());
                v.extend_from_slice(&pmt(&[(0x1B, VIDEO), (0x0F, AUDIO)]));
            }
            let t = from + f * frame;
            v.extend_from_slice(&pes(VIDEO, t, gop > 0 && f % gop == 0));
            for _ in 0..fill {
                v.extend_from_slice(&filler(VIDEO));
            }
            v.extend_from_slice(&pes(AUDIO, t, false));
        }
        v
    }

    fn cut(bytes: &[u8], chunk: usize, target: u64) -> Vec<Segment> {
        let mut s = Segmenter::new(Duration::from_secs(target));
        let mut out = Vec::new();
        for c in bytes.chunks(chunk) {
            s.push(c, &mut out);
        }
        out
    }

    /// `key_starts` finds where `new` cuts, however the bytes come: each start's
    /// tables and the bytes from its offset on are the segment cut there, and no
    /// segment's bytes are gathered.
    #[test]
    fn key_starts_are_where_the_segments_start() {
        let bytes = stream(0, 20, 50);
        let segs = cut(&bytes, 188 * 64, 4);
        assert!(segs.len() >= 3, "{}", segs.len());
        // Aligned with the packets or not (a start whose packet began in an earlier
        // chunk).
        for chunk in [188 * 64, 1_000, 187, bytes.len()] {
            let mut k = Segmenter::key_starts(Duration::from_secs(4));
            let mut out = Vec::new();
            let mut starts = Vec::new();
            for c in bytes.chunks(chunk) {
                k.push(c, &mut out);
                starts.extend(k.take_starts());
            }
            // The last start's segment is still being built.
            assert_eq!(starts.len(), segs.len() + 1, "chunk {chunk}");
            for (seg, (at, tables)) in segs.iter().zip(&starts) {
                let at = usize::try_from(*at).unwrap();
                let body = &seg.bytes[tables.len()..];
                assert_eq!(&seg.bytes[..tables.len()], &tables[..], "chunk {chunk}");
                assert_eq!(body, &bytes[at..at + body.len()], "chunk {chunk}");
            }
            assert!(out.iter().all(|s| s.bytes.is_empty()), "chunk {chunk}");
        }
    }

    /// `key_starts` starts only at key frames, also where they come farther apart than
    /// a cut's limit (1.5 targets), and only after the target.
    #[test]
    fn key_starts_are_key_frames_however_far_apart() {
        for gop in [50, 250] {
            let bytes = stream(0, 30, gop);
            let mut k = Segmenter::key_starts(Duration::from_secs(1));
            let mut starts = Vec::new();
            for c in bytes.chunks(188 * 64) {
                k.push(c, &mut Vec::new());
                starts.extend(k.take_starts());
            }
            // Every key frame is a start (each comes at least the target after the last).
            assert_eq!(starts.len() as u64, 30 * 25 / gop, "gop {gop}");
            for (at, _) in starts {
                let p = &bytes[usize::try_from(at).unwrap()..][..PACKET];
                let random_access = p[3] & 0x20 != 0 && p[4] > 0 && p[5] & 0x40 != 0;
                assert!(p[1] & 0x40 != 0 && random_access, "gop {gop}: at {at}");
            }
        }
    }

    #[test]
    fn segments_start_at_key_frames_after_the_target_with_the_tables_first() {
        let bytes = stream(0, 20, 50);
        let segs = cut(&bytes, 188 * 64, 4);
        // Key frames every 2 s: cuts at 4 s, 8 s, ... the last segment stays open.
        assert_eq!(
            segs.len(),
            4,
            "{:?}",
            segs.iter().map(|s| s.duration).collect::<Vec<_>>()
        );
        for s in &segs {
            assert!((s.duration - 4.0).abs() < 1e-9, "{}", s.duration);
            assert!(!s.discontinuity);
            assert_eq!(s.bytes.len() % PACKET, 0);
            let first = &s.bytes[..PACKET];
            assert_eq!(first, &pat()[..], "a segment starts with the PAT");
            assert_eq!(
                &s.bytes[PACKET..2 * PACKET],
                &pmt(&[(0x1B, VIDEO), (0x0F, AUDIO)])[..]
            );
            let p = &s.bytes[2 * PACKET..3 * PACKET];
            assert_eq!(u16::from(p[1] & 0x1F) << 8 | u16::from(p[2]), VIDEO);
            assert_eq!(p[5] & 0x40, 0x40, "then a key frame");
        }
        // From the first cut on, every packet is in a segment, in order, after its
        // segment's tables.
        let joined: Vec<u8> = segs
            .iter()
            .flat_map(|s| s.bytes[2 * PACKET..].to_vec())
            .collect();
        let first_key = 2 * PACKET; // the stream starts with PAT, PMT, then a key frame
        assert_eq!(&joined[..], &bytes[first_key..first_key + joined.len()]);
    }

    #[test]
    fn a_quick_start_cuts_its_first_segments_at_the_first_key_frame_after_a_second() {
        let bytes = stream(0, 20, 50);
        let mut s = Segmenter::with_quick_start(Duration::from_secs(4), 2, Duration::from_secs(1));
        let mut segs = Vec::new();
        for c in bytes.chunks(188 * 64) {
            s.push(c, &mut segs);
        }
        // Key frames every 2 s: the first two segments end at the first key frame past
        // a second (2 s each), the rest past 4 s; the declared target is unchanged.
        let durations: Vec<f64> = segs.iter().map(|s| s.duration).collect();
        assert_eq!(durations.len(), 5, "{durations:?}");
        for (i, d) in durations.iter().enumerate() {
            let want = if i < 2 { 2.0 } else { 4.0 };
            assert!((d - want).abs() < 0.1, "segment {i}: {durations:?}");
        }
        assert_eq!(s.declared_target(), 6);
    }

    #[test]
    fn a_high_bitrate_stream_is_cut_by_size_not_dropped() {
        // About 32 Mbit/s (850 packets a frame), a key frame every 6 s: 6 s would be
        // 24 MB. Segments are cut at a frame past SIZE_CUT instead, and none is lost.
        let bytes = stream_of(0, 12, 150, 850);
        let segs = cut(&bytes, 188 * 1000, 4);
        assert!(segs.len() >= 3, "{} segments", segs.len());
        let mut covered = 0;
        for s in &segs {
            assert!(s.bytes.len() <= MAX_SEGMENT, "{} bytes", s.bytes.len());
            assert!(s.duration > 0.0 && s.duration < 6.0, "{}", s.duration);
            assert!(!s.discontinuity);
            covered += s.bytes.len() - 2 * PACKET;
        }
        // Every packet from the first cut to the last one, in segments.
        let first_key = 2 * PACKET;
        let joined: Vec<u8> = segs
            .iter()
            .flat_map(|s| s.bytes[2 * PACKET..].to_vec())
            .collect();
        assert_eq!(&joined[..], &bytes[first_key..first_key + covered]);
    }

    #[test]
    fn dvb_audio_is_told_by_its_descriptors() {
        assert!(dvb_audio(&[0x6A, 1, 0]));
        assert!(dvb_audio(&[0x0A, 4, b'e', b'n', b'g', 0, 0x7A, 0]));
        assert!(dvb_audio(&[0x05, 4, b'A', b'C', b'-', b'3']));
        // Subtitles, teletext, a cut descriptor: not audio.
        assert!(!dvb_audio(&[0x59, 8, 0, 0, 0, 0, 0, 0, 0, 0]));
        assert!(!dvb_audio(&[0x56, 5, 0, 0, 0, 0, 0]));
        assert!(!dvb_audio(&[0x6A, 9, 0]));
        // An audio-only programme whose AC-3 is a private stream has a clock.
        let mut s = vec![0x02, 0xB0, 0, 0, 1, 0xC1, 0, 0, 0xE1, 0x00, 0xF0, 0];
        s.extend_from_slice(&[0x06, 0xE1, 0x01, 0xF0, 3, 0x6A, 1, 0]);
        s.extend_from_slice(&[0, 0, 0, 0]);
        let clock = pmt_clock(&s).expect("a clock");
        assert_eq!((clock.pid, clock.codec), (0x101, Codec::Audio));
    }

    #[test]
    fn how_the_bytes_are_chunked_changes_nothing() {
        let bytes = stream(1_000, 12, 25);
        let whole = cut(&bytes, bytes.len(), 2);
        assert!(whole.len() >= 5);
        for chunk in [1, 7, 187, 188, 189, 4096] {
            let again = cut(&bytes, chunk, 2);
            assert_eq!(again.len(), whole.len(), "chunk {chunk}");
            for (a, b) in again.iter().zip(&whole) {
                assert_eq!(a.bytes, b.bytes, "chunk {chunk}");
                assert_eq!(a.duration, b.duration);
            }
        }
    }

    #[test]
    fn far_apart_key_frames_make_longer_segments_up_to_the_declared_target() {
        let cutter = Segmenter::new(Duration::from_secs(4));
        assert_eq!(cutter.declared_target(), 6);
        // A key frame every 5 s with a 4 s target: cut at each key frame.
        let segs = cut(&stream(0, 30, 125), 188 * 100, 4);
        assert!(segs.len() >= 4);
        assert!(
            segs.iter().all(|s| (s.duration - 5.0).abs() < 1e-9),
            "{:?}",
            segs.iter().map(|s| s.duration).collect::<Vec<_>>()
        );
        // Only the first frame is a key: cut where the next frame would pass 6 s.
        let segs = cut(&stream(0, 30, 100_000), 188 * 100, 4);
        assert!(segs.len() >= 3);
        assert!(
            segs.iter().all(|s| (s.duration - 6.0).abs() < 1e-9),
            "{:?}",
            segs.iter().map(|s| s.duration).collect::<Vec<_>>()
        );
        // No key frame that shows at all (intra refresh): the first segment starts
        // after 6 s of waiting, at a frame that is none.
        let segs = cut(&stream(0, 30, 0), 188 * 100, 4);
        assert_eq!(
            segs.len(),
            3,
            "{:?}",
            segs.iter().map(|s| s.duration).collect::<Vec<_>>()
        );
        assert!(
            segs.iter().all(|s| (s.duration - 6.0).abs() < 1e-9),
            "{:?}",
            segs.iter().map(|s| s.duration).collect::<Vec<_>>()
        );
        for segs in [
            cut(&stream(0, 30, 7), 188, 4),
            cut(&stream(0, 30, 0), 1000, 4),
        ] {
            assert!(
                segs.iter().all(|s| s.duration.round() as u64 <= 6),
                "{:?}",
                segs.iter().map(|s| s.duration).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn a_new_programme_layout_is_a_discontinuity() {
        let mut bytes = stream(0, 9, 25);
        // The upstream restarts with its PMT on another PID, its timeline going on.
        let other = 0x1001;
        let moved: Vec<u8> = stream(9 * SECOND, 9, 25)
            .chunks(PACKET)
            .flat_map(|p| {
                let mut p = p.to_vec();
                let pid = u16::from(p[1] & 0x1F) << 8 | u16::from(p[2]);
                if pid == 0 {
                    // PAT: the programme's PMT PID is 0x1001 now.
                    p[5 + 10] = (p[5 + 10] & 0xE0) | (other >> 8) as u8;
                    p[5 + 11] = other as u8;
                } else if pid == PMT {
                    p[1] = (p[1] & 0xE0) | (other >> 8) as u8;
                    p[2] = other as u8;
                }
                p
            })
            .collect();
        bytes.extend(moved);
        let segs = cut(&bytes, 188 * 10, 2);
        let marked: Vec<usize> = (0..segs.len()).filter(|&i| segs[i].discontinuity).collect();
        let durations: Vec<f64> = segs.iter().map(|s| s.duration).collect();
        assert_eq!(marked.len(), 1, "{durations:?}");
        assert!(marked[0] >= 3, "{marked:?}");
    }

    #[test]
    fn a_timeline_break_is_a_discontinuity_and_a_gap_drops_the_broken_segment() {
        let mut bytes = stream(0, 9, 25);
        bytes.extend(stream(0, 9, 25)); // starts over at 0
        let segs = cut(&bytes, 188 * 10, 2);
        let marked: Vec<bool> = segs.iter().map(|s| s.discontinuity).collect();
        assert_eq!(marked.iter().filter(|d| **d).count(), 1, "{marked:?}");
        assert!(segs.iter().all(|s| s.duration > 0.0));

        let mut s = Segmenter::new(Duration::from_secs(2));
        let mut out = Vec::new();
        let a = stream(0, 5, 25);
        s.push(&a[..a.len() / 2], &mut out);
        let before = out.len();
        s.gap();
        s.push(&a[a.len() / 2 + 1000..], &mut out);
        s.push(&stream(5 * SECOND, 6, 25), &mut out);
        assert!(out.len() > before);
        assert!(
            out[before].discontinuity,
            "the first segment after a gap is marked"
        );
        assert!(out[before + 1..].iter().all(|s| !s.discontinuity));
    }

    #[test]
    fn garbage_is_not_ts_and_nothing_panics() {
        let mut s = Segmenter::new(Duration::from_secs(2));
        let mut out = Vec::new();
        let junk: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
        for c in junk.chunks(1000) {
            s.push(c, &mut out);
        }
        assert!(s.not_ts());
        assert!(out.is_empty());
        let mut ts = Segmenter::new(Duration::from_secs(2));
        ts.push(&stream(0, 1, 25), &mut out);
        assert!(!ts.not_ts() && ts.has_programme());
        // Packets, but never a programme table: nothing to cut by.
        let mut tableless = Segmenter::new(Duration::from_secs(2));
        let stray: Vec<u8> = (0..6000).flat_map(|_| filler(VIDEO)).collect();
        tableless.push(&stray, &mut out);
        assert!(tableless.not_ts() && !tableless.has_programme());
        // Truncated and odd packets: PES headers cut short, adaptation fields too long.
        let mut odd = Vec::new();
        for i in 0..2000u32 {
            let mut p = pes(VIDEO, u64::from(i) * 3600, i % 7 == 0);
            p[4] = (i % 256) as u8;
            p[8 + (i as usize % 170)] = 0;
            odd.extend_from_slice(&p);
            if i % 50 == 0 {
                odd.extend_from_slice(&pat());
                let mut m = pmt(&[(0x1B, VIDEO)]);
                m[7] = (i % 256) as u8;
                odd.extend_from_slice(&m);
            }
        }
        let mut s = Segmenter::new(Duration::from_secs(1));
        for c in odd.chunks(333) {
            s.push(c, &mut out);
        }
        s.finish();
    }

    #[test]
    fn an_audio_only_stream_is_cut_at_any_frame_and_the_end_is_a_segment() {
        let mut v = Vec::new();
        v.extend_from_slice(&pat());
        v.extend_from_slice(&pmt(&[(0x0F, AUDIO)]));
        for f in 0..300u64 {
            v.extend_from_slice(&pes(AUDIO, f * 1920, false));
        }
        let mut s = Segmenter::new(Duration::from_secs(2));
        let mut out = Vec::new();
        s.push(&v, &mut out);
        assert!(out.len() >= 2, "{out:?}");
        assert!(
            out.iter().all(|s| (s.duration - 2.0).abs() < 0.03),
            "{out:?}"
        );
        let last = s.finish().expect("the rest is a segment");
        assert!(last.duration > 0.0);
    }
}
