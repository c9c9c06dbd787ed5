"""Shard sets that prove their own integrity: index.json's per-shard sha256 (hashed while the
tar is written) and the set's hash over them, `vtk verify` finding every kind of damage, and
`vtk train`'s cheap check of counts and sizes at its start."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
from data_helpers import run_cli

from vtk.curate import score_set
from vtk.shards.integrity import set_hash


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """`vtk shard synth:k400?n=24` in shards of 10, 10 and 4, scored for motion."""
    from vtk.cli import cli

    folder = tmp_path_factory.mktemp("integrity") / "set"
    cli.main(["shard", "synth:k400?n=24", "--out", str(folder), "--captions", "none",
              "--samples-per-shard", "10", "--workers", "1", "--quiet"], standalone_mode=False)
    score_set(folder, scores="motion", progress=False)
    return folder


def test_index_json_records_each_shards_sha256_and_the_sets_hash(scored, tmp_path):
    card = json.loads((scored / "index.json").read_text())
    for s in card["shards"]:
        data = (scored / s["file"]).read_bytes()
        assert s["sha256"] == hashlib.sha256(data).hexdigest() and s["bytes"] == len(data)
    assert card["set_sha256"] == set_hash(card["shards"]) and len(card["set_sha256"]) == 64
    # vtk filter writes them too, and its sidecars name the hash of the shard they belong to
    from vtk.curate import filter_set
    from vtk.curate.sidecar import read_settings

    index = filter_set(scored, tmp_path / "f", "top:motion=0.5", progress=False)
    for s in index["shards"]:
        tar = tmp_path / "f" / s["file"]
        assert s["sha256"] == hashlib.sha256(tar.read_bytes()).hexdigest()
        assert read_settings(tar)["tar_sha256"] == s["sha256"]


def test_verify_passes_a_whole_set_and_names_every_kind_of_damage(scored, tmp_path, capsys):
    code, err, out = run_cli(["verify", str(scored), "--quiet"], capsys)
    assert code == 0, err
    assert "verified: 3 shards, 24 samples" in out and "3 sidecars checked" in out
    bad = tmp_path / "bad"
    shutil.copytree(scored, bad)
    tars = sorted(bad.glob("*.tar"))
    with open(tars[0], "r+b") as f:  # one byte inside the first sample's mp4: same size
        f.seek(2000)
        byte = f.read(1)
        f.seek(2000)
        f.write(bytes([byte[0] ^ 0xFF]))
    data = tars[1].read_bytes()
    tars[1].write_bytes(data[: len(data) // 2])
    tars[2].unlink()
    shutil.copy(tars[0], bad / "stray-000000.tar")
    (bad / "scores" / "gone-000009.parquet").write_bytes(
        (bad / "scores" / "shard-000000.parquet").read_bytes())
    code, err, out = run_cli(["verify", str(bad), "--workers", "2", "--quiet"], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1
    problems = [line for line in out.splitlines() if line.startswith("problem")]
    text = "\n".join(problems)
    assert "shard-000000.tar: altered" in text
    assert "shard-000001.tar: truncated" in text
    assert "shard-000002.tar: missing" in text
    assert "stray-000000.tar: extra" in text
    assert "scores/gone-000009.parquet: belongs to no shard" in text
    assert len(problems) == 5, text


def test_verify_finds_a_sidecar_of_another_shard(scored, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(scored, bad)
    (bad / "scores" / "shard-000001.parquet").write_bytes(
        (bad / "scores" / "shard-000000.parquet").read_bytes())
    import pyarrow as pa
    import pyarrow.parquet as pq

    layer = bad / "captions" / "mine"  # a caption layer's sidecar (vtk caption): rows keyed too
    layer.mkdir(parents=True)
    keys = pq.read_table(bad / "scores" / "shard-000000.parquet").column("__key__")
    pq.write_table(pa.table({"__key__": keys}), layer / "shard-000000.parquet")
    pq.write_table(pa.table({"__key__": keys}), layer / "shard-000002.parquet")
    code, err, out = run_cli(["verify", str(bad), "--quiet"], capsys)
    assert code == 1
    problems = [line for line in out.splitlines() if line.startswith("problem")]
    assert len(problems) == 2, problems
    assert "scores/shard-000001.parquet: written for another build of shard-000001.tar" in out
    assert "captions/mine/shard-000002.parquet: 10 of its 10 keys are not in its shard" in out


def test_verify_refuses_an_index_json_name_that_is_a_path(scored, tmp_path, capsys):
    """inspect and verify took the card's name as a path prefix: ``../other/shard`` made
    another folder's shards this set's."""
    bad = tmp_path / "bad"
    shutil.copytree(scored, bad)
    card = json.loads((bad / "index.json").read_text())
    card["name"] = f"../{scored.name}/shard"
    (bad / "index.json").write_text(json.dumps(card))
    for cmd in ("verify", "inspect"):
        code, err, _ = run_cli([cmd, str(bad)], capsys)
        assert code == 1 and "is not a shard set name" in err, (cmd, err)


def test_train_checks_counts_and_sizes_at_its_start(scored, tmp_path, capsys):
    common = ["--model", "tiny", "--text", "tiny", "--steps", "1", "--batch-size", "2",
              "--frames", "2", "--size", "16", "--workers", "0", "--quiet"]
    for damage, want in (("cut", "truncated"), ("extra", "not in"), ("idx", "its .idx counts")):
        bad = tmp_path / damage
        shutil.copytree(scored, bad)
        if damage == "cut":
            tar = bad / "shard-000001.tar"
            tar.write_bytes(tar.read_bytes()[:-10240])
        elif damage == "extra":
            shutil.copy(bad / "shard-000000.tar", bad / "shard-000009.tar")
        else:
            idx = bad / "shard-000002.idx"
            lines = idx.read_text().splitlines()
            idx.write_text("\n".join(["v1.2 3", *lines[1:4]]) + "\n")
        code, err, _ = run_cli(["train", str(bad), "--out", str(tmp_path / f"run-{damage}"),
                                *common], capsys)
        assert code == 1 and len(err.strip().splitlines()) == 1, err
        assert want in err and "vtk verify" in err, err
        assert not (tmp_path / f"run-{damage}").exists()
