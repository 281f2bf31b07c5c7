//! The `freesky` binary (SPEC section 1): `check` reports every config problem as
//! `file:line: field: message` with exit code 2 (or as JSON), `playlist` prints the
//! merged M3U, `channels` and `guide` print data on stdout and draw progress on stderr
//! only when it is a terminal.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn freesky() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_freesky"));
    // Only what a test sets explicitly may reach the config.
    cmd.env_remove("FREESKY_CONFIG")
        .env_remove("FREESKY_ADMIN_TOKEN")
        .env("RUST_LOG", "warn");
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("the freesky binary runs")
}

fn show(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write config");
    path
}

const BAD: &str = r#"[server]
bind = "127.0.0.1:0"
bnd = "typo"

[cache]
segment_ttl = "2 fortnights"

[[services]]
name = "Demo"
kind = "demo"

[[services]]
name = "Demo"
kind = "demo"

[[services]]
name = "Weird"
kind = "ftp"

[[services]]
name = "List"
kind = "m3u"
url = "${FREESKY_CLI_TEST_UNSET_VAR_81F2}"
timeout = "ten seconds"

[[services]]
name = "Api"
kind = "json_api"
base_url = "http://api.example/"
[services.channels]
path = "channels"
nmae = "/title"
[services.stream]
path = "stream/{channel_id}"
url = "/u"
"#;

#[test]
fn check_reports_every_problem_with_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "bad.toml", BAD);
    let out = run(freesky()
        .args(["check", "--config"])
        .arg(&path)
        .env_remove("FREESKY_CLI_TEST_UNSET_VAR_81F2"));
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));

    let file = path.display().to_string();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let problems: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with(&format!("{file}:")))
        .collect();
    // (line, field, words the message must contain)
    let expected: &[(usize, &str, &[&str])] = &[
        (3, "server.bnd", &["unknown field", "bnd"]),
        (6, "cache.segment_ttl", &["2 fortnights", "duration"]),
        (13, "services[1].name", &["duplicate", "Demo"]),
        (18, "services[2].kind", &["unknown kind", "ftp"]),
        (23, "services[3].url", &["FREESKY_CLI_TEST_UNSET_VAR_81F2"]),
        (24, "services[3].timeout", &["ten seconds", "duration"]),
        (32, "services[4].channels.nmae", &["unknown field", "nmae"]),
    ];
    for (line, field, words) in expected {
        let prefix = format!("{file}:{line}: {field}: ");
        let found = problems
            .iter()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no line starting with {prefix:?}\n{}", show(&out)));
        for w in *words {
            assert!(found.contains(w), "{found:?} should mention {w:?}");
        }
    }
    assert_eq!(
        problems.len(),
        expected.len(),
        "one line per problem, nothing else:\n{}",
        show(&out)
    );
    assert!(!text.contains(": ok"), "{}", show(&out));
}

#[test]
fn check_warns_of_missing_files_and_refuses_a_mistyped_url() {
    let dir = tempfile::tempdir().unwrap();
    let present = write(dir.path(), "list.m3u", "#EXTM3U\n");
    let text = format!(
        "[[services]]\nname = \"F\"\nkind = \"m3u\"\nurl = '{}'\nepg_url = '{}'\n\n\
         [[guides]]\nname = \"g\"\nfile = '{}'\n",
        present.display(),
        dir.path().join("gone.xml").display(),
        dir.path().join("nowhere.xml").display()
    );
    let path = write(dir.path(), "files.toml", &text);
    let out = run(freesky().args(["check", "--config"]).arg(&path));
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.ends_with(": ok (1 service, 2 warnings)\n"),
        "{}",
        show(&out)
    );
    let file = path.display();
    for (line, field, missing) in [
        (5, "services[0].epg_url", "gone.xml"),
        (9, "guides[0].file", "nowhere.xml"),
    ] {
        let want = format!(
            "warning: {file}:{line}: {field}: file {} does not exist: reading it fails until it does",
            dir.path().join(missing).display()
        );
        assert!(stderr.contains(&want), "{want}\n{}", show(&out));
    }
    assert!(!stderr.contains("services[0].url:"), "{}", show(&out));

    // A relative path says where it was looked for: where freesky runs.
    let path = write(
        dir.path(),
        "relative.toml",
        "[[services]]\nname = \"F\"\nkind = \"m3u\"\nurl = \"lists/mine.m3u\"\n",
    );
    let out = run(freesky()
        .current_dir(dir.path())
        .args(["check", "--config"])
        .arg(&path));
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let want = format!(
        "services[0].url: file lists/mine.m3u does not exist (relative: looked for in {}, \
         where freesky runs): reading it fails until it does",
        std::fs::canonicalize(dir.path()).unwrap().display()
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&want),
        "{want}\n{}",
        show(&out)
    );

    let path = write(
        dir.path(),
        "typo.toml",
        "[[services]]\nname = \"F\"\nkind = \"m3u\"\nurl = \"htp:/provider.example/list.m3u\"\n",
    );
    let out = run(freesky().args(["check", "--config"]).arg(&path));
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(":4: services[0].url: `htp:/provider.example/list.m3u` is neither an http(s) URL (`http://host/path`) nor a file path"),
        "{}",
        show(&out)
    );
}

