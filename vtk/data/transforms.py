"""Clip transforms on uint8 frames with OpenCV: resize, flip, and normalise into planar
float32 in one pass (torchvision does not import beside the torch this project pins; torch
normalises batches that arrive as uint8).

Input: uint8 tensor ``T x H x W x 3`` (what every decoder returns). Output: float32
``T x 3 x S x S``, normalised. One crop and one flip per clip, so motion stays coherent.

- train: RandomResizedCrop (area scale 0.5-1, aspect 3/4-4/3, as torchvision) + horizontal flip
  with probability 1/2 (ViCLIP's training augmentation);
- eval: resize the short side to S and take the centre S x S square. Cropping the centre
  square first and then resizing it gives the same pixels and resizes less. ``whole=True``
  resizes the whole frame to S x S instead, aspect not kept (InternVid's test transform).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

NORMS = {
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),  # plain [0, 1] floats
}


def random_resized_box(h: int, w: int, rng: np.random.Generator, scale=(0.5, 1.0),
                       ratio=(3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a random crop covering ``scale`` of the area with aspect
    in ``ratio`` (log-uniform); after 10 misses, the largest centred crop in range."""
    area = h * w
    log_r = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_r))
        cw = int(round(math.sqrt(target * aspect)))
        ch = int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            return int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw
    in_ratio = w / h
    if in_ratio < ratio[0]:
        cw, ch = w, int(round(w / ratio[0]))
    elif in_ratio > ratio[1]:
        ch, cw = h, int(round(h * ratio[1]))
    else:
        ch, cw = h, w
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def center_box(h: int, w: int) -> tuple[int, int, int, int]:
    """(top, left, side, side) of the centre square."""
    s = min(h, w)
    return (h - s) // 2, (w - s) // 2, s, s


def crop_resize(frames, box, size: int, flip: bool = False, out: torch.Tensor | None = None,
                norm: str | None = None) -> torch.Tensor:
    """uint8 T x H x W x 3 (torch or numpy) -> T x 3 x size x size, contiguous: uint8, or
    float32 normalised with the named statistics when ``norm`` is given.

    Frame by frame with OpenCV, straight from the crop window (no copy of the crop) into
    ``out`` when given: a loader worker writes each clip into its slot of the batch, so no
    collate copy and no separate normalising pass over the batch follow. Bilinear, with area
    averaging (antialiased) for shrinks of 2x and more. Its cost per clip:
    docs/results/timings.md.
    """
    import cv2

    src = frames.numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if src.strides[-1] != 1 or src.strides[-2] != 3:  # OpenCV reads interleaved rows only
        src = np.ascontiguousarray(src)
    t = src.shape[0]
    top, left, ch, cw = box
    if out is None:
        out = torch.empty((t, 3, size, size), dtype=torch.uint8 if norm is None else torch.float32)
    elif tuple(out.shape) != (t, 3, size, size):  # a short clip must not leave stale rows
        raise ValueError(f"crop_resize: {t} frames for an output of shape {tuple(out.shape)}")
    dst = out.numpy()
    # area averaging only where bilinear would skip whole pixels (2x and more), and only on
    # both axes: on a mixed or mild shrink it is 3x slower than bilinear for no visible gain
    interp = cv2.INTER_AREA if ch >= 2 * size and cw >= 2 * size else cv2.INTER_LINEAR
    tmp = np.empty((t, size, size, 3), np.uint8)
    for i in range(t):
        window = src[i, top:top + ch, left:left + cw]
        if (ch, cw) == (size, size):
            tmp[i] = window
        else:
            cv2.resize(window, (size, size), dst=tmp[i], interpolation=interp)
        if flip:
            cv2.flip(tmp[i], 1, dst=tmp[i])
        if norm is None:
            cv2.split(tmp[i], list(dst[i]))  # interleaved -> three planes, in place
    if norm is not None:
        _planar_float(norm, size)(tmp, dst)  # the clip's frames in one call
    return out


