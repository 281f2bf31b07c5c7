//! Loading a config file: the spanned parse, `${VAR}` interpolation in place, each
//! section and service deserialized on its own, and every problem (every unknown key
//! of a table included) reported at once as `file:line: field: message`.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use super::interpolate::interpolate;
use super::problem::{ConfigError, Problem};
use super::schema::*;
use super::secrets::*;
use crate::services::KindConfig;

impl Config {
    /// The built-in default: the demo service only.
    pub fn builtin() -> Self {
        Self::parse(BUILTIN, BUILTIN_SOURCE, &|_| None).expect("the built-in config is valid")
    }

    /// Logs `warnings` (at start and at each reload).
    pub fn log_warnings(&self) {
        for w in &self.warnings {
            tracing::warn!(file = %self.source, line = w.line, field = %w.field, "{}", w.message);
        }
    }

    /// Loads `path`, or the default path, or the built-in config, as the CLI does.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        match path {
            Some(p) => Self::load_file(p),
            None if Path::new(DEFAULT_PATH).exists() => Self::load_file(Path::new(DEFAULT_PATH)),
            None => {
                let builtin = Self::builtin();
                match state_dir_unusable(&builtin.server.state_dir) {
                    None => Ok(builtin),
                    Some(why) => Err(ConfigError {
                        file: builtin.source,
                        problems: vec![Problem {
                            line: 0,
                            field: "-".into(),
                            message: format!(
                                "server.state_dir: {why} (the built-in config keeps its state \
                                 in ./{} of the folder freesky runs in)",
                                builtin.server.state_dir.display()
                            ),
                        }],
                        warnings: Vec::new(),
                    }),
                }
            }
        }
    }

    pub fn load_file(path: &Path) -> Result<Self, ConfigError> {
        let name = path.display().to_string();
        let one = |line: usize, field: String, message: String| ConfigError {
            file: name.clone(),
            problems: vec![Problem {
                line,
                field,
                message,
            }],
            warnings: Vec::new(),
        };
        let bytes =
            std::fs::read(path).map_err(|e| one(0, "-".into(), format!("cannot read: {e}")))?;
        let text = String::from_utf8(bytes).map_err(|e| {
            // Located where the text stops being UTF-8.
            let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            let good = String::from_utf8_lossy(good);
            let line = line_of(&good, good.len());
            one(
                line,
                field_at(&good, line),
                "not UTF-8 text (save the file as UTF-8)".into(),
            )
        })?;
        Self::parse(&text, &name, &|var| std::env::var(var).ok())
    }

    /// Parses config text; `env` looks variables up (tests pass their own).
    pub fn parse(
        text: &str,
        file: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut p = Parse {
            text,
            spans: HashMap::new(),
            problems: Vec::new(),
            warnings: Vec::new(),
            service_names: Some(Vec::new()),
            unresolved: HashSet::new(),
            taken_out: HashSet::new(),
        };
        let mut cfg = p.run(env);
        // Of the file's own folder (the built-in config's is checked by `load`, where a
        // problem is an error, not a panic of `builtin`). A file where the folder goes
        // stops every start; a folder that cannot be made or written may be so only for
        // whoever runs `check` (an admin, a CI job): said, not refused.
        if let Some(c) = cfg.as_mut().filter(|_| file != BUILTIN_SOURCE) {
            if let Some(why) = state_dir_unusable(&c.server.state_dir) {
                // A file where the folder, or one above it, would be.
                let in_the_way = c
                    .server
                    .state_dir
                    .ancestors()
                    .map(|a| {
                        if a.as_os_str().is_empty() {
                            Path::new(".")
                        } else {
                            a
                        }
                    })
                    .find(|a| a.exists())
                    .is_some_and(|a| !a.is_dir());
                if in_the_way {
                    p.problem("server.state_dir", why);
                } else {
                    c.warnings.push(Problem {
                        line: p.line_of_field("server.state_dir"),
                        field: "server.state_dir".into(),
                        message: why,
                    });
                }
            }
        }
        match cfg {
            Some(mut cfg) if p.problems.is_empty() => {
                cfg.source = file.to_string();
                Ok(cfg)
            }
            _ => {
                p.problems.sort_by_key(|x| x.line);
                let mut warnings = match cfg {
                    Some(cfg) => cfg.warnings,
                    None => p.warnings,
                };
                warnings.sort_by_key(|x| x.line);
                Err(ConfigError {
                    file: file.to_string(),
                    problems: p.problems,
                    warnings,
                })
            }
        }
    }
}

/// The `source` of the built-in config.
const BUILTIN_SOURCE: &str = "<built-in>";

/// State of one parse: the text (for line numbers), the span of every field path seen,
/// and the problems found so far.
struct Parse<'t> {
    text: &'t str,
    spans: HashMap<String, Range<usize>>,
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
    /// Every `[[services]]` name as written, a service with problems too; `None` when
    /// one has no name that is a string (the list is not whole).
    service_names: Option<Vec<String>>,
    /// Fields whose `${VAR}` could not be filled in: their value is not the user's, so
    /// what the checks would say of it is not said.
    unresolved: HashSet<String>,
    /// Fields taken out of their table for a problem already said: what a later check
    /// finds missing there is no news.
    taken_out: HashSet<String>,
}

