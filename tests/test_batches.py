"""Batch memory: shared slots handed to the consumer and given back only when unreferenced."""

import numpy as np
import pytest
import torch

from vtk.data.batches import (
    FREE,
    HELD,
    BatchWriter,
    BufferPool,
    Part,
    SlotRing,
    Tails,
    shared_empty,
    sole_owner,
)


def test_shared_empty_is_shared_and_owned_alone_until_aliased():
    t = shared_empty((4, 5), torch.float32)
    assert t.is_shared() and t.shape == (4, 5) and t.dtype == torch.float32
    assert sole_owner(t)
    view = t[1:]
    assert not sole_owner(t)
    del view
    arr = t.numpy()
    assert not sole_owner(t)
    del arr
    assert sole_owner(t)


def test_ring_slots_cycle_and_a_kept_batch_is_never_handed_back():
    ring = SlotRing(workers=0, slots=2, batch_size=3, clip_shape=(2,), dtype=torch.uint8)
    a, b = ring.claim(), ring.claim()
    assert {a, b} == {(0, 0), (0, 1)} and ring.claim() is None  # both FILLING
    ring.buffer(a).fill_(7)
    kept = ring.hand_out(a, 2)
    assert kept.shape == (2, 2) and int(kept.sum()) == 28 and int(ring.state[a]) == HELD
    ring.hand_out(b, 3)  # the alias is dropped at once
    ring.reclaim()
    assert int(ring.state[b]) == FREE and int(ring.state[a]) == HELD  # `kept` still holds a
    assert ring.claim() == b and ring.claim() is None
    del kept
    ring.reclaim()
    assert ring.claim() == a


def test_a_new_pass_frees_only_slots_left_filling():
    ring = SlotRing(workers=0, slots=3, batch_size=1, clip_shape=(1,), dtype=torch.uint8)
    held, filling = ring.claim(), ring.claim()
    alias = ring.hand_out(held, 1)
    ring.start_pass()
    assert int(ring.state[filling]) == FREE and int(ring.state[held]) == HELD
    del alias


def test_writer_fills_slots_in_place_and_falls_back_when_all_are_taken():
    ring = SlotRing(workers=0, slots=1, batch_size=2, clip_shape=(3,), dtype=torch.float32)
    w = BatchWriter(2, (3,), torch.float32, ring)
    for i in range(2):
        w.clip_out().fill_(i)
        batch = w.add({"text": f"t{i}", "key": f"k{i}", "label": None, "texts": [], "meta": {}})
    assert batch.slot == (0, 0) and batch.video is None and batch.fields["key"] == ["k0", "k1"]
    assert ring.buffer((0, 0))[:, 0].tolist() == [0.0, 1.0]
    w.clip_out().fill_(5)  # the only slot is still FILLING: a buffer of its own
    last = w.add({"text": "t", "key": "k2", "label": None, "texts": [], "meta": {}}) or w.flush()
    assert last.slot is None and last.video.tolist() == [[5.0, 5.0, 5.0]]


def test_pool_reuses_a_buffer_only_once_nothing_references_it():
    pool = BufferPool(keep=2)
    a = pool.take((2, 3), torch.float32)
    b = pool.take((2, 3), torch.float32)
    assert a.data_ptr() != b.data_ptr()
    ptr = a.data_ptr()
    arr = np.asarray(a)
    del a
    c = pool.take((2, 3), torch.float32)  # `arr` still shares a's memory
    assert c.data_ptr() != ptr
    del arr, c
    assert pool.take((2, 3), torch.float32).data_ptr() == ptr  # b is still held


@pytest.mark.parametrize("room", [True, False])
def test_tails_join_short_batches_into_whole_ones_in_order(room):
    def short(first, n):
        """n clips numbered from ``first``, as the first rows of a 3-row buffer (a slot) or
        in a tensor of their own"""
        buf = torch.zeros((3 if room else n, 4), dtype=torch.uint8)
        buf[:n] = torch.arange(first, first + n, dtype=torch.uint8).view(n, 1)
        keys = [f"k{first + i}" for i in range(n)]
        return {"video": buf[:n], "key": keys, "text": [k.upper() for k in keys]}

    tails = Tails(batch_size=3)
    head = short(0, 2)
    assert tails.add(Part(head, worker=0, end=(1, 0))) is None  # 2 of 3
    whole = tails.add(Part(short(2, 2), worker=1, end=(2, 0)))  # 4: one whole batch, 1 over
    assert tails.finished() == [(0, (1, 0))] and tails.pending() == [[1, 1]]
    assert whole["key"] == ["k0", "k1", "k2"] and whole["text"] == ["K0", "K1", "K2"]
    assert whole["video"][:, 0].tolist() == [0, 1, 2]
    # with room, the first short batch's buffer is filled up: no new tensor
    assert (whole["video"].data_ptr() == head["video"].data_ptr()) == room
    assert tails.add(Part(short(4, 1), worker=2)) is None  # 2 of 3
    last = tails.rest()
    assert last["key"] == ["k3", "k4"] and last["video"][:, 0].tolist() == [3, 4]
    assert tails.rest() is None


def test_resumed_tails_join_the_saved_parts_first_in_the_saved_order():
    """A resumed pass gets its pending parts again in worker order; they are joined in the
    order they were saved with, their handed-out rows left out, before any newer part."""
    def part(worker, first, n):
        keys = [f"w{worker}-{first + i}" for i in range(n)]
        video = torch.arange(first, first + n, dtype=torch.uint8).view(n, 1)
        return Part({"video": video, "key": keys}, worker=worker, end=(9, 0))

    tails = Tails(batch_size=3, expect=[(2, 1), (0, 0)])
    assert tails.add(part(1, 0, 2)) is None  # not expected: waits behind the saved ones
    assert tails.pending() == [[2, 1], [0, 0], [1, 0]]
    assert tails.add(part(0, 0, 1)) is None
    whole = tails.add(part(2, 0, 2))  # its first row went into a batch before the save
    assert whole["key"] == ["w2-1", "w0-0", "w1-0"]
    assert tails.rest()["key"] == ["w1-1"]


def test_without_the_storage_use_count_the_loader_warns_once_and_uses_fresh_buffers(
        monkeypatch):
    import vtk.data.batches as B

    monkeypatch.delattr(torch._C, "_storage_Use_Count")
    monkeypatch.setattr(B, "_warned_no_reuse", False)
    with pytest.warns(RuntimeWarning, match="_storage_Use_Count"):
        assert not B.slot_reuse_available()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not B.slot_reuse_available()  # once only
