//! Each service's last channel list that loaded, kept on disk (`state_dir/lists/`) by
//! a serving instance, so that a restart during an outage starts with that service's
//! channels, as the lineup keeps them between restarts (see `last_good`).
//!
//! One file per service, named by hashes of its name and of what its list depends on
//! (`list_config`): a list is taken back only by a service of the same name listing
//! from the same place (another URL, other credentials or headers are another list). A file is written (on the blocking
//! pool, whole and renamed into place, 0600) only when a list that loaded differs from
//! the one on disk; files of the service's earlier configs are removed then. A list
//! that named its guide (an M3U header's `url-tvg`) keeps that address with it, given
//! back to the service at a start (`Service::take_back_guide`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Entry, Registry};
use crate::config::ServiceConfig;
use crate::model::{Catchup, CatchupKind, Channel, Headers};

const DIR: &str = "lists";

#[derive(Serialize, Deserialize)]
struct SavedList {
    service: String,
    channels: Vec<SavedChannel>,
    /// The guide the list named (an M3U header's `url-tvg`), when it named one; lists
    /// kept before have none.
    #[serde(default)]
    guide: Option<String>,
}

/// A `Channel` with every field, those kept out of API output too.
#[derive(Serialize, Deserialize)]
struct SavedChannel {
    id: String,
    name: String,
    logo: String,
    group: String,
    tags: Vec<String>,
    tvg_id: String,
    /// Lists written before station ids have none.
    #[serde(default)]
    station_id: String,
    number: Option<u32>,
    headers: Headers,
    url: Option<String>,
    catchup: Option<SavedCatchup>,
}

#[derive(Serialize, Deserialize)]
struct SavedCatchup {
    kind: u8,
    days: u32,
    source: String,
    utc_offset: i32,
}

const KINDS: [CatchupKind; 5] = [
    CatchupKind::Default,
    CatchupKind::Append,
    CatchupKind::Shift,
    CatchupKind::Flussonic,
    CatchupKind::Xtream,
];

/// `SavedList` as written: borrowed from the list, the same JSON.
#[derive(Serialize)]
struct ListOut<'a> {
    service: &'a str,
    channels: Channels<'a>,
    guide: Option<&'a str>,
}

struct Channels<'a>(&'a [Channel]);

impl Serialize for Channels<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(ChannelOut))
    }
}

/// `SavedChannel` as written, borrowed from a `Channel`.
struct ChannelOut<'a>(&'a Channel);

impl Serialize for ChannelOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let c = self.0;
        let mut out = s.serialize_struct("SavedChannel", 11)?;
        out.serialize_field("id", &c.id)?;
        out.serialize_field("name", &c.name)?;
        out.serialize_field("logo", &c.logo)?;
        out.serialize_field("group", &c.group)?;
        out.serialize_field("tags", &c.tags)?;
        out.serialize_field("tvg_id", &c.tvg_id)?;
        out.serialize_field("station_id", &c.station_id)?;
        out.serialize_field("number", &c.number)?;
        out.serialize_field("headers", &c.headers)?;
        out.serialize_field("url", &c.url)?;
        out.serialize_field("catchup", &c.catchup.as_ref().map(CatchupOut))?;
        out.end()
    }
}

struct CatchupOut<'a>(&'a Catchup);

impl Serialize for CatchupOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let k = self.0;
        let mut out = s.serialize_struct("SavedCatchup", 4)?;
        out.serialize_field("kind", &kind_index(k.kind))?;
        out.serialize_field("days", &k.days)?;
        out.serialize_field("source", &k.source)?;
        out.serialize_field("utc_offset", &k.utc_offset)?;
        out.end()
    }
}

fn kind_index(kind: CatchupKind) -> u8 {
    KINDS.iter().position(|x| *x == kind).unwrap_or(0) as u8
}

impl SavedChannel {
    fn channel(self, service: &str) -> Channel {
        Channel {
            id: self.id,
            name: self.name,
            logo: self.logo,
            group: self.group,
            tags: self.tags,
            tvg_id: self.tvg_id,
            station_id: self.station_id,
            number: self.number,
            service: service.to_string(),
            headers: self.headers,
            url: self.url,
            catchup: self.catchup.map(|k| Catchup {
                kind: KINDS.get(k.kind as usize).copied().unwrap_or_default(),
                days: k.days,
                source: k.source,
                utc_offset: k.utc_offset,
            }),
        }
    }
}

