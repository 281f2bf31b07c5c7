//! Fuzz targets on stable Rust, shared by `tests/it/fuzz_replay.rs` (every committed input
//! in `fuzz/corpus/{target}/`) and `tests/it/fuzz_random.rs` (seeded random mutations of
//! them). cargo-fuzz needs nightly and libFuzzer; this is the coverage-less equivalent:
//! each target takes raw bytes, calls the code that meets outside data, and panics when
//! an invariant breaks. See RELIABILITY.md, "Fuzzing".
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use freesky::config::Config;
use freesky::proxy::{Kind, Signer};
use freesky::xmltv::{self, ChannelMap, OutChannel};
use freesky::{hls, m3u};
use url::Url;

/// One fuzz target: its corpus directory name, the function, and tokens the mutator
/// inserts (what the format is made of, so random edits reach past the first check).
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
    pub dictionary: &'static [&'static [u8]],
}

pub const TARGETS: &[Target] = &[
    Target {
        name: "m3u",
        run: m3u_target,
        dictionary: &[
            b"#EXTM3U",
            b"#EXTINF:-1 ",
            b"tvg-id=\"",
            b"tvg-name=\"",
            b"group-title=\"",
            b"user-agent=\"",
            b"#EXTVLCOPT:http-referrer=",
            b"#KODIPROP:",
            b"|Referer=",
            b"&User-Agent=",
            b",",
            b"\"",
            b"\r\n",
            b"\n",
            b"\r",
            b"http://a.example/x.m3u8",
            b"\xef\xbb\xbf",
        ],
    },
    Target {
        name: "hls",
        run: hls_target,
        dictionary: &[
            b"#EXTM3U\n",
            b"#EXTINF:",
            b"#EXT-X-STREAM-INF:BANDWIDTH=",
            b"#EXT-X-I-FRAME-STREAM-INF:URI=\"",
            b"#EXT-X-MEDIA:TYPE=AUDIO,URI=\"",
            b"#EXT-X-KEY:METHOD=AES-128,URI=\"",
            b"#EXT-X-MAP:URI=\"",
            b"#EXT-X-PRELOAD-HINT:TYPE=MAP,URI=\"",
            b"#EXT-X-PART:DURATION=1,URI=\"",
            b"#EXT-X-TARGETDURATION:",
            b"#EXT-X-MEDIA-SEQUENCE:",
            b"#EXT-X-ENDLIST",
            b"URI=\"",
            b"\"",
            b",",
            b"\r\n",
            b"\n",
            b"skd://",
            b"data:",
            b"http://[",
            b"//other.example/",
            b"../",
            b"seg.ts",
            b"\xef\xbb\xbf",
        ],
    },
    Target {
        name: "xmltv",
        run: xmltv_target,
        dictionary: &[
            b"<tv>",
            b"</tv>",
            b"<channel id=\"",
            b"</channel>",
            b"<display-name>",
            b"<programme start=\"20240101000000 +0000\" stop=\"",
            b" channel=\"",
            b"</programme>",
            b"<title>",
            b"</title>",
            b"<sub-title>",
            b"<episode-num system=\"xmltv_ns\">",
            b"<![CDATA[",
            b"]]>",
            b"<!--",
            b"-->",
            b"&amp;",
            b"&#x",
            b"<?xml version=\"1.0\"?>",
            b"<!DOCTYPE tv SYSTEM \"xmltv.dtd\">",
            b"/>",
            b"\"",
            b"+0100",
        ],
    },
    Target {
        name: "config",
        run: config_target,
        dictionary: &[
            b"[server]\n",
            b"[cache]\n",
            b"[streams]\n",
            b"[guide]\n",
            b"[hdhr]\n",
            b"[health]\n",
            b"[[services]]\n",
            b"kind = \"m3u\"\n",
            b"name = \"x\"\n",
            b"url = \"http://a.example/\"\n",
            b"timeout = \"",
            b"${SET_VAR}",
            b"${UNSET_VAR}",
            b"${",
            b" = ",
            b"\"",
            b"'''",
            b"\"\"\"",
            b"{ ",
            b" }",
            b"[",
            b"]",
            b"\n",
            b"= 99999999999999999999",
            b"= -1",
            b"= 1e400",
        ],
    },
    Target {
        name: "proxy_url",
        run: proxy_url_target,
        dictionary: &[b"/", b"A", b"_", b"-", b"=", b"%2F", b"index.m3u8"],
    },
    Target {
        name: "playlist_rewrite",
        run: playlist_rewrite_target,
        dictionary: &[
            b"\0",
            b"#EXTM3U\n",
            b"#EXTINF:1,\n",
            b"#EXT-X-STREAM-INF:BANDWIDTH=1\n",
            b"#EXT-X-KEY:METHOD=AES-128,URI=\"",
            b"#EXT-X-MAP:URI=\"",
            b"URI=\"",
            b"\"",
            b"\n",
            b"a\n",
            b"seg.ts\n",
            b"../",
            b"//other.example/",
            b"http://[::1]/",
            b"?token=",
            b"Referer",
            b"User-Agent",
            b"%",
        ],
    },
    Target {
        name: "upstream_json",
        run: upstream_json_target,
        dictionary: &[
            b"\0",
            b"{",
            b"}",
            b"[",
            b"]",
            b"\"",
            b":",
            b",",
            b"null",
            b"1e999",
            b"-1",
            b"18446744073709551616",
            b"\"user_info\":{",
            b"\"auth\":1",
            b"\"status\":\"Active\"",
            b"\"max_connections\":\"",
            b"\"exp_date\":",
            b"\"category_id\":\"",
            b"\"category_name\":\"",
            b"\"category_ids\":[",
            b"\"stream_id\":",
            b"\"name\":\"",
            b"\"num\":",
            b"\"epg_channel_id\":\"",
            b"\"channels\":[",
            b"\"id\":\"",
            b"\"tags\":[",
            b"\"events\":[",
            b"\"title\":\"",
            b"\"start\":\"2026-05-01T19:45:00Z\"",
            b"\"end\":1777665900",
            b"\"league\":\"",
            b"\"stream\":\"",
            b"\"url\":\"",
            b"https:\\/\\/cdn.example\\/live.m3u8",
            b"..",
            b"%2e",
            b"/",
            b"\\u0000",
        ],
    },
    Target {
        name: "segmenter",
        run: segmenter_target,
        dictionary: &[
            // A PAT naming PMT 0x1000, a PMT with H.264 on 0x100 and AAC on 0x101.
            b"\x47\x40\x00\x10\x00\x00\xb0\x0d\x00\x01\xc1\x00\x00\x00\x01\xf0\x00",
            b"\x47\x50\x00\x10\x00\x02\xb0\x17\x00\x01\xc1\x00\x00\xe1\x00\xf0\x00\x1b\xe1\x00\xf0\x00\x0f\xe1\x01\xf0\x00",
            // A key-frame PES start on 0x100: random access, PTS, an IDR.
            b"\x47\x41\x00\x30\x01\x40\x00\x00\x01\xe0\x00\x00\x80\x80\x05\x21\x00\x01\x00\x01\x00\x00\x01\x65",
            b"\x47\x41\x00\x10\x00\x00\x01\xe0\x00\x00\x80\xc0\x0a\x31",
            b"\x47\x1f\xff\x10",
            b"\x47",
            b"\x00\x00\x01",
            b"\xff\xff\xff\xff",
        ],
    },
];

