#!/usr/bin/env bash
# Big-lineup harness (BENCHMARKS.md, "Big lineups"; run by hand, not part of CI).
#
# Makes M3U lists of 40,000 and 200,000 entries from the iptv-org list in
# ../shared/data/ (replicated with unique names and tvg-ids, so every copy is a channel
# of its own), serves each to a release build as a one-service `m3u` file list, and
# measures:
#   cold     `freesky channels --json` with an empty state_dir (every channel gets its
#            id and number written): wall time and peak RSS (/usr/bin/time -v)
#   warm     the same again (numbers already assigned)
#   serve    `freesky serve`, then the size and time of /playlist.m3u,
#            /api/channels/all, /lineup.json and the dashboard `/` (each fetched once,
#            in that order, after the lineup was built by a first /playlist.m3u), and
#            the server's RSS (and its peak) after the three listings and after `/`
# and prints one table. Nothing leaves 127.0.0.1; the lists' stream URLs are never
# fetched.
#
# Usage: bash scripts/bench-scale.sh
# Environment (defaults in brackets):
#   SIZES [40000 200000]   list sizes, in entries
#   SOURCE [../shared/data/iptv-org-all-2023-01-31.m3u]   the list replicated
#   PORT [18095]           where `serve` listens (127.0.0.1)
#   SKIP_BUILD [0]         1: use the release binary already built
#   KEEP [0]               1: keep the work dir (lists, configs, logs) and print its path
#   CARGO_TARGET_DIR is respected.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZES=${SIZES:-"40000 200000"}
if [ -z "${SOURCE:-}" ]; then
  # ../shared/data beside the main checkout; a worktree under wt/ is one level deeper.
  for d in ../shared/data ../../shared/data; do
    [ -r "$d/iptv-org-all-2023-01-31.m3u" ] && SOURCE="$d/iptv-org-all-2023-01-31.m3u" && break
  done
fi
SOURCE=${SOURCE:-../shared/data/iptv-org-all-2023-01-31.m3u}
PORT=${PORT:-18095}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP=${KEEP:-0}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
BIN="$TARGET_DIR/release/freesky"

stage() { printf '==> %s\n' "$*" >&2; }
die() {
  echo "error: $*" >&2
  exit 1
}

[ -r "$SOURCE" ] || die "no source list at $SOURCE (set SOURCE=)"
[ -x /usr/bin/time ] || die "/usr/bin/time (GNU time, for peak RSS) is not installed"
command -v curl >/dev/null || die "curl is not installed"

if [ "$SKIP_BUILD" != 1 ]; then
  stage "release build (nice -n 5)"
  nice -n 5 cargo build --release --bin freesky >&2
fi
[ -x "$BIN" ] || die "no release binary at $BIN"

