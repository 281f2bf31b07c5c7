//! The coordinator (the original design's `MultiServiceStreamer`): holds every
//! configured service with its runtime state (enabled, priority, health counters),
//! caches channel lists and resolutions, builds the merged lineup and opens a
//! channel's stream by trying its sources in priority order (or racing the best few,
//! `streams.race`), skipping services whose circuit is open (`health`) unless no other
//! source is left. Real traffic and the background probes (`spawn_monitors`) feed the
//! same per-service health.
//!
//! Runtime changes (enable/disable, the channel mapping) go to the store first, then
//! take effect; the config file is never written.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::stream::{FuturesUnordered, StreamExt};
use moka::future::Cache;
use moka::Expiry;
use tokio::task::JoinHandle;

use super::{build, BuildContext, Service};
use crate::config::{Config, ServiceConfig};
use crate::error::{AppError, Attempt, UpstreamError};
use crate::health::{CircuitState, Health, Permit, Policy};
use crate::lineup::{self, Lineup, ServiceChannels, Unmapped};
use crate::model::{
    Channel, ChannelDetail, ChannelPatch, LineupChannel, ResolvedStream, ServiceStatus,
};
use crate::store::{Store, StoreError};
use crate::upstream::Http;

/// Consecutive failures after which a service shows as unhealthy (its circuit opens
/// later, at `health.open_after`).
const UNHEALTHY_AFTER: u32 = 3;
/// How long a lineup built while some service failed is kept before trying again.
const DEGRADED_LINEUP_TTL: Duration = Duration::from_secs(30);

