//! Serving a sealed `/proxy/` link: a nested playlist is fetched and rewritten again
//! (failing over to the channel's next source, or refreshing an expiring token, see
//! `failover`), a segment, key or map comes from the segment cache (its outcome
//! strikes or clears its source), and a direct media file passes straight through, as
//! does a byte range of an uncached segment, within `segment_timeout` and striking or
//! clearing its source as a segment does.

use std::sync::Arc;

use url::Url;

use super::failover::{self, Switch};
use super::open::LinkBase;
use super::{Engine, StreamError};
use crate::cache::{self, Document};
use crate::error::UpstreamError;
use crate::proxy::{Kind, LinkChannel, Target};
use crate::services::Service;
use crate::upstream::Fetched;

/// An opened link: what it points at and the service to ask (`None`: a playlist
/// link of a channel whose service was disabled or removed since, which fails over).
pub struct Link {
    pub target: Target,
    pub url: Url,
    service: Option<Arc<dyn Service>>,
}

/// What a link serves.
pub enum Served {
    /// A playlist, every URI a sealed link.
    Playlist(String),
    /// A segment, key or map: cached bytes, or a share of the one fetch in flight.
    Segment(cache::Body),
    /// The upstream's answer as it is (a whole media file, or a byte range of a
    /// segment not cached).
    Passthrough(Fetched),
}

impl Engine {
    /// Counts a playlist or segment of `service`'s stream in its status.
    fn stream_outcome<T, E: std::fmt::Display>(&self, service: &str, outcome: &Result<T, E>) {
        self.registry
            .record_stream(service, outcome.as_ref().map(|_| ()).map_err(E::to_string));
    }

    /// Opens link `token`/`item`: refused when tampered, mixed, expired or
    /// malformed, or when its service is gone or disabled (but a playlist link that
    /// fails over goes on with the channel's next source). Asks no upstream.
    pub fn open_link(&self, token: &str, item: &str) -> Result<Link, StreamError> {
        let target = self
            .signer
            .open(token, item)
            .map_err(|why| StreamError::BadLink(why.to_string()))?;
        let service = self
            .registry
            .service(&target.service)
            .filter(|_| self.registry.is_enabled(&target.service));
        if service.is_none() && !(target.kind == Kind::Playlist && target.failover) {
            return Err(StreamError::ServiceUnavailable(target.service.clone()));
        }
        let url = Url::parse(&target.url)
            .map_err(|_| StreamError::BadLink("malformed proxy token".into()))?;
        Ok(Link {
            target,
            url,
            service,
        })
    }

