//! The running responders: binds the UDP sockets, works out the virtual tuners in the
//! background, and answers discover requests, M-SEARCHes and sends NOTIFYs. All of
//! discovery's IO is here.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use super::{
    discover_replies, is_lan_asker, msearch_response, notify_alive, parse_discover_request,
    parse_msearch, ssdp_answers, ssdp_targets, virtual_devices, AskerLimit, Device, MAX_PACKET,
    SSDP_GROUP, SSDP_MAX_AGE,
};
use crate::app::AppState;

/// How long NOTIFY waits for the virtual tuners to be worked out before advertising
/// what is known (it is not an answer, but it must not wait on a slow upstream).
const NOTIFY_WAIT: Duration = Duration::from_secs(5);
/// The least time between two computations of the virtual tuners: a flood of
/// requests costs one lineup read a second at most.
const REFRESH_GAP: Duration = Duration::from_secs(1);

/// What every answer carries: fixed at start, but for the virtual tuners.
struct Advert {
    /// `server.public_url`, trimmed; when set, the base URL of every answer.
    public_url: Option<String>,
    /// `server.bind`'s address unless unspecified: clients reach the HTTP server there.
    bind_ip: Option<IpAddr>,
    /// The port the HTTP listener actually got (`server.bind` may say 0).
    http_port: u16,
    /// The whole tuner.
    main: Device,
    device_auth: String,
    /// The tuners a client may use at once, as `discover.json` says: `tuner_count`,
    /// or fewer when the tuner's account allows fewer connections (of the reloaded
    /// config, after a reload).
    tuner_count: Arc<dyn Fn() -> u8 + Send + Sync>,
    /// The virtual tuners as last worked out (`refresh_virtual`); empty until the
    /// lineup has loaded, and while `max_channels = 0`.
    virtual_tuners: watch::Receiver<Arc<Vec<Device>>>,
    /// Asks `refresh_virtual` to work them out again (after the answer in hand).
    refresh: Arc<Notify>,
}

impl Advert {
    /// The base URL for an answer to `peer` (see the module doc); `None` when no route
    /// to `peer` is known.
    fn base_url(&self, peer: SocketAddr) -> Option<String> {
        if let Some(u) = &self.public_url {
            return Some(u.clone());
        }
        let ip = match self.bind_ip {
            Some(ip) => ip,
            None => local_ip_toward(peer)?,
        };
        Some(format!("http://{}", SocketAddr::new(ip, self.http_port)))
    }

    /// Every device to advertise now, the whole tuner first, without waiting for
    /// anything.
    fn devices(&self) -> Vec<Device> {
        let mut all = vec![self.main.clone()];
        all.extend(self.virtual_tuners.borrow().iter().cloned());
        all
    }

    /// Asks for the virtual tuners to be worked out again, for the next answer.
    fn kick(&self) {
        self.refresh.notify_one();
    }
}

