//! Randomized fuzzing on stable: seeded mutations of the committed corpus (bit flips,
//! byte changes, truncations, deletions, duplications, splices of two inputs, inserted
//! format tokens and random bytes), each run through its target (`tests/fuzz_support`).
//!
//! CI runs a small fixed number per target (the seed is fixed, so runs repeat). By hand:
//!
//! ```sh
//! FUZZ_SECONDS=120 cargo test --release --test it fuzz_random:: -- --nocapture --test-threads 1
//! FUZZ_ITERS=100000 FUZZ_SEED=7 cargo test --release --test it fuzz_random::hls
//! ```
//!
//! A failing input is printed in hex and written to `target/fuzz-crashes/`; add it to
//! `fuzz/corpus/{target}/` once fixed so `tests/fuzz_replay.rs` keeps checking it.

use std::time::{Duration, Instant};

use crate::fuzz_support::{corpus, hex, target, Target};

/// xorshift64*: small, fast, and repeatable from a seed (no dependency needed).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform-ish in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// Applies 1, 2, 4 or 8 stacked mutations to `data`.
fn mutate(rng: &mut Rng, data: &mut Vec<u8>, others: &[Vec<u8>], dictionary: &[&[u8]]) {
    // Mostly one or two: many stacked edits rarely leave a document that gets far.
    for _ in 0..1usize << rng.below(4) {
        let len = data.len();
        match rng.below(10) {
            0 if len > 0 => {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                data[i] = rng.next() as u8;
            }
            2 if len > 0 => data.truncate(rng.below(len)),
            3 if len > 0 => {
                let start = rng.below(len);
                let end = (start + 1 + rng.below(64)).min(len);
                data.drain(start..end);
            }
            4 if len > 0 => {
                // Duplicate a range (repeated lines and tags).
                let start = rng.below(len);
                let end = (start + 1 + rng.below(256)).min(len);
                let copy = data[start..end].to_vec();
                let at = rng.below(len + 1);
                data.splice(at..at, copy);
            }
            5 if !others.is_empty() => {
                // Splice: our head, another input's tail.
                let other = &others[rng.below(others.len())];
                let cut = rng.below(len + 1);
                let from = rng.below(other.len() + 1);
                data.truncate(cut);
                data.extend_from_slice(&other[from..]);
            }
            6 | 7 if !dictionary.is_empty() => {
                let token = dictionary[rng.below(dictionary.len())];
                let at = rng.below(len + 1);
                data.splice(at..at, token.iter().copied());
            }
            8 => {
                let n = 1 + rng.below(16);
                let at = rng.below(len + 1);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                data.splice(at..at, bytes);
            }
            _ => {
                // An interesting byte: line ends, quotes, markup, NUL, a UTF-8 lead byte.
                const BYTES: &[u8] = b"\n\r\"'<>&=,:#/\\ \0\xff\xc3\t{}[]$";
                let at = rng.below(len + 1);
                data.insert(at, BYTES[rng.below(BYTES.len())]);
            }
        }
    }
    // Keep inputs small: the targets are linear, size only slows the search.
    data.truncate(64 * 1024);
}

