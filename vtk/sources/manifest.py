"""Manifests: one row per video or clip, in CSV, TSV, JSONL or Parquet.

Column names are matched case-insensitively:

- video (required, one of): ``path``, ``video``, ``file``, ``filepath``, ``video_path``, ``url``,
  ``YoutubeID`` / ``youtube_id`` / ``videoid`` / ``video_id`` (InternVid, Kinetics);
- times: ``start`` / ``Start_timestamp`` / ``time_start`` / ``start_time`` and the ``end``
  equivalents, in seconds or ``[HH:]MM:SS[.mmm]``; or video2dataset's ``clips``
  (``[[start, end], ...]``), which makes one item per range;
- text: ``caption`` / ``Caption`` / ``text``; ``label``; numeric ``*score*`` columns
  (InternVid's ``UMT_Score``, ``Aesthetic_Score``) go to ``scores``;
- every other column is carried into the sample's json under ``extra``.

Each row is read for itself (JSONL rows can differ in their keys): a later row's ``start`` or
``caption`` is honoured even if the first row had none. The first readable row must have a
video column (else the file is not a manifest: one VtkError); a later row without one is a
failed row.

Relative paths are tried under ``--video-root``, then next to the manifest (a manifest at a
URL: under its folder URL, read by the worker), then in the working directory. With
``--video-root``, URLs and YouTube IDs are looked up there as ``<video-root>/<id>.*`` (the
layout yt-dlp and video2dataset leave); without it, a video at an ``s3://``, ``gs://`` or
``http(s)://`` URL is fetched by the worker that decodes it (``vtk.sources.fetch``), and a
YouTube URL or ID is a failed row (vtk does not download from YouTube: docs/shards.md pairs
it with yt-dlp). A row that cannot be used (bad timestamps, missing video,
non-UTF-8 text, a JSONL line that is not a JSON object) becomes an item carrying
``meta["error"]``, named by its row (CSV, TSV, Parquet; the header is row 1) or line (JSONL).

Ids (:func:`vtk.types.source_id`) come from the row alone: the video field as written
(``sub/a.mp4``, ``s3://bucket/raw/a.mp4``; for a URL or YouTube ID looked up under
``--video-root``, the ID it is looked up by), then
``--r<start ms>-<end ms>`` for a timed row or each video2dataset ``clips`` range. Two rows with
the same video and range are one input: the second is skipped and counted
(:class:`vtk.sources.Sources`).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections.abc import Iterator
from urllib.parse import parse_qs, urlparse

from vtk import storage
from vtk.errors import VtkError, require
from vtk.sources.folder import VIDEO_EXTS, not_regular
from vtk.types import SourceItem, source_id

VIDEO_COLS = ("path", "video", "file", "filepath", "video_path", "url", "youtubeid",
              "youtube_id", "videoid", "video_id")
START_COLS = ("start", "start_timestamp", "time_start", "start_time")
END_COLS = ("end", "end_timestamp", "time_end", "end_time")
CAPTION_COLS = ("caption", "text", "txt")
_YT_ID = re.compile(r"^[A-Za-z0-9_-]{11}$")
REMOTE = ("http", "https", "s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "ftp")


def manifest_items(path: str, video_root: str | None = None) -> Iterator[SourceItem]:
    """Yield one item per usable row (several for a video2dataset ``clips`` list)."""
    resolver = _Resolver(storage.parent(storage.absolute(path)), video_root)
    name = storage.basename(path)
    unit = "line" if path.lower().endswith(".jsonl") else "row"
    before_first: list[SourceItem] = []  # failed rows held until the file proves a manifest
    checked = False
    for row, error in _read_rows(path):
        row_no = row.pop("__row__")
        where = f"{name} {unit} {row_no}"
        if error:
            failed = _failed(f"{name}:{unit}{row_no}", where, *error)
            if checked:
                yield failed
            else:
                before_first.append(failed)
            continue
        cols = {c.lower(): c for c in row}
        video_col = next((cols[c] for c in VIDEO_COLS if c in cols), None)
        if not checked:
            if video_col is None:
                raise VtkError(f"{path}: no video column (need one of: path, video, url, "
                               f"YoutubeID; found in {unit} {row_no}: "
                               f"{', '.join(map(str, row)) or 'none'})")
            checked = True
            yield from before_first
            before_first = []
        if video_col is None:
            yield _failed(f"{name}:{unit}{row_no}", where, "missing-column",
                          "no video column (need one of: path, video, url, YoutubeID)")
            continue
        yield from _row_items(row, f"{name}:{unit}{row_no}", cols, video_col, resolver, where)
    if not checked:
        if before_first:
            first = before_first[0].meta
            raise VtkError(f"{path}: no readable rows ({first['input']}: "
                           f"{first['error']['reason']})")
        raise VtkError(f"{path}: manifest has no rows")


def _failed(row_name: str, where: str, kind: str, reason: str) -> SourceItem:
    """A row that makes no clip; its id comes from the manifest's name and the row number."""
    return SourceItem(id=source_id(row_name),
                      meta={"input": where, "error": {"kind": kind, "reason": reason}})


