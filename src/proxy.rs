//! Signed proxy links. Every URL freesky hands out for an upstream resource is
//! `/proxy/{context}/{item}/{name}`:
//!
//! - `context` is sealed once per playlist served: the service, the lineup channel, the
//!   playlist's upstream URL, the stream's headers and a bucketed expiry, encrypted and
//!   authenticated with XChaCha20-Poly1305 under a key derived from the server key kept
//!   in `state_dir`;
//! - `item` is one URI of that playlist, exactly as the playlist wrote it (relative or
//!   absolute) plus what kind of resource it is, sealed with AES-256-GCM (ring) under an
//!   *item key* derived from the server key and the context.
//!
//! Links are deterministic: players (hls.js from 1.6 on) refuse a live playlist whose
//! reload gives a media sequence number another URI, and shared HTTP caches can only
//! share a segment whose link does not change. So nothing random goes in: the expiry
//! is rounded up to a bucket boundary (a link lives at least `link_ttl`), the item key
//! is an HMAC of the context's plaintext, and both AEADs use synthetic nonces, an HMAC
//! of their own plaintext (SIV-style): the same plaintext gives the same link on every
//! render and every instance with the same key, distinct plaintexts get distinct
//! nonces (the HMAC is collision-resistant), and the link reveals only whether two
//! plaintexts are equal. Links change when the key rotates or the expiry bucket turns.
//!
//! A link that was not made with this server's key, was altered, mixes parts of two
//! playlists, or has expired does not open, so `/proxy/...` is not an open proxy; no
//! server-side table is needed (instances sharing `proxy.key` accept each other's
//! links) and clients never see upstream URLs, paths or headers. Service credentials
//! are never in a link: they are added when fetching. Sealing a URI costs one small
//! AEAD over the URI alone, so rewriting a 5,000-segment playlist stays cheap.
//!
//! Every link repeats its playlist's context, so a rewrite's output grows with the
//! number of URIs times the context's size. Both are bounded: the URL and headers that
//! go into a context ([`MAX_URL_BYTES`], [`MAX_HEADER_BYTES`]), and the output of one
//! rewrite ([`MAX_REWRITTEN_BYTES`]); the number of URIs per playlist is capped where
//! playlists are fetched (`cache`).

use std::path::Path;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, OsRng};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::hmac;
use url::Url;

use crate::hls::UriKind;
use crate::model::Headers;

const XNONCE_LEN: usize = 24;
/// Bumped whenever the plaintext layout changes; 1 carried a random item key.
const FORMAT: u8 = 2;
/// Expiry buckets are `link_ttl` divided by this: links made within one bucket are
/// equal, and a link lives at most one bucket longer than `link_ttl`.
const BUCKETS_PER_TTL: u32 = 8;

/// The longest playlist URL a context carries (and a playlist may be fetched from):
/// far above real CDN URLs with tokens, far below what would make each link huge.
pub const MAX_URL_BYTES: usize = 4096;
/// The most bytes of stream headers (names and values) a context carries.
pub const MAX_HEADER_BYTES: usize = 8192;
/// The most a rewritten playlist may take; past it the rewrite is refused rather than
/// holding a copy of the context per URI in memory.
pub const MAX_REWRITTEN_BYTES: usize = 64 << 20;

/// Why links cannot be made for a playlist.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LinkError {
    #[error("the playlist URL is {len} bytes long; proxy links carry URLs of at most {max} bytes")]
    UrlTooLong { len: usize, max: usize },
    #[error(
        "the stream's headers take {len} bytes; proxy links carry at most {max} bytes of headers"
    )]
    HeadersTooLarge { len: usize, max: usize },
    #[error("the rewritten playlist would be larger than {max} bytes (too many or too long URIs)")]
    OutputTooLarge { max: usize },
    #[error(transparent)]
    Rewrite(#[from] crate::hls::RewriteError),
}

