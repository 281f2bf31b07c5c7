//! Replays every committed fuzz input (`fuzz/corpus/{target}/`) through its target: no
//! panic, and each target's invariants (see `tests/fuzz_support`). A crash found by
//! `tests/fuzz_random.rs` is added to the corpus as a file, and stays checked here.

use crate::fuzz_support::{corpus, hex, inputs, target};

fn replay(name: &str) {
    replay_from("fuzz/corpus", name);
}

fn replay_from(root: &str, name: &str) {
    let t = target(name);
    let inputs = inputs(root, name);
    assert!(!inputs.is_empty(), "{root}/{name} is empty");
    let mut failed = Vec::new();
    for (path, bytes) in &inputs {
        if std::panic::catch_unwind(|| (t.run)(bytes)).is_err() {
            eprintln!(
                "{name}: {} failed; input (hex): {}",
                path.display(),
                hex(bytes)
            );
            failed.push(path.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{name}: {} of {} inputs failed: {failed:?}",
        failed.len(),
        inputs.len()
    );
}

#[test]
fn m3u_corpus() {
    replay("m3u");
}

#[test]
fn hls_corpus() {
    replay("hls");
}

#[test]
fn xmltv_corpus() {
    replay("xmltv");
}

#[test]
fn config_corpus() {
    replay("config");
}

#[test]
fn proxy_url_corpus() {
    replay("proxy_url");
}

#[test]
fn playlist_rewrite_corpus() {
    replay("playlist_rewrite");
}

#[test]
fn upstream_json_corpus() {
    replay("upstream_json");
}

/// Crashes libFuzzer found before the per-link encoding that repeats only a token of
/// the playlist's directory and headers. `amplification-300-links`: 2.6 KB of input (a
/// 1 KB base URL, a 1 KB header, 300 one-letter segment lines) rewrote to 876 KB, every
/// link repeating the whole sealed context, URL query included.
#[test]
fn playlist_rewrite_known_crashes() {
    replay_from("fuzz/known-crashes", "playlist_rewrite");
}

/// The committed links must still open (they were sealed with the fixed test key for
/// 100 years), or the proxy corpus would only exercise the signature check.
#[test]
fn proxy_url_corpus_has_links_that_open() {
    let signer = crate::fuzz_support::signer();
    let opened = corpus("proxy_url")
        .iter()
        .filter(|(_, bytes)| {
            let path = String::from_utf8_lossy(bytes);
            let mut parts = path.trim_end().splitn(3, '/');
            let (c, i) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            signer.open(c, i).is_ok()
        })
        .count();
    assert!(opened >= 3, "only {opened} committed proxy links open");
}

/// Writes the proxy_url seeds (`cargo test --test it fuzz_replay:: -- --ignored`); the key
/// is fixed, so the committed files stay valid.
#[test]
#[ignore]
fn write_proxy_url_seeds() {
    use freesky::proxy::Kind;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/proxy_url");
    let signer = crate::fuzz_support::signer();
    let base = url::Url::parse("http://up.example/live/index.m3u8?token=abc").unwrap();
    let headers = vec![
        ("Referer".to_string(), "http://up.example/".to_string()),
        ("User-Agent".to_string(), "Mozilla/5.0 (X11)".to_string()),
    ];
    let mut sealer = signer.sealer("svc", "bbc-one", &base, &headers).unwrap();
    let seeds = [
        (
            "seg",
            sealer.item("seg-001.ts", Kind::Segment) + "/seg-001.ts",
        ),
        (
            "variant",
            sealer.item("../hi/index.m3u8", Kind::Playlist) + "/index.m3u8",
        ),
        (
            "key",
            sealer.item("https://keys.example/k?id=1", Kind::Key) + "/k.key",
        ),
        ("map", sealer.item("init.mp4", Kind::Map) + "/init.mp4"),
    ];
    for (name, item) in seeds {
        std::fs::write(
            dir.join(format!("link-{name}")),
            format!("{}/{item}", sealer.context()),
        )
        .unwrap();
    }
    std::fs::write(
        dir.join("plain-context"),
        crate::fuzz_support::open_plain(sealer.context()),
    )
    .unwrap();
    let single = signer
        .seal(
            "svc",
            &url::Url::parse("http://up.example/chan.ts").unwrap(),
            Kind::Media,
            &vec![],
        )
        .unwrap();
    let plain = crate::fuzz_support::open_plain(single.split('/').next().unwrap());
    std::fs::write(dir.join("plain-context-no-headers"), plain).unwrap();
    std::fs::write(dir.join("link-media"), single).unwrap();
    std::fs::write(dir.join("garbage-short"), "AAAA/BBBB").unwrap();
    std::fs::write(
        dir.join("garbage-empty-item"),
        format!("{}/", sealer.context()),
    )
    .unwrap();
    std::fs::write(dir.join("garbage-not-base64"), "!!!/***/x.ts").unwrap();
}

#[test]
fn segmenter_corpus() {
    replay("segmenter");
}
