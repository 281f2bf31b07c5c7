//! The shared backend: PostgreSQL, for several instances pointed at one database
//! (`[server] state = "postgres://..."`).
//!
//! A small connection pool (deadpool) for the writes and reads, TLS through rustls
//! when the server offers it (`sslmode` in the URL: `prefer` by default, `require`,
//! `disable`), and one more connection that LISTENs for the changes other instances
//! announce (`follow`). The schema is created or upgraded at connect, inside a
//! transaction holding an advisory lock, so instances starting together migrate once;
//! its version is kept in `freesky_schema`.
//!
//! Every write commits with a `NOTIFY` naming the part it changed and the writing
//! instance; the notification is delivered only once the transaction committed, so a
//! reader that reloads on it sees the write. Channel numbers are assigned inside one
//! transaction that first takes a transaction-scoped advisory lock and reads what
//! other instances assigned: two instances meeting a new channel at once give it one
//! number.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures::StreamExt;
use tokio_postgres::AsyncMessage;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{
    lock_mirror, Backend, Change, IdentityRow, Mirror, ServiceOverride, StoreError, StoredUser,
};
use crate::model::ChannelMapping;

/// The channel every instance LISTENs on.
const CHANNEL: &str = "freesky_state";
/// Advisory lock keys (any constants, unique to freesky): schema migration, numbering.
const LOCK_MIGRATE: i64 = 0x6672_6565_736b_7901;
const LOCK_NUMBERS: i64 = 0x6672_6565_736b_7902;
/// How long a query waits for a pooled connection or a new one.
const POOL_WAIT: Duration = Duration::from_secs(5);

/// The schema, one entry per version; applied in order, each once.
const MIGRATIONS: &[&str] = &[
    "
CREATE TABLE service_state (
    name     TEXT PRIMARY KEY,
    enabled  BOOLEAN,
    priority BIGINT
);
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE channel_identity (
    merge_key TEXT PRIMARY KEY,
    slug      TEXT NOT NULL UNIQUE,
    number    BIGINT NOT NULL UNIQUE
);
CREATE TABLE channel_mapping (
    slug     TEXT PRIMARY KEY,
    name     TEXT,
    number   BIGINT UNIQUE,
    grp      TEXT,
    hidden   BOOLEAN NOT NULL DEFAULT FALSE,
    tvg_id   TEXT,
    logo     TEXT,
    sources  TEXT
);
CREATE TABLE viewer_account (
    name            TEXT PRIMARY KEY,
    hash            TEXT NOT NULL,
    max_connections BIGINT NOT NULL,
    expires         TEXT,
    groups          TEXT NOT NULL,
    services        TEXT NOT NULL,
    enabled         BOOLEAN NOT NULL,
    created_at      BIGINT NOT NULL
);
CREATE TABLE record (
    ns    TEXT NOT NULL,
    key   TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (ns, key)
);
CREATE TABLE record_id (
    ns  TEXT NOT NULL,
    key TEXT NOT NULL,
    id  BIGINT NOT NULL,
    PRIMARY KEY (ns, key),
    UNIQUE (ns, id)
);
",
    "
ALTER TABLE channel_mapping ADD COLUMN station_id TEXT;
",
];

/// The error and its causes in one line (tokio-postgres says only "db error" at the
/// top; the server's message is a cause). Never holds the password: errors name no
/// connection string.
fn pg(e: impl std::error::Error) -> StoreError {
    StoreError::Postgres(chain(&e))
}

/// Which server, database and user a URL names (never its password), as errors say it:
/// `the server at 127.0.0.1:5432, database freesky, user app`.
fn whereabouts(config: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let host = match h {
                Host::Tcp(name) => name.clone(),
                #[cfg(unix)]
                Host::Unix(path) => path.display().to_string(),
            };
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            format!("{host}:{port}")
        })
        .collect();
    let mut out = format!(
        "the server at {}",
        if hosts.is_empty() {
            "localhost:5432".to_string()
        } else {
            hosts.join(", ")
        }
    );
    if let Some(db) = config.get_dbname() {
        out.push_str(&format!(", database {db}"));
    }
    if let Some(user) = config.get_user() {
        out.push_str(&format!(", user {user}"));
    }
    out
}

