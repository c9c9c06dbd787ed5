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
