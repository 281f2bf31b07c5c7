//! Channel logos and guide icons served by freesky itself (`[logos] mode = "proxy"` or
//! `"cache"`), so players without internet access (Plex on a closed LAN) or behind a
//! strict firewall still show them.
//!
//! - Outputs write each logo through [`Logos::url`] (or [`Logos::lineup`] for a whole
//!   lineup, [`Logos::guide`] for rendered XMLTV): in `direct` mode the upstream URL as
//!   it is, otherwise a `/logos/{sealed}` link. The sealed part carries the service and
//!   the URL, sealed with the proxy key ([`crate::proxy::Signer::seal_blob`]), so
//!   `/logos/` fetches only what freesky handed out: it is not an open proxy.
//! - A logo is fetched through its service (its headers, time bounds and the rule on
//!   private addresses, as streams are), bounded by `max_bytes`, and served only when
//!   its first bytes are a raster image (PNG, JPEG, GIF, WebP, BMP, ICO, AVIF): HTML,
//!   SVG (which can carry scripts), anything else and oversized bodies are refused and
//!   counted (`freesky_logo_refused_total{reason}`). Images are never resized.
//! - In `cache` mode images are kept in `state_dir/logos/` (one file each, named by a
//!   hash of service and URL) with an index (`index.json`: type, size, last use, fetch
//!   time) that survives restarts. Beyond `cache_max_mb` the least recently used go. A
//!   cached image is served from disk; after [`REFRESH`] it is fetched again, and the
//!   disk copy still answers while the upstream fails.
//! - Requests for one logo that arrive while it is being fetched wait for that fetch
//!   and share its answer (a player asks for every logo of its list at once): one
//!   upstream request, in both modes. Disk reads and writes run off the async threads.
//!
//! The cache is a local file cache, not runtime state: each instance keeps its own.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::config::{LogoMode, LogosConfig};
use crate::error::{redact, UpstreamError};
use crate::lineup::Lineup;
use crate::proxy::Signer;
use crate::services::registry::Registry;

/// How long a cached image is served before it is fetched again (and kept while the
/// upstream fails). Logos change rarely; a day keeps a changed one from lasting long.
pub const REFRESH: Duration = Duration::from_secs(24 * 3600);

/// Why a logo is not served.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LogoError {
    /// Logos are not served by freesky in `direct` mode.
    #[error("logos are not served by freesky ([logos] mode = \"direct\")")]
    Off,
    /// The link was not sealed by this server, or was altered.
    #[error("logo link is tampered or malformed")]
    BadLink,
    /// The logo's service is gone or disabled and no copy is cached.
    #[error("service `{0}` is unknown or disabled, and the logo is not cached")]
    ServiceUnavailable(String),
    /// The upstream answered something that is not a raster image.
    #[error("{url} is not an image ({what})")]
    NotImage { url: String, what: String },
    /// The upstream's image is larger than `max_bytes`.
    #[error("{url} is larger than {limit} bytes ([logos] max_bytes)")]
    TooLarge { url: String, limit: usize },
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
}

/// An image ready to serve.
#[derive(Debug, Clone)]
pub struct Image {
    /// The type its bytes are (from their magic number, not the upstream's header).
    pub content_type: &'static str,
    pub bytes: Bytes,
}

impl Image {
    /// A strong entity tag of its bytes (quoted, as the `ETag` header writes it): a
    /// player asking again with `If-None-Match` gets a 304 while the image is the same.
    pub fn etag(&self) -> String {
        let mut hex = hex_sha256(&[&self.bytes]);
        hex.truncate(32);
        format!("\"{hex}\"")
    }
}

/// One cached image, as the on-disk index lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    content_type: String,
    size: u64,
    /// When it was last served: Unix milliseconds, made strictly increasing so that
    /// eviction has one order (see `Index::tick`).
    used: u64,
    /// Unix seconds of the fetch it came from.
    fetched: u64,
}

/// The cache index: file name (hash of service and URL) to entry.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    entries: HashMap<String, Entry>,
    #[serde(skip)]
    total: u64,
    /// The last `used` handed out.
    #[serde(skip)]
    last_use: u64,
}

