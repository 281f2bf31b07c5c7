//! Opening a channel: its sources (by id, slug, number or `SERVICE:ID`), each resolved
//! (cached for as long as the resolution says) and tried in priority order, open
//! circuits last, the leading healthy ones raced when `streams.race` > 1.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use futures::stream::{FuturesUnordered, StreamExt};

use super::{Entry, Registry, RegistryError, SourceCtx};
use crate::error::{Attempt, UpstreamError};
use crate::health::Permit;
use crate::model::ResolvedStream;

/// Sources of one service a request tries at most (a list's many entries of one name
/// are mostly copies of one failing stream).
pub const MAX_TRIES_PER_SERVICE: usize = 8;
/// Sources a request tries at most, all services together.
pub const MAX_TRIES: usize = 24;

impl Registry {
    /// The sources to try for a channel id (lineup slug or number, or `SERVICE:ID`),
    /// optionally only those of service `only`.
    pub(super) async fn sources(
        &self,
        id: &str,
        only: Option<&str>,
    ) -> Result<Vec<(Arc<Entry>, String)>, RegistryError> {
        if let Some(name) = only {
            if self.entry(name).is_none() {
                return Err(self.unknown_service(name));
            }
        }
        if let Some((service, channel_id)) = id.split_once(':') {
            if let Some(e) = self.entry(service) {
                if only.is_some_and(|o| o != service) {
                    return Err(RegistryError::WrongService {
                        id: id.to_string(),
                        service: service.to_string(),
                        only: only.unwrap_or_default().to_string(),
                    });
                }
                if !self.enabled(e) {
                    return Err(RegistryError::ServiceDisabled(service.to_string()));
                }
                return Ok(vec![(e.clone(), channel_id.to_string())]);
            }
        }
        let lineup = self.lineup().await?;
        let channel = lineup
            .get(id)
            .ok_or_else(|| RegistryError::UnknownChannel(id.to_string()))?;
        let sources: Vec<_> = channel
            .sources
            .iter()
            .filter(|s| only.is_none_or(|o| o == s.service))
            .filter_map(|s| {
                self.entry(&s.service)
                    .filter(|e| self.enabled(e))
                    .map(|e| (e.clone(), s.channel_id.to_string()))
            })
            .collect();
        if sources.is_empty() {
            return Err(RegistryError::NoSource {
                channel: id.to_string(),
                only: only.map(str::to_string),
            });
        }
        Ok(sources)
    }

    /// Whether channel `id` (with service filter `only`) has a source that may be tried,
    /// without trying one: the refusal an open would start with (unknown channel or
    /// service, no enabled source), for a probe that opens nothing (a `HEAD`).
    pub async fn playable(&self, id: &str, only: Option<&str>) -> Result<(), RegistryError> {
        self.sources(id, only).await?;
        // A `SERVICE:ID` that its service's list (as last read) does not hold: the
        // 404 an open gets when the service says so.
        let Some((service, channel_id)) = id
            .split_once(':')
            .filter(|(service, _)| self.entry(service).is_some())
        else {
            return Ok(());
        };
        match self.channels_of(service).await {
            Ok(list) if !list.iter().any(|c| c.id == channel_id) => {
                Err(RegistryError::AllSourcesFailed {
                    channel: id.to_string(),
                    tried: vec![crate::error::Attempt {
                        service: service.to_string(),
                        channel_id: channel_id.to_string(),
                        error: format!("service `{service}` lists no channel `{channel_id}`"),
                        timeout: false,
                        unlisted: true,
                    }],
                })
            }
            // Listed, or the list cannot be read now: an open would tell.
            _ => Ok(()),
        }
    }

    /// Resolves `channel_id` of `service`, from cache when still valid.
    pub(super) async fn resolve(
        &self,
        e: &Entry,
        channel_id: &str,
    ) -> Result<Arc<ResolvedStream>, UpstreamError> {
        let key = (e.cfg.name.clone(), channel_id.to_string());
        if let Some(r) = self.resolved.get(&key).await {
            return Ok(r);
        }
        let channels = self.channels_of(&e.cfg.name).await?;
        let channel = channels
            .iter()
            .find(|c| c.id == channel_id)
            .ok_or_else(|| UpstreamError::NoChannel(channel_id.to_string()))?;
        let bound = e.cfg.timeout * 3;
        // Not recorded here: `try_source` records the whole attempt, resolve included.
        let result = tokio::time::timeout(bound, e.service.resolve(channel))
            .await
            .unwrap_or(Err(UpstreamError::Timeout(bound)));
        let resolved = Arc::new(result?);
        self.resolved.insert(key, resolved.clone()).await;
        Ok(resolved)
    }

