//! The running movie and series catalogue: loads every enabled service's lists (in
//! parallel) when first asked and again once older than `cache.vod_ttl`, keeps each
//! service's last good list through bad answers (its status says why), merges them
//! (`catalogue`), gives titles and episodes their stable ids from the store, fetches
//! a title's details on demand (cached for `cache.vod_info_ttl`) and picks the media
//! sources of a movie or an episode for an account.
//!
//! The catalogue holds only enabled services' titles, in their priority order: when
//! a service is switched or re-prioritised (`Registry::generation` moves), the next
//! request merges the kept lists again, once, without fetching them (a service
//! enabled whose lists were never read is read first). A disabled service's last
//! good lists are kept, so enabling it again brings its titles back at once.
//!
//! Episode ids are per series, season and episode number (`{series}/{season}/{episode}`
//! in the store's `vod.episode` ids), so the same episode of a series merged from two
//! services is one id whose sources are each service's copy. Which series, season and
//! episode an id is, is kept as one record per series (`vod.episodes`), read at start.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use super::catalogue::{Catalogue, ServiceList, TitleRef};
use super::{Details, ListedEpisode, MediaSource, VodKind};
use crate::accounts::Account;
use crate::services::registry::Registry;
use crate::store::{Store, StoreError};

/// Under `state_dir`: each service's last good movie and series lists.
const KEPT_DIR: &str = "vod";

/// Writes `listed` to `path` whole (a temporary file renamed into place, 0600; its
/// directory 0700); files of the same service's earlier configs are removed.
fn write_kept(path: &std::path::Path, listed: &[super::Listed]) -> std::io::Result<()> {
    let dir = path.parent().expect("a file in vod/");
    crate::services::registry::write_whole(path, |f| {
        serde_json::to_writer(f, listed).map_err(std::io::Error::other)
    })?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    // `{name hash}.{config hash}.{kind}.json`: the same service and kind, another config.
    let mut parts = name.split('.');
    let (Some(service), Some(_), Some(kind)) = (parts.next(), parts.next(), parts.next()) else {
        return Ok(());
    };
    for old in std::fs::read_dir(dir)?.flatten() {
        let n = old.file_name();
        let n = n.to_string_lossy();
        if n.starts_with(&format!("{service}."))
            && n.ends_with(&format!(".{kind}.json"))
            && n != name
        {
            let _ = std::fs::remove_file(old.path());
        }
    }
    Ok(())
}

/// Store namespace of the per-series episode records.
const EPISODES_NS: &str = "vod.episodes";
/// Store namespace of episode ids.
const EPISODE_IDS_NS: &str = "vod.episode";

/// Both catalogues as of one refresh.
pub struct Snapshot {
    pub movies: Catalogue,
    pub series: Catalogue,
    /// When this snapshot was built (`None`: never loaded).
    pub loaded: Option<Instant>,
}

impl Snapshot {
    pub fn of(&self, kind: VodKind) -> &Catalogue {
        match kind {
            VodKind::Movie => &self.movies,
            VodKind::Series => &self.series,
        }
    }
}

/// A service's catalogue status, shown beside its other status fields.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct VodStatus {
    /// Why the last catalogue refresh of this service failed (its last good lists are
    /// kept); `null` when it loaded.
    pub vod_error: Option<String>,
    pub movie_count: usize,
    pub series_count: usize,
    /// Entries skipped at the last refresh (no usable URL, no name...).
    pub vod_skipped: usize,
    /// RFC 3339 time of the last catalogue refresh.
    pub vod_checked: Option<String>,
}

/// One episode of a merged series.
#[derive(Debug, Clone)]
pub struct SeriesEpisode {
    pub id: u32,
    pub season: u16,
    pub episode: u16,
    pub title: String,
    pub ext: String,
    /// The service whose copy these facts are (its images are fetched through it).
    pub service: String,
    /// The episode's own facts, when its service gave some.
    pub info: Option<Box<super::EpisodeInfo>>,
}