impl Index {
    /// The `used` mark of a use now: later than every earlier one.
    fn tick(&mut self) -> u64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.last_use = now.max(self.last_use + 1);
        self.last_use
    }
}

/// Logos for every output. Cheap to share (`Arc` in `AppState`).
pub struct Logos {
    cfg: LogosConfig,
    /// `state_dir/logos`.
    dir: PathBuf,
    signer: Arc<Signer>,
    index: Mutex<Index>,
    /// The last lineup rewritten for one base URL: outputs ask for it on every request.
    lineup_memo: Mutex<Option<LineupMemo>>,
    /// Refusals by reason, also counted process-wide in the metrics.
    refused: [AtomicU64; 3],
    /// Fetches under way, by cache key: a logo asked for by many clients at once (a
    /// player loading its channel list) is fetched once, and they all get its answer.
    inflight: Mutex<HashMap<String, Flight>>,
    /// Logos whose last fetch failed (refused or unreachable), by cache key, for
    /// `FAILED_FOR`: a player loading a lineup does not ask their hosts again each time.
    failed: moka::sync::Cache<String, LogoError>,
}

/// How long a failed logo fetch is remembered before the logo is asked for again.
const FAILED_FOR: std::time::Duration = std::time::Duration::from_secs(600);

/// One fetch under way; its answer once done.
type Flight = Arc<tokio::sync::OnceCell<Result<Image, LogoError>>>;

/// A lineup as the registry gave it, the base URL, and the lineup rewritten for it.
type LineupMemo = (Arc<Lineup>, String, Arc<Lineup>);

/// Refusal reasons, as the metric labels them.
const REASONS: [&str; 3] = ["html", "not_image", "too_large"];

/// The longest logo URL given a `/logos/` link, in bytes.
pub const MAX_URL_BYTES: usize = 4096;

impl Logos {
    /// The logos of `cfg`, their cache in `state_dir/logos` (its index read now).
    pub fn new(cfg: &LogosConfig, state_dir: &Path, signer: Arc<Signer>) -> Self {
        let dir = state_dir.join("logos");
        let index = if cfg.mode == LogoMode::Cache {
            load_index(&dir)
        } else {
            Index::default()
        };
        Self {
            cfg: cfg.clone(),
            dir,
            signer,
            index: Mutex::new(index),
            lineup_memo: Mutex::default(),
            refused: Default::default(),
            inflight: Mutex::default(),
            failed: moka::sync::Cache::builder()
                .max_capacity(50_000)
                .time_to_live(FAILED_FOR)
                .build(),
        }
    }

    pub fn mode(&self) -> LogoMode {
        self.cfg.mode
    }

