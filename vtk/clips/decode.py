"""Sources to clips: decode once, detect scenes on a small copy, resample, resize, cut.

Each source is read in one pass. For a video file a decode thread (PyAV and OpenCV release the
GIL, so it runs beside the caller on a second core) only decodes; the calling thread turns
each decoded frame into

- a small BGR copy (``detect_width`` wide, bilinear, as PySceneDetect downscales) for
  ``ContentDetector(threshold=27)``, InternVid's detector, fed frame by frame, and
- for the frames the output rate keeps, an RGB frame at the output size (short side
  ``size``, even dimensions),

then runs the detector and the cutter and yields :class:`Clip` values (the shard workers
encode them on the same thread: the two threads then cost about the same per frame).
Only the current scene's output frames are held (at most ``2 * max_clip`` seconds of them),
never the source at full size, so a feature film streams through in bounded memory.
In-memory items (the synthetic world) go through the same resample / resize / cut path.

Clip modes: ``scenes`` (scene cuts; scenes shorter than ``min_clip`` dropped, longer than
``max_clip`` split), ``fixed`` (windows of ``clip_len`` seconds), ``whole`` (one clip per
source) and ``auto`` (``whole`` for in-memory items and sources with start/end timestamps,
``scenes`` otherwise). Timestamps on the item (manifest start/end) always win: the range
becomes one clip. Cuts are frame-accurate because every clip is re-encoded.

Output frames are turned upright by the source's display matrix (phones store portrait video
as landscape plus a quarter turn). A clip ends with its last output frame or with the source,
whichever comes first. A source that breaks part-way (corrupt packets, a file shorter than its
video stream says) keeps the complete clips before the fault: see :func:`clips_from_item`.
Truncation is judged from the video stream's own duration only, never the container's, which
spans the audio too.
"""

from __future__ import annotations

import io
import math
import os
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from vtk.types import Clip, SourceItem

MODES = ("auto", "scenes", "fixed", "whole")
CODECS = {"h264": "libx264", "vp9": "libvpx-vp9"}
DEFAULT_SIZE = 224  # short side (px) for video files when --size is not given
MAX_BAD_PACKETS = 16  # corrupt packets tolerated in one source before it counts as failed
MAX_FPS = 240.0  # the fastest capture rate phones offer; a higher --fps only multiplies frames
MAX_CLIP_FRAMES = 3600  # frames in one clip (a scene buffer holds two): bounds worker memory


class InputError(Exception):
    """A source that cannot be turned into clips; ``kind`` is a short reason class for the
    stats totals (``empty``, ``unreadable``, ``no-video``, ``truncated``, ``decode-error``,
    ``too-short``...).

    ``clips`` > 0: the source broke part-way, after that many complete clips were yielded;
    those stand, and the error (kind ``<kind>-partial``) covers the rest of the source."""

    def __init__(self, kind: str, reason: str, clips: int = 0):
        super().__init__(reason)
        self.kind = kind
        self.reason = reason
        self.clips = clips


