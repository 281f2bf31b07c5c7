//! The wall clock of the link sealer (link expiry) and of the HLS failovers (when a
//! link's upstream token is due for a refresh). Behind a trait so that tests move time
//! forward instead of waiting for it; everything else reads `SystemTime` directly.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where "now" comes from.
pub trait Clock: Send + Sync {
    fn now(&self) -> SystemTime;

    /// Whole seconds since the Unix epoch (0 for a clock before 1970).
    fn unix_secs(&self) -> u64 {
        self.now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
}

/// The system's wall clock: what the server runs on.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// The system clock plus an offset that only grows: a test `advance`s it past an
/// expiry instead of sleeping until then. Time keeps flowing underneath, so timers and
/// upstreams that read the real clock still see a running one.
#[derive(Debug, Default)]
pub struct TestClock {
    /// Milliseconds added to the system clock.
    ahead_ms: AtomicU64,
}

impl TestClock {
    /// Moves this clock `by` forward.
    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.ahead_ms.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for TestClock {
    fn now(&self) -> SystemTime {
        SystemTime::now() + Duration::from_millis(self.ahead_ms.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_clock_runs_with_the_system_clock_and_jumps_when_advanced() {
        let clock = TestClock::default();
        let before = SystemClock.unix_secs();
        assert!(clock.unix_secs() >= before && clock.unix_secs() <= before + 1);
        clock.advance(Duration::from_secs(3600));
        assert!(clock.unix_secs() >= before + 3600);
    }
}
