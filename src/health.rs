//! What freesky judges about one service from the outcomes of its upstream calls (real
//! traffic and background probes alike): a success rate over the last outcomes, a
//! latency EWMA, consecutive failures, and a circuit breaker.
//!
//! The breaker: `Closed` until `open_after` consecutive failures, then `Open` for a
//! backoff (`backoff`, doubling after each failed trial up to `backoff_max`). Once the
//! backoff has passed, one caller at a time gets a trial (`HalfOpen`): a success closes
//! the circuit, a failure opens it again with the doubled backoff. Any success closes
//! it (a probe or a last-resort try that works is evidence enough).
//!
//! Pure: no IO, no clock of its own. Every call takes `now`, so tests drive time by
//! hand; the registry passes `Instant::now()`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How many recent outcomes the success rate looks at.
const WINDOW: usize = 20;
/// Weight of the newest latency in the EWMA.
const ALPHA: f64 = 0.3;

/// The breaker's knobs (`[health]` in the config).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// Consecutive failures that open the circuit.
    pub open_after: u32,
    /// First backoff of an open circuit.
    pub backoff: Duration,
    /// Longest backoff, however many trials failed.
    pub backoff_max: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            open_after: 5,
            backoff: Duration::from_secs(10),
            backoff_max: Duration::from_secs(300),
        }
    }
}

/// The circuit as `/api/services/status` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

impl CircuitState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Circuit {
    Closed,
    /// Calls skip the service until `until`; `backoff` is how long this opening lasts.
    Open {
        until: Instant,
        backoff: Duration,
    },
    /// The backoff is over and a trial started at `since`; others wait for its outcome.
    /// A trial with no outcome after `backoff` (its caller was cancelled) is given up.
    HalfOpen {
        since: Instant,
        backoff: Duration,
    },
}

/// Whether a caller may use the service now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// Closed: go ahead.
    Yes,
    /// The backoff is over and this caller is the trial.
    Trial,
    /// Open (or another caller's trial is running): skip it unless nothing else is left.
    No,
}

/// Outcomes of one service and its circuit.
#[derive(Debug, Clone)]
pub struct Health {
    policy: Policy,
    outcomes: VecDeque<bool>,
    latency_ewma_ms: Option<f64>,
    consecutive_failures: u32,
    circuit: Circuit,
}

