"""ViCLIP frame sampling against hand-computed indices."""

import numpy as np
import pytest

from vtk.data.sampling import eval_indices, frame_indices, segment_bounds, train_indices


def test_segments_cover_the_clip_evenly():
    lo, hi = segment_bounds(20, 8)
    # edges floor(i * 20 / 8): 0 2 5 7 10 12 15 17 20
    assert lo.tolist() == [0, 2, 5, 7, 10, 12, 15, 17]
    assert hi.tolist() == [2, 5, 7, 10, 12, 15, 17, 20]


def test_eval_takes_the_middle_of_each_segment():
    assert eval_indices(80, 8).tolist() == [4, 14, 24, 34, 44, 54, 64, 74]  # segments of 10
    assert eval_indices(16, 8).tolist() == [0, 2, 4, 6, 8, 10, 12, 14]  # (lo + hi - 1) // 2
    assert eval_indices(20, 8).tolist() == [0, 3, 5, 8, 10, 13, 15, 18]
    assert eval_indices(8, 8).tolist() == list(range(8))
    assert eval_indices(100, 1).tolist() == [49]


def test_eval_is_deterministic():
    assert np.array_equal(eval_indices(37, 8), frame_indices(37, 8, train=False))


def test_short_clips_repeat_frames_in_order():
    assert eval_indices(3, 8).tolist() == [0, 0, 0, 1, 1, 1, 2, 2]
    assert train_indices(3, 8, np.random.default_rng(0)).tolist() == [0, 0, 0, 1, 1, 1, 2, 2]
    assert eval_indices(1, 4).tolist() == [0, 0, 0, 0]


def test_train_draws_one_frame_inside_each_segment():
    lo, hi = segment_bounds(50, 8)
    seen = set()
    for seed in range(200):
        idx = train_indices(50, 8, np.random.default_rng(seed))
        assert ((idx >= lo) & (idx < hi)).all()
        assert (np.diff(idx) > 0).all()
        seen.update(idx.tolist())
    assert seen == set(range(50))  # every frame can be drawn


def test_train_is_reproducible_with_the_same_seed():
    a = train_indices(64, 8, np.random.default_rng(7))
    b = train_indices(64, 8, np.random.default_rng(7))
    assert np.array_equal(a, b)


def test_training_needs_an_rng_and_clips_need_frames():
    with pytest.raises(ValueError):
        frame_indices(10, 8, train=True)
    with pytest.raises(ValueError):
        eval_indices(0, 8)