#[test]
fn check_warns_that_a_list_files_private_streams_need_allow_private() {
    // A list file is upstream data: its loopback and LAN streams are refused at play
    // time unless the service allows them. `check` says so before anyone presses play.
    let dir = tempfile::tempdir().unwrap();
    let list = write(
        dir.path(),
        "list.m3u",
        "#EXTM3U\n#EXTINF:-1,Public\nhttp://tv.example/a.m3u8\n\
         #EXTINF:-1,Here\nhttp://127.0.0.1:8080/b.m3u8|Referer=http://x.example/\n\
         #EXTINF:-1,Box\nhttp://192.168.1.20/c.m3u8\n#EXTINF:-1,Named\nhttp://localhost/d.m3u8\n",
    );
    for (allow, warned) in [("false", true), ("true", false)] {
        let path = write(
            dir.path(),
            "f.toml",
            &format!(
                "[[services]]\nname = \"F\"\nkind = \"m3u\"\nurl = '{}'\nallow_private = {allow}\n",
                list.display()
            ),
        );
        let out = run(freesky().args(["check", "--config"]).arg(&path));
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        let want = format!(
            "warning: {}:4: services[0].url: the list file names streams on a loopback or \
             private address (http://127.0.0.1:8080/b.m3u8 and 2 others), which are \
             refused unless the service sets `allow_private = true`",
            path.display()
        );
        assert_eq!(stderr.contains(&want), warned, "{want}\n{}", show(&out));
        assert_eq!(stderr.contains("warning:"), warned, "{}", show(&out));
    }
    // A host the service's config names (here its `origin`) is its own: not counted.
    let path = write(
        dir.path(),
        "own.toml",
        &format!(
            "[[services]]\nname = \"F\"\nkind = \"m3u\"\nurl = '{}'\norigin = \"http://192.168.1.20\"\n",
            list.display()
        ),
    );
    let out = run(freesky().args(["check", "--config"]).arg(&path));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("(http://127.0.0.1:8080/b.m3u8 and 1 other), which are refused"),
        "{}",
        show(&out)
    );
}

#[test]
fn check_accepts_a_good_config_with_environment_variables() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "good.toml",
        r#"
[server]
bind = "127.0.0.1:8099"
admin_token = "${FREESKY_CLI_TEST_UNSET_ADMIN_81F2:-}"

[cache]
resolved_ttl = "800ms"
channels_ttl = "5m"

[[services]]
name = "Demo"
kind = "demo"
timeout = "10s"

