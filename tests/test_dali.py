"""The DALI path on DALI's CPU decoder: VP9 shards from the project's shard writer.

Runs where nvidia-dali is installed (tox env ``core``); elsewhere it skips. On a GPU the same
pipeline runs with ``device="mixed"`` on H.264 shards.
"""

import shutil

import pytest
import torch

pytest.importorskip("nvidia.dali")

from vtk.cli import main  # noqa: E402
from vtk.data.loader import build_loader  # noqa: E402
from vtk.errors import VtkError  # noqa: E402

pytestmark = pytest.mark.dali
N = 12


@pytest.fixture(scope="module")
def vp9_shards(tmp_path_factory):
    """12 synthetic clips (64 px, 16 frames), VP9, 5 per tar, with DALI .idx files."""
    out = tmp_path_factory.mktemp("vp9") / "set"
    main(["shard", "synth:train?n=12&seed=3", "--out", str(out), "--codec", "vp9",
          "--samples-per-shard", "5", "--workers", "1", "--quiet"])
    assert len(list(out.glob("*.idx"))) == 3
    return out


def keys(loader):
    return [k for b in loader for k in b["key"]]


def test_eval_reads_every_clip_once_in_order_with_the_batch_contract(vp9_shards):
    loader = build_loader(vp9_shards, backend="dali", frames=8, size=32, train=False,
                          batch_size=5, device="cpu", captions="txt")
    batches = list(loader)
    assert [len(b["key"]) for b in batches] == [5, 5, 2]
    b = batches[0]
    assert b["video"].shape == (5, 8, 3, 32, 32) and b["video"].dtype == torch.float32
    assert all(m["codec"] == "vp9" and m["num_frames"] == 16 for m in b["meta"])
    assert b["key"][0].endswith("000000_000000")
    assert keys(loader) == [k for bb in batches for k in bb["key"]]  # the next epoch: same
    assert loader.stats["samples"] == 2 * N


def test_an_abandoned_pass_leaves_the_next_one_whole(vp9_shards):
    loader = build_loader(vp9_shards, backend="dali", frames=4, size=32, train=False,
                          batch_size=5, device="cpu", captions="txt")
    whole = keys(loader)
    assert len(whole) == N
    first = next(iter(loader))  # one batch, then the pass is dropped
    assert first["key"] == whole[:5]
    assert keys(loader) == whole  # not the 7 clips the dropped pass had left


@pytest.mark.parametrize("frames", [8, 5, 24])  # 24 > 16 frames: repeats, as the sampler
def test_same_frames_as_pyav(vp9_shards, frames):
    kw = dict(frames=frames, size=64, train=False, batch_size=N, captions="txt")
    ref = next(iter(build_loader(vp9_shards, backend="pyav", workers=0, **kw)))
    got = next(iter(build_loader(vp9_shards, backend="dali", device="cpu", **kw)))
    assert got["key"] == ref["key"]
    diff = (got["video"] - ref["video"]).abs().mean().item()
    assert diff < 0.05, diff  # normalised units: about 3 grey levels / 255 / 0.27


def test_training_epochs_are_shuffled_permutations(vp9_shards):
    loader = build_loader(vp9_shards, backend="dali", frames=4, size=32, train=True,
                          batch_size=5, device="cpu", seed=1)
    e0, e1 = keys(loader), keys(loader)
    assert sorted(e0) == sorted(e1) and len(set(e0)) == N
    assert e0 != e1


def test_two_ranks_split_the_clips_exactly(vp9_shards):
    seen = []
    for rank in range(2):
        seen += keys(build_loader(vp9_shards, backend="dali", frames=2, size=16, train=False,
                                  batch_size=4, device="cpu", rank=rank, world_size=2))
    assert len(seen) == len(set(seen)) == N


def corrupt_copy(vp9_shards, tmp_path, which):
    """A copy of the set with the mp4s of samples ``which`` (global order) overwritten by
    garbage of the same length: the tars and .idx files stay valid, the videos do not."""
    import tarfile

    copy = tmp_path / "bad"
    shutil.copytree(vp9_shards, copy)
    mp4s = []
    for tar in sorted(copy.glob("*.tar")):
        with tarfile.open(tar) as tf:
            mp4s += [(tar, m) for m in tf if m.name.endswith(".mp4")]
    bad = []
    for i in which:
        tar, m = mp4s[i]
        with open(tar, "r+b") as f:
            f.seek(m.offset_data)
            f.write((b"\x00garbage!" * m.size)[:m.size])
        bad.append(m.name.split(".")[0])
    return copy, bad


@pytest.mark.parametrize("train", [False, True])
def test_corrupt_samples_are_skipped_counted_and_the_pass_goes_on(vp9_shards, tmp_path, train):
    """DALI's pipeline dies on a bad mp4; the loader rebuilds it over what is left, so each
    pass still hands out every good clip exactly once, and later passes skip the bad ones."""
    copy, bad = corrupt_copy(vp9_shards, tmp_path, which=[2, 7])
    loader = build_loader(copy, backend="dali", frames=4, size=16, train=train, batch_size=5,
                          device="cpu", seed=2)
    with pytest.warns(RuntimeWarning, match="DALI could not decode"):
        e0 = keys(loader)
    e1 = keys(loader)
    for epoch in (e0, e1):
        assert len(epoch) == len(set(epoch)) == N - 2 and not set(bad) & set(epoch)
    assert loader.stats["corrupt"] == 2 and loader.stats["samples"] == 2 * (N - 2)
    if train:
        assert e0 != e1  # the rebuilt pipeline does not replay the first one's shuffle


