"""The encode stage of ``vtk.clips``: :func:`encode_mp4`, clip frames to MP4 bytes."""

from __future__ import annotations

import functools
import io
from fractions import Fraction

import av
import cv2
import numpy as np

CODECS = {"h264": "libx264", "vp9": "libvpx-vp9"}


def encode_mp4(frames: np.ndarray, fps: float, codec: str = "h264", crf: int | None = None,
               gop: int | None = None) -> bytes:
    """Encode uint8 RGB frames (T x H x W x 3, H and W even) as an MP4 at ``fps``: H.264
    (libx264) or VP9 (libvpx-vp9), yuv420p, no audio, one frame per input frame (constant
    frame rate), a keyframe at least every ``gop`` frames (None: the encoder's own choice,
    250 for x264). Returns the file's bytes (the moov atom comes last: ``+faststart`` needs a
    second pass over a real file, and every reader here gets the whole member anyway)."""
    if codec not in CODECS:
        raise ValueError(f"codec must be one of {sorted(CODECS)}, got {codec!r}")
    if gop is not None and (not isinstance(gop, int) or gop < 1):
        raise ValueError(f"gop must be a whole number of frames >= 1, got {gop!r}")
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
        if gop is not None:
            stream.codec_context.gop_size = gop  # x264's keyint, libvpx's kf_max_dist
        if codec == "h264":
            stream.options = {"preset": "veryfast", "crf": str(crf or 23)}
            if x264_asm():
                stream.options["x264-params"] = f"asm={x264_asm()}"
        else:
            stream.options = {"deadline": "realtime", "cpu-used": "8", "crf": str(crf or 32),
                              "b": "0", "row-mt": "0"}
        for i, img in enumerate(frames):
            # Keep the encoder's input bit-exact: OpenCV's RGB -> I420 (BT.601, video range,
            # what decoders assume for untagged streams) and zeroed row padding.
            frame = _yuv420_frame(cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2YUV_I420),
                                  w, h)
            frame.pts = i
            frame.time_base = stream.codec_context.time_base
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buf.getvalue()


@functools.cache
def x264_asm() -> str | None:
    """The instruction sets x264 may use here: what it detects on this CPU less AVX-512, as
    its ``asm`` parameter; None where the CPU has no AVX-512 (x264's own choice stands).

    Why: x264's AVX-512 macroblock-tree code (libx264 core 165, as bundled in PyAV's wheels)
    makes output that depends on what the process's heap held before: the same frames encoded
    twice in one process gave two different files once other allocations came and went (the
    caption models do that between clips), so two builds of one set differed in a few clips.
    Up to AVX2 the bytes depend on the frames only, and equal those of a machine without
    AVX-512. Read once per process from the capability line x264 logs when an encoder opens."""
    level = av.logging.get_level()
    av.logging.set_level(av.logging.INFO)
    try:
        with av.logging.Capture(local=True) as logs:
            ctx = av.CodecContext.create(CODECS["h264"], "w")
            ctx.width, ctx.height, ctx.pix_fmt = 16, 16, "yuv420p"
            ctx.time_base = Fraction(1, 25)
            ctx.open()
    finally:
        av.logging.set_level(level)
    for _, _, message in logs:
        if message.startswith("using cpu capabilities:"):
            names = message.split(":", 1)[1].split()
            if "AVX512" in names:
                return ",".join(n for n in names if n != "AVX512")
    return None


def _yuv420_frame(i420: np.ndarray, w: int, h: int):
    """An av.VideoFrame from an I420 buffer ((H * 3 / 2) x W), every byte of its planes set."""
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