[[services]]
name = "List"
kind = "m3u"
priority = 1
url = "${FREESKY_CLI_TEST_LIST_URL_81F2}"
"#,
    );
    let out = run(freesky()
        .args(["check", "--config"])
        .arg(&path)
        .env_remove("FREESKY_CLI_TEST_UNSET_ADMIN_81F2")
        .env(
            "FREESKY_CLI_TEST_LIST_URL_81F2",
            "http://lists.example/tv.m3u",
        ));
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ok"),
        "{}",
        show(&out)
    );

    // The same file without the variable: exit 2, naming it.
    let out = run(freesky()
        .args(["check", "--config"])
        .arg(&path)
        .env_remove("FREESKY_CLI_TEST_LIST_URL_81F2"));
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let file = path.display().to_string();
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .any(|l| l.starts_with(&format!("{file}:19: services[1].url: "))
                && l.contains("FREESKY_CLI_TEST_LIST_URL_81F2")),
        "{}",
        show(&out)
    );
}

#[test]
fn the_shipped_config_passes_check() {
    let root = env!("CARGO_MANIFEST_DIR");
    let shipped = Path::new(root).join("config/freesky.toml");
    assert!(
        shipped.exists(),
        "the repository must ship {}",
        shipped.display()
    );
    let out = run(freesky()
        .current_dir(root)
        .args(["check", "--config", "config/freesky.toml"]));
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
}

/// SPEC: the shipped config has "a commented example of every service kind"; with the
/// examples uncommented it must still be valid.
#[test]
fn the_shipped_config_examples_are_valid_when_uncommented() {
    let root = env!("CARGO_MANIFEST_DIR");
    let text = std::fs::read_to_string(Path::new(root).join("config/freesky.toml"))
        .expect("the shipped config");
    let uncommented: String = text
        .lines()
        .map(|l| l.strip_prefix("# ").unwrap_or(l))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(
        uncommented, text,
        "the shipped config has no commented examples"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "examples.toml", &uncommented);
    let out = run(freesky().args(["check", "--config"]).arg(&path));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n--- checked\n{uncommented}",
        show(&out)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains("(1 service)"),
        "no example was uncommented: {stdout}"
    );
}

#[test]
fn playlist_prints_the_demo_channel() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let path = write(
        dir.path(),
        "demo.toml",
        &format!(
            "[server]\nstate_dir = '{}'\n\n[[services]]\nname = \"Demo\"\nkind = \"demo\"\n",
            state.display()
        ),
    );
    let out = run(freesky()
        .args(["playlist", "--config"])
        .arg(&path)
        .args(["--base-url", "http://tv.example:9000/"]));
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let text = String::from_utf8(out.stdout.clone()).expect("UTF-8 playlist");
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("#EXTM3U url-tvg=\"http://tv.example:9000/epg.xml\""),
        "{text}"
    );
    assert_eq!(lines.len(), 3, "one channel: {text}");
    assert!(lines[1].starts_with("#EXTINF:-1 "), "{text}");
    for attr in [
        "tvg-id=\"demo.freesky\"",
        "tvg-name=\"Demo\"",
        "tvg-chno=\"1\"",
        "group-title=\"Demo\"",
    ] {
        assert!(lines[1].contains(attr), "{attr} missing: {text}");
    }
    assert!(lines[1].ends_with(",Demo"), "{text}");
    assert_eq!(lines[2], "http://tv.example:9000/api/stream/demo.m3u8");
    assert!(state.exists(), "state_dir was not used");

    // Without --base-url: the config's public_url, else its bind address.
    for (server, want) in [
        (
            "public_url = \"http://tv.lan:9100/\"\nbind = \"0.0.0.0:9100\"\n",
            "http://tv.lan:9100",
        ),
        ("bind = \"0.0.0.0:9100\"\n", "http://127.0.0.1:9100"),
        ("bind = \"192.0.2.7:8123\"\n", "http://192.0.2.7:8123"),
    ] {
        let path = write(
            dir.path(),
            "bound.toml",
            &format!(
                "[server]\nstate_dir = '{}'\n{server}\n[[services]]\nname = \"Demo\"\nkind = \"demo\"\n",
                state.display()
            ),
        );
        let out = run(freesky().args(["playlist", "--config"]).arg(&path));
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
        let text = String::from_utf8(out.stdout).expect("UTF-8 playlist");
        assert!(
            text.starts_with(&format!("#EXTM3U url-tvg=\"{want}/epg.xml\""))
                && text.contains(&format!("\n{want}/api/stream/demo.m3u8")),
            "{server}: {text}"
        );
    }
}