    /// Tries the channel's sources in priority order: resolve (cached), then `attempt`
    /// (which typically fetches the first playlist). The first success wins; when all
    /// fail, the error lists every (service, why).
    ///
    /// Services whose circuit is open are skipped, then tried last when every other
    /// source failed (a channel with one source left still gets a chance rather than
    /// a 502 without trying). With `streams.race` > 1, up to that many leading sources
    /// with a closed circuit (equal priorities ordered by latency) are tried at once:
    /// the first success wins and the others are dropped (cancelled, not counted).
    pub async fn open<T, F, Fut>(
        &self,
        id: &str,
        only: Option<&str>,
        attempt: F,
    ) -> Result<T, RegistryError>
    where
        F: Fn(SourceCtx) -> Fut,
        Fut: Future<Output = Result<T, UpstreamError>>,
    {
        self.open_except(id, only, &[], attempt).await
    }

    /// [`open`](Self::open) without the sources of the services in `skip` (the ones a
    /// stream just failed over from). When that leaves none, all are tried again.
    pub async fn open_except<T, F, Fut>(
        &self,
        id: &str,
        only: Option<&str>,
        skip: &[String],
        attempt: F,
    ) -> Result<T, RegistryError>
    where
        F: Fn(SourceCtx) -> Fut,
        Fut: Future<Output = Result<T, UpstreamError>>,
    {
        self.open_ordered(id, only, skip, false, attempt).await
    }

    /// [`open`](Self::open) with the sources of the services in `later` tried after
    /// the others (failing lately for the channel: not waited for while another
    /// answers, still asked before the channel gets a 502).
    pub async fn open_after<T, F, Fut>(
        &self,
        id: &str,
        only: Option<&str>,
        later: &[String],
        attempt: F,
    ) -> Result<T, RegistryError>
    where
        F: Fn(SourceCtx) -> Fut,
        Fut: Future<Output = Result<T, UpstreamError>>,
    {
        self.open_ordered(id, only, later, true, attempt).await
    }

    /// `open_except` (`keep`: false) or `open_after` (true).
    async fn open_ordered<T, F, Fut>(
        &self,
        id: &str,
        only: Option<&str>,
        skip: &[String],
        keep: bool,
        attempt: F,
    ) -> Result<T, RegistryError>
    where
        F: Fn(SourceCtx) -> Fut,
        Fut: Future<Output = Result<T, UpstreamError>>,
    {
        let mut sources = self.sources(id, only).await?;
        if keep {
            // Stable: each part keeps its priority order.
            sources.sort_by_key(|(e, _)| skip.contains(&e.cfg.name));
        } else if sources.iter().any(|(e, _)| !skip.contains(&e.cfg.name)) {
            sources.retain(|(e, _)| !skip.contains(&e.cfg.name));
        }
        // A list may give one channel a thousand entries: one request tries a few of
        // each service's, and a bounded number in all (each try waits up to the
        // service's timeout, and asks its upstream).
        let mut per_service: HashMap<String, usize> = HashMap::new();
        sources.retain(|(e, _)| {
            let n = per_service.entry(e.cfg.name.clone()).or_default();
            *n += 1;
            *n <= MAX_TRIES_PER_SERVICE
        });
        if self.race > 1 {
            self.order_by_latency(&mut sources);
        }
        let mut queue = VecDeque::from(sources);
        let mut tried = Vec::new();
        let mut last_resort = Vec::new();
        while let Some(first) = queue.pop_front() {
            let mut batch = vec![first];
            match self.permit(&batch[0].0) {
                Permit::No => {
                    tracing::debug!(service = %batch[0].0.cfg.name, "circuit open: source skipped for now");
                    last_resort.append(&mut batch);
                    continue;
                }
                Permit::Trial => {
                    tracing::info!(service = %batch[0].0.cfg.name, "circuit half-open: this request is the trial");
                }
                Permit::Yes => {
                    while batch.len() < self.race
                        && queue.front().is_some_and(|(e, _)| self.is_closed(e))
                    {
                        batch.extend(queue.pop_front());
                    }
                }
            }
            match self.try_batch(&batch, &attempt).await {
                Ok(v) => return Ok(v),
                Err(mut failed) => tried.append(&mut failed),
            }
            // Counted as tried, not as listed: sources skipped for an open circuit
            // leave room for the others.
            if tried.len() >= MAX_TRIES {
                last_resort.clear();
                break;
            }
        }
        for source in last_resort {
            if tried.len() >= MAX_TRIES {
                break;
            }
            tracing::info!(service = %source.0.cfg.name, channel = %source.1, "circuit open, but no other source is left: trying it");
            match self
                .try_batch(std::slice::from_ref(&source), &attempt)
                .await
            {
                Ok(v) => return Ok(v),
                Err(mut failed) => tried.append(&mut failed),
            }
        }
        Err(RegistryError::AllSourcesFailed {
            channel: id.to_string(),
            tried,
        })
    }

