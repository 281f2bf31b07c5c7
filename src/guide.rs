//! The merged guide: fetches each enabled service's XMLTV (plain or gzipped, URL or
//! file) as a stream, keeps the programmes of lineup channels, merges them, and
//! renders `/epg.xml` and `/epg.xml.gz` once per refresh. A service whose refresh
//! fails keeps its last good guide; its status says what went wrong.
//!
//! A lineup channel takes the programmes of exactly one guide channel, never a blend
//! of overlapping listings: of the guides with programmes for it, one that knows it by
//! id (the service's tvg-id or the channel's guide id) first, then the service with
//! the higher priority, then the better name match (the display name as written before
//! one equal only once normalised), then the first listed. Within one guide, the other
//! guide channels that matched it are ignored and counted (`ignored_duplicate_channels`).
//! A display name never matches across countries (`Mapping`): not when the lineup
//! channel's and the guide channel's countries are known and differ, nor, for a
//! lineup channel of unknown country, when guide channels of several countries in one
//! guide carry it; guide matching then reports it.
//!
//! Programmes are kept by lineup channel *id* (which never changes), not by guide id:
//! a mapping change or a service switch re-renders the kept guides against the new
//! lineup before the guide is next read (`lineup_changed`, `catch_up`), without
//! fetching anything.
//!
//! A read keeps only the programmes of the lineup channels it was given, so a channel
//! that joins the lineup later (an event listed around its time, a new entry in an M3U
//! list) has none until its service's guide is read again. Between full refreshes the
//! background loop therefore checks, whenever the lineup is rebuilt and at least every
//! `CHECK_EVERY`, for services with lineup channels their last read did not cover,
//! and for guides (a service's or an extra one) whose kept channel list names, by id
//! or display name, a lineup channel their last read did not know; it reads again
//! those guides only (`refresh_changed`: a guide may be 100 MB) and re-renders; a
//! lineup that only lost channels is re-rendered without a read. Guide matching runs
//! again after those reads, so a guide (an extra one too) whose assigned channels
//! changed follows in the same partial refresh (below).
//!
//! Extra guides (`[[guides]]`) are read like a service's guide and rank after every
//! service. After the reads, guide matching (`guide_match`) gives lineup channels
//! that no guide knows by id or display name a guide channel from any guide (an
//! admin's decision first, else the matcher's automatic match). A read keeps the
//! programmes of the channels it was told about, and, up to `SPARE_BUDGET` until the
//! refresh has matched again (`settle`), those of the guide channels no lineup channel
//! took whose names are made of the words of the lineup channels guide matching may
//! look for (`spare_words`, `xmltv::Spare`). A guide whose
//! assigned channels changed takes them from that spare (`ServiceGuide::rechoose`, as a
//! read with the new assignments would); when the spare lacks one (another guide
//! channel, the budget ran out, or no read in this refresh: an admin's decision), the
//! guide is read once more right away. Later reads keep the assignments.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use async_compression::tokio::bufread::GzipDecoder;
use bytes::Bytes;
use futures::TryStreamExt;
use serde::Serialize;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};
use tokio::sync::Notify;

use crate::config::{ExtraGuideConfig, GuideConfig};
use crate::guide_match::features;
use crate::guide_match::table::{self, same_guide_channel, Decision, Entry, Table};
use crate::guide_match::{GuideMatchError, Settings};
use crate::lineup::{normalise, shift_of, Lineup};
use crate::model::{Channel, LineupChannel, Text};
use crate::services::registry::RegistryError;
use crate::services::registry::{Observer, Registry, Step};
use crate::services::GuideSource;
use crate::upstream::{Http, ServiceHttp};
use crate::xmltv::{self, ChannelMap, Match, OutChannel, ServiceGuide};

/// Decompressed bytes read from one guide at most (a gzip bomb stops here).
const GUIDE_MAX_BYTES: u64 = 2 << 30;
/// Bytes of a guide read at most without a `<` or `>` (see `MarkupGap`).
const GUIDE_MAX_GAP: u64 = 4 << 20;
/// Programmes that ended longer ago than this are dropped, except on channels with
/// catch-up: those keep the days their archive reaches back.
const KEEP_PAST: i64 = 24 * 3600;
/// Between full refreshes, the lineup is checked for changed services at least this
/// often (sooner when `cache.channels_ttl` or `guide.refresh` is shorter).
const CHECK_EVERY: Duration = Duration::from_secs(60);
/// A guide whose read failed is read again after this (or a quarter of `[guide]
/// refresh`, if shorter), then twice as long after each failure in a row, up to
/// `[guide] refresh`: a guide down at start is back within
/// minutes, not at the next full refresh hours later.
const RETRY_FAILED: Duration = Duration::from_secs(60);
/// How long the first guide request waits for the guides before it is answered with
/// those read so far (a guide that hangs or is huge joins the next render).
const FIRST_WAIT: Duration = Duration::from_secs(10);
/// A guide's first read since start that takes longer than this has the copy of its
/// last good read (when one is kept) stand in while it goes on: the first guide
/// request need not wait for a guide that hangs or is slow.
const STAND_IN: Duration = Duration::from_secs(3);
/// ... but never more often than this (a zero `channels_ttl` must not spin).
const CHECK_MIN: Duration = Duration::from_secs(1);
/// The store's records namespace of the admin's guide match decisions.
const DECISIONS: &str = "guide_match";
/// Extra guides rank after every service.
const EXTRA_PRIORITY: i64 = i64::MAX;
/// Bytes of programmes one read keeps at most besides those of the lineup channels it
/// was told about, for guide channels guide matching may assign once every guide is
/// read (`xmltv::Spare`): within it, a changed assignment needs no second download.
const SPARE_BUDGET: usize = 16 << 20;
/// The file, beside the guides' copies, of the guide channels the last matching
/// assigned (`Remembered`).
const REMEMBERED: &str = "matches.json";

/// An extra guide (`[[guides]]`).
struct Extra {
    cfg: ExtraGuideConfig,
    /// The client of a URL guide (`None` for a file).
    http: Option<(url::Url, ServiceHttp)>,
}

/// What a change of the match decisions asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Confirm,
    Reject,
    /// This guide channel (of this guide, else of the first that lists it).
    Pick {
        guide_id: String,
        source: Option<String>,
    },
    Reset,
}

/// What a lineup change needs read again, besides matching and rendering again from
/// the kept guides before the guide is next read (`Guides::lineup_changed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reread<'a> {
    /// Nothing: the kept guides have it (a rename, a number, a priority, a disable).
    Nothing,
    /// Service `name` was enabled: its own guide (what was kept from before it was
    /// disabled may be old), and no other.
    Service(&'a str),
    /// Lineup channel `id` got another guide id: the guides whose kept channels now
    /// give it one (by id or display name), and only those.
    Channel(&'a str),
}

/// What the last refresh of one service's guide did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, utoipa::ToSchema)]
pub struct GuideStatus {
    /// The guide's address, without query (tokens) or credentials.
    pub source: String,
    /// When a refresh last succeeded (RFC 3339).
    pub last_ok: Option<String>,
    /// Why the last refresh failed; `None` after a success. The last good guide
    /// stays served meanwhile.
    pub last_error: Option<String>,
    /// Lineup channels this guide has a guide channel for.
    pub channels: usize,
    pub programmes: usize,
    /// Guide channels ignored because another guide channel of this guide matched the
    /// same lineup channel better (a channel listed under several ids: regional
    /// feeds, SD and HD copies).
    pub ignored_duplicate_channels: usize,
    /// Programmes dropped for bad data (bad times, no title), with the first reason.
    pub skipped: usize,
    pub first_skip: Option<String>,
    /// While a read of this guide goes on: when it began (RFC 3339). A read is cut
    /// after `[guide] read_timeout` (5 minutes); other reads of guides wait for it.
    pub reading_since: Option<String>,
    /// When no read of this guide has worked since start: when the copy of its last
    /// good read that is served meanwhile was saved (RFC 3339; kept in
    /// `state_dir/guides/`). `None` once a read works.
    pub copy_saved: Option<String>,
}

impl GuideStatus {
    /// The status of guide `guide`, read from `source`; the caller sets the rest.
    fn of(source: String, guide: &ServiceGuide) -> Self {
        Self {
            source,
            channels: guide.channels_matched,
            programmes: guide.programme_count(),
            ignored_duplicate_channels: guide.ignored_duplicates,
            skipped: guide.skipped,
            first_skip: guide.first_skip.clone(),
            ..Self::default()
        }
    }
}

/// Why the match table cannot be had now (`Guides::ready_to_match`).
#[derive(Debug)]
pub enum MatchWait {
    /// The lineup or a guide read failed.
    Failed(RegistryError),
    /// Guides are still being read, as said.
    Reading(String),
}

/// The rendered guide, as served.
pub struct Rendered {
    pub xml: Bytes,
    pub gz: Bytes,
    pub channels: usize,
    pub programmes: usize,
    /// A hash of `xml`: the same guide rendered again has the same (the outputs'
    /// `ETag`s are made from it, so a client asking again gets a 304 until the guide
    /// changes).
    pub tag: u64,
    /// Forms of this guide some requests need (an account's channels only; icons
    /// pointed at the host asked), by what makes them: each made once, off the async
    /// threads, shared by every request asking meanwhile, and dropped with this guide.
    derived: moka::future::Cache<String, Bytes>,
}

impl Rendered {
    fn new(xml: Bytes, gz: Bytes, channels: usize, programmes: usize) -> Self {
        // Fixed keys: a restart gives the same guide the same tag.
        let tag = {
            use std::hash::{Hash, Hasher};
            let mut h = std::hash::DefaultHasher::new();
            xml.hash(&mut h);
            h.finish()
        };
        // Room for a few forms as big as the guide itself; the least used go first.
        let room = 2 * (xml.len() + gz.len()) as u64 + (16 << 20);
        let derived = moka::future::Cache::builder()
            .weigher(|_: &String, v: &Bytes| u32::try_from(v.len()).unwrap_or(u32::MAX))
            .max_capacity(room)
            .time_to_idle(Duration::from_secs(1800))
            .build();
        Self {
            xml,
            gz,
            channels,
            programmes,
            tag,
            derived,
        }
    }

    /// The form of this guide `key` names, made by `make` on the blocking pool the
    /// first time (a request for a big guide must not hold an async worker for
    /// seconds), then kept while this guide is current and room allows.
    ///
    /// At most two forms are made at once, whatever asks (each is a pass over the
    /// whole guide with buffers as big as it), and a form once begun is finished and
    /// kept even when the request that asked for it has gone.
    pub async fn derived(
        &self,
        key: String,
        make: impl FnOnce() -> Bytes + Send + 'static,
    ) -> Result<Bytes, String> {
        static MAKING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);
        let forms = self.derived.clone();
        let work = tokio::spawn(async move {
            forms
                .try_get_with(key, async move {
                    let _turn = MAKING
                        .acquire()
                        .await
                        .map_err(|e| format!("making a form of the guide: {e}"))?;
                    tokio::task::spawn_blocking(make)
                        .await
                        .map_err(|e| format!("making a form of the guide failed: {e}"))
                })
                .await
                .map_err(|e| e.to_string())
        });
        work.await
            .map_err(|e| format!("making a form of the guide failed: {e}"))?
    }
}

pub struct Guides {
    registry: Arc<Registry>,
    cfg: GuideConfig,
    /// Each service's last good guide, programmes keyed by lineup channel id: what a
    /// re-render merges again.
    last_good: Mutex<HashMap<String, Arc<ServiceGuide>>>,
    status: Mutex<HashMap<String, GuideStatus>>,
    /// Guides whose last read failed: when to read each again, and its failures in a
    /// row (`RETRY_FAILED`).
    retry: Mutex<HashMap<String, (tokio::time::Instant, u32)>>,
    rendered: RwLock<Option<Arc<Rendered>>>,
    /// One fetch of every guide at a time.
    refreshing: tokio::sync::Mutex<()>,
    /// Fetches finished: a caller that waited for `refreshing` while one finished
    /// takes its result instead of fetching again.
    fetches: AtomicU64,
    /// One render at a time, each reading the lineup once it holds this: the render
    /// stored last saw the newest lineup, so a slow refresh cannot undo a mapping
    /// change rendered meanwhile.
    rendering: tokio::sync::Mutex<()>,
    /// Wakes the background check for guides to read again (`refresh_changed`)
    /// before its time (`lineup_changed`).
    wake: Arc<Notify>,
    /// Per service, the lineup channels (by id, hidden ones included) with a source
    /// of it when its guide was last read, whether the read worked or not: a channel
    /// of the service missing here got nothing from that read, so `refresh_changed`
    /// reads that service's guide again. A failed read is retried at the next full
    /// refresh, not at every check.
    read_for: Mutex<HashMap<String, BTreeSet<String>>>,
    /// Per guide (a service's or an extra one), every lineup channel (by id, hidden
    /// ones included) when it was last read, whether the read worked or not, and
    /// those checked against its kept channels since: a guide whose kept channels
    /// give a channel missing here (by id or display name) could give it programmes,
    /// so `refresh_changed` reads it again.
    lineup_read: Mutex<HashMap<String, HashSet<Text>>>,
    /// Lineup channels given another guide id, and services enabled, since the last
    /// `refresh_changed`: it reads again the guides they may need. Kept apart from
    /// `lineup_read` and `read_for`, which a read in flight sets when it ends.
    again_channels: Mutex<HashSet<String>>,
    again_services: Mutex<HashSet<String>>,
    /// Lineup changes told (`lineup_changed`), and how many of them the match table and
    /// the render have followed (`catch_up`): a change is followed once, by the next
    /// reader of the guide or by the background task, not by the admin call that made
    /// it, so a run of edits on a big lineup is matched once, not once each.
    changes: AtomicU64,
    followed: AtomicU64,
    /// The lineup the stored render followed: `refresh_changed` renders again when
    /// the listed channels differ (one that left the lineup leaves the guide).
    rendered_for: Mutex<Option<Arc<Lineup>>>,
    /// The extra guides, in config order.
    extra: Vec<Extra>,
    /// The country each service's guide is made for (`guide_country`), by service.
    service_countries: HashMap<String, String>,
    /// The admin's decisions by lineup channel id, as kept in the store.
    decisions: Mutex<HashMap<String, Decision>>,
    /// Whether `decisions` were read from the store when made (not: it could not be
    /// read, and a reload keeps the decisions the guides before it had).
    decisions_read: bool,
    /// The match table of the last matching.
    table: RwLock<Arc<Table>>,
    /// Numbers each matching as its inputs are taken (under this lock): a later number
    /// saw the kept guides and decisions an earlier one saw, or newer. Not the lineup:
    /// each caller passes its own (a refresh matches against the lineup of its start),
    /// which `render_locked` checks.
    match_seq: Mutex<u64>,
    /// The number of the matching the table is and the lineup it was built for. A
    /// matching finished after a later-numbered one is dropped (under load, one from
    /// older kept guides could be stored after a refresh's, and the guide then dropped
    /// what that refresh read); a render of another lineup (a refresh that matched
    /// against the lineup of its start, then a mapping changed; or a later-numbered
    /// matching of an older lineup kept) matches again.
    table_for: Mutex<Option<(u64, Arc<Lineup>)>>,
    /// Per guide, the guide channels its last read was told to keep for matched
    /// lineup channels (or `settle` applied since): a guide whose assignments changed
    /// since is brought up to date (`settle`).
    read_with: Mutex<HashMap<String, BTreeMap<String, String>>>,
    /// Per guide, what the reads of the refresh under way kept besides, until it
    /// settles (`settle` applies changed assignments from it, then drops it).
    spares: Mutex<HashMap<String, xmltv::Spare>>,
    /// Where a copy of each URL guide's last good read is kept (`with_copies`).
    copies: Option<PathBuf>,
    /// Cancelled once a config reload replaced these guides (`retire`): their reads
    /// end, and their refresh task with them.
    retired: tokio_util::sync::CancellationToken,
    /// The guide channels matching assigned before the last stop (`Remembered`).
    remembered: Mutex<Remembered>,
    /// Held while `remembered` is written to its file: writes land in order.
    remembering: tokio::sync::Mutex<()>,
}

