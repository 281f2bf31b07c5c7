//! The documentation checked against the repository and the binary, so that a moved
//! page, a renamed heading or a renamed flag fails the tests rather than a reader:
//!
//! - every relative link of README.md, the book (`docs/src/*.md`) and the top-level
//!   documents names a file that exists, and its `#anchor` a heading of that file
//!   (ids made as mdBook and GitHub make them); links inside the book stay inside the
//!   book (a link to `../../X.md` works on GitHub but not in the built HTML);
//! - every page of `docs/src` is in `SUMMARY.md` (mdBook renders only those);
//! - every `freesky <command> --flag` written in code in the docs exists in the
//!   binary's `--help`.
//!
//! `mdbook build docs` (in `scripts/test.sh`) checks what only mdBook knows: the
//! SUMMARY's files and the `{{#include}}`s.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use pulldown_cmark::{CodeBlockKind, Event, Parser, Tag, TagEnd};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn book_src() -> PathBuf {
    root().join("docs/src")
}

/// The book's pages, sorted.
fn book_pages() -> Vec<PathBuf> {
    let mut pages: Vec<PathBuf> = std::fs::read_dir(book_src())
        .expect("docs/src exists")
        .map(|e| e.expect("a docs/src entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    pages.sort();
    pages
}

/// Every Markdown document a reader follows links in: README.md, the book, and the
/// top-level documents the book includes.
fn documents() -> Vec<PathBuf> {
    let mut docs = vec![root().join("README.md")];
    docs.extend(book_pages());
    for top in ["ARCHITECTURE.md", "RELIABILITY.md", "BENCHMARKS.md"] {
        docs.push(root().join(top));
    }
    docs
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// `path` relative to the repository, for messages.
fn shown(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// `a/b/../c` → `a/c`, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The text of `path` as mdBook renders it: `{{#include FILE}}` lines replaced by the
/// file (relative to `path`), so the included headings count as anchors of the page.
fn expanded(path: &Path) -> String {
    let text = read(path);
    let mut out = String::new();
    for line in text.lines() {
        let include = line
            .trim()
            .strip_prefix("{{#include ")
            .and_then(|rest| rest.strip_suffix("}}"));
        match include {
            Some(file) => {
                let target = normalize(&path.parent().unwrap().join(file.trim()));
                out.push_str(&read(&target));
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// A heading's anchor id as mdBook 0.5 (`id_from_content`) and GitHub make it: the
/// text lowercased, letters, digits, `_` and `-` kept, whitespace turned into `-`,
/// everything else dropped.
fn heading_id(text: &str) -> String {
    text.trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| {
            if c.is_alphanumeric() || c == '_' || c == '-' {
                Some(c)
            } else if c.is_whitespace() {
                Some('-')
            } else {
                None
            }
        })
        .collect()
}

/// The anchor ids of a document's headings (a repeated id gets `-1`, `-2`, ...).
fn anchors(markdown: &str) -> HashSet<String> {
    let mut ids = HashSet::new();
    let mut heading: Option<String> = None;
    for event in Parser::new(markdown) {
        match event {
            Event::Start(Tag::Heading { .. }) => heading = Some(String::new()),
            Event::Text(t) | Event::Code(t) => {
                if let Some(h) = heading.as_mut() {
                    h.push_str(&t);
                }
            }
            Event::End(TagEnd::Heading(_)) => {
                let id = heading_id(&heading.take().unwrap_or_default());
                let mut unique = id.clone();
                let mut n = 0;
                while !ids.insert(unique.clone()) {
                    n += 1;
                    unique = format!("{id}-{n}");
                }
            }
            _ => {}
        }
    }
    ids
}

/// The destinations of every link and image of a document.
fn links(markdown: &str) -> Vec<String> {
    Parser::new(markdown)
        .filter_map(|event| match event {
            Event::Start(Tag::Link { dest_url, .. })
            | Event::Start(Tag::Image { dest_url, .. }) => Some(dest_url.to_string()),
            _ => None,
        })
        .collect()
}

/// What is wrong with link `dest` of document `doc`, if anything.
fn check_link(doc: &Path, dest: &str) -> Option<String> {
    if dest.contains("://") || dest.starts_with("mailto:") {
        return None;
    }
    let (path, anchor) = match dest.split_once('#') {
        Some((p, a)) => (p, Some(a)),
        None => (dest, None),
    };
    let target = if path.is_empty() {
        doc.to_path_buf()
    } else if path.starts_with('/') {
        return Some("an absolute path (works neither on GitHub nor in the book)".into());
    } else {
        normalize(&doc.parent().unwrap().join(path))
    };
    if !target.exists() {
        return Some(format!("{} does not exist", shown(&target)));
    }
    let src = book_src();
    if doc.starts_with(&src) && !target.starts_with(&src) {
        return Some(format!(
            "{} is outside the book: the built HTML has no such page (include it as a page of docs/src)",
            shown(&target)
        ));
    }
    if let Some(anchor) = anchor {
        if target.extension().is_none_or(|e| e != "md") {
            return Some("an anchor into a file that is not Markdown".into());
        }
        let ids = anchors(&expanded(&target));
        if !ids.contains(anchor) {
            let mut known: Vec<&String> = ids.iter().collect();
            known.sort();
            return Some(format!(
                "{} has no heading with id `{anchor}`; its ids: {known:?}",
                shown(&target)
            ));
        }
    }
    None
}

#[test]
fn every_link_in_the_docs_leads_somewhere() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for doc in documents() {
        for dest in links(&read(&doc)) {
            checked += 1;
            if let Some(why) = check_link(&doc, &dest) {
                broken.push(format!("{}: ({dest}): {why}", shown(&doc)));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "broken links in the docs:\n{}",
        broken.join("\n")
    );
    // README alone links into every area of the book.
    assert!(
        checked > 20,
        "only {checked} links found: is the parser reading the docs?"
    );
}

#[test]
fn every_page_of_the_book_is_in_its_summary() {
    let summary_path = book_src().join("SUMMARY.md");
    let listed: BTreeSet<String> = links(&read(&summary_path)).into_iter().collect();
    let missing: Vec<String> = book_pages()
        .iter()
        .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
        .filter(|name| name != "SUMMARY.md" && !listed.contains(name))
        .collect();
    assert!(
        missing.is_empty(),
        "pages of docs/src that SUMMARY.md does not list (mdBook would not render them): {missing:?}"
    );
}

/// The text of every code span and code block of a document.
fn code(markdown: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut block: Option<String> = None;
    for event in Parser::new(markdown) {
        match event {
            Event::Start(Tag::CodeBlock(kind)) => {
                // TOML, XML and JSON examples mention no command lines.
                let lang = match &kind {
                    CodeBlockKind::Fenced(l) => l.to_string(),
                    CodeBlockKind::Indented => String::new(),
                };
                block = matches!(lang.as_str(), "" | "sh" | "bash" | "console" | "shell")
                    .then(String::new);
            }
            Event::Text(t) => {
                if let Some(b) = block.as_mut() {
                    b.push_str(&t);
                }
            }
            Event::End(TagEnd::CodeBlock) => {
                if let Some(b) = block.take() {
                    out.extend(b.lines().map(str::to_string));
                }
            }
            Event::Code(t) => out.push(t.to_string()),
            _ => {}
        }
    }
    out
}

/// `freesky [command] --flag ...` (or `cargo run -- ...`) command lines in a line of
/// code: (the command, or "" for none, and its `--flags`).
fn invocations(line: &str) -> Vec<(String, Vec<String>)> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let start = if words[i] == "freesky" {
            Some(i + 1)
        } else if words[i..].starts_with(&["cargo", "run", "--"]) {
            Some(i + 3)
        } else {
            None
        };
        let Some(mut j) = start else {
            i += 1;
            continue;
        };
        let mut command = String::new();
        let mut flags = Vec::new();
        while j < words.len() {
            let w = words[j].trim_matches(|c| c == '[' || c == ']');
            // The end of this command line: a pipe, a list, a comment, a table cell.
            if ["|", "||", "&&", ";", "#", "/", ">", "<"].contains(&w) {
                break;
            }
            if let Some(flag) = w.strip_prefix("--") {
                flags.push(format!("--{}", flag.split('=').next().unwrap_or_default()));
            } else if j == start.unwrap() && w.chars().all(|c| c.is_ascii_lowercase()) {
                command = w.to_string();
            }
            j += 1;
        }
        found.push((command, flags));
        i = j;
    }
    found
}

/// `freesky [command] --help`: its subcommands and its long flags.
fn help(command: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_freesky"));
    if !command.is_empty() {
        cmd.arg(command);
    }
    let out = cmd.arg("--help").output().expect("run freesky --help");
    assert!(out.status.success(), "freesky {command} --help failed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (mut commands, mut flags) = (BTreeSet::new(), BTreeSet::new());
    let mut in_commands = false;
    for line in text.lines() {
        if line.ends_with(':') && !line.starts_with(' ') {
            in_commands = line == "Commands:";
            continue;
        }
        let trimmed = line.trim_start();
        if in_commands && line.starts_with("  ") {
            if let Some(name) = trimmed.split_whitespace().next() {
                commands.insert(name.to_string());
            }
        }
        for word in trimmed.split_whitespace().take(2) {
            let word = word.trim_end_matches(',');
            if word.starts_with("--") {
                flags.insert(word.to_string());
            }
        }
    }
    (commands, flags)
}

#[test]
fn every_command_line_in_the_docs_exists_in_the_binary() {
    let (commands, top_flags) = help("");
    assert!(
        commands.contains("serve") && top_flags.contains("--config"),
        "freesky --help unreadable: {commands:?} {top_flags:?}"
    );
    let mut flags_of: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    flags_of.insert(String::new(), top_flags);
    let mut wrong = Vec::new();
    let mut seen = 0;
    for doc in std::iter::once(root().join("README.md")).chain(book_pages()) {
        for line in code(&read(&doc)) {
            for (command, flags) in invocations(&line) {
                seen += 1;
                if !command.is_empty() && !commands.contains(&command) {
                    wrong.push(format!(
                        "{}: `{line}`: no command `freesky {command}` (there are {commands:?})",
                        shown(&doc)
                    ));
                    continue;
                }
                let known = flags_of
                    .entry(command.clone())
                    .or_insert_with(|| help(&command).1);
                for flag in flags.iter().filter(|f| !known.contains(*f)) {
                    wrong.push(format!(
                        "{}: `{line}`: `freesky {command}` has no {flag} (it has {known:?})",
                        shown(&doc)
                    ));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "command lines in the docs that the binary does not take:\n{}",
        wrong.join("\n")
    );
    assert!(
        seen >= 5,
        "only {seen} freesky command lines found in the docs"
    );
}

#[test]
fn invocations_are_read_from_code() {
    assert_eq!(
        invocations("freesky check [--config PATH] [--json]"),
        [(
            "check".to_string(),
            vec!["--config".to_string(), "--json".to_string()]
        )]
    );
    assert_eq!(
        invocations("cargo run -- check --config my.toml"),
        [("check".to_string(), vec!["--config".to_string()])]
    );
    assert_eq!(invocations("kill -HUP $(pidof freesky)"), []);
    assert_eq!(
        invocations("freesky --log-format=json"),
        [(String::new(), vec!["--log-format".to_string()])]
    );
}
