//! Persisted runtime state: what a user changed at runtime (services enabled or
//! disabled, priorities, the channel mapping), the stable slug and number of every
//! lineup channel, the tuner identity, viewer accounts made through the API, and the
//! generic records and per-namespace ids of other features.
//!
//! Two backends keep it behind one trait (`Backend`): SQLite (`sqlite`, the embedded
//! default, one instance) and PostgreSQL (`postgres`, `[server] state =
//! "postgres://..."`, shared by every instance pointed at the same database). Either
//! way a change is acknowledged only after its transaction committed. The config file
//! is the user's: this module never touches it.
//!
//! Reads of services, identities and mappings come from an in-memory mirror loaded at
//! open. With SQLite the mirror is the whole truth (one process owns the file). With
//! PostgreSQL other instances write too: number assignment re-reads what they added
//! inside one locked transaction (so two instances that meet a new channel at once give
//! it one number), and every write announces itself (LISTEN/NOTIFY); each instance then
//! reloads the changed part of its mirror and tells its subscribers (`subscribe`), which
//! apply it as they apply a local change.
//!
//! `state_dir` holds secrets (the proxy key, the tuner's DeviceAuth): it is created
//! readable by its owner only (0700, `create_private_dir`), and one that group or
//! others can open is reported at start (`loose_permissions`), never changed: the
//! directory is the user's.

mod lock;
mod postgres;
mod sqlite;

pub use lock::{Holder, StateLock, LOCK_FILE};

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::model::ChannelMapping;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL refused or could not be reached (the message never holds the password).
    #[error("state store (PostgreSQL): {0}")]
    Postgres(String),
    /// PostgreSQL took the call but did not answer in time (a hung server, a network
    /// that drops packets): a change may still be made once it answers.
    #[error("state store (PostgreSQL): no answer within {} s", .0.as_secs())]
    NoAnswer(std::time::Duration),
    #[error("state store: {0}")]
    Io(#[from] std::io::Error),
    #[error("state store: background task failed: {0}")]
    Join(String),
    /// `[server] state` names no backend this build knows.
    #[error("server.state: {0}")]
    Config(String),
    /// A file or folder of the store that cannot be used: its path and what to do.
    #[error("state store {path}: {message}")]
    Path { path: String, message: String },
    /// The SQLite file at this path was deleted or replaced while freesky runs: a
    /// change written now would be lost at the next start, so none is.
    #[error(
        "state store {0}: was deleted or replaced while freesky runs: a change made now would \
         be lost at the next start; put the state_dir back (or restore a backup) and restart \
         freesky"
    )]
    Gone(String),
    /// A change refused because of what is stored (a channel number already in use);
    /// the caller's fault, nothing was written.
    #[error("{0}")]
    Rejected(String),
    /// Other instances kept changing the same row: nothing was written; trying again
    /// is right.
    #[error("{0}")]
    Contended(String),
}

impl StoreError {
    /// A write refused for want of room (the disk or its quota is full).
    pub fn is_out_of_room(&self) -> bool {
        match self {
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => {
                f.code == rusqlite::ErrorCode::DiskFull
            }
            StoreError::Io(e) => matches!(
                e.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            ),
            _ => false,
        }
    }

    /// The error `e` about the store's file or folder `path`.
    pub(crate) fn at(path: &str, e: impl std::fmt::Display) -> Self {
        StoreError::Path {
            path: path.to_string(),
            message: e.to_string(),
        }
    }
}

/// How often a mapping change is made again on the row another instance wrote first.
const MAPPING_TRIES: usize = 5;
/// Reads of another instance's change made again at most when later updates keep
/// being taken in meanwhile (`Store::apply`).
const RELOAD_TRIES: usize = 5;

/// What to do with a damaged database file.
const MOVE_IT_AWAY: &str = "move it away (with any freesky.db-wal and freesky.db-shm beside it) \
     to start with an empty state, or restore a backup";

/// The error of `state_dir` `dir` that cannot be made or used as a folder.
pub(crate) fn dir_error(dir: &Path, e: std::io::Error) -> StoreError {
    // The file in the way: the folder itself, or what exists nearest above it.
    let in_the_way = dir
        .ancestors()
        .find(|a| a.exists())
        .filter(|a| !a.is_dir() && *a != dir);
    let message = match (e.kind(), in_the_way) {
        (std::io::ErrorKind::AlreadyExists | std::io::ErrorKind::NotADirectory, Some(file)) => {
            format!(
                "cannot be made: {} is a file, not a folder; set server.state_dir to a folder, \
                 or move that file away",
                file.display()
            )
        }
        (std::io::ErrorKind::AlreadyExists | std::io::ErrorKind::NotADirectory, None) => {
            "exists and is not a folder; set server.state_dir to a folder, or move this file away"
                .to_string()
        }
        (_, _) => format!(
            "cannot make or use this folder ({e}); server.state_dir must be a folder the user \
             running freesky can write"
        ),
    };
    StoreError::at(&dir.display().to_string(), message)
}

/// A failed open of the SQLite store `path` in `dir` as one line: the file (or folder),
/// what is wrong with it and what to do; never the same message twice (the error has
/// no source for a report to repeat).
fn open_error(dir: &Path, path: &Path, e: StoreError) -> StoreError {
    use rusqlite::ErrorCode;
    let at = |message: String| StoreError::at(&path.display().to_string(), message);
    match e {
        StoreError::Sqlite(rusqlite::Error::SqliteFailure(f, msg)) => {
            let what = match f.code {
                // rusqlite adds the path, which the line names already.
                ErrorCode::CannotOpen => "unable to open database file".to_string(),
                _ => msg.unwrap_or_else(|| f.to_string()),
            };
            match f.code {
                ErrorCode::NotADatabase => {
                    at(format!("file is not a database (damaged?); {MOVE_IT_AWAY}"))
                }
                ErrorCode::DatabaseCorrupt => {
                    at(format!("the database is damaged ({what}); {MOVE_IT_AWAY}"))
                }
                ErrorCode::CannotOpen | ErrorCode::PermissionDenied | ErrorCode::ReadOnly => {
                    at(format!(
                        "cannot open it for writing ({what}): it must be a file the user running \
                         freesky can read and write, in a folder ({}) it can write",
                        dir.display()
                    ))
                }
                ErrorCode::DiskFull => at(format!("{what}; free some space on its disk")),
                _ => at(what),
            }
        }
        StoreError::Sqlite(other) => at(other.to_string()),
        StoreError::Io(io) => at(io.to_string()),
        other => other,
    }
}

/// True for a slug ending in `-<digits>`: the form a slug made unique takes.
fn ends_with_number(slug: &str) -> bool {
    slug.rsplit_once('-')
        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Creates `dir` (and missing parents) readable by its owner only (0700 on Unix).
/// Returns whether it was created; an existing directory is left as it is.
pub fn create_private_dir(dir: &Path) -> std::io::Result<bool> {
    if dir.is_dir() {
        return Ok(false);
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)?;
    Ok(true)
}

/// Creates the empty file `path` for writing, readable by its owner only (0600 on
/// Unix); fails with `AlreadyExists` when it exists.
pub fn create_private_file(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

/// The permission bits of `path` (Unix; `None` elsewhere or when unreadable).
pub fn mode_of(path: &Path) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path)
            .ok()
            .map(|m| m.permissions().mode() & 0o777)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// The warning for a secret-holding `path` whose permission bits `mode` let group or
/// others in, naming the file and the fix (`chmod {private:o}`); `None` when only the
/// owner has access.
pub fn loose_permissions(path: &Path, mode: u32, private: u32) -> Option<String> {
    loose_permissions_of(path, mode, private, "the key that signs every stream link")
}

/// `loose_permissions` for a file or folder that holds `what`.
pub fn loose_permissions_of(path: &Path, mode: u32, private: u32, what: &str) -> Option<String> {
    (mode & 0o077 != 0).then(|| {
        let path = path.display();
        format!(
            "{path} is open to group or others (mode {:03o}) but holds secrets ({what}): run \
             `chmod {private:o} {path}`",
            mode & 0o777
        )
    })
}

/// A runtime override of one service's config (`None`: the config decides).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ServiceOverride {
    pub enabled: Option<bool>,
    pub priority: Option<i64>,
}

/// The persisted identity of a lineup channel.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelIdentity {
    pub slug: String,
    pub number: u32,
}

/// A viewer account made through the admin API, as stored (the password only as its hash).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredUser {
    pub name: String,
    pub hash: String,
    pub max_connections: u32,
    pub expires: Option<String>,
    pub groups: Vec<String>,
    pub services: Vec<String>,
    pub enabled: bool,
    pub created_at: i64,
}

/// What another instance changed in the shared store; the mirror already holds it
/// when subscribers hear of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A service's enabled flag or priority.
    Services,
    /// New channel identities.
    Identities,
    /// A channel's mapping.
    Mappings,
    /// Viewer accounts.
    Users,
    /// Generic records or ids.
    Records,
}

impl Change {
    const ALL: [Change; 5] = [
        Change::Services,
        Change::Identities,
        Change::Mappings,
        Change::Users,
        Change::Records,
    ];

    fn name(self) -> &'static str {
        match self {
            Change::Services => "services",
            Change::Identities => "identities",
            Change::Mappings => "mappings",
            Change::Users => "users",
            Change::Records => "records",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == s)
    }
}

/// A merge key, the slug it gets and its number.
pub(crate) type IdentityRow = (String, String, u32);

/// What a merged channel asks of the store: the identity of its merge key, and, when
/// the key is new, the slug it would like (made unique) and the number its upstream
/// gives it (`tvg-chno`, an Xtream panel's `num`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub key: String,
    pub slug: String,
    pub number: Option<u32>,
}

impl Wanted {
    /// A key with no upstream number.
    pub fn new(key: impl Into<String>, slug: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            slug: slug.into(),
            number: None,
        }
    }
}

/// A `channel_mapping` row as stored: slug, name, number, group, hidden, tvg-id, logo,
/// pinned sources (JSON), station id.
pub(crate) type MappingRow = (
    String,
    Option<String>,
    Option<i64>,
    Option<String>,
    bool,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// Every row of a store, table by table, as stored: what `freesky copy-state` moves
/// from SQLite into PostgreSQL.
#[derive(Default)]
pub(crate) struct Dump {
    /// name, enabled, priority
    pub services: Vec<(String, Option<bool>, Option<i64>)>,
    pub settings: Vec<(String, String)>,
    pub identities: Vec<(String, String, i64)>,
    pub mappings: Vec<MappingRow>,
    pub users: Vec<StoredUser>,
    /// ns, key, value
    pub records: Vec<(String, String, String)>,
    /// ns, key, id
    pub record_ids: Vec<(String, String, i64)>,
}

/// What `Store::copy_sqlite_to_postgres` copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    pub channels: usize,
    pub mappings: usize,
    pub services: usize,
    pub accounts: usize,
    pub settings: usize,
    pub records: usize,
    pub ids: usize,
}

