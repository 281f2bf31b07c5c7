#!/usr/bin/env bash
# Regenerates assets/demo/seg0..3.ts, the demo channel's embedded segments:
# 8 s of a test pattern and a 440 Hz tone, 320x180 H.264 baseline + mono AAC,
# cut into four 2-second MPEG-TS segments (~50 KB each). The audio is trimmed so
# that, with the AAC encoder's priming frame, it is exactly 375 frames (8 s of
# 1024-sample frames at 48 kHz): the demo loops the segments as one continuous
# stream (src/services/demo.rs, `Loop`), which needs audio and video of the same
# length.
set -euo pipefail
cd "$(dirname "$0")/../assets/demo"
ffmpeg -v error -y \
  -f lavfi -i testsrc2=size=320x180:rate=25 \
  -f lavfi -i sine=frequency=440:sample_rate=48000 \
  -t 8 -c:v libx264 -preset veryfast -profile:v baseline -pix_fmt yuv420p \
  -g 50 -keyint_min 50 -sc_threshold 0 -b:v 120k \
  -af atrim=end_sample=382976 -c:a aac -b:a 32k -ac 1 \
  -f hls -hls_time 2 -hls_list_size 0 -hls_segment_filename 'seg%d.ts' out.m3u8
rm -f out.m3u8
ls -l seg*.ts