    /// Serves `link`: a playlist rewritten with links under `base`, else its bytes
    /// (`range`: the client's `Range` header, passed on when the segment is not cached).
    pub async fn serve_link(
        &self,
        link: Link,
        range: Option<&str>,
        base: &str,
    ) -> Result<Served, StreamError> {
        let Link {
            target,
            url,
            service,
        } = link;
        let Some(service) = service else {
            return Ok(Served::Playlist(
                self.gone_playlist(&target, &url, base).await?,
            ));
        };
        if target.kind == Kind::Playlist {
            return Ok(Served::Playlist(
                self.media_playlist(&target, service, &url, base).await?,
            ));
        }
        // `bytes=0-` (what ffmpeg, mpv and VLC ask of every segment) is the whole
        // segment: it is shared with every other viewer like a request without a range.
        if target.kind == Kind::Media
            || range.is_some_and(|r| {
                !whole(r)
                    && !self
                        .media
                        .has_segment(&target.service, &url, &target.headers)
            })
        {
            // The whole stream an `.m3u8` open just looked at (and redirected here):
            // its response, kept for this fetch, not a second connection.
            if target.kind == Kind::Media && range.is_none_or(whole) {
                if let Some(parked) = self
                    .media
                    .take_parked(&target.service, &url, &target.headers)
                {
                    return Ok(Served::Passthrough(parked));
                }
            }
            // Whole files and byte ranges of uncached ones go straight through.
            if target.kind == Kind::Media {
                let fetched = service.fetch(&url, &target.headers, range).await;
                self.stream_outcome(&target.service, &fetched);
                return Ok(Served::Passthrough(fetched?));
            }
            // A byte range of a segment (`EXT-X-BYTERANGE`: single-file HLS) is a
            // segment fetch all the same: bounded by `segment_timeout` from request to
            // last byte (a trickling one would hold a request slot of its service for
            // good), and its outcome strikes or clears its source for the channel's
            // failover once it is known: a failed head, or a body cut or complete.
            let limit = self.media.segment_timeout();
            let deadline = tokio::time::Instant::now() + limit;
            let outcome = {
                let failovers = self.failovers.clone();
                let registry = self.registry.clone();
                let shown = service.shown_url(&url);
                let (service, channel) = (target.service.clone(), target.channel.clone());
                let failover = target.failover;
                move |ok: bool| {
                    registry.record_stream(
                        &service,
                        if ok {
                            Ok(())
                        } else {
                            Err(format!("a byte range of {shown} failed"))
                        },
                    );
                    match (failover, ok) {
                        (false, _) => {}
                        (true, true) => failovers.clear(&service, &channel),
                        (true, false) => {
                            failovers.strike(&service, &channel);
                        }
                    }
                }
            };
            let fetched =
                tokio::time::timeout_at(deadline, service.fetch(&url, &target.headers, range))
                    .await
                    .unwrap_or(Err(UpstreamError::Timeout(limit)));
            // Answered at its first byte, as a shared segment is: a 200 without one is
            // a failed segment, and no 206 promises a length before a byte came.
            let fetched = match fetched {
                Ok(f) => first_byte(f, deadline, limit, service.shown_url(&url)).await,
                Err(e) => Err(e),
            };
            let mut fetched = match fetched {
                Ok(f) => match range {
                    Some(r) => cut_ignored_range(f, r),
                    None => f,
                },
                Err(e) => {
                    outcome(false);
                    return Err(e.into());
                }
            };
            fetched.body = bounded(fetched.body, deadline, limit, outcome);
            return Ok(Served::Passthrough(fetched));
        }
        let body = self
            .media
            .segment(service, &target.service, &url, &target.headers)
            .await;
        // Counted once known: a body arriving, at its end (one cut half-way failed).
        let body = match body {
            Ok(crate::cache::Body::Streaming {
                content_type,
                content_length,
                body,
            }) => {
                let (registry, service) = (self.registry.clone(), target.service.clone());
                Ok(crate::cache::Body::Streaming {
                    content_type,
                    content_length,
                    body: watched(body, content_length, move |outcome| {
                        registry.record_stream(&service, outcome.map_err(|e| e.to_string()));
                    }),
                })
            }
            other => {
                self.stream_outcome(&target.service, &other);
                other
            }
        };
        if target.failover {
            match &body {
                Ok(_) => self.failovers.clear(&target.service, &target.channel),
                Err(_) => {
                    self.failovers
                        .strike_url(&target.service, &target.channel, &url);
                }
            }
        }
        Ok(Served::Segment(body?))
    }