/// Why a title or its media cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum VodError {
    /// No such title, or the account does not see it (the same answer for both).
    #[error("unknown {0} `{1}`")]
    NotFound(&'static str, String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct Library {
    registry: Arc<Registry>,
    store: Store,
    snapshot: RwLock<Arc<Snapshot>>,
    /// Each service's last good list of each kind.
    last_good: Mutex<HashMap<(String, VodKind), Arc<ServiceList>>>,
    status: Mutex<HashMap<String, VodStatus>>,
    /// Held while refreshing: concurrent askers wait for the one refresh.
    refreshing: Arc<tokio::sync::Mutex<()>>,
    /// Held while merging the kept lists into a snapshot: one merge at a time, so the
    /// last swapped in is of the latest enabled services.
    merging: tokio::sync::Mutex<()>,
    /// The registry's `generation` the snapshot was merged for; `u64::MAX`: none yet
    /// (or the snapshot a config reload handed over, to merge again for this registry).
    merged_for: std::sync::atomic::AtomicU64,
    /// The services whose lists have been asked for (answered or not): a service
    /// enabled later that is not here has its lists read before the merge.
    read: Mutex<std::collections::HashSet<String>>,
    ttl: Duration,
    /// The catalogue was taken back from the state dir: refreshed at the next request.
    due: std::sync::atomic::AtomicBool,
    details: moka::future::Cache<(String, VodKind, String), Arc<Details>>,
    /// Episode id → (series id, season, episode), and back.
    episodes: RwLock<EpisodeIds>,
}

#[derive(Default)]
struct EpisodeIds {
    by_id: HashMap<u32, (u32, u16, u16)>,
    by_key: HashMap<(u32, u16, u16), u32>,
}

impl EpisodeIds {
    fn insert(&mut self, id: u32, key: (u32, u16, u16)) {
        self.by_id.insert(id, key);
        self.by_key.insert(key, id);
    }
}

impl Library {
    /// The catalogue of `registry`'s services; `prev` (a config reload) hands over its
    /// loaded catalogue, last good lists and titles' details, so nothing is fetched
    /// again at once.
    pub fn new(
        registry: Arc<Registry>,
        cache: &crate::config::CacheConfig,
        prev: Option<&Library>,
    ) -> Self {
        let store = registry.store().clone();
        let mut episodes = EpisodeIds::default();
        match store.records(EPISODES_NS) {
            Ok(records) => {
                for (series, value) in records {
                    let Ok(series) = series.parse::<u32>() else {
                        continue;
                    };
                    let rows: Vec<(u32, u16, u16)> =
                        serde_json::from_value(value).unwrap_or_default();
                    for (id, season, episode) in rows {
                        episodes.insert(id, (series, season, episode));
                    }
                }
            }
            Err(e) => tracing::warn!("cannot read the stored episode ids: {e}"),
        }
        let snapshot = prev.map_or_else(
            || {
                Arc::new(Snapshot {
                    movies: Catalogue::empty(VodKind::Movie),
                    series: Catalogue::empty(VodKind::Series),
                    loaded: None,
                })
            },
            |p| p.snapshot(),
        );
        let last_good = prev
            .map(|p| p.last_good.lock().expect("no panics while held").clone())
            .unwrap_or_default();
        let read = prev
            .map(|p| p.read.lock().expect("no panics while held").clone())
            .unwrap_or_default();
        Self {
            registry,
            store,
            snapshot: RwLock::new(snapshot),
            last_good: Mutex::new(last_good),
            status: Mutex::default(),
            refreshing: Arc::default(),
            merging: tokio::sync::Mutex::default(),
            merged_for: std::sync::atomic::AtomicU64::new(u64::MAX),
            read: Mutex::new(read),
            ttl: cache.vod_ttl,
            due: std::sync::atomic::AtomicBool::new(false),
            // Kept over a reload (players show details from it while a provider is
            // down), unless their lifetime changed.
            details: prev
                .map(|p| p.details.clone())
                .filter(|d| d.policy().time_to_live() == Some(cache.vod_info_ttl))
                .unwrap_or_else(|| {
                    moka::future::Cache::builder()
                        .max_capacity(10_000)
                        .time_to_live(cache.vod_info_ttl)
                        .build()
                }),
            episodes: RwLock::new(episodes),
        }
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.read().expect("no panics while held").clone()
    }

    /// The catalogue now: loaded first if it never was; refreshed in the background
    /// when older than `cache.vod_ttl`.
    pub async fn current(self: &Arc<Self>) -> Arc<Snapshot> {
        let mut snap = self.snapshot();
        if snap.loaded.is_some() && self.stale() {
            snap = self.remerge().await;
        }
        if snap.loaded.is_none() {
            // Read now, or taken back from the state dir (then due for a refresh).
            snap = self.load_once().await;
        }
        let due = snap.loaded.is_some_and(|at| at.elapsed() > self.ttl)
            || self.due.load(std::sync::atomic::Ordering::SeqCst);
        if due {
            if let Ok(guard) = self.refreshing.clone().try_lock_owned() {
                self.due.store(false, std::sync::atomic::Ordering::SeqCst);
                let me = self.clone();
                tokio::spawn(async move {
                    let _guard = guard;
                    me.refresh_locked().await;
                });
            }
        }
        snap
    }

