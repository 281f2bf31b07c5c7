//! Upstream services: the `Service` trait, the per-kind configuration enum and
//! `build()`, which turns a `[[services]]` entry into a running service.
//!
//! This module and its kind files are the only code that knows which kinds exist.
//! Adding a kind means: one file here, one `KindConfig` variant, one arm in each of
//! the `match`es below, the example config and its tests.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use regex::Regex;
use serde::Deserialize;
use toml::de::ValueDeserializer;
use url::Url;

use crate::config::{KindError, ServiceConfig};
use crate::error::UpstreamError;
use crate::model::{Channel, Headers, ResolvedStream};
use crate::upstream::{Fetched, Http, ServiceHttp};

pub mod acestream;
pub mod demo;
pub mod json_api;
pub mod m3u;
pub mod registry;
pub mod scrape;
pub mod xtream;

/// One upstream streaming service (the original design's `BaseStreamer`).
#[async_trait]
pub trait Service: Send + Sync {
    /// Every channel the service offers now. Bad entries are skipped (and logged);
    /// an error means the listing as a whole could not be had.
    async fn channels(&self) -> Result<Vec<Channel>, UpstreamError>;

    /// Where `channel` (as listed by `channels`) plays now, with the headers every
    /// request for it must carry and how long the answer stays good.
    async fn resolve(&self, channel: &Channel) -> Result<ResolvedStream, UpstreamError>;

    /// The service's HTTP identity (headers, credentials, timeout).
    fn http(&self) -> &ServiceHttp;

    /// Where the service's XMLTV guide is (an http(s) URL, fetched with `fetch`, or
    /// a file path), once known; `None` when it has none. Asked after `channels`,
    /// since an M3U list names its guide in its header.
    fn guide_source(&self) -> Option<String> {
        None
    }

    /// What the upstream says about the account (expiry, connection limit), for
    /// `/api/services/status`; `None` for kinds without accounts.
    fn account(&self) -> Option<serde_json::Value> {
        None
    }

    /// `url` as error messages may show it: without credentials, including those a
    /// kind carries in the path (Xtream's `/live/{user}/{password}/...`).
    fn shown_url(&self, url: &Url) -> String {
        crate::error::redact(url)
    }

    /// Freesky stopped using `channel_id`'s stream: the last viewer of its shared
    /// `.ts` session left (after `streams.idle_stop`), or the session moved to another
    /// source. Kinds holding an upstream session per stream (acestream) end it here.
    async fn release(&self, _channel_id: &str) {}

    /// Fetches one URL of a resolved stream (playlist, segment, key). Services that
    /// serve streams themselves (demo) override this; everyone else goes over HTTP.
    async fn fetch(
        &self,
        url: &Url,
        headers: &Headers,
        range: Option<&str>,
    ) -> Result<Fetched, UpstreamError> {
        self.http().get(url, headers, range).await
    }
}

/// What `build` needs besides the service's own config.
pub struct BuildContext {
    pub http: Http,
    /// Default lifetime of a resolution (`cache.resolved_ttl`).
    pub resolved_ttl: Duration,
}

/// The kind-specific part of a `[[services]]` entry.
#[derive(Debug, Clone)]
pub enum KindConfig {
    Demo(demo::DemoConfig),
    M3u(m3u::M3uConfig),
    JsonApi(json_api::JsonApiConfig),
    Scrape(scrape::ScrapeConfig),
    Xtream(xtream::XtreamConfig),
    AceStream(acestream::AceStreamConfig),
}

