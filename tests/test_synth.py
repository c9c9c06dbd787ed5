"""The synthetic world: deterministic, disjoint across presets, and motion-defined."""

import numpy as np
import pytest

from vtk.errors import VtkError
from vtk.sources import synth


def test_spec_overrides_and_determinism():
    a = list(synth.synth_items("synth:train?n=3&seed=5&size=32&frames=8"))
    b = list(synth.synth_items("synth:train?n=3&seed=5&size=32&frames=8"))
    assert [x.id for x in a] == [x.id for x in b]
    assert a[0].frames.shape == (8, 32, 32, 3) and a[0].frames.dtype == np.uint8
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.frames, y.frames)
    c = list(synth.synth_items("synth:train?n=3&seed=6&size=32&frames=8"))
    assert not np.array_equal(a[0].frames, c[0].frames)


def test_presets_are_disjoint_streams():
    tr = synth.make_clip(synth.PRESETS["train"], 0, 0)[0]
    k4 = synth.make_clip(synth.PRESETS["k400"], 0, 0)[0]
    assert not np.array_equal(tr, k4)


def test_nested_label_sets():
    k4, k6, k7 = (synth.class_names(n) for n in ("synth-k400", "k600", "k700"))
    assert set(k4) < set(k6) < set(k7)
    assert (len(k4), len(k6), len(k7)) == (12, 16, 20)
    assert k6[: len(k4)] == k4


def test_bad_spec_is_one_line_error():
    with pytest.raises(VtkError, match="unknown synthetic preset"):
        synth.parse_spec("synth:nope")
    with pytest.raises(VtkError, match="bad parameter"):
        synth.parse_spec("synth:train?n=abc")


def test_benchmark_items_carry_labels_and_texts():
    k = next(synth.synth_items("synth:k400?n=2"))
    assert k.meta["label"] in synth.K400_ACTIONS
    m = next(synth.synth_items("synth:msvd?n=1"))
    assert len(m.meta["texts"]) == 4
    d = next(synth.synth_items("synth:didemo?n=1"))
    events = d.meta["synth"]["events"]
    assert d.frames.shape[0] == 32 and len(d.meta["texts"]) == len(events) >= 2


def test_middle_frame_does_not_reveal_the_action():
    """The middle frame's state (position, size, visibility) has the same distribution for
    every action: a per-action mean that differs by more than noise would leak the action."""
    preset = synth.PRESETS["k700"]
    per_action: dict[str, list] = {a: [] for a in preset.actions}
    for i in range(20 * len(preset.actions)):
        _, truth = synth.make_clip(preset, 1, i)
        st = truth["states"][preset.frames // 2]
        per_action[truth["action"]].append((st["x"], st["y"], st["r"], st["visible"]))
    means = np.array([np.mean(v, axis=0) for v in per_action.values()])
    assert means[:, 3].min() == 1.0  # always visible in the middle
    # x, y uniform on [0.3, 0.7]: sd of a mean of 20 is ~0.026; allow 4 sd
    assert np.all(np.abs(means[:, :2] - 0.5) < 0.105)
    # radius: the same two sizes for every action
    assert means[:, 2].max() - means[:, 2].min() < 0.05


def test_motion_actions_move_the_shape():
    preset = synth.PRESETS["k700"]
    idx = preset.actions.index("moving left")
    _, truth = synth.make_clip(preset, 0, idx)
    xs = [s["x"] for s in truth["states"]]
    assert truth["action"] == "moving left" and xs[0] > xs[-1] + 0.2
    idx = preset.actions.index("growing")
    _, truth = synth.make_clip(preset, 0, idx)
    rs = [s["r"] for s in truth["states"]]
    assert rs[-1] > 2 * rs[0]