/// The local address the kernel would send to `peer` from: a UDP socket's
/// `connect` picks a route without sending anything.
fn local_ip_toward(peer: SocketAddr) -> Option<IpAddr> {
    let any: SocketAddr = match peer {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let sock = std::net::UdpSocket::bind(any).ok()?;
    sock.connect(peer).ok()?;
    let ip = sock.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

/// The discovery tasks; dropping it stops them and closes their sockets.
pub struct Discovery {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Discovery {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Binds the configured discovery sockets and answers on them until the returned
/// handle is dropped. `None` when discovery is off. `http` is the address the HTTP
/// listener got. Must be called inside the tokio runtime. A socket that cannot be
/// bound (port taken, no permission) is logged and skipped; HTTP serving goes on.
/// The virtual tuners advertised are those of `state`; see `spawn_with`.
pub fn spawn(state: &AppState, http: SocketAddr) -> Option<Discovery> {
    let fixed = state.clone();
    spawn_with(state, http, move || fixed.clone())
}

/// `spawn`, with the virtual tuners worked out from the state `current` returns each
/// time (the reloaded one, after a config reload): its `max_channels` and its
/// lineup as cached, and its tuner count. Sockets, ports and `public_url` stay
/// `state`'s.
pub fn spawn_with(
    state: &AppState,
    http: SocketAddr,
    current: impl Fn() -> AppState + Send + Sync + 'static,
) -> Option<Discovery> {
    let cfg = &state.config;
    if !cfg.hdhomerun.enabled || !cfg.hdhomerun.discovery {
        return None;
    }
    let current: Arc<dyn Fn() -> AppState + Send + Sync> = Arc::new(current);
    let Some(main) = Device::new(&state.tuner.device_id, String::new()) else {
        tracing::warn!(
            device_id = %state.tuner.device_id,
            "LAN discovery off: the stored tuner DeviceID is not 8 hex digits"
        );
        return None;
    };
    let bind_ip = cfg
        .server
        .bind
        .parse::<SocketAddr>()
        .map_or(http.ip(), |a| a.ip());
    let (virtual_tx, virtual_rx) = watch::channel(Arc::new(Vec::new()));
    let refresh = Arc::new(Notify::new());
    let advert = Arc::new(Advert {
        public_url: cfg
            .server
            .public_url
            .as_deref()
            .filter(|u| !u.is_empty())
            .map(|u| u.trim_end_matches('/').to_string()),
        bind_ip: (!bind_ip.is_unspecified()).then_some(bind_ip),
        http_port: http.port(),
        main,
        device_auth: state.tuner.device_auth.clone(),
        tuner_count: {
            let current = current.clone();
            Arc::new(move || {
                let state = current();
                let n = crate::http::hdhr::tuner_count(&state)
                    .unwrap_or(state.config.hdhomerun.tuner_count);
                u8::try_from(n).unwrap_or(u8::MAX)
            })
        },
        virtual_tuners: virtual_rx,
        refresh: refresh.clone(),
    });
    // Broadcasts and multicasts only reach sockets on the unspecified address; a
    // loopback-only server gets loopback-only discovery.
    let loopback = bind_ip.is_loopback();
    let listen_ip = if loopback {
        bind_ip
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    };

    let mut tasks = vec![tokio::spawn(refresh_virtual(
        move || current(),
        virtual_tx,
        refresh,
    ))];
    let port = cfg.hdhomerun.discovery_port;
    if port != 0 {
        if let Some(sock) = bind_udp("HDHomeRun discover", SocketAddr::new(listen_ip, port)) {
            tracing::info!(addr = %SocketAddr::new(listen_ip, port), "answering HDHomeRun discover requests");
            tasks.push(tokio::spawn(serve_hdhr(sock, advert.clone())));
        }
    }
    let port = cfg.hdhomerun.ssdp_port;
    if port != 0 {
        if let Some(sock) = bind_udp("SSDP", SocketAddr::new(listen_ip, port)) {
            if !loopback {
                if let Err(e) = sock.join_multicast_v4(SSDP_GROUP, Ipv4Addr::UNSPECIFIED) {
                    tracing::warn!(error = %e, "SSDP: cannot join {SSDP_GROUP}; only unicast M-SEARCH is answered");
                }
                // UPnP 1.1: a TTL of 2 for SSDP multicasts.
                let _ = sock.set_multicast_ttl_v4(2);
            }
            tracing::info!(addr = %SocketAddr::new(listen_ip, port), "answering SSDP M-SEARCH");
            let sock = Arc::new(sock);
            tasks.push(tokio::spawn(serve_ssdp(sock.clone(), advert.clone())));
            if !loopback {
                tasks.push(tokio::spawn(advertise_ssdp(sock, advert.clone(), port)));
            }
        }
    }
    Some(Discovery { tasks })
}

/// Works out the virtual tuners (as `Tuner::split` splits the lineup) at start and
/// again whenever asked, at most once per `REFRESH_GAP`, and publishes them. Answers
/// never wait for this: they take what was last published. The lineup is the
/// registry's cached one; only when that is stale does reading it fetch upstream,
/// here in the background.
async fn refresh_virtual(
    current: impl Fn() -> AppState,
    tx: watch::Sender<Arc<Vec<Device>>>,
    asked: Arc<Notify>,
) {
    loop {
        let state = current();
        let hdhr = &state.config.hdhomerun;
        let max = hdhr.max_channels as usize;
        let devices = if !hdhr.enabled || max == 0 {
            Some(Vec::new())
        } else {
            match state.registry.lineup().await {
                Ok(lineup) => match crate::http::hdhr::tuner_account(&state) {
                    Ok(account) => {
                        let count = state.tuner.split(&lineup, max, account.as_ref()).len();
                        Some(virtual_devices(&state.tuner.virtual_ids(count)))
                    }
                    // The tuner is off (its account is missing or unusable).
                    Err(_) => Some(Vec::new()),
                },
                Err(e) => {
                    tracing::debug!(error = %e, "discovery: no lineup; the virtual tuners stay as they were");
                    None
                }
            }
        };
        drop(state);
        if let Some(devices) = devices {
            // Always sent, changed or not: NOTIFY waits for a fresh value.
            tx.send_replace(Arc::new(devices));
        }
        tokio::time::sleep(REFRESH_GAP).await;
        asked.notified().await;
    }
}

/// A UDP socket on `addr` with SO_REUSEADDR (Plex or minissdpd on the same host hold
/// 1900 too), or `None` after a warning.
fn bind_udp(what: &str, addr: SocketAddr) -> Option<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let bound = (|| {
        let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        sock.set_reuse_address(true)?;
        sock.set_nonblocking(true)?;
        sock.bind(&addr.into())?;
        UdpSocket::from_std(sock.into())
    })();
    match bound {
        Ok(sock) => Some(sock),
        Err(e) => {
            tracing::warn!(%addr, error = %e, "{what}: cannot bind; LAN discovery by it is off");
            None
        }
    }
}

/// Answers discover requests with one reply per device asked for (the wildcard: the
/// tuner and every virtual tuner); ignores the rest.
async fn serve_hdhr(sock: UdpSocket, advert: Arc<Advert>) {
    let mut buf = [0u8; MAX_PACKET + 64];
    let mut limit = AskerLimit::default();
    loop {
        let (n, peer) = match sock.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(e) => {
                // Per-datagram errors (an ICMP error reported on some systems).
                tracing::debug!(error = %e, "HDHomeRun discover: receive failed");
                continue;
            }
        };
        if !is_lan_asker(peer.ip()) {
            tracing::debug!(%peer, "HDHomeRun discover: not answered: the asker is not on this host or LAN");
            continue;
        }
        let req = match parse_discover_request(&buf[..n]) {
            Ok(req) => req,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "HDHomeRun discover: ignored a malformed packet");
                continue;
            }
        };
        // Any tuner discovery, even for an id not known yet (a virtual tuner the
        // lineup just grew), is worth a fresh look for the next one.
        advert.kick();
        let devices = advert.devices();
        if !devices.iter().any(|d| req.matches(d.device_id)) {
            tracing::debug!(%peer, ?req, "HDHomeRun discover: not for this tuner");
            continue;
        }
        if !limit.allow(peer.ip(), Instant::now()) {
            // Debug only: a flood must not flood the log either.
            tracing::debug!(%peer, "HDHomeRun discover: not answered: the asker is over its rate");
            continue;
        }
        let Some(base) = advert.base_url(peer) else {
            tracing::debug!(%peer, "HDHomeRun discover: no route back to the asker");
            continue;
        };
        let replies = discover_replies(
            &req,
            &devices,
            &base,
            (advert.tuner_count)(),
            &advert.device_auth,
        );
        for reply in replies {
            let Some(frame) = reply.encode() else {
                tracing::warn!("HDHomeRun discover: the reply does not fit in a packet (server.public_url too long?)");
                break;
            };
            if let Err(e) = sock.send_to(&frame, peer).await {
                tracing::debug!(%peer, error = %e, "HDHomeRun discover: reply not sent");
                break;
            }
        }
    }
}

