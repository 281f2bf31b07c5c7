//! MPEG-TS continuity across joined segments (pure: no IO, no clock).
//!
//! A `.ts` session (`streams::session`) sends a channel's HLS segments one after the
//! other. Each segment is a valid MPEG-TS on its own, but where two meet the stream may
//! not be: a looping or restarted upstream starts its timestamps over, every PID's
//! continuity counter starts again, a failover brings another encoder's timeline. A
//! demuxer reading the joined bytes (Plex's and Jellyfin's ffmpeg, a DVR recording) then
//! sees corrupt packets and timestamps going backwards. [`Continuity`] rewrites the
//! packets as they pass so that the joined stream is one continuous MPEG-TS:
//!
//! - **Continuity counters**: at each join every PID's counter is re-anchored to go on
//!   from the last one sent (a packet with payload adds one, an adaptation-only packet
//!   keeps it); within a segment the upstream's own steps (and so any loss it signals)
//!   are kept.
//! - **Timestamps**: when the first timestamp after a join (or any PCR) does not go on
//!   from where that PID left off (not after it, however little: a DTS going back even
//!   0.6 s breaks ffmpeg's muxers; or more than [`FORWARD`] ahead), one offset is added
//!   to every following PTS, DTS and PCR so the timeline goes on (modulo 2^33; the
//!   PCR's extension is kept). One offset for all PIDs keeps audio and video in sync;
//!   any other PID whose first timestamp after the join would go back pushes it forward.
//!   The decode time (DTS, else PTS) is compared: B-frames' PTS go back by design.
//!   The `discontinuity_indicator` is not used: ffmpeg only stops checking counters on
//!   it; timestamps going backwards still break its muxers.
//!
//! It works in place, per 188-byte packet, without allocating: a chunk that needs no
//! change is passed on as it is (shared with the segment cache); one that does is
//! copied once (or taken, when nothing else holds it) and changed. Each packet stands
//! alone: one whose sync byte is damaged, or whose transport_error_indicator is set,
//! passes as it was while the rest of its segment is rewritten; where sync is lost
//! (bytes missing, a chunk starting inside a packet) it is found again where sync
//! bytes recur every 188 bytes. No byte moves. Bytes that are not MPEG-TS (fMP4 or AAC
//! segments: no run of sync bytes) pass through untouched, and nothing an upstream
//! sends can make it panic.

use bytes::{Bytes, BytesMut};

/// MPEG-TS packet size and sync byte.
pub const PACKET: usize = 188;
pub const SYNC: u8 = 0x47;

const NULL_PID: u16 = 0x1FFF;
const PIDS: usize = 8192;
/// PTS, DTS and the PCR base count 90 kHz ticks modulo 2^33.
const WRAP: u64 = 1 << 33;
const MASK: u64 = WRAP - 1;
const SECOND: i64 = 90_000;
/// How far behind the one that decided a join another PID's first timestamp after it
/// may be for the offset to move forward so that this PID too goes on (the PIDs of one
/// program drift a little apart around a join); one further behind is not followed, as
/// it would open a gap in every other PID.
pub const BACKWARD: i64 = SECOND;
/// How far ahead of where a PID left off its next timestamp may be and still continue
/// the timeline: a skipped segment or two leave a gap, an upstream restart is closed.
pub const FORWARD: i64 = 3 * SECOND;
/// Timestamps of a PID at most this far apart make it dense: only dense PIDs (video,
/// audio, the PCR) decide whether the timeline jumped; sparse ones (subtitles,
/// metadata) only follow.
const DENSE: i64 = SECOND;
/// The step assumed after a PID whose step is unknown (a 30 fps frame).
const DEFAULT_STEP: u64 = 3_000;
/// PIDs whose timestamps are followed; beyond this, PIDs only follow the offset.
const MAX_TRACKS: usize = 16;

// Per-PID counter state, packed in a u16.
const CC_LAST: u16 = 0x000F;
const CC_DELTA_SHIFT: u16 = 4;
const CC_SEEN: u16 = 0x0100;
const CC_ANCHOR: u16 = 0x0200;

/// The state of one continuous output stream: feed it every chunk of whole packets in
/// order ([`Continuity::apply`]) and say where a new segment (or source) starts
/// ([`Continuity::join`]).
pub struct Continuity {
    /// Per PID: the last counter sent (bits 0-3), what is added to the upstream's
    /// counter (bits 4-7), seen (bit 8), re-anchor at the next packet (bit 9).
    cc: Box<[u16]>,
    clock: Clock,
    progress: Progress,
}

impl Default for Continuity {
    fn default() -> Self {
        Self {
            cc: vec![0u16; PIDS].into_boxed_slice(),
            clock: Clock::default(),
            progress: Progress::default(),
        }
    }
}

/// How much media time has passed through, read from the upstream's own PCRs (one
/// PCR PID per join: the first seen), for judging whether a source sends media as fast
/// as it plays. Only steps forward of at most [`PROGRESS_STEP`] count: a step back or a
/// jump (a loop, an encoder restart) is no media.
#[derive(Default)]
struct Progress {
    pid: Option<u16>,
    last: u64,
    ticks: u64,
    pcrs: u64,
}

/// The longest step between two PCRs that counts as media time (they come at most
/// 100 ms apart in a conforming stream).
const PROGRESS_STEP: i64 = SECOND;

impl Progress {
    fn pcr(&mut self, pid: u16, base: u64) {
        match self.pid {
            None => self.pid = Some(pid),
            Some(p) if p != pid => return,
            Some(_) => {
                let step = diff(base, self.last);
                if (1..=PROGRESS_STEP).contains(&step) {
                    self.ticks += step as u64;
                }
            }
        }
        self.last = base;
        self.pcrs += 1;
    }
}