    /// [`open`](Self::open) of channel `id` from `service` only, resolved afresh: its
    /// cached resolutions are dropped first. A token refresh: the same source, with
    /// the URL (and token) the service hands out now.
    pub async fn reopen<T, F, Fut>(
        &self,
        id: &str,
        service: &str,
        attempt: F,
    ) -> Result<T, RegistryError>
    where
        F: Fn(SourceCtx) -> Fut,
        Fut: Future<Output = Result<T, UpstreamError>>,
    {
        for (e, channel_id) in self.sources(id, Some(service)).await? {
            self.resolved
                .invalidate(&(e.cfg.name.clone(), channel_id))
                .await;
        }
        self.open(id, Some(service), attempt).await
    }

    /// Within each run of equal priority (a mapping's pinned order is kept otherwise),
    /// the fastest services first; ones not measured yet count as fastest, so they get
    /// measured.
    pub(super) fn order_by_latency(&self, sources: &mut [(Arc<Entry>, String)]) {
        let mut start = 0;
        while start < sources.len() {
            let p = self.priority(&sources[start].0);
            let len = sources[start..]
                .iter()
                .take_while(|(e, _)| self.priority(e) == p)
                .count();
            let run = &mut sources[start..start + len];
            run.sort_by(|(a, _), (b, _)| {
                let (a, b) = (self.latency_ewma(a), self.latency_ewma(b));
                a.unwrap_or(0.0).total_cmp(&b.unwrap_or(0.0))
            });
            start += len;
        }
    }

    /// Tries the sources of `batch` at once: the first success wins and the rest are
    /// dropped; when all fail, their attempts in batch order.
    pub(super) async fn try_batch<T, F, Fut>(
        &self,
        batch: &[(Arc<Entry>, String)],
        attempt: &F,
    ) -> Result<T, Vec<Attempt>>
    where
        F: Fn(SourceCtx) -> Fut,
        Fut: Future<Output = Result<T, UpstreamError>>,
    {
        let mut running: FuturesUnordered<_> = batch
            .iter()
            .enumerate()
            .map(|(i, (e, channel_id))| async move {
                (i, self.try_source(e, channel_id, attempt).await)
            })
            .collect();
        let mut failed = Vec::new();
        while let Some((i, result)) = running.next().await {
            match result {
                Ok(v) => {
                    if batch.len() > 1 {
                        tracing::debug!(service = %batch[i].0.cfg.name, racing = batch.len(), "race won; the other sources are dropped");
                    }
                    return Ok(v);
                }
                Err(a) => failed.push((i, a)),
            }
        }
        failed.sort_by_key(|(i, _)| *i);
        Err(failed.into_iter().map(|(_, a)| a).collect())
    }

    /// One source: resolve (cached), then `attempt`, bounded; the outcome is recorded
    /// once in the service's health.
    pub(super) async fn try_source<T, F, Fut>(
        &self,
        e: &Arc<Entry>,
        channel_id: &str,
        attempt: &F,
    ) -> Result<T, Attempt>
    where
        F: Fn(SourceCtx) -> Fut,
        Fut: Future<Output = Result<T, UpstreamError>>,
    {
        let started = Instant::now();
        let bound = e.cfg.timeout * 3;
        let result = tokio::time::timeout(bound, async {
            let resolved = self.resolve(e, channel_id).await?;
            let ctx = SourceCtx {
                service_name: e.cfg.name.clone(),
                service: e.service.clone(),
                channel_id: channel_id.to_string(),
                resolved,
            };
            attempt(ctx).await
        })
        .await
        .unwrap_or(Err(UpstreamError::Timeout(bound)));
        // A channel the service does not list (an id mistyped in `SERVICE:ID`), or a
        // limit of freesky's own reached before asking it, says nothing of the
        // service's health: not recorded.
        let unlisted = matches!(result, Err(UpstreamError::NoChannel(_)));
        if !unlisted && !matches!(result, Err(UpstreamError::Busy(_))) {
            self.record(e, started, &result);
        }
        match result {
            Ok(v) => Ok(v),
            Err(err) => {
                tracing::warn!(service = %e.cfg.name, channel = %channel_id, error = %err, elapsed_ms = started.elapsed().as_millis() as u64, "source failed, trying the next");
                // A stale resolution is a common cause: resolve afresh next time.
                self.resolved
                    .invalidate(&(e.cfg.name.clone(), channel_id.to_string()))
                    .await;
                Err(Attempt {
                    service: e.cfg.name.clone(),
                    channel_id: channel_id.to_string(),
                    timeout: err.is_timeout(),
                    error: err.to_string(),
                    unlisted,
                })
            }
        }
    }
}
