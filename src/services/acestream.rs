//! `kind = "acestream"`: channels played through a local AceStream engine (a P2P
//! service).
//!
//! Channels are AceStream content ids (40 hex digits), listed inline and/or in an M3U
//! of `acestream://<id>` (or bare id) entries. `resolve` asks the engine's HTTP API to
//! start (or join) a playback session for the id and returns its playback URL; the
//! engine then serves the stream as HLS (`mode = "hls"`) or MPEG-TS (`mode = "ts"`) and
//! freesky proxies it like any other upstream.
//!
//! An engine session keeps downloading until told to stop, so this service remembers
//! each channel's `command_url` (never shown to clients) and sends `method=stop`
//! when freesky no longer uses the stream: at once when the channel's shared `.ts`
//! session ends ([`Service::release`]), or after `idle_stop` without any request for the
//! stream's playlists or segments (HLS viewers, who come and go without telling).

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use serde::Deserialize;
use url::Url;

use super::{
    read_location, BuildContext, BuildError, Checked, Kind, Location, Service,
};
use crate::config::{de_duration, ServiceConfig};
use crate::error::{redact, UpstreamError};
use crate::model::{Channel, Headers, ResolvedStream};
use crate::upstream::{Fetched, ServiceHttp};

const DEFAULT_ENGINE: &str = "http://127.0.0.1:6878";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AceStreamConfig {
    /// The engine's HTTP API.
    #[serde(default = "default_engine_url")]
    pub engine_url: Checked<Url>,
    /// Channels listed in the config itself.
    #[serde(default)]
    pub channels: Vec<AceChannel>,
    /// An M3U (http(s) URL or file path) whose entries are `acestream://<id>` or bare ids.
    #[serde(default)]
    pub channels_url: Option<Checked<Location>>,
    /// What the engine serves: HLS (`manifest.m3u8`) or one MPEG-TS stream (`getstream`).
    #[serde(default)]
    pub mode: Mode,
    /// An engine session nobody requested anything of for this long is stopped.
    #[serde(default = "default_idle_stop", deserialize_with = "de_duration")]
    pub idle_stop: Duration,
}

fn default_engine_url() -> Checked<Url> {
    Checked::http_url(DEFAULT_ENGINE)
}

fn default_idle_stop() -> Duration {
    Duration::from_secs(30)
}

/// One inline channel.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AceChannel {
    pub name: String,
    /// The AceStream content id (40 hex digits; `acestream://` accepted).
    pub id: String,
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub logo: String,
    #[serde(default)]
    pub tvg_id: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Hls,
    Ts,
}

/// The content id in `s`: `acestream://<id>`, a bare id, or an engine URL with `id=`;
/// lowercased. `None` unless it is exactly 40 hex digits.
pub fn content_id(s: &str) -> Option<String> {
    let s = s.trim();
    let raw = match s.get(..12) {
        Some(p) if p.eq_ignore_ascii_case("acestream://") => s[12..].trim_end_matches('/'),
        _ if s.contains("://") => {
            let u = Url::parse(s).ok()?;
            let id = u.query_pairs().find(|(k, _)| k == "id")?.1;
            return content_id(&id);
        }
        _ => s,
    };
    (raw.len() == 40 && raw.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| raw.to_ascii_lowercase())
}

impl Kind for AceStreamConfig {
    fn configured_files(&self) -> Vec<(&'static str, &std::path::Path)> {
        let listed = self.channels_url.as_ref().and_then(Checked::get);
        listed
            .and_then(Location::file)
            .map(|p| ("channels_url", p))
            .into_iter()
            .collect()
    }

    /// `engine_url` and `channels_url` (when not a file).
    fn configured_urls(&self) -> Vec<Url> {
        let listed = self.channels_url.as_ref().and_then(Checked::get);
        self.engine_url
            .get()
            .into_iter()
            .chain(listed.and_then(Location::url))
            .cloned()
            .collect()
    }

    fn build(
        &self,
        service: &ServiceConfig,
        ctx: &BuildContext,
    ) -> Result<Arc<dyn Service>, BuildError> {
        let engine = self.engine_url.base("engine_url")?;
        let channels_url = match &self.channels_url {
            Some(l) => Some(l.value("channels_url")?.clone()),
            None => None,
        };
        Ok(Arc::new(AceStream::new(
            service,
            self,
            engine,
            channels_url,
            ctx,
        )))
    }

    fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        self.engine_url.report("engine_url", &mut out);
        if self.channels.is_empty() && self.channels_url.is_none() {
            out.push((
                "channels".into(),
                "give `channels = [...]`, `channels_url`, or both".into(),
            ));
        }
        let mut seen = HashSet::new();
        for (i, c) in self.channels.iter().enumerate() {
            if c.name.trim().is_empty() {
                out.push((format!("channels[{i}].name"), "must not be empty".into()));
            }
            match content_id(&c.id) {
                None => out.push((
                    format!("channels[{i}].id"),
                    format!(
                        "`{}` is not an AceStream content id (40 hex digits, optionally after `acestream://`)",
                        c.id
                    ),
                )),
                Some(id) if !seen.insert(id.clone()) => out.push((
                    format!("channels[{i}].id"),
                    format!("content id `{id}` is listed twice"),
                )),
                Some(_) => {}
            }
        }
        if let Some(u) = &self.channels_url {
            u.report("channels_url", &mut out);
        }
        if self.idle_stop.is_zero() {
            out.push(("idle_stop".into(), "must be more than 0s".into()));
        }
        out
    }
}

/// The engine's answer to `format=json` requests.
#[derive(Deserialize)]
struct EngineAnswer {
    #[serde(default)]
    response: Option<EngineSession>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct EngineSession {
    playback_url: String,
    #[serde(default)]
    command_url: Option<String>,
    #[serde(default)]
    playback_session_id: Option<String>,
}

/// An engine session freesky started and has not stopped yet.
struct Playing {
    /// Where `method=stop` goes; `None` when the engine gave none (nothing to stop).
    command_url: Option<Url>,
    /// The stream's URL, to tell requests for it from others.
    playback_url: Url,
    /// Appears in the engine's segment URLs, which live beside the playback URL.
    session_id: String,
    /// Last request for the stream (or its resolution); the lease runs from here.
    last_used: Instant,
}

impl Playing {
    fn serves(&self, url: &Url) -> bool {
        if url.origin() != self.playback_url.origin() {
            return false;
        }
        let dir = self
            .playback_url
            .path()
            .rsplit_once('/')
            .map_or("/", |(d, _)| d);
        url.path() == self.playback_url.path()
            || (dir.len() > 1 && url.path().starts_with(dir))
            || (self.session_id.len() >= 8 && url.path().contains(&self.session_id))
    }
}

/// What the lease task shares with the service.
struct Shared {
    name: String,
    http: ServiceHttp,
    idle_stop: Duration,
    /// Running engine sessions by channel (content id). Locked briefly, never across `.await`.
    playing: Mutex<HashMap<String, Playing>>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Playing>> {
        self.playing
            .lock()
            .expect("acestream sessions lock is never poisoned")
    }

    /// Marks the channels whose stream `url` belongs to as in use; returns their ids.
    fn touch(&self, url: &Url) -> Vec<String> {
        let now = Instant::now();
        let mut map = self.lock();
        map.iter_mut()
            .filter(|(_, p)| p.serves(url))
            .map(|(id, p)| {
                p.last_used = now;
                id.clone()
            })
            .collect()
    }

    fn touch_ids(&self, ids: &[String]) {
        let now = Instant::now();
        let mut map = self.lock();
        for id in ids {
            if let Some(p) = map.get_mut(id) {
                p.last_used = now;
            }
        }
    }

    /// Tells the engine to stop one session. Failures are logged: the engine ends
    /// abandoned sessions on its own eventually.
    async fn stop(&self, channel_id: &str, playing: Playing) {
        let Some(mut url) = playing.command_url else {
            return;
        };
        url.query_pairs_mut().append_pair("method", "stop");
        match self.http.get_text(&url, &Vec::new()).await {
            Ok(_) => {
                tracing::info!(service = %self.name, channel = %channel_id, "acestream engine session stopped")
            }
            Err(e) => {
                tracing::warn!(service = %self.name, channel = %channel_id, error = %e, "acestream engine did not take the stop command")
            }
        }
    }

