#!/usr/bin/env bash
# Server load harness (BENCHMARKS.md; run by hand, not part of CI).
#
# Serves the same ~240 KB MPEG-TS segments, all on 127.0.0.1, several ways and hammers
# each with wrk:
#   direct       nginx static files (sendfile): the origin itself (the baseline)
#   nginx-proxy  nginx proxy_pass to the origin, injecting the Referer the origin demands,
#                tuned as a user would: pooled upstream connections (`keepalive 64`,
#                HTTP/1.1, `Connection ""`), 16k buffers, no temp files
#   nginx-proxy-untuned  the same without the tuning (HTTP/1.0 upstream, a new
#                connection per request, default buffers): the nginx of older runs,
#                kept for history
#   nginx-cache  nginx proxy_cache in front of the origin, warm (a caching proxy's hits)
#   fs-miss      freesky /proxy/ links, segment cache off: one upstream fetch per request
#   fs-hit       freesky /proxy/ links, segments already in freesky's cache
#   fs-coalesced freesky, segment cache off, all connections on ONE URL: concurrent
#                identical requests share one upstream fetch (informational)
#   nginx-playlist  nginx serving a 6-segment live-style media playlist statically
#   fs-playlist  freesky serving that playlist rewritten (`/api/stream/{id}.m3u8`, the
#                URL a player of the channel polls)
# then checks 1,000 concurrent viewers of one live channel's /api/stream/{id}.ts.
#
# The origin answers 403 without `Referer: http://bench.example/`, so every path proves
# the header is injected. Every row but fs-coalesced requests the same URLS distinct
# segment URLs (BENCHMARKS.md says why); each wrk thread walks its own slice of them, so
# no two requests in flight ask for the same URL and a cache-off freesky cannot share
# fetches (its "origin fetches / request" must be 1.000). Ratios are computed per
# repetition against the baselines measured in the same repetition, then the median is
# taken; the per-repetition ratios of the targets are listed too (the spread is the noise).
#
# Usage: bash scripts/bench-proxy.sh
# Environment (defaults in brackets):
#   DURATION [10s]  THREADS [2]  CONNECTIONS [16]   wrk -d/-t/-c of every run
#   REPEATS [3]     repetitions of the whole set of rows (medians are reported)
#   URLS [1000]     distinct segment URLs (`?v=K`) each run rotates through
#   VIEWERS [1000]  VIEWER_SECONDS [20]   the .ts viewers test; VIEWERS=0 skips it
#   SKIP_BUILD [0]  1: use the already built binaries
#   KEEP [0]        1: keep the work dir (configs, logs, access logs) and print its path
#   STRICT [0]      1: exit 1 when a target is missed or could not be checked
#   PROFILE [0]     1: after the measured runs, run fs-miss and fs-playlist once more under
#                   `perf record` / `perf stat` (not counted) and print freesky's top symbols
#   CARGO_TARGET_DIR is respected.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-16}
REPEATS=${REPEATS:-3}
URLS=${URLS:-1000}
VIEWERS=${VIEWERS:-1000}
VIEWER_SECONDS=${VIEWER_SECONDS:-20}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP=${KEEP:-0}
STRICT=${STRICT:-0}
PROFILE=${PROFILE:-0}
REFERER="http://bench.example/"

stage() { printf '\n==> %s\n' "$*" >&2; }
die() {
  echo "error: $*" >&2
  exit 1
}

((URLS > CONNECTIONS)) || die "URLS ($URLS) must exceed CONNECTIONS ($CONNECTIONS): no two requests in flight may share a URL"