/// Answers M-SEARCH for the root device, each device's uuid, MediaServer:1 and
/// `ssdp:all`, for the tuner and every virtual tuner.
async fn serve_ssdp(sock: Arc<UdpSocket>, advert: Arc<Advert>) {
    let mut buf = [0u8; 2048];
    let mut limit = AskerLimit::default();
    loop {
        let (n, peer) = match sock.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(e) => {
                tracing::debug!(error = %e, "SSDP: receive failed");
                continue;
            }
        };
        if !is_lan_asker(peer.ip()) {
            tracing::debug!(%peer, "SSDP: not answered: the asker is not on this host or LAN");
            continue;
        }
        let Some(st) = parse_msearch(&buf[..n]) else {
            // NOTIFYs of every other device on the LAN land here too.
            continue;
        };
        let devices = advert.devices();
        if devices
            .iter()
            .all(|d| ssdp_targets(st, &d.device_id_hex).is_empty())
        {
            // Other devices' searches (DIAL, printers) do not refresh anything.
            continue;
        }
        if !limit.allow(peer.ip(), Instant::now()) {
            tracing::debug!(%peer, "SSDP: not answered: the asker is over its rate");
            continue;
        }
        advert.kick();
        let Some(base) = advert.base_url(peer) else {
            tracing::debug!(%peer, "SSDP: no route back to the asker");
            continue;
        };
        for (st, usn, location) in ssdp_answers(st, &devices, &base) {
            let msg = msearch_response(&st, &usn, &location);
            if let Err(e) = sock.send_to(msg.as_bytes(), peer).await {
                tracing::debug!(%peer, error = %e, "SSDP: response not sent");
            }
        }
    }
}

