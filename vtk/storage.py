"""Where shard sets live: a local folder or any fsspec URL (``s3://bucket/prefix``, ``gs://``...).

Object stores have no rename and no folders, so the few operations the shard writer and the
readers need are defined here once, with the same promise for every store: **a file is seen
whole or not at all.**

- Local paths use the OS (a temporary name, then ``os.replace``).
- Object stores (``OBJECT_STORES``: S3, GCS, Azure) publish an object only when its upload
  completes: a single PUT, or a multipart upload at its CompleteMultipartUpload. A file is
  uploaded whole, straight to its final key; a killed upload leaves nothing under that key.
- Any other fsspec filesystem (sftp, a mounted ``file://``...) may show a file while it is
  being written: it gets a temporary name beside the final one, then ``fs.mv``.

Credentials and endpoints come from the standard AWS variables (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_PROFILE``, ``AWS_DEFAULT_REGION``),
read by botocore. ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` (an S3-compatible server:
MinIO, Ceph, moto) is passed to s3fs explicitly: botocore reads the variable itself only in
its releases since 2023 (1.43 does), older ones ignore it. fsspec and s3fs are the ``s3`` extra, imported on first use.

Failures of the store are one ``VtkError`` line naming the URL and the reason (endpoint not
reachable, bucket missing, no or bad credentials): ``errors(url)``.
"""

from __future__ import annotations

import builtins
import contextlib
import glob as _glob
import json
import os
import re
import shutil
import socket
import tempfile
import threading
import time
import uuid

from vtk.errors import VtkError, install_hint

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
OBJECT_STORES = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl"}
READ_BLOCK = 16 * 2**20  # bytes fetched per request when streaming a tar
RANDOM_BLOCK = 2**20  # read ahead of each read at an offset (see open_random)


def is_url(path) -> bool:
    """True for ``scheme://...`` (anything fsspec handles), False for a local path."""
    return isinstance(path, str) and _URL.match(path) is not None


def protocol(url: str) -> str:
    m = _URL.match(url)
    return m.group(1).lower() if m else "file"


def endpoint() -> str | None:
    """The S3 endpoint the AWS variables name (None: AWS itself)."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def _options(proto: str) -> dict:
    if proto not in ("s3", "s3a"):
        return {}
    opts: dict = {"config_kwargs": {"connect_timeout": 5, "read_timeout": 60,
                                    "retries": {"max_attempts": 2}}}
    if endpoint():
        opts["endpoint_url"] = endpoint()
    # passed on, not only left to botocore: fsspec caches a filesystem per set of options, so
    # one made before the variables changed is not reused with stale credentials
    for opt, var in (("key", "AWS_ACCESS_KEY_ID"), ("secret", "AWS_SECRET_ACCESS_KEY"),
                     ("token", "AWS_SESSION_TOKEN"), ("profile", "AWS_PROFILE")):
        if os.environ.get(var):
            opts[opt] = os.environ[var]
    return opts


def filesystem(url: str):
    """(fsspec filesystem, path within it) for ``url``. fsspec caches filesystems per process
    (and drops the cache in a forked child), so this is cheap to call again."""
    try:
        import fsspec
    except ImportError:
        raise VtkError(f"{url}: reading or writing URLs needs fsspec (and s3fs for s3://); "
                       f"install it with: {install_hint('fsspec', 's3')}") from None
    proto = protocol(url)
    try:
        return fsspec.core.url_to_fs(url, **_options(proto))
    except ImportError as e:
        raise VtkError(f"{url}: no filesystem for {proto}:// ({e}); install it with: "
                       f"{install_hint('s3fs', 's3')}") from None
    except ValueError as e:
        raise VtkError(f"{url}: {e}") from None


def is_object_store(url: str) -> bool:
    return protocol(url) in OBJECT_STORES


# --- errors -------------------------------------------------------------------------------------


def describe_error(url: str, e: BaseException) -> str | None:
    """One line for a storage failure, or None when ``e`` is not one."""
    name = type(e).__name__
    text = str(e).splitlines()[0] if str(e) else name
    where = f" at {endpoint()}" if endpoint() and protocol(url) in ("s3", "s3a") else ""
    if name in ("NoCredentialsError", "PartialCredentialsError"):
        return (f"{url}: no AWS credentials found; set AWS_ACCESS_KEY_ID and "
                f"AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)")
    if name in ("EndpointConnectionError", "ConnectTimeoutError", "ClientConnectorError",
                "ConnectionClosedError") or isinstance(e, (ConnectionError, socket.timeout)):
        return (f"{url}: cannot reach the object store{where} ({text}); check "
                f"AWS_ENDPOINT_URL and the network")
    if isinstance(e, FileNotFoundError):  # a missing key is the caller's to judge
        if "bucket does not exist" in text.lower():
            return f"{url}: bucket {bucket(url)!r} does not exist{where}; create it first"
        return None
    if isinstance(e, PermissionError) or name in ("ClientError",) and (
            "AccessDenied" in text or "InvalidAccessKeyId" in text or "Forbidden" in text):
        return (f"{url}: access denied{where} ({text}); check the credentials "
                f"(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) and the bucket's policy")
    if isinstance(e, OSError) or name in ("ClientError", "BotoCoreError"):
        return f"{url}: {text}"
    return None


@contextlib.contextmanager
def errors(url: str):
    """Turn a store's failure inside the block into one VtkError line naming ``url``."""
    try:
        yield
    except VtkError:
        raise
    except Exception as e:
        line = describe_error(url, e)
        if line is None:
            raise
        raise VtkError(line) from None