/// Per guide, the guide channels the last matching with that guide read assigned
/// automatically (not the admin's decisions: the store has those), kept in
/// `state_dir/guides/matches.json`. Matching waits for every guide, so a restart's
/// first reads would keep none of what the matcher found: until a matching has that
/// guide read, its reads keep these as well (`Plan::remembered`), and the guide served
/// before every guide is read (a big one, one that hangs) or from a saved copy has the
/// channels matched before the restart. Each is checked as it is read: the guide at
/// the same place, the lineup channel under the same name, the guide channel under a
/// display name it had (`Seed`); anything renamed or moved waits for matching.
#[derive(Default)]
struct Remembered {
    by_guide: HashMap<String, Seeds>,
    /// Guides a matching since start had read: their table's assignments stand.
    matched: HashSet<String>,
}

/// One guide's remembered assignments (`Remembered`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
struct Seeds {
    /// The guide's address as its status shows it (`GuideStatus::source`).
    place: String,
    /// By guide channel id (lowercase).
    channels: BTreeMap<String, Seed>,
}

/// A guide channel matching gave a lineup channel, with the names both had then.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
struct Seed {
    channel: String,
    /// The lineup channel's name, normalised (`lineup::normalise`).
    name: String,
    /// The guide channel's display names, normalised.
    guide_names: Vec<String>,
}

impl Guides {
    pub fn new(registry: Arc<Registry>, cfg: GuideConfig) -> Self {
        let (decisions, decisions_read) = match stored_decisions(&registry) {
            Ok(decisions) => (decisions, true),
            Err(e) => {
                tracing::warn!(error = %e, "guide match decisions unreadable; matching without them");
                (HashMap::new(), false)
            }
        };
        Self {
            registry,
            cfg,
            last_good: Mutex::default(),
            status: Mutex::default(),
            retry: Mutex::default(),
            rendered: RwLock::default(),
            refreshing: tokio::sync::Mutex::const_new(()),
            fetches: AtomicU64::new(0),
            rendering: tokio::sync::Mutex::const_new(()),
            wake: Arc::default(),
            read_for: Mutex::default(),
            lineup_read: Mutex::default(),
            again_channels: Mutex::default(),
            again_services: Mutex::default(),
            changes: AtomicU64::new(0),
            followed: AtomicU64::new(0),
            rendered_for: Mutex::default(),
            decisions: Mutex::new(decisions),
            decisions_read,
            extra: Vec::new(),
            service_countries: HashMap::new(),
            table: RwLock::default(),
            match_seq: Mutex::default(),
            table_for: Mutex::default(),
            read_with: Mutex::default(),
            spares: Mutex::default(),
            copies: None,
            retired: tokio_util::sync::CancellationToken::new(),
            remembered: Mutex::default(),
            remembering: tokio::sync::Mutex::const_new(()),
        }
    }

