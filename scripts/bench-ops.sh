#!/usr/bin/env bash
# Operator-scale checks, run once per binary given, so that two builds are compared in
# the same run on the same data (BENCHMARKS.md, "Operator-scale A/B"):
#   bash scripts/bench-ops.sh OLD_BINARY NEW_BINARY
#   bash scripts/bench-ops.sh                 # just target/release/freesky
# Needs python3, curl, wrk. Everything runs on 127.0.0.1 in a temp dir, removed at the end.
#
#   1. xmltv.php of an account that sees 200 of 400 groups (50,000 channels, a 100 MB
#      guide): the second request, then 8 at once while /health is polled
#      (worst /health latency, peak RSS);
#   2. get_live_streams and get.php at 200,000 channels, 16 players at once reading at
#      10 MB/s each (peak RSS);
#   3. /tuners/250/discover.json against /discover.json (wrk, req/s), max_channels = 400;
#   4. `freesky channels` of 40,000 entries of one name (seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
bins=("$@")
if [ ${#bins[@]} -eq 0 ]; then
  cargo build --release --quiet
  bins=(target/release/freesky)
fi
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

python3 - "$work" <<'EOF'
import sys, time, datetime
d = sys.argv[1]
words = "News Sport Movie Kids Music Docu Life Fox Star Zee Sky Canal Rai Tele Uno Dos".split()
cc = "us uk de fr es it pl nl br mx in".split()
def m3u(n, out):
    with open(out, "w") as f:
        f.write("#EXTM3U\n")
        for i in range(n):
            c = cc[i % len(cc)]
            name = f"{words[i % 16]} {words[(i // 16) % 16]} {i} {c.upper()}"
            f.write(f'#EXTINF:-1 tvg-id="ch{i}.{c}" group-title="Group {i % 400}",{name}\n'
                    f"http://127.0.0.1:9/live/{i}/index.m3u8\n")
m3u(50_000, f"{d}/50k.m3u")
m3u(200_000, f"{d}/200k.m3u")
now = int(time.time()); start = (now // 3600) * 3600 - 86400; end = now + 7 * 86400
ts = lambda t: datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y%m%d%H%M%S +0000")
with open(f"{d}/guide.xml", "w") as f:
    f.write('<?xml version="1.0" encoding="UTF-8"?>\n<tv>\n')
    for i in range(5000):
        f.write(f'<channel id="ch{i}.{cc[i % len(cc)]}"><display-name>Guide Channel {i}</display-name></channel>\n')
    for i in range(5000):
        t, k = start, 0
        while t < end:
            f.write(f'<programme start="{ts(t)}" stop="{ts(t + 7200)}" channel="ch{i}.{cc[i % len(cc)]}">'
                    f"<title>Show {k} on {i}</title><desc>Description of show {k} on channel {i}.</desc></programme>\n")
            t += 7200; k += 1
    f.write("</tv>\n")
with open(f"{d}/same.m3u", "w") as f:
    f.write("#EXTM3U\n")
    for i in range(40_000):
        f.write(f'#EXTINF:-1 group-title="G{i % 50}",Sports HD\nhttp://127.0.0.1:9/s/{i}.m3u8\n')
groups = ", ".join(f'"Group {g}"' for g in range(0, 400, 2))
with open(f"{d}/groups.txt", "w") as f:
    f.write(groups)
EOF

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rss() { awk '/VmRSS/{print int($2/1024)}' "/proc/$1/status"; }
# start BIN CONFIG: runs a server, waits for /ready; sets $server and $port.
start() {
  "$1" serve --config "$2" >"$work/log.txt" 2>&1 &
  server=$!
  pids+=("$server")
  for _ in $(seq 600); do
    curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/ready" | grep -q 200 && return
    sleep 0.2
  done
  echo "the server did not start: $(tail -5 "$work/log.txt")" >&2
  exit 1
}
stop() { kill "$server"; wait "$server" 2>/dev/null || true; }
# peak RSS of $server while `$@` runs
with_peak() {
  (while sleep 0.05; do rss "$server"; done >"$work/rss.txt") &
  local m=$!
  "$@"
  kill "$m"; wait "$m" 2>/dev/null || true
  sort -n "$work/rss.txt" | tail -1
}
config() { # config LIST EXTRA
  cat <<EOF2
[server]
bind = "127.0.0.1:$port"
state_dir = "$work/state-$RANDOM$RANDOM"
max_body_bytes = 67108864
$2

[[services]]
name = "Big"
kind = "m3u"
url = "$work/$1"
epg_url = "$work/guide.xml"
allow_private = true

[[users]]
name = "alice"
password = "secret"
max_connections = 0

[[users]]
name = "bob"
password = "secret2"
max_connections = 0
groups = [$(cat "$work/groups.txt")]
EOF2
}
many() { # many RATE N URL: N clients at once, each reading at RATE (curl --limit-rate; 0: no limit)
  local ps=()
  for _ in $(seq "$2"); do curl -s -o /dev/null --limit-rate "$1" "$3" & ps+=($!); done
  wait "${ps[@]}"
}

for bin in "${bins[@]}"; do
  echo "== $bin"
  port=$(free_port)
  config 50k.m3u "" >"$work/a.toml"
  start "$bin" "$work/a.toml"
  u="http://127.0.0.1:$port/xmltv.php?username=bob&password=secret2"
  curl -s -o /dev/null "$u"
  curl -s -o /dev/null -w "xmltv.php (200 of 400 groups), 2nd request: %{time_total} s, %{size_download} bytes\n" "$u"
  python3 - "http://127.0.0.1:$port/health" >"$work/probe.txt" <<'EOF' &
import sys, time, urllib.request
worst, t_end = 0.0, time.time() + 8
while time.time() < t_end:
    t = time.time(); urllib.request.urlopen(sys.argv[1], timeout=60).read()
    worst = max(worst, time.time() - t); time.sleep(0.05)
print(f"{worst * 1000:.0f} ms")
EOF
  probe=$!
  sleep 1
  t0=$(date +%s.%N)
  peak=$(with_peak many 0 8 "$u")
  t1=$(date +%s.%N)
  wait "$probe"
  echo "xmltv.php x8 at once: $(python3 -c "print(round($t1-$t0,2))") s; worst /health $(cat "$work/probe.txt"); peak RSS $peak MB"
  stop

  port=$(free_port)
  config 200k.m3u $'[guide]\nplaceholders = false\n[hdhomerun]\nmax_channels = 400' >"$work/b.toml"
  sed -i "s|^epg_url = .*||" "$work/b.toml"
  start "$bin" "$work/b.toml"
  for path in "player_api.php?username=alice&password=secret&action=get_live_streams" "get.php?username=alice&password=secret"; do
    curl -s -o /dev/null "http://127.0.0.1:$port/$path"
    sleep 1
    idle=$(rss "$server")
    peak=$(with_peak many 10M 16 "http://127.0.0.1:$port/$path")
    echo "16 at once of /${path%%&*}...: idle RSS $idle MB, peak $peak MB"
  done
  curl -s -o /dev/null "http://127.0.0.1:$port/tuners/250/discover.json"
  v=$(wrk -t2 -c8 -d5s "http://127.0.0.1:$port/tuners/250/discover.json" | awk '/Requests\/sec/{print $2}')
  m=$(wrk -t2 -c8 -d5s "http://127.0.0.1:$port/discover.json" | awk '/Requests\/sec/{print $2}')
  echo "/tuners/250/discover.json: $v req/s; /discover.json: $m req/s"
  stop

  port=$(free_port)
  config same.m3u "" >"$work/c.toml"
  sed -i "s|^epg_url = .*||" "$work/c.toml"
  t0=$(date +%s.%N)
  "$bin" channels --config "$work/c.toml" --json >/dev/null 2>&1
  t1=$(date +%s.%N)
  echo "freesky channels, 40,000 entries of one name: $(python3 -c "print(round($t1-$t0,2))") s"
done
