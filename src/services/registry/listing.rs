//! The lineup: each service's channel list (cached, kept through an outage), merged,
//! numbered from the store and mapped; one channel's detail and mapping edits; and the
//! canonical form of a channel id.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use super::{
    CachedLineup, Entry, Observer, Registry, RegistryError, Step, DEGRADED_LINEUP_TTL, KEPT_WAIT,
};
use crate::error::UpstreamError;
use crate::lineup::{self, Lineup, ServiceChannels, Unmapped};
use crate::model::{Channel, ChannelDetail, ChannelPatch, LineupChannel, Text};
use crate::store::{StoreError, Wanted};

/// The store's namespace of channels moved to another tvg-id (new merge key -> old).
pub const MOVED_KEYS: &str = "moved-keys";

/// The store's namespace of channels' guide ids taken from a tvg-id (slug -> id).
pub const GUIDE_IDS: &str = "guide-ids";

impl Registry {
    /// One service's channels, from cache or fetched (concurrent callers share one fetch).
    pub async fn channels_of(&self, name: &str) -> Result<Arc<Vec<Channel>>, UpstreamError> {
        let e = self
            .entry(name)
            .ok_or_else(|| UpstreamError::Invalid(format!("unknown service `{name}`")))?
            .clone();
        self.channels
            .try_get_with(name.to_string(), async {
                let started = Instant::now();
                // Bounded even if a kind forgets to bound a step.
                let bound = e.cfg.timeout * 3;
                let result = tokio::time::timeout(bound, e.service.channels())
                    .await
                    .unwrap_or(Err(UpstreamError::Timeout(bound)));
                // No channel at all where there were some: an overloaded panel's `[]`
                // or a list cut short more likely than a provider closing down. A
                // failure like HTML or `{}`: the last list stands in meanwhile.
                let result = match result {
                    Ok(list) if list.is_empty() => match self.last_listed(&e.cfg.name) {
                        Some(last) if !last.is_empty() => Err(UpstreamError::Invalid(format!(
                            "it listed no channel, where it listed {} before: that list stands in until it lists some again",
                            last.len()
                        ))),
                        _ => Ok(list),
                    },
                    other => other,
                };
                self.record(&e, started, &result);
                match result {
                    Ok(list) => {
                        let (list, dropped) = crate::model::bounded(list);
                        if dropped > 0 {
                            tracing::warn!(service = %e.cfg.name, dropped, "channels left out: an id longer than {} bytes", crate::model::MAX_ID_BYTES);
                        }
                        self.list_failed
                            .lock()
                            .expect("list_failed lock is never poisoned")
                            .remove(&e.cfg.name);
                        e.stats.lock().expect("stats lock is never poisoned").channel_count = list.len();
                        tracing::info!(service = %e.cfg.name, channels = list.len(), "channel list loaded");
                        Ok(Arc::new(list))
                    }
                    Err(err) => {
                        tracing::warn!(service = %e.cfg.name, error = %err, "channel list failed");
                        self.list_failed
                            .lock()
                            .expect("list_failed lock is never poisoned")
                            .insert(e.cfg.name.clone(), (Instant::now(), err.clone()));
                        Err(err)
                    }
                }
            })
            .await
            .map_err(|e: Arc<UpstreamError>| (*e).clone())
    }

    /// Service `name`'s channels as last listed (in this registry, carried by a
    /// reload, or kept in `state_dir/lists/`): what the lineup holds while it fails.
    pub fn last_listed(&self, name: &str) -> Option<Arc<Vec<Channel>>> {
        self.last_good
            .lock()
            .expect("last_good lock is never poisoned")
            .get(name)
            .cloned()
    }

    /// `channels_of`, waited for `wait` at most; the list goes on loading (and is
    /// cached, and its outcome recorded) when it takes longer.
    async fn channels_within(
        &self,
        name: &str,
        wait: std::time::Duration,
    ) -> Result<Arc<Vec<Channel>>, UpstreamError> {
        let Some(me) = self.me.get().and_then(std::sync::Weak::upgrade) else {
            return self.channels_of(name).await;
        };
        let owned = name.to_string();
        let mut loading = tokio::spawn(async move { me.channels_of(&owned).await });
        match tokio::time::timeout(wait, &mut loading).await {
            Ok(Ok(list)) => list,
            Ok(Err(e)) => Err(UpstreamError::Invalid(format!("channel list: {e}"))),
            Err(_) => {
                tracing::info!(service = %name, "channel list slow: its channels as last listed stand in until it loads");
                Err(UpstreamError::Timeout(wait))
            }
        }
    }

