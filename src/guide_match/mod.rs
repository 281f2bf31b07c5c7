//! Guide matching: which guide channel gives a lineup channel its programmes when no
//! guide knows it by id. `features` reads names, `matcher` indexes every guide
//! channel and scores lineup channels against it (pure, no IO, deterministic);
//! `decisions` holds what an admin confirmed, rejected or picked (kept in the store's
//! records) and `table` puts the exact matches, the decisions and the automatic
//! matches together into what the guide reads and the API shows.

pub mod eval;
pub mod features;
pub mod matcher;
pub mod table;

pub use matcher::{GuideChannel, Index, Outcome, Query, Scored, Settings};

/// Why a match decision was refused.
#[derive(Debug, thiserror::Error)]
pub enum GuideMatchError {
    #[error("channel `{0}` has no guide channel to confirm")]
    NothingToConfirm(String),
    #[error("no guide lists a channel with id `{0}`")]
    UnknownGuideChannel(String),
    #[error(transparent)]
    Registry(#[from] crate::services::registry::RegistryError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}
