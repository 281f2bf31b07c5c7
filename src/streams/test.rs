//! The channel test (`POST /api/channels/{id}/test`): one viewer-like open of a
//! channel, its playlist and first segment (or a direct stream's first bytes), timed.

use url::Url;

use super::{Engine, StreamError};
use crate::cache::Document;
use crate::error::UpstreamError;
use crate::hls;
use crate::model::Headers;
use crate::services::registry::RegistryError;
use crate::services::Service;

/// What `POST /api/channels/{id}/test` found: one viewer-like open of the channel,
/// its playlist and first segment (or a direct stream's first bytes), with times.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ChannelTest {
    /// The channel id as asked.
    pub channel: String,
    /// True when a playlist and a first segment (or a direct stream's first bytes) came.
    pub ok: bool,
    /// The service whose source answered; `null` when none did.
    pub service: Option<String>,
    /// `"hls"` (a playlist), `"ts"` (a direct MPEG-TS stream) or `"media"` (another
    /// direct media URL); `null` when nothing answered.
    pub url_kind: Option<String>,
    /// From the start until a source's resolution was in hand (fallback included).
    pub resolve_ms: u64,
    /// Fetching the stream's playlist (and a master's first variant).
    pub playlist_ms: Option<u64>,
    /// Fetching the head and first bytes of the first segment (or direct stream).
    pub segment_ms: Option<u64>,
    /// Bytes read of that segment (at most `TEST_READ_BYTES`).
    pub segment_bytes: Option<u64>,
    pub total_ms: u64,
    /// Why the test failed (no credentials: URLs without queries); `null` when ok.
    pub error: Option<String>,
}

/// How long a channel's test result answers further tests of it: a burst of tests (a
/// script, many clicks, anyone on the LAN) costs the upstream one.
pub const TEST_KEPT: std::time::Duration = std::time::Duration::from_secs(5);

/// The channel tests run lately, by channel as asked: one test of a channel at a
/// time, its result answering every test of it asked meanwhile and for `TEST_KEPT`.
pub struct RecentTests(moka::future::Cache<String, ChannelTest>);

impl Default for RecentTests {
    fn default() -> Self {
        Self(
            moka::future::Cache::builder()
                .max_capacity(1024)
                .time_to_live(TEST_KEPT)
                .build(),
        )
    }
}

impl RecentTests {
    /// The test of `id`: the one running or run within `TEST_KEPT`, else a new one.
    /// An error (an unknown channel: no upstream was asked) is not kept.
    pub async fn of(&self, engine: &Engine, id: &str) -> Result<ChannelTest, StreamError> {
        // One channel however it is asked (its id, its number, `05`, `+5`).
        let key = engine
            .registry
            .last_lineup()
            .and_then(|l| l.get(id).map(|c| c.id.to_string()))
            .unwrap_or_else(|| id.to_string());
        match self.0.try_get_with(key, engine.test_channel(id)).await {
            Ok(mut test) => {
                test.channel = id.to_string();
                Ok(test)
            }
            Err(shared) => Err((*shared).clone()),
        }
    }
}

/// The most a channel test reads of a segment or direct stream.
const TEST_READ_BYTES: usize = 2 << 20;