/// A config with the demo service only, its state under `dir`.
fn demo_config(dir: &Path) -> PathBuf {
    let state = dir.join("state");
    write(
        dir,
        "demo.toml",
        &format!(
            "[server]\nstate_dir = '{}'\n\n[[services]]\nname = \"Demo\"\nkind = \"demo\"\n",
            state.display()
        ),
    )
}

/// Piped stderr carries no terminal control sequences (progress redraws, colours).
fn assert_no_escapes(out: &Output) {
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("\x1b["),
        "escape codes on piped stderr:\n{}",
        show(out)
    );
}

#[test]
fn channels_json_lists_the_demo_channel() {
    let dir = tempfile::tempdir().unwrap();
    let path = demo_config(dir.path());
    let out = run(freesky()
        .args(["channels", "--json", "--config"])
        .arg(&path));
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_no_escapes(&out);
    let channels: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{}", show(&out)));
    let channels = channels.as_array().expect("a JSON array");
    assert_eq!(channels.len(), 1, "{}", show(&out));
    let demo = &channels[0];
    assert_eq!(demo["id"], "demo");
    assert_eq!(demo["name"], "Demo");
    assert_eq!(demo["number"], 1);
    assert_eq!(demo["group"], "Demo");
    assert_eq!(demo["guide_id"], "demo.freesky");
    assert_eq!(demo["sources"][0]["service"], "Demo");
    assert_eq!(demo["sources"][0]["channel_id"], "demo");
}

#[test]
fn channels_piped_prints_a_table_and_no_progress() {
    let dir = tempfile::tempdir().unwrap();
    let path = demo_config(dir.path());
    // The default log level: log lines may appear on stderr, nothing else.
    let out = run(freesky()
        .env_remove("RUST_LOG")
        .args(["channels", "--config"])
        .arg(&path));
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_no_escapes(&out);
    for line in String::from_utf8_lossy(&out.stderr).lines() {
        assert!(
            line.contains(" INFO ") || line.contains(" WARN "),
            "not a log line on stderr: {line:?}\n{}",
            show(&out)
        );
    }
    let text = String::from_utf8(out.stdout.clone()).expect("UTF-8 table");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "a header and one channel:\n{}", show(&out));
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(header, ["NO.", "NAME", "GROUP", "SOURCES"], "{text}");
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(row, ["1", "Demo", "Demo", "Demo"], "{text}");

    // --search narrows the table.
    let out = run(freesky()
        .args(["channels", "--search", "no-such-channel-81f2", "--config"])
        .arg(&path));
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        1,
        "{}",
        show(&out)
    );
}

#[test]
fn guide_piped_is_valid_xmltv_without_progress() {
    let dir = tempfile::tempdir().unwrap();
    let path = demo_config(dir.path());
    let out = run(freesky().args(["guide", "--config"]).arg(&path));
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_no_escapes(&out);
    assert!(
        String::from_utf8_lossy(&out.stderr).trim().is_empty(),
        "stderr at RUST_LOG=warn: {}",
        show(&out)
    );
    crate::common::tv_validate(&out.stdout);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("<channel id=\"demo.freesky\">"),
        "{}",
        show(&out)
    );

    let out = run(freesky().args(["guide", "--gzip", "--config"]).arg(&path));
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_no_escapes(&out);
    let mut xml = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&out.stdout[..]), &mut xml)
        .expect("gzip of UTF-8 XML");
    assert!(xml.starts_with("<?xml"), "{xml}");
}

#[test]
fn guide_warns_of_a_failed_extra_guide() {
    let dir = tempfile::tempdir().unwrap();
    let gone = dir.path().join("gone.xml");
    let path = write(
        dir.path(),
        "g.toml",
        &format!(
            "[server]\nstate_dir = '{}'\n\n[[services]]\nname = \"Demo\"\nkind = \"demo\"\n\n\
             [[guides]]\nname = \"gone\"\nfile = '{}'\n",
            dir.path().join("state").display(),
            gone.display()
        ),
    );
    let out = run(freesky().args(["guide", "--config"]).arg(&path));
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "warning: guide gone ([[guides]]): cannot read {}",
            gone.display()
        )),
        "{}",
        show(&out)
    );
    crate::common::tv_validate(&out.stdout);
}

