//! The last hour of one service's upstream calls, per minute, for the dashboard's
//! chart: successes, failures and the latency of the successful ones, in 60 one-minute
//! buckets; and the chart itself, an inline SVG drawn from those numbers only.
//!
//! Pure: the time is passed in. The registry records every outcome here next to the
//! service's `health` (`Registry::record`).

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Buckets kept: one hour of minutes.
pub const BUCKETS: usize = 60;
const BUCKET_SECS: u64 = 60;

/// One minute of calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bucket {
    pub ok: u32,
    pub failed: u32,
    /// Sum of the latencies of the successful calls (a failure's latency is often a
    /// timeout: it would say nothing about how fast the service answers).
    pub latency_sum_ms: u64,
    /// How many latencies `latency_sum_ms` adds up.
    pub latency_count: u32,
}

impl Bucket {
    /// Mean latency of the minute's successful calls.
    pub fn mean_ms(&self) -> Option<u64> {
        (self.latency_count > 0).then(|| self.latency_sum_ms / u64::from(self.latency_count))
    }
}

/// A service's last hour, as a ring of minute buckets.
#[derive(Debug, Clone)]
pub struct History {
    /// Indexed by minute (unix minutes) modulo `BUCKETS`.
    ring: [Bucket; BUCKETS],
    /// The unix minute of the newest bucket written: buckets of older minutes than
    /// `latest - 59` are stale and cleared before their slot is reused.
    latest: u64,
}

impl Default for History {
    fn default() -> Self {
        Self::new()
    }
}

/// The last hour, oldest minute first; the last bucket is the current minute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub buckets: Vec<Bucket>,
}

fn minute_of(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() / BUCKET_SECS
}

impl History {
    pub fn new() -> Self {
        Self {
            ring: [Bucket::default(); BUCKETS],
            latest: 0,
        }
    }

    /// Moves the newest minute up to `minute`, clearing the slots of the minutes
    /// skipped (at most the whole ring).
    fn advance(&mut self, minute: u64) {
        if minute <= self.latest {
            return;
        }
        let skipped = (minute - self.latest).min(BUCKETS as u64);
        for m in (minute + 1 - skipped)..=minute {
            self.ring[(m % BUCKETS as u64) as usize] = Bucket::default();
        }
        self.latest = minute;
    }

    /// One call that ended at `now`: `ok` or not, after `latency`. A call older than
    /// the hour kept (a clock step back) is dropped.
    pub fn record(&mut self, now: SystemTime, ok: bool, latency: Duration) {
        let minute = minute_of(now);
        self.advance(minute);
        if minute + (BUCKETS as u64) <= self.latest {
            return;
        }
        let b = &mut self.ring[(minute % BUCKETS as u64) as usize];
        if ok {
            b.ok += 1;
            b.latency_sum_ms += latency.as_millis() as u64;
            b.latency_count += 1;
        } else {
            b.failed += 1;
        }
    }

    /// The hour up to `now`, oldest minute first.
    pub fn snapshot(&self, now: SystemTime) -> Snapshot {
        let newest = minute_of(now).max(self.latest);
        let buckets = (0..BUCKETS as u64)
            .map(|i| {
                // The minute `BUCKETS - 1 - i` before the newest; none before the epoch.
                let m = (newest + i + 1).checked_sub(BUCKETS as u64);
                match m {
                    // A slot holds minute `m` when `m` is at most an hour older than
                    // the newest write (older slots were cleared or reused).
                    Some(m) if m <= self.latest && m + BUCKETS as u64 > self.latest => {
                        self.ring[(m % BUCKETS as u64) as usize]
                    }
                    _ => Bucket::default(),
                }
            })
            .collect();
        Snapshot { buckets }
    }
}

impl Snapshot {
    pub fn ok(&self) -> u64 {
        self.buckets.iter().map(|b| u64::from(b.ok)).sum()
    }

    pub fn failed(&self) -> u64 {
        self.buckets.iter().map(|b| u64::from(b.failed)).sum()
    }

    /// The median of the per-minute mean latencies (minutes with successes only).
    pub fn median_ms(&self) -> Option<u64> {
        let mut means: Vec<u64> = self.buckets.iter().filter_map(Bucket::mean_ms).collect();
        if means.is_empty() {
            return None;
        }
        means.sort_unstable();
        Some(means[means.len() / 2])
    }

    /// What the chart says, in words (its `aria-label`).
    pub fn summary(&self) -> String {
        let (ok, failed) = (self.ok(), self.failed());
        if ok + failed == 0 {
            return "last hour: no data".to_string();
        }
        match self.median_ms() {
            Some(ms) => format!("last hour: {ok} ok, {failed} failed, median {ms} ms"),
            None => format!("last hour: {ok} ok, {failed} failed"),
        }
    }