/// `e` and its causes, as `pg` words them (the listener's logs too). The pool's own
/// wrapper ("Error occurred while creating a new object") says nothing and is left out.
fn chain(e: &dyn std::error::Error) -> String {
    let mut message = e
        .to_string()
        .trim_start_matches("Error occurred while creating a new object: ")
        .to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        cause = c.source();
    }
    message
}

/// A number as stored (BIGINT) back to what the model uses.
fn number(n: i64) -> u32 {
    u32::try_from(n).unwrap_or(0)
}

/// How the listener connection is made again after it drops.
pub(super) struct Listen {
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    me: String,
}

pub(super) struct Postgres {
    pool: Pool,
    /// This instance, in every NOTIFY it sends, so it skips its own.
    me: String,
}

fn tls() -> Result<MakeRustlsConnect, StoreError> {
    use rustls_platform_verifier::ConfigVerifierExt;
    let config = rustls::ClientConfig::with_platform_verifier()
        .map_err(|e| StoreError::Config(format!("TLS set-up: {e}")))?;
    Ok(MakeRustlsConnect::new(config))
}

impl Postgres {
    /// Connects, migrates, and returns the backend and how to listen for changes.
    pub(super) async fn connect(url: &str) -> Result<(Self, Listen), StoreError> {
        let config: tokio_postgres::Config = url.parse().map_err(|_| {
            StoreError::Config(match super::check_state(url) {
                Err(why) => why,
                Ok(()) => "not a PostgreSQL URL".into(),
            })
        })?;
        let tls = tls()?;
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(8)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(POOL_WAIT))
            .build()
            .map_err(pg)?;
        let me = format!("{:016x}", rand_id());
        let backend = Self {
            pool,
            me: me.clone(),
        };
        backend.migrate().await.map_err(|e| match e {
            StoreError::Postgres(why) => StoreError::Postgres(format!(
                "cannot use {} (server.state): {why}",
                whereabouts(&config)
            )),
            e => e,
        })?;
        Ok((backend, Listen { config, tls, me }))
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(pg)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_MIGRATE])
            .await
            .map_err(pg)?;
        // Instances starting together: the second one's "already exists" is no news.
        tx.batch_execute(
            "SET LOCAL client_min_messages = warning;
             CREATE TABLE IF NOT EXISTS freesky_schema (version BIGINT NOT NULL)",
        )
        .await
        .map_err(pg)?;
        let version: i64 = tx
            .query_opt("SELECT version FROM freesky_schema", &[])
            .await
            .map_err(pg)?
            .map(|r| r.get(0))
            .unwrap_or(0);
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(StoreError::Config(format!(
                "the database's schema is version {version}, newer than this freesky's {known}: upgrade freesky"
            )));
        }
        for sql in &MIGRATIONS[usize::try_from(version).unwrap_or(0)..] {
            tx.batch_execute(sql).await.map_err(pg)?;
        }
        if version == 0 {
            tx.execute(
                "INSERT INTO freesky_schema (version) VALUES ($1)",
                &[&known],
            )
            .await
            .map_err(pg)?;
        } else if version < known {
            tx.execute("UPDATE freesky_schema SET version = $1", &[&known])
                .await
                .map_err(pg)?;
        }
        tx.commit().await.map_err(pg)
    }

    /// Writes every row of `dump` into a database that holds no freesky state yet, in
    /// one transaction (`Store::copy_sqlite_to_postgres`); refused when it holds some.
    pub(super) async fn load(&self, dump: &super::Dump) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        // Two copies at once: the second waits, then finds the rows of the first.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_MIGRATE])
            .await
            .map_err(pg)?;
        let held: i64 = tx
            .query_one(
                "SELECT (SELECT count(*) FROM service_state) + (SELECT count(*) FROM settings)
                      + (SELECT count(*) FROM channel_identity) + (SELECT count(*) FROM channel_mapping)
                      + (SELECT count(*) FROM viewer_account) + (SELECT count(*) FROM record)
                      + (SELECT count(*) FROM record_id)",
                &[],
            )
            .await
            .map_err(pg)?
            .get(0);
        if held > 0 {
            return Err(StoreError::Rejected(format!(
                "the PostgreSQL database already holds freesky state ({held} rows): copy into an \
                 empty database, so that nothing there is overwritten"
            )));
        }
        fn col<T: Clone, R>(rows: &[R], f: impl Fn(&R) -> T) -> Vec<T> {
            rows.iter().map(f).collect()
        }
        let d = dump;
        tx.execute(
            "INSERT INTO service_state (name, enabled, priority)
             SELECT * FROM UNNEST($1::text[], $2::boolean[], $3::bigint[])",
            &[
                &col(&d.services, |r| r.0.clone()),
                &col(&d.services, |r| r.1),
                &col(&d.services, |r| r.2),
            ],
        )
        .await
        .map_err(pg)?;
        tx.execute(
            "INSERT INTO settings (key, value) SELECT * FROM UNNEST($1::text[], $2::text[])",
            &[
                &col(&d.settings, |r| r.0.clone()),
                &col(&d.settings, |r| r.1.clone()),
            ],
        )
        .await
        .map_err(pg)?;
        tx.execute(
            "INSERT INTO channel_identity (merge_key, slug, number)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[])",
            &[
                &col(&d.identities, |r| r.0.clone()),
                &col(&d.identities, |r| r.1.clone()),
                &col(&d.identities, |r| r.2),
            ],
        )
        .await
        .map_err(pg)?;
        let m = &d.mappings;
        tx.execute(
            "INSERT INTO channel_mapping
             (slug, name, number, grp, hidden, tvg_id, logo, sources, station_id)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::boolean[],
                                  $6::text[], $7::text[], $8::text[], $9::text[])",
            &[
                &col(m, |r| r.0.clone()),
                &col(m, |r| r.1.clone()),
                &col(m, |r| r.2),
                &col(m, |r| r.3.clone()),
                &col(m, |r| r.4),
                &col(m, |r| r.5.clone()),
                &col(m, |r| r.6.clone()),
                &col(m, |r| r.7.clone()),
                &col(m, |r| r.8.clone()),
            ],
        )
        .await
        .map_err(pg)?;
        let json = |v: &Vec<String>| serde_json::to_string(v).unwrap_or_else(|_| "[]".into());
        let u = &d.users;
        tx.execute(
            "INSERT INTO viewer_account
             (name, hash, max_connections, expires, groups, services, enabled, created_at)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[],
                                  $6::text[], $7::boolean[], $8::bigint[])",
            &[
                &col(u, |r| r.name.clone()),
                &col(u, |r| r.hash.clone()),
                &col(u, |r| i64::from(r.max_connections)),
                &col(u, |r| r.expires.clone()),
                &col(u, |r| json(&r.groups)),
                &col(u, |r| json(&r.services)),
                &col(u, |r| r.enabled),
                &col(u, |r| r.created_at),
            ],
        )
        .await
        .map_err(pg)?;
        tx.execute(
            "INSERT INTO record (ns, key, value)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[])",
            &[
                &col(&d.records, |r| r.0.clone()),
                &col(&d.records, |r| r.1.clone()),
                &col(&d.records, |r| r.2.clone()),
            ],
        )
        .await
        .map_err(pg)?;
        tx.execute(
            "INSERT INTO record_id (ns, key, id)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[])",
            &[
                &col(&d.record_ids, |r| r.0.clone()),
                &col(&d.record_ids, |r| r.1.clone()),
                &col(&d.record_ids, |r| r.2),
            ],
        )
        .await
        .map_err(pg)?;
        for change in Change::ALL {
            self.notify(&tx, change).await?;
        }
        tx.commit().await.map_err(pg)
    }

    /// Runs `sql` with `params` and announces `change`, in one transaction.
    async fn write(
        &self,
        change: Change,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        tx.execute(sql, params).await.map_err(pg)?;
        self.notify(&tx, change).await?;
        tx.commit().await.map_err(pg)
    }

    /// Writes mapping `row` of `slug` (an empty one: removes it); with `expected`, only
    /// while the stored one is that (`false`, nothing written, otherwise). Writers of
    /// one slug take turns on an advisory lock, so the check and the write are one step
    /// for every instance.
    async fn put_mapping_if_inner(
        &self,
        slug: &str,
        expected: Option<&ChannelMapping>,
        row: &ChannelMapping,
    ) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        if let Some(expected) = expected {
            take_turn(&tx, "channel_mapping", slug).await?;
            let stored = tx
                .query_opt(
                    "SELECT slug, name, number, grp, hidden, tvg_id, logo, sources, station_id
                     FROM channel_mapping WHERE slug = $1",
                    &[&slug],
                )
                .await
                .map_err(pg)?
                .map(|r| mapping_of(slug, &r))
                .unwrap_or_default();
            if stored != *expected {
                return Ok(false);
            }
        }
        if row.is_empty() {
            tx.execute("DELETE FROM channel_mapping WHERE slug = $1", &[&slug])
                .await
                .map_err(pg)?;
        } else {
            let sources = row
                .sources
                .as_ref()
                .map(|s| serde_json::to_string(s).expect("a list of strings always serialises"));
            let number = row.number.map(i64::from);
            tx.execute(
                "INSERT INTO channel_mapping
                 (slug, name, number, grp, hidden, tvg_id, logo, sources, station_id)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                 ON CONFLICT (slug) DO UPDATE SET name = excluded.name,
                   number = excluded.number, grp = excluded.grp, hidden = excluded.hidden,
                   tvg_id = excluded.tvg_id, logo = excluded.logo, sources = excluded.sources,
                   station_id = excluded.station_id",
                &[
                    &slug,
                    &row.name,
                    &number,
                    &row.group,
                    &row.hidden,
                    &row.tvg_id,
                    &row.logo,
                    &sources,
                    &row.station_id,
                ],
            )
            .await
            .map_err(|e| match (e.code(), number) {
                // Another instance gave the number to another channel after this
                // one's check: the caller's choice is taken, as a check here would say.
                (Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION), Some(n)) => {
                    StoreError::Rejected(format!(
                        "number {n} is already another channel's (given to it through \
                         another instance a moment ago); choose another"
                    ))
                }
                _ => pg(e),
            })?;
        }
        self.notify(&tx, Change::Mappings).await?;
        tx.commit().await.map_err(pg)?;
        Ok(true)
    }

    /// Writes account `u`; with `expected`, only while the stored account of its name
    /// is that (`Some(None)`: while there is none), else `false` and nothing written
    /// (see `put_mapping_if_inner`).
    async fn put_user_if_inner(
        &self,
        expected: Option<Option<&StoredUser>>,
        u: &StoredUser,
    ) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        if let Some(expected) = expected {
            take_turn(&tx, "viewer_account", &u.name).await?;
            let stored = tx
                .query_opt(
                    "SELECT name, hash, max_connections, expires, groups, services, enabled,
                       created_at
                     FROM viewer_account WHERE name = $1",
                    &[&u.name],
                )
                .await
                .map_err(pg)?
                .map(|r| user_of(&r));
            if stored.as_ref() != expected {
                return Ok(false);
            }
        }
        let groups = serde_json::to_string(&u.groups).unwrap_or_else(|_| "[]".into());
        let services = serde_json::to_string(&u.services).unwrap_or_else(|_| "[]".into());
        tx.execute(
            "INSERT INTO viewer_account
             (name, hash, max_connections, expires, groups, services, enabled, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (name) DO UPDATE SET hash = excluded.hash,
               max_connections = excluded.max_connections, expires = excluded.expires,
               groups = excluded.groups, services = excluded.services,
               enabled = excluded.enabled, created_at = excluded.created_at",
            &[
                &u.name,
                &u.hash,
                &i64::from(u.max_connections),
                &u.expires,
                &groups,
                &services,
                &u.enabled,
                &u.created_at,
            ],
        )
        .await
        .map_err(pg)?;
        self.notify(&tx, Change::Users).await?;
        tx.commit().await.map_err(pg)?;
        Ok(true)
    }

    async fn notify(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        change: Change,
    ) -> Result<(), StoreError> {
        let payload = format!("{}|{}", change.name(), self.me);
        tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])
            .await
            .map_err(pg)?;
        Ok(())
    }
}

