//! Playing a title (a movie or an episode) through freesky: its sources tried in order
//! until one answers with media, a progressive file (MP4, MKV, TS...) passed straight
//! through with the client's `Range`, or an HLS VOD playlist rewritten like a channel's
//! (every URI a sealed `/proxy/` link).
//!
//! A source fails over to the next only before anything reached the client: a refused
//! connection, an error status, or an HTML page (a panel's login or error page) where
//! media was expected. Each source is fetched through its service (its headers,
//! credentials, time bounds and the rule on private addresses), like a channel's
//! stream. A file body is never buffered: the upstream is read as the client reads, and
//! dropping the client's body drops the upstream connection.

use bytes::Bytes;
use futures::StreamExt;
use url::Url;

use super::open::LinkBase;
use super::{Engine, StreamError};
use crate::cache::Document;
use crate::error::{redact_str, Attempt, UpstreamError};
use crate::model::Headers;
use crate::proxy::LinkChannel;
use crate::services::registry::RegistryError;
use crate::upstream::{looks_like_html, Fetched};

/// One place a title can be played from.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaSource {
    /// The service that lists it: its headers, credentials and address rule apply.
    pub service: String,
    /// The file's or the HLS playlist's upstream URL.
    pub url: String,
    /// Headers every request for it carries besides the service's own.
    pub headers: Headers,
}

/// What a title opened as.
pub enum Played {
    /// An HLS VOD playlist, every URI a sealed `/proxy/` link.
    Playlist(String),
    /// A progressive file (or the asked byte range of it), head known, body arriving.
    File(Fetched),
    /// The file's upstream answered 416: the asked range is outside the file. The
    /// client's mistake, so no other source is tried. With the upstream's
    /// `Content-Range: bytes */{length}` when it sent one.
    RangeNotSatisfiable(Option<String>),
}

impl Engine {
    /// Opens the first of `sources` that answers with media. `range` (the client's
    /// `Range` header) goes to file sources as it is; playlists get links under `base`.
    /// When every source fails: `AllSourcesFailed` naming `title`, each source's reason.
    /// An HLS source's links name `title` as their channel (see `vod_playlist`).
    pub async fn play_media(
        &self,
        title: &str,
        sources: &[MediaSource],
        range: Option<&str>,
        base: &str,
    ) -> Result<Played, StreamError> {
        let mut tried = Vec::new();
        for src in sources {
            match self.play_one(title, src, range, base).await {
                Ok(played) => return Ok(played),
                Err(e) => {
                    tracing::info!(
                        service = %src.service,
                        url = %redact_str(&src.url),
                        error = %e,
                        "media source failed; trying the next"
                    );
                    tried.push(Attempt {
                        service: src.service.clone(),
                        channel_id: redact_str(&src.url),
                        timeout: e.is_timeout(),
                        error: e.to_string(),
                        unlisted: false,
                    });
                }
            }
        }
        Err(RegistryError::AllSourcesFailed {
            channel: title.to_string(),
            tried,
        }
        .into())
    }

    async fn play_one(
        &self,
        title: &str,
        src: &MediaSource,
        range: Option<&str>,
        base: &str,
    ) -> Result<Played, UpstreamError> {
        let service = self
            .registry
            .service(&src.service)
            .filter(|_| self.registry.is_enabled(&src.service))
            .ok_or_else(|| {
                UpstreamError::Invalid(format!("service `{}` is unknown or disabled", src.service))
            })?;
        let url = Url::parse(&src.url).map_err(|_| {
            UpstreamError::Invalid(format!("`{}` is not a URL", redact_str(&src.url)))
        })?;
        if is_playlist_path(&url) {
            return self.vod_playlist(title, src, &url, base).await;
        }
        let mut fetched = match service.fetch(&url, &src.headers, range).await {
            Err(UpstreamError::RangeNotSatisfiable { content_range }) => {
                return Ok(Played::RangeNotSatisfiable(content_range))
            }
            other => other?,
        };
        let ctype = fetched
            .content_type
            .as_deref()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if ctype.contains("mpegurl") {
            return self.vod_playlist(title, src, &url, base).await;
        }
        if ctype.starts_with("text/html") || ctype.starts_with("application/xhtml") {
            return Err(not_media(&fetched, &ctype));
        }
        // The first bytes tell an HTML page served as octet-stream, or a playlist behind
        // a URL without its extension, from media; they go out first, so nothing is lost.
        let first = match fetched.body.next().await {
            Some(chunk) => chunk?,
            None => Bytes::new(),
        };
        if looks_like_html(&first) {
            return Err(not_media(&fetched, "HTML"));
        }
        if range.is_none() && first.starts_with(b"#EXTM3U") {
            return self.vod_playlist(title, src, &url, base).await;
        }
        fetched.put_back(first);
        Ok(Played::File(fetched))
    }

    /// An HLS VOD source: fetched through the playlist cache and rewritten as a
    /// channel's playlist is, its links naming `title` pinned (a title's links do not
    /// fail over; an account's tag on them is made for the title).
    async fn vod_playlist(
        &self,
        title: &str,
        src: &MediaSource,
        url: &Url,
        base: &str,
    ) -> Result<Played, UpstreamError> {
        let service = self
            .registry
            .service(&src.service)
            .ok_or_else(|| UpstreamError::Invalid(format!("service `{}` is gone", src.service)))?;
        let doc = self
            .media
            .document(
                &*service,
                &src.service,
                url,
                &src.headers,
                self.settings.max_body_bytes,
            )
            .await?;
        match &*doc {
            Document::Playlist { url, body } => {
                let links = LinkBase {
                    base,
                    service: &src.service,
                    channel: LinkChannel::pinned(title),
                    headers: &src.headers,
                };
                Ok(Played::Playlist(self.rewrite(&links, url, body)?))
            }
            Document::Media { .. } => {
                let fetched = service.fetch(url, &src.headers, None).await?;
                Ok(Played::File(fetched))
            }
        }
    }
}

/// A URL whose path names an HLS playlist.
fn is_playlist_path(url: &Url) -> bool {
    let path = url.path().to_ascii_lowercase();
    path.ends_with(".m3u8") || path.ends_with(".m3u")
}

fn not_media(fetched: &Fetched, what: &str) -> UpstreamError {
    UpstreamError::Invalid(format!(
        "{} answered {what}, not media",
        crate::error::redact(&fetched.url)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn playlist_paths() {
        let check = |u: &str| is_playlist_path(&Url::parse(u).unwrap());
        assert!(check("http://h/vod/index.m3u8?token=1"));
        assert!(check("http://h/a/B.M3U8"));
        assert!(!check("http://h/movie/u/p/1.mp4"));
        assert!(!check("http://h/m3u8/1.mkv"));
    }
}