/// The timestamp offset and where each PID's timeline left off.
#[derive(Default)]
struct Clock {
    /// Added (modulo 2^33) to every PTS, DTS and PCR base.
    offset: u64,
    tracks: Vec<Track>,
    /// The latest PCR sent: the reference for a PCR PID never seen (another source).
    latest_pcr: Option<u64>,
    /// A join happened and no dense timestamp has decided about it yet.
    pending: bool,
    /// The last decision moved the timeline: each PID's first timestamp after it may
    /// push the offset forward (never back) so that no PID goes backwards.
    shifted: bool,
}

/// One PID's timeline (its PCR, or its PES decode times), as sent.
struct Track {
    pid: u16,
    pcr: bool,
    last: u64,
    /// The last step between two of its timestamps (ticks), when one was seen.
    step: Option<u64>,
    /// Its last two timestamps were at most [`DENSE`] apart.
    dense: bool,
    /// Not seen since the last join.
    fresh: bool,
}

/// What one packet needs changed: positions in the packet and new values.
#[derive(Default, Clone, Copy)]
struct Edit {
    cc: Option<u8>,
    pcr: Option<(usize, u64)>,
    pts: Option<(usize, u64)>,
    dts: Option<(usize, u64)>,
}

impl Edit {
    fn is_empty(&self) -> bool {
        self.cc.is_none() && self.pcr.is_none() && self.pts.is_none() && self.dts.is_none()
    }

    fn write(&self, p: &mut [u8]) {
        if let Some(cc) = self.cc {
            p[3] = (p[3] & 0xF0) | cc;
        }
        if let Some((at, base)) = self.pcr {
            write_pcr_base(&mut p[at..at + 6], base);
        }
        if let Some((at, t)) = self.pts {
            write_timestamp(&mut p[at..at + 5], t);
        }
        if let Some((at, t)) = self.dts {
            write_timestamp(&mut p[at..at + 5], t);
        }
    }
}

/// Sync bytes in a row that find a packet boundary again (a stray 0x47 in other bytes
/// rarely repeats 188 bytes on, twice).
const RUN: usize = 3;

/// A packet may start at `q`: a sync byte is there, or the chunk has ended.
fn boundary(b: &[u8], q: usize) -> bool {
    b.get(q).is_none_or(|&x| x == SYNC)
}

/// The first position from `from` where packets start: [`RUN`] sync bytes 188 bytes
/// apart, or, for a chunk of fewer packets, every one of its packets starting with it
/// (a lone 0x47 before a chunk's last 188 bytes must not count).
pub(crate) fn resync(b: &[u8], from: usize) -> Option<usize> {
    let last = b.len().checked_sub(PACKET)?;
    let whole = b.len().is_multiple_of(PACKET);
    (from..=last).find(|&p| {
        (0..RUN).all(|k| {
            let q = p + k * PACKET;
            b.get(q) == Some(&SYNC) || p == 0 && whole && q >= b.len()
        })
    })
}

/// Whether a timestamp `t` that should follow `last` (ideally at `expected`) breaks the
/// timeline: not after `last` (any step back, however small: a demuxer wants decode
/// times strictly increasing), or more than [`FORWARD`] past `expected`.
fn jumped(t: u64, last: u64, expected: u64) -> bool {
    diff(t, last) <= 0 || diff(t, expected) > FORWARD
}

/// `a - b` on the 33-bit timestamp circle, in -2^32..2^32.
pub(crate) fn diff(a: u64, b: u64) -> i64 {
    let d = a.wrapping_sub(b) & MASK;
    if d >= WRAP / 2 {
        d as i64 - WRAP as i64
    } else {
        d as i64
    }
}

pub(crate) fn read_timestamp(b: &[u8]) -> u64 {
    (u64::from(b[0] >> 1) & 0x07) << 30
        | u64::from(b[1]) << 22
        | u64::from(b[2] >> 1) << 15
        | u64::from(b[3]) << 7
        | u64::from(b[4] >> 1)
}

/// Writes a PTS/DTS field, keeping its 4-bit prefix and marker bits.
fn write_timestamp(b: &mut [u8], t: u64) {
    b[0] = (b[0] & 0xF1) | (((t >> 30) & 0x07) as u8) << 1;
    b[1] = (t >> 22) as u8;
    b[2] = (b[2] & 0x01) | (((t >> 15) & 0x7F) as u8) << 1;
    b[3] = (t >> 7) as u8;
    b[4] = (b[4] & 0x01) | ((t & 0x7F) as u8) << 1;
}

fn read_pcr_base(b: &[u8]) -> u64 {
    u64::from(b[0]) << 25
        | u64::from(b[1]) << 17
        | u64::from(b[2]) << 9
        | u64::from(b[3]) << 1
        | u64::from(b[4] >> 7)
}

/// Writes a PCR's 33-bit base, keeping its reserved bits and 9-bit extension.
fn write_pcr_base(b: &mut [u8], base: u64) {
    b[0] = (base >> 25) as u8;
    b[1] = (base >> 17) as u8;
    b[2] = (base >> 9) as u8;
    b[3] = (base >> 1) as u8;
    b[4] = (b[4] & 0x7F) | ((base & 1) as u8) << 7;
}

