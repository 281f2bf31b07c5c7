//! Opening a channel for an HLS player: its sources with fallback, then the first
//! playlist rewritten so every URI is a sealed link.

use std::borrow::Cow;

use url::Url;

use super::{Engine, StreamError};
use crate::cache::Document;
use crate::error::UpstreamError;
use crate::hls;
use crate::model::Headers;
use crate::proxy::{self, file_name, Kind, LinkChannel};

/// What a channel opened as.
#[derive(Debug)]
pub enum Opened {
    /// Its playlist, every URI a sealed `/proxy/` link.
    Playlist(String),
    /// A direct media URL (not HLS): the sealed link to play it through; `mpeg_ts`
    /// when its first bytes were MPEG-TS (it may be cut into HLS: `packaged`). The
    /// response that told it is kept a few seconds (`MediaCache::take_parked`) for
    /// whichever plays it first: the packager's session, or the player's fetch of
    /// `link`.
    Media { link: String, mpeg_ts: bool },
}

impl Engine {
    /// Opens channel `id` (already canonical) with its sources in priority order, or
    /// only service `only`'s: the first playlist that loads, rewritten with links under
    /// `base`. The links carry the channel; they fail over unless `only` pins a
    /// service. A media playlist from another source than this URL's last one is
    /// numbered on from it (`Failovers::channel_numbers`): the player reloads it.
    pub async fn open_playlist(
        &self,
        id: &str,
        only: Option<&str>,
        base: &str,
        client: Option<std::net::IpAddr>,
    ) -> Result<Opened, StreamError> {
        let limit = self.settings.max_body_bytes;
        let media = &self.media;
        // A player of a channel whose stream URL is a media playlist reloads this very
        // request: a source whose segments failed `failover_after` times in a row for
        // the channel, or whose playlist timed out here, is tried after the others for
        // a minute (the channel never gets a 502 without it asked).
        let threshold = self.settings.failover_after;
        let failed: Vec<String> = match only {
            Some(_) => Vec::new(),
            None => self
                .registry
                .service_names()
                .into_iter()
                .filter(|s| {
                    self.failovers.skipped(s, id, threshold) || self.failovers.timed_out(s, id)
                })
                .map(str::to_string)
                .collect(),
        };
        // A player that was given a media playlist here reloads it: a source that
        // answers with a master now gives the media playlist it would switch to.
        let was_media = only.is_none() && self.failovers.channel_was_media(id, client);
        let failovers = &self.failovers;
        let opened = self
            .registry
            .open_after(id, only, &failed, |src| async move {
                let r = &src.resolved;
                // Plain MPEG-TS is packaged from the session about to start, and other
                // media played through its link: either reads this response rather
                // than opening another.
                let mut doc = media
                    .document_to_play(&*src.service, &src.service_name, &r.url, &r.headers, limit)
                    .await
                    .inspect_err(|e| {
                        // A player reloading this URL waits for every source tried
                        // before the one that answers: one that timed out is skipped
                        // for a minute.
                        if only.is_none() && e.is_timeout() {
                            failovers.note_timeout(&src.service_name, id);
                        }
                    })?;
                if was_media {
                    let variant = match &*doc {
                        Document::Playlist { url, body } if hls::is_master(body) => {
                            let (variant, _) = hls::muxed_variant(body, url).ok_or_else(|| {
                                UpstreamError::Invalid("the master lists no variant".into())
                            })?;
                            Some(variant)
                        }
                        _ => None,
                    };
                    if let Some(variant) = variant {
                        doc = media
                            .document(
                                &*src.service,
                                &src.service_name,
                                &variant,
                                &r.headers,
                                limit,
                            )
                            .await?;
                    }
                }
                // Made here, so that a playlist no link can be made for (a URI
                // longer than a link carries, too many) is this source's failure and
                // the next source is tried.
                self.finish(id, only, client, base, &src.service_name, &r.headers, &doc)
            })
            .await?;
        Ok(opened)
    }

    /// What a source's first document `doc` opens channel `id` as (see
    /// `open_playlist`).
    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        id: &str,
        only: Option<&str>,
        client: Option<std::net::IpAddr>,
        base: &str,
        service: &str,
        stream_headers: &Headers,
        doc: &Document,
    ) -> Result<Opened, UpstreamError> {
        match doc {
            Document::Playlist { url, body } => {
                // Pinned links name the channel too (an account's tag is checked
                // against it) but never fail over to the other services' sources.
                let channel = match only {
                    Some(_) => LinkChannel::pinned(id),
                    None => LinkChannel::from(id),
                };
                let links = LinkBase {
                    base,
                    service,
                    channel,
                    headers: stream_headers,
                };
                if only.is_some() || hls::is_master(body) {
                    return Ok(Opened::Playlist(self.rewrite(&links, url, body)?));
                }
                // Another source than last time goes on where the player stopped.
                let numbers = self.failovers.channel_numbers(id, service);
                let body = match &numbers.numbers {
                    Some(numbers) => Cow::Owned(
                        numbers
                            .renumber(body, url, self.settings.live_edge_segments)
                            .map_err(UpstreamError::Invalid)?,
                    ),
                    None => Cow::Borrowed(body.as_str()),
                };
                let rewritten = self.rewrite(&links, url, &body)?;
                numbers.note(&body, url);
                self.failovers.note_media_player(id, client);
                Ok(Opened::Playlist(rewritten))
            }
            Document::Media { url, mpeg_ts } => {
                let token = self
                    .signer
                    .seal(service, url, Kind::Media, stream_headers)
                    .map_err(|e| UpstreamError::Invalid(e.to_string()))?;
                let name = file_name(url.as_str(), Kind::Media);
                Ok(Opened::Media {
                    link: format!("{base}/proxy/{token}/{name}"),
                    mpeg_ts: *mpeg_ts,
                })
            }
        }
    }

    /// `body` (the playlist at `url`) with every URI a sealed link of `links`.
    pub(super) fn rewrite(
        &self,
        links: &LinkBase<'_>,
        url: &Url,
        body: &str,
    ) -> Result<String, UpstreamError> {
        proxy::rewrite_playlist(
            &self.signer,
            links.base,
            links.service,
            links.channel,
            links.headers,
            url,
            body,
        )
        .map_err(|e| UpstreamError::Invalid(e.to_string()))
    }
}

/// Whom a rewritten playlist's links are for: where they point, the service and
/// channel they carry (and whether they fail over) and the headers their fetches send.
pub(super) struct LinkBase<'a> {
    pub base: &'a str,
    pub service: &'a str,
    pub channel: LinkChannel<'a>,
    pub headers: &'a Headers,
}