    /// A playlist link: the upstream playlist rewritten, or, once its source has failed
    /// `streams.failover_after` times for this channel, the next source's (see `failover`).
    async fn media_playlist(
        &self,
        target: &Target,
        service: Arc<dyn Service>,
        url: &Url,
        base: &str,
    ) -> Result<String, StreamError> {
        let limit = self.settings.max_body_bytes;
        let link = cache::key(&target.service, url, &target.headers);
        let failover = target.failover;
        if failover {
            if let Some(sw) = self.failovers.switched(&link) {
                return self.switched_playlist(target, &link, sw, base).await;
            }
            if failover::token_due(url, self.failovers.first_seen(&link), self.failovers.now()) {
                if let Some(sw) = self.refresh(target, &link, &target.service, None).await {
                    return self.switched_playlist(target, &link, sw, base).await;
                }
            }
        }
        let threshold = self.settings.failover_after;
        let fetched = if failover
            && self.failovers.strikes_of(&target.service, &target.channel) >= threshold
        {
            Err(UpstreamError::Invalid(format!(
                "`{}` failed {threshold} times in a row for this channel",
                target.service
            )))
        } else {
            let fetched = self
                .media
                .document(&*service, &target.service, url, &target.headers, limit)
                .await
                .and_then(|doc| match &*doc {
                    Document::Playlist { .. } => Ok(doc),
                    Document::Media { .. } => Err(UpstreamError::Invalid(format!(
                        "{} is media, not the playlist it was listed as",
                        service.shown_url(url)
                    ))),
                });
            self.stream_outcome(&target.service, &fetched);
            fetched
        };
        match fetched {
            Ok(doc) => {
                let Document::Playlist {
                    url: final_url,
                    body,
                } = &*doc
                else {
                    unreachable!("checked above");
                };
                if failover && !crate::hls::is_master(body) {
                    self.failovers.note_next_seq(&link, body, final_url);
                }
                let links = LinkBase {
                    base,
                    service: &target.service,
                    channel: link_channel(target),
                    headers: &target.headers,
                };
                Ok(self.rewrite(&links, final_url, body)?)
            }
            Err(e) if !failover => Err(e.into()),
            Err(e) if failover::token_refused(&e) => {
                match self.refresh(target, &link, &target.service, None).await {
                    Some(sw) => self.switched_playlist(target, &link, sw, base).await,
                    None => Err(e.into()),
                }
            }
            Err(e) => {
                // Each failed reload is a strike (a player retrying at once too):
                // only segments count a failure shared by viewers once.
                let strikes = self.failovers.strike(&target.service, &target.channel);
                if strikes < threshold {
                    return Err(e.into());
                }
                match self
                    .fail_over(&link, &target.channel, vec![target.service.clone()])
                    .await
                {
                    Ok(sw) => self.switched_playlist(target, &link, sw, base).await,
                    Err(why) => {
                        tracing::warn!(channel = %target.channel, error = %why, "no source to fail over to");
                        Err(e.into())
                    }
                }
            }
        }
    }

    /// A playlist link whose service was disabled or removed since it was handed out:
    /// answered from the channel's next source, as after a failure (its switch, once
    /// made, serves the link from then on).
    async fn gone_playlist(
        &self,
        target: &Target,
        url: &Url,
        base: &str,
    ) -> Result<String, StreamError> {
        let link = cache::key(&target.service, url, &target.headers);
        let sw = match self.failovers.switched(&link) {
            Some(sw) => sw,
            None => {
                self.fail_over_from_gone(
                    &link,
                    target,
                    vec![target.service.clone()],
                    &target.service,
                )
                .await?
            }
        };
        self.switched_playlist(target, &link, sw, base).await
    }

    /// Switches `link` to the channel's next source, skipping `skip`, because service
    /// `gone` is disabled or removed; with none left, the link's answer is that `gone`
    /// is unavailable (logged).
    async fn fail_over_from_gone(
        &self,
        link: &str,
        target: &Target,
        skip: Vec<String>,
        gone: &str,
    ) -> Result<Arc<Switch>, StreamError> {
        self.fail_over(link, &target.channel, skip)
            .await
            .map_err(|why| {
                tracing::warn!(channel = %target.channel, error = %why, "no source to fail over to");
                StreamError::ServiceUnavailable(gone.to_string())
            })
    }

    /// Resolves the link's channel afresh from `service` (a token refresh, see
    /// `failover`); `None` (logged) when that fails, and the link goes on as it was.
    async fn refresh(
        &self,
        target: &Target,
        link: &str,
        service: &str,
        current: Option<&Switch>,
    ) -> Option<Arc<Switch>> {
        let tried = current.map_or_else(|| vec![target.service.clone()], |sw| sw.tried.clone());
        self.refresh_link(link, &target.channel, service, tried)
            .await
            .inspect_err(|e| {
                tracing::warn!(channel = %target.channel, service, error = %e, "token refresh failed")
            })
            .ok()
    }

