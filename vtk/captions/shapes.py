"""``shapes``: a pixel captioner for worlds of flat coloured shapes on a grey background.

From each frame it finds the objects as connected components of saturated pixels (the
background is grey and unsaturated, however textured or noisy) and names, per object:
- colour: the nearest named hue (the median colour of the component's pixels);
- shape: circle, square or triangle from rotation-invariant features: the normalised 3rd and
  4th complex moments (a triangle has 3-fold symmetry, so only its 3rd moment survives; a
  square only its 4th; a circle neither) and how much of its enclosing circle it fills;
- size: small or large from its radius relative to the frame;
- position: a cell of a 3 x 3 grid ("in the top left", "in the centre", ...);
- orientation: the angle of the symmetric moment (mod 120 degrees for a triangle, 90 for a
  square), which is what lets the summariser see spinning.

It reads pixels only. ``detect`` returns the structured objects (what the ``rules`` summariser
matches across frames); ``caption`` turns them into one sentence per frame.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from vtk.captions.base import check_frames

# Named hues in degrees (HSV hue of the pure colour). Nearest hue wins; grey never gets here.
HUES = {
    "red": 0.0, "orange": 29.0, "yellow": 54.0, "green": 128.0, "cyan": 180.0,
    "blue": 227.0, "purple": 279.0, "pink": 325.0,
}
# Prototype features (|C3| norm, |C4| norm, enclosing-circle fill) of each shape, measured on
# rendered shapes; a component is the shape whose prototype is nearest.
PROTOTYPES = {
    "circle": (0.02, 0.02, 0.89),
    "square": (0.02, 0.43, 0.65),
    "triangle": (0.66, 0.06, 0.46),
}
# Radius from area for each shape: area = k * r^2 with r the circumradius (squares in this
# world have half-side 0.85 r, so area 2.89 r^2; an equilateral triangle 1.299 r^2).
AREA_PER_R2 = {"circle": math.pi, "square": 2.89, "triangle": 1.299}
LARGE_RADIUS = 0.126  # fraction of the frame side between "small" (~0.10) and "large" (~0.16)
SATURATION = 40  # max - min over RGB (0..255) above which a pixel belongs to an object
MAX_SIDE = 128  # frames with a larger shorter side are downscaled before detection
MIN_AREA_FRACTION = 0.001  # smaller components are noise (video compression speckle)


@dataclass(frozen=True)
class Obj:
    """One object in one frame. x, y: centre as fractions of width/height (0 = left/top);
    r: circumradius as a fraction of the shorter side; angle: radians (mod 2pi/3 for a
    triangle, pi/2 for a square, None for a circle); area: pixels."""

    colour: str
    shape: str
    size: str
    x: float
    y: float
    r: float
    angle: float | None
    area: int
    clipped: bool  # touches the frame border (shape and size less certain)

    @property
    def position(self) -> str:
        return position_words(self.x, self.y)

    def phrase(self) -> str:
        return f"a {self.size} {self.colour} {self.shape}"

    def to_dict(self) -> dict:
        return asdict(self)


def position_words(x: float, y: float) -> str:
    row = "top" if y < 1 / 3 else "bottom" if y > 2 / 3 else "middle"
    col = "left" if x < 1 / 3 else "right" if x > 2 / 3 else "centre"
    if row == "middle" and col == "centre":
        return "in the centre"
    if row == "middle":
        return f"on the {col}"
    if col == "centre":
        return f"at the {row}"
    return f"in the {row} {col}"


def colour_name(rgb: np.ndarray) -> str:
    """Nearest named hue of an RGB triple (0..255)."""
    r, g, b = (float(v) for v in rgb)
    mx, mn = max(r, g, b), min(r, g, b)
    d = max(mx - mn, 1e-6)
    if mx == r:
        hue = 60 * (((g - b) / d) % 6)
    elif mx == g:
        hue = 60 * ((b - r) / d + 2)
    else:
        hue = 60 * ((r - g) / d + 4)
    return min(HUES, key=lambda n: min(abs(hue - HUES[n]), 360 - abs(hue - HUES[n])))


def _classify(xs: np.ndarray, ys: np.ndarray) -> tuple[str, float | None, float]:
    """(shape, angle, enclosing-circle fill) of one component's pixel coordinates."""
    z = (xs - xs.mean()) + 1j * (ys - ys.mean())
    mag = np.abs(z)
    c3, c4 = (z**3).sum(), (z**4).sum()
    m3 = abs(c3) / max((mag**3).sum(), 1e-9)
    m4 = abs(c4) / max((mag**4).sum(), 1e-9)
    # pixel centres underestimate the extent by half a pixel
    fill = len(xs) / (math.pi * (mag.max() + 0.5) ** 2)
    feats = np.array([m3, m4, fill])
    shape = min(PROTOTYPES, key=lambda s: float(((feats - PROTOTYPES[s]) ** 2).sum()))
    angle = None
    if shape == "triangle":
        angle = float(np.angle(c3) / 3) % (2 * math.pi / 3)
    elif shape == "square":
        angle = float(np.angle(c4) / 4) % (math.pi / 2)
    return shape, angle, fill


