"""Summarisers: many frame captions in, one video caption out.

- ``rules``: deterministic. For plain frame texts (hf captioners) it drops repeats and says
  "first ..., then ..."; for the tagger's tags it names the labels that carry most probability
  over the clip, or "first ..., then ..." when the leading label changes. For the ``shapes`` captioner's structured objects it matches the
  objects across frames and says what changed, in the synthetic world's own words: direction of
  motion, back-and-forth, up-and-down, circling, zigzag, shaking, growing and shrinking, spinning,
  colour change, appearing, disappearing, blinking, staying still. All pure functions.
  On real video (tags or plain frame texts) it adds what the dense optical flow over the same
  frames shows (``vtk.captions.motion``): "a video showing a hare and a wood rabbit; the camera
  pans left", "...; something in the middle moves to the right", "...; the view is still",
  "...; a cut happens". The ImageNet tags are nouns; the flow gives the fine caption the verbs
  the middle frame cannot carry.
- ``hf:<id-or-path>``: any transformers text-generation or text2text model, prompted with the
  timed frame captions (``vtk.captions.hf.HFSummarizer``).
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from vtk.captions.shapes import LARGE_RADIUS, Obj
from vtk.registry import Registry

# ---------------------------------------------------------------------------------------------
# Plain texts


def merge_texts(texts: Sequence[str], max_parts: int = 4) -> str:
    """Drop consecutive repeats; one text stays as is, several become 'first A, then B and
    finally C' (at most ``max_parts`` parts, evenly chosen)."""
    parts = [t.strip() for i, t in enumerate(texts) if t.strip() and (i == 0 or t != texts[i - 1])]
    parts = [p for i, p in enumerate(parts) if i == 0 or p != parts[i - 1]]
    if not parts:
        return ""
    if len(parts) > max_parts:
        idx = np.linspace(0, len(parts) - 1, max_parts).round().astype(int)
        parts = [parts[i] for i in idx]
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        return f"first {parts[0]}, then {parts[1]}"
    middle = ", then ".join(parts[1:-1])
    return f"first {parts[0]}, then {middle}, and finally {parts[-1]}"


