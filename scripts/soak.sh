#!/usr/bin/env bash
# Soak: many .ts viewers across many live channels for a long time, loopback only
# (RELIABILITY.md "Soak"; run by hand, not part of CI).
#
# Each channel is its own live HLS origin: an ffmpeg process copies a pre-encoded test
# pattern in real time into a sliding 5-segment playlist (no re-encoding, so 20 channels
# cost little CPU), served by nginx on 127.0.0.1. freesky lists the channels from an M3U
# list on that nginx and VIEWERS clients (examples/ts_viewers.rs, spread round-robin over
# the channels' /api/stream/{id}.ts URLs) read continuous MPEG-TS for DURATION seconds.
#
# Reported: client errors (must be 0: every viewer got 200 and aligned MPEG-TS until the
# end), freesky's RSS at start (before the viewers), peak (sampled every second from
# /proc) and end (viewers gone, after SETTLE seconds), and its open file descriptors at
# start and end (ls /proc/PID/fd | wc -l). Exit status 1 when a client failed.
#
# Usage: bash scripts/soak.sh
# Environment (defaults in brackets):
#   VIEWERS [1000]  CHANNELS [20]  DURATION [600] seconds  SETTLE [10] seconds
#   RELOAD_EVERY [0] seconds: >0 changes the config file (the service's description)
#                   and POSTs /api/config/reload that often while the viewers watch;
#                   every reload must answer 200 and no viewer may notice
#   SKIP_BUILD [0]  1: use the already built binaries
#   KEEP [0]        1: keep the work dir (configs, logs, samples) and print its path
#   CARGO_TARGET_DIR is respected.
set -euo pipefail
cd "$(dirname "$0")/.."

VIEWERS=${VIEWERS:-1000}
CHANNELS=${CHANNELS:-20}
DURATION=${DURATION:-600}
SETTLE=${SETTLE:-10}
RELOAD_EVERY=${RELOAD_EVERY:-0}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP=${KEEP:-0}

stage() { printf '\n==> %s\n' "$*" >&2; }
die() {
  echo "error: $*" >&2
  exit 1
}
((VIEWERS > 0 && CHANNELS > 0 && DURATION > 0)) || die "VIEWERS, CHANNELS and DURATION must be > 0"

