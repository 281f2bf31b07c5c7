//! LAN discovery of the HDHomeRun tuner, off unless `[hdhomerun] discovery = true`:
//! SiliconDust's UDP discover protocol (what Jellyfin's auto-detect and libhdhomerun
//! broadcast to port 65001) and SSDP (what Plex listens for on 239.255.255.250:1900).
//!
//! Every device is advertised: the whole tuner at `{base}` and, when `[hdhomerun]
//! max_channels` splits the lineup, each virtual tuner n at `{base}/tuners/{n}` with its
//! own DeviceID (`http::hdhr`), one discover reply and one set of SSDP USNs each. The
//! virtual tuners are worked out in the background from the registry's lineup and
//! published; an answer takes what was last published and never waits for a lineup
//! (none published yet: the whole tuner only).
//!
//! Only askers on this host or the LAN are answered (`is_lan_asker`: loopback, private,
//! unique-local and link-local addresses), each at most `ASKER_BURST` times at once and
//! `ASKER_RATE` times a second after (`AskerLimit`); the rest get no answer, so neither
//! a flood nor a spoofed source turns freesky into a reflector.
//!
//! The packet and message functions are pure; `spawn` binds the sockets and answers.
//! Discovery only points clients at the HTTP endpoints of `http::hdhr`; it never serves
//! a channel, and a socket that cannot be bound is a warning, never a failed start.
//!
//! The base URL handed out is `server.public_url` when set, else
//! `http://{ip}:{HTTP port}` where `ip` is `server.bind`'s address unless that is
//! `0.0.0.0`/`::`, in which case it is the local address the kernel routes to the
//! asker from (a connected UDP socket's `local_addr`; for NOTIFY, the route to the
//! SSDP group). When `server.bind` is a loopback address the discovery sockets bind
//! loopback too (nobody else could reach the tuner), and no NOTIFY is sent.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::http::AppState;

// ---------------------------------------------------------------------------------------
// SiliconDust discover packets (libhdhomerun `hdhomerun_pkt.h`)
//
// A frame is: u16 type, u16 payload length (both big-endian), the payload, then the
// Ethernet CRC32 of everything before it, little-endian. The payload is TLVs: u8 tag,
// a length of one byte (< 128) or two (low 7 bits | 0x80, then the rest >> 7), the value.

pub const TYPE_DISCOVER_REQ: u16 = 0x0002;
pub const TYPE_DISCOVER_RPY: u16 = 0x0003;

pub const TAG_DEVICE_TYPE: u8 = 0x01;
pub const TAG_DEVICE_ID: u8 = 0x02;
pub const TAG_TUNER_COUNT: u8 = 0x10;
pub const TAG_LINEUP_URL: u8 = 0x27;
pub const TAG_BASE_URL: u8 = 0x2A;
pub const TAG_DEVICE_AUTH_STR: u8 = 0x2B;
/// Newer libhdhomerun asks for several device types at once with this tag.
pub const TAG_MULTI_TYPE: u8 = 0x2D;

pub const DEVICE_TYPE_TUNER: u32 = 0x0000_0001;
pub const WILDCARD: u32 = 0xFFFF_FFFF;

/// libhdhomerun's `HDHOMERUN_MAX_PACKET_SIZE`: no frame is larger.
pub const MAX_PACKET: usize = 1460;
/// The largest value a two-byte TLV length can say.
const MAX_TLV_VALUE: usize = 0x7FFF;

/// Why a datagram is not a discover request we can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("{0} bytes is shorter than a frame")]
    TooShort(usize),
    #[error("the header says {said} payload bytes, the datagram has {got}")]
    Length { said: usize, got: usize },
    #[error("CRC {got:08x} does not match {want:08x}")]
    Crc { got: u32, want: u32 },
    #[error("a TLV runs past the end of the payload")]
    Tlv,
    #[error("tag {tag:#04x} has {len} bytes, expected {want}")]
    TagLength { tag: u8, len: usize, want: usize },
    #[error("packet type {0:#06x} is not the expected one")]
    Type(u16),
}