/// Waits, in transaction `tx`, for the other writers of `key` in `table` to finish
/// (an advisory lock held until `tx` ends): a read and a write after it are one step.
async fn take_turn(
    tx: &deadpool_postgres::Transaction<'_>,
    table: &str,
    key: &str,
) -> Result<(), StoreError> {
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext($1))",
        &[&format!("{table}\u{1}{key}")],
    )
    .await
    .map_err(pg)
    .map(drop)
}

/// A `channel_mapping` row read as `SELECT slug, name, number, grp, hidden, tvg_id,
/// logo, sources, station_id`.
fn mapping_of(slug: &str, r: &tokio_postgres::Row) -> ChannelMapping {
    ChannelMapping {
        name: r.get(1),
        number: r.get::<_, Option<i64>>(2).map(number),
        group: r.get(3),
        hidden: r.get(4),
        tvg_id: r.get(5),
        logo: r.get(6),
        station_id: r.get(8),
        sources: super::sqlite::sources_of(slug, r.get(7)),
    }
}

/// A `viewer_account` row read as `SELECT name, hash, max_connections, expires, groups,
/// services, enabled, created_at`.
fn user_of(r: &tokio_postgres::Row) -> StoredUser {
    let list = |json: String| serde_json::from_str::<Vec<String>>(&json).unwrap_or_default();
    StoredUser {
        name: r.get(0),
        hash: r.get(1),
        max_connections: number(r.get(2)),
        expires: r.get(3),
        groups: list(r.get(4)),
        services: list(r.get(5)),
        enabled: r.get(6),
        created_at: r.get(7),
    }
}

