"""Multi-scale captions for a batch of clips: coarse, fine, frames and fused.

- coarse: the coarse model on the middle frame (``T // 2``): appearance, no motion;
- fine: the fine model on frames sampled at ``fine_fps`` (at least 4), merged into one video
  caption by the summariser; ``frames`` keeps the per-frame texts with their times ``t``
  (seconds from the start of the clip, i.e. frame index / ``clip.fps``);
- fused (``mode="both"``): one text carrying both, ``"<coarse>. <fine>"``;
- a video captioner (``vlm:<id-or-path>``, ``vtk.captions.vlm``) as the fine model sees the clip
  as a video in windows and writes the fine caption itself (no frame texts, no summariser but
  its own merge of the windows); as ``vlm_model`` it fills a caption scale of its own,
  ``vlm``. Its settings, token counts and windows go into ``caption_info[scale]``; a clip it
  fails on keeps its other captions and gets ``caption_errors[scale]`` (the reason).

Captioners see pixels only: ``clip.frames``, or ``clip.meta["caption_frames"]`` where a source
hands a stand-in (the synthetic world's noise knob shows the captioners another clip's pixels,
so the clip gets a caption that belongs to another clip; see ``pixels``).

Models are loaded once per process (the registries cache them). Clips are batched per model
and frame size. A failure of a frame captioner on one clip becomes ``{"error": reason}`` for
that clip only; a missing dependency or weights path raises a one-line ``VtkError`` for the
whole run.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from vtk.captions.base import get_captioner, is_video_model
from vtk.captions.cache import CaptionCache, clip_hash, settings_key
from vtk.captions.summarize import get_summarizer
from vtk.captions.vlm import VLMSettings
from vtk.errors import VtkError
from vtk.types import SHARD_CAPTION_MODES, Clip


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
    vlm_model: str | None = None  # a video captioner for the caption scale "vlm" of its own
    vlm: VLMSettings | None = None  # how video captioners run (None: VLMSettings())

    def __post_init__(self):
        if self.mode not in SHARD_CAPTION_MODES:
            raise VtkError(f"--captions {self.mode}: unknown mode (known: "
                           f"{', '.join(SHARD_CAPTION_MODES)})")
        if not self.fine_fps > 0:
            raise VtkError(f"--fine-fps {self.fine_fps}: must be positive")
        if self.vlm_model is not None and not is_video_model(self.vlm_model):
            raise VtkError(f"--vlm-model {self.vlm_model}: not a video captioner (give "
                           f"vlm:<hub-id-or-local-path>)")
        if self.coarse_model is not None and is_video_model(self.coarse_model):
            raise VtkError(f"--coarse-model {self.coarse_model}: the coarse caption is one "
                           f"frame's; a video captioner goes in --fine-model or --vlm-model")

    @property
    def vlm_settings(self) -> VLMSettings:
        return self.vlm or VLMSettings()

    @property
    def active(self) -> bool:
        """Whether anything is captioned at all."""
        return self.mode != "none" or self.vlm_model is not None


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
            # a video captioner merges its windows itself, unless an hf: summariser is given
            video = is_video_model(out["fine"]) and not s.summarizer.startswith("hf:")
            out["summarizer"] = out["fine"] if video else s.summarizer
        if s.vlm_model is not None:
            out["vlm"] = s.vlm_model
        return out

    def settings(self, clip: Clip) -> dict:
        out = {"mode": self.spec.mode, "fine_fps": self.spec.fine_fps, **self.models(clip)}
        if out.get("summarizer") == "rules" and out.get("fine") != "shapes":
            out["motion"] = "flow-1"  # the fine caption carries motion words: a new cache key
        if any(is_video_model(m) for m in out.values() if isinstance(m, str)):
            out["video"] = self.spec.vlm_settings.key()
        return out

    def video_roles(self, clip: Clip) -> list[tuple[str, str]]:
        """(scale, model) of the scales a video captioner fills for ``clip``."""
        models = self.models(clip)
        return [(r, models[r]) for r in ("fine", "vlm") if r in models and
                is_video_model(models[r])]

    def prepare_clips(self, clips: list[Clip]) -> list[Clip]:
        """The CPU half of captioning, for a task that sends its clips to a captioner elsewhere
        (the Ray engine's actors, as NeMo Curator splits the work): each video captioner's
        frames sampled and resized here (``clip.meta["vlm_inputs"]``), and when nothing but
        video captioners reads the clip, only those frames go (with the clip's content hash
        for the caption cache). Returns new clips; ``clips`` are not changed."""
        from dataclasses import replace

        from vtk.captions.vlm import frame_sizer, prepare

        out = []
        for clip in clips:
            roles = self.video_roles(clip)
            if not roles:
                out.append(clip)
                continue
            frames = pixels(clip)
            inputs = {model: prepare(frames, clip.fps, self.spec.vlm_settings,
                                     frame_sizer(model)) for _, model in roles}
            meta = {**clip.meta, "vlm_inputs": inputs}
            others = set(self.models(clip)) - {"summarizer"} - {r for r, _ in roles}
            if not others:  # the whole clip is not needed over there
                meta["caption_hash"] = clip_hash(frames, clip.fps)
                meta.pop("caption_frames", None)
                out.append(replace(clip, frames=frames[:1], meta=meta))
            else:
                out.append(replace(clip, meta=meta))
        return out

    def run(self, clips: list[Clip]) -> list[dict]:
        if not self.spec.active:
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
                    # a clip prepared elsewhere carries its hash (its frames are a stand-in)
                    content = clip.meta.get("caption_hash") or clip_hash(frames, clip.fps)
                    keys[i] = (content, settings_key(self.settings(clip)))
                    hit = self.cache.get(*keys[i])
                    if hit is not None:
                        results[i] = hit
                        continue
                self._pixels[i] = frames
                todo.append(i)
            except Exception as e:  # noqa: BLE001 - one bad clip must not stop the batch
                results[i] = {"error": _reason(e)}
        captions = {i: {} for i in todo}
        info: dict[int, dict] = {i: {} for i in todo}
        errors: dict[int, dict] = {i: {} for i in todo}
        if self.spec.mode in ("coarse", "both"):
            self._coarse(clips, todo, captions, results)
        if self.spec.mode in ("fine", "both"):
            frame_fine = [i for i in todo if results[i] is None and not is_video_model(
                self.models(clips[i])["fine"])]
            self._fine(clips, frame_fine, captions, results)
        self._video(clips, [i for i in todo if results[i] is None], captions, info, errors)
        fresh = []
        for i in todo:
            if results[i] is not None:
                continue
            c = captions[i]
            if self.spec.mode == "both" and c.get("coarse") and c.get("fine"):
                c["fused"] = f"{c['coarse']}. {c['fine']}"
            results[i] = {"captions": c, "caption_models": self.models(clips[i])}
            if info[i]:
                results[i]["caption_info"] = info[i]
            if errors[i]:  # kept with its other captions; not cached: the next run tries again
                results[i]["caption_errors"] = errors[i]
            elif keys[i] is not None:
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


    def _video(self, clips, idx, captions, info, errors):
        """The scales a video captioner fills (``vtk.captions.vlm``), one batched pass per
        model over the clips. ``clip.meta["vlm_inputs"][model]``: frames a CPU task sampled
        and resized already (``prepare_clips``)."""
        from vtk.captions.vlm import caption_videos, prepare

        settings = self.spec.vlm_settings
        summarizer = (get_summarizer(self.spec.summarizer, self.spec.device)
                      if self.spec.summarizer.startswith("hf:") else None)
        by_model: dict[str, list[tuple[int, str]]] = {}
        for i in idx:
            for role, model in self.video_roles(clips[i]):
                by_model.setdefault(model, []).append((i, role))
        for model, members in by_model.items():
            captioner = get_captioner(model, self.spec.device)  # VtkError: a config error
            inputs = {}
            t0 = time.perf_counter()
            for i in {i for i, _ in members}:
                try:
                    inputs[i] = (clips[i].meta.get("vlm_inputs") or {}).get(model) or prepare(
                        self._pixels[i], clips[i].fps, settings, captioner.frame_size)
                except Exception as e:  # noqa: BLE001 - that clip only
                    inputs[i] = e
            if isinstance(getattr(captioner, "timings", None), dict):  # vtk bench captions
                captioner.timings["prepare_s"] = (captioner.timings.get("prepare_s", 0.0)
                                                  + time.perf_counter() - t0)
            ready = {i: v for i, v in inputs.items() if not isinstance(v, Exception)}
            done = caption_videos(captioner, ready, settings,
                                  summarizer if any(r == "fine" for _, r in members) else None)
            for i, role in members:
                res = inputs[i] if isinstance(inputs[i], Exception) else done[i]
                if isinstance(res, Exception):
                    errors[i][role] = f"{model}: {_reason(res)}"
                    continue
                captions[i][role] = res["text"]
                info[i][role] = {**captioner.describe(), **settings.key(),
                                 **{k: v for k, v in res.items() if k != "text"}}


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