    /// What an output writes for logo `original` of `service`'s channel, for clients
    /// reaching freesky at `base`: `original` itself in `direct` mode, else freesky's
    /// `/logos/` link (empty when `original` is not an http(s) URL: nothing outside
    /// freesky is handed out).
    pub fn url<'a>(&self, base: &str, service: &str, original: &'a str) -> Cow<'a, str> {
        if self.cfg.mode == LogoMode::Direct || original.is_empty() {
            return Cow::Borrowed(original);
        }
        let ok = Url::parse(original.trim())
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"));
        // Its link, a third longer, would pass the limits of freesky's own URIs
        // (`max_uri_bytes`) and of many clients: left out, as a non-URL is.
        let Some(url) = ok.filter(|u| u.as_str().len() <= MAX_URL_BYTES) else {
            return Cow::Borrowed("");
        };
        let mut plain = Vec::with_capacity(2 + service.len() + url.as_str().len());
        plain.extend_from_slice(&u16::try_from(service.len()).unwrap_or(0).to_be_bytes());
        plain.extend_from_slice(service.as_bytes());
        plain.extend_from_slice(url.as_str().as_bytes());
        Cow::Owned(format!("{base}/logos/{}", self.signer.seal_blob(&plain)))
    }

    /// `lineup` with every channel's logo written by [`Self::url`] (under the service
    /// that gave it, [`logo_service`]): the same `Arc` in `direct` mode; the last one
    /// made is reused while the lineup and base are the same.
    pub fn lineup(&self, base: &str, lineup: Arc<Lineup>) -> Arc<Lineup> {
        if self.cfg.mode == LogoMode::Direct {
            return lineup;
        }
        let mut memo = self.lineup_memo.lock().expect("logo memo lock");
        if let Some((from, b, out)) = &*memo {
            if Arc::ptr_eq(from, &lineup) && b == base {
                return out.clone();
            }
        }
        let channels = lineup
            .channels
            .iter()
            .map(|c| {
                let mut c = c.clone();
                c.logo = self
                    .url(base, logo_service(&c), &c.logo)
                    .into_owned()
                    .into();
                c
            })
            .collect();
        let out = Arc::new(Lineup::new(channels));
        *memo = Some((lineup, base.to_string(), out.clone()));
        out
    }

    /// Rendered XMLTV `xml` (plain, or gzipped when `gz`) with every `<icon src>`
    /// written by [`Self::url`], the service being [`logo_service`] of the channel the
    /// icon belongs to (in `lineup`): `xml` itself in `direct` mode. A whole pass
    /// over the guide: the server keeps each result with its rendered guide
    /// (`guide::Rendered::derived`).
    pub fn guide(&self, base: &str, xml: &Bytes, lineup: &Lineup, gz: bool) -> Bytes {
        if self.cfg.mode == LogoMode::Direct {
            return xml.clone();
        }
        let plain = if gz { gunzip(xml) } else { Some(xml.to_vec()) };
        let Some(plain) = plain else {
            return xml.clone();
        };
        let text = String::from_utf8_lossy(&plain);
        let rewritten = self.rewrite_xmltv(base, &text, lineup);
        if gz {
            gzip(rewritten.as_bytes()).into()
        } else {
            rewritten.into_bytes().into()
        }
    }

    /// `xml` with each `<icon src="...">` rewritten; the service of an icon is that of
    /// the `<channel id>` or `<programme channel>` it is in.
    fn rewrite_xmltv(&self, base: &str, xml: &str, lineup: &Lineup) -> String {
        let services: HashMap<&str, &str> = lineup
            .channels
            .iter()
            .map(|c| (c.guide_id.as_str(), logo_service(c)))
            .collect();
        let mut out = String::with_capacity(xml.len() + xml.len() / 8);
        let mut service = "";
        let mut rest = xml;
        while let Some(at) = rest.find('<') {
            out.push_str(&rest[..at]);
            rest = &rest[at..];
            let end = rest.find('>').map_or(rest.len(), |e| e + 1);
            let tag = &rest[..end];
            rest = &rest[end..];
            let owner = if tag.starts_with("<channel ") {
                attr(tag, "id")
            } else if tag.starts_with("<programme ") {
                attr(tag, "channel")
            } else {
                None
            };
            if let Some((from, to)) = owner {
                let id = unescape(&tag[from..to]);
                service = services.get(id.as_ref()).copied().unwrap_or("");
            }
            match attr(tag, "src").filter(|_| tag.starts_with("<icon")) {
                Some((from, to)) => {
                    let original = unescape(&tag[from..to]);
                    let link = self.url(base, service, &original);
                    // An icon with no link (`javascript:`, not a URL) is left out
                    // rather than written as `src=""`, when it is an empty element.
                    if link.is_empty() && tag.ends_with("/>") {
                        // With its line, when it had one to itself.
                        let line_start = out.trim_end_matches([' ', '\t']);
                        if line_start.ends_with('\n') && rest.starts_with('\n') {
                            out.truncate(line_start.len());
                            rest = &rest[1..];
                        }
                        continue;
                    }
                    out.push_str(&tag[..from]);
                    out.push_str(&quick_xml::escape::escape(link.as_ref()));
                    out.push_str(&tag[to..]);
                }
                None => out.push_str(tag),
            }
        }
        out.push_str(rest);
        out
    }

    /// The image a `/logos/` link names: from the disk cache (`cache` mode) while
    /// fresh, else fetched through its service, checked and (in `cache` mode) kept; a
    /// cached copy answers when the fetch fails.
    pub async fn get(&self, registry: &Registry, sealed: &str) -> Result<Image, LogoError> {
        if self.cfg.mode == LogoMode::Direct {
            return Err(LogoError::Off);
        }
        let (service, url) = self.open(sealed)?;
        let cache = self.cfg.mode == LogoMode::Cache;
        let key = cache_key(&url);
        let cached = match cache {
            // A copy kept before keys were the URL's alone (under its service too).
            true => match self.cached(&key).await {
                Some(found) => Some(found),
                None => self.cached(&legacy_key(&service, &url)).await,
            },
            false => None,
        };
        if let Some((image, fetched)) = &cached {
            if unix_now().saturating_sub(*fetched) < REFRESH.as_secs() {
                return Ok(image.clone());
            }
        }
        let fetched = match self.failed.get(&key) {
            // Failed lately: not asked again before `FAILED_FOR` is over.
            Some(e) => Err(e),
            None => self.fetch_once(registry, &service, &url, &key, cache).await,
        };
        match fetched {
            Ok(image) => Ok(image),
            Err(e) => match cached {
                Some((image, _)) => {
                    tracing::info!(service, url = %redact(&url), error = %e, "logo fetch failed; serving the cached copy");
                    Ok(image)
                }
                None => Err(e),
            },
        }
    }

    /// One fetch of a logo however many ask at once, kept on disk in `cache` mode; a
    /// failure is remembered for `FAILED_FOR`.
    async fn fetch_once(
        &self,
        registry: &Registry,
        service: &str,
        url: &Url,
        key: &str,
        cache: bool,
    ) -> Result<Image, LogoError> {
        let flight = self
            .inflight
            .lock()
            .expect("logo flights lock")
            .entry(key.to_string())
            .or_default()
            .clone();
        let fetched = flight
            .get_or_init(|| async {
                let fetched = self.fetch(registry, service, url).await;
                match &fetched {
                    Ok(image) if cache => self.keep(key, image).await,
                    Ok(_) => {}
                    Err(e) => self.failed.insert(key.to_string(), e.clone()),
                }
                fetched
            })
            .await
            .clone();
        let mut flights = self.inflight.lock().expect("logo flights lock");
        if flights.get(key).is_some_and(|f| Arc::ptr_eq(f, &flight)) {
            flights.remove(key);
        }
        fetched
    }

    /// The service and URL sealed in a `/logos/` link.
    fn open(&self, sealed: &str) -> Result<(String, Url), LogoError> {
        let plain = self.signer.open_blob(sealed).ok_or(LogoError::BadLink)?;
        let (len, rest) = plain.split_first_chunk::<2>().ok_or(LogoError::BadLink)?;
        let len = usize::from(u16::from_be_bytes(*len));
        if rest.len() < len {
            return Err(LogoError::BadLink);
        }
        let (service, url) = rest.split_at(len);
        let service = std::str::from_utf8(service).map_err(|_| LogoError::BadLink)?;
        let url = std::str::from_utf8(url).map_err(|_| LogoError::BadLink)?;
        let url = Url::parse(url).map_err(|_| LogoError::BadLink)?;
        Ok((service.to_string(), url))
    }

    /// Fetches and checks one image, within the service's timeout.
    async fn fetch(
        &self,
        registry: &Registry,
        service: &str,
        url: &Url,
    ) -> Result<Image, LogoError> {
        let svc = registry
            .service(service)
            .filter(|_| registry.is_enabled(service))
            .ok_or_else(|| LogoError::ServiceUnavailable(service.to_string()))?;
        let timeout = svc.http().timeout;
        let limit = self.cfg.max_bytes;
        let work = async {
            let fetched = svc.fetch(url, &Vec::new(), None).await?;
            let ctype = fetched
                .content_type
                .clone()
                .unwrap_or_default()
                .to_ascii_lowercase();
            // Told by its bytes, not by its type: panels serve logos from scripts
            // whose type is HTML. The copy served is typed from its bytes.
            let said_html =
                ctype.starts_with("text/html") || ctype.starts_with("application/xhtml");
            let bytes = match fetched.bytes(limit).await {
                Ok(b) => b,
                Err(UpstreamError::TooLarge { .. }) if said_html => {
                    return Err(self.refuse(
                        0,
                        LogoError::NotImage {
                            url: redact(url),
                            what: format!("the upstream answered `{ctype}`"),
                        },
                    ))
                }
                Err(UpstreamError::TooLarge { .. }) => {
                    return Err(self.refuse(
                        2,
                        LogoError::TooLarge {
                            url: redact(url),
                            limit,
                        },
                    ))
                }
                Err(e) => return Err(e.into()),
            };
            match sniff(&bytes) {
                Some(content_type) => Ok(Image {
                    content_type,
                    bytes,
                }),
                None => {
                    let html = said_html || looks_like_html(&bytes);
                    Err(self.refuse(
                        usize::from(!html),
                        LogoError::NotImage {
                            url: redact(url),
                            what: if said_html {
                                format!("the upstream answered `{ctype}`")
                            } else if html {
                                "HTML".into()
                            } else {
                                "not a PNG, JPEG, GIF, WebP, BMP, ICO or AVIF image".into()
                            },
                        },
                    ))
                }
            }
        };
        tokio::time::timeout(timeout, work)
            .await
            .unwrap_or(Err(LogoError::Upstream(UpstreamError::Timeout(timeout))))
    }

    /// Counts refusal `reason` (an index of `REASONS`), logs it once, and gives `e` back.
    fn refuse(&self, reason: usize, e: LogoError) -> LogoError {
        self.refused[reason].fetch_add(1, Ordering::Relaxed);
        crate::metrics::get().logo_refused(REASONS[reason]);
        tracing::warn!(error = %e, "logo refused");
        e
    }

    /// Refusals by reason since start (`html`, `not_image`, `too_large`).
    pub fn refused(&self) -> Vec<(&'static str, u64)> {
        REASONS
            .iter()
            .zip(&self.refused)
            .map(|(r, n)| (*r, n.load(Ordering::Relaxed)))
            .collect()
    }

    /// A cached image and when it was fetched, marking it used.
    async fn cached(&self, key: &str) -> Option<(Image, u64)> {
        let entry = {
            let mut index = self.index.lock().expect("logo index lock");
            let used = index.tick();
            let e = index.entries.get_mut(key)?;
            e.used = used;
            e.clone()
        };
        let bytes = tokio::fs::read(self.dir.join(key)).await.ok()?;
        let content_type = sniff(&bytes)?;
        Some((
            Image {
                content_type,
                bytes: bytes.into(),
            },
            entry.fetched,
        ))
    }

    /// Writes `image` to the cache, evicting the least recently used beyond the cap,
    /// and saves the index. Failures are logged: the image was served anyway.
    async fn keep(&self, key: &str, image: &Image) {
        let cap = self.cfg.cache_max_mb.saturating_mul(1 << 20);
        let size = image.bytes.len() as u64;
        if size > cap {
            return;
        }
        let (dir, name, bytes) = (self.dir.clone(), key.to_string(), image.bytes.clone());
        let written = tokio::task::spawn_blocking(move || write_atomic(&dir, &name, &bytes))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        if let Err(e) = written {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot write a logo to the cache");
            return;
        }
        let now = unix_now();
        let (evicted, snapshot) = {
            let mut index = self.index.lock().expect("logo index lock");
            let used = index.tick();
            if let Some(old) = index.entries.insert(
                key.to_string(),
                Entry {
                    content_type: image.content_type.to_string(),
                    size,
                    used,
                    fetched: now,
                },
            ) {
                index.total -= old.size.min(index.total);
            }
            index.total += size;
            let mut evicted = Vec::new();
            while index.total > cap {
                let Some(oldest) = index
                    .entries
                    .iter()
                    .filter(|(k, _)| k.as_str() != key)
                    .min_by_key(|(_, e)| e.used)
                    .map(|(k, _)| k.clone())
                else {
                    break;
                };
                if let Some(e) = index.entries.remove(&oldest) {
                    index.total -= e.size.min(index.total);
                }
                evicted.push(oldest);
            }
            (evicted, serde_json::to_vec(&*index))
        };
        let json = match snapshot {
            Ok(json) => json,
            Err(e) => {
                tracing::warn!(error = %e, "cannot encode the logo cache index");
                return;
            }
        };
        let dir = self.dir.clone();
        let saved = tokio::task::spawn_blocking(move || {
            for k in evicted {
                let _ = std::fs::remove_file(dir.join(k));
            }
            write_atomic(&dir, "index.json", &json)
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        if let Err(e) = saved {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot write the logo cache index");
        }
    }

    /// Entries and bytes in the disk cache.
    pub fn cache_stats(&self) -> (usize, u64) {
        let index = self.index.lock().expect("logo index lock");
        (index.entries.len(), index.total)
    }
}

/// The index in `dir`, without entries whose file is missing or of another size, and
/// with every image file it does not list taken back (an index lost or unreadable
/// after a crash keeps the images on disk, and counted under `cache_max_mb`). Files
/// that are neither are deleted: leftover temporary files, or what is no image.
fn load_index(dir: &Path) -> Index {
    let path = dir.join("index.json");
    let mut unreadable = false;
    let mut index: Index = match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(path = %path.display(), error = %e, "logo cache index unreadable; taking back the images on disk");
            unreadable = true;
            Index::default()
        }),
        Err(_) => Index::default(),
    };
    let listed = index.entries.len();
    index
        .entries
        .retain(|k, e| std::fs::metadata(dir.join(k)).is_ok_and(|m| m.len() == e.size));
    let dropped = listed - index.entries.len();
    let mut taken_back = 0;
    for file in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = file.file_name().to_string_lossy().into_owned();
        if name == "index.json" || index.entries.contains_key(&name) {
            continue;
        }
        let is_key = name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit());
        match is_key.then(|| adopt(&file.path())).flatten() {
            Some(entry) => {
                index.entries.insert(name, entry);
                taken_back += 1;
            }
            None => {
                if let Err(e) = std::fs::remove_file(file.path()) {
                    tracing::debug!(file = %file.path().display(), error = %e, "stray logo cache file not removed");
                }
            }
        }
    }
    if taken_back > 0 {
        tracing::info!(
            images = taken_back,
            "logo cache: images the index did not list taken back"
        );
    }
    index.total = index.entries.values().map(|e| e.size).sum();
    index.last_use = index.entries.values().map(|e| e.used).max().unwrap_or(0);
    // Written as it now is, so that the next start reads it as is (no warning, no
    // images taken back again).
    if unreadable || dropped > 0 || taken_back > 0 {
        let saved = serde_json::to_vec(&index)
            .map_err(std::io::Error::other)
            .and_then(|json| write_atomic(dir, "index.json", &json));
        if let Err(e) = saved {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot write the logo cache index");
        }
    }
    index
}

