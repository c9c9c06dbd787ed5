"""Words for what moves in a real clip, from dense optical flow over the fine captioner's frames.

On real footage the offline fine captioner (``tagger``) names ImageNet objects frame by frame:
nouns, no verbs, so the fine caption had no temporal signal the middle frame lacks. The flow
between the frames the fine captioner saw (the same frames, at ``fine_fps``) gives the ``rules``
summariser the verbs: the camera pans or tilts, zooms in or out, something moves left or right,
the view is still, a cut happens.

How, per pair of consecutive frames (grey, scaled to ``WIDTH`` px wide):

1. OpenCV's Farneback dense flow (Farnebäck 2003, "Two-frame motion estimation based on
   polynomial expansion"): a flow vector per pixel, robust on the smooth, textured frames of
   films, at about 2 ms a pair at 160 px here.
2. The camera: a 4-parameter similarity model ``u = tx + a x - b y, v = ty + b x + a y`` (x, y
   from the frame centre, in widths) fitted by least squares, then refitted on the pixels it
   explains (residual below the median plus a margin), so that one moving object does not drag
   the camera estimate. ``tx, ty`` is the pan/tilt, ``a`` the zoom (relative scale change),
   ``b`` the roll. The content moving left means the camera pans right.
3. Objects: the residual flow after the camera is removed. Pixels moving faster than
   ``REGION_SPEED`` form a region when they cover 1-60% of the frame; its mean residual gives
   the direction, its centroid the place (left, middle, right).
4. A cut: the next frame is not the previous one moved: their grey-level histograms correlate
   below ``CUT_HIST``, or the flow-warped frame still differs by more than ``CUT_ERROR`` levels
   on average.

Rates are per second (the frames' times), in frame widths, so they do not depend on the
resolution or on ``fine_fps``. Thresholds were set on Big Buck Bunny's scenes and constructed
pans, zooms and stills of real frames (``tests/test_motion_captions.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

WIDTH = 160  # px: the flow's working width
PAN_SPEED = 0.03  # frame widths per second of camera translation to call it a pan / tilt
ZOOM_SPEED = 0.03  # relative scale change per second to call it a zoom
REGION_SPEED = 0.06  # frame widths per second of residual flow for a pixel to count as moving
REGION_SHARE = (0.01, 0.6)  # share of the frame a moving region covers
AGREE = 0.6  # share of the frame pairs that must agree on a direction
TEXTURE = 2e-4  # Shi-Tomasi min eigenvalue (7 px block) of a pixel whose flow is trusted
CUT_HIST = 0.5  # grey histogram correlation below this: a cut
CUT_ERROR = 40.0  # mean absolute grey difference after warping above this: a cut


@dataclass
class PairMotion:
    """The motion between two consecutive frames, per second (widths, relative scale)."""

    tx: float = 0.0  # content translation, widths/s (+ = to the right)
    ty: float = 0.0  # content translation, widths/s (+ = down)
    zoom: float = 0.0  # relative scale change per second (+ = content grows: zooming in)
    magnitude: float = 0.0  # mean flow magnitude, widths/s
    region: float = 0.0  # share of the frame moving against the camera
    region_dx: float = 0.0  # the region's mean residual flow, widths/s
    region_dy: float = 0.0
    region_x: float = 0.5  # the region's centroid, fraction of the width
    cut: bool = False


@dataclass
class ClipMotion:
    """What the flow says about a clip: the per-pair figures and the words for them."""

    pairs: list[PairMotion] = field(default_factory=list)
    words: list[str] = field(default_factory=list)  # e.g. ["the camera pans left"]

    @property
    def score(self) -> float:
        """Mean flow magnitude over the clip's pairs (frame widths per second), cuts left out."""
        m = [p.magnitude for p in self.pairs if not p.cut]
        return float(np.mean(m)) if m else 0.0

    @property
    def phrase(self) -> str:
        return join_words(self.words)


def join_words(words: Sequence[str]) -> str:
    if not words:
        return ""
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + " and " + words[-1]


def _grey(frame: np.ndarray, width: int) -> np.ndarray:
    import cv2

    h, w = frame.shape[:2]
    size = (width, max(8, round(h * width / w)))
    grey = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, size, interpolation=cv2.INTER_AREA)


def _fit_camera(flow: np.ndarray, xs: np.ndarray, ys: np.ndarray, keep: np.ndarray):
    """Least-squares similarity model over the pixels in ``keep``: (tx, ty, a, b)."""
    u, v = flow[..., 0][keep], flow[..., 1][keep]
    x, y = xs[keep], ys[keep]
    one, zero = np.ones_like(x), np.zeros_like(x)
    a_mat = np.concatenate([np.stack([one, zero, x, -y], 1), np.stack([zero, one, y, x], 1)])
    rhs = np.concatenate([u, v])
    params, *_ = np.linalg.lstsq(a_mat, rhs, rcond=None)
    return params