@dataclass
class ClipConfig:
    """How sources become clips. Times in seconds, sizes in pixels."""

    mode: str = "auto"
    size: int | None = None  # short side; None: DEFAULT_SIZE for files, native for frames
    fps: float = 8.0  # output frame rate
    min_clip: float = 2.0  # shorter scenes are dropped (InternVid keeps clips of 2 s and more)
    max_clip: float = 30.0  # longer scenes are split
    clip_len: float = 10.0  # window length for mode "fixed"
    threshold: float = 27.0  # ContentDetector threshold (InternVid)
    min_scene_len: int = 15  # source frames between cuts (video2dataset's setting)
    detect_width: int = 256  # width of the copy the detector sees (PySceneDetect's default)

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"clip mode must be one of {MODES}, got {self.mode!r}")
        # Written so that NaN fails too (every comparison with NaN is False).
        if not 0 < self.fps <= MAX_FPS:
            raise ValueError(f"fps {self.fps:g}: need 0 < fps <= {MAX_FPS:g}")
        if not 0 <= self.min_clip < math.inf:
            raise ValueError(f"min_clip {self.min_clip:g}: need a length >= 0 s")
        if not 0 < self.clip_len < math.inf:
            raise ValueError(f"clip_len {self.clip_len:g}: need a length > 0 s")
        if not self.max_clip >= 2 * self.min_clip or self.max_clip <= 0:
            # Splitting a long scene in two must leave both halves >= min_clip.
            raise ValueError(f"max_clip ({self.max_clip:g}) must be above 0 and at least "
                             f"2 x min_clip ({self.min_clip:g})")
        # A clip's frames are held in memory until it is encoded: refuse settings that would
        # hold more than MAX_CLIP_FRAMES (whole and range clips are as long as their source).
        name, length = ("clip_len", self.clip_len) if self.mode == "fixed" else (
            "max_clip", self.max_clip)
        if self.mode != "whole" and length * self.fps > MAX_CLIP_FRAMES:
            raise ValueError(f"{name} {length:g} s at fps {self.fps:g} is "
                             f"{length * self.fps:.0f} frames a clip, more than "
                             f"{MAX_CLIP_FRAMES}: lower fps or {name}")


@dataclass
class ClipStats:
    """What one source cost: filled in while its clips are produced."""

    frames_decoded: int = 0  # source frames
    source_fps: float = 0.0
    duration: float = 0.0  # seconds of source read
    end: float = 0.0  # source time (s) where the last frame read ends
    clips: int = 0
    cuts: int = 0  # scene cuts the detector reported
    bad_packets: int = 0
    extra: dict = field(default_factory=dict)


# swscale on one thread: parallelism comes from the worker processes, and a frame whose
# reformatter owns slice threads deadlocks a forked child that frees it (its pthread condition
# waits for threads that do not exist there): DataLoader workers forked while such a frame was
# still garbage in the parent hung before their first sample.
SWS_THREADS = 1


def output_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(W, H) with the short side ``short_side`` (rounded to even), aspect kept, both even:
    yuv420p needs even dimensions."""
    scale = short_side / min(width, height)
    w = max(2, int(round(width * scale / 2)) * 2)
    h = max(2, int(round(height * scale / 2)) * 2)
    return w, h


def effective_mode(item: SourceItem, cfg: ClipConfig) -> str:
    """The clip mode for one item: timestamps win, ``auto`` keeps in-memory items whole."""
    if _has_range(item) and item.frames is None:
        return "range"
    if cfg.mode == "auto":
        return "whole" if item.frames is not None else "scenes"
    return cfg.mode


def clips_from_item(item: SourceItem, cfg: ClipConfig,
                    stats: ClipStats | None = None) -> Iterator[Clip]:
    """Yield the clips of one source in order, indices 0, 1, ... (keys are stable).

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
        frames = _file_frames(item, cfg, mode, stats)
    cutter = _Cutter(cfg, mode)
    detector = _detector(cfg) if mode == "scenes" else None
    orient = None  # how to turn the decoded frames upright, read from the first one
    index, kept_to = 0, 0.0
    try:
        try:
            for src_index, small, rgb, copies, t in frames:
                segments = []
                if detector is not None:
                    if not isinstance(small, np.ndarray):  # a decoded av.VideoFrame
                        # The detector sees the stored orientation: its score is a mean over
                        # pixels, which turning the frame does not change.
                        small = _small_bgr(small, cfg.detect_width)
                    cuts = detector.process_frame(_timecode(src_index, stats.source_fps), small)
                    stats.cuts += len(cuts)
                    segments += cutter.cuts(cuts)
                if copies:
                    if not isinstance(rgb, np.ndarray):  # a decoded av.VideoFrame
                        orient = _orientation(rgb) if orient is None else orient
                        rgb = _upright(_out_rgb(rgb, cfg.size or DEFAULT_SIZE), orient)
                    segments += cutter.push(src_index, t, rgb, copies)
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
        if detector is not None:
            last = _timecode(max(stats.frames_decoded - 1, 0), stats.source_fps)
            cuts = detector.post_process(last)
            stats.cuts += len(cuts)
            for seg in cutter.cuts(cuts):
                yield _clip(item, cfg, index, seg, limit)
                index += 1
        for seg in cutter.flush():
            yield _clip(item, cfg, index, seg, limit)
            index += 1
    finally:
        frames.close()  # stops the decode thread when the consumer stops early
        stats.clips = index
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


