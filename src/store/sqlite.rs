//! The embedded backend: SQLite (bundled) in WAL mode with `synchronous=FULL` in
//! `state_dir/freesky.db`, one process owning it. A change is acknowledged only after
//! its transaction committed, so a `kill -9` right after the answer loses nothing.
//! Every call blocks on the disk: the store runs them on the blocking pool.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};

use super::{lock_mirror, Backend, IdentityRow, Mirror, ServiceOverride, StoreError, StoredUser};
use crate::model::ChannelMapping;

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
    sources  TEXT,  -- JSON array of pinned service names
    station_id TEXT
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

pub(super) struct Sqlite {
    conn: Mutex<Connection>,
    /// The database file as opened, to tell when it was deleted or replaced under the
    /// running process (writes would then go to a file no one will open again);
    /// `None` in memory.
    file: Option<FileId>,
    /// Whether that was logged (once).
    gone_logged: AtomicBool,
}

/// A file's path and identity (device and inode) when it was opened.
struct FileId {
    path: PathBuf,
    #[cfg(unix)]
    id: (u64, u64),
}

impl FileId {
    fn of(path: &Path) -> std::io::Result<Self> {
        #[cfg(unix)]
        let id = {
            use std::os::unix::fs::MetadataExt;
            let m = std::fs::metadata(path)?;
            (m.dev(), m.ino())
        };
        Ok(Self {
            path: path.to_path_buf(),
            #[cfg(unix)]
            id,
        })
    }

    /// Whether `path` is still the file that was opened.
    fn still_there(&self) -> bool {
        match FileId::of(&self.path) {
            #[cfg(unix)]
            Ok(now) => now.id == self.id,
            #[cfg(not(unix))]
            Ok(_) => true,
            Err(_) => false,
        }
    }
}

impl Sqlite {
    pub(super) fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        // SQLite opens a file it may not write read-only, silently: every change
        // would then fail. Said at the open instead (`open_error`).
        if conn.is_readonly(rusqlite::MAIN_DB)? {
            return Err(StoreError::Sqlite(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_READONLY),
                Some("the file is not writable by this user".into()),
            )));
        }
        let mut store = Self::init(conn)?;
        store.file = Some(FileId::of(path)?);
        Ok(store)
    }

    /// The store at `path`, opened to be read only (`freesky copy-state`): nothing is
    /// created or changed, and a running freesky may go on writing it.
    pub(super) fn open_read_only(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(Self {
            conn: Mutex::new(conn),
            file: None,
            gone_logged: AtomicBool::new(false),
        })
    }

    /// Every row of every table, read in one transaction (a consistent copy).
    pub(super) fn dump(&self) -> Result<super::Dump, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut dump = super::Dump::default();
        {
            let mut q =
                tx.prepare("SELECT name, enabled, priority FROM service_state ORDER BY name")?;
            dump.services = q
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<_, _>>()?;
            let mut q = tx.prepare("SELECT key, value FROM settings ORDER BY key")?;
            dump.settings = q
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            let mut q =
                tx.prepare("SELECT merge_key, slug, number FROM channel_identity ORDER BY number")?;
            dump.identities = q
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<_, _>>()?;
            // Read only: a store made before a column was added is read without it.
            let station_id = if has_column(&tx, "channel_mapping", "station_id")? {
                "station_id"
            } else {
                "NULL"
            };
            let mut q = tx.prepare(&format!(
                "SELECT slug, name, number, grp, hidden, tvg_id, logo, sources, {station_id}
                 FROM channel_mapping ORDER BY slug"
            ))?;
            dump.mappings = q
                .query_map([], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                        r.get(7)?,
                        r.get(8)?,
                    ))
                })?
                .collect::<Result<_, _>>()?;
            dump.users = users_of(&tx)?;
            let mut q = tx.prepare("SELECT ns, key, value FROM record ORDER BY ns, key")?;
            dump.records = q
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<_, _>>()?;
            let mut q = tx.prepare("SELECT ns, key, id FROM record_id ORDER BY ns, id")?;
            dump.record_ids = q
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<_, _>>()?;
        }
        tx.commit()?;
        Ok(dump)
    }

    pub(super) fn in_memory() -> Self {
        let conn = Connection::open_in_memory().expect("an in-memory SQLite database always opens");
        Self::init(conn).expect("the schema applies to an empty in-memory database")
    }

    fn init(conn: Connection) -> Result<Self, StoreError> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        add_columns(&conn)?;
        Ok(Self {
            conn: Mutex::new(conn),
            file: None,
            gone_logged: AtomicBool::new(false),
        })
    }

    /// `Ok` while the file is the one opened. Deleted (a lost or removed state_dir) or
    /// replaced, a change written now would go to a file no one opens again: a change
    /// a user asks for is refused (`StoreError::Gone`) rather than acknowledged and
    /// lost at the next start.
    fn still_there(&self) -> Result<(), StoreError> {
        let Some(file) = self.file.as_ref().filter(|f| !f.still_there()) else {
            return Ok(());
        };
        let e = StoreError::Gone(file.path.display().to_string());
        if !self.gone_logged.swap(true, Ordering::Relaxed) {
            tracing::error!("{e}");
        }
        Err(e)
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Columns added since the table was first made, added to a store made before them.
fn add_columns(conn: &Connection) -> rusqlite::Result<()> {
    for (table, column, kind) in [("channel_mapping", "station_id", "TEXT")] {
        if !has_column(conn, table, column)? {
            conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {kind}"))?;
        }
    }
    Ok(())
}

fn has_column(conn: &Connection, table: &str, column: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT count(*) > 0 FROM pragma_table_info(?1) WHERE name = ?2",
        [table, column],
        |r| r.get(0),
    )
}