    /// Notes the country each service's guide is made for (`guide_country`).
    /// Keeps a copy of each URL guide's last good read, as fetched, in `dir`
    /// (`state_dir/guides`), and serves it while no read of that guide has worked
    /// since start: a restart while a guide's host is down keeps its programmes.
    /// Also takes back the guide channels matching assigned before the last stop
    /// (`Remembered`).
    pub fn with_copies(mut self, dir: PathBuf) -> Self {
        let file = dir.join(REMEMBERED);
        let read = std::fs::read(&file)
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                serde_json::from_slice::<HashMap<String, Seeds>>(&bytes).map_err(|e| e.to_string())
            });
        let by_guide = match read {
            Ok(mut by_guide) => {
                // Ids as a read looks them up (a hand edit may spell them otherwise).
                for seeds in by_guide.values_mut() {
                    seeds.channels = std::mem::take(&mut seeds.channels)
                        .into_iter()
                        .map(|(id, seed)| (id.to_lowercase(), seed))
                        .collect();
                }
                by_guide
            }
            Err(_) if !file.exists() => HashMap::new(),
            Err(e) => {
                tracing::warn!(file = %file.display(), error = %e, "the guide matches kept from before the restart are unreadable; matching afresh");
                HashMap::new()
            }
        };
        self.remembered = Mutex::new(Remembered {
            by_guide,
            matched: HashSet::new(),
        });
        self.copies = Some(dir);
        self
    }

    /// Ends what these guides still do once a config reload replaced them: reads in
    /// flight are cut (each would hold a whole guide in memory, beside the reads of the
    /// guides that replaced them) and the background refresh stops.
    pub fn retire(&self) {
        self.retired.cancel();
    }

    pub fn with_service_countries(mut self, services: &[crate::config::ServiceConfig]) -> Self {
        self.service_countries = services
            .iter()
            .filter_map(|s| Some((s.name.clone(), s.guide_country.clone()?)))
            .collect();
        self
    }

    /// Takes over from `prev` (the guides before a config reload, whose services were
    /// `before`) the last good guide and status of each guide still configured under
    /// its name and read from the same place (a service's kind settings, headers and
    /// auth; an extra guide's whole entry): a guide whose upstream fails at the reload
    /// keeps its programmes, as it would at a refresh; and `prev`'s match decisions when
    /// the store could not be read for them. Call after `with_extra_guides`.
    pub fn keep_guides_of(
        self,
        prev: &Guides,
        before: &[crate::config::ServiceConfig],
        services: &[crate::config::ServiceConfig],
    ) -> Self {
        use crate::services::registry::list_config;
        let same_service = services.iter().filter(|s| {
            before
                .iter()
                .any(|b| b.name == s.name && list_config(b) == list_config(s))
        });
        let same_extra = self
            .extra
            .iter()
            .filter(|e| prev.extra.iter().any(|p| p.cfg == e.cfg));
        let names: HashSet<&str> = same_service
            .map(|s| s.name.as_str())
            .chain(same_extra.map(|e| e.cfg.name.as_str()))
            .collect();
        // The store unreadable at the reload: the decisions known before it stay (the
        // store's next change notice reads them again).
        if !self.decisions_read {
            let known = prev.decisions.lock().expect("guide lock").clone();
            *self.decisions.lock().expect("guide lock") = known;
        }
        let good = prev.last_good.lock().expect("guide lock").clone();
        let status = prev.status.lock().expect("guide status lock").clone();
        *self.last_good.lock().expect("guide lock") = good
            .into_iter()
            .filter(|(name, _)| names.contains(name.as_str()))
            .collect();
        *self.status.lock().expect("guide status lock") = status
            .into_iter()
            .filter(|(name, _)| names.contains(name.as_str()))
            .map(|(name, mut s)| {
                // A read in flight belongs to the old state: it ends there.
                s.reading_since = None;
                (name, s)
            })
            .collect();
        self
    }

    /// Adds the extra guides (`[[guides]]`); URL guides are fetched through `http`
    /// with the address rules of a service's guide.
    pub fn with_extra_guides(mut self, guides: &[ExtraGuideConfig], http: &Http) -> Self {
        self.extra = guides
            .iter()
            .map(|g| Extra {
                http: g.url.as_deref().and_then(|u| {
                    let url = url::Url::parse(u).ok()?;
                    let client = ServiceHttp::for_guide(http.clone(), &g.name, &url, g.timeout);
                    Some((url, client))
                }),
                cfg: g.clone(),
            })
            .collect();
        self
    }

    /// Each extra guide's status, once it has been tried, in config order.
    pub fn extra_status(&self) -> Vec<(String, GuideStatus)> {
        self.extra
            .iter()
            .filter_map(|e| Some((e.cfg.name.clone(), self.status_of(&e.cfg.name)?)))
            .collect()
    }

    /// The last match table (empty before the first guide read).
    pub fn matches(&self) -> Arc<Table> {
        self.table.read().expect("guide lock").clone()
    }

    /// The match table of the lineup as it is now: the last one, matched again first
    /// when it was built for other channels (a refresh matches against the lineup of
    /// its start, and its table may be kept after a lineup change's until it renders).
    pub async fn matches_now(self: &Arc<Self>) -> Result<Arc<Table>, RegistryError> {
        self.catch_up().await;
        let lineup = self.registry.lineup().await?;
        if self.built_for_other(&lineup) {
            // One matching for every asker at once.
            let _one = self.rendering.lock().await;
            if self.built_for_other(&lineup) {
                return Ok(self.rematch(&lineup).await);
            }
        }
        Ok(self.matches())
    }

    /// Whether the last match table was built for a lineup listing other channels.
    fn built_for_other(&self, lineup: &Arc<Lineup>) -> bool {
        self.table_for
            .lock()
            .expect("guide lock")
            .as_ref()
            .is_some_and(|(_, t)| !Arc::ptr_eq(t, lineup) && t.channels != lineup.channels)
    }

    /// Records an admin's decision about lineup channel `channel` (its id), persisted
    /// before it takes effect; answers the channel's new line of the table. The guides
    /// it needs are read again in the background, then the guide is rendered again.
    pub async fn decide(
        self: &Arc<Self>,
        channel: &str,
        action: Action,
    ) -> Result<Option<Entry>, GuideMatchError> {
        // A confirmation takes the line the admin saw: the table of this lineup.
        let lineup = self.registry.lineup().await?;
        if self.matches().entries.is_empty() {
            self.rematch(&lineup).await;
        } else {
            self.matches_now().await?;
        }
        // A channel its guide gives a guide channel by id takes that one whatever an
        // admin decides: a pick or a reject would be kept and do nothing.
        if matches!(action, Action::Pick { .. } | Action::Reject) {
            let table = self.matches();
            let by_id = table.get(channel).and_then(|e| {
                let (source, guide_id) = (e.source.as_deref()?, e.guide_id.as_deref()?);
                (table.held_by_id(source, guide_id) == Some(channel)).then_some((source, guide_id))
            });
            let same = |(source, guide_id): (&str, &str)| match &action {
                Action::Pick {
                    guide_id: picked,
                    source: named,
                } => {
                    picked.eq_ignore_ascii_case(guide_id)
                        && named.as_deref().is_none_or(|n| n == source)
                }
                _ => false,
            };
            if let Some((source, guide_id)) = by_id.filter(|&b| !same(b)) {
                return Err(GuideMatchError::TakesById {
                    channel: channel.to_string(),
                    guide: source.to_string(),
                    guide_id: guide_id.to_string(),
                });
            }
        }
        let decision = match action {
            Action::Reset => None,
            Action::Reject => Some(Decision::Reject),
            Action::Confirm => {
                let table = self.matches();
                let e = table.get(channel);
                match e.and_then(|e| Some((e.source.clone()?, e.guide_id.clone()?))) {
                    Some((source, guide_id)) => Some(Decision::Confirm { source, guide_id }),
                    None => return Err(GuideMatchError::NothingToConfirm(channel.to_string())),
                }
            }
            Action::Pick { guide_id, source } => {
                let sources = self.sources();
                if let Some(named) = source
                    .as_ref()
                    .filter(|n| sources.iter().all(|(name, _)| name != *n))
                {
                    return Err(GuideMatchError::UnknownGuide {
                        named: named.clone(),
                        guides: sources.into_iter().map(|(name, _)| name).collect(),
                    });
                }
                let good = self.last_good.lock().expect("guide lock").clone();
                let listing: Vec<(String, String)> = sources
                    .into_iter()
                    .filter_map(|(name, _)| {
                        let g = good.get(&name)?;
                        let (id, _) = g.catalogue.iter().find(|(id, _)| *id == guide_id)?;
                        Some((name, id.clone()))
                    })
                    .collect();
                let found = listing
                    .iter()
                    .find(|(name, _)| source.as_deref().is_none_or(|s| s == name));
                let table = self.matches();
                let holder = found.and_then(|(source, guide_id)| {
                    table
                        .held_by_id(source, guide_id)
                        .filter(|&h| h != channel)
                        .map(|h| (source, guide_id, h))
                });
                if let Some((source, guide_id, holder)) = holder {
                    return Err(GuideMatchError::HeldById {
                        guide: source.clone(),
                        guide_id: guide_id.clone(),
                        holder: holder.to_string(),
                    });
                }
                match found {
                    Some((source, guide_id)) => Some(Decision::Pick {
                        source: source.clone(),
                        guide_id: guide_id.clone(),
                    }),
                    None => {
                        return Err(GuideMatchError::UnknownGuideChannel {
                            guide_id,
                            named: source,
                            elsewhere: listing.into_iter().map(|(name, _)| name).collect(),
                        })
                    }
                }
            }
        };
        // A guide channel goes to one lineup channel: this decision takes it from
        // another channel an earlier pick or confirmation gave it to (that channel goes
        // back to the matcher, whose reason then names the taker).
        let displaced: Vec<String> = match decision.as_ref().and_then(Decision::guide_channel) {
            Some(taken) => self
                .decisions
                .lock()
                .expect("guide lock")
                .iter()
                .filter(|(other, d)| {
                    other.as_str() != channel
                        && d.guide_channel()
                            .is_some_and(|g| same_guide_channel(g, taken))
                })
                .map(|(other, _)| other.clone())
                .collect(),
            None => Vec::new(),
        };
        let store = self.registry.store();
        // A decision written to a state_dir that was deleted meanwhile would be lost at
        // the next start: refused instead (`StoreError::Gone`).
        store.ping().await?;
        match &decision {
            Some(d) => {
                let value = serde_json::to_value(d).expect("a decision serializes");
                store.put_record(DECISIONS, channel, &value).await?;
            }
            None => store.delete_record(DECISIONS, channel).await?,
        }
        for other in &displaced {
            store.delete_record(DECISIONS, other).await?;
        }
        {
            let mut decisions = self.decisions.lock().expect("guide lock");
            for other in &displaced {
                decisions.remove(other);
            }
            match decision {
                Some(d) => decisions.insert(channel.to_string(), d),
                None => decisions.remove(channel),
            };
        }
        let table = self.rematch(&lineup).await;
        let me = self.clone();
        tokio::spawn(async move {
            if let Err(e) = me.apply_matches().await {
                tracing::warn!(error = %e, "guide update after a match decision failed");
            }
        });
        Ok(table.get(channel).cloned())
    }

    /// Follows the match decisions other instances sharing the store make, for as long
    /// as these guides live (held weakly: a reload's new guides follow on their own):
    /// read again after each records change another instance made, and when they
    /// differ, matched and applied as a local decision is.
    pub fn follow_decisions(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        use tokio::sync::broadcast::error::RecvError;
        let mut changes = self.registry.store().subscribe();
        let guides = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                match changes.recv().await {
                    Ok(crate::store::Change::Records) | Err(RecvError::Lagged(_)) => {}
                    Ok(_) => continue,
                    Err(RecvError::Closed) => return,
                }
                let Some(guides) = guides.upgrade() else {
                    return;
                };
                guides.take_stored_decisions().await;
            }
        })
    }

    /// The decisions as the store now holds them, applied when they changed.
    async fn take_stored_decisions(self: &Arc<Self>) {
        // Unreadable now (the database away): what is known is kept.
        let Ok(stored) = stored_decisions(&self.registry) else {
            return;
        };
        {
            let mut decisions = self.decisions.lock().expect("guide lock");
            if *decisions == stored {
                return;
            }
            *decisions = stored;
        }
        tracing::info!("guide match decisions read again: changed by another instance");
        let Ok(lineup) = self.registry.lineup().await else {
            return;
        };
        self.rematch(&lineup).await;
        if let Err(e) = self.apply_matches().await {
            tracing::warn!(error = %e, "guide update after another instance's match decision failed");
        }
    }

    /// Reads again the guides whose assignments changed, then renders again. While a
    /// read holds `refreshing` (a first read that hangs, its copy standing in), what
    /// needs no read is applied at once: a copy standing in is read again, a guide read
    /// before takes its spare; the rest once the read ends.
    async fn apply_matches(&self) -> Result<(), RegistryError> {
        if self.refreshing.try_lock().is_err() {
            let lineup = self.registry.lineup().await?;
            let mut applied = false;
            for name in self.stale_sources() {
                let reading = self
                    .status_of(&name)
                    .is_some_and(|s| s.reading_since.is_some());
                // Being read: from its copy now (the read, with the plan it began
                // with, is settled once it ends); else from what its read kept
                // besides, when it did.
                if reading {
                    applied |= self.reread_copy(&name, &lineup, false).await;
                    continue;
                }
                let spare = self.spares.lock().expect("guide lock").remove(&name);
                if let Some(spare) = spare {
                    applied |= self.remap(&name, &lineup, spare).await;
                }
            }
            if applied {
                self.rematch(&lineup).await;
                let _render = self.rendering.lock().await;
                self.render_locked().await?;
            }
        }
        {
            let _one = self.refreshing.lock().await;
            let lineup = self.registry.lineup().await?;
            self.settle(&lineup).await;
        }
        let _render = self.rendering.lock().await;
        self.render_locked().await.map(drop)
    }

    /// Matches again; every guide whose assigned guide channels changed since its
    /// last read takes them from what that read kept besides (its spare, when this
    /// refresh read it and kept them all), else is read once more; then matches again
    /// with what those guides now give. Drops the spares. The caller holds
    /// `refreshing`.
    async fn settle(&self, lineup: &Arc<Lineup>) {
        self.rematch(lineup).await;
        let stale = self.stale_sources();
        let mut spares = std::mem::take(&mut *self.spares.lock().expect("guide lock"));
        let mut unread = Vec::new();
        for name in &stale {
            let applied = match spares.remove(name) {
                Some(spare) => self.remap(name, lineup, spare).await,
                None => false,
            };
            if !applied {
                unread.push(name.clone());
            }
        }
        drop(spares);
        // A guide whose last read failed (its upstream down, or hanging) takes the
        // change from the copy of its last good read, shown at once; its next read is
        // the retry of the failed one, not one more now.
        let mut from_copy = false;
        let failing: Vec<String> = unread
            .iter()
            .filter(|name| self.status_of(name).is_some_and(|s| s.last_error.is_some()))
            .cloned()
            .collect();
        for name in failing {
            if self.reread_copy(&name, lineup, true).await {
                unread.retain(|n| *n != name);
                from_copy = true;
            }
        }
        if from_copy && self.rendered().is_some() {
            let _render = self.rendering.lock().await;
            if let Err(e) = self.render_locked().await {
                tracing::warn!(error = %e, "rendering the guide with matches applied from a copy failed");
            }
        }
        if !unread.is_empty() {
            tracing::info!(guides = ?unread, "guide matches changed: reading those guides again");
            self.fetch(&unread, lineup, None, false).await;
        }
        if !stale.is_empty() {
            self.rematch(lineup).await;
        }
    }

    /// Applies the current plan to guide `name`'s kept guide with what its read kept
    /// besides (`ServiceGuide::rechoose`), as a read now would; false when that read
    /// did not keep enough (the guide must be read again).
    async fn remap(&self, name: &str, lineup: &Lineup, spare: xmltv::Spare) -> bool {
        if self.kept(name).is_none() {
            return false;
        }
        let channels = if self.extra.iter().any(|e| e.cfg.name == name) {
            Arc::default()
        } else {
            // As its read took them: a failing list is not asked again here.
            match self.registry.channels_or_last_good(name).await {
                Ok(c) => c,
                Err(_) => return false,
            }
        };
        let plan = self.plan_for(name);
        let assigned = plan.assigned.clone();
        let map = Mapping::new(name, &channels, lineup, plan);
        let window = Window::new(lineup, self.cfg.days);
        let Some(kept) = self.kept(name) else {
            return false;
        };
        let Some(rechosen) = kept.rechoose(&spare, &map) else {
            return false;
        };
        drop(kept);
        let mut good = self.last_good.lock().expect("guide lock");
        let Some(kept) = good.remove(name) else {
            return false;
        };
        // A clone only when a render holds the guide right now.
        let mut guide = Arc::unwrap_or_clone(kept);
        guide.apply(spare, rechosen);
        window.trim(&mut guide);
        let (channels, programmes) = (guide.channels_matched, guide.programme_count());
        let ignored = guide.ignored_duplicates;
        good.insert(name.to_string(), Arc::new(guide));
        drop(good);
        tracing::info!(guide = %name, programmes, "guide matches changed: applied from the programmes its read kept");
        if let Some(status) = self.status.lock().expect("guide status lock").get_mut(name) {
            status.channels = channels;
            status.programmes = programmes;
            status.ignored_duplicate_channels = ignored;
        }
        self.read_with
            .lock()
            .expect("guide lock")
            .insert(name.to_string(), assigned);
        true
    }

    /// Guides whose assigned guide channels differ from those their last read kept,
    /// or whose last read matched by name a channel an admin has decided about.
    fn stale_sources(&self) -> Vec<String> {
        let table = self.matches();
        let read_with = self.read_with.lock().expect("guide lock").clone();
        let good = self.last_good.lock().expect("guide lock").clone();
        let decisions = self.decisions.lock().expect("guide lock").clone();
        self.sources()
            .into_iter()
            .map(|(name, _)| name)
            .filter(|name| {
                let Some(g) = good.get(name) else {
                    return false;
                };
                let read = read_with.get(name).cloned().unwrap_or_default();
                let by_name = g.matched_by.iter().any(|(ours, how)| {
                    decisions.contains_key(ours)
                        && matches!(how, Match::ExactName | Match::NormalisedName)
                });
                table.assigned(name) != read || by_name
            })
            .collect()
    }

    /// Builds the match table from the kept guides, the lineup and the decisions, on
    /// the blocking pool (the matcher takes about a second for 20,000 channels against
    /// 50,000 guide channels), and keeps it unless a matching begun later was kept
    /// first; answers the table kept. A build that panicked keeps the last.
    async fn rematch(&self, lineup: &Arc<Lineup>) -> Arc<Table> {
        let (seq, inputs) = {
            let mut seq = self.match_seq.lock().expect("guide lock");
            *seq += 1;
            let sources = self
                .sources()
                .into_iter()
                .map(|(name, _)| {
                    let region = self
                        .extra
                        .iter()
                        .find(|e| e.cfg.name == name)
                        .and_then(|e| e.cfg.country.clone())
                        .or_else(|| self.service_countries.get(name.as_str()).cloned());
                    (name, region)
                })
                .collect();
            let inputs = MatchInputs {
                good: self.last_good.lock().expect("guide lock").clone(),
                sources,
                lineup: lineup.clone(),
                pinned: self.pinned(),
                decisions: self.decisions.lock().expect("guide lock").clone(),
                lists: lineup
                    .channels
                    .iter()
                    .flat_map(|c| &c.sources)
                    .map(|s| s.service.as_ref())
                    .collect::<HashSet<&str>>()
                    .into_iter()
                    .filter_map(|s| Some((s.to_string(), self.registry.last_listed(s)?)))
                    .collect(),
            };
            (*seq, inputs)
        };
        let read: Vec<String> = (inputs.sources.iter())
            .filter(|(name, _)| inputs.good.contains_key(name))
            .map(|(name, _)| name.clone())
            .collect();
        let table = match tokio::task::spawn_blocking(move || inputs.build()).await {
            Ok(table) => Arc::new(table),
            Err(e) => {
                tracing::warn!(error = %e, "guide matching failed; the last match table stays");
                return self.matches();
            }
        };
        {
            let mut kept = self.table_for.lock().expect("guide lock");
            if kept.as_ref().is_some_and(|(newer, _)| *newer > seq) {
                return self.matches();
            }
            *self.table.write().expect("guide lock") = table.clone();
            *kept = Some((seq, lineup.clone()));
        }
        self.remember(&table, read).await;
        table
    }

    /// What `table`'s matcher gave of guide `name`'s channels (`Seeds`); `None` before
    /// the guide's address is known.
    fn seeds_of(&self, table: &Table, name: &str) -> Option<Seeds> {
        let place = self.status_of(name)?.source;
        let guide = self.kept(name)?;
        let auto: Vec<&Entry> = (table.entries.iter())
            .filter(|e| e.state == table::State::Auto && e.source.as_deref() == Some(name))
            .collect();
        let wanted: HashSet<String> = (auto.iter())
            .filter_map(|e| Some(e.guide_id.as_ref()?.to_lowercase()))
            .collect();
        let names: HashMap<String, &Vec<String>> = (guide.catalogue.iter())
            .map(|(id, names)| (id.to_lowercase(), names))
            .filter(|(id, _)| wanted.contains(id))
            .collect();
        let channels = auto
            .into_iter()
            .filter_map(|e| {
                let id = e.guide_id.as_ref()?.to_lowercase();
                let guide_names = names.get(&id)?.iter().map(|n| normalise(n)).collect();
                let seed = Seed {
                    channel: e.channel.clone(),
                    name: normalise(&e.name),
                    guide_names,
                };
                Some((id, seed))
            })
            .collect();
        Some(Seeds { place, channels })
    }

    /// Keeps what `table` assigns of the guides it had `read` (`Remembered`), and
    /// writes it to its file when that changed. A file that cannot be written is
    /// logged; matching goes on.
    async fn remember(&self, table: &Table, read: Vec<String>) {
        let Some(dir) = self.copies.clone() else {
            return;
        };
        let _write = self.remembering.lock().await;
        let now: Vec<(String, Option<Seeds>)> = read
            .into_iter()
            .map(|name| {
                let seeds = self.seeds_of(table, &name);
                (name, seeds)
            })
            .collect();
        let known: HashSet<String> = (self.registry.status().into_iter())
            .map(|s| s.name)
            .chain(self.extra.iter().map(|e| e.cfg.name.clone()))
            .collect();
        let text = {
            let mut remembered = self.remembered.lock().expect("guide lock");
            let before = remembered.by_guide.len();
            // A guide no longer configured (renamed, removed) is forgotten.
            remembered.by_guide.retain(|name, _| known.contains(name));
            let mut changed = remembered.by_guide.len() != before;
            for (name, seeds) in now {
                let seeds = seeds.unwrap_or_default();
                if remembered.by_guide.get(&name) != Some(&seeds) {
                    remembered.by_guide.insert(name.clone(), seeds);
                    changed = true;
                }
                remembered.matched.insert(name);
            }
            if !changed {
                return;
            }
            serde_json::to_vec(&remembered.by_guide).unwrap_or_default()
        };
        let to = dir.clone();
        let written = tokio::task::spawn_blocking(move || {
            let dir = to;
            let file = dir.join(REMEMBERED);
            let part = dir.join(format!("{REMEMBERED}.part"));
            crate::store::create_private_dir(&dir)?;
            let _ = std::fs::remove_file(&part);
            let mut f = crate::store::create_private_file(&part)?;
            f.write_all(&text)?;
            f.sync_all()?;
            std::fs::rename(&part, &file)
        })
        .await;
        if let Ok(Err(e)) = written {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot keep the guide matches for the next start");
        }
    }

    /// Lineup channels whose guide id is set by hand (the channel mapping's `tvg_id`).
    fn pinned(&self) -> HashSet<String> {
        self.registry
            .store()
            .mappings()
            .into_iter()
            .filter(|(_, m)| m.tvg_id.as_deref().is_some_and(|t| !t.is_empty()))
            .map(|(id, _)| id)
            .collect()
    }

    /// Every guide source in rank order: enabled services by priority (ties keep
    /// config order), then the extra guides in config order.
    fn sources(&self) -> Vec<(String, i64)> {
        self.enabled_services()
            .into_iter()
            .map(|s| (s.name, s.priority))
            .chain(
                self.extra
                    .iter()
                    .map(|e| (e.cfg.name.clone(), EXTRA_PRIORITY)),
            )
            .collect()
    }

    /// What a read of guide `source` is told: the guide channels matching assigned
    /// to lineup channels, and the channels whose decisions keep names from matching.
    fn plan_for(&self, source: &str) -> Plan {
        let decisions = self.decisions.lock().expect("guide lock").clone();
        // A channel with a hand-set guide id takes no decision (the table ignores
        // it): its display names match as they would without one.
        let mut decided = table::decided(&decisions);
        let pinned = self.pinned();
        decided.retain(|c| !pinned.contains(c));
        let table = self.matches();
        let mut assigned = table.assigned(source);
        // A decided channel the table has no line for yet (no matching since start:
        // the table needs every guide read) takes its decision's guide channel as
        // the table will: a restart's first read keeps it, and the guide served
        // before every guide is read (or from a saved copy) follows the decisions.
        // In channel order, the first decision of a guide channel taking it.
        let mut early: Vec<(&String, (&str, &str))> = decisions
            .iter()
            .filter(|(channel, _)| table.get(channel).is_none() && !pinned.contains(*channel))
            .filter_map(|(channel, d)| Some((channel, d.guide_channel()?)))
            .filter(|(_, (of, _))| *of == source)
            .collect();
        early.sort();
        for (channel, (_, guide_id)) in early {
            assigned
                .entry(guide_id.to_lowercase())
                .or_insert_with(|| channel.clone());
        }
        // What matching assigned before the restart, until a matching has this guide
        // read (a decision or a hand-set guide id made since wins).
        let remembered = {
            let remembered = self.remembered.lock().expect("guide lock");
            match remembered.by_guide.get(source) {
                Some(seeds) if !remembered.matched.contains(source) => {
                    let mut seeds = seeds.clone();
                    seeds.channels.retain(|id, seed| {
                        !assigned.contains_key(id)
                            && !decisions.contains_key(&seed.channel)
                            && !pinned.contains(&seed.channel)
                    });
                    Some(seeds)
                }
                _ => None,
            }
        };
        Plan {
            assigned,
            decided,
            remembered,
        }
    }

    /// The guide status of service `name`, once its guide has been tried.
    pub fn status_of(&self, name: &str) -> Option<GuideStatus> {
        self.status
            .lock()
            .expect("guide status lock is never poisoned")
            .get(name)
            .cloned()
    }

    /// Lineup channel `channel`'s programmes ending after `from` (unix seconds), in
    /// start order, from the guide `/epg.xml` takes them from: what
    /// the Xtream short EPG lists, once the lineup changes told so far are followed
    /// (`catch_up`, which may start reads in the background). Reads nothing itself;
    /// empty before the first read.
    pub async fn listings(self: &Arc<Self>, channel: &str, from: i64) -> Vec<xmltv::Programme> {
        self.catch_up().await;
        let good = self.last_good.lock().expect("guide lock").clone();
        let sources = self.sources();
        let ranked: Vec<Ranked<'_>> = sources
            .iter()
            .filter_map(|(name, priority)| Some((*priority, &**good.get(name)?)))
            .collect();
        // The channel in the lineup the table was made for (`catch_up` made it).
        let lineup = self
            .table_for
            .lock()
            .expect("guide lock")
            .as_ref()
            .map(|(_, lineup)| lineup.clone());
        let now = lineup.as_ref().and_then(|l| l.get(channel));
        let mut out: Vec<xmltv::Programme> = pick(&ranked, channel, now)
            .filter(|_| takes_programmes(&self.matches(), channel))
            .unwrap_or_default()
            .iter()
            .filter(|p| p.stop.unwrap_or(p.start) > from)
            .cloned()
            .collect();
        out.sort_by_key(|p| p.start);
        out
    }

    /// The current guide; the first call (or one after the lineup was lost) builds it,
    /// waiting at least `FIRST_WAIT` for the guides: then, once one guide is read, it
    /// renders those read so far, and the read goes on (its end renders again with
    /// every guide).
    pub async fn current(self: &Arc<Self>) -> Result<Arc<Rendered>, RegistryError> {
        self.catch_up().await;
        if let Some(r) = self.rendered() {
            return Ok(r);
        }
        let me = self.clone();
        let mut full = tokio::spawn(async move {
            let result = me.refresh().await;
            if let Err(e) = &result {
                tracing::warn!(error = %e, "guide refresh failed");
            }
            result
        });
        let started = tokio::time::Instant::now();
        let deadline = started + FIRST_WAIT;
        loop {
            tokio::select! {
                joined = &mut full => match joined {
                    Ok(result) => return result,
                    // It panicked: what was read stays, rendered below.
                    Err(_) => break,
                },
                () = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
            // No channel at all: no guide can give one a programme.
            if self.lineup_is_empty() {
                break;
            }
            // An empty guide is not served for a partial one: clients keep a guide
            // for hours. Nor is one made of guides without a programme (a panel's
            // valid but empty `xmltv.php` read first, or a saved copy whose
            // programmes are all past).
            let programmes = self
                .last_good
                .lock()
                .expect("guide lock")
                .values()
                .any(|g| g.programme_count() > 0);
            // Then nothing more to wait for once every guide is read, or has the copy
            // of its last good read standing in while its read goes on.
            if programmes && (tokio::time::Instant::now() >= deadline || self.first_reads_settled())
            {
                break;
            }
        }
        let _render = self.rendering.lock().await;
        if let Some(r) = self.rendered() {
            return Ok(r);
        }
        tracing::info!(
            waited_s = started.elapsed().as_secs(),
            "serving the guides read so far (the first with programmes, or what {}s gave); the others join when read",
            FIRST_WAIT.as_secs()
        );
        self.render_locked().await
    }

    /// Whether the lineup built has no channel (no guide can give it programmes).
    fn lineup_is_empty(&self) -> bool {
        self.registry
            .last_lineup()
            .is_some_and(|l| l.channels.is_empty())
    }

    /// Whether the first refresh has nothing more to give: every guide's read has
    /// ended, or has the copy of its last good read standing in (`stand_in`).
    fn first_reads_settled(&self) -> bool {
        let mut waiting: Vec<String> = self.sources().into_iter().map(|(n, _)| n).collect();
        {
            let read = self.lineup_read.lock().expect("guide lock");
            waiting.retain(|name| !read.contains_key(name));
        }
        let status = self.status.lock().expect("guide status lock");
        waiting
            .iter()
            .all(|name| status.get(name).is_some_and(|s| s.copy_saved.is_some()))
    }

    /// Waits, at most `FIRST_WAIT`, until the match table can be built: every guide
    /// read once, or its read going on with the copy of its last good read standing
    /// in (`stand_in`; the table is then matched with that copy). Else says which
    /// guides are still being read: an admin's call is not held for a guide that
    /// hangs until `read_timeout`.
    pub async fn ready_to_match(self: &Arc<Self>) -> Result<(), MatchWait> {
        if self.fetches.load(Ordering::Acquire) > 0 {
            return Ok(());
        }
        let me = self.clone();
        let mut full = tokio::spawn(async move { me.read_fully().await });
        let deadline = tokio::time::Instant::now() + FIRST_WAIT;
        loop {
            tokio::select! {
                joined = &mut full => {
                    return match joined {
                        Ok(read) => read.map_err(MatchWait::Failed),
                        Err(e) => Err(MatchWait::Reading(format!("reading the guides failed: {e}"))),
                    };
                }
                () = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
            if self.lineup_is_empty() || self.first_reads_settled() {
                let lineup = self.registry.lineup().await.map_err(MatchWait::Failed)?;
                if self.table_for.lock().expect("guide lock").is_none() {
                    let _one = self.rendering.lock().await;
                    if self.table_for.lock().expect("guide lock").is_none() {
                        self.rematch(&lineup).await;
                    }
                }
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
        }
        let reading: Vec<String> = {
            let status = self.status.lock().expect("guide status lock");
            let mut reading: Vec<String> = status
                .iter()
                .filter(|(_, s)| s.copy_saved.is_none())
                .filter_map(|(name, s)| {
                    Some(format!("`{name}` (since {})", s.reading_since.as_ref()?))
                })
                .collect();
            reading.sort();
            reading
        };
        Err(MatchWait::Reading(format!(
            "the guides are still being read since the start, and matching needs each read once \
             (or a saved copy of it): still reading {}; a read is cut after [guide] read_timeout ({}). \
             Try again shortly",
            if reading.is_empty() { "the lineup".to_string() } else { reading.join(", ") },
            humantime::format_duration(self.cfg.read_timeout)
        )))
    }

    /// Returns once every guide has been read at least once (the match table needs
    /// them all; `current` may answer before).
    pub async fn read_fully(&self) -> Result<(), RegistryError> {
        if self.fetches.load(Ordering::Acquire) > 0 {
            return Ok(());
        }
        self.refresh().await.map(drop)
    }

    /// Guide `name`'s last good read, if any.
    fn kept(&self, name: &str) -> Option<Arc<ServiceGuide>> {
        self.last_good
            .lock()
            .expect("guide lock")
            .get(name)
            .cloned()
    }

    /// Whether guide `name`'s kept guide is the copy of its last good read before
    /// start (no read has worked since).
    fn serves_copy(&self, name: &str) -> bool {
        self.status_of(name).is_some_and(|s| s.copy_saved.is_some())
    }

    /// The guide as served now, if one was rendered.
    pub fn rendered(&self) -> Option<Arc<Rendered>> {
        self.rendered
            .read()
            .expect("guide lock is never poisoned")
            .clone()
    }

    /// Refreshes every enabled service's guide in the background, every
    /// `guide.refresh` (sooner when `lineup_changed` asks), for as long as `self`
    /// lives elsewhere. In between, after each lineup rebuild and at least every
    /// min(`guide.refresh`, `cache.channels_ttl`, `CHECK_EVERY`), reads again only
    /// the guides of services whose lineup channels changed (`refresh_changed`).
    pub fn spawn_refresh(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let every = self.cfg.refresh;
        let check = every
            .min(self.registry.lineup_ttl())
            .min(CHECK_EVERY)
            .max(CHECK_MIN);
        let wake = self.wake.clone();
        let rebuilt = self.registry.lineup_rebuilt();
        let retired = self.retired.clone();
        tokio::spawn(async move {
            let mut first = true;
            loop {
                if retired.is_cancelled() {
                    return;
                }
                let Some(guides) = weak.upgrade() else { return };
                // At start, a guide a request has built meanwhile is fresh enough.
                let result = if std::mem::take(&mut first) {
                    guides.current().await
                } else {
                    guides.refresh().await
                };
                if let Err(e) = result {
                    tracing::warn!(error = %e, "guide refresh failed");
                }
                drop(guides);
                let due = tokio::time::Instant::now() + every;
                loop {
                    // A failed guide's retry, when it is due before the next check: it
                    // is read again then, not up to a check later.
                    // (One already past waits for the check: never a busy loop.)
                    let retry = weak.upgrade().and_then(|g| g.next_retry()).unwrap_or(due);
                    tokio::select! {
                        biased;
                        () = retired.cancelled() => return,
                        () = tokio::time::sleep_until(due) => break,
                        () = wake.notified() => {}
                        () = rebuilt.notified() => {}
                        () = tokio::time::sleep_until(retry) => {}
                        () = tokio::time::sleep(check) => {}
                    }
                    let Some(guides) = weak.upgrade() else { return };
                    guides.catch_up().await;
                    if let Err(e) = guides.refresh_changed().await {
                        tracing::warn!(error = %e, "guide check for changed channels failed");
                    }
                }
            }
        });
    }

    /// When the next failed guide's read is due, if one is due later than now.
    fn next_retry(&self) -> Option<tokio::time::Instant> {
        let now = tokio::time::Instant::now();
        self.retry
            .lock()
            .expect("guide lock")
            .values()
            .map(|(at, _)| *at)
            .filter(|at| *at > now)
            .min()
    }

    /// Reads again the guides of the enabled services that have lineup channels their
    /// last read did not cover, and the guides (extra ones too) whose kept channel
    /// list gives a channel to a lineup channel their last read did not know (and no
    /// other guide: a guide may be 100 MB), matches again (reading the guides whose
    /// assignments changed), then re-renders; with nothing to read, re-renders only
    /// when the listed channels changed since the last render. Never runs beside a
    /// full refresh, and does nothing before the first render.
    pub async fn refresh_changed(&self) -> Result<(), RegistryError> {
        if self.rendered().is_none() {
            return Ok(());
        }
        let _one = self.refreshing.lock().await;
        // Taken once no read is in flight (`refreshing`): what it recorded at its end
        // does not hide them. And before the lineup is read: each was changed before
        // it was noted, so that lineup has the change.
        let again_services = std::mem::take(&mut *self.again_services.lock().expect("guide lock"));
        let again_channels = std::mem::take(&mut *self.again_channels.lock().expect("guide lock"));
        let mut again_channels = again_channels;
        let lineup = match self.registry.lineup().await {
            Ok(lineup) => lineup,
            Err(e) => {
                self.again_services
                    .lock()
                    .expect("guide lock")
                    .extend(again_services);
                self.again_channels
                    .lock()
                    .expect("guide lock")
                    .extend(again_channels);
                return Err(e);
            }
        };
        // Channels given another guide id since the last render, however (another
        // instance's mapping, read from the shared store, says nothing else of it).
        if let Some(before) = self.rendered_for.lock().expect("guide lock").as_ref() {
            let was: HashMap<&str, &str> = before
                .channels
                .iter()
                .map(|c| (c.id.as_str(), c.guide_id.as_str()))
                .collect();
            again_channels.extend(
                lineup
                    .channels
                    .iter()
                    .filter(|c| {
                        was.get(c.id.as_str())
                            .is_some_and(|g| *g != c.guide_id.as_str())
                    })
                    .map(|c| c.id.to_string()),
            );
        }
        let mut due: Vec<String> = {
            let read_for = self.read_for.lock().expect("guide lock");
            self.enabled_services()
                .into_iter()
                .filter(|s| {
                    let now = channels_with_source(&lineup, &s.name);
                    again_services.contains(&s.name)
                        || !read_for
                            .get(&s.name)
                            .map_or(now.is_empty(), |read| now.is_subset(read))
                })
                .map(|s| s.name)
                .collect()
        };
        for name in &due {
            tracing::info!(service = %name, "lineup channels changed: reading its guide again");
        }
        // Guides whose last read failed, when their retry is due; and those that list
        // channels new in the lineup.
        let now = tokio::time::Instant::now();
        for (name, _) in self.sources() {
            if due.contains(&name) {
                continue;
            }
            let retry = self
                .retry
                .lock()
                .expect("guide lock")
                .get(&name)
                .is_some_and(|(at, _)| *at <= now);
            if retry {
                tracing::info!(guide = %name, "its last read failed: reading it again");
                due.push(name);
            } else if self.lists_new_channels(&name, &lineup, &again_channels) {
                tracing::info!(guide = %name, "the guide lists channels new in the lineup: reading it again");
                due.push(name);
            }
        }
        if !due.is_empty() {
            self.fetch(&due, &lineup, None, true).await;
            self.settle(&lineup).await;
        }
        let _render = self.rendering.lock().await;
        if due.is_empty() {
            let same = self
                .rendered_for
                .lock()
                .expect("guide lock")
                .as_ref()
                .is_some_and(|r| Arc::ptr_eq(r, &lineup) || r.channels == lineup.channels);
            if same {
                return Ok(());
            }
        }
        self.render_locked().await.map(drop)
    }

    /// Whether the guide channels the last read of guide `name` saw (its catalogue,
    /// and those without a display name) have one that a read now would give (by id
    /// or display name) to a lineup channel that read did not know, or to one of
    /// `again` (given another guide id since). The new channels it gives none are not
    /// looked at again before the next read.
    fn lists_new_channels(&self, name: &str, lineup: &Lineup, again: &HashSet<String>) -> bool {
        let Some(guide) = self.kept(name) else {
            return false;
        };
        // A channel the read knew, given another guide id since, is looked at for a
        // guide channel of that id only: one its display name matched, the read kept.
        let (new, by_id_only): (Vec<&Text>, HashSet<&str>) = {
            let read = self.lineup_read.lock().expect("guide lock");
            let Some(read) = read.get(name) else {
                return false;
            };
            let ids = lineup.channels.iter().chain(lineup.hidden()).map(|c| &c.id);
            let new = ids
                .filter(|id| !read.contains(*id) || again.contains(id.as_str()))
                .collect::<Vec<_>>();
            let known = new
                .iter()
                .filter(|id| read.contains(**id))
                .map(|id| id.as_str())
                .collect();
            (new, known)
        };
        if new.is_empty() {
            return false;
        }
        // Without the service's tvg-ids (its channel list may be due for a fetch):
        // they only tell which of its own channels a guide id is, and its own new
        // channels make it due anyway.
        let map = Mapping::new(name, &[], lineup, self.plan_for(name));
        let is_new: HashSet<&str> = new.iter().map(|id| id.as_str()).collect();
        let unnamed = guide.unnamed().iter().map(|id| (id, &[][..]));
        let lists = guide
            .catalogue
            .iter()
            .map(|(id, names)| (id, names.as_slice()))
            .chain(unnamed)
            .any(|(id, names)| {
                map.map(id, names).is_some_and(|(ours, how)| {
                    is_new.contains(ours.as_str())
                        && (how.by_id() || !by_id_only.contains(ours.as_str()))
                })
            });
        if !lists {
            // Its channels do not change before its next read: these need no second
            // look (a check costs a mapping of the whole lineup).
            if let Some(read) = self.lineup_read.lock().expect("guide lock").get_mut(name) {
                read.extend(new.into_iter().cloned());
            }
        }
        lists
    }

    /// The lineup changed (a mapping, a service switched): the match table and the
    /// guide follow, matched again and re-rendered from the guides already fetched,
    /// before any reader of the guide or of the matches is answered (`catch_up`), and
    /// soon by the background task; the caller does not wait for it. `reread` also
    /// asks the background check (`refresh_changed`) to read soon the guides that may
    /// give something only a new read finds; no other guide is read.
    pub fn lineup_changed(&self, reread: Reread<'_>) {
        let again = match reread {
            Reread::Nothing => None,
            Reread::Service(name) => Some((&self.again_services, name)),
            Reread::Channel(id) => Some((&self.again_channels, id)),
        };
        if let Some((set, key)) = again {
            set.lock().expect("guide lock").insert(key.to_string());
        }
        self.changes.fetch_add(1, Ordering::AcqRel);
        self.wake.notify_one();
    }

    /// Follows the lineup changes told so far, unless followed already: matches again,
    /// brings the guides whose assignments moved up to date (in the background) and
    /// renders again. Nothing before the first render: the first request builds the
    /// guide from the lineup of then.
    pub async fn catch_up(self: &Arc<Self>) {
        if self.followed.load(Ordering::Acquire) >= self.changes.load(Ordering::Acquire) {
            return;
        }
        let _one = self.rendering.lock().await;
        // Every change told before the lineup is read below is in it.
        let told = self.changes.load(Ordering::Acquire);
        if self.followed.load(Ordering::Acquire) >= told {
            return;
        }
        // Followed once done; a failed try leaves them for the next reader.
        if self.rendered().is_none() || self.follow_lineup().await {
            self.followed.fetch_max(told, Ordering::AcqRel);
        }
    }

    /// `catch_up`'s work; the caller holds `rendering`. False when the lineup could
    /// not be read or the guide not rendered (the last guide stays).
    async fn follow_lineup(self: &Arc<Self>) -> bool {
        // The render places programmes by the table: one made for the old lineup
        // would give a channel whose guide id was just set by hand its old match.
        let lineup = match self.registry.lineup().await {
            Ok(lineup) => lineup,
            Err(e) => {
                tracing::warn!(error = %e, "guide re-render failed; the last guide stays");
                return false;
            }
        };
        self.rematch(&lineup).await;
        // The change may have moved automatic matches (a rename, a switch): the
        // guides whose assignments changed give them, as after a decision.
        if !self.stale_sources().is_empty() {
            let me = self.clone();
            tokio::spawn(async move {
                if let Err(e) = me.apply_matches().await {
                    tracing::warn!(error = %e, "guide update after a lineup change failed");
                }
            });
        }
        match self.render_locked().await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(error = %e, "guide re-render failed; the last guide stays");
                false
            }
        }
    }

    /// Fetches every enabled service's guide again, merges and renders. Concurrent
    /// callers share one refresh.
    pub async fn refresh(&self) -> Result<Arc<Rendered>, RegistryError> {
        self.refresh_observed(None).await
    }

    /// `refresh`, telling `observe` as each service's channel list and then its guide
    /// is in (`freesky guide` draws its progress from it).
    pub async fn refresh_observed(
        &self,
        observe: Option<Observer<'_>>,
    ) -> Result<Arc<Rendered>, RegistryError> {
        let seen = self.fetches.load(Ordering::Acquire);
        let _one = self.refreshing.lock().await;
        if self.fetches.load(Ordering::Acquire) != seen {
            if let Some(r) = self.rendered() {
                return Ok(r); // someone else refreshed while we waited
            }
        }
        let lineup = self.registry.lineup_observed(observe).await?;
        let names: Vec<String> = self.sources().into_iter().map(|(n, _)| n).collect();
        self.fetch(&names, &lineup, observe, true).await;
        self.settle(&lineup).await;
        let _render = self.rendering.lock().await;
        let rendered = self.render_locked().await;
        // Counted once rendered: a caller that arrives while this one renders (which
        // takes a while off the async threads) shares this refresh, not starts another.
        self.fetches.fetch_add(1, Ordering::Release);
        rendered
    }

    /// Reads the guides of `services` at once against `lineup` and keeps the outcome:
    /// a good read replaces the service's last good guide, a failed one keeps it and
    /// says why in the status. With `spare`, each read also keeps (bounded) the
    /// programmes of guide channels guide matching may assign next (`settle`). The
    /// caller holds `refreshing`.
    async fn fetch(
        &self,
        services: &[String],
        lineup: &Arc<Lineup>,
        observe: Option<Observer<'_>>,
        spare: bool,
    ) {
        let window = &Window::new(lineup, self.cfg.days);
        let words = spare.then(|| spare_words(lineup, &self.matches()));
        let words = words.as_ref();
        let fetches = services.iter().map(|name| async move {
            let name = name.clone();
            self.status
                .lock()
                .expect("guide status lock")
                .entry(name.clone())
                .or_default()
                .reading_since = Some(now_rfc3339());
            let mut result = tokio::select! {
                biased;
                () = self.retired.cancelled() => Err(Failed::new(
                    String::new(),
                    "cut: a config reload replaced this guide".into(),
                )),
                result = self.fetch_one(&name, lineup, window, words) => result,
            };
            let read = match &mut result {
                Ok(Some((_, guide))) => Some(guide),
                Err(failed) => failed.copy.as_mut().map(|(guide, _)| guide),
                Ok(None) => None,
            };
            if let Some(guide) = read {
                window.trim(guide);
                // What a remembered assignment gave (`Seed`) this read keeps as if the
                // plan had said so: matching that agrees needs no second read.
                if let Some(with) = self.read_with.lock().expect("guide lock").get_mut(&name) {
                    for (channel, how) in &guide.matched_by {
                        if let (Match::Chosen, Some(id)) = (how, guide.matched_ids.get(channel)) {
                            with.entry(id.to_lowercase())
                                .or_insert_with(|| channel.clone());
                        }
                    }
                }
                if spare {
                    let kept = std::mem::take(&mut guide.spare);
                    self.spares
                        .lock()
                        .expect("guide lock")
                        .insert(name.clone(), kept);
                }
            }
            if let Some(observe) = observe {
                let step = match &result {
                    Ok(None) => Ok(None),
                    Ok(Some((_, g))) => Ok(Some((g.channels_matched, g.programme_count()))),
                    Err(failed) => Err(failed.why.as_str()),
                };
                observe(&name, Step::Guide(step));
            }
            (name, result)
        });
        let ids: HashSet<Text> = lineup
            .channels
            .iter()
            .chain(lineup.hidden())
            .map(|c| c.id.clone())
            .collect();
        // Each outcome is kept as it arrives: a render meanwhile (the first request's,
        // `current`) has the guides read so far.
        let mut fetches: futures::stream::FuturesUnordered<_> = fetches.collect();
        while let Some((name, result)) = futures::StreamExt::next(&mut fetches).await {
            self.lineup_read
                .lock()
                .expect("guide lock")
                .insert(name.clone(), ids.clone());
            self.read_for
                .lock()
                .expect("guide lock")
                .insert(name.clone(), channels_with_source(lineup, &name));
            let joins = {
                let mut status = self.status.lock().expect("guide status lock");
                {
                    let mut retry = self.retry.lock().expect("guide lock");
                    if result.is_err() {
                        let fails = retry.get(&name).map_or(0, |r| r.1) + 1;
                        let wait = RETRY_FAILED
                            .min(self.cfg.refresh / 4)
                            .saturating_mul(1 << (fails - 1).min(10))
                            .min(self.cfg.refresh);
                        retry.insert(name.clone(), (tokio::time::Instant::now() + wait, fails));
                    } else {
                        retry.remove(&name);
                    }
                }
                // What a guide served already lacks: this guide's first programmes since
                // start, or its fresh read where its copy stood in. It joins at once, not
                // when every other read has ended (a hanging one: `read_timeout`).
                let joins = {
                    let had = self
                        .last_good
                        .lock()
                        .expect("guide lock")
                        .contains_key(&name);
                    let stood_in = status.get(&name).is_some_and(|s| s.copy_saved.is_some());
                    match &result {
                        Ok(Some(_)) => stood_in || !had,
                        Err(failed) => failed.copy.is_some() && !had,
                        Ok(None) => false,
                    }
                };
                match result {
                    Ok(None) => {
                        status.remove(&name);
                        self.last_good.lock().expect("guide lock").remove(&name);
                    }
                    Ok(Some((source, guide))) => {
                        tracing::info!(guide = %name, programmes = guide.programme_count(), skipped = guide.skipped, "guide loaded");
                        let read = GuideStatus {
                            last_ok: Some(now_rfc3339()),
                            ..GuideStatus::of(source, &guide)
                        };
                        self.keep_read(&mut status, name, read, guide);
                    }
                    Err(Failed {
                        source,
                        why,
                        copy: Some((guide, saved)),
                    }) => {
                        let read = GuideStatus {
                            last_ok: Some(saved.clone()),
                            last_error: Some(why),
                            copy_saved: Some(saved),
                            ..GuideStatus::of(source, &guide)
                        };
                        self.keep_read(&mut status, name, read, guide);
                    }
                    Err(Failed {
                        source,
                        why: err,
                        copy: None,
                    }) => {
                        let kept = self
                            .last_good
                            .lock()
                            .expect("guide lock")
                            .contains_key(&name);
                        // `guide`: a service's name, or an extra guide's (`[[guides]]`).
                        if kept {
                            tracing::warn!(guide = %name, error = %err, "guide refresh failed; keeping the last good guide");
                        } else {
                            tracing::warn!(guide = %name, error = %err, "guide read failed; no programmes from this guide until a read succeeds");
                        }
                        let entry = status.entry(name).or_default();
                        entry.source = source;
                        entry.last_error = Some(err);
                        entry.reading_since = None;
                    }
                }
                joins
            };
            if joins && self.rendered().is_some() {
                let _render = self.rendering.lock().await;
                if let Err(e) = self.render_locked().await {
                    tracing::warn!(error = %e, "rendering the guide with a guide just read failed");
                }
            }
        }
    }

    /// Enabled services in priority order (ties keep config order).
    fn enabled_services(&self) -> Vec<crate::model::ServiceStatus> {
        self.registry.enabled_by_priority()
    }

    /// Merges the kept guides against the lineup as it is now, renders and stores
    /// the result. The caller holds `rendering`.
    async fn render_locked(&self) -> Result<Arc<Rendered>, RegistryError> {
        let lineup = self.registry.lineup().await?;
        if self.built_for_other(&lineup) {
            self.rematch(&lineup).await;
        }
        let sources = self.sources();
        let to = chrono::Utc::now().timestamp() + i64::from(self.cfg.days) * 86_400;
        // Inputs taken now; the merge and the text (seconds for a big guide) made on the
        // blocking pool, not on an async worker every other request needs.
        let good = self.last_good.lock().expect("guide lock").clone();
        let table = self.matches();
        let cfg = self.cfg.clone();
        let of = lineup.clone();
        let rendered =
            tokio::task::spawn_blocking(move || render(&cfg, &good, &table, &of, &sources, to))
                .await
                .map_err(|e| RegistryError::Store(format!("rendering the guide failed: {e}")))?;
        let rendered = Arc::new(rendered);
        *self.rendered.write().expect("guide lock is never poisoned") = Some(rendered.clone());
        *self.rendered_for.lock().expect("guide lock") = Some(lineup);
        Ok(rendered)
    }

    /// One service's guide: `Ok(None)` when it has none.
    async fn fetch_one(
        &self,
        name: &str,
        lineup: &Lineup,
        window: &Window<'_>,
        spare: Option<&HashSet<String>>,
    ) -> Result<Option<(String, ServiceGuide)>, Failed> {
        let plan = self.plan_for(name);
        if let Some(extra) = self.extra.iter().find(|e| e.cfg.name == name) {
            return self
                .fetch_extra(extra, lineup, plan, window, spare)
                .await
                .map(Some);
        }
        let Some(service) = self.registry.service(name) else {
            return Ok(None);
        };
        // The channel list first: it says where an M3U list's guide is, and which
        // tvg-ids this service uses for which lineup channel.
        let channels = match self.registry.channels_or_last_good(name).await {
            Ok(channels) => channels,
            // No guide known without the list (none configured, and an M3U list's
            // header is unread): nothing failed as far as a guide goes.
            Err(_) if service.guide_source().is_none() => return Ok(None),
            Err(e) => return Err(Failed::new(String::new(), format!("channel list: {e}"))),
        };
        let Some(source) = service.guide_source() else {
            return Ok(None);
        };
        let shown = match &source {
            GuideSource::Url(u) => service.shown_url(u),
            GuideSource::File(path) => path.display().to_string(),
            GuideSource::Inline { shown, .. } => shown.clone(),
        };
        self.read_with
            .lock()
            .expect("guide lock")
            .insert(name.to_string(), plan.assigned.clone());
        let map = Mapping::new(name, &channels, lineup, plan.at(&shown)).sparing(spare);
        self.read_guide(
            name,
            shown,
            source,
            GUIDE_MAX_BYTES,
            &map,
            window,
            spare,
            |url| async move { service.fetch(&url, &Vec::new(), None).await },
        )
        .await
        .map(Some)
    }

    /// Guide `name` (shown as `shown`) read from `source` (a URL through `fetch`) with
    /// `map`, within `[guide] read_timeout` and `max_bytes`, a copy of a URL guide kept
    /// as it is read (`Copy`); when the read fails, the copy of its last good read is
    /// read instead if no read of it has worked since start (`read_copy`).
    #[allow(clippy::too_many_arguments)]
    async fn read_guide<Fut>(
        &self,
        name: &str,
        shown: String,
        source: GuideSource,
        max_bytes: u64,
        map: &Mapping<'_>,
        window: &Window<'_>,
        spare: Option<&HashSet<String>>,
        fetch: impl FnOnce(url::Url) -> Fut,
    ) -> Result<(String, ServiceGuide), Failed>
    where
        Fut: std::future::Future<
            Output = Result<crate::upstream::Fetched, crate::error::UpstreamError>,
        >,
    {
        // Said from the start of the read (a first read's status had no address).
        if let Some(s) = self.status.lock().expect("guide status lock").get_mut(name) {
            if s.source.is_empty() {
                s.source.clone_from(&shown);
            }
        }
        let copy_to = self.copy_path(name, &source);
        let mut copy = None;
        let work = async {
            let reader = open(source, max_bytes, copy_to.as_deref(), &mut copy, fetch).await?;
            window.read(reader, map, spare.is_some()).await
        };
        let read = {
            let work = tokio::time::timeout(self.cfg.read_timeout, work);
            tokio::pin!(work);
            tokio::select! {
                read = &mut work => read,
                () = tokio::time::sleep(STAND_IN), if copy_to.is_some() && self.kept(name).is_none() => {
                    self.stand_in(name, &shown, copy_to.as_deref(), max_bytes, map, window)
                        .await;
                    work.await
                }
            }
        };
        if let Some(copy) = copy {
            copy.finish(matches!(read, Ok(Ok(_)))).await;
        }
        let why = match read {
            Err(_) => format!(
                "took longer than {}",
                humantime::format_duration(self.cfg.read_timeout)
            ),
            Ok(Err(e)) => e,
            Ok(Ok(guide)) => return Ok((shown, guide)),
        };
        let copy = self
            .read_copy(name, copy_to.as_deref(), max_bytes, map, window, spare)
            .await;
        Err(Failed {
            source: shown,
            why,
            copy,
        })
    }

    /// While guide `name`'s first read since start goes on (`STAND_IN`): the copy of
    /// its last good read at `path`, if any, served meanwhile as after a failed read
    /// (its status says so, with the read still going on). A guide served already is
    /// rendered again with it.
    async fn stand_in(
        &self,
        name: &str,
        shown: &str,
        path: Option<&Path>,
        max_bytes: u64,
        map: &Mapping<'_>,
        window: &Window<'_>,
    ) {
        let Some((mut guide, saved)) = self
            .read_copy(name, path, max_bytes, map, window, None)
            .await
        else {
            return;
        };
        window.trim(&mut guide);
        {
            let mut status = self.status.lock().expect("guide status lock");
            let read = GuideStatus {
                last_ok: Some(saved.clone()),
                reading_since: status.get(name).and_then(|s| s.reading_since.clone()),
                copy_saved: Some(saved),
                ..GuideStatus::of(shown.to_string(), &guide)
            };
            self.keep_read(&mut status, name.to_string(), read, guide);
        }
        if self.rendered().is_some() {
            let _render = self.rendering.lock().await;
            if let Err(e) = self.render_locked().await {
                tracing::warn!(error = %e, "rendering the guide with a copy standing in failed");
            }
        }
    }

    /// Takes in guide `name`'s read `guide` (served from now on) with its status
    /// `read`; the caller holds `status`.
    fn keep_read(
        &self,
        status: &mut HashMap<String, GuideStatus>,
        name: String,
        read: GuideStatus,
        guide: ServiceGuide,
    ) {
        status.insert(name.clone(), read);
        self.last_good
            .lock()
            .expect("guide lock")
            .insert(name, Arc::new(guide));
    }

    /// Where the copy of guide `name`'s last good read is kept, when it has a URL and
    /// copies are kept (`with_copies`): named by the guide's name (a service and an
    /// extra guide never share one) and its place (the URL without credentials or
    /// query, whose tokens may change): a guide moved elsewhere is not the old one.
    fn copy_path(&self, name: &str, source: &GuideSource) -> Option<PathBuf> {
        let dir = self.copies.as_ref()?;
        let GuideSource::Url(url) = source else {
            return None;
        };
        let place = format!(
            "{}://{}:{}{}",
            url.scheme(),
            url.host_str().unwrap_or_default(),
            url.port_or_known_default().unwrap_or_default(),
            url.path()
        );
        Some(dir.join(format!(
            "{}{}.xmltv",
            copy_prefix(name),
            hex(&ring::digest::digest(&ring::digest::SHA256, place.as_bytes()).as_ref()[..6])
        )))
    }

    /// After guide `name`'s read failed: its copy at `path` read as the guide would
    /// be, with when it was saved, when no read of it has worked since start (that
    /// read is newer). `None` without a copy, or one that cannot be read (logged).
    async fn read_copy(
        &self,
        name: &str,
        path: Option<&Path>,
        max_bytes: u64,
        map: &Mapping<'_>,
        window: &Window<'_>,
        spare: Option<&HashSet<String>>,
    ) -> Option<(ServiceGuide, String)> {
        let path = path?;
        // A read since start is newer; a kept copy is read again (the matches it is
        // read with may have changed: `settle`).
        if self.kept(name).is_some() && !self.serves_copy(name) {
            return None;
        }
        self.read_copy_file(name, path, max_bytes, map, window, spare)
            .await
    }

    /// The copy at `path` of guide `name`'s last good read, read with `map`; with when
    /// it was saved.
    async fn read_copy_file(
        &self,
        name: &str,
        path: &Path,
        max_bytes: u64,
        map: &Mapping<'_>,
        window: &Window<'_>,
        spare: Option<&HashSet<String>>,
    ) -> Option<(ServiceGuide, String)> {
        let saved = tokio::fs::metadata(path).await.ok()?.modified().ok()?;
        let work = async {
            let reader = open_file(path, max_bytes).await?;
            window.read(reader, map, spare.is_some()).await
        };
        let why = match tokio::time::timeout(self.cfg.read_timeout, work).await {
            Ok(Ok(guide)) => {
                let saved = humantime::format_rfc3339_seconds(saved).to_string();
                tracing::warn!(guide = %name, saved = %saved, "serving the copy of the guide's last good read until a read succeeds");
                return Some((guide, saved));
            }
            Ok(Err(e)) => e,
            Err(_) => "took too long".into(),
        };
        tracing::warn!(guide = %name, copy = %path.display(), error = %why, "the copy of the guide's last good read cannot be read");
        None
    }

    /// Guide `name` read again from the copy of its last good read (what it serves, or
    /// the document of the read it serves) with the plan as it is now: a match decision
    /// shows at once when the guide's upstream hangs or fails. Kept only when no read
    /// replaced the guide meanwhile; `applied`: the plan is recorded as read with
    /// (no read of the upstream is then due for it). False without a copy.
    async fn reread_copy(&self, name: &str, lineup: &Lineup, applied: bool) -> bool {
        let Some(before) = self.kept(name) else {
            return false;
        };
        let extra = self.extra.iter().find(|e| e.cfg.name == name);
        let (source, shown, max_bytes, channels) = match extra {
            Some(extra) => {
                let Some((url, _)) = &extra.http else {
                    return false;
                };
                let source = GuideSource::Url(url.clone());
                (
                    source,
                    crate::error::redact(url),
                    extra.cfg.max_bytes,
                    Arc::default(),
                )
            }
            None => {
                let Some(service) = self.registry.service(name) else {
                    return false;
                };
                let Some(source @ GuideSource::Url(_)) = service.guide_source() else {
                    return false;
                };
                let GuideSource::Url(url) = &source else {
                    return false;
                };
                let shown = service.shown_url(url);
                let Ok(channels) = self.registry.channels_or_last_good(name).await else {
                    return false;
                };
                (source, shown, GUIDE_MAX_BYTES, channels)
            }
        };
        let Some(path) = self.copy_path(name, &source) else {
            return false;
        };
        let plan = self.plan_for(name);
        let assigned = plan.assigned.clone();
        let map = Mapping::new(name, &channels, lineup, plan.at(&shown));
        let window = Window::new(lineup, self.cfg.days);
        let Some((mut guide, _)) = self
            .read_copy_file(name, &path, max_bytes, &map, &window, None)
            .await
        else {
            return false;
        };
        window.trim(&mut guide);
        let mut status = self.status.lock().expect("guide status lock");
        {
            let mut good = self.last_good.lock().expect("guide lock");
            if !good.get(name).is_some_and(|g| Arc::ptr_eq(g, &before)) {
                return false;
            }
            if let Some(st) = status.get_mut(name) {
                st.channels = guide.channels_matched;
                st.programmes = guide.programme_count();
                st.ignored_duplicate_channels = guide.ignored_duplicates;
            }
            good.insert(name.to_string(), Arc::new(guide));
        }
        drop(status);
        if applied {
            self.read_with
                .lock()
                .expect("guide lock")
                .insert(name.to_string(), assigned);
        }
        tracing::info!(guide = %name, "guide matches changed: applied from the copy of its last good read");
        true
    }

    /// Extra guide `extra`'s guide, read as a service's is (bounded in time and by its
    /// `max_bytes`), with no channel list of its own.
    async fn fetch_extra(
        &self,
        extra: &Extra,
        lineup: &Lineup,
        plan: Plan,
        window: &Window<'_>,
        spare: Option<&HashSet<String>>,
    ) -> Result<(String, ServiceGuide), Failed> {
        let (shown, source) = match (&extra.http, &extra.cfg.file) {
            (Some((url, _)), _) => (crate::error::redact(url), GuideSource::Url(url.clone())),
            (None, Some(path)) => (path.display().to_string(), GuideSource::File(path.clone())),
            (None, None) => return Err(Failed::new(String::new(), "no url or file".into())),
        };
        self.read_with
            .lock()
            .expect("guide lock")
            .insert(extra.cfg.name.clone(), plan.assigned.clone());
        let map = Mapping::new(&extra.cfg.name, &[], lineup, plan.at(&shown)).sparing(spare);
        let client = extra.http.as_ref().map(|(_, c)| c);
        self.read_guide(
            &extra.cfg.name,
            shown,
            source,
            extra.cfg.max_bytes,
            &map,
            window,
            spare,
            |url| async move {
                let client = client.expect("a URL guide has a client");
                client.get(&url, &Vec::new(), None).await
            },
        )
        .await
    }
}