impl KindConfig {
    /// The kinds this build knows, as written in `kind = "..."`.
    pub const KINDS: &'static [&'static str] =
        &["demo", "m3u", "json_api", "scrape", "xtream", "acestream"];

    /// Deserializes the kind's own keys (everything but the shared ones).
    pub fn parse(kind: &str, keys: ValueDeserializer<'_>) -> Result<Self, KindError> {
        fn de<'a, T: Deserialize<'a>>(keys: ValueDeserializer<'a>) -> Result<T, KindError> {
            T::deserialize(keys).map_err(KindError::Toml)
        }
        Ok(match kind {
            "demo" => Self::Demo(de(keys)?),
            "m3u" => Self::M3u(de(keys)?),
            "json_api" => Self::JsonApi(de(keys)?),
            "scrape" => Self::Scrape(de(keys)?),
            "xtream" => Self::Xtream(de(keys)?),
            "acestream" => Self::AceStream(de(keys)?),
            _ => return Err(KindError::Unknown),
        })
    }

    pub fn kind_name(&self) -> &'static str {
        match self {
            Self::Demo(_) => "demo",
            Self::M3u(_) => "m3u",
            Self::JsonApi(_) => "json_api",
            Self::Scrape(_) => "scrape",
            Self::Xtream(_) => "xtream",
            Self::AceStream(_) => "acestream",
        }
    }

    /// The absolute URLs the service's config names (its origin, engine, guide...).
    /// Their hosts are trusted: URLs that upstream data supplies may reach a private
    /// address on them (and on no other host, unless `allow_private`).
    pub fn configured_urls(&self) -> Vec<Url> {
        let urls = match self {
            Self::Demo(_) => Vec::new(),
            Self::M3u(c) => c.configured_urls(),
            Self::JsonApi(c) => vec![c.base_url.as_str()],
            Self::Scrape(c) => c.configured_urls(),
            Self::Xtream(c) => vec![c.base_url.as_str()],
            Self::AceStream(c) => c.configured_urls(),
        };
        urls.into_iter()
            .filter_map(|u| Url::parse(u.trim()).ok())
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .collect()
    }

    /// Why `[services.auth]` cannot be used with this config (it names no origin the
    /// credentials could be kept to), or `None` when it can.
    pub fn auth_without_origin(&self) -> Option<String> {
        match self {
            Self::M3u(c) => c.auth_without_origin(),
            _ => None,
        }
    }

    /// Checks serde cannot express: `(field, message)` pairs, field relative to the service.
    pub fn validate(&self) -> Vec<(String, String)> {
        match self {
            Self::Demo(_) => Vec::new(),
            Self::M3u(c) => c.validate(),
            Self::JsonApi(c) => c.validate(),
            Self::Scrape(c) => c.validate(),
            Self::Xtream(c) => c.validate(),
            Self::AceStream(c) => c.validate(),
        }
    }
}

/// Builds the running service of one config entry.
pub fn build(cfg: &ServiceConfig, ctx: &BuildContext) -> Arc<dyn Service> {
    match &cfg.kind {
        KindConfig::Demo(_) => Arc::new(demo::Demo::new(cfg, ctx)),
        KindConfig::M3u(k) => Arc::new(m3u::M3u::new(cfg, k, ctx)),
        KindConfig::JsonApi(k) => Arc::new(json_api::JsonApi::new(cfg, k, ctx)),
        KindConfig::Scrape(k) => Arc::new(scrape::Scrape::new(cfg, k, ctx)),
        KindConfig::Xtream(k) => Arc::new(xtream::Xtream::new(cfg, k, ctx)),
        KindConfig::AceStream(k) => Arc::new(acestream::AceStream::new(cfg, k, ctx)),
    }
}

// ---- helpers shared by kinds ----

/// Compiles configured regexes, for `validate` and for use.
pub(crate) fn compile_patterns(patterns: &[String]) -> Result<Vec<Regex>, (usize, String)> {
    patterns
        .iter()
        .enumerate()
        .map(|(i, p)| Regex::new(p).map_err(|e| (i, first_line(&e.to_string()))))
        .collect()
}

fn first_line(s: &str) -> String {
    s.lines().last().unwrap_or(s).trim().to_string()
}

/// Checks that a config value is an absolute http(s) URL.
pub(crate) fn check_http_url(field: &str, value: &str, out: &mut Vec<(String, String)>) {
    match Url::parse(value) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => {}
        Ok(_) => out.push((field.into(), format!("`{value}` must be an http(s) URL"))),
        Err(e) => out.push((field.into(), format!("`{value}` is not a URL ({e})"))),
    }
}

/// The first stream URL found in `body` by the first pattern that matches: capture
/// group 1 when the pattern has one, else the whole match. JSON and HTML escapes
/// (`\/`, `&amp;`) are undone and relative URLs resolve against `base`.
pub fn find_stream_url(body: &str, patterns: &[Regex], base: &Url) -> Option<Url> {
    // JSON may escape slashes (`https:\/\/cdn...`); patterns are written for plain URLs.
    let body: std::borrow::Cow<'_, str> = if body.contains("\\/") {
        body.replace("\\/", "/").into()
    } else {
        body.into()
    };
    patterns.iter().find_map(|re| {
        let caps = re.captures(&body)?;
        let m = caps.get(1).or_else(|| caps.get(0))?;
        let raw = m.as_str().replace("&amp;", "&");
        let url = base.join(raw.trim()).ok()?;
        matches!(url.scheme(), "http" | "https").then_some(url)
    })
}

