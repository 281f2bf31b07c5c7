//! In-process cost of a channel search (`Lineup::search`: `/api/channels/search`, the
//! dashboard's `?q=` and its channel pages), on a lineup of 100,000 channels; and of
//! finding the channels a service moved to another tvg-id when its list is refreshed
//! (`lineup::moved_tvg_ids`), beside merging the same list (`lineup::merge`, which
//! every lineup build does), on the real 9,943-entry list in `../shared/data/`.
//!
//! `cargo bench --bench lineup`. The baseline, measured in the same run, is the search
//! as it was before the lineup kept its folded text: every channel's name, group and
//! tags folded (accents and case) per query. Read the other figures as ratios to it.
//! Results: BENCHMARKS.md.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use freesky::lineup::Lineup;
use freesky::model::LineupChannel;

const CHANNELS: usize = 100_000;

/// Names, groups and tags shaped like a big provider's: accents, mixed case, country
/// prefixes.
fn channels() -> Vec<LineupChannel> {
    let countries = ["FR", "DE", "ES", "UK", "PT", "IT", "PL", "TR"];
    let kinds = [
        "Télé",
        "Sport",
        "Cinéma",
        "Actualités",
        "Música",
        "Kids",
        "Doc",
    ];
    (0..CHANNELS)
        .map(|i| {
            let country = countries[i % countries.len()];
            let kind = kinds[(i / 7) % kinds.len()];
            let name = format!("{country}: {kind} {} HD", i % 997);
            LineupChannel {
                id: format!("ch-{i}").into(),
                number: i as u32 + 1,
                name: name.into(),
                logo: Default::default(),
                logo_from: Default::default(),
                group: format!("{country} | {kind}").into(),
                tags: if i % 5 == 0 {
                    vec!["Ünterhaltung".into()]
                } else {
                    vec![]
                },
                guide_id: Default::default(),
                station_id: Default::default(),
                sources: vec![],
                catchup_days: 0,
            }
        })
        .collect()
}

fn fold(s: &str) -> String {
    deunicode::deunicode(s).to_lowercase()
}

/// The search before this change: a fold of every field per query.
fn search_folding_each_time<'a>(l: &'a Lineup, query: &str) -> Vec<&'a LineupChannel> {
    let q = fold(query);
    let q = q.trim();
    l.channels
        .iter()
        .filter(|c| {
            q.is_empty()
                || fold(&c.name).contains(q)
                || fold(&c.group).contains(q)
                || c.tags.iter().any(|t| fold(t).contains(q))
        })
        .collect()
}

fn bench_search(c: &mut Criterion) {
    let lineup = Lineup::new(channels());
    let queries = ["actualites 42", "unterhaltung", "zzz-none"];
    for q in queries {
        let ids = |found: Vec<&LineupChannel>| -> Vec<String> {
            found.iter().map(|c| c.id.to_string()).collect()
        };
        assert_eq!(
            ids(search_folding_each_time(&lineup, q)),
            ids(lineup.search(q)),
            "both searches find the same channels for {q}"
        );
    }
    assert!(!lineup.search(queries[0]).is_empty() && !lineup.search(queries[1]).is_empty());
    let mut g = c.benchmark_group("lineup_search_100k");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    g.bench_function("baseline_fold_per_query", |b| {
        b.iter(|| {
            for q in queries {
                black_box(search_folding_each_time(&lineup, black_box(q)).len());
            }
        })
    });
    g.bench_function("kept_text", |b| {
        b.iter(|| {
            for q in queries {
                black_box(lineup.search(black_box(q)).len());
            }
        })
    });
    // A lineup's first search makes its text: once per lineup built.
    g.bench_function("first_search_of_a_lineup", |b| {
        b.iter_batched(
            || Lineup::new(channels()),
            |l| {
                for q in queries {
                    black_box(l.search(black_box(q)).len());
                }
                l
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

/// The real list's entries as one service's channels.
fn real_list() -> Vec<freesky::model::Channel> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/data/iptv-org-all-2023-01-31.m3u"
    );
    let text = std::fs::read_to_string(path).expect("the shared 9,943-entry list");
    freesky::m3u::parse(&text)
        .entries
        .into_iter()
        .enumerate()
        .map(|(i, e)| freesky::model::Channel {
            id: i.to_string(),
            tvg_id: e
                .attrs
                .iter()
                .find(|(k, _)| k == "tvg-id")
                .map(|(_, v)| v.clone())
                .unwrap_or_default(),
            name: e.name,
            logo: String::new(),
            group: String::new(),
            tags: vec![],
            station_id: String::new(),
            number: None,
            service: "S".into(),
            headers: vec![],
            url: None,
            catchup: None,
        })
        .collect()
}

fn bench_moves(c: &mut Criterion) {
    let old = real_list();
    // The refreshed list: every 100th channel under a new tvg-id.
    let mut new = old.clone();
    for (i, ch) in new.iter_mut().enumerate() {
        if i % 100 == 0 && !ch.tvg_id.is_empty() {
            ch.tvg_id = format!("renamed-{i}.tv");
        }
    }
    let moves = freesky::lineup::moved_tvg_ids(&old, &new);
    assert!(moves.len() > 10, "{} moves", moves.len());
    let inputs = [freesky::lineup::ServiceChannels {
        service: "S",
        priority: 0,
        channels: &new,
    }];
    let mut g = c.benchmark_group("lineup_list_refresh_9943");
    g.sample_size(20).measurement_time(Duration::from_secs(5));
    g.bench_function("baseline_merge", |b| {
        b.iter(|| black_box(freesky::lineup::merge(black_box(&inputs), &[])).len())
    });
    // A refresh where every 100th channel has a new tvg-id: names compared.
    g.bench_function("moved_tvg_ids", |b| {
        b.iter(|| freesky::lineup::moved_tvg_ids(black_box(&old), black_box(&new)).len())
    });
    // The common refresh, no new tvg-id: two sets of ids, no name work.
    let same = old.clone();
    g.bench_function("moved_tvg_ids_unchanged", |b| {
        b.iter(|| freesky::lineup::moved_tvg_ids(black_box(&old), black_box(&same)).len())
    });
    g.finish();
}

criterion_group!(benches, bench_search, bench_moves);
criterion_main!(benches);
