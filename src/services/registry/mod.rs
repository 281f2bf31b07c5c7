//! The coordinator: holds every
//! configured service with its runtime state (enabled, priority, health counters),
//! caches channel lists and resolutions, builds the merged lineup and opens a
//! channel's stream by trying its sources in priority order (or racing the best few,
//! `streams.race`), skipping services whose circuit is open (`health`) unless no other
//! source is left. Real traffic and the background probes (`spawn_monitors`) feed the
//! same per-service health.
//!
//! Runtime changes (enable/disable, the channel mapping) go to the store first, then
//! take effect; the config file is never written.
//!
//! Here: the table of services and the errors; `status` (stats, status, runtime
//! switches), `health` (recording outcomes, probes), `listing` (channel lists, the
//! lineup, mapping edits, canonical ids), `open` (source selection, fallback, racing).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use moka::future::Cache;
use moka::Expiry;
use tokio::task::JoinHandle;

mod health;
mod listing;
mod open;
mod saved;
pub(crate) use saved::list_config;
pub(crate) use saved::write_whole;
mod shared;
mod status;
#[cfg(test)]
mod tests;

use super::{build, BuildContext, Service};
use crate::config::{Config, ServiceConfig};
use crate::error::{Attempt, UpstreamError};
use crate::health::{Health, Policy};
use crate::lineup::{Lineup, Unmapped};
use crate::model::{Channel, ResolvedStream};
use crate::store::{Store, StoreError};
use crate::upstream::Http;

/// What the registry can fail with. Where it becomes an HTTP status is `crate::error`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RegistryError {
    /// No service of this name (the message: `Registry::unknown_service`).
    #[error("{0}")]
    UnknownService(String),
    /// No lineup channel has this id, slug or number.
    #[error("unknown channel `{0}`")]
    UnknownChannel(String),
    /// A `SERVICE:ID` asked with a `service` filter naming another service.
    #[error("`{id}` names service `{service}`, not `{only}`")]
    WrongService {
        id: String,
        service: String,
        only: String,
    },
    #[error("service `{0}` is disabled")]
    ServiceDisabled(String),
    /// The channel exists, but none of its sources may be tried (all disabled, or
    /// none from the one service asked for).
    #[error("channel `{channel}` has no {}", no_source(.only.as_deref()))]
    NoSource {
        channel: String,
        only: Option<String>,
    },
    /// Every source was tried and failed; `tried` says why, in order.
    #[error("every source of `{channel}` failed")]
    AllSourcesFailed {
        channel: String,
        tried: Vec<Attempt>,
    },
    /// A mapping change the stored state refuses (a number already in use).
    #[error("{0}")]
    Rejected(String),
    /// The runtime store failed (its message; `StoreError` is not `Clone`).
    #[error("{0}")]
    Store(String),
    /// The shared store (PostgreSQL) could not be reached: nothing was changed.
    #[error("{0}")]
    StoreUnavailable(String),
    /// The store's file was deleted or replaced under the running process: nothing
    /// was changed (it would have been lost at the next start).
    #[error("{0}")]
    StoreGone(String),
    /// The shared store took the call but did not answer in time: the change may
    /// still be made once it answers.
    #[error("{0}")]
    StoreNoAnswer(String),
}

fn no_source(only: Option<&str>) -> String {
    match only {
        Some(o) => format!("source from service `{o}`"),
        None => "enabled source".to_string(),
    }
}

impl From<StoreError> for RegistryError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Postgres(_) | StoreError::Contended(_) => {
                Self::StoreUnavailable(e.to_string())
            }
            StoreError::NoAnswer(_) => Self::StoreNoAnswer(e.to_string()),
            StoreError::Gone(_) => Self::StoreGone(e.to_string()),
            e => Self::Store(e.to_string()),
        }
    }
}

/// Consecutive failures after which a service shows as unhealthy (its circuit opens
/// later, at `health.open_after`).
const UNHEALTHY_AFTER: u32 = 3;
/// How long a lineup built while some service failed is kept before trying again.
const DEGRADED_LINEUP_TTL: Duration = Duration::from_secs(30);
/// How long the first lineup (of a start or a reload) waits for a service whose
/// channels are kept from before (`state_dir/lists/`, or carried by the reload) before
/// they stand in for its list: longer than a big panel's usual answer, shorter than a
/// hanging one's timeout.
const KEPT_WAIT: Duration = Duration::from_secs(5);

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
    /// Its streams' playlists and segments served through freesky, and the ones that
    /// failed (a relay's source given up counts once); kept apart from the calls
    /// above: they judge the service, not one channel's stream.
    stream_successes: u64,
    stream_failures: u64,
    /// The last stream failure's message and time.
    last_stream_error: Option<(SystemTime, String)>,
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
            stream_successes: 0,
            stream_failures: 0,
            last_stream_error: None,
        }
    }
}

/// The background probes of every service; dropping it stops them.
pub struct Monitors(Vec<JoinHandle<()>>);

