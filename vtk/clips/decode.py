"""The decode stage of ``vtk.clips``: a source's frames as :class:`DecodedFrame` values.

For a video file a decode thread (PyAV and OpenCV release the GIL, so it runs beside the caller
on a second core) only decodes; the consumer (``vtk.clips.cut``) makes the detector's small copy
and the output frame from each ``av.VideoFrame``, which balances the two threads. In-memory
items (the synthetic world) are resized here, in the caller's thread. Both resample to the
output rate (:class:`_Resampler`). Output frames are turned upright by the source's display
matrix (:func:`_orientation`). Truncation is judged from the video stream's own duration only,
never the container's, which spans the audio too.
"""

from __future__ import annotations

import math
import os
import queue
import threading
import time
from typing import NamedTuple

import av
import cv2
import numpy as np

from vtk.clips.config import ClipConfig, ClipStats, InputError, output_size
from vtk.types import SourceItem

MAX_BAD_PACKETS = 16  # corrupt packets tolerated in one source before it counts as failed

# swscale on one thread: parallelism comes from the worker processes, and a frame whose
# reformatter owns slice threads deadlocks a forked child that frees it (its pthread condition
# waits for threads that do not exist there): DataLoader workers forked while such a frame was
# still garbage in the parent hung before their first sample.
SWS_THREADS = 1
# PyAV 16 and older have no ``threads`` option (their swscale contexts run on one thread)
_SWS_THREADS_OPTION = "threads" in (av.VideoFrame.reformat.__doc__ or "")


def _reformat(frame, *args, **kwargs):
    """``frame.reformat`` on ``SWS_THREADS`` threads where PyAV can say so."""
    if _SWS_THREADS_OPTION:
        kwargs["threads"] = SWS_THREADS
    return frame.reformat(*args, **kwargs)


class DecodedFrame(NamedTuple):
    """One source frame, as the decode stage hands it to the cutter.

    ``detect`` and ``output`` are ``av.VideoFrame`` values for video files (converted on the
    consumer's thread) and numpy arrays for in-memory items."""

    index: int  # source frame number, counted from where decoding began (a file: the stream
    # start, or the keyframe a range seeks to; in-memory frames: the array's first)
    detect: np.ndarray | av.VideoFrame | None  # what the scene detector sees; None: not "scenes"
    output: np.ndarray | av.VideoFrame | None  # the output frame; None when ``times`` is empty
    times: list[float]  # output frame times (source seconds) this frame shows, at cfg.fps
    t: float  # presentation time (source seconds) where this frame starts


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
    """:class:`DecodedFrame` values of an in-memory item (``detect`` a small BGR array, ``output``
    an RGB array at the output size)."""
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
        yield DecodedFrame(i, small, rgb, times, t)


def _fit_width(img: np.ndarray, width: int) -> np.ndarray:
    h, w = img.shape[:2]
    if w <= width:
        return img
    return cv2.resize(img, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_LINEAR)


# --- video files -----------------------------------------------------------------------------


def open_video(path: str):
    """Open a video file for decoding: (container, video stream). One decode thread: with N
    workers on N cores, more threads per decoder only add contention."""
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


def _file_frames(item: SourceItem, cfg: ClipConfig, mode: str, stats: ClipStats,
                 segment=None):
    """Frames of a video file, made by a decode thread: see :func:`_decode_worker`.
    ``segment`` (``vtk.clips.segments.Segment``): from its keyframe on, numbered and timed as
    in a pass over the whole file."""
    container, stream = open_video(item.path)
    rate = stream.average_rate or stream.guessed_rate or item.fps or 25
    stats.source_fps = float(rate)
    q: queue.Queue = queue.Queue(maxsize=8)  # decoded frames in flight (1.4 MB each at 720p)
    stop = threading.Event()
    worker = threading.Thread(target=_decode_worker, daemon=True,
                              args=(container, stream, item, cfg, mode, stats, q, stop, segment))
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


def _decode_worker(container, stream, item, cfg, mode, stats, q, stop, segment=None):
    """Decode thread: puts :class:`DecodedFrame` values on ``q`` (``detect`` and ``output`` the
    av.VideoFrame itself, where needed), then None; an InputError instead when decoding
    fails."""
    try:
        for got in _decode(container, stream, item, cfg, mode, stats, segment):
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


def _decode(container, stream, item: SourceItem, cfg: ClipConfig, mode: str, stats: ClipStats,
            segment=None):
    fps = stats.source_fps
    frame_dur = 1.0 / fps
    tb = stream.time_base
    t_origin = float(stream.start_time * tb) if stream.start_time is not None and tb else 0.0
    start = item.start or 0.0
    if item.start:
        # Seek to the keyframe before `start`; frames before it are decoded and dropped.
        container.seek(int((start + t_origin) / tb), stream=stream, backward=True)
    resampler = None
    if segment is not None:  # a part of the file: its frames as the whole file's pass sees them
        container.seek(segment.warm_pts, stream=stream, backward=True)
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
            if segment is not None:  # numbered by its time (constant frame rate: the plan's)
                index = (frame.pts - segment.pts0) // segment.tick
                if index < segment.warm:  # a leading picture of an open GOP
                    continue
            t = (float(frame.time) - t_origin) if frame.time is not None else index * frame_dur
            if t < start - frame_dur / 2:
                continue
            if item.end is not None and t >= item.end - 1e-6:
                return
            if resampler is None:
                resampler = _Resampler(cfg.fps, t if not item.start else start, item.end)
                first_t = t
                if segment is not None:  # the whole file's output times, from this frame on
                    resampler = _Resampler(cfg.fps, segment.t0)
                    resampler.next_j = math.ceil((t - segment.t0) * cfg.fps - 1e-6)
            stats.frames_decoded += 1
            stats.duration = t + frame_dur - first_t
            stats.end = t + frame_dur
            # Only decoding happens here: the consumer thread makes the detector's copy and
            # the output frame from the av.VideoFrame, which balances the two threads
            # (decoding a 720p frame costs about what copy + detect + resize + encode do).
            times = resampler.copies(t, frame_dur)
            yield DecodedFrame(index, frame if mode == "scenes" else None,
                               frame if times else None, times, t)
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
    return _reformat(frame, w, h, "rgb24", interpolation="BILINEAR").to_ndarray()


def _small_bgr(frame, width: int) -> np.ndarray:
    """A ``width``-wide BGR copy for the detector. For yuv420p (nearly every file) the planes
    are resized with OpenCV straight from the decoder's buffers, before the colour conversion:
    converting the full-size frame first costs more than decoding it."""
    w, h = frame.width, frame.height
    sw = min(width, w) // 2 * 2
    sh = max(2, round(h * sw / w) // 2 * 2)
    if frame.format.name not in ("yuv420p", "yuvj420p") or w % 2 or h % 2:
        return _reformat(frame, sw, sh, "bgr24").to_ndarray()
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
