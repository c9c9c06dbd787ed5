"""Metrics against hand-computed examples: ties, several captions per video, DSL."""

import math

import numpy as np
import pytest

from vtk.eval import metrics as M

# 4 texts x 3 videos; video 2 has two captions (texts 2 and 3).
SIM = np.array(
    [
        [0.9, 0.1, 0.2],  # t0 -> v0: rank 1
        [0.3, 0.5, 0.8],  # t1 -> v1: v2 scores higher, rank 2
        [0.4, 0.4, 0.4],  # t2 -> v2: tied with two wrong videos, pessimistic rank 3
        [0.2, 0.7, 0.6],  # t3 -> v2: rank 2
    ]
)
T2V = [0, 1, 2, 2]


def test_query_ranks_single_ground_truth_with_ties_is_pessimistic():
    gt = M.text_video_gt(T2V, 3)
    assert M.query_ranks(SIM, gt).tolist() == [1, 2, 3, 2]


def test_constant_scores_get_the_worst_rank():
    gt = M.labels_to_gt([0, 1, 2], 3)
    assert M.query_ranks(np.zeros((3, 3)), gt).tolist() == [3, 3, 3]


def test_several_ground_truths_use_the_best_ranked_one():
    # video side: v2 has captions t2 (0.4) and t3 (0.6); only t1 (0.8) beats the best one.
    gt = M.text_video_gt(T2V, 3).T
    assert M.query_ranks(SIM.T, gt).tolist() == [1, 2, 2]
    # two ground truths tied at the top: rank 1, the other ground truth never counts against it
    assert M.query_ranks(np.array([[0.5, 0.5, 0.1]]), np.array([[True, True, False]])) == [1]


def test_retrieval_metrics_hand_computed():
    m = M.retrieval_metrics(SIM, T2V)
    # T2V ranks [1, 2, 3, 2]
    assert m["t2v_r1"] == pytest.approx(0.25)
    assert m["t2v_r5"] == m["t2v_r10"] == pytest.approx(1.0)
    assert m["t2v_mdr"] == 2.0
    assert m["t2v_mnr"] == pytest.approx(2.0)
    # V2T ranks [1, 2, 2]
    assert m["v2t_r1"] == pytest.approx(1 / 3)
    assert m["v2t_mdr"] == 2.0
    assert m["v2t_mnr"] == pytest.approx(5 / 3)
    assert set(m) == {f"{d}_{k}" for d in ("t2v", "v2t") for k in ("r1", "r5", "r10", "mdr", "mnr")}


def test_ranks_match_argsort_position_when_there_are_no_ties():
    rng = np.random.default_rng(0)
    s = rng.normal(size=(20, 30))
    labels = rng.integers(0, 30, size=20)
    order = np.argsort(-s, axis=1)
    expected = [int(np.where(order[i] == labels[i])[0][0]) + 1 for i in range(20)]
    assert M.query_ranks(s, M.labels_to_gt(labels, 30)).tolist() == expected


def test_ranks_do_not_depend_on_candidate_order():
    s = np.array([[0.2, 0.5, 0.5, 0.1]])
    gt = np.array([[False, True, False, False]])
    perm = [2, 0, 3, 1]
    assert M.query_ranks(s, gt) == M.query_ranks(s[:, perm], gt[:, perm]) == [2]


def test_topk_accuracy_and_avg():
    scores = np.array(
        [
            [0.9, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0],  # label 0: rank 1
            [0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0],  # label 5: rank 6
            [0.5, 0.5, 0.5, 0.5, 0.5, 0.1, 0.0],  # label 4: tied with 4 others, rank 5
            [0.1, 0.9, 0.9, 0.0, 0.0, 0.0, 0.0],  # label 2: tied with class 1, rank 2
        ]
    )
    m = M.topk_accuracy(scores, [0, 5, 4, 2])
    assert m["top1"] == pytest.approx(0.25)
    assert m["top5"] == pytest.approx(0.75)
    assert m["avg"] == pytest.approx(0.5)


def test_dsl_matches_hand_computed_values_and_can_change_ranks():
    sim = np.array([[0.5, 0.6], [0.1, 0.9]])  # t0 -> v0 loses to the "hub" video v1 raw
    c0 = [math.exp(0.5), math.exp(0.1)]
    c1 = [math.exp(0.6), math.exp(0.9)]
    expected = np.array(
        [
            [0.5 * c0[0] / sum(c0), 0.6 * c1[0] / sum(c1)],
            [0.1 * c0[1] / sum(c0), 0.9 * c1[1] / sum(c1)],
        ]
    )
    np.testing.assert_allclose(M.dsl(sim), expected, rtol=1e-12)
    assert M.retrieval_metrics(sim, [0, 1])["t2v_r1"] == 0.5
    d = M.dsl_retrieval_metrics(sim, [0, 1])
    assert d["dsl_t2v_r1"] == 1.0
    assert all(k.startswith("dsl_") for k in d)


def test_bad_shapes_and_missing_ground_truth_raise():
    with pytest.raises(ValueError):
        M.query_ranks(np.zeros((2, 3)), np.zeros((3, 2), dtype=bool))
    with pytest.raises(ValueError):
        M.query_ranks(np.zeros((1, 2)), np.zeros((1, 2), dtype=bool))
