#!/usr/bin/env bash
# Movie and series catalogue at scale (BENCHMARKS.md, "Movies and series at scale";
# run by hand, not part of CI).
#
# Two fake Xtream panels (scripts/bench-vod-panel.py, on 127.0.0.1) list 120,000
# movies and 30,000 series each, overlapping so that the merged catalogue holds
# 200,000 movies and 50,000 series (5 seasons x 10 episodes each, in
# get_series_info). A release freesky serves both; the script measures:
#   load       the first /api/movies page (loads and merges both catalogues)
#   first page /api/movies?limit=50 once loaded
#   RSS        the whole server after the load (VmRSS, and the peak VmHWM)
#   xtream     get_vod_streams in full (time, bytes) and get_series
#   search     /api/movies?q=... (median of 5) and a category page
#   series     /api/series/{id} (fetches get_series_info once, then cached)
# and prints one table with the machine's load (`uptime`). Nothing leaves 127.0.0.1.
#
# Usage: bash scripts/bench-vod.sh
# Environment: PORT [18105] freesky; PANEL_PORT [18106] (and +1) the panels;
#   SKIP_BUILD [0] 1: use the release binary already built; KEEP [0] keep the work dir.
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${PORT:-18105}
PANEL_PORT=${PANEL_PORT:-18106}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP=${KEEP:-0}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
BIN="$TARGET_DIR/release/freesky"

stage() { printf '==> %s\n' "$*" >&2; }
die() {
  echo "error: $*" >&2
  exit 1
}
command -v curl >/dev/null || die "curl is not installed"
command -v python3 >/dev/null || die "python3 is not installed"

if [ "$SKIP_BUILD" != 1 ]; then
  stage "release build (nice -n 5)"
  nice -n 5 cargo build --release --bin freesky >&2
fi
[ -x "$BIN" ] || die "no release binary at $BIN"

WORK=$(mktemp -d /tmp/freesky-bench-vod.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "$KEEP" = 1 ]; then echo "work dir kept: $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

stage "fake panels on 127.0.0.1:$PANEL_PORT and :$((PANEL_PORT + 1))"
python3 scripts/bench-vod-panel.py "$PANEL_PORT" 0 >"$WORK/panel-a.log" 2>&1 &
PIDS+=($!)
python3 scripts/bench-vod-panel.py "$((PANEL_PORT + 1))" 1 >"$WORK/panel-b.log" 2>&1 &
PIDS+=($!)
for p in "$PANEL_PORT" "$((PANEL_PORT + 1))"; do
  for _ in $(seq 1 600); do
    curl -sf "http://127.0.0.1:$p/ready" >/dev/null && break
    sleep 0.2
  done
  curl -sf "http://127.0.0.1:$p/ready" >/dev/null || die "panel on $p did not start"
done

cat >"$WORK/freesky.toml" <<TOML
[server]
bind = "127.0.0.1:$PORT"
state_dir = "$WORK/state"

[[services]]
name = "A"
kind = "xtream"
priority = 1
timeout = "60s"
base_url = "http://127.0.0.1:$PANEL_PORT"
username = "u"
password = "p"

[[services]]
name = "B"
kind = "xtream"
priority = 2
timeout = "60s"
base_url = "http://127.0.0.1:$((PANEL_PORT + 1))"
username = "u"
password = "p"

[[users]]
name = "bench"
password = "bench-pw"
max_connections = 0
TOML

stage "serve"
"$BIN" --config "$WORK/freesky.toml" serve >"$WORK/serve.log" 2>&1 &
SERVER=$!
PIDS+=("$SERVER")
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break
  kill -0 "$SERVER" 2>/dev/null || die "serve exited; see $WORK/serve.log"
  sleep 0.1
done
B="http://127.0.0.1:$PORT"
X="$B/player_api.php?username=bench&password=bench-pw"

rows=()
row() { rows+=("| $1 | $2 | $3 |"); }
timed() { # url -> "seconds bytes"
  curl -s -o /dev/null -w '%{time_total} %{size_download}\n' "$1"
}
rss_of() { # pid -> "VmRSS_MB VmHWM_MB"
  awk '/^VmRSS/ { r = $2 } /^VmHWM/ { h = $2 } END { printf "%.0f %.0f\n", r / 1024, h / 1024 }' "/proc/$1/status"
}
read -r rss0 _ < <(rss_of "$SERVER")
row "RSS at start (nothing loaded)" "-" "$rss0 MB"

stage "load (first /api/movies)"
read -r secs bytes < <(timed "$B/api/movies?limit=50")
row "first \`/api/movies\` (loads and merges both panels' lists)" "$secs s" "$bytes B"
movies=$(curl -s "$B/api/movies?limit=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["total"])')
series=$(curl -s "$B/api/series?limit=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["total"])')
row "merged catalogue" "-" "$movies movies, $series series"
read -r rss hwm < <(rss_of "$SERVER")
row "RSS after the load, peak" "-" "$rss MB, peak $hwm MB"

for i in 1 2 3; do read -r secs bytes < <(timed "$B/api/movies?limit=50"); done
row "\`/api/movies?limit=50\` once loaded (3rd call)" "$secs s" "$bytes B"
read -r secs bytes < <(timed "$B/api/movies?offset=150000&limit=50")
row "\`/api/movies?offset=150000&limit=50\`" "$secs s" "$bytes B"

stage "searches"
t=()
for q in "title%20123456" "Film%20T%C3%ADtulo%2077" "zzz" "4242" "title%209"; do
  read -r secs _ < <(timed "$B/api/movies?q=$q&limit=50")
  t+=("$secs")
done
median=$(printf '%s\n' "${t[@]}" | sort -n | sed -n 3p)
row "search \`/api/movies?q=...\` (median of 5 queries)" "$median s" "-"
read -r secs bytes < <(timed "$B/api/movies?category=Category%2007&limit=50")
row "\`/api/movies?category=...\`" "$secs s" "$bytes B"

stage "xtream lists"
read -r secs bytes < <(timed "$X&action=get_vod_streams")
row "\`get_vod_streams\` in full (streamed)" "$secs s" "$bytes B"
read -r secs bytes < <(timed "$X&action=get_series")
row "\`get_series\` in full (streamed)" "$secs s" "$bytes B"
read -r rss hwm < <(rss_of "$SERVER")
row "RSS after the full lists, peak" "-" "$rss MB, peak $hwm MB"

stage "series details"
sid=$(curl -s "$B/api/series?offset=25000&limit=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["items"][0]["id"])')
read -r secs bytes < <(timed "$B/api/series/$sid")
row "\`/api/series/{id}\` first (get_series_info, 50 episodes numbered)" "$secs s" "$bytes B"
read -r secs bytes < <(timed "$B/api/series/$sid")
row "\`/api/series/{id}\` again (cached)" "$secs s" "$bytes B"

load=$(uptime | sed 's/.*load average: //')
echo
echo "| what | time | size / RSS |"
echo "| --- | --- | --- |"
printf '%s\n' "${rows[@]}"
echo
echo "load average (1, 5, 15 min) at the end: $load; $(nproc) cores"
