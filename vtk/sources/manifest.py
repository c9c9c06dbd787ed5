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

Relative paths are tried under ``--video-root``, then next to the manifest, then in the
working directory. URLs and YouTube IDs are looked up as ``<video-root>/<id>.*`` (the layout
yt-dlp and video2dataset leave). A row that cannot be used (bad timestamps, missing video,
non-UTF-8 text) becomes an item carrying ``meta["error"]``; a manifest without a video column
is one VtkError.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from collections.abc import Iterator
from urllib.parse import parse_qs, urlparse

from vtk.errors import VtkError, require
from vtk.sources.folder import VIDEO_EXTS
from vtk.types import SourceItem, safe_id

VIDEO_COLS = ("path", "video", "file", "filepath", "video_path", "url", "youtubeid",
              "youtube_id", "videoid", "video_id")
START_COLS = ("start", "start_timestamp", "time_start", "start_time")
END_COLS = ("end", "end_timestamp", "time_end", "end_time")
CAPTION_COLS = ("caption", "text", "txt")
_YT_ID = re.compile(r"^[A-Za-z0-9_-]{11}$")


def manifest_items(path: str, video_root: str | None = None) -> Iterator[SourceItem]:
    """Yield one item per usable row (several for a video2dataset ``clips`` list)."""
    rows = _read_rows(path)
    first = next(rows, None)
    if first is None:
        raise VtkError(f"{path}: manifest has no rows")
    columns, _, _ = first
    cols = {c.lower(): c for c in columns}
    video_col = next((cols[c] for c in VIDEO_COLS if c in cols), None)
    if video_col is None:
        raise VtkError(f"{path}: no video column (need one of: path, video, url, YoutubeID; "
                       f"found: {', '.join(columns) or 'none'})")
    resolver = _Resolver(os.path.dirname(os.path.abspath(path)), video_root)
    name = os.path.basename(path)
    for _columns, row, error in _chain(first, rows):
        where = f"{name} row {row.get('__row__')}"
        if error:
            yield _failed(where, row.get("__row__"), *error)
            continue
        yield from _row_items(row, cols, video_col, resolver, where)


def _chain(first, rest):
    yield first
    yield from rest


def _failed(where: str, row_no, kind: str, reason: str) -> SourceItem:
    return SourceItem(id=safe_id(f"row-{row_no}"),
                      meta={"input": where, "error": {"kind": kind, "reason": reason}})


def _row_items(row: dict, cols: dict, video_col: str, resolver, where: str):
    row_no = row.pop("__row__")
    video = _text(row.get(video_col))
    if not video:
        yield _failed(where, row_no, "missing-column", f"empty {video_col}")
        return
    where = f"{where} ({video})"
    used = {video_col}
    meta: dict = {"input": where}
    try:
        ranges = _ranges(row, cols, used)
    except ValueError as e:
        yield _failed(where, row_no, "bad-timestamps", str(e))
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
    base = safe_id(vid_id)
    for k, (start, end) in enumerate(ranges):
        item_id = base if start is None and end is None else (
            f"{base}-{_ms(start)}-{_ms(end)}" if len(ranges) == 1 else f"{base}-c{k}")
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
        """-> (local path or None, id to name the item by, problem or None)."""
        url = urlparse(video)
        if url.scheme == "file":
            video = url.path
        elif url.scheme in ("http", "https", "s3", "gs", "ftp"):
            vid = _youtube_id(url) or os.path.splitext(os.path.basename(url.path))[0] or video
            return self._by_id(vid, video)
        for base in (self.video_root, self.manifest_dir, ""):  # root, manifest's folder, cwd
            if base is None:
                continue
            candidate = os.path.join(base, video) if base else video
            if os.path.isfile(candidate):
                return candidate, os.path.splitext(video)[0], None
        if os.path.isabs(video) or os.path.splitext(video)[1]:
            return None, os.path.splitext(video)[0], f"video not found: {video}"
        return self._by_id(video, video)

    def _by_id(self, vid: str, original: str):
        if not self.video_root:
            return None, vid, f"{original} is not a local file: pass --video-root, the folder " \
                              f"that holds the downloaded videos as <id>.<ext>"
        path = self._stem_map().get(vid)
        if path is None:
            return None, vid, f"no {vid}.* under --video-root {self.video_root}"
        return path, vid, None

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


# --- readers: yield (columns, row dict with "__row__", error (kind, reason) or None) ----------


def _read_rows(path: str):
    ext = os.path.splitext(path)[1].lower()
    if ext in (".csv", ".tsv"):
        return _csv_rows(path, "\t" if ext == ".tsv" else ",")
    if ext == ".jsonl":
        return _jsonl_rows(path)
    return _parquet_rows(path)


def _csv_rows(path: str, delimiter: str):
    # surrogateescape keeps undecodable bytes visible per row: one bad row is one failure.
    with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        columns = [c for c in (reader.fieldnames or []) if c]
        for n, row in enumerate(reader, start=2):  # row 1 is the header
            row = {k: v for k, v in row.items() if k}
            bad = next((k for k, v in row.items() if isinstance(v, str) and _has_surrogates(v)),
                       None)
            row["__row__"] = n
            if bad:
                yield columns, row, ("non-utf8", f"column {bad} is not valid UTF-8 text")
            else:
                yield columns, row, None


def _has_surrogates(text: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def _jsonl_rows(path: str):
    columns: list[str] = []
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as e:
                yield columns, {"__row__": n}, ("non-utf8", f"not valid UTF-8 ({e.reason})")
                continue
            except json.JSONDecodeError as e:
                yield columns, {"__row__": n}, ("bad-row", f"not a JSON object ({e.msg})")
                continue
            if not isinstance(row, dict):
                yield columns, {"__row__": n}, ("bad-row", "not a JSON object")
                continue
            if not columns:
                columns = list(row)
            row["__row__"] = n
            yield columns, row, None


def _parquet_rows(path: str):
    pq = require("pyarrow.parquet", extra="manifest", package="pyarrow")
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:
        raise VtkError(f"{path}: not a readable Parquet file ({e})") from None
    columns = pf.schema_arrow.names
    n = 0
    for batch in pf.iter_batches(batch_size=4096):
        for row in batch.to_pylist():
            n += 1
            row["__row__"] = n
            yield columns, row, None