/// When every guide fails, `freesky guide` writes no guide and exits 1 naming why:
/// `freesky guide > epg.xml && ...` in a script must not take an empty guide for one
/// (before, `<tv></tv>` and exit 0).
#[test]
fn guide_fails_when_every_guide_failed() {
    let dir = tempfile::tempdir().unwrap();
    let gone = dir.path().join("gone.xml");
    let path = write(
        dir.path(),
        "g.toml",
        &format!(
            "[server]\nstate_dir = '{}'\n\n[[guides]]\nname = \"gone\"\nfile = '{}'\n",
            dir.path().join("state").display(),
            gone.display()
        ),
    );
    let out = run(freesky().args(["guide", "--config"]).arg(&path));
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(out.stdout.is_empty(), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no guide was read: guide gone ([[guides]]): cannot read"),
        "{}",
        show(&out)
    );
}

#[test]
fn check_json_lists_problems_as_objects() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "bad.toml", BAD);
    let out = run(freesky()
        .args(["check", "--json", "--config"])
        .arg(&path)
        .env_remove("FREESKY_CLI_TEST_UNSET_VAR_81F2"));
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let problems: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{}", show(&out)));
    let problems = problems.as_array().expect("a JSON array");
    assert_eq!(problems.len(), 7, "{}", show(&out));
    let file = path.display().to_string();
    assert!(
        problems.iter().all(|p| p["file"] == file.as_str()),
        "{}",
        show(&out)
    );
    assert!(
        problems.iter().any(|p| p["line"] == 3
            && p["field"] == "server.bnd"
            && p["message"]
                .as_str()
                .is_some_and(|m| m.contains("unknown field") && m.contains("bind"))),
        "{}",
        show(&out)
    );

    let good = demo_config(dir.path());
    let out = run(freesky().args(["check", "--json", "--config"]).arg(&good));
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
}

/// `check` whose output nobody reads any more (`| head -c 10` done) still exits with
/// its code (2 for a config with problems, 0 for a good one), not a panic (101).
#[test]
fn check_into_a_closed_pipe_exits_with_its_code() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write(dir.path(), "bad.toml", BAD);
    let good = demo_config(dir.path());
    for (args, config, code) in [
        (&["check", "--json", "--config"][..], &bad, 2),
        (&["check", "--config"][..], &bad, 2),
        (&["check", "--config"][..], &good, 0),
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let (reader_err, writer_err) = std::io::pipe().unwrap();
        drop(reader_err);
        let status = freesky()
            .args(args)
            .arg(config)
            .env_remove("FREESKY_CLI_TEST_UNSET_VAR_81F2")
            .stdout(writer)
            .stderr(writer_err)
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(code), "{args:?} {}", config.display());
    }
}

/// On a terminal, `channels` draws one line per service on stderr (via util-linux
/// `script`, which gives it a pseudo-terminal); skipped where `script` is missing.
#[test]
fn channels_on_a_terminal_shows_progress_per_service() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: no `script` (util-linux)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = demo_config(dir.path());
    let cmd = format!(
        "'{}' channels --config '{}' >/dev/null",
        env!("CARGO_BIN_EXE_freesky"),
        path.display()
    );
    let out = run(Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env_remove("FREESKY_CONFIG")
        .env("RUST_LOG", "warn")
        .env("TERM", "xterm"));
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    // Only stderr reaches the terminal here: stdout went to /dev/null.
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(screen.contains("Demo"), "{screen:?}");
    assert!(screen.contains("1 channel ("), "{screen:?}");
    assert!(
        !screen.contains("NAME"),
        "the table went to the terminal: {screen:?}"
    );
}

/// A config with unknown keys: serde alone stops at the first of a table.
type Unknown = (
    &'static str,
    &'static [(usize, &'static str)],
    &'static [&'static str],
);

