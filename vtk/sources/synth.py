"""The synthetic world: coloured shapes doing actions that only motion defines.

A clip is one shape (circle, square or triangle; six colours; two sizes) on a textured, noisy,
unsaturated background. Its *action* (moving left, growing, blinking, orbiting, ...) shapes
the trajectory, but the state at the middle frame (position, size, colour, visibility) is drawn
from the same distribution for every action, so the middle frame alone never tells the action:
coarse captions (one frame) carry appearance, fine captions (many frames) carry motion.

Everything is rendered from scratch with numpy and is a pure function of (preset, seed, index).
Presets mirror the study's data: ``train`` (the training corpus), Kinetics-style label sets
nested as ``k400 ⊂ k600 ⊂ k700``, and five retrieval sets (``msrvtt``: one caption per clip,
``msvd``: several, ``lsmdc``: movie-description style with an anonymous actor, ``didemo`` and
``anet``: longer clips with consecutive events and paragraph queries). Each preset draws from
its own seed stream, so benchmarks never share a clip with a training corpus.

Spec syntax: ``synth:<preset>[?n=2000&seed=1&size=64&frames=16&fps=8]``; ``synth-k400`` and
``k400`` name the same preset.

Noisy data (the training corpus only): ``synth:train?noise=0.3&dups=0.1`` makes exactly
``round(0.3 n)`` clips carry a caption that belongs to another clip of the corpus (the captioners
are shown the other clip's pixels, as a web caption written for another video) and plants
exactly ``round(0.1 n)`` near-duplicates (a clean clip re-rendered smaller, rescaled, with
another gain and grain). Rounding is half up. The other clips are the clean corpus's, pixel for
pixel, so a noisy corpus and its clean twin differ only where the noise is. What was planted
rides in the truth (``synth.noise``), for measuring a filter; training never reads it.
"""

from __future__ import annotations

import functools
import math
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from urllib.parse import parse_qsl

import numpy as np

from vtk.errors import VtkError
from vtk.types import SourceItem

# ---------------------------------------------------------------------------------------------
# Vocabulary: what exists in the world and the generator's own words for it.

COLOURS = {  # name -> RGB; saturated hues, far from the unsaturated background
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 90, 230),
    "yellow": (230, 210, 40),
    "purple": (150, 60, 200),
    "orange": (240, 130, 30),
}
SHAPES = ("circle", "square", "triangle")
SIZES = {"small": 0.10, "large": 0.16}  # radius as a fraction of the frame side

K400_ACTIONS = (
    "moving left", "moving right", "moving up", "moving down", "growing", "shrinking",
    "blinking", "changing colour", "spinning", "bouncing", "orbiting", "standing still",
)
K600_ACTIONS = K400_ACTIONS + (
    "jumping", "swinging", "moving diagonally up", "moving diagonally down",
)
K700_ACTIONS = K600_ACTIONS + ("zigzagging", "shaking", "appearing", "disappearing")
ACTIONS = K700_ACTIONS

# Paraphrases of each action as a verb phrase; the first is the canonical one.
PHRASES = {
    "moving left": ["moves to the left", "slides left", "travels leftwards", "goes left"],
    "moving right": ["moves to the right", "slides right", "travels rightwards", "goes right"],
    "moving up": ["moves up", "rises", "travels upwards", "goes up"],
    "moving down": ["moves down", "sinks", "travels downwards", "goes down"],
    "growing": ["grows", "gets bigger", "expands", "becomes larger"],
    "shrinking": ["shrinks", "gets smaller", "contracts", "becomes smaller"],
    "blinking": ["blinks", "flickers on and off", "flashes", "keeps disappearing and reappearing"],
    "changing colour": ["changes colour", "switches colour", "turns another colour",
                        "shifts its colour"],
    "spinning": ["spins", "rotates", "turns around in place", "twirls"],
    "bouncing": ["bounces", "bounces up and down", "hops up and down repeatedly",
                 "bobs up and down"],
    "orbiting": ["moves in a circle", "orbits", "circles around", "goes round in a loop"],
    "standing still": ["stays still", "does not move", "stands still", "remains in place"],
    "jumping": ["jumps", "jumps up and lands", "leaps up and comes back down", "hops once"],
    "swinging": ["swings left and right", "sways from side to side", "moves back and forth",
                 "rocks side to side"],
    "moving diagonally up": ["moves diagonally upwards", "climbs at a slant",
                             "rises diagonally", "goes up at an angle"],
    "moving diagonally down": ["moves diagonally downwards", "descends at a slant",
                               "drops diagonally", "goes down at an angle"],
    "zigzagging": ["zigzags", "moves in a zigzag", "weaves up and down as it travels",
                   "follows a zigzag path"],
    "shaking": ["shakes", "jitters", "trembles", "wobbles in place"],
    "appearing": ["appears", "shows up", "comes into view", "pops into view"],
    "disappearing": ["disappears", "vanishes", "goes out of view", "fades away"],
}
assert set(PHRASES) == set(ACTIONS)


