"""Where shard sets live: a local folder or any fsspec URL (``s3://bucket/prefix``, ``gs://``...).

One store interface, two implementations, chosen once per path by :func:`store`:

- :class:`LocalStore`: the OS. A file is written under a temporary name beside its final one,
  then ``os.replace``d; a folder's lock is a ``flock`` (``vtk.locks``).
- :class:`FsspecStore`: any fsspec filesystem. Object stores (``OBJECT_STORES``: S3, GCS,
  Azure) publish an object only when its upload completes (a single PUT, or a multipart upload
  at its CompleteMultipartUpload), so a file is uploaded whole, straight to its final key, and
  a killed upload leaves nothing under that key. Other fsspec filesystems (sftp, a mounted
  ``file://``...) may show a file while it is written: it gets a temporary name beside the
  final one, then ``fs.mv``. A folder's lock is an object with a lease (:class:`RemoteLock`).

Both keep one promise: **a file is seen whole or not at all.** The module-level functions
(``exists``, ``glob``, ``read_json``, ``write_json``, ``move``...) ask the store of their path,
so callers never ask which kind of place a path is; what differs between the two is said by
the store's methods (``staging``: where a file is written before it is published; ``lock``)
and by one attribute, ``local`` (a path this machine's own libraries can open: SQLite, a
``.idx`` read line by line).

Credentials and endpoints come from the standard AWS variables (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_PROFILE``, ``AWS_DEFAULT_REGION``),
read by botocore. ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` (an S3-compatible server:
MinIO, Ceph, moto) is passed to s3fs explicitly: botocore reads the variable itself only in
its releases since 2023 (1.43 does), older ones ignore it. fsspec and s3fs are the ``s3``
extra, imported on first use.

A store that stops answering is not waited on for ever: S3 requests have a 5 s connect and a
15 s read timeout and are tried ``S3_ATTEMPTS`` times (s3fs's backoff), and every call has a
deadline (``CALL_S``: 30 s, or ``VTK_STORE_TIMEOUT``; plus a second per ``MIN_RATE`` bytes
sent), since botocore sends uploads with ``Expect: 100-continue`` and aiohttp waits for the
``100 Continue`` with no timeout of its own. Failures of the store are one ``VtkError`` line naming the URL and the reason (cannot
reach it, bucket missing, no or bad credentials): ``errors(url)``.
"""

from __future__ import annotations

import builtins
import contextlib
import glob as _glob
import json
import math
import os
import re
import shutil
import socket
import tempfile
import threading
import time
import uuid

from vtk.errors import VtkError, install_hint
from vtk.fileio import json_text, pid_alive, remove_stale_temps, replace_atomic, write_bytes_atomic

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
OBJECT_STORES = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl"}
READ_BLOCK = 16 * 2**20  # bytes fetched per request when streaming a tar
RANDOM_BLOCK = 2**20  # read ahead of each read at an offset (see open_random)
S3_TIMEOUTS = {"connect_timeout": 5, "read_timeout": 15}
S3_ATTEMPTS = 3  # per request, s3fs's retry loop (botocore's own retries are off)
# deadline of one store call, plus a second per MIN_RATE bytes it sends
CALL_S = float(os.environ.get("VTK_STORE_TIMEOUT") or 30)
MIN_RATE = 2**20
STAGING_PREFIX = "vtk-shard-"  # local staging folders of writers to a URL: vtk-shard-PID-XXXX
_STAGING = re.compile(re.escape(STAGING_PREFIX) + r"(\d+)-")


def is_url(path) -> bool:
    """True for ``scheme://...`` (anything fsspec handles), False for a local path."""
    return isinstance(path, str) and _URL.match(path) is not None


def store(path) -> LocalStore | FsspecStore:
    """The store that holds ``path``: the one place a path's kind is looked at."""
    return FsspecStore(protocol(path)) if is_url(path) else LOCAL


def protocol(url: str) -> str:
    m = _URL.match(url)
    return m.group(1).lower() if m else "file"


