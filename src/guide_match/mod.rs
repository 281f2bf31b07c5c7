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
    #[error("{}", unknown_guide_channel(.guide_id, .named.as_deref(), .elsewhere))]
    UnknownGuideChannel {
        guide_id: String,
        /// The guide (`source`) the pick named, if it named one.
        named: Option<String>,
        /// The guides that do list the id (none when no guide does).
        elsewhere: Vec<String>,
    },
    #[error(
        "guide `{guide}` gives `{guide_id}` to channel `{holder}` by id (its tvg-id or \
         guide id), and a guide channel goes to one lineup channel only: to move it, \
         set another guide id on `{holder}` first (PATCH /api/channels/{holder} with \
         `tvg_id`)"
    )]
    HeldById {
        guide: String,
        guide_id: String,
        holder: String,
    },
    #[error(
        "channel `{channel}` takes `{guide_id}` from guide `{guide}` by id (its tvg-id or \
         guide id), which no decision overrides: to give it another guide channel, or \
         none, set its guide id (PATCH /api/channels/{channel} with `tvg_id`)"
    )]
    TakesById {
        channel: String,
        guide: String,
        guide_id: String,
    },
    #[error(transparent)]
    Registry(#[from] crate::services::registry::RegistryError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

fn unknown_guide_channel(guide_id: &str, source: Option<&str>, elsewhere: &[String]) -> String {
    match (source, elsewhere) {
        (Some(source), [_, ..]) => format!(
            "guide `{source}` lists no channel with id `{guide_id}`; {} {} (give that \
             `source`, or none)",
            if elsewhere.len() == 1 {
                "guide"
            } else {
                "guides"
            },
            elsewhere
                .iter()
                .map(|g| format!("`{g}`"))
                .collect::<Vec<_>>()
                .join(", ")
                + if elsewhere.len() == 1 { " does" } else { " do" }
        ),
        (Some(source), []) => {
            format!("guide `{source}` lists no channel with id `{guide_id}`, nor does any other")
        }
        (None, _) => format!("no guide lists a channel with id `{guide_id}`"),
    }
}