WORK=$(mktemp -d /tmp/freesky-bench-scale.XXXXXX)
SERVER=""
cleanup() {
  if [ -n "$SERVER" ]; then kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; fi
  if [ "$KEEP" = 1 ]; then echo "work dir kept: $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# --- lists -----------------------------------------------------------------------------
# One entry = its #EXTINF line, any option lines after it, and its URL line. Copy k > 0
# gets " kK" after its name and ".kK" after its tvg-id (an entry without one gets
# "bench-N.kK"), so no two entries of the big list merge into one channel unless the
# original list already merged them.
largest=0
for n in $SIZES; do ((n > largest)) && largest=$n; done
stage "making lists of $SIZES entries from $SOURCE"
awk -v want="$largest" '
  function emit(copy, n,   inf, id) {
    inf = info
    if (copy > 0) {
      if (match(inf, /tvg-id="[^"]*"/)) {
        id = substr(inf, RSTART + 8, RLENGTH - 9)
        if (id == "") id = "bench-" n
        inf = substr(inf, 1, RSTART - 1) "tvg-id=\"" id ".k" copy "\"" substr(inf, RSTART + RLENGTH)
      } else {
        sub(/^#EXTINF:-?[0-9.]+/, "& tvg-id=\"bench-" n ".k" copy "\"", inf)
      }
      # The name is what follows the last comma outside quotes: the end of the line.
      inf = inf " k" copy
    }
    print inf
    if (opts != "") printf "%s", opts
    print url
  }
  NR == 1 { next }
  /^#EXTINF/ { info = $0; opts = ""; next }
  /^#/ { if (info != "") opts = opts $0 "\n"; next }
  /^[[:space:]]*$/ { next }
  info != "" { nentry++; infos[nentry] = info; optss[nentry] = opts; urls[nentry] = $0; info = "" }
  END {
    print "#EXTM3U"
    made = 0
    for (copy = 0; made < want; copy++) {
      for (i = 1; i <= nentry && made < want; i++) {
        info = infos[i]; opts = optss[i]; url = urls[i]
        emit(copy, i); made++
      }
    }
  }
' "$SOURCE" | tr -d '\r' >"$WORK/list-$largest.m3u"
for n in $SIZES; do
  if [ "$n" != "$largest" ]; then
    # The first n entries of the largest list (an entry ends at its URL line).
    awk -v want="$n" 'NR == 1 { print; next } { print } !/^#/ && ++k >= want { exit }' \
      "$WORK/list-$largest.m3u" >"$WORK/list-$n.m3u"
  fi
done

config() { # size -> config path
  local n=$1 dir="$WORK/state-$n"
  cat >"$WORK/freesky-$n.toml" <<EOF
[server]
bind = "127.0.0.1:$PORT"
state_dir = "$dir"
max_body_bytes = 268435456

[health]
interval = "0s"

[[services]]
name = "big"
kind = "m3u"
url = "$WORK/list-$n.m3u"
EOF
  echo "$WORK/freesky-$n.toml"
}

# `/usr/bin/time -v` output -> "seconds peak_MB"
timed() { # out-file cmd...
  local out=$1
  shift
  /usr/bin/time -v "$@" >"$out.stdout" 2>"$out.time" || {
    tail -20 "$out.time" >&2
    die "$* failed"
  }
  awk -F': ' '
    /Elapsed \(wall clock\)/ { n = split($2, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i] }
    /Maximum resident set size/ { rss = $2 / 1024 }
    END { printf "%.2f %.0f\n", s, rss }' "$out.time"
}

rss_of() { # pid -> "VmRSS_MB VmHWM_MB"
  awk '/^VmRSS/ { r = $2 } /^VmHWM/ { h = $2 } END { printf "%.0f %.0f\n", r / 1024, h / 1024 }' "/proc/$1/status"
}

fetch() { # path -> "bytes seconds"
  curl -sS -o /dev/null --max-time 300 -w '%{size_download} %{time_total}\n' "http://127.0.0.1:$PORT$1" |
    awk '{ printf "%d %.3f\n", $1, $2 }'
}

human() { # bytes -> "12.3 MB" / "45 KB"
  awk -v b="$1" 'BEGIN { if (b >= 1048576) printf "%.1f MB", b / 1048576; else printf "%.0f KB", b / 1024 }'
}

ROWS=()
row() { ROWS+=("$(printf '| %s | %s | %s |' "$1" "$2" "$3")"); }

read -r load1 _ < /proc/loadavg
for n in $SIZES; do
  cfg=$(config "$n")
  rm -rf "$WORK/state-$n"
  stage "$n entries: channels --json, cold"
  read -r s mb < <(timed "$WORK/cold-$n" "$BIN" --config "$cfg" channels --json)
  channels=$(jq length "$WORK/cold-$n.stdout" 2>/dev/null || echo "?")
  row "$n entries ($channels channels), \`channels --json\`, first run" "$s s" "$mb MB"
  stage "$n entries: channels --json, warm"
  read -r s mb < <(timed "$WORK/warm-$n" "$BIN" --config "$cfg" channels --json)
  row "$n entries, \`channels --json\`, numbers assigned" "$s s" "$mb MB"

  stage "$n entries: serve"
  "$BIN" --config "$cfg" serve >"$WORK/serve-$n.log" 2>&1 &
  SERVER=$!
  for _ in $(seq 1 600); do
    curl -sf -o /dev/null "http://127.0.0.1:$PORT/health" && break
    kill -0 "$SERVER" 2>/dev/null || die "serve exited; see $WORK/serve-$n.log"
    sleep 0.1
  done
  read -r _ first < <(fetch /playlist.m3u)
  row "$n entries, \`serve\`: first \`/playlist.m3u\` (builds the lineup)" "$first s" "-"
  for path in /playlist.m3u /api/channels/all /lineup.json; do
    read -r bytes secs < <(fetch "$path")
    row "$n entries, \`serve\`: \`$path\`" "$secs s" "$(human "$bytes")"
  done
  read -r rss hwm < <(rss_of "$SERVER")
  row "$n entries, \`serve\`: RSS after the three listings, peak" "-" "$rss MB, peak $hwm MB"
  read -r bytes secs < <(fetch /)
  row "$n entries, \`serve\`: \`/\`" "$secs s" "$(human "$bytes")"
  read -r rss hwm < <(rss_of "$SERVER")
  row "$n entries, \`serve\`: RSS after \`/\` too, peak" "-" "$rss MB, peak $hwm MB"
  kill "$SERVER"
  wait "$SERVER" 2>/dev/null || true
  SERVER=""
done
read -r load2 _ < /proc/loadavg

commit=$(git rev-parse --short HEAD 2>/dev/null || echo "?")
git diff --quiet 2>/dev/null || commit="$commit with uncommitted changes"
echo
echo "commit $commit, $(nproc) cores, load average $load1 before, $load2 after"
echo
echo "| what | time | size / RSS |"
echo "|---|---:|---:|"
printf '%s\n' "${ROWS[@]}"
