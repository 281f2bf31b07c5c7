//! Load tool for continuous MPEG-TS streams (`/api/stream/{id}.ts`): opens N
//! concurrent streaming GETs on one URL, reads each for SECONDS, and prints what the
//! viewers got. Used by `scripts/bench-proxy.sh` and `scripts/soak.sh`; see
//! BENCHMARKS.md. URL may be a comma-separated list: viewers are spread round-robin.
//!
//! ```sh
//! cargo run --release --example ts_viewers -- http://127.0.0.1:8005/api/stream/demo.ts 1000 20
//! ```
//!
//! Output: a human summary, then one machine-readable line starting with `RESULT `
//! (`key=value` pairs). Every viewer's bytes are also checked for MPEG-TS packet
//! alignment: a 0x47 sync byte every 188 bytes from the first byte on. Exit status:
//! 0 when every viewer got a 200 and MPEG-TS bytes until the end without an error,
//! 1 otherwise, 2 on bad arguments.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use tokio::time::{timeout_at, Instant};

const TS_PACKET: u64 = 188;
const TS_SYNC: u8 = 0x47;

#[derive(Default)]
struct Viewer {
    status: Option<u16>,
    content_type: Option<String>,
    bytes: u64,
    first_byte: Option<Duration>,
    /// Positions (multiples of 188 from the start) that did not hold a sync byte.
    sync_errors: u64,
    /// The server closed the body before SECONDS were up.
    ended_early: bool,
    error: Option<String>,
}

impl Viewer {
    /// Answered 200 and sent some bytes.
    fn got_data(&self) -> bool {
        self.status == Some(200) && self.bytes > 0
    }
}

fn usage() -> ! {
    eprintln!("usage: ts_viewers URL[,URL...] VIEWERS SECONDS");
    std::process::exit(2);
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, n, secs] = args.as_slice() else {
        usage()
    };
    let Ok(n) = n.parse::<usize>() else { usage() };
    let Ok(secs) = secs.parse::<f64>() else {
        usage()
    };
    let urls: Vec<String> = url
        .split(',')
        .filter(|u| !u.is_empty())
        .map(str::to_string)
        .collect();
    if urls.is_empty() {
        usage()
    }
    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(10))
        .build()?;

    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let client = client.clone();
            let url = urls[i % urls.len()].clone();
            tokio::spawn(async move { watch(client, url, start, deadline).await })
        })
        .collect();
    let mut viewers = Vec::with_capacity(n);
    for t in tasks {
        viewers.push(t.await.unwrap_or_else(|e| Viewer {
            error: Some(format!("task failed: {e}")),
            ..Viewer::default()
        }));
    }
    report(&viewers, url, secs);
    let all_ok = viewers
        .iter()
        .all(|v| v.got_data() && v.error.is_none() && !v.ended_early && v.sync_errors == 0);
    std::process::exit(if all_ok { 0 } else { 1 });
}

/// One viewer: GET, then read until the deadline.
async fn watch(client: reqwest::Client, url: String, start: Instant, deadline: Instant) -> Viewer {
    let mut v = Viewer::default();
    let resp = match timeout_at(deadline, client.get(&url).send()).await {
        Err(_) => {
            v.error = Some("no response head before the end".into());
            return v;
        }
        Ok(Err(e)) => {
            v.error = Some(format!("request: {}", cause(&e)));
            return v;
        }
        Ok(Ok(r)) => r,
    };
    v.status = Some(resp.status().as_u16());
    v.content_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string);
    let mut body = resp.bytes_stream();
    loop {
        match timeout_at(deadline, body.next()).await {
            Err(_) => break, // SECONDS are up: the normal end
            Ok(None) => {
                v.ended_early = true;
                break;
            }
            Ok(Some(Err(e))) => {
                v.error = Some(format!("body: {}", cause(&e)));
                break;
            }
            Ok(Some(Ok(chunk))) => {
                if chunk.is_empty() {
                    continue;
                }
                if v.first_byte.is_none() {
                    v.first_byte = Some(start.elapsed());
                }
                // Check the sync byte of every packet that starts inside this chunk.
                let offset = v.bytes;
                let first = ((TS_PACKET - offset % TS_PACKET) % TS_PACKET) as usize;
                for i in (first..chunk.len()).step_by(TS_PACKET as usize) {
                    if chunk[i] != TS_SYNC {
                        v.sync_errors += 1;
                    }
                }
                v.bytes += chunk.len() as u64;
            }
        }
    }
    v
}

