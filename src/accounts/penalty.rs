//! Slows repeated wrong logins from one address: after `FREE` failures in a row, each
//! further attempt from there waits first, doubling up to `MAX_WAIT`, and attempts made
//! at once wait in turn (each takes the next free slot; an attempt still being checked
//! counts as a failure for the ones after it), so parallel guesses go no faster than
//! one at a time, from the first burst on. An address is its IPv6 /64 network, as the per-client
//! connection cap counts it. A login that an earlier verification already vouches for
//! does not wait (`Accounts::login`), and a success clears nothing: one good account
//! cannot reset the wait for guesses at another. `FORGET` without failures clears the
//! address. Guessing passwords through the Xtream routes (every `/live/U/P/...` is a
//! login) then costs the guesser time.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
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
    /// Attempts from there that took a turn and are not decided yet (`Turn`).
    pending: u32,
    last: Instant,
    next_slot: Instant,
}

#[derive(Default)]
pub struct Penalty(Arc<Mutex<HashMap<IpAddr, Entry>>>);

/// An attempt's turn, taken by `Penalty::wait`: while held (until its login is
/// decided and a failure recorded), the attempt counts as a failure for the attempts
/// from its address after it.
pub struct Turn {
    map: Arc<Mutex<HashMap<IpAddr, Entry>>>,
    key: IpAddr,
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = map.get_mut(&self.key) {
            e.pending = e.pending.saturating_sub(1);
        }
    }
}

impl Penalty {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Entry>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The entry of `key`, made when missing (forgetting the oldest idle ones beyond
    /// `MAX_ADDRESSES`); one whose last failure is `FORGET` old starts again.
    fn entry(map: &mut HashMap<IpAddr, Entry>, key: IpAddr, now: Instant) -> &mut Entry {
        if map.len() >= MAX_ADDRESSES && !map.contains_key(&key) {
            map.retain(|_, e| e.pending > 0 || e.last.elapsed() < FORGET);
            if map.len() >= MAX_ADDRESSES {
                let oldest = map
                    .iter()
                    .filter(|(_, e)| e.pending == 0)
                    .min_by_key(|(_, e)| e.last)
                    .map(|(k, _)| *k);
                if let Some(oldest) = oldest {
                    map.remove(&oldest);
                }
            }
        }
        let e = map.entry(key).or_insert(Entry {
            failures: 0,
            pending: 0,
            last: now,
            next_slot: now,
        });
        if e.failures > 0 && e.last.elapsed() >= FORGET {
            e.failures = 0;
        }
        e
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
    /// there waits one spacing more), and the turn; `None` when turns are handed out
    /// `MAX_QUEUE` ahead already: the attempt is refused.
    pub fn reserve(&self, ip: IpAddr) -> Option<(Duration, Turn)> {
        let key = crate::limits::client_key(ip);
        let now = Instant::now();
        let mut map = self.lock();
        let e = Self::entry(&mut map, key, now);
        // The attempts not decided yet count as failures: a burst of guesses from a
        // fresh address waits as if made one after another.
        let spacing = Self::spacing(e.failures + e.pending);
        let wait = if spacing.is_zero() {
            Duration::ZERO
        } else {
            let slot = (e.next_slot + spacing).max(now + spacing);
            if slot - now > MAX_QUEUE {
                return None;
            }
            e.next_slot = slot;
            slot - now
        };
        e.pending += 1;
        let turn = Turn {
            map: self.0.clone(),
            key,
        };
        Some((wait, turn))
    }

    /// The wait a first attempt from `ip` would get now (no turn taken).
    pub fn delay(&self, ip: IpAddr) -> Duration {
        let key = crate::limits::client_key(ip);
        match self.lock().get(&key) {
            Some(e) if e.last.elapsed() < FORGET => Self::spacing(e.failures),
            _ => Duration::ZERO,
        }
    }

    /// Waits for the attempt's turn, and gives it (hold it until the login is decided,
    /// and its failure recorded); `None` when it is refused (see `reserve`).
    pub async fn wait(&self, ip: IpAddr) -> Option<Turn> {
        let (wait, turn) = self.reserve(ip)?;
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        Some(turn)
    }

    pub fn failure(&self, ip: IpAddr) {
        let key = crate::limits::client_key(ip);
        let now = Instant::now();
        let mut map = self.lock();
        let e = Self::entry(&mut map, key, now);
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
        let turns: Vec<(Duration, Turn)> = (0..4).map(|_| p.reserve(ip).unwrap()).collect();
        let waits: Vec<Duration> = turns.iter().map(|(w, _)| *w).collect();
        for (i, w) in waits.iter().enumerate() {
            // Each attempt ahead still undecided counts as one more failure: its
            // spacing doubles.
            let turn = FIRST_WAIT * (2u32.pow(i as u32 + 1) - 1);
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
        let given: Vec<_> = (0..1000).filter_map(|_| p.reserve(ip)).collect();
        assert!(p.reserve(ip).is_none());
        // Each one waiting counts as a failure for the next: the waits double.
        let waits: Vec<u128> = given.iter().map(|(w, _)| w.as_millis()).collect();
        assert!(waits.len() >= 5 && waits.len() <= 8, "{waits:?}");
        assert!(waits.windows(2).all(|w| w[1] > w[0]), "{waits:?}");
        assert!(*waits.last().unwrap() <= MAX_QUEUE.as_millis());
    }

    /// A burst of attempts from a fresh address: the first `FREE` go at once, the
    /// rest in turns as if each earlier one had failed; once they are decided (their
    /// turns dropped) without failing, the next goes at once again.
    #[test]
    fn a_first_burst_waits_in_turn_too() {
        let p = Penalty::default();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let burst: Vec<_> = (0..6).map(|_| p.reserve(ip).unwrap()).collect();
        let waits: Vec<Duration> = burst.iter().map(|(w, _)| *w).collect();
        assert!(
            waits[..FREE as usize].iter().all(|w| w.is_zero()),
            "{waits:?}"
        );
        assert!(
            waits[FREE as usize] >= FIRST_WAIT - Duration::from_millis(50),
            "{waits:?}"
        );
        assert!(waits[5] > waits[4] && waits[4] > waits[3], "{waits:?}");
        drop(burst);
        assert!(
            p.reserve(ip).unwrap().0.is_zero(),
            "good logins leave no wait"
        );
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
