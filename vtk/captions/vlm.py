"""``vlm:<hub-id-or-local-path>``: video language models as clip captioners.

A video captioner sees a clip as a video, not as unrelated frames: ``generate(requests)`` takes
windows of frames with their real times (the clip's frame indices and frame rate, handed to the
processor as its ``video_metadata``) and a prompt, and returns one generation per request.
``VLMCaptioner`` is that protocol over transformers (``AutoModelForImageTextToText`` +
``AutoProcessor``: Qwen2-VL, Qwen2.5-VL, Qwen3-VL, SmolVLM2, LLaVA-OneVision, InternVL-hf...).
Another backend (a vLLM engine, an OpenAI-compatible endpoint) is a class with the same four
members, ``name``, ``describe()``, ``frame_size(h, w, n)`` and ``generate(requests,
max_tokens)``, registered as its own family in ``vtk.captions.base.CAPTIONERS``.

What a clip goes through (``caption_videos``; docs/captions.md):

- frames are sampled at ``VLMSettings.fps`` (bin centres, at least 4 a window) and resized once,
  on the CPU, to the size the processor would give them (``prepare``);
- ``mode="windows"``: the clip is cut into windows of about ``window`` clip frames (NeMo
  Curator's 256; ``split_windows``), each sampled at ``fps``; each window is one request; a
  clip of several windows gets one more, text-only request that merges the windows' captions
  (the same model, or the ``hf:`` summariser given); a clip of one window keeps its caption;
- ``mode="diff"`` (ShareGPT4Video's differential captions): the first keyframe is captioned,
  then each pair of adjacent keyframes with the previous caption ("what changed"), and the
  captions, with their times, are merged as above;
- requests of many clips are batched (left padding, greedy decoding), so a clip's caption does
  not depend on the clips it was batched with; a batch that fails is retried request by
  request, and the clip whose request fails (or yields no text) gets the reason instead of a
  caption; a generation that reaches ``max_tokens`` without its end token is ``truncated``.
"""

from __future__ import annotations

import functools
import hashlib
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from vtk.errors import VtkError

MODES = ("windows", "diff")
DEFAULT_PROMPT = (
    "Describe what happens in this video: the actions, how the people and objects move, and "
    "how the camera moves. Say it in order, in a few plain sentences.")
DIFF_PROMPT = (
    "These are two moments of a video. What happened up to the first one: {previous}\n"
    "Describe what changed between the two moments: actions, motion and camera movement.")
SUMMARY_PROMPT = (
    "These captions describe consecutive parts of one video, with their start times in "
    "seconds:\n{lines}\nWrite one caption of the whole video that says what happens, in order.")
MIN_FRAMES = 4  # as the fine caption: a clip shorter than 2 s at 2 fps still gets 4 frames


@dataclass(frozen=True)
class VLMSettings:
    """How a video captioner is run (``vtk shard`` / ``vtk caption``'s ``--vlm-*`` options)."""

    fps: float = 2.0  # frames per second of the clip the model sees
    window: int = 256  # clip frames per request (NeMo Curator's default), sampled at fps
    mode: str = "windows"  # windows | diff
    max_tokens: int = 512  # new tokens per generation
    prompt: str | None = None  # the prompt's text (--vlm-prompt FILE); None: DEFAULT_PROMPT
    batch: int = 8  # requests per generate call (the result does not depend on it)

    def __post_init__(self):
        if not self.fps > 0:
            raise VtkError(f"--vlm-fps {self.fps}: must be positive")
        if self.window < 1:
            raise VtkError(f"--vlm-window {self.window}: must be at least 1 frame")
        if self.mode not in MODES:
            raise VtkError(f"--vlm-mode {self.mode}: unknown mode (known: {', '.join(MODES)})")
        if self.max_tokens < 1:
            raise VtkError(f"--vlm-max-tokens {self.max_tokens}: must be at least 1")
        if self.batch < 1:
            raise VtkError(f"--vlm-batch {self.batch}: must be at least 1")
        if self.prompt is not None and not self.prompt.strip():
            raise VtkError("--vlm-prompt: the prompt file is empty")

    @property
    def prompt_text(self) -> str:
        return self.prompt if self.prompt is not None else DEFAULT_PROMPT

    @property
    def prompt_sha(self) -> str:
        """The first 16 hex digits of the prompt's SHA-256 (diff mode: with its diff prompt)."""
        text = self.prompt_text + ("\0" + DIFF_PROMPT if self.mode == "diff" else "")
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    def key(self) -> dict:
        """What changes a caption: the cache key's and the json's part (not ``batch``)."""
        return {"fps": self.fps, "window": self.window, "mode": self.mode,
                "max_tokens": self.max_tokens, "prompt_sha": self.prompt_sha}

    def card(self) -> dict:
        return asdict(self)


