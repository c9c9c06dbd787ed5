"""Motion from the codec: the motion vectors of a clip's own H.264 stream, no optical flow.

An H.264 encoder has already measured how each block moved: a P-frame stores, for every
inter-coded block, the displacement to where it came from in an earlier frame. FFmpeg hands
them out as frame side data when asked (``flags2=+export_mvs``), and PyAV reads them. So a
clip's motion costs a decode of its reference frames and nothing more: non-reference B-frames
are not decoded at all (``skip_frame=NONREF``), no frame is converted to RGB, no flow is
computed. NeMo Curator's motion filter and Cosmos-Curate's read the same vectors.

``vector_motion`` is the mean over the clip's P-frames of the area-weighted mean vector length
of their inter blocks, divided by how many frames back the reference lies (the previous I- or
P-frame: with x264's settings here a P-frame predicts from that one), in *short sides per
second*: the unit of ``vtk.curate.motion.motion_score`` (Farneback flow, ``motion-flow``), so
the two read alike: a still clip scores near 0, content that crosses the frame in a second 1.

Only the vectors' length counts. Intra-coded blocks carry none (new content, a cut) and are
left out. A stream without exported vectors (VP9 here: FFmpeg's VP9 decoder does not export
them) gives None: the caller falls back to the flow.
"""

from __future__ import annotations

import io
from typing import NamedTuple

import numpy as np

CODECS = ("h264",)  # streams whose decoder exports motion vectors (FFmpeg: h264, mpeg2/4)
_I, _P = 1, 2  # AVPictureType


class CodecMotion(NamedTuple):
    score: float | None  # short sides per second; None: the stream exports no vectors
    width: int
    height: int
    frames: int  # the frame count the container states


def vector_motion(mp4: bytes, fps: float | None = None) -> CodecMotion:
    """Mean motion of an MP4's video stream from its P-frames' motion vectors, in short sides
    per second (module docstring): 0.0 for a clip without P-frames, None for a stream whose
    decoder exports no vectors; with the stream's size and frame count. ``fps``: the clip's
    rate (default: the stream's)."""
    import av

    with av.open(io.BytesIO(mp4)) as container:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        shape = (ctx.width, ctx.height, int(stream.frames or 0))
        if ctx.name not in CODECS:
            return CodecMotion(None, *shape)
        ctx.options = {"flags2": "+export_mvs"}
        ctx.skip_frame = "NONREF"  # B-frames nothing refers to: never decoded
        ctx.thread_count = 1
        rate = float(fps or stream.average_rate or 0) or 8.0
        tick = 1.0 / (rate * float(stream.time_base))  # pts per frame (constant frame rate)
        start, last_ref, speeds = None, None, []
        for frame in container.decode(stream):
            if frame.pts is None:
                continue
            start = frame.pts if start is None else start
            index = round((frame.pts - start) / tick)
            kind = int(frame.pict_type)
            if kind == _P and last_ref is not None and index > last_ref:
                speed = _mean_length(frame.side_data.get("MOTION_VECTORS"))
                if speed is not None:
                    speeds.append(speed / (index - last_ref))
            if kind in (_I, _P):
                last_ref = index
    if not speeds:
        return CodecMotion(0.0, *shape)
    return CodecMotion(float(np.mean(speeds)) / (min(shape[:2]) or 1) * rate, *shape)


def _mean_length(vectors) -> float | None:
    """Area-weighted mean length (px) of a frame's forward vectors; None without any."""
    if vectors is None:
        return None
    a = vectors.to_ndarray()
    a = a[a["source"] < 0]  # predicted from an earlier frame
    if not len(a):
        return None
    scale = np.maximum(a["motion_scale"], 1).astype(np.float64)
    length = np.hypot(a["motion_x"] / scale, a["motion_y"] / scale)
    area = a["w"].astype(np.float64) * a["h"]
    return float((length * area).sum() / area.sum())
