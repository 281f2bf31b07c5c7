//! In-process cost of reading an XMLTV guide (`freesky::xmltv::read`), which every
//! guide refresh pays for every service's guide.
//!
//! `cargo bench --bench guide`. The baseline, measured in the same run, is quick-xml
//! reading every event of the same bytes and keeping nothing (what any reader of the
//! file pays); read the other figure as a ratio to it. Results: BENCHMARKS.md.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use freesky::xmltv::{self, ChannelMap, Match};

/// 1,000 channels, 40 programmes each with a title, a description and a category:
/// about 10 MB, the shape of a provider's week.
fn guide() -> Vec<u8> {
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<tv>\n");
    for c in 0..1000 {
        s.push_str(&format!(
            "<channel id=\"ch{c}.example\"><display-name>Channel {c}</display-name></channel>\n"
        ));
    }
    for c in 0..1000 {
        for p in 0..40u32 {
            let at = |h: u32| format!("202612{:02}{:02}0000 +0000", 1 + h / 24, h % 24);
            s.push_str(&format!(
                "<programme start=\"{}\" stop=\"{}\" channel=\"ch{c}.example\">\
                 <title lang=\"en\">Programme {p} of {c}</title><desc lang=\"en\">What happens \
                 in programme {p}, told at some length as guides do.</desc>\
                 <category lang=\"en\">News</category></programme>\n",
                at(p),
                at(p + 1)
            ));
        }
    }
    s.push_str("</tv>\n");
    s.into_bytes()
}

/// Every guide channel is ours, by id.
struct All;
impl ChannelMap for All {
    fn map(&self, id: &str, _: &[String]) -> Option<(String, Match)> {
        Some((id.to_string(), Match::Id))
    }
}

fn bench_read(c: &mut Criterion) {
    let xml = guide();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("xmltv_read_10mb");
    g.throughput(Throughput::Bytes(xml.len() as u64));
    g.sample_size(20);
    g.bench_function("baseline_quick_xml_events", |b| {
        b.iter(|| {
            let mut reader = quick_xml::Reader::from_reader(black_box(&xml[..]));
            let mut buf = Vec::new();
            let mut n = 0usize;
            loop {
                match reader.read_event_into(&mut buf) {
                    Ok(quick_xml::events::Event::Eof) | Err(_) => break,
                    Ok(_) => n += 1,
                }
                buf.clear();
            }
            n
        })
    });
    let read = rt
        .block_on(xmltv::read(&xml[..], &All, 0, i64::MAX))
        .unwrap();
    assert_eq!(read.programme_count(), 40_000, "every programme is kept");
    g.bench_function("freesky_read", |b| {
        b.iter(|| {
            rt.block_on(xmltv::read(black_box(&xml[..]), &All, 0, i64::MAX))
                .unwrap()
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5));
    targets = bench_read
}
criterion_main!(benches);