    /// `channels_of` for a reader that may take a recent failure for an answer (the
    /// guide, right after the lineup asked): a list that failed less than
    /// `DEGRADED_LINEUP_TTL` ago is not asked again, so a failing service is not
    /// waited for twice at start. A failing list answers its channels as last listed
    /// (kept in `state_dir/lists/` across a restart), as the lineup does: the guide
    /// of a service whose list is down at a start still gives them programmes; so
    /// does one slower than `KEPT_WAIT`. The error only when it never listed.
    pub async fn channels_or_last_good(
        &self,
        name: &str,
    ) -> Result<Arc<Vec<Channel>>, UpstreamError> {
        if let Some(list) = self.channels.get(name).await {
            return Ok(list);
        }
        let recent = self
            .list_failed
            .lock()
            .expect("list_failed lock is never poisoned")
            .get(name)
            .filter(|(at, _)| at.elapsed() < DEGRADED_LINEUP_TTL)
            .map(|(_, err)| err.clone());
        let result = match recent {
            Some(err) => Err(err),
            // With channels listed before, a slow list is not waited for whole (its
            // service's `timeout`; a host that hangs at a start): they stand in after
            // `KEPT_WAIT`, as for the lineup, and the list goes on loading.
            None if self.last_listed(name).is_some() => self.channels_within(name, KEPT_WAIT).await,
            None => self.channels_of(name).await,
        };
        result.or_else(|err| self.last_listed(name).ok_or(err))
    }

    /// The merged lineup of every enabled service. A service that fails contributes
    /// its last channel list that loaded, or nothing if none did (its status says
    /// why); the lineup is then retried sooner. A service whose circuit is open is not
    /// asked until its backoff is over.
    pub async fn lineup(&self) -> Result<Arc<Lineup>, RegistryError> {
        self.lineup_observed(None).await
    }

    /// `lineup`, telling `observe` as each service's channel list is in. A fresh cached
    /// lineup is returned without fetching, so without telling anything. A stale one
    /// (old, or of before a service switch) is returned at once while a background
    /// task builds the next (a service that hangs delays that build, never a
    /// request); only the first lineup or an observed build is waited for, and a
    /// switch waits for its own (`built_now`).
    pub async fn lineup_observed(
        &self,
        observe: Option<Observer<'_>>,
    ) -> Result<Arc<Lineup>, RegistryError> {
        let stale = match self.cached() {
            Ok(fresh) => return Ok(fresh),
            Err(stale) => stale,
        };
        let me = self.me.get().and_then(std::sync::Weak::upgrade);
        if let (Some(stale), Some(me), None) = (stale, me, observe) {
            if let Ok(building) = self.building.clone().try_lock_owned() {
                tokio::spawn(async move {
                    let _building = building;
                    if let Err(e) = me.build_lineup(None).await {
                        tracing::warn!(error = %e, "lineup refresh failed; the last lineup stays");
                    }
                });
            }
            return Ok(stale);
        }
        self.built_now(observe).await
    }

    /// A lineup built from now's services (one being built is waited for), cached.
    pub(super) async fn built_now(
        &self,
        observe: Option<Observer<'_>>,
    ) -> Result<Arc<Lineup>, RegistryError> {
        // One build at a time, except that a build begun before a service switch is
        // not waited for (its result is thrown away; it may be stuck on the very
        // service just disabled): this one runs beside it.
        let generation = self.generation.load(std::sync::atomic::Ordering::SeqCst);
        let _building = match self.building.clone().try_lock_owned() {
            Ok(held) => Some(held),
            Err(_)
                if self
                    .building_generation
                    .load(std::sync::atomic::Ordering::SeqCst)
                    != generation =>
            {
                None
            }
            Err(_) => Some(self.building.clone().lock_owned().await),
        };
        // Built by another caller while this one waited.
        if let Ok(fresh) = self.cached() {
            return Ok(fresh);
        }
        self.build_lineup(observe).await
    }

