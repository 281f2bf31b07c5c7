#!/usr/bin/env bash
# Time to the first packaged playlist (BENCHMARKS.md, "Time to the first packaged
# playlist"; run by hand, not part of CI): a clip served as a live MPEG-TS encoder
# would (ffmpeg -re ... -listen 1), one m3u service listing it, and `curl` timing the
# first /api/stream/{id}.m3u8 of a fresh start. Prints the seconds and the segments
# the playlist lists, for each key-frame interval.
#
# Usage: bash scripts/bench-first-playlist.sh [BIN]   (default target/release/freesky)
# Environment: PORT [18460] (freesky; PORT+1 the encoder), all on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(realpath "${1:-target/release/freesky}")
PORT=${PORT:-18460}
ENC=$((PORT + 1))
WORK=$(mktemp -d)
cleanup() {
    kill "${FS:-}" "${FF:-}" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
for gop in 25 50; do
    ffmpeg -nostdin -hide_banner -v error -y -f lavfi -i testsrc=size=640x360:rate=25 \
        -f lavfi -i sine=frequency=440:sample_rate=48000 -t 30 -c:v libx264 -preset ultrafast \
        -g "$gop" -pix_fmt yuv420p -c:a aac -f mpegts "$WORK/clip.ts"
    rm -rf "$WORK/state"
    ffmpeg -nostdin -hide_banner -v quiet -re -stream_loop -1 -i "$WORK/clip.ts" -c copy \
        -f mpegts -listen 1 "http://127.0.0.1:$ENC/live.ts" &
    FF=$!
    printf '#EXTM3U\n#EXTINF:-1,Plain\nhttp://127.0.0.1:%s/live.ts\n' "$ENC" > "$WORK/list.m3u"
    cat > "$WORK/f.toml" <<EOT
[server]
bind = "127.0.0.1:$PORT"
state_dir = "$WORK/state"

[[services]]
name = "P"
kind = "m3u"
url = "$WORK/list.m3u"
allow_private = true
EOT
    "$BIN" --config "$WORK/f.toml" > "$WORK/freesky.log" 2>&1 &
    FS=$!
    for _ in $(seq 50); do
        curl -sf "http://127.0.0.1:$PORT/ready" > /dev/null && break
        sleep 0.1
    done
    ID=$(curl -s "http://127.0.0.1:$PORT/api/channels/all" | python3 -c 'import sys,json; print(json.load(sys.stdin)[0]["id"])')
    T=$(curl -s -o "$WORK/body.m3u8" -w "%{time_total}" "http://127.0.0.1:$PORT/api/stream/$ID.m3u8")
    echo "key frames every $((gop / 25)) s: first playlist after ${T} s, $(grep -c '^#EXTINF' "$WORK/body.m3u8") segments: $(grep '^#EXTINF' "$WORK/body.m3u8" | tr '\n' ' ')"
    kill "$FS" "$FF" 2>/dev/null || true
    wait 2>/dev/null || true
done