/// `path` (possibly with `{channel_id}`) joined to `base`. The id is percent-encoded
/// so an upstream id cannot change the path's shape.
pub fn endpoint(base: &Url, path: &str, channel_id: Option<&str>) -> Result<Url, UpstreamError> {
    let path = match channel_id {
        // A whole segment of `.` or `..` would walk the path, encoded or not (URL
        // parsers read `%2e` as a dot): such an id names no channel.
        Some(id @ ("." | "..")) => {
            return Err(UpstreamError::Invalid(format!(
                "channel id `{id}` cannot be put in a path"
            )))
        }
        Some(id) => {
            // form encoding writes a space as `+` and a real `+` as `%2B`; paths want `%20`.
            let encoded: String = url::form_urlencoded::byte_serialize(id.as_bytes()).collect();
            path.replace("{channel_id}", &encoded.replace('+', "%20"))
        }
        None => path.to_string(),
    };
    base.join(&path)
        .map_err(|e| UpstreamError::Invalid(format!("cannot join `{path}` to the base URL: {e}")))
}

/// A base URL with a trailing slash, so `join("api/x")` appends instead of replacing
/// the last segment.
pub fn base_url(s: &str) -> Option<Url> {
    let mut u = Url::parse(s).ok()?;
    if !u.path().ends_with('/') {
        let p = format!("{}/", u.path());
        u.set_path(&p);
    }
    Some(u)
}

/// Makes unique ids for entries that have none of their own: `slug`, `slug-2`, ...
pub(crate) fn unique_id(seen: &mut std::collections::HashSet<String>, wanted: &str) -> String {
    let base = if wanted.is_empty() {
        "channel".to_string()
    } else {
        wanted.to_string()
    };
    let mut id = base.clone();
    let mut n = 2;
    while !seen.insert(id.clone()) {
        id = format!("{base}-{n}");
        n += 1;
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(body: &str, patterns: &[&str], expected: Option<&str>) {
        let pats: Vec<String> = patterns.iter().map(|s| s.to_string()).collect();
        let res = compile_patterns(&pats).unwrap();
        let base = Url::parse("https://site.example/watch/1").unwrap();
        let got = find_stream_url(body, &res, &base).map(|u| u.to_string());
        assert_eq!(got.as_deref(), expected, "body: {body}");
    }

    #[test]
    fn patterns_in_order_group_or_whole_match() {
        let defaults = [
            r#"https://[^"']*\.m3u8[^"']*"#,
            r#"https://[^"']*\.mp4[^"']*"#,
        ];
        check(
            r#"<source src="https://cdn.example/a.mp4"> "https://cdn.example/live.m3u8?t=1&amp;x=2""#,
            &defaults,
            Some("https://cdn.example/live.m3u8?t=1&x=2"),
        );
        check(
            r#"{"file":"https:\/\/cdn.example\/x\/index.m3u8"}"#,
            &defaults,
            Some("https://cdn.example/x/index.m3u8"),
        );
        check("nothing here", &defaults, None);
        check(
            r#"var src = '/hls/ch1.m3u8';"#,
            &[r#"src = '([^']+)'"#],
            Some("https://site.example/hls/ch1.m3u8"),
        );
        check(r#"src='javascript:alert(1)'"#, &[r#"src='([^']+)'"#], None);
    }

    #[test]
    fn endpoint_encodes_ids() {
        let base = base_url("http://api.example/v1").unwrap();
        assert_eq!(
            endpoint(&base, "stream/{channel_id}", Some("a/b c"))
                .unwrap()
                .as_str(),
            "http://api.example/v1/stream/a%2Fb%20c"
        );
        // Dots are a path walk, not an id (a fuzzed channel list found `..`).
        for id in [".", ".."] {
            assert!(endpoint(&base, "stream/{channel_id}/play", Some(id)).is_err());
        }
        assert_eq!(
            endpoint(&base, "stream/{channel_id}/play", Some("..."))
                .unwrap()
                .as_str(),
            "http://api.example/v1/stream/.../play"
        );
        assert_eq!(
            endpoint(&base, "channels", None).unwrap().as_str(),
            "http://api.example/v1/channels"
        );
    }
}