/// The innermost cause of a reqwest error (its Display repeats the URL).
fn cause(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = src {
        msg = s.to_string();
        src = s.source();
    }
    msg
}

fn percentile<T: Copy + Ord>(sorted: &[T], p: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    Some(sorted[i])
}

fn report(viewers: &[Viewer], url: &str, secs: f64) {
    let n = viewers.len();
    let ok = viewers.iter().filter(|v| v.status == Some(200)).count();
    let with_data = viewers.iter().filter(|v| v.got_data()).count();
    let errors = viewers.iter().filter(|v| v.error.is_some()).count();
    let ended_early = viewers.iter().filter(|v| v.ended_early).count();
    let sync_bad = viewers.iter().filter(|v| v.sync_errors > 0).count();

    let mut bytes: Vec<u64> = viewers.iter().map(|v| v.bytes).collect();
    bytes.sort_unstable();
    let total: u64 = bytes.iter().sum();
    let mut ttfb: Vec<u128> = viewers
        .iter()
        .filter_map(|v| v.first_byte.map(|d| d.as_millis()))
        .collect();
    ttfb.sort_unstable();

    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    for v in viewers {
        let key = match v.status {
            Some(s) => format!("{s}"),
            None => "none".into(),
        };
        *statuses.entry(key).or_default() += 1;
    }
    let mut types: BTreeMap<String, usize> = BTreeMap::new();
    for v in viewers.iter().filter(|v| v.status.is_some()) {
        let t = v.content_type.clone().unwrap_or_else(|| "(none)".into());
        *types.entry(t).or_default() += 1;
    }
    let mut errs: BTreeMap<String, usize> = BTreeMap::new();
    for e in viewers.iter().filter_map(|v| v.error.as_ref()) {
        *errs.entry(e.clone()).or_default() += 1;
    }

    let mb = |b: u64| b as f64 / 1e6;
    let p = |q| percentile(&bytes, q).unwrap_or(0);
    println!("ts_viewers: {n} viewers of {url} for {secs} s");
    println!("  HTTP status: {statuses:?}");
    println!("  content-type: {types:?}");
    println!(
        "  got data (200 and bytes): {with_data} of {n}; errors: {errors}; body ended early: {ended_early}"
    );
    println!(
        "  bytes per viewer: min {:.2} MB, median {:.2} MB, max {:.2} MB ({:.1} Mbit/s median; all viewers {:.1} MB/s)",
        mb(p(0.0)),
        mb(p(0.5)),
        mb(p(1.0)),
        mb(p(0.5)) * 8.0 / secs,
        mb(total) / secs
    );
    if let (Some(a), Some(m), Some(z)) = (
        percentile(&ttfb, 0.0),
        percentile(&ttfb, 0.5),
        percentile(&ttfb, 1.0),
    ) {
        println!("  first byte after: min {a} ms, median {m} ms, max {z} ms");
    }
    println!("  viewers whose bytes break MPEG-TS 188-byte packet alignment: {sync_bad}");
    for (e, count) in errs.iter().take(5) {
        println!("  error x{count}: {e}");
    }
    println!(
        "RESULT viewers={n} status_200={ok} with_data={} errors={errors} ended_early={ended_early} \
         sync_bad={sync_bad} bytes_min={} bytes_median={} bytes_max={} bytes_total={total} \
         ttfb_median_ms={}",
        with_data,
        p(0.0),
        p(0.5),
        p(1.0),
        percentile(&ttfb, 0.5).map_or(-1, |t| t as i64),
    );
}