/// Where one packet's fields are (`p`: 188 bytes starting with the sync byte).
pub(crate) struct Fields {
    pub pid: u16,
    /// It carries a payload (its counter counts).
    pub payload: bool,
    /// The offsets of its PCR (6 bytes), PTS and DTS (5 bytes each), when present.
    pub pcr: Option<usize>,
    pub pts: Option<usize>,
    pub dts: Option<usize>,
}

/// `p`'s fields; `None` for a null packet, one without payload or adaptation field, or
/// one its demodulator marked damaged (transport_error_indicator): its PID, counter and
/// timestamps cannot be trusted. Inlined: `Continuity` reads every packet of a stream
/// through it (`cargo bench --bench ts`: a scan 1.3x slower when it was a call).
#[inline]
pub(crate) fn fields(p: &[u8]) -> Option<Fields> {
    let pid = u16::from(p[1] & 0x1F) << 8 | u16::from(p[2]);
    let control = (p[3] >> 4) & 0x03;
    if pid == NULL_PID || control == 0 || p[1] & 0x80 != 0 {
        return None;
    }
    let payload = control & 0x01 != 0;
    let pusi = p[1] & 0x40 != 0;
    let mut f = Fields {
        pid,
        payload,
        pcr: None,
        pts: None,
        dts: None,
    };
    let mut start = 4;
    if control & 0x02 != 0 {
        let len = usize::from(p[4]);
        start = 5 + len;
        // PCR flag, with the 6 PCR bytes inside the adaptation field.
        if len >= 7 && p[5] & 0x10 != 0 {
            f.pcr = Some(6);
        }
    }
    if payload && pusi && start + 9 <= PACKET {
        let pes = &p[start..];
        if pes[..3] == [0, 0, 1] && has_pes_header(pes[3]) {
            // PTS_DTS_flags, and the header's own length: the fields must lie inside.
            let flags = pes[7] >> 6;
            let header = usize::from(pes[8]);
            if flags & 0x02 != 0 && header >= 5 && pes.len() >= 14 {
                f.pts = Some(start + 9);
            }
            if flags == 0x03 && header >= 10 && pes.len() >= 19 {
                f.dts = Some(start + 14);
            }
        }
    }
    Some(f)
}

/// Adds `ticks` (modulo 2^33) to the PCR, PTS and DTS packet `p` carries.
pub(crate) fn shift_timestamps(p: &mut [u8], f: &Fields, ticks: u64) {
    if let Some(at) = f.pcr {
        let base = read_pcr_base(&p[at..at + 6]);
        write_pcr_base(&mut p[at..at + 6], (base + ticks) & MASK);
    }
    for at in [f.pts, f.dts].into_iter().flatten() {
        let t = read_timestamp(&p[at..at + 5]);
        write_timestamp(&mut p[at..at + 5], (t + ticks) & MASK);
    }
}

/// PES stream ids whose header carries the optional fields (PTS, DTS).
fn has_pes_header(stream_id: u8) -> bool {
    !matches!(
        stream_id,
        0xBC | 0xBE | 0xBF | 0xF0 | 0xF1 | 0xF2 | 0xF8 | 0xFF
    )
}

impl Continuity {
    /// A new segment (or a new source, or a reconnection) starts with the next packet.
    pub fn join(&mut self) {
        for s in self.cc.iter_mut() {
            if *s & CC_SEEN != 0 {
                *s |= CC_ANCHOR;
            }
        }
        self.clock.join();
        // The next source's clock is its own.
        self.progress.pid = None;
    }

    /// The media time passed through so far (90 kHz ticks, counted from the
    /// upstream's PCRs: only small steps forward), and how many PCRs were read: a
    /// stream with none cannot be judged by it.
    pub fn media_progress(&self) -> (u64, u64) {
        (self.progress.ticks, self.progress.pcrs)
    }

    /// `chunk` made continuous with what came before: the same bytes when nothing needs
    /// changing or it holds no MPEG-TS packets, else a changed copy (or the chunk itself
    /// changed, when nothing else holds it).
    ///
    /// Works per packet: every whole 188-byte packet that starts with the sync byte is
    /// read (and changed if need be); a packet whose sync byte is damaged passes as it
    /// was, and where sync is lost (or the chunk starts inside a packet) it is found
    /// again where sync bytes recur every 188 bytes. No byte ever moves.
    pub fn apply(&mut self, chunk: Bytes) -> Bytes {
        let len = chunk.len();
        let Some(mut at) = resync(&chunk, 0) else {
            return chunk;
        };
        let mut shared = chunk;
        let mut owned: Option<BytesMut> = None;
        while at + PACKET <= len {
            let bytes: &[u8] = owned.as_deref().unwrap_or(&shared);
            let next = at + PACKET;
            // Still in sync: the next packet (or the one after, if the next one's sync
            // byte is damaged) starts where it should. Else bytes were lost or added
            // here: this packet is left as it is and sync looked for again.
            if !(boundary(bytes, next) || boundary(bytes, next + PACKET)) {
                match resync(bytes, at + 1) {
                    Some(found) => at = found,
                    None => break,
                }
                continue;
            }
            if bytes[at] != SYNC {
                // A damaged packet between two good ones passes as it is.
                at = next;
                continue;
            }
            let range = at..at + PACKET;
            let edit = self.packet(&bytes[range.clone()]);
            if !edit.is_empty() {
                let buf = owned.get_or_insert_with(|| {
                    std::mem::take(&mut shared)
                        .try_into_mut()
                        .unwrap_or_else(|b| BytesMut::from(&b[..]))
                });
                edit.write(&mut buf[range]);
            }
            at = next;
        }
        owned.map_or(shared, BytesMut::freeze)
    }

