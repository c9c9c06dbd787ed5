"""Motion from decoded frames: dense optical flow (OpenCV's Farneback), and one score a clip.

Why flow and not a frame difference: a difference measures how much pixels change, which is
motion mixed with everything else that changes them: sensor noise and grain (the synthetic
world's frames carry fresh noise every frame), flicker, a fade, a shape that blinks or changes
colour in place, compression artefacts of a low bitrate. Flow measures displacement, in pixels,
and its direction is what the ``rules`` summariser needs to say that the camera pans or a
region moves left (``flow_fields`` is public for it). Farneback on frames scaled to a 64 px
short side costs about a millisecond a pair on one core (docs/curation.md), small next to
decoding the clip.

``motion_score`` is the mean flow magnitude over ``pairs`` evenly spaced pairs of consecutive
frames, in *short sides per second*: a clip whose content crosses the whole frame in one second
scores 1.0, whatever its resolution and frame rate; a still clip scores near 0.
"""

from __future__ import annotations

import numpy as np

ANALYSIS_SIDE = 64  # short side the frames are scaled to before the flow
PAIRS = 8  # frame pairs per clip


def gray_frames(frames, side: int = ANALYSIS_SIDE) -> list[np.ndarray]:
    """uint8 T x H x W x 3 (numpy or torch) -> T one-channel frames with short side ``side``.

    The channel is HSV's value, max(R, G, B), not luma: luma maps a saturated colour onto the
    grey of a mid-grey background (orange 240,130,30 is luma 152, the synthetic world's
    backgrounds 70-150), and the flow then loses the object; the value keeps every saturated
    colour bright against grey, and on natural footage it follows luma closely. Measured on
    synth:k400 (docs/curation.md): with luma a small orange square moving down scored 0.037,
    level with a still clip (0.035); with the value 0.244 against 0.031."""
    import cv2

    frames = np.asarray(frames)
    _, h, w, _ = frames.shape
    scale = side / min(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    # scaled first, then the channel max: numpy's max over a full-size frame cost 20x the flow
    return [cv2.resize(np.ascontiguousarray(f), size, interpolation=interp).max(axis=2)
            for f in frames]


def pair_indices(num_frames: int, pairs: int = PAIRS) -> list[int]:
    """First frames of up to ``pairs`` evenly spaced consecutive pairs (i, i + 1)."""
    if num_frames < 2:
        return []
    return sorted({int(i) for i in np.linspace(0, num_frames - 2, min(pairs, num_frames - 1))})


def flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Farneback flow from grey frame ``a`` to ``b``: float32 h x w x 2 (dx, dy) in pixels."""
    import cv2

    # pyramid of 3 levels at 0.5, window 15: the OpenCV tutorial's settings, which follow
    # displacements of a few pixels a level at this size
    return cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)


def flow_fields(frames, pairs: int = PAIRS, side: int = ANALYSIS_SIDE) -> list[np.ndarray]:
    """The flow of up to ``pairs`` evenly spaced consecutive frame pairs of a clip."""
    frames = np.asarray(frames)
    firsts = pair_indices(len(frames), pairs)
    used = sorted({j for i in firsts for j in (i, i + 1)})
    gray = dict(zip(used, gray_frames(frames[used], side))) if used else {}
    return [flow(gray[i], gray[i + 1]) for i in firsts]


def motion_score(frames, fps: float, pairs: int = PAIRS, side: int = ANALYSIS_SIDE) -> float:
    """Mean flow magnitude of a clip in short sides per second (module docstring); 0.0 for a
    clip of one frame."""
    fields = flow_fields(frames, pairs, side)
    if not fields:
        return 0.0
    mag = float(np.mean([np.linalg.norm(f, axis=2).mean() for f in fields]))
    return mag / side * float(fps)
