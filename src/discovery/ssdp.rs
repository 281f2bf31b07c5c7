//! SSDP messages (UPnP device architecture 1.0, HTTP over UDP): reading an M-SEARCH and
//! writing its responses and `ssdp:alive` NOTIFYs. Pure: text in, text out.

use std::net::Ipv4Addr;
use std::time::Duration;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