    /// Whether the snapshot was merged for other enabled services than now's.
    fn stale(&self) -> bool {
        self.merged_for.load(std::sync::atomic::Ordering::SeqCst) != self.registry.generation()
    }

    /// The catalogue of the services enabled now, from their kept lists (reading
    /// first those of an enabled service never asked), unless merged meanwhile.
    async fn remerge(&self) -> Arc<Snapshot> {
        let unread: Vec<String> = {
            let read = self.read.lock().expect("no panics while held");
            self.enabled()
                .into_iter()
                .filter(|n| !read.contains(n))
                .collect()
        };
        if !unread.is_empty() {
            let _guard = self.refreshing.lock().await;
            self.fetch(&unread).await;
        }
        let loaded = self.snapshot().loaded;
        self.merge(loaded, true).await
    }

    /// The enabled services' names, in priority order.
    fn enabled(&self) -> Vec<String> {
        let services = self.registry.enabled_by_priority();
        services.into_iter().map(|s| s.name).collect()
    }

    /// Loads the catalogue unless another caller loaded it meanwhile.
    async fn load_once(&self) -> Arc<Snapshot> {
        let _guard = self.refreshing.lock().await;
        let snap = self.snapshot();
        if snap.loaded.is_some() {
            return snap;
        }
        // The lists kept in the state dir, if the start has not taken them back yet.
        self.take_back_kept().await;
        let snap = self.snapshot();
        if snap.loaded.is_some() {
            return snap;
        }
        self.refresh_locked().await
    }

    /// Loads every enabled service's lists now and swaps in the merged catalogue.
    pub async fn refresh(&self) -> Arc<Snapshot> {
        let _guard = self.refreshing.lock().await;
        self.refresh_locked().await
    }

    async fn refresh_locked(&self) -> Arc<Snapshot> {
        self.fetch(&self.enabled()).await;
        self.merge(Some(Instant::now()), false).await
    }

    /// Reads the lists of services `names` (in parallel), keeping each good one and
    /// each service's status.
    async fn fetch(&self, names: &[String]) {
        self.read
            .lock()
            .expect("no panics while held")
            .extend(names.iter().cloned());
        let fetched = futures::future::join_all(names.iter().map(|name| async move {
            match self.registry.service(name) {
                Some(service) => service.vod().await,
                None => None,
            }
        }))
        .await;
        let now = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        for (name, lists) in names.iter().zip(fetched) {
            let Some(lists) = lists else {
                continue;
            };
            let mut status = VodStatus {
                vod_skipped: lists.skipped,
                vod_checked: Some(now.clone()),
                ..VodStatus::default()
            };
            let mut errors = Vec::new();
            for (kind, got) in [
                (VodKind::Movie, lists.movies),
                (VodKind::Series, lists.series),
            ] {
                let key = (name.clone(), kind);
                match got {
                    None => {
                        self.last_good
                            .lock()
                            .expect("no panics while held")
                            .remove(&key);
                    }
                    Some(Ok(listed))
                        if listed.is_empty()
                            && self
                                .last_good
                                .lock()
                                .expect("no panics while held")
                                .get(&key)
                                .is_some_and(|l| !l.items.is_empty()) =>
                    {
                        // A panel's passing hiccup must not empty the catalogue; a
                        // service that never listed any is simply empty.
                        tracing::warn!(service = %name, "{} list: answered an empty list; keeping the last good one", kind.as_str());
                        errors.push(format!("{}: answered an empty list", kind.as_str()));
                    }
                    Some(Ok(listed)) => {
                        self.keep(name, kind, &listed);
                        let (list, skipped) = ServiceList::new(name, listed);
                        status.vod_skipped += skipped;
                        if skipped > 0 {
                            tracing::warn!(service = %name, skipped, "catalogue entries without an id or a name skipped");
                        }
                        self.last_good
                            .lock()
                            .expect("no panics while held")
                            .insert(key, Arc::new(list));
                    }
                    Some(Err(e)) => {
                        tracing::warn!(service = %name, "{} list: {e}; keeping the last good one", kind.as_str());
                        errors.push(format!("{}: {e}", kind.as_str()));
                    }
                }
            }
            if lists.skipped > 0 {
                tracing::warn!(service = %name, skipped = lists.skipped, "catalogue entries without a usable URL skipped");
            }
            {
                let good = self.last_good.lock().expect("no panics while held");
                let count = |k| good.get(&(name.clone(), k)).map_or(0, |l| l.items.len());
                status.movie_count = count(VodKind::Movie);
                status.series_count = count(VodKind::Series);
            }
            status.vod_error = (!errors.is_empty()).then(|| errors.join("; "));
            self.status
                .lock()
                .expect("no panics while held")
                .insert(name.clone(), status);
        }
    }