def endpoint() -> str | None:
    """The S3 endpoint the AWS variables name (None: AWS itself)."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def _options(proto: str) -> dict:
    if proto not in ("s3", "s3a"):
        return {}
    # botocore counts the first attempt in total_max_attempts: 1 leaves the retries to s3fs
    opts: dict = {"config_kwargs": {**S3_TIMEOUTS, "retries": {"total_max_attempts": 1}}}
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
        fs, path = fsspec.core.url_to_fs(url, **_options(proto))
    except ImportError as e:
        raise VtkError(f"{url}: no filesystem for {proto}:// ({e}); install it with: "
                       f"{install_hint('s3fs', 's3')}") from None
    except ValueError as e:
        raise VtkError(f"{url}: {e}") from None
    if proto in ("s3", "s3a"):
        fs.retries = S3_ATTEMPTS  # a class attribute of s3fs, not an option it takes
    return fs, path


def is_object_store(url: str) -> bool:
    return protocol(url) in OBJECT_STORES


# --- errors -------------------------------------------------------------------------------------

_UNREACHABLE = ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError",
                "ClientConnectorError", "ConnectionClosedError", "ServerTimeoutError",
                "ServerDisconnectedError", "FSTimeoutError")


def describe_error(url: str, e: BaseException) -> str | None:
    """One line for a storage failure, or None when ``e`` is not one."""
    name = type(e).__name__
    text = str(e).splitlines()[0] if str(e) else name
    if name == "FSTimeoutError":  # the call's deadline, with no text of its own
        text = f"no answer within {CALL_S:g} s"
    where = f" at {endpoint()}" if endpoint() and protocol(url) in ("s3", "s3a") else ""
    if name in ("NoCredentialsError", "PartialCredentialsError"):
        return (f"{url}: no AWS credentials found; set AWS_ACCESS_KEY_ID and "
                f"AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)")
    if name in _UNREACHABLE or isinstance(e, (ConnectionError, TimeoutError)):
        return (f"{url}: cannot reach the object store{where} ({text}); check "
                f"AWS_ENDPOINT_URL and the network")
    if isinstance(e, FileExistsError):  # a conditional create that lost: the caller's too
        return None
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


# --- the two stores -----------------------------------------------------------------------------


class LocalStore:
    """A folder on this machine's file system."""

    local = True

    def join(self, base: str, *names: str) -> str:
        return os.path.join(base, *names)

    def basename(self, path: str) -> str:
        return os.path.basename(path)

    def parent(self, path: str) -> str:
        return os.path.dirname(path)

    def absolute(self, path: str) -> str:
        return os.path.abspath(path)

    def clean(self, path: str) -> str:
        return path

    def probe(self, path: str) -> None:
        """Nothing to check before use: a missing folder is made, a bad one fails on write."""

    def glob(self, pattern: str) -> list[str]:
        return sorted(_glob.glob(pattern))

    def walk(self, folder: str) -> list[str]:
        """'/'-separated paths of the files under ``folder``, hidden names skipped, in
        ``os.walk`` order with sorted names: a folder's files, then its subfolders'."""
        out = []
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            rel = os.path.relpath(dirpath, folder)
            for name in sorted(f for f in filenames if not f.startswith(".")):
                out.append(name if rel == "." else f"{rel.replace(os.sep, '/')}/{name}")
        return out

    def listdir(self, path: str) -> list[str]:
        try:
            return os.listdir(path)
        except OSError:
            return []

    def sizes(self, folder: str, suffix: str) -> dict[str, int]:
        return {e.name: e.stat().st_size for e in os.scandir(folder)
                if e.name.endswith(suffix) and e.is_file()}

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def isfile(self, path: str) -> bool:
        return os.path.isfile(path)

    def isdir(self, path: str) -> bool:
        return os.path.isdir(path)

    def size(self, path: str) -> int:
        return os.path.getsize(path)

    def stamp(self, path: str) -> str:
        st = os.stat(path)
        return f"{st.st_size}:{st.st_mtime_ns}"

    def open(self, path: str, mode: str = "rb", **kwargs):
        return builtins.open(path, mode, **kwargs)

    def open_random(self, path: str):
        return builtins.open(path, "rb")

    def read_bytes(self, path: str, start: int | None = None, end: int | None = None) -> bytes:
        with builtins.open(path, "rb") as f:
            if start is not None:
                f.seek(start, os.SEEK_END if start < 0 else os.SEEK_SET)
            return f.read() if end is None else f.read(end - (start or 0))

    def write_bytes(self, path: str, data: bytes) -> None:
        write_bytes_atomic(path, data)

    def put_file(self, local: str, final: str) -> None:
        replace_atomic(final, lambda tmp: shutil.copyfile(local, tmp))

    def publish(self, staged: str, final: str) -> None:
        """A file written in ``staging(folder)`` under its final name (a rename)."""
        os.replace(staged, final)

    def move(self, src: str, dst: str) -> None:
        os.replace(src, dst)

    def remove(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)

    def remove_tree(self, path: str) -> None:
        shutil.rmtree(path, ignore_errors=True)

    def remove_dir(self, path: str) -> None:
        """An empty folder removed (one that is not empty, or gone, is left as it is)."""
        with contextlib.suppress(OSError):
            os.rmdir(path)

    def makedirs(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)

    def sweep_temps(self, folder: str) -> list[str]:
        return remove_stale_temps(folder)

    def create_exclusive(self, path: str, data: bytes) -> bool:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return True

    def lock(self, folder: str):
        from vtk.locks import lock_folder

        return lock_folder(folder)

    def staging(self, folder: str) -> str:
        """Where files bound for ``folder`` are written before they are published: the folder
        itself (a rename publishes them)."""
        return folder

    def unstage(self, stage: str) -> None:
        """Nothing: the staging folder is the set's own."""


