"""ShardWriter: samples in, a crash-safe WebDataset shard set out.

Layout of a shard set folder (``NAME`` defaults to ``shard``)::

    NAME-000000.tar     samples: <key>.mp4, <key>.txt, <key>.json
    NAME-000000.idx     DALI wds2idx index of that tar
    stats/NAME-000000.json   keys, sources completed, failed inputs with reasons, and the
                             fetch of each source read from a URL (status, bytes, seconds)
    index.json          the dataset card (written by :meth:`ShardWriter.close`)

The set lives in a store (``vtk.storage``: a local folder, or any fsspec URL such as
``s3://bucket/prefix``), which the writer holds and never asks the kind of. A shard is written
in the store's staging folder (the set's own folder; for a URL a local folder in the temp dir,
named by the writer's PID) as ``NAME-000000.tar.tmp`` with its ``.idx.tmp``; when it holds
``samples_per_shard`` samples its ``.idx``, its ``stats`` and last the tar are published
(renamed; for a URL uploaded whole: an object appears only once its upload is complete). So a
final tar name always means a complete shard with its index and stats, and a stats file whose
tar is missing is a leftover of a kill, which ``--resume`` removes. ``index.json`` is written
last, by :meth:`close`. The set's lock is ``OUT/.lock`` (a ``flock``; at a URL an object with
the writer's host, PID and lease, ``vtk.storage.RemoteLock``).

Resume: a source is *completed* in the shard where :meth:`source_done` was called, which comes
after its last sample. With ``resume=True`` the writer loads the completed sources and the keys
of every complete shard; the caller skips completed sources (:meth:`is_done`), and :meth:`add`
drops keys that are already stored, so a source cut off by a kill half-way is redone without
doubling a key. What the writer knows of the set that grows with it (keys, sources, failures)
is in a ``SetIndex`` on local disk, not in memory.

Another writer's shards (a Ray task's, written in a staging folder of the set) join the set
through :meth:`commit`, in the same order.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import tarfile
import weakref
from collections import Counter

from vtk import storage
from vtk.errors import VtkError
from vtk.shards.integrity import HASH, HashingFile, set_hash
from vtk.shards.schema import clean_text, encode_json
from vtk.shards.setindex import SetIndex
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


def _release(lock, store, stage: str, index: SetIndex) -> None:
    """A writer's lock, staging folder and index, let go (also when it is dropped unclosed)."""
    lock.release()
    store.unstage(stage)
    index.close()


