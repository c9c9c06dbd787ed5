"""The viewer's HTTP server: the standard library's ThreadingHTTPServer, no dependency.

Routes (all GET; HEAD too)::

    /  /view.js  /view.css          the page (vtk/view/static), /data.js empty (static mode)
    /api/card                       index.json and the shards the viewer found
    /api/clips?offset=&limit=&q=&label=&sort=&order=     a page of rows (ShardSetView.query)
    /api/failures?reason=&offset=&limit=                 failed inputs from stats/
    /media/<tar>/<row>.mp4          a sample's mp4 member, read by offset, with byte ranges
    /poster/<tar>/<row>.jpg         its middle frame as JPEG (bounded LRU in memory)
    /files/<path>                   the set's own files: index.json, *.tar, *.idx, stats/*.json

Nothing else is served: a path with ``..``, an absolute path, a file that is not one of the
set's, or a symlink that leads out of the folder gets 404. Bound to a loopback address, the
server also refuses requests whose ``Host`` is not that address (a web page cannot reach it
through DNS rebinding). Every response carries ``nosniff``; the page's Content-Security-Policy
allows no inline script, on top of the page building its DOM with ``textContent`` only.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.resources import files
from urllib.parse import parse_qs, unquote, urlsplit

from vtk.view.index import LRU, ShardSetView
from vtk.view.members import header_ok, poster_jpeg

STATIC = ("index.html", "view.js", "view.css")
TYPES = {"html": "text/html; charset=utf-8", "js": "text/javascript; charset=utf-8",
         "css": "text/css; charset=utf-8", "json": "application/json; charset=utf-8",
         "tar": "application/x-tar", "idx": "text/plain; charset=utf-8", "mp4": "video/mp4",
         "jpg": "image/jpeg"}
PAGE_CSP = ("default-src 'self'; img-src 'self' data:; media-src 'self'; object-src 'none'; "
            "base-uri 'none'; frame-ancestors 'none'")
POSTER_BUDGET = 32 * 2**20  # bytes of JPEG kept: about 2,000 posters of 224 px clips
# at most 18 digits: a row or a byte offset past that is no row of any set (and Python's int()
# refuses 4,300 digits and more: a 500 instead of a 404)
MEDIA = re.compile(r"/(media|poster)/([^/]+)/(\d{1,18})\.(mp4|jpg)")
RANGE = re.compile(r"bytes=(\d{0,18})-(\d{0,18})")
IDLE_TIMEOUT_S = 30.0  # a connection silent this long is closed (its thread ends)


def static_files() -> dict[str, bytes]:
    """The page's files, from the package (setuptools package-data)."""
    root = files("vtk.view") / "static"
    return {name: (root / name).read_bytes() for name in STATIC}


class ViewServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, view: ShardSetView, host: str = "127.0.0.1", port: int = 8000,
                 log=None, idle_timeout: float = IDLE_TIMEOUT_S):
        self.view = view
        self.idle_timeout = idle_timeout
        self.posters = LRU(POSTER_BUDGET, len)
        self.static = static_files()
        self.log = log  # a callable taking one line, or None for quiet
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, port), Handler)
        self.allowed_hosts = _loopback_hosts(host, self.server_address[1])

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}/"


def _loopback_hosts(host: str, port: int) -> set[str] | None:
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        return None
    names = {host, "localhost", "127.0.0.1", "[::1]"}
    return {n for name in names for n in (name, f"{name}:{port}")}


