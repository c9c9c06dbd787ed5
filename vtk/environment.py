"""What a vtk process runs on: the device it computes on, and the versions of what shapes its
results (recorded in shard cards and run summaries)."""

from __future__ import annotations

import importlib
import platform

from vtk.errors import VtkError


def pick_device(name: str | None = "auto", local_rank: int = 0):
    """A ``torch.device`` from ``auto`` (a GPU when one is visible, else the CPU), ``cpu``,
    ``cuda`` (this process's GPU: ``local_rank``'s under torchrun) or ``cuda:N``; a VtkError
    when CUDA is asked for and none is visible."""
    import torch

    name = name or "auto"
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise VtkError(f"--device {name}: no CUDA device is visible; use --device cpu")
        return torch.device(name if ":" in name else f"cuda:{local_rank}")
    return torch.device(name)


def versions(*modules: str) -> dict:
    """vtk's and Python's versions, and those of ``modules`` (import names; a key's name is
    the module's, ``cv2`` as ``opencv``)."""
    from vtk import __version__

    out = {"vtk": __version__, "python": platform.python_version()}
    for name in modules:
        module = importlib.import_module(name)
        out["opencv" if name == "cv2" else name] = module.__version__
        if name == "av":  # the FFmpeg inside PyAV's wheel decodes and encodes every clip
            out["ffmpeg_libavcodec"] = ".".join(map(str, module.library_versions["libavcodec"]))
    return out
