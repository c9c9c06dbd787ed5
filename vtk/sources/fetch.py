"""Sources at a URL: the worker that decodes a source fetches its bytes itself.

A source item's ``path`` may be any fsspec URL (``s3://``, ``gs://``...) or an ``http(s)://``
URL. The driver (the local engine's parent, the Ray driver) only lists and plans; the worker
that takes the source downloads it, in chunks, to a file of its own in the temp dir (a
``vtk-shard-PID-*`` folder, which ``vtk.storage.sweep_staging`` removes if the worker is
killed), decodes that file, and removes it: memory stays bounded however long the video.

http(s) downloads are done as video2dataset does them (a streamed GET, a timeout, a few
retries, per-source stats), with the standard library: ``urllib``, reading what arrives
(``read1``) so that a server that stalls mid-body is noticed within ``timeout`` seconds.
Object stores are read through fsspec with ``vtk.storage``'s timeouts.

Transient failures (a timeout, a connection refused or reset, HTTP 429 and 5xx, a body cut
short) are tried ``attempts`` times in all, waiting ``backoff``, then twice that... between
them; the rest (404, 403, a missing key) at once. What cannot be read becomes a recorded
failure naming the URL and the reason (:class:`FetchError`); every fetch, failed or not,
leaves a record (URL, status, bytes, seconds, attempts) for the shard's ``stats/``.

``concurrency`` caps the downloads running at a time on one machine, across workers and
runs: a download holds one of ``concurrency`` lock files (``flock``) in the temp dir.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

from vtk import storage
from vtk.errors import VtkError

CHUNK = 1 << 20  # bytes read and written at a time
HTTP = ("http", "https")


@dataclass(frozen=True)
class FetchConfig:
    timeout: float = 60.0  # seconds an attempt may wait for the next bytes
    attempts: int = 3
    backoff: float = 1.0  # seconds before the first retry; doubled for each next one
    concurrency: int | None = None  # downloads at a time on this machine; None: no cap


class FetchError(Exception):
    """A source that could not be fetched: ``kind`` (not-found, forbidden, timeout,
    truncated, http-error, unreachable) and a reason naming the URL."""

    def __init__(self, kind: str, reason: str, status: int | None = None):
        super().__init__(reason)
        self.kind, self.reason, self.status = kind, reason, status
        self.record: dict | None = None  # the fetch's record, once its attempts are spent


class _Retry(Exception):
    """A transient failure: tried again while attempts are left."""

    def __init__(self, error: FetchError):
        self.error = error


def is_remote(path: str | None) -> bool:
    """Whether a source path is read over the network (a worker fetches it)."""
    return path is not None and not storage.store(path).local


@contextlib.contextmanager
def local_copy(item, cfg: FetchConfig | None = None) -> Iterator[tuple[object, dict | None]]:
    """``(item, record)``: for a remote source, the item with ``path`` on a local copy (the
    URL stays its ``source``) and the fetch record; for a local one, the item as it is and
    None. Raises :class:`FetchError` (its record in ``error.record``)."""
    if not is_remote(item.path):
        yield item, None
        return
    cfg = cfg or FetchConfig()
    url = item.path
    folder = _spool()
    try:
        dest = os.path.join(folder, "source" + _ext(url))
        record = fetch(url, dest, cfg)
        meta = dict(item.meta)
        sidecar = meta.pop("sidecar", None)
        if sidecar:  # a caption beside a video in a folder URL: small, read whole
            try:
                meta["caption"] = _caption(sidecar, cfg)
            except FetchError as e:
                e.record = {**record, "status": e.kind}
                raise
        yield dataclasses.replace(item, path=dest, meta=meta, url=url), record
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _spool() -> str:
    storage.sweep_staging()  # what a killed worker left
    return tempfile.mkdtemp(prefix=f"{storage.STAGING_PREFIX}{os.getpid()}-")


def _ext(url: str) -> str:
    name = url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    ext = os.path.splitext(name)[1]
    return ext if ext.isascii() and 1 < len(ext) <= 6 else ""


def _caption(url: str, cfg: FetchConfig) -> str:
    with tempfile.TemporaryDirectory(prefix=f"{storage.STAGING_PREFIX}{os.getpid()}-") as d:
        path = os.path.join(d, "caption.txt")
        fetch(url, path, cfg)
        raw = open(path, "rb").read()
    try:
        return raw.decode("utf-8").strip()
    except UnicodeDecodeError as e:
        raise FetchError("non-utf8", f"caption file {url} is not UTF-8 ({e.reason} at byte "
                                     f"{e.start})") from None


def fetch(url: str, dest: str, cfg: FetchConfig) -> dict:
    """Download ``url`` to the local file ``dest``; the record of how it went. Raises
    :class:`FetchError` with the record as ``.record``."""
    t0 = time.perf_counter()
    record = {"url": url, "status": "ok", "bytes": 0, "seconds": 0.0, "attempts": 0}
    wait = cfg.backoff
    with _slot(cfg.concurrency):
        while True:
            record["attempts"] += 1
            try:
                record["bytes"] = _http(url, dest, cfg) if storage.protocol(url) in HTTP \
                    else _fsspec(url, dest)
                record["seconds"] = round(time.perf_counter() - t0, 3)
                return record
            except (_Retry, FetchError) as e:
                error = e.error if isinstance(e, _Retry) else e
                if isinstance(e, _Retry) and record["attempts"] < cfg.attempts:
                    time.sleep(wait)
                    wait *= 2
                    continue
                record.update(status=error.kind, seconds=round(time.perf_counter() - t0, 3))
                if error.status is not None:
                    record["http_status"] = error.status
                if record["attempts"] > 1:
                    error.reason += f" (after {record['attempts']} attempts)"
                error.record = record
                raise error from None


def _http(url: str, dest: str, cfg: FetchConfig) -> int:
    from vtk import __version__

    request = urllib.request.Request(url, headers={"User-Agent": f"vtk/{__version__}"})
    try:
        with urllib.request.urlopen(request, timeout=cfg.timeout) as response, \
                open(dest, "wb") as f:
            length = response.headers.get("Content-Length")
            got = 0
            while chunk := response.read1(CHUNK):
                f.write(chunk)
                got += len(chunk)
    except urllib.error.HTTPError as e:
        reason = f"{url}: HTTP {e.code} {e.reason}"
        if e.code == 404 or e.code == 410:
            raise FetchError("not-found", reason, e.code) from None
        if e.code in (401, 403):
            raise FetchError("forbidden", reason, e.code) from None
        error = FetchError("http-error", reason, e.code)
        if e.code == 429 or e.code >= 500:
            raise _Retry(error) from None
        raise error from None
    except TimeoutError:
        raise _Retry(FetchError("timeout", f"{url}: no data for {cfg.timeout:g} s")) from None
    except http.client.IncompleteRead as e:
        raise _Retry(FetchError("truncated", f"{url}: the body ended after "
                                             f"{len(e.partial)} bytes")) from None
    except urllib.error.URLError as e:
        why = e.reason
        if isinstance(why, TimeoutError):
            raise _Retry(FetchError("timeout", f"{url}: no answer in {cfg.timeout:g} s")) \
                from None
        raise _Retry(FetchError("unreachable", f"{url}: {why}")) from None
    except (ConnectionError, http.client.HTTPException) as e:
        raise _Retry(FetchError("unreachable", f"{url}: {type(e).__name__}: {e}")) from None
    if length is not None and length.isdigit() and got < int(length):
        raise _Retry(FetchError("truncated", f"{url}: got {got} of {length} bytes (the "
                                             f"connection closed early)"))
    return got


def _fsspec(url: str, dest: str) -> int:
    try:
        fs, path = storage.filesystem(url)
        with fs.open(path, "rb", block_size=CHUNK * 8) as src, open(dest, "wb") as f:
            shutil.copyfileobj(src, f, CHUNK)
            return f.tell()
    except FileNotFoundError:
        raise FetchError("not-found", f"{url}: no such object") from None
    except VtkError as e:  # the filesystem could not be made (an extra missing)
        raise FetchError("unreadable", str(e)) from None
    except Exception as e:  # noqa: BLE001 - the store's own errors, named by vtk.storage
        line = storage.describe_error(url, e) or f"{url}: {type(e).__name__}: {e}"
        if isinstance(e, PermissionError) or "access denied" in line:
            raise FetchError("forbidden", line) from None
        raise _Retry(FetchError("unreachable" if "cannot reach" in line else "error",
                                line)) from None


@contextlib.contextmanager
def _slot(concurrency: int | None):
    """One of ``concurrency`` download slots of this machine, held while it downloads."""
    if not concurrency:
        yield
        return
    import fcntl

    folder = os.path.join(tempfile.gettempdir(), "vtk-download-slots")
    os.makedirs(folder, exist_ok=True)
    fds = [os.open(os.path.join(folder, f"slot-{i}"), os.O_RDWR | os.O_CREAT, 0o666)
           for i in range(concurrency)]
    held = None
    try:
        for fd in fds:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held = fd
                break
            except BlockingIOError:
                continue
        if held is None:  # all busy: wait for one (spread over the slots by PID)
            held = fds[os.getpid() % concurrency]
            fcntl.flock(held, fcntl.LOCK_EX)
        yield
    finally:
        for fd in fds:
            os.close(fd)  # closing drops the flock