    /// Reads one packet (`p` is 188 bytes starting with the sync byte), updates the state
    /// and says what to change in it.
    fn packet(&mut self, p: &[u8]) -> Edit {
        let mut edit = Edit::default();
        // A damaged packet neither reads nor moves.
        let Some(f) = fields(p) else {
            return edit;
        };
        edit.cc = self.counter(f.pid, f.payload, p[3] & 0x0F);
        if let Some(at) = f.pcr {
            let base = read_pcr_base(&p[at..at + 6]);
            self.progress.pcr(f.pid, base);
            self.clock.see(f.pid, true, base);
            edit.pcr = self.clock.shifted_at(at, base);
        }
        let pts = f.pts.map(|at| (at, read_timestamp(&p[at..at + 5])));
        let dts = f.dts.map(|at| (at, read_timestamp(&p[at..at + 5])));
        // The decode time orders a PID's timeline (PTS when there is no DTS).
        if let Some((_, decode)) = dts.or(pts) {
            self.clock.see(f.pid, false, decode);
            edit.pts = pts.and_then(|(at, t)| self.clock.shifted_at(at, t));
            edit.dts = dts.and_then(|(at, t)| self.clock.shifted_at(at, t));
        }
        edit
    }

    /// The counter to write for a packet of `pid` whose upstream counter is `cc`, if it
    /// changes.
    fn counter(&mut self, pid: u16, payload: bool, cc: u8) -> Option<u8> {
        let slot = &mut self.cc[usize::from(pid)];
        let state = *slot;
        if state & CC_SEEN == 0 {
            *slot = CC_SEEN | u16::from(cc);
            return None;
        }
        let last = (state & CC_LAST) as u8;
        let mut delta = (state >> CC_DELTA_SHIFT) as u8 & 0x0F;
        if state & CC_ANCHOR != 0 {
            let want = if payload { (last + 1) & 0x0F } else { last };
            delta = want.wrapping_sub(cc) & 0x0F;
        }
        let out = (cc + delta) & 0x0F;
        *slot = CC_SEEN | u16::from(delta) << CC_DELTA_SHIFT | u16::from(out);
        (out != cc).then_some(out)
    }
}

impl Clock {
    fn join(&mut self) {
        self.pending = true;
        self.shifted = false;
        for t in &mut self.tracks {
            t.fresh = true;
        }
    }

    /// Where to write `t` shifted by the offset (at byte `at`), when the offset moves it.
    fn shifted_at(&self, at: usize, t: u64) -> Option<(usize, u64)> {
        (self.offset != 0).then_some((at, (t + self.offset) & MASK))
    }

    /// Moves the offset so that `from` (as sent now) becomes `to`.
    fn shift(&mut self, from: u64, to: u64) {
        self.offset = self.offset.wrapping_add(to.wrapping_sub(from)) & MASK;
    }

