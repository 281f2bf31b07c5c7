//! Failover during HLS playback.
//!
//! A player keeps reloading the media playlist link it was given. Each source of a
//! channel collects *strikes*: a reload that fails (error, timeout, HTML instead of
//! HLS) or a segment that fails adds one, a segment that arrives clears them. At
//! `streams.failover_after` strikes, that playlist link is *switched*: freesky opens
//! the channel's next source (priority order, skipping the ones that failed), and
//! from then on answers the old link with the new source's media playlist, its
//! sequence numbers shifted to continue where the old one stopped and an
//! `#EXT-X-DISCONTINUITY` before the first new segment. The player never learns a
//! new URL; it sees a discontinuity and keeps playing.
//!
//! This is in-memory state (a cache, not a security table): links stay verifiable
//! by the signature alone, and after a restart a switched link simply starts over.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use moka::sync::Cache;
use url::Url;

use crate::cache::{Document, MediaCache};
use crate::error::{AppError, UpstreamError};
use crate::hls;
use crate::model::Headers;
use crate::services::registry::Registry;
use crate::services::Service;

/// A playlist link now served from another source.
pub struct Switch {
    pub service_name: String,
    pub service: Arc<dyn Service>,
    pub url: Url,
    pub headers: Headers,
    /// Services already given up on for this link (the original first).
    pub tried: Vec<String>,
    pub numbers: Renumber,
}

/// Renumbers the new source's media playlists for a player of the old one.
pub struct Renumber {
    /// The sequence number the player expects next, where the new source starts.
    start_seq: Option<u64>,
    map: Mutex<Option<SeqMap>>,
}

/// How the new source's sequence numbers become the player's.
#[derive(Clone, Copy)]
struct SeqMap {
    /// Added to the new source's sequence numbers.
    offset: i128,
    /// The player's sequence number of the first segment from the new source.
    first: u64,
}

pub struct Failovers {
    strikes: Cache<String, Arc<AtomicU32>>,
    next_seq: Cache<String, u64>,
    switched: Cache<String, Arc<Switch>>,
}

impl Default for Failovers {
    fn default() -> Self {
        Self {
            strikes: idle_cache(60),
            next_seq: idle_cache(600),
            switched: idle_cache(600),
        }
    }
}

impl Failovers {
    fn strikes(&self) -> &Cache<String, Arc<AtomicU32>> {
        &self.strikes
    }

    /// Strikes of `service` as a source of `channel`.
    pub fn strikes_of(&self, service: &str, channel: &str) -> u32 {
        self.strikes()
            .get(&source_key(service, channel))
            .map_or(0, |n| n.load(Ordering::Relaxed))
    }

    /// Adds a strike; returns the count.
    pub fn strike(&self, service: &str, channel: &str) -> u32 {
        let n = self
            .strikes()
            .get_with(source_key(service, channel), Arc::default);
        n.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn clear(&self, service: &str, channel: &str) {
        if let Some(n) = self.strikes().get(&source_key(service, channel)) {
            n.store(0, Ordering::Relaxed);
        }
    }

    /// Remembers which sequence number comes after a media playlist served for `link`.
    pub fn note_next_seq(&self, link: &str, body: &str, url: &Url) {
        if let Ok(info) = hls::media_info(body, url) {
            self.next_seq.insert(
                link.to_string(),
                info.media_sequence + info.segments.len() as u64,
            );
        }
    }

    pub fn switched(&self, link: &str) -> Option<Arc<Switch>> {
        self.switched.get(link)
    }

    /// Switches playlist link `link` of channel `channel` to its next source, skipping
    /// the services in `tried`.
    pub async fn switch(
        &self,
        registry: &Registry,
        media: &MediaCache,
        limit: usize,
        link: &str,
        channel: &str,
        tried: Vec<String>,
    ) -> Result<Arc<Switch>, AppError> {
        let skip = tried.clone();
        let (service_name, service, url, headers) = registry
            .open_except(channel, None, &skip, |src| {
                let skip = &skip;
                async move {
                    if skip.contains(&src.service_name) {
                        return Err(UpstreamError::Invalid(
                            "no other source left to fail over to".into(),
                        ));
                    }
                    let r = &src.resolved;
                    let doc = media
                        .document(&*src.service, &src.service_name, &r.url, &r.headers, limit)
                        .await?;
                    let url = match &*doc {
                        Document::Playlist { url, body } if hls::is_master(body) => {
                            hls::best_variant(body, url).ok_or_else(|| {
                                UpstreamError::Invalid("the master lists no variant".into())
                            })?
                        }
                        Document::Playlist { url, .. } => url.clone(),
                        Document::Media { .. } => {
                            return Err(UpstreamError::Invalid(
                                "not HLS: an HLS player cannot switch to it".into(),
                            ))
                        }
                    };
                    Ok((src.service_name, src.service, url, r.headers.clone()))
                }
            })
            .await?;
        tracing::warn!(channel, from = %tried.join(","), to = %service_name, "HLS playback failing over");
        let mut tried = tried;
        tried.push(service_name.clone());
        let switch = Arc::new(Switch {
            service_name,
            service,
            url,
            headers,
            tried,
            numbers: Renumber::new(self.next_seq.get(link)),
        });
        self.switched.insert(link.to_string(), switch.clone());
        Ok(switch)
    }
}

fn idle_cache<V: Clone + Send + Sync + 'static>(idle_secs: u64) -> Cache<String, V> {
    Cache::builder()
        .max_capacity(10_000)
        .time_to_idle(Duration::from_secs(idle_secs))
        .build()
}

