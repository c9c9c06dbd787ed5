"""A shard set that proves its own integrity: per-shard content hashes, the set's hash over
them, and the checks that use them.

``index.json`` records, for every shard, its sample count, its bytes and the sha256 of the
tar, computed by ``ShardWriter`` while it writes the tar (every byte passes through the hash
on its way to the file: no second read), and ``set_sha256``, the sha256 of one line per shard
(``file``, samples, bytes, sha256, tab-separated, in set order). Two copies of a set with the
same ``set_sha256`` hold the same tars under the same names, wherever they were built or
copied; ``vtk verify`` (``verify_set``) re-reads every tar to prove it. Sidecars (``vtk
score``'s scores) record the sha256 of the shard they were computed on, so one written for
another shard, or for an older build of this one, is caught by comparing two strings.

Why sha256 and not xxh64: hashlib is in every Python (no dependency), releases the GIL on
large buffers (``vtk verify`` hashes shards on several threads at disk speed), and a 64-bit
hash would not survive anyone who wants a collision.
"""

from __future__ import annotations

import hashlib
import os
import re
import tarfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from vtk import storage
from vtk.errors import VtkError

HASH = "sha256"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")  # a set's name: ShardWriter's rule
READ_BLOCK = 1 << 20


class HashingFile:
    """A binary file being written, hashed as it is: what ``tarfile`` needs (``write``,
    ``tell``) and ``digest()`` at the end."""

    def __init__(self, f):
        self.f, self.hash, self.size = f, hashlib.sha256(), 0

    def write(self, data) -> int:
        self.hash.update(data)
        self.size += len(data)
        return self.f.write(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self.f.flush()

    def close(self) -> None:
        self.f.close()

    def digest(self) -> str:
        return self.hash.hexdigest()


def set_hash(shards: list[dict]) -> str | None:
    """``set_sha256`` of index.json's shard records (None when one has no hash: a set built
    by an older vtk)."""
    if not shards or any(not isinstance(s, dict) or not s.get(HASH) for s in shards):
        return None
    h = hashlib.sha256()
    for s in shards:
        h.update(f"{s['file']}\t{s['num_samples']}\t{s['bytes']}\t{s[HASH]}\n".encode())
    return h.hexdigest()


def card_name(card: dict, where: str) -> str:
    """index.json's ``name``, checked: it prefixes the set's file names, so a name with a
    path in it (``../other/shard``) would make the set's files another folder's."""
    name = card.get("name", "shard")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise VtkError(f"{where}: index.json's name {name!r} is not a shard set name (letters, "
                       f"digits, '-' and '_'); the card is damaged or not vtk's")
    return name


def read_card(folder: str) -> dict:
    """A set's index.json (a folder or a URL) as an object; a VtkError saying why not (none:
    a build that never finished, or no vtk set; unreadable; not an object)."""
    from vtk.shards.validate import load_card

    try:
        card = load_card(folder)
    except FileNotFoundError:
        raise VtkError(unfinished(folder) or f"{folder}: no index.json (not a shard set vtk "
                                              f"built)") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise VtkError(f"{folder}: index.json unreadable ({e})") from None
    if not isinstance(card, dict):
        raise VtkError(f"{folder}: index.json is not an object")
    return card


def recorded_shards(card: dict, where: str) -> dict[str, dict]:
    """index.json's shard records by file name, each checked for its shape."""
    out = {}
    shards = card.get("shards")
    if not isinstance(shards, list):
        raise VtkError(f"{where}: index.json has no list of shards; the card is damaged")
    for s in shards:
        if not (isinstance(s, dict) and isinstance(s.get("file"), str)
                and NAME.fullmatch(s["file"].removesuffix(".tar"))
                and isinstance(s.get("num_samples"), int) and isinstance(s.get("bytes"), int)):
            raise VtkError(f"{where}: index.json lists a shard of the wrong shape ({str(s)[:80]}"
                           f"); the card is damaged")
        out[s["file"]] = s
    return out


# --- what a build that never finished looks like ----------------------------------------

def unfinished(folder) -> str | None:
    """Why ``folder`` is a vtk-built shard set whose build never finished (it has the stats
    ``ShardWriter`` writes per shard, and no ``index.json``, which is written last), and the
    command that finishes it; None for anything else (a finished set, a folder of tars
    another tool wrote)."""
    folder = str(folder).rstrip("/")
    if storage.exists(storage.join(folder, "index.json")):
        return None
    stats = storage.glob(storage.join(folder, "stats", "*-[0-9]*.json"))
    if not stats:
        return None
    return f"{folder}: its build never finished (no index.json); {finish_hint(folder, stats)}"


def finish_hint(folder: str, stats: list[str]) -> str:
    """How to finish the build in ``folder``: the filter command its stats record, or vtk
    shard's resume."""
    try:
        settings = storage.read_json(stats[-1]).get("settings") or {}
    except (OSError, ValueError, AttributeError, VtkError):
        settings = {}
    made = settings.get("filter") if isinstance(settings, dict) else None
    if isinstance(made, dict) and made.get("command"):
        return f"finish it by running its filter again: {made['command']}"
    return (f"finish it with the vtk shard command that built it plus --resume (--out "
            f"{folder})")


def refuse_unfinished(folder) -> None:
    """A VtkError when ``folder`` is a vtk build that never finished (``unfinished``)."""
    why = unfinished(folder)
    if why:
        raise VtkError(why)


# --- the keys of a shard, and sidecars checked against them ------------------------------

def tar_keys(tar: str) -> list[str]:
    """The sample keys of a tar in order, from its headers (no member data read)."""
    from vtk.data.order import scan_samples

    try:
        return [e.key for e in scan_samples(tar)]
    except (tarfile.TarError, OSError, EOFError) as e:
        raise VtkError(f"{tar}: cannot be read to the end ({e})") from None


def check_rows(path, keys: list, shard_keys: list[str], hint: str) -> None:
    """A sidecar's rows (``keys``, in its row order) must be the shard's samples, each once,
    in tar order: the one check every sidecar kind (scores, captions) runs before its rows
    are trusted. ``hint``: what mends it (e.g. ``run: vtk score DIR``)."""
    where = f"{path}"
    if any(not isinstance(k, str) for k in keys):
        raise VtkError(f"{where}: a __key__ is not a text (null or a number); {hint}")
    seen: set[str] = set()
    twice = next((k for k in keys if k in seen or seen.add(k)), None)
    if twice is not None:
        raise VtkError(f"{where}: key {twice!r} appears twice; {hint}")
    if keys == shard_keys:
        return
    mine = set(shard_keys)
    foreign = [k for k in keys if k not in mine]
    if foreign:
        raise VtkError(f"{where}: {len(foreign)} of its {len(keys)} keys are not in its shard "
                       f"(first: {foreign[0]!r}): a sidecar of another shard or set; {hint}")
    if len(keys) != len(shard_keys):
        missing = next(k for k in shard_keys if k not in seen)
        raise VtkError(f"{where}: {len(keys)} rows for the {len(shard_keys)} samples of its "
                       f"shard (first missing: {missing!r}); {hint}")
    raise VtkError(f"{where}: its rows are not in its shard's order; {hint}")


# --- vtk verify ---------------------------------------------------------------------------

@dataclass
class ShardCheck:
    file: str
    bytes: int = 0
    sha256: str | None = None
    keys: list[str] = field(default_factory=list)
    error: str | None = None


def read_shard(path: str, advance=lambda n: None) -> ShardCheck:
    """One streaming read of a tar: its sha256, its size and its sample keys (the headers
    parsed from the same bytes as they pass)."""
    from vtk.shards.wds_index import split_name

    check = ShardCheck(storage.basename(path))

    class Reader:  # what tarfile's stream mode reads through
        def __init__(self, f):
            self.f = f

        def read(self, n=-1):
            data = self.f.read(n)
            check.bytes += len(data)
            hasher.update(data)
            advance(len(data))
            return data

    hasher = hashlib.sha256()
    try:
        with storage.open(path, "rb") as f:
            reader = Reader(f)
            last = None
            try:
                with tarfile.open(fileobj=reader, mode="r|", bufsize=READ_BLOCK) as tar:
                    for m in tar:
                        tar.members.clear()
                        base, _ = split_name(m.name)
                        if m.isreg() and base and not base.endswith("/") and base != last:
                            check.keys.append(base)
                            last = base
            except (tarfile.TarError, EOFError) as e:
                check.error = f"not a whole tar ({e})"
            while reader.read(READ_BLOCK):  # the end blocks and padding: hashed too
                pass
    except (OSError, VtkError) as e:
        check.error = f"unreadable ({getattr(e, 'strerror', None) or e})"
    check.sha256 = hasher.hexdigest()
    return check


@dataclass
class Report:
    folder: str
    shards: int = 0
    samples: int = 0
    bytes: int = 0
    set_sha256: str | None = None
    problems: list[str] = field(default_factory=list)
    sidecars: int = 0


# where a kind of sidecar lies (a glob under the set's folder) -> what rewrites one: vtk
# score's scores, and vtk caption's caption layers (one folder per layer)
SIDECAR_KINDS: dict[str, str] = {"scores/*.parquet": "vtk score {folder} --overwrite",
                                 "captions/*/*.parquet": "caption its layer again (vtk caption)"}


def sidecar_shard_hash(path: str) -> str | None:
    """The shard sha256 a Parquet sidecar's ``vtk`` metadata records (None when it records
    none, or cannot be read)."""
    import json

    import pyarrow.parquet as pq

    try:
        with storage.open(path, "rb") as f:
            meta = pq.read_schema(f).metadata or {}
        value = json.loads(meta.get(b"vtk", b"{}")).get("tar_sha256")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _check_sidecars(folder: str, name: str, checks: dict[str, ShardCheck],
                    recorded: dict[str, dict], report: Report) -> None:
    import pyarrow.parquet as pq

    for pattern, fix in SIDECAR_KINDS.items():
        hint = "rewrite it: " + fix.format(folder=folder)
        for path in storage.glob(storage.join(folder, pattern)):
            report.sidecars += 1
            file = storage.basename(path)[:-len(".parquet")] + ".tar"
            rel = path[len(folder) + 1:]
            shard = checks.get(file)
            if file not in recorded:
                report.problems.append(f"{rel}: belongs to no shard of the set ({file} is not "
                                       f"in index.json); remove it")
                continue
            recorded_hash = recorded[file].get(HASH)
            own = sidecar_shard_hash(path)
            if own and recorded_hash and own != recorded_hash:
                report.problems.append(f"{rel}: written for another build of {file} (its "
                                       f"shard hash {own[:12]}..., the set's "
                                       f"{recorded_hash[:12]}...); {hint}")
                continue
            if shard is None or shard.error:
                continue
            try:
                with storage.open(path, "rb") as f:
                    keys = pq.read_table(f, columns=["__key__"]).column("__key__").to_pylist()
                check_rows(rel, keys, shard.keys, hint)
            except VtkError as e:
                report.problems.append(str(e))
            except (OSError, ValueError, KeyError) as e:
                report.problems.append(f"{rel}: unreadable sidecar ({e}); {hint}")


def verify_set(folder: str, workers: int | None = None, progress: bool = True) -> Report:
    """Re-read and re-hash every shard of the set at ``folder`` (a folder or a URL), on
    ``workers`` threads, against its index.json: missing, extra, cut short or altered shards
    and sidecars that do not belong are the report's problems."""
    from rich.progress import BarColumn, DownloadColumn, TextColumn, TimeRemainingColumn

    from vtk.progress import bar

    folder = str(folder).rstrip("/")
    report = Report(folder)
    if storage.store(folder).local and not os.path.isdir(folder):
        raise VtkError(f"{folder}: shard set folder not found")
    card = read_card(folder)
    name = card_name(card, folder)
    recorded = recorded_shards(card, folder)
    report.set_sha256 = card.get("set_sha256")
    present = {storage.basename(p): p for p in storage.glob(storage.join(folder, "*.tar"))}
    for file in sorted(set(present) - set(recorded)):
        report.problems.append(f"{file}: extra (not in index.json)")
    for file in sorted(set(recorded) - set(present)):
        report.problems.append(f"{file}: missing")
    unhashed = [f for f, s in recorded.items() if not s.get(HASH)]
    if unhashed:
        report.problems.append(f"index.json records no sha256 for {len(unhashed)} shard(s) "
                               f"(first: {unhashed[0]}; built by an older vtk): counts and "
                               f"sizes checked only")
    if recorded and set_hash(list(recorded.values())) != card.get("set_sha256") and not unhashed:
        report.problems.append("index.json's set_sha256 does not match its shard records")
    todo = [present[f] for f in sorted(recorded) if f in present]
    total = sum(recorded[storage.basename(p)]["bytes"] for p in todo)
    workers = workers or min(8, os.cpu_count() or 1)
    checks: dict[str, ShardCheck] = {}
    with bar(TextColumn("verify"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
             line="verify", stderr=True, disable=not progress) as pbar:
        task = pbar.add_task("verify", total=total or None)
        done = {"n": 0}

        def advance(n):  # several threads: an int add is atomic enough for a progress line
            done["n"] += n
            pbar.update(task, completed=done["n"])

        with ThreadPoolExecutor(workers, thread_name_prefix="vtk-verify") as pool:
            for check in pool.map(lambda p: read_shard(p, advance), todo):
                checks[check.file] = check
    for file in sorted(checks):
        c, want = checks[file], recorded[file]
        report.shards += 1
        report.samples += len(c.keys)
        report.bytes += c.bytes
        if c.bytes < want["bytes"]:
            report.problems.append(f"{file}: truncated ({c.bytes} of {want['bytes']} bytes)")
        elif c.error:
            report.problems.append(f"{file}: {c.error}")
        elif want.get(HASH) and c.sha256 != want[HASH]:
            report.problems.append(f"{file}: altered (sha256 {c.sha256[:12]}..., index.json "
                                   f"{want[HASH][:12]}...)")
        elif c.bytes != want["bytes"]:
            report.problems.append(f"{file}: {c.bytes} bytes, index.json says {want['bytes']}")
        elif len(c.keys) != want["num_samples"]:
            report.problems.append(f"{file}: {len(c.keys)} samples, index.json says "
                                   f"{want['num_samples']}")
    _check_sidecars(folder, name, checks, recorded, report)
    return report


def check_counts(folder: str) -> None:
    """What ``vtk train`` checks at its start, cheaply (no shard read): the set's build
    finished, and every shard index.json lists is there with the bytes it records and none
    else; each a one-line VtkError naming the shard and ``vtk verify``."""
    folder = str(folder).rstrip("/")
    refuse_unfinished(folder)
    if not storage.exists(storage.join(folder, "index.json")):
        return  # tars another tool wrote: nothing recorded to check against
    card = read_card(folder)
    if "shards" not in card:
        return
    recorded = recorded_shards(card, folder)
    sizes = _tar_sizes(folder)
    hint = f"run vtk verify {folder} for the whole story"
    for file in sorted(set(sizes) - set(recorded)):
        raise VtkError(f"{storage.join(folder, file)}: not in {folder}/index.json (an extra "
                       f"shard); {hint}")
    for file, s in recorded.items():
        path = storage.join(folder, file)
        if file not in sizes:
            raise VtkError(f"{path}: missing (index.json lists it); {hint}")
        if sizes[file] != s["bytes"]:
            what = "truncated" if sizes[file] < s["bytes"] else "changed"
            raise VtkError(f"{path}: {what} ({sizes[file]} bytes, index.json says "
                           f"{s['bytes']}); {hint}")
        if storage.store(folder).local:  # the .idx's count: one line of a small local file
            try:
                with open(os.path.join(folder, file[:-len(".tar")] + ".idx")) as f:
                    count = int(f.readline(64).split()[1])
            except (OSError, ValueError, IndexError, UnicodeDecodeError):
                continue  # no .idx (the loader lists the headers): nothing to compare
            if count != s["num_samples"]:
                raise VtkError(f"{path}: its .idx counts {count} samples, index.json "
                               f"{s['num_samples']}; {hint}")


def _tar_sizes(folder: str) -> dict[str, int]:
    """Size of every top-level ``*.tar`` of a set, from one listing (a URL: no request per
    shard)."""
    return storage.sizes(folder, ".tar")