/// Runs `FUZZ_ITERS` (default `ci_iters`) mutations, or for `FUZZ_SECONDS` when set.
fn fuzz(name: &str, ci_iters: u64) {
    let t: &Target = target(name);
    let seeds: Vec<Vec<u8>> = corpus(name).into_iter().map(|(_, b)| b).collect();
    let seed = env_u64("FUZZ_SEED").unwrap_or(0x5eed_f00d);
    let mut rng = Rng(seed
        ^ name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        }));
    let deadline = env_u64("FUZZ_SECONDS").map(|s| Instant::now() + Duration::from_secs(s));
    let iters = match deadline {
        Some(_) => u64::MAX,
        None => env_u64("FUZZ_ITERS").unwrap_or(ci_iters),
    };

    let started = Instant::now();
    let mut done = 0u64;
    let mut crashes = Vec::new();
    // Keep some mutants as further seeds, so mutations compound over a long run.
    let mut pool = seeds.clone();
    while done < iters {
        if deadline.is_some_and(|d| done.is_multiple_of(64) && Instant::now() >= d) {
            break;
        }
        let mut input = pool[rng.below(pool.len())].clone();
        mutate(&mut rng, &mut input, &seeds, t.dictionary);
        done += 1;
        if std::panic::catch_unwind(|| (t.run)(&input)).is_err() {
            eprintln!(
                "{name}: iteration {done} failed; input (hex): {}",
                hex(&input)
            );
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-crashes");
            let _ = std::fs::create_dir_all(&dir);
            let _ = std::fs::write(dir.join(format!("{name}-{seed}-{done}")), &input);
            crashes.push(done);
            if crashes.len() >= 5 {
                break;
            }
        } else if rng.chance(16) && pool.len() < 4096 {
            pool.push(input);
        }
    }
    if name == "proxy_url" {
        // Bounded: at release speed a timed run makes tens of millions of mutants.
        done += proxy_roundtrips(&mut rng, (done / 4).clamp(1, 200_000));
    }
    println!(
        "fuzz {name}: {done} inputs in {:.1?} (seed {seed}), {} past the first check, {} failed",
        started.elapsed(),
        crate::fuzz_support::deep_count(name),
        crashes.len()
    );
    assert!(
        crashes.is_empty(),
        "{name}: iterations {crashes:?} failed (inputs above, in hex)"
    );
}

/// Seal → open of random link contents: whatever a playlist holds comes back intact.
fn proxy_roundtrips(rng: &mut Rng, n: u64) -> u64 {
    const PIECES: &[&str] = &[
        "a",
        "/",
        "..",
        "?",
        "#",
        "%",
        "%zz",
        "é",
        "\u{0}",
        " ",
        "\"",
        "http://",
        "https://x.example",
        "//h",
        ":",
        "@",
        "[",
        "]",
        "seg.ts",
        "\u{1F600}",
        "\\",
        "\n",
    ];
    let s = |rng: &mut Rng| -> String {
        (0..rng.below(8))
            .map(|_| PIECES[rng.below(PIECES.len())])
            .collect()
    };
    let bases = [
        "http://up.example/live/index.m3u8",
        "https://u:p@h.example:8443/a/b?t=1#f",
        "http://[::1]/x",
    ];
    let mut failed = 0;
    for _ in 0..n {
        let base = url::Url::parse(bases[rng.below(bases.len())]).expect("valid base URLs");
        let (service, channel, reference) = (s(rng), s(rng), s(rng));
        let headers: Vec<(String, String)> = (0..rng.below(4)).map(|_| (s(rng), s(rng))).collect();
        let run = || {
            crate::fuzz_support::proxy_roundtrip(&service, &channel, &base, &reference, &headers)
        };
        if std::panic::catch_unwind(run).is_err() {
            eprintln!(
                "proxy round trip failed: {service:?} {channel:?} {base} {reference:?} {headers:?}"
            );
            failed += 1;
        }
    }
    assert_eq!(failed, 0, "proxy round trips failed");
    n
}

// Defaults sized for a debug build on 2 shared cores: the whole file well under 20 s.

#[test]
fn m3u() {
    fuzz("m3u", 3000);
}

#[test]
fn hls() {
    fuzz("hls", 3000);
}

#[test]
fn xmltv() {
    fuzz("xmltv", 3000);
}

#[test]
fn config() {
    fuzz("config", 1500);
}

#[test]
fn proxy_url() {
    fuzz("proxy_url", 3000);
}

#[test]
fn playlist_rewrite() {
    fuzz("playlist_rewrite", 2000);
}

#[test]
fn upstream_json() {
    fuzz("upstream_json", 3000);
}

#[test]
fn segmenter() {
    fuzz("segmenter", 1500);
}