class Handler(BaseHTTPRequestHandler):
    server: ViewServer
    server_version = "vtk-view"
    protocol_version = "HTTP/1.1"  # keep-alive: a video element makes many range requests

    def setup(self):
        # every socket read and write is bounded: an idle keep-alive connection (or a client
        # that stops reading) is closed and its thread ends, instead of one thread each for ever
        self.timeout = self.server.idle_timeout
        super().setup()

    def do_GET(self):
        self._handle(head=False)

    def do_HEAD(self):
        self._handle(head=True)

    def log_message(self, format, *args):
        if self.server.log:
            self.server.log(f"{self.address_string()} {format % args}")

    def log_request(self, code="-", size="-"):
        pass  # errors are logged; every poster and range request would drown them

    # --- dispatch ------------------------------------------------------------------------

    def _handle(self, head: bool) -> None:
        self.head = head
        try:
            hosts = self.server.allowed_hosts
            if hosts is not None and self.headers.get("Host", "") not in hosts:
                return self._text(HTTPStatus.FORBIDDEN, "wrong Host for this server")
            url = urlsplit(self.path)
            path, query = url.path, {k: v[-1] for k, v in parse_qs(url.query).items()}
            name = "index.html" if path in ("/", "/index.html") else path[1:]
            if name in self.server.static:
                csp = PAGE_CSP if name == "index.html" else None
                return self._send(200, self.server.static[name], name.rsplit(".", 1)[1], csp=csp)
            if path == "/data.js":  # the static export's data; live, the page asks /api
                return self._send(200, b"window.VTK_DATA = null;\n", "js")
            if path.startswith("/api/"):
                return self._api(path[5:], query)
            m = MEDIA.fullmatch(path)
            if m and (m[1], m[4]) in (("media", "mp4"), ("poster", "jpg")):
                file, row = unquote(m[2]), int(m[3])
                return self._mp4(file, row) if m[1] == "media" else self._poster(file, row)
            if path.startswith("/files/"):
                return self._file(unquote(path[len("/files/"):]))
            self._not_found()
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True  # the browser dropped a range request, or stalled
        except Exception as e:  # one bad request must not stop the server
            self.log_error("%s: %s", self.path, e)
            try:
                self._text(HTTPStatus.INTERNAL_SERVER_ERROR, f"error: {e}")
            except OSError:
                pass

    def _api(self, name: str, q: dict) -> None:
        view = self.server.view
        try:
            if name == "card":
                body = view.summary()
            elif name == "clips":
                body = view.query(q=q.get("q", ""), label=q.get("label", ""),
                                  sort=q.get("sort", ""), order=q.get("order", "desc"),
                                  offset=int(q.get("offset", 0)), limit=int(q.get("limit", 24)))
            elif name == "failures":
                body = view.failure_page(q.get("reason", ""), int(q.get("offset", 0)),
                                         int(q.get("limit", 100)))
            else:
                return self._not_found()
        except ValueError as e:  # offset=abc
            return self._text(HTTPStatus.BAD_REQUEST, f"bad query: {e}")
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        self._send(200, data, "json", cache="no-store")

    # --- members and files ---------------------------------------------------------------

    def _mp4(self, file: str, row: int) -> None:
        where = self.server.view.member(file, row, "mp4")
        if where is None:
            return self._not_found()
        path, off, size = where
        start, end = 0, size - 1
        status, extra = 200, {}
        m = RANGE.fullmatch(self.headers.get("Range", "").strip())
        if m and (m[1] or m[2]):
            if m[1]:
                start, end = int(m[1]), min(int(m[2]) if m[2] else size - 1, size - 1)
            else:
                start = max(0, size - int(m[2]))
            if start > end:
                return self._send(416, b"", "mp4", headers={"Content-Range": f"bytes */{size}"})
            status, extra = 206, {"Content-Range": f"bytes {start}-{end}/{size}"}
        with open(path, "rb") as f:
            if not header_ok(_pread(f, 512, off - 512), size):
                return self._text(HTTPStatus.INTERNAL_SERVER_ERROR,
                                  f"{file} row {row}: the .idx does not match the tar")
            data = b"" if self.head else _pread(f, end - start + 1, off + start)
        if not self.head and len(data) != end - start + 1:  # the tar was cut short meanwhile
            return self._text(HTTPStatus.INTERNAL_SERVER_ERROR,
                              f"{file} row {row}: the tar ends before this member does")
        extra["Accept-Ranges"] = "bytes"
        self._send(status, data, "mp4", headers=extra, cache="private, max-age=300",
                   length=end - start + 1)

    def _poster(self, file: str, row: int) -> None:
        posters = self.server.posters
        jpeg = posters.get((file, row))
        if jpeg is None:
            try:
                mp4 = self.server.view.read(file, row, "mp4")
                if mp4 is None:
                    return self._not_found()
                jpeg = poster_jpeg(mp4)
            except Exception as e:  # a member that does not decode has no poster
                return self._text(HTTPStatus.NOT_FOUND, f"no poster: {e}")
            posters.put((file, row), jpeg)
        self._send(200, jpeg, "jpg", cache="private, max-age=300")

    def _file(self, rel: str) -> None:
        path = self.server.view.set_file(rel)
        if path is None:
            return self._not_found()
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            f.seek(0)
            self._send(200, b"", rel.rsplit(".", 1)[-1], length=size, cache="no-cache")
            left = 0 if self.head else size
            while left > 0:
                chunk = f.read(min(left, 1 << 20))
                if not chunk:  # cut short while being sent: the Content-Length cannot be met
                    self.close_connection = True  # so the client sees the end, never waits
                    break
                self.wfile.write(chunk)
                left -= len(chunk)

    # --- responses -----------------------------------------------------------------------

    def _not_found(self) -> None:
        self._text(HTTPStatus.NOT_FOUND, "not found")

    def _text(self, status: int, text: str) -> None:
        self._send(status, (text + "\n").encode("utf-8"), "txt", cache="no-store")

    def _send(self, status: int, body: bytes, kind: str, headers: dict | None = None,
              csp: str | None = None, cache: str | None = None, length: int | None = None):
        self.send_response(status)
        self.send_header("Content-Type", TYPES.get(kind, "text/plain; charset=utf-8"))
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        if csp:
            self.send_header("Content-Security-Policy", csp)
        if cache:
            self.send_header("Cache-Control", cache)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if body and not self.head:
            self.wfile.write(body)


def _pread(f, n: int, offset: int) -> bytes:
    return os.pread(f.fileno(), n, offset)


def start_in_thread(folder_or_view, host: str = "127.0.0.1", port: int = 0) -> ViewServer:
    """A server on a background thread (tests, notebooks); stop it with ``.shutdown()``."""
    view = (folder_or_view if isinstance(folder_or_view, ShardSetView)
            else ShardSetView(folder_or_view))
    server = ViewServer(view, host, port)
    threading.Thread(target=server.serve_forever, name="vtk-view", daemon=True).start()
    return server