/// What a proxy link points at.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub service: String,
    /// The lineup channel the link was handed out for ("" when none: no failover).
    pub channel: String,
    /// The resolved upstream URL.
    pub url: String,
    pub kind: Kind,
    pub headers: Headers,
    /// Unix seconds after which the link is refused.
    pub expires: u64,
}

/// How `/proxy` serves the target: playlists are rewritten, everything else streamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Playlist,
    Segment,
    Key,
    Map,
    /// A whole media file or endless TS (a source that is not HLS): passed through,
    /// never buffered or cached.
    Media,
}

impl Kind {
    fn code(self) -> u8 {
        match self {
            Self::Playlist => b'p',
            Self::Segment => b's',
            Self::Key => b'k',
            Self::Map => b'm',
            Self::Media => b'v',
        }
    }

    fn from_code(c: u8) -> Option<Self> {
        Some(match c {
            b'p' => Self::Playlist,
            b's' => Self::Segment,
            b'k' => Self::Key,
            b'm' => Self::Map,
            b'v' => Self::Media,
            _ => return None,
        })
    }
}

impl From<UriKind> for Kind {
    fn from(k: UriKind) -> Self {
        match k {
            UriKind::Playlist => Self::Playlist,
            UriKind::Segment => Self::Segment,
            UriKind::Key => Self::Key,
            UriKind::Map => Self::Map,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read or create the proxy key {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("the proxy key {0} is damaged (expected 32 bytes); delete it to make a new one")]
    Damaged(String),
}

/// Seals and opens proxy tokens.
pub struct Signer {
    /// Encrypts contexts.
    cipher: XChaCha20Poly1305,
    /// Derives a context's synthetic nonce from its plaintext.
    context_nonce: hmac::Key,
    /// Derive a context's item key, and the key of its items' synthetic nonces.
    item_key: hmac::Key,
    item_nonce: hmac::Key,
    /// How long a link stays valid, at least.
    ttl: Duration,
    /// What link expiry is measured against (a test moves it forward).
    clock: std::sync::Arc<dyn crate::clock::Clock>,
}

impl Signer {
    /// Loads `dir/proxy.key`, creating it (mode 0600, in a 0700 `dir` when that is
    /// new) on first start, so links stay valid across restarts. A key that group or
    /// others can read (anyone who has it can seal links) is used, with a warning
    /// naming the fix.
    pub fn load_or_create(dir: &Path, ttl: Duration) -> Result<Self, KeyError> {
        let path = dir.join("proxy.key");
        let io = |source| KeyError::Io {
            path: path.display().to_string(),
            source,
        };
        let key = match std::fs::read(&path) {
            Ok(bytes) => {
                let loose = crate::store::mode_of(&path)
                    .and_then(|mode| crate::store::loose_permissions(&path, mode, 0o600));
                if let Some(warning) = loose {
                    tracing::warn!("{warning}");
                }
                bytes
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                crate::store::create_private_dir(dir).map_err(io)?;
                let key = XChaCha20Poly1305::generate_key(&mut OsRng).to_vec();
                write_private(&path, &key).map_err(io)?;
                key
            }
            Err(e) => return Err(io(e)),
        };
        if key.len() != 32 {
            return Err(KeyError::Damaged(path.display().to_string()));
        }
        Ok(Self::from_key(&key, ttl))
    }

    /// A signer with a fresh random key (tests, and `freesky playlist` which serves nothing).
    pub fn ephemeral(ttl: Duration) -> Self {
        Self::from_key(&XChaCha20Poly1305::generate_key(&mut OsRng), ttl)
    }

    /// One independent subkey per use of the server key, so that no key serves two
    /// primitives.
    fn from_key(master: &[u8], ttl: Duration) -> Self {
        let master = hmac::Key::new(hmac::HMAC_SHA256, master);
        let derive = |label: &[u8]| hmac::sign(&master, label);
        let mac_key = |label: &[u8]| hmac::Key::new(hmac::HMAC_SHA256, derive(label).as_ref());
        Self {
            cipher: XChaCha20Poly1305::new(Key::from_slice(
                derive(b"freesky proxy context cipher").as_ref(),
            )),
            context_nonce: mac_key(b"freesky proxy context nonce"),
            item_key: mac_key(b"freesky proxy item key"),
            item_nonce: mac_key(b"freesky proxy item nonce"),
            ttl,
            clock: std::sync::Arc::new(crate::clock::SystemClock),
        }
    }

    /// This signer with link expiry measured against `clock`.
    pub fn with_clock(mut self, clock: std::sync::Arc<dyn crate::clock::Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The expiry of links made at `now`: `now + ttl` rounded up to a bucket boundary,
    /// so that every render within one bucket seals the same context.
    fn expiry(&self, now: u64) -> u64 {
        let bucket = (self.ttl / BUCKETS_PER_TTL).as_secs().max(1);
        now.saturating_add(self.ttl.as_secs())
            .div_ceil(bucket)
            .saturating_mul(bucket)
    }

    /// The keys of the items of the context whose plaintext is `plain`.
    fn item_keys(&self, plain: &[u8]) -> (LessSafeKey, hmac::Key) {
        let cipher = item_cipher(hmac::sign(&self.item_key, plain).as_ref());
        let nonce = hmac::Key::new(
            hmac::HMAC_SHA256,
            hmac::sign(&self.item_nonce, plain).as_ref(),
        );
        (cipher, nonce)
    }

    /// The sealer of the links of one playlist fetched from `base` for `service`, as a
    /// source of lineup channel `channel` ("" for none).
    pub fn sealer(
        &self,
        service: &str,
        channel: &str,
        base: &Url,
        headers: &Headers,
    ) -> Result<PlaylistSealer, LinkError> {
        self.sealer_at(self.clock.unix_secs(), service, channel, base, headers)
    }

    fn sealer_at(
        &self,
        now: u64,
        service: &str,
        channel: &str,
        base: &Url,
        headers: &Headers,
    ) -> Result<PlaylistSealer, LinkError> {
        let len = base.as_str().len();
        if len > MAX_URL_BYTES {
            return Err(LinkError::UrlTooLong {
                len,
                max: MAX_URL_BYTES,
            });
        }
        let len = headers
            .iter()
            .map(|(n, v)| n.len() + v.len())
            .sum::<usize>();
        if len > MAX_HEADER_BYTES {
            return Err(LinkError::HeadersTooLarge {
                len,
                max: MAX_HEADER_BYTES,
            });
        }
        let mut plain = Vec::with_capacity(64 + base.as_str().len());
        plain.push(FORMAT);
        plain.extend_from_slice(&self.expiry(now).to_be_bytes());
        put(&mut plain, service.as_bytes());
        put(&mut plain, channel.as_bytes());
        put(&mut plain, base.as_str().as_bytes());
        // Within MAX_HEADER_BYTES, so fewer than 2^16 headers.
        plain.extend_from_slice(&u16::try_from(headers.len()).unwrap_or(0).to_be_bytes());
        for (name, value) in headers {
            put(&mut plain, name.as_bytes());
            put(&mut plain, value.as_bytes());
        }
        let tag = hmac::sign(&self.context_nonce, &plain);
        let nonce = XNonce::from_slice(&tag.as_ref()[..XNONCE_LEN]);
        let sealed = self
            .cipher
            .encrypt(nonce, plain.as_slice())
            .expect("encryption of a small buffer cannot fail");
        let mut raw = Vec::with_capacity(XNONCE_LEN + sealed.len());
        raw.extend_from_slice(nonce);
        raw.extend_from_slice(&sealed);
        let (items, item_nonce) = self.item_keys(&plain);
        Ok(PlaylistSealer {
            context: URL_SAFE_NO_PAD.encode(raw),
            items,
            item_nonce,
            buf: Vec::new(),
        })
    }

    /// The `{context}/{item}` path of a link to `url` itself (not from a playlist).
    pub fn seal(
        &self,
        service: &str,
        url: &Url,
        kind: Kind,
        headers: &Headers,
    ) -> Result<String, LinkError> {
        let mut sealer = self.sealer(service, "", url, headers)?;
        let item = sealer.item(url.as_str(), kind);
        Ok(format!("{}/{item}", sealer.context()))
    }

    /// The target of a link's two sealed parts, or why it is refused.
    pub fn open(&self, context: &str, item: &str) -> Result<Target, &'static str> {
        self.open_at(self.clock.unix_secs(), context, item)
    }

    fn open_at(&self, now: u64, context: &str, item: &str) -> Result<Target, &'static str> {
        const MALFORMED: &str = "malformed proxy token";
        const FORGED: &str = "proxy token signature does not match";
        let raw = URL_SAFE_NO_PAD.decode(context).map_err(|_| MALFORMED)?;
        if raw.len() <= XNONCE_LEN {
            return Err(MALFORMED);
        }
        let (nonce, sealed) = raw.split_at(XNONCE_LEN);
        let plain = self
            .cipher
            .decrypt(XNonce::from_slice(nonce), sealed)
            .map_err(|_| FORGED)?;
        let mut r = Reader(&plain);
        if r.take(1) != Some(&[FORMAT][..]) {
            return Err(MALFORMED);
        }
        let expires = u64::from_be_bytes(r.array().ok_or(MALFORMED)?);
        if expires < now {
            return Err("proxy link has expired; reload the channel's playlist");
        }
        let service = r.string().ok_or(MALFORMED)?;
        let channel = r.string().ok_or(MALFORMED)?;
        let base = r.string().ok_or(MALFORMED)?;
        let count = u16::from_be_bytes(r.array().ok_or(MALFORMED)?);
        let mut headers = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            headers.push((r.string().ok_or(MALFORMED)?, r.string().ok_or(MALFORMED)?));
        }

        let (items, item_nonce) = self.item_keys(&plain);
        let mut raw = URL_SAFE_NO_PAD.decode(item).map_err(|_| MALFORMED)?;
        if raw.len() <= NONCE_LEN {
            return Err(MALFORMED);
        }
        let (nonce, sealed) = raw.split_at_mut(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = (&*nonce).try_into().map_err(|_| MALFORMED)?;
        let plain = items
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::empty(), sealed)
            .map_err(|_| FORGED)?;
        // Only the synthetic nonce of its own plaintext is valid, so every item has
        // exactly one encoding.
        if synthetic_nonce(&item_nonce, plain) != nonce {
            return Err(FORGED);
        }
        let (&code, reference) = plain.split_first().ok_or(MALFORMED)?;
        let kind = Kind::from_code(code).ok_or(MALFORMED)?;
        let reference = std::str::from_utf8(reference).map_err(|_| MALFORMED)?;
        let url = Url::parse(&base)
            .and_then(|b| b.join(reference))
            .map_err(|_| MALFORMED)?;
        Ok(Target {
            service,
            channel,
            url: url.to_string(),
            kind,
            headers,
            expires,
        })
    }
}

