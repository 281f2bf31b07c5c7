//! Slots held while something runs: an Xtream account's connections to its panel
//! (`services::xtream`), the HDHomeRun tuners (`tuner`). A limit that changes while
//! slots are held (a panel's new `max_connections`, a reload's `tuner_count`) counts
//! the ones held: no new slot until they are below it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

/// At most `limit` held at once (no limit while `None`); the limit may change while
/// slots are held: one more is taken only below the new limit.
#[derive(Default)]
pub struct Slots {
    state: Mutex<SlotState>,
    freed: Notify,
}

#[derive(Default)]
struct SlotState {
    limit: Option<usize>,
    in_use: usize,
}

/// One held slot; dropping it frees the slot.
pub struct Slot(Arc<Slots>);

impl Drop for Slot {
    fn drop(&mut self) {
        {
            let mut s = self.0.lock();
            s.in_use = s.in_use.saturating_sub(1);
        }
        self.0.freed.notify_waiters();
    }
}

impl Slots {
    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state
            .lock()
            .expect("slots lock is never poisoned: no panics while held")
    }

    pub fn set_limit(&self, limit: Option<usize>) {
        self.lock().limit = limit;
        self.freed.notify_waiters();
    }

    pub fn in_use(&self) -> usize {
        self.lock().in_use
    }

    pub fn try_take(self: &Arc<Self>) -> Result<Slot, usize> {
        let mut s = self.lock();
        match s.limit {
            Some(limit) if s.in_use >= limit => Err(limit),
            _ => {
                s.in_use += 1;
                Ok(Slot(self.clone()))
            }
        }
    }

    /// A slot, waiting up to `wait` for one to be freed; else the limit.
    pub async fn take(self: &Arc<Self>, wait: Duration) -> Result<Slot, usize> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            // Registered before looking, so a slot freed in between is not missed.
            freed.as_mut().enable();
            let limit = match self.try_take() {
                Ok(slot) => return Ok(slot),
                Err(limit) => limit,
            };
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return Err(limit);
            }
        }
    }
}