/// `(config, [(line, field)] of its unknown keys, keys the message must list)`.
const UNKNOWN_KEYS: &[Unknown] = &[
    (
        "[server]\nbind = \"127.0.0.1:0\"\nbnd = \"x\"\nstte = \"y\"\nfoo = 1\n",
        &[(3, "server.bnd"), (4, "server.stte"), (5, "server.foo")],
        &["bind", "public_url", "state_dir"],
    ),
    (
        "[[services]]\nname = \"Demo\"\nkind = \"demo\"\nbogus = 1\nalso = 2\n",
        &[(4, "services[0].bogus"), (5, "services[0].also")],
        &["name", "kind", "timeout", "priority"],
    ),
];

#[test]
fn check_reports_every_unknown_key_on_its_own_line_with_the_valid_keys() {
    let dir = tempfile::tempdir().unwrap();
    for (i, (config, unknown, valid)) in UNKNOWN_KEYS.iter().enumerate() {
        let path = write(dir.path(), &format!("unknown-{i}.toml"), config);
        let file = path.display().to_string();
        let out = run(freesky().args(["check", "--config"]).arg(&path));
        assert_eq!(out.status.code(), Some(2), "{}", show(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        let problems: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with(&format!("{file}:")))
            .collect();
        assert_eq!(problems.len(), unknown.len(), "{}", show(&out));
        for (line, field) in *unknown {
            let prefix = format!("{file}:{line}: {field}: unknown field, expected one of: ");
            let found = problems
                .iter()
                .find(|l| l.starts_with(&prefix))
                .unwrap_or_else(|| panic!("no line starting with {prefix:?}\n{}", show(&out)));
            let listed: Vec<&str> = found[prefix.len()..]
                .split([',', ' ', '(', ')'])
                .filter(|w| !w.is_empty())
                .collect();
            for key in *valid {
                assert!(listed.contains(key), "{found:?} should list {key:?}");
            }
        }

        let out = run(freesky().args(["check", "--json", "--config"]).arg(&path));
        assert_eq!(out.status.code(), Some(2), "{}", show(&out));
        let problems: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{}", show(&out)));
        let got: Vec<(u64, &str)> = problems
            .as_array()
            .expect("a JSON array")
            .iter()
            .map(|p| (p["line"].as_u64().unwrap(), p["field"].as_str().unwrap()))
            .collect();
        let want: Vec<(u64, &str)> = unknown.iter().map(|(l, f)| (*l as u64, *f)).collect();
        assert_eq!(got, want, "{}", show(&out));
    }
}

#[test]
fn playlist_and_guide_point_logos_at_freesky_in_proxy_mode() {
    let dir = tempfile::tempdir().unwrap();
    let list = write(
        dir.path(),
        "list.m3u",
        "#EXTM3U\n#EXTINF:-1 tvg-id=\"One.example\" tvg-logo=\"http://logo.invalid/one.png\",One\nhttp://127.0.0.1:9/one.m3u8\n",
    );
    let guide = write(
        dir.path(),
        "guide.xml",
        &format!(
            "<?xml version=\"1.0\"?>\n<tv><channel id=\"One.example\"><display-name>One</display-name><icon src=\"http://logo.invalid/one-guide.png\"/></channel>\
             <programme start=\"{}\" stop=\"{}\" channel=\"One.example\"><title>Show</title></programme></tv>\n",
            crate::common::xmltv_at(0),
            crate::common::xmltv_at(1)
        ),
    );
    let path = write(
        dir.path(),
        "f.toml",
        &format!(
            "[server]\nstate_dir = '{}'\n\n[logos]\nmode = \"proxy\"\n\n\
             [[services]]\nname = \"List\"\nkind = \"m3u\"\nurl = '{}'\nepg_url = '{}'\n",
            dir.path().join("state").display(),
            list.display(),
            guide.display()
        ),
    );
    for (command, what) in [("playlist", "tvg-logo"), ("guide", "icon")] {
        let out = run(freesky()
            .args([command, "--base-url", "http://tv.example:8005", "--config"])
            .arg(&path));
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("http://tv.example:8005/logos/"),
            "{command}: the {what} points at freesky: {text}"
        );
        assert!(!text.contains("logo.invalid"), "{command}: {text}");
    }
}