/// `body`, fetched from `playlist_url`, with every fetchable URI replaced by a link
/// under `public_base` (`http://host:port`) that carries `headers`. Refused when the
/// output would pass [`MAX_REWRITTEN_BYTES`].
pub fn rewrite_playlist(
    signer: &Signer,
    public_base: &str,
    service: &str,
    channel: &str,
    headers: &Headers,
    playlist_url: &Url,
    body: &str,
) -> Result<String, LinkError> {
    let mut sealer = signer.sealer(service, channel, playlist_url, headers)?;
    // Sized from what the links will take (each about its fixed part plus 4/3 of its
    // URI), never more than the output may grow to: an untrusted count must not
    // reserve memory by itself.
    let uris = crate::hls::count_uris(body, MAX_REWRITTEN_BYTES);
    let fixed = public_base.len() + "/proxy/".len() + sealer.context.len() + 60;
    let capacity = uris
        .saturating_mul(fixed)
        .saturating_add(body.len().saturating_mul(2))
        .min(MAX_REWRITTEN_BYTES);
    let mut over = false;
    let out = crate::hls::rewrite_refs_sized(body, capacity, |out, reference, kind| {
        if over || !crate::hls::is_fetchable_ref(reference) {
            return false;
        }
        if out.len() > MAX_REWRITTEN_BYTES {
            over = true;
            return false;
        }
        let reference = reference.trim();
        let kind = Kind::from(kind);
        out.push_str(public_base);
        out.push_str("/proxy/");
        out.push_str(&sealer.context);
        out.push('/');
        sealer.push_item(out, reference, kind);
        out.push('/');
        push_file_name(out, reference, kind);
        true
    })?;
    if over {
        return Err(LinkError::OutputTooLarge {
            max: MAX_REWRITTEN_BYTES,
        });
    }
    Ok(out)
}

