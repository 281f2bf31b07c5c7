//! The live connections of every account: a `.ts` stream counts while its body is
//! open (a guard held by the body), an HLS player while it keeps fetching the
//! channel's playlists (one per account, channel and client address, forgotten
//! `HLS_IDLE` after its last fetch). Segment fetches never count.
//!
//! With a shared store (several instances), each instance publishes how many
//! connections each account holds on it, and when each started (`share_connections`);
//! an account's limit counts those the other instances published too, and when two
//! instances let one in at the same moment, the one that started last ends (`settle`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{now, now_ms, Account, AccountError};

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
    /// Unix milliseconds: when it started, as published to the other instances.
    started_ms: i64,
    /// The account's `max_connections` when it was let in.
    limit: u32,
    last: Instant,
    /// Set when the account may no longer watch this (`Conns::end_where`); the
    /// `.ts` body holding the guard ends at its next chunk.
    ended: Arc<AtomicBool>,
}

#[derive(Default)]
struct Inner {
    next: u64,
    ts: HashMap<u64, Entry>,
    /// Keyed by (account, channel, address).
    hls: HashMap<(String, String, Option<IpAddr>), Entry>,
    /// Open connections per account on the other instances of a shared store, as
    /// they last published them.
    elsewhere: HashMap<String, usize>,
    /// The addresses of those players, where known: a player that moves here from
    /// another instance (zapping to a channel the balancer sends here) takes its own
    /// connection over, as on one instance.
    elsewhere_at: HashMap<String, HashSet<IpAddr>>,
    /// Whether the connections changed since they were last published.
    changed: bool,
    /// The key this instance publishes under (`share_connections`); kept across
    /// reloads with the connections, so a reload leaves no second record behind.
    instance: Option<String>,
    /// This process among those that may publish under `instance` (a state_dir copied
    /// with its `instance.id` would make two instances one); kept across reloads too:
    /// the sharing task of the state before a reload and the next one are one process.
    run: Option<String>,
    /// Set at a clean stop (`leave_shared_counts`): the sharing task deletes its record,
    /// publishes nothing more, and tells.
    leave: Option<tokio::sync::oneshot::Sender<()>>,
}

/// A player this instance publishes: when it started (unix ms) and its address.
type Published = (i64, Option<IpAddr>);
/// A player another instance published: when it started, the instance, its address.
type Theirs = (i64, String, Option<IpAddr>);

/// One player as the limit counts it (see `Inner::players`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Player {
    /// A channel watched from an address (however many requests).
    At(String, IpAddr),
    /// A `.ts` connection of no known address.
    Ts(u64),
    /// An HLS player of no known address, on a channel.
    Hls(String),
}

impl Player {
    fn address(&self) -> Option<IpAddr> {
        match self {
            Player::At(_, ip) => Some(*ip),
            Player::Ts(_) | Player::Hls(_) => None,
        }
    }
}

impl Inner {
    /// The players of `account` open here (as `players` counts them), each with when
    /// it started (its earliest connection), and the account's limit as last let in.
    fn player_starts(&self, account: &str) -> (Vec<(i64, Player)>, u32) {
        let mut starts: HashMap<Player, i64> = HashMap::new();
        let mut limit: Option<(i64, u32)> = None;
        let ts = self
            .ts
            .iter()
            .filter(|(_, e)| e.account == account && !e.ended.load(Ordering::Relaxed))
            .map(|(id, e)| {
                (
                    e,
                    e.from
                        .map_or(Player::Ts(*id), |ip| Player::At(e.channel.clone(), ip)),
                )
            });
        let hls = self.hls.values().filter(|e| e.account == account).map(|e| {
            (
                e,
                e.from.map_or(Player::Hls(e.channel.clone()), |ip| {
                    Player::At(e.channel.clone(), ip)
                }),
            )
        });
        for (e, player) in ts.chain(hls) {
            let start = starts.entry(player).or_insert(e.started_ms);
            *start = (*start).min(e.started_ms);
            if limit.is_none_or(|(at, _)| e.started_ms >= at) {
                limit = Some((e.started_ms, e.limit));
            }
        }
        let mut out: Vec<(i64, Player)> = starts.into_iter().map(|(p, t)| (t, p)).collect();
        out.sort_by_key(|(t, _)| *t);
        (out, limit.map_or(0, |(_, l)| l))
    }

