//! `[server] trusted_proxies`: behind a reverse proxy or balancer every request comes
//! from the proxy's address, so connection limits would count all viewers as one
//! player and logins would share one penalty. A request whose TCP peer is a trusted
//! proxy is taken as coming from the client its `X-Forwarded-For` names: the rightmost
//! address that is not itself a trusted proxy (the leftmost when all are). The layer
//! replaces the request's `ConnectInfo`, so everything after it (accounts, logins, HLS
//! viewer counts) sees the client. A header from any other peer is ignored: clients
//! cannot choose their own address. A trusted proxy's header whose client hop cannot be
//! read (`unknown`, `unix:`, an obfuscated name, a zone id, two addresses without a
//! comma) fails closed: the client is [`UNKNOWN`], never the proxy's own (often
//! loopback, hence admin) address.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request};
use axum::middleware::Next;
use axum::response::Response;
use ipnet::IpNet;

/// An address (`10.0.0.2`, `::1`) or a CIDR block (`10.0.0.0/8`).
pub fn parse_net(s: &str) -> Option<IpNet> {
    let s = s.trim();
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

/// The client of a trusted proxy's request whose `X-Forwarded-For` names no address
/// freesky can read: unspecified, so never loopback (admin) nor a trusted proxy, and
/// all such clients count as one address.
pub const UNKNOWN: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

/// The trusted proxies of a config (unparsable entries are config errors already).
pub struct Trusted(Vec<IpNet>);

impl Trusted {
    pub fn new(entries: &[String]) -> Self {
        Self(entries.iter().filter_map(|e| parse_net(e)).collect())
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// The client a request from `peer` with these `X-Forwarded-For` values stands for:
    /// `peer` when it is not trusted or sent no header; else the rightmost hop that is
    /// not a trusted proxy (the leftmost when all are), [`UNKNOWN`] when that hop is
    /// not an address.
    pub fn client(&self, peer: IpAddr, forwarded: &[&str]) -> IpAddr {
        if !self.trusts(peer) || forwarded.is_empty() {
            return peer;
        }
        let mut leftmost = UNKNOWN;
        for raw in forwarded.iter().rev().flat_map(|v| v.rsplit(',')) {
            match hop(raw.trim()) {
                None => return UNKNOWN,
                Some(ip) if !self.trusts(ip) => return ip,
                Some(ip) => leftmost = ip,
            }
        }
        leftmost
    }
}

/// One `X-Forwarded-For` entry: an address, maybe bracketed (`[2001:db8::1]`), maybe
/// with a port (`1.2.3.4:5678`, `[::1]:80`). Anything else (a zone id, a name,
/// `unknown`) is no address.
fn hop(s: &str) -> Option<IpAddr> {
    let bare = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(s);
    bare.parse::<IpAddr>()
        .ok()
        .or_else(|| s.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .map(canonical)
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The layer: a request from a trusted proxy gets the forwarded client's address.
pub async fn layer(
    axum::extract::State(trusted): axum::extract::State<Arc<Trusted>>,
    mut req: Request,
    next: Next,
) -> Response {
    if !trusted.0.is_empty() {
        if let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<SocketAddr>>().copied()
        {
            let forwarded: Vec<&str> = req
                .headers()
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            let client = trusted.client(peer.ip(), &forwarded);
            if client != peer.ip() {
                req.extensions_mut()
                    .insert(ConnectInfo(SocketAddr::new(client, peer.port())));
            }
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_a_trusted_peer_names_the_client() {
        let t = Trusted::new(&["10.0.0.0/8".into(), "::1".into()]);
        // Not trusted: its header is ignored.
        assert_eq!(
            t.client(ip("192.0.2.9"), &["198.51.100.1"]),
            ip("192.0.2.9")
        );
        // Trusted: the rightmost hop that is not a trusted proxy.
        assert_eq!(
            t.client(ip("10.0.0.2"), &["198.51.100.1, 203.0.113.5, 10.0.0.3"]),
            ip("203.0.113.5")
        );
        assert_eq!(
            t.client(ip("::1"), &["198.51.100.1:5000"]),
            ip("198.51.100.1")
        );
        assert_eq!(
            t.client(ip("::ffff:10.0.0.2"), &["[2001:db8::1]:80"]),
            ip("2001:db8::1")
        );
        // Several header lines read as one list; garbage left of the client is not
        // read.
        assert_eq!(
            t.client(ip("10.0.0.2"), &["198.51.100.1", "junk, 198.51.100.7"]),
            ip("198.51.100.7")
        );
        assert_eq!(t.client(ip("::1"), &["[2001:db8::1]"]), ip("2001:db8::1"));
        // All hops trusted: the leftmost; none: the peer.
        assert_eq!(
            t.client(ip("10.0.0.2"), &["10.1.1.1, 10.0.0.3"]),
            ip("10.1.1.1")
        );
        assert_eq!(t.client(ip("10.0.0.2"), &[]), ip("10.0.0.2"));
        assert!(parse_net("10.0.0.0/33").is_none() && parse_net("tv.lan").is_none());
    }

    #[test]
    fn an_unreadable_client_hop_is_unknown_never_the_proxy() {
        let t = Trusted::new(&["127.0.0.1".into(), "::1".into(), "10.0.0.3".into()]);
        for xff in [
            "unknown",
            "unix:",
            "_hidden",
            "10.1.1.1%eth0",
            "fe80::1%eth0",
            "10.1.1.1 127.0.0.1",
            "",
            "198.51.100.1, unknown",
            "unknown, 10.0.0.3",
            "[2001:db8::1",
        ] {
            for peer in ["127.0.0.1", "::1"] {
                let client = t.client(ip(peer), &[xff]);
                assert_eq!(client, UNKNOWN, "{peer} {xff:?}");
                assert!(!client.is_loopback() && !t.trusts(client));
            }
        }
        // Past a trusted proxy, the next hop is read the same way.
        assert_eq!(
            t.client(ip("127.0.0.1"), &["198.51.100.1, 10.0.0.3"]),
            ip("198.51.100.1")
        );
    }
}
