#!/usr/bin/env python3
"""A live HLS upstream for scripts/cluster-test.sh: N channels listed in /list.m3u,
each a sliding 4-segment live playlist (2-second segments, the demo channel's four
MPEG-TS files played in a loop) and its segments. Counts every request per path;
GET /stats answers the counts as JSON. Loopback only; stops on SIGTERM."""
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(sys.argv[1])
CHANNELS = int(sys.argv[2])
ASSETS = sys.argv[3]
SEG = 2.0
SEGMENTS = [open(f"{ASSETS}/seg{i}.ts", "rb").read() for i in range(4)]
START = time.time()
counts = {}
# Per segment path, who fetched it and when: the X-Instance header the freesky
# instances send (cluster-test.sh sets one per instance) and seconds since start.
fetchers = {}
started = time.monotonic()
lock = threading.Lock()


def playlist():
    now = int((time.time() - START) / SEG) + 4
    first = now - 4
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:2",
             f"#EXT-X-MEDIA-SEQUENCE:{first}", f"#EXT-X-DISCONTINUITY-SEQUENCE:{first // 4}"]
    for k in range(first, now):
        if k % 4 == 0 and k != first:
            lines.append("#EXT-X-DISCONTINUITY")
        lines += ["#EXTINF:2.000,", f"seg{k}.ts"]
    return "\n".join(lines) + "\n"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send(self, status, ctype, body):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        path = self.path.split("?")[0]
        with lock:
            counts[path] = counts.get(path, 0) + 1
            if path.endswith(".ts"):
                who = self.headers.get("X-Instance", "?")
                fetchers.setdefault(path, []).append(f"{who}@{time.monotonic() - started:.2f}s")
        if path == "/stats":
            with lock:
                body = json.dumps(counts).encode()
            return self.send(200, "application/json", body)
        if path == "/fetchers":
            with lock:
                body = json.dumps(fetchers).encode()
            return self.send(200, "application/json", body)
        if path == "/list.m3u":
            out = ["#EXTM3U"]
            for n in range(1, CHANNELS + 1):
                out.append(f'#EXTINF:-1 tvg-id="ch{n}.test" group-title="Cluster",Cluster {n}')
                out.append(f"http://127.0.0.1:{PORT}/ch{n}/index.m3u8")
            return self.send(200, "audio/x-mpegurl", ("\n".join(out) + "\n").encode())
        parts = path.strip("/").split("/")
        if len(parts) == 2 and parts[0].startswith("ch"):
            if parts[1] == "index.m3u8":
                return self.send(200, "application/vnd.apple.mpegurl", playlist().encode())
            if parts[1].startswith("seg") and parts[1].endswith(".ts"):
                try:
                    k = int(parts[1][3:-3])
                except ValueError:
                    return self.send(404, "text/plain", b"no such segment")
                return self.send(200, "video/mp2t", SEGMENTS[k % 4])
        self.send(404, "text/plain", b"not found")


ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
