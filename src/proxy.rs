//! Signed proxy links. Every URL freesky hands out for an upstream resource is
//! `/proxy/{token}/{item}/{name}`:
//!
//! - `token` names where a playlist lives: the service, the lineup channel (and whether
//!   its links fail over to the channel's other sources), the
//!   *directory* of the playlist's upstream URL (scheme, userinfo, host, port and the path
//!   up to its last `/`; never the file name or query) and the stream's headers. It
//!   carries no expiry, so every link of one playlist, every render of it, every playlist
//!   of the same directory (a master and its variants, a playlist whose query token
//!   rotates) and every instance with the same key get the same token: what a load
//!   balancer hashes on, and sealed once per rewrite.
//! - `item` is one URI, written relative to the token's directory: as the playlist wrote
//!   it when it is relative (the usual `seg-1042.ts`), an absolute URL under the same
//!   directory or host cut to its relative form, anything else whole; with its kind and
//!   the link's expiry. An item is authenticated together with its token, so it opens
//!   under that token only.
//!
//! Both parts are sealed the same way, a deterministic authenticated encryption in the
//! SIV style: the tag is an HMAC-SHA256 of the plaintext (cut to 16 bytes for tokens, 12
//! for items), and the plaintext is encrypted with ChaCha20 under the tag as nonce. The
//! keys are derived from the server key kept in `state_dir`, one per use.
//!
//! Links are deterministic: players (hls.js from 1.6 on) refuse a live playlist whose
//! reload gives a media sequence number another URI, and shared HTTP caches can only
//! share a segment whose link does not change. So nothing random goes in: the expiry is
//! rounded up to a bucket boundary (a link lives at least `link_ttl`), and the nonce is
//! the tag of the plaintext itself: the same plaintext gives the same link on every render
//! and every instance with the same key, distinct plaintexts get distinct nonces (but for
//! a collision of probability about n^2 / 2^97 among n items), and a link reveals only
//! whether two plaintexts are equal. Item links change when the expiry bucket turns,
//! all links when the key rotates.
//!
//! A link that was not made with this server's key, was altered, mixes the parts of two
//! links of different directories, or has expired does not open, so `/proxy/...` is not
//! an open proxy; no server-side table is needed (instances sharing `proxy.key` accept
//! each other's links) and clients never see upstream URLs, paths or headers. Service
//! credentials are never in a link: they are added when fetching.
//!
//! Every link repeats its token, so a rewrite's output grows with the number of URIs
//! times the token's size. Both are bounded: the URL and headers that go into a token
//! ([`MAX_URL_BYTES`], [`MAX_HEADER_BYTES`]), and the output of one rewrite
//! ([`MAX_REWRITTEN_BYTES`]); the number of URIs per playlist is capped where playlists
//! are fetched (`cache`). A token holds a directory, not the playlist's whole URL, so a
//! long query (the usual shape of a long CDN URL) is never repeated per link.

use std::borrow::Cow;
use std::path::Path;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chacha20::cipher::{KeyIvInit, StreamCipher};
use chacha20::ChaCha20;
use chacha20poly1305::aead::rand_core::RngCore;
use chacha20poly1305::aead::OsRng;
use ring::hmac;
use url::{Position, Url};

use crate::hls::UriKind;
use crate::model::Headers;

/// Bumped whenever a plaintext layout changes; 2 sealed a whole context per playlist,
/// expiry included, and each item under a key derived from it; 3 had no failover byte
/// (a link failed over whenever it named a channel). Links of format 3 still open, so
/// instances of both versions sharing a key accept each other's links during an upgrade.
const FORMAT: u8 = 4;
/// The format before the failover byte (see [`FORMAT`]).
const FORMAT_3: u8 = 3;
/// Expiry buckets are `link_ttl` divided by this: links made within one bucket are
/// equal, and a link lives at most one bucket longer than `link_ttl`.
const BUCKETS_PER_TTL: u32 = 8;
/// A token's tag: made once per rewrite, so its length costs little.
const TOKEN_TAG: usize = 16;
/// An item's tag: 96 bits, so a forged item opens with probability 2^-96 per try; also
/// ChaCha20's nonce length.
const ITEM_TAG: usize = 12;
const NONCE_LEN: usize = 12;

/// The longest playlist URL a token carries (and a playlist may be fetched from):
/// far above real CDN URLs with tokens, far below what would make each link huge.
pub const MAX_URL_BYTES: usize = 4096;
/// The most bytes of stream headers (names and values) a token carries.
pub const MAX_HEADER_BYTES: usize = 8192;
/// The most a rewritten playlist may take; past it the rewrite is refused rather than
/// holding a copy of the token per URI in memory.
pub const MAX_REWRITTEN_BYTES: usize = 64 << 20;

const MALFORMED: &str = "malformed proxy token";
const FORGED: &str = "proxy token signature does not match";

/// Why links cannot be made for a playlist.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LinkError {
    #[error("the playlist URL is {len} bytes long; proxy links carry URLs of at most {max} bytes")]
    UrlTooLong { len: usize, max: usize },
    #[error(
        "the playlist lists a URI of {len} bytes; proxy links carry URIs of at most {max} bytes"
    )]
    UriTooLong { len: usize, max: usize },
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
    /// The lineup channel the link was handed out for ("" when none: then no failover).
    /// A pinned link names its channel too: an account's tag (`?a=`) is checked
    /// against it.
    pub channel: String,
    /// Whether the link may fail over to the channel's other sources (false when the
    /// stream was pinned to one service: `?service=`, an account limited to services).
    pub failover: bool,
    /// The resolved upstream URL.
    pub url: String,
    pub kind: Kind,
    pub headers: Headers,
    /// Unix seconds after which the link is refused.
    pub expires: u64,
}

/// The lineup channel a playlist's links are handed out for, and whether they may fail
/// over to its other sources. A bare `&str` is a channel that fails over (`""`: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkChannel<'a> {
    pub id: &'a str,
    pub failover: bool,
}

impl<'a> LinkChannel<'a> {
    /// Channel `id` played from one service only: its links name it (so an account's
    /// tag is checked against it) but never fail over.
    pub fn pinned(id: &'a str) -> Self {
        Self {
            id,
            failover: false,
        }
    }
}