    /// Ends `player` of `account`: its `.ts` bodies at their next chunk, its HLS count
    /// at once. The channel it watched.
    fn end_player(&mut self, account: &str, player: &Player) -> String {
        let matches = |e: &Entry, id: Option<u64>| {
            e.account == account
                && match player {
                    Player::At(channel, ip) => e.channel == *channel && e.from == Some(*ip),
                    Player::Ts(want) => id == Some(*want),
                    Player::Hls(channel) => {
                        id.is_none() && e.from.is_none() && e.channel == *channel
                    }
                }
        };
        for (id, e) in &self.ts {
            if matches(e, Some(*id)) {
                e.ended.store(true, Ordering::Relaxed);
            }
        }
        self.hls.retain(|_, e| !matches(e, None));
        self.changed = true;
        match player {
            Player::At(channel, _) | Player::Hls(channel) => channel.clone(),
            Player::Ts(id) => self
                .ts
                .get(id)
                .map(|e| e.channel.clone())
                .unwrap_or_default(),
        }
    }

    /// The connections of `account` open here, as the limit counts them: a player
    /// (an address) counts once per channel, however many requests it holds (a
    /// reconnect overlapping its old stream, a second range request); a connection of
    /// no known address (the tuner's) counts alone; a `.ts` stream ended by
    /// `end_where` no longer counts.
    fn players(&self, account: &str) -> usize {
        let mut anonymous = 0;
        let mut seen: HashSet<(&str, IpAddr)> = HashSet::new();
        let ts = self
            .ts
            .values()
            .filter(|e| e.account == account && !e.ended.load(Ordering::Relaxed))
            .map(|e| (e.channel.as_str(), e.from));
        let hls = self
            .hls
            .keys()
            .filter(|k| k.0 == account)
            .map(|k| (k.1.as_str(), k.2));
        for (channel, from) in ts.chain(hls) {
            match from {
                Some(ip) => {
                    seen.insert((channel, ip));
                }
                None => anonymous += 1,
            }
        }
        seen.len() + anonymous
    }

    /// Whether the player at `from` already counts for `channel` of `account`.
    fn has_player(&self, account: &str, channel: &str, from: Option<IpAddr>) -> bool {
        let Some(from) = from else {
            return false;
        };
        self.ts.values().any(|e| {
            e.account == account
                && e.channel == channel
                && e.from == Some(from)
                && !e.ended.load(Ordering::Relaxed)
        }) || self
            .hls
            .contains_key(&(account.to_string(), channel.to_string(), Some(from)))
    }

    /// Forgets HLS players idle for `HLS_IDLE`.
    fn prune(&mut self) {
        let cutoff = Instant::now().checked_sub(HLS_IDLE);
        let before = self.hls.len();
        self.hls.retain(|_, e| cutoff.is_none_or(|c| e.last >= c));
        self.changed |= self.hls.len() != before;
    }
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
    ended: Arc<AtomicBool>,
}

impl ConnGuard {
    /// Whether the account may no longer watch this: its body should end.
    pub fn is_ended(&self) -> bool {
        self.ended.load(Ordering::Relaxed)
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut inner = self.conns.lock();
        inner.ts.remove(&self.id);
        inner.changed = true;
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
        self.admit(a, channel, from, hls, true)
    }

    /// Counts again an HLS player that polls a playlist link it kept after it stopped
    /// counting: within the limit, never taking another connection over.
    pub fn readmit_hls(
        self: &Arc<Self>,
        a: &Account,
        channel: &str,
        from: Option<IpAddr>,
    ) -> Result<(), AccountError> {
        self.admit(a, channel, from, true, false).map(drop)
    }