/// The Ethernet CRC32 libhdhomerun puts after each frame (zlib's `crc32`).
pub fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// One frame around `payload`: header, payload, CRC.
pub fn seal_frame(kind: u16, payload: &[u8]) -> Option<Vec<u8>> {
    let len = u16::try_from(payload.len()).ok()?;
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    let crc = crc32(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Some(out)
}

/// The type and payload of one whole frame, its length and CRC checked.
pub fn open_frame(datagram: &[u8]) -> Result<(u16, &[u8]), PacketError> {
    // Header (4) + CRC (4) at least; every index below is within these checks.
    let Some(got) = datagram.len().checked_sub(8) else {
        return Err(PacketError::TooShort(datagram.len()));
    };
    let kind = u16::from_be_bytes([datagram[0], datagram[1]]);
    let said = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
    if said != got {
        return Err(PacketError::Length { said, got });
    }
    let (body, trailer) = datagram.split_at(4 + said);
    let want = crc32(body);
    let got = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
    if got != want {
        return Err(PacketError::Crc { got, want });
    }
    Ok((kind, &body[4..]))
}

/// The (tag, value) pairs of a payload, in order.
pub fn read_tlvs(mut payload: &[u8]) -> Result<Vec<(u8, &[u8])>, PacketError> {
    let mut out = Vec::new();
    while let Some((&tag, rest)) = payload.split_first() {
        let (&first, rest) = rest.split_first().ok_or(PacketError::Tlv)?;
        let (len, rest) = if first & 0x80 == 0 {
            (usize::from(first), rest)
        } else {
            let (&second, rest) = rest.split_first().ok_or(PacketError::Tlv)?;
            (usize::from(first & 0x7F) | usize::from(second) << 7, rest)
        };
        if rest.len() < len {
            return Err(PacketError::Tlv);
        }
        let (value, rest) = rest.split_at(len);
        out.push((tag, value));
        payload = rest;
    }
    Ok(out)
}

/// Appends one TLV; `None` when the value is too long for a TLV length.
fn write_tlv(out: &mut Vec<u8>, tag: u8, value: &[u8]) -> Option<()> {
    let len = value.len();
    if len > MAX_TLV_VALUE {
        return None;
    }
    out.push(tag);
    if len < 0x80 {
        out.push(len as u8);
    } else {
        out.push((len & 0x7F) as u8 | 0x80);
        out.push((len >> 7) as u8);
    }
    out.extend_from_slice(value);
    Some(())
}

fn u32_of(tag: u8, value: &[u8]) -> Result<u32, PacketError> {
    let bytes: [u8; 4] = value.try_into().map_err(|_| PacketError::TagLength {
        tag,
        len: value.len(),
        want: 4,
    })?;
    Ok(u32::from_be_bytes(bytes))
}

/// What a discover request asks for. Empty `device_types` and `None` mean "any":
/// newer libhdhomerun leaves the device id out when it is the wildcard.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DiscoverRequest {
    pub device_types: Vec<u32>,
    pub device_id: Option<u32>,
}

impl DiscoverRequest {
    /// Whether a tuner with `device_id` should answer.
    pub fn matches(&self, device_id: u32) -> bool {
        let type_ok = self.device_types.is_empty()
            || self
                .device_types
                .iter()
                .any(|&t| t == WILDCARD || t == DEVICE_TYPE_TUNER);
        let id_ok = self
            .device_id
            .is_none_or(|id| id == WILDCARD || id == device_id);
        type_ok && id_ok
    }

    /// The frame libhdhomerun sends for this request (one type: tag 0x01, several:
    /// tag 0x2D; the id tag only when one is given). `None` for thousands of types.
    pub fn encode(&self) -> Option<Vec<u8>> {
        let mut payload = Vec::new();
        let types: Vec<u8> = self
            .device_types
            .iter()
            .flat_map(|t| t.to_be_bytes())
            .collect();
        let tag = if types.len() == 4 {
            TAG_DEVICE_TYPE
        } else {
            TAG_MULTI_TYPE
        };
        if !types.is_empty() {
            write_tlv(&mut payload, tag, &types)?;
        }
        if let Some(id) = self.device_id {
            write_tlv(&mut payload, TAG_DEVICE_ID, &id.to_be_bytes())?;
        }
        seal_frame(TYPE_DISCOVER_REQ, &payload)
    }
}

