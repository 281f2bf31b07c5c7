//! Adding a kind is its own file, one line in the `kinds!` declaration of
//! src/services/mod.rs, an example in config/freesky.toml and its tests. These tests
//! hold that rule: the declaration is the one list of kinds, no code outside
//! src/services/ names a kind, and every kind has an example the loader accepts and
//! that builds into a running service.

use std::path::{Path, PathBuf};
use std::time::Duration;

use freesky::config::Config;
use freesky::services::{try_build, BuildContext, KindConfig};
use freesky::upstream::Http;

/// One line of the `kinds!` declaration: `module::Config => Variant = "name",`.
#[derive(Debug)]
struct Declared {
    module: String,
    variant: String,
    name: String,
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The kinds as declared in src/services/mod.rs, read from the source.
fn declared() -> Vec<Declared> {
    let text =
        std::fs::read_to_string(root().join("src/services/mod.rs")).expect("src/services/mod.rs");
    let start = text
        .find("\nkinds! {")
        .expect("src/services/mod.rs declares the kinds in `kinds! { ... }`");
    let block = &text[start + 1..];
    let block = &block[..block.find("\n}").expect("the kinds! block ends")];
    block
        .lines()
        .skip(1)
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("//"))
        .map(|l| {
            let bad = || panic!("not `module::Config => Variant = \"name\",`: {l:?}");
            let (path, rest) = l.split_once("=>").unwrap_or_else(bad);
            let (variant, name) = rest.split_once('=').unwrap_or_else(bad);
            let (module, _) = path.trim().split_once("::").unwrap_or_else(bad);
            Declared {
                module: module.trim().to_string(),
                variant: variant.trim().to_string(),
                name: name
                    .trim()
                    .trim_end_matches(',')
                    .trim_matches('"')
                    .to_string(),
            }
        })
        .collect()
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("a readable source directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A file's code without its unit tests (from the first `#[cfg(test)]` on): tests
/// may write configs of any kind; the code itself may not know them.
fn production_code(text: &str) -> &str {
    text.find("#[cfg(test)]").map_or(text, |i| &text[..i])
}

#[test]
fn the_declaration_is_the_list_of_kinds() {
    let declared = declared();
    let names: Vec<&str> = declared.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, KindConfig::KINDS, "read from the kinds! declaration");
    for d in &declared {
        let file = root().join("src/services").join(format!("{}.rs", d.module));
        assert!(
            file.exists(),
            "kind `{}` has no file {}",
            d.name,
            file.display()
        );
    }
}

#[test]
fn no_code_outside_services_names_a_kind() {
    let declared = declared();
    let services = root().join("src/services");
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    let mut found = Vec::new();
    // `tests.rs` files are unit-test modules (declared under `#[cfg(test)]`).
    let is_tests = |f: &std::path::PathBuf| f.file_name().is_some_and(|n| n == "tests.rs");
    // The Xtream Codes *output* speaks its own protocol, whose words (`type=m3u`, the
    // API tag "xtream") are not the service kinds of the same names.
    let xtream_output = root().join("src/http/xtream");
    for file in files
        .iter()
        .filter(|f| !f.starts_with(&services) && !f.starts_with(&xtream_output) && !is_tests(f))
    {
        let text = std::fs::read_to_string(file).expect("a readable source file");
        let code = production_code(&text);
        for d in &declared {
            let quoted = format!("\"{}\"", d.name);
            let escaped = format!("\\\"{}\\\"", d.name);
            let variant = format!("KindConfig::{}", d.variant);
            for needle in [&quoted, &escaped, &variant] {
                for (i, line) in code.lines().enumerate() {
                    if line.contains(needle.as_str()) {
                        let shown = file.strip_prefix(root()).unwrap_or(file);
                        found.push(format!("{}:{}: {}", shown.display(), i + 1, line.trim()));
                    }
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "only src/services/ may know the kinds; move these there:\n{}",
        found.join("\n")
    );
}

#[test]
fn every_kind_has_an_example_that_loads_and_builds() {
    let text = std::fs::read_to_string(root().join("config/freesky.toml"))
        .expect("config/freesky.toml ships with the repository");
    // The examples are commented out; `# ` starts each of their lines.
    let uncommented: String = text
        .lines()
        .map(|l| l.strip_prefix("# ").unwrap_or(l))
        .map(|l| format!("{l}\n"))
        .collect();
    let config = Config::parse(&uncommented, "config/freesky.toml (uncommented)", &|_| None)
        .unwrap_or_else(|e| panic!("{e}"));
    let ctx = BuildContext {
        http: Http::new(1 << 20),
        resolved_ttl: Duration::from_secs(60),
    };
    for kind in KindConfig::KINDS {
        let examples: Vec<_> = config
            .services
            .iter()
            .filter(|s| s.kind.kind_name() == *kind)
            .collect();
        assert!(
            !examples.is_empty(),
            "no example of kind `{kind}` in config/freesky.toml"
        );
        for s in examples {
            if let Err(e) = try_build(s, &ctx) {
                panic!(
                    "the example `{}` of kind `{kind}` does not build: {e}",
                    s.name
                );
            }
        }
    }
}