/// A random instance id (not secret; only told apart from the others).
fn rand_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.write_u32(std::process::id());
    h.finish()
}

#[async_trait::async_trait]
impl Backend for Postgres {
    fn blocking(&self) -> bool {
        false
    }

    async fn services(&self) -> Result<HashMap<String, ServiceOverride>, StoreError> {
        let rows = self
            .client()
            .await?
            .query("SELECT name, enabled, priority FROM service_state", &[])
            .await
            .map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.get(0),
                    ServiceOverride {
                        enabled: r.get(1),
                        priority: r.get(2),
                    },
                )
            })
            .collect())
    }

    async fn identities_after(&self, after: u32) -> Result<Vec<IdentityRow>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT merge_key, slug, number FROM channel_identity WHERE number > $1",
                &[&i64::from(after)],
            )
            .await
            .map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), number(r.get(2))))
            .collect())
    }

    async fn mappings(&self) -> Result<HashMap<String, ChannelMapping>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT slug, name, number, grp, hidden, tvg_id, logo, sources, station_id
                 FROM channel_mapping",
                &[],
            )
            .await
            .map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| {
                let slug: String = r.get(0);
                let mapping = mapping_of(&slug, r);
                (slug, mapping)
            })
            .collect())
    }

    async fn setting_or_init(&self, key: &str, init: String) -> Result<String, StoreError> {
        let client = self.client().await?;
        // The first instance's value wins; every other reads it back.
        client
            .execute(
                "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                &[&key, &init],
            )
            .await
            .map_err(pg)?;
        let row = client
            .query_one("SELECT value FROM settings WHERE key = $1", &[&key])
            .await
            .map_err(pg)?;
        Ok(row.get(0))
    }

    async fn set_enabled(&self, name: &str, enabled: Option<bool>) -> Result<(), StoreError> {
        self.write(
            Change::Services,
            "INSERT INTO service_state (name, enabled) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET enabled = excluded.enabled",
            &[&name, &enabled],
        )
        .await
    }

    async fn set_priority(&self, name: &str, priority: Option<i64>) -> Result<(), StoreError> {
        self.write(
            Change::Services,
            "INSERT INTO service_state (name, priority) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET priority = excluded.priority",
            &[&name, &priority],
        )
        .await
    }

    async fn assign(
        &self,
        keys: &[super::Wanted],
        mirror: &Mutex<Mirror>,
    ) -> Result<Vec<IdentityRow>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        // Held until commit: numbering runs one instance at a time.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_NUMBERS])
            .await
            .map_err(pg)?;
        let after = lock_mirror(mirror).last_number();
        let theirs = tx
            .query(
                "SELECT merge_key, slug, number FROM channel_identity WHERE number > $1",
                &[&i64::from(after)],
            )
            .await
            .map_err(pg)?;
        // Numbers other instances' mappings gave out, which the mirror may not hold yet.
        let taken: HashSet<u32> = tx
            .query(
                "SELECT number FROM channel_mapping WHERE number IS NOT NULL",
                &[],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(|r| number(r.get(0)))
            .collect();
        let (fresh, next_before) = {
            let mut m = lock_mirror(mirror);
            for r in &theirs {
                m.learn(r.get(0), r.get(1), number(r.get(2)));
            }
            let before = m.next_number;
            (m.plan(keys, &taken), before)
        };
        if fresh.is_empty() {
            tx.commit().await.map_err(pg)?;
            return Ok(fresh);
        }
        let written = async {
            let (mut ks, mut ss, mut ns) = (Vec::new(), Vec::new(), Vec::new());
            for (k, s, n) in &fresh {
                ks.push(k.as_str());
                ss.push(s.as_str());
                ns.push(i64::from(*n));
            }
            // One statement for the whole batch: a first start may bring 100,000s.
            tx.execute(
                "INSERT INTO channel_identity (merge_key, slug, number)
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[])",
                &[&ks, &ss, &ns],
            )
            .await
            .map_err(pg)?;
            self.notify(&tx, Change::Identities).await?;
            tx.commit().await.map_err(pg)
        }
        .await;
        if let Err(e) = written {
            lock_mirror(mirror).unreserve(&fresh, next_before);
            return Err(e);
        }
        Ok(fresh)
    }

    async fn put_mapping(&self, slug: &str, row: &ChannelMapping) -> Result<(), StoreError> {
        self.put_mapping_if_inner(slug, None, row).await.map(drop)
    }

    async fn put_mapping_if(
        &self,
        slug: &str,
        expected: &ChannelMapping,
        row: &ChannelMapping,
    ) -> Result<bool, StoreError> {
        self.put_mapping_if_inner(slug, Some(expected), row).await
    }

    async fn mapping(&self, slug: &str) -> Result<ChannelMapping, StoreError> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT slug, name, number, grp, hidden, tvg_id, logo, sources, station_id
                 FROM channel_mapping WHERE slug = $1",
                &[&slug],
            )
            .await
            .map_err(pg)?;
        Ok(row.map(|r| mapping_of(slug, &r)).unwrap_or_default())
    }

    async fn users(&self) -> Result<Vec<StoredUser>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT name, hash, max_connections, expires, groups, services, enabled, created_at
                 FROM viewer_account ORDER BY name",
                &[],
            )
            .await
            .map_err(pg)?;
        Ok(rows.iter().map(user_of).collect())
    }

    async fn put_user(&self, u: &StoredUser) -> Result<(), StoreError> {
        self.put_user_if_inner(None, u).await.map(drop)
    }

    async fn put_user_if(
        &self,
        expected: Option<&StoredUser>,
        u: &StoredUser,
    ) -> Result<bool, StoreError> {
        self.put_user_if_inner(Some(expected), u).await
    }

    async fn delete_user(&self, name: &str) -> Result<(), StoreError> {
        self.write(
            Change::Users,
            "DELETE FROM viewer_account WHERE name = $1",
            &[&name],
        )
        .await
    }

    async fn records(&self, ns: &str) -> Result<Vec<(String, String)>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT key, value FROM record WHERE ns = $1 ORDER BY key",
                &[&ns],
            )
            .await
            .map_err(pg)?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn put_record(&self, ns: &str, key: &str, value: &str) -> Result<(), StoreError> {
        self.write(
            Change::Records,
            "INSERT INTO record (ns, key, value) VALUES ($1, $2, $3)
             ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value",
            &[&ns, &key, &value],
        )
        .await
    }

    async fn write_records(
        &self,
        ns: &str,
        rows: &[(String, String)],
        delete: &[String],
    ) -> Result<(), StoreError> {
        let (keys, values): (Vec<&str>, Vec<&str>) =
            rows.iter().map(|(k, v)| (k.as_str(), v.as_str())).unzip();
        // One statement, one transaction: the keys removed are none of those put.
        self.write(
            Change::Records,
            "WITH gone AS (DELETE FROM record WHERE ns = $1 AND key = ANY($4::text[]))
             INSERT INTO record (ns, key, value)
             SELECT $1, k, v FROM UNNEST($2::text[], $3::text[]) AS t(k, v)
             ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value",
            &[&ns, &keys, &values, &delete],
        )
        .await
    }

    async fn delete_record(&self, ns: &str, key: &str) -> Result<(), StoreError> {
        self.write(
            Change::Records,
            "DELETE FROM record WHERE ns = $1 AND key = $2",
            &[&ns, &key],
        )
        .await
    }

    async fn ids(&self, ns: &str, keys: &[String]) -> Result<Vec<u64>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        // Per namespace: instances giving ids in other namespaces do not wait.
        tx.execute(
            "SELECT pg_advisory_xact_lock($1, hashtext($2))",
            &[&(LOCK_NUMBERS as i32), &ns],
        )
        .await
        .map_err(pg)?;
        let known: HashMap<String, u64> = tx
            .query("SELECT key, id FROM record_id WHERE ns = $1", &[&ns])
            .await
            .map_err(pg)?
            .iter()
            .map(|r| (r.get(0), u64::try_from(r.get::<_, i64>(1)).unwrap_or(0)))
            .collect();
        let alias_ns = super::alias_ns(ns);
        let aliases = super::aliases_of(
            tx.query("SELECT key, value FROM record WHERE ns = $1", &[&alias_ns])
                .await
                .map_err(pg)?
                .iter()
                .map(|r| (r.get(0), r.get(1))),
        );
        let (out, fresh, fresh_aliases) = super::assign_ids(known, &aliases, keys);
        let new_keys: Vec<&str> = fresh.iter().map(|(k, _)| k.as_str()).collect();
        let new_ids: Vec<i64> = fresh.iter().map(|(_, id)| *id as i64).collect();
        if !new_keys.is_empty() {
            tx.execute(
                "INSERT INTO record_id (ns, key, id) SELECT $1, * FROM UNNEST($2::text[], $3::bigint[])",
                &[&ns, &new_keys, &new_ids],
            )
            .await
            .map_err(pg)?;
        }
        for (key, to) in &fresh_aliases {
            let to = serde_json::to_string(to).expect("a string always serialises");
            tx.execute(
                "INSERT INTO record (ns, key, value) VALUES ($1, $2, $3)
                 ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value",
                &[&alias_ns, key, &to],
            )
            .await
            .map_err(pg)?;
        }
        if !new_keys.is_empty() || !fresh_aliases.is_empty() {
            self.notify(&tx, Change::Records).await?;
        }
        tx.commit().await.map_err(pg)?;
        Ok(out)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let check = async {
            self.client()
                .await?
                .query_one("SELECT 1", &[])
                .await
                .map_err(pg)
        };
        tokio::time::timeout(Duration::from_secs(2), check)
            .await
            .map_err(|_| StoreError::Postgres("no answer within 2 s".into()))?
            .map(drop)
    }
}