fn hex16(text: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    d.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// What a service's channel list depends on: its kind's keys (URL, credentials...),
/// headers, auth and `allow_private`; not its description, priority or timeouts.
pub(crate) fn list_config(cfg: &ServiceConfig) -> String {
    format!(
        "{:?}|{:?}|{:?}|{}",
        cfg.kind, cfg.headers, cfg.auth, cfg.allow_private
    )
}

/// `lists/{name hash}.{list config hash}.json` of `e`.
fn file_of(dir: &Path, e: &Entry) -> (String, PathBuf) {
    let prefix = format!("{}.", hex16(&e.cfg.name));
    let file = format!("{prefix}{}.json", hex16(&list_config(&e.cfg)));
    (prefix, dir.join(DIR).join(file))
}

impl Registry {
    /// Where kept lists go (`state_dir`), once `keep_lists_in` said.
    pub(crate) fn kept_dir(&self) -> Option<&Path> {
        self.lists_dir.get().map(PathBuf::as_path)
    }

    /// `{name hash}.{list config hash}` of service `name`: what a file kept for its
    /// lists is named after, so another config's lists are never taken back.
    pub(crate) fn kept_key(&self, name: &str) -> Option<String> {
        let e = self.entry(name)?;
        Some(format!(
            "{}.{}",
            hex16(&e.cfg.name),
            hex16(&list_config(&e.cfg))
        ))
    }

    /// From now on, keeps each service's last good list in `state_dir/lists/`; first
    /// takes back the lists kept there for services that have none yet (a start).
    pub fn keep_lists_in(&self, state_dir: &Path) {
        let _ = self.lists_dir.set(state_dir.to_path_buf());
        for e in &self.entries {
            if self
                .last_good
                .lock()
                .expect("last_good lock is never poisoned")
                .contains_key(&e.cfg.name)
            {
                continue;
            }
            let (_, path) = file_of(state_dir, e);
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            match serde_json::from_slice::<SavedList>(&bytes) {
                Ok(saved) if saved.service == e.cfg.name => {
                    // Without a guide (none named, or kept by an older version): written
                    // again at the next list that loads, which may name one.
                    let with_guide = saved.guide.is_some();
                    if let Some(url) = saved.guide.as_deref().and_then(|g| url::Url::parse(g).ok())
                    {
                        e.service.take_back_guide(url);
                    }
                    let list: Vec<Channel> = saved
                        .channels
                        .into_iter()
                        .map(|c| c.channel(&e.cfg.name))
                        .collect();
                    // Kept by an older version, or edited: bounded as a list read now.
                    let (list, _) = crate::model::bounded(list);
                    tracing::info!(service = %e.cfg.name, channels = list.len(), "last listed channels taken back from the state dir");
                    let list = Arc::new(list);
                    if with_guide {
                        self.saved
                            .lock()
                            .expect("saved lock is never poisoned")
                            .insert(e.cfg.name.clone(), list.clone());
                    }
                    self.last_good
                        .lock()
                        .expect("last_good lock is never poisoned")
                        .insert(e.cfg.name.clone(), list);
                }
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(file = %path.display(), error = %err, "a kept channel list does not read; ignored")
                }
            }
        }
    }

    /// Writes `list`, which service `name` just listed, unless it is the one kept.
    pub(super) fn keep_list(&self, name: &str, list: &Arc<Vec<Channel>>) {
        let Some(dir) = self.lists_dir.get() else {
            return;
        };
        let Some(e) = self.entry(name) else { return };
        {
            let mut saved = self.saved.lock().expect("saved lock is never poisoned");
            if saved
                .get(name)
                .is_some_and(|s| Arc::ptr_eq(s, list) || **s == **list)
            {
                return;
            }
            saved.insert(name.to_string(), list.clone());
        }
        let (prefix, path) = file_of(dir, e);
        let list = list.clone();
        let service = name.to_string();
        // Asked after the list was read: an M3U list's header named it.
        let guide = match e.service.guide_source() {
            Some(crate::services::GuideSource::Url(url)) => Some(url.to_string()),
            _ => None,
        };
        let newest = self.saved.clone();
        tokio::task::spawn_blocking(move || {
            // One write at a time, and only of the newest list: two writes finishing
            // out of order would leave the older list on disk.
            static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
            let _one = ONE.lock().unwrap_or_else(|p| p.into_inner());
            let still_newest = newest
                .lock()
                .expect("saved lock is never poisoned")
                .get(&service)
                .is_some_and(|s| Arc::ptr_eq(s, &list));
            if !still_newest {
                return;
            }
            if let Err(err) = write(&path, &prefix, &service, &list, guide.as_deref()) {
                tracing::warn!(file = %path.display(), error = %err, "keeping the channel list failed");
            }
        });
    }
}

/// Writes a file whole: `body` into a temporary file beside `path` (0600; the
/// directory made 0700 if missing), synced, then renamed into place, so a reader never
/// sees half a file. Shared by the kept channel and movie lists.
pub(crate) fn write_whole(
    path: &Path,
    body: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let dir = path.parent().expect("a file in a directory");
    if !dir.exists() {
        let mut b = std::fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b.recursive(true).create(dir)?;
    }
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
    {
        use std::io::Write;
        let mut f =
            std::io::BufWriter::with_capacity(1 << 16, crate::store::create_private_file(&tmp)?);
        body(&mut f)?;
        f.flush()?;
        f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

fn write(
    path: &Path,
    prefix: &str,
    service: &str,
    list: &[Channel],
    guide: Option<&str>,
) -> std::io::Result<()> {
    let dir = path.parent().expect("a file in lists/");
    // Written as it is serialized, from the list itself: a copy of a big list, or its
    // whole JSON in memory, would double the memory a lineup build takes.
    write_whole(path, |f| {
        let saved = ListOut {
            service,
            channels: Channels(list),
            guide,
        };
        serde_json::to_writer(f, &saved).map_err(std::io::Error::other)
    })?;
    // The lists of this service's earlier configs.
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    for old in std::fs::read_dir(dir)?.flatten() {
        let n = old.file_name();
        let n = n.to_string_lossy();
        if n.starts_with(prefix) && n.ends_with(".json") && n != name {
            let _ = std::fs::remove_file(old.path());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_channel_reads_back_whole() {
        for kind in KINDS {
            let c = Channel {
                id: "7".into(),
                name: "Seven".into(),
                logo: "http://logo.example/7.png".into(),
                group: "News".into(),
                tags: vec!["hd".into()],
                tvg_id: "Seven.uk".into(),
                station_id: "12345".into(),
                number: Some(7),
                service: "S".into(),
                headers: vec![("Referer".into(), "http://ref.example/".into())],
                url: Some("http://up.example/7.m3u8".into()),
                catchup: Some(Catchup {
                    kind,
                    days: 3,
                    source: "?utc={utc}".into(),
                    utc_offset: 3600,
                }),
            };
            let json = serde_json::to_vec(&ChannelOut(&c)).unwrap();
            let back: SavedChannel = serde_json::from_slice(&json).unwrap();
            assert_eq!(back.channel("S"), c);
        }
    }
}
