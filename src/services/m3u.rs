//! `kind = "m3u"`: a generic M3U / M3U Plus channel list (http(s) URL or local file).
//! Each entry is a channel whose stream URL is in the list itself; per-channel
//! headers (`#EXTVLCOPT`, `#KODIPROP`, Kodi `|Referer=` suffixes) travel with it.

use std::collections::HashMap;
use std::hash::BuildHasher as _;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use url::Url;

use futures::StreamExt as _;

use super::{
    de_opt_location, BuildContext, BuildError, UniqueIds, Checked, GuideSource,
    Kind, Location, Service,
};
use crate::config::ServiceConfig;
use crate::error::UpstreamError;
use crate::lineup::slugify;
use crate::model::{Channel, ResolvedStream};
use crate::upstream::ServiceHttp;
use crate::vod::m3u::{file_kind, FileEntry, Files};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct M3uConfig {
    /// The playlist: `http(s)://...` or a file path.
    pub url: Checked<Location>,
    /// XMLTV guide for these channels (URL or file, plain or gzipped); default: the
    /// list header's `url-tvg` / `x-tvg-url`.
    #[serde(default, deserialize_with = "de_opt_location")]
    pub epg_url: Option<Checked<Location>>,
    /// The origin `[services.auth]` credentials go to (`https://panel.example`).
    /// Default: `url`'s origin; required with credentials when `url` is a file, since
    /// they would otherwise go to whatever hosts the file names.
    #[serde(default)]
    pub origin: Option<Checked<Url>>,
}

impl M3uConfig {
    /// Where credentials go: `origin`, else `url` when it is an http(s) URL.
    fn auth_origin(&self) -> Option<&Url> {
        match &self.origin {
            Some(origin) => origin.get(),
            None => self.url.get().and_then(Location::url),
        }
    }
}

impl Kind for M3uConfig {
    /// `url` (when not a file), `origin` and `epg_url` (when not a file).
    fn configured_urls(&self) -> Vec<Url> {
        [Some(&self.url), self.epg_url.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(|l| l.get().and_then(Location::url))
            .chain(self.origin.as_ref().and_then(Checked::get))
            .cloned()
            .collect()
    }

    fn configured_files(&self) -> Vec<(&'static str, &std::path::Path)> {
        [("url", Some(&self.url)), ("epg_url", self.epg_url.as_ref())]
            .into_iter()
            .filter_map(|(field, l)| Some((field, l?.get()?.file()?)))
            .collect()
    }

    fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        self.url.report("url", &mut out);
        if let Some(e) = &self.epg_url {
            e.report("epg_url", &mut out);
        }
        if let Some(o) = &self.origin {
            o.report("origin", &mut out);
        }
        out
    }

    /// A list file naming streams on loopback or private addresses: freesky refuses
    /// them (they are upstream data, and the file names no host of the service's
    /// config) unless the service sets `allow_private`. Reads the file's first 16 MiB.
    fn warnings(&self, allow_private: bool) -> Vec<(String, String)> {
        let Some(path) = self.url.get().and_then(Location::file) else {
            return Vec::new();
        };
        if allow_private {
            return Vec::new();
        }
        let mut text = Vec::new();
        let read = std::fs::File::open(path)
            .and_then(|f| std::io::Read::read_to_end(&mut std::io::Read::take(f, 16 << 20), &mut text));
        if read.is_err() {
            return Vec::new();
        }
        let text = String::from_utf8_lossy(&text);
        // The hosts the config names (`epg_url`, `origin`) are the service's own: its
        // streams may reach them.
        let own: Vec<String> = self
            .configured_urls()
            .iter()
            .filter_map(|u| u.host_str().map(str::to_ascii_lowercase))
            .collect();
        let mut private = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(|l| Url::parse(l.split('|').next().unwrap_or(l)).ok())
            .filter(|u| crate::upstream::private_host(u).is_some())
            .filter(|u| !u.host_str().is_some_and(|h| own.contains(&h.to_ascii_lowercase())));
        let Some(first) = private.next() else {
            return Vec::new();
        };
        let others = private.count();
        vec![(
            "url".into(),
            format!(
                "the list file names {} on a loopback or private address ({first}{}), which \
                 {} refused unless the service sets `allow_private = true`",
                if others == 0 { "a stream" } else { "streams" },
                match others {
                    0 => String::new(),
                    1 => " and 1 other".into(),
                    n => format!(" and {n} others"),
                },
                if others == 0 { "is" } else { "are" },
            ),
        )]
    }