    fn admit(
        self: &Arc<Self>,
        a: &Account,
        channel: &str,
        from: Option<IpAddr>,
        hls: bool,
        may_take_over: bool,
    ) -> Result<Conn, AccountError> {
        let mut inner = self.lock();
        inner.prune();
        let key = (a.name.clone(), channel.to_string(), from);
        if hls {
            if let Some(e) = inner.hls.get_mut(&key) {
                e.last = Instant::now();
                return Ok(Conn::HlsSeen);
            }
        }
        let same_player = inner.has_player(&a.name, channel, from);
        let open = inner.players(&a.name) + inner.elsewhere.get(&a.name).copied().unwrap_or(0);
        if !same_player && a.max_connections != 0 && open >= a.max_connections as usize {
            // A player switching channels (the same address) takes its own connection
            // over, as panels end the older one: zapping on a one-connection account.
            // Another address over the limit is refused.
            // So does one whose previous stream is on another instance: that one
            // ends it when it reads this one's record (`settle`).
            let moved_here = from.is_some_and(|ip| {
                inner
                    .elsewhere_at
                    .get(&a.name)
                    .is_some_and(|at| at.contains(&ip))
            });
            if from.is_none()
                || !may_take_over
                || !(Self::take_over(&mut inner, &a.name, from) || moved_here)
            {
                return Err(AccountError::Limit {
                    name: a.name.clone(),
                    limit: a.max_connections,
                });
            }
            tracing::info!(user = %a.name, %channel, "the player switched channels: its previous stream ends");
        }
        let entry = Entry {
            account: a.name.clone(),
            channel: channel.to_string(),
            from,
            since: now(),
            started_ms: now_ms(),
            limit: a.max_connections,
            last: Instant::now(),
            ended: Arc::default(),
        };
        let ended = entry.ended.clone();
        inner.changed = true;
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
            ended,
        }))
    }

    /// Ends every connection `stop(account, channel)` says may not go on: a `.ts`
    /// body ends at its next chunk (its guard frees it then), an HLS player stops
    /// counting (its next playlist fetch is refused by the caller's own check).
    /// Returns the (account, channel) pairs ended now.
    pub fn end_where(&self, mut stop: impl FnMut(&str, &str) -> bool) -> Vec<(String, String)> {
        let mut inner = self.lock();
        let mut ended = Vec::new();
        for e in inner.ts.values() {
            if !e.ended.load(Ordering::Relaxed) && stop(&e.account, &e.channel) {
                e.ended.store(true, Ordering::Relaxed);
                ended.push((e.account.clone(), e.channel.clone()));
            }
        }
        inner.hls.retain(|(account, channel, _), _| {
            let end = stop(account, channel);
            if end {
                ended.push((account.clone(), channel.clone()));
            }
            !end
        });
        inner.changed |= !ended.is_empty();
        ended
    }

    /// Sets each connection's limit to its account's `max_connections` now (`limit_of`;
    /// `None`: the account is gone, left as it is), so `settle` counts with a limit an
    /// admin changed since.
    pub fn update_limits(&self, limit_of: impl Fn(&str) -> Option<u32>) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        for e in inner.ts.values_mut().chain(inner.hls.values_mut()) {
            if let Some(limit) = limit_of(&e.account) {
                e.limit = limit;
            }
        }
    }

    /// Ends the connections of `account` from `from` (its player moved to another
    /// channel); whether there were any.
    fn take_over(inner: &mut Inner, account: &str, from: Option<IpAddr>) -> bool {
        let mut any = false;
        for e in inner.ts.values() {
            if e.account == account && e.from == from && !e.ended.load(Ordering::Relaxed) {
                e.ended.store(true, Ordering::Relaxed);
                any = true;
            }
        }
        let before = inner.hls.len();
        inner.hls.retain(|k, _| !(k.0 == account && k.2 == from));
        any |= inner.hls.len() != before;
        inner.changed |= any;
        any
    }

    /// Drops an HLS player just counted whose stream did not open: a failed try is
    /// no connection.
    pub fn forget_hls(&self, account: &str, channel: &str, from: Option<IpAddr>) {
        let key = (account.to_string(), channel.to_string(), from);
        let mut inner = self.lock();
        inner.changed |= inner.hls.remove(&key).is_some();
    }

    /// An HLS player of `account` fetched a playlist of `channel` again: it goes on
    /// counting. False when it no longer counts (idle, or taken over): the caller
    /// counts it again or refuses it, so a link it kept does not play uncounted.
    pub fn hls_poll(&self, account: &str, channel: &str, from: Option<IpAddr>) -> bool {
        let key = (account.to_string(), channel.to_string(), from);
        match self.lock().hls.get_mut(&key) {
            Some(e) => {
                e.last = Instant::now();
                true
            }
            None => false,
        }
    }

    /// Open connections (players) per account on this instance with when each
    /// started (unix ms, oldest first), and whether they changed since the last call.
    fn counts(&self) -> (BTreeMap<String, Vec<Published>>, bool) {
        let mut inner = self.lock();
        inner.prune();
        let accounts: HashSet<&String> = inner
            .ts
            .values()
            .map(|e| &e.account)
            .chain(inner.hls.keys().map(|k| &k.0))
            .collect();
        let counts = accounts
            .into_iter()
            .map(|a| {
                let starts = inner.player_starts(a).0;
                (
                    a.clone(),
                    starts
                        .into_iter()
                        .map(|(t, p)| (t, p.address()))
                        .collect::<Vec<_>>(),
                )
            })
            .filter(|(_, starts)| !starts.is_empty())
            .collect();
        (counts, std::mem::take(&mut inner.changed))
    }

    /// Two instances that let one account in at the same moment (before either had
    /// published) may hold more than its limit between them: given the players the
    /// other instances published (`others`: per account, each player's start and its
    /// instance), ends this instance's players beyond the limit when all are ordered
    /// by start (then instance key), so every instance, reading the same records,
    /// ends the same ones: the latest. Returns the (account, channel) pairs ended so.
    /// Before that, a player here whose address has a later player on another
    /// instance (it switched to a channel the balancer sends there) ends, as a player
    /// switching channels does on one instance.
    fn settle(&self, others: &HashMap<String, Vec<Theirs>>, me: &str) -> Vec<(String, String)> {
        let mut inner = self.lock();
        let mut ended = Vec::new();
        for (account, theirs) in others {
            // Over the limit, a player that went on on another instance from the
            // same address (it switched to a channel the balancer sends there, and
            // was let in there by its address) ends here, as it would on one
            // instance; one of theirs that went on here is no longer counted. Under
            // it, two players behind one address (a household's NAT) both play.
            let (mine, limit) = inner.player_starts(account);
            if limit == 0 || mine.is_empty() || mine.len() + theirs.len() <= limit as usize {
                continue;
            }
            let moved: Vec<Player> = mine
                .iter()
                .filter(|(t, p)| {
                    p.address()
                        .is_some_and(|ip| theirs.iter().any(|(u, _, at)| *at == Some(ip) && u > t))
                })
                .map(|(_, p)| p.clone())
                .collect();
            let any_moved = !moved.is_empty();
            for player in moved {
                let channel = inner.end_player(account, &player);
                tracing::info!(user = %account, %channel, "connection ended: the player went on on another instance");
            }
            let (mine, limit) = if any_moved {
                inner.player_starts(account)
            } else {
                (mine, limit)
            };
            let theirs: Vec<(i64, String)> = theirs
                .iter()
                .filter(|(u, _, at)| {
                    !at.is_some_and(|ip| mine.iter().any(|(t, p)| p.address() == Some(ip) && t > u))
                })
                .map(|(u, i, _)| (*u, i.clone()))
                .collect();
            if limit == 0 || mine.is_empty() || mine.len() + theirs.len() <= limit as usize {
                continue;
            }
            let mut all: Vec<(i64, &str, Option<&Player>)> = mine
                .iter()
                .map(|(t, p)| (*t, me, Some(p)))
                .chain(theirs.iter().map(|(t, i)| (*t, i.as_str(), None)))
                .collect();
            all.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
            let over: Vec<Player> = all
                .into_iter()
                .skip(limit as usize)
                .filter_map(|(_, _, p)| p.cloned())
                .collect();
            for player in over {
                let channel = inner.end_player(account, &player);
                ended.push((account.clone(), channel));
            }
        }
        ended
    }

    /// Takes in the other instances' records (those `fresh`): their players count
    /// against each account's limit here, and `settle` ends what they outdo. Returns
    /// what `settle` returns.
    fn take_in(
        &self,
        records: &[(String, serde_json::Value)],
        me: &str,
        fresh: impl Fn(&str, i64) -> bool + Copy,
    ) -> Vec<(String, String)> {
        let others = others_starts(records, me, fresh);
        {
            let mut inner = self.lock();
            inner.elsewhere = elsewhere(records, me, fresh);
            inner.elsewhere_at = others
                .iter()
                .map(|(account, players)| {
                    let at = players.iter().filter_map(|(_, _, ip)| *ip).collect();
                    (account.clone(), at)
                })
                .collect();
        }
        self.settle(&others, me)
    }

    /// The connections (players, as the limit counts them) `account` has open on
    /// this instance.
    pub fn open(&self, account: &str) -> usize {
        let mut inner = self.lock();
        inner.prune();
        inner.players(account)
    }

    /// The connections of `account` open on the other instances of a shared store.
    pub fn elsewhere(&self, account: &str) -> usize {
        self.lock().elsewhere.get(account).copied().unwrap_or(0)
    }

    /// The open connections of `account` on this instance.
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