/// NOTIFY ssdp:alive for every device to the group at start and every half max-age,
/// and for all of them again as soon as the set of virtual tuners changes.
async fn advertise_ssdp(sock: Arc<UdpSocket>, advert: Arc<Advert>, port: u16) {
    let group = SocketAddr::new(IpAddr::V4(SSDP_GROUP), port);
    let mut every = tokio::time::interval(SSDP_MAX_AGE / 2);
    let mut changes = advert.virtual_tuners.clone();
    let mut advertised: Option<Vec<u32>> = None;
    loop {
        tokio::select! {
            _ = every.tick() => {
                // A fresh look at the virtual tuners first, bounded.
                changes.mark_unchanged();
                advert.kick();
                let _ = tokio::time::timeout(NOTIFY_WAIT, changes.changed()).await;
            }
            changed = changes.changed() => {
                if changed.is_err() {
                    // The refresher is gone: discovery is stopping.
                    return;
                }
                let ids: Vec<u32> = changes.borrow_and_update().iter().map(|d| d.device_id).collect();
                let before = advertised.as_ref().map(|a| &a[1..]);
                if before.is_none_or(|b| b == ids.as_slice()) {
                    continue;
                }
            }
        }
        let Some(base) = advert.base_url(group) else {
            tracing::debug!("SSDP: no route to {group}; NOTIFY skipped");
            continue;
        };
        let mut all = vec![advert.main.clone()];
        all.extend(changes.borrow_and_update().iter().cloned());
        advertised = Some(all.iter().map(|d| d.device_id).collect());
        for (nt, usn, location) in ssdp_answers("ssdp:all", &all, &base) {
            let msg = notify_alive(&nt, &usn, &location, port);
            if let Err(e) = sock.send_to(msg.as_bytes(), group).await {
                tracing::debug!(error = %e, "SSDP: NOTIFY not sent");
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        let (_tx, virtual_tuners) = watch::channel(Arc::new(Vec::new()));
        let mut a = Advert {
            public_url: Some("https://tv.example.org".into()),
            bind_ip: None,
            http_port: 8005,
            main: Device::new("00000001", String::new()).unwrap(),
            device_auth: String::new(),
            tuner_count: Arc::new(|| 1),
            virtual_tuners,
            refresh: Arc::default(),
        };
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        assert_eq!(a.base_url(peer).as_deref(), Some("https://tv.example.org"));
        a.public_url = None;
        a.bind_ip = Some("192.168.1.20".parse().unwrap());
        assert_eq!(
            a.base_url(peer).as_deref(),
            Some("http://192.168.1.20:8005")
        );
        a.bind_ip = Some("fd00::1".parse().unwrap());
        assert_eq!(a.base_url(peer).as_deref(), Some("http://[fd00::1]:8005"));
        // Bound to 0.0.0.0: the address the asker is routed from.
        a.bind_ip = None;
        assert_eq!(a.base_url(peer).as_deref(), Some("http://127.0.0.1:8005"));
    }
}