/// A guide read that failed.
struct Failed {
    /// The guide's address as shown (`GuideStatus::source`).
    source: String,
    why: String,
    /// The copy of its last good read, read instead, and when it was saved
    /// (`Guides::read_copy`).
    copy: Option<(ServiceGuide, String)>,
}

impl Failed {
    fn new(source: String, why: String) -> Self {
        Self {
            source,
            why,
            copy: None,
        }
    }
}

/// What guide matching reads, owned (built on the blocking pool).
struct MatchInputs {
    good: HashMap<String, Arc<ServiceGuide>>,
    /// Guide sources in rank order, with the country their short names belong to.
    sources: Vec<(String, Option<String>)>,
    lineup: Arc<Lineup>,
    /// Lineup channels whose guide id is set by hand.
    pinned: HashSet<String>,
    decisions: HashMap<String, table::Decision>,
    /// The lineup's services' channels as last listed: their stream addresses hint
    /// their countries to the matcher.
    lists: HashMap<String, Arc<Vec<Channel>>>,
}

impl MatchInputs {
    fn build(&self) -> Table {
        let good = &self.good;
        let catalogues: Vec<table::Catalogue<'_>> = self
            .sources
            .iter()
            .filter_map(|(name, region)| {
                let g = good.get(name)?;
                Some(table::Catalogue {
                    source: name,
                    channels: &g.catalogue,
                    langs: &g.langs,
                    region: region.as_deref(),
                })
            })
            .collect();
        let mut found = table::Found::new();
        for (name, _) in &self.sources {
            let Some(g) = good.get(name) else { continue };
            for (ours, how) in &g.matched_by {
                let Some(id) = g.matched_ids.get(ours) else {
                    continue;
                };
                let how = match self.lineup.get(ours) {
                    Some(c) => match now_by(g, c) {
                        Some(how) => how,
                        None => continue,
                    },
                    None => *how,
                };
                let by_id = match how {
                    Match::Chosen => continue,
                    Match::Id | Match::GuideId => true,
                    Match::ExactName | Match::NormalisedName => false,
                };
                match found.get(ours) {
                    Some((_, _, true)) => {}
                    Some(_) if !by_id => {}
                    _ => {
                        found.insert(ours.clone(), (name.clone(), id.clone(), by_id));
                    }
                }
            }
        }
        // Each service's stream addresses by its channel id (those its listing gives),
        // but for a reseller's servers serving most of them (`features::Providers`).
        let urls: HashMap<&str, HashMap<&str, &str>> = self
            .lists
            .iter()
            .map(|(service, list)| {
                let providers =
                    features::Providers::of(list.iter().filter_map(|c| c.url.as_deref()));
                let by_id = list
                    .iter()
                    .filter_map(|c| Some((c.id.as_str(), c.url.as_deref()?)))
                    .filter(|(_, u)| providers.hints(u))
                    .collect();
                (service.as_str(), by_id)
            })
            .collect();
        let channels: Vec<table::ChannelInfo> = self
            .lineup
            .channels
            .iter()
            .map(|c| table::ChannelInfo {
                id: c.id.to_string(),
                name: c.name.to_string(),
                group: c.group.to_string(),
                guide_id: c.guide_id.to_string(),
                source_names: c
                    .sources
                    .iter()
                    .map(|s| s.name.to_string())
                    .filter(|n| *n != c.name)
                    .collect(),
                urls: c
                    .sources
                    .iter()
                    .filter_map(|s| urls.get(s.service.as_ref())?.get(s.channel_id.as_ref()))
                    .map(|u| u.to_string())
                    .collect(),
                pinned: self.pinned.contains(c.id.as_str()),
            })
            .collect();
        let mut table = table::build(
            &channels,
            &catalogues,
            &found,
            &self.decisions,
            Settings::default(),
        );
        // A decision naming a guide that is gone (a service renamed, removed or
        // disabled; an extra guide dropped) is not waiting for a read: it says so,
        // and shows with the low ones.
        for e in &mut table.entries {
            let Some(source) = e.source.as_deref() else {
                continue;
            };
            let decided = matches!(e.state, table::State::Picked | table::State::Confirmed);
            if decided && !self.sources.iter().any(|(name, _)| name == source) {
                e.gone = true;
                e.reason = format!(
                    "{} by an admin as `{}` of guide `{source}`, which is not an enabled service's or an extra guide's now: confirm or pick again",
                    if e.state == table::State::Picked { "picked" } else { "confirmed" },
                    e.guide_id.as_deref().unwrap_or_default(),
                );
            }
        }
        table
    }
}

