//! In-process speed of the HLS hot path: rewriting playlists into signed proxy links.
//!
//! `cargo bench --bench hls`. Each group has a baseline measured in the same run (a
//! plain copy of the playlist line by line), so figures can be read as ratios on a
//! shared, noisy machine. Results and how to read them: BENCHMARKS.md.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use freesky::hls;
use freesky::proxy::{rewrite_playlist, Kind, Signer};
use url::Url;

fn media_playlist(segments: usize) -> String {
    let mut s = String::from(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:6\n#EXT-X-MEDIA-SEQUENCE:1000\n",
    );
    for i in 0..segments {
        s.push_str("#EXTINF:6.000,\n");
        s.push_str(&format!(
            "chunks/segment_{:06}.ts?token=abcdef0123456789\n",
            1000 + i
        ));
    }
    s.push_str("#EXT-X-ENDLIST\n");
    s
}

fn master_playlist(variants: usize) -> String {
    let mut s = String::from("#EXTM3U\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    s.push_str(
        "#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aud\",NAME=\"en\",DEFAULT=YES,URI=\"audio/en.m3u8\"\n",
    );
    for i in 0..variants {
        s.push_str(&format!(
            "#EXT-X-STREAM-INF:BANDWIDTH={},RESOLUTION=1280x720,CODECS=\"avc1.64001f,mp4a.40.2\",AUDIO=\"aud\"\nvariant_{i}/index.m3u8\n",
            (i + 1) * 400_000
        ));
    }
    s
}

/// The baseline: touching every line once, as any rewriter must.
fn copy_lines(body: &str) -> String {
    let mut out = String::with_capacity(body.len() * 2);
    for line in body.split_inclusive('\n') {
        out.push_str(line);
    }
    out
}

fn bench_rewrite(c: &mut Criterion) {
    let base = Url::parse("https://cdn.example/live/channel/index.m3u8?auth=xyz").unwrap();
    let signer = Signer::ephemeral(Duration::from_secs(6 * 3600));
    let headers = vec![
        ("Referer".to_string(), "https://player.example/".to_string()),
        ("User-Agent".to_string(), "Mozilla/5.0 (bench)".to_string()),
    ];
    let proxy = "http://127.0.0.1:8005";
    for (name, body) in [
        ("media_5000_segments", media_playlist(5000)),
        ("master_20_variants", master_playlist(20)),
    ] {
        let mut g = c.benchmark_group(name);
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function("baseline_copy_lines", |b| {
            b.iter(|| copy_lines(black_box(&body)))
        });
        g.bench_function("rewrite_unsigned", |b| {
            b.iter(|| {
                hls::rewrite(black_box(&body), &base, |u, _| {
                    format!("{proxy}/proxy/x/{}", u.path())
                })
                .unwrap()
            })
        });
        g.bench_function("rewrite_signed", |b| {
            b.iter(|| {
                rewrite_playlist(
                    &signer,
                    proxy,
                    "Bench",
                    "bench",
                    &headers,
                    &base,
                    black_box(&body),
                )
                .unwrap()
            })
        });
        // Where `rewrite_signed`'s time goes, in parts measured alone: the line scan
        // writing links of the same length without sealing anything, and the sealing
        // (MAC, cipher, base64) of each URI without the scan.
        let sealer = signer.sealer("Bench", "bench", &base, &headers).unwrap();
        let token = sealer.context().to_string();
        let refs: Vec<&str> = body
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .collect();
        let fake_item = {
            let mut sealer = signer.sealer("Bench", "bench", &base, &headers).unwrap();
            sealer.item(refs.first().copied().unwrap_or("x"), Kind::Segment)
        };
        let capacity =
            refs.len() * (proxy.len() + token.len() + fake_item.len() + 20) + 2 * body.len();
        g.bench_function("part_scan_and_write_unsealed", |b| {
            b.iter(|| {
                hls::rewrite_refs_sized(black_box(&body), capacity, |out, _, _| {
                    out.push_str(proxy);
                    out.push_str("/proxy/");
                    out.push_str(&token);
                    out.push('/');
                    out.push_str(&fake_item);
                    out.push_str("/seg.ts");
                    true
                })
                .unwrap()
            })
        });
        g.bench_function("part_seal_items", |b| {
            let mut sealer = signer.sealer("Bench", "bench", &base, &headers).unwrap();
            let mut out = String::with_capacity(256);
            b.iter(|| {
                for r in &refs {
                    out.clear();
                    sealer.push_item(&mut out, black_box(r), Kind::Segment);
                }
                out.len()
            })
        });
        g.finish();
    }
}

/// What a `.ts` session reads at each poll of a live playlist (`hls::media_info`: the
/// segments, and m3u8-rs's header values from `parse_view`'s lines), beside the same
/// baseline, for a live window, a long VOD playlist, and a live window buried in
/// 100,000 comment lines (what `parse_view` keeps from m3u8-rs).
fn bench_media_info(c: &mut Criterion) {
    let base = Url::parse("https://cdn.example/live/channel/index.m3u8").unwrap();
    let live = media_playlist(6).replace("#EXT-X-ENDLIST\n", "");
    for (name, body) in [
        ("media_info_live_6_segments", live.clone()),
        ("media_info_vod_5000_segments", media_playlist(5000)),
        (
            "media_info_live_with_100000_comments",
            live.replacen(
                "#EXTINF",
                &format!("{}#EXTINF", "# a comment\n".repeat(100_000)),
                1,
            ),
        ),
    ] {
        let mut g = c.benchmark_group(name);
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function("baseline_copy_lines", |b| {
            b.iter(|| copy_lines(black_box(&body)))
        });
        g.bench_function("media_info", |b| {
            b.iter(|| hls::media_info(black_box(&body), &base).expect("valid"))
        });
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = bench_rewrite, bench_media_info
}
criterion_main!(benches);
