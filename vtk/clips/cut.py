"""The cut stage of ``vtk.clips``: :func:`clips_from_item` runs a source's
:class:`~vtk.clips.decode.DecodedFrame` values through the scene detector
(``ContentDetector(threshold=27)``, InternVid's, fed frame by frame on a small BGR copy) and the
cutter, and yields :class:`~vtk.types.Clip` values. Only the current scene's output frames are
held (at most ``2 * max_clip`` seconds of them), never the source at full size.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
from scenedetect import FrameTimecode
from scenedetect.detectors import ContentDetector

from vtk.clips.config import DEFAULT_SIZE, ClipConfig, ClipStats, InputError
from vtk.clips.decode import (
    _array_frames,
    _file_frames,
    _orientation,
    _out_rgb,
    _small_bgr,
    _upright,
)
from vtk.types import Clip, SourceItem


def effective_mode(item: SourceItem, cfg: ClipConfig) -> str:
    """The clip mode for one item: timestamps win, ``auto`` keeps in-memory items whole."""
    if _has_range(item) and item.frames is None:
        return "range"
    if cfg.mode == "auto":
        return "whole" if item.frames is not None else "scenes"
    return cfg.mode


def clips_from_item(item: SourceItem, cfg: ClipConfig, stats: ClipStats | None = None,
                    segment=None) -> Iterator[Clip]:
    """Yield the clips of one source in order, indices 0, 1, ... (keys are stable).

    ``segment`` (``vtk.clips.segments.Segment``, a file cut into scenes): only the clips of
    the scenes that start in the part's range, numbered from 0; its frames' scores and its
    cuts go to ``stats.extra["segment"]`` for the reconcile (``vtk.clips.segments``).

    Raises :class:`InputError` when the source cannot be decoded or yields no clip. When it
    breaks part-way (corrupt data, a file shorter than its video stream says), the complete
    clips before the fault are yielded first and the error carries their number (``clips``):
    the clip the fault cut into is dropped with the rest.
    Clip frames are uint8 T x H x W x 3 RGB at ``cfg.fps``, upright (the display matrix is
    applied); start/end are source seconds, end never past the source's last frame.
    """
    stats = stats if stats is not None else ClipStats()
    mode = effective_mode(item, cfg)
    if item.frames is not None:
        frames = _array_frames(item, cfg, mode, stats)
    else:
        frames = _file_frames(item, cfg, mode, stats, segment)
    cutter = _Cutter(cfg, mode)
    detector = _detector(cfg) if mode == "scenes" else None
    part = _Part(segment, cutter, cfg.min_scene_len) if segment is not None else None
    orient = None  # how to turn the decoded frames upright, read from the first one
    index, kept_to, last = 0, 0.0, 0
    try:
        try:
            for frame in frames:  # DecodedFrame
                if part is not None and part.finished(frame.index):
                    break
                segments = []
                last = frame.index
                if detector is not None:
                    small = frame.detect
                    if not isinstance(small, np.ndarray):  # a decoded av.VideoFrame
                        # The detector sees the stored orientation: its score is a mean over
                        # pixels, which turning the frame does not change.
                        small = _small_bgr(small, cfg.detect_width)
                    cuts = detector.process_frame(_timecode(frame.index, stats.source_fps), small)
                    stats.cuts += len(cuts)
                    segments += part.cut(cuts) if part is not None else cutter.cuts(cuts)
                if frame.times:
                    rgb = frame.output
                    if not isinstance(rgb, np.ndarray):  # a decoded av.VideoFrame
                        orient = _orientation(rgb) if orient is None else orient
                        rgb = _upright(_out_rgb(rgb, cfg.size or DEFAULT_SIZE), orient)
                    push = part.push if part is not None else cutter.push
                    segments += push(frame.index, frame.t, rgb, frame.times)
                for seg in segments:
                    clip = _clip(item, cfg, index, seg)
                    yield clip
                    index, kept_to = index + 1, clip.end
        except InputError as e:
            if index == 0:
                raise
            raise InputError(f"{e.kind}-partial", f"{e.reason}; the {index} clips before "
                             f"{kept_to:.2f} s are kept", clips=index) from None
        # Only the source's last clips can reach its end; a clip ends with its last
        # output frame, or with the source (or the range) when that comes first.
        limit = stats.end if item.end is None else min(stats.end, item.end)
        if part is None or part.seg.last:  # the end of the source
            if detector is not None:
                cuts = detector.post_process(_timecode(last, stats.source_fps))
                stats.cuts += len(cuts)
                for seg in part.cut(cuts) if part is not None else cutter.cuts(cuts):
                    yield _clip(item, cfg, index, seg, limit)
                    index += 1
            for seg in cutter.flush() if part is None or part.owned else []:
                yield _clip(item, cfg, index, seg, limit)
                index += 1
    finally:
        frames.close()  # stops the decode thread when the consumer stops early
        stats.clips = index
        if part is not None:
            stats.extra["segment"] = part.report(detector, last, stats.source_fps)
    if part is not None:
        return  # a part may own no scene; the reconcile judges the whole
    if index == 0:
        if stats.frames_decoded == 0:
            raise InputError("no-frames", "no video frame could be decoded")
        raise InputError("too-short", f"no clip of at least {cfg.min_clip:g} s "
                         f"({stats.duration:.2f} s of video, mode {mode})")


def _has_range(item: SourceItem) -> bool:
    return item.start is not None or item.end is not None


def _clip(item: SourceItem, cfg: ClipConfig, index: int, seg: list,
          limit: float | None = None) -> Clip:
    """seg: list of (t_out, rgb H x W x 3) at the output rate; ``limit``: where the source
    ends (s), which the clip's end may not pass."""
    frames = np.stack([rgb for _, rgb in seg])
    start = seg[0][0]
    end = start + len(seg) / cfg.fps
    if limit is not None and limit > start:
        end = min(end, limit)
    return Clip(source_id=item.id, index=index, frames=frames, fps=cfg.fps, start=round(start, 4),
                end=round(end, 4), source=item.describe(), meta=item.meta)


