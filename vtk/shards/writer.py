"""ShardWriter: samples in, a crash-safe WebDataset shard set out.

Layout of a shard set folder (``NAME`` defaults to ``shard``)::

    NAME-000000.tar     samples: <key>.mp4, <key>.txt, <key>.json
    NAME-000000.idx     DALI wds2idx index of that tar
    stats/NAME-000000.json   keys, sources completed, failed inputs with reasons
    index.json          the dataset card (written by :meth:`ShardWriter.close`)

Crash safety: a shard is written as ``NAME-000000.tar.tmp``; when it holds
``samples_per_shard`` samples its ``.idx`` and ``stats`` are written (each to a temp name,
then renamed), and only then is the tar renamed. So a final tar name always means a complete
shard with its index and stats, and a stats file whose tar is missing is a leftover of a kill.

Object storage (``--out s3://bucket/prefix``, any fsspec URL; ``vtk.storage``): there is no
rename, so the tar is written in a local temporary folder, and its ``.idx``, ``stats`` and tar
are then uploaded whole in that order, the tar last. An object appears only once its upload
is complete, so here too a tar under its final key is a complete shard with its index and
stats; a kill leaves at most a stats file (and ``.idx``) without its tar, which ``--resume``
removes. ``index.json`` is written last, by :meth:`close`. ``OUT/.lock`` is an object with
the writer's host, PID and lease (``vtk.storage.RemoteLock``) instead of a ``flock``.

Resume: a source is *completed* in the shard where :meth:`source_done` was called, which comes
after its last sample. With ``resume=True`` the writer loads the completed sources and the keys
of every complete shard; the caller skips completed sources, and :meth:`add` drops keys that
are already stored, so a source cut off by a kill half-way is redone without doubling a key.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import tarfile
import tempfile
import weakref
from collections import Counter

from vtk import storage
from vtk.errors import VtkError
from vtk.fileio import remove_stale_temps, write_json
from vtk.locks import lock_folder
from vtk.shards.integrity import HASH, HashingFile, set_hash
from vtk.shards.schema import clean_text, encode_json
from vtk.shards.wds_index import index_path, write_index


def _write_error(path: str, e: OSError) -> VtkError:
    """One line for a failed write (a full disk, a read-only or vanished folder)."""
    return VtkError(f"cannot write {path}: {e.strerror or e}; complete shards are kept: "
                    f"fix it and continue with --resume")


@contextlib.contextmanager
def _writing(path: str):
    try:
        yield
    except OSError as e:
        raise _write_error(path, e) from None


def shard_tars(out: str, name: str = "shard") -> list[str]:
    """The complete tars of a shard set (a folder or a URL), in order (temp files never
    match)."""
    return storage.glob(storage.join(out, f"{name}-[0-9]*.tar"))


def _release(lock, stage: str | None) -> None:
    """A writer's lock and local staging folder, let go (also when it is dropped unclosed)."""
    lock.release()
    if stage is not None:
        shutil.rmtree(stage, ignore_errors=True)