def _row_items(row: dict, row_name: str, cols: dict, video_col: str, resolver, where: str):
    video = _text(row.get(video_col))
    if not video:
        yield _failed(row_name, where, "missing-column", f"empty {video_col}")
        return
    where = f"{where} ({video})"
    used = {video_col}
    meta: dict = {"input": where}
    try:
        ranges = _ranges(row, cols, used)
    except ValueError as e:
        yield _failed(row_name, where, "bad-timestamps", str(e))
        return
    for key, target in (("caption", CAPTION_COLS), ("label", ("label",))):
        col = next((cols[c] for c in target if c in cols), None)
        if col is not None:
            used.add(col)
            if _text(row.get(col)):
                meta[key] = _text(row[col])
    scores = {c: _number(row[c]) for c in row if c not in used and "score" in c.lower()
              and _number(row[c]) is not None}
    used |= set(scores)
    if scores:
        meta["scores"] = scores
    extra = {c: _jsonable(v) for c, v in row.items() if c not in used}
    if extra:
        meta["extra"] = extra
    path, vid_id, problem = resolver.resolve(video)
    base = source_id(vid_id)
    for start, end in ranges:
        item_id = base if start is None and end is None else f"{base}--r{_ms(start)}-{_ms(end)}"
        item = SourceItem(id=item_id, path=path, start=start, end=end, meta=dict(meta))
        if problem:
            item.meta["error"] = {"kind": "not-found", "reason": problem}
        yield item


def _ranges(row: dict, cols: dict, used: set) -> list[tuple[float | None, float | None]]:
    """The (start, end) ranges of a row in seconds; ValueError on bad timestamps."""
    if "clips" in cols:
        used.add(cols["clips"])
        raw = row.get(cols["clips"])
        if raw not in (None, ""):
            clips = json.loads(raw) if isinstance(raw, str) else raw
            if not isinstance(clips, list) or not clips:
                raise ValueError(f"clips must be a list of [start, end], got {raw!r}")
            if not all(isinstance(c, (list, tuple)) and len(c) == 2 for c in clips):
                raise ValueError(f"clips must be a list of [start, end], got {raw!r}")
            return [_check(_seconds(c[0]), _seconds(c[1])) for c in clips]
    start_col = next((cols[c] for c in START_COLS if c in cols), None)
    end_col = next((cols[c] for c in END_COLS if c in cols), None)
    used.update(c for c in (start_col, end_col) if c)
    start = _seconds(row.get(start_col)) if start_col else None
    end = _seconds(row.get(end_col)) if end_col else None
    return [_check(start, end)]


def _check(start, end):
    if start is not None and start < 0:
        raise ValueError(f"negative start {start}")
    if start is not None and end is not None and end <= start:
        raise ValueError(f"end {end} is not after start {start}")
    return start, end