impl std::fmt::Display for Copied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} channel ids and numbers, {} channel mappings, {} service switches, {} viewer accounts, \
             {} settings, {} other records (guide-match decisions, moved tvg-ids, kept guide ids), {} movie and series ids",
            self.channels,
            self.mappings,
            self.services,
            self.accounts,
            self.settings,
            self.records,
            self.ids
        )
    }
}

/// One way of keeping the state. Every write is durable when it returns.
#[async_trait::async_trait]
pub(crate) trait Backend: Send + Sync + 'static {
    /// Whether calls block the calling thread (an embedded database): the store then
    /// runs them on the blocking pool, never on the async runtime.
    fn blocking(&self) -> bool;
    async fn services(&self) -> Result<HashMap<String, ServiceOverride>, StoreError>;
    /// Identities whose number is above `after` (0: all).
    async fn identities_after(&self, after: u32) -> Result<Vec<IdentityRow>, StoreError>;
    async fn mappings(&self) -> Result<HashMap<String, ChannelMapping>, StoreError>;
    async fn setting_or_init(&self, key: &str, init: String) -> Result<String, StoreError>;
    async fn set_enabled(&self, name: &str, enabled: Option<bool>) -> Result<(), StoreError>;
    async fn set_priority(&self, name: &str, priority: Option<i64>) -> Result<(), StoreError>;
    /// Gives `keys` unknown to `mirror` an identity (`plan`) and persists them in one
    /// transaction; returns the new rows (the caller adds them to the mirror). Whatever
    /// other writers assigned meanwhile is in the mirror first.
    async fn assign(
        &self,
        keys: &[Wanted],
        mirror: &Mutex<Mirror>,
    ) -> Result<Vec<IdentityRow>, StoreError>;
    /// Writes the mapping of `slug` (an empty one deletes its row).
    async fn put_mapping(&self, slug: &str, row: &ChannelMapping) -> Result<(), StoreError>;
    /// `put_mapping` only while the stored mapping is `expected` (none stored reads as
    /// the default); `false`, nothing written, when another writer got there first.
    /// One process writing alone (SQLite) has nobody to meet: the default writes.
    async fn put_mapping_if(
        &self,
        slug: &str,
        _expected: &ChannelMapping,
        row: &ChannelMapping,
    ) -> Result<bool, StoreError> {
        self.put_mapping(slug, row).await.map(|()| true)
    }
    /// The mapping of `slug` as stored now (the default when none is).
    async fn mapping(&self, slug: &str) -> Result<ChannelMapping, StoreError> {
        Ok(self.mappings().await?.remove(slug).unwrap_or_default())
    }
    async fn users(&self) -> Result<Vec<StoredUser>, StoreError>;
    async fn put_user(&self, u: &StoredUser) -> Result<(), StoreError>;
    /// `put_user` only while the stored account of that name is `expected` (`None`:
    /// none is); `false`, nothing written, when another writer got there first. The
    /// default (one process writing alone) checks only that a new account is new.
    async fn put_user_if(
        &self,
        expected: Option<&StoredUser>,
        u: &StoredUser,
    ) -> Result<bool, StoreError> {
        if expected.is_none() && self.users().await?.iter().any(|o| o.name == u.name) {
            return Ok(false);
        }
        self.put_user(u).await.map(|()| true)
    }
    async fn delete_user(&self, name: &str) -> Result<(), StoreError>;
    async fn records(&self, ns: &str) -> Result<Vec<(String, String)>, StoreError>;
    async fn put_record(&self, ns: &str, key: &str, value: &str) -> Result<(), StoreError>;
    /// `put_record` of every (key, value) of `put` and `delete_record` of every key of
    /// `delete` (none of `put`'s), in one transaction.
    async fn write_records(
        &self,
        ns: &str,
        put: &[(String, String)],
        delete: &[String],
    ) -> Result<(), StoreError>;
    async fn delete_record(&self, ns: &str, key: &str) -> Result<(), StoreError>;
    async fn ids(&self, ns: &str, keys: &[String]) -> Result<Vec<u64>, StoreError>;
    /// Whether the backend answers now (`/ready`).
    async fn ping(&self) -> Result<(), StoreError>;
}

#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    /// Where the database lives; `None` for an in-memory or PostgreSQL store.
    path: Option<PathBuf>,
    /// Opened beside the server that owns the file (`open_display_only`): new channel
    /// identities live in the mirror only, and the database is opened read-only.
    display_only: bool,
    /// Channels numbered so, in the mirror only.
    numbered_for_display: std::sync::atomic::AtomicUsize,
    backend: Arc<dyn Backend>,
    mirror: Mutex<Mirror>,
    /// Serialises identity assignment so two lineup builds never give one key two numbers.
    assign: tokio::sync::Mutex<()>,
    /// Serialises a service's enabled flag and priority writes with their mirror copy.
    service_writes: tokio::sync::Mutex<()>,
    /// Changes other instances made, after the mirror took them in (and this
    /// process's own account writes: `users_changed_here`).
    changes: tokio::sync::broadcast::Sender<Change>,
    /// The task following other instances' changes (PostgreSQL); ends with the store.
    follower: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self.follower.get_mut().ok().and_then(Option::take) {
            task.abort();
        }
    }
}

/// The in-memory copy of what every request reads.
#[derive(Default)]
pub(crate) struct Mirror {
    services: HashMap<String, ServiceOverride>,
    /// merge key -> identity
    channels: HashMap<String, ChannelIdentity>,
    /// slugs in use, to keep them unique
    slugs: HashSet<String>,
    next_number: u32,
    /// slug -> the user's overrides (only channels that have some), kept when the
    /// channel leaves the upstream lists so they apply again when it comes back.
    mappings: HashMap<String, ChannelMapping>,
    /// Tickets of the updates of `services` and `mappings` (`Mirror::ticket`): each
    /// read of the database, or write of this instance, takes one as it begins, and
    /// a part takes in a read only when nothing with a later ticket was taken in
    /// since (else the read may predate it: read again), so neither this instance's
    /// own write nor a later row another instance wrote is put back by an older read.
    tickets: u64,
    services_at: u64,
    mappings_at: u64,
}

impl Mirror {
    /// The next ticket (see `tickets`).
    fn ticket(&mut self) -> u64 {
        self.tickets += 1;
        self.tickets
    }

    /// Takes in a stored identity (loaded, or assigned by another instance).
    fn learn(&mut self, key: String, slug: String, number: u32) {
        self.next_number = self.next_number.max(number.saturating_add(1));
        self.slugs.insert(slug.clone());
        self.channels.insert(key, ChannelIdentity { slug, number });
    }

    /// The highest number assigned so far (0: none).
    fn last_number(&self) -> u32 {
        self.next_number.saturating_sub(1)
    }

    /// Gives each key of `keys` that has no identity yet one: the slug is `wanted` made
    /// unique; the number is its upstream's when that is free, else the next free one
    /// (free: no mapping gave it to another channel, not in `taken`, and above every
    /// number given before, so a number once given is never given again and each
    /// batch's numbers are above every earlier one's, which is how other instances
    /// learn them). Slugs and numbers are reserved in the mirror; the identities
    /// themselves are added once persisted.
    fn plan(&mut self, keys: &[Wanted], taken: &HashSet<u32>) -> Vec<IdentityRow> {
        let mut blocked: HashSet<u32> = self.mappings.values().filter_map(|x| x.number).collect();
        blocked.extend(taken);
        // Keys assigned in this call, and the next suffix to try per wanted slug: a
        // first start lists every channel as new (200,000 of them with a big
        // provider), so neither may be a scan of what came before.
        let mut seen: HashSet<&str> = HashSet::new();
        let mut suffixes: HashMap<String, u32> = HashMap::new();
        let mut fresh: Vec<(&Wanted, String)> = Vec::new();
        for w in keys {
            if self.channels.contains_key(&w.key) || !seen.insert(w.key.as_str()) {
                continue;
            }
            let slug = crate::lineup::unique_slug(&w.slug, &mut self.slugs, &mut suffixes);
            fresh.push((w, slug));
        }
        // Upstream numbers first, so that a channel without one listed earlier does not
        // take the number a later one brings.
        let floor = self.next_number.max(1);
        let upstream: Vec<Option<u32>> = fresh
            .iter()
            .map(|(w, _)| {
                w.number
                    .filter(|&n| n >= floor && n <= crate::model::MAX_UPSTREAM_NUMBER)
                    .filter(|&n| blocked.insert(n))
            })
            .collect();
        let mut next = floor;
        let mut last = self.next_number.saturating_sub(1);
        let rows: Vec<IdentityRow> = fresh
            .into_iter()
            .zip(upstream)
            .map(|((w, slug), upstream)| {
                let number = upstream.unwrap_or_else(|| {
                    while blocked.contains(&next) {
                        next += 1;
                    }
                    next += 1;
                    next - 1
                });
                last = last.max(number);
                (w.key.clone(), slug, number)
            })
            .collect();
        self.next_number = last + 1;
        rows
    }

    /// Gives back what `plan` reserved for rows that were not persisted: their slugs,
    /// and their numbers (the next free number is again `next_before`, the one before
    /// `plan`, unless an identity learnt meanwhile is above it), so a write that failed
    /// (a full disk) uses up no number.
    fn unreserve(&mut self, rows: &[IdentityRow], next_before: u32) {
        for (_, s, _) in rows {
            self.slugs.remove(s);
        }
        let known = self.channels.values().map(|c| c.number).max().unwrap_or(0);
        self.next_number = next_before.max(known.saturating_add(1));
    }
}

/// The most a call to a shared store (PostgreSQL) is waited for: a server that hangs,
/// rather than refusing, must not leave an admin call without an answer.
pub const STORE_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// `f` (a read), or [`StoreError::NoAnswer`] once [`STORE_WAIT`] has passed.
async fn answered<T>(f: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
    tokio::time::timeout(STORE_WAIT, f)
        .await
        .unwrap_or(Err(StoreError::NoAnswer(STORE_WAIT)))
}

