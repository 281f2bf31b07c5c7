//! Viewer accounts: who may watch what, and how many streams at once.
//!
//! Owns the accounts (from `[[users]]` and from the admin API, the latter kept in the
//! store), logins (argon2 password hashes; a dummy hash verified for unknown names so
//! both failures cost the same; a per-address penalty after repeated failures), what
//! an account sees (`groups`, `services`) and its live connections (`conns`). It knows
//! nothing of HTTP: the handlers in `http::xtream` and `http::users` parse requests and
//! call it. Passwords never leave this module: neither the plain text (hashed on
//! arrival, config ones at load) nor the hash appear in any answer or log.

mod conns;
mod penalty;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use serde::{Deserialize, Serialize};

use crate::config::UserConfig;
use crate::model::LineupChannel;
use crate::store::{Store, StoreError, StoredUser};

pub use conns::{leave_shared_counts, share_connections, Conn, ConnGuard, ConnInfo, Conns};
pub use penalty::Penalty;

/// Why a login or a use of an account failed. Mapped to HTTP in `error`.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// Unknown name or wrong password: the same answer for both.
    #[error("wrong user name or password")]
    BadLogin,
    #[error("account `{0}` is disabled")]
    Disabled(String),
    #[error("account `{0}` has expired")]
    Expired(String),
    #[error(
        "connection limit reached: account `{name}` allows {limit} connection(s) at once \
         (max_connections) and all are in use"
    )]
    Limit { name: String, limit: u32 },
    #[error("{0}")]
    Invalid(String),
    #[error("no account named `{0}`")]
    Unknown(String),
    #[error("account `{0}` comes from the config file; change it there")]
    FromConfig(String),
    #[error("account `{0}` exists already")]
    Exists(String),
    /// A link handed to an account that has been removed since.
    #[error("account `{0}` has been removed")]
    Removed(String),
    /// A link handed to an account that no longer sees its channel (groups, services).
    #[error("account `{name}` may no longer watch `{channel}`")]
    NotAllowed { name: String, channel: String },
    /// A link handed to an account before its password changed.
    #[error("account `{0}`'s password has changed since this link was handed out: log in again")]
    PasswordChanged(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One viewer account as freesky holds it: the password only as its argon2 hash.
#[derive(Clone)]
pub struct Account {
    pub name: String,
    /// The PHC string of the salted argon2id hash.
    hash: String,
    /// Changes with the password, the same on every instance: what the tags of the
    /// account's links are made over besides its name (`Accounts::poll_token`), so a
    /// new password ends the old links. A stored account's hash (shared through the
    /// store, salted anew by each change); a `[[users]]` account's, whose hash each
    /// start salts anew, a digest of its password.
    stamp: String,
    /// Streams at once; 0 = unlimited.
    pub max_connections: u32,
    /// As written (`2027-12-31` or a date-time), and as unix seconds (the end of a bare date).
    pub expires: Option<(String, i64)>,
    pub groups: Vec<String>,
    pub services: Vec<String>,
    pub enabled: bool,
    /// Unix seconds: when the store row was made, or when the config was loaded.
    pub created_at: i64,
    /// From `[[users]]` (read only through the API) rather than the store.
    pub from_config: bool,
}

/// What an account's status is now, as Xtream panels spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Active,
    Expired,
    Disabled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "Active",
            Status::Expired => "Expired",
            Status::Disabled => "Disabled",
        }
    }
}

/// Without the hash and the stamp: nothing derived from the password is printed.
impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("name", &self.name)
            .field("max_connections", &self.max_connections)
            .field("expires", &self.expires)
            .field("groups", &self.groups)
            .field("services", &self.services)
            .field("enabled", &self.enabled)
            .field("created_at", &self.created_at)
            .field("from_config", &self.from_config)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
impl Account {
    /// An enabled `[[users]]` account of `name` allowed `max_connections` streams, with
    /// no password, expiry, groups or services.
    pub(crate) fn for_test(name: &str, max_connections: u32) -> Account {
        Account {
            name: name.into(),
            hash: String::new(),
            stamp: String::new(),
            max_connections,
            expires: None,
            groups: Vec::new(),
            services: Vec::new(),
            enabled: true,
            created_at: 0,
            from_config: true,
        }
    }
}

impl Account {
    pub fn status(&self, now: i64) -> Status {
        if !self.enabled {
            Status::Disabled
        } else if self.expires.as_ref().is_some_and(|(_, at)| now > *at) {
            Status::Expired
        } else {
            Status::Active
        }
    }

    /// Whether the account may list, guide and stream `c`: its group is one of
    /// `groups` (case-insensitive) and one of its sources is from `services` (each
    /// list empty: no restriction).
    pub fn sees(&self, c: &LineupChannel) -> bool {
        self.in_groups(&c.group)
            && (self.services.is_empty() || c.sources.iter().any(|s| self.uses(&s.service)))
    }

    /// Whether group (or category) `group` is one of `groups` (case-insensitive; none:
    /// every one). Those without one are listed to players as [`UNCATEGORIZED`], and
    /// chosen by that name.
    pub fn in_groups(&self, group: &str) -> bool {
        let group = shown_group(group);
        self.groups.is_empty() || self.groups.iter().any(|g| g.eq_ignore_ascii_case(group))
    }

    /// Whether this account may play `service`'s sources (`services` empty: every one).
    pub fn uses(&self, service: &str) -> bool {
        self.services.is_empty() || self.services.iter().any(|n| n == service)
    }

