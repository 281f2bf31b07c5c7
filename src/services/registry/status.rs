//! Each service's runtime stats and status (`/api/services/status`, the dashboard's
//! chart), and the runtime switches (enabled, priority), persisted before they apply.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use super::{Entry, Registry, RegistryError, UNHEALTHY_AFTER};
use crate::health::CircuitState;
use crate::model::{Channel, ServiceStatus};

impl Registry {
    /// Status of every configured service, in config order.
    pub fn status(&self) -> Vec<ServiceStatus> {
        self.entries.iter().map(|e| self.status_of(e)).collect()
    }

    /// The enabled services' status, in priority order (ties keep config order).
    pub fn enabled_by_priority(&self) -> Vec<ServiceStatus> {
        let mut services: Vec<_> = self.status().into_iter().filter(|s| s.enabled).collect();
        services.sort_by_key(|s| s.priority);
        services
    }

    pub(super) fn status_of(&self, e: &Entry) -> ServiceStatus {
        let s = e
            .stats
            .lock()
            .expect("stats lock is never poisoned: no panics while held");
        let now = Instant::now();
        let circuit = s.health.state(now);
        let set = self.store.service_override(&e.cfg.name);
        ServiceStatus {
            name: e.cfg.name.clone(),
            kind: e.cfg.kind.kind_name().to_string(),
            enabled: self.enabled(e),
            priority: self.priority(e),
            description: e.cfg.description.clone(),
            // A service that has only ever failed is not healthy, however few
            // its failures.
            healthy: circuit == CircuitState::Closed
                && s.health.consecutive_failures() < UNHEALTHY_AFTER
                && (s.successes > 0 || s.failures == 0),
            // No list loaded in this registry (a start or a reload while it fails, or
            // an empty one): the channels it gives the lineup are the last listed.
            channel_count: if s.channel_count > 0 {
                s.channel_count
            } else {
                self.last_listed(&e.cfg.name)
                    .map_or(s.channel_count, |l| l.len())
            },
            last_error: s.last_error.clone(),
            last_checked: s
                .last_checked
                .map(|t| humantime::format_rfc3339_seconds(t).to_string()),
            latency_ms: s.latency_ms,
            successes: s.successes,
            failures: s.failures,
            stream_successes: s.stream_successes,
            stream_failures: s.stream_failures,
            last_stream_error: s.last_stream_error.as_ref().map(|(_, why)| why.clone()),
            last_stream_error_at: s
                .last_stream_error
                .as_ref()
                .map(|(at, _)| humantime::format_rfc3339_seconds(*at).to_string()),
            circuit: circuit.as_str().to_string(),
            success_rate: s.health.success_rate(),
            latency_ewma_ms: s.health.latency_ewma_ms().map(|ms| ms.round() as u64),
            consecutive_failures: s.health.consecutive_failures(),
            retry_at: s.health.retry_at(now).map(|at| {
                humantime::format_rfc3339_millis(SystemTime::now() + (at - now)).to_string()
            }),
            account: e.service.account(),
            overridden: [
                ("enabled", set.enabled.is_some()),
                ("priority", set.priority.is_some()),
            ]
            .into_iter()
            .filter(|&(_, set)| set)
            .map(|(field, _)| field.to_string())
            .collect(),
        }
    }

    /// After a config reload: each service keeps the last hour of outcomes `prev`
    /// recorded under its name (the dashboard's chart goes on), and, when it lists from
    /// the same place (`saved::list_config`), its last channel list that loaded and the
    /// one kept on disk (a service down during a reload keeps its channels in the
    /// lineup, as it does between reloads). Its health starts
    /// afresh: the circuit closes, so a fixed config is tried at once.
    pub fn keep_history_of(&self, prev: &Registry) {
        for e in &self.entries {
            let Some(old) = prev.entry(&e.cfg.name) else {
                continue;
            };
            if super::saved::list_config(&old.cfg) == super::saved::list_config(&e.cfg) {
                carry(&prev.last_good, &self.last_good, &e.cfg.name);
                carry(&prev.saved, &self.saved, &e.cfg.name);
            }
            let history = old
                .stats
                .lock()
                .expect("stats lock is never poisoned: no panics while held")
                .history
                .clone();
            e.stats
                .lock()
                .expect("stats lock is never poisoned: no panics while held")
                .history = history;
        }
    }

    /// The last hour of service `name`'s upstream calls, per minute (`None`: no such service).
    pub fn history(&self, name: &str) -> Option<crate::history::Snapshot> {
        let e = self.entry(name)?;
        let s = e
            .stats
            .lock()
            .expect("stats lock is never poisoned: no panics while held");
        Some(s.history.snapshot(SystemTime::now()))
    }

    /// Enables or disables a service, persisting the choice (`None`: back to the
    /// config's `enabled`); the lineup follows at once.
    pub async fn set_enabled(
        &self,
        name: &str,
        enabled: Option<bool>,
    ) -> Result<ServiceStatus, RegistryError> {
        let e = self.entry(name).ok_or_else(|| self.unknown_service(name))?;
        self.store.set_enabled(name, enabled).await?;
        self.drop_lineup();
        tracing::info!(service = name, ?enabled, "service switched");
        self.follow_switch().await;
        Ok(self.status_of(e))
    }

    /// Sets a service's priority (lower is tried first; `None`: back to the config's),
    /// persisting it; the lineup's source order follows at once.
    pub async fn set_priority(
        &self,
        name: &str,
        priority: Option<i64>,
    ) -> Result<ServiceStatus, RegistryError> {
        let e = self.entry(name).ok_or_else(|| self.unknown_service(name))?;
        self.store.set_priority(name, priority).await?;
        self.drop_lineup();
        tracing::info!(service = name, ?priority, "service priority set");
        self.follow_switch().await;
        Ok(self.status_of(e))
    }

    /// Gives a service back its config's `enabled` and `priority`, persisted; the
    /// lineup follows at once, built once for both.
    pub async fn reset(&self, name: &str) -> Result<ServiceStatus, RegistryError> {
        let e = self.entry(name).ok_or_else(|| self.unknown_service(name))?;
        self.store.set_priority(name, None).await?;
        self.store.set_enabled(name, None).await?;
        self.drop_lineup();
        tracing::info!(service = name, "service reset to its config");
        self.follow_switch().await;
        Ok(self.status_of(e))
    }

    /// Builds the lineup of after a switch before the switch's call answers, so that
    /// what its caller asks next sees it; other requests meanwhile get the one before.
    pub(super) async fn follow_switch(&self) {
        if let Err(e) = self.built_now(None).await {
            tracing::warn!(error = %e, "lineup after a service switch failed; the next request builds it");
        }
    }
}

/// `name`'s list in `from`, if any, put in `to`.
fn carry(
    from: &Mutex<HashMap<String, Arc<Vec<Channel>>>>,
    to: &Mutex<HashMap<String, Arc<Vec<Channel>>>>,
    name: &str,
) {
    let list = from
        .lock()
        .expect("list lock is never poisoned")
        .get(name)
        .cloned();
    if let Some(list) = list {
        to.lock()
            .expect("list lock is never poisoned")
            .insert(name.to_string(), list);
    }
}
