"""A real HTTP server on 127.0.0.1 for the tests of sources at URLs: the standard library's
``ThreadingHTTPServer`` in a thread, serving real mp4 files, plus routes that fail as servers
do. Shared by tests/test_remote_sources.py, tests/test_ray.py and tests/test_s3.py.

Routes, for a file registered under ``NAME``:

- ``/v/NAME``       the file, whole (``Content-Length`` set)
- ``/flaky/NAME``   503 on the first request, the file after
- ``/short/NAME``   ``Content-Length`` of the whole file, half its bytes, then the connection
                    closes
- ``/stall/NAME``   ``Content-Length`` of the whole file, 1 KB, then nothing until the server
                    stops
- ``/slow/NAME``    the file in five parts, 0.1 s apart
- ``/404/ANY``, ``/403/ANY``, ``/500/ANY``   that status

``requests`` counts the requests per path; ``max_active`` is the most ``/slow/`` responses
sent at once.
"""

from __future__ import annotations

import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class _Quiet(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):  # a client that hung up: as expected
        pass


class VideoServer:
    def __init__(self, files: dict[str, str]):
        self.files = {name: Path(path).read_bytes() for name, path in files.items()}
        self.requests: Counter = Counter()
        self.active = self.max_active = 0
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self.httpd = _Quiet(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> VideoServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()  # the stalled responses end
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(10)

    def count(self, path: str) -> int:
        with self._lock:
            return self.requests[path]

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # a line per request otherwise
                pass

            def do_GET(self):
                with server._lock:
                    server.requests[self.path] += 1
                    seen = server.requests[self.path]
                route, _, name = self.path.lstrip("/").partition("/")
                if route.isdigit():
                    self.send_error(int(route))
                    return
                data = server.files.get(name)
                if data is None or route not in ("v", "flaky", "short", "stall", "slow"):
                    self.send_error(404)
                    return
                if route == "flaky" and seen == 1:
                    self.send_error(503)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "video/mp4")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if route == "short":
                    self.wfile.write(data[:len(data) // 2])
                elif route == "stall":
                    self.wfile.write(data[:1024])
                    self.wfile.flush()
                    server.stop.wait(120)
                elif route == "slow":
                    with server._lock:
                        server.active += 1
                        server.max_active = max(server.max_active, server.active)
                    step = -(-len(data) // 5)
                    for i in range(0, len(data), step):
                        if i + step >= len(data):  # done before the client can be
                            with server._lock:
                                server.active -= 1
                        self.wfile.write(data[i:i + step])
                        self.wfile.flush()
                        server.stop.wait(0.1 if i + step < len(data) else 0)
                else:
                    self.wfile.write(data)

        return Handler