/// Store namespace of each instance's published connection counts.
const SHARED_NS: &str = "accounts.conns";
/// How often the counts are published when they changed, and the others' read.
const SHARE_EVERY: Duration = Duration::from_secs(1);
/// How often they are published unchanged, so the others know this instance lives.
const HEARTBEAT: Duration = Duration::from_secs(10);
/// An instance whose record did not change for this long (by this instance's clock)
/// is gone (crashed, stopped): its connections no longer count. Nor do any when the
/// records could not be read for this long.
const GONE_AFTER: Duration = Duration::from_secs(30);
/// A record this much older than now (by its own clock) is deleted.
const DELETE_AFTER_SECS: i64 = 3600;

/// Shares `conns` with the other instances of `store` (a shared store): publishes
/// this instance's counts per account (within `SHARE_EVERY` of a change, every
/// `HEARTBEAT` regardless) and takes in what the others published, so an account's
/// limit counts its connections everywhere. Two instances admitting one account's
/// connections within the same second may both let one in; `settle` then ends the one
/// that started last. The record's key is kept
/// in `state_dir` (`instance.id`), so a restarted instance replaces its own record at
/// once. Ends when `conns` is dropped (a reload starts the next task).
pub fn share_connections(
    conns: &Arc<Conns>,
    store: crate::store::Store,
    state_dir: &std::path::Path,
) -> tokio::task::JoinHandle<()> {
    let (mut me, run) = {
        let mut c = conns.lock();
        let me = c
            .instance
            .get_or_insert_with(|| instance_id(state_dir))
            .clone();
        (me, c.run.get_or_insert_with(random_hex).clone())
    };
    let state_dir = state_dir.to_path_buf();
    let conns = Arc::downgrade(conns);
    tokio::spawn(async move {
        let mut published: Option<Instant> = None;
        let mut read_ok = Instant::now();
        let mut warned: Option<Instant> = None;
        let mut seen = Seen::default();
        let mut tick = tokio::time::interval(SHARE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(c) = conns.upgrade() else { return };
            let leaving = c.lock().leave.take();
            if let Some(done) = leaving {
                // Here, not beside this loop: no publish of this task can follow it.
                match store.delete_record(SHARED_NS, &me).await {
                    Ok(()) => tracing::debug!(
                        "viewer connection counts withdrawn from the other instances"
                    ),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot withdraw this instance's viewer counts; the others drop them in 30 s")
                    }
                }
                let _ = done.send(());
                return;
            }
            let (starts, changed) = c.counts();
            let now = now();
            let mut failed = None;
            if changed || published.is_none_or(|p| p.elapsed() >= HEARTBEAT) {
                let mut record = record(now, &starts);
                record["run"] = serde_json::Value::String(run.clone());
                match store.put_record(SHARED_NS, &me, &record).await {
                    Ok(()) => published = Some(Instant::now()),
                    Err(e) => {
                        // Published again on the next tick.
                        c.lock().changed = true;
                        failed = Some(e.to_string());
                    }
                }
            }
            let read = {
                let store = store.clone();
                tokio::task::spawn_blocking(move || store.records(SHARED_NS)).await
            };
            match read {
                Ok(Ok(records)) => {
                    read_ok = Instant::now();
                    // Only once this process's own record overwrote the key: a record
                    // left by this instance's last run (killed) is no other instance.
                    if published.is_some() && another_run_of(&records, &me, &run) {
                        let taken = std::mem::replace(&mut me, new_instance_id(&state_dir));
                        c.lock().instance = Some(me.clone());
                        c.lock().changed = true;
                        tracing::error!(id = %taken, new_id = %me, "another running instance publishes viewer counts under this instance's id (was state_dir/instance.id copied from it?): this instance takes a new id, kept in its state_dir");
                        continue;
                    }
                    let at_now = Instant::now();
                    let live: HashSet<&str> = records
                        .iter()
                        .filter(|(i, v)| {
                            v["at"]
                                .as_i64()
                                .is_some_and(|at| seen.fresh(i, at, now, at_now))
                        })
                        .map(|(i, _)| i.as_str())
                        .collect();
                    let fresh = |instance: &str, _at: i64| live.contains(instance);
                    for (user, channel) in c.take_in(&records, &me, fresh) {
                        tracing::info!(%user, %channel, "connection ended: another instance let the account in at the same moment, and its limit is reached");
                    }
                    for (instance, v) in &records {
                        let at = v["at"].as_i64().unwrap_or(0);
                        if instance != &me && now - at > DELETE_AFTER_SECS {
                            let _ = store.delete_record(SHARED_NS, instance).await;
                            seen.0.remove(instance);
                        }
                    }
                }
                Ok(Err(e)) => failed = Some(e.to_string()),
                Err(e) => failed = Some(e.to_string()),
            }
            if read_ok.elapsed() > GONE_AFTER {
                // Counts that cannot be checked stop counting: a viewer is not refused
                // for connections that may have closed long ago.
                let mut inner = c.lock();
                inner.elsewhere.clear();
                inner.elsewhere_at.clear();
            }
            if let Some(e) = failed {
                if warned.is_none_or(|w| w.elapsed() >= Duration::from_secs(60)) {
                    warned = Some(Instant::now());
                    tracing::warn!(error = %e, "cannot share viewer connections with the other instances");
                }
            }
        }
    })
}