impl Health {
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            outcomes: VecDeque::with_capacity(WINDOW),
            latency_ewma_ms: None,
            consecutive_failures: 0,
            circuit: Circuit::Closed,
        }
    }

    /// One call's outcome. `latency` feeds the EWMA only on success (a timeout says
    /// nothing about how fast the service answers).
    pub fn record(&mut self, now: Instant, ok: bool, latency: Duration) {
        if self.outcomes.len() == WINDOW {
            self.outcomes.pop_front();
        }
        self.outcomes.push_back(ok);
        if ok {
            let ms = latency.as_secs_f64() * 1000.0;
            self.latency_ewma_ms = Some(match self.latency_ewma_ms {
                Some(old) => ALPHA * ms + (1.0 - ALPHA) * old,
                None => ms,
            });
            self.consecutive_failures = 0;
            self.circuit = Circuit::Closed;
            return;
        }
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        self.circuit = match self.circuit {
            Circuit::Closed if self.consecutive_failures >= self.policy.open_after.max(1) => {
                self.opened(now, self.policy.backoff)
            }
            Circuit::Closed => Circuit::Closed,
            // A failure that is not the trial's (a last-resort try, a call started
            // before the circuit opened) does not lengthen the backoff.
            open @ Circuit::Open { .. } => open,
            Circuit::HalfOpen { backoff, .. } => {
                self.opened(now, (backoff * 2).min(self.policy.backoff_max))
            }
        };
    }

    fn opened(&self, now: Instant, backoff: Duration) -> Circuit {
        let backoff = backoff.min(self.policy.backoff_max);
        Circuit::Open {
            until: now + backoff,
            backoff,
        }
    }

    /// Asks to use the service now; a `Trial` answer marks the trial as started.
    pub fn permit(&mut self, now: Instant) -> Permit {
        match self.circuit {
            Circuit::Closed => Permit::Yes,
            Circuit::Open { until, backoff } if now >= until => {
                self.circuit = Circuit::HalfOpen {
                    since: now,
                    backoff,
                };
                Permit::Trial
            }
            Circuit::HalfOpen { since, backoff } if now >= since + backoff => {
                self.circuit = Circuit::HalfOpen {
                    since: now,
                    backoff,
                };
                Permit::Trial
            }
            Circuit::Open { .. } | Circuit::HalfOpen { .. } => Permit::No,
        }
    }

    /// The circuit as of `now`: an open circuit whose backoff is over shows as
    /// half-open (the next caller is its trial).
    pub fn state(&self, now: Instant) -> CircuitState {
        match self.circuit {
            Circuit::Closed => CircuitState::Closed,
            Circuit::Open { until, .. } if now < until => CircuitState::Open,
            Circuit::Open { .. } | Circuit::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    /// When an open circuit allows its next trial; `None` unless it is open now.
    pub fn retry_at(&self, now: Instant) -> Option<Instant> {
        match self.circuit {
            Circuit::Open { until, .. } if now < until => Some(until),
            _ => None,
        }
    }

    /// Successes among the last outcomes (up to 20), 0..=1; `None` before the first.
    pub fn success_rate(&self) -> Option<f64> {
        if self.outcomes.is_empty() {
            return None;
        }
        let ok = self.outcomes.iter().filter(|&&o| o).count();
        Some(ok as f64 / self.outcomes.len() as f64)
    }

    pub fn latency_ewma_ms(&self) -> Option<f64> {
        self.latency_ewma_ms
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn policy() -> Policy {
        Policy {
            open_after: 3,
            backoff: Duration::from_secs(10),
            backoff_max: Duration::from_secs(35),
        }
    }

    fn fail(h: &mut Health, now: Instant, times: u32) {
        for _ in 0..times {
            h.record(now, false, MS);
        }
    }

    #[test]
    fn opens_after_n_consecutive_failures_only() {
        let t0 = Instant::now();
        let mut h = Health::new(policy());
        fail(&mut h, t0, 2);
        h.record(t0, true, MS);
        fail(&mut h, t0, 2);
        assert_eq!(h.state(t0), CircuitState::Closed);
        assert_eq!(h.permit(t0), Permit::Yes);
        assert_eq!(h.consecutive_failures(), 2);
        fail(&mut h, t0, 1);
        assert_eq!(h.state(t0), CircuitState::Open);
        assert_eq!(h.permit(t0), Permit::No);
        assert_eq!(h.retry_at(t0), Some(t0 + Duration::from_secs(10)));
    }

    #[test]
    fn half_open_after_the_backoff_gives_one_trial() {
        let t0 = Instant::now();
        let mut h = Health::new(policy());
        fail(&mut h, t0, 3);
        let before = t0 + Duration::from_secs(9);
        assert_eq!(h.permit(before), Permit::No);
        let after = t0 + Duration::from_secs(10);
        assert_eq!(h.state(after), CircuitState::HalfOpen);
        assert_eq!(h.retry_at(after), None);
        assert_eq!(h.permit(after), Permit::Trial);
        // While the trial runs, everyone else skips the service.
        assert_eq!(h.permit(after + MS), Permit::No);
        assert_eq!(h.state(after + MS), CircuitState::HalfOpen);
        // A trial that never reports (its caller was dropped) is given up.
        assert_eq!(
            h.permit(after + Duration::from_secs(10)),
            Permit::Trial,
            "a lost trial blocks for one backoff only"
        );
    }

    #[test]
    fn a_successful_trial_closes() {
        let t0 = Instant::now();
        let mut h = Health::new(policy());
        fail(&mut h, t0, 3);
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(h.permit(t1), Permit::Trial);
        h.record(t1, true, Duration::from_millis(40));
        assert_eq!(h.state(t1), CircuitState::Closed);
        assert_eq!(h.permit(t1), Permit::Yes);
        assert_eq!(h.consecutive_failures(), 0);
        assert_eq!(h.retry_at(t1), None);
    }

    #[test]
    fn a_failed_trial_reopens_with_a_doubled_capped_backoff() {
        let t0 = Instant::now();
        let mut h = Health::new(policy());
        fail(&mut h, t0, 3);
        // 10 s, then 20 s, then 35 s (the cap), and it stays there.
        let mut t = t0;
        for expected in [10, 20, 35, 35] {
            assert_eq!(h.retry_at(t), Some(t + Duration::from_secs(expected)));
            t += Duration::from_secs(expected);
            assert_eq!(h.permit(t), Permit::Trial);
            h.record(t, false, MS);
            assert_eq!(h.state(t), CircuitState::Open);
        }
        // A success after all that closes, and the next opening starts from the base.
        t += Duration::from_secs(35);
        assert_eq!(h.permit(t), Permit::Trial);
        h.record(t, true, MS);
        fail(&mut h, t, 3);
        assert_eq!(h.retry_at(t), Some(t + Duration::from_secs(10)));
    }

    #[test]
    fn failures_while_open_do_not_lengthen_the_backoff() {
        let t0 = Instant::now();
        let mut h = Health::new(policy());
        fail(&mut h, t0, 3);
        fail(&mut h, t0 + Duration::from_secs(5), 4);
        assert_eq!(h.retry_at(t0), Some(t0 + Duration::from_secs(10)));
        // ... while any success (a probe, a last-resort try) closes at once.
        h.record(t0 + Duration::from_secs(6), true, MS);
        assert_eq!(h.state(t0 + Duration::from_secs(6)), CircuitState::Closed);
    }

    #[test]
    fn success_rate_over_the_last_twenty_and_latency_ewma() {
        let t0 = Instant::now();
        let mut h = Health::new(Policy {
            open_after: 100,
            ..policy()
        });
        assert_eq!(h.success_rate(), None);
        assert_eq!(h.latency_ewma_ms(), None);
        fail(&mut h, t0, 10);
        for _ in 0..15 {
            h.record(t0, true, Duration::from_millis(100));
        }
        // The window holds 5 failures and 15 successes.
        assert_eq!(h.success_rate(), Some(0.75));
        assert!((h.latency_ewma_ms().unwrap() - 100.0).abs() < 1e-9);
        h.record(t0, true, Duration::from_millis(200));
        assert!((h.latency_ewma_ms().unwrap() - 130.0).abs() < 1e-9);
        // Failures do not move the latency.
        h.record(t0, false, Duration::from_secs(30));
        assert!((h.latency_ewma_ms().unwrap() - 130.0).abs() < 1e-9);
    }
}