    /// The replacement source's media playlist, renumbered for the player of the old one;
    /// refreshed first when its token is due or refused.
    async fn switched_playlist(
        &self,
        target: &Target,
        link: &str,
        mut sw: Arc<Switch>,
        base: &str,
    ) -> Result<String, StreamError> {
        let limit = self.settings.max_body_bytes;
        if !self.registry.is_enabled(&sw.service_name) {
            // The service switched to was disabled or removed since: its segments would
            // be refused. The next source, skipping the services no longer enabled.
            let skip: Vec<String> = sw
                .tried
                .iter()
                .filter(|s| **s == sw.service_name || !self.registry.is_enabled(s))
                .cloned()
                .collect();
            sw = self
                .fail_over_from_gone(link, target, skip, &sw.service_name)
                .await?;
        }
        if failover::token_due(&sw.url, sw.since, self.failovers.now()) {
            if let Some(fresh) = self
                .refresh(target, link, &sw.service_name, Some(&sw))
                .await
            {
                sw = fresh;
            }
        }
        let fetched = self
            .media
            .document(&*sw.service, &sw.service_name, &sw.url, &sw.headers, limit)
            .await;
        let doc = match fetched {
            Err(e) if failover::token_refused(&e) => {
                let Some(fresh) = self
                    .refresh(target, link, &sw.service_name, Some(&sw))
                    .await
                else {
                    self.stream_outcome(&sw.service_name, &Err::<(), _>(&e));
                    return Err(e.into());
                };
                sw = fresh;
                let fetched = self
                    .media
                    .document(&*sw.service, &sw.service_name, &sw.url, &sw.headers, limit)
                    .await;
                self.stream_outcome(&sw.service_name, &fetched);
                fetched?
            }
            other => {
                self.stream_outcome(&sw.service_name, &other);
                other?
            }
        };
        let Document::Playlist { url, body } = &*doc else {
            return Err(UpstreamError::Invalid(
                "the failover source answered media, not a playlist".into(),
            )
            .into());
        };
        let body = sw
            .numbers
            .renumber(body, url, self.settings.live_edge_segments)
            .map_err(UpstreamError::Invalid)?;
        self.failovers.note_next_seq(link, &body, url);
        let links = LinkBase {
            base,
            service: &sw.service_name,
            channel: link_channel(target),
            headers: &sw.headers,
        };
        Ok(self.rewrite(&links, url, &body)?)
    }
}

/// The channel a link's playlist hands on to its own links: the same, failing over
/// or pinned alike.
fn link_channel(target: &Target) -> LinkChannel<'_> {
    LinkChannel {
        id: &target.channel,
        failover: target.failover,
    }
}

/// A `Range` header asking for every byte (`bytes=0-`).
/// A byte range of a segment whose upstream ignored the `Range` header and answered
/// the whole resource (200): the range is cut out of it and answered 206, as the
/// player asked (an `EXT-X-BYTERANGE` segment is a range of one file: the whole file
/// would be read as the segment). `bytes=a-b`, and `bytes=a-` or `bytes=-n` when the
/// length is known; anything else passes as it came.
fn cut_ignored_range(mut fetched: Fetched, range: &str) -> Fetched {
    if fetched.status != 200 {
        return fetched;
    }
    let Some((from, to)) = resolve_range(range, fetched.content_length) else {
        return fetched;
    };
    let take = to - from + 1;
    let total = fetched
        .content_length
        .map_or_else(|| "*".to_string(), |n| n.to_string());
    let body = std::mem::replace(&mut fetched.body, Box::pin(futures::stream::empty()));
    fetched.body = super::segment::window(body, from, take);
    fetched.status = 206;
    fetched.content_length = Some(take);
    fetched.content_range = Some(format!("bytes {from}-{to}/{total}"));
    fetched
}

/// `fetched` once its first byte came (put back in front of its body), within
/// `deadline`: an error when its body ends without one ("answered an empty segment"),
/// fails, or is still silent at the deadline.
async fn first_byte(
    mut fetched: Fetched,
    deadline: tokio::time::Instant,
    limit: std::time::Duration,
    shown: String,
) -> Result<Fetched, UpstreamError> {
    use futures::StreamExt;
    loop {
        match tokio::time::timeout_at(deadline, fetched.body.next()).await {
            Err(_) => return Err(UpstreamError::Timeout(limit)),
            Ok(None) => return Err(UpstreamError::empty_segment(&shown)),
            Ok(Some(Err(e))) => return Err(e),
            Ok(Some(Ok(chunk))) if chunk.is_empty() => {}
            Ok(Some(Ok(chunk))) => {
                fetched.put_back(chunk);
                return Ok(fetched);
            }
        }
    }
}