/// `--bind` and `--base-url` are checked as the config's `bind` and `public_url` are:
/// exit 2 naming the value, before anything is fetched or listened on (no name lookup
/// for a bind address, no playlist of links to "not a url/...").
#[test]
fn bad_bind_and_base_url_flags_exit_2_naming_the_value() {
    let dir = tempfile::tempdir().unwrap();
    let config = demo_config(dir.path());
    for (args, said) in [
        (
            &["serve", "--bind", "999.1.1.1:1"][..],
            "`999.1.1.1:1` is not an address like 0.0.0.0:8005",
        ),
        (
            &["serve", "--bind", "localhost:8005"][..],
            "`localhost:8005` is not an address like 0.0.0.0:8005",
        ),
        (
            &["playlist", "--base-url", "not a url"][..],
            "`not a url` is not a URL like http://192.168.1.10:8005",
        ),
        (
            &["guide", "--base-url", "ftp://x/"][..],
            "`ftp://x/` is not a URL like http://192.168.1.10:8005",
        ),
    ] {
        let out = run(freesky().arg("--config").arg(&config).args(args));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", show(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(said),
            "{args:?}: {}",
            show(&out)
        );
        assert!(out.stdout.is_empty(), "{args:?}: {}", show(&out));
    }
}

/// `copy-state` beside a server that holds the state_dir is refused before it reads
/// anything: the copy could miss the server's last changes.
#[test]
fn copy_state_is_refused_while_a_server_holds_the_state_dir() {
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("state");
    let _held = freesky::store::StateLock::acquire(&state)
        .expect("lock file")
        .expect("free");
    let config = write(
        dir.path(),
        "pg.toml",
        &format!(
            "[server]\nstate_dir = '{}'\nstate = \"postgresql://freesky@127.0.0.1:9/none\"\n\n\
             [[services]]\nname = \"Demo\"\nkind = \"demo\"\n",
            state.display()
        ),
    );
    let out = run(freesky().args(["--config", config.to_str().unwrap(), "copy-state"]));
    assert_ne!(out.status.code(), Some(0), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is in use by a running server") && err.contains("stop it first"),
        "{}",
        show(&out)
    );
}

/// A PostgreSQL store that cannot be reached stops the start with one line that names
/// the server, database and user it tried (never the password) and the network's
/// reason, without the connection pool's own wording.
#[test]
fn an_unreachable_postgres_store_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on: bound, then let go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = write(
        dir.path(),
        "pg.toml",
        &format!(
            "[server]\nbind = \"127.0.0.1:0\"\nstate_dir = '{}'\n\
             state = \"postgresql://viewer:s3cret-pw@127.0.0.1:{port}/tv?sslmode=disable&connect_timeout=5\"\n",
            dir.path().display()
        ),
    );
    let out = run(freesky().arg("--config").arg(&config));
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "error: state store (PostgreSQL): cannot use the server at 127.0.0.1:{port}, \
             database tv, user viewer (server.state): error connecting to server: "
        )),
        "{}",
        show(&out)
    );
    assert!(!stderr.contains("s3cret-pw"), "{}", show(&out));
    assert!(!stderr.contains("Error occurred"), "{}", show(&out));
}

/// `check` on a file with errors shows what it would also warn of, after the errors:
/// fixing the errors alone used to bring the warnings out only at the next run.
#[test]
fn check_shows_warnings_beside_errors() {
    let dir = tempfile::tempdir().unwrap();
    // An error (a port that is no number) and a warning (no [[services]]).
    let config = write(dir.path(), "both.toml", "[server]\nbind = 5\n");
    let out = run(freesky().args(["check", "--config"]).arg(&config));
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    let error = lines
        .iter()
        .position(|l| l.contains(":2: server.bind:"))
        .unwrap_or_else(|| panic!("no error line: {}", show(&out)));
    let warning = lines
        .iter()
        .position(|l| l.starts_with("warning: ") && l.contains(":1: services: no [[services]]"))
        .unwrap_or_else(|| panic!("no warning line: {}", show(&out)));
    assert!(error < warning, "{}", show(&out));
}