@dataclass(frozen=True)
class Preset:
    name: str
    actions: tuple[str, ...]
    n: int
    frames: int = 16
    fps: float = 8.0
    size: int = 64
    events: tuple[int, int] = (1, 1)  # min, max consecutive events per clip
    task: str = "train"  # train | classification | retrieval
    texts: str = "none"  # none | caption | captions | anonymous | paragraph
    noise: float = 0.0  # share of clips whose caption belongs to another clip (train only)
    dups: float = 0.0  # share of clips that are near-duplicates of a clean clip (train only)


PRESETS = {
    p.name: p
    for p in (
        Preset("train", ACTIONS, 4000),
        Preset("k400", K400_ACTIONS, 300, task="classification"),
        Preset("k600", K600_ACTIONS, 320, task="classification"),
        Preset("k700", K700_ACTIONS, 400, task="classification"),
        Preset("msrvtt", ACTIONS, 300, task="retrieval", texts="caption"),
        Preset("msvd", ACTIONS, 200, task="retrieval", texts="captions"),
        Preset("lsmdc", ACTIONS, 300, task="retrieval", texts="anonymous"),
        Preset("didemo", ACTIONS, 200, frames=32, events=(2, 3), task="retrieval",
               texts="paragraph"),
        Preset("anet", ACTIONS, 200, frames=48, events=(3, 4), task="retrieval",
               texts="paragraph"),
    )
}
BENCHMARKS = tuple(f"synth-{name}" for name in PRESETS if name != "train")


def class_names(preset: str) -> list[str]:
    """The label set of a classification preset (``k400``/``synth-k400``), in index order."""
    return list(get_preset(preset).actions)


def get_preset(name: str) -> Preset:
    key = name.removeprefix("synth:").removeprefix("synth-")
    if key not in PRESETS:
        known = ", ".join(PRESETS)
        raise VtkError(f"synth:{name}: unknown synthetic preset (known: {known})")
    return PRESETS[key]


def parse_spec(spec: str) -> tuple[Preset, int]:
    """``synth:k400?n=50&seed=2&size=32`` -> (Preset with overrides, seed)."""
    body = spec.removeprefix("synth:")
    name, _, query = body.partition("?")
    preset = get_preset(name or "train")
    seed = 0
    overrides: dict = {}
    for key, value in parse_qsl(query, strict_parsing=bool(query)):
        try:
            if key == "seed":
                seed = int(value)
            elif key in ("n", "frames", "size"):
                overrides[key] = int(value)
            elif key in ("fps", "noise", "dups"):
                overrides[key] = float(value)
            else:
                raise KeyError(key)
        except (ValueError, KeyError):
            raise VtkError(f"{spec}: bad parameter {key}={value!r} "
                           f"(known: n, seed, size, frames, fps, noise, dups)") from None
    preset = replace(preset, **overrides)
    if preset.n < 1 or preset.frames < 4 or preset.size < 16:
        raise VtkError(f"{spec}: need n >= 1, frames >= 4 and size >= 16")
    if preset.noise or preset.dups:
        if preset.task != "train":
            raise VtkError(f"{spec}: noise and dups apply to the training corpus only (a "
                           f"benchmark's texts are its ground truth)")
        if not (0 <= preset.noise < 1 and 0 <= preset.dups < 1):
            raise VtkError(f"{spec}: noise and dups are shares in [0, 1)")
        swapped, dups = noise_counts(preset)
        if swapped + dups >= preset.n or (swapped and preset.n < 2):
            raise VtkError(f"{spec}: {swapped} swapped captions and {dups} duplicates leave no "
                           f"clean clip of {preset.n}")
    return preset, seed