    fn auth_without_origin(&self) -> Option<String> {
        self.auth_origin().is_none().then(|| {
            format!(
                "`url` is a file ({}), so set `origin = \"https://...\"` on the service: \
                 credentials go only to that origin, never to the hosts the file lists",
                self.url.raw()
            )
        })
    }

    fn build(
        &self,
        service: &ServiceConfig,
        ctx: &BuildContext,
    ) -> Result<Arc<dyn Service>, BuildError> {
        let source = self.url.value("url")?.clone();
        let epg_url = match &self.epg_url {
            Some(e) => Some(e.value("epg_url")?.clone()),
            None => None,
        };
        Ok(Arc::new(M3u::new(service, self, source, epg_url, ctx)))
    }
}

pub struct M3u {
    name: String,
    source: Location,
    epg_url: Option<Location>,
    /// The guide the list's header names (`url-tvg`), from the last load.
    header_guide: std::sync::Mutex<Option<Url>>,
    /// The file entries (movies, episodes) of the last read, until `vod` takes them:
    /// one download of the list serves the lineup and the catalogue. Kept from the
    /// first read, then only once the catalogue has asked (a live-only user does not
    /// hold them for nothing).
    files: std::sync::Mutex<Option<Files>>,
    /// Whether the catalogue asked for the file entries, and whether a read kept them
    /// already.
    vod_asked: std::sync::atomic::AtomicBool,
    kept_once: std::sync::atomic::AtomicBool,
    http: ServiceHttp,
    resolved_ttl: Duration,
}

impl M3u {
    fn new(
        cfg: &ServiceConfig,
        kind: &M3uConfig,
        source: Location,
        epg_url: Option<Location>,
        ctx: &BuildContext,
    ) -> Self {
        Self {
            name: cfg.name.clone(),
            source,
            epg_url,
            header_guide: std::sync::Mutex::default(),
            files: std::sync::Mutex::default(),
            vod_asked: std::sync::atomic::AtomicBool::new(false),
            kept_once: std::sync::atomic::AtomicBool::new(false),
            http: ServiceHttp::new(ctx.http.clone(), cfg, kind.auth_origin()),
            resolved_ttl: ctx.resolved_ttl,
        }
    }
}

/// The first bytes of a list kept to tell an empty M3U from something else.
const HEAD_BYTES: usize = 256;

/// Bytes read from the list at a time.
const CHUNK_BYTES: usize = 256 * 1024;