def read_prompt(path: str | None) -> str | None:
    """The text of ``--vlm-prompt FILE`` (None: the default prompt)."""
    if path is None:
        return None
    try:
        with open(os.path.expanduser(path), encoding="utf-8") as f:
            text = f.read().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise VtkError(f"--vlm-prompt {path}: cannot read it ({e})") from None
    if not text:
        raise VtkError(f"--vlm-prompt {path}: the file is empty")
    return text


# --- what a backend receives and returns ------------------------------------------------------


@dataclass
class Request:
    """One generation: a prompt, and a video (frames N x H x W x 3 uint8 at their clip frame
    ``indices`` of a clip at ``fps``, ``duration`` seconds long) or none (a text-only request)."""

    prompt: str
    frames: np.ndarray | None = None
    indices: list[int] | None = None
    fps: float | None = None
    duration: float | None = None
    span: int | None = None  # the clip frames the window covers (its sampled rate = n/span*fps)

    @property
    def times(self) -> list[float]:
        return [round(i / self.fps, 4) for i in self.indices or []]


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    output_tokens: int
    truncated: bool


@runtime_checkable
class VideoCaptioner(Protocol):
    """What ``caption_videos`` needs of a backend (``VLMCaptioner``; a vLLM engine or an
    OpenAI-compatible endpoint would be another class with these members)."""

    name: str

    def describe(self) -> dict:
        """The json's ``model``, ``revision`` (and anything else that identifies it)."""
        ...

    def frame_size(self, height: int, width: int, frames: int) -> tuple[int, int]:
        """The frame size the model takes for a ``frames``-frame video of height x width."""
        ...

    def generate(self, requests: list[Request], max_tokens: int) -> list[Generation]:
        """One generation per request, greedy; raises for a batch it cannot run."""
        ...


# --- frames -------------------------------------------------------------------------------------


def sample_indices(num_frames: int, fps: float, vlm_fps: float) -> np.ndarray:
    """Clip frame indices at ``vlm_fps`` (bin centres; at least ``MIN_FRAMES`` or all there are)."""
    from vtk.captions.captioning import fine_indices

    return fine_indices(num_frames, fps, vlm_fps, min_frames=MIN_FRAMES)


