#!/usr/bin/env bash
# Proof that several freesky instances share one state and one link key behind a
# balancer, with the real engines on loopback: a throwaway PostgreSQL cluster (initdb
# in a temp dir, a free port), HAProxy with deploy/haproxy.cfg, three freesky
# instances and a fake live HLS upstream (scripts/cluster/fake_upstream.py) that
# counts every request. Checks:
#   1. the three start together and list identical channel ids and numbers;
#   2. a service disabled through instance 1 is disabled on 2 and 3 within 5 s
#      (and enabled again the same way);
#   3. 300 concurrent HLS viewers over 10 channels through HAProxy: exactly one
#      upstream fetch per segment in total;
#   4. ffmpeg playing a channel through HAProxy keeps decoding while the instance
#      serving it is killed (kill -9);
#   5. /ready: 503 while draining (SIGTERM) and while PostgreSQL is down;
#   6. after all instances restart, every channel keeps its id and number;
#   7. the PostgreSQL backend's Rust tests (tests/it/postgres.rs) against this cluster.
# Installs postgresql, haproxy and ffmpeg with apt-get when missing. Everything it
# started is stopped on exit, failed or not. Prints timings for BENCHMARKS.md.
# Uses $CARGO_TARGET_DIR (or target)/debug/freesky (built when missing; FREESKY_BIN overrides).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

