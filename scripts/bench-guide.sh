#!/usr/bin/env bash
# Guide matching measured on public data (BENCHMARKS.md, "Guide matching"; run by
# hand, not part of CI). Builds examples/guide_eval in release, then:
#   tune      precision and recall on the even M3U entries (where the threshold and
#             margin were chosen)
#   held-out  the same on the odd entries (reported)
#             each also with --merge-ids: a site's rows of one id as one guide channel,
#             as the site's XMLTV guide lists it
#   timing    20,000 lineup channels against 50,000 guide channels: index and match
#             time, and the memory they added (peak RSS)
# The data: ../shared/data/guide-eval/guide-channels-a-m.tsv (guide channel lists with
# known ids) and ../shared/data/iptv-org-all-2023-01-31.m3u (tvg-ids = those ids,
# stripped before matching). Nothing touches the network.
#
# Usage: bash scripts/bench-guide.sh
# Environment: DATA [../shared/data], SKIP_BUILD [0] (1: use the built binary).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
TSV=$DATA/guide-eval/guide-channels-a-m.tsv
M3U=$DATA/iptv-org-all-2023-01-31.m3u
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    cargo build --release --example guide_eval
fi
BIN=${CARGO_TARGET_DIR:-target}/release/examples/guide_eval
echo "== load: $(uptime)"
for split in tune held-out; do
    echo "== $split split, names only"
    "$BIN" "$TSV" "$M3U" --split "$split"
    echo "== $split split, names and the country group"
    "$BIN" "$TSV" "$M3U" --split "$split" --country
    echo "== $split split, one guide channel per id per site (--merge-ids), names only"
    "$BIN" "$TSV" "$M3U" --split "$split" --merge-ids
    echo "== $split split, one guide channel per id per site (--merge-ids), with the country group"
    "$BIN" "$TSV" "$M3U" --split "$split" --merge-ids --country
done
echo "== timing"
"$BIN" --timing "$TSV" "$M3U"
echo "== load: $(uptime)"