    /// `state_dir/vod/{service key}.{kind}.json`: where service `name`'s last good
    /// list of `kind` is kept (`None` before `keep_lists_in`).
    fn kept_file(&self, name: &str, kind: VodKind) -> Option<std::path::PathBuf> {
        let dir = self.registry.kept_dir()?;
        let key = self.registry.kept_key(name)?;
        Some(
            dir.join(KEPT_DIR)
                .join(format!("{key}.{}.json", kind.as_str())),
        )
    }

    /// Writes `listed`, which service `name` just listed, to its kept file (on the
    /// blocking pool, whole and renamed into place, 0600): a restart while the
    /// service is down starts with it, as channel lists do (`state_dir/lists/`).
    fn keep(&self, name: &str, kind: VodKind, listed: &[super::Listed]) {
        let Some(path) = self.kept_file(name, kind) else {
            return;
        };
        let listed = listed.to_vec();
        tokio::task::spawn_blocking(move || {
            // One write at a time: two refreshes' writes never interleave.
            static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
            let _one = ONE.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(err) = write_kept(&path, &listed) {
                tracing::warn!(file = %path.display(), error = %err, "keeping the movie or series list failed");
            }
        });
    }

    /// At the first load (`load_once`): takes back the lists kept in `state_dir/vod/`
    /// of the services that have none yet, and serves them at once as a catalogue due
    /// for a refresh (which that request starts in the background): players list
    /// movies and series while a panel is down, without waiting for it.
    async fn take_back_kept(&self) {
        let mut any = false;
        let names: Vec<String> = self
            .registry
            .service_names()
            .into_iter()
            .map(str::to_string)
            .collect();
        for name in names {
            for kind in [VodKind::Movie, VodKind::Series] {
                let key = (name.clone(), kind);
                if self
                    .last_good
                    .lock()
                    .expect("no panics while held")
                    .contains_key(&key)
                {
                    continue;
                }
                let Some(path) = self.kept_file(&name, kind) else {
                    continue;
                };
                let Ok(bytes) = tokio::fs::read(&path).await else {
                    continue;
                };
                match serde_json::from_slice::<Vec<super::Listed>>(&bytes) {
                    Ok(listed) => {
                        let (list, _) = ServiceList::new(&name, listed);
                        tracing::info!(service = %name, titles = list.items.len(), "last {} list taken back from the state dir", kind.as_str());
                        self.last_good
                            .lock()
                            .expect("no panics while held")
                            .insert(key, Arc::new(list));
                        self.read
                            .lock()
                            .expect("no panics while held")
                            .insert(name.clone());
                        any = true;
                    }
                    Err(err) => {
                        tracing::warn!(file = %path.display(), error = %err, "a kept movie or series list does not read; ignored");
                    }
                }
            }
        }
        if any && self.snapshot().loaded.is_none() {
            // Served as it is; the first request also starts a refresh.
            self.due.store(true, std::sync::atomic::Ordering::SeqCst);
            self.merge(Some(Instant::now()), false).await;
        }
    }

    /// Merges the kept lists of the services enabled now (in priority order) and
    /// swaps the result in, `loaded` being when they were read; with `if_stale`, only
    /// when no merge since the last switch did.
    async fn merge(&self, loaded: Option<Instant>, if_stale: bool) -> Arc<Snapshot> {
        let _guard = self.merging.lock().await;
        if if_stale && !self.stale() {
            return self.snapshot();
        }
        // Read before the services: a switch after this is merged again next time.
        let generation = self.registry.generation();
        let names = self.enabled();
        let (movies, series) = {
            let good = self.last_good.lock().expect("no panics while held");
            let lists = |k| -> Vec<Arc<ServiceList>> {
                names
                    .iter()
                    .filter_map(|n| good.get(&(n.clone(), k)).cloned())
                    .collect()
            };
            (lists(VodKind::Movie), lists(VodKind::Series))
        };
        let movies = self.numbered(VodKind::Movie, movies).await;
        let series = self.numbered(VodKind::Series, series).await;
        let snap = Arc::new(Snapshot {
            movies,
            series,
            loaded,
        });
        *self.snapshot.write().expect("no panics while held") = snap.clone();
        self.merged_for
            .store(generation, std::sync::atomic::Ordering::SeqCst);
        snap
    }

