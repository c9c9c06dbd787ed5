"""A shard set indexed lazily for the viewer: rows, pages, filters, members read by offset.

Opening reads ``index.json``, lists the top-level ``*.tar`` (as the loader does) and reads the
first line of each ``.idx`` (``v1.2 <count>``): nothing else, so a 100k-clip set opens about as
fast as a 100-clip one (figures in docs/view.md). A shard's sample list (key, mp4 and json
offsets) is read from its ``.idx``, or from its tar headers when there is none (vtk.view.members),
the first time a page touches that shard, and kept in an LRU of ``listing_cache`` shards.

Filtering and sorting need every sample's json. The first filtered or sorted request reads the
json members shard by shard (by offset; the mp4s are never read) into *facets*: per row the
lower-cased caption text, the label and the scores (the json's ``scores``, with those of a
``vtk score`` sidecar, ``scores/NAME-000000.parquet``, merged in). Facets are cached under a byte bound
(``facet_budget``); past it the least recently used shards are dropped and read again when a
query needs them, so memory stays bounded on any set and a repeated query on a set that fits is
answered from memory.

A shard that cannot be read (not a tar, cut short, a symlink out of the folder) becomes one
error row, after whatever samples of it could be read; it never stops the viewer.
"""

from __future__ import annotations

import glob
import itertools
import json
import math
import os
import sys
import threading
from array import array
from collections import OrderedDict
from dataclasses import dataclass
from urllib.parse import quote

from vtk.captions.layer import list_layers
from vtk.curate.sidecar import merge_scores
from vtk.errors import VtkError
from vtk.fileio import read_regular
from vtk.shards.schema import parse_meta
from vtk.shards.wds_index import INDEX_VERSION, index_path
from vtk.view.members import Listing, MemberError, list_tar, read_member

# json fields of a sample the page shows (``synth`` ground truth is left out: it is bulky and
# the captions already say what it holds)
ITEM_FIELDS = ("source", "source_id", "clip", "start", "end", "fps", "num_frames", "width",
               "height", "codec", "captions", "caption_models", "caption_errors", "caption",
               "label", "scores", "texts", "extra")
FAILURE_FIELDS = ("source", "input", "kind", "reason", "key")
MAX_LIMIT = 500


class LRU:
    """A thread-safe least-recently-used map bounded by the summed ``weigh`` of its values."""

    def __init__(self, budget: int, weigh=lambda value: 1):
        self.budget, self.weigh = budget, weigh
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self.total = 0

    def get(self, key):
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key][0]

    def put(self, key, value) -> None:
        weight = self.weigh(value)
        with self._lock:
            if key in self._items:
                self.total -= self._items.pop(key)[1]
            self._items[key] = (value, weight)
            self.total += weight
            while self.total > self.budget and len(self._items) > 1:
                self.total -= self._items.popitem(last=False)[1][1]

    def keys(self) -> list:
        with self._lock:
            return list(self._items)


@dataclass
class Shard:
    file: str  # the tar's name in the folder
    path: str
    count: int = 0  # rows as known now: the .idx header's count until the shard is listed
    problem: str | None = None  # set when the shard is not read at all


@dataclass
class Facets:
    """What filters and sorts read, per row of one shard: ``text`` (None for rows that cannot
    be read), ``label`` (interned: a label set is small) and one array per score name (NaN
    where a row has no such score): about the size of the captions, plus 8 bytes a score."""
    text: list[str | None]
    label: list[str | None]
    scores: dict[str, array]
    size: int = 0  # bytes, as sys.getsizeof counts them

    @classmethod
    def build(cls, infos, extra_rows: int = 0) -> Facets:
        """From the parsed json of each sample (None: unreadable); ``extra_rows`` error rows
        follow them."""
        text, labels, rows = [], [], []
        for info in itertools.chain(infos, [None] * extra_rows):
            label = None if info is None else info.get("label")
            text.append(None if info is None else search_text(info))
            labels.append(None if label is None else sys.intern(str(label)))
            rows.append(None if info is None else numeric_scores(info))
        names = sorted({k for r in rows if r for k in r})
        scores = {k: array("d", (r.get(k, math.nan) if r else math.nan for r in rows))
                  for k in names}
        size = sum(sys.getsizeof(t) for t in text if t) + 16 * len(text) + sum(
            sys.getsizeof(a) for a in scores.values())
        return cls(text, labels, scores, size)

    def score(self, name: str, j: int) -> float | None:
        values = self.scores.get(name)
        value = values[j] if values is not None else math.nan
        return None if math.isnan(value) else value