/// Follows the changes other instances announce, for as long as the store lives:
/// each is handed to `apply` (which reloads it and tells the subscribers).
/// `listening` is told once the first LISTEN is in place. When the listening
/// connection drops it is made again, and since notifications sent meanwhile are
/// lost, every part is then applied as changed.
pub(super) async fn follow<F, Fut>(
    listen: Listen,
    listening: tokio::sync::oneshot::Sender<()>,
    apply: F,
) where
    F: Fn(Change) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut listening = Some(listening);
    // An outage is warned of when it starts, then once a minute, not every second.
    let mut warned: Option<std::time::Instant> = None;
    loop {
        match listen.config.connect(listen.tls.clone()).await {
            Ok((client, mut conn)) => {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                let driver = tokio::spawn(async move {
                    let mut messages = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
                    while let Some(message) = messages.next().await {
                        match message {
                            Ok(AsyncMessage::Notification(n)) => {
                                if tx.send(n.payload().to_string()).is_err() {
                                    break;
                                }
                            }
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!(error = %chain(&e), "state store: change listener lost its connection");
                                break;
                            }
                        }
                    }
                });
                match client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
                    Ok(()) => {
                        match listening.take() {
                            Some(first) => {
                                let _ = first.send(());
                            }
                            None => {
                                warned = None;
                                tracing::info!("state store: change listener connected again; reading every change made meanwhile");
                                for change in Change::ALL {
                                    apply(change).await;
                                }
                            }
                        }
                        while let Some(payload) = rx.recv().await {
                            let (part, from) = payload.split_once('|').unwrap_or((&payload, ""));
                            if from == listen.me {
                                continue;
                            }
                            if let Some(change) = Change::parse(part) {
                                apply(change).await;
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %chain(&e), "state store: cannot LISTEN for changes")
                    }
                }
                driver.abort();
            }
            Err(e) => {
                if warned.is_none_or(|w| w.elapsed() >= Duration::from_secs(60)) {
                    warned = Some(std::time::Instant::now());
                    tracing::warn!(error = %chain(&e), "state store: change listener cannot connect (retried every second; warned again in a minute)");
                } else {
                    tracing::debug!(error = %chain(&e), "state store: change listener cannot connect");
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::chain;

    #[derive(Debug)]
    struct Top(Option<Inner>);
    #[derive(Debug)]
    struct Inner;

    impl std::fmt::Display for Top {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("db error")
        }
    }
    impl std::fmt::Display for Inner {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("ERROR: the database system is shutting down")
        }
    }
    impl std::error::Error for Top {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.0.as_ref().map(|i| i as _)
        }
    }
    impl std::error::Error for Inner {}

    /// tokio-postgres says "db error" at the top; the server's words are its cause.
    #[test]
    fn an_error_is_worded_with_its_causes() {
        assert_eq!(
            chain(&Top(Some(Inner))),
            "db error: ERROR: the database system is shutting down"
        );
        assert_eq!(chain(&Top(None)), "db error");
    }
}