/// Whether lineup channel `id` shows the programmes a read kept for it: the table
/// says which channels have a guide, and a read planned with an older table (before a
/// rejection, or a guide id set by hand that no guide lists) keeps programmes the
/// channel no longer takes. `/epg.xml`, now/next and the Xtream short EPG agree.
fn takes_programmes(table: &Table, id: &str) -> bool {
    !table
        .get(id)
        .is_some_and(|e| matches!(e.state, table::State::Rejected | table::State::Unmatched))
}

/// The guide of `lineup` from the services' kept guides `good` (in the order and with
/// the priorities of `sources`), the match decisions of `table`, up to `to`.
fn render(
    cfg: &GuideConfig,
    good: &HashMap<String, Arc<ServiceGuide>>,
    table: &Table,
    lineup: &Lineup,
    sources: &[(String, i64)],
    to: i64,
) -> Rendered {
    let rejected = |id: &str| !takes_programmes(table, id);
    let ranked: Vec<Ranked<'_>> = sources
        .iter()
        .filter_map(|(name, priority)| good.get(name).map(|g| (*priority, &**g)))
        .collect();
    let taken =
        |c: &LineupChannel| pick_with_guide(&ranked, &c.id, Some(c)).filter(|_| !rejected(&c.id));
    let shown = |c: &LineupChannel| taken(c).map(|(_, programmes)| programmes);
    // A channel without a logo of its own shows the icon of the guide channel it
    // takes programmes from.
    let icon = |c: &LineupChannel| {
        taken(c)
            .filter(|_| c.logo.is_empty())
            .and_then(|(g, _)| g.icons.get(g.matched_ids.get(c.id.as_str())?))
    };
    let block = cfg.placeholder_length.as_secs() as i64;
    let mut fillers: HashMap<&str, Vec<xmltv::Programme>> = HashMap::new();
    if cfg.placeholders {
        for c in &lineup.channels {
            if shown(c).is_none() {
                let now = chrono::Utc::now().timestamp();
                fillers.insert(&c.id, xmltv::placeholders(&c.name, now - 3600, to, block));
            }
        }
    }
    let out: Vec<OutChannel<'_>> = lineup
        .channels
        .iter()
        .map(|c| OutChannel {
            id: &c.guide_id,
            name: &c.name,
            number: c.number,
            logo: icon(c).map_or(&c.logo, String::as_str),
            programmes: shown(c)
                .or_else(|| fillers.get(c.id.as_str()).map(Vec::as_slice))
                .unwrap_or_default(),
        })
        .collect();
    let programmes = out.iter().map(|c| c.programmes.len()).sum();
    let xml = xmltv::render(&out, cfg.fold_subtitle);
    let mut gz = flate2::write::GzEncoder::new(
        Vec::with_capacity(xml.len() / 6),
        flate2::Compression::fast(),
    );
    let gz = gz
        .write_all(&xml)
        .and_then(|()| gz.finish())
        .unwrap_or_default();
    Rendered::new(
        xml.into(),
        gz.into(),
        out.iter().filter(|c| !c.programmes.is_empty()).count(),
        programmes,
    )
}