/// Every viewer account made through the API, by name.
fn users_of(conn: &Connection) -> rusqlite::Result<Vec<StoredUser>> {
    let mut stmt = conn.prepare(
        "SELECT name, hash, max_connections, expires, groups, services, enabled, created_at
         FROM viewer_account ORDER BY name",
    )?;
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
    rows.collect()
}

/// The channel identities whose number is above `after` (0: all).
fn identities_of(conn: &Connection, after: u32) -> rusqlite::Result<Vec<IdentityRow>> {
    let mut stmt =
        conn.prepare("SELECT merge_key, slug, number FROM channel_identity WHERE number > ?1")?;
    let rows = stmt.query_map([after], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    rows.collect()
}

/// A JSON list of strings as stored (an unreadable one is empty).
fn list(json: String) -> Vec<String> {
    serde_json::from_str::<Vec<String>>(&json).unwrap_or_default()
}

/// The pinned sources of `slug` as stored (`None`: none, or unreadable with a warning).
pub(super) fn sources_of(slug: &str, json: Option<String>) -> Option<Vec<String>> {
    json.and_then(|json| {
        serde_json::from_str::<Vec<String>>(&json)
            .inspect_err(|e| {
                tracing::warn!(channel = %slug, error = %e, "stored source pins unreadable, ignored");
            })
            .ok()
            .filter(|v| !v.is_empty())
    })
}

#[async_trait::async_trait]
impl Backend for Sqlite {
    fn blocking(&self) -> bool {
        true
    }

    async fn services(&self) -> Result<HashMap<String, ServiceOverride>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT name, enabled, priority FROM service_state")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                ServiceOverride {
                    enabled: r.get(1)?,
                    priority: r.get(2)?,
                },
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    async fn identities_after(&self, after: u32) -> Result<Vec<IdentityRow>, StoreError> {
        Ok(identities_of(&self.conn(), after)?)
    }

    async fn mappings(&self) -> Result<HashMap<String, ChannelMapping>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT slug, name, number, grp, hidden, tvg_id, logo, sources, station_id
             FROM channel_mapping",
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
                    station_id: r.get(8)?,
                    sources: None,
                },
                r.get::<_, Option<String>>(7)?,
            ))
        })?;
        let mut out = HashMap::new();
        for row in rows {
            let (slug, mut mapping, sources) = row?;
            mapping.sources = sources_of(&slug, sources);
            out.insert(slug, mapping);
        }
        Ok(out)
    }

    async fn setting_or_init(&self, key: &str, init: String) -> Result<String, StoreError> {
        let conn = self.conn();
        let found: Option<String> = conn
            .query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()?;
        if let Some(v) = found {
            return Ok(v);
        }
        conn.execute(
            "INSERT INTO settings (key, value) VALUES (?1, ?2)",
            params![key, init],
        )?;
        Ok(init)
    }

    async fn set_enabled(&self, name: &str, enabled: Option<bool>) -> Result<(), StoreError> {
        self.still_there()?;
        self.conn().execute(
            "INSERT INTO service_state (name, enabled) VALUES (?1, ?2)
             ON CONFLICT(name) DO UPDATE SET enabled = excluded.enabled",
            params![name, enabled],
        )?;
        Ok(())
    }

    async fn set_priority(&self, name: &str, priority: Option<i64>) -> Result<(), StoreError> {
        self.still_there()?;
        self.conn().execute(
            "INSERT INTO service_state (name, priority) VALUES (?1, ?2)
             ON CONFLICT(name) DO UPDATE SET priority = excluded.priority",
            params![name, priority],
        )?;
        Ok(())
    }

    async fn assign(
        &self,
        keys: &[super::Wanted],
        mirror: &Mutex<Mirror>,
    ) -> Result<Vec<IdentityRow>, StoreError> {
        // One process owns the file: the mirror already holds every identity.
        let (fresh, next_before) = {
            let mut m = lock_mirror(mirror);
            let before = m.next_number;
            (m.plan(keys, &HashSet::new()), before)
        };
        if fresh.is_empty() {
            return Ok(fresh);
        }
        let written = (|| {
            let mut conn = self.conn();
            let tx = conn.transaction()?;
            {
                // Not `OR IGNORE`: a number or slug another process wrote meanwhile
                // must fail the batch, not leave this mirror serving a number the file
                // gives another channel.
                let mut stmt = tx.prepare(
                    "INSERT INTO channel_identity (merge_key, slug, number) VALUES (?1, ?2, ?3)",
                )?;
                for (k, s, n) in &fresh {
                    stmt.execute(params![k, s, n])?;
                }
            }
            tx.commit()
        })();
        if let Err(e) = written {
            // Nothing was persisted: give the slugs back, and take in what the file
            // holds that the mirror lacks (rows another process wrote, when one wrote
            // against the lock), so the next build plans around them.
            let stored = identities_of(&self.conn(), 0);
            let mut m = lock_mirror(mirror);
            m.unreserve(&fresh, next_before);
            match stored {
                Ok(rows) => {
                    for (key, slug, number) in rows {
                        if !m.channels.contains_key(&key) {
                            m.learn(key, slug, number);
                        }
                    }
                }
                Err(re) => tracing::warn!(error = %re, "cannot read the channel identities again"),
            }
            return Err(e.into());
        }
        Ok(fresh)
    }

    async fn put_mapping(&self, slug: &str, row: &ChannelMapping) -> Result<(), StoreError> {
        self.still_there()?;
        let conn = self.conn();
        if row.is_empty() {
            conn.execute("DELETE FROM channel_mapping WHERE slug = ?1", [slug])?;
            return Ok(());
        }
        let sources = row
            .sources
            .as_ref()
            .map(|s| serde_json::to_string(s).expect("a list of strings always serialises"));
        // An upsert, not INSERT OR REPLACE: a duplicate number must fail, not
        // silently delete the other channel's row.
        conn.execute(
            "INSERT INTO channel_mapping
             (slug, name, number, grp, hidden, tvg_id, logo, sources, station_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT(slug) DO UPDATE SET name = excluded.name,
               number = excluded.number, grp = excluded.grp, hidden = excluded.hidden,
               tvg_id = excluded.tvg_id, logo = excluded.logo, sources = excluded.sources,
               station_id = excluded.station_id",
            params![
                slug,
                row.name,
                row.number,
                row.group,
                row.hidden,
                row.tvg_id,
                row.logo,
                sources,
                row.station_id
            ],
        )?;
        Ok(())
    }

    async fn users(&self) -> Result<Vec<StoredUser>, StoreError> {
        Ok(users_of(&self.conn())?)
    }

    async fn put_user(&self, u: &StoredUser) -> Result<(), StoreError> {
        self.still_there()?;
        let groups = serde_json::to_string(&u.groups).unwrap_or_else(|_| "[]".into());
        let services = serde_json::to_string(&u.services).unwrap_or_else(|_| "[]".into());
        self.conn().execute(
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
        )?;
        Ok(())
    }

    async fn delete_user(&self, name: &str) -> Result<(), StoreError> {
        self.still_there()?;
        self.conn()
            .execute("DELETE FROM viewer_account WHERE name = ?1", params![name])?;
        Ok(())
    }

    async fn records(&self, ns: &str) -> Result<Vec<(String, String)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT key, value FROM record WHERE ns = ?1 ORDER BY key")?;
        let rows = stmt.query_map([ns], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    async fn put_record(&self, ns: &str, key: &str, value: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT OR REPLACE INTO record (ns, key, value) VALUES (?1, ?2, ?3)",
            params![ns, key, value],
        )?;
        Ok(())
    }

    async fn write_records(
        &self,
        ns: &str,
        rows: &[(String, String)],
        delete: &[String],
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut put =
                tx.prepare("INSERT OR REPLACE INTO record (ns, key, value) VALUES (?1, ?2, ?3)")?;
            for (key, value) in rows {
                put.execute(params![ns, key, value])?;
            }
            let mut gone = tx.prepare("DELETE FROM record WHERE ns = ?1 AND key = ?2")?;
            for key in delete {
                gone.execute(params![ns, key])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    async fn delete_record(&self, ns: &str, key: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "DELETE FROM record WHERE ns = ?1 AND key = ?2",
            params![ns, key],
        )?;
        Ok(())
    }

    async fn ids(&self, ns: &str, keys: &[String]) -> Result<Vec<u64>, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let known = {
            let mut stmt = tx.prepare("SELECT key, id FROM record_id WHERE ns = ?1")?;
            let rows = stmt.query_map([ns], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                ))
            })?;
            rows.collect::<Result<HashMap<_, _>, _>>()?
        };
        let alias_ns = super::alias_ns(ns);
        let aliases = {
            let mut stmt = tx.prepare("SELECT key, value FROM record WHERE ns = ?1")?;
            let rows = stmt.query_map([&alias_ns], |r| Ok((r.get(0)?, r.get(1)?)))?;
            super::aliases_of(rows.collect::<Result<Vec<_>, _>>()?)
        };
        let (ids, fresh, fresh_aliases) = super::assign_ids(known, &aliases, keys);
        {
            let mut insert =
                tx.prepare("INSERT INTO record_id (ns, key, id) VALUES (?1, ?2, ?3)")?;
            for (key, id) in &fresh {
                insert.execute(params![ns, key, *id as i64])?;
            }
            let mut alias =
                tx.prepare("INSERT OR REPLACE INTO record (ns, key, value) VALUES (?1, ?2, ?3)")?;
            for (key, to) in &fresh_aliases {
                let to = serde_json::to_string(to).expect("a string always serialises");
                alias.execute(params![alias_ns, key, to])?;
            }
        }
        tx.commit()?;
        Ok(ids)
    }

    /// The file is still where it was opened: deleted (a lost or removed state_dir)
    /// or replaced, everything written from then on is lost at the next start.
    async fn ping(&self) -> Result<(), StoreError> {
        self.still_there()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A write SQLite refuses for want of room is told as such (the API answers 503
    /// "free space", not a 500).
    #[tokio::test]
    async fn a_full_database_is_told_as_out_of_room() {
        let s = Sqlite::in_memory();
        let pages: i64 = s
            .conn()
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        s.conn()
            .pragma_update(None, "max_page_count", pages)
            .unwrap();
        let big = "x".repeat(64 * 1024);
        let e = s
            .put_record("test", "big", &big)
            .await
            .expect_err("no page is left for it");
        assert!(e.is_out_of_room(), "{e:?}");
        assert!(!StoreError::Rejected("taken".into()).is_out_of_room());
    }
}