def split_windows(num_frames: int, window: int) -> list[range]:
    """A clip's frames as windows of about ``window`` frames: ``round(num_frames / window)``
    equal parts (at least one), so a remainder under half a window joins the others rather than
    becoming a stub, as NeMo Curator's remainder threshold (128 of 256) does; a window is at
    most 1.5 x ``window`` frames, as NeMo's last one."""
    parts = max(1, round(num_frames / window))
    bounds = np.linspace(0, num_frames, parts + 1).round().astype(int)
    return [range(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def window_indices(num_frames: int, fps: float, settings: VLMSettings) -> list[list[int]]:
    """The clip frame indices the model sees, window by window: each window of
    ``split_windows`` sampled at ``settings.fps`` (at least ``MIN_FRAMES``). Diff mode: one
    group, the keyframes of the whole clip at ``settings.fps``."""
    if settings.mode == "diff":
        return [[int(i) for i in sample_indices(num_frames, fps, settings.fps)]]
    return [[w.start + int(i) for i in sample_indices(len(w), fps, settings.fps)]
            for w in split_windows(num_frames, settings.window)]


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Frames at ``size`` (height, width): area averaging down, cubic up; unchanged if equal."""
    h, w = size
    if frames.shape[1:3] == (h, w):
        return frames
    import cv2

    down = h * w < frames.shape[1] * frames.shape[2]
    interp = cv2.INTER_AREA if down else cv2.INTER_CUBIC
    return np.stack([cv2.resize(f, (w, h), interpolation=interp) for f in frames])


@dataclass
class VideoInput:
    """A clip's sampled frames, resized for the model (``prepare``): what travels from a CPU
    task to the captioner (a Ray actor) instead of the whole clip."""

    frames: np.ndarray  # N x h x w x 3 uint8, every window's frames in order
    indices: list[int]  # their clip frame indices
    fps: float  # the clip's frame rate
    num_frames: int  # the clip's frame count
    windows: list[tuple[int, int, int]]  # per window: first row, end row, clip frames spanned

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps


def prepare(frames: np.ndarray, fps: float, settings: VLMSettings, frame_size) -> VideoInput:
    """Sample ``frames`` (the clip, T x H x W x 3) window by window (``window_indices``) and
    resize them to ``frame_size(h, w, frames_per_request)`` once, on the CPU."""
    groups = window_indices(len(frames), fps, settings)
    spans = [len(w) for w in split_windows(len(frames), settings.window)]
    if settings.mode == "diff":
        spans = [len(frames)]
    rows, windows = 0, []
    for g, span in zip(groups, spans):
        windows.append((rows, rows + len(g), span))
        rows += len(g)
    idx = [i for g in groups for i in g]
    per_request = 2 if settings.mode == "diff" else max(len(g) for g in groups)
    h, w = frames.shape[1:3]
    return VideoInput(resize_frames(frames[idx], frame_size(h, w, per_request)), idx, float(fps),
                      len(frames), windows)


# --- the transformers backend --------------------------------------------------------------------


def _transformers():
    from vtk.captions.hf import _transformers as load

    return load()


def folder_hash(path: str) -> str:
    """A fingerprint of a local model folder: every file's relative name and size, the bytes of
    each file under 16 MB (configs, tokenizer, chat template) and the first and last MB of the
    larger ones (the weights: hashing 15 GB would take longer than loading it)."""
    h = hashlib.sha256()
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            full = os.path.join(root, name)
            size = os.path.getsize(full)
            h.update(f"{os.path.relpath(full, path)}\0{size}\0".encode())
            with open(full, "rb") as f:
                if size <= 16 << 20:
                    h.update(f.read())
                else:
                    h.update(f.read(1 << 20))
                    f.seek(size - (1 << 20))
                    h.update(f.read())
    return h.hexdigest()[:16]


def processor_frame_size(vp, height: int, width: int, frames: int) -> tuple[int, int]:
    """The (height, width) the video processor ``vp`` would resize frames of a ``frames``-frame
    video to, so they can be resized once beforehand (its own resize is then a no-op)."""
    size = dict(getattr(vp, "size", None) or {})
    patch, merge = getattr(vp, "patch_size", None), getattr(vp, "merge_size", None)
    if patch and merge and size.get("shortest_edge") and size.get("longest_edge"):
        # the Qwen-VL family: pixel budgets, sides multiples of patch x merge; the per-frame cap
        # of qwen-vl-utils (an even share of the whole video's token budget) applied here
        from transformers.models.qwen2_vl.video_processing_qwen2_vl import smart_resize

        factor, lo, hi = patch * merge, size["shortest_edge"], size["longest_edge"]
        temporal = getattr(vp, "temporal_patch_size", 1) or 1
        total = int((getattr(vp, "max_video_tokens", None) or 128000) * factor * factor * 0.9)
        hi = max(min(hi, total * temporal // max(frames, 1)), int(lo * 1.05))
        return smart_resize(height, width, factor=factor, min_pixels=lo, max_pixels=hi)
    square = (getattr(vp, "max_image_size", None) or {}).get("longest_edge")
    if square:  # SmolVLM / Idefics3: every frame becomes one square tile
        return int(square), int(square)
    if size.get("height") and size.get("width"):
        return int(size["height"]), int(size["width"])
    edge = size.get("shortest_edge") or size.get("longest_edge")
    if edge:
        side = min(height, width) if size.get("shortest_edge") else max(height, width)
        scale = edge / side
        return max(1, round(height * scale)), max(1, round(width * scale))
    return height, width


@functools.cache
def frame_sizer(name: str):
    """``frame_size(h, w, n)`` of the video captioner ``name`` from its processor alone (no
    weights): what a CPU task needs to prepare frames for a captioner elsewhere."""
    transformers, _ = _transformers()
    from vtk.captions.hf import _load

    path = name.split(":", 1)[1]
    processor = _load("processor", path, lambda: transformers.AutoProcessor.from_pretrained(path))
    vp = getattr(processor, "video_processor", None)
    if vp is None:
        raise VtkError(f"{name}: its processor takes no video (no video processor)")
    return functools.partial(processor_frame_size, vp)


class VLMCaptioner:
    """A transformers video language model (module docstring), loaded once per process."""

    kind = "video"

    def __init__(self, path: str, device: str = "cpu"):
        transformers, torch = _transformers()
        from vtk.captions.hf import _dtype, _load

        self.name = f"vlm:{path}"
        self.path, self.device = path, device
        self.processor = _load("processor", path,
                               lambda: transformers.AutoProcessor.from_pretrained(path))
        if getattr(self.processor, "video_processor", None) is None:
            raise VtkError(f"vlm:{path}: its processor takes no video (no video processor); "
                           f"give a video language model (Qwen2.5-VL, SmolVLM2, LLaVA-OneVision "
                           f"...), or pass an image captioner as hf:{path}")
        # bf16 where the GPU has it: the dtype these models are trained and served in
        dtype = _dtype(device)
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            dtype = torch.bfloat16
        self.model = _load("video language model", path,
                           lambda: transformers.AutoModelForImageTextToText.from_pretrained(
                               path, dtype=dtype))
        self.model.eval().to(device)
        tok = self.processor.tokenizer
        tok.padding_side = "left"  # decoder-only: every prompt must end where generation starts
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        gen = self.model.generation_config
        eos = gen.eos_token_id if gen.eos_token_id is not None else tok.eos_token_id
        self.eos = set(eos if isinstance(eos, (list, tuple)) else [eos]) - {None}
        self.pad = tok.pad_token_id
        self.revision = (getattr(self.model.config, "_commit_hash", None)
                         or (folder_hash(path) if os.path.isdir(path) else None))
        # seconds spent in each part of generate() over this captioner's life (vtk bench
        # captions: what the framework adds around the model's own generate)
        self.timings = {"processor_s": 0.0, "generate_s": 0.0, "decode_s": 0.0, "calls": 0}

    def describe(self) -> dict:
        """The model's identity for the json: its id or path, and its hub revision (the commit
        of the snapshot it was loaded from) or, for a local folder, ``folder_hash``."""
        return {"model": self.name, "revision": self.revision,
                "architecture": type(self.model).__name__}

    def frame_size(self, height: int, width: int, frames: int) -> tuple[int, int]:
        """The (height, width) the processor would resize frames of a ``frames``-frame video
        to (``processor_frame_size``)."""
        return processor_frame_size(self.processor.video_processor, height, width, frames)

    def _text(self, request: Request) -> str:
        content = ([{"type": "video"}] if request.frames is not None else []) + [
            {"type": "text", "text": request.prompt}]
        return self.processor.apply_chat_template([{"role": "user", "content": content}],
                                                  add_generation_prompt=True, tokenize=False)

    def _video_kwargs(self, requests: list[Request]) -> dict:
        videos = [r.frames for r in requests if r.frames is not None]
        if not videos:
            return {}
        if len(videos) != len(requests):
            raise ValueError("a batch mixes video and text-only requests")
        # a window is described as the part of the clip it covers: its frames' indices in the
        # clip (their times are index / fps), the clip frames it spans (so its sampled rate is
        # frames / span x fps, what Qwen2.5-VL's temporal positions use) and the clip's length
        meta = [{"total_num_frames": int(r.span or len(r.frames)), "fps": float(r.fps),
                 "frames_indices": list(r.indices), "duration": float(r.duration),
                 "height": int(r.frames.shape[1]), "width": int(r.frames.shape[2])}
                for r in requests]
        kwargs = {"videos": videos, "video_metadata": meta, "do_sample_frames": False}
        valid = getattr(self.processor.video_processor, "valid_kwargs", None)
        if "cap_pixels_per_frame" in getattr(valid, "__annotations__", {}):
            kwargs["cap_pixels_per_frame"] = False  # frame_size applied the cap already
        return kwargs

    def generate(self, requests: list[Request], max_tokens: int) -> list[Generation]:
        """One batched, greedy generate over ``requests`` (all with video, or all text-only)."""
        _, torch = _transformers()
        t0 = time.perf_counter()
        inputs = self.processor(text=[self._text(r) for r in requests], padding=True,
                                return_tensors="pt", **self._video_kwargs(requests))
        inputs = inputs.to(self.device)
        for k, v in inputs.items():
            if hasattr(v, "is_floating_point") and v.is_floating_point():
                inputs[k] = v.to(self.model.dtype)
        # greedy whatever the model's own generation config samples with (Qwen2.5-VL's does)
        config = self.model.generation_config.__class__.from_dict(
            {**self.model.generation_config.to_dict(), "do_sample": False, "temperature": None,
             "top_p": None, "top_k": None, "num_beams": 1, "max_new_tokens": max_tokens,
             "pad_token_id": self.pad})
        t1 = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(**inputs, generation_config=config)
        t2 = time.perf_counter()
        new = out[:, inputs["input_ids"].shape[1]:].tolist()
        prompt_tokens = inputs["attention_mask"].sum(1).tolist()
        results = []
        for row, n_prompt in zip(new, prompt_tokens):
            end = next((k for k, t in enumerate(row) if t in self.eos), None)
            kept = row if end is None else row[:end]
            text = self.processor.tokenizer.decode(kept, skip_special_tokens=True)
            results.append(Generation(" ".join(text.split()), int(n_prompt), len(kept),
                                      end is None and len(row) >= max_tokens))
        t = self.timings
        t["processor_s"] += t1 - t0
        t["generate_s"] += t2 - t1
        t["decode_s"] += time.perf_counter() - t2
        t["calls"] += 1
        return results


# --- clips -> captions ---------------------------------------------------------------------------


@dataclass
class _Clip:
    """One clip's progress through ``caption_videos``."""

    video: VideoInput
    parts: list[dict] = field(default_factory=list)  # windows or keyframe steps, in order
    calls: list[Generation] = field(default_factory=list)
    summary: dict | None = None  # the merged caption of a clip of several parts
    error: str | None = None


def caption_videos(captioner, videos: dict, settings: VLMSettings, summarizer=None) -> dict:
    """Captions of many clips: ``videos`` {id: VideoInput} -> {id: result or Exception}. A result
    is ``{"text", "truncated", "prompt_tokens", "output_tokens", "windows": [...],
    "summary": {...} (clips of several parts), "generate_s"}``. ``summarizer``: an ``hf:``
    summariser that merges the parts (None: the model itself, text only)."""
    clips = {i: _Clip(v) for i, v in videos.items()}
    t0 = time.perf_counter()
    if settings.mode == "windows":
        _windows(captioner, clips, settings)
    else:
        _differential(captioner, clips, settings)
    _merge(captioner, clips, settings, summarizer)
    seconds = time.perf_counter() - t0
    out = {}
    for i, c in clips.items():
        if c.error is not None:
            out[i] = RuntimeError(c.error)
            continue
        final = c.parts[0] if len(c.parts) == 1 else c.summary
        out[i] = {"text": final["text"], "truncated": bool(final["truncated"]),
                  "prompt_tokens": sum(g.prompt_tokens for g in c.calls),
                  "output_tokens": sum(g.output_tokens for g in c.calls),
                  "windows": c.parts, **({"summary": c.summary} if len(c.parts) > 1 else {}),
                  # the wall time of the batches the clip was in, shared among their clips
                  "generate_s": round(seconds / max(len(clips), 1), 4)}
    return out


def _part(request: Request, gen: Generation) -> dict:
    times = request.times
    return {"start": times[0], "end": times[-1], "frames": len(times), "t": times,
            "span": request.span,  # the clip frames the request covers
            "text": gen.text, "prompt_tokens": gen.prompt_tokens,
            "output_tokens": gen.output_tokens, "truncated": gen.truncated}


def _request(v: VideoInput, rows, prompt: str, span: int | None = None) -> Request:
    """A request for some of a clip's prepared frames; ``span``: the clip frames they cover
    (default: their share of the clip, as for two adjacent keyframes)."""
    rows = list(rows)
    indices = [v.indices[k] for k in rows]
    if span is None:
        span = round(len(rows) * v.num_frames / len(v.indices))
    return Request(prompt, v.frames[rows], indices, v.fps, v.duration, max(span, len(rows)))


def _windows(captioner, clips: dict, settings: VLMSettings) -> None:
    jobs = []
    for i, c in clips.items():
        for first, end, span in c.video.windows:
            jobs.append((i, _request(c.video, range(first, end), settings.prompt_text, span)))
    for (i, req), gen in zip(jobs, generate_all(captioner, [r for _, r in jobs], settings)):
        _record(clips[i], req, gen, "window")


def _differential(captioner, clips: dict, settings: VLMSettings) -> None:
    """Step k of every clip in one batch: keyframe 0 alone, then keyframes (k-1, k) with the
    caption of step k-1 (each step needs the one before it)."""
    steps = max(len(c.video.indices) for c in clips.values())
    for k in range(steps):
        jobs = []
        for i, c in clips.items():
            if c.error is not None or k >= len(c.video.indices):
                continue
            if k == 0:
                jobs.append((i, _request(c.video, [0], settings.prompt_text)))
            else:
                prompt = DIFF_PROMPT.format(previous=c.parts[-1]["text"])
                jobs.append((i, _request(c.video, [k - 1, k], prompt)))
        for (i, req), gen in zip(jobs, generate_all(captioner, [r for _, r in jobs], settings)):
            _record(clips[i], req, gen, f"keyframe step {k}")


def _record(c: _Clip, req: Request, gen, what: str) -> None:
    if c.error is not None:
        return
    if isinstance(gen, Exception):
        c.error = f"{what} at {req.times[0]:.2f} s: {_reason(gen)}"
    elif not gen.text:
        c.error = f"{what} at {req.times[0]:.2f} s: the model generated no text"
    else:
        c.calls.append(gen)
        c.parts.append(_part(req, gen))


def _merge(captioner, clips: dict, settings: VLMSettings, summarizer) -> None:
    """One text per clip of several parts: the summariser's, or the model's own, text only."""
    todo = {i: c for i, c in clips.items() if c.error is None and len(c.parts) > 1}
    if not todo:
        return
    if summarizer is not None:
        from vtk.captions.captioning import _summarize_all

        jobs = {i: ([p["text"] for p in c.parts], [p["start"] for p in c.parts], None)
                for i, c in todo.items()}
        for i, text in _summarize_all(summarizer, jobs).items():
            if isinstance(text, Exception):
                todo[i].error = f"summary ({summarizer.name}): {_reason(text)}"
            else:
                todo[i].summary = {"text": text, "truncated": False, "model": summarizer.name}
        return
    requests = [Request(SUMMARY_PROMPT.format(lines="\n".join(
        f"{p['start']:.1f} s: {p['text']}" for p in c.parts))) for c in todo.values()]
    for c, gen in zip(todo.values(), generate_all(captioner, requests, settings)):
        if isinstance(gen, Exception):
            c.error = f"summary: {_reason(gen)}"
        elif not gen.text:
            c.error = "summary: the model generated no text"
        else:
            c.calls.append(gen)
            c.summary = {"text": gen.text, "prompt_tokens": gen.prompt_tokens,
                         "output_tokens": gen.output_tokens, "truncated": gen.truncated}


def generate_all(captioner, requests: list[Request], settings: VLMSettings) -> list:
    """Generations for ``requests`` in batches of ``settings.batch`` (a batch's requests sorted
    by length, so they pad less); a batch that raises is retried request by request, and a
    request that raises alone gets its exception in its place. A ``VtkError`` (a setting, not
    a clip) propagates."""
    out: list = [None] * len(requests)
    order = sorted(range(len(requests)), key=lambda k: _cost(requests[k]))
    for s in range(0, len(order), settings.batch):
        chunk = order[s:s + settings.batch]
        try:
            got = captioner.generate([requests[k] for k in chunk], settings.max_tokens)
            if len(got) != len(chunk):
                raise RuntimeError(f"{len(got)} generations for {len(chunk)} requests")
        except VtkError:
            raise
        except Exception:  # noqa: BLE001 - find the request that breaks it
            got = []
            for k in chunk:
                try:
                    got += captioner.generate([requests[k]], settings.max_tokens)
                except VtkError:
                    raise
                except Exception as e:  # noqa: BLE001
                    got.append(e)
        for k, g in zip(chunk, got):
            out[k] = g
    return out


def _cost(r: Request) -> tuple:
    return (0 if r.frames is None else r.frames.size, len(r.prompt))


def _reason(e: BaseException) -> str:
    from vtk.captions.captioning import _reason as reason

    return reason(e)
