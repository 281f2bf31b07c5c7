//! One segment's bytes as a `.ts` session sends them: the whole resource, or only
//! its byte range (`EXT-X-BYTERANGE`, as ffmpeg's `-hls_flags single_file` writes:
//! every segment a range of one file).
//!
//! A range is served the way the HLS proxy serves a player's `Range`
//! (`Engine::serve_link`): cut from the resource when the segment cache holds it
//! whole, else asked of the upstream with a `Range` header. An upstream that ignores
//! the header and answers the whole resource (200) has the range cut out of its
//! answer, which is dropped once the range is read.

use std::sync::Arc;

use futures::StreamExt;
use url::Url;

use crate::cache::{Body, MediaCache};
use crate::error::UpstreamError;
use crate::hls::ByteRange;
use crate::model::Headers;
use crate::services::Service;
use crate::upstream::BodyStream;

/// Where a segment comes from: the service that serves it and how to ask.
pub(super) struct Upstream<'a> {
    pub media: &'a MediaCache,
    pub service: &'a Arc<dyn Service>,
    pub service_name: &'a str,
    pub headers: &'a Headers,
}

impl Upstream<'_> {
    /// The bytes of `url` (only `range` of them, when given), as they arrive. The
    /// whole resource comes through the media cache (one fetch shared with HLS viewers).
    pub async fn fetch(
        &self,
        url: &Url,
        range: Option<ByteRange>,
    ) -> Result<BodyStream, UpstreamError> {
        let Some(range) = range else {
            return Ok(match self.whole(url).await? {
                Body::Cached(seg) => once(seg.bytes),
                Body::Streaming { body, .. } => body,
            });
        };
        let Some(header) = range.header() else {
            return Ok(Box::pin(futures::stream::empty()));
        };
        if self.media.has_segment(self.service_name, url, self.headers) {
            if let Body::Cached(seg) = self.whole(url).await? {
                let len = seg.bytes.len() as u64;
                let end = range.offset.saturating_add(range.length);
                if end > len {
                    return Err(UpstreamError::Invalid(format!(
                        "the byte range {header} is past the end of {} ({len} bytes)",
                        self.service.shown_url(url)
                    )));
                }
                return Ok(once(seg.bytes.slice(range.offset as usize..end as usize)));
            }
        }
        let fetched = self.service.fetch(url, self.headers, Some(&header)).await?;
        // 206: the range itself; 200: the whole resource, the range cut out of it.
        let skip = if fetched.status == 206 {
            0
        } else {
            range.offset
        };
        Ok(window(fetched.body, skip, range.length))
    }

    async fn whole(&self, url: &Url) -> Result<Body, UpstreamError> {
        self.media
            .segment(self.service.clone(), self.service_name, url, self.headers)
            .await
    }
}

fn once(bytes: bytes::Bytes) -> BodyStream {
    Box::pin(futures::stream::once(async move { Ok(bytes) }))
}

/// `take` bytes of `body` after its first `skip`; an error when it ends sooner. The
/// rest of `body` is not read (dropping it closes the upstream connection).
fn window(body: BodyStream, skip: u64, take: u64) -> BodyStream {
    Box::pin(futures::stream::try_unfold(
        (body, skip, take),
        |(mut body, mut skip, mut left)| async move {
            while left > 0 {
                let Some(chunk) = body.next().await else {
                    return Err(UpstreamError::Invalid(format!(
                        "the upstream's answer ended {left} bytes short of the segment's byte range"
                    )));
                };
                let mut chunk = chunk?;
                let skipped = skip.min(chunk.len() as u64);
                skip -= skipped;
                let mut chunk = chunk.split_off(skipped as usize);
                chunk.truncate(left.min(chunk.len() as u64) as usize);
                if chunk.is_empty() {
                    continue;
                }
                left -= chunk.len() as u64;
                return Ok(Some((chunk, (body, skip, left))));
            }
            Ok(None)
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    async fn collect(s: BodyStream) -> Result<Vec<u8>, UpstreamError> {
        let mut out = Vec::new();
        let mut s = s;
        while let Some(c) = s.next().await {
            out.extend_from_slice(&c?);
        }
        Ok(out)
    }

    fn chunks(data: &[u8], size: usize) -> BodyStream {
        let parts: Vec<Result<Bytes, UpstreamError>> = data
            .chunks(size)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        Box::pin(futures::stream::iter(parts))
    }

    #[tokio::test]
    async fn a_window_cuts_the_range_out_of_any_chunking() {
        let data: Vec<u8> = (0..=255u8).collect();
        for size in [1, 7, 100, 256] {
            let got = collect(window(chunks(&data, size), 10, 50)).await.unwrap();
            assert_eq!(got, &data[10..60], "chunks of {size}");
            let got = collect(window(chunks(&data, size), 0, 256)).await.unwrap();
            assert_eq!(got, data);
        }
        let short = collect(window(chunks(&data, 64), 200, 100)).await;
        assert!(short.unwrap_err().to_string().contains("44 bytes short"));
    }
}
