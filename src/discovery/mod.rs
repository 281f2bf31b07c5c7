//! LAN discovery of the HDHomeRun tuner, off unless `[hdhomerun] discovery = true`:
//! SiliconDust's UDP discover protocol (what Jellyfin's auto-detect and libhdhomerun
//! broadcast to port 65001) and SSDP (what Plex listens for on 239.255.255.250:1900).
//!
//! Every device is advertised: the whole tuner at `{base}` and, when `[hdhomerun]
//! max_channels` splits the lineup, each virtual tuner n at `{base}/tuners/{n}` with its
//! own DeviceID (`hdhr`), one discover reply and one set of SSDP USNs each. The
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

mod askers;
mod devices;
mod silicondust;
mod ssdp;
mod tasks;

pub use askers::{is_lan_asker, AskerLimit, ASKER_BURST, ASKER_RATE};
pub use devices::{discover_replies, ssdp_answers, virtual_devices, Device};
pub use silicondust::{
    crc32, open_frame, parse_discover_reply, parse_discover_request, read_tlvs, seal_frame,
    DiscoverReply, DiscoverRequest, PacketError, DEVICE_TYPE_TUNER, MAX_PACKET, TAG_BASE_URL,
    TAG_DEVICE_AUTH_STR, TAG_DEVICE_ID, TAG_DEVICE_TYPE, TAG_LINEUP_URL, TAG_MULTI_TYPE,
    TAG_TUNER_COUNT, TYPE_DISCOVER_REQ, TYPE_DISCOVER_RPY, WILDCARD,
};
pub use ssdp::{
    msearch_response, notify_alive, parse_msearch, ssdp_targets, SSDP_GROUP, SSDP_MAX_AGE,
};
pub use tasks::{spawn, spawn_with, Discovery};