fn source_key(service: &str, channel: &str) -> String {
    format!("{service}\n{channel}")
}

impl Renumber {
    pub fn new(start_seq: Option<u64>) -> Self {
        Self {
            start_seq,
            map: Mutex::new(None),
        }
    }

    /// The new source's media playlist `body`, renumbered for the player: the
    /// segment the player expects next is a few segments before the live edge, with
    /// a discontinuity before it; older ones keep smaller numbers (the player has
    /// moved past them).
    pub fn renumber(&self, body: &str, url: &Url, live_edge: usize) -> Result<String, String> {
        let info = hls::media_info(body, url)?;
        let count = info.segments.len() as u64;
        let map = {
            let mut m = self.map.lock().expect("switch lock is never poisoned");
            *m.get_or_insert_with(|| {
                let start_index = if info.ended {
                    0
                } else {
                    count.saturating_sub(live_edge as u64)
                };
                let first = self.start_seq.unwrap_or(0);
                SeqMap {
                    offset: i128::from(first) - i128::from(info.media_sequence + start_index),
                    first,
                }
            })
        };
        let mapped_first = i128::from(info.media_sequence) + map.offset;
        let mapped_first = u64::try_from(mapped_first.max(0)).unwrap_or(0);
        // Where the discontinuity goes: before the segment numbered `map.first`,
        // while it is in the window; once it has left, the count of discontinuities
        // before the window goes up by one.
        let disc_index = map
            .first
            .checked_sub(mapped_first)
            .filter(|i| *i < count)
            .map(|i| i as usize);
        let disc_passed = mapped_first > map.first;

        let mut out = String::with_capacity(body.len() + 64);
        let mut segment = 0usize;
        let mut in_segment_tags = false;
        let mut wrote_dseq = false;
        for piece in body.split_inclusive('\n') {
            let line = piece.trim();
            if line.starts_with("#EXT-X-MEDIA-SEQUENCE:") {
                out.push_str(&format!("#EXT-X-MEDIA-SEQUENCE:{mapped_first}\n"));
                if disc_passed && !body.contains("#EXT-X-DISCONTINUITY-SEQUENCE:") {
                    out.push_str("#EXT-X-DISCONTINUITY-SEQUENCE:1\n");
                    wrote_dseq = true;
                }
                continue;
            }
            if let Some(v) = line.strip_prefix("#EXT-X-DISCONTINUITY-SEQUENCE:") {
                let n: u64 = v.trim().parse().unwrap_or(0);
                out.push_str(&format!(
                    "#EXT-X-DISCONTINUITY-SEQUENCE:{}\n",
                    n + u64::from(disc_passed)
                ));
                wrote_dseq = true;
                continue;
            }
            let is_uri = !line.is_empty() && !line.starts_with('#');
            let is_segment_tag =
                line.starts_with("#EXTINF") || line.starts_with("#EXT-X-BYTERANGE");
            if is_segment_tag && !in_segment_tags {
                in_segment_tags = true;
                if disc_index == Some(segment) {
                    out.push_str("#EXT-X-DISCONTINUITY\n");
                }
            }
            out.push_str(piece);
            if !piece.ends_with('\n') {
                out.push('\n');
            }
            if is_uri {
                segment += 1;
                in_segment_tags = false;
            }
        }
        if !body.contains("#EXT-X-MEDIA-SEQUENCE:") {
            // Default sequence 0: state ours right after the header.
            let mut head = format!("#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:{mapped_first}\n");
            if disc_passed && !wrote_dseq {
                head.push_str("#EXT-X-DISCONTINUITY-SEQUENCE:1\n");
            }
            let rest = out
                .trim_start_matches('\u{feff}')
                .trim_start()
                .strip_prefix("#EXTM3U")
                .unwrap_or(&out)
                .trim_start_matches(['\r', '\n']);
            return Ok(head + rest);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(first: u64, n: u64) -> String {
        let mut s = format!("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:{first}\n");
        for i in first..first + n {
            s.push_str(&format!("#EXTINF:2.0,\nb{i}.ts\n"));
        }
        s
    }

    #[test]
    fn the_new_source_continues_the_old_numbering_after_a_discontinuity() {
        let sw = Renumber::new(Some(1000));
        let url = Url::parse("http://b.example/live.m3u8").unwrap();
        // New source at 7..12; live edge 3: b9 becomes 1000, with a discontinuity.
        let out = sw.renumber(&live(7, 5), &url, 3).unwrap();
        assert!(out.contains("#EXT-X-MEDIA-SEQUENCE:998\n"), "{out}");
        assert!(
            out.contains("#EXT-X-DISCONTINUITY\n#EXTINF:2.0,\nb9.ts"),
            "{out}"
        );
        assert_eq!(out.matches("#EXT-X-DISCONTINUITY\n").count(), 1, "{out}");
        // The window moves on; the mapping stays.
        let out = sw.renumber(&live(9, 5), &url, 3).unwrap();
        assert!(out.contains("#EXT-X-MEDIA-SEQUENCE:1000\n"), "{out}");
        assert!(
            out.contains("#EXT-X-DISCONTINUITY\n#EXTINF:2.0,\nb9.ts"),
            "{out}"
        );
        // Once the first new segment has left the window, the discontinuity count says so.
        let out = sw.renumber(&live(10, 5), &url, 3).unwrap();
        assert!(out.contains("#EXT-X-MEDIA-SEQUENCE:1001\n"), "{out}");
        assert!(out.contains("#EXT-X-DISCONTINUITY-SEQUENCE:1\n"), "{out}");
        assert!(!out.contains("#EXT-X-DISCONTINUITY\n"), "{out}");
    }
}
