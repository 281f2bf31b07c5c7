//! Recording every upstream outcome into its service's health (success rate, latency,
//! circuit breaker), history and metrics, and the background probes that feed the same
//! health while nobody watches.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::{Entry, Monitors, Registry};
use crate::error::UpstreamError;
use crate::health::{CircuitState, Permit};

impl Registry {
    pub(super) fn record<T>(&self, e: &Entry, started: Instant, result: &Result<T, UpstreamError>) {
        let now = Instant::now();
        let latency = now.saturating_duration_since(started);
        let mut s = e
            .stats
            .lock()
            .expect("stats lock is never poisoned: no panics while held");
        s.last_checked = Some(SystemTime::now());
        s.latency_ms = Some(latency.as_millis() as u64);
        let before = s.health.state(now);
        s.health.record(now, result.is_ok(), latency);
        s.history.record(SystemTime::now(), result.is_ok(), latency);
        crate::metrics::get().upstream(&e.cfg.name, result, latency);
        match result {
            Ok(_) => {
                s.successes += 1;
                s.last_error = None;
            }
            Err(err) => {
                s.failures += 1;
                s.last_error = Some(err.to_string());
            }
        }
        let after = s.health.state(now);
        if before != after {
            match s.health.retry_at(now) {
                Some(at) => tracing::warn!(
                    service = %e.cfg.name,
                    failures = s.health.consecutive_failures(),
                    retry_in_ms = (at - now).as_millis() as u64,
                    "circuit open: fallback skips the service"
                ),
                None => {
                    tracing::info!(service = %e.cfg.name, circuit = after.as_str(), "circuit changed")
                }
            }
        }
    }

    /// Counts a stream's playlist or segment that service `name` served (`Ok`) or
    /// failed (`Err`, why) in its status, keeping the last failure and its time. Not in its health: one channel's dead stream
    /// does not make fallback skip the service's other channels.
    pub fn record_stream(&self, name: &str, outcome: Result<(), String>) {
        let Some(e) = self.entry(name) else { return };
        let mut s = e
            .stats
            .lock()
            .expect("stats lock is never poisoned: no panics while held");
        match outcome {
            // The last failure stays, with its time: a stream failing now and then
            // between good segments would else show no error most of the time.
            Ok(()) => s.stream_successes += 1,
            Err(why) => {
                s.stream_failures += 1;
                s.last_stream_error = Some((SystemTime::now(), why));
            }
        }
    }

    /// Asks `e`'s circuit breaker whether it may be used now (see [`Permit`]).
    pub(super) fn permit(&self, e: &Entry) -> Permit {
        e.stats
            .lock()
            .expect("stats lock is never poisoned: no panics while held")
            .health
            .permit(Instant::now())
    }

    pub(super) fn is_open(&self, e: &Entry) -> bool {
        e.stats
            .lock()
            .expect("stats lock is never poisoned: no panics while held")
            .health
            .state(Instant::now())
            == CircuitState::Open
    }

    pub(super) fn is_closed(&self, e: &Entry) -> bool {
        e.stats
            .lock()
            .expect("stats lock is never poisoned: no panics while held")
            .health
            .state(Instant::now())
            == CircuitState::Closed
    }

    pub(super) fn latency_ewma(&self, e: &Entry) -> Option<f64> {
        e.stats
            .lock()
            .expect("stats lock is never poisoned: no panics while held")
            .health
            .latency_ewma_ms()
    }

    /// Probes every service every `every` while it is enabled (none when zero), feeding
    /// the same health as real traffic. A closed circuit is probed through the cached
    /// channel list (so it costs an upstream call only when the list is due anyway); an
    /// open one is left alone until its backoff is over, then gets a fresh listing as
    /// its trial.
    pub fn spawn_monitors(self: &Arc<Self>, every: Duration) -> Monitors {
        if every.is_zero() {
            return Monitors(Vec::new());
        }
        let tasks = self
            .entries
            .iter()
            .map(|e| {
                let registry = self.clone();
                let e = e.clone();
                tokio::spawn(async move {
                    let start = tokio::time::Instant::now() + every;
                    let mut tick = tokio::time::interval_at(start, every);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        tick.tick().await;
                        if registry.enabled(&e) {
                            registry.probe(&e).await;
                        }
                    }
                })
            })
            .collect();
        Monitors(tasks)
    }

    pub(super) async fn probe(&self, e: &Entry) {
        match self.permit(e) {
            Permit::No => {}
            Permit::Yes => {
                // Failures are recorded (and logged) by `channels_of`.
                let _ = self.channels_of(&e.cfg.name).await;
            }
            Permit::Trial => {
                let started = Instant::now();
                let bound = e.cfg.timeout * 3;
                let result = tokio::time::timeout(bound, e.service.channels())
                    .await
                    .unwrap_or(Err(UpstreamError::Timeout(bound)));
                self.record(e, started, &result);
                match result {
                    Ok(list) => {
                        e.stats
                            .lock()
                            .expect("stats lock is never poisoned")
                            .channel_count = list.len();
                        tracing::info!(service = %e.cfg.name, "probe succeeded: circuit closed");
                        self.channels
                            .insert(e.cfg.name.clone(), Arc::new(list))
                            .await;
                    }
                    Err(err) => {
                        tracing::warn!(service = %e.cfg.name, error = %err, "probe failed: circuit stays open");
                    }
                }
            }
        }
    }
}