class FsspecStore:
    """A place fsspec reaches: an object store (S3, GCS, Azure) or another filesystem."""

    local = False

    def __init__(self, proto: str):
        self.proto = proto
        self.object_store = proto in OBJECT_STORES

    def _call(self, url: str, method: str, *args, sent: int = 0, **kwargs):
        """``fs.METHOD(*args)`` for ``url``, its failure one VtkError line, under a deadline
        when the filesystem is asynchronous (fsspec's sync takes the ``timeout``)."""
        fs, _ = filesystem(url)
        with errors(url):
            if getattr(fs, "async_impl", False):
                kwargs["timeout"] = CALL_S + sent / MIN_RATE
            return getattr(fs, method)(*args, **kwargs)

    def _path(self, url: str) -> str:
        return filesystem(url)[1]

    def _url(self, path: str) -> str:
        """A path fsspec returned, as a URL of this store's scheme."""
        return f"{self.proto}://{path.split('://', 1)[-1]}"

    def join(self, base: str, *names: str) -> str:
        return "/".join([str(base).rstrip("/"), *names])

    def basename(self, path: str) -> str:
        return str(path).rstrip("/").rsplit("/", 1)[-1]

    def parent(self, path: str) -> str:
        return str(path).rstrip("/").rsplit("/", 1)[0]

    def absolute(self, path: str) -> str:
        return path

    def clean(self, path: str) -> str:
        return path.rstrip("/")

    def probe(self, url: str) -> None:
        """Fail with one line now if the store behind ``url`` cannot be used (endpoint down,
        bucket missing, credentials refused); listing an absent bucket would look empty."""
        path = self._path(url)
        if self.object_store:
            self._call(url, "ls", path.split("/", 1)[0], detail=False)
        else:
            self._call(url, "exists", path)

    def glob(self, pattern: str) -> list[str]:
        return sorted(self._url(p) for p in self._call(pattern, "glob", self._path(pattern)))

    def walk(self, folder: str) -> list[str]:
        root = self._path(folder).rstrip("/")
        rel = [p[len(root) + 1:] for p in self._call(folder, "find", root)
               if p.startswith(root + "/")]
        rel = [r for r in rel if not any(part.startswith(".") for part in r.split("/"))]
        # os.walk's order: a folder's files (0) before its subfolders (1), names sorted
        return sorted(rel, key=lambda r: [(1, d) for d in r.split("/")[:-1]]
                      + [(0, r.rsplit("/", 1)[-1])])

    def listdir(self, url: str) -> list[str]:
        try:
            listed = self._call(url, "ls", self._path(url), detail=False)
        except (FileNotFoundError, VtkError):
            return []
        return [x.rstrip("/").rsplit("/", 1)[-1] for x in listed]

    def sizes(self, folder: str, suffix: str) -> dict[str, int]:
        listed = self._call(folder, "ls", self._path(folder), detail=True)
        return {self.basename(e["name"]): int(e.get("size") or 0) for e in listed
                if e.get("type") == "file" and e["name"].endswith(suffix)}

    def exists(self, url: str) -> bool:
        return self._call(url, "exists", self._path(url))

    def isfile(self, url: str) -> bool:
        return self._call(url, "isfile", self._path(url))

    def isdir(self, url: str) -> bool:
        """A folder, or for an object store a prefix with objects under it."""
        return self._call(url, "isdir", self._path(url))

    def size(self, url: str) -> int:
        return int(self._call(url, "size", self._path(url)))

    def stamp(self, url: str) -> str:
        info = self._call(url, "info", self._path(url))
        version = info.get("ETag") or info.get("etag") or info.get("LastModified") or \
            info.get("mtime")
        return f"{info.get('size')}:{str(version).strip(chr(34))}"

    def open(self, url: str, mode: str = "rb", **kwargs):
        """A buffered fsspec file (reads fetched ``READ_BLOCK`` at a time)."""
        if "b" in mode and "r" in mode:
            kwargs.setdefault("block_size", READ_BLOCK)
        fs, p = filesystem(url)
        with errors(url):
            return fs.open(p, mode, **kwargs)

    def open_random(self, url: str):
        return self.open(url, "rb", block_size=RANDOM_BLOCK)

    def read_bytes(self, url: str, start: int | None = None, end: int | None = None) -> bytes:
        return self._call(url, "cat_file", self._path(url), start=start, end=end)

    def _temp_name(self, final: str) -> str:
        return self.join(self.parent(final), f".{self.basename(final)}.tmp-{os.getpid()}-"
                         f"{uuid.uuid4().hex[:8]}")

    def _through_temp(self, final: str, upload) -> None:
        """``upload(path)`` to a temporary name beside ``final``, then a move (filesystems
        that show a file while it is written)."""
        tmp = self._temp_name(final)
        try:
            upload(self._path(tmp))
            self._call(final, "mv", self._path(tmp), self._path(final))
        except BaseException:
            with contextlib.suppress(Exception):
                self._call(final, "rm_file", self._path(tmp))
            raise

    def write_bytes(self, url: str, data: bytes) -> None:
        if self.object_store:  # a PUT appears only when complete
            self._call(url, "pipe_file", self._path(url), data, sent=len(data))
            return
        self._through_temp(url, lambda p: self._call(url, "pipe_file", p, data, sent=len(data)))

    def put_file(self, local: str, final: str) -> None:
        sent = os.path.getsize(local)
        if self.object_store:  # a PUT (or multipart upload) appears only when complete
            self._call(final, "put_file", local, self._path(final), sent=sent)
            return
        self._through_temp(final, lambda p: self._call(final, "put_file", local, p, sent=sent))

    def publish(self, staged: str, final: str) -> None:
        """A file written in ``staging(folder)`` uploaded whole under ``final``, then removed
        here."""
        self.put_file(staged, final)
        os.remove(staged)

    def move(self, src: str, dst: str) -> None:
        """Whole: on an object store a server-side copy (an object appears only once complete)
        and the source deleted; elsewhere fsspec's move. No bytes pass through this process."""
        if self.object_store:
            self._call(dst, "copy", self._path(src), self._path(dst))
            self._call(src, "rm_file", self._path(src))
        else:
            self._call(dst, "mv", self._path(src), self._path(dst))

    def remove(self, url: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._call(url, "rm_file", self._path(url))

    def remove_tree(self, url: str) -> None:
        with contextlib.suppress(FileNotFoundError, VtkError):
            self._call(url, "rm", self._path(url), recursive=True)

    def remove_dir(self, url: str) -> None:
        """Nothing on an object store (a prefix goes with its last object)."""
        if not self.object_store:
            with contextlib.suppress(FileNotFoundError, OSError, VtkError):
                self._call(url, "rmdir", self._path(url))

    def makedirs(self, url: str) -> None:
        if not self.object_store:
            self._call(url, "makedirs", self._path(url), exist_ok=True)

    def sweep_temps(self, folder: str) -> list[str]:
        return []  # a killed upload leaves nothing under a key; a moved temp is named by PID

    def create_exclusive(self, url: str, data: bytes) -> bool:
        """On S3 a conditional PUT (``If-None-Match: *``), so of two racing writers exactly
        one wins; on other fsspec stores a check, then a write (a race is not excluded)."""
        if self.proto in ("s3", "s3a"):
            try:
                self._call(url, "pipe_file", self._path(url), data, mode="create",
                           sent=len(data))
            except FileExistsError:
                return False
            return True
        if self.exists(url):
            return False
        self.write_bytes(url, data)
        return True

    def lock(self, folder: str) -> RemoteLock:
        return RemoteLock(folder).acquire()

    def staging(self, folder: str) -> str:
        """A local folder for files bound for ``folder`` (uploaded whole from there), named by
        this process's PID: what a killed writer left is swept by the next one here."""
        sweep_staging()
        return tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-")

    def unstage(self, stage: str) -> None:
        shutil.rmtree(stage, ignore_errors=True)


LOCAL = LocalStore()


def sweep_staging(root: str | None = None) -> list[str]:
    """Remove the staging folders (``vtk-shard-PID-*`` in the temp dir) of writers that are
    gone: a SIGKILL or SIGTERM leaves a shard's worth of bytes there. A folder whose PID is
    alive is kept (its writer, or the PID reused: the next run looks again)."""
    root = root or tempfile.gettempdir()
    removed = []
    for name in LOCAL.listdir(root):
        m = _STAGING.match(name)
        if m and int(m.group(1)) != os.getpid() and not pid_alive(int(m.group(1))):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
            removed.append(name)
    return removed


# --- what every caller uses: each asks the store of its path ------------------------------------


def probe(path: str) -> None:
    store(path).probe(path)


def join(base: str, *names: str) -> str:
    return store(base).join(base, *names)


def basename(path: str) -> str:
    return store(path).basename(path)


def parent(path: str) -> str:
    return store(path).parent(path)


def absolute(path: str) -> str:
    """A local path made absolute (workers and records do not share the cwd); a URL as is."""
    return store(path).absolute(path)


def glob(pattern: str) -> list[str]:
    """Sorted matches of a glob pattern (``*``, ``?``, ``[0-9]``)."""
    return store(pattern).glob(pattern)


def walk(folder: str) -> list[str]:
    return store(folder).walk(folder)


def listdir(path: str) -> list[str]:
    """Names in a folder; none when it is missing or unreadable."""
    return store(path).listdir(path)


def sizes(folder: str, suffix: str) -> dict[str, int]:
    """{name: bytes} of the files right in ``folder`` ending in ``suffix``, from one listing
    (a URL: no request per file)."""
    return store(folder).sizes(folder, suffix)


def exists(path: str) -> bool:
    return store(path).exists(path)


def isfile(path: str) -> bool:
    return store(path).isfile(path)


def isdir(path: str) -> bool:
    return store(path).isdir(path)


def size(path: str) -> int:
    return store(path).size(path)


def stamp(path: str) -> str:
    """What changes when a file is rewritten: ``size:mtime_ns`` locally, ``size:ETag`` (or the
    modification time) for a URL. Caches keyed on their inputs use it."""
    return store(path).stamp(path)


def open(path: str, mode: str = "rb", **kwargs):
    return store(path).open(path, mode, **kwargs)


def open_random(path: str):
    """A binary file for reads at scattered offsets (a loader reading samples by their
    headers' offsets): for a URL each read fetches what it asks for plus ``RANDOM_BLOCK``, so
    a sample's mp4, txt and json (adjacent members) usually come in one request."""
    return store(path).open_random(path)


def read_bytes(path: str, start: int | None = None, end: int | None = None) -> bytes:
    return store(path).read_bytes(path, start, end)


def read_text(path: str) -> str:
    return read_bytes(path).decode("utf-8")


def read_json(path: str):
    return json.loads(read_text(path))


def write_bytes(path: str, data: bytes) -> None:
    """``data`` as the whole of ``path``: before this returns nothing is under ``path`` (or the
    old content is, for a file being replaced)."""
    store(path).write_bytes(path, data)


def write_json(path: str, data, indent: int | None = 1) -> None:
    write_bytes(path, json_text(data, indent).encode("utf-8"))


def put_file(local: str, final: str) -> None:
    """Publish the local file ``local`` as ``final``, whole (see ``write_bytes``)."""
    store(final).put_file(local, final)


def move(src: str, dst: str) -> None:
    """``src`` to ``dst`` in one store, whole: a rename, or a server-side copy and a delete."""
    store(dst).move(src, dst)


def remove(path: str) -> None:
    """Delete a file; one already gone is fine."""
    store(path).remove(path)


def remove_tree(path: str) -> None:
    """Delete a folder and everything under it; one already gone is fine."""
    store(path).remove_tree(path)


def remove_dir(path: str) -> None:
    """An empty folder removed; one that is not empty, or gone, is left as it is."""
    store(path).remove_dir(path)


def makedirs(path: str) -> None:
    """A folder and its parents made (nothing to make on an object store)."""
    store(path).makedirs(path)


def create_exclusive(path: str, data: bytes) -> bool:
    """Write ``path`` only if nothing is there; False if something is."""
    return store(path).create_exclusive(path, data)


# --- the lock of a shard set at a URL ---------------------------------------------------------


LEASE_S = 120.0  # a lock not renewed for this long belongs to a dead writer
RENEW_S = 20.0
RELEASE_S = min(10.0, CALL_S)  # a release waits this long for an unreachable store, then
# leaves the lock to its lease


class RemoteLock:
    """What stands for ``vtk.locks``' ``flock`` on a store that has none: the object
    ``URL/.lock`` holding the writer's host, PID, a token and the time its lease ends.

    Taken with a conditional create, so two writers starting together cannot both hold it.
    A thread renews the lease every ``RENEW_S``; a writer killed with -9 stops renewing, and
    its lock is taken over once the lease has run out, or at once from the same host when its
    PID is gone (the common case: a killed ``vtk shard`` resumed on the same machine). A
    record that is not a lock of this form (damaged, or written by hand) holds no lease and
    is taken over too. ``check()`` (before each shard is published and before index.json)
    fails if another writer has taken the lock over meanwhile."""

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
        """The lock's record: None when there is none, {} when it is not a vtk lock record,
        else its host, pid, token and expires."""
        try:
            held = json.loads(read_bytes(self.path))
        except FileNotFoundError:
            return None
        except ValueError:
            return {}
        return held if _is_lease(held) else {}

    def acquire(self) -> RemoteLock:
        for _ in range(2):
            if create_exclusive(self.path, self._record()):
                self._start()
                return self
            held = self._holder()
            if held is None:
                continue  # released in between: try again
            if not _stale(held, self.host):
                left = max(0, int(held["expires"] - time.time()))
                raise VtkError(f"{self.url} is in use by {_who(held)} (lock {self.path}, lease "
                               f"renewed every {RENEW_S:.0f} s, {left} s left); wait for it or "
                               f"stop it")
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
                    self._lost = _taken(held)
                    return
                write_bytes(self.path, self._record())
            except Exception:  # a failed renewal: tried again; check() reports a takeover
                continue

    def check(self) -> None:
        if self._lost is None:
            held = self._holder()
            if not held or held.get("token") != self.token:
                self._lost = _taken(held)
        if self._lost is not None:
            raise VtkError(f"{self.url}: this writer's lock {self.path} was {self._lost}; "
                           f"stopped so that two writers never mix one set")

    def release(self) -> None:
        self._stop.set()
        if self._thread is None:
            return
        self._thread = None
        # bounded: a store that stopped answering keeps the lock, whose lease then runs out
        done = threading.Thread(target=self._remove_own, name="vtk-lock-release", daemon=True)
        done.start()
        done.join(RELEASE_S)

    def _remove_own(self) -> None:
        with contextlib.suppress(Exception):
            held = self._holder()
            if held and held.get("token") == self.token:
                remove(self.path)

    def __enter__(self) -> RemoteLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _is_lease(held) -> bool:
    expires = held.get("expires") if isinstance(held, dict) else None
    return (isinstance(held, dict) and isinstance(held.get("host"), str)
            and isinstance(held.get("token"), str) and type(held.get("pid")) is int
            and type(expires) in (int, float) and math.isfinite(expires))


def _who(held: dict) -> str:
    return f"vtk process {held['pid']} on {held['host']}"


def _taken(held: dict | None) -> str:
    """What became of a lock this writer no longer holds."""
    if held is None:
        return "removed"
    return f"taken over by {_who(held)}" if held else \
        "replaced by a record that is not a vtk lock"


def _stale(held: dict, host: str) -> bool:
    if not held or held["expires"] < time.time():
        return True
    pid = held["pid"]
    return held["host"] == host and pid != os.getpid() and not pid_alive(pid)


def lock(url: str):
    """The lock on the shard set at ``url`` for this process (a folder's ``flock``, or a
    ``RemoteLock``)."""
    return store(url).lock(url)
