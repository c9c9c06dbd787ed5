"""`vtk report`: seeds are aggregated, deltas are against the baseline arm, exports agree."""

import json

import pytest
from click.testing import CliRunner

from vtk import report
from vtk.commands.report import command


def _run(root, ablation, arm, seed, k400, msrvtt, time_s, mem):
    run = root / f"{ablation}-{arm}-s{seed}"
    run.mkdir(parents=True)
    (run / "ablation.json").write_text(json.dumps({"ablation": ablation, "arm": arm,
                                                   "seed": seed}))
    (run / "summary.json").write_text(json.dumps({"train_time_s": time_s, "clips_per_s": 10.0,
                                                  "peak_mem_bytes": mem, "device": "cpu"}))
    (run / "eval.json").write_text(json.dumps({"benchmarks": {
        "synth-k400": {"metrics": {"top1": k400, "top5": 0.9}},
        "synth-msrvtt": {"metrics": {"t2v_r1": msrvtt, "v2t_r1": msrvtt / 2}},
    }}))


@pytest.fixture
def runs(tmp_path):
    _run(tmp_path, "mask", "0", 0, 0.30, 0.20, 100.0, 800 * 2**20)
    _run(tmp_path, "mask", "0", 1, 0.40, 0.30, 110.0, 800 * 2**20)
    _run(tmp_path, "mask", "0.9", 0, 0.20, 0.10, 25.0, 400 * 2**20)
    _run(tmp_path, "captions", "coarse", 0, 0.10, 0.05, 50.0, 2**29)
    _run(tmp_path, "captions", "fine", 0, 0.35, 0.25, 50.0, 2**29)
    # an unfinished run (no eval.json) is ignored
    (tmp_path / "mask-0.5-s0").mkdir()
    (tmp_path / "mask-0.5-s0" / "ablation.json").write_text('{"ablation": "mask", "arm": "0.5"}')
    return tmp_path


def test_collect_aggregates_seeds(runs):
    arms = report.collect([runs])
    assert [(a.ablation, a.arm, len(a.runs)) for a in arms] == [
        ("captions", "coarse", 1), ("captions", "fine", 1), ("mask", "0", 2), ("mask", "0.9", 1)]
    base = arms[2]
    assert base.mean("k400_top1") == pytest.approx(0.35)
    assert base.std("k400_top1") == pytest.approx(0.0707107, rel=1e-4)  # sd of (0.3, 0.4)
    assert base.mean("train_time_s") == pytest.approx(105.0)


def test_json_export_has_every_key(runs):
    rows = json.loads(report.render_text(report.collect([runs]), "json"))
    keys = {"ablation", "arm", "k400_top1", "k600_top1", "k700_top1", "msrvtt_t2v_r1",
            "lsmdc_t2v_r1", "didemo_t2v_r1", "msvd_t2v_r1", "anet_t2v_r1", "train_time_s",
            "peak_mem_bytes", "device", "seeds"}
    assert all(keys <= set(r) for r in rows)
    fine = next(r for r in rows if r["arm"] == "fine")
    assert fine["k400_top1"] == pytest.approx(0.35) and fine["k600_top1"] is None


def test_markdown_shows_deltas_to_the_baseline(runs):
    md = report.render_text(report.collect([runs]), "markdown")
    fine = next(line for line in md.splitlines() if "| fine |" in line)
    assert "35.0 (+25.0)" in fine  # k400: 0.35 vs coarse 0.10
    masked = next(line for line in md.splitlines() if "| 0.9 |" in line)
    assert "25.0 (0.24x)" in masked  # train time 25 s vs 105 s mean at ratio 0
    assert "K400 (synth) top-1" in md


def test_cli_table_csv_and_plot(runs, tmp_path):
    res = CliRunner().invoke(command, [str(runs), "--plot", str(tmp_path / "p.png")])
    assert res.exit_code == 0, res.output
    assert "Video token masking ratio" in res.output and "Caption scale" in res.output
    assert (tmp_path / "p.png").stat().st_size > 10_000
    res = CliRunner().invoke(command, [str(runs), "--format", "csv", "--v2t"])
    assert res.exit_code == 0 and "MSR-VTT (synth) V2T R@1" in res.output
