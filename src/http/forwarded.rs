//! `[server] trusted_proxies`: behind a reverse proxy or balancer every request comes
//! from the proxy's address, so connection limits would count all viewers as one
//! player and logins would share one penalty. A request whose TCP peer is a trusted
//! proxy is taken as coming from the client its `X-Forwarded-For` names: the rightmost
//! address that is not itself a trusted proxy (the leftmost when all are). The layer
//! replaces the request's `ConnectInfo`, so everything after it (accounts, logins, HLS
//! viewer counts) sees the client. A header from any other peer is ignored: clients
//! cannot choose their own address.

use std::net::{IpAddr, SocketAddr};
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

    /// The client a request from `peer` with these `X-Forwarded-For` values stands for.
    pub fn client(&self, peer: IpAddr, forwarded: &[&str]) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let hops: Vec<IpAddr> = forwarded
            .iter()
            .flat_map(|v| v.split(','))
            .filter_map(|h| hop(h.trim()))
            .collect();
        hops.iter()
            .rev()
            .find(|ip| !self.trusts(**ip))
            .or(hops.first())
            .copied()
            .unwrap_or(peer)
    }
}

/// One `X-Forwarded-For` entry: an address, maybe with a port (`1.2.3.4:5678`,
/// `[::1]:80`).
fn hop(s: &str) -> Option<IpAddr> {
    s.parse::<IpAddr>()
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
        // Several header lines read as one list; garbage hops skipped.
        assert_eq!(
            t.client(ip("10.0.0.2"), &["198.51.100.1", "junk, 198.51.100.7"]),
            ip("198.51.100.7")
        );
        // All hops trusted: the leftmost; none: the peer.
        assert_eq!(
            t.client(ip("10.0.0.2"), &["10.1.1.1, 10.0.0.3"]),
            ip("10.1.1.1")
        );
        assert_eq!(t.client(ip("10.0.0.2"), &[]), ip("10.0.0.2"));
        assert!(parse_net("10.0.0.0/33").is_none() && parse_net("tv.lan").is_none());
    }
}