/// The index entry of a cached image file the index lost: its type from its first
/// bytes, its use and fetch times from its modification time (so it is fetched again
/// when that is old). `None`: not an image (or unreadable).
fn adopt(path: &Path) -> Option<Entry> {
    use std::io::Read;
    let meta = std::fs::metadata(path).ok().filter(|m| m.is_file())?;
    let mut head = [0u8; 16];
    let mut f = std::fs::File::open(path).ok()?;
    let n = f.read(&mut head).ok()?;
    let content_type = sniff(&head[..n])?;
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .unwrap_or_default();
    Some(Entry {
        content_type: content_type.to_string(),
        size: meta.len(),
        used: modified.as_millis() as u64,
        fetched: modified.as_secs(),
    })
}

/// The service a channel's logo and icons are fetched through (and their links sealed
/// under): the one whose channel gave the logo, which stays while priorities and
/// pinning change; for a logo an admin set (or none), the first source's.
pub fn logo_service(c: &crate::model::LineupChannel) -> &str {
    if c.logo_from.is_empty() {
        c.sources.first().map_or("", |s| s.service.as_str())
    } else {
        c.logo_from.as_str()
    }
}

/// The cache file name of a logo: a SHA-256 of its URL, in hex. Not of its service
/// too: a service renamed (or another listing the same image) finds the copy on disk
/// while the image host is down.
fn cache_key(url: &Url) -> String {
    hex_sha256(&[url.as_str().as_bytes()])
}