def bucket(url: str) -> str:
    return url[len(protocol(url)) + 3:].split("/", 1)[0]


def probe(url: str) -> None:
    """Fail with one line now if the store behind ``url`` cannot be used (endpoint down, bucket
    missing, credentials refused); listing an absent bucket would otherwise look empty."""
    if not is_url(url):
        return
    fs, path = filesystem(url)
    root = path.split("/", 1)[0] if is_object_store(url) else path
    with errors(url):
        if is_object_store(url):
            fs.ls(root, detail=False)
        else:
            fs.exists(path)


# --- paths --------------------------------------------------------------------------------------


def join(base: str, *names: str) -> str:
    if is_url(base):
        return "/".join([str(base).rstrip("/"), *names])
    return os.path.join(base, *names)


def basename(path: str) -> str:
    return str(path).rstrip("/").rsplit("/", 1)[-1] if is_url(path) else os.path.basename(path)


def _full(fs, url: str, path: str) -> str:
    """A path fsspec returned, as a URL of the same scheme as ``url``."""
    return f"{protocol(url)}://{path.split('://', 1)[-1]}"


def glob(pattern: str) -> list[str]:
    """Sorted matches of a glob pattern (``*``, ``?``, ``[0-9]``)."""
    if not is_url(pattern):
        return sorted(_glob.glob(pattern))
    fs, path = filesystem(pattern)
    with errors(pattern):
        return sorted(_full(fs, pattern, p) for p in fs.glob(path))


def exists(path: str) -> bool:
    if not is_url(path):
        return os.path.exists(path)
    fs, p = filesystem(path)
    with errors(path):
        return fs.exists(p)


def isfile(path: str) -> bool:
    if not is_url(path):
        return os.path.isfile(path)
    fs, p = filesystem(path)
    with errors(path):
        return fs.isfile(p)


def isdir(path: str) -> bool:
    """A folder, or for an object store a prefix with objects under it."""
    if not is_url(path):
        return os.path.isdir(path)
    fs, p = filesystem(path)
    with errors(path):
        return fs.isdir(p)


def size(path: str) -> int:
    if not is_url(path):
        return os.path.getsize(path)
    fs, p = filesystem(path)
    with errors(path):
        return int(fs.size(p))


