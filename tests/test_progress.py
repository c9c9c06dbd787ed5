"""Progress off a terminal: plain lines every N seconds, with the running average clips/s that
summary.json records; and the machine's load around a run."""

import io
import json
import os
import re
import subprocess
import sys

import pytest
from train_helpers import write_synth_shards

from vtk.errors import VtkError
from vtk.progress import EVERY_ENV, PlainProgress, every_s

LINE = re.compile(r"train mask 0\.00 loss [\d.]+ \| ([\d.]+) clips/s \(average\) \| (\d+)/(\d+) "
                  r"\| elapsed \d+:\d\d:\d\d \| ETA (\d+:\d\d:\d\d|\?)$")


@pytest.mark.floor
def test_plain_lines_every_n_seconds_with_count_elapsed_and_eta():
    now = [0.0]
    out = io.StringIO()
    with PlainProgress("work {rate:.1f}/s", file=out, every=30, clock=lambda: now[0]) as p:
        task = p.add_task("work", total=100, rate=0.0)
        for step in range(1, 101):
            now[0] = step * 1.0  # one step a second
            p.update(task, completed=step, rate=float(step))
    lines = out.getvalue().splitlines()
    # the first update, then every 30 s, then the end
    assert [ln.split(" | ")[1] for ln in lines] == ["1/100", "31/100", "61/100", "91/100",
                                                     "100/100"]
    assert lines[1] == "work 31.0/s | 31/100 | elapsed 0:00:31 | ETA 0:01:09"
    assert lines[-1].endswith("ETA 0:00:00")


def test_the_interval_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv(EVERY_ENV, "5")
    assert every_s() == 5.0
    monkeypatch.delenv(EVERY_ENV)
    assert every_s() == 30.0
    monkeypatch.setenv(EVERY_ENV, "soon")
    with pytest.raises(VtkError, match="VTK_PROGRESS_EVERY='soon'"):
        every_s()


def test_train_into_a_pipe_logs_plain_lines_whose_average_is_the_summary(tmp_path):
    data = write_synth_shards(tmp_path / "shards", n=64, per_shard=32)
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "vtk", "train", data, "--out", str(run), "--model", "tiny",
           "--text", "tiny", "--batch-size", "16", "--steps", "24", "--workers", "0",
           "--cache", str(tmp_path / "cache")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", EVERY_ENV: "0.05"}
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    lines = [m for m in map(LINE.match, p.stdout.splitlines()) if m]
    assert len(lines) >= 3, p.stdout[-3000:]  # not one bar at the end: lines along the way
    assert [int(m[2]) for m in lines] == sorted(int(m[2]) for m in lines)
    last = lines[-1]
    assert (last[2], last[3], last[4]) == ("24", "24", "0:00:00")
    summary = json.loads((run / "summary.json").read_text())
    # the line shows one decimal and is printed a moment before the summary times the run
    assert float(last[1]) == pytest.approx(summary["clips_per_s"], rel=0.01)
    # the load around the run
    load = summary["load"]
    assert load["cores"] == os.cpu_count()
    if hasattr(os, "getloadavg"):
        assert len(load["loadavg_before"]) == len(load["loadavg_after"]) == 3
    if os.path.exists("/proc/stat"):
        assert 0.0 <= load["cpu_steal_pct"] <= 100.0

