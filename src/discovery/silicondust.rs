//! SiliconDust's discover packets (libhdhomerun `hdhomerun_pkt.h`): the frame with its
//! CRC32, the TLV payload, and discover requests and replies. Pure: bytes in, values out.

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::parse_msearch;

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
}
