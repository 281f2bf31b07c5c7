//! Guide matching measured on public data (see `scripts/bench-guide.sh`):
//!
//! ```text
//! guide_eval TSV M3U [--split tune|held-out|all] [--country] [--merge-ids] [--no-lang] [--no-url] [--threshold T]
//!            [--margin M] [--exact-margin E] [--show-wrong] [--show-unmatched]
//! guide_eval --timing TSV M3U
//! guide_eval TSV M3U --explain NAME [--group G] [--url U]
//! ```
//!
//! The first form strips the M3U's tvg-ids, matches each entry's name (with
//! `--country`, also the group a playlist sorted by country gives it: its id's country
//! code) against every guide channel of the TSV and prints precision, recall and the
//! wrong matches, and the ceiling of matching by equal names (`eval::ceiling`); each
//! entry's stream address is given too (`Query::urls`: its domain may hint a country;
//! `--no-url`: names only, as before the fifth pass). `--merge-ids`: a site's rows
//! that carry one id are one guide channel with all their names, as that site's XMLTV
//! guide lists it (`eval::one_channel_per_id`; the matcher still sees no id). The
//! second times 20,000 lineup channels against 50,000 guide channels (the M3U's names,
//! three times, with " HD" and " FHD" added the second and third, each with its stream
//! address; the TSV's first 50,000 rows) and prints
//! the time and the memory the index and the matching added (peak RSS).

use std::collections::HashSet;
use std::time::Instant;

use freesky::guide_match::eval::{self, Context, Split};
use freesky::guide_match::{Index, Query, Settings};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().position(|a| a == name);
    let value = |name: &str| flag(name).and_then(|i| args.get(i + 1)).cloned();
    let files: Vec<&String> = args
        .iter()
        .enumerate()
        .filter(|(i, a)| {
            let value_of_flag = *i > 0
                && [
                    "--split",
                    "--threshold",
                    "--margin",
                    "--exact-margin",
                    "--explain",
                    "--group",
                    "--url",
                ]
                .contains(&args[i - 1].as_str());
            !a.starts_with("--") && !value_of_flag
        })
        .map(|(_, a)| a)
        .collect();
    let [tsv, m3u] = files[..] else {
        eprintln!("usage: guide_eval [--timing] TSV M3U [--split tune|held-out|all] [--country] [--no-lang] [--no-url] [--threshold T] [--margin M] [--exact-margin E] [--show-wrong] [--show-unmatched]");
        std::process::exit(2);
    };
    let tsv = std::fs::read_to_string(tsv).expect("readable TSV");
    let m3u = std::fs::read_to_string(m3u).expect("readable M3U");
    let defaults = Settings::default();
    let settings = Settings {
        threshold: value("--threshold")
            .map_or(defaults.threshold, |v| v.parse().expect("a number")),
        margin: value("--margin").map_or(defaults.margin, |v| v.parse().expect("a number")),
        exact_margin: value("--exact-margin")
            .map_or(defaults.exact_margin, |v| v.parse().expect("a number")),
    };
    if flag("--timing").is_some() {
        timing(&tsv, &m3u, settings);
        return;
    }
    let split = match value("--split").as_deref() {
        Some("tune") => Split::Tune,
        Some("held-out") => Split::HeldOut,
        _ => Split::All,
    };
    let mut guide = eval::guide_set(&tsv, None);
    if flag("--merge-ids").is_some() {
        guide = eval::one_channel_per_id(guide);
    }
    if flag("--no-lang").is_some() {
        // As the product reads guides today: no `<display-name lang>`.
        for c in &mut guide.channels {
            c.lang = None;
        }
    }
    let mut entries = eval::entries(&m3u);
    if flag("--no-url").is_some() {
        for e in &mut entries {
            e.url.clear();
        }
    }
    let index = Index::new(&guide.channels);
    if let Some(name) = value("--explain") {
        // One name (and `--group G`) against the guide: every alternative, with its row.
        let q = Query {
            names: vec![name],
            group: value("--group").unwrap_or_default(),
            urls: value("--url").into_iter().collect(),
            ..Query::default()
        };
        let out = index.find(&q, &HashSet::new(), settings);
        println!("{}", out.reason);
        for a in &out.alternatives {
            let c = &guide.channels[a.channel];
            println!(
                "  {:.3} {:?} {} region {:?} lang {:?} id {:?}",
                a.score, a.name, c.id, c.region, c.lang, guide.answers[a.channel]
            );
        }
        return;
    }
    let context = if flag("--country").is_some() {
        Context::NameAndCountry
    } else {
        Context::Name
    };
    let r = eval::evaluate(&guide, &index, &entries, split, context, settings);
    println!(
        "split {split:?}, {context:?}, threshold {:.2}, margin {:.2}, exact margin {:.2}: {} guide channels, {} entries, {} with an answer",
        settings.threshold,
        settings.margin,
        settings.exact_margin,
        guide.channels.len(),
        r.entries,
        r.with_answer
    );
    println!(
        "right {}, wrong {}, unverifiable {}, unmatched {}, matched without an answer {} (of which wrong by their id: {})",
        r.right, r.wrong, r.unverifiable, r.unmatched, r.matched_without_answer, r.wrong_without_answer
    );
    println!(
        "by name (every row of the chosen name): right {}, wrong {}, precision {:.2}%, recall {:.2}%",
        r.by_name_right,
        r.by_name_wrong,
        100.0 * r.by_name_precision(),
        100.0 * r.by_name_recall()
    );
    println!(
        "labelled (only chosen rows that carry an id): right {}, wrong {}, precision {:.2}%",
        r.strict_right,
        r.labelled_wrong,
        100.0 * r.labelled_precision()
    );
    println!(
        "strict (the chosen row's own id, none wrong): right {}, wrong {}, precision {:.2}%",
        r.strict_right,
        r.strict_wrong,
        100.0 * r.strict_precision()
    );
    println!(
        "precision {:.2}%, recall {:.2}%",
        100.0 * r.precision(),
        100.0 * r.recall()
    );
    let c = eval::ceiling(&guide, &entries, split);
    let pct = |n: usize| 100.0 * n as f64 / c.with_answer.max(1) as f64;
    println!(
        "ceiling of equal names: {} of {} ({:.1}%) have a guide name equal to theirs on a row of their id; {} ({:.1}%) a name no other id carries; {} ({:.1}%) such a name no site lists twice",
        c.equal,
        c.with_answer,
        pct(c.equal),
        c.sole,
        pct(c.sole),
        c.sole_once,
        pct(c.sole_once)
    );
    if flag("--show-unmatched").is_some() {
        for (name, reason) in &r.unmatched_examples {
            println!("unmatched: {name:?}: {reason}");
        }
    }
    if flag("--show-wrong").is_some() {
        for (name, chosen, right, got) in &r.wrong_examples {
            println!("wrong: {name:?} -> {chosen:?} ({got}, right: {right})");
        }
    }
}

