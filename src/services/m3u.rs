//! `kind = "m3u"`: a generic M3U / M3U Plus channel list (http(s) URL or local file).
//! Each entry is a channel whose stream URL is in the list itself; per-channel
//! headers (`#EXTVLCOPT`, `#KODIPROP`, Kodi `|Referer=` suffixes) travel with it.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use url::Url;

use super::{
    de_opt_location, read_location, unique_id, BuildContext, BuildError, Checked, GuideSource,
    Kind, Location, Service,
};
use crate::config::ServiceConfig;
use crate::error::UpstreamError;
use crate::lineup::slugify;
use crate::model::{Channel, ResolvedStream};
use crate::upstream::ServiceHttp;

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
            http: ServiceHttp::new(ctx.http.clone(), cfg, kind.auth_origin()),
            resolved_ttl: ctx.resolved_ttl,
        }
    }
}

#[async_trait]
impl Service for M3u {
    async fn channels(&self) -> Result<Vec<Channel>, UpstreamError> {
        let (base, text) = read_location(&self.http, &self.source).await?;
        let playlist = crate::m3u::parse(&text);
        if playlist.entries.is_empty() && !text.trim_start().starts_with("#EXTM3U") {
            return Err(UpstreamError::Invalid(
                "not an M3U playlist (no #EXTM3U header, no entries)".into(),
            ));
        }
        let header_guide = playlist.guide_url().and_then(|g| match &base {
            Some(b) => b.join(g).ok(),
            None => Url::parse(g).ok(),
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
            // Files (movies, episodes) are the service's catalogue (`vod`), not channels.
            if crate::vod::m3u::file_kind(url.as_str(), &name).is_some() {
                continue;
            }
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

    async fn vod(&self) -> Option<crate::vod::VodLists> {
        crate::vod::m3u::lists(&self.http, &self.source, &self.name).await
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
