"""One long video cut into scenes by several workers (vtk.clips.segments): the parts, put back
together, give the clips a single pass gives, byte for byte."""

from __future__ import annotations

import numpy as np
import pytest

from vtk.clips import ClipConfig, encode_mp4
from vtk.clips import segments as S
from vtk.shards import build as B
from vtk.types import SourceItem

FPS = 24
# scene lengths in source frames: flashes shorter than min_scene_len (15) the flash filter
# merges, scenes shorter than min_clip, and long ones that max_clip splits
SCENES = [70, 40, 6, 9, 200, 30, 13, 90, 48, 120, 5, 60, 17, 150, 36, 80, 14, 3, 110, 66]


@pytest.fixture(scope="module")
def film(tmp_path_factory):
    """A 49 s file of hard cuts between textured scenes, a keyframe every 12 frames."""
    rng = np.random.default_rng(7)
    frames = []
    for n in SCENES:
        colour = rng.integers(30, 226, size=3)
        texture = colour + rng.integers(-20, 20, size=(48, 64, 3))
        for _ in range(n):
            noise = rng.integers(-2, 3, size=(48, 64, 3))
            frames.append(np.clip(texture + noise, 0, 255).astype(np.uint8))
    path = tmp_path_factory.mktemp("segments") / "film.mp4"
    path.write_bytes(encode_mp4(np.stack(frames), FPS, gop=12))
    return str(path)


CFG = ClipConfig(mode="scenes", fps=8, min_clip=1.0, max_clip=2.5, size=48)


def clips(results):
    return [(s["__key__"], s["json"]["start"], s["json"]["end"], s["json"]["num_frames"],
             s["mp4"]) for r in results for s in r.samples]


@pytest.fixture(scope="module")
def single(film):
    B.init_worker(CFG, "h264", None)
    return B.process_source(SourceItem(id="film", path=film))


def test_the_single_pass_finds_the_known_cuts(single):
    starts = np.cumsum([0] + SCENES[:-1]) / FPS
    got = [c[1] for c in clips([single])]
    # every clip starts at a scene's first frame (or splits a long scene)
    assert set(np.round(starts, 4)) & set(got) and single.cuts >= 12
    assert all(any(abs(g - s) < 1e-3 or g > s for s in starts) for g in got)


@pytest.mark.parametrize("parts", [2, 3, 4, 5])
def test_parts_give_the_single_pass_clips(film, single, parts, monkeypatch):
    monkeypatch.setattr(S, "MIN_PART_S", 3.0)
    item = SourceItem(id="film", path=film)
    segs = B.file_parts(item, CFG, parts)
    assert segs is not None and len(segs) == parts
    assert [s.start for s in segs] == sorted({s.start for s in segs}) and segs[0].start == 0
    B.init_worker(CFG, "h264", None)
    results = [B.process_source(item, seg) for seg in segs]
    merged = B.merge_parts(item, segs, results, CFG)
    assert merged is not None, "the parts did not agree with one pass"
    assert clips([merged]) == clips([single])
    assert (merged.cuts, merged.frames_decoded) == (single.cuts, single.frames_decoded)


def test_a_part_that_cut_elsewhere_is_not_kept(film, monkeypatch):
    monkeypatch.setattr(S, "MIN_PART_S", 3.0)
    item = SourceItem(id="film", path=film)
    segs = B.file_parts(item, CFG, 3)
    B.init_worker(CFG, "h264", None)
    results = [B.process_source(item, seg) for seg in segs]
    report = results[1].segment
    report["cuts"] = [c + 1 if segs[1].start <= c else c for c in report["cuts"]]
    assert B.merge_parts(item, segs, results, CFG) is None  # the caller cuts it in one pass


def test_short_or_variable_rate_files_are_not_split(film, tmp_path):
    assert S.plan(film, 2, overlap=16) is None  # 49 s: under 2 x MIN_PART_S
    assert B.file_parts(SourceItem(id="film", path=film), CFG, 1) is None