/// Inputs that got past the first check (a list with entries, HLS, a guide read, a
/// config accepted, a link opened), per target in [`TARGETS`] order: the share of
/// mutants that reach the deeper code.
pub static DEEP: [AtomicU64; 8] = [const { AtomicU64::new(0) }; 8];

fn deep(i: usize) {
    DEEP[i].fetch_add(1, Ordering::Relaxed);
}

pub fn deep_count(name: &str) -> u64 {
    let i = TARGETS
        .iter()
        .position(|t| t.name == name)
        .expect("a known target");
    DEEP[i].load(Ordering::Relaxed)
}

pub fn target(name: &str) -> &'static Target {
    TARGETS
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no fuzz target {name}"))
}

/// The committed inputs of `target`, sorted by file name.
pub fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    inputs("fuzz/corpus", target)
}

/// The inputs in `{root}/{target}/` (`root` relative to the repository), sorted.
pub fn inputs(root: &str, target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(root)
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a readable corpus directory").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, bytes)
        })
        .collect()
}

pub fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------------------
// M3U channel lists

fn m3u_target(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let list = m3u::parse(&text);
    let lines = text.split(['\n', '\r']).count().max(1);
    for e in &list.entries {
        assert!(
            (1..=lines).contains(&e.line),
            "entry line {} outside 1..={lines}",
            e.line
        );
    }
    for w in &list.warnings {
        assert!(w.line <= lines, "warning line {} > {lines}", w.line);
    }
    let _ = list.guide_url();
    if !list.entries.is_empty() {
        deep(0);
    }
    // What we render from a list must parse back to the same channels.
    let out: Vec<m3u::OutEntry<'_>> = list
        .entries
        .iter()
        .map(|e| m3u::OutEntry {
            tvg_id: e.attr("tvg-id").unwrap_or(""),
            tvg_name: e.attr("tvg-name").unwrap_or(""),
            tvg_logo: e.attr("tvg-logo").unwrap_or(""),
            tvg_chno: 1,
            station_id: e.attr("tvc-guide-stationid").unwrap_or(""),
            group: e.attr("group-title").unwrap_or(""),
            name: &e.name,
            url: &e.url,
        })
        .collect();
    let rendered = m3u::render(list.guide_url(), out);
    let again = m3u::parse(&rendered);
    assert_eq!(
        again.entries.len(),
        list.entries.len(),
        "rendered list parses to another number of entries:\n{rendered}"
    );
}