# --- tools ----------------------------------------------------------------------------
missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v ffmpeg >/dev/null 2>&1 || missing+=(ffmpeg)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if ((${#missing[@]})); then
  stage "installing ${missing[*]} with apt-get"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$NGINX" ] || die "nginx is still missing after apt-get"

# --- build ----------------------------------------------------------------------------
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
[ -n "$TARGET_DIR" ] || TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
FREESKY=$TARGET_DIR/release/freesky
VIEWERS_BIN=$TARGET_DIR/release/examples/ts_viewers
if [ "$SKIP_BUILD" != 1 ]; then
  stage "building freesky and ts_viewers (release)"
  cargo build --release --locked --bin freesky --example ts_viewers
fi
[ -x "$FREESKY" ] && [ -x "$VIEWERS_BIN" ] || die "binaries missing in $TARGET_DIR/release (run without SKIP_BUILD=1)"

# --- work dir, processes, cleanup -----------------------------------------------------
WORK=$(mktemp -d /tmp/freesky-soak.XXXXXX)
chmod 755 "$WORK" # nginx workers may run as another user and must read the files
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  if [ "$KEEP" = 1 ]; then
    echo "work dir kept: $WORK" >&2
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PICKED=" "
free_port() { # VAR: a free port below the ephemeral range
  local p
  for _ in $(seq 500); do
    p=$((20000 + RANDOM % 12000))
    case "$PICKED" in *" $p "*) continue ;; esac
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      PICKED+="$p "
      printf -v "$1" '%s' "$p"
      return 0
    fi
  done
  die "no free port found"
}
free_port ORIGIN
free_port FS

wait_http() { # URL SECONDS: until curl URL succeeds
  local url=$1 secs=${2:-30} i
  for ((i = 0; i < secs * 10; i++)); do
    curl -sf -o /dev/null --max-time 2 "$url" && return 0
    sleep 0.1
  done
  return 1
}

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# --- media: one pre-encoded loop, one live ffmpeg copy per channel ---------------------
stage "encoding the test pattern, starting $CHANNELS live origins"
WWW=$WORK/www
mkdir -p "$WWW/lists"
# 12 s, 320x180, ~300 kbit/s video + 48 kbit/s AAC, 2 s GOPs.
ffmpeg -hide_banner -loglevel error -y \
  -f lavfi -i testsrc=size=320x180:rate=25 -f lavfi -i sine=frequency=440:sample_rate=48000 \
  -t 12 -c:v libx264 -preset veryfast -pix_fmt yuv420p -b:v 300k -maxrate 300k -bufsize 300k \
  -g 50 -keyint_min 50 -sc_threshold 0 -c:a aac -b:a 48k -f mpegts "$WORK/src.ts"
{
  echo "#EXTM3U"
  for ((c = 1; c <= CHANNELS; c++)); do
    mkdir -p "$WWW/live/ch$c"
    ffmpeg -hide_banner -loglevel error -nostdin -re -stream_loop -1 -i "$WORK/src.ts" -c copy \
      -f hls -hls_time 2 -hls_list_size 5 -hls_flags delete_segments+temp_file \
      -hls_segment_filename "$WWW/live/ch$c/seg%05d.ts" "$WWW/live/ch$c/index.m3u8" \
      >"$WORK/ffmpeg-$c.log" 2>&1 &
    PIDS+=("$!")
    printf '#EXTINF:-1 tvg-id="Soak%03d.example",Soak %03d\nhttp://127.0.0.1:%s/live/ch%d/index.m3u8\n' \
      "$c" "$c" "$ORIGIN" "$c"
  done
} >"$WWW/lists/soak.m3u"

NG=$WORK/nginx
mkdir -p "$NG/logs"
cat >"$NG/nginx.conf" <<EOF
worker_processes 1;
pid $NG/nginx.pid;
error_log $NG/logs/error.log warn;
events { worker_connections 4096; }
http {
  include /etc/nginx/mime.types;
  default_type application/octet-stream;
  sendfile on;
  keepalive_requests 1000000;
  access_log off;
  client_body_temp_path $NG/client_temp;
  proxy_temp_path $NG/proxy_temp;
  fastcgi_temp_path $NG/fastcgi_temp;
  uwsgi_temp_path $NG/uwsgi_temp;
  scgi_temp_path $NG/scgi_temp;
  server {
    listen 127.0.0.1:$ORIGIN;
    root $WWW;
  }
}
EOF
"$NGINX" -e "$NG/logs/error.log" -p "$NG" -c "$NG/nginx.conf" -g 'daemon off;' &
PIDS+=("$!")
wait_http "http://127.0.0.1:$ORIGIN/lists/soak.m3u" 20 || die "nginx did not start: $(tail -5 "$NG/logs/error.log")"
for ((c = 1; c <= CHANNELS; c++)); do
  wait_http "http://127.0.0.1:$ORIGIN/live/ch$c/index.m3u8" 30 || die "live origin $c did not start: $(tail -3 "$WORK/ffmpeg-$c.log")"
done

# --- freesky ---------------------------------------------------------------------------
stage "starting freesky on :$FS"
mkdir -p "$WORK/fs/state"
cat >"$WORK/fs/freesky.toml" <<EOF
[server]
bind = "127.0.0.1:$FS"
state_dir = "$WORK/fs/state"

[[services]]
name = "Soak"
kind = "m3u"
description = "soak"
url = "http://127.0.0.1:$ORIGIN/lists/soak.m3u"
EOF
RUST_LOG=${RUST_LOG:-warn} "$FREESKY" serve --config "$WORK/fs/freesky.toml" >"$WORK/fs/log" 2>&1 &
FS_PID=$!
PIDS+=("$FS_PID")
wait_http "http://127.0.0.1:$FS/health" 30 || die "freesky did not start: $(tail -5 "$WORK/fs/log")"

IDS=$(curl -sf --max-time 30 "http://127.0.0.1:$FS/api/channels/all" | grep -o '"id":"soak-[^"]*"' | cut -d'"' -f4 | sort -u)
n_ids=$(echo "$IDS" | grep -c . || true)
[ "$n_ids" -eq "$CHANNELS" ] || die "freesky lists $n_ids soak channels, expected $CHANNELS"
URLS=""
for id in $IDS; do
  wait_http "http://127.0.0.1:$FS/api/stream/$id.m3u8" 20 || die "channel $id does not play"
  URLS+="${URLS:+,}http://127.0.0.1:$FS/api/stream/$id.ts"
done

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$FS_PID/status"; }
fds() { ls "/proc/$FS_PID/fd" | wc -l; }
mb() { awk -v k="$1" 'BEGIN { printf "%.1f MB", k / 1024 }'; }

RSS_START=$(rss_kb)
FD_START=$(fds)
stage "$VIEWERS viewers across $CHANNELS channels for $DURATION s (RSS $(mb "$RSS_START"), $FD_START fds)"
(
  while kill -0 "$FS_PID" 2>/dev/null; do
    echo "$(date +%s) $(rss_kb) $(fds)"
    sleep 1
  done
) >"$WORK/samples.txt" 2>/dev/null &
SAMPLER=$!
PIDS+=("$SAMPLER")
if ((RELOAD_EVERY > 0)); then
  # Live reloads while the viewers watch: each a real change (the description).
  (
    n=0 ok=0 until=$((SECONDS + DURATION - RELOAD_EVERY))
    while ((SECONDS < until)); do
      sleep "$RELOAD_EVERY"
      n=$((n + 1))
      sed -i "s/^description = .*/description = \"soak reload $n\"/" "$WORK/fs/freesky.toml"
      code=$(curl -s -o /dev/null -w '%{http_code}' -X POST --max-time 10 "http://127.0.0.1:$FS/api/config/reload" || true)
      [ "$code" = 200 ] && ok=$((ok + 1))
      echo "$n $ok" >"$WORK/reloads.txt"
    done
  ) &
  RELOADER=$!
  PIDS+=("$RELOADER")
fi
rc=0
"$VIEWERS_BIN" "$URLS" "$VIEWERS" "$DURATION" >"$WORK/viewers.txt" 2>&1 || rc=$?
if ((RELOAD_EVERY > 0)); then
  wait "$RELOADER" || true
fi
sleep "$SETTLE"
kill -0 "$FS_PID" 2>/dev/null || die "freesky died during the soak: $(tail -5 "$WORK/fs/log")"
RSS_END=$(rss_kb)
FD_END=$(fds)
kill "$SAMPLER" 2>/dev/null || true
RSS_PEAK=$(awk -v m="$RSS_START" '$2 > m { m = $2 } END { print m }' "$WORK/samples.txt")
FD_PEAK=$(awk -v m="$FD_START" '$3 > m { m = $3 } END { print m }' "$WORK/samples.txt")

field() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" "$WORK/viewers.txt" | head -1; }
errors=$(field errors)
with_data=$(field with_data)
ended=$(field ended_early)
sync_bad=$(field sync_bad)
client_errors=$((VIEWERS - ${with_data:-0} + ${errors:-0} + ${ended:-0} + ${sync_bad:-0}))

stage "result"
sed '/^RESULT /d' "$WORK/viewers.txt" | sed "s#$URLS#$CHANNELS channel URLs#" >&2
cat <<EOF
soak: $VIEWERS viewers across $CHANNELS channels for $DURATION s (ts_viewers exit $rc)
  client errors: $client_errors (no data: $((VIEWERS - ${with_data:-0})), errors: ${errors:-?}, ended early: ${ended:-?}, misaligned: ${sync_bad:-?})
  freesky RSS: start $(mb "$RSS_START"), peak $(mb "$RSS_PEAK"), end $(mb "$RSS_END") (${SETTLE} s after the viewers left)
  freesky open fds: start $FD_START, peak $FD_PEAK, end $FD_END
EOF
reloads_failed=0
if ((RELOAD_EVERY > 0)); then
  read -r reloads reloads_ok <"$WORK/reloads.txt" || { reloads=0 reloads_ok=0; }
  reloads_failed=$((reloads - reloads_ok))
  ((reloads > 0)) || reloads_failed=1
  echo "  config reloads while watching: $reloads_ok of $reloads answered 200 (one every $RELOAD_EVERY s)"
fi
cat <<EOF
  warnings in the freesky log: $(grep -c -i 'warn\|error' "$WORK/fs/log" || true)
EOF
if [ "$rc" -ne 0 ] || [ "$client_errors" -ne 0 ]; then
  echo "FAIL: client errors" >&2
  exit 1
fi
if [ "$reloads_failed" -ne 0 ]; then
  echo "FAIL: config reloads" >&2
  exit 1
fi