    /// Stops the sessions nobody used for `idle_stop`, until the service is dropped.
    async fn lease_task(weak: Weak<Shared>, tick: Duration) {
        loop {
            tokio::time::sleep(tick).await;
            let Some(shared) = weak.upgrade() else {
                return;
            };
            let expired: Vec<(String, Playing)> = {
                let mut map = shared.lock();
                let ids: Vec<String> = map
                    .iter()
                    .filter(|(_, p)| p.last_used.elapsed() >= shared.idle_stop)
                    .map(|(id, _)| id.clone())
                    .collect();
                ids.into_iter()
                    .filter_map(|id| map.remove(&id).map(|p| (id, p)))
                    .collect()
            };
            for (id, p) in expired {
                tracing::debug!(service = %shared.name, channel = %id, "acestream stream unused; stopping it");
                shared.stop(&id, p).await;
            }
        }
    }
}

pub struct AceStream {
    shared: Arc<Shared>,
    engine: Url,
    inline: Vec<AceChannel>,
    channels_url: Option<Location>,
    mode: Mode,
    /// Identifies this freesky to the engine, so that asking twice for one channel joins
    /// the same engine session instead of starting another.
    pid: String,
    resolved_ttl: Duration,
    /// Whether the lease task runs (started by the first resolution, inside the runtime).
    lease_started: std::sync::Once,
}

impl AceStream {
    fn new(
        cfg: &ServiceConfig,
        kind: &AceStreamConfig,
        engine: Url,
        channels_url: Option<Location>,
        ctx: &BuildContext,
    ) -> Self {
        let http = ServiceHttp::new(ctx.http.clone(), cfg, Some(&engine));
        // Random per process: stable while it runs, distinct between instances.
        let mut h = RandomState::new().build_hasher();
        h.write(cfg.name.as_bytes());
        Self {
            shared: Arc::new(Shared {
                name: cfg.name.clone(),
                http,
                idle_stop: kind.idle_stop,
                playing: Mutex::default(),
            }),
            engine,
            inline: kind.channels.clone(),
            channels_url,
            mode: kind.mode,
            pid: format!("freesky-{:016x}", h.finish()),
            resolved_ttl: ctx.resolved_ttl,
            lease_started: std::sync::Once::new(),
        }
    }

    fn channel(
        &self,
        id: String,
        name: String,
        group: String,
        logo: String,
        tvg_id: String,
    ) -> Channel {
        Channel {
            id,
            name,
            logo,
            group,
            tags: Vec::new(),
            tvg_id,
            station_id: String::new(),
            number: None,
            service: self.shared.name.clone(),
            headers: Vec::new(),
            url: None,
            catchup: None,
        }
    }

    /// The channels of `channels_url`.
    async fn listed(&self, source: &Location) -> Result<Vec<Channel>, UpstreamError> {
        let (_, text) = read_location(&self.shared.http, source).await?;
        let playlist = crate::m3u::parse(&text);
        if playlist.entries.is_empty() && !text.trim_start().starts_with("#EXTM3U") {
            return Err(UpstreamError::Invalid(
                "channels_url is not an M3U playlist (no #EXTM3U header, no entries)".into(),
            ));
        }
        for w in &playlist.warnings {
            tracing::warn!(service = %self.shared.name, line = w.line, "in M3U: {}", w.message);
        }
        let mut out = Vec::with_capacity(playlist.entries.len());
        for e in playlist.entries {
            let Some(id) = content_id(&e.url) else {
                tracing::warn!(service = %self.shared.name, line = e.line, "skipped in M3U: `{}` is not an AceStream content id", crate::error::redact_str(&e.url));
                continue;
            };
            let name = if e.name.is_empty() {
                e.attr("tvg-name").unwrap_or_default().to_string()
            } else {
                e.name.clone()
            };
            if name.is_empty() {
                tracing::warn!(service = %self.shared.name, line = e.line, "skipped in M3U: entry has no name");
                continue;
            }
            let attr = |k: &str| e.attr(k).unwrap_or_default().to_string();
            out.push(self.channel(
                id,
                name,
                attr("group-title"),
                attr("tvg-logo"),
                attr("tvg-id"),
            ));
        }
        Ok(out)
    }

    fn start_lease(&self) {
        self.lease_started.call_once(|| {
            let tick = (self.shared.idle_stop / 4)
                .clamp(Duration::from_millis(50), Duration::from_secs(5));
            tokio::spawn(Shared::lease_task(Arc::downgrade(&self.shared), tick));
        });
    }
}

#[async_trait]
impl Service for AceStream {
    async fn channels(&self) -> Result<Vec<Channel>, UpstreamError> {
        let mut out: Vec<Channel> = self
            .inline
            .iter()
            .filter_map(|c| {
                let id = content_id(&c.id)?;
                Some(self.channel(
                    id,
                    c.name.clone(),
                    c.group.clone(),
                    c.logo.clone(),
                    c.tvg_id.clone(),
                ))
            })
            .collect();
        if let Some(source) = &self.channels_url {
            match self.listed(source).await {
                Ok(listed) => out.extend(listed),
                // The inline channels still work without the list.
                Err(e) if !out.is_empty() => {
                    tracing::warn!(service = %self.shared.name, error = %e, "channels_url failed; serving the inline channels only")
                }
                Err(e) => return Err(e),
            }
        }
        // One content id is one channel, whichever list named it first.
        let mut seen = HashSet::new();
        out.retain(|c| seen.insert(c.id.clone()));
        Ok(out)
    }

