//! `kind = "m3u"`: a generic M3U / M3U Plus channel list (http(s) URL or local file).
//! Each entry is a channel whose stream URL is in the list itself; per-channel
//! headers (`#EXTVLCOPT`, `#KODIPROP`, Kodi `|Referer=` suffixes) travel with it.

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use url::Url;

use super::{check_http_url, unique_id, BuildContext, Service};
use crate::config::ServiceConfig;
use crate::error::UpstreamError;
use crate::lineup::slugify;
use crate::model::{Channel, ResolvedStream};
use crate::upstream::ServiceHttp;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct M3uConfig {
    /// The playlist: `http(s)://...` or a file path.
    pub url: String,
    /// XMLTV guide for these channels (URL or file, plain or gzipped); default: the
    /// list header's `url-tvg` / `x-tvg-url`.
    #[serde(default)]
    pub epg_url: Option<String>,
    /// The origin `[services.auth]` credentials go to (`https://panel.example`).
    /// Default: `url`'s origin; required with credentials when `url` is a file, since
    /// they would otherwise go to whatever hosts the file names.
    #[serde(default)]
    pub origin: Option<String>,
}

impl M3uConfig {
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.url.trim().is_empty() {
            out.push(("url".into(), "must not be empty".into()));
        } else if self.url.contains("://") {
            check_http_url("url", &self.url, &mut out);
        }
        if let Some(e) = &self.epg_url {
            if e.contains("://") {
                check_http_url("epg_url", e, &mut out);
            }
        }
        if let Some(o) = &self.origin {
            check_http_url("origin", o, &mut out);
        }
        out
    }

    /// `url` (when not a file), `origin` and `epg_url` (when not a file).
    pub fn configured_urls(&self) -> Vec<&str> {
        [Some(&self.url), self.origin.as_ref(), self.epg_url.as_ref()]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .filter(|u| u.contains("://"))
            .collect()
    }

    /// Where credentials go: `origin`, else `url` when it is an http(s) URL.
    fn auth_origin(&self) -> Option<Url> {
        self.origin
            .as_deref()
            .or_else(|| self.url.contains("://").then_some(self.url.as_str()))
            .and_then(|u| Url::parse(u).ok())
    }

    pub fn auth_without_origin(&self) -> Option<String> {
        self.auth_origin().is_none().then(|| {
            format!(
                "`url` is a file ({}), so set `origin = \"https://...\"` on the service: \
                 credentials go only to that origin, never to the hosts the file lists",
                self.url
            )
        })
    }
}

pub struct M3u {
    name: String,
    source: String,
    epg_url: Option<String>,
    /// The guide the list's header names (`url-tvg`), from the last load.
    header_guide: std::sync::Mutex<Option<String>>,
    http: ServiceHttp,
    resolved_ttl: Duration,
}

impl M3u {
    pub fn new(cfg: &ServiceConfig, kind: &M3uConfig, ctx: &BuildContext) -> Self {
        let origin = kind.auth_origin();
        Self {
            name: cfg.name.clone(),
            source: kind.url.clone(),
            epg_url: kind.epg_url.clone().filter(|u| !u.trim().is_empty()),
            header_guide: std::sync::Mutex::default(),
            http: ServiceHttp::new(ctx.http.clone(), cfg, origin.as_ref()),
            resolved_ttl: ctx.resolved_ttl,
        }
    }

    async fn load(&self) -> Result<(Option<Url>, String), UpstreamError> {
        if self.source.contains("://") {
            let url = Url::parse(&self.source)
                .map_err(|e| UpstreamError::Invalid(format!("bad url: {e}")))?;
            let (final_url, text) = self.http.get_text(&url, &Vec::new()).await?;
            return Ok((Some(final_url), text));
        }
        let limit = self.http.http.max_body;
        let bytes = tokio::fs::read(&self.source)
            .await
            .map_err(|e| UpstreamError::Invalid(format!("cannot read {}: {e}", self.source)))?;
        if bytes.len() > limit {
            return Err(UpstreamError::TooLarge {
                url: self.source.clone(),
                limit,
            });
        }
        Ok((None, String::from_utf8_lossy(&bytes).into_owned()))
    }
}

#[async_trait]
impl Service for M3u {
    async fn channels(&self) -> Result<Vec<Channel>, UpstreamError> {
        let (base, text) = self.load().await?;
        let playlist = crate::m3u::parse(&text);
        if playlist.entries.is_empty() && !text.trim_start().starts_with("#EXTM3U") {
            return Err(UpstreamError::Invalid(
                "not an M3U playlist (no #EXTM3U header, no entries)".into(),
            ));
        }
        let header_guide = playlist.guide_url().and_then(|g| match &base {
            Some(b) => b.join(g).ok().map(|u| u.to_string()),
            None => Url::parse(g).ok().map(|u| u.to_string()),
        });
        *self
            .header_guide
            .lock()
            .expect("guide lock is never poisoned") = header_guide;
        for w in &playlist.warnings {
            tracing::warn!(service = %self.name, line = w.line, "skipped in M3U: {}", w.message);
        }
        let mut ids = HashSet::new();
        let mut seen = HashSet::new();
        let mut out = Vec::with_capacity(playlist.entries.len());
        for e in playlist.entries {
            let url = match base
                .as_ref()
                .map_or_else(|| Url::parse(&e.url), |b| b.join(&e.url))
            {
                Ok(u) if matches!(u.scheme(), "http" | "https") => u,
                _ => {
                    tracing::warn!(service = %self.name, line = e.line, "skipped in M3U: `{}` is not an http(s) stream URL", crate::error::redact_str(&e.url));
                    continue;
                }
            };
            let name = if e.name.is_empty() {
                e.attr("tvg-name").unwrap_or_default().to_string()
            } else {
                e.name.clone()
            };
            if name.is_empty() {
                tracing::warn!(service = %self.name, line = e.line, "skipped in M3U: entry has no name");
                continue;
            }
            // The same name and URL twice is one channel listed twice.
            if !seen.insert((name.clone(), url.to_string())) {
                continue;
            }
            let group = e.attr("group-title").unwrap_or_default().to_string();
            out.push(Channel {
                id: unique_id(&mut ids, &slugify(&name)),
                logo: e.attr("tvg-logo").unwrap_or_default().to_string(),
                tags: Vec::new(),
                tvg_id: e.attr("tvg-id").unwrap_or_default().to_string(),
                service: self.name.clone(),
                headers: e.headers.clone(),
                url: Some(url.to_string()),
                catchup: e.catchup.clone(),
                name,
                group,
            });
        }
        Ok(out)
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

    fn guide_source(&self) -> Option<String> {
        self.epg_url.clone().or_else(|| {
            self.header_guide
                .lock()
                .expect("guide lock is never poisoned")
                .clone()
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