say() { printf '\n--> %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }
started=$SECONDS

# --- tools ---
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
missing=()
[ -n "$pg_bin" ] && [ -x "$pg_bin/initdb" ] || missing+=(postgresql)
command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)
command -v ffmpeg >/dev/null 2>&1 || missing+=(ffmpeg)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
if ((${#missing[@]})); then
  say "installing ${missing[*]} with apt-get"
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
fi
# The package starts its own cluster as a system service: not ours, left alone.

bin=${FREESKY_BIN:-${CARGO_TARGET_DIR:-target}/debug/freesky}
if [ ! -x "$bin" ]; then
  say "building freesky (debug)"
  cargo build --locked --bin freesky
fi
bin=$(realpath "$bin")

tmp=$(mktemp -d /tmp/freesky-cluster.XXXXXX)
chmod 755 "$tmp"
pids=()
pg_data=$tmp/pg
run_as=()
if [ "$(id -u)" -eq 0 ]; then
  # PostgreSQL refuses to run as root: its own user (made by the package), else nobody.
  pg_user=postgres
  id "$pg_user" >/dev/null 2>&1 || pg_user=nobody
  run_as=(runuser -u "$pg_user" --)
fi

cleanup() {
  local status=$?
  set +e
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null; done
  if [ -f "$pg_data/postmaster.pid" ]; then
    "${run_as[@]}" "$pg_bin/pg_ctl" -D "$pg_data" -m immediate stop >/dev/null 2>&1
  fi
  if [ "$status" -ne 0 ]; then
    echo "cluster test failed; the last lines of each log:" >&2
    for log in "$tmp"/*.log; do
      [ -f "$log" ] && { echo "== $log" >&2; tail -n 15 "$log" >&2; }
    done
  fi
  rm -rf "$tmp"
  exit "$status"
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# wait_for SECONDS DESCRIPTION COMMAND...: polls COMMAND every 0.1 s.
wait_for() {
  local limit=$1 what=$2
  shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || fail "$what (not within ${limit}s)"
    sleep 0.1
  done
}
now_ms() { date +%s%3N; }

# --- PostgreSQL ---
say "PostgreSQL: a throwaway cluster in $pg_data"
pg_port=$(free_port)
mkdir -p "$pg_data"
[ ${#run_as[@]} -gt 0 ] && chown "$pg_user" "$pg_data"
"${run_as[@]}" "$pg_bin/initdb" -D "$pg_data" -U postgres --auth=trust -E UTF8 >"$tmp/initdb.log" 2>&1
"${run_as[@]}" "$pg_bin/pg_ctl" -D "$pg_data" -l "$pg_data/server.log" -w -t 30 \
  -o "-c listen_addresses=127.0.0.1 -p $pg_port -k $pg_data -c fsync=off" start >/dev/null
psql_do() { "${run_as[@]}" psql -X -q -h 127.0.0.1 -p "$pg_port" -U postgres "$@"; }
psql_do -c 'CREATE DATABASE freesky' -c 'CREATE DATABASE freesky_rust_test'
db_url="postgresql://postgres@127.0.0.1:$pg_port/freesky?sslmode=disable"

# --- fake upstream ---
up_port=$(free_port)
python3 scripts/cluster/fake_upstream.py "$up_port" 10 assets/demo >"$tmp/upstream.log" 2>&1 &
pids+=($!)
wait_for 10 "fake upstream answers" curl -fsS "http://127.0.0.1:$up_port/list.m3u"

# --- the shared link key ---
head -c 32 /dev/urandom >"$tmp/proxy.key"
chmod 600 "$tmp/proxy.key"

# --- three instances ---
ports=()
for i in 1 2 3; do ports+=("$(free_port)"); done
config() {
  local i=$1 port=${ports[$(($1 - 1))]}
  cat <<TOML
[server]
bind = "127.0.0.1:$port"
state_dir = "$tmp/state$i"
state = "\${FREESKY_DB}"
proxy_key_file = "$tmp/proxy.key"
drain_delay = "3s"
shutdown_grace = "2s"

[health]
interval = "0s"

[hdhomerun]
discovery_port = 0
ssdp_port = 0

[[services]]
name = "Cluster"
kind = "m3u"
url = "http://127.0.0.1:$up_port/list.m3u"
headers = { "X-Instance" = "freesky$i" }
TOML
}
declare -A inst_pid
start_instance() {
  local i=$1
  FREESKY_DB=$db_url RUST_LOG=${RUST_LOG:-info,hyper=warn,reqwest=warn} \
    "$bin" --config "$tmp/freesky$i.toml" serve >>"$tmp/freesky$i.log" 2>&1 &
  inst_pid[$i]=$!
  pids+=($!)
}
ready() { curl -fsS "http://127.0.0.1:${ports[$(($1 - 1))]}/ready"; }
for i in 1 2 3; do config "$i" >"$tmp/freesky$i.toml"; done
say "three instances on ports ${ports[*]}, started together"
for i in 1 2 3; do start_instance "$i"; done
for i in 1 2 3; do wait_for 60 "instance $i ready" ready "$i"; done

# --- HAProxy, with deploy/haproxy.cfg ---
ha_port=$(free_port)
sed -e "s/bind :8005/bind 127.0.0.1:$ha_port/" \
  -e "s/freesky1:8005/127.0.0.1:${ports[0]}/" \
  -e "s/freesky2:8005/127.0.0.1:${ports[1]}/" \
  -e "s/freesky3:8005/127.0.0.1:${ports[2]}/" \
  -e "s/^    log stdout.*/    log stderr format raw local0 warning/" \
  deploy/haproxy.cfg >"$tmp/haproxy.cfg"
haproxy -db -f "$tmp/haproxy.cfg" >"$tmp/haproxy.log" 2>&1 &
pids+=($!)
lb="http://127.0.0.1:$ha_port"
wait_for 10 "HAProxy answers" curl -fsS "$lb/ready"

# --- 0. one channel number, one instance, whichever route names it ---
served_by() { curl -sS -o /dev/null -D - --max-time 5 "$lb$1" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-served-by"{print $2}'; }
say "0. the tuner and the Xtream routes hash on the channel number alike"
for n in 101 102 103 104 105 106; do
  # Numbers no channel has: each answer is quick (404, 401); only the routing counts.
  a=$(served_by "/auto/v$n"); b=$(served_by "/live/nobody/nopass/$n.ts"); c=$(served_by "/nobody/nopass/$n")
  d=$(served_by "/tuners/2/auto/v$n")
  [ -n "$a" ] && [ "$a" = "$b" ] && [ "$a" = "$c" ] && [ "$a" = "$d" ] ||
    fail "channel number $n went to '$a' (/auto/v$n), '$b' (/live/...), '$c' (/U/P/$n), '$d' (/tuners/2/auto/v$n)"
done
echo "    ok"

# --- 1. identical lineups ---
lineup_of() {
  curl -fsS "http://127.0.0.1:${ports[$(($1 - 1))]}/api/channels/all" |
    python3 -c 'import json,sys; print("\n".join(sorted("%s %s" % (c["id"], c["number"]) for c in json.load(sys.stdin))))'
}
say "1. identical channel ids and numbers on the three instances"
lineup_of 1 >"$tmp/lineup1"
[ "$(wc -l <"$tmp/lineup1")" -eq 10 ] || fail "instance 1 lists $(wc -l <"$tmp/lineup1") channels, not 10"
for i in 2 3; do
  lineup_of "$i" >"$tmp/lineup$i"
  diff "$tmp/lineup1" "$tmp/lineup$i" || fail "instance $i's lineup differs from instance 1's"
done
numbers=$(cut -d' ' -f2 "$tmp/lineup1" | sort -n | uniq | wc -l)
[ "$numbers" -eq 10 ] || fail "numbers are not unique: $(cat "$tmp/lineup1")"
echo "    ok: $(tr '\n' ' ' <"$tmp/lineup1")"

# --- 2. a change through one instance reaches the others ---
enabled_on() {
  curl -fsS "http://127.0.0.1:${ports[$(($1 - 1))]}/api/services/status" |
    python3 -c 'import json,sys; print(str([s for s in json.load(sys.stdin) if s["name"]=="Cluster"][0]["enabled"]).lower())'
}
is_enabled() { [ "$(enabled_on "$1")" = "$2" ]; }
say "2. disable through instance 1, seen by 2 and 3"
t0=$(now_ms)
curl -fsS -X POST "http://127.0.0.1:${ports[0]}/api/services/Cluster/disable" >/dev/null
for i in 2 3; do wait_for 5 "instance $i sees the disable" is_enabled "$i" false; done
echo "    ok: seen by both in $(($(now_ms) - t0)) ms"
curl -fsS -X POST "http://127.0.0.1:${ports[1]}/api/services/Cluster/enable" >/dev/null
for i in 1 3; do wait_for 5 "instance $i sees the enable" is_enabled "$i" true; done
for i in 1 2 3; do
  wait_for 20 "instance $i lists the channels again" bash -c "[ \"\$(curl -fsS http://127.0.0.1:${ports[$((i - 1))]}/api/channels/all | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')\" = 10 ]"
done
echo "    ok: enabled again through instance 2, seen by 1 and 3"

# --- 3. one upstream fetch per segment (before any instance restarts: a channel that
# moves back to a restarted instance while viewers watch is fetched by both) ---
say "3. 300 viewers over 10 channels through HAProxy: one upstream fetch per segment"
curl -fsS "http://127.0.0.1:$up_port/stats" >"$tmp/stats.before"
t0=$(now_ms)
python3 scripts/cluster/viewers.py "$lb" 300 10 4 >"$tmp/viewers.json" 2>"$tmp/viewers.log" || fail "viewers: $(cat "$tmp/viewers.log")"
elapsed=$(($(now_ms) - t0))
curl -fsS "http://127.0.0.1:$up_port/stats" >"$tmp/stats.after"
curl -fsS "http://127.0.0.1:$up_port/fetchers" >"$tmp/fetchers"
python3 - "$tmp/stats.before" "$tmp/stats.after" "$tmp/viewers.json" "$tmp/fetchers" <<'PY' || fail "segment fetch count"
import json, sys
before, after, viewers, fetchers = (json.load(open(p)) for p in sys.argv[1:5])
segs = {p: n - before.get(p, 0) for p, n in after.items() if p.endswith(".ts")}
segs = {p: n for p, n in segs.items() if n}
over = {p: n for p, n in segs.items() if n > 1}
print(f"    viewers: {viewers}; upstream segment paths fetched: {len(segs)}, fetches: {sum(segs.values())}")
if viewers["failures"]:
    sys.exit(f"{viewers['failures']} viewer requests failed")
if viewers["segments"] < 300 * 4:
    sys.exit(f"only {viewers['segments']} segments served")
if over:
    who = {p: fetchers.get(p) for p in over}
    sys.exit(f"segments fetched more than once upstream: {over}; by (instance@time): {who}")
PY
echo "    ok (${elapsed} ms)"
echo "    figure: 300 viewers, 10 channels: $(cat "$tmp/viewers.json") in ${elapsed} ms" >>"$tmp/figures"

# --- 4. ffmpeg through HAProxy while its instance dies ---
say "4. ffmpeg through HAProxy; the serving instance is killed"
channel=cluster-3
served_by=$(curl -fsS -D - -o /dev/null "$lb/api/stream/$channel.m3u8" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-served-by"{print $2}')
victim=${served_by#freesky}
[[ "$victim" =~ ^[123]$ ]] || fail "no X-Served-By from HAProxy ($served_by)"
ffmpeg -nostdin -v error -rw_timeout 15000000 -i "$lb/api/stream/$channel.m3u8" -t 24 \
  -f null - -progress "$tmp/progress" >"$tmp/ffmpeg.log" 2>&1 &
ff=$!
pids+=($ff)
frames() { grep '^frame=' "$tmp/progress" 2>/dev/null | tail -1 | cut -d= -f2 || echo 0; }
# Samples the decoded frame count every 50 ms (for the longest stall, before and after).
( while kill -0 "$ff" 2>/dev/null; do echo "$(now_ms) $(frames)"; sleep 0.05; done ) >"$tmp/samples" &
sampler=$!
wait_for 30 "ffmpeg decodes" bash -c "[ \"\$(grep '^frame=' $tmp/progress 2>/dev/null | tail -1 | cut -d= -f2)\" -gt 50 ]"
sleep 2
before=$(frames)
kill -9 "${inst_pid[$victim]}"
killed_at=$(now_ms)
echo "    instance $victim (serving $channel) killed at frame $before"
# The next decoded frame after the kill, and the time it took.
first_after=""
deadline=$((SECONDS + 30))
while kill -0 "$ff" 2>/dev/null && ((SECONDS < deadline)); do
  if [ -z "$first_after" ] && [ "$(frames)" -gt "$before" ]; then
    first_after=$(($(now_ms) - killed_at))
  fi
  sleep 0.05
done
wait "$ff" || fail "ffmpeg failed after the kill: $(tail -5 "$tmp/ffmpeg.log")"
after=$(frames)
[ -n "$first_after" ] || fail "ffmpeg decoded nothing after the kill"
# 24 s of 25 fps video asked for: nearly all of it decoded, none lost to the kill.
[ "$after" -ge 550 ] || fail "ffmpeg stopped at frame $after of ~600 (killed at $before)"
wait "$sampler" 2>/dev/null || true
stalls=$(python3 - "$tmp/samples" "$killed_at" <<'PY'
import sys
killed = int(sys.argv[2])
rows = [tuple(map(int, l.split())) for l in open(sys.argv[1]) if len(l.split()) == 2]
ups = [t for (t, f), (_, g) in zip(rows[1:], rows) if f > g]
gaps = [(b - a, a) for a, b in zip(ups, ups[1:])]
before = max((g for g, a in gaps if a < killed - 3000), default=0)
around = max((g for g, a in gaps if a >= killed - 3000), default=0)
print(f"longest stall between decoded frames: {before} ms before the kill, {around} ms around and after it")
PY
)
echo "    ok: ffmpeg went on from frame $before to $after; next frame ${first_after} ms after the kill; $stalls"
echo "    figure: kill-to-next-frame ${first_after} ms; $stalls" >>"$tmp/figures"
start_instance "$victim"
wait_for 60 "instance $victim ready again" ready "$victim"
# HAProxy puts it back after two good checks: wait until it routes to it again (a
# channel moving back while the viewers below watch would be fetched twice).
routes_to_victim() {
  local n
  for n in $(seq 200 260); do
    [ "$(served_by "/auto/v$n")" = "freesky$victim" ] && return 0
  done
  return 1
}
wait_for 20 "HAProxy routing to instance $victim again" routes_to_victim
sleep 1

# --- 5. /ready while draining, and without PostgreSQL ---
say "5. /ready: 503 while draining, and while PostgreSQL is down"
code() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
kill -TERM "${inst_pid[3]}"
wait_for 3 "instance 3 answers 503 draining" bash -c "curl -s http://127.0.0.1:${ports[2]}/ready | grep -q draining"
[ "$(code "http://127.0.0.1:${ports[2]}/api/stream/cluster-1.m3u8")" = 503 ] || fail "a draining instance opened a new stream"
wait "${inst_pid[3]}" 2>/dev/null || true
echo "    ok: draining instance answered 503 and exited"
"${run_as[@]}" "$pg_bin/pg_ctl" -D "$pg_data" -m fast stop >/dev/null
wait_for 10 "instance 1 answers 503 without its store" bash -c "curl -s http://127.0.0.1:${ports[0]}/ready | grep -q store_unavailable"
# A change meanwhile is refused as unavailable (503, JSON), not as a server bug (500).
code=$(curl -s -o "$tmp/outage-write" -w '%{http_code}' -X POST "http://127.0.0.1:${ports[0]}/api/services/Cluster/disable")
[ "$code" = 503 ] && grep -q "nothing was changed" "$tmp/outage-write" ||
  fail "a change during the outage answered $code: $(cat "$tmp/outage-write")"
"${run_as[@]}" "$pg_bin/pg_ctl" -D "$pg_data" -l "$pg_data/server.log" -w -t 30 \
  -o "-c listen_addresses=127.0.0.1 -p $pg_port -k $pg_data -c fsync=off" start >/dev/null
wait_for 15 "instance 1 ready again with its store back" ready 1
echo "    ok: store_unavailable while PostgreSQL was down, ready once it was back"

# --- 6. a restart of every instance keeps every number ---
say "6. all instances restarted: every id and number kept"
for i in 1 2; do kill -TERM "${inst_pid[$i]}"; done
for i in 1 2; do wait "${inst_pid[$i]}" 2>/dev/null || true; done
for i in 1 2 3; do start_instance "$i"; done
for i in 1 2 3; do wait_for 60 "instance $i ready after the restart" ready "$i"; done
for i in 1 2 3; do
  lineup_of "$i" >"$tmp/relineup$i"
  diff "$tmp/lineup1" "$tmp/relineup$i" || fail "instance $i's lineup changed across the restart"
done
echo "    ok"

# --- 7. the Rust tests of the PostgreSQL backend ---
if [ "${CLUSTER_SKIP_RUST:-}" != 1 ]; then
  say "7. cargo test --test it postgres:: against this cluster"
  if ! FREESKY_TEST_POSTGRES="postgresql://postgres@127.0.0.1:$pg_port/freesky_rust_test?sslmode=disable" \
    cargo test --locked --test it postgres:: >"$tmp/rust.log" 2>&1; then
    cat "$tmp/rust.log" >&2
    fail "the PostgreSQL backend's Rust tests"
  fi
  grep -E '^test |^test result' "$tmp/rust.log"
fi

# --- 8. figures for BENCHMARKS.md (CLUSTER_BENCH=1; needs wrk) ---
if [ "${CLUSTER_BENCH:-}" = 1 ]; then
  say "8. benchmark: segment throughput through HAProxy vs one instance directly"
  # HAProxy puts the restarted instances back after two good checks.
  sleep 3
  : >"$tmp/paths"
  for n in $(seq 1 10); do
    curl -fsS --retry 10 --retry-all-errors --retry-delay 1 "$lb/api/stream/cluster-$n.m3u8" | grep -v '^#' | sed -E 's#^https?://[^/]+##' | tail -2 >>"$tmp/paths"
  done
  while read -r p; do
    curl -fsS -o /dev/null "$lb$p"
    curl -fsS -o /dev/null "http://127.0.0.1:${ports[0]}$p"
  done <"$tmp/paths"
  bench() { PATHS="$tmp/paths" wrk -t2 -c32 -d10s -s scripts/cluster/rotate.lua "$1" | grep -E 'Requests/sec|Transfer/sec' | tr -s ' ' | tr '\n' ' '; }
  echo "    figure: wrk -t2 -c32 -d10s, $(wc -l <"$tmp/paths") cached segment links of 10 channels (~50 KB each)" >>"$tmp/figures"
  echo "    figure: through HAProxy to 3 instances: $(bench "$lb")" >>"$tmp/figures"
  echo "    figure: one instance directly: $(bench "http://127.0.0.1:${ports[0]}")" >>"$tmp/figures"
  echo "    figure: load during the runs: $(uptime | sed 's/.*load/load/')" >>"$tmp/figures"

  say "8. benchmark: upstream fetches per segment, channel hashing vs round robin"
  count_fetches() {
    python3 - "$1" "$2" <<'PY'
import json, sys
before, after = (json.load(open(p)) for p in sys.argv[1:3])
segs = {p: n - before.get(p, 0) for p, n in after.items() if p.endswith(".ts")}
segs = {p: n for p, n in segs.items() if n}
print(f"{sum(segs.values())} fetches of {len(segs)} segments = {sum(segs.values()) / max(1, len(segs)):.2f} per segment")
PY
  }
  curl -fsS "http://127.0.0.1:$up_port/stats" >"$tmp/b1"
  python3 scripts/cluster/viewers.py "$lb" 300 10 4 >/dev/null 2>&1
  curl -fsS "http://127.0.0.1:$up_port/stats" >"$tmp/a1"
  echo "    figure: 300 viewers, channel hashing (deploy/haproxy.cfg): $(count_fetches "$tmp/b1" "$tmp/a1")" >>"$tmp/figures"
  sed -e 's/^    balance hash.*/    balance roundrobin/' "$tmp/haproxy.cfg" >"$tmp/haproxy-rr.cfg"
  rr_port=$(free_port)
  sed -i "s/bind 127.0.0.1:$ha_port/bind 127.0.0.1:$rr_port/" "$tmp/haproxy-rr.cfg"
  haproxy -db -f "$tmp/haproxy-rr.cfg" >"$tmp/haproxy-rr.log" 2>&1 &
  pids+=($!)
  wait_for 10 "round-robin HAProxy answers" curl -fsS "http://127.0.0.1:$rr_port/ready"
  curl -fsS "http://127.0.0.1:$up_port/stats" >"$tmp/b2"
  python3 scripts/cluster/viewers.py "http://127.0.0.1:$rr_port" 300 10 4 >/dev/null 2>&1
  curl -fsS "http://127.0.0.1:$up_port/stats" >"$tmp/a2"
  echo "    figure: 300 viewers, round robin (no hashing): $(count_fetches "$tmp/b2" "$tmp/a2")" >>"$tmp/figures"
fi

say "figures"
cat "$tmp/figures"
printf '\ncluster test passed in %ss\n' "$((SECONDS - started))"