def _detector(cfg: ClipConfig):
    from scenedetect.detectors import ContentDetector

    return ContentDetector(threshold=cfg.threshold, min_scene_len=cfg.min_scene_len)


def _timecode(index: int, fps: float):
    from scenedetect import FrameTimecode

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


class _Resampler:
    """Maps source frames to output frames at ``fps``: output frame j (time t0 + j / fps) shows
    the source frame on screen at that time, so a frame is repeated when the source is slower
    and skipped when it is faster."""

    def __init__(self, fps: float, t0: float, end: float | None = None):
        self.fps, self.t0, self.next_j, self.end = fps, t0, 0, end

    def copies(self, t: float, duration: float) -> list[float]:
        """Output times that source frame [t, t + duration) covers (and that fall before
        ``end``: a range's last source frame may straddle it)."""
        stop = t + duration if self.end is None else min(t + duration, self.end)
        n_target = math.ceil((stop - self.t0) * self.fps - 1e-6)
        times = [self.t0 + j / self.fps for j in range(self.next_j, max(n_target, self.next_j))]
        self.next_j = max(n_target, self.next_j)
        return times


# --- in-memory frames ------------------------------------------------------------------------


def _array_frames(item: SourceItem, cfg: ClipConfig, mode: str, stats: ClipStats):
    """Frames of an in-memory item: (src_index, small_bgr | None, rgb | None, out times, t)."""
    import cv2

    frames = np.asarray(item.frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or not len(frames):
        raise InputError("bad-frames", f"expected uint8 frames T x H x W x 3, got "
                         f"{frames.dtype} {tuple(frames.shape)}")
    fps = float(item.fps or cfg.fps)
    stats.source_fps = fps
    h, w = frames.shape[1:3]
    out_w, out_h = output_size(w, h, cfg.size or min(w, h))
    first = int(round((item.start or 0.0) * fps)) if item.start else 0
    last = int(round(item.end * fps)) if item.end is not None else len(frames)
    resampler = _Resampler(cfg.fps, first / fps, item.end)
    for i in range(first, min(last, len(frames))):
        t = i / fps
        stats.frames_decoded += 1
        stats.duration = t + 1 / fps - first / fps
        stats.end = t + 1 / fps
        small = None
        if mode == "scenes":
            small = cv2.cvtColor(_fit_width(frames[i], cfg.detect_width), cv2.COLOR_RGB2BGR)
        times = resampler.copies(t, 1 / fps)
        rgb = None
        if times:
            rgb = frames[i] if (out_w, out_h) == (w, h) else cv2.resize(
                frames[i], (out_w, out_h),
                interpolation=cv2.INTER_AREA if out_h < h else cv2.INTER_LINEAR)
        yield i, small, rgb, times, t


def _fit_width(img: np.ndarray, width: int) -> np.ndarray:
    import cv2

    h, w = img.shape[:2]
    if w <= width:
        return img
    return cv2.resize(img, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_LINEAR)


# --- video files -----------------------------------------------------------------------------


def open_video(path: str):
    """Open a video file for decoding: (container, video stream). One decode thread: with N
    workers on N cores, more threads per decoder only add contention."""
    import av

    try:
        size = os.path.getsize(path)
    except OSError as e:
        raise InputError("not-found", f"cannot read file: {e.strerror}") from None
    if size == 0:
        raise InputError("empty", "zero-length file")
    try:
        container = av.open(path, metadata_errors="ignore")
    except Exception as e:  # FFmpeg raises many kinds of av.error.* here
        raise InputError("unreadable", f"not a readable media file ({_short(e)})") from None
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["no streams"]
        container.close()
        raise InputError("no-video", f"no video stream (has: {', '.join(kinds)})")
    stream = container.streams.video[0]
    if stream.codec_context is None or not stream.codec_context.width:
        container.close()
        raise InputError("unsupported", f"cannot decode video codec "
                         f"{getattr(stream.codec_context, 'name', '?')}")
    stream.thread_type = "SLICE"
    stream.codec_context.thread_count = 1
    return container, stream


def _short(e: Exception) -> str:
    """FFmpeg's own words without errno and file name (the failure record names the input)."""
    text = getattr(e, "strerror", None) or str(e)
    return text.splitlines()[0][:200] if text else type(e).__name__


def _file_frames(item: SourceItem, cfg: ClipConfig, mode: str, stats: ClipStats):
    """Frames of a video file, made by a decode thread: see :func:`_decode_worker`."""
    container, stream = open_video(item.path)
    rate = stream.average_rate or stream.guessed_rate or item.fps or 25
    stats.source_fps = float(rate)
    q: queue.Queue = queue.Queue(maxsize=8)  # decoded frames in flight (1.4 MB each at 720p)
    stop = threading.Event()
    worker = threading.Thread(target=_decode_worker, daemon=True,
                              args=(container, stream, item, cfg, mode, stats, q, stop))
    worker.start()
    try:
        while True:
            got = q.get()
            if got is None:
                break
            if isinstance(got, BaseException):
                raise got
            yield got
    finally:
        stop.set()
        while worker.is_alive():  # unblock a put() so the thread can see `stop`
            try:
                q.get_nowait()
            except queue.Empty:
                worker.join(0.05)
        container.close()


def _decode_worker(container, stream, item, cfg, mode, stats, q, stop):
    """Decode thread: puts (src_index, frame | None, frame | None, out times, t) tuples on
    ``q`` (the frame where the detector, resp. the output, needs it), then None; an
    InputError instead when decoding fails."""
    try:
        for got in _decode(container, stream, item, cfg, mode, stats):
            if stop.is_set():
                return
            q.put(got)
        stats.extra["decode_thread_cpu_s"] = time.thread_time()  # for vtk bench shard
        q.put(None)
    except BaseException as e:  # hand every failure to the consumer thread
        if not isinstance(e, InputError):
            e = InputError("decode-error", f"decoding failed at {stats.end:.2f} s "
                           f"({_short(e)})")
        q.put(e)
    finally:
        stats.extra["decode_thread_cpu_s"] = time.thread_time()


def _decode(container, stream, item: SourceItem, cfg: ClipConfig, mode: str, stats: ClipStats):
    import av

    fps = stats.source_fps
    frame_dur = 1.0 / fps
    tb = stream.time_base
    t_origin = float(stream.start_time * tb) if stream.start_time is not None and tb else 0.0
    start = item.start or 0.0
    if item.start:
        # Seek to the keyframe before `start`; frames before it are decoded and dropped.
        container.seek(int((start + t_origin) / tb), stream=stream, backward=True)
    resampler = None
    index, first_bad = -1, 0.0
    for packet in container.demux(stream):
        try:
            decoded = packet.decode()
        except av.error.InvalidDataError as e:
            stats.bad_packets += 1
            if stats.bad_packets == 1:
                first_bad = stats.end
            if stats.bad_packets > MAX_BAD_PACKETS:
                raise InputError("decode-error", f"{stats.bad_packets} corrupt packets, the "
                                 f"first at {first_bad:.2f} s ({_short(e)})") from None
            continue
        for frame in decoded:
            index += 1
            t = (float(frame.time) - t_origin) if frame.time is not None else index * frame_dur
            if t < start - frame_dur / 2:
                continue
            if item.end is not None and t >= item.end - 1e-6:
                return
            if resampler is None:
                resampler = _Resampler(cfg.fps, t if not item.start else start, item.end)
                first_t = t
            stats.frames_decoded += 1
            stats.duration = t + frame_dur - first_t
            stats.end = t + frame_dur
            # Only decoding happens here: the consumer thread makes the detector's copy and
            # the output frame from the av.VideoFrame, which balances the two threads
            # (decoding a 720p frame costs about what copy + detect + resize + encode do).
            times = resampler.copies(t, frame_dur)
            yield index, frame if mode == "scenes" else None, frame if times else None, times, t
    if item.start is not None and stats.frames_decoded == 0:
        raise InputError("bad-timestamps", f"no frames in [{item.start}, {item.end}] s")
    expected = _video_duration(stream)
    if expected and stats.frames_decoded:
        want = min(expected, item.end) if item.end is not None else expected
        got = stats.end
        if got < want - max(0.5, 0.05 * want):  # the file ends before its header says
            raise InputError("truncated", f"video stops at {got:.2f} s of {want:.2f} s")


def _video_duration(stream) -> float | None:
    """Duration (s) the video stream itself promises, if it says. Never the container's: in
    MKV and WebM the video stream often states none, and the container's spans the audio
    too, which may run on after the last video frame."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    tag = (stream.metadata or {}).get("DURATION")  # Matroska's per-track tag, HH:MM:SS.nnn
    if tag:
        try:
            h, m, sec = tag.split(":")
            return int(h) * 3600 + int(m) * 60 + float(sec)
        except ValueError:
            return None
    return None


def _orientation(frame) -> tuple[bool, bool, bool]:
    """(transpose, flip left-right, flip up-down) that turn a decoded frame upright, from its
    display matrix (a phone stores portrait video as landscape plus this matrix). The
    matrix maps a decoded point (x, y) to (a x + c y, b x + d y), a b c d in 16.16 fixed
    point; only quarter turns and flips are applied, as FFmpeg's own autorotate does without
    its rotate filter. Builds whose frames carry no side data are left as stored."""
    try:
        data = frame.side_data.get("DISPLAYMATRIX")
    except Exception:  # a PyAV too old for frame side data by name
        data = None
    if data is None:
        return False, False, False
    a, b, _, c, d = np.frombuffer(bytes(data), np.int32, count=5) / 65536.0
    if abs(a) < 0.5 and abs(d) < 0.5 and abs(b) > 0.5 and abs(c) > 0.5:
        return True, c < 0, b < 0  # x' = c y, y' = b x: transpose, then flip by the signs
    if abs(b) < 0.5 and abs(c) < 0.5 and abs(a) > 0.5 and abs(d) > 0.5:
        return False, a < 0, d < 0
    return False, False, False  # not a quarter turn


def _upright(rgb: np.ndarray, orient: tuple[bool, bool, bool]) -> np.ndarray:
    transpose, flip_lr, flip_ud = orient
    if not (transpose or flip_lr or flip_ud):
        return rgb
    if transpose:
        rgb = rgb.transpose(1, 0, 2)
    if flip_lr:
        rgb = rgb[:, ::-1]
    if flip_ud:
        rgb = rgb[::-1]
    return np.ascontiguousarray(rgb)


def _out_rgb(frame, short_side: int) -> np.ndarray:
    """An output frame: RGB, short side ``short_side``. swscale's bilinear widens its filter
    when shrinking (antialiased) and costs half of its "AREA" at 720p -> 224p.
    One swscale thread (see ``SWS_THREADS``)."""
    w, h = output_size(frame.width, frame.height, short_side)
    return frame.reformat(w, h, "rgb24", interpolation="BILINEAR",
                          threads=SWS_THREADS).to_ndarray()


def _small_bgr(frame, width: int) -> np.ndarray:
    """A ``width``-wide BGR copy for the detector. For yuv420p (nearly every file) the planes
    are resized with OpenCV straight from the decoder's buffers, before the colour conversion:
    converting the full-size frame first costs more than decoding it."""
    import cv2

    w, h = frame.width, frame.height
    sw = min(width, w) // 2 * 2
    sh = max(2, round(h * sw / w) // 2 * 2)
    if frame.format.name not in ("yuv420p", "yuvj420p") or w % 2 or h % 2:
        return frame.reformat(sw, sh, "bgr24", threads=SWS_THREADS).to_ndarray()
    # Bilinear, as PySceneDetect's own downscale: the detector was tuned on such copies
    # (and it is five times cheaper than INTER_AREA at 720p).
    lin = cv2.INTER_LINEAR
    i420 = np.empty((sh * 3 // 2, sw), np.uint8)  # Y, then U and V packed row after row
    i420[:sh] = cv2.resize(_plane(frame, 0, h, w), (sw, sh), interpolation=lin)
    chroma = i420[sh:].reshape(2, -1)
    for k in (1, 2):
        chroma[k - 1] = cv2.resize(_plane(frame, k, h // 2, w // 2), (sw // 2, sh // 2),
                                   interpolation=lin).ravel()
    return cv2.cvtColor(i420, cv2.COLOR_YUV2BGR_I420)


def _plane(frame, k: int, h: int, w: int) -> np.ndarray:
    """Plane ``k`` of a frame as an h x w view of the decoder's buffer (rows padded to
    ``line_size``): no copy."""
    p = frame.planes[k]
    return np.frombuffer(p, np.uint8).reshape(-1, p.line_size)[:h, :w]


# --- encoding --------------------------------------------------------------------------------


def encode_mp4(frames: np.ndarray, fps: float, codec: str = "h264", crf: int | None = None) -> bytes:
    """Encode uint8 RGB frames (T x H x W x 3, H and W even) as an MP4 at ``fps``: H.264
    (libx264) or VP9 (libvpx-vp9), yuv420p, no audio, one frame per input frame. Returns the
    file's bytes (the moov atom comes last: ``+faststart`` needs a second pass over a real file,
    and every reader here gets the whole member anyway)."""
    import av
    import cv2

    if codec not in CODECS:
        raise ValueError(f"codec must be one of {sorted(CODECS)}, got {codec!r}")
    frames = np.asarray(frames)
    t, h, w = frames.shape[:3]
    if t == 0 or h % 2 or w % 2:
        raise ValueError(f"need at least one frame and even dimensions, got {frames.shape}")
    rate = Fraction(fps).limit_denominator(1001)
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as out:
        stream = out.add_stream(CODECS[codec], rate=rate)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.thread_count = 1
        stream.codec_context.time_base = 1 / rate
        if codec == "h264":
            stream.options = {"preset": "veryfast", "crf": str(crf or 23)}
        else:
            stream.options = {"deadline": "realtime", "cpu-used": "8", "crf": str(crf or 32),
                              "b": "0", "row-mt": "0"}
        for i, img in enumerate(frames):
            # Keep the encoder's input bit-exact: OpenCV's RGB -> I420 (BT.601, video range,
            # what decoders assume for untagged streams) and zeroed row padding. (x264's
            # mbtree in this build still varies a few bytes run to run; keys, order, json and
            # frame counts never do. mbtree=0 is exact but doubles small clips.)
            frame = _yuv420_frame(cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2YUV_I420),
                                  w, h)
            frame.pts = i
            frame.time_base = stream.codec_context.time_base
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buf.getvalue()


def _yuv420_frame(i420: np.ndarray, w: int, h: int):
    """An av.VideoFrame from an I420 buffer ((H * 3 / 2) x W), every byte of its planes set."""
    import av

    frame = av.VideoFrame(w, h, "yuv420p")
    y_size, c_size = w * h, (w // 2) * (h // 2)
    flat = i420.reshape(-1)
    parts = (flat[:y_size].reshape(h, w), flat[y_size:y_size + c_size].reshape(h // 2, w // 2),
             flat[y_size + c_size:].reshape(h // 2, w // 2))
    for plane, part in zip(frame.planes, parts):
        padded = np.zeros((plane.buffer_size // plane.line_size, plane.line_size), np.uint8)
        padded[:part.shape[0], :part.shape[1]] = part
        plane.update(padded)
    return frame