    /// The cached lineup when fresh; else the stale one, if any.
    /// The last lineup built, fresh or stale, without building one.
    pub fn last_lineup(&self) -> Option<Arc<Lineup>> {
        self.cached().map_or_else(|stale| stale, Some)
    }

    fn cached(&self) -> Result<Arc<Lineup>, Option<Arc<Lineup>>> {
        let cached = self.lineup.lock().expect("lineup lock is never poisoned");
        match cached.as_ref() {
            Some(c) if c.fresh_until > Instant::now() => Ok(c.lineup.clone()),
            Some(c) => Err(Some(c.lineup.clone())),
            None => Err(None),
        }
    }

    /// Makes the next build read the moved tvg-ids from the store again.
    pub(super) fn forget_moved_keys(&self) {
        *self
            .moved_keys
            .lock()
            .expect("moved_keys lock is never poisoned") = None;
    }

    /// Makes the next build read the kept guide ids from the store again.
    pub(super) fn forget_guide_ids(&self) {
        *self
            .guide_ids
            .lock()
            .expect("guide_ids lock is never poisoned") = None;
    }

    /// The string records of namespace `ns`; `None` when the store cannot be read now
    /// (`what` names them in the warning): not "none kept", which a caller would
    /// cache, or write every channel's over.
    async fn read_kept(&self, ns: &'static str, what: &str) -> Option<HashMap<String, String>> {
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || store.records(ns)).await {
            Ok(Ok(records)) => Some(
                records
                    .into_iter()
                    .filter_map(|(k, v)| Some((k, v.as_str()?.to_string())))
                    .collect(),
            ),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "{what} unreadable: read again at the next build");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading {what} failed: read again at the next build");
                None
            }
        }
    }

    /// Each channel's kept guide id (slug -> id), read from the store at the first
    /// build (and again after another instance changed records); `None` while the
    /// store cannot be read.
    async fn kept_guide_ids(&self) -> Option<Arc<HashMap<String, String>>> {
        let loaded = self
            .guide_ids
            .lock()
            .expect("guide_ids lock is never poisoned")
            .clone();
        if loaded.is_some() {
            return loaded;
        }
        let kept = Arc::new(self.read_kept(GUIDE_IDS, "kept guide ids").await?);
        Some(
            self.guide_ids
                .lock()
                .expect("guide_ids lock is never poisoned")
                .get_or_insert(kept)
                .clone(),
        )
    }

    /// Keeps `new` guide ids (slug -> id) in the store and for this run (a store that
    /// cannot keep them now is asked again at the next build), and forgets those of
    /// the channels in `forget` (whose id another took).
    async fn keep_guide_ids(&self, new: Vec<(String, serde_json::Value)>, forget: Vec<String>) {
        if new.is_empty() {
            return;
        }
        // One transaction (and, on PostgreSQL, one note to the other instances).
        if let Err(e) = self.store.write_records(GUIDE_IDS, &new, &forget).await {
            tracing::warn!(error = %e, count = new.len(), "could not keep the channels' guide ids; asked again at the next build");
            return;
        }
        let forgotten = forget;
        tracing::debug!(count = new.len(), "guide ids kept");
        let mut kept = self
            .guide_ids
            .lock()
            .expect("guide_ids lock is never poisoned");
        // Forgotten meanwhile (another instance wrote): the next build reads them all,
        // these with them.
        let Some(kept) = kept.as_mut().map(Arc::make_mut) else {
            return;
        };
        for (slug, id) in new {
            if let serde_json::Value::String(id) = id {
                kept.insert(slug, id);
            }
        }
        for slug in forgotten {
            kept.remove(&slug);
        }
    }

    /// Every channel a service moved to another tvg-id (new merge key -> old): read
    /// from the store at the first build (and again after another instance changed
    /// records, `shared`), with `new` ones added and kept (a store that cannot keep
    /// them, a display-only one, keeps them for this run).
    async fn moved_keys(&self, new: Vec<(String, String)>) -> HashMap<String, String> {
        let cached = self
            .moved_keys
            .lock()
            .expect("moved_keys lock is never poisoned")
            .clone();
        let read = match cached {
            Some(kept) => Some(kept),
            None => self.read_kept(MOVED_KEYS, "moved channel ids").await,
        };
        // Unreadable now: this build goes with the new ones only, and the next reads
        // the store again.
        let readable = read.is_some();
        let mut all = read.unwrap_or_default();
        if !new.is_empty() {
            tracing::info!(count = new.len(), first = ?new.first(), "a service moved channels to other tvg-ids: they keep their numbers and mappings");
        }
        for (to, from) in new {
            if all.get(&to) == Some(&from) {
                continue;
            }
            if let Err(e) = self
                .store
                .put_record(MOVED_KEYS, &to, &serde_json::Value::String(from.clone()))
                .await
            {
                tracing::warn!(error = %e, "could not keep a moved channel id; kept for this run");
            }
            all.insert(to, from);
        }
        if readable {
            *self
                .moved_keys
                .lock()
                .expect("moved_keys lock is never poisoned") = Some(all.clone());
        }
        all
    }

    /// Builds the lineup from every enabled service's channels and caches it (unless
    /// the lineup was dropped meanwhile). The caller holds `building`, or runs beside
    /// a build of an older generation.
    async fn build_lineup(
        &self,
        observe: Option<Observer<'_>>,
    ) -> Result<Arc<Lineup>, RegistryError> {
        let generation = self.generation.load(std::sync::atomic::Ordering::SeqCst);
        self.building_generation
            .store(generation, std::sync::atomic::Ordering::SeqCst);
        let mut enabled: Vec<&Arc<Entry>> =
            self.entries.iter().filter(|e| self.enabled(e)).collect();
        enabled.sort_by_key(|e| self.priority(e));
        let first = self.last_lineup().is_none();
        let lists = futures::future::join_all(enabled.iter().map(|e| async move {
            let name = &e.cfg.name;
            // An open circuit (backoff not over) is not asked: the lineup would wait
            // for a service known to fail. Its trial comes from a probe or a stream.
            let list = match self.channels.get(name).await {
                Some(list) => Ok(list),
                None if self.is_open(e) => Err(UpstreamError::Invalid(
                    "circuit open: not asked until its next trial".into(),
                )),
                // The first lineup (requests wait for it; a start's or a reload's)
                // waits at most `KEPT_WAIT`
                // for a service whose channels are kept from before (`state_dir/lists/`),
                // not its whole timeout: they stand in while its list goes on loading,
                // and a build after `DEGRADED_LINEUP_TTL` takes it.
                None if first && self.last_listed(name).is_some() => {
                    self.channels_within(name, KEPT_WAIT).await
                }
                None => self.channels_of(name).await,
            };
            if let Some(observe) = observe {
                observe(name, Step::Channels(list.as_ref().map(|l| l.len())));
            }
            list
        }))
        .await;
        let mut degraded = lists.iter().any(Result::is_err);
        // Each refreshed list beside the one before it: the channels its service moved
        // to another tvg-id (outside the lock).
        let mut compared = Vec::new();
        // The last lists of the services switched off (kept in `state_dir/lists/`
        // across restarts): the tvg-ids their live channels lend a "+1".
        let mut aside: Vec<Arc<Vec<Channel>>> = Vec::new();
        let lists: Vec<Arc<Vec<Channel>>> = {
            let mut last_good = self
                .last_good
                .lock()
                .expect("last_good lock is never poisoned");
            aside.extend(
                self.entries
                    .iter()
                    .filter(|e| !self.enabled(e))
                    .filter_map(|e| last_good.get(&e.cfg.name).cloned()),
            );
            enabled
                .iter()
                .zip(lists)
                .map(|(e, r)| match r {
                    Ok(list) => {
                        self.keep_list(&e.cfg.name, &list);
                        if let Some(before) = last_good.insert(e.cfg.name.clone(), list.clone()) {
                            if !Arc::ptr_eq(&before, &list) {
                                compared.push((before, list.clone()));
                            }
                        }
                        list
                    }
                    // Failing now: its channels as last listed (a player's channel list
                    // does not shrink through an outage); none if it never listed.
                    Err(_) => last_good.get(&e.cfg.name).cloned().unwrap_or_default(),
                })
                .collect()
        };
        let inputs: Vec<ServiceChannels<'_>> = enabled
            .iter()
            .zip(&lists)
            .map(|(e, l)| ServiceChannels {
                service: &e.cfg.name,
                priority: self.priority(e),
                channels: l,
            })
            .collect();
        let aside: Vec<&[Channel]> = aside.iter().map(|l| l.as_slice()).collect();
        let mut merged = lineup::merge(&inputs, &aside);
        // Moved out, not copied: the store needs them only for this call.
        let mut keys: Vec<Wanted> = merged
            .iter_mut()
            .map(|m| Wanted {
                key: std::mem::take(&mut m.merge_key),
                slug: std::mem::take(&mut m.wanted_slug),
                number: m.number,
            })
            .collect();
        let moves = compared
            .iter()
            .flat_map(|(before, now)| lineup::moved_tvg_ids(before, now))
            .collect();
        drop(compared);
        let moved = self.moved_keys(moves).await;
        self.store.follow_moved_keys(
            &mut keys,
            |i| {
                // Each name as it reads now, then as it read before (a `+` joined to
                // the word before it, then also without bracketed notes): the keys a
                // store written then holds.
                let names = || {
                    std::iter::once(&*merged[i].name)
                        .chain(merged[i].sources.iter().map(|s| &*s.name))
                };
                let mut keys: Vec<String> = names()
                    .map(|n| format!("name:{}", lineup::normalise(n)))
                    .chain(
                        names()
                            .flat_map(|n| lineup::former_readings(n).map(|r| format!("name:{r}"))),
                    )
                    .collect();
                keys.dedup();
                keys
            },
            &moved,
        );
        // A store that cannot number new channels now (PostgreSQL down) does not take
        // the lineup down with them: the channels it numbered before stay, the new
        // ones wait for a build once it answers (soon: the lineup is degraded).
        let ids = match self.store.identities(&keys).await {
            Ok(ids) => ids,
            Err(e) => {
                let known = self.store.known_identities(&keys);
                let waiting = known.iter().filter(|k| k.is_none()).count();
                if waiting == known.len() {
                    return Err(e.into());
                }
                tracing::warn!(error = %e, waiting, "the state store cannot number new channels now: the lineup is built without them until it answers");
                degraded = true;
                let (kept, ids): (Vec<_>, Vec<_>) = merged
                    .into_iter()
                    .zip(known)
                    .filter_map(|(m, id)| Some((m, id?)))
                    .unzip();
                merged = kept;
                ids
            }
        };
        drop(keys);
        // Unreadable now: the ids of the lists as they are, and none written over the
        // kept ones (read again at the next build).
        let kept = self.kept_guide_ids().await;
        let readable = kept.is_some();
        let kept = kept.unwrap_or_default();
        let (mut wanted, from) = sticky_guide_ids(&merged, &ids, &kept);
        // One guide id per channel, case ignored (as players and guide matching
        // compare them): two tvg-ids made into one (`a_b`, `a-b`: both `a-b.freesky`),
        // one made into a channel's slug form, or a kept one another channel's tvg-id
        // now, would give two channels one guide channel. The id goes to the channel
        // whose tvg-id it is verbatim, then to one that had it before (kept: it owned
        // it then), else to the lowest number: never to whichever a list gives first
        // (a reorder would swap two channels' guides).
        let lower: Vec<String> = wanted.iter().map(|w| w.to_ascii_lowercase()).collect();
        let moved: Vec<(usize, String)> = {
            let mut owner: HashMap<&str, usize> = HashMap::with_capacity(wanted.len());
            let rank = |i: usize| {
                let verbatim = from[i] == GuideIdFrom::TvgId
                    && merged[i].tvg_id.trim().eq_ignore_ascii_case(&wanted[i]);
                let had = kept
                    .get(&ids[i].slug)
                    .is_some_and(|k| k.eq_ignore_ascii_case(&wanted[i]));
                (verbatim, had, std::cmp::Reverse(ids[i].number))
            };
            for (i, w) in lower.iter().enumerate() {
                let o = owner.entry(w.as_str()).or_insert(i);
                if rank(i) > rank(*o) {
                    *o = i;
                }
            }
            // The others (rare) take their slug's form, made unique.
            let mut taken: HashSet<String> = HashSet::new();
            let mut moved = Vec::new();
            for (i, w) in lower.iter().enumerate() {
                if owner[w.as_str()] == i {
                    continue;
                }
                let slug = &ids[i].slug;
                let mut id = lineup::guide_id("", slug);
                let mut n = 2;
                while owner.contains_key(id.as_str()) || taken.contains(&id) {
                    n += 1;
                    id = format!("{slug}-{n}.freesky");
                }
                taken.insert(id.clone());
                moved.push((i, id));
            }
            moved
        };
        let mut lost = vec![false; wanted.len()];
        for (i, id) in moved {
            wanted[i] = id;
            lost[i] = true;
        }
        // A guide id taken from a tvg-id, and its own, is kept for the channel when new
        // (or another tvg-id now: the upstream changed it).
        let keep: Vec<(String, serde_json::Value)> = (0..wanted.len())
            .filter(|&i| {
                from[i] == GuideIdFrom::TvgId
                    && !lost[i]
                    && kept.get(&ids[i].slug) != Some(&wanted[i])
            })
            .map(|i| {
                (
                    ids[i].slug.clone(),
                    serde_json::Value::String(wanted[i].clone()),
                )
            })
            .collect();
        // A guide id now kept for one channel is no other's any more: the one that had
        // it before does not take it back when it comes back (the lower number), from
        // the channel players have known by it since.
        let forget: Vec<String> = if keep.is_empty() || kept.is_empty() {
            Vec::new()
        } else {
            let now: HashMap<String, &str> = keep
                .iter()
                .filter_map(|(slug, id)| Some((id.as_str()?.to_ascii_lowercase(), slug.as_str())))
                .collect();
            kept.iter()
                .filter(|(slug, id)| {
                    now.get(&id.to_ascii_lowercase())
                        .is_some_and(|owner| *owner != slug.as_str())
                })
                .map(|(slug, _)| slug.clone())
                .collect()
        };
        drop(kept);
        if readable {
            self.keep_guide_ids(keep, forget).await;
        }
        let base: Vec<Unmapped> = merged
            .into_iter()
            .zip(ids)
            .zip(wanted)
            .map(|((m, id), guide_id)| {
                let slug = Text::from(id.slug);
                // Mostly the upstream tvg-id itself: then one allocation for both.
                let guide_id = if *m.tvg_id == *guide_id {
                    m.tvg_id.clone()
                } else {
                    Text::from(guide_id)
                };
                Unmapped {
                    channel: LineupChannel {
                        guide_id,
                        id: slug,
                        number: id.number,
                        name: m.name,
                        logo: m.logo,
                        logo_from: m.logo_from,
                        group: m.group,
                        tags: m.tags,
                        sources: m.sources,
                        catchup_days: m.catchup_days,
                        station_id: m.station_id,
                    },
                    tvg_id: m.tvg_id,
                }
            })
            .collect();
        let base = Arc::new(base);
        let ttl = if degraded {
            DEGRADED_LINEUP_TTL.min(self.channels_ttl)
        } else {
            self.channels_ttl
        };
        let lineup = {
            let mut cached = self.lineup.lock().expect("lineup lock is never poisoned");
            // Mapped under the lock, so a mapping edit made during the build (which
            // remaps the lineup cached then) is not lost by this one replacing it.
            let lineup = Arc::new(Lineup::mapped(&base, &self.store.mappings()));
            // A service switched meanwhile: this lineup is of before it.
            if self.generation.load(std::sync::atomic::Ordering::SeqCst) != generation {
                return Ok(lineup);
            }
            *cached = Some(CachedLineup {
                base,
                lineup: lineup.clone(),
                fresh_until: Instant::now() + ttl,
            });
            lineup
        };
        self.rebuilt.notify_one();
        Ok(lineup)
    }

    /// One lineup channel (slug, number or `SERVICE:ID` of one of its sources, hidden
    /// ones included) with its mapping.
    pub async fn channel(&self, id: &str) -> Result<ChannelDetail, RegistryError> {
        let lineup = self.lineup().await?;
        self.slug_of(&lineup, id)
            .and_then(|slug| lineup.detail(&slug))
            .ok_or_else(|| RegistryError::UnknownChannel(id.to_string()))
    }

    /// The slug of the lineup channel `id` names: a slug, a number, or `SERVICE:ID`
    /// of one of its sources.
    fn slug_of(&self, lineup: &Lineup, id: &str) -> Option<String> {
        let channel = lineup.get(id).or_else(|| {
            let (service, channel_id) = id.split_once(':')?;
            self.entry(service)?;
            lineup.by_source(service, channel_id)
        });
        channel.map(|c| c.id.to_string())
    }

    /// Applies `patch` to the mapping of channel `id` (slug, number or `SERVICE:ID`): checked,
    /// persisted, then in the lineup at once. Returns the channel as it now is.
    /// The stored mappings of channels no service lists now (vanished upstream, or
    /// their service removed), by slug: each keeps its number and guide id from the
    /// other channels until it is forgotten (`forget_mapping`), or until the channel
    /// comes back with them.
    pub async fn vanished_mappings(
        &self,
    ) -> Result<Vec<(String, crate::model::ChannelMapping)>, RegistryError> {
        let lineup = self.lineup().await?;
        let mut out: Vec<_> = self
            .store
            .mappings()
            .into_iter()
            .filter(|(slug, _)| !listed(&lineup, slug))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Forgets the mapping of vanished channel `slug` (`vanished_mappings`): its
    /// number and guide id are free for the other channels. A listed channel's
    /// overrides are reset with `map_channel` (`null` fields) instead.
    /// True when there was one to forget.
    pub async fn forget_mapping(&self, slug: &str) -> Result<bool, RegistryError> {
        let lineup = self.lineup().await?;
        if listed(&lineup, slug) {
            return Err(RegistryError::Rejected(format!(
                "channel `{slug}` is listed: reset its overrides with PATCH \
                 /api/channels/{slug} (a field set to null)"
            )));
        }
        drop(lineup);
        if !self.store.mappings().contains_key(slug) {
            // Nothing to forget (forgotten already, or never mapped): done, as a
            // DELETE repeated is.
            return Ok(false);
        }
        self.store
            .update_mapping(slug, |_| Ok(crate::model::ChannelMapping::default()))
            .await?;
        tracing::info!(channel = slug, "mapping of a vanished channel forgotten");
        Ok(true)
    }

    pub async fn map_channel(
        &self,
        id: &str,
        patch: &ChannelPatch,
    ) -> Result<ChannelDetail, RegistryError> {
        let now = self.lineup().await?;
        let slug = self
            .slug_of(&now, id)
            .ok_or_else(|| RegistryError::UnknownChannel(id.to_string()))?;
        // One guide id per channel: another channel's would leave one of the two out
        // of the XMLTV (Plex and Jellyfin map it by number).
        if let Some(Some(wanted)) = &patch.tvg_id {
            let wanted = wanted.trim();
            let holder = now
                .channels
                .iter()
                .chain(now.hidden())
                .find(|c| *c.id != *slug && c.guide_id.eq_ignore_ascii_case(wanted));
            if let Some(other) = holder {
                return Err(RegistryError::Rejected(format!(
                    "`{wanted}` is the guide id of channel `{}` (number {}): two channels \
                     never share one; give that channel another first",
                    other.id, other.number
                )));
            }
        }
        drop(now);
        // Owned: the change may end in a task of its own (`Store::update_mapping`).
        let services: Vec<String> = self.service_names().into_iter().map(String::from).collect();
        let owned_patch = patch.clone();
        let mapping = self
            .store
            .update_mapping(&slug, move |current| {
                let services: Vec<&str> = services.iter().map(String::as_str).collect();
                lineup::patch_mapping(current, &owned_patch, &services)
            })
            .await
            .map_err(|e| match e {
                StoreError::Rejected(why) => RegistryError::Rejected(self.unseen_holder(why)),
                e => e.into(),
            })?;
        let shown = serde_json::to_string(&mapping).unwrap_or_default();
        tracing::info!(channel = %slug, mapping = %shown, "channel mapping changed");
        let lineup = {
            let mut cached = self.lineup.lock().expect("lineup lock is never poisoned");
            match cached.as_mut() {
                Some(c) => {
                    c.lineup = Arc::new(Lineup::mapped(&c.base, &self.store.mappings()));
                    Some(c.lineup.clone())
                }
                None => None,
            }
        };
        let lineup = match lineup {
            Some(l) => l,
            // Dropped meanwhile (a service was switched): build it afresh.
            None => self.lineup().await?,
        };
        lineup
            .detail(&slug)
            .ok_or_else(|| RegistryError::UnknownChannel(id.to_string()))
    }

    /// `why` a number was refused, saying so when the channel holding it is not in the
    /// lineup now (its service off, or no longer listing it): the API cannot show it,
    /// yet a number stays with its channel for good.
    fn unseen_holder(&self, why: String) -> String {
        let holder = why
            .split('`')
            .nth(1)
            .filter(|_| why.starts_with("number ") || why.starts_with("cannot reset the number"));
        let unseen = holder.is_some_and(|h| {
            self.last_lineup()
                .is_some_and(|l| l.get(h).is_none() && !l.hidden().iter().any(|c| *c.id == *h))
        });
        if unseen {
            format!(
                "{why}, which is not in the lineup now (its service is off or no longer lists \
                 it) and keeps its number for when it comes back: choose another"
            )
        } else {
            why
        }
    }

    /// Channel `id` as a viewer asked for it (slug, a number written any way `u32`
    /// parses it: `5`, `05`, `+5`, or `SERVICE:ID`), with the service filter `only`,
    /// in the one form every way of naming the same stream shares: the lineup channel's
    /// slug, and for `SERVICE:ID` that slug pinned to the service. Sessions, viewer
    /// counts and metric labels are keyed by it, so aliases share one upstream
    /// connection and one label. An id naming no lineup channel (or a `SERVICE:ID` that
    /// is not exactly one source of one) comes back as it was: `open` then refuses it
    /// or opens it as before.
    pub async fn canonical(
        &self,
        id: &str,
        only: Option<&str>,
    ) -> Result<(String, Option<String>), RegistryError> {
        let unchanged = || Ok((id.to_string(), only.map(str::to_string)));
        let lineup = self.lineup().await?;
        let source = id
            .split_once(':')
            .filter(|(service, _)| self.entry(service).is_some());
        if let Some((service, channel_id)) = source {
            if only.is_some_and(|o| o != service) {
                // `sources` explains the conflict.
                return unchanged();
            }
            // The lineup channel this source belongs to, if it is that channel's only
            // source from `service`: then pinning the channel to `service` plays the
            // very same source.
            let owner = lineup.channels.iter().chain(lineup.hidden()).find(|c| {
                let mut of_service = c.sources.iter().filter(|s| s.service == service);
                of_service
                    .next()
                    .is_some_and(|s| s.channel_id == channel_id)
                    && of_service.next().is_none()
            });
            return match owner {
                Some(c) => Ok((c.id.to_string(), Some(service.to_string()))),
                None => unchanged(),
            };
        }
        match lineup.get(id) {
            Some(c) => Ok((c.id.to_string(), only.map(str::to_string))),
            None => unchanged(),
        }
    }
}