def summarize_tags(frames: Sequence[Sequence[tuple[str, float]]], max_tags: int = 3) -> str:
    """The fine caption from per-frame (label, probability) tags: the labels that carry most
    probability over the clip, or 'first A, then B' when the leading label of the first half
    differs from that of the second half."""
    def totals(part) -> Counter:
        c: Counter = Counter()
        for tags in part:
            for name, p in tags:
                c[name] += p
        return c

    score = totals(frames)
    if not score:
        return ""

    def article(w: str) -> str:
        vowel = w[:1].lower() in "aeiou" and not w.lower().startswith(("uni", "eu", "one"))
        return f"an {w}" if vowel else f"a {w}"

    best = score.most_common(1)[0][1]
    labels = [name for name, v in score.most_common(max_tags) if v >= 0.25 * best]
    half = (len(frames) + 1) // 2
    early, late = totals(frames[:half]), totals(frames[len(frames) // 2:])
    first, last = early.most_common(1)[0][0], late.most_common(1)[0][0]
    if len(frames) >= 2 and first != last:
        return f"a video showing first {article(first)}, then {article(last)}"
    if len(labels) == 1:
        return f"a video showing {article(labels[0])}"
    named = [article(w) for w in labels]
    return "a video showing " + ", ".join(named[:-1]) + f" and {named[-1]}"


# ---------------------------------------------------------------------------------------------
# Objects: tracking


def track_objects(frames: Sequence[Sequence[Obj]], gate: float = 0.3) -> list[list[Obj | None]]:
    """Match objects across frames: each track is a list (one entry per frame, None where the
    object was not seen). Greedy nearest match to each track's last position; a different
    shape or colour costs extra distance but is allowed (objects change colour)."""
    tracks: list[list[Obj | None]] = []
    for i, objs in enumerate(frames):
        free = list(range(len(tracks)))
        for t in tracks:
            t.append(None)
        for o in objs:
            best, best_cost = None, gate
            for k in free:
                last = next(p for p in reversed(tracks[k][:i]) if p is not None)
                cost = math.hypot(o.x - last.x, o.y - last.y)
                cost += 0.1 * (o.shape != last.shape) + 0.05 * (o.colour != last.colour)
                if cost < best_cost:
                    best, best_cost = k, cost
            if best is None:
                tracks.append([None] * i + [o])
            else:
                tracks[best][i] = o
                free.remove(best)
    tracks.sort(key=lambda t: (-sum(o is not None for o in t),
                               -max(o.area for o in t if o is not None)))
    return tracks


# ---------------------------------------------------------------------------------------------
# Objects: what one track does


def _reversals(v: np.ndarray, eps: float) -> tuple[int, list[int]]:
    """Direction changes of a 1-D sequence, ignoring wiggles smaller than ``eps``; also the
    signs (+1 up the axis, -1 down) of the successive monotone runs."""
    runs: list[int] = []
    ext = v[0]
    for x in v[1:]:
        d = x - ext
        if not runs:
            if abs(d) >= eps:
                runs.append(1 if d > 0 else -1)
                ext = x
            continue
        if (d > 0) == (runs[-1] > 0):
            ext = x  # continuing: extend the extreme
        elif abs(d) >= eps:
            runs.append(1 if d > 0 else -1)
            ext = x
    return max(len(runs) - 1, 0), runs


def _turning(xs: np.ndarray, ys: np.ndarray, min_step: float) -> tuple[float, float]:
    """Total signed turning of the heading (radians) and the fraction of turns that share the
    majority sign, over steps longer than ``min_step``."""
    dx, dy = np.diff(xs), np.diff(ys)
    keep = np.hypot(dx, dy) >= min_step
    heading = np.arctan2(dy[keep], dx[keep])
    if len(heading) < 3:
        return 0.0, 0.0
    turns = (np.diff(heading) + np.pi) % (2 * np.pi) - np.pi
    agree = max((turns > 0).mean(), (turns < 0).mean())
    return float(turns.sum()), float(agree)


def _circle_fit(xs: np.ndarray, ys: np.ndarray) -> float:
    """Relative RMS distance of points from their least-squares circle (0 = on a circle)."""
    a = np.stack([xs, ys, np.ones_like(xs)], 1)
    (d, e, f), *_ = np.linalg.lstsq(a, -(xs**2 + ys**2), rcond=None)
    cx, cy = -d / 2, -e / 2
    radius = math.sqrt(max(cx**2 + cy**2 - f, 1e-12))
    if radius < 0.06:  # smaller loops than this are jitter, not an orbit
        return math.inf
    return float(np.sqrt(np.mean((np.hypot(xs - cx, ys - cy) - radius) ** 2)) / radius)


def _direction(dx: float, dy: float) -> str:
    """A travel direction in words; y grows downwards in images."""
    horiz = "to the left" if dx < 0 else "to the right"
    vert = "up" if dy < 0 else "down"
    if abs(dy) < 0.45 * abs(dx):
        return f"moves {horiz}"
    if abs(dx) < 0.45 * abs(dy):
        return f"moves {vert}"
    return f"moves diagonally {vert}wards {horiz}"


def _motion(xs: np.ndarray, ys: np.ndarray) -> str | None:
    """The verb phrase for a trajectory (fractions of the frame), or None when still."""
    n = len(xs)
    if n < 2:
        return None
    rx, ry = float(np.ptp(xs)), float(np.ptp(ys))
    if max(rx, ry) < 0.035:
        return None
    t = np.linspace(0, 1, n)
    fit_x, fit_y = np.polyfit(t, xs, 1), np.polyfit(t, ys, 1)
    sx, sy = float(fit_x[0]), float(fit_y[0])  # displacement over the clip along the trend
    resid_x, resid_y = xs - np.polyval(fit_x, t), ys - np.polyval(fit_y, t)
    trend = math.hypot(sx, sy)
    wiggle = max(float(np.ptp(resid_x)), float(np.ptp(resid_y)))
    nx, runs_x = _reversals(xs, 0.03)
    ny, runs_y = _reversals(ys, 0.03)
    turn, agree = _turning(xs, ys, 0.01)
    if abs(turn) > 3.5 and agree >= 0.7 and min(rx, ry) > 0.06 and _circle_fit(xs, ys) < 0.25:
        return "moves in a circle"
    if trend > 0.12:
        # a zigzag wiggles across its direction of travel while it travels
        across = (-sy * resid_x + sx * resid_y) / trend
        along = (sx * resid_x + sy * resid_y) / trend
        if (float(np.ptp(across)) > 0.05 and float(np.ptp(along)) < 0.5 * trend
                and _reversals(across, 0.03)[0] >= 2):
            if abs(sx) >= abs(sy):
                return f"zigzags {'to the left' if sx < 0 else 'to the right'}"
            return f"zigzags {'up' if sy < 0 else 'down'}wards"
        if wiggle < 0.45 * trend:
            return _direction(sx, sy)
    if rx < 0.5 * ry and ry > 0.06:  # vertical movement around a place
        if ny == 1 and runs_y == [-1, 1]:
            return "jumps up and lands"
        if ny >= 2:
            return "bounces up and down"
    if ry < 0.5 * rx and rx > 0.06 and nx >= 2:
        return "swings left and right"
    if nx + ny >= 3:
        return "shakes"
    if trend > 0.05:
        return _direction(sx, sy)
    return "shakes" if max(rx, ry) > 0.05 else None


def _spin(objs: Sequence[Obj], shape: str) -> bool:
    """True when a square's or triangle's orientation turns steadily one way."""
    period = {"square": math.pi / 2, "triangle": 2 * math.pi / 3}.get(shape)
    angles = [o.angle for o in objs if o.shape == shape and o.angle is not None]
    if period is None or len(angles) < 3:
        return False
    steps = (np.diff(angles) + period / 2) % period - period / 2
    agree = max((steps > 0.02).mean(), (steps < -0.02).mean())
    return abs(float(steps.sum())) > 0.8 and agree >= 0.7


def _runs(seq: Sequence) -> list:
    return [v for i, v in enumerate(seq) if i == 0 or v != seq[i - 1]]


def describe_track(track: Sequence[Obj | None]) -> str:
    """One sentence for what one tracked object does, e.g. 'a small red circle moves to the
    left' or 'a large blue square spins'."""
    seen = [o for o in track if o is not None]
    if not seen:
        return ""
    shape = Counter(o.shape for o in seen).most_common(1)[0][0]
    size = "large" if float(np.median([o.r for o in seen])) > LARGE_RADIUS else "small"
    colours = _runs([o.colour for o in seen])
    # a colour held for a single frame between two equal ones is noise, not a change
    colours = _runs([c for i, c in enumerate(colours)
                     if not (0 < i < len(colours) - 1 and colours[i - 1] == colours[i + 1])])
    mid_colour = seen[len(seen) // 2].colour
    subject = f"a {size} {mid_colour} {shape}"

    vis = [o is not None for o in track]
    vis_runs = _runs(vis)
    verbs = []
    if len(vis_runs) == 2:
        verbs.append("appears" if vis_runs[0] is False else "disappears")
    elif len(vis_runs) >= 3:
        verbs.append("blinks on and off")
    if len(colours) >= 2:
        verbs.append("changes colour from " + " to ".join(colours))
    rs = np.log([o.r for o in seen])
    if len(rs) >= 3 and not verbs:
        growth = float(np.polyfit(np.linspace(0, 1, len(rs)), rs, 1)[0])
        if growth > math.log(1.6):
            verbs.append("grows")
        elif growth < -math.log(1.6):
            verbs.append("shrinks")
    if _spin(seen, shape):
        verbs.append("spins")
    if not verbs:  # a shape changing size or blinking also nudges its centre: not a motion
        motion = _motion(np.array([o.x for o in seen]), np.array([o.y for o in seen]))
        if motion:
            verbs.append(motion)
        elif vis_runs == [True]:
            verbs.append("stays still")
    if not verbs:
        verbs.append("stays still")
    return f"{subject} {' and '.join(verbs)}"


def summarize_objects(frames: Sequence[Sequence[Obj]]) -> str:
    """The fine caption of a clip from the per-frame objects of the ``shapes`` captioner."""
    tracks = track_objects(frames)
    if not tracks:
        return "an empty grey background"
    # describe every object seen in at least half of the frames (always the main one)
    keep = [t for i, t in enumerate(tracks)
            if i == 0 or sum(o is not None for o in t) * 2 >= len(frames)]
    return ", and ".join(describe_track(t) for t in keep)


# ---------------------------------------------------------------------------------------------
# Registry


class Summarizer(Protocol):
    name: str

    def summarize(self, texts: Sequence[str], times: Sequence[float],
                  objects: Sequence[Sequence[Obj]] | None = None) -> str:
        """Frame captions (and their times in seconds; structured objects when the captioner
        gives them) -> one video caption."""
        ...


class RulesSummarizer:
    name = "rules"

    def __init__(self, device: str = "cpu"):
        pass  # pure functions: the same on every device

    def summarize(self, texts, times, objects=None, frames=None) -> str:
        """``frames`` (the N x H x W x 3 frames the texts describe, optional): on real video,
        the motion the flow shows is added. The shapes captioner's objects carry their own
        motion words (tracks), so the flow is not needed there."""
        if objects is not None and not any(isinstance(x, tuple) for f in objects for x in f):
            return summarize_objects(objects)
        # the tagger's (label, probability) pairs, or plain frame texts
        base = merge_texts(texts) if objects is None else summarize_tags(objects)
        if frames is None or len(frames) < 2:
            return base
        from vtk.captions.motion import clip_motion

        phrase = clip_motion(frames, times).phrase
        return f"{base}; {phrase}" if base and phrase else base or phrase


SUMMARIZERS = Registry("summarizer")
SUMMARIZERS.add("rules", "vtk.captions.summarize:RulesSummarizer")
SUMMARIZERS.add("hf:", "vtk.captions.hf:HFSummarizer", package="transformers",
                param="<hub-id-or-local-path>")


@functools.cache
def get_summarizer(name: str, device: str | None = "auto") -> Summarizer:
    """The summariser called ``name`` ('rules', 'hf:<id-or-path>'), built once."""
    from vtk.captions.base import resolve_device

    return SUMMARIZERS.build(name, device=resolve_device(device))
