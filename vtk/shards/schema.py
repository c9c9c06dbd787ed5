"""The sample format: what a clip becomes in a shard, and how to check one.

A sample is ``{"__key__", "mp4": bytes, "txt": str, "json": dict}`` with the json fields of
docs/architecture.md: ``source, start, end, fps, num_frames, width, height, codec, captions,
caption_models`` always; ``caption_info`` (a video captioner's settings, tokens and windows per
scale) and ``caption_errors`` (per scale, why a caption is missing) when there are any;
``label``, ``texts``, ``scores``, ``synth`` (generator ground truth) and ``extra`` (manifest
columns) when the source has them. Times are seconds in the source.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from vtk.types import Clip

REQUIRED = ("source", "start", "end", "fps", "num_frames", "width", "height", "codec",
            "captions", "caption_models")
OPTIONAL_META = ("label", "texts", "scores", "synth", "extra")
MEMBERS = ("mp4", "txt", "json")
# The training text per caption mode: the caption built for it, else the source's own.
TXT_FROM = {"coarse": "coarse", "fine": "fine", "both": "fused"}


def make_sample(clip: Clip, mp4: bytes, codec: str, captioned: dict | None = None,
                caption_mode: str = "none") -> dict:
    """A shard sample for one encoded clip. ``captioned`` is the clip's entry from
    ``Captioning.run`` (``{"captions": {...}, "caption_models": {...}}``) or None."""
    captions = dict((captioned or {}).get("captions") or {})
    meta = clip.meta or {}
    info: dict[str, Any] = {
        "source": clean_text(clip.source),
        "source_id": clip.source_id,
        "clip": clip.index,
        "start": clip.start,
        "end": clip.end,
        "fps": clip.fps,
        "num_frames": clip.num_frames,
        "width": int(clip.frames.shape[2]),
        "height": int(clip.frames.shape[1]),
        "codec": codec,
        "captions": captions,
        "caption_models": dict((captioned or {}).get("caption_models") or {}),
    }
    for key in ("caption_info", "caption_errors"):
        if (captioned or {}).get(key):
            info[key] = captioned[key]
    if meta.get("caption"):
        info["caption"] = meta["caption"]  # the source's own caption (manifest, sidecar)
    for key in OPTIONAL_META:
        if meta.get(key) is not None:
            info[key] = meta[key]
    return {"__key__": clip.key, "mp4": mp4, "txt": training_text(caption_mode, captions, meta),
            "json": info}


def clean_text(text: str) -> str:
    """Text safe to store as UTF-8: undecodable bytes of a file name (which Python keeps as
    lone surrogates) become U+FFFD."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def training_text(mode: str, captions: dict, meta: dict) -> str:
    """The ``txt`` member: the caption the mode builds, else the source's caption, else ''."""
    built = captions.get(TXT_FROM.get(mode, ""), "")
    return built or meta.get("caption") or ""


def encode_json(info: dict) -> bytes:
    return json.dumps(info, ensure_ascii=False, default=_plain).encode("utf-8")


def _plain(x):
    """numpy values in ground truth or manifest columns -> plain JSON values."""
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


def parse_meta(raw: bytes) -> dict:
    """A sample's ``json`` member as a dict. ValueError, saying what is wrong, when it is not
    UTF-8 JSON, not an object (a list, a number, a string, null), or a field every loader
    reads has the wrong shape: ``captions`` an object whose coarse / fine / fused are texts,
    ``texts`` a list of texts. The one check of a json's shape: inspect and every loader."""
    try:
        info = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"json does not parse ({e})") from None
    if not isinstance(info, dict):
        raise ValueError(f"json is {_json_kind(info)}, not an object")
    caps = info.get("captions")
    if caps is not None:
        if not isinstance(caps, dict):
            raise ValueError(f"json captions is {_json_kind(caps)}, not an object")
        for k in TXT_FROM.values():
            if caps.get(k) is not None and not isinstance(caps[k], str):
                raise ValueError(f"json captions.{k} is {_json_kind(caps[k])}, not a text")
    texts = info.get("texts")
    if texts is not None and not isinstance(texts, list):
        raise ValueError(f"json texts is {_json_kind(texts)}, not a list")
    for t in texts or ():
        if not isinstance(t, str):
            raise ValueError(f"json texts holds {_json_kind(t)}, not a text")
    return info


def _json_kind(x) -> str:
    if x is None:
        return "null"
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(x), "a number")


def check_sample(key: str, members: dict[str, bytes]) -> tuple[dict | None, list[str]]:
    """Validate the members of one stored sample (not the video: see inspect). Returns the
    parsed json (or None) and a list of problems."""
    problems = [f"{key}: missing .{m}" for m in MEMBERS if m not in members]
    info = None
    if "json" in members:
        try:
            info = parse_meta(members["json"])
        except ValueError as e:
            problems.append(f"{key}: {e}")
        else:
            missing = [f for f in REQUIRED if f not in info]
            if missing:
                problems.append(f"{key}: json lacks {', '.join(missing)}")
    if "txt" in members:
        try:
            members["txt"].decode("utf-8")
        except UnicodeDecodeError:
            problems.append(f"{key}: txt is not UTF-8")
    return info, problems