/// Runs `f` to completion on this thread, for the synchronous reads of a backend
/// that does not block (PostgreSQL): inside a multi-threaded runtime the worker lets
/// its other tasks move first; elsewhere a helper thread runs it on a runtime of its own.
fn wait<F>(f: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| h.block_on(f))
        }
        _ => std::thread::scope(|s| {
            s.spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a current-thread runtime always builds")
                    .block_on(f)
            })
            .join()
            .expect("the store's helper thread does not panic")
        }),
    }
}

/// Whether `[server] state` names the SQLite store (`"sqlite"` or empty), which one
/// process owns (`StateLock`).
pub fn uses_sqlite(state: &str) -> bool {
    matches!(state.trim(), "" | "sqlite")
}

/// Whether `[server] state` names a backend: `"sqlite"` (or empty), or a PostgreSQL
/// URL that parses. The reason names no part of the URL (it may hold a password).
pub fn check_state(state: &str) -> Result<(), String> {
    let state = state.trim();
    if state.is_empty() || state == "sqlite" {
        return Ok(());
    }
    if !(state.starts_with("postgres://") || state.starts_with("postgresql://")) {
        return Err("expected \"sqlite\" or a postgres:// URL".into());
    }
    state
        .parse::<tokio_postgres::Config>()
        .map(drop)
        .map_err(|e| {
            format!(
                "not a PostgreSQL URL: {e} (a password or user holding @ : / ? # % is written \
                 percent-encoded: @ as %40, # as %23, / as %2F)"
            )
        })
}

impl Store {
    /// The store `[server] state` names: `"sqlite"` (or empty) for `state_dir/freesky.db`,
    /// a `postgres://` / `postgresql://` URL for a database shared by several instances.
    pub fn open_configured(state: &str, dir: &Path) -> Result<Self, StoreError> {
        check_state(state).map_err(StoreError::Config)?;
        match state.trim() {
            "" | "sqlite" => Self::open(dir),
            url => {
                let local = dir.join("freesky.db");
                if local.exists() {
                    tracing::warn!(
                        file = %local.display(),
                        "state_dir holds a SQLite store that server.state (PostgreSQL) does not use: \
                         its channel numbers, mappings, accounts and tuner identity are not copied \
                         (`freesky copy-state` copies it; once copied, move it out of state_dir)"
                    );
                }
                Self::postgres(url)
            }
        }
    }

