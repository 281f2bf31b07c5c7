//! The built-in offline demo channel: a live HLS stream whose four 2-second MPEG-TS
//! segments are embedded in the binary. The media sequence advances with wall-clock
//! time (one segment every 2 s, a window of three), and the segments loop as one
//! continuous stream (`Loop`: each pass's timestamps and continuity counters go on
//! from the pass before), so players, and a recording, see a real live stream with no
//! network and no discontinuity.
//!
//! The stream lives at `http://demo.freesky.invalid/...`; `fetch` answers those URLs
//! in-process, so the rest of freesky (rewriting, signing, proxying) treats the demo
//! like any other upstream. Its guide is made in-process too (`GuideSource::Inline`).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
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
    let mut out = format!(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{SEGMENT_SECS}\n#EXT-X-MEDIA-SEQUENCE:{first}\n"
    );
    for seq in first..=newest {
        out.push_str(&format!("#EXTINF:{SEGMENT_SECS}.000,\nlive/{seq}.ts\n"));
    }
    out
}

/// How the assets loop as one continuous MPEG-TS: pass `n` adds `n * TICKS` to every
/// timestamp and `n * step` to each PID's continuity counter, so that its first packet
/// goes on from the last one of the pass before. The assets hold exactly one pass of
/// audio and of video (`scripts/make-demo-segments.sh`), so the timestamps go on too.
struct Loop {
    /// Per PID, what one pass adds to its counters.
    step: HashMap<u16, u8>,
}

/// One pass of the assets, in 90 kHz ticks.
const TICKS: u64 = SEGMENTS.len() as u64 * SEGMENT_SECS * 90_000;
/// Timestamps are 33 bits.
const WRAP: u64 = 1 << 33;

impl Loop {
    fn get() -> &'static Loop {
        static LOOP: OnceLock<Loop> = OnceLock::new();
        LOOP.get_or_init(|| Loop::of(&SEGMENTS))
    }

    fn of(assets: &[&[u8]]) -> Loop {
        use crate::ts::{fields, PACKET};
        // Per PID: its counter at the first and the last packet with payload.
        let mut counters: HashMap<u16, (u8, u8)> = HashMap::new();
        for p in assets.iter().flat_map(|a| a.chunks_exact(PACKET)) {
            if let Some(f) = fields(p).filter(|f| f.payload) {
                let cc = p[3] & 0x0F;
                counters.entry(f.pid).or_insert((cc, cc)).1 = cc;
            }
        }
        let step = counters
            .into_iter()
            .map(|(pid, (first, last))| (pid, last.wrapping_add(1).wrapping_sub(first) & 0x0F))
            .collect();
        Loop { step }
    }

    /// Asset `index` of pass `pass`.
    fn segment(&self, index: usize, pass: u64) -> Bytes {
        use crate::ts::{fields, shift_timestamps, PACKET};
        let asset = SEGMENTS[index];
        if pass == 0 {
            return Bytes::from_static(asset);
        }
        let ticks = (pass % WRAP) * TICKS % WRAP;
        let mut out = asset.to_vec();
        for p in out.chunks_exact_mut(PACKET) {
            let Some(f) = fields(p) else { continue };
            let step = self.step.get(&f.pid).copied().unwrap_or(0);
            let add = ((pass % 16) as u8).wrapping_mul(step);
            p[3] = (p[3] & 0xF0) | (p[3].wrapping_add(add) & 0x0F);
            shift_timestamps(p, &f, ticks);
        }
        out.into()
    }
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
                let n = SEGMENTS.len() as u64;
                Ok(Fetched::from_bytes(
                    url.clone(),
                    "video/mp2t",
                    Loop::get().segment((seq % n) as usize, seq / n),
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
        // 500 % 4 == 0: the loop restarts there, as one continuous stream.
        assert!(!p.contains("DISCONTINUITY"), "{p}");
        let later = live_playlist(1_002);
        assert!(later.contains("#EXT-X-MEDIA-SEQUENCE:499\n"));
        let info = crate::hls::media_info(&p, &url("live.m3u8")).unwrap();
        assert_eq!(info.segments.len(), 3);
        assert!(!info.ended);
    }

    /// Three passes of the assets as a player reads them one after the other: every
    /// PID's decode times go strictly up and its counters on by one, and ffmpeg reads
    /// them (remuxing, as a recording does) without a warning.
    #[test]
    fn the_loop_is_one_continuous_stream() {
        use crate::ts::{fields, read_timestamp, PACKET};
        let l = Loop::get();
        // Passes far from the first too (seq ~ 900 million: today's wall clock).
        for first_pass in [0u64, 224_569_489] {
            let mut all = Vec::new();
            for seq in first_pass * 4..(first_pass + 3) * 4 {
                all.extend_from_slice(&l.segment((seq % 4) as usize, seq / 4));
            }
            let mut last_cc: HashMap<u16, u8> = HashMap::new();
            let mut last_time: HashMap<u16, u64> = HashMap::new();
            for (i, p) in all.chunks_exact(PACKET).enumerate() {
                let Some(f) = fields(p).filter(|f| f.payload) else {
                    continue;
                };
                let cc = p[3] & 0x0F;
                if let Some(&before) = last_cc.get(&f.pid) {
                    assert_eq!(cc, (before + 1) & 0x0F, "pid {} packet {i}", f.pid);
                }
                last_cc.insert(f.pid, cc);
                if let Some(at) = f.dts.or(f.pts) {
                    let t = read_timestamp(&p[at..at + 5]);
                    if let Some(&before) = last_time.get(&f.pid) {
                        // A video frame is 3,600 ticks; an audio PES holds several frames.
                        let d = crate::ts::diff(t, before);
                        assert!(d > 0 && d <= 90_000, "pid {} packet {i}: {before} -> {t}", f.pid);
                    }
                    last_time.insert(f.pid, t);
                }
            }
            assert!(last_time.len() >= 2, "audio and video: {last_time:?}");

            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("three-passes.ts");
            std::fs::write(&file, &all).unwrap();
            let out = std::process::Command::new("ffmpeg")
                .args(["-nostdin", "-hide_banner", "-loglevel", "warning", "-i"])
                .arg(&file)
                .args(["-c", "copy", "-f", "mp4"])
                .arg(dir.path().join("out.mp4"))
                .output()
                .expect("ffmpeg is installed (scripts/test.sh installs it)");
            let warnings = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success() && warnings.trim().is_empty(), "{warnings}");
            // Frame by frame (an audio PES holds several): ffprobe's decode times go up.
            let out = std::process::Command::new("ffprobe")
                .args(["-v", "error", "-show_entries", "packet=stream_index,dts"])
                .args(["-of", "csv=p=0"])
                .arg(&file)
                .output()
                .expect("ffprobe is installed (scripts/test.sh installs it)");
            let mut last: HashMap<String, i64> = HashMap::new();
            let mut frames = 0;
            let listed = String::from_utf8_lossy(&out.stdout);
            for line in listed.lines().filter(|l| !l.trim().is_empty()) {
                let (stream, dts) = line.split_once(',').expect("stream,dts");
                let dts: i64 = dts.trim_end_matches(',').parse().expect("a dts");
                if let Some(before) = last.insert(stream.to_string(), dts) {
                    assert!(dts > before, "stream {stream}: {before} -> {dts}");
                }
                frames += 1;
            }
            // 200 video and 375 audio frames a pass.
            assert_eq!(frames, 3 * 575);
        }
    }
}