# --- tools ----------------------------------------------------------------------------
missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v ffmpeg >/dev/null 2>&1 || missing+=(ffmpeg)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if ((${#missing[@]})); then
  stage "installing ${missing[*]} with apt-get"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian's package may start a system nginx on port 80; it is not ours and unused here.
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$NGINX" ] || die "nginx is still missing after apt-get"
command -v wrk >/dev/null || die "wrk is still missing after apt-get"
command -v cargo >/dev/null || die "cargo not found; install Rust from https://rustup.rs (stable >= 1.89)"

# --- build ----------------------------------------------------------------------------
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
[ -n "$TARGET_DIR" ] || TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
FREESKY=$TARGET_DIR/release/freesky
VIEWERS_BIN=$TARGET_DIR/release/examples/ts_viewers
if [ "$SKIP_BUILD" != 1 ]; then
  stage "cargo build --release (target dir $TARGET_DIR; a clean build takes ~8 min on 2 cores)"
  cargo build --release --locked --bin freesky --example ts_viewers
fi
[ -x "$FREESKY" ] || die "$FREESKY is missing (run without SKIP_BUILD=1)"

# --- work dir, processes, cleanup -----------------------------------------------------
WORK=$(mktemp -d /tmp/freesky-bench.XXXXXX)
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

# Free ports below the ephemeral range, so outgoing connections never take them.
PICKED=" "
free_port() {
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
free_port PROXY
free_port PLAIN
free_port PCACHE
free_port FS_MISS
free_port FS_HIT
free_port FS_TS

# Waits until `curl URL` succeeds (any 2xx), up to $2 seconds.
wait_http() {
  local url=$1 secs=${2:-30} i
  for ((i = 0; i < secs * 10; i++)); do
    curl -sf -o /dev/null --max-time 2 "$url" && return 0
    sleep 0.1
  done
  return 1
}

# Raise the open-files limit for everything started from here (1,000 viewers = 1,000
# sockets on each side).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# --- media: ~240 KB segments, a VOD playlist of URLS distinct URLs, the M3U list ------
stage "generating test media with ffmpeg"
WWW=$WORK/www
mkdir -p "$WWW/hls" "$WWW/live" "$WWW/lists"
# 20 s, 640x360 test pattern, constant 850 kbit/s video + 64 kbit/s AAC, 2 s GOPs.
ffmpeg -hide_banner -loglevel error -y \
  -f lavfi -i testsrc=size=640x360:rate=25 -f lavfi -i sine=frequency=440:sample_rate=48000 \
  -t 20 -c:v libx264 -preset veryfast -pix_fmt yuv420p \
  -b:v 850k -minrate 850k -maxrate 850k -bufsize 850k -x264-params nal-hrd=cbr \
  -g 50 -keyint_min 50 -sc_threshold 0 -c:a aac -b:a 64k -f mpegts "$WORK/src.ts"
ffmpeg -hide_banner -loglevel error -y -i "$WORK/src.ts" -c copy -f hls -hls_time 2 \
  -hls_list_size 0 -hls_playlist_type vod -hls_segment_filename "$WWW/hls/seg%02d.ts" \
  "$WWW/hls/orig.m3u8"
SEGS=()
while read -r line; do
  case "$line" in seg*.ts) SEGS+=("$line") ;; esac
done <"$WWW/hls/orig.m3u8"
((${#SEGS[@]})) || die "ffmpeg wrote no segments"
# The bench playlist: URLS entries cycling through the segments, each URL distinct
# (`?v=K`; nginx serves the file and ignores the query, every proxy sees a new URL).
{
  echo "#EXTM3U"
  echo "#EXT-X-VERSION:3"
  echo "#EXT-X-TARGETDURATION:2"
  echo "#EXT-X-MEDIA-SEQUENCE:0"
  echo "#EXT-X-PLAYLIST-TYPE:VOD"
  for ((i = 0; i < URLS; i++)); do
    s=${SEGS[i % ${#SEGS[@]}]}
    if ((i > 0 && i % ${#SEGS[@]} == 0)); then echo "#EXT-X-DISCONTINUITY"; fi
    echo "#EXTINF:2.000000,"
    echo "$s?v=$i"
  done
  echo "#EXT-X-ENDLIST"
} >"$WWW/hls/index.m3u8"
for ((i = 0; i < URLS; i++)); do
  echo "/hls/${SEGS[i % ${#SEGS[@]}]}?v=$i"
done >"$WORK/paths-nginx.txt"
SEG_BYTES=$(($(cat "$WWW"/hls/seg*.ts | wc -c) / ${#SEGS[@]}))
# A live-style media playlist (6 segments, no end): what players poll every few seconds.
{
  echo "#EXTM3U"
  echo "#EXT-X-VERSION:3"
  echo "#EXT-X-TARGETDURATION:2"
  echo "#EXT-X-MEDIA-SEQUENCE:100"
  for ((i = 0; i < 6; i++)); do
    echo "#EXTINF:2.000000,"
    echo "${SEGS[i % ${#SEGS[@]}]}?v=$i"
  done
} >"$WWW/hls/small.m3u8"
echo "/hls/small.m3u8" >"$WORK/paths-nginx-playlist.txt"
echo "/api/stream/bench-small.m3u8" >"$WORK/paths-fs-playlist.txt"
cat >"$WWW/lists/bench.m3u" <<EOF
#EXTM3U
#EXTINF:-1 tvg-id="Bench.example",Bench
#EXTVLCOPT:http-referrer=$REFERER
http://127.0.0.1:$ORIGIN/hls/index.m3u8
#EXTINF:-1 tvg-id="BenchLive.example",Bench Live
#EXTVLCOPT:http-referrer=$REFERER
http://127.0.0.1:$ORIGIN/live/index.m3u8
#EXTINF:-1 tvg-id="BenchSmall.example",Bench Small
#EXTVLCOPT:http-referrer=$REFERER
http://127.0.0.1:$ORIGIN/hls/small.m3u8
EOF

# --- nginx: origin, proxy_pass, proxy_cache -------------------------------------------
stage "starting nginx (origin :$ORIGIN, proxy_pass :$PROXY, untuned proxy_pass :$PLAIN, proxy_cache :$PCACHE)"
NG=$WORK/nginx
mkdir -p "$NG/logs" "$NG/pcache"
cat >"$NG/nginx.conf" <<EOF
worker_processes auto;
pid $NG/nginx.pid;
error_log $NG/logs/error.log warn;
events { worker_connections 8192; }
http {
  include /etc/nginx/mime.types;
  default_type application/octet-stream;
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  keepalive_requests 100000;
  access_log off;
  client_body_temp_path $NG/client_temp;
  proxy_temp_path $NG/proxy_temp;
  fastcgi_temp_path $NG/fastcgi_temp;
  uwsgi_temp_path $NG/uwsgi_temp;
  scgi_temp_path $NG/scgi_temp;
  # One line per origin request: time, status, bytes, path (counted by the script).
  log_format bench '\$msec \$status \$body_bytes_sent \$request_uri';
  proxy_cache_path $NG/pcache levels=1:2 keys_zone=bench:10m max_size=2g inactive=1h use_temp_path=off;

  upstream origin {
    server 127.0.0.1:$ORIGIN;
    keepalive 64;
  }

  # The origin: static files; segments and playlists need the channel's Referer.
  server {
    listen 127.0.0.1:$ORIGIN;
    root $WWW;
    access_log $NG/logs/origin.log bench buffer=256k flush=1s;
    location /lists/ { }
    location / {
      if (\$http_referer != "$REFERER") { return 403; }
    }
  }

  # A reverse proxy injecting the header (never caches), tuned as a user would tune
  # it: pooled upstream connections, 16k buffers, nothing spilled to temp files.
  server {
    listen 127.0.0.1:$PROXY;
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Referer $REFERER;
      proxy_buffer_size 16k;
      proxy_buffers 32 16k;
      proxy_busy_buffers_size 64k;
      proxy_max_temp_file_size 0;
    }
  }

  # The same without the tuning (older runs' baseline, kept for history): HTTP/1.0
  # to the origin, so a new upstream connection per request, and default buffers.
  server {
    listen 127.0.0.1:$PLAIN;
    location / {
      proxy_pass http://127.0.0.1:$ORIGIN;
      proxy_set_header Referer $REFERER;
    }
  }

  # A caching reverse proxy (warmed before it is measured).
  server {
    listen 127.0.0.1:$PCACHE;
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Referer $REFERER;
      proxy_buffers 32 16k;
      proxy_cache bench;
      proxy_cache_key \$request_uri;
      proxy_cache_valid 200 1h;
      proxy_cache_lock on;
    }
  }
}
EOF
"$NGINX" -t -q -e "$NG/logs/error.log" -p "$NG" -c "$NG/nginx.conf"
"$NGINX" -e "$NG/logs/error.log" -p "$NG" -c "$NG/nginx.conf" -g 'daemon off;' &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
wait_http "http://127.0.0.1:$ORIGIN/lists/bench.m3u" 20 || die "nginx did not start: $(tail -5 "$NG/logs/error.log")"

# --- freesky: three instances (cache off, cache on, the .ts viewers test) -------------
start_freesky() { # NAME PORT SEGMENT_CACHE_MB
  local name=$1 port=$2 mb=$3 dir=$WORK/$1
  mkdir -p "$dir/state"
  cat >"$dir/freesky.toml" <<EOF
[server]
bind = "127.0.0.1:$port"
state_dir = "$dir/state"
# Every viewer of the .ts test comes from 127.0.0.1: no per-client cap (default 256).
max_connections_per_client = 0

[cache]
segment_cache_mb = $mb
segment_ttl = "1h"

[[services]]
name = "Bench"
kind = "m3u"
url = "http://127.0.0.1:$ORIGIN/lists/bench.m3u"
EOF
  RUST_LOG=${RUST_LOG:-warn} "$FREESKY" serve --config "$dir/freesky.toml" >"$dir/log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  printf -v "PID_${name//-/_}" '%s' "$pid"
  wait_http "http://127.0.0.1:$port/health" 30 || die "freesky $name did not start: $(tail -5 "$dir/log")"
}
stage "starting freesky (cache off :$FS_MISS, cache on :$FS_HIT)"
start_freesky fs-miss "$FS_MISS" 0
start_freesky fs-hit "$FS_HIT" 1024

# The /proxy/ paths of the bench channel, in playlist order.
proxy_paths() { # PORT OUT
  local i
  for ((i = 0; i < 50; i++)); do
    if curl -sf --max-time 10 "http://127.0.0.1:$1/api/stream/bench.m3u8" -o "$2.m3u8"; then
      sed -n 's#^http://[^/]*\(/proxy/.*\)$#\1#p' "$2.m3u8" >"$2"
      [ "$(wc -l <"$2")" -eq "$URLS" ] && return 0
    fi
    sleep 0.2
  done
  die "freesky on :$1 did not list the bench channel's $URLS segments: $(curl -s "http://127.0.0.1:$1/api/stream/bench.m3u8" | head -c 300)"
}
proxy_paths "$FS_MISS" "$WORK/paths-fs-miss.txt"
proxy_paths "$FS_HIT" "$WORK/paths-fs-hit.txt"

# --- sanity: the header check bites, every path serves the same bytes -----------------
stage "checking every path serves the segment (and the origin refuses a missing Referer)"
first_nginx=$(head -1 "$WORK/paths-nginx.txt")
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$ORIGIN$first_nginx")
[ "$code" = 403 ] || die "the origin answered $code without a Referer; expected 403"
want=$(cksum <"$WWW/hls/${SEGS[0]}")
check_same() { # LABEL URL [curl args]
  local label=$1 url=$2
  shift 2
  local got
  got=$(curl -sf --max-time 10 "$@" "$url" | cksum) || die "$label: $url failed"
  [ "$got" = "$want" ] || die "$label: $url did not return the origin's bytes"
}
check_same direct "http://127.0.0.1:$ORIGIN$first_nginx" -H "Referer: $REFERER"
check_same nginx-proxy "http://127.0.0.1:$PROXY$first_nginx"
check_same nginx-proxy-untuned "http://127.0.0.1:$PLAIN$first_nginx"
check_same nginx-cache "http://127.0.0.1:$PCACHE$first_nginx"
check_same fs-miss "http://127.0.0.1:$FS_MISS$(head -1 "$WORK/paths-fs-miss.txt")"
check_same fs-hit "http://127.0.0.1:$FS_HIT$(head -1 "$WORK/paths-fs-hit.txt")"
n=$(curl -sf --max-time 10 "http://127.0.0.1:$FS_HIT$(cat "$WORK/paths-fs-playlist.txt")" | grep -c '/proxy/') ||
  die "fs-playlist: the small playlist did not come back rewritten"
[ "$n" = 6 ] || die "fs-playlist: $n proxy links in the small playlist, expected 6"

stage "warming the caches (nginx proxy_cache and freesky fs-hit: every URL once)"
sed "s#^#http://127.0.0.1:$PCACHE#" "$WORK/paths-nginx.txt" >"$WORK/warm.txt"
sed "s#^#http://127.0.0.1:$FS_HIT#" "$WORK/paths-fs-hit.txt" >>"$WORK/warm.txt"
xargs -P 4 -n 20 curl -sf <"$WORK/warm.txt" >/dev/null || die "warming failed"
sleep 1 # freesky inserts a finished body into its cache just after sending it

# --- the wrk runs -----------------------------------------------------------------------
cat >"$WORK/rotate.lua" <<'EOF'
-- Each wrk thread walks its own slice of the paths in BENCH_PATHS, round and round, so
-- two requests in flight never ask for the same URL (threads running at different
-- speeds through one shared list would meet and let a proxy coalesce them).
local created = 0
function setup(thread)
  thread:set("tid", created)
  created = created + 1
end
function init(args)
  local all = {}
  for line in io.lines(os.getenv("BENCH_PATHS")) do
    if #line > 0 then all[#all + 1] = line end
  end
  local threads = tonumber(os.getenv("BENCH_THREADS")) or 1
  local t = tid or 0
  paths = {}
  for k = math.floor(t * #all / threads) + 1, math.floor((t + 1) * #all / threads) do
    paths[#paths + 1] = all[k]
  end
  if #paths == 0 then paths = all end
  i = 0
end
function request()
  i = i % #paths + 1
  return wrk.format(nil, paths[i])
end
EOF

TICK=$(getconf CLK_TCK)
cpu_ticks() { # PID...: utime+stime of these processes, in clock ticks
  local t=0 p f
  for p in "$@"; do
    f=$(cat "/proc/$p/stat" 2>/dev/null) || continue
    f=${f##*) }
    read -r -a a <<<"$f"
    t=$((t + a[11] + a[12]))
  done
  echo "$t"
}
nginx_pids() { echo "$NGINX_PID" $(pgrep -P "$NGINX_PID" || true); }
freesky_pids() { echo "${PID_fs_miss:-}" "${PID_fs_hit:-}" "${PID_fs_ts:-}"; }
# Busy time of the whole machine, in clock ticks, counted the way process times are.
# With tick-based accounting (CONFIG_IRQ_TIME_ACCOUNTING off, e.g. this VM's kernel),
# interrupt and softirq ticks (loopback TCP delivery is a large part of them here) are
# also added to the stime of the process they interrupted, so they are counted as busy
# time too; leaving them out made "other CPU" come out negative (shown as 0). With IRQ
# time accounting on, they are charged to no process and are left out.
IRQ_IN_TASKS=1
for cfg in /proc/config.gz "/boot/config-$(uname -r)"; do
  [ -r "$cfg" ] || continue
  if { zcat -f "$cfg" 2>/dev/null || true; } | grep -q '^CONFIG_IRQ_TIME_ACCOUNTING=y'; then IRQ_IN_TASKS=0; fi
  break
done
busy_ticks() { awk -v irq="$IRQ_IN_TASKS" '$1 == "cpu" { print $2 + $3 + $4 + irq * ($7 + $8); exit }' /proc/stat; }
# CPU used by this shell's finished children (wrk), in clock ticks. `times` must run in
# this shell, not in a $(...) subshell, which has no children of its own.
child_ticks() { # OUT_VAR
  times >"$WORK/times.txt"
  printf -v "$1" '%s' "$(awk -v hz="$TICK" 'NR == 2 { t = 0; for (i = 1; i <= 2; i++) {
    split($i, p, "m"); t += p[1] * 60 + p[2] } printf "%d", t * hz }' "$WORK/times.txt")"
}
origin_lines() { if [ -f "$NG/logs/origin.log" ]; then wc -l <"$NG/logs/origin.log"; else echo 0; fi; }

ROWS=(direct nginx-proxy nginx-proxy-untuned nginx-cache fs-miss fs-hit fs-coalesced nginx-playlist fs-playlist)
head -1 "$WORK/paths-fs-miss.txt" >"$WORK/paths-fs-coalesced.txt"
row_url() {
  case $1 in
  direct | nginx-playlist) echo "http://127.0.0.1:$ORIGIN" ;;
  nginx-proxy) echo "http://127.0.0.1:$PROXY" ;;
  nginx-proxy-untuned) echo "http://127.0.0.1:$PLAIN" ;;
  nginx-cache) echo "http://127.0.0.1:$PCACHE" ;;
  fs-miss | fs-coalesced) echo "http://127.0.0.1:$FS_MISS" ;;
  fs-hit | fs-playlist) echo "http://127.0.0.1:$FS_HIT" ;;
  esac
}
row_paths() {
  case $1 in
  fs-miss | fs-hit | fs-coalesced | nginx-playlist | fs-playlist) echo "$WORK/paths-$1.txt" ;;
  *) echo "$WORK/paths-nginx.txt" ;;
  esac
}
row_freesky_pid() {
  case $1 in
  fs-miss | fs-coalesced) echo "$PID_fs_miss" ;;
  fs-hit | fs-playlist) echo "$PID_fs_hit" ;;
  *) echo "" ;;
  esac
}

# wrk's sizes and times to MB (MiB, as wrk prints them) and ms.
to_mb() { awk -v v="$1" 'BEGIN { n = v + 0; u = v; sub(/^[0-9.]+/, "", u);
  f = (u == "GB") ? 1024 : (u == "MB") ? 1 : (u == "KB") ? 1 / 1024 : 1 / 1048576; printf "%.1f", n * f }'; }
to_ms() { awk -v v="$1" 'BEGIN { n = v + 0; u = v; sub(/^[0-9.]+/, "", u);
  f = (u == "s") ? 1000 : (u == "ms") ? 1 : (u == "us") ? 0.001 : 60000; printf "%.2f", n * f }'; }

RESULTS=$WORK/results.tsv # rep row req_s mb_s p50_ms p99_ms requests errors origin_fetches fs_cpu_us ng_cpu_us other_cores
: >"$RESULTS"
run_row() { # REP ROW
  local rep=$1 row=$2 url paths fpid out
  url=$(row_url "$row")
  paths=$(row_paths "$row")
  fpid=$(row_freesky_pid "$row")
  out=$WORK/wrk-$rep-$row.txt
  local o0 f0 n0 a0 w0 b0 t0
  o0=$(origin_lines)
  f0=$([ -n "$fpid" ] && cpu_ticks "$fpid" || echo 0)
  n0=$(cpu_ticks $(nginx_pids))
  a0=$(cpu_ticks $(freesky_pids))
  child_ticks w0
  b0=$(busy_ticks)
  t0=$(date +%s%N)
  BENCH_PATHS=$paths BENCH_THREADS=$THREADS wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" \
    --latency -s "$WORK/rotate.lua" -H "Referer: $REFERER" "$url/" >"$out" 2>&1 ||
    die "wrk failed on $row: $(cat "$out")"
  local f1 n1 a1 w1 b1 t1
  f1=$([ -n "$fpid" ] && cpu_ticks "$fpid" || echo 0)
  n1=$(cpu_ticks $(nginx_pids))
  a1=$(cpu_ticks $(freesky_pids))
  child_ticks w1
  b1=$(busy_ticks)
  t1=$(date +%s%N)
  # CPU the machine spent on anything but nginx, freesky and wrk during the run, in
  # cores (the machine is shared: this shows how noisy the run was).
  local other
  other=$(awk -v b=$((b1 - b0)) -v o=$((n1 - n0 + a1 - a0 + w1 - w0)) -v ns=$((t1 - t0)) -v hz="$TICK" \
    'BEGIN { x = (b - o) / hz / (ns / 1e9); printf "%.2f", (x < 0 ? 0 : x) }')
  sleep 2 # the origin's access log is flushed every second
  local o1
  o1=$(origin_lines)
  local rps tps p50 p99 reqs non2xx sockerr
  rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
  tps=$(to_mb "$(awk '/^Transfer\/sec:/ { print $2 }' "$out")")
  p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$out")")
  p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")
  reqs=$(awk '/requests in/ { print $1 }' "$out")
  non2xx=$(awk -F': ' '/Non-2xx/ { print $2 }' "$out")
  sockerr=$(awk '/Socket errors/ { gsub(/[^0-9 ]/, ""); s = 0; for (i = 1; i <= NF; i++) s += $i; print s }' "$out")
  local errors=$((${non2xx:-0} + ${sockerr:-0}))
  [ -n "$rps" ] && [ -n "$reqs" ] || die "could not read wrk's output for $row: $(cat "$out")"
  local fs_us=0 ng_us
  if [ -n "$fpid" ]; then fs_us=$(((f1 - f0) * 1000000 / TICK / (reqs > 0 ? reqs : 1))); fi
  ng_us=$(((n1 - n0) * 1000000 / TICK / (reqs > 0 ? reqs : 1)))
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$rep" "$row" "$rps" "$tps" "$p50" "$p99" \
    "$reqs" "$errors" "$((o1 - o0))" "$fs_us" "$ng_us" "$other" >>"$RESULTS"
  printf '    %-12s %9.0f req/s %8.1f MB/s  p50 %7s ms  p99 %7s ms  errors %s  origin fetches %s  other CPU %s cores\n' \
    "$row" "$rps" "$tps" "$p50" "$p99" "$errors" "$((o1 - o0))" "$other" >&2
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
stage "wrk -t$THREADS -c$CONNECTIONS -d$DURATION, $URLS distinct ~$((SEG_BYTES / 1000)) KB segment URLs, $REPEATS repetitions"
for ((rep = 1; rep <= REPEATS; rep++)); do
  echo "  repetition $rep/$REPEATS" >&2
  order=("${ROWS[@]}")
  if ((rep % 2 == 0)); then # alternate the order so no row always runs first or last
    order=()
    for ((k = ${#ROWS[@]} - 1; k >= 0; k--)); do order+=("${ROWS[k]}"); done
  fi
  for row in "${order[@]}"; do run_row "$rep" "$row"; done
done

# Profiles: the same wrk load once more with perf attached to freesky (not counted in
# the results: sampling costs a little).
profile_row() { # ROW
  local row=$1 fpid url paths rec st
  fpid=$(row_freesky_pid "$row")
  url=$(row_url "$row")
  paths=$(row_paths "$row")
  perf record -F 1999 -p "$fpid" -o "$WORK/perf-$row.data" >/dev/null 2>&1 &
  rec=$!
  perf stat -e task-clock,context-switches,cpu-migrations,page-faults -p "$fpid" \
    -o "$WORK/perfstat-$row.txt" >/dev/null 2>&1 &
  st=$!
  sleep 0.5
  BENCH_PATHS=$paths BENCH_THREADS=$THREADS wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" \
    --latency -s "$WORK/rotate.lua" -H "Referer: $REFERER" "$url/" >"$WORK/wrk-profile-$row.txt" 2>&1 || true
  kill -INT "$rec" "$st" 2>/dev/null || true
  wait "$rec" "$st" 2>/dev/null || true
  local reqs
  reqs=$(awk '/requests in/ { print $1 }' "$WORK/wrk-profile-$row.txt")
  {
    echo "== $row under perf: $reqs requests"
    grep -E 'task-clock|context-switches|cpu-migrations|page-faults' "$WORK/perfstat-$row.txt" || true
    perf report -i "$WORK/perf-$row.data" --no-children --sort dso,symbol --percent-limit 0.7 --stdio 2>/dev/null |
      grep -v '^#' | grep -v '^$' | head -45
  } >"$WORK/profile-$row.txt"
  cat "$WORK/profile-$row.txt" >&2
}
if [ "$PROFILE" = 1 ]; then
  command -v perf >/dev/null || die "PROFILE=1 needs perf"
  stage "profiles (perf, not counted)"
  for row in fs-miss fs-playlist; do profile_row "$row"; done
fi

rss_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
MISS_RSS=$(rss_kb "$PID_fs_miss" VmRSS)
MISS_HWM=$(rss_kb "$PID_fs_miss" VmHWM)
HIT_RSS=$(rss_kb "$PID_fs_hit" VmRSS)
HIT_HWM=$(rss_kb "$PID_fs_hit" VmHWM)

# --- summary ----------------------------------------------------------------------------
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) { print "nan"; exit }
  print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
col() { awk -F'\t' -v r="$1" -v c="$2" '$2 == r { print $c }' "$RESULTS"; }
# Median over repetitions of (row A / row B) in the same repetition.
ratio() { # ROW_A ROW_B COLUMN
  awk -F'\t' -v a="$1" -v b="$2" -v c="$3" '$2 == a { x[$1] = $c } $2 == b { y[$1] = $c }
    END { for (r in x) if (y[r] > 0) printf "%.3f\n", x[r] / y[r] }' "$RESULTS" | median
}
fmt_ratio() { awk -v v="$1" 'BEGIN { printf "%.2fx", v }'; }
# The per-repetition ratios, in repetition order: "0.91 0.85 1.02".
ratios() { # ROW_A ROW_B COLUMN
  awk -F'\t' -v a="$1" -v b="$2" -v c="$3" '$2 == a { x[$1] = $c } $2 == b { y[$1] = $c }
    END { for (r = 1; r in x; r++) printf "%s%.2f", (r > 1 ? " " : ""), (y[r] > 0 ? x[r] / y[r] : 0) }' "$RESULTS"
}

SUMMARY=$WORK/summary.md
{
  commit=$(git rev-parse --short HEAD 2>/dev/null || echo "? (not a git checkout)")
  if git rev-parse --git-dir >/dev/null 2>&1 && ! git diff --quiet HEAD -- src Cargo.toml Cargo.lock; then
    commit+=" (with uncommitted changes in src/ or Cargo.*)"
  fi
  echo "### Run of $(date -u +%Y-%m-%dT%H:%MZ), commit $commit"
  echo
  echo "$(nproc) cores, wrk -t$THREADS -c$CONNECTIONS -d$DURATION, $URLS distinct segment URLs of ~$((SEG_BYTES / 1000)) KB, medians of $REPEATS repetitions; load average before the runs: $LOAD_BEFORE. \"other CPU\" is what the rest of the machine used during a run (shared machine: the noise)."
  echo
  echo "| row | req/s | MB/s | p50 ms | p99 ms | errors | origin fetches / request | freesky CPU µs / request | nginx CPU µs / request | other CPU (cores) | vs nginx-proxy | vs direct |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  for row in "${ROWS[@]}"; do
    rps=$(col "$row" 3 | median)
    mbs=$(col "$row" 4 | median)
    p50=$(col "$row" 5 | median)
    p99=$(col "$row" 6 | median)
    errs=$(col "$row" 8 | awk '{ s += $1 } END { print s + 0 }')
    fetch=$(awk -F'\t' -v r="$row" '$2 == r { o += $9; q += $7 } END { printf "%.3f", q ? o / q : 0 }' "$RESULTS")
    fs_us=$(col "$row" 10 | median)
    ng_us=$(col "$row" 11 | median)
    other=$(col "$row" 12 | median)
    [ "${row#fs-}" != "$row" ] || fs_us="-"
    printf '| %s | %.0f | %.0f | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$row" "$rps" "$mbs" "$p50" "$p99" \
      "$errs" "$fetch" "$fs_us" "$ng_us" "$other" "$(fmt_ratio "$(ratio "$row" nginx-proxy 3)")" "$(fmt_ratio "$(ratio "$row" direct 3)")"
  done
  echo
  echo "Ratios are medians of per-repetition ratios of req/s. freesky RSS after the runs:" \
    "fs-miss $((MISS_RSS / 1024)) MB (peak $((MISS_HWM / 1024)) MB)," \
    "fs-hit $((HIT_RSS / 1024)) MB (peak $((HIT_HWM / 1024)) MB, holding ~$((URLS * SEG_BYTES / 1000000)) MB of segments)."
} >"$SUMMARY"

MISS_RATIO=$(ratio fs-miss nginx-proxy 3)
MISS_P99=$(ratio fs-miss nginx-proxy 6)
HIT_RATIO=$(ratio fs-hit direct 3)
LIST_RATIO=$(ratio fs-playlist nginx-playlist 3)
VERDICTS=()
verdict() { VERDICTS+=("$1"); }
check() { # VALUE OP LIMIT TEXT: PASS when `VALUE OP LIMIT` holds
  if awk -v v="$1" -v l="$3" -v op="$2" 'BEGIN { exit !((op == ">=") ? v >= l : v <= l) }'; then
    verdict "PASS  $4"
  else
    verdict "FAIL  $4"
  fi
}
check "$MISS_RATIO" ">=" 1.0 "cache miss >= 1.0x tuned nginx-proxy: $(fmt_ratio "$MISS_RATIO") (per repetition: $(ratios fs-miss nginx-proxy 3); vs the untuned nginx: $(fmt_ratio "$(ratio fs-miss nginx-proxy-untuned 3)"))"
check "$MISS_P99" "<=" 2.0 "cache-miss p99 <= 2x tuned nginx-proxy's: $(fmt_ratio "$MISS_P99") (per repetition: $(ratios fs-miss nginx-proxy 6); p99 $(col fs-miss 6 | median) ms vs $(col nginx-proxy 6 | median) ms)"
check "$HIT_RATIO" ">=" 1.0 "cache hit >= 1.0x nginx sendfile of the file (direct): $(fmt_ratio "$HIT_RATIO") (per repetition: $(ratios fs-hit direct 3); vs warm nginx proxy_cache: $(fmt_ratio "$(ratio fs-hit nginx-cache 3)"))"
check "$LIST_RATIO" ">=" 0.6 "rewritten playlist >= 0.6x nginx serving it statically: $(fmt_ratio "$LIST_RATIO") (per repetition: $(ratios fs-playlist nginx-playlist 3); $(col fs-playlist 3 | median | xargs printf '%.0f') vs $(col nginx-playlist 3 | median | xargs printf '%.0f') req/s)"

for row in "${ROWS[@]}"; do
  errs=$(col "$row" 8 | awk '{ s += $1 } END { print s + 0 }')
  if [ "$errs" -gt 0 ]; then
    verdict "FAIL  $row: $errs non-2xx answers or socket errors (see wrk's output; KEEP=1 keeps it)"
  fi
done

# --- 1,000 .ts viewers of one live channel --------------------------------------------
ts_test() {
  stage "live origin: ffmpeg writes a sliding 5-segment playlist in real time"
  ffmpeg -hide_banner -loglevel error -nostdin -re -stream_loop -1 -i "$WORK/src.ts" -c copy \
    -f hls -hls_time 2 -hls_list_size 5 -hls_flags delete_segments+temp_file \
    -hls_segment_filename "$WWW/live/seg%05d.ts" "$WWW/live/index.m3u8" >"$WORK/ffmpeg-live.log" 2>&1 &
  PIDS+=("$!")
  local i n=0
  for ((i = 0; i < 200; i++)); do
    n=$(grep -c '^seg' "$WWW/live/index.m3u8" 2>/dev/null || true)
    [ "${n:-0}" -ge 3 ] && break
    sleep 0.1
  done
  [ "${n:-0}" -ge 3 ] || {
    verdict "FAIL  $TS_LABEL: the live origin did not start: $(tail -3 "$WORK/ffmpeg-live.log")"
    return
  }

  stage "starting freesky for the viewers test (:$FS_TS, default cache)"
  start_freesky fs-ts "$FS_TS" 256
  local url="http://127.0.0.1:$FS_TS/api/stream/bench-live.ts"
  for ((i = 0; i < 50; i++)); do
    curl -sf -o /dev/null --max-time 5 "http://127.0.0.1:$FS_TS/api/stream/bench-live.m3u8" && break
    sleep 0.2
  done
  local code
  code=$(curl -s -o "$WORK/ts-probe.bin" -w '%{http_code}' --max-time 3 "$url" || true)
  if [ "$code" = 404 ]; then
    TS_SUMMARY="SKIPPED: .ts endpoint not available ($url answered HTTP 404: $(head -c 200 "$WORK/ts-probe.bin"))"
    verdict "SKIP  $TS_LABEL: .ts endpoint not available (HTTP 404)"
    echo "SKIPPED: .ts endpoint not available ($url answered HTTP 404)" >&2
    return
  fi
  if [ "$code" != 200 ]; then
    TS_SUMMARY="$url answered HTTP $code: $(head -c 300 "$WORK/ts-probe.bin")"
    verdict "FAIL  $TS_LABEL: $TS_SUMMARY"
    return
  fi

  stage "$VIEWERS concurrent viewers of $url for $VIEWER_SECONDS s"
  sleep 3
  local pid=$PID_fs_ts peak=0 t0 t1 rc=0
  (while kill -0 "$pid" 2>/dev/null; do rss_kb "$pid" VmRSS; sleep 0.5; done >"$WORK/ts-rss.txt") &
  local sampler=$!
  t0=$(date +%s.%N)
  "$VIEWERS_BIN" "$url" "$VIEWERS" "$VIEWER_SECONDS" >"$WORK/ts-viewers.txt" 2>&1 || rc=$?
  t1=$(date +%s.%N)
  kill "$sampler" 2>/dev/null || true
  wait "$sampler" 2>/dev/null || true
  cat "$WORK/ts-viewers.txt" >&2
  local hwm rss
  hwm=$(rss_kb "$pid" VmHWM)
  rss=$(rss_kb "$pid" VmRSS)
  peak=$(sort -n "$WORK/ts-rss.txt" | tail -1)
  sleep 2 # access log flush
  # Upstream requests per live segment, over the whole test (the probe included): only
  # freesky asks the origin for /live/ segments.
  awk '$4 ~ /^\/live\/seg/ { n[$4]++ } END { for (p in n) print n[p], p }' "$NG/logs/origin.log" |
    sort -k2 >"$WORK/ts-fetches.txt"
  local segs dup playlists result
  segs=$(wc -l <"$WORK/ts-fetches.txt")
  dup=$(awk '$1 != 1' "$WORK/ts-fetches.txt" | wc -l)
  playlists=$(awk -v a="$t0" -v b="$t1" '$1 >= a && $1 <= b && $4 ~ /^\/live\/index/ { n++ } END { print n + 0 }' "$NG/logs/origin.log")
  result=$(grep '^RESULT ' "$WORK/ts-viewers.txt" || true)
  field() { sed -n "s/.* $1=\([-0-9]*\).*/\1/p" <<<"$result"; }
  local with_data viewers_n
  with_data=$(field with_data)
  viewers_n=$(field viewers)
  TS_SUMMARY="$VIEWERS viewers for ${VIEWER_SECONDS}s: ${with_data:-?} got data"
  TS_SUMMARY+=" (errors $(field errors), ended early $(field ended_early), broken TS alignment $(field sync_bad),"
  TS_SUMMARY+=" median $(awk -v b="$(field bytes_median)" -v s="$VIEWER_SECONDS" 'BEGIN { printf "%.2f", b * 8 / s / 1e6 }') Mbit/s per viewer,"
  TS_SUMMARY+=" median first byte $(field ttfb_median_ms) ms; ts_viewers exit $rc);"
  TS_SUMMARY+=" $segs live segments fetched from the origin, $dup of them more than once;"
  TS_SUMMARY+=" $playlists playlist fetches while the viewers watched; freesky RSS peak $((hwm / 1024)) MB (VmHWM; sampled max $((${peak:-0} / 1024)) MB, $((rss / 1024)) MB at the end)"
  echo "$TS_SUMMARY" >&2
  if [ "$dup" -gt 0 ]; then
    echo "segments fetched more than once:" >&2
    awk '$1 != 1' "$WORK/ts-fetches.txt" | head -20 >&2
  fi
  if [ -n "$with_data" ] && [ "$with_data" = "$viewers_n" ] && [ "$rc" = 0 ] && [ "$segs" -gt 0 ] &&
    [ "$dup" = 0 ] && [ "$hwm" -lt $((200 * 1024)) ]; then
    if [ "$VIEWERS" -ge 1000 ]; then
      verdict "PASS  $TS_LABEL: $TS_SUMMARY"
    else
      verdict "SKIP  $TS_LABEL: every check passed, but with VIEWERS=$VIEWERS, not 1,000: $TS_SUMMARY"
    fi
  else
    verdict "FAIL  $TS_LABEL: $TS_SUMMARY"
  fi
}
TS_LABEL="1,000 .ts viewers (one upstream fetch per segment, RSS < 200 MB)"
TS_SUMMARY="not run (VIEWERS=0)"
if [ "$VIEWERS" -gt 0 ]; then ts_test; else verdict "SKIP  $TS_LABEL: not run (VIEWERS=0)"; fi

{
  echo
  echo ".ts viewers: $TS_SUMMARY"
  echo
  echo "Targets:"
  for v in "${VERDICTS[@]}"; do echo "- $v"; done
} >>"$SUMMARY"

printf '\n==> results\n\n'
cat "$SUMMARY"
if [ "$STRICT" = 1 ]; then
  for v in "${VERDICTS[@]}"; do
    case "$v" in PASS*) ;; *) exit 1 ;; esac
  done
fi