impl<'a> From<&'a str> for LinkChannel<'a> {
    fn from(id: &'a str) -> Self {
        Self {
            id,
            failover: !id.is_empty(),
        }
    }
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

/// Deterministic authenticated encryption of one kind of link part (SIV style, see the
/// module doc): the tag authenticates a fixed-length prefix and the plaintext, and is
/// the nonce the plaintext is encrypted under.
struct Siv {
    mac: hmac::Key,
    cipher: chacha20::Key,
}

impl Siv {
    /// The keys for `label`, derived from the server key.
    fn derive(master: &hmac::Key, label: &str) -> Self {
        let derive = |purpose: &str| hmac::sign(master, format!("{label} {purpose}").as_bytes());
        Self {
            mac: hmac::Key::new(hmac::HMAC_SHA256, derive("mac").as_ref()),
            cipher: *chacha20::Key::from_slice(derive("cipher").as_ref()),
        }
    }

    /// The MAC state after `prefix`: computed once for all the items of a token.
    fn keyed(&self, prefix: &[u8]) -> hmac::Context {
        let mut mac = hmac::Context::with_key(&self.mac);
        mac.update(prefix);
        mac
    }

    fn tag(mac: &hmac::Context, plain: &[u8]) -> hmac::Tag {
        let mut mac = mac.clone();
        mac.update(plain);
        mac.sign()
    }

    fn apply_keystream(&self, nonce: &[u8], buf: &mut [u8]) {
        let nonce = chacha20::Nonce::from_slice(&nonce[..NONCE_LEN]);
        ChaCha20::new(&self.cipher, nonce).apply_keystream(buf);
    }

    /// Seals `buf` in place: its first `tag_len` bytes (reserved by the caller) become
    /// the tag, the rest (the plaintext) the ciphertext; `mac` is [`Self::keyed`].
    fn seal_in_place(&self, tag_len: usize, mac: &hmac::Context, buf: &mut [u8]) {
        let (head, plain) = buf.split_at_mut(tag_len);
        let tag = Self::tag(mac, plain);
        head.copy_from_slice(&tag.as_ref()[..tag_len]);
        self.apply_keystream(head, plain);
    }

    /// Opens `sealed` in place: the plaintext, or `None` when it was not sealed with
    /// these keys and `mac`'s prefix (or was altered).
    fn open_in_place<'a>(
        &self,
        tag_len: usize,
        mac: &hmac::Context,
        sealed: &'a mut [u8],
    ) -> Option<&'a [u8]> {
        if sealed.len() < tag_len {
            return None;
        }
        let (tag, body) = sealed.split_at_mut(tag_len);
        self.apply_keystream(tag, body);
        let body: &'a [u8] = body;
        let expected = Self::tag(mac, body);
        same(&expected.as_ref()[..tag_len], tag).then_some(body)
    }
}

/// Compares two tags without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The subkeys of one server key.
struct Keys {
    /// Seals tokens, the per-directory first part of links.
    tokens: Siv,
    /// Seals items, each bound to its token's tag.
    items: Siv,
    /// Seals the opaque links of other routes (`/logos/`), never mixed with proxy links.
    blobs: Siv,
    /// Tags the playlist links handed to a viewer account (`?a=`), so that every
    /// instance sharing the key knows them.
    account_tags: hmac::Key,
}

impl Keys {
    /// One independent subkey per use of the server key, so that no key serves two
    /// primitives.
    fn derive(master: &[u8]) -> Self {
        let master = hmac::Key::new(hmac::HMAC_SHA256, master);
        Self {
            tokens: Siv::derive(&master, "freesky proxy token"),
            items: Siv::derive(&master, "freesky proxy item"),
            blobs: Siv::derive(&master, "freesky blob link"),
            account_tags: hmac::Key::new(
                hmac::HMAC_SHA256,
                hmac::sign(&master, b"freesky account tag").as_ref(),
            ),
        }
    }

    /// The MAC state of the items of the token whose tag is `tag`: the tag padded to one
    /// SHA-256 block, so that it is hashed once per token, not once per item.
    fn item_mac(&self, tag: &[u8; TOKEN_TAG]) -> hmac::Context {
        let mut block = [0; 64];
        block[..TOKEN_TAG].copy_from_slice(tag);
        self.items.keyed(&block)
    }
}