// ---------------------------------------------------------------------------------------
// HLS rewriting (and the facts read from media playlists)

const PUBLIC_BASE: &str = "http://fuzz.invalid:1";

fn hls_target(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let base = Url::parse("http://up.example/live/index.m3u8").expect("a valid URL");
    let was_hls = hls::is_hls(&text);
    let _ = hls::is_master(&text);
    let _ = hls::target_duration(&text);
    let _ = hls::media_info(&text, &base);
    let _ = hls::best_variant(&text, &base);
    let _ = hls::muxed_variant(&text, &base);
    if let Ok(Some(out)) = hls::substitute_defines(&text, &base, 1 << 16) {
        assert!(out.len() <= 1 << 16, "defines grew past their limit");
    }

    let out = hls::rewrite_refs(&text, |out, raw, _| {
        if hls::is_fetchable_ref(raw) {
            out.push_str("http://p.example/x");
            true
        } else {
            false
        }
    });
    match out {
        Ok(out) => {
            assert!(was_hls, "rewrote a body that is not HLS");
            deep(1);
            assert!(still_hls(&out), "rewritten HLS is no longer HLS:\n{out}");
            assert_eq!(
                out.matches('\n').count(),
                text.matches('\n').count(),
                "rewriting changed the number of lines"
            );
        }
        // An HLS body is refused only for a sequence number that is none (`-5`).
        Err(e) => assert!(
            !was_hls || matches!(e, hls::RewriteError::BadSequence(_)),
            "refused to rewrite an HLS body: {e}"
        ),
    }

    // The proxy's rewrite: every link it hands out must be authentic to its own signer.
    let headers = vec![("Referer".to_string(), "http://up.example/".to_string())];
    let out = match freesky::proxy::rewrite_playlist(
        signer(),
        PUBLIC_BASE,
        "svc",
        "chan",
        &headers,
        &base,
        &text,
    ) {
        Ok(out) => out,
        Err(e) => {
            assert!(
                !was_hls
                    || matches!(
                        e,
                        freesky::proxy::LinkError::Rewrite(hls::RewriteError::BadSequence(_))
                    ),
                "refused to rewrite an HLS body: {e}"
            );
            return;
        }
    };
    assert!(still_hls(&out), "rewritten HLS is no longer HLS:\n{out}");
    check_links(&out, &headers);
}

/// A rewrite's output is HLS, unless every tag that made its input so was one a
/// rewrite takes out (low-latency tags, steering, comments: blank lines now).
fn still_hls(out: &str) -> bool {
    hls::is_hls(out)
        || out
            .lines()
            .map(str::trim)
            .all(|l| l.is_empty() || l.starts_with("#EXTM3U") || !l.starts_with('#'))
}