def pair_motion(prev: np.ndarray, nxt: np.ndarray, dt: float) -> PairMotion:
    """The motion from grey frame ``prev`` to ``nxt``, ``dt`` seconds apart."""
    import cv2

    h, w = prev.shape
    dt = max(dt, 1e-3)
    hist = [cv2.calcHist([g], [0], None, [32], [0, 256]) for g in (prev, nxt)]
    corr = float(cv2.compareHist(hist[0], hist[1], cv2.HISTCMP_CORREL))
    flow = cv2.calcOpticalFlowFarneback(prev, nxt, None, 0.5, 3, 15, 3, 5, 1.2, 0)
    flow = flow / w  # in widths
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    xs, ys = (xx - (w - 1) / 2) / w, (yy - (h - 1) / 2) / w
    # flow is unreliable on the border (pixels that leave the frame): leave a margin out
    inner = np.zeros((h, w), bool)
    mh, mw = max(1, h // 10), max(1, w // 10)
    inner[mh:h - mh, mw:w - mw] = True
    # and on flat or smooth areas (sky, a wall, fur out of focus) and along straight edges,
    # where the flow is ambiguous (the aperture problem) and stays near 0 whatever moves: only
    # pixels with texture in two directions (Shi-Tomasi's smaller eigenvalue) vote for the
    # camera and for moving regions
    eig = cv2.cornerMinEigenVal(prev, 7, 3)
    textured = inner & (eig > TEXTURE)
    if textured.sum() < 0.05 * inner.sum():
        textured = inner & (eig >= np.quantile(eig[inner], 0.8))
    inner = textured
    params = _fit_camera(flow, xs, ys, inner)
    for _ in range(2):  # refit on what the camera explains: a moving object is an outlier
        model_u = params[0] + params[2] * xs - params[3] * ys
        model_v = params[1] + params[3] * xs + params[2] * ys
        res = np.hypot(flow[..., 0] - model_u, flow[..., 1] - model_v)
        cut_at = np.median(res[inner]) + 0.004
        keep = inner & (res <= cut_at)
        if keep.sum() < 0.2 * inner.sum():
            break
        params = _fit_camera(flow, xs, ys, keep)
    tx, ty, a, _ = (float(p) for p in params)
    model_u = tx + a * xs - params[3] * ys
    model_v = ty + params[3] * xs + a * ys
    ru, rv = flow[..., 0] - model_u, flow[..., 1] - model_v
    speed = np.hypot(ru, rv) / dt
    moving = inner & (speed > REGION_SPEED)
    share = float(moving.sum() / inner.sum())
    # a cut: the next frame is not this one moved
    map_x, map_y = xx + flow[..., 0] * w, yy + flow[..., 1] * w
    warped = cv2.remap(nxt, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    error = float(np.abs(warped.astype(np.float32) - prev.astype(np.float32))[inner].mean())
    pm = PairMotion(tx=tx / dt, ty=ty / dt, zoom=a / dt,
                    magnitude=float(np.hypot(flow[..., 0], flow[..., 1])[inner].mean() / dt),
                    region=share, cut=corr < CUT_HIST or error > CUT_ERROR)
    if moving.any():
        pm.region_dx = float(ru[moving].mean() / dt)
        pm.region_dy = float(rv[moving].mean() / dt)
        pm.region_x = float((xx[moving].mean() + 0.5) / w)
    return pm


def _agreed(values: list[float], threshold: float) -> float:
    """The median of ``values`` when at least ``AGREE`` of them pass ``threshold`` with its sign,
    else 0."""
    if not values:
        return 0.0
    med = float(np.median(values))
    if abs(med) < threshold:
        return 0.0
    same = sum(1 for v in values if abs(v) >= threshold / 2 and (v > 0) == (med > 0))
    return med if same >= AGREE * len(values) else 0.0


def words_for(pairs: Sequence[PairMotion]) -> list[str]:
    """The phrases for a clip's pairs: camera first, then a moving region, or "still"."""
    words = []
    if any(p.cut for p in pairs):
        words.append("a cut happens")
    steady = [p for p in pairs if not p.cut]
    if not steady:
        return words
    tx = _agreed([p.tx for p in steady], PAN_SPEED)
    ty = _agreed([p.ty for p in steady], PAN_SPEED)
    zoom = _agreed([p.zoom for p in steady], ZOOM_SPEED)
    camera = []
    if zoom:
        camera.append("zooms in" if zoom > 0 else "zooms out")
    if tx and abs(tx) >= 0.5 * abs(ty):
        camera.append("pans left" if tx > 0 else "pans right")  # content right: camera left
    if ty and abs(ty) >= 0.5 * abs(tx):
        camera.append("tilts up" if ty > 0 else "tilts down")  # content down: camera up
    if camera:
        words.append("the camera " + join_words(camera))
    lo, hi = REGION_SHARE
    regions = [p for p in steady if lo <= p.region <= hi]
    if len(regions) >= AGREE * len(steady):
        dx = _agreed([p.region_dx for p in regions], REGION_SPEED / 2)
        dy = _agreed([p.region_dy for p in regions], REGION_SPEED / 2)
        x = float(np.mean([p.region_x for p in regions]))
        where = "on the left" if x < 0.36 else "on the right" if x > 0.64 else "in the middle"
        if dx and abs(dx) >= abs(dy):
            words.append(f"something {where} moves to the {'right' if dx > 0 else 'left'}")
        elif dy:
            words.append(f"something {where} moves {'down' if dy > 0 else 'up'}")
        else:
            words.append(f"something {where} moves")
    if not camera and not any(w.startswith("something") for w in words):
        words.append("the view is still")
    return words


def clip_motion(frames: np.ndarray, times: Sequence[float], width: int = WIDTH) -> ClipMotion:
    """The motion of a clip from its frames (N x H x W x 3 uint8, RGB) at ``times`` (s)."""
    frames = np.asarray(frames)
    if len(frames) < 2:
        return ClipMotion(words=["the view is still"])
    width = min(width, frames.shape[2])
    grey = [_grey(f, width) for f in frames]
    pairs = [pair_motion(grey[k], grey[k + 1], float(times[k + 1]) - float(times[k]))
             for k in range(len(grey) - 1)]
    return ClipMotion(pairs=pairs, words=words_for(pairs))
