#!/usr/bin/env bash
# Xtream output at scale: times and sizes `player_api.php?action=get_live_streams` against
# `/api/channels/all` on the same 20,000-channel lineup, in one run (medians of RUNS).
# Usage: scripts/bench-xtream.sh [path/to/freesky] (default: target/debug/freesky, built
# by `cargo build`; a release binary gives the absolute numbers, the ratio is the point).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/debug/freesky}
CHANNELS=${CHANNELS:-20000}
RUNS=${RUNS:-5}
PORT=${PORT:-18765}
[ -x "$BIN" ] || { echo "error: $BIN missing (cargo build)" >&2; exit 1; }
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT

{
  echo "#EXTM3U"
  for ((i = 1; i <= CHANNELS; i++)); do
    printf '#EXTINF:-1 tvg-id="Ch%d.example" tvg-logo="http://logos.invalid/%d.png" group-title="Group %d",Channel %d\n' \
      "$i" "$i" "$((i % 50))" "$i"
    printf 'http://upstream.invalid/live/%d.m3u8\n' "$i"
  done
} >"$work/list.m3u"
cat >"$work/freesky.toml" <<TOML
[server]
bind = "127.0.0.1:$PORT"
state_dir = "$work/state"
[hdhomerun]
enabled = false
[guide]
placeholders = false
[[services]]
name = "Big"
kind = "m3u"
url = "$work/list.m3u"
[[users]]
name = "bench"
password = "bench-pw"
max_connections = 0
TOML

"$BIN" serve --config "$work/freesky.toml" 2>"$work/log" &
pid=$!
for _ in $(seq 1 100); do
  curl -fs "http://127.0.0.1:$PORT/health" >/dev/null && break
  sleep 0.2
done
base="http://127.0.0.1:$PORT"
xtream="$base/player_api.php?username=bench&password=bench-pw&action=get_live_streams"
curl -fs -o /dev/null "$base/api/channels/all" # builds the lineup once

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR + 1) / 2)]}'; }
measure() { # URL -> "median_seconds bytes"
  local t bytes
  t=$(for ((r = 0; r < RUNS; r++)); do curl -fs -o /dev/null -w '%{time_total}\n' "$1"; done | median)
  bytes=$(curl -fs "$1" | wc -c)
  echo "$t $bytes"
}
read -r t_all b_all < <(measure "$base/api/channels/all")
read -r t_x b_x < <(measure "$xtream")
rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
printf '| endpoint (%d channels) | median s | bytes |\n| --- | --- | --- |\n' "$CHANNELS"
printf '| /api/channels/all | %s | %s |\n' "$t_all" "$b_all"
printf '| player_api.php get_live_streams | %s | %s |\n' "$t_x" "$b_x"
awk -v a="$t_all" -v x="$t_x" -v ba="$b_all" -v bx="$b_x" \
  'BEGIN { printf "ratio get_live_streams / channels_all: time %.2f, bytes %.2f\n", x / a, bx / ba }'
echo "server RSS after: ${rss} kB"