    /// The chart: one bar per minute whose height is the minute's mean latency (scaled
    /// to the hour's slowest minute), a red tick under each minute with failures, the
    /// scale and the time axis as text. Built from numbers only, so it can be inserted
    /// into a page unescaped.
    pub fn svg(&self) -> String {
        const W: u64 = 240;
        const H: u64 = 56;
        const BAR_W: u64 = W / BUCKETS as u64;
        const TOP: u64 = 10;
        const BASE: u64 = 40;
        let summary = self.summary();
        let mut s = format!(
            "<svg class=\"chart\" role=\"img\" aria-label=\"{summary}\" viewBox=\"0 0 {W} {H}\" \
             width=\"{W}\" height=\"{H}\" xmlns=\"http://www.w3.org/2000/svg\"><title>{summary}</title>"
        );
        let _ = write!(
            s,
            "<line class=\"axis\" x1=\"0\" y1=\"{BASE}\" x2=\"{W}\" y2=\"{BASE}\" stroke=\"currentColor\" stroke-opacity=\"0.3\"/>"
        );
        if self.ok() + self.failed() == 0 {
            let _ = write!(
                s,
                "<text class=\"empty\" x=\"{}\" y=\"28\" text-anchor=\"middle\" font-size=\"10\" fill=\"currentColor\">no data</text>",
                W / 2
            );
        }
        let max = self
            .buckets
            .iter()
            .filter_map(Bucket::mean_ms)
            .max()
            .unwrap_or(0);
        for (i, b) in self.buckets.iter().enumerate() {
            let x = i as u64 * BAR_W;
            if let Some(ms) = b.mean_ms() {
                // At least 1 px, so that a fast minute still shows.
                let h = ((ms * (BASE - TOP)).checked_div(max).unwrap_or(0)).max(1);
                let _ = write!(
                    s,
                    "<rect class=\"lat\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{h}\" fill=\"#3b82f6\"><title>{ms} ms, {} ok</title></rect>",
                    x,
                    BASE - h,
                    BAR_W - 1,
                    b.ok
                );
            }
            if b.failed > 0 {
                let _ = write!(
                    s,
                    "<rect class=\"fail\" x=\"{x}\" y=\"{}\" width=\"{}\" height=\"5\" fill=\"#dc2626\"><title>{} failed</title></rect>",
                    BASE + 1,
                    BAR_W - 1,
                    b.failed
                );
            }
        }
        if max > 0 {
            let _ = write!(
                s,
                "<text class=\"hint\" x=\"0\" y=\"8\" font-size=\"8\" fill=\"currentColor\">{max} ms</text>"
            );
        }
        let _ = write!(
            s,
            "<text class=\"hint\" x=\"0\" y=\"54\" font-size=\"8\" fill=\"currentColor\">-60 min</text>\
             <text class=\"hint\" x=\"{W}\" y=\"54\" font-size=\"8\" text-anchor=\"end\" fill=\"currentColor\">now</text></svg>"
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minute: u64, sec: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_000_000 * 60 + minute * 60 + sec)
    }

    #[test]
    fn calls_land_in_their_minute_and_the_current_minute_is_last() {
        let mut h = History::new();
        h.record(at(0, 5), true, Duration::from_millis(100));
        h.record(at(0, 50), true, Duration::from_millis(300));
        h.record(at(1, 0), false, Duration::from_secs(10));
        let snap = h.snapshot(at(1, 30));
        assert_eq!(snap.buckets.len(), BUCKETS);
        let last = snap.buckets[BUCKETS - 1];
        let before = snap.buckets[BUCKETS - 2];
        assert_eq!((last.ok, last.failed, last.latency_count), (0, 1, 0));
        assert_eq!((before.ok, before.failed), (2, 0));
        assert_eq!(before.mean_ms(), Some(200));
        assert_eq!((snap.ok(), snap.failed()), (2, 1));
        assert!(snap.buckets[..BUCKETS - 2]
            .iter()
            .all(|b| *b == Bucket::default()));
    }

