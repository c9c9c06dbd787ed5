"""vtk train --report-to: TensorBoard event files (read back with TensorBoard's own
EventAccumulator) and an offline wandb run hold what metrics.jsonl holds, step for step, across
a resume; a missing tracker library or an unknown name is one line before anything is written."""

import json
import shutil
from pathlib import Path

import pytest
from data_helpers import run_cli
from train_helpers import write_synth_shards

from vtk.train import train

pytest.importorskip("tensorboard")


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_synth_shards(tmp_path_factory.mktemp("trackers") / "shards", n=32, per_shard=32)


def config(shards, out, **kw):
    return {**dict(data=shards, out=str(out), model="tiny", text="tiny", batch_size=8,
                   workers=0, quiet=True, seed=0, checkpoint_every=2, report_to=["tensorboard"]),
            **kw}


def metrics(run) -> dict[int, dict]:
    rows = [json.loads(x) for x in (Path(run) / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in rows}


def events(run) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(Path(run) / "tensorboard"))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_holds_metrics_jsonl_step_for_step_across_a_resume(shards, tmp_path):
    run = tmp_path / "run"
    train(config(shards, run, steps=4))
    logged = metrics(run)
    got = events(run)
    assert {"train/loss", "train/lr", "train/mask", "train/clips_per_s"} <= set(got)
    assert got["train/loss"] == [(s, pytest.approx(logged[s]["loss"])) for s in (1, 2, 3, 4)]
    # a session killed after it logged step 4, its last checkpoint at step 2: the resumed
    # session's steps 3 and 4 replace the killed one's (TensorBoard purges them), once each
    part = tmp_path / "part"
    train(config(shards, part, steps=4, stop_after=2))
    shutil.copy(part / "checkpoint.pt", tmp_path / "at2.pt")
    train({"out": str(part), "resume": True, "quiet": True})  # logs 3 and 4
    shutil.copy(tmp_path / "at2.pt", part / "checkpoint.pt")  # ... and was killed before 4 saved
    train({"out": str(part), "resume": True, "quiet": True, "steps": 6})
    got, logged = events(part), metrics(part)
    assert [s for s, _ in got["train/loss"]] == [1, 2, 3, 4, 5, 6]
    assert got["train/loss"] == [(s, pytest.approx(logged[s]["loss"])) for s in range(1, 7)]
    assert json.loads((part / "config.json").read_text())["report_to"] == ["tensorboard"]


def test_cli_report_to_refuses_an_unknown_tracker(shards, tmp_path, capsys):
    code, err, _ = run_cli(["train", shards, "--out", str(tmp_path / "r"), "--report-to",
                            "tensorboard,mlflow"], capsys)
    assert code == 2 and "--report-to" in err and "mlflow" in err and "tensorboard" in err
    assert not (tmp_path / "r").exists()


def test_a_missing_tracker_library_is_one_line_before_anything_is_written(shards, tmp_path,
                                                                          monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed: import fails
    code, err, _ = run_cli(["train", shards, "--out", str(tmp_path / "r"), "--steps", "1",
                            "--model", "tiny", "--text", "tiny", "--report-to", "wandb"], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "pip install 'vtk-videotext[wandb]'" in err
    assert not (tmp_path / "r").exists()


def test_wandb_offline_run_gets_the_rows_and_a_resume_continues_it(shards, tmp_path,
                                                                   monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "run"
    train(config(shards, run, steps=2, stop_after=1, report_to=["wandb"]))
    run_id = (run / "wandb-id").read_text().strip()
    train({"out": str(run), "resume": True, "quiet": True})
    found = sorted((run / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))
    assert len(found) == 2  # one per session, both the same wandb run
    data = b"".join(p.read_bytes() for p in found)
    assert b"train/loss" in data and b"train/clips_per_s" in data