    /// Opens (creating) `dir/freesky.db`; creates `dir` owner-only when it is new.
    ///
    /// Each error is one line naming the file or folder and what to do (`open_error`).
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join("freesky.db");
        Self::open_at(dir, &path).map_err(|e| open_error(dir, &path, e))
    }

    fn open_at(dir: &Path, path: &Path) -> Result<Self, StoreError> {
        // An existing folder open to group or others is the config check's to say
        // (`server.state_dir`, a warning logged at each start and reload).
        create_private_dir(dir).map_err(|e| dir_error(dir, e))?;
        // Viewer accounts live here: the file is made owner-only before SQLite opens
        // it (its journal and WAL files take the same mode), whatever the umask.
        let created = match create_private_file(path) {
            Ok(_) => true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let holds = "viewer accounts";
                if let Some(w) =
                    mode_of(path).and_then(|m| loose_permissions_of(path, m, 0o600, holds))
                {
                    tracing::warn!("{w}");
                }
                false
            }
            Err(e) => return Err(e.into()),
        };
        let backend = sqlite::Sqlite::open(path)?;
        let store = Self::init(Arc::new(backend), Some(path.to_path_buf()), false)?;
        if created {
            // Worth noticing when it was not expected: a lost or moved state_dir means
            // new channel numbers, a new tuner identity, no API-made accounts.
            tracing::info!(file = %path.display(), "created a new state store at {}", path.display());
        }
        Ok(store)
    }

    /// How many channels a display-only store (`open_display_only`) has numbered in
    /// memory only: numbers the server does not know and will not keep.
    pub fn numbered_for_display(&self) -> usize {
        self.inner
            .numbered_for_display
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether this store was opened beside the server that owns it
    /// (`open_display_only`): nothing is written into its `state_dir`.
    pub fn display_only(&self) -> bool {
        self.inner.display_only
    }

    /// The SQLite store of `dir` for a one-shot command while a server owns it (holds
    /// `StateLock`): read-only, and the channels it has never seen get a slug and a
    /// number in memory only, for display (the server gives them theirs for good).
    pub fn open_display_only(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join("freesky.db");
        sqlite::Sqlite::open_read_only(&path)
            .and_then(|backend| Self::init(Arc::new(backend), Some(path.clone()), true))
            .map_err(|e| open_error(dir, &path, e))
    }

    /// A store that forgets everything when dropped.
    pub fn in_memory() -> Self {
        let backend = sqlite::Sqlite::in_memory();
        Self::init(Arc::new(backend), None, false)
            .expect("the schema applies to an empty in-memory database")
    }

    /// Connects to the PostgreSQL database at `url` (migrating its schema), follows the
    /// changes other instances make, then loads the mirror (in that order, so no change
    /// falls between the two). Must run inside tokio's multi-threaded runtime: the
    /// follower is a task of it, and opening waits for it to listen.
    /// Copies the SQLite store of `dir` (`dir/freesky.db`, read only) into the
    /// PostgreSQL database at `url`, which must hold no freesky state yet (its schema
    /// is made or upgraded first): every table in one transaction. For moving a
    /// household's state to a shared database (`freesky copy-state`).
    pub async fn copy_sqlite_to_postgres(dir: &Path, url: &str) -> Result<Copied, StoreError> {
        let path = dir.join("freesky.db");
        if !path.is_file() {
            return Err(StoreError::Config(format!(
                "no SQLite store at {}: nothing to copy",
                path.display()
            )));
        }
        let dump =
            tokio::task::spawn_blocking(move || sqlite::Sqlite::open_read_only(&path)?.dump())
                .await
                .map_err(|e| StoreError::Config(format!("reading the SQLite store: {e}")))??;
        let copied = Copied {
            channels: dump.identities.len(),
            mappings: dump.mappings.len(),
            services: dump.services.len(),
            accounts: dump.users.len(),
            settings: dump.settings.len(),
            records: dump.records.len(),
            ids: dump.record_ids.len(),
        };
        let (pg, _listen) = postgres::Postgres::connect(url).await?;
        pg.load(&dump).await?;
        Ok(copied)
    }

    pub fn postgres(url: &str) -> Result<Self, StoreError> {
        use tokio::runtime::{Handle, RuntimeFlavor};
        let handle = Handle::try_current()
            .ok()
            .filter(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread)
            .ok_or_else(|| {
                StoreError::Config(
                    "the PostgreSQL store needs tokio's multi-threaded runtime".into(),
                )
            })?;
        let (backend, listen) = wait(postgres::Postgres::connect(url))?;
        // Filled once the store exists; changes heard before are in what it loads.
        let target: Arc<std::sync::OnceLock<std::sync::Weak<Inner>>> = Arc::default();
        let (listening, heard) = tokio::sync::oneshot::channel();
        let task = handle.spawn(postgres::follow(listen, listening, {
            let target = target.clone();
            move |change| {
                let inner = target.get().and_then(std::sync::Weak::upgrade);
                async move {
                    if let Some(inner) = inner {
                        Store { inner }.apply(change).await;
                    }
                }
            }
        }));
        let started =
            wait(async { tokio::time::timeout(std::time::Duration::from_secs(10), heard).await });
        if !matches!(started, Ok(Ok(()))) {
            task.abort();
            return Err(StoreError::Postgres(
                "cannot LISTEN for other instances' changes".into(),
            ));
        }
        let store = Self::init(Arc::new(backend), None, false)?;
        let _ = target.set(Arc::downgrade(&store.inner));
        *store
            .inner
            .follower
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(task);
        Ok(store)
    }

    fn init(
        backend: Arc<dyn Backend>,
        path: Option<PathBuf>,
        display_only: bool,
    ) -> Result<Self, StoreError> {
        let load = {
            let b = backend.clone();
            async move {
                let services = b.services().await?;
                let identities = b.identities_after(0).await?;
                let mappings = b.mappings().await?;
                Ok::<_, StoreError>((services, identities, mappings))
            }
        };
        let (services, identities, mappings) = if backend.blocking() {
            futures::executor::block_on(load)?
        } else {
            wait(load)?
        };
        let mut mirror = Mirror {
            next_number: 1,
            services,
            mappings,
            ..Default::default()
        };
        for (key, slug, number) in identities {
            mirror.learn(key, slug, number);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                display_only,
                numbered_for_display: Default::default(),
                backend,
                mirror: Mutex::new(mirror),
                assign: tokio::sync::Mutex::new(()),
                service_writes: tokio::sync::Mutex::new(()),
                changes: tokio::sync::broadcast::channel(64).0,
                follower: Mutex::new(None),
            }),
        })
    }

    /// Takes in what another instance changed, then tells the subscribers. `false`
    /// when the part could not be read again (the follower retries it).
    async fn apply(&self, change: Change) -> bool {
        let b = self.inner.backend.clone();
        let loaded = match change {
            Change::Services => self.reload_services().await,
            Change::Mappings => {
                // Read again when a later update was taken in meanwhile (this
                // instance's own write: the rows read may predate it, and no notice
                // of its own would bring it back).
                let mut result = Ok(());
                for _ in 0..RELOAD_TRIES {
                    let t = self.mirror().ticket();
                    match b.mappings().await {
                        Ok(rows) => {
                            let mut m = self.mirror();
                            if m.mappings_at < t {
                                m.mappings = rows;
                                m.mappings_at = t;
                                break;
                            }
                        }
                        Err(e) => {
                            result = Err(e);
                            break;
                        }
                    }
                }
                result
            }
            Change::Identities => {
                let after = self.mirror().last_number();
                b.identities_after(after).await.map(|rows| {
                    let mut m = self.mirror();
                    for (key, slug, number) in rows {
                        m.learn(key, slug, number);
                    }
                })
            }
            // Read from the database on each use: nothing mirrored.
            Change::Users | Change::Records => Ok(()),
        };
        if let Err(e) = loaded {
            tracing::warn!(error = %e, part = change.name(), "cannot reload a change another instance made");
            return false;
        }
        tracing::debug!(part = change.name(), "change from another instance applied");
        let _ = self.inner.changes.send(change);
        true
    }

    /// The services' rows read again into the mirror, as `apply` reads the mappings:
    /// again when a later update was taken in meanwhile.
    async fn reload_services(&self) -> Result<(), StoreError> {
        let b = self.inner.backend.clone();
        for _ in 0..RELOAD_TRIES {
            let t = self.mirror().ticket();
            let rows = b.services().await?;
            let mut m = self.mirror();
            if m.services_at < t {
                m.services = rows;
                m.services_at = t;
                break;
            }
        }
        Ok(())
    }

    /// The changes other instances make (PostgreSQL), each heard once the mirror
    /// holds it. A lagging receiver misses some: it should then assume every part changed.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Change> {
        self.inner.changes.subscribe()
    }

    /// Whether the database answers now (always, for SQLite).
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.run(|b| async move { b.ping().await }).await
    }

    /// Whether this store is shared with other instances (PostgreSQL).
    pub fn is_shared(&self) -> bool {
        !self.inner.backend.blocking()
    }

    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    /// Runs `f` on the backend: on the blocking pool for an embedded database,
    /// awaited in place otherwise.
    async fn run<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(Arc<dyn Backend>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
        T: Send + 'static,
    {
        let b = self.inner.backend.clone();
        if b.blocking() {
            tokio::task::spawn_blocking(move || futures::executor::block_on(f(b)))
                .await
                .map_err(|e| StoreError::Join(e.to_string()))?
        } else {
            f(b).await
        }
    }

    /// Runs `op` (a whole operation: its store calls and what it takes into the
    /// mirror) to its end in a task of its own; with a shared store the caller waits
    /// for it at most [`STORE_WAIT`] ([`StoreError::NoAnswer`]). Cut off halfway, a
    /// numbering would leave its slugs and numbers reserved, or a write that committed
    /// untaken into this instance's copy (it skips its own notices): ended in its task,
    /// it is either taken in or rolled back and released, whoever waits.
    async fn detached<T, Fut>(&self, op: impl FnOnce(Store) -> Fut) -> Result<T, StoreError>
    where
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
        T: Send + 'static,
    {
        let fut = op(self.clone());
        if !self.is_shared() {
            return fut.await;
        }
        match tokio::time::timeout(STORE_WAIT, tokio::spawn(fut)).await {
            Ok(Ok(done)) => done,
            Ok(Err(e)) => Err(StoreError::Join(e.to_string())),
            Err(_) => Err(StoreError::NoAnswer(STORE_WAIT)),
        }
    }

    /// `run` for the synchronous parts of the API (reads, and settings made once at a
    /// start): with a shared store, at most [`STORE_WAIT`].
    fn run_sync<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(Arc<dyn Backend>) -> Fut + Send,
        Fut: Future<Output = Result<T, StoreError>> + Send,
        T: Send,
    {
        let b = self.inner.backend.clone();
        if b.blocking() {
            futures::executor::block_on(f(b))
        } else {
            wait(answered(f(b)))
        }
    }

    /// The value of setting `key`, set to `init()` the first time and never changed
    /// after (identities such as the tuner's DeviceID; with a shared store the first
    /// instance's value wins). Durable before it returns.
    pub fn setting_or_init(
        &self,
        key: &str,
        init: impl FnOnce() -> String,
    ) -> Result<String, StoreError> {
        let (key, init) = (key.to_string(), init());
        self.run_sync(move |b| async move { b.setting_or_init(&key, init).await })
    }

    pub fn service_override(&self, name: &str) -> ServiceOverride {
        self.mirror()
            .services
            .get(name)
            .copied()
            .unwrap_or_default()
    }

    /// Persists a service's enabled flag (`None`: the config's again); returns once it
    /// is durable.
    pub async fn set_enabled(&self, name: &str, enabled: Option<bool>) -> Result<(), StoreError> {
        let name = name.to_string();
        self.detached(move |s| async move { s.set_enabled_now(&name, enabled).await })
            .await
    }

    async fn set_enabled_now(&self, name: &str, enabled: Option<bool>) -> Result<(), StoreError> {
        // The write and the mirror's copy in one order for concurrent calls: what the
        // API shows last is what the store holds.
        let _one = self.inner.service_writes.lock().await;
        let n = name.to_string();
        self.run(move |b| async move { b.set_enabled(&n, enabled).await })
            .await?;
        self.wrote_service(name, |o| o.enabled = enabled).await
    }

    /// Persists a service's priority (`None`: the config's again); returns once it is
    /// durable.
    pub async fn set_priority(&self, name: &str, priority: Option<i64>) -> Result<(), StoreError> {
        let name = name.to_string();
        self.detached(move |s| async move { s.set_priority_now(&name, priority).await })
            .await
    }

    async fn set_priority_now(&self, name: &str, priority: Option<i64>) -> Result<(), StoreError> {
        let _one = self.inner.service_writes.lock().await;
        let n = name.to_string();
        self.run(move |b| async move { b.set_priority(&n, priority).await })
            .await?;
        self.wrote_service(name, |o| o.priority = priority).await
    }

    /// Takes a service's row this instance just wrote into the mirror. Shared with
    /// other instances, the rows are read back instead: one of them may have written
    /// the same row after this write, and its notice been taken in already.
    async fn wrote_service(
        &self,
        name: &str,
        set: impl FnOnce(&mut ServiceOverride),
    ) -> Result<(), StoreError> {
        {
            let mut m = self.mirror();
            let t = m.ticket();
            set(m.services.entry(name.to_string()).or_default());
            m.services_at = t;
        }
        if self.is_shared() {
            self.reload_services().await?;
        }
        Ok(())
    }

    /// Moves each key the store has never seen onto the identity the same channel has
    /// under its other key, so that a channel keeps its id, number and mapping when the
    /// sources that decide its key change:
    /// - a `tvg:` key takes the identity of one of its `name:` keys (`name_keys(i)`: one
    ///   per source name), which a store written before keys stopped depending on
    ///   source order may hold;
    /// - a `name:` key takes that of one of its `name_keys(i)` (a name's former
    ///   readings, `lineup::former_readings`: a `+` joined to the word before it, and
    ///   bracketed notes dropped, under which one channel held names that differ only
    ///   in a bracketed note, and "E4+1" and "E4 +1" were two), else that of the `tvg:` key whose slug
    ///   is the one it wants (its sources with a tvg-id were switched off), unless that
    ///   slug ends in a number (`news-2` may be the second "News" made unique, another
    ///   channel).
    ///
    /// - a `tvg:` key that a service moved a channel to from another (`moved`: new key
    ///   -> old key, `lineup::moved_tvg_ids`, followed through later moves) takes that
    ///   key's identity, when no `name:` key gave one.
    ///
    /// Only an identity that no key of `keys` names, and only once.
    pub fn follow_moved_keys(
        &self,
        keys: &mut [Wanted],
        name_keys: impl Fn(usize) -> Vec<String>,
        moved: &HashMap<String, String>,
    ) {
        self.keep_moved_identities(keys, moved);
        let moves = {
            let m = self.mirror();
            if m.channels.is_empty() {
                return;
            }
            let unknown: Vec<usize> = (0..keys.len())
                .filter(|&i| !m.channels.contains_key(&keys[i].key))
                .collect();
            if unknown.is_empty() {
                return;
            }
            let in_use: HashSet<&str> = keys.iter().map(|w| w.key.as_str()).collect();
            // Built only when a `name:` key is new: a scan of every identity.
            let mut by_slug: Option<HashMap<&str, &str>> = None;
            let mut taken: HashSet<String> = HashSet::new();
            let mut moves = Vec::new();
            for i in unknown {
                let Wanted {
                    key, slug: wanted, ..
                } = &keys[i];
                let free = |o: &String| {
                    m.channels.contains_key(o) && !in_use.contains(o.as_str()) && !taken.contains(o)
                };
                let other = if key.starts_with("tvg:") {
                    name_keys(i).into_iter().find(|o| free(o)).or_else(|| {
                        // A chain of renames ends at the key the store knows.
                        let mut at = moved.get(key)?;
                        for _ in 0..16 {
                            if m.channels.contains_key(at) {
                                break;
                            }
                            at = moved.get(at)?;
                        }
                        Some(at.clone()).filter(|o| free(o))
                    })
                } else if let Some(former) = name_keys(i).into_iter().find(|o| free(o)) {
                    // The key a former reading of its names gave ("BBC One
                    // (Scotland)" was "name:bbc one"): the first channel to want it.
                    Some(former)
                } else if ends_with_number(wanted) {
                    // "news-2" may be the slug "news" got as the second "News": another
                    // channel's, not this one's.
                    None
                } else {
                    by_slug
                        .get_or_insert_with(|| {
                            m.channels
                                .iter()
                                .filter(|(k, _)| k.starts_with("tvg:"))
                                .map(|(k, id)| (id.slug.as_str(), k.as_str()))
                                .collect()
                        })
                        .get(wanted.as_str())
                        .map(|k| k.to_string())
                        .filter(|o| free(o))
                };
                if let Some(other) = other {
                    taken.insert(other.clone());
                    moves.push((i, other));
                }
            }
            moves
        };
        for (i, other) in moves {
            keys[i].key = other;
        }
    }

    /// A channel a service moved away from a tvg-id keeps that id's identity even when
    /// another channel lists the old tvg-id again (a provider reusing it, or swapping
    /// two ids over two refreshes): the one listing it now is keyed apart, under the key
    /// its own earlier move came from when there is one, else a key of its own
    /// (`{old}\u{1}reused`, the same at every build while the move is kept).
    fn keep_moved_identities(&self, keys: &mut [Wanted], moved: &HashMap<String, String>) {
        if moved.is_empty() {
            return;
        }
        let rekey = {
            let m = self.mirror();
            // Where a chain of moves from `key` reaches a key the store knows.
            let end = |key: &str| -> Option<String> {
                let mut at = moved.get(key)?;
                for _ in 0..16 {
                    if m.channels.contains_key(at) {
                        return Some(at.clone());
                    }
                    at = moved.get(at)?;
                }
                None
            };
            let present: HashMap<&str, usize> = keys
                .iter()
                .enumerate()
                .map(|(i, w)| (w.key.as_str(), i))
                .collect();
            let mut rekey = Vec::new();
            for w in keys.iter() {
                if !w.key.starts_with("tvg:") || m.channels.contains_key(&w.key) {
                    continue;
                }
                let Some(old) = end(&w.key) else { continue };
                if let Some(&j) = present.get(old.as_str()) {
                    let own = end(&keys[j].key).filter(|o| !present.contains_key(o.as_str()));
                    rekey.push((j, own.unwrap_or_else(|| format!("{old}\u{1}reused"))));
                }
            }
            rekey
        };
        for (j, key) in rekey {
            keys[j].key = key;
        }
    }

    /// The identity of every merge key, assigning (and persisting) new ones: the slug is
    /// the wanted one made unique, the number the upstream's when free, else the next
    /// free one (`Mirror::plan`). Known keys never change.
    pub async fn identities(&self, keys: &[Wanted]) -> Result<Vec<ChannelIdentity>, StoreError> {
        // The household's store: no copy of the keys (a lineup's worth) for a task.
        if !self.is_shared() {
            return self.identities_now(keys).await;
        }
        let keys = keys.to_vec();
        self.detached(move |s| async move { s.identities_now(&keys).await })
            .await
    }

    async fn identities_now(&self, keys: &[Wanted]) -> Result<Vec<ChannelIdentity>, StoreError> {
        let _guard = self.inner.assign.lock().await;
        let unknown = {
            let m = self.mirror();
            keys.iter().any(|w| !m.channels.contains_key(&w.key))
        };
        if unknown && self.inner.display_only {
            let mut m = self.mirror();
            for (k, slug, number) in m.plan(keys, &HashSet::new()) {
                m.channels.insert(k, ChannelIdentity { slug, number });
                self.inner
                    .numbered_for_display
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        } else if unknown {
            let inner = self.inner.clone();
            let owned = keys.to_vec();
            let fresh = self
                .run(move |b| async move { b.assign(&owned, &inner.mirror).await })
                .await?;
            let mut m = self.mirror();
            for (k, slug, number) in fresh {
                m.channels.insert(k, ChannelIdentity { slug, number });
            }
        }
        let m = self.mirror();
        Ok(keys
            .iter()
            .map(|w| {
                m.channels
                    .get(&w.key)
                    .cloned()
                    .expect("every key was assigned above")
            })
            .collect())
    }

    /// The identities the state already holds for `keys` (from memory: no store
    /// call), `None` for a key never numbered.
    pub fn known_identities(&self, keys: &[Wanted]) -> Vec<Option<ChannelIdentity>> {
        let m = self.mirror();
        keys.iter()
            .map(|w| m.channels.get(&w.key).cloned())
            .collect()
    }

    /// What the state says of services not in `known` (renamed or removed since):
    /// the names with a stored switch or priority, and each channel (slug) whose
    /// pinned `sources` name some, with those names; sorted.
    pub fn unknown_services(&self, known: &[&str]) -> (Vec<String>, Vec<(String, Vec<String>)>) {
        let m = self.mirror();
        let unknown = |n: &String| !known.contains(&n.as_str());
        let mut switched: Vec<String> = m
            .services
            .iter()
            .filter(|(n, o)| unknown(n) && (o.enabled.is_some() || o.priority.is_some()))
            .map(|(n, _)| n.clone())
            .collect();
        switched.sort();
        let mut pinned: Vec<(String, Vec<String>)> = m
            .mappings
            .iter()
            .filter_map(|(slug, mapping)| {
                let names: Vec<String> = mapping
                    .sources
                    .iter()
                    .flatten()
                    .filter(|n| unknown(n))
                    .cloned()
                    .collect();
                (!names.is_empty()).then(|| (slug.clone(), names))
            })
            .collect();
        pinned.sort();
        (switched, pinned)
    }

    /// Every channel's overrides, by slug (channels without any are absent).
    pub fn mappings(&self) -> HashMap<String, ChannelMapping> {
        self.mirror().mappings.clone()
    }

    /// Changes the overrides of the channel `slug` to `change(current)`, checking that
    /// the resulting number is no other channel's (listed upstream right now or not).
    /// Durable before it returns. `change`'s error and a taken number are `Rejected`.
    pub async fn update_mapping(
        &self,
        slug: &str,
        change: impl Fn(&ChannelMapping) -> Result<ChannelMapping, String> + Send + 'static,
    ) -> Result<ChannelMapping, StoreError> {
        let slug = slug.to_string();
        self.detached(move |s| async move { s.update_mapping_now(&slug, change).await })
            .await
    }

    async fn update_mapping_now(
        &self,
        slug: &str,
        change: impl Fn(&ChannelMapping) -> Result<ChannelMapping, String>,
    ) -> Result<ChannelMapping, StoreError> {
        // The same lock as number assignment: a new channel never takes a number
        // that is being given to another one here.
        let _guard = self.inner.assign.lock().await;
        let mut current = self
            .mirror()
            .mappings
            .get(slug)
            .cloned()
            .unwrap_or_default();
        // Another instance sharing the store may change the same mapping meanwhile:
        // the write holds only while the stored row is the one changed, else the
        // change is made again on the row as stored now.
        for _ in 0..MAPPING_TRIES {
            let next = self.checked_mapping(slug, &current, &change)?;
            let (expected, row, key) = (current.clone(), next.clone(), slug.to_string());
            let written = self
                .run(move |b| async move { b.put_mapping_if(&key, &expected, &row).await })
                .await?;
            if written {
                let read_back = {
                    let mut m = self.mirror();
                    let t = m.ticket();
                    // The mirror holds what this write replaced: the write is the news.
                    // Else another instance's later write was taken in meanwhile (or
                    // this one's `current` came from the database, not the mirror):
                    // the row is read back, as stored now.
                    let held = m.mappings.get(slug).cloned().unwrap_or_default();
                    if held == current {
                        if next.is_empty() {
                            m.mappings.remove(slug);
                        } else {
                            m.mappings.insert(slug.to_string(), next.clone());
                        }
                        m.mappings_at = t;
                        false
                    } else {
                        true
                    }
                };
                if read_back {
                    let t = self.mirror().ticket();
                    let key = slug.to_string();
                    let stored = self
                        .run(move |b| async move { b.mapping(&key).await })
                        .await?;
                    let mut m = self.mirror();
                    // Unless a read begun since was taken in: it holds this write or a
                    // later one.
                    if m.mappings_at < t {
                        if stored.is_empty() {
                            m.mappings.remove(slug);
                        } else {
                            m.mappings.insert(slug.to_string(), stored);
                        }
                        m.mappings_at = t;
                    }
                }
                return Ok(next);
            }
            let key = slug.to_string();
            current = self
                .run(move |b| async move { b.mapping(&key).await })
                .await?;
        }
        Err(StoreError::Contended(format!(
            "the mapping of `{slug}` kept changing through other instances: try again"
        )))
    }

    /// `change` applied to `current`, refused when the number it leaves the channel
    /// is another channel's.
    fn checked_mapping(
        &self,
        slug: &str,
        current: &ChannelMapping,
        change: impl Fn(&ChannelMapping) -> Result<ChannelMapping, String>,
    ) -> Result<ChannelMapping, StoreError> {
        let m = self.mirror();
        let next = change(current).map_err(StoreError::Rejected)?;
        let assigned = m
            .channels
            .values()
            .find(|id| id.slug == slug)
            .map(|id| id.number)
            .ok_or_else(|| StoreError::Rejected(format!("unknown channel `{slug}`")))?;
        let number = next.number.unwrap_or(assigned);
        let holder = m.channels.values().find(|id| {
            id.slug != slug
                && m.mappings
                    .get(&id.slug)
                    .and_then(|x| x.number)
                    .unwrap_or(id.number)
                    == number
        });
        // A guide id set here is no other mapping's: checked under the lock, so two
        // channels given one id at once do not both get it (the registry checks the
        // channels' own ids before).
        if let Some(wanted) = next
            .tvg_id
            .as_deref()
            .filter(|t| current.tvg_id.as_deref() != Some(*t))
        {
            let other = m.mappings.iter().find(|(other, x)| {
                *other != slug
                    && x.tvg_id
                        .as_deref()
                        .is_some_and(|t| t.eq_ignore_ascii_case(wanted))
            });
            if let Some((other, _)) = other {
                return Err(StoreError::Rejected(format!(
                    "`{wanted}` is the guide id of channel `{other}`: two channels never \
                     share one; give that channel another first"
                )));
            }
        }
        if let Some(holder) = holder {
            return Err(StoreError::Rejected(if next.number.is_some() {
                format!("number {number} is taken by channel `{}`", holder.slug)
            } else {
                format!(
                    "cannot reset the number to {number}: channel `{}` has it now",
                    holder.slug
                )
            }));
        }
        Ok(next)
    }

    fn mirror(&self) -> std::sync::MutexGuard<'_, Mirror> {
        lock_mirror(&self.inner.mirror)
    }

    /// The viewer accounts made through the admin API.
    pub fn users(&self) -> Result<Vec<StoredUser>, StoreError> {
        self.run_sync(|b| async move { b.users().await })
    }

    /// Creates or replaces a viewer account; returns once it is durable.
    pub async fn put_user(&self, u: StoredUser) -> Result<(), StoreError> {
        self.detached(move |s| async move { s.put_user_now(u).await })
            .await
    }

    async fn put_user_now(&self, u: StoredUser) -> Result<(), StoreError> {
        self.run(move |b| async move { b.put_user(&u).await })
            .await?;
        self.users_changed_here();
        Ok(())
    }

    /// Tells this process's followers of the accounts (`Change::Users`) that they
    /// changed here: the running accounts of a state a config reload has just put in
    /// place read them again, where a write still going on the state before would
    /// else be missing there until the next change.
    fn users_changed_here(&self) {
        let _ = self.inner.changes.send(Change::Users);
    }

    /// The viewer account `name` as stored now.
    pub async fn user(&self, name: &str) -> Result<Option<StoredUser>, StoreError> {
        let name = name.to_string();
        self.detached(move |s| async move {
            s.run(move |b| async move { Ok(b.users().await?.into_iter().find(|u| u.name == name)) })
                .await
        })
        .await
    }

    /// Writes account `u` only while the stored one is `expected` (`None`: there is
    /// none): `false` when another instance changed (or made) it first; returns once
    /// it is durable.
    pub async fn put_user_if(
        &self,
        expected: Option<StoredUser>,
        u: StoredUser,
    ) -> Result<bool, StoreError> {
        self.detached(move |s| async move { s.put_user_if_now(expected, u).await })
            .await
    }

    async fn put_user_if_now(
        &self,
        expected: Option<StoredUser>,
        u: StoredUser,
    ) -> Result<bool, StoreError> {
        let written = self
            .run(move |b| async move { b.put_user_if(expected.as_ref(), &u).await })
            .await?;
        if written {
            self.users_changed_here();
        }
        Ok(written)
    }

    /// Removes a viewer account; returns once it is durable.
    pub async fn delete_user(&self, name: &str) -> Result<(), StoreError> {
        let name = name.to_string();
        self.detached(move |s| async move { s.delete_user_now(&name).await })
            .await
    }

    async fn delete_user_now(&self, name: &str) -> Result<(), StoreError> {
        let n = name.to_string();
        self.run(move |b| async move { b.delete_user(&n).await })
            .await?;
        self.users_changed_here();
        Ok(())
    }

    /// Every record of namespace `ns`, as (key, JSON value), in key order. Values that
    /// are no longer valid JSON are skipped with a warning.
    pub fn records(&self, ns: &str) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
        let owned = ns.to_string();
        let rows = self.run_sync(move |b| async move { b.records(&owned).await })?;
        let mut out = Vec::with_capacity(rows.len());
        for (key, value) in rows {
            match serde_json::from_str(&value) {
                Ok(v) => out.push((key, v)),
                Err(e) => tracing::warn!(ns, key, error = %e, "stored record unreadable, ignored"),
            }
        }
        Ok(out)
    }

    /// Creates or replaces record `key` of namespace `ns`; returns once it is durable.
    pub async fn put_record(
        &self,
        ns: &str,
        key: &str,
        value: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let (ns, key, value) = (ns.to_string(), key.to_string(), value.to_string());
        self.detached(move |s| async move {
            s.run(move |b| async move { b.put_record(&ns, &key, &value).await })
                .await
        })
        .await
    }

    /// Creates or replaces the records `put` (key, JSON value) of namespace `ns` and
    /// removes those keyed `delete` (a key in both is put), in one transaction; returns
    /// once durable. A display-only store writes nothing.
    pub async fn write_records(
        &self,
        ns: &str,
        put: &[(String, serde_json::Value)],
        delete: &[String],
    ) -> Result<(), StoreError> {
        if (put.is_empty() && delete.is_empty()) || self.inner.display_only {
            return Ok(());
        }
        let ns = ns.to_string();
        let rows: Vec<(String, String)> = put
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect();
        let kept: HashSet<&str> = rows.iter().map(|(k, _)| k.as_str()).collect();
        let delete: Vec<String> = delete
            .iter()
            .filter(|k| !kept.contains(k.as_str()))
            .cloned()
            .collect();
        drop(kept);
        self.detached(move |s| async move {
            s.run(move |b| async move { b.write_records(&ns, &rows, &delete).await })
                .await
        })
        .await
    }

    /// Removes record `key` of namespace `ns` (absent is fine); returns once durable.
    pub async fn delete_record(&self, ns: &str, key: &str) -> Result<(), StoreError> {
        let (ns, key) = (ns.to_string(), key.to_string());
        self.detached(move |s| async move {
            s.run(move |b| async move { b.delete_record(&ns, &key).await })
                .await
        })
        .await
    }

    /// The stable id of each key in namespace `ns`, in the order given: ids already
    /// given keep their value forever; new keys get the next unused ids (from 1), all
    /// written in one transaction before this returns, so a restart gives the same ids
    /// (and, with a shared store, every instance the same ones).
    pub async fn ids(&self, ns: &str, keys: Vec<String>) -> Result<Vec<u64>, StoreError> {
        let ns = ns.to_string();
        self.detached(move |s| async move {
            s.run(move |b| async move { b.ids(&ns, &keys).await }).await
        })
        .await
    }
}