    /// The merged catalogue of `lists` with each title's stable id. Should the store
    /// fail, the catalogue is kept as it was (ids must never be made up).
    async fn numbered(&self, kind: VodKind, lists: Vec<Arc<ServiceList>>) -> Catalogue {
        let merge = tokio::task::spawn_blocking(move || Catalogue::merge(kind, lists)).await;
        let Ok((cat, keys)) = merge else {
            return Catalogue::empty(kind);
        };
        match self.store.ids(kind.namespace(), keys).await {
            Ok(ids) => cat.with_ids(&ids),
            Err(e) => {
                tracing::error!("cannot number the {} catalogue: {e}", kind.as_str());
                Catalogue::empty(kind)
            }
        }
    }

    /// Each service's catalogue status (services without a catalogue are absent).
    pub fn status_of(&self, service: &str) -> Option<VodStatus> {
        self.status
            .lock()
            .expect("no panics while held")
            .get(service)
            .cloned()
    }

    /// What service `service` says about its title `id` (cached); `None` when it
    /// says nothing more or cannot be asked now.
    pub async fn details(&self, kind: VodKind, service: &str, id: &str) -> Option<Arc<Details>> {
        let key = (service.to_string(), kind, id.to_string());
        if let Some(d) = self.details.get(&key).await {
            return Some(d);
        }
        let svc = self.registry.service(service)?;
        match svc.vod_details(kind, id).await? {
            Ok(mut d) => {
                d.service = service.to_string();
                let d = Arc::new(d);
                self.details.insert(key, d.clone()).await;
                Some(d)
            }
            Err(e) => {
                tracing::warn!(service, id, "{} details: {e}", kind.as_str());
                None
            }
        }
    }

    /// The first details any source of `t` (that `a` may use) gives.
    pub async fn title_details(
        &self,
        t: TitleRef<'_>,
        a: Option<&Account>,
    ) -> Option<Arc<Details>> {
        for (list, item) in t.sources().filter(|(l, _)| source_allowed(a, &l.service)) {
            if let Some(d) = self.details(t.kind(), &list.service, &item.id).await {
                return Some(d);
            }
        }
        None
    }

    /// The episodes source `item` of service `service` lists: its own when the list
    /// carries them, else from the series' details.
    async fn episodes_of(
        &self,
        service: &str,
        item: &super::catalogue::Item,
    ) -> Vec<ListedEpisode> {
        if let Some(eps) = &item.episodes {
            return eps.iter().map(|e| e.listed()).collect();
        }
        self.details(VodKind::Series, service, &item.id)
            .await
            .map(|d| d.episodes.clone())
            .unwrap_or_default()
    }

    /// The episodes of series `series` (its sources `a` may use), by season and
    /// number, each with its stable id.
    pub async fn series_episodes(
        &self,
        snap: &Snapshot,
        series: u32,
        a: Option<&Account>,
    ) -> Result<Vec<SeriesEpisode>, VodError> {
        let t = visible(snap, VodKind::Series, series, a)?;
        let mut merged: std::collections::BTreeMap<(u16, u16), SeriesEpisode> =
            std::collections::BTreeMap::new();
        for (list, item) in t.sources().filter(|(l, _)| source_allowed(a, &l.service)) {
            for e in self.episodes_of(&list.service, item).await {
                merged
                    .entry((e.season, e.episode))
                    .or_insert(SeriesEpisode {
                        id: 0,
                        season: e.season,
                        episode: e.episode,
                        title: e.title,
                        ext: if e.ext.is_empty() {
                            "mp4".into()
                        } else {
                            e.ext
                        },
                        service: list.service.to_string(),
                        info: e.info,
                    });
            }
        }
        let missing: Vec<(u16, u16)> = {
            let ids = self.episodes.read().expect("no panics while held");
            merged
                .keys()
                .filter(|(s, e)| !ids.by_key.contains_key(&(series, *s, *e)))
                .copied()
                .collect()
        };
        if !missing.is_empty() {
            let keys = missing
                .iter()
                .map(|(s, e)| format!("{series}/{s}/{e}"))
                .collect();
            let got = self.store.ids(EPISODE_IDS_NS, keys).await?;
            let rows: Vec<(u32, u16, u16)> = {
                let mut ids = self.episodes.write().expect("no panics while held");
                for ((s, e), id) in missing.iter().zip(got) {
                    ids.insert(u32::try_from(id).unwrap_or(u32::MAX), (series, *s, *e));
                }
                ids.by_key
                    .iter()
                    .filter(|((sr, _, _), _)| *sr == series)
                    .map(|((_, s, e), id)| (*id, *s, *e))
                    .collect()
            };
            let value = serde_json::to_value(rows).unwrap_or_default();
            self.store
                .put_record(EPISODES_NS, &series.to_string(), &value)
                .await?;
        }
        let ids = self.episodes.read().expect("no panics while held");
        Ok(merged
            .into_values()
            .map(|mut e| {
                e.id = ids
                    .by_key
                    .get(&(series, e.season, e.episode))
                    .copied()
                    .unwrap_or(0);
                e
            })
            .collect())
    }