def test_two_ranks_split_exactly_when_one_meets_a_corrupt_sample(vp9_shards, tmp_path):
    copy, bad = corrupt_copy(vp9_shards, tmp_path, which=[1])  # in rank 0's half
    seen = []
    for rank in range(2):
        loader = build_loader(copy, backend="dali", frames=2, size=16, train=False,
                              batch_size=4, device="cpu", rank=rank, world_size=2)
        for _ in range(2):
            seen += keys(loader)
    assert len(seen) == len(set(seen)) * 2 == 2 * (N - 1)


def test_cpu_refuses_h264_and_a_missing_index_is_read_from_the_headers(synth_shards,
                                                                        vp9_shards, tmp_path):
    with pytest.raises(VtkError, match="VP8/VP9/MJPEG"):
        build_loader(synth_shards, backend="dali", device="cpu")
    copy = tmp_path / "noidx"
    shutil.copytree(vp9_shards, copy)
    next(copy.glob("*.idx")).unlink()
    kw = dict(backend="dali", device="cpu", frames=2, size=16, train=False, batch_size=4)
    assert keys(build_loader(copy, **kw)) == keys(build_loader(vp9_shards, **kw))


def test_mirrored_views_swap_left_and_right_in_captions(tmp_path):
    """The mirror drawn inside the DALI graph reaches the caption (flip=swap)."""
    from vtk.data.samples import mirror_text

    out = tmp_path / "cap"
    main(["shard", "synth:train?n=16&seed=4&size=32", "--out", str(out), "--codec", "vp9",
          "--captions", "fine", "--workers", "1", "--quiet"])

    def texts(flip):
        loader = build_loader(out, backend="dali", frames=4, size=32, train=True, batch_size=8,
                              device="cpu", captions="fine", flip=flip, seed=1)
        return {k: t for b in loader for k, t in zip(b["key"], b["text"])}

    off, swap = texts("off"), texts("swap")
    assert off.keys() == swap.keys()
    assert all(swap[k] in (off[k], mirror_text(off[k])) for k in off)
    sided = [k for k in off if mirror_text(off[k]) != off[k]]
    assert sided and any(swap[k] != off[k] for k in sided)


def test_mixed_captions_are_the_draw_of_the_other_paths(tmp_path):
    out = tmp_path / "captioned"
    main(["shard", "synth:train?n=10&seed=5", "--out", str(out), "--codec", "vp9",
          "--captions", "both", "--workers", "1", "--quiet"])
    kw = dict(frames=2, size=16, train=False, batch_size=10, captions="mixed", seed=3)
    ref = next(iter(build_loader(out, backend="pyav", workers=0, **kw)))
    got = next(iter(build_loader(out, backend="dali", device="cpu", **kw)))
    coarse = {m["captions"]["coarse"] for m in ref["meta"]}
    assert 0 < sum(t in coarse for t in ref["text"]) < 10  # both kinds were drawn
    assert dict(zip(got["key"], got["text"])) == dict(zip(ref["key"], ref["text"]))


@pytest.mark.parametrize("train", [False, True])
def test_a_resumed_dali_loader_hands_out_the_uninterrupted_batches(vp9_shards, train):
    """The loader state: a fresh loader resumed after 2 batches gives the uninterrupted
    loader's keys and frames to the end of the next epoch."""
    def make():
        return build_loader(vp9_shards, backend="dali", frames=4, size=32, train=train,
                            batch_size=3, device="cpu", seed=1)

    def take(loader, passes):
        return [(b["key"], b["video"].clone()) for _ in range(passes) for b in loader]

    full = take(make(), 2)
    first = make()
    it = iter(first)
    head = [next(it)["key"] for _ in range(2)]
    state = first.state_dict()
    assert state["epoch"] == 0 and state["next"] == 6 and head == [k for k, _ in full[:2]]
    again = make()
    again.load_state_dict(state)
    rest = take(again, 2)[: len(full) - 2]
    assert [k for k, _ in rest] == [k for k, _ in full[2:]]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(rest, full[2:]))


def test_dali_training_views_are_the_streaming_paths_views(vp9_shards):
    """Frames, flip and crop box are drawn on the host from (seed, epoch, key), as the
    streaming loader draws them: the same clips look alike on both paths."""
    kw = dict(frames=4, size=32, train=True, batch_size=N, seed=4)
    ref = next(iter(build_loader(vp9_shards, backend="pyav", workers=0, **kw)))
    got = next(iter(build_loader(vp9_shards, backend="dali", device="cpu", **kw)))
    by_key = dict(zip(ref["key"], ref["video"]))
    diffs = [(v - by_key[k]).abs().mean().item() for k, v in zip(got["key"], got["video"])]
    assert sorted(got["key"]) == sorted(ref["key"])
    assert max(diffs) < 0.1, diffs  # resize kernels differ a little; a wrong box does not
