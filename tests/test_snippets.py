"""The reading snippets of docs/shards.md run as written, on a real shard set."""

import re
from pathlib import Path

import pytest
from train_helpers import write_synth_shards

DOC = Path(__file__).resolve().parents[1] / "docs" / "shards.md"


def snippet(name: str) -> str:
    m = re.search(rf"<!-- snippet: {name} -->\n```python\n(.*?)```", DOC.read_text(), re.S)
    assert m, f"docs/shards.md has no '{name}' snippet"
    return m[1]


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    from vtk.shards.wds_index import write_index

    folder = write_synth_shards(tmp_path_factory.mktemp("snippets") / "set", n=6, per_shard=3)
    for tar in sorted(Path(folder).glob("*.tar")):
        write_index(str(tar))
    return folder


def run(name: str, folder: str) -> dict:
    scope = {"DIR": folder}
    exec(compile(snippet(name), f"docs/shards.md:{name}", "exec"), scope)
    return scope


def test_webdataset_snippet(shard_dir):
    sample = run("webdataset", shard_dir)["sample"]
    assert sample["video"].shape == (8, 32, 32, 3)
    assert sample["caption"] == sample["meta"]["captions"]["fine"]


def test_hf_datasets_snippet(shard_dir, tmp_path, monkeypatch):
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    sample = run("hf-datasets", shard_dir)["sample"]
    assert sample["mp4"]["bytes"][4:8] == b"ftyp"  # the clip's bytes, undecoded
    assert sample["txt"] == sample["json"]["captions"]["fine"]


@pytest.mark.dali
def test_dali_snippet(shard_dir):
    pytest.importorskip("nvidia.dali")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("the DALI snippet decodes on the GPU (device='mixed')")
    scope = run("dali", shard_dir)
    assert len(scope["txt"]) == 2 and scope["video"].as_cpu().as_array().shape[-3:] == (32, 32, 3)


@pytest.fixture(scope="module")
def vp9_dir(tmp_path_factory):
    """A real VP9 set from `vtk shard` (4 clips of 16 frames, 32 px, two tars, .idx files)."""
    from vtk.cli import main

    out = tmp_path_factory.mktemp("snippets-vp9") / "set"
    main(["shard", "synth:train?n=4&size=32&seed=1", "--out", str(out), "--codec", "vp9",
          "--captions", "fine", "--samples-per-shard", "3", "--workers", "1", "--quiet"])
    return str(out)


@pytest.mark.dali
def test_dali_cpu_snippet(vp9_dir):
    """The CPU snippet as written: DALI's CPU decoder on the VP9 set gives the first two
    clips' frames (as PyAV decodes them) and their captions, in tar order."""
    pytest.importorskip("nvidia.dali")
    import numpy as np

    scope = run("dali-cpu", vp9_dir)
    got = scope["video"].as_array()
    assert got.shape == (2, 16, 32, 32, 3) and got.dtype == np.uint8
    ref = run("webdataset", vp9_dir)["ds"]
    for i, sample in zip(range(2), ref):
        assert np.asarray(scope["txt"].at(i)).tobytes().decode() == sample["caption"] != ""
        diff = np.abs(got[i].astype(int) - sample["video"].astype(int)).mean()
        assert diff < 3, diff  # grey levels: two decoders' YUV->RGB rounding, not other frames