    /// Which series, season and episode episode id `id` is.
    pub fn episode(&self, id: u32) -> Option<(u32, u16, u16)> {
        self.episodes
            .read()
            .expect("no panics while held")
            .by_id
            .get(&id)
            .copied()
    }

    /// Where movie `id` plays, in priority order, among the sources `a` may use.
    pub fn movie_sources(
        &self,
        snap: &Snapshot,
        id: u32,
        a: Option<&Account>,
    ) -> Result<Vec<MediaSource>, VodError> {
        let t = visible(snap, VodKind::Movie, id, a)?;
        Ok(t.sources()
            .filter(|(l, _)| source_allowed(a, &l.service))
            .filter_map(|(list, item)| {
                let url = match &item.url {
                    Some(u) => u.to_string(),
                    None => {
                        let ext = match list.names.get(item.ext) {
                            "" => "mp4",
                            e => e,
                        };
                        self.registry
                            .service(&list.service)?
                            .vod_url(VodKind::Movie, &item.id, ext)?
                            .to_string()
                    }
                };
                Some(MediaSource {
                    service: list.service.to_string(),
                    url,
                    headers: item.headers.as_deref().cloned().unwrap_or_default(),
                })
            })
            .collect())
    }

    /// Where episode `id` plays, in priority order, among the sources `a` may use.
    pub async fn episode_sources(
        &self,
        snap: &Snapshot,
        id: u32,
        a: Option<&Account>,
    ) -> Result<Vec<MediaSource>, VodError> {
        let not_found = || VodError::NotFound("episode", id.to_string());
        let (series, season, number) = self.episode(id).ok_or_else(not_found)?;
        let t = visible(snap, VodKind::Series, series, a).map_err(|_| not_found())?;
        let mut out = Vec::new();
        for (list, item) in t.sources().filter(|(l, _)| source_allowed(a, &l.service)) {
            let eps = self.episodes_of(&list.service, item).await;
            let Some(e) = eps
                .into_iter()
                .find(|e| e.season == season && e.episode == number)
            else {
                continue;
            };
            let url = match e.url {
                Some(u) => Some(u),
                None => {
                    let ext = if e.ext.is_empty() { "mp4" } else { &e.ext };
                    self.registry
                        .service(&list.service)
                        .and_then(|s| s.vod_url(VodKind::Series, &e.id, ext))
                        .map(|u| u.to_string())
                }
            };
            if let Some(url) = url {
                out.push(MediaSource {
                    service: list.service.to_string(),
                    url,
                    headers: e.headers,
                });
            }
        }
        Ok(out)
    }
}

/// Whether `a` (none: no account, everything) may use sources from `service`.
pub fn source_allowed(a: Option<&Account>, service: &str) -> bool {
    a.is_none_or(|a| a.uses(service))
}

/// Whether `a` sees title `t`: its category is one of the account's `groups` and one
/// of its sources is from the account's `services` (each empty: no restriction).
pub fn sees(a: Option<&Account>, t: &TitleRef<'_>) -> bool {
    let Some(a) = a else {
        return true;
    };
    a.in_groups(t.category()) && t.services().any(|s| source_allowed(Some(a), s))
}

/// Title `id` of `kind` if `a` sees it; else not found, as for an unknown one.
pub fn visible<'s>(
    snap: &'s Snapshot,
    kind: VodKind,
    id: u32,
    a: Option<&Account>,
) -> Result<TitleRef<'s>, VodError> {
    snap.of(kind)
        .get(id)
        .filter(|t| sees(a, t))
        .ok_or_else(|| VodError::NotFound(kind.as_str(), id.to_string()))
}
