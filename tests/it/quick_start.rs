//! README's "Quick start" and "Watch it" run as written: every command line of their
//! `sh` blocks is taken from README.md and run against the built binary, so a README
//! that drifts from the code fails here.
//!
//! - `cargo run [-- ARGS]` runs the test's binary with ARGS from a scratch directory
//!   holding the shipped `config/freesky.toml` (what `cargo run` reads in a checkout),
//!   bound to a free loopback port instead of 8005; the other commands' URLs are
//!   rewritten to that port.
//! - `ffprobe ...`, `ffmpeg ...`, `curl ...` run as written (in the scratch directory)
//!   and must exit 0; ffmpeg's output file must then hold something.
//! - `vlc URL` needs a display: the URL is fetched instead and must be a playlist.
//!   (`curl` lines run as written, so they need curl on PATH.)
//! - `bash scripts/test.sh` is the command running this test: skipped.
//!
//! Any other command fails the test until this file learns to run it.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{freesky_command, Process};

use pulldown_cmark::{CodeBlockKind, Event, HeadingLevel, Parser, Tag, TagEnd};

/// The README sections whose commands run.
const SECTIONS: &[&str] = &["Quick start", "Watch it"];
/// The port README's URLs use (the shipped config's `server.bind`).
const README_PORT: &str = "8005";
/// Bound on the server start and on each command (the demo stream is live: `ffmpeg
/// -t 10` takes about 10 s of wall time). Reaching it is a hang, not slowness.
const BOUND: Duration = Duration::from_secs(60);

/// The lines of the `sh` blocks under README's `SECTIONS` (`## ` headings), in order.
fn readme_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("read README.md");
    let mut commands = Vec::new();
    let mut section = String::new();
    let mut heading: Option<String> = None;
    let mut block: Option<String> = None;
    for event in Parser::new(&readme) {
        match event {
            Event::Start(Tag::Heading {
                level: HeadingLevel::H2,
                ..
            }) => heading = Some(String::new()),
            Event::End(TagEnd::Heading(HeadingLevel::H2)) => {
                section = heading.take().unwrap_or_default();
            }
            Event::Start(Tag::CodeBlock(CodeBlockKind::Fenced(lang))) => {
                block = (lang.as_ref() == "sh" && SECTIONS.contains(&section.as_str()))
                    .then(String::new);
            }
            Event::End(TagEnd::CodeBlock) => {
                if let Some(b) = block.take() {
                    commands.extend(
                        b.lines()
                            .map(|l| l.trim().trim_start_matches("$ ").to_string())
                            .filter(|l| !l.is_empty() && !l.starts_with('#')),
                    );
                }
            }
            Event::Text(t) | Event::Code(t) => {
                if let Some(h) = heading.as_mut() {
                    h.push_str(&t);
                } else if let Some(b) = block.as_mut() {
                    b.push_str(&t);
                }
            }
            _ => {}
        }
    }
    commands
}

/// The server `cargo run` starts: the binary with README's `cargo run` arguments, on a
/// free loopback port (`common::Process`: killed when dropped).
fn start_server(dir: &Path, readme_args: &[&str]) -> Process {
    let config_dir = dir.join("config");
    std::fs::create_dir_all(&config_dir).expect("scratch config dir");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/freesky.toml"),
        config_dir.join("freesky.toml"),
    )
    .expect("copy the shipped config");
    // `freesky` alone serves; the port goes on `serve`.
    let mut args: Vec<&str> = readme_args.to_vec();
    if args.is_empty() {
        args.push("serve");
    }
    assert_eq!(
        args[0], "serve",
        "README's `cargo run` runs `{}`: teach this test what that serves",
        args[0]
    );
    args.extend(["--bind", "127.0.0.1:0"]);
    let mut cmd = freesky_command();
    cmd.args(&args).current_dir(dir);
    Process::serve(cmd, &dir.join("freesky.log"))
}

/// Runs `line` with `sh -c` in `dir` (bounded); its exit status and output.
fn run(dir: &Path, line: &str) -> (bool, String) {
    let out_path = dir.join("command.out");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(line)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("output file"))
        .stderr(Stdio::from(
            std::fs::File::create(dir.join("command.err")).expect("error file"),
        ))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `{line}`: {e}"));
    let deadline = Instant::now() + BOUND;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the command") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`{line}` did not finish within {BOUND:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = std::fs::read_to_string(&out_path).unwrap_or_default();
    let err = std::fs::read_to_string(dir.join("command.err")).unwrap_or_default();
    (status.success(), format!("{out}{err}"))
}

/// GETs `url` (bounded): the status code and the body.
fn fetch(url: &str) -> (u16, String) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(BOUND)
            .build()
            .expect("a client");
        let resp = client
            .get(url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    })
}

#[test]
fn the_readme_quick_start_runs_as_written() {
    let commands = readme_commands();
    assert!(
        commands.iter().any(|c| c.starts_with("cargo run")),
        "README's {SECTIONS:?} have no `cargo run` in an sh block: {commands:?}"
    );
    let dir = tempfile::tempdir().expect("scratch dir");
    let mut server: Option<Process> = None;
    let mut ran = Vec::new();
    for command in &commands {
        let words: Vec<&str> = command.split_whitespace().collect();
        if let Some(rest) = command.strip_prefix("cargo run") {
            let args: Vec<&str> = rest.split_whitespace().skip_while(|w| *w == "--").collect();
            server = Some(start_server(dir.path(), &args));
            ran.push(command.clone());
            continue;
        }
        if command == "bash scripts/test.sh" {
            continue;
        }
        let Some(s) = server.as_ref() else {
            panic!("README runs `{command}` before any `cargo run`");
        };
        assert!(
            command.contains(&format!(":{README_PORT}")),
            "`{command}` does not use port {README_PORT}, which `cargo run` serves on"
        );
        let line = command
            .replace(&format!("127.0.0.1:{README_PORT}"), &s.addr.to_string())
            .replace(&format!("localhost:{README_PORT}"), &s.addr.to_string());
        match words[0] {
            "vlc" => {
                let url = line.split_whitespace().last().unwrap_or_default();
                let (code, body) = fetch(url);
                assert!(
                    code == 200 && body.starts_with("#EXTM3U"),
                    "`{command}`: {url} answered {code} {body:?}, not a playlist VLC can open\nserver log:\n{}",
                    s.log_text()
                );
            }
            "ffprobe" | "ffmpeg" | "curl" => {
                let (ok, output) = run(dir.path(), &line);
                assert!(
                    ok,
                    "`{command}` (run as `{line}`) failed:\n{output}\nserver log:\n{}",
                    s.log_text()
                );
                if words[0] == "ffmpeg" {
                    let file = dir.path().join(words.last().copied().unwrap_or_default());
                    let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
                    assert!(size > 0, "`{command}` wrote nothing to {}", file.display());
                }
                if words[0] == "ffprobe" && command.contains("-show_entries") {
                    assert!(
                        !output.trim().is_empty(),
                        "`{command}` printed nothing"
                    );
                }
            }
            other => panic!(
                "README's quick start runs `{other}` (`{command}`): teach tests/quick_start.rs to run or check it"
            ),
        }
        ran.push(command.clone());
    }
    assert!(
        ran.len() >= 4,
        "only {} of README's commands ran: {ran:?}",
        ran.len()
    );
    eprintln!("ran from README: {ran:#?}");
}