    #[test]
    fn buckets_roll_over_after_an_hour() {
        let mut h = History::new();
        h.record(at(0, 0), true, Duration::from_millis(10));
        h.record(at(30, 0), false, Duration::ZERO);
        // 59 minutes later the first call is the oldest bucket, still shown.
        let snap = h.snapshot(at(59, 59));
        assert_eq!(snap.buckets[0].ok, 1);
        assert_eq!(snap.buckets[30].failed, 1);
        // One minute more and it is gone, though nothing was recorded meanwhile.
        let snap = h.snapshot(at(60, 0));
        assert_eq!((snap.ok(), snap.failed()), (0, 1));
        assert_eq!(snap.buckets[29].failed, 1);
        // A record in a slot that held minute 0 starts it afresh.
        h.record(at(60, 1), true, Duration::from_millis(50));
        let snap = h.snapshot(at(60, 2));
        assert_eq!(snap.buckets[BUCKETS - 1].ok, 1);
        assert_eq!(snap.buckets[BUCKETS - 1].mean_ms(), Some(50));
        assert_eq!(snap.ok(), 1);
        // Two hours of silence clear everything.
        h.record(at(200, 0), true, Duration::from_millis(7));
        let snap = h.snapshot(at(200, 0));
        assert_eq!((snap.ok(), snap.failed()), (1, 0));
    }

    #[test]
    fn a_call_from_before_the_hour_is_dropped() {
        let mut h = History::new();
        h.record(at(100, 0), true, Duration::from_millis(5));
        h.record(at(30, 0), false, Duration::ZERO);
        h.record(at(41, 0), false, Duration::ZERO);
        let snap = h.snapshot(at(100, 0));
        assert_eq!((snap.ok(), snap.failed()), (1, 1));
        assert_eq!(snap.buckets[0].failed, 1);
    }

    #[test]
    fn the_summary_counts_and_takes_the_median_of_minutes() {
        let mut h = History::new();
        for (m, ms) in [(0, 100), (1, 120), (2, 900)] {
            h.record(at(m, 0), true, Duration::from_millis(ms));
        }
        h.record(at(2, 1), false, Duration::ZERO);
        let snap = h.snapshot(at(2, 2));
        assert_eq!(snap.summary(), "last hour: 3 ok, 1 failed, median 120 ms");
        assert_eq!(
            History::new().snapshot(at(0, 0)).summary(),
            "last hour: no data"
        );
        let mut only_failures = History::new();
        only_failures.record(at(0, 0), false, Duration::ZERO);
        assert_eq!(
            only_failures.snapshot(at(0, 0)).summary(),
            "last hour: 0 ok, 1 failed"
        );
    }

    #[test]
    fn the_svg_draws_a_bar_per_minute_with_successes_and_a_tick_per_minute_with_failures() {
        let mut h = History::new();
        h.record(at(58, 0), true, Duration::from_millis(50));
        h.record(at(59, 0), true, Duration::from_millis(200));
        h.record(at(59, 1), false, Duration::ZERO);
        let svg = h.snapshot(at(59, 2)).svg();
        assert!(svg.starts_with("<svg class=\"chart\" role=\"img\" aria-label=\"last hour: 2 ok, 1 failed, median 200 ms\""), "{svg}");
        assert!(svg.ends_with("</svg>"), "{svg}");
        assert_eq!(svg.matches("<rect class=\"lat\"").count(), 2, "{svg}");
        assert_eq!(svg.matches("<rect class=\"fail\"").count(), 1, "{svg}");
        // The slowest minute is full height (30 px), the other scaled to it.
        assert!(
            svg.contains("<rect class=\"lat\" x=\"236\" y=\"10\" width=\"3\" height=\"30\""),
            "{svg}"
        );
        assert!(
            svg.contains("<rect class=\"lat\" x=\"232\" y=\"33\" width=\"3\" height=\"7\""),
            "{svg}"
        );
        assert!(svg.contains(">200 ms</text>"), "{svg}");
        assert!(svg.contains(">now</text>") && svg.contains(">-60 min</text>"));
        assert!(!svg.contains("no data"));
        // Well-formed XML.
        let mut r = quick_xml::Reader::from_str(&svg);
        let mut depth = 0i32;
        loop {
            match r.read_event().expect("well-formed svg") {
                quick_xml::events::Event::Start(_) => depth += 1,
                quick_xml::events::Event::End(_) => depth -= 1,
                quick_xml::events::Event::Eof => break,
                _ => {}
            }
        }
        assert_eq!(depth, 0);
    }

    #[test]
    fn an_empty_hour_says_no_data() {
        let svg = History::new().snapshot(at(5, 0)).svg();
        assert!(svg.contains("aria-label=\"last hour: no data\""), "{svg}");
        assert!(svg.contains(">no data</text>"), "{svg}");
        assert!(!svg.contains("class=\"lat\"") && !svg.contains("class=\"fail\""));
    }
}
