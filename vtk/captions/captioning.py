"""Multi-scale captions for a batch of clips: coarse, fine, frames and fused.

- coarse: the coarse model on the middle frame (``T // 2``): appearance, no motion;
- fine: the fine model on frames sampled at ``fine_fps`` (at least 4), merged into one video
  caption by the summariser; ``frames`` keeps the per-frame texts with their times ``t``
  (seconds from the start of the clip, i.e. frame index / ``clip.fps``);
- fused (``mode="both"``): one text carrying both, ``"<coarse>. <fine>"``.

Captioners see pixels only: ``clip.frames``, or ``clip.meta["caption_frames"]`` where a source
hands a stand-in (the synthetic world's noise knob shows the captioners another clip's pixels,
so the clip gets a caption that belongs to another clip; see ``pixels``).

Models are loaded once per process (the registries cache them). Clips are batched per model
and frame size. A failure on one clip becomes ``{"error": reason}`` for that clip only; a
missing dependency or weights path raises a one-line ``VtkError`` for the whole run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vtk.captions.base import get_captioner
from vtk.captions.cache import CaptionCache, clip_hash, settings_key
from vtk.captions.summarize import get_summarizer
from vtk.errors import VtkError
from vtk.types import SHARD_CAPTION_MODES, Clip

MODES = SHARD_CAPTION_MODES


@dataclass(frozen=True)
class CaptionSpec:
    """What to caption and with which models. ``None`` models mean "default by source":
    ``shapes`` for clips of the synthetic world (``"synth"`` in ``clip.meta``, set by
    ``vtk.sources.synth``), ``tagger`` else."""

    mode: str = "both"  # none | coarse | fine | both
    coarse_model: str | None = None
    fine_model: str | None = None
    summarizer: str = "rules"  # rules | hf:<id-or-path>
    fine_fps: float = 4.0  # frames per second captioned for the fine caption (at least 4 frames)
    device: str = "auto"
    cache_dir: str | None = None  # a folder for the caption cache; None: no cache
    batch_size: int = 32  # frames per captioner call

    def __post_init__(self):
        if self.mode not in MODES:
            raise VtkError(f"--captions {self.mode}: unknown mode (known: {', '.join(MODES)})")
        if not self.fine_fps > 0:
            raise VtkError(f"--fine-fps {self.fine_fps}: must be positive")


def default_model(clip: Clip) -> str:
    # by where the clip comes from, not its name: a real file may be called synth-x.mp4
    return "shapes" if "synth" in clip.meta else "tagger"


def offline_default_note(sources, mode: str, coarse_model: str | None,
                         fine_model: str | None) -> str | None:
    """One line for ``vtk shard`` when real video (any source but ``synth:``) is captioned by
    the offline default ``tagger``: its captions are ImageNet nouns (a rabbit close-up came out
    as "a spotlight and a strainer"), the fine caption's verbs come from optical flow only, and
    an ``hf:`` image captioner gives descriptions. None when nothing defaults."""
    if mode == "none" or all(str(s).startswith("synth:") for s in sources):
        return None
    scales = [name for name, model, used in (("coarse", coarse_model, mode in ("coarse", "both")),
                                             ("fine", fine_model, mode in ("fine", "both")))
              if used and model is None]
    if not scales:
        return None
    flags = " ".join(f"--{name}-model hf:<id-or-path>" for name in scales)
    return (f"note: real video gets the offline default captioner 'tagger' for the "
            f"{' and '.join(scales)} caption{'s' if len(scales) > 1 else ''} (ImageNet tags, no "
            f"verbs but the fine caption's motion words from optical flow); for descriptive "
            f"captions pass an image captioner: {flags} (e.g. hf:Salesforce/blip-image-"
            f"captioning-base, a local path offline)")


def pixels(clip: Clip) -> np.ndarray:
    """The frames the captioners see: the clip's own, or the stand-in its source hands in
    ``meta["caption_frames"]``, brought to the clip's frame count and size (a clip may be
    resampled or resized on the way from its source)."""
    frames = np.asarray(clip.frames)
    stand_in = (clip.meta or {}).get("caption_frames")
    if stand_in is None:
        return frames
    stand_in = np.asarray(stand_in)
    if stand_in.ndim != 4 or len(stand_in) < 1:
        raise ValueError(f"bad caption_frames {stand_in.dtype} {tuple(stand_in.shape)}")
    t, h, w = frames.shape[:3]
    if len(stand_in) != t:
        stand_in = stand_in[np.linspace(0, len(stand_in) - 1, t).round().astype(int)]
    if stand_in.shape[1:3] != (h, w):
        import cv2

        stand_in = np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA)
                             for f in stand_in])
    return stand_in


def fine_indices(num_frames: int, fps: float, fine_fps: float, min_frames: int = 4) -> np.ndarray:
    """Frame indices sampled at ``fine_fps`` (bin centres), at least ``min_frames`` (or all the
    clip has)."""
    duration = num_frames / fps
    n = min(num_frames, max(min_frames, math.ceil(duration * fine_fps - 1e-9)))
    return np.floor((np.arange(n) + 0.5) * num_frames / n).astype(int)


def _batched(captioner, frames: np.ndarray, batch_size: int, detect: bool):
    """Caption (or detect objects in) frames in batches; returns texts and objects-or-None."""
    texts, objects = [], [] if detect else None
    for i in range(0, len(frames), batch_size):
        chunk = frames[i:i + batch_size]
        if detect:  # structured output (objects, tags) for the rules summariser
            objs = captioner.detect(chunk)
            objects += objs
            texts += [captioner.text(o) for o in objs]
        else:
            out = captioner.caption(chunk)
            if len(out) != len(chunk):
                raise RuntimeError(f"{captioner.name} returned {len(out)} texts for "
                                   f"{len(chunk)} frames")
            texts += out
    return texts, objects


class Captioning:
    """``Captioning(CaptionSpec(...)).run(clips) -> list[dict]``, one result per clip."""

    def __init__(self, spec: CaptionSpec):
        self.spec = spec
        self.cache = CaptionCache(spec.cache_dir) if spec.cache_dir else None

    def models(self, clip: Clip) -> dict:
        s = self.spec
        out = {}
        if s.mode in ("coarse", "both"):
            out["coarse"] = s.coarse_model or default_model(clip)
        if s.mode in ("fine", "both"):
            out["fine"] = s.fine_model or default_model(clip)
            out["summarizer"] = s.summarizer
        return out

    def settings(self, clip: Clip) -> dict:
        out = {"mode": self.spec.mode, "fine_fps": self.spec.fine_fps, **self.models(clip)}
        if out.get("summarizer") == "rules" and out.get("fine") != "shapes":
            out["motion"] = "flow-1"  # the fine caption carries motion words: a new cache key
        return out

    def run(self, clips: list[Clip]) -> list[dict]:
        if self.spec.mode == "none":
            return [{"captions": {}, "caption_models": {}} for _ in clips]
        results: list[dict | None] = [None] * len(clips)
        keys: list[tuple[str, str] | None] = [None] * len(clips)
        todo = []
        self._pixels: dict[int, np.ndarray] = {}
        for i, clip in enumerate(clips):
            try:
                frames = pixels(clip)
                if frames.ndim != 4 or frames.shape[0] < 1 or frames.shape[-1] != 3:
                    raise ValueError(f"bad frames {frames.dtype} {tuple(frames.shape)}")
                if self.cache is not None:
                    keys[i] = (clip_hash(frames, clip.fps), settings_key(self.settings(clip)))
                    hit = self.cache.get(*keys[i])
                    if hit is not None:
                        results[i] = hit
                        continue
                self._pixels[i] = frames
                todo.append(i)
            except Exception as e:  # noqa: BLE001 - one bad clip must not stop the batch
                results[i] = {"error": _reason(e)}
        captions = {i: {} for i in todo}
        if self.spec.mode in ("coarse", "both"):
            self._coarse(clips, todo, captions, results)
        if self.spec.mode in ("fine", "both"):
            self._fine(clips, [i for i in todo if results[i] is None], captions, results)
        fresh = []
        for i in todo:
            if results[i] is not None:
                continue
            c = captions[i]
            if self.spec.mode == "both":
                c["fused"] = f"{c['coarse']}. {c['fine']}"
            results[i] = {"captions": c, "caption_models": self.models(clips[i])}
            if keys[i] is not None:
                fresh.append((*keys[i], results[i]))
        if self.cache is not None:
            self.cache.put_many(fresh)
        self._pixels = {}
        return results  # type: ignore[return-value]

    # -- stages -----------------------------------------------------------------------------

    def _groups(self, clips, idx, role, frames_of):
        """Group clips by (model, frame size) so each group is one batched call."""
        groups: dict[tuple, list[int]] = {}
        for i in idx:
            model = self.models(clips[i])[role]
            groups.setdefault((model, frames_of(i).shape[1:]), []).append(i)
        return groups

    def _run_group(self, model, members, frames_of, detect_ok):
        """Caption the frames of a group; on failure, retry clip by clip to isolate the bad one.
        Returns {clip index: (texts, objects) or Exception}."""
        captioner = get_captioner(model, self.spec.device)  # VtkError propagates: config error
        detect = detect_ok and hasattr(captioner, "detect") and hasattr(captioner, "text")
        out = {}
        try:
            stacked = np.concatenate([frames_of(i) for i in members])
            texts, objs = _batched(captioner, stacked, self.spec.batch_size, detect)
            at = 0
            for i in members:
                n = len(frames_of(i))
                out[i] = (texts[at:at + n], objs[at:at + n] if objs is not None else None)
                at += n
        except VtkError:
            raise
        except Exception:  # noqa: BLE001
            for i in members:
                try:
                    out[i] = _batched(captioner, frames_of(i), self.spec.batch_size, detect)
                except VtkError:
                    raise
                except Exception as e:  # noqa: BLE001
                    out[i] = e
        return out

    def _coarse(self, clips, idx, captions, results):
        def mid(i):
            f = self._pixels[i]
            return f[len(f) // 2][None]

        for (model, _), members in self._groups(clips, idx, "coarse", mid).items():
            for i, res in self._run_group(model, members, mid, detect_ok=False).items():
                if isinstance(res, Exception):
                    results[i] = {"error": f"coarse caption ({model}): {_reason(res)}"}
                elif not res[0][0].strip():
                    results[i] = {"error": f"coarse caption ({model}): empty text"}
                else:
                    captions[i]["coarse"] = res[0][0]

    def _fine(self, clips, idx, captions, results):
        sampled = {i: fine_indices(len(clips[i].frames), clips[i].fps, self.spec.fine_fps)
                   for i in idx}

        def pick(i):
            return self._pixels[i][sampled[i]]

        summarizer = get_summarizer(self.spec.summarizer, self.spec.device)
        detect_ok = summarizer.name == "rules"
        # the rules summariser reads the motion off the same frames (optical flow)
        frames_of = pick if detect_ok else None
        for (model, _), members in self._groups(clips, idx, "fine", pick).items():
            jobs = {}  # clip index -> (texts, times, objects)
            for i, res in self._run_group(model, members, pick, detect_ok).items():
                if isinstance(res, Exception):
                    results[i] = {"error": f"fine caption ({model}): {_reason(res)}"}
                    continue
                times = [round(float(k) / clips[i].fps, 4) for k in sampled[i]]
                jobs[i] = (res[0], times, res[1])
            for i, fine in _summarize_all(summarizer, jobs, frames_of).items():
                if isinstance(fine, Exception):
                    results[i] = {"error": f"summary ({summarizer.name}): {_reason(fine)}"}
                    continue
                texts, times, _ = jobs[i]
                captions[i]["fine"] = fine
                captions[i]["frames"] = [{"t": t, "text": x} for t, x in zip(times, texts)]


def _summarize_all(summarizer, jobs: dict, frames_of=None) -> dict:
    """Summaries for many clips: one batched call when the summariser has one (hf models),
    clip by clip otherwise or when the batch fails. Values are texts or the exception.
    ``frames_of(i)``: the frames clip ``i``'s texts describe, for a summariser that reads them
    (``rules``: the motion words on real video)."""
    out: dict = {}
    if hasattr(summarizer, "summarize_batch") and len(jobs) > 1:
        try:
            texts = summarizer.summarize_batch(list(jobs.values()))
            out = dict(zip(jobs, texts))
        except VtkError:
            raise
        except Exception:  # noqa: BLE001 - find the clip that breaks it below
            out = {}
    for i, job in jobs.items():
        if i not in out:
            try:
                if frames_of is not None:
                    out[i] = summarizer.summarize(*job, frames=frames_of(i))
                else:
                    out[i] = summarizer.summarize(*job)
            except VtkError:
                raise
            except Exception as e:  # noqa: BLE001
                out[i] = e
        if isinstance(out[i], str) and not out[i].strip():
            out[i] = RuntimeError("the summariser returned an empty text")
    return out


def _reason(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")
