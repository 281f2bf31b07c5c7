//! In-process cost of making joined MPEG-TS segments continuous (`freesky::ts`), which
//! runs on every packet of every `.ts` session, and of cutting a plain MPEG-TS stream
//! into HLS segments (`freesky::segmenter`), which runs on every packet of a packaged
//! channel.
//!
//! `cargo bench --bench ts`. The baseline, measured in the same run, is a plain copy of
//! the same buffer (what the session would pay to copy each segment once); read the
//! other figures as ratios to it. Results: BENCHMARKS.md.

use std::hint::black_box;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use freesky::segmenter::Segmenter;
use freesky::ts::Continuity;

/// The demo channel's four real segments (8 s of 320x180 H.264 and AAC, 208 KB): one
/// loop, so each time it is joined to itself its timestamps go back and every counter
/// restarts.
fn demo_loop() -> Bytes {
    let mut v = Vec::new();
    for seg in [
        &include_bytes!("../assets/demo/seg0.ts")[..],
        include_bytes!("../assets/demo/seg1.ts"),
        include_bytes!("../assets/demo/seg2.ts"),
        include_bytes!("../assets/demo/seg3.ts"),
    ] {
        v.extend_from_slice(seg);
    }
    Bytes::from(v)
}

fn bench_continuity(c: &mut Criterion) {
    let buf = demo_loop();
    let mut g = c.benchmark_group("ts_continuity_demo_loop");
    g.throughput(Throughput::Bytes(buf.len() as u64));
    g.bench_function("baseline_copy", |b| {
        b.iter(|| BytesMut::from(&black_box(&buf)[..]).freeze())
    });
    // A stream's first segment, or any that goes on from the last: every packet read,
    // none changed, the bytes passed on without a copy (the state is made per run here).
    g.bench_function("unchanged_scan", |b| {
        b.iter(|| Continuity::default().apply(black_box(buf.clone())))
    });
    // Joined to itself: every PTS, DTS, PCR and counter rewritten. Shared with the
    // segment cache: copied once, then changed.
    let mut shared = Continuity::default();
    shared.apply(buf.clone());
    g.bench_function("rewrite_shared_copy", |b| {
        b.iter(|| {
            shared.join();
            shared.apply(black_box(buf.clone()))
        })
    });
    // The same when nothing else holds the bytes (a streamed chunk): changed in place.
    let mut unique = Continuity::default();
    unique.apply(buf.clone());
    g.bench_function("rewrite_unique_in_place", |b| {
        b.iter_batched(
            || Bytes::from(buf.to_vec()),
            |chunk| {
                unique.join();
                unique.apply(chunk)
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn bench_segmenter(c: &mut Criterion) {
    let buf = demo_loop();
    let mut g = c.benchmark_group("ts_segmenter_demo_loop");
    g.throughput(Throughput::Bytes(buf.len() as u64));
    g.bench_function("baseline_copy", |b| {
        b.iter(|| BytesMut::from(&black_box(&buf)[..]).freeze())
    });
    // The loop as a session sends it (64 KiB chunks), cut at key frames every 2 s:
    // every packet read and copied once into its segment.
    g.bench_function("cut_2s_segments", |b| {
        b.iter(|| {
            let mut cutter = Segmenter::new(Duration::from_secs(2));
            let mut out = Vec::new();
            for chunk in black_box(&buf).chunks(64 << 10) {
                cutter.push(chunk, &mut out);
            }
            out.extend(cutter.finish());
            out
        })
    });
    // What a relayed MPEG-TS session runs for its joiners: the same reading, only the
    // key frames' offsets kept (no segment's bytes gathered).
    g.bench_function("key_starts_1s", |b| {
        b.iter(|| {
            let mut cutter = Segmenter::key_starts(Duration::from_secs(1));
            let mut out = Vec::new();
            let mut starts = Vec::new();
            for chunk in black_box(&buf).chunks(64 << 10) {
                cutter.push(chunk, &mut out);
                starts.extend(cutter.take_starts());
            }
            starts
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = bench_continuity, bench_segmenter
}
criterion_main!(benches);
