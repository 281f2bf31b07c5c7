//! HDHomeRun tuner maths, pure (no axum, no IO): SiliconDust DeviceIDs and their check
//! digit, the DeviceIDs of virtual tuners derived from ours, the packing of a lineup
//! into virtual tuners by group, and `device.xml`. The handlers that serve them are in
//! `http::hdhr`; discovery advertises the same devices.

use std::collections::HashMap;

use crate::model::LineupChannel;

/// Virtual tuner n's id: the first 32 bits of SHA-256("freesky virtual tuner {main}
/// {n} {salt}") with the check digit fixed, salt counting up past a clash (with ours,
/// an earlier tuner's, or the all-zeros and wildcard ids).
pub fn derived_ids(main: u32, count: usize) -> Vec<u32> {
    let mut ids: Vec<u32> = Vec::with_capacity(count);
    for n in 1..=count {
        for salt in 0u32.. {
            let seed = format!("freesky virtual tuner {main:08X} {n} {salt}");
            let digest = ring::digest::digest(&ring::digest::SHA256, seed.as_bytes());
            let head: [u8; 4] = digest.as_ref()[..4]
                .try_into()
                .expect("SHA-256 is 32 bytes");
            let id = valid_device_id(u32::from_be_bytes(head));
            if id != main && id != 0 && id != u32::MAX && !ids.contains(&id) {
                ids.push(id);
                break;
            }
        }
    }
    ids
}

/// Splits `channels` into virtual tuners of at most `max` channels each, as indices
/// into `channels`. Channels go in number order, grouped by `group` (channels without
/// one form a group too), groups in the order of their lowest number. A group joins
/// the current tuner when it fits there, else it starts the next one; a group larger
/// than `max` fills as many tuners as it needs, in number order, and the next group
/// may join its last one. There is always one tuner, empty when `channels` is.
/// Channels `keep` refuses are left out (those the tuner's account does not see).
pub fn pack(
    channels: &[LineupChannel],
    max: usize,
    keep: impl Fn(&LineupChannel) -> bool,
) -> Vec<Vec<usize>> {
    let max = max.max(1);
    let mut order: Vec<usize> = (0..channels.len())
        .filter(|&i| keep(&channels[i]))
        .collect();
    order.sort_by_key(|&i| channels[i].number);
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut group_of: HashMap<&str, usize> = HashMap::new();
    for i in order {
        let g = *group_of
            .entry(channels[i].group.as_str())
            .or_insert_with(|| {
                groups.push(Vec::new());
                groups.len() - 1
            });
        groups[g].push(i);
    }
    let mut tuners: Vec<Vec<usize>> = vec![Vec::new()];
    for members in groups {
        let open = tuners.last().map_or(0, Vec::len);
        if open > 0 && open + members.len() > max {
            tuners.push(Vec::new());
        }
        for i in members {
            if tuners.last().is_none_or(|t| t.len() >= max) {
                tuners.push(Vec::new());
            }
            tuners.last_mut().expect("a tuner was just ensured").push(i);
        }
    }
    tuners
}

/// SiliconDust's check: the XOR of the nibbles, every other one through a lookup
/// table, is zero (libhdhomerun `hdhomerun_discover_validate_device_id`).
pub fn is_valid_device_id(id: u32) -> bool {
    checksum(id) == 0
}

const LOOKUP: [u32; 16] = [
    0xA, 0x5, 0xF, 0x6, 0x7, 0xC, 0x1, 0xB, 0x9, 0x2, 0x8, 0xD, 0x4, 0x3, 0xE, 0x0,
];

fn checksum(id: u32) -> u32 {
    let nibble = |shift: u32| (id >> shift) & 0xF;
    LOOKUP[nibble(28) as usize]
        ^ nibble(24)
        ^ LOOKUP[nibble(20) as usize]
        ^ nibble(16)
        ^ LOOKUP[nibble(12) as usize]
        ^ nibble(8)
        ^ LOOKUP[nibble(4) as usize]
        ^ nibble(0)
}

/// `raw` with its last nibble replaced by the check digit.
pub fn valid_device_id(raw: u32) -> u32 {
    let id = raw & !0xF;
    id | checksum(id)
}

/// `s` safe inside XML text and attribute values.
pub fn xml_escape(s: &str) -> String {
    crate::xmltv::xml_chars(s)
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The UPnP device description of the device with DeviceID `device_id` at `base`.
pub fn device_xml(base: &str, friendly_name: &str, device_id: &str) -> String {
    let name = xml_escape(friendly_name);
    let id = device_id;
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<root xmlns="urn:schemas-upnp-org:device-1-0">
  <specVersion><major>1</major><minor>0</minor></specVersion>
  <URLBase>{base}</URLBase>
  <device>
    <deviceType>urn:schemas-upnp-org:device:MediaServer:1</deviceType>
    <friendlyName>{name}</friendlyName>
    <manufacturer>Silicondust</manufacturer>
    <modelName>HDHR5-4US</modelName>
    <modelNumber>HDHR5-4US</modelNumber>
    <serialNumber>{id}</serialNumber>
    <UDN>uuid:{id}</UDN>
  </device>
</root>
"#
    )
}

