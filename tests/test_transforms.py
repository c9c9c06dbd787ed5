"""Clip transforms: shapes, normalisation, crops that follow torchvision's rules."""

import numpy as np
import pytest
import torch

from vtk.data.transforms import (
    NORMS,
    center_box,
    crop_resize,
    eval_crop,
    normalize,
    random_resized_box,
    train_crop,
)


def frames(t=4, h=48, w=64):
    """A horizontal ramp: column x has value 4x in every channel, so flips are visible."""
    ramp = (torch.arange(w) * 4).clamp(max=255).to(torch.uint8)
    return ramp.view(1, 1, w, 1).expand(t, h, w, 3).contiguous()


def test_eval_is_short_side_resize_and_centre_crop():
    x = eval_crop(frames(), 32, norm="none")
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32
    # centre 48x48 of a 64-wide ramp is columns 8..55: values 32..220 (/255)
    assert x[0, 0, 0, 0] == pytest.approx(33.5 / 255, abs=0.02)
    assert x[0, 0, 0, -1] == pytest.approx(218.5 / 255, abs=0.02)
    assert center_box(48, 64) == (0, 8, 48, 48)
    assert center_box(90, 30) == (30, 0, 30, 30)


def test_no_resize_when_the_crop_already_has_the_size():
    f = frames(2, 32, 32)
    x = crop_resize(f, (0, 0, 32, 32), 32)
    assert torch.equal(x, f.permute(0, 3, 1, 2))


@pytest.mark.parametrize("norm", sorted(NORMS))
def test_normalisation_uses_the_named_statistics(norm):
    f = torch.full((2, 8, 8, 3), 255, dtype=torch.uint8)
    x = eval_crop(f, 8, norm=norm)
    mean, std = NORMS[norm]
    for c in range(3):
        assert x[:, c].mean().item() == pytest.approx((1 - mean[c]) / std[c], rel=1e-5)


def test_unknown_normalisation_is_refused():
    with pytest.raises(ValueError):
        eval_crop(frames(), 16, norm="laion")


def test_random_resized_box_respects_scale_and_ratio():
    rng = np.random.default_rng(0)
    for _ in range(500):
        top, left, h, w = random_resized_box(48, 64, rng)
        assert 0 <= top and top + h <= 48 and 0 <= left and left + w <= 64
        assert 0.5 * 48 * 64 * 0.9 <= h * w <= 48 * 64
        assert 3 / 4 * 0.9 <= w / h <= 4 / 3 * 1.1


def test_train_crop_and_flip_are_shared_by_all_frames_and_vary_between_draws():
    f = frames()
    outs = [train_crop(f, 24, np.random.default_rng(s), norm="none") for s in range(40)]
    for x in outs:
        assert x.shape == (4, 3, 24, 24)
        assert torch.allclose(x[0], x[3])  # one crop for the whole clip
    slopes = [float(x[0, 0, 0, -1] - x[0, 0, 0, 0]) for x in outs]
    assert min(slopes) < 0 < max(slopes)  # some clips flipped, some not
    assert len({round(float(x.mean()), 4) for x in outs}) > 10  # crops differ


def test_train_crop_is_reproducible():
    f = frames()
    a = train_crop(f, 16, np.random.default_rng(3), norm="clip")
    b = train_crop(f, 16, np.random.default_rng(3), norm="clip")
    assert torch.equal(a, b)


@pytest.mark.parametrize("norm", sorted(NORMS))
@pytest.mark.parametrize("box, flip", [((0, 8, 48, 48), False), ((5, 3, 30, 41), True),
                                       ((0, 0, 48, 64), False)])
def test_crop_normalised_in_one_pass_equals_crop_then_normalise(norm, box, flip):
    g = torch.Generator().manual_seed(0)
    f = torch.randint(0, 256, (3, 48, 64, 3), dtype=torch.uint8, generator=g)
    fused = crop_resize(f, box, 20, flip=flip, norm=norm)
    assert fused.dtype == torch.float32 and fused.is_contiguous()
    assert torch.allclose(fused, normalize(crop_resize(f, box, 20, flip=flip), norm), atol=1e-5)


def test_flip_mirrors_the_crop_and_out_is_written_in_place():
    f = frames()
    out = torch.empty((4, 3, 24, 24), dtype=torch.uint8)
    plain = crop_resize(f, (0, 8, 48, 48), 24)
    got = crop_resize(f, (0, 8, 48, 48), 24, flip=True, out=out)
    assert got is out and torch.equal(out, plain.flip(-1))


def test_an_output_of_another_frame_count_is_refused():
    # a short clip written into a longer slot would leave another clip's frames in the rest
    with pytest.raises(ValueError, match="4 frames for an output of shape"):
        crop_resize(frames(), (0, 8, 48, 48), 24, out=torch.empty((8, 3, 24, 24), dtype=torch.uint8))