/// Seals the URIs of one playlist (see the module doc).
pub struct PlaylistSealer {
    context: String,
    items: LessSafeKey,
    /// Keys the synthetic nonce of each item.
    item_nonce: hmac::Key,
    /// Reused for every item, so sealing one allocates only when it outgrows the last.
    buf: Vec<u8>,
}

impl PlaylistSealer {
    /// The sealed context, the first part of every link of this playlist.
    pub fn context(&self) -> &str {
        &self.context
    }

    /// The sealed item part for `reference` (as written in the playlist).
    pub fn item(&mut self, reference: &str, kind: Kind) -> String {
        let mut out = String::new();
        self.push_item(&mut out, reference, kind);
        out
    }

    /// Appends the sealed item part for `reference` to `out`.
    pub fn push_item(&mut self, out: &mut String, reference: &str, kind: Kind) {
        let buf = &mut self.buf;
        buf.clear();
        buf.extend_from_slice(&[0; NONCE_LEN]);
        buf.push(kind.code());
        buf.extend_from_slice(reference.as_bytes());
        let (head, plain) = buf.split_at_mut(NONCE_LEN);
        let nonce = synthetic_nonce(&self.item_nonce, plain);
        head.copy_from_slice(&nonce);
        let tag = self
            .items
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), plain)
            .expect("sealing a buffer shorter than 2^36 bytes cannot fail");
        buf.extend_from_slice(tag.as_ref());
        URL_SAFE_NO_PAD.encode_string(&buf[..], out);
    }
}

