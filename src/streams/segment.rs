//! One segment's bytes as a `.ts` session sends them: the whole resource, or only
//! its byte range (`EXT-X-BYTERANGE`, as ffmpeg's `-hls_flags single_file` writes:
//! every segment a range of one file), decrypted when it is AES-128 (`EXT-X-KEY`).
//!
//! A range is served the way the HLS proxy serves a player's `Range`
//! (`Engine::serve_link`): cut from the resource when the segment cache holds it
//! whole, else asked of the upstream with a `Range` header. An upstream that ignores
//! the header and answers the whole resource (200) has the range cut out of its
//! answer, which is dropped once the range is read.
//!
//! AES-128 segments are decrypted as they arrive (AES-128-CBC, PKCS#7 padding; the
//! RustCrypto `aes` and `cbc` crates): every whole block but the last goes on at once,
//! the last is held until the end to take its padding off. A segment that is not a
//! whole number of blocks, or whose padding is wrong (the wrong key or IV), is an
//! error. Keys come through the media cache like segments (the source's headers, one
//! fetch shared with HLS players) and must be 16 bytes.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{Array, BlockModeDecrypt, KeyIvInit};
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
            if range.length == 0 {
                return Ok(Box::pin(futures::stream::empty()));
            }
            // Its end is past the largest offset: malformed, not empty.
            return Err(UpstreamError::Invalid(format!(
                "the byte range {}@{} of {} ends past any offset a resource can have",
                range.length,
                range.offset,
                self.service.shown_url(url)
            )));
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
        // Bounded as a shared fetch is: a trickling range must fail the segment (and
        // so, in time, the source), not stall the session.
        Ok(bounded(
            window(fetched.body, skip, range.length),
            self.media.segment_timeout(),
        ))
    }

    /// The init section (`EXT-X-MAP`) at `url` (`range` of it), whole: at most
    /// `MAX_INIT` bytes.
    pub async fn init(&self, url: &Url, range: Option<ByteRange>) -> Result<Bytes, UpstreamError> {
        let mut body = self.fetch(url, range).await?;
        let mut buf = BytesMut::new();
        while let Some(chunk) = body.next().await {
            buf.extend_from_slice(&chunk?);
            if buf.len() > MAX_INIT {
                return Err(UpstreamError::Invalid(format!(
                    "the init section {} is over {MAX_INIT} bytes",
                    self.service.shown_url(url)
                )));
            }
        }
        Ok(buf.freeze())
    }

    /// The AES-128 key at `url`: 16 bytes, else an error naming it.
    pub async fn key(&self, url: &Url) -> Result<[u8; 16], UpstreamError> {
        // Enough to tell a key from something else; not more.
        const LIMIT: usize = 1024;
        let bytes = match self.whole(url).await? {
            Body::Cached(seg) => seg.bytes,
            Body::Streaming { mut body, .. } => {
                let mut buf = BytesMut::new();
                while let Some(chunk) = body.next().await {
                    buf.extend_from_slice(&chunk?);
                    if buf.len() > LIMIT {
                        break;
                    }
                }
                buf.freeze()
            }
        };
        <[u8; 16]>::try_from(&bytes[..]).map_err(|_| {
            UpstreamError::Invalid(format!(
                "the AES-128 key {} is {}{} bytes, not 16",
                self.service.shown_url(url),
                if bytes.len() > LIMIT { "over " } else { "" },
                bytes.len().min(LIMIT)
            ))
        })
    }

    async fn whole(&self, url: &Url) -> Result<Body, UpstreamError> {
        self.media
            .segment(self.service.clone(), self.service_name, url, self.headers)
            .await
    }
}

/// The largest init section taken (a real one is a few kilobytes: codec parameters
/// and track headers).
const MAX_INIT: usize = 4 << 20;

type Aes128Cbc = cbc::Decryptor<aes::Aes128>;