/// A service's kept guide with the service's priority (lower first).
type Ranked<'a> = (i64, &'a ServiceGuide);

/// How guide `g`'s read matched lineup channel `c` as `c` is now: as the read said,
/// unless the guide channel it took is not `c`'s guide id. Then not at all (`None`)
/// when the guide lists that id (its read, begun with the change, gives that one: a
/// read would match by it, never by a name or an old id); else, for a match by a
/// guide id a mapping has changed since (which would else keep its old programmes
/// until the next read), by display name if that guide channel carries one of `c`'s
/// names (as a read would match it now).
fn now_by(g: &ServiceGuide, c: &LineupChannel) -> Option<Match> {
    let how = *g.matched_by.get(c.id.as_str())?;
    let id = g.matched_ids.get(c.id.as_str())?;
    if id.eq_ignore_ascii_case(&c.guide_id) {
        return Some(how);
    }
    if g.names_of(&c.guide_id).is_some() {
        return None;
    }
    if how != Match::GuideId {
        return Some(how);
    }
    let theirs = g.names_of(id)?;
    let ours: Vec<&str> = std::iter::once(&*c.name)
        .chain(c.sources.iter().map(|s| &*s.name))
        .map(str::trim)
        .collect();
    if theirs.iter().any(|n| ours.contains(&n.trim())) {
        return Some(Match::ExactName);
    }
    let ours: HashSet<String> = ours.into_iter().map(normalise).collect();
    theirs
        .iter()
        .any(|n| ours.contains(&normalise(n)))
        .then_some(Match::NormalisedName)
}

