//! The devices discovery advertises (the whole tuner and its virtual tuners) and the
//! answers each one gets, as discover replies and SSDP triples. Pure.

use super::silicondust::{DiscoverReply, DiscoverRequest, DEVICE_TYPE_TUNER};
use super::ssdp::ssdp_targets;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::{parse_discover_reply, WILDCARD};

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