/// `body` (AES-128-CBC with `key` and `iv`, PKCS#7 padded) decrypted as it arrives.
pub(super) fn decrypt(body: BodyStream, key: &[u8; 16], iv: &[u8; 16]) -> BodyStream {
    let cipher = Aes128Cbc::new(&(*key).into(), &(*iv).into());
    Box::pin(futures::stream::try_unfold(
        Some((body, cipher, BytesMut::new())),
        |state| async move {
            let Some((mut body, mut cipher, mut held)) = state else {
                return Ok(None);
            };
            loop {
                let Some(chunk) = body.next().await else {
                    // The last block: decrypted and its padding taken off.
                    let mut last = held;
                    let why = if last.len() % 16 == 0 {
                        "wrong padding (the wrong key or IV?)"
                    } else {
                        "not a whole number of 16-byte blocks"
                    };
                    let plain = cipher.decrypt_padded::<Pkcs7>(&mut last).map_err(|_| {
                        UpstreamError::Invalid(format!(
                            "the AES-128 segment does not decrypt: {why}"
                        ))
                    })?;
                    let plain = Bytes::copy_from_slice(plain);
                    return Ok(Some((plain, None)));
                };
                held.extend_from_slice(&chunk?);
                // Every whole block but the last (which may carry the padding).
                let ready = held.len().saturating_sub(1) / 16 * 16;
                if ready == 0 {
                    continue;
                }
                let mut out = held.split_to(ready);
                let (blocks, _) = Array::slice_as_chunks_mut(&mut out);
                cipher.decrypt_blocks(blocks);
                return Ok(Some((out.freeze(), Some((body, cipher, held)))));
            }
        },
    ))
}

/// `body`, ended with a timeout error once `within` has passed since now.
fn bounded(body: BodyStream, within: std::time::Duration) -> BodyStream {
    let end = tokio::time::Instant::now() + within;
    Box::pin(futures::stream::unfold(
        Some(body),
        move |state| async move {
            let mut body = state?;
            match tokio::time::timeout_at(end, body.next()).await {
                Ok(Some(item)) => Some((item, Some(body))),
                Ok(None) => None,
                Err(_) => Some((Err(UpstreamError::Timeout(within)), None)),
            }
        },
    ))
}

fn once(bytes: Bytes) -> BodyStream {
    Box::pin(futures::stream::once(async move { Ok(bytes) }))
}

/// `take` bytes of `body` after its first `skip`; an error when it ends sooner. The
/// rest of `body` is not read (dropping it closes the upstream connection).
pub(super) fn window(body: BodyStream, skip: u64, take: u64) -> BodyStream {
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
    async fn aes_128_segments_decrypt_in_any_chunking() {
        use cbc::cipher::BlockModeEncrypt;
        let (key, iv) = ([7u8; 16], [9u8; 16]);
        for len in [0, 1, 15, 16, 17, 1000] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let mut buf = vec![0u8; len + 16];
            buf[..len].copy_from_slice(&plain);
            let sealed = cbc::Encryptor::<aes::Aes128>::new(&key.into(), &iv.into())
                .encrypt_padded::<Pkcs7>(&mut buf, len)
                .unwrap()
                .to_vec();
            for size in [1, 5, 16, 33, 4096] {
                let got = collect(decrypt(chunks(&sealed, size), &key, &iv)).await;
                assert_eq!(got.unwrap(), plain, "{len} bytes in chunks of {size}");
            }
            let wrong = collect(decrypt(chunks(&sealed, 16), &[8u8; 16], &iv)).await;
            // A wrong key is caught by the padding (nearly always: 1 in 256 passes).
            if let Err(e) = wrong {
                assert!(e.to_string().contains("wrong padding"), "{e}");
            }
        }
        let cut = collect(decrypt(chunks(&[1u8; 20], 7), &key, &iv)).await;
        assert!(cut.unwrap_err().to_string().contains("whole number"));
    }

    #[tokio::test]
    async fn a_bounded_body_ends_with_a_timeout_error() {
        // Endless: only the bound ends it.
        let slow: BodyStream = Box::pin(futures::stream::unfold(0u8, |n| async move {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            Some((Ok(Bytes::from(vec![n])), n.wrapping_add(1)))
        }));
        let mut body = bounded(slow, std::time::Duration::from_millis(200));
        let ended = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while let Some(item) = body.next().await {
                if let Err(e) = item {
                    return Some(e);
                }
            }
            None
        })
        .await
        .expect("the bound ended the body");
        assert!(ended.is_some_and(|e| e.is_timeout()));
        assert!(body.next().await.is_none());
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
