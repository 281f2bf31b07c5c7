//! The live connections of every account: a `.ts` stream counts while its body is
//! open (a guard held by the body), an HLS player while it keeps fetching the
//! channel's playlists (one per account, channel and client address, forgotten
//! `HLS_IDLE` after its last fetch). Segment fetches never count.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{now, Account, AccountError};

/// How long an HLS player counts after its last playlist fetch; players reload a live
/// playlist every target duration (2 to 10 s).
const HLS_IDLE: Duration = Duration::from_secs(30);

/// One open connection, as the admin API and the dashboard show it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ConnInfo {
    /// The lineup channel watched (slug).
    pub channel: String,
    /// `ts` or `hls`.
    pub kind: &'static str,
    /// The player's address.
    pub client: Option<String>,
    /// Unix seconds: when it started.
    pub since: i64,
}

struct Entry {
    account: String,
    channel: String,
    from: Option<IpAddr>,
    since: i64,
    last: Instant,
}

#[derive(Default)]
struct Inner {
    next: u64,
    ts: HashMap<u64, Entry>,
    /// Keyed by (account, channel, address).
    hls: HashMap<(String, String, Option<IpAddr>), Entry>,
}

#[derive(Default)]
pub struct Conns(Mutex<Inner>);

/// What `Conns::connect` took.
pub enum Conn {
    /// A `.ts` connection, held until the guard drops.
    Ts(ConnGuard),
    /// A new HLS player (`forget_hls` it again if its stream does not open).
    HlsNew,
    /// An HLS player counted already.
    HlsSeen,
}

impl Conn {
    /// The guard of a `.ts` connection.
    pub fn into_guard(self) -> Option<ConnGuard> {
        match self {
            Conn::Ts(g) => Some(g),
            Conn::HlsNew | Conn::HlsSeen => None,
        }
    }
}

/// Holds one `.ts` connection; dropping it (the body ended) frees it.
pub struct ConnGuard {
    conns: Arc<Conns>,
    id: u64,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.conns.lock().ts.remove(&self.id);
    }
}

impl Conns {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// See `Accounts::connect`.
    pub fn connect(
        self: &Arc<Self>,
        a: &Account,
        channel: &str,
        from: Option<IpAddr>,
        hls: bool,
    ) -> Result<Conn, AccountError> {
        let mut inner = self.lock();
        let cutoff = Instant::now().checked_sub(HLS_IDLE);
        inner.hls.retain(|_, e| cutoff.is_none_or(|c| e.last >= c));
        let key = (a.name.clone(), channel.to_string(), from);
        if hls {
            if let Some(e) = inner.hls.get_mut(&key) {
                e.last = Instant::now();
                return Ok(Conn::HlsSeen);
            }
        }
        let open = inner.ts.values().filter(|e| e.account == a.name).count()
            + inner.hls.keys().filter(|k| k.0 == a.name).count();
        if a.max_connections != 0 && open >= a.max_connections as usize {
            return Err(AccountError::Limit {
                name: a.name.clone(),
                limit: a.max_connections,
            });
        }
        let entry = Entry {
            account: a.name.clone(),
            channel: channel.to_string(),
            from,
            since: now(),
            last: Instant::now(),
        };
        if hls {
            inner.hls.insert(key, entry);
            return Ok(Conn::HlsNew);
        }
        inner.next += 1;
        let id = inner.next;
        inner.ts.insert(id, entry);
        Ok(Conn::Ts(ConnGuard {
            conns: self.clone(),
            id,
        }))
    }

    /// Drops an HLS player just counted whose stream did not open: a failed try is
    /// no connection.
    pub fn forget_hls(&self, account: &str, channel: &str, from: Option<IpAddr>) {
        let key = (account.to_string(), channel.to_string(), from);
        self.lock().hls.remove(&key);
    }

    /// An HLS player of `account` fetched a playlist of `channel` again: it goes on
    /// counting (only if it still counts; a forgotten one is not brought back over
    /// the limit by a link it kept).
    pub fn hls_poll(&self, account: &str, channel: &str, from: Option<IpAddr>) {
        let key = (account.to_string(), channel.to_string(), from);
        if let Some(e) = self.lock().hls.get_mut(&key) {
            e.last = Instant::now();
        }
    }

    /// The open connections of `account`.
    pub fn of(&self, account: &str) -> Vec<ConnInfo> {
        let inner = self.lock();
        let cutoff = Instant::now().checked_sub(HLS_IDLE);
        let ts = inner.ts.values().map(|e| (e, "ts"));
        let hls = inner
            .hls
            .values()
            .filter(|e| cutoff.is_none_or(|c| e.last >= c))
            .map(|e| (e, "hls"));
        let mut out: Vec<ConnInfo> = ts
            .chain(hls)
            .filter(|(e, _)| e.account == account)
            .map(|(e, kind)| ConnInfo {
                channel: e.channel.clone(),
                kind,
                client: e.from.map(|ip| ip.to_string()),
                since: e.since,
            })
            .collect();
        out.sort_by(|a, b| (a.since, &a.channel).cmp(&(b.since, &b.channel)));
        out
    }
}