def detect_frame(frame: np.ndarray, saturation: int = SATURATION) -> list[Obj]:
    """The objects in one H x W x 3 uint8 frame, largest first."""
    import cv2

    h, w, _ = frame.shape
    if min(h, w) > MAX_SIDE:  # big frames say nothing more about flat shapes: shrink first
        scale = MAX_SIDE / min(h, w)
        frame = cv2.resize(frame, (round(w * scale), round(h * scale)),
                           interpolation=cv2.INTER_AREA)
        h, w, _ = frame.shape
    f = frame.astype(np.int16)
    mask = ((f.max(-1) - f.min(-1)) > saturation).astype(np.uint8)
    n, labels, stats, cents = cv2.connectedComponentsWithStats(mask, connectivity=8)
    side = min(h, w)
    min_area = max(3, int(MIN_AREA_FRACTION * h * w))
    objs = []
    for k in np.argsort(-stats[1:, cv2.CC_STAT_AREA]) + 1:
        area = int(stats[k, cv2.CC_STAT_AREA])
        if area < min_area:
            break
        ys, xs = np.nonzero(labels == k)
        shape, angle, _ = _classify(xs.astype(float), ys.astype(float))
        colour = colour_name(np.median(f[ys, xs], axis=0))
        r = math.sqrt(area / AREA_PER_R2[shape]) / side
        x0, y0, bw, bh = (int(v) for v in stats[k, :4])
        objs.append(Obj(
            colour=colour, shape=shape, size="large" if r > LARGE_RADIUS else "small",
            x=float(cents[k, 0] + 0.5) / w, y=float(cents[k, 1] + 0.5) / h, r=r, angle=angle,
            area=area, clipped=x0 == 0 or y0 == 0 or x0 + bw == w or y0 + bh == h,
        ))
    return objs


def frame_text(objs: list[Obj]) -> str:
    """'a small red circle in the top left' (objects joined with 'and'); empty frames too."""
    if not objs:
        return "an empty grey background"
    return " and ".join(f"{o.phrase()} {o.position}" for o in objs)


class ShapesCaptioner:
    name = "shapes"

    def __init__(self, device: str = "cpu"):
        pass  # pixel rules in numpy: the same on every device

    def detect(self, frames: np.ndarray) -> list[list[Obj]]:
        """frames N x H x W x 3 uint8 -> per frame, the objects found (largest first)."""
        return [detect_frame(f) for f in check_frames(frames)]

    text = staticmethod(frame_text)

    def caption(self, frames: np.ndarray) -> list[str]:
        return [frame_text(objs) for objs in self.detect(frames)]