@functools.lru_cache(maxsize=16)
def _planar_float(norm: str, size: int):
    """``f(thwc_uint8, out_tx3xSxS)``: (x - 255 mean) / (255 std) into planar float32, one pass
    (OpenCV's blobFromImages where it exists, one call for a clip's frames, else split + three
    torch ops a frame; docs/results/timings.md)."""
    import cv2

    if norm not in NORMS:
        raise ValueError(f"unknown normalisation {norm!r}; choose one of {sorted(NORMS)}")
    mean, std = NORMS[norm]
    if hasattr(cv2.dnn, "Image2BlobParams"):  # OpenCV >= 4.8
        p = cv2.dnn.Image2BlobParams()
        p.scalefactor = (*(1.0 / (255.0 * v) for v in std), 0.0)
        p.mean = (*(255.0 * v for v in mean), 0.0)
        p.size, p.ddepth, p.swapRB = (size, size), cv2.CV_32F, False
        # OpenCV 4 names the layout cv2.dnn.DNN_LAYOUT_NCHW, OpenCV 5 cv2.DNN_LAYOUT_NCHW
        nchw = getattr(cv2, "DNN_LAYOUT_NCHW", None) or cv2.dnn.DNN_LAYOUT_NCHW
        p.datalayout, p.paddingmode = nchw, cv2.dnn.DNN_PMODE_NULL
        return lambda images, out: cv2.dnn.blobFromImagesWithParams(list(images), out, p)
    planes = np.empty((3, size, size), np.uint8)

    def split_then_normalize(images, out):
        for img, o in zip(images, out):
            cv2.split(img, list(planes))
            normalize(torch.from_numpy(planes), norm, out=torch.from_numpy(o))

    return split_then_normalize


def normalize(x: torch.Tensor, name: str = "clip", out: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 ... x 3 x H x W -> contiguous float32 (x / 255 - mean) / std, named statistics.
    Runs on x's device: a loader built with ``uint8=True`` leaves this to the GPU.
    ``out``: a float32 tensor of x's shape to write into (the loader reuses its buffers)."""
    if name not in NORMS:
        raise ValueError(f"unknown normalisation {name!r}; choose one of {sorted(NORMS)}")
    mean, std = NORMS[name]
    m = torch.tensor([255.0 * v for v in mean], device=x.device).view(3, 1, 1)
    inv = torch.tensor([1.0 / (255.0 * v) for v in std], device=x.device).view(3, 1, 1)
    if x.dim() < 4 or x.device.type != "cpu":
        return x.float().sub_(m).mul_(inv) if out is None else out.copy_(x).sub_(m).mul_(inv)
    # frame by frame, so each frame's three passes stay in cache (docs/results/timings.md)
    if out is None:
        out = torch.empty(x.shape, dtype=torch.float32)
    for o, frame in zip(out.view(-1, *x.shape[-3:]), x.reshape(-1, *x.shape[-3:])):
        o.copy_(frame).sub_(m).mul_(inv)
    return out


def train_crop(frames: torch.Tensor, size: int, rng: np.random.Generator,
               scale=(0.5, 1.0), flip: bool | None = None,
               out: torch.Tensor | None = None, norm: str | None = None) -> torch.Tensor:
    """RandomResizedCrop + horizontal flip: uint8 TxHxWx3 -> uint8 Tx3xSxS. ``flip=None``
    draws it (p = 0.5); the loader decides it beforehand so the caption can follow."""
    _, h, w, _ = frames.shape
    box = random_resized_box(h, w, rng, scale)
    if flip is None:
        flip = bool(rng.random() < 0.5)
    return crop_resize(frames, box, size, flip=flip, out=out, norm=norm)


def eval_crop(frames: torch.Tensor, size: int, out: torch.Tensor | None = None,
              norm: str | None = None, whole: bool = False) -> torch.Tensor:
    """Short side to ``size`` + centre crop (``whole``: the whole frame to ``size`` x ``size``):
    uint8 TxHxWx3 -> uint8 Tx3xSxS (or normalised float32 with ``norm``)."""
    _, h, w, _ = frames.shape
    return crop_resize(frames, (0, 0, h, w) if whole else center_box(h, w), size, out=out,
                       norm=norm)