impl<'t> Parse<'t> {
    fn run(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Option<Config> {
        let root = match DeTable::parse(self.text) {
            Ok(root) => root,
            Err(e) => {
                // A syntax error names no field: the key written on its line does.
                let line = e.span().map_or(0, |s| line_of(self.text, s.start));
                let field = field_at(self.text, line);
                let mut message = e.message().trim_end().to_string();
                if let Some(hint) =
                    quote_hint(self.text, line).or_else(|| table_order_hint(self.text, line))
                {
                    message = format!("{message} ({hint})");
                }
                self.push(e.span(), &field, message);
                return None;
            }
        };
        let mut root = root.into_inner();
        for (key, value) in root.iter_mut() {
            let path = key.get_ref().to_string();
            let span = key.span().start..value.span().end;
            self.walk(&path, span, value, env);
        }

        let mut cfg = Config {
            source: String::new(),
            server: ServerConfig::default(),
            cache: CacheConfig::default(),
            streams: StreamsConfig::default(),
            health: HealthConfig::default(),
            guide: GuideConfig::default(),
            hdhomerun: HdhrConfig::default(),
            logos: LogosConfig::default(),
            services: Vec::new(),
            users: Vec::new(),
            guides: Vec::new(),
            warnings: Vec::new(),
        };
        for (key, value) in root {
            let name = key.get_ref().to_string();
            match name.as_str() {
                "server" => cfg.server = self.section(&name, value)?,
                "cache" => cfg.cache = self.section(&name, value)?,
                "streams" => cfg.streams = self.section(&name, value)?,
                "health" => cfg.health = self.section(&name, value)?,
                "guide" => cfg.guide = self.section(&name, value)?,
                "hdhomerun" => cfg.hdhomerun = self.section(&name, value)?,
                "logos" => cfg.logos = self.section(&name, value)?,
                "services" => cfg.services = self.services(value),
                "users" => cfg.users = self.users(value),
                "guides" => cfg.guides = self.guides(value),
                other => self.push(
                    Some(key.span()),
                    other,
                    "unknown section (expected server, cache, streams, health, guide, hdhomerun, logos, services, users or guides)"
                        .into(),
                ),
            }
        }
        if cfg.server.admin_token_file.is_some() {
            // An empty `admin_token` (an unset `${VAR:-}`) does not clash with the file.
            let inline = Some(cfg.server.admin_token.clone()).filter(|t| !t.0.is_empty());
            let file = cfg.server.admin_token_file.clone();
            if let Some(token) = self.secret(
                "server",
                ("admin_token", inline),
                ("admin_token_file", file.clone()),
            ) {
                cfg.server.admin_token = token;
            }
        }
        self.validate(&cfg);
        self.missing_files(&cfg);
        if cfg.services.is_empty() {
            // Valid (a config may hold only `[[guides]]` while services are being set
            // up), but a half-written file reads this way too.
            self.warnings.push(Problem {
                line: 1,
                field: "services".into(),
                message: "no [[services]]: the lineup is empty (the built-in demo is used \
                          only when there is no config file at all)"
                    .into(),
            });
        }
        cfg.warnings = std::mem::take(&mut self.warnings);
        for (i, g) in cfg.guides.iter().enumerate() {
            if cfg.services.iter().any(|s| s.name == g.name) {
                self.problem(
                    &format!("guides[{i}].name"),
                    format!("`{}` is a service's name too", g.name),
                );
            }
        }
        Some(cfg)
    }

    /// Records spans and interpolates `${VAR}` in every string, depth first.
    fn walk(
        &mut self,
        path: &str,
        field_span: Range<usize>,
        value: &mut Spanned<DeValue<'_>>,
        env: &dyn Fn(&str) -> Option<String>,
    ) {
        let span = value.span();
        self.spans.insert(path.to_string(), field_span);
        match value.get_mut() {
            DeValue::String(s) => match interpolate(s, env) {
                Ok(Some(new)) => *s = new.into(),
                Ok(None) => {}
                Err(msg) => {
                    self.unresolved.insert(path.to_string());
                    self.push(Some(span), path, msg);
                }
            },
            DeValue::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    let item_span = item.span();
                    self.walk(&format!("{path}[{i}]"), item_span, item, env);
                }
            }
            DeValue::Table(table) => {
                for (k, v) in table.iter_mut() {
                    let kv_span = k.span().start..v.span().end;
                    self.walk(&format!("{path}.{}", k.get_ref()), kv_span, v, env);
                }
            }
            _ => {}
        }
    }

    fn section<T: for<'de> Deserialize<'de> + Default>(
        &mut self,
        path: &str,
        value: Spanned<DeValue<'t>>,
    ) -> Option<T> {
        let span = value.span();
        let DeValue::Table(table) = value.into_inner() else {
            self.push(Some(span), path, "must be a table".into());
            return Some(T::default());
        };
        let parsed = self.every_key(path, span, table, None, T::deserialize, |e| Some(e));
        match parsed {
            Ok(v) => Some(v),
            Err(Left::Failed(e)) => {
                self.de_error(path, e);
                Some(T::default())
            }
            Err(Left::Reported | Left::StoodIn(..)) => Some(T::default()),
        }
    }

    /// Deserializes `table` (at `path`) with `de`, reporting the problem of every key
    /// serde stops at, not only the first (serde stops at one unknown key per table):
    /// each such key is recorded, taken out, and the rest deserialized again, until
    /// it deserializes, or fails in a way no key explains (`Left::Failed`: the caller
    /// reports it). `kind` names the service kind whose own keys `table` holds: its
    /// unknown keys also list the keys every service has.
    fn every_key<T, E>(
        &mut self,
        path: &str,
        span: Range<usize>,
        mut table: DeTable<'t>,
        kind: Option<&str>,
        de: impl Fn(ValueDeserializer<'t>) -> Result<T, E>,
        as_toml: fn(&E) -> Option<&toml::de::Error>,
    ) -> Result<T, Left<T, E>> {
        // Keys taken out for a bad value: the "missing field" that may follow is no
        // news.
        let mut taken = HashSet::new();
        // Missing fields reported, each then given a stand-in value so that the next
        // one (or a bad key) is found too: what deserializes then is not the user's.
        let mut stand_ins = HashSet::new();
        loop {
            let value = Spanned::new(span.clone(), DeValue::Table(table.clone()));
            let e = match de(ValueDeserializer::from(value)) {
                Ok(v) if !stand_ins.is_empty() => return Err(Left::StoodIn(v, stand_ins)),
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let Some(te) = as_toml(&e) else {
                return Err(Left::Failed(e));
            };
            let message = plain_serde_message(te.message().trim()).replace('\n', " ");
            if let Some(missing) = message
                .strip_prefix("missing field `")
                .and_then(|m| m.split('`').next())
            {
                if stand_ins.contains(missing) {
                    return Err(Left::Reported);
                }
                // Missing inside one of this table's keys (an item of an array of
                // tables): said, and that key taken out, so that the others are
                // checked too.
                let inside = te.span().and_then(|at| {
                    table
                        .iter()
                        .find(|(_, v)| v.span().contains(&at.start))
                        .map(|(k, _)| k.get_ref().to_string())
                });
                if let Some(outer) = inside {
                    // Unless it is missing because its bad value was taken out (and
                    // said) inside that key.
                    let within = format!("{path}.{outer}");
                    let said = self
                        .taken_out
                        .iter()
                        .any(|f| f.starts_with(&within) && f.ends_with(&format!(".{missing}")));
                    if !said {
                        self.de_error(path, te.clone());
                    }
                    self.taken_out.insert(format!("{path}.{outer}"));
                    table.remove(outer.as_str());
                    taken.insert(outer);
                    continue;
                }
                // A string stands in (most required fields are); of another type it
                // fails where it stands, which ends the search below. A key taken out
                // for its bad value was said already: it stands in unsaid.
                let key = missing.to_string();
                if !taken.contains(missing) {
                    self.de_error(path, te.clone());
                }
                table.insert(
                    Spanned::new(0..0, key.clone().into()),
                    Spanned::new(0..0, DeValue::String(String::new().into())),
                );
                stand_ins.insert(key);
                continue;
            }
            // A table of alternatives left empty by a bad key taken out: no news.
            if te.message().contains("wanted exactly 1 element, found 0") && !taken.is_empty() {
                return Err(Left::Reported);
            }
            let unexplained = |e| match stand_ins.is_empty() {
                true => Left::Failed(e),
                // What a stand-in caused is no news.
                false => Left::Reported,
            };
            let Some(at) = te.span() else {
                return Err(unexplained(e));
            };
            let Some((field, key)) = take_key(&mut table, path, at.start) else {
                return Err(unexplained(e));
            };
            self.taken_out.insert(field.clone());
            let message = match unknown_field(&message) {
                Some(expected) => {
                    let top = field == format!("{path}.{key}");
                    unknown_field_message(&expected, kind.filter(|_| top))
                }
                None => {
                    taken.insert(key);
                    message
                }
            };
            self.push(Some(at), &field, message);
        }
    }

    fn services(&mut self, value: Spanned<DeValue<'t>>) -> Vec<ServiceConfig> {
        let span = value.span();
        let DeValue::Array(items) = value.into_inner() else {
            self.push(
                Some(span),
                "services",
                "must be an array of tables ([[services]])".into(),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for (i, item) in items.into_iter().enumerate() {
            let path = format!("services[{i}]");
            // Duplicates are found on the raw names, so a service with another problem
            // still counts.
            let raw_name = match item.get_ref() {
                DeValue::Table(t) => t
                    .get("name")
                    .and_then(|v| v.get_ref().as_str().map(str::to_string)),
                _ => None,
            };
            match (&raw_name, self.service_names.as_mut()) {
                (Some(name), Some(names)) => names.push(name.clone()),
                _ => self.service_names = None,
            }
            if let Some(name) = raw_name {
                if !name.trim().is_empty() && !seen.insert(name.clone()) {
                    self.problem(
                        &format!("{path}.name"),
                        format!("duplicate service name `{name}`"),
                    );
                }
            }
            if let Some(svc) = self.service(&path, item) {
                self.check_service(&path, &svc);
                out.push(svc);
            }
        }
        out
    }

    /// `[[users]]`: each account deserialized (every bad key reported), its password
    /// read from `password_file` when given, names checked and unique.
    fn users(&mut self, value: Spanned<DeValue<'t>>) -> Vec<UserConfig> {
        let span = value.span();
        let DeValue::Array(items) = value.into_inner() else {
            self.push(
                Some(span),
                "users",
                "must be an array of tables ([[users]])".into(),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for (i, item) in items.into_iter().enumerate() {
            let path = format!("users[{i}]");
            let span = item.span();
            let DeValue::Table(table) = item.into_inner() else {
                self.push(Some(span), &path, "a user must be a table".into());
                continue;
            };
            let parsed = self.every_key(&path, span, table, None, UserConfig::deserialize, |e| {
                Some(e)
            });
            let mut user = match parsed {
                Ok(u) => u,
                Err(Left::Failed(e)) => {
                    self.de_error(&path, e);
                    continue;
                }
                Err(Left::Reported | Left::StoodIn(..)) => continue,
            };
            let inline = Some(user.password.clone()).filter(|p| !p.is_empty());
            // Without a password its other fields are still checked: every problem
            // is reported at once.
            let written_empty = inline.is_none()
                && user.password_file.is_none()
                && self.spans.contains_key(&format!("{path}.password"));
            let password = if written_empty {
                self.problem(
                    &format!("{path}.password"),
                    "is empty: give the account a password (or `password_file`)".into(),
                );
                None
            } else {
                self.secret(
                    &path,
                    ("password", inline),
                    ("password_file", user.password_file.clone()),
                )
            };
            if let Err(why) = crate::accounts::check_name(&user.name) {
                self.problem(&format!("{path}.name"), why);
            } else if !seen.insert(user.name.clone()) {
                self.problem(
                    &format!("{path}.name"),
                    format!("duplicate user name `{}`", user.name),
                );
            }
            if let Some(e) = &user.expires {
                if let Err(why) = crate::accounts::parse_expiry(e) {
                    self.problem(&format!("{path}.expires"), why);
                }
            }
            // Kept even without one (the config is refused then), so that later checks
            // name it by its own index.
            if let Some(p) = password {
                user.password = p;
            }
            out.push(user);
        }
        out
    }

    /// A country code as guide matching compares it (two letters, lowercase); a
    /// problem at `path` and `None` when `value` is not one.
    fn country_code(&mut self, path: &str, value: &str) -> Option<String> {
        let code = value.trim().to_ascii_lowercase();
        if code.len() == 2 && code.bytes().all(|b| b.is_ascii_lowercase()) {
            Some(code)
        } else {
            self.problem(
                path,
                format!("`{value}` is not a two-letter country code (\"uk\", \"de\")"),
            );
            None
        }
    }

    /// `[[guides]]`: each extra guide deserialized (every bad key reported), with one
    /// of `url` (http or https) and `file`, a unique name, a timeout and a size bound.
    fn guides(&mut self, value: Spanned<DeValue<'t>>) -> Vec<ExtraGuideConfig> {
        let span = value.span();
        let DeValue::Array(items) = value.into_inner() else {
            self.push(
                Some(span),
                "guides",
                "must be an array of tables ([[guides]])".into(),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for (i, item) in items.into_iter().enumerate() {
            let path = format!("guides[{i}]");
            let span = item.span();
            let DeValue::Table(table) = item.into_inner() else {
                self.push(Some(span), &path, "a guide must be a table".into());
                continue;
            };
            let parsed = self.every_key(
                &path,
                span.clone(),
                table,
                None,
                ExtraGuideConfig::deserialize,
                |e| Some(e),
            );
            let mut guide = match parsed {
                Ok(g) => g,
                Err(Left::Failed(e)) => {
                    self.de_error(&path, e);
                    continue;
                }
                Err(Left::Reported | Left::StoodIn(..)) => continue,
            };
            if guide.name.trim().is_empty() {
                guide.name = format!("guide-{}", i + 1);
            }
            guide.country = guide
                .country
                .take()
                .and_then(|v| self.country_code(&format!("{path}.country"), &v));
            match (&guide.url, &guide.file) {
                (Some(_), Some(_)) => self.problem(
                    &format!("{path}.file"),
                    "give `url` or `file`, not both".into(),
                ),
                (None, None) => self.push(Some(span), &path, "needs `url` or `file`".into()),
                (Some(u), None) => match url::Url::parse(u) {
                    Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {}
                    Ok(parsed) => self.problem(
                        &format!("{path}.url"),
                        format!("`{}` is not an http(s) URL", crate::error::redact(&parsed)),
                    ),
                    Err(e) => self.problem(&format!("{path}.url"), format!("not a URL: {e}")),
                },
                (None, Some(_)) => {}
            }
            if guide.timeout.is_zero() {
                self.problem(&format!("{path}.timeout"), "must be more than 0".into());
            }
            if guide.max_bytes == 0 {
                self.problem(&format!("{path}.max_bytes"), "must be more than 0".into());
            }
            if !seen.insert(guide.name.clone()) {
                self.problem(
                    &format!("{path}.name"),
                    format!("duplicate guide name `{}`", guide.name),
                );
            }
            out.push(guide);
        }
        out
    }

    /// Checks of one parsed service that serde cannot express.
    fn check_service(&mut self, path: &str, s: &ServiceConfig) {
        if s.name.trim().is_empty() {
            self.problem(&format!("{path}.name"), "must not be empty".into());
        } else if s.name.contains(['/', ':', '?', '#']) {
            self.problem(
                &format!("{path}.name"),
                format!("`{}` may not contain / : ? #", s.name),
            );
        }
        if s.timeout.is_zero() {
            self.problem(&format!("{path}.timeout"), "must be more than 0".into());
        }
        // Unset, both follow `timeout`: a zero there is reported once, there.
        if s.connect_timeout.is_zero() && !s.timeout.is_zero() {
            self.problem(
                &format!("{path}.connect_timeout"),
                "must be more than 0".into(),
            );
        }
        if s.idle_timeout.is_zero() && !s.timeout.is_zero() {
            self.problem(
                &format!("{path}.idle_timeout"),
                "must be more than 0".into(),
            );
        }
        for (field, message) in s.kind.validate() {
            self.problem(&format!("{path}.{field}"), message);
        }
        if s.auth.is_some() {
            if let Some(message) = s.kind.auth_without_origin() {
                self.problem(&format!("{path}.auth"), message);
            }
        }
    }

    fn service(&mut self, path: &str, item: Spanned<DeValue<'t>>) -> Option<ServiceConfig> {
        let span = item.span();
        let DeValue::Table(table) = item.into_inner() else {
            self.push(Some(span), path, "a service must be a table".into());
            return None;
        };
        let kind = table
            .get("kind")
            .and_then(|v| v.get_ref().as_str().map(str::to_string));
        let Some(kind) = kind else {
            self.push(
                Some(span),
                &format!("{path}.kind"),
                format!("missing; one of {}", KindConfig::KINDS.join(", ")),
            );
            return None;
        };
        // Split the table: shared keys (plus `kind`) vs the kind's own keys.
        let mut common = DeTable::new();
        let mut own = DeTable::new();
        for (k, v) in table {
            if COMMON_KEYS.contains(&k.get_ref().as_ref()) {
                common.insert(k, v);
            } else {
                own.insert(k, v);
            }
        }
        let common = self.every_key(
            path,
            span.clone(),
            common,
            None,
            CommonKeys::deserialize,
            |e| Some(e),
        );
        let own = self.every_key(
            path,
            span.clone(),
            own,
            Some(&kind),
            |keys| KindConfig::parse(&kind, keys),
            |e| match e {
                KindError::Toml(e) => Some(e),
                KindError::Unknown => None,
            },
        );
        let common = match common {
            Ok(c) => Some(c),
            Err(Left::Failed(e)) => {
                self.de_error(path, e);
                None
            }
            Err(Left::Reported | Left::StoodIn(..)) => None,
        };
        let own = match own {
            Ok(o) => Some(o),
            Err(Left::Reported) => None,
            // A missing key said, the kind's other keys are checked too: every problem
            // at once, not one per run of `check`.
            Err(Left::StoodIn(o, stood_in)) => {
                for (field, message) in o.validate() {
                    let key = field.split(['.', '[']).next().unwrap_or_default();
                    if !stood_in.contains(key) {
                        self.problem(&format!("{path}.{field}"), message);
                    }
                }
                None
            }
            Err(Left::Failed(KindError::Unknown)) => {
                self.push(
                    self.spans.get(&format!("{path}.kind")).cloned(),
                    &format!("{path}.kind"),
                    format!(
                        "unknown kind `{kind}`; one of {}",
                        KindConfig::KINDS.join(", ")
                    ),
                );
                None
            }
            Err(Left::Failed(KindError::Toml(e))) => {
                self.de_error(path, e);
                None
            }
        };
        let (c, kind) = (common?, own?);
        let auth = match c.auth {
            Some(keys) => Some(self.auth(&format!("{path}.auth"), keys)?),
            None => None,
        };
        // Headers are checked here: one that HTTP cannot carry would otherwise be
        // left out of every request without a word. A bad one is reported and the
        // service checked on (the config is refused anyway), so that all is said.
        for (name, value) in &c.headers {
            self.check_header(&format!("{path}.headers.{name}"), name, value);
        }
        match &auth {
            Some(Auth::Bearer(token)) => self.check_header(
                &format!("{path}.auth.bearer"),
                "Authorization",
                &format!("Bearer {}", token.expose()),
            ),
            Some(Auth::Header { name, value }) => {
                self.check_header(&format!("{path}.auth.header"), name, value.expose())
            }
            _ => {}
        }
        let guide_country = c
            .guide_country
            .as_deref()
            .and_then(|v| self.country_code(&format!("{path}.guide_country"), v));
        Some(ServiceConfig {
            name: c.name,
            enabled: c.enabled,
            priority: c.priority,
            timeout: c.timeout,
            connect_timeout: c
                .connect_timeout
                .unwrap_or(c.timeout.min(Duration::from_secs(10))),
            idle_timeout: c.idle_timeout.unwrap_or(c.timeout),
            headers: c.headers,
            rate_limit: c.rate_limit,
            max_concurrent: c.max_concurrent,
            description: c.description,
            auth,
            allow_private: c.allow_private,
            guide_country,
            kind,
        })
    }

    /// Records a problem at `path` when `name: value` cannot go in an HTTP request (the
    /// value itself is not quoted: it may be a secret).
    fn check_header(&mut self, path: &str, name: &str, value: &str) {
        let why = if reqwest::header::HeaderName::try_from(name).is_err() {
            format!(
                "`{}` is not a valid HTTP header name (letters, digits and `-`, no spaces)",
                name.escape_debug()
            )
        } else if reqwest::header::HeaderValue::try_from(value).is_err() {
            format!(
                "the value of header `{name}` is not valid in HTTP (a line break or other \
                 control character)"
            )
        } else {
            return;
        };
        self.problem(path, why);
    }

    /// `[services.auth]` with its secret files read; `None` after recording a problem.
    fn auth(&mut self, path: &str, keys: AuthKeys) -> Option<Auth> {
        Some(match keys {
            AuthKeys::Bearer(BearerKeys::Inline(token)) => Auth::Bearer(token),
            AuthKeys::Bearer(BearerKeys::Table(t)) => Auth::Bearer(self.secret(
                &format!("{path}.bearer"),
                ("token", t.token),
                ("token_file", t.token_file),
            )?),
            AuthKeys::Basic {
                user,
                password,
                password_file,
            } => Auth::Basic {
                user,
                password: self.secret(
                    &format!("{path}.basic"),
                    ("password", password),
                    ("password_file", password_file),
                )?,
            },
            AuthKeys::Header {
                name,
                value,
                value_file,
            } => Auth::Header {
                name,
                value: self.secret(
                    &format!("{path}.header"),
                    ("value", value),
                    ("value_file", value_file),
                )?,
            },
            AuthKeys::Query {
                name,
                value,
                value_file,
            } => Auth::Query {
                name,
                value: self.secret(
                    &format!("{path}.query"),
                    ("value", value),
                    ("value_file", value_file),
                )?,
            },
        })
    }

    /// One secret given inline or as a file to read (problems located at the key).
    fn secret(
        &mut self,
        path: &str,
        inline: (&str, Option<Secret>),
        file: (&str, Option<PathBuf>),
    ) -> Option<Secret> {
        match (inline.1, file.1) {
            (Some(s), None) => Some(s),
            (None, Some(f)) => match read_secret_file(&f) {
                Ok(s) => {
                    // Anyone who can read the file has the secret: said as the proxy
                    // key's loose permissions are, at the file's line (used all the
                    // same).
                    let what = if file.0 == "admin_token_file" {
                        "the admin token".to_string()
                    } else {
                        format!("the secret of {path}")
                    };
                    let loose = crate::store::mode_of(&f).and_then(|mode| {
                        crate::store::loose_permissions_of(&f, mode, 0o600, &what)
                    });
                    if let Some(message) = loose {
                        self.warning(&format!("{path}.{}", file.0), message);
                    }
                    Some(s)
                }
                Err(msg) => {
                    self.problem(&format!("{path}.{}", file.0), msg);
                    None
                }
            },
            (Some(_), Some(_)) => {
                self.problem(
                    &format!("{path}.{}", file.0),
                    format!("set `{}` or `{}`, not both", inline.0, file.0),
                );
                None
            }
            (None, None) => {
                self.problem(path, format!("missing `{}` (or `{}`)", inline.0, file.0));
                None
            }
        }
    }

    /// Cross-field checks that serde cannot express.
    fn validate(&mut self, cfg: &Config) {
        if cfg.server.bind.parse::<std::net::SocketAddr>().is_err() {
            self.problem(
                "server.bind",
                format!("`{}` is not an address like 0.0.0.0:8005", cfg.server.bind),
            );
        }
        if let Some(u) = &cfg.server.public_url {
            match url::Url::parse(u) {
                _ if u.is_empty() => {}
                Ok(url) if matches!(url.scheme(), "http" | "https") => {}
                Ok(_) => self.problem(
                    "server.public_url",
                    format!("`{u}` is not an http(s) URL like http://tv.example.lan:8005"),
                ),
                Err(_) => {
                    self.problem("server.public_url", format!("`{u}` is not an absolute URL"))
                }
            }
        }
        for (key, value, min) in [
            ("server.max_uri_bytes", cfg.server.max_uri_bytes, 256),
            ("server.max_header_bytes", cfg.server.max_header_bytes, 1024),
            ("server.max_connections", cfg.server.max_connections, 1),
        ] {
            if value < min {
                self.problem(key, format!("must be at least {min}"));
            }
        }
        if cfg.server.shutdown_grace > Duration::from_secs(3600) {
            self.problem("server.shutdown_grace", "must be at most 1h".into());
        }
        if cfg.server.drain_delay > Duration::from_secs(3600) {
            self.problem("server.drain_delay", "must be at most 1h".into());
        }
        if let Err(why) = crate::store::check_state(cfg.server.state.expose()) {
            self.problem("server.state", why);
        }
        for (key, value) in [
            ("server.header_timeout", cfg.server.header_timeout),
            ("server.idle_timeout", cfg.server.idle_timeout),
        ] {
            if value.is_zero() || value > Duration::from_secs(3600) {
                self.problem(key, "must be more than 0 and at most 1h".into());
            }
        }
        // Read as a start reads them: a key file that would stop it is said: a problem
        // when it is there and no key, a warning when it cannot be read (a secret may
        // be readable only by the user that serves, or mounted only then).
        for (field, file) in [
            ("server.proxy_key_file", &cfg.server.proxy_key_file),
            (
                "server.proxy_key_previous_file",
                &cfg.server.proxy_key_previous_file,
            ),
        ] {
            let Some(file) = file.as_deref() else {
                continue;
            };
            let message = match crate::link_key::key_in(file) {
                // Anyone who can read it can seal links: said, used all the same.
                Ok(_) => match crate::store::mode_of(file)
                    .and_then(|mode| crate::store::loose_permissions(file, mode, 0o600))
                {
                    Some(loose) => loose,
                    None => continue,
                },
                // A file that is there but is no key is wrong for every user.
                Err(e @ crate::link_key::LinkKeyError::Malformed(_)) => {
                    self.problem(field, e.to_string());
                    continue;
                }
                Err(e) => format!("{e}: serving stops here until it can be read"),
            };
            self.warning(field, message);
        }
        // Instances sharing PostgreSQL open each other's links only with one key, and
        // take admin calls from behind a balancer only with a token.
        if !crate::store::uses_sqlite(cfg.server.state.expose()) {
            if cfg.server.proxy_key_file.is_none() {
                self.warning(
                    "server.state",
                    "a PostgreSQL state store is shared by several instances, but `proxy_key_file` is not set: each instance signs links with its own key (state_dir/proxy.key), and a link one hands out is refused (403) by the others; give them all one `proxy_key_file`".into(),
                );
            }
            if cfg.server.admin_token.0.is_empty() && cfg.server.admin_token_file.is_none() {
                self.warning(
                    "server.state",
                    "a PostgreSQL state store is shared by several instances, but no `admin_token` is set: behind a balancer every request comes from the balancer's address; on the same host that is loopback, which without a token may make admin calls (so anyone who reaches the balancer could), and in containers admin calls are refused from everywhere; set `admin_token`".into(),
                );
            }
        }
        // The folder of the store and the instance's key: said when group or others
        // can get in (it is made owner-only when it is new).
        let mut holds = Vec::new();
        if cfg.server.proxy_key_file.is_none() {
            holds.push("the key that signs every stream link");
        }
        if crate::store::uses_sqlite(cfg.server.state.expose()) {
            holds.push("viewer accounts");
        }
        holds.push(
            "the services' last channel lists (whose stream addresses may carry providers' logins)",
        );
        let holds = holds.join(", ");
        // Of a folder only: a file there is an error of its own.
        let folder = cfg
            .server
            .state_dir
            .is_dir()
            .then_some(&cfg.server.state_dir);
        if let Some(loose) = folder
            .and_then(|d| crate::store::mode_of(d))
            .and_then(|mode| {
                crate::store::loose_permissions_of(&cfg.server.state_dir, mode, 0o700, &holds)
            })
        {
            self.warning("server.state_dir", loose);
        }
        // A player reloads a playlist for as long as it plays: links that expire in
        // seconds stop every stream (valid, for a test of expiry; said).
        if cfg.server.link_ttl < Duration::from_secs(600) {
            self.warning(
                "server.link_ttl",
                "under 10m: a player keeps its links for as long as it plays, and one that \
                 expires stops the stream (the default is 24h)"
                    .into(),
            );
        }
        if cfg.server.link_ttl.is_zero() {
            self.problem("server.link_ttl", "must be more than 0".into());
        }
        for host in &cfg.server.allowed_hosts {
            let name = host.strip_prefix("*.").unwrap_or(host);
            let valid = host == "*"
                || (!name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'));
            if !valid {
                self.problem(
                    "server.allowed_hosts",
                    format!(
                        "`{host}` is not a host name like tv.example.lan, *.example.lan or * \
                         (no scheme, port or path)"
                    ),
                );
            }
        }
        for proxy in &cfg.server.trusted_proxies {
            if crate::http::forwarded::parse_net(proxy).is_none() {
                self.problem(
                    "server.trusted_proxies",
                    format!(
                        "`{proxy}` is not an address or CIDR block (10.0.0.2, 10.0.0.0/8, ::1)"
                    ),
                );
            }
        }
        if cfg.streams.live_edge_segments == 0 {
            self.problem(
                "streams.live_edge_segments",
                "must be at least 1 (a viewer starts that many segments before the live \
                 edge)"
                    .into(),
            );
        }
        if cfg.hdhomerun.friendly_name.trim().is_empty() {
            self.problem(
                "hdhomerun.friendly_name",
                "must not be empty: Plex, Jellyfin and Emby show it as the tuner's name".into(),
            );
        }
        if !(1..=255).contains(&cfg.hdhomerun.tuner_count) {
            self.problem(
                "hdhomerun.tuner_count",
                format!(
                    "must be 1 to 255 (LAN discovery carries it in one byte), got {}",
                    cfg.hdhomerun.tuner_count
                ),
            );
        }
        let h = &cfg.hdhomerun;
        if h.discovery && !h.enabled {
            self.problem(
                "hdhomerun.discovery",
                "needs `enabled = true`: it advertises the tuner endpoints".into(),
            );
        }
        if h.discovery && h.discovery_port == 0 && h.ssdp_port == 0 {
            self.problem(
                "hdhomerun.discovery",
                "discovery_port and ssdp_port are both 0: nothing would answer".into(),
            );
        }
        if h.discovery && h.discovery_port != 0 && h.discovery_port == h.ssdp_port {
            self.problem(
                "hdhomerun.ssdp_port",
                format!("must differ from discovery_port ({})", h.discovery_port),
            );
        }
        // The tuner's account: an account made with the admin API is not known here,
        // so a name no `[[users]]` entry has is a warning (a typo leaves the tuner off).
        if let Some(account) = &cfg.hdhomerun.account {
            let line = self.line_of_field("hdhomerun.account");
            let warn = |message: String| Problem {
                line,
                field: "hdhomerun.account".into(),
                message,
            };
            if !cfg.server.require_account {
                self.warnings.push(warn(
                    "ignored: the tuner serves every channel without server.require_account".into(),
                ));
            } else if !cfg.users.iter().any(|u| u.name == *account) {
                self.warnings.push(warn(format!(
                    "no [[users]] entry is named `{account}`: the tuner stays off unless an \
                     account of that name is made with the admin API (names are case-sensitive)"
                )));
            }
        }
        if cfg.streams.race == 0 {
            self.problem("streams.race", "must be at least 1".into());
        }
        // Each of these at 0 would refuse every list, playlist or segment.
        if cfg.server.max_body_bytes == 0 {
            self.problem(
                "server.max_body_bytes",
                "must be more than 0 (no list or playlist could be read)".into(),
            );
        }
        if cfg.cache.max_playlist_uris == 0 {
            self.problem(
                "cache.max_playlist_uris",
                "must be at least 1 (every playlist would be refused)".into(),
            );
        }
        if cfg.cache.segment_timeout.is_zero() {
            self.problem(
                "cache.segment_timeout",
                "must be more than 0 (every segment would time out)".into(),
            );
        }
        if cfg.streams.failover_after == 0 {
            self.problem(
                "streams.failover_after",
                "must be at least 1 (1: move to the next source at the first failure)".into(),
            );
        }
        if cfg.health.open_after == 0 {
            self.problem("health.open_after", "must be at least 1".into());
        }
        if cfg.health.backoff.is_zero() {
            self.problem("health.backoff", "must be more than 0".into());
        }
        if cfg.health.backoff_max < cfg.health.backoff {
            self.problem("health.backoff_max", "must be at least `backoff`".into());
        }
        if cfg.guide.refresh < Duration::from_secs(60) {
            self.problem("guide.refresh", "must be at least 1m".into());
        }
        if !(1..=31).contains(&cfg.guide.days) {
            self.problem("guide.days", "must be between 1 and 31".into());
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(3 * 3600))
            .contains(&cfg.guide.read_timeout)
        {
            self.problem("guide.read_timeout", "must be 1s to 3h".into());
        }
        if cfg.guide.placeholder_length < Duration::from_secs(300) {
            self.problem("guide.placeholder_length", "must be at least 5m".into());
        }
        if cfg.logos.max_bytes == 0 {
            self.problem("logos.max_bytes", "must be more than 0".into());
        } else if cfg.logos.max_bytes > MAX_LOGO_BYTES {
            self.problem(
                "logos.max_bytes",
                format!(
                    "must be at most {MAX_LOGO_BYTES} (64 MiB): an image is held in memory whole, and no logo is that large"
                ),
            );
        }
        if cfg.logos.mode == LogoMode::Cache {
            let cap = cfg.logos.cache_max_mb.saturating_mul(1 << 20);
            if cap == 0 {
                self.problem(
                    "logos.cache_max_mb",
                    "must be more than 0 in `cache` mode (`mode = \"proxy\"` keeps no copies)"
                        .into(),
                );
            } else if cap < cfg.logos.max_bytes as u64 {
                self.warning(
                    "logos.cache_max_mb",
                    format!(
                        "{} MiB is less than `max_bytes` ({} bytes): an image larger than the cache is served but never kept",
                        cfg.logos.cache_max_mb, cfg.logos.max_bytes
                    ),
                );
            }
        }
        // An account limited to a service that is not configured sees nothing of it
        // (names are case-sensitive). Told against the names as written, beside the
        // services' own problems; not when a service's name is missing or no string.
        let written = self.service_names.clone();
        let services: Vec<&str> = written.iter().flatten().map(String::as_str).collect();
        for (i, u) in cfg.users.iter().enumerate().filter(|_| written.is_some()) {
            for name in u
                .services
                .iter()
                .filter(|n| !services.contains(&n.as_str()))
            {
                self.problem(
                    &format!("users[{i}].services"),
                    format!(
                        "unknown service `{name}` (configured: {}; names are case-sensitive)",
                        services.join(", ")
                    ),
                );
            }
        }
    }

    /// Warns of every file the config names that does not exist now (valid, but what
    /// reads it fails until it does), and of what each service's kind says will not
    /// work as configured (`Kind::warnings`).
    fn missing_files(&mut self, cfg: &Config) {
        let services = cfg.services.iter().enumerate().flat_map(|(i, s)| {
            s.kind
                .configured_files()
                .into_iter()
                .map(move |(field, path)| (format!("services[{i}].{field}"), path.to_path_buf()))
        });
        let guides = cfg
            .guides
            .iter()
            .enumerate()
            .filter_map(|(i, g)| Some((format!("guides[{i}].file"), g.file.clone()?)));
        let missing: Vec<(String, PathBuf)> = services
            .chain(guides)
            .filter(|(_, p)| !p.exists())
            .collect();
        for (field, path) in missing {
            // A relative path is read from the folder freesky runs in, not the config's.
            let looked = if path.is_relative() {
                std::env::current_dir()
                    .map(|d| {
                        format!(
                            " (relative: looked for in {}, where freesky runs)",
                            d.display()
                        )
                    })
                    .unwrap_or_default()
            } else {
                String::new()
            };
            // "epg.example.org/guide.xml": an address without `http://`, most likely.
            let first = path
                .components()
                .next()
                .map(|c| c.as_os_str().to_string_lossy());
            let address = path.is_relative()
                && path.components().count() > 1
                && first.is_some_and(|f| {
                    f.split('.').count() >= 2
                        && f.rsplit('.').next().is_some_and(|tld| {
                            tld.len() >= 2 && tld.chars().all(|c| c.is_ascii_alphabetic())
                        })
                });
            let hint = if address {
                format!(
                    "; if it is a web address, write `http://{}`",
                    crate::error::mask_secrets(&path.display().to_string())
                )
            } else {
                String::new()
            };
            self.warning(
                &field,
                format!(
                    "file {} does not exist{looked}: reading it fails until it does{hint}",
                    path.display()
                ),
            );
        }
        for (i, s) in cfg.services.iter().enumerate() {
            for (field, message) in s.kind.warnings(s.allow_private) {
                self.warning(&format!("services[{i}].{field}"), message);
            }
        }
    }

    /// The line of `field`, or of the nearest enclosing field recorded.
    fn line_of_field(&self, field: &str) -> usize {
        let mut probe = field.to_string();
        loop {
            if let Some(s) = self.spans.get(&probe) {
                return line_of(self.text, s.start);
            }
            match probe.rfind(['.', '[']) {
                Some(i) => probe.truncate(i),
                None => return 0,
            }
        }
    }

    /// A warning located as `problem` locates a problem.
    fn warning(&mut self, field: &str, message: String) {
        let line = self.line_of_field(field);
        self.warnings.push(Problem {
            line,
            field: field.to_string(),
            message,
        });
    }

    /// A problem located by field path (its span recorded by `walk`), or the nearest
    /// recorded parent path.
    fn problem(&mut self, field: &str, message: String) {
        if self.unresolved.contains(field) {
            return;
        }
        if self.taken_out.contains(field) {
            return;
        }
        let line = self.line_of_field(field);
        self.problems.push(Problem {
            line,
            field: field.to_string(),
            message,
        });
    }

    /// A serde error: find the deepest recorded field whose span holds the error.
    fn de_error(&mut self, path: &str, e: toml::de::Error) {
        let span = e.span();
        // The deepest field (longest path) whose `key = value` span holds the error.
        let field = span
            .as_ref()
            .and_then(|sp| {
                self.spans
                    .iter()
                    .filter(|(k, s)| k.starts_with(path) && s.start <= sp.start && sp.start < s.end)
                    .max_by_key(|(k, _)| k.len())
                    .map(|(k, _)| k.clone())
            })
            .unwrap_or_else(|| path.to_string());
        let message = plain_serde_message(e.message().trim()).replace('\n', " ");
        self.push(span, &field, message);
    }

    fn push(&mut self, span: Option<Range<usize>>, field: &str, mut message: String) {
        let line = span.map_or(0, |s| line_of(self.text, s.start));
        // A count that a later check requires above 0: say so now, not "0 or more"
        // and then refuse the 0.
        if POSITIVE_COUNTS.iter().any(|f| field.ends_with(f)) {
            message = message
                .replace("number (0 or more)", "number (1 or more)")
                .replace("number from 0 to", "number from 1 to");
        }
        if let Some((_, range)) = NARROW_COUNTS.iter().find(|(f, _)| field == *f) {
            if let Some((found, _)) = message.split_once(", expected a whole number") {
                message = format!("{found}, expected a whole number {range}");
            }
        }
        self.problems.push(Problem {
            line,
            field: field.to_string(),
            message,
        });
    }
}

/// Why `state_dir` cannot be used: it is a file or not writable, or what exists
/// nearest above it is a file or a folder this user cannot write (`check` says so, not
/// only `serve` when it opens the store). Nothing is made but a probe file, removed.
fn state_dir_unusable(state_dir: &Path) -> Option<String> {
    if state_dir.exists() {
        if !state_dir.is_dir() {
            return Some(format!(
                "{} exists and is not a folder: give a folder (made when missing), or move \
                 this file away",
                state_dir.display()
            ));
        }
        return (!writable(state_dir)).then(|| {
            format!(
                "{} is not writable by the user running freesky: give it that user, or \
                 another folder",
                state_dir.display()
            )
        });
    }
    // The parent of a bare `state` is `""`: the working directory.
    let above = state_dir
        .ancestors()
        .skip(1)
        .map(|a| {
            if a.as_os_str().is_empty() {
                Path::new(".")
            } else {
                a
            }
        })
        .find(|a| a.exists())?;
    if !above.is_dir() {
        return Some(format!(
            "{} cannot be made: {} is a file, not a folder",
            state_dir.display(),
            above.display()
        ));
    }
    (!writable(above)).then(|| {
        format!(
            "{} cannot be made: {} is not writable by the user running freesky",
            state_dir.display(),
            above.display()
        )
    })
}

/// True when this process may make entries in folder `dir`: a file is made there and
/// removed (std has no access(2), and the crate forbids `unsafe`).
fn writable(dir: &Path) -> bool {
    let probe = dir.join(format!(".freesky-write-test-{}", std::process::id()));
    match std::fs::File::create_new(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            true
        }
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
        ),
    }
}

/// How `Parse::every_key` ends when the table does not deserialize.
enum Left<T, E> {
    /// A failure no single key explains (a missing key, ...), not yet reported.
    Failed(E),
    /// Every problem is reported already.
    Reported,
    /// Missing keys were reported; with these keys standing in (empty strings) the
    /// table deserializes: what the value says of its other keys is still news.
    StoodIn(T, HashSet<String>),
}

/// Takes out of `table` (at `path`) the key that error offset `at` falls in: the key
/// itself, or its value when that is not a table (a string, a number, an array of
/// them), however deep. Returns the key's path and name.
fn take_key(table: &mut DeTable<'_>, path: &str, at: usize) -> Option<(String, String)> {
    let mut hit = None;
    for (k, v) in table.iter_mut() {
        let here = format!("{path}.{}", k.get_ref());
        let inner = match v.get_mut() {
            DeValue::Table(inner) => take_key(inner, &here, at),
            DeValue::Array(items) => items.iter_mut().enumerate().find_map(|(i, item)| match item
                .get_mut()
            {
                DeValue::Table(inner) => take_key(inner, &format!("{here}[{i}]"), at),
                _ => None,
            }),
            _ => None,
        };
        if inner.is_some() {
            return inner;
        }
        // In an array, a problem inside one of its tables was found above; what is
        // left is the array's (say a list where a table belongs) or a plain item's.
        let in_leaf = match v.get_ref() {
            DeValue::Table(_) => false,
            _ => v.span().contains(&at),
        };
        if k.span().contains(&at) || in_leaf {
            hit = Some((here, k.clone()));
            break;
        }
    }
    let (field, key) = hit?;
    table.remove(&key);
    Some((field, key.into_inner().into_owned()))
}

/// The names serde's "unknown field `x`, expected ..." lists (none for "there are
/// no fields"); `None` for another message.
fn unknown_field(message: &str) -> Option<Vec<String>> {
    let rest = message.strip_prefix("unknown field `")?;
    let (_, expected) = rest.split_once('`')?;
    Some(
        expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect(),
    )
}

/// "unknown field, expected one of: ...": the table's keys, and for a key at the top
/// of a service (`kind`), the keys of that kind and the keys every service has.
fn unknown_field_message(expected: &[String], kind: Option<&str>) -> String {
    let list = expected.join(", ");
    match kind {
        None if expected.is_empty() => "unknown field, this table has no keys".into(),
        None => format!("unknown field, expected one of: {list}"),
        Some(kind) => {
            let common = COMMON_KEYS.join(", ");
            if expected.is_empty() {
                format!("unknown field, expected one of: {common} (every service; kind {kind} has no keys of its own)")
            } else {
                format!("unknown field, expected one of: {list} (kind {kind}) or {common} (every service)")
            }
        }
    }
}

/// Why a kind's own keys did not parse.
pub enum KindError {
    Unknown,
    Toml(toml::de::Error),
}

/// Whole-number fields whose 0 is refused (by `check_service`, `guides` and `check`):
/// a wrong type at one of them names the range from 1.
const POSITIVE_COUNTS: &[&str] = &[
    ".max_bytes",
    "server.max_body_bytes",
    "cache.max_playlist_uris",
    "streams.failover_after",
    "streams.race",
    "streams.live_edge_segments",
    "health.open_after",
];

/// `[logos] max_bytes` at most.
const MAX_LOGO_BYTES: usize = 64 << 20;

/// Whole-number fields a later check holds to a narrower range than their type:
/// a wrong type there names that range.
const NARROW_COUNTS: &[(&str, &str)] = &[("hdhomerun.tuner_count", "from 1 to 255")];

/// For a syntax error on line `line` (from 1): when that line is `key = value` with
/// a value written without quotes that is no TOML value alone (`bind = 127.0.0.1`,
/// `mode = cache`), how to write it.
fn quote_hint(text: &str, line: usize) -> Option<String> {
    let written = text.lines().nth(line.checked_sub(1)?)?;
    let (key, value) = written.split_once('=')?;
    let (key, value) = (key.trim(), value.trim());
    let plain = |c: char| c.is_ascii_alphanumeric() || "._:/-".contains(c);
    if key.is_empty()
        || value.is_empty()
        || !value.chars().all(plain)
        || DeTable::parse(&format!("x = {value}")).is_ok()
    {
        return None;
    }
    Some(format!("a text value needs quotes: `{key} = \"{value}\"`"))
}

/// What to do when line `line` is an `[[array]]` header that TOML refuses because a
/// table of its entries (`[services.channels]`) was written before any `[[services]]`
/// line: that table then belongs to no entry.
fn table_order_hint(text: &str, line: usize) -> Option<String> {
    let header = |l: &str| -> Option<(bool, String)> {
        let l = l.trim_start();
        let (array, rest) = match l.strip_prefix("[[") {
            Some(rest) => (true, rest),
            None => (false, l.strip_prefix('[')?),
        };
        let name = rest.split(']').next()?.trim();
        Some((
            array,
            name.split('.').map(str::trim).collect::<Vec<_>>().join("."),
        ))
    };
    let (true, array) = header(text.lines().nth(line.checked_sub(1)?)?)? else {
        return None;
    };
    for (n, l) in text.lines().take(line - 1).enumerate() {
        match header(l) {
            Some((true, name)) if name == array => return None,
            Some((false, name)) if name.starts_with(&format!("{array}.")) => {
                return Some(format!(
                    "`[{name}]` on line {} comes before any `[[{array}]]`: the tables of an \
                     entry go below its own `[[{array}]]` line",
                    n + 1
                ));
            }
            _ => {}
        }
    }
    None
}

/// serde's type names in words a config's reader knows: "invalid type: string
/// "three", expected u32" → "found string "three", expected a whole number (0 or
/// more)".
pub(crate) fn plain_serde_message(message: &str) -> String {
    // A table of alternatives (`[services.auth]`, the one such table) with more or
    // fewer than one of them.
    if let Some(rest) = message.strip_prefix("wanted exactly 1 element, ") {
        let got = if rest.starts_with("found 0") {
            "none is set"
        } else {
            "more than one is set (or a key there is misspelt)"
        };
        return format!(
            "`[services.auth]` takes exactly one of `bearer`, `basic`, `header`, `query`: {got}"
        );
    }
    let Some((found, expected)) = message
        .strip_prefix("invalid type: ")
        .or_else(|| message.strip_prefix("invalid value: "))
        .and_then(|m| m.rsplit_once(", expected "))
    else {
        return message.to_string();
    };
    // A number or a boolean written in quotes: its range is no news.
    let quoted = found
        .strip_prefix("string \"")
        .and_then(|q| q.strip_suffix('"'))
        .is_some_and(|q| q.trim().parse::<f64>().is_ok() || matches!(q, "true" | "false"));
    if quoted {
        let unquoted = match expected {
            "u8" | "u16" | "u32" | "u64" | "u128" | "usize" | "i8" | "i16" | "i32" | "i64"
            | "i128" | "isize" => Some("a whole number, written without quotes"),
            "f32" | "f64" => Some("a number, written without quotes"),
            "a boolean" => Some("true or false, written without quotes"),
            _ => None,
        };
        if let Some(expected) = unquoted {
            return format!("found {found}, expected {expected}");
        }
    }
    let expected = match expected {
        "a boolean" => "true or false",
        "u8" => "a whole number from 0 to 255",
        "u16" => "a whole number from 0 to 65535",
        "u32" => "a whole number from 0 to 4294967295",
        "u64" | "u128" | "usize" => "a whole number (0 or more)",
        "i32" => "a whole number from -2147483648 to 2147483647",
        "i64" | "isize" => "a whole number from -9223372036854775808 to 9223372036854775807",
        "i8" | "i16" | "i128" => "a whole number",
        "f32" | "f64" => "a number",
        other => other,
    };
    format!("found {found}, expected {expected}")
}

/// The field written on 1-based `line` of TOML `text`, as a problem names it: the key
/// before its `=` under the last table header above it (`server.bind`), or that header
/// itself; `-` when the line is neither.
fn field_at(text: &str, line: usize) -> String {
    let mut table = String::new();
    // `[[services]]` headers seen so far, by name: the next one is `services[n]`.
    let mut arrays: HashMap<String, usize> = HashMap::new();
    for (i, l) in text.lines().enumerate().take(line) {
        let l = l.trim();
        // Up to the first `]`: a header missing one of its two still names its table.
        let array = l.strip_prefix("[[").and_then(|r| r.split(']').next());
        let header = array
            .map(|h| {
                let n = arrays.entry(h.trim().to_string()).or_default();
                *n += 1;
                format!("{}[{}]", h.trim(), *n - 1)
            })
            .or_else(|| {
                l.strip_prefix('[')
                    .and_then(|r| r.split(']').next())
                    .map(|h| in_array(h.trim(), &arrays))
            });
        if let Some(h) = header {
            table = h;
            if i + 1 == line {
                return table;
            }
            continue;
        }
        if i + 1 == line {
            let key = l.split('=').next().unwrap_or("").trim().trim_matches('"');
            return match (table.is_empty(), key.is_empty() || !l.contains('=')) {
                (_, true) if table.is_empty() => "-".into(),
                (_, true) => table,
                (true, false) => key.to_string(),
                (false, false) => format!("{table}.{key}"),
            };
        }
    }
    "-".into()
}

/// A `[services.auth]` header names a table of the last `[[services]]` entry:
/// `services[n].auth`.
fn in_array(header: &str, arrays: &HashMap<String, usize>) -> String {
    arrays
        .iter()
        .filter_map(|(array, n)| {
            let rest = header.strip_prefix(array.as_str())?.strip_prefix('.')?;
            Some((array.len(), format!("{array}[{}].{rest}", n - 1)))
        })
        .max()
        .map_or_else(|| header.to_string(), |(_, path)| path)
}

fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()
        .get(..end)
        .map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count())
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(var: &str) -> Option<String> {
        match var {
            "KEY" => Some("s3cret".into()),
            _ => None,
        }
    }

    fn errors(text: &str) -> Vec<String> {
        match Config::parse(text, "f.toml", &env) {
            Ok(_) => vec![],
            Err(e) => e.to_string().lines().map(str::to_string).collect(),
        }
    }

    #[test]
    fn headers_http_cannot_carry_are_errors_at_their_lines() {
        let base = "[[services]]\nname = \"A\"\nkind = \"m3u\"\nurl = \"http://x/\"\n";
        assert_eq!(
            errors(&format!("{base}headers = {{ \"Bad Header\" = \"x\", \"X-Ok\" = \"a\\nb\" }}\n")),
            [
                "f.toml:5: services[0].headers.Bad Header: `Bad Header` is not a valid HTTP header name (letters, digits and `-`, no spaces)",
                "f.toml:5: services[0].headers.X-Ok: the value of header `X-Ok` is not valid in HTTP (a line break or other control character)",
            ]
        );
        assert_eq!(
            errors(&format!("{base}[services.auth]\nheader = {{ name = \"X Api Key\", value = \"k\" }}\n")),
            ["f.toml:6: services[0].auth.header: `X Api Key` is not a valid HTTP header name (letters, digits and `-`, no spaces)"]
        );
        assert_eq!(
            errors(&format!("{base}[services.auth]\nbearer = \"tok\\nen\"\n")),
            ["f.toml:6: services[0].auth.bearer: the value of header `Authorization` is not valid in HTTP (a line break or other control character)"]
        );
        assert!(errors(&format!("{base}headers = {{ \"X-Ok\" = \"a b\" }}\n")).is_empty());
    }

    #[test]
    fn a_missing_key_does_not_hide_the_services_other_problems() {
        assert_eq!(
            errors(
                "[[services]]\nname = \"X\"\nkind = \"xtream\"\nbase_url = \"not a url\"\n\
                 username = 5\n"
            ),
            [
                "f.toml:1: services[0]: missing field `password`",
                "f.toml:4: services[0].base_url: `not a url` is not a URL (relative URL without a base)",
                "f.toml:5: services[0].username: found integer `5`, expected a string",
            ]
        );
        // A bad value taken out hides nothing else of its table.
        let e = errors("[[users]]\nname = \"bob\"\nmax_connections = \"x\"\n");
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].contains("users[0]: missing `password`"), "{e:?}");
        assert!(
            e[1].contains("users[0].max_connections: found string"),
            "{e:?}"
        );
        // Missing inside an item: said, and the kind's other keys checked, with no
        // word on the list it was taken out of.
        assert_eq!(
            errors(
                "[[services]]\nname = \"A\"\nkind = \"acestream\"\nengine_url = \"h:1\"\n\
                 channels = [{ id = \"x\" }]\nmode = \"mp4\"\n"
            ),
            [
                "f.toml:4: services[0].engine_url: `h:1` must be an http(s) URL",
                "f.toml:5: services[0].channels[0]: missing field `name`",
                "f.toml:6: services[0].mode: unknown variant `mp4`, expected `hls` or `ts`",
            ]
        );
    }

    #[test]
    fn an_address_without_its_scheme_says_how_to_write_it() {
        let e = errors(
            "[[services]]\nname = \"A\"\nkind = \"m3u\"\nurl = \"127.0.0.1:18301/list.m3u\"\n",
        );
        assert_eq!(
            e,
            ["f.toml:4: services[0].url: `127.0.0.1:18301/list.m3u` is an address without its \
              scheme (`127.0.0.1:18301` is a host and port): write `http://127.0.0.1:18301/list.m3u`"]
        );
        // A host name without a port may be a folder: a warning, with the hint.
        let c = Config::parse(
            "[[services]]\nname = \"A\"\nkind = \"m3u\"\nurl = \"epg.example.org/list.m3u\"\n",
            "f.toml",
            &env,
        )
        .unwrap();
        assert!(
            c.warnings.iter().any(|w| w
                .message
                .ends_with("; if it is a web address, write `http://epg.example.org/list.m3u`")),
            "{:?}",
            c.warnings
        );
    }

    #[test]
    fn a_mistyped_url_is_shown_without_its_password_or_query() {
        let e = errors(
            "[[services]]\nname = \"A\"\nkind = \"m3u\"\n\
             url = \"htp://bob:PASSWORD@127.0.0.1:1/list.m3u?apikey=KEY\"\n",
        );
        assert_eq!(
            e,
            [
                "f.toml:4: services[0].url: `htp://…@127.0.0.1:1/list.m3u?…` must be an http(s) \
              URL or a file path"
            ]
        );
    }

    #[test]
    fn an_auth_table_with_two_methods_or_none_says_so_in_words() {
        let base = "[[services]]\nname = \"X\"\nkind = \"m3u\"\nurl = \"http://h/x.m3u\"\n[services.auth]\n";
        assert_eq!(
            errors(&format!("{base}bearer = \"a\"\nbasic = {{ user = \"u\", password = \"p\" }}\n")),
            ["f.toml:5: services[0]: `[services.auth]` takes exactly one of `bearer`, `basic`, `header`, `query`: more than one is set (or a key there is misspelt)"]
        );
        // A misspelt method is named once, not also as "none is set".
        assert_eq!(
            errors(&format!("{base}baerer = \"a\"\n")),
            ["f.toml:6: services[0].auth.baerer: unknown variant `baerer`, expected one of `bearer`, `basic`, `header`, `query`"]
        );
        assert_eq!(
            errors(base),
            ["f.toml:5: services[0]: `[services.auth]` takes exactly one of `bearer`, `basic`, `header`, `query`: none is set"]
        );
    }

    #[test]
    fn a_state_dir_that_is_a_file_is_a_problem() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("state");
        std::fs::write(&file, "").unwrap();
        let e = errors(&format!("[server]\nstate_dir = '{}'\n", file.display()));
        assert_eq!(
            e,
            [format!(
                "f.toml:2: server.state_dir: {} exists and is not a folder: give a folder \
                 (made when missing), or move this file away",
                file.display()
            )]
        );
        // A file above it: no start can make it either.
        let e = errors(&format!(
            "[server]\nstate_dir = '{}'\n",
            file.join("sub").display()
        ));
        assert_eq!(
            e,
            [format!(
                "f.toml:2: server.state_dir: {} cannot be made: {} is a file, not a folder",
                file.join("sub").display(),
                file.display()
            )]
        );
        let e = errors(&format!(
            "[server]\nstate_dir = '{}'\n",
            dir.path().join("new").display()
        ));
        assert!(e.is_empty(), "{e:?}");
    }

    #[test]
    fn a_viewer_starts_at_least_one_segment_before_the_live_edge() {
        assert_eq!(
            errors("[streams]\nlive_edge_segments = 0\n"),
            ["f.toml:2: streams.live_edge_segments: must be at least 1 (a viewer starts that many segments before the live edge)"]
        );
        assert!(errors("[streams]\nlive_edge_segments = 1\n").is_empty());
    }

    #[test]
    fn a_guide_read_timeout_is_bounded() {
        for (v, ok) in [
            ("\"0s\"", false),
            ("\"1s\"", true),
            ("\"20m\"", true),
            ("\"4h\"", false),
        ] {
            let e = errors(&format!("[guide]\nread_timeout = {v}\n"));
            if ok {
                assert!(e.is_empty(), "{v}: {e:?}");
            } else {
                assert_eq!(e, ["f.toml:2: guide.read_timeout: must be 1s to 3h"], "{v}");
            }
        }
    }

    #[test]
    fn a_tuner_count_fits_lan_discovery() {
        for (n, ok) in [
            ("0", false),
            ("1", true),
            ("255", true),
            ("256", false),
            ("4294967295", false),
        ] {
            let e = errors(&format!("[hdhomerun]\ntuner_count = {n}\n"));
            if ok {
                assert!(e.is_empty(), "{n}: {e:?}");
            } else {
                assert_eq!(
                    e,
                    [format!("f.toml:2: hdhomerun.tuner_count: must be 1 to 255 (LAN discovery carries it in one byte), got {n}")]
                );
            }
        }
    }

    #[test]
    fn wrong_types_are_said_in_plain_words() {
        let e = errors(
            "[cache]\nresolved_ttl = 5\n\n[streams]\nfailover_after = \"three\"\n\n\
             [[users]]\nname = \"al\"\npassword = \"al-password-1\"\nmax_connections = -1\n",
        );
        assert_eq!(
            e,
            [
                "f.toml:2: cache.resolved_ttl: `5` is not a duration: give its unit, in quotes, like \"5s\" or \"5m\"",
                "f.toml:5: streams.failover_after: found string \"three\", expected a whole number from 1 to 4294967295",
                "f.toml:10: users[0].max_connections: found integer `-1`, expected a whole number from 0 to 4294967295",
            ]
        );
        // A duration's problem in words, not the parser's positions.
        assert_eq!(
            errors("[cache]\nresolved_ttl = \"soon\"\nplaylist_ttl = \"5x\"\n"),
            [
                "f.toml:2: cache.resolved_ttl: `soon` is not a duration like \"10s\" or \"5m\"",
                "f.toml:3: cache.playlist_ttl: `5x` is not a duration like \"10s\" or \"5m\" (`x` is no unit: ms, s, m, h, d...)",
            ]
        );
        // A count whose 0 is refused names its range from 1; a narrower one, it.
        assert_eq!(
            errors("[logos]\nmax_bytes = -1\n\n[streams]\nlive_edge_segments = \"x\"\n\n[hdhomerun]\ntuner_count = \"four\"\n"),
            [
                "f.toml:2: logos.max_bytes: found integer `-1`, expected a whole number (1 or more)",
                "f.toml:5: streams.live_edge_segments: found string \"x\", expected a whole number (1 or more)",
                "f.toml:8: hdhomerun.tuner_count: found string \"four\", expected a whole number from 1 to 255",
            ]
        );
        let gone = Config::load_file(Path::new("/nonexistent/freesky.toml")).unwrap_err();
        assert!(
            gone.to_string()
                .starts_with("/nonexistent/freesky.toml: cannot read: "),
            "{gone}"
        );
    }

    #[test]
    fn a_proxy_key_file_that_would_stop_the_start_is_said() {
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short.key");
        std::fs::write(&short, [7u8; 31]).unwrap();
        let good = dir.path().join("good.key");
        std::fs::write(&good, "ab".repeat(32) + "\n").unwrap();
        // Owner-only, as a key should be (else that is a warning of its own).
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&good, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let config = |key: &Path| {
            format!(
                "[server]\nproxy_key_file = '{}'\n\n[[services]]\nname = \"D\"\nkind = \"demo\"\n",
                key.display()
            )
        };
        let warned = |key: &Path| {
            let c = Config::parse(&config(key), "f.toml", &env).unwrap();
            c.warnings
                .iter()
                .map(|w| format!("{}: {}: {}", w.line, w.field, w.message))
                .collect::<Vec<_>>()
        };
        assert!(warned(&good).is_empty());
        // There but no key: wrong whoever reads it, a problem.
        let e = Config::parse(&config(&short), "f.toml", &env).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "f.toml:2: server.proxy_key_file: the proxy key {} is not 32 bytes or 64 hex \
                 digits",
                short.display()
            )
        );
        let missing = warned(&dir.path().join("missing.key"));
        assert!(
            missing.len() == 1
                && missing[0].starts_with("2: server.proxy_key_file: cannot read the proxy key")
                && missing[0].matches("No such file").count() == 1,
            "{missing:?}"
        );
    }

    #[test]
    fn a_link_ttl_players_cannot_live_with_is_said() {
        let demo = "\n[[services]]\nname = \"D\"\nkind = \"demo\"\n";
        let c = Config::parse(
            &format!("[server]\nlink_ttl = \"1s\"\n{demo}"),
            "f.toml",
            &env,
        )
        .unwrap();
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert_eq!(
            (c.warnings[0].line, c.warnings[0].field.as_str()),
            (2, "server.link_ttl")
        );
        let c = Config::parse(
            &format!("[server]\nlink_ttl = \"10m\"\n{demo}"),
            "f.toml",
            &env,
        )
        .unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let err = Config::parse(
            &format!("[server]\nlink_ttl = \"0s\"\n{demo}"),
            "f.toml",
            &env,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("f.toml:2: server.link_ttl: must be more than 0"),
            "{err}"
        );
    }

    #[test]
    fn a_config_without_services_is_valid_with_a_warning() {
        let c = Config::parse("", "f.toml", &env).unwrap();
        assert!(c.services.is_empty());
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert!(c.warnings[0].message.starts_with("no [[services]]"));
        assert!(Config::builtin().warnings.is_empty());
    }

    #[test]
    fn builtin_is_demo_only() {
        let c = Config::builtin();
        assert_eq!(c.services.len(), 1);
        assert_eq!(c.services[0].kind.kind_name(), "demo");
        assert_eq!(c.server.bind, "0.0.0.0:8005");
    }

    #[test]
    fn durations_and_sections() {
        let c = Config::parse(
            "[cache]\nresolved_ttl = \"800ms\"\nchannels_ttl = \"5m\"\n[server]\nbind = \"127.0.0.1:0\"\n",
            "f",
            &env,
        )
        .unwrap();
        assert_eq!(c.cache.resolved_ttl, Duration::from_millis(800));
        assert_eq!(c.cache.channels_ttl, Duration::from_secs(300));
        assert_eq!(c.cache.playlist_ttl, Duration::from_secs(2));
    }

    #[test]
    fn every_problem_with_its_line() {
        let text = "[server]\nbnd = \"x\"\n\n[[services]]\nname = \"A\"\nkind = \"demo\"\ntimeout = \"soon\"\n\n[[services]]\nname = \"A\"\nkind = \"demo\"\n\n[[services]]\nname = \"B\"\nkind = \"nope\"\n\n[[services]]\nname = \"C\"\nkind = \"m3u\"\nurl = \"${MISSING}\"\n";
        let e = errors(text);
        assert!(
            e.iter()
                .any(|l| l.starts_with("f.toml:2: server") && l.contains("bnd")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|l| l.starts_with("f.toml:7: services[0].timeout") && l.contains("soon")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|l| l.starts_with("f.toml:10: services[1].name") && l.contains("duplicate")),
            "{e:?}"
        );
        assert!(e.iter().any(|l| l.starts_with("f.toml:15: services[2].kind") && l.contains("unknown kind")), "{e:?}");
        assert!(
            e.iter()
                .any(|l| l.starts_with("f.toml:20: services[3].url") && l.contains("MISSING")),
            "{e:?}"
        );
    }

    #[test]
    fn a_number_or_boolean_in_quotes_says_to_write_it_without() {
        assert_eq!(
            errors("[[services]]\nname = \"X\"\nkind = \"demo\"\npriority = \"1\"\n"),
            [
                "f.toml:4: services[0].priority: found string \"1\", expected a whole number, \
              written without quotes"
            ]
        );
        assert_eq!(
            errors("[[services]]\nname = \"X\"\nkind = \"demo\"\nenabled = \"true\"\n"),
            [
                "f.toml:4: services[0].enabled: found string \"true\", expected true or false, \
              written without quotes"
            ]
        );
        assert_eq!(
            errors("[[services]]\nname = \"X\"\nkind = \"demo\"\nenabled = \"yes\"\n"),
            ["f.toml:4: services[0].enabled: found string \"yes\", expected true or false"]
        );
    }

    #[test]
    fn a_number_out_of_range_says_the_range() {
        let e =
            errors("[[services]]\nname = \"X\"\nkind = \"demo\"\npriority = 9223372036854775808\n");
        assert_eq!(
            e,
            [
                "f.toml:4: services[0].priority: found integer `9223372036854775808`, expected a \
              whole number from -9223372036854775808 to 9223372036854775807"
            ]
        );
    }

    #[test]
    fn limits_that_would_refuse_everything_are_refused() {
        let e = errors(
            "[server]\nmax_body_bytes = 0\n\n[cache]\nmax_playlist_uris = 0\n\
             segment_timeout = \"0s\"\n\n[streams]\nfailover_after = 0\n",
        );
        for (line, field) in [
            (2, "server.max_body_bytes"),
            (5, "cache.max_playlist_uris"),
            (6, "cache.segment_timeout"),
            (9, "streams.failover_after"),
        ] {
            assert!(
                e.iter()
                    .any(|l| l.starts_with(&format!("f.toml:{line}: {field}: must be"))),
                "{field}: {e:#?}"
            );
        }
    }

    #[test]
    fn a_logo_cache_of_no_space_is_refused_and_one_smaller_than_an_image_warned_of() {
        assert_eq!(
            errors("[logos]\nmax_bytes = 99999999999999\n\n[hdhomerun]\nfriendly_name = \" \"\n"),
            [
                "f.toml:2: logos.max_bytes: must be at most 67108864 (64 MiB): an image is held in memory whole, and no logo is that large",
                "f.toml:5: hdhomerun.friendly_name: must not be empty: Plex, Jellyfin and Emby show it as the tuner's name",
            ]
        );
        let e = errors("[logos]\nmode = \"cache\"\ncache_max_mb = 0\n");
        assert!(
            e.iter().any(|l| l
                .starts_with("f.toml:3: logos.cache_max_mb: must be more than 0 in `cache` mode")),
            "{e:#?}"
        );
        // Without a cache, the key is not read.
        assert!(errors("[logos]\nmode = \"proxy\"\ncache_max_mb = 0\n").is_empty());
        let warned = |text: &str| {
            Config::parse(text, "f.toml", &env)
                .unwrap()
                .warnings
                .iter()
                .filter(|w| w.field == "logos.cache_max_mb")
                .map(|w| format!("{}: {}", w.line, w.message))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            warned("[logos]\nmode = \"cache\"\nmax_bytes = 4194304\ncache_max_mb = 2\n"),
            [
                "4: 2 MiB is less than `max_bytes` (4194304 bytes): an image larger than the \
              cache is served but never kept"
            ]
        );
        assert!(warned("[logos]\nmode = \"cache\"\ncache_max_mb = 2\n").is_empty());
    }

    #[test]
    fn a_shared_postgres_store_without_one_link_key_or_an_admin_token_is_warned_of() {
        let warned = |text: &str| {
            Config::parse(text, "f.toml", &env)
                .unwrap()
                .warnings
                .iter()
                .filter(|w| w.field == "server.state")
                .map(|w| w.message.clone())
                .collect::<Vec<_>>()
        };
        let pg = "[server]\nstate = \"postgres://u@db:5432/fs\"\n";
        let said = warned(pg);
        assert_eq!(said.len(), 2, "{said:#?}");
        assert!(said[0].contains("`proxy_key_file` is not set"), "{said:#?}");
        assert!(said[1].contains("no `admin_token` is set"), "{said:#?}");
        let both = format!("{pg}proxy_key_file = \"/k\"\nadmin_token = \"t\"\n");
        assert!(warned(&both).is_empty());
        // One household's SQLite: neither is needed.
        assert!(warned("[server]\nstate = \"sqlite\"\n").is_empty());
    }

    #[test]
    fn missing_fields_and_bad_headers_hide_no_other_problem() {
        let e = errors(
            "[[services]]\nname = \"X\"\nkind = \"xtream\"\n\n\
             [[services]]\nname = \"a/b\"\nkind = \"demo\"\ntimeout = \"0s\"\n\
             headers = { \"X-Ok\" = \"x\\ny\" }\n\n\
             [[services]]\nname = \"Api\"\nkind = \"json_api\"\nbase_url = \"http://a/\"\n\
             [services.channels]\nnmae = \"/t\"\n",
        );
        assert_eq!(
            e,
            [
                "f.toml:1: services[0]: missing field `base_url`",
                "f.toml:1: services[0]: missing field `username`",
                "f.toml:1: services[0]: missing field `password`",
                "f.toml:6: services[1].name: `a/b` may not contain / : ? #",
                "f.toml:8: services[1].timeout: must be more than 0",
                "f.toml:9: services[1].headers.X-Ok: the value of header `X-Ok` is not valid in \
                 HTTP (a line break or other control character)",
            ]
            .into_iter()
            .chain(e.iter().skip(6).map(String::as_str))
            .collect::<Vec<_>>(),
            "{e:#?}"
        );
        // The json_api service's unknown key, and a missing field of its sub-table.
        let rest = &e[6..];
        assert!(
            rest.iter()
                .any(|l| l.starts_with("f.toml:16: services[2].channels.nmae")),
            "{e:#?}"
        );
        assert!(
            rest.iter()
                .any(|l| l.contains("services[2]") && l.contains("missing field `path`")),
            "{e:#?}"
        );
    }

    #[test]
    fn a_list_where_a_table_belongs_hides_no_other_problem() {
        let e = errors(
            "[[services]]\nname = \"A\"\nkind = \"m3u\"\npriority = \"high\"\ntimeout = 10\nlist = \"data\"\nheaders = [\"x\"]\n",
        );
        for (line, field) in [
            (4, "services[0].priority"),
            (5, "services[0].timeout"),
            (7, "services[0].headers"),
        ] {
            assert!(
                e.iter()
                    .any(|l| l.starts_with(&format!("f.toml:{line}: {field}:"))),
                "{field}: {e:#?}"
            );
        }
        assert!(e.iter().any(|l| l.contains("list")), "{e:#?}");
    }

    #[test]
    fn unknown_key_in_kind_table() {
        let e = errors(
            "[[services]]\nname = \"A\"\nkind = \"m3u\"\nurl = \"http://x/\"\nurll = \"y\"\n",
        );
        assert!(
            e.iter()
                .any(|l| l.starts_with("f.toml:5:") && l.contains("urll")),
            "{e:?}"
        );
    }

    #[test]
    fn a_scrape_service_with_bad_steps_is_not_told_to_give_steps() {
        let head = "[[services]]\nname = \"S\"\nkind = \"scrape\"\nbase_url = \"http://x/\"\n\
                    [services.channels]\nlist = [{ id = \"a\", name = \"A\" }]\n";
        let e = errors(&format!("{head}[[services.steps]]\nget = \"/p\"\n"));
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(
            e[0].contains("services[0].steps[0]: missing field `url`"),
            "{e:?}"
        );
        assert!(
            e[1].contains("services[0].steps[0].get: unknown field"),
            "{e:?}"
        );
        // A bad value inside an item is said once, not again as missing.
        let e = errors(&format!(
            "{head}[[services.steps]]\nurl = 5\nregex = \"(?P<url>.+)\"\n"
        ));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].contains("services[0].steps[0].url: found integer"),
            "{e:?}"
        );
        let e = errors(head);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].contains("services[0].steps: missing: give `steps` or `[services.stream]`"),
            "{e:?}"
        );
    }

    #[test]
    fn every_bad_key_of_a_table_is_reported_once() {
        let e = errors(
            "[server]\nbind = 5\nstte = \"y\"\nmax_connections = \"many\"\n\n\
             [[services]]\nname = 7\nkind = \"m3u\"\nurl = \"http://x/\"\nurll = 2\ntimeout = \"soon\"\n\n\
             [[services]]\nname = \"Api\"\nkind = \"json_api\"\nbase_url = \"http://a/\"\n\
             [services.channels]\npath = \"c\"\nnmae = \"/t\"\nnmae2 = \"/t\"\n\
             [services.stream]\npath = \"s/{channel_id}\"\nurl = \"/u\"\n",
        );
        let got: Vec<&str> = e
            .iter()
            .map(|l| l.splitn(3, ": ").take(1).next().unwrap_or_default())
            .collect();
        let fields: Vec<String> = e
            .iter()
            .map(|l| l.split(": ").nth(1).unwrap_or_default().to_string())
            .collect();
        assert_eq!(
            fields,
            [
                "server.bind",
                "server.stte",
                "server.max_connections",
                "services[0].name",
                "services[0].urll",
                "services[0].timeout",
                "services[1].channels.nmae",
                "services[1].channels.nmae2",
            ],
            "{e:?}"
        );
        assert_eq!(
            got,
            [
                "f.toml:2",
                "f.toml:3",
                "f.toml:4",
                "f.toml:7",
                "f.toml:10",
                "f.toml:11",
                "f.toml:19",
                "f.toml:20"
            ],
            "{e:?}"
        );
        // A key of the kind lists the kind's keys, then the shared ones.
        assert!(
            e[4].ends_with("expected one of: url, epg_url, origin (kind m3u) or name, kind, enabled, priority, timeout, connect_timeout, idle_timeout, headers, rate_limit, max_concurrent, description, auth, allow_private, guide_country (every service)"),
            "{e:?}"
        );
        assert!(
            e[6].ends_with("expected one of: path, list, id, name, logo, group, tags, tvg_id"),
            "{e:?}"
        );
    }

    #[test]
    fn syntax_error_has_a_line() {
        let e = errors("[server]\nbind = \n");
        assert!(e[0].starts_with("f.toml:2: server.bind: "), "{e:?}");
        // A text value without its quotes is told how to write it.
        let e = errors("[server]\nbind = 127.0.0.1:8005\n");
        assert!(
            e[0].starts_with("f.toml:2: server.bind: ")
                && e[0].ends_with("(a text value needs quotes: `bind = \"127.0.0.1:8005\"`)"),
            "{e:?}"
        );
        let e = errors("[logos]\nmode = cache\n");
        assert!(
            e[0].ends_with("(a text value needs quotes: `mode = \"cache\"`)"),
            "{e:?}"
        );
        // Not for a value that is one (the error is elsewhere on the line).
        assert!(quote_hint("a = 1\n", 1).is_none());
        // A header missing a bracket names its table, not the bracket.
        let e = errors("[[services]]\nname = \"A\"\nkind = \"demo\"\n[[services]\nname = \"B\"\n");
        assert!(e[0].starts_with("f.toml:4: services[1]: "), "{e:?}");
    }

    #[test]
    fn a_services_table_written_before_its_entry_says_so() {
        let e = errors(
            "[services.channels]\nhide = [\"x\"]\n\n[[services]] # the demo\nname = \"A\"\nkind = \"demo\"\n",
        );
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("f.toml:4: ")
                && e[0].ends_with(
                    "(`[services.channels]` on line 1 comes before any `[[services]]`: the \
                     tables of an entry go below its own `[[services]]` line)"
                ),
            "{e:?}"
        );
        // After an entry, such a table is that entry's: no hint on another error.
        assert!(table_order_hint("[[services]]\n[services.auth]\n[[services]]\n", 3).is_none());
        assert!(table_order_hint("[server]\n[[services]]\n", 2).is_none());
    }

    #[test]
    fn secrets_do_not_debug() {
        let c = Config::parse(
            "[[services]]\nname = \"A\"\nkind = \"m3u\"\nurl = \"http://x/\"\n[services.auth]\nbearer = \"${KEY}\"\n",
            "f",
            &env,
        )
        .unwrap();
        assert_eq!(
            c.services[0].auth,
            Some(Auth::Bearer(Secret("s3cret".into())))
        );
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn timeouts_split_with_backward_compatible_defaults() {
        let c = Config::parse(
            "[[services]]\nname = \"A\"\nkind = \"demo\"\ntimeout = \"30s\"\n\n[[services]]\nname = \"B\"\nkind = \"demo\"\ntimeout = \"4s\"\nconnect_timeout = \"1s\"\nidle_timeout = \"2m\"\nmax_concurrent = 0\n",
            "f",
            &env,
        )
        .unwrap();
        let (a, b) = (&c.services[0], &c.services[1]);
        assert_eq!(
            (
                a.timeout,
                a.connect_timeout,
                a.idle_timeout,
                a.max_concurrent
            ),
            (
                Duration::from_secs(30),
                Duration::from_secs(10),
                Duration::from_secs(30),
                16
            )
        );
        assert_eq!(
            (
                b.timeout,
                b.connect_timeout,
                b.idle_timeout,
                b.max_concurrent
            ),
            (
                Duration::from_secs(4),
                Duration::from_secs(1),
                Duration::from_secs(120),
                0
            )
        );
        let e = errors("[[services]]\nname = \"A\"\nkind = \"demo\"\ntimeout = \"0s\"\n");
        assert_eq!(e.len(), 1, "only the key written: {e:?}");
        assert!(e[0].starts_with("f.toml:4: services[0].timeout"), "{e:?}");
        let e = errors("[[services]]\nname = \"A\"\nkind = \"demo\"\nidle_timeout = \"0s\"\n");
        assert!(
            e.iter()
                .any(|l| l.starts_with("f.toml:4: services[0].idle_timeout")),
            "{e:?}"
        );
    }

    #[test]
    fn an_expiry_may_be_a_toml_date_and_an_empty_password_is_told_at_its_line() {
        let text = "[[users]]\nname = \"a\"\npassword = \"x\"\nexpires = 2027-12-31\n\n\
                    [[users]]\nname = \"b\"\npassword = \"x\"\nexpires = 2027-12-31T18:00:00Z\n";
        let c = Config::parse(text, "f.toml", &|_| None).unwrap();
        assert_eq!(c.users[0].expires.as_deref(), Some("2027-12-31"));
        assert_eq!(c.users[1].expires.as_deref(), Some("2027-12-31T18:00:00Z"));
        let e = errors(
            "[[users]]\nname = \"a\"\npassword = \"\"\nexpires = 5\n\n\
             [[users]]\nname = \"b\"\n",
        );
        assert_eq!(
            e,
            [
                "f.toml:3: users[0].password: is empty: give the account a password (or \
                 `password_file`)",
                "f.toml:4: users[0].expires: expected a date such as 2027-12-31 (or \
                 \"2027-12-31T18:00:00Z\"), found integer",
                "f.toml:6: users[1]: missing `password` (or `password_file`)",
            ]
        );
    }

    #[test]
    fn users_with_every_problem_at_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "from-file\n").unwrap();
        let text = format!(
            "[[users]]\nname = \"alice\"\npassword = \"${{PW}}\"\n\n\
             [[users]]\nname = \"bob\"\npassword_file = '{}'\nmax_connections = 0\ngroups = [\"News\"]\n",
            file.display()
        );
        let c = Config::parse(&text, "f.toml", &|v| (v == "PW").then(|| "s3cret".into())).unwrap();
        assert_eq!(c.users.len(), 2);
        assert_eq!(c.users[0].password.expose(), "s3cret");
        assert_eq!(c.users[0].max_connections, 1);
        assert!(c.users[0].enabled);
        assert_eq!(c.users[1].password.expose(), "from-file");
        assert_eq!(c.users[1].max_connections, 0);
        assert!(
            !format!("{c:?}").contains("s3cret"),
            "passwords never in Debug output"
        );

        let e = errors(
            "[[users]]\nname = \"a b\"\npassword = \"x\"\n\n\
             [[users]]\nname = \"c\"\npassword = \"x\"\nexpires = \"soon\"\nmax_conns = 2\n\n\
             [[users]]\nname = \"c\"\npassword = \"x\"\n\n\
             [[users]]\nname = \"d\"\n",
        );
        for want in [
            "f.toml:2: users[0].name",
            "f.toml:8: users[1].expires",
            "f.toml:9: users[1].max_conns",
            "f.toml:12: users[2].name",
            "f.toml:15: users[3]",
        ] {
            assert!(e.iter().any(|l| l.starts_with(want)), "{want}: {e:?}");
        }
        assert!(
            e.iter().any(|l| l.contains("duplicate user name `c`")),
            "{e:?}"
        );
        assert!(e.iter().any(|l| l.contains("missing `password`")), "{e:?}");
    }

    #[test]
    fn an_accounts_services_are_told_against_the_names_as_written() {
        // A service with a problem of its own is still a service an account may name,
        // and an unknown one is told beside that problem.
        let e = errors(
            "[[services]]\nname = \"Alpha\"\nkind = \"m3u\"\nurl = 5\nbogus = 1\n\n\
             [[users]]\nname = \"bob\"\npassword = \"p\"\nservices = [\"Alpha\", \"Ghost\"]\n",
        );
        assert!(
            e.iter().any(|l| l.starts_with("f.toml:4: services[0].url")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|l| l.starts_with("f.toml:5: services[0].bogus")),
            "{e:?}"
        );
        assert_eq!(
            e.iter().filter(|l| l.contains("unknown service")).collect::<Vec<_>>(),
            ["f.toml:10: users[0].services: unknown service `Ghost` (configured: Alpha; names are case-sensitive)"],
            "{e:?}"
        );
        // A service without a name: the list is not whole, nothing is told unknown.
        let e = errors(
            "[[services]]\nkind = \"demo\"\n\n\
             [[users]]\nname = \"bob\"\npassword = \"p\"\nservices = [\"Ghost\"]\n",
        );
        assert!(!e.iter().any(|l| l.contains("unknown service")), "{e:?}");
    }

    #[test]
    fn an_unset_variable_is_the_one_problem_of_its_field() {
        let e = errors("[server]\nstate = \"${FREESKY_TEST_UNSET_DB}\"\nbind = \"${FREESKY_TEST_UNSET_BIND}\"\n");
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(
            e[0].starts_with(
                "f.toml:2: server.state: environment variable FREESKY_TEST_UNSET_DB is not set"
            ),
            "{e:?}"
        );
        assert!(
            e[1].starts_with(
                "f.toml:3: server.bind: environment variable FREESKY_TEST_UNSET_BIND is not set"
            ),
            "{e:?}"
        );
        // A reload cannot see a variable set since the start: said.
        assert!(e[0].contains("set it and restart"), "{e:?}");
    }

    #[test]
    fn a_tuner_account_no_user_has_is_warned_about() {
        let warned = |text: &str| {
            Config::parse(text, "f.toml", &env)
                .unwrap()
                .warnings
                .iter()
                .filter(|w| w.field == "hdhomerun.account")
                .map(|w| format!("{}: {}: {}", w.line, w.field, w.message))
                .collect::<Vec<_>>()
        };
        let users = "[[users]]\nname = \"alice\"\npassword = \"p\"\n";
        assert_eq!(
            warned(&format!(
                "[server]\nrequire_account = true\n\n[hdhomerun]\naccount = \"ghost\"\n\n{users}"
            )),
            [
                "5: hdhomerun.account: no [[users]] entry is named `ghost`: the tuner stays off \
              unless an account of that name is made with the admin API (names are \
              case-sensitive)"
            ]
        );
        assert!(warned(&format!(
            "[server]\nrequire_account = true\n\n[hdhomerun]\naccount = \"alice\"\n\n{users}"
        ))
        .is_empty());
        assert_eq!(
            warned(&format!("[hdhomerun]\naccount = \"alice\"\n\n{users}")),
            [
                "2: hdhomerun.account: ignored: the tuner serves every channel without \
              server.require_account"
            ]
        );
    }

    #[test]
    fn a_user_without_a_password_still_has_its_other_fields_checked() {
        let e = errors(
            "[[services]]\nname = \"L\"\nkind = \"demo\"\n\n\
             [[users]]\nname = \"bad name\"\nexpires = \"tomorrow\"\n\n\
             [[users]]\nname = \"bob\"\npassword = \"p\"\npassword_file = \"/x\"\nexpires = \"soon\"\n\n\
             [[users]]\nname = \"dave\"\npassword = \"p\"\nservices = [\"l\", \"L\"]\n",
        );
        for want in [
            "f.toml:5: users[0]: missing `password`",
            "f.toml:6: users[0].name",
            "f.toml:7: users[0].expires",
            "f.toml:12: users[1].password_file: set `password` or `password_file`, not both",
            "f.toml:13: users[1].expires",
            "f.toml:18: users[2].services: unknown service `l` (configured: L; names are case-sensitive)",
        ] {
            assert!(e.iter().any(|l| l.starts_with(want)), "{want}: {e:?}");
        }
        assert_eq!(e.len(), 6, "{e:?}");
    }

    #[test]
    fn a_duration_past_ten_years_is_refused_at_its_line() {
        let e = errors("[cache]\nsegment_ttl = \"1001y\"\nvod_ttl = \"2000000000000y\"\n");
        assert!(
            e.iter()
                .any(|l| l.starts_with("f.toml:2: cache.segment_ttl: `1001y` is longer than")),
            "{e:?}"
        );
        assert!(
            e.iter().any(|l| l.starts_with("f.toml:3: cache.vod_ttl")),
            "{e:?}"
        );
        assert!(errors("[cache]\nvod_ttl = \"10y\"\n").is_empty());
    }

    #[test]
    fn a_syntax_error_names_the_key_of_its_line_and_ranges_are_said() {
        let e = errors("[server]\nbind = \"127.0.0.1:1\"\nbind = \"127.0.0.1:2\"\n");
        assert!(
            e[0].starts_with("f.toml:3: server.bind: duplicate key"),
            "{e:?}"
        );
        let e = errors("[[services]]\nname = \"A\"\nkind = \"demo\"\npriority = = 1\n");
        assert!(
            e[0].starts_with("f.toml:4: services[0].priority: "),
            "{e:?}"
        );
        let e = errors("[server\n");
        assert!(e[0].starts_with("f.toml:1: server: "), "{e:?}");
        let e = errors("[hdhomerun]\ndiscovery_port = 70000\n");
        assert!(
            e[0].ends_with("hdhomerun.discovery_port: found integer `70000`, expected a whole number from 0 to 65535"),
            "{e:?}"
        );
        let two = "[[services]]\nname = \"A\"\n[[services]]\nname = \"B\"\n[services.auth]\n";
        let e = errors(&format!("{two}header = = 1\n"));
        assert!(
            e[0].starts_with("f.toml:6: services[1].auth.header: "),
            "{e:?}"
        );
        assert_eq!(field_at(&format!("{two}[servicesx]\n"), 6), "servicesx");
        assert_eq!(field_at("a = 1\n\n[t]\n", 2), "-");
        assert_eq!(field_at("a = 1\n", 1), "a");
    }

    #[test]
    fn a_file_that_is_not_utf8_is_located() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, b"[server]\nbind = \"\xff\xfe\"\n").unwrap();
        let e = Config::load_file(&file).unwrap_err().to_string();
        assert!(e.contains("bad.toml:2: server.bind: not UTF-8 text"), "{e}");
    }

    #[test]
    fn public_url_is_an_http_url() {
        let e = errors("[server]\npublic_url = \"ftp://x\"\n");
        assert!(
            e.iter()
                .any(|l| l
                    .starts_with("f.toml:2: server.public_url: `ftp://x` is not an http(s) URL")),
            "{e:?}"
        );
        assert!(errors("[server]\npublic_url = \"https://tv.example.lan\"\n").is_empty());
    }

    #[test]
    fn admin_token_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("admin");
        std::fs::write(&token, "s3cret-admin\n").unwrap();
        let text = format!(
            "[server]\nadmin_token = \"\"\nadmin_token_file = '{}'\n",
            token.display()
        );
        let c = Config::parse(&text, "f.toml", &|_| None).unwrap();
        assert_eq!(c.server.admin_token.expose(), "s3cret-admin");

        let both = format!(
            "[server]\nadmin_token = \"inline\"\nadmin_token_file = '{}'\n",
            token.display()
        );
        let e = Config::parse(&both, "f.toml", &|_| None).unwrap_err();
        assert!(
            e.to_string().contains("f.toml:3: server.admin_token_file: set `admin_token` or `admin_token_file`, not both"),
            "{e}"
        );
        let missing = "[server]\nadmin_token_file = '/nonexistent/admin'\n";
        let e = Config::parse(missing, "f.toml", &|_| None).unwrap_err();
        assert!(
            e.to_string()
                .contains("f.toml:2: server.admin_token_file: cannot read `/nonexistent/admin`"),
            "{e}"
        );
    }

    /// An admin token file that group or others can read is said, as the proxy key's
    /// is: anyone who reads it is the admin.
    #[cfg(unix)]
    #[test]
    fn an_admin_token_file_open_to_others_is_warned_about() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("admin");
        std::fs::write(&token, "s3cret-admin\n").unwrap();
        let warned = |mode: u32| {
            std::fs::set_permissions(&token, std::fs::Permissions::from_mode(mode)).unwrap();
            let text = format!(
                "[server]\nadmin_token_file = '{}'\n\n[[services]]\nname = \"D\"\nkind = \"demo\"\n",
                token.display()
            );
            let c = Config::parse(&text, "f.toml", &|_| None).unwrap();
            assert_eq!(c.server.admin_token.expose(), "s3cret-admin");
            c.warnings
                .iter()
                .map(|w| format!("{}: {}: {}", w.line, w.field, w.message))
                .collect::<Vec<_>>()
        };
        assert!(warned(0o600).is_empty());
        assert!(warned(0o400).is_empty());
        let t = token.display();
        assert_eq!(
            warned(0o644),
            [format!(
                "2: server.admin_token_file: {t} is open to group or others (mode 644) but holds \
                 secrets (the admin token): run `chmod 600 {t}`"
            )]
        );
        assert_eq!(warned(0o640).len(), 1);
        // Every other secret read from a file: a service's token, a viewer's password.
        let text = format!(
            "[[services]]\nname = \"A\"\nkind = \"m3u\"\nurl = \"http://x/\"\n\
             auth = {{ bearer = {{ token_file = '{t}' }} }}\n"
        );
        let c = Config::parse(&text, "f.toml", &|_| None).unwrap();
        let lines: Vec<String> = c
            .warnings
            .iter()
            .map(|w| format!("{}: {}: {}", w.line, w.field, w.message))
            .collect();
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("5: services[0].auth.bearer.token_file: ")
                    && l.contains("(the secret of services[0].auth.bearer)")
                    && l.contains(&format!("chmod 600 {t}"))),
            "{lines:?}"
        );
    }

    #[test]
    fn secrets_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p.display().to_string()
        };
        let token = file("token", "tok-123\n");
        let password = file("password", "pa ss\r\n");
        let value = file("value", "v4lue");
        let text = format!(
            "[[services]]\nname = \"A\"\nkind = \"m3u\"\nurl = \"http://x/\"\nauth = {{ bearer = {{ token_file = '{token}' }} }}\n\n\
             [[services]]\nname = \"B\"\nkind = \"m3u\"\nurl = \"http://x/\"\n[services.auth.basic]\nuser = \"u\"\npassword_file = '{password}'\n\n\
             [[services]]\nname = \"C\"\nkind = \"m3u\"\nurl = \"http://x/\"\n[services.auth]\nheader = {{ name = \"X-Key\", value_file = '{value}' }}\n\n\
             [[services]]\nname = \"D\"\nkind = \"m3u\"\nurl = \"http://x/\"\n[services.auth]\nquery = {{ name = \"key\", value = \"${{KEY}}\" }}\n\n\
             [[services]]\nname = \"E\"\nkind = \"m3u\"\nurl = \"http://x/\"\n[services.auth]\nbearer = {{ token = \"inline\" }}\n"
        );
        let c = Config::parse(&text, "f", &env).unwrap_or_else(|e| panic!("{e}"));
        let auth: Vec<_> = c.services.iter().map(|s| s.auth.clone().unwrap()).collect();
        assert_eq!(auth[0], Auth::Bearer(Secret("tok-123".into())));
        assert_eq!(
            auth[1],
            Auth::Basic {
                user: "u".into(),
                password: Secret("pa ss".into())
            }
        );
        assert_eq!(
            auth[2],
            Auth::Header {
                name: "X-Key".into(),
                value: Secret("v4lue".into())
            }
        );
        assert_eq!(
            auth[3],
            Auth::Query {
                name: "key".into(),
                value: Secret("s3cret".into())
            }
        );
        assert_eq!(auth[4], Auth::Bearer(Secret("inline".into())));
        assert!(!format!("{c:?}").contains("tok-123"));

        let missing = dir.path().join("nope").display().to_string();
        let empty = file("empty", "\n");
        let e = errors(&format!(
            "[[services]]\nname = \"A\"\nkind = \"m3u\"\nurl = \"http://x/\"\n[services.auth]\nbearer = {{ token_file = '{missing}' }}\n\n\
             [[services]]\nname = \"B\"\nkind = \"m3u\"\nurl = \"http://x/\"\n[services.auth.basic]\nuser = \"u\"\npassword = \"p\"\npassword_file = '{token}'\n\n\
             [[services]]\nname = \"C\"\nkind = \"m3u\"\nurl = \"http://x/\"\n[services.auth.header]\nname = \"X\"\nvalue_file = '{empty}'\n\n\
             [[services]]\nname = \"D\"\nkind = \"m3u\"\nurl = \"http://x/\"\n[services.auth.query]\nname = \"k\"\nvalu = \"typo\"\n"
        ));
        assert!(
            e.iter().any(
                |l| l.starts_with("f.toml:6: services[0].auth.bearer.token_file")
                    && l.contains("cannot read")
                    && l.contains("nope")
            ),
            "{e:?}"
        );
        assert!(
            e.iter().any(
                |l| l.starts_with("f.toml:15: services[1].auth.basic.password_file")
                    && l.contains("not both")
            ),
            "{e:?}"
        );
        assert!(
            e.iter().any(
                |l| l.starts_with("f.toml:23: services[2].auth.header.value_file")
                    && l.contains("empty")
            ),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|l| l.contains("services[3].auth") && l.contains("valu")),
            "{e:?}"
        );
    }

    #[test]
    fn hdhomerun_discovery_is_off_by_default_and_checked() {
        let c = Config::builtin();
        assert!(!c.hdhomerun.discovery);
        assert_eq!(
            (c.hdhomerun.discovery_port, c.hdhomerun.ssdp_port),
            (65001, 1900)
        );
        let e = errors("[hdhomerun]\nenabled = false\ndiscovery = true\n");
        assert!(
            e.iter()
                .any(|l| l.starts_with("f.toml:3: hdhomerun.discovery") && l.contains("enabled")),
            "{e:?}"
        );
        let e = errors("[hdhomerun]\ndiscovery = true\ndiscovery_port = 0\nssdp_port = 0\n");
        assert!(e.iter().any(|l| l.contains("both 0")), "{e:?}");
        let e = errors("[hdhomerun]\ndiscovery = true\ndiscovery_port = 5000\nssdp_port = 5000\n");
        assert!(
            e.iter()
                .any(|l| l.starts_with("f.toml:4: hdhomerun.ssdp_port")),
            "{e:?}"
        );
        let e = errors("[hdhomerun]\ndiscovery_port = 70000\n");
        assert!(
            e.iter()
                .any(|l| l.starts_with("f.toml:2: hdhomerun.discovery_port")),
            "{e:?}"
        );
        // Ports may collide while discovery is off.
        assert!(errors("[hdhomerun]\ndiscovery_port = 0\nssdp_port = 0\n").is_empty());
    }

    #[test]
    fn health_and_race_defaults_and_checks() {
        let c = Config::builtin();
        assert_eq!(c.streams.race, 1);
        assert_eq!(c.health.interval, Duration::from_secs(60));
        assert_eq!(c.health.policy(), crate::health::Policy::default());
        let e = errors("[streams]\nrace = 0\n[health]\nopen_after = 0\nbackoff = \"1m\"\nbackoff_max = \"10s\"\n");
        for want in [
            "f.toml:2: streams.race",
            "f.toml:4: health.open_after",
            "f.toml:6: health.backoff_max",
        ] {
            assert!(e.iter().any(|l| l.starts_with(want)), "{want}: {e:?}");
        }
        assert!(errors("[health]\ninterval = \"0s\"\n").is_empty());
    }

    #[test]
    fn shutdown_grace_default_and_checks() {
        assert_eq!(
            Config::builtin().server.shutdown_grace,
            Duration::from_secs(10)
        );
        let c = Config::parse("[server]\nshutdown_grace = \"0s\"\n", "f", &env).unwrap();
        assert_eq!(c.server.shutdown_grace, Duration::ZERO);
        let e = errors("[server]\nbind = \"127.0.0.1:0\"\nshutdown_grace = \"2h\"\n");
        assert!(
            e.iter()
                .any(|l| l.starts_with("f.toml:3: server.shutdown_grace: must be at most 1h")),
            "{e:?}"
        );
        let e = errors("[server]\nshutdown_grace = \"soon\"\n");
        assert!(
            e.iter()
                .any(|l| l.starts_with("f.toml:2: server.shutdown_grace:")),
            "{e:?}"
        );
    }
}

#[cfg(test)]
mod shipped_config {
    use super::*;

    fn shipped() -> String {
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/freesky.toml"))
            .expect("config/freesky.toml ships with the repo")
    }

    #[test]
    fn shipped_config_parses_with_demo_enabled() {
        let c = Config::parse(&shipped(), "config/freesky.toml", &|_| None)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.services.len(), 1);
        assert_eq!(c.services[0].kind.kind_name(), "demo");
        assert!(c.services[0].enabled);
    }

    /// The commented examples must work when uncommented, or they mislead.
    #[test]
    fn shipped_examples_parse_when_uncommented() {
        let text: String = shipped()
            .lines()
            .map(|l| l.strip_prefix("# ").unwrap_or(l))
            .map(|l| format!("{l}\n"))
            .collect();
        let c = Config::parse(&text, "uncommented", &|_| None).unwrap_or_else(|e| panic!("{e}"));
        let kinds: Vec<_> = c.services.iter().map(|s| s.kind.kind_name()).collect();
        // Every kind this build knows has an example.
        for k in KindConfig::KINDS {
            assert!(
                kinds.contains(k),
                "no example of kind `{k}` in config/freesky.toml"
            );
        }
    }
}
