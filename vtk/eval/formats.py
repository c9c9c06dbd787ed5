"""Real benchmark annotations in their usual formats -> SourceItems for the shard writer.

Each ``load_<format>(annotation, videos)`` returns a ``BenchData``: one ``SourceItem`` per video
found (``meta["label"]`` for classification, ``meta["texts"]`` for retrieval) and the ids of
the videos the annotation names but the folder lacks. Videos are found anywhere under the video
folder by file stem, whatever their container.

Formats (the files the common downloads ship):
- Kinetics-400/600/700: CSV ``label,youtube_id,time_start,time_end,split[,is_cc]``; videos
  ``<youtube_id>_<start:06d>_<end:06d>.<ext>`` (trimmed) or ``<youtube_id>.<ext>`` (whole, cut
  at the annotated times). Classes: the sorted label names.
- MSR-VTT 1k-A: ``MSRVTT_JSFUSION_test.csv`` (``key,vid_key,video_id,sentence``), one caption a
  video; or a ``*videodatainfo.json`` / ``MSRVTT_data.json`` (``videos``, ``sentences``): the
  ``test`` split with all its captions.
- LSMDC: ``LSMDC16_challenge_1000_publictect.csv``, tab-separated ``clip_id, start_aligned,
  end_aligned, start_extracted, end_extracted, sentence``; videos ``<clip_id>.avi``.
- DiDeMo: ``test_data.json``, a list of ``{video, description, times, ...}``; a video's
  descriptions form its paragraph.
- MSVD: ``AllVideoDescriptions.txt`` (``video_id caption`` lines, ``#`` comments) or
  ``raw-captions.pkl`` plus ``test_list.txt`` (one video id a line); all captions of a video.
- ActivityNet Captions: ``val_1.json``, ``{video_id: {duration, timestamps, sentences}}``; the
  sentences form the paragraph; videos ``v_<id>.<ext>`` or ``<id>.<ext>``.
"""

from __future__ import annotations

import csv
import json
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vtk.errors import VtkError
from vtk.types import SourceItem, safe_id

VIDEO_EXTS = {".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".flv", ".mpg", ".mpeg", ".3gp",
              ".wmv", ".ogv"}


@dataclass
class BenchData:
    name: str
    task: str  # classification | retrieval
    items: list[SourceItem]
    missing: list[str]
    classes: list[str] | None = None
    paragraph: bool = False
    annotation: str = ""
    videos: str = ""
    extra: dict = field(default_factory=dict)

    def card(self) -> dict:
        """The ``benchmark`` block of the eval shard set's index.json."""
        return {"name": self.name, "task": self.task, "classes": self.classes,
                "paragraph": self.paragraph, "synthetic": False, "annotation": self.annotation,
                "videos": self.videos, "num_annotated": len(self.items) + len(self.missing),
                "missing": len(self.missing), "missing_ids": self.missing[:50]}


def index_videos(root: str | Path) -> dict[str, str]:
    """Every video file under ``root`` by stem (the first found wins, walk order sorted)."""
    found: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames.sort()
        for f in sorted(filenames):
            stem, ext = os.path.splitext(f)
            if ext.lower() in VIDEO_EXTS:
                found.setdefault(stem, os.path.join(dirpath, f))
    if not found:
        raise VtkError(f"{root}: no video files in this folder (looked for {', '.join(sorted(VIDEO_EXTS))})")
    return found


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise VtkError(f"{path}: cannot read annotation JSON ({e})") from None


def unique_id(raw: str, seen: set[str]) -> str:
    """A key-safe source id for ``raw``, made unique when two raw ids map to the same one."""
    base = sid = safe_id(raw)
    n = 1
    while sid in seen:
        sid = f"{base}-{n}"
        n += 1
    seen.add(sid)
    return sid


def _retrieval(name, annotation, videos, per_video: dict[str, list[str]], lookup,
               paragraph=False) -> BenchData:
    """Match per-video texts (annotation order) to files; ``lookup(index, vid) -> path|None``."""
    index = index_videos(videos)
    items, missing, seen = [], [], set()
    for vid, texts in per_video.items():
        path = lookup(index, vid)
        if path is None:
            missing.append(vid)
            continue
        items.append(SourceItem(id=unique_id(vid, seen), path=path,
                                meta={"texts": texts, "video_id": vid}))
    return BenchData(name, "retrieval", items, missing, paragraph=paragraph,
                     annotation=str(annotation), videos=str(videos))