impl Monitors {
    /// Adds one more background task, stopped with the others.
    pub fn push(&mut self, task: JoinHandle<()>) {
        self.0.push(task);
    }
}

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
    /// The lineup last built; `None` until the first build and after a change that
    /// must show at once (a service switched). Held only to read or swap it.
    lineup: Mutex<Option<CachedLineup>>,
    /// Held while a lineup is built: one build at a time.
    building: Arc<tokio::sync::Mutex<()>>,
    /// Counts the changes that drop the lineup: a build that began before one does
    /// not keep its (older) result.
    generation: std::sync::atomic::AtomicU64,
    /// The generation the latest build began in.
    building_generation: std::sync::atomic::AtomicU64,
    /// This registry, for building a lineup in the background while the last one is
    /// served (`shared`); unset (unit tests), a stale lineup is rebuilt in place.
    me: std::sync::OnceLock<std::sync::Weak<Registry>>,
    channels_ttl: Duration,
    /// How many healthy sources `open` tries at once (`streams.race`).
    race: usize,
    /// Notified each time `lineup` builds a new lineup: the guide looks then for
    /// services whose channels changed (`Guides::spawn_refresh`).
    rebuilt: Arc<tokio::sync::Notify>,
    /// Each service's last channel list that loaded: the lineup keeps a service's
    /// channels through an outage (its status says why) instead of dropping them.
    last_good: Mutex<HashMap<String, Arc<Vec<Channel>>>>,
    /// Channels a service moved to another tvg-id (new merge key -> old), kept in the
    /// store (`MOVED_KEYS`) so the channel keeps its identity after a restart and on
    /// every instance; `None` until read from the store.
    moved_keys: Mutex<Option<HashMap<String, String>>>,
    /// Each channel's guide id as first taken from an upstream tvg-id (slug -> id),
    /// kept in the store (`GUIDE_IDS`): it stays while no source gives a tvg-id (the
    /// service giving it disabled) and through a change of case (`sticky_guide_ids`);
    /// `None` until read from the store.
    guide_ids: Mutex<Option<Arc<HashMap<String, String>>>>,
    /// Where a serving instance keeps each service's last good list (`saved`), once
    /// `keep_lists_in` says so.
    lists_dir: std::sync::OnceLock<std::path::PathBuf>,
    /// The list kept on disk of each service, as last written or read.
    saved: Arc<Mutex<HashMap<String, Arc<Vec<Channel>>>>>,
    /// When each service's channel list last failed, and why.
    list_failed: Mutex<HashMap<String, (Instant, UpstreamError)>>,
}

impl Registry {
    pub fn new(cfg: &Config, store: Store, http: Http) -> Self {
        let ctx = BuildContext {
            http,
            resolved_ttl: cfg.cache.resolved_ttl,
        };
        let services = cfg.services.iter().map(|s| build(s, &ctx)).collect();
        Self::with_services(cfg, store, services)
    }

    /// The registry of `cfg` running `services`, one per `cfg.services` entry in the
    /// same order (unit tests pass their own upstream doubles here).
    fn with_services(cfg: &Config, store: Store, services: Vec<Arc<dyn Service>>) -> Self {
        let policy = cfg.health.policy();
        let entries = cfg
            .services
            .iter()
            .zip(services)
            .map(|(s, service)| {
                Arc::new(Entry {
                    cfg: s.clone(),
                    service,
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
            lineup: Mutex::new(None),
            building: Arc::default(),
            generation: std::sync::atomic::AtomicU64::new(0),
            building_generation: std::sync::atomic::AtomicU64::new(0),
            me: std::sync::OnceLock::new(),
            channels_ttl: cfg.cache.channels_ttl,
            race: cfg.streams.race.max(1),
            rebuilt: Arc::default(),
            last_good: Mutex::default(),
            moved_keys: Mutex::default(),
            guide_ids: Mutex::default(),
            lists_dir: std::sync::OnceLock::new(),
            saved: Arc::default(),
            list_failed: Mutex::default(),
        }
    }

    /// This registry shared, able to rebuild a stale lineup in the background while
    /// it serves the last one.
    pub fn shared(self) -> Arc<Self> {
        let me = Arc::new(self);
        let _ = me.me.set(Arc::downgrade(&me));
        me
    }

    /// Marks the lineup as of before a switch: requests meanwhile are answered from it
    /// while the next is built (a 200,000-channel rebuild takes seconds); the switch's
    /// own call waits for the new one (`built_now`).
    fn drop_lineup(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if let Some(c) = self
            .lineup
            .lock()
            .expect("lineup lock is never poisoned")
            .as_mut()
        {
            c.fresh_until = Instant::now();
        }
    }

    /// Counts the changes to which services are enabled and their priorities (here or
    /// from another instance): what is built from the enabled services (the movie
    /// and series catalogue) builds again when it moves.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The runtime store, for a config reload to build the next registry on.
    pub fn store(&self) -> &Store {
        &self.store
    }

    fn entry(&self, name: &str) -> Option<&Arc<Entry>> {
        self.entries.iter().find(|e| e.cfg.name == name)
    }

    /// The error of service `name`, which none is; names are matched exactly (as the
    /// config writes them), so one written in another case is named.
    pub(super) fn unknown_service(&self, name: &str) -> RegistryError {
        let meant = self
            .entries
            .iter()
            .find(|e| e.cfg.name.to_lowercase() == name.to_lowercase());
        RegistryError::UnknownService(match meant {
            Some(e) => format!(
                "unknown service `{name}`: service names are matched as written; did you \
                 mean `{}`?",
                e.cfg.name
            ),
            None => format!("unknown service `{name}`"),
        })
    }

    /// The configured services' names, in config order.
    pub fn service_names(&self) -> Vec<&str> {
        self.entries.iter().map(|e| e.cfg.name.as_str()).collect()
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
}