/// Seals and opens proxy links.
pub struct Signer {
    /// The server key's subkeys: every link is sealed with them.
    keys: Keys,
    /// The subkeys of the key before a rotation: links sealed with it still open (until
    /// they expire), so players keep playing across the change.
    previous: Option<Keys>,
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
                let key = random_key().to_vec();
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
        Self::from_key(&random_key(), ttl)
    }

    /// A signer sealing with `current` that also opens links sealed with `previous`
    /// (the key before a rotation), for instances that share a key file.
    pub fn from_keys(current: &[u8; 32], previous: Option<&[u8; 32]>, ttl: Duration) -> Self {
        let mut signer = Self::from_key(current, ttl);
        signer.previous = previous.map(|k| Keys::derive(k));
        signer
    }

    fn from_key(master: &[u8], ttl: Duration) -> Self {
        Self {
            keys: Keys::derive(master),
            previous: None,
            ttl,
            clock: std::sync::Arc::new(crate::clock::SystemClock),
        }
    }

    /// The key of the account tags of playlist links (`?a=`): derived from the link
    /// key, so instances sharing it accept each other's tagged links.
    pub fn account_tag_key(&self) -> hmac::Key {
        self.keys.account_tags.clone()
    }

    /// This signer with link expiry measured against `clock`.
    pub fn with_clock(mut self, clock: std::sync::Arc<dyn crate::clock::Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The expiry of links made at `now`: `now + ttl` rounded up to a bucket boundary,
    /// so that every render within one bucket seals the same items.
    fn expiry(&self, now: u64) -> u64 {
        let bucket = (self.ttl / BUCKETS_PER_TTL).as_secs().max(1);
        now.saturating_add(self.ttl.as_secs())
            .div_ceil(bucket)
            .saturating_mul(bucket)
    }

    /// The sealer of the links of one playlist fetched from `base` for `service`, as a
    /// source of lineup channel `channel` ("" for none).
    pub fn sealer<'c>(
        &self,
        service: &str,
        channel: impl Into<LinkChannel<'c>>,
        base: &Url,
        headers: &Headers,
    ) -> Result<PlaylistSealer<'_>, LinkError> {
        self.sealer_at(
            self.clock.unix_secs(),
            service,
            channel.into(),
            base,
            headers,
        )
    }

    fn sealer_at(
        &self,
        now: u64,
        service: &str,
        channel: LinkChannel<'_>,
        base: &Url,
        headers: &Headers,
    ) -> Result<PlaylistSealer<'_>, LinkError> {
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
        let dir = Directory::of(base);
        let mut plain = Vec::with_capacity(32 + dir.dir.len() + len + 4 * headers.len());
        put(&mut plain, service.as_bytes());
        put(&mut plain, channel.id.as_bytes());
        plain.push(u8::from(channel.failover));
        put(&mut plain, dir.dir.as_bytes());
        put_len(&mut plain, headers.len());
        for (name, value) in headers {
            put(&mut plain, name.as_bytes());
            put(&mut plain, value.as_bytes());
        }
        let (token, tag) = self.seal_token(&plain);
        // Past 2106 (or with an absurd ttl) links live until then.
        let expiry = u32::try_from(self.expiry(now)).unwrap_or(u32::MAX);
        Ok(PlaylistSealer {
            items: &self.keys.items,
            mac: self.keys.item_mac(&tag),
            token,
            expiry: expiry.to_be_bytes(),
            dir,
            buf: Vec::new(),
        })
    }

    /// The token (and its tag) of a plaintext without its format byte.
    fn seal_token(&self, body: &[u8]) -> (String, [u8; TOKEN_TAG]) {
        let mut raw = Vec::with_capacity(TOKEN_TAG + 1 + body.len());
        raw.extend_from_slice(&[0; TOKEN_TAG]);
        raw.push(FORMAT);
        raw.extend_from_slice(body);
        let tokens = &self.keys.tokens;
        tokens.seal_in_place(TOKEN_TAG, &tokens.keyed(&[]), &mut raw);
        let mut tag = [0; TOKEN_TAG];
        tag.copy_from_slice(&raw[..TOKEN_TAG]);
        (URL_SAFE_NO_PAD.encode(raw), tag)
    }

    /// The `{token}/{item}` path of a link to `url` itself (not from a playlist).
    pub fn seal(
        &self,
        service: &str,
        url: &Url,
        kind: Kind,
        headers: &Headers,
    ) -> Result<String, LinkError> {
        let mut sealer = self.sealer(service, "", url, headers)?;
        let item = sealer.item(url.as_str(), kind);
        Ok(format!("{}/{item}", sealer.token))
    }

    /// The target of a link's two sealed parts, or why it is refused.
    pub fn open(&self, token: &str, item: &str) -> Result<Target, &'static str> {
        self.open_at(self.clock.unix_secs(), token, item)
    }

    fn open_at(&self, now: u64, token: &str, item: &str) -> Result<Target, &'static str> {
        let token = URL_SAFE_NO_PAD.decode(token).map_err(|_| MALFORMED)?;
        let item = URL_SAFE_NO_PAD.decode(item).map_err(|_| MALFORMED)?;
        match &self.previous {
            // Opening works in place: the previous key gets its own copies.
            Some(previous) => match Self::open_with(&self.keys, now, token.clone(), item.clone()) {
                Err(FORGED) => Self::open_with(previous, now, token, item),
                other => other,
            },
            None => Self::open_with(&self.keys, now, token, item),
        }
    }

    /// Opens the decoded parts of a link with one key's subkeys.
    fn open_with(
        keys: &Keys,
        now: u64,
        mut raw: Vec<u8>,
        mut item: Vec<u8>,
    ) -> Result<Target, &'static str> {
        if raw.len() <= TOKEN_TAG {
            return Err(MALFORMED);
        }
        let tag: [u8; TOKEN_TAG] = raw[..TOKEN_TAG].try_into().map_err(|_| MALFORMED)?;
        let plain = keys
            .tokens
            .open_in_place(TOKEN_TAG, &keys.tokens.keyed(&[]), &mut raw)
            .ok_or(FORGED)?;
        let mut r = Reader(plain);
        let format = match r.take(1) {
            Some(&[f]) if f == FORMAT || f == FORMAT_3 => f,
            _ => return Err(MALFORMED),
        };
        let service = r.string().ok_or(MALFORMED)?;
        let channel = r.string().ok_or(MALFORMED)?;
        let failover = if format == FORMAT_3 {
            !channel.is_empty()
        } else {
            match r.take(1).ok_or(MALFORMED)? {
                [0] => false,
                [1] => true,
                _ => return Err(MALFORMED),
            }
        };
        let dir = r.string().ok_or(MALFORMED)?;
        let count = r.length().ok_or(MALFORMED)?;
        // Each header takes at least two bytes: a count past that is not from us.
        if count > r.0.len() / 2 {
            return Err(MALFORMED);
        }
        let mut headers = Vec::with_capacity(count);
        for _ in 0..count {
            headers.push((r.string().ok_or(MALFORMED)?, r.string().ok_or(MALFORMED)?));
        }
        if !r.0.is_empty() {
            return Err(MALFORMED);
        }

        if item.len() < ITEM_TAG + 5 {
            return Err(MALFORMED);
        }
        let plain = keys
            .items
            .open_in_place(ITEM_TAG, &keys.item_mac(&tag), &mut item)
            .ok_or(FORGED)?;
        let (expires, rest) = plain.split_at(4);
        let expires = u64::from(u32::from_be_bytes(
            expires.try_into().map_err(|_| MALFORMED)?,
        ));
        if expires < now {
            return Err("proxy link has expired; reload the channel's playlist");
        }
        let (&code, reference) = rest.split_first().ok_or(MALFORMED)?;
        let kind = Kind::from_code(code).ok_or(MALFORMED)?;
        let reference = std::str::from_utf8(reference).map_err(|_| MALFORMED)?;
        let url = Url::parse(&dir)
            .and_then(|d| d.join(reference))
            .map_err(|_| MALFORMED)?;
        Ok(Target {
            service,
            channel,
            failover,
            url: url.into(),
            kind,
            headers,
            expires,
        })
    }

    /// `plain` sealed as one URL-safe link part for routes other than `/proxy/` (the
    /// logos): deterministic (the same plaintext, the same text) and without expiry,
    /// under a key of its own, so it opens only with [`Self::open_blob`].
    pub fn seal_blob(&self, plain: &[u8]) -> String {
        let mut raw = Vec::with_capacity(TOKEN_TAG + plain.len());
        raw.extend_from_slice(&[0; TOKEN_TAG]);
        raw.extend_from_slice(plain);
        let blobs = &self.keys.blobs;
        blobs.seal_in_place(TOKEN_TAG, &blobs.keyed(&[]), &mut raw);
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// The plaintext of a [`Self::seal_blob`] text, or `None` when it was not sealed
    /// with this server's key or was altered.
    pub fn open_blob(&self, sealed: &str) -> Option<Vec<u8>> {
        let raw = URL_SAFE_NO_PAD.decode(sealed).ok()?;
        std::iter::once(&self.keys)
            .chain(self.previous.as_ref())
            .find_map(|keys| {
                let mut raw = raw.clone();
                let plain =
                    keys.blobs
                        .open_in_place(TOKEN_TAG, &keys.blobs.keyed(&[]), &mut raw)?;
                Some(plain.to_vec())
            })
    }

    /// A token sealed from an arbitrary plaintext (after the format byte), and an item
    /// `seg.ts` under it: for fuzzing the reading of token plaintexts, which sealed links
    /// never reach with anything but what `sealer` wrote. Not an API.
    #[doc(hidden)]
    pub fn seal_raw_token(&self, body: &[u8]) -> (String, String) {
        let (token, tag) = self.seal_token(body);
        let mut sealer = PlaylistSealer {
            items: &self.keys.items,
            mac: self.keys.item_mac(&tag),
            token,
            expiry: u32::MAX.to_be_bytes(),
            dir: Directory::whole(),
            buf: Vec::new(),
        };
        let item = sealer.item("seg.ts", Kind::Segment);
        (sealer.token, item)
    }

    /// The plaintext of a token (after the format byte), to write fuzzing seeds. Not an API.
    #[doc(hidden)]
    pub fn open_raw_token(&self, token: &str) -> Option<Vec<u8>> {
        let mut raw = URL_SAFE_NO_PAD.decode(token).ok()?;
        let tokens = &self.keys.tokens;
        let plain = tokens.open_in_place(TOKEN_TAG, &tokens.keyed(&[]), &mut raw)?;
        plain.get(1..).map(<[u8]>::to_vec)
    }
}