/// Each other instance's last record time (`at`, by its clock) and when this instance
/// saw it change (by its own): a record counts while it changed within `GONE_AFTER`,
/// whatever the two clocks say.
#[derive(Default)]
struct Seen(HashMap<String, (i64, Instant)>);

impl Seen {
    /// Whether `instance`'s record, written at `at`, still counts at `now` (unix
    /// seconds) and `at_now` (this instance's clock).
    fn fresh(&mut self, instance: &str, at: i64, now: i64, at_now: Instant) -> bool {
        let changed = match self.0.get_mut(instance) {
            Some((last, since)) => {
                if *last != at {
                    (*last, *since) = (at, at_now);
                }
                *since
            }
            None => {
                // First seen: its own clock says whether it is news (a record left
                // hours ago is not).
                let since = if now - at <= GONE_AFTER.as_secs() as i64 {
                    at_now
                } else {
                    at_now.checked_sub(GONE_AFTER * 2).unwrap_or(at_now)
                };
                self.0.insert(instance.to_string(), (at, since));
                since
            }
        };
        at_now.duration_since(changed) <= GONE_AFTER
    }
}

/// At a clean stop: has the sharing task delete this instance's published counts and
/// end, so the other instances stop counting its viewers at once (not `GONE_AFTER`
/// later) and no publish follows the delete. Bounded: a store that does not answer
/// leaves the record to go stale.
pub async fn leave_shared_counts(conns: &Arc<Conns>) {
    let (done, left) = tokio::sync::oneshot::channel();
    {
        let mut c = conns.lock();
        if c.instance.is_none() {
            return;
        }
        c.leave = Some(done);
    }
    // The sharing task deletes the record at its next tick (within `SHARE_EVERY`).
    if tokio::time::timeout(SHARE_EVERY * 3, left).await.is_err() {
        tracing::warn!(
            "withdrawing this instance's viewer counts timed out; the others drop them in 30 s"
        );
    }
}