/// The name a logo was kept under before: its service and URL.
fn legacy_key(service: &str, url: &Url) -> String {
    hex_sha256(&[service.as_bytes(), b"\0", url.as_str().as_bytes()])
}

fn hex_sha256(parts: &[&[u8]]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        ctx.update(p);
    }
    ctx.finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Writes `dir/name` whole or not at all (a temporary file renamed over it).
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let tmp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, dir.join(name)).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// The raster image type `bytes` start as, from their magic number.
fn sniff(bytes: &[u8]) -> Option<&'static str> {
    let starts = |m: &[u8]| bytes.starts_with(m);
    if starts(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if starts(b"\xFF\xD8\xFF") {
        Some("image/jpeg")
    } else if starts(b"GIF87a") || starts(b"GIF89a") {
        Some("image/gif")
    } else if starts(b"RIFF") && bytes.get(8..12) == Some(b"WEBP") {
        Some("image/webp")
    } else if starts(b"BM") && bytes.len() > 14 {
        Some("image/bmp")
    } else if starts(b"\0\0\x01\0") {
        Some("image/x-icon")
    } else if bytes.get(4..8) == Some(b"ftyp")
        && matches!(bytes.get(8..12), Some(b"avif" | b"avis"))
    {
        Some("image/avif")
    } else {
        None
    }
}