    /// The days of catch-up `c` keeps from the sources this account may play.
    pub fn catchup_days(&self, c: &LineupChannel) -> u32 {
        if self.services.is_empty() {
            return c.catchup_days;
        }
        c.catchup_days_of(|s| self.uses(s))
    }

    /// Refuses an account that is disabled or expired.
    pub fn usable(&self, now: i64) -> Result<(), AccountError> {
        match self.status(now) {
            Status::Active => Ok(()),
            Status::Disabled => Err(AccountError::Disabled(self.name.clone())),
            Status::Expired => Err(AccountError::Expired(self.name.clone())),
        }
    }
}

/// An account as the admin API shows it (never its password or hash).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AccountView {
    pub name: String,
    pub max_connections: u32,
    pub expires: Option<String>,
    pub groups: Vec<String>,
    pub services: Vec<String>,
    pub enabled: bool,
    /// `Active`, `Expired` or `Disabled`.
    pub status: &'static str,
    /// `config` (from `[[users]]`, read only here) or `api`.
    pub origin: &'static str,
    pub created_at: i64,
    /// Connections open now (with a shared store: on every instance, as they last
    /// published them).
    pub active_cons: usize,
    /// What each connection open on this instance watches.
    pub connections: Vec<ConnInfo>,
}

/// An account to create, or the fields of one to change (admin API).
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountPatch {
    /// Required when creating; when changing, the path names the account and another
    /// name here is refused (400).
    #[serde(default, deserialize_with = "present")]
    pub name: Option<String>,
    /// Required when creating.
    #[serde(default, deserialize_with = "present")]
    pub password: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub max_connections: Option<u32>,
    /// `null` clears it.
    #[serde(default, deserialize_with = "double_option")]
    pub expires: Option<Option<String>>,
    /// `[]`: every group (`null` is refused: it would read as "unchanged").
    #[serde(default, deserialize_with = "present")]
    pub groups: Option<Vec<String>>,
    /// `[]`: every service.
    #[serde(default, deserialize_with = "present")]
    pub services: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    pub enabled: Option<bool>,
}

/// A field given is a value: `null` is refused (only `expires` takes it, to clear).
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

fn double_option<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// A name players can type in a URL path: letters, digits, `.`, `_`, `-`; 1 to 64.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err("must be 1 to 64 characters".into());
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(format!(
            "`{}` may contain only letters, digits, . _ and -",
            name.escape_debug()
        ));
    }
    // `/live/../PASS/1.ts` is `/PASS/1.ts` to every HTTP client.
    if name.bytes().all(|b| b == b'.') {
        return Err("must not be made only of dots (`.` and `..` are path steps in URLs)".into());
    }
    Ok(())
}

/// `expires` as unix seconds: an RFC 3339 date-time, or a date (valid to its end, UTC).
pub fn parse_expiry(s: &str) -> Result<i64, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp());
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        let end = d
            .and_hms_opt(23, 59, 59)
            .ok_or_else(|| format!("`{s}` is not a valid date"))?;
        return Ok(end.and_utc().timestamp());
    }
    Err(format!(
        "`{}` is not an RFC 3339 date (2027-12-31) or date-time (2027-12-31T23:00:00Z)",
        s.escape_debug()
    ))
}

/// Argon2 hashes computed at once, at most: each takes 19 MiB while it runs, so a
/// burst of logins (wrong ones included: an unknown name is checked against a dummy
/// hash) must not take memory by the gigabyte. Logins past it queue.
const HASHES_AT_ONCE: usize = 2;

/// Runs `f` (an argon2 hash or check) on the blocking pool once a hashing slot is free.
async fn hashing<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    static SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(HASHES_AT_ONCE);
    let slot = SLOTS.acquire().await.ok()?;
    // The slot goes with the job: a caller that gives up (a client that hangs up)
    // does not free it while the hash still runs.
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        f()
    })
    .await
    .ok()
}

/// A salted argon2id hash (PHC string) of `password`.
pub fn hash_password(password: &str) -> String {
    let mut salt = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt)
        .expect("the system random source is available");
    let salt = SaltString::encode_b64(&salt).expect("16 bytes is a valid salt length");
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 hashes any password with default parameters")
        .to_string()
}

fn verify_hash(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Unix seconds now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Every account, the logins and the live connections. Cheap to share (`Arc`).
pub struct Accounts {
    /// By name: config accounts first, store ones added where the name is free.
    map: RwLock<HashMap<String, Arc<Account>>>,
    store: Store,
    /// Verified for unknown names, so an unknown name costs what a wrong password does.
    dummy: String,
    /// Per account, a keyed MAC of the last password that verified against its
    /// current hash: later requests (every `/live/U/P/...` carries the password)
    /// compare MACs instead of running argon2 again. Never the password itself.
    verified: Mutex<HashMap<String, (String, ring::hmac::Tag)>>,
    mac_key: ring::hmac::Key,
    /// Tags the playlist links handed to an account (`poll_token`): the link key's
    /// (`Signer::account_tag_key`), shared by every instance that shares that key.
    tag_key: ring::hmac::Key,
    pub conns: Arc<Conns>,
    pub penalty: Arc<Penalty>,
    /// Woken when a login verifies: the attempts made with it, waiting their turn,
    /// go on at once when it vouches for them too.
    verified_now: Arc<tokio::sync::Notify>,
    /// Logins about to be checked or being checked now (`Checking`).
    checking: Arc<std::sync::atomic::AtomicUsize>,
    /// The admin API's writes here, one at a time (each reads the account it changes).
    writes: tokio::sync::Mutex<()>,
}

/// A login about to be checked or being checked (`Accounts::checking`): counted while
/// on (not while it sleeps its turn); going off wakes the logins waiting for one to
/// vouch for them, as does its drop (the request gone, or the login decided).
struct Checking<'a> {
    count: &'a std::sync::atomic::AtomicUsize,
    done: &'a tokio::sync::Notify,
    on: bool,
}