/// Whether `records` hold this instance's id (`me`) published by another process than
/// this one (`run`): two live instances sharing one id.
fn another_run_of(records: &[(String, serde_json::Value)], me: &str, run: &str) -> bool {
    records
        .iter()
        .any(|(i, v)| i == me && v["run"].as_str().is_some_and(|r| r != run))
}

/// 16 random hex digits.
fn random_hex() -> String {
    let mut bytes = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .expect("the system's random source works");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// This instance's key among the published records: kept in `state_dir/instance.id`
/// (made on first use), so it is the same after a restart; a random one when the file
/// cannot be read or written.
fn instance_id(state_dir: &std::path::Path) -> String {
    let path = state_dir.join("instance.id");
    if let Some(id) = std::fs::read_to_string(&path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
    {
        return id;
    }
    new_instance_id(state_dir)
}

/// A new key for this instance, kept in `state_dir/instance.id` (replacing one there).
fn new_instance_id(state_dir: &std::path::Path) -> String {
    let path = state_dir.join("instance.id");
    let id = random_hex();
    // With PostgreSQL nothing else may have made `state_dir` yet.
    let written = crate::store::create_private_dir(state_dir)
        .and_then(|_| std::fs::write(&path, format!("{id}\n")));
    if let Err(e) = written {
        tracing::warn!(path = %path.display(), error = %e, "cannot keep this instance's id; a restart will count its viewers twice for 30 s");
    }
    id
}

/// What an instance publishes at `at`: its players per account (a count, read by
/// every version) and when each started.
fn record(at: i64, players: &BTreeMap<String, Vec<Published>>) -> serde_json::Value {
    let counts: BTreeMap<&String, usize> = players.iter().map(|(a, s)| (a, s.len())).collect();
    let starts: BTreeMap<&String, Vec<i64>> = players
        .iter()
        .map(|(a, s)| (a, s.iter().map(|(t, _)| *t).collect()))
        .collect();
    // Each player's address (null: none known), in the order of `starts`.
    let from: BTreeMap<&String, Vec<Option<String>>> = players
        .iter()
        .map(|(a, s)| {
            (
                a,
                s.iter()
                    .map(|(_, ip)| ip.map(|ip| ip.to_string()))
                    .collect(),
            )
        })
        .collect();
    serde_json::json!({"at": at, "counts": counts, "starts": starts, "from": from})
}

/// Each player of each account on the instances other than `me` whose records are
/// `fresh`: when it started and on which instance. A record without starts (an older
/// freesky) gives its players the oldest start: they are never the ones ended.
fn others_starts(
    records: &[(String, serde_json::Value)],
    me: &str,
    fresh: impl Fn(&str, i64) -> bool,
) -> HashMap<String, Vec<Theirs>> {
    let mut out: HashMap<String, Vec<Theirs>> = HashMap::new();
    for (instance, v) in records {
        let Some(at) = v["at"].as_i64() else { continue };
        if instance == me || !fresh(instance, at) {
            continue;
        }
        for (account, n) in v["counts"].as_object().into_iter().flatten() {
            let n = n.as_u64().unwrap_or(0) as usize;
            let listed = v["starts"][account].as_array();
            let starts = (0..n).map(|i| {
                listed
                    .and_then(|l| l.get(i))
                    .and_then(serde_json::Value::as_i64)
                    .unwrap_or(i64::MIN)
            });
            let from = v["from"][account].as_array();
            let players = out.entry(account.clone()).or_default();
            players.extend(starts.enumerate().map(|(i, t)| {
                let at = from
                    .and_then(|l| l.get(i))
                    .and_then(serde_json::Value::as_str)
                    .and_then(|a| a.parse().ok());
                (t, instance.clone(), at)
            }));
        }
    }
    out
}

/// The connections per account of the instances other than `me` whose records are
/// `fresh` (given the instance and its record's `at`).
fn elsewhere(
    records: &[(String, serde_json::Value)],
    me: &str,
    mut fresh: impl FnMut(&str, i64) -> bool,
) -> HashMap<String, usize> {
    let mut out: HashMap<String, usize> = HashMap::new();
    for (instance, v) in records {
        if instance == me {
            continue;
        }
        let Some(at) = v["at"].as_i64() else { continue };
        if !fresh(instance, at) {
            continue;
        }
        for (account, n) in v["counts"].as_object().into_iter().flatten() {
            *out.entry(account.clone()).or_default() += n.as_u64().unwrap_or(0) as usize;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_instance_id_is_kept_in_a_state_dir_made_for_it() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("not/made/yet");
        let id = instance_id(&dir);
        assert_eq!(id.len(), 16, "{id}");
        assert_eq!(instance_id(&dir), id, "read back, not made again");
    }

    #[test]
    fn other_instances_count_while_they_publish() {
        let rec =
            |at: i64, counts: serde_json::Value| serde_json::json!({"at": at, "counts": counts});
        let records = vec![
            ("me".to_string(), rec(100, serde_json::json!({"ann": 5}))),
            (
                "b".to_string(),
                rec(95, serde_json::json!({"ann": 1, "bob": 2})),
            ),
            ("c".to_string(), rec(71, serde_json::json!({"ann": 1}))),
            ("gone".to_string(), rec(69, serde_json::json!({"ann": 9}))),
            ("odd".to_string(), serde_json::json!("not a record")),
        ];
        let e = elsewhere(&records, "me", |instance, _| instance != "gone");
        assert_eq!(e.get("ann"), Some(&2));
        assert_eq!(e.get("bob"), Some(&2));
        assert_eq!(e.len(), 2);
    }

    /// Two instances let one-connection accounts in at the same moment: reading each
    /// other's records, they end the same connection, the one that started last, and
    /// only it; a record of an older freesky (counts, no starts) is never the one ended.
    #[test]
    fn two_instances_over_an_accounts_limit_end_the_latest_connection_only() {
        let (ann, bob) = (Account::for_test("ann", 1), Account::for_test("bob", 2));
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let (a, b) = (Arc::new(Conns::default()), Arc::new(Conns::default()));
        let first = a.connect(&ann, "news", ip("192.0.2.1"), false).unwrap();
        let bob_a = a.connect(&bob, "news", ip("192.0.2.5"), true).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        let second = b.connect(&ann, "film", ip("192.0.2.2"), false).unwrap();
        let bob_b = b.connect(&bob, "film", ip("192.0.2.6"), false).unwrap();
        let published = |c: &Conns, at: i64| record(at, &c.counts().0);
        let records = vec![
            ("a".to_string(), published(&a, 100)),
            ("b".to_string(), published(&b, 100)),
        ];
        let all = |_: &str, _: i64| true;
        assert!(a.settle(&others_starts(&records, "a", all), "a").is_empty());
        assert_eq!(
            b.settle(&others_starts(&records, "b", all), "b"),
            vec![("ann".to_string(), "film".to_string())]
        );
        let (first, second) = (first.into_guard().unwrap(), second.into_guard().unwrap());
        assert!(!first.is_ended() && second.is_ended());
        // bob holds two of two: nothing ends.
        let bob_b = bob_b.into_guard().unwrap();
        assert!(!bob_b.is_ended());
        assert!(matches!(bob_a, Conn::HlsNew));
        assert_eq!((a.open("bob"), b.open("bob")), (1, 1));
        // Settled: read again, nothing more ends.
        let records = vec![("a".to_string(), published(&a, 101))];
        assert!(b.settle(&others_starts(&records, "b", all), "b").is_empty());
        // An older instance's record (no starts) counts as the oldest.
        let old = vec![(
            "z".to_string(),
            serde_json::json!({"at": 100, "counts": {"ann": 1}}),
        )];
        assert_eq!(
            a.settle(&others_starts(&old, "a", all), "a"),
            vec![("ann".to_string(), "news".to_string())]
        );
        assert!(first.is_ended());
    }

    /// A player switching to a channel that another instance serves (the balancer
    /// sends each channel to one) takes its own connection over there, as on one
    /// instance: let in over the limit by its address, and its old stream ends when
    /// the first instance reads the record. Another address stays refused.
    #[test]
    fn a_player_moving_to_another_instance_takes_its_connection_over() {
        let ann = Account::for_test("ann", 1);
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let (a, b) = (Arc::new(Conns::default()), Arc::new(Conns::default()));
        let old = a
            .connect(&ann, "news", ip("192.0.2.1"), false)
            .unwrap()
            .into_guard()
            .unwrap();
        let published = |c: &Conns, at: i64| record(at, &c.counts().0);
        let all = |_: &str, _: i64| true;
        assert!(b
            .take_in(&[("a".to_string(), published(&a, 100))], "b", all)
            .is_empty());
        assert!(matches!(
            b.connect(&ann, "film", ip("192.0.2.9"), false),
            Err(AccountError::Limit { .. })
        ));
        std::thread::sleep(Duration::from_millis(5));
        let new = b
            .connect(&ann, "film", ip("192.0.2.1"), false)
            .expect("the same player, moved")
            .into_guard()
            .unwrap();
        let records = vec![
            ("a".to_string(), published(&a, 101)),
            ("b".to_string(), published(&b, 101)),
        ];
        // Each reads the other: the old stream ends, the new one plays on.
        assert!(a.take_in(&records, "a", all).is_empty());
        assert!(b.take_in(&records, "b", all).is_empty());
        assert!(old.is_ended());
        assert!(!new.is_ended());
        assert_eq!((a.open("ann"), b.open("ann")), (0, 1));
    }

    /// Two players behind one address (a household's NAT) on two instances, within
    /// the account's limit (or without one): both play; the address rule is for a
    /// player let in over the limit only.
    #[test]
    fn two_players_behind_one_address_within_the_limit_both_play() {
        let ip = Some("192.0.2.1".parse::<IpAddr>().unwrap());
        for limit in [2, 0] {
            let ann = Account::for_test("ann", limit);
            let (a, b) = (Arc::new(Conns::default()), Arc::new(Conns::default()));
            let one = a
                .connect(&ann, "news", ip, false)
                .unwrap()
                .into_guard()
                .unwrap();
            std::thread::sleep(Duration::from_millis(5));
            let two = b
                .connect(&ann, "film", ip, false)
                .unwrap()
                .into_guard()
                .unwrap();
            let published = |c: &Conns, at: i64| record(at, &c.counts().0);
            let records = vec![
                ("a".to_string(), published(&a, 100)),
                ("b".to_string(), published(&b, 100)),
            ];
            let all = |_: &str, _: i64| true;
            assert!(a.take_in(&records, "a", all).is_empty());
            assert!(b.take_in(&records, "b", all).is_empty());
            assert!(!one.is_ended() && !two.is_ended(), "limit {limit}");
        }
    }

    /// A limit raised since the connection was let in is the one `settle` counts with.
    #[test]
    fn settle_counts_with_the_accounts_limit_now() {
        let ann = Account::for_test("ann", 1);
        let a = Arc::new(Conns::default());
        let ip = Some("192.0.2.1".parse::<IpAddr>().unwrap());
        let held = a
            .connect(&ann, "news", ip, false)
            .unwrap()
            .into_guard()
            .unwrap();
        // Another instance's player of ann, started before this one.
        let theirs = vec![(
            "b".to_string(),
            serde_json::json!({"at": 1, "counts": {"ann": 1}, "starts": {"ann": [1]}}),
        )];
        let others = others_starts(&theirs, "a", |_, _| true);
        a.update_limits(|name| (name == "ann").then_some(2));
        assert!(a.settle(&others, "a").is_empty());
        assert!(!held.is_ended());
        a.update_limits(|_| Some(1));
        assert_eq!(a.settle(&others, "a").len(), 1);
        assert!(held.is_ended());
    }

    #[test]
    fn a_record_counts_while_it_changes_by_this_instances_clock() {
        let mut seen = Seen::default();
        let t0 = Instant::now();
        let later = |s: u64| t0 + Duration::from_secs(s);
        // Written 5 s ago by its clock: counts; unchanged for 31 s: no longer.
        assert!(seen.fresh("b", 995, 1000, t0));
        assert!(seen.fresh("b", 995, 1020, later(20)));
        assert!(!seen.fresh("b", 995, 1031, later(31)));
        // Written again: counts again, even if its clock runs an hour behind.
        assert!(seen.fresh("b", -2600, 1040, later(40)));
        // A record left an hour ago, first seen now: never counts.
        assert!(!seen.fresh("c", -2600, 1000, later(40)));
        assert!(!seen.fresh("c", -2600, 1001, later(41)));
    }

    #[test]
    fn another_process_publishing_under_this_id_is_told() {
        let records = vec![
            ("a1".to_string(), serde_json::json!({"at": 1, "run": "r1"})),
            ("b2".to_string(), serde_json::json!({"at": 1, "run": "r9"})),
            ("old".to_string(), serde_json::json!({"at": 1})),
        ];
        assert!(!another_run_of(&records, "a1", "r1"), "its own record");
        assert!(another_run_of(&records, "a1", "r2"), "another process's");
        assert!(!another_run_of(&records, "c3", "r1"), "no record yet");
        assert!(!another_run_of(&records, "old", "r1"), "an older freesky's");
    }

    #[test]
    fn an_instance_keeps_its_id_in_the_state_dir() {
        let dir = tempfile::tempdir().unwrap();
        let id = instance_id(dir.path());
        assert_eq!(id.len(), 16);
        assert_eq!(instance_id(dir.path()), id);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(instance_id(other.path()), id);
    }
}
