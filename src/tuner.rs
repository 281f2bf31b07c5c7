//! The HDHomeRun tuner's identity (DeviceID and DeviceAuth, made once and kept in the
//! store) and its tuner slots (`hdhomerun.tuner_count`, shared by the main tuner and
//! every virtual one). Read by the HDHomeRun routes and by LAN discovery.

use std::sync::Arc;

use chacha20poly1305::aead::rand_core::RngCore;
use chacha20poly1305::aead::OsRng;
use tokio::sync::Semaphore;

use crate::hdhr;

/// The tuner's identity and its tuners.
pub struct Tuner {
    /// 8 hex digits with a valid SiliconDust check digit; stable per state_dir.
    pub device_id: String,
    pub device_auth: String,
    /// One permit per tuner: a `/auto/v{n}` stream holds one while it plays.
    pub(crate) slots: Arc<Semaphore>,
}

impl Tuner {
    /// The identity kept in `store` (made on first start), with `tuners` tuners.
    pub fn load(store: &crate::store::Store, tuners: u32) -> anyhow::Result<Self> {
        let device_id = store.setting_or_init("hdhr_device_id", || {
            format!("{:08X}", hdhr::valid_device_id(OsRng.next_u32()))
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

    /// The DeviceIDs of virtual tuners 1..=`count`, derived from ours (so stable for
    /// as long as ours is); each valid, and none equal to ours or to another's. The
    /// list for `count` is the start of the list for `count + 1`.
    pub fn virtual_ids(&self, count: usize) -> Vec<String> {
        let main = u32::from_str_radix(&self.device_id, 16).unwrap_or_default();
        hdhr::derived_ids(main, count)
            .into_iter()
            .map(|id| format!("{id:08X}"))
            .collect()
    }
}
