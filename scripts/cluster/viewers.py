#!/usr/bin/env python3
"""HLS viewers for scripts/cluster-test.sh: VIEWERS threads spread over CHANNELS
channels, each fetching its channel's playlist through the balancer and every
segment link it lists, ROUNDS times two seconds apart (as a player follows a live
playlist). Prints the count of segments fetched and of failed requests as JSON."""
import json
import sys
import threading
import time
import urllib.request
from urllib.parse import urljoin

BASE, VIEWERS, CHANNELS, ROUNDS = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
lock = threading.Lock()
stats = {"segments": 0, "failures": 0, "playlists": 0}
start = threading.Barrier(VIEWERS)


def get(url):
    with urllib.request.urlopen(url, timeout=20) as r:
        return r.read()


def viewer(i):
    url = f"{BASE}/api/stream/cluster-{i % CHANNELS + 1}.m3u8"
    start.wait()
    seen = set()
    for _ in range(ROUNDS):
        t = time.monotonic()
        try:
            text = get(url).decode()
            with lock:
                stats["playlists"] += 1
            for line in text.splitlines():
                if line and not line.startswith("#"):
                    link = urljoin(url, line)
                    if link in seen:
                        continue
                    get(link)
                    seen.add(link)
                    with lock:
                        stats["segments"] += 1
        except Exception as e:  # counted, and the first few printed
            with lock:
                stats["failures"] += 1
                if stats["failures"] <= 3:
                    print(f"viewer {i}: {e}", file=sys.stderr)
        time.sleep(max(0.0, 2.0 - (time.monotonic() - t)))


threads = [threading.Thread(target=viewer, args=(i,)) for i in range(VIEWERS)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps(stats))
