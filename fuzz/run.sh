#!/usr/bin/env bash
# Coverage-guided fuzzing of one target under libFuzzer (cargo-fuzz, nightly), at the
# lowest CPU priority and one process, so it yields to everything else on the machine.
#
#   fuzz/run.sh TARGET [SECONDS]   fuzz for SECONDS (default 1200); new inputs go to
#                                  fuzz/target/work/TARGET, crashes to fuzz/artifacts/TARGET
#   fuzz/run.sh merge TARGET       add the inputs of the work corpus that reach new
#                                  coverage to fuzz/corpus/TARGET (what gets committed)
#
# Targets: config hls m3u proxy_url xmltv playlist_rewrite upstream_json
# (tests/fuzz_support/mod.rs; RELIABILITY.md, "Fuzzing").
set -euo pipefail
cd "$(dirname "$0")"
here=$PWD
bin() { echo "$here/target/x86_64-unknown-linux-gnu/release/$1"; }

if [ "$1" = merge ]; then
  t=$2
  exec nice -n 19 "$(bin "$t")" -merge=1 -rss_limit_mb=2048 "corpus/$t" "target/work/$t"
fi

t=$1
secs=${2:-1200}
cargo +nightly fuzz build "$t"
mkdir -p "target/work/$t" "artifacts/$t" "target/logs/$t"
mode=(-jobs=1 -workers=1)
if [ -n "$(ls -A "known-crashes/$t" 2>/dev/null)" ]; then
  # A known crash (tests/it/fuzz_replay.rs, *_known_crashes) must not end the run:
  # fork mode records each crash in artifacts/ and carries on.
  mode=(-fork=1 -ignore_crashes=1)
fi
# libFuzzer's -jobs mode writes fuzz-0.log in the current directory: one per target.
cd "target/logs/$t"
exec nice -n 19 "$(bin "$t")" "${mode[@]}" -max_total_time="$secs" -rss_limit_mb=2048 \
  -artifact_prefix="$here/artifacts/$t/" "$here/target/work/$t" "$here/corpus/$t"