    /// A timestamp `input` (upstream's) of `pid`'s PCR or PES: decides whether the
    /// timeline jumped, moves the offset if so, and notes where the PID is.
    fn see(&mut self, pid: u16, pcr: bool, input: u64) {
        let mut t = (input + self.offset) & MASK;
        let index = self
            .tracks
            .iter()
            .position(|k| k.pid == pid && k.pcr == pcr);
        match index.map(|i| &self.tracks[i]) {
            Some(track) if track.dense && (self.pending || pcr) => {
                // Where this PID should go on; a PCR is checked on every packet (it is
                // dense by rule), so a jump inside a segment is caught too.
                let expected = (track.last + track.step.unwrap_or(DEFAULT_STEP)) & MASK;
                let jumped = jumped(t, track.last, expected);
                if self.pending || jumped {
                    self.pending = false;
                    self.shifted = jumped;
                    if jumped {
                        self.shift(t, expected);
                        t = expected;
                        for k in &mut self.tracks {
                            k.fresh = true;
                        }
                    }
                }
            }
            None if self.pending && pcr => {
                // A PCR PID never seen (another source): it goes on from the latest PCR.
                self.pending = false;
                self.shifted = false;
                if let Some(latest) = self.latest_pcr {
                    let expected = (latest + DEFAULT_STEP) & MASK;
                    if jumped(t, latest, expected) {
                        self.shift(t, expected);
                        t = expected;
                        self.shifted = true;
                    }
                }
            }
            _ => {}
        }
        if let Some(i) = index {
            let track = &self.tracks[i];
            if track.fresh {
                // The first timestamp of this PID since a join: the offset goes forward
                // rather than this PID going back (whatever decided the join), nor, when
                // the timeline moved, overlapping what it sent (its last PES lasts a
                // step: an audio PES often holds several frames).
                let to = (track.last + track.step.unwrap_or(DEFAULT_STEP)) & MASK;
                let d = diff(t, to);
                let behind = if self.shifted {
                    d < 0
                } else {
                    diff(t, track.last) <= 0
                };
                if behind && d > -BACKWARD {
                    self.shift(t, to);
                    t = to;
                    // The timeline moved: the PIDs still to come must not overlap either.
                    self.shifted = true;
                }
            }
            let track = &mut self.tracks[i];
            let step = diff(t, track.last);
            track.dense = (1..=DENSE).contains(&step);
            if track.dense {
                track.step = Some(step as u64);
            }
            track.last = t;
            track.fresh = false;
        } else if self.tracks.len() < MAX_TRACKS {
            self.tracks.push(Track {
                pid,
                pcr,
                last: t,
                step: None,
                // One timestamp says nothing yet; a PCR is taken as dense at once.
                dense: pcr,
                fresh: false,
            });
        }
        if pcr && self.latest_pcr.is_none_or(|l| diff(t, l) > 0) {
            self.latest_pcr = Some(t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One synthetic packet: `pid`, counter `cc`, a payload unless `adaptation_only`, a
    /// PCR base (extension 123) and a PES header with PTS (and DTS) when given.
    #[derive(Clone, Copy, Default)]
    struct P {
        pid: u16,
        cc: u8,
        adaptation_only: bool,
        pcr: Option<u64>,
        pts: Option<u64>,
        dts: Option<u64>,
    }

    fn packet(p: P) -> [u8; PACKET] {
        let mut b = [0xFFu8; PACKET];
        b[0] = SYNC;
        b[1] = ((p.pid >> 8) as u8 & 0x1F) | if p.pts.is_some() { 0x40 } else { 0 };
        b[2] = p.pid as u8;
        let has_af = p.adaptation_only || p.pcr.is_some();
        let control = match (has_af, p.adaptation_only) {
            (true, true) => 0x20,
            (true, false) => 0x30,
            _ => 0x10,
        };
        b[3] = control | (p.cc & 0x0F);
        let mut at = 4;
        if has_af {
            let len = if p.adaptation_only { 183 } else { 7 };
            b[4] = len as u8;
            b[5] = if p.pcr.is_some() { 0x10 } else { 0 };
            if let Some(base) = p.pcr {
                b[6..12].copy_from_slice(&[0, 0, 0, 0, 0x7E, 123]);
                write_pcr_base(&mut b[6..12], base);
            }
            at = 5 + len;
        }
        if let Some(pts) = p.pts {
            let pes = &mut b[at..];
            pes[..6].copy_from_slice(&[0, 0, 1, 0xE0, 0, 0]);
            pes[6] = 0x80;
            pes[7] = if p.dts.is_some() { 0xC0 } else { 0x80 };
            pes[8] = if p.dts.is_some() { 10 } else { 5 };
            pes[9] = if p.dts.is_some() { 0x31 } else { 0x21 };
            pes[11] = 1;
            pes[13] = 1;
            write_timestamp(&mut pes[9..14], pts);
            if let Some(dts) = p.dts {
                pes[14] = 0x11;
                pes[16] = 1;
                pes[18] = 1;
                write_timestamp(&mut pes[14..19], dts);
            }
        }
        b
    }

    fn chunk(ps: &[P]) -> Bytes {
        let mut v = Vec::with_capacity(ps.len() * PACKET);
        for p in ps {
            v.extend_from_slice(&packet(*p));
        }
        Bytes::from(v)
    }

    /// What a packet says: counter, PCR (base, extension), PTS, DTS.
    type Seen = (u8, Option<(u64, u16)>, Option<u64>, Option<u64>);

    fn read(p: &[u8]) -> Seen {
        let cc = p[3] & 0x0F;
        let mut at = 4;
        let mut pcr = None;
        if p[3] & 0x20 != 0 {
            if p[5] & 0x10 != 0 {
                pcr = Some((
                    read_pcr_base(&p[6..12]),
                    u16::from(p[10] & 1) << 8 | u16::from(p[11]),
                ));
            }
            at = 5 + usize::from(p[4]);
        }
        let (mut pts, mut dts) = (None, None);
        if p[1] & 0x40 != 0 && at + 19 <= PACKET {
            let pes = &p[at..];
            pts = Some(read_timestamp(&pes[9..14]));
            if pes[7] >> 6 == 3 {
                dts = Some(read_timestamp(&pes[14..19]));
            }
        }
        (cc, pcr, pts, dts)
    }

    fn packets(b: &Bytes) -> Vec<Seen> {
        b.chunks_exact(PACKET).map(read).collect()
    }

    /// A segment of `n` video frames 40 ms apart from `t0`: each frame one PES packet
    /// (PTS 0.1 s after DTS) preceded by a PCR-only packet, counters from `cc0`.
    fn segment(t0: u64, n: usize, cc0: u8) -> Vec<P> {
        let mut out = Vec::new();
        for i in 0..n {
            let t = (t0 + i as u64 * 3600) & MASK;
            out.push(P {
                pid: 0x100,
                cc: (cc0 + i as u8) & 0x0F,
                adaptation_only: true,
                pcr: Some(t),
                ..P::default()
            });
            out.push(P {
                pid: 0x100,
                cc: (cc0 + i as u8 + 1) & 0x0F,
                pts: Some((t + 9000) & MASK),
                dts: Some(t),
                ..P::default()
            });
        }
        // Counters: the PCR-only packet keeps the previous counter, the PES adds one.
        for (i, p) in out.iter_mut().enumerate() {
            p.cc = (cc0 + (i as u8).div_ceil(2)) & 0x0F;
        }
        out
    }

    fn check_continuous(all: &[Seen], ps: &[P]) {
        let mut last_cc: Option<u8> = None;
        let mut last_dts: Option<u64> = None;
        let mut last_pcr: Option<u64> = None;
        for (got, p) in all.iter().zip(ps) {
            if let Some(prev) = last_cc {
                let want = if p.adaptation_only {
                    prev
                } else {
                    (prev + 1) & 0x0F
                };
                assert_eq!(got.0, want, "counter");
            }
            last_cc = Some(got.0);
            if let Some(dts) = got.3 {
                if let Some(prev) = last_dts {
                    let d = diff(dts, prev);
                    assert!((1..=FORWARD).contains(&d), "DTS {prev} -> {dts}");
                }
                last_dts = Some(dts);
                let pts = got.2.unwrap();
                assert_eq!(diff(pts, dts), 9000, "PTS and DTS keep their distance");
            }
            if let Some((base, ext)) = got.1 {
                assert_eq!(ext, 123, "the PCR extension is kept");
                if let Some(prev) = last_pcr {
                    assert!(
                        (1..=FORWARD).contains(&diff(base, prev)),
                        "PCR {prev} -> {base}"
                    );
                }
                last_pcr = Some(base);
            }
        }
    }

    fn run(c: &mut Continuity, segments: &[Vec<P>]) -> Vec<Seen> {
        let mut all = Vec::new();
        for (i, s) in segments.iter().enumerate() {
            if i > 0 {
                c.join();
            }
            all.extend(packets(&c.apply(chunk(s))));
        }
        all
    }

    #[test]
    fn media_progress_counts_pcr_steps_forward_only() {
        let mut c = Continuity::default();
        assert_eq!(c.media_progress(), (0, 0));
        // 100 frames 40 ms apart: 99 steps of 3,600 ticks (the first PCR is the start).
        c.apply(chunk(&segment(90_000, 100, 0)));
        assert_eq!(c.media_progress(), (99 * 3600, 100));
        // The same clip again without a join (a loop): its first PCR goes back, which
        // is no media, then its steps count.
        c.apply(chunk(&segment(90_000, 100, 4)));
        assert_eq!(c.media_progress(), (2 * 99 * 3600, 200));
        // A jump of 10 s forward is no media either.
        c.apply(chunk(&segment(90_000 + 100 * 3600 + 900_000, 10, 8)));
        assert_eq!(c.media_progress(), (2 * 99 * 3600 + 9 * 3600, 210));
        // After a join the next source's first PCR starts a new count, and a PCR of
        // another PID (another program) is not counted twice.
        c.join();
        let mut other = segment(5_000_000, 10, 0);
        for p in &mut other {
            p.pid = 0x200;
        }
        c.apply(chunk(&other));
        assert_eq!(c.media_progress(), (2 * 99 * 3600 + 18 * 3600, 220));
        c.apply(chunk(&segment(7_000_000, 10, 0)));
        assert_eq!(c.media_progress(), (2 * 99 * 3600 + 18 * 3600, 220));
    }

    #[test]
    fn a_continuous_stream_passes_unchanged_and_uncopied() {
        let mut c = Continuity::default();
        let a = chunk(&segment(90_000, 10, 0));
        let b = chunk(&segment(90_000 + 36_000, 10, 10));
        let out = c.apply(a.clone());
        assert_eq!(out.as_ptr(), a.as_ptr());
        c.join();
        let out = c.apply(b.clone());
        assert_eq!(out.as_ptr(), b.as_ptr(), "no copy when nothing changes");
        assert_eq!(out, b);
    }

    #[test]
    fn a_loop_back_in_time_goes_on_from_where_it_left() {
        // The demo: 9.38 s -> 1.42 s, counters restarting.
        let segs = [
            segment(127_920, 100, 0),
            segment(127_920, 100, 0),
            segment(127_920, 100, 0),
        ];
        let mut c = Continuity::default();
        let all = run(&mut c, &segs);
        let ps: Vec<P> = segs.concat();
        check_continuous(&all, &ps);
        // Exactly one frame after the last: the join is seamless.
        assert_eq!(all[201].3, Some(127_920 + 100 * 3600));
        assert_eq!(all[200].1.map(|p| p.0), Some(127_920 + 100 * 3600));
        assert_eq!(all[401].3, Some(127_920 + 200 * 3600));
    }

    #[test]
    fn a_forward_jump_is_closed_and_a_small_gap_kept() {
        let segs = [
            segment(0, 10, 5),
            segment(36_000 + 100 * SECOND as u64, 10, 3),
        ];
        let all = run(&mut Continuity::default(), &segs);
        check_continuous(&all, &segs.concat());
        assert_eq!(all[21].3, Some(36_000));
        // Two seconds missing (a skipped segment): the gap stays.
        let segs = [
            segment(0, 10, 5),
            segment(36_000 + 2 * SECOND as u64, 10, 3),
        ];
        let all = run(&mut Continuity::default(), &segs);
        assert_eq!(all[21].3, Some(36_000 + 2 * SECOND as u64));
    }

    #[test]
    fn timestamps_wrap_at_33_bits() {
        // Continuous across the wrap: nothing moves.
        let start = WRAP - 5 * 3600;
        let segs = [
            segment(start, 5, 0),
            segment((start + 5 * 3600) & MASK, 5, 10),
        ];
        let mut c = Continuity::default();
        let all = run(&mut c, &segs);
        assert_eq!(all[11].3, Some(0));
        check_continuous(&all, &segs.concat());
        // A restart just before the wrap goes on past it.
        let segs = [
            segment(start, 5, 0),
            segment(50_000_000, 5, 0),
            segment(50_000_000 + 5 * 3600, 5, 0),
        ];
        let all = run(&mut Continuity::default(), &segs);
        check_continuous(&all, &segs.concat());
        assert_eq!(all[11].3, Some(0));
        assert_eq!(all[19].3, Some(4 * 3600));
        assert_eq!(all[21].3, Some(5 * 3600));
    }

    #[test]
    fn counters_go_on_across_joins_but_keep_the_upstreams_steps_inside_a_segment() {
        let mut c = Continuity::default();
        let p = |cc, adaptation_only| P {
            pid: 0x101,
            cc,
            adaptation_only,
            ..P::default()
        };
        let out = c.apply(chunk(&[p(3, false), p(4, false)]));
        assert_eq!(
            packets(&out).iter().map(|x| x.0).collect::<Vec<_>>(),
            [3, 4]
        );
        c.join();
        // Restarts at 0, then an adaptation-only packet (keeps), then a lost packet (7 -> 9).
        let out = c.apply(chunk(&[p(0, false), p(0, true), p(1, false), p(3, false)]));
        assert_eq!(
            packets(&out).iter().map(|x| x.0).collect::<Vec<_>>(),
            [5, 5, 6, 8]
        );
        c.join();
        // An adaptation-only packet first after a join keeps the counter.
        let out = c.apply(chunk(&[p(9, true), p(10, false)]));
        assert_eq!(
            packets(&out).iter().map(|x| x.0).collect::<Vec<_>>(),
            [8, 9]
        );
        // Null packets are never touched.
        c.join();
        let null = chunk(&[P {
            pid: NULL_PID,
            cc: 7,
            ..P::default()
        }]);
        assert_eq!(c.apply(null.clone()), null);
    }

    #[test]
    fn a_shared_chunk_is_copied_and_a_unique_one_changed_in_place() {
        let mut c = Continuity::default();
        c.apply(chunk(&segment(900_000, 5, 0)));
        c.join();
        let shared = chunk(&segment(0, 5, 0));
        let keep = shared.clone();
        let out = c.apply(shared);
        assert_ne!(out, keep);
        assert_eq!(
            keep,
            chunk(&segment(0, 5, 0)),
            "the cached segment is not changed"
        );
        c.join();
        let unique = chunk(&segment(0, 5, 0));
        let at = unique.as_ptr();
        let out = c.apply(unique);
        assert_eq!(out.as_ptr(), at, "changed where it lies");
    }

    #[test]
    fn another_source_with_other_pids_goes_on_from_the_latest_pcr() {
        let mut other = segment(77_000_000, 10, 9);
        for p in &mut other {
            p.pid = 0x200;
        }
        let all = run(
            &mut Continuity::default(),
            &[segment(900_000, 10, 0), other],
        );
        assert_eq!(
            all[20].1.map(|p| p.0),
            Some(900_000 + 9 * 3600 + DEFAULT_STEP)
        );
        assert_eq!(all[21].3, Some(900_000 + 9 * 3600 + DEFAULT_STEP));
        // A new PID's counter is its own.
        assert_eq!(all[20].0, 9);
    }

    #[test]
    fn a_pcr_jump_inside_a_segment_is_followed_too() {
        let mut s = segment(500_000, 10, 0);
        s.extend(segment(0, 10, 4));
        let all = run(&mut Continuity::default(), &[s.clone()]);
        assert_eq!(all[20].1.map(|p| p.0), Some(500_000 + 10 * 3600));
        assert_eq!(all[21].3, Some(500_000 + 10 * 3600));
    }

    /// A segment that needs rewriting, with one packet whose sync byte is damaged: every
    /// other packet is rewritten, the damaged one passes as it was.
    #[test]
    fn a_damaged_packet_passes_untouched_and_the_rest_is_rewritten() {
        let first = segment(900_000, 10, 0);
        let second = segment(0, 10, 0);
        let mut c = Continuity::default();
        c.apply(chunk(&first));
        c.join();
        let mut damaged = chunk(&second).to_vec();
        damaged[5 * PACKET] = 0x46;
        let damaged = Bytes::from(damaged);
        let out = c.apply(damaged.clone());
        assert_eq!(out.len(), damaged.len());
        assert_eq!(out[5 * PACKET..6 * PACKET], damaged[5 * PACKET..6 * PACKET]);
        let mut all = packets(&chunk(&first));
        let mut ps = first.clone();
        for (i, (got, p)) in packets(&out).into_iter().zip(&second).enumerate() {
            if i != 5 {
                all.push(got);
                ps.push(*p);
            }
        }
        // Packet 5 (a PES, counter +1) is left out: the counters skip it, as upstream's did.
        check_continuous(&all[..25], &ps[..25]);
        check_continuous(&all[25..], &ps[25..]);
        assert_eq!(all[21].3, Some(900_000 + 10 * 3600));
        assert_eq!(all[26].3, Some(900_000 + 13 * 3600));
        assert_eq!(
            all[25].0,
            (all[24].0 + 1) & 0x0F,
            "the counter skips the lost PES"
        );
    }

    /// A packet the demodulator flags as damaged (transport_error_indicator) is not
    /// read: its garbled timestamps must not move the timeline.
    #[test]
    fn a_packet_flagged_as_damaged_is_not_read() {
        let mut c = Continuity::default();
        c.apply(chunk(&segment(900_000, 10, 0)));
        c.join();
        let mut flagged = chunk(&segment(50_000_000, 1, 0)).to_vec();
        flagged[1] |= 0x80;
        flagged[PACKET + 1] |= 0x80;
        let flagged = Bytes::from(flagged);
        assert_eq!(c.apply(flagged.clone()), flagged, "passes as it was");
        let next = c.apply(chunk(&segment(900_000 + 10 * 3600, 2, 10)));
        assert_eq!(packets(&next)[1].3, Some(900_000 + 10 * 3600), "no jump");
    }

    /// Sync lost mid-chunk (a few bytes missing) and a chunk that starts inside a packet:
    /// found again where sync bytes recur every 188 bytes; the bytes between pass as
    /// they were and nothing moves.
    #[test]
    fn sync_is_found_again_inside_a_chunk() {
        let first = segment(900_000, 10, 0);
        let second = segment(0, 10, 0);
        let mut c = Continuity::default();
        c.apply(chunk(&first));
        c.join();
        let whole = chunk(&second);
        // 100 bytes of a packet before, 3 bytes lost in packet 7, half a packet after.
        let mut v = vec![0x47u8; 100];
        v.extend_from_slice(&whole[..7 * PACKET + 10]);
        v.extend_from_slice(&whole[7 * PACKET + 13..]);
        v.extend_from_slice(&whole[..94]);
        let input = Bytes::from(v);
        let out = c.apply(input.clone());
        assert_eq!(out.len(), input.len());
        assert_eq!(
            out[..100],
            input[..100],
            "bytes before sync pass as they were"
        );
        let got: Vec<Seen> = out[100..100 + 7 * PACKET]
            .chunks_exact(PACKET)
            .map(read)
            .collect();
        check_continuous(&got, &second[..7]);
        assert_eq!(got[1].3, Some(900_000 + 10 * 3600));
        // Packet 7 is short (185 bytes): from its start up to packet 8, as it was.
        let lost = 100 + 7 * PACKET..100 + 8 * PACKET - 3;
        assert_eq!(out[lost.clone()], input[lost.clone()]);
        let after: Vec<Seen> = out[lost.end..lost.end + 2 * PACKET]
            .chunks_exact(PACKET)
            .map(read)
            .collect();
        assert_eq!(after[1].3, Some(900_000 + 14 * 3600));
        let tail = out.len() - 94;
        assert_eq!(out[tail..], input[tail..], "a torn packet passes as it was");
    }

    /// A segment starting 0.6 s before the last one ended: within the old 1 s tolerance,
    /// but its DTS go back, so it is moved to go on from where the last one left off.
    #[test]
    fn a_small_step_back_at_a_join_is_closed() {
        let segs = [
            segment(900_000, 10, 0),
            segment(900_000 + 36_000 - 54_000, 10, 10),
        ];
        let all = run(&mut Continuity::default(), &segs);
        check_continuous(&all, &segs.concat());
        assert_eq!(all[21].3, Some(900_000 + 36_000));
        assert_eq!(all[20].1.map(|p| p.0), Some(900_000 + 36_000));
    }

    /// One PID steps back at a join while the one that decides goes on: the offset moves
    /// forward so that this PID too only goes forward.
    #[test]
    fn a_pid_going_back_at_a_join_pushes_the_offset_forward() {
        let audio = |t: u64, cc: u8| P {
            pid: 0x101,
            cc,
            pts: Some(t),
            ..P::default()
        };
        let mut a = segment(900_000, 10, 0);
        a.extend((0..10).map(|i| audio(900_000 + i * 1920, i as u8)));
        // Video goes on seamlessly; audio starts 0.2 s before its own last frame.
        let mut b = segment(900_000 + 36_000, 10, 10);
        let back = 900_000 + 9 * 1920 - 18_000;
        b.extend((0..10).map(|i| audio(back + i * 1920, 10 + i as u8)));
        let all = run(&mut Continuity::default(), &[a, b]);
        let audio_pts: Vec<u64> = all
            .iter()
            .enumerate()
            .filter(|(i, _)| (20..30).contains(i) || (50..60).contains(i))
            .map(|(_, s)| s.2.unwrap())
            .collect();
        for w in audio_pts.windows(2) {
            assert!(diff(w[1], w[0]) > 0, "audio PTS {} then {}", w[0], w[1]);
        }
        assert_eq!(audio_pts[10], 900_000 + 10 * 1920);
    }

    #[test]
    fn other_bytes_pass_through_untouched() {
        let mut c = Continuity::default();
        c.apply(chunk(&segment(900_000, 5, 0)));
        c.join();
        let ts = chunk(&segment(0, 5, 0));
        let fmp4 = Bytes::from_static(b"\x00\x00\x00\x18ftypiso6\x00\x00\x00\x00iso6mp41");
        // Too short to find sync in: a packet and a half.
        let torn = ts.slice(..PACKET + 100);
        // A sync byte here and there, never 188 bytes apart three times.
        let mut sparse = vec![0u8; 4 * PACKET];
        for at in [0, PACKET, 3 * PACKET - 1, 3 * PACKET] {
            sparse[at] = SYNC;
        }
        // The last 188 bytes, read as a packet, would have their counter re-anchored.
        sparse[3 * PACKET + 1..3 * PACKET + 4].copy_from_slice(&[0x01, 0x00, 0x10]);
        for b in [fmp4, torn, Bytes::from(sparse), Bytes::new()] {
            assert_eq!(c.apply(b.clone()), b);
        }
    }

    /// Random bytes (some shaped like packets) never make it panic; whatever is not
    /// whole TS packets comes back as it was; the length never changes.
    #[test]
    fn random_bytes_never_panic() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut c = Continuity::default();
        for round in 0..3000 {
            let packets = (next() % 8) as usize;
            let len = match round % 3 {
                0 => (next() % 2000) as usize,
                _ => packets * PACKET,
            };
            let mut v: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if round % 3 != 0 {
                for p in v.chunks_mut(PACKET) {
                    p[0] = SYNC;
                    // Often a PES start right after the header, with flags set.
                    if next() % 2 == 0 && p.len() > 12 {
                        p[1] |= 0x40;
                        p[3] = (p[3] & 0xCF) | 0x10;
                        p[4..7].copy_from_slice(&[0, 0, 1]);
                    }
                }
            }
            let b = Bytes::from(v);
            if next() % 5 == 0 {
                c.join();
            }
            let out = c.apply(b.clone());
            assert_eq!(out.len(), b.len());
            if resync(&b, 0).is_none() {
                assert_eq!(out, b);
            }
        }
    }
}