impl<'a> Checking<'a> {
    fn start(count: &'a std::sync::atomic::AtomicUsize, done: &'a tokio::sync::Notify) -> Self {
        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Self {
            count,
            done,
            on: true,
        }
    }

    fn pause(&mut self) {
        if std::mem::replace(&mut self.on, false) {
            self.count.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            self.done.notify_waiters();
        }
    }

    fn resume(&mut self) {
        if !std::mem::replace(&mut self.on, true) {
            self.count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

impl Drop for Checking<'_> {
    fn drop(&mut self) {
        self.pause();
        self.done.notify_waiters();
    }
}

/// How long an attempt refused a turn (turns handed out `MAX_QUEUE` ahead) waits for a
/// verification in flight to vouch for it before it is refused: a player's first
/// dozen calls made at once with the right password all go on.
const QUEUE_FULL_WAIT: Duration = Duration::from_secs(5);

/// The category players are shown channels and titles without a group under.
pub const UNCATEGORIZED: &str = "Uncategorized";

/// A channel's or title's group as players and the API show it: [`UNCATEGORIZED`] for
/// none.
pub fn shown_group(group: &str) -> &str {
    if group.is_empty() {
        UNCATEGORIZED
    } else {
        group
    }
}

/// How often an account change is made again on the row another instance wrote first.
const TRIES: usize = 5;

impl Accounts {
    /// The accounts of `users` (hashed now) and of the store; `prev` (a config
    /// reload) lends its live connections and login penalties so they carry on.
    /// These accounts tagging playlist links with `key` (`Signer::account_tag_key`);
    /// without, with a key of this process.
    pub fn with_tag_key(mut self, key: ring::hmac::Key) -> Self {
        self.tag_key = key;
        self
    }

    /// The stored accounts that cannot be read: at a start, an error (a store that
    /// hides accounts must not serve as if it had none); at a reload, the ones `prev`
    /// read are kept (the database away for a moment, a damaged page).
    pub fn new(
        users: &[UserConfig],
        store: Store,
        prev: Option<&Accounts>,
    ) -> Result<Self, StoreError> {
        let created = now();
        let mut map = HashMap::new();
        for u in users {
            // When this name was first seen in the config, kept in the store: the same
            // across reloads and restarts (players show it as the account's creation).
            let created_at = store
                .setting_or_init(&format!("users.created_at.{}", u.name), || {
                    created.to_string()
                })
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(created);
            let expires = u
                .expires
                .as_ref()
                .and_then(|e| parse_expiry(e).ok().map(|at| (e.clone(), at)));
            let stamp = config_stamp(u.password.expose());
            // The same password as before the reload: the same hash, so that the
            // logins verified against it are still vouched for (and no argon2 run).
            let hash = prev
                .and_then(|p| p.get(&u.name))
                .filter(|a| a.from_config && a.stamp == stamp)
                .map_or_else(|| hash_password(u.password.expose()), |a| a.hash.clone());
            map.insert(
                u.name.clone(),
                Arc::new(Account {
                    name: u.name.clone(),
                    hash,
                    stamp,
                    max_connections: u.max_connections,
                    expires,
                    groups: u.groups.clone(),
                    services: u.services.clone(),
                    enabled: u.enabled,
                    created_at,
                    from_config: true,
                }),
            );
        }
        match store.users() {
            Ok(rows) => {
                for row in rows {
                    if map.contains_key(&row.name) {
                        tracing::warn!(user = %row.name, "a stored account has the name of a [[users]] entry; the config's wins");
                        continue;
                    }
                    map.insert(row.name.clone(), Arc::new(from_row(row)));
                }
            }
            Err(e) => match prev {
                Some(prev) => {
                    tracing::error!(error = %e, "stored accounts unreadable now; the ones read before are kept");
                    for (name, a) in prev.read().iter().filter(|(_, a)| !a.from_config) {
                        if !map.contains_key(name) {
                            map.insert(name.clone(), a.clone());
                        }
                    }
                }
                None => return Err(e),
            },
        }
        // Kept across config reloads: the playlist links players already hold carry
        // tags made with it.
        let mac_key = prev.map(|p| p.mac_key.clone()).unwrap_or_else(|| {
            let mut key = [0u8; 32];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key)
                .expect("the system random source is available");
            ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key)
        });
        Ok(Self {
            map: RwLock::new(map),
            store,
            dummy: hash_password("freesky dummy password: never a real account's"),
            // Each entry vouches only while its account's hash is the one it
            // verified against: carried over as it is.
            verified: Mutex::new(
                prev.map(|p| p.verified.lock().unwrap_or_else(|e| e.into_inner()).clone())
                    .unwrap_or_default(),
            ),
            tag_key: mac_key.clone(),
            mac_key,
            conns: prev.map(|p| p.conns.clone()).unwrap_or_default(),
            penalty: prev.map(|p| p.penalty.clone()).unwrap_or_default(),
            verified_now: prev.map(|p| p.verified_now.clone()).unwrap_or_default(),
            checking: prev.map(|p| p.checking.clone()).unwrap_or_default(),
            writes: tokio::sync::Mutex::const_new(()),
        })
    }