def _seconds(value) -> float | None:
    """Seconds from a number or ``[HH:]MM:SS[.mmm]``; None for empty; ValueError otherwise."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ValueError(f"bad timestamp {value!r}")
        return float(value)
    text = str(value).strip()
    try:
        parts = [float(p) for p in text.split(":")]
    except ValueError:
        raise ValueError(f"bad timestamp {text!r}") from None
    if len(parts) > 3 or not all(math.isfinite(p) for p in parts):
        raise ValueError(f"bad timestamp {text!r}")
    seconds = 0.0
    for p in parts:
        seconds = seconds * 60 + p
    return seconds


def _ms(t: float | None) -> str:
    return "x" if t is None else str(int(round(t * 1000)))


def _text(value) -> str:
    return "" if value is None else str(value).strip()


def _number(value) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _jsonable(value):
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    try:
        json.dumps(value)
        return value
    except TypeError:
        return str(value)


class _Resolver:
    """Finds the local file for a path, URL or YouTube ID."""

    def __init__(self, manifest_dir: str, video_root: str | None):
        self.manifest_dir, self.video_root = manifest_dir, video_root
        self._stems: dict[str, str] | None = None

    def resolve(self, video: str) -> tuple[str | None, str, str | None]:
        """-> (local path or None, text to make the item's id of, problem or None). The text
        is the path as the row wrote it, or the ID a URL or YouTube ID is looked up by."""
        url = urlparse(video)
        if url.scheme == "file":
            video = url.path
        elif url.scheme in REMOTE:
            youtube = _youtube_id(url)
            if self.video_root or youtube:  # downloaded beforehand, as <id>.<ext>
                vid = youtube or os.path.splitext(os.path.basename(url.path))[0] or video
                return self._by_id(vid, video)
            return video, video, None  # fetched, and checked, by the worker
        for base in (self.video_root, self.manifest_dir, ""):  # root, manifest's folder, cwd
            if base is None:
                continue
            if not storage.store(base).local:  # a manifest at a URL: its folder's object
                return storage.join(base, video), video, None
            candidate = os.path.join(base, video) if base else video
            if os.path.exists(candidate) and not os.path.isdir(candidate):
                problem = not_regular(candidate)  # a FIFO is never opened: it would block
                return (None, video, f"{candidate}: {problem}") if problem else (
                    candidate, video, None)
        if os.path.isabs(video) or os.path.splitext(video)[1]:
            return None, video, f"video not found: {video}"
        return self._by_id(video, video)

    def _by_id(self, vid: str, original: str):
        if not self.video_root:
            return None, vid, f"{original} is not a local file: pass --video-root, the folder " \
                              f"that holds the downloaded videos as <id>.<ext> (yt-dlp for " \
                              f"YouTube: docs/shards.md)"
        path = self._stem_map().get(vid)
        if path is None:
            return None, vid, f"no {vid}.* under --video-root {self.video_root}"
        problem = not_regular(path)
        return (None, vid, f"{path}: {problem}") if problem else (path, vid, None)

    def _stem_map(self) -> dict[str, str]:
        if self._stems is None:  # one listing of the root serves every row
            self._stems = {}
            names = sorted(os.listdir(self.video_root)) if os.path.isdir(self.video_root) else []
            for name in names:
                stem, ext = os.path.splitext(name)
                if ext.lower() in VIDEO_EXTS:
                    self._stems.setdefault(stem, os.path.join(self.video_root, name))
        return self._stems


def _youtube_id(url) -> str | None:
    host = url.netloc.lower()
    if host.endswith("youtu.be"):
        return url.path.strip("/") or None
    if "youtube" in host:
        v = parse_qs(url.query).get("v")
        if v:
            return v[0]
        tail = url.path.rstrip("/").rsplit("/", 1)[-1]
        return tail if _YT_ID.match(tail) else None
    return None


# --- readers: yield (row dict with "__row__", error (kind, reason) or None) -------------------


def _read_rows(path: str):
    ext = os.path.splitext(path)[1].lower()
    if ext in (".csv", ".tsv"):
        return _csv_rows(path, "\t" if ext == ".tsv" else ",")
    if ext == ".jsonl":
        return _jsonl_rows(path)
    return _parquet_rows(path)


def _csv_rows(path: str, delimiter: str):
    # utf-8-sig: Excel writes a BOM. surrogateescape keeps undecodable bytes visible per row:
    # one bad row is one failure.
    with io.TextIOWrapper(storage.open(path, "rb"), newline="", encoding="utf-8-sig",
                          errors="surrogateescape") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        for n, row in enumerate(reader, start=2):  # row 1 is the header
            row = {k: v for k, v in row.items() if k}
            bad = next((k for k, v in row.items() if isinstance(v, str) and _has_surrogates(v)),
                       None)
            row["__row__"] = n
            yield row, ("non-utf8", f"column {bad} is not valid UTF-8 text") if bad else None


def _has_surrogates(text: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def _jsonl_rows(path: str):
    with storage.open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                # utf-8-sig: a BOM (Windows editors write one) would make line 1 unparseable
                row = json.loads(raw.decode("utf-8-sig"))
            except UnicodeDecodeError as e:
                yield {"__row__": n}, ("non-utf8", f"not valid UTF-8 ({e.reason})")
                continue
            except json.JSONDecodeError as e:
                yield {"__row__": n}, ("bad-row", f"not a JSON object ({e.msg})")
                continue
            if not isinstance(row, dict):
                yield {"__row__": n}, ("bad-row", "not a JSON object")
                continue
            row.pop("__row__", None)
            row["__row__"] = n
            yield row, None


def _parquet_rows(path: str):
    pq = require("pyarrow.parquet", extra="parquet", package="pyarrow")
    try:
        pf = pq.ParquetFile(path if storage.store(path).local else storage.open(path, "rb"))
    except Exception as e:
        raise VtkError(f"{path}: not a readable Parquet file ({e})") from None
    n = 0
    for batch in pf.iter_batches(batch_size=4096):
        for row in batch.to_pylist():
            n += 1
            row["__row__"] = n
            yield row, None