/// Tests channel `id` as a viewer's `/api/stream/{id}.m3u8` would play it: the
/// registry's fallback picks the source and fetches its playlist (a master's first
/// variant followed), then the first segment is fetched, reading at most
/// `TEST_READ_BYTES` within the service's timeout. Unknown channels are errors (404);
/// an upstream failure is a test result with `ok: false`.
impl Engine {
    pub async fn test_channel(&self, id: &str) -> Result<ChannelTest, StreamError> {
        let started = std::time::Instant::now();
        let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let limit = self.settings.max_body_bytes;
        let media = &self.media;
        let resolved_at = std::sync::Mutex::new(None);
        let opened = self
            .registry
            .open(id, None, |src| {
                let resolved_at = &resolved_at;
                async move {
                    let at = std::time::Instant::now();
                    *resolved_at.lock().expect("never poisoned") = Some(at);
                    let r = &src.resolved;
                    let doc = media
                        .document(&*src.service, &src.service_name, &r.url, &r.headers, limit)
                        .await?;
                    Ok((src, doc, at))
                }
            })
            .await;
        let mut test = ChannelTest {
            channel: id.to_string(),
            ok: false,
            service: None,
            url_kind: None,
            resolve_ms: 0,
            playlist_ms: None,
            segment_ms: None,
            segment_bytes: None,
            total_ms: 0,
            error: None,
        };
        let (src, doc, at) = match opened {
            Ok(v) => v,
            Err(RegistryError::AllSourcesFailed { tried, .. }) => {
                // No resolution in hand: all the time went into trying.
                let at = resolved_at
                    .lock()
                    .expect("never poisoned")
                    .unwrap_or_else(std::time::Instant::now);
                test.resolve_ms = ms(at - started);
                test.total_ms = ms(started.elapsed());
                test.error = Some(if tried.is_empty() {
                    "no source could be tried".to_string()
                } else {
                    tried
                        .iter()
                        .map(|a| format!("{}: {}", a.service, a.error))
                        .collect::<Vec<_>>()
                        .join("; ")
                });
                return Ok(test);
            }
            Err(e) => return Err(e.into()),
        };
        test.resolve_ms = ms(at - started);
        test.service = Some(src.service_name.clone());
        let headers = &src.resolved.headers;
        let timeout = src.service.http().timeout;
        let first = match &*doc {
            Document::Media { url, .. } => {
                let ts = url.path().ends_with(".ts") || url.path().ends_with(".mpegts");
                test.url_kind = Some(if ts { "ts" } else { "media" }.to_string());
                Ok(url.clone())
            }
            Document::Playlist { url, body } => {
                test.url_kind = Some("hls".to_string());
                let media_playlist = if hls::is_master(body) {
                    match first_uri(body, url) {
                        Some(variant) => media
                            .document(&*src.service, &src.service_name, &variant, headers, limit)
                            .await
                            .map_err(|e| e.to_string())
                            .and_then(|d| match &*d {
                                Document::Playlist { url, body } => Ok((url.clone(), body.clone())),
                                Document::Media { .. } => Err(format!(
                                    "variant {} is media, not a playlist",
                                    src.service.shown_url(&variant)
                                )),
                            }),
                        None => Err("master playlist lists no variant".to_string()),
                    }
                } else {
                    Ok((url.clone(), body.clone()))
                };
                test.playlist_ms = Some(ms(at.elapsed()));
                media_playlist.and_then(|(url, body)| {
                    hls::media_info(&body, &url)
                        .map_err(|e| format!("{}: {e}", src.service.shown_url(&url)))?
                        .segments
                        .into_iter()
                        .next()
                        .map(|s| s.url)
                        .ok_or_else(|| "the media playlist lists no segment".to_string())
                })
            }
        };
        let direct = !matches!(&*doc, Document::Playlist { .. });
        let what = if direct {
            "the stream"
        } else {
            "the first segment"
        };
        let outcome = match first {
            Ok(url) => {
                let fetch_started = std::time::Instant::now();
                let read = read_some(&*src.service, &url, headers, timeout, direct).await;
                test.segment_ms = Some(ms(fetch_started.elapsed()));
                match read {
                    Ok(0) => Err(format!("{what} is empty")),
                    Ok(n) => {
                        test.segment_bytes = Some(n as u64);
                        Ok(())
                    }
                    Err(e) => Err(format!("{what}: {e}")),
                }
            }
            Err(e) => Err(e),
        };
        test.ok = outcome.is_ok();
        test.error = outcome.err();
        test.total_ms = ms(started.elapsed());
        Ok(test)
    }
}

/// Fetches `url` and counts its bytes: up to `TEST_READ_BYTES`, only the first chunk of
/// a `direct` stream (it never ends). A segment neither whole nor `TEST_READ_BYTES`
/// long when `timeout` (the service's) runs out is a failure: a source that trickles
/// cannot be played live.
async fn read_some(
    service: &dyn Service,
    url: &Url,
    headers: &Headers,
    timeout: std::time::Duration,
    direct: bool,
) -> Result<usize, UpstreamError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let fetched = tokio::time::timeout_at(deadline, service.fetch(url, headers, None))
        .await
        .map_err(|_| UpstreamError::Timeout(timeout))??;
    let mut body = fetched.body;
    let mut n = 0usize;
    loop {
        match tokio::time::timeout_at(deadline, futures::StreamExt::next(&mut body)).await {
            Ok(Some(chunk)) => n += chunk?.len(),
            Ok(None) => return Ok(n),
            Err(_) if n > 0 => {
                return Err(UpstreamError::Invalid(format!(
                    "only {n} bytes came in {}: too slow to play",
                    humantime::format_duration(timeout)
                )))
            }
            Err(_) => return Err(UpstreamError::Timeout(timeout)),
        }
        if n >= TEST_READ_BYTES || (direct && n > 0) {
            return Ok(n);
        }
    }
}

/// The first URI line of a playlist (a master's first variant), resolved against `base`.
fn first_uri(body: &str, base: &Url) -> Option<Url> {
    body.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .and_then(|l| base.join(l).ok())
}