def stamp(path: str) -> str:
    """What changes when a file is rewritten: ``size:mtime_ns`` locally, ``size:ETag`` (or the
    modification time) for a URL. Caches keyed on their inputs use it."""
    if not is_url(path):
        st = os.stat(path)
        return f"{st.st_size}:{st.st_mtime_ns}"
    fs, p = filesystem(path)
    with errors(path):
        info = fs.info(p)
    version = info.get("ETag") or info.get("etag") or info.get("LastModified") or info.get("mtime")
    return f"{info.get('size')}:{str(version).strip(chr(34))}"


def open(path: str, mode: str = "rb", **kwargs):
    """A file object; for a URL, a buffered fsspec file (reads fetched ``READ_BLOCK`` at a time)."""
    if not is_url(path):
        return builtins.open(path, mode, **kwargs)
    fs, p = filesystem(path)
    if "b" in mode and "r" in mode:
        kwargs.setdefault("block_size", READ_BLOCK)
    with errors(path):
        return fs.open(p, mode, **kwargs)


def open_random(path: str):
    """A binary file for reads at scattered offsets (a loader reading samples by their
    headers' offsets): for a URL each read fetches what it asks for plus ``RANDOM_BLOCK``, so
    a sample's mp4, txt and json (adjacent members) usually come in one request."""
    if not is_url(path):
        return builtins.open(path, "rb")
    return open(path, "rb", block_size=RANDOM_BLOCK)


def read_bytes(path: str, start: int | None = None, end: int | None = None) -> bytes:
    if not is_url(path):
        with builtins.open(path, "rb") as f:
            if start is not None:
                f.seek(start, os.SEEK_END if start < 0 else os.SEEK_SET)
            return f.read() if end is None else f.read(end - (start or 0))
    fs, p = filesystem(path)
    with errors(path):
        return fs.cat_file(p, start=start, end=end)


def read_text(path: str) -> str:
    return read_bytes(path).decode("utf-8")


def read_json(path: str):
    return json.loads(read_text(path))


def remove(path: str) -> None:
    """Delete a file; one already gone is fine."""
    if not is_url(path):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
        return
    fs, p = filesystem(path)
    with errors(path), contextlib.suppress(FileNotFoundError):
        fs.rm_file(p)


def _temp_name(final: str) -> str:
    return join(final.rsplit("/", 1)[0], f".{basename(final)}.tmp-{os.getpid()}-"
                f"{uuid.uuid4().hex[:8]}")


def put_file(local: str, final: str) -> None:
    """Publish the local file ``local`` as ``final``, whole: before this returns nothing is
    under ``final`` (or the old content is, for a file being replaced)."""
    if not is_url(final):
        tmp = f"{final}.tmp-{os.getpid()}"
        try:
            shutil.copyfile(local, tmp)
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            raise
        return
    fs, p = filesystem(final)
    with errors(final):
        if is_object_store(final):
            fs.put_file(local, p)  # a PUT (or multipart upload) appears only when complete
            return
        tmp = _temp_name(final)
        _, tp = filesystem(tmp)
        try:
            fs.put_file(local, tp)
            fs.mv(tp, p)
        except BaseException:
            with contextlib.suppress(Exception):
                fs.rm_file(tp)
            raise


def write_bytes(path: str, data: bytes) -> None:
    """``data`` as the whole of ``path`` (see ``put_file``)."""
    if not is_url(path):
        tmp = f"{path}.tmp-{os.getpid()}"
        try:
            with builtins.open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            raise
        return
    fs, p = filesystem(path)
    with errors(path):
        if is_object_store(path):
            fs.pipe_file(p, data)
            return
    with tempfile.NamedTemporaryFile(delete=False) as f:
        f.write(data)
    try:
        put_file(f.name, path)
    finally:
        os.remove(f.name)


def write_json(path: str, data, indent: int | None = 1) -> None:
    text = json.dumps(data, indent=indent, ensure_ascii=False, default=str) + "\n"
    write_bytes(path, text.encode("utf-8"))