impl M3u {
    /// Reads the list as it arrives and parses it line by line, each entry made a
    /// channel as soon as its URL line is in: the text is never whole in memory, and
    /// never beside its parsed entries.
    async fn read_list(&self) -> Result<Vec<Channel>, UpstreamError> {
        let limit = self.http.http.max_body;
        let mut body = ListBody::open(&self.http, &self.source, limit).await?;
        let mut reader = crate::m3u::Reader::new();
        let mut list = Listing::new(&self.name, body.base.clone());
        let mut head: Vec<u8> = Vec::new();
        let mut read = 0u64;
        while let Some(chunk) = body.next().await? {
            read += chunk.len() as u64;
            if read > limit as u64 {
                return Err(list_too_large(&body.shown, limit, read, false));
            }
            if head.len() < HEAD_BYTES {
                head.extend_from_slice(&chunk[..chunk.len().min(HEAD_BYTES - head.len())]);
            }
            reader.push(&chunk);
            for e in reader.drain() {
                list.add(e);
            }
        }
        let mut playlist = reader.finish();
        for e in playlist.entries.drain(..) {
            list.add(e);
        }
        if list.entries == 0 && !String::from_utf8_lossy(&head).trim_start().starts_with("#EXTM3U")
        {
            return Err(UpstreamError::Invalid(
                "not an M3U playlist (no #EXTM3U header, no entries)".into(),
            ));
        }
        let header_guide = playlist.guide_url().and_then(|g| match &body.base {
            Some(b) => b.join(g).ok(),
            None => Url::parse(g).ok(),
        });
        *self
            .header_guide
            .lock()
            .expect("guide lock is never poisoned") = header_guide;
        for w in &playlist.warnings {
            tracing::warn!(service = %self.name, line = w.line, "in M3U: {}", w.message);
        }
        let (channels, files) = list.finish();
        use std::sync::atomic::Ordering::SeqCst;
        // Said once (at the first read): which entries left the lineup, and why.
        if !files.is_empty() && !self.kept_once.load(SeqCst) {
            tracing::info!(service = %self.name, channels = channels.len(), files = files.len(), "M3U entries that are files (a /movie/ or /series/ path, a media file's extension) are the service's movies and series, not channels");
        }
        let keep = self.vod_asked.load(SeqCst) || !self.kept_once.swap(true, SeqCst);
        *self.files.lock().expect("files lock is never poisoned") = keep.then_some(files);
        Ok(channels)
    }

    /// `read_list` within the service timeout when the list is a URL, as for every
    /// other upstream document (body included).
    async fn read_list_in_time(&self) -> Result<Vec<Channel>, UpstreamError> {
        let work = self.read_list();
        match &self.source {
            Location::Url(url) => tokio::time::timeout(self.http.timeout, work)
                .await
                .unwrap_or_else(|_| {
                    Err(UpstreamError::TimedOut {
                        url: crate::error::redact(url),
                        after: self.http.timeout,
                    })
                }),
            Location::File(_) => work.await,
        }
    }
}

/// The error of a list over `max_body_bytes`: the limit, the key that raises it and
/// the size seen (the whole size when known before reading, else what was read).
fn list_too_large(shown: &str, limit: usize, seen: u64, whole: bool) -> UpstreamError {
    UpstreamError::ListTooLarge {
        url: shown.to_string(),
        limit,
        seen,
        whole,
    }
}

/// Where a list's bytes come from: an http(s) response body or a file, in chunks.
struct ListBody {
    /// The final URL (after redirects) that relative entries resolve against; `None`
    /// for a file.
    base: Option<Url>,
    /// The list as errors name it (redacted URL, or the path).
    shown: String,
    source: BodySource,
}

enum BodySource {
    Http(crate::upstream::BodyStream),
    File(tokio::fs::File),
}

impl ListBody {
    /// Opens the list, refusing it at once when its size is known and over `limit`.
    async fn open(
        http: &ServiceHttp,
        location: &Location,
        limit: usize,
    ) -> Result<Self, UpstreamError> {
        match location {
            Location::Url(url) => {
                let f = http.get(url, &Vec::new(), None).await?;
                let shown = crate::error::redact(&f.url);
                if let Some(n) = f.content_length.filter(|&n| n > limit as u64) {
                    return Err(list_too_large(&shown, limit, n, true));
                }
                Ok(Self {
                    base: Some(f.url),
                    shown,
                    source: BodySource::Http(f.body),
                })
            }
            Location::File(path) => {
                let shown = path.display().to_string();
                let cannot =
                    |e: std::io::Error| UpstreamError::Invalid(format!("cannot read {shown}: {e}"));
                let file = tokio::fs::File::open(path).await.map_err(cannot)?;
                let size = file.metadata().await.map_err(cannot)?.len();
                if size > limit as u64 {
                    return Err(list_too_large(&shown, limit, size, true));
                }
                Ok(Self {
                    base: None,
                    shown,
                    source: BodySource::File(file),
                })
            }
        }
    }

