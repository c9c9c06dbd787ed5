"""The shapes captioner reads colour, shape, size and position from pixels, and the rules
summariser turns its per-frame objects into motion words that match the synthetic world."""

import numpy as np
import pytest

from vtk.captions import Captioning, CaptionSpec
from vtk.captions.evaluate import (
    action_of,
    frame_accuracy,
    motion_accuracy,
    synthetic_clips,
    text_classifier_accuracy,
)
from vtk.captions.shapes import Obj, ShapesCaptioner, detect_frame, position_words
from vtk.captions.summarize import describe_track, merge_texts, summarize_objects
from vtk.sources import synth


def _frame(shape, colour, x, y, r, angle=0.3, size=64, seed=0):
    st = synth.State(x, y, r, angle, colour)
    return synth.render(shape, [st], size, np.random.default_rng(seed))[0]


@pytest.mark.parametrize("shape", synth.SHAPES)
@pytest.mark.parametrize("colour", list(synth.COLOURS))
def test_names_colour_and_shape_of_a_rendered_shape(shape, colour):
    objs = detect_frame(_frame(shape, colour, 0.3, 0.7, 0.16))
    assert len(objs) == 1
    o = objs[0]
    assert (o.colour, o.shape, o.size) == (colour, shape, "large")
    assert o.position == "in the bottom left"
    assert abs(o.x - 0.3) < 0.03 and abs(o.y - 0.7) < 0.03


def test_frame_text_and_empty_frame():
    cap = ShapesCaptioner()
    frames = np.stack([_frame("circle", "red", 0.2, 0.2, 0.1),
                       synth.render("square", [synth.State(0.5, 0.5, 0.1, 0, "red", False)], 64,
                                    np.random.default_rng(1))[0]])
    assert cap.caption(frames) == ["a small red circle in the top left",
                                   "an empty grey background"]


def test_position_words():
    assert position_words(0.5, 0.5) == "in the centre"
    assert position_words(0.9, 0.5) == "on the right"
    assert position_words(0.5, 0.1) == "at the top"
    assert position_words(0.9, 0.9) == "in the bottom right"


def _obj(x=0.5, y=0.5, r=0.1, colour="red", shape="square", angle=0.2):
    return Obj(colour, shape, "small", x, y, r, angle, 100, False)


def test_rules_describe_what_changed():
    n = np.linspace(0, 1, 8)
    left = [[_obj(x=0.7 - 0.35 * t)] for t in n]
    assert summarize_objects(left) == "a small red square moves to the left"
    grow = [[_obj(r=0.06 * 2.6**t)] for t in n]
    assert describe_track([o[0] for o in grow]).endswith("grows")
    blink = [[_obj()] if k % 2 == 0 else [] for k in range(8)]
    assert summarize_objects(blink) == "a small red square blinks on and off"
    appear = [[] if k < 3 else [_obj()] for k in range(8)]
    assert summarize_objects(appear).endswith(" appears")
    gone = [[_obj()] if k < 5 else [] for k in range(8)]
    assert summarize_objects(gone).endswith(" disappears")
    recolour = [[_obj(colour=c)] for c in ["red"] * 3 + ["blue"] * 3 + ["green"] * 2]
    assert summarize_objects(recolour).endswith("changes colour from red to blue to green")
    spin = [[_obj(angle=(0.4 * k) % (np.pi / 2))] for k in range(8)]
    assert summarize_objects(spin) == "a small red square spins"
    still = [[_obj(x=0.5 + 0.002 * (-1) ** k)] for k in range(8)]
    assert summarize_objects(still) == "a small red square stays still"
    th = np.linspace(0, 2 * np.pi, 9)[:-1]
    orbit = [[_obj(x=0.5 + 0.1 * np.cos(a), y=0.5 + 0.1 * np.sin(a), shape="circle",
                   angle=None)] for a in th]
    assert summarize_objects(orbit).endswith("moves in a circle")
    diag = [[_obj(x=0.3 + 0.3 * t, y=0.7 - 0.3 * t)] for t in n]
    assert summarize_objects(diag).endswith("moves diagonally upwards to the right")
    assert summarize_objects([[], []]) == "an empty grey background"


def test_merge_texts_drops_repeats():
    assert merge_texts(["a dog", "a dog", "a cat", "a cat"]) == "first a dog, then a cat"
    assert merge_texts(["a dog"] * 3) == "a dog"
    assert merge_texts(["a", "b", "c"]) == "first a, then b, and finally c"


def test_accuracy_against_ground_truth():
    """Per-frame colour/shape/position >= 95%, motion in the fine caption >= 90% (50 clips)."""
    clips, truths = synthetic_clips(50, seed=4242)
    frames = frame_accuracy(clips, truths)
    assert frames["detection"] >= 0.99 and frames["hidden_frames_empty"] >= 0.99
    for key in ("colour", "shape", "position"):
        assert frames[key] >= 0.95, (key, frames)
    results = Captioning(CaptionSpec(mode="fine")).run(clips)
    motion = motion_accuracy([r["captions"]["fine"] for r in results], truths)
    assert motion["direction"] >= 0.9 and motion["action"] >= 0.9, motion


def test_coarse_captions_do_not_reveal_the_action():
    clips, truths = synthetic_clips(300, seed=777)
    results = Captioning(CaptionSpec(mode="both")).run(clips)
    labels = [t["action"] for t in truths]
    coarse = text_classifier_accuracy([r["captions"]["coarse"] for r in results], labels)
    fine = text_classifier_accuracy([r["captions"]["fine"] for r in results], labels)
    assert coarse["accuracy"] < coarse["chance"] + 0.07, coarse
    assert fine["accuracy"] > 0.8, fine
    assert not any(action_of(r["captions"]["coarse"]) for r in results)


def test_tag_summary_names_leading_labels_in_time_order():
    from vtk.captions.summarize import summarize_tags

    same = [[("taxicab", 0.6), ("minivan", 0.3)]] * 4
    assert summarize_tags(same) == "a video showing a taxicab and a minivan"
    change = [[("taxicab", 0.6)]] * 3 + [[("albatross", 0.7)]] * 3
    assert summarize_tags(change) == "a video showing first a taxicab, then an albatross"
