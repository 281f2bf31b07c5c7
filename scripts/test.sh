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

# --- tools the tests drive: real ffmpeg/ffprobe (end-to-end playback) ---
missing=()
command -v ffmpeg >/dev/null 2>&1 || missing+=(ffmpeg)
command -v ffprobe >/dev/null 2>&1 || missing+=(ffmpeg)
if ((${#missing[@]})); then
  stage "installing ${missing[*]} with apt-get"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends ffmpeg >/dev/null
fi
command -v ffprobe >/dev/null || { echo "error: ffprobe is still missing after apt-get" >&2; exit 1; }

if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo not found; install Rust from https://rustup.rs (stable >= 1.89)" >&2
  exit 1
fi
if command -v rustup >/dev/null 2>&1; then
  for c in rustfmt clippy; do
    rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c"
  done
fi

stage "cargo fmt --check"
timed cargo fmt --all -- --check
stage "cargo clippy --all-targets -- -D warnings"
timed cargo clippy --all-targets --locked -- -D warnings
stage "cargo test"
timed cargo test --all-targets --locked
printf '\nall checks passed in %ss\n' "$((SECONDS - started))"