    /// The next chunk, `None` at the end.
    async fn next(&mut self) -> Result<Option<bytes::Bytes>, UpstreamError> {
        match &mut self.source {
            BodySource::Http(body) => body.next().await.transpose(),
            BodySource::File(file) => {
                use tokio::io::AsyncReadExt as _;
                let mut buf = bytes::BytesMut::with_capacity(CHUNK_BYTES);
                let n = file.read_buf(&mut buf).await.map_err(|e| {
                    UpstreamError::Invalid(format!("cannot read {}: {e}", self.shown))
                })?;
                Ok((n > 0).then(|| buf.freeze()))
            }
        }
    }
}

/// The channels of a list, made one entry at a time.
struct Listing<'a> {
    service: &'a str,
    base: Option<Url>,
    out: Vec<Channel>,
    /// Entries seen, kept or not.
    entries: usize,
    ids: UniqueIds,
    /// The first channel of each (name, URL) hash: the same name and URL twice is one
    /// channel listed twice. A hash and an index instead of the two strings again.
    seen: HashMap<u64, usize>,
    hasher: std::collections::hash_map::RandomState,
    /// The entries that are files (movies, episodes): the service's catalogue.
    files: Files,
}

impl<'a> Listing<'a> {
    fn new(service: &'a str, base: Option<Url>) -> Self {
        Self {
            service,
            base,
            out: Vec::new(),
            entries: 0,
            ids: UniqueIds::default(),
            seen: HashMap::new(),
            hasher: std::collections::hash_map::RandomState::new(),
            files: Files::default(),
        }
    }

    fn add(&mut self, e: crate::m3u::Entry) {
        self.entries += 1;
        let name = if e.name.is_empty() {
            e.attr("tvg-name").unwrap_or_default().to_string()
        } else {
            e.name.clone()
        };
        let url = match self
            .base
            .as_ref()
            .map_or_else(|| Url::parse(&e.url), |b| b.join(&e.url))
        {
            Ok(u) if matches!(u.scheme(), "http" | "https") => u,
            _ => {
                let what = if file_kind(&e.url, &name).is_some() {
                    self.files.skip();
                    "media"
                } else {
                    "stream"
                };
                tracing::warn!(service = %self.service, line = e.line, "skipped in M3U: `{}` is not an http(s) {what} URL", crate::error::redact_str(&e.url));
                return;
            }
        };
        // Files (movies, episodes) are the service's catalogue (`vod`), not channels.
        if let Some(kind) = file_kind(url.as_str(), &name) {
            self.files.push(FileEntry {
                kind,
                group: e.attr("group-title").unwrap_or_default().to_string(),
                logo: e.attr("tvg-logo").unwrap_or_default().to_string(),
                url: url.into(),
                headers: e.headers,
                name,
            });
            return;
        }
        if name.is_empty() {
            tracing::warn!(service = %self.service, line = e.line, "skipped in M3U: entry has no name");
            return;
        }
        let url = String::from(url);
        let hash = self.hasher.hash_one((&name, &url));
        let same = |c: &Channel| c.name == name && c.url.as_deref() == Some(url.as_str());
        match self.seen.get(&hash) {
            Some(&i) if same(&self.out[i]) => return,
            // Another pair with the same hash (rare): compare against every channel.
            Some(_) if self.out.iter().any(same) => return,
            Some(_) => {}
            None => {
                self.seen.insert(hash, self.out.len());
            }
        }
        let group = e.attr("group-title").unwrap_or_default().to_string();
        self.out.push(Channel {
            id: self.ids.make(&slugify(&name)),
            logo: e.attr("tvg-logo").unwrap_or_default().to_string(),
            tags: Vec::new(),
            tvg_id: e.attr("tvg-id").unwrap_or_default().to_string(),
            station_id: e
                .attr("tvc-guide-stationid")
                .unwrap_or_default()
                .trim()
                .to_string(),
            number: ["tvg-chno", "channel-number"]
                .into_iter()
                .find_map(|a| e.attr(a))
                .and_then(|n| n.trim().parse().ok())
                .and_then(crate::model::upstream_number),
            service: self.service.to_string(),
            headers: e.headers,
            url: Some(url),
            catchup: e.catchup,
            name,
            group,
        });
    }