class ShardWriter:
    """Writes samples in the order given. One writer per shard set: it holds the set folder's
    lock (``OUT/.lock``, ``vtk.locks``; at a URL ``vtk.storage.RemoteLock``) from construction
    to :meth:`close` (or :meth:`abort`), so a second process writing or resuming the same set
    fails at once, naming this one's PID."""

    def __init__(self, out: str, name: str = "shard", samples_per_shard: int = 1000,
                 resume: bool = False, settings: dict | None = None, retry_failed: bool = False):
        """``settings`` (clip, codec and caption options) are stored with every shard's stats;
        resuming with different ones is refused, so a set never mixes two kinds of clips.
        ``retry_failed``: on resume, inputs with a recorded failure are not counted as done."""
        self.retry_failed = retry_failed
        if samples_per_shard < 1:
            raise VtkError("--samples-per-shard must be at least 1")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name):
            raise VtkError(f"--name {name!r}: use letters, digits, '-' and '_' only")
        self.out, self.name, self.per_shard = out, name, samples_per_shard
        self.settings = json.loads(json.dumps(settings or {}))  # as it reads back from disk
        self.done_sources: set[str] = set()
        self.keys: set[str] = set()
        self.shards: dict[int, dict] = {}  # index -> stats of complete shards
        self.pending_sources: list[str] = []
        self.pending_failures: list[dict] = []
        self.written = 0  # samples added by this run
        self.skipped_keys = 0
        self._tar: tarfile.TarFile | None = None
        self._file: HashingFile | None = None
        self._shard_keys: list[str] = []
        self.remote = storage.is_url(out)
        if self.remote:
            out = self.out = out.rstrip("/")
            storage.probe(out)  # endpoint, bucket, credentials: one line now, not mid-run
        # first: nothing in the folder is read or removed while another process writes it
        self._lock = storage.lock(out) if self.remote else lock_folder(out)
        # a URL's shard is written here first, then uploaded whole
        self.stage = tempfile.mkdtemp(prefix="vtk-shard-") if self.remote else None
        self._closer = weakref.finalize(self, _release, self._lock, self.stage)
        try:
            self._open(resume)
        except BaseException:
            self._closer()
            raise

    def _open(self, resume: bool) -> None:
        """The folder's layout; what a killed writer left removed; the set loaded to resume."""
        if self.remote:  # no folders to make; object stores leave no temporary objects
            self._load(resume)
            self.index = max(self.shards, default=-1) + 1
            return
        stats_dir = os.path.join(self.out, "stats")
        try:
            os.makedirs(stats_dir, exist_ok=True)
        except OSError as e:
            raise VtkError(f"cannot create {stats_dir}: {e.strerror or e}") from None
        for folder in (self.out, stats_dir):  # index.json and stats temps (a kill, a full disk)
            remove_stale_temps(folder)
        self._load(resume)
        self.index = max(self.shards, default=-1) + 1

    # --- paths ---------------------------------------------------------------------------

    def tar_path(self, index: int) -> str:
        return storage.join(self.out, f"{self.name}-{index:06d}.tar")

    def idx_path(self, index: int) -> str:
        return storage.join(self.out, f"{self.name}-{index:06d}.idx")

    def stats_path(self, index: int) -> str:
        return storage.join(self.out, "stats", f"{self.name}-{index:06d}.json")

    def _local(self, path: str) -> str:
        """Where ``path`` is written on this machine: itself, or in the staging folder."""
        return os.path.join(self.stage, storage.basename(path)) if self.remote else path

    def _tmp_tar(self) -> str:
        return self._local(self.tar_path(self.index)) + ".tmp"

    def _put_json(self, path: str, data: dict, indent: int | None = None) -> None:
        """A stats file or index.json, whole (local: temp and rename; URL: one upload)."""
        with _writing(path):
            if self.remote:
                storage.write_json(path, data, indent=indent)
            else:
                write_json(path, data, indent=indent)

    # --- writing -------------------------------------------------------------------------

    def add(self, sample: dict) -> bool:
        """Store one sample (``__key__``, ``mp4`` bytes, ``txt`` str, ``json`` dict); False if
        its key is already in the set (a resumed source)."""
        key = sample["__key__"]
        if key in self.keys:
            self.skipped_keys += 1
            return False
        try:
            if self._tar is None:
                # every byte hashed on its way to the file: index.json's sha256, no re-read
                self._file = HashingFile(open(self._tmp_tar(), "wb"))
                self._tar = tarfile.open(fileobj=self._file, mode="w",
                                         format=tarfile.USTAR_FORMAT)
            for ext, data in (("mp4", sample["mp4"]), ("txt", sample["txt"].encode("utf-8")),
                              ("json", encode_json(sample["json"]))):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size, info.mode, info.mtime = len(data), 0o444, 0  # same input, same bytes
                self._tar.addfile(info, io.BytesIO(data))
        except OSError as e:
            self._abandon_shard()
            raise _write_error(self.tar_path(self.index), e) from None
        self.keys.add(key)
        self._shard_keys.append(key)
        self.written += 1
        if len(self._shard_keys) >= self.per_shard:
            self._finish_shard()
        return True

    def source_done(self, source_id: str) -> None:
        """Mark a source completed: all its samples have been added (or it failed)."""
        self.done_sources.add(source_id)
        self.pending_sources.append(source_id)

    def fail(self, source_id: str, input_: str, kind: str, reason: str,
             key: str | None = None) -> None:
        """Record a failed input (or one failed clip, with ``key``)."""
        record = {"source": source_id, "input": clean_text(input_), "kind": kind,
                  "reason": clean_text(reason)}
        if key:
            record["key"] = key
        self.pending_failures.append(record)

    def end_shard(self) -> None:
        """Finish the shard being written now, short of ``samples_per_shard`` (the last one),
        so that files written beside it before :meth:`close` can name its final hash."""
        if self._shard_keys:
            self._finish_shard()

    def close(self, card: dict | None = None) -> dict:
        """Finish the last shard, write index.json (``card`` adds command, settings...) and
        return it."""
        if self._shard_keys:
            self._finish_shard()
        elif self.pending_sources or self.pending_failures:
            self._flush_trailing()
        index = self.card(card or {})
        path = storage.join(self.out, "index.json")
        self._check_lock()
        self._put_json(path, index, indent=2)  # last: a set with its index.json is whole
        self._closer()
        return index

    def abort(self) -> None:
        """Stop without publishing anything more: the shard being written is dropped (its
        sources are redone by ``--resume``), the lock released, the staging folder removed."""
        self._abandon_shard()
        self._closer()

    def _check_lock(self) -> None:
        check = getattr(self._lock, "check", None)
        if check is not None:
            check()

    def _abandon_shard(self) -> None:
        """Drop the shard being written after a write failed (a full disk): its partial temp
        file would only take space, and a ``--resume`` redoes its sources anyway."""
        tar, self._tar = self._tar, None
        for f in (tar, self._file):
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass
        self._file = None
        try:
            os.remove(self._tmp_tar())
        except OSError:
            pass

    def _finish_shard(self) -> None:
        assert self._tar is not None and self._file is not None
        try:
            self._tar.close()  # the end blocks, through the hash
            self._file.close()
        except OSError as e:
            self._abandon_shard()
            raise _write_error(self.tar_path(self.index), e) from None
        self._tar, digest, self._file = None, self._file.digest(), None
        tmp = self._tmp_tar()
        idx = self._local(self.idx_path(self.index))
        with _writing(self.idx_path(self.index)):
            write_index(tmp, idx)
        stats = {
            "shard": storage.basename(self.tar_path(self.index)),
            "num_samples": len(self._shard_keys),
            "bytes": os.path.getsize(tmp),
            HASH: digest,
            "keys": self._shard_keys,
            "sources_completed": self.pending_sources,
            "failures": self.pending_failures,
            "settings": self.settings,
        }
        if self.remote:  # the same order, each file uploaded whole: the tar last
            self._check_lock()
            with _writing(self.idx_path(self.index)):
                storage.put_file(idx, self.idx_path(self.index))
            self._put_json(self.stats_path(self.index), stats)
            with _writing(self.tar_path(self.index)):
                storage.put_file(tmp, self.tar_path(self.index))
            for done in (tmp, idx):
                os.remove(done)
        else:
            self._put_json(self.stats_path(self.index), stats)
            with _writing(self.tar_path(self.index)):
                os.replace(tmp, self.tar_path(self.index))  # last: a final name means complete
        self.shards[self.index] = stats
        self.index += 1
        self._shard_keys, self.pending_sources, self.pending_failures = [], [], []

    def _flush_trailing(self) -> None:
        """Sources completed (or failed) after the last full shard, with no samples to make a
        new one: their record joins the last complete shard's stats, or an empty stats file."""
        if self.shards:
            last = max(self.shards)
            stats = self.shards[last]
            stats["sources_completed"] += self.pending_sources
            stats["failures"] += self.pending_failures
            self._put_json(self.stats_path(last), stats)
        else:
            stats = {"shard": None, "num_samples": 0, "bytes": 0, "keys": [],
                     "sources_completed": self.pending_sources,
                     "failures": self.pending_failures, "settings": self.settings}
            self._put_json(self.stats_path(self.index), stats)
        self.pending_sources, self.pending_failures = [], []

    # --- the card ------------------------------------------------------------------------

    def failures(self) -> list[dict]:
        """Failures that still stand: the latest record per input, none for an input (or a
        clip) that a later retry did write."""
        shards = [self.shards[i] for i in sorted(self.shards)]
        written = {k.rsplit("_", 1)[0] for k in self.keys}
        latest: dict = {}
        for f in [f for s in shards for f in s["failures"]] + self.pending_failures:
            if f.get("key") in self.keys or (not f.get("key") and f["source"] in written):
                continue
            latest[(f["source"], f.get("key"))] = f
        return list(latest.values())

    def card(self, extra: dict) -> dict:
        shards = [self.shards[i] for i in sorted(self.shards)]
        failures = self.failures()
        by_kind = Counter(f["kind"] for f in failures)
        records = [{"file": s["shard"], "num_samples": s["num_samples"], "bytes": s["bytes"],
                    "index": index_path(s["shard"]),
                    **({HASH: s[HASH]} if s.get(HASH) else {})} for s in shards]
        return {
            "name": self.name,
            "format": "webdataset",
            "members": ["mp4", "txt", "json"],
            "num_samples": sum(s["num_samples"] for s in shards),
            "num_bytes": sum(s["bytes"] for s in shards),
            "num_shards": len(shards),
            "shards": records,
            "set_sha256": set_hash(records),
            "num_sources_completed": len({x for s in shards for x in s["sources_completed"]}),
            "failures": {"total": len(failures), "by_reason": dict(sorted(by_kind.items()))},
            **extra,
        }

    # --- resume --------------------------------------------------------------------------

    def _load(self, resume: bool) -> None:
        pattern = storage.join(self.out, "stats", f"{self.name}-[0-9]*.json")
        stats_files = storage.glob(pattern)
        tars = shard_tars(self.out, self.name)
        if not resume:
            if stats_files or tars:
                raise VtkError(f"{self.out} already holds shard set '{self.name}': pass --resume "
                               f"to continue it, or choose another --out or --name")
            return
        if not self.remote:  # a URL's shard in progress was local to the killed writer
            for leftover in storage.glob(os.path.join(self.out, f"{self.name}-*.tmp")) + \
                    storage.glob(os.path.join(self.out, "stats", f"{self.name}-*.tmp")):
                os.remove(leftover)  # a shard cut off by a kill: its sources are redone
        for path in stats_files:
            index = int(re.search(r"-(\d+)\.json$", path).group(1))
            with storage.errors(path):
                stats = json.loads(storage.read_text(path))
            self._check_settings(stats.get("settings", {}), path)
            if stats["num_samples"] and self.tar_path(index) not in tars:
                # killed between writing stats and publishing the tar
                storage.remove(path)
                storage.remove(self.idx_path(index))
                continue
            self.done_sources.update(stats["sources_completed"])
            if stats["num_samples"]:
                self.shards[index] = stats
                self.keys.update(stats["keys"])
            else:  # an empty trailing record: carried into the next shard written
                self.pending_sources += stats["sources_completed"]
                self.pending_failures += stats["failures"]
                storage.remove(path)
        if self.retry_failed:
            failed = {f["source"] for s in self.shards.values() for f in s["failures"]}
            failed |= {f["source"] for f in self.pending_failures}
            self.done_sources -= failed
        known = {self.tar_path(i) for i in self.shards}
        stray = [t for t in tars if t not in known]
        if stray:
            raise VtkError(f"{stray[0]} has no stats file: not written by vtk shard, or "
                           f"damaged; move it away before --resume")


    def _check_settings(self, stored: dict, path: str) -> None:
        if not self.settings or not stored or stored == self.settings:
            return
        scheme, stored_scheme = self.settings.get("source_ids"), stored.get("source_ids", 1)
        if scheme is not None and stored_scheme != scheme:  # every done source would be redone
            raise VtkError(f"{self.out} was built with source id scheme {stored_scheme} and "
                           f"this vtk names sources by scheme {scheme}: a resume would write "
                           f"every source again; build the set anew in another --out")
        diff = [f"{group}.{k}: {stored.get(group, {}).get(k)!r} -> {v!r}"
                for group, new in self.settings.items() if isinstance(new, dict)
                for k, v in new.items() if stored.get(group, {}).get(k) != v]
        diff += [f"{k}: {stored.get(k)!r} -> {v!r}" for k, v in self.settings.items()
                 if not isinstance(v, dict) and stored.get(k) != v]
        raise VtkError(f"{self.out} was built with other settings ({'; '.join(diff[:3])}): "
                       f"resume with the same options, or choose another --out")
