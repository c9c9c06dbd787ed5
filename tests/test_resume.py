"""Exact resume of the loader: state_dict() at any batch, load_state_dict() into a fresh loader,
and the batches that follow equal the uninterrupted run's (keys and decoded frames), in order,
through the epoch's end and into the next epoch."""

from __future__ import annotations

import json

import pytest
import torch
from data_helpers import write_shards

from vtk.data.epochs import Batches
from vtk.data.loader import build_loader
from vtk.data.order import scan_samples


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """23 clips in 6 tars (4 x 5 and 3): three workers' shares end in short batches."""
    folder = tmp_path_factory.mktemp("resume")
    write_shards(folder, samples=23, per_shard=4, frames=10, h=32, w=40)
    return folder


def make(shards, **kw):
    args = dict(backend="pyav", frames=2, size=16, train=True, batch_size=3, workers=0,
                seed=3, shuffle_buffer=8)
    return build_loader(shards, **{**args, **kw})


def run(loader, passes: int = 2) -> list[tuple[list[str], torch.Tensor]]:
    return [(b["key"], b["video"].clone()) for _ in range(passes) for b in loader]


def resumed(shards, taken: int, **kw) -> tuple[list, list]:
    """(the first ``taken`` batches of a loader, then what a fresh loader resumed at that
    point gives: the rest of that pass and the next one)."""
    first = make(shards, **kw)
    head, it = [], iter(first)
    for _ in range(taken):
        b = next(it)
        head.append((b["key"], b["video"].clone()))
    state = first.state_dict()
    del it, first
    second = make(shards, **kw)
    second.load_state_dict(state)
    return head, run(second, 2)[: None]


def same(a, b) -> bool:
    return len(a) == len(b) and all(ka == kb and torch.equal(va, vb)
                                    for (ka, va), (kb, vb) in zip(a, b))


@pytest.mark.parametrize("workers, points", [(0, [1, 4, 7, 8]), (2, [1, 3, 6, 7])])
def test_a_resumed_pass_hands_out_the_uninterrupted_batches(shards, workers, points):
    full = run(make(shards, workers=workers), 3)
    per_pass = len(full) // 3
    assert sorted(k for keys, _ in full[:per_pass] for k in keys) == sorted(
        f"src{i:03d}_000000" for i in range(23))  # each clip once per pass
    for taken in points:  # 7 and 8: inside the joined short batches of the pass's end
        head, rest = resumed(shards, taken, workers=workers)
        assert same(head, full[:taken])
        assert same(rest, full[taken:taken + len(rest)]), f"resumed after {taken} batches"
        # the pass's rest, then one whole pass (a pass handed out whole: the next two)
        assert len(rest) == (2 * per_pass - taken if taken < per_pass else 2 * per_pass)


def test_two_ranks_of_two_workers_resume_exactly(shards):
    for rank in (0, 1):
        kw = dict(workers=2, rank=rank, world_size=2)
        full = run(make(shards, **kw), 2)
        for taken in (1, 2):
            head, rest = resumed(shards, taken, **kw)
            assert same(rest[: len(full) - taken], full[taken:]), (rank, taken)


def test_resume_never_reads_a_skipped_clip(shards, monkeypatch):
    """Resumed late in a pass, the loader decodes only the clips it hands out (plus none)."""
    from vtk.data.stream import ShardStream

    full = run(make(shards), 1)
    state_after = {}
    loader = make(shards)
    for i, _ in enumerate(loader):
        if i == len(full) - 3:  # 2 batches left
            state_after = loader.state_dict()
            break
    decoded = []
    real = ShardStream.read

    def counting(self, sample):
        decoded.append(sample["__key__"])
        return real(self, sample)

    monkeypatch.setattr(ShardStream, "read", counting)
    again = make(shards)
    again.load_state_dict(state_after)
    handed = [k for b in again for k in b["key"]]
    assert sorted(decoded) == sorted(handed)
    assert handed == [k for keys, _ in full[-2:] for k in keys]


def test_frame_cache_resumes_exactly(shards, tmp_path):
    kw = dict(cache=tmp_path / "cache")
    full = run(make(shards, **kw), 2)
    for taken in (1, 5):
        head, rest = resumed(shards, taken, **kw)
        assert same(rest, full[taken:taken + len(rest)]) and len(rest) >= len(full) - taken


def test_batches_position_resumes_training_batches(shards):
    """``Batches`` (vtk train's view): state_dict() before a warm batch, then a resume there."""
    loader = make(shards, workers=2)
    batches = Batches(loader, 3)
    seq = [next(batches)["key"] for _ in range(5)]
    batches.warm()
    pos = batches.state_dict()
    more = [next(batches)["key"] for _ in range(4)]
    again = Batches(make(shards, workers=2), 3)
    again.load_state_dict(pos)
    assert [next(again)["key"] for _ in range(4)] == more
    assert seq  # the first five came from the first pass


