//! `kind = "scrape"`: web pages whose stream URL is found by regex. Channels come from
//! an inline list or from a page plus a regex with named groups; a channel's stream is
//! the first match of `stream.patterns` on its page (the original design's two
//! defaults when none are configured). The page is sent as Referer of the stream's
//! own requests unless `referer` says otherwise.

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use regex::Regex;
use serde::Deserialize;
use url::Url;

use super::{
    base_url, check_http_url, compile_patterns, endpoint, find_stream_url, BuildContext, Service,
};
use crate::config::ServiceConfig;
use crate::error::UpstreamError;
use crate::model::{Channel, Headers, ResolvedStream};
use crate::upstream::ServiceHttp;

/// The original design's patterns: an absolute HLS URL, else an absolute MP4 URL.
pub const DEFAULT_PATTERNS: [&str; 2] = [
    r#"https://[^"']*\.m3u8[^"']*"#,
    r#"https://[^"']*\.mp4[^"']*"#,
];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrapeConfig {
    pub base_url: String,
    pub channels: ChannelSource,
    pub stream: StreamPage,
}

/// Either `path` + `pattern`, or an inline `list`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelSource {
    #[serde(default)]
    pub path: Option<String>,
    /// Regex with named groups `id` and `name` (optional `logo`, `group`).
    #[serde(default)]
    pub pattern: Option<String>,
    #[serde(default)]
    pub list: Option<Vec<InlineChannel>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InlineChannel {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub logo: String,
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub tvg_id: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamPage {
    /// Page path (joined to `base_url`) with `{channel_id}`.
    pub page: String,
    #[serde(default)]
    pub patterns: Vec<String>,
    /// Referer for the stream's requests; default the page URL, `""` for none.
    #[serde(default)]
    pub referer: Option<String>,
    #[serde(default)]
    pub origin: Option<String>,
}

impl ScrapeConfig {
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        check_http_url("base_url", &self.base_url, &mut out);
        let c = &self.channels;
        match (&c.list, &c.path, &c.pattern) {
            (Some(_), None, None) => {}
            (None, Some(_), Some(p)) => match Regex::new(p) {
                Ok(re) => {
                    let names: Vec<_> = re.capture_names().flatten().collect();
                    for g in ["id", "name"] {
                        if !names.contains(&g) {
                            out.push((
                                "channels.pattern".into(),
                                format!("needs a named group `(?P<{g}>...)`"),
                            ));
                        }
                    }
                }
                Err(e) => out.push((
                    "channels.pattern".into(),
                    format!(
                        "bad regex: {}",
                        e.to_string().lines().last().unwrap_or_default().trim()
                    ),
                )),
            },
            _ => out.push((
                "channels".into(),
                "give either `list`, or `path` and `pattern`".into(),
            )),
        }
        if !self.stream.page.contains("{channel_id}") {
            out.push(("stream.page".into(), "must contain `{channel_id}`".into()));
        }
        if let Err((i, e)) = compile_patterns(&self.stream.patterns) {
            out.push((format!("stream.patterns[{i}]"), format!("bad regex: {e}")));
        }
        out
    }
}

pub struct Scrape {
    name: String,
    cfg: ScrapeConfig,
    base: Url,
    list_pattern: Option<Regex>,
    patterns: Vec<Regex>,
    http: ServiceHttp,
    resolved_ttl: Duration,
}

impl Scrape {
    pub fn new(cfg: &ServiceConfig, kind: &ScrapeConfig, ctx: &BuildContext) -> Self {
        let base = base_url(&kind.base_url)
            .unwrap_or_else(|| Url::parse("http://invalid./").expect("static URL"));
        let patterns = if kind.stream.patterns.is_empty() {
            DEFAULT_PATTERNS.iter().map(|p| p.to_string()).collect()
        } else {
            kind.stream.patterns.clone()
        };
        Self {
            name: cfg.name.clone(),
            list_pattern: kind
                .channels
                .pattern
                .as_deref()
                .and_then(|p| Regex::new(p).ok()),
            patterns: compile_patterns(&patterns).unwrap_or_default(),
            http: ServiceHttp::new(ctx.http.clone(), cfg, Some(&base)),
            cfg: kind.clone(),
            base,
            resolved_ttl: ctx.resolved_ttl,
        }
    }

    fn channel(&self, id: String, name: String) -> Channel {
        Channel {
            id,
            name,
            logo: String::new(),
            group: String::new(),
            tags: Vec::new(),
            tvg_id: String::new(),
            service: self.name.clone(),
            headers: Vec::new(),
            url: None,
        }
    }
}

/// The few HTML entities that show up in names scraped from markup.
fn unescape_html(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
        .trim()
        .to_string()
}

#[async_trait]
impl Service for Scrape {
    async fn channels(&self) -> Result<Vec<Channel>, UpstreamError> {
        if let Some(list) = &self.cfg.channels.list {
            return Ok(list
                .iter()
                .map(|c| Channel {
                    logo: c.logo.clone(),
                    group: c.group.clone(),
                    tags: c.tags.clone(),
                    tvg_id: c.tvg_id.clone(),
                    ..self.channel(c.id.clone(), c.name.clone())
                })
                .collect());
        }
        let (Some(path), Some(re)) = (&self.cfg.channels.path, &self.list_pattern) else {
            return Err(UpstreamError::Invalid(
                "channels: neither a list nor path and pattern".into(),
            ));
        };
        let url = endpoint(&self.base, path, None)?;
        let (page_url, body) = self.http.get_text(&url, &Vec::new()).await?;
        let mut ids = HashSet::new();
        let mut out = Vec::new();
        for caps in re.captures_iter(&body) {
            let get = |g: &str| {
                caps.name(g)
                    .map(|m| unescape_html(m.as_str()))
                    .unwrap_or_default()
            };
            let (id, name) = (get("id"), get("name"));
            if id.is_empty() || name.is_empty() || ids.contains(&id) {
                continue;
            }
            ids.insert(id.clone());
            let logo = get("logo");
            let logo = if logo.is_empty() {
                logo
            } else {
                page_url.join(&logo).map(|u| u.to_string()).unwrap_or(logo)
            };
            out.push(Channel {
                logo,
                group: get("group"),
                ..self.channel(id, name)
            });
        }
        if out.is_empty() {
            return Err(UpstreamError::Invalid(
                "channels.pattern matched nothing on the channel page".into(),
            ));
        }
        Ok(out)
    }

    async fn resolve(&self, channel: &Channel) -> Result<ResolvedStream, UpstreamError> {
        let s = &self.cfg.stream;
        let url = endpoint(&self.base, &s.page, Some(&channel.id))?;
        let (page_url, body) = self.http.get_text(&url, &Vec::new()).await?;
        let stream = find_stream_url(&body, &self.patterns, &page_url).ok_or_else(|| {
            UpstreamError::Invalid(format!(
                "no stream pattern matched the page of `{}`",
                channel.id
            ))
        })?;
        let mut headers: Headers = Vec::new();
        let referer = s.referer.clone().unwrap_or_else(|| page_url.to_string());
        if !referer.is_empty() {
            headers.push(("Referer".into(), referer));
        }
        if let Some(o) = s.origin.as_ref().filter(|o| !o.is_empty()) {
            headers.push(("Origin".into(), o.clone()));
        }
        Ok(ResolvedStream::new(stream, headers, self.resolved_ttl))
    }

    fn http(&self) -> &ServiceHttp {
        &self.http
    }
}
