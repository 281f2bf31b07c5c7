//! Memory per open account connection: opens N HLS players (each its own channel and
//! address, so each counts) and N `.ts` connections (guards held) of one unlimited
//! account through `freesky::accounts`, and prints, per connection, the heap bytes each
//! batch left allocated (a counting allocator: exact) and the resident memory (VmRSS)
//! it added (blurred by memory the allocator kept from the argon2 hashing before).
//! See BENCHMARKS.md.
//!
//! ```sh
//! cargo run --example account_conns -- 10000
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The system allocator, counting the bytes allocated and not yet freed.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to `System` unchanged; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live() -> u64 {
    LIVE.load(Ordering::Relaxed) as u64
}

/// This process's resident memory in bytes (Linux `/proc/self/status`).
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn main() {
    let n: u32 = match std::env::args().nth(1).map(|a| a.parse()) {
        None => 10_000,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("usage: account_conns [CONNECTIONS]");
            std::process::exit(2);
        }
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let config = freesky::config::Config::parse(
        &format!(
            "[server]\nstate_dir = '{}'\n\n[[users]]\nname = \"bench-viewer\"\npassword = \"bench\"\nmax_connections = 0\n",
            dir.path().display()
        ),
        "bench.toml",
        &|_| None,
    )
    .expect("config");
    let store = freesky::store::Store::open(dir.path()).expect("store");
    let accounts =
        freesky::accounts::Accounts::new(&config.users, store, None).expect("the accounts");
    let account = accounts.get("bench-viewer").expect("the account");
    // Made before the first reading: the caller's strings are not the connections'.
    let channels: Vec<String> = (0..n).map(|i| format!("channel-{i:05}")).collect();
    let address = |i: u32| Some(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)));

    let (before, heap0) = (rss_bytes(), live());
    for (i, channel) in channels.iter().enumerate() {
        accounts
            .connect(&account, channel, address(i as u32), true)
            .expect("an HLS player");
    }
    let (hls, heap1) = (rss_bytes(), live());
    let mut guards = Vec::with_capacity(n as usize);
    let (after_vec, heap2) = (rss_bytes(), live());
    for (i, channel) in channels.iter().enumerate() {
        let conn = accounts
            .connect(&account, channel, address(i as u32), false)
            .expect("a .ts connection");
        guards.push(conn.into_guard().expect("a guard"));
    }
    let (ts, heap3) = (rss_bytes(), live());
    let per = |delta: u64| delta as f64 / f64::from(n);
    let (hls_heap, ts_heap) = (heap1 - heap0, heap3 - heap2);
    let (hls_rss, ts_rss) = (hls.saturating_sub(before), ts.saturating_sub(after_vec));
    println!(
        "{n} HLS players: heap +{} KiB ({:.0} bytes each); RSS +{} KiB ({:.0} bytes each)",
        hls_heap / 1024,
        per(hls_heap),
        hls_rss / 1024,
        per(hls_rss)
    );
    println!(
        "{n} .ts connections: heap +{} KiB ({:.0} bytes each, guards' Vec apart); RSS +{} KiB ({:.0} bytes each)",
        ts_heap / 1024,
        per(ts_heap),
        ts_rss / 1024,
        per(ts_rss)
    );
    println!(
        "RESULT conns={n} hls_heap_each={:.0} ts_heap_each={:.0} hls_rss_each={:.0} ts_rss_each={:.0}",
        per(hls_heap),
        per(ts_heap),
        per(hls_rss),
        per(ts_rss)
    );
    drop(guards);
}
