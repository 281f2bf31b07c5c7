//! Changes other instances made to the shared state store, applied here the way a
//! local change is: a service switched or re-prioritised drops the cached lineup and
//! builds it again with the new choice (as `set_enabled` does), a mapping re-applies to
//! the cached lineup at once (as `map_channel` does) and wakes the guide. New channel
//! identities another instance gave (the store's mirror has them before the next build
//! asks) make this one fetch its channel lists again: that instance saw channels these
//! lists, cached, do not have yet.

use std::sync::Arc;

use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

use super::Registry;
use crate::lineup::Lineup;
use crate::store::Change;

impl Registry {
    /// Follows the store's changes from other instances for as long as this registry
    /// lives (the task holds it weakly, and `Monitors` ends it with a reload).
    pub fn follow_store(self: &Arc<Self>) -> JoinHandle<()> {
        let mut changes = self.store.subscribe();
        let registry = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let changed = match changes.recv().await {
                    Ok(change) => vec![change],
                    // Missed some: whatever they were, apply every part.
                    Err(RecvError::Lagged(_)) => vec![Change::Services, Change::Mappings],
                    Err(RecvError::Closed) => return,
                };
                let Some(registry) = registry.upgrade() else {
                    return;
                };
                for change in changed {
                    registry.apply_remote(change).await;
                }
            }
        })
    }

    async fn apply_remote(&self, change: Change) {
        match change {
            Change::Services => {
                self.drop_lineup();
                tracing::info!("service switches read again: changed by another instance, or after the state store came back");
                // Built now, as after a local switch: the next request (a player's one
                // poll of the playlist) gets the new lineup, not the old one while a
                // new one builds behind it.
                self.follow_switch().await;
            }
            Change::Mappings => {
                if let Some(c) = self
                    .lineup
                    .lock()
                    .expect("lineup lock is never poisoned")
                    .as_mut()
                {
                    c.lineup = Arc::new(Lineup::mapped(&c.base, &self.store.mappings()));
                }
                tracing::info!("channel mappings read again: changed by another instance, or after the state store came back");
                // The guide follows, as after a local mapping (numbers and names in
                // `/epg.xml`, a hidden channel gone, a new guide id's programmes).
                self.rebuilt.notify_one();
            }
            Change::Records => {
                // Another instance may have seen a channel move to another tvg-id.
                self.forget_moved_keys();
                // Or a channel's guide id taken from a tvg-id.
                self.forget_guide_ids();
            }
            Change::Identities => {
                // Another instance numbered channels new to it: its channel lists are
                // newer than the ones cached here. They are fetched again at the next
                // build (the lineup of before answers meanwhile), so that every
                // instance lists a new channel at about the same time, not one up to
                // `channels_ttl` after another (a balancer would serve lineups that
                // flip, and links one instance does not know).
                self.channels.invalidate_all();
                self.drop_lineup();
                tracing::info!(
                    "channel lists to be fetched again: another instance numbered new channels"
                );
            }
            Change::Users => {}
        }
    }
}