fn item_cipher(key: &[u8]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("a 32-byte key fits AES-256"))
}

/// The nonce of the item whose plaintext (kind code and reference) is `plain`: equal
/// plaintexts share it, which is what makes links deterministic, and distinct ones
/// collide only with probability about n^2 / 2^97 for n items under one item key.
fn synthetic_nonce(key: &hmac::Key, plain: &[u8]) -> [u8; NONCE_LEN] {
    let tag = hmac::sign(key, plain);
    let mut nonce = [0; NONCE_LEN];
    nonce.copy_from_slice(&tag.as_ref()[..NONCE_LEN]);
    nonce
}

/// Appends `bytes` with a u32 length prefix.
fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Reads what `put` wrote.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn string(&mut self) -> Option<String> {
        let len = u32::from_be_bytes(self.array()?);
        let bytes = self.take(usize::try_from(len).ok()?)?;
        String::from_utf8(bytes.to_vec()).ok()
    }
}

#[cfg(test)]
fn unix_now() -> u64 {
    use crate::clock::Clock;
    crate::clock::SystemClock.unix_secs()
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// A short file name for a proxy link to `reference` (a URL or a relative reference),
/// keeping the upstream extension when players care about it (ffmpeg checks segment
/// extensions), else one fitting the kind.
pub fn file_name(reference: &str, kind: Kind) -> String {
    let mut out = String::new();
    push_file_name(&mut out, reference, kind);
    out
}

fn push_file_name(out: &mut String, reference: &str, kind: Kind) {
    const KNOWN: &[&str] = &[
        "ts", "m4s", "mp4", "m4a", "m4v", "aac", "ac3", "ec3", "mp3", "vtt", "webvtt", "cmfv",
        "cmfa", "key",
    ];
    if kind == Kind::Playlist {
        out.push_str("index.m3u8");
        return;
    }
    // The extension of the last path segment, before any query or fragment.
    let bytes = reference.as_bytes();
    let end = memchr2(b'?', b'#', bytes).unwrap_or(bytes.len());
    let path = &bytes[..end];
    let ext = path
        .iter()
        .rposition(|&c| c == b'.' || c == b'/')
        .filter(|&i| path[i] == b'.')
        .map(|i| &reference[i + 1..end])
        .and_then(|e| {
            // Exact match first (the usual case), then any letter case.
            KNOWN
                .iter()
                .find(|k| **k == e)
                .or_else(|| KNOWN.iter().find(|k| k.eq_ignore_ascii_case(e)))
        });
    match (kind, ext) {
        (_, Some(e)) => {
            out.push_str(stem(kind));
            out.push('.');
            out.push_str(e);
        }
        (Kind::Key, _) => out.push_str("key.bin"),
        (Kind::Map, _) => out.push_str("init.mp4"),
        (Kind::Media, _) => out.push_str("stream.ts"),
        (Kind::Segment | Kind::Playlist, _) => out.push_str("seg.ts"),
    }
}

fn memchr2(a: u8, b: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&c| c == a || c == b)
}