/// The programmes lineup channel `id` takes from `guides` (in priority order): of
/// those with programmes for it (that still hold for the channel `now`, when known:
/// `now_by`), one that matched it by id first, then the higher priority, then the
/// better name match, then the first.
fn pick<'a>(
    guides: &[Ranked<'a>],
    id: &str,
    now: Option<&LineupChannel>,
) -> Option<&'a [xmltv::Programme]> {
    pick_with_guide(guides, id, now).map(|(_, programmes)| programmes)
}

/// `pick`, with the guide the programmes come from.
fn pick_with_guide<'a>(
    guides: &[Ranked<'a>],
    id: &str,
    now: Option<&LineupChannel>,
) -> Option<(&'a ServiceGuide, &'a [xmltv::Programme])> {
    guides
        .iter()
        .filter_map(|(priority, g)| {
            let programmes = g.programmes.get(id).filter(|p| !p.is_empty())?;
            let how = match now {
                Some(c) => now_by(g, c)?,
                None => g
                    .matched_by
                    .get(id)
                    .copied()
                    .unwrap_or(Match::NormalisedName),
            };
            Some((
                (!how.by_id(), *priority, std::cmp::Reverse(how)),
                (*g, programmes.as_slice()),
            ))
        })
        .min_by_key(|(rank, _)| *rank)
        .map(|(_, taken)| taken)
}

/// The lineup channels (ids, hidden ones included) with a source of `service`.
fn channels_with_source(lineup: &Lineup, service: &str) -> BTreeSet<String> {
    lineup
        .channels
        .iter()
        .chain(lineup.hidden())
        .filter(|c| c.sources.iter().any(|s| s.service == service))
        .map(|c| c.id.to_string())
        .collect()
}

/// The time a refresh keeps programmes of: up to `guide.days` ahead, and back
/// `KEEP_PAST`, or as far as a channel's catch-up archive reaches (players list what
/// can be replayed from the guide). A read keeps the widest window; `trim` then cuts
/// each channel to its own.
struct Window<'a> {
    now: i64,
    to: i64,
    widest: i64,
    /// How far back each channel with catch-up keeps, by lineup channel id.
    past: HashMap<&'a str, i64>,
}

impl<'a> Window<'a> {
    fn new(lineup: &'a Lineup, days: u32) -> Self {
        let now = chrono::Utc::now().timestamp();
        let keep_past = |c: &LineupChannel| KEEP_PAST.max(i64::from(c.catchup_days) * 86_400);
        let all = || lineup.channels.iter().chain(lineup.hidden());
        Self {
            now,
            to: now + i64::from(days) * 86_400,
            widest: all().map(keep_past).max().unwrap_or(KEEP_PAST),
            past: all()
                .filter(|c| c.catchup_days > 0)
                .map(|c| (c.id.as_str(), keep_past(c)))
                .collect(),
        }
    }

    /// Reads a guide with `map` in the widest window, keeping a spare when asked.
    async fn read(
        &self,
        reader: impl AsyncBufRead + Unpin + Send,
        map: &Mapping<'_>,
        spare: bool,
    ) -> Result<ServiceGuide, String> {
        let budget = if spare { SPARE_BUDGET } else { 0 };
        xmltv::read_sparing(reader, map, self.now - self.widest, self.to, budget)
            .await
            .map_err(|e| e.to_string())
    }

    /// Cuts each channel's programmes to its own past.
    fn trim(&self, guide: &mut ServiceGuide) {
        for (id, programmes) in &mut guide.programmes {
            let from = self.now - self.past.get(id.as_str()).copied().unwrap_or(KEEP_PAST);
            programmes.retain(|p| p.stop.unwrap_or(p.start) >= from);
        }
    }
}

/// The words (and the names written as one word) of the names, sources' names and
/// guide ids of the listed lineup channels that guide matching may look for (all but
/// those the last matching found a guide knows: those rarely change): a guide channel
/// none of whose names is made of them is no candidate worth keeping programmes for.
fn spare_words(lineup: &Lineup, last: &Table) -> HashSet<String> {
    let mut words = HashSet::new();
    let open = |c: &&LineupChannel| {
        last.get(&c.id)
            .is_none_or(|e| e.state != table::State::Exact)
    };
    for c in lineup.channels.iter().filter(open) {
        let names = std::iter::once(&c.name).chain(c.sources.iter().map(|s| &s.name));
        let features = names
            .map(|n| features::of_name(n))
            .chain(features::of_tvg_id(&c.guide_id));
        for f in features {
            words.insert(f.compact());
            words.extend(f.words);
        }
    }
    words
}

/// Whether guide channel names `names` (or its id) are made of `words` (see
/// `spare_words`).
fn made_of(words: &HashSet<String>, xml_id: &str, names: &[String]) -> bool {
    names
        .iter()
        .map(|n| features::of_name(n))
        .chain(features::of_tvg_id(xml_id))
        .any(|f| {
            !f.words.is_empty()
                && (words.contains(&f.compact()) || f.words.iter().all(|w| words.contains(w)))
        })
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// A guide's bytes (a URL through `fetch`, a file, inline XML), gunzipped when they
/// are gzip (by content, not name), bounded by `max_bytes`. With `copy_to`, a URL's
/// bytes are also copied there as they are read, by the `Copy` put in `copy`.
async fn open<Fut>(
    source: GuideSource,
    max_bytes: u64,
    copy_to: Option<&Path>,
    copy: &mut Option<Copy>,
    fetch: impl FnOnce(url::Url) -> Fut,
) -> Result<Box<dyn AsyncBufRead + Send + Unpin>, String>
where
    Fut:
        std::future::Future<Output = Result<crate::upstream::Fetched, crate::error::UpstreamError>>,
{
    let raw: Box<dyn AsyncBufRead + Send + Unpin> = match source {
        GuideSource::Url(url) => {
            let fetched = fetch(url).await.map_err(|e| e.to_string())?;
            let body = fetched.body.map_err(std::io::Error::other);
            match copy_to {
                Some(path) => {
                    let prefix = path
                        .file_name()
                        .and_then(|n| n.to_str())
                        .and_then(|n| n.split_once('-'))
                        .map(|(hash, _)| format!("{hash}-"))
                        .unwrap_or_default();
                    let (chunks, started) = Copy::start(path, prefix);
                    *copy = Some(started);
                    let body = body.and_then(move |chunk| {
                        let chunks = chunks.clone();
                        async move {
                            // A writer gone (it failed) leaves the read as it is.
                            let _ = chunks.send(chunk.clone()).await;
                            Ok(chunk)
                        }
                    });
                    Box::new(tokio_util::io::StreamReader::new(Box::pin(body)))
                }
                None => Box::new(tokio_util::io::StreamReader::new(body)),
            }
        }
        GuideSource::File(path) => return open_file(&path, max_bytes).await,
        GuideSource::Inline { xml, .. } => Box::new(std::io::Cursor::new(xml)),
    };
    decompress(raw, max_bytes).await
}

/// How the names of guide `name`'s copies begin (`Guides::copy_path`).
fn copy_prefix(name: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, name.as_bytes());
    format!("{}-", hex(&digest.as_ref()[..12]))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The guide in file `path`, gunzipped when it is gzip, bounded by `max_bytes`.
async fn open_file(
    path: &Path,
    max_bytes: u64,
) -> Result<Box<dyn AsyncBufRead + Send + Unpin>, String> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    decompress(Box::new(BufReader::new(file)), max_bytes).await
}

/// A copy of a URL guide's bytes as fetched (gzip stays gzip), written off the async
/// threads while the read goes on, into a part file that takes the copy's place only
/// when the read worked (`finish`), and then the copies of the same guide from other
/// places go; else (or dropped) the part file is removed and the previous copy stays.
/// A copy that cannot be written (a full disk) is logged and leaves the read alone.
struct Copy {
    keep: Option<tokio::sync::oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<()>,
}

/// Removes the copies beside `kept` whose names begin with `prefix` (the same guide
/// read from another place before), part files of reads in flight aside.
fn forget_other_places(kept: &Path, prefix: &str) {
    let (Some(dir), Some(kept)) = (kept.parent(), kept.file_name()) else {
        return;
    };
    if prefix.is_empty() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let text = name.to_string_lossy();
        if name != kept && text.starts_with(prefix) && text.ends_with(".xmltv") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

impl Copy {
    /// Starts copying to `path`, a copy of the guide whose copies' names begin with
    /// `prefix`: send it the bytes, in order; closing the sender ends the copy.
    fn start(path: &Path, prefix: String) -> (tokio::sync::mpsc::Sender<Bytes>, Copy) {
        static PARTS: AtomicU64 = AtomicU64::new(0);
        let (chunks, mut received) = tokio::sync::mpsc::channel::<Bytes>(64);
        let (keep, kept) = tokio::sync::oneshot::channel::<()>();
        let path = path.to_path_buf();
        let part = path.with_extension(format!(
            "part-{}-{}",
            std::process::id(),
            PARTS.fetch_add(1, Ordering::Relaxed)
        ));
        let done = tokio::task::spawn_blocking(move || {
            // Owner-only, as everything in `state_dir`.
            let create = || {
                if let Some(dir) = path.parent().filter(|d| !d.exists()) {
                    let mut b = std::fs::DirBuilder::new();
                    #[cfg(unix)]
                    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
                    b.recursive(true).create(dir)?;
                }
                crate::store::create_private_file(&part)
                    .map(|f| std::io::BufWriter::with_capacity(1 << 16, f))
            };
            let mut file = create();
            // Every chunk is taken, written or not: the read never waits on a failed copy.
            while let Some(chunk) = received.blocking_recv() {
                if let Ok(f) = &mut file {
                    if let Err(e) = f.write_all(&chunk) {
                        file = Err(e);
                    }
                }
            }
            // Synced (a slow disk's seconds are not the read's: see `finish`) and put
            // in place only for a read that worked.
            let outcome = match kept.blocking_recv() {
                Ok(()) => file
                    .and_then(|f| {
                        f.into_inner()
                            .map_err(std::io::IntoInnerError::into_error)
                            .and_then(|f| f.sync_all())
                    })
                    .and_then(|()| std::fs::rename(&part, &path))
                    .map(|()| forget_other_places(&path, &prefix)),
                Err(_) => Ok(()),
            };
            if let Err(e) = outcome {
                tracing::warn!(copy = %path.display(), error = %e, "cannot keep a copy of the guide");
            }
            let _ = std::fs::remove_file(&part);
        });
        (
            chunks,
            Copy {
                keep: Some(keep),
                done,
            },
        )
    }

    /// Once every byte read is written (the reader must be dropped first), puts the
    /// copy in place when the read `worked`, in the background (the read's result does
    /// not wait for the disk), else removes it before returning.
    async fn finish(mut self, worked: bool) {
        if let Some(keep) = self.keep.take() {
            if worked {
                let _ = keep.send(());
                return;
            }
        }
        let _ = (&mut self.done).await;
    }
}

/// `raw` gunzipped when it is gzip (by content, not name), at most `max` bytes.
async fn decompress(
    mut raw: Box<dyn AsyncBufRead + Send + Unpin>,
    max: u64,
) -> Result<Box<dyn AsyncBufRead + Send + Unpin>, String> {
    let head = raw
        .fill_buf()
        .await
        .map_err(|e| format!("reading the guide: {e}"))?;
    if head.starts_with(&[0x1f, 0x8b]) {
        let mut decoder = GzipDecoder::new(raw);
        decoder.multiple_members(true);
        let capped = Capped::new(decoder, max, true);
        Ok(Box::new(BufReader::new(MarkupGap::new(capped))))
    } else {
        let capped = Capped::new(raw, max, false);
        Ok(Box::new(BufReader::new(MarkupGap::new(capped))))
    }
}

/// Fails a guide read past `cap` bytes with [`xmltv::TooLarge`]. A plain `take` would
/// end the guide there instead, and the read would blame the XML cut in the middle
/// (`tag not closed`, `ended early`) rather than the cap the admin can raise.
struct Capped<R> {
    inner: R,
    /// What the read says when the cap is hit.
    cap: xmltv::TooLarge,
    /// Bytes read so far.
    read: u64,
}

impl<R> Capped<R> {
    fn new(inner: R, cap: u64, decompressed: bool) -> Self {
        Self {
            inner,
            cap: xmltv::TooLarge { cap, decompressed },
            read: 0,
        }
    }
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Capped<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if let std::task::Poll::Ready(Ok(())) = &polled {
            self.read += (buf.filled().len() - before) as u64;
            if self.read > self.cap.cap {
                // An error read nothing (the `AsyncRead` contract).
                buf.set_filled(before);
                return std::task::Poll::Ready(Err(std::io::Error::other(self.cap)));
            }
        }
        polled
    }
}