/// Reads a discover request; unknown tags are skipped, as libhdhomerun does.
pub fn parse_discover_request(datagram: &[u8]) -> Result<DiscoverRequest, PacketError> {
    let (kind, payload) = open_frame(datagram)?;
    if kind != TYPE_DISCOVER_REQ {
        return Err(PacketError::Type(kind));
    }
    let mut req = DiscoverRequest::default();
    for (tag, value) in read_tlvs(payload)? {
        match tag {
            TAG_DEVICE_TYPE => req.device_types.push(u32_of(tag, value)?),
            TAG_MULTI_TYPE => {
                if value.len() % 4 != 0 {
                    return Err(PacketError::TagLength {
                        tag,
                        len: value.len(),
                        want: value.len() / 4 * 4,
                    });
                }
                for chunk in value.chunks_exact(4) {
                    req.device_types.push(u32_of(tag, chunk)?);
                }
            }
            TAG_DEVICE_ID => req.device_id = Some(u32_of(tag, value)?),
            _ => {}
        }
    }
    Ok(req)
}

/// What a tuner tells in its discover reply.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DiscoverReply {
    pub device_type: u32,
    pub device_id: u32,
    pub tuner_count: u8,
    pub base_url: String,
    pub lineup_url: String,
    pub device_auth: String,
}

impl DiscoverReply {
    /// The reply frame; `None` if it would not fit in one packet (a huge public_url).
    pub fn encode(&self) -> Option<Vec<u8>> {
        let mut p = Vec::new();
        write_tlv(&mut p, TAG_DEVICE_TYPE, &self.device_type.to_be_bytes())?;
        write_tlv(&mut p, TAG_DEVICE_ID, &self.device_id.to_be_bytes())?;
        write_tlv(&mut p, TAG_TUNER_COUNT, &[self.tuner_count])?;
        // Strings without a NUL: readers take the TLV length (libhdhomerun adds its own).
        write_tlv(&mut p, TAG_BASE_URL, self.base_url.as_bytes())?;
        write_tlv(&mut p, TAG_LINEUP_URL, self.lineup_url.as_bytes())?;
        write_tlv(&mut p, TAG_DEVICE_AUTH_STR, self.device_auth.as_bytes())?;
        let frame = seal_frame(TYPE_DISCOVER_RPY, &p)?;
        (frame.len() <= MAX_PACKET).then_some(frame)
    }
}

/// Reads a discover reply (for tests and tools); unknown tags are skipped.
pub fn parse_discover_reply(datagram: &[u8]) -> Result<DiscoverReply, PacketError> {
    let (kind, payload) = open_frame(datagram)?;
    if kind != TYPE_DISCOVER_RPY {
        return Err(PacketError::Type(kind));
    }
    let text = |v: &[u8]| {
        String::from_utf8_lossy(v)
            .trim_end_matches('\0')
            .to_string()
    };
    let mut r = DiscoverReply::default();
    for (tag, value) in read_tlvs(payload)? {
        match tag {
            TAG_DEVICE_TYPE => r.device_type = u32_of(tag, value)?,
            TAG_DEVICE_ID => r.device_id = u32_of(tag, value)?,
            TAG_TUNER_COUNT => {
                let [n] = value else {
                    return Err(PacketError::TagLength {
                        tag,
                        len: value.len(),
                        want: 1,
                    });
                };
                r.tuner_count = *n;
            }
            TAG_BASE_URL => r.base_url = text(value),
            TAG_LINEUP_URL => r.lineup_url = text(value),
            TAG_DEVICE_AUTH_STR => r.device_auth = text(value),
            _ => {}
        }
    }
    Ok(r)
}

// ---------------------------------------------------------------------------------------
// SSDP (UPnP device architecture 1.0: HTTP over UDP)

/// The SSDP multicast group.
pub const SSDP_GROUP: Ipv4Addr = Ipv4Addr::new(239, 255, 255, 250);
/// How long an advertisement stays valid; NOTIFY is repeated at half of it.
pub const SSDP_MAX_AGE: Duration = Duration::from_secs(1800);
const MEDIA_SERVER: &str = "urn:schemas-upnp-org:device:MediaServer:1";
const ROOT_DEVICE: &str = "upnp:rootdevice";
const SERVER: &str = concat!("Linux UPnP/1.0 freesky/", env!("CARGO_PKG_VERSION"));