def test_a_position_saved_with_other_workers_is_refused(shards):
    loader = make(shards, workers=2)
    it = iter(loader)
    next(it)
    state = loader.state_dict()
    del it
    with pytest.raises(Exception, match="saved with 2 loader workers"):
        make(shards, workers=0).load_state_dict(state)


def test_scan_lists_samples_from_headers_without_reading_data(shards):
    tar = sorted(shards.glob("*.tar"))[0]
    entries = scan_samples(str(tar))
    assert [e.key for e in entries] == [f"src{i:03d}_000000" for i in range(4)]
    assert {ext for ext, _, _ in entries[0].members} >= {"mp4", "json"}
    raw = tar.read_bytes()
    ext, offset, size = next(m for m in entries[1].members if m[0] == "json")
    assert b'"source": "src1"' in raw[offset:offset + size]


def test_a_tar_is_listed_once_for_every_pass_and_from_its_index(tmp_path, monkeypatch):
    """A pass starts without walking the tar headers again: each tar is listed once (from its
    ``.idx`` when that is current) and the listing serves the later passes; a tar written
    again is listed again, and an index older than its tar is not trusted."""
    import os
    import time

    from vtk.data import order
    from vtk.shards.wds_index import write_index

    tars = write_shards(tmp_path, samples=10, per_shard=4, frames=6, h=16, w=16)
    for tar in tars[:2]:
        write_index(tar)
    listed, scanned = [], []
    real_list, real_scan = order.list_entries, order.scan_headers
    monkeypatch.setattr(order, "list_entries", lambda p, *a: listed.append(p) or real_list(p, *a))
    monkeypatch.setattr(order, "scan_headers", lambda p, *a: scanned.append(p) or real_scan(p, *a))
    loader = make(tmp_path, frames=2, size=8, batch_size=4)
    passes = [sorted(k for b in loader for k in b["key"]) for _ in range(3)]
    assert passes[0] == passes[1] == passes[2] == [f"src{i:03d}_000000" for i in range(10)]
    assert sorted(listed) == sorted(tars) and scanned == [tars[2]]  # the third has no .idx
    # the index gives what the headers give
    assert [(e.key, e.members) for e in real_list(tars[0]).entries] == \
        [(e.key, e.members) for e in real_scan(tars[0])]
    # a tar written again (here: the same bytes, a new time) is listed again; its index is
    # now older than it, so from its headers
    later = time.time() + 5
    os.utime(tars[0], (later, later))
    listed.clear()
    assert sorted(k for b in loader for k in b["key"]) == passes[0]
    assert listed == [tars[0]] and scanned[-1] == tars[0]


@pytest.mark.parametrize("context", ["spawn", "forkserver"])
def test_the_slot_hand_over_works_under_spawn_and_forkserver(shards, context):
    """Workers started without fork get the ring, the pass state and the stats by pickling
    (shared memory handles): the batches equal fork's, came through the ring, and resume."""
    fork = run(make(shards, workers=2), 1)
    loader = make(shards, workers=2, context=context)
    it = iter(loader)
    got = [(b["key"], b["video"].clone()) for b in (next(it), next(it))]
    state = loader.state_dict()
    got += [(b["key"], b["video"].clone()) for b in it]
    assert same(got, fork) and loader.unslotted == 0 and loader.stats["samples"] == 23
    resumed_loader = make(shards, workers=2, context=context)
    resumed_loader.load_state_dict(state)
    assert same(run(resumed_loader, 1), fork[2:])


def test_bench_resume_writes_state_and_replay_seconds_at_three_points(shards, tmp_path):
    from click.testing import CliRunner

    from vtk.cli import cli

    out = tmp_path / "r.json"
    res = CliRunner().invoke(cli, ["bench", "resume", str(shards), "--frames", "2", "--size",
                                    "16", "--batch-size", "3", "--json", str(out)])
    assert res.exit_code == 0, res.output
    got = json.loads(out.read_text())
    assert [p["point"] for p in got["points"]] == [0.1, 0.5, 0.9]
    assert [p["batches_before"] for p in got["points"]] == [1, 4, 7]  # of 8 batches
    assert all(p["state_s"] > 0 and p["replay_s"] > 0 for p in got["points"])


def test_the_state_between_iter_and_the_first_batch_is_the_pass_start(shards):
    loader = make(shards)
    it = iter(loader)
    assert loader.state_dict() == {"epoch": 0}
    next(it)
    state = loader.state_dict()
    again = make(shards)
    again.load_state_dict(state)
    it2 = iter(again)
    assert again.state_dict() == state  # not yet moved
    del it, it2