/// The first and last byte of one `Range` (`bytes=a-b`, `bytes=a-`, `bytes=-n`) of a
/// resource of `len` bytes (unknown: only `a-b` can be resolved); `None` when it is
/// not one such range, or cannot be satisfied.
fn resolve_range(range: &str, len: Option<u64>) -> Option<(u64, u64)> {
    let spec = range.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        let (n, len) = (b.parse::<u64>().ok()?, len?);
        return (n > 0 && len > 0).then(|| (len.saturating_sub(n), len - 1));
    }
    let from: u64 = a.parse().ok()?;
    let to = if b.is_empty() {
        len?.checked_sub(1)?
    } else {
        let to: u64 = b.parse().ok()?;
        len.map_or(to, |l| to.min(l.saturating_sub(1)))
    };
    (to >= from && len.is_none_or(|l| from < l)).then_some((from, to))
}

fn whole(range: &str) -> bool {
    range
        .trim()
        .strip_prefix("bytes=")
        .is_some_and(|r| r.trim() == "0-")
}

/// `body` ended with a timeout error (of `limit`) at `deadline`; `outcome` is told
/// (once) how it ended: `true` complete, `false` cut by the deadline or an upstream
/// error. A body dropped before its end (the client left) tells nothing.
fn bounded(
    body: crate::upstream::BodyStream,
    deadline: tokio::time::Instant,
    limit: std::time::Duration,
    outcome: impl FnOnce(bool) + Send + 'static,
) -> crate::upstream::BodyStream {
    use futures::StreamExt;
    Box::pin(futures::stream::unfold(
        Some((body, outcome)),
        move |state| async move {
            let (mut body, outcome) = state?;
            let error = match tokio::time::timeout_at(deadline, body.next()).await {
                Ok(Some(Ok(bytes))) => return Some((Ok(bytes), Some((body, outcome)))),
                Ok(None) => {
                    outcome(true);
                    return None;
                }
                Ok(Some(Err(e))) => e,
                Err(_) => UpstreamError::Timeout(limit),
            };
            outcome(false);
            Some((Err(error), None))
        },
    ))
}

/// `body`, telling `outcome` how it ended: `Ok` once read to its end (or to its
/// `length`, after which a server need not ask for more), the error when it failed;
/// nothing when the client left first.
fn watched(
    body: crate::upstream::BodyStream,
    length: Option<u64>,
    outcome: impl FnOnce(Result<(), &UpstreamError>) + Send + 'static,
) -> crate::upstream::BodyStream {
    use futures::StreamExt;
    Box::pin(futures::stream::unfold(
        Some((body, Some(outcome), 0u64)),
        move |state| async move {
            let (mut body, mut outcome, mut read) = state?;
            match body.next().await {
                Some(Ok(bytes)) => {
                    read += bytes.len() as u64;
                    if length.is_some_and(|l| read >= l) {
                        if let Some(tell) = outcome.take() {
                            tell(Ok(()));
                        }
                    }
                    Some((Ok(bytes), Some((body, outcome, read))))
                }
                None => {
                    if let Some(tell) = outcome {
                        tell(Ok(()));
                    }
                    None
                }
                // An error ends the body: nothing is read after it.
                Some(Err(e)) => {
                    if let Some(tell) = outcome {
                        tell(Err(&e));
                    }
                    Some((Err(e), None))
                }
            }
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::resolve_range;

    #[test]
    fn ranges_resolve_against_a_known_or_unknown_length() {
        assert_eq!(resolve_range("bytes=100-199", Some(1000)), Some((100, 199)));
        assert_eq!(resolve_range("bytes=100-199", None), Some((100, 199)));
        assert_eq!(
            resolve_range("bytes=900-2000", Some(1000)),
            Some((900, 999))
        );
        assert_eq!(resolve_range("bytes=900-", Some(1000)), Some((900, 999)));
        assert_eq!(resolve_range("bytes=-100", Some(1000)), Some((900, 999)));
        // Needs the length, or cannot be satisfied, or is not one range: as it came.
        assert_eq!(resolve_range("bytes=900-", None), None);
        assert_eq!(resolve_range("bytes=-100", None), None);
        assert_eq!(resolve_range("bytes=1000-1100", Some(1000)), None);
        assert_eq!(resolve_range("bytes=5-2", Some(1000)), None);
        assert_eq!(resolve_range("bytes=0-1,5-6", Some(1000)), None);
        assert_eq!(resolve_range("items=0-1", Some(1000)), None);
    }
}