/// The search target (`ST`) of an `M-SEARCH` with `MAN: "ssdp:discover"`; `None` for
/// anything else (NOTIFYs of other devices, responses, noise).
pub fn parse_msearch(datagram: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(datagram).ok()?;
    let mut lines = text.lines();
    let request = lines.next()?;
    if !request.trim().eq_ignore_ascii_case("M-SEARCH * HTTP/1.1") {
        return None;
    }
    let (mut st, mut discover) = (None, false);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.trim().eq_ignore_ascii_case("ST") {
            st = Some(value);
        } else if name.trim().eq_ignore_ascii_case("MAN") {
            discover = value.trim_matches('"') == "ssdp:discover";
        }
    }
    st.filter(|_| discover)
}

/// The (ST or NT, USN) pairs that answer search target `st` for device `device_id`
/// (8 hex digits, as in device.xml's `uuid:` UDN); empty when it is not for us.
pub fn ssdp_targets(st: &str, device_id: &str) -> Vec<(String, String)> {
    let uuid = format!("uuid:{device_id}");
    let all = [
        (ROOT_DEVICE.to_string(), format!("{uuid}::{ROOT_DEVICE}")),
        (uuid.clone(), uuid.clone()),
        (MEDIA_SERVER.to_string(), format!("{uuid}::{MEDIA_SERVER}")),
    ];
    if st.eq_ignore_ascii_case("ssdp:all") {
        return all.to_vec();
    }
    all.into_iter()
        .filter(|(target, _)| target.eq_ignore_ascii_case(st))
        .collect()
}

/// The unicast answer to an M-SEARCH.
pub fn msearch_response(st: &str, usn: &str, location: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age={}\r\nEXT:\r\nLOCATION: {location}\r\n\
         SERVER: {SERVER}\r\nST: {st}\r\nUSN: {usn}\r\n\r\n",
        SSDP_MAX_AGE.as_secs()
    )
}

/// An `ssdp:alive` advertisement to the group on `port`.
pub fn notify_alive(nt: &str, usn: &str, location: &str, port: u16) -> String {
    format!(
        "NOTIFY * HTTP/1.1\r\nHOST: {SSDP_GROUP}:{port}\r\nCACHE-CONTROL: max-age={}\r\n\
         LOCATION: {location}\r\nNT: {nt}\r\nNTS: ssdp:alive\r\nSERVER: {SERVER}\r\n\
         USN: {usn}\r\n\r\n",
        SSDP_MAX_AGE.as_secs()
    )
}

// ---------------------------------------------------------------------------------------
// the devices advertised: the tuner and its virtual tuners (pure)

/// One device discovery advertises: the whole tuner, or virtual tuner n.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub device_id: u32,
    /// `device_id` as device.xml spells it, for SSDP USNs.
    pub device_id_hex: String,
    /// Where its HTTP endpoints are below the base URL: `""` for the whole tuner,
    /// `/tuners/{n}` for virtual tuner n.
    pub path: String,
}

impl Device {
    /// The device with DeviceID `id_hex` (8 hex digits) under `path`; `None` if the id
    /// is not 8 hex digits.
    pub fn new(id_hex: &str, path: String) -> Option<Device> {
        let ok = id_hex.len() == 8 && id_hex.bytes().all(|b| b.is_ascii_hexdigit());
        Some(Device {
            device_id: u32::from_str_radix(id_hex, 16).ok().filter(|_| ok)?,
            device_id_hex: id_hex.to_string(),
            path,
        })
    }
}

/// The virtual tuners 1..=n for their DeviceIDs in order (`Tuner::virtual_ids`), each
/// under `/tuners/{n}` as `http::hdhr` serves it; an id that is not 8 hex digits is
/// left out.
pub fn virtual_devices(ids: &[String]) -> Vec<Device> {
    ids.iter()
        .enumerate()
        .filter_map(|(i, id)| Device::new(id, format!("/tuners/{}", i + 1)))
        .collect()
}

