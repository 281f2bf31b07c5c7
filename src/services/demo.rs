//! The built-in offline demo channel: a live HLS stream whose four 2-second MPEG-TS
//! segments are embedded in the binary. The media sequence advances with wall-clock
//! time (one segment every 2 s, a window of three), and the segments loop with a
//! discontinuity at each wrap, so players see a real live stream with no network.
//!
//! The stream lives at `http://demo.freesky.invalid/...`; `fetch` answers those URLs
//! in-process, so the rest of freesky (rewriting, signing, proxying) treats the demo
//! like any other upstream. Its guide is made in-process too (`GuideSource::Inline`).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use serde::Deserialize;
use url::Url;

use super::{BuildContext, BuildError, GuideSource, Kind, Service};
use crate::config::ServiceConfig;
use crate::error::UpstreamError;
use crate::model::{Channel, Headers, ResolvedStream};
use crate::upstream::{Fetched, ServiceHttp};

/// The demo takes no keys of its own.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoConfig {}

impl Kind for DemoConfig {
    fn build(
        &self,
        service: &ServiceConfig,
        ctx: &BuildContext,
    ) -> Result<Arc<dyn Service>, BuildError> {
        Ok(Arc::new(Demo::new(service, ctx)))
    }
}

const HOST: &str = "demo.freesky.invalid";
const SEGMENT_SECS: u64 = 2;
const WINDOW: u64 = 3;
const SEGMENTS: [&[u8]; 4] = [
    include_bytes!("../../assets/demo/seg0.ts"),
    include_bytes!("../../assets/demo/seg1.ts"),
    include_bytes!("../../assets/demo/seg2.ts"),
    include_bytes!("../../assets/demo/seg3.ts"),
];

pub struct Demo {
    name: String,
    http: ServiceHttp,
}

impl Demo {
    pub fn new(cfg: &ServiceConfig, ctx: &BuildContext) -> Self {
        Self {
            name: cfg.name.clone(),
            http: ServiceHttp::new(ctx.http.clone(), cfg, None),
        }
    }
}

fn url(path: &str) -> Url {
    Url::parse(&format!("http://{HOST}/{path}")).expect("demo URLs are well-formed")
}

/// The master playlist: one variant, so players exercise the nested-playlist path.
fn master() -> String {
    "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-STREAM-INF:BANDWIDTH=200000,RESOLUTION=320x180\nlive.m3u8\n"
        .to_string()
}

/// The live media playlist at `now` (unix seconds).
pub fn live_playlist(now: u64) -> String {
    let newest = now / SEGMENT_SECS;
    let first = newest.saturating_sub(WINDOW - 1);
    let loop_len = SEGMENTS.len() as u64;
    let mut out = format!(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{SEGMENT_SECS}\n#EXT-X-MEDIA-SEQUENCE:{first}\n#EXT-X-DISCONTINUITY-SEQUENCE:{}\n",
        first / loop_len
    );
    for seq in first..=newest {
        // Timestamps restart with each loop of the assets.
        if seq != first && seq % loop_len == 0 {
            out.push_str("#EXT-X-DISCONTINUITY\n");
        }
        out.push_str(&format!("#EXTINF:{SEGMENT_SECS}.000,\nlive/{seq}.ts\n"));
    }
    out
}

/// A day of half-hour "Demo loop" programmes around `now`, as XMLTV.
fn guide(now: u64) -> String {
    const BLOCK: u64 = 1800;
    let first = now - now % BLOCK - 2 * BLOCK;
    let mut out = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<tv>\n  <channel id=\"demo.freesky\"><display-name>Demo</display-name></channel>\n",
    );
    for i in 0..50 {
        let start = first + i * BLOCK;
        out.push_str(&format!(
            "  <programme start=\"{}\" stop=\"{}\" channel=\"demo.freesky\"><title>Demo loop</title><desc>freesky's built-in test channel: four segments, looping.</desc><category>Test</category></programme>\n",
            crate::xmltv::format_time(start as i64),
            crate::xmltv::format_time((start + BLOCK) as i64),
        ));
    }
    out.push_str("</tv>\n");
    out
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[async_trait]
impl Service for Demo {
    async fn channels(&self) -> Result<Vec<Channel>, UpstreamError> {
        Ok(vec![Channel {
            id: "demo".into(),
            name: "Demo".into(),
            logo: String::new(),
            group: "Demo".into(),
            tags: vec!["test".into()],
            tvg_id: String::new(),
            station_id: String::new(),
            number: None,
            service: self.name.clone(),
            headers: Vec::new(),
            url: None,
            catchup: None,
        }])
    }

    fn guide_source(&self) -> Option<GuideSource> {
        Some(GuideSource::Inline {
            // What the guide status has always shown for the demo's guide.
            shown: format!("http://{HOST}/guide.xml"),
            xml: guide(unix_now()).into(),
        })
    }

    async fn resolve(&self, channel: &Channel) -> Result<ResolvedStream, UpstreamError> {
        if channel.id != "demo" {
            return Err(UpstreamError::NoChannel(channel.id.clone()));
        }
        Ok(ResolvedStream::new(
            url("master.m3u8"),
            Vec::new(),
            Duration::from_secs(24 * 3600),
        ))
    }

    fn http(&self) -> &ServiceHttp {
        &self.http
    }

    async fn fetch(
        &self,
        url: &Url,
        _headers: &Headers,
        _range: Option<&str>,
    ) -> Result<Fetched, UpstreamError> {
        let not_found = || UpstreamError::Status {
            status: 404,
            url: url.to_string(),
        };
        if url.host_str() != Some(HOST) {
            return Err(not_found());
        }
        let path = url.path().trim_start_matches('/');
        const M3U8: &str = "application/vnd.apple.mpegurl";
        match path {
            "master.m3u8" => Ok(Fetched::from_bytes(url.clone(), M3U8, master().into())),
            "live.m3u8" => Ok(Fetched::from_bytes(
                url.clone(),
                M3U8,
                live_playlist(unix_now()).into(),
            )),
            _ => {
                let seq: u64 = path
                    .strip_prefix("live/")
                    .and_then(|s| s.strip_suffix(".ts"))
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(not_found)?;
                let asset = SEGMENTS[(seq % SEGMENTS.len() as u64) as usize];
                Ok(Fetched::from_bytes(
                    url.clone(),
                    "video/mp2t",
                    Bytes::from_static(asset),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_window_slides_with_time() {
        let p = live_playlist(1_000);
        assert!(p.contains("#EXT-X-MEDIA-SEQUENCE:498\n"), "{p}");
        assert!(
            p.contains("live/498.ts\n")
                && p.contains("live/500.ts\n")
                && !p.contains("live/501.ts")
        );
        // 500 % 4 == 0: the loop restarts there.
        assert!(
            p.contains("#EXT-X-DISCONTINUITY\n#EXTINF:2.000,\nlive/500.ts"),
            "{p}"
        );
        assert!(p.contains("#EXT-X-DISCONTINUITY-SEQUENCE:124\n"));
        let later = live_playlist(1_002);
        assert!(later.contains("#EXT-X-MEDIA-SEQUENCE:499\n"));
        let info = crate::hls::media_info(&p, &url("live.m3u8")).unwrap();
        assert_eq!(info.segments.len(), 3);
        assert!(!info.ended);
    }
}