    /// After a config reload, ends the streams of the `[[users]]` accounts whose
    /// password `prev` (the accounts before it) had otherwise, as a new password set
    /// through the API does: a household throws out a leaked login by editing the
    /// file. Their HLS links are refused by the stamp already.
    pub fn end_new_passwords(&self, prev: &Accounts) {
        let changed: HashSet<String> = {
            let (now, before) = (self.read(), prev.read());
            now.values()
                .filter(|a| {
                    a.from_config
                        && before
                            .get(&a.name)
                            .is_some_and(|b| b.from_config && b.stamp != a.stamp)
                })
                .map(|a| a.name.clone())
                .collect()
        };
        if changed.is_empty() {
            return;
        }
        for (account, channel) in self.conns.end_where(|account, _| changed.contains(account)) {
            tracing::info!(user = %account, %channel, "connection ended: the account's password changed in the config");
        }
    }

    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// Reads the stored accounts again (another instance sharing the store changed
    /// them): stored accounts are replaced, `[[users]]` ones kept.
    pub fn reload_stored(&self) -> Result<(), StoreError> {
        let rows = self.store.users()?;
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        let mut before: HashMap<String, String> = HashMap::new();
        map.retain(|name, a| {
            if !a.from_config {
                before.insert(name.clone(), a.stamp.clone());
            }
            a.from_config
        });
        let mut new_password: HashSet<String> = HashSet::new();
        for row in rows {
            if !map.contains_key(&row.name) {
                let a = from_row(row);
                if before.get(&a.name).is_some_and(|stamp| *stamp != a.stamp) {
                    new_password.insert(a.name.clone());
                }
                map.insert(a.name.clone(), Arc::new(a));
            }
        }
        drop(map);
        // Remembered checks stay: one vouches only while its account's hash is the
        // one it verified against, so a changed password has none.
        if !new_password.is_empty() {
            for (account, channel) in self
                .conns
                .end_where(|account, _| new_password.contains(account))
            {
                tracing::info!(user = %account, %channel, "connection ended: the account's password changed through another instance");
            }
        }
        Ok(())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Account>>> {
        self.map.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The account named `name`, without a password check (the tuner's own account).
    pub fn get(&self, name: &str) -> Option<Arc<Account>> {
        self.read().get(name).cloned()
    }

    /// The account named `name` for the admin API: the running one, else the stored
    /// row (made through another instance sharing the store a moment ago, before the
    /// news reached this one: the admin's next call may land here).
    pub async fn current(&self, name: &str) -> Result<Option<Arc<Account>>, AccountError> {
        if let Some(a) = self.get(name) {
            return Ok(Some(a));
        }
        Ok(self
            .store
            .user(name)
            .await?
            .map(|row| Arc::new(from_row(row))))
    }

    /// Checks a login. Failures from `from` are counted, and once there are several in
    /// a row, each later attempt from there waits first (`Penalty`). A disabled or
    /// expired account with the right password logs in (its status says so); using it
    /// is refused by `Account::usable`.
    pub async fn login(
        &self,
        name: &str,
        password: &str,
        from: Option<IpAddr>,
    ) -> Result<Arc<Account>, AccountError> {
        let account = self.get(name);
        let mac = ring::hmac::sign(&self.mac_key, password.as_bytes());
        let vouched = |a: &Account| {
            self.verified
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(name)
                .filter(|(hash, _)| *hash == a.hash)
                .is_some_and(|(_, tag)| {
                    ring::hmac::verify(&self.mac_key, password.as_bytes(), tag.as_ref()).is_ok()
                })
        };
        if let Some(a) = account.as_ref().filter(|a| vouched(a)) {
            return Ok(a.clone());
        }
        let vouched_now = || account.as_ref().filter(|a| vouched(a)).cloned();
        // Only a login no earlier verification vouches for waits its turn (held until
        // it is decided: one being checked counts as a failure for the next). A
        // player's first calls come at once: the first to verify vouches for the
        // others, which go on then, not at the end of their wait. With too many
        // waiting from there already, an attempt is refused unchecked, unless a
        // verification in flight vouches for it soon.
        // Counted before its turn is taken: an attempt refused a turn meanwhile knows
        // there is a check that may vouch for it.
        let mut checking = Checking::start(&self.checking, &self.verified_now);
        let _turn = match from {
            Some(ip) => match self.penalty.reserve(ip) {
                Some((wait, turn)) => {
                    if !wait.is_zero() {
                        checking.pause();
                        let vouched = self.wait_or_vouched(wait, &vouched_now, false).await;
                        if let Some(a) = vouched {
                            return Ok(a);
                        }
                        checking.resume();
                    }
                    Some(turn)
                }
                // Refused once no check that could vouch for it is running (at once
                // when none is).
                None => {
                    checking.pause();
                    return self
                        .wait_or_vouched(QUEUE_FULL_WAIT, &vouched_now, true)
                        .await
                        .ok_or(AccountError::BadLogin);
                }
            },
            None => None,
        };
        if let Some(a) = vouched_now() {
            return Ok(a);
        }
        let hash = account
            .as_ref()
            .map_or(self.dummy.clone(), |a| a.hash.clone());
        let pw = password.to_string();
        let ok = hashing(move || verify_hash(&hash, &pw))
            .await
            .unwrap_or(false);
        match account {
            Some(a) if ok => {
                self.verified
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(a.name.clone(), (a.hash.clone(), mac));
                Ok(a)
            }
            _ => {
                if let Some(ip) = from {
                    self.penalty.failure(ip);
                }
                Err(AccountError::BadLogin)
            }
        }
    }

    /// Waits `wait`, or less: until a login verified meanwhile vouches for this one
    /// (`vouched` answers the account then); with `while_checking`, only while some
    /// password check is running.
    async fn wait_or_vouched(
        &self,
        wait: Duration,
        vouched: &impl Fn() -> Option<Arc<Account>>,
        while_checking: bool,
    ) -> Option<Arc<Account>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let woken = self.verified_now.notified();
            tokio::pin!(woken);
            // Listening before looking: a verification between the two still wakes.
            woken.as_mut().enable();
            if let Some(a) = vouched() {
                return Some(a);
            }
            if while_checking && self.checking.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                return None;
            }
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => return None,
                () = &mut woken => {}
            }
        }
    }

    /// The accounts whose `services` name a service not among `known` (a service
    /// renamed or removed from the config), with those names, by account name: such an
    /// account sees nothing of them.
    pub fn unknown_services(&self, known: &[&str]) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = self
            .read()
            .values()
            .filter_map(|a| {
                let unknown: Vec<String> = a
                    .services
                    .iter()
                    .filter(|s| !known.contains(&s.as_str()))
                    .cloned()
                    .collect();
                (!unknown.is_empty()).then(|| (a.name.clone(), unknown))
            })
            .collect();
        out.sort();
        out
    }

    /// Every account, by name, as the admin API shows them.
    pub fn list(&self) -> Vec<AccountView> {
        let mut all: Vec<Arc<Account>> = self.read().values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all.iter().map(|a| self.view(a)).collect()
    }

    pub fn view(&self, a: &Account) -> AccountView {
        let connections = self.conns.of(&a.name);
        AccountView {
            name: a.name.clone(),
            max_connections: a.max_connections,
            expires: a.expires.as_ref().map(|(s, _)| s.clone()),
            groups: a.groups.clone(),
            services: a.services.clone(),
            enabled: a.enabled,
            status: a.status(now()).as_str(),
            origin: if a.from_config { "config" } else { "api" },
            created_at: a.created_at,
            active_cons: self.conns.open(&a.name) + self.conns.elsewhere(&a.name),
            connections,
        }
    }

    /// Creates a stored account (admin API).
    pub async fn create(&self, p: AccountPatch) -> Result<AccountView, AccountError> {
        let name = p
            .name
            .clone()
            .ok_or_else(|| AccountError::Invalid("`name` is required".into()))?;
        check_name(&name).map_err(|w| AccountError::Invalid(format!("name: {w}")))?;
        let _one = self.writes.lock().await;
        if self.get(&name).is_some() {
            return Err(AccountError::Exists(name));
        }
        let password = p
            .password
            .clone()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| AccountError::Invalid("`password` is required".into()))?;
        let base = Account {
            name: name.clone(),
            hash: String::new(),
            stamp: String::new(),
            max_connections: 1,
            expires: None,
            groups: Vec::new(),
            services: Vec::new(),
            enabled: true,
            created_at: now(),
            from_config: false,
        };
        let account = apply(base, p, Some(password)).await?;
        // Another instance sharing the store may make the same name meanwhile.
        if !self.store.put_user_if(None, to_row(&account)).await? {
            return Err(AccountError::Exists(name));
        }
        Ok(self.keep(account))
    }

    /// Changes a stored account (admin API); a config account is refused.
    pub async fn change(&self, name: &str, p: AccountPatch) -> Result<AccountView, AccountError> {
        let _one = self.writes.lock().await;
        let mut current = self
            .current(name)
            .await?
            .ok_or_else(|| AccountError::Unknown(name.into()))?;
        if current.from_config {
            return Err(AccountError::FromConfig(name.into()));
        }
        let password = p.password.clone();
        if password.as_deref() == Some("") {
            return Err(AccountError::Invalid("`password` must not be empty".into()));
        }
        let new_password = password.is_some();
        // Written only over the account as this change read it: when another instance
        // sharing the store changed it first, the change is made again on its row.
        let mut tries = 0;
        let view = loop {
            let account = apply((*current).clone(), p.clone(), password.clone()).await?;
            if self
                .store
                .put_user_if(Some(to_row(&current)), to_row(&account))
                .await?
            {
                break self.keep(account);
            }
            tries += 1;
            if tries == TRIES {
                return Err(AccountError::Store(crate::store::StoreError::Contended(
                    format!("account `{name}` kept changing through other instances: try again"),
                )));
            }
            current = match self.store.user(name).await? {
                Some(row) => Arc::new(from_row(row)),
                None => return Err(AccountError::Unknown(name.into())),
            };
        };
        if new_password {
            // A new password throws out whoever used the old one: its `.ts` streams
            // end now (its HLS links are refused at their next fetch).
            for (account, channel) in self.conns.end_where(|account, _| account == name) {
                tracing::info!(user = %account, %channel, "connection ended: the account's password changed");
            }
        }
        Ok(view)
    }

    /// Keeps `a`, as now stored, in the running accounts.
    fn keep(&self, a: Account) -> AccountView {
        let view = self.view(&a);
        self.map
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(a.name.clone(), Arc::new(a));
        view
    }

    /// Removes a stored account (admin API); `enforce` then ends its connections.
    pub async fn delete(&self, name: &str) -> Result<AccountView, AccountError> {
        let _one = self.writes.lock().await;
        let current = self
            .current(name)
            .await?
            .ok_or_else(|| AccountError::Unknown(name.into()))?;
        let view = self.view(&current);
        if current.from_config {
            return Err(AccountError::FromConfig(name.into()));
        }
        self.store.delete_user(name).await?;
        self.map
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        self.verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        Ok(view)
    }

    /// The tag an account's HLS playlist links carry (`?a=`): the account's name, a
    /// MAC over it and the channel (so a link passed to another channel or forged for
    /// another account is ignored), then a MAC over those and its password's stamp (so
    /// a link handed out before the password changed is refused). Holds no password.
    pub fn poll_token(&self, account: &Account, channel: &str) -> String {
        let name = &account.name;
        format!(
            "{name}.{}{}",
            self.tag_mac(name, channel),
            self.stamp_mac(account, channel)
        )
    }

    /// The first part of a tag's MAC: name and channel (the whole MAC of the tags made
    /// before the stamp was added; those are still taken).
    fn tag_mac(&self, name: &str, channel: &str) -> String {
        let tag = ring::hmac::sign(&self.tag_key, format!("{name}\0{channel}").as_bytes());
        hex(&tag.as_ref()[..12])
    }

    /// The second part: name, stamp and channel.
    fn stamp_mac(&self, account: &Account, channel: &str) -> String {
        let signed = format!("{}\0{}\0{channel}", account.name, account.stamp);
        let tag = ring::hmac::sign(&self.tag_key, signed.as_bytes());
        hex(&tag.as_ref()[..8])
    }

    /// A playlist link tagged `token` of `channel` was fetched from `from`: the
    /// account's HLS connection goes on counting (or counts again, refused over the
    /// limit), if the account may still watch
    /// `channel` (`listed`: the lineup's channel, when the lineup has it). A removed,
    /// disabled or expired account, one that no longer sees the channel, or a tag made
    /// before the account's password changed, is refused: its player stops at its next
    /// playlist fetch. Whether the tag checked out: one that does not names no account
    /// (the caller decides whether an untagged playlist link may play: with
    /// `require_account`, only the admin's).
    pub fn hls_polled(
        &self,
        token: &str,
        channel: &str,
        listed: Option<&LineupChannel>,
        from: Option<IpAddr>,
    ) -> Result<bool, AccountError> {
        let Some((account, macs)) = token.rsplit_once('.') else {
            return Ok(false);
        };
        // 24 hex digits, then 16 more (tags made before the stamp have only the 24).
        // A tag is the client's: cut only where a character starts.
        if !macs.is_ascii() {
            return Ok(false);
        }
        let (first, second) = macs.split_at(macs.len().min(24));
        if !matches!(second.len(), 0 | 16) || !ct_eq(first, &self.tag_mac(account, channel)) {
            return Ok(false);
        }
        let a = self
            .get(account)
            .ok_or_else(|| AccountError::Removed(account.to_string()))?;
        if !second.is_empty() && !ct_eq(second, &self.stamp_mac(&a, channel)) {
            return Err(AccountError::PasswordChanged(a.name.clone()));
        }
        a.usable(now())?;
        if listed.is_some_and(|c| !a.sees(c)) {
            return Err(AccountError::NotAllowed {
                name: a.name.clone(),
                channel: channel.to_string(),
            });
        }
        if !self.conns.hls_poll(account, channel, from) {
            // No longer counted (idle for a while, or its player moved to another
            // channel): counted again, within the limit, and without taking over
            // (two players at one address polling old links would take turns).
            self.conns.readmit_hls(&a, channel, from)?;
        }
        Ok(true)
    }

    /// Ends the open connections of accounts that were removed, disabled or have
    /// expired, and those of channels their account no longer sees (`lineup`, when
    /// one is built: a channel it lacks is left alone). A `.ts` stream ends at its
    /// next chunk; an HLS player is refused at its next playlist fetch. Called after
    /// every change of an account (API, another instance, a reload) and every few
    /// seconds (expiry, lineup changes).
    pub fn enforce(&self, lineup: Option<&crate::lineup::Lineup>) {
        let map = self.read().clone();
        let at = now();
        self.conns
            .update_limits(|account| map.get(account).map(|a| a.max_connections));
        let ended = self
            .conns
            .end_where(|account, channel| match map.get(account) {
                None => true,
                Some(a) => {
                    a.usable(at).is_err()
                        || lineup
                            .and_then(|l| l.get(channel))
                            .is_some_and(|c| !a.sees(c))
                }
            });
        for (account, channel) in ended {
            tracing::info!(user = %account, %channel, "connection ended: the account may no longer watch it");
        }
    }

    /// Takes one connection of `a` watching `channel` from `from`, refusing one over its
    /// limit. An HLS player (`hls`) already counted for this channel and address is the
    /// same connection, not a new one. A `.ts` connection lasts as long as the guard.
    pub fn connect(
        &self,
        a: &Account,
        channel: &str,
        from: Option<IpAddr>,
        hls: bool,
    ) -> Result<Conn, AccountError> {
        self.conns.connect(a, channel, from, hls)
    }
}