    async fn resolve(&self, channel: &Channel) -> Result<ResolvedStream, UpstreamError> {
        let id =
            content_id(&channel.id).ok_or_else(|| UpstreamError::NoChannel(channel.id.clone()))?;
        let engine = &self.engine;
        let path = match self.mode {
            Mode::Hls => "ace/manifest.m3u8",
            Mode::Ts => "ace/getstream",
        };
        let mut url = engine
            .join(path)
            .map_err(|e| UpstreamError::Invalid(format!("bad engine_url: {e}")))?;
        url.query_pairs_mut()
            .append_pair("id", &id)
            .append_pair("format", "json")
            .append_pair("pid", &self.pid);
        let (_, body) = self.shared.http.get_text(&url, &Vec::new()).await?;
        let answer: EngineAnswer = serde_json::from_str(&body).map_err(|e| {
            UpstreamError::Invalid(format!(
                "AceStream engine at {} answered no JSON session ({e})",
                redact(engine)
            ))
        })?;
        let error = match &answer.error {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) if s.trim().is_empty() => None,
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(other) => Some(other.to_string()),
        };
        if let Some(e) = error {
            return Err(UpstreamError::Invalid(format!(
                "AceStream engine error for content {id}: {e}"
            )));
        }
        let session = answer.response.ok_or_else(|| {
            UpstreamError::Invalid(format!(
                "AceStream engine answered neither a session nor an error for content {id}"
            ))
        })?;
        let playback_url = engine
            .join(&session.playback_url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| {
                UpstreamError::Invalid(format!(
                    "AceStream engine gave no usable playback_url for content {id}"
                ))
            })?;
        let command_url = session.command_url.and_then(|c| engine.join(&c).ok());
        self.start_lease();
        {
            let mut map = self.shared.lock();
            map.insert(
                id.clone(),
                Playing {
                    command_url,
                    playback_url: playback_url.clone(),
                    session_id: session.playback_session_id.unwrap_or_default(),
                    last_used: Instant::now(),
                },
            );
        }
        // Not longer than the lease: a cached resolution never outlives its session.
        let ttl = self.resolved_ttl.min(self.shared.idle_stop);
        Ok(ResolvedStream::new(playback_url, Vec::new(), ttl))
    }

    fn http(&self) -> &ServiceHttp {
        &self.shared.http
    }

    /// Every request for a stream extends its engine session's lease; a relayed
    /// MPEG-TS body does so with each chunk.
    async fn fetch(
        &self,
        url: &Url,
        headers: &Headers,
        range: Option<&str>,
    ) -> Result<Fetched, UpstreamError> {
        let ids = self.shared.touch(url);
        let mut fetched = self.shared.http.get(url, headers, range).await?;
        if !ids.is_empty() {
            let shared = Arc::downgrade(&self.shared);
            fetched.body = Box::pin(fetched.body.inspect(move |_| {
                if let Some(s) = shared.upgrade() {
                    s.touch_ids(&ids);
                }
            }));
        }
        Ok(fetched)
    }

    async fn release(&self, channel_id: &str) {
        let Some(id) = content_id(channel_id) else {
            return;
        };
        let playing = self.shared.lock().remove(&id);
        if let Some(p) = playing {
            self.shared.stop(&id, p).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn content_ids() {
        assert_eq!(content_id(ID).as_deref(), Some(ID));
        assert_eq!(
            content_id(&format!("acestream://{}", ID.to_uppercase())).as_deref(),
            Some(ID)
        );
        assert_eq!(
            content_id(&format!("http://127.0.0.1:6878/ace/getstream?id={ID}")).as_deref(),
            Some(ID)
        );
        assert_eq!(content_id(&ID[1..]), None);
        assert_eq!(content_id(&format!("{}g", &ID[1..])), None);
        assert_eq!(content_id("acestream://"), None);
        assert_eq!(content_id("ñññññ"), None);
    }
}