class _ScoredDetector(ContentDetector):
    """``ContentDetector`` that keeps every frame's score (a part's report to the reconcile)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.scores: list[float] = []

    def _calculate_frame_score(self, timecode, frame_img) -> float:
        score = super()._calculate_frame_score(timecode, frame_img)
        self.scores.append(score)
        return score


def _detector(cfg: ClipConfig):
    return _ScoredDetector(threshold=cfg.threshold, min_scene_len=cfg.min_scene_len)


class _Part:
    """The cutter of one part of a file (``vtk.clips.segments``): it owns the scenes that
    start in the part's range and follows the last of them past the range's end, to its cut.

    While the current scene is not its own, output frames are not buffered, only the last
    ``min_scene_len + 1`` source frames' (the flash filter reports a merged cut exactly
    ``min_scene_len`` frames late): a scene of its own that begins at such a cut gets its
    frames from there. So a scene's frames, and its splitting when long, are the single
    pass's. ``min_scene_len`` frames past the range's end, no cut before it can still come."""

    def __init__(self, seg, cutter: _Cutter, min_scene_len: int):
        self.seg, self.cutter, self.late = seg, cutter, min_scene_len + 1
        self.owned = seg.start == 0  # the first part owns the scene that opens the file
        self.used: list[int] = []  # every cut the part's detector made
        self.end: int | None = None  # the cut that ended the part's last scene
        self.recent: list = []  # (src index, t, rgb, times) while the scene is not ours

    def finished(self, index: int) -> bool:
        return not self.owned and index >= self.seg.stop + self.late

    def cut(self, cuts) -> list:
        out = []
        for tc in cuts:
            frame = tc.frame_num
            self.used.append(frame)
            if self.owned:
                out += self.cutter.cuts([tc])
            ours = self.seg.start <= frame < self.seg.stop
            if self.owned and not ours:
                self.end = frame
                self.cutter.buf = []
            elif ours and not self.owned:
                self.cutter.buf = []
                for index, t, rgb, times in self.recent:
                    if index >= frame:
                        out += self.cutter.push(index, t, rgb, times)
            self.owned = ours
        return out

    def push(self, index: int, t: float, rgb, times) -> list:
        if self.owned:
            return self.cutter.push(index, t, rgb, times)
        self.recent = [r for r in self.recent if r[0] > index - self.late] + [(index, t, rgb,
                                                                                 times)]
        return []

    def report(self, detector, last: int, fps: float) -> dict:
        """What the reconcile needs: the scores of the frames from the first one that had its
        neighbour before it, the cuts, the cut that ended the part's last scene (None when
        none did) and the last frame it read."""
        seg = self.seg
        first = seg.warm + (1 if seg.warm else 0)  # the first decoded frame had no neighbour
        scores = detector.scores[first - seg.warm:] if detector is not None else []
        return {"first": first, "scores": scores, "cuts": self.used, "end": self.end,
                "last": last, "owned": self.owned, "fps": fps}


def _timecode(index: int, fps: float):
    return FrameTimecode(int(index), fps=float(fps) or 25.0)


class _Cutter:
    """Collects output frames and turns cuts into clips.

    ``push`` buffers output frames (with the source frame index they came from); ``cuts`` ends
    the current scene at each source frame index the detector reports; ``flush`` ends the last.
    To bound memory a scene longer than ``2 * max_clip`` gives up a ``max_clip`` clip as it
    grows; at its end the rest (``max_clip`` to ``2 * max_clip``) is split into two halves if it
    is over ``max_clip``, so no piece is shorter than ``max_clip / 2 >= min_clip``.
    A clip leaves ``push`` only once a later output frame exists, so the source surely runs
    past its end; the last clips leave through ``flush``, where the source's end is known.
    """

    def __init__(self, cfg: ClipConfig, mode: str):
        self.mode = mode
        self.buf: list[tuple[int, float, np.ndarray]] = []
        self.min_n = max(1, math.ceil(cfg.min_clip * cfg.fps - 1e-6))
        self.max_n = max(1, int(cfg.max_clip * cfg.fps + 1e-6))
        self.fixed_n = max(1, int(round(cfg.clip_len * cfg.fps)))

    def push(self, src_index: int, t: float, rgb: np.ndarray, copies: list[float]) -> list:
        out = []
        for t_out in copies:
            self.buf.append((src_index, t_out, rgb))
            if self.mode == "fixed" and len(self.buf) > self.fixed_n:
                out.append(self._take(self.fixed_n))
            elif self.mode == "scenes" and len(self.buf) >= 2 * self.max_n:
                out.append(self._take(self.max_n))
        return out

    def cuts(self, cut_timecodes) -> list:
        out = []
        for tc in cut_timecodes or []:
            cut = tc.frame_num
            k = next((i for i, (s, _, _) in enumerate(self.buf) if s >= cut), len(self.buf))
            scene = self._take(k)
            out += self._finish(scene)
        return out

    def flush(self) -> list:
        scene, self.buf = self._take(len(self.buf)), []
        if self.mode in ("whole", "range"):
            return [scene] if scene else []
        if self.mode == "fixed":
            return [scene] if len(scene) >= min(self.min_n, self.fixed_n) else []
        return self._finish(scene)

    def _take(self, k: int) -> list:
        head, self.buf = self.buf[:k], self.buf[k:]
        return [(t, rgb) for _, t, rgb in head]

    def _finish(self, scene: list) -> list:
        n = len(scene)
        if n < self.min_n:
            return []
        if n > self.max_n:
            half = n // 2
            return [scene[:half], scene[half:]]
        return [scene]
