#!/usr/bin/env python3
"""A fake Xtream panel for scripts/bench-vod.sh: `bench-vod-panel.py PORT SIDE`.

SIDE 0 lists movies 0..120,000 and series 0..30,000; SIDE 1 movies 80,000..200,000
and series 20,000..50,000, so the merged catalogue holds 200,000 movies and 50,000
series. In the overlap, even titles share a TMDB id, odd ones only their name and
year (both must merge). get_series_info answers 5 seasons of 10 episodes. The lists
are made once at start and served from memory; only 127.0.0.1 is bound.
"""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

PORT, SIDE = int(sys.argv[1]), int(sys.argv[2])
MOVIES = range(0, 120_000) if SIDE == 0 else range(80_000, 200_000)
SERIES = range(0, 30_000) if SIDE == 0 else range(20_000, 50_000)
CATS = 40


def cat(i):
    return str(100 + i % CATS)


def movie(i):
    return {
        "num": i + 1,
        "name": f"Film Título {i} ({1950 + i % 70})" if i % 10 == 7 else f"Title {i} ({1950 + i % 70})",
        "stream_type": "movie",
        "stream_id": 1_000_000 * SIDE + i,
        "stream_icon": f"http://img{SIDE}.example/posters/{i:08x}/w300.jpg",
        "rating": f"{(i % 90) / 10:.1f}",
        "rating_5based": round((i % 90) / 20, 1),
        "tmdb": str(500_000 + i) if i % 2 == 0 else "",
        "added": str(1_600_000_000 + i),
        "is_adult": "0",
        "category_id": cat(i),
        "container_extension": "mkv" if i % 3 else "mp4",
        "custom_sid": "",
        "direct_source": "",
    }


def series(i):
    return {
        "num": i + 1,
        "name": f"Show {i}",
        "series_id": 1_000_000 * SIDE + i,
        "cover": f"http://img{SIDE}.example/covers/{i:08x}.jpg",
        "plot": "",
        "cast": "",
        "director": "",
        "genre": "Drama",
        "releaseDate": f"{1990 + i % 30}-01-01",
        "last_modified": str(1_600_000_000 + i),
        "rating": "7",
        "rating_5based": 3.5,
        "backdrop_path": [],
        "youtube_trailer": "",
        "episode_run_time": "45",
        "category_id": cat(i),
        "tmdb": str(900_000 + i) if i % 2 == 0 else "",
    }


def series_info(sid):
    i = sid - 1_000_000 * SIDE
    episodes = {
        str(s): [
            {
                "id": str(10_000_000 + sid * 100 + s * 10 + e),
                "episode_num": e,
                "title": f"Show {i} S{s:02}E{e:02}",
                "container_extension": "mkv",
                "info": {"duration_secs": 2700},
                "season": s,
            }
            for e in range(1, 11)
        ]
        for s in range(1, 6)
    }
    return {"seasons": [], "info": {"name": f"Show {i}", "plot": "A plot."}, "episodes": episodes}


CATEGORIES = json.dumps(
    [{"category_id": str(100 + c), "category_name": f"Category {c:02}", "parent_id": 0} for c in range(CATS)]
).encode()
VOD = json.dumps([movie(i) for i in MOVIES]).encode()
SER = json.dumps([series(i) for i in SERIES]).encode()
LOGIN = json.dumps(
    {
        "user_info": {"username": "u", "password": "p", "auth": 1, "status": "Active", "max_connections": "0"},
        "server_info": {"url": "127.0.0.1", "port": str(PORT)},
    }
).encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send(self, body, ctype="application/json"):
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        url = urlparse(self.path)
        if url.path == "/ready":
            return self.send(b"ok", "text/plain")
        if url.path != "/player_api.php":
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        action = q.get("action", "")
        if action == "":
            return self.send(LOGIN)
        if action in ("get_vod_categories", "get_series_categories"):
            return self.send(CATEGORIES)
        if action == "get_vod_streams":
            return self.send(VOD)
        if action == "get_series":
            return self.send(SER)
        if action == "get_series_info":
            return self.send(json.dumps(series_info(int(q.get("series_id", "0")))).encode())
        return self.send(b"[]")


print(f"panel {SIDE}: {len(VOD)} bytes of movies, {len(SER)} bytes of series", flush=True)
ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