fn looks_like_html(bytes: &[u8]) -> bool {
    let start = bytes.trim_ascii_start();
    let head = start[..start.len().min(64)].to_ascii_lowercase();
    head.starts_with(b"<!doctype html")
        || head.starts_with(b"<html")
        || head.windows(5).any(|w| w == b"<body")
}

/// The value span of attribute `name="..."` in one tag.
fn attr(tag: &str, name: &str) -> Option<(usize, usize)> {
    let needle = format!(" {name}=\"");
    let from = tag.find(&needle)? + needle.len();
    let to = from + tag[from..].find('"')?;
    Some((from, to))
}

fn unescape(s: &str) -> Cow<'_, str> {
    quick_xml::escape::unescape(s).unwrap_or(Cow::Borrowed(s))
}

fn gunzip(bytes: &[u8]) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .ok()?;
    Some(out)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes)
        .and_then(|()| enc.finish())
        .unwrap_or_default()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logos(mode: LogoMode) -> (Logos, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogosConfig {
            mode,
            ..LogosConfig::default()
        };
        let signer = Arc::new(Signer::ephemeral(Duration::from_secs(60)));
        (Logos::new(&cfg, dir.path(), signer), dir)
    }

    #[test]
    fn links_seal_service_and_url_and_refuse_tampering() {
        let (l, _d) = logos(LogoMode::Cache);
        let link = l.url("http://fs:8005", "Svc", "https://cdn.example/a%20b.png?x=1");
        let sealed = link.strip_prefix("http://fs:8005/logos/").unwrap();
        let (service, url) = l.open(sealed).unwrap();
        assert_eq!(service, "Svc");
        assert_eq!(url.as_str(), "https://cdn.example/a%20b.png?x=1");
        // Deterministic: players and caches see one URL per logo.
        assert_eq!(
            link,
            l.url("http://fs:8005", "Svc", "https://cdn.example/a%20b.png?x=1")
        );
        let mut bad = sealed.to_string();
        let last = bad.pop().unwrap();
        bad.push(if last == 'A' { 'B' } else { 'A' });
        assert!(matches!(l.open(&bad), Err(LogoError::BadLink)));
        assert_eq!(l.url("http://fs", "Svc", "javascript:alert(1)"), "");
        let (direct, _d) = logos(LogoMode::Direct);
        assert_eq!(
            direct.url("http://fs", "Svc", "http://x/l.png"),
            "http://x/l.png"
        );
    }

    #[tokio::test]
    async fn the_least_recently_used_go_beyond_the_cap_and_the_index_survives() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogosConfig {
            mode: LogoMode::Cache,
            cache_max_mb: 1,
            ..LogosConfig::default()
        };
        let signer = Arc::new(Signer::ephemeral(Duration::from_secs(60)));
        let l = Logos::new(&cfg, dir.path(), signer.clone());
        let image = |n: u8| Image {
            content_type: "image/png",
            bytes: [&b"\x89PNG\r\n\x1a\n"[..], &vec![n; 400_000]]
                .concat()
                .into(),
        };
        l.keep("a", &image(1)).await;
        l.keep("b", &image(2)).await;
        // `a` used after `b`: `b` is the least recently used when `c` needs room.
        assert!(l.cached("a").await.is_some());
        l.keep("c", &image(3)).await;
        assert!(l.cached("b").await.is_none());
        assert!(!dir.path().join("logos/b").exists());
        let (count, bytes) = l.cache_stats();
        assert_eq!(count, 2);
        assert!(bytes <= 1 << 20);
        // A new start reads the same cache.
        let again = Logos::new(&cfg, dir.path(), signer);
        assert_eq!(again.cache_stats(), (2, bytes));
        assert_eq!(again.cached("c").await.unwrap().0.bytes, image(3).bytes);
    }

    #[test]
    fn images_are_told_by_their_bytes() {
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n...."), Some("image/png"));
        assert_eq!(sniff(b"\xFF\xD8\xFF\xE0"), Some("image/jpeg"));
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 "), Some("image/webp"));
        assert_eq!(sniff(b"\0\0\0\x1cftypavif"), Some("image/avif"));
        assert_eq!(sniff(b"<!DOCTYPE html>"), None);
        assert_eq!(sniff(b"<svg xmlns=\"http://www.w3.org/2000/svg\"/>"), None);
    }

    #[test]
    fn xmltv_icons_are_rewritten_with_their_channel_service() {
        let (l, _d) = logos(LogoMode::Proxy);
        let lineup = Lineup::new(vec![crate::model::LineupChannel {
            id: "one".into(),
            number: 1,
            name: "One".into(),
            logo: "".into(),
            logo_from: "".into(),
            group: "".into(),
            tags: vec![],
            guide_id: "one.fs".into(),
            sources: vec![crate::model::Source {
                service: "S".into(),
                channel_id: "1".into(),
                name: "One".into(),
                priority: 1,
                catchup_days: 0,
            }],
            catchup_days: 0,
            station_id: "".into(),
        }]);
        let xml = "<tv>\n  <channel id=\"one.fs\">\n    <icon src=\"http://x/a.png?a=1&amp;b=2\"/>\n  </channel>\n  <programme start=\"1\" channel=\"one.fs\">\n    <icon src=\"http://x/p.jpg\" width=\"2\"/>\n  </programme>\n</tv>\n";
        let out = l.rewrite_xmltv("http://fs", xml, &lineup);
        assert!(!out.contains("http://x/"), "{out}");
        let links: Vec<&str> = out
            .split("src=\"")
            .skip(1)
            .map(|s| s.split('"').next().unwrap())
            .collect();
        assert_eq!(links.len(), 2);
        let (s, u) = l
            .open(links[0].strip_prefix("http://fs/logos/").unwrap())
            .unwrap();
        assert_eq!((s.as_str(), u.as_str()), ("S", "http://x/a.png?a=1&b=2"));
        assert!(out.contains("width=\"2\"/>"), "{out}");

        // An icon that is no link is left out, not written as `src=""`.
        let xml = "<tv><channel id=\"one.fs\"><display-name>One</display-name><icon src=\"javascript:alert(1)\"/></channel></tv>";
        let out = l.rewrite_xmltv("http://fs", xml, &lineup);
        assert_eq!(
            out,
            "<tv><channel id=\"one.fs\"><display-name>One</display-name></channel></tv>"
        );
        // With its line, when it had one to itself.
        let xml = "<tv>\n  <channel id=\"one.fs\">\n    <display-name>One</display-name>\n    <icon src=\"ftp://x/a.png\"/>\n  </channel>\n</tv>\n";
        let out = l.rewrite_xmltv("http://fs", xml, &lineup);
        assert_eq!(
            out,
            "<tv>\n  <channel id=\"one.fs\">\n    <display-name>One</display-name>\n  </channel>\n</tv>\n"
        );
    }
}