/// Lineup channels whose guide channels decisions and the matcher assigned in one
/// guide, and the channels whose decisions keep display names from matching them.
struct Plan {
    /// Guide channel id (lowercase) → lineup channel id.
    assigned: BTreeMap<String, String>,
    decided: BTreeSet<String>,
    /// What matching assigned before the restart (`Remembered`), kept for the read
    /// only when the guide is read from the same place (`Plan::at`).
    remembered: Option<Seeds>,
}

impl Plan {
    /// This plan for a read of the guide at `place` (its status's `source`): what
    /// was remembered of another place is no guide to this one.
    fn at(mut self, place: &str) -> Self {
        if self.remembered.as_ref().is_some_and(|r| r.place != place) {
            self.remembered = None;
        }
        self
    }
}

/// The admin's decisions kept in the store, each unreadable one skipped with a
/// warning; an error when the store cannot be read.
fn stored_decisions(
    registry: &Registry,
) -> Result<HashMap<String, Decision>, crate::store::StoreError> {
    Ok(registry
        .store()
        .records(DECISIONS)?
        .into_iter()
        .filter_map(|(channel, value)| match serde_json::from_value(value) {
            Ok(d) => Some((channel, d)),
            Err(e) => {
                tracing::warn!(channel, error = %e, "guide match decision unreadable, ignored");
                None
            }
        })
        .collect())
}

/// Fails a guide read when `GUIDE_MAX_GAP` bytes pass without a `<` or `>`. The XML
/// reader buffers a whole text run or tag, so without this a gzip bomb of zeros (or
/// any markup-free body) would be held in memory up to `GUIDE_MAX_BYTES`.
struct MarkupGap<R> {
    inner: R,
    /// Bytes read since the last `<` or `>`.
    gap: u64,
}

impl<R> MarkupGap<R> {
    fn new(inner: R) -> Self {
        Self { inner, gap: 0 }
    }
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for MarkupGap<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if let std::task::Poll::Ready(Ok(())) = &polled {
            let new = &buf.filled()[before..];
            self.gap = match new.iter().rposition(|&b| b == b'<' || b == b'>') {
                Some(i) => (new.len() - i - 1) as u64,
                None => self.gap + new.len() as u64,
            };
            if self.gap > GUIDE_MAX_GAP {
                // An error read nothing (the `AsyncRead` contract).
                buf.set_filled(before);
                return std::task::Poll::Ready(Err(std::io::Error::other(format!(
                    "more than {} MiB without XML markup (not a guide, or a decompression bomb)",
                    GUIDE_MAX_GAP >> 20
                ))));
            }
        }
        polled
    }
}

/// Which lineup channel (by id) a guide channel is: the tvg-id this service lists for
/// it, then a guide id in the lineup (both `Match::Id`), then a display name as
/// written, then one normalised as the lineup normalises channel names. Hidden
/// channels are mapped too, so that unhiding one shows its programmes without a fetch.
///
/// A display name is no match when the lineup channel's country and the guide
/// channel's are both known and differ: "Kidoodle TV" of a Canadian list is not the
/// US guide's "Kidoodle TV" (`KidoodleTV.us`). The lineup channel's country is what
/// its names, its guide id, this service's tvg-ids for it or its group say (as guide
/// matching reads them); the guide channel's, its id's domain, else a display name's
/// suffix. A name that guide channels of several countries carry matches no lineup
/// channel of unknown country (`ChannelMap::country`): guide matching then lists it.
struct Mapping<'a> {
    /// By lowercase id: the lineup channel this service lists under that tvg-id
    /// (`Match::Id`), else the one of that guide id (`Match::GuideId`).
    by_tvg: HashMap<String, (String, Match)>,
    by_exact_name: HashMap<String, String>,
    by_name: HashMap<String, String>,
    /// Guide channel ids (lowercase) guide matching gave to lineup channels.
    assigned: BTreeMap<String, String>,
    /// By guide channel id (lowercase): what matching gave before the restart.
    remembered: BTreeMap<String, Seed>,
    /// Lineup channels an admin decided about: display names do not match them.
    decided: BTreeSet<String>,
    /// Lineup channels by id, for their country (read only for a name match).
    channels: HashMap<&'a str, &'a LineupChannel>,
    /// This service's tvg-ids by its channel id (also for the country).
    tvg_of: HashMap<&'a str, &'a str>,
    service: &'a str,
    /// With a spare (`sparing`): the lineup's words, which say which unmapped guide
    /// channels' programmes the read keeps besides.
    spare_words: Option<&'a HashSet<String>>,
}

impl<'a> Mapping<'a> {
    fn new(service: &'a str, channels: &'a [Channel], lineup: &'a Lineup, plan: Plan) -> Self {
        let tvg_of: HashMap<&str, &str> = channels
            .iter()
            .filter(|c| !c.tvg_id.trim().is_empty())
            .map(|c| (c.id.as_str(), c.tvg_id.trim()))
            .collect();
        let mut by_tvg: HashMap<String, (String, Match)> = HashMap::new();
        let mut by_exact_name = HashMap::new();
        let mut by_name = HashMap::new();
        let mut by_id = HashMap::new();
        // Listed channels first: they win a name or guide id a hidden one shares.
        for c in lineup.channels.iter().chain(lineup.hidden()) {
            by_id.entry(c.id.as_str()).or_insert(c);
            by_tvg
                .entry(c.guide_id.to_lowercase())
                .or_insert_with(|| (c.id.to_string(), Match::GuideId));
            by_exact_name
                .entry(c.name.trim().to_string())
                .or_insert_with(|| c.id.to_string());
            by_name
                .entry(normalise(&c.name))
                .or_insert_with(|| c.id.to_string());
            for s in c.sources.iter().filter(|s| s.service == service) {
                if let Some(tvg) = tvg_of.get(s.channel_id.as_str()) {
                    // This service's own tvg-id wins over another channel's guide id;
                    // but not a time-shift's that the lineup took from it, its live
                    // channel's (the "+1" never takes the live programmes).
                    let lent =
                        shift_of(&normalise(&s.name)) > 0 && !c.guide_id.eq_ignore_ascii_case(tvg);
                    if !lent {
                        by_tvg.insert(tvg.to_lowercase(), (c.id.to_string(), Match::Id));
                    }
                }
                by_exact_name
                    .entry(s.name.trim().to_string())
                    .or_insert_with(|| c.id.to_string());
                by_name
                    .entry(normalise(&s.name))
                    .or_insert_with(|| c.id.to_string());
            }
        }
        Self {
            by_tvg,
            by_exact_name,
            by_name,
            assigned: plan.assigned,
            remembered: plan.remembered.map(|r| r.channels).unwrap_or_default(),
            decided: plan.decided,
            channels: by_id,
            tvg_of,
            service,
            spare_words: None,
        }
    }

    /// The lineup channel matching gave guide channel `key` (id, lowercase) named
    /// `names` before the restart, when both still go by a name they had then.
    fn remembered(&self, key: &str, names: &[String]) -> Option<&String> {
        let seed = self.remembered.get(key)?;
        let channel = self.channels.get(seed.channel.as_str())?;
        (normalise(&channel.name) == seed.name
            && names
                .iter()
                .any(|n| seed.guide_names.contains(&normalise(n))))
        .then_some(&seed.channel)
    }

    /// Keeps besides the programmes of guide channels made of `words` (`spare_words`).
    fn sparing(mut self, words: Option<&'a HashSet<String>>) -> Self {
        self.spare_words = words;
        self
    }

    /// The country of lineup channel `id`, when known: a name's suffix ("... CA"),
    /// else its guide id's or this service's tvg-id's domain (`KidoodleTV.ca`), else
    /// its group ("CA | Kids").
    fn lineup_country(&self, id: &str) -> Option<String> {
        let c = self.channels.get(id)?;
        let names = std::iter::once(&c.name).chain(c.sources.iter().map(|s| &s.name));
        let tvg_ids = std::iter::once(c.guide_id.as_str()).chain(
            c.sources
                .iter()
                .filter(|s| s.service == self.service)
                .filter_map(|s| self.tvg_of.get(s.channel_id.as_str()).copied()),
        );
        names
            .map(|n| features::of_name(n).country)
            .chain(tvg_ids.map(|t| features::of_tvg_id(t).and_then(|f| f.country)))
            .find_map(|country| country)
            .or_else(|| features::country_of_group(&c.group))
    }
}

/// The country of a guide channel, when known: its id's domain (`KidoodleTV.us`),
/// else a display name's suffix ("Kidoodle TV US").
fn guide_country(xml_id: &str, names: &[String]) -> Option<String> {
    features::of_tvg_id(xml_id)
        .and_then(|f| f.country)
        .or_else(|| names.iter().find_map(|n| features::of_name(n).country))
}

impl ChannelMap for Mapping<'_> {
    fn map(&self, xml_id: &str, names: &[String]) -> Option<(String, Match)> {
        let key = xml_id.trim().to_lowercase();
        let theirs = std::cell::OnceCell::new();
        // A display name matches a channel no admin decided about, of the guide
        // channel's country when both are known.
        let open = |id: &&String| {
            if self.decided.contains(*id) {
                return false;
            }
            let Some(ours) = self.lineup_country(id) else {
                return true;
            };
            theirs
                .get_or_init(|| guide_country(xml_id, names))
                .as_ref()
                .is_none_or(|theirs| *theirs == ours)
        };
        let (id, how) = if let Some((id, how)) = self.by_tvg.get(&key) {
            (id, *how)
        } else if let Some(id) = self.assigned.get(&key) {
            (id, Match::Chosen)
        } else if let Some(id) = self.remembered(&key, names) {
            (id, Match::Chosen)
        } else if let Some(id) = names
            .iter()
            .find_map(|n| self.by_exact_name.get(n.trim()).filter(open))
        {
            (id, Match::ExactName)
        } else {
            let id = names
                .iter()
                .find_map(|n| self.by_name.get(&normalise(n)).filter(open))?;
            (id, Match::NormalisedName)
        };
        Some((id.clone(), how))
    }

    fn country(&self, xml_id: &str, names: &[String]) -> Option<String> {
        guide_country(xml_id, names)
    }

    fn spare(&self, xml_id: &str, names: &[String]) -> bool {
        self.spare_words
            .is_some_and(|words| made_of(words, xml_id, names))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_derived_form_of_the_guide_is_made_once_per_key() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let guide = Rendered::new(Bytes::from_static(b"<tv/>"), Bytes::new(), 0, 0);
        let made = Arc::new(AtomicUsize::new(0));
        let make = |text: &'static str| {
            let made = made.clone();
            move || {
                made.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(50));
                Bytes::from_static(text.as_bytes())
            }
        };
        // Asked at once: one making, shared.
        let (a, b) = tokio::join!(
            guide.derived("one".into(), make("1")),
            guide.derived("one".into(), make("1"))
        );
        assert_eq!(
            (a.unwrap(), b.unwrap()),
            (Bytes::from("1"), Bytes::from("1"))
        );
        assert_eq!(guide.derived("one".into(), make("x")).await.unwrap(), "1");
        assert_eq!(made.load(Ordering::SeqCst), 1);
        assert_eq!(guide.derived("two".into(), make("2")).await.unwrap(), "2");
        assert_eq!(made.load(Ordering::SeqCst), 2);
        // Asked, then given up before it is made: the making goes on and is kept.
        let asked = guide.derived("three".into(), make("3"));
        assert!(tokio::time::timeout(Duration::from_millis(5), asked)
            .await
            .is_err());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(guide.derived("three".into(), make("x")).await.unwrap(), "3");
        assert_eq!(made.load(Ordering::SeqCst), 3);
    }

    /// Maps no guide channel: the read only walks the XML.
    struct NoChannels;
    impl ChannelMap for NoChannels {
        fn map(&self, _: &str, _: &[String]) -> Option<(String, Match)> {
            None
        }
    }

    /// A guide of `xml` read through `open` with a cap of `max` bytes.
    async fn read_capped(xml: Vec<u8>, max: u64) -> Result<ServiceGuide, String> {
        let source = GuideSource::Inline {
            shown: "test".into(),
            xml: Bytes::from(xml),
        };
        let reader = open(source, max, None, &mut None, |_| async {
            unreachable!("an inline guide is not fetched")
        })
        .await?;
        xmltv::read(reader, &NoChannels, 0, i64::MAX)
            .await
            .map_err(|e| e.to_string())
    }

    /// A guide larger than its cap (`max_bytes`, or `GUIDE_MAX_BYTES`) is reported as
    /// that, plain or gzipped, wherever the cap falls (inside a tag, between
    /// programmes): not as the broken XML the cut would make of it.
    #[tokio::test]
    async fn a_guide_over_its_cap_says_so() {
        let mut xml =
            String::from("<tv><channel id=\"a\"><display-name>A</display-name></channel>");
        // Larger than the readers' buffers: the cap is hit at the first read or later.
        for i in 0..2_000 {
            xml.push_str(&format!(
                "<programme start=\"20261124{:02}0000\" channel=\"a\"><title>T{i}</title></programme>",
                i % 24
            ));
        }
        xml.push_str("</tv>");
        let plain = xml.into_bytes();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&plain).expect("writing to a Vec");
        let gzipped = gz.finish().expect("writing to a Vec");
        // Decoded as it is read (another encoding than UTF-8): the cap still says so.
        let mut latin1 = b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>\n".to_vec();
        latin1.extend_from_slice(&plain);
        for (body, len, unpacked) in [
            (&plain, plain.len() as u64, ""),
            (&gzipped, plain.len() as u64, " once decompressed"),
            (&latin1, latin1.len() as u64, ""),
        ] {
            // Exactly the cap: read whole.
            assert!(read_capped(body.clone(), len).await.is_ok());
            for cap in [len - 1, len - 6, len / 2, 70, 10] {
                let err = read_capped(body.clone(), cap).await.unwrap_err();
                assert_eq!(
                    err,
                    format!("the guide is larger than the cap of {cap} bytes{unpacked}")
                );
                assert!(
                    !err.contains("XMLTV") && !err.contains("truncated"),
                    "{err}"
                );
            }
        }
    }

    async fn read_all(data: Vec<u8>) -> std::io::Result<usize> {
        let mut out = Vec::new();
        MarkupGap::new(&data[..]).read_to_end(&mut out).await
    }

    #[tokio::test]
    async fn markup_gap_stops_markup_free_runs_only() {
        let gap = GUIDE_MAX_GAP as usize;
        // Long but markup-rich: any length passes.
        let rich = b"<p>text</p>".repeat(gap / 4);
        assert_eq!(read_all(rich.clone()).await.unwrap(), rich.len());
        // A run of exactly the bound passes; one byte more fails.
        let mut edge = b"<tv>".to_vec();
        edge.extend(vec![b' '; gap]);
        edge.extend_from_slice(b"</tv>");
        assert!(read_all(edge).await.is_ok());
        let err = read_all(vec![0u8; gap + 1]).await.unwrap_err();
        assert!(err.to_string().contains("without XML markup"), "{err}");
    }
}
