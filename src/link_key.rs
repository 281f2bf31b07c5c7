//! The link key shared by several instances: `[server] proxy_key_file` (and
//! `proxy_key_previous_file` during a rotation), read at start and on reload. Every
//! instance given the same file seals the same links and opens the others'; without
//! it each instance keeps its own `state_dir/proxy.key` (`proxy::Signer::load_or_create`).
//!
//! A key file holds 32 bytes: raw, or written as 64 hex digits (what
//! `openssl rand -hex 32` or `head -c32 /dev/urandom | xxd -p -c64` print), a trailing
//! line break allowed. Like the other secrets it is reported when group or others can
//! read it.

use std::path::Path;
use std::time::Duration;

use crate::proxy::Signer;

#[derive(Debug, thiserror::Error)]
pub enum LinkKeyError {
    // The cause is in the message, not a `source`: printed with its chain it read
    // "...: No such file or directory (os error 2): No such file or directory (os error 2)".
    #[error("cannot read the proxy key {path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("the proxy key {0} is not 32 bytes or 64 hex digits")]
    Malformed(String),
}

/// The 32-byte key in `path` (the config check reads it so, a file that would stop
/// the start being its problem).
pub fn key_in(path: &Path) -> Result<Vec<u8>, LinkKeyError> {
    let shown = || path.display().to_string();
    let raw = std::fs::read(path).map_err(|error| LinkKeyError::Io {
        path: shown(),
        error,
    })?;
    if raw.len() == 32 {
        return Ok(raw);
    }
    let text = std::str::from_utf8(&raw).map_err(|_| LinkKeyError::Malformed(shown()))?;
    let hex = text.trim();
    if hex.len() != 64 {
        return Err(LinkKeyError::Malformed(shown()));
    }
    (0..32)
        .map(|i| u8::from_str_radix(hex.get(i * 2..i * 2 + 2).unwrap_or("zz"), 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| LinkKeyError::Malformed(shown()))
}

/// The signer of `current` (and of `previous`, accepted for opening only).
pub fn load(
    current: &Path,
    previous: Option<&Path>,
    ttl: Duration,
) -> Result<Signer, LinkKeyError> {
    let key = key32(current)?;
    let old = previous.map(key32).transpose()?;
    Ok(Signer::from_keys(&key, old.as_ref(), ttl))
}

/// The 32-byte key in `path` (`key_in` has checked its length). Loose permissions
/// are the config check's to say (a warning, logged at each start and reload).
fn key32(path: &Path) -> Result<[u8; 32], LinkKeyError> {
    key_in(path)?
        .try_into()
        .map_err(|_| LinkKeyError::Malformed(path.display().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_and_hex_keys_read_the_same_and_other_lengths_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let raw: Vec<u8> = (0u8..32).collect();
        let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        std::fs::write(dir.path().join("raw"), &raw).unwrap();
        std::fs::write(dir.path().join("hex"), format!("{hex}\n")).unwrap();
        std::fs::write(dir.path().join("short"), "abcd").unwrap();
        assert_eq!(key_in(&dir.path().join("raw")).unwrap(), raw);
        assert_eq!(key_in(&dir.path().join("hex")).unwrap(), raw);
        let e = key_in(&dir.path().join("short")).unwrap_err();
        assert!(e.to_string().contains("not 32 bytes"), "{e}");
        assert!(key_in(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn after_a_rotation_links_of_the_previous_key_still_open_and_new_ones_use_the_new_key() {
        use crate::proxy::Kind;
        let ttl = Duration::from_secs(3600);
        let (old, new) = ([1u8; 32], [2u8; 32]);
        let url = url::Url::parse("https://cdn.example/live/seg1.ts").unwrap();
        let open = |s: &Signer, link: &str| {
            let (token, item) = link.split_once('/').unwrap();
            s.open(token, item).map(|t| t.url)
        };
        let before = Signer::from_keys(&old, None, ttl)
            .seal("Svc", &url, Kind::Segment, &vec![])
            .unwrap();
        assert!(open(&Signer::from_keys(&new, None, ttl), &before).is_err());
        let rotated = Signer::from_keys(&new, Some(&old), ttl);
        assert_eq!(
            open(&rotated, &before).as_deref(),
            Ok(url.as_str()),
            "a link sealed before the rotation still opens"
        );
        let after = rotated.seal("Svc", &url, Kind::Segment, &vec![]).unwrap();
        assert!(open(&Signer::from_keys(&old, None, ttl), &after).is_err());
        assert!(open(&Signer::from_keys(&new, None, ttl), &after).is_ok());
    }
}