/// Separates a key given to `Store::ids` from the other key the same thing may be
/// known by (`primary\u{1f}other`): a merged title's TMDB key and the name key it has
/// while the service that gave the TMDB id is off.
pub const ALIAS_SEPARATOR: char = '\u{1f}';

/// The namespace of `ns`'s aliases among the records (key -> the key whose id it has,
/// as a JSON string).
fn alias_ns(ns: &str) -> String {
    format!("{ns}.alias")
}

/// Aliases as stored (an unreadable one is left out).
fn aliases_of(rows: impl IntoIterator<Item = (String, String)>) -> HashMap<String, String> {
    rows.into_iter()
        .filter_map(|(k, v)| serde_json::from_str::<String>(&v).ok().map(|to| (k, to)))
        .collect()
}

/// What `assign_ids` decided: every key's id in order, the new (key, id) pairs and the
/// new aliases (key -> the key whose id it takes) to persist.
type Assigned = (Vec<u64>, Vec<(String, u64)>, Vec<(String, String)>);

/// The id of each of `keys` given the ids `known` already (key -> id) and the
/// `aliases` (key -> the key whose id it has): known keys keep theirs, new ones get the
/// next after the largest known (from 1), a key listed twice one id. A key given with
/// another (`ALIAS_SEPARATOR`) takes the other's id when it has none of its own, and
/// the other is made its alias, so the thing keeps one id by either key (an id taken
/// by another key of this call is not taken twice).
fn assign_ids(
    mut known: HashMap<String, u64>,
    aliases: &HashMap<String, String>,
    keys: &[String],
) -> Assigned {
    let mut next = known.values().max().map_or(1, |m| m + 1);
    let mut fresh = Vec::new();
    let mut fresh_aliases = Vec::new();
    let mut used: std::collections::HashSet<u64> = std::collections::HashSet::new();
    let mut ids = Vec::with_capacity(keys.len());
    for key in keys {
        let (key, other) = match key.split_once(ALIAS_SEPARATOR) {
            Some((k, o)) => (k, Some(o)),
            None => (key.as_str(), None),
        };
        // The id a key has: its own, else the one its alias points at.
        let has = |k: &str, known: &HashMap<String, u64>| {
            known
                .get(k)
                .or_else(|| aliases.get(k).and_then(|to| known.get(to)))
                .copied()
        };
        let id = match has(key, &known) {
            Some(id) => {
                if let Some(o) = other.filter(|o| has(o, &known).is_none()) {
                    fresh_aliases.push((o.to_string(), key.to_string()));
                }
                id
            }
            None => {
                let taken = other
                    .and_then(|o| has(o, &known).map(|id| (o, id)))
                    .filter(|(_, id)| !used.contains(id));
                match taken {
                    Some((o, id)) => {
                        let to = aliases.get(o).map_or(o, String::as_str);
                        fresh_aliases.push((key.to_string(), to.to_string()));
                        id
                    }
                    None => {
                        let id = next;
                        next += 1;
                        fresh.push((key.to_string(), id));
                        if let Some(o) = other.filter(|o| !aliases.contains_key(*o)) {
                            fresh_aliases.push((o.to_string(), key.to_string()));
                        }
                        id
                    }
                }
            }
        };
        // A later key of this call finds it (a key listed twice gets one id).
        known.entry(key.to_string()).or_insert(id);
        used.insert(id);
        ids.push(id);
    }
    (ids, fresh, fresh_aliases)
}