/// Applies `p` to `a`, hashing a new password (off the async threads: argon2 is slow
/// on purpose).
async fn apply(
    mut a: Account,
    p: AccountPatch,
    password: Option<String>,
) -> Result<Account, AccountError> {
    if let Some(m) = p.max_connections {
        a.max_connections = m;
    }
    if let Some(e) = p.expires {
        a.expires = match e {
            Some(e) => {
                let at =
                    parse_expiry(&e).map_err(|w| AccountError::Invalid(format!("expires: {w}")))?;
                Some((e, at))
            }
            None => None,
        };
    }
    if let Some(g) = p.groups {
        a.groups = g;
    }
    if let Some(s) = p.services {
        a.services = s;
    }
    if let Some(e) = p.enabled {
        a.enabled = e;
    }
    if let Some(pw) = password {
        a.hash = hashing(move || hash_password(&pw)).await.ok_or_else(|| {
            AccountError::Store(StoreError::Join("the password hash did not finish".into()))
        })?;
        a.stamp = a.hash.clone();
    }
    Ok(a)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares without stopping at the first difference.
fn ct_eq(a: &str, b: &str) -> bool {
    subtle::ConstantTimeEq::ct_eq(a.as_bytes(), b.as_bytes()).into()
}

/// A `[[users]]` account's stamp: a digest of its password (never shown; link tags
/// are MACs over it), the same on every instance with that config.
fn config_stamp(password: &str) -> String {
    let d = ring::digest::digest(
        &ring::digest::SHA256,
        format!("freesky account stamp\0{password}").as_bytes(),
    );
    hex(d.as_ref())
}

fn from_row(r: StoredUser) -> Account {
    let expires = r
        .expires
        .and_then(|e| parse_expiry(&e).ok().map(|at| (e, at)));
    Account {
        name: r.name,
        stamp: r.hash.clone(),
        hash: r.hash,
        max_connections: r.max_connections,
        expires,
        groups: r.groups,
        services: r.services,
        enabled: r.enabled,
        created_at: r.created_at,
        from_config: false,
    }
}

fn to_row(a: &Account) -> StoredUser {
    StoredUser {
        name: a.name.clone(),
        hash: a.hash.clone(),
        max_connections: a.max_connections,
        expires: a.expires.as_ref().map(|(s, _)| s.clone()),
        groups: a.groups.clone(),
        services: a.services.clone(),
        enabled: a.enabled,
        created_at: a.created_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `[[users]]` of config text `toml`.
    fn users_of(toml: &str) -> Vec<UserConfig> {
        crate::config::Config::parse(toml, "t.toml", &|_| None)
            .unwrap()
            .users
    }

    #[test]
    fn names_and_expiry() {
        assert!(check_name("alice.b_c-1").is_ok());
        for bad in ["", "a b", "a/b", "ä", &"x".repeat(65), ".", "..", "..."] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_expiry("1970-01-02").unwrap(), 86400 + 86399);
        assert_eq!(parse_expiry("1970-01-01T00:01:00Z").unwrap(), 60);
        assert!(parse_expiry("tomorrow").is_err());
    }

    #[test]
    fn tags_check_the_channel_the_stamp_and_take_the_form_made_before_the_stamp() {
        let users =
            users_of("[[users]]\nname = \"alice\"\npassword = \"alice-pw\"\nmax_connections = 0\n");
        let a = Accounts::new(&users, Store::in_memory(), None).unwrap();
        let alice = a.get("alice").unwrap();
        let tag = a.poll_token(&alice, "news");
        assert_eq!(tag.len(), "alice.".len() + 40);
        assert!(matches!(a.hls_polled(&tag, "news", None, None), Ok(true)));
        // Another channel's link, a garbled or unknown one: no account (as untagged).
        assert!(matches!(a.hls_polled(&tag, "sport", None, None), Ok(false)));
        for odd in [
            "alice.",
            "alice",
            "alice.é",
            &format!("alice.{}é", "0".repeat(23)),
        ] {
            assert!(
                matches!(a.hls_polled(odd, "news", None, None), Ok(false)),
                "{odd}"
            );
        }
        let garbled = format!("nobody.{}", &tag["alice.".len()..]);
        assert!(matches!(
            a.hls_polled(&garbled, "news", None, None),
            Ok(false)
        ));
        // A tag of the version before the stamp (its first MAC alone) still plays.
        let before = &tag[..tag.len() - 16];
        assert!(matches!(a.hls_polled(before, "news", None, None), Ok(true)));
        // The same name with another password: the second MAC no longer checks out.
        let users =
            users_of("[[users]]\nname = \"alice\"\npassword = \"new-pw\"\nmax_connections = 0\n");
        let b = Accounts::new(&users, Store::in_memory(), None)
            .unwrap()
            .with_tag_key(a.tag_key.clone());
        assert!(matches!(
            b.hls_polled(&tag, "news", None, None),
            Err(AccountError::PasswordChanged(_))
        ));
        assert!(!format!("{alice:?}").contains(&alice.stamp));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_right_login_does_not_reset_the_wait_for_guesses_at_another_account() {
        let users = users_of(
            "[[users]]\nname = \"alice\"\npassword = \"alice-pw\"\n\n\
             [[users]]\nname = \"bob\"\npassword = \"bob-pw\"\n",
        );
        let a = Accounts::new(&users, Store::in_memory(), None).unwrap();
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        assert!(a.login("bob", "bob-pw", Some(ip)).await.is_ok());
        for _ in 0..3 {
            assert!(a.login("alice", "guess", Some(ip)).await.is_err());
        }
        assert!(!a.penalty.delay(ip).is_zero());
        // Bob logs in again (verified before: no wait, no turn taken) and anew.
        assert!(a.login("bob", "bob-pw", Some(ip)).await.is_ok());
        assert!(
            !a.penalty.delay(ip).is_zero(),
            "a right login clears nothing"
        );
    }

    /// A player's first calls, made at once with the right password from a fresh
    /// address, all go on: the first verification vouches for the others, also for
    /// those whose turn would have come more than `MAX_QUEUE` ahead (refused before).
    /// Guesses made at once with them still wait their turns, and are refused.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_players_first_calls_at_once_all_go_on() {
        let users = users_of("[[users]]\nname = \"judy\"\npassword = \"judy-pw\"\n");
        let a = Arc::new(Accounts::new(&users, Store::in_memory(), None).unwrap());
        let ip: IpAddr = "192.0.2.10".parse().unwrap();
        let calls: Vec<_> = (0..20)
            .map(|_| {
                let a = a.clone();
                tokio::spawn(async move { a.login("judy", "judy-pw", Some(ip)).await.is_ok() })
            })
            .collect();
        for (i, call) in calls.into_iter().enumerate() {
            assert!(call.await.unwrap(), "call {i} was refused");
        }
        let guess = a.login("judy", "guess", Some(ip)).await;
        assert!(guess.is_err());
    }

    /// An attempt refused a turn (turns handed out `MAX_QUEUE` ahead) is refused at
    /// once when no password check is running that could vouch for it: a burst of
    /// guesses does not hold a connection each for `QUEUE_FULL_WAIT`.
    #[tokio::test]
    async fn a_guess_past_the_queue_with_no_check_running_is_refused_at_once() {
        let users = users_of("[[users]]\nname = \"judy\"\npassword = \"judy-pw\"\n");
        let a = Accounts::new(&users, Store::in_memory(), None).unwrap();
        let ip: IpAddr = "192.0.2.11".parse().unwrap();
        for _ in 0..20 {
            a.penalty.failure(ip);
        }
        let mut turns = Vec::new();
        while let Some(turn) = a.penalty.reserve(ip) {
            turns.push(turn);
        }
        // Held, it would answer after QUEUE_FULL_WAIT exactly.
        let answer = tokio::time::timeout(
            QUEUE_FULL_WAIT - Duration::from_secs(1),
            a.login("judy", "guess", Some(ip)),
        )
        .await
        .expect("held as if a check could vouch for it");
        assert!(answer.is_err());
    }

    /// A config reload (new accounts from the old) and a read of the stored accounts
    /// keep the logins verified before: players are not made to wait their turns again.
    #[tokio::test]
    async fn verified_logins_outlive_a_reload_but_not_a_password_change() {
        let parse =
            |pw: &str| users_of(&format!("[[users]]\nname = \"al\"\npassword = \"{pw}\"\n"));
        let store = Store::in_memory();
        let a = Accounts::new(&parse("al-pw-1"), store.clone(), None).unwrap();
        assert!(a.login("al", "al-pw-1", None).await.is_ok());
        a.reload_stored().unwrap();
        let vouched = |a: &Accounts| {
            let hash = a.get("al").unwrap().hash.clone();
            a.verified
                .lock()
                .unwrap()
                .get("al")
                .is_some_and(|(h, _)| *h == hash)
        };
        assert!(vouched(&a), "kept by a read of the stored accounts");
        let same = Accounts::new(&parse("al-pw-1"), store.clone(), Some(&a)).unwrap();
        assert!(vouched(&same), "kept by a reload with the same password");
        let changed = Accounts::new(&parse("al-pw-2"), store, Some(&same)).unwrap();
        assert!(!vouched(&changed), "not by one with another");
        assert!(changed.login("al", "al-pw-1", None).await.is_err());
    }

    /// Channels and titles without a group are listed as "Uncategorized": an account
    /// limited to that group sees them, and only them.
    #[test]
    fn the_uncategorized_group_is_chosen_by_its_name() {
        let users = users_of(
            "[[users]]\nname = \"u\"\npassword = \"u-password\"\ngroups = [\"uncategorized\"]\n",
        );
        let a = Accounts::new(&users, Store::in_memory(), None).unwrap();
        let u = a.get("u").unwrap();
        assert!(u.in_groups(""));
        assert!(u.in_groups("Uncategorized"));
        assert!(!u.in_groups("News"));
    }

    #[test]
    fn accounts_naming_a_service_no_longer_configured_are_found() {
        let users = users_of(
            "[[services]]\nname = \"A\"\nkind = \"demo\"\n\n\
             [[services]]\nname = \"B\"\nkind = \"demo\"\n\n\
             [[users]]\nname = \"alice\"\npassword = \"pw\"\nservices = [\"A\", \"B\"]\n\n\
             [[users]]\nname = \"bob\"\npassword = \"pw\"\nservices = [\"A\"]\n",
        );
        let a = Accounts::new(&users, Store::in_memory(), None).unwrap();
        assert!(a.unknown_services(&["A", "B"]).is_empty());
        assert_eq!(
            a.unknown_services(&["A2", "B"]),
            [
                ("alice".to_string(), vec!["A".to_string()]),
                ("bob".to_string(), vec!["A".to_string()])
            ]
        );
    }

    #[test]
    fn hashes_are_salted_and_verify() {
        let a = hash_password("pw");
        let b = hash_password("pw");
        assert_ne!(a, b);
        assert!(a.starts_with("$argon2id$"));
        assert!(verify_hash(&a, "pw"));
        assert!(!verify_hash(&a, "pW"));
    }
}