# ---------------------------------------------------------------------------------------------
# Trajectories. Time s runs over [-m/(T-1), (T-1-m)/(T-1)] with the middle frame m = T // 2 at
# s = 0, so every action's state at s = 0 is exactly the sampled middle state.


@dataclass
class State:
    x: float  # centre, fraction of width (0 = left)
    y: float  # centre, fraction of height (0 = top)
    r: float  # radius, fraction of the frame side
    angle: float  # radians
    colour: str
    visible: bool = True


def _trajectory(action: str, s: np.ndarray, mid: State, rng: np.random.Generator) -> list[State]:
    """The per-frame states of one action around the middle state ``mid``."""
    n = len(s)
    x = np.full(n, mid.x)
    y = np.full(n, mid.y)
    r = np.full(n, mid.r)
    ang = np.full(n, mid.angle)
    vis = np.ones(n, bool)
    colours = [mid.colour] * n
    v = rng.uniform(0.30, 0.42)  # distance travelled over the clip, fraction of the frame
    side = rng.choice([-1.0, 1.0])
    if action == "moving left":
        x = mid.x - v * s
    elif action == "moving right":
        x = mid.x + v * s
    elif action == "moving up":
        y = mid.y - v * s
    elif action == "moving down":
        y = mid.y + v * s
    elif action == "moving diagonally up":
        x, y = mid.x + side * v * 0.75 * s, mid.y - v * 0.75 * s
    elif action == "moving diagonally down":
        x, y = mid.x + side * v * 0.75 * s, mid.y + v * 0.75 * s
    elif action == "growing":
        r = mid.r * np.exp(np.log(2.6) * s)
    elif action == "shrinking":
        r = mid.r * np.exp(-np.log(2.6) * s)
    elif action == "blinking":
        period = int(rng.integers(2, 4))
        k = np.round(s * (n - 1)).astype(int)
        vis = (k // period) % 2 == 0  # visible at k = 0, the middle frame
    elif action == "changing colour":
        others = [c for c in COLOURS if c != mid.colour]
        before, after = rng.choice(others, 2, replace=False)
        k = np.round(s * (n - 1)).astype(int)
        lo, hi = -int(rng.integers(2, 5)), int(rng.integers(2, 5))
        colours = [str(before) if ki < lo else str(after) if ki > hi else mid.colour for ki in k]
    elif action == "spinning":
        ang = mid.angle + side * rng.uniform(3.0, 4.0) * s
    elif action == "bouncing":
        amp, cycles = rng.uniform(0.12, 0.18), rng.uniform(1.6, 2.2)
        y = mid.y - amp * np.abs(np.sin(np.pi * cycles * s + np.pi / 2)) + amp
    elif action == "swinging":
        amp, cycles = rng.uniform(0.14, 0.2), rng.uniform(0.9, 1.3)
        x = mid.x + amp * np.sin(2 * np.pi * cycles * s)
    elif action == "orbiting":
        rad, th0 = rng.uniform(0.09, 0.12), rng.uniform(0, 2 * np.pi)
        th = th0 + side * 2 * np.pi * rng.uniform(0.8, 1.0) * s
        x = mid.x + rad * (np.cos(th) - np.cos(th0))
        y = mid.y + rad * (np.sin(th) - np.sin(th0))
    elif action == "jumping":
        h, sv = rng.uniform(0.14, 0.2), rng.uniform(-0.08, 0.08)
        y = mid.y + h * (((s - sv) / 0.5) ** 2 - (sv / 0.5) ** 2)
    elif action == "zigzagging":
        amp, period = rng.uniform(0.06, 0.09), rng.uniform(0.28, 0.36)
        phase = (s / period) % 1.0
        tri = 4 * np.abs(phase - 0.5) - 1  # triangle wave in [-1, 1], 1 at s = 0
        x, y = mid.x + side * v * s, mid.y + amp * (tri - 1)
    elif action == "shaking":
        jitter = rng.uniform(-0.05, 0.05, size=(2, n))
        jitter[:, np.argmin(np.abs(s))] = 0
        x, y = mid.x + jitter[0], mid.y + jitter[1]
    elif action == "appearing":
        k = np.round(s * (n - 1)).astype(int)
        vis = k >= -int(rng.integers(1, max(2, n // 3)))
    elif action == "disappearing":
        k = np.round(s * (n - 1)).astype(int)
        vis = k <= int(rng.integers(1, max(2, n // 3)))
    elif action != "standing still":
        raise ValueError(action)
    return [
        State(float(x[i]), float(y[i]), float(r[i]), float(ang[i]), colours[i], bool(vis[i]))
        for i in range(n)
    ]


def _sample_mid(rng: np.random.Generator) -> tuple[str, str, State]:
    shape = str(rng.choice(SHAPES))
    size = str(rng.choice(list(SIZES)))
    colour = str(rng.choice(list(COLOURS)))
    r = SIZES[size] * rng.uniform(0.9, 1.1)
    mid = State(rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), r, rng.uniform(0, np.pi), colour)
    return shape, size, mid


# ---------------------------------------------------------------------------------------------
# Rendering


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A grey, unsaturated texture: base level + smooth gradient + fixed grain (H x W float)."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = rng.uniform(70, 150)
    gx, gy = rng.uniform(-30, 30, 2)
    grain = rng.normal(0, 6, (size, size))
    blobs = 10 * np.sin(2 * np.pi * (xx * rng.uniform(1, 3) + rng.uniform()))
    blobs *= np.cos(2 * np.pi * (yy * rng.uniform(1, 3) + rng.uniform()))
    return base + gx * (xx - 0.5) + gy * (yy - 0.5) + grain + blobs


def shape_mask(shape: str, st: State, size: int) -> np.ndarray:
    """Boolean H x W mask of one shape in state ``st`` on a ``size`` x ``size`` frame."""
    yy, xx = (np.mgrid[0:size, 0:size] + 0.5) / size
    dx, dy = xx - st.x, yy - st.y
    if shape == "circle":
        return dx * dx + dy * dy <= st.r**2
    c, s = np.cos(st.angle), np.sin(st.angle)
    u, v = c * dx + s * dy, -s * dx + c * dy
    if shape == "square":
        half = st.r * 0.85
        return (np.abs(u) <= half) & (np.abs(v) <= half)
    # equilateral triangle with circumradius r: inside all three edge half-planes
    inside = np.ones_like(u, bool)
    for k in range(3):
        a = np.pi / 2 + 2 * np.pi * k / 3  # outward normal of edge k (local)
        inside &= u * np.cos(a) + v * np.sin(a) <= st.r * 0.5
    return inside


def render(shape: str, states: list[State], size: int, rng: np.random.Generator) -> np.ndarray:
    """Frames T x size x size x 3 uint8 of one shape following ``states``."""
    bg = _background(rng, size)
    frames = np.empty((len(states), size, size, 3), np.uint8)
    for i, st in enumerate(states):
        img = np.repeat(bg[..., None], 3, axis=2) + rng.normal(0, 2.5, (size, size, 1))
        if st.visible:
            m = shape_mask(shape, st, size)
            img[m] = np.asarray(COLOURS[st.colour], float) + rng.normal(0, 4, (int(m.sum()), 3))
        frames[i] = np.clip(img, 0, 255).astype(np.uint8)
    return frames


# ---------------------------------------------------------------------------------------------
# Texts: the generator's grammar (ground truth for benchmarks; never shown to captioners)


def describe(action: str, shape: str, size: str, colour: str, rng: np.random.Generator,
             style: str = "caption", phrase: int | None = None) -> str:
    """One sentence for an action, e.g. 'a small red circle moves to the left'."""
    phrases = PHRASES[action]
    verb = phrases[int(rng.integers(len(phrases))) if phrase is None else phrase]
    if style == "anonymous":  # LSMDC style: the actor is "someone"/"something"
        who = str(rng.choice(["Something", "Someone's " + colour + " " + shape]))
        return f"{who} {verb}."
    return f"a {size} {colour} {shape} {verb}"


def make_clip(preset: Preset, seed: int, index: int) -> tuple[np.ndarray, dict]:
    """Render clip ``index`` of a preset: (frames T x H x W x 3 uint8, ground truth dict).

    Ground truth: ``action`` (the first event's), ``events`` (list of {action, start, end}
    frame ranges), ``shape``, ``size``, ``colour`` (at the middle frame) and ``states``
    (per frame: x, y, r as fractions, angle, colour, visible).
    """
    # One independent stream per (preset, seed, index): presets never share a clip.
    ns = zlib.crc32(preset.name.encode())
    rng = np.random.default_rng([ns, seed, index])
    lo, hi = preset.events
    n_events = int(rng.integers(lo, hi + 1))
    actions = [str(a) for a in rng.choice(preset.actions, n_events, replace=n_events > len(
        preset.actions))]
    if n_events == 1 and preset.task == "classification":
        actions = [preset.actions[index % len(preset.actions)]]  # balanced classes
    shape, size, mid = _sample_mid(rng)
    if "spinning" in actions and shape == "circle":  # a spinning circle looks still
        shape = str(rng.choice(["square", "triangle"]))
    bounds = np.linspace(0, preset.frames, n_events + 1).round().astype(int)
    states: list[State] = []
    events = []
    for e, action in enumerate(actions):
        length = int(bounds[e + 1] - bounds[e])
        m = length // 2
        s = (np.arange(length) - m) / max(length - 1, 1)
        if e > 0:  # continue from where the previous event left the shape
            last = states[-1]
            mid = State(np.clip(last.x, 0.3, 0.7), np.clip(last.y, 0.3, 0.7),
                        SIZES[size] * rng.uniform(0.9, 1.1), last.angle, last.colour)
        states += _trajectory(action, s, mid, rng)
        events.append({"action": action, "start": int(bounds[e]), "end": int(bounds[e + 1])})
    frames = render(shape, states, preset.size, rng)
    mid_state = states[preset.frames // 2]
    truth = {
        "action": actions[0], "events": events, "shape": shape, "size": size,
        "colour": mid_state.colour,
        "states": [
            {"x": round(st.x, 4), "y": round(st.y, 4), "r": round(st.r, 4),
             "angle": round(st.angle, 4), "colour": st.colour, "visible": st.visible}
            for st in states
        ],
    }
    truth["texts"] = _texts(preset, truth, rng)
    return frames, truth


def _texts(preset: Preset, truth: dict, rng: np.random.Generator) -> list[str]:
    shape, size, colour = truth["shape"], truth["size"], truth["colour"]
    events = [e["action"] for e in truth["events"]]
    if preset.texts == "caption":
        return [describe(events[0], shape, size, colour, rng)]
    if preset.texts == "captions":  # every paraphrase: several references per clip
        return [describe(events[0], shape, size, colour, rng, phrase=k) for k in range(4)]
    if preset.texts == "anonymous":
        return [describe(events[0], shape, size, colour, rng, style="anonymous")]
    if preset.texts == "paragraph":  # one sentence per event, in order
        first = describe(events[0], shape, size, colour, rng).capitalize() + "."
        links = ["Then it", "After that it", "Next it", "Finally it"]
        rest = [f"{links[min(i, 3)]} {rng.choice(PHRASES[a])}." for i, a in
                enumerate(events[1:])]
        return [first, *rest]
    return []


# ---------------------------------------------------------------------------------------------
# Noise: swapped captions and planted near-duplicates


def _half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def noise_counts(preset: Preset) -> tuple[int, int]:
    """(clips with another clip's caption, planted near-duplicates): ``round(share * n)``,
    half up, so ``noise=0.3`` over 4000 clips is exactly 1200."""
    return _half_up(preset.noise * preset.n), _half_up(preset.dups * preset.n)


@functools.lru_cache(maxsize=8)
def noise_plan(preset: Preset, seed: int) -> dict[int, tuple[str, int]]:
    """Clip index -> ("swapped", index whose caption it gets) or ("duplicate", index of the
    clean clip it copies). Drawn from a stream of its own, so the clean clips render exactly as
    in the corpus without noise. Swapped clips take the caption of any other clip (about one in
    20 shares the action); duplicates copy clips that are neither swapped nor duplicates."""
    swapped, dups = noise_counts(preset)
    if not swapped and not dups:
        return {}
    n = preset.n
    rng = np.random.default_rng([zlib.crc32(preset.name.encode()), seed, 0x4E015E, 1])
    order = rng.permutation(n)
    plan: dict[int, tuple[str, int]] = {}
    for i in order[:swapped]:
        plan[int(i)] = ("swapped", int((i + rng.integers(1, n)) % n))
    clean = order[swapped + dups:]
    for i in order[swapped:swapped + dups]:
        plan[int(i)] = ("duplicate", int(rng.choice(clean)))
    return plan


def near_duplicate(frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A re-upload of the same clip: rendered at 55-85% of the size and scaled back (the detail a
    lower resolution loses), another gain and offset (another encoder's levels) and fresh
    grain. Every frame keeps its place, so the motion is the original's."""
    import cv2

    t, h, w, _ = frames.shape
    scale = rng.uniform(0.55, 0.85)
    small = (max(8, round(w * scale)), max(8, round(h * scale)))
    gain, offset = rng.uniform(0.9, 1.1), rng.uniform(-10, 10)
    out = np.empty_like(frames)
    for k in range(t):
        f = cv2.resize(cv2.resize(frames[k], small, interpolation=cv2.INTER_AREA), (w, h),
                       interpolation=cv2.INTER_LINEAR).astype(np.float32)
        f = f * gain + offset + rng.normal(0, 2.0, f.shape)
        out[k] = np.clip(f, 0, 255).astype(np.uint8)
    return out


def item_id(preset: Preset, seed: int, index: int) -> str:
    return f"synth-{preset.name}-s{seed}-{index:06d}"


def synth_items(spec: str) -> Iterator[SourceItem]:
    """Yield the items of a synthetic spec lazily (rendering is the costly part)."""
    preset, seed = parse_spec(spec)
    for i in range(preset.n):
        yield make_item(preset, seed, i)


def make_item(preset: Preset, seed: int, index: int) -> SourceItem:
    kind, other = noise_plan(preset, seed).get(index, (None, None))
    if kind == "duplicate":
        frames, truth = make_clip(preset, seed, other)
        rng = np.random.default_rng([zlib.crc32(preset.name.encode()), seed, index, 0xD0])
        frames = near_duplicate(frames, rng)
        truth["noise"] = {"kind": "duplicate", "of": item_id(preset, seed, other)}
    else:
        frames, truth = make_clip(preset, seed, index)
    texts = truth.pop("texts")
    meta: dict = {"synth": truth}  # also marks the clip as synthetic (vtk.captions' default)
    if kind == "swapped":
        # the captioners see the other clip's pixels (vtk.captions.captioning.pixels); the
        # video stays this clip's: a caption that belongs to another clip
        caption_frames, theirs = make_clip(preset, seed, other)
        meta["caption_frames"] = caption_frames
        truth["noise"] = {"kind": "swapped", "caption_of": item_id(preset, seed, other),
                          "caption_action": theirs["action"]}
    if preset.task == "classification":
        meta["label"] = truth["action"]
    if preset.task == "retrieval":
        meta["texts"] = texts
    return SourceItem(
        id=item_id(preset, seed, index),
        frames=frames,
        fps=preset.fps,
        start=0.0,
        end=preset.frames / preset.fps,
        meta=meta,
    )


def benchmark_card(spec: str) -> dict | None:
    """The ``benchmark`` block of a shard set's index.json for a benchmark preset, else None."""
    preset, seed = parse_spec(spec)
    if preset.task == "train":
        return None
    return {
        "name": f"synth-{preset.name}",
        "task": preset.task,
        "classes": list(preset.actions) if preset.task == "classification" else None,
        "paragraph": preset.texts == "paragraph",
        "synthetic": True,
        "seed": seed,
    }