def _summary(stats: dict) -> dict:
    """What the card needs of a shard's stats (its keys, sources and failures are indexed)."""
    return {k: stats[k] for k in ("shard", "num_samples", "bytes", HASH) if k in stats}


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
        self.store = storage.store(out)
        self.out = self.store.clean(out)
        self.name, self.per_shard = name, samples_per_shard
        self.settings = json.loads(json.dumps(settings or {}))  # as it reads back from disk
        self.shards: dict[int, dict] = {}  # index -> summary (file, samples, bytes, hash)
        self.pending_sources: list[str] = []  # of the shard being written
        self.pending_failures: list[dict] = []
        self.pending_downloads: list[dict] = []
        self.written = 0  # samples added by this run
        self.skipped_keys = 0
        self._known: set[str] = set()  # keys stored by an earlier run, given by skip_keys
        self._standing: list[dict] = []  # the failures the card counted (see failures())
        self._tar: tarfile.TarFile | None = None
        self._file: HashingFile | None = None
        self._shard_keys: list[str] = []
        self.store.probe(self.out)  # endpoint, bucket, credentials: one line now, not mid-run
        # first: nothing in the folder is read or removed while another process writes it
        self._lock = self.store.lock(self.out)
        try:
            self.stage = self.store.staging(self.out)
        except BaseException:
            self._lock.release()
            raise
        self.index_db = SetIndex()
        self._closer = weakref.finalize(self, _release, self._lock, self.store, self.stage,
                                        self.index_db)
        try:
            self._open(resume)
        except BaseException:
            self._closer()
            raise

    def _open(self, resume: bool) -> None:
        """The folder's layout; what a killed writer left removed; the set loaded to resume."""
        stats_dir = storage.join(self.out, "stats")
        try:
            self.store.makedirs(stats_dir)
        except OSError as e:
            raise VtkError(f"cannot create {stats_dir}: {e.strerror or e}") from None
        for folder in (self.out, stats_dir):  # index.json and stats temps (a kill, a full disk)
            self.store.sweep_temps(folder)
        self._load(resume)
        self.index = max(self.shards, default=-1) + 1

    # --- paths ---------------------------------------------------------------------------

    def tar_path(self, index: int) -> str:
        return storage.join(self.out, f"{self.name}-{index:06d}.tar")

    def idx_path(self, index: int) -> str:
        return storage.join(self.out, f"{self.name}-{index:06d}.idx")

    def stats_path(self, index: int) -> str:
        return storage.join(self.out, "stats", f"{self.name}-{index:06d}.json")

    def _staged(self, path: str) -> str:
        """Where ``path`` is written before it is published: in the staging folder."""
        return os.path.join(self.stage, storage.basename(path)) + ".tmp"

    def _put_json(self, path: str, data: dict, indent: int | None = None) -> None:
        """A stats file or index.json, whole (local: temp and rename; URL: one upload)."""
        with _writing(path):
            storage.write_json(path, data, indent=indent)

    # --- what the set holds --------------------------------------------------------------

    def is_done(self, source_id: str) -> bool:
        """Whether the set has completed ``source_id`` (written, or recorded as failed)."""
        return self.index_db.is_done(source_id)

    def skip_keys(self, keys) -> None:
        """Keys stored by an earlier run (a source cut off half-way): :meth:`add` drops them."""
        self._known.update(keys)

    def partial_keys(self) -> dict[str, list[str]]:
        """Keys already stored of sources not completed (cut off by a kill), by source id."""
        return self.index_db.partial_keys()

    # --- writing -------------------------------------------------------------------------

    def add(self, sample: dict) -> bool:
        """Store one sample (``__key__``, ``mp4`` bytes, ``txt`` str, ``json`` dict); False if
        its key is already in the set (a resumed source)."""
        key = sample["__key__"]
        if key in self._known or not self.index_db.claim_key(key):
            self.skipped_keys += 1
            return False
        try:
            if self._tar is None:
                # every byte hashed on its way to the file: index.json's sha256, no re-read
                self._file = HashingFile(open(self._staged(self.tar_path(self.index)), "wb"))
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
        self._shard_keys.append(key)
        self.written += 1
        if len(self._shard_keys) >= self.per_shard:
            self._finish_shard()
        return True

    def source_done(self, source_id: str) -> None:
        """Mark a source completed: all its samples have been added (or it failed)."""
        self.index_db.add_done([source_id])
        self.pending_sources.append(source_id)

    def fail(self, source_id: str, input_: str, kind: str, reason: str,
             key: str | None = None) -> None:
        """Record a failed input (or one failed clip, with ``key``)."""
        record = {"source": source_id, "input": clean_text(input_), "kind": kind,
                  "reason": clean_text(reason)}
        if key:
            record["key"] = key
        self.index_db.add_failures([record])
        self.pending_failures.append(record)

    def downloaded(self, source_id: str, record: dict) -> None:
        """Record how a source read from a URL was fetched (``vtk.sources.fetch``'s record:
        URL, status, bytes, seconds, attempts), kept with the shard's stats."""
        self.pending_downloads.append({"source": source_id, **record})

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
        elif self.pending_sources or self.pending_failures or self.pending_downloads:
            self._flush_trailing()
        index = self.card(card or {})
        path = storage.join(self.out, "index.json")
        self._lock.check()
        self._put_json(path, index, indent=2)  # last: a set with its index.json is whole
        self._closer()
        return index

    def abort(self) -> None:
        """Stop without publishing anything more: the shard being written is dropped (its
        sources are redone by ``--resume``), the lock released, the staging folder removed."""
        self._abandon_shard()
        self._closer()

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
        with contextlib.suppress(OSError):
            os.remove(self._staged(self.tar_path(self.index)))

    def _finish_shard(self) -> None:
        assert self._tar is not None and self._file is not None
        try:
            self._tar.close()  # the end blocks, through the hash
            self._file.close()
        except OSError as e:
            self._abandon_shard()
            raise _write_error(self.tar_path(self.index), e) from None
        self._tar, digest, self._file = None, self._file.digest(), None
        tar, idx = self._staged(self.tar_path(self.index)), self._staged(self.idx_path(self.index))
        with _writing(self.idx_path(self.index)):
            write_index(tar, idx)
        staged = {"tar": tar, "idx": idx, "num_samples": len(self._shard_keys),
                  "bytes": os.path.getsize(tar), HASH: digest, "keys": self._shard_keys,
                  "sources_completed": [], "failures": [], "downloads": []}
        self._publish(staged, self.store.publish)

    def commit(self, staged: dict) -> None:
        """Make a shard another writer wrote into a staging folder of this set (a Ray task's)
        the next shard of the set, moved in the order :meth:`_finish_shard` keeps. ``staged``
        is a record of :meth:`written_shards`: its tar and idx, samples, bytes, hash, keys,
        sources completed and failures. Sources and failures pending here join it."""
        stored = self.index_db.any_key(staged["keys"])
        if stored is not None:  # a planning bug, never a resume: refuse, do not double
            raise RuntimeError(f"{staged['tar']}: holds key {stored}, already in the set")
        self.index_db.add_keys(staged["keys"])
        self.index_db.add_done(staged["sources_completed"])
        self.index_db.add_failures(staged["failures"])
        self.written += staged["num_samples"]
        self._publish(staged, self.store.move)

    def _publish(self, staged: dict, place) -> None:
        """``.idx``, stats under the final name, the tar last: a final name means complete."""
        index = self.index
        stats = {"shard": storage.basename(self.tar_path(index)),
                 "num_samples": staged["num_samples"], "bytes": staged["bytes"],
                 HASH: staged[HASH], "keys": staged["keys"],
                 "sources_completed": self.pending_sources + staged["sources_completed"],
                 "failures": self.pending_failures + staged["failures"],
                 "settings": self.settings}
        downloads = self.pending_downloads + staged.get("downloads", [])
        if downloads:
            stats["downloads"] = downloads
        self._lock.check()  # a URL's lease not taken over meanwhile
        with _writing(self.idx_path(index)):
            place(staged["idx"], self.idx_path(index))
        self._put_json(self.stats_path(index), stats)
        with _writing(self.tar_path(index)):
            place(staged["tar"], self.tar_path(index))
        self.index_db.commit()
        self.shards[index] = _summary(stats)
        self.index += 1
        self._shard_keys, self.pending_sources, self.pending_failures = [], [], []
        self.pending_downloads = []

    def _flush_trailing(self) -> None:
        """Sources completed (or failed) after the last full shard, with no samples to make a
        new one: their record joins the last complete shard's stats, or an empty stats file."""
        if self.shards:
            last = max(self.shards)
            with storage.errors(self.stats_path(last)):
                stats = storage.read_json(self.stats_path(last))
            stats["sources_completed"] += self.pending_sources
            stats["failures"] += self.pending_failures
        else:
            stats = {"shard": None, "num_samples": 0, "bytes": 0, "keys": [],
                     "sources_completed": self.pending_sources,
                     "failures": self.pending_failures, "settings": self.settings}
        if self.pending_downloads:
            stats["downloads"] = stats.get("downloads", []) + self.pending_downloads
        self._put_json(self.stats_path(max(self.shards) if self.shards else self.index), stats)
        self.index_db.commit()
        self.pending_sources, self.pending_failures, self.pending_downloads = [], [], []

    def written_shards(self) -> tuple[list[dict], dict | None]:
        """After :meth:`close`: the shards this writer wrote, each its stats with ``tar`` and
        ``idx`` (what :meth:`commit` takes), and the stats of a set with no samples (its
        sources and failures), or None."""
        shards = []
        for i in sorted(self.shards):
            with storage.errors(self.stats_path(i)):
                stats = storage.read_json(self.stats_path(i))
            shards.append({**stats, "tar": self.tar_path(i), "idx": self.idx_path(i)})
        trailing = None
        if not shards:
            with storage.errors(self.stats_path(self.index)):
                trailing = storage.read_json(self.stats_path(self.index))
        return shards, trailing

    # --- the card ------------------------------------------------------------------------

    def failures(self) -> list[dict]:
        """Failures that still stand: the latest record per input, none for an input (or a
        clip) that a later retry did write (after :meth:`close`, those its card counted)."""
        if self._closer.alive:
            self._standing = self.index_db.standing_failures()
        return self._standing

    def card(self, extra: dict) -> dict:
        shards = [self.shards[i] for i in sorted(self.shards)]
        by_kind = Counter(f["kind"] for f in self.failures())
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
            "num_sources_completed": self.index_db.num_sources(),
            "failures": {"total": sum(by_kind.values()),
                         "by_reason": dict(sorted(by_kind.items()))},
            **extra,
        }

    # --- resume --------------------------------------------------------------------------

    def _load(self, resume: bool) -> None:
        pattern = storage.join(self.out, "stats", f"{self.name}-[0-9]*.json")
        stats_files = storage.glob(pattern)
        tars = set(shard_tars(self.out, self.name))
        if not resume:
            if stats_files or tars:
                raise VtkError(f"{self.out} already holds shard set '{self.name}': pass --resume "
                               f"to continue it, or choose another --out or --name")
            return
        for leftover in storage.glob(os.path.join(self.stage, f"{self.name}-*.tmp")):
            os.remove(leftover)  # a shard cut off by a kill: its sources are redone
        db = self.index_db
        for path in stats_files:
            index = int(re.search(r"-(\d+)\.json$", path).group(1))
            with storage.errors(path):
                stats = storage.read_json(path)
            self._check_settings(stats.get("settings", {}), path)
            if stats["num_samples"] and self.tar_path(index) not in tars:
                # killed between writing stats and publishing the tar
                storage.remove(path)
                storage.remove(self.idx_path(index))
                continue
            db.add_done(stats["sources_completed"])
            db.add_failures(stats["failures"])
            if stats["num_samples"]:
                self.shards[index] = _summary(stats)
                db.add_keys(stats["keys"])
            else:  # an empty trailing record: carried into the next shard written
                self.pending_sources += stats["sources_completed"]
                self.pending_failures += stats["failures"]
                self.pending_downloads += stats.get("downloads", [])
                storage.remove(path)
        if self.retry_failed:
            db.redo_failed()
        db.commit()
        known = {self.tar_path(i) for i in self.shards}
        stray = sorted(t for t in tars if t not in known)
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
