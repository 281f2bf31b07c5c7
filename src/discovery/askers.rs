//! Who is answered: only askers on this host or the LAN, each through its own token
//! bucket, so discovery can be neither probed from outside nor used as a reflector.

use std::net::IpAddr;
use std::time::Instant;

/// Whether `ip` may be answered at all: only an asker on this host or the local network
/// (loopback, RFC 1918 private, IPv6 unique-local `fc00::/7`, link-local), as a tuner on
/// a home LAN would be. Anything else reached the socket from outside (a forwarded
/// port, a public interface) or claims a source address it cannot have; answering it
/// would tell the internet where the tuner is, or send replies at a spoofed victim.
pub fn is_lan_asker(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private() || v4.is_link_local(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_lan_asker(IpAddr::V4(v4)),
            None => {
                let first = v6.segments()[0];
                v6.is_loopback()
                    // fc00::/7: unique local addresses.
                    || first & 0xFE00 == 0xFC00
                    // fe80::/10: link-local.
                    || first & 0xFFC0 == 0xFE80
            }
        },
    }
}

/// Answers one asker (IP address) gets at once before the rate applies: a player's
/// search sends a few requests, repeated a few times.
pub const ASKER_BURST: u32 = 8;
/// Answers per second one asker gets after its burst; the rest are dropped unanswered.
pub const ASKER_RATE: u32 = 2;
/// Askers remembered at most. A full table answers no newcomer until some asker has
/// been quiet long enough to be forgotten, so a flood from many (spoofed) addresses
/// costs bounded memory and bounded replies.
const MAX_ASKERS: usize = 4096;

/// A token bucket per asker: `ASKER_BURST` answers, refilled at `ASKER_RATE` a
/// second. Pure: the time is passed in.
#[derive(Debug, Default)]
pub struct AskerLimit {
    /// Per asker: tokens left, and when they were counted.
    buckets: std::collections::HashMap<IpAddr, (f64, Instant)>,
}

impl AskerLimit {
    /// Whether `ip` may be answered at `now`; if so, takes one of its tokens.
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        let burst = f64::from(ASKER_BURST);
        let refill = |(tokens, at): (f64, Instant)| {
            let elapsed = now.saturating_duration_since(at).as_secs_f64();
            (tokens + elapsed * f64::from(ASKER_RATE)).min(burst)
        };
        if !self.buckets.contains_key(&ip) && self.buckets.len() >= MAX_ASKERS {
            // Forget the askers whose bucket is full again: they have been quiet.
            self.buckets.retain(|_, b| refill(*b) < burst);
            if self.buckets.len() >= MAX_ASKERS {
                return false;
            }
        }
        let tokens = self.buckets.get(&ip).map_or(burst, |b| refill(*b));
        let allowed = tokens >= 1.0;
        let left = if allowed { tokens - 1.0 } else { tokens };
        self.buckets.insert(ip, (left, now));
        allowed
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::time::Duration;

    use super::*;

    #[test]
    fn only_askers_on_this_host_or_lan_are_answered() {
        let check = |ip: &str, want: bool| {
            let parsed: IpAddr = ip.parse().expect("an address");
            assert_eq!(is_lan_asker(parsed), want, "{ip}");
        };
        for ip in [
            "127.0.0.1",
            "127.8.9.10",
            "10.0.0.7",
            "172.16.0.1",
            "172.31.255.254",
            "192.168.1.20",
            "169.254.10.20",
            "::1",
            "fc00::1",
            "fd12:3456:789a::5",
            "fe80::1",
            "febf::1",
            "::ffff:192.168.1.20",
            "::ffff:127.0.0.1",
        ] {
            check(ip, true);
        }
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "172.15.255.255",
            "172.32.0.1",
            "192.169.0.1",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "2001:4860:4860::8888",
            "fec0::1",
            "ff02::1",
            "::",
            "::ffff:8.8.8.8",
        ] {
            check(ip, false);
        }
    }

    #[test]
    fn an_asker_gets_its_burst_then_its_rate() {
        let mut limit = AskerLimit::default();
        let t0 = Instant::now();
        let a: IpAddr = "192.168.1.2".parse().unwrap();
        let b: IpAddr = "192.168.1.3".parse().unwrap();
        let allowed = (0..100).filter(|_| limit.allow(a, t0)).count();
        assert_eq!(allowed, ASKER_BURST as usize);
        // Another asker has a bucket of its own.
        assert!(limit.allow(b, t0));
        // One second later: the rate's worth, no more.
        let t1 = t0 + Duration::from_secs(1);
        let allowed = (0..100).filter(|_| limit.allow(a, t1)).count();
        assert_eq!(allowed, ASKER_RATE as usize);
        // Quiet long enough: the whole burst again, never more.
        let t2 = t1 + Duration::from_secs(3600);
        let allowed = (0..100).filter(|_| limit.allow(a, t2)).count();
        assert_eq!(allowed, ASKER_BURST as usize);
    }

    #[test]
    fn a_full_table_of_busy_askers_answers_no_newcomer_until_one_is_quiet() {
        let mut limit = AskerLimit::default();
        let t0 = Instant::now();
        let ip = |i: usize| IpAddr::V4(Ipv4Addr::from(0x0A00_0000 + i as u32));
        for i in 0..MAX_ASKERS {
            assert!(limit.allow(ip(i), t0));
        }
        assert!(!limit.allow(ip(MAX_ASKERS), t0), "the table is full");
        assert!(limit.allow(ip(0), t0), "a known asker still has its bucket");
        // Every bucket is full again after the burst's refill time: all forgotten.
        let later = t0 + Duration::from_secs(u64::from(ASKER_BURST / ASKER_RATE) + 1);
        assert!(limit.allow(ip(MAX_ASKERS), later));
        assert_eq!(limit.buckets.len(), 1);
    }
}
