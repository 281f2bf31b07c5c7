//! Persisted runtime state: what a user changed at runtime (services enabled or
//! disabled, priorities, the channel mapping) and the stable slug and number of every
//! lineup channel.
//!
//! SQLite (bundled) in WAL mode with `synchronous=FULL` in `state_dir/freesky.db`: a
//! change is acknowledged only after its transaction committed, so a `kill -9` right
//! after the answer loses nothing. The config file is the user's: this module never
//! touches it. Reads come from an in-memory mirror loaded at open; writes go through
//! `spawn_blocking` so the async runtime never waits on the disk.
//!
//! `state_dir` holds secrets (the proxy key, the tuner's DeviceAuth): it is created
//! readable by its owner only (0700, `create_private_dir`), and one that group or
//! others can open is reported at start (`loose_permissions`), never changed: the
//! directory is the user's.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension};

use crate::model::ChannelMapping;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("state store: {0}")]
    Io(#[from] std::io::Error),
    #[error("state store: background task failed: {0}")]
    Join(String),
    /// A change refused because of what is stored (a channel number already in use);
    /// the caller's fault, nothing was written.
    #[error("{0}")]
    Rejected(String),
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
    (mode & 0o077 != 0).then(|| {
        let path = path.display();
        format!(
            "{path} is open to group or others (mode {:03o}) but holds secrets (the proxy key \
             signs every stream link): run `chmod {private:o} {path}`",
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

#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    /// Where the database lives; `None` for an in-memory store (tests, `freesky playlist`).
    path: Option<PathBuf>,
    conn: Mutex<Connection>,
    mirror: Mutex<Mirror>,
    /// Serialises identity assignment so two lineup builds never give one key two numbers.
    assign: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Mirror {
    services: HashMap<String, ServiceOverride>,
    /// merge key -> identity
    channels: HashMap<String, ChannelIdentity>,
    /// slugs in use, to keep them unique
    slugs: std::collections::HashSet<String>,
    next_number: u32,
    /// slug -> the user's overrides (only channels that have some), kept when the
    /// channel leaves the upstream lists so they apply again when it comes back.
    mappings: HashMap<String, ChannelMapping>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS service_state (
    name     TEXT PRIMARY KEY,
    enabled  INTEGER,
    priority INTEGER
);
CREATE TABLE IF NOT EXISTS settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS channel_identity (
    merge_key TEXT PRIMARY KEY,
    slug      TEXT NOT NULL UNIQUE,
    number    INTEGER NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS channel_mapping (
    slug     TEXT PRIMARY KEY,
    name     TEXT,
    number   INTEGER UNIQUE,
    grp      TEXT,
    hidden   INTEGER NOT NULL DEFAULT 0,
    tvg_id   TEXT,
    logo     TEXT,
    sources  TEXT  -- JSON array of pinned service names
);
CREATE TABLE IF NOT EXISTS viewer_account (
    name            TEXT PRIMARY KEY,
    hash            TEXT NOT NULL,  -- salted argon2id, PHC string; never the password
    max_connections INTEGER NOT NULL,
    expires         TEXT,
    groups          TEXT NOT NULL,  -- JSON array
    services        TEXT NOT NULL,  -- JSON array
    enabled         INTEGER NOT NULL,
    created_at      INTEGER NOT NULL
);
-- Generic persisted state of features that need no query beyond all of one kind:
-- a namespace (guide_match, ...), a key within it, and a JSON value.
CREATE TABLE IF NOT EXISTS record (
    ns    TEXT NOT NULL,
    key   TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (ns, key)
);
-- Stable sequential ids per namespace (movie and series ids...), never reused.
CREATE TABLE IF NOT EXISTS record_id (
    ns  TEXT NOT NULL,
    key TEXT NOT NULL,
    id  INTEGER NOT NULL,
    PRIMARY KEY (ns, key),
    UNIQUE (ns, id)
);
";

/// A viewer account made through the admin API, as stored (the password only as its hash).
#[derive(Debug, Clone)]
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

impl Store {
    /// Opens (creating) `dir/freesky.db`; creates `dir` owner-only, or warns when
    /// an existing `dir` is open to group or others.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        if !create_private_dir(dir)? {
            if let Some(warning) = mode_of(dir).and_then(|m| loose_permissions(dir, m, 0o700)) {
                tracing::warn!("{warning}");
            }
        }
        let path = dir.join("freesky.db");
        let conn = Connection::open(&path)?;
        Self::init(conn, Some(path))
    }

    /// A store that forgets everything when dropped.
    pub fn in_memory() -> Self {
        let conn = Connection::open_in_memory().expect("an in-memory SQLite database always opens");
        Self::init(conn, None).expect("the schema applies to an empty in-memory database")
    }

    fn init(conn: Connection, path: Option<PathBuf>) -> Result<Self, StoreError> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        let mut mirror = Mirror {
            next_number: 1,
            ..Default::default()
        };
        {
            let mut stmt = conn.prepare("SELECT name, enabled, priority FROM service_state")?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<bool>>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                ))
            })?;
            for row in rows {
                let (name, enabled, priority) = row?;
                mirror
                    .services
                    .insert(name, ServiceOverride { enabled, priority });
            }
            let mut stmt = conn.prepare("SELECT merge_key, slug, number FROM channel_identity")?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, u32>(2)?,
                ))
            })?;
            for row in rows {
                let (key, slug, number) = row?;
                mirror.next_number = mirror.next_number.max(number.saturating_add(1));
                mirror.slugs.insert(slug.clone());
                mirror
                    .channels
                    .insert(key, ChannelIdentity { slug, number });
            }
            let mut stmt = conn.prepare(
                "SELECT slug, name, number, grp, hidden, tvg_id, logo, sources FROM channel_mapping",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    ChannelMapping {
                        name: r.get(1)?,
                        number: r.get(2)?,
                        group: r.get(3)?,
                        hidden: r.get(4)?,
                        tvg_id: r.get(5)?,
                        logo: r.get(6)?,
                        sources: None,
                    },
                    r.get::<_, Option<String>>(7)?,
                ))
            })?;
            for row in rows {
                let (slug, mut mapping, sources) = row?;
                mapping.sources = sources.and_then(|json| {
                    serde_json::from_str::<Vec<String>>(&json)
                        .inspect_err(|e| {
                            tracing::warn!(channel = %slug, error = %e, "stored source pins unreadable, ignored");
                        })
                        .ok()
                        .filter(|v| !v.is_empty())
                });
                mirror.mappings.insert(slug, mapping);
            }
        }
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                conn: Mutex::new(conn),
                mirror: Mutex::new(mirror),
                assign: tokio::sync::Mutex::new(()),
            }),
        })
    }

    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    /// The value of setting `key`, set to `init()` the first time and never changed
    /// after (identities such as the tuner's DeviceID). Durable before it returns.
    pub fn setting_or_init(
        &self,
        key: &str,
        init: impl FnOnce() -> String,
    ) -> Result<String, StoreError> {
        let conn = self
            .inner
            .conn
            .lock()
            .expect("store connection lock is never poisoned");
        let found: Option<String> = conn
            .query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()?;
        if let Some(v) = found {
            return Ok(v);
        }
        let value = init();
        conn.execute(
            "INSERT INTO settings (key, value) VALUES (?1, ?2)",
            params![key, value],
        )?;
        Ok(value)
    }

    pub fn service_override(&self, name: &str) -> ServiceOverride {
        self.mirror()
            .services
            .get(name)
            .copied()
            .unwrap_or_default()
    }

    /// Persists a service's enabled flag; returns once it is durable.
    pub async fn set_enabled(&self, name: &str, enabled: bool) -> Result<(), StoreError> {
        let n = name.to_string();
        self.write(move |c| {
            c.execute(
                "INSERT INTO service_state (name, enabled) VALUES (?1, ?2)
                 ON CONFLICT(name) DO UPDATE SET enabled = excluded.enabled",
                params![n, enabled],
            )
            .map(drop)
        })
        .await?;
        self.mirror()
            .services
            .entry(name.to_string())
            .or_default()
            .enabled = Some(enabled);
        Ok(())
    }

    /// Persists a service's priority; returns once it is durable.
    pub async fn set_priority(&self, name: &str, priority: i64) -> Result<(), StoreError> {
        let n = name.to_string();
        self.write(move |c| {
            c.execute(
                "INSERT INTO service_state (name, priority) VALUES (?1, ?2)
                 ON CONFLICT(name) DO UPDATE SET priority = excluded.priority",
                params![n, priority],
            )
            .map(drop)
        })
        .await?;
        self.mirror()
            .services
            .entry(name.to_string())
            .or_default()
            .priority = Some(priority);
        Ok(())
    }

    /// The identity of every merge key, assigning (and persisting) new ones: the slug is
    /// `wanted` made unique, the number the next free one. Known keys never change.
    pub async fn identities(
        &self,
        keys: &[(String, String)],
    ) -> Result<Vec<ChannelIdentity>, StoreError> {
        let _guard = self.inner.assign.lock().await;
        let mut fresh: Vec<(String, String, u32)> = Vec::new();
        {
            let mut m = self.mirror();
            let renumbered: std::collections::HashSet<u32> =
                m.mappings.values().filter_map(|x| x.number).collect();
            // Keys assigned in this call, and the next suffix to try per wanted slug: a
            // first start lists every channel as new (200,000 of them with a big
            // provider), so neither may be a scan of what came before.
            let mut seen: std::collections::HashSet<&str> = std::collections::HashSet::new();
            let mut suffixes: HashMap<String, u32> = HashMap::new();
            for (key, wanted) in keys {
                if m.channels.contains_key(key) || !seen.insert(key.as_str()) {
                    continue;
                }
                let base = if wanted.is_empty() {
                    "channel"
                } else {
                    wanted.as_str()
                };
                let mut slug = base.to_string();
                if m.slugs.contains(&slug) {
                    let n = suffixes.entry(slug.clone()).or_insert(2);
                    loop {
                        slug = format!("{base}-{n}");
                        *n += 1;
                        if !m.slugs.contains(&slug) {
                            break;
                        }
                    }
                }
                m.slugs.insert(slug.clone());
                // The next free number: skip those a mapping gave to other channels.
                let mut number = m.next_number;
                while renumbered.contains(&number) {
                    number += 1;
                }
                m.next_number = number + 1;
                fresh.push((key.clone(), slug, number));
            }
        }
        if !fresh.is_empty() {
            // Shared with the writer rather than copied: a first start writes every
            // channel of the lineup (150,000 with a big provider).
            let fresh = std::sync::Arc::new(fresh);
            let rows = fresh.clone();
            let written = self
                .write(move |c| {
                    let tx = c.transaction()?;
                    {
                        let mut stmt =
                            tx.prepare("INSERT OR IGNORE INTO channel_identity (merge_key, slug, number) VALUES (?1, ?2, ?3)")?;
                        for (k, s, n) in rows.iter() {
                            stmt.execute(params![k, s, n])?;
                        }
                    }
                    tx.commit()
                })
                .await;
            // The writer's share is gone once `write` returned.
            let fresh =
                std::sync::Arc::try_unwrap(fresh).unwrap_or_else(|shared| (*shared).clone());
            let mut m = self.mirror();
            if let Err(e) = written {
                // Give the slugs and numbers back: nothing was persisted.
                for (_, s, _) in &fresh {
                    m.slugs.remove(s);
                }
                return Err(e);
            }
            for (k, slug, number) in fresh {
                m.channels.insert(k, ChannelIdentity { slug, number });
            }
        }
        let m = self.mirror();
        Ok(keys
            .iter()
            .map(|(k, _)| {
                m.channels
                    .get(k)
                    .cloned()
                    .expect("every key was assigned above")
            })
            .collect())
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
        change: impl FnOnce(&ChannelMapping) -> Result<ChannelMapping, String>,
    ) -> Result<ChannelMapping, StoreError> {
        // The same lock as number assignment: a new channel never takes a number
        // that is being given to another one here.
        let _guard = self.inner.assign.lock().await;
        let next = {
            let m = self.mirror();
            let current = m.mappings.get(slug).cloned().unwrap_or_default();
            let next = change(&current).map_err(StoreError::Rejected)?;
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
            next
        };
        let row = next.clone();
        let key = slug.to_string();
        self.write(move |c| {
            if row.is_empty() {
                c.execute("DELETE FROM channel_mapping WHERE slug = ?1", [&key])?;
                return Ok(());
            }
            let sources = row
                .sources
                .as_ref()
                .map(|s| serde_json::to_string(s).expect("a list of strings always serialises"));
            // An upsert, not INSERT OR REPLACE: a duplicate number must fail, not
            // silently delete the other channel's row.
            c.execute(
                "INSERT INTO channel_mapping
                 (slug, name, number, grp, hidden, tvg_id, logo, sources)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT(slug) DO UPDATE SET name = excluded.name,
                   number = excluded.number, grp = excluded.grp, hidden = excluded.hidden,
                   tvg_id = excluded.tvg_id, logo = excluded.logo, sources = excluded.sources",
                params![
                    key, row.name, row.number, row.group, row.hidden, row.tvg_id, row.logo, sources
                ],
            )
            .map(drop)
        })
        .await?;
        let mut m = self.mirror();
        if next.is_empty() {
            m.mappings.remove(slug);
        } else {
            m.mappings.insert(slug.to_string(), next.clone());
        }
        Ok(next)
    }

    fn mirror(&self) -> std::sync::MutexGuard<'_, Mirror> {
        // A panic while holding the lock cannot leave the mirror half-written (every
        // update is a single insert), so a poisoned lock is still usable.
        self.inner.mirror.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The viewer accounts made through the admin API.
    pub fn users(&self) -> Result<Vec<StoredUser>, StoreError> {
        let conn = self.inner.conn.lock().unwrap_or_else(|p| p.into_inner());
        let mut stmt = conn.prepare(
            "SELECT name, hash, max_connections, expires, groups, services, enabled, created_at
             FROM viewer_account ORDER BY name",
        )?;
        let list = |json: String| serde_json::from_str::<Vec<String>>(&json).unwrap_or_default();
        let rows = stmt.query_map([], |r| {
            Ok(StoredUser {
                name: r.get(0)?,
                hash: r.get(1)?,
                max_connections: r.get(2)?,
                expires: r.get(3)?,
                groups: list(r.get(4)?),
                services: list(r.get(5)?),
                enabled: r.get(6)?,
                created_at: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Creates or replaces a viewer account; returns once it is durable.
    pub async fn put_user(&self, u: StoredUser) -> Result<(), StoreError> {
        let groups = serde_json::to_string(&u.groups).unwrap_or_else(|_| "[]".into());
        let services = serde_json::to_string(&u.services).unwrap_or_else(|_| "[]".into());
        self.write(move |c| {
            c.execute(
                "INSERT OR REPLACE INTO viewer_account
                 (name, hash, max_connections, expires, groups, services, enabled, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    u.name,
                    u.hash,
                    u.max_connections,
                    u.expires,
                    groups,
                    services,
                    u.enabled,
                    u.created_at
                ],
            )
            .map(drop)
        })
        .await
    }

    /// Removes a viewer account; returns once it is durable.
    pub async fn delete_user(&self, name: &str) -> Result<(), StoreError> {
        let n = name.to_string();
        self.write(move |c| {
            c.execute("DELETE FROM viewer_account WHERE name = ?1", params![n])
                .map(drop)
        })
        .await
    }

    /// Every record of namespace `ns`, as (key, JSON value), in key order. Values that
    /// are no longer valid JSON are skipped with a warning.
    pub fn records(&self, ns: &str) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
        let conn = self.inner.conn.lock().unwrap_or_else(|p| p.into_inner());
        let mut stmt = conn.prepare("SELECT key, value FROM record WHERE ns = ?1 ORDER BY key")?;
        let rows = stmt.query_map([ns], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (key, value) = row?;
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
        self.write(move |c| {
            c.execute(
                "INSERT OR REPLACE INTO record (ns, key, value) VALUES (?1, ?2, ?3)",
                params![ns, key, value],
            )
            .map(drop)
        })
        .await
    }

    /// Removes record `key` of namespace `ns` (absent is fine); returns once durable.
    pub async fn delete_record(&self, ns: &str, key: &str) -> Result<(), StoreError> {
        let (ns, key) = (ns.to_string(), key.to_string());
        self.write(move |c| {
            c.execute(
                "DELETE FROM record WHERE ns = ?1 AND key = ?2",
                params![ns, key],
            )
            .map(drop)
        })
        .await
    }

    /// The stable id of each key in namespace `ns`, in the order given: ids already
    /// given keep their value forever; new keys get the next unused ids (from 1), all
    /// written in one transaction before this returns, so a restart gives the same ids.
    pub async fn ids(&self, ns: &str, keys: Vec<String>) -> Result<Vec<u64>, StoreError> {
        let ns = ns.to_string();
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || -> Result<Vec<u64>, StoreError> {
            let mut conn = inner.conn.lock().unwrap_or_else(|p| p.into_inner());
            let tx = conn.transaction()?;
            let mut known: HashMap<String, u64> = HashMap::new();
            let mut next = 1u64;
            {
                let mut stmt = tx.prepare("SELECT key, id FROM record_id WHERE ns = ?1")?;
                let rows =
                    stmt.query_map([&ns], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
                for row in rows {
                    let (key, id) = row?;
                    let id = u64::try_from(id).unwrap_or(0);
                    next = next.max(id + 1);
                    known.insert(key, id);
                }
            }
            let mut out = Vec::with_capacity(keys.len());
            {
                let mut insert =
                    tx.prepare("INSERT INTO record_id (ns, key, id) VALUES (?1, ?2, ?3)")?;
                for key in keys {
                    let id = match known.get(&key) {
                        Some(id) => *id,
                        None => {
                            let id = next;
                            next += 1;
                            insert.execute(params![ns, key, id as i64])?;
                            known.insert(key, id);
                            id
                        }
                    };
                    out.push(id);
                }
            }
            tx.commit()?;
            Ok(out)
        })
        .await
        .map_err(|e| StoreError::Join(e.to_string()))?
    }

    async fn write<F>(&self, f: F) -> Result<(), StoreError>
    where
        F: FnOnce(&mut Connection) -> Result<(), rusqlite::Error> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = inner.conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut conn)
        })
        .await
        .map_err(|e| StoreError::Join(e.to_string()))??;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(mode_of(&root.path().join("a")), Some(0o700));

        let shared = root.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
        Store::open(&shared).unwrap();
        assert_eq!(mode_of(&shared), Some(0o755), "warned about, not changed");
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

    #[tokio::test]
    async fn identities_are_stable_and_unique() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let ids = s
            .identities(&[
                ("tvg:a".into(), "news".into()),
                ("name:news".into(), "news".into()),
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
        s.set_enabled("A", false).await.unwrap();
        drop(s);

        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.service_override("A").enabled, Some(false));
        let ids = s
            .identities(&[
                ("new".into(), "x".into()),
                ("name:news".into(), "news".into()),
            ])
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
    async fn mappings_persist_and_numbers_stay_unique() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        s.identities(&[("a".into(), "a".into()), ("b".into(), "b".into())])
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
        let ids = s.identities(&[("c".into(), "c".into())]).await.unwrap();
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
