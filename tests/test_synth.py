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


# --- the noise knob: swapped captions and planted near-duplicates ----------------------------

NOISY = "synth:train?n=40&noise=0.3&dups=0.1&seed=3"


def test_noise_counts_are_exactly_as_asked():
    preset, seed = synth.parse_spec(NOISY)
    plan = synth.noise_plan(preset, seed)
    kinds = [k for k, _ in plan.values()]
    assert (kinds.count("swapped"), kinds.count("duplicate")) == (12, 4)
    big, seed = synth.parse_spec("synth:train?n=4000&noise=0.3&dups=0.05")
    kinds = [k for k, _ in synth.noise_plan(big, seed).values()]
    assert (kinds.count("swapped"), kinds.count("duplicate")) == (1200, 200)
    # half up: 0.25 * 10 = 2.5 -> 3 (not banker's 2)
    odd, _ = synth.parse_spec("synth:train?n=10&noise=0.25")
    assert synth.noise_counts(odd) == (3, 0)
    # the items say what was planted, the same counts
    items = list(synth.synth_items(NOISY))
    truth = [it.meta["synth"].get("noise", {}).get("kind") for it in items]
    assert (truth.count("swapped"), truth.count("duplicate"), truth.count(None)) == (12, 4, 24)


def test_noise_leaves_clean_clips_untouched_and_plants_what_it_says():
    items = list(synth.synth_items(NOISY))
    clean = list(synth.synth_items("synth:train?n=40&seed=3"))
    assert [a.id for a in items] == [b.id for b in clean]
    by_id = {b.id: b for b in clean}
    for a, b in zip(items, clean):
        noise = a.meta["synth"].get("noise")
        if noise is None:
            np.testing.assert_array_equal(a.frames, b.frames)
            assert "caption_frames" not in a.meta
        elif noise["kind"] == "swapped":
            # the video is this clip's; the captioners' pixels are another clip's
            np.testing.assert_array_equal(a.frames, b.frames)
            other = by_id[noise["caption_of"]]
            assert other.id != a.id
            np.testing.assert_array_equal(a.meta["caption_frames"], other.frames)
            assert noise["caption_action"] == other.meta["synth"]["action"]
        else:
            src = by_id[noise["of"]]
            assert "noise" not in items[clean.index(src)].meta["synth"]  # copies a clean clip
            diff = np.abs(a.frames.astype(int) - src.frames.astype(int))
            assert 0 < diff.mean() < 20  # near, not equal
            assert a.meta["synth"]["action"] == src.meta["synth"]["action"]
            assert "caption_frames" not in a.meta


def test_noisy_captions_belong_to_the_other_clip():
    """Through the real shapes captioner and rules summariser: a swapped clip's fine caption is
    the caption its other clip gets, and a duplicate is captioned like its original."""
    from vtk.captions import Captioning, CaptionSpec
    from vtk.types import Clip

    items = list(synth.synth_items(NOISY))
    clips = [Clip(it.id, 0, it.frames, it.fps, 0.0, it.end, it.id, it.meta) for it in items]
    fine = [r["captions"]["fine"] for r in Captioning(CaptionSpec(mode="fine")).run(clips)]
    caption = dict(zip([it.id for it in items], fine))
    clean = list(synth.synth_items("synth:train?n=40&seed=3"))
    own = dict(zip([c.id for c in clean], (r["captions"]["fine"] for r in Captioning(
        CaptionSpec(mode="fine")).run([Clip(c.id, 0, c.frames, c.fps, 0.0, c.end, c.id, c.meta)
                                       for c in clean]))))
    swapped = dups = same = 0
    for it in items:
        noise = it.meta["synth"].get("noise")
        if noise is None:
            assert caption[it.id] == own[it.id]
        elif noise["kind"] == "swapped":
            swapped += 1
            assert caption[it.id] == own[noise["caption_of"]]
        else:
            dups += 1
            same += caption[it.id] == own[noise["of"]]
    assert swapped == 12 and dups == 4 and same >= 3  # a re-render may flip a colour word


def test_noise_knob_rejects_bad_settings():
    with pytest.raises(VtkError, match="training corpus only"):
        synth.parse_spec("synth:k400?noise=0.3")
    with pytest.raises(VtkError, match=r"shares in \[0, 1\)"):
        synth.parse_spec("synth:train?noise=1.5")
    with pytest.raises(VtkError, match="no clean clip"):
        synth.parse_spec("synth:train?n=10&noise=0.6&dups=0.4")
