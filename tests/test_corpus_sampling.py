"""Sampling for large corpora: resampled shards, weighted shard sets, InternVid-DIV weights.

The draws are pure functions (vtk.data.order), checked over thousands of draws against their
weights. Tolerance: 4 binomial standard deviations, sqrt(p (1 - p) / n), per frequency, so a
correct sampler fails a check with probability below 1e-4. Then the loader in each mode: the
epoch's length, and an exact resume.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from data_helpers import write_shards

from vtk.data import order
from vtk.data.loader import build_loader
from vtk.errors import VtkError


def within(count: int, n: int, p: float) -> bool:
    return abs(count / n - p) <= 4 * math.sqrt(p * (1 - p) / n)


def test_shard_probs_spread_each_sets_weight_over_its_shards():
    assert np.allclose(order.shard_probs([2, 3], [0.7, 0.3]), [0.35, 0.35, 0.1, 0.1, 0.1])
    assert np.allclose(order.shard_probs([2, 3]), [0.2] * 5)  # no weights: every shard alike
    with pytest.raises(ValueError):
        order.shard_probs([2, 3], [1.0])


def test_weighted_draws_follow_the_set_weights():
    probs = order.shard_probs([3, 5], [0.7, 0.3])
    n = 4000
    draws = [order.draw_shard(probs, 0, 0, 0, g) for g in range(n)]
    assert within(sum(d < 3 for d in draws), n, 0.7)  # set A: shards 0-2
    for shard, p in enumerate(probs):
        assert within(draws.count(shard), n, p), shard
    # another epoch or partition draws another sequence
    assert draws[:50] != [order.draw_shard(probs, 0, 1, 0, g) for g in range(50)]
    assert draws[:50] != [order.draw_shard(probs, 0, 0, 1, g) for g in range(50)]


def test_div_keeps_clips_in_proportion_to_one_over_the_clips_of_their_source():
    counts = order.source_counts(["a_000000", "b_000000", "b_000001", "c_000000", "c_000001",
                                  "c_000002", "c_000003", "odd-name"])
    assert counts == {"a": 1, "b": 2, "c": 4, "odd-name": 1}
    n = 3000
    for src, k in (("a", 1), ("b", 2), ("c", 4)):
        kept = sum(order.keep_div(k, 1, 0, e, 0, 0, 0) for e in range(n))
        assert within(kept, n, 1 / k), src


def test_quota_splits_an_epoch_over_ranks_then_workers():
    assert [order.quota(103, r, 2, w, 3) for r in (0, 1) for w in range(3)] == [
        17, 17, 17, 17, 17, 17]  # 51 per rank; the 103rd sample is dropped
    assert sum(order.quota(100, 0, 1, w, 3) for w in range(3)) == 100


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("sets")
    a = write_shards(root / "a", samples=12, per_shard=3, frames=8, h=32, w=40, name="a")
    b = write_shards(root / "b", samples=6, per_shard=3, frames=8, h=32, w=40, name="b",
                     key=lambda i: f"bsrc{min(i, 1):03d}_{i:06d}")  # sources of 1 and 5 clips
    return root / "a", root / "b", a, b


def make(shards, **kw):
    args = dict(backend="pyav", frames=2, size=16, train=True, batch_size=4, workers=0,
                seed=5)
    return build_loader(shards, **{**args, **kw})


def keys(loader, passes=1):
    return [k for _ in range(passes) for b in loader for k in b["key"]]


@pytest.mark.parametrize("workers", [0, 2])
def test_weighted_sets_give_an_epoch_of_n_samples_in_proportion_and_resume_exactly(sets,
                                                                                  workers):
    a, b, _, _ = sets
    kw = dict(weights=[0.75, 0.25], num_samples=40, workers=workers)
    full = make([a, b], **kw)
    one = keys(full, 1)
    assert len(one) == 40  # --train-num-samples, whatever the sets hold (18 clips)
    from_b = sum(k.startswith("bsrc") for k in one)
    # both sets drawn (their frequencies over thousands of draws: the tests above; 40 samples
    # are a dozen draws of whole 3-clip shards, too few to judge a weight by)
    assert 0 < from_b < 40
    two = keys(full, 1)
    assert one != two  # each epoch draws again
    loader = make([a, b], **kw)
    it = iter(loader)
    head = [k for _ in range(3) for k in next(it)["key"]]
    state = loader.state_dict()
    del it
    again = make([a, b], **kw)
    again.load_state_dict(state)
    assert head + keys(again, 2) == one + two


def test_div_sampling_thins_many_clip_sources_and_resumes_exactly(sets):
    _, b, _, _ = sets
    kw = dict(sampling="div", batch_size=1)
    epochs = [keys(make(b, **kw), 1) for _ in range(1)]
    loader = make(b, **kw)
    per_epoch = [keys(loader, 1) for _ in range(40)]
    assert epochs[0] == per_epoch[0]
    # sources of 1 and 5 clips: the lone clip always, each of the 5 with probability 1/5
    assert all("bsrc000_000000" in e for e in per_epoch)
    assert within(sum(len(e) - 1 for e in per_epoch), 40 * 5, 1 / 5)
    loader = make(b, **kw)
    full = keys(loader, 3)
    again = make(b, **kw)
    it = iter(again)
    head = [next(it)["key"][0]]
    state = again.state_dict()
    del it
    resumed = make(b, **kw)
    resumed.load_state_dict(state)
    assert head + keys(resumed, 3)[: len(full) - 1] == full


def test_resampled_needs_a_number_of_samples_and_the_streaming_loader(sets):
    a, b, _, _ = sets
    with pytest.raises(VtkError, match="--train-num-samples"):
        make(a, resampled=True)
    with pytest.raises(VtkError, match="2 shard sets"):
        make([a, b], weights=[1.0], num_samples=8)
    with pytest.raises(VtkError, match="not with --cache"):
        make(a, resampled=True, num_samples=8, cache="x")


def test_vtk_train_on_weighted_sets_stops_and_resumes_to_the_same_weights(sets, tmp_path,
                                                                         capsys):
    """vtk train A B --data-weights ... --train-num-samples N: a run stopped in its first
    epoch and resumed ends with the weights of the run that was never stopped."""
    import torch
    from data_helpers import run_cli

    from vtk.train import checkpoint

    a, b, _, _ = sets
    common = [str(a), str(b), "--data-weights", "0.6,0.4", "--train-num-samples", "20",
              "--model", "tiny", "--text", "tiny", "--batch-size", "4", "--frames", "2",
              "--size", "16", "--workers", "0", "--steps", "9", "--backend", "pyav",
              "--quiet", "--sampling", "div"]
    assert run_cli(["train", *common, "--out", str(tmp_path / "full")], capsys)[0] == 0
    code, err, _ = run_cli(["train", *common, "--out", str(tmp_path / "part"),
                            "--stop-after", "3"], capsys)
    assert code == 0, err
    saved = checkpoint.load(tmp_path / "part" / "checkpoint.pt")["data"]["ranks"][0]
    assert saved["epoch"] == 0 and saved["workers"][0][2] == 12  # 3 steps x 4 samples taken
    # a resume that names its data states the same mixture: the sets in any order (matched
    # by path), their weights and the sampling options; anything else is refused by name
    resume = ["--out", str(tmp_path / "part"), "--resume", "--quiet"]
    rest = ["--train-num-samples", "20", "--sampling", "div"]
    for args, want in (([b, a, "--data-weights", "0.6,0.4", *rest],
                        "trained with --data-weights 0.6,0.4, resumed with --data-weights "
                        "0.4,0.6"),
                       ([a, b, "--data-weights", "0.6,0.4", "--train-num-samples", "40",
                         "--sampling", "div"], "--train-num-samples 20, resumed with "
                                               "--train-num-samples 40"),
                       ([a, b, "--data-weights", "0.6,0.4", "--train-num-samples", "20"],
                        "trained with --sampling div, resumed with --sampling uniform")):
        code, err, _ = run_cli(["train", *map(str, args), *resume], capsys)
        assert code == 1 and want in err and len(err.strip().splitlines()) == 1, err
    code, err, _ = run_cli(["train", str(b), str(a), "--data-weights", "0.4,0.6", *rest,
                            *resume], capsys)
    assert code == 0, err
    full = checkpoint.load(tmp_path / "full" / "checkpoint.pt")["model"]
    part = checkpoint.load(tmp_path / "part" / "checkpoint.pt")["model"]
    assert all(torch.equal(full[k], part[k]) for k in full)


def test_data_weights_must_be_numbers(capsys):
    from data_helpers import run_cli

    code, err, _ = run_cli(["train", "x", "y", "--data-weights", "a,b", "--out", "r"], capsys)
    assert code != 0 and "Invalid value for --data-weights: 'a,b': give numbers" in err
    for bad in ("nan,1", "inf,1", "1,-inf", "0,0"):  # nan and inf drew every shard from set 0
        code, err, _ = run_cli(["train", "x", "y", "--data-weights", bad, "--out", "r"], capsys)
        assert code != 0 and "finite numbers >= 0, not all 0" in err, (bad, err)


def test_shard_probs_refuse_weights_that_are_not_finite_and_scale_huge_ones():
    for bad in ([float("nan"), 1.0], [float("inf"), 1.0], [0.0, 0.0]):
        with pytest.raises(ValueError):
            order.shard_probs([2, 3], bad)
    # 1e308 + 1e308 overflows to inf: the shares are taken relative to the largest weight
    assert np.allclose(order.shard_probs([2, 3], [1e308, 1e308]), [0.25, 0.25] + [1 / 6] * 3)


def test_a_resume_naming_its_data_keeps_its_sampling_options():
    from vtk.train.config import TrainConfig, resumed_data

    old = TrainConfig(data="a", resampled=True, train_num_samples=8)
    with pytest.raises(VtkError, match="trained with --resampled, resumed with no --resampled"):
        resumed_data(old, {"data": "a", "out": "r", "train_num_samples": 8})
    assert resumed_data(old, {"out": "r"}) is None  # no data named: all from config.json
    assert resumed_data(old, {"data": "a", "out": "r", "resampled": True,
                              "train_num_samples": 8}) == "a"