/// Whether `slug` is one of `lineup`'s channels (listed or hidden), by its slug only.
fn listed(lineup: &Lineup, slug: &str) -> bool {
    lineup
        .channels
        .iter()
        .chain(lineup.hidden())
        .any(|c| *c.id == *slug)
}

/// Where a channel's guide id came from (`sticky_guide_ids`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GuideIdFrom {
    /// Its sources' tvg-id (in the case it was first kept in, when kept).
    TvgId,
    /// Kept from an earlier tvg-id: no source gives one now.
    Kept,
    /// Its slug (`<slug>.freesky`): no tvg-id now or ever kept.
    Slug,
}

/// Each merged channel's guide id before clashes are settled. The upstream tvg-id's
/// (`lineup::guide_id`), in the case first `kept` (two services spelling one id in
/// two cases: the id does not flip with their priorities); a channel no source gives
/// a tvg-id now (the service giving it disabled, or failing for good) keeps its kept
/// one, not its slug's form: the guide id is what a player keys its guide on.
fn sticky_guide_ids(
    merged: &[lineup::Merged],
    ids: &[crate::store::ChannelIdentity],
    kept: &HashMap<String, String>,
) -> (Vec<String>, Vec<GuideIdFrom>) {
    merged
        .iter()
        .zip(ids)
        .map(|(m, id)| {
            let own = lineup::guide_id(&m.tvg_id, &id.slug);
            let from_tvg = !m.tvg_id.trim().is_empty() && own != lineup::guide_id("", &id.slug);
            match kept.get(&id.slug) {
                Some(k) if from_tvg && k.eq_ignore_ascii_case(&own) => {
                    (k.clone(), GuideIdFrom::TvgId)
                }
                _ if from_tvg => (own, GuideIdFrom::TvgId),
                Some(k) => (k.clone(), GuideIdFrom::Kept),
                None => (own, GuideIdFrom::Slug),
            }
        })
        .unzip()
}
