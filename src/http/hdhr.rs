//! HDHomeRun tuner emulation, as Plex, Jellyfin and Emby read it: `discover.json`,
//! `lineup.json`, `lineup_status.json`, `device.xml` / `capability`,
//! `POST lineup.post`, and `/auto/v{number}` streaming the channel's shared MPEG-TS
//! session. `tuner_count` bounds concurrent tuner streams; one more gets 503, which
//! is what media servers expect of a busy tuner. All of it answers 404 when
//! `[hdhomerun] enabled = false`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chacha20poly1305::aead::rand_core::RngCore;
use chacha20poly1305::aead::OsRng;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use super::{base_url, AppState};
use crate::error::AppError;
use crate::session;

/// The tuner's identity and its tuners.
pub struct Tuner {
    /// 8 hex digits with a valid SiliconDust check digit; stable per state_dir.
    pub device_id: String,
    pub device_auth: String,
    slots: Arc<Semaphore>,
}

impl Tuner {
    /// The identity kept in `store` (made on first start), with `tuners` tuners.
    pub fn load(store: &crate::store::Store, tuners: u32) -> anyhow::Result<Self> {
        let device_id = store.setting_or_init("hdhr_device_id", || {
            format!("{:08X}", valid_device_id(OsRng.next_u32()))
        })?;
        let device_auth = store.setting_or_init("hdhr_device_auth", || {
            let mut raw = [0u8; 18];
            OsRng.fill_bytes(&mut raw);
            base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, raw)
        })?;
        Ok(Self {
            device_id,
            device_auth,
            slots: Arc::new(Semaphore::new(tuners as usize)),
        })
    }
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
fn valid_device_id(raw: u32) -> u32 {
    let id = raw & !0xF;
    id | checksum(id)
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/discover.json", get(discover))
        .route("/lineup.json", get(lineup))
        .route("/lineup_status.json", get(lineup_status))
        .route("/device.xml", get(device_xml))
        .route("/capability", get(device_xml))
        .route("/lineup.post", post(lineup_post))
        .route("/auto/{channel}", get(tune))
}

fn enabled(s: &AppState) -> Result<(), AppError> {
    if s.config.hdhomerun.enabled {
        Ok(())
    } else {
        Err(AppError::NotFound(
            "HDHomeRun emulation is off ([hdhomerun] enabled = false)".into(),
        ))
    }
}

async fn discover(State(s): State<AppState>, headers: HeaderMap) -> Result<Json<Value>, AppError> {
    enabled(&s)?;
    let base = base_url(&s.config, &headers);
    let t = &s.tuner;
    Ok(Json(json!({
        "FriendlyName": s.config.hdhomerun.friendly_name,
        // Not an "HDTC" model: Jellyfin would then append ?transcode= to stream URLs.
        "ModelNumber": "HDHR5-4US",
        "FirmwareName": "hdhomerun5_atsc",
        "FirmwareVersion": "20200101",
        "DeviceID": t.device_id,
        "DeviceAuth": t.device_auth,
        "BaseURL": base,
        "LineupURL": format!("{base}/lineup.json"),
        "TunerCount": s.config.hdhomerun.tuner_count,
        "Manufacturer": "freesky",
    })))
}

async fn lineup(State(s): State<AppState>, headers: HeaderMap) -> Result<Json<Value>, AppError> {
    enabled(&s)?;
    let base = base_url(&s.config, &headers);
    let lineup = s.registry.lineup().await?;
    let entries: Vec<Value> = lineup
        .channels
        .iter()
        .map(|c| {
            json!({
                "GuideNumber": c.number.to_string(),
                "GuideName": c.name,
                "URL": format!("{base}/auto/v{}", c.number),
                "HD": true,
                "Favorite": false,
                "DRM": false,
                "VideoCodec": "H264",
                "AudioCodec": "AAC",
            })
        })
        .collect();
    Ok(Json(Value::Array(entries)))
}

async fn lineup_status(State(s): State<AppState>) -> Result<Json<Value>, AppError> {
    enabled(&s)?;
    Ok(Json(json!({
        "ScanInProgress": 0,
        "ScanPossible": 1,
        "Source": "Cable",
        "SourceList": ["Cable"],
    })))
}

/// `scan=start|abort`: the lineup is always current, so a scan finishes at once.
async fn lineup_post(State(s): State<AppState>) -> Result<StatusCode, AppError> {
    enabled(&s)?;
    Ok(StatusCode::OK)
}

async fn device_xml(State(s): State<AppState>, headers: HeaderMap) -> Result<Response, AppError> {
    enabled(&s)?;
    let base = base_url(&s.config, &headers);
    let name = xml_escape(&s.config.hdhomerun.friendly_name);
    let id = &s.tuner.device_id;
    let xml = format!(
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
    );
    Ok(([(header::CONTENT_TYPE, "application/xml")], xml).into_response())
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `/auto/v{number}`: the channel's continuous MPEG-TS, on one of the tuners.
async fn tune(
    State(s): State<AppState>,
    Path(channel): Path<String>,
) -> Result<Response, AppError> {
    enabled(&s)?;
    let number = channel
        .strip_prefix('v')
        .and_then(|n| n.parse::<u32>().ok())
        .ok_or_else(|| {
            AppError::NotFound(format!("`{channel}`: tuner channels are /auto/v{{number}}"))
        })?;
    // The lineup channel's id, so tuner viewers share the session of .ts viewers.
    let id = s
        .registry
        .lineup()
        .await?
        .by_number(number)
        .map(|c| c.id.clone())
        .ok_or_else(|| AppError::NotFound(format!("no channel number {number}")))?;
    let Ok(slot) = s.tuner.slots.clone().try_acquire_owned() else {
        return Ok(AppError::Busy(format!(
            "all {} tuners are in use",
            s.config.hdhomerun.tuner_count
        ))
        .into_response());
    };
    let deps = session::Deps {
        registry: s.registry.clone(),
        media: s.media.clone(),
        cfg: s.config.streams.clone(),
        limit: s.config.server.max_body_bytes,
    };
    let rx = s.sessions.join(&deps, &id, None).await?;
    // The tuner is busy for as long as the client reads.
    let body = session::viewer_stream(rx).map(move |chunk| {
        let _held = &slot;
        chunk
    });
    Ok((
        [
            (header::CONTENT_TYPE, "video/MP2T"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_ids_get_a_valid_check_digit() {
        for raw in [0u32, 0x1234_5678, 0xFFFF_FFFF, 0xDEAD_BEEF, 0x1010_3C50] {
            let id = valid_device_id(raw);
            assert!(is_valid_device_id(id), "{id:08X}");
            assert_eq!(id & !0xF, raw & !0xF);
            assert!(!is_valid_device_id(id ^ 0x1), "{id:08X}");
        }
    }
}
