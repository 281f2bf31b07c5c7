//! The HDHomeRun tuner's identity (DeviceID and DeviceAuth, made once and kept in the
//! store) and its tuner slots (`hdhomerun.tuner_count`, shared by the main tuner and
//! every virtual one), and the lineup as its virtual tuners split it. Read by the
//! HDHomeRun routes and by LAN discovery.

use std::sync::{Arc, Mutex};

use chacha20poly1305::aead::rand_core::RngCore;
use chacha20poly1305::aead::OsRng;

use crate::accounts::Account;
use crate::hdhr;
use crate::lineup::Lineup;
use crate::slots::Slots;

/// The tuner's identity and its tuners.
pub struct Tuner {
    /// 8 hex digits with a valid SiliconDust check digit; stable per state_dir.
    pub device_id: String,
    pub device_auth: String,
    /// One slot per tuner: a `/auto/v{n}` stream holds one while it plays.
    pub(crate) slots: Arc<Slots>,
    /// The last lineup split into virtual tuners, with the size it was split by: every
    /// request of a virtual tuner needs the split, and it changes only with them.
    split: Mutex<Option<SplitMemo>>,
}

/// A lineup, the size it was split by, and its virtual tuners (indices into it).
type SplitMemo = (
    Arc<Lineup>,
    usize,
    Option<Arc<Account>>,
    Arc<Vec<Vec<usize>>>,
);

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
            slots: {
                let slots = Arc::new(Slots::default());
                slots.set_limit(Some(tuners as usize));
                slots
            },
            split: Mutex::default(),
        })
    }

    /// `tuner_count` is `tuners` after a reload: the slots (and the streams holding
    /// them) are kept, and counted against the new number.
    pub fn resize(&self, tuners: u32) {
        self.slots.set_limit(Some(tuners as usize));
    }

    /// The channels of `lineup` that `account` sees (all without one: the tuner's
    /// account, with `require_account`) split into virtual tuners of at most `max`
    /// channels ([`hdhr::pack`]), made once per lineup and account.
    pub fn split(
        &self,
        lineup: &Arc<Lineup>,
        max: usize,
        account: Option<&Arc<Account>>,
    ) -> Arc<Vec<Vec<usize>>> {
        let mut memo = self.split.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((of, m, by, tuners)) = &*memo {
            let same_account = match (by, account) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            };
            if Arc::ptr_eq(of, lineup) && *m == max && same_account {
                return tuners.clone();
            }
        }
        let tuners = Arc::new(hdhr::pack(&lineup.channels, max, |c| {
            account.is_none_or(|a| a.sees(c))
        }));
        *memo = Some((lineup.clone(), max, account.cloned(), tuners.clone()));
        tuners
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
