#!/usr/bin/env bash
# The one test command (README "Quick start"; .ci/run calls it):
# installs the external tools the tests drive when missing, then runs
# formatting, lint and every test. Prints how long each stage took.
set -euo pipefail
cd "$(dirname "$0")/.."

stage() { printf '\n==> %s\n' "$*"; }
started=$SECONDS
timed() {
  local t=$SECONDS
  "$@"
  printf '    (%ss)\n' "$((SECONDS - t))"
}

# --- tools the tests drive: real ffmpeg/ffprobe (end-to-end playback), VLC and mpv,
# Debian's XMLTV validator (tv_validate_file, package xmltv-util) and headless
# Chromium + ChromeDriver (tests/it/dashboard.rs) ---
missing=()
command -v ffmpeg >/dev/null 2>&1 || missing+=(ffmpeg)
command -v tv_validate_file >/dev/null 2>&1 || missing+=(xmltv-util)
# (with a font: --no-install-recommends would leave Chromium's screenshots without text)
command -v chromium >/dev/null 2>&1 || missing+=(chromium fonts-liberation)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
# Node.js + npm: the independent Xtream client library and M3U parser of tests/xtream_out.rs.
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
# VLC (headless: cvlc) and mpv: the desktop players of tests/it/players.rs.
command -v cvlc >/dev/null 2>&1 || missing+=(vlc-bin vlc-plugin-base)
command -v mpv >/dev/null 2>&1 || missing+=(mpv)
if ((${#missing[@]})); then
  stage "installing ${missing[*]} with apt-get"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
for tool in ffmpeg ffprobe tv_validate_file chromium chromedriver node npm cvlc mpv; do
  command -v "$tool" >/dev/null || { echo "error: $tool is still missing after apt-get" >&2; exit 1; }
done
[ -f /usr/share/xmltv/xmltv.dtd ] || { echo "error: /usr/share/xmltv/xmltv.dtd missing (xmltv-util)" >&2; exit 1; }
# The npm clients tests/it/xtream_out.rs drives (@iptv/xtream-api, iptv-playlist-parser), pinned by
# tests/clients/package-lock.json, installed locally into tests/clients/node_modules.
if ! (cd tests/clients && npm ls --silent >/dev/null 2>&1); then
  stage "installing tests/clients npm packages"
  (cd tests/clients && npm ci --no-audit --no-fund --silent)
fi
# openapi-spec-validator (PyPI) checks /api/openapi.json in tests/it/openapi.rs.
if ! python3 -m openapi_spec_validator --help >/dev/null 2>&1; then
  stage "installing openapi-spec-validator with pip"
  if [ "$(id -u)" -eq 0 ]; then
    python3 -m pip install --quiet openapi-spec-validator
  else
    python3 -m pip install --quiet --user openapi-spec-validator
  fi
fi
python3 -m openapi_spec_validator --help >/dev/null 2>&1 || { echo "error: openapi-spec-validator is still missing after pip" >&2; exit 1; }

if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo not found; install Rust from https://rustup.rs (stable >= 1.89)" >&2
  exit 1
fi
if command -v rustup >/dev/null 2>&1; then
  for c in rustfmt clippy; do
    rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c"
  done
fi

# --- the book (docs/, mdBook): mdbook pinned, installed with cargo when missing
# (only the search feature: no `serve`/`watch` server to compile). The build fails
# on a SUMMARY entry without its file, a bad {{#include}}, or (checked below) any
# warning such as unclosed HTML; links and anchors are checked by tests/it/docs.rs. ---
MDBOOK_VERSION=0.5.4
if [ "$(mdbook --version 2>/dev/null)" != "mdbook v$MDBOOK_VERSION" ]; then
  stage "installing mdbook $MDBOOK_VERSION with cargo install"
  timed cargo install mdbook --locked --version "$MDBOOK_VERSION" --no-default-features --features search
fi
stage "mdbook build docs"
t=$SECONDS
book_log=$(mdbook build docs 2>&1) || { printf '%s\n' "$book_log" >&2; exit 1; }
if grep -E '(WARN|ERROR)' <<<"$book_log" >&2; then
  echo "error: mdbook build docs warned (above)" >&2
  exit 1
fi
printf '    (%ss)\n' "$((SECONDS - t))"

# cargo-deny: supply chain (advisories, licences, duplicate versions, sources; deny.toml).
# Pinned, so a new release cannot change what passes.
if ! cargo deny --version 2>/dev/null | grep -q '^cargo-deny 0\.20\.2$'; then
  stage "installing cargo-deny 0.20.2 with cargo install (a few minutes)"
  cargo install --locked cargo-deny@0.20.2
fi

stage "cargo deny --offline check"
# The RustSec database is an offline snapshot (a git bundle in the shared data beside
# the repository; ADVISORY_DB_BUNDLE overrides), refreshed from the bundle every run
# into the folder cargo-deny names for the default database URL.
advisory_bundle=${ADVISORY_DB_BUNDLE:-../shared/data/rustsec/advisory-db.bundle}
advisory_db=target/advisory-db/advisory-db-3157b0e258782691
[ -f "$advisory_bundle" ] || { echo "error: advisory database bundle $advisory_bundle missing" >&2; exit 1; }
if [ -d "$advisory_db/.git" ]; then
  git -C "$advisory_db" fetch -q "$(realpath "$advisory_bundle")" HEAD
  git -C "$advisory_db" reset -q --hard FETCH_HEAD
else
  mkdir -p target/advisory-db
  git clone -q "$advisory_bundle" "$advisory_db"
fi
# Every platform's crates of Cargo.lock, which `cargo deny` reads and a build on this
# one never downloads (the redox/wasi/apple-only dependencies of new crates).
cargo fetch --locked --quiet
timed cargo deny --offline check

stage "cargo fmt --check"
timed cargo fmt --all -- --check
stage "cargo clippy --all-targets -- -D warnings"
timed cargo clippy --all-targets --locked -- -D warnings
stage "cargo test"
# Two integration binaries: tests/it (every area, one module each) and tests/process_wide
# (peak memory and process-wide metrics, one test at a time). A snapshot that differs
# fails here and writes nothing (review changes with INSTA_UPDATE=always locally).
export INSTA_UPDATE=no
# A failing test prints its message, not a backtrace: CI keeps the end of the output,
# and a backtrace there pushed out what failed (the tests' messages say where and why).
export RUST_BACKTRACE=0
timed cargo test --all-targets --locked
# Several instances with the real engines: a throwaway PostgreSQL, HAProxy, three
# instances, a fake upstream; also runs tests/it/postgres.rs against that cluster.
stage "scripts/cluster-test.sh"
timed bash scripts/cluster-test.sh
# The FROM-scratch image under podman; it needs a static release build, so it runs
# only with FREESKY_CONTAINER_TEST=1 and otherwise prints why it skipped.
stage "scripts/container-test.sh"
timed bash scripts/container-test.sh
printf '\nall checks passed in %ss\n' "$((SECONDS - started))"