/// Every proxy link in `out` is one our signer made (for a playlist proxied with
/// `headers`).
fn check_links(out: &str, headers: &[(String, String)]) {
    let prefix = format!("{PUBLIC_BASE}/proxy/");
    for (at, _) in out.match_indices(&prefix) {
        let mut parts = out[at + prefix.len()..].split(['/', '"', '\n', '\r', ',']);
        let (Some(context), Some(item)) = (parts.next(), parts.next()) else {
            panic!("a proxy link without its two parts");
        };
        // A reference that resolves to no URL makes a link that opens to "malformed";
        // a link that fails its signature would be one we did not make.
        match signer().open(context, item) {
            Ok(target) => assert_eq!(target.headers, headers, "a link lost its headers"),
            Err(e) => assert_ne!(
                e, "proxy token signature does not match",
                "a link we made does not open"
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------
// XMLTV reader (and the merged writer, read back)

/// Maps every guide channel to its own id.
struct Same;

impl ChannelMap for Same {
    fn map(&self, xml_id: &str, _names: &[String]) -> Option<(String, xmltv::Match)> {
        Some((xml_id.to_string(), xmltv::Match::Id))
    }
}

fn xmltv_target(data: &[u8]) {
    let started = std::time::Instant::now();
    let result = futures::executor::block_on(xmltv::read(data, &Same, i64::MIN, i64::MAX));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "reading {} bytes took {:?}",
        data.len(),
        started.elapsed()
    );
    let guide = match result {
        Ok(guide) => guide,
        Err(e) => {
            // An empty guide is a guide (fuzzing found `<tv/>` refused as "not <tv>").
            let text = String::from_utf8_lossy(data);
            assert!(text.trim() != "<tv/>", "`<tv/>` refused: {e}");
            return;
        }
    };
    if guide.programme_count() > 0 {
        deep(2);
    }
    // Bounded: a programme takes at least `<programme` in the input.
    assert!(guide.programme_count() <= data.len() / 10 + 1);
    let mut ids: Vec<&String> = guide.programmes.keys().collect();
    ids.sort();
    let channels: Vec<OutChannel<'_>> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| OutChannel {
            id,
            name: id,
            number: i as u32,
            logo: "",
            programmes: &guide.programmes[*id],
        })
        .collect();
    for fold in [false, true] {
        let rendered = xmltv::render(&channels, fold);
        let again =
            futures::executor::block_on(xmltv::read(&rendered[..], &Same, i64::MIN, i64::MAX))
                .unwrap_or_else(|e| {
                    panic!(
                        "our own guide does not read back: {e}\n{}",
                        String::from_utf8_lossy(&rendered)
                    )
                });
        if !fold {
            assert_eq!(
                again.programme_count(),
                guide.programme_count(),
                "our own guide reads back with another number of programmes:\n{}",
                String::from_utf8_lossy(&rendered)
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Config loader

fn config_target(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let env = |var: &str| {
        var.starts_with("SET")
            .then(|| "http://set.example/".to_string())
    };
    match Config::parse(&text, "fuzz.toml", &env) {
        Ok(_) => deep(3),
        Err(e) => {
            assert!(!e.problems.is_empty(), "an error without problems");
            let lines = text.lines().count() + 1;
            for p in &e.problems {
                assert!(
                    p.line <= lines,
                    "problem on line {} of {lines}: {p:?}",
                    p.line
                );
            }
            let shown = e.to_string();
            for line in shown.lines().filter(|l| !l.starts_with(' ')) {
                assert!(line.starts_with("fuzz.toml:"), "not file:line: {line:?}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Proxy-URL decoder

/// The key the committed proxy_url corpus was sealed with (links live 100 years).
const PROXY_KEY: [u8; 32] = *b"freesky-fuzz-corpus-proxy-key-32";
pub const PROXY_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// A signer with [`PROXY_KEY`], so the committed links open and reach past the AEAD.
pub fn signer() -> &'static Signer {
    static SIGNER: OnceLock<Signer> = OnceLock::new();
    SIGNER.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        std::fs::write(dir.path().join("proxy.key"), PROXY_KEY).expect("writing the key");
        Signer::load_or_create(dir.path(), PROXY_TTL).expect("a 32-byte key")
    })
}

/// The bytes are the path after `/proxy/`: `{token}/{item}[/{name}]`; or, when they
/// start with the format byte 1 (never the start of a base64 path), the *plaintext* of a
/// context: it is sealed here under [`PROXY_KEY`] with an item for its item key, so the
/// decoder's reading of service, channel, URL and headers meets arbitrary bytes too
/// (a mutated sealed link never gets past the AEAD).
fn proxy_url_target(data: &[u8]) {
    if data.first() == Some(&1) {
        return proxy_plain_target(data);
    }
    let path = String::from_utf8_lossy(data);
    let path = path.trim_end();
    let mut parts = path.splitn(3, '/');
    let context = parts.next().unwrap_or("");
    let item = parts.next().unwrap_or("");
    if let Ok(target) = signer().open(context, item) {
        deep(4);
        assert!(Url::parse(&target.url).is_ok(), "opened to a bad URL");
        assert!(matches!(
            target.kind,
            Kind::Playlist | Kind::Segment | Kind::Key | Kind::Map | Kind::Media
        ));
    }
    // Garbage under a key that sealed nothing must be refused, not opened.
    let stranger = {
        static S: OnceLock<Signer> = OnceLock::new();
        S.get_or_init(|| Signer::ephemeral(PROXY_TTL))
    };
    assert!(
        stranger.open(context, item).is_err(),
        "a stranger's link opened"
    );
}

/// Seal → open round trip of arbitrary link contents (the random test's proxy property).
pub fn proxy_roundtrip(
    service: &str,
    channel: &str,
    base: &Url,
    reference: &str,
    headers: &[(String, String)],
) {
    let headers = headers.to_vec();
    let Ok(mut sealer) = signer().sealer(service, channel, base, &headers) else {
        let header_bytes: usize = headers.iter().map(|(n, v)| n.len() + v.len()).sum();
        assert!(
            base.as_str().len() > freesky::proxy::MAX_URL_BYTES
                || header_bytes > freesky::proxy::MAX_HEADER_BYTES,
            "a context within the caps was refused"
        );
        return;
    };
    let item = sealer.item(reference, Kind::Segment);
    let expected = base.join(reference);
    match (signer().open(sealer.context(), &item), expected) {
        (Ok(t), Ok(url)) => {
            assert_eq!(t.service, service);
            assert_eq!(t.channel, channel);
            assert_eq!(t.url, url.as_str());
            assert_eq!(t.headers, headers);
            assert_eq!(t.kind, Kind::Segment);
        }
        (Err(e), Err(_)) => assert_eq!(e, "malformed proxy token"),
        (got, expected) => panic!("open gave {got:?}, the reference resolves to {expected:?}"),
    }
}

/// The `{token}/{item}` of a token plaintext (after its format byte) sealed with
/// [`PROXY_KEY`], and an item `seg.ts` under it.
fn seal_plain(plain: &[u8]) -> (String, String) {
    signer().seal_raw_token(plain.get(1..).unwrap_or(&[]))
}

/// The plaintext of a token sealed with [`PROXY_KEY`] (to write seeds), its format byte
/// as the mode byte 1.
pub fn open_plain(context: &str) -> Vec<u8> {
    let body = signer()
        .open_raw_token(context)
        .expect("a token sealed with PROXY_KEY");
    [&[1][..], &body].concat()
}

fn proxy_plain_target(plain: &[u8]) {
    let (context, item) = seal_plain(plain);
    if let Ok(target) = signer().open(&context, &item) {
        deep(4);
        assert!(Url::parse(&target.url).is_ok(), "opened to a bad URL");
        assert_eq!(target.kind, Kind::Segment);
    }
}

// ---------------------------------------------------------------------------------------
// The sealing rewrite of proxied playlists, with arbitrary upstream URL and headers

/// How much longer than its input a rewritten playlist may be, besides each link's
/// token and fixed part: a URI is sealed as written (4/3 for base64), or, for a `?query`
/// or `#fragment` reference, resolved first (percent-encoding: up to 3x).
/// A 16 MiB playlist must not ask for gigabytes.
pub const REWRITE_GROWTH: usize = 5;
/// The fixed part a link adds whatever its input: the public base, `/proxy/`, the
/// item's tag, expiry and kind, and the file name.
pub const REWRITE_LINK_OVERHEAD: usize = 80;

/// The bytes are `{base URL tail}\0{header name}\0{header value}\0{playlist}` (missing
/// parts take defaults): the playlist as an upstream served it from that URL, proxied
/// with those headers. No panic, HLS stays HLS with its lines, every link opens, and
/// the output is bounded by the input (see [`REWRITE_GROWTH`]).
fn playlist_rewrite_target(data: &[u8]) {
    let mut parts = data.splitn(4, |&b| b == 0);
    let (a, b, c, d) = (parts.next(), parts.next(), parts.next(), parts.next());
    let (base_tail, name, value, body) = match (a, b, c, d) {
        (Some(a), Some(b), Some(c), Some(d)) => (a, b, c, d),
        (Some(a), Some(b), _, None) => (a, &b"Referer"[..], &b""[..], b),
        _ => (&b""[..], &b""[..], &b""[..], data),
    };
    let root = Url::parse("http://up.example/live/").expect("a valid URL");
    let base = root
        .join(&String::from_utf8_lossy(base_tail))
        .unwrap_or(root);
    let headers: Vec<(String, String)> = if name.is_empty() {
        Vec::new()
    } else {
        vec![(
            String::from_utf8_lossy(name).into_owned(),
            String::from_utf8_lossy(value).into_owned(),
        )]
    };
    let text = String::from_utf8_lossy(body);
    let Ok(out) = freesky::proxy::rewrite_playlist(
        signer(),
        PUBLIC_BASE,
        "svc",
        "chan",
        &headers,
        &base,
        &text,
    ) else {
        // Refused: not HLS, or over a size cap; either way nothing was written.
        return;
    };
    assert!(hls::is_hls(&text), "rewrote a body that is not HLS");
    deep(5);
    assert!(still_hls(&out), "rewritten HLS is no longer HLS");
    assert_eq!(
        out.matches('\n').count(),
        text.matches('\n').count(),
        "rewriting changed the number of lines"
    );
    let prefix = format!("{PUBLIC_BASE}/proxy/");
    let links = out.matches(&prefix).count();
    // The rewriter's input is `text`: invalid UTF-8 bytes became three-byte U+FFFDs.
    let input = text.len() + base.as_str().len();
    // Every link carries its playlist's token, one per rewrite, which holds the
    // directory of the playlist URL and the headers (not the URL's file name or query);
    // the rest of a link is bounded by its URI, or, for a reference to the playlist's
    // own file (`?query`, `#fragment`), by that file name and query.
    let mut tokens = out
        .split(&prefix)
        .skip(1)
        .map(|rest| rest.split('/').next().unwrap_or(""));
    let token = tokens.next().unwrap_or("");
    assert!(tokens.all(|t| t == token), "two tokens in one rewrite");
    let (path_start, path_end) = (
        base[..url::Position::BeforePath].len(),
        base[..url::Position::AfterPath].len(),
    );
    let dir = match base.as_str()[path_start..path_end].rfind('/') {
        Some(i) if !base.cannot_be_a_base() => path_start + i + 1,
        _ => base.as_str().len(),
    };
    let file = base.as_str().len() - dir;
    let header_bytes: usize = headers.iter().map(|(n, v)| n.len() + v.len()).sum();
    let token_cap = (dir + header_bytes + 64) * 4 / 3;
    assert!(
        token.len() <= token_cap,
        "a token of {} bytes is more than the directory ({dir} bytes) and headers \
         ({header_bytes} bytes) it holds ({token_cap})",
        token.len()
    );
    let bound =
        REWRITE_GROWTH * input + links * (token.len() + file * 4 / 3 + REWRITE_LINK_OVERHEAD);
    assert!(
        out.len() <= bound,
        "{} input bytes (base URL {} bytes, headers {header_bytes} bytes) became {} bytes \
         in {links} links (bound {bound})",
        text.len(),
        base.as_str().len(),
        out.len()
    );
    check_links(&out, &headers);
}

// ---------------------------------------------------------------------------------------
// Upstream JSON: Xtream `player_api.php` answers, json_api lists and stream answers

/// The bytes are a mode byte, then documents separated by NUL (which JSON text never
/// holds raw): 0 = Xtream account, categories, streams; 1 = a json_api channel list;
/// 2 = a json_api event list; 3 = a json_api stream answer.
fn upstream_json_target(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut docs = rest.split(|&b| b == 0);
    let mut next = || -> (String, Option<serde_json::Value>) {
        let bytes = docs.next().unwrap_or(&[]);
        let text = String::from_utf8_lossy(bytes).into_owned();
        let json = serde_json::from_str(&text).ok();
        (text, json)
    };
    match mode % 4 {
        0 => xtream_answers(next().1, next().1, next().1),
        1 => json_channel_list(next().1),
        2 => json_event_list(next().1),
        _ => {
            let (text, json) = next();
            json_stream_answer(&text, json);
        }
    }
}

fn json_base() -> Url {
    freesky::fuzzing::base_url("http://api.example/v1").expect("a valid base URL")
}

/// An id from upstream data put in a configured path stays one path segment under the
/// base: it cannot walk out of the configured path or add segments.
fn check_endpoint(id: &str) {
    let base = json_base();
    let Ok(url) = freesky::fuzzing::endpoint(&base, "stream/{channel_id}/play", Some(id)) else {
        assert!(matches!(id, "." | ".."), "id {id:?} made no URL");
        return;
    };
    let path = url.path();
    let inner = path
        .strip_prefix("/v1/stream/")
        .and_then(|p| p.strip_suffix("/play"))
        .unwrap_or_else(|| panic!("id {id:?} changed the path's shape: {url}"));
    assert!(
        !inner.contains('/') && !inner.is_empty() || id.is_empty(),
        "id {id:?} changed the path's shape: {url}"
    );
    assert_eq!(
        url.host_str(),
        base.host_str(),
        "id {id:?} changed the host"
    );
}

fn check_channels(channels: &[freesky::model::Channel], items: usize) {
    assert!(channels.len() <= items, "more channels than entries");
    let mut ids = std::collections::HashSet::new();
    for c in channels {
        assert!(!c.id.is_empty() && !c.name.is_empty(), "{c:?}");
        assert!(ids.insert(&c.id), "duplicate id {:?}", c.id);
        check_endpoint(&c.id);
    }
}

fn xtream_answers(
    account: Option<serde_json::Value>,
    categories: Option<serde_json::Value>,
    streams: Option<serde_json::Value>,
) {
    use freesky::fuzzing::{category_names, live_channels, parse_account};
    if let Some(a) = &account {
        let _ = format!("{:?}", parse_account(a));
    }
    let categories = categories.map(|c| category_names(&c)).unwrap_or_default();
    let Some(streams) = streams else { return };
    let items = streams.as_array().map_or(0, Vec::len);
    let Ok(all) = live_channels("svc", &streams, &categories, &[]) else {
        assert!(!streams.is_array(), "an array of streams refused");
        return;
    };
    deep(6);
    check_channels(&all, items);
    for c in &all {
        assert!(
            c.group.is_empty() || categories.values().any(|n| *n == c.group),
            "group {:?} is no category",
            c.group
        );
    }
    // Keeping one category keeps exactly the channels in it.
    if let Some(keep) = categories.values().next() {
        let keep = keep.to_lowercase();
        let kept = live_channels("svc", &streams, &categories, std::slice::from_ref(&keep))
            .expect("the same array");
        let expected = all
            .iter()
            .filter(|c| c.group.to_lowercase() == keep)
            .count();
        assert_eq!(kept.len(), expected, "the category filter kept others");
    }
}

fn json_channel_list(json: Option<serde_json::Value>) {
    let Some(json) = json else { return };
    let cfg: freesky::services::json_api::ChannelsEndpoint =
        serde_json::from_value(serde_json::json!({
            "path": "channels", "list": "/channels", "logo": "/logo", "group": "/group",
            "tags": "/tags", "tvg_id": "/tvg_id",
        }))
        .expect("a valid channels endpoint");
    let items = json
        .pointer("/channels")
        .and_then(serde_json::Value::as_array)
        .map_or(0, Vec::len);
    let mut ids = std::collections::HashSet::new();
    if let Ok(channels) = freesky::fuzzing::channel_list(&json, &cfg, "svc", &mut ids) {
        deep(6);
        check_channels(&channels, items);
        assert_eq!(ids.len(), channels.len());
    }
}

fn json_event_list(json: Option<serde_json::Value>) {
    let Some(json) = json else { return };
    let cfg: freesky::services::json_api::EventsConfig =
        serde_json::from_value(serde_json::json!({
            "path": "events", "list": "/events", "league": "/league", "logo": "/logo",
            "stream": "/stream", "lead": "1h", "tail": "2h",
        }))
        .expect("a valid events config");
    let base = json_base();
    let Ok((events, skipped)) = freesky::fuzzing::parse_events(&json, &cfg, &base) else {
        return;
    };
    let items = json
        .pointer("/events")
        .and_then(serde_json::Value::as_array)
        .map_or(0, Vec::len);
    assert_eq!(
        events.len() + skipped.len(),
        items,
        "entries lost or invented"
    );
    if !events.is_empty() {
        deep(6);
    }
    for e in &events {
        assert!(e.end > e.start, "an event that ends before it starts");
        let _ = e.listed_at(e.start, &cfg);
        let c = e.channel("svc", &cfg);
        assert!(!c.id.is_empty() && !c.name.is_empty(), "{c:?}");
        if let Some(u) = &c.url {
            let u = Url::parse(u).unwrap_or_else(|e| panic!("stream {u:?}: {e}"));
            assert!(matches!(u.scheme(), "http" | "https"), "stream {u}");
        }
        check_endpoint(&e.id);
    }
    // The events' guide is XMLTV we read back whole.
    let guide = freesky::fuzzing::events_guide(&events, "svc");
    let read =
        futures::executor::block_on(xmltv::read(guide.as_bytes(), &Same, i64::MIN, i64::MAX))
            .unwrap_or_else(|e| panic!("the events guide does not read back: {e}\n{guide}"));
    assert_eq!(read.programme_count(), events.len(), "{guide}");
}

fn json_stream_answer(body: &str, json: Option<serde_json::Value>) {
    let cfg: freesky::services::json_api::StreamEndpoint =
        serde_json::from_value(serde_json::json!({
            "path": "stream/{channel_id}", "url": "/url",
        }))
        .expect("a valid stream endpoint");
    // Compiled once: a regex per input would be most of the target's time.
    static PATTERNS: OnceLock<[regex::Regex; 2]> = OnceLock::new();
    let patterns = PATTERNS.get_or_init(|| {
        [
            regex::Regex::new(r#""(?:src|file)"\s*:\s*"([^"]+)""#).expect("a valid regex"),
            regex::Regex::new(r#"https?://[^\s"'<>]+\.m3u8[^\s"'<>]*"#).expect("a valid regex"),
        ]
    });
    let from = Url::parse("http://api.example/v1/stream/1").expect("a valid URL");
    for patterns in [&patterns[..], &[]] {
        if let Ok(url) =
            freesky::fuzzing::stream_in_answer(&cfg, patterns, &from, body, json.clone(), "1")
        {
            deep(6);
            assert!(matches!(url.scheme(), "http" | "https"), "stream {url}");
        }
    }
}

/// The bytes (the first one picks the chunk size) cut into segments, as a packager
/// does: every segment is whole packets starting with the PAT, with a duration, and
/// the counters stay sane.
fn segmenter_target(data: &[u8]) {
    let Some((&pick, bytes)) = data.split_first() else {
        return;
    };
    let chunk = [1, 7, 188, 189, 1000, 4096, 65536][usize::from(pick) % 7];
    let mut cutter = freesky::segmenter::Segmenter::new(Duration::from_secs(2));
    let mut out = Vec::new();
    for c in bytes.chunks(chunk) {
        cutter.push(c, &mut out);
    }
    if pick & 0x80 != 0 {
        cutter.gap();
        cutter.push(bytes, &mut out);
    }
    out.extend(cutter.finish());
    if !out.is_empty() {
        deep(7);
    }
    for s in &out {
        assert_eq!(s.bytes.len() % 188, 0, "a segment of part packets");
        assert!(
            s.bytes.len() >= 3 * 188,
            "a segment without tables and a frame"
        );
        assert_eq!(
            (s.bytes[0], s.bytes[1] & 0x1f, s.bytes[2]),
            (0x47, 0, 0),
            "not PAT first"
        );
        assert!(
            s.duration > 0.0 && s.duration < 30.0,
            "duration {}",
            s.duration
        );
    }
}
