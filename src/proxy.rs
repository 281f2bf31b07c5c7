//! Signed proxy links. Every URL freesky hands out for an upstream resource is
//! `/proxy/{context}/{item}/{name}`:
//!
//! - `context` is sealed once per playlist served: the service, the playlist's upstream
//!   URL, the stream's headers, an expiry and a fresh random *item key*, encrypted and
//!   authenticated with XChaCha20-Poly1305 under the server key kept in `state_dir`;
//! - `item` is one URI of that playlist, exactly as the playlist wrote it (relative or
//!   absolute) plus what kind of resource it is, sealed with AES-256-GCM (ring) under the
//!   item key (nonces are a counter, unique under a key used for one playlist only).
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
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use url::Url;

use crate::hls::UriKind;
use crate::model::Headers;

const XNONCE_LEN: usize = 24;
const FORMAT: u8 = 1;

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
    cipher: XChaCha20Poly1305,
    /// How long a link stays valid.
    ttl: Duration,
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
        Ok(Self {
            cipher: XChaCha20Poly1305::new(Key::from_slice(&key)),
            ttl,
        })
    }

    /// A signer with a fresh random key (tests, and `freesky playlist` which serves nothing).
    pub fn ephemeral(ttl: Duration) -> Self {
        Self {
            cipher: XChaCha20Poly1305::new(&XChaCha20Poly1305::generate_key(&mut OsRng)),
            ttl,
        }
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
        let item_key = XChaCha20Poly1305::generate_key(&mut OsRng);
        let mut plain = Vec::with_capacity(64 + base.as_str().len());
        plain.push(FORMAT);
        plain.extend_from_slice(&(unix_now() + self.ttl.as_secs()).to_be_bytes());
        plain.extend_from_slice(&item_key);
        put(&mut plain, service.as_bytes());
        put(&mut plain, channel.as_bytes());
        put(&mut plain, base.as_str().as_bytes());
        // Within MAX_HEADER_BYTES, so fewer than 2^16 headers.
        plain.extend_from_slice(&u16::try_from(headers.len()).unwrap_or(0).to_be_bytes());
        for (name, value) in headers {
            put(&mut plain, name.as_bytes());
            put(&mut plain, value.as_bytes());
        }
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = self
            .cipher
            .encrypt(&nonce, plain.as_slice())
            .expect("encryption of a small buffer cannot fail");
        let mut raw = Vec::with_capacity(XNONCE_LEN + sealed.len());
        raw.extend_from_slice(&nonce);
        raw.extend_from_slice(&sealed);
        Ok(PlaylistSealer {
            context: URL_SAFE_NO_PAD.encode(raw),
            items: item_cipher(&item_key),
            counter: 0,
            exhausted: false,
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
        if expires < unix_now() {
            return Err("proxy link has expired; reload the channel's playlist");
        }
        let item_key: [u8; 32] = r.array().ok_or(MALFORMED)?;
        let service = r.string().ok_or(MALFORMED)?;
        let channel = r.string().ok_or(MALFORMED)?;
        let base = r.string().ok_or(MALFORMED)?;
        let count = u16::from_be_bytes(r.array().ok_or(MALFORMED)?);
        let mut headers = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            headers.push((r.string().ok_or(MALFORMED)?, r.string().ok_or(MALFORMED)?));
        }

        let raw = URL_SAFE_NO_PAD.decode(item).map_err(|_| MALFORMED)?;
        if raw.len() <= 4 {
            return Err(MALFORMED);
        }
        let (counter, sealed) = raw.split_at(4);
        let mut sealed = sealed.to_vec();
        let plain = item_cipher(&item_key)
            .open_in_place(item_nonce(counter), Aad::empty(), &mut sealed)
            .map_err(|_| FORGED)?;
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
    let fixed = public_base.len() + "/proxy/".len() + sealer.context.len() + 48;
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
    /// Nonce of the next item. A playlist body is bounded by `server.max_body_bytes`,
    /// and every URI takes at least two bytes of it, so a playlist of 2^32 URIs would be
    /// an 8 GiB body; past that the sealer refuses rather than reuse a nonce.
    counter: u32,
    exhausted: bool,
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
        if self.exhausted {
            // Unreachable within max_body_bytes; a broken link beats a reused nonce.
            out.push_str("exhausted");
            return;
        }
        let counter = self.counter.to_be_bytes();
        match self.counter.checked_add(1) {
            Some(next) => self.counter = next,
            None => self.exhausted = true,
        }
        let buf = &mut self.buf;
        buf.clear();
        buf.extend_from_slice(&counter);
        buf.push(kind.code());
        buf.extend_from_slice(reference.as_bytes());
        let tag = self
            .items
            .seal_in_place_separate_tag(item_nonce(&counter), Aad::empty(), &mut buf[4..])
            .expect("sealing a buffer shorter than 2^36 bytes cannot fail");
        buf.extend_from_slice(tag.as_ref());
        URL_SAFE_NO_PAD.encode_string(&buf[..], out);
    }
}

fn item_cipher(key: &[u8]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("a 32-byte key fits AES-256"))
}

fn item_nonce(counter: &[u8]) -> Nonce {
    let mut n = [0u8; 12];
    n[8..].copy_from_slice(counter);
    Nonce::assume_unique_for_key(n)
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

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
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
        // Items of one playlist are all distinct, even for the same reference.
        assert_ne!(a.item("seg1.ts", Kind::Segment), item_a);
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
        let s = Signer::ephemeral(Duration::ZERO);
        let token = s
            .seal(
                "Svc",
                &Url::parse("http://x.example/").unwrap(),
                Kind::Playlist,
                &vec![],
            )
            .unwrap();
        // expires == now: still valid this second; forge an older one via a fresh signer is not possible,
        // so check the boundary through `open` after the second has passed.
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(
            open(&s, &token).unwrap_err(),
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
