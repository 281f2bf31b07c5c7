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
    #[error(
        "no guide is named `{named}`: a pick's `source` is an enabled service or an extra \
         guide ({})",
        guide_names(.guides)
    )]
    UnknownGuide {
        named: String,
        /// The guides there are.
        guides: Vec<String>,
    },
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

fn guide_names(guides: &[String]) -> String {
    match guides {
        [] => "there is none".to_string(),
        [one] => format!("there is `{one}`"),
        _ => {
            let names: Vec<String> = guides.iter().map(|g| format!("`{g}`")).collect();
            format!("there are {}", names.join(", "))
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_pick_says_which_guides_list_the_channel_or_which_guides_there_are() {
        let refused = |named: Option<&str>, elsewhere: &[&str]| {
            GuideMatchError::UnknownGuideChannel {
                guide_id: "ITV.uk".into(),
                named: named.map(str::to_string),
                elsewhere: elsewhere.iter().map(|g| g.to_string()).collect(),
            }
            .to_string()
        };
        assert_eq!(
            refused(Some("A"), &["B"]),
            "guide `A` lists no channel with id `ITV.uk`; guide `B` does (give that `source`, or none)"
        );
        assert_eq!(
            refused(Some("A"), &["B", "C"]),
            "guide `A` lists no channel with id `ITV.uk`; guides `B`, `C` do (give that `source`, or none)"
        );
        assert_eq!(
            refused(Some("A"), &[]),
            "guide `A` lists no channel with id `ITV.uk`, nor does any other"
        );
        assert_eq!(
            refused(None, &[]),
            "no guide lists a channel with id `ITV.uk`"
        );
        let unknown = |guides: &[&str]| {
            GuideMatchError::UnknownGuide {
                named: "X".into(),
                guides: guides.iter().map(|g| g.to_string()).collect(),
            }
            .to_string()
        };
        assert_eq!(
            unknown(&["P", "extra"]),
            "no guide is named `X`: a pick's `source` is an enabled service or an extra guide (there are `P`, `extra`)"
        );
        assert_eq!(
            unknown(&[]),
            "no guide is named `X`: a pick's `source` is an enabled service or an extra guide (there is none)"
        );
    }
}
