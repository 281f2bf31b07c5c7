//! Slows repeated wrong logins from one address: after `FREE` failures in a row, each
//! further attempt from there waits first, doubling up to `MAX_WAIT`, and attempts made
//! at once wait in turn (each takes the next free slot), so parallel guesses go no
//! faster than one at a time. An address is its IPv6 /64 network, as the per-client
//! connection cap counts it. A login that an earlier verification already vouches for
//! does not wait (`Accounts::login`), and a success clears nothing: one good account
//! cannot reset the wait for guesses at another. `FORGET` without failures clears the
//! address. Guessing passwords through the Xtream routes (every `/live/U/P/...` is a
//! login) then costs the guesser time.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const FREE: u32 = 3;
const FIRST_WAIT: Duration = Duration::from_millis(250);
const MAX_WAIT: Duration = Duration::from_secs(4);
const FORGET: Duration = Duration::from_secs(600);
/// How far ahead turns are handed out: attempts past it (a burst of them, each hung
/// up at once) are refused without a check instead of pushing every later login
/// from the address back by hours.
const MAX_QUEUE: Duration = Duration::from_secs(16);
/// Addresses remembered at most (the oldest are forgotten beyond it).
const MAX_ADDRESSES: usize = 10_000;

/// One address's failures in a row, when the last was, and the first moment the next
/// attempt may go.
#[derive(Clone, Copy)]
struct Entry {
    failures: u32,
    last: Instant,
    next_slot: Instant,
}

#[derive(Default)]
pub struct Penalty(Mutex<HashMap<IpAddr, Entry>>);

impl Penalty {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Entry>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The wait between attempts from an address with `failures` in a row.
    fn spacing(failures: u32) -> Duration {
        if failures < FREE {
            return Duration::ZERO;
        }
        let doublings = (failures - FREE).min(5);
        (FIRST_WAIT * 2u32.pow(doublings)).min(MAX_WAIT)
    }

    /// How long an attempt from `ip` waits now, taking its turn (the next attempt from
    /// there waits one spacing more); `None` when turns are handed out `MAX_QUEUE`
    /// ahead already: the attempt is refused.
    pub fn reserve(&self, ip: IpAddr) -> Option<Duration> {
        let key = crate::limits::client_key(ip);
        let mut map = self.lock();
        let Some(e) = map.get_mut(&key) else {
            return Some(Duration::ZERO);
        };
        let now = Instant::now();
        if e.last.elapsed() >= FORGET {
            map.remove(&key);
            return Some(Duration::ZERO);
        }
        let spacing = Self::spacing(e.failures);
        if spacing.is_zero() {
            return Some(Duration::ZERO);
        }
        let slot = (e.next_slot + spacing).max(now + spacing);
        if slot - now > MAX_QUEUE {
            return None;
        }
        e.next_slot = slot;
        Some(slot - now)
    }

    /// The wait a first attempt from `ip` would get now (no turn taken).
    pub fn delay(&self, ip: IpAddr) -> Duration {
        let key = crate::limits::client_key(ip);
        match self.lock().get(&key) {
            Some(e) if e.last.elapsed() < FORGET => Self::spacing(e.failures),
            _ => Duration::ZERO,
        }
    }

    /// Waits for the attempt's turn; false when it is refused (see `reserve`).
    pub async fn wait(&self, ip: IpAddr) -> bool {
        match self.reserve(ip) {
            Some(d) if !d.is_zero() => {
                tokio::time::sleep(d).await;
                true
            }
            Some(_) => true,
            None => false,
        }
    }

    pub fn failure(&self, ip: IpAddr) {
        let key = crate::limits::client_key(ip);
        let mut map = self.lock();
        if map.len() >= MAX_ADDRESSES && !map.contains_key(&key) {
            map.retain(|_, e| e.last.elapsed() < FORGET);
            if map.len() >= MAX_ADDRESSES {
                if let Some(oldest) = map.iter().min_by_key(|(_, e)| e.last).map(|(k, _)| *k) {
                    map.remove(&oldest);
                }
            }
        }
        let now = Instant::now();
        let e = map.entry(key).or_insert(Entry {
            failures: 0,
            last: now,
            next_slot: now,
        });
        if e.last.elapsed() >= FORGET {
            e.failures = 0;
        }
        e.failures += 1;
        e.last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_after_free_failures_and_a_success_clears_nothing() {
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
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(p.delay(other), Duration::ZERO);
    }

    #[test]
    fn attempts_at_once_wait_in_turn() {
        let p = Penalty::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..FREE {
            p.failure(ip);
        }
        let waits: Vec<Duration> = (0..4).map(|_| p.reserve(ip).unwrap()).collect();
        for (i, w) in waits.iter().enumerate() {
            let turn = FIRST_WAIT * (i as u32 + 1);
            assert!(
                *w <= turn && *w + Duration::from_millis(50) >= turn,
                "attempt {i} waits {w:?}, expected about {turn:?}"
            );
        }
    }

    #[test]
    fn turns_are_handed_out_a_bounded_time_ahead() {
        let p = Penalty::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..FREE {
            p.failure(ip);
        }
        let given = (0..1000).filter(|_| p.reserve(ip).is_some()).count();
        assert_eq!(
            given as u32,
            MAX_QUEUE.as_millis() as u32 / FIRST_WAIT.as_millis() as u32
        );
        assert!(p.reserve(ip).is_none());
    }

    #[test]
    fn an_ipv6_address_is_its_64_network() {
        let p = Penalty::default();
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2::ffff".parse().unwrap();
        for _ in 0..FREE {
            p.failure(a);
        }
        assert_eq!(p.delay(b), FIRST_WAIT, "another address of the same /64");
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(p.delay(c), Duration::ZERO);
    }
}