fn stem(kind: Kind) -> &'static str {
    match kind {
        Kind::Playlist => "index",
        Kind::Segment => "seg",
        Kind::Key => "key",
        Kind::Map => "init",
        Kind::Media => "stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(s: &Signer, link: &str) -> Result<Target, &'static str> {
        let (context, item) = link.split_once('/').unwrap_or((link, ""));
        s.open(context, item)
    }

    #[test]
    fn items_of_one_playlist_do_not_open_with_another_context() {
        let s = Signer::ephemeral(Duration::from_secs(60));
        let base = Url::parse("https://cdn.example/live/index.m3u8?k=1").unwrap();
        let mut a = s.sealer("A", "", &base, &vec![]).unwrap();
        let mut b = s.sealer("B", "", &base, &vec![]).unwrap();
        let item_a = a.item("seg1.ts", Kind::Segment);
        let item_b = b.item("../../other/secret.ts", Kind::Segment);
        let t = s.open(a.context(), &item_a).unwrap();
        assert_eq!(t.url, "https://cdn.example/live/seg1.ts");
        assert_eq!((t.service.as_str(), t.kind), ("A", Kind::Segment));
        assert_eq!(
            s.open(a.context(), &item_b).unwrap_err(),
            "proxy token signature does not match"
        );
    }

    #[test]
    fn links_are_the_same_on_every_render_and_instance() {
        let dir = tempfile::tempdir().unwrap();
        let ttl = Duration::from_secs(3600);
        let s = Signer::load_or_create(dir.path(), ttl).unwrap();
        let other = Signer::load_or_create(dir.path(), ttl).unwrap();
        let base = Url::parse("https://cdn.example/live/index.m3u8?k=1").unwrap();
        let headers = vec![("Referer".to_string(), "https://site.example/".to_string())];
        let body = "#EXTM3U\n#EXT-X-KEY:METHOD=AES-128,URI=\"k.bin\"\n\
                    #EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF:2,\nseg1.ts\n#EXTINF:2,\nseg2.ts\n";
        let render = |s: &Signer| {
            rewrite_playlist(s, "http://fs", "S", "ch", &headers, &base, body).unwrap()
        };
        let first = render(&s);
        assert_eq!(first.matches("http://fs/proxy/").count(), 4);
        assert_eq!(render(&s), first);
        assert_eq!(render(&other), first);
        // Within one expiry bucket, later renders give the same links too.
        let now = unix_now();
        let bucket = (ttl / BUCKETS_PER_TTL).as_secs();
        let start = now - now % bucket;
        let seal = |at: u64, reference: &str, kind: Kind| {
            let mut sealer = s.sealer_at(at, "S", "ch", &base, &headers).unwrap();
            let item = sealer.item(reference, kind);
            format!("{}/{item}", sealer.context())
        };
        let link = seal(start + 1, "seg1.ts", Kind::Segment);
        assert_eq!(seal(start + bucket - 1, "seg1.ts", Kind::Segment), link);
        assert_ne!(seal(start + bucket + 1, "seg1.ts", Kind::Segment), link);
        // A different URI or kind is a different item of the same context.
        let item = |link: &str| link.split_once('/').unwrap().1.to_string();
        let other_uri = seal(start + 1, "seg2.ts", Kind::Segment);
        let other_kind = seal(start + 1, "seg1.ts", Kind::Map);
        assert_eq!(
            other_uri.split_once('/').unwrap().0,
            link.split_once('/').unwrap().0
        );
        assert_ne!(item(&other_uri), item(&link));
        assert_ne!(item(&other_kind), item(&link));
        assert_eq!(
            s.open_at(start + 1, "", "").unwrap_err(),
            "malformed proxy token"
        );
        let t = open(&s, &other_kind).unwrap();
        assert_eq!(
            (t.kind, t.url.as_str()),
            (Kind::Map, "https://cdn.example/live/seg1.ts")
        );
        assert_eq!((t.channel.as_str(), &t.headers), ("ch", &headers));
    }

    #[test]
    fn an_item_has_one_valid_nonce() {
        let s = Signer::ephemeral(Duration::from_secs(60));
        let base = Url::parse("https://cdn.example/live/index.m3u8").unwrap();
        let mut sealer = s.sealer("S", "", &base, &vec![]).unwrap();
        let item = sealer.item("seg1.ts", Kind::Segment);
        let mut raw = URL_SAFE_NO_PAD.decode(&item).unwrap();
        assert!(s.open(sealer.context(), &item).is_ok());
        // Re-sealed by hand under another nonce with the right item key: still refused.
        let plain = {
            let (keys, _) = s.item_keys(&context_plain(&s, sealer.context()));
            let (nonce, sealed) = raw.split_at_mut(NONCE_LEN);
            let nonce: [u8; NONCE_LEN] = (&*nonce).try_into().unwrap();
            keys.open_in_place(Nonce::assume_unique_for_key(nonce), Aad::empty(), sealed)
                .unwrap()
                .to_vec()
        };
        let (keys, _) = s.item_keys(&context_plain(&s, sealer.context()));
        let mut buf = plain.clone();
        let nonce = [7; NONCE_LEN];
        let tag = keys
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut buf)
            .unwrap();
        let forged = [&nonce[..], &buf, tag.as_ref()].concat();
        assert_eq!(
            s.open(sealer.context(), &URL_SAFE_NO_PAD.encode(forged))
                .unwrap_err(),
            "proxy token signature does not match"
        );
    }

    fn context_plain(s: &Signer, context: &str) -> Vec<u8> {
        let raw = URL_SAFE_NO_PAD.decode(context).unwrap();
        let (nonce, sealed) = raw.split_at(XNONCE_LEN);
        s.cipher.decrypt(XNonce::from_slice(nonce), sealed).unwrap()
    }

    #[test]
    fn seal_open_and_refuse_tampering() {
        let s = Signer::ephemeral(Duration::from_secs(60));
        let url = Url::parse("https://cdn.example/a/b.ts?t=1").unwrap();
        let headers = vec![("Referer".to_string(), "https://site.example/".to_string())];
        let token = s.seal("Svc", &url, Kind::Segment, &headers).unwrap();
        let t = open(&s, &token).unwrap();
        assert_eq!(
            (t.service.as_str(), t.url.as_str(), t.kind, &t.headers),
            ("Svc", url.as_str(), Kind::Segment, &headers)
        );
        // Flip one character anywhere: refused.
        let mut bytes = token.clone().into_bytes();
        let i = bytes.len() / 2;
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        assert!(open(&s, std::str::from_utf8(&bytes).unwrap()).is_err());
        // Flip one in each part.
        for at in [5, token.len() - 5] {
            let mut bytes = token.clone().into_bytes();
            bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
            assert!(open(&s, std::str::from_utf8(&bytes).unwrap()).is_err());
        }
        assert!(open(&s, "").is_err());
        assert!(open(&s, "not base64 !/x").is_err());
        // Another server's key: refused.
        assert!(open(&Signer::ephemeral(Duration::from_secs(60)), &token).is_err());
    }

    #[test]
    fn expired_links_are_refused() {
        let ttl = Duration::from_secs(800);
        let s = Signer::ephemeral(ttl);
        let now = unix_now();
        let base = Url::parse("http://x.example/").unwrap();
        let mut sealer = s.sealer_at(now, "Svc", "", &base, &vec![]).unwrap();
        let item = sealer.item("a.ts", Kind::Segment);
        let context = sealer.context();
        // A link lives at least the ttl, and at most one bucket (ttl / 8) longer.
        assert!(s.open_at(now + 800, context, &item).is_ok());
        assert_eq!(
            s.open_at(now + 800 + 101, context, &item).unwrap_err(),
            "proxy link has expired; reload the channel's playlist"
        );
    }

    #[test]
    fn key_persists() {
        let dir = tempfile::tempdir().unwrap();
        let a = Signer::load_or_create(dir.path(), Duration::from_secs(60)).unwrap();
        let token = a
            .seal(
                "S",
                &Url::parse("http://x.example/").unwrap(),
                Kind::Key,
                &vec![],
            )
            .unwrap();
        let b = Signer::load_or_create(dir.path(), Duration::from_secs(60)).unwrap();
        assert!(open(&b, &token).is_ok());
    }

    #[test]
    fn file_names() {
        let u = |s: &'static str| s;
        assert_eq!(
            file_name(u("http://x/a/seg1.m4s?x=1"), Kind::Segment),
            "seg.m4s"
        );
        assert_eq!(file_name(u("http://x/a/seg1.php"), Kind::Segment), "seg.ts");
        assert_eq!(
            file_name(u("http://x/a/chunks.m3u8"), Kind::Playlist),
            "index.m3u8"
        );
        assert_eq!(file_name(u("http://x/k"), Kind::Key), "key.bin");
    }

    #[test]
    fn contexts_and_rewrites_are_bounded() {
        let s = Signer::ephemeral(Duration::from_secs(60));
        let long = Url::parse(&format!(
            "http://x.example/?t={}",
            "a".repeat(MAX_URL_BYTES)
        ))
        .unwrap();
        assert!(matches!(
            s.sealer("S", "", &long, &vec![]),
            Err(LinkError::UrlTooLong { .. })
        ));
        let base = Url::parse("http://x.example/live/index.m3u8").unwrap();
        let cookie = vec![("Cookie".to_string(), "c".repeat(MAX_HEADER_BYTES))];
        assert!(matches!(
            s.seal("S", &base, Kind::Segment, &cookie),
            Err(LinkError::HeadersTooLarge { .. })
        ));
        // Within both caps, but enough URIs that the links would pass the output cap.
        let url = Url::parse(&format!("http://x.example/?t={}", "a".repeat(3000))).unwrap();
        let body = "#EXTM3U\n#EXTINF:1,\n".to_string() + &"a\n".repeat(20_000);
        let out = rewrite_playlist(&s, "http://fs", "S", "", &vec![], &url, &body);
        assert_eq!(
            out.unwrap_err(),
            LinkError::OutputTooLarge {
                max: MAX_REWRITTEN_BYTES
            }
        );
        // A usual playlist is rewritten whole.
        let body = "#EXTM3U\n#EXTINF:1,\n".to_string() + &"seg.ts\n".repeat(1000);
        let out = rewrite_playlist(&s, "http://fs", "S", "", &vec![], &base, &body).unwrap();
        assert_eq!(out.matches("http://fs/proxy/").count(), 1000);
    }
}