/// A panic while holding the lock cannot leave the mirror half-written (every update
/// is a single insert or replacement), so a poisoned lock is still usable.
fn lock_mirror(m: &Mutex<Mirror>) -> std::sync::MutexGuard<'_, Mirror> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A title known by a TMDB key and a name key keeps one id whichever of them it
    /// shows, in whichever order they come; two titles never share one.
    #[tokio::test]
    async fn a_title_keeps_its_id_by_either_of_its_keys() {
        let both = |t: &str, n: &str| format!("{t}{ALIAS_SEPARATOR}{n}");
        let s = Store::in_memory();
        let ids = |keys: Vec<String>| {
            let s = s.clone();
            async move { s.ids("vod.movie", keys).await.unwrap() }
        };
        // Both services at first, then the TMDB one off, then on again.
        let first = ids(vec![both("t:1", "n:amelie|2001")]).await[0];
        assert_eq!(ids(vec!["n:amelie|2001".into()]).await, [first]);
        assert_eq!(ids(vec![both("t:1", "n:amelie|2001")]).await, [first]);
        assert_eq!(ids(vec!["t:1".into()]).await, [first]);
        // The name first, the TMDB service added later, then the name's service off.
        let heat = ids(vec!["n:heat|1995".into()]).await[0];
        assert_ne!(heat, first);
        assert_eq!(ids(vec![both("t:949", "n:heat|1995")]).await, [heat]);
        assert_eq!(ids(vec!["t:949".into()]).await, [heat]);
        assert_eq!(ids(vec!["n:heat|1995".into()]).await, [heat]);
        // The TMDB service first, the name's after.
        let wire = ids(vec!["t:7".into()]).await[0];
        assert_eq!(ids(vec![both("t:7", "n:wire|2002")]).await, [wire]);
        assert_eq!(ids(vec!["n:wire|2002".into()]).await, [wire]);
        // Two titles of one name and year with two TMDB ids: two ids, stably.
        let twins = ids(vec![
            both("t:11", "n:twin|2000"),
            both("t:12", "n:twin|2000"),
        ])
        .await;
        assert_ne!(twins[0], twins[1]);
        assert_eq!(
            ids(vec![
                both("t:11", "n:twin|2000"),
                both("t:12", "n:twin|2000")
            ])
            .await,
            twins
        );
    }

    #[test]
    fn secrets_open_to_group_or_others_get_a_warning_naming_the_fix() {
        let key = Path::new("/var/lib/freesky/proxy.key");
        let w = loose_permissions(key, 0o644, 0o600).expect("a warning");
        assert!(w.contains("/var/lib/freesky/proxy.key"), "{w}");
        assert!(w.contains("mode 644"), "{w}");
        assert!(w.contains("chmod 600 /var/lib/freesky/proxy.key"), "{w}");
        for mode in [0o640, 0o604, 0o660, 0o602, 0o610] {
            assert!(loose_permissions(key, mode, 0o600).is_some(), "{mode:o}");
        }
        for mode in [0o600, 0o400, 0o700] {
            assert_eq!(loose_permissions(key, mode, 0o600), None, "{mode:o}");
        }
        let dir = Path::new("/srv/state");
        let w = loose_permissions(dir, 0o755, 0o700).expect("a warning");
        assert!(w.contains("chmod 700 /srv/state"), "{w}");
        assert_eq!(loose_permissions(dir, 0o700, 0o700), None);
    }

    #[cfg(unix)]
    #[test]
    fn a_fresh_state_dir_is_owner_only_and_an_existing_one_is_left_alone() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let fresh = root.path().join("a/b/state");
        Store::open(&fresh).unwrap();
        assert_eq!(mode_of(&fresh), Some(0o700));
        // The database too, whatever the umask; and reopening it keeps it.
        assert_eq!(mode_of(&fresh.join("freesky.db")), Some(0o600));
        Store::open(&fresh).unwrap();
        assert_eq!(mode_of(&fresh.join("freesky.db")), Some(0o600));
        assert_eq!(mode_of(&root.path().join("a")), Some(0o700));

        let shared = root.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
        Store::open(&shared).unwrap();
        assert_eq!(mode_of(&shared), Some(0o755), "warned about, not changed");
    }

    #[tokio::test]
    async fn services_the_state_names_but_the_config_lacks_are_found() {
        let s = Store::in_memory();
        s.set_enabled("Old", Some(false)).await.unwrap();
        s.set_priority("A", Some(3)).await.unwrap();
        s.set_priority("Gone", Some(2)).await.unwrap();
        s.set_priority("Gone", None).await.unwrap();
        s.identities(&[Wanted::new("name:news", "news")])
            .await
            .unwrap();
        s.update_mapping("news", |m| {
            Ok(ChannelMapping {
                sources: Some(vec!["A".into(), "Old".into()]),
                ..m.clone()
            })
        })
        .await
        .unwrap();
        let (switched, pinned) = s.unknown_services(&["A"]);
        assert_eq!(switched, ["Old"]);
        assert_eq!(pinned, [("news".to_string(), vec!["Old".to_string()])]);
        assert_eq!(s.unknown_services(&["A", "Old"]), (vec![], vec![]));
    }

    #[tokio::test]
    async fn a_channel_whose_key_moved_keeps_its_identity() {
        let s = Store::in_memory();
        let key = Wanted::new;
        let first = s
            .identities(&[key("name:news", "news"), key("tvg:sport.test", "sport")])
            .await
            .unwrap();
        let name_of = |i: usize| vec![["name:news", "name:sport", "name:other"][i].to_string()];

        // Keyed by name before, by tvg-id now; and by tvg-id before, by name now.
        let mut keys = vec![
            key("tvg:news.test", "news"),
            key("name:sport", "sport"),
            key("tvg:other.test", "other"),
        ];
        s.follow_moved_keys(&mut keys, name_of, &HashMap::new());
        assert_eq!(keys[0].key, "name:news");
        assert_eq!(keys[1].key, "tvg:sport.test");
        assert_eq!(
            keys[2].key, "tvg:other.test",
            "nothing to follow: a new channel"
        );
        let ids = s.identities(&keys).await.unwrap();
        assert_eq!(ids[..2], first[..]);

        // An identity a current key names is not taken from it.
        let mut keys = vec![key("name:sport", "sport"), key("tvg:sport.test", "sport")];
        s.follow_moved_keys(&mut keys, |_| vec![], &HashMap::new());
        assert_eq!(keys[0].key, "name:sport");
        // Nor given to two keys.
        let mut keys = vec![key("name:sport", "sport"), key("name:sports", "sport")];
        s.follow_moved_keys(&mut keys, |_| vec![], &HashMap::new());
        assert_eq!(keys[0].key, "tvg:sport.test");
        assert_eq!(keys[1].key, "name:sports");
        // A name's former reading: the first of two names that read as it takes it.
        let mut keys = vec![
            key("name:news scotland", "news-scotland"),
            key("name:news wales", "news-wales"),
        ];
        s.follow_moved_keys(
            &mut keys,
            |i| {
                vec![
                    ["name:news scotland", "name:news wales"][i].into(),
                    "name:news".into(),
                ]
            },
            &HashMap::new(),
        );
        assert_eq!(keys[0].key, "name:news");
        assert_eq!(keys[1].key, "name:news wales");

        // A second "News" stored as `news-2` is not taken by a channel called "News 2".
        let two = s
            .identities(&[key("tvg:news.other", "news")])
            .await
            .unwrap();
        assert_eq!(two[0].slug, "news-2");
        let mut keys = vec![key("name:news 2", "news-2")];
        s.follow_moved_keys(&mut keys, |_| vec![], &HashMap::new());
        assert_eq!(keys[0].key, "name:news 2");
        // Any of a group's source names finds the key it had.
        let mut keys = vec![key("tvg:news.renamed", "news")];
        s.follow_moved_keys(
            &mut keys,
            |_| vec!["name:bbc one".to_string(), "name:news".to_string()],
            &HashMap::new(),
        );
        assert_eq!(keys[0].key, "name:news");
        // A service's renamed tvg-id, through a chain of renames, finds the key the
        // store knows; one whose end is unknown finds nothing.
        let moved: HashMap<String, String> = [
            ("tvg:c", "tvg:b"),
            ("tvg:b", "tvg:sport.test"),
            ("tvg:x", "tvg:y"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let mut keys = vec![key("tvg:c", "sport")];
        s.follow_moved_keys(&mut keys, |_| vec![], &moved);
        assert_eq!(keys[0].key, "tvg:sport.test");
        let mut keys = vec![key("tvg:x", "x")];
        s.follow_moved_keys(&mut keys, |_| vec![], &moved);
        assert_eq!(keys[0].key, "tvg:x");
    }

    #[tokio::test]
    async fn a_moved_channel_keeps_its_identity_when_its_old_id_is_listed_again() {
        let s = Store::in_memory();
        let key = Wanted::new;
        let first = s
            .identities(&[key("tvg:a", "news"), key("tvg:b", "sport")])
            .await
            .unwrap();
        let moved = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        // News moved a -> x; another channel lists `a` again: News keeps its
        // identity, the newcomer gets one of its own.
        let mut keys = vec![key("tvg:x", "news"), key("tvg:a", "other")];
        s.follow_moved_keys(&mut keys, |_| vec![], &moved(&[("tvg:x", "tvg:a")]));
        assert_eq!(keys[0].key, "tvg:a");
        assert_eq!(keys[1].key, "tvg:a\u{1}reused");
        let ids = s.identities(&keys).await.unwrap();
        assert_eq!(ids[0], first[0]);
        assert_ne!(ids[1].number, first[0].number);
        assert_ne!(ids[1].number, first[1].number);
        // Over two refreshes News moved a -> x and Sport b -> a: each keeps its own.
        let mut keys = vec![key("tvg:x", "news"), key("tvg:a", "sport")];
        s.follow_moved_keys(
            &mut keys,
            |_| vec![],
            &moved(&[("tvg:x", "tvg:a"), ("tvg:a", "tvg:b")]),
        );
        assert_eq!(
            (keys[0].key.as_str(), keys[1].key.as_str()),
            ("tvg:a", "tvg:b")
        );
        // Without moves, nothing changes.
        let mut keys = vec![key("tvg:x", "news"), key("tvg:a", "other")];
        s.follow_moved_keys(&mut keys, |_| vec![], &HashMap::new());
        assert_eq!(
            (keys[0].key.as_str(), keys[1].key.as_str()),
            ("tvg:x", "tvg:a")
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_service_changes_leave_the_store_as_the_api_shows_it() {
        let dir = tempfile::tempdir().unwrap();
        for round in 0..100 {
            let s = Store::open(dir.path()).unwrap();
            let calls: Vec<_> = (0..40i64)
                .map(|i| {
                    let s = s.clone();
                    tokio::spawn(async move {
                        s.set_enabled("A", Some(i % 2 == 0)).await.unwrap();
                        s.set_priority("A", Some(100 + i)).await.unwrap();
                    })
                })
                .collect();
            for c in calls {
                c.await.unwrap();
            }
            let shown = s.service_override("A");
            drop(s);
            let kept = Store::open(dir.path()).unwrap().service_override("A");
            assert_eq!(
                (kept.enabled, kept.priority),
                (shown.enabled, shown.priority),
                "round {round}"
            );
        }
    }

    #[tokio::test]
    async fn records_and_ids_survive_a_reopen_and_ids_are_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            s.put_record("m", "b", &serde_json::json!({"x": 1}))
                .await
                .unwrap();
            s.put_record("m", "a", &serde_json::json!("y"))
                .await
                .unwrap();
            s.put_record("other", "a", &serde_json::json!(2))
                .await
                .unwrap();
            s.put_record("m", "b", &serde_json::json!({"x": 3}))
                .await
                .unwrap();
            s.delete_record("other", "a").await.unwrap();
            // Many in one call: a new one and one replaced.
            s.write_records(
                "many",
                &[
                    ("k1".to_string(), serde_json::json!("one")),
                    ("k2".to_string(), serde_json::json!("two")),
                    ("k3".to_string(), serde_json::json!("three")),
                ],
                &[],
            )
            .await
            .unwrap();
            // One replaced, one removed, one both put and named to remove (kept).
            s.write_records(
                "many",
                &[("k2".to_string(), serde_json::json!(2))],
                &["k3".to_string(), "k2".to_string(), "absent".to_string()],
            )
            .await
            .unwrap();
            let ids = s
                .ids("movie", vec!["t1".into(), "t2".into(), "t1".into()])
                .await
                .unwrap();
            assert_eq!(ids, vec![1, 2, 1]);
            assert_eq!(s.ids("series", vec!["t1".into()]).await.unwrap(), vec![1]);
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(
            s.records("m").unwrap(),
            vec![
                ("a".to_string(), serde_json::json!("y")),
                ("b".to_string(), serde_json::json!({"x": 3}))
            ]
        );
        assert!(s.records("other").unwrap().is_empty());
        assert_eq!(
            s.records("many").unwrap(),
            vec![
                ("k1".to_string(), serde_json::json!("one")),
                ("k2".to_string(), serde_json::json!(2))
            ]
        );
        let ids = s
            .ids("movie", vec!["t3".into(), "t2".into()])
            .await
            .unwrap();
        assert_eq!(
            ids,
            vec![3, 2],
            "known keys keep their id, new ones take the next"
        );
    }

    #[test]
    fn state_names_sqlite_or_a_postgres_url_and_says_why_not_without_the_url() {
        for ok in [
            "",
            "sqlite",
            "postgres://u:p@db:5432/freesky",
            "postgresql://db/x?sslmode=require",
        ] {
            assert_eq!(check_state(ok), Ok(()), "{ok}");
        }
        let e = check_state("mysql://u:secret@db/x").unwrap_err();
        assert!(e.contains("expected \"sqlite\""), "{e}");
        let e = check_state("postgres://u:secret@db:notaport/x").unwrap_err();
        assert!(!e.contains("secret"), "{e}");
        // A password with a reserved character: the hint says how to write it.
        let e = check_state("postgres://fs:p@ss#w/rd?x@127.0.0.1:5432/db").unwrap_err();
        assert!(e.contains("percent-encoded: @ as %40"), "{e}");
        assert!(!e.contains("ss#w"), "{e}");
        assert_eq!(
            check_state("postgres://fs:p%40ss%23w%2Frd%3Fx@127.0.0.1:5432/db"),
            Ok(())
        );
    }

    #[tokio::test]
    async fn identities_are_stable_and_unique() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let ids = s
            .identities(&[
                Wanted::new("tvg:a", "news"),
                Wanted::new("name:news", "news"),
            ])
            .await
            .unwrap();
        assert_eq!(
            ids[0],
            ChannelIdentity {
                slug: "news".into(),
                number: 1
            }
        );
        assert_eq!(
            ids[1],
            ChannelIdentity {
                slug: "news-2".into(),
                number: 2
            }
        );
        s.set_enabled("A", Some(false)).await.unwrap();
        drop(s);

        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.service_override("A").enabled, Some(false));
        let ids = s
            .identities(&[Wanted::new("new", "x"), Wanted::new("name:news", "news")])
            .await
            .unwrap();
        assert_eq!(
            ids[0],
            ChannelIdentity {
                slug: "x".into(),
                number: 3
            }
        );
        assert_eq!(ids[1].number, 2);
    }

    #[tokio::test]
    async fn a_new_channel_takes_its_upstream_number_when_it_is_free() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let w = |k: &str, n: Option<u32>| Wanted {
            number: n,
            ..Wanted::new(k, k)
        };
        let numbers =
            |ids: Vec<ChannelIdentity>| ids.into_iter().map(|i| i.number).collect::<Vec<_>>();
        // A first start: every upstream number is free; a channel without one listed
        // first does not take the number a later one brings; a number asked twice is
        // the first one's.
        let first = s
            .identities(&[
                w("a", None),
                w("b", Some(5)),
                w("c", None),
                w("d", Some(5)),
                w("e", Some(2)),
                w("f", Some(1_000_000)),
            ])
            .await
            .unwrap();
        assert_eq!(numbers(first), [1, 5, 3, 4, 2, 6]);
        // Later: a number at or below one given before is never taken (it was given, or
        // may be another instance's); above, it is; a mapping's number is not.
        s.identities(&[w("x", None), w("y", None)]).await.unwrap();
        s.update_mapping("x", |m| {
            Ok(ChannelMapping {
                number: Some(20),
                ..m.clone()
            })
        })
        .await
        .unwrap();
        let later = s
            .identities(&[
                w("g", Some(3)),
                w("h", Some(12)),
                w("i", Some(20)),
                w("j", None),
            ])
            .await
            .unwrap();
        assert_eq!(numbers(later), [9, 12, 10, 11]);
        drop(s);
        // Known keys keep theirs whatever they bring now; the next is above them all.
        let s = Store::open(dir.path()).unwrap();
        let again = s
            .identities(&[w("b", Some(40)), w("k", None), w("l", Some(13))])
            .await
            .unwrap();
        assert_eq!(numbers(again), [5, 14, 13]);
    }

    #[tokio::test]
    async fn a_number_another_process_wrote_fails_the_write_and_is_learnt() {
        // Two stores on one file: what a `freesky channels` beside a server did before
        // the state_dir lock.
        let dir = tempfile::tempdir().unwrap();
        let server = Store::open(dir.path()).unwrap();
        let other = Store::open(dir.path()).unwrap();
        let theirs = other.identities(&[Wanted::new("name:a", "a")]).await;
        assert_eq!(theirs.unwrap()[0].number, 1);
        let err = server
            .identities(&[Wanted::new("name:b", "b")])
            .await
            .expect_err("number 1 is the other process's: the write fails");
        assert!(err.to_string().contains("UNIQUE"), "{err}");
        // The next build plans around what the file holds: b is 2, a keeps 1.
        let ids = server
            .identities(&[Wanted::new("name:a", "a"), Wanted::new("name:b", "b")])
            .await
            .unwrap();
        assert_eq!((ids[0].number, ids[1].number), (1, 2));
        drop((server, other));
        let reopened = Store::open(dir.path()).unwrap();
        let ids = reopened
            .identities(&[Wanted::new("name:b", "b")])
            .await
            .unwrap();
        assert_eq!(ids[0].number, 2, "served as 2, stored as 2");
    }

    /// The report `main` prints of `e`: every error of the chain.
    fn reported(e: StoreError) -> String {
        format!("{:#}", anyhow::Error::from(e))
    }

    #[tokio::test]
    async fn a_store_that_cannot_open_says_which_file_and_what_to_do_once() {
        let root = tempfile::tempdir().unwrap();
        // state_dir is a file.
        let file = root.path().join("state-file");
        std::fs::write(&file, "x").unwrap();
        let e = reported(Store::open(&file).err().expect("refused"));
        assert_eq!(
            e,
            format!(
                "state store {}: exists and is not a folder; set server.state_dir to a folder, \
                 or move this file away",
                file.display()
            )
        );
        // A file above it.
        let e = reported(Store::open(&file.join("sub")).err().expect("refused"));
        assert_eq!(
            e,
            format!(
                "state store {}: cannot be made: {} is a file, not a folder; set \
                 server.state_dir to a folder, or move that file away",
                file.join("sub").display(),
                file.display()
            )
        );
        // freesky.db is not a database.
        let dir = root.path().join("garbage");
        std::fs::create_dir(&dir).unwrap();
        let db = dir.join("freesky.db");
        std::fs::write(&db, vec![b'x'; 8192]).unwrap();
        let e = reported(Store::open(&dir).err().expect("refused"));
        assert!(
            e.starts_with(&format!(
                "state store {}: file is not a database (damaged?); move it away",
                db.display()
            )),
            "{e}"
        );
        assert!(e.contains("or restore a backup"), "{e}");
        // freesky.db damaged inside: a table's page overwritten.
        let dir = root.path().join("damaged");
        {
            let s = Store::open(&dir).unwrap();
            s.set_enabled("A", Some(false)).await.unwrap();
        }
        let db = dir.join("freesky.db");
        let mut bytes = std::fs::read(&db).unwrap();
        assert!(bytes.len() > 3 * 4096, "several pages");
        bytes[4096..3 * 4096].fill(0xa5);
        std::fs::write(&db, bytes).unwrap();
        let e = reported(Store::open(&dir).err().expect("refused"));
        assert_eq!(
            e,
            format!(
                "state store {}: the database is damaged (database disk image is malformed); \
                 {MOVE_IT_AWAY}",
                db.display()
            )
        );
        // freesky.db is a folder: SQLite cannot open it.
        let dir = root.path().join("folder");
        std::fs::create_dir_all(dir.join("freesky.db")).unwrap();
        let e = reported(Store::open(&dir).err().expect("refused"));
        assert!(
            e.starts_with(&format!(
                "state store {}: cannot open it for writing (unable to open database file): ",
                dir.join("freesky.db").display()
            )),
            "{e}"
        );
        assert_eq!(e.matches("unable to open database file").count(), 1, "{e}");
    }

    #[tokio::test]
    async fn a_failed_write_uses_up_no_number() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let known = [Wanted::new("name:a", "a"), Wanted::new("name:b", "b")];
        s.identities(&known).await.unwrap();
        // The disk fills up: every write of the new channel fails, build after build.
        let raw = rusqlite::Connection::open(dir.path().join("freesky.db")).unwrap();
        raw.execute_batch(
            "CREATE TRIGGER full BEFORE INSERT ON channel_identity
             BEGIN SELECT RAISE(FAIL, 'database or disk is full'); END;",
        )
        .unwrap();
        let wanted = [
            known[0].clone(),
            known[1].clone(),
            Wanted::new("name:new", "new"),
        ];
        for _ in 0..3 {
            let err = s.identities(&wanted).await.unwrap_err();
            assert!(err.to_string().contains("disk is full"), "{err}");
        }
        // Space again: the new channel gets the next free number, and its own slug.
        raw.execute_batch("DROP TRIGGER full").unwrap();
        let ids = s.identities(&wanted).await.unwrap();
        assert_eq!(
            ids[2],
            ChannelIdentity {
                slug: "new".into(),
                number: 3
            }
        );
    }

    #[tokio::test]
    async fn a_store_made_before_station_ids_gets_the_column_and_keeps_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        {
            // The table as it was first made, with a mapping in it.
            let old = rusqlite::Connection::open(dir.path().join("freesky.db")).unwrap();
            old.execute_batch(
                "CREATE TABLE channel_mapping (slug TEXT PRIMARY KEY, name TEXT,
                 number INTEGER UNIQUE, grp TEXT, hidden INTEGER NOT NULL DEFAULT 0,
                 tvg_id TEXT, logo TEXT, sources TEXT);
                 INSERT INTO channel_mapping (slug, name) VALUES ('a', 'Renamed');",
            )
            .unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.mappings()["a"].name.as_deref(), Some("Renamed"));
        s.identities(&[Wanted::new("a", "a")]).await.unwrap();
        s.update_mapping("a", |m| {
            Ok(ChannelMapping {
                station_id: Some("10021".into()),
                ..m.clone()
            })
        })
        .await
        .unwrap();
        drop(s);
        let maps = Store::open(dir.path()).unwrap().mappings();
        assert_eq!(maps["a"].station_id.as_deref(), Some("10021"));
        assert_eq!(maps["a"].name.as_deref(), Some("Renamed"));
    }

    #[tokio::test]
    async fn mappings_persist_and_numbers_stay_unique() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        s.identities(&[Wanted::new("a", "a"), Wanted::new("b", "b")])
            .await
            .unwrap();
        let set = |number: Option<u32>| {
            move |m: &ChannelMapping| {
                Ok(ChannelMapping {
                    number,
                    ..m.clone()
                })
            }
        };
        // b's number is taken; a free one is fine; then b may take a's old 1.
        let err = s.update_mapping("a", set(Some(2))).await.unwrap_err();
        assert!(err.to_string().contains("taken by channel `b`"), "{err}");
        s.update_mapping("a", set(Some(3))).await.unwrap();
        s.update_mapping("b", set(Some(1))).await.unwrap();
        // a cannot go back to 1 now.
        let err = s.update_mapping("a", set(None)).await.unwrap_err();
        assert!(matches!(err, StoreError::Rejected(_)), "{err}");
        s.update_mapping("a", |m| {
            Ok(ChannelMapping {
                sources: Some(vec!["X".into()]),
                hidden: true,
                ..m.clone()
            })
        })
        .await
        .unwrap();
        drop(s);

        let s = Store::open(dir.path()).unwrap();
        let maps = s.mappings();
        assert_eq!(maps["a"].number, Some(3));
        assert!(maps["a"].hidden);
        assert_eq!(maps["a"].sources, Some(vec!["X".to_string()]));
        assert_eq!(maps["b"].number, Some(1));
        // The next new channel skips 3 (a's): 4.
        let ids = s.identities(&[Wanted::new("c", "c")]).await.unwrap();
        assert_eq!(ids[0].number, 4);
        // Resetting everything removes the row.
        s.update_mapping("b", |_| Ok(ChannelMapping::default()))
            .await
            .unwrap();
        drop(s);
        assert!(!Store::open(dir.path())
            .unwrap()
            .mappings()
            .contains_key("b"));
    }
}