fn random_key() -> [u8; 32] {
    let mut key = [0; 32];
    OsRng.fill_bytes(&mut key);
    key
}

/// `body`, fetched from `playlist_url`, with every fetchable URI replaced by a link
/// under `public_base` (`http://host:port`) that carries `headers`. Refused when the
/// output would pass [`MAX_REWRITTEN_BYTES`].
pub fn rewrite_playlist<'c>(
    signer: &Signer,
    public_base: &str,
    service: &str,
    channel: impl Into<LinkChannel<'c>>,
    headers: &Headers,
    playlist_url: &Url,
    body: &str,
) -> Result<String, LinkError> {
    let mut sealer = signer.sealer(service, channel, playlist_url, headers)?;
    // Sized from what the links will take (each about its fixed part plus 4/3 of its
    // URI), never more than the output may grow to: an untrusted count must not
    // reserve memory by itself. The URIs are counted high, as the lines (twice a
    // media playlist's): counting them exactly is a pass over the body that costs
    // as much as copying it, and capacity reserved but never written takes no memory.
    let uris = body.bytes().filter(|&b| b == b'\n').count() + 1;
    let fixed = public_base.len() + "/proxy/".len() + sealer.token.len() + 40;
    let capacity = uris
        .saturating_mul(fixed)
        .saturating_add(body.len().saturating_mul(2))
        .min(MAX_REWRITTEN_BYTES);
    let mut over = false;
    let mut too_long = 0;
    let out = crate::hls::rewrite_refs_sized(body, capacity, |out, reference, kind| {
        if over {
            return false;
        }
        if !crate::hls::is_fetchable_ref(reference) {
            if crate::hls::is_passed_ref(reference) {
                return false;
            }
            // A scheme freesky neither fetches nor passes on: nothing for the player.
            out.push_str("data:,");
            return true;
        }
        if out.len() > MAX_REWRITTEN_BYTES {
            over = true;
            return false;
        }
        let reference = reference.trim();
        // A link to it would be longer than a request freesky takes back.
        if reference.len() > MAX_URL_BYTES {
            too_long = too_long.max(reference.len());
            return false;
        }
        let kind = Kind::from(kind);
        out.push_str(public_base);
        out.push_str("/proxy/");
        out.push_str(&sealer.token);
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
    if too_long > 0 {
        return Err(LinkError::UriTooLong {
            len: too_long,
            max: MAX_URL_BYTES,
        });
    }
    Ok(out)
}

/// Seals the URIs of one playlist (see the module doc).
pub struct PlaylistSealer<'a> {
    items: &'a Siv,
    /// The sealed token, the first part of every link of this playlist.
    token: String,
    /// The item MAC state after the token's tag, which every item's tag covers: an
    /// item opens under its token only.
    mac: hmac::Context,
    /// The expiry of every item sealed here (unix seconds).
    expiry: [u8; 4],
    /// The playlist's URL and its directory, which items are written relative to.
    dir: Directory,
    /// Reused for every item, so sealing one allocates only when it outgrows the last.
    buf: Vec<u8>,
}

impl PlaylistSealer<'_> {
    /// The sealed token, the first part of every link of this playlist.
    pub fn context(&self) -> &str {
        &self.token
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
        buf.extend_from_slice(&[0; ITEM_TAG]);
        buf.extend_from_slice(&self.expiry);
        buf.push(kind.code());
        buf.extend_from_slice(self.dir.relative(reference).as_bytes());
        self.items.seal_in_place(ITEM_TAG, &self.mac, buf);
        URL_SAFE_NO_PAD.encode_string(&buf[..], out);
    }
}