/// The replies to `req`: one per device it asks for (the wildcard: every one), in
/// order, each pointing at `{base}{path}`.
pub fn discover_replies(
    req: &DiscoverRequest,
    devices: &[Device],
    base: &str,
    tuner_count: u8,
    device_auth: &str,
) -> Vec<DiscoverReply> {
    devices
        .iter()
        .filter(|d| req.matches(d.device_id))
        .map(|d| {
            let base_url = format!("{base}{}", d.path);
            DiscoverReply {
                device_type: DEVICE_TYPE_TUNER,
                device_id: d.device_id,
                tuner_count,
                lineup_url: format!("{base_url}/lineup.json"),
                base_url,
                device_auth: device_auth.to_string(),
            }
        })
        .collect()
}

/// The (ST or NT, USN, LOCATION) triples that answer search target `st`: each
/// device's `ssdp_targets`, with LOCATION `{base}{path}/device.xml`.
pub fn ssdp_answers(st: &str, devices: &[Device], base: &str) -> Vec<(String, String, String)> {
    devices
        .iter()
        .flat_map(|d| {
            let location = format!("{base}{}/device.xml", d.path);
            ssdp_targets(st, &d.device_id_hex)
                .into_iter()
                .map(move |(st, usn)| (st, usn, location.clone()))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// who gets an answer

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

// ---------------------------------------------------------------------------------------
// the running responders

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
    tuner_count: u8,
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
/// lineup as cached. Sockets, ports, `public_url` and `tuner_count` stay `state`'s.
pub fn spawn_with(
    state: &AppState,
    http: SocketAddr,
    current: impl Fn() -> AppState + Send + Sync + 'static,
) -> Option<Discovery> {
    let cfg = &state.config;
    if !cfg.hdhomerun.enabled || !cfg.hdhomerun.discovery {
        return None;
    }
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
        tuner_count: u8::try_from(cfg.hdhomerun.tuner_count).unwrap_or(u8::MAX),
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

    let mut tasks = vec![tokio::spawn(refresh_virtual(current, virtual_tx, refresh))];
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

/// Works out the virtual tuners (as `http::hdhr` splits the lineup) at start and
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
                Ok(lineup) => {
                    let count = crate::http::hdhr::pack(&lineup.channels, max).len();
                    Some(virtual_devices(&state.tuner.virtual_ids(count)))
                }
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
            advert.tuner_count,
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

    /// The exact datagram Jellyfin's `HdHomerunHost.DiscoverDevices` broadcasts:
    /// type 2, length 12, device type and id both wildcard, then the CRC. The CRC was
    /// checked independently: Python's
    /// `zlib.crc32(bytes([0,2,0,12,1,4,255,255,255,255,2,4,255,255,255,255]))` is
    /// 0x8f7dcc73, little-endian `115, 204, 125, 143`.
    const JELLYFIN_REQUEST: [u8; 20] = [
        0, 2, 0, 12, 1, 4, 255, 255, 255, 255, 2, 4, 255, 255, 255, 255, 115, 204, 125, 143,
    ];

    #[test]
    fn crc_is_zlibs() {
        assert_eq!(crc32(&JELLYFIN_REQUEST[..16]), 0x8f7d_cc73);
        // zlib.crc32(b"123456789"): the standard check value.
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn reads_jellyfins_request() {
        let req = parse_discover_request(&JELLYFIN_REQUEST).unwrap();
        assert_eq!(req.device_types, [WILDCARD]);
        assert_eq!(req.device_id, Some(WILDCARD));
        assert!(req.matches(0x1234_5678));
    }

    #[test]
    fn encodes_requests_as_libhdhomerun_does() {
        let req = DiscoverRequest {
            device_types: vec![WILDCARD],
            device_id: Some(WILDCARD),
        };
        assert_eq!(req.encode().unwrap(), JELLYFIN_REQUEST);
        // Several types go in one 0x2D tag; a wildcard id is left out by newer versions.
        let multi = DiscoverRequest {
            device_types: vec![DEVICE_TYPE_TUNER, 5],
            device_id: None,
        };
        let frame = multi.encode().unwrap();
        assert_eq!(&frame[..6], &[0, 2, 0, 10, TAG_MULTI_TYPE, 8]);
        assert_eq!(parse_discover_request(&frame).unwrap(), multi);
    }

    #[test]
    fn matching() {
        let ours = 0x1010_3C5B;
        let req = |types: Vec<u32>, id: Option<u32>| DiscoverRequest {
            device_types: types,
            device_id: id,
        };
        assert!(req(vec![DEVICE_TYPE_TUNER], None).matches(ours));
        assert!(req(vec![DEVICE_TYPE_TUNER], Some(ours)).matches(ours));
        assert!(req(vec![], None).matches(ours));
        assert!(req(vec![5, DEVICE_TYPE_TUNER], Some(WILDCARD)).matches(ours));
        assert!(!req(vec![5], None).matches(ours), "storage devices only");
        assert!(!req(vec![DEVICE_TYPE_TUNER], Some(ours ^ 1)).matches(ours));
    }

    #[test]
    fn malformed_requests_are_errors() {
        let check = |bytes: &[u8]| parse_discover_request(bytes).unwrap_err();
        assert_eq!(check(&[]), PacketError::TooShort(0));
        assert_eq!(check(&JELLYFIN_REQUEST[..7]), PacketError::TooShort(7));
        assert!(matches!(
            check(&JELLYFIN_REQUEST[..19]),
            PacketError::Length { said: 12, got: 11 }
        ));
        let mut bad_crc = JELLYFIN_REQUEST;
        bad_crc[19] ^= 1;
        assert!(matches!(check(&bad_crc), PacketError::Crc { .. }));
        let mut flipped = JELLYFIN_REQUEST;
        flipped[8] ^= 1;
        assert!(matches!(check(&flipped), PacketError::Crc { .. }));
        // A reply is not a request.
        let reply = seal_frame(TYPE_DISCOVER_RPY, &[]).unwrap();
        assert_eq!(check(&reply), PacketError::Type(TYPE_DISCOVER_RPY));
        // A TLV longer than the payload; a device type of 3 bytes.
        let runs_over = seal_frame(TYPE_DISCOVER_REQ, &[1, 9, 0, 0]).unwrap();
        assert_eq!(check(&runs_over), PacketError::Tlv);
        let short_type = seal_frame(TYPE_DISCOVER_REQ, &[1, 3, 0, 0, 1]).unwrap();
        assert!(matches!(check(&short_type), PacketError::TagLength { .. }));
        let lone_tag = seal_frame(TYPE_DISCOVER_REQ, &[2]).unwrap();
        assert_eq!(check(&lone_tag), PacketError::Tlv);
    }

    #[test]
    fn random_bytes_never_panic() {
        // A small LCG: deterministic noise of every length up to a packet.
        let mut x: u32 = 1;
        for len in 0..300 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (x >> 16) as u8
                })
                .collect();
            let _ = parse_discover_request(&bytes);
            let _ = parse_discover_reply(&bytes);
            let _ = parse_msearch(&bytes);
            // The same noise as a payload with a valid frame around it reaches the TLVs.
            if let Some(frame) = seal_frame(TYPE_DISCOVER_REQ, &bytes) {
                let _ = parse_discover_request(&frame);
            }
        }
    }

    #[test]
    fn reply_round_trips_with_two_byte_lengths() {
        let reply = DiscoverReply {
            device_type: DEVICE_TYPE_TUNER,
            device_id: 0x1010_3C5B,
            tuner_count: 4,
            base_url: "http://192.168.1.20:8005".into(),
            lineup_url: format!("http://192.168.1.20:8005/{}/lineup.json", "x".repeat(150)),
            device_auth: "abc".into(),
        };
        let frame = reply.encode().unwrap();
        assert_eq!(&frame[..2], &[0, 3]);
        assert_eq!(parse_discover_reply(&frame).unwrap(), reply);
        // Tags in the payload, as libhdhomerun reads them.
        let (_, payload) = open_frame(&frame).unwrap();
        let tlvs = read_tlvs(payload).unwrap();
        let tags: Vec<u8> = tlvs.iter().map(|(t, _)| *t).collect();
        assert_eq!(
            tags,
            [
                TAG_DEVICE_TYPE,
                TAG_DEVICE_ID,
                TAG_TUNER_COUNT,
                TAG_BASE_URL,
                TAG_LINEUP_URL,
                TAG_DEVICE_AUTH_STR
            ]
        );
        assert_eq!(tlvs[1].1, [0x10, 0x10, 0x3C, 0x5B]);
        // 24 + 150 + 13 = 187 bytes: a two-byte length 0xBB 0x01.
        let at = frame
            .windows(3)
            .position(|w| w == [TAG_LINEUP_URL, 0xBB, 0x01]);
        assert!(at.is_some(), "{frame:?}");
        // Jellyfin's test: more than 13 bytes and the second byte is 3.
        assert!(frame.len() > 13 && frame[1] == 3);
    }

    #[test]
    fn a_reply_too_big_for_a_packet_is_refused() {
        let reply = DiscoverReply {
            base_url: "h".repeat(MAX_PACKET),
            ..DiscoverReply::default()
        };
        assert_eq!(reply.encode(), None);
    }

    #[test]
    fn msearch() {
        let plex = b"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\nMX: 1\r\nST: upnp:rootdevice\r\n\r\n";
        assert_eq!(parse_msearch(plex), Some("upnp:rootdevice"));
        let lower = b"m-search * HTTP/1.1\nman: \"ssdp:discover\"\nst: ssdp:all\n\n";
        assert_eq!(parse_msearch(lower), Some("ssdp:all"));
        let no_man = b"M-SEARCH * HTTP/1.1\r\nST: ssdp:all\r\n\r\n";
        assert_eq!(parse_msearch(no_man), None);
        let notify = b"NOTIFY * HTTP/1.1\r\nNT: upnp:rootdevice\r\nNTS: ssdp:alive\r\n\r\n";
        assert_eq!(parse_msearch(notify), None);
        assert_eq!(parse_msearch(&[0xFF, 0xFE]), None);
    }

    #[test]
    fn ssdp_targets_and_messages() {
        let id = "10103C5B";
        assert_eq!(ssdp_targets("ssdp:all", id).len(), 3);
        assert_eq!(
            ssdp_targets("upnp:rootdevice", id),
            [(
                "upnp:rootdevice".to_string(),
                "uuid:10103C5B::upnp:rootdevice".to_string()
            )]
        );
        assert_eq!(
            ssdp_targets(MEDIA_SERVER, id),
            [(
                MEDIA_SERVER.to_string(),
                format!("uuid:10103C5B::{MEDIA_SERVER}")
            )]
        );
        assert_eq!(ssdp_targets("uuid:10103C5B", id).len(), 1);
        assert!(ssdp_targets("uuid:00000000", id).is_empty());
        assert!(ssdp_targets("urn:dial-multiscreen-org:service:dial:1", id).is_empty());

        let r = msearch_response(
            "upnp:rootdevice",
            "uuid:X::upnp:rootdevice",
            "http://h:1/device.xml",
        );
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(r.contains("\r\nLOCATION: http://h:1/device.xml\r\n"));
        assert!(r.contains("\r\nCACHE-CONTROL: max-age=1800\r\n"));
        assert!(r.ends_with("\r\n\r\n"));
        let n = notify_alive(
            "upnp:rootdevice",
            "uuid:X::upnp:rootdevice",
            "http://h:1/device.xml",
            1900,
        );
        assert!(n.starts_with("NOTIFY * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\n"));
        assert!(n.contains("\r\nNTS: ssdp:alive\r\n"));
    }

    #[test]
    fn base_urls() {
        let (_tx, virtual_tuners) = watch::channel(Arc::new(Vec::new()));
        let mut a = Advert {
            public_url: Some("https://tv.example.org".into()),
            bind_ip: None,
            http_port: 8005,
            main: Device::new("00000001", String::new()).unwrap(),
            device_auth: String::new(),
            tuner_count: 1,
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

    fn three_devices() -> Vec<Device> {
        let mut all = vec![Device::new("10103C5B", String::new()).unwrap()];
        all.extend(virtual_devices(&[
            "2A0F33E1".to_string(),
            "not hex!".to_string(),
            "0B77D02C".to_string(),
        ]));
        all
    }

    #[test]
    fn devices_and_their_paths() {
        let all = three_devices();
        let got: Vec<(u32, &str, &str)> = all
            .iter()
            .map(|d| (d.device_id, d.device_id_hex.as_str(), d.path.as_str()))
            .collect();
        // A bad id is left out; the others keep their tuner numbers.
        assert_eq!(
            got,
            [
                (0x1010_3C5B, "10103C5B", ""),
                (0x2A0F_33E1, "2A0F33E1", "/tuners/1"),
                (0x0B77_D02C, "0B77D02C", "/tuners/3"),
            ]
        );
        assert_eq!(Device::new("+1234567", String::new()), None);
        assert_eq!(Device::new("123456789", String::new()), None);
        assert!(virtual_devices(&[]).is_empty());
    }

    #[test]
    fn one_reply_per_device_asked_for() {
        let all = three_devices();
        let base = "http://192.168.1.20:8005";
        let wildcard = DiscoverRequest {
            device_types: vec![WILDCARD],
            device_id: Some(WILDCARD),
        };
        let replies = discover_replies(&wildcard, &all, base, 4, "auth");
        let got: Vec<(u32, &str, &str)> = replies
            .iter()
            .map(|r| (r.device_id, r.base_url.as_str(), r.lineup_url.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (0x1010_3C5B, base, "http://192.168.1.20:8005/lineup.json"),
                (
                    0x2A0F_33E1,
                    "http://192.168.1.20:8005/tuners/1",
                    "http://192.168.1.20:8005/tuners/1/lineup.json"
                ),
                (
                    0x0B77_D02C,
                    "http://192.168.1.20:8005/tuners/3",
                    "http://192.168.1.20:8005/tuners/3/lineup.json"
                ),
            ]
        );
        for r in &replies {
            assert_eq!(
                (r.device_type, r.tuner_count, r.device_auth.as_str()),
                (DEVICE_TYPE_TUNER, 4, "auth")
            );
            assert_eq!(parse_discover_reply(&r.encode().unwrap()).unwrap(), *r);
        }
        // One device by id: only that one; storage only or another id: none.
        let one = DiscoverRequest {
            device_types: vec![DEVICE_TYPE_TUNER],
            device_id: Some(0x0B77_D02C),
        };
        let replies = discover_replies(&one, &all, base, 4, "auth");
        assert_eq!(replies.len(), 1);
        assert_eq!(replies[0].base_url, "http://192.168.1.20:8005/tuners/3");
        let storage = DiscoverRequest {
            device_types: vec![5],
            device_id: None,
        };
        assert!(discover_replies(&storage, &all, base, 4, "").is_empty());
        let other = DiscoverRequest {
            device_types: vec![],
            device_id: Some(0x0B77_D02D),
        };
        assert!(discover_replies(&other, &all, base, 4, "").is_empty());
    }

    #[test]
    fn ssdp_answers_per_device() {
        let all = three_devices();
        let base = "http://h:1";
        let root = ssdp_answers("upnp:rootdevice", &all, base);
        assert_eq!(
            root,
            [
                (
                    "upnp:rootdevice".to_string(),
                    "uuid:10103C5B::upnp:rootdevice".to_string(),
                    "http://h:1/device.xml".to_string()
                ),
                (
                    "upnp:rootdevice".to_string(),
                    "uuid:2A0F33E1::upnp:rootdevice".to_string(),
                    "http://h:1/tuners/1/device.xml".to_string()
                ),
                (
                    "upnp:rootdevice".to_string(),
                    "uuid:0B77D02C::upnp:rootdevice".to_string(),
                    "http://h:1/tuners/3/device.xml".to_string()
                ),
            ]
        );
        assert_eq!(ssdp_answers("ssdp:all", &all, base).len(), 9);
        let one = ssdp_answers("uuid:2A0F33E1", &all, base);
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].2, "http://h:1/tuners/1/device.xml");
        assert!(ssdp_answers("uuid:00000000", &all, base).is_empty());
    }
}