fn timing(tsv: &str, m3u: &str, settings: Settings) {
    let guide = eval::guide_set(tsv, Some(50_000));
    let entries = eval::entries(m3u);
    let queries: Vec<Query> = entries
        .iter()
        .map(|e| (e.name.clone(), &e.url))
        .chain(entries.iter().map(|e| (format!("{} HD", e.name), &e.url)))
        .chain(entries.iter().map(|e| (format!("{} FHD", e.name), &e.url)))
        .take(20_000)
        .map(|(n, url)| Query {
            names: vec![n],
            urls: vec![url.clone()],
            ..Query::default()
        })
        .collect();
    let before = rss_kb("VmRSS");
    let start = Instant::now();
    let index = Index::new(&guide.channels);
    let built = start.elapsed();
    let none = HashSet::new();
    let matched = queries
        .iter()
        .filter(|q| index.find(q, &none, settings).chosen.is_some())
        .count();
    let total = start.elapsed();
    let peak = rss_kb("VmHWM");
    println!(
        "{} lineup channels against {} guide channels: index {:.0} ms, total {:.0} ms, {} matched",
        queries.len(),
        index.len(),
        built.as_secs_f64() * 1e3,
        total.as_secs_f64() * 1e3,
        matched
    );
    println!(
        "memory: RSS {:.1} MB with the data loaded, peak {:.1} MB after matching: {:.1} MB added",
        before as f64 / 1024.0,
        peak as f64 / 1024.0,
        peak.saturating_sub(before) as f64 / 1024.0
    );
}

/// A `/proc/self/status` figure in kB (0 where there is none).
fn rss_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}