/// A playlist URL and the directory its links' tokens carry: the URL up to the last
/// `/` of its path, which is all that resolving a relative reference with a path of its
/// own needs (a reference that is empty or starts with `?` or `#` also needs the file
/// name and query: such references are resolved when sealed).
struct Directory {
    /// The playlist URL (`None`: references are kept as they are and `dir` is the
    /// whole URL, for a URL without a hierarchical path).
    base: Option<Url>,
    /// The prefix of `base` up to its path's last `/`.
    dir: String,
    /// The length of the prefix of `dir` before its path (scheme, userinfo, host, port).
    origin: usize,
}

impl Directory {
    fn of(base: &Url) -> Self {
        let s = base.as_str();
        let (path_start, path_end) = (
            base[..Position::BeforePath].len(),
            base[..Position::AfterPath].len(),
        );
        match s[path_start..path_end].rfind('/') {
            Some(last) if !base.cannot_be_a_base() => Self {
                dir: s[..path_start + last + 1].to_string(),
                origin: path_start,
                base: Some(base.clone()),
            },
            _ => Self {
                dir: s.to_string(),
                origin: 0,
                base: None,
            },
        }
    }

    /// No URL: references are sealed as written (fuzzing seeds).
    fn whole() -> Self {
        Self {
            base: None,
            dir: String::new(),
            origin: 0,
        }
    }

    /// `reference`, written so that resolving it against `dir` gives what resolving it
    /// against the playlist URL gives, and no longer than it was.
    fn relative<'r>(&self, reference: &'r str) -> Cow<'r, str> {
        let Some(base) = &self.base else {
            return Cow::Borrowed(reference);
        };
        if needs_file(reference, base.scheme()) {
            return match base.join(reference) {
                Ok(url) => Cow::Owned(self.shorten(url.as_str()).to_string()),
                Err(_) => Cow::Borrowed(reference),
            };
        }
        Cow::Borrowed(self.shorten(reference))
    }

    /// An absolute URL `s` under the directory or its host, cut to the relative form
    /// that resolves to it against the directory; anything else as it is.
    fn shorten<'s>(&self, s: &'s str) -> &'s str {
        // The parser drops tabs and line breaks anywhere, which could turn a cut-off
        // `/\t/x` into `//x` (another host): such URLs are kept whole.
        if s.bytes().any(|b| matches!(b, b'\t' | b'\n' | b'\r')) {
            return s;
        }
        if let Some(rest) = s.strip_prefix(self.dir.as_str()) {
            if in_directory(rest) {
                return rest;
            }
        }
        if let Some(rest) = s.strip_prefix(&self.dir[..self.origin]) {
            let b = rest.as_bytes();
            if b.first() == Some(&b'/') && !matches!(b.get(1), Some(b'/' | b'\\')) {
                return rest;
            }
        }
        s
    }
}

/// True when resolving `reference` against a URL of `scheme` keeps that URL's file name
/// (and query): an empty reference, a query or fragment alone, the same with the URL's
/// own scheme before it (`http:?q` is relative in an `http` URL), or anything with a tab
/// or line break, which the URL parser drops wherever they are.
fn needs_file(reference: &str, scheme: &str) -> bool {
    let b = reference.as_bytes();
    if b.iter().any(|&c| matches!(c, b'\t' | b'\n' | b'\r')) {
        return true;
    }
    // The parser skips control characters and spaces at either end.
    let start = b.iter().position(|&c| c > b' ').unwrap_or(b.len());
    let end = b.iter().rposition(|&c| c > b' ').map_or(start, |i| i + 1);
    let mut r = &b[start..end.max(start)];
    if r.first().is_some_and(u8::is_ascii_alphabetic) {
        let end = r
            .iter()
            .position(|&c| !(c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.')));
        if let Some(colon) = end.filter(|&i| r[i] == b':') {
            if !r[..colon].eq_ignore_ascii_case(scheme.as_bytes()) {
                // Another scheme: an absolute URL.
                return false;
            }
            r = &r[colon + 1..];
        }
    }
    matches!(r.first(), None | Some(b'?' | b'#'))
}

/// True when `rest`, the part of a URL after its directory, is read back relative to
/// that directory: not a path from the root (`/`, or `\` which special URLs read as
/// `/`), nothing the parser would skip at its start, and no scheme (a `:` in its first
/// segment). A query or fragment alone is fine: the directory has neither.
fn in_directory(rest: &str) -> bool {
    let b = rest.as_bytes();
    if b.first()
        .is_some_and(|&c| c <= b' ' || c == b'/' || c == b'\\')
    {
        return false;
    }
    let first_segment = b
        .iter()
        .position(|&c| matches!(c, b'/' | b'\\' | b'?' | b'#'))
        .unwrap_or(b.len());
    !b[..first_segment].contains(&b':')
}

/// Appends a LEB128 length.
fn put_len(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let low = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(low);
            return;
        }
        out.push(low | 0x80);
    }
}