def search_text(info: dict) -> str:
    """Every caption of a sample, lower-cased, one per line: what the word filter searches.
    The page's static mode builds the same text (static/view.js: searchText)."""
    caps = info.get("captions") if isinstance(info.get("captions"), dict) else {}
    parts = [caps.get("coarse"), caps.get("fine"), caps.get("fused"), info.get("caption")]
    frames = caps.get("frames")
    parts += [f.get("text") for f in frames if isinstance(f, dict)] if isinstance(
        frames, list) else []
    parts += info.get("texts") or []
    return "\n".join(dict.fromkeys(p for p in parts if isinstance(p, str) and p)).lower()


def numeric_scores(info: dict) -> dict | None:
    scores = info.get("scores")
    if not isinstance(scores, dict):
        return None
    out = {str(k): float(v) for k, v in scores.items()
           if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
    return out or None


class ShardSetView:
    """The rows of a shard set folder, read on demand. Thread-safe for the server's threads."""

    def __init__(self, folder: str, listing_cache: int = 64, facet_budget: int = 64 * 2**20):
        self.folder = str(folder)
        self.root = os.path.realpath(folder)
        if not os.path.isdir(self.root):
            raise VtkError(f"{folder}: not a folder")
        self.card, self.card_problem = self._read_card()
        self._listings = LRU(listing_cache)
        self._facets = LRU(facet_budget, lambda f: f.size)
        self._failures: list[dict] | None = None
        self._lock = threading.Lock()
        self.labels: set[str] = set()
        self.score_names: set[str] = set()
        self.shards = [self._shard(p) for p in sorted(glob.glob(os.path.join(self.root, "*.tar")))]
        self.layers = list_layers(self.root)  # caption layers: a column each (vtk caption)
        self.by_file = {s.file: i for i, s in enumerate(self.shards)}
        listed = {s.get("file"): s.get("num_samples") for s in self.card.get("shards") or []
                  if isinstance(s, dict)}
        for i, shard in enumerate(self.shards):
            shard.count = self._first_count(i, listed.get(shard.file))

    # --- opening -------------------------------------------------------------------------

    def inside(self, path: str) -> bool:
        """True when ``path``, symlinks resolved, lies in the shard set's folder."""
        real = os.path.realpath(path)
        return real == self.root or real.startswith(self.root + os.sep)

    def _read_card(self) -> tuple[dict, str | None]:
        path = os.path.join(self.root, "index.json")
        if not os.path.isfile(path):
            return {}, "no index.json (not a shard set, or its build never finished)"
        if not self.inside(path):
            return {}, "index.json is a symlink out of the folder: not read"
        try:
            card = json.loads(read_regular(path).decode("utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            return {}, f"index.json unreadable ({e})"
        if not isinstance(card, dict):
            return {}, "index.json is not an object"
        return card, None

    def _shard(self, path: str) -> Shard:
        shard = Shard(os.path.basename(path), path)
        if not self.inside(path):
            shard.problem = f"{shard.file}: a symlink out of the folder; not served"
        elif not os.path.isfile(path):
            shard.problem = f"{shard.file}: not a file"
        return shard

    def _first_count(self, i: int, listed) -> int:
        shard = self.shards[i]
        if shard.problem:
            return 1
        idx = index_path(shard.path)
        if os.path.isfile(idx) and self.inside(idx):
            try:
                with open(idx) as f:
                    version, count = f.readline(64).split()
                # a sample takes one 512-byte header at least: a count past that is not this
                # tar's (the startup line would claim a billion rows)
                if version == INDEX_VERSION and 0 <= int(count) <= os.path.getsize(
                        shard.path) // 512:
                    return int(count)
            except (OSError, ValueError, UnicodeDecodeError):
                pass
        if isinstance(listed, int) and 0 <= listed <= os.path.getsize(shard.path) // 512:
            return listed
        return self.listing(i).rows  # no usable .idx and not in the card: read headers now

    # --- shards --------------------------------------------------------------------------

    def listing(self, i: int) -> Listing:
        got = self._listings.get(i)
        if got is None:
            got = self._list(self.shards[i])
            self._listings.put(i, got)
            self.shards[i].count = got.rows
        return got

    def _list(self, shard: Shard) -> Listing:
        if shard.problem:
            return Listing([], shard.problem)
        idx = index_path(shard.path)
        return list_tar(shard.path, idx if os.path.isfile(idx) and self.inside(idx) else None)

    def listed_shards(self) -> list[int]:
        """Indexes of the shards whose sample lists are in memory now."""
        return sorted(self._listings.keys())

    # --- rows ----------------------------------------------------------------------------

    def total(self) -> int:
        return sum(s.count for s in self.shards)

    def row(self, i: int, j: int, listing: Listing | None = None) -> dict:
        """One row: a clip's fields and URLs, or ``{"error": ...}``."""
        shard = self.shards[i]
        listing = listing or self.listing(i)
        base = {"shard": shard.file, "row": j}
        if j >= len(listing.entries):
            return {**base, "key": None, "error": listing.error or "no such row"}
        key, mp4_off, mp4_size, json_off, json_size = listing.entries[j]
        base["key"] = key
        if json_off < 0:
            return {**base, "error": f"{key}: no .json member"}
        try:
            with open(shard.path, "rb") as f:
                info = parse_meta(read_member(f.fileno(), json_off, json_size))
        except (OSError, MemberError, ValueError) as e:
            return {**base, "error": f"{key}: {e}"}
        info = merge_scores(info, (self.sidecar(i) or {}).get(key))
        item = {**base, **{k: info[k] for k in ITEM_FIELDS if k in info}}
        layers = {name: got for name in self.layers
                  if (got := (self.layer(i, name) or {}).get(key))}
        if layers:
            item["layers"] = layers
        if mp4_off >= 0:
            url = f"{quote(shard.file)}/{j}"
            item["mp4"], item["poster"] = f"media/{url}.mp4", f"poster/{url}.jpg"
        else:
            item["error"] = f"{key}: no .mp4 member"
        self._seen(info.get("label"), numeric_scores(info))
        return item

    def _seen(self, label, scores) -> None:
        """Labels and score names met so far: the page offers them in its filter and sort."""
        if label is not None and len(self.labels) < 5000:
            self.labels.add(str(label))
        if scores:
            self.score_names.update(scores)

    def member(self, file: str, j: int, ext: str = "mp4") -> tuple[str, int, int] | None:
        """(tar path, offset, size) of a member a URL names, None when it is not in the set."""
        i = self.by_file.get(file)
        if i is None or self.shards[i].problem:
            return None
        listing = self.listing(i)
        if not 0 <= j < len(listing.entries):
            return None
        _, mp4_off, mp4_size, json_off, json_size = listing.entries[j]
        off, size = (mp4_off, mp4_size) if ext == "mp4" else (json_off, json_size)
        if off < 0:
            return None
        return self.shards[i].path, off, size

    def read(self, file: str, j: int, ext: str = "mp4") -> bytes | None:
        where = self.member(file, j, ext)
        if where is None:
            return None
        with open(where[0], "rb") as f:
            return read_member(f.fileno(), where[1], where[2])

    def sidecar(self, i: int) -> dict | None:
        """The scores of ``vtk score`` for shard ``i`` (``{key: {name: value}}``), None when
        it has no sidecar, or one out of the folder or unreadable (then the json's own
        scores stand)."""
        from vtk.curate.sidecar import load_sidecar, sidecar_path

        shard = self.shards[i]
        path = sidecar_path(shard.path)
        if shard.problem or not path.is_file() or not self.inside(str(path)):
            return None
        try:
            return load_sidecar(shard.path)
        except VtkError:
            return None

    def layer(self, i: int, name: str) -> dict | None:
        """Caption layer ``name``'s captions of shard ``i`` (``{key: {"text", "coarse",
        "fine", "fused", "error"}}``), None without a sidecar (or one out of the folder or
        unreadable)."""
        from vtk.captions.layer import layer_path, load_layer

        shard = self.shards[i]
        if shard.problem or not self.inside(layer_path(shard.path, name)):
            return None
        try:
            return load_layer(shard.path, name)
        except VtkError:
            return None

    # --- queries -------------------------------------------------------------------------

    def facets(self, i: int) -> Facets:
        got = self._facets.get(i)
        if got is not None:
            return got
        listing = self.listing(i)
        facets = Facets.build(self._infos(i, listing), extra_rows=listing.error is not None)
        for label in set(facets.label) - {None}:
            self._seen(label, None)
        self.score_names.update(facets.scores)
        self._facets.put(i, facets)
        return facets

    def _infos(self, i: int, listing: Listing):
        """The parsed json of each sample of a shard, None where it cannot be read."""
        try:
            f = open(self.shards[i].path, "rb")
        except OSError:
            yield from [None] * len(listing.entries)
            return
        scores = self.sidecar(i) or {}
        with f:
            for key, _, _, json_off, json_size in listing.entries:
                try:
                    if json_off < 0:
                        raise MemberError("no json")
                    info = parse_meta(read_member(f.fileno(), json_off, json_size))
                except (OSError, MemberError, ValueError):
                    yield None
                else:
                    yield merge_scores(info, scores.get(key))

    def query(self, q: str = "", label: str = "", sort: str = "", order: str = "desc",
              offset: int = 0, limit: int = 24) -> dict:
        """A page of rows. ``q``: words that must all occur (as substrings, case ignored) in
        the sample's captions; ``label``: exact label, case ignored; ``sort``: a score name,
        rows without it last. With none of them, rows come in shard order and only the shards
        the page covers are read."""
        offset, limit = max(0, int(offset)), max(1, min(int(limit), MAX_LIMIT))
        words, label = q.lower().split(), label.strip().lower()
        if not (words or label or sort):
            items = self._page(offset, limit)
            total = self.total()
        else:
            matches = []
            for i in range(len(self.shards)):
                f = self.facets(i)
                for j, text in enumerate(f.text):
                    if text is None or not all(w in text for w in words):
                        continue
                    if label and (f.label[j] or "").lower() != label:
                        continue
                    if sort:
                        value = f.score(sort, j)
                        matches.append((value is None, value or 0.0, i, j))
                    else:
                        matches.append((False, 0.0, i, j))
            if sort:
                sign = -1.0 if order != "asc" else 1.0
                matches.sort(key=lambda m: (m[0], sign * m[1]))
            total = len(matches)
            items = [self.row(i, j) for _, _, i, j in matches[offset:offset + limit]]
        return {"total": total, "offset": offset, "limit": limit, "items": items,
                "labels": sorted(self.labels), "scores": sorted(self.score_names)}

    def _page(self, offset: int, limit: int) -> list[dict]:
        items, pos, listed = [], 0, set(self._listings.keys())
        for i, shard in enumerate(self.shards):
            if len(items) >= limit:
                break
            if pos + shard.count <= offset and i not in listed:
                pos += shard.count
                continue
            listing = self.listing(i)
            for j in range(max(0, offset - pos), listing.rows):
                if len(items) >= limit:
                    break
                items.append(self.row(i, j, listing))
            pos += listing.rows
        return items

    # --- panels --------------------------------------------------------------------------

    def summary(self) -> dict:
        """The dataset card panel: index.json and what the viewer found."""
        from vtk.captions.layer import read_card

        layers = []
        for name in self.layers:
            c = read_card(self.root, name)
            layers.append({"name": name, "models": c.get("models"),
                           "prompt_sha": c.get("prompt_sha"), "samples": c.get("samples"),
                           "failures": c.get("failures")})
        return {"folder": os.path.basename(self.root.rstrip(os.sep)) or self.root,
                "card": self.card, "card_problem": self.card_problem, "total": self.total(),
                "layers": layers,
                "shards": [{"file": s.file, "rows": s.count, "problem": s.problem}
                           for s in self.shards]}

    def failures(self) -> list[dict]:
        """Failed inputs that still stand (stats/*.json), as ShardWriter.failures counts them:
        the latest record per input, none for one a later retry wrote."""
        with self._lock:
            if self._failures is None:
                self._failures = self._read_failures()
            return self._failures

    def _read_failures(self) -> list[dict]:
        records, keys, problems = [], set(), []
        for path in sorted(glob.glob(os.path.join(self.root, "stats", "*.json"))):
            name = "stats/" + os.path.basename(path)
            if not self.inside(path):
                problems.append({"kind": "stats-unreadable", "input": name,
                                 "reason": "a symlink out of the folder; not read"})
                continue
            try:  # a regular file only: a FIFO here would hang the request (and the lock)
                stats = json.loads(read_regular(path).decode("utf-8"))
                keys.update(str(k) for k in stats.get("keys") or [])
                got = [r for r in stats.get("failures") or [] if isinstance(r, dict)]
            except (OSError, ValueError, AttributeError, TypeError) as e:  # UnicodeDecodeError
                problems.append({"kind": "stats-unreadable", "input": name, "reason": str(e)})
                continue
            records += [{k: str(r[k]) for k in FAILURE_FIELDS if r.get(k) is not None}
                        for r in got]
        written = {k.rsplit("_", 1)[0] for k in keys}
        latest: dict = {}
        for r in records:
            if r.get("key") in keys or (not r.get("key") and r.get("source") in written):
                continue
            latest[(r.get("source"), r.get("key"))] = r
        return list(latest.values()) + problems

    def failure_page(self, reason: str = "", offset: int = 0, limit: int = 100) -> dict:
        every = self.failures()
        by_reason: dict[str, int] = {}
        for r in every:
            by_reason[r.get("kind", "")] = by_reason.get(r.get("kind", ""), 0) + 1
        rows = [r for r in every if not reason or r.get("kind") == reason]
        offset, limit = max(0, int(offset)), max(1, min(int(limit), MAX_LIMIT))
        return {"total": len(rows), "offset": offset, "limit": limit,
                "by_reason": dict(sorted(by_reason.items())), "items": rows[offset:offset + limit]}

    def set_file(self, rel: str) -> str | None:
        """The real path of one of the set's own files (``index.json``, a top-level ``.tar`` or
        ``.idx``, ``stats/*.json``) named by a relative URL path; None for anything else:
        ``..``, absolute paths, hidden files, other files, symlinks out of the folder."""
        if not rel or "\0" in rel or "\\" in rel or rel.startswith("/"):
            return None
        parts = rel.split("/")
        if any(p in ("", ".", "..") or p.startswith(".") for p in parts):
            return None
        top = len(parts) == 1 and (rel == "index.json" or rel.endswith((".tar", ".idx")))
        stats = len(parts) == 2 and parts[0] == "stats" and parts[1].endswith(".json")
        path = os.path.join(self.root, *parts)
        if not (top or stats) or not os.path.isfile(path) or not self.inside(path):
            return None
        return os.path.realpath(path)
