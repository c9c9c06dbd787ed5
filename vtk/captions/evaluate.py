"""Measure the ``shapes`` captioner and the ``rules`` summariser against the synthetic world's
ground truth, and check that coarse captions do not give the action away.

    vtk bench caption-quality --n 400 --seed 1000 [--fine-fps 4] [--size 64] [--json]

Reports:
- per frame (every frame of every clip, the generator's states as truth): detection (an object
  where the shape is visible, none where it is not) and, on visible frames, colour, shape,
  position (3 x 3 grid) and size accuracy of the largest object found;
- per clip: the action read back from the fine caption (``action_of``) against the true action,
  overall, per action, and the direction of travel for the moving actions;
- leakage: a bag-of-words logistic regression trained on half the clips' captions predicting
  the action on the other half: coarse captions should sit at chance, fine ones well above.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter, defaultdict

import click
import numpy as np

from vtk.captions.captioning import Captioning, CaptionSpec
from vtk.captions.shapes import LARGE_RADIUS, ShapesCaptioner, position_words
from vtk.sources import synth
from vtk.types import Clip

# The fine caption's verb phrase -> the generator's action (most specific first).
VERB_TO_ACTION = (
    ("disappears", "disappearing"), ("appears", "appearing"), ("blinks", "blinking"),
    ("changes colour", "changing colour"), ("grows", "growing"), ("shrinks", "shrinking"),
    ("spins", "spinning"), ("moves in a circle", "orbiting"), ("zigzags", "zigzagging"),
    ("bounces", "bouncing"), ("jumps", "jumping"), ("swings", "swinging"), ("shakes", "shaking"),
    ("diagonally up", "moving diagonally up"), ("diagonally down", "moving diagonally down"),
    ("moves to the left", "moving left"), ("moves to the right", "moving right"),
    ("moves up", "moving up"), ("moves down", "moving down"), ("stays still", "standing still"),
)
DIRECTIONAL = ("moving left", "moving right", "moving up", "moving down",
               "moving diagonally up", "moving diagonally down")


def action_of(caption: str) -> str | None:
    """The synthetic action a fine caption names (None when it names none)."""
    for verb, action in VERB_TO_ACTION:
        if verb in caption:
            return action
    return None


def synthetic_clips(n: int, seed: int, size: int | None = None) -> tuple[list[Clip], list[dict]]:
    """``n`` clips of the training world (seed stream ``seed``) as Clips, plus ground truth."""
    import cv2

    preset = synth.PRESETS["train"]
    clips, truths = [], []
    for i in range(n):
        frames, truth = synth.make_clip(preset, seed, i)
        if size and size != frames.shape[1]:
            interp = cv2.INTER_AREA if size < frames.shape[1] else cv2.INTER_LINEAR
            frames = np.stack([cv2.resize(f, (size, size), interpolation=interp) for f in frames])
        clips.append(Clip(f"synth-train-s{seed}-{i:06d}", 0, frames, preset.fps, 0.0,
                          preset.frames / preset.fps, meta={"synth": truth}))
        truths.append(truth)
    return clips, truths


def frame_accuracy(clips: list[Clip], truths: list[dict]) -> dict:
    """Per-frame detection, colour, shape, position and size accuracy of ``shapes``."""
    cap = ShapesCaptioner()
    n = Counter()
    for clip, truth in zip(clips, truths):
        for objs, st in zip(cap.detect(clip.frames), truth["states"]):
            if not st["visible"]:
                n["hidden"] += 1
                n["hidden_empty"] += not objs
                continue
            n["visible"] += 1
            if not objs:
                continue
            o = objs[0]
            n["detected"] += 1
            n["colour"] += o.colour == st["colour"]
            n["shape"] += o.shape == truth["shape"]
            n["position"] += o.position == position_words(st["x"], st["y"])
            n["size"] += o.size == ("large" if st["r"] > LARGE_RADIUS else "small")
            n["extra_objects"] += len(objs) > 1
    vis = max(n["visible"], 1)
    return {
        "frames_visible": n["visible"], "frames_hidden": n["hidden"],
        "detection": n["detected"] / vis,
        "hidden_frames_empty": n["hidden_empty"] / max(n["hidden"], 1),
        "colour": n["colour"] / vis, "shape": n["shape"] / vis,
        "position": n["position"] / vis, "size": n["size"] / vis,
        "frames_with_extra_objects": n["extra_objects"] / vis,
    }


def motion_accuracy(fine: list[str], truths: list[dict]) -> dict:
    """Action named by each fine caption against the truth; direction for moving actions."""
    per = defaultdict(lambda: [0, 0])
    direction = [0, 0]
    confusions = Counter()
    for text, truth in zip(fine, truths):
        want, got = truth["action"], action_of(text)
        per[want][0] += got == want
        per[want][1] += 1
        if got != want:
            confusions[(want, got)] += 1
        if want in DIRECTIONAL:
            direction[1] += 1
            ok = got == want
            if ok and "diagonally" in want:  # the horizontal part must be right as well
                x0, x1 = truth["states"][0]["x"], truth["states"][-1]["x"]
                ok = ("to the left" in text) == (x1 < x0)
            direction[0] += ok
    total = sum(c for c, _ in per.values()) / max(sum(n for _, n in per.values()), 1)
    return {
        "action": total,
        "direction": direction[0] / max(direction[1], 1),
        "direction_clips": direction[1],
        "per_action": {a: round(c / n, 3) for a, (c, n) in sorted(per.items())},
        "confusions": {f"{w} -> {g}": k for (w, g), k in confusions.most_common(8)},
    }


# ---------------------------------------------------------------------------------------------
# Leakage: a bag-of-words logistic regression


def _tokens(text: str) -> list[str]:
    words = re.findall(r"[a-z]+", text.lower())
    return words + [f"{a}_{b}" for a, b in zip(words, words[1:])]


def text_classifier_accuracy(texts: list[str], labels: list[str], seed: int = 0,
                             steps: int = 300, lr: float = 0.5, l2: float = 1e-3) -> dict:
    """Train on a random half, test on the other half: accuracy, chance (1 / classes) and the
    majority-class rate of the test half."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(texts))
    train, test = order[: len(order) // 2], order[len(order) // 2:]
    vocab = {w: i for i, w in enumerate(sorted({w for k in train for w in _tokens(texts[k])}))}
    classes = sorted(set(labels))
    y = np.array([classes.index(label) for label in labels])
    x = np.zeros((len(texts), len(vocab) + 1))
    x[:, -1] = 1.0  # bias
    for k, t in enumerate(texts):
        for w in _tokens(t):
            if w in vocab:
                x[k, vocab[w]] = 1.0
    w = np.zeros((x.shape[1], len(classes)))
    onehot = np.eye(len(classes))[y[train]]
    for _ in range(steps):  # full-batch gradient descent on the softmax cross-entropy
        logits = x[train] @ w
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        w -= lr * (x[train].T @ (p - onehot) / len(train) + l2 * w)
    pred = (x[test] @ w).argmax(1)
    majority = Counter(y[train].tolist()).most_common(1)[0][0]
    return {"accuracy": float((pred == y[test]).mean()), "chance": 1 / len(classes),
            "majority": float((y[test] == majority).mean()), "test_clips": len(test)}


def evaluate(n: int = 400, seed: int = 1000, fine_fps: float = 4.0, size: int | None = None
             ) -> dict:
    clips, truths = synthetic_clips(n, seed, size)
    t0 = time.perf_counter()
    results = Captioning(CaptionSpec(mode="both", fine_fps=fine_fps)).run(clips)
    seconds = time.perf_counter() - t0
    errors = [r["error"] for r in results if "error" in r]
    ok = [(r["captions"], t) for r, t in zip(results, truths) if "error" not in r]
    coarse = [c["coarse"] for c, _ in ok]
    fine = [c["fine"] for c, _ in ok]
    labels = [t["action"] for _, t in ok]
    return {
        "clips": n, "seed": seed, "fine_fps": fine_fps,
        "size": size or synth.PRESETS["train"].size, "errors": len(errors),
        "captioning_clips_per_s": n / seconds,
        "frames": frame_accuracy(clips, truths),
        "motion": motion_accuracy(fine, [t for _, t in ok]),
        "leakage": {
            "coarse": text_classifier_accuracy(coarse, labels),
            "fine": text_classifier_accuracy(fine, labels),
            "coarse_distinct": len(set(coarse)), "fine_distinct": len(set(fine)),
        },
        "examples": [{"action": t["action"], "coarse": c["coarse"], "fine": c["fine"]}
                     for c, t in ok[:5]],
    }


def _print(report: dict) -> None:
    f, m, lk = report["frames"], report["motion"], report["leakage"]
    print(f"shapes on {report['clips']} synthetic clips (seed {report['seed']}, "
          f"{report['size']} px, fine_fps {report['fine_fps']}), {report['errors']} errors, "
          f"{report['captioning_clips_per_s']:.0f} clips/s (coarse + fine)")
    print(f"per frame ({f['frames_visible']} visible, {f['frames_hidden']} hidden): "
          f"detection {f['detection']:.3f}  colour {f['colour']:.3f}  shape {f['shape']:.3f}  "
          f"position {f['position']:.3f}  size {f['size']:.3f}  "
          f"hidden frames empty {f['hidden_frames_empty']:.3f}")
    print(f"fine caption: action {m['action']:.3f}  motion direction {m['direction']:.3f} "
          f"({m['direction_clips']} moving clips)")
    for a, acc in m["per_action"].items():
        print(f"  {a:24s} {acc:.2f}")
    if m["confusions"]:
        print("  confusions:", m["confusions"])
    for name in ("coarse", "fine"):
        r = lk[name]
        print(f"action from {name} captions (bag-of-words logistic regression): "
              f"{r['accuracy']:.3f} (chance {r['chance']:.3f}, majority {r['majority']:.3f}, "
              f"{lk[name + '_distinct']} distinct captions)")


@click.command("caption-quality")
@click.option("--n", type=int, default=400, show_default=True, help="Synthetic clips.")
@click.option("--seed", type=int, default=1000, show_default=True, help="Seed stream.")
@click.option("--fine-fps", type=float, default=4.0, show_default=True)
@click.option("--size", type=int, default=None, help="Resize frames to this side first.")
@click.option("--json", "json_out", is_flag=True, help="Print the report as JSON instead.")
def command(n, seed, fine_fps, size, json_out):
    """Accuracy of the shapes captioner and rules summariser against the synthetic world's truth.

    Per frame: detection, colour, shape, position, size. Per clip: the action read back from
    the fine caption. Leakage: a bag-of-words classifier should find the action in fine
    captions, not in coarse ones.

    \b
    Example:  vtk bench caption-quality --n 400 --seed 1000
    """
    report = evaluate(n, seed, fine_fps, size)
    if json_out:
        click.echo(json.dumps(report, indent=1))
    else:
        _print(report)