def _by_stem(index, vid):
    return index.get(vid) or index.get(os.path.splitext(vid)[0])


# --- Kinetics ------------------------------------------------------------------------------


def load_kinetics(name: str, annotation: Path, videos: Path) -> BenchData:
    with open(annotation, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    need = {"label", "youtube_id", "time_start", "time_end"}
    if not rows or not need <= set(rows[0]):
        raise VtkError(f"{annotation}: not a Kinetics CSV (need columns {', '.join(sorted(need))})")
    classes = sorted({r["label"] for r in rows})
    index = index_videos(videos)
    items, missing, seen, rows_seen = [], [], set(), set()
    for r in rows:
        start, end = int(float(r["time_start"])), int(float(r["time_end"]))
        trimmed = f"{r['youtube_id']}_{start:06d}_{end:06d}"
        if trimmed in rows_seen:  # a repeated row would be one video counted twice
            continue
        rows_seen.add(trimmed)
        if trimmed in index:
            path, t0, t1 = index[trimmed], None, None
        elif r["youtube_id"] in index:
            path, t0, t1 = index[r["youtube_id"]], float(r["time_start"]), float(r["time_end"])
        else:
            missing.append(trimmed)
            continue
        items.append(SourceItem(id=unique_id(trimmed, seen), path=path, start=t0, end=t1,
                                meta={"label": r["label"], "video_id": trimmed}))
    return BenchData(name, "classification", items, missing, classes=classes,
                     annotation=str(annotation), videos=str(videos))


# --- MSR-VTT -------------------------------------------------------------------------------


def load_msrvtt(name: str, annotation: Path, videos: Path) -> BenchData:
    per_video: dict[str, list[str]] = {}
    if annotation.suffix.lower() == ".csv":
        with open(annotation, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        if not rows or not {"video_id", "sentence"} <= set(rows[0]):
            raise VtkError(f"{annotation}: not an MSR-VTT CSV (need columns video_id, sentence)")
        for r in rows:
            per_video.setdefault(r["video_id"], []).append(r["sentence"])
    else:
        data = _read_json(annotation)
        if not isinstance(data, dict) or "sentences" not in data:
            raise VtkError(f"{annotation}: not an MSR-VTT JSON (need 'videos' and 'sentences')")
        test = [v["video_id"] for v in data.get("videos", []) if v.get("split", "test") == "test"]
        per_video = {v: [] for v in test}
        for s in data["sentences"]:
            if s["video_id"] in per_video:
                per_video[s["video_id"]].append(s["caption"])
        per_video = {v: t for v, t in per_video.items() if t}
    return _retrieval(name, annotation, videos, per_video, _by_stem)


# --- LSMDC ---------------------------------------------------------------------------------


def load_lsmdc(name: str, annotation: Path, videos: Path) -> BenchData:
    per_video: dict[str, list[str]] = {}
    with open(annotation, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 6:
                raise VtkError(f"{annotation}:{n}: an LSMDC line has 6 tab-separated fields")
            per_video.setdefault(parts[0], []).append(parts[5])
    return _retrieval(name, annotation, videos, per_video, _by_stem)


# --- DiDeMo --------------------------------------------------------------------------------


def load_didemo(name: str, annotation: Path, videos: Path) -> BenchData:
    data = _read_json(annotation)
    if not isinstance(data, list) or (data and not {"video", "description"} <= set(data[0])):
        raise VtkError(f"{annotation}: not a DiDeMo JSON (a list of {{video, description, times}})")
    per_video: dict[str, list[str]] = {}
    for a in data:
        per_video.setdefault(a["video"], []).append(a["description"])
    return _retrieval(name, annotation, videos, per_video, _by_stem, paragraph=True)


# --- MSVD ----------------------------------------------------------------------------------


def load_msvd(name: str, annotation: Path, videos: Path, test_list: Path | None = None) -> BenchData:
    test_list = test_list or annotation.parent / "test_list.txt"
    if not test_list.is_file():
        raise VtkError(f"{test_list}: MSVD test list not found (one video id a line)")
    test = [ln.strip() for ln in test_list.read_text(encoding="utf-8").splitlines() if ln.strip()]
    captions: dict[str, list[str]] = {}
    if annotation.suffix == ".pkl":
        with open(annotation, "rb") as f:  # the user's own local file (CLIP4Clip's download)
            raw = pickle.load(f)
        for vid, caps in raw.items():
            captions[vid] = [" ".join(c) if isinstance(c, list) else str(c) for c in caps]
    else:
        for line in annotation.read_text(encoding="utf-8").splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            vid, _, cap = line.strip().partition(" ")
            if cap:
                captions.setdefault(vid, []).append(cap.strip())
    per_video = {v: captions[v] for v in test if captions.get(v)}
    if not per_video:
        raise VtkError(f"{annotation}: no captions for the videos of {test_list}")
    return _retrieval(name, annotation, videos, per_video, _by_stem)


# --- ActivityNet Captions ------------------------------------------------------------------


def load_anet(name: str, annotation: Path, videos: Path) -> BenchData:
    data = _read_json(annotation)
    if not isinstance(data, dict) or not all("sentences" in v for v in list(data.values())[:5]):
        raise VtkError(f"{annotation}: not an ActivityNet Captions JSON ({{id: {{sentences}}}})")
    per_video = {vid: [s.strip() for s in v["sentences"]] for vid, v in data.items()}

    def lookup(index, vid):
        return index.get(vid) or index.get(vid.removeprefix("v_")) or index.get(f"v_{vid}")

    return _retrieval(name, annotation, videos, per_video, lookup, paragraph=True)


# --- registry ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Format:
    load: Callable[..., BenchData]
    annotations: tuple[str, ...]  # usual file names, in order of preference


FORMATS = {
    "kinetics": Format(load_kinetics, ("val.csv", "validate.csv", "test.csv")),
    "msrvtt": Format(load_msrvtt, ("MSRVTT_JSFUSION_test.csv", "test_videodatainfo.json",
                                   "MSRVTT_data.json")),
    "lsmdc": Format(load_lsmdc, ("LSMDC16_challenge_1000_publictect.csv",)),
    "didemo": Format(load_didemo, ("test_data.json",)),
    "msvd": Format(load_msvd, ("AllVideoDescriptions.txt", "raw-captions.pkl")),
    "anet": Format(load_anet, ("val_1.json",)),
}

# benchmark name -> format
REAL = {"k400": "kinetics", "k600": "kinetics", "k700": "kinetics", "msrvtt": "msrvtt",
        "lsmdc": "lsmdc", "didemo": "didemo", "msvd": "msvd", "anet": "anet"}


def find_annotation(fmt: str, root: Path) -> Path:
    """The first usual annotation file under ``root`` (searched recursively, shallow first)."""
    for fname in FORMATS[fmt].annotations:
        hits = sorted(root.rglob(fname), key=lambda p: (len(p.parts), str(p)))
        if hits:
            return hits[0]
    raise VtkError(f"{root}: no {fmt} annotation file found "
                   f"(looked for {', '.join(FORMATS[fmt].annotations)})")


def load_real(name: str, path: str, videos: str | None = None) -> BenchData:
    """Load benchmark ``name`` (k400 ... anet) from ``path``: its folder (annotation found by
    its usual name, videos anywhere under it) or the annotation file itself (videos next to it,
    or under ``videos``)."""
    if name not in REAL:
        raise VtkError(f"{name}={path}: unknown benchmark (known: {', '.join(REAL)})")
    fmt = REAL[name]
    p = Path(path).expanduser()
    if not p.exists():
        raise VtkError(f"{p}: {name} annotation file or folder not found")
    annotation = find_annotation(fmt, p) if p.is_dir() else p
    root = Path(videos).expanduser() if videos else (p if p.is_dir() else p.parent)
    if not root.is_dir():
        raise VtkError(f"{root}: {name} video folder not found")
    return FORMATS[fmt].load(name, annotation, root)
