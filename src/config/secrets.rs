//! Upstream credentials: `Auth` as a service uses it, `Secret` that never shows in
//! Debug output, and the `*_file` forms read once at load (container secrets).

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

/// Upstream credentials of a service; values usually come from `${ENV}` or, for
/// container secrets, from a file (`token_file`, `password_file`, `value_file`) read
/// once at config load.
#[derive(Debug, Clone, PartialEq)]
pub enum Auth {
    Bearer(Secret),
    Basic { user: String, password: Secret },
    Header { name: String, value: Secret },
    Query { name: String, value: Secret },
}

/// `[services.auth]` as written: each secret either inline or as `<field>_file`.
/// `Parse::auth` reads the files and checks that exactly one form is given.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub(super) enum AuthKeys {
    Bearer(BearerKeys),
    Basic {
        user: String,
        password: Option<Secret>,
        password_file: Option<PathBuf>,
    },
    Header {
        name: String,
        value: Option<Secret>,
        value_file: Option<PathBuf>,
    },
    Query {
        name: String,
        value: Option<Secret>,
        value_file: Option<PathBuf>,
    },
}

/// `bearer = "..."`, or `bearer = { token = "..." }` / `bearer = { token_file = "..." }`.
pub(super) enum BearerKeys {
    Inline(Secret),
    Table(BearerTable),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BearerTable {
    pub(super) token: Option<Secret>,
    pub(super) token_file: Option<PathBuf>,
}

impl<'de> Deserialize<'de> for BearerKeys {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = BearerKeys;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a token string, or a table with `token` or `token_file`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<BearerKeys, E> {
                Ok(BearerKeys::Inline(Secret(v.to_string())))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<BearerKeys, A::Error> {
                BearerTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(BearerKeys::Table)
            }
        }
        d.deserialize_any(V)
    }
}

/// A secret read from a file: the whole content minus trailing line breaks.
pub(super) fn read_secret_file(path: &Path) -> Result<Secret, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let secret = text.trim_end_matches(['\n', '\r']);
    if secret.is_empty() {
        return Err(format!("`{}` is empty", path.display()));
    }
    Ok(Secret(secret.to_string()))
}

/// A string that never shows in Debug output or logs.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"***\"" })
    }
}
