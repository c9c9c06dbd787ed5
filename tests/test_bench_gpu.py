"""`vtk bench gpu` on the CPU: the same three parts a GPU runs (decode, model at four masks, a
stopped-resumed-finished training run), with the tiny model and small VP9 shards built by the
command itself. The DALI variant (DALI's CPU decoder for the decode part and the training run)
runs where DALI is installed (tox env core)."""

import json

import pytest
from data_helpers import run_cli

MASKS = [0.0, 0.5, 0.7, 0.9]
PARTS = ("shards", "decode", "model", "train")


def check(args, tmp_path, capsys):
    """(exit code, the JSON report, stdout) of ``vtk bench gpu ARGS --json F``."""
    out = tmp_path / "gpu.json"
    code, _, stdout = run_cli(["bench", "gpu", *args, "--json", str(out)], capsys)
    report = json.loads(out.read_text())
    return code, report, stdout


def statuses(report) -> dict:
    return {k: report[k]["status"] for k in PARTS}


def check_model_and_train(report, backend):
    model = report["model"]
    assert model["status"] == "ok"
    assert [r["mask"] for r in model["rows"]] == MASKS
    assert [r["tokens"] for r in model["rows"]] == [129, 65, 39, 14]  # tiny, 8 x 32 px
    for r in model["rows"]:
        assert r["model"] == "tiny" and r["step_s"] > 0 and r["peak_mem_bytes"] > 0
        assert 0 < r["floor_bytes"] <= r["peak_mem_bytes"] and r["floor_below_peak"]
    floors = [r["floor_bytes"] for r in model["rows"]]
    assert floors == sorted(floors, reverse=True)  # fewer tokens kept, a lower floor
    train = report["train"]
    assert train["status"] == "ok" and train["backend"] == backend
    assert (train["stopped_at"], train["steps"], train["complete"]) == (3, 6, True)
    assert train["step_s_first"] > 0 and train["step_s_resumed"] > 0
    assert train["peak_mem_bytes"] > 0 and train["final_loss"] > 0


def test_cpu_check_runs_every_part(tmp_path, capsys):
    code, report, stdout = check(["--device", "cpu", "--backends", "pyav,nosuch",
                                  "--train-backend", "pyav"], tmp_path, capsys)
    assert code in (0, None) and report["ok"], statuses(report)
    assert report["profile"] == "cpu"
    assert report["shards"] == {**report["shards"], "codec": "vp9", "clips": 16, "status": "ok"}
    decode = report["decode"]
    pyav = next(r for r in decode["rows"] if r["backend"] == "pyav")
    assert pyav["clips"] == 16 and pyav["clips_per_s"] > 0 and pyav["ceiling_clips_per_s"] > 0
    # a decoder that cannot run is named with the reason, and the others still run
    assert [r["backend"] for r in decode["rows"]] == ["pyav"]
    assert "nosuch" in decode["skipped"]["nosuch"]
    check_model_and_train(report, "pyav")
    assert "model tiny" in stdout and "train, stopped and resumed: ok" in stdout


def test_a_failing_part_is_reported_and_fails_the_command(tmp_path, capsys):
    code, report, stdout = check(["--device", "cpu", "--parts", "train",
                                  "--train-backend", "nosuch"], tmp_path, capsys)
    assert code == 1 and not report["ok"] and report["shards"]["status"] == "ok"
    assert report["train"]["status"].startswith("error: VtkError") and \
        "nosuch" in report["train"]["status"]
    assert report["decode"]["status"] == report["model"]["status"] == "skipped: not asked for"
    assert "failed: train" in stdout


@pytest.mark.dali
def test_cpu_check_with_dali(tmp_path, capsys):
    """The default check, as on a GPU: DALI decodes (here its CPU decoder on the VP9 set)
    and feeds the stopped and resumed training run."""
    pytest.importorskip("nvidia.dali")
    code, report, _ = check(["--device", "cpu"], tmp_path, capsys)
    assert code in (0, None) and report["ok"], statuses(report)
    dali = next(r for r in report["decode"]["rows"] if r["backend"] == "dali")
    assert dali["decoder"] == "dali cpu" and dali["clips"] == 16 and dali["clips_per_s"] > 0
    assert any(r["backend"] == "pyav" for r in report["decode"]["rows"])
    check_model_and_train(report, "dali")
