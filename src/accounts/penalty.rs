//! Slows repeated wrong logins from one address: after `FREE` failures in a row, each
//! further attempt from there waits first, doubling up to `MAX_WAIT`; a success or
//! `FORGET` without failures clears the address. Guessing passwords through the
//! Xtream routes (every `/live/U/P/...` is a login) then costs the guesser time.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const FREE: u32 = 3;
const FIRST_WAIT: Duration = Duration::from_millis(250);
const MAX_WAIT: Duration = Duration::from_secs(4);
const FORGET: Duration = Duration::from_secs(600);
/// Addresses remembered at most (the oldest are forgotten beyond it).
const MAX_ADDRESSES: usize = 10_000;

#[derive(Default)]
pub struct Penalty(Mutex<HashMap<IpAddr, (u32, Instant)>>);

impl Penalty {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, (u32, Instant)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long an attempt from `ip` waits now.
    pub fn delay(&self, ip: IpAddr) -> Duration {
        let map = self.lock();
        match map.get(&ip) {
            Some((n, last)) if *n >= FREE && last.elapsed() < FORGET => {
                let doublings = (n - FREE).min(5);
                (FIRST_WAIT * 2u32.pow(doublings)).min(MAX_WAIT)
            }
            _ => Duration::ZERO,
        }
    }

    pub async fn wait(&self, ip: IpAddr) {
        let d = self.delay(ip);
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
    }

    pub fn failure(&self, ip: IpAddr) {
        let mut map = self.lock();
        if map.len() >= MAX_ADDRESSES && !map.contains_key(&ip) {
            map.retain(|_, (_, last)| last.elapsed() < FORGET);
            if map.len() >= MAX_ADDRESSES {
                if let Some(oldest) = map.iter().min_by_key(|(_, (_, l))| *l).map(|(k, _)| *k) {
                    map.remove(&oldest);
                }
            }
        }
        let e = map.entry(ip).or_insert((0, Instant::now()));
        if e.1.elapsed() >= FORGET {
            e.0 = 0;
        }
        e.0 += 1;
        e.1 = Instant::now();
    }

    pub fn success(&self, ip: IpAddr) {
        self.lock().remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_after_free_failures_and_clear_on_success() {
        let p = Penalty::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..FREE {
            assert_eq!(p.delay(ip), Duration::ZERO);
            p.failure(ip);
        }
        assert_eq!(p.delay(ip), FIRST_WAIT);
        p.failure(ip);
        assert_eq!(p.delay(ip), FIRST_WAIT * 2);
        for _ in 0..20 {
            p.failure(ip);
        }
        assert_eq!(p.delay(ip), MAX_WAIT);
        p.success(ip);
        assert_eq!(p.delay(ip), Duration::ZERO);
    }
}