/// Whether a channel named `name` is HD for `lineup.json`'s `HD` (Jellyfin picks the
/// stream's bitrate budget by it): yes unless its name ends in a standard-definition
/// mark (`SD`, a height under 720 lines: `480p`, `576i`, `540p`..., bare or in
/// brackets), or in one followed by a time shift (`E4 SD +1`) or by notes of state
/// ("[Not 24/7]", "[Geo-blocked]"). The stream itself is not probed.
pub fn is_hd(name: &str) -> bool {
    /// Words of a state note after the mark ("Not 24/7", "Geo-blocked").
    const STATE: &[&str] = &["not", "24", "7", "geo", "blocked", "timeout", "offline"];
    let hours = |h: &str| (1..=2).contains(&h.len()) && h.bytes().all(|b| b.is_ascii_digit());
    // "+1", and the "1" of "-1" (a separator here): a shift, not a mark.
    let shift = |w: &str| hours(w.strip_prefix('+').unwrap_or(w));
    let state = |w: &str| STATE.iter().any(|s| w.eq_ignore_ascii_case(s));
    let last = name
        .rsplit(|c: char| c.is_whitespace() || "()[]{}|-_/".contains(c))
        .find(|w| !w.is_empty() && !shift(w) && !state(w))
        .unwrap_or("");
    // "SD+1": the mark before a shift written on to it.
    let last = match last.rsplit_once('+') {
        Some((mark, h)) if hours(h) => mark,
        _ => last,
    };
    let lines = last
        .strip_suffix(['p', 'P', 'i', 'I'])
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.parse::<u32>().ok());
    !(last.eq_ignore_ascii_case("sd") || lines.is_some_and(|l| l < 720))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_channel_is_hd_unless_its_name_says_standard_definition() {
        for hd in [
            "BBC One HD",
            "BBC One",
            "Sky Sports 4K",
            "Channel 5",
            "Kids (720p)",
            "Das Erste (1080p) [Geo-blocked]",
            "News 24/7",
            "Channel 7",
            "E4 HD +1",
            "E4+1",
            "Channel 5",
            "+1",
            "",
        ] {
            assert!(is_hd(hd), "{hd}");
        }
        for sd in [
            "BBC One SD",
            "News (576i)",
            "Film4 [480p]",
            "Music sd",
            "Retro - SD",
            "E4 SD +1",
            "E4 SD (+1)",
            "E4 SD+1",
            "E4 SD -1",
            // As the iptv-org lists write them: a height, then notes of state.
            "News 24 (392p) [Not 24/7]",
            "TV 7 Albania (540p)",
            "ATV (234p) [Geo-blocked]",
        ] {
            assert!(!is_hd(sd), "{sd}");
        }
    }

    #[test]
    fn device_ids_get_a_valid_check_digit() {
        for raw in [0u32, 0x1234_5678, 0xFFFF_FFFF, 0xDEAD_BEEF, 0x1010_3C50] {
            let id = valid_device_id(raw);
            assert!(is_valid_device_id(id), "{id:08X}");
            assert_eq!(id & !0xF, raw & !0xF);
            assert!(!is_valid_device_id(id ^ 0x1), "{id:08X}");
        }
    }

    #[test]
    fn virtual_device_ids_are_valid_distinct_and_stable() {
        let main = valid_device_id(0x1234_5678);
        let ids = derived_ids(main, 40);
        assert_eq!(ids.len(), 40);
        for (i, id) in ids.iter().enumerate() {
            assert!(is_valid_device_id(*id), "{id:08X}");
            assert_ne!(*id, main);
            assert!(!ids[..i].contains(id), "{id:08X} twice");
        }
        assert_eq!(
            derived_ids(main, 3),
            ids[..3],
            "a longer list starts the same"
        );
        assert_ne!(derived_ids(valid_device_id(0xABCD_EF00), 3), ids[..3]);
    }

    /// `pack` of channels given as (number, group), as the numbers per tuner.
    fn check(channels: &[(u32, &str)], max: usize, expected: &[&[u32]]) {
        let channels: Vec<LineupChannel> = channels
            .iter()
            .map(|&(number, group)| LineupChannel {
                id: format!("c{number}").into(),
                number,
                name: format!("C{number}").into(),
                logo: Default::default(),
                logo_from: Default::default(),
                group: group.into(),
                tags: vec![],
                guide_id: Default::default(),
                sources: vec![],
                catchup_days: 0,
                station_id: Default::default(),
            })
            .collect();
        let got: Vec<Vec<u32>> = pack(&channels, max, |_| true)
            .iter()
            .map(|t| t.iter().map(|&i| channels[i].number).collect())
            .collect();
        assert_eq!(got, expected, "{channels:?}");
    }

    #[test]
    fn packing_keeps_groups_whole_and_splits_only_big_ones() {
        // Groups in the order of their lowest number, whatever the input order.
        let a = [(25, "A"), (1, "A"), (2, "A"), (24, "A")];
        let b: Vec<(u32, &str)> = (3..=14).map(|n| (n, "B")).collect();
        let c: Vec<(u32, &str)> = (15..=23).map(|n| (n, "C")).collect();
        let all: Vec<(u32, &str)> = [&c[..], &a, &b].concat();
        check(
            &all,
            10,
            &[
                &[1, 2, 24, 25],
                &[3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
                &[13, 14],
                &[15, 16, 17, 18, 19, 20, 21, 22, 23],
            ],
        );
        // Small groups share a tuner while they fit; channels without a group are one.
        check(
            &[(1, "X"), (2, ""), (3, "Y"), (4, ""), (5, "X"), (6, "Z")],
            4,
            &[&[1, 5, 2, 4], &[3, 6]],
        );
        // A big group's last tuner takes the next group when it fits.
        check(
            &[(1, "B"), (2, "B"), (3, "B"), (4, "S")],
            2,
            &[&[1, 2], &[3, 4]],
        );
        check(&[], 5, &[&[]]);
        check(&[(1, ""), (2, "")], 0, &[&[1], &[2]]);
    }
}