/// Appends `bytes` with a LEB128 length prefix.
fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    put_len(out, bytes.len());
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

    fn length(&mut self) -> Option<usize> {
        let mut n: usize = 0;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.0.split_first()?;
            self.0 = rest;
            n |= usize::from(b & 0x7f).checked_shl(shift)?;
            if b & 0x80 == 0 {
                return Some(n);
            }
        }
        None
    }

    fn string(&mut self) -> Option<String> {
        let len = self.length()?;
        let bytes = self.take(len)?;
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
    let mut f = crate::store::create_private_file(path)?;
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
        let (token, item) = link.split_once('/').unwrap_or((link, ""));
        s.open(token, item)
    }

    #[test]
    fn items_of_one_playlist_do_not_open_with_another_token() {
        let s = Signer::ephemeral(Duration::from_secs(60));
        let base = Url::parse("https://cdn.example/live/index.m3u8?k=1").unwrap();
        let mut a = s.sealer("A", "", &base, &vec![]).unwrap();
        let mut b = s.sealer("B", "", &base, &vec![]).unwrap();
        let item_a = a.item("seg1.ts", Kind::Segment);
        let item_b = b.item("../../other/secret.ts", Kind::Segment);
        let t = s.open(a.context(), &item_a).unwrap();
        assert_eq!(t.url, "https://cdn.example/live/seg1.ts");
        assert_eq!((t.service.as_str(), t.kind), ("A", Kind::Segment));
        assert_eq!(s.open(a.context(), &item_b).unwrap_err(), FORGED);
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
        // Within one expiry bucket, later renders give the same links too; the token
        // stays the same across buckets.
        let now = unix_now();
        let bucket = (ttl / BUCKETS_PER_TTL).as_secs();
        let start = now - now % bucket;
        let seal = |at: u64, reference: &str, kind: Kind| {
            let mut sealer = s.sealer_at(at, "S", "ch".into(), &base, &headers).unwrap();
            let item = sealer.item(reference, kind);
            format!("{}/{item}", sealer.context())
        };
        let token = |link: &str| link.split_once('/').unwrap().0.to_string();
        let item = |link: &str| link.split_once('/').unwrap().1.to_string();
        let link = seal(start + 1, "seg1.ts", Kind::Segment);
        assert_eq!(seal(start + bucket - 1, "seg1.ts", Kind::Segment), link);
        let next_bucket = seal(start + bucket + 1, "seg1.ts", Kind::Segment);
        assert_ne!(next_bucket, link);
        assert_eq!(token(&next_bucket), token(&link));
        // A different URI or kind is a different item of the same token.
        let other_uri = seal(start + 1, "seg2.ts", Kind::Segment);
        let other_kind = seal(start + 1, "seg1.ts", Kind::Map);
        assert_eq!(token(&other_uri), token(&link));
        assert_ne!(item(&other_uri), item(&link));
        assert_ne!(item(&other_kind), item(&link));
        assert_eq!(s.open_at(start + 1, "", "").unwrap_err(), MALFORMED);
        let t = open(&s, &other_kind).unwrap();
        assert_eq!(
            (t.kind, t.url.as_str()),
            (Kind::Map, "https://cdn.example/live/seg1.ts")
        );
        assert_eq!((t.channel.as_str(), &t.headers), ("ch", &headers));
        assert!(t.failover);
    }

    #[test]
    fn a_pinned_link_names_its_channel_but_does_not_fail_over() {
        let dir = tempfile::tempdir().unwrap();
        let s = Signer::load_or_create(dir.path(), Duration::from_secs(3600)).unwrap();
        let base = Url::parse("https://cdn.example/live/master.m3u8").unwrap();
        let link = |channel: LinkChannel<'_>| {
            let mut sealer = s.sealer("S", channel, &base, &vec![]).unwrap();
            let item = sealer.item("v1/index.m3u8", Kind::Playlist);
            format!("{}/{item}", sealer.context())
        };
        let pinned = open(&s, &link(LinkChannel::pinned("ch"))).unwrap();
        assert_eq!((pinned.channel.as_str(), pinned.failover), ("ch", false));
        let free = open(&s, &link("ch".into())).unwrap();
        assert_eq!((free.channel.as_str(), free.failover), ("ch", true));
        let none = open(&s, &link("".into())).unwrap();
        assert_eq!((none.channel.as_str(), none.failover), ("", false));
        // A link of the format before the failover byte (an older instance sharing the
        // key) still opens, failing over when it names a channel.
        let mut plain = vec![FORMAT_3];
        put(&mut plain, b"S");
        put(&mut plain, b"ch");
        put(&mut plain, Directory::of(&base).dir.as_bytes());
        put_len(&mut plain, 0);
        let mut raw = vec![0; TOKEN_TAG];
        raw.extend_from_slice(&plain);
        let tokens = &s.keys.tokens;
        tokens.seal_in_place(TOKEN_TAG, &tokens.keyed(&[]), &mut raw);
        let mut tag = [0; TOKEN_TAG];
        tag.copy_from_slice(&raw[..TOKEN_TAG]);
        let mut sealer = s.sealer("S", "ch", &base, &vec![]).unwrap();
        sealer.mac = s.keys.item_mac(&tag);
        let item = sealer.item("v1/index.m3u8", Kind::Playlist);
        let old = open(&s, &format!("{}/{item}", URL_SAFE_NO_PAD.encode(raw))).unwrap();
        assert_eq!((old.channel.as_str(), old.failover), ("ch", true));
        assert_eq!(old.url, "https://cdn.example/live/v1/index.m3u8");
    }

    #[test]
    fn one_token_per_directory_whatever_the_playlist_name_and_query() {
        let s = Signer::ephemeral(Duration::from_secs(60));
        let headers = vec![("Referer".to_string(), "https://site.example/".to_string())];
        let token = |url: &str| {
            let url = Url::parse(url).unwrap();
            s.sealer("S", "ch", &url, &headers)
                .unwrap()
                .context()
                .to_string()
        };
        let master = token("https://cdn.example/live/ch/master.m3u8?token=1");
        assert_eq!(
            token("https://cdn.example/live/ch/720p.m3u8?token=2"),
            master
        );
        assert_ne!(token("https://cdn.example/live/other/720p.m3u8"), master);
        assert_ne!(token("https://cdn2.example/live/ch/720p.m3u8"), master);
        // Service, channel and headers are part of it.
        let url = Url::parse("https://cdn.example/live/ch/master.m3u8").unwrap();
        assert_ne!(
            s.sealer("T", "ch", &url, &headers).unwrap().context(),
            master
        );
        assert_ne!(
            s.sealer("S", "c2", &url, &headers).unwrap().context(),
            master
        );
        assert_ne!(
            s.sealer("S", "ch", &url, &vec![]).unwrap().context(),
            master
        );
    }

    #[test]
    fn links_do_not_repeat_the_playlist_query_or_absolute_urls() {
        let s = Signer::ephemeral(Duration::from_secs(60));
        // A CDN URL whose query is long (a signed token): links stay short.
        let query = "x".repeat(2000);
        let base =
            Url::parse(&format!("https://cdn.example/live/ch/index.m3u8?t={query}")).unwrap();
        let body =
            "#EXTM3U\n#EXTINF:2,\nseg-1.ts\n#EXTINF:2,\nhttps://cdn.example/live/ch/seg-2.ts\n\
                    #EXTINF:2,\n?part=3\n";
        let out = rewrite_playlist(&s, "http://fs", "S", "", &vec![], &base, body).unwrap();
        let links: Vec<&str> = out
            .lines()
            .filter(|l| l.starts_with("http://fs/"))
            .collect();
        assert_eq!(links.len(), 3);
        for link in &links {
            assert!(link.len() < 200, "{} bytes: {link}", link.len());
        }
        let urls: Vec<String> = links
            .iter()
            .map(|l| {
                let path = l.trim_start_matches("http://fs/proxy/");
                open(&s, path.rsplit_once('/').unwrap().0).unwrap().url
            })
            .collect();
        assert_eq!(
            urls,
            [
                "https://cdn.example/live/ch/seg-1.ts".to_string(),
                "https://cdn.example/live/ch/seg-2.ts".to_string(),
                "https://cdn.example/live/ch/index.m3u8?part=3".to_string(),
            ]
        );
        // An absolute URL under the playlist's directory takes the room of a relative one.
        let item_len = |reference: &str| {
            s.sealer("S", "", &base, &vec![])
                .unwrap()
                .item(reference, Kind::Segment)
                .len()
        };
        assert_eq!(
            item_len("https://cdn.example/live/ch/seg-2.ts"),
            item_len("seg-2.ts")
        );
    }

    /// Items hold references relative to the token's directory: each must resolve to
    /// what the reference resolved to against the whole playlist URL.
    #[test]
    fn uris_of_other_schemes_never_reach_the_player() {
        let s = Signer::ephemeral(Duration::from_secs(60));
        let base = Url::parse("https://cdn.example/live/index.m3u8").unwrap();
        let body = "#EXTM3U\n#EXT-X-MAP:URI=\"file:///etc/passwd\"\n\
                    #EXT-X-KEY:METHOD=SAMPLE-AES,URI=\"skd://key-1\"\n\
                    #EXT-X-KEY:METHOD=AES-128,URI=\"data:text/plain;base64,AAAA\"\n\
                    #EXTINF:2,\ngopher://127.0.0.1:6379/_INFO\n#EXTINF:2,\nFTP://h/x.ts\n\
                    #EXTINF:2,\nseg.ts\n";
        let out = rewrite_playlist(&s, "http://fs", "S", "", &vec![], &base, body).unwrap();
        for gone in ["file:", "gopher:", "FTP:"] {
            assert!(!out.contains(gone), "{gone} in {out}");
        }
        assert!(out.contains("#EXT-X-MAP:URI=\"data:,\""), "{out}");
        assert!(out.contains("URI=\"skd://key-1\""), "{out}");
        assert!(out.contains("URI=\"data:text/plain;base64,AAAA\""), "{out}");
        assert_eq!(out.lines().filter(|l| *l == "data:,").count(), 2, "{out}");
        assert_eq!(
            out.lines()
                .filter(|l| l.starts_with("http://fs/proxy/"))
                .count(),
            1
        );
    }

    #[test]
    fn relative_references_resolve_as_against_the_playlist_url() {
        const PIECES: &[&str] = &[
            "a",
            "/",
            "..",
            ".",
            "?",
            "#",
            "%2e",
            ":",
            "@",
            "\\",
            "\t",
            "\n",
            " ",
            "\u{1}",
            "//h",
            "seg.ts",
            "http:",
            "https://",
            "cdn.example",
            "live",
            "é",
        ];
        let bases = [
            "https://cdn.example/live/ch/index.m3u8?t=1#f",
            "https://u:p@cdn.example:8443/live/",
            "http://[::1]/x",
            "http://cdn.example/",
        ];
        let mut refs: Vec<String> = vec![
            String::new(),
            "?q=1".into(),
            "#f".into(),
            " ?q".into(),
            "\u{1}#x".into(),
            "https://cdn.example/live/ch/seg.ts".into(),
            "https://cdn.example/live/ch//x".into(),
            "https://cdn.example/live/ch/\\x".into(),
            "https://cdn.example/live/ch/a:b".into(),
            "https://cdn.example/live/ch/?x".into(),
            "https://cdn.example/live/ch/".into(),
            "https://cdn.example/other/seg.ts".into(),
            "https://cdn.example//evil.example/x".into(),
            "https://cdn.example/\t/evil.example/x".into(),
            "https://cdn.example/live/ch/\u{1}x".into(),
            "https://u:p@cdn.example:8443/live/a/../b".into(),
            "http://[::1]/y?z".into(),
        ];
        // Every combination of up to three pieces.
        let mut combos = vec![String::new()];
        for _ in 0..3 {
            combos = combos
                .iter()
                .flat_map(|c| PIECES.iter().map(move |p| format!("{c}{p}")))
                .collect();
            refs.extend(combos.iter().cloned());
        }
        for base in bases {
            let base = Url::parse(base).unwrap();
            let dir = Directory::of(&base);
            let dir_url = Url::parse(&dir.dir).unwrap();
            for reference in &refs {
                let short = dir.relative(reference);
                let want = base.join(reference).map(String::from);
                let got = dir_url.join(&short).map(String::from);
                assert_eq!(
                    got.ok(),
                    want.ok(),
                    "{base} + {reference:?} (sealed as {short:?})"
                );
            }
        }
    }

    #[test]
    fn an_item_has_one_encoding() {
        let s = Signer::ephemeral(Duration::from_secs(60));
        let base = Url::parse("https://cdn.example/live/index.m3u8").unwrap();
        let mut sealer = s.sealer("S", "", &base, &vec![]).unwrap();
        let item = sealer.item("seg1.ts", Kind::Segment);
        assert!(s.open(sealer.context(), &item).is_ok());
        // The same plaintext encrypted by hand under another nonce with the right
        // cipher key, its tag kept: refused.
        let mut raw = URL_SAFE_NO_PAD.decode(&item).unwrap();
        let (tag, body) = raw.split_at_mut(ITEM_TAG);
        s.keys.items.apply_keystream(tag, body);
        s.keys.items.apply_keystream(&[7; NONCE_LEN], body);
        assert_eq!(
            s.open(sealer.context(), &URL_SAFE_NO_PAD.encode(&raw))
                .unwrap_err(),
            FORGED
        );
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
        let mut sealer = s.sealer_at(now, "Svc", "".into(), &base, &vec![]).unwrap();
        let item = sealer.item("a.ts", Kind::Segment);
        let token = sealer.context();
        // A link lives at least the ttl, and at most one bucket (ttl / 8) longer.
        assert!(s.open_at(now + 800, token, &item).is_ok());
        assert_eq!(
            s.open_at(now + 800 + 101, token, &item).unwrap_err(),
            "proxy link has expired; reload the channel's playlist"
        );
    }

    /// Every byte of both sealed parts is covered: the tags, the token's format byte
    /// and fields, the item's expiry, kind and reference. Changing any one bit of any
    /// of them (re-encoded, so the base64 stays valid) is refused.
    #[test]
    fn every_byte_of_a_link_is_authenticated() {
        let s = Signer::ephemeral(Duration::from_secs(60));
        let base = Url::parse("https://cdn.example/live/ch/index.m3u8").unwrap();
        let headers = vec![("Referer".to_string(), "https://site.example/".to_string())];
        let mut sealer = s.sealer("Svc", "ch", &base, &headers).unwrap();
        let item = sealer.item("seg-1.ts?t=1", Kind::Segment);
        let token = sealer.context().to_string();
        assert!(s.open(&token, &item).is_ok());
        let token_raw = URL_SAFE_NO_PAD.decode(&token).unwrap();
        let item_raw = URL_SAFE_NO_PAD.decode(&item).unwrap();
        // Regions: tag, format byte and the fields after it (token); tag, expiry, kind
        // and reference (item).
        assert!(token_raw.len() > TOKEN_TAG + 1 + 20);
        assert_eq!(item_raw.len(), ITEM_TAG + 4 + 1 + "seg-1.ts?t=1".len());
        for at in 0..token_raw.len() {
            for bit in [0x01, 0x80] {
                let mut bad = token_raw.clone();
                bad[at] ^= bit;
                let bad = URL_SAFE_NO_PAD.encode(&bad);
                assert!(s.open(&bad, &item).is_err(), "token byte {at} bit {bit:#x}");
            }
        }
        for at in 0..item_raw.len() {
            for bit in [0x01, 0x80] {
                let mut bad = item_raw.clone();
                bad[at] ^= bit;
                let bad = URL_SAFE_NO_PAD.encode(&bad);
                assert!(s.open(&token, &bad).is_err(), "item byte {at} bit {bit:#x}");
            }
        }
        // Cut short or lengthened: refused too.
        let short = URL_SAFE_NO_PAD.encode(&item_raw[..item_raw.len() - 1]);
        assert!(s.open(&token, &short).is_err());
        let mut long = item_raw.clone();
        long.push(b'x');
        assert!(s.open(&token, &URL_SAFE_NO_PAD.encode(&long)).is_err());
    }

    /// A signer built with the key before a rotation opens the links sealed with it
    /// (until they expire) and seals with the new one only; a third key opens neither.
    #[test]
    fn rotated_keys_open_links_of_the_previous_key() {
        let ttl = Duration::from_secs(800);
        let (k1, k2, k3) = ([1; 32], [2; 32], [3; 32]);
        let old = Signer::from_keys(&k1, None, ttl);
        let new = Signer::from_keys(&k2, Some(&k1), ttl);
        let base = Url::parse("https://cdn.example/live/index.m3u8").unwrap();
        let now = unix_now();
        let link = |s: &Signer| {
            let mut sealer = s
                .sealer_at(now, "Svc", "ch".into(), &base, &vec![])
                .unwrap();
            let item = sealer.item("a.ts", Kind::Segment);
            (sealer.context().to_string(), item)
        };
        let (old_token, old_item) = link(&old);
        let t = new.open_at(now, &old_token, &old_item).unwrap();
        assert_eq!(t.url, "https://cdn.example/live/a.ts");
        // New links are the new key's: the old signer refuses them.
        let (new_token, new_item) = link(&new);
        assert_ne!(new_token, old_token);
        assert!(new.open_at(now, &new_token, &new_item).is_ok());
        assert_eq!(old.open_at(now, &new_token, &new_item).unwrap_err(), FORGED);
        // Parts of the two keys do not mix.
        assert!(new.open_at(now, &old_token, &new_item).is_err());
        assert!(new.open_at(now, &new_token, &old_item).is_err());
        // Expiry holds for the previous key's links.
        assert_eq!(
            new.open_at(now + 800 + 101, &old_token, &old_item)
                .unwrap_err(),
            "proxy link has expired; reload the channel's playlist"
        );
        // The key before the previous one: refused.
        let newer = Signer::from_keys(&k3, Some(&k2), ttl);
        assert_eq!(
            newer.open_at(now, &old_token, &old_item).unwrap_err(),
            FORGED
        );
        assert!(newer.open_at(now, &new_token, &new_item).is_ok());
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
    fn raw_tokens_round_trip() {
        let s = Signer::ephemeral(Duration::from_secs(60));
        let base = Url::parse("http://x.example/a/b.m3u8").unwrap();
        let sealer = s.sealer("S", "c", &base, &vec![]).unwrap();
        let body = s.open_raw_token(sealer.context()).unwrap();
        let (token, item) = s.seal_raw_token(&body);
        assert_eq!(token, sealer.context());
        assert_eq!(
            s.open(&token, &item).unwrap().url,
            "http://x.example/a/seg.ts"
        );
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
    fn tokens_and_rewrites_are_bounded() {
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
        // A URI in the playlist as long: refused, not made into a link no request
        // could carry back.
        let body = format!(
            "#EXTM3U\n#EXTINF:2,\nseg.ts?t={}\n",
            "b".repeat(MAX_URL_BYTES)
        );
        assert!(matches!(
            rewrite_playlist(&s, "http://fs", "S", "", &vec![], &base, &body),
            Err(LinkError::UriTooLong { .. })
        ));
        let cookie = vec![("Cookie".to_string(), "c".repeat(MAX_HEADER_BYTES))];
        assert!(matches!(
            s.seal("S", &base, Kind::Segment, &cookie),
            Err(LinkError::HeadersTooLarge { .. })
        ));
        // Within both caps (a long directory goes into every link's token), but enough
        // URIs that the links would pass the output cap.
        let url = Url::parse(&format!("http://x.example/{}/i.m3u8", "a".repeat(3000))).unwrap();
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
