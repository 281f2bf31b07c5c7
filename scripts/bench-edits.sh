#!/usr/bin/env bash
# Admin edits on a big lineup (BENCHMARKS.md, "Admin edits on a big lineup"; run by
# hand, not part of CI). One m3u service: the real 9,943-entry playlist
# (../shared/data/iptv-org-all-2023-01-31.m3u) with, as its guide, the 72,499 guide
# channels of ../shared/data/guide-eval/ as one XMLTV file (ids `g<row>`, so every
# channel goes through guide matching). Both files are served by `python3 -m
# http.server` on 127.0.0.1. Measures EDITS sequential `PATCH /api/channels/{id}`
# (a rename each), then the first `/epg.xml` after them (which follows every edit),
# for BIN and, when given, BASELINE (another freesky binary, e.g. an older build),
# alternated ROUNDS times in one run. Nothing leaves 127.0.0.1.
#
# Usage: bash scripts/bench-edits.sh
# Environment: BIN [target/release/freesky], BASELINE [none], EDITS [20], ROUNDS [2],
#              DATA [../shared/data]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(realpath "${BIN:-target/release/freesky}")
BASELINE=${BASELINE:+$(realpath "$BASELINE")}
EDITS=${EDITS:-20}
ROUNDS=${ROUNDS:-2}
DATA=$(realpath "${DATA:-../shared/data}")
WORK=$(mktemp -d /tmp/freesky-edits.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

cp "$DATA/iptv-org-all-2023-01-31.m3u" "$WORK/list.m3u"
python3 - "$DATA/guide-eval/guide-channels-a-m.tsv" "$WORK/guide.xml" <<'EOF'
import html, sys
rows = open(sys.argv[1], encoding="utf-8").read().split("\n")[1:]
out = ['<?xml version="1.0" encoding="UTF-8"?>', "<tv>"]
for i, r in enumerate(rows):
    f = r.split("\t")
    if len(f) < 3:
        continue
    out.append('<channel id="g%d"><display-name lang="%s">%s</display-name></channel>'
               % (i, html.escape(f[1]), html.escape(f[2])))
out.append("</tv>")
open(sys.argv[2], "w", encoding="utf-8").write("\n".join(out))
EOF
FILES=$(free_port)
(cd "$WORK" && exec python3 -m http.server "$FILES" --bind 127.0.0.1 >/dev/null 2>&1) &
PIDS+=($!)
for _ in $(seq 50); do curl -sf -o /dev/null "http://127.0.0.1:$FILES/list.m3u" && break; sleep 0.2; done

now() { date +%s.%N; }

# run LABEL BINARY: prints "LABEL: EDITS PATCH x s; next /epg.xml y s"
run() {
    local label=$1 bin=$2 port dir pid id t0 t1 t2
    port=$(free_port)
    dir="$WORK/state-$label"
    rm -rf "$dir" && mkdir -p "$dir"
    cat > "$WORK/$label.toml" <<EOF
[server]
bind = "127.0.0.1:$port"
state_dir = "$dir"

[[services]]
name = "big"
kind = "m3u"
url = "http://127.0.0.1:$FILES/list.m3u"
epg_url = "http://127.0.0.1:$FILES/guide.xml"
EOF
    "$bin" serve --config "$WORK/$label.toml" > "$WORK/$label.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    for _ in $(seq 120); do
        curl -sf -o /dev/null "http://127.0.0.1:$port/api/guide/matches?limit=1" && break
        sleep 0.5
    done
    id=$(curl -sf "http://127.0.0.1:$port/api/channels?limit=1" \
        | python3 -c 'import json,sys;print(json.load(sys.stdin)["items"][0]["id"])')
    t0=$(now)
    for i in $(seq "$EDITS"); do
        code=$(curl -s -o /dev/null -w '%{http_code}' -X PATCH -H 'content-type: application/json' \
            -d "{\"name\":\"Renamed $i\"}" "http://127.0.0.1:$port/api/channels/$id")
        [ "$code" = 200 ] || { echo "PATCH answered $code" >&2; exit 1; }
    done
    t1=$(now)
    curl -sf -o /dev/null "http://127.0.0.1:$port/epg.xml"
    t2=$(now)
    # The guide's match list follows the last rename.
    curl -sf "http://127.0.0.1:$port/api/guide/matches?state=all&limit=1000" | grep -q "Renamed $EDITS" \
        || { echo "$label: the match list does not show the last rename" >&2; exit 1; }
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    printf '%s: %s PATCH %.2f s; next /epg.xml %.2f s; together %.2f s\n' \
        "$label" "$EDITS" "$(echo "$t1-$t0" | bc)" "$(echo "$t2-$t1" | bc)" "$(echo "$t2-$t0" | bc)"
}

echo "== load: $(uptime)"
for r in $(seq "$ROUNDS"); do
    [ -n "$BASELINE" ] && run "baseline-$r" "$BASELINE"
    run "bin-$r" "$BIN"
done
echo "== load: $(uptime)"