def create_exclusive(path: str, data: bytes) -> bool:
    """Write ``path`` only if nothing is there; False if something is. On S3 this is a
    conditional PUT (``If-None-Match: *``), so of two racing writers exactly one wins; on other
    fsspec stores it is a check, then a write (a race between the two is not excluded)."""
    fs, p = filesystem(path)
    with errors(path):
        if protocol(path) in ("s3", "s3a"):
            try:
                fs.pipe_file(p, data, mode="create")
            except FileExistsError:
                return False
            return True
        if fs.exists(p):
            return False
        fs.pipe_file(p, data)
        return True


# --- the lock of a shard set at a URL ---------------------------------------------------------


LEASE_S = 120.0  # a lock not renewed for this long belongs to a dead writer
RENEW_S = 20.0


class RemoteLock:
    """What stands for ``vtk.locks``' ``flock`` on a store that has none: the object
    ``URL/.lock`` holding the writer's host, PID, a token and the time its lease ends.

    Taken with a conditional create, so two writers starting together cannot both hold it.
    A thread renews the lease every ``RENEW_S``; a writer killed with -9 stops renewing, and
    its lock is taken over once the lease has run out, or at once from the same host when its
    PID is gone (the common case: a killed ``vtk shard`` resumed on the same machine).
    ``check()`` (before each shard is published and before index.json) fails if another
    writer has taken the lock over meanwhile."""

    def __init__(self, url: str):
        self.url = url
        self.path = join(url, ".lock")
        self.token = uuid.uuid4().hex
        self.host = socket.gethostname()
        self._stop = threading.Event()
        self._lost: str | None = None
        self._thread: threading.Thread | None = None

    def _record(self) -> bytes:
        return json.dumps({"host": self.host, "pid": os.getpid(), "token": self.token,
                           "expires": time.time() + LEASE_S}).encode()

    def _holder(self) -> dict | None:
        try:
            return json.loads(read_bytes(self.path))
        except FileNotFoundError:
            return None
        except ValueError:
            return {}  # damaged: treated as stale below

    def acquire(self) -> RemoteLock:
        for _ in range(2):
            if create_exclusive(self.path, self._record()):
                self._start()
                return self
            held = self._holder()
            if held is None:
                continue  # released in between: try again
            if not _stale(held, self.host):
                left = max(0, int(float(held.get("expires", 0)) - time.time()))
                raise VtkError(f"{self.url} is in use by vtk process {held.get('pid')} on "
                               f"{held.get('host')} (lock {self.path}, lease renewed every "
                               f"{RENEW_S:.0f} s, {left} s left); wait for it or stop it")
            remove(self.path)  # its writer is gone: a killed run
        raise VtkError(f"{self.url}: another writer took the lock {self.path} at the same time")

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._renew, name="vtk-lock-lease", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(RENEW_S):
            try:
                held = self._holder()
                if not held or held.get("token") != self.token:
                    self._lost = f"taken over by vtk process {(held or {}).get('pid')} on " \
                                 f"{(held or {}).get('host')}"
                    return
                write_bytes(self.path, self._record())
            except Exception:  # a failed renewal: tried again; check() reports a takeover
                continue

    def check(self) -> None:
        if self._lost is None:
            held = self._holder()
            if not held or held.get("token") != self.token:
                self._lost = "removed" if not held else \
                    f"taken over by vtk process {held.get('pid')} on {held.get('host')}"
        if self._lost is not None:
            raise VtkError(f"{self.url}: this writer's lock {self.path} was {self._lost}; "
                           f"stopped so that two writers never mix one set")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
            with contextlib.suppress(Exception):
                held = self._holder()
                if held and held.get("token") == self.token:
                    remove(self.path)

    def __enter__(self) -> RemoteLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _stale(held: dict, host: str) -> bool:
    if not held:
        return True
    if float(held.get("expires", 0)) < time.time():
        return True
    from vtk.fileio import pid_alive

    pid = held.get("pid")
    return held.get("host") == host and isinstance(pid, int) and pid != os.getpid() \
        and not pid_alive(pid)


def lock(url: str) -> RemoteLock:
    """The lock on the shard set at ``url`` for this process (see ``RemoteLock``)."""
    return RemoteLock(url).acquire()