    /// The channels, and the file entries.
    fn finish(mut self) -> (Vec<Channel>, Files) {
        // Grown by doubling while reading: up to half of it would stay unused.
        self.out.shrink_to_fit();
        (self.out, self.files)
    }
}

#[async_trait]
impl Service for M3u {
    async fn channels(&self) -> Result<Vec<Channel>, UpstreamError> {
        self.read_list_in_time().await
    }

    async fn resolve(&self, channel: &Channel) -> Result<ResolvedStream, UpstreamError> {
        let raw = channel
            .url
            .as_deref()
            .ok_or_else(|| UpstreamError::NoChannel(channel.id.clone()))?;
        let url =
            Url::parse(raw).map_err(|e| UpstreamError::Invalid(format!("bad stream URL: {e}")))?;
        Ok(ResolvedStream::new(
            url,
            channel.headers.clone(),
            self.resolved_ttl,
        ))
    }

    fn http(&self) -> &ServiceHttp {
        &self.http
    }

    /// The file entries of the last read of the list when no catalogue has taken
    /// them yet (the lineup's refresh read it), else of a read made now.
    async fn vod(&self) -> Option<crate::vod::VodLists> {
        self.vod_asked
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let take = || self.files.lock().expect("files lock is never poisoned").take();
        let files = match take() {
            Some(files) => files,
            None => match self.read_list_in_time().await {
                Ok(_) => take().unwrap_or_default(),
                Err(e) => {
                    return Some(crate::vod::VodLists {
                        movies: Some(Err(e.clone())),
                        series: Some(Err(e)),
                        skipped: 0,
                    })
                }
            },
        };
        files.lists()
    }

    fn take_back_guide(&self, url: Url) {
        let mut guide = self
            .header_guide
            .lock()
            .expect("guide lock is never poisoned");
        if guide.is_none() {
            *guide = Some(url);
        }
    }

    fn guide_source(&self) -> Option<GuideSource> {
        self.epg_url.clone().map(GuideSource::from).or_else(|| {
            self.header_guide
                .lock()
                .expect("guide lock is never poisoned")
                .clone()
                .map(GuideSource::Url)
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const FILE_WITH_AUTH: &str = "[[services]]\nname = \"F\"\nkind = \"m3u\"\nurl = \"/srv/tv/list.m3u\"\n@ORIGIN@\n[services.auth]\nbearer = \"tok\"\n";

    #[test]
    fn a_list_read_from_a_file_takes_credentials_only_with_an_origin() {
        let text = FILE_WITH_AUTH.replace("@ORIGIN@", "");
        let err = Config::parse(&text, "f.toml", &|_| None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(
                "f.toml:6: services[0].auth: `url` is a file (/srv/tv/list.m3u), so set `origin"
            ),
            "{err}"
        );
        let text = FILE_WITH_AUTH.replace("@ORIGIN@", "origin = \"https://panel.example\"");
        let c = Config::parse(&text, "f.toml", &|_| None).unwrap();
        let urls = c.services[0].kind.configured_urls();
        assert_eq!(urls.len(), 1);
        assert_eq!(urls[0].as_str(), "https://panel.example/");
        // An origin must be an http(s) URL.
        let text = FILE_WITH_AUTH.replace("@ORIGIN@", "origin = \"panel.example\"");
        let err = Config::parse(&text, "f.toml", &|_| None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("services[0].origin"), "{err}");
    }
}