/// How one service's part of a fetch of every service ended, told as it ends: the
/// CLI (`freesky channels`, `freesky guide`) draws a progress line per service from it.
#[derive(Debug, Clone, Copy)]
pub enum Step<'a> {
    /// Its channel list: how many channels, or why not.
    Channels(Result<usize, &'a UpstreamError>),
    /// Its guide: `(channels matched, programmes)`, `None` when it has no guide, or why not.
    Guide(Result<Option<(usize, usize)>, &'a str>),
}

/// Called with each service's name and `Step`; the server passes none.
pub type Observer<'a> = &'a (dyn Fn(&str, Step<'_>) + Send + Sync);

/// One configured service and what freesky learned about it at runtime.
struct Entry {
    cfg: ServiceConfig,
    service: Arc<dyn Service>,
    stats: Mutex<Stats>,
}

struct Stats {
    last_error: Option<String>,
    last_checked: Option<SystemTime>,
    latency_ms: Option<u64>,
    successes: u64,
    failures: u64,
    /// Success rate, latency EWMA, consecutive failures and the circuit breaker.
    health: Health,
    channel_count: usize,
    /// The last hour of outcomes per minute, for the dashboard's chart.
    history: crate::history::History,
}

impl Stats {
    fn new(policy: Policy) -> Self {
        Self {
            last_error: None,
            last_checked: None,
            latency_ms: None,
            successes: 0,
            failures: 0,
            health: Health::new(policy),
            channel_count: 0,
            history: crate::history::History::new(),
        }
    }
}

/// The background probes of every service; dropping it stops them.
pub struct Monitors(Vec<JoinHandle<()>>);

impl Drop for Monitors {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// A lineup and when it stops being fresh.
struct CachedLineup {
    /// The merged channels before the mapping: a mapping change re-applies to these
    /// at once, without fetching anything.
    base: Arc<Vec<Unmapped>>,
    lineup: Arc<Lineup>,
    fresh_until: Instant,
}

/// Resolutions live as long as each says (`ResolvedStream::valid_for`).
struct ValidFor;

impl Expiry<(String, String), Arc<ResolvedStream>> for ValidFor {
    fn expire_after_create(
        &self,
        _: &(String, String),
        v: &Arc<ResolvedStream>,
        _: std::time::Instant,
    ) -> Option<Duration> {
        Some(v.valid_for)
    }
}

/// What an attempt on one source gets to work with.
pub struct SourceCtx {
    pub service_name: String,
    pub service: Arc<dyn Service>,
    pub channel_id: String,
    pub resolved: Arc<ResolvedStream>,
}

pub struct Registry {
    /// In config order.
    entries: Vec<Arc<Entry>>,
    store: Store,
    channels: Cache<String, Arc<Vec<Channel>>>,
    resolved: Cache<(String, String), Arc<ResolvedStream>>,
    lineup: tokio::sync::Mutex<Option<CachedLineup>>,
    channels_ttl: Duration,
    /// How many healthy sources `open` tries at once (`streams.race`).
    race: usize,
    /// Notified each time `lineup` builds a new lineup: the guide looks then for
    /// services whose channels changed (`Guides::spawn_refresh`).
    rebuilt: Arc<tokio::sync::Notify>,
    /// Each service's last channel list that loaded: the lineup keeps a service's
    /// channels through an outage (its status says why) instead of dropping them.
    last_good: Mutex<HashMap<String, Arc<Vec<Channel>>>>,
}

impl Registry {
    pub fn new(cfg: &Config, store: Store, http: Http) -> Self {
        let ctx = BuildContext {
            http,
            resolved_ttl: cfg.cache.resolved_ttl,
        };
        let policy = cfg.health.policy();
        let entries = cfg
            .services
            .iter()
            .map(|s| {
                Arc::new(Entry {
                    cfg: s.clone(),
                    service: build(s, &ctx),
                    stats: Mutex::new(Stats::new(policy)),
                })
            })
            .collect();
        Self {
            entries,
            store,
            channels: Cache::builder()
                .time_to_live(cfg.cache.channels_ttl)
                .max_capacity(1_000)
                .build(),
            resolved: Cache::builder()
                .max_capacity(50_000)
                .expire_after(ValidFor)
                .build(),
            lineup: tokio::sync::Mutex::new(None),
            channels_ttl: cfg.cache.channels_ttl,
            race: cfg.streams.race.max(1),
            rebuilt: Arc::default(),
            last_good: Mutex::default(),
        }
    }

    /// The runtime store, for a config reload to build the next registry on.
    pub fn store(&self) -> &Store {
        &self.store
    }

    fn entry(&self, name: &str) -> Option<&Arc<Entry>> {
        self.entries.iter().find(|e| e.cfg.name == name)
    }

    pub fn is_enabled(&self, name: &str) -> bool {
        self.entry(name).is_some_and(|e| self.enabled(e))
    }

    fn enabled(&self, e: &Entry) -> bool {
        self.store
            .service_override(&e.cfg.name)
            .enabled
            .unwrap_or(e.cfg.enabled)
    }

    fn priority(&self, e: &Entry) -> i64 {
        self.store
            .service_override(&e.cfg.name)
            .priority
            .unwrap_or(e.cfg.priority)
    }

    /// How long a lineup built with every service answering stays fresh
    /// (`cache.channels_ttl`): the lineup cannot change sooner unless asked to.
    pub fn lineup_ttl(&self) -> Duration {
        self.channels_ttl
    }

    /// Notified (one stored permit) whenever a new lineup has been built from the
    /// channel lists; mapping edits are not rebuilds and do not notify.
    pub fn lineup_rebuilt(&self) -> Arc<tokio::sync::Notify> {
        self.rebuilt.clone()
    }

    /// The running service called `name`, enabled or not.
    pub fn service(&self, name: &str) -> Option<Arc<dyn Service>> {
        self.entry(name).map(|e| e.service.clone())
    }

    /// Status of every configured service, in config order.
    pub fn status(&self) -> Vec<ServiceStatus> {
        self.entries.iter().map(|e| self.status_of(e)).collect()
    }

    /// The last hour of service `name`'s upstream calls, per minute (`None`: no such service).
    /// After a config reload: each service keeps the last hour of outcomes `prev`
    /// recorded under its name (the dashboard's chart goes on). Its health starts
    /// afresh: the circuit closes, so a fixed config is tried at once.
    pub fn keep_history_of(&self, prev: &Registry) {
        for e in &self.entries {
            let Some(old) = prev.entry(&e.cfg.name) else {
                continue;
            };
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

    pub fn history(&self, name: &str) -> Option<crate::history::Snapshot> {
        let e = self.entry(name)?;
        let s = e
            .stats
            .lock()
            .expect("stats lock is never poisoned: no panics while held");
        Some(s.history.snapshot(SystemTime::now()))
    }

    fn status_of(&self, e: &Entry) -> ServiceStatus {
        let s = e
            .stats
            .lock()
            .expect("stats lock is never poisoned: no panics while held");
        let now = Instant::now();
        let circuit = s.health.state(now);
        ServiceStatus {
            name: e.cfg.name.clone(),
            kind: e.cfg.kind.kind_name().to_string(),
            enabled: self.enabled(e),
            priority: self.priority(e),
            description: e.cfg.description.clone(),
            healthy: circuit == CircuitState::Closed
                && s.health.consecutive_failures() < UNHEALTHY_AFTER,
            channel_count: s.channel_count,
            last_error: s.last_error.clone(),
            last_checked: s
                .last_checked
                .map(|t| humantime::format_rfc3339_seconds(t).to_string()),
            latency_ms: s.latency_ms,
            successes: s.successes,
            failures: s.failures,
            circuit: circuit.as_str().to_string(),
            success_rate: s.health.success_rate(),
            latency_ewma_ms: s.health.latency_ewma_ms().map(|ms| ms.round() as u64),
            consecutive_failures: s.health.consecutive_failures(),
            retry_at: s.health.retry_at(now).map(|at| {
                humantime::format_rfc3339_millis(SystemTime::now() + (at - now)).to_string()
            }),
            account: e.service.account(),
        }
    }

    /// Enables or disables a service, persisting the choice; the lineup follows at once.
    pub async fn set_enabled(&self, name: &str, enabled: bool) -> Result<ServiceStatus, AppError> {
        let e = self
            .entry(name)
            .ok_or_else(|| AppError::NotFound(format!("unknown service `{name}`")))?;
        self.store.set_enabled(name, enabled).await?;
        *self.lineup.lock().await = None;
        tracing::info!(service = name, enabled, "service switched");
        Ok(self.status_of(e))
    }

    /// Sets a service's priority (lower is tried first), persisting it; the lineup's
    /// source order follows at once.
    pub async fn set_priority(&self, name: &str, priority: i64) -> Result<ServiceStatus, AppError> {
        let e = self
            .entry(name)
            .ok_or_else(|| AppError::NotFound(format!("unknown service `{name}`")))?;
        self.store.set_priority(name, priority).await?;
        *self.lineup.lock().await = None;
        tracing::info!(service = name, priority, "service priority set");
        Ok(self.status_of(e))
    }

    fn record<T>(&self, e: &Entry, started: Instant, result: &Result<T, UpstreamError>) {
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

    /// Asks `e`'s circuit breaker whether it may be used now (see [`Permit`]).
    fn permit(&self, e: &Entry) -> Permit {
        e.stats
            .lock()
            .expect("stats lock is never poisoned: no panics while held")
            .health
            .permit(Instant::now())
    }

    fn is_open(&self, e: &Entry) -> bool {
        e.stats
            .lock()
            .expect("stats lock is never poisoned: no panics while held")
            .health
            .state(Instant::now())
            == CircuitState::Open
    }

    fn is_closed(&self, e: &Entry) -> bool {
        e.stats
            .lock()
            .expect("stats lock is never poisoned: no panics while held")
            .health
            .state(Instant::now())
            == CircuitState::Closed
    }

    fn latency_ewma(&self, e: &Entry) -> Option<f64> {
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

    async fn probe(&self, e: &Entry) {
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

    /// One service's channels, from cache or fetched (concurrent callers share one fetch).
    pub async fn channels_of(&self, name: &str) -> Result<Arc<Vec<Channel>>, UpstreamError> {
        let e = self
            .entry(name)
            .ok_or_else(|| UpstreamError::Invalid(format!("unknown service `{name}`")))?
            .clone();
        self.channels
            .try_get_with(name.to_string(), async {
                let started = Instant::now();
                // Bounded even if a kind forgets to bound a step.
                let bound = e.cfg.timeout * 3;
                let result = tokio::time::timeout(bound, e.service.channels())
                    .await
                    .unwrap_or(Err(UpstreamError::Timeout(bound)));
                self.record(&e, started, &result);
                match result {
                    Ok(list) => {
                        e.stats.lock().expect("stats lock is never poisoned").channel_count = list.len();
                        tracing::info!(service = %e.cfg.name, channels = list.len(), "channel list loaded");
                        Ok(Arc::new(list))
                    }
                    Err(err) => {
                        tracing::warn!(service = %e.cfg.name, error = %err, "channel list failed");
                        Err(err)
                    }
                }
            })
            .await
            .map_err(|e: Arc<UpstreamError>| (*e).clone())
    }

    /// The merged lineup of every enabled service. A service that fails contributes
    /// its last channel list that loaded, or nothing if none did (its status says
    /// why); the lineup is then retried sooner. A service whose circuit is open is not
    /// asked until its backoff is over.
    pub async fn lineup(&self) -> Result<Arc<Lineup>, AppError> {
        self.lineup_observed(None).await
    }

    /// `lineup`, telling `observe` as each service's channel list is in. A fresh cached
    /// lineup is returned without fetching, so without telling anything.
    pub async fn lineup_observed(
        &self,
        observe: Option<Observer<'_>>,
    ) -> Result<Arc<Lineup>, AppError> {
        let mut cached = self.lineup.lock().await;
        if let Some(c) = cached.as_ref().filter(|c| c.fresh_until > Instant::now()) {
            return Ok(c.lineup.clone());
        }
        let mut enabled: Vec<&Arc<Entry>> =
            self.entries.iter().filter(|e| self.enabled(e)).collect();
        enabled.sort_by_key(|e| self.priority(e));
        let lists = futures::future::join_all(enabled.iter().map(|e| async move {
            let name = &e.cfg.name;
            // An open circuit (backoff not over) is not asked: the lineup would wait
            // for a service known to fail. Its trial comes from a probe or a stream.
            let list = match self.channels.get(name).await {
                Some(list) => Ok(list),
                None if self.is_open(e) => Err(UpstreamError::Invalid(
                    "circuit open: not asked until its next trial".into(),
                )),
                None => self.channels_of(name).await,
            };
            if let Some(observe) = observe {
                observe(name, Step::Channels(list.as_ref().map(|l| l.len())));
            }
            list
        }))
        .await;
        let degraded = lists.iter().any(Result::is_err);
        let lists: Vec<Arc<Vec<Channel>>> = {
            let mut last_good = self
                .last_good
                .lock()
                .expect("last_good lock is never poisoned");
            enabled
                .iter()
                .zip(lists)
                .map(|(e, r)| match r {
                    Ok(list) => {
                        last_good.insert(e.cfg.name.clone(), list.clone());
                        list
                    }
                    // Failing now: its channels as last listed (a player's channel list
                    // does not shrink through an outage); none if it never listed.
                    Err(_) => last_good.get(&e.cfg.name).cloned().unwrap_or_default(),
                })
                .collect()
        };
        let inputs: Vec<ServiceChannels<'_>> = enabled
            .iter()
            .zip(&lists)
            .map(|(e, l)| ServiceChannels {
                service: &e.cfg.name,
                priority: self.priority(e),
                channels: l,
            })
            .collect();
        let merged = lineup::merge(&inputs);
        let keys: Vec<(String, String)> = merged
            .iter()
            .map(|m| (m.merge_key.clone(), m.wanted_slug.clone()))
            .collect();
        let ids = self.store.identities(&keys).await?;
        let base: Vec<Unmapped> = merged
            .into_iter()
            .zip(ids)
            .map(|(m, id)| Unmapped {
                channel: LineupChannel {
                    guide_id: lineup::guide_id(&m.tvg_id, &id.slug),
                    id: id.slug,
                    number: id.number,
                    name: m.name,
                    logo: m.logo,
                    group: m.group,
                    tags: m.tags,
                    sources: m.sources,
                    catchup_days: m.catchup_days,
                },
                tvg_id: m.tvg_id,
            })
            .collect();
        let lineup = Arc::new(Lineup::mapped(&base, &self.store.mappings()));
        let ttl = if degraded {
            DEGRADED_LINEUP_TTL.min(self.channels_ttl)
        } else {
            self.channels_ttl
        };
        *cached = Some(CachedLineup {
            base: Arc::new(base),
            lineup: lineup.clone(),
            fresh_until: Instant::now() + ttl,
        });
        self.rebuilt.notify_one();
        Ok(lineup)
    }

    /// One lineup channel (slug or number, hidden ones included) with its mapping.
    pub async fn channel(&self, id: &str) -> Result<ChannelDetail, AppError> {
        self.lineup()
            .await?
            .detail(id)
            .ok_or_else(|| AppError::NotFound(format!("unknown channel `{id}`")))
    }

    /// Applies `patch` to the mapping of channel `id` (slug or number): checked,
    /// persisted, then in the lineup at once. Returns the channel as it now is.
    pub async fn map_channel(
        &self,
        id: &str,
        patch: &ChannelPatch,
    ) -> Result<ChannelDetail, AppError> {
        let slug = self
            .lineup()
            .await?
            .get(id)
            .map(|c| c.id.clone())
            .ok_or_else(|| AppError::NotFound(format!("unknown channel `{id}`")))?;
        let services: Vec<&str> = self.entries.iter().map(|e| e.cfg.name.as_str()).collect();
        let mapping = self
            .store
            .update_mapping(&slug, |current| {
                lineup::patch_mapping(current, patch, &services)
            })
            .await
            .map_err(|e| match e {
                StoreError::Rejected(why) => AppError::BadRequest(why),
                e => e.into(),
            })?;
        tracing::info!(channel = %slug, ?mapping, "channel mapping changed");
        let lineup = {
            let mut cached = self.lineup.lock().await;
            match cached.as_mut() {
                Some(c) => {
                    c.lineup = Arc::new(Lineup::mapped(&c.base, &self.store.mappings()));
                    Some(c.lineup.clone())
                }
                None => None,
            }
        };
        let lineup = match lineup {
            Some(l) => l,
            // Dropped meanwhile (a service was switched): build it afresh.
            None => self.lineup().await?,
        };
        lineup
            .detail(&slug)
            .ok_or_else(|| AppError::NotFound(format!("unknown channel `{id}`")))
    }

    /// Resolves `channel_id` of `service`, from cache when still valid.
    async fn resolve(
        &self,
        e: &Entry,
        channel_id: &str,
    ) -> Result<Arc<ResolvedStream>, UpstreamError> {
        let key = (e.cfg.name.clone(), channel_id.to_string());
        if let Some(r) = self.resolved.get(&key).await {
            return Ok(r);
        }
        let channels = self.channels_of(&e.cfg.name).await?;
        let channel = channels
            .iter()
            .find(|c| c.id == channel_id)
            .ok_or_else(|| UpstreamError::NoChannel(channel_id.to_string()))?;
        let bound = e.cfg.timeout * 3;
        // Not recorded here: `try_source` records the whole attempt, resolve included.
        let result = tokio::time::timeout(bound, e.service.resolve(channel))
            .await
            .unwrap_or(Err(UpstreamError::Timeout(bound)));
        let resolved = Arc::new(result?);
        self.resolved.insert(key, resolved.clone()).await;
        Ok(resolved)
    }

    /// Freesky no longer uses `channel_id` of `service`: drops its cached resolution
    /// (the service may end what it pointed at) and tells the service
    /// ([`Service::release`]).
    pub async fn release(&self, service: &str, channel_id: &str) {
        let Some(e) = self.entry(service) else {
            return;
        };
        self.resolved
            .invalidate(&(service.to_string(), channel_id.to_string()))
            .await;
        e.service.release(channel_id).await;
    }

    /// Channel `id` as a viewer asked for it (slug, a number written any way `u32`
    /// parses it: `5`, `05`, `+5`, or `SERVICE:ID`), with the service filter `only`,
    /// in the one form every way of naming the same stream shares: the lineup channel's
    /// slug, and for `SERVICE:ID` that slug pinned to the service. Sessions, viewer
    /// counts and metric labels are keyed by it, so aliases share one upstream
    /// connection and one label. An id naming no lineup channel (or a `SERVICE:ID` that
    /// is not exactly one source of one) comes back as it was: `open` then refuses it
    /// or opens it as before.
    pub async fn canonical(
        &self,
        id: &str,
        only: Option<&str>,
    ) -> Result<(String, Option<String>), AppError> {
        let unchanged = || Ok((id.to_string(), only.map(str::to_string)));
        let lineup = self.lineup().await?;
        let source = id
            .split_once(':')
            .filter(|(service, _)| self.entry(service).is_some());
        if let Some((service, channel_id)) = source {
            if only.is_some_and(|o| o != service) {
                // `sources` explains the conflict.
                return unchanged();
            }
            // The lineup channel this source belongs to, if it is that channel's only
            // source from `service`: then pinning the channel to `service` plays the
            // very same source.
            let owner = lineup.channels.iter().chain(lineup.hidden()).find(|c| {
                let mut of_service = c.sources.iter().filter(|s| s.service == service);
                of_service
                    .next()
                    .is_some_and(|s| s.channel_id == channel_id)
                    && of_service.next().is_none()
            });
            return match owner {
                Some(c) => Ok((c.id.clone(), Some(service.to_string()))),
                None => unchanged(),
            };
        }
        match lineup.get(id) {
            Some(c) => Ok((c.id.clone(), only.map(str::to_string))),
            None => unchanged(),
        }
    }

    /// The sources to try for a channel id (lineup slug or number, or `SERVICE:ID`),
    /// optionally only those of service `only`.
    async fn sources(
        &self,
        id: &str,
        only: Option<&str>,
    ) -> Result<Vec<(Arc<Entry>, String)>, AppError> {
        if let Some(name) = only {
            if self.entry(name).is_none() {
                return Err(AppError::NotFound(format!("unknown service `{name}`")));
            }
        }
        if let Some((service, channel_id)) = id.split_once(':') {
            if let Some(e) = self.entry(service) {
                if only.is_some_and(|o| o != service) {
                    return Err(AppError::BadRequest(format!(
                        "`{id}` names service `{service}`, not `{}`",
                        only.unwrap_or_default()
                    )));
                }
                if !self.enabled(e) {
                    return Err(AppError::NotFound(format!(
                        "service `{service}` is disabled"
                    )));
                }
                return Ok(vec![(e.clone(), channel_id.to_string())]);
            }
        }
        let lineup = self.lineup().await?;
        let channel = lineup
            .get(id)
            .ok_or_else(|| AppError::NotFound(format!("unknown channel `{id}`")))?;
        let sources: Vec<_> = channel
            .sources
            .iter()
            .filter(|s| only.is_none_or(|o| o == s.service))
            .filter_map(|s| {
                self.entry(&s.service)
                    .filter(|e| self.enabled(e))
                    .map(|e| (e.clone(), s.channel_id.clone()))
            })
            .collect();
        if sources.is_empty() {
            let why = match only {
                Some(o) => format!("channel `{id}` has no source from service `{o}`"),
                None => format!("channel `{id}` has no enabled source"),
            };
            return Err(AppError::NotFound(why));
        }
        Ok(sources)
    }

    /// Tries the channel's sources in priority order: resolve (cached), then `attempt`
    /// (which typically fetches the first playlist). The first success wins; when all
    /// fail, the error lists every (service, why).
    ///
    /// Services whose circuit is open are skipped, then tried last when every other
    /// source failed (a channel with one source left still gets a chance rather than
    /// a 502 without trying). With `streams.race` > 1, up to that many leading sources
    /// with a closed circuit (equal priorities ordered by latency) are tried at once:
    /// the first success wins and the others are dropped (cancelled, not counted).
    pub async fn open<T, F, Fut>(
        &self,
        id: &str,
        only: Option<&str>,
        attempt: F,
    ) -> Result<T, AppError>
    where
        F: Fn(SourceCtx) -> Fut,
        Fut: Future<Output = Result<T, UpstreamError>>,
    {
        self.open_except(id, only, &[], attempt).await
    }

    /// [`open`](Self::open) without the sources of the services in `skip` (the ones a
    /// stream just failed over from). When that leaves none, all are tried again.
    pub async fn open_except<T, F, Fut>(
        &self,
        id: &str,
        only: Option<&str>,
        skip: &[String],
        attempt: F,
    ) -> Result<T, AppError>
    where
        F: Fn(SourceCtx) -> Fut,
        Fut: Future<Output = Result<T, UpstreamError>>,
    {
        let mut sources = self.sources(id, only).await?;
        if sources.iter().any(|(e, _)| !skip.contains(&e.cfg.name)) {
            sources.retain(|(e, _)| !skip.contains(&e.cfg.name));
        }
        if self.race > 1 {
            self.order_by_latency(&mut sources);
        }
        let mut queue = VecDeque::from(sources);
        let mut tried = Vec::new();
        let mut last_resort = Vec::new();
        while let Some(first) = queue.pop_front() {
            let mut batch = vec![first];
            match self.permit(&batch[0].0) {
                Permit::No => {
                    tracing::debug!(service = %batch[0].0.cfg.name, "circuit open: source skipped for now");
                    last_resort.append(&mut batch);
                    continue;
                }
                Permit::Trial => {
                    tracing::info!(service = %batch[0].0.cfg.name, "circuit half-open: this request is the trial");
                }
                Permit::Yes => {
                    while batch.len() < self.race
                        && queue.front().is_some_and(|(e, _)| self.is_closed(e))
                    {
                        batch.extend(queue.pop_front());
                    }
                }
            }
            match self.try_batch(&batch, &attempt).await {
                Ok(v) => return Ok(v),
                Err(mut failed) => tried.append(&mut failed),
            }
        }
        for source in last_resort {
            tracing::info!(service = %source.0.cfg.name, channel = %source.1, "circuit open, but no other source is left: trying it");
            match self
                .try_batch(std::slice::from_ref(&source), &attempt)
                .await
            {
                Ok(v) => return Ok(v),
                Err(mut failed) => tried.append(&mut failed),
            }
        }
        Err(AppError::AllSourcesFailed {
            channel: id.to_string(),
            tried,
        })
    }

    /// [`open`](Self::open) of channel `id` from `service` only, resolved afresh: its
    /// cached resolutions are dropped first. A token refresh: the same source, with
    /// the URL (and token) the service hands out now.
    pub async fn reopen<T, F, Fut>(
        &self,
        id: &str,
        service: &str,
        attempt: F,
    ) -> Result<T, AppError>
    where
        F: Fn(SourceCtx) -> Fut,
        Fut: Future<Output = Result<T, UpstreamError>>,
    {
        for (e, channel_id) in self.sources(id, Some(service)).await? {
            self.resolved
                .invalidate(&(e.cfg.name.clone(), channel_id))
                .await;
        }
        self.open(id, Some(service), attempt).await
    }

    /// Within each run of equal priority (a mapping's pinned order is kept otherwise),
    /// the fastest services first; ones not measured yet count as fastest, so they get
    /// measured.
    fn order_by_latency(&self, sources: &mut [(Arc<Entry>, String)]) {
        let mut start = 0;
        while start < sources.len() {
            let p = self.priority(&sources[start].0);
            let len = sources[start..]
                .iter()
                .take_while(|(e, _)| self.priority(e) == p)
                .count();
            let run = &mut sources[start..start + len];
            run.sort_by(|(a, _), (b, _)| {
                let (a, b) = (self.latency_ewma(a), self.latency_ewma(b));
                a.unwrap_or(0.0).total_cmp(&b.unwrap_or(0.0))
            });
            start += len;
        }
    }

    /// Tries the sources of `batch` at once: the first success wins and the rest are
    /// dropped; when all fail, their attempts in batch order.
    async fn try_batch<T, F, Fut>(
        &self,
        batch: &[(Arc<Entry>, String)],
        attempt: &F,
    ) -> Result<T, Vec<Attempt>>
    where
        F: Fn(SourceCtx) -> Fut,
        Fut: Future<Output = Result<T, UpstreamError>>,
    {
        let mut running: FuturesUnordered<_> = batch
            .iter()
            .enumerate()
            .map(|(i, (e, channel_id))| async move {
                (i, self.try_source(e, channel_id, attempt).await)
            })
            .collect();
        let mut failed = Vec::new();
        while let Some((i, result)) = running.next().await {
            match result {
                Ok(v) => {
                    if batch.len() > 1 {
                        tracing::debug!(service = %batch[i].0.cfg.name, racing = batch.len(), "race won; the other sources are dropped");
                    }
                    return Ok(v);
                }
                Err(a) => failed.push((i, a)),
            }
        }
        failed.sort_by_key(|(i, _)| *i);
        Err(failed.into_iter().map(|(_, a)| a).collect())
    }

    /// One source: resolve (cached), then `attempt`, bounded; the outcome is recorded
    /// once in the service's health.
    async fn try_source<T, F, Fut>(
        &self,
        e: &Arc<Entry>,
        channel_id: &str,
        attempt: &F,
    ) -> Result<T, Attempt>
    where
        F: Fn(SourceCtx) -> Fut,
        Fut: Future<Output = Result<T, UpstreamError>>,
    {
        let started = Instant::now();
        let bound = e.cfg.timeout * 3;
        let result = tokio::time::timeout(bound, async {
            let resolved = self.resolve(e, channel_id).await?;
            let ctx = SourceCtx {
                service_name: e.cfg.name.clone(),
                service: e.service.clone(),
                channel_id: channel_id.to_string(),
                resolved,
            };
            attempt(ctx).await
        })
        .await
        .unwrap_or(Err(UpstreamError::Timeout(bound)));
        self.record(e, started, &result);
        match result {
            Ok(v) => Ok(v),
            Err(err) => {
                tracing::warn!(service = %e.cfg.name, channel = %channel_id, error = %err, elapsed_ms = started.elapsed().as_millis() as u64, "source failed, trying the next");
                // A stale resolution is a common cause: resolve afresh next time.
                self.resolved
                    .invalidate(&(e.cfg.name.clone(), channel_id.to_string()))
                    .await;
                Err(Attempt {
                    service: e.cfg.name.clone(),
                    channel_id: channel_id.to_string(),
                    timeout: err.is_timeout(),
                    error: err.to_string(),
                })
            }
        }
    }
}
